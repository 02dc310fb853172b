/*
 * schedule.h - schedule streams: one text line per training step (gpt-sched(5)).
 *
 * Implements:
 *   - the stream reader (sched_open/sched_next/sched_close): reads a
 *     "#gpt-sched 1" stream lazily from a FILE* (a pipe is fine: row s is
 *     returned as soon as its line is complete), validates every field and
 *     reports errors as "NAME:LINE: column 'x': what is wrong";
 *   - the record's three formulas (spec 6, 8.1, 8 step 4), computed exactly
 *     as the record's Python does;
 *   - shapes ("const:V", "grow:1:14", ...), the per-column curves from
 *     which gpt-sched(1) composes a stream, and the generator that writes
 *     a stream from a struct sched_spec (presets included).
 *
 * A row s means, in this order: if eval, evaluate the validation loss with
 * the row's window (the model after s training steps); if ckpt, write a
 * checkpoint (the state after s steps); if train, run training step s with
 * the row's learning rates, momentum and window. Only the last row may have
 * train 0.
 *
 * (The file is not called sched.h: with -Ilib that name would hide the
 * system <sched.h> that <pthread.h> includes.)
 */
#ifndef GPT_SCHED_H
#define GPT_SCHED_H

#include <stdio.h>

#include "util.h"

#define SCHED_MAGIC "#gpt-sched"
#define SCHED_VERSION 1
#define SCHED_LINE_MAX 4096 /* longest row or header line, in bytes */

/* Learning-rate groups, in the order of enum gpt_group (lib/config.h). */
enum { SCHED_EMBED, SCHED_HEAD, SCHED_SCALAR, SCHED_MUON, SCHED_NGROUPS };

/* The record's base learning rates (spec 8.2): 0.6, 0.008, 0.04, 0.05. */
extern const double sched_record_base_lr[SCHED_NGROUPS];

/* ------------------------------------------------------------------------
 * Reading a stream
 */
struct sched_row {
	long step;                 /* training step s (>= 0; previous row's + 1) */
	double lr[SCHED_NGROUPS];  /* absolute learning rates (lr_scale x base, or the lr_* columns) */
	double momentum;           /* Muon momentum, in [0, 1] */
	int window;                /* attention window in 128-token blocks, >= 1 */
	int eval, ckpt, train;     /* 0 or 1 */
};

struct sched_reader;

/* Read and check line 1 (magic and version) and the header line. name is
 * used in messages ("standard input" for stdin, say). base_lr (NULL: the
 * record's) multiplies the lr_scale column. Returns NULL and fills e on
 * error. The reader does not own fp. */
struct sched_reader *sched_open(FILE *fp, const char *name, const double base_lr[SCHED_NGROUPS],
                                struct gpt_err *e);
/* Next row: 1 and *row filled, 0 at the end of the stream, -1 on error
 * (e names the file, the line and the column). Reads exactly one line per
 * row (plus any comment or blank lines before it) and never waits for the
 * line after it. */
int sched_next(struct sched_reader *r, struct sched_row *row, struct gpt_err *e);
/* 1 if the stream gives the four absolute lr_* columns, 0 for lr_scale. */
int sched_absolute(const struct sched_reader *r);
void sched_close(struct sched_reader *r);

/* ------------------------------------------------------------------------
 * The record's formulas (total = number of training steps, 1390)
 */
/* int(((1-x)*128 + x*1856)//128) with x = step/total, evaluated in float64
 * with Python's float floor division, so that it equals the record's
 * formula for every step count (for 1390 and 300 it also equals the
 * integer form 1 + floor(27*step/(2*total)); for some counts, e.g. 900,
 * the two differ where 27*step/(2*total) is an integer). */
int sched_record_window(long step, long total);
/* t = 1 - step/total; t >= cooldown_frac ? 1 : t/cooldown_frac (float64). */
double sched_record_lr_scale(long step, long total, double cooldown_frac);
/* frac = min(step/warmup, 1); 0.85*(1-frac) + 0.95*frac (warmup 0: 0.95). */
double sched_record_momentum(long step, long warmup);

/* ------------------------------------------------------------------------
 * Shapes: one curve per column, evaluated at step s of a run of N training
 * steps (rows 0..N; x = s/N). Grammar (gpt-sched(1)):
 *   const:V  linear:A:B  cosine:A:B  ramp:A:B:K  warmup:K:PEAK
 *   trapezoid:K:F[:FLOOR]  steps:V@S,V@S,...  points:V@S,V@S,...  grow:A:B
 */
enum sched_shape_kind {
	SHAPE_CONST, SHAPE_LINEAR, SHAPE_COSINE, SHAPE_RAMP, SHAPE_WARMUP,
	SHAPE_TRAPEZOID, SHAPE_STEPS, SHAPE_POINTS, SHAPE_GROW
};
#define SCHED_SHAPE_MAXPTS 64
struct sched_shape {
	enum sched_shape_kind kind;
	double a, b, c;                 /* parameters, by kind (see sched.c) */
	long k;                         /* a step count (ramp, warmup, trapezoid) */
	int npts;                       /* steps/points: V[i] from step at[i] */
	double v[SCHED_SHAPE_MAXPTS];
	long at[SCHED_SHAPE_MAXPTS];
	char text[1024];                /* the source text, for messages */
};
/* Parse text. integer: only shapes with integer values (const, steps,
 * grow with integer parameters), for the window. Errors name the shape. */
int sched_shape_parse(struct sched_shape *sh, const char *text, int integer, struct gpt_err *e);
double sched_shape_value(const struct sched_shape *sh, long step, long total);

/* ------------------------------------------------------------------------
 * Generating a stream
 */
struct sched_spec {
	long steps;                         /* N training steps: rows 0..N, row N eval-only */
	struct sched_shape lr;              /* lr_scale */
	struct sched_shape momentum;
	struct sched_shape window;
	long eval_every;                    /* eval at s % K == 0, and at N always; 0: at N only */
	long ckpt_every;                    /* ckpt at s > 0 with s % K == 0, and at N; 0: none */
	int absolute;                       /* write lr_embed.. lr_muon instead of lr_scale */
	double base_lr[SCHED_NGROUPS];      /* for absolute */
};
#define SCHED_RECORD_PRESET "record-2025-01-04"
/* Fill sp with a preset: steps (0: the preset's, 1390) and momentum_warmup
 * (< 0: the preset's, 300) rescale it; eval every 125, no checkpoints, the
 * record's base learning rates, lr_scale form. */
int sched_spec_preset(struct sched_spec *sp, const char *name, long steps, long momentum_warmup,
                      struct gpt_err *e);
/* Row s of the stream (0 <= s <= steps); *lr_scale gets the lr shape's value. */
void sched_spec_row(const struct sched_spec *sp, long s, struct sched_row *row, double *lr_scale);
/* Check every row against the reader's rules (lr >= 0, momentum in [0, 1],
 * window >= 1); the message names the column's shape and the step. */
int sched_spec_check(const struct sched_spec *sp, struct gpt_err *e);
/* Write the whole stream; -1 on a write error (errno set). */
int sched_write(FILE *fp, const struct sched_spec *sp);

/* Shortest decimal form of v that reads back to the same double (at most
 * 17 significant digits, %g style). buf must hold 32 bytes. */
char *sched_fmt(char *buf, double v);

#endif
