/*
 * engine.h - the training backends behind one interface.
 *
 * An engine holds the model's weights, gradient accumulator and optimizer
 * state wherever its backend keeps them (host memory for the CPU engine,
 * device memory for CUDA) and offers what the training loop (lib/train.c)
 * and gpt-eval need:
 *   micro()      loss of one micro-batch, optionally adding its gradient;
 *   zero_grad()  clear the accumulator;
 *   update()     one optimizer step (Adam + Muon) with the step's learning
 *                rates (indexed by enum gpt_group) and Muon momentum;
 *   state        named fp32 buffers for checkpoints: "params" (the flat
 *                weights, gpt_table layout) and the optimizer's buffers
 *                (optim.adam_m, optim.adam_v, optim.muon_momentum), copied
 *                out and in; plus the Adam step count.
 * Engines are created from a configuration and initial weights.
 */
#ifndef GPT_ENGINE_H
#define GPT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

struct engine;
struct dist; /* lib/dist.h: the ranks of a data-parallel run */

/* micro()'s grad argument */
enum {
	MICRO_LOSS = 0,      /* loss only */
	MICRO_GRAD = 1,      /* add this micro-batch's gradient to the accumulator */
	MICRO_GRAD_LAST = 2, /* the same, and it is the step's last micro-batch on this rank:
	                        afterwards the accumulator holds the mean over the ranks (spec 8:
	                        DDP averages); with one rank the same as MICRO_GRAD */
};

struct engine_ops {
	const char *name; /* "cpu", "cuda" */
	int (*micro)(struct engine *en, const uint32_t *inputs, const uint32_t *targets, int T,
	             int window, int grad, double *loss, struct gpt_err *e);
	/* softcapped logits of the last of T tokens into out[vocab] (generation) */
	int (*logits)(struct engine *en, const uint32_t *inputs, int T, int window, float *out,
	              struct gpt_err *e);
	void (*zero_grad)(struct engine *en);
	int (*update)(struct engine *en, const double lr[GPT_NGROUPS], double mu, struct gpt_err *e);
	int (*nstate)(struct engine *en);
	const char *(*state_name)(struct engine *en, int i);
	size_t (*state_numel)(struct engine *en, int i);
	int (*state_get)(struct engine *en, int i, float *dst, struct gpt_err *e);
	int (*state_set)(struct engine *en, int i, const float *src, struct gpt_err *e);
	/* the gradient accumulator (table layout), copied out */
	int (*grad_get)(struct engine *en, float *dst, struct gpt_err *e);
	int64_t (*steps)(struct engine *en);
	int (*set_steps)(struct engine *en, int64_t steps, struct gpt_err *e);
	/* sum n numbers over the ranks of a data-parallel run, in place, the
	 * same result on every rank (an engine without ranks, or world 1:
	 * nothing to do). The CPU engine uses dist_allreduce_f64; an engine may
	 * leave the op NULL, and lib/train.c then calls dist_allreduce_f64 */
	int (*allreduce)(struct engine *en, double *v, int n, struct gpt_err *e);
	/* peak memory the engine allocated, in bytes (0 if unknown) */
	uint64_t (*peak_bytes)(struct engine *en);
	/* the engine's choices that decide its bits beyond the weights and the
	 * state (the CUDA engine: the process's GEMM algorithms, gemm_export),
	 * as text to store beside the state (malloc'd; NULL: none), and their
	 * adoption from such a text (a warning, not an error, when they were
	 * made on another GPU or library and cannot apply). NULL ops: none */
	char *(*tuning_get)(struct engine *en);
	int (*tuning_set)(struct engine *en, const char *text, struct gpt_err *e);
	void (*free)(struct engine *en);
};

struct engine {
	const struct engine_ops *ops;
	struct gpt_config cfg;
	struct gpt_table table;
	int max_T;
	struct dist *dist; /* NULL: one process */
};

enum engine_device { ENGINE_AUTO, ENGINE_CPU, ENGINE_CUDA };

/* Create an engine for configuration c with weights w (table layout, copied)
 * for micro-batches of at most max_T tokens. ENGINE_AUTO picks CUDA when
 * this build has it and a device is present, else the CPU. train: also
 * allocate gradients and optimizer state (0 for evaluation only). */
struct engine *engine_create(enum engine_device dev, const struct gpt_config *c, const float *w,
                             int max_T, int train, struct gpt_err *e);
/* The same for one rank of a data-parallel run (d from dist_open, or NULL:
 * one process): every rank must pass the same c and w. The engine uses d
 * (it does not own it) to average gradients and sum numbers over ranks. */
struct engine *engine_create_dist(enum engine_device dev, const struct gpt_config *c,
                                  const float *w, int max_T, int train, struct dist *d,
                                  struct gpt_err *e);
void engine_free(struct engine *en);
/* Parse "cpu", "cuda", "auto". */
int engine_parse_device(const char *s, enum engine_device *out);
/* The --device and --threads options every program that runs a model has:
 * parse arg (usage error through t on a bad value). */
void engine_cli_device(const struct cli_text *t, const char *arg, enum engine_device *out);
void engine_cli_threads(const struct cli_text *t, const char *arg);

/* The CPU engine (lib/engine_cpu.c). */
struct engine *engine_cpu_create(const struct gpt_config *c, const float *w, int max_T, int train,
                                 struct gpt_err *e);
/* The CUDA engine (lib/engine_cuda.c; only in builds with GPT_CUDA). Same
 * arguments as engine_cpu_create; NULL and a message without a device. */
struct engine *engine_cuda_create(const struct gpt_config *c, const float *w, int max_T, int train,
                                  struct gpt_err *e);
/* With ranks: d may be NULL. Exchanges the NCCL id over d (dist_bcast). */
struct engine *engine_cuda_create_dist(const struct gpt_config *c, const float *w, int max_T,
                                       int train, struct dist *d, struct gpt_err *e);
/* 1 if the CUDA engine is built in and a device is present. */
int engine_cuda_available(void);

#endif
