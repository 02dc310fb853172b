/*
 * train.h - the training loop of gpt-train, independent of the backend.
 *
 * train_run() reads a schedule stream row by row (lib/schedule.h) and, for
 * each row s: evaluates the validation loss if the row asks (before training
 * step s, with the row's window), writes a checkpoint if it asks, then runs
 * training step s if the row trains: the step's global batch from the
 * loader (spec 7.2) cut into micro-batches whose gradients are summed
 * (spec 8), then one optimizer step. It writes one JSON line per step, per
 * evaluation and per checkpoint to stdout and a final "end" line.
 *
 * Data-parallel (lib/dist.h): with P ranks (from the launcher's
 * environment, or gpt-train --gpus) the train loader gives rank r its
 * slice of the global batch (spec 7.2), cut into batch/P/seq_len
 * micro-batches whose gradients are summed on the rank and averaged over
 * the ranks with the last one (MICRO_GRAD_LAST, spec 8). Rank 0 reads the
 * schedule and broadcasts each row; after each step the ranks sum their
 * losses and stop flags (the logged loss is the mean over ranks, and every
 * rank stops after the same step when any got SIGINT/SIGTERM).
 * Validation (spec 10) reads P*seq_len tokens per step, one sequence per
 * rank, for val_tokens/(P*seq_len) steps; its loss is the mean over all
 * sequences. Only rank 0 prints, writes checkpoints and the final weights;
 * every rank reads --resume. A rank that fails tells the others
 * (dist_abort through die()), which stop with "rank K failed: ...".
 *
 * Checkpoints are one safetensors file each: the weights (F32) under their
 * state-dict names, the optimizer state as flat tensors optim.*, and in
 * __metadata__ the configuration, the step, the Adam step count, the data
 * position and the batch geometry. --resume continues from one with the
 * same bits as an uninterrupted run.
 */
#ifndef GPT_TRAIN_H
#define GPT_TRAIN_H

#include <stdint.h>

#include "engine.h"

struct train_opts {
	const char *weights;       /* initial weights (or NULL with resume) */
	const char *resume;        /* checkpoint to continue from */
	const char *const *train;  /* training shard patterns */
	int ntrain;
	const char *const *val;    /* validation shard patterns (may be 0) */
	int nval;
	const char *schedule;      /* schedule stream path, "-" = stdin */
	const char *output;        /* final weights, or NULL */
	const char *ckpt_dir;      /* directory for checkpoints, or NULL */
	int keep_ckpts;            /* keep the newest N checkpoints (0: all) */
	int64_t batch_tokens;      /* global batch per step (record 524288) */
	int seq_len;               /* micro-batch length T (record 65536) */
	int64_t val_tokens;        /* tokens per evaluation, -1: automatic */
	double base_lr[GPT_NGROUPS];
	enum engine_device device;
	int f32_output;            /* final weights all F32 instead of the record dtypes */
	const char *dist_init;     /* rendezvous of the ranks, NULL: MASTER_ADDR/MASTER_PORT */
	double dist_timeout;       /* seconds a rank waits for another, <= 0: 600 */
	int threads_given;         /* --threads given (else P ranks on a host share its CPUs) */
};

#define TRAIN_DEFAULT_BATCH 524288
#define TRAIN_DEFAULT_SEQ 65536

/* Micro-batches per rank and step: batch_tokens / world / seq_len, which
 * must be a whole number >= 1; else -1 and e naming the numbers. */
int train_micro_batches(int64_t batch_tokens, int seq_len, int world, struct gpt_err *e);

/* Run; returns the exit status (0, 1, or 128+signal after a clean stop). */
int train_run(const struct train_opts *o);

/* Checkpoint helpers, shared with gpt-eval (which accepts checkpoints as
 * weights). */
/* pending_eval: 1 when the row at `step` has not been evaluated yet (a
 * checkpoint written on a signal, between rows). */
int ckpt_write(const char *path, struct engine *en, int64_t step, int pending_eval, size_t file,
               uint64_t pos, int64_t batch_tokens, int seq_len, struct gpt_err *e);

#endif
