/*
 * shard.h - token shards: llm.c / modded-nanogpt .bin files, zstd-compressed.
 *
 * A shard is the .bin file modded-nanogpt reads (man 5 gpt-shard):
 *
 *   header  256 x int32 LE   [SHARD_MAGIC, version, ntok, 0 x 253]  (1024 bytes)
 *   body    ntok tokens      version 1: uint16 LE; version 2: uint32 LE
 *
 * stored either raw or compressed as zstd: optionally one skippable frame
 * (magic SHARD_META_MAGIC) holding JSON metadata
 *   {"format":"gpt-shard/1","tokens":N,"docs":D,"bytes":B}
 * followed by zstd frame(s) whose content is exactly the .bin file, so
 * `zstd -d` of a shard gives the .bin and `zstd` of a .bin gives a shard.
 *
 * Implements:
 *   - a streaming reader (shard_open/shard_open_fp, shard_read, shard_close):
 *     raw or zstd input detected from the first bytes, files or pipes
 *     ("-" = stdin), never seeks, never holds more than its buffers; rejects
 *     bad magic/version, nonzero reserved header words, a token count that
 *     disagrees with the data, truncated/corrupted zstd frames (content
 *     checksums verified when present), trailing garbage, tokens outside an
 *     optional vocabulary;
 *   - shard_load/shard_load_into: a whole shard into one uint32 array
 *     (a new one, or a buffer reused from shard to shard);
 *   - a writer (shard_writer_*): buffers tokens (uint16 while they fit, else
 *     uint32), picks version 1 when it can, and on close writes the metadata
 *     frame and one checksummed zstd frame with pledged size, compressed on
 *     several threads (or a raw .bin), atomically through struct aout.
 *
 * Errors: functions return -1/NULL and fill a struct gpt_err whose message
 * names the file. Tokens that shard_read returned before an error may be
 * wrong (a corrupted frame is only known at its checksum); only a 0 return
 * certifies everything read. shard_load returns all the tokens or none.
 */
#ifndef GPT_SHARD_H
#define GPT_SHARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "util.h"

#define SHARD_MAGIC 20240520
#define SHARD_HEADER_INTS 256
#define SHARD_HEADER_BYTES 1024
#define SHARD_META_MAGIC 0x184D2A50u /* zstd skippable frame, first variant */
#define SHARD_MAX_TOKENS 2147483647u  /* the header count is an int32 */

struct shard_info {
	int version;      /* 1: uint16 tokens, 2: uint32 tokens */
	uint64_t ntok;    /* token count from the header */
	int compressed;   /* 1 if the input was zstd */
	int64_t docs;     /* from the metadata frame, -1 if unknown */
	int64_t bytes;    /* UTF-8 text bytes the tokens came from, -1 if unknown */
};

/* ---------------------------------------------------------------------
 * Reading
 */
struct shard_reader;

/* Open path ("-" = stdin) and read the header. */
struct shard_reader *shard_open(const char *path, struct gpt_err *e);
/* Same on an open stream, which shard_close leaves open; name is for messages. */
struct shard_reader *shard_open_fp(FILE *fp, const char *name, struct gpt_err *e);
const struct shard_info *shard_reader_info(const struct shard_reader *r);
/* Reject tokens >= vocab from now on (0: no limit, the default). */
void shard_set_vocab(struct shard_reader *r, uint32_t vocab);
/* Read up to max > 0 tokens (fewer only at the end). Returns the count, 0 at
 * the verified end, -1 on error. The call that returns the last tokens has
 * already checked the end (count, checksum, trailing bytes). */
ssize_t shard_read(struct shard_reader *r, uint32_t *tok, size_t max, struct gpt_err *e);
void shard_close(struct shard_reader *r);

/* Whole shard in memory: *tok (free() it) holds *n tokens. vocab as in
 * shard_set_vocab; info may be NULL. On error *tok is NULL. */
int shard_load(const char *path, uint32_t vocab, uint32_t **tok, size_t *n,
	       struct shard_info *info, struct gpt_err *e);
/* The same into a reusable buffer: *buf (NULL or malloc'ed) holds *cap
 * tokens and is grown as needed; it stays the caller's on error too. */
int shard_load_into(const char *path, uint32_t vocab, uint32_t **buf, size_t *cap, size_t *n,
		    struct shard_info *info, struct gpt_err *e);

/* ---------------------------------------------------------------------
 * Writing. A zeroed struct gives the defaults.
 */
struct shard_writer_opts {
	int version;   /* 0: 1 if every token < 65536, else 2; 1 or 2: forced */
	int raw;       /* write an uncompressed .bin (no metadata) */
	int level;     /* zstd level, 0: 3 */
	int threads;   /* compression threads, 0: online CPUs */
	int no_meta;   /* leave out the metadata frame */
	int force_tty; /* allow binary output to a terminal */
};
struct shard_writer;

/* path "-" = stdout (refused on a terminal unless force_tty). The output
 * is a temporary file until shard_writer_close commits it. */
struct shard_writer *shard_writer_open(const char *path, const struct shard_writer_opts *o,
				       struct gpt_err *e);
int shard_writer_put(struct shard_writer *w, const uint32_t *tok, size_t n, struct gpt_err *e);
uint64_t shard_writer_count(const struct shard_writer *w);
/* Write and commit; docs/bytes go into the metadata (-1: unknown, left
 * out). Frees w whatever happens. */
int shard_writer_close(struct shard_writer *w, int64_t docs, int64_t bytes, struct gpt_err *e);
/* Discard: remove the temporary file, free w. */
void shard_writer_abort(struct shard_writer *w);

#endif
