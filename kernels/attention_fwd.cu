/*
 * attention_fwd.cu - attention forward on the tensor cores (FlashAttention-2
 * style). See attention.cuh.
 *
 * defines: attn_forward (dispatch: attention_fwd_wg.cu's wgmma kernel on
 * compute capability 9.x when built with sm_90a code, this one otherwise or
 * with GPT_ATTN_FWD=mma in the environment), attn_forward_mma
 *
 * One CTA of 8 warps per (query block qb, head h), heaviest blocks first.
 * Shared memory: the Q tile and two stages of K and V tiles (5 x 34 KB).
 * Each warp owns 16 query rows; its Q fragments stay in registers. For each
 * visited key block kb = kb_first[qb]..qb (K, V of kb+1 loading with
 * cp.async meanwhile), in two halves of 64 keys:
 *   S = Q K^T (fp32, raw scores); partial blocks set S = -inf where
 *   !(key <= query && docs[key] == docs[query]); the running row max m
 *   (raw units) and the rescale a = 2^((m_old - m_new) * scale * log2 e);
 *   P = 2^(S * scale * log2 e - m_new * scale * log2 e); l = a l + rowsum(P)
 *   (fp32, per thread, reduced over the 4 lanes of a row at the end);
 *   O = a O + bf16(P) V.
 * A row whose keys so far are all masked keeps m = -inf; its P is then 0
 * (the -inf guard below), never NaN. At the end y = O / l (bf16, staged
 * through the Q tile for 16-byte stores) and lse = m * scale + ln l.
 */
#include <stdlib.h>

#include "attention_impl.cuh"
#include "cuda_check.h"

__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_fwd_kernel(bf16 *__restrict__ y, float *__restrict__ lse, const bf16 *__restrict__ q,
                const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                const int32_t *__restrict__ docs, const int32_t *__restrict__ dlo,
                const int32_t *__restrict__ dhi, const int32_t *__restrict__ kb_first, int T,
                int H, int nb)
{
	ATT_DYN_SMEM(smem);
	const int qb = nb - 1 - (int)blockIdx.x, h = blockIdx.y;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: Q at 0, K stage s at 1 + s, V stage s at 3 + s */
	const uint32_t sQ = att_smem(smem);
	const int kb0 = kb_first[qb], n = qb - kb0 + 1;

	att_load_tile(sQ, q + (size_t)qb * blk + hoff, rs, tid);
	att_load_tile(sQ + 1 * ATT_TILEB, k + (size_t)kb0 * blk + hoff, rs, tid);
	att_load_tile(sQ + 3 * ATT_TILEB, v + (size_t)kb0 * blk + hoff, rs, tid);
	att_cp_commit();

	const int row0 = qb * ATTN_BLOCK + warp * 16 + g, row1 = row0 + 8;
	const int dq0 = docs[row0], dq1 = docs[row1];
	const int qlo = dlo[qb], qhi = dhi[qb];

	uint32_t qf[8][4];
	float o[16][4];
#pragma unroll
	for (int d = 0; d < 16; d++)
		o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

	for (int i = 0; i < n; i++) {
		const int kb = kb0 + i, st = i & 1;
		if (i + 1 < n) {
			att_load_tile(sQ + (2 - st) * ATT_TILEB, k + (size_t)(kb + 1) * blk + hoff, rs, tid);
			att_load_tile(sQ + (4 - st) * ATT_TILEB, v + (size_t)(kb + 1) * blk + hoff, rs, tid);
		}
		att_cp_commit();
		att_cp_wait<1>();
		__syncthreads();
		if (i == 0) {
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				att_ldsm(qf[kk], sQ + frag_a(lane, warp * 16, kk * 16));
		}
		const uint32_t sK = sQ + (1 + st) * ATT_TILEB, sV = sQ + (3 + st) * ATT_TILEB;
		const bool full = kb < qb && qlo == dhi[kb] && dlo[kb] == qhi;
#pragma unroll
		for (int half = 0; half < 2; half++) {
			float s[8][4];
#pragma unroll
			for (int j = 0; j < 8; j++)
				s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
#pragma unroll
				for (int np = 0; np < 4; np++) {
					uint32_t b[4];
					att_ldsm(b, sK + frag_bt(lane, half * 64 + np * 16, kk * 16));
					att_mma(s[2 * np], qf[kk], b[0], b[1]);
					att_mma(s[2 * np + 1], qf[kk], b[2], b[3]);
				}
			att_fwd_softmax<8>(s, o, m0, m1, l0, l1, full, kb * ATTN_BLOCK + half * 64, row0, row1,
			                   dq0, dq1, docs, t);
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				const uint32_t pa[4] = {att_pack(s[2 * kk][0], s[2 * kk][1]),
				                        att_pack(s[2 * kk][2], s[2 * kk][3]),
				                        att_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
				                        att_pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
				for (int dp = 0; dp < 8; dp++) {
					uint32_t b[4];
					att_ldsm_t(b, sV + frag_v(lane, half * 64 + kk * 16, dp * 16));
					att_mma(o[2 * dp], pa, b[0], b[1]);
					att_mma(o[2 * dp + 1], pa, b[2], b[3]);
				}
			}
		}
		__syncthreads();
	}
	att_cp_wait<0>();

	l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
	l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
	if (t == 0) {
		lse[(size_t)h * T + row0] = m0 * ATT_SCALE + logf(l0);
		lse[(size_t)h * T + row1] = m1 * ATT_SCALE + logf(l1);
	}
	/* the warp's own 16 rows of the Q tile are free: Q lives in qf */
	att_store_rows(y + (size_t)(qb * ATTN_BLOCK + warp * 16) * rs + hoff, rs,
	               smem + warp * 16 * ATT_ROWB, o, 1.f / l0, 1.f / l1, lane);
}

extern "C" int attn_forward_mma(void *y, float *lse, const void *q, const void *k, const void *v,
                                const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                                struct gpt_err *e)
{
	const void *ptrs[] = {y, lse, q, k, v};
	if (attn_check_args(m, heads, head_dim, ptrs, 5, "forward", e))
		return -1;
	const int nb = m->T / ATTN_BLOCK;
	CUDA_CHECK(cudaFuncSetAttribute(attn_fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
	                                ATT_FWD_SMEM));
	ATT_LAUNCH(attn_fwd_kernel, dim3(nb, heads), ATT_THREADS, ATT_FWD_SMEM, s, (bf16 *)y, lse,
	           (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, m->docs, m->docs_low,
	           m->docs_high, m->kb_first, m->T, heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}

/* 1 if the wgmma kernels can run: built with sm_90a code (ATT_WGMMA, set
 * by the Makefile) and the current device has compute capability 9.x.
 * Decided once per process. In the host emulation, 1 unless EMU_NO_WGMMA
 * is set. */
extern "C" int attn_has_wgmma(void)
{
#if defined(ATT_WGMMA) && !defined(ATT_EMULATE)
	static int has = -1;
	if (has < 0) {
		int dev = 0, major = 0;
		has = cudaGetDevice(&dev) == cudaSuccess &&
		      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
		              cudaSuccess &&
		      major == 9;
	}
	return has;
#elif defined(ATT_EMULATE)
	return !getenv("EMU_NO_WGMMA"); /* tests/gpu/emu runs them too */
#else
	return 0;
#endif
}

extern "C" int attn_forward(void *y, float *lse, const void *q, const void *k, const void *v,
                            const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                            struct gpt_err *e)
{
	static int env = -1;
	if (env < 0) {
		const char *v = getenv("GPT_ATTN_FWD");
		env = !(v && !strcmp(v, "mma"));
	}
	if (env && attn_has_wgmma())
		return attn_forward_wg(y, lse, q, k, v, m, heads, head_dim, s, e);
	return attn_forward_mma(y, lse, q, k, v, m, heads, head_dim, s, e);
}
