/*
 * gemm.cuh - bf16 matrix products on the GPU (cuBLASLt), on row-major data.
 * C-callable; bf16 tensors are passed as uint16_t bit patterns.
 *
 * Implements:
 *   - struct gemm_ctx: one cuBLASLt handle, one 32 MiB workspace and a
 *     cache of planned products, for ONE stream (create one per stream;
 *     the workspace must not be shared by products running concurrently);
 *   - gemm_rm(): the general product C = alpha op(A) op(B) + beta C,
 *     strided-batched, row-major, bf16 inputs, fp32 accumulation, bf16 or
 *     fp32 output;
 *   - the model's three forms (spec 9: bf16 x bf16 -> bf16 with fp32
 *     accumulation; weight gradients accumulated in fp32):
 *       gemm_fwd():    y[T,N]  = x[T,K] W[N,K]^T                 (bf16 out)
 *       gemm_bwd_dx(): dx[T,K] = dy[T,N] W[N,K] (+ beta dx)       (bf16 out)
 *       gemm_bwd_dw(): dW[N,K] = dy[T,N]^T x[T,K] + beta dW       (fp32 out;
 *                      beta = 1 adds into the fp32 master-weight gradient,
 *                      so micro-batches accumulate)
 *   - gemm_bf16_batched(): bf16 strided-batched form (Newton-Schulz);
 *   - the process's algorithm choices, one per product key, timed once
 *     (below) and carried across processes by gemm_export/gemm_import;
 *     gemm_set_rank() for benchmarks.
 *
 * Row-major vs cuBLAS's column-major. A row-major R x C matrix with row
 * stride ld is, byte for byte, the column-major C x R matrix (its
 * transpose) with leading dimension ld. So the row-major product
 *     C[M,N] = op(A) op(B)
 * is computed as the column-major product of the transposes,
 *     C^T[N,M] = op(B)^T op(A)^T,
 * i.e. cuBLAS gets (m, n, k) = (N, M, K), its first operand is our B with
 * our transb, its second is our A with our transa, and every leading
 * dimension is our row stride. No data is moved. The three model forms
 * become, in cuBLAS's (opA, opB) terms: forward "TN" (W^T x), dx "NN"
 * (W dy), dW "NT" (x dy^T).
 *
 * Numerics: fp32 accumulation (CUBLAS_COMPUTE_32F), alpha/beta fp32, one
 * rounding to the output type. Split-K algorithms are restricted to the
 * COMPUTE_TYPE reduction scheme (partial sums in fp32, reduced in a fixed
 * order), so bf16 outputs are rounded once and results are bitwise
 * repeatable for a given shape, pointer alignment, GPU and algorithm (the
 * process's choice, below). beta = 0 never reads C (a NaN-poisoned C is
 * fine).
 *
 * Algorithm choice: the first product of a given shape / types / strides
 * / pointer alignment (a key) in the process asks cuBLASLt's heuristic for
 * up to 8 algorithms and times each on that product's own operands (each
 * run once, then 5 rounds over all of them in rotated order, ~1 ms of
 * products back to back per turn; beta != 0 products into a zeroed
 * scratch buffer of C's extent, cudaMalloc'd for the timing, so C is only
 * written by the real product). The least total becomes the process's choice
 * for the key, used by every context from then on: the timing decides
 * which algorithm runs, never what a given algorithm computes, so results
 * stay bitwise repeatable within a process. GPT_GEMM_TUNE=0 in the
 * environment takes the heuristic's first choice instead, untimed (the
 * behaviour before tuning); GPT_GEMM_TUNE=2 prints each key's timings to
 * stderr. gemm_export()/gemm_import() carry the choices
 * to another process (gpt-train stores them in its checkpoints, so a
 * resumed run computes what the uninterrupted one would have). Each
 * context caches plans built from the choices (64, replaced round-robin).
 * Where cuBLASLt offers no algorithm (odd leading dimensions) the product
 * falls back to cublasGemmStridedBatchedEx with the same numerics
 * contract; gemm_stats() counts both paths.
 *
 * Errors (CUDA/cuBLAS failures, invalid arguments) print
 * "gpt-xxx: gemm: ..." and exit(1), as cuda_check.h does.
 */
#ifndef GPT_GEMM_CUH
#define GPT_GEMM_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

enum gemm_type { GEMM_BF16 = 0, GEMM_F32 = 1 };

#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

struct gemm_ctx;

/* Context for products issued on `stream` (0: the legacy default stream).
 * Allocates GEMM_WORKSPACE_BYTES of device memory. */
struct gemm_ctx *gemm_create(cudaStream_t stream);
void gemm_destroy(struct gemm_ctx *g);
cudaStream_t gemm_stream(const struct gemm_ctx *g);

struct gemm_stats {
	long long lt_calls;       /* products run by cublasLtMatmul */
	long long fallback_calls; /* products run by cublasGemmStridedBatchedEx */
	long long plans;          /* heuristic queries (cache misses) */
	long long tuned;          /* choices made by timing candidates */
	int last_offered;         /* usable algorithms the last query returned */
};
struct gemm_stats gemm_stats(const struct gemm_ctx *g);

/* Plans built from now on take the heuristic's rank-th algorithm (0: its
 * first choice; 0..15), or its first where it offers fewer (last_offered
 * <= rank then); -1 (the default) goes back to the process's choices (see
 * "Algorithm choice"). Drops the cached plans. For benchmarks
 * (bench/gemm.sh): the numbers, not the contract, depend on the rank. */
void gemm_set_rank(struct gemm_ctx *g, int rank);

/* The process's choices as text (malloc'd; free it): a header line naming
 * the format, the cuBLASLt version and the GPU, then one line per key. */
char *gemm_export(void);
/* Adopt the choices in text (from gemm_export), replacing the process's
 * for the same keys; contexts rebuild their plans. Returns the number of
 * choices taken, 0 when the text was made on another GPU model or cuBLASLt
 * version (nothing applies), -1 when it is not such a text (nothing
 * taken). A choice that this build cannot run is made again when used. */
int gemm_import(const char *text);
/* Forget the process's choices (tests). */
void gemm_forget(void);

/* General row-major product, `batch` >= 1 independent products:
 *   C_b[M,N] = alpha * op(A_b) op(B_b) + beta * C_b,   b = 0..batch-1,
 * op(A) = A (ta = 0, A stored [M,K]) or A^T (ta = 1, A stored [K,M]);
 * op(B) = B (tb = 0, B stored [K,N]) or B^T (tb = 1, B stored [N,K]).
 * lda/ldb/ldc: row strides in elements (>= the stored row length);
 * sA/sB/sC: element offsets between consecutive batch members (ignored
 * when batch == 1). A and B are bf16; C is bf16 or fp32 (ct). M, N, K >= 1. */
void gemm_rm(struct gemm_ctx *g, int ta, int tb, int M, int N, int K, float alpha,
             const void *A, long long lda, long long sA, const void *B, long long ldb,
             long long sB, float beta, void *C, enum gemm_type ct, long long ldc, long long sC,
             int batch);

/* y[T,N] = x[T,K] W[N,K]^T; all bf16, dense rows. */
void gemm_fwd(struct gemm_ctx *g, uint16_t *y, const uint16_t *x, const uint16_t *W, int T, int N,
              int K);
/* dx[T,K] = dy[T,N] W[N,K] + beta dx; all bf16, dense rows. */
void gemm_bwd_dx(struct gemm_ctx *g, uint16_t *dx, const uint16_t *dy, const uint16_t *W, int T,
                 int N, int K, float beta);
/* dW[N,K] = dy[T,N]^T x[T,K] + beta dW; dy, x bf16, dW fp32. beta = 0
 * overwrites, beta = 1 accumulates. */
void gemm_bwd_dw(struct gemm_ctx *g, float *dW, const uint16_t *dy, const uint16_t *x, int T,
                 int N, int K, float beta);
/* bf16 strided-batched: C_b[M,N] = op(A_b) op(B_b), dense rows (lda = K
 * or M, ldb = N or K, ldc = N), member b of X at X + b * sX. */
void gemm_bf16_batched(struct gemm_ctx *g, int ta, int tb, int M, int N, int K,
                       const uint16_t *A, long long sA, const uint16_t *B, long long sB,
                       uint16_t *C, long long sC, int batch);

#ifdef __cplusplus
}
#endif

#endif
