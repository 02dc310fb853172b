/*
 * qk_rotary.cuh - QK-norm and the half-truncated rotary, fused (spec 4.5
 * step 3, 4.6), forward and backward, for q and k in one launch.
 *
 * Layout: token t, head h of a tensor starts at p + t * ld + h * hd (ld in
 * elements, so q and k may be column blocks of a fused [T, 3 D] buffer).
 * Position t is the row index (the micro-batch restarts at 0).
 * cos_t, sin_t: fp32 [T or more, nf] (gpt_rope_table in lib/model.h with
 * nf = rope_freqs), row t for token t; may be NULL when nf == 0.
 *
 * forward, for each (t, h) of q (and of k when k != NULL):
 *   r = 1 / sqrt(mean(x^2) + eps), xh = x r               (QK-norm, fp32)
 *   for j < nf:  y[j]      =  xh[j] cos[t,j] + xh[j+hd/2] sin[t,j]
 *                y[j+hd/2] = -xh[j] sin[t,j] + xh[j+hd/2] cos[t,j]
 *   other pairs: y = xh;  out = bf16(y);  rstd[t * H + h] = r (fp32)
 * backward, from dout (gradient of out), x (the forward input) and rstd:
 *   g = the transposed rotation of d = dout (fp32):
 *       for j < nf:  g[j]      = d[j] cos[t,j] - d[j+hd/2] sin[t,j]
 *                    g[j+hd/2] = d[j] sin[t,j] + d[j+hd/2] cos[t,j]
 *       other pairs: g = d
 *   xh = x rstd;  dx = rstd (g - xh mean(g xh))              (bf16)
 *
 * hd in {16, 32, 64, 128, 256}; 0 <= nf <= hd/2; ld values multiples of
 * 8; every pointer 16-byte aligned. Outputs may alias their inputs (same
 * pointer and ld): each head is read whole before it is written. A group
 * of hd/16 lanes owns one head, a lane 8 pairs (j, j+hd/2) (16-byte
 * accesses); sums run in a fixed order.
 */
#ifndef GPT_QK_ROTARY_CUH
#define GPT_QK_ROTARY_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

void qk_norm_rotary_forward(uint16_t *q_out, uint16_t *k_out, float *q_rstd, float *k_rstd,
                            const uint16_t *q, const uint16_t *k, int ld_in, int ld_out,
                            const float *cos_t, const float *sin_t, int T, int H, int hd,
                            int nf, float eps, cudaStream_t s);

void qk_norm_rotary_backward(uint16_t *dq, uint16_t *dk, const uint16_t *dq_out,
                             const uint16_t *dk_out, const uint16_t *q, const uint16_t *k,
                             const float *q_rstd, const float *k_rstd, int ld_dx, int ld_dout,
                             int ld_in, const float *cos_t, const float *sin_t, int T, int H,
                             int hd, int nf, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
