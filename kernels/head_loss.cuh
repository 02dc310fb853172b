/*
 * head_loss.cuh - the language-model head on the GPU, chunked (spec 4.8):
 * logits = x W^T (bf16), z = cap * tanh(logits / cap), loss = mean over
 * tokens of cross entropy(z, target), and its backward. C-callable; bf16
 * tensors are uint16_t bits.
 *
 * Per chunk of at most chunk_rows tokens (rows r0 .. r0+n-1):
 *   1. L = x_c W^T                 [n, V] bf16  (gemm_fwd: fp32 accumulation)
 *   2. one fused kernel per row t (fp32 math; by default, for 0 < cap <= 40
 *      and V % 8 == 0, a fast two-pass form with the exp unit's tanh and no
 *      max, since z is bounded: see head_loss.cu; HEAD_LOSS_PRECISE keeps
 *      the three-pass form with tanhf/expf): z_v = cap*tanh(L_v/cap)
 *      (cap = 0: z = L), lse = max + log(sum exp(z - max)) over all V
 *      columns (the padded ones too), loss_t = lse - z[target_t]; with the
 *      backward it overwrites the row of L in bf16 with
 *      dL_v = (exp(z_v - lse) - [v == target_t]) / T * (1 - (z_v/cap)^2)
 *      (the chain through the softcap; T is the whole micro-batch, so the
 *      gradient is that of the mean loss; the factor is 1 when cap = 0);
 *   3. dx_c = dL W                 [n, D] bf16  (gemm_bwd_dx)
 *   4. dW  += dL^T x_c             [V, D] fp32  (gemm_bwd_dw; the first
 *      chunk uses the caller's dw_beta, the others 1)
 * then the mean of the per-token losses, summed in double in a fixed order
 * (bitwise repeatable), stored as fp32.
 *
 * So the T x V logits never exist at once: the head holds chunk_rows x V
 * bf16 (8192 x 50304 x 2 = 824 MB for the default chunk) plus T floats of
 * per-token losses; head_loss_bytes() says exactly. Each row's kernel keeps
 * z in shared memory (V floats, 201 KB for V = 50304) when the device has
 * room, else it recomputes z from L (HEAD_LOSS_NO_ROW_CACHE forces that;
 * both give the same bits).
 *
 * A target >= V gives that token a NaN loss (and so a NaN mean) and no
 * one-hot term; inputs are never checked on the host.
 *
 * All work is queued on the gemm context's stream; nothing synchronises.
 * Errors exit(1) with a message (cuda_check.h convention).
 */
#ifndef GPT_HEAD_LOSS_CUH
#define GPT_HEAD_LOSS_CUH

#include <stddef.h>
#include <stdint.h>

#include "gemm.cuh"

#ifdef __cplusplus
extern "C" {
#endif

#define HEAD_LOSS_CHUNK_DEFAULT 8192

enum { HEAD_LOSS_NO_ROW_CACHE = 1, HEAD_LOSS_PRECISE = 2 };

struct head_loss;

/* Head for micro-batches of up to max_T tokens, vocabulary `vocab`
 * (padded; 50304), model width `dim` (768); chunk_rows <= 0 means
 * HEAD_LOSS_CHUNK_DEFAULT (clamped to max_T). Allocates the chunk's logits
 * and the per-token losses on the current device. flags: HEAD_LOSS_*. */
struct head_loss *head_loss_create(int max_T, int vocab, int dim, int chunk_rows, int flags);
void head_loss_free(struct head_loss *h);
/* Device bytes held by h (logits chunk + per-token losses). */
size_t head_loss_bytes(const struct head_loss *h);
int head_loss_chunk_rows(const struct head_loss *h);
/* 1 when rows keep z in shared memory. */
int head_loss_row_cache(const struct head_loss *h);
/* Device array [max_T]: per-token losses of the last call (fp32). */
const float *head_loss_token_losses(const struct head_loss *h);

/* Forward and backward of one micro-batch of T tokens (1 <= T <= max_T):
 *   x[T, dim] bf16 (the final norm's output), w16[vocab, dim] bf16 (the
 *   head weights cast from the fp32 master, cast_f32_to_bf16),
 *   targets[T] device uint32, softcap (record: 15; 0 disables).
 * Writes dx[T, dim] bf16 (= d loss / d x), dw[vocab, dim] fp32 =
 * dw_beta * dw + d loss / d W (dw_beta 0: overwrite, 1: accumulate), and,
 * if loss != NULL, the mean loss to the device float *loss. */
void head_loss_forward_backward(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x,
                                const uint16_t *w16, const uint32_t *targets, int T,
                                float softcap, uint16_t *dx, float *dw, float dw_beta,
                                float *loss);

/* Forward only (evaluation): the mean loss to the device float *loss and
 * the per-token losses (head_loss_token_losses). Same bits as the
 * forward_backward call's losses for the same inputs. */
void head_loss_forward(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x,
                       const uint16_t *w16, const uint32_t *targets, int T, float softcap,
                       float *loss);

#ifdef __cplusplus
}
#endif

#endif
