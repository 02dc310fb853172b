/*
 * attention_bwd.cu - attention backward on the tensor cores
 * (FlashAttention-2 style, deterministic), the split form: dk/dv, then dq in
 * a second pass. attn_backward (attention_bwd_fused.cu) does the same work
 * in one pass and is the default; this one stays as a second fast path for
 * tests and benchmarks. See attention.cuh.
 *
 * defines: attn_backward_split, attn_backward_begin (every backward
 *          launcher's argument check and delta pass), attn_delta_kernel
 *
 * Three kernels on one stream:
 *   delta  delta[h, t] = sum_d dy[t,h,d] y[t,h,d] in fp32, one warp per row;
 *   dk/dv  one CTA of 8 warps per (key block kb, head), each warp owning 16
 *          keys; over the query blocks qb = kb..qb_last[kb] (Q, dY, lse,
 *          delta of qb+1 loading with cp.async meanwhile), in four slices of
 *          32 queries:
 *            S^T = K Q^T, P^T = 2^(S^T scale log2 e - lse log2 e) (0 where
 *            masked in partial blocks), dP^T = V dY^T,
 *            dS^T = P^T (dP^T - delta), dV += bf16(P^T) dY, dK += bf16(dS^T) Q;
 *          dk = scale dK. Shared memory: K, V, two stages of Q, dY, lse,
 *          delta (6 tiles + 2 KB = 206 KB).
 *   dq     one CTA per (query block qb, head) over the forward's runs
 *          kb_first[qb]..qb (two stages of K, V), in halves of 64 keys:
 *            S = Q K^T, P = 2^(S scale log2 e - lse log2 e), dP = dY V^T,
 *            dS = P (dP - delta), dQ += bf16(dS) K;  dq = scale dQ.
 * K and V fragments (dk/dv) and Q and dY fragments (dq) are re-read from
 * shared memory with ldmatrix rather than held in registers, which keeps
 * the accumulators (128 fp32 per thread in dk/dv) out of local memory.
 * No atomics: dq has its own pass, so the summation order is fixed and the
 * results are bitwise repeatable.
 */
#include "attention_impl.cuh"
#include "cuda_check.h"

__global__ void attn_delta_kernel(float *__restrict__ delta, const bf16 *__restrict__ dy,
                                  const bf16 *__restrict__ y, int T, int H)
{
	const int w = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
	if (w >= T * H)
		return;
	const int t = w / H, h = w % H;
	const size_t off = (size_t)w * ATTN_HEAD_DIM + lane * 4;
	const uint2 a = *reinterpret_cast<const uint2 *>(dy + off);
	const uint2 b = *reinterpret_cast<const uint2 *>(y + off);
	const float2 a0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&a.x));
	const float2 a1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&a.y));
	const float2 b0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&b.x));
	const float2 b1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&b.y));
	float sum = a0.x * b0.x + a0.y * b0.y + a1.x * b1.x + a1.y * b1.y;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		sum += __shfl_xor_sync(0xffffffffu, sum, o);
	if (lane == 0)
		delta[(size_t)h * T + t] = sum;
}

__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_dkdv_kernel(bf16 *__restrict__ dk, bf16 *__restrict__ dv, const bf16 *__restrict__ q,
                 const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                 const bf16 *__restrict__ dy, const float *__restrict__ lse,
                 const float *__restrict__ delta, const int32_t *__restrict__ docs,
                 const int32_t *__restrict__ dlo, const int32_t *__restrict__ dhi,
                 const int32_t *__restrict__ qb_last, int T, int H, int nb)
{
	ATT_DYN_SMEM(smem);
	const int kb = blockIdx.x, h = blockIdx.y;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: K at 0, V at 1, Q stage s at 2 + s, dY stage s at 4 + s; then
	 * lse stage s at 6 tiles + 512 s bytes, delta stage s at + 1024 + 512 s */
	const uint32_t sK = att_smem(smem), sV = sK + ATT_TILEB;
	const uint32_t sVec = sK + 6 * ATT_TILEB;
	const float *fVec = reinterpret_cast<const float *>(smem + 6 * ATT_TILEB);
	const float *lseh = lse + (size_t)h * T, *delh = delta + (size_t)h * T;
	const int n = qb_last[kb] - kb + 1;

	att_load_tile(sK, k + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile(sV, v + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile(sK + 2 * ATT_TILEB, q + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile(sK + 4 * ATT_TILEB, dy + (size_t)kb * blk + hoff, rs, tid);
	att_load_lse_delta(sVec, lseh + kb * ATTN_BLOCK, delh + kb * ATTN_BLOCK, tid);
	att_cp_commit();

	const int krow0 = kb * ATTN_BLOCK + warp * 16 + g, krow1 = krow0 + 8;
	const int kd0 = docs[krow0], kd1 = docs[krow1];
	const int klo = dlo[kb], khi = dhi[kb];
	const float sl2 = ATT_SCALE * ATT_LOG2E;

	float dka[16][4], dva[16][4];
#pragma unroll
	for (int d = 0; d < 16; d++) {
		dka[d][0] = dka[d][1] = dka[d][2] = dka[d][3] = 0.f;
		dva[d][0] = dva[d][1] = dva[d][2] = dva[d][3] = 0.f;
	}

	for (int i = 0; i < n; i++) {
		const int qb = kb + i, st = i & 1;
		if (i + 1 < n) {
			const int nq = qb + 1, ns = st ^ 1;
			att_load_tile(sK + (2 + ns) * ATT_TILEB, q + (size_t)nq * blk + hoff, rs, tid);
			att_load_tile(sK + (4 + ns) * ATT_TILEB, dy + (size_t)nq * blk + hoff, rs, tid);
			att_load_lse_delta(sVec + ns * 512, lseh + nq * ATTN_BLOCK, delh + nq * ATTN_BLOCK,
			                   tid);
		}
		att_cp_commit();
		att_cp_wait<1>();
		__syncthreads();
		const uint32_t sQ = sK + (2 + st) * ATT_TILEB, sdY = sK + (4 + st) * ATT_TILEB;
		const float *L = fVec + st * 128, *Dl = fVec + 256 + st * 128;
		const bool full = kb < qb && dlo[qb] == khi && klo == dhi[qb];
#pragma unroll
		for (int sub = 0; sub < 4; sub++) {
			float s[4][4], dp[4][4];
#pragma unroll
			for (int j = 0; j < 4; j++) {
				s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
				dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
			}
#pragma unroll
			for (int kk = 0; kk < 8; kk++) {
				uint32_t a[4], b[4];
				att_ldsm(a, sK + frag_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 2; np++) {
					att_ldsm(b, sQ + frag_bt(lane, sub * 32 + np * 16, kk * 16));
					att_mma(s[2 * np], a, b[0], b[1]);
					att_mma(s[2 * np + 1], a, b[2], b[3]);
				}
				att_ldsm(a, sV + frag_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 2; np++) {
					att_ldsm(b, sdY + frag_bt(lane, sub * 32 + np * 16, kk * 16));
					att_mma(dp[2 * np], a, b[0], b[1]);
					att_mma(dp[2 * np + 1], a, b[2], b[3]);
				}
			}
			/* element (key row, query column c, c + 1) */
#pragma unroll
			for (int j = 0; j < 4; j++) {
				const int c = sub * 32 + j * 8 + 2 * t;
				const float L0 = L[c] * ATT_LOG2E, L1 = L[c + 1] * ATT_LOG2E;
				const float D0 = Dl[c], D1 = Dl[c + 1];
				float p00 = exp2f(fmaf(s[j][0], sl2, -L0)), p01 = exp2f(fmaf(s[j][1], sl2, -L1));
				float p10 = exp2f(fmaf(s[j][2], sl2, -L0)), p11 = exp2f(fmaf(s[j][3], sl2, -L1));
				if (!full) {
					const int qp = qb * ATTN_BLOCK + c;
					const int qd0 = docs[qp], qd1 = docs[qp + 1];
					if (!(krow0 <= qp && kd0 == qd0))
						p00 = 0.f;
					if (!(krow0 <= qp + 1 && kd0 == qd1))
						p01 = 0.f;
					if (!(krow1 <= qp && kd1 == qd0))
						p10 = 0.f;
					if (!(krow1 <= qp + 1 && kd1 == qd1))
						p11 = 0.f;
				}
				s[j][0] = p00, s[j][1] = p01, s[j][2] = p10, s[j][3] = p11;
				dp[j][0] = p00 * (dp[j][0] - D0);
				dp[j][1] = p01 * (dp[j][1] - D1);
				dp[j][2] = p10 * (dp[j][2] - D0);
				dp[j][3] = p11 * (dp[j][3] - D1);
			}
#pragma unroll
			for (int kq = 0; kq < 2; kq++) {
				const uint32_t pa[4] = {att_pack(s[2 * kq][0], s[2 * kq][1]),
				                        att_pack(s[2 * kq][2], s[2 * kq][3]),
				                        att_pack(s[2 * kq + 1][0], s[2 * kq + 1][1]),
				                        att_pack(s[2 * kq + 1][2], s[2 * kq + 1][3])};
				const uint32_t da[4] = {att_pack(dp[2 * kq][0], dp[2 * kq][1]),
				                        att_pack(dp[2 * kq][2], dp[2 * kq][3]),
				                        att_pack(dp[2 * kq + 1][0], dp[2 * kq + 1][1]),
				                        att_pack(dp[2 * kq + 1][2], dp[2 * kq + 1][3])};
#pragma unroll
				for (int dd = 0; dd < 8; dd++) {
					uint32_t b[4];
					att_ldsm_t(b, sdY + frag_v(lane, sub * 32 + kq * 16, dd * 16));
					att_mma(dva[2 * dd], pa, b[0], b[1]);
					att_mma(dva[2 * dd + 1], pa, b[2], b[3]);
					att_ldsm_t(b, sQ + frag_v(lane, sub * 32 + kq * 16, dd * 16));
					att_mma(dka[2 * dd], da, b[0], b[1]);
					att_mma(dka[2 * dd + 1], da, b[2], b[3]);
				}
			}
		}
		__syncthreads();
	}
	att_cp_wait<0>();

	/* stage through the warp's own 16 rows of K (dk) and V (dv) */
	const size_t orow = (size_t)(kb * ATTN_BLOCK + warp * 16) * rs + hoff;
	att_store_rows(dk + orow, rs, smem + warp * 16 * ATT_ROWB, dka, ATT_SCALE, ATT_SCALE, lane);
	att_store_rows(dv + orow, rs, smem + ATT_TILEB + warp * 16 * ATT_ROWB, dva, 1.f, 1.f, lane);
}

__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_dq_kernel(bf16 *__restrict__ dq, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
               const bf16 *__restrict__ v, const bf16 *__restrict__ dy,
               const float *__restrict__ lse, const float *__restrict__ delta,
               const int32_t *__restrict__ docs, const int32_t *__restrict__ dlo,
               const int32_t *__restrict__ dhi, const int32_t *__restrict__ kb_first, int T,
               int H, int nb)
{
	ATT_DYN_SMEM(smem);
	const int qb = nb - 1 - (int)blockIdx.x, h = blockIdx.y;
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: Q at 0, dY at 1, K stage s at 2 + s, V stage s at 4 + s */
	const uint32_t sQ = att_smem(smem), sdY = sQ + ATT_TILEB;
	const int kb0 = kb_first[qb], n = qb - kb0 + 1;

	att_load_tile(sQ, q + (size_t)qb * blk + hoff, rs, tid);
	att_load_tile(sdY, dy + (size_t)qb * blk + hoff, rs, tid);
	att_load_tile(sQ + 2 * ATT_TILEB, k + (size_t)kb0 * blk + hoff, rs, tid);
	att_load_tile(sQ + 4 * ATT_TILEB, v + (size_t)kb0 * blk + hoff, rs, tid);
	att_cp_commit();

	const int row0 = qb * ATTN_BLOCK + warp * 16 + g, row1 = row0 + 8;
	const int dq0 = docs[row0], dq1 = docs[row1];
	const int qlo = dlo[qb], qhi = dhi[qb];
	const float L0 = lse[(size_t)h * T + row0] * ATT_LOG2E, L1 = lse[(size_t)h * T + row1] * ATT_LOG2E;
	const float D0 = delta[(size_t)h * T + row0], D1 = delta[(size_t)h * T + row1];
	const float sl2 = ATT_SCALE * ATT_LOG2E;

	float acc[16][4];
#pragma unroll
	for (int d = 0; d < 16; d++)
		acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

	for (int i = 0; i < n; i++) {
		const int kb = kb0 + i, st = i & 1;
		if (i + 1 < n) {
			att_load_tile(sQ + (3 - st) * ATT_TILEB, k + (size_t)(kb + 1) * blk + hoff, rs, tid);
			att_load_tile(sQ + (5 - st) * ATT_TILEB, v + (size_t)(kb + 1) * blk + hoff, rs, tid);
		}
		att_cp_commit();
		att_cp_wait<1>();
		__syncthreads();
		const uint32_t sK = sQ + (2 + st) * ATT_TILEB, sV = sQ + (4 + st) * ATT_TILEB;
		const bool full = kb < qb && qlo == dhi[kb] && dlo[kb] == qhi;
#pragma unroll
		for (int half = 0; half < 2; half++) {
			float s[8][4], dp[8][4];
#pragma unroll
			for (int j = 0; j < 8; j++) {
				s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
				dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
			}
#pragma unroll
			for (int kk = 0; kk < 8; kk++) {
				uint32_t a[4], b[4];
				att_ldsm(a, sQ + frag_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 4; np++) {
					att_ldsm(b, sK + frag_bt(lane, half * 64 + np * 16, kk * 16));
					att_mma(s[2 * np], a, b[0], b[1]);
					att_mma(s[2 * np + 1], a, b[2], b[3]);
				}
				att_ldsm(a, sdY + frag_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 4; np++) {
					att_ldsm(b, sV + frag_bt(lane, half * 64 + np * 16, kk * 16));
					att_mma(dp[2 * np], a, b[0], b[1]);
					att_mma(dp[2 * np + 1], a, b[2], b[3]);
				}
			}
#pragma unroll
			for (int j = 0; j < 8; j++) {
				const int key = kb * ATTN_BLOCK + half * 64 + j * 8 + 2 * t;
				float p00 = exp2f(fmaf(s[j][0], sl2, -L0)), p01 = exp2f(fmaf(s[j][1], sl2, -L0));
				float p10 = exp2f(fmaf(s[j][2], sl2, -L1)), p11 = exp2f(fmaf(s[j][3], sl2, -L1));
				if (!full) {
					const int kd0 = docs[key], kd1 = docs[key + 1];
					if (!(key <= row0 && kd0 == dq0))
						p00 = 0.f;
					if (!(key + 1 <= row0 && kd1 == dq0))
						p01 = 0.f;
					if (!(key <= row1 && kd0 == dq1))
						p10 = 0.f;
					if (!(key + 1 <= row1 && kd1 == dq1))
						p11 = 0.f;
				}
				dp[j][0] = p00 * (dp[j][0] - D0);
				dp[j][1] = p01 * (dp[j][1] - D0);
				dp[j][2] = p10 * (dp[j][2] - D1);
				dp[j][3] = p11 * (dp[j][3] - D1);
			}
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				const uint32_t da[4] = {att_pack(dp[2 * kk][0], dp[2 * kk][1]),
				                        att_pack(dp[2 * kk][2], dp[2 * kk][3]),
				                        att_pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
				                        att_pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
				for (int dd = 0; dd < 8; dd++) {
					uint32_t b[4];
					att_ldsm_t(b, sK + frag_v(lane, half * 64 + kk * 16, dd * 16));
					att_mma(acc[2 * dd], da, b[0], b[1]);
					att_mma(acc[2 * dd + 1], da, b[2], b[3]);
				}
			}
		}
		__syncthreads();
	}
	att_cp_wait<0>();

	/* stage through the warp's own 16 rows of the Q tile */
	att_store_rows(dq + (size_t)(qb * ATTN_BLOCK + warp * 16) * rs + hoff, rs,
	               smem + warp * 16 * ATT_ROWB, acc, ATT_SCALE, ATT_SCALE, lane);
}

int attn_backward_begin(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k,
                        const void *v, const void *y, const float *lse, const struct attn_mask *m,
                        int heads, int head_dim, cudaStream_t s, struct gpt_err *e)
{
	const void *ptrs[] = {dq, dk, dv, dy, q, k, v, y, lse};
	if (attn_check_args(m, heads, head_dim, ptrs, 9, "backward", e))
		return -1;
	const int rows = m->T * heads;
	ATT_LAUNCH(attn_delta_kernel, (rows + 7) / 8, 256, 0, s, m->delta, (const bf16 *)dy,
	           (const bf16 *)y, m->T, heads);
	CUDA_CHECK_LAST();
	return 0;
}

extern "C" int attn_backward_split(void *dq, void *dk, void *dv, const void *dy, const void *q,
                                   const void *k, const void *v, const void *y, const float *lse,
                                   const struct attn_mask *m, int heads, int head_dim,
                                   cudaStream_t s, struct gpt_err *e)
{
	if (attn_backward_begin(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e))
		return -1;
	const int T = m->T, nb = T / ATTN_BLOCK;
	const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)k, *V = (const bf16 *)v;
	const bf16 *dY = (const bf16 *)dy;
	CUDA_CHECK(cudaFuncSetAttribute(attn_dkdv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
	                                ATT_DKV_SMEM));
	ATT_LAUNCH(attn_dkdv_kernel, dim3(nb, heads), ATT_THREADS, ATT_DKV_SMEM, s, (bf16 *)dk,
	           (bf16 *)dv, Q, K, V, dY, lse, m->delta, m->docs, m->docs_low, m->docs_high,
	           m->qb_last, T, heads, nb);
	CUDA_CHECK_LAST();
	CUDA_CHECK(cudaFuncSetAttribute(attn_dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
	                                ATT_DQ_SMEM));
	ATT_LAUNCH(attn_dq_kernel, dim3(nb, heads), ATT_THREADS, ATT_DQ_SMEM, s, (bf16 *)dq, Q, K,
	           V, dY, lse, m->delta, m->docs, m->docs_low, m->docs_high, m->kb_first, T, heads,
	           nb);
	CUDA_CHECK_LAST();
	return 0;
}
