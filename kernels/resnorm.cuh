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
 *
 * Backward: the scalar gradients are sums over all T D elements, ADDED to
 * fp32 g[] in mix.cuh's fixed order (block b owns the tile of 8192
 * elements from 8192 b, two passes), so they get mix_*_backward's bits.
 * Each block first computes the norm backward's row means of the rows its
 * tile touches (whole rows: a row across two tiles is read by both).
 *
 *   block_input_backward(dx, dx0, g_lam, dskip, g_skip, dh, xm, rstd, res, x0, lam,
 *                        skip, w, add, T, D, work, s)
 *       d  = dx + norm_backward(dh; xm, rstd)                      (bf16)
 *       dr = lam[0] d (bf16);  dx0 += lam[1] d (fp32);
 *            g_lam[0] += sum d res;  g_lam[1] += sum d x0
 *       when skip: dskip = w[0] dr (bf16);  g_skip[0] += sum dr skip
 *       dx = dr + add when add, else dr                            (bf16)
 *       = rmsnorm_backward(dx, 1, dh, NULL, xm, NULL, 0, rstd, T, D);
 *         mix_lambda_backward(dx, dx0, g_lam, dx, res, x0, lam, T D, work);
 *         mix_skip_backward(dskip, g_skip, dx, skip, w, T D, work);
 *         residual_add(dx, dx, add, T D)
 *       (a layer's norm backward and lambda-mix backward, its U-net skip's
 *       backward, and the skip gradient the next encoder layer adds).
 *       dx is read and written in place; dskip may alias res or skip; add
 *       == dskip means the dskip just computed (the last encoder adds the
 *       first decoder's). dh and xm are read across tiles: no output may
 *       alias them. dx0 fp32 [T, D] (required); dskip, g_skip, w go with
 *       skip (all or none). work: block_input_work_bytes(T, D) bytes of
 *       device memory, 8-byte aligned, not used by a concurrent launch.
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

/* Bytes of work buffer block_input_backward needs for T rows of D. */
size_t block_input_work_bytes(int T, int D);

void block_input_backward(uint16_t *dx, float *dx0, float *g_lam, uint16_t *dskip,
                          float *g_skip, const uint16_t *dh, const uint16_t *xm,
                          const float *rstd, const uint16_t *res, const uint16_t *x0,
                          const float *lam, const uint16_t *skip, const float *w,
                          const uint16_t *add, int T, int D, void *work, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
