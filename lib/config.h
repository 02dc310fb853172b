/*
 * config.h - the model configuration and its parameter table.
 *
 * Implements:
 *   - struct gpt_config: every shape and constant of the record's model
 *     (spec sections 2-5), generalised to any size;
 *   - the record preset (gpt_config_record) and validation;
 *   - conversion to/from safetensors __metadata__ (string key/values);
 *   - the parameter table: every tensor in PyTorch state-dict order
 *     (spec 3.1) with its name, shape, file dtype, optimizer group and its
 *     offset in one flat fp32 buffer;
 *   - struct gpt_ptrs: per-layer pointers into such a flat buffer (used for
 *     weights, gradients and optimizer state alike).
 *
 * Value embeddings: with V tables and L layers, layer i uses table i when
 * i < V, table i-(L-V) when i >= L-V, none otherwise (the record's
 * "012...012" with V = 3, L = 12). Requires L even and L >= 2V.
 * U-net: L/2 encoder blocks, L/2 decoder blocks, L/2 skip weights.
 */
#ifndef GPT_CONFIG_H
#define GPT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define GPT_MAX_LAYERS 64
#define GPT_RECORD_PRESET "record-2025-01-04"

struct gpt_config {
	int vocab;        /* padded vocabulary (rows of embed/lm_head), record 50304 */
	int layers;       /* record 12 (even) */
	int dim;          /* model width, record 768 */
	int heads;        /* record 6 */
	int head_dim;     /* dim / heads, record 128 */
	int mlp_hidden;   /* record 3072 (4 x dim) */
	int value_embeds; /* number of value-embedding tables, record 3 */
	uint64_t no_attn; /* bit i set: layer i has no attention (record: bit 7) */
	float softcap;    /* logits = c * tanh(logits / c); 0 disables; record 15 */
	float norm_eps;   /* RMS-norm epsilon, record 2^-7 (spec 4.1) */
	int rope_freqs;   /* rotary frequencies with nonzero value: head_dim/4 (32);
	                     the other head_dim/2 - rope_freqs pairs pass through */
	float rope_min_freq; /* freq_j = rope_min_freq^(j/(rope_freqs-1)), record 1/1024 */
	int attn_block;   /* mask block size in tokens, record 128 */
	int eot;          /* end-of-text token that opens each document, 50256 */
	int max_seq;      /* longest micro-batch the rotary table covers, 65536 */
};

/* The record's model (spec section 2). */
void gpt_config_record(struct gpt_config *c);
/* Check every field and the relations between them; names the bad field. */
int gpt_config_check(const struct gpt_config *c, struct gpt_err *e);

/* Model FLOPs per trained token (forward + backward) by spec section 12:
 * 6 N for the N matmul weights (attention q, k, v, o of the layers with
 * attention, MLP fc and proj, lm_head) plus 3 * A * 4 * dim * L for the
 * attention core of the A attention layers, with L the mask-level keys per
 * query of a window of `window` blocks without document boundaries:
 * 128 (window - 1) + 64.5 (spec 12.2). The MFU figure of gpt-train. */
double gpt_flops_per_token(const struct gpt_config *c, int window);
/* Dense bf16 peak for MFU, TFLOP/s: $GPT_PEAK_TFLOPS, else 989.4 (spec 12.3). */
double gpt_peak_tflops(void);
/* Value-embedding table used by layer i, or -1. */
int gpt_layer_ve(const struct gpt_config *c, int layer);
/* 1 if layer i has attention. */
static inline int gpt_layer_attn(const struct gpt_config *c, int layer)
{
	return !((c->no_attn >> layer) & 1u);
}

/* __metadata__ keys/values (strings). gpt_config_to_meta fills at most
 * GPT_META_MAX pairs and returns their number; keys and values point into
 * a buffer owned by the caller's struct gpt_meta. */
#define GPT_META_MAX 24
struct gpt_meta {
	int n;
	char key[GPT_META_MAX][32];
	char val[GPT_META_MAX][96];
};
void gpt_config_to_meta(const struct gpt_config *c, struct gpt_meta *m);
/* get(ctx, key) returns the value string or NULL. Missing keys are errors
 * except those with a documented default (norm_eps, softcap...). */
int gpt_config_from_meta(struct gpt_config *c, const char *(*get)(void *ctx, const char *key),
                         void *ctx, struct gpt_err *e);

/* ------------------------------------------------------------------------
 * Parameter table
 */
enum gpt_group {
	GPT_GROUP_EMBED,  /* Adam, lr 0.6: embed + value embeds */
	GPT_GROUP_HEAD,   /* Adam, lr 0.008: lm_head */
	GPT_GROUP_SCALAR, /* Adam, lr 0.04: skip_weights, lambdas */
	GPT_GROUP_MUON,   /* Muon, lr 0.05: every 2-D matrix under blocks */
	GPT_NGROUPS
};

enum gpt_kind {
	GPT_P_SKIP,        /* skip_weights [L/2] */
	GPT_P_EMBED,       /* embed.weight [V, D] */
	GPT_P_LAMBDAS,     /* blocks.i.lambdas [2] */
	GPT_P_ATTN_LAMBDAS,/* blocks.i.attn.lambdas [2] */
	GPT_P_Q,           /* blocks.i.attn.c_q.weight [D, D] */
	GPT_P_K,
	GPT_P_V,
	GPT_P_ATTN_PROJ,   /* blocks.i.attn.c_proj.weight [D, D] */
	GPT_P_FC,          /* blocks.i.mlp.c_fc.weight [H, D] */
	GPT_P_MLP_PROJ,    /* blocks.i.mlp.c_proj.weight [D, H] */
	GPT_P_VALUE_EMBED, /* value_embeds.embed.j.weight [V, D] */
	GPT_P_HEAD,        /* lm_head.weight [V, D] */
};

enum gpt_dtype { GPT_F32, GPT_BF16 };

struct gpt_param {
	char name[48];
	enum gpt_kind kind;
	enum gpt_group group;
	enum gpt_dtype dtype; /* dtype in the record's state dict (spec 3.1) */
	int layer;            /* block index, or value-embed index, or -1 */
	int ndim;             /* 1 or 2 */
	int64_t shape[2];     /* [out, in] for matrices */
	size_t numel;
	size_t offset;        /* in the flat fp32 buffer, in elements */
};

struct gpt_table {
	int n;
	struct gpt_param *p; /* n entries, state-dict order */
	size_t total;        /* sum of numel */
};
/* Build the table (offsets follow state-dict order, no padding). */
void gpt_table_build(const struct gpt_config *c, struct gpt_table *t);
void gpt_table_free(struct gpt_table *t);
/* Index of a parameter by name, or -1. */
int gpt_table_find(const struct gpt_table *t, const char *name);

/* Pointers into one flat buffer laid out by the table. NULL where a layer
 * has no such tensor (no attention, no value embedding). */
struct gpt_layer_ptrs {
	float *lambdas, *attn_lambdas;
	float *q, *k, *v, *attn_proj;
	float *fc, *mlp_proj;
};
struct gpt_ptrs {
	float *skip, *embed, *head;
	float *ve[8];
	struct gpt_layer_ptrs l[GPT_MAX_LAYERS];
};
void gpt_ptrs_bind(const struct gpt_config *c, const struct gpt_table *t, float *base,
                   struct gpt_ptrs *out);

#endif
