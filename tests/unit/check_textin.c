/* check_textin.c - the document reader: documents back exactly, cuts only at
 * safe split points, line numbers, zstd frames, truncation, JSON lines. */
#include "check_common.h"

#include <zstd.h>

#include "bpe.h"
#include "json.h"
#include "textin.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void write_file(const char *path, const void *s, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(s, 1, n, fp), n);
	fclose(fp);
}

/* Random text: words, spaces, newlines, pieces of the delimiter, the delimiter. */
static char *make_text(size_t n, const char *delim, size_t *len)
{
	static const char *bits[] = {"word", " ", "\n", "  ", "\n\n", "x", ".", "\xc3\xa9", "<|", "endof", "|>", "\t",
				     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
	char *s = xmalloc(n + 64);
	size_t k = 0;
	while (k < n) {
		const char *b = rnd() % 40 == 0 ? delim : bits[rnd() % (sizeof bits / sizeof *bits)];
		size_t l = strlen(b);
		memcpy(s + k, b, l);
		k += l;
	}
	s[k] = 0;
	*len = k;
	return s;
}

struct docs {
	char **d;
	size_t *len;
	size_t n;
};

static void docs_add(struct docs *ds, const char *s, size_t n, int start)
{
	if (start) {
		ds->d = xrealloc(ds->d, (ds->n + 1) * sizeof *ds->d);
		ds->len = xrealloc(ds->len, (ds->n + 1) * sizeof *ds->len);
		ds->d[ds->n] = NULL;
		ds->len[ds->n] = 0;
		ds->n++;
	}
	ck_assert_uint_gt(ds->n, 0);
	size_t i = ds->n - 1;
	ds->d[i] = xrealloc(ds->d[i], ds->len[i] + n + 1);
	memcpy(ds->d[i] + ds->len[i], s, n);
	ds->len[i] += n;
}

static void docs_free(struct docs *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		free(ds->d[i]);
	free(ds->d);
	free(ds->len);
	memset(ds, 0, sizeof *ds);
}

/* Read path with textin and check the documents against text split on delim
 * (delim NULL: one document), the cuts and the line numbers. */
static void check_read(const char *path, const char *text, size_t len, const char *delim, size_t chunk)
{
	struct textin_opts o = {.delim = delim, .dlen = delim ? strlen(delim) : 0, .chunk = chunk};
	struct gpt_err e;
	struct textin *t = textin_open(path, &o, &e);
	ck_assert_msg(t != NULL, "%s", e.msg);
	struct docs got = {0};
	struct textin_chunk c;
	int r;
	while ((r = textin_next(t, &c, &e)) == 1) {
		ck_assert_int_eq(c.kind, TEXTIN_TEXT);
		ck_assert_uint_gt(c.len, 0);
		if (!c.doc_start) {
			/* a cut inside a document: the previous piece ended at a safe point */
			size_t i = got.n - 1;
			const char *whole = got.d[i];
			size_t at = got.len[i];
			char tmp[2] = {whole[at - 1], c.data[0]};
			ck_assert_msg(bpe_split_point(tmp, 2, 1) == 1, "cut at an unsafe point");
		}
		docs_add(&got, c.data, c.len, c.doc_start);
		free(c.data);
	}
	ck_assert_msg(r == 0, "%s", e.msg);
	textin_close(t);

	struct docs want = {0};
	if (!delim) {
		if (len)
			docs_add(&want, text, len, 1);
	} else {
		size_t dl = strlen(delim);
		for (const char *p = text, *end = text + len; p <= end;) {
			const char *d = memmem(p, (size_t)(end - p), delim, dl);
			const char *de = d ? d : end;
			if (de > p)
				docs_add(&want, p, (size_t)(de - p), 1);
			if (!d)
				break;
			p = d + dl;
		}
	}
	ck_assert_uint_eq(got.n, want.n);
	for (size_t i = 0; i < want.n; i++)
		ck_assert_msg(got.len[i] == want.len[i] && !memcmp(got.d[i], want.d[i], want.len[i]),
			      "document %zu differs", i);
	docs_free(&got);
	docs_free(&want);
}

START_TEST(text_documents)
{
	static const char *delims[] = {"<|endoftext|>", "\n\n", "x"};
	for (int it = 0; it < 12; it++) {
		size_t len;
		const char *delim = it % 4 == 3 ? NULL : delims[it % 4];
		char *text = make_text(it < 6 ? 20000 + rnd() % 5000 : 300000 + rnd() % 100000,
				       delim ? delim : "<|endoftext|>", &len);
		const char *path = test_path("text.txt");
		write_file(path, text, len);
		size_t chunk = it < 6 ? 100 + rnd() % 900 : 1000 + rnd() % 70000;
		check_read(path, text, len, delim, chunk);
		free(text);
	}
}
END_TEST

START_TEST(text_edges)
{
	const char *path = test_path("edge.txt");
	static const char *cases[] = {"", "<|endoftext|>", "<|endoftext|><|endoftext|>", "a<|endoftext|>",
				      "<|endoftext|>a", "<|endoftext", "a<|endoftext|b", "<|endoftext|>\n"};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		write_file(path, cases[i], strlen(cases[i]));
		check_read(path, cases[i], strlen(cases[i]), "<|endoftext|>", 0);
		check_read(path, cases[i], strlen(cases[i]), NULL, 0);
	}
	/* no split point at all: one piece, however long */
	size_t n = 600000;
	char *s = xmalloc(n);
	memset(s, 'a', n);
	write_file(path, s, n);
	struct textin_opts o = {.chunk = 1000};
	struct gpt_err e;
	struct textin *t = textin_open(path, &o, &e);
	struct textin_chunk c;
	ck_assert_int_eq(textin_next(t, &c, &e), 1);
	ck_assert_uint_eq(c.len, n);
	free(c.data);
	ck_assert_int_eq(textin_next(t, &c, &e), 0);
	ck_assert_uint_eq(textin_consumed(t), n);
	textin_close(t);
	free(s);
}
END_TEST

START_TEST(line_numbers)
{
	/* 3000 lines "LN text text\n": each chunk's first line is what its text says */
	char *s = xmalloc(100000);
	size_t n = 0;
	for (int i = 1; i <= 3000; i++)
		n += (size_t)sprintf(s + n, "L%d %s\n", i, i % 7 ? "text text" : "");
	const char *path = test_path("lines.txt");
	write_file(path, s, n);
	struct textin_opts o = {.chunk = 500};
	struct gpt_err e;
	struct textin *t = textin_open(path, &o, &e);
	struct textin_chunk c;
	int chunks = 0;
	while (textin_next(t, &c, &e) == 1) {
		/* the chunk starts inside a line (after a space) or at its start */
		const char *p = c.data;
		uint64_t line;
		if (p[0] == 'L') {
			line = strtoull(p + 1, NULL, 10);
		} else { /* starts with the whitespace after a line's first word */
			const char *nl = memchr(p, '\n', c.len);
			ck_assert_ptr_nonnull(nl);
			line = nl + 1 < p + c.len ? strtoull(nl + 2, NULL, 10) - 1 : 3000;
		}
		ck_assert_msg(c.line == line, "chunk %d: line %llu, want %llu", chunks, (unsigned long long)c.line,
			      (unsigned long long)line);
		free(c.data);
		chunks++;
	}
	ck_assert_int_gt(chunks, 20);
	textin_close(t);
	free(s);
}
END_TEST

/* one zstd frame with a content checksum */
static size_t zframe(void *dst, size_t cap, const void *src, size_t n, int level)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	size_t r = ZSTD_compress2(c, dst, cap, src, n);
	ck_assert(!ZSTD_isError(r));
	ZSTD_freeCCtx(c);
	return r;
}

START_TEST(zstd_frames)
{
	size_t len;
	char *text = make_text(200000, "<|endoftext|>", &len);
	/* three frames and a skippable frame in the middle */
	size_t cap = ZSTD_compressBound(len) + 1024, z = 0;
	char *buf = xmalloc(cap);
	size_t a = len / 3, b = 2 * len / 3;
	z += zframe(buf, cap, text, a, 3);
	unsigned char skip[12] = {0x55, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'm', 'e', 't', 'a'};
	memcpy(buf + z, skip, sizeof skip);
	z += sizeof skip;
	z += zframe(buf + z, cap - z, text + a, b - a, 1);
	z += zframe(buf + z, cap - z, text + b, len - b, 19);
	const char *path = test_path("text.txt.zst");
	write_file(path, buf, z);
	check_read(path, text, len, "<|endoftext|>", 3000);

	/* a skippable frame first is still zstd */
	const char *p2 = test_path("skip.zst");
	char *b2 = xmalloc(z + sizeof skip);
	memcpy(b2, skip, sizeof skip);
	memcpy(b2 + sizeof skip, buf, z);
	write_file(p2, b2, z + sizeof skip);
	check_read(p2, text, len, "<|endoftext|>", 3000);

	/* truncated: an error naming the file */
	write_file(path, buf, z - 7);
	struct textin_opts o = {.delim = "<|endoftext|>", .dlen = 13};
	struct gpt_err e;
	struct textin *t = textin_open(path, &o, &e);
	struct textin_chunk c;
	int rc;
	while ((rc = textin_next(t, &c, &e)) == 1)
		free(c.data);
	ck_assert_int_eq(rc, -1);
	ck_assert_msg(strstr(e.msg, "text.txt.zst") && (strstr(e.msg, "truncated") || strstr(e.msg, "zstd")), "%s",
		      e.msg);
	textin_close(t);
	/* corrupted in the middle: the checksum (or the decoder) sees it */
	buf[z / 2] ^= 0x55;
	write_file(path, buf, z);
	t = textin_open(path, &o, &e);
	while ((rc = textin_next(t, &c, &e)) == 1)
		free(c.data);
	ck_assert_int_eq(rc, -1);
	ck_assert_msg(strstr(e.msg, "zstd"), "%s", e.msg);
	textin_close(t);
	ck_assert_ptr_null(textin_open(test_path("missing"), &o, &e));
	ck_assert_msg(strstr(e.msg, "missing") && strstr(e.msg, "No such file"), "%s", e.msg);
	free(b2);
	free(buf);
	free(text);
}
END_TEST

START_TEST(json_lines)
{
	/* lines of every size, one far above 4 chunks, bad ones, no final newline */
	char *big = xmalloc(50000);
	size_t bn = 0;
	bn += (size_t)sprintf(big + bn, "{\"id\": 1, \"text\": \"");
	for (int i = 0; i < 4000; i++)
		bn += (size_t)sprintf(big + bn, "w%d \\n", i);
	bn += (size_t)sprintf(big + bn, "\"}");
	char *s = xmalloc(200000);
	size_t n = 0;
	n += (size_t)sprintf(s + n, "{\"text\": \"first\"}\n\n");
	for (int i = 0; i < 200; i++)
		n += (size_t)sprintf(s + n, "{\"text\": \"doc %d %s\"}\n", i, i % 3 ? "short" : "a little longer than that");
	memcpy(s + n, big, bn);
	n += bn;
	s[n++] = '\n';
	n += (size_t)sprintf(s + n, "not json\n{\"text\": 5}\n{\"text\": \"last\"}");
	const char *path = test_path("x.jsonl");
	write_file(path, s, n);

	struct textin_opts o = {.jsonl = 1, .chunk = 1000};
	struct gpt_err e;
	struct textin *t = textin_open(path, &o, &e);
	struct textin_chunk c;
	int r, texts = 0, bad = 0, bigpieces = 0;
	uint64_t next_line = 1;
	char *bigtext = NULL;
	size_t bigl = 0;
	while ((r = textin_next(t, &c, &e)) == 1) {
		if (c.kind == TEXTIN_TEXT) { /* the big line, cut */
			ck_assert_uint_eq(c.line, 203);
			ck_assert_int_eq(c.doc_start, bigpieces == 0);
			bigtext = xrealloc(bigtext, bigl + c.len);
			memcpy(bigtext + bigl, c.data, c.len);
			bigl += c.len;
			bigpieces++;
			next_line = 204;
			free(c.data);
			continue;
		}
		ck_assert_uint_eq(c.line, next_line);
		ck_assert(c.data[c.len - 1] == '\n');
		for (char *p = c.data, *nl; p < c.data + c.len; p = nl + 1, next_line++) {
			nl = memchr(p, '\n', (size_t)(c.data + c.len - p));
			struct json *doc;
			const char *txt;
			size_t tl;
			int k = textin_json_text(p, (size_t)(nl - p), "text", &doc, &txt, &tl, &e);
			if (k < 0)
				bad++;
			else if (k > 0)
				texts++;
			json_free(doc);
		}
		free(c.data);
	}
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(texts, 1 + 200 + 1);
	ck_assert_int_eq(bad, 2);
	ck_assert_int_gt(bigpieces, 2);
	ck_assert_uint_eq(next_line, 207);
	/* the pieces are the JSON text, decoded */
	struct json *j = json_parse(big, bn, &e);
	ck_assert_ptr_nonnull(j);
	const struct json *jt = json_get(j, "text");
	ck_assert(bigl == jt->len && !memcmp(bigtext, jt->str, bigl));
	json_free(j);
	textin_close(t);

	/* textin_json_text on its own */
	struct json *doc;
	const char *txt;
	size_t tl;
	ck_assert_int_eq(textin_json_text(" \r", 2, "text", &doc, &txt, &tl, &e), 0);
	ck_assert_int_eq(textin_json_text("[1]", 3, "text", &doc, &txt, &tl, &e), -1);
	ck_assert_str_eq(e.msg, "not a JSON object");
	ck_assert_int_eq(textin_json_text("{\"a\":\"b\"}", 9, "text", &doc, &txt, &tl, &e), -1);
	ck_assert_str_eq(e.msg, "no \"text\" member");
	ck_assert_int_eq(textin_json_text("{\"text\":null}", 13, "text", &doc, &txt, &tl, &e), -1);
	ck_assert_str_eq(e.msg, "\"text\" is not a string");
	ck_assert_int_eq(textin_json_text("{\"body\":\"x\\u00e9\"}", 18, "body", &doc, &txt, &tl, &e), 1);
	ck_assert(tl == 3 && !memcmp(txt, "x\xc3\xa9", 3));
	json_free(doc);
	free(bigtext);
	free(big);
	free(s);
}
END_TEST

static Suite *textin_suite(void)
{
	Suite *s = suite_create("textin");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, text_documents);
	tcase_add_test(tc, text_edges);
	tcase_add_test(tc, line_numbers);
	tcase_add_test(tc, zstd_frames);
	tcase_add_test(tc, json_lines);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(textin_suite)
