/*
 * gpu_bench.h - benchmark timing shared by the GPU test programs
 * (tests/gpu/gpu_*.c):
 *
 *   cmp_float               qsort order of floats;
 *   gpu_median_ms           benchmark timing: the median over reps samples,
 *                           each per calls of run(arg) between two events
 *                           on the default stream, in ms per call, after
 *                           warm untimed samples;
 *   gpu_sustained_ms        the same run(arg) back to back for `seconds`,
 *                           then timed for as long again: ms per call
 *                           with the GPU at the clock its power limit
 *                           allows under that load (a GPU's boost clock
 *                           only lasts until its power limit is reached).
 *
 * Header-only (static inline: a program takes what it uses); include after
 * <cuda_runtime.h> and cuda_check.h.
 */
#ifndef GPT_GPU_BENCH_H
#define GPT_GPU_BENCH_H

#include <stdlib.h>
#include <time.h>

static inline int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static inline double gpu_median_ms(void (*run)(void *arg), void *arg, int warm, int reps, int per)
{
	cudaEvent_t e0, e1;
	CUDA_CHECK(cudaEventCreate(&e0));
	CUDA_CHECK(cudaEventCreate(&e1));
	float *ms = xmalloc(sizeof(float) * (size_t)reps);
	for (int r = -warm; r < reps; r++) {
		CUDA_CHECK(cudaEventRecord(e0, 0));
		for (int i = 0; i < per; i++)
			run(arg);
		CUDA_CHECK(cudaEventRecord(e1, 0));
		CUDA_CHECK(cudaEventSynchronize(e1));
		if (r >= 0) {
			CUDA_CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
			ms[r] /= (float)per;
		}
	}
	qsort(ms, (size_t)reps, sizeof(float), cmp_float);
	const double med = ms[reps / 2];
	free(ms);
	CUDA_CHECK(cudaEventDestroy(e0));
	CUDA_CHECK(cudaEventDestroy(e1));
	return med;
}

/* Wall-clock seconds (CLOCK_MONOTONIC). */
static inline double gpu_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Batches of 10 calls, two in flight (the host never lets the GPU idle):
 * `seconds` untimed, then as long timed between the first and the last
 * batch's events. */
static inline double gpu_sustained_ms(void (*run)(void *arg), void *arg, double seconds)
{
	cudaEvent_t ev[2], e0;
	CUDA_CHECK(cudaEventCreate(&ev[0]));
	CUDA_CHECK(cudaEventCreate(&ev[1]));
	CUDA_CHECK(cudaEventCreate(&e0));
	double t0 = gpu_bench_now(), tt = 0.0;
	long calls = 0;
	int timing = 0, k = 0;
	for (;; k++) {
		for (int i = 0; i < 10; i++)
			run(arg);
		CUDA_CHECK(cudaEventRecord(ev[k & 1], 0));
		if (timing)
			calls += 10;
		if (k > 0)
			CUDA_CHECK(cudaEventSynchronize(ev[(k - 1) & 1]));
		double t = gpu_bench_now() - t0;
		if (!timing && t >= seconds) {
			CUDA_CHECK(cudaEventRecord(e0, 0)); /* after the batch just queued */
			timing = 1;
			tt = t;
		} else if (timing && t - tt >= seconds) {
			break;
		}
	}
	CUDA_CHECK(cudaEventSynchronize(ev[k & 1])); /* the last batch */
	float ms;
	CUDA_CHECK(cudaEventElapsedTime(&ms, e0, ev[k & 1]));
	CUDA_CHECK(cudaEventDestroy(ev[0]));
	CUDA_CHECK(cudaEventDestroy(ev[1]));
	CUDA_CHECK(cudaEventDestroy(e0));
	return (double)ms / (double)calls;
}

#endif
