/*
 * cast.cuh - fp32 <-> bf16 conversion on the GPU (C-callable; bf16 as
 * uint16_t bits).
 *
 * cast_f32_to_bf16: the per-step copy of fp32 master weights that the
 * forward's bf16 GEMMs read (spec 9), round to nearest even (the same bits
 * as util.h's f32_to_bf16 for every non-NaN value; NaN stays NaN).
 * cast_bf16_to_f32: exact.
 * Both are asynchronous on `stream`, for any n >= 0 and any alignment
 * (16-byte vector accesses where both pointers allow). dst and src must
 * not overlap.
 */
#ifndef GPT_CAST_CUH
#define GPT_CAST_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

void cast_f32_to_bf16(uint16_t *dst, const float *src, size_t n, cudaStream_t stream);
void cast_bf16_to_f32(float *dst, const uint16_t *src, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
