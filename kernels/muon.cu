/*
 * muon.cu - Muon on the GPU: momentum + bf16 cast (+ transpose), Frobenius
 * normalisation, the Newton-Schulz quintic as batched bf16 GEMMs with
 * elementwise steps between them, and the fp32 apply. See muon.cuh.
 *
 * defines: muon_ws_create, muon_ws_free, muon_ws_bytes,
 *          muon_orthogonalize_gpu, muon_apply_gpu, muon_update_gpu,
 *          muon_momentum_gpu
 *
 * Workspace (contiguous per buffer, matrix i at i * size): X, BX [m, n];
 * A, cA, AA [m, m] (B = b*A + AA is written over AA); part: the Frobenius
 * partial sums (double, NSQ per matrix, summed in a fixed order).
 */
#include <math.h>
#include <string.h>

#include "kcommon.cuh" /* first: declares progname extern "C" before util.h does */
#include "muon.cuh"
#include "optim.h"

#define NSQ 32           /* blocks (partial sums) per matrix for the norm */
#define EW_THREADS 256
#define TILE 32          /* transpose tiles: TILE x TILE, blocks of TILE x 8 */

struct muon_ws {
	int m, n, max_count;
	uint16_t *X, *BX, *A, *cA, *AA;
	double *part;
};

struct fptrs {
	float *a[MUON_GPU_MAX_BATCH];
};
struct cfptrs {
	const float *a[MUON_GPU_MAX_BATCH];
};

/* PyTorch's lerp (ATen/native/Lerp.h) in fp32, as optim.c's lerp_pt. */
static __device__ __forceinline__ float lerp_pt(float s, float e, float w)
{
	return fabsf(w) < 0.5f ? __fadd_rn(s, __fmul_rn(w, __fsub_rn(e, s)))
	                       : __fsub_rn(e, __fmul_rn(__fsub_rn(e, s), __fsub_rn(1.0f, w)));
}

/* X_z = bf16(g'_z) where g' is the Nesterov gradient (MOM) or g itself;
 * TR: X_z = that transposed (X_z is cols x rows). Grid: (tiles along
 * cols, tiles along rows, matrices); block TILE x 8. */
template <bool TR, bool MOM>
__global__ void __launch_bounds__(TILE * 8)
	k_momentum_x(cfptrs g, fptrs buf, int rows, int cols, float w1, float w2, uint16_t *X,
	             size_t mn)
{
	__shared__ uint16_t tile[TILE][TILE + 1];
	const int z = blockIdx.z;
	const float *gz = g.a[z];
	uint16_t *Xz = X + (size_t)z * mn;
	const int c = blockIdx.x * TILE + threadIdx.x;
#pragma unroll
	for (int k = 0; k < TILE / 8; k++) {
		const int r = blockIdx.y * TILE + threadIdx.y + 8 * k;
		if (r < rows && c < cols) {
			const size_t i = (size_t)r * cols + c;
			float o = gz[i];
			if (MOM) {
				float *bz = buf.a[z];
				float b = lerp_pt(bz[i], o, w1);
				bz[i] = b;
				o = lerp_pt(o, b, w2);
			}
			if (TR)
				tile[threadIdx.y + 8 * k][threadIdx.x] = f2bf(o);
			else
				Xz[i] = f2bf(o);
		}
	}
	if (TR) {
		__syncthreads();
#pragma unroll
		for (int k = 0; k < TILE / 8; k++) {
			const int cc = blockIdx.x * TILE + threadIdx.y + 8 * k;
			const int rr = blockIdx.y * TILE + threadIdx.x;
			if (cc < cols && rr < rows)
				Xz[(size_t)cc * rows + rr] = tile[threadIdx.x][threadIdx.y + 8 * k];
		}
	}
}

/* part[z*NSQ + b] = sum of X_z^2 over block b's share, in double. */
__global__ void __launch_bounds__(EW_THREADS)
	k_sumsq(const uint16_t *__restrict__ X, size_t mn, double *__restrict__ part)
{
	__shared__ double red[33];
	const uint16_t *Xz = X + (size_t)blockIdx.y * mn;
	double s = 0;
	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < mn;
	     i += (size_t)NSQ * EW_THREADS) {
		double x = (double)bf2f(Xz[i]);
		s += x * x;
	}
	s = block_sum(s, red);
	if (threadIdx.x == 0)
		part[(size_t)blockIdx.y * NSQ + blockIdx.x] = s;
}

/* X_z = bf16(X_z / (bf16(f32(sqrt(sum))) + 1e-7f)). Grid: (blocks, matrices). */
__global__ void __launch_bounds__(EW_THREADS)
	k_normalize(uint16_t *__restrict__ X, size_t mn, const double *__restrict__ part)
{
	__shared__ float den;
	const int z = blockIdx.y;
	if (threadIdx.x == 0) {
		double s = 0;
		for (int j = 0; j < NSQ; j++)
			s += part[(size_t)z * NSQ + j];
		float nrm = bf2f(f2bf(__double2float_rn(sqrt(s))));
		den = __fadd_rn(nrm, MUON_NS_EPS);
	}
	__syncthreads();
	uint16_t *Xz = X + (size_t)z * mn;
	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < mn;
	     i += (size_t)gridDim.x * EW_THREADS)
		Xz[i] = f2bf(__fdiv_rn(bf2f(Xz[i]), den));
}

/* y == NULL: out = bf16(s*x); else out = bf16(s*x + y). out may be x or y
 * (elementwise, so in place is safe: no __restrict__). */
__global__ void __launch_bounds__(EW_THREADS)
	k_ew(uint16_t *out, const uint16_t *x, const uint16_t *y, size_t n, float s)
{
	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * EW_THREADS) {
		float r = __fmul_rn(s, bf2f(x[i]));
		if (y)
			r = __fadd_rn(r, bf2f(y[i]));
		out[i] = f2bf(r);
	}
}

/* u_z (rows x cols) = X_z, or X_z^T when TR (X_z is cols x rows). */
template <bool TR>
__global__ void __launch_bounds__(TILE * 8)
	k_out(const uint16_t *__restrict__ X, size_t mn, uint16_t *__restrict__ u, size_t u_stride,
	      int rows, int cols)
{
	__shared__ uint16_t tile[TILE][TILE + 1];
	const int z = blockIdx.z;
	const uint16_t *Xz = X + (size_t)z * mn;
	uint16_t *uz = u + (size_t)z * u_stride;
	if (!TR) {
		const int c = blockIdx.x * TILE + threadIdx.x;
#pragma unroll
		for (int k = 0; k < TILE / 8; k++) {
			const int r = blockIdx.y * TILE + threadIdx.y + 8 * k;
			if (r < rows && c < cols)
				uz[(size_t)r * cols + c] = Xz[(size_t)r * cols + c];
		}
	} else {
#pragma unroll
		for (int k = 0; k < TILE / 8; k++) {
			const int cc = blockIdx.x * TILE + threadIdx.y + 8 * k; /* row of X */
			const int rr = blockIdx.y * TILE + threadIdx.x;         /* column of X */
			if (cc < cols && rr < rows)
				tile[threadIdx.y + 8 * k][threadIdx.x] = Xz[(size_t)cc * rows + rr];
		}
		__syncthreads();
		const int c = blockIdx.x * TILE + threadIdx.x;
#pragma unroll
		for (int k = 0; k < TILE / 8; k++) {
			const int r = blockIdx.y * TILE + threadIdx.y + 8 * k;
			if (r < rows && c < cols)
				uz[(size_t)r * cols + c] = tile[threadIdx.x][threadIdx.y + 8 * k];
		}
	}
}

/* p_z += alpha * u_z, fp32, no FMA. Grid: (blocks, matrices). */
__global__ void __launch_bounds__(EW_THREADS)
	k_apply(fptrs p, const uint16_t *__restrict__ u, size_t u_stride, size_t n, float alpha)
{
	const int z = blockIdx.y;
	float *pz = p.a[z];
	const uint16_t *uz = u + (size_t)z * u_stride;
	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * EW_THREADS)
		pz[i] = __fadd_rn(pz[i], __fmul_rn(alpha, bf2f(uz[i])));
}

/* buf = lerp(buf, g, w1); g = lerp(g, buf, w2): k_momentum_x's arithmetic,
 * with g' written over g. Grid: (blocks, matrices). */
__global__ void __launch_bounds__(EW_THREADS)
	k_momentum_inplace(fptrs g, fptrs buf, size_t n, float w1, float w2)
{
	const int z = blockIdx.y;
	float *gz = g.a[z], *bz = buf.a[z];
	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * EW_THREADS) {
		const float o = gz[i], b = lerp_pt(bz[i], o, w1);
		bz[i] = b;
		gz[i] = lerp_pt(o, b, w2);
	}
}

extern "C" struct muon_ws *muon_ws_create(int rows, int cols, int max_count)
{
	if (rows < 1 || cols < 1 || max_count < 1 || max_count > MUON_GPU_MAX_BATCH)
		KFATAL("muon: invalid workspace %d x %d for %d matrices (at most %d)", rows, cols,
		       max_count, MUON_GPU_MAX_BATCH);
	struct muon_ws *w = (struct muon_ws *)calloc(1, sizeof *w);
	if (!w)
		KFATAL("muon: out of host memory");
	w->m = rows < cols ? rows : cols;
	w->n = rows < cols ? cols : rows;
	w->max_count = max_count;
	const size_t mn = (size_t)w->m * w->n, mm = (size_t)w->m * w->m, c = (size_t)max_count;
	CUDA_CHECK(cudaMalloc(&w->X, c * mn * 2));
	CUDA_CHECK(cudaMalloc(&w->BX, c * mn * 2));
	CUDA_CHECK(cudaMalloc(&w->A, c * mm * 2));
	CUDA_CHECK(cudaMalloc(&w->cA, c * mm * 2));
	CUDA_CHECK(cudaMalloc(&w->AA, c * mm * 2));
	CUDA_CHECK(cudaMalloc(&w->part, c * NSQ * sizeof(double)));
	return w;
}

extern "C" void muon_ws_free(struct muon_ws *w)
{
	if (!w)
		return;
	cudaFree(w->X), cudaFree(w->BX), cudaFree(w->A), cudaFree(w->cA), cudaFree(w->AA);
	cudaFree(w->part);
	free(w);
}

extern "C" size_t muon_ws_bytes(const struct muon_ws *w)
{
	const size_t mn = (size_t)w->m * w->n, mm = (size_t)w->m * w->m, c = (size_t)w->max_count;
	return c * (2 * mn + 3 * mm) * 2 + c * NSQ * sizeof(double);
}

static void check_shape(const struct muon_ws *w, int rows, int cols, int count)
{
	int m = rows < cols ? rows : cols, n = rows < cols ? cols : rows;
	if (rows < 1 || cols < 1 || m != w->m || n != w->n)
		KFATAL("muon: %d x %d matrices do not fit a workspace for %d x %d", rows, cols, w->m,
		       w->n);
	if (count < 1 || count > w->max_count)
		KFATAL("muon: %d matrices, workspace holds 1..%d", count, w->max_count);
}

static unsigned ew_grid(size_t n) { return grid_for(n, EW_THREADS * 4, 132 * 8); }

/* Momentum (buf != NULL) and NS of count matrices into u (may be w->BX). */
static void ns_run(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols, int count,
                   float *const buf[], const float *const grad[], double mu, int steps,
                   uint16_t *u, size_t u_stride)
{
	check_shape(w, rows, cols, count);
	if (steps < 0)
		KFATAL("muon: %d Newton-Schulz steps", steps);
	const cudaStream_t s = gemm_stream(g);
	const int m = w->m, n = w->n, tr = rows > cols;
	const size_t mn = (size_t)m * n, mm = (size_t)m * m;
	cfptrs gp;
	fptrs bp;
	memset(&gp, 0, sizeof gp), memset(&bp, 0, sizeof bp);
	for (int i = 0; i < count; i++) {
		if (!grad[i] || (buf && !buf[i]))
			KFATAL("muon: NULL matrix pointer %d", i);
		gp.a[i] = grad[i];
		bp.a[i] = buf ? buf[i] : NULL;
	}
	/* optim.c's muon_momentum: Python scalar weights rounded to fp32 */
	const float w1 = (float)(1 - mu), w2 = (float)mu;
	dim3 tb(TILE, 8), tg((cols + TILE - 1) / TILE, (rows + TILE - 1) / TILE, count);
	if (tr) {
		if (buf)
			k_momentum_x<true, true><<<tg, tb, 0, s>>>(gp, bp, rows, cols, w1, w2, w->X, mn);
		else
			k_momentum_x<true, false><<<tg, tb, 0, s>>>(gp, bp, rows, cols, w1, w2, w->X, mn);
	} else {
		if (buf)
			k_momentum_x<false, true><<<tg, tb, 0, s>>>(gp, bp, rows, cols, w1, w2, w->X, mn);
		else
			k_momentum_x<false, false><<<tg, tb, 0, s>>>(gp, bp, rows, cols, w1, w2, w->X, mn);
	}
	CUDA_CHECK_LAST();
	k_sumsq<<<dim3(NSQ, count), EW_THREADS, 0, s>>>(w->X, mn, w->part);
	CUDA_CHECK_LAST();
	k_normalize<<<dim3(grid_for(mn, EW_THREADS * 4, 256), count), EW_THREADS, 0, s>>>(w->X, mn,
	                                                                                  w->part);
	CUDA_CHECK_LAST();
	const size_t nmn = (size_t)count * mn, nmm = (size_t)count * mm;
	for (int it = 0; it < steps; it++) {
		/* A = X X^T */
		gemm_rm(g, 0, 1, m, m, n, 1.0f, w->X, n, (long long)mn, w->X, n, (long long)mn, 0.0f,
		        w->A, GEMM_BF16, m, (long long)mm, count);
		/* cA = c*A */
		k_ew<<<ew_grid(nmm), EW_THREADS, 0, s>>>(w->cA, w->A, NULL, nmm, MUON_NS_C);
		CUDA_CHECK_LAST();
		/* AA = cA A */
		gemm_rm(g, 0, 0, m, m, m, 1.0f, w->cA, m, (long long)mm, w->A, m, (long long)mm, 0.0f,
		        w->AA, GEMM_BF16, m, (long long)mm, count);
		/* B = b*A + AA, over AA */
		k_ew<<<ew_grid(nmm), EW_THREADS, 0, s>>>(w->AA, w->A, w->AA, nmm, MUON_NS_B);
		CUDA_CHECK_LAST();
		/* BX = B X */
		gemm_rm(g, 0, 0, m, n, m, 1.0f, w->AA, m, (long long)mm, w->X, n, (long long)mn, 0.0f,
		        w->BX, GEMM_BF16, n, (long long)mn, count);
		/* X = a*X + BX */
		k_ew<<<ew_grid(nmn), EW_THREADS, 0, s>>>(w->X, w->X, w->BX, nmn, MUON_NS_A);
		CUDA_CHECK_LAST();
	}
	if (tr)
		k_out<true><<<tg, tb, 0, s>>>(w->X, mn, u, u_stride, rows, cols);
	else
		k_out<false><<<tg, tb, 0, s>>>(w->X, mn, u, u_stride, rows, cols);
	CUDA_CHECK_LAST();
}

extern "C" void muon_orthogonalize_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols,
                                       int count, float *const buf[], const float *const grad[],
                                       double mu, int steps, uint16_t *u, size_t u_stride)
{
	if (!u || (count > 1 && u_stride < (size_t)rows * cols))
		KFATAL("muon: output stride %zu below the matrix size %d x %d", u_stride, rows, cols);
	ns_run(g, w, rows, cols, count, buf, grad, mu, steps, u, u_stride);
}

extern "C" void muon_apply_gpu(int rows, int cols, int count, float *const p[], const uint16_t *u,
                               size_t u_stride, double lr, cudaStream_t stream)
{
	if (rows < 1 || cols < 1 || count < 1 || count > MUON_GPU_MAX_BATCH || !u)
		KFATAL("muon: invalid apply of %d matrices %d x %d", count, rows, cols);
	const size_t n = (size_t)rows * cols;
	if (count > 1 && u_stride < n)
		KFATAL("muon: update stride %zu below the matrix size %zu", u_stride, n);
	fptrs pp;
	memset(&pp, 0, sizeof pp);
	for (int i = 0; i < count; i++) {
		if (!p[i])
			KFATAL("muon: NULL parameter pointer %d", i);
		pp.a[i] = p[i];
	}
	/* optim.c's muon_apply: alpha = -lr * sqrt(max(1, rows/cols)) in
	 * double (muon_scale), then fp32 */
	const double r = (double)rows / (double)cols;
	const float alpha = (float)(-lr * sqrt(r > 1 ? r : 1));
	k_apply<<<dim3(grid_for(n, EW_THREADS * 4, 256), count), EW_THREADS, 0, stream>>>(
		pp, u, u_stride, n, alpha);
	CUDA_CHECK_LAST();
}

extern "C" void muon_update_gpu(struct gemm_ctx *g, struct muon_ws *w, int rows, int cols,
                                int count, float *const p[], const float *const grad[],
                                float *const buf[], double lr, double mu)
{
	if (!buf)
		KFATAL("muon: muon_update_gpu needs momentum buffers");
	const size_t mn = (size_t)rows * cols;
	ns_run(g, w, rows, cols, count, buf, grad, mu, MUON_NS_STEPS, w->BX, mn);
	muon_apply_gpu(rows, cols, count, p, w->BX, mn, lr, gemm_stream(g));
}

extern "C" void muon_momentum_gpu(int rows, int cols, int count, float *const buf[],
                                  float *const grad[], double mu, cudaStream_t stream)
{
	if (rows < 1 || cols < 1 || count < 1 || count > MUON_GPU_MAX_BATCH)
		KFATAL("muon: invalid momentum step of %d matrices %d x %d", count, rows, cols);
	fptrs gp, bp;
	memset(&gp, 0, sizeof gp), memset(&bp, 0, sizeof bp);
	for (int i = 0; i < count; i++) {
		if (!grad[i] || !buf[i])
			KFATAL("muon: NULL matrix pointer %d", i);
		gp.a[i] = grad[i], bp.a[i] = buf[i];
	}
	const size_t n = (size_t)rows * cols;
	const float w1 = (float)(1 - mu), w2 = (float)mu; /* as ns_run */
	k_momentum_inplace<<<dim3(grid_for(n, EW_THREADS * 4, 256), count), EW_THREADS, 0, stream>>>(
		gp, bp, n, w1, w2);
	CUDA_CHECK_LAST();
}
