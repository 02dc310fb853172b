/*
 * muon.cuh - Muon on the GPU (spec 8.3): momentum, Newton-Schulz in bf16
 * through batched cuBLASLt products, and the fp32 apply; the GPU twin of
 * lib/optim.c's muon_momentum / newton_schulz5(bf16 = 1) / muon_apply.
 * C-callable; bf16 tensors are uint16_t bits.
 *
 * Work is batched over `count` matrices of one shape (the record: 44
 * attention matrices 768x768; 12 c_fc 3072x768; 12 c_proj 768x3072).
 * Matrices are named by host arrays of device pointers (they can live
 * anywhere, e.g. scattered over the flat parameter buffer); the pointer
 * lists travel to the kernels as launch arguments, so nothing has to be
 * uploaded and the arrays may be reused as soon as the call returns.
 *
 * Per matrix G (rows x cols), with X of shape m x n, m = min, n = max:
 *   momentum (fp32, exactly optim.c's lerps, no fused multiply-add):
 *     buf = lerp(buf, g, f32(1-mu));  g' = lerp(g, buf, f32(mu))
 *   X0 = bf16(g'), transposed when rows > cols (the wide orientation)
 *   nrm = bf16(f32(sqrt(sum of X0^2 in double)));  X = bf16(X0 / (nrm + 1e-7f))
 *   5 times:  A  = bf16(X X^T)           (one GEMM: fp32 accumulation, one rounding)
 *             cA = bf16(c*A)
 *             AA = bf16(cA A)             (GEMM)
 *             B  = bf16(b*A + AA)
 *             BX = bf16(B X)              (GEMM)
 *             X  = bf16(a*X + BX)
 *   u = X, transposed back: bf16, the matrix's own shape.
 * The elementwise steps use fp32 with explicitly rounded operations, so
 * they are the CPU's to the bit; the products differ from lib/matmul.h's
 * fp32 sums in summation order only, which flips a bf16 rounding now and
 * then (the tests measure ||u_gpu - u_cpu|| / ||u_cpu||).
 *   apply: p = p + f32(-lr * sqrt(max(1, rows/cols))) * u   (fp32, no FMA)
 *
 * World size P > 1 (spec 8.3): every rank runs muon_momentum_gpu on every
 * matrix (so all ranks hold the whole momentum, as a checkpoint needs; it
 * leaves the Nesterov gradient g' in the gradient buffer), the owner of a
 * matrix runs muon_orthogonalize_gpu without momentum on g' into its slot
 * of the all_gather buffer (u, in the matrix's own shape); after the gather
 * every rank runs muon_apply_gpu on the gathered buffers. The bits are
 * those of the fused path. With P = 1, muon_update_gpu does it all.
 *
 * All work is queued on the gemm context's stream (muon_apply_gpu: the
 * given stream). Errors exit(1) with a message.
 */
#ifndef GPT_MUON_CUH
#define GPT_MUON_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "gemm.cuh"

#ifdef __cplusplus
extern "C" {
#endif

/* Most matrices per call (pointer lists are launch arguments). */
#define MUON_GPU_MAX_BATCH 64

struct muon_ws;

/* Newton-Schulz workspace for up to max_count (<= MUON_GPU_MAX_BATCH)
 * matrices of shape rows x cols OR cols x rows (one workspace serves both
 * c_fc and c_proj). Device memory: max_count * (2 m n + 3 m m) bf16
 * + a little (muon_ws_bytes). */
struct muon_ws *muon_ws_create(int rows, int cols, int max_count);
void muon_ws_free(struct muon_ws *w);
size_t muon_ws_bytes(const struct muon_ws *w);

/* Newton-Schulz of count matrices (steps iterations; the record: 5):
 *   with buf != NULL: momentum first (buf[i] updated in place, fp32,
 *     grad[i] only read), then NS5 of the Nesterov gradient g';
 *   with buf == NULL: NS5 of grad[i] itself (no momentum; mu ignored).
 * Output: u + i * u_stride (elements) holds matrix i's update, bf16,
 * rows x cols row-major. u must not overlap the workspace or the inputs. */
void muon_orthogonalize_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols, int count,
                            float *const buf[], const float *const grad[], double mu, int steps,
                            uint16_t *u, size_t u_stride);

/* p[i] += f32(-lr * sqrt(max(1, rows/cols))) * u_i for count matrices,
 * u_i = u + i * u_stride (bf16, rows x cols). */
void muon_apply_gpu(int rows, int cols, int count, float *const p[], const uint16_t *u,
                    size_t u_stride, double lr, cudaStream_t stream);

/* Momentum alone, for count matrices of rows x cols (fp32, as
 * muon_orthogonalize_gpu's): buf[i] = lerp(buf[i], grad[i], 1 - mu), then
 * grad[i] = lerp(grad[i], buf[i], mu) (the Nesterov gradient, in place). */
void muon_momentum_gpu(int rows, int cols, int count, float *const buf[], float *const grad[],
                       double mu, cudaStream_t stream);

/* World size 1: momentum + NS5 (5 steps) + apply for count matrices. The
 * update goes through the workspace (no extra memory). */
void muon_update_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols, int count,
                     float *const p[], const float *const grad[], float *const buf[], double lr,
                     double mu);

#ifdef __cplusplus
}
#endif

#endif
