/*
 * rmsnorm.cu - RMS norm forward and backward (see rmsnorm.cuh).
 *
 * defines: rmsnorm_forward, rmsnorm_backward
 *
 * One warp per row. Lane l owns the 8-element vectors l, l + 32, ...; with
 * NV = ceil(D / 256) <= RMS_MAX_NV the row stays in registers (the kernels
 * are instantiated for each NV), otherwise (NV = 0 template) it is read
 * twice. Row sums: each lane in vector order, then a warp butterfly.
 */
#include "rmsnorm.cuh"
#include "rmsnorm_impl.cuh"

/* Row index of x for output row t, or -1 when the gather is out of range. */
__device__ __forceinline__ long long src_row(const uint32_t *rows, int x_nrows, int t)
{
	if (!rows)
		return t;
	uint32_t r = rows[t];
	return r < (uint32_t)x_nrows ? (long long)r : -1;
}

template <int NV>
__global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_fwd_kernel(uint16_t *y, float *rstd, const uint16_t *x, const uint32_t *rows,
                   int x_nrows, int T, int D, float eps)
{
	const int t = blockIdx.x * RMS_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (t >= T) /* whole warp */
		return;
	const int nvec = D / 8;
	uint16_t *yr = y + (size_t)t * D;
	const long long r = src_row(rows, x_nrows, t);
	if (r < 0) {
		nan_row(yr, nvec, lane);
		if (rstd && lane == 0)
			rstd[t] = __int_as_float(0x7fc00000);
		return;
	}
	const uint16_t *xr = x + (size_t)r * D;
	float ss = 0.0f;
	if (NV > 0) {
		float v[NV > 0 ? NV : 1][8];
#pragma unroll
		for (int k = 0; k < NV; k++) {
			int c = lane + 32 * k;
			if (c < nvec) {
				bf16x8_load(xr + 8 * c, v[k]);
			} else {
#pragma unroll
				for (int e = 0; e < 8; e++)
					v[k][e] = 0.0f;
			}
		}
#pragma unroll
		for (int k = 0; k < NV; k++)
			ss = rms_sumsq8(ss, v[k]);
		ss = warp_sum(ss);
		const float rs = rms_scale(ss, D, eps);
#pragma unroll
		for (int k = 0; k < NV; k++) {
			int c = lane + 32 * k;
			if (c < nvec) {
#pragma unroll
				for (int e = 0; e < 8; e++)
					v[k][e] = __fmul_rn(v[k][e], rs);
				bf16x8_store(yr + 8 * c, v[k]);
			}
		}
		if (rstd && lane == 0)
			rstd[t] = rs;
	} else {
		float v[8];
		for (int c = lane; c < nvec; c += 32) {
			bf16x8_load(xr + 8 * c, v);
			ss = rms_sumsq8(ss, v);
		}
		ss = warp_sum(ss);
		const float rs = rms_scale(ss, D, eps);
		for (int c = lane; c < nvec; c += 32) {
			bf16x8_load(xr + 8 * c, v);
#pragma unroll
			for (int e = 0; e < 8; e++)
				v[e] = __fmul_rn(v[e], rs);
			bf16x8_store(yr + 8 * c, v);
		}
		if (rstd && lane == 0)
			rstd[t] = rs;
	}
}

/* One vector of the backward, from raw bf16 dy, x (and old dx), fp32 dy2:
 * g = dy (+ dy2), yh = x rs. Pass 1 (m unused) returns sum g yh; pass 2
 * stores rs (g - yh m) (+ old dx). */
template <bool HAS_DY2>
__device__ __forceinline__ float bwd_vec(const uint4 &rdy, const float *g2, const uint4 &rx,
                                         float rs)
{
	float g[8], x[8];
	unpack8(rdy, g);
	unpack8(rx, x);
	if (HAS_DY2)
#pragma unroll
		for (int e = 0; e < 8; e++)
			g[e] = __fadd_rn(g[e], g2[e]);
	return rms_bwd_dot8(g, x, rs);
}

template <bool HAS_DY2>
__device__ __forceinline__ void bwd_store(uint16_t *dxp, int acc, const uint4 &rold,
                                          const uint4 &rdy, const float *g2, const uint4 &rx,
                                          float rs, float m)
{
	float g[8], x[8], old[8], o[8];
	unpack8(rdy, g);
	unpack8(rx, x);
	unpack8(rold, old);
	if (HAS_DY2)
#pragma unroll
		for (int e = 0; e < 8; e++)
			g[e] = __fadd_rn(g[e], g2[e]);
	rms_bwd_out8(o, g, x, rs, m, acc, old);
	bf16x8_store(dxp, o);
}

/* The row's vectors stay in registers as raw bf16 (uint4) when NV > 0. */
template <int NV, bool HAS_DY2>
__global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_bwd_kernel(uint16_t *dx, int acc, const uint16_t *dy, const float *dy2, const uint16_t *x,
                   const uint32_t *rows, int x_nrows, const float *rstd, int T, int D)
{
	const int t = blockIdx.x * RMS_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (t >= T)
		return;
	const int nvec = D / 8;
	const size_t off = (size_t)t * D;
	const long long r = src_row(rows, x_nrows, t);
	if (r < 0) {
		nan_row(dx + off, nvec, lane);
		return;
	}
	const uint16_t *xr = x + (size_t)r * D;
	const float rs = rstd[t];
	float dot = 0.0f;
	const uint4 zero = make_uint4(0, 0, 0, 0);
	if (NV > 0) {
		constexpr int N = NV > 0 ? NV : 1;
		uint4 rdy[N], rx[N], rold[N];
		float g2[HAS_DY2 ? N : 1][8];
#pragma unroll
		for (int k = 0; k < N; k++) {
			int c = lane + 32 * k;
			rdy[k] = rx[k] = rold[k] = zero;
			if (c < nvec) {
				rdy[k] = reinterpret_cast<const uint4 *>(dy + off)[c];
				rx[k] = reinterpret_cast<const uint4 *>(xr)[c];
				if (acc)
					rold[k] = reinterpret_cast<const uint4 *>(dx + off)[c];
				if (HAS_DY2)
					f32x8_load(dy2 + off + 8 * c, g2[HAS_DY2 ? k : 0]);
			} else if (HAS_DY2) {
#pragma unroll
				for (int e = 0; e < 8; e++)
					g2[HAS_DY2 ? k : 0][e] = 0.0f;
			}
		}
#pragma unroll
		for (int k = 0; k < N; k++)
			dot += bwd_vec<HAS_DY2>(rdy[k], g2[HAS_DY2 ? k : 0], rx[k], rs);
		const float m = warp_sum(dot) / (float)D;
#pragma unroll
		for (int k = 0; k < N; k++) {
			int c = lane + 32 * k;
			if (c < nvec)
				bwd_store<HAS_DY2>(dx + off + 8 * c, acc, rold[k], rdy[k],
				                   g2[HAS_DY2 ? k : 0], rx[k], rs, m);
		}
	} else {
		float g2[8];
		for (int c = lane; c < nvec; c += 32) {
			if (HAS_DY2)
				f32x8_load(dy2 + off + 8 * c, g2);
			dot += bwd_vec<HAS_DY2>(reinterpret_cast<const uint4 *>(dy + off)[c], g2,
			                        reinterpret_cast<const uint4 *>(xr)[c], rs);
		}
		const float m = warp_sum(dot) / (float)D;
		for (int c = lane; c < nvec; c += 32) {
			if (HAS_DY2)
				f32x8_load(dy2 + off + 8 * c, g2);
			uint4 rold = acc ? reinterpret_cast<const uint4 *>(dx + off)[c] : zero;
			bwd_store<HAS_DY2>(dx + off + 8 * c, acc, rold,
			                   reinterpret_cast<const uint4 *>(dy + off)[c], g2,
			                   reinterpret_cast<const uint4 *>(xr)[c], rs, m);
		}
	}
}

/* ------------------------------------------------------------------------
 * Launchers
 */
static void rms_check(const char *fn, int T, int D, const uint32_t *rows, int x_nrows)
{
	KREQUIRE_IN(fn, T >= 0 && D > 0 && D % 8 == 0,
	            "bad shape T = %d, D = %d (D > 0, a multiple of 8)", T, D);
	KREQUIRE_IN(fn, !rows || x_nrows >= 0, "x_nrows = %d", x_nrows);
}

extern "C" void rmsnorm_forward(uint16_t *y, float *rstd, const uint16_t *x, const uint32_t *rows,
                                int x_nrows, int T, int D, float eps, cudaStream_t s)
{
	rms_check(__func__, T, D, rows, x_nrows);
	KREQUIRE(is_aligned16(y) && is_aligned16(x), "y and x must be 16-byte aligned");
	if (T == 0)
		return;
	unsigned blocks = (unsigned)((T + RMS_ROWS - 1) / RMS_ROWS);
#define FWD(N) rmsnorm_fwd_kernel<N><<<blocks, RMS_THREADS, 0, s>>>(y, rstd, x, rows, x_nrows, T, D, eps)
	RMS_SWITCH(rms_nv(D), FWD);
#undef FWD
	CUDA_CHECK_LAST();
}

extern "C" void rmsnorm_backward(uint16_t *dx, int accumulate, const uint16_t *dy,
                                 const float *dy2, const uint16_t *x, const uint32_t *rows,
                                 int x_nrows, const float *rstd, int T, int D, cudaStream_t s)
{
	rms_check(__func__, T, D, rows, x_nrows);
	KREQUIRE(is_aligned16(dx) && is_aligned16(dy) && is_aligned16(x) &&
	                 (!dy2 || is_aligned16(dy2)),
	         "dx, dy, dy2 and x must be 16-byte aligned");
	KREQUIRE(rstd, "rstd must not be NULL");
	if (T == 0)
		return;
	unsigned blocks = (unsigned)((T + RMS_ROWS - 1) / RMS_ROWS);
	const int acc = accumulate != 0;
#define BWD(N) rmsnorm_bwd_kernel<N, true><<<blocks, RMS_THREADS, 0, s>>>(dx, acc, dy, dy2, x, rows, x_nrows, rstd, T, D)
#define BWD_PLAIN(N) rmsnorm_bwd_kernel<N, false><<<blocks, RMS_THREADS, 0, s>>>(dx, acc, dy, NULL, x, rows, x_nrows, rstd, T, D)
	if (dy2)
		RMS_SWITCH(rms_nv(D), BWD);
	else
		RMS_SWITCH(rms_nv(D), BWD_PLAIN);
#undef BWD
#undef BWD_PLAIN
	CUDA_CHECK_LAST();
}
