/*
 * textin.c - documents from text or JSON-lines input, in chunks. See textin.h.
 *
 * Sections: the byte source (plain or zstd), plain text with delimiters,
 * JSON lines, the JSON text helper.
 */
#include "textin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "bpe.h"
#include "json.h"

#define DEFAULT_CHUNK (256u << 10)

struct textin {
	char *name;
	FILE *fp;
	struct textin_opts o;
	uint64_t consumed;
	/* raw input bytes: peeked magic for plain input, compressed for zstd */
	unsigned char *raw;
	size_t raw_len, raw_pos, raw_cap;
	int raw_eof;
	int zstd;
	ZSTD_DCtx *dctx;
	int frame_open; /* a zstd frame is started and not finished */
	int eof;        /* no more input bytes */
	/* decoded bytes: live data is buf[start, have) */
	char *buf;
	size_t start, have, cap;
	size_t scan;       /* delimiter search resumes here (relative to start) */
	size_t split_scan; /* split-point search resumes here (relative to start) */
	int doc_open;      /* the current document has produced a chunk */
	uint64_t line;     /* line number at buf[start] */
	/* a huge JSON line being cut into text chunks */
	struct json *big;
	const char *big_text;
	size_t big_len, big_pos;
	uint64_t big_line;
};

/* ----------------------------------------------------------------------
 * Byte source
 */
static int raw_fill(struct textin *t, struct gpt_err *e)
{
	if (t->raw_pos == t->raw_len)
		t->raw_pos = t->raw_len = 0;
	if (t->raw_eof)
		return 0;
	size_t got = fread(t->raw + t->raw_len, 1, t->raw_cap - t->raw_len, t->fp);
	if (got == 0) {
		if (ferror(t->fp))
			return gpt_errf(e, "%s: read error: %s", t->name, strerror(errno));
		t->raw_eof = 1;
	}
	t->raw_len += got;
	t->consumed += got;
	return 0;
}

/* Up to n decoded bytes into dst; 0 at the end, -1 on error. */
static ssize_t src_read(struct textin *t, char *dst, size_t n, struct gpt_err *e)
{
	if (!t->zstd) {
		if (t->raw_pos < t->raw_len) {
			size_t k = t->raw_len - t->raw_pos < n ? t->raw_len - t->raw_pos : n;
			memcpy(dst, t->raw + t->raw_pos, k);
			t->raw_pos += k;
			return (ssize_t)k;
		}
		if (t->raw_eof)
			return 0;
		size_t got = fread(dst, 1, n, t->fp);
		if (got == 0) {
			if (ferror(t->fp))
				return gpt_errf(e, "%s: read error: %s", t->name, strerror(errno));
			t->raw_eof = 1;
		}
		t->consumed += got;
		return (ssize_t)got;
	}
	for (;;) {
		if (t->raw_pos == t->raw_len) {
			if (raw_fill(t, e))
				return -1;
			if (t->raw_len == 0) {
				if (t->frame_open)
					return gpt_errf(e, "%s: truncated zstd stream (the input ends inside a frame)",
							t->name);
				return 0;
			}
		}
		ZSTD_inBuffer in = {t->raw, t->raw_len, t->raw_pos};
		ZSTD_outBuffer out = {dst, n, 0};
		size_t ret = ZSTD_decompressStream(t->dctx, &out, &in);
		t->raw_pos = in.pos;
		if (ZSTD_isError(ret))
			return gpt_errf(e, "%s: zstd: %s (after %llu input bytes)", t->name, ZSTD_getErrorName(ret),
					(unsigned long long)(t->consumed - (t->raw_len - t->raw_pos)));
		t->frame_open = ret != 0;
		if (out.pos)
			return (ssize_t)out.pos;
	}
}

/* Read at least one more block into buf (growing it); sets t->eof. */
static int fill(struct textin *t, struct gpt_err *e)
{
	if (t->start > 0 && (t->start >= t->cap / 2 || t->have == t->start)) {
		memmove(t->buf, t->buf + t->start, t->have - t->start);
		t->have -= t->start;
		t->start = 0;
	}
	size_t block = t->o.chunk > (64u << 10) ? t->o.chunk : (64u << 10);
	if (t->cap - t->have < block) {
		while (t->cap - t->have < block)
			t->cap *= 2;
		t->buf = xrealloc(t->buf, t->cap + 1);
	}
	ssize_t got = src_read(t, t->buf + t->have, t->cap - t->have, e);
	if (got < 0)
		return -1;
	if (got == 0)
		t->eof = 1;
	t->have += (size_t)got;
	return 0;
}

struct textin *textin_open(const char *path, const struct textin_opts *o, struct gpt_err *e)
{
	FILE *fp = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!fp) {
		gpt_errf(e, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct textin *t = xcalloc(1, sizeof *t);
	t->name = xstrdup(strcmp(path, "-") ? path : "standard input");
	t->fp = fp;
	t->o = *o;
	if (!t->o.chunk)
		t->o.chunk = DEFAULT_CHUNK;
	if (!t->o.field)
		t->o.field = "text";
	if (!t->o.delim || !t->o.dlen) {
		t->o.delim = NULL;
		t->o.dlen = 0;
	}
	t->line = 1;
	t->raw_cap = ZSTD_DStreamInSize();
	t->raw = xmalloc(t->raw_cap);
	t->cap = 1 << 16;
	t->buf = xmalloc(t->cap + 1);
	/* peek at the first 4 bytes: a zstd frame or a skippable frame */
	while (t->raw_len < 4 && !t->raw_eof)
		if (raw_fill(t, e)) {
			textin_close(t);
			return NULL;
		}
	if (t->raw_len >= 4) {
		uint32_t m = (uint32_t)t->raw[0] | (uint32_t)t->raw[1] << 8 | (uint32_t)t->raw[2] << 16 |
			     (uint32_t)t->raw[3] << 24;
		if (m == 0xFD2FB528u || (m & 0xFFFFFFF0u) == 0x184D2A50u) {
			t->zstd = 1;
			t->dctx = ZSTD_createDCtx();
			if (!t->dctx)
				die(EXIT_RUNTIME, "out of memory (zstd)");
			ZSTD_DCtx_setParameter(t->dctx, ZSTD_d_windowLogMax, 31);
		}
	}
	return t;
}

uint64_t textin_consumed(const struct textin *t) { return t->consumed; }

void textin_close(struct textin *t)
{
	if (!t)
		return;
	if (t->fp && t->fp != stdin)
		fclose(t->fp);
	ZSTD_freeDCtx(t->dctx);
	json_free(t->big);
	free(t->raw);
	free(t->buf);
	free(t->name);
	free(t);
}

static uint64_t count_lines(const char *s, size_t n)
{
	uint64_t k = 0;
	for (const char *p = s, *end = s + n; (p = memchr(p, '\n', (size_t)(end - p))); p++)
		k++;
	return k;
}

/* Emit buf[start, start + n) as a text chunk and consume it (plus skip more bytes). */
static void emit_text(struct textin *t, struct textin_chunk *c, size_t n, size_t skip)
{
	c->kind = TEXTIN_TEXT;
	c->data = xmalloc(n + 1);
	memcpy(c->data, t->buf + t->start, n);
	c->data[n] = 0;
	c->len = n;
	c->doc_start = !t->doc_open;
	c->line = t->line;
	t->doc_open = 1;
	t->line += count_lines(t->buf + t->start, n + skip);
	t->start += n + skip;
	t->scan = 0;
	t->split_scan = 0;
}

/* ----------------------------------------------------------------------
 * Plain text
 */
static int next_text(struct textin *t, struct textin_chunk *c, struct gpt_err *e)
{
	size_t chunk = t->o.chunk, dlen = t->o.dlen;
	for (;;) {
		size_t avail = t->have - t->start;
		char *base = t->buf + t->start;
		if (dlen && avail >= dlen && t->scan <= avail - dlen) {
			char *d = memmem(base + t->scan, avail - t->scan, t->o.delim, dlen);
			if (d) {
				size_t n = (size_t)(d - base);
				if (n) {
					emit_text(t, c, n, dlen);
					t->doc_open = 0;
					return 1;
				}
				/* an empty document, or the end of one already emitted */
				t->line += count_lines(base, dlen);
				t->start += dlen;
				t->scan = t->split_scan = 0;
				t->doc_open = 0;
				continue;
			}
			t->scan = avail - dlen + 1;
		}
		if (!t->eof && avail < chunk + dlen) {
			if (fill(t, e))
				return -1;
			continue;
		}
		if (t->eof) {
			if (!avail) {
				t->doc_open = 0;
				return 0;
			}
			emit_text(t, c, avail, 0);
			t->doc_open = 0;
			return 1;
		}
		/* no delimiter starts before limit; cut at a safe point past chunk */
		size_t limit = avail - (dlen ? dlen - 1 : 0);
		size_t from = t->split_scan > chunk ? t->split_scan : chunk;
		size_t k = from < limit ? bpe_split_point(base, limit, from) : limit;
		if (k < limit) {
			emit_text(t, c, k, 0);
			return 1;
		}
		t->split_scan = limit;
		if (fill(t, e))
			return -1;
	}
}

/* ----------------------------------------------------------------------
 * JSON lines
 */
int textin_json_text(const char *line, size_t len, const char *field, struct json **doc, const char **text,
		     size_t *tlen, struct gpt_err *e)
{
	*doc = NULL;
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n'))
		i++;
	if (i == len)
		return 0;
	struct gpt_err je;
	struct json *j = json_parse(line, len, &je);
	if (!j)
		return gpt_errf(e, "not JSON (%s)", je.msg);
	if (j->type != JSON_OBJECT) {
		json_free(j);
		return gpt_errf(e, "not a JSON object");
	}
	const struct json *f = json_get(j, field);
	if (!f) {
		json_free(j);
		return gpt_errf(e, "no \"%s\" member", field);
	}
	if (f->type != JSON_STRING) {
		json_free(j);
		return gpt_errf(e, "\"%s\" is not a string", field);
	}
	*doc = j;
	*text = f->str;
	*tlen = f->len;
	return 1;
}

static int next_jsonl(struct textin *t, struct textin_chunk *c, struct gpt_err *e)
{
	size_t chunk = t->o.chunk, big = 4 * chunk;
	for (;;) {
		if (t->big) { /* the next piece of a huge document */
			size_t rest = t->big_len - t->big_pos;
			size_t k = rest;
			if (rest > chunk + chunk / 2) {
				k = bpe_split_point(t->big_text + t->big_pos, rest, chunk);
			}
			c->kind = TEXTIN_TEXT;
			c->data = xmalloc(k + 1);
			memcpy(c->data, t->big_text + t->big_pos, k);
			c->data[k] = 0;
			c->len = k;
			c->doc_start = t->big_pos == 0;
			c->line = t->big_line;
			t->big_pos += k;
			if (t->big_pos == t->big_len) {
				json_free(t->big);
				t->big = NULL;
			}
			return 1;
		}
		/* a batch of whole lines starting at start */
		size_t avail = t->have - t->start, n = 0, lines = 0;
		char *base = t->buf + t->start;
		while (n < avail) {
			/* no newline in [0, scan) of a first line still being read */
			size_t from = n ? n : (t->scan < avail ? t->scan : avail);
			char *nl = memchr(base + from, '\n', avail - from);
			if (!nl) {
				if (!t->eof) {
					if (!n)
						t->scan = avail;
					break;
				}
				/* the last line has no newline */
				size_t ll = avail - n;
				if (ll > big && lines == 0)
					goto big_line;
				if (lines && n + ll > chunk)
					break;
				n = avail;
				lines++;
				break;
			}
			size_t ll = (size_t)(nl - (base + n));
			if (ll > big) {
				if (lines == 0)
					goto big_line;
				break;
			}
			if (lines && n + ll + 1 > chunk)
				break;
			n += ll + 1;
			lines++;
			if (n >= chunk)
				break;
		}
		if (lines && (n >= chunk || t->eof || n < avail)) {
			c->kind = TEXTIN_JSONL;
			int add_nl = base[n - 1] != '\n';
			c->data = xmalloc(n + 2);
			memcpy(c->data, base, n);
			if (add_nl)
				c->data[n] = '\n';
			c->data[n + add_nl] = 0;
			c->len = n + (size_t)add_nl;
			c->doc_start = 0;
			c->line = t->line;
			t->line += lines;
			t->start += n;
			t->scan = 0;
			return 1;
		}
		if (t->eof && avail == 0)
			return 0;
		if (fill(t, e))
			return -1;
		continue;
	big_line: {
		char *nl = memchr(base, '\n', avail);
		t->scan = 0;
		size_t ll = nl ? (size_t)(nl - base) : avail;
		struct gpt_err je;
		const char *text;
		size_t tlen;
		struct json *doc;
		int r = textin_json_text(base, ll, t->o.field, &doc, &text, &tlen, &je);
		if (r <= 0 || tlen == 0) {
			/* a blank line is dropped; a bad one goes to the caller
			 * as a one-line batch, which reports it */
			json_free(doc);
			if (r == 0 || tlen == 0) {
				t->line++;
				t->start += ll + (nl ? 1 : 0);
				continue;
			}
			c->kind = TEXTIN_JSONL;
			c->data = xmalloc(ll + 2);
			memcpy(c->data, base, ll);
			c->data[ll] = '\n';
			c->data[ll + 1] = 0;
			c->len = ll + 1;
			c->doc_start = 0;
			c->line = t->line;
			t->line++;
			t->start += ll + (nl ? 1 : 0);
			return 1;
		}
		t->big = doc;
		t->big_text = text;
		t->big_len = tlen;
		t->big_pos = 0;
		t->big_line = t->line;
		t->line++;
		t->start += ll + (nl ? 1 : 0);
		continue;
	}
	}
}

int textin_next(struct textin *t, struct textin_chunk *c, struct gpt_err *e)
{
	memset(c, 0, sizeof *c);
	return t->o.jsonl ? next_jsonl(t, c, e) : next_text(t, c, e);
}
