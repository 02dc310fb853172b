/*
 * attention_bwd_wg.cu - the one-pass attention backward (dk, dv and dq,
 * deterministic) on Hopper's warpgroup MMA (wgmma, sm_90a). See
 * attention.cuh; the same function as attention_bwd_fused.cu's mma.sync
 * kernel, which stays the path for other GPUs and whose header explains the
 * scheme this kernel keeps: one CTA per (key block kb, head) taking its
 * place from a ticket counter, walking the query blocks qb = kb..qb_last[kb]
 * in two 64-query slices, and dq summed in fp32 in the workspace in the
 * fixed order kb = qb, qb-1, ..., kb_first[qb] under per-(query block,
 * head) flags, the last contributor writing bf16.
 *
 * defines: attn_backward_wg (called by attn_backward where attn_has_wgmma())
 *
 * Work split: warpgroup w (warps 4 w..4 w+3) owns keys 64 w..64 w+63 of
 * the block, warp 4 w + i keys 16 i.. of those. Per slice:
 *   S^T = K Q^T and dP^T = V dY^T: wgmma m64n64k16 (A = K or V, B = Q or dY,
 *     K-major panel tiles, wgmma.cuh), 32 fp32 registers each;
 *   P^T and dS^T = P^T (dP^T - delta) elementwise as in the mma.sync
 *     kernel; both packed to bf16 A fragments in registers; dS^T also to a
 *     shared stage (128 keys x 64 queries, one 128-byte-swizzled panel);
 *   dV += P^T dY and dK += dS^T Q: wgmma m64n128k16 with A from registers,
 *     B = dY or Q (MN-major), accumulators (64 registers each) kept over
 *     the query blocks;
 *   dQ = dS K for the slice's 64 queries and head dimensions 64 w..: wgmma
 *     m64n64k16 with A = the dS^T stage (M-major) and B = K (N-major).
 * dQ parts go to the workspace straight from registers: the first
 * contributor stores them, the middle ones add them with red.global.add
 * .v4.f32, the last reads the sum (one contributor at a time per element,
 * in flag order, so the sums are the same on every run). A contributor
 * releases its flag right after the barrier that ends its iteration over
 * the query block, by thread 0's st.release.gpu: the barrier orders every thread's
 * reductions before thread 0's release, and a release is cumulative in the
 * PTX memory model, so the flag's reader (ld.acquire.gpu, then a barrier)
 * sees all of them; no per-thread fence (the pattern of CUTLASS's
 * semaphore and generic barrier). Measured on an H200 (GPT_SEED=7 bench,
 * W = 14): a __threadfence() in every thread before the barrier cost 2.8%
 * of fwd+bwd (2.462 against 2.394 ms), fence.acq_rel.gpu the same.
 * (Until session 6 the release waited for the next query block's first
 * slice barrier, half an iteration later, and the next contributor with
 * it. Timing experiments with wrong results, GPT_SEED=7 bench, W = 14:
 * fwd+bwd 2.333-2.377 ms; without the middle contributors' reductions
 * 2.180; without the flag waits as well 1.992; without dQ at all 1.829.)
 * Shared memory: K, V, two stages of Q and dY (6 x 32 KB panel tiles), a
 * dS^T stage per slice (2 x 16 KB, so one barrier per slice: writing one
 * never waits for the other's readers), lse and delta (2 stages of 2 x 512
 * bytes), two mbarriers (one per Q/dY stage); 1024-byte aligned, with the
 * alignment slack: 227 KB in all, the limit (ATT_BWG_* below).
 * Loads: thread 0 loads the tiles with TMA (cp.async.bulk.tensor, two
 * 64-column boxes with the 128-byte swizzle per tile; tensor maps of q, k,
 * v, dy built by the launcher, kernel parameters). Iteration i (i = 0..n-1)
 * handles query block qb = kb + i from stage i & 1: its Q and dY complete
 * on that stage's mbarrier, phase i >> 1 (i = 0: K and V too, 128 KB on
 * stage 0's phase 0), for which every thread waits with parity
 * (i >> 1) & 1. lse and delta stay on cp.async (threads 0..63, one 16-byte
 * copy each). Iteration i+1's loads are issued at the top of iteration i,
 * after the __syncthreads that ends iteration i-1, before which every warp
 * finished reading stage (i+1) & 1 (iteration i-1's: its products waited
 * for with wg_wait<0>, its lse/delta read); the wgmma reads and the TMA
 * writes are both in the async proxy, so no proxy fence is needed (the
 * forward's and CUTLASS's pipelines do the same). The copying threads wait
 * for their lse/delta copies before the __syncthreads that ends iteration
 * i, which publishes them for iteration i+1 (iteration 0's: a wait and a
 * __syncthreads at i = 0); so, unlike with cp.async tiles, no barrier at
 * the top of the loop.
 */
#include "attention_impl.cuh"
#include "cuda_check.h"

#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || defined(ATT_EMULATE)
#define ATT_HAS_WGMMA 1
#include "wgmma.cuh"
#endif

/* From the 1024-byte-aligned start: tiles K at 0, V at 1, Q stage s at
 * 2 + s, dY stage s at 4 + s (32 KB each); the dS^T stages; lse stage s at
 * + 512 s and delta stage s at + 1024 + 512 s; the mbarriers, stage s at
 * + 8 s. The alignment skips at most 1008 bytes (dynamic shared memory is
 * at least 16-byte aligned), so the 1024 bytes of slack after the lse and
 * delta hold the 16 bytes of barriers and the alignment in every case. */
#define ATT_BWG_ST (6 * ATT_SWTILEB)               /* dS^T stages: slice s at + 16 KB s */
#define ATT_BWG_VEC (ATT_BWG_ST + 2 * 128 * 128)   /* lse, delta: 2 stages */
#define ATT_BWG_TICKET (ATT_BWG_ST + 128 * 128)    /* (slice 1's stage, before its use) */
#define ATT_BWG_BARS (ATT_BWG_VEC + 4 * ATTN_BLOCK * 4)
#define ATT_BWG_SMEM (ATT_BWG_BARS + 16 + 1008)    /* 227 KB, the limit */
static_assert(ATT_BWG_SMEM == 227 * 1024, "the backward's shared memory is at the limit");

#ifdef ATT_HAS_WGMMA
/* Thread 0: announce and start the TMA loads of query block qb's Q and dY
 * tiles (head h) into stage st, on the stage's mbarrier (with extra bytes
 * of loads the caller starts on it too). */
__device__ __forceinline__ void wg_bwd_load_qdy(uint32_t sK, int st, const CUtensorMap *tq,
                                                const CUtensorMap *tdy, int h, int qb,
                                                uint32_t extra)
{
	const uint32_t bar = sK + ATT_BWG_BARS + 8 * st;
	att_mbar_arrive_expect_tx(bar, 2 * ATT_SWTILEB + extra);
	wg_tma_tile(sK + (2 + st) * ATT_SWTILEB, tq, h, qb * ATTN_BLOCK, bar);
	wg_tma_tile(sK + (4 + st) * ATT_SWTILEB, tdy, h, qb * ATTN_BLOCK, bar);
}
#endif

/* Byte offset of (key row r, query column c) in the dS^T stage: one panel
 * of 128 rows x 64 bf16 (wgmma.cuh's layout). */
__device__ __forceinline__ uint32_t bwg_st(int r, int c)
{
	return (uint32_t)(r * 128 + (((c >> 3) ^ (r & 7)) << 4) + (c & 7) * 2);
}

/* tq, tk, tv, tdy: tensor maps of q, k, v, dy (attn_tmap_tiles) */
__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_bwd_wg_kernel(bf16 *__restrict__ dq, bf16 *__restrict__ dk, bf16 *__restrict__ dv,
                   const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tdy,
                   const float *__restrict__ lse, const float *__restrict__ delta,
                   const int32_t *__restrict__ docs, const int32_t *__restrict__ dlo,
                   const int32_t *__restrict__ dhi, const int32_t *__restrict__ qb_last,
                   const int32_t *__restrict__ kb_first, float *__restrict__ dqacc,
                   int *__restrict__ sem, int *__restrict__ ticket, int T, int H, int nb)
{
#ifdef ATT_HAS_WGMMA
	ATT_DYN_SMEM(smem_raw);
	unsigned char *smem = smem_raw + ((1024 - (att_smem(smem_raw) & 1023)) & 1023);
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const int wg = warp >> 2, wi = warp & 3;
	const uint32_t sK = att_smem(smem), sV = sK + ATT_SWTILEB;
	const uint32_t stS = sK + ATT_BWG_ST, sVec = sK + ATT_BWG_VEC, sB = sK + ATT_BWG_BARS;
	/* The mbarriers are initialised before the ticket's __syncthreads,
	 * which makes them visible to every thread. The TMA writes shared
	 * memory through the async proxy, which the wgmma reads through too,
	 * and a completed mbarrier phase makes the copies visible to the
	 * threads that waited for it: unlike after cp.async, no
	 * att_fence_async_smem() and no __syncthreads between a tile's load and
	 * the products that read it. */
	if (tid == 0) {
		att_mbar_init(sB, 1);
		att_mbar_init(sB + 8, 1);
	}
	const int tix = att_take_ticket(ticket, reinterpret_cast<int *>(smem + ATT_BWG_TICKET), nb * H, tid);
	const int h = tix % H, kb = nb - 1 - tix / H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	unsigned char *gS = smem + ATT_BWG_ST;
	const float *fVec = reinterpret_cast<const float *>(smem + ATT_BWG_VEC);
	const float *lseh = lse + (size_t)h * T, *delh = delta + (size_t)h * T;
	int *semh = sem + (size_t)h * nb;
	const int n = qb_last[kb] - kb + 1;

	if (tid == 0) { /* stage 0's phase 0: query block kb's Q and dY, and K and V */
		wg_bwd_load_qdy(sK, 0, &tq, &tdy, h, kb, 2 * ATT_SWTILEB);
		wg_tma_tile(sK, &tk, h, kb * ATTN_BLOCK, sB);
		wg_tma_tile(sV, &tv, h, kb * ATTN_BLOCK, sB);
	}
	att_load_lse_delta(sVec, lseh + kb * ATTN_BLOCK, delh + kb * ATTN_BLOCK, tid);
	att_cp_commit();

	const int kr = 64 * wg + 16 * wi + g; /* key row in the block (and kr + 8) */
	const int krow = kb * ATTN_BLOCK + kr;
	const int kd0 = docs[krow], kd1 = docs[krow + 8];
	const int klo = dlo[kb], khi = dhi[kb];
	const float sl2 = ATT_SCALE * ATT_LOG2E;

	float dka[16][4], dva[16][4];
#pragma unroll
	for (int d = 0; d < 16; d++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			dka[d][e] = dva[d][e] = 0.f;

	for (int i = 0; i < n; i++) {
		const int qb = kb + i, st = i & 1;
		if (i + 1 < n) {
			/* stage st ^ 1 held block i-1, which every warp finished
			 * reading before the __syncthreads that ended iteration i-1 */
			const int nq = qb + 1, ns = st ^ 1;
			if (tid == 0)
				wg_bwd_load_qdy(sK, ns, &tq, &tdy, h, nq, 0);
			att_load_lse_delta(sVec + ns * 512, lseh + nq * ATTN_BLOCK, delh + nq * ATTN_BLOCK,
			                   tid);
		}
		att_cp_commit(); /* possibly empty: the wait below then still covers block 0 */
		if (i == 0) { /* block 0's lse and delta (block 1's may be in flight) */
			att_cp_wait<1>();
			__syncthreads();
		}
		att_mbar_wait(sB + 8 * st, (i >> 1) & 1); /* Q, dY of block i (i = 0: K, V too) */
		const uint32_t sQ = sK + (2 + st) * ATT_SWTILEB, sdY = sK + (4 + st) * ATT_SWTILEB;
		const float *L = fVec + st * 128, *Dl = fVec + 256 + st * 128;
		const bool full = kb < qb && dlo[qb] == khi && klo == dhi[qb];
		const bool first = i == 0, last = kb == kb_first[qb];
		/* a thread's dQ part f (4 floats) at + 128 f: each warp access covers
		 * 512 contiguous bytes */
		float *acc_base = dqacc + ((size_t)h * nb + qb) * (2 * 8192) + warp * 1024 + lane * 4;
#pragma unroll 1
		for (int sl = 0; sl < 2; sl++) {
			float s[8][4], dp[8][4];
			/* two groups: P is computed while dP^T is still in the tensor cores */
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				wg_mma_ss64<0, 0>(s, wg_desc_k(sK, 64 * wg, kk), wg_desc_k(sQ, 64 * sl, kk),
				                  kk > 0);
			wg_commit();
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				wg_mma_ss64<0, 0>(dp, wg_desc_k(sV, 64 * wg, kk), wg_desc_k(sdY, 64 * sl, kk),
				                  kk > 0);
			wg_commit();
			wg_wait<1>();
			wg_keep8(s);
			/* element (key krow (+8), query column c, c + 1 of the block) */
#pragma unroll
			for (int j = 0; j < 8; j++) {
				const int c = 64 * sl + j * 8 + 2 * t;
				const float L0 = L[c] * ATT_LOG2E, L1 = L[c + 1] * ATT_LOG2E;
				const int qp = qb * ATTN_BLOCK + c;
				float p00 = exp2f(fmaf(s[j][0], sl2, -L0)), p01 = exp2f(fmaf(s[j][1], sl2, -L1));
				float p10 = exp2f(fmaf(s[j][2], sl2, -L0)), p11 = exp2f(fmaf(s[j][3], sl2, -L1));
				if (!full) {
					const int qd0 = docs[qp], qd1 = docs[qp + 1];
					if (!(krow <= qp && kd0 == qd0))
						p00 = 0.f;
					if (!(krow <= qp + 1 && kd0 == qd1))
						p01 = 0.f;
					if (!(krow + 8 <= qp && kd1 == qd0))
						p10 = 0.f;
					if (!(krow + 8 <= qp + 1 && kd1 == qd1))
						p11 = 0.f;
				}
				s[j][0] = p00, s[j][1] = p01, s[j][2] = p10, s[j][3] = p11;
			}
			uint32_t pp[4][4], pd[4][4];
#pragma unroll
			for (int kq = 0; kq < 4; kq++) {
				pp[kq][0] = att_pack(s[2 * kq][0], s[2 * kq][1]);
				pp[kq][1] = att_pack(s[2 * kq][2], s[2 * kq][3]);
				pp[kq][2] = att_pack(s[2 * kq + 1][0], s[2 * kq + 1][1]);
				pp[kq][3] = att_pack(s[2 * kq + 1][2], s[2 * kq + 1][3]);
			}
			/* dV += P^T dY can start now (B is the dY stage, A registers) */
			wg_fence();
#pragma unroll
			for (int kq = 0; kq < 4; kq++)
				wg_mma_rs<1>(dva, pp[kq], wg_desc_mn(sdY, 4 * sl + kq), 1);
			wg_commit();
			wg_wait<1>(); /* dP^T done (dV may still run) */
			wg_keep8(dp);
#pragma unroll
			for (int j = 0; j < 8; j++) {
				const int c = 64 * sl + j * 8 + 2 * t;
				const float D0 = Dl[c], D1 = Dl[c + 1];
				dp[j][0] = s[j][0] * (dp[j][0] - D0);
				dp[j][1] = s[j][1] * (dp[j][1] - D1);
				dp[j][2] = s[j][2] * (dp[j][2] - D0);
				dp[j][3] = s[j][3] * (dp[j][3] - D1);
			}
#pragma unroll
			for (int kq = 0; kq < 4; kq++) {
				pd[kq][0] = att_pack(dp[2 * kq][0], dp[2 * kq][1]);
				pd[kq][1] = att_pack(dp[2 * kq][2], dp[2 * kq][3]);
				pd[kq][2] = att_pack(dp[2 * kq + 1][0], dp[2 * kq + 1][1]);
				pd[kq][3] = att_pack(dp[2 * kq + 1][2], dp[2 * kq + 1][3]);
			}
			wg_fence();
#pragma unroll
			for (int kq = 0; kq < 4; kq++)
				wg_mma_rs<1>(dka, pd[kq], wg_desc_mn(sQ, 4 * sl + kq), 1);
			wg_commit();
			/* dS^T to this slice's stage: free, since every warp waited for
			 * its dQ products of the previous query block before that
			 * block's last barrier. At slice 0 thread 0 waits for this
			 * block's flag before the barrier */
			unsigned char *gSt = gS + sl * 128 * 128;
#pragma unroll
			for (int kq = 0; kq < 4; kq++)
#pragma unroll
				for (int hh = 0; hh < 2; hh++) {
					const int c = 16 * kq + 8 * hh + 2 * t;
					*reinterpret_cast<uint32_t *>(gSt + bwg_st(kr, c)) = pd[kq][2 * hh];
					*reinterpret_cast<uint32_t *>(gSt + bwg_st(kr + 8, c)) = pd[kq][2 * hh + 1];
				}
			att_fence_async_smem();
			if (sl == 0 && tid == 0 && !first) {
				att_flag_wait(semh + qb, qb - kb);
				if (last)
					att_flag_store(semh + qb, 0);
			}
			__syncthreads(); /* the stage is written; thread 0 holds the flag */
			float dqa[8][4];
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < 8; kk++)
				wg_mma_ss64<1, 1>(dqa, wg_desc(stS + sl * 128 * 128 + kk * 2048, WG_PANELB, 1024),
				                  wg_desc(sK + wg * WG_PANELB + kk * 2048, WG_PANELB, 1024),
				                  kk > 0);
			wg_commit();
			wg_wait<0>();
			wg_keep(dva);
			wg_keep(dka);
			wg_keep8(dqa);
#pragma unroll
			for (int kq = 0; kq < 4; kq++) {
				wg_keep_a(pp[kq]);
				wg_keep_a(pd[kq]);
			}
			/* dQ rows: queries 64 sl + 16 wi + g (+8), columns 64 wg + 8 j + 2 t */
			float *gacc = acc_base + (size_t)sl * 8192;
			if (last) {
				if (!first) {
#pragma unroll
					for (int f = 0; f < 8; f++) {
						const float4 x = __ldcg(reinterpret_cast<const float4 *>(gacc + 128 * f));
						dqa[f][0] += x.x, dqa[f][1] += x.y, dqa[f][2] += x.z, dqa[f][3] += x.w;
					}
				}
				const size_t row = (size_t)qb * ATTN_BLOCK + 64 * sl + 16 * wi + g;
#pragma unroll
				for (int j = 0; j < 8; j++) {
					bf16 *o = dq + row * rs + hoff + 64 * wg + 8 * j + 2 * t;
					*reinterpret_cast<uint32_t *>(o) =
						att_pack(dqa[j][0] * ATT_SCALE, dqa[j][1] * ATT_SCALE);
					*reinterpret_cast<uint32_t *>(o + 8 * rs) =
						att_pack(dqa[j][2] * ATT_SCALE, dqa[j][3] * ATT_SCALE);
				}
			} else if (first) {
#pragma unroll
				for (int f = 0; f < 8; f++)
					__stcg(reinterpret_cast<float4 *>(gacc + 128 * f),
					       make_float4(dqa[f][0], dqa[f][1], dqa[f][2], dqa[f][3]));
			} else {
#pragma unroll
				for (int f = 0; f < 8; f++)
					att_red_add4(gacc + 128 * f, dqa[f][0], dqa[f][1], dqa[f][2], dqa[f][3]);
			}
		}
		att_cp_wait<0>(); /* block i+1's lse and delta, published by the barrier */
		/* every warp's products of block i are done (wg_wait<0> above): its
		 * stage is free; after the last block every load was waited for
		 * and the tiles are free for the dk, dv staging below */
		__syncthreads();
		/* every thread's dQ reductions of block i precede that barrier:
		 * the next contributor may go */
		if (tid == 0 && !last)
			att_flag_release(semh + qb, qb - kb + 1);
	}

	/* dk, dv: the warp's 16 key rows, staged through padded rows (the tiles
	 * are free) */
	bf16 *orow = dk + ((size_t)kb * ATTN_BLOCK + 16 * warp) * rs + hoff;
	unsigned char *stage = smem + warp * 16 * ATT_ROWB;
	att_store_rows(orow, rs, stage, dka, ATT_SCALE, ATT_SCALE, lane);
	att_store_rows(dv + (orow - dk), rs, stage, dva, 1.f, 1.f, lane);
#endif
}

extern "C" int attn_backward_wg(void *dq, void *dk, void *dv, const void *dy, const void *q,
                                const void *k, const void *v, const void *y, const float *lse,
                                const struct attn_mask *m, int heads, int head_dim,
                                cudaStream_t s, struct gpt_err *e)
{
	if (attn_backward_begin(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e))
		return -1;
	const int T = m->T, nb = T / ATTN_BLOCK;
	CUtensorMap tq, tk, tv, tdy;
	if (attn_tmap_tiles(&tq, q, T, heads, "backward", e) ||
	    attn_tmap_tiles(&tk, k, T, heads, "backward", e) ||
	    attn_tmap_tiles(&tv, v, T, heads, "backward", e) ||
	    attn_tmap_tiles(&tdy, dy, T, heads, "backward", e))
		return -1;
	CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_wg_kernel,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATT_BWG_SMEM));
	ATT_LAUNCH(attn_bwd_wg_kernel, nb * heads, ATT_THREADS, ATT_BWG_SMEM, s, (bf16 *)dq,
	           (bf16 *)dk, (bf16 *)dv, tq, tk, tv, tdy, lse, m->delta, m->docs, m->docs_low,
	           m->docs_high, m->qb_last, m->kb_first, m->dqacc, m->sem, m->ticket, T, heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}
