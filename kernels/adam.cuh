/*
 * adam.cuh - Adam on the GPU, bit-for-bit lib/optim.c's adam_update()
 * (PyTorch's fused CUDA Adam in its order of operations; see optim.h for
 * the formulas). C-callable; bf16 tensors are uint16_t bits.
 *
 * The host computes bc1, bc2s = sqrt(1 - beta2^n) and step = lr / bc1
 * exactly as adam_update does; the kernel does per element
 *     m = f32(beta1*m + (1-beta1)*g)        in double
 *     v = f32(beta2*v + ((1-beta2)*g)*g)    in double
 *     denom = f32(f32(sqrtf(v) / bc2s) + eps)
 *     p = p - (step*m) / denom              in fp32
 * with explicitly rounded operations (__dmul_rn, __fadd_rn, ...) so that
 * nvcc cannot contract them into fused multiply-adds: the results equal
 * the CPU's bit for bit.
 *
 * Variants:
 *   adam_update_gpu:           fp32 p, g, m, v;
 *   adam_update_gpu_bf16:      bf16 p, g, m, v (the record's embedding
 *                              tables, spec 8.2): loaded exactly, math as
 *                              above, p, m, v stored rounded to nearest
 *                              even = optim.c with OPTIM_ADAM_BF16;
 *   adam_update_gpu_bf16_gf32: bf16 p, m, v with an fp32 gradient that is
 *                              rounded to bf16 on load (same result as
 *                              first casting g to bf16).
 * h->bf16 is ignored: the pointer types decide. h->step >= 1.
 * Asynchronous on `stream`; p, g, m, v must not overlap each other.
 */
#ifndef GPT_ADAM_CUH
#define GPT_ADAM_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

void adam_update_gpu(float *p, const float *g, float *m, float *v, size_t n,
                     const struct adam_hyper *h, cudaStream_t stream);
void adam_update_gpu_bf16(uint16_t *p, const uint16_t *g, uint16_t *m, uint16_t *v, size_t n,
                          const struct adam_hyper *h, cudaStream_t stream);
void adam_update_gpu_bf16_gf32(uint16_t *p, const float *g, uint16_t *m, uint16_t *v, size_t n,
                               const struct adam_hyper *h, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
