/*
 * qk_rotary.cu - fused QK-norm + half-truncated rotary, forward and
 * backward (see qk_rotary.cuh).
 *
 * defines: qk_norm_rotary_forward, qk_norm_rotary_backward
 *
 * Work item = one (tensor, t, h) head of HD elements, owned by a group of
 * G = HD/8 consecutive lanes of a warp; lane l of the group holds elements
 * 8l..8l+7, so lanes l < G/2 hold the first half (x1) and lane l ^ G/2 the
 * matching second half (x2). Items run q first (tensor 0), then k. Lanes
 * past the last item still take part in the shuffles (they load zeros and
 * store nothing).
 */
#include "elem_common.cuh"
#include "qk_rotary.cuh"

#define QK_THREADS 256

struct qk_args {
	uint16_t *out[2];      /* forward: q_out, k_out; backward: dq, dk */
	float *rstd_out[2];    /* forward only */
	const uint16_t *in[2]; /* forward: q, k; backward: dq_out, dk_out */
	const uint16_t *x[2];  /* backward: q, k (forward inputs) */
	const float *rstd[2];  /* backward: saved rstd */
	const float *cos_t, *sin_t;
	long long ld_out, ld_in, ld_x;
	int T, H, nf, ntensors;
	float eps;
};

/* Item of this lane: tensor, token, head; false past the end. */
template <int G>
__device__ __forceinline__ bool qk_item(const qk_args &a, int &which, int &t, int &h, int &l)
{
	const long long gid = (long long)blockIdx.x * QK_THREADS + threadIdx.x;
	const long long item = gid / G, per = (long long)a.T * a.H;
	l = (int)(gid % G);
	which = t = h = 0;
	if (item >= per * a.ntensors)
		return false;
	which = item >= per;
	const int rem = (int)(item - (which ? per : 0)); /* < T H < 2^31 (launcher) */
	t = rem / a.H;
	h = rem - t * a.H;
	return true;
}

template <int HD>
__global__ void __launch_bounds__(QK_THREADS) qk_fwd_kernel(const qk_args a)
{
	constexpr int G = HD / 8, HALF = G / 2;
	int which, t, h, l;
	const bool valid = qk_item<G>(a, which, t, h, l);
	float v[8];
#pragma unroll
	for (int e = 0; e < 8; e++)
		v[e] = 0.0f;
	if (valid)
		bf16x8_load(a.in[which] + t * a.ld_in + h * HD + 8 * l, v);
	float ss = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++)
		ss += v[e] * v[e];
	ss = group_sum<G>(ss);
	const float rs = 1.0f / sqrtf(ss / (float)HD + a.eps);
#pragma unroll
	for (int e = 0; e < 8; e++)
		v[e] *= rs;
	float p[8];
#pragma unroll
	for (int e = 0; e < 8; e++)
		p[e] = __shfl_xor_sync(0xffffffffu, v[e], HALF);
	if (!valid)
		return;
	const bool first = l < HALF;
	const int j0 = 8 * (first ? l : l - HALF);
	const float *cs = a.cos_t + (size_t)t * a.nf, *sn = a.sin_t + (size_t)t * a.nf;
#pragma unroll
	for (int e = 0; e < 8; e++) {
		const int j = j0 + e;
		if (j < a.nf) {
			const float c = cs[j], s = sn[j];
			v[e] = first ? v[e] * c + p[e] * s : -p[e] * s + v[e] * c;
		}
	}
	bf16x8_store(a.out[which] + t * a.ld_out + h * HD + 8 * l, v);
	if (l == 0 && a.rstd_out[which])
		a.rstd_out[which][(size_t)t * a.H + h] = rs;
}

template <int HD>
__global__ void __launch_bounds__(QK_THREADS) qk_bwd_kernel(const qk_args a)
{
	constexpr int G = HD / 8, HALF = G / 2;
	int which, t, h, l;
	const bool valid = qk_item<G>(a, which, t, h, l);
	float d[8], xh[8];
	float rs = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++)
		d[e] = xh[e] = 0.0f;
	if (valid) {
		bf16x8_load(a.in[which] + t * a.ld_in + h * HD + 8 * l, d);
		bf16x8_load(a.x[which] + t * a.ld_x + h * HD + 8 * l, xh);
		rs = a.rstd[which][(size_t)t * a.H + h];
	}
	float p[8];
#pragma unroll
	for (int e = 0; e < 8; e++)
		p[e] = __shfl_xor_sync(0xffffffffu, d[e], HALF);
	const bool first = l < HALF;
	const int j0 = 8 * (first ? l : l - HALF);
	if (valid) {
		const float *cs = a.cos_t + (size_t)t * a.nf, *sn = a.sin_t + (size_t)t * a.nf;
#pragma unroll
		for (int e = 0; e < 8; e++) {
			const int j = j0 + e;
			if (j < a.nf) {
				const float c = cs[j], s = sn[j];
				d[e] = first ? d[e] * c - p[e] * s : p[e] * s + d[e] * c;
			}
		}
	}
	float dot = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++) {
		xh[e] *= rs;
		dot += d[e] * xh[e];
	}
	const float m = group_sum<G>(dot) / (float)HD;
	if (!valid)
		return;
#pragma unroll
	for (int e = 0; e < 8; e++)
		d[e] = rs * (d[e] - xh[e] * m);
	bf16x8_store(a.out[which] + t * a.ld_out + h * HD + 8 * l, d);
}

/* ------------------------------------------------------------------------
 * Launchers
 */
#define QK_DISPATCH(KERNEL, HD, args)                                                    \
	do {                                                                             \
		switch (HD) {                                                            \
		case 16: KERNEL<16><<<blocks, QK_THREADS, 0, s>>>(args); break;         \
		case 32: KERNEL<32><<<blocks, QK_THREADS, 0, s>>>(args); break;         \
		case 64: KERNEL<64><<<blocks, QK_THREADS, 0, s>>>(args); break;         \
		case 128: KERNEL<128><<<blocks, QK_THREADS, 0, s>>>(args); break;       \
		default: KERNEL<256><<<blocks, QK_THREADS, 0, s>>>(args); break;        \
		}                                                                        \
	} while (0)

static void qk_check(const char *fn, int T, int H, int hd, int nf, const float *cos_t,
                     const float *sin_t)
{
	if (!(T >= 0 && H > 0 && (hd == 16 || hd == 32 || hd == 64 || hd == 128 || hd == 256) &&
	      nf >= 0 && nf <= hd / 2 && (nf == 0 || (cos_t && sin_t)))) {
		fprintf(stderr,
		        "%s: %s: bad shape T = %d, H = %d, hd = %d, nf = %d (hd in 16..256, a power "
		        "of two; 0 <= nf <= hd/2; tables needed when nf > 0)\n",
		        progname, fn, T, H, hd, nf);
		exit(1);
	}
}

static void qk_check_ptr(const char *fn, const char *what, const void *p, long long ld, int H,
                         int hd)
{
	if (!p)
		return;
	if (!is_aligned16(p) || ld % 8 != 0 || ld < (long long)H * hd) {
		fprintf(stderr,
		        "%s: %s: %s: pointer not 16-byte aligned or ld = %lld not a multiple of 8 "
		        ">= H * hd = %d\n",
		        progname, fn, what, ld, H * hd);
		exit(1);
	}
}

static unsigned qk_blocks(const qk_args &a, int hd)
{
	KREQUIRE((long long)a.T * a.H < 0x7fffffffLL, "T * H = %lld too large",
	         (long long)a.T * a.H);
	long long threads = (long long)a.ntensors * a.T * a.H * (hd / 8);
	long long blocks = (threads + QK_THREADS - 1) / QK_THREADS;
	KREQUIRE(blocks < 0x7fffffffLL, "grid too large");
	return (unsigned)blocks;
}

extern "C" void qk_norm_rotary_forward(uint16_t *q_out, uint16_t *k_out, float *q_rstd,
                                       float *k_rstd, const uint16_t *q, const uint16_t *k,
                                       int ld_in, int ld_out, const float *cos_t,
                                       const float *sin_t, int T, int H, int hd, int nf,
                                       float eps, cudaStream_t s)
{
	qk_check(__func__, T, H, hd, nf, cos_t, sin_t);
	KREQUIRE(q && q_out && (!k || k_out), "q, q_out (and k_out with k) must not be NULL");
	qk_check_ptr(__func__, "q", q, ld_in, H, hd);
	qk_check_ptr(__func__, "k", k, ld_in, H, hd);
	qk_check_ptr(__func__, "q_out", q_out, ld_out, H, hd);
	qk_check_ptr(__func__, "k_out", k ? k_out : NULL, ld_out, H, hd);
	qk_args a = {};
	a.out[0] = q_out, a.out[1] = k_out;
	a.rstd_out[0] = q_rstd, a.rstd_out[1] = k_rstd;
	a.in[0] = q, a.in[1] = k;
	a.cos_t = cos_t, a.sin_t = sin_t;
	a.ld_out = ld_out, a.ld_in = ld_in;
	a.T = T, a.H = H, a.nf = nf, a.ntensors = k ? 2 : 1;
	a.eps = eps;
	if (T == 0)
		return;
	unsigned blocks = qk_blocks(a, hd);
	QK_DISPATCH(qk_fwd_kernel, hd, a);
	CUDA_CHECK_LAST();
}

extern "C" void qk_norm_rotary_backward(uint16_t *dq, uint16_t *dk, const uint16_t *dq_out,
                                        const uint16_t *dk_out, const uint16_t *q,
                                        const uint16_t *k, const float *q_rstd,
                                        const float *k_rstd, int ld_dx, int ld_dout, int ld_in,
                                        const float *cos_t, const float *sin_t, int T, int H,
                                        int hd, int nf, cudaStream_t s)
{
	qk_check(__func__, T, H, hd, nf, cos_t, sin_t);
	KREQUIRE(dq && dq_out && q && q_rstd, "dq, dq_out, q and q_rstd must not be NULL");
	KREQUIRE(!dk || (dk_out && k && k_rstd), "with dk, dk_out, k and k_rstd are needed");
	qk_check_ptr(__func__, "dq", dq, ld_dx, H, hd);
	qk_check_ptr(__func__, "dk", dk, ld_dx, H, hd);
	qk_check_ptr(__func__, "dq_out", dq_out, ld_dout, H, hd);
	qk_check_ptr(__func__, "dk_out", dk ? dk_out : NULL, ld_dout, H, hd);
	qk_check_ptr(__func__, "q", q, ld_in, H, hd);
	qk_check_ptr(__func__, "k", dk ? k : NULL, ld_in, H, hd);
	qk_args a = {};
	a.out[0] = dq, a.out[1] = dk;
	a.in[0] = dq_out, a.in[1] = dk_out;
	a.x[0] = q, a.x[1] = k;
	a.rstd[0] = q_rstd, a.rstd[1] = k_rstd;
	a.cos_t = cos_t, a.sin_t = sin_t;
	a.ld_out = ld_dx, a.ld_in = ld_dout, a.ld_x = ld_in;
	a.T = T, a.H = H, a.nf = nf, a.ntensors = dk ? 2 : 1;
	if (T == 0)
		return;
	unsigned blocks = qk_blocks(a, hd);
	QK_DISPATCH(qk_bwd_kernel, hd, a);
	CUDA_CHECK_LAST();
}
