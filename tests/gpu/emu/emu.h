/*
 * emu.h - CUDA built-ins for the host emulation of the attention kernels
 * (included by kernels/attention_impl.cuh when ATT_EMULATE is defined).
 *
 * Every CUDA thread of a block is a coroutine (emu.cpp); __syncthreads,
 * __syncwarp and every warp collective (shuffle, ldmatrix, mma.sync) are
 * barriers among the coroutines of the block or warp. ldmatrix and mma use
 * the fragment layouts of the PTX ISA (ldmatrix: thread i receives row
 * i/4, elements 2(i%4), 2(i%4)+1 of each 8x8 matrix, or with .trans the
 * transposed element pairs; mma m16n8k16: a0..a3, b0..b1, c0..c3 as in
 * attention_impl.cuh), written here independently of the kernels' address
 * helpers; wgmma (m64nNk16 bf16) reads its shared-memory operands through
 * the descriptors by the PTX ISA's canonical 128-byte-swizzled layouts,
 * also written independently of wgmma.cuh's tile helpers, and like a
 * cp.async it is performed at issue (EMU_CP=now) or when its group is
 * retired by wg_wait (EMU_CP=defer: a stage overwritten too early or an
 * accumulator read before its wait shows up as wrong results). cp.async
 * copies happen at issue (EMU_CP=now) or only when the
 * issuing thread's cp.async.wait_group retires their group (EMU_CP=defer,
 * the default), so a missing wait reads stale shared memory.
 *
 * mbarriers (init, arrive, arrive.expect_tx, try_wait.parity) keep their state
 * (arrival count, pending arrivals, transaction bytes, phase) in a side
 * table keyed by the shared address, with the PTX ISA's phase semantics
 * (a wait for parity p returns at once unless the current phase has parity
 * p); a barrier is usable by other threads only after a __syncthreads that
 * follows its init, and the block must end between phases. TMA tensor
 * loads (cp.async.bulk.tensor.2d and .3d, box of a tensor map built by the
 * emulated cuTensorMapEncodeTiled, see cuda.h here) copy the box, zeros
 * out of bounds, with the 128-byte swizzle applied to the shared address
 * (bits 4..6 ^= bits 7..9, destination 1024-byte aligned), written from the
 * PTX ISA independently of wgmma.cuh; they complete their bytes on the
 * barrier at issue (EMU_CP=now, or EMU_CP=tma: TMA loads at issue, every
 * other asynchronous operation deferred as with EMU_CP=defer) or when a
 * thread's wait on that barrier would block (EMU_CP=defer), so a wait with
 * the wrong parity reads stale data, and a phase that never completes ends
 * in the scheduler's deadlock abort. TMA tensor stores (.2d) are bulk-group
 * copies like att_bulk_store (performed when a wait retires their group,
 * with EMU_CP=defer), un-swizzling the same way and skipping elements out
 * of bounds. Shared memory is filled with 0xFF (NaN) at each block start;
 * ldmatrix, cp.async and TMA check alignment and bounds.
 */
#ifndef EMU_H
#define EMU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#include "cuda_runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

#define EMU_SMEM_BYTES 232448

extern dim3 threadIdx, blockIdx, blockDim, gridDim;
extern unsigned char emu_shared[EMU_SMEM_BYTES];

struct __nv_bfloat16 {
	uint16_t r;
};
struct __nv_bfloat162 {
	__nv_bfloat16 x, y;
};
struct float2 {
	float x, y;
};
struct uint2 {
	uint32_t x, y;
};
struct __attribute__((aligned(16))) uint4 {
	uint32_t x, y, z, w;
};
struct __attribute__((aligned(16))) float4 {
	float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d)
{
	float4 f = {a, b, c, d};
	return f;
}
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
	uint4 u = {a, b, c, d};
	return u;
}
inline float4 __ldcg(const float4 *p) { return *p; }
inline void __stcg(float4 *p, float4 v) { *p = v; }
inline void __threadfence(void) {}
inline void __nanosleep(unsigned) {}

uint16_t emu_f2bf(float f);
float emu_bf2f(uint16_t h);
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
	__nv_bfloat162 v;
	v.x.r = emu_f2bf(a);
	v.y.r = emu_f2bf(b);
	return v;
}
inline float2 __bfloat1622float2(__nv_bfloat162 v)
{
	float2 f;
	f.x = emu_bf2f(v.x.r);
	f.y = emu_bf2f(v.y.r);
	return f;
}
inline float __uint_as_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}
inline float __int_as_float(int i) { return __uint_as_float((uint32_t)i); }
inline float __fdividef(float a, float b) { return a / b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);
float __shfl_xor_sync(unsigned mask, float v, int lanemask);
/* PTX bar.sync / bar.arrive id, n: named barrier id (1..15; 0 is
 * __syncthreads') completes when n threads (a multiple of 32) have arrived,
 * arrivals and syncs counted alike; bar.sync waits for that, bar.arrive
 * does not. Every use of one phase must give the same n; the block must
 * end with no phase begun. */
void emu_bar_sync(int id, int n);
void emu_bar_arrive(int id, int n);
uint32_t __shfl_sync(unsigned mask, uint32_t v, int src_lane);

uint32_t att_smem(const void *p);
void att_cp16(uint32_t dst, const void *src);
void att_cp_commit(void);
void emu_cp_wait(int n);
template <int N> inline void att_cp_wait(void) { emu_cp_wait(N); }
void att_ldsm(uint32_t r[4], uint32_t addr);
void att_ldsm_t(uint32_t r[4], uint32_t addr);
void att_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
void att_bulk_store(void *g, uint32_t s, uint32_t bytes);
void att_bulk_add(float *g, uint32_t s, uint32_t bytes);
void att_bulk_commit(void);
void emu_bulk_wait(int n);
template <int N> inline void att_bulk_wait_read(void) { emu_bulk_wait(N); }
template <int N> inline void att_bulk_wait(void) { emu_bulk_wait(N); }
inline void att_fence_async_smem(void) {}
inline void att_fence_async_global(void) {}
inline void att_flag_release(int *p, int v) { *p = v; }
void att_flag_wait(const int *p, int v);
inline int att_ticket(int *p) { return (*p)++; }
inline void att_red_add4(float *p, float a, float b, float c, float d)
{
	p[0] += a, p[1] += b, p[2] += c, p[3] += d;
}

/* wgmma (kernels/wgmma.cuh): d is the thread's m64nNk16 accumulator
 * fragment (N/8 x 4 floats), da / db shared-memory descriptors (da unused
 * when a, the thread's A fragment registers, is given), ta / tb 1 for an
 * MN-major operand, acc 0 to overwrite d. Every thread of the warpgroup
 * issues it (a barrier of the warpgroup); it is performed when the
 * thread's wg_wait retires its group (EMU_CP=defer) or at once. */
void emu_wg_mma(float *d, int n, uint64_t da, uint64_t db, const uint32_t *a, int ta, int tb,
                int acc);
void emu_wg_commit(void);
void emu_wg_wait(int n);
inline void att_flag_store(int *p, int v) { *p = v; }

/* mbarriers and TMA tensor loads (attention_impl.cuh): the barrier state
 * lives in a side table keyed by the shared address (emu.cpp), with a
 * marker in the 8 shared bytes so that an overwrite is caught. */
#define __grid_constant__
void att_mbar_init(uint32_t bar, int count);
void att_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes);
void att_mbar_wait(uint32_t bar, int parity);
void att_mbar_arrive(uint32_t bar);
void att_tma_load_3d(uint32_t dst, const void *tmap, int c0, int c1, int c2, uint32_t bar);
void att_tma_load_2d(uint32_t dst, const void *tmap, int c0, int c1, uint32_t bar);
void att_tma_store_2d(const void *tmap, int c0, int c1, uint32_t src);

/* Runs fn as every thread of every block, blocks one after another. A
 * kernel launched with more than 48 KB of dynamic shared memory must have
 * had cudaFuncSetAttribute raise its limit (as on the device). */
void emu_launch(dim3 grid, dim3 block, size_t smem, const void *kernel, std::function<void()> fn);

#endif
