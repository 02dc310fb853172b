/*
 * attention_mask.cu - mask metadata of spec 5 on the GPU, the host-side
 * work count for FLOP accounting, the launchers' argument check and the
 * TMA tensor maps of the wgmma kernels' tiles. See attention.cuh.
 *
 * defines: attn_mask_alloc, attn_mask_free, attn_mask_build,
 *          attn_count_work, attn_check_args, attn_tmap_tiles
 *
 * The build is one CTA of 1024 threads (T <= 65536 tokens, at most 64 per
 * thread): each thread counts the eot tokens of its contiguous chunk, a
 * Hillis-Steele scan over the 1024 counts gives each chunk its offset, and
 * the thread writes docs for its chunk, recording docs_low/docs_high of the
 * blocks whose first/last token it owns in shared memory. Then one thread
 * per block finds the ends of its runs by binary search:
 *   kb_first[qb] = least kb in [max(0, qb-W+1), qb] with
 *                  docs_high[kb] >= docs_low[qb];
 *   qb_last[kb]  = greatest qb in [kb, min(nb-1, kb+W-1)] with
 *                  docs_low[qb] <= docs_high[kb].
 * These are exactly the "any" blocks of spec 5: for kb <= qb the other
 * document condition docs_low[kb] <= docs_high[qb] always holds, and
 * docs_high, docs_low never decrease, so each set is one run.
 */
#include <stdio.h>

#include <cudaTypedefs.h>

#include "attention_impl.cuh"
#include "cuda_check.h"

extern "C" {
#include "util.h"
}

#define MASK_THREADS 1024
#define MASK_MAX_NB (ATTN_MAX_T / ATTN_BLOCK)

__global__ void __launch_bounds__(MASK_THREADS)
attn_mask_kernel(const uint32_t *__restrict__ tokens, int T, uint32_t eot, int W,
                 int32_t *__restrict__ docs, int32_t *__restrict__ docs_low,
                 int32_t *__restrict__ docs_high, int32_t *__restrict__ kb_first,
                 int32_t *__restrict__ qb_last)
{
	__shared__ int32_t part[MASK_THREADS];
	__shared__ int32_t lo[MASK_MAX_NB], hi[MASK_MAX_NB];
	const int tid = threadIdx.x, nb = T / ATTN_BLOCK;
	const int per = (T + MASK_THREADS - 1) / MASK_THREADS;
	const int b = min(tid * per, T), e = min(b + per, T);
	int c = 0;
	for (int i = b; i < e; i++)
		c += tokens[i] == eot;
	part[tid] = c;
	__syncthreads();
	for (int off = 1; off < MASK_THREADS; off <<= 1) {
		int add = tid >= off ? part[tid - off] : 0;
		__syncthreads();
		part[tid] += add;
		__syncthreads();
	}
	int run = tid > 0 ? part[tid - 1] : 0;
	for (int i = b; i < e; i++) {
		run += tokens[i] == eot;
		docs[i] = run;
		if ((i & (ATTN_BLOCK - 1)) == 0)
			lo[i / ATTN_BLOCK] = run;
		if ((i & (ATTN_BLOCK - 1)) == ATTN_BLOCK - 1)
			hi[i / ATTN_BLOCK] = run;
	}
	__syncthreads();
	for (int x = tid; x < nb; x += MASK_THREADS) {
		docs_low[x] = lo[x];
		docs_high[x] = hi[x];
		/* key blocks of query block x */
		int a = max(0, x - W + 1), z = x, dl = lo[x];
		while (a < z) {
			int mid = (a + z) >> 1;
			if (hi[mid] >= dl)
				z = mid;
			else
				a = mid + 1;
		}
		kb_first[x] = a;
		/* query blocks of key block x */
		int dh = hi[x];
		a = x, z = min(nb - 1, x + W - 1);
		while (a < z) {
			int mid = (a + z + 1) >> 1;
			if (lo[mid] <= dh)
				a = mid;
			else
				z = mid - 1;
		}
		qb_last[x] = a;
	}
}

extern "C" int attn_mask_alloc(struct attn_mask *m, int max_T, int max_heads, struct gpt_err *e)
{
	memset(m, 0, sizeof *m);
	if (max_T < ATTN_BLOCK || max_T > ATTN_MAX_T || max_T % ATTN_BLOCK)
		return gpt_errf(e, "attention: capacity of %d tokens: need a multiple of %d in %d..%d",
		                max_T, ATTN_BLOCK, ATTN_BLOCK, ATTN_MAX_T);
	if (max_heads < 1 || max_heads > 1024)
		return gpt_errf(e, "attention: %d heads: need 1..1024", max_heads);
	const int nb = max_T / ATTN_BLOCK;
	m->max_T = max_T, m->max_heads = max_heads;
	CUDA_CHECK(cudaMalloc((void **)&m->docs, sizeof(int32_t) * (size_t)max_T));
	CUDA_CHECK(cudaMalloc((void **)&m->docs_low, sizeof(int32_t) * (size_t)nb));
	CUDA_CHECK(cudaMalloc((void **)&m->docs_high, sizeof(int32_t) * (size_t)nb));
	CUDA_CHECK(cudaMalloc((void **)&m->kb_first, sizeof(int32_t) * (size_t)nb));
	CUDA_CHECK(cudaMalloc((void **)&m->qb_last, sizeof(int32_t) * (size_t)nb));
	CUDA_CHECK(cudaMalloc((void **)&m->delta, sizeof(float) * (size_t)max_T * (size_t)max_heads));
	CUDA_CHECK(cudaMalloc((void **)&m->dqacc,
	                      sizeof(float) * ATTN_HEAD_DIM * (size_t)max_T * (size_t)max_heads));
	CUDA_CHECK(cudaMalloc((void **)&m->sem, sizeof(int) * (size_t)nb * (size_t)max_heads));
	CUDA_CHECK(cudaMalloc((void **)&m->ticket, sizeof(int)));
	CUDA_CHECK(cudaMemset(m->sem, 0, sizeof(int) * (size_t)nb * (size_t)max_heads));
	CUDA_CHECK(cudaMemset(m->ticket, 0, sizeof(int)));
	return 0;
}

extern "C" void attn_mask_free(struct attn_mask *m)
{
	if (!m)
		return;
	cudaFree(m->docs);
	cudaFree(m->docs_low);
	cudaFree(m->docs_high);
	cudaFree(m->kb_first);
	cudaFree(m->qb_last);
	cudaFree(m->delta);
	cudaFree(m->dqacc);
	cudaFree(m->sem);
	cudaFree(m->ticket);
	memset(m, 0, sizeof *m);
}

static int check_T_window(int T, int cap, int window, struct gpt_err *e)
{
	if (T < ATTN_BLOCK || T % ATTN_BLOCK || T > cap)
		return gpt_errf(e, "attention: T = %d: need a multiple of %d in %d..%d", T, ATTN_BLOCK,
		                ATTN_BLOCK, cap);
	if (window < 1)
		return gpt_errf(e, "attention: window %d: need >= 1 block", window);
	return 0;
}

extern "C" int attn_mask_build(struct attn_mask *m, const uint32_t *tokens, int T, int window,
                               uint32_t eot, cudaStream_t s, struct gpt_err *e)
{
	if (!m->docs)
		return gpt_errf(e, "attention: mask buffers not allocated");
	if (check_T_window(T, m->max_T, window, e))
		return -1;
	if (!tokens)
		return gpt_errf(e, "attention: no tokens");
	const int nb = T / ATTN_BLOCK, W = window < nb ? window : nb;
	ATT_LAUNCH(attn_mask_kernel, 1, MASK_THREADS, 0, s, tokens, T, eot, W, m->docs, m->docs_low,
	           m->docs_high, m->kb_first, m->qb_last);
	CUDA_CHECK_LAST();
	m->T = T, m->window = W;
	return 0;
}

extern "C" int attn_count_work(const uint32_t *tokens, int T, uint32_t eot, int window,
                               struct attn_work *w, struct gpt_err *e)
{
	memset(w, 0, sizeof *w);
	if (check_T_window(T, ATTN_MAX_T, window, e))
		return -1;
	const int nb = T / ATTN_BLOCK, W = window < nb ? window : nb;
	int32_t *docs = (int32_t *)xmalloc(sizeof(int32_t) * (size_t)T);
	int32_t n = 0;
	for (int i = 0; i < T; i++) {
		n += tokens[i] == eot;
		docs[i] = n;
	}
	/* pairs: query q sees max(document start, window start)..q */
	int start = 0;
	for (int q = 0; q < T; q++) {
		if (q > 0 && docs[q] != docs[q - 1])
			start = q;
		int w0 = (q / ATTN_BLOCK - W + 1) * ATTN_BLOCK;
		w->pairs += q - (w0 > start ? w0 : start) + 1;
	}
	/* tiles: the "any" block pairs of spec 5, full ones among them */
	for (int qb = 0; qb < nb; qb++)
		for (int kb = qb - W + 1 > 0 ? qb - W + 1 : 0; kb <= qb; kb++) {
			int lq = docs[qb * ATTN_BLOCK], hq = docs[qb * ATTN_BLOCK + ATTN_BLOCK - 1];
			int lk = docs[kb * ATTN_BLOCK], hk = docs[kb * ATTN_BLOCK + ATTN_BLOCK - 1];
			if (lq <= hk && lk <= hq) {
				w->tiles++;
				w->full_tiles += kb < qb && lq == hk && lk == hq;
			}
		}
	free(docs);
	return 0;
}

int attn_check_args(const struct attn_mask *m, int heads, int head_dim,
                      const void *const *ptrs, int n, const char *what, struct gpt_err *e)
{
	if (!m->docs || m->T < ATTN_BLOCK)
		return gpt_errf(e, "attention %s: no mask built (attn_mask_build)", what);
	if (head_dim != ATTN_HEAD_DIM)
		return gpt_errf(e, "attention %s: head_dim %d: only %d is implemented", what, head_dim,
		                ATTN_HEAD_DIM);
	if (heads < 1 || heads > m->max_heads)
		return gpt_errf(e, "attention %s: %d heads: need 1..%d", what, heads, m->max_heads);
	for (int i = 0; i < n; i++)
		if (!ptrs[i] || ((uintptr_t)ptrs[i] & 15))
			return gpt_errf(e, "attention %s: argument %d is %s", what, i + 1,
			                ptrs[i] ? "not 16-byte aligned" : "NULL");
	return 0;
}

PFN_cuTensorMapEncodeTiled_v12000 att_tmap_encoder(void)
{
	static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
		void *p = NULL;
		enum cudaDriverEntryPointQueryResult st;
		if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
		                                     cudaEnableDefault, &st) != cudaSuccess ||
		    st != cudaDriverEntryPointSuccess)
			p = NULL;
		return (PFN_cuTensorMapEncodeTiled_v12000)p;
	}();
	return fn;
}

/* Built at every launch (a few microseconds of host work; nothing to keep
 * in step with the pointers). */
int attn_tmap_tiles(CUtensorMap *map, const void *p, int T, int H, const char *what,
                    struct gpt_err *e)
{
	const PFN_cuTensorMapEncodeTiled_v12000 encode = att_tmap_encoder();
	if (!encode)
		return gpt_errf(e, "attention %s: the driver has no cuTensorMapEncodeTiled", what);
	const cuuint64_t dim[3] = {ATTN_HEAD_DIM, (cuuint64_t)H, (cuuint64_t)T};
	const cuuint64_t stride[2] = {ATTN_HEAD_DIM * 2, (cuuint64_t)H * ATTN_HEAD_DIM * 2};
	const cuuint32_t box[3] = {64, 1, ATTN_BLOCK}, estr[3] = {1, 1, 1};
	const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)p, dim, stride,
	                          box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
	                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
	                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	if (r != CUDA_SUCCESS)
		return gpt_errf(e, "attention %s: cuTensorMapEncodeTiled failed (CUresult %d)", what,
		                (int)r);
	return 0;
}
