/*
 * matmul.c - fp32 matrix products for the CPU backend. See matmul.h.
 *
 * Every form is reduced to the "nn" kernel: C rows are computed as sums
 * of scaled rows of B (c += a_ik * b_k), which vectorises without
 * reassociating a dot product. The kernel keeps a 4 x 32 tile of C in
 * registers while it walks a block of K, so each vector of B loaded feeds
 * four fused multiply-adds. The sum for each element of C runs over k in
 * order whatever the thread count (rows of C are split between threads),
 * so results are repeatable on one machine; the instruction set chosen at
 * run time (FMA or not) can change the last bits between machines.
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
#define NB 32  /* columns of C held in registers: 4 x 32 floats */
#define KB 256 /* rows of B per block */

/* The register tile: acc[4][NB] += A[i0..i0+3, k0..k1) * B[k0..k1, n0..n0+NB).
 * Compiled for AVX-512, AVX2+FMA and baseline x86-64; the loader picks one. */
__attribute__((target_clones("avx512f", "arch=haswell", "default")))
static void tile(float *restrict c[ROWS], const struct nn_job *j, int i0, int n0, int k0, int k1)
{
	float acc[ROWS][NB];
	for (int r = 0; r < ROWS; r++)
		for (int x = 0; x < NB; x++)
			acc[r][x] = c[r][n0 + x];
	const size_t N = (size_t)j->N;
	for (int k = k0; k < k1; k++) {
		const float *restrict b = j->B + (size_t)k * N + n0;
		for (int r = 0; r < ROWS; r++) {
			float a = j->A[(size_t)(i0 + r) * j->lda + (size_t)k * j->acol];
			for (int x = 0; x < NB; x++)
				acc[r][x] += a * b[x];
		}
	}
	for (int r = 0; r < ROWS; r++)
		for (int x = 0; x < NB; x++)
			c[r][n0 + x] = acc[r][x];
}

/* Rows or columns that do not fill a tile. */
static void edge(float *c[ROWS], const struct nn_job *j, int i0, int nr, int n0, int n1, int k0, int k1)
{
	for (int k = k0; k < k1; k++) {
		const float *b = j->B + (size_t)k * j->N;
		for (int r = 0; r < nr; r++) {
			float a = j->A[(size_t)(i0 + r) * j->lda + (size_t)k * j->acol];
			float *cr = c[r];
			for (int n = n0; n < n1; n++)
				cr[n] += a * b[n];
		}
	}
}

static void nn_rows(void *vctx, size_t begin, size_t end, int tid)
{
	const struct nn_job *j = vctx;
	const int N = j->N, K = j->K;
	const int nfull = N / NB * NB;
	/* begin/end count groups of ROWS rows */
	for (size_t g = begin; g < end; g++) {
		int i0 = (int)g * ROWS;
		int nr = j->M - i0 < ROWS ? j->M - i0 : ROWS;
		float *c[ROWS];
		for (int r = 0; r < ROWS; r++)
			c[r] = j->C + (size_t)(i0 + (r < nr ? r : 0)) * N;
		if (j->beta == 0.0f)
			for (int r = 0; r < nr; r++)
				memset(c[r], 0, sizeof(float) * (size_t)N);
		for (int k0 = 0; k0 < K; k0 += KB) {
			int k1 = k0 + KB < K ? k0 + KB : K;
			if (nr == ROWS)
				for (int n0 = 0; n0 < nfull; n0 += NB)
					tile(c, j, i0, n0, k0, k1);
			else
				edge(c, j, i0, nr, 0, nfull, k0, k1);
			edge(c, j, i0, nr, nfull, N, k0, k1);
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
