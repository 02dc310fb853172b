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
 * Warpgroup 0 is the producer: after setmaxnreg.dec to 40 registers its
 * thread 0 issues every TMA load and the others exit. Warpgroups 1 and 2
 * (setmaxnreg.inc to 232) are the consumers: warpgroup 1 + c computes rows
 * 64 c..64 c+63 of the tile, all 256 columns, as wgmma m64n256k16 with both
 * operands in shared memory: 128 fp32 accumulators per thread, four
 * products per 64-deep step, one commit group per step.
 *
 * Shared memory: a ring of 4 stages, each an A tile (128 rows x 64 bf16,
 * one 16 KB panel: row r at 128 r, its 16-byte chunk c at c ^ (r & 7), the
 * TMA's 128-byte swizzle, wgmma.cuh's panel layout) and a B tile of 32 KB:
 * K-major, 256 rows of 64 k (one 2D box of 64 x 256); N-major, four 8 KB
 * panels of 64 k rows x 64 n (boxes of 64 x 64; panel p = columns 64 p..).
 * Descriptors (PTX ISA canonical layouts, 128-byte swizzle): A and K-major
 * B: SBO = 1024 (8 rows), k16 step = +32 bytes; N-major B: LBO = 8 KB (the
 * next 64 n), SBO = 1024 (the next 8 k rows), k16 step = +16 rows of 128
 * bytes. 4 x 48 KB, the barriers and the alignment slack: 193 KB.
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
 * same). The producer runs up to 4 steps ahead, across tile boundaries:
 * the next tile's first stages load while the consumers run the epilogue.
 *
 * Epilogue, straight from the accumulators to global memory: a thread holds
 * rows g and g + 8 of its warp's 16 (lane = 4 g + t), columns 8 j + 2 t, +1
 * for j = 0..31; the four lanes of a quad swap pairs (mlp_quad_t, four
 * shuffles per four n-tiles and row) so that each holds 8 consecutive
 * columns, and store them with 16-byte stores (a warp's store covers 8 rows
 * x 64 bytes: whole sectors). Forward: u = bf16(acc), act = bf16(r * r)
 * with r = max(u, 0) computed from the rounded u, relu2_fwd_kernel's
 * expression. Backward: g = bf16(acc), x = u (16-byte loads, MLP_QB steps
 * of them issued together), du = x > 0 ? bf16(g * 2 * x) : 0,
 * relu2_bwd_kernel's. The epilogue is not overlapped with the same CTA's
 * products (both consumer warpgroups work on one tile).
 *
 * Measured on an H200 (session 6; GPT_BENCH=1 CK_RUN_CASE=bench
 * build/tests/gpu_mlp, M 65536, N 3072, K 768), against cuBLASLt + relu2.cu
 * (0.39 + 0.19 ms forward, 0.41-0.44 + 0.28 ms backward):
 *   - without the epilogue (a timing experiment) the products alone run at
 *     0.364 ms forward (850 TFLOP/s) and 0.403 ms proj dx (767 TFLOP/s),
 *     ahead of cuBLASLt's 0.389 and 0.438 in the same run;
 *   - 4-byte pair stores straight from the fragments: 1.046 ms forward,
 *     0.743 ms backward: the epilogue was the whole cost;
 *   - the quad transpose and 16-byte stores: 0.563 ms forward (0.966 of
 *     the unfused 0.583), 0.888 ms backward with its u loads one step at a
 *     time (1.29 of 0.688); in training (GPT_MLP_GEMM=1 against 0, same
 *     call) 821 / 928 / 1044 against 804 / 913 / 1026 ms per step at
 *     W = 1 / 7 / 14. The batched u loads (MLP_QB) came after: emulator
 *     only, not timed. Hence opt-in (engine_cuda.c). Next: overlap the
 *     epilogue with the next tile's products (epilogue through shared
 *     memory and TMA stores, or the two consumer warpgroups on alternate
 *     tiles).
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
#define MLP_STAGES 4
#define MLP_THREADS 384                        /* producer warpgroup + 2 consumers */
#define MLP_ABYTES (MLP_BM * MLP_BK * 2)       /* 16 KB */
#define MLP_BBYTES (MLP_BN * MLP_BK * 2)       /* 32 KB */
#define MLP_BOFF (MLP_STAGES * MLP_ABYTES)     /* B stages after the A stages */
#define MLP_BARS (MLP_STAGES * (MLP_ABYTES + MLP_BBYTES)) /* full[s] at + 8 s, empty[s] + 32 + 8 s */
#define MLP_SMEM (MLP_BARS + 16 * MLP_STAGES + 1008) /* + the 1024-byte alignment */
#define MLP_EMPTY_ARRIVALS 8                   /* one per consumer warp */

#ifdef ATT_HAS_WGMMA
#ifdef ATT_EMULATE
template <int R> inline void mlp_setmaxnreg_inc(void) {}
template <int R> inline void mlp_setmaxnreg_dec(void) {}
#else
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

/* q steps (four n-tiles each) per batch of the proj epilogue's u loads:
 * 4 spills at the 168-register bound, 2 does not */
#define MLP_QB 2

/* Transpose within a quad (lanes 4 g .. 4 g + 3 of a warp, t = lane & 3):
 * lane t holds a[j] = columns 8 (J + j) + 2 t, +1 of its row for the quad's
 * four n-tiles j = 0..3; it returns columns 8 (J + t) .. + 7, i.e. the
 * pairs of lanes 0..3 for n-tile J + t, so one 16-byte store per lane
 * writes them. Round r: lane k sends its a[(k - r) & 3] to lane (k - r) & 3,
 * which files it as pair k. All 32 lanes call it. */
__device__ __forceinline__ uint4 mlp_quad_t(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            int t, int lane)
{
	uint32_t w[4];
#pragma unroll
	for (int r = 0; r < 4; r++) {
		const int si = (t - r) & 3; /* what this lane sends */
		const uint32_t x = si == 0 ? a0 : si == 1 ? a1 : si == 2 ? a2 : a3;
		const uint32_t y = __shfl_sync(0xffffffffu, x, (lane & ~3) | ((t + r) & 3));
		/* y is lane (t + r) & 3's a[t]: pair (t + r) & 3 of n-tile t */
		const int k = (t + r) & 3;
#pragma unroll
		for (int m = 0; m < 4; m++)
			if (m == k)
				w[m] = y;
	}
	return make_uint4(w[0], w[1], w[2], w[3]);
}
#endif

/* BT = 0: B is [N,K] (fc: out = u, act), 1: B is [K,N] (proj: out = du,
 * uin = u). ta, tb: the tensor maps of A and B (mlp_tmap). */
template <int BT>
__global__ void __launch_bounds__(MLP_THREADS, 1)
mlp_gemm_kernel(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
                bf16 *out, bf16 *__restrict__ act, const bf16 *uin, int M, int N, int K)
{
#ifdef ATT_HAS_WGMMA
	ATT_DYN_SMEM(smem_raw);
	unsigned char *smem = smem_raw + ((1024 - (att_smem(smem_raw) & 1023)) & 1023);
	const uint32_t s0 = att_smem(smem), sbar = s0 + MLP_BARS;
	const int tid = threadIdx.x;
	const int nt = N / MLP_BN, ntiles = M / MLP_BM * nt, nk = K / MLP_BK;
	if (tid == 0)
		for (int st = 0; st < MLP_STAGES; st++) {
			att_mbar_init(sbar + 8 * st, 1);
			att_mbar_init(sbar + 32 + 8 * st, MLP_EMPTY_ARRIVALS);
		}
	__syncthreads(); /* the barriers are initialised (the last block-wide barrier) */

	if (tid < 128) { /* producer warpgroup */
		mlp_setmaxnreg_dec<40>();
		if (tid != 0)
			return;
		int i = 0;
		for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
			const int m0 = tile / nt * MLP_BM, n0 = tile % nt * MLP_BN;
			for (int kb = 0; kb < nk; kb++, i++) {
				const int st = i % MLP_STAGES, j = i / MLP_STAGES;
				const uint32_t full = sbar + 8 * st, sB = s0 + MLP_BOFF + st * MLP_BBYTES;
				att_mbar_wait(sbar + 32 + 8 * st, (j & 1) ^ 1);
				att_mbar_arrive_expect_tx(full, MLP_ABYTES + MLP_BBYTES);
				att_tma_load_2d(s0 + st * MLP_ABYTES, &ta, kb * MLP_BK, m0, full);
				if (!BT)
					att_tma_load_2d(sB, &tb, kb * MLP_BK, n0, full);
				else
					for (int p = 0; p < MLP_BN / 64; p++)
						att_tma_load_2d(sB + p * 64 * 128, &tb, n0 + 64 * p, kb * MLP_BK,
						                full);
			}
		}
		return;
	}

	mlp_setmaxnreg_inc<232>();
	const int cw = (tid >> 7) - 1, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2,
	          t = lane & 3;
	float d[32][4];
	int i = 0;
	for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
		const int m0 = tile / nt * MLP_BM, n0 = tile % nt * MLP_BN;
		for (int kb = 0; kb < nk; kb++, i++) {
			const int st = i % MLP_STAGES;
			att_mbar_wait(sbar + 8 * st, (i / MLP_STAGES) & 1);
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
			wg_wait<1>(); /* step i - 1's products are done: release its stage */
			wg_keep(d);
			wg_keep(d + 16);
			if (kb > 0) {
				__syncwarp();
				if (lane == 0)
					att_mbar_arrive(sbar + 32 + 8 * ((i - 1) % MLP_STAGES));
			}
		}
		wg_wait<0>();
		wg_keep(d);
		wg_keep(d + 16);
		__syncwarp();
		if (lane == 0)
			att_mbar_arrive(sbar + 32 + 8 * ((i - 1) % MLP_STAGES));

		/* lane t of a quad ends up with 8 consecutive columns (16 bytes)
		 * of n-tile 4 q + t: mlp_quad_t below */
		const size_t row = (size_t)m0 + 64 * cw + 16 * wi + g;
		const size_t o0 = row * N + n0 + 8 * t, o1 = o0 + 8 * (size_t)N;
#pragma unroll
		for (int q4 = 0; q4 < 8; q4 += MLP_QB) {
			/* proj: the batch's u vectors first (2 MLP_QB loads in flight) */
			uint4 x0[MLP_QB], x1[MLP_QB];
			if (BT) {
#pragma unroll
				for (int q = q4; q < q4 + MLP_QB; q++) {
					x0[q - q4] = *reinterpret_cast<const uint4 *>(uin + o0 + 32 * q);
					x1[q - q4] = *reinterpret_cast<const uint4 *>(uin + o1 + 32 * q);
				}
			}
#pragma unroll
			for (int q = q4; q < q4 + MLP_QB; q++) {
				uint4 v0 = mlp_quad_t(att_pack(d[4 * q][0], d[4 * q][1]),
				                      att_pack(d[4 * q + 1][0], d[4 * q + 1][1]),
				                      att_pack(d[4 * q + 2][0], d[4 * q + 2][1]),
				                      att_pack(d[4 * q + 3][0], d[4 * q + 3][1]), t, lane);
				uint4 v1 = mlp_quad_t(att_pack(d[4 * q][2], d[4 * q][3]),
				                      att_pack(d[4 * q + 1][2], d[4 * q + 1][3]),
				                      att_pack(d[4 * q + 2][2], d[4 * q + 2][3]),
				                      att_pack(d[4 * q + 3][2], d[4 * q + 3][3]), t, lane);
				uint4 *p0 = reinterpret_cast<uint4 *>(out + o0 + 32 * q);
				uint4 *p1 = reinterpret_cast<uint4 *>(out + o1 + 32 * q);
				if (!BT) {
					*p0 = v0;
					*p1 = v1;
					*reinterpret_cast<uint4 *>(act + o0 + 32 * q) = make_uint4(
						mlp_act(v0.x), mlp_act(v0.y), mlp_act(v0.z), mlp_act(v0.w));
					*reinterpret_cast<uint4 *>(act + o1 + 32 * q) = make_uint4(
						mlp_act(v1.x), mlp_act(v1.y), mlp_act(v1.z), mlp_act(v1.w));
				} else {
					const uint4 a0 = x0[q - q4], a1 = x1[q - q4];
					*p0 = make_uint4(mlp_dact(v0.x, a0.x), mlp_dact(v0.y, a0.y),
					                 mlp_dact(v0.z, a0.z), mlp_dact(v0.w, a0.w));
					*p1 = make_uint4(mlp_dact(v1.x, a1.x), mlp_dact(v1.y, a1.y),
					                 mlp_dact(v1.z, a1.z), mlp_dact(v1.w, a1.w));
				}
			}
		}
	}
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

static bool mlp_aligned(const void *p) { return p && ((uintptr_t)p & 15) == 0; }

/* out[M,N] (and act) from A [M,K] and B ([N,K] if !bt, else [K,N]). */
static int mlp_launch(int bt, uint16_t *out, uint16_t *act, const uint16_t *uin,
                      const uint16_t *A, const uint16_t *B, int M, int N, int K, cudaStream_t s)
{
	if (!mlp_gemm_supported(M, N, K) || !mlp_aligned(out) || !mlp_aligned(A) ||
	    !mlp_aligned(B) || (bt ? !mlp_aligned(uin) : !mlp_aligned(act)))
		return -1;
	CUtensorMap tA, tB;
	if (mlp_tmap(&tA, A, M, K, MLP_BM, MLP_BK) ||
	    (bt ? mlp_tmap(&tB, B, K, N, MLP_BK, 64) : mlp_tmap(&tB, B, N, K, MLP_BN, MLP_BK)))
		return -1;
	const int tiles = M / MLP_BM * (N / MLP_BN);
	int grid = mlp_ctas_override ? mlp_ctas_override : mlp_device_sms();
	if (grid > tiles)
		grid = tiles;
	/* every launch: the attribute is per device, and a process may drive
	 * several */
	if (bt)
		CUDA_CHECK(cudaFuncSetAttribute(mlp_gemm_kernel<1>,
		                                cudaFuncAttributeMaxDynamicSharedMemorySize, MLP_SMEM));
	else
		CUDA_CHECK(cudaFuncSetAttribute(mlp_gemm_kernel<0>,
		                                cudaFuncAttributeMaxDynamicSharedMemorySize, MLP_SMEM));
	if (bt) {
		ATT_LAUNCH(mlp_gemm_kernel<1>, grid, MLP_THREADS, MLP_SMEM, s, tA, tB, (bf16 *)out,
		           (bf16 *)NULL, (const bf16 *)uin, M, N, K);
	} else {
		ATT_LAUNCH(mlp_gemm_kernel<0>, grid, MLP_THREADS, MLP_SMEM, s, tA, tB, (bf16 *)out,
		           (bf16 *)act, (const bf16 *)NULL, M, N, K);
	}
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
