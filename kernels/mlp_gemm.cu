/*
 * mlp_gemm.cu - the MLP's fc forward and proj input-gradient products with
 * relu^2 fused into the epilogue, on Hopper's warpgroup MMA (wgmma) fed by
 * TMA (sm_90a). See mlp_gemm.cuh for the interface and the numerics.
 *
 * defines: mlp_gemm_supported, mlp_fc_relu2_forward, mlp_proj_dx_relu2,
 *          mlp_gemm_set_ctas
 *
 * C[M,N] = A[M,K] B, A row-major (K-major), B either [N,K] row-major
 * (K-major: fc's W, C = A W^T) or [K,N] row-major (N-major: proj's W,
 * C = A W), bf16 in, fp32 accumulators.
 *
 * Tiles and work split: 128 x 256 output tiles, K in steps of 64. A CTA of
 * 384 threads per SM (persistent: grid = the SM count, or fewer tiles)
 * takes tiles blockIdx.x, + gridDim.x, ...; tile t is rows 128 (t / nt)..,
 * columns 256 (t % nt).. (nt = N / 256): N-fastest, so the nt tiles of one
 * 128-row block of A run at about the same time on neighbouring CTAs and
 * read that block from L2 after the first; B (4.7 MB at the record's
 * shape) stays in L2 throughout, so A is read from memory about once.
 * Warpgroup 0 is the producer: after setmaxnreg.dec (to 40 registers for
 * proj, 64 for fc: MLP_PRODUCER_REGS) its thread 0 issues every TMA load;
 * in fc its warps 1..3 are the epilogue warps (below), otherwise they
 * exit. Warpgroups 1 and 2 (setmaxnreg.inc to 232 or 216, what warpgroup
 * 0 gave back) are the consumers: warpgroup 1 + c computes rows
 * 64 c..64 c+63 of the tile, all 256 columns, as wgmma m64n256k16 with both
 * operands in shared memory: 128 fp32 accumulators per thread, four
 * products per 64-deep step, one commit group per step.
 *
 * Shared memory: a ring of 3 stages, each an A tile (128 rows x 64 bf16,
 * one 16 KB panel: row r at 128 r, its 16-byte chunk c at c ^ (r & 7), the
 * TMA's 128-byte swizzle, wgmma.cuh's panel layout) and a B tile of 32 KB:
 * K-major, 256 rows of 64 k (one 2D box of 64 x 256); N-major, four 8 KB
 * panels of 64 k rows x 64 n (boxes of 64 x 64; panel p = columns 64 p..).
 * Descriptors (PTX ISA canonical layouts, 128-byte swizzle): A and K-major
 * B: SBO = 1024 (8 rows), k16 step = +32 bytes; N-major B: LBO = 8 KB (the
 * next 64 n), SBO = 1024 (the next 8 k rows), k16 step = +16 rows of 128
 * bytes. Then a 32 KB staging buffer per consumer warpgroup (its 64 x 256
 * bf16 outputs as four 64 x 64 boxes in the same swizzled panel layout).
 * 3 x 48 KB + 64 KB, the barriers and the alignment slack: 209 KB.
 *
 * Pipeline: per stage a "full" mbarrier (count 1: the producer's
 * arrive.expect_tx of the stage's 48 KB, completed by the TMA) and an
 * "empty" one (count 8: lane 0 of each consumer warp). Steps are numbered
 * across the CTA's tiles, i = 0, 1, ...; step i uses stage i % 4, its
 * j-th use, j = i / 4. The producer waits for the empty barrier's phase
 * j - 1 (parity (j & 1) ^ 1: for j = 0 the phase "before" a fresh barrier,
 * which returns at once), then announces and issues the loads; a consumer
 * waits for the full barrier's phase j (parity j & 1), issues the step's
 * four products, commits, and waits until at most this group is in flight
 * (wgmma.wait_group 1): step i - 1's products have then finished reading
 * their stage, and the warp (after __syncwarp, so every lane has passed its
 * wait) releases that stage with one arrive on its empty barrier. After a
 * tile's last step it waits for all (wait_group 0) and releases that stage
 * too, so every phase of every barrier completes and the block ends
 * between phases. Ordering: the TMA writes and the wgmma reads of shared
 * memory are both in the async proxy; a full phase's completion makes its
 * copies visible to the threads that waited for it, and an empty phase
 * completes only after every consumer warp's wait_group retired the
 * products that read the stage, so the producer's next load of that stage
 * (issued after its wait on the empty phase) cannot overwrite data still
 * being read; no proxy fence is needed (CUTLASS's TMA pipelines rely on the
 * same). The producer runs up to 3 steps ahead, across tile boundaries:
 * the next tile's first stages load while the consumers run the epilogue.
 *
 * Epilogue, through shared memory: a thread holds rows g and g + 8 of its
 * warp's 16 (lane = 4 g + t), columns 8 j + 2 t, +1 for j = 0..31, and
 * writes each pair to its place in the warpgroup's staging buffer
 * (mlp_stg_off: conflict-free), from where TMA tensor stores (bulk groups)
 * write the four boxes and drain while the next tile's products run.
 * Forward (fc): once its staging buffer is free (sfree[c]), the consumer
 * writes u = bf16(acc), fences (fence.proxy.async) and arrives on
 * sfull[c] (128 arrivals); the epilogue warps (mlp_fc_epilogue) store u,
 * wait until the TMA has read it, replace it in place by act = bf16(r * r)
 * with r = max(u, 0) (relu2_fwd_kernel's expression), store act and free
 * the buffer: the consumers never wait for a store. Backward (proj): the
 * producer loads the tile's u into the staging buffer by TMA (after the
 * tile's third step's loads, once the consumer has signalled on ufree[c]
 * that its previous store has left the buffer; arrival on ufull[c]); each
 * consumer thread replaces its u pairs in place with du = u > 0 ?
 * bf16(g * 2 * u) : 0, g = bf16(acc), relu2_bwd_kernel's, and after a
 * fence and a named barrier of the warpgroup its thread 0 stores the
 * buffer as du (so du may be u). Whoever issued stores waits for them to
 * have been read before the block ends.
 *
 * Measured on an H200 (GPT_BENCH=1 CK_RUN_CASE=bench build/tests/gpu_mlp,
 * M 65536, N 3072, K 768; session 7, .carry/s7c6.sh): fc 0.473 ms against
 * cuBLASLt + relu2 0.403 + 0.195 ms (0.79x); proj dx 0.585-0.618 ms
 * against 0.39-0.46 + 0.28 ms (0.83-0.87x). Training (bench/train_gpu.sh,
 * same call): 812.6 / 921.6 / 1035.5 ms per step at W = 1 / 7 / 14 against
 * 832.0 / 936.8 / 1055.2 with GPT_MLP_GEMM=0. Earlier forms: the
 * consumers storing u, waiting, then act, themselves: fc 0.509 ms (0.427
 * when act is left out, a timing experiment); the products alone (no
 * epilogue, 4 stages, session 6) 0.364 / 0.403 ms; stores straight from
 * the registers 1.05 / 0.74 ms (4-byte) and 0.56 / 0.85 ms (16-byte after
 * a quad transpose); two consumers on alternate 64 x 256 tiles with those
 * stores 0.64 / 0.91 ms. The LM head's logits with the softcap and exp in
 * this epilogue (branch headgemm) took 1.65 ms (consumers) or 2.1 ms
 * (epilogue warps) per 8192-row chunk against cuBLASLt's 0.93 plus a
 * row pass of ~0.7: the exp unit's work is not hidden.
 */
#include <stdio.h>
#include <stdlib.h>

#include <cudaTypedefs.h>

#include "attention_impl.cuh"
#include "cuda_check.h"
#include "mlp_gemm.cuh"

#if (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)) || defined(ATT_EMULATE)
#define ATT_HAS_WGMMA 1
#include "wgmma.cuh"
#endif

#define MLP_BM 128
#define MLP_BN 256
#define MLP_BK 64
#define MLP_STAGES 3
#define MLP_THREADS 384                        /* producer warpgroup + 2 consumers */
#define MLP_ABYTES (MLP_BM * MLP_BK * 2)       /* 16 KB */
#define MLP_BBYTES (MLP_BN * MLP_BK * 2)       /* 32 KB */
#define MLP_BOFF (MLP_STAGES * MLP_ABYTES)     /* B stages after the A stages */
#define MLP_STG (MLP_STAGES * (MLP_ABYTES + MLP_BBYTES)) /* staging: 32 KB per consumer */
#define MLP_STGBYTES (64 * MLP_BN * 2)         /* a consumer's 64 x 256 bf16 */
#define MLP_PANEL (64 * 128)                   /* 64 rows x 64 columns, 8 KB */
#define MLP_BARS (MLP_STG + 2 * MLP_STGBYTES)  /* the mbarriers: see MLP_B_* */
#define MLP_B_FULL 0                           /* full[s] at 8 s */
#define MLP_B_EMPTY (8 * MLP_STAGES)           /* empty[s] */
#define MLP_B_UFULL (16 * MLP_STAGES)          /* ufull[c], c = consumer */
#define MLP_B_UFREE (16 * MLP_STAGES + 16)     /* ufree[c] */
#define MLP_B_SFULL (16 * MLP_STAGES + 32)     /* fc: sfull[c] */
#define MLP_B_SFREE (16 * MLP_STAGES + 48)     /* fc: sfree[c] */
#define MLP_SMEM (MLP_BARS + 16 * MLP_STAGES + 64 + 1008) /* + the 1024-byte alignment */
#define MLP_EMPTY_ARRIVALS 8                   /* one per consumer warp */

#ifdef ATT_HAS_WGMMA
#ifdef ATT_EMULATE
template <int R> inline void mlp_setmaxnreg_inc(void) {}
template <int R> inline void mlp_setmaxnreg_dec(void) {}
inline void mlp_bar_sync(int id, int n) { emu_bar_sync(id, n); }
#else
/* named barrier id of n threads (a consumer warpgroup's own) */
__device__ __forceinline__ void mlp_bar_sync(int id, int n)
{
	asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
template <int R> __device__ __forceinline__ void mlp_setmaxnreg_inc(void)
{
	asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R> __device__ __forceinline__ void mlp_setmaxnreg_dec(void)
{
	asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
#endif

/* The two bf16 of a packed pair as floats (exact). */
__device__ __forceinline__ float mlp_lo(uint32_t w)
{
	const uint32_t b = w << 16;
	float f;
	memcpy(&f, &b, 4);
	return f;
}
__device__ __forceinline__ float mlp_hi(uint32_t w)
{
	const uint32_t b = w & 0xffff0000u;
	float f;
	memcpy(&f, &b, 4);
	return f;
}
/* relu2_fwd_kernel's act of a packed bf16 pair of u */
__device__ __forceinline__ uint32_t mlp_act(uint32_t u)
{
	float a = mlp_lo(u), b = mlp_hi(u);
	a = a > 0.0f ? a : 0.0f;
	b = b > 0.0f ? b : 0.0f;
	return att_pack(a * a, b * b);
}
/* relu2_bwd_kernel's dx of the packed bf16 pairs g (the product) and x (u) */
__device__ __forceinline__ uint32_t mlp_dact(uint32_t g, uint32_t x)
{
	const float g0 = mlp_lo(g), g1 = mlp_hi(g), x0 = mlp_lo(x), x1 = mlp_hi(x);
	return att_pack(x0 > 0.0f ? g0 * 2.0f * x0 : 0.0f, x1 > 0.0f ? g1 * 2.0f * x1 : 0.0f);
}

/* Byte offset in a consumer's staging buffer of the pair (row r, columns
 * 8 j + 2 t, +1): panel j / 8 (columns 64 (j / 8)..), row r at 128 r, its
 * 16-byte chunk j % 8 at (j % 8) ^ (r % 8), the TMA's 128-byte swizzle. A
 * warp's 32 lanes (rows g = r % 8 = 0..7, t = 0..3) hit 32 distinct banks. */
__device__ __forceinline__ uint32_t mlp_stg_off(int r, int j, int t)
{
	return (uint32_t)((j >> 3) * MLP_PANEL + r * 128 + ((((j & 7) ^ (r & 7))) << 4) + 4 * t);
}

/* One thread: the staging buffer at sstg out as the four 64 x 64 boxes at
 * rows m0.., columns n0.. of the tensor map's [M,N] tensor, committed as
 * one bulk group (the caller waits for it). */
__device__ __forceinline__ void mlp_store_stg(const CUtensorMap *map, int n0, int m0, uint32_t sstg)
{
	for (int p = 0; p < MLP_BN / 64; p++)
		att_tma_store_2d(map, n0 + 64 * p, m0, sstg + p * MLP_PANEL);
	att_bulk_commit();
}
#endif

enum { EPI_FC = 0, EPI_PROJ = 1 };

/* Registers a thread: what the block holds (65536 / 384 rounded down to
 * 8), and the split by setmaxnreg: the producer warpgroup keeps 40 (proj)
 * or 64 (fc: its epilogue warps), the two consumer warpgroups take the
 * rest. */
#define MLP_REGS ((65536 / MLP_THREADS) & ~7)
#define MLP_PRODUCER_REGS(epi) ((epi) == EPI_PROJ ? 40 : 64)
#define MLP_CONSUMER_REGS(epi) ((epi) == EPI_PROJ ? 232 : 216)

#ifdef ATT_HAS_WGMMA

/* The fc's epilogue warps (warps 1..3 of the producer warpgroup): per tile
 * and consumer c, once c's u is in its staging buffer (sfull[c]; the
 * consumers fenced it for the async proxy), thread 32 stores it (four TMA
 * boxes) and waits until the TMA has read it; then the 96 threads replace
 * u by act = relu(u)^2 in place (relu2_fwd_kernel's expression, a warp per
 * row, 16 bytes a lane), fence, and thread 32 stores act and, once read,
 * frees the buffer (sfree[c]). The consumers never wait for a store. */
__device__ __forceinline__ void mlp_fc_epilogue(unsigned char *smem, uint32_t s0, uint32_t sbar,
                                                int tid, int nt, int ntiles,
                                                const CUtensorMap *tc, const CUtensorMap *td)
{
	const int ew = (tid >> 5) - 1, lane = tid & 31;
	int jt = 0;
	for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x, jt++) {
		const int m0 = tile / nt * MLP_BM, n0 = tile % nt * MLP_BN;
		for (int c = 0; c < 2; c++) {
			unsigned char *stg = smem + MLP_STG + c * MLP_STGBYTES;
			const uint32_t sstg = s0 + MLP_STG + c * MLP_STGBYTES;
			att_mbar_wait(sbar + MLP_B_SFULL + 8 * c, jt & 1);
			if (tid == 32) {
				mlp_store_stg(tc, n0, m0 + 64 * c, sstg);
				att_bulk_wait_read<0>();
			}
			mlp_bar_sync(3, 96); /* u has been read out */
#pragma unroll 2
			for (int r = ew; r < 64; r += 3) {
				uint4 *p = reinterpret_cast<uint4 *>(stg + (lane >> 3) * MLP_PANEL + r * 128 +
				                                     (((lane & 7) ^ (r & 7)) << 4));
				const uint4 v = *p;
				*p = make_uint4(mlp_act(v.x), mlp_act(v.y), mlp_act(v.z), mlp_act(v.w));
			}
			att_fence_async_smem();
			mlp_bar_sync(3, 96);
			if (tid == 32) {
				mlp_store_stg(td, n0, m0 + 64 * c, sstg);
				att_bulk_wait_read<0>();
				att_mbar_arrive(sbar + MLP_B_SFREE + 8 * c);
			}
		}
	}
	if (tid == 32)
		att_bulk_wait<0>();
}
#endif

/* EPI_FC: B is [N,K], outputs u by tc and act by td (stored by the
 * epilogue warps, mlp_fc_epilogue). EPI_PROJ: B is [K,N], output du by tc,
 * input u by td. ta, tb: the tensor maps of A and B, tc, td: 64 x 64
 * boxes of the [M,N] tensors (mlp_tmap). */
template <int EPI>
__global__ void __launch_bounds__(MLP_THREADS, 1)
mlp_gemm_kernel(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
                const __grid_constant__ CUtensorMap tc, const __grid_constant__ CUtensorMap td,
                int M, int N, int K)
{
	constexpr int BT = EPI == EPI_PROJ;
#ifdef ATT_HAS_WGMMA
	ATT_DYN_SMEM(smem_raw);
	unsigned char *smem = smem_raw + ((1024 - (att_smem(smem_raw) & 1023)) & 1023);
	const uint32_t s0 = att_smem(smem), sbar = s0 + MLP_BARS;
	const int tid = threadIdx.x;
	const int nt = N / MLP_BN, ntiles = M / MLP_BM * nt, nk = K / MLP_BK;
	if (tid == 0) {
		for (int st = 0; st < MLP_STAGES; st++) {
			att_mbar_init(sbar + MLP_B_FULL + 8 * st, 1);
			att_mbar_init(sbar + MLP_B_EMPTY + 8 * st, MLP_EMPTY_ARRIVALS);
		}
		for (int c = 0; c < 2; c++) {
			att_mbar_init(sbar + MLP_B_UFULL + 8 * c, 1);
			att_mbar_init(sbar + MLP_B_UFREE + 8 * c, 1);
			att_mbar_init(sbar + MLP_B_SFULL + 8 * c, 128);
			att_mbar_init(sbar + MLP_B_SFREE + 8 * c, 1);
		}
	}
	__syncthreads(); /* the barriers are initialised (the last block-wide barrier) */

	if (tid < 128) { /* producer warpgroup */
		mlp_setmaxnreg_dec<MLP_PRODUCER_REGS(EPI)>();
		if (EPI == EPI_FC && tid >= 32) {
			mlp_fc_epilogue(smem, s0, sbar, tid, nt, ntiles, &tc, &td);
			return;
		}
		if (tid != 0)
			return;
		int i = 0, jt = 0;
		const int ku = nk - 1 < 2 ? nk - 1 : 2; /* proj: u goes out after this step's loads */
		for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x, jt++) {
			const int m0 = tile / nt * MLP_BM, n0 = tile % nt * MLP_BN;
			for (int kb = 0; kb < nk; kb++, i++) {
				const int st = i % MLP_STAGES, j = i / MLP_STAGES;
				const uint32_t full = sbar + MLP_B_FULL + 8 * st,
				               sB = s0 + MLP_BOFF + st * MLP_BBYTES;
				att_mbar_wait(sbar + MLP_B_EMPTY + 8 * st, (j & 1) ^ 1);
				att_mbar_arrive_expect_tx(full, MLP_ABYTES + MLP_BBYTES);
				att_tma_load_2d(s0 + st * MLP_ABYTES, &ta, kb * MLP_BK, m0, full);
				if (!BT)
					att_tma_load_2d(sB, &tb, kb * MLP_BK, n0, full);
				else
					for (int p = 0; p < MLP_BN / 64; p++)
						att_tma_load_2d(sB + p * 64 * 128, &tb, n0 + 64 * p, kb * MLP_BK,
						                full);
				if (BT && kb == ku)
					for (int c = 0; c < 2; c++) {
						/* consumer c's staging is free once its store of
						 * the previous tile has been read out */
						const uint32_t uf = sbar + MLP_B_UFULL + 8 * c;
						att_mbar_wait(sbar + MLP_B_UFREE + 8 * c, (jt & 1) ^ 1);
						att_mbar_arrive_expect_tx(uf, MLP_STGBYTES);
						for (int p = 0; p < MLP_BN / 64; p++)
							att_tma_load_2d(s0 + MLP_STG + c * MLP_STGBYTES + p * MLP_PANEL,
							                &td, n0 + 64 * p, m0 + 64 * c, uf);
					}
			}
		}
		return;
	}

	/* the registers the producer warpgroup gave back, no more (an inc
	 * beyond what the block holds waits forever); the block holds
	 * MLP_REGS a thread (ptxas gives a kernel with setmaxnreg the most its
	 * launch bounds allow) */
	static_assert(128 * MLP_PRODUCER_REGS(EPI) + 256 * MLP_CONSUMER_REGS(EPI) <=
	                  MLP_THREADS * MLP_REGS,
	              "setmaxnreg: the consumers ask for more registers than the block holds");
	mlp_setmaxnreg_inc<MLP_CONSUMER_REGS(EPI)>();
	const int cw = (tid >> 7) - 1, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2,
	          t = lane & 3;
	const bool elected = (tid & 127) == 0; /* issues and waits for the stores */
	unsigned char *stg = smem + MLP_STG + cw * MLP_STGBYTES;
	const uint32_t sstg = s0 + MLP_STG + cw * MLP_STGBYTES;
	const int r0 = 16 * wi + g; /* rows r0 and r0 + 8 of the consumer's 64 */
	float d[32][4];
	int i = 0, jt = 0;
	for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x, jt++) {
		const int m0 = tile / nt * MLP_BM, n0 = tile % nt * MLP_BN;
		for (int kb = 0; kb < nk; kb++, i++) {
			const int st = i % MLP_STAGES;
			att_mbar_wait(sbar + MLP_B_FULL + 8 * st, (i / MLP_STAGES) & 1);
			const uint32_t sA = s0 + st * MLP_ABYTES + cw * 64 * 128;
			const uint32_t sB = s0 + MLP_BOFF + st * MLP_BBYTES;
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < MLP_BK / 16; kk++) {
				const uint64_t da = wg_desc(sA + kk * 32, 16, 1024);
				const uint64_t db = BT ? wg_desc(sB + kk * 16 * 128, 64 * 128, 1024)
				                       : wg_desc(sB + kk * 32, 16, 1024);
				wg_mma_ss256<BT>(d, da, db, kb > 0 || kk > 0);
			}
			wg_commit();
			if (BT && kb == 0 && jt > 0 && elected) {
				/* the previous tile's du store has left the staging:
				 * the producer may load this tile's u into it */
				att_bulk_wait_read<0>();
				att_mbar_arrive(sbar + MLP_B_UFREE + 8 * cw);
			}
			wg_wait<1>(); /* step i - 1's products are done: release its stage */
			wg_keep(d);
			wg_keep(d + 16);
			if (kb > 0) {
				__syncwarp();
				if (lane == 0)
					att_mbar_arrive(sbar + MLP_B_EMPTY + 8 * ((i - 1) % MLP_STAGES));
			}
		}
		wg_wait<0>();
		wg_keep(d);
		wg_keep(d + 16);
		__syncwarp();
		if (lane == 0)
			att_mbar_arrive(sbar + MLP_B_EMPTY + 8 * ((i - 1) % MLP_STAGES));

		/* Epilogue through the staging buffer (swizzled as the TMA's
		 * boxes: mlp_stg_off), then TMA stores of four 64 x 64 boxes */
		if (EPI == EPI_FC) {
			/* u to the staging buffer; the epilogue warps store it,
			 * then act (mlp_fc_epilogue) */
			att_mbar_wait(sbar + MLP_B_SFREE + 8 * cw, (jt & 1) ^ 1);
#pragma unroll
			for (int j = 0; j < 32; j++) {
				*reinterpret_cast<uint32_t *>(stg + mlp_stg_off(r0, j, t)) =
					att_pack(d[j][0], d[j][1]);
				*reinterpret_cast<uint32_t *>(stg + mlp_stg_off(r0 + 8, j, t)) =
					att_pack(d[j][2], d[j][3]);
			}
			att_fence_async_smem();
			att_mbar_arrive(sbar + MLP_B_SFULL + 8 * cw);
		} else {
			att_mbar_wait(sbar + MLP_B_UFULL + 8 * cw, jt & 1); /* u is in */
#pragma unroll
			for (int j = 0; j < 32; j++) {
				uint32_t *p0 = reinterpret_cast<uint32_t *>(stg + mlp_stg_off(r0, j, t));
				uint32_t *p1 = reinterpret_cast<uint32_t *>(stg + mlp_stg_off(r0 + 8, j, t));
				*p0 = mlp_dact(att_pack(d[j][0], d[j][1]), *p0);
				*p1 = mlp_dact(att_pack(d[j][2], d[j][3]), *p1);
			}
			att_fence_async_smem();
			mlp_bar_sync(1 + cw, 128);
			if (elected) {
				mlp_store_stg(&tc, n0, m0 + 64 * cw, sstg);
			}
		}
	}
	if (elected)
		att_bulk_wait<0>(); /* the staging stays valid until the last store read it */
#endif
}

static int mlp_ctas_override;
extern "C" void mlp_gemm_set_ctas(int n) { mlp_ctas_override = n > 0 ? n : 0; }

/* The device's SM count, or 0 where the fused kernels cannot run (no
 * sm_90a code in the build, compute capability not 9.x, or the driver has
 * no cuTensorMapEncodeTiled). Decided once per process. */
static int mlp_device_sms(void)
{
	static int sms = -1;
	if (sms >= 0)
		return sms;
	sms = 0;
	if (!att_tmap_encoder()) {
		cudaGetLastError();
		return sms;
	}
#if defined(ATT_EMULATE)
	sms = 4; /* the host emulation: a few CTAs, several tiles each */
#elif defined(ATT_WGMMA)
	int dev = 0, major = 0, n = 0;
	if (cudaGetDevice(&dev) == cudaSuccess &&
	    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
	    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess &&
	    major == 9)
		sms = n;
	else
		cudaGetLastError();
#endif
	return sms;
}

extern "C" int mlp_gemm_supported(int M, int N, int K)
{
	if (M < MLP_BM || N < MLP_BN || K < MLP_BK || M % MLP_BM || N % MLP_BN || K % MLP_BK)
		return 0;
	if ((long long)(M / MLP_BM) * (N / MLP_BN) >= 1ll << 30) /* tile numbers stay ints */
		return 0;
	return mlp_device_sms() > 0;
}

/* 2D tensor map of the row-major bf16 [rows, cols] tensor at p: box of
 * bc columns x br rows, 128-byte swizzle (bc = 64: one 128-byte row of the
 * box per panel row). 0, or -1 if the driver refused. */
static int mlp_tmap(CUtensorMap *map, const void *p, int rows, int cols, int br, int bc)
{
	const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
	const cuuint64_t stride[1] = {(cuuint64_t)cols * 2};
	const cuuint32_t box[2] = {(cuuint32_t)bc, (cuuint32_t)br}, estr[2] = {1, 1};
	return att_tmap_encoder()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)p, dim, stride, box,
	                   estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
	                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
	                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS
	               ? 0
	               : -1;
}

/* Launch on grid persistent CTAs; the shared-memory attribute every time
 * (it is per device, and a process may drive several). */
template <int EPI>
static void mlp_run(int grid, cudaStream_t s, const CUtensorMap &tA, const CUtensorMap &tB,
                    const CUtensorMap &tC, const CUtensorMap &tD, int M, int N, int K)
{
	CUDA_CHECK(cudaFuncSetAttribute(mlp_gemm_kernel<EPI>,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, MLP_SMEM));
	ATT_LAUNCH(mlp_gemm_kernel<EPI>, grid, MLP_THREADS, MLP_SMEM, s, tA, tB, tC, tD, M, N, K);
}

static int mlp_grid(int tiles)
{
	int grid = mlp_ctas_override ? mlp_ctas_override : mlp_device_sms();
	return grid > tiles ? tiles : grid;
}

static bool mlp_aligned(const void *p) { return p && ((uintptr_t)p & 15) == 0; }

/* out[M,N] (and act) from A [M,K] and B ([N,K] if !bt, else [K,N]). */
static int mlp_launch(int bt, uint16_t *out, uint16_t *act, const uint16_t *uin,
                      const uint16_t *A, const uint16_t *B, int M, int N, int K, cudaStream_t s)
{
	if (!mlp_gemm_supported(M, N, K) || !mlp_aligned(out) || !mlp_aligned(A) ||
	    !mlp_aligned(B) || (bt ? !mlp_aligned(uin) : !mlp_aligned(act)))
		return -1;
	CUtensorMap tA, tB, tC, tD;
	if (mlp_tmap(&tA, A, M, K, MLP_BM, MLP_BK) ||
	    (bt ? mlp_tmap(&tB, B, K, N, MLP_BK, 64) : mlp_tmap(&tB, B, N, K, MLP_BN, MLP_BK)) ||
	    mlp_tmap(&tC, out, M, N, 64, 64) || mlp_tmap(&tD, bt ? uin : act, M, N, 64, 64))
		return -1;
	const int grid = mlp_grid(M / MLP_BM * (N / MLP_BN));
	if (bt)
		mlp_run<EPI_PROJ>(grid, s, tA, tB, tC, tD, M, N, K);
	else
		mlp_run<EPI_FC>(grid, s, tA, tB, tC, tD, M, N, K);
	CUDA_CHECK_LAST();
	return 0;
}

extern "C" int mlp_fc_relu2_forward(uint16_t *u, uint16_t *act, const uint16_t *h,
                                    const uint16_t *W, int M, int N, int K, cudaStream_t s)
{
	if (u == act || u == h || u == W || act == h || act == W)
		return -1;
	return mlp_launch(0, u, act, NULL, h, W, M, N, K, s);
}

extern "C" int mlp_proj_dx_relu2(uint16_t *du, const uint16_t *dy, const uint16_t *W,
                                 const uint16_t *u, int M, int N, int K, cudaStream_t s)
{
	if (du == dy || du == W)
		return -1;
	return mlp_launch(1, du, NULL, u, dy, W, M, N, K, s);
}
