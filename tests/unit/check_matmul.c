/* check_matmul.c - matrix products against a double-precision triple loop. */
#include <math.h>

#include "check_common.h"
#include "matmul.h"
#include "parallel.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void check_form(int form, int M, int N, int K, float beta)
{
	float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
	float *C = malloc(sizeof(float) * M * N), *C0 = malloc(sizeof(float) * M * N);
	for (int i = 0; i < M * K; i++) A[i] = frand();
	for (int i = 0; i < K * N; i++) B[i] = frand();
	for (int i = 0; i < M * N; i++) C[i] = C0[i] = beta ? frand() : NAN;
	if (form == 0) matmul_nn(C, A, B, M, N, K, beta);
	if (form == 1) matmul_nt(C, A, B, M, N, K, beta);
	if (form == 2) matmul_tn(C, A, B, M, N, K, beta);
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double s = beta ? C0[i * N + j] : 0.0;
			for (int k = 0; k < K; k++) {
				double a = form == 2 ? A[k * M + i] : A[i * K + k];
				double b = form == 1 ? B[j * K + k] : B[k * N + j];
				s += a * b;
			}
			ck_assert_msg(fabs(C[i * N + j] - s) <= 1e-5 * (1 + sqrt(K)),
			              "form %d (%d,%d): %g vs %g", form, i, j, C[i * N + j], s);
		}
	free(A), free(B), free(C), free(C0);
}

START_TEST(forms)
{
	int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {4, 4, 4}, {17, 33, 300}, {64, 48, 520}};
	for (int f = 0; f < 3; f++)
		for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
			check_form(f, shapes[s][0], shapes[s][1], shapes[s][2], 0.0f);
			check_form(f, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f);
		}
}
END_TEST

START_TEST(transpose_round_trip)
{
	float X[6] = {1, 2, 3, 4, 5, 6}, T[6];
	transpose(T, X, 2, 3);
	float want[6] = {1, 4, 2, 5, 3, 6};
	ck_assert_mem_eq(T, want, sizeof want);
}
END_TEST

struct sum_ctx { long long *part; };
static void sum_range(void *v, size_t b, size_t e, int tid)
{
	struct sum_ctx *c = v;
	for (size_t i = b; i < e; i++)
		c->part[tid] += (long long)i;
}

START_TEST(parallel_covers_range)
{
	long long part[256] = {0};
	struct sum_ctx c = {part};
	parallel_for(100003, sum_range, &c);
	long long s = 0;
	for (int i = 0; i < 256; i++) s += part[i];
	ck_assert(s == 100003LL * 100002LL / 2);
}
END_TEST

static Suite *matmul_suite(void)
{
	Suite *s = suite_create("matmul");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, forms);
	tcase_add_test(tc, transpose_round_trip);
	tcase_add_test(tc, parallel_covers_range);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(matmul_suite)
