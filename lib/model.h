/*
 * model.h - the CPU reference model: forward and backward of the record's
 * GPT (spec sections 4 and 5) in plain fp32 C, for any struct gpt_config.
 *
 * Implements:
 *   - struct cpu_model: activations for up to max_T tokens and
 *     cpu_model_step(): loss of one micro-batch and, optionally, the
 *     gradient of that loss added into a flat gradient buffer;
 *   - struct cpu_model64: the same model compiled over double (for
 *     finite-difference gradient checks and as a high-precision reference);
 *   - the attention mask of spec section 5 (gpt_mask_*);
 *   - the rotary table of spec 4.6 (gpt_rope_table);
 *   - the attention core in fp32 (cpu_attention_forward/backward), the
 *     reference for GPU attention kernels.
 *
 * The math, per micro-batch of T tokens (inputs x, targets y):
 *   x0 = norm(embed[x]);  x = x0;  skips = []
 *   for layer i: (decoder layer L/2+j first adds skip_weights[j] * pop())
 *     x = l0*x + l1*x0
 *     if attention: h = norm(x); q,k,v = h Wq^T, h Wk^T, h Wv^T
 *                   v = a0*v + a1*ve[x]  (a0*v in layers without a table)
 *                   q,k = rope(norm_head(q)), rope(norm_head(k))
 *                   x += attn(q,k,v) Wo^T    (scale 1/sqrt(head_dim))
 *     x += relu(norm(x) Wfc^T)^2 Wproj^T
 *     encoder layers (i < L/2) push x
 *   z = softcap(norm(x) Whead^T);  loss = mean over tokens of CE(z, y)
 * norm(r) = r / sqrt(mean(r^2) + norm_eps), no weight; no biases anywhere.
 *
 * Weights and gradients are flat buffers laid out by gpt_table_build()
 * (config.h); the caller owns them. Everything is fp32 (the bf16 of spec
 * section 9 is a GPU matter); double is used only for reductions over
 * tokens or the vocabulary (loss sums, softmax denominators of the head,
 * scalar-parameter gradients). Results are bitwise independent of the
 * thread count (lib/parallel.h): every sum runs in a fixed order.
 *
 * Memory (floats; T = max_T): (7 D + F) T per layer with attention,
 * (2 D + F) T without; D T per encoder layer for the U-net skips; 14 D T
 * + 2 F T of work buffers; a transposed copy of lm_head (V D); 128 V of
 * logits. T x V logits and T x T attention matrices are never
 * materialised. Example: T = 4096, V = 50304, 4 layers of width 128 run
 * in 365 MB of RSS, weights and gradients included.
 *
 * A model runs one step at a time (it holds that step's activations); use
 * one model per concurrent caller.
 */
#ifndef GPT_MODEL_H
#define GPT_MODEL_H

#include <stdint.h>

#include "config.h"
#include "util.h"

struct cpu_model;

/* Model for configuration c (checked with gpt_config_check) and micro-
 * batches of at most max_T tokens (1 <= max_T <= c->max_seq). NULL and a
 * message in e on a bad configuration or when memory runs out. */
struct cpu_model *cpu_model_create(const struct gpt_config *c, int max_T, struct gpt_err *e);
void cpu_model_free(struct cpu_model *m);

/* One micro-batch: inputs[T], targets[T] (token ids < vocab), window W >= 1
 * in attention blocks (spec 5), w the flat weights. Sets *loss to the mean
 * cross entropy over the T tokens. If grad != NULL also runs the backward
 * and ADDS d(loss)/d(w) into grad (same layout as w), so micro-batches can
 * be summed. Returns 0, or -1 with a message (bad T, window or token id;
 * nothing is written then). Rotary positions restart at 0 on every call. */
int cpu_model_step(struct cpu_model *m, const float *w, const uint32_t *inputs,
                   const uint32_t *targets, int T, int window, float *grad, double *loss,
                   struct gpt_err *e);
/* Forward only, for generation: out[vocab] receives the softcapped logits
 * of the last of the T input tokens. Returns 0 or -1 with a message. */
int cpu_model_logits(struct cpu_model *m, const float *w, const uint32_t *inputs, int T, int window,
                     float *out, struct gpt_err *e);

/* The same model over double: same rules, weights and gradients in double.
 * Slow (plain loops for the matrix products); meant for tests. */
struct cpu_model64;
struct cpu_model64 *cpu_model64_create(const struct gpt_config *c, int max_T, struct gpt_err *e);
void cpu_model64_free(struct cpu_model64 *m);
int cpu_model64_step(struct cpu_model64 *m, const double *w, const uint32_t *inputs,
                     const uint32_t *targets, int T, int window, double *grad, double *loss,
                     struct gpt_err *e);
int cpu_model64_logits(struct cpu_model64 *m, const double *w, const uint32_t *inputs, int T,
                       int window, double *out, struct gpt_err *e);

/* ------------------------------------------------------------------------
 * Attention mask (spec section 5)
 *
 * docs[i] = number of eot tokens in inputs[0..i]. Query q may attend key k
 * iff k <= q, docs[k] == docs[q] and q/block - k/block < window. For one
 * query the allowed keys form one run [first_key[q], q]; for one key the
 * queries that see it form one run [k, last_query[k]] (docs never
 * decreases). The attention loops over exactly these runs.
 */
void gpt_mask_docs(const uint32_t *inputs, int T, int eot, int32_t *docs);
int gpt_mask_allowed(const int32_t *docs, int q, int k, int window, int block);
void gpt_mask_ranges(const int32_t *docs, int T, int window, int block, int32_t *first_key,
                     int32_t *last_query);

/* Rotary table (spec 4.6) for positions 0..T-1: cos[t*n + j], sin[t*n + j]
 * for the n = c->rope_freqs nonzero frequencies (the other head_dim/2 - n
 * pairs have cos 1, sin 0). Computed in fp32 as the record does:
 * u = torch.linspace(0, 1, n), freq_j = rope_min_freq^u_j, theta = t*freq_j. */
void gpt_rope_table(const struct gpt_config *c, int T, float *cos_t, float *sin_t);

/* Attention core, fp32. q, k, v, y, dy, dq, dk, dv: [T, heads*head_dim]
 * (heads side by side); lse: [T, heads], the natural-log sum of exp of each
 * query's scaled scores. Scale 1/sqrt(head_dim); keys of query t are
 * first_key[t]..t (gpt_mask_ranges). The backward recomputes the
 * probabilities from lse and overwrites dq, dk, dv. */
void cpu_attention_forward(float *y, float *lse, const float *q, const float *k, const float *v,
                           int T, int heads, int head_dim, const int32_t *first_key);
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dy, const float *q,
                            const float *k, const float *v, const float *y, const float *lse,
                            int T, int heads, int head_dim, const int32_t *first_key,
                            const int32_t *last_query);

#endif
