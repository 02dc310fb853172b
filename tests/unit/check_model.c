/*
 * check_model.c - the CPU reference model (lib/model.h).
 *
 *   spec_forward     cpu_model64's loss equals a naive dense double forward
 *                    written here straight from the spec (sections 4-5)
 *   grad_check       central finite differences (double model) for sampled
 *                    entries of every parameter tensor, random weights
 *   float_vs_double  fp32 and double models agree (loss and gradients)
 *   grad_accumulates gradients are added, not stored
 *   zero_head        lm_head = 0: loss = ln(vocab) (10.8258 for 50304) and
 *                    every gradient but lm_head's is exactly zero (spec 3.3)
 *   mask_*           gpt_mask_* against the rule of spec 5, and the fp32
 *                    attention core against a dense masked attention
 *   threads          bitwise equal results with 1, 2 and 3 threads (runs
 *                    this binary again with GPT_THREADS and CK_RUN_CASE=dump)
 *   errors           bad arguments are reported, not crashed on
 * Case "bench" prints fwd+bwd tokens/s when GPT_MODEL_BENCH is set
 * (bench/model_cpu.sh); case "dump" is the helper of "threads".
 */
#include <float.h>
#include <limits.h>
#include <math.h>

#include "check_common.h"
#include "config.h"
#include "model.h"
#include "parallel.h"

/* ------------------------------------------------------------------------
 * Helpers
 */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
	return rng_state;
}
static double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; } /* [0,1) */
static double srand1(void) { return 2 * urand() - 1; }                           /* [-1,1) */

/* Check reports every ck_assert to the parent process; in loops over many
 * elements collect failures instead and assert once. */
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

/* The tiny configuration of the gradient checks: 4 layers, value embeds on
 * layers 0 and 3 (one table, shared), layer 1 attention without a table,
 * layer 2 without attention, 3 of 6 rotary pairs active, softcap on. */
static void tiny_config(struct gpt_config *c)
{
	gpt_config_record(c);
	c->vocab = 61;
	c->eot = 59; /* inputs use rows 0..59; row 60 is like the record's padding */
	c->layers = 4;
	c->dim = 24;
	c->heads = 2;
	c->head_dim = 12;
	c->mlp_hidden = 40;
	c->value_embeds = 1;
	c->no_attn = 1u << 2;
	c->softcap = 3.0f;
	c->rope_freqs = 3;
	c->rope_min_freq = 1.0f / 64;
	c->attn_block = 8;
	c->max_seq = 4096;
}

/* Random weights everywhere (zero heads would hide most gradients). */
static void random_weights(const struct gpt_config *c, const struct gpt_table *t, double *w)
{
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		double *x = w + p->offset;
		for (size_t j = 0; j < p->numel; j++) {
			switch (p->kind) {
			case GPT_P_EMBED:
			case GPT_P_VALUE_EMBED: x[j] = srand1() * 1.7; break;
			case GPT_P_SKIP: x[j] = 0.7 + 0.6 * urand(); break;
			case GPT_P_LAMBDAS: x[j] = j == 0 ? 0.8 + 0.4 * urand() : 0.2 + 0.5 * urand(); break;
			case GPT_P_ATTN_LAMBDAS: x[j] = 0.3 + 0.5 * urand(); break;
			case GPT_P_HEAD: x[j] = srand1() * 0.8; break;
			default: x[j] = srand1() * 1.5 / sqrt((double)p->shape[1]); break;
			}
		}
	}
	(void)c;
}

/* Tokens in [0, eot) with EOT tokens at the given positions. */
static void make_tokens(const struct gpt_config *c, uint32_t *in, uint32_t *tg, int T,
                        const int *eots, int neots)
{
	for (int t = 0; t < T; t++) {
		in[t] = (uint32_t)(rnd() % (uint64_t)(c->eot));
		tg[t] = (uint32_t)(rnd() % (uint64_t)c->vocab);
	}
	for (int i = 0; i < neots; i++)
		in[eots[i]] = (uint32_t)c->eot;
}

static double *param(const struct gpt_table *t, double *w, const char *fmt, int i)
{
	char name[64];
	snprintf(name, sizeof name, fmt, i);
	int k = gpt_table_find(t, name);
	return k < 0 ? NULL : w + t->p[k].offset;
}

/* ------------------------------------------------------------------------
 * Naive forward, straight from the spec: dense T x T masks, the rotary
 * frequencies from the formula in double, every loop spelled out.
 */
static void nrms(double *y, const double *x, int n, double eps)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += x[i] * x[i];
	double r = 1 / sqrt(s / n + eps);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * r;
}

/* y[T,N] = x[T,K] W[N,K]^T */
static void nlin(double *y, const double *x, const double *W, int T, int N, int K)
{
	for (int t = 0; t < T; t++)
		for (int n = 0; n < N; n++) {
			double s = 0;
			for (int k = 0; k < K; k++)
				s += x[t * K + k] * W[n * K + k];
			y[t * N + n] = s;
		}
}

static double naive_loss(const struct gpt_config *c, const struct gpt_table *tab, double *w,
                         const uint32_t *in, const uint32_t *tg, int T, int W)
{
	const int D = c->dim, H = c->heads, hd = c->head_dim, F = c->mlp_hidden, V = c->vocab;
	const int L = c->layers, NV = c->value_embeds, nf = c->rope_freqs, B = c->attn_block;
	const double eps = c->norm_eps;
	double *x0 = calloc((size_t)T * D, 8), *x = calloc((size_t)T * D, 8);
	double *h = calloc((size_t)T * D, 8), *q = calloc((size_t)T * D, 8);
	double *k = calloc((size_t)T * D, 8), *v = calloc((size_t)T * D, 8);
	double *y = calloc((size_t)T * D, 8), *o = calloc((size_t)T * D, 8);
	double *u = calloc((size_t)T * F, 8), *sc = calloc((size_t)T, 8);
	double *skips = calloc((size_t)(L / 2) * T * D, 8), *z = calloc((size_t)V, 8);
	int *docs = calloc((size_t)T, sizeof(int)), nskip = 0;
	for (int t = 0, n = 0; t < T; t++)
		docs[t] = n += in[t] == (uint32_t)c->eot;
	double *embed = param(tab, w, "embed.weight", 0);
	for (int t = 0; t < T; t++)
		nrms(x0 + t * D, embed + (size_t)in[t] * D, D, eps);
	memcpy(x, x0, sizeof(double) * T * D);
	for (int i = 0; i < L; i++) {
		if (i >= L / 2) {
			double sw = param(tab, w, "skip_weights", 0)[i - L / 2];
			double *s = skips + (size_t)(--nskip) * T * D;
			for (int j = 0; j < T * D; j++)
				x[j] += sw * s[j];
		}
		double *lam = param(tab, w, "blocks.%d.lambdas", i);
		for (int j = 0; j < T * D; j++)
			x[j] = lam[0] * x[j] + lam[1] * x0[j];
		double *Wq = param(tab, w, "blocks.%d.attn.c_q.weight", i);
		if (Wq) {
			for (int t = 0; t < T; t++)
				nrms(h + t * D, x + t * D, D, eps);
			nlin(q, h, Wq, T, D, D);
			nlin(k, h, param(tab, w, "blocks.%d.attn.c_k.weight", i), T, D, D);
			nlin(v, h, param(tab, w, "blocks.%d.attn.c_v.weight", i), T, D, D);
			double *al = param(tab, w, "blocks.%d.attn.lambdas", i);
			int ve = i < NV ? i : i >= L - NV ? i - (L - NV) : -1;
			double *vt = ve >= 0 ? param(tab, w, "value_embeds.embed.%d.weight", ve) : NULL;
			for (int t = 0; t < T; t++)
				for (int d = 0; d < D; d++)
					v[t * D + d] = al[0] * v[t * D + d] +
					               (vt ? al[1] * vt[(size_t)in[t] * D + d] : 0);
			for (int t = 0; t < T; t++)
				for (int hh = 0; hh < H; hh++) {
					double *qs[2] = {q + t * D + hh * hd, k + t * D + hh * hd};
					for (int r = 0; r < 2; r++) {
						double *e = qs[r];
						nrms(e, e, hd, eps);
						for (int j = 0; j < hd / 2; j++) {
							double fr = j >= nf ? 0 : nf == 1 ? 1
							            : pow(c->rope_min_freq, (double)j / (nf - 1));
							double th = t * fr, x1 = e[j], x2 = e[j + hd / 2];
							e[j] = x1 * cos(th) + x2 * sin(th);
							e[j + hd / 2] = -x1 * sin(th) + x2 * cos(th);
						}
					}
				}
			for (int hh = 0; hh < H; hh++)
				for (int qi = 0; qi < T; qi++) {
					double mx = -INFINITY, sum = 0;
					for (int ki = 0; ki < T; ki++) {
						int ok = ki <= qi && docs[ki] == docs[qi] && qi / B - ki / B < W;
						double s = 0;
						for (int d = 0; d < hd; d++)
							s += q[qi * D + hh * hd + d] * k[ki * D + hh * hd + d];
						sc[ki] = ok ? s / sqrt((double)hd) : -INFINITY;
						mx = fmax(mx, sc[ki]);
					}
					for (int ki = 0; ki < T; ki++)
						sum += sc[ki] = exp(sc[ki] - mx);
					for (int d = 0; d < hd; d++) {
						double s = 0;
						for (int ki = 0; ki < T; ki++)
							s += sc[ki] / sum * v[ki * D + hh * hd + d];
						y[qi * D + hh * hd + d] = s;
					}
				}
			nlin(o, y, param(tab, w, "blocks.%d.attn.c_proj.weight", i), T, D, D);
			for (int j = 0; j < T * D; j++)
				x[j] += o[j];
		}
		for (int t = 0; t < T; t++)
			nrms(h + t * D, x + t * D, D, eps);
		nlin(u, h, param(tab, w, "blocks.%d.mlp.c_fc.weight", i), T, F, D);
		for (int j = 0; j < T * F; j++)
			u[j] = u[j] > 0 ? u[j] * u[j] : 0;
		nlin(o, u, param(tab, w, "blocks.%d.mlp.c_proj.weight", i), T, D, F);
		for (int j = 0; j < T * D; j++)
			x[j] += o[j];
		if (i < L / 2)
			memcpy(skips + (size_t)(nskip++) * T * D, x, sizeof(double) * T * D);
	}
	double *head = param(tab, w, "lm_head.weight", 0), loss = 0;
	for (int t = 0; t < T; t++) {
		nrms(h + t * D, x + t * D, D, eps);
		double mx = -INFINITY, sum = 0;
		for (int j = 0; j < V; j++) {
			double s = 0;
			for (int d = 0; d < D; d++)
				s += h[t * D + d] * head[(size_t)j * D + d];
			z[j] = c->softcap > 0 ? c->softcap * tanh(s / c->softcap) : s;
			mx = fmax(mx, z[j]);
		}
		for (int j = 0; j < V; j++)
			sum += exp(z[j] - mx);
		loss += mx + log(sum) - z[tg[t]];
	}
	free(x0), free(x), free(h), free(q), free(k), free(v), free(y), free(o), free(u), free(sc);
	free(skips), free(z), free(docs);
	return loss / T;
}

/* ------------------------------------------------------------------------
 * Forward semantics
 */
START_TEST(spec_forward)
{
	struct gpt_config c;
	tiny_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 150 }; /* two chunks of head rows */
	struct cpu_model64 *m = cpu_model64_create(&c, T, &e);
	ck_assert_msg(m != NULL, "%s", e.msg);
	double *w = malloc(sizeof(double) * t.total);
	uint32_t in[T], tg[T];
	int eots[] = {3, 17, 18, 44, 140};
	random_weights(&c, &t, w);
	make_tokens(&c, in, tg, T, eots, 5);
	int windows[] = {1, 2, 3, 100};
	for (int i = 0; i < 4; i++) {
		double got, want = naive_loss(&c, &t, w, in, tg, T, windows[i]);
		ck_assert_int_eq(cpu_model64_step(m, w, in, tg, T, windows[i], NULL, &got, &e), 0);
		ck_assert_msg(fabs(got - want) <= 1e-9 * want, "W=%d: model %.15g, naive %.15g",
		              windows[i], got, want);
		printf("spec_forward: W=%d loss %.12f (naive %.12f)\n", windows[i], got, want);
	}
	/* softcap off, no value embeddings, all layers with attention, one
	 * rotary frequency, no EOT at all, T not a multiple of the block */
	c.softcap = 0;
	c.value_embeds = 0;
	c.no_attn = 0;
	c.rope_freqs = 1;
	c.attn_block = 5;
	cpu_model64_free(m);
	gpt_table_free(&t);
	gpt_table_build(&c, &t);
	m = cpu_model64_create(&c, T, &e);
	ck_assert_msg(m != NULL, "%s", e.msg);
	w = realloc(w, sizeof(double) * t.total);
	random_weights(&c, &t, w);
	make_tokens(&c, in, tg, 33, NULL, 0);
	double got, want = naive_loss(&c, &t, w, in, tg, 33, 2);
	ck_assert_int_eq(cpu_model64_step(m, w, in, tg, 33, 2, NULL, &got, &e), 0);
	ck_assert_msg(fabs(got - want) <= 1e-9 * want, "variant: %.15g vs %.15g", got, want);
	cpu_model64_free(m);
	gpt_table_free(&t);
	free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Gradient check
 */
START_TEST(grad_check)
{
	struct gpt_config c;
	tiny_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 136 }; /* two chunks of head rows */
	const int W = 3;  /* blocks of 8: windows reach 17..24 tokens */
	struct cpu_model64 *m = cpu_model64_create(&c, T, &e);
	ck_assert_msg(m != NULL, "%s", e.msg);
	double *w = malloc(sizeof(double) * t.total), *g = calloc(t.total, sizeof(double));
	uint32_t in[T], tg[T];
	int eots[] = {0, 13, 29, 30, 51, 100}; /* includes a one-token document */
	random_weights(&c, &t, w);
	make_tokens(&c, in, tg, T, eots, 6);
	double loss;
	ck_assert_int_eq(cpu_model64_step(m, w, in, tg, T, W, g, &loss, &e), 0);
	double worst = 0, worst_abs = 0;
	const char *worst_name = "";
	int checked = 0;
	for (int pi = 0; pi < t.n; pi++) {
		const struct gpt_param *p = &t.p[pi];
		double perr = 0, aerr = 0, gmax = 0;
		for (size_t j = 0; j < p->numel; j++)
			gmax = fmax(gmax, fabs(g[p->offset + j]));
		int nsamp = p->numel <= 8 ? (int)p->numel : 10;
		for (int s = 0; s < nsamp; s++) {
			size_t idx = p->numel <= 8 ? (size_t)s : (size_t)(rnd() % p->numel);
			if (p->kind == GPT_P_EMBED || p->kind == GPT_P_VALUE_EMBED) {
				/* rows the inputs use, and one they never do (vocab - 1) */
				int row = s == 0 ? c.vocab - 1 : (int)in[rnd() % T];
				idx = (size_t)row * c.dim + rnd() % (uint64_t)c.dim;
				if (s == 0) {
					ck_assert_msg(g[p->offset + idx] == 0, "%s: unused row has gradient",
					              p->name);
					continue;
				}
			}
			double *x = w + p->offset + idx, x_save = *x, hstep = 1e-5 * fmax(1, fabs(x_save));
			double lp, lm;
			*x = x_save + hstep;
			cpu_model64_step(m, w, in, tg, T, W, NULL, &lp, &e);
			*x = x_save - hstep;
			cpu_model64_step(m, w, in, tg, T, W, NULL, &lm, &e);
			*x = x_save;
			double fd = (lp - lm) / (2 * hstep), an = g[p->offset + idx];
			if (p->kind == GPT_P_ATTN_LAMBDAS && idx == 1 && gpt_layer_ve(&c, p->layer) < 0) {
				ck_assert_msg(an == 0 && lp == lm, "%s[1] must not matter", p->name);
				continue;
			}
			/* central differences in double: truncation and rounding
			 * errors are both near 1e-10 here */
			ck_assert_msg(fabs(fd - an) <= 1e-6 * fabs(an) + 1e-9,
			              "%s[%zu]: analytic %.12g, numeric %.12g", p->name, idx, an, fd);
			if (fabs(an) > 1e-3)
				perr = fmax(perr, fabs(fd - an) / fabs(an));
			aerr = fmax(aerr, fabs(fd - an));
			checked++;
		}
		ck_assert_msg(gmax > 0, "%s: all-zero gradient", p->name);
		if (perr > worst)
			worst = perr, worst_name = p->name;
		worst_abs = fmax(worst_abs, aerr);
	}
	printf("grad_check: %d entries of %d tensors, loss %.6f; worst relative error %.2e (%s,"
	       " entries with |g| > 1e-3), worst absolute error %.2e\n",
	       checked, t.n, loss, worst, worst_name, worst_abs);
	cpu_model64_free(m);
	gpt_table_free(&t);
	free(w), free(g);
}
END_TEST

/* ------------------------------------------------------------------------
 * float vs double, accumulation, zero head
 */
START_TEST(float_vs_double)
{
	struct gpt_config c;
	tiny_config(&c);
	c.vocab = 300;
	c.eot = 299; /* T = 150 below: two chunks of head rows */
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 150 };
	struct cpu_model *mf = cpu_model_create(&c, T, &e);
	struct cpu_model64 *md = cpu_model64_create(&c, T, &e);
	ck_assert(mf && md);
	double *wd = malloc(sizeof(double) * t.total), *gd = calloc(t.total, sizeof(double));
	float *wf = malloc(sizeof(float) * t.total), *gf = calloc(t.total, sizeof(float));
	random_weights(&c, &t, wd);
	for (size_t i = 0; i < t.total; i++)
		wd[i] = wf[i] = (float)wd[i]; /* same weights exactly */
	uint32_t in[T], tg[T];
	int eots[] = {10, 90, 91, 149};
	make_tokens(&c, in, tg, T, eots, 4);
	double lf, ld;
	ck_assert_int_eq(cpu_model_step(mf, wf, in, tg, T, 4, gf, &lf, &e), 0);
	ck_assert_int_eq(cpu_model64_step(md, wd, in, tg, T, 4, gd, &ld, &e), 0);
	ck_assert_msg(fabs(lf - ld) < 2e-6 * ld, "loss float %.9g double %.9g", lf, ld);
	double worst = 0;
	for (int pi = 0; pi < t.n; pi++) {
		const struct gpt_param *p = &t.p[pi];
		double num = 0, den = 0;
		for (size_t j = p->offset; j < p->offset + p->numel; j++) {
			num += (gf[j] - gd[j]) * (gf[j] - gd[j]);
			den += gd[j] * gd[j];
		}
		double rel = den > 0 ? sqrt(num / den) : sqrt(num);
		ck_assert_msg(rel < 1e-4, "%s: float/double gradient differ by %.3g", p->name, rel);
		worst = fmax(worst, rel);
	}
	printf("float_vs_double: loss %.9f vs %.9f, worst gradient relative difference %.2e\n", lf,
	       ld, worst);
	cpu_model_free(mf);
	cpu_model64_free(md);
	gpt_table_free(&t);
	free(wd), free(gd), free(wf), free(gf);
}
END_TEST

START_TEST(grad_accumulates)
{
	struct gpt_config c;
	tiny_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 40 };
	struct cpu_model *m = cpu_model_create(&c, T, &e);
	ck_assert(m);
	double *wd = malloc(sizeof(double) * t.total);
	float *w = malloc(sizeof(float) * t.total), *g1 = calloc(t.total, 4), *g2 = calloc(t.total, 4);
	random_weights(&c, &t, wd);
	for (size_t i = 0; i < t.total; i++)
		w[i] = (float)wd[i];
	uint32_t in[T], tg[T];
	make_tokens(&c, in, tg, T, (int[]){7}, 1);
	double l1, l2, l3;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, T, 2, g1, &l1, &e), 0);
	for (size_t i = 0; i < t.total; i++)
		g2[i] = 0.5f;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, T, 2, g2, &l2, &e), 0);
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, T, 2, NULL, &l3, &e), 0);
	ck_assert(l1 == l2 && l2 == l3); /* forward-only gives the same loss */
	/* the sums start from 0.5 instead of 0: equal up to fp32 rounding */
	size_t nz = 0;
	for (size_t i = 0; i < t.total; i++) {
		EXPECT(fabsf(g2[i] - 0.5f - g1[i]) <= 4e-6f, "grad[%zu]: %g + 0.5 != %g", i, g1[i],
		       g2[i]);
		nz += g1[i] != 0;
	}
	EXPECT_NONE("accumulation");
	ck_assert(nz > t.total / 2);
	cpu_model_free(m);
	gpt_table_free(&t);
	free(wd), free(w), free(g1), free(g2);
}
END_TEST

START_TEST(zero_head)
{
	struct gpt_config c;
	tiny_config(&c);
	c.vocab = 50304; /* the record's padded vocabulary */
	c.eot = 50256;
	c.softcap = 15;
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 140 };
	struct cpu_model *m = cpu_model_create(&c, T, &e);
	ck_assert(m);
	double *wd = malloc(sizeof(double) * t.total);
	float *w = malloc(sizeof(float) * t.total), *g = calloc(t.total, sizeof(float));
	random_weights(&c, &t, wd);
	for (size_t i = 0; i < t.total; i++)
		w[i] = (float)wd[i];
	int hi = gpt_table_find(&t, "lm_head.weight");
	memset(w + t.p[hi].offset, 0, sizeof(float) * t.p[hi].numel);
	uint32_t in[T], tg[T];
	for (int i = 0; i < T; i++) {
		in[i] = (uint32_t)(rnd() % 50257);
		tg[i] = (uint32_t)(rnd() % 50304);
	}
	double loss;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, T, 1, g, &loss, &e), 0);
	ck_assert_msg(fabs(loss - log(50304.0)) < 1e-12, "loss %.15g != ln(50304) %.15g", loss,
	              log(50304.0));
	ck_assert_msg(fabs(loss - 10.8258) < 5e-5, "loss %.6f (spec: 10.8258)", loss);
	for (int pi = 0; pi < t.n; pi++) {
		const struct gpt_param *p = &t.p[pi];
		int nz = 0;
		for (size_t j = p->offset; j < p->offset + p->numel; j++)
			nz += g[j] != 0;
		if (pi == hi)
			ck_assert_msg(nz > 0, "lm_head gradient is zero");
		else
			ck_assert_msg(nz == 0, "%s: %d nonzero gradients behind a zero head", p->name, nz);
	}
	cpu_model_free(m);
	gpt_table_free(&t);
	free(wd), free(w), free(g);
}
END_TEST

/* ------------------------------------------------------------------------
 * Mask and attention core
 */
static int rule(const int32_t *docs, int q, int k, int W, int B)
{
	return k <= q && docs[k] == docs[q] && q / B - k / B < W;
}

START_TEST(mask_ranges)
{
	enum { TMAX = 300 };
	uint32_t in[TMAX];
	int32_t docs[TMAX], first[TMAX], last[TMAX];
	int windows[] = {1, 2, 3, 5, 14, INT_MAX};
	for (int trial = 0; trial < 300; trial++) {
		int T = 1 + (int)(rnd() % TMAX), B = 1 + (int)(rnd() % 17);
		int W = windows[rnd() % 6];
		double p_eot = trial % 3 == 0 ? 0 : urand() * 0.2;
		for (int i = 0; i < T; i++)
			in[i] = urand() < p_eot ? 7u : 3u;
		gpt_mask_docs(in, T, 7, docs);
		for (int i = 0, n = 0; i < T; i++) {
			n += in[i] == 7;
			EXPECT(docs[i] == n, "docs[%d] = %d, want %d", i, docs[i], n);
		}
		gpt_mask_ranges(docs, T, W, B, first, last);
		for (int q = 0; q < T; q++)
			for (int k = 0; k < T; k++) {
				int want = rule(docs, q, k, W, B);
				EXPECT(gpt_mask_allowed(docs, q, k, W, B) == want,
				       "gpt_mask_allowed T=%d B=%d W=%d q=%d k=%d", T, B, W, q, k);
				/* the attention visits [first[q], q] for q and [k, last[k]] for k */
				EXPECT((k >= first[q] && k <= q) == want,
				       "T=%d B=%d W=%d: q=%d k=%d first=%d rule=%d", T, B, W, q, k, first[q],
				       want);
				EXPECT((q >= k && q <= last[k]) == want,
				       "T=%d B=%d W=%d: k=%d q=%d last=%d rule=%d", T, B, W, k, q, last[k],
				       want);
			}
	}
	EXPECT_NONE("mask");
}
END_TEST

/* Dense masked attention in double, forward and backward, for one head. */
static void dense_attention(const float *q, const float *k, const float *v, const float *dy,
                            const int32_t *docs, int T, int H, int hd, int h, int W, int B,
                            double *y, double *dq, double *dk, double *dv)
{
	int D = H * hd;
	double *P = calloc((size_t)T * T, 8), *dP = calloc((size_t)T * T, 8), sc = 1 / sqrt(hd);
	for (int i = 0; i < T; i++) {
		double mx = -INFINITY, sum = 0;
		for (int j = 0; j < T; j++) {
			double s = 0;
			for (int d = 0; d < hd; d++)
				s += (double)q[i * D + h * hd + d] * k[j * D + h * hd + d];
			P[i * T + j] = rule(docs, i, j, W, B) ? s * sc : -INFINITY;
			mx = fmax(mx, P[i * T + j]);
		}
		for (int j = 0; j < T; j++)
			sum += P[i * T + j] = exp(P[i * T + j] - mx);
		for (int j = 0; j < T; j++)
			P[i * T + j] /= sum;
	}
	for (int i = 0; i < T; i++)
		for (int d = 0; d < hd; d++) {
			double s = 0;
			for (int j = 0; j < T; j++)
				s += P[i * T + j] * v[j * D + h * hd + d];
			y[i * hd + d] = s;
		}
	/* dP = dy v^T; dS = P (dP - sum_j P dP); dq = sc dS k; dk = sc dS^T q; dv = P^T dy */
	for (int i = 0; i < T; i++) {
		double rs = 0;
		for (int j = 0; j < T; j++) {
			double s = 0;
			for (int d = 0; d < hd; d++)
				s += (double)dy[i * D + h * hd + d] * v[j * D + h * hd + d];
			dP[i * T + j] = s;
			rs += P[i * T + j] * s;
		}
		for (int j = 0; j < T; j++)
			dP[i * T + j] = P[i * T + j] * (dP[i * T + j] - rs);
	}
	for (int i = 0; i < T; i++)
		for (int d = 0; d < hd; d++) {
			double a = 0, b = 0, c = 0;
			for (int j = 0; j < T; j++) {
				a += dP[i * T + j] * k[j * D + h * hd + d];
				b += dP[j * T + i] * q[j * D + h * hd + d];
				c += P[j * T + i] * dy[j * D + h * hd + d];
			}
			dq[i * hd + d] = a * sc;
			dk[i * hd + d] = b * sc;
			dv[i * hd + d] = c;
		}
	free(P), free(dP);
}

START_TEST(mask_attention)
{
	enum { T = 77, H = 2, HD = 8, D = H * HD };
	const int B = 8;
	float q[T * D], k[T * D], v[T * D], dy[T * D], y[T * D], lse[T * H];
	float dq[T * D], dk[T * D], dv[T * D];
	double ry[T * HD], rdq[T * HD], rdk[T * HD], rdv[T * HD];
	uint32_t in[T];
	int32_t docs[T], first[T], last[T];
	double worst = 0;
	for (int trial = 0; trial < 6; trial++) {
		int W = trial < 5 ? 1 + trial : INT_MAX;
		for (int i = 0; i < T * D; i++) {
			q[i] = (float)srand1() * 2, k[i] = (float)srand1() * 2;
			v[i] = (float)srand1(), dy[i] = (float)srand1();
		}
		for (int i = 0; i < T; i++)
			in[i] = urand() < 0.06 ? 1u : 2u;
		in[trial * 9] = 1; /* at least one document start */
		gpt_mask_docs(in, T, 1, docs);
		gpt_mask_ranges(docs, T, W, B, first, last);
		cpu_attention_forward(y, lse, q, k, v, T, H, HD, first);
		cpu_attention_backward(dq, dk, dv, dy, q, k, v, y, lse, T, H, HD, first, last);
		for (int h = 0; h < H; h++) {
			dense_attention(q, k, v, dy, docs, T, H, HD, h, W, B, ry, rdq, rdk, rdv);
			for (int i = 0; i < T; i++)
				for (int d = 0; d < HD; d++) {
					int o = i * D + h * HD + d, r = i * HD + d;
					EXPECT(fabs(y[o] - ry[r]) < 2e-6, "W=%d y[%d,%d]: %g vs %g", W, i, d,
					       y[o], ry[r]);
					EXPECT(fabs(dq[o] - rdq[r]) < 1e-5, "W=%d dq[%d,%d] %g vs %g", W, i, d,
					       dq[o], rdq[r]);
					EXPECT(fabs(dk[o] - rdk[r]) < 1e-5, "W=%d dk[%d,%d] %g vs %g", W, i, d,
					       dk[o], rdk[r]);
					EXPECT(fabs(dv[o] - rdv[r]) < 1e-5, "W=%d dv[%d,%d] %g vs %g", W, i, d,
					       dv[o], rdv[r]);
					worst = fmax(worst, fabs(y[o] - ry[r]));
					worst = fmax(worst, fmax(fabs(dq[o] - rdq[r]), fabs(dk[o] - rdk[r])));
					worst = fmax(worst, fabs(dv[o] - rdv[r]));
				}
		}
	}
	EXPECT_NONE("attention vs dense");
	printf("mask_attention: worst |fp32 core - dense double| %.2e\n", worst);
}
END_TEST

START_TEST(rope_table)
{
	struct gpt_config c;
	gpt_config_record(&c);
	enum { T = 1000, N = 32 };
	float *cs = malloc(sizeof(float) * T * N), *sn = malloc(sizeof(float) * T * N);
	gpt_rope_table(&c, T, cs, sn);
	for (int t = 0; t < T; t += 37)
		for (int j = 0; j < N; j++) {
			double th = t * pow(1.0 / 1024, j / 31.0);
			/* fp32 theta: error about t * 2^-24 rad */
			ck_assert_msg(fabs(cs[t * N + j] - cos(th)) < 1e-6 + t * 1.2e-7, "cos t=%d j=%d", t, j);
			ck_assert_msg(fabs(sn[t * N + j] - sin(th)) < 1e-6 + t * 1.2e-7, "sin t=%d j=%d", t, j);
		}
	ck_assert(cs[0] == 1 && sn[0] == 0);
	ck_assert(cs[1 * N + 0] == cosf(1.0f));           /* freq_0 = 1 */
	ck_assert(sn[1 * N + 31] == sinf(1.0f / 1024));  /* freq_31 = 1/1024 exactly */
	free(cs), free(sn);
}
END_TEST

/* ------------------------------------------------------------------------
 * Thread independence: this binary again, case "dump", 1/2/3 threads.
 */
static void dump_config(struct gpt_config *c)
{
	tiny_config(c);
	c->vocab = 301;
	c->eot = 300;
}

START_TEST(dump)
{
	const char *path = getenv("GPT_MODEL_DUMP");
	if (!path)
		return; /* only as the helper of "threads" */
	struct gpt_config c;
	dump_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	enum { T = 203 };
	struct cpu_model *m = cpu_model_create(&c, T, &e);
	ck_assert(m);
	double *wd = malloc(sizeof(double) * t.total);
	float *w = malloc(sizeof(float) * t.total), *g = calloc(t.total, sizeof(float));
	random_weights(&c, &t, wd);
	for (size_t i = 0; i < t.total; i++)
		w[i] = (float)wd[i];
	uint32_t in[T], tg[T];
	make_tokens(&c, in, tg, T, (int[]){5, 60, 61, 150}, 4);
	double loss;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, T, 3, g, &loss, &e), 0);
	FILE *f = fopen(path, "wb");
	ck_assert(f);
	fprintf(f, "threads %d loss %a\n", parallel_threads(), loss);
	ck_assert(fwrite(g, sizeof(float), t.total, f) == t.total);
	ck_assert(fclose(f) == 0);
	cpu_model_free(m);
	gpt_table_free(&t);
	free(wd), free(w), free(g);
}
END_TEST

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "no dump %s", path);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	rewind(f);
	char *b = malloc((size_t)len + 1);
	ck_assert(fread(b, 1, (size_t)len, f) == (size_t)len);
	fclose(f);
	b[len] = 0;
	*n = (size_t)len;
	return b;
}

START_TEST(threads)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	ck_assert(n > 0);
	self[n] = 0;
	char *dumps[3];
	size_t lens[3];
	for (int th = 1; th <= 3; th++) {
		char cmd[5000];
		const char *out = test_path(th == 1 ? "dump1" : th == 2 ? "dump2" : "dump3");
		snprintf(cmd, sizeof cmd,
		         "env -u CK_XML_LOG_FILE_NAME -u CK_TAP_LOG_FILE_NAME -u CK_LOG_FILE_NAME "
		         "-u CK_RUN_SUITE -u CK_INCLUDE_TAGS -u CK_EXCLUDE_TAGS GPT_THREADS=%d "
		         "GPT_MODEL_DUMP='%s' CK_RUN_CASE=dump CK_VERBOSITY=silent '%s' >/dev/null 2>&1",
		         th, out, self);
		ck_assert_msg(system(cmd) == 0, "dump run with %d threads failed", th);
		dumps[th - 1] = slurp(out, &lens[th - 1]);
		char want[32];
		snprintf(want, sizeof want, "threads %d ", th);
		ck_assert_msg(!strncmp(dumps[th - 1], want, strlen(want)), "dump: %.40s", dumps[th - 1]);
	}
	for (int i = 1; i < 3; i++) {
		ck_assert(lens[i] == lens[0]);
		/* skip the "threads N " prefix: same length since N is one digit */
		ck_assert_msg(!memcmp(dumps[i] + 10, dumps[0] + 10, lens[0] - 10),
		              "results with %d threads differ from 1 thread", i + 1);
	}
	for (int i = 0; i < 3; i++)
		free(dumps[i]);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors
 */
START_TEST(errors)
{
	struct gpt_config c;
	tiny_config(&c);
	struct gpt_err e;
	ck_assert(cpu_model_create(&c, 0, &e) == NULL);
	ck_assert(strstr(e.msg, "out of range"));
	ck_assert(cpu_model_create(&c, c.max_seq + 1, &e) == NULL);
	ck_assert(cpu_model64_create(&c, c.max_seq + 1, &e) == NULL);
	struct gpt_config bad = c;
	bad.layers = 3;
	ck_assert(cpu_model_create(&bad, 16, &e) == NULL);
	ck_assert(strstr(e.msg, "layers"));
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct cpu_model *m = cpu_model_create(&c, 16, &e);
	ck_assert(m);
	float *w = calloc(t.total, sizeof(float)), *g = calloc(t.total, sizeof(float));
	uint32_t in[17] = {0}, tg[17] = {0};
	double loss = -1;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 17, 1, g, &loss, &e), -1);
	ck_assert(strstr(e.msg, "17"));
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 0, 1, g, &loss, &e), -1);
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 16, 0, g, &loss, &e), -1);
	ck_assert(strstr(e.msg, "window"));
	in[5] = (uint32_t)c.vocab;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 16, 1, g, &loss, &e), -1);
	ck_assert(strstr(e.msg, "input token 61 at position 5"));
	in[5] = 0;
	tg[15] = 0xffffffffu;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 16, 1, g, &loss, &e), -1);
	ck_assert(strstr(e.msg, "target token 4294967295 at position 15"));
	ck_assert(loss == -1);
	for (size_t i = 0; i < t.total; i++)
		EXPECT(g[i] == 0, "grad[%zu] written by a failed step", i);
	EXPECT_NONE("failed steps");
	/* all-zero weights are legal: uniform softmax */
	tg[15] = 1;
	ck_assert_int_eq(cpu_model_step(m, w, in, tg, 16, 1, g, &loss, &e), 0);
	ck_assert(fabs(loss - log(61.0)) < 1e-6);
	cpu_model_free(m);
	cpu_model_free(NULL);
	cpu_model64_free(NULL);
	gpt_table_free(&t);
	free(w), free(g);
}
END_TEST

/* ------------------------------------------------------------------------
 * Benchmark (not a test): GPT_MODEL_BENCH="T layers dim heads vocab window reps"
 */
START_TEST(bench)
{
	const char *spec = getenv("GPT_MODEL_BENCH");
	if (!spec)
		return;
	int T = 1024, L = 4, D = 128, H = 2, V = 50304, W = 8, reps = 3;
	sscanf(spec, "%d %d %d %d %d %d %d", &T, &L, &D, &H, &V, &W, &reps);
	struct gpt_config c;
	gpt_config_record(&c);
	c.layers = L, c.dim = D, c.heads = H, c.vocab = V, c.eot = V - 1;
	c.head_dim = D / H, c.mlp_hidden = 4 * D, c.rope_freqs = c.head_dim / 4;
	c.no_attn = L > 7 ? 1u << 7 : 0, c.value_embeds = L >= 6 ? 3 : L / 2;
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct cpu_model *m = cpu_model_create(&c, T, &e);
	ck_assert_msg(m != NULL, "%s", e.msg);
	float *w = malloc(sizeof(float) * t.total), *g = calloc(t.total, sizeof(float));
	for (size_t i = 0; i < t.total; i++)
		w[i] = (float)srand1() * 0.05f;
	uint32_t *in = malloc(sizeof(uint32_t) * T), *tg = malloc(sizeof(uint32_t) * T);
	for (int i = 0; i < T; i++)
		in[i] = (uint32_t)(rnd() % (uint64_t)V), tg[i] = (uint32_t)(rnd() % (uint64_t)V);
	double loss, t0 = now_seconds();
	ck_assert(!cpu_model_step(m, w, in, tg, T, W, NULL, &loss, &e));
	double tf = now_seconds() - t0;
	t0 = now_seconds();
	for (int r = 0; r < reps; r++)
		ck_assert(!cpu_model_step(m, w, in, tg, T, W, g, &loss, &e));
	double tb = (now_seconds() - t0) / reps;
	printf("model_cpu: T=%d layers=%d dim=%d heads=%d vocab=%d window=%d threads=%d: "
	       "forward %.3f s (%.0f tok/s), forward+backward %.3f s (%.0f tok/s)\n",
	       T, L, D, c.heads, V, W, parallel_threads(), tf, T / tf, tb, T / tb);
	cpu_model_free(m);
	gpt_table_free(&t);
	free(w), free(g), free(in), free(tg);
}
END_TEST

static Suite *model_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, spec_forward);
	tcase_add_test(tc, grad_check);
	tcase_add_test(tc, float_vs_double);
	tcase_add_test(tc, grad_accumulates);
	tcase_add_test(tc, zero_head);
	tcase_add_test(tc, mask_ranges);
	tcase_add_test(tc, mask_attention);
	tcase_add_test(tc, rope_table);
	tcase_add_test(tc, threads);
	tcase_add_test(tc, errors);
	suite_add_tcase(s, tc);
	TCase *dumpc = tcase_create("dump");
	tcase_set_timeout(dumpc, 120);
	tcase_add_test(dumpc, dump);
	suite_add_tcase(s, dumpc);
	TCase *bc = tcase_create("bench");
	tcase_set_timeout(bc, 3600);
	tcase_add_test(bc, bench);
	suite_add_tcase(s, bc);
	return s;
}

CHECK_MAIN(model_suite)
