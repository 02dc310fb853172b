/*
 * gpu_head_q.c - the row kernels of the head's Q path (kernels/head_q.cuh:
 * head_q_rows, head_q_finish, head_q_scale) against a plain double
 * computation on the CPU, from bf16 logits made here (no GEMM). Runs on a
 * CUDA device (make check-gpu) and in the host emulation
 * (tests/gpu/emu/run-head.sh, GPT_EMU), where the kernels run as
 * coroutines (emu.h).
 *
 * Per case (n rows, V columns, micro-batch T, softcap cap), reference
 * z = cap tanh(l / cap), e = exp(z - cap), f = 1 - (z / cap)^2 in double:
 *   part   each 256-column tile's sum of e, within 1e-5 relative;
 *   ztgt   z of the target within 2e-5 (0 for a target >= V);
 *   r      1 / (T S) within 1e-5 relative (so S);
 *   loss   log S + cap - z_target within 2e-5 (NaN for a target >= V);
 *   Q      every element, e f (and (e - S) f at the target) within
 *          2^-8 |ref| + 2e-5 (e + [target] S) + 2^-133 (bf16 rounding:
 *          half a step just above a power of two, and the subnormal
 *          spacing at cap 40; the fp32 errors of e and S (the device's
 *          exp2 and division: z to ~6e-6), and of f = 1 - th^2 near
 *          saturation);
 *   want_q = 0 leaves the logits as they were and gives the same bits of
 *   part, ztgt, loss; head_q_finish without Q leaves r alone; two runs give
 *   the same bits;
 *   scale  dx = bf16(r acc), xs = bf16(r x), bit for bit.
 * Logits: normal of deviation 5, with some far beyond the cap (+-40, +-300,
 * +-1e4: saturated tanh), exact zeros, and one row all zero. Targets
 * random, with one >= V, one 0 and one V - 1 (the partial last tile).
 * Shapes: V = 1000 (a partial last tile), 512, 8 (one partial tile), 2056
 * (9 tiles: a warp takes two) and 8456 (34 tiles: finish's lanes take two).
 * Outputs are poisoned with 0xFF (NaN) before each launch. Seed printed;
 * GPT_SEED=N repeats a run. Check test case: "headq".
 */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include <cuda_runtime.h>

#include "check_common.h"
#include "cuda_check.h"
#include "gpu_rand.h"
#include "head_q.cuh"
#ifndef GPT_EMU
int engine_cuda_available(void); /* kernels/device.cu */
#endif


static void *dalloc(size_t bytes)
{
	void *p = NULL;
	CUDA_CHECK(cudaMalloc(&p, bytes));
	return p;
}
static void h2d(void *d, const void *h, size_t n)
{
	CUDA_CHECK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
}
static void d2h(void *h, const void *d, size_t n)
{
	CUDA_CHECK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}
static void poison(void *d, size_t n) { CUDA_CHECK(cudaMemset(d, 0xff, n)); }
static void sync_dev(void) { CUDA_CHECK(cudaDeviceSynchronize()); }
static int same(const void *a, const void *b, size_t n) { return !memcmp(a, b, n); }

/* One run of the row kernels over the logits L (uploaded afresh; Q over
 * them if want_q) into poisoned part / ztgt / r / loss buffers, and the
 * results back on the host: the logits buffer into Lout, the rest into
 * freshly allocated arrays. */
struct q_bufs {
	uint16_t *dL;
	uint32_t *dtg;
	float *dpart, *dz, *dr, *dloss;
};
struct q_out {
	float *part, *z, *r, *loss;
};
static struct q_out q_run(const struct q_bufs *b, const uint16_t *L, uint16_t *Lout, int n, int V,
                          int T, float cap, int want_q)
{
	const size_t nv = (size_t)n * V, np = (size_t)n * head_q_tiles(V), nn = 4 * (size_t)n;
	h2d(b->dL, L, 2 * nv);
	poison(b->dpart, 4 * np), poison(b->dz, nn), poison(b->dr, nn), poison(b->dloss, nn);
	head_q_rows(b->dL, b->dpart, b->dz, b->dtg, n, V, cap, want_q, 0);
	head_q_finish(want_q ? b->dL : NULL, b->dr, b->dloss, b->dpart, b->dz, b->dtg, n, V, cap, T,
	              0);
	sync_dev();
	struct q_out o = {xmalloc(4 * np), xmalloc(nn), xmalloc(nn), xmalloc(nn)};
	d2h(Lout, b->dL, 2 * nv), d2h(o.part, b->dpart, 4 * np), d2h(o.z, b->dz, nn);
	d2h(o.r, b->dr, nn), d2h(o.loss, b->dloss, nn);
	return o;
}
static void q_out_free(struct q_out *o) { free(o->part), free(o->z), free(o->r), free(o->loss); }

/* One case; returns nothing, asserts. */
static void headq_case(int n, int V, int T, float cap)
{
	const int P = head_q_tiles(V), D = 300;
	const size_t nv = (size_t)n * V, np = (size_t)n * P, nd = (size_t)n * D;
	uint16_t *L = xmalloc(2 * nv), *Q = xmalloc(2 * nv), *L2 = xmalloc(2 * nv);
	uint32_t *tg = xmalloc(4 * (size_t)n);
	for (size_t i = 0; i < nv; i++) {
		double u = urand(), l = 5 * nrand();
		if (u < 0.01)
			l = 0;
		else if (u < 0.02)
			l = u < 0.015 ? 40 : -40;
		else if (u < 0.025)
			l = u < 0.0225 ? 300 : -300;
		else if (u < 0.03)
			l = u < 0.0275 ? 1e4 : -1e4;
		L[i] = f32_to_bf16((float)l);
	}
	if (n > 4)
		memset(L + 4 * (size_t)V, 0, 2 * (size_t)V); /* row 4: all zero */
	for (int t = 0; t < n; t++)
		tg[t] = (uint32_t)(rnd() % (uint64_t)V);
	tg[0] = V - 1;
	if (n > 1)
		tg[1] = 0;
	if (n > 2)
		tg[2] = (uint32_t)V + (uint32_t)(rnd() % 3); /* out of range */

	const struct q_bufs b = {dalloc(2 * nv), dalloc(4 * (size_t)n), dalloc(4 * np),
	                         dalloc(4 * (size_t)n), dalloc(4 * (size_t)n), dalloc(4 * (size_t)n)};
	h2d(b.dtg, tg, 4 * (size_t)n);

	/* with Q */
	struct q_out o = q_run(&b, L, Q, n, V, T, cap, 1);
	const float *part = o.part, *z = o.z, *r = o.r, *loss = o.loss;

	/* the reference, row by row */
	double *ed = xmalloc(sizeof(double) * V), *fd = xmalloc(sizeof(double) * V);
	double *zd = xmalloc(sizeof(double) * V);
	double w_part = 0, w_z = 0, w_r = 0, w_loss = 0, w_q = 0; /* worst error / tolerance */
	for (int t = 0; t < n; t++) {
		const uint16_t *lr = L + (size_t)t * V, *qr = Q + (size_t)t * V;
		const uint32_t y = tg[t];
		double S = 0;
		for (int v = 0; v < V; v++) {
			zd[v] = cap * tanh(bf16_to_f32(lr[v]) / cap);
			ed[v] = exp(zd[v] - cap);
			fd[v] = 1 - (zd[v] / cap) * (zd[v] / cap);
		}
		for (int p = 0; p < P; p++) {
			double ps = 0;
			for (int v = p * 256; v < V && v < p * 256 + 256; v++)
				ps += ed[v];
			S += ps;
			double g = part[(size_t)t * P + p], e = fabs(g - ps) / (1e-5 * ps);
			ck_assert_msg(e <= 1, "n=%d V=%d row %d tile %d: part %.9g vs %.9g", n, V, t, p, g,
			              ps);
			w_part = e > w_part ? e : w_part;
		}
		double rr = 1 / ((double)T * S), er = fabs(r[t] - rr) / (1e-5 * rr);
		ck_assert_msg(er <= 1, "n=%d V=%d row %d: r %.9g vs %.9g", n, V, t, (double)r[t], rr);
		w_r = er > w_r ? er : w_r;
		if (y >= (uint32_t)V) {
			ck_assert_msg(z[t] == 0 && isnan(loss[t]),
			              "n=%d V=%d row %d (target %u >= V): ztgt %g, loss %g (want 0, NaN)",
			              n, V, t, y, (double)z[t], (double)loss[t]);
		} else {
			double ez = fabs(z[t] - zd[y]) / 2e-5;
			double ref = log(S) + cap - zd[y], el = fabs(loss[t] - ref) / 2e-5;
			ck_assert_msg(ez <= 1, "n=%d V=%d row %d: ztgt %.9g vs %.9g", n, V, t, (double)z[t],
			              zd[y]);
			ck_assert_msg(el <= 1, "n=%d V=%d row %d: loss %.9g vs %.9g", n, V, t,
			              (double)loss[t], ref);
			w_z = ez > w_z ? ez : w_z, w_loss = el > w_loss ? el : w_loss;
		}
		for (int v = 0; v < V; v++) {
			const int hot = (uint32_t)v == y;
			double ref = (ed[v] - (hot ? S : 0)) * fd[v], g = bf16_to_f32(qr[v]);
			double tol = ldexp(fabs(ref), -8) + 2e-5 * (ed[v] + (hot ? S : 0)) + ldexp(1, -133);
			double e = fabs(g - ref) / tol;
			ck_assert_msg(e <= 1, "n=%d V=%d row %d col %d%s: Q %.6g vs %.6g (l %g)", n, V, t, v,
			              hot ? " (target)" : "", g, ref, (double)bf16_to_f32(lr[v]));
			w_q = e > w_q ? e : w_q;
		}
	}
	free(ed), free(fd), free(zd);

	/* again: the same bits; then without Q: L untouched, same part/ztgt/loss */
	struct q_out o2 = q_run(&b, L, L2, n, V, T, cap, 1);
	ck_assert_msg(same(L2, Q, 2 * nv) && same(o2.part, part, 4 * np) &&
	                      same(o2.z, z, 4 * (size_t)n) && same(o2.r, r, 4 * (size_t)n) &&
	                      same(o2.loss, loss, 4 * (size_t)n),
	              "n=%d V=%d: a second run gives other bits", n, V);
	q_out_free(&o2);
	o2 = q_run(&b, L, L2, n, V, T, cap, 0);
	ck_assert_msg(same(L2, L, 2 * nv), "n=%d V=%d: want_q = 0 wrote the logits", n, V);
	ck_assert_msg(same(o2.part, part, 4 * np) && same(o2.z, z, 4 * (size_t)n) &&
	                      same(o2.loss, loss, 4 * (size_t)n),
	              "n=%d V=%d: want_q = 0 gives other part / ztgt / loss bits", n, V);
	size_t touched = 0;
	for (int t = 0; t < n; t++) {
		uint32_t bits;
		memcpy(&bits, o2.r + t, 4);
		touched += bits != 0xffffffffu;
	}
	ck_assert_msg(touched == 0, "n=%d V=%d: head_q_finish without Q wrote %zu of r", n, V,
	              touched);

	/* scale: dx = bf16(r acc), xs = bf16(r x), against the host's fp32 */
	float *acc = xmalloc(4 * nd);
	uint16_t *x = xmalloc(2 * nd), *dx = xmalloc(2 * nd), *xs = xmalloc(2 * nd);
	for (size_t i = 0; i < nd; i++) {
		acc[i] = (float)(1e4 * nrand());
		x[i] = f32_to_bf16((float)nrand());
	}
	float *dacc = dalloc(4 * nd);
	uint16_t *dxx = dalloc(2 * nd), *ddx = dalloc(2 * nd), *dxs = dalloc(2 * nd);
	h2d(dacc, acc, 4 * nd), h2d(dxx, x, 2 * nd);
	h2d(b.dr, r, 4 * (size_t)n); /* r of the Q run */
	poison(ddx, 2 * nd), poison(dxs, 2 * nd);
	head_q_scale(ddx, dxs, dacc, dxx, b.dr, n, D, 0);
	sync_dev();
	d2h(dx, ddx, 2 * nd), d2h(xs, dxs, 2 * nd);
	size_t bad = 0;
	for (size_t i = 0; i < nd; i++) {
		const float rt = r[i / (size_t)D];
		bad += dx[i] != f32_to_bf16(rt * acc[i]);
		bad += xs[i] != f32_to_bf16(rt * bf16_to_f32(x[i]));
	}
	ck_assert_msg(bad == 0, "n=%d D=%d: head_q_scale: %zu elements differ from bf16(r v)", n, D,
	              bad);
	printf("headq n=%d V=%d T=%d cap=%g: worst error / tolerance: part %.3f ztgt %.3f r %.3f "
	       "loss %.3f Q %.3f\n",
	       n, V, T, (double)cap, w_part, w_z, w_r, w_loss, w_q);
	fflush(stdout);

	CUDA_CHECK(cudaFree(b.dL)); CUDA_CHECK(cudaFree(b.dtg)); CUDA_CHECK(cudaFree(b.dpart));
	CUDA_CHECK(cudaFree(b.dz)); CUDA_CHECK(cudaFree(b.dr)); CUDA_CHECK(cudaFree(b.dloss));
	CUDA_CHECK(cudaFree(dacc)); CUDA_CHECK(cudaFree(dxx)); CUDA_CHECK(cudaFree(ddx));
	CUDA_CHECK(cudaFree(dxs));
	free(L), free(Q), free(L2), free(tg), free(acc), free(x), free(dx), free(xs);
	q_out_free(&o), q_out_free(&o2);
}

START_TEST(headq)
{
#ifndef GPT_EMU
	ck_assert_msg(engine_cuda_available(), "no CUDA device: the GPU suite needs one");
#endif
	seed_test("headq");
	headq_case(37, 1000, 100, 15.0f);
	headq_case(3, 512, 3, 30.0f);
	headq_case(2, 8, 5, 15.0f);
	headq_case(9, 2056, 9, 40.0f);
	headq_case(2, 8456, 4096, 15.0f);
}
END_TEST

static Suite *head_q_suite(void)
{
	Suite *s = suite_create("head_q");
	TCase *tc = tcase_create("headq");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, headq);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(head_q_suite)
