/*
 * head_loss.cuh - the language-model head on the GPU, chunked (spec 4.8):
 * logits = x W^T (bf16), z = cap * tanh(logits / cap), loss = mean over
 * tokens of cross entropy(z, target), and its backward. C-callable; bf16
 * tensors are uint16_t bits.
 *
 * Per chunk of at most chunk_rows tokens (rows r0 .. r0+n-1), by default
 * (the Q path: 0 < cap <= HEAD_Q_MAX_CAP = 40 and V % 8 == 0, neither
 * HEAD_LOSS_PRECISE nor HEAD_LOSS_LEGACY; head_q.cuh has the math):
 *   1. head_loss_produce (below): Q [n, V] bf16 over the logits buffer,
 *      part [n, P] fp32 (P = ceil(V / 256)), ztgt [n] fp32;
 *   2. head_q_finish: S_t = sum of part[t, :] (fixed order), loss_t =
 *      log S_t + cap - ztgt_t, r_t = 1 / (T S_t), and Q_t,target =
 *      bf16((exp(ztgt - cap) - S_t) (1 - (ztgt / cap)^2)) from fp32;
 *      then dL = diag(r) Q;
 *   3. dx_c = bf16(r (Q W))        [n, D]  (gemm_rm to fp32, head_q_scale
 *      rounds once)
 *   4. dW  += Q^T bf16(r x_c)      [V, D] fp32 (gemm_bwd_dw)
 * so the logits are read once by a row kernel, not twice.
 *
 * Otherwise (cap = 0, cap > 40, V % 8 != 0, or the flags), the row path:
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
 * per-token losses, and for the Q path chunk_rows x (P + 2) floats and
 * chunk_rows x D fp32 + bf16 (8192 rows: 6.5 + 0.07 + 37.7 MB);
 * head_loss_bytes() says exactly. Each row's kernel keeps
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

/* NO_ROW_CACHE: the precise kernel recomputes z (same bits); PRECISE: the
 * precise row kernel for every cap; LEGACY: the fast row kernel instead
 * of the Q path (for comparisons). */
enum { HEAD_LOSS_NO_ROW_CACHE = 1, HEAD_LOSS_PRECISE = 2, HEAD_LOSS_LEGACY = 4 };

struct head_loss;

/* Head for micro-batches of up to max_T tokens, vocabulary `vocab`
 * (padded; 50304), model width `dim` (768); chunk_rows <= 0 means
 * HEAD_LOSS_CHUNK_DEFAULT (clamped to max_T). Allocates the chunk's logits
 * and the per-token losses on the current device. flags: HEAD_LOSS_*. */
struct head_loss *head_loss_create(int max_T, int vocab, int dim, int chunk_rows, int flags);
void head_loss_free(struct head_loss *h);
/* Device bytes held by h (logits chunk + per-token losses + the Q path's
 * buffers when it may run). */
size_t head_loss_bytes(const struct head_loss *h);
int head_loss_chunk_rows(const struct head_loss *h);
/* 1 when rows keep z in shared memory. */
int head_loss_row_cache(const struct head_loss *h);
/* Device array [max_T]: per-token losses of the last call (fp32). */
const float *head_loss_token_losses(const struct head_loss *h);
/* 1 when calls with this softcap take the Q path. */
int head_loss_q_path(const struct head_loss *h, float softcap);

/* The Q path's producer for one chunk of n rows (1 <= n; V % 8 == 0;
 * 0 < cap <= HEAD_Q_MAX_CAP):
 *   in:  x[n, D] bf16 (the chunk's rows), w16[V, D] bf16, targets[n];
 *        L: the chunk's logits buffer, [n, V] bf16, 16-byte aligned;
 *   out: part[n, P] fp32, P = ceil(V / 256): part[t, p] = sum of e_v over
 *        columns 256 p .. min(256 p + 255, V - 1), summed in fp32 in an
 *        order the implementation fixes (bitwise repeatable);
 *        ztgt[n] fp32: z of the target column, the very value its e and Q
 *        came from (0 when target >= V);
 *        want_q: L[t, v] = Q_tv = bf16(e_v f_v) for every column (the
 *        target's is overwritten by head_q_finish); want_q = 0 (the loss
 *        only): L's contents afterwards are unspecified, part and ztgt are
 *        the same bits as with want_q = 1;
 *   where Lb_v = bf16(sum_k x[t, k] w16[v, k]) (fp32 accumulation, the
 *   rounding gemm_fwd does), z_v = cap tanh(Lb_v / cap), e_v =
 *   exp(z_v - cap), f_v = 1 - (z_v / cap)^2, each by head_q.cuh's
 *   head_q_z / head_q_e / head_q_f (fp32). Queued on g's stream.
 * This implementation: gemm_fwd into L, then head_q_rows. A fused GEMM
 * epilogue may replace it: same outputs, the part sums in its own order. */
void head_loss_produce(struct gemm_ctx *g, uint16_t *L, float *part, float *ztgt,
                       const uint16_t *x, const uint16_t *w16, const uint32_t *targets, int n,
                       int V, int D, float cap, int want_q);

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
