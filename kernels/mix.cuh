/*
 * mix.cuh - the residual-stream mixes of the block and their backward
 * (spec 4.3, 4.4, 4.5 step 2).
 *
 * bf16 tensors (uint16_t bits) of n elements; n a multiple of 8, every
 * pointer 16-byte aligned. Scalar parameters (lambdas, attention lambdas,
 * skip weights) are fp32 in device memory and read by the kernels, so the
 * launches can be captured in a graph. fp32 math, one bf16 rounding per
 * output element. Outputs may alias inputs of the same role noted below.
 *
 * Forward:
 *   mix_lambda_forward  out = l[0] x + l[1] x0             (block input mix)
 *   mix_value_forward   out = a[0] v + a[1] ve, or a[0] v when ve == NULL
 *   mix_skip_forward    out = x + w[0] skip                (U-net skip add)
 *   residual_add        out = x + y
 * out may alias any input.
 *
 * Backward (dout = gradient of out). Scalar gradients are ADDED into fp32
 * device scalars g[], summed deterministically: a fixed grid (a function
 * of n only) writes per-block partial sums (fp32 per thread, double across
 * threads) to work, and one block adds their ordered double sum to g. work:
 * mix_work_bytes(n) bytes of device memory (16 bytes per 8192 elements),
 * 8-byte aligned, not used by a concurrent launch.
 *   mix_lambda_backward  dx = l[0] dout (bf16); dx0 += l[1] dout (fp32, if
 *                        dx0 != NULL); g[0] += sum dout*x, g[1] += sum dout*x0.
 *                        dx may alias dout (or x).
 *   mix_value_backward   dv_raw = a[0] dv (bf16); g[0] += sum dv*v_raw and,
 *                        when ve != NULL, g[1] += sum dv*ve. dv_raw may alias
 *                        dv. The table gradient a[1] dv is embedding_backward_*
 *                        with scale = &a[1]: run it BEFORE this call when
 *                        dv_raw aliases dv.
 *   mix_skip_backward    dskip = w[0] dx (bf16); g[0] += sum dx*skip. dskip may
 *                        alias skip (its activation is dead by then); dx passes
 *                        through unchanged (add dskip into the encoder's dx
 *                        later with residual_add).
 *
 * Utility:
 * (the fp32 -> bf16 cast, e.g. of an fp32 embedding gradient, is
 * cast_f32_to_bf16 in kernels/cast.cuh)
 */
#ifndef GPT_MIX_CUH
#define GPT_MIX_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of work buffer the backward launchers need for n elements. */
size_t mix_work_bytes(size_t n);

void mix_lambda_forward(uint16_t *out, const uint16_t *x, const uint16_t *x0, const float *l,
                        size_t n, cudaStream_t s);
void mix_value_forward(uint16_t *out, const uint16_t *v, const uint16_t *ve, const float *a,
                       size_t n, cudaStream_t s);
void mix_skip_forward(uint16_t *out, const uint16_t *x, const uint16_t *skip, const float *w,
                      size_t n, cudaStream_t s);
void residual_add(uint16_t *out, const uint16_t *x, const uint16_t *y, size_t n, cudaStream_t s);

void mix_lambda_backward(uint16_t *dx, float *dx0, float *g, const uint16_t *dout,
                         const uint16_t *x, const uint16_t *x0, const float *l, size_t n,
                         void *work, cudaStream_t s);
void mix_value_backward(uint16_t *dv_raw, float *g, const uint16_t *dv, const uint16_t *v_raw,
                        const uint16_t *ve, const float *a, size_t n, void *work, cudaStream_t s);
void mix_skip_backward(uint16_t *dskip, float *g, const uint16_t *dx, const uint16_t *skip,
                       const float *w, size_t n, void *work, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
