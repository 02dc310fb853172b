/*
 * mlp_gemm.cuh - the MLP's two large products with relu^2 fused into the
 * epilogue (Hopper wgmma + TMA, sm_90a; kernels/mlp_gemm.cu). Each
 * replaces a cuBLASLt product and an element-wise pass of relu2.cu, with
 * the same bits as those passes applied to the product's bf16 output:
 *
 *   mlp_fc_relu2_forward(u, act, h, W, M, N, K, s):
 *       u = h W^T (h [M,K], W [N,K], u [M,N]: gemm_fwd's form), and
 *       act = relu(u)^2 from the bf16-rounded u, as relu2_forward(act, u)
 *       computes it (r = u > 0 ? u : 0; act = bf16(r * r)).
 *   mlp_proj_dx_relu2(du, dy, W, u, M, N, K, s):
 *       du = relu2'(dy W, u) (dy [M,K], W [K,N] row-major, u, du [M,N]):
 *       g = bf16(dy W) (gemm_bwd_dx's product), then relu2_backward's
 *       du = u > 0 ? bf16(g * 2 * u) : 0, in that order, in fp32.
 *
 * In the model: M = tokens (T), K = D, N = F = 4 D; fc's W is the [F, D]
 * weight, proj's W the [D, F] one (proj's forward is y = act W^T).
 *
 * bf16 tensors (uint16_t bits), dense rows, fp32 accumulation, one bf16
 * rounding per output. Supported (mlp_gemm_supported): compute capability
 * 9.x with sm_90a code in the build, M % 128 == 0, N % 256 == 0,
 * K % 64 == 0 (fewer than 2^30 tiles of 128 x 256), every
 * pointer 16-byte aligned, u and act distinct from each other and from the
 * inputs (du may be u: each element is read, then written, by one thread).
 * Anything else returns -1 with nothing launched: the caller falls back to
 * gemm_fwd / gemm_bwd_dx and relu2_forward / relu2_backward. 0: launched
 * on stream s (nothing synchronises; errors of the launch itself exit 1,
 * as CUDA_CHECK does).
 *
 * Results equal the cuBLAS path's up to the fp32 summation order of the
 * products (so u and du may differ in the last bf16 bit); act is always
 * exactly relu2_forward of this u, and rerunning gives the same bits.
 *
 * mlp_gemm_set_ctas(n): run the persistent kernels on n CTAs (n >= 1)
 * instead of one per SM; 0 restores the default. For tests (more tiles
 * per CTA: the stage ring across tiles) and benchmarks.
 */
#ifndef GPT_MLP_GEMM_CUH
#define GPT_MLP_GEMM_CUH

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if the fused kernels can take this shape on this device and build
 * (pointers are checked by the launchers). */
int mlp_gemm_supported(int M, int N, int K);

int mlp_fc_relu2_forward(uint16_t *u, uint16_t *act, const uint16_t *h, const uint16_t *W, int M,
                         int N, int K, cudaStream_t s);

int mlp_proj_dx_relu2(uint16_t *du, const uint16_t *dy, const uint16_t *W, const uint16_t *u,
                      int M, int N, int K, cudaStream_t s);

void mlp_gemm_set_ctas(int n);

#ifdef __cplusplus
}
#endif

#endif
