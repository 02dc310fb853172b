/*
 * attention_bwd_fused.cu - attention backward in one pass over the key
 * blocks: dk, dv and dq together, deterministic. See attention.cuh.
 *
 * defines: attn_backward (dispatch: attention_bwd_wg.cu's wgmma kernel where
 * attn_has_wgmma(), unless GPT_ATTN_BWD=mma is in the environment; this
 * one otherwise), attn_backward_mma
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
 *     bulk .add.f32, one 4 KB piece per warp and 64-query slice, from a
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
 * Work split (a query block in two slices of 64 queries; warp w, kw = w % 4,
 * qw = w / 4): S^T and dP^T as 32 x 32 warp tiles (keys 32 kw.., queries
 * 32 qw.. of the slice), so each ldmatrix fragment feeds two or four MMAs;
 * P^T and dS^T (bf16) go to two shared stages of 128 keys x 64 queries;
 * after a barrier each warp accumulates dV and dK for keys 32 kw.. and
 * head dimensions 64 qw.. (A from the stages, B = dY or Q), and dQ for
 * queries 32 qw.. and dimensions 32 kw.. (A = dS by ldmatrix.trans from the
 * dS^T stage, B = K); after another barrier the warps write their dQ parts
 * (fp32) over the stages for the bulk copies. Per 64-query slice and warp:
 * 144 ldmatrix.x4 for 320 MMAs, against 208 for 320 with 16 x 32 tiles
 * and per-warp key rows (this file's first form). Measured in one call
 * (same sizes as above): 4.41 ms against the first form's 4.44 at W = 14,
 * 2.68 / 2.67 at W = 7, 0.60 / 0.63 at W = 1: shared-memory traffic was
 * not the limit either; what is (mma.sync issue with 8 warps per SM,
 * latency between the phases) was not profiled.
 * dK and dV follow the same arithmetic as the split kernel, in the same
 * order, so their bits equal its (the GPU tests check that).
 * Tiles are stored swizzled (att_swz) instead of padded, which leaves
 * room in 227 KB for the stages: K, V, two stages of Q and dY (6 x 32 KB),
 * lse and delta (2 KB), P^T and dS^T (2 x 16 KB).
 */
#include <stdlib.h>

#include "attention_impl.cuh"
#include "cuda_check.h"

/* Byte offset of (key row r, query column c) in a stage of 128 rows x 64
 * bf16 (128 bytes: P^T or dS^T of one 64-query slice): chunk c/8 stored at
 * (c/8) ^ (r & 7), so the 8 consecutive rows of one ldmatrix matrix hit 8
 * different 4-bank groups. */
__device__ __forceinline__ uint32_t st_off(int r, int c)
{
	return (uint32_t)(r * 128 + (((c >> 3) ^ (r & 7)) << 4) + (c & 7) * 2);
}
/* A fragment (rows = keys r0.., columns = queries c0..) from a stage. */
__device__ __forceinline__ uint32_t st_a(int lane, int r0, int c0)
{
	return st_off(r0 + (lane & 15), c0 + 8 * (lane >> 4));
}
/* A fragment of the transpose (rows = queries m0.., columns = keys k0..)
 * from a stage, for ldmatrix .trans. */
__device__ __forceinline__ uint32_t st_at(int lane, int k0, int m0)
{
	return st_off(k0 + (lane & 7) + 8 * (lane >> 4), m0 + 8 * ((lane >> 3) & 1));
}

/* One 16-wide k step of a warp's 32 x 32 tile: c[mi][n] += a_mi b_n, with
 * a0, a1 the A fragments of rows 0..15 and 16..31 and b0, b1 the B
 * fragments (frag_bt / frag_v order) of columns 0..15 and 16..31. */
__device__ __forceinline__ void mma_32x32(float c[2][4][4], const uint32_t a0[4],
                                          const uint32_t a1[4], const uint32_t b0[4],
                                          const uint32_t b1[4])
{
	att_mma(c[0][0], a0, b0[0], b0[1]);
	att_mma(c[0][1], a0, b0[2], b0[3]);
	att_mma(c[0][2], a0, b1[0], b1[1]);
	att_mma(c[0][3], a0, b1[2], b1[3]);
	att_mma(c[1][0], a1, b0[0], b0[1]);
	att_mma(c[1][1], a1, b0[2], b0[3]);
	att_mma(c[1][2], a1, b1[0], b1[1]);
	att_mma(c[1][3], a1, b1[2], b1[3]);
}

/* Write a warp's 32 x 64 accumulator (rows r0 + 16 mi + g (+8), columns c0
 * + 8 n + 2 t) scaled by f as bf16 into the swizzled tile at generic
 * pointer tile. */
__device__ __forceinline__ void att_tile_put(unsigned char *tile, int r0, int c0,
                                             const float acc[2][8][4], float f, int lane)
{
	const int g = lane >> 2, t = lane & 3;
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int n = 0; n < 8; n++) {
			const int r = r0 + 16 * mi + g, c = c0 + 8 * n + 2 * t;
			*reinterpret_cast<uint32_t *>(tile + att_swz(r, c)) =
				att_pack(acc[mi][n][0] * f, acc[mi][n][1] * f);
			*reinterpret_cast<uint32_t *>(tile + att_swz(r + 8, c)) =
				att_pack(acc[mi][n][2] * f, acc[mi][n][3] * f);
		}
}

/* Copy the swizzled 128 x 128 tile at generic pointer tile to global rows
 * out + r * rs (all ATT_THREADS threads, 16-byte chunks). */
__device__ __forceinline__ void att_tile_out(bf16 *out, size_t rs, const unsigned char *tile,
                                             int tid)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		const int c = tid + i * ATT_THREADS, r = c >> 4, c16 = c & 15;
		const uint4 val = *reinterpret_cast<const uint4 *>(tile + att_swz(r, c16 * 8));
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
	const int tix = att_take_ticket(ticket, reinterpret_cast<int *>(smem + ATT_FUSED_TICKET), nb * H, tid);
	const int h = tix % H, kb = nb - 1 - tix / H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, hoff = (size_t)h * ATTN_HEAD_DIM;
	const size_t blk = (size_t)ATTN_BLOCK * rs;
	/* tiles: K at 0, V at 1, Q stage s at 2 + s, dY stage s at 4 + s */
	const uint32_t sK = att_smem(smem), sV = sK + ATT_SWTILEB;
	const uint32_t sVec = sK + ATT_FUSED_VEC;
	const float *fVec = reinterpret_cast<const float *>(smem + ATT_FUSED_VEC);
	const uint32_t stP = sK + ATT_FUSED_ST, stS = stP + ATT_FUSED_STB;
	unsigned char *gP = smem + ATT_FUSED_ST, *gS = gP + ATT_FUSED_STB;
	const float *lseh = lse + (size_t)h * T, *delh = delta + (size_t)h * T;
	int *semh = sem + (size_t)h * nb;
	const int n = qb_last[kb] - kb + 1;

	att_load_tile_sw(sK, k + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sV, v + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sK + 2 * ATT_SWTILEB, q + (size_t)kb * blk + hoff, rs, tid);
	att_load_tile_sw(sK + 4 * ATT_SWTILEB, dy + (size_t)kb * blk + hoff, rs, tid);
	att_load_lse_delta(sVec, lseh + kb * ATTN_BLOCK, delh + kb * ATTN_BLOCK, tid);
	att_cp_commit();

	/* S^T, dP^T, dK, dV: keys 32 kw.. (two m-tiles); S^T columns: queries
	 * 32 qw.. of the slice; dK, dV columns: dims 64 qw... dQ: queries 32 qw..
	 * of the slice, dims 32 kw... */
	const int kw = warp & 3, qw = warp >> 2;
	const int krow = kb * ATTN_BLOCK + 32 * kw + g; /* + 16 mi + 8 hh */
	int kd[2][2];
#pragma unroll
	for (int mi = 0; mi < 2; mi++) {
		kd[mi][0] = docs[krow + 16 * mi];
		kd[mi][1] = docs[krow + 16 * mi + 8];
	}
	const int klo = dlo[kb], khi = dhi[kb];
	const float sl2 = ATT_SCALE * ATT_LOG2E;
	const uint32_t sW = stP + warp * 4096; /* this warp's dQ stage (over the P, dS stages) */
	unsigned char *wst = gP + warp * 4096 + lane * 128;

	float dka[2][8][4], dva[2][8][4];
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int d = 0; d < 8; d++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dka[mi][d][e] = dva[mi][d][e] = 0.f;

	int pend = -1, pendv = 0; /* flag to release at the next slice 0, and its value */
	for (int i = 0; i < n; i++) {
		const int qb = kb + i, st = i & 1;
		if (i + 1 < n) {
			const int nq = qb + 1, ns = st ^ 1;
			att_load_tile_sw(sK + (2 + ns) * ATT_SWTILEB, q + (size_t)nq * blk + hoff, rs, tid);
			att_load_tile_sw(sK + (4 + ns) * ATT_SWTILEB, dy + (size_t)nq * blk + hoff, rs, tid);
			att_load_lse_delta(sVec + ns * 512, lseh + nq * ATTN_BLOCK, delh + nq * ATTN_BLOCK,
			                   tid);
		}
		att_cp_commit();
		att_cp_wait<1>();
		__syncthreads();
		const uint32_t sQ = sK + (2 + st) * ATT_SWTILEB, sdY = sK + (4 + st) * ATT_SWTILEB;
		const float *L = fVec + st * 128, *Dl = fVec + 256 + st * 128;
		const bool full = kb < qb && dlo[qb] == khi && klo == dhi[qb];
		const bool first = i == 0, last = kb == kb_first[qb];
		float *acc_base = dqacc + ((size_t)h * nb + qb) * (2 * 8192) + warp * 1024;
#pragma unroll 1
		for (int sl = 0; sl < 2; sl++) {
			const int q0 = sl * 64 + qw * 32; /* S^T columns (query in the tile) */
			float s[2][4][4], dp[2][4][4];
#pragma unroll
			for (int mi = 0; mi < 2; mi++)
#pragma unroll
				for (int j = 0; j < 4; j++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						s[mi][j][e] = dp[mi][j][e] = 0.f;
#pragma unroll
			for (int kk = 0; kk < 8; kk++) {
				uint32_t a0[4], a1[4], b0[4], b1[4];
				att_ldsm(a0, sK + fsw_a(lane, 32 * kw, kk * 16));
				att_ldsm(a1, sK + fsw_a(lane, 32 * kw + 16, kk * 16));
				att_ldsm(b0, sQ + fsw_bt(lane, q0, kk * 16));
				att_ldsm(b1, sQ + fsw_bt(lane, q0 + 16, kk * 16));
				mma_32x32(s, a0, a1, b0, b1);
				att_ldsm(a0, sV + fsw_a(lane, 32 * kw, kk * 16));
				att_ldsm(a1, sV + fsw_a(lane, 32 * kw + 16, kk * 16));
				att_ldsm(b0, sdY + fsw_bt(lane, q0, kk * 16));
				att_ldsm(b1, sdY + fsw_bt(lane, q0 + 16, kk * 16));
				mma_32x32(dp, a0, a1, b0, b1);
			}
			/* element (key row 32 kw + 16 mi + g (+8), query column c, c + 1) */
#pragma unroll
			for (int j = 0; j < 4; j++) {
				const int c = q0 + j * 8 + 2 * t;
				const float L0 = L[c] * ATT_LOG2E, L1 = L[c + 1] * ATT_LOG2E;
				const float D0 = Dl[c], D1 = Dl[c + 1];
				const int qp = qb * ATTN_BLOCK + c;
				int qd0 = 0, qd1 = 0;
				if (!full)
					qd0 = docs[qp], qd1 = docs[qp + 1];
#pragma unroll
				for (int mi = 0; mi < 2; mi++) {
					float *sv = s[mi][j], *dv2 = dp[mi][j];
					float p00 = exp2f(fmaf(sv[0], sl2, -L0)), p01 = exp2f(fmaf(sv[1], sl2, -L1));
					float p10 = exp2f(fmaf(sv[2], sl2, -L0)), p11 = exp2f(fmaf(sv[3], sl2, -L1));
					if (!full) {
						const int k0 = krow + 16 * mi, k1 = k0 + 8;
						if (!(k0 <= qp && kd[mi][0] == qd0))
							p00 = 0.f;
						if (!(k0 <= qp + 1 && kd[mi][0] == qd1))
							p01 = 0.f;
						if (!(k1 <= qp && kd[mi][1] == qd0))
							p10 = 0.f;
						if (!(k1 <= qp + 1 && kd[mi][1] == qd1))
							p11 = 0.f;
					}
					sv[0] = p00, sv[1] = p01, sv[2] = p10, sv[3] = p11;
					dv2[0] = p00 * (dv2[0] - D0);
					dv2[1] = p01 * (dv2[1] - D1);
					dv2[2] = p10 * (dv2[2] - D0);
					dv2[3] = p11 * (dv2[3] - D1);
				}
			}
			/* the stages are free once every warp is done with the previous
			 * slice and this warp's bulk copy has read its dQ stage; at slice
			 * 0 the previous query block's sums are complete (its flag) */
			if (lane == 0) {
				if (sl == 0 && pend >= 0) {
					att_bulk_wait<0>();
					att_fence_async_global();
					__threadfence();
				} else {
					att_bulk_wait_read<0>();
				}
			}
			__syncthreads();
			if (sl == 0 && tid == 0) {
				if (pend >= 0)
					att_flag_release(semh + pend, pendv);
				if (!first) {
					att_flag_wait(semh + qb, qb - kb);
					att_fence_async_global();
					if (last)
						att_flag_store(semh + qb, 0);
				}
			}
			if (sl == 0)
				pend = -1;
			/* P^T and dS^T (bf16) of this warp's keys and queries */
#pragma unroll
			for (int mi = 0; mi < 2; mi++)
#pragma unroll
				for (int j = 0; j < 4; j++) {
					const int r = 32 * kw + 16 * mi + g, c = qw * 32 + j * 8 + 2 * t;
					*reinterpret_cast<uint32_t *>(gP + st_off(r, c)) =
						att_pack(s[mi][j][0], s[mi][j][1]);
					*reinterpret_cast<uint32_t *>(gP + st_off(r + 8, c)) =
						att_pack(s[mi][j][2], s[mi][j][3]);
					*reinterpret_cast<uint32_t *>(gS + st_off(r, c)) =
						att_pack(dp[mi][j][0], dp[mi][j][1]);
					*reinterpret_cast<uint32_t *>(gS + st_off(r + 8, c)) =
						att_pack(dp[mi][j][2], dp[mi][j][3]);
				}
			__syncthreads();
			/* dV += P^T dY, dK += dS^T Q: keys 32 kw.., dims 64 qw.. */
#pragma unroll
			for (int kq = 0; kq < 4; kq++) {
				uint32_t ap0[4], ap1[4], ad0[4], ad1[4];
				att_ldsm(ap0, stP + st_a(lane, 32 * kw, kq * 16));
				att_ldsm(ap1, stP + st_a(lane, 32 * kw + 16, kq * 16));
				att_ldsm(ad0, stS + st_a(lane, 32 * kw, kq * 16));
				att_ldsm(ad1, stS + st_a(lane, 32 * kw + 16, kq * 16));
#pragma unroll
				for (int np = 0; np < 4; np++) {
					uint32_t b[4];
					att_ldsm_t(b, sdY + fsw_v(lane, sl * 64 + kq * 16, 64 * qw + np * 16));
					att_mma(dva[0][2 * np], ap0, b[0], b[1]);
					att_mma(dva[0][2 * np + 1], ap0, b[2], b[3]);
					att_mma(dva[1][2 * np], ap1, b[0], b[1]);
					att_mma(dva[1][2 * np + 1], ap1, b[2], b[3]);
					att_ldsm_t(b, sQ + fsw_v(lane, sl * 64 + kq * 16, 64 * qw + np * 16));
					att_mma(dka[0][2 * np], ad0, b[0], b[1]);
					att_mma(dka[0][2 * np + 1], ad0, b[2], b[3]);
					att_mma(dka[1][2 * np], ad1, b[0], b[1]);
					att_mma(dka[1][2 * np + 1], ad1, b[2], b[3]);
				}
			}
			/* dQ[queries 32 qw.. of the slice, dims 32 kw..] = dS K */
			float acc[2][4][4];
#pragma unroll
			for (int mi = 0; mi < 2; mi++)
#pragma unroll
				for (int nn = 0; nn < 4; nn++)
					acc[mi][nn][0] = acc[mi][nn][1] = acc[mi][nn][2] = acc[mi][nn][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < 8; kk++) {
				uint32_t a0[4], a1[4], b0[4], b1[4];
				att_ldsm_t(a0, stS + st_at(lane, kk * 16, qw * 32));
				att_ldsm_t(a1, stS + st_at(lane, kk * 16, qw * 32 + 16));
				att_ldsm_t(b0, sK + fsw_v(lane, kk * 16, 32 * kw));
				att_ldsm_t(b1, sK + fsw_v(lane, kk * 16, 32 * kw + 16));
				mma_32x32(acc, a0, a1, b0, b1);
			}
			__syncthreads(); /* the stages are read; thread 0 holds the flag */
			float *gacc = acc_base + (size_t)sl * 8192 + lane * 32;
			if (last) {
				if (!first) {
					att_fence_async_global();
#pragma unroll
					for (int f = 0; f < 8; f++) {
						const float4 x = __ldcg(reinterpret_cast<const float4 *>(gacc) + f);
						float *a = acc[f >> 2][f & 3];
						a[0] += x.x, a[1] += x.y, a[2] += x.z, a[3] += x.w;
					}
				}
#pragma unroll
				for (int mi = 0; mi < 2; mi++)
#pragma unroll
					for (int nn = 0; nn < 4; nn++) {
						const size_t row =
							(size_t)qb * ATTN_BLOCK + sl * 64 + qw * 32 + mi * 16 + g;
						bf16 *o = dq + row * rs + hoff + 32 * kw + nn * 8 + 2 * t;
						const float *a = acc[mi][nn];
						*reinterpret_cast<uint32_t *>(o) =
							att_pack(a[0] * ATT_SCALE, a[1] * ATT_SCALE);
						*reinterpret_cast<uint32_t *>(o + 8 * rs) =
							att_pack(a[2] * ATT_SCALE, a[3] * ATT_SCALE);
					}
			} else {
#pragma unroll
				for (int f = 0; f < 8; f++) {
					const float *a = acc[f >> 2][f & 3];
					*reinterpret_cast<float4 *>(wst + 16 * f) = make_float4(a[0], a[1], a[2], a[3]);
				}
				att_fence_async_smem();
				__syncwarp();
				if (lane == 0) {
					float *gw = acc_base + (size_t)sl * 8192;
					if (first)
						att_bulk_store(gw, sW, 4096);
					else
						att_bulk_add(gw, sW, 4096);
					att_bulk_commit();
				}
			}
		}
		if (!last)
			pend = qb, pendv = qb - kb + 1;
		__syncthreads();
	}
	att_cp_wait<0>();
	if (lane == 0) {
		if (pend >= 0) {
			att_bulk_wait<0>();
			att_fence_async_global();
			__threadfence();
		} else {
			att_bulk_wait_read<0>();
		}
	}
	__syncthreads();
	if (pend >= 0 && tid == 0)
		att_flag_release(semh + pend, pendv);

	/* dk, dv staged through the K and V tiles (every warp is done with them) */
	att_tile_put(smem, 32 * kw, 64 * qw, dka, ATT_SCALE, lane);
	att_tile_put(smem + ATT_SWTILEB, 32 * kw, 64 * qw, dva, 1.f, lane);
	__syncthreads();
	const size_t orow = (size_t)kb * ATTN_BLOCK * rs + hoff;
	att_tile_out(dk + orow, rs, smem, tid);
	att_tile_out(dv + orow, rs, smem + ATT_SWTILEB, tid);
}

extern "C" int attn_backward_mma(void *dq, void *dk, void *dv, const void *dy, const void *q,
                                 const void *k, const void *v, const void *y, const float *lse,
                                 const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                                 struct gpt_err *e)
{
	if (attn_backward_begin(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e))
		return -1;
	const int T = m->T, nb = T / ATTN_BLOCK;
	CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_fused_kernel,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize, ATT_FUSED_SMEM));
	ATT_LAUNCH(attn_bwd_fused_kernel, nb * heads, ATT_THREADS, ATT_FUSED_SMEM, s, (bf16 *)dq,
	           (bf16 *)dk, (bf16 *)dv, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
	           (const bf16 *)dy, lse, m->delta, m->docs, m->docs_low, m->docs_high, m->qb_last,
	           m->kb_first, m->dqacc, m->sem, m->ticket, T, heads, nb);
	CUDA_CHECK_LAST();
	return 0;
}

extern "C" int attn_backward(void *dq, void *dk, void *dv, const void *dy, const void *q,
                             const void *k, const void *v, const void *y, const float *lse,
                             const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                             struct gpt_err *e)
{
	static int env = -1;
	if (env < 0) {
		const char *x = getenv("GPT_ATTN_BWD");
		env = !(x && !strcmp(x, "mma"));
	}
	if (env && attn_has_wgmma())
		return attn_backward_wg(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e);
	return attn_backward_mma(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e);
}
