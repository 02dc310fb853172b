/* check_bpe.c - the GPT-2 tokenizer: reference fixtures (made by
 * tools/make-tok-fixtures.sh with js-tiktoken), round trips, invalid UTF-8,
 * the heap merge, thread independence and the safety of split points. */
#include "check_common.h"

#include <pthread.h>
#include <sys/stat.h>
#include <zstd.h>

#include "bpe.h"
#include "json.h"

#define FIX "tests/fixtures/tok/"

static struct bpe *tok;

static void setup(void)
{
	struct gpt_err e;
	tok = bpe_load(NULL, &e);
	if (!tok)
		ck_abort_msg("bpe_load: %s", e.msg);
}

static void teardown(void) { bpe_free(tok); }

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	size_t cap = 1 << 16, n = 0;
	char *buf = xmalloc(cap + 1);
	size_t got;
	while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
		n += got;
		if (n == cap)
			buf = xrealloc(buf, (cap *= 2) + 1);
	}
	fclose(fp);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* encode into a fresh array */
static uint32_t *enc(const char *s, size_t n, size_t *nid)
{
	uint32_t *ids = NULL;
	size_t cap = 0;
	*nid = 0;
	bpe_encode(tok, s, n, &ids, nid, &cap, NULL);
	return ids;
}

static int same_ids(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
	return na == nb && (!na || !memcmp(a, b, na * sizeof *a));
}

/* ---------------------------------------------------------------------- */

static const char *groups[] = {"contractions", "numbers", "whitespace", "scripts", "emoji", "combining",
			       "longest", "punctuation", "special", "prose", "fuzz"};

START_TEST(fixtures)
{
	char path[256];
	snprintf(path, sizeof path, FIX "%s.jsonl", groups[_i]);
	size_t len;
	char *text = slurp(path, &len);
	size_t cases = 0, line = 0;
	for (char *p = text, *nl; *p; p = nl + 1) {
		nl = strchr(p, '\n');
		ck_assert_ptr_nonnull(nl);
		line++;
		struct gpt_err e;
		struct json *j = json_parse(p, (size_t)(nl - p), &e);
		ck_assert_msg(j != NULL, "%s:%zu: %s", path, line, e.msg);
		const struct json *t = json_get(j, "text"), *want = json_get(j, "ids");
		ck_assert(t && t->type == JSON_STRING && want && want->type == JSON_ARRAY);
		size_t n;
		uint32_t *ids = enc(t->str, t->len, &n);
		size_t bad = SIZE_MAX;
		for (size_t i = 0; i < n || i < want->n; i++) {
			int64_t w;
			if (i >= n || i >= want->n || json_int(&want->items[i], 0, 50256, &w) || (uint32_t)w != ids[i]) {
				bad = i;
				break;
			}
		}
		ck_assert_msg(bad == SIZE_MAX, "%s:%zu: ids differ at %zu (got %zu ids, want %zu)", path, line, bad, n,
			      want->n);
		/* and back */
		char *out = NULL;
		size_t olen = 0, ocap = 0;
		ck_assert_int_eq(bpe_decode(tok, ids, n, &out, &olen, &ocap, &e), 0);
		ck_assert_uint_eq(olen, t->len);
		ck_assert(!memcmp(out, t->str, olen));
		free(out);
		free(ids);
		json_free(j);
		cases++;
	}
	ck_assert_uint_gt(cases, 10);
	free(text);
}
END_TEST

/* docs.ids is docs.txt split on <|endoftext|>, [50256] + ids per document */
START_TEST(fixture_docs)
{
	size_t len, ilen;
	char *text = slurp(FIX "docs.txt", &len), *want = slurp(FIX "docs.ids", &ilen);
	static const char delim[] = "<|endoftext|>";
	uint32_t *ids = NULL;
	size_t n = 0, cap = 0;
	for (char *p = text, *end = text + len; p < end;) {
		char *d = memmem(p, (size_t)(end - p), delim, sizeof delim - 1);
		char *de = d ? d : end;
		if (de > p) {
			if (n + 1 > cap)
				ids = xrealloc(ids, (cap = 2 * cap + 16) * sizeof *ids);
			ids[n++] = bpe_eot(tok);
			bpe_encode(tok, p, (size_t)(de - p), &ids, &n, &cap, NULL);
		}
		p = d ? d + sizeof delim - 1 : end;
	}
	size_t k = 0;
	for (char *p = want, *nl; *p; p = nl + 1, k++) {
		nl = strchr(p, '\n');
		ck_assert_uint_lt(k, n);
		ck_assert_msg(strtoul(p, NULL, 10) == ids[k], "token %zu: got %u want %lu", k, ids[k], strtoul(p, NULL, 10));
	}
	ck_assert_uint_eq(k, n);
	ck_assert_uint_gt(n, 1000);
	free(ids);
	free(text);
	free(want);
}
END_TEST

START_TEST(vocab_files_match_builtin)
{
	struct gpt_err e;
	struct bpe *f = bpe_load("data/gpt2", &e);
	ck_assert_msg(f != NULL, "%s", e.msg);
	ck_assert_uint_eq(bpe_vocab_size(f), 50257);
	ck_assert_uint_eq(bpe_vocab_size(tok), 50257);
	ck_assert_uint_eq(bpe_eot(f), 50256);
	for (uint32_t id = 0; id < 50257; id++) {
		size_t a, b;
		const unsigned char *x = bpe_token(tok, id, &a), *y = bpe_token(f, id, &b);
		ck_assert(a == b && !memcmp(x, y, a));
	}
	size_t l;
	const unsigned char *eot = bpe_token(tok, 50256, &l);
	ck_assert(l == 13 && !memcmp(eot, "<|endoftext|>", 13));
	ck_assert_ptr_null(bpe_token(tok, 50257, &l));
	ck_assert_uint_eq(bpe_lookup(tok, " the", 4), 262);
	ck_assert_uint_eq(bpe_lookup(tok, "<|endoftext|>", 13), BPE_NONE);
	bpe_free(f);
}
END_TEST

static void write_file(const char *path, const char *s, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(s, 1, n, fp), n);
	fclose(fp);
}

START_TEST(vocab_files_errors)
{
	struct gpt_err e;
	ck_assert_ptr_null(bpe_load("/nonexistent-dir", &e));
	ck_assert_msg(strstr(e.msg, "/nonexistent-dir/vocab.bpe") && strstr(e.msg, "No such file"), "%s", e.msg);

	const char *d = test_path("vocab");
	mkdir(d, 0755);
	char vb[512], ej[512];
	snprintf(vb, sizeof vb, "%s/vocab.bpe", d);
	snprintf(ej, sizeof ej, "%s/encoder.json", d);
	/* a 2-merge vocabulary: 256 bytes + "Ġt" + "Ġth", eot 258 */
	write_file(vb, "#version: 0.2\nĠ t\nĠt h\n", strlen("#version: 0.2\nĠ t\nĠt h\n"));
	ck_assert_ptr_null(bpe_load(d, &e)); /* no encoder.json yet */
	ck_assert_msg(strstr(e.msg, "encoder.json"), "%s", e.msg);

	/* encoder.json made from the byte order: write it with the real one's first 256 entries */
	size_t len;
	char *real = slurp("data/gpt2/encoder.json", &len);
	struct json *j = json_parse(real, len, &e);
	ck_assert_ptr_nonnull(j);
	char *buf = NULL;
	size_t bl = 0, bc = 0;
	char *o = xmalloc(1 << 16);
	size_t ol = 0;
	o[ol++] = '{';
	for (size_t i = 0; i < j->n; i++) {
		int64_t id;
		ck_assert_int_eq(json_int(&j->items[i], 0, 60000, &id), 0);
		if (id >= 256)
			continue;
		bl = 0;
		json_buf_string(&buf, &bl, &bc, j->keys[i], j->keylens[i]);
		ol += (size_t)sprintf(o + ol, "%.*s: %d, ", (int)bl, buf, (int)id);
	}
	ol += (size_t)sprintf(o + ol, "\"\\u0120t\": 256, \"\\u0120th\": 257, \"<|endoftext|>\": 258}");
	write_file(ej, o, ol);
	struct bpe *small = bpe_load(d, &e);
	ck_assert_msg(small != NULL, "%s", e.msg);
	ck_assert_uint_eq(bpe_vocab_size(small), 259);
	uint32_t *ids = NULL;
	size_t n = 0, cap = 0;
	bpe_encode(small, " the", 4, &ids, &n, &cap, NULL);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(ids[0], 257);
	free(ids);
	bpe_free(small);

	/* encoder.json disagreeing with vocab.bpe */
	char *swap = strstr(o, "256, \"\\u0120th\": 257");
	ck_assert_ptr_nonnull(swap);
	memcpy(swap, "257, \"\\u0120th\": 256", 20);
	write_file(ej, o, ol);
	ck_assert_ptr_null(bpe_load(d, &e));
	ck_assert_msg(strstr(e.msg, "encoder.json") && strstr(e.msg, "vocab.bpe"), "%s", e.msg);

	/* bad merge lines, with their line numbers */
	const char *bad[][2] = {{"#version: 0.2\nĠ t\nĠtx h\n", ":3: merge uses a token not defined"},
				{"#version: 0.2\nĠ t\nĠ t\n", ":3: merge makes a token that already exists"},
				{"#version: 0.2\nĠt\n", ":2: not a merge rule"},
				{"#version: 0.2\na b c\n", ":2: not a merge rule"},
				{"#version: 0.2\n\xe4\xb8\xad b\n", ":2: not a merge rule"},
				{"#version: 0.2\n", "no merge rules"}};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		write_file(vb, bad[i][0], strlen(bad[i][0]));
		ck_assert_ptr_null(bpe_load(d, &e));
		ck_assert_msg(strstr(e.msg, bad[i][1]) && strstr(e.msg, "vocab.bpe"), "case %zu: %s", i, e.msg);
	}
	free(o);
	free(buf);
	free(real);
	json_free(j);
}
END_TEST

START_TEST(decode_errors)
{
	uint32_t ids[] = {464, 50256, 50257};
	char *out = NULL;
	size_t len = 0, cap = 0;
	struct gpt_err e;
	ck_assert_int_eq(bpe_decode(tok, ids, 2, &out, &len, &cap, &e), 0);
	ck_assert_str_eq(out, "The<|endoftext|>");
	ck_assert_int_eq(bpe_decode(tok, ids, 3, &out, &len, &cap, &e), -1);
	ck_assert_msg(strstr(e.msg, "50257") && strstr(e.msg, "at 2"), "%s", e.msg);
	ck_assert_uint_eq(len, 16); /* nothing appended on error */
	free(out);
}
END_TEST

/* ---------------------------------------------------------------------- */

/* the pieces of s, joined by '|' */
static const char *pieces(const char *s, size_t n)
{
	static char buf[1024];
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		size_t e = bpe_next_piece(s, n, i);
		ck_assert_uint_gt(e, i);
		if (i)
			buf[k++] = '|';
		memcpy(buf + k, s + i, e - i);
		k += e - i;
		i = e;
	}
	buf[k] = 0;
	return buf;
}
#define PIECES(lit) pieces(lit, sizeof lit - 1)

START_TEST(pretokenizer)
{
	ck_assert_str_eq(PIECES("Hello world"), "Hello| world");
	ck_assert_str_eq(PIECES("Hello\n\nWorld"), "Hello|\n|\n|World");
	ck_assert_str_eq(PIECES("a  b"), "a| | b");
	ck_assert_str_eq(PIECES("a   \n"), "a|   \n");
	ck_assert_str_eq(PIECES("it's IT'S 'sa ''s"), "it|'s| IT|'|S| '|sa| ''|s");
	ck_assert_str_eq(PIECES("we'll've'RE"), "we|'ll|'ve|'|RE");
	ck_assert_str_eq(PIECES(" 123abc ..."), " 123|abc| ...");
	ck_assert_str_eq(PIECES("\t\tx"), "\t|\t|x");
	/* U+0085 is White_Space (tiktoken), U+FEFF is not (JavaScript's \s differs) */
	ck_assert_str_eq(PIECES("a\xc2\x85\xc2\x85" "b"), "a|\xc2\x85|\xc2\x85|b");
	ck_assert_str_eq(PIECES("x \xef\xbb\xbfy"), "x| \xef\xbb\xbf|y");
	/* invalid bytes are one-byte "other" characters */
	ck_assert_str_eq(PIECES("a\xff" "b"), "a|\xff|b");
	ck_assert_str_eq(PIECES(" \xff\xfe.x"), " \xff\xfe.|x");
	ck_assert_str_eq(PIECES("\xe2\x82" "a"), "\xe2\x82|a");
	ck_assert_str_eq(PIECES("'\xff"), "'\xff");
	/* U+3000 ideographic space is not the optional leading space */
	ck_assert_str_eq(PIECES("a\xe3\x80\x80" "b"), "a|\xe3\x80\x80|b");
}
END_TEST

START_TEST(invalid_utf8)
{
	static const struct {
		const char *s;
		size_t n, bad;
	} cases[] = {
		{"ok \xc3\xa9", 5, 0},        {"\xc0\x80", 2, 2},         {"\xc1\xbf", 2, 2},
		{"\xe0\x80\x80", 3, 3},       {"\xed\xa0\x80", 3, 3},     {"\xf4\x90\x80\x80", 4, 4},
		{"\xf5\x80\x80\x80", 4, 4},   {"\xe2\x82", 2, 2},         {"\x80", 1, 1},
		{"\xff\xfe", 2, 2},           {"a\xf0\x9f\x98", 4, 3},    {"\xf0\x9f\x98\x80", 4, 0},
		{"\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		size_t first = 99;
		ck_assert_msg(bpe_utf8_invalid(cases[i].s, cases[i].n, &first) == cases[i].bad, "case %zu", i);
		size_t n;
		uint32_t *ids = enc(cases[i].s, cases[i].n, &n);
		char *out = NULL;
		size_t len = 0, cap = 0;
		struct gpt_err e;
		ck_assert_int_eq(bpe_decode(tok, ids, n, &out, &len, &cap, &e), 0);
		ck_assert(len == cases[i].n && !memcmp(out, cases[i].s, len));
		free(out);
		free(ids);
	}
	struct bpe_info info;
	uint32_t *ids = NULL;
	size_t n = 0, cap = 0;
	bpe_encode(tok, "ab\0c\xff\0", 6, &ids, &n, &cap, &info);
	ck_assert_uint_eq(info.invalid, 1);
	ck_assert_uint_eq(info.first_invalid, 4);
	ck_assert_uint_eq(info.nul, 2);
	ck_assert_uint_eq(info.first_nul, 2);
	free(ids);
}
END_TEST

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* random bytes and valid or broken UTF-8 round-trip */
START_TEST(round_trip_random)
{
	static const char *bits[] = {" ", "  ", "\n", "\t", "a", "the", "'s", "'", "1", "23", "\xc3\xa9", "\xe4\xb8\xad",
				     "\xf0\x9f\x98\x80", "\xe2\x80\x8d", "\xff", "\x80", "\xe2\x82", ".", "!?", "\0",
				     "\xc2\x85", "\xef\xbb\xbf", "\xe3\x80\x80", "Z"};
	char buf[600];
	for (int it = 0; it < 3000; it++) {
		size_t n = 0, parts = rnd() % 40;
		for (size_t k = 0; k < parts; k++) {
			const char *b = bits[rnd() % (sizeof bits / sizeof *bits)];
			size_t l = b[0] ? strlen(b) : 1; /* the NUL entry is one byte */
			memcpy(buf + n, b, l);
			n += l;
		}
		size_t m;
		uint32_t *ids = enc(buf, n, &m);
		char *out = NULL;
		size_t len = 0, cap = 0;
		struct gpt_err e;
		ck_assert_int_eq(bpe_decode(tok, ids, m, &out, &len, &cap, &e), 0);
		ck_assert(len == n && !memcmp(out, buf, n));
		free(out);
		free(ids);
	}
}
END_TEST

/* A straightforward BPE (js-tiktoken's bytePairMerge) to check the heap loop */
static size_t naive_merge(const unsigned char *p, size_t n, uint32_t *out)
{
	size_t *st = xmalloc((n + 1) * sizeof *st), np = n;
	for (size_t i = 0; i <= n; i++)
		st[i] = i;
	for (;;) {
		uint32_t best = BPE_NONE;
		size_t bi = 0;
		for (size_t i = 0; i + 1 < np; i++) {
			uint32_t r = bpe_lookup(tok, p + st[i], st[i + 2] - st[i]);
			if (r < best) {
				best = r;
				bi = i;
			}
		}
		if (best == BPE_NONE)
			break;
		memmove(st + bi + 1, st + bi + 2, (np - bi - 1) * sizeof *st);
		np--;
	}
	for (size_t i = 0; i < np; i++)
		out[i] = bpe_lookup(tok, p + st[i], st[i + 1] - st[i]);
	free(st);
	return np;
}

START_TEST(merge_heap_matches)
{
	static const char *bits[] = {"a", "b", "e", "r", "t", "h", "in", "ing", "the", "er", "ation", "-", "=", "0",
				     "1", "9", "\xc3", "\x83", "\xc2", "\x82", "\xe2\x80", "\x94", "\xff", ".", ","};
	unsigned char buf[800];
	uint32_t a[800], b[800], c[800];
	for (int it = 0; it < 2000; it++) {
		size_t n = 0, parts = 1 + rnd() % (it < 1000 ? 30 : 150);
		for (size_t k = 0; k < parts && n < 700; k++) {
			const char *s = bits[rnd() % (sizeof bits / sizeof *bits)];
			memcpy(buf + n, s, strlen(s));
			n += strlen(s);
		}
		size_t na = bpe_merge_piece(tok, buf, n, 1, a);
		size_t nc = naive_merge(buf, n, c);
		ck_assert_msg(same_ids(a, na, c, nc), "heap merge differs, length %zu", n);
		if (n <= 64) {
			size_t nb = bpe_merge_piece(tok, buf, n, 0, b);
			ck_assert_msg(same_ids(a, na, b, nb), "small merge differs, length %zu", n);
		}
	}
	/* a long run goes through the heap inside bpe_encode and decodes back */
	size_t big = 1 << 20;
	char *s = xmalloc(big);
	memset(s, 'a', big);
	size_t m;
	uint32_t *ids = enc(s, big, &m);
	ck_assert_uint_le(m, big / 4); /* "aaaa" is one token */
	char *out = NULL;
	size_t len = 0, cap = 0;
	struct gpt_err e;
	ck_assert_int_eq(bpe_decode(tok, ids, m, &out, &len, &cap, &e), 0);
	ck_assert(len == big && !memcmp(out, s, big));
	free(out);
	free(ids);
	free(s);
}
END_TEST

/* ---------------------------------------------------------------------- */

static char *sample_text(size_t *len)
{
	size_t clen;
	char *c = slurp("data/sample/train.txt.zst", &clen);
	unsigned long long n = ZSTD_getFrameContentSize(c, clen);
	ck_assert(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN);
	char *text = xmalloc(n + 1);
	size_t got = ZSTD_decompress(text, n, c, clen);
	ck_assert(!ZSTD_isError(got) && got == n);
	free(c);
	*len = n;
	return text;
}

/* Splitting at every safe point of a text, and tokenizing both sides,
 * gives the tokens of the whole text. */
static void check_splits(const char *s, size_t n, size_t step)
{
	size_t nw;
	uint32_t *whole = enc(s, n, &nw);
	for (size_t k = bpe_split_point(s, n, 1); k < n; k = bpe_split_point(s, n, k + 1 + step)) {
		uint32_t *ids = NULL;
		size_t m = 0, cap = 0;
		bpe_encode(tok, s, k, &ids, &m, &cap, NULL);
		bpe_encode(tok, s + k, n - k, &ids, &m, &cap, NULL);
		ck_assert_msg(same_ids(ids, m, whole, nw), "split at %zu changes the tokens", k);
		free(ids);
	}
	free(whole);
}

START_TEST(split_points_safe)
{
	/* every safe point of short random texts over tricky characters */
	static const char *bits[] = {" ", "  ", "\n", "\n\n", "\t", "\r\n", "a", "The", "'s", "'", "1", ".", "!",
				     "\xc3\xa9", "\xe3\x80\x80", "\xc2\xa0", "\xc2\x85", "\xff", "\xe4\xb8\xad", "\xcc\x81",
				     "\xf0\x9f\x98\x80", "'ll", "x"};
	char buf[400];
	for (int it = 0; it < 4000; it++) {
		size_t n = 0, parts = 1 + rnd() % 30;
		for (size_t k = 0; k < parts; k++) {
			const char *b = bits[rnd() % (sizeof bits / sizeof *bits)];
			memcpy(buf + n, b, strlen(b));
			n += strlen(b);
		}
		check_splits(buf, n, 0);
	}
	/* the fixtures' documents: every point */
	size_t len;
	char *docs = slurp(FIX "docs.txt", &len);
	check_splits(docs, len < 6000 ? len : 6000, 0);
	free(docs);

	/* points the rule must refuse: the result would change there */
	ck_assert_uint_eq(bpe_split_point("a\n\nb", 4, 2), 4);   /* "a\n\n|b" */
	ck_assert_uint_eq(bpe_split_point("a b", 3, 2), 3);      /* "a |b" */
	ck_assert_uint_eq(bpe_split_point("a \xc2\xa0", 4, 2), 4);
	ck_assert_uint_eq(bpe_split_point("\xc3\xa9 x", 4, 0), 4); /* non-ASCII before: not taken */
	ck_assert_uint_eq(bpe_split_point("ab\ncd", 5, 0), 2);
	ck_assert_uint_eq(bpe_split_point("abcd", 4, 0), 4);
	/* and they would indeed change it */
	size_t n1;
	uint32_t *w = enc("a\n\nb", 4, &n1);
	uint32_t *p = NULL;
	size_t m = 0, cap = 0;
	bpe_encode(tok, "a\n\n", 3, &p, &m, &cap, NULL);
	bpe_encode(tok, "b", 1, &p, &m, &cap, NULL);
	ck_assert(!same_ids(w, n1, p, m));
	free(w);
	free(p);
}
END_TEST

START_TEST(split_points_sample)
{
	size_t n;
	char *s = sample_text(&n);
	check_splits(s, 200000, 20000); /* ~10 points spread over 200 kB */
	free(s);
}
END_TEST

struct job {
	const char *s;
	size_t begin, end;
	uint32_t *ids;
	size_t n, cap;
};

static void *encode_job(void *arg)
{
	struct job *j = arg;
	bpe_encode(tok, j->s + j->begin, j->end - j->begin, &j->ids, &j->n, &j->cap, NULL);
	return NULL;
}

/* The same text cut at safe points and encoded on 1, 2, 3 and 8 threads at
 * once gives the tokens of one single-threaded pass. */
START_TEST(threads_independent)
{
	size_t n;
	char *s = sample_text(&n);
	size_t nw;
	uint32_t *whole = enc(s, n, &nw);
	ck_assert_uint_gt(nw, 300000);
	int counts[] = {1, 2, 3, 8};
	for (size_t c = 0; c < 4; c++) {
		int t = counts[c];
		struct job jobs[8];
		pthread_t th[8];
		size_t at = 0;
		for (int i = 0; i < t; i++) {
			size_t end = i == t - 1 ? n : bpe_split_point(s, n, n * (size_t)(i + 1) / (size_t)t);
			jobs[i] = (struct job){.s = s, .begin = at, .end = end};
			at = end;
			ck_assert_int_eq(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
		}
		uint32_t *all = NULL;
		size_t m = 0;
		for (int i = 0; i < t; i++) {
			pthread_join(th[i], NULL);
			all = xrealloc(all, (m + jobs[i].n) * sizeof *all);
			memcpy(all + m, jobs[i].ids, jobs[i].n * sizeof *all);
			m += jobs[i].n;
			free(jobs[i].ids);
		}
		ck_assert_msg(same_ids(all, m, whole, nw), "%d threads differ", t);
		free(all);
	}
	free(whole);
	free(s);
}
END_TEST

static Suite *bpe_suite(void)
{
	Suite *s = suite_create("bpe");
	TCase *tc = tcase_create("fixtures");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, fixtures, 0, (int)(sizeof groups / sizeof *groups));
	tcase_add_test(tc, fixture_docs);
	tcase_add_test(tc, vocab_files_match_builtin);
	tcase_add_test(tc, vocab_files_errors);
	tcase_add_test(tc, decode_errors);
	suite_add_tcase(s, tc);
	tc = tcase_create("pieces");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, pretokenizer);
	tcase_add_test(tc, invalid_utf8);
	tcase_add_test(tc, round_trip_random);
	tcase_add_test(tc, merge_heap_matches);
	suite_add_tcase(s, tc);
	tc = tcase_create("parallel");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, split_points_safe);
	tcase_add_test(tc, split_points_sample);
	tcase_add_test(tc, threads_independent);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(bpe_suite)
