/* check_safetensors.c - the safetensors reader and writer. */
#include "check_common.h"
#include "safetensors.h"

#include <dirent.h>
#include <sys/stat.h>
#include <math.h>
#include <stdint.h>
#include <zstd.h>

/* ------------------------------------------------------------------------
 * helpers
 */
static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	unsigned char *b = xmalloc((size_t)n + 1);
	ck_assert_uint_eq(fread(b, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return b;
}

static void spit(const char *path, const void *b, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert(fp != NULL);
	ck_assert_uint_eq(fwrite(b, 1, n, fp), n);
	fclose(fp);
}

/* A file image: 8-byte length, the header text as given, then data. */
static unsigned char *image(const char *hdr, const void *data, size_t dlen, size_t *len)
{
	size_t h = strlen(hdr);
	unsigned char *b = xmalloc(8 + h + dlen + 1);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)h >> (8 * i));
	memcpy(b + 8, hdr, h);
	if (dlen)
		memcpy(b + 8 + h, data, dlen);
	*len = 8 + h + dlen;
	return b;
}

/* Parse hdr+data from memory; expect failure with a message that names the
 * file and contains want. */
static void expect_bad(const char *hdr, const void *data, size_t dlen, const char *want)
{
	size_t len;
	unsigned char *b = image(hdr, data, dlen, &len);
	struct st_file f;
	struct gpt_err e = {{0}};
	int rc = st_parse(b, len, "bad.safetensors", &f, &e);
	ck_assert_msg(rc == -1, "accepted: %s", hdr);
	ck_assert_msg(strstr(e.msg, "bad.safetensors: ") == e.msg, "message without file name: %s",
	              e.msg);
	ck_assert_msg(strstr(e.msg, want) != NULL, "for %s: wanted '%s' in '%s'", hdr, want, e.msg);
	ck_assert_int_eq(f.n, 0);
	ck_assert_ptr_null(f.data);
	free(b);
}

static void expect_good(const char *hdr, const void *data, size_t dlen, int ntensors)
{
	size_t len;
	unsigned char *b = image(hdr, data, dlen, &len);
	struct st_file f;
	struct gpt_err e = {{0}};
	ck_assert_msg(st_parse(b, len, "good.safetensors", &f, &e) == 0, "%s: %s", hdr, e.msg);
	ck_assert_int_eq(f.n, ntensors);
	st_free(&f);
	free(b);
}

static int is_zstd(const unsigned char *b, size_t len)
{
	return len >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd;
}

static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert(d != NULL);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* ------------------------------------------------------------------------
 * dtypes, golden bytes
 */
START_TEST(dtype_table)
{
	static const struct {
		const char *name;
		size_t size;
	} want[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
	            {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
	            {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
	            {"C64", 8}};
	for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
		enum st_dtype d;
		ck_assert_int_eq(st_dtype_parse(want[i].name, &d), 0);
		ck_assert_str_eq(st_dtype_name(d), want[i].name);
		ck_assert_uint_eq(st_dtype_size(d), want[i].size);
	}
	enum st_dtype d;
	ck_assert_int_eq(st_dtype_parse("F4", &d), -1);
	ck_assert_int_eq(st_dtype_parse("f32", &d), -1);
	ck_assert_int_eq(st_dtype_parse("", &d), -1);
}
END_TEST

/* The exact bytes of a tiny file, built by hand: catches any drift in
 * the header layout (key order, spacing, padding) or the data. */
START_TEST(golden_bytes)
{
	float a[2] = {1.0f, -2.0f};
	uint16_t bv = 0x3f80; /* bf16 1.0 */
	int64_t sa[1] = {2};
	struct st_entry t[2] = {{"a", ST_F32, 1, sa, a}, {"b", ST_BF16, 0, NULL, &bv}};
	const char *meta[2] = {"k", "v"};
	struct gpt_err e;
	const char *path = test_path("golden.safetensors");
	ck_assert_int_eq(st_write(path, 0, t, 2, meta, 1, &e), 0);

	static const char hdr[] =
		"{\"__metadata__\":{\"k\":\"v\"},"
		"\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		"\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[8,10]}}"
		"   "; /* 133 bytes of JSON + 3 spaces = 136, a multiple of 8 */
	static const unsigned char data[10] = {0x00, 0x00, 0x80, 0x3f, 0x00,
	                                       0x00, 0x00, 0xc0, 0x80, 0x3f};
	unsigned char want[8 + 136 + 10] = {136, 0, 0, 0, 0, 0, 0, 0};
	ck_assert_uint_eq(sizeof hdr - 1, 136);
	memcpy(want + 8, hdr, 136);
	memcpy(want + 144, data, 10);
	size_t len;
	unsigned char *got = slurp(path, &len);
	ck_assert_uint_eq(len, sizeof want);
	ck_assert_mem_eq(got, want, sizeof want);
	free(got);

	/* no metadata: no __metadata__ key; no tensors: "{}" */
	ck_assert_int_eq(st_write(path, 0, t, 1, NULL, 0, &e), 0);
	got = slurp(path, &len);
	static const char h2[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	ck_assert_uint_eq(sizeof h2 - 1, 54);
	ck_assert_uint_eq(len, 8 + 56 + 8);
	ck_assert_uint_eq(got[0], 56);
	ck_assert_mem_eq(got + 8, h2, 54);
	ck_assert_mem_eq(got + 8 + 54, "  ", 2);
	free(got);
	ck_assert_int_eq(st_write(path, 0, t, 0, NULL, 0, &e), 0);
	got = slurp(path, &len);
	ck_assert_uint_eq(len, 16);
	ck_assert_mem_eq(got, "\x08\0\0\0\0\0\0\0{}      ", 16);
	free(got);
}
END_TEST

/* ------------------------------------------------------------------------
 * round trips
 */
static void round_trip(const char *name, int flags)
{
	/* every dtype x shapes [], [0, 3], [5], [2, 3] */
	static const int64_t s0[1] = {0}, s03[2] = {0, 3}, s5[1] = {5}, s23[2] = {2, 3};
	struct {
		int ndim;
		const int64_t *shape;
		int numel;
	} shapes[4] = {{0, s0, 1}, {2, s03, 0}, {1, s5, 5}, {2, s23, 6}};
	struct st_entry t[ST_NDTYPES * 4];
	char names[ST_NDTYPES * 4][32];
	unsigned char *bufs[ST_NDTYPES * 4];
	int n = 0;
	for (int d = 0; d < ST_NDTYPES; d++)
		for (int s = 0; s < 4; s++) {
			size_t bytes = (size_t)shapes[s].numel * st_dtype_size((enum st_dtype)d);
			bufs[n] = xmalloc(bytes + 1);
			for (size_t i = 0; i < bytes; i++)
				bufs[n][i] = (unsigned char)(i * 37 + (size_t)d * 11 + (size_t)s);
			snprintf(names[n], sizeof names[n], "t.%s.%d", st_dtype_name((enum st_dtype)d), s);
			t[n] = (struct st_entry){names[n], (enum st_dtype)d, shapes[s].ndim, shapes[s].shape,
			                         bufs[n]};
			n++;
		}
	const char *meta[6] = {"format", "pt", "quote\"back\\slash", "line\nfeed\ttab",
	                       "unicode", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac"};
	struct gpt_err e;
	const char *path = test_path(name);
	ck_assert_msg(st_write(path, flags, t, n, meta, 3, &e) == 0, "%s", e.msg);
	struct st_file f;
	ck_assert_msg(st_load(path, &f, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(f.n, n);
	ck_assert_int_eq(f.nmeta, 3);
	ck_assert_uint_eq(f.header_len % 8, 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_str_eq(f.meta_key[i], meta[2 * i]);
		ck_assert_str_eq(st_meta(&f, meta[2 * i]), meta[2 * i + 1]);
	}
	ck_assert_ptr_null(st_meta(&f, "missing"));
	for (int i = 0; i < n; i++) {
		const struct st_tensor *x = st_find(&f, names[i]);
		ck_assert_ptr_nonnull(x);
		ck_assert_ptr_eq(x, &f.t[i]); /* header order is the caller's */
		ck_assert_int_eq(x->dtype, t[i].dtype);
		ck_assert_int_eq(x->ndim, t[i].ndim);
		for (int k = 0; k < x->ndim; k++)
			ck_assert_int_eq(x->shape[k], t[i].shape[k]);
		size_t bytes = (size_t)(x->end - x->begin);
		ck_assert_uint_eq(bytes, x->numel * st_dtype_size(x->dtype));
		ck_assert_uint_eq(x->numel, (uint64_t)shapes[i % 4].numel);
		ck_assert_mem_eq(st_data(x), bufs[i], bytes);
		/* the data is aligned for its type in our own files */
		ck_assert_uint_eq((uintptr_t)st_data(x) % st_dtype_size(x->dtype), 0);
	}
	ck_assert_ptr_null(st_find(&f, "t.F32"));
	ck_assert_ptr_nonnull(st_f32(st_find(&f, "t.F32.3")));
	ck_assert_ptr_null(st_f32(st_find(&f, "t.BF16.3")));
	ck_assert_ptr_nonnull(st_bf16(st_find(&f, "t.BF16.3")));
	ck_assert_ptr_nonnull(st_i64(st_find(&f, "t.I64.2")));
	ck_assert_ptr_nonnull(st_u8(st_find(&f, "t.U8.2")));
	st_free(&f);
	for (int i = 0; i < n; i++)
		free(bufs[i]);
}

START_TEST(round_trip_plain)
{
	round_trip("all.safetensors", 0);
	size_t len;
	unsigned char *b = slurp(test_path("all.safetensors"), &len);
	ck_assert_int_ne(b[3], 0xFD); /* not compressed */
	/* the same image parses from memory */
	struct st_file f;
	struct gpt_err e;
	ck_assert_int_eq(st_parse(b, len, "mem", &f, &e), 0);
	ck_assert_int_eq(f.compressed, 0);
	st_free(&f);
	free(b);
}
END_TEST

START_TEST(round_trip_zstd)
{
	round_trip("all.safetensors.zst", 0);
	size_t len;
	unsigned char *b = slurp(test_path("all.safetensors.zst"), &len);
	ck_assert_uint_eq(is_zstd(b, len), 1);
	/* checksum on, content size pledged */
	unsigned long long cs = ZSTD_getFrameContentSize(b, len);
	ck_assert(cs != ZSTD_CONTENTSIZE_UNKNOWN && cs != ZSTD_CONTENTSIZE_ERROR);
	struct st_file f;
	struct gpt_err e;
	ck_assert_int_eq(st_parse(b, len, "mem.zst", &f, &e), 0);
	ck_assert_int_eq(f.compressed, 1);
	ck_assert_uint_eq(cs, 8 + f.header_len + f.data_len);
	st_free(&f);
	/* a compressed file is recognised by its magic whatever its name */
	spit(test_path("renamed.safetensors"), b, len);
	ck_assert_int_eq(st_load(test_path("renamed.safetensors"), &f, &e), 0);
	ck_assert_int_eq(f.compressed, 1);
	st_free(&f);
	/* ST_ZSTD compresses without the suffix; ST_PLAIN never does */
	round_trip("forced", ST_ZSTD);
	free(b);
	b = slurp(test_path("forced"), &len);
	ck_assert_uint_eq(is_zstd(b, len), 1);
	free(b);
	round_trip("plain.zst", ST_PLAIN);
	b = slurp(test_path("plain.zst"), &len);
	ck_assert_uint_eq(is_zstd(b, len), 0);
	free(b);
}
END_TEST

START_TEST(corrupt_zstd)
{
	round_trip("c.safetensors.zst", 0);
	size_t len;
	unsigned char *b = slurp(test_path("c.safetensors.zst"), &len);
	struct st_file f;
	struct gpt_err e;
	/* truncation anywhere in the compressed stream */
	for (size_t cut = 4; cut < len; cut += 1 + len / 40) {
		ck_assert_int_eq(st_parse(b, cut, "cut.zst", &f, &e), -1);
		ck_assert_msg(strstr(e.msg, "cut.zst: ") == e.msg, "%s", e.msg);
	}
	ck_assert_int_eq(st_parse(b, len - 1, "cut.zst", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "truncated") || strstr(e.msg, "zstd"), "%s", e.msg);
	/* a flipped bit in the checksum */
	b[len - 1] ^= 0x40;
	ck_assert_int_eq(st_parse(b, len, "sum.zst", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "sum.zst: zstd: ") != NULL, "%s", e.msg);
	b[len - 1] ^= 0x40;
	/* garbage after the frame */
	unsigned char *c = xmalloc(len + 5);
	memcpy(c, b, len);
	memcpy(c + len, "junk!", 5);
	ck_assert_int_eq(st_parse(c, len + 5, "junk.zst", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "junk.zst: zstd: ") != NULL, "%s", e.msg);
	free(c);
	free(b);
}
END_TEST

START_TEST(read_stdin)
{
	round_trip("in.safetensors", 0);
	ck_assert_ptr_nonnull(freopen(test_path("in.safetensors"), "rb", stdin));
	struct st_file f;
	struct gpt_err e;
	ck_assert_msg(st_load("-", &f, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(f.n, 4 * ST_NDTYPES);
	ck_assert_str_eq(f.path, "-");
	st_free(&f);
	/* a truncated stream on stdin names standard input */
	size_t len;
	unsigned char *b = slurp(test_path("in.safetensors"), &len);
	spit(test_path("in.cut"), b, len - 3);
	ck_assert_ptr_nonnull(freopen(test_path("in.cut"), "rb", stdin));
	ck_assert_int_eq(st_load("-", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "standard input: truncated: the data section has") == e.msg,
	              "%s", e.msg);
	free(b);
}
END_TEST

START_TEST(read_f32)
{
	float f32[4] = {0.5f, -1.25f, 3e-39f, INFINITY};
	uint16_t bf[4] = {0x3f80, 0xc020, 0x0001, 0x7f80}; /* 1, -2.5, 2^-133, inf */
	uint16_t hf[6] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555, 0x8400};
	int32_t i32[4] = {1, 2, 3, 4};
	int64_t s4[1] = {4}, s22[2] = {2, 2}, s6[1] = {6};
	struct st_entry t[4] = {{"f", ST_F32, 1, s4, f32},
	                        {"b", ST_BF16, 2, s22, bf},
	                        {"h", ST_F16, 1, s6, hf},
	                        {"i", ST_I32, 1, s4, i32}};
	struct gpt_err e;
	const char *path = test_path("conv.safetensors");
	ck_assert_int_eq(st_write(path, 0, t, 4, NULL, 0, &e), 0);
	struct st_file f;
	ck_assert_int_eq(st_load(path, &f, &e), 0);
	float out[6];
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "f"), 1, s4, out, &e), 0);
	ck_assert_mem_eq(out, f32, sizeof f32);
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "b"), 2, s22, out, &e), 0);
	ck_assert(out[0] == 1.0f && out[1] == -2.5f && out[2] == ldexpf(1, -133) && isinf(out[3]));
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "h"), 0, NULL, out, &e), 0);
	ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1, -24) && isinf(out[3]));
	ck_assert(out[4] == 0.333251953125f && out[5] == -ldexpf(1, -14));
	ck_assert_int_eq(st_f16_to_f32(0x03ff), ldexpf(1023, -24));
	ck_assert(isnan(st_f16_to_f32(0x7e00)));
	ck_assert(signbit(st_f16_to_f32(0x8000)) && st_f16_to_f32(0x8000) == 0);
	/* wrong shape, wrong rank, wrong dtype: named */
	int64_t s3[1] = {3};
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "f"), 1, s3, out, &e), -1);
	ck_assert_msg(strstr(e.msg, "conv.safetensors: tensor 'f' has shape [4], expected [3]"), "%s",
	              e.msg);
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "b"), 1, s4, out, &e), -1);
	ck_assert_msg(strstr(e.msg, "tensor 'b' has shape [2, 2], expected [4]"), "%s", e.msg);
	ck_assert_int_eq(st_read_f32(&f, st_find(&f, "i"), 1, s4, out, &e), -1);
	ck_assert_msg(strstr(e.msg, "tensor 'i' has dtype I32 (expected F32, BF16 or F16)"), "%s",
	              e.msg);
	st_free(&f);
}
END_TEST

/* a big tensor goes through the thread pool */
START_TEST(read_f32_large)
{
	size_t n = 300001;
	uint16_t *bf = xmalloc(n * 2);
	for (size_t i = 0; i < n; i++)
		bf[i] = f32_to_bf16((float)i);
	int64_t s[1] = {(int64_t)n};
	struct st_entry t = {"big", ST_BF16, 1, s, bf};
	struct gpt_err e;
	ck_assert_int_eq(st_write(test_path("big.safetensors"), 0, &t, 1, NULL, 0, &e), 0);
	struct st_file f;
	ck_assert_int_eq(st_load(test_path("big.safetensors"), &f, &e), 0);
	float *out = xmalloc(n * 4);
	ck_assert_int_eq(st_read_f32(&f, &f.t[0], 1, s, out, &e), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert(out[i] == round_bf16((float)i));
	free(out);
	free(bf);
	st_free(&f);
}
END_TEST

/* A tensor at an odd offset (legal in files written by others): the typed
 * view refuses it, st_read_f32 copies it correctly. */
START_TEST(unaligned_tensor)
{
	unsigned char data[9] = {7, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
	expect_good("{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	            "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}",
	            data, 9, 2);
	size_t len;
	unsigned char *b = image("{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	                         "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}",
	                         data, 9, &len);
	struct st_file f;
	struct gpt_err e;
	ck_assert_int_eq(st_parse(b, len, "odd", &f, &e), 0);
	const struct st_tensor *t = st_find(&f, "f");
	ck_assert_ptr_null(st_f32(t));
	float out[2];
	ck_assert_int_eq(st_read_f32(&f, t, 1, (int64_t[]){2}, out, &e), 0);
	ck_assert(out[0] == 1.0f && out[1] == 2.0f);
	ck_assert_uint_eq(*st_u8(st_find(&f, "u")), 7);
	st_free(&f);
	free(b);
}
END_TEST

/* Files the reference accepts: leading/trailing whitespace, any key order,
 * zero-size tensors anywhere, empty header object, metadata anywhere. */
START_TEST(accepted_variants)
{
	unsigned char d[16] = {0};
	expect_good("{}", NULL, 0, 0);
	expect_good("  {}\n\t ", NULL, 0, 0);
	expect_good("{\"__metadata__\":{}}", NULL, 0, 0);
	expect_good("{\"b\":{\"data_offsets\":[8,16],\"shape\":[2],\"dtype\":\"F32\"},"
	            "\"__metadata__\":{\"x\":\"y\"},"
	            "\"a\":{\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]}}",
	            d, 16, 2);
	expect_good("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
	            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	            "\"z\":{\"dtype\":\"I64\",\"shape\":[3,0,7],\"data_offsets\":[4,4]}}",
	            d, 4, 3);
	expect_good("{\"e\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[0,0]}}", NULL, 0, 1);
	expect_good("{\"\\u00e9\\n\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", d, 1, 1);
}
END_TEST

/* ------------------------------------------------------------------------
 * malformed files
 */
START_TEST(truncated_everywhere)
{
	/* a small file written by us; cut it at every offset of its header
	 * region and at several offsets of its data */
	float a[3] = {1, 2, 3};
	int64_t s3[1] = {3};
	struct st_entry t[2] = {{"a", ST_F32, 1, s3, a}, {"b", ST_F32, 1, s3, a}};
	const char *meta[2] = {"format", "pt"};
	struct gpt_err e;
	const char *path = test_path("small.safetensors");
	ck_assert_int_eq(st_write(path, 0, t, 2, meta, 1, &e), 0);
	size_t len;
	unsigned char *b = slurp(path, &len);
	size_t hend = 8 + (size_t)b[0];
	ck_assert_uint_eq(len, hend + 24);
	for (size_t cut = 0; cut < len; cut++) {
		struct st_file f;
		memset(&e, 0, sizeof e);
		ck_assert_int_eq(st_parse(b, cut, "cut.safetensors", &f, &e), -1);
		const char *want = cut == 0 ? "cut.safetensors: empty file"
		                   : cut < 8 ? "cut.safetensors: too short to be a safetensors file"
		                   : cut < hend ? "runs past the end of the file"
		                                : "truncated: the data section has";
		ck_assert_msg(strstr(e.msg, want) != NULL, "cut at %zu: wanted '%s' in '%s'", cut, want,
		              e.msg);
		/* the same through a stream of unknown size (zstd) */
		size_t cap = ZSTD_compressBound(cut);
		unsigned char *z = xmalloc(cap);
		size_t zn = ZSTD_compress(z, cap, b, cut, 1);
		ck_assert(!ZSTD_isError(zn));
		ck_assert_int_eq(st_parse(z, zn, "cut.zst", &f, &e), -1);
		want = cut == 0 ? "cut.zst: empty file"
		       : cut < 8 ? "cut.zst: too short"
		       : cut < hend ? "cut.zst: truncated in the header"
		                    : "cut.zst: truncated: the data section has";
		ck_assert_msg(strstr(e.msg, want) != NULL, "zstd cut at %zu: wanted '%s' in '%s'", cut,
		              want, e.msg);
		free(z);
	}
	/* and on disk (regular file: size known up front) */
	spit(test_path("cut2"), b, hend + 10);
	struct st_file f;
	ck_assert_int_eq(st_load(test_path("cut2"), &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "cut2: truncated: the data section has 10 bytes but the tensors "
	                            "need 24"), "%s", e.msg);
	free(b);
}
END_TEST

START_TEST(header_length)
{
	struct st_file f;
	struct gpt_err e;
	unsigned char b[32] = {0};
	memcpy(b + 8, "{}      ", 8);
	/* 2^63 */
	b[7] = 0x80;
	ck_assert_int_eq(st_parse(b, 16, "big.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "big.st: header length 9223372036854775808 exceeds the limit of "
	                            "100000000 bytes"), "%s", e.msg);
	/* 2^64 - 1 */
	memset(b, 0xff, 8);
	ck_assert_int_eq(st_parse(b, 16, "big.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "header length 18446744073709551615 exceeds"), "%s", e.msg);
	/* one past the limit */
	uint64_t n = 100000001;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(n >> (8 * i));
	ck_assert_int_eq(st_parse(b, 16, "big.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "exceeds the limit"), "%s", e.msg);
	/* at the limit but beyond the file */
	n = 100000000;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(n >> (8 * i));
	ck_assert_int_eq(st_parse(b, 16, "big.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "big.st: header length 100000000 runs past the end of the file "
	                            "(16 bytes)"), "%s", e.msg);
	/* 9 claimed, 8 there */
	memset(b, 0, 8);
	b[0] = 9;
	ck_assert_int_eq(st_parse(b, 16, "big.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "runs past the end"), "%s", e.msg);
	/* zero-length header: empty JSON */
	b[0] = 0;
	ck_assert_int_eq(st_parse(b, 8, "zero.st", &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "zero.st: header is not valid JSON"), "%s", e.msg);
}
END_TEST

START_TEST(bad_headers)
{
	unsigned char d[64] = {0};
#define E1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
	expect_bad("{\"a\":", d, 0, "header is not valid JSON (JSON: ");
	expect_bad("{\"a\":{}} x", d, 0, "header is not valid JSON");
	expect_bad("{'a':1}", d, 0, "header is not valid JSON");
	expect_bad("[1,2]", d, 0, "header is not a JSON object");
	expect_bad("\"str\"", d, 0, "header is not a JSON object");
	expect_bad("{\"a\":\"\xff\"}", d, 0, "header is not valid UTF-8 (byte 6 of the header)");
	expect_bad("{\"a\":\"\xc0\xaf\"}", d, 0, "not valid UTF-8"); /* overlong '/' */
	expect_bad("{\"a\":\"\xed\xa0\x80\"}", d, 0, "not valid UTF-8"); /* surrogate */
	expect_bad("{\"a\":\"\xe2\x82\"}", d, 0, "not valid UTF-8");     /* cut sequence */
	expect_bad("{\"a\":1}", d, 0, "tensor 'a': entry is not a JSON object");
	expect_bad("{" E1 "," E1 "}", d, 16, "key 'a' appears twice in the header");
	expect_bad("{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", d, 1,
	           "tensor 'a': unknown or unsupported dtype 'F4'");
	expect_bad("{\"a\":{\"dtype\":\"Q8_0\",\"shape\":[2],\"data_offsets\":[0,2]}}", d, 2,
	           "unknown or unsupported dtype 'Q8_0'");
	expect_bad("{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8,
	           "tensor 'a': dtype is not a string");
	expect_bad("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8,
	           "tensor 'a': field 'dtype' missing");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", d, 8,
	           "tensor 'a': field 'shape' missing");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", d, 8,
	           "tensor 'a': field 'data_offsets' missing");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", d, 8,
	           "tensor 'a': unexpected field 'x'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
	           d, 8, "tensor 'a': key 'dtype' appears twice");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", d, 8,
	           "tensor 'a': shape is not a list");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", d, 8,
	           "tensor 'a': shape must be a list of non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", d, 8,
	           "shape must be a list of non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", d, 8,
	           "shape must be a list of non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
	           "\"data_offsets\":[0,4]}}", d, 4, "tensor 'a': 17 dimensions (at most 16");
	/* size mismatch */
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", d, 4,
	           "tensor 'a': shape [2] of F32 needs 8 bytes but data_offsets [0, 4] hold 4");
	expect_bad("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", d, 16,
	           "shape [2, 3] of BF16 needs 12 bytes but data_offsets [0, 16] hold 16");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}", d, 0,
	           "shape [] of F32 needs 4 bytes");
	/* overflow: product of the shape, then the byte size */
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
	           d, 0, "tensor 'a': shape [4294967296, 4294967296] has too many elements (overflow)");
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],"
	           "\"data_offsets\":[0,0]}}", d, 0, "has too many elements (overflow)");
	expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}",
	           d, 0, "tensor 'a': shape [2305843009213693952] of F64 is too large (byte size "
	           "overflows)");
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}",
	           d, 0, "shape must be a list of non-negative integers");
	expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807],"
	           "\"data_offsets\":[0,9223372036854775807]}}",
	           d, 0, "truncated: the data section has 0 bytes but the tensors need "
	           "9223372036854775807");
	/* offsets */
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", d, 8,
	           "tensor 'a': data_offsets must be [begin, end]");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", d, 8,
	           "data_offsets must be [begin, end]");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", d, 8,
	           "data_offsets must be [begin, end]");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"0\":8}}}", d, 8,
	           "data_offsets must be [begin, end]");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
	           "\"data_offsets\":[0,9223372036854775808]}}", d, 8,
	           "data_offsets must be [begin, end]");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", d, 8,
	           "tensor 'a': data_offsets [8, 0] end before they begin");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12,
	           "tensors 'a' [0, 8) and 'b' [4, 12) overlap in the data section");
	expect_bad("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 16,
	           "overlap in the data section");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
	           "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", d, 16,
	           "tensors 'a' [0, 16) and 'z' [8, 8) overlap");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", d, 20,
	           "hole in the data section: bytes [8, 12) between tensors 'a' and 'b' belong to "
	           "no tensor");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12,
	           "hole in the data section: bytes [0, 4) belong to no tensor (the first, 'a', "
	           "starts at 4)");
	/* offsets beyond the data, data beyond the tensors */
	expect_bad("{" E1 "}", d, 4,
	           "truncated: the data section has 4 bytes but the tensors need 8");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1000,1008]}}", d, 8,
	           "hole in the data section");
	expect_bad("{" E1 "}", d, 12, "4 bytes after the last tensor");
	expect_bad("{}", d, 1, "1 bytes after the last tensor");
	/* metadata */
	expect_bad("{\"__metadata__\":{\"k\":1}," E1 "}", d, 8,
	           "__metadata__ value of 'k' is not a string");
	expect_bad("{\"__metadata__\":{\"k\":null}}", d, 0, "__metadata__ value of 'k' is not a string");
	expect_bad("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", d, 0, "value of 'k' is not a string");
	expect_bad("{\"__metadata__\":[\"k\"]}", d, 0, "__metadata__ is not a JSON object");
	expect_bad("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", d, 0,
	           "__metadata__ key 'k' appears twice");
	expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", d, 0,
	           "key '__metadata__' appears twice in the header");
	expect_bad("{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", d, 0,
	           "__metadata__ 'k' contains a NUL character");
	expect_bad("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", d, 0,
	           "contains a NUL character");
#undef E1
}
END_TEST

START_TEST(missing_file)
{
	struct st_file f;
	struct gpt_err e;
	ck_assert_int_eq(st_load(test_path("no-such.safetensors"), &f, &e), -1);
	ck_assert_msg(strstr(e.msg, "no-such.safetensors: No such file or directory"), "%s", e.msg);
	/* a directory */
	ck_assert_int_eq(st_load(test_tmpdir(), &f, &e), -1);
	ck_assert_msg(strstr(e.msg, test_tmpdir()) == e.msg, "%s", e.msg);
}
END_TEST

/* ------------------------------------------------------------------------
 * writer errors: nothing is created
 */
START_TEST(writer_rejects)
{
	float a[2] = {0};
	int64_t s2[1] = {2}, sneg[1] = {-1};
	char dir[600];
	snprintf(dir, sizeof dir, "%s/w", test_tmpdir());
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	char path[700];
	snprintf(path, sizeof path, "%s/out.safetensors", dir);
	struct gpt_err e;
	struct st_entry dup[2] = {{"x", ST_F32, 1, s2, a}, {"x", ST_F32, 1, s2, a}};
	ck_assert_int_eq(st_write(path, 0, dup, 2, NULL, 0, &e), -1);
	ck_assert_msg(strstr(e.msg, "tensor name 'x' given twice"), "%s", e.msg);
	struct st_entry md[1] = {{"__metadata__", ST_F32, 1, s2, a}};
	ck_assert_int_eq(st_write(path, 0, md, 1, NULL, 0, &e), -1);
	ck_assert_msg(strstr(e.msg, "'__metadata__' is not a valid tensor name"), "%s", e.msg);
	struct st_entry empty[1] = {{"", ST_F32, 1, s2, a}};
	ck_assert_int_eq(st_write(path, 0, empty, 1, NULL, 0, &e), -1);
	struct st_entry neg[1] = {{"n", ST_F32, 1, sneg, a}};
	ck_assert_int_eq(st_write(path, 0, neg, 1, NULL, 0, &e), -1);
	ck_assert_msg(strstr(e.msg, "tensor 'n': bad shape"), "%s", e.msg);
	const char *meta[4] = {"k", "v", "k", "w"};
	struct st_entry ok[1] = {{"x", ST_F32, 1, s2, a}};
	ck_assert_int_eq(st_write(path, 0, ok, 1, meta, 2, &e), -1);
	ck_assert_msg(strstr(e.msg, "metadata key 'k' given twice"), "%s", e.msg);
	const char *badutf[2] = {"k", "\xff"};
	ck_assert_int_eq(st_write(path, 0, ok, 1, badutf, 1, &e), -1);
	/* the streaming writer: too little data leaves nothing behind */
	struct st_writer w;
	ck_assert_int_eq(st_writer_begin(&w, path, 0, ok, 1, NULL, 0, &e), 0);
	ck_assert_int_eq(dir_entries(dir), 1); /* the temporary */
	st_writer_put(&w, a, 4);
	ck_assert_int_eq(st_writer_end(&w, &e), -1);
	ck_assert_msg(strstr(e.msg, "out.safetensors: 4 bytes of tensor data written, 8 announced"),
	              "%s", e.msg);
	ck_assert_int_eq(dir_entries(dir), 0);
	/* compressed, aborted */
	snprintf(path, sizeof path, "%s/out.safetensors.zst", dir);
	ck_assert_int_eq(st_writer_begin(&w, path, 0, ok, 1, NULL, 0, &e), 0);
	st_writer_put(&w, a, 8);
	st_writer_abort(&w);
	ck_assert_int_eq(dir_entries(dir), 0);
	/* in pieces: same bytes as all at once */
	ck_assert_int_eq(st_writer_begin(&w, path, 0, ok, 1, NULL, 0, &e), 0);
	st_writer_put(&w, a, 3);
	st_writer_put(&w, (char *)a + 3, 5);
	ck_assert_int_eq(st_writer_end(&w, &e), 0);
	ck_assert_int_eq(dir_entries(dir), 1);
}
END_TEST

Suite *safetensors_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("Format");
	tcase_add_test(tc, dtype_table);
	tcase_add_test(tc, golden_bytes);
	tcase_add_test(tc, round_trip_plain);
	tcase_add_test(tc, round_trip_zstd);
	tcase_add_test(tc, corrupt_zstd);
	tcase_add_test(tc, read_stdin);
	tcase_add_test(tc, read_f32);
	tcase_add_test(tc, read_f32_large);
	tcase_add_test(tc, unaligned_tensor);
	tcase_add_test(tc, accepted_variants);
	suite_add_tcase(s, tc);
	TCase *bad = tcase_create("Malformed");
	tcase_add_test(bad, truncated_everywhere);
	tcase_add_test(bad, header_length);
	tcase_add_test(bad, bad_headers);
	tcase_add_test(bad, missing_file);
	tcase_add_test(bad, writer_rejects);
	suite_add_tcase(s, bad);
	return s;
}

CHECK_MAIN(safetensors_suite)
