/*
 * weights.h - model weights as safetensors files (format: gpt-weights(5)).
 *
 * Implements:
 *   weights_save(): a flat fp32 buffer laid out by gpt_table (config.h) ->
 *     a safetensors file with the record's dtypes (embed and value embeds
 *     BF16, everything else F32; spec 3.1 and 9) or all F32, tensors in
 *     state-dict order, __metadata__ from gpt_config_to_meta() followed by
 *     the caller's extra pairs. Output through struct aout (see
 *     safetensors.h: "-" is stdout, ".zst" compresses).
 *   weights_from_st(), weights_load(): a safetensors file -> configuration
 *     (from __metadata__ via gpt_config_from_meta(), or from the caller's
 *     default when the file has no "format" key, e.g. a converted PyTorch
 *     state dict) and a flat fp32 buffer. Every tensor of the table must be
 *     present with exactly its shape and nothing else may be (except the
 *     optimizer tensors "optim.*" of a gpt-train checkpoint, which has a
 *     "checkpoint" metadata key); names may
 *     carry PyTorch's "_orig_mod." (torch.compile) and "module." (DDP)
 *     prefixes (spec 3.1); F32, BF16 or F16 are accepted for any tensor.
 */
#ifndef GPT_WEIGHTS_H
#define GPT_WEIGHTS_H

#include "config.h"
#include "safetensors.h"

enum {
	WEIGHTS_F32 = 1,   /* every tensor F32 (default: the record's dtypes) */
	WEIGHTS_FORCE = 2, /* allow binary output to a terminal */
	WEIGHTS_ZSTD = 4,  /* compress even without a ".zst" suffix */
};

/* Write w (gpt_table total floats) for configuration c. extra holds nextra
 * key/value pairs (extra[2i], extra[2i+1]) added to __metadata__ after the
 * configuration keys. Returns 0, or -1 with e set for a bad configuration
 * or a clashing key (I/O errors die through aout, removing the output). */
int weights_save(const char *path, const struct gpt_config *c, const float *w, int flags,
                 const char *const *extra, int nextra, struct gpt_err *e);

/* Read the weights of an already loaded file. dflt (may be NULL) is used
 * only when the file carries no configuration. *w is allocated (64-byte
 * aligned, free() it) and holds gpt_table total floats. */
int weights_from_st(const struct st_file *f, const struct gpt_config *dflt, struct gpt_config *c,
                    float **w, struct gpt_err *e);
/* st_load + weights_from_st + st_free. */
int weights_load(const char *path, const struct gpt_config *dflt, struct gpt_config *c, float **w,
                 struct gpt_err *e);

/* name without leading "_orig_mod." and "module." prefixes (any mix). */
const char *weights_strip_prefix(const char *name);

#endif
