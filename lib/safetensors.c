/*
 * safetensors.c - safetensors reader and writer. See safetensors.h.
 *
 * Sections: dtypes; input sources (file, memory, zstd); header validation;
 * loading; lookups and conversion; writing.
 */
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "json.h"
#include "parallel.h"

/* ------------------------------------------------------------------------
 * Dtypes
 */
static const struct {
	const char *name;
	size_t size;
} dtypes[ST_NDTYPES] = {
	[ST_BOOL] = {"BOOL", 1},
	[ST_U8] = {"U8", 1},
	[ST_I8] = {"I8", 1},
	[ST_F8_E5M2] = {"F8_E5M2", 1},
	[ST_F8_E4M3] = {"F8_E4M3", 1},
	[ST_F8_E8M0] = {"F8_E8M0", 1},
	[ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 1},
	[ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 1},
	[ST_I16] = {"I16", 2},
	[ST_U16] = {"U16", 2},
	[ST_F16] = {"F16", 2},
	[ST_BF16] = {"BF16", 2},
	[ST_I32] = {"I32", 4},
	[ST_U32] = {"U32", 4},
	[ST_F32] = {"F32", 4},
	[ST_C64] = {"C64", 8},
	[ST_F64] = {"F64", 8},
	[ST_I64] = {"I64", 8},
	[ST_U64] = {"U64", 8},
};

const char *st_dtype_name(enum st_dtype d)
{
	return (unsigned)d < ST_NDTYPES ? dtypes[d].name : "?";
}

size_t st_dtype_size(enum st_dtype d) { return (unsigned)d < ST_NDTYPES ? dtypes[d].size : 0; }

int st_dtype_parse(const char *s, enum st_dtype *out)
{
	for (int i = 0; i < ST_NDTYPES; i++)
		if (!strcmp(s, dtypes[i].name)) {
			*out = (enum st_dtype)i;
			return 0;
		}
	return -1;
}

/* Error with the file name in front. */
static int ferr(struct gpt_err *e, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int ferr(struct gpt_err *e, const char *path, const char *fmt, ...)
{
	if (e) {
		char msg[448];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		gpt_errf(e, "%s: %s", strcmp(path, "-") ? path : "standard input", msg);
	}
	return -1;
}

/* Index of the first byte that is not valid UTF-8 (overlongs, surrogates
 * and code points beyond U+10FFFF included), or n if all is valid. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			k = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			k = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (k >= n - i)
			return i;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += k + 1;
	}
	return n;
}

/* ------------------------------------------------------------------------
 * Input sources: a FILE or a memory image, optionally through zstd.
 */
struct src {
	const char *path;
	FILE *fp;                 /* NULL for memory */
	const unsigned char *mem; /* memory image */
	size_t memlen, mempos;
	unsigned char peek[4];    /* first bytes, already read from fp */
	size_t npeek, peekpos;
	/* zstd */
	ZSTD_DCtx *z;
	unsigned char *zin;
	size_t zincap;
	ZSTD_inBuffer in;
	size_t last;              /* last ZSTD_decompressStream return */
	int eof;                  /* raw input exhausted */
	int64_t size;             /* total bytes of the (uncompressed) input, -1 unknown */
};

/* Read up to n raw bytes; 0 at end of input; -1 on a read error. */
static ssize_t raw_read(struct src *s, void *buf, size_t n, struct gpt_err *e)
{
	if (!s->fp) {
		size_t k = s->memlen - s->mempos < n ? s->memlen - s->mempos : n;
		memcpy(buf, s->mem + s->mempos, k);
		s->mempos += k;
		return (ssize_t)k;
	}
	size_t got = 0;
	while (s->peekpos < s->npeek && got < n)
		((unsigned char *)buf)[got++] = s->peek[s->peekpos++];
	if (got < n) {
		size_t k = fread((char *)buf + got, 1, n - got, s->fp);
		if (k < n - got && ferror(s->fp))
			return ferr(e, s->path, "read error: %s", strerror(errno));
		got += k;
	}
	return (ssize_t)got;
}

/* Read n bytes (fewer only at the end of the input). Returns the count, or
 * -1 on an error (a read error, a corrupt or truncated zstd stream). */
static ssize_t src_read(struct src *s, void *buf, size_t n, struct gpt_err *e)
{
	if (!s->z) {
		size_t got = 0;
		while (got < n) {
			ssize_t k = raw_read(s, (char *)buf + got, n - got, e);
			if (k < 0)
				return -1;
			if (k == 0)
				break;
			got += (size_t)k;
		}
		return (ssize_t)got;
	}
	ZSTD_outBuffer out = {buf, n, 0};
	while (out.pos < out.size) {
		if (s->in.pos == s->in.size && !s->eof) {
			ssize_t k = raw_read(s, s->zin, s->zincap, e);
			if (k < 0)
				return -1;
			if (k == 0)
				s->eof = 1;
			s->in.src = s->zin;
			s->in.size = (size_t)k;
			s->in.pos = 0;
		}
		size_t out0 = out.pos, in0 = s->in.pos;
		size_t r = ZSTD_decompressStream(s->z, &out, &s->in);
		if (ZSTD_isError(r))
			return ferr(e, s->path, "zstd: %s", ZSTD_getErrorName(r));
		if (out.pos == out0 && s->in.pos == in0) {
			/* no progress: the input is exhausted (at the end of a frame a
			 * further call returns the size of the next frame header, so
			 * keep the last real return value) */
			if (s->eof)
				break;
			if (s->in.pos < s->in.size)
				return ferr(e, s->path, "zstd: the decoder makes no progress");
			continue;
		}
		s->last = r;
	}
	if (out.pos < out.size && s->last != 0)
		return ferr(e, s->path, "truncated zstd stream (the last frame is incomplete)");
	return (ssize_t)out.pos;
}

static int src_open(struct src *s, const char *path, const void *mem, size_t memlen,
                    struct gpt_err *e)
{
	memset(s, 0, sizeof *s);
	s->path = path;
	s->size = -1;
	if (mem) {
		s->mem = mem;
		s->memlen = memlen;
	} else if (!strcmp(path, "-")) {
		s->fp = stdin;
	} else {
		s->fp = fopen(path, "rb");
		if (!s->fp)
			return ferr(e, path, "%s", strerror(errno));
	}
	if (s->fp) {
		struct stat st;
		if (fstat(fileno(s->fp), &st) == 0 && S_ISREG(st.st_mode) && s->fp != stdin)
			s->size = (int64_t)st.st_size;
		size_t k = fread(s->peek, 1, sizeof s->peek, s->fp);
		if (k < sizeof s->peek && ferror(s->fp))
			return ferr(e, path, "read error: %s", strerror(errno));
		s->npeek = k;
	} else {
		s->size = (int64_t)memlen;
		s->npeek = memlen < 4 ? memlen : 4;
		memcpy(s->peek, mem, s->npeek);
		s->peekpos = s->npeek; /* memory reads start at mempos 0 anyway */
	}
	uint32_t magic = 0;
	if (s->npeek == 4)
		magic = (uint32_t)s->peek[0] | (uint32_t)s->peek[1] << 8 | (uint32_t)s->peek[2] << 16 |
		        (uint32_t)s->peek[3] << 24;
	/* A zstd frame or a skippable frame. Neither value, read as the low half
	 * of a header length, is a valid safetensors file (both > 100 MB). */
	if (magic == ZSTD_MAGICNUMBER || (magic & 0xFFFFFFF0u) == ZSTD_MAGIC_SKIPPABLE_START) {
		s->z = ZSTD_createDCtx();
		if (!s->z)
			die(EXIT_RUNTIME, "out of memory (zstd context)");
		s->zincap = ZSTD_DStreamInSize();
		if (s->zincap < (1u << 20))
			s->zincap = 1u << 20;
		s->zin = xmalloc(s->zincap);
		s->size = -1;
	}
	return 0;
}

static void src_close(struct src *s)
{
	if (s->fp && s->fp != stdin)
		fclose(s->fp);
	if (s->z)
		ZSTD_freeDCtx(s->z);
	free(s->zin);
	memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------
 * Header validation
 */
static int cmp_keys(const void *a, const void *b, void *ctx)
{
	const struct json *j = ctx;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	size_t lx = j->keylens[x], ly = j->keylens[y];
	int c = memcmp(j->keys[x], j->keys[y], lx < ly ? lx : ly);
	if (c)
		return c;
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Name the first duplicated key of object j, or return NULL. */
static const char *dup_key(const struct json *j)
{
	if (j->n < 2)
		return NULL;
	size_t *ix = xmalloc(j->n * sizeof *ix);
	for (size_t i = 0; i < j->n; i++)
		ix[i] = i;
	qsort_r(ix, j->n, sizeof *ix, cmp_keys, (void *)j);
	const char *d = NULL;
	for (size_t i = 1; i < j->n && !d; i++)
		if (j->keylens[ix[i]] == j->keylens[ix[i - 1]] &&
		    !memcmp(j->keys[ix[i]], j->keys[ix[i - 1]], j->keylens[ix[i]]))
			d = j->keys[ix[i]];
	free(ix);
	return d;
}

struct span {
	uint64_t begin, end;
	int idx;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->idx - y->idx;
}

static int cmp_name(const void *a, const void *b, void *ctx)
{
	const struct st_file *f = ctx;
	return strcmp(f->t[*(const int *)a].name, f->t[*(const int *)b].name);
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim)
{
	size_t len = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && len < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, i ? ", " : "", shape[i]);
	if (len < cap)
		snprintf(buf + len, cap - len, "]");
}

/* One tensor entry of the header. */
static int parse_entry(const char *path, const char *name, const struct json *v, struct st_tensor *t,
                       struct gpt_err *e)
{
	if (v->type != JSON_OBJECT)
		return ferr(e, path, "tensor '%.200s': entry is not a JSON object", name);
	const char *dup = dup_key(v);
	if (dup)
		return ferr(e, path, "tensor '%.200s': key '%.100s' appears twice", name, dup);
	for (size_t i = 0; i < v->n; i++)
		if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") &&
		    strcmp(v->keys[i], "data_offsets"))
			return ferr(e, path, "tensor '%.200s': unexpected field '%.100s'", name, v->keys[i]);
	const struct json *dt = json_get(v, "dtype"), *sh = json_get(v, "shape"),
	                  *off = json_get(v, "data_offsets");
	if (!dt || !sh || !off)
		return ferr(e, path, "tensor '%.200s': field '%s' missing", name,
		            !dt ? "dtype" : !sh ? "shape" : "data_offsets");
	if (dt->type != JSON_STRING)
		return ferr(e, path, "tensor '%.200s': dtype is not a string", name);
	if (st_dtype_parse(dt->str, &t->dtype))
		return ferr(e, path, "tensor '%.200s': unknown or unsupported dtype '%.40s'", name,
		            dt->str);
	if (sh->type != JSON_ARRAY)
		return ferr(e, path, "tensor '%.200s': shape is not a list", name);
	if (sh->n > ST_MAX_DIMS)
		return ferr(e, path, "tensor '%.200s': %zu dimensions (at most %d supported)", name,
		            sh->n, ST_MAX_DIMS);
	t->ndim = (int)sh->n;
	uint64_t numel = 1;
	int overflow = 0;
	for (size_t i = 0; i < sh->n; i++) {
		int64_t d;
		if (json_int(&sh->items[i], 0, INT64_MAX, &d))
			return ferr(e, path,
			            "tensor '%.200s': shape must be a list of non-negative integers "
			            "(dimension %zu is not)", name, i);
		t->shape[i] = d;
		if (d && numel > UINT64_MAX / (uint64_t)d)
			overflow = 1;
		numel *= (uint64_t)d;
	}
	char sbuf[200];
	fmt_shape(sbuf, sizeof sbuf, t->shape, t->ndim);
	/* like the reference, an intermediate overflow is an error even if a
	 * later dimension is 0 */
	if (overflow)
		return ferr(e, path, "tensor '%.200s': shape %s has too many elements (overflow)", name,
		            sbuf);
	size_t es = st_dtype_size(t->dtype);
	if (numel > UINT64_MAX / es)
		return ferr(e, path, "tensor '%.200s': shape %s of %s is too large (byte size overflows)",
		            name, sbuf, st_dtype_name(t->dtype));
	t->numel = numel;
	int64_t b, en;
	if (off->type != JSON_ARRAY || off->n != 2 || json_int(&off->items[0], 0, INT64_MAX, &b) ||
	    json_int(&off->items[1], 0, INT64_MAX, &en))
		return ferr(e, path,
		            "tensor '%.200s': data_offsets must be [begin, end], two non-negative "
		            "integers below 2^63", name);
	if (en < b)
		return ferr(e, path, "tensor '%.200s': data_offsets [%" PRId64 ", %" PRId64 "] end before "
		            "they begin", name, b, en);
	t->begin = (uint64_t)b;
	t->end = (uint64_t)en;
	if (t->end - t->begin != numel * es)
		return ferr(e, path,
		            "tensor '%.200s': shape %s of %s needs %" PRIu64 " bytes but data_offsets "
		            "[%" PRIu64 ", %" PRIu64 "] hold %" PRIu64, name, sbuf,
		            st_dtype_name(t->dtype), numel * es, t->begin, t->end, t->end - t->begin);
	return 0;
}

/* Parse and validate header text hdr[0..n); fills f's tensors and metadata
 * (no data yet) and sets f->data_len to the size the tensors need. */
static int parse_header(struct st_file *f, const char *path, const char *hdr, size_t n,
                        struct gpt_err *e)
{
	size_t bad = utf8_bad((const unsigned char *)hdr, n);
	if (bad < n)
		return ferr(e, path, "header is not valid UTF-8 (byte %zu of the header)", bad);
	struct gpt_err je;
	struct json *root = json_parse(hdr, n, &je);
	if (!root)
		return ferr(e, path, "header is not valid JSON (%s of the header)", je.msg);
	int rc = -1;
	struct span *sp = NULL;
	if (root->type != JSON_OBJECT) {
		ferr(e, path, "header is not a JSON object");
		goto out;
	}
	const char *dup = dup_key(root);
	if (dup) {
		ferr(e, path, "key '%.200s' appears twice in the header", dup);
		goto out;
	}
	for (size_t i = 0; i < root->n; i++)
		if (strlen(root->keys[i]) != root->keylens[i]) {
			ferr(e, path, "a tensor name in the header contains a NUL character");
			goto out;
		}
	f->t = xcalloc(root->n ? root->n : 1, sizeof *f->t);
	for (size_t i = 0; i < root->n; i++) {
		const struct json *v = &root->items[i];
		if (!strcmp(root->keys[i], "__metadata__")) {
			if (v->type != JSON_OBJECT) {
				ferr(e, path, "__metadata__ is not a JSON object");
				goto out;
			}
			const char *d = dup_key(v);
			if (d) {
				ferr(e, path, "__metadata__ key '%.200s' appears twice", d);
				goto out;
			}
			f->meta_key = xcalloc(v->n ? v->n : 1, sizeof *f->meta_key);
			f->meta_val = xcalloc(v->n ? v->n : 1, sizeof *f->meta_val);
			for (size_t k = 0; k < v->n; k++) {
				if (v->items[k].type != JSON_STRING) {
					ferr(e, path, "__metadata__ value of '%.200s' is not a string",
					     v->keys[k]);
					goto out;
				}
				if (strlen(v->keys[k]) != v->keylens[k] ||
				    strlen(v->items[k].str) != v->items[k].len) {
					ferr(e, path, "__metadata__ '%.200s' contains a NUL character",
					     v->keys[k]);
					goto out;
				}
				f->meta_key[f->nmeta] = xstrdup(v->keys[k]);
				f->meta_val[f->nmeta] = xstrdup(v->items[k].str);
				f->nmeta++;
			}
			continue;
		}
		struct st_tensor *t = &f->t[f->n];
		if (parse_entry(path, root->keys[i], v, t, e))
			goto out;
		t->name = xstrdup(root->keys[i]);
		f->n++;
	}
	/* the tensors must tile [0, data_len) */
	sp = xmalloc((size_t)(f->n ? f->n : 1) * sizeof *sp);
	for (int i = 0; i < f->n; i++)
		sp[i] = (struct span){f->t[i].begin, f->t[i].end, i};
	qsort(sp, (size_t)f->n, sizeof *sp, cmp_span);
	uint64_t pos = 0;
	for (int i = 0; i < f->n; i++) {
		const struct st_tensor *t = &f->t[sp[i].idx];
		if (sp[i].begin > pos) {
			if (i == 0)
				ferr(e, path, "hole in the data section: bytes [0, %" PRIu64 ") belong to no "
				     "tensor (the first, '%.200s', starts at %" PRIu64 ")", sp[i].begin,
				     t->name, sp[i].begin);
			else
				ferr(e, path, "hole in the data section: bytes [%" PRIu64 ", %" PRIu64 ") "
				     "between tensors '%.150s' and '%.150s' belong to no tensor", pos,
				     sp[i].begin, f->t[sp[i - 1].idx].name, t->name);
			goto out;
		}
		if (sp[i].begin < pos) {
			const struct st_tensor *p = &f->t[sp[i - 1].idx];
			ferr(e, path, "tensors '%.150s' [%" PRIu64 ", %" PRIu64 ") and '%.150s' [%" PRIu64
			     ", %" PRIu64 ") overlap in the data section", p->name, p->begin, p->end,
			     t->name, t->begin, t->end);
			goto out;
		}
		pos = sp[i].end;
	}
	f->data_len = pos;
	rc = 0;
out:
	free(sp);
	json_free(root);
	return rc;
}

/* ------------------------------------------------------------------------
 * Loading
 */
static uint64_t le64(const unsigned char *b)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

static int build_index(struct st_file *f)
{
	f->by_name = xmalloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
	for (int i = 0; i < f->n; i++)
		f->by_name[i] = i;
	qsort_r(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_name, f);
	return 0;
}

static int load_src(struct src *s, const char *path, struct st_file *f, struct gpt_err *e)
{
	unsigned char lenbuf[8];
	char *hdr = NULL;
	ssize_t k = src_read(s, lenbuf, 8, e);
	if (k < 0)
		return -1;
	if (k == 0)
		return ferr(e, path, "empty file (not a safetensors file)");
	if (k < 8)
		return ferr(e, path, "too short to be a safetensors file (%zd bytes; the header length "
		            "alone takes 8)", k);
	uint64_t n = le64(lenbuf);
	f->compressed = s->z != NULL;
	f->header_len = n;
	if (n > ST_MAX_HEADER)
		return ferr(e, path, "header length %" PRIu64 " exceeds the limit of %llu bytes (not a "
		            "safetensors file?)", n, ST_MAX_HEADER);
	if (s->size >= 0 && n > (uint64_t)s->size - 8)
		return ferr(e, path, "header length %" PRIu64 " runs past the end of the file (%" PRId64
		            " bytes)", n, s->size);
	/* read the header in growing pieces, so that a lying length on a stream
	 * costs no more memory than the bytes that are really there */
	size_t got = 0, cap = 0;
	while (got < n) {
		size_t want = n - got < (1u << 20) ? n - got : (1u << 20);
		if (got + want > cap) {
			cap = got + want > 2 * cap ? got + want : 2 * cap;
			if (cap > n)
				cap = n;
			hdr = xrealloc(hdr, cap);
		}
		k = src_read(s, hdr + got, want, e);
		if (k < 0)
			goto fail;
		got += (size_t)k;
		if ((size_t)k < want) {
			ferr(e, path, "truncated in the header: %" PRIu64 " header bytes announced, %zu "
			     "present", n, got);
			goto fail;
		}
	}
	if (parse_header(f, path, hdr ? hdr : "", n, e))
		goto fail;
	free(hdr);
	hdr = NULL;
	uint64_t need = f->data_len;
	if (s->size >= 0) {
		uint64_t have = (uint64_t)s->size - 8 - n;
		if (have < need)
			return ferr(e, path, "truncated: the data section has %" PRIu64 " bytes but the "
			            "tensors need %" PRIu64 " (the last ends beyond the file)", have, need);
		if (have > need)
			return ferr(e, path, "%" PRIu64 " bytes after the last tensor (the tensors must "
			            "cover the data section exactly)", have - need);
	}
	/* data: grow towards need so that a truncated stream fails cleanly */
	size_t dcap = need < (64u << 20) || s->size >= 0 ? need : (64u << 20);
	f->data = xmalloc(dcap ? dcap : 1);
	uint64_t dgot = 0;
	while (dgot < need) {
		if (dgot == dcap) {
			dcap = 2 * dcap < need ? 2 * dcap : need;
			f->data = xrealloc(f->data, dcap);
		}
		size_t want = (size_t)(dcap - dgot);
		k = src_read(s, (char *)f->data + dgot, want, e);
		if (k < 0)
			return -1;
		dgot += (uint64_t)k;
		if ((size_t)k < want)
			return ferr(e, path, "truncated: the data section has %" PRIu64 " bytes but the "
			            "tensors need %" PRIu64, dgot, need);
	}
	/* nothing may follow (this also finishes a zstd frame and its checksum) */
	char extra[1 << 14];
	uint64_t more = 0;
	while ((k = src_read(s, extra, sizeof extra, e)) > 0)
		more += (uint64_t)k;
	if (k < 0)
		return -1;
	if (more)
		return ferr(e, path, "%" PRIu64 " bytes after the last tensor (the tensors must cover "
		            "the data section exactly)", more);
	for (int i = 0; i < f->n; i++)
		f->t[i].data = (const char *)f->data + f->t[i].begin;
	build_index(f);
	return 0;
fail:
	free(hdr);
	return -1;
}

static int load_common(const char *path, const void *mem, size_t len, struct st_file *f,
                       struct gpt_err *e)
{
	memset(f, 0, sizeof *f);
	struct src s;
	int rc = src_open(&s, path, mem, len, e);
	if (rc == 0)
		rc = load_src(&s, path, f, e);
	src_close(&s);
	if (rc) {
		st_free(f);
		return -1;
	}
	f->path = xstrdup(path);
	return 0;
}

int st_load(const char *path, struct st_file *f, struct gpt_err *e)
{
	return load_common(path, NULL, 0, f, e);
}

int st_parse(const void *buf, size_t len, const char *name, struct st_file *f,
             struct gpt_err *e)
{
	return load_common(name, buf ? buf : "", len, f, e);
}

void st_free(struct st_file *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->t[i].name);
	free(f->t);
	for (int i = 0; i < f->nmeta; i++) {
		free(f->meta_key[i]);
		free(f->meta_val[i]);
	}
	free(f->meta_key);
	free(f->meta_val);
	free(f->data);
	free(f->by_name);
	free(f->path);
	memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------
 * Lookups and conversion
 */
const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
	int lo = 0, hi = f->n - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		const struct st_tensor *t = &f->t[f->by_name[mid]];
		int c = strcmp(t->name, name);
		if (!c)
			return t;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

const char *st_meta(const struct st_file *f, const char *key)
{
	for (int i = 0; i < f->nmeta; i++)
		if (!strcmp(f->meta_key[i], key))
			return f->meta_val[i];
	return NULL;
}

static const void *typed(const struct st_tensor *t, enum st_dtype d)
{
	if (t->dtype != d || ((uintptr_t)t->data % st_dtype_size(d)))
		return NULL;
	return t->data;
}
const float *st_f32(const struct st_tensor *t) { return typed(t, ST_F32); }
const double *st_f64(const struct st_tensor *t) { return typed(t, ST_F64); }
const uint16_t *st_bf16(const struct st_tensor *t) { return typed(t, ST_BF16); }
const uint16_t *st_f16(const struct st_tensor *t) { return typed(t, ST_F16); }
const int64_t *st_i64(const struct st_tensor *t) { return typed(t, ST_I64); }
const int32_t *st_i32(const struct st_tensor *t) { return typed(t, ST_I32); }
const uint8_t *st_u8(const struct st_tensor *t) { return typed(t, ST_U8); }

float st_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
	if (exp == 0x1F) {
		bits = sign | 0x7F800000u | (man << 13); /* inf, NaN (payload kept) */
	} else if (exp) {
		bits = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man) { /* subnormal: normalise */
		int shift = 0;
		while (!(man & 0x400)) {
			man <<= 1;
			shift++;
		}
		bits = sign | ((uint32_t)(113 - shift) << 23) | ((man & 0x3FF) << 13);
	} else {
		bits = sign;
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

struct conv {
	const unsigned char *src;
	float *dst;
	enum st_dtype dt;
};

static void conv_range(void *ctx, size_t b, size_t en, int tid)
{
	const struct conv *c = ctx;
	if (c->dt == ST_F32) {
		memcpy(c->dst + b, c->src + 4 * b, 4 * (en - b));
		return;
	}
	for (size_t i = b; i < en; i++) {
		uint16_t h;
		memcpy(&h, c->src + 2 * i, 2);
		c->dst[i] = c->dt == ST_BF16 ? bf16_to_f32(h) : st_f16_to_f32(h);
	}
}

int st_read_f32(const struct st_file *f, const struct st_tensor *t, int ndim,
                const int64_t *shape, float *dst, struct gpt_err *e)
{
	const char *path = f->path ? f->path : "-";
	if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
		return ferr(e, path, "tensor '%.200s' has dtype %s (expected F32, BF16 or F16)", t->name,
		            st_dtype_name(t->dtype));
	if (shape) {
		int same = t->ndim == ndim;
		for (int i = 0; same && i < ndim; i++)
			same = t->shape[i] == shape[i];
		if (!same) {
			char a[200], b[200];
			fmt_shape(a, sizeof a, t->shape, t->ndim);
			fmt_shape(b, sizeof b, shape, ndim);
			return ferr(e, path, "tensor '%.200s' has shape %s, expected %s", t->name, a, b);
		}
	}
	struct conv c = {t->data, dst, t->dtype};
	if (t->numel < (1u << 16))
		conv_range(&c, 0, (size_t)t->numel, 0);
	else
		parallel_for((size_t)t->numel, conv_range, &c);
	return 0;
}

/* ------------------------------------------------------------------------
 * Writing
 */
static void buf_put(char **b, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void buf_put(char **b, size_t *len, size_t *cap, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(*b + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if ((size_t)k < *cap - *len) {
			*len += (size_t)k;
			return;
		}
		*cap = 2 * *cap + (size_t)k;
		*b = xrealloc(*b, *cap);
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int bad_text(const char *s)
{
	size_t n = strlen(s);
	return utf8_bad((const unsigned char *)s, n) < n;
}

char *st_header(const struct st_entry *t, int n, const char *const *meta, int nmeta, size_t *len,
                uint64_t *data_len, struct gpt_err *e)
{
	if (n < 0 || nmeta < 0) {
		gpt_errf(e, "safetensors: negative tensor or metadata count");
		return NULL;
	}
	for (int i = 0; i < nmeta; i++) {
		const char *k = meta[2 * i], *v = meta[2 * i + 1];
		if (!k || !v || bad_text(k) || bad_text(v)) {
			gpt_errf(e, "safetensors: metadata pair %d is missing or not UTF-8", i);
			return NULL;
		}
		for (int j = 0; j < i; j++)
			if (!strcmp(meta[2 * j], k)) {
				gpt_errf(e, "safetensors: metadata key '%.200s' given twice", k);
				return NULL;
			}
	}
	/* unique names: sort a copy of the pointers */
	const char **names = xmalloc((size_t)(n ? n : 1) * sizeof *names);
	for (int i = 0; i < n; i++) {
		names[i] = t[i].name;
		if (!t[i].name || !*t[i].name || bad_text(t[i].name)) {
			gpt_errf(e, "safetensors: tensor %d has an empty or non-UTF-8 name", i);
			goto fail;
		}
		if (!strcmp(t[i].name, "__metadata__")) {
			gpt_errf(e, "safetensors: '__metadata__' is not a valid tensor name");
			goto fail;
		}
		if ((unsigned)t[i].dtype >= ST_NDTYPES) {
			gpt_errf(e, "safetensors: tensor '%.200s': bad dtype %d", t[i].name, (int)t[i].dtype);
			goto fail;
		}
		if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS || (t[i].ndim && !t[i].shape)) {
			gpt_errf(e, "safetensors: tensor '%.200s': bad number of dimensions %d", t[i].name,
			         t[i].ndim);
			goto fail;
		}
	}
	qsort(names, (size_t)n, sizeof *names, cmp_str);
	for (int i = 1; i < n; i++)
		if (!strcmp(names[i], names[i - 1])) {
			gpt_errf(e, "safetensors: tensor name '%.200s' given twice", names[i]);
			goto fail;
		}
	size_t cap = 256 + (size_t)n * 96, hl = 0;
	char *h = xmalloc(cap);
	h[0] = 0;
	buf_put(&h, &hl, &cap, "{");
	if (nmeta) {
		buf_put(&h, &hl, &cap, "\"__metadata__\":{");
		for (int i = 0; i < nmeta; i++) {
			if (i)
				buf_put(&h, &hl, &cap, ",");
			json_buf_string(&h, &hl, &cap, meta[2 * i], strlen(meta[2 * i]));
			buf_put(&h, &hl, &cap, ":");
			json_buf_string(&h, &hl, &cap, meta[2 * i + 1], strlen(meta[2 * i + 1]));
		}
		buf_put(&h, &hl, &cap, "}");
	}
	uint64_t off = 0;
	for (int i = 0; i < n; i++) {
		uint64_t numel = 1;
		for (int d = 0; d < t[i].ndim; d++) {
			int64_t s = t[i].shape[d];
			if (s < 0 || (s && numel > UINT64_MAX / (uint64_t)s)) {
				gpt_errf(e, "safetensors: tensor '%.200s': bad shape", t[i].name);
				free(h);
				goto fail;
			}
			numel *= (uint64_t)s;
		}
		uint64_t bytes = numel * st_dtype_size(t[i].dtype);
		if (numel > INT64_MAX / 8 || off > INT64_MAX - bytes) {
			gpt_errf(e, "safetensors: tensor '%.200s' is too large", t[i].name);
			free(h);
			goto fail;
		}
		if (nmeta || i)
			buf_put(&h, &hl, &cap, ",");
		json_buf_string(&h, &hl, &cap, t[i].name, strlen(t[i].name));
		buf_put(&h, &hl, &cap, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t[i].dtype));
		for (int d = 0; d < t[i].ndim; d++)
			buf_put(&h, &hl, &cap, "%s%" PRId64, d ? "," : "", t[i].shape[d]);
		buf_put(&h, &hl, &cap, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + bytes);
		off += bytes;
	}
	buf_put(&h, &hl, &cap, "}");
	while (hl % 8)
		buf_put(&h, &hl, &cap, " ");
	if (hl > ST_MAX_HEADER) {
		gpt_errf(e, "safetensors: header of %zu bytes exceeds the %llu-byte limit", hl,
		         ST_MAX_HEADER);
		free(h);
		goto fail;
	}
	free(names);
	*len = hl;
	*data_len = off;
	return h;
fail:
	free(names);
	return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static const char *out_name(const struct st_writer *w)
{
	return w->out.path && strcmp(w->out.path, "-") ? w->out.path : "standard output";
}

static void raw_put(struct st_writer *w, const void *buf, size_t len, ZSTD_EndDirective mode)
{
	if (!w->zc) {
		aout_write(&w->out, buf, len);
		return;
	}
	ZSTD_inBuffer in = {buf, len, 0};
	for (;;) {
		ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
		size_t r = ZSTD_compressStream2(w->zc, &out, &in, mode);
		if (ZSTD_isError(r)) {
			char name[512];
			snprintf(name, sizeof name, "%s", out_name(w));
			st_writer_abort(w);
			die(EXIT_RUNTIME, "%s: zstd: %s", name, ZSTD_getErrorName(r));
		}
		aout_write(&w->out, w->zbuf, out.pos);
		if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
			break;
	}
}

int st_writer_begin(struct st_writer *w, const char *path, int flags, const struct st_entry *t,
                    int n, const char *const *meta, int nmeta, struct gpt_err *e)
{
	memset(w, 0, sizeof *w);
	w->out.slot = -1;
	size_t hl;
	uint64_t dl;
	char *h = st_header(t, n, meta, nmeta, &hl, &dl, e);
	if (!h)
		return -1;
	int zst = !(flags & ST_PLAIN) && ((flags & ST_ZSTD) || ends_with(path, ".zst"));
	aout_open(&w->out, path, AOUT_BINARY | (flags & ST_FORCE ? AOUT_FORCE : 0));
	if (zst) {
		ZSTD_CCtx *z = ZSTD_createCCtx();
		if (!z)
			die(EXIT_RUNTIME, "out of memory (zstd context)");
		ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, 3);
		ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
		int threads = parallel_threads();
		/* an error here means libzstd was built without threads: keep one */
		if (threads > 1)
			ZSTD_CCtx_setParameter(z, ZSTD_c_nbWorkers, threads);
		ZSTD_CCtx_setPledgedSrcSize(z, 8 + hl + dl);
		w->zc = z;
		w->zcap = ZSTD_CStreamOutSize();
		if (w->zcap < (1u << 20))
			w->zcap = 1u << 20;
		w->zbuf = xmalloc(w->zcap);
	}
	unsigned char lenbuf[8];
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
	raw_put(w, lenbuf, 8, ZSTD_e_continue);
	raw_put(w, h, hl, ZSTD_e_continue);
	free(h);
	w->expect = dl;
	w->done = 0;
	return 0;
}

void st_writer_put(struct st_writer *w, const void *buf, size_t len)
{
	if (len > w->expect - w->done) {
		st_writer_abort(w);
		die(EXIT_RUNTIME, "internal error: more tensor data than the safetensors header "
		                  "announced");
	}
	raw_put(w, buf, len, ZSTD_e_continue);
	w->done += len;
}

static void free_z(struct st_writer *w)
{
	if (w->zc)
		ZSTD_freeCCtx(w->zc);
	free(w->zbuf);
	w->zc = NULL;
	w->zbuf = NULL;
}

int st_writer_end(struct st_writer *w, struct gpt_err *e)
{
	if (w->done != w->expect) {
		char name[512];
		snprintf(name, sizeof name, "%s", out_name(w));
		uint64_t d = w->done, x = w->expect;
		st_writer_abort(w);
		return gpt_errf(e, "%s: %" PRIu64 " bytes of tensor data written, %" PRIu64
		                " announced", name, d, x);
	}
	if (w->zc)
		raw_put(w, "", 0, ZSTD_e_end);
	free_z(w);
	aout_commit(&w->out);
	return 0;
}

void st_writer_abort(struct st_writer *w)
{
	free_z(w);
	if (w->out.fp || w->out.tmp || w->out.path)
		aout_abort(&w->out);
}

int st_write(const char *path, int flags, const struct st_entry *t, int n,
             const char *const *meta, int nmeta, struct gpt_err *e)
{
	struct st_writer w;
	if (st_writer_begin(&w, path, flags, t, n, meta, nmeta, e))
		return -1;
	for (int i = 0; i < n; i++) {
		uint64_t numel = 1;
		for (int d = 0; d < t[i].ndim; d++)
			numel *= (uint64_t)t[i].shape[d];
		size_t bytes = (size_t)(numel * st_dtype_size(t[i].dtype));
		if (bytes && !t[i].data) {
			st_writer_abort(&w);
			return gpt_errf(e, "safetensors: tensor '%.200s' has no data", t[i].name);
		}
		st_writer_put(&w, t[i].data, bytes);
	}
	return st_writer_end(&w, e);
}
