/*
 * head_q.cuh - the row pieces of the LM head's "Q" path (head_loss.cu): the
 * softcapped cross entropy of a chunk of logits written as per-row partial
 * sums plus an unnormalised gradient Q, so that no kernel has to read the
 * [n, V] logits twice. C-callable launchers on a stream; bf16 tensors are
 * uint16_t bits. Also compiled for the host emulation (tests/gpu/emu,
 * ATT_EMULATE).
 *
 * Math, per token row t of a chunk (Lb_v the bf16 logit, cap > 0):
 *   z_v = cap tanh(Lb_v / cap),  e_v = exp(z_v - cap) (<= 1: no max),
 *   f_v = 1 - (z_v / cap)^2 (the softcap's derivative),
 *   S_t = sum_v e_v over all V columns, lse_t = log S_t + cap,
 *   loss_t = lse_t - z_{t,y} (y the target),
 *   dL_tv = (e_v / S_t - [v == y]) f_v / T = r_t Q_tv,  r_t = 1 / (T S_t),
 *   Q_tv = bf16(e_v f_v) (v != y),  Q_ty = bf16((e_y - S_t) f_y).
 * The elementwise forms (head_q_z/e/f below, device code) are the fast
 * ones of the head's fast row kernel (tanh through the exp unit); anything
 * producing part/ztgt/Q must use them so that head_q_finish's recomputation
 * of the target element agrees with the producer.
 *
 * Layout: part[n, P] fp32, P = head_q_tiles(V): part[t, p] = sum of e_v
 * over the column tile p, columns 256 p .. min(256 p + 255, V - 1), in an
 * order fixed by the producer (bitwise repeatable); ztgt[n] fp32 = z_{t,y}
 * (0 when y >= V).
 *
 *   head_q_rows():   from Lb (in place) to part, ztgt and (want_q) Q over
 *                    Lb; Q's target element is left as e f (head_q_finish
 *                    fixes it). One block of 256 threads per row, one warp
 *                    per column tile: lane i sums its 8 columns in order,
 *                    then a fixed xor butterfly over the warp. Needs
 *                    V % 8 == 0, L 16-byte aligned, 0 < cap.
 *   head_q_finish(): per row (one warp, fixed order): S_t = sum of
 *                    part[t, 0..P) (lane i sums p = i, i + 32, ... in
 *                    order, then the butterfly), losses[t] (NaN when
 *                    y >= V), and with Q != NULL r[t] and Q_ty =
 *                    bf16((e(ztgt) - S) f(ztgt)) in fp32 (nothing written
 *                    when y >= V: no one-hot term).
 *   head_q_scale():  dx = bf16(r_t acc_t) from the fp32 product acc = Q W,
 *                    and xs = bf16(r_t x_t) for dW += Q^T xs; [n, D].
 */
#ifndef GPT_HEAD_Q_CUH
#define GPT_HEAD_Q_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HEAD_Q_TILE 256    /* columns per partial sum */
#define HEAD_Q_MAX_CAP 40.0f /* e = exp(z - cap) >= exp(-2 cap) stays a normal float */

static inline int head_q_tiles(int V) { return (V + HEAD_Q_TILE - 1) / HEAD_Q_TILE; }

/* L[n, V] bf16 logits in, part[n, P], ztgt[n] out; want_q: Q over L. */
void head_q_rows(uint16_t *L, float *part, float *ztgt, const uint32_t *targets, int n, int V,
                 float cap, int want_q, cudaStream_t s);
/* losses[n]; Q != NULL: r[n] = 1 / (T S) and the target elements of Q[n, V]. */
void head_q_finish(uint16_t *Q, float *r, float *losses, const float *part, const float *ztgt,
                   const uint32_t *targets, int n, int V, float cap, int T, cudaStream_t s);
/* dx[n, D] = bf16(r acc), xs[n, D] = bf16(r x); acc fp32, x bf16. */
void head_q_scale(uint16_t *dx, uint16_t *xs, const float *acc, const uint16_t *x, const float *r,
                  int n, int D, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#if defined(__CUDACC__) || defined(ATT_EMULATE)
/* The elementwise forms (device code, also for a fused producer). */
struct head_q_consts {
	float cap, k2, icap; /* k2 = 2 log2(e) / cap, icap = 1 / cap */
};
static __device__ __forceinline__ struct head_q_consts head_q_consts_make(float cap)
{
	struct head_q_consts c;
	c.cap = cap;
	c.k2 = 2.0f * 1.4426950408889634f / cap;
	c.icap = 1.0f / cap;
	return c;
}
/* z = cap tanh(l / cap), tanh(a) = 1 - 2 / (1 + exp(2 a)) */
static __device__ __forceinline__ float head_q_z(float l, struct head_q_consts c)
{
	return c.cap * (1.0f - __fdividef(2.0f, 1.0f + exp2f(l * c.k2)));
}
/* e = exp(z - cap) */
static __device__ __forceinline__ float head_q_e(float z, struct head_q_consts c)
{
	return exp2f((z - c.cap) * 1.4426950408889634f);
}
/* f = 1 - (z / cap)^2 */
static __device__ __forceinline__ float head_q_f(float z, struct head_q_consts c)
{
	const float th = z * c.icap;
	return 1.0f - th * th;
}
#endif

#endif
