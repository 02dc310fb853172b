/*
 * json.c - recursive-descent JSON parser and string writer. See json.h.
 */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const char *s;
	size_t len, pos;
	struct gpt_err *e;
	int failed;
};

static int fail(struct parser *p, const char *what)
{
	if (!p->failed)
		gpt_errf(p->e, "JSON: %s at byte %zu", what, p->pos);
	p->failed = 1;
	return -1;
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		p->pos++;
	}
}

static int hex4(struct parser *p, unsigned *out)
{
	if (p->pos + 4 > p->len)
		return fail(p, "truncated \\u escape");
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p->s[p->pos++];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return fail(p, "bad hex digit in \\u escape");
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Parse a string starting after the opening quote. The decoded form is never
 * longer than the source, so one allocation of the source span suffices. */
static int parse_string(struct parser *p, char **out, size_t *outlen)
{
	size_t start = p->pos, end = start;
	/* find the closing quote to size the buffer */
	while (end < p->len && p->s[end] != '"') {
		if (p->s[end] == '\\')
			end++;
		end++;
	}
	if (end >= p->len)
		return fail(p, "unterminated string");
	char *buf = xmalloc(end - start + 1);
	size_t n = 0;
	while (p->pos < end) {
		unsigned char c = (unsigned char)p->s[p->pos++];
		if (c < 0x20) {
			free(buf);
			p->pos--;
			return fail(p, "control character in string");
		}
		if (c != '\\') {
			buf[n++] = (char)c;
			continue;
		}
		char esc = p->s[p->pos++];
		unsigned cp;
		switch (esc) {
		case '"': buf[n++] = '"'; break;
		case '\\': buf[n++] = '\\'; break;
		case '/': buf[n++] = '/'; break;
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'n': buf[n++] = '\n'; break;
		case 'r': buf[n++] = '\r'; break;
		case 't': buf[n++] = '\t'; break;
		case 'u':
			if (hex4(p, &cp))
				goto bad;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned lo;
				if (p->pos + 2 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
					fail(p, "lone high surrogate in \\u escape");
					goto bad;
				}
				p->pos += 2;
				if (hex4(p, &lo))
					goto bad;
				if (lo < 0xDC00 || lo > 0xDFFF) {
					fail(p, "bad low surrogate in \\u escape");
					goto bad;
				}
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				fail(p, "lone low surrogate in \\u escape");
				goto bad;
			}
			n += put_utf8(buf + n, cp);
			break;
		default:
			p->pos--;
			fail(p, "bad escape in string");
			goto bad;
		}
	}
	p->pos = end + 1;
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return 0;
bad:
	free(buf);
	return -1;
}

static int parse_value(struct parser *p, struct json *j, int depth);

static int parse_number(struct parser *p, struct json *j)
{
	size_t start = p->pos;
	const char *s = p->s;
	if (p->pos < p->len && s[p->pos] == '-')
		p->pos++;
	if (p->pos >= p->len)
		return fail(p, "truncated number");
	if (s[p->pos] == '0')
		p->pos++;
	else if (s[p->pos] >= '1' && s[p->pos] <= '9')
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
	else
		return fail(p, "bad number");
	if (p->pos < p->len && s[p->pos] == '.') {
		p->pos++;
		size_t d = p->pos;
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
		if (p->pos == d)
			return fail(p, "bad number (no digits after '.')");
	}
	if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
		p->pos++;
		if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-'))
			p->pos++;
		size_t d = p->pos;
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
		if (p->pos == d)
			return fail(p, "bad number (no exponent digits)");
	}
	j->type = JSON_NUMBER;
	j->len = p->pos - start;
	j->str = xmalloc(j->len + 1);
	memcpy(j->str, s + start, j->len);
	j->str[j->len] = 0;
	j->num = strtod(j->str, NULL);
	return 0;
}

static int literal(struct parser *p, const char *word, struct json *j, enum json_type t)
{
	size_t n = strlen(word);
	if (p->pos + n > p->len || memcmp(p->s + p->pos, word, n))
		return fail(p, "unexpected character");
	p->pos += n;
	j->type = t;
	return 0;
}

static int parse_container(struct parser *p, struct json *j, int depth, int object)
{
	size_t cap = 0;
	j->type = object ? JSON_OBJECT : JSON_ARRAY;
	p->pos++; /* [ or { */
	skip_ws(p);
	char close = object ? '}' : ']';
	if (p->pos < p->len && p->s[p->pos] == close) {
		p->pos++;
		return 0;
	}
	for (;;) {
		skip_ws(p);
		if (j->n == cap) {
			cap = cap ? 2 * cap : 4;
			j->items = xrealloc(j->items, cap * sizeof *j->items);
			if (object) {
				j->keys = xrealloc(j->keys, cap * sizeof *j->keys);
				j->keylens = xrealloc(j->keylens, cap * sizeof *j->keylens);
			}
		}
		if (object) {
			if (p->pos >= p->len || p->s[p->pos] != '"')
				return fail(p, "expected a string key");
			p->pos++;
			if (parse_string(p, &j->keys[j->n], &j->keylens[j->n]))
				return -1;
			skip_ws(p);
			if (p->pos >= p->len || p->s[p->pos] != ':') {
				free(j->keys[j->n]);
				return fail(p, "expected ':'");
			}
			p->pos++;
		}
		memset(&j->items[j->n], 0, sizeof j->items[0]);
		j->n++;
		if (parse_value(p, &j->items[j->n - 1], depth + 1))
			return -1;
		skip_ws(p);
		if (p->pos >= p->len)
			return fail(p, object ? "unterminated object" : "unterminated array");
		char c = p->s[p->pos++];
		if (c == close)
			return 0;
		if (c != ',') {
			p->pos--;
			return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
		}
	}
}

static int parse_value(struct parser *p, struct json *j, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		return fail(p, "nesting too deep");
	skip_ws(p);
	if (p->pos >= p->len)
		return fail(p, "unexpected end of input");
	switch (p->s[p->pos]) {
	case '{': return parse_container(p, j, depth, 1);
	case '[': return parse_container(p, j, depth, 0);
	case '"':
		p->pos++;
		j->type = JSON_STRING;
		return parse_string(p, &j->str, &j->len);
	case 't': return literal(p, "true", j, JSON_TRUE);
	case 'f': return literal(p, "false", j, JSON_FALSE);
	case 'n': return literal(p, "null", j, JSON_NULL);
	default: return parse_number(p, j);
	}
}

static void free_inner(struct json *j)
{
	for (size_t i = 0; i < j->n; i++) {
		free_inner(&j->items[i]);
		if (j->keys)
			free(j->keys[i]);
	}
	free(j->items);
	free(j->keys);
	free(j->keylens);
	free(j->str);
}

struct json *json_parse(const char *text, size_t len, struct gpt_err *e)
{
	struct parser p = {text, len, 0, e, 0};
	struct json *j = xcalloc(1, sizeof *j);
	if (parse_value(&p, j, 0) == 0) {
		skip_ws(&p);
		if (p.pos == p.len)
			return j;
		fail(&p, "trailing characters after the value");
	}
	json_free(j);
	return NULL;
}

void json_free(struct json *j)
{
	if (!j)
		return;
	free_inner(j);
	free(j);
}

const struct json *json_get(const struct json *j, const char *key)
{
	if (!j || j->type != JSON_OBJECT)
		return NULL;
	size_t n = strlen(key);
	for (size_t i = 0; i < j->n; i++)
		if (j->keylens[i] == n && !memcmp(j->keys[i], key, n))
			return &j->items[i];
	return NULL;
}

int json_has_duplicates(const struct json *j)
{
	if (!j || j->type != JSON_OBJECT)
		return 0;
	for (size_t i = 0; i < j->n; i++)
		for (size_t k = i + 1; k < j->n; k++)
			if (j->keylens[i] == j->keylens[k] && !memcmp(j->keys[i], j->keys[k], j->keylens[i]))
				return 1;
	return 0;
}

int json_int(const struct json *j, int64_t lo, int64_t hi, int64_t *out)
{
	if (!j || j->type != JSON_NUMBER)
		return -1;
	for (size_t i = 0; i < j->len; i++)
		if (j->str[i] == '.' || j->str[i] == 'e' || j->str[i] == 'E')
			return -1;
	errno = 0;
	char *end;
	long long v = strtoll(j->str, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static size_t escape_one(unsigned char c, char out[8])
{
	switch (c) {
	case '"': return (size_t)snprintf(out, 8, "\\\"");
	case '\\': return (size_t)snprintf(out, 8, "\\\\");
	case '\n': return (size_t)snprintf(out, 8, "\\n");
	case '\r': return (size_t)snprintf(out, 8, "\\r");
	case '\t': return (size_t)snprintf(out, 8, "\\t");
	case '\b': return (size_t)snprintf(out, 8, "\\b");
	case '\f': return (size_t)snprintf(out, 8, "\\f");
	}
	if (c < 0x20 || c == 0x7f)
		return (size_t)snprintf(out, 8, "\\u%04x", c);
	out[0] = (char)c;
	return 1;
}

void json_put_string(FILE *fp, const char *s, size_t n)
{
	char tmp[8];
	putc('"', fp);
	for (size_t i = 0; i < n; i++) {
		size_t k = escape_one((unsigned char)s[i], tmp);
		fwrite(tmp, 1, k, fp);
	}
	putc('"', fp);
}

void json_buf_string(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	char tmp[8];
	if (*len + 6 * n + 3 > *cap) {
		*cap = 2 * (*len + 6 * n + 3);
		*buf = xrealloc(*buf, *cap);
	}
	(*buf)[(*len)++] = '"';
	for (size_t i = 0; i < n; i++) {
		size_t k = escape_one((unsigned char)s[i], tmp);
		memcpy(*buf + *len, tmp, k);
		*len += k;
	}
	(*buf)[(*len)++] = '"';
	(*buf)[*len] = 0;
}
