/*
 * eval.h - what gpt-eval does: loss over validation shards, the gradient of
 * one sequence (for comparisons with other implementations), and sampling.
 */
#ifndef GPT_EVAL_H
#define GPT_EVAL_H

#include <stdint.h>

#include "engine.h"

struct eval_opts {
	const char *weights;      /* weights or a gpt-train checkpoint */
	const char *const *val;   /* validation shard patterns */
	int nval;
	int64_t tokens;           /* -1: automatic */
	int seq_len;              /* 0: 65536, capped to what the first shard holds */
	int window;
	const char *grad_out;     /* gradient of the first sequence, or NULL */
	int sample;               /* tokens to generate (0: evaluate) */
	const char *prompt;
	double temperature;
	int top_k;
	uint64_t seed;
	enum engine_device device;
};

/* Each returns the exit status; messages go to stderr, JSON to stdout. */
int eval_loss(const struct eval_opts *o);
int eval_sample(const struct eval_opts *o);

#endif
