/* check_weights.c - weights_save / weights_load over safetensors. */
#include "check_common.h"
#include "config.h"
#include "init.h"
#include "safetensors.h"
#include "weights.h"

static void small_config(struct gpt_config *c)
{
	gpt_config_record(c);
	c->vocab = 512;
	c->eot = 511;
	c->layers = 4;
	c->dim = 32;
	c->heads = 2;
	c->head_dim = 16;
	c->rope_freqs = 4;
	c->mlp_hidden = 48;
	c->value_embeds = 2;
	c->no_attn = 1u << 1;
	c->softcap = 30;
}

static float *make(const struct gpt_config *c, struct gpt_table *t, uint64_t seed)
{
	gpt_table_build(c, t);
	float *w = xmalloc(t->total * sizeof *w);
	init_weights(t, seed, w);
	return w;
}

static void expect_load_error(const char *path, const struct gpt_config *dflt, const char *want)
{
	struct gpt_config c;
	float *w = (float *)1;
	struct gpt_err e = {{0}};
	ck_assert_int_eq(weights_load(path, dflt, &c, &w, &e), -1);
	ck_assert_ptr_null(w);
	ck_assert_msg(strstr(e.msg, want) != NULL, "wanted '%s' in '%s'", want, e.msg);
	ck_assert_msg(strstr(e.msg, path) == e.msg, "message does not start with the file: %s", e.msg);
}

/* Write the table's tensors under other names/dtypes/shapes (st_write). */
struct variant {
	const char *prefix;     /* before every name */
	const char *drop;       /* leave this tensor out */
	const char *extra;      /* add this tensor */
	const char *twice;      /* write this one twice (second time with "module." prefix) */
	const char *reshape;    /* give this one a wrong shape */
	const char *as_i32;     /* store this one as I32 */
	int all_bf16;           /* every tensor BF16 */
	int no_meta;            /* no __metadata__ */
};

static void write_variant(const char *path, const struct gpt_config *c, const float *w,
                          const struct variant *v)
{
	struct gpt_table t;
	gpt_table_build(c, &t);
	struct st_entry ent[256];
	char names[256][96];
	int64_t shapes[256][2];
	void *bufs[256];
	int n = 0;
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		if (v->drop && !strcmp(p->name, v->drop))
			continue;
		int reps = v->twice && !strcmp(p->name, v->twice) ? 2 : 1;
		for (int r = 0; r < reps; r++) {
			snprintf(names[n], sizeof names[n], "%s%s%s", r ? "module." : "", v->prefix, p->name);
			shapes[n][0] = p->shape[0];
			shapes[n][1] = p->shape[1];
			int ndim = p->ndim;
			if (v->reshape && !strcmp(p->name, v->reshape)) {
				shapes[n][0] = (int64_t)p->numel;
				ndim = 1;
			}
			enum st_dtype dt = v->all_bf16 || p->dtype == GPT_BF16 ? ST_BF16 : ST_F32;
			if (v->as_i32 && !strcmp(p->name, v->as_i32))
				dt = ST_I32;
			bufs[n] = xmalloc(p->numel * 4 + 1);
			for (size_t j = 0; j < p->numel; j++) {
				if (dt == ST_BF16)
					((uint16_t *)bufs[n])[j] = f32_to_bf16(w[p->offset + j]);
				else
					((float *)bufs[n])[j] = w[p->offset + j];
			}
			ent[n] = (struct st_entry){names[n], dt, ndim, shapes[n], bufs[n]};
			n++;
		}
	}
	if (v->extra) {
		static const float z[1] = {0};
		static const int64_t one[1] = {1};
		ent[n] = (struct st_entry){v->extra, ST_F32, 1, one, z};
		bufs[n++] = NULL;
	}
	struct gpt_meta m;
	gpt_config_to_meta(c, &m);
	const char *meta[2 * GPT_META_MAX];
	for (int i = 0; i < m.n; i++)
		meta[2 * i] = m.key[i], meta[2 * i + 1] = m.val[i];
	struct gpt_err e;
	ck_assert_msg(st_write(path, 0, ent, n, meta, v->no_meta ? 0 : m.n, &e) == 0, "%s", e.msg);
	for (int i = 0; i < n; i++)
		free(bufs[i]);
	gpt_table_free(&t);
}

START_TEST(round_trip_record_dtypes)
{
	struct gpt_config c, d;
	small_config(&c);
	struct gpt_table t;
	float *w = make(&c, &t, 9);
	const char *extra[4] = {"init", "gpt-init/1", "step", "123"};
	struct gpt_err e;
	const char *path = test_path("w.safetensors");
	ck_assert_msg(weights_save(path, &c, w, 0, extra, 2, &e) == 0, "%s", e.msg);
	float *r;
	ck_assert_msg(weights_load(path, NULL, &d, &r, &e) == 0, "%s", e.msg);
	ck_assert_mem_eq(&c, &d, sizeof c);
	ck_assert_uint_eq((uintptr_t)r % 64, 0);
	/* exact: the bf16 tensors hold bf16 values already */
	ck_assert_mem_eq(w, r, t.total * sizeof *w);
	free(r);
	/* the file: record dtypes, state-dict order, metadata */
	struct st_file f;
	ck_assert_int_eq(st_load(path, &f, &e), 0);
	ck_assert_int_eq(f.n, t.n);
	for (int i = 0; i < t.n; i++) {
		ck_assert_str_eq(f.t[i].name, t.p[i].name);
		ck_assert_int_eq(f.t[i].dtype, t.p[i].dtype == GPT_BF16 ? ST_BF16 : ST_F32);
	}
	ck_assert_str_eq(st_find(&f, "embed.weight") ? "ok" : "", "ok");
	ck_assert_int_eq(st_find(&f, "embed.weight")->dtype, ST_BF16);
	ck_assert_int_eq(st_find(&f, "value_embeds.embed.1.weight")->dtype, ST_BF16);
	ck_assert_int_eq(st_find(&f, "lm_head.weight")->dtype, ST_F32);
	ck_assert_str_eq(st_meta(&f, "format"), "gpt-weights/1");
	ck_assert_str_eq(st_meta(&f, "num_layers"), "4");
	ck_assert_str_eq(st_meta(&f, "no_attention"), "1");
	ck_assert_str_eq(st_meta(&f, "softcap"), "30");
	ck_assert_str_eq(st_meta(&f, "step"), "123");
	/* weights_from_st on the loaded file */
	ck_assert_int_eq(weights_from_st(&f, NULL, &d, &r, &e), 0);
	ck_assert_mem_eq(w, r, t.total * sizeof *w);
	free(r);
	st_free(&f);
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(round_trip_f32_and_zstd)
{
	struct gpt_config c, d;
	small_config(&c);
	struct gpt_table t;
	float *w = make(&c, &t, 1);
	/* unrounded values survive an all-F32 file */
	for (size_t i = 0; i < t.total; i++)
		w[i] += 1e-4f * (float)(i % 7);
	struct gpt_err e;
	const char *paths[2] = {test_path("f.safetensors"), test_path("f.safetensors.zst")};
	for (int k = 0; k < 2; k++) {
		ck_assert_int_eq(weights_save(paths[k], &c, w, WEIGHTS_F32, NULL, 0, &e), 0);
		float *r;
		ck_assert_msg(weights_load(paths[k], NULL, &d, &r, &e) == 0, "%s", e.msg);
		ck_assert_mem_eq(&c, &d, sizeof c);
		ck_assert_mem_eq(w, r, t.total * sizeof *w);
		free(r);
		struct st_file f;
		ck_assert_int_eq(st_load(paths[k], &f, &e), 0);
		ck_assert_int_eq(f.compressed, k);
		for (int i = 0; i < f.n; i++)
			ck_assert_int_eq(f.t[i].dtype, ST_F32);
		st_free(&f);
	}
	/* record dtypes round the embeddings to bf16 on the way out */
	ck_assert_int_eq(weights_save(paths[0], &c, w, 0, NULL, 0, &e), 0);
	float *r;
	ck_assert_int_eq(weights_load(paths[0], NULL, &d, &r, &e), 0);
	for (int i = 0; i < t.n; i++)
		for (size_t j = 0; j < t.p[i].numel; j++) {
			float x = w[t.p[i].offset + j];
			ck_assert(r[t.p[i].offset + j] == (t.p[i].dtype == GPT_BF16 ? round_bf16(x) : x));
		}
	free(r);
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(pytorch_names_and_dtypes)
{
	struct gpt_config c, d;
	small_config(&c);
	struct gpt_table t;
	float *w = make(&c, &t, 2);
	struct gpt_err e;
	const char *path = test_path("pt.safetensors");
	const char *prefixes[4] = {"_orig_mod.", "module.", "module._orig_mod.", "_orig_mod.module."};
	for (int k = 0; k < 4; k++) {
		struct variant v = {.prefix = prefixes[k], .all_bf16 = k == 2};
		write_variant(path, &c, w, &v);
		float *r;
		ck_assert_msg(weights_load(path, NULL, &d, &r, &e) == 0, "%s: %s", prefixes[k], e.msg);
		for (size_t i = 0; i < t.total; i++)
			ck_assert(r[i] == (k == 2 ? round_bf16(w[i]) : w[i]));
		free(r);
	}
	ck_assert_str_eq(weights_strip_prefix("_orig_mod.module._orig_mod.x"), "x");
	ck_assert_str_eq(weights_strip_prefix("modules.x"), "modules.x");
	ck_assert_str_eq(weights_strip_prefix("embed.weight"), "embed.weight");
	/* a state dict without our metadata: needs a default configuration */
	struct variant nm = {.prefix = "_orig_mod.", .no_meta = 1};
	write_variant(path, &c, w, &nm);
	expect_load_error(path, NULL, "no model configuration in the metadata");
	float *r;
	ck_assert_int_eq(weights_load(path, &c, &d, &r, &e), 0);
	ck_assert_mem_eq(&c, &d, sizeof c);
	ck_assert_mem_eq(w, r, t.total * sizeof *w);
	free(r);
	/* ... and the default must fit the tensors */
	struct gpt_config other = c;
	other.dim = 64, other.head_dim = 32, other.rope_freqs = 8;
	expect_load_error(path, &other, "has shape [512, 32], expected [512, 64]");
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(load_errors)
{
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	float *w = make(&c, &t, 4);
	const char *path = test_path("bad.safetensors");
	struct variant v;

	v = (struct variant){.prefix = "", .drop = "blocks.3.mlp.c_proj.weight"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL, "tensor 'blocks.3.mlp.c_proj.weight' missing");

	v = (struct variant){.prefix = "", .extra = "blocks.9.lambdas"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL, "unexpected tensor 'blocks.9.lambdas'");

	/* attention tensors for the attention-less block 1 */
	v = (struct variant){.prefix = "", .extra = "blocks.1.attn.lambdas"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL, "unexpected tensor 'blocks.1.attn.lambdas'");

	v = (struct variant){.prefix = "_orig_mod.", .twice = "skip_weights"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL, "parameter 'skip_weights' appears twice (as "
	                              "'_orig_mod.skip_weights' and 'module._orig_mod.skip_weights')");

	v = (struct variant){.prefix = "", .reshape = "blocks.0.attn.c_q.weight"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL,
	                  "tensor 'blocks.0.attn.c_q.weight' has shape [1024], expected [32, 32]");

	v = (struct variant){.prefix = "", .as_i32 = "skip_weights"};
	write_variant(path, &c, w, &v);
	expect_load_error(path, NULL, "tensor 'skip_weights' has dtype I32");

	/* metadata that does not describe a valid model */
	struct gpt_err e;
	struct st_entry none[1];
	const char *meta[4] = {"format", "gpt-weights/1", "vocab_size", "512"};
	ck_assert_int_eq(st_write(path, 0, none, 0, meta, 2, &e), 0);
	expect_load_error(path, NULL, "metadata key 'num_layers' missing");
	const char *meta2[2] = {"format", "gpt-weights/9"};
	ck_assert_int_eq(st_write(path, 0, none, 0, meta2, 1, &e), 0);
	expect_load_error(path, NULL, "unsupported weights format 'gpt-weights/9'");
	/* not a safetensors file at all */
	FILE *fp = fopen(path, "w");
	fputs("hello, world\n", fp);
	fclose(fp);
	expect_load_error(path, NULL, "header length");
	expect_load_error(test_path("missing.safetensors"), NULL, "No such file");
	free(w);
	gpt_table_free(&t);
}
END_TEST

START_TEST(save_errors)
{
	struct gpt_config c;
	small_config(&c);
	struct gpt_table t;
	float *w = make(&c, &t, 4);
	struct gpt_err e;
	const char *path = test_path("never.safetensors");
	/* an extra key that clashes with a configuration key */
	const char *extra[2] = {"num_layers", "5"};
	ck_assert_int_eq(weights_save(path, &c, w, 0, extra, 1, &e), -1);
	ck_assert_msg(strstr(e.msg, "metadata key 'num_layers' given twice"), "%s", e.msg);
	ck_assert_int_ne(access(path, F_OK), 0);
	struct gpt_config bad = c;
	bad.heads = 3;
	ck_assert_int_eq(weights_save(path, &bad, w, 0, NULL, 0, &e), -1);
	ck_assert_msg(strstr(e.msg, "never.safetensors: bad model configuration: dim 32 is not a "
	                            "multiple of heads 3"), "%s", e.msg);
	ck_assert_int_ne(access(path, F_OK), 0);
	free(w);
	gpt_table_free(&t);
}
END_TEST

Suite *weights_suite(void)
{
	Suite *s = suite_create("weights");
	TCase *tc = tcase_create("Weights");
	tcase_add_test(tc, round_trip_record_dtypes);
	tcase_add_test(tc, round_trip_f32_and_zstd);
	tcase_add_test(tc, pytorch_names_and_dtypes);
	tcase_add_test(tc, load_errors);
	tcase_add_test(tc, save_errors);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(weights_suite)
