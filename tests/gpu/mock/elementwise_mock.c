/*
 * elementwise_mock.c - host emulation of the CUDA runtime calls and of the
 * launchers of kernels/{embedding,rmsnorm,qk_rotary,relu2,mix,resnorm}.cuh, so that
 * tests/gpu/gpu_elementwise.c (its references, tolerances, layouts,
 * poisoning and determinism checks) can run on a machine without a GPU.
 * "Device" memory is host memory; each launcher runs the kernel's
 * algorithm on the CPU in the kernel's fp32 order (per-lane partial sums,
 * butterflies, FMAs, the embedding backward's windows and partials); the
 * fused launchers of resnorm.cuh run the unfused ones in sequence, which is
 * their contract. It says nothing about the CUDA code itself: only a GPU
 * run does.
 * Build and run: tests/gpu/mock/run-elementwise.sh (after make).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include "util.h"
#include "embedding.cuh"
#include "mix.cuh"
#include "qk_rotary.cuh"
#include "relu2.cuh"
#include "resnorm.cuh"
#include "rmsnorm.cuh"

cudaError_t cudaMalloc(void **p, size_t n)
{
	*p = aligned_alloc(256, (n + 255) / 256 * 256);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p)
{
	free(p);
	return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k)
{
	memmove(d, s, n);
	return cudaSuccess;
}
cudaError_t cudaMemset(void *d, int v, size_t n)
{
	memset(d, v, n);
	return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
	return cudaSuccess;
}
cudaError_t cudaGetLastError(void)
{
	return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e)
{
	return "mock error";
}
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
	*e = (cudaEvent_t)malloc(8);
	return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
	return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	*ms = 1.0f;
	return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	free(e);
	return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
	*d = 0;
	return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
	memset(p, 0, sizeof *p);
	strcpy(p->name, "mock");
	p->multiProcessorCount = 1;
	return cudaSuccess;
}

#define REQ(c, ...)                                                                                \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s: mock: ", progname);                                   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)
static float B(uint16_t h)
{
	return bf16_to_f32(h);
}
static uint16_t R(float f)
{
	return f32_to_bf16(f);
}
static int al(const void *p)
{
	return ((uintptr_t)p & 15) == 0;
}
static float bfly(float *v, int n)
{
	float t[32];
	for (int o = n / 2; o; o >>= 1) {
		for (int i = 0; i < n; i++)
			t[i] = v[i] + v[i ^ o];
		memcpy(v, t, sizeof(float) * n);
	}
	return v[0];
}

void relu2_forward(uint16_t *u, const uint16_t *x, size_t n, cudaStream_t s)
{
	REQ(n % 8 == 0 && al(u) && al(x), "relu2 args");
	for (size_t i = 0; i < n; i++) {
		float v = B(x[i]);
		float r = v > 0 ? v : 0;
		u[i] = R(r * r);
	}
}
void relu2_backward(uint16_t *dx, const uint16_t *dy, const uint16_t *x, size_t n, cudaStream_t s)
{
	REQ(n % 8 == 0, "relu2 args");
	for (size_t i = 0; i < n; i++) {
		float v = B(x[i]), g = B(dy[i]);
		dx[i] = R(v > 0 ? g * 2.0f * v : 0.0f);
	}
}

static void chk(size_t n, const void *a, const void *b, const void *c)
{
	REQ(n % 8 == 0 && al(a) && al(b) && (!c || al(c)), "mix args");
}
void mix_lambda_forward(uint16_t *o, const uint16_t *x, const uint16_t *x0, const float *l,
                        size_t n, cudaStream_t s)
{
	chk(n, o, x, x0);
	for (size_t i = 0; i < n; i++)
		o[i] = R(fmaf(l[0], B(x[i]), l[1] * B(x0[i])));
}
void mix_value_forward(uint16_t *o, const uint16_t *v, const uint16_t *ve, const float *a, size_t n,
                       cudaStream_t s)
{
	chk(n, o, v, ve);
	for (size_t i = 0; i < n; i++)
		o[i] = R(ve ? fmaf(a[0], B(v[i]), a[1] * B(ve[i])) : a[0] * B(v[i]));
}
void mix_skip_forward(uint16_t *o, const uint16_t *x, const uint16_t *sk, const float *w, size_t n,
                      cudaStream_t s)
{
	chk(n, o, x, sk);
	for (size_t i = 0; i < n; i++)
		o[i] = R(fmaf(w[0], B(sk[i]), B(x[i])));
}
void residual_add(uint16_t *o, const uint16_t *x, const uint16_t *y, size_t n, cudaStream_t s)
{
	chk(n, o, x, y);
	for (size_t i = 0; i < n; i++)
		o[i] = R(B(x[i]) + B(y[i]));
}
void cast_f32_to_bf16(uint16_t *o, const float *in, size_t n, cudaStream_t s)
{
	chk(n, o, in, NULL);
	for (size_t i = 0; i < n; i++)
		o[i] = R(in[i]);
}
size_t mix_work_bytes(size_t n)
{
	size_t b = (n + 8191) / 8192;
	return 16 * (b ? b : 1);
}
static void mixb(uint16_t *dA, float *dB, float *g, int nk, const uint16_t *dy, const uint16_t *A,
                 const uint16_t *Bv, const float *c, size_t n, void *work)
{
	chk(n, dA, dy, A);
	size_t nvec = n / 8, blocks = (n + 8191) / 8192;
	double *part = work;
	double tot[2] = {0, 0};
	for (size_t b = 0; b < blocks; b++) {
		double bs[2] = {0, 0};
		for (int tid = 0; tid < 256; tid++) {
			float s0 = 0, s1 = 0;
			for (int k = 0; k < 4; k++) {
				size_t v = b * 1024 + (size_t)k * 256 + tid;
				if (v >= nvec)
					break;
				for (int e = 0; e < 8; e++) {
					size_t i = 8 * v + e;
					float gg = B(dy[i]);
					s0 = fmaf(gg, B(A[i]), s0);
					if (Bv)
						s1 = fmaf(gg, B(Bv[i]), s1);
					if (dB)
						dB[i] = fmaf(c[1], gg, dB[i]);
					dA[i] = R(c[0] * gg);
				}
			}
			bs[0] += s0, bs[1] += s1;
		}
		part[2 * b] = bs[0], part[2 * b + 1] = bs[1];
		tot[0] += bs[0], tot[1] += bs[1];
	}
	for (int k = 0; k < nk; k++)
		g[k] = (float)((double)g[k] + tot[k]);
}
void mix_lambda_backward(uint16_t *dx, float *dx0, float *g, const uint16_t *dout,
                         const uint16_t *x, const uint16_t *x0, const float *l, size_t n,
                         void *work, cudaStream_t s)
{
	mixb(dx, dx0, g, 2, dout, x, x0, l, n, work);
}
void mix_value_backward(uint16_t *dv_raw, float *g, const uint16_t *dv, const uint16_t *v_raw,
                        const uint16_t *ve, const float *a, size_t n, void *work, cudaStream_t s)
{
	mixb(dv_raw, NULL, g, ve ? 2 : 1, dv, v_raw, ve, a, n, work);
}
void mix_skip_backward(uint16_t *dskip, float *g, const uint16_t *dx, const uint16_t *skip,
                       const float *w, size_t n, void *work, cudaStream_t s)
{
	mixb(dskip, NULL, g, 1, dx, skip, NULL, w, n, work);
}

void rmsnorm_forward(uint16_t *y, float *rstd, const uint16_t *x, const uint32_t *rows, int x_nrows,
                     int T, int D, float eps, cudaStream_t s)
{
	REQ(T >= 0 && D > 0 && D % 8 == 0, "rmsnorm_forward: bad shape T = %d, D = %d", T, D);
	int nvec = D / 8;
	float *row = malloc(sizeof(float) * D);
	for (int t = 0; t < T; t++) {
		long long r = rows ? (rows[t] < (uint32_t)x_nrows ? (long long)rows[t] : -1) : t;
		if (r < 0) {
			for (int i = 0; i < D; i++)
				y[(size_t)t * D + i] = 0x7fc0;
			if (rstd)
				rstd[t] = NAN;
			continue;
		}
		float lane[32] = {0};
		for (int i = 0; i < D; i++)
			row[i] = B(x[(size_t)r * D + i]);
		for (int l = 0; l < 32; l++)
			for (int c = l; c < nvec; c += 32)
				for (int e = 0; e < 8; e++)
					lane[l] = fmaf(row[8 * c + e], row[8 * c + e], lane[l]);
		float ss = bfly(lane, 32), rs = 1.0f / sqrtf(ss / (float)D + eps);
		for (int i = 0; i < D; i++)
			y[(size_t)t * D + i] = R(row[i] * rs);
		if (rstd)
			rstd[t] = rs;
	}
	free(row);
}
void rmsnorm_backward(uint16_t *dx, int acc, const uint16_t *dy, const float *dy2,
                      const uint16_t *x, const uint32_t *rows, int x_nrows, const float *rstd,
                      int T, int D, cudaStream_t s)
{
	REQ(T >= 0 && D > 0 && D % 8 == 0, "rmsnorm_backward: bad shape");
	int nvec = D / 8;
	float *g = malloc(sizeof(float) * D), *yh = malloc(sizeof(float) * D);
	for (int t = 0; t < T; t++) {
		size_t off = (size_t)t * D;
		long long r = rows ? (rows[t] < (uint32_t)x_nrows ? (long long)rows[t] : -1) : t;
		if (r < 0) {
			for (int i = 0; i < D; i++)
				dx[off + i] = 0x7fc0;
			continue;
		}
		float rs = rstd[t], lane[32] = {0};
		for (int i = 0; i < D; i++) {
			g[i] = B(dy[off + i]);
			if (dy2)
				g[i] += dy2[off + i];
			yh[i] = B(x[(size_t)r * D + i]) * rs;
		}
		for (int l = 0; l < 32; l++)
			for (int c = l; c < nvec; c += 32) { /* per-vector partials, added */
				float p = 0;
				for (int e = 0; e < 8; e++)
					p = fmaf(yh[8 * c + e], g[8 * c + e], p);
				lane[l] += p;
			}
		float m = bfly(lane, 32) / (float)D;
		for (int i = 0; i < D; i++) {
			float d = fmaf(-m, yh[i], g[i]);
			dx[off + i] = R(acc ? fmaf(rs, d, B(dx[off + i])) : rs * d);
		}
	}
	free(g), free(yh);
}

/* resnorm.cuh: the unfused launchers in sequence */
static void rn_chk(const char *fn, int T, int D, const void *const *p, int np)
{
	REQ(T >= 0 && D > 0 && D % 8 == 0, "%s: bad shape T = %d, D = %d", fn, T, D);
	for (int i = 0; i < np; i++)
		REQ(!p[i] || al(p[i]), "%s: tensor argument %d is not 16-byte aligned", fn, i);
}
void residual_rmsnorm_forward(uint16_t *r, uint16_t *y, float *rstd, const uint16_t *a,
                              const uint16_t *b, int T, int D, float eps, cudaStream_t s)
{
	const void *p[] = {r, y, a, b};
	rn_chk(__func__, T, D, p, 4);
	REQ(r && y && a && b, "residual_rmsnorm_forward: NULL tensor");
	residual_add(r, a, b, (size_t)T * D, s);
	rmsnorm_forward(y, rstd, r, NULL, 0, T, D, eps, s);
}
void block_input_forward(uint16_t *out, uint16_t *res, uint16_t *xm, uint16_t *h, float *rstd,
                         const uint16_t *a, const uint16_t *b, const uint16_t *skip,
                         const float *w, const uint16_t *x0, const float *lam, int T, int D,
                         float eps, cudaStream_t s)
{
	const void *p[] = {out, res, xm, h, a, b, skip, x0};
	rn_chk(__func__, T, D, p, 8);
	REQ(xm && h && a && x0 && lam && (!out || b) && !skip == !res && !skip == !w,
	    "block_input_forward: bad arguments");
	const size_t n = (size_t)T * D;
	const uint16_t *o = a;
	uint16_t *tmp = NULL;
	if (b) {
		uint16_t *dst = out ? out : (tmp = malloc(2 * (n ? n : 1)));
		residual_add(dst, a, b, n, s);
		o = dst;
	}
	const uint16_t *r = o;
	if (skip) { /* skip == out: o itself */
		mix_skip_forward(res, o, skip, w, n, s);
		r = res;
	}
	mix_lambda_forward(xm, r, x0, lam, n, s);
	rmsnorm_forward(h, rstd, xm, NULL, 0, T, D, eps, s);
	free(tmp);
}
size_t block_input_work_bytes(int T, int D)
{
	return 2 * mix_work_bytes((size_t)(T > 0 ? T : 0) * (size_t)(D > 0 ? D : 0));
}
void block_input_backward(uint16_t *dx, float *dx0, float *g_lam, uint16_t *dskip,
                          float *g_skip, const uint16_t *dh, const uint16_t *xm,
                          const float *rstd, const uint16_t *res, const uint16_t *x0,
                          const float *lam, const uint16_t *skip, const float *w,
                          const uint16_t *add, int T, int D, void *work, cudaStream_t s)
{
	const void *p[] = {dx, dx0, dskip, dh, xm, res, x0, skip, add};
	rn_chk(__func__, T, D, p, 9);
	REQ(dx && dx0 && g_lam && dh && xm && rstd && res && x0 && lam && work &&
	        !skip == !dskip && !skip == !g_skip && !skip == !w && dx != dh && dx != xm &&
	        (!dskip || (dskip != dh && dskip != xm)),
	    "block_input_backward: bad arguments");
	const size_t n = (size_t)T * D;
	rmsnorm_backward(dx, 1, dh, NULL, xm, NULL, 0, rstd, T, D, s);
	mix_lambda_backward(dx, dx0, g_lam, dx, res, x0, lam, n, work, s);
	if (skip)
		mix_skip_backward(dskip, g_skip, dx, skip, w, n, work, s);
	if (add) /* add == dskip: the one just made */
		residual_add(dx, dx, add, n, s);
}

static void qk_one(int bwd, uint16_t *out, float *rout, const uint16_t *in, const uint16_t *xin,
                   const float *rin, long long ld_out, long long ld_in, long long ld_x,
                   const float *cs, const float *sn, int T, int H, int hd, int nf, float eps)
{
	int G = hd / 8, half = hd / 2;
	float v[256], xh[256];
	for (int t = 0; t < T; t++)
		for (int h = 0; h < H; h++) {
			const uint16_t *p = in + t * ld_in + h * hd;
			for (int i = 0; i < hd; i++)
				v[i] = B(p[i]);
			float lane[32];
			if (!bwd) {
				for (int l = 0; l < G; l++) {
					lane[l] = 0;
					for (int e = 0; e < 8; e++)
						lane[l] = fmaf(v[8 * l + e], v[8 * l + e], lane[l]);
				}
				float rs = 1.0f / sqrtf(bfly(lane, G) / (float)hd + eps);
				for (int i = 0; i < hd; i++)
					v[i] *= rs;
				for (int j = 0; j < nf; j++) {
					float c = cs[(size_t)t * nf + j],
					      s = sn[(size_t)t * nf + j], x1 = v[j],
					      x2 = v[j + half];
					v[j] = fmaf(x2, s, x1 * c);
					v[j + half] = fmaf(x2, c, -x1 * s);
				}
				for (int i = 0; i < hd; i++)
					out[t * ld_out + h * hd + i] = R(v[i]);
				if (rout)
					rout[(size_t)t * H + h] = rs;
			} else {
				float rs = rin[(size_t)t * H + h];
				for (int j = 0; j < nf; j++) {
					float c = cs[(size_t)t * nf + j],
					      s = sn[(size_t)t * nf + j], d1 = v[j],
					      d2 = v[j + half];
					v[j] = fmaf(-d2, s, d1 * c);
					v[j + half] = fmaf(d2, c, d1 * s);
				}
				for (int i = 0; i < hd; i++)
					xh[i] = B(xin[t * ld_x + h * hd + i]) * rs;
				for (int l = 0; l < G; l++) {
					lane[l] = 0;
					for (int e = 0; e < 8; e++)
						lane[l] =
						    fmaf(v[8 * l + e], xh[8 * l + e], lane[l]);
				}
				float m = bfly(lane, G) / (float)hd;
				for (int i = 0; i < hd; i++)
					out[t * ld_out + h * hd + i] = R(rs * (v[i] - xh[i] * m));
			}
		}
}
void qk_norm_rotary_forward(uint16_t *q_out, uint16_t *k_out, float *q_rstd, float *k_rstd,
                            const uint16_t *q, const uint16_t *k, int ld_in, int ld_out,
                            const float *cos_t, const float *sin_t, int T, int H, int hd, int nf,
                            float eps, cudaStream_t s)
{
	REQ(hd == 16 || hd == 32 || hd == 64 || hd == 128 || hd == 256,
	    "qk_norm_rotary_forward: bad shape hd = %d", hd);
	qk_one(0, q_out, q_rstd, q, NULL, NULL, ld_out, ld_in, 0, cos_t, sin_t, T, H, hd, nf, eps);
	if (k)
		qk_one(0, k_out, k_rstd, k, NULL, NULL, ld_out, ld_in, 0, cos_t, sin_t, T, H, hd,
		       nf, eps);
}
void qk_norm_rotary_backward(uint16_t *dq, uint16_t *dk, const uint16_t *dq_out,
                             const uint16_t *dk_out, const uint16_t *q, const uint16_t *k,
                             const float *q_rstd, const float *k_rstd, int ld_dx, int ld_dout,
                             int ld_in, const float *cos_t, const float *sin_t, int T, int H,
                             int hd, int nf, cudaStream_t s)
{
	qk_one(1, dq, NULL, dq_out, q, q_rstd, ld_dx, ld_dout, ld_in, cos_t, sin_t, T, H, hd, nf,
	       0);
	if (dk)
		qk_one(1, dk, NULL, dk_out, k, k_rstd, ld_dx, ld_dout, ld_in, cos_t, sin_t, T, H,
		       hd, nf, 0);
}

void embedding_forward(uint16_t *const out[], const uint16_t *const tables[], int ntables,
                       const uint32_t *tok, int T, int V, int D, cudaStream_t s)
{
	REQ(ntables >= 1 && ntables <= 4, "embedding_forward: ntables = %d not in 1..4", ntables);
	for (int i = 0; i < ntables; i++)
		for (int t = 0; t < T; t++) {
			if (tok[t] < (uint32_t)V)
				memcpy(out[i] + (size_t)t * D, tables[i] + (size_t)tok[t] * D,
				       2 * (size_t)D);
			else
				for (int d = 0; d < D; d++)
					out[i][(size_t)t * D + d] = 0x7fc0;
		}
}
struct embedding_plan {
	int max_T, V, max_D, T;
	uint32_t *keys;
	int32_t *pos;
	float *partial;
};
struct embedding_plan *embedding_plan_create(int max_T, int V, int max_D)
{
	struct embedding_plan *p = calloc(1, sizeof *p);
	p->max_T = max_T, p->V = V, p->max_D = max_D;
	p->keys = malloc(4 * (size_t)max_T);
	p->pos = malloc(4 * (size_t)max_T);
	p->partial = malloc(4 * 2 * (size_t)((max_T + 31) / 32) * max_D);
	return p;
}
void embedding_plan_free(struct embedding_plan *p)
{
	free(p->keys), free(p->pos), free(p->partial), free(p);
}
void embedding_plan_build(struct embedding_plan *p, const uint32_t *tok, int T, cudaStream_t s)
{
	REQ(T <= p->max_T, "T");
	p->T = T;
	int *cnt = calloc((size_t)p->V + 2, sizeof(int));
	for (int t = 0; t < T; t++)
		cnt[(tok[t] < (uint32_t)p->V ? tok[t] : (uint32_t)p->V) + 1]++;
	for (int v = 0; v <= p->V; v++)
		cnt[v + 1] += cnt[v];
	for (int t = 0; t < T; t++) {
		uint32_t k = tok[t] < (uint32_t)p->V ? tok[t] : (uint32_t)p->V;
		int i = cnt[k]++;
		p->keys[i] = k;
		p->pos[i] = t;
	}
	free(cnt);
}
static void gadd(float *g32, uint16_t *g16, size_t off, const float *acc, int D, float sc)
{
	for (int d = 0; d < D; d++) {
		if (g32)
			g32[off + d] = fmaf(sc, acc[d], g32[off + d]);
		else
			g16[off + d] = R(fmaf(sc, acc[d], B(g16[off + d])));
	}
}
static void emb_bwd(float *g32, uint16_t *g16, const uint16_t *dy, int ld, const float *scale,
                    const struct embedding_plan *p, int D)
{
	const int CH = 32, T = p->T, V = p->V;
	const uint32_t *K = p->keys;
	float sc = scale ? *scale : 1.0f, *acc = malloc(4 * (size_t)D);
	int nwin = (T + CH - 1) / CH;
	for (int w = 0; w < nwin; w++) {
		int base = w * CH, cnt = T - base < CH ? T - base : CH;
		for (int a = 0; a < cnt;) {
			uint32_t key = K[base + a];
			int b = a + 1;
			while (b < cnt && K[base + b] == key)
				b++;
			int starts = base + a == 0 || K[base + a - 1] != key,
			    ends = base + b == T || K[base + b] != key;
			if (key < (uint32_t)V) {
				for (int d = 0; d < D; d++)
					acc[d] = 0;
				for (int i = a; i < b; i++)
					for (int d = 0; d < D; d++)
						acc[d] += B(dy[(size_t)p->pos[base + i] * ld + d]);
				if (starts && ends)
					gadd(g32, g16, (size_t)key * D, acc, D, sc);
				else
					memcpy(p->partial + (size_t)(2 * w + (a != 0)) * D, acc,
					       4 * (size_t)D);
			}
			a = b;
		}
	}
	for (int w = 0; w < nwin; w++) {
		int base = w * CH, end = base + CH;
		if (end >= T)
			continue;
		uint32_t key = K[end - 1];
		if (key >= (uint32_t)V || K[end] != key)
			continue;
		int first = end - 1;
		while (first > 0 && K[first - 1] == key)
			first--;
		int last = end;
		while (last < T && K[last] == key)
			last++;
		if (first < base)
			continue;
		int nw = (last + CH - 1) / CH - w;
		memcpy(acc, p->partial + (size_t)(2 * w + (first != base)) * D, 4 * (size_t)D);
		for (int k = 1; k < nw; k++)
			for (int d = 0; d < D; d++)
				acc[d] += p->partial[(size_t)(2 * (w + k)) * D + d];
		gadd(g32, g16, (size_t)key * D, acc, D, sc);
	}
	free(acc);
}
void embedding_backward_f32(float *grad, const uint16_t *dy, int ld_dy, const float *scale,
                            const struct embedding_plan *p, int D, cudaStream_t s)
{
	emb_bwd(grad, NULL, dy, ld_dy, scale, p, D);
}
void embedding_backward_bf16(uint16_t *grad, const uint16_t *dy, int ld_dy, const float *scale,
                             const struct embedding_plan *p, int D, cudaStream_t s)
{
	emb_bwd(NULL, grad, dy, ld_dy, scale, p, D);
}
