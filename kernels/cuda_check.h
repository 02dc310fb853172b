/*
 * cuda_check.h - error checks for CUDA, cuBLAS and NCCL calls.
 *
 * CUDA_CHECK(call), CUBLAS_CHECK(call), NCCL_CHECK(call): on failure print
 * "gpt-xxx: file:line: <call>: <error string>" on stderr (the program name
 * from util.h) and exit with status 1. Use them in launchers and host code;
 * kernels themselves report nothing. CUDA_CHECK_LAST() checks a launch.
 */
#ifndef GPT_CUDA_CHECK_H
#define GPT_CUDA_CHECK_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif
extern const char *progname;
#ifdef __cplusplus
}
#endif

#define CUDA_CHECK(call)                                                                 \
	do {                                                                             \
		cudaError_t err_ = (call);                                               \
		if (err_ != cudaSuccess) {                                               \
			fprintf(stderr, "%s: %s:%d: %s: %s\n", progname, __FILE__, __LINE__, \
			        #call, cudaGetErrorString(err_));                        \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

#define CUDA_CHECK_LAST() CUDA_CHECK(cudaGetLastError())

#ifdef CUBLAS_API_H_
#define CUBLAS_CHECK(call)                                                               \
	do {                                                                             \
		cublasStatus_t st_ = (call);                                             \
		if (st_ != CUBLAS_STATUS_SUCCESS) {                                      \
			fprintf(stderr, "%s: %s:%d: %s: %s\n", progname, __FILE__, __LINE__, \
			        #call, cublasGetStatusString(st_));                      \
			exit(1);                                                         \
		}                                                                        \
	} while (0)
#endif

#ifdef NCCL_H_
#define NCCL_CHECK(call)                                                                 \
	do {                                                                             \
		ncclResult_t r_ = (call);                                                \
		if (r_ != ncclSuccess) {                                                 \
			fprintf(stderr, "%s: %s:%d: %s: %s\n", progname, __FILE__, __LINE__, \
			        #call, ncclGetErrorString(r_));                          \
			exit(1);                                                         \
		}                                                                        \
	} while (0)
#endif

#endif
