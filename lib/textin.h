/*
 * textin.h - read documents from text or JSON-lines files, in chunks.
 *
 * Implements a streaming reader for one input ("-" = stdin):
 *   - zstd-compressed input is decompressed transparently (detected by the
 *     frame magic, not the name; concatenated and skippable frames are fine;
 *     a truncated or corrupted stream is an error);
 *   - plain text: the whole input is one document, or documents are
 *     separated by a delimiter string (never part of a document; empty
 *     documents are dropped);
 *   - JSON lines: chunks of whole lines, for the caller to parse (see
 *     textin_json_text); blank lines are dropped;
 *   - documents longer than the chunk size are cut at safe split points
 *     (bpe_split_point: the tokens do not change), so one huge document
 *     can be tokenized on many threads; a huge JSON line is parsed here and
 *     its text cut the same way;
 *   - line numbers for messages, and the raw bytes consumed for progress.
 * Memory: about two chunks, plus the longest stretch without a split point
 * (or the longest JSON line).
 */
#ifndef GPT_TEXTIN_H
#define GPT_TEXTIN_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct textin_opts {
	int jsonl;         /* 1 JSON lines, 0 plain text */
	const char *delim; /* plain text: document separator; NULL: one document */
	size_t dlen;
	const char *field; /* JSON lines: the member holding the text ("text") */
	size_t chunk;      /* target chunk size in bytes (0: 256 KiB) */
};

enum { TEXTIN_TEXT = 1, TEXTIN_JSONL = 2 };

struct textin_chunk {
	int kind;      /* TEXTIN_TEXT: a piece of one document's text;
			  TEXTIN_JSONL: one or more whole JSON lines, '\n' after each */
	char *data;    /* malloc'd; the caller frees it */
	size_t len;
	int doc_start; /* TEXT: the first piece of a document */
	uint64_t line; /* line number (1-based) of data[0] in the input */
};

struct textin;

/* Open path ("-" = stdin). Errors name the file. */
struct textin *textin_open(const char *path, const struct textin_opts *o, struct gpt_err *e);
/* Next chunk: 1 and *c filled, 0 at the end, -1 on a read or zstd error. */
int textin_next(struct textin *t, struct textin_chunk *c, struct gpt_err *e);
/* Bytes read from the file so far (compressed bytes for zstd input). */
uint64_t textin_consumed(const struct textin *t);
void textin_close(struct textin *t);

/* Parse one JSON line and find its text: 1 with *text and *tlen pointing into
 * *doc (json_free it), 0 for a blank line, -1 with a message (no line
 * number) when the line is not JSON, not an object, lacks the field or the
 * field is not a string. */
struct json;
int textin_json_text(const char *line, size_t len, const char *field, struct json **doc, const char **text,
		     size_t *tlen, struct gpt_err *e);

#endif
