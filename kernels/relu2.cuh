/*
 * relu2.cuh - ReLU squared of the MLP (spec 4.7), forward and backward.
 *
 *   relu2_forward(u, x, n, s):   u[i] = relu(x[i])^2
 *   relu2_backward(dx, dy, x, n, s): dx[i] = x[i] > 0 ? 2 x[i] dy[i] : 0
 *
 * bf16 tensors (uint16_t bits) of n elements, fp32 math, one rounding per
 * output. n must be a multiple of 8 and every pointer 16-byte aligned.
 * u may alias x; dx may alias dy or x. All work is queued on stream s.
 */
#ifndef GPT_RELU2_CUH
#define GPT_RELU2_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

void relu2_forward(uint16_t *u, const uint16_t *x, size_t n, cudaStream_t s);
void relu2_backward(uint16_t *dx, const uint16_t *dy, const uint16_t *x, size_t n, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
