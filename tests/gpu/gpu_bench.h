/*
 * gpu_bench.h - benchmark timing shared by the GPU test programs
 * (tests/gpu/gpu_*.c):
 *
 *   cmp_float               qsort order of floats;
 *   gpu_median_ms           benchmark timing: the median over reps samples,
 *                           each per calls of run(arg) between two events
 *                           on the default stream, in ms per call, after
 *                           warm untimed samples.
 *
 * Header-only (static inline: a program takes what it uses); include after
 * <cuda_runtime.h> and cuda_check.h.
 */
#ifndef GPT_GPU_BENCH_H
#define GPT_GPU_BENCH_H

#include <stdlib.h>

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

#endif
