/*
 * attention_fwd_wg.cu - attention forward on Hopper's warpgroup MMA
 * (wgmma, sm_90a). See attention.cuh; the same function as
 * attention_fwd.cu's mma.sync kernel, which stays the path for other GPUs.
 *
 * defines: attn_forward_wg (called by attn_forward on compute capability
 * 9.x when the build has sm_90a code, ATT_WGMMA)
 *
 * One CTA of two warpgroups (8 warps) per (query block qb, head h),
 * heaviest blocks first; warpgroup w owns query rows 64 w..64 w + 63, its
 * warp 4 w + i rows 16 i.. of those (so every warp owns the same 16 rows as
 * in attention_fwd.cu). Shared memory: Q and two stages of K and V, panel
 * tiles (wgmma.cuh), 1024-byte aligned, loaded by cp.async. For each
 * visited key block:
 *   S = Q K^T: 8 wgmma m64n128k16, A = Q and B = K from shared memory
 *     (K-major), all 128 keys at once (64 fp32 registers);
 *   the mask, online softmax and P = bf16(...) as in attention_fwd.cu;
 *   O = a O + P V: 8 wgmma with A = P from registers and B = V
 *     (MN-major) from shared memory.
 * The two warpgroups run independently between the per-block barriers, so
 * one's softmax overlaps the other's products.
 */
#include "attention_impl.cuh"
#include "cuda_check.h"

#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || defined(ATT_EMULATE)
#define ATT_HAS_WGMMA 1
#include "wgmma.cuh"
#endif

#define ATT_WG_FWD_SMEM (7 * ATT_SWTILEB + 1024)

__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_fwd_wg_kernel(bf16 *__restrict__ y, float *__restrict__ lse, const bf16 *__restrict__ q,
                   const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                   const int32_t *__restrict__ docs, const int32_t *__restrict__ dlo,
                   const int32_t *__restrict__ dhi, const int32_t *__restrict__ kb_first, int T,
                   int H, int nb)
{
#ifdef ATT_HAS_WGMMA
	ATT_DYN_SMEM(smem_raw);
	unsigned char *smem = smem_raw + ((1024 - (att_smem(smem_raw) & 1023)) & 1023);
	const int qb = nb - 1 - (int)blockIdx.x, h = blockIdx.y;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wg = warp >> 2;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: Q at 0, K of stage s at 1 + 2 s, V of stage s at 2 + 2 s
	 * (three stages: block i in stage i % 3) */
	const uint32_t sQ = att_smem(smem);
	const int kb0 = kb_first[qb], n = qb - kb0 + 1;
	const bf16 *kh = k + hoff, *vh = v + hoff;

	wg_load_tile<ATT_THREADS>(sQ, q + (size_t)qb * blk + hoff, rs, tid);
	wg_load_tile<ATT_THREADS>(sQ + 1 * ATT_SWTILEB, kh + (size_t)kb0 * blk, rs, tid);
	wg_load_tile<ATT_THREADS>(sQ + 2 * ATT_SWTILEB, vh + (size_t)kb0 * blk, rs, tid);
	att_cp_commit();
	if (n > 1) {
		wg_load_tile<ATT_THREADS>(sQ + 3 * ATT_SWTILEB, kh + (size_t)(kb0 + 1) * blk, rs, tid);
		wg_load_tile<ATT_THREADS>(sQ + 4 * ATT_SWTILEB, vh + (size_t)(kb0 + 1) * blk, rs, tid);
	}
	att_cp_commit(); /* possibly empty: the wait below then still covers block 0 */

	const int row0 = qb * ATTN_BLOCK + warp * 16 + g, row1 = row0 + 8;
	const int dq0 = docs[row0], dq1 = docs[row1];
	const int qlo = dlo[qb], qhi = dhi[qb];

	float o[16][4], s[16][4];
	uint32_t pa[8][4];
#pragma unroll
	for (int d = 0; d < 16; d++)
		o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

	/* iteration i: S of block i was issued before (block 0: here); its
	 * softmax; O += P V
	 * issued; then (after the barrier that makes block i+1 visible and
	 * frees block i-1's stage) the load of block i+2 and S of block i+1,
	 * so the tensor cores run P V and the next S back to back */
	for (int i = 0; i < n; i++) {
		const int kb = kb0 + i, st = i % 3;
		if (i == 0) {
			att_cp_wait<1>();
			att_fence_async_smem();
			__syncthreads();
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				wg_mma_ss(s, wg_desc_k(sQ, wg * 64, kk), wg_desc_k(sQ + ATT_SWTILEB, 0, kk),
				          kk > 0);
			wg_commit();
		}
		wg_wait<0>(); /* S of block i and O of block i-1 */
		wg_keep(s);
		wg_keep(o);
#pragma unroll
		for (int kk = 0; kk < 8; kk++)
			wg_keep_a(pa[kk]);
		const uint32_t sV = sQ + (2 + 2 * st) * ATT_SWTILEB;
		const bool full = kb < qb && qlo == dhi[kb] && dlo[kb] == qhi;

		att_fwd_softmax<16>(s, o, m0, m1, l0, l1, full, kb * ATTN_BLOCK, row0, row1, dq0, dq1, docs,
		                    t);
#pragma unroll
		for (int j = 0; j < 16; j++) {
			pa[j >> 1][(j & 1) * 2] = att_pack(s[j][0], s[j][1]);
			pa[j >> 1][(j & 1) * 2 + 1] = att_pack(s[j][2], s[j][3]);
		}
		wg_fence();
#pragma unroll
		for (int kk = 0; kk < 8; kk++)
			wg_mma_rs<1>(o, pa[kk], wg_desc_mn(sV, kk), 1);
		wg_commit();
		if (i + 1 < n) {
			att_cp_wait<0>(); /* block i+1 */
			att_fence_async_smem();
			__syncthreads(); /* every warp waited for O of block i-1: its stage is free */
			if (i + 2 < n) {
				const int s2 = (i + 2) % 3;
				wg_load_tile<ATT_THREADS>(sQ + (1 + 2 * s2) * ATT_SWTILEB,
				                          kh + (size_t)(kb + 2) * blk, rs, tid);
				wg_load_tile<ATT_THREADS>(sQ + (2 + 2 * s2) * ATT_SWTILEB,
				                          vh + (size_t)(kb + 2) * blk, rs, tid);
				att_cp_commit();
			}
			const uint32_t sK1 = sQ + (1 + 2 * ((i + 1) % 3)) * ATT_SWTILEB;
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				wg_mma_ss(s, wg_desc_k(sQ, wg * 64, kk), wg_desc_k(sK1, 0, kk), kk > 0);
			wg_commit();
		}
	}
	wg_wait<0>();
	wg_keep(o);
#pragma unroll
	for (int kk = 0; kk < 8; kk++)
		wg_keep_a(pa[kk]);
	att_cp_wait<0>(); /* n = 1: the empty group committed for block 1 */
	__syncthreads(); /* every warp's products are done: the tiles are free */

	l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
	l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
	if (t == 0) {
		lse[(size_t)h * T + row0] = m0 * ATT_SCALE + logf(l0);
		lse[(size_t)h * T + row1] = m1 * ATT_SCALE + logf(l1);
	}
	/* stage the warp's 16 rows in padded rows (8 warps x 16 x 272 bytes) */
	att_store_rows(y + (size_t)(qb * ATTN_BLOCK + warp * 16) * rs + hoff, rs,
	               smem + warp * 16 * ATT_ROWB, o, 1.f / l0, 1.f / l1, lane);
#endif
}

extern "C" int attn_forward_wg(void *y, float *lse, const void *q, const void *k, const void *v,
                               const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                               struct gpt_err *e)
{
	const void *ptrs[] = {y, lse, q, k, v};
	if (attn_check_args(m, heads, head_dim, ptrs, 5, "forward", e))
		return -1;
	const int nb = m->T / ATTN_BLOCK;
	CUDA_CHECK(cudaFuncSetAttribute(attn_fwd_wg_kernel,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATT_WG_FWD_SMEM));
	ATT_LAUNCH(attn_fwd_wg_kernel, dim3(nb, heads), ATT_THREADS, ATT_WG_FWD_SMEM, s,
	           (bf16 *)y, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, m->docs,
	           m->docs_low, m->docs_high, m->kb_first, m->T, heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}
