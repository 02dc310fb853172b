/*
 * wgmma.cuh - Hopper warpgroup matrix multiply (wgmma.mma_async, sm_90a)
 * for the attention kernels: shared-memory matrix descriptors, the
 * 128-byte-swizzled "panel" tile layout they read, and m64n128k16 bf16
 * products with fp32 accumulators (m64n256k16 too, for the MLP's
 * products in mlp_gemm.cu). Include only from code compiled for
 * sm_90a (guard the callers with ATT_HAS_WGMMA) or for the host emulation
 * (ATT_EMULATE).
 *
 * Panel tile: 128 rows x 128 bf16 as two 16 KB panels of 64 columns;
 * panel p holds columns 64p..64p+63, row r at byte r * 128 of the panel,
 * its 16-byte chunk c (8 columns) at chunk c ^ (r & 7) (the hardware's
 * 128-byte swizzle, Swizzle<3,4,3>, when the tile is 1024-byte aligned).
 * The same layout serves as a K-major operand (rows = M or N, columns =
 * K: Q and K for S = Q K^T) and as an MN-major one (rows = K, columns = N:
 * V for O = P V).
 *
 * Descriptors (PTX ISA, "Matrix Descriptor Format"): start address, leading
 * byte offset (LBO) and stride byte offset (SBO), each >> 4, 128-byte
 * swizzle mode. K-major: SBO = 1024 (8 rows of 128 bytes), LBO unused (1);
 * one k16 step = 32 bytes further along the row, the next 64 columns = the
 * next panel. MN-major: SBO = 1024 (8 K rows), LBO = 16 KB (the next 64
 * N columns = the next panel).
 *
 * Fragments (m64nNk16, warp w = 0..3 of the warpgroup, lane = 4 g + t):
 * the warp owns rows 16 w..16 w + 15 and, per 8-column n-tile j, holds
 * d[j][0..1] = (16 w + g, 8 j + 2 t..+1), d[j][2..3] = (16 w + g + 8, same
 * columns): the mma.sync m16n8 C layout. An A operand in registers is the
 * m16n8k16 A fragment of the warp's 16 rows. So the mma.sync code's
 * accumulator and P-packing arithmetic carries over unchanged.
 *
 * Ordering: wg_fence() before the first wgmma of a batch (after other
 * instructions touched its accumulators or A registers); wg_commit() after
 * the batch; wg_wait<N>() until at most N batches are in flight; then
 * wg_keep() on every accumulator and A register the batch used, so the
 * compiler neither reads the results early nor reuses the registers while
 * the tensor cores still read them. Shared memory written by ordinary
 * stores or cp.async needs att_fence_async_smem() in the writing threads
 * before the barrier that precedes the wgmma; a tile a TMA load wrote
 * (wg_tma_tile: the async proxy, like wgmma) needs only the wait for its
 * mbarrier phase in each reading thread.
 */
#ifndef GPT_WGMMA_CUH
#define GPT_WGMMA_CUH

#include <stdint.h>

#define WG_PANELB (128 * 128)   /* bytes of one 64-column panel (128 rows) */

/* Byte offset of (row, col) in a panel tile (col even). */
__device__ __forceinline__ uint32_t wg_pnl(int row, int col)
{
	return (uint32_t)((col >> 6) * WG_PANELB + row * 128 + (((col >> 3) & 7) ^ (row & 7)) * 16 +
	                  (col & 7) * 2);
}

/* Start the TMA load of 128 rows x 128 bf16 into the panel tile at shared
 * address s (1024-byte aligned), completing on the mbarrier at bar (32 KB
 * of transactions, for the caller's arrive_expect_tx): two boxes of a
 * tensor map with box {64, 1, 128} and the 128-byte swizzle over a tensor
 * whose coordinates are (column, c1, row): panel p = columns 64 p.. from
 * coordinate (64 p, c1, row0). One thread issues it. */
__device__ __forceinline__ void wg_tma_tile(uint32_t s, const void *tmap, int c1, int row0,
                                            uint32_t bar)
{
	att_tma_load_3d(s, tmap, 0, c1, row0, bar);
	att_tma_load_3d(s + WG_PANELB, tmap, 64, c1, row0, bar);
}

__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo)
{
	return (uint64_t)((saddr & 0x3FFFF) >> 4) | (uint64_t)((lbo >> 4) & 0x3FFF) << 16 |
	       (uint64_t)((sbo >> 4) & 0x3FFF) << 32 | (uint64_t)1 << 62;
}
/* K-major operand rows r0.., k16 step kk (columns 16 kk..) of the panel
 * tile at s. */
__device__ __forceinline__ uint64_t wg_desc_k(uint32_t s, int r0, int kk)
{
	return wg_desc(s + (kk >> 2) * WG_PANELB + r0 * 128 + (kk & 3) * 32, 16, 1024);
}
/* MN-major operand: K rows 16 kk.., all 128 columns. */
__device__ __forceinline__ uint64_t wg_desc_mn(uint32_t s, int kk)
{
	return wg_desc(s + kk * 16 * 128, WG_PANELB, 1024);
}

#ifdef ATT_EMULATE
/* Host emulation (tests/gpu/emu): emu.cpp performs each product from the
 * descriptors by the PTX ISA's canonical layouts, when wg_wait retires its
 * group (EMU_CP=defer) or at issue (EMU_CP=now). */
inline void wg_fence(void) {}
inline void wg_commit(void) { emu_wg_commit(); }
template <int N> inline void wg_wait(void) { emu_wg_wait(N); }
inline void wg_keep(float (*)[4]) {}
inline void wg_keep8(float (*)[4]) {}
inline void wg_keep_a(uint32_t *) {}
inline void wg_mma_ss(float d[16][4], uint64_t da, uint64_t db, int acc)
{
	emu_wg_mma(&d[0][0], 128, da, db, NULL, 0, 0, acc);
}
template <int TB> inline void wg_mma_rs(float d[16][4], const uint32_t a[4], uint64_t db, int acc)
{
	emu_wg_mma(&d[0][0], 128, 0, db, a, 0, TB, acc);
}
template <int TA, int TB> inline void wg_mma_ss64(float d[8][4], uint64_t da, uint64_t db, int acc)
{
	emu_wg_mma(&d[0][0], 64, da, db, NULL, TA, TB, acc);
}
template <int TB> inline void wg_mma_ss256(float d[32][4], uint64_t da, uint64_t db, int acc)
{
	emu_wg_mma(&d[0][0], 256, da, db, NULL, 0, TB, acc);
}
#else
__device__ __forceinline__ void wg_fence(void)
{
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_commit(void)
{
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wg_wait(void)
{
	asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void wg_keep(float d[16][4])
{
#pragma unroll
	for (int j = 0; j < 16; j++)
		asm volatile("" : "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])::"memory");
}
__device__ __forceinline__ void wg_keep_a(uint32_t a[4])
{
	asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3])::"memory");
}

/* SS: d (+)= A B, A and B K-major in shared memory (descriptors). */
__device__ __forceinline__ void wg_mma_ss(float d[16][4], uint64_t da, uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
	             "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
	             "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
	             "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
	             "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
	             "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
	             : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
	             "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
	             "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
	             "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
	             "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
	             "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
	             "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
	             "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
	             "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
	             "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
	             "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
	             "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
	             "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
	             "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
	             "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
	             "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
	             : "l"(da), "l"(db), "r"(acc));
}

/* RS: d (+)= A B, A in registers (a[4]: the m16n8k16 A fragment of the
 * warp's 16 rows), B in shared memory, MN-major if TB (else K-major). */
template <int TB>
__device__ __forceinline__ void wg_mma_rs(float d[16][4], const uint32_t a[4], uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
	             "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
	             "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
	             "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
	             "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
	             "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
	             : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
	             "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
	             "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
	             "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
	             "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
	             "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
	             "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
	             "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
	             "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
	             "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
	             "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
	             "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
	             "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
	             "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
	             "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
	             "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc), "n"(TB));
}

/* SS, N = 64: d (+)= A B, A M-major if TA (else K-major), B N-major if TB
 * (else K-major); d[8][4] as above with 8 n-tiles. */
template <int TA, int TB>
__device__ __forceinline__ void wg_mma_ss64(float d[8][4], uint64_t da, uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
	             "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
	             "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
	             "}, %32, %33, p, 1, 1, %35, %36;\n}\n"
	             : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
	             "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
	             "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
	             "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
	             "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
	             "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
	             "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
	             "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
	             : "l"(da), "l"(db), "r"(acc), "n"(TA), "n"(TB));
}
__device__ __forceinline__ void wg_keep8(float d[8][4])
{
#pragma unroll
	for (int j = 0; j < 8; j++)
		asm volatile("" : "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])::"memory");
}
/* SS, N = 256: d (+)= A B, A K-major, B N-major if TB (else K-major), both
 * in shared memory (descriptors); d[32][4] as above with 32 n-tiles (128
 * fp32 registers). The MLP products (mlp_gemm.cu). */
template <int TB>
__device__ __forceinline__ void wg_mma_ss256(float d[32][4], uint64_t da, uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
	             "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
	             "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
	             "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
	             "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
	             "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
	             "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
	             "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
	             "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
	             "}, %128, %129, p, 1, 1, 0, %131;\n}\n"
	             : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
	             "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
	             "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
	             "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
	             "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
	             "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
	             "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
	             "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
	             "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
	             "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
	             "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
	             "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
	             "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
	             "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
	             "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
	             "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]),
	             "+f"(d[16][0]), "+f"(d[16][1]), "+f"(d[16][2]), "+f"(d[16][3]),
	             "+f"(d[17][0]), "+f"(d[17][1]), "+f"(d[17][2]), "+f"(d[17][3]),
	             "+f"(d[18][0]), "+f"(d[18][1]), "+f"(d[18][2]), "+f"(d[18][3]),
	             "+f"(d[19][0]), "+f"(d[19][1]), "+f"(d[19][2]), "+f"(d[19][3]),
	             "+f"(d[20][0]), "+f"(d[20][1]), "+f"(d[20][2]), "+f"(d[20][3]),
	             "+f"(d[21][0]), "+f"(d[21][1]), "+f"(d[21][2]), "+f"(d[21][3]),
	             "+f"(d[22][0]), "+f"(d[22][1]), "+f"(d[22][2]), "+f"(d[22][3]),
	             "+f"(d[23][0]), "+f"(d[23][1]), "+f"(d[23][2]), "+f"(d[23][3]),
	             "+f"(d[24][0]), "+f"(d[24][1]), "+f"(d[24][2]), "+f"(d[24][3]),
	             "+f"(d[25][0]), "+f"(d[25][1]), "+f"(d[25][2]), "+f"(d[25][3]),
	             "+f"(d[26][0]), "+f"(d[26][1]), "+f"(d[26][2]), "+f"(d[26][3]),
	             "+f"(d[27][0]), "+f"(d[27][1]), "+f"(d[27][2]), "+f"(d[27][3]),
	             "+f"(d[28][0]), "+f"(d[28][1]), "+f"(d[28][2]), "+f"(d[28][3]),
	             "+f"(d[29][0]), "+f"(d[29][1]), "+f"(d[29][2]), "+f"(d[29][3]),
	             "+f"(d[30][0]), "+f"(d[30][1]), "+f"(d[30][2]), "+f"(d[30][3]),
	             "+f"(d[31][0]), "+f"(d[31][1]), "+f"(d[31][2]), "+f"(d[31][3])
	             : "l"(da), "l"(db), "r"(acc), "n"(TB));
}
#endif /* ATT_EMULATE */

#endif
