/*
 * adam.cu - Adam kernels, bitwise lib/optim.c's adam_update. See adam.cuh.
 *
 * defines: adam_update_gpu, adam_update_gpu_bf16, adam_update_gpu_bf16_gf32
 *
 * Each thread updates 4 consecutive elements per step (vector loads when
 * every array is aligned for them, scalar otherwise and for the tail).
 */
#include <math.h>

#include "kcommon.cuh" /* first: declares progname extern "C" before util.h does */
#include "adam.cuh"

#define ADAM_THREADS 256

struct adam_consts {
	double b1, b2, ob1, ob2, eps;
	float bc2s, step;
};

static __device__ __forceinline__ float ld1(const float *a, size_t i) { return a[i]; }
static __device__ __forceinline__ float ld1(const uint16_t *a, size_t i) { return bf2f(a[i]); }
static __device__ __forceinline__ void st1(float *a, size_t i, float x) { a[i] = x; }
static __device__ __forceinline__ void st1(uint16_t *a, size_t i, float x) { a[i] = f2bf(x); }

/* 4 consecutive elements from index i (a multiple of 4, pointer aligned). */
static __device__ __forceinline__ void ld4(const float *a, size_t i, float *f)
{
	float4 r = *reinterpret_cast<const float4 *>(a + i);
	f[0] = r.x, f[1] = r.y, f[2] = r.z, f[3] = r.w;
}
static __device__ __forceinline__ void ld4(const uint16_t *a, size_t i, float *f)
{
	uint2 r = *reinterpret_cast<const uint2 *>(a + i);
	f[0] = __uint_as_float(r.x << 16), f[1] = __uint_as_float(r.x & 0xffff0000u);
	f[2] = __uint_as_float(r.y << 16), f[3] = __uint_as_float(r.y & 0xffff0000u);
}
static __device__ __forceinline__ void st4(float *a, size_t i, const float *f)
{
	*reinterpret_cast<float4 *>(a + i) = make_float4(f[0], f[1], f[2], f[3]);
}
static __device__ __forceinline__ void st4(uint16_t *a, size_t i, const float *f)
{
	uint2 r;
	r.x = (uint32_t)f2bf(f[0]) | (uint32_t)f2bf(f[1]) << 16;
	r.y = (uint32_t)f2bf(f[2]) | (uint32_t)f2bf(f[3]) << 16;
	*reinterpret_cast<uint2 *>(a + i) = r;
}

/* optim.c's adam_range body, every operation rounded as the CPU rounds it. */
static __device__ __forceinline__ void adam_elem(float &p, float g, float &m, float &v,
                                                 const adam_consts &k)
{
	m = __double2float_rn(__dadd_rn(__dmul_rn(k.b1, (double)m), __dmul_rn(k.ob1, (double)g)));
	v = __double2float_rn(
		__dadd_rn(__dmul_rn(k.b2, (double)v), __dmul_rn(__dmul_rn(k.ob2, (double)g), (double)g)));
	float denom = __double2float_rn(__dadd_rn((double)__fdiv_rn(__fsqrt_rn(v), k.bc2s), k.eps));
	p = __fsub_rn(p, __fdiv_rn(__fmul_rn(k.step, m), denom));
}

/* P: type of p, m, v; G: type of g; RG: round g to bf16 after loading. */
template <class P, class G, bool RG>
__global__ void __launch_bounds__(ADAM_THREADS)
	k_adam(P *__restrict__ p, const G *__restrict__ g, P *__restrict__ m, P *__restrict__ v,
	       size_t n, adam_consts k, int vec)
{
	const size_t stride = (size_t)gridDim.x * blockDim.x;
	const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	size_t done = 0;
	if (vec) {
		const size_t n4 = n / 4;
		for (size_t q = t; q < n4; q += stride) {
			const size_t i = q * 4;
			float fp[4], fg[4], fm[4], fv[4];
			ld4(p, i, fp), ld4(g, i, fg), ld4(m, i, fm), ld4(v, i, fv);
#pragma unroll
			for (int j = 0; j < 4; j++) {
				if (RG)
					fg[j] = bf2f(f2bf(fg[j]));
				adam_elem(fp[j], fg[j], fm[j], fv[j], k);
			}
			st4(p, i, fp), st4(m, i, fm), st4(v, i, fv);
		}
		done = n4 * 4;
	}
	for (size_t i = done + t; i < n; i += stride) {
		float fp = ld1(p, i), fg = ld1(g, i), fm = ld1(m, i), fv = ld1(v, i);
		if (RG)
			fg = bf2f(f2bf(fg));
		adam_elem(fp, fg, fm, fv, k);
		st1(p, i, fp), st1(m, i, fm), st1(v, i, fv);
	}
}

/* The scalars exactly as optim.c's adam_update computes them. */
static adam_consts consts(const struct adam_hyper *h)
{
	if (h->step < 1)
		KFATAL("adam: step %lld must be >= 1", (long long)h->step);
	adam_consts k;
	double nn = (double)h->step;
	float bc1 = (float)(1 - pow(h->beta1, nn));
	k.bc2s = (float)sqrt(1 - pow(h->beta2, nn));
	k.step = (float)(h->lr / (double)bc1);
	k.b1 = h->beta1, k.b2 = h->beta2, k.eps = h->eps;
	k.ob1 = 1 - h->beta1, k.ob2 = 1 - h->beta2;
	return k;
}

static int al(const void *a, unsigned bytes) { return !((uintptr_t)a % bytes); }

template <class P, class G, bool RG>
static void launch(P *p, const G *g, P *m, P *v, size_t n, const struct adam_hyper *h,
                   cudaStream_t s)
{
	adam_consts k = consts(h);
	if (!n)
		return;
	const unsigned pa = 4 * sizeof(P), ga = 4 * sizeof(G);
	int vec = al(p, pa) && al(m, pa) && al(v, pa) && al(g, ga);
	unsigned grid = grid_for(vec ? n / 4 + 1 : n, ADAM_THREADS, 132 * 8);
	k_adam<P, G, RG><<<grid, ADAM_THREADS, 0, s>>>(p, g, m, v, n, k, vec);
	CUDA_CHECK_LAST();
}

extern "C" void adam_update_gpu(float *p, const float *g, float *m, float *v, size_t n,
                                const struct adam_hyper *h, cudaStream_t stream)
{
	launch<float, float, false>(p, g, m, v, n, h, stream);
}

extern "C" void adam_update_gpu_bf16(uint16_t *p, const uint16_t *g, uint16_t *m, uint16_t *v,
                                     size_t n, const struct adam_hyper *h, cudaStream_t stream)
{
	launch<uint16_t, uint16_t, false>(p, g, m, v, n, h, stream);
}

extern "C" void adam_update_gpu_bf16_gf32(uint16_t *p, const float *g, uint16_t *m, uint16_t *v,
                                          size_t n, const struct adam_hyper *h,
                                          cudaStream_t stream)
{
	launch<uint16_t, float, true>(p, g, m, v, n, h, stream);
}
