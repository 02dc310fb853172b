/* check_init.c - the generator and the record's initialisation. */
#include "check_common.h"
#include "config.h"
#include "init.h"
#include "parallel.h"

#include <math.h>
#include <sys/wait.h>

/* A small configuration with every kind of tensor (attention-less block,
 * value embeddings, mlp_hidden != dim so that fan-in matters). */
static void small_config(struct gpt_config *c)
{
	gpt_config_record(c);
	c->vocab = 1000;
	c->eot = 999;
	c->layers = 4;
	c->dim = 64;
	c->heads = 2;
	c->head_dim = 32;
	c->rope_freqs = 8;
	c->mlp_hidden = 96;
	c->value_embeds = 1;
	c->no_attn = 1u << 2;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static float *fill(const struct gpt_table *t, uint64_t seed)
{
	float *w = xmalloc(t->total * sizeof *w);
	memset(w, 0xAB, t->total * sizeof *w); /* garbage: every element must be written */
	init_weights(t, seed, w);
	return w;
}

/* ------------------------------------------------------------------------
 * building blocks
 */
START_TEST(philox_known_answers)
{
	/* Random123 tests/kat_vectors, "philox4x32 10" */
	static const uint32_t v[3][10] = {
		{0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
		{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
		 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
		{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
		 0x94fdcceb, 0x5001e420, 0x24126ea1},
	};
	for (int i = 0; i < 3; i++) {
		uint32_t out[4];
		philox4x32_10(v[i], v[i] + 4, out);
		for (int k = 0; k < 4; k++)
			ck_assert_uint_eq(out[k], v[i][6 + k]);
	}
}
END_TEST

START_TEST(fnv_known_answers)
{
	ck_assert_uint_eq(init_fnv1a64(""), 0xcbf29ce484222325ull);
	ck_assert_uint_eq(init_fnv1a64("a"), 0xaf63dc4c8601ec8cull);
	ck_assert_uint_eq(init_fnv1a64("foobar"), 0x85944171f73967e8ull);
}
END_TEST

START_TEST(ln_accuracy)
{
	ck_assert(init_ln(1.0) == 0.0);
	ck_assert(fabs(init_ln(ldexp(1, -53)) - -53 * M_LN2) < 1e-13);
	ck_assert(fabs(init_ln(2.0) - M_LN2) < 1e-16);
	double worst = 0;
	uint64_t s = 12345;
	for (int i = 0; i < 200000; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		/* u in (0, 1] as the generator makes them, plus a spread of magnitudes */
		double u = i % 2 ? (double)((s >> 11) + 1) * ldexp(1, -53)
		                 : ldexp(1.0 + (double)(s >> 12) * ldexp(1, -52), (int)(s % 200) - 100);
		double a = init_ln(u), b = log(u);
		double err = fabs(a - b) / fmax(fabs(b), 1e-300);
		if (b == 0)
			err = fabs(a);
		if (err > worst)
			worst = err;
	}
	ck_assert_msg(worst < 1e-15, "worst relative error of init_ln: %g", worst);
}
END_TEST

START_TEST(sincos_accuracy)
{
	double worst = 0;
	for (int i = 0; i < 200000; i++) {
		double t = (double)i / 200000.0 + 1e-7 * (i % 7);
		if (t >= 1)
			continue;
		double s, c;
		init_sincos2pi(t, &s, &c);
		double es = fabs(s - sin(2 * M_PI * t)), ec = fabs(c - cos(2 * M_PI * t));
		worst = fmax(worst, fmax(es, ec));
		ck_assert(fabs(s * s + c * c - 1) < 1e-15);
	}
	/* 2 pi t itself is rounded before libm sees it: allow a few ulps of 2 pi */
	ck_assert_msg(worst < 4e-15, "worst error of init_sincos2pi: %g", worst);
	double s, c;
	init_sincos2pi(0, &s, &c);
	ck_assert(s == 0 && c == 1);
	init_sincos2pi(0.25, &s, &c);
	ck_assert(s == 1 && fabs(c) < 1e-300);
	init_sincos2pi(0.5, &s, &c);
	ck_assert(c == -1);
	init_sincos2pi(0.75, &s, &c);
	ck_assert(s == -1);
}
END_TEST

/* Values for seed 0, from the definition in init.h / gpt-weights(5): any
 * change in the generator shows here. They were checked against a separate
 * re-implementation of that definition (tools/init_reference.py). */
START_TEST(pinned_seed0)
{
	uint64_t he = init_fnv1a64("embed.weight");
	const float normals[4] = {-0x1.5afb62p-7f, 0x1.82e198p+0f, 0x1.01e528p+0f, 0x1.769094p+0f};
	for (int i = 0; i < 4; i++)
		ck_assert_msg(init_normal(0, he, (uint64_t)i) == normals[i], "normal %d: %a", i,
		              init_normal(0, he, (uint64_t)i));
	const float stored[6] = {-0.01055908203125f, 1.5078125f, 1.0078125f, 1.4609375f, -0.640625f,
	                         -0.75f};
	for (int i = 0; i < 6; i++)
		ck_assert(round_bf16(init_normal(0, he, (uint64_t)i)) == stored[i]);
	ck_assert(round_bf16(init_normal(0, he, 1000001)) == 1.46875f);
	ck_assert(round_bf16(init_normal(0, he, 38633471)) == 1.2265625f);
	ck_assert(round_bf16(init_normal(0, init_fnv1a64("value_embeds.embed.2.weight"), 12345)) ==
	          0.984375f);
	ck_assert(round_bf16(init_normal(7, he, 0)) == 0.07470703125f);
	ck_assert(init_normal(1, he, 0) == 0x1.0c20ep+0f);
	ck_assert(init_normal((uint64_t)1 << 32, he, 0) == -0x1.02ca7cp-1f);
	double b = 1.0 / sqrt(768.0);
	uint64_t hq = init_fnv1a64("blocks.0.attn.c_q.weight");
	const float uni[4] = {0x1.acfa68p-6f, 0x1.e14a52p-9f, 0x1.9cb3a8p-12f, 0x1.116ff6p-7f};
	for (int i = 0; i < 4; i++)
		ck_assert_msg(init_uniform(0, hq, (uint64_t)i, b) == uni[i], "uniform %d: %a", i,
		              init_uniform(0, hq, (uint64_t)i, b));
	ck_assert(init_uniform(0, init_fnv1a64("blocks.11.mlp.c_fc.weight"), 2359295, b) ==
	          0x1.fb6b88p-9f);
	ck_assert(init_uniform(0, init_fnv1a64("blocks.0.mlp.c_fc.weight"), 7, b) == -0x1.10a53cp-7f);
}
END_TEST

/* ------------------------------------------------------------------------
 * the parameter fill
 */
START_TEST(kinds_and_constants)
{
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *w = fill(&t, 0);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		const float *x = w + p->offset;
		double bound;
		enum init_kind k = init_kind_of(p, &bound);
		switch (p->kind) {
		case GPT_P_SKIP:
			ck_assert_int_eq(k, INIT_ONES);
			ck_assert_uint_eq(p->numel, 2);
			for (size_t j = 0; j < p->numel; j++)
				ck_assert(x[j] == 1.0f);
			break;
		case GPT_P_LAMBDAS:
			ck_assert(x[0] == 1.0f && x[1] == 0.0f && !signbit(x[1]));
			break;
		case GPT_P_ATTN_LAMBDAS:
			ck_assert(x[0] == 0.5f && x[1] == 0.5f);
			break;
		case GPT_P_ATTN_PROJ:
		case GPT_P_MLP_PROJ:
		case GPT_P_HEAD:
			ck_assert_int_eq(k, INIT_ZEROS);
			for (size_t j = 0; j < p->numel; j++)
				ck_assert_msg(x[j] == 0.0f && !signbit(x[j]), "%s[%zu]", p->name, j);
			break;
		case GPT_P_Q:
		case GPT_P_K:
		case GPT_P_V:
		case GPT_P_FC: {
			ck_assert_int_eq(k, INIT_UNIFORM);
			double want = 1.0 / sqrt((double)c.dim); /* fan_in = in_features */
			ck_assert(bound == want);
			float lo = 0, hi = 0;
			for (size_t j = 0; j < p->numel; j++) {
				ck_assert(fabsf(x[j]) <= (float)want);
				lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
			}
			ck_assert(hi > 0.95 * want && lo < -0.95 * want);
			break;
		}
		case GPT_P_EMBED:
		case GPT_P_VALUE_EMBED:
			ck_assert_int_eq(k, INIT_NORMAL);
			ck_assert_int_eq(p->dtype, GPT_BF16);
			for (size_t j = 0; j < p->numel; j++)
				ck_assert(round_bf16(x[j]) == x[j]); /* stored as bf16 */
			break;
		}
	}
	/* the attention-less block has none of those tensors */
	ck_assert_int_eq(gpt_table_find(&t, "blocks.2.attn.lambdas"), -1);
	char buf[32];
	ck_assert_str_eq(init_describe(&t.p[gpt_table_find(&t, "blocks.0.mlp.c_fc.weight")], buf,
	                               sizeof buf), "U(+-0.125)");
	ck_assert_str_eq(init_describe(&t.p[gpt_table_find(&t, "embed.weight")], buf, sizeof buf),
	                 "N(0,1)");
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(matches_scalar_definition)
{
	/* every element of the parallel fill equals the scalar definition */
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *w = fill(&t, 42);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		double b;
		enum init_kind k = init_kind_of(p, &b);
		uint64_t h = init_fnv1a64(p->name);
		for (size_t j = 0; j < p->numel; j++) {
			float want = k == INIT_NORMAL ? round_bf16(init_normal(42, h, j))
			             : k == INIT_UNIFORM ? init_uniform(42, h, j, b)
			                                 : w[p->offset + j];
			ck_assert_msg(w[p->offset + j] == want, "%s[%zu]: %a != %a", p->name, j,
			              w[p->offset + j], want);
		}
	}
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(partition_independent)
{
	/* any split of a tensor into ranges gives the same values */
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *w = fill(&t, 3);
	float *v = xmalloc(t.total * sizeof *v);
	memset(v, 0xCD, t.total * sizeof *v);
	uint64_t s = 99;
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		size_t b = 0;
		while (b < p->numel) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			size_t len = 1 + (size_t)(s >> 33) % 700; /* odd and even lengths, any start */
			size_t e = b + len < p->numel ? b + len : p->numel;
			init_param_range(p, 3, v + p->offset, b, e);
			b = e;
		}
	}
	ck_assert_mem_eq(w, v, t.total * sizeof *w);
	free(v);
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(thread_count_independent)
{
	/* the same bytes with 1, 2, 3 and 7 threads (each in its own process,
	 * since the pool's size is fixed once it starts) */
	struct gpt_config c;
	small_config(&c);
	c.vocab = 20000; /* enough chunks for every thread */
	struct gpt_table t;
	gpt_table_build(&c, &t);
	uint64_t hashes[4];
	int counts[4] = {1, 2, 3, 7};
	for (int k = 0; k < 4; k++) {
		int fd[2];
		ck_assert_int_eq(pipe(fd), 0);
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			parallel_set_threads(counts[k]);
			float *w = fill(&t, 5);
			uint64_t h = hash_bytes(w, t.total * sizeof *w);
			_exit(write(fd[1], &h, sizeof h) == sizeof h ? 0 : 1);
		}
		int st;
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		ck_assert_int_eq(read(fd[0], &hashes[k], sizeof hashes[k]), sizeof hashes[k]);
		close(fd[0]);
		close(fd[1]);
	}
	for (int k = 1; k < 4; k++)
		ck_assert_uint_eq(hashes[k], hashes[0]);
	/* and a serial fill, parameter by parameter */
	float *v = xmalloc(t.total * sizeof *v);
	for (int i = 0; i < t.n; i++)
		init_param_range(&t.p[i], 5, v + t.p[i].offset, 0, t.p[i].numel);
	ck_assert_uint_eq(hash_bytes(v, t.total * sizeof *v), hashes[0]);
	free(v);
	gpt_table_free(&t);
}
END_TEST

START_TEST(seeds)
{
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *a = fill(&t, 0), *b = fill(&t, 0), *d = fill(&t, 1), *e = fill(&t, (uint64_t)1 << 32);
	ck_assert_mem_eq(a, b, t.total * sizeof *a);
	/* a different seed (low or high key word) changes every random tensor
	 * nearly everywhere and leaves the constants alone */
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		enum init_kind k = init_kind_of(p, NULL);
		size_t same_d = 0, same_e = 0;
		for (size_t j = 0; j < p->numel; j++) {
			same_d += a[p->offset + j] == d[p->offset + j];
			same_e += a[p->offset + j] == e[p->offset + j];
		}
		if (k == INIT_NORMAL || k == INIT_UNIFORM) {
			/* bf16 values collide now and then: allow 2% */
			ck_assert_msg(same_d < p->numel / 50 + 1, "%s: %zu equal", p->name, same_d);
			ck_assert_msg(same_e < p->numel / 50 + 1, "%s: %zu equal", p->name, same_e);
		} else {
			ck_assert_uint_eq(same_d, p->numel);
		}
	}
	/* two tensors of the same shape get different streams */
	const float *q = a + t.p[gpt_table_find(&t, "blocks.0.attn.c_q.weight")].offset;
	const float *kk = a + t.p[gpt_table_find(&t, "blocks.0.attn.c_k.weight")].offset;
	ck_assert(memcmp(q, kk, 64 * sizeof *q) != 0);
	free(a);
	free(b);
	free(d);
	free(e);
	gpt_table_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------
 * statistics on a big sample
 */
START_TEST(normal_statistics)
{
	struct gpt_param p;
	memset(&p, 0, sizeof p);
	snprintf(p.name, sizeof p.name, "stats.normal");
	p.kind = GPT_P_EMBED;
	p.dtype = GPT_F32; /* unrounded */
	size_t n = (size_t)1 << 22;
	float *x = xmalloc(n * sizeof *x);
	init_param_range(&p, 11, x, 0, n);
	double s1 = 0, s2 = 0, s4 = 0, pair = 0, below[3] = {0};
	for (size_t i = 0; i < n; i++) {
		double v = x[i];
		ck_assert(isfinite(v));
		s1 += v, s2 += v * v, s4 += v * v * v * v;
		below[0] += v < -1, below[1] += v < 0, below[2] += v < 1;
		if (i & 1)
			pair += (double)x[i - 1] * v;
	}
	double mean = s1 / n, var = s2 / n - mean * mean, kurt = s4 / n / (var * var);
	/* 5-sigma bounds: sd(mean) = 1/sqrt(n), sd(var) = sqrt(2/n), sd(kurt) ~ sqrt(24/n) */
	ck_assert_msg(fabs(mean) < 5 / sqrt(n), "mean %g", mean);
	ck_assert_msg(fabs(var - 1) < 5 * sqrt(2.0 / n), "variance %g", var);
	ck_assert_msg(fabs(kurt - 3) < 5 * sqrt(24.0 / n), "kurtosis %g", kurt);
	ck_assert_msg(fabs(pair / (n / 2)) < 5 / sqrt(n / 2), "pair correlation %g", pair / (n / 2));
	double phi[3] = {0.15865525393145707, 0.5, 0.8413447460685429};
	for (int k = 0; k < 3; k++) {
		double f = below[k] / n, sd = sqrt(phi[k] * (1 - phi[k]) / n);
		ck_assert_msg(fabs(f - phi[k]) < 5 * sd, "P(z < %d) = %g", k - 1, f);
	}
	free(x);
}
END_TEST

START_TEST(uniform_statistics)
{
	struct gpt_param p;
	memset(&p, 0, sizeof p);
	snprintf(p.name, sizeof p.name, "stats.uniform");
	p.kind = GPT_P_FC;
	p.dtype = GPT_F32;
	p.ndim = 2;
	p.shape[0] = 4096;
	p.shape[1] = 1024;
	p.numel = 4096 * 1024;
	float *x = xmalloc(p.numel * sizeof *x);
	init_param_range(&p, 11, x, 0, p.numel);
	double b = 1.0 / 32, s1 = 0, s2 = 0, lo = 0, hi = 0;
	size_t n = p.numel, bins[16] = {0};
	for (size_t i = 0; i < n; i++) {
		double v = x[i];
		ck_assert(v > -b && v < b);
		s1 += v, s2 += v * v;
		lo = fmin(lo, v), hi = fmax(hi, v);
		bins[(size_t)((v + b) / (2 * b) * 16)]++;
	}
	double mean = s1 / n, var = s2 / n - mean * mean;
	ck_assert_msg(fabs(mean) < 5 * b / sqrt(3.0 * n), "mean %g", mean);
	/* var of U(-b,b) is b^2/3; sd of the estimate is b^2 sqrt(4/45/n) */
	ck_assert_msg(fabs(var - b * b / 3) < 5 * b * b * sqrt(4.0 / 45 / n), "variance %g", var);
	ck_assert(lo < -b * 0.9999 && hi > b * 0.9999);
	double chi2 = 0, e = n / 16.0;
	for (int k = 0; k < 16; k++)
		chi2 += (bins[k] - e) * (bins[k] - e) / e;
	ck_assert_msg(chi2 < 40, "chi-square over 16 bins: %g", chi2); /* 15 dof: p ~ 5e-4 */
	free(x);
}
END_TEST

Suite *init_suite(void)
{
	Suite *s = suite_create("init");
	TCase *tc = tcase_create("Generator");
	tcase_add_test(tc, philox_known_answers);
	tcase_add_test(tc, fnv_known_answers);
	tcase_add_test(tc, ln_accuracy);
	tcase_add_test(tc, sincos_accuracy);
	tcase_add_test(tc, pinned_seed0);
	suite_add_tcase(s, tc);
	TCase *tf = tcase_create("Fill");
	tcase_set_timeout(tf, 60);
	/* first, so that even with CK_FORK=no no thread pool has started yet
	 * in the process it forks from */
	tcase_add_test(tf, thread_count_independent);
	tcase_add_test(tf, kinds_and_constants);
	tcase_add_test(tf, matches_scalar_definition);
	tcase_add_test(tf, partition_independent);
	tcase_add_test(tf, seeds);
	tcase_add_test(tf, normal_statistics);
	tcase_add_test(tf, uniform_statistics);
	suite_add_tcase(s, tf);
	return s;
}

CHECK_MAIN(init_suite)
