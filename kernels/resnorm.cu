/*
 * resnorm.cu - the residual stream fused with the RMS norms (see
 * resnorm.cuh).
 *
 * defines: residual_rmsnorm_forward, block_input_forward,
 *          block_input_work_bytes, block_input_backward
 *
 * Forward: rmsnorm.cu's layout (one warp per row, lane l owns the 8-vectors
 * l, l + 32, ...; rows of up to RMS_MAX_NV vectors per lane in registers,
 * longer ones in two passes). Per vector the chain sum, skip add and
 * lambda mix run in fp32 with a bf16 rounding after each (the value each
 * unfused launcher would have stored and the next one loaded back); the
 * last of them is the norm's input, its squares summed in the same order
 * as rmsnorm_forward's. The two-pass path reads that stored input back.
 *
 * Backward: mix.cu's grid (block b owns the 8-vectors b * 1024 ..
 * b * 1024 + 1023; thread tid the vectors tile + k * 256 + tid, k < 4),
 * so the per-thread fp32 sums, the per-block double sums and pass 2 are
 * those of mix_lambda_backward and mix_skip_backward. Phase 1: the block's
 * warps compute the norm backward's mean m and take rstd for every row the
 * tile touches (a warp per row, rmsnorm_backward's order: lane l adds its
 * vectors' partial sums in vector order, then a butterfly), reading whole
 * rows of dh and xm and keeping the tile's own vectors in shared memory.
 * Phase 2: each thread runs its vectors through the norm backward, the
 * lambda mix's and the skip's backward and the next layer's add, rounding
 * to bf16 wherever the unfused launchers stored, and adds its products.
 */
#include "mix.cuh"
#include "mix_impl.cuh"
#include "resnorm.cuh"
#include "rmsnorm_impl.cuh"

/* 8 floats -> bf16 (round to nearest even, as bf16x8_store). */
__device__ __forceinline__ uint4 pack8(const float v[8])
{
	uint4 u;
	u.x = pack_bf16x2(v[0], v[1]);
	u.y = pack_bf16x2(v[2], v[3]);
	u.z = pack_bf16x2(v[4], v[5]);
	u.w = pack_bf16x2(v[6], v[7]);
	return u;
}

/* Store v rounded to bf16 at p (when p != NULL) and replace v by the
 * rounded values. */
__device__ __forceinline__ void round_store(uint16_t *p, float v[8])
{
	const uint4 u = pack8(v);
	if (p)
		*reinterpret_cast<uint4 *>(p) = u;
	unpack8(u, v);
}

__device__ __forceinline__ uint4 load16(const uint16_t *p)
{
	return *reinterpret_cast<const uint4 *>(p);
}

/* ------------------------------------------------------------------------
 * Forward
 */
struct rn_fwd {
	uint16_t *out, *res, *xm, *h; /* out: a + b; res: + w skip; xm: lambda mix */
	float *rstd;
	const uint16_t *a, *b, *skip, *x0; /* b, skip, x0 may be NULL */
	const float *w, *lam;
	int T, D;
	float eps;
};

/* The 8-vector at element offset off: from the raw inputs to the norm's
 * input v (bf16 values), storing the intermediate tensors. */
__device__ __forceinline__ void rn_chain(const rn_fwd &p, size_t off, bool self, float w, float l0,
                                         float l1, const uint4 &ra, const uint4 &rb,
                                         const uint4 &rsk, const uint4 &rx0, float v[8])
{
	float t[8];
	unpack8(ra, v);
	if (p.b) {
		unpack8(rb, t);
#pragma unroll
		for (int e = 0; e < 8; e++)
			v[e] = mix_add(v[e], t[e]);
		round_store(p.out ? p.out + off : NULL, v);
	}
	if (p.skip) {
		if (self) {
#pragma unroll
			for (int e = 0; e < 8; e++)
				t[e] = v[e];
		} else {
			unpack8(rsk, t);
		}
#pragma unroll
		for (int e = 0; e < 8; e++)
			v[e] = mix_skip(v[e], w, t[e]);
		round_store(p.res + off, v);
	}
	if (p.lam) {
		unpack8(rx0, t);
#pragma unroll
		for (int e = 0; e < 8; e++)
			v[e] = mix_lin(l0, v[e], l1, t[e]);
		round_store(p.xm + off, v);
	}
}

template <int NV>
__global__ void __launch_bounds__(RMS_THREADS) resnorm_fwd_kernel(const rn_fwd p)
{
	const int t = blockIdx.x * RMS_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (t >= p.T) /* whole warp */
		return;
	const int nvec = p.D / 8;
	const size_t row = (size_t)t * p.D;
	const bool self = p.skip && p.skip == p.out;
	const float w = p.skip ? p.w[0] : 0.0f;
	const float l0 = p.lam ? p.lam[0] : 0.0f, l1 = p.lam ? p.lam[1] : 0.0f;
	const uint4 zero = make_uint4(0, 0, 0, 0);
	float ss = 0.0f, rs;
	if (NV > 0) {
		constexpr int N = NV > 0 ? NV : 1;
		/* all loads first (many 16-byte loads in flight), kept raw */
		uint4 ra[N], rb[N], rsk[N], rx0[N];
#pragma unroll
		for (int k = 0; k < N; k++) {
			const int c = lane + 32 * k;
			const size_t off = row + 8 * (size_t)c;
			ra[k] = rb[k] = rsk[k] = rx0[k] = zero;
			if (c < nvec) {
				ra[k] = load16(p.a + off);
				if (p.b)
					rb[k] = load16(p.b + off);
				if (p.skip && !self)
					rsk[k] = load16(p.skip + off);
				if (p.lam)
					rx0[k] = load16(p.x0 + off);
			}
		}
		uint4 rm[N]; /* the norm's input, bf16 */
#pragma unroll
		for (int k = 0; k < N; k++) {
			const int c = lane + 32 * k;
			if (c < nvec) {
				float v[8];
				rn_chain(p, row + 8 * (size_t)c, self, w, l0, l1, ra[k], rb[k], rsk[k],
				         rx0[k], v);
				rm[k] = pack8(v);
				ss = rms_sumsq8(ss, v);
			}
		}
		ss = warp_sum(ss);
		rs = rms_scale(ss, p.D, p.eps);
#pragma unroll
		for (int k = 0; k < N; k++) {
			const int c = lane + 32 * k;
			if (c < nvec) {
				float v[8];
				unpack8(rm[k], v);
#pragma unroll
				for (int e = 0; e < 8; e++)
					v[e] = __fmul_rn(v[e], rs);
				bf16x8_store(p.h + row + 8 * (size_t)c, v);
			}
		}
	} else {
		const uint16_t *nin = p.lam ? p.xm : p.skip ? p.res : p.out;
		for (int c = lane; c < nvec; c += 32) {
			const size_t off = row + 8 * (size_t)c;
			const uint4 ra = load16(p.a + off), rb = p.b ? load16(p.b + off) : zero;
			const uint4 rsk = p.skip && !self ? load16(p.skip + off) : zero;
			const uint4 rx0 = p.lam ? load16(p.x0 + off) : zero;
			float v[8];
			rn_chain(p, off, self, w, l0, l1, ra, rb, rsk, rx0, v);
			ss = rms_sumsq8(ss, v);
		}
		ss = warp_sum(ss);
		rs = rms_scale(ss, p.D, p.eps);
		for (int c = lane; c < nvec; c += 32) { /* this lane's own stores, read back */
			float v[8];
			bf16x8_load(nin + row + 8 * (size_t)c, v);
#pragma unroll
			for (int e = 0; e < 8; e++)
				v[e] = __fmul_rn(v[e], rs);
			bf16x8_store(p.h + row + 8 * (size_t)c, v);
		}
	}
	if (p.rstd && lane == 0)
		p.rstd[t] = rs;
}

/* ------------------------------------------------------------------------
 * Launchers
 */
static void check_shape(const char *fn, int T, int D)
{
	KREQUIRE_IN(fn, T >= 0 && D > 0 && D % 8 == 0,
	            "bad shape T = %d, D = %d (D > 0, a multiple of 8)", T, D);
}

static void check_aligned(const char *fn, const void *const *p, int n)
{
	for (int i = 0; i < n; i++)
		KREQUIRE_IN(fn, !p[i] || is_aligned16(p[i]),
		            "tensor argument %d is not 16-byte aligned", i);
}

static void fwd_launch(const rn_fwd &p, cudaStream_t s)
{
	if (p.T == 0)
		return;
	unsigned blocks = (unsigned)((p.T + RMS_ROWS - 1) / RMS_ROWS);
#define FWD(N) resnorm_fwd_kernel<N><<<blocks, RMS_THREADS, 0, s>>>(p)
	RMS_SWITCH(rms_nv(p.D), FWD);
#undef FWD
	CUDA_CHECK_LAST();
}

extern "C" void residual_rmsnorm_forward(uint16_t *r, uint16_t *y, float *rstd, const uint16_t *a,
                                         const uint16_t *b, int T, int D, float eps,
                                         cudaStream_t s)
{
	check_shape(__func__, T, D);
	KREQUIRE(r && y && a && b, "r, y, a and b must not be NULL");
	const void *t[] = {r, y, a, b};
	check_aligned(__func__, t, 4);
	rn_fwd p = {r, NULL, NULL, y, rstd, a, b, NULL, NULL, NULL, NULL, T, D, eps};
	fwd_launch(p, s);
}

extern "C" void block_input_forward(uint16_t *out, uint16_t *res, uint16_t *xm, uint16_t *h,
                                    float *rstd, const uint16_t *a, const uint16_t *b,
                                    const uint16_t *skip, const float *w, const uint16_t *x0,
                                    const float *lam, int T, int D, float eps, cudaStream_t s)
{
	check_shape(__func__, T, D);
	KREQUIRE(xm && h && a && x0 && lam, "xm, h, a, x0 and lam must not be NULL");
	KREQUIRE(!out || b, "out needs b (out = a + b)");
	KREQUIRE(!skip == !res && !skip == !w, "skip, res and w go together");
	const void *t[] = {out, res, xm, h, a, b, skip, x0};
	check_aligned(__func__, t, 8);
	rn_fwd p = {out, res, xm, h, rstd, a, b, skip, x0, w, lam, T, D, eps};
	fwd_launch(p, s);
}

/* ------------------------------------------------------------------------
 * Backward
 */
#define RN_TILE_VEC (MIX_VPT * MIX_THREADS) /* 8-vectors per block: mix.cu's tile */

struct rn_bwd {
	uint16_t *dx, *dskip;
	float *dx0;
	double *part_lam, *part_skip;
	const uint16_t *dh, *xm, *res, *x0, *skip, *add;
	const float *rstd, *lam, *w;
	size_t nvec; /* 8-vectors in all */
	int D;
};

/* Dynamic shared memory: the tile's dh and xm vectors (raw), then
 * (m, rstd) of each row the tile touches. SKIP, ADD: p.skip, p.add given. */
template <bool SKIP, bool ADD>
__global__ void __launch_bounds__(MIX_THREADS) resnorm_bwd_kernel(const rn_bwd p)
{
	extern __shared__ uint4 sm[];
	uint4 *s_dh = sm, *s_xm = sm + RN_TILE_VEC;
	float2 *s_row = reinterpret_cast<float2 *>(sm + 2 * RN_TILE_VEC);
	const int rvec = p.D / 8; /* 8-vectors per row */
	const size_t base = (size_t)blockIdx.x * RN_TILE_VEC;
	const size_t end = base + RN_TILE_VEC < p.nvec ? base + RN_TILE_VEC : p.nvec;
	const size_t r0 = base / rvec, r1 = (end - 1) / rvec;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const uint4 *dh4 = reinterpret_cast<const uint4 *>(p.dh);
	const uint4 *xm4 = reinterpret_cast<const uint4 *>(p.xm);
	const bool self = ADD && p.add == p.dskip;

	/* phase 2's loads first, in flight during phase 1 */
	const uint4 zero = make_uint4(0, 0, 0, 0);
	uint4 rold[MIX_VPT], rres[MIX_VPT], rx0[MIX_VPT];
	uint4 rsk[SKIP ? MIX_VPT : 1], radd[ADD ? MIX_VPT : 1];
#pragma unroll
	for (int k = 0; k < MIX_VPT; k++) {
		const size_t i = base + (size_t)k * MIX_THREADS + threadIdx.x;
		rold[k] = rres[k] = rx0[k] = zero;
		if (SKIP)
			rsk[k] = zero;
		if (ADD)
			radd[k] = zero;
		if (i < p.nvec) {
			rold[k] = load16(p.dx + 8 * i);
			rres[k] = load16(p.res + 8 * i);
			rx0[k] = load16(p.x0 + 8 * i);
			if (SKIP)
				rsk[k] = load16(p.skip + 8 * i);
			if (ADD && !self)
				radd[k] = load16(p.add + 8 * i);
		}
	}

	/* phase 1: row means, rmsnorm_backward's order (two vectors per lane
	 * in flight; the sum still runs over c = lane, lane + 32, ...) */
	for (size_t r = r0 + warp; r <= r1; r += MIX_THREADS / 32) {
		const float rs = p.rstd[r];
		float dot = 0.0f;
		for (int c = lane; c < rvec; c += 64) {
			uint4 ug[2], ux[2];
#pragma unroll
			for (int q = 0; q < 2; q++)
				if (c + 32 * q < rvec) {
					ug[q] = dh4[r * rvec + c + 32 * q];
					ux[q] = xm4[r * rvec + c + 32 * q];
				}
#pragma unroll
			for (int q = 0; q < 2; q++) {
				const size_t i = r * rvec + c + 32 * q;
				if (c + 32 * q < rvec) {
					float g[8], x[8];
					unpack8(ug[q], g);
					unpack8(ux[q], x);
					dot += rms_bwd_dot8(g, x, rs);
					if (i >= base && i < end)
						s_dh[i - base] = ug[q], s_xm[i - base] = ux[q];
				}
			}
		}
		const float m = warp_sum(dot) / (float)p.D;
		if (lane == 0)
			s_row[r - r0] = make_float2(m, rs);
	}
	__syncthreads();

	/* phase 2: the elementwise chain and the scalar products */
	const float c0 = p.lam[0], c1 = p.lam[1], cw = SKIP ? p.w[0] : 0.0f;
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
#pragma unroll
	for (int k = 0; k < MIX_VPT; k++) {
		const size_t j = (size_t)k * MIX_THREADS + threadIdx.x, i = base + j;
		if (i >= p.nvec)
			break;
		const float2 mr = s_row[i / rvec - r0];
		float g[8], x[8], old[8], d[8], t[8];
		unpack8(s_dh[j], g);
		unpack8(s_xm[j], x);
		unpack8(rold[k], old);
		/* rmsnorm_backward, accumulate: d = dx + rs (g - yh m), bf16 */
		rms_bwd_out8(d, g, x, mr.y, mr.x, 1, old);
		round_store(NULL, d);
		/* mix_lambda_backward: sums, dx0 += l1 d, dr = l0 d (bf16) */
		unpack8(rres[k], x);
		unpack8(rx0[k], t);
#pragma unroll
		for (int e = 0; e < 8; e++) {
			s0 = mix_dot(s0, d[e], x[e]);
			s1 = mix_dot(s1, d[e], t[e]);
		}
		f32x8_load(p.dx0 + 8 * i, t);
#pragma unroll
		for (int e = 0; e < 8; e++)
			t[e] = mix_axpy(t[e], c1, d[e]);
		f32x8_store(p.dx0 + 8 * i, t);
#pragma unroll
		for (int e = 0; e < 8; e++)
			d[e] = mix_scale(c0, d[e]);
		round_store(NULL, d);
		/* mix_skip_backward: dskip = w dr (bf16), dr passes through */
		uint4 uds = zero;
		if (SKIP) {
			unpack8(rsk[k], x);
#pragma unroll
			for (int e = 0; e < 8; e++) {
				s2 = mix_dot(s2, d[e], x[e]);
				t[e] = mix_scale(cw, d[e]);
			}
			uds = pack8(t);
			*reinterpret_cast<uint4 *>(p.dskip + 8 * i) = uds;
		}
		/* residual_add of the next (encoder) layer: dx = dr + add */
		if (ADD) {
			unpack8(self ? uds : radd[k], t);
#pragma unroll
			for (int e = 0; e < 8; e++)
				d[e] = mix_add(d[e], t[e]);
		}
		bf16x8_store(p.dx + 8 * i, d);
	}
	__shared__ double sh[MIX_THREADS / 32][2];
	mix_block_parts<true>(s0, s1, sh, p.part_lam);
	if (SKIP) {
		__syncthreads(); /* thread 0 has read sh */
		mix_block_parts<false>(s2, 0.0f, sh, p.part_skip);
	}
}

extern "C" size_t block_input_work_bytes(int T, int D)
{
	size_t n = (size_t)(T > 0 ? T : 0) * (size_t)(D > 0 ? D : 0);
	return 2 * mix_work_bytes(n);
}

extern "C" void block_input_backward(uint16_t *dx, float *dx0, float *g_lam, uint16_t *dskip,
                                     float *g_skip, const uint16_t *dh, const uint16_t *xm,
                                     const float *rstd, const uint16_t *res, const uint16_t *x0,
                                     const float *lam, const uint16_t *skip, const float *w,
                                     const uint16_t *add, int T, int D, void *work,
                                     cudaStream_t s)
{
	check_shape(__func__, T, D);
	KREQUIRE(dx && dx0 && g_lam && dh && xm && rstd && res && x0 && lam && work,
	         "dx, dx0, g_lam, dh, xm, rstd, res, x0, lam and work must not be NULL");
	KREQUIRE(!skip == !dskip && !skip == !g_skip && !skip == !w,
	         "skip, dskip, g_skip and w go together");
	KREQUIRE(dx != dh && dx != xm && (!dskip || (dskip != dh && dskip != xm)),
	         "dh and xm are read across tiles: no output may alias them");
	const void *t[] = {dx, dx0, dskip, dh, xm, res, x0, skip, add};
	check_aligned(__func__, t, 9);
	KREQUIRE(((uintptr_t)work & 7u) == 0, "work must be 8-byte aligned");
	const size_t n = (size_t)T * D, nvec = n / 8;
	KREQUIRE(nvec / RN_TILE_VEC < 0x7fffffffu, "T D = %zu is too large for one grid", n);
	if (n == 0)
		return;
	const unsigned blocks = (unsigned)((n + MIX_TILE - 1) / MIX_TILE);
	const int rvec = D / 8;
	const size_t rows = (RN_TILE_VEC - 1 + (size_t)rvec - 1) / rvec + 1; /* per tile, at most */
	const size_t smem = 2 * RN_TILE_VEC * sizeof(uint4) + rows * sizeof(float2);
	double *part = (double *)work;
	rn_bwd p = {dx, dskip, dx0, part, part + 2 * (size_t)blocks, dh, xm, res, x0, skip, add,
	            rstd, lam, w, nvec, D};
	if (skip && add)
		resnorm_bwd_kernel<true, true><<<blocks, MIX_THREADS, smem, s>>>(p);
	else if (skip)
		resnorm_bwd_kernel<true, false><<<blocks, MIX_THREADS, smem, s>>>(p);
	else if (add)
		resnorm_bwd_kernel<false, true><<<blocks, MIX_THREADS, smem, s>>>(p);
	else
		resnorm_bwd_kernel<false, false><<<blocks, MIX_THREADS, smem, s>>>(p);
	CUDA_CHECK_LAST();
	mix_sum_kernel<<<1, MIX_SUM_THREADS, 0, s>>>(g_lam, part, blocks, 2);
	CUDA_CHECK_LAST();
	if (skip) {
		mix_sum_kernel<<<1, MIX_SUM_THREADS, 0, s>>>(g_skip, part + 2 * (size_t)blocks, blocks,
		                                             1);
		CUDA_CHECK_LAST();
	}
}
