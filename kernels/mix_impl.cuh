/*
 * mix_impl.cuh - the fp32 arithmetic and the deterministic scalar-gradient
 * reduction of kernels/mix.cu, shared with the fused kernels of
 * kernels/resnorm.cu (internal: included by .cu files only).
 *
 * Every fp32 operation is an explicit round-to-nearest intrinsic, in the
 * forms nvcc 13.0 gave mix.cu's plain expressions (its PTX arithmetic did
 * not change), so a fused kernel that uses these gets mix.cu's bits.
 *
 * Backward reduction (see mix.cu): block b of MIX_THREADS threads owns the
 * tile of MIX_VPT * MIX_THREADS 8-vectors from b * MIX_TILE / 8; thread
 * tid takes vectors tile + k * MIX_THREADS + tid, k < MIX_VPT, and sums
 * its products in fp32 in (k, element) order; mix_block_parts adds the
 * threads in double (warp butterfly, then the warps in order) into
 * part[2 b], part[2 b + 1]; mix_sum_kernel (one block) adds the blocks'
 * parts in a fixed order to the fp32 scalar gradients.
 *
 * defines:
 *   MIX_THREADS, MIX_VPT, MIX_TILE, MIX_SUM_THREADS
 *   mix_lin(c0, a, c1, b)    c0 a + c1 b          (fma of c0 a onto c1 b)
 *   mix_scale(c, a)          c a
 *   mix_skip(a, c, b)        a + c b              (one fma)
 *   mix_add(a, b)            a + b
 *   mix_dot(s, g, a)         s + g a              (one fma: the sums' step)
 *   mix_axpy(d, c, g)        d + c g              (one fma: fp32 gradient)
 *   mix_block_parts<HAS_B>(s0, s1, sh, part)     per-block partial sums
 *   mix_sum_kernel           pass 2 of the reduction
 */
#ifndef GPT_MIX_IMPL_CUH
#define GPT_MIX_IMPL_CUH

#include "elem_common.cuh"

#define MIX_THREADS 256
#define MIX_VPT 4
#define MIX_TILE ((size_t)8 * MIX_VPT * MIX_THREADS) /* elements per backward block */
#define MIX_SUM_THREADS 1024

__device__ __forceinline__ float mix_lin(float c0, float a, float c1, float b)
{
	return __fmaf_rn(c0, a, __fmul_rn(c1, b));
}
__device__ __forceinline__ float mix_scale(float c, float a) { return __fmul_rn(c, a); }
__device__ __forceinline__ float mix_skip(float a, float c, float b) { return __fmaf_rn(c, b, a); }
__device__ __forceinline__ float mix_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mix_dot(float s, float g, float a) { return __fmaf_rn(g, a, s); }
__device__ __forceinline__ float mix_axpy(float d, float c, float g) { return __fmaf_rn(c, g, d); }

/* The block's sums of s0 (and s1 when HAS_B, else 0) over its threads, in
 * double, to part[2 blockIdx.x], part[2 blockIdx.x + 1]. All threads of the
 * block call it; sh: __shared__ double[MIX_THREADS / 32][2], free. */
template <bool HAS_B>
__device__ __forceinline__ void mix_block_parts(float s0, float s1, double (*sh)[2], double *part)
{
	double d0 = warp_sum((double)s0), d1 = HAS_B ? warp_sum((double)s1) : 0.0;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	if (lane == 0)
		sh[warp][0] = d0, sh[warp][1] = d1;
	__syncthreads();
	if (threadIdx.x == 0) {
		double t0 = 0, t1 = 0;
		for (int w = 0; w < MIX_THREADS / 32; w++)
			t0 += sh[w][0], t1 += sh[w][1];
		part[2 * blockIdx.x] = t0;
		part[2 * blockIdx.x + 1] = t1;
	}
}

/* Pass 2: g[k] += sum over blocks of part[2 b + k], k < nk, in a fixed order. */
static __global__ void __launch_bounds__(MIX_SUM_THREADS)
mix_sum_kernel(float *g, const double *part, unsigned nblocks, int nk)
{
	__shared__ double sh[MIX_SUM_THREADS / 32][2];
	double t[2] = {0, 0};
	for (unsigned b = threadIdx.x; b < nblocks; b += MIX_SUM_THREADS)
		t[0] += part[2 * b], t[1] += part[2 * b + 1];
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	t[0] = warp_sum(t[0]);
	t[1] = warp_sum(t[1]);
	if (lane == 0)
		sh[warp][0] = t[0], sh[warp][1] = t[1];
	__syncthreads();
	if (threadIdx.x < nk) {
		double s = 0;
		for (int w = 0; w < MIX_SUM_THREADS / 32; w++)
			s += sh[w][threadIdx.x];
		g[threadIdx.x] = (float)((double)g[threadIdx.x] + s);
	}
}

#endif
