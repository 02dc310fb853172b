/*
 * engine_mock.c - host emulation of the launchers the CUDA engine uses
 * beyond those of elementwise_mock.c: the CUDA runtime's stream calls,
 * cast_bf16_to_f32, the GEMM forms, the head + loss, Adam, Muon and the
 * attention (through lib/model.h's fp32 attention core and lib/optim.h's
 * Adam/Muon), with the kernels' bf16 roundings at their outputs. With it
 * tests/gpu/gpu_engine.c runs lib/engine_cuda.c on a machine without a GPU
 * (tests/gpu/mock/run-engine.sh): a check of the engine's wiring (buffers,
 * order of operations, layouts, state copies), not of the CUDA code.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include "util.h"
#include "adam.cuh"
#include "attention.cuh"
#include "cast.cuh"
#include "gemm.cuh"
#include "head_loss.cuh"
#include "mlp_gemm.cuh"
#include "model.h"
#include "muon.cuh"
#include "optim.h"
#include "parallel.h"

int engine_cuda_available(void) { return 1; }

cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st)
{
	memmove(d, s, n);
	return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st)
{
	memset(d, v, n);
	return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int f)
{
	*s = (cudaStream_t)malloc(8);
	return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	free(s);
	return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n)
{
	*p = malloc(n ? n : 1);
	return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p)
{
	free(p);
	return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
	*fr = *tot = (size_t)1 << 40;
	return cudaSuccess;
}

static float B(uint16_t h) { return bf16_to_f32(h); }
static uint16_t R(float f) { return f32_to_bf16(f); }

void cast_bf16_to_f32(float *dst, const uint16_t *src, size_t n, cudaStream_t s)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = B(src[i]);
}

/* ------------------------------------------------------------------------
 * GEMM: C[M,N] = op(A) op(B) (+ beta C), fp32 sums, one rounding.
 */
struct gemm_ctx {
	int dummy;
};
struct gemm_ctx *gemm_create(cudaStream_t stream) { return calloc(1, sizeof(struct gemm_ctx)); }
void gemm_destroy(struct gemm_ctx *g) { free(g); }

struct mm_job {
	int M, N, K, ta, tb, ct;
	const uint16_t *A, *Bm;
	void *C;
	float alpha, beta;
};
static void mm_rows(void *ctx, size_t b, size_t e, int tid)
{
	const struct mm_job *j = ctx;
	float *col = malloc(sizeof(float) * (size_t)j->K);
	for (size_t m = b; m < e; m++)
		for (int n = 0; n < j->N; n++) {
			float s = 0;
			for (int k = 0; k < j->K; k++) {
				float a = B(j->ta ? j->A[(size_t)k * j->M + m] : j->A[m * j->K + k]);
				float bb = B(j->tb ? j->Bm[(size_t)n * j->K + k] : j->Bm[(size_t)k * j->N + n]);
				s += a * bb;
			}
			s *= j->alpha;
			size_t o = m * (size_t)j->N + (size_t)n;
			if (j->ct == GEMM_F32) {
				float *C = j->C;
				C[o] = j->beta != 0 ? s + j->beta * C[o] : s;
			} else {
				uint16_t *C = j->C;
				C[o] = R(j->beta != 0 ? s + j->beta * B(C[o]) : s);
			}
		}
	free(col);
}
static void mm(int ta, int tb, int M, int N, int K, const uint16_t *A, const uint16_t *Bm,
               float beta, void *C, int ct)
{
	struct mm_job j = {M, N, K, ta, tb, ct, A, Bm, C, 1.0f, beta};
	parallel_for((size_t)M, mm_rows, &j);
}
/* the process's algorithm choices (none here) and the fused MLP products
 * (never taken here: the engine falls back to gemm_* and relu2) */
char *gemm_export(void) { return xstrdup("gemm choices (mock)\n"); }
int gemm_import(const char *text) { return 0; }
int mlp_fc_relu2_forward(uint16_t *u, uint16_t *act, const uint16_t *h, const uint16_t *W, int M,
                         int N, int K, cudaStream_t s)
{
	return -1;
}
int mlp_proj_dx_relu2(uint16_t *du, const uint16_t *dy, const uint16_t *W, const uint16_t *u,
                      int M, int N, int K, cudaStream_t s)
{
	return -1;
}
void gemm_fwd(struct gemm_ctx *g, uint16_t *y, const uint16_t *x, const uint16_t *W, int T, int N,
              int K)
{
	mm(0, 1, T, N, K, x, W, 0, y, GEMM_BF16);
}
void gemm_bwd_dx(struct gemm_ctx *g, uint16_t *dx, const uint16_t *dy, const uint16_t *W, int T,
                 int N, int K, float beta)
{
	mm(0, 0, T, K, N, dy, W, beta, dx, GEMM_BF16);
}
void gemm_bwd_dw(struct gemm_ctx *g, float *dW, const uint16_t *dy, const uint16_t *x, int T,
                 int N, int K, float beta)
{
	mm(1, 0, N, K, T, dy, x, beta, dW, GEMM_F32);
}

/* ------------------------------------------------------------------------
 * Head + loss
 */
struct head_loss {
	int max_T, V, D;
	float *tl;
	uint16_t *L;
};
struct head_loss *head_loss_create(int max_T, int vocab, int dim, int chunk_rows, int flags)
{
	struct head_loss *h = calloc(1, sizeof *h);
	h->max_T = max_T, h->V = vocab, h->D = dim;
	h->tl = malloc(sizeof(float) * (size_t)max_T);
	h->L = malloc(sizeof(uint16_t) * (size_t)max_T * (size_t)vocab);
	return h;
}
void head_loss_free(struct head_loss *h)
{
	free(h->tl);
	free(h->L);
	free(h);
}
size_t head_loss_bytes(const struct head_loss *h) { return 0; }

static void head(struct head_loss *h, const uint16_t *x, const uint16_t *w16, const uint32_t *tg,
                 int T, float cap, uint16_t *dx, float *dw, float beta, float *loss)
{
	const int V = h->V;
	mm(0, 1, T, V, h->D, x, w16, 0, h->L, GEMM_BF16);
	double sum = 0;
	float *z = malloc(sizeof(float) * (size_t)V);
	for (int t = 0; t < T; t++) {
		uint16_t *Lr = h->L + (size_t)t * V;
		float mx = -INFINITY;
		for (int v = 0; v < V; v++) {
			z[v] = cap > 0 ? cap * tanhf(B(Lr[v]) / cap) : B(Lr[v]);
			mx = z[v] > mx ? z[v] : mx;
		}
		float s = 0;
		for (int v = 0; v < V; v++)
			s += expf(z[v] - mx);
		float lse = mx + logf(s);
		h->tl[t] = lse - z[tg[t]];
		sum += h->tl[t];
		if (dx)
			for (int v = 0; v < V; v++) {
				float g = (expf(z[v] - lse) - (v == (int)tg[t])) / (float)T;
				if (cap > 0)
					g *= 1 - (z[v] / cap) * (z[v] / cap);
				Lr[v] = R(g);
			}
	}
	free(z);
	*loss = (float)(sum / T);
	if (dx) {
		mm(0, 0, T, h->D, V, h->L, w16, 0, dx, GEMM_BF16);
		mm(1, 0, V, h->D, T, h->L, x, beta, dw, GEMM_F32);
	}
}
void head_loss_forward_backward(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x,
                                const uint16_t *w16, const uint32_t *targets, int T,
                                float softcap, uint16_t *dx, float *dw, float dw_beta, float *loss)
{
	head(h, x, w16, targets, T, softcap, dx, dw, dw_beta, loss);
}
void head_loss_forward(struct head_loss *h, struct gemm_ctx *g, const uint16_t *x,
                       const uint16_t *w16, const uint32_t *targets, int T, float softcap,
                       float *loss)
{
	head(h, x, w16, targets, T, softcap, NULL, NULL, 0, loss);
}

/* ------------------------------------------------------------------------
 * Adam, Muon (lib/optim.h)
 */
void adam_update_gpu(float *p, const float *g, float *m, float *v, size_t n,
                     const struct adam_hyper *h, cudaStream_t stream)
{
	struct adam_hyper hh = *h;
	hh.bf16 = 0;
	adam_update(p, g, m, v, n, &hh);
}
void adam_update_gpu_bf16_gf32(uint16_t *p, const float *g, uint16_t *m, uint16_t *v, size_t n,
                               const struct adam_hyper *h, cudaStream_t stream)
{
	float *pf = malloc(sizeof(float) * n), *mf = malloc(sizeof(float) * n),
	      *vf = malloc(sizeof(float) * n);
	for (size_t i = 0; i < n; i++)
		pf[i] = B(p[i]), mf[i] = B(m[i]), vf[i] = B(v[i]);
	struct adam_hyper hh = *h;
	hh.bf16 = 1;
	adam_update(pf, g, mf, vf, n, &hh);
	for (size_t i = 0; i < n; i++)
		p[i] = R(pf[i]), m[i] = R(mf[i]), v[i] = R(vf[i]);
	free(pf);
	free(mf);
	free(vf);
}
struct muon_ws {
	int rows, cols, max_count;
};
struct muon_ws *muon_ws_create(int rows, int cols, int max_count)
{
	struct muon_ws *w = calloc(1, sizeof *w);
	w->rows = rows, w->cols = cols, w->max_count = max_count;
	return w;
}
void muon_ws_free(struct muon_ws *w) { free(w); }
size_t muon_ws_bytes(const struct muon_ws *w) { return 0; }
void muon_update_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols, int count,
                     float *const p[], const float *const grad[], float *const buf[], double lr,
                     double mu)
{
	if (count > w->max_count || !((w->rows == rows && w->cols == cols) ||
	                               (w->rows == cols && w->cols == rows))) {
		fprintf(stderr, "mock: muon_update_gpu: %d matrices %dx%d for a workspace of %d %dx%d\n",
		        count, rows, cols, w->max_count, w->rows, w->cols);
		exit(1);
	}
	for (int i = 0; i < count; i++)
		muon_update(p[i], grad[i], buf[i], rows, cols, lr, mu, 1);
}

/* ------------------------------------------------------------------------
 * Attention (lib/model.h's fp32 core on bf16 inputs, outputs rounded)
 */
int attn_mask_alloc(struct attn_mask *m, int max_T, int max_heads, struct gpt_err *e)
{
	memset(m, 0, sizeof *m);
	m->max_T = max_T, m->max_heads = max_heads;
	m->docs = malloc(sizeof(int32_t) * (size_t)max_T);
	m->kb_first = malloc(sizeof(int32_t) * (size_t)max_T); /* mock: per-token first key */
	m->qb_last = malloc(sizeof(int32_t) * (size_t)max_T);  /* mock: per-token last query */
	return 0;
}
void attn_mask_free(struct attn_mask *m)
{
	free(m->docs);
	free(m->kb_first);
	free(m->qb_last);
}
int attn_mask_build(struct attn_mask *m, const uint32_t *tokens, int T, int window, uint32_t eot,
                    cudaStream_t s, struct gpt_err *e)
{
	if (T % 128 || T > m->max_T)
		return gpt_errf(e, "mock attn_mask_build: T = %d", T);
	m->T = T, m->window = window;
	gpt_mask_docs(tokens, T, (int)eot, m->docs);
	gpt_mask_ranges(m->docs, T, window, 128, m->kb_first, m->qb_last);
	return 0;
}
static float *tof(const void *x, size_t n)
{
	float *f = malloc(sizeof(float) * n);
	for (size_t i = 0; i < n; i++)
		f[i] = B(((const uint16_t *)x)[i]);
	return f;
}
static void tob(void *x, const float *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((uint16_t *)x)[i] = R(f[i]);
}
int attn_forward(void *y, float *lse, const void *q, const void *k, const void *v,
                 const struct attn_mask *m, int heads, int head_dim, cudaStream_t s,
                 struct gpt_err *e)
{
	const int T = m->T;
	size_t n = (size_t)T * heads * head_dim;
	float *qf = tof(q, n), *kf = tof(k, n), *vf = tof(v, n), *yf = malloc(sizeof(float) * n);
	float *l = malloc(sizeof(float) * (size_t)T * heads);
	cpu_attention_forward(yf, l, qf, kf, vf, T, heads, head_dim, m->kb_first);
	tob(y, yf, n);
	for (int t = 0; t < T; t++)
		for (int h = 0; h < heads; h++)
			lse[(size_t)h * T + t] = l[(size_t)t * heads + h];
	free(qf), free(kf), free(vf), free(yf), free(l);
	return 0;
}
int attn_backward(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k,
                  const void *v, const void *y, const float *lse, const struct attn_mask *m,
                  int heads, int head_dim, cudaStream_t s, struct gpt_err *e)
{
	const int T = m->T;
	size_t n = (size_t)T * heads * head_dim;
	float *qf = tof(q, n), *kf = tof(k, n), *vf = tof(v, n), *yf = tof(y, n), *dyf = tof(dy, n);
	float *dqf = malloc(sizeof(float) * n), *dkf = malloc(sizeof(float) * n),
	      *dvf = malloc(sizeof(float) * n);
	float *l = malloc(sizeof(float) * (size_t)T * heads);
	for (int t = 0; t < T; t++)
		for (int h = 0; h < heads; h++)
			l[(size_t)t * heads + h] = lse[(size_t)h * T + t];
	cpu_attention_backward(dqf, dkf, dvf, dyf, qf, kf, vf, yf, l, T, heads, head_dim,
	                       m->kb_first, m->qb_last);
	tob(dq, dqf, n), tob(dk, dkf, n), tob(dv, dvf, n);
	free(qf), free(kf), free(vf), free(yf), free(dyf), free(dqf), free(dkf), free(dvf), free(l);
	return 0;
}

/* ------------------------------------------------------------------------
 * The data-parallel path with one rank (GPT_CUDA_NCCL=1): Muon split into
 * momentum / orthogonalize / apply as lib/optim.c does it, the CUDA calls
 * for events and devices, and NCCL for a communicator of one rank
 * (reductions and gathers of one rank are copies).
 */
void muon_momentum_gpu(int rows, int cols, int count, float *const buf[], float *const grad[],
                       double mu, cudaStream_t stream)
{
	size_t n = (size_t)rows * cols;
	float *o = xmalloc(sizeof(float) * n);
	for (int i = 0; i < count; i++) {
		muon_momentum(buf[i], o, grad[i], n, mu);
		memcpy(grad[i], o, sizeof(float) * n);
	}
	free(o);
}
void muon_orthogonalize_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols, int count,
                            float *const buf[], const float *const grad[], double mu, int steps,
                            uint16_t *u, size_t u_stride)
{
	size_t n = (size_t)rows * cols;
	float *o = xmalloc(sizeof(float) * n);
	if (buf || count > w->max_count) {
		fprintf(stderr, "mock: muon_orthogonalize_gpu: unsupported call\n");
		exit(1);
	}
	for (int i = 0; i < count; i++) {
		newton_schulz5(o, grad[i], rows, cols, steps, 1);
		for (size_t k = 0; k < n; k++)
			u[i * u_stride + k] = R(o[k]);
	}
	free(o);
}
void muon_apply_gpu(int rows, int cols, int count, float *const p[], const uint16_t *u,
                    size_t u_stride, double lr, cudaStream_t stream)
{
	size_t n = (size_t)rows * cols;
	float *o = xmalloc(sizeof(float) * n);
	for (int i = 0; i < count; i++) {
		for (size_t k = 0; k < n; k++)
			o[k] = B(u[i * u_stride + k]);
		muon_apply(p[i], o, rows, cols, lr);
	}
	free(o);
}
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int f) { return cudaEventCreate(e); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int f) { return cudaSuccess; }

#include <nccl.h>
static int mock_comm;
ncclResult_t ncclGetUniqueId(ncclUniqueId *id) { memset(id, 7, sizeof *id); return ncclSuccess; }
ncclResult_t ncclCommInitRank(ncclComm_t *c, int n, ncclUniqueId id, int rank)
{
	if (n != 1 || rank != 0)
		return ncclInvalidArgument;
	*c = (ncclComm_t)&mock_comm;
	return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t c) { return ncclSuccess; }
ncclResult_t ncclCommAbort(ncclComm_t c) { return ncclSuccess; }
ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *r) { *r = ncclSuccess; return ncclSuccess; }
const char *ncclGetErrorString(ncclResult_t r) { return "mock NCCL error"; }
const char *ncclGetLastError(ncclComm_t c) { return ""; }
static size_t nccl_size(ncclDataType_t t)
{
	return t == ncclDouble ? 8 : t == ncclFloat ? 4 : t == ncclBfloat16 || t == ncclHalf ? 2 : 1;
}
ncclResult_t ncclAllReduce(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t c, cudaStream_t st)
{
	if (s != r)
		memmove(r, s, n * nccl_size(t));
	return ncclSuccess;
}
ncclResult_t ncclAllGather(const void *s, void *r, size_t n, ncclDataType_t t, ncclComm_t c,
                           cudaStream_t st)
{
	if (s != r)
		memmove(r, s, n * nccl_size(t));
	return ncclSuccess;
}
