/* check_shard.c - token shards: round trips, pipes, zstd CLI compatibility,
 * every malformed input we can think of. */
#include "check_common.h"
#include "shard.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zstd.h>

/* ---------------------------------------------------------------------
 * Helpers
 */
struct buf {
	unsigned char *p;
	size_t n;
};

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16), p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(p, 1, n, fp), n);
	ck_assert_int_eq(fclose(fp), 0);
}

static struct buf read_file(const char *path)
{
	struct buf b = {0};
	FILE *fp = fopen(path, "rb");
	ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
	size_t cap = 1 << 16;
	b.p = xmalloc(cap);
	size_t k;
	while ((k = fread(b.p + b.n, 1, cap - b.n, fp)) > 0) {
		b.n += k;
		if (b.n == cap)
			b.p = xrealloc(b.p, cap *= 2);
	}
	fclose(fp);
	return b;
}

/* A .bin image: header (magic, version, count) then ntok tokens of the
 * version's width. */
static struct buf make_bin(uint32_t magic, uint32_t version, uint32_t count, const uint32_t *tok,
			   size_t ntok)
{
	size_t w = version == 2 ? 4 : 2;
	struct buf b = {xcalloc(1, 1024 + ntok * w), 1024 + ntok * w};
	put32(b.p, magic);
	put32(b.p + 4, version);
	put32(b.p + 8, count);
	for (size_t i = 0; i < ntok; i++) {
		unsigned char *q = b.p + 1024 + i * w;
		q[0] = (unsigned char)tok[i], q[1] = (unsigned char)(tok[i] >> 8);
		if (w == 4)
			q[2] = (unsigned char)(tok[i] >> 16), q[3] = (unsigned char)(tok[i] >> 24);
	}
	return b;
}

/* One zstd frame with a checksum, as the zstd CLI writes. */
static struct buf zcompress(const struct buf *in, int checksum)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
	size_t cap = ZSTD_compressBound(in->n);
	struct buf b = {xmalloc(cap), 0};
	b.n = ZSTD_compress2(c, b.p, cap, in->p, in->n);
	ck_assert(!ZSTD_isError(b.n));
	ZSTD_freeCCtx(c);
	return b;
}

static void cat(struct buf *a, const void *p, size_t n)
{
	a->p = xrealloc(a->p, a->n + n);
	memcpy(a->p + a->n, p, n);
	a->n += n;
}

static uint32_t *random_tokens(size_t n, uint32_t vocab, uint64_t seed)
{
	uint32_t *t = xmalloc((n ? n : 1) * sizeof *t);
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		/* skewed, like text: small ids are frequent, so zstd compresses */
		uint32_t r = (uint32_t)(s >> 33);
		t[i] = (r % 7 < 5) ? r % 300 : r % vocab;
	}
	return t;
}

static int have_zstd_cli(void) { return system("zstd --version >/dev/null 2>&1") == 0; }

static void write_shard(const char *path, const uint32_t *t, size_t n, struct shard_writer_opts *o,
			int64_t docs, int64_t bytes)
{
	struct gpt_err e;
	struct shard_writer *w = shard_writer_open(path, o, &e);
	ck_assert_msg(w != NULL, "%s", e.msg);
	/* in uneven pieces, to exercise the buffer growth */
	size_t i = 0, step = 1;
	while (i < n) {
		size_t k = n - i < step ? n - i : step;
		ck_assert_msg(shard_writer_put(w, t + i, k, &e) == 0, "%s", e.msg);
		i += k;
		step = step * 3 + 1;
	}
	ck_assert_uint_eq(shard_writer_count(w), n);
	ck_assert_msg(shard_writer_close(w, docs, bytes, &e) == 0, "%s", e.msg);
}

static void assert_loads(const char *path, const uint32_t *t, size_t n, int version, int compressed)
{
	struct gpt_err e;
	uint32_t *got;
	size_t gn;
	struct shard_info info;
	ck_assert_msg(shard_load(path, 0, &got, &gn, &info, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(gn, n);
	ck_assert_uint_eq(info.ntok, n);
	ck_assert_int_eq(info.version, version);
	ck_assert_int_eq(info.compressed, compressed);
	ck_assert(n == 0 || memcmp(got, t, n * sizeof *t) == 0);
	free(got);
}

/* shard_load must fail with a message naming path and containing want. */
static void assert_rejects(const char *path, uint32_t vocab, const char *want)
{
	struct gpt_err e = {""};
	uint32_t *got = (uint32_t *)&e;
	size_t gn = 99;
	ck_assert_msg(shard_load(path, vocab, &got, &gn, NULL, &e) == -1, "%s accepted (want: %s)", path,
		      want);
	ck_assert_ptr_null(got);
	ck_assert_uint_eq(gn, 0);
	ck_assert_msg(strstr(e.msg, path) != NULL, "message does not name the file: %s", e.msg);
	ck_assert_msg(!want || strstr(e.msg, want) != NULL, "message '%s' lacks '%s'", e.msg, want);
}

static void assert_rejects_buf(const struct buf *b, uint32_t vocab, const char *want)
{
	const char *path = test_path("bad.shard");
	write_file(path, b->p, b->n);
	assert_rejects(path, vocab, want);
}

/* ---------------------------------------------------------------------
 * Round trips
 */
START_TEST(roundtrip_v1_compressed)
{
	size_t n = 1500000; /* 3 MB: many 128 KiB zstd blocks, several workers */
	uint32_t *t = random_tokens(n, 50257, 1);
	const char *p = test_path("v1.bin.zst");
	struct shard_writer_opts o = {.level = 1, .threads = 2};
	write_shard(p, t, n, &o, 42, 123456789012ll);
	assert_loads(p, t, n, 1, 1);
	struct gpt_err e;
	struct shard_reader *r = shard_open(p, &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	const struct shard_info *info = shard_reader_info(r);
	ck_assert_int_eq(info->docs, 42);
	ck_assert_int_eq(info->bytes, 123456789012ll);
	/* streaming in odd pieces gives the same tokens */
	uint32_t piece[997];
	size_t at = 0;
	ssize_t k;
	while ((k = shard_read(r, piece, 997, &e)) > 0) {
		ck_assert(memcmp(piece, t + at, (size_t)k * 4) == 0);
		at += (size_t)k;
	}
	ck_assert_msg(k == 0, "%s", e.msg);
	ck_assert_uint_eq(at, n);
	ck_assert_int_eq(shard_read(r, piece, 997, &e), 0); /* stays at the end */
	shard_close(r);
	/* the file starts with the metadata frame, then a checksummed frame
	 * with the content size */
	struct buf b = read_file(p);
	ck_assert_uint_eq(get32(b.p), SHARD_META_MAGIC);
	uint32_t len = get32(b.p + 4);
	char json[256];
	snprintf(json, sizeof json, "%.*s", (int)len, b.p + 8);
	ck_assert_str_eq(json, "{\"format\":\"gpt-shard/1\",\"tokens\":1500000,\"docs\":42,"
			       "\"bytes\":123456789012}");
	const unsigned char *f = b.p + 8 + len;
	ck_assert_uint_eq(get32(f), ZSTD_MAGICNUMBER);
	ck_assert_uint_eq(ZSTD_getFrameContentSize(f, b.n - 8 - len), 1024 + 2 * n);
	ck_assert_uint_eq(f[4] & 0x04, 0x04); /* Frame_Header_Descriptor: Content_Checksum_flag */
	ck_assert_uint_eq(ZSTD_findFrameCompressedSize(f, b.n - 8 - len), b.n - 8 - len); /* one frame */
	free(b.p);
	free(t);
}
END_TEST

START_TEST(roundtrip_v2_and_versions)
{
	size_t n = 100000;
	uint32_t *t = random_tokens(n, 200000, 2);
	const char *p = test_path("v2.bin.zst");
	struct shard_writer_opts o = {0};
	write_shard(p, t, n, &o, -1, -1); /* auto: a token > 65535 makes it v2 */
	assert_loads(p, t, n, 2, 1);
	struct shard_info info;
	uint32_t *got;
	size_t gn;
	struct gpt_err e;
	ck_assert_int_eq(shard_load(p, 0, &got, &gn, &info, &e), 0);
	ck_assert_int_eq(info.docs, -1);
	ck_assert_int_eq(info.bytes, -1);
	free(got);
	/* the vocabulary limit applies to v2 */
	assert_rejects(p, 199000, "outside the vocabulary (199000 tokens)");
	/* forced v2 with small tokens */
	uint32_t *s = random_tokens(5000, 50257, 3);
	o.version = 2;
	write_shard(p, s, 5000, &o, 1, -1);
	assert_loads(p, s, 5000, 2, 1);
	/* forced v1 refuses a wide token, naming it */
	o.version = 1;
	struct shard_writer *w = shard_writer_open(p, &o, &e);
	uint32_t big[3] = {1, 70000, 2};
	ck_assert_int_eq(shard_writer_put(w, big, 3, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "token 70000 does not fit a version 1"));
	shard_writer_abort(w);
	/* auto: widening in the middle keeps the earlier tokens */
	o.version = 0;
	w = shard_writer_open(p, &o, &e);
	ck_assert_int_eq(shard_writer_put(w, s, 5000, &e), 0);
	ck_assert_int_eq(shard_writer_put(w, big, 3, &e), 0);
	ck_assert_int_eq(shard_writer_close(w, -1, -1, &e), 0);
	uint32_t all[5003];
	memcpy(all, s, sizeof(uint32_t) * 5000);
	memcpy(all + 5000, big, sizeof big);
	assert_loads(p, all, 5003, 2, 1);
	/* bad options */
	o.version = 3;
	ck_assert_ptr_null(shard_writer_open(p, &o, &e));
	o.version = 0;
	o.level = 99;
	ck_assert_ptr_null(shard_writer_open(p, &o, &e));
	free(s);
	free(t);
}
END_TEST

START_TEST(roundtrip_raw)
{
	size_t n = 30001;
	uint32_t *t = random_tokens(n, 50257, 4);
	const char *p = test_path("raw.bin");
	struct shard_writer_opts o = {.raw = 1};
	write_shard(p, t, n, &o, 5, 6);
	assert_loads(p, t, n, 1, 0);
	struct buf b = read_file(p);
	struct buf want = make_bin(SHARD_MAGIC, 1, (uint32_t)n, t, n);
	ck_assert_uint_eq(b.n, 1024 + 2 * n);
	ck_assert(memcmp(b.p, want.p, b.n) == 0); /* byte for byte what llm.c writes */
	free(b.p);
	free(want.p);
	/* raw v2 */
	t[7] = 1u << 20;
	write_shard(p, t, n, &o, -1, -1);
	assert_loads(p, t, n, 2, 0);
	b = read_file(p);
	ck_assert_uint_eq(b.n, 1024 + 4 * n);
	free(b.p);
	free(t);
}
END_TEST

START_TEST(roundtrip_empty)
{
	struct shard_writer_opts o = {0};
	const char *p = test_path("empty.bin.zst");
	write_shard(p, NULL, 0, &o, 0, 0);
	assert_loads(p, NULL, 0, 1, 1);
	struct gpt_err e;
	struct shard_reader *r = shard_open(p, &e);
	ck_assert_ptr_nonnull(r);
	uint32_t x;
	ck_assert_int_eq(shard_read(r, &x, 1, &e), 0);
	shard_close(r);
	o.raw = 1;
	p = test_path("empty.bin");
	write_shard(p, NULL, 0, &o, -1, -1);
	assert_loads(p, NULL, 0, 1, 0);
	struct buf b = read_file(p);
	ck_assert_uint_eq(b.n, 1024);
	free(b.p);
	/* an empty shard with trailing bytes is still rejected */
	struct buf bin = make_bin(SHARD_MAGIC, 1, 0, NULL, 0);
	cat(&bin, "xy", 2);
	assert_rejects_buf(&bin, 0, "data continues after the 0 tokens");
	free(bin.p);
}
END_TEST

START_TEST(no_meta_and_plain_zstd)
{
	uint32_t *t = random_tokens(1000, 50257, 5);
	const char *p = test_path("nometa.bin.zst");
	struct shard_writer_opts o = {.no_meta = 1, .level = 19, .threads = 1};
	write_shard(p, t, 1000, &o, 3, 4);
	struct buf b = read_file(p);
	ck_assert_uint_eq(get32(b.p), ZSTD_MAGICNUMBER);
	free(b.p);
	struct shard_info info;
	uint32_t *got;
	size_t n;
	struct gpt_err e;
	ck_assert_int_eq(shard_load(p, 0, &got, &n, &info, &e), 0);
	ck_assert_int_eq(info.docs, -1);
	free(got);
	/* a foreign skippable frame before ours, and one after the data, are skipped */
	struct buf bin = make_bin(SHARD_MAGIC, 1, 1000, t, 1000);
	struct buf z = zcompress(&bin, 1);
	struct buf f = {0};
	unsigned char sk[8];
	put32(sk, 0x184D2A57), put32(sk + 4, 5000);
	cat(&f, sk, 8);
	unsigned char junk[5000] = {1, 2, 3};
	cat(&f, junk, sizeof junk);
	const char *meta = "{ \"format\" : \"gpt-shard/1\", \"tokens\": 1000, \"docs\":7, \"x\":\"y\" }";
	put32(sk, SHARD_META_MAGIC), put32(sk + 4, (uint32_t)strlen(meta));
	cat(&f, sk, 8);
	cat(&f, meta, strlen(meta));
	cat(&f, z.p, z.n);
	put32(sk, 0x184D2A5F), put32(sk + 4, 3);
	cat(&f, sk, 8);
	cat(&f, "abc", 3);
	write_file(p, f.p, f.n);
	ck_assert_msg(shard_load(p, 0, &got, &n, &info, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(n, 1000);
	ck_assert(memcmp(got, t, 4000) == 0);
	ck_assert_int_eq(info.docs, 7);
	ck_assert_int_eq(info.bytes, -1);
	free(got);
	/* metadata that disagrees with the header */
	f.n = 0;
	meta = "{\"format\":\"gpt-shard/1\",\"tokens\":999}";
	put32(sk, SHARD_META_MAGIC), put32(sk + 4, (uint32_t)strlen(meta));
	cat(&f, sk, 8);
	cat(&f, meta, strlen(meta));
	cat(&f, z.p, z.n);
	assert_rejects_buf(&f, 0, "the metadata frame says 999 tokens but the header says 1000");
	/* malformed metadata of our format */
	f.n = 0;
	meta = "{\"format\":\"gpt-shard/1\",\"tokens\":-1}";
	put32(sk + 4, (uint32_t)strlen(meta));
	cat(&f, sk, 8);
	cat(&f, meta, strlen(meta));
	cat(&f, z.p, z.n);
	assert_rejects_buf(&f, 0, "malformed metadata frame");
	/* a metadata frame and nothing else */
	f.n = 0;
	meta = "{\"format\":\"gpt-shard/1\",\"tokens\":1000}";
	put32(sk + 4, (uint32_t)strlen(meta));
	cat(&f, sk, 8);
	cat(&f, meta, strlen(meta));
	assert_rejects_buf(&f, 0, "no zstd frame");
	/* truncated inside a foreign skippable frame */
	f.n = 0;
	put32(sk, 0x184D2A51), put32(sk + 4, 100000);
	cat(&f, sk, 8);
	cat(&f, junk, 10);
	assert_rejects_buf(&f, 0, "truncated skippable frame");
	free(f.p);
	free(z.p);
	free(bin.p);
	free(t);
}
END_TEST

/* ---------------------------------------------------------------------
 * Pipes and the zstd command-line tool
 */
START_TEST(read_from_pipe)
{
	size_t n = 400000;
	uint32_t *t = random_tokens(n, 50257, 6);
	const char *p = test_path("pipe.bin.zst");
	struct shard_writer_opts o = {0};
	write_shard(p, t, n, &o, -1, -1);
	struct buf b = read_file(p);
	/* a child writes the file into a pipe in small, uneven pieces */
	int fd[2];
	ck_assert_int_eq(pipe(fd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fd[0]);
		size_t at = 0, step = 1;
		while (at < b.n) {
			size_t k = b.n - at < step ? b.n - at : step;
			if (write(fd[1], b.p + at, k) != (ssize_t)k)
				_exit(1);
			at += k;
			step = step % 70001 * 7 + 3;
		}
		_exit(0);
	}
	close(fd[1]);
	FILE *fp = fdopen(fd[0], "rb");
	struct gpt_err e;
	struct shard_reader *r = shard_open_fp(fp, "the pipe", &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	uint32_t *got = xmalloc(n * 4);
	size_t at = 0;
	ssize_t k;
	while ((k = shard_read(r, got + at, 65536, &e)) > 0)
		at += (size_t)k;
	ck_assert_msg(k == 0, "%s", e.msg);
	ck_assert_uint_eq(at, n);
	ck_assert(memcmp(got, t, n * 4) == 0);
	shard_close(r);
	fclose(fp);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* a truncated stream through a pipe names the stream */
	char cmd[600];
	snprintf(cmd, sizeof cmd, "head -c %zu '%s'", b.n / 2, p);
	fp = popen(cmd, "r");
	r = shard_open_fp(fp, "the pipe", &e);
	ck_assert_ptr_nonnull(r);
	while ((k = shard_read(r, got, n, &e)) > 0)
		;
	ck_assert_int_eq(k, -1);
	ck_assert_msg(strstr(e.msg, "the pipe: truncated zstd frame") != NULL, "%s", e.msg);
	shard_close(r);
	pclose(fp);
	free(got);
	free(b.p);
	free(t);
}
END_TEST

START_TEST(zstd_cli_compat)
{
	if (!have_zstd_cli()) {
		fprintf(stderr, "check_shard: zstd CLI not found, skipping zstd_cli_compat\n");
		return;
	}
	size_t n = 200000;
	uint32_t *t = random_tokens(n, 50257, 7);
	const char *z = test_path("cli.bin.zst"), *raw = test_path("cli.bin"),
		   *dec = test_path("cli.dec.bin"), *rez = test_path("cli.re.zst");
	struct shard_writer_opts o = {0};
	write_shard(z, t, n, &o, 10, 20);
	o.raw = 1;
	write_shard(raw, t, n, &o, -1, -1);
	char cmd[1200];
	/* zstd -d of our shard is exactly the .bin */
	snprintf(cmd, sizeof cmd, "zstd -q -d -f '%s' -o '%s' && cmp -s '%s' '%s'", z, dec, dec, raw);
	ck_assert_int_eq(system(cmd), 0);
	/* zstd of a .bin is a shard we read, from a file and from a pipe */
	snprintf(cmd, sizeof cmd, "zstd -q -f -19 '%s' -o '%s'", raw, rez);
	ck_assert_int_eq(system(cmd), 0);
	assert_loads(rez, t, n, 1, 1);
	snprintf(cmd, sizeof cmd, "zstd -q -c '%s'", raw);
	FILE *fp = popen(cmd, "r");
	struct gpt_err e;
	struct shard_reader *r = shard_open_fp(fp, "zstd pipe", &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	uint32_t *got = xmalloc(n * 4);
	ck_assert_int_eq(shard_read(r, got, n, &e), (ssize_t)n);
	ck_assert_int_eq(shard_read(r, got, n, &e), 0);
	ck_assert(memcmp(got, t, n * 4) == 0);
	shard_close(r);
	ck_assert_int_eq(pclose(fp), 0);
	/* zstd -t agrees that our file is sound */
	snprintf(cmd, sizeof cmd, "zstd -q -t '%s'", z);
	ck_assert_int_eq(system(cmd), 0);
	free(got);
	free(t);
}
END_TEST

START_TEST(stdin_dash)
{
	uint32_t *t = random_tokens(3000, 50257, 8);
	const char *p = test_path("stdin.bin.zst");
	struct shard_writer_opts o = {0};
	write_shard(p, t, 3000, &o, -1, -1);
	fflush(stdout);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen(p, "rb", stdin))
			_exit(2);
		uint32_t *got;
		size_t n;
		struct gpt_err e;
		if (shard_load("-", 0, &got, &n, NULL, &e) != 0)
			_exit(3);
		_exit(n == 3000 && !memcmp(got, t, 3000 * 4) ? 0 : 4);
	}
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	free(t);
}
END_TEST

START_TEST(load_into_reuses)
{
	uint32_t *a = random_tokens(70000, 50257, 13), *b = random_tokens(500, 50257, 14);
	struct shard_writer_opts o = {0};
	write_shard(test_path("a.zst"), a, 70000, &o, -1, -1);
	write_shard(test_path("b.zst"), b, 500, &o, -1, -1);
	uint32_t *buf = NULL;
	size_t cap = 0, n;
	struct gpt_err e;
	ck_assert_int_eq(shard_load_into(test_path("b.zst"), 0, &buf, &cap, &n, NULL, &e), 0);
	ck_assert_uint_eq(n, 500);
	ck_assert_uint_ge(cap, 500);
	ck_assert(memcmp(buf, b, 500 * 4) == 0);
	ck_assert_int_eq(shard_load_into(test_path("a.zst"), 0, &buf, &cap, &n, NULL, &e), 0);
	ck_assert_uint_eq(n, 70000);
	ck_assert(memcmp(buf, a, 70000 * 4) == 0);
	uint32_t *same = buf;
	size_t cap2 = cap;
	ck_assert_int_eq(shard_load_into(test_path("b.zst"), 0, &buf, &cap, &n, NULL, &e), 0);
	ck_assert_ptr_eq(buf, same); /* big enough: not reallocated */
	ck_assert_uint_eq(cap, cap2);
	ck_assert_uint_eq(n, 500);
	ck_assert(memcmp(buf, b, 500 * 4) == 0);
	/* on error the buffer stays the caller's */
	ck_assert_int_eq(shard_load_into(test_path("a.zst"), 100, &buf, &cap, &n, NULL, &e), -1);
	ck_assert_ptr_eq(buf, same);
	ck_assert_uint_eq(n, 0);
	free(buf);
	/* shard_read of 0 tokens is refused, not taken for the end */
	struct shard_reader *r = shard_open(test_path("b.zst"), &e);
	ck_assert_int_eq(shard_read(r, NULL, 0, &e), -1);
	uint32_t x[600];
	ck_assert_int_eq(shard_read(r, x, 600, &e), 500);
	ck_assert_int_eq(shard_read(r, x, 600, &e), 0);
	shard_close(r);
	free(a);
	free(b);
}
END_TEST

START_TEST(writer_atomic)
{
	const char *p = test_path("atomic.bin.zst");
	struct gpt_err e;
	struct shard_writer_opts o = {0};
	struct shard_writer *w = shard_writer_open(p, &o, &e);
	uint32_t x[2] = {1, 2};
	shard_writer_put(w, x, 2, &e);
	ck_assert_int_ne(access(p, F_OK), 0); /* not there before the commit */
	shard_writer_abort(w);
	ck_assert_int_ne(access(p, F_OK), 0);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q atomic", test_tmpdir());
	ck_assert_int_ne(system(cmd), 0); /* no temporary left behind */
	w = shard_writer_open(p, &o, &e);
	shard_writer_put(w, x, 2, &e);
	ck_assert_int_eq(shard_writer_close(w, -1, -1, &e), 0);
	assert_loads(p, x, 2, 1, 1);
}
END_TEST

/* ---------------------------------------------------------------------
 * Malformed input
 */
START_TEST(reject_header)
{
	uint32_t t[10] = {50256, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	struct buf b;
	assert_rejects(test_path("does-not-exist"), 0, "No such file");
	b = (struct buf){(unsigned char *)"", 0};
	assert_rejects_buf(&b, 0, "empty file");
	b = make_bin(20240521, 1, 10, t, 10);
	assert_rejects_buf(&b, 0, "bad magic 20240521");
	struct buf z = zcompress(&b, 1);
	assert_rejects_buf(&z, 0, "bad magic 20240521 in the decompressed header");
	free(z.p);
	put32(b.p, SHARD_MAGIC);
	for (uint32_t v = 0; v < 5; v += 3) { /* versions 0 and 3 */
		put32(b.p + 4, v);
		char want[64];
		snprintf(want, sizeof want, "unsupported shard version %u", v);
		assert_rejects_buf(&b, 0, want);
		z = zcompress(&b, 1);
		assert_rejects_buf(&z, 0, want);
		free(z.p);
	}
	put32(b.p + 4, 1);
	put32(b.p + 8, 0x80000000u);
	assert_rejects_buf(&b, 0, "negative token count");
	put32(b.p + 8, 10);
	put32(b.p + 4 * 255, 1);
	assert_rejects_buf(&b, 0, "header word 255 is 1");
	put32(b.p + 4 * 255, 0);
	put32(b.p + 12, 7);
	assert_rejects_buf(&b, 0, "header word 3 is 7");
	put32(b.p + 12, 0);
	/* sound again */
	write_file(test_path("ok.bin"), b.p, b.n);
	assert_loads(test_path("ok.bin"), t, 10, 1, 0);
	free(b.p);
}
END_TEST

START_TEST(reject_count)
{
	uint32_t t[10] = {50256, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	for (int comp = 0; comp < 2; comp++) {
		for (uint32_t version = 1; version <= 2; version++) {
			/* header says 10, data holds 9 */
			struct buf b = make_bin(SHARD_MAGIC, version, 10, t, 9);
			struct buf x = comp ? zcompress(&b, 1) : b;
			assert_rejects_buf(&x, 0, "the header declares 10 tokens but the data holds 9");
			if (comp)
				free(x.p);
			/* ... and half a token */
			cat(&b, "\x01", 1);
			x = comp ? zcompress(&b, 1) : b;
			assert_rejects_buf(&x, 0, "holds 9 and a partial token");
			if (comp)
				free(x.p);
			free(b.p);
			/* header says 9, data holds 10 */
			b = make_bin(SHARD_MAGIC, version, 9, t, 10);
			x = comp ? zcompress(&b, 1) : b;
			assert_rejects_buf(&x, 0, "data continues after the 9 tokens");
			if (comp)
				free(x.p);
			free(b.p);
			/* header says 10, only the header */
			b = make_bin(SHARD_MAGIC, version, 10, t, 0);
			x = comp ? zcompress(&b, 1) : b;
			assert_rejects_buf(&x, 0, "declares 10 tokens but the data holds 0");
			if (comp)
				free(x.p);
			free(b.p);
		}
	}
}
END_TEST

START_TEST(reject_trailing)
{
	uint32_t t[10] = {50256, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	struct buf b = make_bin(SHARD_MAGIC, 1, 10, t, 10);
	struct buf raw = {0};
	cat(&raw, b.p, b.n);
	cat(&raw, "\n", 1);
	assert_rejects_buf(&raw, 0, "data continues after the 10 tokens");
	struct buf z = zcompress(&b, 1);
	struct buf f = {0};
	cat(&f, z.p, z.n);
	cat(&f, "garbage!", 8);
	assert_rejects_buf(&f, 0, "trailing garbage after the last zstd frame");
	f.n = z.n + 2; /* "ga": not even the start of a magic number */
	assert_rejects_buf(&f, 0, "trailing garbage after the last zstd frame");
	f.n = z.n; /* the start of a zstd magic number, then the end */
	cat(&f, "\x28\xb5", 2);
	assert_rejects_buf(&f, 0, "the 2 bytes after the last complete zstd frame");
	f.n = z.n + 1;
	assert_rejects_buf(&f, 0, "the 1 bytes after the last complete zstd frame");
	/* a second, valid frame that adds data */
	f.n = z.n;
	struct buf extra = {(unsigned char *)"\x05\x00", 2};
	struct buf z2 = zcompress(&extra, 1);
	cat(&f, z2.p, z2.n);
	assert_rejects_buf(&f, 0, "data continues after the 10 tokens");
	/* the .bin split over two frames (as pzstd writes) is fine */
	struct buf h = {b.p, 1030}, tail = {b.p + 1030, b.n - 1030};
	struct buf z3 = zcompress(&h, 1), z4 = zcompress(&tail, 1);
	f.n = 0;
	cat(&f, z3.p, z3.n);
	cat(&f, z4.p, z4.n);
	write_file(test_path("split.zst"), f.p, f.n);
	assert_loads(test_path("split.zst"), t, 10, 1, 1);
	/* a second frame cut short */
	f.n -= 3;
	assert_rejects_buf(&f, 0, "after the last complete zstd frame are a truncated frame");
	free(z.p), free(z2.p), free(z3.p), free(z4.p), free(f.p), free(raw.p), free(b.p);
}
END_TEST

START_TEST(reject_vocab)
{
	uint32_t t[6] = {50256, 1, 50257, 3, 60000, 5};
	struct buf b = make_bin(SHARD_MAGIC, 1, 6, t, 6);
	write_file(test_path("voc.bin"), b.p, b.n);
	assert_rejects(test_path("voc.bin"), 50257, "token 50257 at index 2 is outside the vocabulary");
	assert_loads(test_path("voc.bin"), t, 6, 1, 0); /* no limit: fine */
	free(b.p);
	t[2] = 0;
	t[4] = 1u << 31;
	b = make_bin(SHARD_MAGIC, 2, 6, t, 6);
	struct buf z = zcompress(&b, 1);
	assert_rejects_buf(&z, 1u << 20, "token 2147483648 at index 4 is outside the vocabulary");
	free(z.p);
	free(b.p);
}
END_TEST

/* Truncation at every byte offset: raw and compressed, header and body. */
START_TEST(reject_truncation_everywhere)
{
	size_t n = 3000;
	uint32_t *t = random_tokens(n, 50257, 9);
	struct buf b = make_bin(SHARD_MAGIC, 1, (uint32_t)n, t, n);
	const char *p = test_path("cut.bin");
	for (size_t cut = 0; cut < b.n; cut += cut < 1100 ? 1 : 97) {
		write_file(p, b.p, cut);
		assert_rejects(p, 0,
			       cut == 0 ? "empty file" : cut < 1024 ? "truncated header" : "truncated: the header declares");
	}
	/* our own compressed shard, with its metadata frame */
	const char *zp = test_path("cut.bin.zst");
	struct shard_writer_opts o = {.threads = 1};
	write_shard(zp, t, n, &o, -1, -1);
	struct buf z = read_file(zp);
	int truncated_frame = 0;
	for (size_t cut = 0; cut < z.n; cut++) {
		write_file(p, z.p, cut);
		assert_rejects(p, 0, cut == 0 ? "empty file" : NULL);
		struct gpt_err e;
		uint32_t *got;
		size_t gn;
		shard_load(p, 0, &got, &gn, NULL, &e);
		truncated_frame += strstr(e.msg, "truncated zstd frame") != NULL;
	}
	ck_assert_uint_ge(truncated_frame, z.n - 60);
	write_file(p, z.p, z.n);
	assert_loads(p, t, n, 1, 1);
	free(z.p);
	free(b.p);
	free(t);
}
END_TEST

/* A flipped byte anywhere in the frame is an error, never wrong tokens. */
static void flip_scan(const struct buf *z, size_t from, size_t stride, const uint32_t *t, size_t n,
		      int *errors, int *silent, int *checksum)
{
	const char *p = test_path("flip.zst");
	struct buf c = {xmalloc(z->n), z->n};
	for (size_t i = from; i < z->n; i += stride) {
		for (int m = 0; m < 2; m++) {
			memcpy(c.p, z->p, z->n);
			c.p[i] ^= m ? 0x80 : 0x01;
			write_file(p, c.p, c.n);
			struct gpt_err e;
			uint32_t *got;
			size_t gn;
			if (shard_load(p, 0, &got, &gn, NULL, &e) == 0) {
				ck_assert_msg(gn == n && !memcmp(got, t, n * 4),
					      "flip at %zu gave wrong tokens", i);
				(*silent)++;
				free(got);
			} else {
				ck_assert_ptr_nonnull(strstr(e.msg, p));
				(*errors)++;
				*checksum += strstr(e.msg, "checksum mismatch") != NULL;
			}
		}
	}
	free(c.p);
}

START_TEST(reject_flipped_bytes)
{
	/* small: every byte of the frame */
	size_t n = 2000;
	uint32_t *t = random_tokens(n, 50257, 10);
	struct buf b = make_bin(SHARD_MAGIC, 1, (uint32_t)n, t, n);
	struct buf z = zcompress(&b, 1);
	int errors = 0, silent = 0, checksum = 0;
	flip_scan(&z, 0, 1, t, n, &errors, &silent, &checksum);
	ck_assert_int_le(silent, 8); /* a few frame-header bits (window size) are harmless */
	ck_assert_int_gt(checksum, 0);
	free(z.p);
	free(b.p);
	free(t);
}
END_TEST

START_TEST(reject_flipped_bytes_large)
{
	size_t n = 600000;
	uint32_t *t = random_tokens(n, 50257, 11);
	const char *zp = test_path("flipbig.zst");
	struct shard_writer_opts o = {.no_meta = 1, .threads = 2, .level = 1};
	write_shard(zp, t, n, &o, -1, -1);
	struct buf z = read_file(zp);
	int errors = 0, silent = 0, checksum = 0;
	flip_scan(&z, 0, z.n / 150 + 1, t, n, &errors, &silent, &checksum);
	/* the last bytes: the end of the last block and the checksum */
	flip_scan(&z, z.n - 8, 1, t, n, &errors, &silent, &checksum);
	ck_assert_int_le(silent, 2);
	ck_assert_int_gt(checksum, 0);
	free(z.p);
	free(t);
}
END_TEST

START_TEST(reject_unchecked_frame_corruption)
{
	/* without a checksum (zstd --no-check) corruption inside a literal
	 * section cannot be seen; corruption of the structure still is */
	uint32_t *t = random_tokens(2000, 50257, 12);
	struct buf b = make_bin(SHARD_MAGIC, 1, 2000, t, 2000);
	struct buf z = zcompress(&b, 0);
	struct buf c = {xmalloc(z.n), z.n};
	memcpy(c.p, z.p, z.n);
	c.p[4] ^= 0x04; /* frame header descriptor: claims a checksum it lacks */
	assert_rejects_buf(&c, 0, NULL);
	memcpy(c.p, z.p, z.n);
	write_file(test_path("nocheck.zst"), c.p, c.n);
	assert_loads(test_path("nocheck.zst"), t, 2000, 1, 1);
	free(c.p);
	free(z.p);
	free(b.p);
	free(t);
}
END_TEST

/* ---------------------------------------------------------------------
 * The shared validation shard (real GPT-2 tokens), when present
 */
START_TEST(shared_val_shard)
{
	const char *d = shared_data();
	if (!d) {
		fprintf(stderr, "check_shard: ../shared/data not found, skipping shared_val_shard\n");
		return;
	}
	char path[512];
	snprintf(path, sizeof path, "%s/gutenberg_en_val.gpt2.bin.zst", d);
	uint32_t *t;
	size_t n;
	struct shard_info info;
	struct gpt_err e;
	ck_assert_msg(shard_load(path, 50257, &t, &n, &info, &e) == 0, "%s", e.msg);
	ck_assert_uint_eq(n, 1264623);
	ck_assert_int_eq(info.version, 1);
	ck_assert_int_eq(info.compressed, 1);
	ck_assert_int_eq(info.docs, -1); /* plain zstd of a .bin: no metadata */
	ck_assert_uint_eq(t[0], 50256);
	size_t docs = 0;
	for (size_t i = 0; i < n; i++)
		docs += t[i] == 50256;
	ck_assert_uint_eq(docs, 11); /* README: 11 books */
	free(t);
}
END_TEST

Suite *shard_suite(void)
{
	Suite *s = suite_create("shard");
	TCase *c = tcase_create("roundtrip");
	tcase_set_timeout(c, 60);
	tcase_add_test(c, roundtrip_v1_compressed);
	tcase_add_test(c, roundtrip_v2_and_versions);
	tcase_add_test(c, roundtrip_raw);
	tcase_add_test(c, roundtrip_empty);
	tcase_add_test(c, no_meta_and_plain_zstd);
	tcase_add_test(c, read_from_pipe);
	tcase_add_test(c, zstd_cli_compat);
	tcase_add_test(c, stdin_dash);
	tcase_add_test(c, load_into_reuses);
	tcase_add_test(c, writer_atomic);
	suite_add_tcase(s, c);
	c = tcase_create("malformed");
	tcase_set_timeout(c, 60);
	tcase_add_test(c, reject_header);
	tcase_add_test(c, reject_count);
	tcase_add_test(c, reject_trailing);
	tcase_add_test(c, reject_vocab);
	tcase_add_test(c, reject_truncation_everywhere);
	tcase_add_test(c, reject_flipped_bytes);
	tcase_add_test(c, reject_flipped_bytes_large);
	tcase_add_test(c, reject_unchecked_frame_corruption);
	suite_add_tcase(s, c);
	c = tcase_create("shared");
	tcase_set_timeout(c, 60);
	tcase_add_test(c, shared_val_shard);
	suite_add_tcase(s, c);
	return s;
}

CHECK_MAIN(shard_suite)
