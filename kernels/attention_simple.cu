/*
 * attention_simple.cu - the simple correct path of the attention core: one
 * warp per (row, head), fp32 on the CUDA cores, each lane owning 4 of the
 * 128 dimensions, dot products reduced with shuffles. See attention.cuh.
 *
 * defines: attn_forward_simple, attn_backward_simple
 *
 * The block runs of the mask metadata bound the loops (query t visits keys
 * 128 kb_first[t/128] .. t, key j is visited by queries j .. 128
 * qb_last[j/128] + 127), and inside them the token-level predicate
 * docs[key] == docs[query] is applied to every pair; full/partial
 * classification is not used. Slow (no tiling, no tensor cores); for tests
 * and for isolating faults of the fast kernels.
 */
#include "attention_impl.cuh"
#include "cuda_check.h"

__device__ __forceinline__ void simple_load4(float x[4], const bf16 *p)
{
	const uint2 u = *reinterpret_cast<const uint2 *>(p);
	const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.x));
	const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.y));
	x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
}

__device__ __forceinline__ void simple_store4(bf16 *p, const float x[4], float f)
{
	uint2 u;
	u.x = att_pack(x[0] * f, x[1] * f);
	u.y = att_pack(x[2] * f, x[3] * f);
	*reinterpret_cast<uint2 *>(p) = u;
}

__device__ __forceinline__ float simple_dot(const float a[4], const float b[4])
{
	float s = a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		s += __shfl_xor_sync(0xffffffffu, s, o);
	return s;
}

__global__ void attn_fwd_simple_kernel(bf16 *y, float *lse, const bf16 *q, const bf16 *k,
                                       const bf16 *v, const int32_t *docs,
                                       const int32_t *kb_first, int T, int H)
{
	const int w = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
	if (w >= T * H)
		return;
	const int t = w / H, h = w % H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, col = (size_t)h * ATTN_HEAD_DIM + lane * 4;
	float qv[4], kv[4], vv[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
	simple_load4(qv, q + (size_t)t * rs + col);
	const int dt = docs[t];
	float m = -INFINITY, l = 0.f;
	for (int j = kb_first[t / ATTN_BLOCK] * ATTN_BLOCK; j <= t; j++) {
		if (docs[j] != dt)
			continue;
		simple_load4(kv, k + (size_t)j * rs + col);
		simple_load4(vv, v + (size_t)j * rs + col);
		const float s = simple_dot(qv, kv) * ATT_SCALE;
		const float mn = fmaxf(m, s), a = expf(m - mn), p = expf(s - mn);
		l = l * a + p;
#pragma unroll
		for (int d = 0; d < 4; d++)
			acc[d] = acc[d] * a + p * vv[d];
		m = mn;
	}
	simple_store4(y + (size_t)t * rs + col, acc, 1.f / l);
	if (lane == 0)
		lse[(size_t)h * T + t] = m + logf(l);
}

__global__ void attn_dq_simple_kernel(bf16 *dq, const bf16 *q, const bf16 *k, const bf16 *v,
                                      const bf16 *dy, const float *lse, const float *delta,
                                      const int32_t *docs, const int32_t *kb_first, int T, int H)
{
	const int w = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
	if (w >= T * H)
		return;
	const int t = w / H, h = w % H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, col = (size_t)h * ATTN_HEAD_DIM + lane * 4;
	float qv[4], dyv[4], kv[4], vv[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
	simple_load4(qv, q + (size_t)t * rs + col);
	simple_load4(dyv, dy + (size_t)t * rs + col);
	const float L = lse[(size_t)h * T + t], D = delta[(size_t)h * T + t];
	const int dt = docs[t];
	for (int j = kb_first[t / ATTN_BLOCK] * ATTN_BLOCK; j <= t; j++) {
		if (docs[j] != dt)
			continue;
		simple_load4(kv, k + (size_t)j * rs + col);
		simple_load4(vv, v + (size_t)j * rs + col);
		const float p = expf(simple_dot(qv, kv) * ATT_SCALE - L);
		const float ds = p * (simple_dot(dyv, vv) - D);
#pragma unroll
		for (int d = 0; d < 4; d++)
			acc[d] += ds * kv[d];
	}
	simple_store4(dq + (size_t)t * rs + col, acc, ATT_SCALE);
}

__global__ void attn_dkdv_simple_kernel(bf16 *dk, bf16 *dv, const bf16 *q, const bf16 *k,
                                        const bf16 *v, const bf16 *dy, const float *lse,
                                        const float *delta, const int32_t *docs,
                                        const int32_t *qb_last, int T, int H)
{
	const int w = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
	if (w >= T * H)
		return;
	const int j = w / H, h = w % H;
	const size_t rs = (size_t)H * ATTN_HEAD_DIM, col = (size_t)h * ATTN_HEAD_DIM + lane * 4;
	float kv[4], vv[4], qv[4], dyv[4], ak[4] = {0.f, 0.f, 0.f, 0.f}, av[4] = {0.f, 0.f, 0.f, 0.f};
	simple_load4(kv, k + (size_t)j * rs + col);
	simple_load4(vv, v + (size_t)j * rs + col);
	const int dj = docs[j], last = qb_last[j / ATTN_BLOCK] * ATTN_BLOCK + ATTN_BLOCK - 1;
	for (int t = j; t <= last; t++) {
		if (docs[t] != dj)
			continue;
		simple_load4(qv, q + (size_t)t * rs + col);
		simple_load4(dyv, dy + (size_t)t * rs + col);
		const float p = expf(simple_dot(qv, kv) * ATT_SCALE - lse[(size_t)h * T + t]);
		const float ds = p * (simple_dot(dyv, vv) - delta[(size_t)h * T + t]);
#pragma unroll
		for (int d = 0; d < 4; d++) {
			av[d] += p * dyv[d];
			ak[d] += ds * qv[d];
		}
	}
	simple_store4(dk + (size_t)j * rs + col, ak, ATT_SCALE);
	simple_store4(dv + (size_t)j * rs + col, av, 1.f);
}

extern "C" int attn_forward_simple(void *y, float *lse, const void *q, const void *k,
                                   const void *v, const struct attn_mask *m, int heads,
                                   int head_dim, cudaStream_t s, struct gpt_err *e)
{
	const void *ptrs[] = {y, lse, q, k, v};
	if (attn_check_args(m, heads, head_dim, ptrs, 5, "forward", e))
		return -1;
	const int rows = m->T * heads;
	ATT_LAUNCH(attn_fwd_simple_kernel, (rows + 7) / 8, 256, 0, s, (bf16 *)y, lse, (const bf16 *)q,
	           (const bf16 *)k, (const bf16 *)v, m->docs, m->kb_first, m->T, heads);
	CUDA_CHECK_LAST();
	return 0;
}

extern "C" int attn_backward_simple(void *dq, void *dk, void *dv, const void *dy, const void *q,
                                    const void *k, const void *v, const void *y, const float *lse,
                                    const struct attn_mask *m, int heads, int head_dim,
                                    cudaStream_t s, struct gpt_err *e)
{
	if (attn_backward_begin(dq, dk, dv, dy, q, k, v, y, lse, m, heads, head_dim, s, e))
		return -1;
	const int T = m->T, rows = T * heads, grid = (rows + 7) / 8;
	const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)k, *V = (const bf16 *)v;
	const bf16 *dY = (const bf16 *)dy;
	ATT_LAUNCH(attn_dq_simple_kernel, grid, 256, 0, s, (bf16 *)dq, Q, K, V, dY, lse, m->delta,
	           m->docs, m->kb_first, T, heads);
	CUDA_CHECK_LAST();
	ATT_LAUNCH(attn_dkdv_simple_kernel, grid, 256, 0, s, (bf16 *)dk, (bf16 *)dv, Q, K, V, dY,
	           lse, m->delta, m->docs, m->qb_last, T, heads);
	CUDA_CHECK_LAST();
	return 0;
}
