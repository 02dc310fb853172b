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
 * in attention_fwd.cu). Shared memory: Q and three stages of K and V,
 * panel tiles (wgmma.cuh), 1024-byte aligned, then four mbarriers (one per
 * stage, one for Q). Thread 0 loads the tiles with TMA (cp.async.bulk.tensor,
 * two 64-column boxes with the 128-byte swizzle per tile; tensor maps of
 * q, k, v built by the launcher (attn_tmap_tiles), kernel parameters), each stage's K and V
 * completing on the stage's mbarrier; key block i goes to stage i % 3 and
 * its consumers wait for the barrier's phase i / 3 (parity (i / 3) & 1).
 * Thread 0 refills a stage only after the __syncthreads that follows
 * every warp's wait for the products that read it. For each visited key
 * block:
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

/* tiles: Q at 0, K of stage s at 1 + 2 s, V of stage s at 2 + 2 s; then the
 * mbarriers: stage s at 8 s, Q at 24 */
#define ATT_WG_FWD_BARS (7 * ATT_SWTILEB)
#define ATT_WG_FWD_SMEM (ATT_WG_FWD_BARS + 32 + 1024)

#ifdef ATT_HAS_WGMMA
/* Thread 0: announce and start the TMA loads of key block kb's K and V
 * tiles (head h) into stage st. */
__device__ __forceinline__ void wg_fwd_load_kv(uint32_t sQ, int st, const CUtensorMap *tk,
                                               const CUtensorMap *tv, int h, int kb)
{
	const uint32_t bar = sQ + ATT_WG_FWD_BARS + 8 * st, sK = sQ + (1 + 2 * st) * ATT_SWTILEB;
	att_mbar_arrive_expect_tx(bar, 2 * ATT_SWTILEB);
	wg_tma_tile(sK, tk, h, kb * ATTN_BLOCK, bar);
	wg_tma_tile(sK + ATT_SWTILEB, tv, h, kb * ATTN_BLOCK, bar);
}
#endif

/* tq, tk, tv: tensor maps of q, k, v (attn_tmap_tiles) */
__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_fwd_wg_kernel(bf16 *__restrict__ y, float *__restrict__ lse,
                   const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv, const int32_t *__restrict__ docs,
                   const int32_t *__restrict__ dlo, const int32_t *__restrict__ dhi,
                   const int32_t *__restrict__ kb_first, int T, int H, int nb)
{
#ifdef ATT_HAS_WGMMA
	ATT_DYN_SMEM(smem_raw);
	unsigned char *smem = smem_raw + ((1024 - (att_smem(smem_raw) & 1023)) & 1023);
	const int qb = nb - 1 - (int)blockIdx.x, h = blockIdx.y;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wg = warp >> 2;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const uint32_t sQ = att_smem(smem), sB = sQ + ATT_WG_FWD_BARS;
	const int kb0 = kb_first[qb], n = qb - kb0 + 1;

	/* The TMA writes shared memory through the async proxy, which the
	 * wgmma reads through too, and a completed mbarrier phase makes the
	 * copies visible to the threads that waited for it: unlike after
	 * cp.async, no att_fence_async_smem() and no __syncthreads is needed
	 * between a load and the products that read it. The __syncthreads
	 * after the barriers' init makes them visible to every thread. */
	if (tid == 0) {
		for (int b = 0; b < 4; b++)
			att_mbar_init(sB + 8 * b, 1);
		att_mbar_arrive_expect_tx(sB + 24, ATT_SWTILEB);
		wg_tma_tile(sQ, &tq, h, qb * ATTN_BLOCK, sB + 24);
		wg_fwd_load_kv(sQ, 0, &tk, &tv, h, kb0);
		if (n > 1)
			wg_fwd_load_kv(sQ, 1, &tk, &tv, h, kb0 + 1);
	}
	__syncthreads();

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
	 * softmax; O += P V issued; then (after the __syncthreads that frees
	 * block i-1's stage) the load of block i+2, the wait for block i+1
	 * and S of block i+1, so the tensor cores run P V and the next S back
	 * to back */
	for (int i = 0; i < n; i++) {
		const int kb = kb0 + i, st = i % 3;
		if (i == 0) {
			att_mbar_wait(sB + 24, 0); /* Q */
			att_mbar_wait(sB, 0);      /* block 0: stage 0, phase 0 */
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
			if (i + 2 < n) {
				/* every warp waited for O of block i-1 (wg_wait above):
				 * its stage, (i + 2) % 3, is free */
				__syncthreads();
				if (tid == 0)
					wg_fwd_load_kv(sQ, (i + 2) % 3, &tk, &tv, h, kb + 2);
			}
			const int s1 = (i + 1) % 3;
			const uint32_t sK1 = sQ + (1 + 2 * s1) * ATT_SWTILEB;
			att_mbar_wait(sB + 8 * s1, ((i + 1) / 3) & 1); /* block i+1 */
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
	/* every warp's products are done and every load was waited for: the
	 * tiles are free for the stores' staging (the barriers stay apart) */
	__syncthreads();

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
	CUtensorMap tq, tk, tv;
	if (attn_tmap_tiles(&tq, q, m->T, heads, "forward", e) ||
	    attn_tmap_tiles(&tk, k, m->T, heads, "forward", e) ||
	    attn_tmap_tiles(&tv, v, m->T, heads, "forward", e))
		return -1;
	CUDA_CHECK(cudaFuncSetAttribute(attn_fwd_wg_kernel,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATT_WG_FWD_SMEM));
	ATT_LAUNCH(attn_fwd_wg_kernel, dim3(nb, heads), ATT_THREADS, ATT_WG_FWD_SMEM, s,
	           (bf16 *)y, lse, tq, tk, tv, m->docs, m->docs_low, m->docs_high, m->kb_first, m->T,
	           heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}
