/*
 * resnorm.cu - the residual stream fused with the RMS norms (see
 * resnorm.cuh).
 *
 * defines: residual_rmsnorm_forward, block_input_forward
 *
 * Forward: rmsnorm.cu's layout (one warp per row, lane l owns the 8-vectors
 * l, l + 32, ...; rows of up to RMS_MAX_NV vectors per lane in registers,
 * longer ones in two passes). Per vector the chain sum, skip add and
 * lambda mix run in fp32 with a bf16 rounding after each (the value each
 * unfused launcher would have stored and the next one loaded back); the
 * last of them is the norm's input, its squares summed in the same order
 * as rmsnorm_forward's. The two-pass path reads that stored input back.
 */
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
