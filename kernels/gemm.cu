/*
 * gemm.cu - row-major bf16 products through cuBLASLt (fallback: cuBLAS
 * GemmEx). See gemm.cuh for the layout mapping and the numerics contract.
 *
 * defines: gemm_create, gemm_destroy, gemm_stream, gemm_stats, gemm_rm,
 *          gemm_fwd, gemm_bwd_dx, gemm_bwd_dw, gemm_bf16_batched,
 *          gemm_set_rank, gemm_export, gemm_import, gemm_forget
 *
 * Algorithm choice (gemm.cuh): a process-wide table of choices, one per
 * plan key, made the first time a key is seen (timed among the heuristic's
 * first TUNE_CANDIDATES, or its first) and kept for the life of the
 * process, so every context and every engine of the process runs the same
 * algorithm for the same key; gemm_export/gemm_import carry it across
 * processes (a checkpoint and its resume). Each context caches plans
 * (descriptors plus the algorithm) built from it; gemm_import bumps a
 * generation number that makes the contexts rebuild theirs.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "gemm.cuh"
#include "kcommon.cuh"

#define NPLANS 64
#define MAX_RANK 16 /* algorithms asked of the heuristic */
#define TUNE_CANDIDATES 8
#define EXPORT_MAGIC "gemm-algos 1"

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
	unsigned gen; /* the choice table's generation it was built from */
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
	int rank; /* -1: the process's choice; >= 0: the heuristic's rank-th (gemm_set_rank) */
	struct gemm_stats st;
};

extern "C" struct gemm_ctx *gemm_create(cudaStream_t stream)
{
	struct gemm_ctx *g = (struct gemm_ctx *)calloc(1, sizeof *g);
	if (!g)
		KFATAL("gemm: out of host memory");
	g->stream = stream;
	g->rank = -1;
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

extern "C" void gemm_set_rank(struct gemm_ctx *g, int rank)
{
	if (rank < -1 || rank >= MAX_RANK)
		KFATAL("gemm: algorithm rank %d outside -1..%d", rank, MAX_RANK - 1);
	for (int i = 0; i < NPLANS; i++)
		plan_release(&g->plans[i]);
	g->next = 0;
	g->rank = rank;
}

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

/* ------------------------------------------------------------------------
 * The process's choices
 */
struct choice {
	struct plan_key key;
	int lt;
	cublasLtMatmulAlgo_t algo;
};
static struct {
	pthread_mutex_t mu;
	struct choice *v;
	int n, cap;
	int tune;     /* -1: GPT_GEMM_TUNE not read yet */
	unsigned gen; /* bumped by gemm_import and gemm_forget */
} ch = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, -1, 1};

static unsigned choice_gen(void) { return __atomic_load_n(&ch.gen, __ATOMIC_ACQUIRE); }

/* Under ch.mu. */
static struct choice *choice_find(const struct plan_key *k)
{
	for (int i = 0; i < ch.n; i++)
		if (!memcmp(&ch.v[i].key, k, sizeof *k))
			return &ch.v[i];
	return NULL;
}

/* Record (or, replace: 1, overwrite) the choice for k; under ch.mu. */
static void choice_put(const struct plan_key *k, int lt, const cublasLtMatmulAlgo_t *algo, int replace)
{
	struct choice *c = choice_find(k);
	if (c && !replace)
		return;
	if (!c) {
		if (ch.n == ch.cap) {
			int cap = ch.cap ? 2 * ch.cap : 64;
			struct choice *v = (struct choice *)realloc(ch.v, sizeof *v * (size_t)cap);
			if (!v)
				KFATAL("gemm: out of host memory");
			ch.v = v, ch.cap = cap;
		}
		c = &ch.v[ch.n++];
		c->key = *k;
	}
	c->lt = lt;
	memset(&c->algo, 0, sizeof c->algo);
	if (lt)
		c->algo = *algo;
}

static int tuning_on(void)
{
	if (ch.tune < 0) { /* 0: off; 1: on; 2: on, and say what was measured */
		const char *t = getenv("GPT_GEMM_TUNE");
		ch.tune = !t || !*t ? 1 : !strcmp(t, "0") ? 0 : !strcmp(t, "2") ? 2 : 1;
	}
	return ch.tune;
}

/* The operands of the product that needs the plan (tuning runs it). */
struct call {
	const void *A, *B;
	void *C;
	float alpha, beta;
	size_t cbytes; /* C's extent in bytes */
};

/* ms per product of algo on the call's operands, reps products back to
 * back between two events; INFINITY when it does not run. */
static float time_algo(struct gemm_ctx *g, const struct plan *p, const cublasLtMatmulAlgo_t *algo,
                       const struct call *cl, void *C, int reps, cudaEvent_t e0, cudaEvent_t e1)
{
	int ok = 1;
	CUDA_CHECK(cudaEventRecord(e0, g->stream));
	for (int i = 0; i < reps && ok; i++)
		ok = cublasLtMatmul(g->lt, p->op, &cl->alpha, cl->B, p->la, cl->A, p->lb, &cl->beta, C,
		                    p->lc, C, p->lc, algo, g->ws, g->ws_bytes,
		                    g->stream) == CUBLAS_STATUS_SUCCESS;
	CUDA_CHECK(cudaEventRecord(e1, g->stream));
	CUDA_CHECK(cudaEventSynchronize(e1));
	CUDA_CHECK(cudaGetLastError());
	float ms;
	CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
	return ok ? ms / (float)reps : INFINITY;
}

/* The fastest of the candidates on this call (the first where timing is
 * off, or impossible: a stream being captured). Each runs once (loading
 * its kernels), then TUNE_ROUNDS rounds time every candidate in turn,
 * starting one later each round so that a drift of the clocks (a GPU
 * warming up) falls on all of them alike, with enough products back to
 * back for about TUNE_MS each; the least total wins. beta != 0 products
 * run into a zeroed scratch buffer of C's extent, so C is left as it was
 * (without the memory for it, the first candidate, untimed). */
#define TUNE_ROUNDS 5
#define TUNE_MS 1.0f
static int pick(struct gemm_ctx *g, const struct plan *p, const cublasLtMatmulHeuristicResult_t *res,
                int n, const struct call *cl)
{
	cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
	CUDA_CHECK(cudaStreamIsCapturing(g->stream, &cs));
	if (n < 2 || !tuning_on() || cs != cudaStreamCaptureStatusNone)
		return 0;
	void *C = cl->C, *scratch = NULL;
	if (cl->beta != 0.0f) {
		if (cudaMalloc(&scratch, cl->cbytes) != cudaSuccess) {
			(void)cudaGetLastError(); /* no memory to spare: untimed */
			return 0;
		}
		CUDA_CHECK(cudaMemsetAsync(scratch, 0, cl->cbytes, g->stream));
		C = scratch;
	}
	cudaEvent_t e0, e1;
	CUDA_CHECK(cudaEventCreate(&e0));
	CUDA_CHECK(cudaEventCreate(&e1));
	float first[MAX_RANK], tmin = INFINITY;
	double sum[MAX_RANK];
	for (int i = 0; i < n; i++) {
		first[i] = time_algo(g, p, &res[i].algo, cl, C, 1, e0, e1);
		sum[i] = 0.0;
		tmin = first[i] < tmin ? first[i] : tmin;
	}
	int best = 0;
	if (isfinite(tmin)) {
		int reps = tmin > 0.0f ? (int)ceilf(TUNE_MS / tmin) : 20;
		reps = reps < 2 ? 2 : reps > 20 ? 20 : reps;
		for (int r = 0; r < TUNE_ROUNDS; r++)
			for (int j = 0; j < n; j++) {
				int i = (j + r) % n;
				if (isfinite(first[i]))
					sum[i] += time_algo(g, p, &res[i].algo, cl, C, reps, e0, e1);
			}
		double sbest = INFINITY;
		for (int i = 0; i < n; i++)
			if (isfinite(first[i]) && sum[i] < sbest)
				sbest = sum[i], best = i;
		if (tuning_on() == 2) {
			const struct plan_key *k = &p->key;
			fprintf(stderr, "%s: gemm: M %d N %d K %d ta %d tb %d batch %d beta %g: ms per "
			        "product", progname, k->M, k->N, k->K, k->ta, k->tb, k->batch,
			        (double)cl->beta);
			for (int i = 0; i < n; i++)
				fprintf(stderr, " %s%.4f", i == best ? "*" : "",
				        sum[i] / TUNE_ROUNDS);
			fprintf(stderr, " (heuristic order, %d x %d products)\n", TUNE_ROUNDS, reps);
		}
	}
	CUDA_CHECK(cudaEventDestroy(e0));
	CUDA_CHECK(cudaEventDestroy(e1));
	if (scratch)
		CUDA_CHECK(cudaFree(scratch));
	g->st.tuned++;
	return best;
}

/* The plan runs cublasGemmStridedBatchedEx: drop its descriptors. */
static void plan_no_lt(struct plan *p)
{
	cublasLtMatrixLayoutDestroy(p->la);
	cublasLtMatrixLayoutDestroy(p->lb);
	cublasLtMatrixLayoutDestroy(p->lc);
	cublasLtMatmulDescDestroy(p->op);
	p->lt = 0;
}

/* Build the plan for key k (column-major view: m = N, n = M, first operand
 * our B, second our A; see gemm.cuh): the descriptors, and the algorithm:
 * the process's choice for k (made here, on the call's operands, when
 * there is none yet), or with gemm_set_rank the heuristic's rank-th.
 * Leaves p->lt = 0 when cuBLASLt has no algorithm for it. */
static void plan_build(struct gemm_ctx *g, struct plan *p, const struct plan_key *k,
                       const struct call *cl)
{
	memset(p, 0, sizeof *p);
	p->used = 1;
	p->key = *k;
	p->gen = choice_gen();
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
	p->op = op;
	p->la = layout(CUDA_R_16BF, k->tb ? k->K : k->N, k->tb ? k->N : k->K, k->ldb, k->batch, k->sB);
	p->lb = layout(CUDA_R_16BF, k->ta ? k->M : k->K, k->ta ? k->K : k->M, k->lda, k->batch, k->sA);
	p->lc = layout(ct, k->N, k->M, k->ldc, k->batch, k->sC);

	int stale = 0; /* a choice this build cannot run (imported) */
	if (g->rank < 0) { /* the process's choice, when there is one */
		pthread_mutex_lock(&ch.mu);
		struct choice *c = choice_find(k);
		struct choice cc;
		memset(&cc, 0, sizeof cc);
		if (c)
			cc = *c;
		pthread_mutex_unlock(&ch.mu);
		if (c && !cc.lt) {
			plan_no_lt(p);
			return;
		}
		cublasLtMatmulHeuristicResult_t chk;
		if (c && cublasLtMatmulAlgoCheck(g->lt, op, p->la, p->lb, p->lc, p->lc, &cc.algo, &chk) ==
		                 CUBLAS_STATUS_SUCCESS &&
		    chk.workspaceSize <= g->ws_bytes) {
			p->lt = 1;
			p->algo = cc.algo;
			return;
		}
		stale = c != NULL; /* none, or one this build cannot run: choose again */
	}

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
	cublasLtMatmulHeuristicResult_t res[MAX_RANK];
	memset(res, 0, sizeof res);
	int found = 0, want = g->rank >= 0 ? g->rank + 1 : TUNE_CANDIDATES;
	cublasStatus_t st =
		cublasLtMatmulAlgoGetHeuristic(g->lt, op, p->la, p->lb, p->lc, p->lc, pref, want, res, &found);
	cublasLtMatmulPreferenceDestroy(pref);
	if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
		KFATAL("gemm: cublasLtMatmulAlgoGetHeuristic: %s", cublasGetStatusString(st));
	if (st != CUBLAS_STATUS_SUCCESS)
		found = 0;
	/* the usable ones, in the heuristic's order */
	int n = 0;
	for (int i = 0; i < found; i++)
		if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= g->ws_bytes)
			res[n++] = res[i];
	g->st.last_offered = n;
	if (g->rank >= 0) { /* the rank-th, or the first where fewer are offered */
		if (n > 0) {
			p->lt = 1;
			p->algo = res[g->rank < n ? g->rank : 0].algo;
			return;
		}
		plan_no_lt(p);
		return;
	}
	if (n > 0) {
		p->lt = 1;
		p->algo = res[pick(g, p, res, n, cl)].algo;
	}
	pthread_mutex_lock(&ch.mu);
	choice_put(k, p->lt, &p->algo, stale);
	struct choice *c = choice_find(k); /* another context's, if it came first */
	if (c->lt && p->lt)
		p->algo = c->algo;
	pthread_mutex_unlock(&ch.mu);
	if (!p->lt)
		plan_no_lt(p);
}

static struct plan *plan_get(struct gemm_ctx *g, const struct plan_key *k, const struct call *cl)
{
	unsigned gen = choice_gen();
	for (int i = 0; i < NPLANS; i++) {
		struct plan *p = &g->plans[i];
		if (p->used && !memcmp(&p->key, k, sizeof *k)) {
			if (p->gen == gen || g->rank >= 0)
				return p;
			plan_release(p); /* the choices changed: rebuild it in place */
			plan_build(g, p, k, cl);
			return p;
		}
	}
	struct plan *p = &g->plans[g->next];
	g->next = (g->next + 1) % NPLANS;
	plan_release(p);
	plan_build(g, p, k, cl);
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
	struct call cl = {A, B, C, alpha, beta, 0};
	cl.cbytes = (size_t)(((long long)(batch - 1) * k.sC + (long long)(M - 1) * ldc + N) * csize);
	struct plan *p = plan_get(g, &k, &cl);
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

/* ------------------------------------------------------------------------
 * Export and import of the choices
 */
static void export_header(char *buf, size_t n)
{
	int dev = 0;
	cudaDeviceProp pr;
	CUDA_CHECK(cudaGetDevice(&dev));
	CUDA_CHECK(cudaGetDeviceProperties(&pr, dev));
	for (char *c = pr.name; *c; c++)
		if (*c == ' ' || *c == '\n')
			*c = '_';
	snprintf(buf, n, "%s cublasLt=%zu sm=%d.%d %s\n", EXPORT_MAGIC, cublasLtGetVersion(), pr.major,
	         pr.minor, pr.name);
}

#define CHOICE_FMT "%d %d %d %d %d %d %d %lld %lld %lld %lld %lld %lld %u %u %u %d"

extern "C" char *gemm_export(void)
{
	char head[512];
	export_header(head, sizeof head);
	pthread_mutex_lock(&ch.mu);
	size_t cap = strlen(head) + 1 + (size_t)ch.n * 512, len = 0;
	char *out = (char *)malloc(cap);
	if (!out)
		KFATAL("gemm: out of host memory");
	len += (size_t)snprintf(out, cap, "%s", head);
	for (int i = 0; i < ch.n; i++) {
		const struct choice *c = &ch.v[i];
		const struct plan_key *k = &c->key;
		len += (size_t)snprintf(out + len, cap - len, CHOICE_FMT, k->ta, k->tb, k->M, k->N, k->K,
		                        k->ct, k->batch, k->lda, k->ldb, k->ldc, k->sA, k->sB, k->sC,
		                        k->alA, k->alB, k->alC, c->lt);
		for (int j = 0; j < 8; j++)
			len += (size_t)snprintf(out + len, cap - len, " %llx",
			                        (unsigned long long)c->algo.data[j]);
		len += (size_t)snprintf(out + len, cap - len, "\n");
	}
	pthread_mutex_unlock(&ch.mu);
	return out;
}

extern "C" int gemm_import(const char *text)
{
	char head[512];
	export_header(head, sizeof head);
	size_t hl = strlen(head);
	if (strncmp(text, EXPORT_MAGIC " ", strlen(EXPORT_MAGIC) + 1))
		return -1;
	if (strncmp(text, head, hl))
		return 0; /* another GPU or cuBLAS: its choices do not apply */
	/* parse everything first: a malformed text changes nothing */
	int cap = 16, n = 0;
	struct choice *v = (struct choice *)malloc(sizeof *v * (size_t)cap);
	if (!v)
		KFATAL("gemm: out of host memory");
	for (const char *s = text + hl; *s;) {
		const char *eol = strchr(s, '\n');
		size_t ll = eol ? (size_t)(eol - s) : strlen(s);
		char line[512];
		if (ll >= sizeof line)
			goto bad;
		memcpy(line, s, ll);
		line[ll] = 0;
		s += ll + (eol ? 1 : 0);
		if (!ll)
			continue;
		if (n == cap) {
			cap *= 2;
			struct choice *nv = (struct choice *)realloc(v, sizeof *v * (size_t)cap);
			if (!nv)
				KFATAL("gemm: out of host memory");
			v = nv;
		}
		struct choice *c = &v[n];
		memset(c, 0, sizeof *c);
		struct plan_key *k = &c->key;
		unsigned long long d[8];
		int used = 0;
		if (sscanf(line, CHOICE_FMT " %llx %llx %llx %llx %llx %llx %llx %llx%n", &k->ta, &k->tb,
		           &k->M, &k->N, &k->K, &k->ct, &k->batch, &k->lda, &k->ldb, &k->ldc, &k->sA,
		           &k->sB, &k->sC, &k->alA, &k->alB, &k->alC, &c->lt, &d[0], &d[1], &d[2], &d[3],
		           &d[4], &d[5], &d[6], &d[7], &used) != 25 ||
		    line[used] || (c->lt != 0 && c->lt != 1))
			goto bad;
		for (int j = 0; j < 8; j++)
			c->algo.data[j] = d[j];
		n++;
	}
	pthread_mutex_lock(&ch.mu);
	for (int i = 0; i < n; i++)
		choice_put(&v[i].key, v[i].lt, &v[i].algo, 1);
	__atomic_add_fetch(&ch.gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ch.mu);
	free(v);
	return n;
bad:
	free(v);
	return -1;
}

extern "C" void gemm_forget(void)
{
	pthread_mutex_lock(&ch.mu);
	ch.n = 0;
	__atomic_add_fetch(&ch.gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ch.mu);
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
