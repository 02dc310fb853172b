/*
 * head_q.cu - the row kernels of the LM head's Q path. See head_q.cuh.
 *
 * defines: head_q_rows, head_q_finish, head_q_scale
 *
 * All three are bound by memory. head_q_rows reads each bf16 row once with
 * 16-byte loads (a warp covers one 256-column tile: 512 contiguous bytes)
 * and, with want_q, writes Q over it with 16-byte stores; e and f are
 * computed from the same fp32 z. head_q_finish reads n P floats. Every
 * reduction has a fixed order (sequential per lane, then the xor
 * butterfly of kcommon.cuh's warp_sum), so results are bitwise repeatable.
 * Compiled as C++ for the host emulation with ATT_EMULATE (emu.h supplies
 * the built-ins; HQ_LAUNCH runs a kernel there).
 */
#include "kcommon.cuh"
#include "head_q.cuh"

#ifdef ATT_EMULATE
#define HQ_LAUNCH(kern, grid, block, stream, ...) \
	emu_launch(dim3(grid), dim3(block), 0, (const void *)&kern, [&] { kern(__VA_ARGS__); })
#else
#define HQ_LAUNCH(kern, grid, block, stream, ...) kern<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

#define HQ_THREADS 256 /* head_q_rows: 8 warps per row */
#define HQ_FIN_ROWS 8  /* head_q_finish: rows (warps) per block */
#define HQ_SCALE_THREADS 256

/* One block per row; warp w takes tiles w, w + 8, ... */
template <bool WANT_Q>
__global__ void __launch_bounds__(HQ_THREADS)
	k_head_q_rows(uint16_t *__restrict__ L, float *__restrict__ part, float *__restrict__ ztgt,
	              const uint32_t *__restrict__ targets, int V, int P, float cap)
{
	const size_t t = blockIdx.x;
	uint16_t *row = L + t * (size_t)V;
	const uint32_t y = targets[t];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const struct head_q_consts c = head_q_consts_make(cap);
	if (threadIdx.x == 0 && y >= (uint32_t)V)
		ztgt[t] = 0.0f;
	for (int p = w; p < P; p += HQ_THREADS / 32) {
		const int i = p * HEAD_Q_TILE + lane * 8;
		float s = 0.0f;
		if (i < V) {
			float l[8];
			unpack8(*reinterpret_cast<const uint4 *>(row + i), l);
			uint32_t o[8];
#pragma unroll
			for (int j = 0; j < 8; j++) {
				const float z = head_q_z(l[j], c), e = head_q_e(z, c);
				s += e;
				if (WANT_Q)
					o[j] = f2bf(e * head_q_f(z, c));
				if ((uint32_t)(i + j) == y)
					ztgt[t] = z;
			}
			if (WANT_Q)
				*reinterpret_cast<uint4 *>(row + i) = pack8(o);
		}
		s = warp_sum(s);
		if (lane == 0)
			part[t * (size_t)P + p] = s;
	}
}

/* One warp per row, HQ_FIN_ROWS rows per block. */
template <bool WANT_Q>
__global__ void __launch_bounds__(HQ_FIN_ROWS * 32)
	k_head_q_finish(uint16_t *__restrict__ Q, float *__restrict__ r, float *__restrict__ losses,
	                const float *__restrict__ part, const float *__restrict__ ztgt,
	                const uint32_t *__restrict__ targets, int n, int V, int P, float cap, float T)
{
	const int t = blockIdx.x * HQ_FIN_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
	if (t >= n)
		return; /* the whole warp */
	const float *pr = part + (size_t)t * P;
	float s = 0.0f;
	for (int p = lane; p < P; p += 32)
		s += pr[p];
	s = warp_sum(s);
	if (lane != 0)
		return;
	const struct head_q_consts c = head_q_consts_make(cap);
	const uint32_t y = targets[t];
	const float zy = ztgt[t];
	losses[t] = y < (uint32_t)V ? logf(s) + cap - zy : __int_as_float(0x7fc00000);
	if (!WANT_Q)
		return;
	r[t] = 1.0f / (T * s);
	if (y < (uint32_t)V)
		Q[(size_t)t * V + y] = f2bf((head_q_e(zy, c) - s) * head_q_f(zy, c));
}

/* One block per row. */
__global__ void __launch_bounds__(HQ_SCALE_THREADS)
	k_head_q_scale(uint16_t *__restrict__ dx, uint16_t *__restrict__ xs,
	               const float *__restrict__ acc, const uint16_t *__restrict__ x,
	               const float *__restrict__ r, int D)
{
	const size_t o = (size_t)blockIdx.x * D;
	const float rt = r[blockIdx.x];
	for (int d = threadIdx.x; d < D; d += HQ_SCALE_THREADS) {
		dx[o + d] = f2bf(rt * acc[o + d]);
		xs[o + d] = f2bf(rt * bf2f(x[o + d]));
	}
}

extern "C" void head_q_rows(uint16_t *L, float *part, float *ztgt, const uint32_t *targets, int n,
                            int V, float cap, int want_q, cudaStream_t s)
{
	if (n < 1 || V < 8 || V % 8 || !(cap > 0.0f) || ((uintptr_t)L & 15))
		KFATAL("head_q_rows: invalid arguments n=%d V=%d cap=%g", n, V, (double)cap);
	const int P = head_q_tiles(V);
	if (want_q)
		HQ_LAUNCH(k_head_q_rows<true>, n, HQ_THREADS, s, L, part, ztgt, targets, V, P, cap);
	else
		HQ_LAUNCH(k_head_q_rows<false>, n, HQ_THREADS, s, L, part, ztgt, targets, V, P, cap);
	CUDA_CHECK_LAST();
}

extern "C" void head_q_finish(uint16_t *Q, float *r, float *losses, const float *part,
                              const float *ztgt, const uint32_t *targets, int n, int V, float cap,
                              int T, cudaStream_t s)
{
	if (n < 1 || V < 1 || T < n || !(cap > 0.0f) || (Q && !r))
		KFATAL("head_q_finish: invalid arguments n=%d V=%d T=%d cap=%g", n, V, T, (double)cap);
	const int P = head_q_tiles(V), blocks = (n + HQ_FIN_ROWS - 1) / HQ_FIN_ROWS;
	if (Q)
		HQ_LAUNCH(k_head_q_finish<true>, blocks, HQ_FIN_ROWS * 32, s, Q, r, losses, part, ztgt,
		          targets, n, V, P, cap, (float)T);
	else
		HQ_LAUNCH(k_head_q_finish<false>, blocks, HQ_FIN_ROWS * 32, s, Q, r, losses, part, ztgt,
		          targets, n, V, P, cap, (float)T);
	CUDA_CHECK_LAST();
}

extern "C" void head_q_scale(uint16_t *dx, uint16_t *xs, const float *acc, const uint16_t *x,
                             const float *r, int n, int D, cudaStream_t s)
{
	if (n < 1 || D < 1)
		KFATAL("head_q_scale: invalid sizes n=%d D=%d", n, D);
	HQ_LAUNCH(k_head_q_scale, n, HQ_SCALE_THREADS, s, dx, xs, acc, x, r, D);
	CUDA_CHECK_LAST();
}
