/*
 * attention_bwd_fused.cu - attention backward in one pass over the key
 * blocks: dk, dv and dq together, deterministic. See attention.cuh.
 *
 * defines: attn_backward
 *
 * The split backward (attention_bwd.cu) computes dk, dv per key block and
 * then dq in a second pass that recomputes S, P and dP: 7 tile products per
 * visited 128 x 128 block. Here one CTA of 8 warps per (key block kb, head)
 * walks the query blocks qb = kb..qb_last[kb] as the split dk/dv kernel
 * does (S^T = K Q^T, dP^T = V dY^T, dS^T = P^T (dP^T - delta), dV +=
 * P^T dY, dK += dS^T Q) and adds dQ += dS K from the same dS: 5 products.
 *
 * dQ of a query block is a sum over the key blocks kb_first[qb]..qb, made
 * by different CTAs. It is accumulated in fp32 in a workspace (m->dqacc) in
 * a fixed order, kb = qb first, then qb-1, ..., kb_first[qb] last, so the
 * result has the same bits on every run:
 *   - per query block and head a flag (m->sem) counts the contributions
 *     made; the CTA of kb waits (acquire) until it reads qb - kb;
 *   - the first contributor (kb = qb) stores its partial tile, the middle
 *     ones add theirs with bulk asynchronous reductions (cp.reduce.async.
 *     bulk .add.f32, one 2 KB piece per warp and 32-query slice, from a
 *     per-warp shared stage in the MMA fragment order), each releasing the
 *     flag once its reductions are complete (deferred to the next query
 *     block's first slice, so the wait overlaps compute);
 *   - the last contributor (kb = kb_first[qb]) reads the sum, adds its own
 *     part in registers, scales and writes dq in bf16, and resets the flag
 *     to 0 for the next launch (no memset between launches).
 * The CTA of kb only ever waits for the CTA of kb + 1 of the same head.
 * CTAs take their (head, kb) from a ticket counter (atomicAdd) in the order
 * kb = nb-1 .. 0, the heads of one kb side by side, so the CTA waited for
 * has always started (no deadlock whatever order the hardware schedules
 * blocks in); the CTA that takes the last ticket resets the counter. The
 * waits chain (kb waits for kb+1, which waits for kb+2, ...), each link
 * adding the flag's latency; with the heads side by side the chains run in
 * parallel. Measured on an H200 (T = 65536, H = 6, W = 14, forward +
 * backward, GPT_BENCH=1 build/tests/gpu_attention): fused 4.41 ms, split
 * 4.63; with the flag waits removed (wrong sums, timing only) 4.36: the
 * waits cost 1%, the kernel is bound by its shared-memory traffic
 * (ldmatrix feeding mma.sync); heads one after another or side by side
 * made no difference.
 *
 * dS is exchanged between warps through shared memory: each warp writes
 * its 16 keys x 32 queries of dS^T (bf16, the value the dK product uses),
 * and after a barrier warp w computes dQ for the slice's 32 queries and
 * head dimensions 16w..16w+15 (A = dS from the stage by ldmatrix.trans, B =
 * K). Tiles are stored swizzled (att_swz) instead of padded, which leaves
 * room in 227 KB for the dS stages (two, alternating by slice) and the dQ
 * stages: K, V, two stages of Q and dY (6 x 32 KB), lse and delta (2 KB),
 * dS^T 2 x 8 KB, dQ 8 x 2 KB.
 */
#include "attention_impl.cuh"
#include "cuda_check.h"

/* Byte offset of (key row r, query column c) in a dS^T stage of 128 rows x
 * 32 bf16 (64 bytes): chunk c/8 stored at (c/8) ^ ((r/2) & 3), so the 8
 * consecutive rows of one ldmatrix matrix hit 8 different 4-bank groups. */
__device__ __forceinline__ uint32_t ds_off(int r, int c)
{
	return (uint32_t)(r * 64 + (((c >> 3) ^ ((r >> 1) & 3)) << 4) + (c & 7) * 2);
}

/* A fragment (rows = queries m0.., columns = keys k0..) of dS from the dS^T
 * stage, for ldmatrix .trans. */
__device__ __forceinline__ uint32_t ds_a(int lane, int k0, int m0)
{
	return ds_off(k0 + (lane & 7) + 8 * (lane >> 4), m0 + 8 * ((lane >> 3) & 1));
}

/* Write a warp's 16 x 128 accumulator (rows r0.., scaled by f) as bf16 to
 * global rows out + r * rs, staged through rows r0..r0+15 of the swizzled
 * tile at generic pointer tile. */
__device__ __forceinline__ void att_store_rows_sw(bf16 *out, size_t rs, unsigned char *tile,
                                                  int r0, const float acc[16][4], float f,
                                                  int lane)
{
	const int g = lane >> 2, t = lane & 3;
	__syncwarp();
#pragma unroll
	for (int d = 0; d < 16; d++) {
		*reinterpret_cast<uint32_t *>(tile + att_swz(r0 + g, 8 * d + 2 * t)) =
			att_pack(acc[d][0] * f, acc[d][1] * f);
		*reinterpret_cast<uint32_t *>(tile + att_swz(r0 + g + 8, 8 * d + 2 * t)) =
			att_pack(acc[d][2] * f, acc[d][3] * f);
	}
	__syncwarp();
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int c = lane + 32 * i, r = c >> 4, c16 = c & 15;
		uint4 val = *reinterpret_cast<const uint4 *>(tile + att_swz(r0 + r, c16 * 8));
		*reinterpret_cast<uint4 *>(out + (size_t)r * rs + c16 * 8) = val;
	}
}

__global__ void __launch_bounds__(ATT_THREADS, 1)
attn_bwd_fused_kernel(bf16 *__restrict__ dq, bf16 *__restrict__ dk, bf16 *__restrict__ dv,
                      const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                      const bf16 *__restrict__ v, const bf16 *__restrict__ dy,
                      const float *__restrict__ lse, const float *__restrict__ delta,
                      const int32_t *__restrict__ docs, const int32_t *__restrict__ dlo,
                      const int32_t *__restrict__ dhi, const int32_t *__restrict__ qb_last,
                      const int32_t *__restrict__ kb_first, float *__restrict__ dqacc,
                      int *__restrict__ sem, int *__restrict__ ticket, int T, int H, int nb)
{
	ATT_DYN_SMEM(smem);
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
	int *tk = reinterpret_cast<int *>(smem + ATT_FUSED_TICKET);
	if (tid == 0) {
		const int x = att_ticket(ticket);
		if (x == nb * H - 1)
			att_flag_store(ticket, 0);
		*tk = x;
	}
	__syncthreads();
	const int tix = *tk, h = tix % H, kb = nb - 1 - tix / H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: K at 0, V at 1, Q stage s at 2 + s, dY stage s at 4 + s */
	const uint32_t sK = att_smem(smem), sV = sK + ATT_SWTILEB;
	const uint32_t sVec = sK + ATT_FUSED_VEC;
	const float *fVec = reinterpret_cast<const float *>(smem + ATT_FUSED_VEC);
	const float *lseh = lse + (size_t)h * T, *delh = delta + (size_t)h * T;
	int *semh = sem + (size_t)h * nb;
	const int n = qb_last[kb] - kb + 1;

	att_load_tile_sw(sK, k + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sV, v + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sK + 2 * ATT_SWTILEB, q + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sK + 4 * ATT_SWTILEB, dy + (size_t)kb * blk + hoff, rs, tid);
	if (tid < 32)
		att_cp16(sVec + tid * 16, lseh + kb * ATTN_BLOCK + tid * 4);
	else if (tid < 64)
		att_cp16(sVec + 1024 + (tid - 32) * 16, delh + kb * ATTN_BLOCK + (tid - 32) * 4);
	att_cp_commit();

	const int krow0 = kb * ATTN_BLOCK + warp * 16 + g, krow1 = krow0 + 8;
	const int kd0 = docs[krow0], kd1 = docs[krow1];
	const int klo = dlo[kb], khi = dhi[kb];
	const float sl2 = ATT_SCALE * ATT_LOG2E;
	const uint32_t sW = sK + ATT_FUSED_DQ + warp * 2048; /* this warp's dQ stage */
	unsigned char *wst = smem + ATT_FUSED_DQ + warp * 2048 + lane * 64;

	float dka[16][4], dva[16][4];
#pragma unroll
	for (int d = 0; d < 16; d++) {
		dka[d][0] = dka[d][1] = dka[d][2] = dka[d][3] = 0.f;
		dva[d][0] = dva[d][1] = dva[d][2] = dva[d][3] = 0.f;
	}

	int pend = -1, pendv = 0; /* flag to release at the next slice 0, and its value */
	for (int i = 0; i < n; i++) {
		const int qb = kb + i, st = i & 1;
		if (i + 1 < n) {
			const int nq = qb + 1, ns = st ^ 1;
			att_load_tile_sw(sK + (2 + ns) * ATT_SWTILEB, q + (size_t)nq * blk + hoff, rs, tid);
			att_load_tile_sw(sK + (4 + ns) * ATT_SWTILEB, dy + (size_t)nq * blk + hoff, rs, tid);
			if (tid < 32)
				att_cp16(sVec + ns * 512 + tid * 16, lseh + nq * ATTN_BLOCK + tid * 4);
			else if (tid < 64)
				att_cp16(sVec + 1024 + ns * 512 + (tid - 32) * 16,
				         delh + nq * ATTN_BLOCK + (tid - 32) * 4);
		}
		att_cp_commit();
		att_cp_wait<1>();
		__syncthreads();
		const uint32_t sQ = sK + (2 + st) * ATT_SWTILEB, sdY = sK + (4 + st) * ATT_SWTILEB;
		const float *L = fVec + st * 128, *Dl = fVec + 256 + st * 128;
		const bool full = kb < qb && dlo[qb] == khi && klo == dhi[qb];
		const bool first = i == 0, last = kb == kb_first[qb];
		float *acc_base = dqacc + ((size_t)h * nb + qb) * (4 * 4096) + warp * 512;
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
				att_ldsm(a, sK + fsw_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 2; np++) {
					att_ldsm(b, sQ + fsw_bt(lane, sub * 32 + np * 16, kk * 16));
					att_mma(s[2 * np], a, b[0], b[1]);
					att_mma(s[2 * np + 1], a, b[2], b[3]);
				}
				att_ldsm(a, sV + fsw_a(lane, warp * 16, kk * 16));
#pragma unroll
				for (int np = 0; np < 2; np++) {
					att_ldsm(b, sdY + fsw_bt(lane, sub * 32 + np * 16, kk * 16));
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
			uint32_t pa[2][4], da[2][4];
#pragma unroll
			for (int kq = 0; kq < 2; kq++) {
				pa[kq][0] = att_pack(s[2 * kq][0], s[2 * kq][1]);
				pa[kq][1] = att_pack(s[2 * kq][2], s[2 * kq][3]);
				pa[kq][2] = att_pack(s[2 * kq + 1][0], s[2 * kq + 1][1]);
				pa[kq][3] = att_pack(s[2 * kq + 1][2], s[2 * kq + 1][3]);
				da[kq][0] = att_pack(dp[2 * kq][0], dp[2 * kq][1]);
				da[kq][1] = att_pack(dp[2 * kq][2], dp[2 * kq][3]);
				da[kq][2] = att_pack(dp[2 * kq + 1][0], dp[2 * kq + 1][1]);
				da[kq][3] = att_pack(dp[2 * kq + 1][2], dp[2 * kq + 1][3]);
			}
			/* dS^T of this warp's 16 keys into the slice's stage */
			const int buf = (i * 4 + sub) & 1;
			unsigned char *dst = smem + ATT_FUSED_DS + buf * 8192;
			const uint32_t sDS = sK + ATT_FUSED_DS + buf * 8192;
#pragma unroll
			for (int kq = 0; kq < 2; kq++) {
				const int r = warp * 16 + g, c0 = kq * 16 + 2 * t;
				*reinterpret_cast<uint32_t *>(dst + ds_off(r, c0)) = da[kq][0];
				*reinterpret_cast<uint32_t *>(dst + ds_off(r + 8, c0)) = da[kq][1];
				*reinterpret_cast<uint32_t *>(dst + ds_off(r, c0 + 8)) = da[kq][2];
				*reinterpret_cast<uint32_t *>(dst + ds_off(r + 8, c0 + 8)) = da[kq][3];
			}
#pragma unroll
			for (int kq = 0; kq < 2; kq++) {
#pragma unroll
				for (int dd = 0; dd < 8; dd++) {
					uint32_t b[4];
					att_ldsm_t(b, sdY + fsw_v(lane, sub * 32 + kq * 16, dd * 16));
					att_mma(dva[2 * dd], pa[kq], b[0], b[1]);
					att_mma(dva[2 * dd + 1], pa[kq], b[2], b[3]);
					att_ldsm_t(b, sQ + fsw_v(lane, sub * 32 + kq * 16, dd * 16));
					att_mma(dka[2 * dd], da[kq], b[0], b[1]);
					att_mma(dka[2 * dd + 1], da[kq], b[2], b[3]);
				}
			}
			/* the previous query block's reductions complete before its flag */
			if (sub == 0 && pend >= 0 && lane == 0) {
				att_bulk_wait<0>();
				att_fence_async_global();
				__threadfence();
			}
			__syncthreads(); /* the slice's dS^T is complete */
			if (sub == 0 && tid == 0) {
				if (pend >= 0)
					att_flag_release(semh + pend, pendv);
				if (!first) {
					att_flag_wait(semh + qb, qb - kb);
					att_fence_async_global();
					if (last)
						att_flag_store(semh + qb, 0);
				}
			}
			if (sub == 0)
				pend = -1;
			/* dQ[32 queries, 16 dims of this warp] = dS K */
			float acc[2][2][4];
#pragma unroll
			for (int mi = 0; mi < 2; mi++)
#pragma unroll
				for (int ni = 0; ni < 2; ni++)
					acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < 8; kk++) {
				uint32_t a0[4], a1[4], b[4];
				att_ldsm_t(a0, sDS + ds_a(lane, kk * 16, 0));
				att_ldsm_t(a1, sDS + ds_a(lane, kk * 16, 16));
				att_ldsm_t(b, sK + fsw_v(lane, kk * 16, warp * 16));
				att_mma(acc[0][0], a0, b[0], b[1]);
				att_mma(acc[0][1], a0, b[2], b[3]);
				att_mma(acc[1][0], a1, b[0], b[1]);
				att_mma(acc[1][1], a1, b[2], b[3]);
			}
			if (sub == 0 && !first)
				__syncthreads(); /* thread 0 holds the flag */
			float *gacc = acc_base + (size_t)sub * 4096 + lane * 16;
			if (last) {
				if (!first) {
					att_fence_async_global();
#pragma unroll
					for (int f = 0; f < 4; f++) {
						const float4 x = __ldcg(reinterpret_cast<const float4 *>(gacc) + f);
						float *a = acc[f >> 1][f & 1];
						a[0] += x.x, a[1] += x.y, a[2] += x.z, a[3] += x.w;
					}
				}
#pragma unroll
				for (int mi = 0; mi < 2; mi++)
#pragma unroll
					for (int ni = 0; ni < 2; ni++) {
						const size_t row = (size_t)qb * ATTN_BLOCK + sub * 32 + mi * 16 + g;
						bf16 *o = dq + row * rs + hoff + warp * 16 + ni * 8 + 2 * t;
						const float *a = acc[mi][ni];
						*reinterpret_cast<uint32_t *>(o) =
							att_pack(a[0] * ATT_SCALE, a[1] * ATT_SCALE);
						*reinterpret_cast<uint32_t *>(o + 8 * rs) =
							att_pack(a[2] * ATT_SCALE, a[3] * ATT_SCALE);
					}
			} else {
				if (lane == 0)
					att_bulk_wait_read<0>();
				__syncwarp();
#pragma unroll
				for (int f = 0; f < 4; f++) {
					const float *a = acc[f >> 1][f & 1];
					*reinterpret_cast<float4 *>(wst + 16 * f) = make_float4(a[0], a[1], a[2], a[3]);
				}
				att_fence_async_smem();
				__syncwarp();
				if (lane == 0) {
					float *gw = acc_base + (size_t)sub * 4096;
					if (first)
						att_bulk_store(gw, sW, 2048);
					else
						att_bulk_add(gw, sW, 2048);
					att_bulk_commit();
				}
			}
		}
		if (!last)
			pend = qb, pendv = qb - kb + 1;
		__syncthreads();
	}
	att_cp_wait<0>();
	if (pend >= 0) {
		if (lane == 0) {
			att_bulk_wait<0>();
			att_fence_async_global();
			__threadfence();
		}
		__syncthreads();
		if (tid == 0)
			att_flag_release(semh + pend, pendv);
	}

	/* stage through the warp's own 16 rows of K (dk) and V (dv) */
	const size_t orow = (size_t)(kb * ATTN_BLOCK + warp * 16) * rs + hoff;
	att_store_rows_sw(dk + orow, rs, smem, warp * 16, dka, ATT_SCALE, lane);
	att_store_rows_sw(dv + orow, rs, smem + ATT_SWTILEB, warp * 16, dva, 1.f, lane);
}

extern "C" int attn_backward(void *dq, void *dk, void *dv, const void *dy, const void *q,
                             const void *k, const void *v, const void *y, const float *lse,
                             const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                             struct gpt_err *e)
{
	const void *ptrs[] = {dq, dk, dv, dy, q, k, v, y, lse};
	if (attn_check_args(m, heads, head_dim, ptrs, 9, "backward", e))
		return -1;
	const int T = m->T, nb = T / ATTN_BLOCK;
	const int rows = T * heads;
	ATT_LAUNCH(attn_delta_kernel, (rows + 7) / 8, 256, 0, s, m->delta, (const bf16 *)dy,
	           (const bf16 *)y, T, heads);
	CUDA_CHECK_LAST();
	CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_fused_kernel,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATT_FUSED_SMEM));
	ATT_LAUNCH(attn_bwd_fused_kernel, nb * heads, ATT_THREADS, ATT_FUSED_SMEM, s, (bf16 *)dq,
	           (bf16 *)dk, (bf16 *)dv, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
	           (const bf16 *)dy, lse, m->delta, m->docs, m->docs_low, m->docs_high, m->qb_last,
	           m->kb_first, m->dqacc, m->sem, m->ticket, T, heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}
