/*
 * cast.cu - fp32 <-> bf16 conversion kernels. See cast.cuh.
 *
 * defines: cast_f32_to_bf16, cast_bf16_to_f32
 */
#include "cast.cuh"
#include "kcommon.cuh"

#define CAST_THREADS 256

/* 8 elements per vector step when both pointers are 16-byte aligned
 * (two float4 reads, one 16-byte write or the reverse); scalar otherwise
 * and for the tail. */
__global__ void k_f32_to_bf16(uint16_t *__restrict__ dst, const float *__restrict__ src, size_t n,
                              int vec)
{
	const size_t stride = (size_t)gridDim.x * blockDim.x;
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	size_t done = 0;
	if (vec) {
		const size_t n8 = n / 8;
		for (size_t v = i; v < n8; v += stride) {
			float4 a = reinterpret_cast<const float4 *>(src)[2 * v];
			float4 b = reinterpret_cast<const float4 *>(src)[2 * v + 1];
			uint4 o;
			o.x = (uint32_t)f2bf(a.x) | (uint32_t)f2bf(a.y) << 16;
			o.y = (uint32_t)f2bf(a.z) | (uint32_t)f2bf(a.w) << 16;
			o.z = (uint32_t)f2bf(b.x) | (uint32_t)f2bf(b.y) << 16;
			o.w = (uint32_t)f2bf(b.z) | (uint32_t)f2bf(b.w) << 16;
			reinterpret_cast<uint4 *>(dst)[v] = o;
		}
		done = n8 * 8;
	}
	for (size_t j = done + i; j < n; j += stride)
		dst[j] = f2bf(src[j]);
}

__global__ void k_bf16_to_f32(float *__restrict__ dst, const uint16_t *__restrict__ src, size_t n,
                              int vec)
{
	const size_t stride = (size_t)gridDim.x * blockDim.x;
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	size_t done = 0;
	if (vec) {
		const size_t n8 = n / 8;
		for (size_t v = i; v < n8; v += stride) {
			uint4 r = reinterpret_cast<const uint4 *>(src)[v];
			float4 a, b;
			a.x = __uint_as_float(r.x << 16), a.y = __uint_as_float(r.x & 0xffff0000u);
			a.z = __uint_as_float(r.y << 16), a.w = __uint_as_float(r.y & 0xffff0000u);
			b.x = __uint_as_float(r.z << 16), b.y = __uint_as_float(r.z & 0xffff0000u);
			b.z = __uint_as_float(r.w << 16), b.w = __uint_as_float(r.w & 0xffff0000u);
			reinterpret_cast<float4 *>(dst)[2 * v] = a;
			reinterpret_cast<float4 *>(dst)[2 * v + 1] = b;
		}
		done = n8 * 8;
	}
	for (size_t j = done + i; j < n; j += stride)
		dst[j] = bf2f(src[j]);
}

static int aligned16(const void *a, const void *b)
{
	return !(((uintptr_t)a | (uintptr_t)b) & 15);
}

extern "C" void cast_f32_to_bf16(uint16_t *dst, const float *src, size_t n, cudaStream_t stream)
{
	if (!n)
		return;
	int vec = aligned16(dst, src);
	unsigned grid = grid_for(vec ? n / 8 + 1 : n, CAST_THREADS, 132 * 16);
	k_f32_to_bf16<<<grid, CAST_THREADS, 0, stream>>>(dst, src, n, vec);
	CUDA_CHECK_LAST();
}

extern "C" void cast_bf16_to_f32(float *dst, const uint16_t *src, size_t n, cudaStream_t stream)
{
	if (!n)
		return;
	int vec = aligned16(dst, src);
	unsigned grid = grid_for(vec ? n / 8 + 1 : n, CAST_THREADS, 132 * 16);
	k_bf16_to_f32<<<grid, CAST_THREADS, 0, stream>>>(dst, src, n, vec);
	CUDA_CHECK_LAST();
}
