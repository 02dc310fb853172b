/*
 * gpu_engine.c - the CUDA engine (lib/engine_cuda.c) against the CPU engine
 * (lib/engine_cpu.c, the fp32 reference model) on a small model with
 * random weights everywhere: loss and every parameter's gradient for
 * several T and windows, bitwise determinism, the same bits with kept and
 * recomputed activations (GPT_CUDA_RECOMPUTE), one optimizer step against
 * lib/optim.c at the record's precision (OPTIM_RECORD_PRECISION, fed the
 * GPU's own gradient), and the state/checkpoint round trip. Needs a CUDA
 * device (make check-gpu).
 *
 * Model: vocab 50304 (eot 50256), 4 layers, dim 256, 2 heads of 128,
 * MLP 1024, 2 value-embedding tables, layer 1 without attention (so table
 * 0 serves layers 0 and 2, table 1 only layer 3), softcap 15, eps 2^-7.
 * Matrices and embeddings are bf16-representable (both engines read the
 * same numbers; the GPU's bf16 activations are the difference).
 *
 * Everything measured goes to stderr as tables ("gpu_engine: ..."), so one
 * run diagnoses the engine. Bounds (bf16 noise): loss relative 1e-2;
 * per-tensor gradient cosine > 0.99 and relative norm error < 5e-2 (for
 * the 1-D scalar tensors, whose gradients are sums of T x D products that
 * cancel heavily: 0.15, or 5% of the largest scalar gradient; on the H200
 * layer 0's lambdas, one cancelling sum, differed by 17% = 1.5e-4 at T 1000).
 * Without a GPU, tests/gpu/mock/run-engine.sh runs this program against
 * host emulations of the launchers (small vocabulary and T).
 */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "check_common.h"

#include "config.h"
#include "engine.h"
#include "optim.h"

/* ------------------------------------------------------------------------
 * Setup
 */
static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static double u01(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) / 9007199254740992.0; }
static double grand(uint64_t *s)
{
	return sqrt(-2.0 * log(u01(s))) * cos(6.283185307179586 * u01(s));
}
static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_config(struct gpt_config *c)
{
	gpt_config_record(c);
	c->layers = 4;
	c->dim = 256;
	c->heads = 2;
	c->head_dim = 128;
	c->mlp_hidden = 1024;
	c->value_embeds = 2;
	c->no_attn = 1u << 1;
	const char *v = getenv("GPU_ENGINE_VOCAB"); /* smaller vocab for the host mock */
	if (v && atoi(v) > 0) {
		c->vocab = atoi(v);
		c->eot = c->vocab - 3;
	}
}

/* Random weights, every tensor nonzero. Matrices N(0, 1/in), the head
 * N(0, 4/D) (logits of a few units, so the softcap matters), embeddings
 * N(0, 1); lambdas near (1, 0.5), skip weights near 1; all matrices and
 * embeddings rounded to bf16. */
static float *random_weights(const struct gpt_config *c, const struct gpt_table *t, uint64_t seed)
{
	float *w = xmalloc(sizeof(float) * t->total);
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		uint64_t s = seed * 1000003u + (uint64_t)i;
		float *x = w + p->offset;
		for (size_t k = 0; k < p->numel; k++) {
			double r = grand(&s), v;
			switch (p->kind) {
			case GPT_P_SKIP: v = 1.0 + 0.2 * r; break;
			case GPT_P_LAMBDAS:
			case GPT_P_ATTN_LAMBDAS: v = (k == 0 ? 1.0 : 0.5) + 0.2 * r; break;
			case GPT_P_EMBED:
			case GPT_P_VALUE_EMBED: v = r; break;
			case GPT_P_HEAD: v = r * 2.0 / sqrt((double)c->dim); break;
			default: v = r / sqrt((double)p->shape[1]); break;
			}
			x[k] = p->ndim == 2 ? round_bf16((float)v) : (float)v;
		}
	}
	return w;
}

/* Random tokens with EOTs sprinkled (about one per 200 tokens, the first
 * position not one, so document 0 is a tail); targets random. */
static void random_tokens(const struct gpt_config *c, int T, uint64_t seed, uint32_t *in,
                          uint32_t *tg)
{
	uint64_t s = seed;
	for (int t = 0; t < T; t++) {
		in[t] = (uint32_t)(splitmix(&s) % (uint64_t)c->vocab);
		if (in[t] == (uint32_t)c->eot)
			in[t] = 7;
		if (t > 0 && splitmix(&s) % 200 == 0)
			in[t] = (uint32_t)c->eot;
		tg[t] = (uint32_t)(splitmix(&s) % (uint64_t)c->vocab);
	}
}

static int max_T_env(int dflt)
{
	const char *v = getenv("GPU_ENGINE_MAX_T");
	return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static struct engine *make(enum engine_device dev, const struct gpt_config *c, const float *w,
                           int max_T)
{
	struct gpt_err e = {0};
	struct engine *en = engine_create(dev, c, w, max_T, 1, &e);
	ck_assert_msg(en, "engine_create(%s): %s", dev == ENGINE_CUDA ? "cuda" : "cpu", e.msg);
	return en;
}

struct cmp {
	double cos, rel, na, nb, maxabs;
};
static struct cmp compare(const float *a, const float *b, size_t n)
{
	double ab = 0, aa = 0, bb = 0, dd = 0, mx = 0;
	for (size_t i = 0; i < n; i++) {
		double x = a[i], y = b[i], d = x - y;
		ab += x * y, aa += x * x, bb += y * y, dd += d * d;
		mx = fabs(d) > mx ? fabs(d) : mx;
	}
	struct cmp r;
	r.na = sqrt(aa), r.nb = sqrt(bb);
	r.cos = aa > 0 && bb > 0 ? ab / (r.na * r.nb) : (aa == 0 && bb == 0 ? 1.0 : 0.0);
	r.rel = bb > 0 ? sqrt(dd) / r.nb : sqrt(dd);
	r.maxabs = mx;
	return r;
}

/* ------------------------------------------------------------------------
 * Loss and gradients against the CPU engine
 */
static void loss_and_grads(int T, const int *windows, int nw)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
	struct gpt_config c;
	test_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *w = random_weights(&c, &t, 11);
	uint32_t *in = xmalloc(sizeof(uint32_t) * (size_t)T), *tg = xmalloc(sizeof(uint32_t) * (size_t)T);
	random_tokens(&c, T, 1000 + (uint64_t)T, in, tg);
	int neot = 0;
	for (int i = 0; i < T; i++)
		neot += in[i] == (uint32_t)c.eot;
	struct engine *cpu = make(ENGINE_CPU, &c, w, T), *gpu = make(ENGINE_CUDA, &c, w, T);
	float *gc = xmalloc(sizeof(float) * t.total), *gg = xmalloc(sizeof(float) * t.total);
	struct gpt_err e = {0};
	for (int k = 0; k < nw; k++) {
		int W = windows[k];
		double lc, lg, lg_eval;
		cpu->ops->zero_grad(cpu);
		gpu->ops->zero_grad(gpu);
		double t0 = now();
		ck_assert_msg(!cpu->ops->micro(cpu, in, tg, T, W, 1, &lc, &e), "%s", e.msg);
		double t1 = now();
		ck_assert_msg(!gpu->ops->micro(gpu, in, tg, T, W, 1, &lg, &e), "%s", e.msg);
		double t2 = now();
		ck_assert_msg(!gpu->ops->micro(gpu, in, tg, T, W, 0, &lg_eval, &e), "%s", e.msg);
		ck_assert(!cpu->ops->grad_get(cpu, gc, &e));
		ck_assert(!gpu->ops->grad_get(gpu, gg, &e));
		double rl = fabs(lg - lc) / fabs(lc);
		fprintf(stderr,
		        "gpu_engine: T %d W %d (%d EOTs): loss cpu %.6f gpu %.6f rel %.2e (eval-only %.6f); "
		        "fwd+bwd cpu %.2f s gpu %.3f s\n",
		        T, W, neot, lc, lg, rl, lg_eval, t1 - t0, t2 - t1);
		ck_assert_msg(isfinite(lg) && rl < 1e-2, "loss: gpu %.6f cpu %.6f", lg, lc);
		ck_assert_msg(lg_eval == lg, "eval-only loss %.9g != training loss %.9g", lg_eval, lg);
		fprintf(stderr, "gpu_engine:   %-32s %10s %12s %12s %10s %10s\n", "tensor", "numel",
		        "|g cpu|", "|g gpu|", "cosine", "rel err");
		int bad = 0;
		/* scalar parameters: each gradient is one sum over T x D products
		 * with heavy cancellation (layer 0's two lambdas are the same sum,
		 * since x == x0 there), computed from bf16 activations; an error is
		 * accepted when it is under 0.15 of the tensor's gradient or under
		 * 5% of the largest scalar gradient of the run */
		double scal = 0;
		for (int i = 0; i < t.n; i++)
			if (t.p[i].ndim == 1) {
				struct cmp r = compare(gg + t.p[i].offset, gc + t.p[i].offset, t.p[i].numel);
				scal = r.nb > scal ? r.nb : scal;
			}
		for (int i = 0; i < t.n; i++) {
			const struct gpt_param *p = &t.p[i];
			struct cmp r = compare(gg + p->offset, gc + p->offset, p->numel);
			int ok = r.cos > 0.99 && isfinite(r.na) &&
			         (p->ndim == 1 ? r.rel < 0.15 || r.rel * r.nb < 0.05 * scal : r.rel < 5e-2);
			bad += !ok;
			fprintf(stderr, "gpu_engine:   %-32s %10zu %12.4e %12.4e %10.6f %10.2e%s\n", p->name,
			        p->numel, r.nb, r.na, r.cos, r.rel, ok ? "" : "  <-- FAIL");
		}
		ck_assert_msg(!bad, "T %d W %d: %d tensors' gradients out of bounds (table above)", T, W,
		              bad);
	}
	fprintf(stderr, "gpu_engine: peak GPU bytes %.1f MiB (max_T %d)\n",
	        (double)gpu->ops->peak_bytes(gpu) / 1048576.0, T);
	engine_free(cpu);
	engine_free(gpu);
	free(gc);
	free(gg);
	free(in);
	free(tg);
	free(w);
	gpt_table_free(&t);
}

static const int win3[] = {1, 3, 14};
START_TEST(grads_t1024) { loss_and_grads(max_T_env(1024), win3, 3); }
END_TEST
START_TEST(grads_t4096) { loss_and_grads(max_T_env(4096), win3, 3); }
END_TEST
/* not a multiple of 128: the engine pads */
static const int win1[] = {3};
START_TEST(grads_t1000) { loss_and_grads(max_T_env(1024) - 24, win1, 1); }
END_TEST

/* ------------------------------------------------------------------------
 * Determinism: two micro-batches (accumulated) twice, same bits.
 */
START_TEST(deterministic)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
	struct gpt_config c;
	test_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	const int T = max_T_env(1024);
	float *w = random_weights(&c, &t, 12);
	uint32_t *in = xmalloc(sizeof(uint32_t) * 2 * T), *tg = xmalloc(sizeof(uint32_t) * 2 * T);
	random_tokens(&c, 2 * T, 77, in, tg);
	struct engine *gpu = make(ENGINE_CUDA, &c, w, T);
	float *g[2];
	double loss[2][2];
	struct gpt_err e = {0};
	for (int r = 0; r < 2; r++) {
		g[r] = xmalloc(sizeof(float) * t.total);
		gpu->ops->zero_grad(gpu);
		for (int m = 0; m < 2; m++)
			ck_assert_msg(!gpu->ops->micro(gpu, in + m * T, tg + m * T, T, 5, 1, &loss[r][m], &e),
			              "%s", e.msg);
		ck_assert(!gpu->ops->grad_get(gpu, g[r], &e));
	}
	size_t diff = 0;
	for (size_t i = 0; i < t.total; i++)
		diff += memcmp(&g[0][i], &g[1][i], sizeof(float)) != 0;
	fprintf(stderr, "gpu_engine: determinism: losses %.9g %.9g / %.9g %.9g, %zu of %zu gradient "
	                "numbers differ\n",
	        loss[0][0], loss[0][1], loss[1][0], loss[1][1], diff, t.total);
	ck_assert(loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1]);
	ck_assert_msg(diff == 0, "%zu gradient numbers differ between two runs", diff);
	engine_free(gpu);
	free(g[0]);
	free(g[1]);
	free(in);
	free(tg);
	free(w);
	gpt_table_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------
 * Engine variants that must give the same bits: the loss and gradient of
 * `micros` accumulated micro-batches with the environment variable `var`
 * at `v0` and at `v1` (an engine each).
 */
static void env_same(const char *what, const char *var, const char *v0, const char *v1, int micros,
                     uint64_t seed)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
	struct gpt_config c;
	test_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	const int T = max_T_env(1024);
	float *w = random_weights(&c, &t, seed);
	uint32_t *in = xmalloc(sizeof(uint32_t) * micros * T);
	uint32_t *tg = xmalloc(sizeof(uint32_t) * micros * T);
	random_tokens(&c, micros * T, seed + 16, in, tg);
	struct gpt_err e = {0};
	float *g[2];
	double loss[2][4];
	ck_assert(micros <= 4);
	for (int r = 0; r < 2; r++) {
		setenv(var, r ? v1 : v0, 1);
		struct engine *gpu = make(ENGINE_CUDA, &c, w, T);
		g[r] = xmalloc(sizeof(float) * t.total);
		gpu->ops->zero_grad(gpu);
		for (int m = 0; m < micros; m++)
			ck_assert_msg(!gpu->ops->micro(gpu, in + m * T, tg + m * T, T, 3, 1, &loss[r][m], &e),
			              "%s", e.msg);
		ck_assert(!gpu->ops->grad_get(gpu, g[r], &e));
		engine_free(gpu);
	}
	unsetenv(var);
	size_t diff = 0;
	for (size_t i = 0; i < t.total; i++)
		diff += memcmp(&g[0][i], &g[1][i], sizeof(float)) != 0;
	fprintf(stderr, "gpu_engine: %s (%s=%s / %s): last losses %.9g / %.9g, %zu of %zu gradient "
	        "numbers differ\n", what, var, v0, v1, loss[0][micros - 1], loss[1][micros - 1], diff,
	        t.total);
	for (int m = 0; m < micros; m++)
		ck_assert_msg(loss[0][m] == loss[1][m], "%s: micro-batch %d's loss differs", what, m);
	ck_assert_msg(diff == 0, "%s: %zu gradient numbers differ", what, diff);
	free(g[0]);
	free(g[1]);
	free(in);
	free(tg);
	free(w);
	gpt_table_free(&t);
}

/* Kept activations (GPT_CUDA_RECOMPUTE=0, the training default) and
 * recomputed ones (=1): the same bits. */
START_TEST(recompute_same)
{
	env_same("kept vs recomputed activations", "GPT_CUDA_RECOMPUTE", "0", "1", 2, 15);
}
END_TEST

/* ------------------------------------------------------------------------
 * The data-parallel path with one rank (GPT_CUDA_NCCL=1: NCCL communicator
 * of one, gradient buckets averaged during the backward, Muon split into
 * momentum / own Newton-Schulz / all_gather / apply) gives the plain
 * engine's bits over three steps of two micro-batches.
 */
START_TEST(nccl_world1)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
	struct gpt_config c;
	test_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	const int T = max_T_env(1024);
	float *w = random_weights(&c, &t, 14);
	uint32_t *in = xmalloc(sizeof(uint32_t) * 6 * T), *tg = xmalloc(sizeof(uint32_t) * 6 * T);
	random_tokens(&c, 6 * T, 123, in, tg);
	struct gpt_err e = {0};
	float *out[2];
	double loss[2][6], sum[2] = {0, 0};
	for (int r = 0; r < 2; r++) {
		setenv("GPT_CUDA_NCCL", r ? "1" : "0", 1);
		struct engine *en = engine_create_dist(ENGINE_CUDA, &c, w, T, 1, NULL, &e);
		ck_assert_msg(en, "engine_create_dist: %s", e.msg);
		for (int step = 0; step < 3; step++) {
			double lr[GPT_NGROUPS] = {0.3, 0.004, 0.02, 0.03};
			en->ops->zero_grad(en);
			for (int m = 0; m < 2; m++) {
				int k = 2 * step + m;
				ck_assert_msg(!en->ops->micro(en, in + k * T, tg + k * T, T, 3,
				                              m ? MICRO_GRAD_LAST : MICRO_GRAD, &loss[r][k], &e),
				              "%s", e.msg);
			}
			ck_assert_msg(!en->ops->update(en, lr, 0.9, &e), "%s", e.msg);
		}
		sum[r] = loss[r][5];
		ck_assert_msg(!en->ops->allreduce || !en->ops->allreduce(en, &sum[r], 1, &e), "%s", e.msg);
		out[r] = xmalloc(sizeof(float) * t.total);
		ck_assert(!en->ops->state_get(en, 0, out[r], &e));
		engine_free(en);
	}
	unsetenv("GPT_CUDA_NCCL");
	size_t diff = 0;
	for (size_t i = 0; i < t.total; i++)
		diff += memcmp(&out[0][i], &out[1][i], sizeof(float)) != 0;
	fprintf(stderr, "gpu_engine: NCCL path, one rank: losses %.9g .. %.9g vs %.9g .. %.9g; %zu of "
	        "%zu weights differ after 3 steps\n", loss[0][0], loss[0][5], loss[1][0], loss[1][5],
	        diff, t.total);
	for (int k = 0; k < 6; k++)
		ck_assert_msg(loss[0][k] == loss[1][k], "micro-batch %d: loss %.9g (plain) vs %.9g (NCCL)",
		              k, loss[0][k], loss[1][k]);
	ck_assert_msg(sum[1] == loss[1][5], "allreduce over one rank changed %.9g to %.9g", loss[1][5],
	              sum[1]);
	ck_assert_msg(diff == 0, "%zu weights differ between the plain and the NCCL path", diff);
	free(out[0]);
	free(out[1]);
	free(in);
	free(tg);
	free(w);
	gpt_table_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------
 * One optimizer step against lib/optim.c (record precision) fed the GPU's
 * gradient; state round trip.
 */
START_TEST(update_step)
{
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
	struct gpt_config c;
	test_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	const int T = max_T_env(1024);
	float *w = random_weights(&c, &t, 13);
	uint32_t *in = xmalloc(sizeof(uint32_t) * T), *tg = xmalloc(sizeof(uint32_t) * T);
	random_tokens(&c, T, 99, in, tg);
	struct engine *gpu = make(ENGINE_CUDA, &c, w, T);
	struct gpt_err e = {0};
	size_t n = t.total;
	float *g = xmalloc(sizeof(float) * n), *wg = xmalloc(sizeof(float) * n);
	float *wc = xmalloc(sizeof(float) * n);

	/* params round trip before anything */
	ck_assert_int_eq(gpu->ops->nstate(gpu), 1 + OPTIM_NSTATE);
	ck_assert_uint_eq(gpu->ops->state_numel(gpu, 0), n);
	ck_assert(!gpu->ops->state_get(gpu, 0, wg, &e));
	ck_assert_msg(!memcmp(wg, w, sizeof(float) * n), "params differ after create");

	double loss;
	gpu->ops->zero_grad(gpu);
	ck_assert_msg(!gpu->ops->micro(gpu, in, tg, T, 3, 1, &loss, &e), "%s", e.msg);
	ck_assert(!gpu->ops->grad_get(gpu, g, &e));
	const double lr[GPT_NGROUPS] = {ADAM_LR_EMBED, ADAM_LR_HEAD, ADAM_LR_SCALAR, MUON_LR};
	const double mu = 0.85;
	struct optim *o = optim_create(&c, &t, OPTIM_RECORD_PRECISION, &e);
	ck_assert_msg(o, "%s", e.msg);
	for (int step = 1; step <= 2; step++) {
		if (step == 1)
			memcpy(wc, w, sizeof(float) * n);
		ck_assert(!gpu->ops->update(gpu, lr, mu, &e));
		optim_step(o, wc, g, lr, mu);
		ck_assert(gpu->ops->steps(gpu) == step);
		ck_assert(!gpu->ops->state_get(gpu, 0, wg, &e));
		fprintf(stderr, "gpu_engine: update step %d (same gradient both sides):\n", step);
		fprintf(stderr, "gpu_engine:   %-32s %12s %12s %12s %10s\n", "tensor", "|dp cpu|",
		        "|dp gpu - cpu|", "max abs", "rel");
		int bad = 0;
		for (int i = 0; i < t.n; i++) {
			const struct gpt_param *p = &t.p[i];
			double dd = 0, dc = 0, mx = 0;
			for (size_t k = 0; k < p->numel; k++) {
				double pc = wc[p->offset + k], pg = wg[p->offset + k], p0 = w[p->offset + k];
				dd += (pg - pc) * (pg - pc);
				dc += (pc - p0) * (pc - p0);
				mx = fabs(pg - pc) > mx ? fabs(pg - pc) : mx;
			}
			double rel = dc > 0 ? sqrt(dd / dc) : sqrt(dd);
			/* Adam is bitwise optim.c; Muon's products differ in summation order */
			double lim = p->group == GPT_GROUP_MUON ? 5e-2 : 1e-6;
			int ok = isfinite(rel) && rel < lim;
			bad += !ok;
			fprintf(stderr, "gpu_engine:   %-32s %12.4e %12.4e %12.4e %10.2e%s\n", p->name,
			        sqrt(dc), sqrt(dd), mx, rel, ok ? "" : "  <-- FAIL");
		}
		ck_assert_msg(!bad, "step %d: %d tensors' updates out of bounds", step, bad);
		/* run the second step from the CPU's params so both start equal */
		memcpy(w, wc, sizeof(float) * n);
		ck_assert(!gpu->ops->state_set(gpu, 0, wc, &e));
	}
	/* optimizer state: Adam exactly, Muon momentum (fp32 lerps) exactly */
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer b = optim_buffer(o, (enum optim_state)s);
		ck_assert_str_eq(gpu->ops->state_name(gpu, 1 + s), b.name);
		ck_assert_uint_eq(gpu->ops->state_numel(gpu, 1 + s), b.numel);
		float *x = xmalloc(sizeof(float) * b.numel);
		ck_assert(!gpu->ops->state_get(gpu, 1 + s, x, &e));
		struct cmp r = compare(x, b.data, b.numel);
		fprintf(stderr, "gpu_engine: state %-20s rel %.2e max abs %.3e\n", b.name, r.rel, r.maxabs);
		ck_assert_msg(r.rel < 1e-6, "%s differs from lib/optim.c's", b.name);
		/* round trip */
		ck_assert(!gpu->ops->state_set(gpu, 1 + s, x, &e));
		float *y = xmalloc(sizeof(float) * b.numel);
		ck_assert(!gpu->ops->state_get(gpu, 1 + s, y, &e));
		ck_assert_msg(!memcmp(x, y, sizeof(float) * b.numel), "%s round trip", b.name);
		free(x);
		free(y);
	}
	/* bf16 tables stay bf16-representable in the fp32 master */
	size_t nonbf = 0;
	for (int i = 0; i < t.n; i++)
		if (t.p[i].dtype == GPT_BF16)
			for (size_t k = 0; k < t.p[i].numel; k++)
				nonbf += round_bf16(wg[t.p[i].offset + k]) != wg[t.p[i].offset + k];
	ck_assert_msg(nonbf == 0, "%zu embedding values not bf16 after the update", nonbf);
	ck_assert(!gpu->ops->set_steps(gpu, 5, &e) && gpu->ops->steps(gpu) == 5);
	ck_assert(gpu->ops->set_steps(gpu, -1, &e));
	/* logits of the last token against the CPU engine's */
	{
		struct engine *cpu = make(ENGINE_CPU, &c, wg, T);
		ck_assert(!gpu->ops->state_set(gpu, 0, wg, &e));
		float *zc = xmalloc(sizeof(float) * c.vocab), *zg = xmalloc(sizeof(float) * c.vocab);
		int Tl = T - 5;
		ck_assert_msg(!cpu->ops->logits(cpu, in, Tl, 3, zc, &e), "%s", e.msg);
		ck_assert_msg(!gpu->ops->logits(gpu, in, Tl, 3, zg, &e), "%s", e.msg);
		struct cmp r = compare(zg, zc, (size_t)c.vocab);
		fprintf(stderr, "gpu_engine: logits (T %d): cosine %.6f rel %.2e max abs %.3e\n", Tl, r.cos,
		        r.rel, r.maxabs);
		ck_assert(r.cos > 0.99 && r.rel < 5e-2);
		engine_free(cpu);
		free(zc);
		free(zg);
	}
	/* errors */
	ck_assert(gpu->ops->micro(gpu, in, tg, T + 1, 3, 1, &loss, &e));
	in[3] = (uint32_t)c.vocab;
	ck_assert(gpu->ops->micro(gpu, in, tg, T, 3, 1, &loss, &e));
	fprintf(stderr, "gpu_engine: error message: %s\n", e.msg);
	optim_free(o);
	engine_free(gpu);
	free(g);
	free(wg);
	free(wc);
	free(in);
	free(tg);
	free(w);
	gpt_table_free(&t);
}
END_TEST

static Suite *gpu_engine_suite(void)
{
	Suite *s = suite_create("gpu_engine");
	TCase *tc = tcase_create("engine");
	tcase_add_test(tc, grads_t1024);
	tcase_add_test(tc, grads_t1000);
	tcase_add_test(tc, deterministic);
	tcase_add_test(tc, recompute_same);
	tcase_add_test(tc, update_step);
	tcase_add_test(tc, nccl_world1);
	tcase_add_test(tc, grads_t4096);
	tcase_set_timeout(tc, 600);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(gpu_engine_suite)
