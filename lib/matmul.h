/*
 * matmul.h - fp32 matrix products for the CPU backend.
 *
 * All matrices are row-major and dense. Names give the orientation of the
 * two operands (n = as stored, t = transposed):
 *   matmul_nn: C[M,N] = beta*C + A[M,K]   * B[K,N]
 *   matmul_nt: C[M,N] = beta*C + A[M,K]   * B[N,K]^T   (y = x W^T)
 *   matmul_tn: C[M,N] = beta*C + A[K,M]^T * B[K,N]     (dW = dy^T x)
 * beta is 0 (overwrite; C's old contents, even NaN, are ignored) or 1
 * (accumulate). Work is split over rows of C with parallel_for; each element
 * is summed in the same order whatever the thread count, so results are
 * bitwise repeatable.
 */
#ifndef GPT_MATMUL_H
#define GPT_MATMUL_H

void matmul_nn(float *C, const float *A, const float *B, int M, int N, int K, float beta);
void matmul_nt(float *C, const float *A, const float *B, int M, int N, int K, float beta);
void matmul_tn(float *C, const float *A, const float *B, int M, int N, int K, float beta);

/* Out-of-place transpose: T[cols, rows] = X[rows, cols]^T. */
void transpose(float *T, const float *X, int rows, int cols);

#endif
