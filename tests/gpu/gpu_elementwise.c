/*
 * gpu_elementwise.c - the memory-bound kernels (kernels/embedding, rmsnorm,
 * qk_rotary, relu2, mix) against CPU references in double.
 *
 * Every check draws fresh random inputs (bf16-representable) from a seed
 * printed at the start: GPU_TEST_SEED=N repeats a run. Outputs are
 * poisoned with NaN (all bits set) before each launch, so an element the
 * kernel never wrote fails; NaN never passes. Each check prints one line:
 *   rel   ||out - ref|| / ||ref|| (limit 1e-2 for bf16 outputs, 1e-4 fp32)
 *   worst the largest |out - ref| / allowed over the elements, where
 *         allowed = rel_tol |ref| + abs_tol * rms(ref row): for bf16 outputs
 *         one bf16 ulp (2^-7 relative), for fp32 outputs 1e-5; the small
 *         absolute part covers fp32 cancellation in sums. A single wrong
 *         element fails the check even when the norm ratio stays tiny.
 *   bad   elements outside allowed, then the first one (row, column, got,
 *         want).
 * Shapes run from T = 1 to the record's T = 65,536 x D = 768 (H = 6 heads
 * of 128, MLP 3072, V = 50,304). The largest cases are also timed (median
 * of 11 runs, device events) and print GB/s for the bytes each kernel must
 * move. Test cases:
 *   relu2            forward, backward, in place
 *   rmsnorm_fwd      shapes through every register path, eps, gathered rows
 *                    (embedding + norm), out-of-range gather -> NaN row
 *   rmsnorm_bwd      plain, accumulate, extra fp32 gradient, gathered rows
 *   qk_fwd, qk_bwd   q and k in one launch, fused-buffer strides, gaps
 *                    between rows left untouched, in place, q only,
 *                    head_dim 16..256, nf = 0
 *   mix_fwd          lambda, value (with and without ve), skip, residual,
 *                    fp32 -> bf16 cast
 *   mix_bwd          outputs, scalar gradients (added to what was there),
 *                    bitwise repeatable, in place
 *   resnorm_fwd      residual_rmsnorm_forward, block_input_forward in the
 *                    engine's five uses (layer 0, encoder, first decoder
 *                    with skip == out, decoder, attention's residual):
 *                    every output bitwise equal to the unfused launchers in
 *                    sequence, over the norm's register and two-pass paths
 *   resnorm_bwd      block_input_backward in the engine's four uses (layer
 *                    0, encoder, first decoder with add == dskip over res,
 *                    decoder) and with every input apart: every output and
 *                    scalar gradient bitwise equal to rmsnorm_backward +
 *                    mix_lambda_backward + mix_skip_backward + residual_add,
 *                    rows across tiles, rows longer than a tile
 *   embedding_fwd    4 tables at once, bitwise copies, bad token -> NaN row
 *   embedding_bwd    fp32 and bf16 gradients, a token repeated 10,000 times
 *                    (EOT), one token 65,536 times, T = 1, strided dy, bad
 *                    tokens skipped, rows of absent tokens untouched, two
 *                    runs (and a rebuilt plan) bitwise identical
 *   bad_args         launchers refuse impossible shapes (exit status 1)
 * Each is a Check test case of its own: CK_RUN_CASE=qk_rotary runs one.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "check_common.h"
#include "config.h"
#include "cuda_check.h"
#include "embedding.cuh"
#include "gpu_bench.h"
#include "mix.cuh"
#include "cast.cuh"
#include "model.h"
#include "parallel.h"
#include "qk_rotary.cuh"
#include "relu2.cuh"
#include "resnorm.cuh"
#include "rmsnorm.cuh"

#define EPS_RECORD 0.0078125f /* 2^-7, spec 4.1 */
#define BF16_ULP 0x1p-7       /* relative spacing of bf16 at a power of two */
#define TOL_BF16 1e-2         /* ||out - ref|| / ||ref|| limits */
#define TOL_F32 1e-4
#define EOT 50256
#define VOCAB 50304

/* ------------------------------------------------------------------------
 * Seeds and random numbers
 */
static uint64_t base_seed;

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static double u01(uint64_t *s) { return (double)(splitmix(s) >> 11) * 0x1p-53; }

/* Seed of one input of one test: the run's seed mixed with a name. */
static uint64_t seed_of(const char *name)
{
	uint64_t h = base_seed ^ 0xcbf29ce484222325ull;
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return splitmix(&h);
}

#define FILL_CHUNK 65536
struct fill_job {
	void *p;
	size_t n;
	uint64_t seed;
	double lo, hi;
	int bf16;
};

static void fill_cb(void *ctx, size_t b, size_t e, int tid)
{
	const struct fill_job *j = ctx;
	for (size_t c = b; c < e; c++) {
		uint64_t s = j->seed ^ (c * 0xD1B54A32D192ED03ull);
		size_t i0 = c * FILL_CHUNK, i1 = i0 + FILL_CHUNK < j->n ? i0 + FILL_CHUNK : j->n;
		for (size_t i = i0; i < i1; i++) {
			float v = (float)(j->lo + (j->hi - j->lo) * u01(&s));
			if (j->bf16)
				((uint16_t *)j->p)[i] = f32_to_bf16(v);
			else
				((float *)j->p)[i] = v;
		}
	}
}

/* n values uniform in [lo, hi), as bf16 bits or fp32. */
static void fill_bf16(uint16_t *p, size_t n, const char *name, double lo, double hi)
{
	struct fill_job j = {p, n, seed_of(name), lo, hi, 1};
	parallel_for((n + FILL_CHUNK - 1) / FILL_CHUNK, fill_cb, &j);
}
static void fill_f32(float *p, size_t n, const char *name, double lo, double hi)
{
	struct fill_job j = {p, n, seed_of(name), lo, hi, 0};
	parallel_for((n + FILL_CHUNK - 1) / FILL_CHUNK, fill_cb, &j);
}

/* Multiply row r (len elements) by 10^u, u uniform in [-2, 0.7): rows from
 * mean square ~3e-5 (eps dominates) to ~8. */
struct scale_job {
	uint16_t *p;
	size_t len;
	uint64_t seed;
};
static void scale_cb(void *ctx, size_t b, size_t e, int tid)
{
	const struct scale_job *j = ctx;
	for (size_t r = b; r < e; r++) {
		uint64_t s = j->seed ^ (r * 0x9E3779B97F4A7C15ull);
		float f = (float)pow(10.0, -2.0 + 2.7 * u01(&s));
		for (size_t i = 0; i < j->len; i++) {
			uint16_t *x = j->p + r * j->len + i;
			*x = f32_to_bf16(bf16_to_f32(*x) * f);
		}
	}
}
static void scale_rows(uint16_t *p, size_t rows, size_t len, const char *name)
{
	struct scale_job j = {p, len, seed_of(name)};
	parallel_for(rows, scale_cb, &j);
}

static double bf(uint16_t h) { return (double)bf16_to_f32(h); }

/* ------------------------------------------------------------------------
 * Device helpers
 */
static void *dmalloc(size_t n)
{
	void *p = NULL;
	CUDA_CHECK(cudaMalloc(&p, n ? n : 16));
	return p;
}
static void *dcopy(const void *h, size_t n)
{
	void *d = dmalloc(n);
	CUDA_CHECK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
	return d;
}
static void upload(void *d, const void *h, size_t n)
{
	CUDA_CHECK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
}
static void download(void *h, const void *d, size_t n)
{
	CUDA_CHECK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}
static void dpoison(void *d, size_t n) { CUDA_CHECK(cudaMemset(d, 0xff, n)); }
static void dsync(void)
{
	CUDA_CHECK(cudaDeviceSynchronize());
	CUDA_CHECK(cudaGetLastError());
}
static void dfree(void *d) { CUDA_CHECK(cudaFree(d)); }

/* Scalars as fp32 in device memory. */
static float *dscalars(const float *v, int n) { return dcopy(v, sizeof(float) * (size_t)n); }

/* ------------------------------------------------------------------------
 * Result checks
 */
static int nfailed;
static char first_failure[512];

static void note_failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_failure(const char *fmt, ...)
{
	if (nfailed++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_failure, sizeof first_failure, fmt, ap);
		va_end(ap);
	}
}

/* Call at the end of every test. */
#define ASSERT_ALL_PASSED()                                                            \
	do {                                                                           \
		ck_assert_msg(nfailed == 0, "%d check(s) failed; first: %s", nfailed,  \
		              first_failure);                                          \
	} while (0)

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* Reference row r into out[0..len); NaN means "must be NaN". */
typedef void (*ref_fn)(const void *ctx, size_t r, double *out);

struct rowcheck {
	const char *what;
	size_t rows, len, ld;       /* got row r at r * ld (ld 0: len) */
	const uint16_t *g16;        /* bf16 results, or */
	const float *g32;           /* fp32 results */
	ref_fn ref;
	const void *ctx;
	double rel, abs_rms, l2;    /* tolerances (see the top of the file) */
};

struct rc_part {
	double e2, r2, worst;
	size_t nbad, nel;
	int have_bad;
	size_t bad_row, bad_col;
	double bad_got, bad_ref;
};

struct rc_job {
	const struct rowcheck *c;
	struct rc_part *part;
};

static void rc_cb(void *ctx, size_t b, size_t e, int tid)
{
	const struct rc_job *j = ctx;
	const struct rowcheck *c = j->c;
	struct rc_part *p = &j->part[tid];
	double *ref = xmalloc(sizeof(double) * c->len);
	size_t ld = c->ld ? c->ld : c->len;
	for (size_t r = b; r < e; r++) {
		c->ref(c->ctx, r, ref);
		double rs = 0;
		size_t nr = 0;
		for (size_t i = 0; i < c->len; i++)
			if (!isnan(ref[i]))
				rs += ref[i] * ref[i], nr++;
		rs = nr ? sqrt(rs / (double)nr) : 0;
		for (size_t i = 0; i < c->len; i++) {
			double got = c->g16 ? bf(c->g16[r * ld + i]) : (double)c->g32[r * ld + i];
			int bad;
			p->nel++;
			if (isnan(ref[i])) {
				bad = !isnan(got);
			} else {
				double d = got - ref[i], allowed = c->rel * fabs(ref[i]) + c->abs_rms * rs;
				bad = !(fabs(d) <= allowed);
				double ratio = allowed > 0 ? fabs(d) / allowed : (d == 0 ? 0 : INFINITY);
				if (isnan(ratio))
					ratio = INFINITY;
				if (ratio > p->worst)
					p->worst = ratio;
				p->e2 += isnan(d) ? INFINITY : d * d;
				p->r2 += ref[i] * ref[i];
			}
			if (bad) {
				if (!p->have_bad) {
					p->have_bad = 1;
					p->bad_row = r, p->bad_col = i;
					p->bad_got = got, p->bad_ref = ref[i];
				}
				p->nbad++;
			}
		}
	}
	free(ref);
}

/* Returns 1 when every element passes and the norm ratio is within c->l2. */
static int check_rows(const struct rowcheck *c)
{
	int nt = parallel_threads();
	struct rc_part *part = xcalloc((size_t)nt, sizeof *part), all = {0};
	struct rc_job j = {c, part};
	parallel_for(c->rows, rc_cb, &j);
	for (int t = 0; t < nt; t++) {
		struct rc_part *p = &part[t];
		all.e2 += p->e2, all.r2 += p->r2, all.nbad += p->nbad, all.nel += p->nel;
		all.worst = p->worst > all.worst ? p->worst : all.worst;
		if (p->have_bad && (!all.have_bad || p->bad_row < all.bad_row)) {
			all.have_bad = 1;
			all.bad_row = p->bad_row, all.bad_col = p->bad_col;
			all.bad_got = p->bad_got, all.bad_ref = p->bad_ref;
		}
	}
	free(part);
	double rel = all.r2 > 0 ? sqrt(all.e2 / all.r2) : (all.e2 > 0 ? INFINITY : 0);
	int ok = all.nbad == 0 && rel <= c->l2;
	say("  %-52s rel %.2e (<= %.0e)  worst %.3f  bad %zu/%zu%s\n", c->what, rel, c->l2,
	    all.worst, all.nbad, all.nel, ok ? "" : "  FAIL");
	if (all.have_bad)
		say("    first bad: row %zu col %zu: got %.9g want %.9g\n", all.bad_row, all.bad_col,
		    all.bad_got, all.bad_ref);
	if (!ok)
		note_failure("%s: rel %.3g, %zu bad elements (first: row %zu col %zu got %.9g want "
		             "%.9g)",
		             c->what, rel, all.nbad, all.bad_row, all.bad_col, all.bad_got,
		             all.bad_ref);
	return ok;
}

/* A scalar sum: |got - ref| <= rel |ref| + 1e-6 abs_sum (abs_sum = sum of
 * |terms|, the scale of rounding in a sum with cancellation). */
static int check_scalar(const char *what, double got, double ref, double abs_sum, double rel)
{
	double d = fabs(got - ref), allowed = rel * fabs(ref) + 1e-6 * abs_sum;
	int ok = d <= allowed;
	say("  %-52s got %.9g want %.9g  rel %.2e (<= %.0e + 1e-6 sum|terms| %.3g)%s\n", what, got,
	    ref, ref != 0 ? d / fabs(ref) : d, rel, abs_sum, ok ? "" : "  FAIL");
	if (!ok)
		note_failure("%s: got %.9g want %.9g", what, got, ref);
	return ok;
}

/* Two buffers bitwise equal. */
static int check_same(const char *what, const void *a, const void *b, size_t bytes)
{
	const unsigned char *x = a, *y = b;
	size_t i = 0, nd = 0, first = 0;
	for (; i < bytes; i++)
		if (x[i] != y[i] && nd++ == 0)
			first = i;
	say("  %-52s %s", what, nd ? "DIFFER" : "bitwise identical\n");
	if (nd) {
		say(": %zu of %zu bytes, first at byte %zu  FAIL\n", nd, bytes, first);
		note_failure("%s: %zu bytes differ, first at byte %zu", what, nd, first);
	}
	return nd == 0;
}

/* Count of the n bf16 elements at p + r * ld + col0 .. + col0 + n - 1 for
 * rows r < rows that are not the poison pattern 0xffff. */
static size_t count_written(const uint16_t *p, size_t rows, size_t ld, size_t col0, size_t n)
{
	size_t c = 0;
	for (size_t r = 0; r < rows; r++)
		for (size_t i = 0; i < n; i++)
			c += p[r * ld + col0 + i] != 0xffff;
	return c;
}

static void check_untouched(const char *what, const uint16_t *p, size_t rows, size_t ld,
                            size_t col0, size_t n)
{
	size_t c = count_written(p, rows, ld, col0, n);
	say("  %-52s %s\n", what, c ? "WRITTEN  FAIL" : "untouched");
	if (c)
		note_failure("%s: %zu elements outside the output were written", what, c);
}

/* ------------------------------------------------------------------------
 * Timing: median of 11 runs of stmt between events on the default stream;
 * bytes = what the kernel must move at least (cmp_float: gpu_bench.h).
 */
#define BENCH(what, bytes, stmt)                                                         \
	do {                                                                             \
		cudaEvent_t e0_, e1_;                                                    \
		float ms_[11];                                                           \
		CUDA_CHECK(cudaEventCreate(&e0_));                                       \
		CUDA_CHECK(cudaEventCreate(&e1_));                                       \
		for (int w_ = 0; w_ < 2; w_++) {                                         \
			stmt;                                                            \
		}                                                                        \
		for (int r_ = 0; r_ < 11; r_++) {                                        \
			CUDA_CHECK(cudaEventRecord(e0_, 0));                             \
			stmt;                                                            \
			CUDA_CHECK(cudaEventRecord(e1_, 0));                             \
			CUDA_CHECK(cudaEventSynchronize(e1_));                           \
			CUDA_CHECK(cudaEventElapsedTime(&ms_[r_], e0_, e1_));            \
		}                                                                        \
		qsort(ms_, 11, sizeof(float), cmp_float);                                \
		say("  time %-47s %8.1f us  %6.0f GB/s\n", what, 1e3 * ms_[5],           \
		    (double)(bytes) / (1e-3 * ms_[5]) / 1e9);                            \
		CUDA_CHECK(cudaEventDestroy(e0_));                                       \
		CUDA_CHECK(cudaEventDestroy(e1_));                                       \
	} while (0)

static void print_device(void)
{
	int dev = 0;
	struct cudaDeviceProp prop;
	CUDA_CHECK(cudaGetDevice(&dev));
	CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
	say("  device %d: %s, %d SMs, %.0f MiB\n", dev, prop.name, prop.multiProcessorCount,
	    (double)prop.totalGlobalMem / 1048576.0);
}

/* ------------------------------------------------------------------------
 * ReLU^2
 */
struct relu_ctx {
	const uint16_t *x, *dy;
	size_t len;
};
static void ref_relu_fwd(const void *ctx, size_t r, double *out)
{
	const struct relu_ctx *c = ctx;
	for (size_t i = 0; i < c->len; i++) {
		double x = bf(c->x[r * c->len + i]);
		out[i] = x > 0 ? x * x : 0;
	}
}
static void ref_relu_bwd(const void *ctx, size_t r, double *out)
{
	const struct relu_ctx *c = ctx;
	for (size_t i = 0; i < c->len; i++) {
		double x = bf(c->x[r * c->len + i]);
		out[i] = x > 0 ? 2 * x * bf(c->dy[r * c->len + i]) : 0;
	}
}

static void relu_case(size_t rows, size_t len, int bench)
{
	size_t n = rows * len;
	char what[128];
	uint16_t *x = xmalloc(2 * n), *dy = xmalloc(2 * n), *out = xmalloc(2 * n);
	fill_bf16(x, n, "relu.x", -3, 3);
	fill_bf16(dy, n, "relu.dy", -2, 2);
	for (size_t i = 0; i < n; i += 97) /* exact zeros: relu'(0) = 0 */
		x[i] = (i / 97) % 2 ? 0x8000 : 0;
	uint16_t *dx_ = dcopy(x, 2 * n), *ddy = dcopy(dy, 2 * n), *dout = dmalloc(2 * n);
	struct relu_ctx c = {x, dy, len};
	struct rowcheck rc = {what, rows, len, 0, out, NULL, NULL, &c, 0x1p-8, 0, TOL_BF16};

	dpoison(dout, 2 * n);
	relu2_forward(dout, dx_, n, 0);
	dsync();
	download(out, dout, 2 * n);
	snprintf(what, sizeof what, "relu2_forward [%zu x %zu]", rows, len);
	rc.ref = ref_relu_fwd;
	check_rows(&rc);

	dpoison(dout, 2 * n);
	relu2_backward(dout, ddy, dx_, n, 0);
	dsync();
	download(out, dout, 2 * n);
	snprintf(what, sizeof what, "relu2_backward [%zu x %zu]", rows, len);
	rc.ref = ref_relu_bwd;
	check_rows(&rc);

	if (bench) {
		BENCH("relu2_forward", 4.0 * n, relu2_forward(dout, dx_, n, 0));
		BENCH("relu2_backward", 6.0 * n, relu2_backward(dout, ddy, dx_, n, 0));
	}

	if (bench) /* in place on the smaller shapes only (host time) */
		goto out;
	/* in place: u over x, then dx over dy */
	relu2_forward(dx_, dx_, n, 0);
	dsync();
	download(out, dx_, 2 * n);
	snprintf(what, sizeof what, "relu2_forward in place [%zu x %zu]", rows, len);
	rc.ref = ref_relu_fwd;
	check_rows(&rc);
	upload(dx_, x, 2 * n);
	relu2_backward(ddy, ddy, dx_, n, 0);
	dsync();
	download(out, ddy, 2 * n);
	snprintf(what, sizeof what, "relu2_backward in place [%zu x %zu]", rows, len);
	rc.ref = ref_relu_bwd;
	check_rows(&rc);
out:
	dfree(dx_), dfree(ddy), dfree(dout);
	free(x), free(dy), free(out);
}

START_TEST(relu2)
{
	print_device();
	relu_case(1, 8, 0);
	relu_case(1, 3072, 0);
	relu_case(7, 3072, 0);
	relu_case(65536, 3072, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * RMS norm
 */
struct rms_ctx {
	const uint16_t *x;          /* [nrows_x, D] */
	const uint32_t *rows;       /* gather or NULL */
	int x_nrows, D;
	double eps;
	/* backward */
	const uint16_t *dy, *old;   /* [T, D]; old: dx before an accumulating call */
	const float *dy2, *rstd;    /* [T, D], [T] */
};

static long long rms_src(const struct rms_ctx *c, size_t t)
{
	if (!c->rows)
		return (long long)t;
	return c->rows[t] < (uint32_t)c->x_nrows ? (long long)c->rows[t] : -1;
}

static double rms_rstd(const struct rms_ctx *c, long long r)
{
	double s = 0;
	for (int i = 0; i < c->D; i++) {
		double v = bf(c->x[(size_t)r * c->D + i]);
		s += v * v;
	}
	return 1 / sqrt(s / c->D + c->eps);
}

static void ref_rms_y(const void *ctx, size_t t, double *out)
{
	const struct rms_ctx *c = ctx;
	long long r = rms_src(c, t);
	if (r < 0) {
		for (int i = 0; i < c->D; i++)
			out[i] = NAN;
		return;
	}
	double rs = rms_rstd(c, r);
	for (int i = 0; i < c->D; i++)
		out[i] = bf(c->x[(size_t)r * c->D + i]) * rs;
}

static void ref_rms_rstd(const void *ctx, size_t t, double *out)
{
	const struct rms_ctx *c = ctx;
	long long r = rms_src(c, t);
	out[0] = r < 0 ? NAN : rms_rstd(c, r);
}

static void ref_rms_bwd(const void *ctx, size_t t, double *out)
{
	const struct rms_ctx *c = ctx;
	const int D = c->D;
	long long r = rms_src(c, t);
	if (r < 0) {
		for (int i = 0; i < D; i++)
			out[i] = NAN;
		return;
	}
	double rs = c->rstd[t], m = 0;
	for (int i = 0; i < D; i++) {
		size_t o = t * (size_t)D + (size_t)i;
		double g = bf(c->dy[o]) + (c->dy2 ? (double)c->dy2[o] : 0);
		m += g * bf(c->x[(size_t)r * D + i]) * rs;
	}
	m /= D;
	for (int i = 0; i < D; i++) {
		size_t o = t * (size_t)D + (size_t)i;
		double g = bf(c->dy[o]) + (c->dy2 ? (double)c->dy2[o] : 0);
		double yh = bf(c->x[(size_t)r * D + i]) * rs;
		out[i] = rs * (g - yh * m) + (c->old ? bf(c->old[o]) : 0);
	}
}

/* x: T rows, or x_nrows rows gathered by random rows[] (with nbad of them
 * out of range). */
static void rms_fwd_case(int T, int D, int x_nrows, int nbad, int bench)
{
	char what[128];
	const int gather = x_nrows > 0;
	size_t nx = (size_t)(gather ? x_nrows : T) * D, ny = (size_t)T * D;
	uint16_t *x = xmalloc(2 * nx), *y = xmalloc(2 * ny);
	float *rstd = xmalloc(sizeof(float) * (size_t)T);
	uint32_t *rows = NULL;
	fill_bf16(x, nx, "rms.x", -2, 2);
	scale_rows(x, nx / D, D, "rms.scale");
	if (gather) {
		rows = xmalloc(sizeof(uint32_t) * (size_t)T);
		uint64_t s = seed_of("rms.rows");
		for (int t = 0; t < T; t++)
			rows[t] = (uint32_t)(splitmix(&s) % (uint64_t)x_nrows);
		for (int i = 0; i < nbad && i < T; i++)
			rows[splitmix(&s) % (uint64_t)T] = (uint32_t)x_nrows + (uint32_t)i * 1000u;
	}
	uint16_t *dx_ = dcopy(x, 2 * nx), *dy_ = dmalloc(2 * ny);
	float *drstd = dmalloc(sizeof(float) * (size_t)T);
	uint32_t *drows = rows ? dcopy(rows, sizeof(uint32_t) * (size_t)T) : NULL;
	dpoison(dy_, 2 * ny);
	dpoison(drstd, sizeof(float) * (size_t)T);
	rmsnorm_forward(dy_, drstd, dx_, drows, x_nrows, T, D, EPS_RECORD, 0);
	dsync();
	download(y, dy_, 2 * ny);
	download(rstd, drstd, sizeof(float) * (size_t)T);
	struct rms_ctx c = {x, rows, x_nrows, D, EPS_RECORD, NULL, NULL, NULL, NULL};
	snprintf(what, sizeof what, "rmsnorm_forward y [%d x %d]%s", T, D,
	         gather ? " gathered" : "");
	struct rowcheck rc = {what, (size_t)T, (size_t)D, 0, y, NULL, ref_rms_y, &c,
	                      BF16_ULP, 1e-6, TOL_BF16};
	check_rows(&rc);
	snprintf(what, sizeof what, "rmsnorm_forward rstd [%d]%s", T, gather ? " gathered" : "");
	struct rowcheck rr = {what, (size_t)T, 1, 0, NULL, rstd, ref_rms_rstd, &c, 1e-5, 0,
	                      TOL_F32};
	check_rows(&rr);
	if (bench)
		BENCH("rmsnorm_forward", 4.0 * ny + 4.0 * T,
		      rmsnorm_forward(dy_, drstd, dx_, drows, x_nrows, T, D, EPS_RECORD, 0));
	if (!gather && !bench) { /* in place */
		rmsnorm_forward(dx_, NULL, dx_, NULL, 0, T, D, EPS_RECORD, 0);
		dsync();
		download(y, dx_, 2 * ny);
		snprintf(what, sizeof what, "rmsnorm_forward in place [%d x %d]", T, D);
		check_rows(&rc);
	}
	dfree(dx_), dfree(dy_), dfree(drstd);
	if (drows)
		dfree(drows);
	free(x), free(y), free(rstd), free(rows);
}

START_TEST(rmsnorm_fwd)
{
	rms_fwd_case(1, 768, 0, 0, 0);
	rms_fwd_case(3, 8, 0, 0, 0);
	rms_fwd_case(33, 136, 0, 0, 0);   /* 17 vectors: part of a warp */
	rms_fwd_case(100, 1024, 0, 0, 0); /* NV = 4 */
	rms_fwd_case(64, 2048, 0, 0, 0);  /* NV = 8, the last in registers */
	rms_fwd_case(9, 2056, 0, 0, 0);   /* the two-pass path */
	rms_fwd_case(300, 768, 50, 3, 0); /* gathered, 3 rows out of range */
	rms_fwd_case(65536, 768, VOCAB, 0, 1); /* x0 = norm(embed[tokens]) */
	rms_fwd_case(65536, 768, 0, 0, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* flags: 1 accumulate, 2 dy2, 4 gather (x_nrows rows, one bad index) */
static void rms_bwd_case(int T, int D, int flags, int bench)
{
	char what[160];
	const int acc = flags & 1, has2 = flags & 2, gather = flags & 4;
	const int x_nrows = gather ? 257 : T;
	size_t nx = (size_t)x_nrows * D, ny = (size_t)T * D;
	uint16_t *x = xmalloc(2 * nx), *dy = xmalloc(2 * ny), *old = xmalloc(2 * ny);
	uint16_t *dx = xmalloc(2 * ny);
	float *dy2 = has2 ? xmalloc(4 * ny) : NULL, *rstd = xmalloc(4 * (size_t)T);
	uint32_t *rows = NULL;
	fill_bf16(x, nx, "rmsb.x", -2, 2);
	scale_rows(x, (size_t)x_nrows, D, "rmsb.scale");
	fill_bf16(dy, ny, "rmsb.dy", -1, 1);
	fill_bf16(old, ny, "rmsb.old", -1, 1);
	if (has2)
		fill_f32(dy2, ny, "rmsb.dy2", -0.5, 0.5);
	if (gather) {
		rows = xmalloc(sizeof(uint32_t) * (size_t)T);
		uint64_t s = seed_of("rmsb.rows");
		for (int t = 0; t < T; t++)
			rows[t] = (uint32_t)(splitmix(&s) % (uint64_t)x_nrows);
		rows[T / 2] = 0xffffffffu;
	}
	struct rms_ctx c = {x, rows, x_nrows, D, EPS_RECORD, dy, acc ? old : NULL, dy2, rstd};
	for (int t = 0; t < T; t++) { /* the rstd the forward saved, as fp32 */
		long long r = rms_src(&c, (size_t)t);
		rstd[t] = r < 0 ? 1.0f : (float)rms_rstd(&c, r);
	}
	uint16_t *d_x = dcopy(x, 2 * nx), *d_dy = dcopy(dy, 2 * ny), *d_dx = dmalloc(2 * ny);
	float *d_dy2 = has2 ? dcopy(dy2, 4 * ny) : NULL, *d_rstd = dcopy(rstd, 4 * (size_t)T);
	uint32_t *d_rows = rows ? dcopy(rows, sizeof(uint32_t) * (size_t)T) : NULL;
	if (acc)
		upload(d_dx, old, 2 * ny);
	else
		dpoison(d_dx, 2 * ny);
	rmsnorm_backward(d_dx, acc, d_dy, d_dy2, d_x, d_rows, x_nrows, d_rstd, T, D, 0);
	dsync();
	download(dx, d_dx, 2 * ny);
	snprintf(what, sizeof what, "rmsnorm_backward [%d x %d]%s%s%s", T, D,
	         acc ? " accumulate" : "", has2 ? " +dy2" : "", gather ? " gathered" : "");
	struct rowcheck rc = {what, (size_t)T, (size_t)D, 0, dx, NULL, ref_rms_bwd, &c,
	                      BF16_ULP, 1e-5, TOL_BF16};
	check_rows(&rc);
	if (bench)
		BENCH(what, (6.0 + (has2 ? 4 : 0) + (acc ? 2 : 0)) * ny + 4.0 * T,
		      rmsnorm_backward(d_dx, acc, d_dy, d_dy2, d_x, d_rows, x_nrows, d_rstd, T, D,
		                       0));
	if (!acc && !gather && !has2 && !bench) { /* dx over dy */
		rmsnorm_backward(d_dy, 0, d_dy, NULL, d_x, NULL, x_nrows, d_rstd, T, D, 0);
		dsync();
		download(dx, d_dy, 2 * ny);
		snprintf(what, sizeof what, "rmsnorm_backward in place [%d x %d]", T, D);
		check_rows(&rc);
	}
	dfree(d_x), dfree(d_dy), dfree(d_dx), dfree(d_rstd);
	if (d_dy2)
		dfree(d_dy2);
	if (d_rows)
		dfree(d_rows);
	free(x), free(dy), free(old), free(dx), free(dy2), free(rstd), free(rows);
}

START_TEST(rmsnorm_bwd)
{
	rms_bwd_case(1, 768, 0, 0);
	rms_bwd_case(3, 8, 0, 0);
	rms_bwd_case(33, 136, 1, 0);
	rms_bwd_case(64, 2048, 2, 0);
	rms_bwd_case(9, 2056, 3, 0);
	rms_bwd_case(100, 768, 7, 0);
	rms_bwd_case(200, 2056, 6, 0);
	rms_bwd_case(65536, 768, 1, 1); /* dx += norm backward (block inputs) */
	rms_bwd_case(65536, 768, 6, 1); /* embedding: dy + dx0 (fp32), x gathered */
	rms_bwd_case(65536, 768, 0, 0);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * QK-norm + rotary
 */
struct qk_ctx {
	const uint16_t *x;     /* forward input (bf16), row t at t * ld_x */
	const uint16_t *dout;  /* backward: gradient of the output, row t at t * ld_d */
	const float *rstd;     /* backward: [T, H] */
	size_t ld_x, ld_d;
	int H, hd, nf;
	const float *cs, *sn;  /* [T, nf] */
	double eps;
};

static double qk_rstd(const struct qk_ctx *c, size_t t, int h)
{
	const uint16_t *x = c->x + t * c->ld_x + (size_t)h * c->hd;
	double s = 0;
	for (int i = 0; i < c->hd; i++)
		s += bf(x[i]) * bf(x[i]);
	return 1 / sqrt(s / c->hd + c->eps);
}

static void ref_qk_fwd(const void *ctx, size_t t, double *out)
{
	const struct qk_ctx *c = ctx;
	const int hd = c->hd, half = hd / 2;
	for (int h = 0; h < c->H; h++) {
		const uint16_t *x = c->x + t * c->ld_x + (size_t)h * hd;
		double r = qk_rstd(c, t, h), *o = out + (size_t)h * hd;
		for (int i = 0; i < hd; i++)
			o[i] = bf(x[i]) * r;
		for (int j = 0; j < c->nf; j++) {
			double x1 = o[j], x2 = o[j + half];
			double cs = c->cs[t * (size_t)c->nf + j], sn = c->sn[t * (size_t)c->nf + j];
			o[j] = x1 * cs + x2 * sn;
			o[j + half] = -x1 * sn + x2 * cs;
		}
	}
}

static void ref_qk_rstd(const void *ctx, size_t t, double *out)
{
	const struct qk_ctx *c = ctx;
	for (int h = 0; h < c->H; h++)
		out[h] = qk_rstd(c, t, h);
}

static void ref_qk_bwd(const void *ctx, size_t t, double *out)
{
	const struct qk_ctx *c = ctx;
	const int hd = c->hd, half = hd / 2;
	for (int h = 0; h < c->H; h++) {
		const uint16_t *x = c->x + t * c->ld_x + (size_t)h * hd;
		const uint16_t *d = c->dout + t * c->ld_d + (size_t)h * hd;
		double r = c->rstd[t * (size_t)c->H + (size_t)h], *g = out + (size_t)h * hd, m = 0;
		for (int i = 0; i < hd; i++)
			g[i] = bf(d[i]);
		for (int j = 0; j < c->nf; j++) {
			double d1 = g[j], d2 = g[j + half];
			double cs = c->cs[t * (size_t)c->nf + j], sn = c->sn[t * (size_t)c->nf + j];
			g[j] = d1 * cs - d2 * sn;
			g[j + half] = d1 * sn + d2 * cs;
		}
		for (int i = 0; i < hd; i++)
			m += g[i] * bf(x[i]) * r;
		m /= hd;
		for (int i = 0; i < hd; i++)
			g[i] = r * (g[i] - bf(x[i]) * r * m);
	}
}

static void rope(int T, int nf, float **cs, float **sn)
{
	struct gpt_config c;
	gpt_config_record(&c);
	c.rope_freqs = nf;
	size_t n = (size_t)T * (size_t)(nf > 0 ? nf : 1);
	*cs = xmalloc(sizeof(float) * n);
	*sn = xmalloc(sizeof(float) * n);
	gpt_rope_table(&c, T, *cs, *sn);
}

/* Layouts of a case. */
enum {
	QK_PLAIN,   /* q, k separate [T, H hd] in and out */
	QK_FUSED,   /* q, k columns 0 and D of a [T, 3D] buffer in; out [T, D + 8] with a gap */
	QK_INPLACE, /* out over in */
	QK_QONLY    /* k = NULL */
};

static void qk_case(int T, int H, int hd, int nf, int layout, int bench)
{
	char what[160];
	const int D = H * hd;
	const size_t ld_in = layout == QK_FUSED ? 3 * (size_t)D : (size_t)D;
	const size_t ld_out = layout == QK_FUSED ? (size_t)D + 8 : (size_t)D;
	const size_t nin = (size_t)T * ld_in, nout = (size_t)T * ld_out, nr = (size_t)T * H;
	const int two = layout != QK_QONLY;
	float *cs, *sn;
	rope(T, nf, &cs, &sn);
	const char *lname[] = {"", " fused ld", " in place", " q only"};

	/* forward */
	uint16_t *in = xmalloc(2 * nin), *kin = NULL; /* host inputs (k: kin, or in + D) */
	float *rstd = xmalloc(4 * nr);
	fill_bf16(in, nin, "qk.in", -2, 2);
	scale_rows(in, nin / 8, 8, "qk.scale"); /* varied magnitudes inside heads too */
	uint16_t *d_in = dcopy(in, 2 * nin);
	uint16_t *d_qo, *d_ko;
	const uint16_t *d_q = d_in, *d_k = two ? d_in + (layout == QK_FUSED ? D : 0) : NULL;
	uint16_t *d_kin = NULL;
	if (layout == QK_PLAIN || layout == QK_INPLACE) { /* k in its own buffer */
		kin = xmalloc(2 * nin);
		fill_bf16(kin, nin, "qk.kin", -2, 2);
		scale_rows(kin, nin / 8, 8, "qk.kscale");
		d_kin = dcopy(kin, 2 * nin);
		d_k = d_kin;
	}
	const uint16_t *k_host = kin ? kin : in + D;
	uint16_t *kout = xmalloc(2 * nout), *qout = xmalloc(2 * nout);
	float *krstd = xmalloc(4 * nr);
	float *d_cs = nf ? dcopy(cs, 4 * (size_t)T * nf) : NULL;
	float *d_sn = nf ? dcopy(sn, 4 * (size_t)T * nf) : NULL;
	float *d_qr = dmalloc(4 * nr), *d_kr = dmalloc(4 * nr);
	if (layout == QK_INPLACE) {
		d_qo = (uint16_t *)d_q;
		d_ko = (uint16_t *)d_k;
	} else {
		d_qo = dmalloc(2 * nout);
		d_ko = dmalloc(2 * nout);
		dpoison(d_qo, 2 * nout);
		dpoison(d_ko, 2 * nout);
	}
	dpoison(d_qr, 4 * nr);
	dpoison(d_kr, 4 * nr);
	qk_norm_rotary_forward(d_qo, two ? d_ko : NULL, d_qr, two ? d_kr : NULL, d_q, d_k,
	                       (int)ld_in, (int)ld_out, d_cs, d_sn, T, H, hd, nf, EPS_RECORD, 0);
	dsync();
	download(qout, d_qo, 2 * nout);
	download(kout, d_ko, 2 * nout);
	download(rstd, d_qr, 4 * nr);
	download(krstd, d_kr, 4 * nr);
	struct qk_ctx cq = {in, NULL, NULL, ld_in, 0, H, hd, nf, cs, sn, EPS_RECORD};
	struct qk_ctx ck = cq;
	ck.x = k_host;
	snprintf(what, sizeof what, "qk_forward q [%d x %d x %d] nf %d%s", T, H, hd, nf,
	         lname[layout]);
	struct rowcheck rc = {what, (size_t)T, (size_t)D, ld_out, qout, NULL, ref_qk_fwd, &cq,
	                      BF16_ULP, 1e-6, TOL_BF16};
	check_rows(&rc);
	snprintf(what, sizeof what, "qk_forward q rstd%s", lname[layout]);
	struct rowcheck rr = {what, (size_t)T, (size_t)H, 0, NULL, rstd, ref_qk_rstd, &cq, 1e-5, 0,
	                      TOL_F32};
	check_rows(&rr);
	if (two) {
		snprintf(what, sizeof what, "qk_forward k [%d x %d x %d] nf %d%s", T, H, hd, nf,
		         lname[layout]);
		rc.g16 = kout, rc.ctx = &ck;
		check_rows(&rc);
		snprintf(what, sizeof what, "qk_forward k rstd%s", lname[layout]);
		rr.g32 = krstd, rr.ctx = &ck;
		check_rows(&rr);
	} else {
		check_untouched("qk_forward q only: k output", kout, (size_t)T, ld_out, 0, (size_t)D);
	}
	if (layout == QK_FUSED) {
		check_untouched("qk_forward q: gap after each row", qout, (size_t)T, ld_out,
		                (size_t)D, 8);
		check_untouched("qk_forward k: gap after each row", kout, (size_t)T, ld_out,
		                (size_t)D, 8);
	}
	if (bench)
		BENCH("qk_norm_rotary_forward (q and k)", 8.0 * nr * hd + 8.0 * nr,
		      qk_norm_rotary_forward(d_qo, d_ko, d_qr, d_kr, d_q, d_k, (int)ld_in,
		                             (int)ld_out, d_cs, d_sn, T, H, hd, nf, EPS_RECORD, 0));

	/* backward: dout (ld_out layout), x = the forward input, rstd from the
	 * forward in double rounded to fp32 */
	if (layout == QK_INPLACE) { /* restore the inputs the forward overwrote */
		upload((void *)d_q, in, 2 * nin);
		upload((void *)d_k, k_host, 2 * nin);
	}
	for (size_t t = 0; t < (size_t)T; t++)
		for (int h = 0; h < H; h++) {
			rstd[t * H + h] = (float)qk_rstd(&cq, t, h);
			krstd[t * H + h] = (float)qk_rstd(&ck, t, h);
		}
	upload(d_qr, rstd, 4 * nr);
	upload(d_kr, krstd, 4 * nr);
	uint16_t *dq_o = xmalloc(2 * nout), *dk_o = xmalloc(2 * nout);
	fill_bf16(dq_o, nout, "qk.dq", -1, 1);
	fill_bf16(dk_o, nout, "qk.dk", -1, 1);
	uint16_t *d_dqo = dcopy(dq_o, 2 * nout), *d_dko = dcopy(dk_o, 2 * nout);
	uint16_t *d_dq, *d_dk;
	const size_t ld_dx = layout == QK_FUSED ? 3 * (size_t)D : ld_out; /* into a [T, 3D] */
	const size_t ndx = (size_t)T * ld_dx;
	if (layout == QK_INPLACE) {
		d_dq = d_dqo, d_dk = d_dko;
	} else {
		d_dq = dmalloc(2 * ndx);
		d_dk = layout == QK_FUSED ? d_dq + D : dmalloc(2 * ndx);
		dpoison(d_dq, 2 * ndx);
		if (layout != QK_FUSED)
			dpoison(d_dk, 2 * ndx);
	}
	qk_norm_rotary_backward(d_dq, two ? d_dk : NULL, d_dqo, two ? d_dko : NULL, d_q,
	                        two ? d_k : NULL, d_qr, two ? d_kr : NULL, (int)ld_dx,
	                        (int)ld_out, (int)ld_in, d_cs, d_sn, T, H, hd, nf, 0);
	dsync();
	uint16_t *gq = xmalloc(2 * ndx), *gk = xmalloc(2 * ndx);
	download(gq, d_dq, 2 * ndx);
	if (layout != QK_FUSED)
		download(gk, d_dk, 2 * ndx);
	struct qk_ctx bq = {in, dq_o, rstd, ld_in, ld_out, H, hd, nf, cs, sn, EPS_RECORD};
	struct qk_ctx bk = bq;
	bk.x = k_host, bk.dout = dk_o, bk.rstd = krstd;
	snprintf(what, sizeof what, "qk_backward dq [%d x %d x %d] nf %d%s", T, H, hd, nf,
	         lname[layout]);
	struct rowcheck rb = {what, (size_t)T, (size_t)D, ld_dx, gq, NULL, ref_qk_bwd, &bq,
	                      BF16_ULP, 1e-5, TOL_BF16};
	check_rows(&rb);
	if (two) {
		snprintf(what, sizeof what, "qk_backward dk [%d x %d x %d] nf %d%s", T, H, hd, nf,
		         lname[layout]);
		rb.g16 = layout == QK_FUSED ? gq + D : gk, rb.ctx = &bk;
		check_rows(&rb);
	} else {
		check_untouched("qk_backward q only: dk output", gk, (size_t)T, ld_dx, 0, (size_t)D);
	}
	if (layout == QK_FUSED)
		check_untouched("qk_backward: v third of the fused dqkv", gq, (size_t)T, ld_dx,
		                2 * (size_t)D, (size_t)D);
	if (bench)
		BENCH("qk_norm_rotary_backward (q and k)", 12.0 * nr * hd + 8.0 * nr,
		      qk_norm_rotary_backward(d_dq, d_dk, d_dqo, d_dko, d_q, d_k, d_qr, d_kr,
		                              (int)ld_dx, (int)ld_out, (int)ld_in, d_cs, d_sn, T, H,
		                              hd, nf, 0));

	if (layout != QK_INPLACE) {
		dfree(d_qo), dfree(d_ko), dfree(d_dq);
		if (layout != QK_FUSED)
			dfree(d_dk);
	}
	dfree(d_in), dfree(d_qr), dfree(d_kr), dfree(d_dqo), dfree(d_dko);
	if (d_kin)
		dfree(d_kin);
	if (d_cs)
		dfree(d_cs), dfree(d_sn);
	free(in), free(kin), free(rstd), free(kout), free(qout), free(krstd);
	free(dq_o), free(dk_o), free(gq), free(gk), free(cs), free(sn);
}

START_TEST(qk_rotary)
{
	qk_case(1, 6, 128, 32, QK_PLAIN, 0);
	qk_case(37, 6, 128, 32, QK_FUSED, 0);
	qk_case(77, 3, 64, 16, QK_INPLACE, 0);
	qk_case(50, 2, 16, 3, QK_PLAIN, 0);
	qk_case(9, 1, 256, 128, QK_PLAIN, 0);
	qk_case(20, 4, 32, 0, QK_FUSED, 0);
	qk_case(100, 6, 128, 32, QK_QONLY, 0);
	qk_case(65536, 6, 128, 32, QK_FUSED, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * Mixes
 */
enum { M_LAMBDA, M_VALUE, M_VALUE_NOVE, M_SKIP, M_ADD, M_CAST };
struct mix_ctx {
	int mode;
	const uint16_t *a, *b;
	const float *f;        /* M_CAST input */
	double c0, c1;
	size_t len;
};
static void ref_mix(const void *ctx, size_t r, double *out)
{
	const struct mix_ctx *c = ctx;
	for (size_t i = 0; i < c->len; i++) {
		size_t o = r * c->len + i;
		switch (c->mode) {
		case M_LAMBDA:
		case M_VALUE: out[i] = c->c0 * bf(c->a[o]) + c->c1 * bf(c->b[o]); break;
		case M_VALUE_NOVE: out[i] = c->c0 * bf(c->a[o]); break;
		case M_SKIP: out[i] = bf(c->a[o]) + c->c0 * bf(c->b[o]); break;
		case M_ADD: out[i] = bf(c->a[o]) + bf(c->b[o]); break;
		default: out[i] = c->f[o]; break;
		}
	}
}

static void mix_fwd_case(size_t n, size_t len, int bench)
{
	ck_assert(n % len == 0);
	char what[128];
	uint16_t *a = xmalloc(2 * n), *b = xmalloc(2 * n), *out = xmalloc(2 * n);
	float *f = xmalloc(4 * n);
	fill_bf16(a, n, "mix.a", -2, 2);
	fill_bf16(b, n, "mix.b", -2, 2);
	fill_f32(f, n, "mix.f", -3, 3);
	uint64_t s = seed_of("mix.coef");
	float coef[2] = {(float)(0.5 + u01(&s)), (float)(2 * u01(&s) - 1)};
	float *d_c = dscalars(coef, 2);
	uint16_t *d_a = dcopy(a, 2 * n), *d_b = dcopy(b, 2 * n), *d_o = dmalloc(2 * n);
	float *d_f = dcopy(f, 4 * n);
	const char *names[] = {"mix_lambda_forward", "mix_value_forward", "mix_value_forward no ve",
	                       "mix_skip_forward", "residual_add", "cast_f32_to_bf16"};
	for (int mode = M_LAMBDA; mode <= M_CAST; mode++) {
		struct mix_ctx c = {mode, a, b, f, coef[0], coef[1], len};
		dpoison(d_o, 2 * n);
		switch (mode) {
		case M_LAMBDA: mix_lambda_forward(d_o, d_a, d_b, d_c, n, 0); break;
		case M_VALUE: mix_value_forward(d_o, d_a, d_b, d_c, n, 0); break;
		case M_VALUE_NOVE: mix_value_forward(d_o, d_a, NULL, d_c, n, 0); break;
		case M_SKIP: mix_skip_forward(d_o, d_a, d_b, d_c, n, 0); break;
		case M_ADD: residual_add(d_o, d_a, d_b, n, 0); break;
		default: cast_f32_to_bf16(d_o, d_f, n, 0); break;
		}
		dsync();
		download(out, d_o, 2 * n);
		snprintf(what, sizeof what, "%s [%zu]", names[mode], n);
		struct rowcheck rc = {what, n / len, len, 0, out, NULL, ref_mix, &c, BF16_ULP, 1e-6,
		                      TOL_BF16};
		check_rows(&rc);
	}
	/* in place: out over x */
	struct mix_ctx c = {M_LAMBDA, a, b, f, coef[0], coef[1], len};
	mix_lambda_forward(d_a, d_a, d_b, d_c, n, 0);
	dsync();
	download(out, d_a, 2 * n);
	snprintf(what, sizeof what, "mix_lambda_forward in place [%zu]", n);
	struct rowcheck rc = {what, n / len, len, 0, out, NULL, ref_mix, &c, BF16_ULP, 1e-6,
	                      TOL_BF16};
	check_rows(&rc);
	if (bench) {
		BENCH("mix_lambda_forward", 6.0 * n, mix_lambda_forward(d_o, d_a, d_b, d_c, n, 0));
		BENCH("residual_add", 6.0 * n, residual_add(d_o, d_a, d_b, n, 0));
	}
	dfree(d_a), dfree(d_b), dfree(d_o), dfree(d_c), dfree(d_f);
	free(a), free(b), free(out), free(f);
}

START_TEST(mix_fwd)
{
	mix_fwd_case(8, 8, 0);
	mix_fwd_case(768, 768, 0);
	mix_fwd_case((size_t)65536 * 768, 768, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* Backward: dA = c0 dy (bf16), dB = dB0 + c1 dy (fp32), g[0] += dy.A, g[1] += dy.B. */
struct mixb_ctx {
	const uint16_t *dy;
	const float *dB0;
	double c0, c1;
	size_t len;
};
static void ref_mixb_dA(const void *ctx, size_t r, double *out)
{
	const struct mixb_ctx *c = ctx;
	for (size_t i = 0; i < c->len; i++)
		out[i] = c->c0 * bf(c->dy[r * c->len + i]);
}
static void ref_mixb_dB(const void *ctx, size_t r, double *out)
{
	const struct mixb_ctx *c = ctx;
	for (size_t i = 0; i < c->len; i++)
		out[i] = (double)c->dB0[r * c->len + i] + c->c1 * bf(c->dy[r * c->len + i]);
}

static void dot_ref(const uint16_t *a, const uint16_t *b, size_t n, double *dot, double *abs_sum)
{
	double s = 0, as = 0;
	for (size_t i = 0; i < n; i++) {
		double p = bf(a[i]) * bf(b[i]);
		s += p, as += fabs(p);
	}
	*dot = s, *abs_sum = as;
}

enum { B_LAMBDA, B_LAMBDA_NODX0, B_VALUE, B_VALUE_NOVE, B_SKIP };

static void mix_bwd_run(int kind, uint16_t *d_dA, float *d_dB, float *d_g, const uint16_t *d_dy,
                        const uint16_t *d_A, const uint16_t *d_B, const float *d_c, size_t n,
                        void *work)
{
	switch (kind) {
	case B_LAMBDA: mix_lambda_backward(d_dA, d_dB, d_g, d_dy, d_A, d_B, d_c, n, work, 0); break;
	case B_LAMBDA_NODX0:
		mix_lambda_backward(d_dA, NULL, d_g, d_dy, d_A, d_B, d_c, n, work, 0);
		break;
	case B_VALUE: mix_value_backward(d_dA, d_g, d_dy, d_A, d_B, d_c, n, work, 0); break;
	case B_VALUE_NOVE: mix_value_backward(d_dA, d_g, d_dy, d_A, NULL, d_c, n, work, 0); break;
	default: mix_skip_backward(d_dA, d_g, d_dy, d_A, d_c, n, work, 0); break;
	}
}

static void mix_bwd_case(size_t n, size_t len, int bench)
{
	ck_assert(n % len == 0);
	char what[160];
	const char *names[] = {"mix_lambda_backward", "mix_lambda_backward no dx0",
	                       "mix_value_backward", "mix_value_backward no ve",
	                       "mix_skip_backward"};
	uint16_t *dy = xmalloc(2 * n), *A = xmalloc(2 * n), *B = xmalloc(2 * n);
	uint16_t *out = xmalloc(2 * n), *out2 = xmalloc(2 * n);
	float *dB0 = xmalloc(4 * n), *dB = xmalloc(4 * n), *dB2 = xmalloc(4 * n);
	fill_bf16(A, n, "mixb.A", -2, 2);
	fill_bf16(B, n, "mixb.B", -2, 2);
	fill_bf16(dy, n, "mixb.dy", -1, 1);
	for (size_t i = 0; i < n; i++) /* correlate dy with B: sum dy.B is far from 0 */
		dy[i] = f32_to_bf16(bf16_to_f32(dy[i]) + 0.25f * bf16_to_f32(B[i]));
	fill_f32(dB0, n, "mixb.dB0", -1, 1);
	uint64_t s = seed_of("mixb.coef");
	float coef[2] = {(float)(0.5 + u01(&s)), (float)(2 * u01(&s) - 1)};
	float g0[2] = {(float)(2 * u01(&s) - 1), (float)(2 * u01(&s) - 1)}, g[2], gb[2];
	double dA_ref, dA_abs, dB_ref, dB_abs;
	dot_ref(dy, A, n, &dA_ref, &dA_abs);
	dot_ref(dy, B, n, &dB_ref, &dB_abs);
	float *d_c = dscalars(coef, 2), *d_g = dscalars(g0, 2);
	uint16_t *d_dy = dcopy(dy, 2 * n), *d_A = dcopy(A, 2 * n), *d_B = dcopy(B, 2 * n);
	uint16_t *d_dA = dmalloc(2 * n);
	float *d_dB = dcopy(dB0, 4 * n);
	size_t wb = mix_work_bytes(n);
	void *work = dmalloc(wb);
	struct mixb_ctx c = {dy, dB0, coef[0], coef[1], len};
	for (int kind = B_LAMBDA; kind <= B_SKIP; kind++) {
		const int hasB = kind == B_LAMBDA || kind == B_LAMBDA_NODX0 || kind == B_VALUE;
		const int hasdB = kind == B_LAMBDA;
		for (int rep = 0; rep < 2; rep++) {
			upload(d_g, g0, sizeof g0);
			upload(d_dB, dB0, 4 * n);
			dpoison(d_dA, 2 * n);
			dpoison(work, wb);
			mix_bwd_run(kind, d_dA, d_dB, d_g, d_dy, d_A, d_B, d_c, n, work);
			dsync();
			download(rep ? out2 : out, d_dA, 2 * n);
			download(rep ? dB2 : dB, d_dB, 4 * n);
			download(rep ? gb : g, d_g, sizeof g);
		}
		snprintf(what, sizeof what, "%s [%zu] dA", names[kind], n);
		struct rowcheck rc = {what, n / len, len, 0, out, NULL, ref_mixb_dA, &c, BF16_ULP,
		                      1e-6, TOL_BF16};
		check_rows(&rc);
		if (hasdB) {
			snprintf(what, sizeof what, "%s [%zu] dx0 += l1 dout (fp32)", names[kind], n);
			struct rowcheck rd = {what, n / len, len, 0, NULL, dB, ref_mixb_dB, &c, 1e-6,
			                      1e-7, TOL_F32};
			check_rows(&rd);
		} else {
			check_same("  dB untouched", dB, dB0, 4 * n);
		}
		snprintf(what, sizeof what, "%s [%zu] g[0] += sum dout.A", names[kind], n);
		check_scalar(what, g[0], (double)g0[0] + dA_ref, dA_abs, 1e-5);
		snprintf(what, sizeof what, "%s [%zu] g[1] %s", names[kind], n,
		         hasB ? "+= sum dout.B" : "untouched");
		if (hasB)
			check_scalar(what, g[1], (double)g0[1] + dB_ref, dB_abs, 1e-5);
		else
			check_same(what, &g[1], &g0[1], sizeof(float));
		snprintf(what, sizeof what, "%s [%zu] second run", names[kind], n);
		check_same(what, g, gb, sizeof g);
		if (memcmp(out, out2, 2 * n) || memcmp(dB, dB2, 4 * n))
			check_same("  second run elementwise outputs", out, out2, 2 * n);
	}
	/* in place: dx over dout */
	upload(d_g, g0, sizeof g0);
	upload(d_dB, dB0, 4 * n);
	mix_lambda_backward(d_dy, d_dB, d_g, d_dy, d_A, d_B, d_c, n, work, 0);
	dsync();
	download(out, d_dy, 2 * n);
	download(g, d_g, sizeof g);
	snprintf(what, sizeof what, "mix_lambda_backward in place [%zu] dx", n);
	struct rowcheck rc = {what, n / len, len, 0, out, NULL, ref_mixb_dA, &c, BF16_ULP, 1e-6,
	                      TOL_BF16};
	check_rows(&rc);
	snprintf(what, sizeof what, "mix_lambda_backward in place [%zu] g[1]", n);
	check_scalar(what, g[1], (double)g0[1] + dB_ref, dB_abs, 1e-5);
	if (bench) {
		upload(d_dy, dy, 2 * n);
		BENCH("mix_lambda_backward (dx0 fp32)", 16.0 * n,
		      mix_lambda_backward(d_dA, d_dB, d_g, d_dy, d_A, d_B, d_c, n, work, 0));
		BENCH("mix_value_backward", 8.0 * n,
		      mix_value_backward(d_dA, d_g, d_dy, d_A, d_B, d_c, n, work, 0));
	}
	dfree(d_c), dfree(d_g), dfree(d_dy), dfree(d_A), dfree(d_B), dfree(d_dA), dfree(d_dB);
	dfree(work);
	free(dy), free(A), free(B), free(out), free(out2), free(dB0), free(dB), free(dB2);
}

START_TEST(mix_bwd)
{
	mix_bwd_case(8, 8, 0);
	mix_bwd_case(768, 768, 0);
	mix_bwd_case(3 * 768, 768, 0);
	mix_bwd_case(11 * 768, 768, 0); /* one full reduction tile (8192) and a partial one */
	mix_bwd_case((size_t)65536 * 768, 768, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * Fused residual stream + norms (resnorm.cuh) against the unfused
 * launchers in sequence on the same device: the same bits.
 */
enum { RF_RESIDUAL, RF_FIRST, RF_ENCODER, RF_DECODER, RF_FIRST_DECODER, RF_INPLACE, RF_N };
static const char *const rf_names[RF_N] = {
	"residual_rmsnorm_forward", "block_input_forward layer 0 (a = x0)",
	"block_input_forward encoder", "block_input_forward decoder (out not kept)",
	"block_input_forward first decoder (skip = out)", "residual_rmsnorm_forward in place",
};

/* Device buffers of one side (fused or unfused) of a forward case. */
struct rf_side {
	uint16_t *out, *res, *xm, *h;
	float *rstd;
};

static void rf_side_alloc(struct rf_side *d, size_t n, int T)
{
	d->out = dmalloc(2 * n), d->res = dmalloc(2 * n), d->xm = dmalloc(2 * n);
	d->h = dmalloc(2 * n), d->rstd = dmalloc(4 * (size_t)T);
}
static void rf_side_poison(struct rf_side *d, size_t n, int T)
{
	dpoison(d->out, 2 * n), dpoison(d->res, 2 * n), dpoison(d->xm, 2 * n);
	dpoison(d->h, 2 * n), dpoison(d->rstd, 4 * (size_t)T);
}
static void rf_side_free(struct rf_side *d)
{
	dfree(d->out), dfree(d->res), dfree(d->xm), dfree(d->h), dfree(d->rstd);
}

/* Inputs a (the stream: rmid or x0), b (the sublayer's output), skip, x0. */
struct rf_in {
	uint16_t *a, *b, *skip, *x0;
	float *w, *lam;
};

static void rf_fused(int mode, const struct rf_in *in, struct rf_side *d, int T, int D)
{
	switch (mode) {
	case RF_RESIDUAL:
		residual_rmsnorm_forward(d->out, d->h, d->rstd, in->a, in->b, T, D, EPS_RECORD, 0);
		break;
	case RF_FIRST:
		block_input_forward(NULL, NULL, d->xm, d->h, d->rstd, in->x0, NULL, NULL, NULL, in->x0,
		                    in->lam, T, D, EPS_RECORD, 0);
		break;
	case RF_ENCODER:
		block_input_forward(d->out, NULL, d->xm, d->h, d->rstd, in->a, in->b, NULL, NULL, in->x0,
		                    in->lam, T, D, EPS_RECORD, 0);
		break;
	case RF_DECODER:
		block_input_forward(NULL, d->res, d->xm, d->h, d->rstd, in->a, in->b, in->skip, in->w,
		                    in->x0, in->lam, T, D, EPS_RECORD, 0);
		break;
	case RF_FIRST_DECODER:
		block_input_forward(d->out, d->res, d->xm, d->h, d->rstd, in->a, in->b, d->out, in->w,
		                    in->x0, in->lam, T, D, EPS_RECORD, 0);
		break;
	default: /* r over a (a copy of a in d->out) */
		residual_rmsnorm_forward(d->out, d->h, d->rstd, d->out, in->b, T, D, EPS_RECORD, 0);
		break;
	}
}

static void rf_unfused(int mode, const struct rf_in *in, struct rf_side *d, int T, int D)
{
	const size_t n = (size_t)T * D;
	const uint16_t *nin = d->xm;
	switch (mode) {
	case RF_RESIDUAL:
	case RF_INPLACE:
		residual_add(d->out, mode == RF_INPLACE ? d->out : in->a, in->b, n, 0);
		nin = d->out;
		break;
	case RF_FIRST: mix_lambda_forward(d->xm, in->x0, in->x0, in->lam, n, 0); break;
	case RF_ENCODER:
		residual_add(d->out, in->a, in->b, n, 0);
		mix_lambda_forward(d->xm, d->out, in->x0, in->lam, n, 0);
		break;
	case RF_DECODER:
		residual_add(d->res, in->a, in->b, n, 0);
		mix_skip_forward(d->res, d->res, in->skip, in->w, n, 0);
		mix_lambda_forward(d->xm, d->res, in->x0, in->lam, n, 0);
		break;
	default:
		residual_add(d->out, in->a, in->b, n, 0);
		mix_skip_forward(d->res, d->out, d->out, in->w, n, 0);
		mix_lambda_forward(d->xm, d->res, in->x0, in->lam, n, 0);
		break;
	}
	rmsnorm_forward(d->h, d->rstd, nin, NULL, 0, T, D, EPS_RECORD, 0);
}

static void rf_compare(const char *what, const void *dev_f, const void *dev_u, size_t bytes,
                       void *hf, void *hu)
{
	download(hf, dev_f, bytes);
	download(hu, dev_u, bytes);
	check_same(what, hf, hu, bytes);
}

static void resnorm_fwd_case(int T, int D, int bench)
{
	const size_t n = (size_t)T * D;
	uint16_t *a = xmalloc(2 * n), *b = xmalloc(2 * n), *sk = xmalloc(2 * n), *x0 = xmalloc(2 * n);
	uint16_t *hf = xmalloc(2 * n), *hu = xmalloc(2 * n);
	fill_bf16(a, n, "rf.a", -2, 2);
	fill_bf16(b, n, "rf.b", -1, 1);
	fill_bf16(sk, n, "rf.skip", -2, 2);
	fill_bf16(x0, n, "rf.x0", -2, 2);
	scale_rows(a, (size_t)T, (size_t)D, "rf.ascale"); /* norms of every size, eps too */
	scale_rows(b, (size_t)T, (size_t)D, "rf.bscale");
	uint64_t s = seed_of("rf.coef");
	float lam[2] = {(float)(0.5 + u01(&s)), (float)(2 * u01(&s) - 1)};
	float w = (float)(0.5 + u01(&s));
	struct rf_in in = {dcopy(a, 2 * n), dcopy(b, 2 * n), dcopy(sk, 2 * n), dcopy(x0, 2 * n),
	                   dscalars(&w, 1), dscalars(lam, 2)};
	struct rf_side df, du;
	rf_side_alloc(&df, n, T);
	rf_side_alloc(&du, n, T);
	for (int mode = 0; mode < RF_N; mode++) {
		rf_side_poison(&df, n, T);
		rf_side_poison(&du, n, T);
		if (mode == RF_INPLACE) {
			upload(df.out, a, 2 * n);
			upload(du.out, a, 2 * n);
		}
		rf_fused(mode, &in, &df, T, D);
		rf_unfused(mode, &in, &du, T, D);
		dsync();
		const int has_out = mode != RF_FIRST && mode != RF_DECODER;
		const int has_res = mode == RF_DECODER || mode == RF_FIRST_DECODER;
		const int has_xm = mode != RF_RESIDUAL && mode != RF_INPLACE;
		say("  %s [%d x %d]\n", rf_names[mode], T, D);
		if (has_out)
			rf_compare("    sum (out / r)", df.out, du.out, 2 * n, hf, hu);
		if (has_res)
			rf_compare("    after the skip (res)", df.res, du.res, 2 * n, hf, hu);
		if (has_xm)
			rf_compare("    lambda mix (xm)", df.xm, du.xm, 2 * n, hf, hu);
		rf_compare("    norm output (h)", df.h, du.h, 2 * n, hf, hu);
		rf_compare("    rstd", df.rstd, du.rstd, 4 * (size_t)T, hf, hu);
		if (!has_out) { /* nothing written where nothing was asked */
			download(hf, df.out, 2 * n);
			check_untouched("    out (not asked for)", hf, (size_t)T, (size_t)D, 0, (size_t)D);
		}
	}
	if (bench) {
		BENCH("residual_rmsnorm_forward", 8.0 * n + 4.0 * T,
		      rf_fused(RF_RESIDUAL, &in, &df, T, D));
		BENCH("  unfused: residual_add + rmsnorm_forward", 10.0 * n + 4.0 * T,
		      rf_unfused(RF_RESIDUAL, &in, &du, T, D));
		BENCH("block_input_forward decoder", 14.0 * n + 4.0 * T,
		      rf_fused(RF_DECODER, &in, &df, T, D));
		BENCH("  unfused: add + skip + lambda + rmsnorm", 22.0 * n + 4.0 * T,
		      rf_unfused(RF_DECODER, &in, &du, T, D));
		BENCH("block_input_forward encoder", 12.0 * n + 4.0 * T,
		      rf_fused(RF_ENCODER, &in, &df, T, D));
		BENCH("  unfused: add + lambda + rmsnorm", 16.0 * n + 4.0 * T,
		      rf_unfused(RF_ENCODER, &in, &du, T, D));
	}
	rf_side_free(&df);
	rf_side_free(&du);
	dfree(in.a), dfree(in.b), dfree(in.skip), dfree(in.x0), dfree(in.w), dfree(in.lam);
	free(a), free(b), free(sk), free(x0), free(hf), free(hu);
}

START_TEST(resnorm_fwd)
{
	resnorm_fwd_case(1, 768, 0);
	resnorm_fwd_case(3, 8, 0);
	resnorm_fwd_case(33, 136, 0);   /* 17 vectors: part of a warp */
	resnorm_fwd_case(100, 1024, 0); /* NV = 4 */
	resnorm_fwd_case(64, 2048, 0);  /* NV = 8, the last in registers */
	resnorm_fwd_case(9, 2056, 0);   /* the two-pass path */
	resnorm_fwd_case(65536, 768, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* Backward: block_input_backward against the unfused launchers. */
enum { RB_FIRST, RB_ENCODER, RB_FIRST_DECODER, RB_DECODER, RB_APART, RB_N };
static const char *const rb_names[RB_N] = {
	"block_input_backward layer 0", "block_input_backward encoder (+ skip gradient)",
	"block_input_backward first decoder (add = dskip over res)",
	"block_input_backward decoder (dskip over res)",
	"block_input_backward skip and add apart",
};

/* One side's device state: dx, dx0, res (dskip may be written over it), a
 * dskip of its own, the scalar gradients (lambdas 0..1, skip 2). */
struct rb_side {
	uint16_t *dx, *res, *dskip;
	float *dx0, *g;
	void *work;
};

struct rb_in {
	const uint16_t *dx, *res;      /* host: initial values */
	const float *dx0, *g;
	uint16_t *dh, *xm, *x0, *skip, *add; /* device inputs */
	float *rstd, *lam, *w;
};

static void rb_reset(struct rb_side *d, const struct rb_in *in, size_t n)
{
	upload(d->dx, in->dx, 2 * n);
	upload(d->res, in->res, 2 * n);
	upload(d->dx0, in->dx0, 4 * n);
	upload(d->g, in->g, 3 * sizeof(float));
	dpoison(d->dskip, 2 * n);
}

/* Pointers of a mode: dskip (NULL, d->res or d->dskip) and add. */
static void rb_ptrs(int mode, struct rb_side *d, const struct rb_in *in, uint16_t **dskip,
                    const uint16_t **add)
{
	*dskip = mode == RB_FIRST_DECODER || mode == RB_DECODER ? d->res
	         : mode == RB_APART                               ? d->dskip
	                                                          : NULL;
	*add = mode == RB_ENCODER || mode == RB_APART ? in->add
	       : mode == RB_FIRST_DECODER             ? d->res
	                                              : NULL;
}

static void rb_fused(int mode, struct rb_side *d, const struct rb_in *in, int T, int D)
{
	uint16_t *dskip;
	const uint16_t *add;
	rb_ptrs(mode, d, in, &dskip, &add);
	block_input_backward(d->dx, d->dx0, d->g, dskip, dskip ? d->g + 2 : NULL, in->dh, in->xm,
	                     in->rstd, d->res, in->x0, in->lam, dskip ? in->skip : NULL,
	                     dskip ? in->w : NULL, add, T, D, d->work, 0);
}

static void rb_unfused(int mode, struct rb_side *d, const struct rb_in *in, int T, int D)
{
	const size_t n = (size_t)T * D;
	uint16_t *dskip;
	const uint16_t *add;
	rb_ptrs(mode, d, in, &dskip, &add);
	rmsnorm_backward(d->dx, 1, in->dh, NULL, in->xm, NULL, 0, in->rstd, T, D, 0);
	mix_lambda_backward(d->dx, d->dx0, d->g, d->dx, d->res, in->x0, in->lam, n, d->work, 0);
	if (dskip)
		mix_skip_backward(dskip, d->g + 2, d->dx, in->skip, in->w, n, d->work, 0);
	if (add)
		residual_add(d->dx, d->dx, add, n, 0);
}

static void resnorm_bwd_case(int T, int D, int bench)
{
	const size_t n = (size_t)T * D;
	uint16_t *dx = xmalloc(2 * n), *res = xmalloc(2 * n), *t16 = xmalloc(2 * n);
	uint16_t *hf = xmalloc(4 * n), *hu = xmalloc(4 * n);
	float *dx0 = xmalloc(4 * n), *rstd = xmalloc(4 * (size_t)T);
	fill_bf16(dx, n, "rb.dx", -1, 1);
	fill_bf16(res, n, "rb.res", -2, 2);
	fill_f32(dx0, n, "rb.dx0", -1, 1);
	struct rb_in in = {.dx = dx, .res = res, .dx0 = dx0};
	fill_bf16(t16, n, "rb.xm", -2, 2);
	scale_rows(t16, (size_t)T, (size_t)D, "rb.xmscale");
	struct rms_ctx rc = {t16, NULL, T, D, EPS_RECORD, NULL, NULL, NULL, NULL};
	for (int t = 0; t < T; t++) /* the rstd the forward saved, as fp32 */
		rstd[t] = (float)rms_rstd(&rc, t);
	in.xm = dcopy(t16, 2 * n);
	in.rstd = dcopy(rstd, 4 * (size_t)T);
	fill_bf16(t16, n, "rb.dh", -1, 1);
	in.dh = dcopy(t16, 2 * n);
	fill_bf16(t16, n, "rb.x0", -2, 2);
	in.x0 = dcopy(t16, 2 * n);
	fill_bf16(t16, n, "rb.skip", -2, 2);
	in.skip = dcopy(t16, 2 * n);
	fill_bf16(t16, n, "rb.add", -0.5, 0.5);
	in.add = dcopy(t16, 2 * n);
	uint64_t s = seed_of("rb.coef");
	float lam[2] = {(float)(0.5 + u01(&s)), (float)(2 * u01(&s) - 1)};
	float w = (float)(0.5 + u01(&s));
	float g0[3] = {(float)(2 * u01(&s) - 1), (float)(2 * u01(&s) - 1), (float)(2 * u01(&s) - 1)};
	in.g = g0;
	in.lam = dscalars(lam, 2), in.w = dscalars(&w, 1);
	struct rb_side sd[2];
	const size_t wb = block_input_work_bytes(T, D) > mix_work_bytes(n)
	                      ? block_input_work_bytes(T, D)
	                      : mix_work_bytes(n);
	for (int k = 0; k < 2; k++) {
		sd[k].dx = dmalloc(2 * n), sd[k].res = dmalloc(2 * n), sd[k].dskip = dmalloc(2 * n);
		sd[k].dx0 = dmalloc(4 * n), sd[k].g = dmalloc(3 * sizeof(float));
		sd[k].work = dmalloc(wb);
	}
	for (int mode = 0; mode < RB_N; mode++) {
		rb_reset(&sd[0], &in, n);
		rb_reset(&sd[1], &in, n);
		rb_fused(mode, &sd[0], &in, T, D);
		rb_unfused(mode, &sd[1], &in, T, D);
		dsync();
		say("  %s [%d x %d]\n", rb_names[mode], T, D);
		rf_compare("    dx", sd[0].dx, sd[1].dx, 2 * n, hf, hu);
		rf_compare("    dx0 (fp32)", sd[0].dx0, sd[1].dx0, 4 * n, hf, hu);
		rf_compare("    res (dskip over it in the engine's decoders)", sd[0].res, sd[1].res,
		           2 * n, hf, hu);
		rf_compare("    dskip of its own (poisoned when unused)", sd[0].dskip, sd[1].dskip,
		           2 * n, hf, hu);
		rf_compare("    scalar gradients (lambdas, skip weight)", sd[0].g, sd[1].g,
		           3 * sizeof(float), hf, hu);
		float g[3];
		download(g, sd[0].g, sizeof g);
		const int has_skip = mode >= RB_FIRST_DECODER;
		if (g[0] == g0[0] || g[1] == g0[1] || (g[2] == g0[2]) == has_skip) {
			say("    scalar gradients %s  FAIL\n", "not added where they should be");
			note_failure("%s [%d x %d]: scalar gradients %.9g %.9g %.9g (from %.9g %.9g %.9g)",
			             rb_names[mode], T, D, g[0], g[1], g[2], g0[0], g0[1], g0[2]);
		}
	}
	if (bench) {
		BENCH("block_input_backward decoder", 24.0 * n,
		      rb_fused(RB_DECODER, &sd[0], &in, T, D));
		BENCH("  unfused: rmsnorm + lambda + skip backward", 30.0 * n,
		      rb_unfused(RB_DECODER, &sd[1], &in, T, D));
		BENCH("block_input_backward encoder", 22.0 * n,
		      rb_fused(RB_ENCODER, &sd[0], &in, T, D));
		BENCH("  unfused: rmsnorm + lambda backward + add", 30.0 * n,
		      rb_unfused(RB_ENCODER, &sd[1], &in, T, D));
	}
	for (int k = 0; k < 2; k++) {
		dfree(sd[k].dx), dfree(sd[k].res), dfree(sd[k].dskip), dfree(sd[k].dx0);
		dfree(sd[k].g), dfree(sd[k].work);
	}
	dfree(in.dh), dfree(in.xm), dfree(in.x0), dfree(in.skip), dfree(in.add), dfree(in.rstd);
	dfree(in.lam), dfree(in.w);
	free(dx), free(res), free(t16), free(hf), free(hu), free(dx0), free(rstd);
}

START_TEST(resnorm_bwd)
{
	resnorm_bwd_case(1, 768, 0);
	resnorm_bwd_case(3, 8, 0);
	resnorm_bwd_case(33, 136, 0);
	resnorm_bwd_case(3000, 8, 0);   /* 1024 rows per tile, three tiles */
	resnorm_bwd_case(300, 264, 0);  /* 33-vector rows across tiles */
	resnorm_bwd_case(11, 768, 0);   /* one full tile and 256 elements */
	resnorm_bwd_case(100, 2056, 0);
	resnorm_bwd_case(5, 9000, 0);   /* rows longer than a tile */
	resnorm_bwd_case(65536, 768, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * Embedding
 */
/* T tokens below V; token rep_tok at rep random distinct positions (and
 * wherever the draw gives it). */
static uint32_t *make_tokens(int T, int V, uint32_t rep_tok, int rep, const char *name)
{
	uint32_t *tok = xmalloc(sizeof(uint32_t) * (size_t)(T > 0 ? T : 1));
	uint64_t s = seed_of(name);
	for (int t = 0; t < T; t++)
		tok[t] = (uint32_t)(splitmix(&s) % (uint64_t)V);
	/* rep distinct positions: the first rep of a partial Fisher-Yates shuffle */
	int *perm = xmalloc(sizeof(int) * (size_t)(T > 0 ? T : 1));
	for (int t = 0; t < T; t++)
		perm[t] = t;
	for (int i = 0; i < rep && i < T; i++) {
		int j = i + (int)(splitmix(&s) % (uint64_t)(T - i)), x = perm[i];
		perm[i] = perm[j], perm[j] = x;
		tok[perm[i]] = rep_tok;
	}
	free(perm);
	return tok;
}

static void emb_fwd_case(int T, int V, int D, int ntab, int nbad, int bench)
{
	char what[128];
	size_t nt = (size_t)V * D, no = (size_t)T * D;
	uint32_t *tok = make_tokens(T, V, EOT % (uint32_t)V, T / 50, "embf.tok");
	for (int i = 0; i < nbad; i++)
		tok[(i * 7919) % T] = (uint32_t)V + (uint32_t)i;
	uint16_t *tab[EMBEDDING_MAX_TABLES], *dtab[EMBEDDING_MAX_TABLES];
	uint16_t *dout[EMBEDDING_MAX_TABLES];
	uint16_t *out = xmalloc(2 * no);
	for (int i = 0; i < ntab; i++) {
		char nm[32];
		snprintf(nm, sizeof nm, "embf.tab%d", i);
		tab[i] = xmalloc(2 * nt);
		fill_bf16(tab[i], nt, nm, -3, 3);
		dtab[i] = dcopy(tab[i], 2 * nt);
		dout[i] = dmalloc(2 * no);
		dpoison(dout[i], 2 * no);
	}
	uint32_t *dtok = dcopy(tok, sizeof(uint32_t) * (size_t)T);
	embedding_forward(dout, (const uint16_t *const *)dtab, ntab, dtok, T, V, D, 0);
	dsync();
	for (int i = 0; i < ntab; i++) {
		download(out, dout[i], 2 * no);
		size_t bad = 0, first = 0;
		for (int t = 0; t < T; t++) {
			int ok;
			if (tok[t] < (uint32_t)V) {
				ok = !memcmp(out + (size_t)t * D, tab[i] + (size_t)tok[t] * D, 2 * (size_t)D);
			} else {
				ok = 1;
				for (int d = 0; d < D; d++)
					ok &= isnan(bf(out[(size_t)t * D + d]));
			}
			if (!ok && bad++ == 0)
				first = (size_t)t;
		}
		snprintf(what, sizeof what, "embedding_forward table %d/%d [%d x %d] V %d%s", i,
		         ntab, T, D, V, nbad ? " bad tokens" : "");
		say("  %-52s %s", what, bad ? "" : "rows bitwise equal\n");
		if (bad) {
			say("%zu wrong rows, first t = %zu (token %u)  FAIL\n", bad, first, tok[first]);
			note_failure("%s: %zu wrong rows, first t = %zu", what, bad, first);
		}
	}
	if (bench)
		BENCH("embedding_forward (4 tables)", 4.0 * ntab * no + 4.0 * T,
		      embedding_forward(dout, (const uint16_t *const *)dtab, ntab, dtok, T, V, D, 0));
	for (int i = 0; i < ntab; i++) {
		dfree(dtab[i]), dfree(dout[i]);
		free(tab[i]);
	}
	dfree(dtok);
	free(tok), free(out);
}

START_TEST(embedding_fwd)
{
	emb_fwd_case(1, VOCAB, 768, 1, 0, 0);
	emb_fwd_case(5, 3, 8, 2, 1, 0);
	emb_fwd_case(1000, 1000, 136, 3, 4, 0);
	emb_fwd_case(65536, VOCAB, 768, 4, 0, 1);
	ASSERT_ALL_PASSED();
}
END_TEST

/* Reference of the backward: positions of each token in order (CSR). */
struct emb_ctx {
	const uint16_t *dy;
	size_t ld;
	int D;
	const int *start, *list; /* token v at list[start[v] .. start[v+1]) */
	const float *init32;
	const uint16_t *init16;
	double scale;
};

static void ref_emb_bwd(const void *ctx, size_t v, double *out)
{
	const struct emb_ctx *c = ctx;
	for (int d = 0; d < c->D; d++)
		out[d] = 0;
	for (int k = c->start[v]; k < c->start[v + 1]; k++) {
		const uint16_t *row = c->dy + (size_t)c->list[k] * c->ld;
		for (int d = 0; d < c->D; d++)
			out[d] += bf(row[d]);
	}
	for (int d = 0; d < c->D; d++) {
		double i0 = c->init32 ? (double)c->init32[v * (size_t)c->D + d]
		                      : bf(c->init16[v * (size_t)c->D + d]);
		out[d] = i0 + c->scale * out[d];
	}
}

/* tokens: T tokens (>= V allowed: skipped); ld_dy >= D. */
static void emb_bwd_case(const char *label, const uint32_t *tok, int T, int V, int D, int ld_dy,
                         int use_scale, int bench)
{
	char what[192];
	const size_t ng = (size_t)V * D, ndy = (size_t)(T > 0 ? T : 1) * ld_dy;
	uint16_t *dy = xmalloc(2 * ndy);
	fill_bf16(dy, ndy, label, -1, 1);
	int *start = xcalloc((size_t)V + 1, sizeof(int)), *list = xmalloc(sizeof(int) * (size_t)T + 4);
	for (int t = 0; t < T; t++)
		if (tok[t] < (uint32_t)V)
			start[tok[t] + 1]++;
	for (int v = 0; v < V; v++)
		start[v + 1] += start[v];
	int *fillp = xmalloc(sizeof(int) * (size_t)V);
	memcpy(fillp, start, sizeof(int) * (size_t)V);
	for (int t = 0; t < T; t++)
		if (tok[t] < (uint32_t)V)
			list[fillp[tok[t]]++] = t;
	free(fillp);
	int maxc = 0, present = 0;
	for (int v = 0; v < V; v++) {
		int cnt = start[v + 1] - start[v];
		maxc = cnt > maxc ? cnt : maxc;
		present += cnt > 0;
	}
	const float scale = 0.75f;
	float *d_scale = dscalars(&scale, 1);
	float *init32 = xmalloc(4 * ng), *g32 = xmalloc(4 * ng), *g32b = xmalloc(4 * ng);
	uint16_t *init16 = xmalloc(2 * ng), *g16 = xmalloc(2 * ng), *g16b = xmalloc(2 * ng);
	fill_f32(init32, ng, "embb.init32", -1, 1);
	fill_bf16(init16, ng, "embb.init16", -1, 1);
	uint32_t *d_tok = dcopy(tok, sizeof(uint32_t) * (size_t)(T > 0 ? T : 1));
	uint16_t *d_dy = dcopy(dy, 2 * ndy), *d_g16 = dmalloc(2 * ng);
	float *d_g32 = dmalloc(4 * ng);
	struct embedding_plan *p = embedding_plan_create(T > 0 ? T : 1, V, D);
	embedding_plan_build(p, d_tok, T, 0);
	const float *sp = use_scale ? d_scale : NULL;
	for (int rep = 0; rep < 2; rep++) {
		if (rep == 1) /* rebuild: same bits */
			embedding_plan_build(p, d_tok, T, 0);
		upload(d_g32, init32, 4 * ng);
		upload(d_g16, init16, 2 * ng);
		embedding_backward_f32(d_g32, d_dy, ld_dy, sp, p, D, 0);
		embedding_backward_bf16(d_g16, d_dy, ld_dy, sp, p, D, 0);
		dsync();
		download(rep ? g32b : g32, d_g32, 4 * ng);
		download(rep ? g16b : g16, d_g16, 2 * ng);
	}
	say("  %s: T %d, V %d, D %d, ld_dy %d, %d distinct tokens, most repeated %d times%s\n",
	    label, T, V, D, ld_dy, present, maxc, use_scale ? ", scale 0.75" : "");
	struct emb_ctx c = {dy, (size_t)ld_dy, D, start, list, init32, NULL, use_scale ? scale : 1};
	snprintf(what, sizeof what, "embedding_backward_f32 grad [%d x %d]", V, D);
	struct rowcheck rc = {what, (size_t)V, (size_t)D, 0, NULL, g32, ref_emb_bwd, &c, 1e-5, 1e-4,
	                      TOL_F32};
	check_rows(&rc);
	c.init32 = NULL, c.init16 = init16;
	snprintf(what, sizeof what, "embedding_backward_bf16 grad [%d x %d]", V, D);
	struct rowcheck rb = {what, (size_t)V, (size_t)D, 0, g16, NULL, ref_emb_bwd, &c, BF16_ULP,
	                      1e-4, TOL_BF16};
	check_rows(&rb);
	/* rows of absent tokens: the very bits that were there */
	size_t moved = 0;
	for (int v = 0; v < V; v++)
		if (start[v + 1] == start[v])
			moved += memcmp(g32 + (size_t)v * D, init32 + (size_t)v * D, 4 * (size_t)D) != 0 ||
			         memcmp(g16 + (size_t)v * D, init16 + (size_t)v * D, 2 * (size_t)D) != 0;
	say("  %-52s %s\n", "rows of absent tokens", moved ? "CHANGED  FAIL" : "untouched");
	if (moved)
		note_failure("%s: %zu rows of absent tokens changed", label, moved);
	check_same("embedding_backward_f32 second run (rebuilt plan)", g32, g32b, 4 * ng);
	check_same("embedding_backward_bf16 second run (rebuilt plan)", g16, g16b, 2 * ng);
	if (bench) {
		BENCH("embedding_plan_build (sort)", 16.0 * T, embedding_plan_build(p, d_tok, T, 0));
		BENCH("embedding_backward_f32", 2.0 * T * D + 8.0 * present * D,
		      embedding_backward_f32(d_g32, d_dy, ld_dy, sp, p, D, 0));
	}
	embedding_plan_free(p);
	dfree(d_scale), dfree(d_tok), dfree(d_dy), dfree(d_g16), dfree(d_g32);
	free(dy), free(start), free(list), free(init32), free(g32), free(g32b);
	free(init16), free(g16), free(g16b);
}

START_TEST(embedding_bwd)
{
	/* the record's micro-batch, EOT repeated 10,000 times */
	uint32_t *tok = make_tokens(65536, VOCAB, EOT, 10000, "embb.tok");
	emb_bwd_case("10,000 x EOT", tok, 65536, VOCAB, 768, 768, 1, 1);
	free(tok);
	/* one token everywhere: one run over all 2048 windows */
	tok = make_tokens(65536, VOCAB, 0, 0, "embb.same");
	for (int t = 0; t < 65536; t++)
		tok[t] = 220;
	emb_bwd_case("one token x 65,536", tok, 65536, VOCAB, 768, 768, 0, 0);
	free(tok);
	/* T = 1 */
	tok = make_tokens(1, VOCAB, EOT, 1, "embb.one");
	emb_bwd_case("T = 1", tok, 1, VOCAB, 768, 768, 1, 0);
	free(tok);
	/* small vocabulary, long runs crossing windows, bad tokens, strided dy */
	tok = make_tokens(1000, 5, 2, 300, "embb.small");
	for (int i = 0; i < 40; i++)
		tok[(i * 37) % 1000] = 5 + (uint32_t)i * 1000000u;
	emb_bwd_case("V = 5, 40 bad tokens, ld_dy = 24", tok, 1000, 5, 8, 24, 1, 0);
	free(tok);
	/* run lengths around the window size */
	tok = xmalloc(sizeof(uint32_t) * 4096);
	for (int t = 0, v = 0; t < 4096; v++)
		for (int k = 0; k < 1 + (v * 13) % 97 && t < 4096; k++)
			tok[t++] = (uint32_t)v;
	emb_bwd_case("sorted runs of 1..97", tok, 4096, 2000, 264, 264, 1, 0);
	free(tok);
	ASSERT_ALL_PASSED();
}
END_TEST

/* ------------------------------------------------------------------------
 * Argument checks: impossible shapes exit with status 1 before any launch.
 */
START_TEST(bad_args_relu2) { relu2_forward((uint16_t *)16, (uint16_t *)16, 12, 0); }
END_TEST
START_TEST(bad_args_rmsnorm) { rmsnorm_forward((uint16_t *)16, NULL, (uint16_t *)16, NULL, 0, 4, 12, 1e-3f, 0); }
END_TEST
START_TEST(bad_args_qk)
{
	qk_norm_rotary_forward((uint16_t *)16, NULL, NULL, NULL, (uint16_t *)16, NULL, 96 * 6,
	                       96 * 6, NULL, NULL, 4, 6, 96, 0, 1e-3f, 0);
}
END_TEST
START_TEST(bad_args_embedding)
{
	uint16_t *t[5] = {0};
	embedding_forward(t, (const uint16_t *const *)t, 5, (uint32_t *)16, 4, 10, 8, 0);
}
END_TEST
START_TEST(bad_args_align) { residual_add((uint16_t *)18, (uint16_t *)16, (uint16_t *)16, 8, 0); }
END_TEST
START_TEST(bad_args_resnorm_shape)
{
	residual_rmsnorm_forward((uint16_t *)16, (uint16_t *)16, NULL, (uint16_t *)16,
	                         (uint16_t *)16, 4, 12, 1e-3f, 0);
}
END_TEST
START_TEST(bad_args_resnorm_align)
{
	block_input_forward(NULL, NULL, (uint16_t *)16, (uint16_t *)24, NULL, (uint16_t *)16, NULL,
	                    NULL, NULL, (uint16_t *)16, (float *)16, 4, 8, 1e-3f, 0);
}
END_TEST
START_TEST(bad_args_resnorm_bwd_alias) /* dh is read across tiles: not an output */
{
	block_input_backward((uint16_t *)16, (float *)16, (float *)16, NULL, NULL, (uint16_t *)16,
	                     (uint16_t *)32, (float *)16, (uint16_t *)16, (uint16_t *)16,
	                     (float *)16, NULL, NULL, NULL, 4, 8, (void *)16, 0);
}
END_TEST
START_TEST(bad_args_resnorm_skip) /* a skip needs res and w */
{
	block_input_forward(NULL, NULL, (uint16_t *)16, (uint16_t *)16, NULL, (uint16_t *)16,
	                    (uint16_t *)16, (uint16_t *)16, NULL, (uint16_t *)16, (float *)16, 4, 8,
	                    1e-3f, 0);
}
END_TEST

static Suite *gpu_elementwise_suite(void)
{
	const char *e = getenv("GPU_TEST_SEED");
	base_seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	printf("gpu_elementwise: seed %llu (GPU_TEST_SEED=%llu repeats this run)\n",
	       (unsigned long long)base_seed, (unsigned long long)base_seed);
	fflush(stdout);
	Suite *s = suite_create("gpu_elementwise");
	/* one case per kernel family: CK_RUN_CASE=qk_rotary runs one */
	const struct {
		const char *name;
		const TTest *test;
	} cases[] = {{"relu2", relu2},           {"rmsnorm_fwd", rmsnorm_fwd},
	             {"rmsnorm_bwd", rmsnorm_bwd}, {"qk_rotary", qk_rotary},
	             {"mix_fwd", mix_fwd},       {"mix_bwd", mix_bwd},
	             {"resnorm_fwd", resnorm_fwd}, {"resnorm_bwd", resnorm_bwd},
	             {"embedding_fwd", embedding_fwd}, {"embedding_bwd", embedding_bwd}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_set_timeout(tc, 300);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	TCase *ta = tcase_create("bad_args");
	tcase_add_exit_test(ta, bad_args_relu2, 1);
	tcase_add_exit_test(ta, bad_args_rmsnorm, 1);
	tcase_add_exit_test(ta, bad_args_qk, 1);
	tcase_add_exit_test(ta, bad_args_embedding, 1);
	tcase_add_exit_test(ta, bad_args_align, 1);
	tcase_add_exit_test(ta, bad_args_resnorm_shape, 1);
	tcase_add_exit_test(ta, bad_args_resnorm_align, 1);
	tcase_add_exit_test(ta, bad_args_resnorm_skip, 1);
	tcase_add_exit_test(ta, bad_args_resnorm_bwd_alias, 1);
	suite_add_tcase(s, ta);
	return s;
}

CHECK_MAIN(gpu_elementwise_suite)
