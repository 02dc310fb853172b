/*
 * json.h - a small JSON reader (DOM) and writer helpers.
 *
 * Implements:
 *   json_parse(): RFC 8259 text -> tree. Strings are decoded to UTF-8
 *     (\uXXXX escapes and surrogate pairs included; a lone surrogate is an
 *     error) and may contain NUL bytes (use .len). Numbers keep their source
 *     text so that integers beyond 2^53 (safetensors offsets) are exact
 *     (json_int). Depth is limited (JSON_MAX_DEPTH); duplicate keys are kept
 *     in order (json_get returns the first; json_has_duplicates tells).
 *   json_get(), json_int(): lookups.
 *   json_put_string(): write a string with JSON escapes.
 * Errors name the byte offset; the caller adds the file name.
 */
#ifndef GPT_JSON_H
#define GPT_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

#define JSON_MAX_DEPTH 64

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	double num;       /* JSON_NUMBER */
	char *str;        /* JSON_STRING: decoded UTF-8, NUL-terminated; JSON_NUMBER: source text */
	size_t len;       /* byte length of str */
	size_t n;         /* ARRAY/OBJECT: number of items */
	struct json *items;
	char **keys;      /* OBJECT: n keys (decoded, NUL-terminated) */
	size_t *keylens;
};

/* Parse exactly one JSON value (surrounding whitespace allowed). NULL on error. */
struct json *json_parse(const char *text, size_t len, struct gpt_err *e);
void json_free(struct json *j);

/* Member of an object by key, or NULL (also NULL if j is not an object). */
const struct json *json_get(const struct json *j, const char *key);
/* 1 if some key of object j occurs twice. */
int json_has_duplicates(const struct json *j);
/* A JSON_NUMBER that is an integer in [lo, hi] (exact, from its source text). */
int json_int(const struct json *j, int64_t lo, int64_t hi, int64_t *out);

/* Write s (n bytes) as a JSON string literal with escapes. */
void json_put_string(FILE *fp, const char *s, size_t n);
/* Same into a growing buffer (*buf, *len, *cap; xrealloc'd). */
void json_buf_string(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

#endif
