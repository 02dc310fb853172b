/* check_loader.c - the distributed data loader (spec 7.2) and validation
 * slicing (spec 7.3) on small synthetic shards. */
#include "check_common.h"
#include "loader.h"
#include "shard.h"

#include <sys/stat.h>

/* File f's token i is f*1000 + i: every token says where it came from. */
static void make_shard(const char *path, int f, size_t len, int raw)
{
	uint32_t *t = xmalloc((len ? len : 1) * sizeof *t);
	for (size_t i = 0; i < len; i++)
		t[i] = (uint32_t)(f * 1000 + (int)i);
	struct gpt_err e;
	struct shard_writer_opts o = {.raw = raw, .threads = 1};
	struct shard_writer *w = shard_writer_open(path, &o, &e);
	ck_assert_msg(w != NULL, "%s", e.msg);
	ck_assert_int_eq(shard_writer_put(w, t, len, &e), 0);
	ck_assert_msg(shard_writer_close(w, -1, -1, &e) == 0, "%s", e.msg);
	free(t);
}

/* Files d/NAME_<i> with the given lengths; returns the glob pattern. */
static const char *make_set(const char *name, const size_t *lens, int n)
{
	static char pat[512];
	for (int i = 0; i < n; i++) {
		char f[64];
		snprintf(f, sizeof f, "%s_%02d.bin%s", name, i, i % 2 ? "" : ".zst");
		make_shard(test_path(f), i, lens[i], i % 2);
	}
	snprintf(pat, sizeof pat, "%s/%s_*", test_tmpdir(), name);
	return pat;
}

static struct loader *open1(const char *pattern, size_t B, int P, int r, struct gpt_err *e)
{
	struct loader_opts o = {.batch = B, .world = P, .rank = r};
	return loader_open(&pattern, 1, &o, e);
}

/* The reference: spec 7.2 on arrays in memory. */
struct ref {
	const size_t *len;
	int nf, cur;
	size_t pos, B;
};

static void ref_next(struct ref *s, int r, size_t b, uint32_t *slice)
{
	if (s->pos + s->B + 1 >= s->len[s->cur]) {
		s->cur = (s->cur + 1) % s->nf;
		s->pos = 0;
	}
	for (size_t i = 0; i < b + 1; i++)
		slice[i] = (uint32_t)(s->cur * 1000 + (int)(s->pos + (size_t)r * b + i));
	s->pos += s->B;
}

START_TEST(exact_slicing_by_hand)
{
	/* B = 4, P = 1: lengths 9, 6, 10 */
	size_t lens[3] = {9, 6, 10};
	struct gpt_err e;
	struct loader *l = open1(make_set("hand", lens, 3), 4, 1, 0, &e);
	ck_assert_msg(l != NULL, "%s", e.msg);
	ck_assert_uint_eq(loader_nfiles(l), 3);
	ck_assert_uint_eq(loader_file_tokens(l, 1), 6);
	/* expected first tokens of each 5-token slice, and the state after */
	struct {
		uint32_t first;
		size_t file, pos;
	} want[] = {
		{0, 0, 4},    /* 0+4+1 = 5 < 9 */
		{1000, 1, 4}, /* 4+4+1 = 9 >= 9: file 0's tokens 4..8 fit, yet we move on */
		{2000, 2, 4}, /* 4+5 = 9 >= 6 */
		{2004, 2, 8}, /* 4+5 = 9 < 10: tokens 4..8, token 9 never used */
		{0, 0, 4},    /* 8+5 >= 10: wrap around */
		{1000, 1, 4},
	};
	for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
		uint32_t in[4], tg[4];
		ck_assert_msg(loader_next_batch(l, in, tg, &e) == 0, "%s", e.msg);
		for (int i = 0; i < 4; i++) {
			ck_assert_uint_eq(in[i], want[k].first + (uint32_t)i);
			ck_assert_uint_eq(tg[i], want[k].first + (uint32_t)i + 1);
		}
		size_t f;
		uint64_t pos;
		loader_state(l, &f, &pos);
		ck_assert_uint_eq(f, want[k].file);
		ck_assert_uint_eq(pos, want[k].pos);
	}
	loader_close(l);
}
END_TEST

START_TEST(ranks_tile_the_global_batch)
{
	size_t lens[5] = {100, 37, 64, 17, 49}; /* 17 = B + 1: usable once; 49 = 32 + B + 1 */
	const char *pat = make_set("ranks", lens, 5);
	size_t B = 16;
	int worlds[3] = {1, 2, 8};
	struct gpt_err e;
	struct loader *g = open1(pat, B, 1, 0, &e); /* the global view */
	ck_assert_msg(g != NULL, "%s", e.msg);
	struct loader *l[8];
	for (int w = 0; w < 3; w++) {
		int P = worlds[w];
		size_t b = B / (size_t)P;
		ck_assert_int_eq(loader_reset(g, &e), 0);
		for (int r = 0; r < P; r++) {
			l[r] = open1(pat, B, P, r, &e);
			ck_assert_msg(l[r] != NULL, "%s", e.msg);
			ck_assert_uint_eq(loader_local_batch(l[r]), b);
		}
		struct ref ref[8];
		for (int r = 0; r < P; r++)
			ref[r] = (struct ref){lens, 5, 0, 0, B};
		for (int step = 0; step < 60; step++) {
			const uint32_t *gs = loader_next(g, &e);
			ck_assert_ptr_nonnull(gs);
			const uint32_t *prev = NULL;
			for (int r = 0; r < P; r++) {
				const uint32_t *s = loader_next(l[r], &e);
				ck_assert_msg(s != NULL, "%s", e.msg);
				uint32_t want[17];
				ref_next(&ref[r], r, b, want);
				ck_assert(memcmp(s, want, (b + 1) * 4) == 0);
				/* rank r's inputs are the global inputs r*b..r*b+b-1 */
				ck_assert(memcmp(s, gs + (size_t)r * b, (b + 1) * 4) == 0);
				/* rank r-1's last target is rank r's first input */
				if (prev)
					ck_assert_uint_eq(prev[b], s[0]);
				prev = s;
			}
			size_t f0, f1;
			uint64_t p0, p1;
			loader_state(g, &f0, &p0);
			loader_state(l[P - 1], &f1, &p1);
			ck_assert_uint_eq(f0, f1);
			ck_assert_uint_eq(p0, p1);
		}
		for (int r = 0; r < P; r++)
			loader_close(l[r]);
	}
	loader_close(g);
}
END_TEST

START_TEST(state_restore)
{
	size_t lens[4] = {40, 25, 33, 70};
	const char *pat = make_set("state", lens, 4);
	struct gpt_err e;
	for (int pf = 0; pf < 2; pf++) {
		struct loader_opts o = {.batch = 8, .world = 2, .rank = 1, .no_prefetch = pf};
		struct loader *a = loader_open(&pat, 1, &o, &e);
		ck_assert_msg(a != NULL, "%s", e.msg);
		for (int k = 0; k < 13; k++)
			ck_assert_ptr_nonnull(loader_next(a, &e));
		size_t f;
		uint64_t pos;
		loader_state(a, &f, &pos);
		uint32_t seq[20][5];
		for (int k = 0; k < 20; k++)
			memcpy(seq[k], loader_next(a, &e), sizeof seq[k]);
		/* a fresh loader restored to the saved state continues identically */
		struct loader *b = loader_open(&pat, 1, &o, &e);
		ck_assert_int_eq(loader_seek(b, f, pos, &e), 0);
		for (int k = 0; k < 20; k++)
			ck_assert(memcmp(loader_next(b, &e), seq[k], sizeof seq[k]) == 0);
		/* and so does the first one, sent back */
		ck_assert_int_eq(loader_seek(a, f, pos, &e), 0);
		for (int k = 0; k < 20; k++)
			ck_assert(memcmp(loader_next(a, &e), seq[k], sizeof seq[k]) == 0);
		/* reset = file 0, position 0 */
		ck_assert_int_eq(loader_reset(a, &e), 0);
		loader_state(a, &f, &pos);
		ck_assert_uint_eq(f, 0);
		ck_assert_uint_eq(pos, 0);
		ck_assert_uint_eq(loader_next(a, &e)[0], 4); /* rank 1 of 2, b = 4 */
		/* bad states */
		ck_assert_int_eq(loader_seek(a, 4, 0, &e), -1);
		ck_assert_ptr_nonnull(strstr(e.msg, "file 4, but there are 4 files"));
		ck_assert_int_eq(loader_seek(a, 1, 26, &e), -1);
		ck_assert_ptr_nonnull(strstr(e.msg, "position 26 is past the end"));
		ck_assert_int_eq(loader_seek(a, 1, 25, &e), 0); /* the end: moves on at once */
		ck_assert_uint_eq(loader_next(a, &e)[0], 2004);
		loader_close(a);
		loader_close(b);
	}
}
END_TEST

START_TEST(glob_sorting)
{
	mkdir(test_path("g"), 0777);
	const char *names[] = {"g/shard_9.bin", "g/shard_10.bin", "g/shard_1.bin", "g/shard_B.bin",
			       "g/shard_a.bin", "g/.shard_0.bin", "g/other_0.bin"};
	for (int i = 0; i < 7; i++)
		make_shard(test_path(names[i]), i, 20, 0);
	struct gpt_err e;
	const char *pat = test_path("g/shard_*.bin");
	struct loader *l = open1(pat, 4, 1, 0, &e);
	ck_assert_msg(l != NULL, "%s", e.msg);
	/* sorted(glob()): byte order, hidden files left out */
	const char *want[] = {"shard_1.bin", "shard_10.bin", "shard_9.bin", "shard_B.bin", "shard_a.bin"};
	ck_assert_uint_eq(loader_nfiles(l), 5);
	for (int i = 0; i < 5; i++) {
		const char *p = loader_path(l, (size_t)i);
		ck_assert_str_eq(strrchr(p, '/') + 1, want[i]);
	}
	loader_close(l);
	/* several patterns keep their order; names without wildcards are kept as given */
	const char *pats[3] = {test_path("g/shard_9.bin"), test_path("g/other_?.bin"),
			       test_path("g/shard_1*.bin")};
	struct loader_opts o = {.batch = 4};
	l = loader_open(pats, 3, &o, &e);
	ck_assert_msg(l != NULL, "%s", e.msg);
	const char *want2[] = {"shard_9.bin", "other_0.bin", "shard_1.bin", "shard_10.bin"};
	ck_assert_uint_eq(loader_nfiles(l), 4);
	for (int i = 0; i < 4; i++)
		ck_assert_str_eq(strrchr(loader_path(l, (size_t)i), '/') + 1, want2[i]);
	/* the first batch comes from the first file: shard_9.bin was written as file 0 */
	ck_assert_uint_eq(loader_next(l, &e)[0], 0);
	loader_close(l);
}
END_TEST

START_TEST(errors)
{
	size_t lens[3] = {30, 12, 30};
	const char *pat = make_set("err", lens, 3);
	struct gpt_err e;
	struct loader_opts o = {.batch = 12, .world = 5};
	ck_assert_ptr_null(loader_open(&pat, 1, &o, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "multiple of the world size (5)"));
	o = (struct loader_opts){.batch = 12, .world = 2, .rank = 2};
	ck_assert_ptr_null(loader_open(&pat, 1, &o, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "rank 2 is outside a world of 2"));
	/* file 1 has 12 tokens: too short for 12 + 1 */
	ck_assert_ptr_null(open1(pat, 12, 1, 0, &e));
	ck_assert_msg(strstr(e.msg, "err_01.bin: 12 tokens, too few for one batch (12 + 1 tokens)"),
		      "%s", e.msg);
	struct loader *l = open1(pat, 11, 1, 0, &e); /* 11 + 1 fits */
	ck_assert_ptr_nonnull(l);
	loader_close(l);
	/* patterns that match nothing, files that do not exist or are not shards */
	const char *none = test_path("nothing_*.bin");
	ck_assert_ptr_null(open1(none, 4, 1, 0, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "nothing_*.bin: no files match"));
	ck_assert_ptr_null(open1(test_path("missing.bin"), 4, 1, 0, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "missing.bin: No such file"));
	FILE *fp = fopen(test_path("text.bin"), "w");
	fputs("hello, world\n", fp);
	fclose(fp);
	ck_assert_ptr_null(open1(test_path("text.bin"), 4, 1, 0, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "text.bin: not a shard"));
	ck_assert_ptr_null(loader_open(NULL, 0, &(struct loader_opts){.batch = 4}, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "no data files"));
}
END_TEST

START_TEST(errors_while_loading)
{
	/* file 1 holds a token outside the vocabulary: found when it is needed */
	size_t lens[2] = {20, 20};
	const char *pat = make_set("voc", lens, 2); /* tokens up to 1019 */
	struct gpt_err e;
	for (int pf = 0; pf < 2; pf++) {
		struct loader_opts o = {.batch = 8, .vocab = 1010, .no_prefetch = pf};
		struct loader *l = loader_open(&pat, 1, &o, &e);
		ck_assert_msg(l != NULL, "%s", e.msg);
		ck_assert_ptr_nonnull(loader_next(l, &e));
		ck_assert_ptr_nonnull(loader_next(l, &e)); /* pos 8: 8+9 = 17 < 20 */
		ck_assert_ptr_null(loader_next(l, &e));    /* moves to file 1 */
		ck_assert_msg(strstr(e.msg, "voc_01.bin: token 1010 at index 10 is outside the vocabulary"),
			      "%s", e.msg);
		size_t f;
		uint64_t pos;
		loader_state(l, &f, &pos); /* unchanged by the failure */
		ck_assert_uint_eq(f, 0);
		ck_assert_uint_eq(pos, 16);
		ck_assert_ptr_null(loader_next(l, &e)); /* and it fails again */
		ck_assert_int_eq(loader_reset(l, &e), 0);
		ck_assert_uint_eq(loader_next(l, &e)[0], 0);
		loader_close(l);
	}
}
END_TEST

START_TEST(validation_slicing)
{
	size_t lens[2] = {97, 200};
	const char *pat = make_set("val", lens, 2);
	struct gpt_err e;
	struct loader *l = open1(pat, 16, 2, 1, &e);
	ck_assert_msg(l != NULL, "%s", e.msg);
	ck_assert_int_eq(loader_val_steps(l, 80, &e), 5);
	ck_assert_int_eq(loader_val_steps(l, 90, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "not a positive multiple of the global batch (16)"));
	ck_assert_int_eq(loader_val_steps(l, 0, &e), -1);
	/* 96 + 1 tokens would fit in 97, but the advance rule (pos + B + 1 >= len)
	 * moves on before the 6th batch */
	ck_assert_int_eq(loader_val_steps(l, 96, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "val_00.bin.zst: 97 tokens, too few to validate on 96"));
	/* every reset gives the same 5 batches, all from file 0 */
	for (int pass = 0; pass < 3; pass++) {
		ck_assert_int_eq(loader_reset(l, &e), 0);
		for (int k = 0; k < 5; k++) {
			const uint32_t *s = loader_next(l, &e);
			ck_assert_uint_eq(s[0], (uint32_t)(16 * k + 8)); /* rank 1: offset b = 8 */
			ck_assert_uint_eq(s[8], (uint32_t)(16 * k + 16));
			size_t f;
			uint64_t pos;
			loader_state(l, &f, &pos);
			ck_assert_uint_eq(f, 0);
		}
		/* the 6th batch would move on: that is what val_steps refused */
		ck_assert_uint_eq(loader_next(l, &e)[0], 1008);
	}
	loader_close(l);
}
END_TEST

START_TEST(shared_val_shard)
{
	const char *d = shared_data();
	if (!d) {
		fprintf(stderr, "check_loader: ../shared/data not found, skipping shared_val_shard\n");
		return;
	}
	char path[512];
	snprintf(path, sizeof path, "%s/gutenberg_en_val.gpt2.bin.zst", d);
	const char *p = path;
	struct gpt_err e;
	struct loader_opts o = {.batch = 65536, .vocab = 50257};
	struct loader *l = loader_open(&p, 1, &o, &e);
	ck_assert_msg(l != NULL, "%s", e.msg);
	ck_assert_uint_eq(loader_file_tokens(l, 0), 1264623);
	ck_assert_int_eq(loader_val_steps(l, 19 * 65536, &e), 19);
	ck_assert_int_eq(loader_val_steps(l, 20 * 65536, &e), -1);
	ck_assert_uint_eq(loader_next(l, &e)[0], 50256);
	loader_close(l);
}
END_TEST

Suite *loader_suite(void)
{
	Suite *s = suite_create("loader");
	TCase *c = tcase_create("loader");
	tcase_set_timeout(c, 60);
	tcase_add_test(c, exact_slicing_by_hand);
	tcase_add_test(c, ranks_tile_the_global_batch);
	tcase_add_test(c, state_restore);
	tcase_add_test(c, glob_sorting);
	tcase_add_test(c, errors);
	tcase_add_test(c, errors_while_loading);
	tcase_add_test(c, validation_slicing);
	tcase_add_test(c, shared_val_shard);
	suite_add_tcase(s, c);
	return s;
}

CHECK_MAIN(loader_suite)
