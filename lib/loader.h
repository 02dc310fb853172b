/*
 * loader.h - the record's distributed data loader (spec 7.2) and its
 * validation slicing (spec 7.3, 10).
 *
 * Files: each pattern is expanded like Python's sorted(glob(pattern))
 * (byte order, no hidden files); a pattern without * ? [ is a file name.
 * Patterns are taken in the order given.
 *
 * With global batch B tokens, world size P, rank r and b = B/P, each
 * loader_next():
 *   1. if pos + B + 1 >= len(tokens of the current file): move to the
 *      next file (wrapping around) and set pos = 0;
 *   2. rank r's slice is tokens[pos + r*b : pos + r*b + b + 1];
 *   3. pos += B;
 * inputs = slice[0..b), targets = slice[1..b]: rank r's last target is
 * rank r+1's first input. A loader is at (file 0, pos 0) after open and
 * after loader_reset(); (file, pos) is the whole state for a checkpoint.
 *
 * Loading: the current file is held in memory as uint32 tokens; a
 * background thread decodes the next file while the current one is served,
 * so a step at a file boundary does not wait (two files in memory).
 * Every file's header is read at open: a file with fewer than B + 1 tokens
 * (too short for one batch) is an error naming it.
 *
 * A loader is used from one thread at a time.
 */
#ifndef GPT_LOADER_H
#define GPT_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct loader_opts {
	size_t batch;    /* B: global batch in tokens (all ranks) */
	int world;       /* P, 0 means 1 */
	int rank;        /* r in [0, P) */
	uint32_t vocab;  /* reject tokens >= vocab; 0: no check */
	int no_prefetch; /* load each file only when it is needed */
};

struct loader;

struct loader *loader_open(const char *const *patterns, size_t npatterns,
			   const struct loader_opts *o, struct gpt_err *e);
void loader_close(struct loader *l);

size_t loader_nfiles(const struct loader *l);
const char *loader_path(const struct loader *l, size_t i);
uint64_t loader_file_tokens(const struct loader *l, size_t i); /* from its header */
size_t loader_local_batch(const struct loader *l);             /* b = B/P */

/* Rank r's next slice: b + 1 tokens (inputs = p[0..b), targets = p[1..b]),
 * valid until the next call on l. NULL on error (the state is unchanged). */
const uint32_t *loader_next(struct loader *l, struct gpt_err *e);
/* The same, copied into two arrays of b tokens. */
int loader_next_batch(struct loader *l, uint32_t *inputs, uint32_t *targets, struct gpt_err *e);

/* Checkpoint state: current file index and position. */
void loader_state(const struct loader *l, size_t *file, uint64_t *pos);
/* Restore a state (loads that file); pos may not exceed its length. */
int loader_seek(struct loader *l, size_t file, uint64_t pos, struct gpt_err *e);
/* File 0, position 0 (spec: val_loader.reset() before each evaluation). */
int loader_reset(struct loader *l, struct gpt_err *e);

/* Validation (spec 7.3): the number of loader_next() calls after a reset
 * that cover val_tokens tokens, val_tokens / B. Fails unless B divides
 * val_tokens and the first file serves them all without moving on
 * (steps*B + 1 < its length), so no sequence is read twice. */
int64_t loader_val_steps(const struct loader *l, uint64_t val_tokens, struct gpt_err *e);

#endif
