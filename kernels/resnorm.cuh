/*
 * resnorm.cuh - the block's residual stream fused with its RMS norms
 * (spec 4.1, 4.3, 4.4, 4.8): one pass over [T, D] where the launchers of
 * mix.cuh and rmsnorm.cuh took two to four. Same bf16 roundings, same fp32
 * arithmetic (kernels/mix_impl.cuh, rmsnorm_impl.cuh), same order of the
 * sums: the bits of the launchers named after each "=" below, in sequence.
 *
 * bf16 tensors (uint16_t bits) [T, D], rows contiguous; D a multiple of 8;
 * every tensor 16-byte aligned; rstd fp32 [T] (may be NULL in the forward);
 * scalars (w, lam) fp32 in device memory, read by the kernels.
 * norm(x) = x rstd, rstd = 1 / sqrt(mean_d x^2 + eps) (rmsnorm_forward).
 *
 * Forward, one warp per row (rmsnorm.cu's layout; rows up to D = 2048 in
 * registers). Outputs may alias inputs (whole tensors, same layout).
 *
 *   residual_rmsnorm_forward(r, y, rstd, a, b, T, D, eps, s)
 *       r = a + b;  y = norm(r), rstd
 *       = residual_add(r, a, b, T D); rmsnorm_forward(y, rstd, r, NULL, 0, T, D, eps)
 *       (the MLP's input after attention and its norm; the final norm)
 *
 *   block_input_forward(out, res, xm, h, rstd, a, b, skip, w, x0, lam, T, D, eps, s)
 *       o = a + b when b, else a    stored to out when out != NULL (needs b)
 *       r = o + w[0] skip when skip, else o    stored to res (needs skip)
 *       m = lam[0] r + lam[1] x0               stored to xm
 *       h = norm(m), rstd
 *       = residual_add(out, a, b); mix_skip_forward(res, out, skip, w);
 *         mix_lambda_forward(xm, res, x0, lam); rmsnorm_forward(h, rstd, xm)
 *       (a layer's output, the next layer's U-net skip add, lambda mix and
 *       first norm). skip == out means the skip is o itself: the first
 *       decoder layer adds the last encoder's output, this very sum.
 */
#ifndef GPT_RESNORM_CUH
#define GPT_RESNORM_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

void residual_rmsnorm_forward(uint16_t *r, uint16_t *y, float *rstd, const uint16_t *a,
                              const uint16_t *b, int T, int D, float eps, cudaStream_t s);

void block_input_forward(uint16_t *out, uint16_t *res, uint16_t *xm, uint16_t *h, float *rstd,
                         const uint16_t *a, const uint16_t *b, const uint16_t *skip,
                         const float *w, const uint16_t *x0, const float *lam, int T, int D,
                         float eps, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
