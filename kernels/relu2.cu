/*
 * relu2.cu - ReLU squared, forward and backward (see relu2.cuh).
 *
 * defines: relu2_forward, relu2_backward
 *
 * One thread per 8 elements (one 16-byte load per input, one store).
 * relu(NaN) is 0 here, as in the CPU reference (x > 0 ? x : 0).
 */
#include "elem_common.cuh"
#include "relu2.cuh"

#define RELU2_THREADS 256

__global__ void __launch_bounds__(RELU2_THREADS)
relu2_fwd_kernel(uint16_t *u, const uint16_t *x, size_t nvec)
{
	size_t i = (size_t)blockIdx.x * RELU2_THREADS + threadIdx.x;
	if (i >= nvec)
		return;
	float v[8];
	bf16x8_load(x + 8 * i, v);
#pragma unroll
	for (int e = 0; e < 8; e++) {
		float r = v[e] > 0.0f ? v[e] : 0.0f;
		v[e] = r * r;
	}
	bf16x8_store(u + 8 * i, v);
}

__global__ void __launch_bounds__(RELU2_THREADS)
relu2_bwd_kernel(uint16_t *dx, const uint16_t *dy, const uint16_t *x, size_t nvec)
{
	size_t i = (size_t)blockIdx.x * RELU2_THREADS + threadIdx.x;
	if (i >= nvec)
		return;
	float g[8], v[8];
	bf16x8_load(dy + 8 * i, g);
	bf16x8_load(x + 8 * i, v);
#pragma unroll
	for (int e = 0; e < 8; e++)
		g[e] = v[e] > 0.0f ? g[e] * 2.0f * v[e] : 0.0f;
	bf16x8_store(dx + 8 * i, g);
}

static void relu2_check(const char *fn, const void *a, const void *b, const void *c, size_t n)
{
	KREQUIRE_IN(fn, n % 8 == 0, "n = %zu is not a multiple of 8", n);
	KREQUIRE_IN(fn, a && b && is_aligned16(a) && is_aligned16(b) && (!c || is_aligned16(c)),
	            "tensors must be non-NULL and 16-byte aligned");
	KREQUIRE_IN(fn, n / 8 / RELU2_THREADS < 0x7fffffffu, "n = %zu too large for one grid", n);
}

extern "C" void relu2_forward(uint16_t *u, const uint16_t *x, size_t n, cudaStream_t s)
{
	relu2_check(__func__, u, x, NULL, n);
	size_t nvec = n / 8;
	if (nvec == 0)
		return;
	unsigned blocks = (unsigned)((nvec + RELU2_THREADS - 1) / RELU2_THREADS);
	relu2_fwd_kernel<<<blocks, RELU2_THREADS, 0, s>>>(u, x, nvec);
	CUDA_CHECK_LAST();
}

extern "C" void relu2_backward(uint16_t *dx, const uint16_t *dy, const uint16_t *x, size_t n,
                               cudaStream_t s)
{
	KREQUIRE(x, "x must not be NULL");
	relu2_check(__func__, dx, dy, x, n);
	size_t nvec = n / 8;
	if (nvec == 0)
		return;
	unsigned blocks = (unsigned)((nvec + RELU2_THREADS - 1) / RELU2_THREADS);
	relu2_bwd_kernel<<<blocks, RELU2_THREADS, 0, s>>>(dx, dy, x, nvec);
	CUDA_CHECK_LAST();
}
