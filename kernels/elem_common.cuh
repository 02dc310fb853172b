/*
 * elem_common.cuh - device and host helpers shared by the memory-bound
 * kernels (embedding, rmsnorm, qk_rotary, relu2, mix). Internal: included
 * by .cu files only, never by C code.
 *
 * defines:
 *   bf16x8_load / bf16x8_store   8 bf16 <-> 8 floats through one 16-byte access
 *   unpack8                      8 raw bf16 (a uint4) -> 8 floats
 *   f32x8_load / f32x8_store     8 floats through two 16-byte accesses
 *   bf16_bits_to_f32, f32_to_bf16_bits   one element (round to nearest even)
 *   warp_sum, group_sum<G>       butterfly sums over a warp / G aligned lanes
 *   KREQUIRE(cond, fmt, ...)     launcher argument check: message, exit(1)
 *   KREQUIRE_IN(fn, cond, ...)   the same, naming the launcher fn
 *   is_aligned16(p)
 *
 * bf16 tensors cross the C interface as uint16_t (the bits of a bf16).
 * Every butterfly sum runs in a fixed order, so results are bitwise
 * repeatable.
 */
#ifndef GPT_ELEM_COMMON_CUH
#define GPT_ELEM_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_check.h"

/* A launcher was called with arguments no kernel can run on: a programming
 * error of the caller, reported like a failed CUDA call. */
#define KREQUIRE(cond, ...) KREQUIRE_IN(__func__, cond, __VA_ARGS__)
#define KREQUIRE_IN(fn, cond, ...)                                                     \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s: %s: ", progname, fn);                     \
			fprintf(stderr, __VA_ARGS__);                                  \
			fputc('\n', stderr);                                           \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

static inline int is_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h)
{
	return __uint_as_float((uint32_t)h << 16);
}

/* cvt.rn.bf16x2.f32 d, hi, lo: lo goes to the low 16 bits (lower address). */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
	uint32_t u;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(u) : "f"(hi), "f"(lo));
	return u;
}

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f)
{
	return (uint16_t)(pack_bf16x2(f, 0.0f) & 0xffffu);
}

__device__ __forceinline__ void unpack_bf16x2(uint32_t w, float &lo, float &hi)
{
	lo = __uint_as_float(w << 16);
	hi = __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ void unpack8(const uint4 &u, float v[8])
{
	unpack_bf16x2(u.x, v[0], v[1]);
	unpack_bf16x2(u.y, v[2], v[3]);
	unpack_bf16x2(u.z, v[4], v[5]);
	unpack_bf16x2(u.w, v[6], v[7]);
}

/* p must be 16-byte aligned. */
__device__ __forceinline__ void bf16x8_load(const uint16_t *p, float v[8])
{
	unpack8(*reinterpret_cast<const uint4 *>(p), v);
}

__device__ __forceinline__ void bf16x8_store(uint16_t *p, const float v[8])
{
	uint4 u;
	u.x = pack_bf16x2(v[0], v[1]);
	u.y = pack_bf16x2(v[2], v[3]);
	u.z = pack_bf16x2(v[4], v[5]);
	u.w = pack_bf16x2(v[6], v[7]);
	*reinterpret_cast<uint4 *>(p) = u;
}

__device__ __forceinline__ void f32x8_load(const float *p, float v[8])
{
	float4 a = reinterpret_cast<const float4 *>(p)[0];
	float4 b = reinterpret_cast<const float4 *>(p)[1];
	v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
	v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void f32x8_store(float *p, const float v[8])
{
	reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
	reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

/* Sum over the 32 lanes of a warp; every lane gets the same bits. */
template <typename F> __device__ __forceinline__ F warp_sum(F x)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		x += __shfl_xor_sync(0xffffffffu, x, o);
	return x;
}

/* Sum over aligned groups of G lanes (G a power of two <= 32); all 32
 * lanes must call it. Every lane of a group gets the same bits. */
template <int G> __device__ __forceinline__ float group_sum(float x)
{
#pragma unroll
	for (int o = G / 2; o > 0; o >>= 1)
		x += __shfl_xor_sync(0xffffffffu, x, o);
	return x;
}

#endif
