/*
 * rmsnorm_impl.cuh - the row layout and the fp32 arithmetic of the RMS
 * norm kernels, shared by kernels/rmsnorm.cu and the fused kernels of
 * kernels/resnorm.cu (internal: included by .cu files only).
 *
 * Every fp32 operation below is an explicit round-to-nearest intrinsic, so
 * which products and sums become one fma is fixed here, not by how nvcc and
 * ptxas contract the surrounding kernel: a fused kernel that uses these
 * functions in the same order gets the bits of rmsnorm_forward and
 * rmsnorm_backward. The forms are those of the PTX nvcc 13.0 made of the
 * plain C++ expressions these functions replaced, with one exception:
 * rmsnorm_backward's output rs (g - yh m) (+ old) is now two fmas, g - yh m
 * then rs d + old (one rounding each). nvcc had left g - yh m, and with
 * accumulate element 0 of each 8-vector, as a product and a sub/add
 * without rounding modifier (which ptxas may or may not contract: not
 * visible without a SASS disassembler), elements 1..7 as one fma.
 *
 * defines:
 *   RMS_THREADS, RMS_ROWS, RMS_MAX_NV, rms_nv(D), RMS_SWITCH(nv, LAUNCH)
 *   nan_row(row, nvec, lane)          a NaN row (out-of-range gather)
 *   rms_sumsq8(ss, v)                 ss + v[0]^2 + ... + v[7]^2, fma chain
 *   rms_scale(ss, D, eps)             1 / sqrt(ss / D + eps)
 *   rms_bwd_dot8(g, x, rs)            sum_e g[e] (x[e] rs), from 0, e order
 *   rms_bwd_out8(o, g, x, rs, m, acc, old)
 *                                     d = g - (x rs) m, o = rs d (+ old if acc)
 * A row's backward mean is m = (sum over its vectors, each lane in vector
 * order, of rms_bwd_dot8, then a warp butterfly) / D.
 */
#ifndef GPT_RMSNORM_IMPL_CUH
#define GPT_RMSNORM_IMPL_CUH

#include "elem_common.cuh"

#define RMS_THREADS 256
#define RMS_ROWS (RMS_THREADS / 32) /* rows per block: one warp each */
#define RMS_MAX_NV 8                /* D <= 2048 in registers */
#define BF16_NAN 0x7fc0u

/* Vectors of 8 per lane when a row of D stays in registers, else 0. */
static inline int rms_nv(int D)
{
	int nv = (D / 8 + 31) / 32;
	return nv <= RMS_MAX_NV ? nv : 0;
}

/* Run LAUNCH(N) for N = nv in 1..RMS_MAX_NV, or LAUNCH(0). */
#define RMS_SWITCH(nv, LAUNCH)                                                          \
	do {                                                                            \
		switch (nv) {                                                           \
		case 1: LAUNCH(1); break;                                               \
		case 2: LAUNCH(2); break;                                               \
		case 3: LAUNCH(3); break;                                               \
		case 4: LAUNCH(4); break;                                               \
		case 5: LAUNCH(5); break;                                               \
		case 6: LAUNCH(6); break;                                               \
		case 7: LAUNCH(7); break;                                               \
		case 8: LAUNCH(8); break;                                               \
		default: LAUNCH(0); break;                                              \
		}                                                                       \
	} while (0)

__device__ __forceinline__ void nan_row(uint16_t *row, int nvec, int lane)
{
	uint4 u = make_uint4(BF16_NAN * 0x10001u, BF16_NAN * 0x10001u, BF16_NAN * 0x10001u,
	                     BF16_NAN * 0x10001u);
	for (int c = lane; c < nvec; c += 32)
		reinterpret_cast<uint4 *>(row)[c] = u;
}

__device__ __forceinline__ float rms_sumsq8(float ss, const float v[8])
{
#pragma unroll
	for (int e = 0; e < 8; e++)
		ss = __fmaf_rn(v[e], v[e], ss);
	return ss;
}

__device__ __forceinline__ float rms_scale(float ss, int D, float eps)
{
	return __frcp_rn(__fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)D), eps)));
}

/* g: the gradient of the norm's output; x: its input (raw bf16 values). */
__device__ __forceinline__ float rms_bwd_dot8(const float g[8], const float x[8], float rs)
{
	float dot = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++)
		dot = __fmaf_rn(__fmul_rn(rs, x[e]), g[e], dot);
	return dot;
}

__device__ __forceinline__ void rms_bwd_out8(float o[8], const float g[8], const float x[8],
                                             float rs, float m, int acc, const float old[8])
{
#pragma unroll
	for (int e = 0; e < 8; e++) {
		const float d = __fmaf_rn(-m, __fmul_rn(rs, x[e]), g[e]);
		o[e] = acc ? __fmaf_rn(rs, d, old[e]) : __fmul_rn(rs, d);
	}
}

#endif
