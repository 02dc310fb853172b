/*
 * embedding.cuh - embedding lookup and its deterministic backward (spec
 * 4.2: the token embedding and the value-embedding tables share the
 * tokens).
 *
 * Forward, up to EMBEDDING_MAX_TABLES tables [V, D] in one launch:
 *   embedding_forward(out, tables, ntables, tok, T, V, D, s)
 *       out[i][t, :] = tables[i][tok[t], :]   (bf16 [T, D] each; a token
 *       >= V gives a NaN row). out and tables: host arrays of ntables
 *       device pointers.
 *
 * Backward, in two steps: a plan sorts the token positions by token once
 * per micro-batch (cub::DeviceRadixSort, stable, so each token's positions
 * stay in increasing order); then each embedding_backward_* call adds
 *   grad[v, :] += scale * sum over t with tok[t] == v of dy[t, :]
 * for every token v present (tokens >= V are skipped; other rows are not
 * touched). The sum runs in fp32 in a fixed order (positions in order,
 * in runs of EMBEDDING_CHUNK sorted positions whose partial sums are then
 * added in order), so the bits depend only on the tokens and the data,
 * never on timing: no atomics. One writer per gradient row.
 *   embedding_plan_create(max_T, V, max_D)   device buffers (about
 *       16 max_T + 8 max_T max_D / EMBEDDING_CHUNK bytes and cub's scratch);
 *       exits with a message when CUDA fails
 *   embedding_plan_build(p, tok, T, s)       sort tok[0..T-1] (T <= max_T)
 *   embedding_backward_f32(grad, dy, ld_dy, scale, p, D, s)
 *       grad fp32 [V, D]: grad += scale * sum (one fp32 rounding per call)
 *   embedding_backward_bf16(grad, dy, ld_dy, scale, p, D, s)
 *       grad bf16 [V, D]: grad = bf16(grad + scale * sum) (one bf16 rounding)
 *   embedding_plan_free(p)
 * dy: bf16 rows of D at dy + t * ld_dy (ld_dy >= D, a multiple of 8);
 * scale: fp32 in device memory (the value mix's a[1]) or NULL for 1;
 * D <= max_D, a multiple of 8; pointers 16-byte aligned. A plan serves one
 * stream at a time (its scratch is reused by every backward call); build
 * it again when the tokens change.
 *
 * Which variant the engine should use: spec 9 stores embedding gradients
 * in bf16. PyTorch adds the bf16 gradients of a table's uses (a value
 * table serves layers i and 9+i), then its embedding backward sums per
 * token in fp32 and rounds to bf16 once. Recommended: embedding_backward_f32
 * into one fp32 buffer per table for every use in the step, rounded to
 * bf16 once when the step's gradient is complete (before the bf16
 * all-reduce): fewer roundings than PyTorch, bf16 where it is stored and
 * sent. embedding_backward_bf16 adds straight into a bf16 gradient (one
 * rounding per call) when the fp32 buffers (4 x V x D x 4 bytes, 618 MB
 * for the record) cannot be spared.
 */
#ifndef GPT_EMBEDDING_CUH
#define GPT_EMBEDDING_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#define EMBEDDING_MAX_TABLES 4
#define EMBEDDING_CHUNK 32 /* sorted positions per block of the backward */

#ifdef __cplusplus
extern "C" {
#endif

void embedding_forward(uint16_t *const out[], const uint16_t *const tables[], int ntables,
                       const uint32_t *tok, int T, int V, int D, cudaStream_t s);

struct embedding_plan;
struct embedding_plan *embedding_plan_create(int max_T, int V, int max_D);
void embedding_plan_build(struct embedding_plan *p, const uint32_t *tok, int T, cudaStream_t s);
void embedding_backward_f32(float *grad, const uint16_t *dy, int ld_dy, const float *scale,
                            const struct embedding_plan *p, int D, cudaStream_t s);
void embedding_backward_bf16(uint16_t *grad, const uint16_t *dy, int ld_dy, const float *scale,
                             const struct embedding_plan *p, int D, cudaStream_t s);
void embedding_plan_free(struct embedding_plan *p);

#ifdef __cplusplus
}
#endif

#endif
