/*
 * shard.c - token shards: streaming reader, whole-file loader, writer.
 * See shard.h and man/gpt-shard.5.
 *
 * Reader layers:
 *   input   the file, read in IO_CAP chunks (never seeking);
 *   zstd    leading skippable frames parsed here (the metadata), the rest
 *           (frames, later skippable frames) decoded by one ZSTD_DStream;
 *   decoded a byte buffer holding what the header and token decoders have
 *           not consumed yet (raw input goes straight into it).
 */
#include "shard.h"

#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#define IO_CAP (1u << 20)    /* input and decoded buffers */
#define META_MAX 4096        /* larger skippable frames are skipped unread */
#define WINDOW_LOG_MAX 30    /* accept zstd windows up to 1 GiB (--long=30) */

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

/* ======================================================================
 * Reader
 */
struct shard_reader {
	FILE *fp;
	int own_fp;
	char *name;
	struct shard_info info;
	uint32_t vocab;
	int state;           /* 0 reading, 1 verified end, -1 failed */
	struct gpt_err err;  /* the failure, repeated by later calls */
	uint64_t left, done; /* tokens still to deliver, delivered */
	int64_t meta_tokens; /* from the metadata frame, -1 if absent */

	/* input (zstd only) */
	unsigned char *in;
	size_t in_pos, in_size;
	int in_eof;
	ZSTD_DStream *zd;
	size_t zret;             /* last ZSTD_decompressStream result; 0 = frame boundary */
	int frames;              /* complete frames decoded */
	uint64_t since_boundary; /* input bytes consumed since the last frame end */

	/* decoded bytes not consumed yet */
	unsigned char *out;
	size_t out_lo, out_hi;
	int out_eof; /* the decoded stream has ended (and was verified) */
};

static int rerr(struct shard_reader *r, struct gpt_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int rerr(struct shard_reader *r, struct gpt_err *e, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(r->err.msg, sizeof r->err.msg, "%s: %s", r->name, msg);
	r->state = -1;
	if (e)
		*e = r->err;
	return -1;
}

/* Move the unread input to the front and read more. Returns the number of
 * bytes read (0 at end of file), -1 on error. */
static ssize_t read_in(struct shard_reader *r, struct gpt_err *e)
{
	size_t keep = r->in_size - r->in_pos;
	memmove(r->in, r->in + r->in_pos, keep);
	r->in_pos = 0;
	r->in_size = keep;
	if (r->in_eof)
		return 0;
	size_t got = fread(r->in + keep, 1, IO_CAP - keep, r->fp);
	if (got == 0) {
		if (ferror(r->fp))
			return rerr(r, e, "read error: %s", strerror(errno));
		r->in_eof = 1;
	}
	r->in_size += got;
	return (ssize_t)got;
}

/* Make at least k input bytes available unless the file ends first. */
static int need_in(struct shard_reader *r, size_t k, struct gpt_err *e)
{
	while (r->in_size - r->in_pos < k && !r->in_eof)
		if (read_in(r, e) < 0)
			return -1;
	return 0;
}

/* ---------------------------------------------------------------------
 * Metadata: a JSON object of string and integer values (lib/json). Unknown
 * keys are ignored; a payload that is not our format is ignored.
 */
struct meta {
	char format[32];
	int64_t tokens, docs, bytes;
};

/* 0 parsed, -1 not a JSON object whose known keys have the right types
 * ("format" a string; "tokens", "docs", "bytes" non-negative integers). */
static int meta_parse(const char *p, size_t len, struct meta *m)
{
	memset(m, 0, sizeof *m);
	m->tokens = m->docs = m->bytes = -1;
	struct json *j = json_parse(p, len, NULL);
	int rc = -1;
	if (!j || j->type != JSON_OBJECT)
		goto out;
	const struct json *f = json_get(j, "format");
	if (f) {
		if (f->type != JSON_STRING)
			goto out;
		snprintf(m->format, sizeof m->format, "%s", f->str);
	}
	struct {
		const char *key;
		int64_t *dst;
	} ints[] = {{"tokens", &m->tokens}, {"docs", &m->docs}, {"bytes", &m->bytes}};
	for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
		const struct json *v = json_get(j, ints[i].key);
		if (v && json_int(v, 0, INT64_MAX, ints[i].dst))
			goto out;
	}
	rc = 0;
out:
	json_free(j);
	return rc;
}

/* Parse (or skip) the skippable frames before the first zstd frame. */
static int read_leading_frames(struct shard_reader *r, struct gpt_err *e)
{
	for (;;) {
		if (need_in(r, 8, e) < 0)
			return -1;
		size_t avail = r->in_size - r->in_pos;
		if (avail < 4)
			break;
		uint32_t magic = le32(r->in + r->in_pos);
		if ((magic & 0xFFFFFFF0u) != ZSTD_MAGIC_SKIPPABLE_START)
			break;
		if (avail < 8)
			return rerr(r, e, "truncated skippable frame header");
		uint32_t len = le32(r->in + r->in_pos + 4);
		r->in_pos += 8;
		if (magic == SHARD_META_MAGIC && len <= META_MAX) {
			if (need_in(r, len, e) < 0)
				return -1;
			if (r->in_size - r->in_pos < len)
				return rerr(r, e, "truncated metadata frame");
			const char *p = (const char *)r->in + r->in_pos;
			struct meta m;
			int bad = meta_parse(p, len, &m);
			int ours = !bad && !strcmp(m.format, "gpt-shard/1");
			if (bad && len >= 21 && !memcmp(p, "{\"format\":\"gpt-shard/", 21))
				return rerr(r, e, "malformed metadata frame");
			if (ours) {
				r->meta_tokens = m.tokens;
				r->info.docs = m.docs;
				r->info.bytes = m.bytes;
			}
			r->in_pos += len;
			continue;
		}
		while (len) { /* not ours: skip it */
			if (r->in_pos == r->in_size) {
				ssize_t got = read_in(r, e);
				if (got < 0)
					return -1;
				if (got == 0)
					return rerr(r, e, "truncated skippable frame");
			}
			size_t take = r->in_size - r->in_pos;
			if (take > len)
				take = len;
			r->in_pos += take;
			len -= (uint32_t)take;
		}
	}
	if (r->in_pos == r->in_size && r->in_eof)
		return rerr(r, e, "truncated: no zstd frame after the skippable frame(s)");
	return 0;
}

/* More decoded bytes. Keeps the unconsumed tail (a partial token), then
 * returns 1 if bytes were added, 0 at the verified end of the decoded
 * stream, -1 on error. */
static int fill_out(struct shard_reader *r, struct gpt_err *e)
{
	size_t keep = r->out_hi - r->out_lo;
	memmove(r->out, r->out + r->out_lo, keep);
	r->out_lo = 0;
	r->out_hi = keep;
	if (r->out_eof)
		return 0;
	if (!r->zd) {
		size_t got = fread(r->out + keep, 1, IO_CAP - keep, r->fp);
		if (got == 0) {
			if (ferror(r->fp))
				return rerr(r, e, "read error: %s", strerror(errno));
			r->out_eof = 1;
			return 0;
		}
		r->out_hi += got;
		return 1;
	}
	for (;;) {
		if (r->in_pos == r->in_size && read_in(r, e) < 0)
			return -1;
		if (r->in_pos == r->in_size) { /* end of file */
			if (r->zret == 0 && r->frames > 0) {
				r->out_eof = 1;
				return 0;
			}
			if (r->frames == 0)
				return rerr(r, e, "truncated zstd frame (the file ends inside the compressed data)");
			return rerr(r, e,
				    "the %llu bytes after the last complete zstd frame are a "
				    "truncated frame or garbage",
				    (unsigned long long)r->since_boundary);
		}
		ZSTD_inBuffer zi = {r->in, r->in_size, r->in_pos};
		ZSTD_outBuffer zo = {r->out, IO_CAP, r->out_hi};
		size_t ret = ZSTD_decompressStream(r->zd, &zo, &zi);
		r->since_boundary += zi.pos - r->in_pos;
		r->in_pos = zi.pos;
		if (ZSTD_isError(ret)) {
			ZSTD_ErrorCode c = ZSTD_getErrorCode(ret);
			if (c == ZSTD_error_checksum_wrong)
				return rerr(r, e, "zstd checksum mismatch: the compressed data is corrupted");
			if (c == ZSTD_error_prefix_unknown && r->frames > 0 && r->zret == 0)
				return rerr(r, e, "trailing garbage after the last zstd frame");
			return rerr(r, e, "corrupted zstd data (%s)", ZSTD_getErrorName(ret));
		}
		r->zret = ret;
		if (ret == 0) {
			r->frames++;
			r->since_boundary = 0;
		}
		if (zo.pos > r->out_hi) {
			r->out_hi = zo.pos;
			return 1;
		}
	}
}

static int read_header(struct shard_reader *r, struct gpt_err *e)
{
	while (r->out_hi - r->out_lo < SHARD_HEADER_BYTES) {
		int f = fill_out(r, e);
		if (f < 0)
			return -1;
		if (f == 0)
			return rerr(r, e, "truncated header (%zu of %d bytes)", r->out_hi - r->out_lo,
				    SHARD_HEADER_BYTES);
	}
	const unsigned char *h = r->out + r->out_lo;
	uint32_t magic = le32(h);
	if (magic != SHARD_MAGIC)
		return rerr(r, e, "bad magic %u in the decompressed header (a shard has %d)", magic,
			    SHARD_MAGIC);
	int32_t version = (int32_t)le32(h + 4);
	if (version != 1 && version != 2)
		return rerr(r, e, "unsupported shard version %d (this reader knows 1 and 2)", (int)version);
	int32_t ntok = (int32_t)le32(h + 8);
	if (ntok < 0)
		return rerr(r, e, "negative token count %d in the header", (int)ntok);
	for (int i = 3; i < SHARD_HEADER_INTS; i++) {
		uint32_t v = le32(h + 4 * i);
		if (v)
			return rerr(r, e, "header word %d is %u; words 3..255 must be 0", i, v);
	}
	if (r->meta_tokens >= 0 && (uint64_t)r->meta_tokens != (uint64_t)ntok)
		return rerr(r, e, "the metadata frame says %lld tokens but the header says %d",
			    (long long)r->meta_tokens, (int)ntok);
	r->info.version = version;
	r->info.ntok = (uint64_t)ntok;
	r->left = (uint64_t)ntok;
	r->out_lo += SHARD_HEADER_BYTES;
	return 0;
}

struct shard_reader *shard_open_fp(FILE *fp, const char *name, struct gpt_err *e)
{
	struct shard_reader *r = xcalloc(1, sizeof *r);
	r->fp = fp;
	r->name = xstrdup(name);
	r->info.docs = r->info.bytes = -1;
	r->meta_tokens = -1;
	r->zret = 1;
	r->in = xmalloc(IO_CAP);
	if (need_in(r, 4, e) < 0)
		goto fail;
	if (r->in_size == 0) {
		rerr(r, e, "empty file (not a shard)");
		goto fail;
	}
	uint32_t magic = r->in_size >= 4 ? le32(r->in) : 0;
	if (r->in_size >= 4 && magic == SHARD_MAGIC) {
		/* raw .bin: what was read is already decoded data */
		r->out = r->in;
		r->out_hi = r->in_size;
		r->in = NULL;
		r->in_size = 0;
	} else if (r->in_size >= 4 && (magic == ZSTD_MAGICNUMBER ||
				       (magic & 0xFFFFFFF0u) == ZSTD_MAGIC_SKIPPABLE_START)) {
		r->info.compressed = 1;
		r->out = xmalloc(IO_CAP);
		if (read_leading_frames(r, e) < 0)
			goto fail;
		r->zd = ZSTD_createDStream();
		if (!r->zd) {
			rerr(r, e, "cannot create a zstd decompression context");
			goto fail;
		}
		size_t z = ZSTD_DCtx_setParameter(r->zd, ZSTD_d_windowLogMax, WINDOW_LOG_MAX);
		if (ZSTD_isError(z)) {
			rerr(r, e, "zstd: %s", ZSTD_getErrorName(z));
			goto fail;
		}
	} else if (r->in_size < 4) {
		rerr(r, e, "truncated header (%zu of %d bytes)", r->in_size, SHARD_HEADER_BYTES);
		goto fail;
	} else {
		rerr(r, e, "not a shard: bad magic %u (0x%08x), neither a .bin header (%d) nor zstd data",
		     magic, magic, SHARD_MAGIC);
		goto fail;
	}
	if (read_header(r, e) < 0)
		goto fail;
	return r;
fail:
	shard_close(r);
	return NULL;
}

struct shard_reader *shard_open(const char *path, struct gpt_err *e)
{
	if (!strcmp(path, "-"))
		return shard_open_fp(stdin, "standard input", e);
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		gpt_errf(e, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct shard_reader *r = shard_open_fp(fp, path, e);
	if (!r) {
		fclose(fp);
		return NULL;
	}
	r->own_fp = 1;
	return r;
}

const struct shard_info *shard_reader_info(const struct shard_reader *r) { return &r->info; }

void shard_set_vocab(struct shard_reader *r, uint32_t vocab) { r->vocab = vocab; }

void shard_close(struct shard_reader *r)
{
	if (!r)
		return;
	if (r->own_fp)
		fclose(r->fp);
	ZSTD_freeDStream(r->zd);
	free(r->in);
	free(r->out);
	free(r->name);
	free(r);
}

/* Decode k little-endian tokens; returns the OR of them all, a bound on
 * the largest (cheaper than the max). The blocks of 8
 * with a fixed inner count let -O2 vectorize (SLP) on little-endian hosts. */
static uint32_t decode16(const unsigned char *restrict p, uint32_t *restrict t, size_t k)
{
	uint32_t mx = 0;
	size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (; i + 8 <= k; i += 8) {
		uint16_t v[8];
		uint32_t m = 0;
		memcpy(v, p + 2 * i, sizeof v);
		for (int j = 0; j < 8; j++)
			t[i + j] = v[j];
		for (int j = 0; j < 8; j++)
			m |= v[j];
		mx |= m;
	}
#endif
	for (; i < k; i++) {
		uint32_t v = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
		t[i] = v;
		mx |= v;
	}
	return mx;
}

static uint32_t decode32(const unsigned char *restrict p, uint32_t *restrict t, size_t k)
{
	uint32_t mx = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(t, p, 4 * k);
	for (size_t i = 0; i < k; i++)
		mx |= t[i];
#else
	for (size_t i = 0; i < k; i++) {
		t[i] = le32(p + 4 * i);
		mx |= t[i];
	}
#endif
	return mx;
}

/* After the last token: nothing may follow, and the input must end cleanly. */
static int verify_end(struct shard_reader *r, struct gpt_err *e)
{
	int f = r->out_hi > r->out_lo ? 1 : fill_out(r, e);
	if (f < 0)
		return -1;
	if (f > 0)
		return rerr(r, e,
			    "data continues after the %llu tokens the header declares "
			    "(wrong token count, or trailing garbage)",
			    (unsigned long long)r->info.ntok);
	r->state = 1;
	return 0;
}

ssize_t shard_read(struct shard_reader *r, uint32_t *tok, size_t max, struct gpt_err *e)
{
	if (r->state < 0) {
		if (e)
			*e = r->err;
		return -1;
	}
	if (r->state > 0)
		return 0;
	if (max == 0) /* 0 would read as the end */
		return gpt_errf(e, "%s: shard_read of 0 tokens", r->name);
	if (r->left == 0)
		return verify_end(r, e) < 0 ? -1 : 0;
	size_t w = r->info.version == 1 ? 2 : 4;
	size_t want = max < r->left ? max : (size_t)r->left;
	if (want > SSIZE_MAX)
		want = SSIZE_MAX;
	size_t got = 0;
	while (got < want) {
		size_t avail = (r->out_hi - r->out_lo) / w;
		if (avail == 0) {
			int f = fill_out(r, e);
			if (f < 0)
				return -1;
			if (f == 0) {
				size_t stray = r->out_hi - r->out_lo;
				return rerr(r, e,
					    "truncated: the header declares %llu tokens but the data "
					    "holds %llu%s",
					    (unsigned long long)r->info.ntok,
					    (unsigned long long)(r->done + got),
					    stray ? " and a partial token" : "");
			}
			continue;
		}
		size_t k = want - got < avail ? want - got : avail;
		const unsigned char *p = r->out + r->out_lo;
		uint32_t mx = w == 2 ? decode16(p, tok + got, k) : decode32(p, tok + got, k);
		if (r->vocab && mx >= r->vocab)
			for (size_t i = 0; i < k; i++)
				if (tok[got + i] >= r->vocab)
					return rerr(r, e,
						    "token %u at index %llu is outside the vocabulary "
						    "(%u tokens)",
						    tok[got + i], (unsigned long long)(r->done + got + i),
						    r->vocab);
		r->out_lo += k * w;
		got += k;
	}
	r->done += got;
	r->left -= got;
	if (r->left == 0 && verify_end(r, e) < 0)
		return -1;
	return (ssize_t)got;
}

int shard_load_into(const char *path, uint32_t vocab, uint32_t **buf, size_t *cap, size_t *np,
		    struct shard_info *info, struct gpt_err *e)
{
	*np = 0;
	struct shard_reader *r = shard_open(path, e);
	if (!r)
		return -1;
	shard_set_vocab(r, vocab);
	uint64_t ntok = r->info.ntok;
	size_t n = 0;
	uint32_t dummy;
	while (n < ntok) {
		if (n == *cap) { /* grow as data arrives: a lying header costs no memory */
			size_t c = *cap ? 2 * *cap : (size_t)1 << 24;
			if (c > ntok)
				c = (size_t)ntok;
			*buf = xrealloc(*buf, c * sizeof **buf);
			*cap = c;
		}
		ssize_t k = shard_read(r, *buf + n, *cap - n, e);
		if (k < 0)
			goto fail;
		n += (size_t)k;
	}
	if (shard_read(r, &dummy, 1, e) != 0)
		goto fail;
	if (info)
		*info = r->info;
	shard_close(r);
	*np = n;
	return 0;
fail:
	shard_close(r);
	return -1;
}

int shard_load(const char *path, uint32_t vocab, uint32_t **tokp, size_t *np,
	       struct shard_info *info, struct gpt_err *e)
{
	uint32_t *buf = NULL;
	size_t cap = 0;
	if (shard_load_into(path, vocab, &buf, &cap, np, info, e) < 0) {
		free(buf);
		*tokp = NULL;
		return -1;
	}
	*tokp = buf ? buf : xmalloc(sizeof *buf); /* never NULL on success */
	return 0;
}

/* ======================================================================
 * Writer
 */
struct shard_writer {
	struct aout out;
	struct shard_writer_opts o;
	int wide;          /* buffer holds uint32 (else uint16) */
	unsigned char *buf; /* SHARD_HEADER_BYTES of room, then the tokens */
	size_t n, cap;     /* tokens */
};

static int host_is_le(void)
{
	const uint16_t one = 1;
	return *(const unsigned char *)&one == 1;
}

struct shard_writer *shard_writer_open(const char *path, const struct shard_writer_opts *o,
				       struct gpt_err *e)
{
	struct shard_writer_opts d = {0};
	if (!o)
		o = &d;
	if (o->version < 0 || o->version > 2) {
		gpt_errf(e, "%s: shard version %d (known: 1, 2)", path, o->version);
		return NULL;
	}
	if (o->level && (o->level < ZSTD_minCLevel() || o->level > ZSTD_maxCLevel())) {
		gpt_errf(e, "%s: zstd level %d outside [%d, %d]", path, o->level, ZSTD_minCLevel(),
			 ZSTD_maxCLevel());
		return NULL;
	}
	if (o->threads < 0) {
		gpt_errf(e, "%s: negative thread count", path);
		return NULL;
	}
	struct shard_writer *w = xcalloc(1, sizeof *w);
	w->o = *o;
	w->wide = o->version == 2;
	w->cap = 1u << 16;
	w->buf = xmalloc(SHARD_HEADER_BYTES + w->cap * 4);
	aout_open(&w->out, path, AOUT_BINARY | (o->force_tty ? AOUT_FORCE : 0));
	return w;
}

uint64_t shard_writer_count(const struct shard_writer *w) { return w->n; }

static void widen(struct shard_writer *w)
{
	w->buf = xrealloc(w->buf, SHARD_HEADER_BYTES + w->cap * 4);
	uint16_t *s = (uint16_t *)(w->buf + SHARD_HEADER_BYTES);
	uint32_t *d = (uint32_t *)(w->buf + SHARD_HEADER_BYTES);
	for (size_t i = w->n; i-- > 0;) /* backwards: d[i] never overwrites s[j<i] */
		d[i] = s[i];
	w->wide = 1;
}

int shard_writer_put(struct shard_writer *w, const uint32_t *tok, size_t n, struct gpt_err *e)
{
	if (n > SHARD_MAX_TOKENS - w->n)
		return gpt_errf(e, "%s: more than %u tokens in one shard", w->out.path, SHARD_MAX_TOKENS);
	if (!w->wide) {
		uint32_t mx = 0;
		for (size_t i = 0; i < n; i++)
			mx = tok[i] > mx ? tok[i] : mx;
		if (mx > 0xFFFF) {
			if (w->o.version == 1)
				return gpt_errf(e, "%s: token %u does not fit a version 1 shard (uint16)",
						w->out.path, mx);
			widen(w);
		}
	}
	if (w->n + n > w->cap) {
		while (w->n + n > w->cap)
			w->cap *= 2;
		w->buf = xrealloc(w->buf, SHARD_HEADER_BYTES + w->cap * (w->wide ? 4 : 2));
	}
	if (w->wide) {
		memcpy(w->buf + SHARD_HEADER_BYTES + w->n * 4, tok, n * 4);
	} else {
		uint16_t *d = (uint16_t *)(w->buf + SHARD_HEADER_BYTES) + w->n;
		for (size_t i = 0; i < n; i++)
			d[i] = (uint16_t)tok[i];
	}
	w->n += n;
	return 0;
}

/* Compress src to the output; mode ZSTD_e_continue or ZSTD_e_end. */
static int zwrite(struct shard_writer *w, ZSTD_CCtx *c, const void *src, size_t n,
		  ZSTD_EndDirective mode, void *obuf, size_t ocap, struct gpt_err *e)
{
	ZSTD_inBuffer in = {src, n, 0};
	for (;;) {
		ZSTD_outBuffer out = {obuf, ocap, 0};
		size_t rem = ZSTD_compressStream2(c, &out, &in, mode);
		if (ZSTD_isError(rem))
			return gpt_errf(e, "%s: zstd compression failed: %s", w->out.path,
					ZSTD_getErrorName(rem));
		aout_write(&w->out, obuf, out.pos);
		if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size)
			return 0;
	}
}

int shard_writer_close(struct shard_writer *w, int64_t docs, int64_t bytes, struct gpt_err *e)
{
	int rc = -1;
	ZSTD_CCtx *c = NULL;
	void *obuf = NULL;
	int version = w->wide ? 2 : 1;
	size_t tsize = w->wide ? 4 : 2;
	unsigned char *h = w->buf;
	memset(h, 0, SHARD_HEADER_BYTES);
	put_le32(h, SHARD_MAGIC);
	put_le32(h + 4, (uint32_t)version);
	put_le32(h + 8, (uint32_t)w->n);
	if (!host_is_le()) {
		unsigned char *p = w->buf + SHARD_HEADER_BYTES;
		for (size_t i = 0; i < w->n; i++, p += tsize)
			for (size_t a = 0, b = tsize - 1; a < b; a++, b--) {
				unsigned char t = p[a];
				p[a] = p[b];
				p[b] = t;
			}
	}
	size_t total = SHARD_HEADER_BYTES + w->n * tsize;
	if (w->o.raw) {
		aout_write(&w->out, w->buf, total);
		goto commit;
	}
	if (!w->o.no_meta) {
		char json[200];
		int len = snprintf(json, sizeof json, "{\"format\":\"gpt-shard/1\",\"tokens\":%llu",
				   (unsigned long long)w->n);
		if (docs >= 0)
			len += snprintf(json + len, sizeof json - (size_t)len, ",\"docs\":%lld", (long long)docs);
		if (bytes >= 0)
			len += snprintf(json + len, sizeof json - (size_t)len, ",\"bytes\":%lld",
					(long long)bytes);
		len += snprintf(json + len, sizeof json - (size_t)len, "}");
		unsigned char fh[8];
		put_le32(fh, SHARD_META_MAGIC);
		put_le32(fh + 4, (uint32_t)len);
		aout_write(&w->out, fh, 8);
		aout_write(&w->out, json, (size_t)len);
	}
	c = ZSTD_createCCtx();
	if (!c) {
		gpt_errf(e, "%s: cannot create a zstd compression context", w->out.path);
		goto fail;
	}
	int threads = w->o.threads;
	if (threads == 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		threads = ncpu > 0 ? (int)ncpu : 1;
	}
	size_t z = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, w->o.level ? w->o.level : 3);
	if (!ZSTD_isError(z))
		z = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(z))
		z = ZSTD_CCtx_setPledgedSrcSize(c, total);
	if (ZSTD_isError(z)) {
		gpt_errf(e, "%s: zstd: %s", w->out.path, ZSTD_getErrorName(z));
		goto fail;
	}
	/* fails harmlessly (one thread) if libzstd was built without threads */
	if (threads > 1 && total > (1u << 20))
		ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, threads);
	size_t ocap = ZSTD_CStreamOutSize();
	obuf = xmalloc(ocap);
	if (zwrite(w, c, w->buf, total, ZSTD_e_end, obuf, ocap, e) < 0)
		goto fail;
commit:
	aout_commit(&w->out);
	rc = 0;
fail:
	if (rc < 0)
		aout_abort(&w->out);
	ZSTD_freeCCtx(c);
	free(obuf);
	free(w->buf);
	free(w);
	return rc;
}

void shard_writer_abort(struct shard_writer *w)
{
	if (!w)
		return;
	aout_abort(&w->out);
	free(w->buf);
	free(w);
}
