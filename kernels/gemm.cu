/*
 * gemm.cu - row-major bf16 products through cuBLASLt (fallback: cuBLAS
 * GemmEx). See gemm.cuh for the layout mapping and the numerics contract.
 *
 * defines: gemm_create, gemm_destroy, gemm_stream, gemm_stats, gemm_rm,
 *          gemm_fwd, gemm_bwd_dx, gemm_bwd_dw, gemm_bf16_batched
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <string.h>

#include "gemm.cuh"
#include "kcommon.cuh"

#define NPLANS 64

/* Everything that selects an algorithm. Compared with memcmp: always
 * memset to zero before filling (padding). */
struct plan_key {
	int ta, tb, M, N, K, ct, batch;
	int pad_;
	long long lda, ldb, ldc, sA, sB, sC;
	uint32_t alA, alB, alC, pad2_;
};

struct plan {
	int used;
	int lt; /* 1: cublasLtMatmul with algo; 0: GemmEx fallback */
	struct plan_key key;
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t la, lb, lc;
	cublasLtMatmulAlgo_t algo;
};

struct gemm_ctx {
	cudaStream_t stream;
	cublasLtHandle_t lt;
	cublasHandle_t blas;
	void *ws;
	size_t ws_bytes;
	struct plan plans[NPLANS];
	int next; /* round-robin replacement */
	struct gemm_stats st;
};

extern "C" struct gemm_ctx *gemm_create(cudaStream_t stream)
{
	struct gemm_ctx *g = (struct gemm_ctx *)calloc(1, sizeof *g);
	if (!g)
		KFATAL("gemm: out of host memory");
	g->stream = stream;
	g->ws_bytes = GEMM_WORKSPACE_BYTES;
	CUDA_CHECK(cudaMalloc(&g->ws, g->ws_bytes));
	CUBLAS_CHECK(cublasLtCreate(&g->lt));
	CUBLAS_CHECK(cublasCreate(&g->blas));
	CUBLAS_CHECK(cublasSetStream(g->blas, stream));
	CUBLAS_CHECK(cublasSetWorkspace(g->blas, g->ws, g->ws_bytes));
	/* bf16 outputs: no split-K partial sums in bf16 (as gemm.cuh says) */
	CUBLAS_CHECK(cublasSetMathMode(
		g->blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
		                        CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
	return g;
}

static void plan_release(struct plan *p)
{
	if (!p->used)
		return;
	if (p->lt) {
		cublasLtMatrixLayoutDestroy(p->la);
		cublasLtMatrixLayoutDestroy(p->lb);
		cublasLtMatrixLayoutDestroy(p->lc);
		cublasLtMatmulDescDestroy(p->op);
	}
	memset(p, 0, sizeof *p);
}

extern "C" void gemm_destroy(struct gemm_ctx *g)
{
	if (!g)
		return;
	for (int i = 0; i < NPLANS; i++)
		plan_release(&g->plans[i]);
	cublasLtDestroy(g->lt);
	cublasDestroy(g->blas);
	cudaFree(g->ws);
	free(g);
}

extern "C" cudaStream_t gemm_stream(const struct gemm_ctx *g) { return g->stream; }

extern "C" struct gemm_stats gemm_stats(const struct gemm_ctx *g) { return g->st; }

/* Largest power of two (<= 256) dividing the address and, for batches,
 * the byte stride between members. */
static uint32_t alignment(const void *p, long long stride, int elsize, int batch)
{
	uint64_t a = (uint64_t)(uintptr_t)p | 256u;
	if (batch > 1)
		a |= (uint64_t)stride * (uint64_t)elsize;
	return (uint32_t)(a & (~a + 1));
}

static cublasLtMatrixLayout_t layout(cudaDataType_t t, long long rows, long long cols,
                                     long long ld, int batch, long long stride)
{
	cublasLtMatrixLayout_t l;
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, (uint64_t)rows, (uint64_t)cols, ld));
	if (batch > 1) {
		int32_t b = batch;
		int64_t s = stride;
		CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b,
		                                              sizeof b));
		CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
			l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
	}
	return l;
}

/* Build the plan for key k (column-major view: m = N, n = M, first operand
 * our B, second our A; see gemm.cuh). Leaves p->lt = 0 when cuBLASLt has no
 * algorithm for it. */
static void plan_build(struct gemm_ctx *g, struct plan *p, const struct plan_key *k)
{
	memset(p, 0, sizeof *p);
	p->used = 1;
	p->key = *k;
	g->st.plans++;
	const cudaDataType_t ct = k->ct == GEMM_F32 ? CUDA_R_32F : CUDA_R_16BF;
	cublasLtMatmulDesc_t op;
	CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
	/* stored shapes, column-major: our B is [K,N] row-major (tb = 0) = N x K
	 * column-major; [N,K] (tb = 1) = K x N. Likewise for our A. */
	cublasLtMatrixLayout_t la = layout(CUDA_R_16BF, k->tb ? k->K : k->N, k->tb ? k->N : k->K,
	                                   k->ldb, k->batch, k->sB);
	cublasLtMatrixLayout_t lb = layout(CUDA_R_16BF, k->ta ? k->M : k->K, k->ta ? k->K : k->M,
	                                   k->lda, k->batch, k->sA);
	cublasLtMatrixLayout_t lc = layout(ct, k->N, k->M, k->ldc, k->batch, k->sC);

	cublasLtMatmulPreference_t pref;
	CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
	uint64_t wsb = g->ws_bytes;
	uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
	uint32_t al_a = k->alB, al_b = k->alA, al_c = k->alC; /* operands swapped */
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
	                                                  &wsb, sizeof wsb));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
	cublasLtMatmulHeuristicResult_t res;
	memset(&res, 0, sizeof res);
	int found = 0;
	cublasStatus_t st =
		cublasLtMatmulAlgoGetHeuristic(g->lt, op, la, lb, lc, lc, pref, 1, &res, &found);
	cublasLtMatmulPreferenceDestroy(pref);
	if (st == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS &&
	    res.workspaceSize <= g->ws_bytes) {
		p->lt = 1;
		p->op = op, p->la = la, p->lb = lb, p->lc = lc;
		p->algo = res.algo;
		return;
	}
	if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
		KFATAL("gemm: cublasLtMatmulAlgoGetHeuristic: %s", cublasGetStatusString(st));
	cublasLtMatrixLayoutDestroy(la);
	cublasLtMatrixLayoutDestroy(lb);
	cublasLtMatrixLayoutDestroy(lc);
	cublasLtMatmulDescDestroy(op);
}

static struct plan *plan_get(struct gemm_ctx *g, const struct plan_key *k)
{
	for (int i = 0; i < NPLANS; i++)
		if (g->plans[i].used && !memcmp(&g->plans[i].key, k, sizeof *k))
			return &g->plans[i];
	struct plan *p = &g->plans[g->next];
	g->next = (g->next + 1) % NPLANS;
	plan_release(p);
	plan_build(g, p, k);
	return p;
}

extern "C" void gemm_rm(struct gemm_ctx *g, int ta, int tb, int M, int N, int K, float alpha,
                        const void *A, long long lda, long long sA, const void *B, long long ldb,
                        long long sB, float beta, void *C, enum gemm_type ct, long long ldc,
                        long long sC, int batch)
{
	if (M < 1 || N < 1 || K < 1 || batch < 1)
		KFATAL("gemm: invalid shape M=%d N=%d K=%d batch=%d", M, N, K, batch);
	if (ct != GEMM_BF16 && ct != GEMM_F32)
		KFATAL("gemm: invalid output type %d", (int)ct);
	if (lda < (ta ? M : K) || ldb < (tb ? K : N) || ldc < N)
		KFATAL("gemm: leading dimensions lda=%lld ldb=%lld ldc=%lld too small for "
		       "M=%d N=%d K=%d ta=%d tb=%d",
		       lda, ldb, ldc, M, N, K, ta, tb);
	if (!A || !B || !C)
		KFATAL("gemm: NULL operand");
	const int csize = ct == GEMM_F32 ? 4 : 2;
	struct plan_key k;
	memset(&k, 0, sizeof k);
	k.ta = !!ta, k.tb = !!tb, k.M = M, k.N = N, k.K = K, k.ct = (int)ct, k.batch = batch;
	k.lda = lda, k.ldb = ldb, k.ldc = ldc;
	if (batch > 1)
		k.sA = sA, k.sB = sB, k.sC = sC;
	k.alA = alignment(A, k.sA, 2, batch);
	k.alB = alignment(B, k.sB, 2, batch);
	k.alC = alignment(C, k.sC, csize, batch);
	struct plan *p = plan_get(g, &k);
	if (p->lt) {
		g->st.lt_calls++;
		CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &alpha, B, p->la, A, p->lb, &beta, C, p->lc,
		                            C, p->lc, &p->algo, g->ws, g->ws_bytes, g->stream));
		return;
	}
	g->st.fallback_calls++;
	CUBLAS_CHECK(cublasGemmStridedBatchedEx(
		g->blas, k.tb ? CUBLAS_OP_T : CUBLAS_OP_N, k.ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
		&alpha, B, CUDA_R_16BF, (int)ldb, k.sB, A, CUDA_R_16BF, (int)lda, k.sA, &beta, C,
		ct == GEMM_F32 ? CUDA_R_32F : CUDA_R_16BF, (int)ldc, k.sC, batch, CUBLAS_COMPUTE_32F,
		CUBLAS_GEMM_DEFAULT));
}

extern "C" void gemm_fwd(struct gemm_ctx *g, uint16_t *y, const uint16_t *x, const uint16_t *W,
                         int T, int N, int K)
{
	gemm_rm(g, 0, 1, T, N, K, 1.0f, x, K, 0, W, K, 0, 0.0f, y, GEMM_BF16, N, 0, 1);
}

extern "C" void gemm_bwd_dx(struct gemm_ctx *g, uint16_t *dx, const uint16_t *dy,
                            const uint16_t *W, int T, int N, int K, float beta)
{
	gemm_rm(g, 0, 0, T, K, N, 1.0f, dy, N, 0, W, K, 0, beta, dx, GEMM_BF16, K, 0, 1);
}

extern "C" void gemm_bwd_dw(struct gemm_ctx *g, float *dW, const uint16_t *dy, const uint16_t *x,
                            int T, int N, int K, float beta)
{
	gemm_rm(g, 1, 0, N, K, T, 1.0f, dy, N, 0, x, K, 0, beta, dW, GEMM_F32, K, 0, 1);
}

extern "C" void gemm_bf16_batched(struct gemm_ctx *g, int ta, int tb, int M, int N, int K,
                                  const uint16_t *A, long long sA, const uint16_t *B,
                                  long long sB, uint16_t *C, long long sC, int batch)
{
	gemm_rm(g, ta, tb, M, N, K, 1.0f, A, ta ? M : K, sA, B, tb ? K : N, sB, 0.0f, C, GEMM_BF16,
	        N, sC, batch);
}
