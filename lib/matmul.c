/*
 * matmul.c - fp32 matrix products for the CPU backend. See matmul.h.
 *
 * Every form is reduced to the "nn" kernel: C rows are computed as sums
 * of scaled rows of B (c += a_ik * b_k), which vectorises without
 * reassociating a dot product. The kernel takes four rows of C at a time
 * so that each row of B loaded from cache feeds four accumulations, and
 * walks K in blocks so that the B block stays in cache.
 */
#pragma GCC optimize("O3")
#include "matmul.h"

#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "util.h"

struct nn_job {
	float *C;
	const float *A, *B;
	int M, N, K;
	size_t lda;  /* stride between rows of A (elements) */
	size_t acol; /* stride between columns of A: 1, or lda for a transposed A */
	float beta;
};

#define ROWS 4
#define KB 256

static void nn_rows(void *vctx, size_t begin, size_t end, int tid)
{
	const struct nn_job *j = vctx;
	const int N = j->N, K = j->K;
	/* begin/end count groups of ROWS rows */
	for (size_t g = begin; g < end; g++) {
		int i0 = (int)g * ROWS;
		int nr = j->M - i0 < ROWS ? j->M - i0 : ROWS;
		float *c[ROWS];
		for (int r = 0; r < ROWS; r++)
			c[r] = j->C + (size_t)(i0 + (r < nr ? r : 0)) * N;
		for (int r = 0; r < nr; r++)
			if (j->beta == 0.0f)
				memset(c[r], 0, sizeof(float) * (size_t)N);
		for (int k0 = 0; k0 < K; k0 += KB) {
			int k1 = k0 + KB < K ? k0 + KB : K;
			for (int k = k0; k < k1; k++) {
				const float *b = j->B + (size_t)k * N;
				float a[ROWS];
				for (int r = 0; r < ROWS; r++)
					a[r] = r < nr ? j->A[(size_t)(i0 + r) * j->lda + (size_t)k * j->acol] : 0.0f;
				if (nr == ROWS) {
					float *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3];
					for (int n = 0; n < N; n++) {
						float bn = b[n];
						c0[n] += a[0] * bn;
						c1[n] += a[1] * bn;
						c2[n] += a[2] * bn;
						c3[n] += a[3] * bn;
					}
				} else {
					for (int r = 0; r < nr; r++) {
						float *cr = c[r];
						for (int n = 0; n < N; n++)
							cr[n] += a[r] * b[n];
					}
				}
			}
		}
	}
	(void)tid;
}

static void nn_run(struct nn_job *j)
{
	size_t groups = ((size_t)j->M + ROWS - 1) / ROWS;
	parallel_for(groups, nn_rows, j);
}

void matmul_nn(float *C, const float *A, const float *B, int M, int N, int K, float beta)
{
	struct nn_job j = {C, A, B, M, N, K, (size_t)K, 1, beta};
	nn_run(&j);
}

void matmul_tn(float *C, const float *A, const float *B, int M, int N, int K, float beta)
{
	/* A is [K, M]: element (i, k) of A^T is A[k*M + i] */
	struct nn_job j = {C, A, B, M, N, K, 1, (size_t)M, beta};
	nn_run(&j);
}

struct tr_job {
	float *T;
	const float *X;
	int rows, cols;
};

static void tr_rows(void *vctx, size_t begin, size_t end, int tid)
{
	const struct tr_job *j = vctx;
	for (size_t c = begin; c < end; c++)
		for (int r = 0; r < j->rows; r++)
			j->T[c * (size_t)j->rows + (size_t)r] = j->X[(size_t)r * j->cols + c];
	(void)tid;
}

void transpose(float *T, const float *X, int rows, int cols)
{
	struct tr_job j = {T, X, rows, cols};
	parallel_for((size_t)cols, tr_rows, &j);
}

void matmul_nt(float *C, const float *A, const float *B, int M, int N, int K, float beta)
{
	float *Bt = xmalloc(sizeof(float) * (size_t)N * (size_t)K);
	transpose(Bt, B, N, K);
	matmul_nn(C, A, Bt, M, N, K, beta);
	free(Bt);
}
