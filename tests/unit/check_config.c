/* check_config.c - model configuration and parameter table. */
#include <math.h>
#include <stdlib.h>

#include "check_common.h"
#include "config.h"

START_TEST(record_counts)
{
	struct gpt_config c;
	gpt_config_record(&c);
	struct gpt_err e;
	ck_assert_int_eq(gpt_config_check(&c, &e), 0);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	ck_assert_int_eq(t.n, 97);                /* spec 3.2 */
	ck_assert_uint_eq(t.total, 275742772u);   /* spec 3.2 */
	size_t groups[GPT_NGROUPS] = {0}, muon_tensors = 0;
	for (int i = 0; i < t.n; i++) {
		groups[t.p[i].group] += t.p[i].numel;
		muon_tensors += t.p[i].group == GPT_GROUP_MUON;
	}
	ck_assert_uint_eq(groups[GPT_GROUP_EMBED], 38633472u + 115900416u);
	ck_assert_uint_eq(groups[GPT_GROUP_HEAD], 38633472u);
	ck_assert_uint_eq(groups[GPT_GROUP_SCALAR], 52u);
	ck_assert_uint_eq(groups[GPT_GROUP_MUON], 25952256u + 56623104u);
	ck_assert_uint_eq(muon_tensors, 68u);
	/* state-dict order (spec 3.1) */
	ck_assert_str_eq(t.p[0].name, "skip_weights");
	ck_assert_str_eq(t.p[1].name, "embed.weight");
	ck_assert_str_eq(t.p[2].name, "blocks.0.lambdas");
	ck_assert_str_eq(t.p[3].name, "blocks.0.attn.lambdas");
	ck_assert_str_eq(t.p[4].name, "blocks.0.attn.c_q.weight");
	ck_assert_int_ge(gpt_table_find(&t, "blocks.7.lambdas"), 0);
	ck_assert_int_eq(gpt_table_find(&t, "blocks.7.attn.lambdas"), -1);
	ck_assert_int_eq(gpt_table_find(&t, "blocks.7.attn.c_q.weight"), -1);
	ck_assert_str_eq(t.p[t.n - 1].name, "lm_head.weight");
	ck_assert_str_eq(t.p[t.n - 2].name, "value_embeds.embed.2.weight");
	int fc = gpt_table_find(&t, "blocks.3.mlp.c_fc.weight");
	ck_assert_int_eq(t.p[fc].shape[0], 3072);
	ck_assert_int_eq(t.p[fc].shape[1], 768);
	/* offsets are contiguous */
	for (int i = 1; i < t.n; i++)
		ck_assert_uint_eq(t.p[i].offset, t.p[i - 1].offset + t.p[i - 1].numel);
	gpt_table_free(&t);
}
END_TEST

/* spec 12: 6N = 727,252,992; attention 101,376 L with L = 64.5 / 832.5 / 1728.5 */
START_TEST(flops_per_token)
{
	struct gpt_config c;
	gpt_config_record(&c);
	ck_assert_double_eq(gpt_flops_per_token(&c, 1), 727252992.0 + 101376.0 * 64.5);
	ck_assert_double_eq(gpt_flops_per_token(&c, 7), 727252992.0 + 101376.0 * 832.5);
	ck_assert_double_eq(gpt_flops_per_token(&c, 14), 727252992.0 + 101376.0 * 1728.5);
	/* the spec's per-step figure at W = 14: 4.732e14 */
	ck_assert(fabs(gpt_flops_per_token(&c, 14) * 524288 - 4.732e14) < 0.001e14);
	setenv("GPT_PEAK_TFLOPS", "500", 1);
	ck_assert_double_eq(gpt_peak_tflops(), 500.0);
	unsetenv("GPT_PEAK_TFLOPS");
	ck_assert_double_eq(gpt_peak_tflops(), 989.4);
}
END_TEST

START_TEST(value_embed_pattern)
{
	struct gpt_config c;
	gpt_config_record(&c);
	int want[12] = {0, 1, 2, -1, -1, -1, -1, -1, -1, 0, 1, 2};
	for (int i = 0; i < 12; i++)
		ck_assert_int_eq(gpt_layer_ve(&c, i), want[i]);
	ck_assert(!gpt_layer_attn(&c, 7));
	ck_assert(gpt_layer_attn(&c, 6));
}
END_TEST

static const char *meta_get(void *ctx, const char *key)
{
	struct gpt_meta *m = ctx;
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->key[i], key))
			return m->val[i];
	return NULL;
}

START_TEST(meta_round_trip)
{
	struct gpt_config c, d;
	gpt_config_record(&c);
	c.no_attn = (1u << 7) | (1u << 2);
	struct gpt_meta m;
	gpt_config_to_meta(&c, &m);
	struct gpt_err e;
	ck_assert_int_eq(gpt_config_from_meta(&d, meta_get, &m, &e), 0);
	ck_assert_mem_eq(&c, &d, sizeof c);
	/* a bad value is named */
	for (int i = 0; i < m.n; i++)
		if (!strcmp(m.key[i], "num_heads"))
			strcpy(m.val[i], "5x");
	ck_assert_int_eq(gpt_config_from_meta(&d, meta_get, &m, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "num_heads"));
}
END_TEST

START_TEST(bad_configs)
{
	struct gpt_config c;
	struct gpt_err e;
	gpt_config_record(&c);
	c.layers = 11;
	ck_assert_int_eq(gpt_config_check(&c, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "layers"));
	gpt_config_record(&c);
	c.heads = 5;
	ck_assert_int_eq(gpt_config_check(&c, &e), -1);
	gpt_config_record(&c);
	c.value_embeds = 7;
	ck_assert_int_eq(gpt_config_check(&c, &e), -1);
	gpt_config_record(&c);
	c.eot = 60000;
	ck_assert_int_eq(gpt_config_check(&c, &e), -1);
	gpt_config_record(&c);
	c.no_attn = 1ull << 12;
	ck_assert_int_eq(gpt_config_check(&c, &e), -1);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, record_counts);
	tcase_add_test(tc, value_embed_pattern);
	tcase_add_test(tc, flops_per_token);
	tcase_add_test(tc, meta_round_trip);
	tcase_add_test(tc, bad_configs);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(config_suite)
