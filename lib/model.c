/*
 * model.c - the CPU reference model. See model.h.
 *
 * Contents: the attention mask and rotary table (shared by both
 * precisions); plain double matrix products for the double build; the
 * model body (model_impl.h) instantiated over float and over double; the
 * exported fp32 attention core.
 */
#pragma GCC optimize("O3")
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#include "parallel.h"

/* ------------------------------------------------------------------------
 * Mask (spec section 5)
 */
void gpt_mask_docs(const uint32_t *inputs, int T, int eot, int32_t *docs)
{
	int32_t n = 0;
	for (int i = 0; i < T; i++) {
		n += inputs[i] == (uint32_t)eot;
		docs[i] = n;
	}
}

int gpt_mask_allowed(const int32_t *docs, int q, int k, int window, int block)
{
	return k <= q && docs[k] == docs[q] && (long long)(q / block - k / block) < window;
}

void gpt_mask_ranges(const int32_t *docs, int T, int window, int block, int32_t *first_key,
                     int32_t *last_query)
{
	/* first_key: the later of the document start and the first token of
	 * block q/block - window + 1 */
	int start = 0;
	for (int q = 0; q < T; q++) {
		if (q > 0 && docs[q] != docs[q - 1])
			start = q;
		long long w0 = ((long long)(q / block) - window + 1) * block;
		first_key[q] = (int32_t)(w0 > start ? w0 : start);
	}
	/* last_query: the earlier of the document end and the last token of
	 * block k/block + window - 1 */
	int end = T - 1;
	for (int k = T - 1; k >= 0; k--) {
		if (k < T - 1 && docs[k] != docs[k + 1])
			end = k;
		long long w1 = ((long long)(k / block) + window) * block - 1;
		last_query[k] = (int32_t)(w1 < end ? w1 : end);
	}
}

/* ------------------------------------------------------------------------
 * Rotary table (spec 4.6), fp32 like the record: torch.linspace(0, 1, n)
 * (PyTorch's CPU kernel: start + step*i for the first half, end -
 * step*(n-1-i) for the second, step = 1/(n-1) in fp32), freq = min^u,
 * theta = t * freq, then cos and sin, all in fp32.
 */
void gpt_rope_table(const struct gpt_config *c, int T, float *cos_t, float *sin_t)
{
	int n = c->rope_freqs;
	float *freq = xmalloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
	float step = n > 1 ? 1.0f / (float)(n - 1) : 0.0f;
	for (int j = 0; j < n; j++) {
		float u = n == 1 ? 0.0f : j < n / 2 ? 0.0f + step * (float)j : 1.0f - step * (float)(n - 1 - j);
		freq[j] = powf(c->rope_min_freq, u);
	}
	for (int t = 0; t < T; t++)
		for (int j = 0; j < n; j++) {
			float theta = (float)t * freq[j];
			cos_t[(size_t)t * n + j] = cosf(theta);
			sin_t[(size_t)t * n + j] = sinf(theta);
		}
	free(freq);
}

/* ------------------------------------------------------------------------
 * Double matrix products (same forms and beta rule as lib/matmul.h), split
 * over rows of C; each element sums over k in order.
 */
struct dmm_job {
	double *C;
	const double *A, *B;
	int M, N, K, form; /* 0 nn, 1 nt, 2 tn */
	double beta;
};

static void dmm_rows(void *ctx, size_t b, size_t e, int tid)
{
	const struct dmm_job *j = ctx;
	const size_t N = (size_t)j->N, K = (size_t)j->K, M = (size_t)j->M;
	for (size_t i = b; i < e; i++) {
		double *c = j->C + i * N;
		if (j->beta == 0)
			memset(c, 0, sizeof(double) * N);
		if (j->form == 1) {
			for (size_t n = 0; n < N; n++) {
				double s = 0;
				for (size_t k = 0; k < K; k++)
					s += j->A[i * K + k] * j->B[n * K + k];
				c[n] += s;
			}
			continue;
		}
		for (size_t k = 0; k < K; k++) {
			double a = j->form == 0 ? j->A[i * K + k] : j->A[k * M + i];
			const double *brow = j->B + k * N;
			for (size_t n = 0; n < N; n++)
				c[n] += a * brow[n];
		}
	}
}

static void dmm(int form, double *C, const double *A, const double *B, int M, int N, int K,
                double beta)
{
	struct dmm_job j = {C, A, B, M, N, K, form, beta};
	parallel_for((size_t)M, dmm_rows, &j);
}
static void dmatmul_nn(double *C, const double *A, const double *B, int M, int N, int K, double beta)
{
	dmm(0, C, A, B, M, N, K, beta);
}
static void dmatmul_nt(double *C, const double *A, const double *B, int M, int N, int K, double beta)
{
	dmm(1, C, A, B, M, N, K, beta);
}
static void dmatmul_tn(double *C, const double *A, const double *B, int M, int N, int K, double beta)
{
	dmm(2, C, A, B, M, N, K, beta);
}

/* ------------------------------------------------------------------------
 * The model over float ...
 */
#define REAL float
#define MODEL cpu_model
#define API(x) cpu_model_##x
#define S(x) f32_##x
#define MM_NN matmul_nn
#define MM_NT matmul_nt
#define MM_TN matmul_tn
#define R_SQRT sqrtf
#define R_EXP expf
#define R_LOG logf
#define R_TANH tanhf
#include "model_impl.h"
#undef REAL
#undef MODEL
#undef API
#undef S
#undef MM_NN
#undef MM_NT
#undef MM_TN
#undef R_SQRT
#undef R_EXP
#undef R_LOG
#undef R_TANH
#undef HEAD_ROWS
#undef NPART

/* ... and over double. */
#define REAL double
#define MODEL cpu_model64
#define API(x) cpu_model64_##x
#define S(x) f64_##x
#define MM_NN dmatmul_nn
#define MM_NT dmatmul_nt
#define MM_TN dmatmul_tn
#define R_SQRT sqrt
#define R_EXP exp
#define R_LOG log
#define R_TANH tanh
#include "model_impl.h"

/* ------------------------------------------------------------------------
 * Exported fp32 attention core
 */
void cpu_attention_forward(float *y, float *lse, const float *q, const float *k, const float *v,
                           int T, int heads, int head_dim, const int32_t *first_key)
{
	float *scratch = xmalloc(sizeof(float) * (size_t)parallel_threads() * (size_t)T);
	f32_attn_forward(y, lse, q, k, v, T, heads, head_dim, first_key, scratch, (size_t)T);
	free(scratch);
}

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dy, const float *q,
                            const float *k, const float *v, const float *y, const float *lse,
                            int T, int heads, int head_dim, const int32_t *first_key,
                            const int32_t *last_query)
{
	float *delta = xmalloc(sizeof(float) * (size_t)T * (size_t)heads);
	f32_attn_backward(dq, dk, dv, delta, dy, q, k, v, y, lse, T, heads, head_dim, first_key,
	                  last_query);
	free(delta);
}
