/*
 * attention.cuh - the record's attention core on the GPU (spec 4.5, 5, 9):
 * causal, document-masked, block-windowed attention of bf16 q, k, v with
 * head_dim 128, fp32 softmax, bf16 outputs. C-callable (C and CUDA).
 *
 * Files: attention_mask.cu (mask metadata, work count), attention_fwd.cu
 * (forward, mma.sync, and the dispatch), attention_fwd_wg.cu (forward,
 * wgmma), attention_bwd_fused.cu (the backward in one pass: dk, dv and
 * dq), attention_bwd.cu (delta; the split backward: dk/dv, then dq),
 * attention_simple.cu (a
 * plain one-warp-per-row version of forward and backward, slow, kept as the
 * simple correct path for tests and debugging); attention_impl.cuh holds
 * the device helpers they share (mma, ldmatrix, cp.async, mbarriers, TMA,
 * tile loads).
 *
 * Layouts (T tokens of one micro-batch, H heads):
 *   q, k, v, y, dy, dq, dk, dv: bf16 [T, H, 128] (the model's [T, D]
 *     activations, heads side by side), rows 16-byte aligned;
 *   lse: fp32 [H, T], natural log of sum_k exp(scale * q.k) per query;
 *   tokens: uint32 [T] on the device.
 * Scale 1/sqrt(128). T is a multiple of 128, at most ATTN_MAX_T.
 *
 * Mask (spec 5): query q attends key k iff k <= q, docs[k] == docs[q] and
 * q/128 - k/128 < W, docs[i] = number of eot tokens in tokens[0..i].
 * attn_mask_build() computes, on the device, docs, docs_low/docs_high per
 * 128-block and for each query block qb the first key block it visits:
 * the visited key blocks are exactly the "any" blocks of spec 5, which form
 * the run kb_first[qb]..qb (docs never decreases); for each key block kb
 * the query blocks that see it form the run kb..qb_last[kb]. Inside a run
 * a block pair is "full" (no element mask) iff kb < qb and
 * docs_low[qb] == docs_high[kb] and docs_low[kb] == docs_high[qb], else
 * "partial" (element predicate k <= q && docs[k] == docs[q]); the kernels
 * classify each visited pair with that formula (ATTN_BLOCK_FULL below).
 *
 * Kernels (128 x 128 tiles = mask blocks, 8 warps, bf16 products with
 * fp32 accumulation, cp.async staging; on compute capability 9.x with
 * sm_90a code, wgmma from 128-byte-swizzled shared memory in two
 * warpgroups: attention_fwd_wg.cu, attention_bwd_wg.cu (tiles loaded by
 * TMA on mbarriers); elsewhere ldmatrix + mma.sync m16n8k16):
 *   forward   one CTA per (query block, head): online softmax over the
 *             visited key blocks, y and lse;
 *   backward  delta = rowsum(dy * y) (fp32), then one CTA per (key block,
 *             head) accumulating dk, dv over the query blocks that see it
 *             and adding its share of dq into an fp32 workspace in a fixed
 *             order (kb descending, enforced by per-block flags), the last
 *             share writing dq (attention_bwd_wg.cu, attention_bwd_fused.cu);
 *   split     the same backward with a separate dq pass, one CTA per
 *             (query block, head), that recomputes S and dP (slower; kept
 *             for tests and benchmarks).
 * Every output element has a fixed summation order, so two runs on the
 * same inputs give identical bits.
 *
 * Errors: argument errors (T not a multiple of 128, T > capacity, head_dim
 * != 128, misaligned pointers, no attn_mask_build before) return -1 with a
 * message in e (e may be NULL); CUDA errors exit through CUDA_CHECK
 * (cuda_check.h). All launchers are asynchronous on stream s.
 *
 * A struct attn_mask belongs to one stream at a time: the backward uses its
 * delta workspace.
 */
#ifndef GPT_ATTENTION_CUH
#define GPT_ATTENTION_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

struct gpt_err;

#define ATTN_HEAD_DIM 128
#define ATTN_BLOCK 128
#define ATTN_MAX_T 65536

/* Classification of a visited block pair (kb in kb_first[qb]..qb). */
#define ATTN_BLOCK_FULL(qb, kb, lo, hi) \
	((kb) < (qb) && (lo)[qb] == (hi)[kb] && (lo)[kb] == (hi)[qb])

struct attn_mask {
	int max_T, max_heads;   /* capacity (attn_mask_alloc) */
	int T, window;          /* of the last attn_mask_build; window clamped to T/128 */
	int32_t *docs;          /* device [max_T] */
	int32_t *docs_low;      /* device [max_T/128]: docs[128 b] */
	int32_t *docs_high;     /* device [max_T/128]: docs[128 b + 127] */
	int32_t *kb_first;      /* device [max_T/128]: query block qb visits kb_first[qb]..qb */
	int32_t *qb_last;       /* device [max_T/128]: key block kb is seen by kb..qb_last[kb] */
	float *delta;           /* device [max_heads * max_T]: backward workspace */
	float *dqacc;           /* device [max_heads * max_T * 128]: fused backward's dq sums */
	int *sem;               /* device [max_heads * max_T/128]: its flags, 0 between launches */
	int *ticket;            /* device [1]: its CTA order counter, 0 between launches */
};

/* Device buffers for micro-batches of up to max_T tokens (a multiple of 128,
 * <= ATTN_MAX_T) and up to max_heads heads. */
int attn_mask_alloc(struct attn_mask *m, int max_T, int max_heads, struct gpt_err *e);
void attn_mask_free(struct attn_mask *m);

/* Mask metadata of one micro-batch: tokens (device, uint32 [T]), window W
 * >= 1 in 128-token blocks (any W >= T/128 means "no window"), eot id. */
int attn_mask_build(struct attn_mask *m, const uint32_t *tokens, int T, int window,
                    uint32_t eot, cudaStream_t s, struct gpt_err *e);

/* Forward: y (bf16 [T,H,128]) and lse (fp32 [H,T]) from q, k, v (bf16
 * [T,H,128]) with the mask of the last attn_mask_build (T = m->T). */
int attn_forward(void *y, float *lse, const void *q, const void *k, const void *v,
                 const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                 struct gpt_err *e);

/* The forward's two kernels: mma.sync (any GPU of compute capability
 * >= 8.0) and wgmma (9.x, builds with sm_90a code only: call it only where
 * attn_has_wgmma() says 1). attn_forward runs the wgmma one where
 * it can, unless GPT_ATTN_FWD=mma is in the environment. Same results up
 * to fp32 summation order. */
int attn_has_wgmma(void);
int attn_forward_mma(void *y, float *lse, const void *q, const void *k, const void *v,
                     const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                     struct gpt_err *e);
int attn_forward_wg(void *y, float *lse, const void *q, const void *k, const void *v,
                    const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                    struct gpt_err *e);

/* Backward: dq, dk, dv (bf16, overwritten) from dy and the forward's inputs
 * and outputs y, lse. Uses m->delta, m->dqacc, m->sem, m->ticket as
 * workspace. */
int attn_backward(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k,
                  const void *v, const void *y, const float *lse, const struct attn_mask *m,
                  int heads, int head_dim, cudaStream_t s, struct gpt_err *e);

/* The one-pass backward's two kernels (attn_backward picks one as
 * attn_forward does; GPT_ATTN_BWD=mma forces the mma.sync one): mma.sync
 * (attention_bwd_fused.cu) and wgmma (attention_bwd_wg.cu, only where
 * attn_has_wgmma()). Same results up to fp32 summation order. */
int attn_backward_mma(void *dq, void *dk, void *dv, const void *dy, const void *q,
                      const void *k, const void *v, const void *y, const float *lse,
                      const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                      struct gpt_err *e);
int attn_backward_wg(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k,
                     const void *v, const void *y, const float *lse, const struct attn_mask *m,
                     int heads, int head_dim, cudaStream_t s, struct gpt_err *e);

/* The split backward (attention_bwd.cu): same arguments and results up to
 * rounding (dq summed in another order), slower. */
int attn_backward_split(void *dq, void *dk, void *dv, const void *dy, const void *q,
                        const void *k, const void *v, const void *y, const float *lse,
                        const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                        struct gpt_err *e);

/* The same two operations by the simple path (attention_simple.cu): one
 * warp per query (or key) row and head, fp32 CUDA cores, token-level mask
 * over the same block runs. Same arguments, same outputs up to rounding;
 * slow (for tests and debugging). */
int attn_forward_simple(void *y, float *lse, const void *q, const void *k, const void *v,
                        const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                        struct gpt_err *e);
int attn_backward_simple(void *dq, void *dk, void *dv, const void *dy, const void *q,
                         const void *k, const void *v, const void *y, const float *lse,
                         const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                         struct gpt_err *e);

/* Work of one head of one attention layer for a micro-batch (host side,
 * from the host copy of the tokens), for FLOP accounting (spec 12.2):
 *   tiles       visited 128x128 tiles (the "any" blocks of spec 5);
 *   full_tiles  those of them without an element mask;
 *   pairs       allowed (query, key) pairs, i.e. T x mask-level L.
 * Forward FLOPs per head: mask-level 4 * 128 * pairs (QK^T and PV),
 * tile-level 4 * 128^3 * tiles; fwd+bwd = 3x forward (spec 12). Returns 0,
 * or -1 with a message for a bad T or window. */
struct attn_work {
	int64_t tiles, full_tiles, pairs;
};
int attn_count_work(const uint32_t *tokens, int T, uint32_t eot, int window, struct attn_work *w,
                    struct gpt_err *e);

#ifdef __cplusplus
}
#endif

#endif
