/*
 * mix.cu - residual-stream mixes and their backward (see mix.cuh).
 *
 * defines: mix_lambda_forward, mix_value_forward, mix_skip_forward,
 *          residual_add, mix_lambda_backward, mix_value_backward,
 *          mix_skip_backward, mix_work_bytes (the fp32->bf16 cast is kernels/cast.cu)
 *
 * Forward: one thread per 8 elements. Backward: pass 1 gives each block of
 * MIX_THREADS threads a fixed tile of MIX_VPT * MIX_THREADS vectors of 8
 * (vector tile_base + k * MIX_THREADS + tid, k < MIX_VPT: coalesced); each
 * thread writes its elementwise outputs and sums its products in fp32 in k
 * order; the block sums its threads in double by a fixed butterfly and
 * writes part[block][2]. Pass 2 (one block) sums the parts in order and
 * adds to g. The grid is ceil(n / MIX_TILE), so the bits depend on n only.
 */
#include "mix.cuh"
#include "mix_impl.cuh"

enum { MIX_AB, MIX_A, MIX_SKIP, MIX_ADD };

/* out = c0 a + c1 b (MIX_AB), c0 a (MIX_A), a + c0 b (MIX_SKIP), a + b (MIX_ADD). */
template <int MODE>
__global__ void __launch_bounds__(MIX_THREADS)
mix_fwd_kernel(uint16_t *out, const uint16_t *a, const uint16_t *b, const float *c, size_t nvec)
{
	size_t i = (size_t)blockIdx.x * MIX_THREADS + threadIdx.x;
	if (i >= nvec)
		return;
	float c0 = 1.0f, c1 = 1.0f;
	if (MODE == MIX_AB || MODE == MIX_A)
		c0 = c[0];
	if (MODE == MIX_AB)
		c1 = c[1];
	if (MODE == MIX_SKIP)
		c1 = c[0];
	float va[8], vb[8];
	bf16x8_load(a + 8 * i, va);
	if (MODE != MIX_A)
		bf16x8_load(b + 8 * i, vb);
#pragma unroll
	for (int e = 0; e < 8; e++) {
		if (MODE == MIX_AB)
			va[e] = mix_lin(c0, va[e], c1, vb[e]);
		else if (MODE == MIX_A)
			va[e] = mix_scale(c0, va[e]);
		else if (MODE == MIX_SKIP)
			va[e] = mix_skip(va[e], c1, vb[e]);
		else
			va[e] = mix_add(va[e], vb[e]);
	}
	bf16x8_store(out + 8 * i, va);
}

/* Pass 1 of the backward: dA = c[0] dy; dB += c[1] dy (HAS_DB);
 * part[2 block] = sum dy*A, part[2 block + 1] = sum dy*B (HAS_B, else 0). */
template <bool HAS_B, bool HAS_DB>
__global__ void __launch_bounds__(MIX_THREADS)
mix_bwd_kernel(uint16_t *dA, float *dB, double *part, const uint16_t *dy, const uint16_t *A,
               const uint16_t *B, const float *c, size_t nvec)
{
	const float c0 = c[0], c1 = HAS_DB ? c[1] : 0.0f;
	const size_t base = (size_t)blockIdx.x * (MIX_VPT * MIX_THREADS) + threadIdx.x;
	float s0 = 0.0f, s1 = 0.0f;
	/* all loads first (several 16-byte loads in flight), kept as raw bf16 */
	uint4 rg[MIX_VPT], ra[MIX_VPT], rb[MIX_VPT];
#pragma unroll
	for (int k = 0; k < MIX_VPT; k++) {
		size_t i = base + (size_t)k * MIX_THREADS;
		if (i < nvec) {
			rg[k] = reinterpret_cast<const uint4 *>(dy)[i];
			ra[k] = reinterpret_cast<const uint4 *>(A)[i];
			if (HAS_B)
				rb[k] = reinterpret_cast<const uint4 *>(B)[i];
		}
	}
#pragma unroll
	for (int k = 0; k < MIX_VPT; k++) {
		size_t i = base + (size_t)k * MIX_THREADS;
		if (i >= nvec)
			break;
		float g[8], va[8], vb[8];
		unpack8(rg[k], g);
		unpack8(ra[k], va);
		if (HAS_B)
			unpack8(rb[k], vb);
#pragma unroll
		for (int e = 0; e < 8; e++) {
			s0 = mix_dot(s0, g[e], va[e]);
			if (HAS_B)
				s1 = mix_dot(s1, g[e], vb[e]);
		}
		if (HAS_DB) {
			float d[8];
			f32x8_load(dB + 8 * i, d);
#pragma unroll
			for (int e = 0; e < 8; e++)
				d[e] = mix_axpy(d[e], c1, g[e]);
			f32x8_store(dB + 8 * i, d);
		}
#pragma unroll
		for (int e = 0; e < 8; e++)
			g[e] = mix_scale(c0, g[e]);
		bf16x8_store(dA + 8 * i, g);
	}
	__shared__ double sh[MIX_THREADS / 32][2];
	mix_block_parts<HAS_B>(s0, s1, sh, part);
}

/* ------------------------------------------------------------------------
 * Launchers
 */
static void mix_check(const char *fn, size_t n, const void *p0, const void *p1, const void *p2,
                      const void *p3)
{
	if (n % 8 != 0) {
		fprintf(stderr, "%s: %s: n = %zu is not a multiple of 8\n", progname, fn, n);
		exit(1);
	}
	const void *p[4] = {p0, p1, p2, p3};
	for (int i = 0; i < 4; i++)
		if (p[i] && !is_aligned16(p[i])) {
			fprintf(stderr, "%s: %s: tensor argument %d is not 16-byte aligned\n",
			        progname, fn, i);
			exit(1);
		}
	if (n / 8 / MIX_THREADS >= 0x7fffffffu) {
		fprintf(stderr, "%s: %s: n = %zu is too large for one grid\n", progname, fn, n);
		exit(1);
	}
}

template <int MODE>
static void mix_fwd_launch(uint16_t *out, const uint16_t *a, const uint16_t *b, const float *c,
                           size_t n, cudaStream_t s)
{
	size_t nvec = n / 8;
	if (nvec == 0)
		return;
	unsigned blocks = (unsigned)((nvec + MIX_THREADS - 1) / MIX_THREADS);
	mix_fwd_kernel<MODE><<<blocks, MIX_THREADS, 0, s>>>(out, a, b, c, nvec);
	CUDA_CHECK_LAST();
}

extern "C" void mix_lambda_forward(uint16_t *out, const uint16_t *x, const uint16_t *x0,
                                   const float *l, size_t n, cudaStream_t s)
{
	mix_check(__func__, n, out, x, x0, NULL);
	KREQUIRE(x0 && l, "x0 and l must not be NULL");
	mix_fwd_launch<MIX_AB>(out, x, x0, l, n, s);
}

extern "C" void mix_value_forward(uint16_t *out, const uint16_t *v, const uint16_t *ve,
                                  const float *a, size_t n, cudaStream_t s)
{
	mix_check(__func__, n, out, v, ve, NULL);
	KREQUIRE(a, "a must not be NULL");
	if (ve)
		mix_fwd_launch<MIX_AB>(out, v, ve, a, n, s);
	else
		mix_fwd_launch<MIX_A>(out, v, NULL, a, n, s);
}

extern "C" void mix_skip_forward(uint16_t *out, const uint16_t *x, const uint16_t *skip,
                                 const float *w, size_t n, cudaStream_t s)
{
	mix_check(__func__, n, out, x, skip, NULL);
	KREQUIRE(skip && w, "skip and w must not be NULL");
	mix_fwd_launch<MIX_SKIP>(out, x, skip, w, n, s);
}

extern "C" void residual_add(uint16_t *out, const uint16_t *x, const uint16_t *y, size_t n,
                             cudaStream_t s)
{
	mix_check(__func__, n, out, x, y, NULL);
	KREQUIRE(y, "y must not be NULL");
	mix_fwd_launch<MIX_ADD>(out, x, y, NULL, n, s);
}

extern "C" size_t mix_work_bytes(size_t n)
{
	size_t blocks = (n + MIX_TILE - 1) / MIX_TILE;
	return 2 * sizeof(double) * (blocks > 0 ? blocks : 1);
}

template <bool HAS_B, bool HAS_DB>
static void mix_bwd_launch(uint16_t *dA, float *dB, float *g, int nk, const uint16_t *dy,
                           const uint16_t *A, const uint16_t *B, const float *c, size_t n,
                           void *work, cudaStream_t s)
{
	size_t nvec = n / 8;
	if (nvec == 0)
		return;
	unsigned blocks = (unsigned)((n + MIX_TILE - 1) / MIX_TILE);
	double *part = (double *)work;
	mix_bwd_kernel<HAS_B, HAS_DB><<<blocks, MIX_THREADS, 0, s>>>(dA, dB, part, dy, A, B, c, nvec);
	CUDA_CHECK_LAST();
	mix_sum_kernel<<<1, MIX_SUM_THREADS, 0, s>>>(g, part, blocks, nk);
	CUDA_CHECK_LAST();
}

extern "C" void mix_lambda_backward(uint16_t *dx, float *dx0, float *g, const uint16_t *dout,
                                    const uint16_t *x, const uint16_t *x0, const float *l,
                                    size_t n, void *work, cudaStream_t s)
{
	mix_check(__func__, n, dx, dout, x, x0);
	KREQUIRE(!dx0 || is_aligned16(dx0), "dx0 must be 16-byte aligned");
	KREQUIRE(x0 && l && g && work, "x0, l, g and work must not be NULL");
	KREQUIRE(((uintptr_t)work & 7u) == 0, "work must be 8-byte aligned");
	if (dx0)
		mix_bwd_launch<true, true>(dx, dx0, g, 2, dout, x, x0, l, n, work, s);
	else
		mix_bwd_launch<true, false>(dx, NULL, g, 2, dout, x, x0, l, n, work, s);
}

extern "C" void mix_value_backward(uint16_t *dv_raw, float *g, const uint16_t *dv,
                                   const uint16_t *v_raw, const uint16_t *ve, const float *a,
                                   size_t n, void *work, cudaStream_t s)
{
	mix_check(__func__, n, dv_raw, dv, v_raw, ve);
	KREQUIRE(a && g && work, "a, g and work must not be NULL");
	KREQUIRE(((uintptr_t)work & 7u) == 0, "work must be 8-byte aligned");
	if (ve)
		mix_bwd_launch<true, false>(dv_raw, NULL, g, 2, dv, v_raw, ve, a, n, work, s);
	else
		mix_bwd_launch<false, false>(dv_raw, NULL, g, 1, dv, v_raw, NULL, a, n, work, s);
}

extern "C" void mix_skip_backward(uint16_t *dskip, float *g, const uint16_t *dx,
                                  const uint16_t *skip, const float *w, size_t n, void *work,
                                  cudaStream_t s)
{
	mix_check(__func__, n, dskip, dx, skip, NULL);
	KREQUIRE(skip && w && g && work, "skip, w, g and work must not be NULL");
	KREQUIRE(((uintptr_t)work & 7u) == 0, "work must be 8-byte aligned");
	mix_bwd_launch<false, false>(dskip, NULL, g, 1, dx, skip, NULL, w, n, work, s);
}
