/*
 * head_loss.cu - chunked lm_head + softcap + cross entropy, forward and
 * backward. See head_loss.cuh.
 *
 * defines: head_loss_create, head_loss_free, head_loss_bytes,
 *          head_loss_chunk_rows, head_loss_row_cache, head_loss_q_path,
 *          head_loss_token_losses, head_loss_produce,
 *          head_loss_forward_backward, head_loss_forward
 *
 * The Q path (the default for 0 < softcap <= HEAD_Q_MAX_CAP and
 * V % 8 == 0; head_loss.cuh gives the math): per chunk head_loss_produce
 * (cuBLAS logits, then head_q_rows: one read of the row, Q written over
 * it), head_q_finish (S, loss, r, Q's target element), dx = r (Q W) with
 * the product in fp32 (h->acc) and one bf16 rounding in head_q_scale,
 * which also writes xs = bf16(r x), then dW += Q^T xs. Its buffers: part
 * [chunk, P], ztgt and r [chunk], acc [chunk, D] fp32, xs [chunk, D] bf16.
 *
 * The fast row kernel (the same condition with HEAD_LOSS_LEGACY; the
 * default before the Q path): one block of CE_FAST_THREADS threads per
 * row, no shared row, two reads of the bf16 row. The softcap bounds z to [-cap, cap], so
 * sum exp(z) cannot overflow and needs no max: pass 1 sums exp(z) with
 * t = tanh(l/cap) = 1 - 2/(1 + exp(2l/cap)) and z = cap t (exp through the
 * ex2 unit: absolute error of z ~1e-6, far under the bf16 rounding of the
 * logits); pass 2 (backward) recomputes t from the row (an L2 hit) and
 * writes the gradient. Small blocks without a row cache keep many rows in
 * flight per multiprocessor: the pass is bound by memory, not by the three
 * barrier-separated passes of the precise kernel (HEAD_LOSS_PRECISE).
 *
 * The precise row kernel: one block of CE_THREADS threads per token row of the
 * chunk's logits. Pass 1 reads the bf16 row (16-byte loads when V % 8 == 0),
 * applies the softcap in fp32 (kept in shared memory when it fits) and
 * finds the max; pass 2 sums exp(z - max); pass 3 (backward only) writes
 * the bf16 gradient over the row. Reductions are fixed trees (kcommon.cuh),
 * so every output is bitwise repeatable. The target's z is read before the
 * barrier that precedes pass 3, because without the cache pass 3
 * overwrites the row it would be read from.
 */
#include "kcommon.cuh"
#include "head_loss.cuh"
#include "head_q.cuh"

#define CE_THREADS 1024
#define CE_FAST_THREADS 256
#define CE_FAST_MAX_CAP 40.0f
#define MEAN_THREADS 1024

struct head_loss {
	int max_T, V, D, chunk, flags;
	int cache; /* z kept in shared memory */
	int vec;   /* V % 8 == 0: 16-byte row accesses */
	int precise; /* HEAD_LOSS_PRECISE */
	int qbuf;    /* the Q path's buffers exist (vec, neither PRECISE nor LEGACY) */
	uint16_t *logits; /* [chunk, V] */
	float *losses;    /* [max_T] */
	float *part;      /* [chunk, head_q_tiles(V)] (qbuf) */
	float *ztgt, *r;  /* [chunk] (qbuf) */
	float *acc;       /* [chunk, D] fp32 Q W (qbuf) */
	uint16_t *xs;     /* [chunk, D] bf16 r x (qbuf) */
};

static __device__ __forceinline__ float softcap(float l, float cap)
{
	return cap > 0.0f ? cap * tanhf(l / cap) : l;
}

/* d loss / d logit of column v, given z_v, lse, the one-hot bit. */
static __device__ __forceinline__ float ce_grad(float z, float lse, bool hot, float cap, float invT)
{
	float g = (expf(z - lse) - (hot ? 1.0f : 0.0f)) * invT;
	if (cap > 0.0f) {
		float th = z / cap;
		g *= 1.0f - th * th;
	}
	return g;
}

template <bool GRAD, bool CACHE, bool VEC>
__global__ void __launch_bounds__(CE_THREADS, 1)
	k_softcap_ce(uint16_t *__restrict__ L, const uint32_t *__restrict__ targets,
	             float *__restrict__ losses, int V, float cap, float invT)
{
	extern __shared__ float4 zs4[]; /* [V] floats when CACHE */
	float *zs = reinterpret_cast<float *>(zs4);
	__shared__ float red[33];
	uint16_t *row = L + (size_t)blockIdx.x * (size_t)V;
	const uint32_t y = targets[blockIdx.x];
	const int tid = threadIdx.x;

	/* pass 1: z and its max */
	float mx = -INFINITY;
	if (VEC) {
		for (int i = tid * 8; i < V; i += CE_THREADS * 8) {
			float z[8];
			unpack8(*reinterpret_cast<const uint4 *>(row + i), z);
#pragma unroll
			for (int j = 0; j < 8; j++) {
				z[j] = softcap(z[j], cap);
				mx = fmaxf(mx, z[j]);
			}
			if (CACHE) {
				zs4[i / 4] = make_float4(z[0], z[1], z[2], z[3]);
				zs4[i / 4 + 1] = make_float4(z[4], z[5], z[6], z[7]);
			}
		}
	} else {
		for (int i = tid; i < V; i += CE_THREADS) {
			float z = softcap(bf2f(row[i]), cap);
			if (CACHE)
				zs[i] = z;
			mx = fmaxf(mx, z);
		}
	}
	mx = block_max(mx, red); /* its barriers also publish zs */

	float zy = 0.0f;
	if (tid == 0 && y < (uint32_t)V)
		zy = CACHE ? zs[y] : softcap(bf2f(row[y]), cap);

	/* pass 2: sum of exp(z - max) */
	float s = 0.0f;
	if (VEC) {
		for (int i = tid * 8; i < V; i += CE_THREADS * 8) {
			float z[8];
			if (CACHE) {
				float4 a = zs4[i / 4], b = zs4[i / 4 + 1];
				z[0] = a.x, z[1] = a.y, z[2] = a.z, z[3] = a.w;
				z[4] = b.x, z[5] = b.y, z[6] = b.z, z[7] = b.w;
			} else {
				unpack8(*reinterpret_cast<const uint4 *>(row + i), z);
#pragma unroll
				for (int j = 0; j < 8; j++)
					z[j] = softcap(z[j], cap);
			}
#pragma unroll
			for (int j = 0; j < 8; j++)
				s += expf(z[j] - mx);
		}
	} else {
		for (int i = tid; i < V; i += CE_THREADS)
			s += expf((CACHE ? zs[i] : softcap(bf2f(row[i]), cap)) - mx);
	}
	s = block_sum(s, red); /* every read of the row happens before this barrier */
	const float lse = mx + logf(s);
	if (tid == 0)
		losses[blockIdx.x] = y < (uint32_t)V ? lse - zy : __int_as_float(0x7fc00000);
	if (!GRAD)
		return;

	/* pass 3: the gradient over the row */
	if (VEC) {
		for (int i = tid * 8; i < V; i += CE_THREADS * 8) {
			float z[8];
			if (CACHE) {
				float4 a = zs4[i / 4], b = zs4[i / 4 + 1];
				z[0] = a.x, z[1] = a.y, z[2] = a.z, z[3] = a.w;
				z[4] = b.x, z[5] = b.y, z[6] = b.z, z[7] = b.w;
			} else {
				unpack8(*reinterpret_cast<const uint4 *>(row + i), z);
#pragma unroll
				for (int j = 0; j < 8; j++)
					z[j] = softcap(z[j], cap);
			}
			uint32_t o[8];
#pragma unroll
			for (int j = 0; j < 8; j++)
				o[j] = f2bf(ce_grad(z[j], lse, (uint32_t)(i + j) == y, cap, invT));
			*reinterpret_cast<uint4 *>(row + i) = pack8(o);
		}
	} else {
		for (int i = tid; i < V; i += CE_THREADS) {
			float z = CACHE ? zs[i] : softcap(bf2f(row[i]), cap);
			row[i] = f2bf(ce_grad(z, lse, (uint32_t)i == y, cap, invT));
		}
	}
}

/* tanh(l / cap) as 1 - 2 / (1 + exp(2 l / cap)); k2 = 2 log2(e) / cap. */
static __device__ __forceinline__ float tanh_cap(float l, float k2)
{
	return 1.0f - __fdividef(2.0f, 1.0f + exp2f(l * k2));
}

template <bool GRAD>
__global__ void __launch_bounds__(CE_FAST_THREADS)
	k_softcap_ce_fast(uint16_t *__restrict__ L, const uint32_t *__restrict__ targets,
	                  float *__restrict__ losses, int V, float cap, float invT)
{
	__shared__ float red[33];
	__shared__ float zy_s;
	uint16_t *row = L + (size_t)blockIdx.x * (size_t)V;
	const uint32_t y = targets[blockIdx.x];
	const int tid = threadIdx.x;
	const float k2 = 2.0f * 1.4426950408889634f / cap, kc = cap * 1.4426950408889634f;
	if (tid == 0)
		zy_s = y < (uint32_t)V ? cap * tanh_cap(bf2f(row[y]), k2) : 0.0f;
	float s = 0.0f;
	for (int i = tid * 8; i < V; i += CE_FAST_THREADS * 8) {
		float l[8];
		unpack8(*reinterpret_cast<const uint4 *>(row + i), l);
#pragma unroll
		for (int j = 0; j < 8; j++)
			s += exp2f(kc * tanh_cap(l[j], k2));
	}
	s = block_sum(s, red); /* its barriers also publish zy_s, read before pass 2 writes */
	const float lse = logf(s), inv = 1.0f / s;
	if (tid == 0)
		losses[blockIdx.x] = y < (uint32_t)V ? lse - zy_s : __int_as_float(0x7fc00000);
	for (int i = tid * 8; GRAD && i < V; i += CE_FAST_THREADS * 8) {
		float l[8];
		unpack8(*reinterpret_cast<const uint4 *>(row + i), l);
		uint32_t o[8];
#pragma unroll
		for (int j = 0; j < 8; j++) {
			float t = tanh_cap(l[j], k2);
			float g = (exp2f(kc * t) * inv - ((uint32_t)(i + j) == y ? 1.0f : 0.0f)) * invT;
			o[j] = f2bf(g * (1.0f - t * t));
		}
		*reinterpret_cast<uint4 *>(row + i) = pack8(o);
	}
}

/* out = (float)(sum of losses[0..T) in double / T), one block, fixed order. */
__global__ void __launch_bounds__(MEAN_THREADS) k_mean(const float *__restrict__ losses, int T,
                                                       float *__restrict__ out)
{
	__shared__ double red[33];
	double s = 0;
	for (int i = threadIdx.x; i < T; i += MEAN_THREADS)
		s += (double)losses[i];
	s = block_sum(s, red);
	if (threadIdx.x == 0)
		*out = (float)(s / (double)T);
}

template <bool GRAD, bool CACHE, bool VEC> static void set_smem(int V)
{
	CUDA_CHECK(cudaFuncSetAttribute(k_softcap_ce<GRAD, CACHE, VEC>,
	                                cudaFuncAttributeMaxDynamicSharedMemorySize,
	                                CACHE ? V * (int)sizeof(float) : 0));
}

extern "C" struct head_loss *head_loss_create(int max_T, int vocab, int dim, int chunk_rows,
                                              int flags)
{
	if (max_T < 1 || vocab < 1 || dim < 1)
		KFATAL("head_loss: invalid sizes max_T=%d vocab=%d dim=%d", max_T, vocab, dim);
	if (flags & ~(HEAD_LOSS_NO_ROW_CACHE | HEAD_LOSS_PRECISE | HEAD_LOSS_LEGACY))
		KFATAL("head_loss: unknown flags 0x%x", (unsigned)flags);
	struct head_loss *h = (struct head_loss *)calloc(1, sizeof *h);
	if (!h)
		KFATAL("head_loss: out of host memory");
	h->max_T = max_T, h->V = vocab, h->D = dim, h->flags = flags;
	h->chunk = chunk_rows > 0 ? chunk_rows : HEAD_LOSS_CHUNK_DEFAULT;
	if (h->chunk > max_T)
		h->chunk = max_T;
	h->vec = vocab % 8 == 0;
	h->precise = !!(flags & HEAD_LOSS_PRECISE);
	int dev, optin;
	CUDA_CHECK(cudaGetDevice(&dev));
	CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
	/* the row, plus the static reduction scratch and a margin */
	h->cache = !(flags & HEAD_LOSS_NO_ROW_CACHE) &&
	           (size_t)vocab * sizeof(float) + 1024 <= (size_t)optin;
	if (h->cache) {
		if (h->vec) {
			set_smem<true, true, true>(vocab);
			set_smem<false, true, true>(vocab);
		} else {
			set_smem<true, true, false>(vocab);
			set_smem<false, true, false>(vocab);
		}
	}
	CUDA_CHECK(cudaMalloc(&h->logits, (size_t)h->chunk * (size_t)vocab * sizeof(uint16_t)));
	CUDA_CHECK(cudaMalloc(&h->losses, (size_t)max_T * sizeof(float)));
	h->qbuf = h->vec && !(flags & (HEAD_LOSS_PRECISE | HEAD_LOSS_LEGACY));
	if (h->qbuf) {
		const size_t c = (size_t)h->chunk, cd = c * (size_t)dim;
		CUDA_CHECK(cudaMalloc(&h->part, c * (size_t)head_q_tiles(vocab) * sizeof(float)));
		CUDA_CHECK(cudaMalloc(&h->ztgt, c * sizeof(float)));
		CUDA_CHECK(cudaMalloc(&h->r, c * sizeof(float)));
		CUDA_CHECK(cudaMalloc(&h->acc, cd * sizeof(float)));
		CUDA_CHECK(cudaMalloc(&h->xs, cd * sizeof(uint16_t)));
	}
	return h;
}

extern "C" void head_loss_free(struct head_loss *h)
{
	if (!h)
		return;
	cudaFree(h->logits);
	cudaFree(h->losses);
	cudaFree(h->part);
	cudaFree(h->ztgt);
	cudaFree(h->r);
	cudaFree(h->acc);
	cudaFree(h->xs);
	free(h);
}

extern "C" size_t head_loss_bytes(const struct head_loss *h)
{
	const size_t c = (size_t)h->chunk;
	size_t b = c * (size_t)h->V * sizeof(uint16_t) + (size_t)h->max_T * sizeof(float);
	if (h->qbuf)
		b += c * (size_t)head_q_tiles(h->V) * sizeof(float) + 2 * c * sizeof(float) +
		     c * (size_t)h->D * (sizeof(float) + sizeof(uint16_t));
	return b;
}

extern "C" int head_loss_chunk_rows(const struct head_loss *h) { return h->chunk; }
extern "C" int head_loss_row_cache(const struct head_loss *h) { return h->cache; }
extern "C" const float *head_loss_token_losses(const struct head_loss *h) { return h->losses; }

/* The Q path's condition (head_loss.cuh). */
extern "C" int head_loss_q_path(const struct head_loss *h, float softcap)
{
	return h->qbuf && softcap > 0.0f && softcap <= HEAD_Q_MAX_CAP;
}

extern "C" void head_loss_produce(struct gemm_ctx *g, uint16_t *L, float *part, float *ztgt,
                                  const uint16_t *x, const uint16_t *w16, const uint32_t *targets,
                                  int n, int V, int D, float cap, int want_q)
{
	if (n < 1 || V < 8 || V % 8 || D < 1 || !(cap > 0.0f) || cap > HEAD_Q_MAX_CAP)
		KFATAL("head_loss_produce: invalid arguments n=%d V=%d D=%d cap=%g", n, V, D, (double)cap);
	gemm_fwd(g, L, x, w16, n, V, D);
	head_q_rows(L, part, ztgt, targets, n, V, cap, want_q, gemm_stream(g));
}

template <bool GRAD>
static void launch_ce(const struct head_loss *h, int n, const uint32_t *targets, float *losses,
                      float cap, float invT, cudaStream_t s)
{
	const size_t smem = h->cache ? (size_t)h->V * sizeof(float) : 0;
	if (h->vec && !h->precise && cap > 0.0f && cap <= CE_FAST_MAX_CAP) { /* LEGACY */
		k_softcap_ce_fast<GRAD>
			<<<n, CE_FAST_THREADS, 0, s>>>(h->logits, targets, losses, h->V, cap, invT);
	} else if (h->vec) {
		if (h->cache)
			k_softcap_ce<GRAD, true, true>
				<<<n, CE_THREADS, smem, s>>>(h->logits, targets, losses, h->V, cap, invT);
		else
			k_softcap_ce<GRAD, false, true>
				<<<n, CE_THREADS, 0, s>>>(h->logits, targets, losses, h->V, cap, invT);
	} else {
		if (h->cache)
			k_softcap_ce<GRAD, true, false>
				<<<n, CE_THREADS, smem, s>>>(h->logits, targets, losses, h->V, cap, invT);
		else
			k_softcap_ce<GRAD, false, false>
				<<<n, CE_THREADS, 0, s>>>(h->logits, targets, losses, h->V, cap, invT);
	}
	CUDA_CHECK_LAST();
}

static void check_call(const struct head_loss *h, const void *x, const void *w16,
                       const void *targets, int T, float cap)
{
	if (T < 1 || T > h->max_T)
		KFATAL("head_loss: T = %d out of range [1, %d]", T, h->max_T);
	if (!x || !w16 || !targets)
		KFATAL("head_loss: NULL input");
	if (!(cap >= 0.0f) || cap == INFINITY)
		KFATAL("head_loss: softcap %g must be finite and >= 0", (double)cap);
}

static void run(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x, const uint16_t *w16,
                const uint32_t *targets, int T, float cap, uint16_t *dx, float *dw, float dw_beta,
                float *loss, bool grad)
{
	const cudaStream_t s = gemm_stream(g);
	const int V = h->V, D = h->D;
	const float invT = 1.0f / (float)T;
	const bool q = head_loss_q_path(h, cap);
	for (int r0 = 0; r0 < T; r0 += h->chunk) {
		const int n = T - r0 < h->chunk ? T - r0 : h->chunk;
		const uint16_t *xc = x + (size_t)r0 * D;
		if (q) {
			head_loss_produce(g, h->logits, h->part, h->ztgt, xc, w16, targets + r0, n, V, D,
			                  cap, grad);
			head_q_finish(grad ? h->logits : NULL, h->r, h->losses + r0, h->part, h->ztgt,
			              targets + r0, n, V, cap, T, s);
			if (!grad)
				continue;
			/* acc = Q W (fp32), dx = bf16(r acc), xs = bf16(r x), dW += Q^T xs */
			gemm_rm(g, 0, 0, n, D, V, 1.0f, h->logits, V, 0, w16, D, 0, 0.0f, h->acc,
			        GEMM_F32, D, 0, 1);
			head_q_scale(dx + (size_t)r0 * D, h->xs, h->acc, xc, h->r, n, D, s);
			gemm_bwd_dw(g, dw, h->logits, h->xs, n, V, D, r0 == 0 ? dw_beta : 1.0f);
			continue;
		}
		gemm_fwd(g, h->logits, xc, w16, n, V, D);
		if (!grad) {
			launch_ce<false>(h, n, targets + r0, h->losses + r0, cap, invT, s);
			continue;
		}
		launch_ce<true>(h, n, targets + r0, h->losses + r0, cap, invT, s);
		gemm_bwd_dx(g, dx + (size_t)r0 * D, h->logits, w16, n, V, D, 0.0f);
		gemm_bwd_dw(g, dw, h->logits, xc, n, V, D, r0 == 0 ? dw_beta : 1.0f);
	}
	if (loss) {
		k_mean<<<1, MEAN_THREADS, 0, s>>>(h->losses, T, loss);
		CUDA_CHECK_LAST();
	}
}

extern "C" void head_loss_forward_backward(struct head_loss *h, struct gemm_ctx *g,
                                           const uint16_t *x, const uint16_t *w16,
                                           const uint32_t *targets, int T, float softcap,
                                           uint16_t *dx, float *dw, float dw_beta, float *loss)
{
	check_call(h, x, w16, targets, T, softcap);
	if (!dx || !dw)
		KFATAL("head_loss: NULL gradient output");
	run(h, g, x, w16, targets, T, softcap, dx, dw, dw_beta, loss, true);
}

extern "C" void head_loss_forward(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x,
                                  const uint16_t *w16, const uint32_t *targets, int T,
                                  float softcap, float *loss)
{
	check_call(h, x, w16, targets, T, softcap);
	run(h, g, x, w16, targets, T, softcap, NULL, NULL, 0.0f, loss, false);
}
