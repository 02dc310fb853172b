/*
 * rmsnorm.cuh - RMS norm over rows (spec 4.1), forward and backward.
 *
 *   rmsnorm_forward(y, rstd, x, rows, x_nrows, T, D, eps, s)
 *       for t < T, with r = rows ? rows[t] : t (rows: an optional gather,
 *       e.g. token ids into the embedding table; x then has x_nrows rows):
 *       rstd[t] = 1 / sqrt(mean_d x[r,d]^2 + eps)      (fp32; may be NULL)
 *       y[t,d]  = x[r,d] * rstd[t]                     (bf16)
 *       A gathered row with r >= x_nrows gives a NaN row and NaN rstd.
 *   rmsnorm_backward(dx, accumulate, dy, dy2, x, rows, x_nrows, rstd, T, D, s)
 *       g = dy[t] (+ dy2[t] when dy2 != NULL, fp32), yh = x[r] * rstd[t],
 *       dx[t] = rstd[t] * (g - yh * mean_d(g * yh))    (the CPU model's
 *       norm_bwd_row, with y recomputed in fp32 from x and rstd),
 *       stored (accumulate = 0) or added to dx (accumulate = 1: one bf16
 *       rounding of dx + that). Gathered rows out of range give NaN rows.
 *
 * bf16 tensors (uint16_t bits), rows of D elements, contiguous [T, D] or
 * [x_nrows, D]; dy2 fp32 [T, D]; rstd fp32 [T]. D a multiple of 8, every
 * tensor 16-byte aligned. fp32 math; the sums over a row run in a fixed
 * order (bitwise repeatable). y may alias x only without rows; dx may
 * alias dy. One warp per row, 16-byte loads; rows up to D = 2048 are held
 * in registers, longer ones are read twice.
 */
#ifndef GPT_RMSNORM_CUH
#define GPT_RMSNORM_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

void rmsnorm_forward(uint16_t *y, float *rstd, const uint16_t *x, const uint32_t *rows,
                     int x_nrows, int T, int D, float eps, cudaStream_t s);
void rmsnorm_backward(uint16_t *dx, int accumulate, const uint16_t *dy, const float *dy2,
                      const uint16_t *x, const uint32_t *rows, int x_nrows, const float *rstd,
                      int T, int D, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
