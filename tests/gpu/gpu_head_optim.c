/*
 * gpu_head_optim.c - the GPU GEMM wrapper, the chunked head + softcap +
 * cross entropy, Adam, Muon and the casts (kernels/gemm.cuh, head_loss.cuh,
 * adam.cuh, muon.cuh, cast.cuh) against CPU references. Needs a CUDA
 * device (make check-gpu); fails when there is none.
 *
 * References: products in double on the CPU from the same bf16 inputs
 * (rows sampled where the whole product is too big, plus a random
 * projection y r of the WHOLE output, which sees every element); the head's
 * loss from the spec formula in double, with the logits rounded to bf16 as
 * the GPU rounds them; Adam and Muon from lib/optim.c (adam_update,
 * muon_update and newton_schulz5 with bf16 = 1). The head's default cases
 * run the Q path (head_loss.cuh); head_variants and head_q_vs_legacy
 * compare it with HEAD_LOSS_LEGACY (the fast row kernel) and check the
 * precise kernel too. Every GPU output is
 * poisoned with NaN before it is computed and must come back finite;
 * determinism is checked by running twice and comparing bits.
 *
 * Measured numbers go to stderr, one "gpu: ..." line per check, so a run's
 * log says how close each kernel is, not just that it passed.
 * GPT_GPU_TEST_QUICK=1 leaves out the largest sizes (debugging only).
 * GPT_BENCH=1: the "bench" case times the record step's products
 * (bench/gemm.sh); without it that case does nothing.
 */
#pragma GCC optimize("O3")
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "check_common.h"
#include "cuda_check.h"
#include "gpu_bench.h"

#include "adam.cuh"
#include "cast.cuh"
#include "gemm.cuh"
#include "head_loss.cuh"
#include "muon.cuh"
#include "optim.h"
#include "parallel.h"

int engine_cuda_available(void); /* kernels/device.cu */

/* ------------------------------------------------------------------------
 * Helpers: random numbers, device memory, bf16
 */
static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static double u01(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) / 9007199254740992.0; }
static double urand(uint64_t *s) { return 2.0 * u01(s) - 1.0; }
static double grand(uint64_t *s) { return sqrt(-2.0 * log(u01(s))) * cos(6.283185307179586 * u01(s)); }

static int quick(void)
{
	const char *q = getenv("GPT_GPU_TEST_QUICK");
	return q && *q && strcmp(q, "0");
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void need_gpu(void)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
}

static void *dalloc(size_t bytes)
{
	void *p = NULL;
	CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
	return p;
}
static void poison(void *d, size_t bytes) { CUDA_CHECK(cudaMemset(d, 0xff, bytes)); }
static void h2d(void *d, const void *h, size_t bytes)
{
	CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
}
static void d2h(void *h, const void *d, size_t bytes)
{
	CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}
static void sync_dev(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

static float bf(uint16_t h) { return bf16_to_f32(h); }

/* Parallel fills: chunk c of 65536 elements draws from its own stream
 * seeded by (seed, c), so contents do not depend on the thread count. */
enum fill_kind { FILL_UNIFORM, FILL_GAUSS };
struct fill_job {
	uint16_t *h; /* bf16 output (or NULL) */
	float *f;    /* fp32 output (or NULL); with h: the bf16 value as float */
	size_t n;
	double scale;
	uint64_t seed;
	enum fill_kind kind;
};
#define FILL_CHUNK 65536
static void fill_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct fill_job *j = vctx;
	for (size_t c = b; c < e; c++) {
		uint64_t s = j->seed * 0x2545f4914f6cdd1dull + c * 0x9e3779b97f4a7c15ull + 1;
		size_t i1 = (c + 1) * FILL_CHUNK < j->n ? (c + 1) * FILL_CHUNK : j->n;
		for (size_t i = c * FILL_CHUNK; i < i1; i++) {
			double r = j->kind == FILL_GAUSS ? grand(&s) : urand(&s);
			float v = (float)(j->scale * r);
			if (j->h) {
				j->h[i] = f32_to_bf16(v);
				v = bf16_to_f32(j->h[i]);
			}
			if (j->f)
				j->f[i] = v;
		}
	}
	(void)tid;
}
static void fill(uint16_t *h, float *f, size_t n, double scale, uint64_t seed, enum fill_kind k)
{
	struct fill_job j = {h, f, n, scale, seed, k};
	parallel_for((n + FILL_CHUNK - 1) / FILL_CHUNK, fill_range, &j);
}
static uint16_t *rand_bf16(size_t n, double scale, uint64_t seed)
{
	uint16_t *h = xmalloc(2 * (n ? n : 1));
	fill(h, NULL, n, scale, seed, FILL_UNIFORM);
	return h;
}

static size_t nonfinite_bf16(const uint16_t *h, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += !isfinite(bf(h[i]));
	return c;
}
static size_t nonfinite_f32(const float *h, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += !isfinite(h[i]);
	return c;
}

/* Sampled row indices: 0, n-1, the given extra ones, then distinct
 * random rows; sorted. Returns the count (<= want, <= n). */
static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}
static int sample_rows(int n, int want, const int *extra, int nextra, uint64_t seed, int *out)
{
	if (want >= n) {
		for (int i = 0; i < n; i++)
			out[i] = i;
		return n;
	}
	int k = 0;
	uint64_t s = seed;
	char *used = xcalloc((size_t)n, 1);
	int cand[2] = {0, n - 1};
	for (int i = 0; i < 2 + nextra && k < want; i++) {
		int r = i < 2 ? cand[i] : extra[i - 2];
		if (r >= 0 && r < n && !used[r])
			used[r] = 1, out[k++] = r;
	}
	while (k < want) {
		int r = (int)(u01(&s) * n);
		if (r < n && !used[r])
			used[r] = 1, out[k++] = r;
	}
	free(used);
	qsort(out, (size_t)k, sizeof(int), cmp_int);
	return k;
}

/* ------------------------------------------------------------------------
 * Reference products: C[M,N] (+)= A[M,K] B[N,K]^T into double, fp32
 * inputs. Each dot product runs in 32 fp32 lanes over blocks of at most
 * RKB terms, the lanes and blocks summed in double: relative error ~1e-7,
 * four orders under the bf16 tolerances, and 3x the speed of double
 * lanes. 2-D tiles over the thread pool; four dot products share loads.
 */
__attribute__((target_clones("avx512f", "arch=haswell", "default")))
static void dot22(const float *a0, const float *a1, const float *b0, const float *b1, int n,
                  double *o)
{
	float s00[32], s01[32], s10[32], s11[32];
	for (int l = 0; l < 32; l++)
		s00[l] = s01[l] = s10[l] = s11[l] = 0;
	int k = 0;
	for (; k + 32 <= n; k += 32)
		for (int l = 0; l < 32; l++) {
			float x0 = a0[k + l], x1 = a1[k + l], y0 = b0[k + l], y1 = b1[k + l];
			s00[l] += x0 * y0, s01[l] += x0 * y1, s10[l] += x1 * y0, s11[l] += x1 * y1;
		}
	double r00 = 0, r01 = 0, r10 = 0, r11 = 0;
	for (int l = 0; l < 32; l++)
		r00 += s00[l], r01 += s01[l], r10 += s10[l], r11 += s11[l];
	for (; k < n; k++) {
		double x0 = a0[k], x1 = a1[k], y0 = b0[k], y1 = b1[k];
		r00 += x0 * y0, r01 += x0 * y1, r10 += x1 * y0, r11 += x1 * y1;
	}
	o[0] = r00, o[1] = r01, o[2] = r10, o[3] = r11;
}

#define RT 16
#define RKB 1024
struct nt_job {
	double *C;
	const float *A, *B;
	int M, N, K, acc, tn;
};
static void nt_tiles(void *vctx, size_t b, size_t e, int tid)
{
	const struct nt_job *j = vctx;
	double acc[RT][RT];
	for (size_t t = b; t < e; t++) {
		int i0 = (int)(t / (size_t)j->tn) * RT, j0 = (int)(t % (size_t)j->tn) * RT;
		int i1 = i0 + RT < j->M ? i0 + RT : j->M, j1 = j0 + RT < j->N ? j0 + RT : j->N;
		memset(acc, 0, sizeof acc);
		for (int k0 = 0; k0 < j->K; k0 += RKB) {
			int kn = j->K - k0 < RKB ? j->K - k0 : RKB;
			for (int i = i0; i < i1; i += 2)
				for (int c = j0; c < j1; c += 2) {
					/* odd edges: the second row / column repeats the first
					 * and its results are dropped */
					int i2 = i + 1 < i1 ? i + 1 : i, c2 = c + 1 < j1 ? c + 1 : c;
					double o[4];
					dot22(j->A + (size_t)i * j->K + k0, j->A + (size_t)i2 * j->K + k0,
					      j->B + (size_t)c * j->K + k0, j->B + (size_t)c2 * j->K + k0, kn, o);
					acc[i - i0][c - j0] += o[0];
					if (c2 != c)
						acc[i - i0][c2 - j0] += o[1];
					if (i2 != i)
						acc[i2 - i0][c - j0] += o[2];
					if (i2 != i && c2 != c)
						acc[i2 - i0][c2 - j0] += o[3];
				}
		}
		for (int i = i0; i < i1; i++)
			for (int c = j0; c < j1; c++) {
				double *o = &j->C[(size_t)i * j->N + c];
				*o = (j->acc ? *o : 0.0) + acc[i - i0][c - j0];
			}
	}
	(void)tid;
}
static void ref_nt(double *C, const float *A, const float *B, int M, int N, int K, int acc)
{
	struct nt_job j = {C, A, B, M, N, K, acc, (N + RT - 1) / RT};
	parallel_for((size_t)((M + RT - 1) / RT) * (size_t)j.tn, nt_tiles, &j);
}

/* Transpose to fp32: out[c*rows + r] = in[r*cols + c] (bf16 in), and a
 * plain conversion; both over the thread pool. */
struct tr_job {
	float *o;
	const uint16_t *in;
	int rows, cols;
};
static void tr_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct tr_job *j = vctx;
	for (size_t c0 = b * 64; c0 < e * 64 && c0 < (size_t)j->cols; c0 += 64) {
		size_t c1 = c0 + 64 < (size_t)j->cols ? c0 + 64 : (size_t)j->cols;
		for (int r = 0; r < j->rows; r++)
			for (size_t c = c0; c < c1; c++)
				j->o[c * j->rows + r] = bf(j->in[(size_t)r * j->cols + c]);
	}
	(void)tid;
}
static float *transpose_bf16(const uint16_t *in, int rows, int cols)
{
	float *o = xmalloc(sizeof(float) * (size_t)rows * cols);
	struct tr_job j = {o, in, rows, cols};
	parallel_for(((size_t)cols + 63) / 64, tr_range, &j);
	return o;
}
static float *to_f32(const uint16_t *in, size_t n)
{
	float *o = xmalloc(sizeof(float) * (n ? n : 1));
	struct tr_job j = {o, in, 1, (int)n}; /* a 1-row "transpose" is a copy */
	parallel_for((n + 63) / 64, tr_range, &j);
	return o;
}
/* Rows `rows[0..S)` of a [.., cols] bf16 matrix, as fp32 [S, cols]. */
static float *gather_rows(const uint16_t *in, int cols, const int *rows, int S)
{
	float *o = xmalloc(sizeof(float) * (size_t)S * cols);
	for (int s = 0; s < S; s++)
		for (int c = 0; c < cols; c++)
			o[(size_t)s * cols + c] = bf(in[(size_t)rows[s] * cols + c]);
	return o;
}

/* ||got - ref|| / ||ref|| accumulated over calls. */
struct relerr {
	double num, den;
};
static void rel_add(struct relerr *e, double got, double ref)
{
	e->num += (got - ref) * (got - ref);
	e->den += ref * ref;
}
static double rel(const struct relerr *e) { return e->den > 0 ? sqrt(e->num / e->den) : sqrt(e->num); }

/* dW rows by direct sums over T: out[s][k] = sum_t dy[t, n_s] x[t, k]. */
struct dwrow_job {
	double *out;
	const uint16_t *dy, *x;
	const int *rows;
	int T, N, K;
};
static void dwrow_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct dwrow_job *j = vctx;
	for (size_t s = b; s < e; s++) {
		double *o = j->out + s * (size_t)j->K;
		memset(o, 0, sizeof(double) * (size_t)j->K);
		for (int t = 0; t < j->T; t++) {
			double a = bf(j->dy[(size_t)t * j->N + j->rows[s]]);
			const uint16_t *xr = j->x + (size_t)t * j->K;
			for (int k = 0; k < j->K; k++)
				o[k] += a * (double)bf(xr[k]);
		}
	}
	(void)tid;
}

/* ------------------------------------------------------------------------
 * GEMM forms
 */
/* One shape of the model's three forms, y[T,N] = x W^T, dx = dy W,
 * dW = dy^T x (beta 0 over NaN, then beta 1 over random values). */
static void gemm_shape(struct gemm_ctx *g, int T, int N, int K, uint64_t seed)
{
	double t0 = now();
	const size_t tk = (size_t)T * K, tn = (size_t)T * N, nk = (size_t)N * K;
	uint16_t *hx = rand_bf16(tk, 1, seed), *hW = rand_bf16(nk, 1, seed + 1);
	uint16_t *hdy = rand_bf16(tn, 1, seed + 2);
	uint16_t *dx_in = dalloc(2 * tk), *dW_in = dalloc(2 * nk), *ddy_in = dalloc(2 * tn);
	uint16_t *dy_out = dalloc(2 * tn), *dy_out2 = dalloc(2 * tn), *dx_out = dalloc(2 * tk);
	float *dW_out = dalloc(4 * nk);
	h2d(dx_in, hx, 2 * tk), h2d(dW_in, hW, 2 * nk), h2d(ddy_in, hdy, 2 * tn);
	poison(dy_out, 2 * tn), poison(dy_out2, 2 * tn), poison(dx_out, 2 * tk), poison(dW_out, 4 * nk);

	gemm_fwd(g, dy_out, dx_in, dW_in, T, N, K);
	gemm_bwd_dx(g, dx_out, ddy_in, dW_in, T, N, K, 0.0f);
	gemm_bwd_dw(g, dW_out, ddy_in, dx_in, T, N, K, 0.0f);
	gemm_fwd(g, dy_out2, dx_in, dW_in, T, N, K);
	sync_dev();
	uint16_t *y = xmalloc(2 * tn), *y2 = xmalloc(2 * tn), *dxg = xmalloc(2 * tk);
	float *dWg = xmalloc(4 * nk);
	d2h(y, dy_out, 2 * tn), d2h(y2, dy_out2, 2 * tn), d2h(dxg, dx_out, 2 * tk);
	d2h(dWg, dW_out, 4 * nk);
	ck_assert_msg(nonfinite_bf16(y, tn) == 0, "gemm %dx%dx%d: y has %zu non-finite (unwritten?) "
	              "elements", T, N, K, nonfinite_bf16(y, tn));
	ck_assert_msg(nonfinite_bf16(dxg, tk) == 0, "gemm %dx%dx%d: dx has %zu non-finite elements",
	              T, N, K, nonfinite_bf16(dxg, tk));
	ck_assert_msg(nonfinite_f32(dWg, nk) == 0, "gemm %dx%dx%d: dW has %zu non-finite elements",
	              T, N, K, nonfinite_f32(dWg, nk));
	ck_assert_msg(!memcmp(y, y2, 2 * tn), "gemm %dx%dx%d: two runs of y differ", T, N, K);

	/* sampled rows of y and dx */
	long long budget = 400000000LL;
	int want = (int)(budget / ((long long)N * K));
	want = want < 8 ? 8 : want > 256 ? 256 : want;
	int *rows = xmalloc(sizeof(int) * (size_t)(want < T ? want : T));
	int S = sample_rows(T, want, NULL, 0, seed + 3, rows);
	float *Wf = to_f32(hW, nk), *Wt = transpose_bf16(hW, N, K);
	float *xs = gather_rows(hx, K, rows, S), *dys = gather_rows(hdy, N, rows, S);
	double *ry = xmalloc(sizeof(double) * (size_t)S * N), *rdx = xmalloc(sizeof(double) * (size_t)S * K);
	ref_nt(ry, xs, Wf, S, N, K, 0);
	ref_nt(rdx, dys, Wt, S, K, N, 0);
	struct relerr ey = {0, 0}, edx = {0, 0};
	for (int s = 0; s < S; s++) {
		for (int c = 0; c < N; c++)
			rel_add(&ey, bf(y[(size_t)rows[s] * N + c]), ry[(size_t)s * N + c]);
		for (int c = 0; c < K; c++)
			rel_add(&edx, bf(dxg[(size_t)rows[s] * K + c]), rdx[(size_t)s * K + c]);
	}
	/* sampled rows of dW */
	int wantn = (int)(budget / ((long long)T * K));
	wantn = wantn < 4 ? 4 : wantn > 64 ? 64 : wantn;
	int *nrows = xmalloc(sizeof(int) * (size_t)(wantn < N ? wantn : N));
	int Sn = sample_rows(N, wantn, NULL, 0, seed + 4, nrows);
	double *rdw = xmalloc(sizeof(double) * (size_t)Sn * K);
	struct dwrow_job dj = {rdw, hdy, hx, nrows, T, N, K};
	parallel_for((size_t)Sn, dwrow_range, &dj);
	struct relerr edw = {0, 0};
	for (int s = 0; s < Sn; s++)
		for (int c = 0; c < K; c++)
			rel_add(&edw, dWg[(size_t)nrows[s] * K + c], rdw[(size_t)s * K + c]);

	/* projections of the whole outputs with random vectors */
	uint64_t ps = seed + 5;
	double *rN = xmalloc(sizeof(double) * N), *rK = xmalloc(sizeof(double) * K);
	for (int i = 0; i < N; i++) rN[i] = urand(&ps);
	for (int i = 0; i < K; i++) rK[i] = urand(&ps);
	/* y rN vs x (W^T rN);  dx rK vs dy (W rK);  dW rK vs dy^T (x rK) */
	double *WtrN = xcalloc((size_t)K, sizeof(double)), *WrK = xcalloc((size_t)N, sizeof(double));
	for (int n = 0; n < N; n++)
		for (int k = 0; k < K; k++) {
			double w = bf(hW[(size_t)n * K + k]);
			WtrN[k] += w * rN[n];
			WrK[n] += w * rK[k];
		}
	double *xrK = xmalloc(sizeof(double) * (size_t)T), *dwp = xcalloc((size_t)N, sizeof(double));
	struct relerr py = {0, 0}, pdx = {0, 0}, pdw = {0, 0};
	for (int t = 0; t < T; t++) {
		const uint16_t *xr = hx + (size_t)t * K, *dyr = hdy + (size_t)t * N;
		const uint16_t *yr = y + (size_t)t * N, *dxr = dxg + (size_t)t * K;
		double a = 0, b = 0, c = 0, d = 0, xr_k = 0;
		for (int k = 0; k < K; k++) {
			double xv = bf(xr[k]);
			a += xv * WtrN[k];
			xr_k += xv * rK[k];
			c += (double)bf(dxr[k]) * rK[k];
		}
		for (int n = 0; n < N; n++) {
			b += (double)bf(yr[n]) * rN[n];
			d += (double)bf(dyr[n]) * WrK[n];
		}
		rel_add(&py, b, a);
		rel_add(&pdx, c, d);
		xrK[t] = xr_k;
	}
	for (int t = 0; t < T; t++) {
		const uint16_t *dyr = hdy + (size_t)t * N;
		for (int n = 0; n < N; n++)
			dwp[n] += (double)bf(dyr[n]) * xrK[t];
	}
	for (int n = 0; n < N; n++) {
		double got = 0;
		for (int k = 0; k < K; k++)
			got += (double)dWg[(size_t)n * K + k] * rK[k];
		rel_add(&pdw, got, dwp[n]);
	}

	/* accumulation: dW = D0 + dy^T x with D0 random, over the same buffer */
	float *D0 = xmalloc(4 * nk);
	fill(NULL, D0, nk, sqrt((double)T) / 3, seed + 6, FILL_UNIFORM);
	h2d(dW_out, D0, 4 * nk);
	gemm_bwd_dw(g, dW_out, ddy_in, dx_in, T, N, K, 1.0f);
	sync_dev();
	float *dWa = xmalloc(4 * nk);
	d2h(dWa, dW_out, 4 * nk);
	struct relerr eacc = {0, 0};
	for (int s = 0; s < Sn; s++)
		for (int c = 0; c < K; c++) {
			size_t i = (size_t)nrows[s] * K + c;
			rel_add(&eacc, (double)dWa[i] - (double)D0[i], rdw[(size_t)s * K + c]);
		}

	/* speed of the three forms (information only; large shapes) */
	char speed[160] = "";
	if ((double)T * N * K >= 1e9) {
		cudaEvent_t e[4];
		for (int i = 0; i < 4; i++)
			CUDA_CHECK(cudaEventCreate(&e[i]));
		const int reps = 5;
		CUDA_CHECK(cudaEventRecord(e[0], gemm_stream(g)));
		for (int r = 0; r < reps; r++)
			gemm_fwd(g, dy_out, dx_in, dW_in, T, N, K);
		CUDA_CHECK(cudaEventRecord(e[1], gemm_stream(g)));
		for (int r = 0; r < reps; r++)
			gemm_bwd_dx(g, dx_out, ddy_in, dW_in, T, N, K, 0.0f);
		CUDA_CHECK(cudaEventRecord(e[2], gemm_stream(g)));
		for (int r = 0; r < reps; r++)
			gemm_bwd_dw(g, dW_out, ddy_in, dx_in, T, N, K, 1.0f);
		CUDA_CHECK(cudaEventRecord(e[3], gemm_stream(g)));
		CUDA_CHECK(cudaEventSynchronize(e[3]));
		float ms[3];
		for (int i = 0; i < 3; i++)
			CUDA_CHECK(cudaEventElapsedTime(&ms[i], e[i], e[i + 1]));
		const double fl = 2.0 * T * N * K * reps / 1e9; /* GFLOP per form */
		snprintf(speed, sizeof speed, "; TFLOP/s fwd %.0f dx %.0f dW %.0f",
		         ms[0] > 0 ? fl / ms[0] : 0, ms[1] > 0 ? fl / ms[1] : 0, ms[2] > 0 ? fl / ms[2] : 0);
		for (int i = 0; i < 4; i++)
			CUDA_CHECK(cudaEventDestroy(e[i]));
	}
	fprintf(stderr,
	        "gpu: gemm %dx%dx%d: y %.2e (%d rows) %.2e (proj); dx %.2e %.2e; dW fp32 %.2e "
	        "(%d rows) %.2e (proj), beta=1 %.2e%s  [%.1fs]\n",
	        T, N, K, rel(&ey), S, rel(&py), rel(&edx), rel(&pdx), rel(&edw), Sn, rel(&pdw),
	        rel(&eacc), speed, now() - t0);
	ck_assert_msg(rel(&ey) < 1e-2 && rel(&py) < 1e-2, "gemm %dx%dx%d: y error %g (rows) %g (proj)",
	              T, N, K, rel(&ey), rel(&py));
	ck_assert_msg(rel(&edx) < 1e-2 && rel(&pdx) < 1e-2,
	              "gemm %dx%dx%d: dx error %g (rows) %g (proj)", T, N, K, rel(&edx), rel(&pdx));
	ck_assert_msg(rel(&edw) < 1e-3 && rel(&pdw) < 1e-3,
	              "gemm %dx%dx%d: dW error %g (rows) %g (proj)", T, N, K, rel(&edw), rel(&pdw));
	ck_assert_msg(rel(&eacc) < 1e-3, "gemm %dx%dx%d: dW accumulation (beta=1) error %g", T, N, K,
	              rel(&eacc));

	CUDA_CHECK(cudaFree(dx_in)); CUDA_CHECK(cudaFree(dW_in)); CUDA_CHECK(cudaFree(ddy_in));
	CUDA_CHECK(cudaFree(dy_out)); CUDA_CHECK(cudaFree(dy_out2)); CUDA_CHECK(cudaFree(dx_out));
	CUDA_CHECK(cudaFree(dW_out));
	free(hx), free(hW), free(hdy), free(y), free(y2), free(dxg), free(dWg), free(rows), free(Wf);
	free(Wt), free(xs), free(dys), free(ry), free(rdx), free(nrows), free(rdw), free(rN), free(rK);
	free(WtrN), free(WrK), free(xrK), free(dwp), free(D0), free(dWa);
}

static const int gemm_shapes[][3] = {
	{65536, 768, 768}, {65536, 3072, 768}, {65536, 768, 3072}, {4096, 50304, 768},
	{7, 13, 5}, {33, 65, 17}, {1, 1, 1}, {1, 50304, 768}, {100, 300, 200},
};
#define GEMM_SHAPES ((int)(sizeof gemm_shapes / sizeof *gemm_shapes))

START_TEST(gemm_model_forms)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	for (int i = 0; i < GEMM_SHAPES; i++) {
		const int *s = gemm_shapes[i];
		if (quick() && (long long)s[0] * s[1] * s[2] > 1LL << 32)
			continue;
		gemm_shape(g, s[0], s[1], s[2], 1000 + 10 * (uint64_t)i);
	}
	struct gemm_stats st = gemm_stats(g);
	fprintf(stderr, "gpu: gemm paths: %lld cuBLASLt, %lld cublasGemmEx fallback, %lld plans\n",
	        st.lt_calls, st.fallback_calls, st.plans);
	gemm_destroy(g);
}
END_TEST


/* The process's algorithm choices (gemm.cuh "Algorithm choice"): the
 * first product of a key times candidates (a beta = 1 product into a
 * scratch buffer, so its C sees the real product once); export, forget
 * and import give back the same choices and the same bits; texts of
 * another format or GPU/cuBLASLt change nothing. */
START_TEST(gemm_choices)
{
	need_gpu();
	const int T = 4096, N = 768, K = 768;
	uint16_t *hx = rand_bf16((size_t)T * K, 1.0, 71), *hw = rand_bf16((size_t)N * K, 0.05, 72);
	uint16_t *hdy = rand_bf16((size_t)T * N, 1.0, 73);
	float *g0 = xmalloc(sizeof(float) * N * K);
	for (int i = 0; i < N * K; i++)
		g0[i] = (float)((i % 7) - 3) * 0.25f;
	uint16_t *x = dalloc(2 * (size_t)T * K), *w = dalloc(2 * (size_t)N * K);
	uint16_t *dy = dalloc(2 * (size_t)T * N), *y = dalloc(2 * (size_t)T * N);
	float *dw = dalloc(sizeof(float) * N * K);
	h2d(x, hx, 2 * (size_t)T * K), h2d(w, hw, 2 * (size_t)N * K), h2d(dy, hdy, 2 * (size_t)T * N);
	uint16_t *y1 = xmalloc(2 * (size_t)T * N), *y2 = xmalloc(2 * (size_t)T * N);
	float *d1 = xmalloc(sizeof(float) * N * K), *d2 = xmalloc(sizeof(float) * N * K);
	float *d3 = xmalloc(sizeof(float) * N * K);

	gemm_forget();
	struct gemm_ctx *g = gemm_create(0);
	poison(y, 2 * (size_t)T * N);
	gemm_fwd(g, y, x, w, T, N, K);
	h2d(dw, g0, sizeof(float) * N * K);
	gemm_bwd_dw(g, dw, dy, x, T, N, K, 1.0f); /* chosen here: timed into scratch */
	sync_dev();
	d2h(y1, y, 2 * (size_t)T * N), d2h(d1, dw, sizeof(float) * N * K);
	h2d(dw, g0, sizeof(float) * N * K);
	gemm_bwd_dw(g, dw, dy, x, T, N, K, 1.0f); /* the same choice, no timing */
	sync_dev();
	d2h(d2, dw, sizeof(float) * N * K);
	ck_assert_msg(!memcmp(d1, d2, sizeof(float) * N * K),
	              "the beta = 1 product that made its choice differs from the next one");
	ck_assert(nonfinite_bf16(y1, (size_t)T * N) == 0);
	struct gemm_stats st = gemm_stats(g);
	char *e1 = gemm_export();
	ck_assert_msg(!strncmp(e1, "gemm-algos 1 cublasLt=", 22), "export header: %.80s", e1);
	int lines = 0;
	for (const char *c = e1; *c; c++)
		lines += *c == '\n';
	ck_assert_msg(lines == 3, "export has %d lines (header + 2 keys):\n%s", lines, e1);
	gemm_destroy(g);

	/* forget, import: the same choices, the same bits, no timing */
	gemm_forget();
	ck_assert_int_eq(gemm_import(e1), 2);
	g = gemm_create(0);
	poison(y, 2 * (size_t)T * N);
	gemm_fwd(g, y, x, w, T, N, K);
	h2d(dw, g0, sizeof(float) * N * K);
	gemm_bwd_dw(g, dw, dy, x, T, N, K, 1.0f);
	sync_dev();
	d2h(y2, y, 2 * (size_t)T * N), d2h(d3, dw, sizeof(float) * N * K);
	ck_assert_msg(!memcmp(y1, y2, 2 * (size_t)T * N), "forward bits differ after import");
	ck_assert_msg(!memcmp(d1, d3, sizeof(float) * N * K), "dW bits differ after import");
	ck_assert_msg(gemm_stats(g).tuned == 0, "imported choices were timed again");
	char *e2 = gemm_export();
	ck_assert_msg(!strcmp(e1, e2), "export after import differs:\n%s\n--\n%s", e1, e2);

	/* not such a text: -1, nothing taken; another cuBLASLt: 0 */
	ck_assert_int_eq(gemm_import("hello\n"), -1);
	char *bad = strdup(e1);
	char *nl = strchr(bad, '\n');
	ck_assert(nl && nl[1]);
	nl[1] = 'x'; /* a malformed key line */
	ck_assert_int_eq(gemm_import(bad), -1);
	free(bad);
	char *other = xmalloc(strlen(e1) + 2);
	const char *v = strstr(e1, "cublasLt=") + 9;
	snprintf(other, strlen(e1) + 2, "%.*s9%s", (int)(v - e1), e1, v);
	ck_assert_int_eq(gemm_import(other), 0);
	free(other);
	char *e3 = gemm_export();
	ck_assert_msg(!strcmp(e1, e3), "a refused import changed the choices");
	fprintf(stderr, "gpu: gemm choices: %lld timed in the first process; export/import round "
	                "trip bit-exact\n",
	        st.tuned);
	free(e1), free(e2), free(e3);
	gemm_destroy(g);
	CUDA_CHECK(cudaFree(x)); CUDA_CHECK(cudaFree(w)); CUDA_CHECK(cudaFree(dy));
	CUDA_CHECK(cudaFree(y)); CUDA_CHECK(cudaFree(dw));
	free(hx), free(hw), free(hdy), free(g0), free(y1), free(y2), free(d1), free(d2), free(d3);
}
END_TEST

/* Element (i, k) of op(A) for a row-major stored A. */
static double opel(const uint16_t *A, int trans, long long ld, int i, int k)
{
	return bf(trans ? A[(size_t)k * ld + i] : A[(size_t)i * ld + k]);
}

/* The general form: all four transpose combinations, strided batches,
 * padded leading dimensions, alpha/beta, bf16 and fp32 outputs. */
START_TEST(gemm_general_batched)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	const int shapes[][4] = {{33, 65, 17, 3}, {5, 7, 3, 2}, {768, 768, 768, 4}, {64, 200, 96, 5}};
	double worst = 0;
	for (int si = 0; si < 4; si++)
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++)
				for (int ct = 0; ct < 2; ct++) {
					const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
					const int batch = shapes[si][3], pad = (si & 1) ? 3 : 0;
					const long long lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad;
					const long long ldc = N + pad;
					const long long sA = lda * (ta ? K : M) + 5, sB = ldb * (tb ? N : K) + 1;
					const long long sC = ldc * M + 7;
					const int ab = (si + ct) & 1; /* each output type with and without beta */
					const float alpha = ab ? 0.5f : 1.0f, beta = ab ? 2.0f : 0.0f;
					const size_t nA = (size_t)sA * batch, nB = (size_t)sB * batch;
					const size_t nC = (size_t)sC * batch;
					uint64_t seed = 5000 + (uint64_t)(si * 8 + ta * 4 + tb * 2 + ct);
					uint16_t *hA = rand_bf16(nA, 1, seed), *hB = rand_bf16(nB, 1, seed + 1);
					uint16_t *dA = dalloc(2 * nA), *dB = dalloc(2 * nB);
					h2d(dA, hA, 2 * nA), h2d(dB, hB, 2 * nB);
					const size_t cs = ct ? 4 : 2;
					void *hC0 = xmalloc(cs * nC), *hC = xmalloc(cs * nC);
					if (ct)
						fill(NULL, hC0, nC, 1, seed + 2, FILL_UNIFORM);
					else
						fill(hC0, NULL, nC, 1, seed + 2, FILL_UNIFORM);
					void *dC = dalloc(cs * nC);
					if (beta != 0)
						h2d(dC, hC0, cs * nC);
					else
						poison(dC, cs * nC);
					gemm_rm(g, ta, tb, M, N, K, alpha, dA, lda, sA, dB, ldb, sB, beta, dC,
					        ct ? GEMM_F32 : GEMM_BF16, ldc, sC, batch);
					sync_dev();
					d2h(hC, dC, cs * nC);
					int rows[64];
					int S = sample_rows(M, 24, NULL, 0, seed + 3, rows);
					struct relerr e = {0, 0};
					size_t bad = 0;
					for (int b = 0; b < batch; b++) {
						const uint16_t *A = hA + (size_t)b * sA, *B = hB + (size_t)b * sB;
						for (int s = 0; s < S; s++)
							for (int j = 0; j < N; j++) {
								int i = rows[s];
								double r = 0;
								for (int k = 0; k < K; k++)
									r += opel(A, ta, lda, i, k) *
									     opel(B, !tb, ldb, j, k);
								size_t ci = (size_t)b * sC + (size_t)i * ldc + j;
								double c0 = ct ? ((float *)hC0)[ci]
								               : bf(((uint16_t *)hC0)[ci]);
								double got = ct ? ((float *)hC)[ci]
								                : bf(((uint16_t *)hC)[ci]);
								r = alpha * r + (beta != 0 ? beta * c0 : 0);
								bad += !isfinite(got);
								rel_add(&e, got, r);
							}
					}
					/* padding and gaps between batch members untouched */
					size_t touched = 0;
					for (size_t i = 0; i < nC; i++) {
						size_t b = i / (size_t)sC, o = i % (size_t)sC;
						if (b >= (size_t)batch)
							continue;
						int in = o < (size_t)ldc * M && (long long)(o % (size_t)ldc) < N;
						if (in)
							continue;
						int same = ct ? !memcmp((float *)hC + i, (float *)hC0 + i, 4) ||
						                         (beta == 0 && isnan(((float *)hC)[i]))
						              : !memcmp((uint16_t *)hC + i, (uint16_t *)hC0 + i, 2) ||
						                         (beta == 0 && isnan(bf(((uint16_t *)hC)[i])));
						touched += !same;
					}
					double er = rel(&e);
					worst = er > worst ? er : worst;
					ck_assert_msg(bad == 0 && er < (ct ? 1e-3 : 1e-2) && touched == 0,
					              "gemm_rm M=%d N=%d K=%d batch=%d ta=%d tb=%d %s pad=%d: "
					              "%zu non-finite, error %g, %zu elements outside C written",
					              M, N, K, batch, ta, tb, ct ? "fp32" : "bf16", pad, bad, er,
					              touched);
					CUDA_CHECK(cudaFree(dA)); CUDA_CHECK(cudaFree(dB)); CUDA_CHECK(cudaFree(dC));
					free(hA), free(hB), free(hC0), free(hC);
				}
	/* gemm_bf16_batched: the dense form Newton-Schulz uses */
	{
		const int M = 48, N = 80, K = 64, batch = 3;
		uint16_t *hA = rand_bf16((size_t)M * K * batch, 1, 7001);
		uint16_t *hB = rand_bf16((size_t)N * K * batch, 1, 7002);
		uint16_t *dA = dalloc(2 * (size_t)M * K * batch), *dB = dalloc(2 * (size_t)N * K * batch);
		uint16_t *dC = dalloc(2 * (size_t)M * N * batch), *hC = xmalloc(2 * (size_t)M * N * batch);
		h2d(dA, hA, 2 * (size_t)M * K * batch), h2d(dB, hB, 2 * (size_t)N * K * batch);
		poison(dC, 2 * (size_t)M * N * batch);
		gemm_bf16_batched(g, 0, 1, M, N, K, dA, (long long)M * K, dB, (long long)N * K, dC,
		                  (long long)M * N, batch);
		sync_dev();
		d2h(hC, dC, 2 * (size_t)M * N * batch);
		struct relerr e = {0, 0};
		for (int b = 0; b < batch; b++)
			for (int i = 0; i < M; i++)
				for (int j = 0; j < N; j++) {
					double r = 0;
					for (int k = 0; k < K; k++)
						r += (double)bf(hA[(size_t)b * M * K + (size_t)i * K + k]) *
						     bf(hB[(size_t)b * N * K + (size_t)j * K + k]);
					rel_add(&e, bf(hC[(size_t)b * M * N + (size_t)i * N + j]), r);
				}
		ck_assert_msg(rel(&e) < 1e-2, "gemm_bf16_batched: error %g", rel(&e));
		CUDA_CHECK(cudaFree(dA)); CUDA_CHECK(cudaFree(dB)); CUDA_CHECK(cudaFree(dC));
		free(hA), free(hB), free(hC);
	}
	struct gemm_stats st = gemm_stats(g);
	fprintf(stderr,
	        "gpu: gemm_rm general: worst error %.2e over 32 cases; %lld cuBLASLt, %lld fallback\n",
	        worst, st.lt_calls, st.fallback_calls);
	gemm_destroy(g);
}
END_TEST

/* ------------------------------------------------------------------------
 * Head + softcap + cross entropy
 */
#define HV 50304
#define HD 768

/* Inputs of one head check, on the host and the device. */
struct head_data {
	int T;
	uint16_t *x;   /* [T, D] bf16, rows of rms 1 (a norm's output) */
	float *W;      /* [V, D] fp32 master, N(0, 0.18^2): logits of sd 5 */
	uint16_t *W16; /* f32_to_bf16(W) */
	uint32_t *tg;  /* [T] in [0, V) */
	uint16_t *d_x, *d_W16;
	float *d_W;
	uint32_t *d_tg;
};

static void head_data_make(struct head_data *h, int T, uint64_t seed)
{
	const size_t td = (size_t)T * HD, vd = (size_t)HV * HD;
	h->T = T;
	float *xf = xmalloc(sizeof(float) * td);
	fill(NULL, xf, td, 1, seed, FILL_GAUSS);
	h->x = xmalloc(2 * td);
	for (int t = 0; t < T; t++) {
		double ss = 0;
		for (int d = 0; d < HD; d++)
			ss += (double)xf[(size_t)t * HD + d] * xf[(size_t)t * HD + d];
		double sc = 1 / sqrt(ss / HD + 1e-12);
		for (int d = 0; d < HD; d++)
			h->x[(size_t)t * HD + d] = f32_to_bf16((float)(xf[(size_t)t * HD + d] * sc));
	}
	free(xf);
	h->W = xmalloc(sizeof(float) * vd);
	fill(NULL, h->W, vd, 0.18, seed + 1, FILL_GAUSS);
	h->W16 = xmalloc(2 * vd);
	for (size_t i = 0; i < vd; i++)
		h->W16[i] = f32_to_bf16(h->W[i]);
	h->tg = xmalloc(sizeof(uint32_t) * (size_t)T);
	uint64_t s = seed + 2;
	for (int t = 0; t < T; t++)
		h->tg[t] = (uint32_t)(splitmix(&s) % HV);
	h->d_x = dalloc(2 * td), h->d_W = dalloc(4 * vd), h->d_W16 = dalloc(2 * vd);
	h->d_tg = dalloc(4 * (size_t)T);
	h2d(h->d_x, h->x, 2 * td), h2d(h->d_W, h->W, 4 * vd), h2d(h->d_tg, h->tg, 4 * (size_t)T);
	/* the per-step cast of the master weights, checked bit for bit */
	poison(h->d_W16, 2 * vd);
	cast_f32_to_bf16(h->d_W16, h->d_W, vd, 0);
	sync_dev();
	uint16_t *w16 = xmalloc(2 * vd);
	d2h(w16, h->d_W16, 2 * vd);
	size_t diff = 0;
	for (size_t i = 0; i < vd; i++)
		diff += w16[i] != h->W16[i];
	ck_assert_msg(diff == 0, "cast_f32_to_bf16 of lm_head: %zu of %zu elements differ from "
	              "f32_to_bf16", diff, vd);
	free(w16);
}

static void head_data_free(struct head_data *h)
{
	CUDA_CHECK(cudaFree(h->d_x)); CUDA_CHECK(cudaFree(h->d_W)); CUDA_CHECK(cudaFree(h->d_W16));
	CUDA_CHECK(cudaFree(h->d_tg));
	free(h->x), free(h->W), free(h->W16), free(h->tg);
}

/* What one GPU call returns, on the host. */
struct head_out {
	float loss;
	float *tok;   /* [T] per-token losses */
	uint16_t *dx; /* [T, D] (NULL for the forward only) */
	float *dW;    /* [V, D] */
	double ms;    /* device time of the call */
	int qpath;    /* the call took the Q path (head_loss_q_path) */
};

static void head_out_free(struct head_out *o) { free(o->tok), free(o->dx), free(o->dW); }

/* One call (grad: forward_backward, else forward) with poisoned outputs;
 * D0 != NULL: dW starts as D0 and dw_beta = 1. */
static void head_run(struct gemm_ctx *g, const struct head_data *h, int chunk, int flags,
                     float cap, int grad, const float *D0, struct head_out *o)
{
	const int T = h->T;
	const size_t td = (size_t)T * HD, vd = (size_t)HV * HD;
	struct head_loss *hl = head_loss_create(T, HV, HD, chunk, flags);
	o->qpath = head_loss_q_path(hl, cap);
	uint16_t *ddx = grad ? dalloc(2 * td) : NULL;
	float *ddW = grad ? dalloc(4 * vd) : NULL, *dloss = dalloc(4);
	if (grad) {
		poison(ddx, 2 * td);
		if (D0)
			h2d(ddW, D0, 4 * vd);
		else
			poison(ddW, 4 * vd);
	}
	poison(dloss, 4);
	cudaEvent_t e0, e1;
	CUDA_CHECK(cudaEventCreate(&e0)); CUDA_CHECK(cudaEventCreate(&e1));
	CUDA_CHECK(cudaEventRecord(e0, gemm_stream(g)));
	if (grad)
		head_loss_forward_backward(hl, g, h->d_x, h->d_W16, h->d_tg, T, cap, ddx, ddW,
		                           D0 ? 1.0f : 0.0f, dloss);
	else
		head_loss_forward(hl, g, h->d_x, h->d_W16, h->d_tg, T, cap, dloss);
	CUDA_CHECK(cudaEventRecord(e1, gemm_stream(g)));
	CUDA_CHECK(cudaEventSynchronize(e1));
	float ms = 0;
	CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
	o->ms = ms;
	sync_dev();
	d2h(&o->loss, dloss, 4);
	o->tok = xmalloc(4 * (size_t)T);
	d2h(o->tok, head_loss_token_losses(hl), 4 * (size_t)T);
	o->dx = NULL, o->dW = NULL;
	if (grad) {
		o->dx = xmalloc(2 * td), o->dW = xmalloc(4 * vd);
		d2h(o->dx, ddx, 2 * td), d2h(o->dW, ddW, 4 * vd);
		CUDA_CHECK(cudaFree(ddx)); CUDA_CHECK(cudaFree(ddW));
	}
	CUDA_CHECK(cudaFree(dloss));
	CUDA_CHECK(cudaEventDestroy(e0)); CUDA_CHECK(cudaEventDestroy(e1));
	head_loss_free(hl);
}

/* The reference, in double, for rows[0..S) of h: per-token loss with the
 * logits rounded to bf16 as the GPU rounds them (loss) and without
 * (loss_x), the gradient rows dx, and (all rows only) dW. */
struct head_ref {
	double *loss, *loss_x; /* [S] */
	double *dx;            /* [S, D] */
	double *dW;            /* [V, D] or NULL */
};

struct ce_job {
	const double *L; /* [n, V] logits */
	float *dl;       /* [n, V] d loss / d logits */
	const uint32_t *tg;
	const int *rows;
	int T;
	double cap;
	double *loss, *loss_x;
};
static double capd(double l, double cap) { return cap > 0 ? cap * tanh(l / cap) : l; }
static void ce_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct ce_job *j = vctx;
	double *z = xmalloc(sizeof(double) * HV), *zx = xmalloc(sizeof(double) * HV);
	for (size_t s = b; s < e; s++) {
		const double *l = j->L + s * HV;
		const uint32_t y = j->tg[j->rows[s]];
		double mx = -INFINITY, mxx = -INFINITY;
		for (int v = 0; v < HV; v++) {
			z[v] = capd(round_bf16((float)l[v]), j->cap);
			zx[v] = capd(l[v], j->cap);
			mx = z[v] > mx ? z[v] : mx;
			mxx = zx[v] > mxx ? zx[v] : mxx;
		}
		double sum = 0, sumx = 0;
		for (int v = 0; v < HV; v++) {
			sum += exp(z[v] - mx);
			sumx += exp(zx[v] - mxx);
		}
		double lse = mx + log(sum);
		j->loss[s] = lse - z[y];
		j->loss_x[s] = mxx + log(sumx) - zx[y];
		float *d = j->dl + s * HV;
		for (int v = 0; v < HV; v++) {
			double gr = (exp(z[v] - lse) - (v == (int)y ? 1.0 : 0.0)) / j->T;
			if (j->cap > 0) {
				double th = z[v] / j->cap;
				gr *= 1 - th * th;
			}
			d[v] = (float)gr;
		}
	}
	free(z), free(zx);
	(void)tid;
}

#define DWB 32
struct dwacc_job {
	double *dW;
	const float *dl, *xs;
	int n;
};
/* dW[v, :] += sum over the chunk's rows s of dl[s, v] x[s, :]: fp32 sums
 * over the (at most 256) rows of a chunk, added into double. */
static void dwacc_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct dwacc_job *j = vctx;
	float *acc = xmalloc(sizeof(float) * DWB * HD);
	for (size_t blk = b; blk < e; blk++) {
		int v0 = (int)blk * DWB, v1 = v0 + DWB < HV ? v0 + DWB : HV;
		memset(acc, 0, sizeof(float) * DWB * HD);
		for (int s = 0; s < j->n; s++) {
			const float *xr = j->xs + (size_t)s * HD, *dr = j->dl + (size_t)s * HV;
			for (int v = v0; v < v1; v++) {
				float a = dr[v], *o = acc + (size_t)(v - v0) * HD;
				for (int k = 0; k < HD; k++)
					o[k] += a * xr[k];
			}
		}
		for (int v = v0; v < v1; v++)
			for (int k = 0; k < HD; k++)
				j->dW[(size_t)v * HD + k] += acc[(size_t)(v - v0) * HD + k];
	}
	free(acc);
	(void)tid;
}

static void head_reference(const struct head_data *h, const int *rows, int S, float cap,
                           int with_dw, struct head_ref *r)
{
	const size_t vd = (size_t)HV * HD;
	float *Wb = to_f32(h->W16, vd), *Wt = transpose_bf16(h->W16, HV, HD);
	r->loss = xmalloc(sizeof(double) * S), r->loss_x = xmalloc(sizeof(double) * S);
	r->dx = xmalloc(sizeof(double) * (size_t)S * HD);
	r->dW = with_dw ? xcalloc(vd, sizeof(double)) : NULL;
	enum { RB = 256 };
	double *L = xmalloc(sizeof(double) * RB * HV);
	float *dl = xmalloc(sizeof(float) * RB * HV);
	for (int s0 = 0; s0 < S; s0 += RB) {
		int n = S - s0 < RB ? S - s0 : RB;
		float *xs = gather_rows(h->x, HD, rows + s0, n);
		ref_nt(L, xs, Wb, n, HV, HD, 0);
		struct ce_job cj = {L, dl, h->tg, rows + s0, h->T, cap, r->loss + s0, r->loss_x + s0};
		parallel_for((size_t)n, ce_range, &cj);
		ref_nt(r->dx + (size_t)s0 * HD, dl, Wt, n, HD, HV, 0);
		if (with_dw) {
			struct dwacc_job dj = {r->dW, dl, xs, n};
			parallel_for((HV + DWB - 1) / DWB, dwacc_range, &dj);
		}
		free(xs);
	}
	free(L), free(dl), free(Wb), free(Wt);
}

static void head_ref_free(struct head_ref *r) { free(r->loss), free(r->loss_x), free(r->dx), free(r->dW); }

/* Compare a forward_backward output (dW already minus D0 if any) with the
 * reference over rows[0..S); all = 1 when the rows are all T tokens. */
struct head_cmp {
	double mean_err, mean_err_x;  /* |mean - ref| / |ref|, vs exact logits */
	double tok_max, tok_rms;      /* per-token |loss - ref| */
	double dx_err, dw_err;        /* relative norms (dw: all only) */
	double ref_mean;
};
static void head_compare(const struct head_data *h, const struct head_out *o, const float *D0,
                         const int *rows, int S, const struct head_ref *r, int all,
                         struct head_cmp *c)
{
	double sum = 0, sumx = 0, mx = 0, sq = 0;
	for (int s = 0; s < S; s++) {
		double d = fabs((double)o->tok[rows[s]] - r->loss[s]);
		if (!(d <= mx))
			mx = d; /* NaN wins */
		sq += d * d;
		sum += r->loss[s], sumx += r->loss_x[s];
	}
	c->tok_max = mx, c->tok_rms = sqrt(sq / S);
	c->ref_mean = sum / S;
	c->mean_err = all ? fabs((double)o->loss - sum / S) / fabs(sum / S) : 0;
	c->mean_err_x = all ? fabs((double)o->loss - sumx / S) / fabs(sumx / S) : 0;
	struct relerr ex = {0, 0}, ew = {0, 0};
	for (int s = 0; s < S; s++)
		for (int d = 0; d < HD; d++)
			rel_add(&ex, bf(o->dx[(size_t)rows[s] * HD + d]), r->dx[(size_t)s * HD + d]);
	c->dx_err = rel(&ex);
	c->dw_err = 0;
	if (all && r->dW) {
		for (size_t i = 0; i < (size_t)HV * HD; i++)
			rel_add(&ew, (double)o->dW[i] - (D0 ? (double)D0[i] : 0.0), r->dW[i]);
		c->dw_err = rel(&ew);
	}
}

/* The chunk head_loss_create uses for these arguments. */
static int eff_chunk(int T, int chunk)
{
	int c = chunk > 0 ? chunk : HEAD_LOSS_CHUNK_DEFAULT;
	return c > T ? T : c;
}

/* Mean of the GPU's own per-token losses in double. */
static double tok_mean(const float *tok, int T)
{
	double s = 0;
	for (int t = 0; t < T; t++)
		s += tok[t];
	return s / T;
}

/* Loss, dx, dW against the reference, determinism, the forward-only
 * path; T tokens, chunk rows per chunk, sample = 0: every row and dW,
 * else that many sampled rows (chunk edges included) and no dW. */
static void head_case(struct gemm_ctx *g, int T, int chunk, int sample, uint64_t seed)
{
	double t0 = now();
	const float cap = 15.0f;
	struct head_data h;
	head_data_make(&h, T, seed);
	struct head_out o1, o2, of;
	head_run(g, &h, chunk, 0, cap, 1, NULL, &o1);
	head_run(g, &h, chunk, 0, cap, 1, NULL, &o2);
	head_run(g, &h, chunk, 0, cap, 0, NULL, &of);
	const size_t td = (size_t)T * HD, vd = (size_t)HV * HD;
	ck_assert_msg(o1.qpath && of.qpath, "head T=%d: the default flags at cap 15 do not take the "
	              "Q path", T);
	ck_assert_msg(nonfinite_f32(o1.tok, (size_t)T) == 0 && isfinite(o1.loss),
	              "head T=%d: %zu non-finite token losses, mean %g", T,
	              nonfinite_f32(o1.tok, (size_t)T), (double)o1.loss);
	ck_assert_msg(nonfinite_bf16(o1.dx, td) == 0, "head T=%d: dx has %zu non-finite elements", T,
	              nonfinite_bf16(o1.dx, td));
	ck_assert_msg(nonfinite_f32(o1.dW, vd) == 0, "head T=%d: dW has %zu non-finite elements", T,
	              nonfinite_f32(o1.dW, vd));
	/* bitwise repeatable, and the forward-only losses are the same bits */
	ck_assert_msg(!memcmp(&o1.loss, &o2.loss, 4) && !memcmp(o1.tok, o2.tok, 4 * (size_t)T),
	              "head T=%d: loss differs between two runs (%a vs %a)", T, (double)o1.loss,
	              (double)o2.loss);
	ck_assert_msg(!memcmp(o1.dx, o2.dx, 2 * td), "head T=%d: dx differs between two runs", T);
	ck_assert_msg(!memcmp(o1.dW, o2.dW, 4 * vd), "head T=%d: dW differs between two runs", T);
	ck_assert_msg(!memcmp(&o1.loss, &of.loss, 4) && !memcmp(o1.tok, of.tok, 4 * (size_t)T),
	              "head T=%d: forward-only loss %a differs from forward_backward's %a", T,
	              (double)of.loss, (double)o1.loss);
	/* the mean is the token losses' mean */
	double tm = tok_mean(o1.tok, T);
	ck_assert_msg(fabs(o1.loss - tm) <= 2e-7 * fabs(tm), "head T=%d: mean %.9g vs token mean %.9g",
	              T, (double)o1.loss, tm);

	int *rows = xmalloc(sizeof(int) * (size_t)T);
	int S;
	if (!sample) {
		S = T;
		for (int t = 0; t < T; t++)
			rows[t] = t;
	} else {
		int extra[64], ne = 0;
		const int ch = eff_chunk(T, chunk);
		for (int r0 = ch; r0 < T && ne < 60; r0 += ch)
			extra[ne++] = r0 - 1, extra[ne++] = r0;
		S = sample_rows(T, sample, extra, ne, seed + 9, rows);
	}
	struct head_ref r;
	double tr = now();
	head_reference(&h, rows, S, cap, !sample, &r);
	tr = now() - tr;
	struct head_cmp c;
	head_compare(&h, &o1, NULL, rows, S, &r, !sample, &c);
	double gm = 0; /* the GPU's mean over the compared rows (all, or the sample) */
	for (int q = 0; q < S; q++)
		gm += o1.tok[rows[q]];
	gm /= S;
	fprintf(stderr,
	        "gpu: head T=%d chunk=%d: loss %.6f; over the %d %s rows %.6f vs ref %.6f (rel %.1e; "
	        "vs unrounded logits %.1e); token |diff| max %.2e rms %.2e; dx %.2e; dW %s%.2e; "
	        "%.2f ms  [%.1fs, CPU reference %.1fs]\n",
	        T, chunk, (double)o1.loss, S, sample ? "sampled" : "(all)", gm, c.ref_mean, c.mean_err,
	        c.mean_err_x, c.tok_max, c.tok_rms, c.dx_err, sample ? "(not checked) " : "", c.dw_err,
	        o2.ms, now() - t0, tr);
	ck_assert_msg(c.tok_max < 0.05, "head T=%d: per-token loss off by up to %g (rms %g)", T,
	              c.tok_max, c.tok_rms);
	if (!sample) {
		ck_assert_msg(c.mean_err < 1e-4, "head T=%d: mean loss %.8g vs reference %.8g (rel %g)",
		              T, (double)o1.loss, c.ref_mean, c.mean_err);
		ck_assert_msg(c.mean_err_x < 1e-2, "head T=%d: mean loss %.8g far from the unrounded "
		              "reference (rel %g)", T, (double)o1.loss, c.mean_err_x);
		ck_assert_msg(c.dw_err < 1e-2, "head T=%d: dW error %g", T, c.dw_err);
	}
	ck_assert_msg(c.dx_err < 1e-2, "head T=%d: dx error %g", T, c.dx_err);
	head_ref_free(&r);
	free(rows);
	head_out_free(&o1), head_out_free(&o2), head_out_free(&of);
	head_data_free(&h);
}

/* a (the Q path) against b (HEAD_LOSS_LEGACY: the fast row kernel) for
 * the same inputs: per-token losses within 1e-5 max(|b|, 1), the means
 * within 1e-5 relative, dx and dW (when both have them) within 1e-2 in
 * relative norm (the tolerance of either against the reference); prints
 * the worst differences and how many elements differ at all. */
static void head_vs_legacy(const char *what, int T, const struct head_out *a,
                           const struct head_out *b)
{
	ck_assert_msg(a->qpath && !b->qpath, "%s: paths: Q %d and %d (want 1 and 0)", what, a->qpath,
	              b->qpath);
	double tok = 0, ddx = 0, ndx = 0, ddw = 0, ndw = 0;
	size_t ntok = 0, nx = 0, nw = 0;
	for (int t = 0; t < T; t++) {
		double d = fabs((double)a->tok[t] - b->tok[t]) / fmax(fabs((double)b->tok[t]), 1);
		if (!(d <= tok))
			tok = d; /* NaN wins */
		ntok += a->tok[t] != b->tok[t];
	}
	const double dm = fabs((double)a->loss - b->loss) / fabs((double)b->loss);
	if (a->dx && b->dx) {
		for (size_t i = 0; i < (size_t)T * HD; i++) {
			double x = bf(a->dx[i]), y = bf(b->dx[i]);
			ddx += (x - y) * (x - y), ndx += y * y, nx += a->dx[i] != b->dx[i];
		}
		for (size_t i = 0; i < (size_t)HV * HD; i++) {
			double x = a->dW[i], y = b->dW[i];
			ddw += (x - y) * (x - y), ndw += y * y, nw += x != y;
		}
	}
	const double ex = ndx > 0 ? sqrt(ddx / ndx) : 0, ew = ndw > 0 ? sqrt(ddw / ndw) : 0;
	fprintf(stderr,
	        "gpu: head %s, Q path vs legacy row kernel: loss %.7f vs %.7f (rel %.1e); token "
	        "losses max rel %.1e (%zu of %d differ); dx rel %.2e (%zu differ), dW rel %.2e (%zu "
	        "differ); %.2f vs %.2f ms\n",
	        what, (double)a->loss, (double)b->loss, dm, tok, ntok, T, ex, nx, ew, nw, a->ms, b->ms);
	ck_assert_msg(tok <= 1e-5 && dm <= 1e-5, "%s: Q path losses vs legacy: token max rel %g, mean "
	              "rel %g", what, tok, dm);
	ck_assert_msg(ex < 1e-2 && ew < 1e-2, "%s: Q path vs legacy: dx rel %g, dW rel %g", what, ex,
	              ew);
}

START_TEST(head_t1)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	head_case(g, 1, 0, 0, 101);
	gemm_destroy(g);
}
END_TEST

START_TEST(head_t127)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	head_case(g, 127, 0, 0, 102);
	gemm_destroy(g);
}
END_TEST

/* 4096 tokens in 4 chunks of 1024: every row, dx and dW in full. */
START_TEST(head_t4096)
{
	need_gpu();
	if (quick())
		return;
	struct gemm_ctx *g = gemm_create(0);
	head_case(g, 4096, 1024, 0, 103);
	gemm_destroy(g);
}
END_TEST

/* The record's micro-batch, default chunks: loss, sampled rows of dx. */
START_TEST(head_t65536)
{
	need_gpu();
	if (quick())
		return;
	struct gemm_ctx *g = gemm_create(0);
	struct head_loss *hl = head_loss_create(65536, HV, HD, 0, 0);
	fprintf(stderr,
	        "gpu: head T=65536: chunk %d rows, %s (the precise kernel would cache z in "
	        "shared memory: %s); head buffers %.1f MB "
	        "(logits chunk %.1f MB + token losses %.2f MB + Q path %.1f MB); + bf16 lm_head "
	        "%.1f MB, GEMM workspace %.0f MB\n",
	        head_loss_chunk_rows(hl), head_loss_q_path(hl, 15.0f) ? "Q path" : "row kernel",
	        head_loss_row_cache(hl) ? "yes" : "no", head_loss_bytes(hl) / 1e6,
	        (double)head_loss_chunk_rows(hl) * HV * 2 / 1e6, 65536.0 * 4 / 1e6,
	        (head_loss_bytes(hl) - (double)head_loss_chunk_rows(hl) * HV * 2 - 65536.0 * 4) / 1e6,
	        (double)HV * HD * 2 / 1e6, GEMM_WORKSPACE_BYTES / 1e6);
	head_loss_free(hl);
	head_case(g, 65536, 0, 192, 104);
	gemm_destroy(g);
}
END_TEST

/* The Q path against HEAD_LOSS_LEGACY at 16384 tokens (two default
 * chunks): losses, dx, dW (head_vs_legacy), forward only too; the Q path
 * twice, bit for bit. Times of both printed (second calls: warm GEMM
 * choices). */
START_TEST(head_q_vs_legacy)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	const int T = 16384;
	const size_t td = (size_t)T * HD, vd = (size_t)HV * HD;
	struct head_data h;
	head_data_make(&h, T, 108);
	struct head_out q1, q2, l1, l2, qf, lf;
	head_run(g, &h, 0, 0, 15.0f, 1, NULL, &q1);
	head_run(g, &h, 0, HEAD_LOSS_LEGACY, 15.0f, 1, NULL, &l1);
	head_run(g, &h, 0, 0, 15.0f, 1, NULL, &q2);
	head_run(g, &h, 0, HEAD_LOSS_LEGACY, 15.0f, 1, NULL, &l2);
	head_run(g, &h, 0, 0, 15.0f, 0, NULL, &qf);
	head_run(g, &h, 0, HEAD_LOSS_LEGACY, 15.0f, 0, NULL, &lf);
	ck_assert_msg(nonfinite_f32(q1.tok, (size_t)T) == 0 && nonfinite_bf16(q1.dx, td) == 0 &&
	                      nonfinite_f32(q1.dW, vd) == 0,
	              "head Q path T=%d: non-finite outputs", T);
	ck_assert_msg(!memcmp(&q1.loss, &q2.loss, 4) && !memcmp(q1.tok, q2.tok, 4 * (size_t)T) &&
	                      !memcmp(q1.dx, q2.dx, 2 * td) && !memcmp(q1.dW, q2.dW, 4 * vd),
	              "head Q path T=%d: two runs differ", T);
	ck_assert_msg(!memcmp(&q1.loss, &qf.loss, 4) && !memcmp(q1.tok, qf.tok, 4 * (size_t)T),
	              "head Q path T=%d: forward-only losses differ from forward_backward's", T);
	head_vs_legacy("T=16384 forward_backward", T, &q2, &l2);
	head_vs_legacy("T=16384 forward", T, &qf, &lf);
	head_out_free(&q1), head_out_free(&q2), head_out_free(&l1), head_out_free(&l2);
	head_out_free(&qf), head_out_free(&lf);
	head_data_free(&h);
	gemm_destroy(g);
}
END_TEST

/* Variants at T = 127: no row cache (same bits), several chunks, no
 * softcap, dW accumulation, the legacy row kernel (against the reference
 * and the Q path), out-of-range target. */
START_TEST(head_variants)
{
	need_gpu();
	struct gemm_ctx *g = gemm_create(0);
	const int T = 127;
	const size_t td = (size_t)T * HD, vd = (size_t)HV * HD;
	struct head_data h;
	head_data_make(&h, T, 105);
	int *rows = xmalloc(sizeof(int) * T);
	for (int t = 0; t < T; t++)
		rows[t] = t;
	struct head_ref r15, r0;
	head_reference(&h, rows, T, 15.0f, 1, &r15);
	head_reference(&h, rows, T, 0.0f, 1, &r0);

	/* row cache on / off: the same function; the two paths may round in a
	 * different order (seen on the H200: equal loss bits, a few other
	 * elements one rounding apart), so compare to within bf16 noise and
	 * report how many elements differ */
	struct head_out a, b;
	head_run(g, &h, 0, HEAD_LOSS_PRECISE, 15.0f, 1, NULL, &a);
	head_run(g, &h, 0, HEAD_LOSS_PRECISE | HEAD_LOSS_NO_ROW_CACHE, 15.0f, 1, NULL, &b);
	struct head_loss *probe = head_loss_create(T, HV, HD, 0, HEAD_LOSS_PRECISE);
	int cached = head_loss_row_cache(probe);
	head_loss_free(probe);
	double dtok = 0, ntok = 0, ddx = 0, ndx = 0, ddw = 0, ndw = 0;
	size_t diff = 0;
	for (int t = 0; t < T; t++) {
		dtok += ((double)a.tok[t] - b.tok[t]) * ((double)a.tok[t] - b.tok[t]);
		ntok += (double)b.tok[t] * b.tok[t];
		diff += a.tok[t] != b.tok[t];
	}
	for (size_t i = 0; i < td; i++) {
		double x = bf(a.dx[i]), y = bf(b.dx[i]);
		ddx += (x - y) * (x - y), ndx += y * y, diff += a.dx[i] != b.dx[i];
	}
	for (size_t i = 0; i < vd; i++) {
		double x = a.dW[i], y = b.dW[i];
		ddw += (x - y) * (x - y), ndw += y * y, diff += x != y;
	}
	fprintf(stderr, "gpu: head row cache %s vs off: loss %a vs %a, %zu elements differ; rel tok "
	        "%.1e dx %.1e dW %.1e\n", cached ? "on" : "(off anyway)", (double)a.loss,
	        (double)b.loss, diff, sqrt(dtok / ntok), sqrt(ddx / ndx), sqrt(ddw / ndw));
	ck_assert_msg(fabs((double)a.loss - b.loss) <= 1e-6 * fabs(b.loss) &&
	                      sqrt(dtok / ntok) < 1e-5 && sqrt(ddx / ndx) < 1e-2 && sqrt(ddw / ndw) < 1e-2,
	              "head: results with and without the shared-memory row cache differ beyond "
	              "rounding (loss %a vs %a)",
	              (double)a.loss, (double)b.loss);

	/* the precise kernel against the reference (the default, fast kernel
	 * is checked below and in every other head case) */
	{
		struct head_cmp pc;
		head_compare(&h, &a, NULL, rows, T, &r15, 1, &pc);
		fprintf(stderr, "gpu: head T=127 precise kernel: loss rel %.1e, token max %.2e, dx %.2e, "
		        "dW %.2e\n", pc.mean_err, pc.tok_max, pc.dx_err, pc.dw_err);
		ck_assert_msg(pc.mean_err < 1e-4 && pc.tok_max < 0.05 && pc.dx_err < 1e-2 &&
		                      pc.dw_err < 1e-2,
		              "head T=127 precise kernel: loss rel %g, token max %g, dx %g, dW %g",
		              pc.mean_err, pc.tok_max, pc.dx_err, pc.dw_err);
	}

	/* chunks of 32 rows (the last one 31) */
	struct head_out c;
	struct head_cmp cc;
	head_run(g, &h, 32, 0, 15.0f, 1, NULL, &c);
	head_compare(&h, &c, NULL, rows, T, &r15, 1, &cc);
	fprintf(stderr, "gpu: head T=127 chunk=32: loss rel %.1e, token max %.2e, dx %.2e, dW %.2e\n",
	        cc.mean_err, cc.tok_max, cc.dx_err, cc.dw_err);
	ck_assert_msg(cc.mean_err < 1e-4 && cc.tok_max < 0.05 && cc.dx_err < 1e-2 && cc.dw_err < 1e-2,
	              "head T=127 in chunks of 32: loss rel %g, token max %g, dx %g, dW %g",
	              cc.mean_err, cc.tok_max, cc.dx_err, cc.dw_err);

	/* softcap 0: plain cross entropy */
	struct head_out z;
	struct head_cmp cz;
	head_run(g, &h, 0, 0, 0.0f, 1, NULL, &z);
	head_compare(&h, &z, NULL, rows, T, &r0, 1, &cz);
	fprintf(stderr, "gpu: head T=127 softcap 0: loss %.5f (ref %.5f) rel %.1e, token max %.2e, "
	        "dx %.2e, dW %.2e\n", (double)z.loss, cz.ref_mean, cz.mean_err, cz.tok_max, cz.dx_err,
	        cz.dw_err);
	ck_assert_msg(cz.mean_err < 1e-4 && cz.tok_max < 0.1 && cz.dx_err < 1e-2 && cz.dw_err < 1e-2,
	              "head T=127 softcap 0: loss rel %g, token max %g, dx %g, dW %g", cz.mean_err,
	              cz.tok_max, cz.dx_err, cz.dw_err);
	ck_assert_msg(fabs(z.loss - a.loss) > 0.1, "head: softcap 0 and 15 give the same loss %g",
	              (double)z.loss);

	/* dw_beta = 1 adds into dW */
	float *D0 = xmalloc(4 * vd);
	fill(NULL, D0, vd, 1e-3, 106, FILL_UNIFORM);
	struct head_out d, f;
	struct head_cmp cd;
	head_run(g, &h, 0, 0, 15.0f, 1, NULL, &f); /* the same call with beta 0 */
	head_run(g, &h, 0, 0, 15.0f, 1, D0, &d);
	head_compare(&h, &d, D0, rows, T, &r15, 1, &cd);
	ck_assert_msg(cd.dw_err < 1e-2 && !memcmp(d.dx, f.dx, 2 * td),
	              "head: dW accumulation (beta 1) error %g", cd.dw_err);

	/* HEAD_LOSS_LEGACY (the fast row kernel) against the reference and the
	 * Q path (f), in one chunk and in chunks of 32 (c) */
	{
		struct head_out lg, lg32;
		struct head_cmp lc;
		head_run(g, &h, 0, HEAD_LOSS_LEGACY, 15.0f, 1, NULL, &lg);
		head_run(g, &h, 32, HEAD_LOSS_LEGACY, 15.0f, 1, NULL, &lg32);
		head_compare(&h, &lg, NULL, rows, T, &r15, 1, &lc);
		fprintf(stderr, "gpu: head T=127 legacy row kernel: loss rel %.1e, token max %.2e, dx "
		        "%.2e, dW %.2e\n", lc.mean_err, lc.tok_max, lc.dx_err, lc.dw_err);
		ck_assert_msg(lc.mean_err < 1e-4 && lc.tok_max < 0.05 && lc.dx_err < 1e-2 &&
		                      lc.dw_err < 1e-2,
		              "head T=127 legacy row kernel: loss rel %g, token max %g, dx %g, dW %g",
		              lc.mean_err, lc.tok_max, lc.dx_err, lc.dw_err);
		head_vs_legacy("T=127", T, &f, &lg);
		head_vs_legacy("T=127 chunk=32", T, &c, &lg32);
		head_out_free(&lg), head_out_free(&lg32);
	}
	head_out_free(&f);

	/* a target >= V: that token's loss and the mean are NaN, the others not */
	struct head_data h3;
	head_data_make(&h3, 3, 107);
	h3.tg[1] = HV;
	h2d(h3.d_tg, h3.tg, 12);
	struct head_out n3;
	head_run(g, &h3, 0, 0, 15.0f, 0, NULL, &n3);
	ck_assert_msg(isfinite(n3.tok[0]) && isnan(n3.tok[1]) && isfinite(n3.tok[2]) && isnan(n3.loss),
	              "head: target >= V: token losses %g %g %g, mean %g (want finite, NaN, finite, "
	              "NaN)", (double)n3.tok[0], (double)n3.tok[1], (double)n3.tok[2],
	              (double)n3.loss);
	/* and with the backward (the Q path: no one-hot term for that row):
	 * the same losses, finite gradients */
	struct head_out n3g;
	head_run(g, &h3, 0, 0, 15.0f, 1, NULL, &n3g);
	ck_assert_msg(n3g.qpath && !memcmp(n3g.tok, n3.tok, 12) &&
	                      nonfinite_bf16(n3g.dx, 3 * (size_t)HD) == 0 &&
	                      nonfinite_f32(n3g.dW, vd) == 0,
	              "head: target >= V with the backward: losses %g %g %g, %zu non-finite dx, %zu "
	              "non-finite dW", (double)n3g.tok[0], (double)n3g.tok[1], (double)n3g.tok[2],
	              nonfinite_bf16(n3g.dx, 3 * (size_t)HD), nonfinite_f32(n3g.dW, vd));
	head_out_free(&n3g);

	head_out_free(&a), head_out_free(&b), head_out_free(&c), head_out_free(&z);
	head_out_free(&d), head_out_free(&n3);
	head_ref_free(&r15), head_ref_free(&r0);
	head_data_free(&h), head_data_free(&h3);
	free(rows), free(D0);
	gemm_destroy(g);
}
END_TEST

/* ------------------------------------------------------------------------
 * Casts
 */
START_TEST(casts)
{
	need_gpu();
	const size_t n = 100003;
	float *f = xmalloc(4 * (n + 1));
	fill(NULL, f, n + 1, 3.0, 300, FILL_GAUSS);
	/* special values and rounding ties */
	const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 3.4e38f,
	                    -3.4e38f, 1.00390625f, 1.01171875f, 1.0f + 1.0f / 256, 65504.0f};
	for (size_t i = 0; i < sizeof sp / sizeof *sp; i++)
		f[1 + 7 * i] = sp[i];
	float *df = dalloc(4 * (n + 1));
	uint16_t *db = dalloc(2 * (n + 1)), *hb = xmalloc(2 * (n + 1));
	h2d(df, f, 4 * (n + 1));
	for (int off = 0; off < 2; off++) { /* 16-byte aligned, then not */
		poison(db, 2 * (n + 1));
		cast_f32_to_bf16(db + off, df + off, n, 0);
		sync_dev();
		d2h(hb, db, 2 * (n + 1));
		size_t bad = 0;
		for (size_t i = 0; i < n; i++) {
			uint16_t want = f32_to_bf16(f[i + off]), got = hb[i + off];
			bad += isnan(f[i + off]) ? !isnan(bf(got)) : got != want;
		}
		if (off)
			bad += hb[0] != 0xffff; /* the element before is untouched */
		else
			bad += hb[n] != 0xffff; /* the element after is untouched */
		ck_assert_msg(bad == 0, "cast_f32_to_bf16 (offset %d): %zu elements wrong", off, bad);
	}
	/* bf16 -> fp32: every bit pattern, exactly */
	uint16_t *all = xmalloc(2 * 65537);
	for (uint32_t i = 0; i < 65537; i++)
		all[i] = (uint16_t)i;
	uint16_t *dall = dalloc(2 * 65537);
	float *dout = dalloc(4 * 65537), *out = xmalloc(4 * 65537);
	h2d(dall, all, 2 * 65537);
	for (int off = 0; off < 2; off++) {
		poison(dout, 4 * 65537);
		cast_bf16_to_f32(dout + off, dall + off, 65536, 0);
		sync_dev();
		d2h(out, dout, 4 * 65537);
		size_t bad = 0;
		for (uint32_t i = 0; i < 65536; i++) {
			float want = bf16_to_f32(all[i + off]);
			bad += memcmp(&out[i + off], &want, 4) != 0;
		}
		ck_assert_msg(bad == 0, "cast_bf16_to_f32 (offset %d): %zu patterns wrong", off, bad);
	}
	cast_f32_to_bf16(db, df, 0, 0); /* n = 0 is a no-op */
	sync_dev();
	CUDA_CHECK(cudaFree(df)); CUDA_CHECK(cudaFree(db)); CUDA_CHECK(cudaFree(dall));
	CUDA_CHECK(cudaFree(dout));
	free(f), free(hb), free(all), free(out);
}
END_TEST

/* ------------------------------------------------------------------------
 * Adam
 */
/* Distance in units in the last place (NaN: only NaN == NaN). */
static int64_t ulp32(float a, float b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b) ? 0 : INT64_MAX;
	int32_t ia, ib;
	memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
	int64_t ka = ia >= 0 ? ia : (int64_t)INT32_MIN - ia, kb = ib >= 0 ? ib : (int64_t)INT32_MIN - ib;
	return ka > kb ? ka - kb : kb - ka;
}
static int64_t ulp16(uint16_t a, uint16_t b)
{
	return ulp32(bf16_to_f32(a), bf16_to_f32(b)) >> 16;
}

/* Gradients over many magnitudes, some exact zeros. */
static void adam_grads(float *g, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	for (size_t i = 0; i < n; i++) {
		double r = u01(&s);
		g[i] = r < 0.05 ? 0.0f : (float)(urand(&s) * pow(10.0, 7 * u01(&s) - 6));
	}
}

enum adam_kind { ADAM_F32, ADAM_BF16, ADAM_BF16_GF32 };

/* Several steps of the GPU kernel against adam_update on the same data;
 * off shifts every array by one element (scalar path). */
static void adam_case(enum adam_kind kind, size_t n, int off, uint64_t seed)
{
	const int bf = kind != ADAM_F32;
	const size_t es = bf ? 2 : 4, gs = kind == ADAM_BF16 ? 2 : 4, N = n + (size_t)off;
	float *p = xmalloc(4 * N), *m = xcalloc(N, 4), *v = xcalloc(N, 4), *g = xmalloc(4 * N);
	fill(NULL, p, N, 1.0, seed, FILL_UNIFORM);
	if (bf)
		for (size_t i = 0; i < N; i++)
			p[i] = round_bf16(p[i]);
	void *dp = dalloc(es * N), *dm = dalloc(es * N), *dv = dalloc(es * N), *dg = dalloc(gs * N);
	uint16_t *hb = xmalloc(2 * N);
	float *hf = xmalloc(4 * N);
	if (bf) {
		for (size_t i = 0; i < N; i++) hb[i] = f32_to_bf16(p[i]);
		h2d(dp, hb, 2 * N);
		CUDA_CHECK(cudaMemset(dm, 0, 2 * N)); CUDA_CHECK(cudaMemset(dv, 0, 2 * N));
	} else {
		h2d(dp, p, 4 * N);
		CUDA_CHECK(cudaMemset(dm, 0, 4 * N)); CUDA_CHECK(cudaMemset(dv, 0, 4 * N));
	}
	const double lrs[] = {0.6, 0.008, 0.04, 0.6 * 0.5, 0.008 / 556};
	int64_t worst = 0;
	size_t ndiff = 0;
	for (int step = 1; step <= 5; step++) {
		adam_grads(g, N, seed * 31 + (uint64_t)step);
		if (kind == ADAM_BF16) {
			for (size_t i = 0; i < N; i++) {
				hb[i] = f32_to_bf16(g[i]);
				g[i] = bf16_to_f32(hb[i]);
			}
			h2d(dg, hb, 2 * N);
		} else {
			h2d(dg, g, 4 * N);
		}
		struct adam_hyper hy = {lrs[step - 1], ADAM_BETA1, ADAM_BETA2, ADAM_EPS, step, bf};
		if (kind == ADAM_F32)
			adam_update_gpu((float *)dp + off, (float *)dg + off, (float *)dm + off,
			                (float *)dv + off, n, &hy, 0);
		else if (kind == ADAM_BF16)
			adam_update_gpu_bf16((uint16_t *)dp + off, (uint16_t *)dg + off,
			                     (uint16_t *)dm + off, (uint16_t *)dv + off, n, &hy, 0);
		else
			adam_update_gpu_bf16_gf32((uint16_t *)dp + off, (float *)dg + off,
			                          (uint16_t *)dm + off, (uint16_t *)dv + off, n, &hy, 0);
		adam_update(p + off, g + off, m + off, v + off, n, &hy);
		sync_dev();
		float *cpu[3] = {p, m, v};
		void *dev[3] = {dp, dm, dv};
		for (int a = 0; a < 3; a++) {
			if (bf) {
				d2h(hb, dev[a], 2 * N);
				for (size_t i = 0; i < N; i++) {
					int64_t u = ulp16(hb[i], f32_to_bf16(cpu[a][i]));
					ndiff += u != 0, worst = u > worst ? u : worst;
				}
			} else {
				d2h(hf, dev[a], 4 * N);
				for (size_t i = 0; i < N; i++) {
					int64_t u = ulp32(hf[i], cpu[a][i]);
					ndiff += u != 0, worst = u > worst ? u : worst;
				}
			}
		}
	}
	static const char *const names[] = {"fp32", "bf16", "bf16 params, fp32 grads"};
	fprintf(stderr, "gpu: adam %s n=%zu%s: 5 steps, p/m/v max %lld ulp, %zu elements differ\n",
	        names[kind], n, off ? " (unaligned)" : "", (long long)worst, ndiff);
	ck_assert_msg(worst <= 1, "adam %s n=%zu off=%d: up to %lld ulp from adam_update (%zu "
	              "elements differ)", names[kind], n, off, (long long)worst, ndiff);
	CUDA_CHECK(cudaFree(dp)); CUDA_CHECK(cudaFree(dm)); CUDA_CHECK(cudaFree(dv));
	CUDA_CHECK(cudaFree(dg));
	free(p), free(m), free(v), free(g), free(hb), free(hf);
}

START_TEST(adam_vs_cpu)
{
	need_gpu();
	const size_t sizes[] = {1000003, 7, 1};
	for (int k = 0; k < 3; k++)
		for (int si = 0; si < 3; si++)
			for (int off = 0; off < 2; off++)
				adam_case((enum adam_kind)k, sizes[si], off, 400 + (uint64_t)(k * 10 + si * 2 + off));
}
END_TEST

/* ------------------------------------------------------------------------
 * Muon
 */
/* count fp32 matrices of rows x cols placed with gaps in one allocation
 * (as in a flat parameter buffer); ptr[i] = base + i * (size + gap). */
struct dmats {
	float *base;
	float *ptr[MUON_GPU_MAX_BATCH];
	size_t size;
};
static void dmats_alloc(struct dmats *d, int rows, int cols, int count)
{
	d->size = (size_t)rows * cols;
	const size_t gap = 52; /* like the 52 scalars between matrices; keeps 16-byte alignment */
	d->base = dalloc(4 * (d->size + gap) * (size_t)count);
	poison(d->base, 4 * (d->size + gap) * (size_t)count);
	for (int i = 0; i < count; i++)
		d->ptr[i] = d->base + (size_t)i * (d->size + gap);
}

/* NS5 on the GPU (no momentum) vs newton_schulz5(bf16 = 1). */
static void ns_case(int rows, int cols, int count, uint64_t seed, double *worst)
{
	const size_t sz = (size_t)rows * cols;
	struct muon_ws *ws = muon_ws_create(rows, cols, count);
	struct gemm_ctx *g = gemm_create(0);
	struct dmats G;
	dmats_alloc(&G, rows, cols, count);
	float *hG = xmalloc(4 * sz * count), *ref = xmalloc(4 * sz);
	fill(NULL, hG, sz * count, 1.0, seed, FILL_UNIFORM);
	for (int i = 0; i < count; i++)
		h2d(G.ptr[i], hG + (size_t)i * sz, 4 * sz);
	uint16_t *du = dalloc(2 * sz * count), *hu = xmalloc(2 * sz * count);
	poison(du, 2 * sz * count);
	muon_orthogonalize_gpu(g, ws, rows, cols, count, NULL, (const float *const *)G.ptr, 0.0, 5,
	                       du, sz);
	sync_dev();
	d2h(hu, du, 2 * sz * count);
	ck_assert_msg(nonfinite_bf16(hu, sz * count) == 0, "NS %dx%d: %zu non-finite outputs", rows,
	              cols, nonfinite_bf16(hu, sz * count));
	double w = 0;
	for (int i = 0; i < count; i++) {
		newton_schulz5(ref, hG + (size_t)i * sz, rows, cols, 5, 1);
		struct relerr e = {0, 0};
		size_t same = 0;
		for (size_t k = 0; k < sz; k++) {
			rel_add(&e, bf(hu[(size_t)i * sz + k]), ref[k]);
			same += f32_to_bf16(ref[k]) == hu[(size_t)i * sz + k];
		}
		fprintf(stderr, "gpu: NS5 bf16 %dx%d [%d/%d]: ||gpu - cpu|| / ||cpu|| = %.2e, %.1f%% "
		        "of elements bitwise equal\n", rows, cols, i + 1, count, rel(&e),
		        100.0 * same / sz);
		ck_assert_msg(rel(&e) < 2e-2, "NS5 %dx%d matrix %d: relative difference %g from "
		              "newton_schulz5(bf16)", rows, cols, i, rel(&e));
		w = rel(&e) > w ? rel(&e) : w;
	}
	/* the input is only read */
	float *back = xmalloc(4 * sz);
	d2h(back, G.ptr[count - 1], 4 * sz);
	ck_assert_msg(!memcmp(back, hG + (size_t)(count - 1) * sz, 4 * sz), "NS %dx%d changed its "
	              "input", rows, cols);
	*worst = w > *worst ? w : *worst;
	free(back), free(hG), free(ref), free(hu);
	CUDA_CHECK(cudaFree(G.base)); CUDA_CHECK(cudaFree(du));
	muon_ws_free(ws);
	gemm_destroy(g);
}

START_TEST(ns_vs_cpu)
{
	need_gpu();
	const int shapes[][3] = {{768, 768, 4}, {3072, 768, 2}, {768, 3072, 2}, {5, 7, 3},
	                         {33, 17, 2},   {1, 5, 1},      {7, 1, 1},      {64, 64, 2}};
	double worst = 0;
	for (int i = 0; i < 8; i++)
		ns_case(shapes[i][0], shapes[i][1], shapes[i][2], 600 + (uint64_t)i, &worst);
	fprintf(stderr, "gpu: NS5 bf16: worst ||gpu - cpu|| / ||cpu|| = %.2e (asserted < 2e-2)\n",
	        worst);
}
END_TEST

/* NS(G^T) == NS(G)^T bitwise on the GPU (one workspace serves both
 * orientations and runs the same products), and NS(0) == 0. */
START_TEST(ns_transpose_and_zero)
{
	need_gpu();
	const int r = 3072, c = 768;
	const size_t sz = (size_t)r * c;
	struct muon_ws *ws = muon_ws_create(r, c, 2);
	struct gemm_ctx *g = gemm_create(0);
	float *hG = xmalloc(4 * sz), *hGt = xmalloc(4 * sz);
	fill(NULL, hG, sz, 1.0, 700, FILL_UNIFORM);
	for (int i = 0; i < r; i++)
		for (int j = 0; j < c; j++)
			hGt[(size_t)j * r + i] = hG[(size_t)i * c + j];
	float *dG = dalloc(4 * sz), *dGt = dalloc(4 * sz), *dZ = dalloc(4 * sz);
	h2d(dG, hG, 4 * sz), h2d(dGt, hGt, 4 * sz);
	CUDA_CHECK(cudaMemset(dZ, 0, 4 * sz));
	uint16_t *du = dalloc(2 * sz * 3), *hu = xmalloc(2 * sz * 3);
	poison(du, 2 * sz * 3);
	const float *p1[1] = {dG}, *p2[1] = {dGt}, *p3[2] = {dZ, dZ};
	muon_orthogonalize_gpu(g, ws, r, c, 1, NULL, p1, 0.0, 5, du, sz);
	muon_orthogonalize_gpu(g, ws, c, r, 1, NULL, p2, 0.0, 5, du + sz, sz);
	muon_orthogonalize_gpu(g, ws, c, r, 1, NULL, p3, 0.0, 5, du + 2 * sz, sz);
	sync_dev();
	d2h(hu, du, 2 * sz * 3);
	size_t diff = 0, nz = 0;
	for (int i = 0; i < r; i++)
		for (int j = 0; j < c; j++)
			diff += hu[(size_t)i * c + j] != hu[sz + (size_t)j * r + i];
	for (size_t k = 0; k < sz; k++)
		nz += hu[2 * sz + k] != 0;
	ck_assert_msg(diff == 0, "NS(G^T) != NS(G)^T in %zu of %zu elements", diff, sz);
	ck_assert_msg(nz == 0, "NS(0) has %zu nonzero elements", nz);
	free(hG), free(hGt), free(hu);
	CUDA_CHECK(cudaFree(dG)); CUDA_CHECK(cudaFree(dGt)); CUDA_CHECK(cudaFree(dZ));
	CUDA_CHECK(cudaFree(du));
	muon_ws_free(ws);
	gemm_destroy(g);
}
END_TEST

/* Orthonormal columns: modified Gram-Schmidt (twice) on a Gaussian m x n,
 * m >= n, in double; Q column-major (column k at Q + k*m). */
struct mgs_job {
	double *Q;
	int m, j;
};
static void mgs_range(void *vctx, size_t b, size_t e, int tid)
{
	const struct mgs_job *J = vctx;
	const double *q = J->Q + (size_t)J->j * J->m;
	for (size_t k = b + (size_t)J->j + 1; k < e + (size_t)J->j + 1; k++) {
		double *a = J->Q + k * J->m, d = 0;
		for (int i = 0; i < J->m; i++)
			d += q[i] * a[i];
		for (int i = 0; i < J->m; i++)
			a[i] -= d * q[i];
	}
	(void)tid;
}
static double *orthonormal(int m, int n, uint64_t seed)
{
	double *Q = xmalloc(sizeof(double) * (size_t)m * n);
	uint64_t s = seed;
	for (size_t i = 0; i < (size_t)m * n; i++)
		Q[i] = grand(&s);
	for (int pass = 0; pass < 2; pass++)
		for (int j = 0; j < n; j++) {
			double *q = Q + (size_t)j * m, nn = 0;
			for (int i = 0; i < m; i++)
				nn += q[i] * q[i];
			nn = 1 / sqrt(nn);
			for (int i = 0; i < m; i++)
				q[i] *= nn;
			struct mgs_job J = {Q, m, j};
			parallel_for((size_t)(n - j - 1), mgs_range, &J);
		}
	return Q;
}

static double quintic5(double x)
{
	const double a = MUON_NS_A, b = MUON_NS_B, c = MUON_NS_C;
	for (int k = 0; k < 5; k++)
		x = a * x + b * x * x * x + c * x * x * x * x * x;
	return x;
}

struct sv_stats {
	double lo, hi, off, pred;
};
/* D = Q1^T X Q2 for X (rows x n, rows = m >= n): diagonal band over the
 * singular values with x = s/||s|| >= 3e-3, largest |off-diagonal|, largest
 * |diagonal - quintic^5(x)|. */
static void sv_stats(const float *X, const float *Q1c, const float *Q2c, const double *s,
                     double fro, int m, int n, struct sv_stats *st)
{
	double *T1 = xmalloc(sizeof(double) * (size_t)m * n), *D = xmalloc(sizeof(double) * (size_t)n * n);
	ref_nt(T1, X, Q2c, m, n, n, 0); /* X Q2: rows of Q2c are Q2's columns */
	float *T1t = xmalloc(sizeof(float) * (size_t)m * n);
	for (int i = 0; i < m; i++)
		for (int k = 0; k < n; k++)
			T1t[(size_t)k * m + i] = (float)T1[(size_t)i * n + k];
	ref_nt(D, Q1c, T1t, n, n, m, 0); /* Q1^T (X Q2) */
	st->lo = 1e9, st->hi = 0, st->off = 0, st->pred = 0;
	for (int a = 0; a < n; a++)
		for (int b = 0; b < n; b++) {
			double d = D[(size_t)a * n + b];
			if (a != b) {
				st->off = fabs(d) > st->off ? fabs(d) : st->off;
				continue;
			}
			double x = s[a] / (fro + 1e-7), pe = fabs(d - quintic5(x));
			st->pred = pe > st->pred ? pe : st->pred;
			if (x >= 3e-3)
				st->lo = d < st->lo ? d : st->lo, st->hi = d > st->hi ? d : st->hi;
		}
	free(T1), free(D), free(T1t);
}

/* G = Q1 diag(s) Q2^T with known singular vectors, s log-spaced over
 * [smin, 1]; the GPU's NS5 (and, for comparison, the CPU's bf16 NS5) must
 * map each singular value x = s/||s|| into the quintic's band with the
 * singular vectors kept (check_optim.c's test, at the record's sizes). */
static void ns_band_case(int rows, int cols, double smin, uint64_t seed)
{
	const int m = rows, n = cols; /* tall or square: m >= n */
	const size_t sz = (size_t)m * n;
	double *Q1 = orthonormal(m, n, seed), *Q2 = orthonormal(n, n, seed + 1);
	double *s = xmalloc(sizeof(double) * n), fro = 0;
	for (int k = 0; k < n; k++) {
		s[k] = pow(smin, (double)k / (n - 1));
		fro += s[k] * s[k];
	}
	fro = sqrt(fro);
	float *Q1s = xmalloc(4 * sz), *Q2r = xmalloc(4 * (size_t)n * n);
	float *Q1c = xmalloc(4 * sz), *Q2c = xmalloc(4 * (size_t)n * n);
	for (int i = 0; i < m; i++)
		for (int k = 0; k < n; k++)
			Q1s[(size_t)i * n + k] = (float)(Q1[(size_t)k * m + i] * s[k]);
	for (size_t i = 0; i < sz; i++)
		Q1c[i] = (float)Q1[i];
	for (int j = 0; j < n; j++)
		for (int k = 0; k < n; k++)
			Q2r[(size_t)j * n + k] = (float)Q2[(size_t)k * n + j], Q2c[(size_t)k * n + j] = (float)Q2[(size_t)k * n + j];
	double *Gd = xmalloc(sizeof(double) * sz);
	ref_nt(Gd, Q1s, Q2r, m, n, n, 0); /* G = (Q1 S) Q2^T */
	float *G = xmalloc(4 * sz), *X = xmalloc(4 * sz);
	for (size_t i = 0; i < sz; i++)
		G[i] = (float)Gd[i];
	struct muon_ws *ws = muon_ws_create(rows, cols, 1);
	struct gemm_ctx *g = gemm_create(0);
	float *dG = dalloc(4 * sz);
	uint16_t *du = dalloc(2 * sz), *hu = xmalloc(2 * sz);
	h2d(dG, G, 4 * sz);
	poison(du, 2 * sz);
	const float *pp[1] = {dG};
	muon_orthogonalize_gpu(g, ws, rows, cols, 1, NULL, pp, 0.0, 5, du, sz);
	sync_dev();
	d2h(hu, du, 2 * sz);
	for (size_t i = 0; i < sz; i++)
		X[i] = bf(hu[i]);
	struct sv_stats sg, sc;
	sv_stats(X, Q1c, Q2c, s, fro, m, n, &sg);
	newton_schulz5(X, G, rows, cols, 5, 1);
	sv_stats(X, Q1c, Q2c, s, fro, m, n, &sc);
	fprintf(stderr, "gpu: NS5 band %dx%d (s/|s| in [%.1e, %.2f]): GPU [%.4f, %.4f] off-diag %.2e "
	        "quintic err %.3f | CPU bf16 [%.4f, %.4f] off-diag %.2e quintic err %.3f\n", rows,
	        cols, smin / fro, 1 / fro, sg.lo, sg.hi, sg.off, sg.pred, sc.lo, sc.hi, sc.off,
	        sc.pred);
	ck_assert_msg(sg.lo >= 0.62 && sg.hi <= 1.26, "NS5 %dx%d on the GPU: singular values [%g, %g] "
	              "outside [0.62, 1.26]", rows, cols, sg.lo, sg.hi);
	ck_assert_msg(sg.off < 0.05, "NS5 %dx%d on the GPU: singular vectors moved (off-diagonal %g)",
	              rows, cols, sg.off);
	ck_assert_msg(sg.pred < 0.08 + sc.pred, "NS5 %dx%d on the GPU: diagonal %g from the scalar "
	              "quintic (CPU bf16: %g)", rows, cols, sg.pred, sc.pred);
	free(Q1), free(Q2), free(s), free(Q1s), free(Q2r), free(Q1c), free(Q2c), free(Gd), free(G);
	free(X), free(hu);
	CUDA_CHECK(cudaFree(dG)); CUDA_CHECK(cudaFree(du));
	muon_ws_free(ws);
	gemm_destroy(g);
}

START_TEST(ns_singular_values)
{
	need_gpu();
	ns_band_case(768, 768, 0.05, 800);
	if (!quick())
		ns_band_case(3072, 768, 0.05, 810);
}
END_TEST

/* Full Muon steps (momentum, NS5, apply) on a few matrices of each record
 * shape against muon_update(..., bf16 = 1): momentum buffers bitwise, the
 * weight change within bf16 noise; and the apply alone bitwise. */
START_TEST(muon_update_vs_cpu)
{
	need_gpu();
	const int shapes[][3] = {{768, 768, 3}, {3072, 768, 2}, {768, 3072, 2}};
	const double mus[2] = {0.85, 0.9}, lrs[2] = {0.05, 0.04};
	for (int si = 0; si < 3; si++) {
		const int rows = shapes[si][0], cols = shapes[si][1], count = shapes[si][2];
		const size_t sz = (size_t)rows * cols, all = sz * count;
		struct muon_ws *ws = muon_ws_create(rows, cols, count);
		struct gemm_ctx *g = gemm_create(0);
		struct dmats P, Gm, B;
		dmats_alloc(&P, rows, cols, count), dmats_alloc(&Gm, rows, cols, count);
		dmats_alloc(&B, rows, cols, count);
		float *p = xmalloc(4 * all), *p0 = xmalloc(4 * all), *gr = xmalloc(4 * all);
		float *buf = xcalloc(all, 4), *hp = xmalloc(4 * all), *hb = xmalloc(4 * all);
		fill(NULL, p, all, 0.03, 900 + (uint64_t)si, FILL_UNIFORM);
		memcpy(p0, p, 4 * all);
		for (int i = 0; i < count; i++) {
			h2d(P.ptr[i], p + (size_t)i * sz, 4 * sz);
			CUDA_CHECK(cudaMemset(B.ptr[i], 0, 4 * sz));
		}
		size_t bufdiff = 0;
		for (int step = 0; step < 2; step++) {
			fill(NULL, gr, all, 1e-3, 910 + (uint64_t)(si * 2 + step), FILL_UNIFORM);
			for (int i = 0; i < count; i++)
				h2d(Gm.ptr[i], gr + (size_t)i * sz, 4 * sz);
			muon_update_gpu(g, ws, rows, cols, count, P.ptr, (const float *const *)Gm.ptr,
			                B.ptr, lrs[step], mus[step]);
			for (int i = 0; i < count; i++)
				muon_update(p + (size_t)i * sz, gr + (size_t)i * sz, buf + (size_t)i * sz, rows,
				            cols, lrs[step], mus[step], 1);
			sync_dev();
			for (int i = 0; i < count; i++)
				d2h(hb + (size_t)i * sz, B.ptr[i], 4 * sz);
			for (size_t k = 0; k < all; k++)
				bufdiff += memcmp(&hb[k], &buf[k], 4) != 0;
		}
		for (int i = 0; i < count; i++)
			d2h(hp + (size_t)i * sz, P.ptr[i], 4 * sz);
		struct relerr e = {0, 0};
		for (size_t k = 0; k < all; k++)
			rel_add(&e, (double)hp[k] - p0[k], (double)p[k] - p0[k]);
		ck_assert_msg(nonfinite_f32(hp, all) == 0, "muon %dx%d: non-finite weights", rows, cols);
		fprintf(stderr, "gpu: muon update %dx%d x%d, 2 steps: momentum %zu elements differ; "
		        "weight change ||gpu - cpu|| / ||cpu|| = %.2e\n", rows, cols, count, bufdiff,
		        rel(&e));
		ck_assert_msg(bufdiff == 0, "muon %dx%d: momentum buffers differ from muon_momentum in "
		              "%zu elements", rows, cols, bufdiff);
		ck_assert_msg(rel(&e) < 2e-2, "muon %dx%d: weight change off by %g (relative)", rows,
		              cols, rel(&e));

		/* the apply alone: p += f32(-lr * scale) * u, bitwise */
		uint16_t *hu = xmalloc(2 * all), *du = dalloc(2 * all);
		float *uf = xmalloc(4 * all);
		fill(hu, uf, all, 0.05, 920 + (uint64_t)si, FILL_UNIFORM);
		h2d(du, hu, 2 * all);
		muon_apply_gpu(rows, cols, count, P.ptr, du, sz, 0.05, 0);
		for (int i = 0; i < count; i++)
			muon_apply(hp + (size_t)i * sz, uf + (size_t)i * sz, rows, cols, 0.05);
		sync_dev();
		size_t adiff = 0;
		for (int i = 0; i < count; i++) {
			d2h(p, P.ptr[i], 4 * sz);
			for (size_t k = 0; k < sz; k++)
				adiff += memcmp(&p[k], &hp[(size_t)i * sz + k], 4) != 0;
		}
		ck_assert_msg(adiff == 0, "muon_apply_gpu %dx%d: %zu elements differ from muon_apply",
		              rows, cols, adiff);
		free(hu), free(uf);
		CUDA_CHECK(cudaFree(du));
		free(p), free(p0), free(gr), free(buf), free(hp), free(hb);
		CUDA_CHECK(cudaFree(P.base)); CUDA_CHECK(cudaFree(Gm.base)); CUDA_CHECK(cudaFree(B.base));
		muon_ws_free(ws);
		gemm_destroy(g);
	}
}
END_TEST

/* The record's three groups at full size on one GPU (world size 1):
 * 44 attention matrices, 12 c_fc, 12 c_proj, five NS steps; every output
 * finite, two runs bitwise equal; device time reported. */
START_TEST(muon_record_groups)
{
	need_gpu();
	const int shapes[][3] = {{768, 768, 44}, {3072, 768, 12}, {768, 3072, 12}};
	struct gemm_ctx *g = gemm_create(0);
	struct muon_ws *ws[2] = {muon_ws_create(768, 768, 44), muon_ws_create(3072, 768, 12)};
	char line[400];
	int len = 0;
	for (int si = 0; si < 3; si++) {
		const int rows = shapes[si][0], cols = shapes[si][1], count = shapes[si][2];
		struct muon_ws *w = ws[si ? 1 : 0];
		const size_t sz = (size_t)rows * cols, all = sz * count;
		struct dmats Gm, B;
		dmats_alloc(&Gm, rows, cols, count), dmats_alloc(&B, rows, cols, count);
		float *hg = xmalloc(4 * all);
		fill(NULL, hg, all, 1e-3, 950 + (uint64_t)si, FILL_UNIFORM);
		for (int i = 0; i < count; i++)
			h2d(Gm.ptr[i], hg + (size_t)i * sz, 4 * sz);
		uint16_t *du = dalloc(2 * all * 2), *hu = xmalloc(2 * all * 2);
		poison(du, 2 * all * 2);
		float ms = 0;
		for (int run = 0; run < 2; run++) {
			for (int i = 0; i < count; i++)
				CUDA_CHECK(cudaMemset(B.ptr[i], 0, 4 * sz));
			cudaEvent_t e0, e1;
			CUDA_CHECK(cudaEventCreate(&e0));
			CUDA_CHECK(cudaEventCreate(&e1));
			CUDA_CHECK(cudaEventRecord(e0, gemm_stream(g)));
			muon_orthogonalize_gpu(g, w, rows, cols, count, B.ptr, (const float *const *)Gm.ptr,
			                       0.95, 5, du + (size_t)run * all, sz);
			CUDA_CHECK(cudaEventRecord(e1, gemm_stream(g)));
			CUDA_CHECK(cudaEventSynchronize(e1));
			CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
			CUDA_CHECK(cudaEventDestroy(e0));
			CUDA_CHECK(cudaEventDestroy(e1));
		}
		sync_dev();
		d2h(hu, du, 2 * all * 2);
		ck_assert_msg(nonfinite_bf16(hu, all) == 0, "muon group %dx%d x%d: %zu non-finite updates",
		              rows, cols, count, nonfinite_bf16(hu, all));
		ck_assert_msg(!memcmp(hu, hu + all, 2 * all), "muon group %dx%d x%d: two runs differ",
		              rows, cols, count);
		/* 5 steps of 4 m^2 n + 2 m^3 each (spec 12.4) */
		const double m = rows < cols ? rows : cols, n = rows < cols ? cols : rows;
		const double gf = 5.0 * (4 * m * m * n + 2 * m * m * m) * count / 1e9;
		len += snprintf(line + len, sizeof line - (size_t)len, "%s%dx%d x%d %.2f ms (%.0f TFLOP/s)",
		                si ? ", " : "", rows, cols, count, ms, ms > 0 ? gf / ms : 0);
		free(hg), free(hu);
		CUDA_CHECK(cudaFree(Gm.base));
		CUDA_CHECK(cudaFree(B.base));
		CUDA_CHECK(cudaFree(du));
	}
	fprintf(stderr, "gpu: muon momentum + NS5, record groups: %s; workspaces %.0f + %.0f MB\n",
	        line, muon_ws_bytes(ws[0]) / 1e6, muon_ws_bytes(ws[1]) / 1e6);
	muon_ws_free(ws[0]), muon_ws_free(ws[1]);
	gemm_destroy(g);
}
END_TEST


/* ------------------------------------------------------------------------
 * GPT_BENCH=1 (bench/gemm.sh): the record step's products, T = 65,536
 * tokens a micro-batch, the head in chunks of HEAD_LOSS_CHUNK_DEFAULT rows,
 * each timed with the heuristic's first GPT_BENCH_RANKS (default 8)
 * algorithms (gemm_set_rank). "fused qkv" (the q, k and v products as
 * one) and "head x2 rows" (chunks of twice the rows) are not what the
 * engine runs (per step "-"). Each time: 10 products back
 * to back between two events, median of 5. GPT_BENCH_SUSTAIN=S (seconds)
 * adds a second table: the tuned choice of each product the engine runs,
 * back to back for S seconds and then timed for S more (gpu_sustained_ms),
 * as the products run in training, with the GPU at its power limit.
 */
struct bench_prod {
	const char *name;
	int form; /* 0 gemm_fwd, 1 gemm_bwd_dx, 2 gemm_bwd_dw: (T, N, K) as they take them */
	int T, N, K;
	int per_micro; /* products of this shape in one record micro-batch */
};

struct bench_call {
	struct gemm_ctx *g;
	const struct bench_prod *b;
	uint16_t *A, *B;
	void *C;
};
static void bench_call_run(void *arg)
{
	const struct bench_call *c = arg;
	const struct bench_prod *b = c->b;
	if (b->form == 0)
		gemm_fwd(c->g, c->C, c->A, c->B, b->T, b->N, b->K);
	else if (b->form == 1)
		gemm_bwd_dx(c->g, c->C, c->A, c->B, b->T, b->N, b->K, 0.0f);
	else
		gemm_bwd_dw(c->g, c->C, c->A, c->B, b->T, b->N, b->K, 1.0f);
}
/* ms per product: 10 back to back, median of 5 */
static double bench_time(struct gemm_ctx *g, const struct bench_prod *b, uint16_t *A,
                         uint16_t *B, void *C)
{
	struct bench_call c = {g, b, A, B, C};
	return gpu_median_ms(bench_call_run, &c, 1, 5, 10);
}

START_TEST(gemm_bench)
{
	if (!getenv("GPT_BENCH"))
		return;
	if (!engine_cuda_available()) {
		printf("gemm bench: no CUDA device; skipped\n");
		return;
	}
	const char *rs = getenv("GPT_BENCH_RANKS");
	int ranks = rs ? atoi(rs) : 8;
	ck_assert_msg(ranks >= 1 && ranks <= 16, "GPT_BENCH_RANKS=%d: 1..16", ranks);
	const int T = 65536, D = 768, F = 3072, V = 50304, HC = HEAD_LOSS_CHUNK_DEFAULT;
	const struct bench_prod prods[] = {
		{"q/k/v/o", 0, T, D, D, 44},   {"fused qkv", 0, T, 3 * D, D, 0},
		{"mlp fc", 0, T, F, D, 12},    {"mlp proj", 0, T, D, F, 12},
		{"head", 0, HC, V, D, T / HC},
		{"q/k/v/o", 1, T, D, D, 44},   {"fused qkv", 1, T, 3 * D, D, 0},
		{"mlp fc", 1, T, F, D, 12},    {"mlp proj", 1, T, D, F, 12},
		{"head", 1, HC, V, D, T / HC},
		{"q/k/v/o", 2, T, D, D, 44},   {"fused qkv", 2, T, 3 * D, D, 0},
		{"mlp fc", 2, T, F, D, 12},    {"mlp proj", 2, T, D, F, 12},
		{"head", 2, HC, V, D, T / HC},
		{"head x2 rows", 0, 2 * HC, V, D, 0}, {"head x2 rows", 1, 2 * HC, V, D, 0},
		{"head x2 rows", 2, 2 * HC, V, D, 0},
	};
	const int np = (int)(sizeof prods / sizeof *prods);
	static const char *const form_name[] = {"fwd", "dx", "dW"};
	/* operands: A the [T,*] input, B the weight or second [T,*] input */
	size_t na = 0, nb = 0, nc = 0;
	for (int i = 0; i < np; i++) {
		const struct bench_prod *b = &prods[i];
		size_t t = (size_t)b->T, n = (size_t)b->N, k = (size_t)b->K;
		size_t a = b->form == 1 ? t * n : b->form == 0 ? t * k : t * n;
		size_t w = b->form == 2 ? t * k : n * k;
		size_t c = b->form == 2 ? 4 * n * k : 2 * t * (b->form == 0 ? n : k);
		na = a > na ? a : na, nb = w > nb ? w : nb, nc = c > nc ? c : nc;
	}
	uint16_t *ha = rand_bf16(na, 1.0, 91), *hb = rand_bf16(nb, 0.03, 92);
	uint16_t *A = dalloc(2 * na), *B = dalloc(2 * nb);
	void *C = dalloc(nc);
	h2d(A, ha, 2 * na), h2d(B, hb, 2 * nb);
	CUDA_CHECK(cudaMemset(C, 0, nc));
	free(ha), free(hb);
	struct gemm_ctx *g = gemm_create(0);
	printf("gemm bench: the record step's products (8 x %d tokens, head chunks of %d rows), "
	       "heuristic ranks 0..%d and the tuned choice (gemm.cuh), 10 back to back, median of "
	       "5\n",
	       T, HC, ranks - 1);
	printf("| product | form | M x N x K | per step | rank 0 ms | TFLOP/s | ms/step | best rank "
	       "| best ms | TFLOP/s | ms/step | offered | tuned ms | TFLOP/s | ms/step |\n");
	printf("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
	       "| ---: | ---: |\n");
	double tot0 = 0, totb = 0, tott = 0, tuned[sizeof prods / sizeof *prods];
	for (int i = 0; i < np; i++) {
		const struct bench_prod *b = &prods[i];
		double fl = 2.0 * b->T * (double)b->N * b->K, t0 = 0, tb = 0;
		int best = 0, offered = 0;
		for (int r = 0; r < ranks; r++) {
			gemm_set_rank(g, r);
			double t = bench_time(g, b, A, B, C);
			struct gemm_stats st = gemm_stats(g);
			if (r == 0)
				t0 = tb = t;
			offered = st.last_offered;
			if (r >= st.last_offered)
				break; /* fewer algorithms than r + 1: that was the first again */
			if (t < tb)
				tb = t, best = r;
		}
		gemm_set_rank(g, -1); /* the process's choice (timed at its first use) */
		double tt = bench_time(g, b, A, B, C);
		tuned[i] = tt;
		int per = 8 * b->per_micro;
		/* the product as cuBLAS's M x N x K: rows of C, columns, the sum */
		long long m = b->form == 2 ? b->N : b->T, n = b->form == 2 ? b->K : b->form == 0 ? b->N : b->K;
		long long k = b->form == 2 ? b->T : b->form == 0 ? b->K : b->N;
		char ps[32], s0[32], sb[32], st[32];
		snprintf(ps, sizeof ps, per ? "%d" : "-", per);
		snprintf(s0, sizeof s0, per ? "%.1f" : "-", t0 * per);
		snprintf(sb, sizeof sb, per ? "%.1f" : "-", tb * per);
		snprintf(st, sizeof st, per ? "%.1f" : "-", tt * per);
		printf("| %s | %s | %lld x %lld x %lld | %s | %.3f | %.0f | %s | %d | %.3f | %.0f | %s | "
		       "%d | %.3f | %.0f | %s |\n",
		       b->name, form_name[b->form], m, n, k, ps, t0, fl / t0 * 1e-9, s0, best, tb,
		       fl / tb * 1e-9, sb, offered, tt, fl / tt * 1e-9, st);
		fflush(stdout);
		tot0 += t0 * per, totb += tb * per, tott += tt * per;
	}
	printf("record step's products: %.1f ms at rank 0, %.1f ms with the best rank of each, %.1f ms "
	       "tuned\n",
	       tot0, totb, tott);
	const char *ss = getenv("GPT_BENCH_SUSTAIN");
	double sustain = ss ? atof(ss) : 0.0;
	ck_assert_msg(sustain >= 0.0 && sustain <= 60.0, "GPT_BENCH_SUSTAIN=%s: 0..60 seconds", ss);
	if (sustain > 0.0) {
		printf("\ngemm bench, sustained: the tuned choice of each product, %.1f s back to back, then "
		       "timed over %.1f s more\n",
		       sustain, sustain);
		printf("| product | form | per step | burst ms | sustained ms | TFLOP/s | ms/step |\n");
		printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
		double tots = 0, totq = 0;
		for (int i = 0; i < np; i++) {
			const struct bench_prod *b = &prods[i];
			int per = 8 * b->per_micro;
			if (!per)
				continue;
			double fl = 2.0 * b->T * (double)b->N * b->K;
			struct bench_call c = {g, b, A, B, C};
			double tq = tuned[i], ts = gpu_sustained_ms(bench_call_run, &c, sustain);
			printf("| %s | %s | %d | %.3f | %.3f | %.0f | %.1f |\n", b->name, form_name[b->form],
			       per, tq, ts, fl / ts * 1e-9, ts * per);
			fflush(stdout);
			tots += ts * per, totq += tq * per;
		}
		printf("record step's products, sustained: %.1f ms (%.1f ms in bursts of 10)\n", tots, totq);
	}
	gemm_destroy(g);
	CUDA_CHECK(cudaFree(A));
	CUDA_CHECK(cudaFree(B));
	CUDA_CHECK(cudaFree(C));
}
END_TEST

/* ------------------------------------------------------------------------ */
static Suite *head_optim_suite(void)
{
	Suite *s = suite_create("gpu_head_optim");
	TCase *gm = tcase_create("gemm");
	tcase_add_test(gm, gemm_model_forms);
	tcase_add_test(gm, gemm_general_batched);
	tcase_add_test(gm, gemm_choices);
	tcase_set_timeout(gm, 300);
	suite_add_tcase(s, gm);
	TCase *bn = tcase_create("bench"); /* GPT_BENCH=1 only */
	tcase_add_test(bn, gemm_bench);
	tcase_set_timeout(bn, 600);
	suite_add_tcase(s, bn);
	TCase *cs = tcase_create("cast");
	tcase_add_test(cs, casts);
	tcase_set_timeout(cs, 60);
	suite_add_tcase(s, cs);
	TCase *hd = tcase_create("head");
	tcase_add_test(hd, head_t1);
	tcase_add_test(hd, head_t127);
	tcase_add_test(hd, head_variants);
	tcase_add_test(hd, head_t4096);
	tcase_add_test(hd, head_t65536);
	tcase_add_test(hd, head_q_vs_legacy);
	tcase_set_timeout(hd, 300);
	suite_add_tcase(s, hd);
	TCase *ad = tcase_create("adam");
	tcase_add_test(ad, adam_vs_cpu);
	tcase_set_timeout(ad, 120);
	suite_add_tcase(s, ad);
	TCase *mu = tcase_create("muon");
	tcase_add_test(mu, ns_vs_cpu);
	tcase_add_test(mu, ns_transpose_and_zero);
	tcase_add_test(mu, ns_singular_values);
	tcase_add_test(mu, muon_update_vs_cpu);
	tcase_add_test(mu, muon_record_groups);
	tcase_set_timeout(mu, 300);
	suite_add_tcase(s, mu);
	return s;
}

CHECK_MAIN(head_optim_suite)
