/*
 * embedding.cu - embedding lookup and deterministic backward (see
 * embedding.cuh).
 *
 * defines: embedding_forward, embedding_plan_create, embedding_plan_build,
 *          embedding_backward_f32, embedding_backward_bf16,
 *          embedding_plan_free
 *
 * Backward. The plan holds keys (token ids, V for out-of-range tokens)
 * sorted with their positions. The sorted array is cut into windows of
 * CH = EMBEDDING_CHUNK entries; a window's entries split into runs of one
 * token ("chunks"). Kernel 1 (one block per window) sums each chunk's dy
 * rows in order in fp32. A chunk that is its token's whole run (the token
 * lives in this window only) is added to grad[token] right away. Otherwise
 * the token spans windows and its chunk is the first and/or last chunk of
 * the window: the chunk's sum goes to partial slot 2w + (chunk starts
 * mid-window), then kernel 2 (the block of the window where the token's
 * run starts) adds that token's partials in window order and updates
 * grad[token]. Every gradient row has one writer, and every sum a fixed
 * order. At most 2 T / CH partial rows exist.
 */
#include <cub/device/device_radix_sort.cuh>

#include "elem_common.cuh"
#include "embedding.cuh"

#define CH EMBEDDING_CHUNK
#define EMB_FWD_THREADS 256
#define BF16_NAN 0x7fc0u

struct embedding_plan {
	int max_T, V, max_D, end_bit;
	int T;                     /* tokens of the last build */
	uint32_t *keys_in, *keys;  /* [max_T] token ids (V: out of range), sorted */
	int32_t *pos_in, *pos;     /* [max_T] 0..T-1, sorted with the keys */
	void *temp;                /* cub scratch */
	size_t temp_bytes;
	float *partial;            /* [2 ceil(max_T / CH), max_D] */
};

/* ------------------------------------------------------------------------
 * Forward
 */
struct emb_fwd_args {
	uint16_t *out[EMBEDDING_MAX_TABLES];
	const uint16_t *tab[EMBEDDING_MAX_TABLES];
};

/* blockIdx.y: table; one thread per 8-element vector of out. */
__global__ void __launch_bounds__(EMB_FWD_THREADS)
emb_fwd_kernel(const emb_fwd_args a, const uint32_t *tok, int T, int V, int D)
{
	const int nvec = D / 8;
	const int i = blockIdx.x * EMB_FWD_THREADS + threadIdx.x; /* < T nvec < 2^31 */
	if (i >= T * nvec)
		return;
	const int t = i / nvec, c = i - t * nvec;
	const uint32_t v = tok[t];
	/* constant indices only: a run-time index into the parameter struct
	 * would copy it to local memory */
	const unsigned y = blockIdx.y;
	const uint16_t *tab = y == 0 ? a.tab[0] : y == 1 ? a.tab[1] : y == 2 ? a.tab[2] : a.tab[3];
	uint16_t *out = y == 0 ? a.out[0] : y == 1 ? a.out[1] : y == 2 ? a.out[2] : a.out[3];
	uint4 u;
	if (v < (uint32_t)V)
		u = reinterpret_cast<const uint4 *>(tab + (size_t)v * D)[c];
	else
		u = make_uint4(BF16_NAN * 0x10001u, BF16_NAN * 0x10001u, BF16_NAN * 0x10001u,
		               BF16_NAN * 0x10001u);
	reinterpret_cast<uint4 *>(out + (size_t)t * D)[c] = u;
}

extern "C" void embedding_forward(uint16_t *const out[], const uint16_t *const tables[],
                                  int ntables, const uint32_t *tok, int T, int V, int D,
                                  cudaStream_t s)
{
	KREQUIRE(ntables >= 1 && ntables <= EMBEDDING_MAX_TABLES, "ntables = %d not in 1..%d",
	         ntables, EMBEDDING_MAX_TABLES);
	KREQUIRE(T >= 0 && V > 0 && D > 0 && D % 8 == 0, "bad shape T = %d, V = %d, D = %d", T, V,
	         D);
	KREQUIRE((long long)T * (D / 8) < 0x7fffffffLL, "T * D too large");
	emb_fwd_args a = {};
	for (int i = 0; i < ntables; i++) {
		KREQUIRE(out[i] && tables[i] && is_aligned16(out[i]) && is_aligned16(tables[i]),
		         "table %d: NULL or not 16-byte aligned", i);
		a.out[i] = out[i];
		a.tab[i] = tables[i];
	}
	KREQUIRE(tok, "tok must not be NULL");
	if (T == 0)
		return;
	dim3 grid((unsigned)(((long long)T * (D / 8) + EMB_FWD_THREADS - 1) / EMB_FWD_THREADS),
	          (unsigned)ntables);
	emb_fwd_kernel<<<grid, EMB_FWD_THREADS, 0, s>>>(a, tok, T, V, D);
	CUDA_CHECK_LAST();
}

/* ------------------------------------------------------------------------
 * Plan
 */
__global__ void emb_keys_kernel(uint32_t *keys, int32_t *pos, const uint32_t *tok, int T, int V)
{
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= T)
		return;
	const uint32_t v = tok[i];
	keys[i] = v < (uint32_t)V ? v : (uint32_t)V;
	pos[i] = i;
}

static int key_bits(int V) /* bits of the largest key, V itself */
{
	int b = 0;
	while (b < 32 && ((uint32_t)V >> b) != 0)
		b++;
	return b;
}

extern "C" struct embedding_plan *embedding_plan_create(int max_T, int V, int max_D)
{
	KREQUIRE(max_T > 0 && V > 0 && max_D > 0 && max_D % 8 == 0,
	         "bad sizes max_T = %d, V = %d, max_D = %d", max_T, V, max_D);
	struct embedding_plan *p = (struct embedding_plan *)calloc(1, sizeof *p);
	KREQUIRE(p, "out of memory");
	p->max_T = max_T, p->V = V, p->max_D = max_D;
	p->end_bit = key_bits(V);
	size_t n = (size_t)max_T;
	CUDA_CHECK(cudaMalloc((void **)&p->keys_in, n * sizeof(uint32_t)));
	CUDA_CHECK(cudaMalloc((void **)&p->keys, n * sizeof(uint32_t)));
	CUDA_CHECK(cudaMalloc((void **)&p->pos_in, n * sizeof(int32_t)));
	CUDA_CHECK(cudaMalloc((void **)&p->pos, n * sizeof(int32_t)));
	CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, p->temp_bytes, p->keys_in, p->keys,
	                                           p->pos_in, p->pos, max_T, 0, p->end_bit));
	CUDA_CHECK(cudaMalloc(&p->temp, p->temp_bytes > 0 ? p->temp_bytes : 16));
	size_t nwin = (n + CH - 1) / CH;
	CUDA_CHECK(cudaMalloc((void **)&p->partial, 2 * nwin * (size_t)max_D * sizeof(float)));
	return p;
}

extern "C" void embedding_plan_free(struct embedding_plan *p)
{
	if (!p)
		return;
	cudaFree(p->keys_in);
	cudaFree(p->keys);
	cudaFree(p->pos_in);
	cudaFree(p->pos);
	cudaFree(p->temp);
	cudaFree(p->partial);
	free(p);
}

extern "C" void embedding_plan_build(struct embedding_plan *p, const uint32_t *tok, int T,
                                     cudaStream_t s)
{
	KREQUIRE(p && tok, "NULL plan or tokens");
	KREQUIRE(T >= 0 && T <= p->max_T, "T = %d not in 0..max_T = %d", T, p->max_T);
	p->T = T;
	if (T == 0)
		return;
	emb_keys_kernel<<<(T + 255) / 256, 256, 0, s>>>(p->keys_in, p->pos_in, tok, T, p->V);
	CUDA_CHECK_LAST();
	size_t need = 0;
	CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, need, p->keys_in, p->keys, p->pos_in,
	                                           p->pos, T, 0, p->end_bit, s));
	KREQUIRE(need <= p->temp_bytes, "cub wants %zu bytes of scratch for T = %d, plan has %zu",
	         need, T, p->temp_bytes);
	size_t have = p->temp_bytes;
	CUDA_CHECK(cub::DeviceRadixSort::SortPairs(p->temp, have, p->keys_in, p->keys, p->pos_in,
	                                           p->pos, T, 0, p->end_bit, s));
}

/* ------------------------------------------------------------------------
 * Backward
 */
__device__ __forceinline__ void grad_add(float *row, const float acc[8], float sc)
{
	float g[8];
	f32x8_load(row, g);
#pragma unroll
	for (int e = 0; e < 8; e++)
		g[e] += sc * acc[e];
	f32x8_store(row, g);
}

__device__ __forceinline__ void grad_add(uint16_t *row, const float acc[8], float sc)
{
	float g[8];
	bf16x8_load(row, g);
#pragma unroll
	for (int e = 0; e < 8; e++)
		g[e] += sc * acc[e];
	bf16x8_store(row, g);
}

__device__ __forceinline__ void acc_add(float acc[8], const float r[8])
{
#pragma unroll
	for (int e = 0; e < 8; e++)
		acc[e] += r[e];
}

/* Kernel 1: block w sums the chunks of sorted entries [w CH, w CH + CH). */
template <typename G>
__global__ void emb_bwd_chunk_kernel(G *grad, float *partial, const uint16_t *dy, long long ld,
                                     const float *scale, const uint32_t *keys,
                                     const int32_t *pos, int T, int V, int D)
{
	__shared__ uint32_t sk[CH + 2]; /* sk[i + 1] = key of entry base + i; sk[0], sk[cnt + 1]: neighbours */
	__shared__ int32_t sp[CH];
	const int w = blockIdx.x, base = w * CH, cnt = min(CH, T - base);
	for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
		sk[i + 1] = keys[base + i];
		sp[i] = pos[base + i];
	}
	if (threadIdx.x == 0) {
		sk[0] = base > 0 ? keys[base - 1] : 0xffffffffu;
		sk[cnt + 1] = base + cnt < T ? keys[base + cnt] : 0xffffffffu;
	}
	__syncthreads();
	const float sc = scale ? *scale : 1.0f;
	const int nvec = D / 8;
	for (int a = 0; a < cnt;) {
		const uint32_t key = sk[a + 1];
		int b = a + 1;
		while (b < cnt && sk[b + 1] == key)
			b++;
		/* chunk = entries [a, b) of this window */
		const bool whole = sk[a] != key && sk[b + 1] != key;
		if (key < (uint32_t)V) {
			for (int c = threadIdx.x; c < nvec; c += blockDim.x) {
				float acc[8];
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc[e] = 0.0f;
				const uint16_t *col = dy + 8 * c;
				int i = a;
				for (; i + 4 <= b; i += 4) {
					float r0[8], r1[8], r2[8], r3[8];
					bf16x8_load(col + sp[i] * ld, r0);
					bf16x8_load(col + sp[i + 1] * ld, r1);
					bf16x8_load(col + sp[i + 2] * ld, r2);
					bf16x8_load(col + sp[i + 3] * ld, r3);
					acc_add(acc, r0);
					acc_add(acc, r1);
					acc_add(acc, r2);
					acc_add(acc, r3);
				}
				for (; i < b; i++) {
					float r0[8];
					bf16x8_load(col + sp[i] * ld, r0);
					acc_add(acc, r0);
				}
				if (whole)
					grad_add(grad + (size_t)key * D + 8 * c, acc, sc);
				else
					f32x8_store(partial + (size_t)(2 * w + (a != 0)) * D + 8 * c, acc);
			}
		}
		a = b;
	}
}

/* First index i in [lo, hi) with keys[i] >= key (after = 0) or > key (after = 1). */
__device__ int key_search(const uint32_t *keys, int lo, int hi, uint32_t key, int after)
{
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		uint32_t k = keys[mid];
		if (k < key || (after && k == key))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Kernel 2: block w finishes the token whose run starts in window w and
 * continues past it, if any. */
template <typename G>
__global__ void emb_bwd_merge_kernel(G *grad, const float *partial, const float *scale,
                                     const uint32_t *keys, int T, int V, int D)
{
	const int w = blockIdx.x, base = w * CH, end = base + CH;
	if (end >= T)
		return;
	const uint32_t key = keys[end - 1];
	if (key >= (uint32_t)V || keys[end] != key)
		return;
	__shared__ int s_first, s_nwin;
	if (threadIdx.x == 0) {
		const int first = key_search(keys, 0, end - 1, key, 0); /* run start */
		const int last = key_search(keys, end, T, key, 1);      /* run end */
		s_first = first;
		s_nwin = (last + CH - 1) / CH - w; /* windows holding the run, from w on */
	}
	__syncthreads();
	const int first = s_first, nwin = s_nwin;
	if (first < base) /* the run started in an earlier window: its block does it */
		return;
	const float sc = scale ? *scale : 1.0f;
	const int nvec = D / 8;
	for (int c = threadIdx.x; c < nvec; c += blockDim.x) {
		float acc[8];
		f32x8_load(partial + (size_t)(2 * w + (first != base)) * D + 8 * c, acc);
		int k = 1;
		for (; k + 8 <= nwin; k += 8) { /* 16 loads in flight: long runs are serial */
			float r[8][8];
#pragma unroll
			for (int u = 0; u < 8; u++)
				f32x8_load(partial + (size_t)(2 * (w + k + u)) * D + 8 * c, r[u]);
#pragma unroll
			for (int u = 0; u < 8; u++)
				acc_add(acc, r[u]);
		}
		for (; k < nwin; k++) {
			float r0[8];
			f32x8_load(partial + (size_t)(2 * (w + k)) * D + 8 * c, r0);
			acc_add(acc, r0);
		}
		grad_add(grad + (size_t)key * D + 8 * c, acc, sc);
	}
}

template <typename G>
static void emb_bwd_launch(const char *fn, G *grad, const uint16_t *dy, int ld_dy,
                           const float *scale, const struct embedding_plan *p, int D,
                           cudaStream_t s)
{
	if (!p || !grad || !dy) {
		fprintf(stderr, "%s: %s: NULL plan, grad or dy\n", progname, fn);
		exit(1);
	}
	if (D <= 0 || D % 8 != 0 || D > p->max_D || ld_dy < D || ld_dy % 8 != 0 ||
	    !is_aligned16(grad) || !is_aligned16(dy)) {
		fprintf(stderr,
		        "%s: %s: bad D = %d (max_D %d, a multiple of 8) or ld_dy = %d (>= D, a "
		        "multiple of 8), or grad, dy not 16-byte aligned\n",
		        progname, fn, D, p->max_D, ld_dy);
		exit(1);
	}
	if (p->T == 0)
		return;
	const unsigned nwin = (unsigned)((p->T + CH - 1) / CH);
	int threads = (D / 8 + 31) / 32 * 32;
	threads = threads < 256 ? threads : 256;
	emb_bwd_chunk_kernel<G><<<nwin, threads, 0, s>>>(grad, p->partial, dy, ld_dy, scale, p->keys,
	                                                 p->pos, p->T, p->V, D);
	CUDA_CHECK_LAST();
	emb_bwd_merge_kernel<G><<<nwin, threads, 0, s>>>(grad, p->partial, scale, p->keys, p->T,
	                                                 p->V, D);
	CUDA_CHECK_LAST();
}

extern "C" void embedding_backward_f32(float *grad, const uint16_t *dy, int ld_dy,
                                       const float *scale, const struct embedding_plan *p, int D,
                                       cudaStream_t s)
{
	emb_bwd_launch(__func__, grad, dy, ld_dy, scale, p, D, s);
}

extern "C" void embedding_backward_bf16(uint16_t *grad, const uint16_t *dy, int ld_dy,
                                        const float *scale, const struct embedding_plan *p,
                                        int D, cudaStream_t s)
{
	emb_bwd_launch(__func__, grad, dy, ld_dy, scale, p, D, s);
}
