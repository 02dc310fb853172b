/*
 * gpu_mlp.c - the fused MLP products (kernels/mlp_gemm.cuh) against a CPU
 * reference in double and, on a CUDA device, against the unfused path
 * they replace (cuBLASLt gemm_fwd / gemm_bwd_dx, then relu2_forward /
 * relu2_backward).
 *
 *   fc     mlp_fc_relu2_forward: u against the reference, element by
 *          element, within  2^-7 |ref| + 2^-14 sum_k |h W|  (the two bf16
 *          roundings, fp32 summation); act bitwise equal to relu2 of the
 *          kernel's own u (computed here as relu2_fwd_kernel does, and on
 *          a device by relu2_forward itself);
 *   proj   mlp_proj_dx_relu2: du against the reference g = dy W,
 *          du = u > 0 ? 2 g u : 0, within  2 |u| tol(g) + 2^-8 |du|, and
 *          exactly +0 wherever u <= 0 (u holds negatives, zeros and -0);
 *   both   the same bits on 1, 3 CTAs and the default grid (the
 *          persistent schedule and the stage ring across tiles), and
 *          twice in a row; with a device, against the cuBLAS path: u, du
 *          within 2^-7 |cublas| + 2^-10 rms (same rule for both), the
 *          count of elements that differ at all printed;
 *   bad    unsupported shapes, misaligned and aliased pointers return -1
 *          and write nothing.
 * Shapes: M x N x K = 128 x 256 x 64 up to the record's 65536 x 3072 x
 * 768 (the CPU reference on 64 sampled rows there); in the host emulation
 * (tests/gpu/emu/run-mlp.sh, GPT_EMU) only the small ones, M <= 256.
 * Inputs: random bf16 (normal), some rows of h all zero (u = 0 exactly).
 * Seed printed; GPT_SEED=N repeats a run. Outputs are poisoned with 0xFF
 * (NaN) before each launch, so unwritten elements fail.
 *
 *   bench  GPT_BENCH=1 only: at 65536 x 3072 x 768, the fused kernels
 *          against cuBLAS + relu2 (ms, TFLOP/s), 20 back to back, median
 *          of 5.
 * Check test cases: "mlp" (fc, proj, both, bad), "bench"; CK_RUN_CASE.
 */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include <cuda_runtime.h>

#include "check_common.h"
#include "cuda_check.h"
#include "gpu_bench.h"
#include "gpu_rand.h"
#include "mlp_gemm.cuh"
#ifndef GPT_EMU
#include "gemm.cuh"
#include "relu2.cuh"
int engine_cuda_available(void); /* kernels/device.cu */
#endif

/* ------------------------------------------------------------------------
 * Random numbers (gpu_rand.h's rnd, urand, nrand, seed_test)
 */
/* n normal bf16 values of deviation sigma; with zeros, a fraction of
 * them exact +0 or -0 */
static uint16_t *rand_bf16(size_t n, double sigma, double zeros)
{
	uint16_t *p = xmalloc(2 * n);
	for (size_t i = 0; i < n; i++) {
		double z = urand();
		p[i] = z < zeros / 2 ? 0x0000 : z < zeros ? 0x8000 : f32_to_bf16((float)(sigma * nrand()));
	}
	return p;
}

static void *dmalloc(size_t n)
{
	void *p;
	CUDA_CHECK(cudaMalloc(&p, n));
	return p;
}
static void *upload(const void *h, size_t n)
{
	void *d = dmalloc(n);
	CUDA_CHECK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
	return d;
}
static uint16_t *download(const void *d, size_t n)
{
	uint16_t *h = xmalloc(n);
	CUDA_CHECK(cudaDeviceSynchronize());
	CUDA_CHECK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
	return h;
}
static void dfree(void *d) { CUDA_CHECK(cudaFree(d)); }
static void poison(void *d, size_t n) { CUDA_CHECK(cudaMemset(d, 0xFF, n)); }

/* relu2_fwd_kernel's and relu2_bwd_kernel's arithmetic, in fp32 */
static uint16_t relu2_bits(uint16_t u)
{
	float v = bf16_to_f32(u), r = v > 0.0f ? v : 0.0f;
	return f32_to_bf16(r * r);
}

/* ------------------------------------------------------------------------
 * CPU reference on rows: ref[r][n] = sum_k A[row][k] B(k, n) in double,
 * and sum_k |..| (the scale of the fp32 summation error). B is [N,K]
 * (bt = 0) or [K,N] (bt = 1).
 */
static void ref_row(const uint16_t *A, const uint16_t *B, int bt, int row, int N, int K,
                    double *ref, double *mag)
{
	for (int n = 0; n < N; n++)
		ref[n] = mag[n] = 0;
	for (int k = 0; k < K; k++) {
		const double a = bf16_to_f32(A[(size_t)row * K + k]);
		if (a == 0)
			continue;
		for (int n = 0; n < N; n++) {
			const double b = bf16_to_f32(bt ? B[(size_t)k * N + n] : B[(size_t)n * K + k]);
			ref[n] += a * b;
			mag[n] += fabs(a * b);
		}
	}
}

/* the rows the reference covers: all for small M, else 64 spread ones
 * (the first and last of the tensor among them) */
static int ref_rows(int M, int i) { return M <= 512 ? i : (int)((long long)i * (M - 1) / 63); }
static int ref_nrows(int M) { return M <= 512 ? M : 64; }

/* failures so far and the first one's message */
static int nfail;
static char first_fail[512];
#define EXPECT(cond, ...)                                                      \
	do {                                                                   \
		if (!(cond) && nfail++ == 0)                                   \
			snprintf(first_fail, sizeof first_fail, __VA_ARGS__);  \
	} while (0)
#define EXPECT_NONE(what)                                                      \
	do {                                                                   \
		ck_assert_msg(nfail == 0, "%s: %d failures, first: %s", what, nfail, \
		              first_fail);                                     \
		nfail = 0;                                                     \
	} while (0)

static double tol_sum(double ref, double mag) { return 0x1p-7 * fabs(ref) + 0x1p-14 * mag; }

/* u and act of the fc product against the reference (failures counted by EXPECT) */
static void check_fc(const uint16_t *u, const uint16_t *act, const uint16_t *h,
                     const uint16_t *W, int M, int N, int K, const char *tag)
{
	double *ref = xmalloc(sizeof(double) * N), *mag = xmalloc(sizeof(double) * N);
	double worst = 0;
	for (int i = 0; i < ref_nrows(M); i++) {
		const int r = ref_rows(M, i);
		ref_row(h, W, 0, r, N, K, ref, mag);
		for (int n = 0; n < N; n++) {
			const size_t e = (size_t)r * N + n;
			const double got = bf16_to_f32(u[e]), tol = tol_sum(ref[n], mag[n]);
			const double err = fabs(got - ref[n]);
			worst = err / tol > worst ? err / tol : worst;
			EXPECT(err <= tol, "%s u[%d][%d] = %.6g, reference %.6g (allowed %.3g)", tag, r, n,
			       got, ref[n], tol);
		}
	}
	for (size_t e = 0; e < (size_t)M * N; e++)
		EXPECT(act[e] == relu2_bits(u[e]), "%s act[%zu] = 0x%04x, relu2(u = 0x%04x) = 0x%04x",
		       tag, e, act[e], u[e], relu2_bits(u[e]));
	printf("  %s: u worst |err| / allowed %.3f over %d rows; act bitwise relu2(u)\n", tag,
	       worst, ref_nrows(M));
	free(ref), free(mag);
}

static void check_proj(const uint16_t *du, const uint16_t *dy, const uint16_t *W,
                       const uint16_t *u, int M, int N, int K, const char *tag)
{
	double *ref = xmalloc(sizeof(double) * N), *mag = xmalloc(sizeof(double) * N);
	double worst = 0;
	for (int i = 0; i < ref_nrows(M); i++) {
		const int r = ref_rows(M, i);
		ref_row(dy, W, 1, r, N, K, ref, mag);
		for (int n = 0; n < N; n++) {
			const size_t e = (size_t)r * N + n;
			const double x = bf16_to_f32(u[e]), got = bf16_to_f32(du[e]);
			if (!(x > 0)) {
				EXPECT(du[e] == 0, "%s du[%d][%d] = 0x%04x where u = %g: want +0", tag, r, n,
				       du[e], x);
				continue;
			}
			const double want = 2 * ref[n] * x;
			const double tol = 2 * x * tol_sum(ref[n], mag[n]) + 0x1p-8 * fabs(want);
			const double err = fabs(got - want);
			worst = err / tol > worst ? err / tol : worst;
			EXPECT(err <= tol, "%s du[%d][%d] = %.6g, reference %.6g (allowed %.3g)", tag, r, n,
			       got, want, tol);
		}
	}
	for (size_t e = 0; e < (size_t)M * N; e++) /* all written, zeros where u <= 0 */
		EXPECT(bf16_to_f32(u[e]) > 0 ? !isnan(bf16_to_f32(du[e])) : du[e] == 0,
		       "%s du[%zu] = 0x%04x (u = 0x%04x)", tag, e, du[e], u[e]);
	printf("  %s: du worst |err| / allowed %.3f over %d rows, +0 where u <= 0\n", tag, worst,
	       ref_nrows(M));
	free(ref), free(mag);
}

static void expect_same(const uint16_t *a, const uint16_t *b, size_t n, const char *what)
{
	size_t i = 0;
	while (i < n && a[i] == b[i])
		i++;
	EXPECT(i == n, "%s: element %zu differs (0x%04x, 0x%04x)", what, i, i < n ? a[i] : 0,
	       i < n ? b[i] : 0);
}

#ifndef GPT_EMU
/* the fused output against the cuBLAS path's: within 2^-7 |want| + 2^-10
 * rms(want); prints how many elements differ */
static void compare_cublas(const uint16_t *got, const uint16_t *want, size_t n, const char *tag)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++) {
		const double w = bf16_to_f32(want[i]);
		ss += w * w;
	}
	const double rms = sqrt(ss / (double)n);
	size_t diff = 0, bad = 0;
	double worst = 0;
	for (size_t i = 0; i < n; i++) {
		if (got[i] == want[i])
			continue;
		diff++;
		const double g = bf16_to_f32(got[i]), w = bf16_to_f32(want[i]);
		const double tol = 0x1p-7 * fabs(w) + 0x1p-10 * rms, err = fabs(g - w);
		worst = err / tol > worst ? err / tol : worst;
		if (!(err <= tol) && bad++ == 0)
			EXPECT(0, "%s: element %zu = %.6g, cuBLAS path %.6g", tag, i, g, w);
	}
	EXPECT(bad == 0, "%s: %zu elements off the cuBLAS path", tag, bad);
	printf("  %s vs cuBLAS path: %zu of %zu elements differ (%.3g%%), worst |err| / allowed "
	       "%.3f\n",
	       tag, diff, n, 100.0 * (double)diff / (double)n, worst);
}
#endif

/* ------------------------------------------------------------------------
 * One shape: both products on fresh inputs, on three grids, twice
 */
static void run_shape(int M, int N, int K)
{
	char tag[96];
	const size_t nA = (size_t)M * K, nW = (size_t)N * K, nC = (size_t)M * N;
	printf("M %d, N %d, K %d\n", M, N, K);
	uint16_t *h = rand_bf16(nA, 1.0, 0), *W = rand_bf16(nW, 1.0 / sqrt(K), 0);
	for (int r = 5; r < M; r += 37) /* rows of zeros: u = +0 exactly */
		memset(h + (size_t)r * K, 0, 2 * (size_t)K);
	uint16_t *dy = rand_bf16(nA, 1.0, 0), *uin = rand_bf16(nC, 1.0, 0.1);
	uint16_t *dh = upload(h, 2 * nA), *dW = upload(W, 2 * nW), *ddy = upload(dy, 2 * nA),
	         *duin = upload(uin, 2 * nC);
	uint16_t *du = dmalloc(2 * nC), *dact = dmalloc(2 * nC), *ddu = dmalloc(2 * nC);
	uint16_t *u0 = NULL, *act0 = NULL, *du0 = NULL;
	static const int grids[] = {0, 1, 3, 0};
	for (int gi = 0; gi < 4; gi++) {
		mlp_gemm_set_ctas(grids[gi]);
		poison(du, 2 * nC), poison(dact, 2 * nC), poison(ddu, 2 * nC);
		ck_assert_int_eq(mlp_fc_relu2_forward(du, dact, dh, dW, M, N, K, 0), 0);
		ck_assert_int_eq(mlp_proj_dx_relu2(ddu, ddy, dW, duin, M, N, K, 0), 0);
		uint16_t *u = download(du, 2 * nC), *act = download(dact, 2 * nC),
		         *dd = download(ddu, 2 * nC);
		if (gi == 0) {
			check_fc(u, act, h, W, M, N, K, "fc");
			check_proj(dd, dy, W, uin, M, N, K, "proj");
			u0 = u, act0 = act, du0 = dd;
			continue;
		}
		snprintf(tag, sizeof tag, "%s grid", gi == 3 ? "second run, default" : grids[gi] == 1 ? "1-CTA" : "3-CTA");
		expect_same(u, u0, nC, tag), expect_same(act, act0, nC, tag), expect_same(dd, du0, nC, tag);
		free(u), free(act), free(dd);
	}
	mlp_gemm_set_ctas(0);
	printf("  same bits on 1 and 3 CTAs and on a second run\n");
#ifndef GPT_EMU
	/* the unfused path: cuBLASLt, then relu2 */
	struct gemm_ctx *g = gemm_create(0);
	uint16_t *cu = dmalloc(2 * nC), *cact = dmalloc(2 * nC), *cdu = dmalloc(2 * nC);
	gemm_fwd(g, cu, dh, dW, M, N, K);
	relu2_forward(cact, du, nC, 0); /* relu2 of the fused kernel's u */
	gemm_bwd_dx(g, cdu, ddy, dW, M, K, N, 0.0f);
	relu2_backward(cdu, cdu, duin, nC, 0);
	uint16_t *bu = download(cu, 2 * nC), *bact = download(cact, 2 * nC),
	         *bdu = download(cdu, 2 * nC);
	compare_cublas(u0, bu, nC, "u");
	expect_same(act0, bact, nC, "act against relu2_forward of the fused u");
	printf("  act bitwise relu2_forward(u) on the device\n");
	compare_cublas(du0, bdu, nC, "du");
	free(bu), free(bact), free(bdu);
	dfree(cu), dfree(cact), dfree(cdu);
	gemm_destroy(g);
#endif
	snprintf(tag, sizeof tag, "M %d N %d K %d", M, N, K);
	EXPECT_NONE(tag);
	free(h), free(W), free(dy), free(uin), free(u0), free(act0), free(du0);
	dfree(dh), dfree(dW), dfree(ddy);
	dfree(duin), dfree(du), dfree(dact);
	dfree(ddu);
}

static int have_device(const char *what)
{
#ifdef GPT_EMU
	(void)what;
	return 1;
#else
	if (!engine_cuda_available()) {
		printf("%s: no CUDA device; skipped\n", what);
		return 0;
	}
	if (!mlp_gemm_supported(128, 256, 64)) {
		printf("%s: the fused kernels do not run here (no sm_90a build or not compute "
		       "capability 9.x); skipped\n",
		       what);
		return 0;
	}
	return 1;
#endif
}

START_TEST(mlp_small)
{
	if (!have_device("mlp"))
		return;
	seed_test("mlp small");
	run_shape(128, 256, 64);
	run_shape(256, 512, 128);
	run_shape(256, 512, 192);
	run_shape(128, 512, 512); /* 8 steps a tile: the consumers block with steps in flight */
#ifndef GPT_EMU
	run_shape(384, 768, 320);
#endif
}
END_TEST

#ifndef GPT_EMU
START_TEST(mlp_large)
{
	if (!have_device("mlp large"))
		return;
	seed_test("mlp large");
	run_shape(1024, 3072, 768);
	run_shape(4096, 3072, 768);
	run_shape(65536, 3072, 768);
}
END_TEST
#endif

/* unsupported shapes and pointers: -1 and nothing written */
START_TEST(mlp_bad)
{
	if (!have_device("mlp bad"))
		return;
	const int M = 128, N = 256, K = 64;
	const size_t nC = (size_t)M * N + 64;
	uint16_t *a = dmalloc(2 * nC), *b = dmalloc(2 * nC), *c = dmalloc(2 * nC),
	         *w = dmalloc(2 * nC), *x = dmalloc(2 * nC);
	CUDA_CHECK(cudaMemset(a, 0x11, 2 * nC));
	CUDA_CHECK(cudaMemset(b, 0x22, 2 * nC));
	ck_assert(mlp_gemm_supported(M, N, K));
	static const int shapes[][3] = {{0, 256, 64},  {64, 256, 64},  {136, 256, 64}, {128, 128, 64},
	                                {128, 384, 64}, {128, 256, 32}, {128, 256, 96}, {-128, 256, 64},
	                                {128, 256, 0}};
	for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
		const int m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
		ck_assert_msg(!mlp_gemm_supported(m, n, k), "%d %d %d supported", m, n, k);
		ck_assert_int_eq(mlp_fc_relu2_forward(a, b, c, w, m, n, k, 0), -1);
		ck_assert_int_eq(mlp_proj_dx_relu2(a, c, w, x, m, n, k, 0), -1);
	}
	/* misaligned, NULL, aliased */
	ck_assert_int_eq(mlp_fc_relu2_forward(a + 1, b, c, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, b + 4, c, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, b, c + 2, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, b, c, w + 7, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, NULL, c, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, a, c, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, b, a, w, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_fc_relu2_forward(a, b, c, b, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_proj_dx_relu2(a + 1, c, w, x, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_proj_dx_relu2(a, c, w, x + 3, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_proj_dx_relu2(a, NULL, w, x, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_proj_dx_relu2(a, a, w, x, M, N, K, 0), -1);
	ck_assert_int_eq(mlp_proj_dx_relu2(a, c, a, x, M, N, K, 0), -1);
	uint16_t *ha = download(a, 2 * nC), *hb = download(b, 2 * nC);
	for (size_t i = 0; i < nC; i++) {
		ck_assert_msg(ha[i] == 0x1111 && hb[i] == 0x2222, "element %zu written", i);
	}
	free(ha), free(hb);
	dfree(a), dfree(b), dfree(c);
	dfree(w), dfree(x);
}
END_TEST

#ifndef GPT_EMU
/* ------------------------------------------------------------------------
 * GPT_BENCH=1: the record's shape, fused against cuBLAS + relu2
 */
enum { B_FUSED_FC, B_GEMM_FC, B_RELU2_FWD, B_FUSED_PROJ, B_GEMM_DX, B_RELU2_BWD };
struct bench_bufs {
	struct gemm_ctx *g;
	uint16_t *h, *W, *u, *act, *dy, *du;
	int M, N, K;
};

static void bench_once(const struct bench_bufs *b, int what)
{
	const size_t nC = (size_t)b->M * b->N;
	switch (what) {
	case B_FUSED_FC:
		ck_assert_int_eq(mlp_fc_relu2_forward(b->u, b->act, b->h, b->W, b->M, b->N, b->K, 0), 0);
		break;
	case B_GEMM_FC:
		gemm_fwd(b->g, b->u, b->h, b->W, b->M, b->N, b->K);
		break;
	case B_RELU2_FWD:
		relu2_forward(b->act, b->u, nC, 0);
		break;
	case B_FUSED_PROJ:
		ck_assert_int_eq(mlp_proj_dx_relu2(b->du, b->dy, b->W, b->u, b->M, b->N, b->K, 0), 0);
		break;
	case B_GEMM_DX:
		gemm_bwd_dx(b->g, b->du, b->dy, b->W, b->M, b->K, b->N, 0.0f);
		break;
	default:
		relu2_backward(b->du, b->du, b->u, nC, 0);
	}
}

struct bench_call {
	const struct bench_bufs *b;
	int what;
};
static void bench_call_run(void *arg)
{
	const struct bench_call *c = arg;
	bench_once(c->b, c->what);
}
/* ms per launch: 20 back to back, median of 5 */
static double bench_ms(const struct bench_bufs *b, int what)
{
	struct bench_call c = {b, what};
	return gpu_median_ms(bench_call_run, &c, 1, 5, 20);
}

START_TEST(mlp_bench)
{
	if (!getenv("GPT_BENCH") || !have_device("mlp bench"))
		return;
	struct bench_bufs b = {.M = 65536, .N = 3072, .K = 768};
	const size_t nA = (size_t)b.M * b.K, nW = (size_t)b.N * b.K, nC = (size_t)b.M * b.N;
	rng = 12345;
	uint16_t *h = rand_bf16(nA, 1.0, 0), *W = rand_bf16(nW, 0.036, 0);
	b.h = upload(h, 2 * nA), b.dy = upload(h, 2 * nA), b.W = upload(W, 2 * nW);
	b.u = dmalloc(2 * nC), b.act = dmalloc(2 * nC), b.du = dmalloc(2 * nC);
	b.g = gemm_create(0);
	bench_once(&b, B_FUSED_FC); /* u for the backward's input */
	const double flop = 2.0 * b.M * b.N * b.K;
	const double t[6] = {bench_ms(&b, B_FUSED_FC),   bench_ms(&b, B_GEMM_FC),
	                     bench_ms(&b, B_RELU2_FWD),  bench_ms(&b, B_FUSED_PROJ),
	                     bench_ms(&b, B_GEMM_DX),    bench_ms(&b, B_RELU2_BWD)};
	printf("mlp bench: M %d, N %d, K %d (20 back to back, median of 5)\n", b.M, b.N, b.K);
	printf("  fc forward:  fused %.4f ms (%.0f TFLOP/s); cuBLAS %.4f ms (%.0f TFLOP/s) + relu2 "
	       "%.4f ms = %.4f ms; fused/unfused %.3f\n",
	       t[0], flop / t[0] * 1e-9, t[1], flop / t[1] * 1e-9, t[2], t[1] + t[2],
	       t[0] / (t[1] + t[2]));
	printf("  proj dx:     fused %.4f ms (%.0f TFLOP/s); cuBLAS %.4f ms (%.0f TFLOP/s) + relu2 "
	       "%.4f ms = %.4f ms; fused/unfused %.3f\n",
	       t[3], flop / t[3] * 1e-9, t[4], flop / t[4] * 1e-9, t[5], t[4] + t[5],
	       t[3] / (t[4] + t[5]));
	const char *ctas = getenv("GPT_MLP_CTAS"); /* e.g. "132,128,120,66" */
	for (const char *p = ctas; p && *p;) {
		const int n = atoi(p);
		if (n > 0) {
			mlp_gemm_set_ctas(n);
			const double f = bench_ms(&b, B_FUSED_FC), d = bench_ms(&b, B_FUSED_PROJ);
			printf("  %d CTAs: fc %.4f ms (%.0f TFLOP/s), proj dx %.4f ms (%.0f TFLOP/s)\n", n, f,
			       flop / f * 1e-9, d, flop / d * 1e-9);
		}
		p = strchr(p, ',');
		p = p ? p + 1 : NULL;
	}
	mlp_gemm_set_ctas(0);
	gemm_destroy(b.g);
	free(h), free(W);
	dfree(b.h), dfree(b.dy), dfree(b.W);
	dfree(b.u), dfree(b.act), dfree(b.du);
}
END_TEST
#endif

static Suite *mlp_suite(void)
{
	Suite *s = suite_create("gpu_mlp");
	TCase *t = tcase_create("mlp");
	tcase_add_test(t, mlp_bad);
	tcase_add_test(t, mlp_small);
#ifndef GPT_EMU
	tcase_add_test(t, mlp_large);
#endif
	tcase_set_timeout(t, 1200);
	suite_add_tcase(s, t);
#ifndef GPT_EMU
	TCase *b = tcase_create("bench"); /* GPT_BENCH=1 only */
	tcase_add_test(b, mlp_bench);
	tcase_set_timeout(b, 600);
	suite_add_tcase(s, b);
#endif
	return s;
}

CHECK_MAIN(mlp_suite)
