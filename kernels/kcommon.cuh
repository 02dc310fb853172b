/*
 * kcommon.cuh - helpers shared by the .cu files (C++ only, not a public
 * header): KFATAL for invalid launcher arguments, bf16 bit conversions
 * (one element, or 8 through a 16-byte word: unpack8, pack8), grid sizing,
 * and deterministic block reductions.
 *
 * Conversions use round-to-nearest-even (__float2bfloat16_rn), matching
 * util.h's f32_to_bf16 for every non-NaN input.
 *
 * Include it before any lib/ header: cuda_check.h declares progname
 * extern "C", and util.h's later plain declaration then inherits that
 * linkage (the other order draws nvcc warning #337).
 */
#ifndef GPT_KCOMMON_CUH
#define GPT_KCOMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_check.h"

/* "gpt-xxx: <message>" on stderr, exit status 1 (launcher misuse). */
#define KFATAL(...)                                       \
	do {                                              \
		fprintf(stderr, "%s: ", progname);        \
		fprintf(stderr, __VA_ARGS__);             \
		fputc('\n', stderr);                      \
		exit(1);                                  \
	} while (0)

static __device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

static __device__ __forceinline__ uint16_t f2bf(float f)
{
	return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* 8 bf16 (a 16-byte load, lowest address in r.x's low half) to 8 floats,
 * and 8 bf16 bit patterns back into one 16-byte word. */
static __device__ __forceinline__ void unpack8(uint4 r, float *f)
{
	f[0] = __uint_as_float(r.x << 16), f[1] = __uint_as_float(r.x & 0xffff0000u);
	f[2] = __uint_as_float(r.y << 16), f[3] = __uint_as_float(r.y & 0xffff0000u);
	f[4] = __uint_as_float(r.z << 16), f[5] = __uint_as_float(r.z & 0xffff0000u);
	f[6] = __uint_as_float(r.w << 16), f[7] = __uint_as_float(r.w & 0xffff0000u);
}
static __device__ __forceinline__ uint4 pack8(const uint32_t *o)
{
	uint4 w;
	w.x = o[0] | o[1] << 16, w.y = o[2] | o[3] << 16;
	w.z = o[4] | o[5] << 16, w.w = o[6] | o[7] << 16;
	return w;
}

/* Blocks for n items at `per_block` items per block, capped (grid-stride
 * loops cover the rest). */
static inline unsigned grid_for(size_t n, size_t per_block, unsigned cap)
{
	size_t b = (n + per_block - 1) / per_block;
	if (b < 1)
		b = 1;
	return b > cap ? cap : (unsigned)b;
}

/* Warp reductions (xor butterfly: every lane ends with the same value,
 * combined in a fixed pattern, so results are repeatable). */
template <class T> static __device__ __forceinline__ T warp_sum(T v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
static __device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Block reductions over blockDim.x threads (a multiple of 32, <= 1024).
 * red: __shared__ scratch of 33 elements. Every thread returns the result;
 * red may be reused right after (the trailing barrier). */
template <class T> static __device__ T block_sum(T v, T *red)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_sum(v);
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	if (w == 0) {
		T t = lane < nw ? red[lane] : (T)0;
		t = warp_sum(t);
		if (lane == 0)
			red[32] = t;
	}
	__syncthreads();
	T r = red[32];
	__syncthreads();
	return r;
}
static __device__ float block_max(float v, float *red)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = warp_max(v);
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	if (w == 0) {
		float t = lane < nw ? red[lane] : -INFINITY;
		t = warp_max(t);
		if (lane == 0)
			red[32] = t;
	}
	__syncthreads();
	float r = red[32];
	__syncthreads();
	return r;
}

#endif
