/*
 * attention_impl.cuh - internals shared by the attention kernels (the
 * public interface is attention.cuh).
 *
 * Contents: tile geometry; inline-PTX wrappers for cp.async, ldmatrix,
 * mma.sync m16n8k16 bf16, bulk copies, mbarriers and TMA tensor loads;
 * the 128 x 128 bf16 tile loader; fragment addressing; the argument
 * check every launcher runs and the wgmma launchers' TMA tensor maps;
 * ATT_LAUNCH and ATT_DYN_SMEM, which with ATT_EMULATE defined compile the
 * same kernels for the host emulation of tests/gpu/emu (there emu.h
 * replaces the PTX wrappers).
 *
 * Shared-memory tiles hold 128 rows of 128 bf16 (256 bytes) padded to 272
 * bytes per row, so the 8 row addresses of one ldmatrix 8x8 matrix fall in
 * 8 different 4-bank groups (no conflicts) and every row stays 16-byte
 * aligned for cp.async.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 g + t):
 *   A 16x16 row-major: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..),
 *     a3 (g+8, 2t+8..);
 *   B 16x8 "col": b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8.., n = g);
 *   C 16x8 fp32: c0, c1 (g, 2t..2t+1), c2, c3 (g+8, 2t..2t+1).
 * Address helpers (one lane address each, for ldmatrix .x4):
 *   frag_a:   A rows r0.., cols c0.. of a row-major tile:
 *             row r0 + (lane & 15), col c0 + 8 (lane >> 4);
 *   frag_bt:  B for two n-tiles from a tile stored as [n][k] (B = tile^T):
 *             row n0 + (lane & 7) + 8 (lane >> 4), col k0 + 8 ((lane >> 3) & 1);
 *             registers 0,1 = b0,b1 of n-tile n0, 2,3 = b0,b1 of n0+8.
 *   frag_v:   with ldmatrix .trans, B for two n-tiles from a tile stored
 *             as [k][n]: row k0 + (lane & 7) + 8 ((lane >> 3) & 1), col
 *             n0 + 8 (lane >> 4) (the same address as frag_a); registers
 *             0,1 = b0,b1 of n-tile n0, 2,3 = those of n0+8.
 */
#ifndef GPT_ATTENTION_IMPL_CUH
#define GPT_ATTENTION_IMPL_CUH

#include <stdint.h>
#include <string.h>

#include <cuda.h> /* CUtensorMap (types only: the project does not link libcuda) */
#include <cudaTypedefs.h> /* PFN_cuTensorMapEncodeTiled_v12000 (att_tmap_encoder) */

#include "attention.cuh"

#ifdef ATT_EMULATE
/* Host emulation (tests/gpu/emu): the same kernels as plain C++, one
 * coroutine per CUDA thread; emu.h supplies the CUDA built-ins and the
 * att_cp16/att_ldsm/att_mma family below. */
#include "emu.h"
#define ATT_DYN_SMEM(name) unsigned char *name = emu_shared
#define ATT_LAUNCH(kern, grid, block, smem, stream, ...) \
	emu_launch(dim3(grid), dim3(block), (smem), (const void *)&kern, [&] { kern(__VA_ARGS__); })
#else
#include <cuda_bf16.h>
#define ATT_DYN_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#define ATT_LAUNCH(kern, grid, block, smem, stream, ...) \
	kern<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

typedef __nv_bfloat16 bf16;

#define ATT_THREADS 256                     /* 8 warps, 16 rows each */
#define ATT_ROWB 272                        /* bytes per padded tile row */
#define ATT_TILEB (ATTN_BLOCK * ATT_ROWB)   /* 34816 bytes per tile */
#define ATT_LOG2E 1.4426950408889634f
#define ATT_SCALE 0.08838834764831845f      /* 1/sqrt(128) */

#ifndef ATT_EMULATE
__device__ __forceinline__ uint32_t att_smem(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void att_cp16(uint32_t dst, const void *src)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void att_cp_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void att_cp_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void att_ldsm(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(addr)
	             : "memory");
}
__device__ __forceinline__ void att_ldsm_t(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(addr)
	             : "memory");
}

/* c += a * b, 16x8x16, bf16 in, fp32 accumulate. */
__device__ __forceinline__ void att_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
	             "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
	             : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Bulk asynchronous copies shared -> global (sm_90 cp.async.bulk, the TMA
 * unit's non-tensor form): bytes a multiple of 16, both addresses 16-byte
 * aligned. att_bulk_store copies, att_bulk_add adds fp32 elementwise into
 * global memory (performed at L2). Groups per thread: commit, then
 * wait_read<N> (the source may be overwritten) or wait<N> (the writes are
 * complete) for all but the N most recent groups. The writing threads make
 * their shared-memory stores visible to the async proxy with
 * att_fence_async_smem() before the issuing thread starts the copy. */
__device__ __forceinline__ void att_bulk_store(void *g, uint32_t s, uint32_t bytes)
{
	asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(g),
	             "r"(s), "r"(bytes)
	             : "memory");
}
__device__ __forceinline__ void att_bulk_add(float *g, uint32_t s, uint32_t bytes)
{
	asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(g),
	             "r"(s), "r"(bytes)
	             : "memory");
}
__device__ __forceinline__ void att_bulk_commit(void)
{
	asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void att_bulk_wait_read(void)
{
	asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N> __device__ __forceinline__ void att_bulk_wait(void)
{
	asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void att_fence_async_smem(void)
{
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* Shared-memory mbarriers (sm_90), 8 bytes, 8-byte aligned, for tensor
 * copies (TMA). A barrier counts down its pending arrivals and a
 * transaction count (bytes); its current phase completes when both reach
 * zero, then the phase bit flips and the arrival count is reset.
 * att_mbar_init sets the arrival count (one thread, before any use) and
 * fences so that the async proxy (the TMA unit) sees the initialised
 * barrier (fence.mbarrier_init, and fence.proxy.async as the CUDA
 * programming guide's TMA example does); the other threads may use it
 * after a __syncthreads. att_mbar_arrive_expect_tx raises the
 * transaction count by bytes and arrives once. att_mbar_wait returns once
 * the phase of the given parity has completed: on a barrier whose current
 * phase has parity p, waiting for p blocks until it completes and waiting
 * for !p returns at once (the phase before it); so the consumer of a
 * barrier's j-th phase (j = 0, 1, ...) waits with parity j & 1, and must
 * never fall two phases behind. The completion of a phase makes the
 * copies it counted visible to the threads whose wait observes it. */
__device__ __forceinline__ void att_mbar_init(uint32_t bar, int count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
	asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void att_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
	             "r"(bytes)
	             : "memory");
}
/* A plain arrival (no transaction bytes): the consumers' release of a
 * stage in a producer/consumer pipeline (mlp_gemm.cu's empty barriers). */
__device__ __forceinline__ void att_mbar_arrive(uint32_t bar)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void att_mbar_wait(uint32_t bar, int parity)
{
	uint32_t done;
	do {
		asm volatile("{\n.reg .pred p;\n"
		             "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
		             "selp.u32 %0, 1, 0, p;\n}\n"
		             : "=r"(done)
		             : "r"(bar), "r"(parity)
		             : "memory");
	} while (!done);
}

/* Tensor copy global -> shared (TMA, cp.async.bulk.tensor): the box of
 * the tensor map at tmap (a __grid_constant__ kernel parameter, by
 * address) at coordinates (c0, c1, c2), innermost first, into shared
 * memory at dst, completing on the mbarrier at bar with the box's bytes
 * (which some arrive_expect_tx must announce). One thread issues it. With
 * CU_TENSOR_MAP_SWIZZLE_128B, dst must be 1024-byte aligned: box row r
 * (128 bytes) lands at dst + 128 r with its 16-byte chunk c at c ^ (r & 7),
 * wgmma.cuh's panel layout. */
__device__ __forceinline__ void att_tma_load_3d(uint32_t dst, const void *tmap, int c0, int c1,
                                                int c2, uint32_t bar)
{
	asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
	             " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
	             "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
	             : "memory");
}

/* The same for a tensor map of rank 2: the box at (c0, c1). */
__device__ __forceinline__ void att_tma_load_2d(uint32_t dst, const void *tmap, int c0, int c1,
                                                uint32_t bar)
{
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
	             " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
	             "l"(tmap), "r"(c0), "r"(c1), "r"(bar)
	             : "memory");
}

/* Tensor copy shared -> global (TMA store, a bulk-group copy: commit and
 * wait_read / wait as for att_bulk_store): the box of the tensor map at
 * (c0, c1) from shared memory at src, laid out as att_tma_load_2d would
 * have written it (with CU_TENSOR_MAP_SWIZZLE_128B, src 1024-byte
 * aligned); elements outside the tensor are not written. The writing
 * threads fence with att_fence_async_smem() first. One thread issues it. */
__device__ __forceinline__ void att_tma_store_2d(const void *tmap, int c0, int c1, uint32_t src)
{
	asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(tmap),
	             "r"(c0), "r"(c1), "r"(src)
	             : "memory");
}

/* Orders this thread's generic-proxy accesses to global memory with the
 * async proxy's (bulk copies), both ways. */
__device__ __forceinline__ void att_fence_async_global(void)
{
	asm volatile("fence.proxy.async.global;\n" ::: "memory");
}

/* *p += (a, b, c, d), fp32, one vector reduction performed at L2 (sm_90). */
__device__ __forceinline__ void att_red_add4(float *p, float a, float b, float c, float d)
{
	asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "f"(a), "f"(b),
	             "f"(c), "f"(d)
	             : "memory");
}

/* Inter-CTA flags (gpu scope): a release store, and an acquire spin until
 * *p >= v. */
__device__ __forceinline__ void att_flag_release(int *p, int v)
{
	asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void att_flag_wait(const int *p, int v)
{
	int x;
	for (;;) {
		asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(x) : "l"(p) : "memory");
		if (x >= v)
			break;
		__nanosleep(32);
	}
}
__device__ __forceinline__ int att_ticket(int *p)
{
	return atomicAdd(p, 1);
}
__device__ __forceinline__ void att_flag_store(int *p, int v)
{
	*(volatile int *)p = v;
}

#endif /* !ATT_EMULATE */

/* The one-pass backward kernels' CTA order: thread 0 takes the next of n
 * tickets from the counter (the last taker resets it to 0 for the next
 * launch, so no memset is needed), broadcast through the int at slot;
 * every thread of the CTA calls it and gets the same ticket. */
__device__ __forceinline__ int att_take_ticket(int *ticket, int *slot, int n, int tid)
{
	if (tid == 0) {
		const int x = att_ticket(ticket);
		if (x == n - 1)
			att_flag_store(ticket, 0);
		*slot = x;
	}
	__syncthreads();
	return *slot;
}

/* Two floats to packed bf16 (lo in the low half: the lower column). */
__device__ __forceinline__ uint32_t att_pack(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	uint32_t u;
	memcpy(&u, &v, 4);
	return u;
}

/* The forward's softmax step over one visited key block (or part of one)
 * for a warp's two query rows row0 (g) and row1 (g + 8), NJ n-tiles of 8
 * keys: key0 + 8 j + 2 t, +1. Unless the block is full, keys after the
 * query or of another document get S = -inf; then the running max m (raw
 * units; -inf while the row has seen no key) and sum l, O rescaled by
 * a = 2^((m_old - m_new) scale log2 e), and s replaced by
 * P = 2^(S scale log2 e - m_new scale log2 e) (0 for masked keys, never
 * NaN); l accumulates P per thread (the 4 lanes of a row are summed at the
 * end). Shared by attention_fwd.cu and attention_fwd_wg.cu. */
template <int NJ>
__device__ __forceinline__ void att_fwd_softmax(float (&s)[NJ][4], float (&o)[16][4], float &m0,
                                                float &m1, float &l0, float &l1, bool full,
                                                int key0, int row0, int row1, int dq0, int dq1,
                                                const int32_t *__restrict__ docs, int t)
{
	const float sl2 = ATT_SCALE * ATT_LOG2E;
	if (!full) {
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			const int key = key0 + j * 8 + 2 * t;
			const int kd0 = docs[key], kd1 = docs[key + 1];
			if (!(key <= row0 && kd0 == dq0))
				s[j][0] = -INFINITY;
			if (!(key + 1 <= row0 && kd1 == dq0))
				s[j][1] = -INFINITY;
			if (!(key <= row1 && kd0 == dq1))
				s[j][2] = -INFINITY;
			if (!(key + 1 <= row1 && kd1 == dq1))
				s[j][3] = -INFINITY;
		}
	}
	float mx0 = m0, mx1 = m1;
#pragma unroll
	for (int j = 0; j < NJ; j++) {
		mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
		mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
	}
	mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
	mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
	mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
	mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
	/* scaled max; 0 while the row has seen no key (then P = 0) */
	const float ms0 = mx0 == -INFINITY ? 0.f : mx0 * sl2;
	const float ms1 = mx1 == -INFINITY ? 0.f : mx1 * sl2;
	const float a0 = exp2f(m0 * sl2 - ms0), a1 = exp2f(m1 * sl2 - ms1);
	m0 = mx0, m1 = mx1;
	l0 *= a0, l1 *= a1;
#pragma unroll
	for (int d = 0; d < 16; d++) {
		o[d][0] *= a0, o[d][1] *= a0;
		o[d][2] *= a1, o[d][3] *= a1;
	}
#pragma unroll
	for (int j = 0; j < NJ; j++) {
		s[j][0] = exp2f(fmaf(s[j][0], sl2, -ms0));
		s[j][1] = exp2f(fmaf(s[j][1], sl2, -ms0));
		s[j][2] = exp2f(fmaf(s[j][2], sl2, -ms1));
		s[j][3] = exp2f(fmaf(s[j][3], sl2, -ms1));
		l0 += s[j][0] + s[j][1];
		l1 += s[j][2] + s[j][3];
	}
}

/* Start the copy of the lse and delta values of one 128-query block (lse
 * row l, delta row d: 128 floats each) into shared memory at s (lse) and
 * s + 1024 (delta); threads 0..63 issue it (the backward kernels keep two
 * such stages, 512 bytes apart). */
__device__ __forceinline__ void att_load_lse_delta(uint32_t s, const float *l, const float *d,
                                                   int tid)
{
	if (tid < 32)
		att_cp16(s + tid * 16, l + tid * 4);
	else if (tid < 64)
		att_cp16(s + 1024 + (tid - 32) * 16, d + (tid - 32) * 4);
}

/* Byte offset of (row, col) in a swizzled tile (the fused backward): 128
 * rows of 256 bytes, no padding; the 16-byte chunk c of row r is stored at
 * chunk c ^ (r & 7), so the 8 rows of one ldmatrix 8x8 matrix (consecutive
 * rows, one logical chunk) fall in 8 different 4-bank groups. col is a
 * multiple of 2 (an element pair) or, for the fragment helpers, of 8. */
__device__ __forceinline__ uint32_t att_swz(int row, int col)
{
	return (uint32_t)(row * 256 + ((col >> 3) ^ (row & 7)) * 16 + (col & 7) * 2);
}
__device__ __forceinline__ uint32_t fsw_a(int lane, int r0, int c0)
{
	return att_swz(r0 + (lane & 15), c0 + 8 * (lane >> 4));
}
__device__ __forceinline__ uint32_t fsw_bt(int lane, int n0, int k0)
{
	return att_swz(n0 + (lane & 7) + 8 * (lane >> 4), k0 + 8 * ((lane >> 3) & 1));
}
__device__ __forceinline__ uint32_t fsw_v(int lane, int k0, int n0)
{
	return att_swz(k0 + (lane & 7) + 8 * ((lane >> 3) & 1), n0 + 8 * (lane >> 4));
}

/* Start the copy of 128 rows x 128 bf16 (row i at g + i * rs elements) into
 * the swizzled tile at shared address s; all ATT_THREADS threads call it. */
__device__ __forceinline__ void att_load_tile_sw(uint32_t s, const bf16 *g, size_t rs, int tid)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int c = tid + i * ATT_THREADS, r = c >> 4, c16 = c & 15;
		att_cp16(s + (uint32_t)(r * 256 + (c16 ^ (r & 7)) * 16), g + (size_t)r * rs + c16 * 8);
	}
}

/* Byte offset of (row, col) in a padded tile. */
__device__ __forceinline__ uint32_t att_off(int row, int col)
{
	return (uint32_t)(row * ATT_ROWB + col * 2);
}
__device__ __forceinline__ uint32_t frag_a(int lane, int r0, int c0)
{
	return att_off(r0 + (lane & 15), c0 + 8 * (lane >> 4));
}
__device__ __forceinline__ uint32_t frag_bt(int lane, int n0, int k0)
{
	return att_off(n0 + (lane & 7) + 8 * (lane >> 4), k0 + 8 * ((lane >> 3) & 1));
}
__device__ __forceinline__ uint32_t frag_v(int lane, int k0, int n0)
{
	return att_off(k0 + (lane & 7) + 8 * ((lane >> 3) & 1), n0 + 8 * (lane >> 4));
}

/* Start the copy of 128 rows x 128 bf16 (row i at g + i * rs elements) into
 * the padded tile at shared address s; all ATT_THREADS threads call it. */
__device__ __forceinline__ void att_load_tile(uint32_t s, const bf16 *g, size_t rs, int tid)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int c = tid + i * ATT_THREADS, r = c >> 4, c16 = c & 15;
		att_cp16(s + (uint32_t)(r * ATT_ROWB + c16 * 16), g + (size_t)r * rs + c16 * 8);
	}
}

/* Write a warp's 16 x 128 fp32 accumulator (n-tile d = columns 8d..8d+7),
 * rows scaled by f0 (row g) and f1 (row g+8), as bf16 to global rows
 * out + r * rs, r = 0..15, staged through the warp's own 16 rows of the
 * padded tile at stage (generic pointer) for 16-byte stores. */
__device__ __forceinline__ void att_store_rows(bf16 *out, size_t rs, unsigned char *stage,
                                               const float acc[16][4], float f0, float f1,
                                               int lane)
{
	const int g = lane >> 2, t = lane & 3;
	__syncwarp();
#pragma unroll
	for (int d = 0; d < 16; d++) {
		*reinterpret_cast<uint32_t *>(stage + g * ATT_ROWB + (8 * d + 2 * t) * 2) =
			att_pack(acc[d][0] * f0, acc[d][1] * f0);
		*reinterpret_cast<uint32_t *>(stage + (g + 8) * ATT_ROWB + (8 * d + 2 * t) * 2) =
			att_pack(acc[d][2] * f1, acc[d][3] * f1);
	}
	__syncwarp();
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int c = lane + 32 * i, r = c >> 4, c16 = c & 15;
		uint4 val = *reinterpret_cast<const uint4 *>(stage + r * ATT_ROWB + c16 * 16);
		*reinterpret_cast<uint4 *>(out + (size_t)r * rs + c16 * 8) = val;
	}
}

/* Argument checks shared by the launchers (attention_mask.cu): mask built,
 * heads within capacity, head_dim 128, the n pointers non-NULL and 16-byte
 * aligned. 0, or -1 with a message naming `what`. */
int attn_check_args(const struct attn_mask *m, int heads, int head_dim, const void *const *ptrs,
                    int n, const char *what, struct gpt_err *e);

/* The driver's cuTensorMapEncodeTiled, through the runtime (the project
 * does not link libcuda); NULL if the driver lacks it. Looked up once
 * (attention_mask.cu; mlp_gemm.cu's maps use it too). */
PFN_cuTensorMapEncodeTiled_v12000 att_tmap_encoder(void);

/* TMA tensor map (attention_mask.cu) of the bf16 [T][H][128] tensor at p
 * (q, k, v or dy): dimensions, innermost first, {128, H, T}, byte strides
 * 256 (head) and H * 256 (token); box {64, 1, 128}: one 64-column panel of
 * a 128-row tile of one head, 128-byte swizzle (wgmma.cuh's panel layout,
 * wg_tma_tile); loads only, out of bounds never happens (T a multiple of
 * 128). p must be 16-byte aligned (attn_check_args). 0, or -1 with a
 * message naming `what` (the driver lacks the encoder, or it refused). */
int attn_tmap_tiles(CUtensorMap *map, const void *p, int T, int H, const char *what,
                    struct gpt_err *e);

/* The start of every backward launcher (attention_bwd.cu): the argument
 * check (attn_check_args), then delta = rowsum(dy * y) into m->delta on
 * stream s. 0, or -1 with a message in e. */
int attn_backward_begin(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k,
                        const void *v, const void *y, const float *lse, const struct attn_mask *m,
                        int heads, int head_dim, cudaStream_t s, struct gpt_err *e);

/* delta[h, t] = dy[t, h, :] . y[t, h, :] (attention_bwd.cu); grid of
 * ceil(T H / 8) blocks of 256 threads, one warp per row. */
__global__ void attn_delta_kernel(float *__restrict__ delta, const bf16 *__restrict__ dy,
                                  const bf16 *__restrict__ y, int T, int H);

/* Dynamic shared memory of the tensor-core kernels. */
#define ATT_FWD_SMEM (5 * ATT_TILEB)
#define ATT_DQ_SMEM (6 * ATT_TILEB)
#define ATT_DKV_SMEM (6 * ATT_TILEB + 4 * ATTN_BLOCK * 4)
/* fused backward (attention_bwd_fused.cu): 6 swizzled 32 KB tiles, lse and
 * delta (2 stages), the P^T and dS^T stages of a 64-query slice (128 x 64
 * bf16 each; then 8 warps' 4 KB dQ stages in the same 32 KB), the CTA's
 * ticket */
#define ATT_SWTILEB (ATTN_BLOCK * 256)
#define ATT_FUSED_VEC (6 * ATT_SWTILEB)
#define ATT_FUSED_ST (ATT_FUSED_VEC + 4 * ATTN_BLOCK * 4)
#define ATT_FUSED_STB (ATTN_BLOCK * 64 * 2)
#define ATT_FUSED_TICKET (ATT_FUSED_ST + 2 * ATT_FUSED_STB)
#define ATT_FUSED_SMEM (ATT_FUSED_TICKET + 16)

#endif
