/*
 * qk_rotary.cu - fused QK-norm + half-truncated rotary, forward and
 * backward (see qk_rotary.cuh).
 *
 * defines: qk_norm_rotary_forward, qk_norm_rotary_backward
 *
 * Work item = one (tensor, t, h) head of HD elements, owned by a group of
 * G = HD/16 consecutive lanes of a warp; lane l of the group holds the
 * rotation pairs j = 8l..8l+7: elements j (x1) and j + HD/2 (x2), two
 * 16-byte accesses each, so a pair meets in one thread. Items run q first
 * (tensor 0), then k. Lanes past the last item still take part in the
 * group sum (they load zeros and store nothing). The rotation tables are
 * loaded with the head, before the sum. (Two lanes per pair, one 16-byte
 * access each and a shuffle to meet, ran at about half the memory
 * bandwidth on an H200: a long chain of dependent steps per thread.)
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

/* Item of this thread: tensor, token, head, and its lane in the head's
 * group of G; false past the end. */
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

/* The rotation's cos and sin for pairs j0 .. j0 + 7, zero from nf on (no
 * rotation there). VEC: nf is a multiple of 8 and the tables 16-byte
 * aligned (so are j0's rows and offsets): two 16-byte loads per table, or
 * none when the thread has no rotated pair. */
template <bool VEC>
__device__ __forceinline__ void qk_tables(const qk_args &a, int t, int j0, float c[8], float s[8])
{
	if (VEC) {
		if (j0 < a.nf) {
			const float4 *cs = reinterpret_cast<const float4 *>(a.cos_t + (size_t)t * a.nf + j0);
			const float4 *sn = reinterpret_cast<const float4 *>(a.sin_t + (size_t)t * a.nf + j0);
			const float4 c0 = cs[0], c1 = cs[1], s0 = sn[0], s1 = sn[1];
			c[0] = c0.x, c[1] = c0.y, c[2] = c0.z, c[3] = c0.w;
			c[4] = c1.x, c[5] = c1.y, c[6] = c1.z, c[7] = c1.w;
			s[0] = s0.x, s[1] = s0.y, s[2] = s0.z, s[3] = s0.w;
			s[4] = s1.x, s[5] = s1.y, s[6] = s1.z, s[7] = s1.w;
		} else {
#pragma unroll
			for (int e = 0; e < 8; e++)
				c[e] = s[e] = 0.0f;
		}
	} else {
#pragma unroll
		for (int e = 0; e < 8; e++) {
			const bool in = j0 + e < a.nf;
			c[e] = in ? a.cos_t[(size_t)t * a.nf + j0 + e] : 0.0f;
			s[e] = in ? a.sin_t[(size_t)t * a.nf + j0 + e] : 0.0f;
		}
	}
}

template <int HD, bool VEC>
__global__ void __launch_bounds__(QK_THREADS) qk_fwd_kernel(const qk_args a)
{
	constexpr int G = HD / 16;
	int which, t, h, l;
	const bool valid = qk_item<G>(a, which, t, h, l);
	float x1[8], x2[8], c[8], s[8];
#pragma unroll
	for (int e = 0; e < 8; e++)
		x1[e] = x2[e] = 0.0f;
	const int j0 = 8 * l;
	if (valid) {
		const uint16_t *in = a.in[which] + t * a.ld_in + h * HD + j0;
		bf16x8_load(in, x1);
		bf16x8_load(in + HD / 2, x2);
		qk_tables<VEC>(a, t, j0, c, s);
	}
	float ss = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++)
		ss += x1[e] * x1[e];
#pragma unroll
	for (int e = 0; e < 8; e++)
		ss += x2[e] * x2[e];
	ss = group_sum<G>(ss);
	const float rs = 1.0f / sqrtf(ss / (float)HD + a.eps);
	if (!valid)
		return;
#pragma unroll
	for (int e = 0; e < 8; e++) {
		const float v1 = x1[e] * rs, v2 = x2[e] * rs;
		if (j0 + e < a.nf) {
			x1[e] = v1 * c[e] + v2 * s[e];
			x2[e] = -v1 * s[e] + v2 * c[e];
		} else {
			x1[e] = v1, x2[e] = v2;
		}
	}
	uint16_t *out = a.out[which] + t * a.ld_out + h * HD + j0;
	bf16x8_store(out, x1);
	bf16x8_store(out + HD / 2, x2);
	if (l == 0 && a.rstd_out[which])
		a.rstd_out[which][(size_t)t * a.H + h] = rs;
}

template <int HD, bool VEC>
__global__ void __launch_bounds__(QK_THREADS) qk_bwd_kernel(const qk_args a)
{
	constexpr int G = HD / 16;
	int which, t, h, l;
	const bool valid = qk_item<G>(a, which, t, h, l);
	float d1[8], d2[8], x1[8], x2[8], c[8], s[8];
	float rs = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++)
		d1[e] = d2[e] = x1[e] = x2[e] = 0.0f;
	const int j0 = 8 * l;
	if (valid) {
		const uint16_t *din = a.in[which] + t * a.ld_in + h * HD + j0;
		const uint16_t *xin = a.x[which] + t * a.ld_x + h * HD + j0;
		bf16x8_load(din, d1);
		bf16x8_load(din + HD / 2, d2);
		bf16x8_load(xin, x1);
		bf16x8_load(xin + HD / 2, x2);
		rs = a.rstd[which][(size_t)t * a.H + h];
		qk_tables<VEC>(a, t, j0, c, s);
#pragma unroll
		for (int e = 0; e < 8; e++)
			if (j0 + e < a.nf) {
				const float g1 = d1[e] * c[e] - d2[e] * s[e];
				const float g2 = d1[e] * s[e] + d2[e] * c[e];
				d1[e] = g1, d2[e] = g2;
			}
	}
	float dot = 0.0f;
#pragma unroll
	for (int e = 0; e < 8; e++) {
		x1[e] *= rs;
		dot += d1[e] * x1[e];
	}
#pragma unroll
	for (int e = 0; e < 8; e++) {
		x2[e] *= rs;
		dot += d2[e] * x2[e];
	}
	const float m = group_sum<G>(dot) / (float)HD;
	if (!valid)
		return;
#pragma unroll
	for (int e = 0; e < 8; e++) {
		d1[e] = rs * (d1[e] - x1[e] * m);
		d2[e] = rs * (d2[e] - x2[e] * m);
	}
	uint16_t *out = a.out[which] + t * a.ld_out + h * HD + j0;
	bf16x8_store(out, d1);
	bf16x8_store(out + HD / 2, d2);
}

/* ------------------------------------------------------------------------
 * Launchers
 */
#define QK_DISPATCH_V(KERNEL, HD, VEC, args)                                             \
	do {                                                                             \
		switch (HD) {                                                            \
		case 16: KERNEL<16, VEC><<<blocks, QK_THREADS, 0, s>>>(args); break;    \
		case 32: KERNEL<32, VEC><<<blocks, QK_THREADS, 0, s>>>(args); break;    \
		case 64: KERNEL<64, VEC><<<blocks, QK_THREADS, 0, s>>>(args); break;    \
		case 128: KERNEL<128, VEC><<<blocks, QK_THREADS, 0, s>>>(args); break;  \
		default: KERNEL<256, VEC><<<blocks, QK_THREADS, 0, s>>>(args); break;   \
		}                                                                        \
	} while (0)
#define QK_DISPATCH(KERNEL, HD, args)                                                    \
	do {                                                                             \
		if ((args).nf % 8 == 0 && is_aligned16((args).cos_t) &&                 \
		    is_aligned16((args).sin_t))                                          \
			QK_DISPATCH_V(KERNEL, HD, true, args);                           \
		else                                                                     \
			QK_DISPATCH_V(KERNEL, HD, false, args);                          \
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
	long long threads = (long long)a.ntensors * a.T * a.H * (hd / 16);
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
