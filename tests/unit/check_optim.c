/*
 * check_optim.c - Adam and Muon on the CPU, the flat-buffer optimizer, its
 * checkpoint state and the Muon owner assignment (lib/optim.h).
 *
 * Newton-Schulz is checked against an independent orthogonalisation: a
 * one-sided Jacobi SVD in double precision (Hestenes) gives G = U S V^T;
 * NS5(G) must have the same singular vectors (U^T X V diagonal) and, on the
 * diagonal, the scalar quintic iterated five times on s_i / ||G||_F.
 */
#include <math.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check_common.h"
#include "config.h"
#include "optim.h"
#include "parallel.h"

static uint64_t rng = 88172645463325252ull;
static void seed(uint64_t s) { rng = s * 2654435761ull + 88172645463325252ull; }
static double urand(void) /* [-1, 1) */
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static int is_bf16(float x) { return round_bf16(x) == x || isnan(x); }

/* A small valid model: 4 layers (layer 1 without attention), dim 16,
 * mlp_hidden 64 (c_fc 64 x 16: Muon scale 2), vocab `vocab`. */
static void tiny_config(struct gpt_config *c, int vocab)
{
	gpt_config_record(c);
	c->vocab = vocab;
	c->layers = 4;
	c->dim = 16;
	c->heads = 2;
	c->head_dim = 8;
	c->mlp_hidden = 64;
	c->value_embeds = 1;
	c->no_attn = 1u << 1;
	c->rope_freqs = 2;
	c->attn_block = 16;
	c->eot = vocab - 1;
	c->max_seq = 64;
}

/* ------------------------------------------------------------------------
 * Reference SVD: one-sided Jacobi on a tall W (m x n, m >= n), double.
 * On return W's columns are U S; U (m x n), s (n), V (n x n), row-major.
 */
static void jacobi_svd(const double *W0, int m, int n, double *U, double *s, double *V)
{
	double *W = malloc(sizeof(double) * m * n);
	memcpy(W, W0, sizeof(double) * m * n);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			V[i * n + j] = i == j;
	for (int sweep = 0; sweep < 100; sweep++) {
		double off = 0;
		for (int p = 0; p < n - 1; p++)
			for (int q = p + 1; q < n; q++) {
				double al = 0, be = 0, ga = 0;
				for (int i = 0; i < m; i++) {
					al += W[i * n + p] * W[i * n + p];
					be += W[i * n + q] * W[i * n + q];
					ga += W[i * n + p] * W[i * n + q];
				}
				if (al == 0 || be == 0)
					continue;
				double r = fabs(ga) / sqrt(al * be);
				if (r > off)
					off = r;
				if (r < 1e-15)
					continue;
				double zeta = (be - al) / (2 * ga);
				double t = (zeta >= 0 ? 1 : -1) / (fabs(zeta) + sqrt(1 + zeta * zeta));
				double c = 1 / sqrt(1 + t * t), sn = c * t;
				for (int i = 0; i < m; i++) {
					double wp = W[i * n + p], wq = W[i * n + q];
					W[i * n + p] = c * wp - sn * wq;
					W[i * n + q] = sn * wp + c * wq;
				}
				for (int i = 0; i < n; i++) {
					double vp = V[i * n + p], vq = V[i * n + q];
					V[i * n + p] = c * vp - sn * vq;
					V[i * n + q] = sn * vp + c * vq;
				}
			}
		if (off < 1e-14)
			break;
	}
	for (int j = 0; j < n; j++) {
		double nr = 0;
		for (int i = 0; i < m; i++)
			nr += W[i * n + j] * W[i * n + j];
		s[j] = sqrt(nr);
		for (int i = 0; i < m; i++)
			U[i * n + j] = s[j] > 0 ? W[i * n + j] / s[j] : 0;
	}
	free(W);
}

/* The quintic on one singular value, `steps` times. */
static double quintic(double x, int steps)
{
	const double a = MUON_NS_A, b = MUON_NS_B, c = MUON_NS_C;
	for (int k = 0; k < steps; k++)
		x = a * x + b * x * x * x + c * x * x * x * x * x;
	return x;
}

struct ns_stats {
	double sv_min, sv_max;   /* NS singular values (diag of U^T X V) whose
	                            input has s / ||G||_F >= 3e-3 */
	double all_min, all_max; /* over every singular value */
	double off_max;          /* largest |off-diagonal| of U^T X V */
	double pred_err;         /* largest |diag - quintic(s/||G||)| */
	double x_min;            /* smallest normalised input singular value */
};

/* Orthogonalise a random rows x cols matrix with NS5 and compare with the
 * Jacobi SVD of the same matrix. */
static void ns_vs_svd(int rows, int cols, int bf16, uint64_t sd, struct ns_stats *st)
{
	size_t N = (size_t)rows * cols;
	float *G = malloc(sizeof(float) * N), *X = malloc(sizeof(float) * N);
	seed(sd);
	for (size_t i = 0; i < N; i++)
		G[i] = (float)urand();
	newton_schulz5(X, G, rows, cols, 5, bf16);
	/* tall orientation: Wt (m x n, m >= n) of G and Xt of X */
	int tr = rows < cols, m = tr ? cols : rows, n = tr ? rows : cols;
	double *Wg = malloc(sizeof(double) * N), *Wx = malloc(sizeof(double) * N);
	double fro = 0;
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++) {
			size_t k = tr ? (size_t)j * rows + i : (size_t)i * cols + j;
			double gv = bf16 ? round_bf16(G[(size_t)i * cols + j]) : G[(size_t)i * cols + j];
			Wg[k] = gv;
			Wx[k] = X[(size_t)i * cols + j];
			fro += gv * gv;
		}
	fro = sqrt(fro);
	double *U = malloc(sizeof(double) * m * n), *s = malloc(sizeof(double) * n);
	double *V = malloc(sizeof(double) * n * n);
	jacobi_svd(Wg, m, n, U, s, V);
	/* the reference itself: G == U S V^T */
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double r = 0;
			for (int k = 0; k < n; k++)
				r += U[i * n + k] * s[k] * V[j * n + k];
			ck_assert_msg(fabs(r - Wg[i * n + j]) < 1e-10, "Jacobi SVD does not reconstruct G");
		}
	/* D = U^T Xt V */
	st->sv_min = st->all_min = 1e9, st->sv_max = st->all_max = 0;
	st->off_max = 0, st->pred_err = 0, st->x_min = 1e9;
	double *XV = calloc((size_t)m * n, sizeof(double));
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++)
			for (int k = 0; k < n; k++)
				XV[i * n + j] += Wx[i * n + k] * V[k * n + j];
	for (int a = 0; a < n; a++)
		for (int b = 0; b < n; b++) {
			double d = 0;
			for (int i = 0; i < m; i++)
				d += U[i * n + a] * XV[i * n + b];
			if (a != b) {
				if (fabs(d) > st->off_max)
					st->off_max = fabs(d);
				continue;
			}
			double x = s[a] / (fro + 1e-7), want = quintic(x, 5);
			if (x >= 3e-3 && d < st->sv_min) st->sv_min = d;
			if (x >= 3e-3 && d > st->sv_max) st->sv_max = d;
			st->all_min = fmin(st->all_min, d), st->all_max = fmax(st->all_max, d);
			if (x < st->x_min) st->x_min = x;
			if (fabs(d - want) > st->pred_err)
				st->pred_err = fabs(d - want);
		}
	free(G), free(X), free(Wg), free(Wx), free(U), free(s), free(V), free(XV);
}

static const int ns_shapes[][2] = {{8, 8}, {16, 48}, {48, 16}, {64, 64}, {1, 5}, {7, 1}};
#define NS_SHAPES ((int)(sizeof ns_shapes / sizeof *ns_shapes))

/* Six shapes x three seeds of uniform [-1, 1) entries. Singular values
 * whose input s / ||G||_F is below 3e-3 (random square matrices have a few,
 * down to 1.4e-3 here) fall under the band, as the scalar quintic says
 * (quintic^5(1.4e-3) = 0.63); they are checked against the prediction only.
 * Measured (GPT_NS_REPORT=1 build/tests/check_optim prints them):
 *   fp32: band [0.6819, 1.1981] (all: [0.6327, 1.1981]), U^T X V
 *         off-diagonal <= 1.4e-6, |diag - quintic^5(s/||G||)| <= 1.7e-6;
 *   bf16: band [0.6690, 1.1957] (all: [0.6109, 1.1957]), off-diagonal
 *         <= 0.025, |diag - prediction| <= 0.048.
 * Asserted (the quintic maps [3e-3, 1] onto [0.6818, 1.2024]):
 *   fp32: band [0.68, 1.21], off-diagonal < 1e-5, prediction within 2e-5;
 *   bf16: band [0.62, 1.26], off-diagonal < 0.05, prediction within 0.08. */
START_TEST(ns_matches_svd)
{
	int bf16 = _i;
	double lo = bf16 ? 0.62 : 0.68, hi = bf16 ? 1.26 : 1.21;
	double off_tol = bf16 ? 0.05 : 1e-5, pred_tol = bf16 ? 0.08 : 2e-5;
	double mn = 1e9, mx = 0, off = 0, pe = 0, amn = 1e9, amx = 0, xmin = 1;
	for (int sh = 0; sh < NS_SHAPES; sh++)
		for (uint64_t sd = 1; sd <= 3; sd++) {
			struct ns_stats st;
			int r = ns_shapes[sh][0], c = ns_shapes[sh][1];
			ns_vs_svd(r, c, bf16, sd * 100 + (uint64_t)sh, &st);
			ck_assert_msg(st.sv_min >= lo && st.sv_max <= hi,
			              "%dx%d %s: singular values [%g, %g] outside [%g, %g]", r, c,
			              bf16 ? "bf16" : "fp32", st.sv_min, st.sv_max, lo, hi);
			ck_assert_msg(st.off_max < off_tol, "%dx%d %s: U^T X V off-diagonal %g", r, c,
			              bf16 ? "bf16" : "fp32", st.off_max);
			ck_assert_msg(st.pred_err < pred_tol, "%dx%d %s: diag vs quintic %g", r, c,
			              bf16 ? "bf16" : "fp32", st.pred_err);
			mn = fmin(mn, st.sv_min), mx = fmax(mx, st.sv_max);
			off = fmax(off, st.off_max), pe = fmax(pe, st.pred_err);
			amn = fmin(amn, st.all_min), amx = fmax(amx, st.all_max);
			xmin = fmin(xmin, st.x_min);
		}
	if (getenv("GPT_NS_REPORT"))
		fprintf(stderr, "NS5 %s: singular values [%.4f, %.4f] (s/|G| >= 3e-3), "
		                "[%.4f, %.4f] (all, smallest s/|G| %.2g), off-diagonal %.2g, "
		                "prediction error %.2g\n",
		        bf16 ? "bf16" : "fp32", mn, mx, amn, amx, xmin, off, pe);
}
END_TEST

/* Singular values spread over 4 decades: the quintic's band holds down to
 * s/||G|| = 3e-3 and the smallest ones stay small but follow the scalar map. */
START_TEST(ns_spread_follows_quintic)
{
	/* G = Q1 diag(s) Q2^T with Q1, Q2 orthogonal from the Jacobi SVD of
	 * random matrices, s log-spaced from 1 down to 1e-4. */
	enum { n = 24 };
	double R[n * n], Q1[n * n], Q2[n * n], tmp[n * n], sv[n], s[n];
	seed(7);
	for (int i = 0; i < n * n; i++) R[i] = urand();
	jacobi_svd(R, n, n, Q1, sv, tmp);
	for (int i = 0; i < n * n; i++) R[i] = urand();
	jacobi_svd(R, n, n, Q2, sv, tmp);
	double fro = 0;
	for (int k = 0; k < n; k++) {
		s[k] = pow(1e-4, (double)k / (n - 1));
		fro += s[k] * s[k];
	}
	fro = sqrt(fro);
	float G[n * n], X[n * n];
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			double g = 0;
			for (int k = 0; k < n; k++)
				g += Q1[i * n + k] * s[k] * Q2[j * n + k];
			G[i * n + j] = (float)g;
		}
	newton_schulz5(X, G, n, n, 5, 0);
	for (int k = 0; k < n; k++) {
		double d = 0; /* q1_k^T X q2_k */
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++)
				d += Q1[i * n + k] * X[i * n + j] * Q2[j * n + k];
		double x = s[k] / fro, want = quintic(x, 5);
		ck_assert_msg(fabs(d - want) < 1e-4 + 1e-3 * want, "s/|G| = %g: NS %g, quintic %g", x, d,
		              want);
		if (x >= 3e-3)
			ck_assert_msg(d > 0.68 && d < 1.21, "s/|G| = %g -> %g outside the band", x, d);
		else if (x < 1e-3) /* quintic^5 is increasing there, quintic^5(1e-3) = 0.4705 */
			ck_assert_msg(d < 0.48, "s/|G| = %g -> %g: tiny values cannot reach the band", x, d);
	}
}
END_TEST

/* NS(G^T) == NS(G)^T bitwise: a tall matrix is worked on in its wide
 * orientation, so both compute exactly the same products. */
START_TEST(ns_transpose_rule)
{
	int bf16 = _i;
	enum { r = 40, c = 12 };
	float G[r * c], Gt[c * r], X[r * c], Xt[c * r];
	seed(11);
	for (int i = 0; i < r * c; i++) G[i] = (float)urand();
	for (int i = 0; i < r; i++)
		for (int j = 0; j < c; j++)
			Gt[j * r + i] = G[i * c + j];
	newton_schulz5(X, G, r, c, 5, bf16);
	newton_schulz5(Xt, Gt, c, r, 5, bf16);
	for (int i = 0; i < r; i++)
		for (int j = 0; j < c; j++)
			ck_assert_msg(X[i * c + j] == Xt[j * r + i], "(%d,%d): %a vs %a", i, j, X[i * c + j],
			              Xt[j * r + i]);
	/* and in place: out == G */
	float Y[r * c];
	memcpy(Y, G, sizeof Y);
	newton_schulz5(Y, Y, r, c, 5, bf16);
	ck_assert_mem_eq(Y, X, sizeof Y);
}
END_TEST

/* NS5 written out from the spec with plain loops, every rounding spelled
 * out: R() is the bf16 rounding of a tensor the record's compiled PyTorch
 * writes (spec 8.3 and optim.h). Products sum k in order in fp32, as
 * lib/matmul.h does, so the library must agree bit for bit. */
static float R(float x, int bf16) { return bf16 ? round_bf16(x) : x; }

static void ns_naive(float *out, const float *G, int rows, int cols, int steps, int bf16)
{
	int tr = rows > cols, m = tr ? cols : rows, n = tr ? rows : cols;
	float *X = malloc(sizeof(float) * m * n), *BX = malloc(sizeof(float) * m * n);
	float *A = malloc(sizeof(float) * m * m), *B = malloc(sizeof(float) * m * m);
	float *cA = malloc(sizeof(float) * m * m), *AA = malloc(sizeof(float) * m * m);
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++)
			X[i * n + j] = R(tr ? G[j * cols + i] : G[i * cols + j], bf16); /* G.bfloat16() */
	double ss = 0;
	for (int i = 0; i < m * n; i++)
		ss += (double)X[i] * X[i];
	float nrm = R((float)sqrt(ss), bf16);                            /* X.norm() */
	for (int i = 0; i < m * n; i++)
		X[i] = R(X[i] / (nrm + 1e-7f), bf16);                      /* X / (norm + eps) */
	for (int s = 0; s < steps; s++) {
		for (int i = 0; i < m; i++)
			for (int j = 0; j < m; j++) {
				float acc = 0;
				for (int k = 0; k < n; k++)
					acc += X[i * n + k] * X[j * n + k];
				A[i * m + j] = R(acc, bf16);                        /* A = X @ X.T */
			}
		for (int i = 0; i < m * m; i++)
			cA[i] = R(2.0315f * A[i], bf16);                        /* c * A */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < m; j++) {
				float acc = 0;
				for (int k = 0; k < m; k++)
					acc += cA[i * m + k] * A[k * m + j];
				AA[i * m + j] = R(acc, bf16);                       /* (c * A) @ A */
			}
		for (int i = 0; i < m * m; i++)
			B[i] = R(-4.7750f * A[i] + AA[i], bf16);                /* B = b * A + ... */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++) {
				float acc = 0;
				for (int k = 0; k < m; k++)
					acc += B[i * m + k] * X[k * n + j];
				BX[i * n + j] = R(acc, bf16);                       /* B @ X */
			}
		for (int i = 0; i < m * n; i++)
			X[i] = R(3.4445f * X[i] + BX[i], bf16);                 /* a * X + B @ X */
	}
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++)
			out[tr ? j * m + i : i * n + j] = X[i * n + j];
	free(X), free(BX), free(A), free(B), free(cA), free(AA);
}

START_TEST(ns_bitwise_vs_naive)
{
	int bf16 = _i;
	const int shapes[][2] = {{8, 8}, {16, 48}, {48, 16}, {33, 7}};
	for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
		int r = shapes[sh][0], c = shapes[sh][1];
		float *G = malloc(sizeof(float) * r * c), *X = malloc(sizeof(float) * r * c);
		float *Y = malloc(sizeof(float) * r * c);
		seed(40 + sh);
		for (int i = 0; i < r * c; i++)
			G[i] = (float)(urand() * 1e-3);
		newton_schulz5(X, G, r, c, 5, bf16);
		ns_naive(Y, G, r, c, 5, bf16);
		for (int i = 0; i < r * c; i++)
			ck_assert_msg(X[i] == Y[i], "%dx%d %s [%d]: %a vs naive %a", r, c,
			              bf16 ? "bf16" : "fp32", i, X[i], Y[i]);
		free(G), free(X), free(Y);
	}
}
END_TEST

START_TEST(ns_zero_and_bf16_outputs)
{
	enum { r = 12, c = 20 };
	float Z[r * c] = {0}, X[r * c];
	for (int bf16 = 0; bf16 < 2; bf16++) {
		memset(X, 0x7f, sizeof X);
		newton_schulz5(X, Z, r, c, 5, bf16);
		for (int i = 0; i < r * c; i++)
			ck_assert_msg(X[i] == 0, "NS(0)[%d] = %g", i, X[i]);
		newton_schulz5(X, Z, c, r, 5, bf16);
		for (int i = 0; i < r * c; i++)
			ck_assert_msg(X[i] == 0, "NS(0^T)[%d] = %g", i, X[i]);
	}
	/* bf16 mode: every output is bf16; it differs from fp32 by bf16 noise;
	 * steps = 0 returns the normalised input */
	float G[r * c], Xf[r * c], Xb[r * c];
	seed(5);
	double fro = 0;
	for (int i = 0; i < r * c; i++) {
		G[i] = (float)urand();
		fro += (double)G[i] * G[i];
	}
	newton_schulz5(Xf, G, r, c, 5, 0);
	newton_schulz5(Xb, G, r, c, 5, 1);
	double dmax = 0, differ = 0;
	for (int i = 0; i < r * c; i++) {
		ck_assert_msg(is_bf16(Xb[i]), "bf16 NS output %a is not bf16", Xb[i]);
		dmax = fmax(dmax, fabs(Xf[i] - Xb[i]));
		differ += Xf[i] != Xb[i];
	}
	ck_assert_msg(dmax < 0.03 && differ > 0, "bf16 vs fp32: max diff %g, %g differ", dmax, differ);
	newton_schulz5(Xf, G, r, c, 0, 0);
	for (int i = 0; i < r * c; i++)
		ck_assert(fabs(Xf[i] - G[i] / sqrt(fro)) < 1e-6);
	/* scale invariance up to the 1e-7 guard (Muon ignores the gradient scale) */
	float G4[r * c];
	for (int i = 0; i < r * c; i++) G4[i] = 8 * G[i];
	newton_schulz5(Xf, G, r, c, 5, 0);
	newton_schulz5(Xb, G4, r, c, 5, 0);
	for (int i = 0; i < r * c; i++)
		ck_assert(fabs(Xf[i] - Xb[i]) < 1e-5);
}
END_TEST

/* ------------------------------------------------------------------------
 * Adam
 */
/* Three scalars (lr 0.04, the scalar group), three steps, worked by hand:
 *
 * a: p0 = 1, g = 0.5, -1, 0
 *   n=1: m = 0.2*0.5 = 0.1;  v = 0.05*0.25 = 0.0125;
 *        mhat = 0.1/0.2 = 0.5;  vhat = 0.0125/0.05 = 0.25;  sqrt = 0.5
 *        p = 1 - 0.04*0.5/(0.5 + 1e-8) = 0.9600000008
 *   n=2: m = 0.08 - 0.2 = -0.12;  v = 0.011875 + 0.05 = 0.061875
 *        mhat = -0.12/0.36 = -1/3;  vhat = 0.061875/0.0975 = 0.6346153846
 *        p = 0.96 + 0.04*(1/3)/0.7966275... = 0.976737225
 *   n=3: m = -0.096;  v = 0.05878125;  mhat = -0.096/0.488 = -0.1967213115
 *        vhat = 0.05878125/0.142625 = 0.412138475;  sqrt = 0.6419801
 *        p = 0.976737225 + 0.04*0.1967213/0.6419801 = 0.9889943839
 * b: p0 = -2, g = 1e-9 every step (eps matters): mhat = 1e-9 = sqrt(vhat),
 *    so each step moves p by 0.04 * 1e-9/(1e-9 + 1e-8) = 0.04/11:
 *    -2.0036363636, -2.0072727273, -2.0109090909
 * c: p0 = 0.25, g = 4 every step: mhat = 4, vhat = 16 exactly, each step
 *    moves p by 0.04*4/(4 + 1e-8): 0.21, 0.17, 0.13 (to 1e-9).
 * Intermediate m, v: a: (0.1, 0.0125), (-0.12, 0.061875), (-0.096, 0.05878125)
 */
START_TEST(adam_hand_worked)
{
	float p[3] = {1.0f, -2.0f, 0.25f}, m[3] = {0}, v[3] = {0};
	const float gs[3][3] = {{0.5f, 1e-9f, 4.0f}, {-1.0f, 1e-9f, 4.0f}, {0.0f, 1e-9f, 4.0f}};
	const double want_p[3][3] = {{0.9600000008, -2.0036363636, 0.21},
	                             {0.976737225, -2.0072727273, 0.17},
	                             {0.9889943839, -2.0109090909, 0.13}};
	const double want_mv[3][2] = {{0.1, 0.0125}, {-0.12, 0.061875}, {-0.096, 0.05878125}};
	for (int n = 1; n <= 3; n++) {
		struct adam_hyper h = {0.04, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, n, 0};
		adam_update(p, gs[n - 1], m, v, 3, &h);
		for (int k = 0; k < 3; k++)
			ck_assert_msg(fabs(p[k] - want_p[n - 1][k]) < 2.5e-7, "step %d scalar %d: %.10g vs %.10g",
			              n, k, p[k], want_p[n - 1][k]);
		ck_assert(fabs(m[0] - want_mv[n - 1][0]) < 1e-8);
		ck_assert(fabs(v[0] - want_mv[n - 1][1]) < 1e-7 * want_mv[n - 1][1]);
	}
}
END_TEST

/* n = 1 with a zero gradient: 0/(0 + eps) = 0, nothing moves; the step is
 * still counted, so the next (nonzero) step uses n = 2's bias correction. */
START_TEST(adam_zero_gradient_first_step)
{
	struct gpt_config c;
	tiny_config(&c, 32);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&c, &t, 0, &e);
	ck_assert_msg(o, "%s", e.msg);
	float *w = malloc(sizeof(float) * t.total), *w0 = malloc(sizeof(float) * t.total);
	float *g = calloc(t.total, sizeof(float));
	seed(3);
	for (size_t i = 0; i < t.total; i++) w[i] = w0[i] = (float)urand();
	const double lr[GPT_NGROUPS] = {0.6, 0.008, 0.04, 0.05};
	optim_step(o, w, g, lr, 0.85);
	ck_assert_int_eq(optim_steps(o), 1);
	ck_assert_mem_eq(w, w0, sizeof(float) * t.total);
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer b = optim_buffer(o, s);
		for (size_t i = 0; i < b.numel; i++)
			ck_assert_msg(b.data[i] == 0, "%s[%zu] = %g", b.name, i, b.data[i]);
	}
	/* n = 2: m = 0.2 g, v = 0.05 g^2, bc1 = 0.36, bc2 = 0.0975:
	 * p -= lr * (0.2/0.36) / sqrt(0.05/0.0975) * sign(g) = 0.7758 lr (not lr) */
	int sk = gpt_table_find(&t, "skip_weights");
	for (size_t i = 0; i < t.total; i++) g[i] = 0.5f;
	optim_step(o, w, g, lr, 0.85);
	double want = 0.04 * (0.1 / 0.36) / (sqrt(0.0125 / 0.0975) + 1e-8); /* 0.0310316 */
	for (size_t i = 0; i < t.p[sk].numel; i++) {
		size_t k = t.p[sk].offset + i;
		ck_assert_msg(fabs((w0[k] - w[k]) - want) < 1e-7, "moved %g, want %g", w0[k] - w[k], want);
	}
	free(w), free(w0), free(g);
	optim_free(o);
	gpt_table_free(&t);
}
END_TEST

/* PyTorch's fused Adam (fused_adam_utils.cuh, adam_math and
 * FusedAdamMathFunctor) transcribed: hyper-parameters are double, opmath
 * is float, the bias corrections are computed in double and passed as
 * float. C's promotions are C++'s, so this is the kernel's arithmetic. */
static void adam_pytorch(float *param_, float grad, float *exp_avg_, float *exp_avg_sq_,
                         double lr, double beta1, double beta2, double eps, float step_count)
{
	float param = *param_, exp_avg = *exp_avg_, exp_avg_sq = *exp_avg_sq_;
	const double bc1_d = 1 - pow(beta1, step_count);
	const double bc2_d = 1 - pow(beta2, step_count);
	const double bc2_sqrt_d = sqrt(bc2_d);
	const float bias_correction1 = (float)bc1_d, bias_correction2_sqrt = (float)bc2_sqrt_d;
	exp_avg = beta1 * exp_avg + (1 - beta1) * grad;
	exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad;
	const float step_size = lr / bias_correction1;
	float denom = (sqrtf(exp_avg_sq) / bias_correction2_sqrt) + eps;
	param -= step_size * exp_avg / denom;
	*param_ = param, *exp_avg_ = exp_avg, *exp_avg_sq_ = exp_avg_sq;
}

START_TEST(adam_bitwise_vs_pytorch_transcription)
{
	enum { N = 20000 };
	float *p = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N);
	float *m = calloc(N, sizeof(float)), *v = calloc(N, sizeof(float));
	float *p2 = malloc(sizeof(float) * N), *m2 = calloc(N, sizeof(float));
	float *v2 = calloc(N, sizeof(float));
	seed(12);
	for (int i = 0; i < N; i++)
		p[i] = p2[i] = (float)urand();
	const double lrs[4] = {0.6, 0.008, 0.04, 0.6 * (1390 - 1000) / 556.0};
	for (int n = 1; n <= 6; n++) {
		for (int i = 0; i < N; i++)
			g[i] = (float)(urand() * pow(10, 8 * urand() - 6)); /* sqrt(v) down to ~eps */
		struct adam_hyper h = {lrs[n % 4], ADAM_BETA1, ADAM_BETA2, ADAM_EPS, n, 0};
		adam_update(p, g, m, v, N, &h);
		for (int i = 0; i < N; i++) {
			adam_pytorch(&p2[i], g[i], &m2[i], &v2[i], h.lr, 0.8, 0.95, 1e-8, (float)n);
			ck_assert_msg(p[i] == p2[i] && m[i] == m2[i] && v[i] == v2[i],
			              "step %d [%d]: p %a/%a m %a/%a v %a/%a", n, i, p[i], p2[i], m[i], m2[i],
			              v[i], v2[i]);
		}
	}
	free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2);
}
END_TEST

/* Random values: the fused order agrees with the plain double formula to a
 * few fp32 ulps; bf16 mode = fp32 mode on rounded inputs, rounded. */
START_TEST(adam_random_against_double)
{
	enum { N = 40000 }; /* > 2 parallel chunks */
	float *p = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N);
	float *m = malloc(sizeof(float) * N), *v = malloc(sizeof(float) * N);
	float *p2 = malloc(sizeof(float) * N), *m2 = malloc(sizeof(float) * N);
	float *v2 = malloc(sizeof(float) * N);
	seed(9);
	for (int i = 0; i < N; i++) {
		p[i] = (float)urand();
		g[i] = (float)(urand() * pow(10, 3 * urand()));
		m[i] = (float)(0.1 * urand());
		v[i] = (float)(0.01 * fabs(urand()));
	}
	memcpy(p2, p, sizeof(float) * N), memcpy(m2, m, sizeof(float) * N);
	memcpy(v2, v, sizeof(float) * N);
	struct adam_hyper h = {0.6, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, 7, 0};
	adam_update(p, g, m, v, N, &h);
	for (int i = 0; i < N; i++) {
		double mm = 0.8 * m2[i] + 0.2 * (double)g[i];
		double vv = 0.95 * v2[i] + 0.05 * (double)g[i] * g[i];
		double pp = p2[i] - 0.6 * (mm / (1 - pow(0.8, 7))) / (sqrt(vv / (1 - pow(0.95, 7))) + 1e-8);
		ck_assert_msg(fabs(m[i] - mm) <= 1e-7 * fabs(mm) && fabs(v[i] - vv) <= 1e-7 * vv,
		              "moments %d", i);
		/* one rounding of p, a few of the update */
		double upd = fabs(pp - p2[i]);
		ck_assert_msg(fabs(p[i] - pp) <= 6e-8 * fabs(pp) + 8 * 6e-8 * upd,
		              "p[%d]: %.9g vs %.9g (update %g)", i, p[i], pp, upd);
	}
	/* bf16 */
	float *pb = malloc(sizeof(float) * N), *mb = malloc(sizeof(float) * N);
	float *vb = malloc(sizeof(float) * N), *gb = malloc(sizeof(float) * N);
	for (int i = 0; i < N; i++) {
		pb[i] = p2[i], mb[i] = m2[i], vb[i] = v2[i];
		p2[i] = round_bf16(p2[i]), m2[i] = round_bf16(m2[i]), v2[i] = round_bf16(v2[i]);
		gb[i] = round_bf16(g[i]);
	}
	h.bf16 = 1;
	adam_update(pb, g, mb, vb, N, &h);
	h.bf16 = 0;
	adam_update(p2, gb, m2, v2, N, &h);
	for (int i = 0; i < N; i++) {
		ck_assert(is_bf16(pb[i]) && is_bf16(mb[i]) && is_bf16(vb[i]));
		ck_assert(pb[i] == round_bf16(p2[i]) && mb[i] == round_bf16(m2[i]) &&
		          vb[i] == round_bf16(v2[i]));
	}
	free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2);
	free(pb), free(mb), free(vb), free(gb);
}
END_TEST

/* Group learning rates go to the right tensors: with g = +1 everywhere the
 * first Adam step moves every element by lr * 1/(1 + 1e-8) of its group. */
START_TEST(group_learning_rates)
{
	struct gpt_config c;
	tiny_config(&c, 32);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&c, &t, 0, &e);
	ck_assert_msg(o, "%s", e.msg);
	float *w = calloc(t.total, sizeof(float)), *g = malloc(sizeof(float) * t.total);
	for (size_t i = 0; i < t.total; i++) g[i] = 1.0f;
	const double lr[GPT_NGROUPS] = {0.5, 0.125, 0.0625, 0}; /* exact in fp32 */
	optim_step(o, w, g, lr, 0.85);
	int seen[GPT_NGROUPS] = {0};
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		seen[p->group]++;
		float want = (float)-lr[p->group];
		for (size_t k = 0; k < p->numel; k++)
			ck_assert_msg(fabs(w[p->offset + k] - want) <= 1e-7, "%s[%zu] = %g, want %g", p->name,
			              k, w[p->offset + k], want);
	}
	ck_assert(seen[GPT_GROUP_EMBED] == 2 && seen[GPT_GROUP_HEAD] == 1);
	ck_assert(seen[GPT_GROUP_SCALAR] == 1 + 4 + 3 && seen[GPT_GROUP_MUON] == 3 * 4 + 4 * 2);
	/* now only Muon: Adam tensors stay, Muon tensors move */
	optim_reset(o);
	memset(w, 0, sizeof(float) * t.total);
	const double lr2[GPT_NGROUPS] = {0, 0, 0, 0.05};
	seed(4);
	for (size_t i = 0; i < t.total; i++) g[i] = (float)urand();
	optim_step(o, w, g, lr2, 0.85);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		double moved = 0;
		for (size_t k = 0; k < p->numel; k++)
			moved += fabs(w[p->offset + k]);
		if (p->group == GPT_GROUP_MUON)
			ck_assert_msg(moved > 0, "%s did not move", p->name);
		else
			ck_assert_msg(moved == 0, "%s moved with lr 0", p->name);
	}
	free(w), free(g);
	optim_free(o);
	gpt_table_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------
 * Muon
 */
/* Momentum and Nesterov on a 2 x 3 matrix against the direct formulas
 * buf = mu buf + (1-mu) g, g' = (1-mu) g + mu buf, over three steps with a
 * changing mu (0.85, 0.9, 0.95); then p moves by -lr * NS5(g'). */
START_TEST(muon_momentum_direct)
{
	enum { R = 2, C = 3, N = R * C };
	const double mus[3] = {0.85, 0.9, 0.95};
	float buf[N] = {0}, gp[N], p[N], p0[N], u[N];
	double bufd[N] = {0};
	seed(21);
	for (int i = 0; i < N; i++) p[i] = (float)urand();
	for (int s = 0; s < 3; s++) {
		float g[N];
		for (int i = 0; i < N; i++) g[i] = (float)urand();
		/* first step by hand: buf = 0.15 g; g' = 0.15 g + 0.85 * 0.15 g = 0.2775 g */
		float bufc[N];
		memcpy(bufc, buf, sizeof buf);
		muon_momentum(bufc, gp, g, N, mus[s]);
		for (int i = 0; i < N; i++) {
			bufd[i] = mus[s] * bufd[i] + (1 - mus[s]) * g[i];
			double gd = (1 - mus[s]) * g[i] + mus[s] * bufd[i];
			if (s == 0)
				ck_assert(fabs(gd - 0.2775 * g[i]) < 1e-12);
			ck_assert_msg(fabs(bufc[i] - bufd[i]) < 1e-6 && fabs(gp[i] - gd) < 1e-6,
			              "step %d elem %d: buf %g/%g g' %g/%g", s, i, bufc[i], bufd[i], gp[i], gd);
		}
		memcpy(p0, p, sizeof p);
		muon_update(p, g, buf, R, C, 0.05, mus[s], 0);
		ck_assert_mem_eq(buf, bufc, sizeof buf);
		newton_schulz5(u, gp, R, C, 5, 0);
		for (int i = 0; i < N; i++)
			ck_assert_msg(p[i] == p0[i] + (float)-0.05 * u[i], "apply %d", i);
	}
	/* bitwise against torch.lerp_'s two forms (ATen/native/Lerp.h):
	 * buf.lerp_(g, 1 - mu) takes w < 0.5, g.lerp_(buf, mu) takes w >= 0.5 */
	enum { M = 1000 };
	float *bb = malloc(sizeof(float) * M), *bb2 = malloc(sizeof(float) * M);
	float *gg = malloc(sizeof(float) * M), *oo = malloc(sizeof(float) * M);
	for (int i = 0; i < M; i++) {
		bb[i] = bb2[i] = (float)urand();
		gg[i] = (float)urand();
	}
	muon_momentum(bb, oo, gg, M, 0.93);
	for (int i = 0; i < M; i++) {
		float w1 = (float)(1 - 0.93), w2 = (float)0.93;
		float b = bb2[i] + w1 * (gg[i] - bb2[i]);
		float o = b - (b - gg[i]) * (1.0f - w2);
		ck_assert_msg(bb[i] == b && oo[i] == o, "lerp form [%d]", i);
	}
	free(bb), free(bb2), free(gg), free(oo);
	/* in place: out == g */
	float b2[N] = {0}, g2[N] = {1, 2, 3, 4, 5, 6};
	muon_momentum(b2, g2, g2, N, 0.5);
	for (int i = 0; i < N; i++) /* buf = 0.5 g; g' = g + 0.5 (buf - g) = 0.75 g */
		ck_assert(b2[i] == 0.5f * (i + 1) && g2[i] == 0.75f * (i + 1));
}
END_TEST

START_TEST(muon_scale_rule)
{
	ck_assert(muon_scale(3072, 768) == 2.0);
	ck_assert(muon_scale(768, 3072) == 1.0);
	ck_assert(muon_scale(768, 768) == 1.0);
	ck_assert(fabs(muon_scale(3, 1) - sqrt(3)) < 1e-15);
	/* in the record's table: c_fc 2.0, everything else 1.0 */
	struct gpt_config c;
	gpt_config_record(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	int fc = 0;
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		if (p->group != GPT_GROUP_MUON)
			continue;
		double s = muon_scale((int)p->shape[0], (int)p->shape[1]);
		ck_assert_msg(s == (p->kind == GPT_P_FC ? 2.0 : 1.0), "%s: %g", p->name, s);
		fc += p->kind == GPT_P_FC;
	}
	ck_assert_int_eq(fc, 12);
	gpt_table_free(&t);
	/* applied: a tall 8 x 2 matrix moves twice as far as its NS output */
	float p[16] = {0}, g[16], buf[16] = {0}, u[16], gp[16], b2[16] = {0};
	seed(8);
	for (int i = 0; i < 16; i++) g[i] = (float)urand();
	muon_update(p, g, buf, 8, 2, 0.25, 0.9, 0);
	muon_momentum(b2, gp, g, 16, 0.9);
	newton_schulz5(u, gp, 8, 2, 5, 0);
	for (int i = 0; i < 16; i++)
		ck_assert_msg(p[i] == -0.5f * u[i], "%d: %g vs %g", i, p[i], -0.5f * u[i]);
	/* the flat optimizer: c_fc (64 x 16) moves 2 x NS, c_proj (16 x 64) 1 x */
	struct gpt_config tc;
	tiny_config(&tc, 32);
	gpt_table_build(&tc, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&tc, &t, 0, &e);
	ck_assert_msg(o, "%s", e.msg);
	float *w = calloc(t.total, sizeof(float)), *gg = malloc(sizeof(float) * t.total);
	for (size_t i = 0; i < t.total; i++) gg[i] = (float)urand();
	const double lr[GPT_NGROUPS] = {0, 0, 0, 0.05};
	optim_step(o, w, gg, lr, 0.85);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *q = &t.p[i];
		if (q->group != GPT_GROUP_MUON)
			continue;
		int r = (int)q->shape[0], cc = (int)q->shape[1];
		float *x = malloc(sizeof(float) * q->numel);
		newton_schulz5(x, gg + q->offset, r, cc, 5, 0); /* NS(g') ~ NS(g): g' = (1-mu^2) g */
		double sc = q->kind == GPT_P_FC ? 2.0 : 1.0;
		for (size_t k = 0; k < q->numel; k++)
			ck_assert_msg(fabs(w[q->offset + k] + 0.05 * sc * x[k]) < 1e-6, "%s[%zu]", q->name, k);
		free(x);
	}
	free(w), free(gg);
	optim_free(o);
	gpt_table_free(&t);
}
END_TEST

START_TEST(muon_zero_gradient)
{
	for (int bf16 = 0; bf16 < 2; bf16++) {
		float p[24], p0[24], g[24] = {0}, buf[24] = {0};
		seed(2);
		for (int i = 0; i < 24; i++) p[i] = p0[i] = (float)urand();
		muon_update(p, g, buf, 4, 6, 0.05, 0.85, bf16);
		ck_assert_mem_eq(p, p0, sizeof p);
		muon_update(p, g, buf, 6, 4, 0.05, 0.95, bf16);
		ck_assert_mem_eq(p, p0, sizeof p);
		for (int i = 0; i < 24; i++)
			ck_assert(buf[i] == 0);
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * Flat optimizer: creation errors, state layout, save/restore
 */
START_TEST(create_errors)
{
	struct gpt_config c, c2;
	tiny_config(&c, 32);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	ck_assert(!optim_create(&c, &t, 4, &e));
	ck_assert_msg(strstr(e.msg, "unknown flags"), "%s", e.msg);
	c2 = c;
	c2.layers = 3;
	ck_assert(!optim_create(&c2, &t, 0, &e));
	ck_assert_msg(strstr(e.msg, "layers"), "%s", e.msg);
	c2 = c;
	c2.mlp_hidden = 32; /* table built for 64 */
	ck_assert(!optim_create(&c2, &t, 0, &e));
	ck_assert_msg(strstr(e.msg, "does not match"), "%s", e.msg);
	struct gpt_table bad = t;
	bad.p = malloc(sizeof *bad.p * t.n);
	memcpy(bad.p, t.p, sizeof *bad.p * t.n);
	int q = gpt_table_find(&t, "blocks.0.attn.c_q.weight");
	bad.p[q].group = GPT_GROUP_SCALAR;
	ck_assert(!optim_create(&c, &bad, 0, &e));
	ck_assert_msg(strstr(e.msg, "blocks.0.attn.c_q.weight"), "%s", e.msg);
	bad.n = 0;
	ck_assert(!optim_create(&c, &bad, 0, &e));
	ck_assert_msg(strstr(e.msg, "empty"), "%s", e.msg);
	free(bad.p);
	struct optim *o = optim_create(&c, &t, OPTIM_RECORD_PRECISION, &e);
	ck_assert_msg(o, "%s", e.msg);
	ck_assert_int_eq(optim_flags(o), OPTIM_RECORD_PRECISION);
	ck_assert(optim_set_steps(o, -1, &e) == -1 && strstr(e.msg, "step count"));
	ck_assert(optim_set_steps(o, (1 << 24) + 1, &e) == -1);
	ck_assert(optim_set_steps(o, 1390, &e) == 0 && optim_steps(o) == 1390);
	optim_free(o);
	optim_free(NULL);
	gpt_table_free(&t);
}
END_TEST

START_TEST(state_layout)
{
	struct gpt_config c;
	tiny_config(&c, 32);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&c, &t, 0, &e);
	ck_assert_msg(o, "%s", e.msg);
	struct optim_buffer m = optim_buffer(o, OPTIM_ADAM_M), v = optim_buffer(o, OPTIM_ADAM_V);
	struct optim_buffer mb = optim_buffer(o, OPTIM_MUON_MOMENTUM);
	ck_assert_str_eq(m.name, "optim.adam_m");
	ck_assert_str_eq(v.name, "optim.adam_v");
	ck_assert_str_eq(mb.name, "optim.muon_momentum");
	ck_assert(optim_buffer(o, OPTIM_NSTATE).data == NULL);
	size_t adam = 0, muon = 0;
	for (int i = 0; i < t.n; i++) {
		int isM = t.p[i].group == GPT_GROUP_MUON;
		float *pm = optim_param_state(o, i, OPTIM_ADAM_M), *pv = optim_param_state(o, i, OPTIM_ADAM_V);
		float *pb = optim_param_state(o, i, OPTIM_MUON_MOMENTUM);
		if (isM) {
			ck_assert(!pm && !pv && pb == mb.data + muon);
			muon += t.p[i].numel;
		} else {
			ck_assert(!pb && pm == m.data + adam && pv == v.data + adam);
			adam += t.p[i].numel;
		}
	}
	ck_assert(adam == m.numel && adam == v.numel && muon == mb.numel);
	ck_assert(adam + muon == t.total);
	ck_assert(!optim_param_state(o, -1, OPTIM_ADAM_M) && !optim_param_state(o, t.n, OPTIM_ADAM_M));
	optim_free(o);
	gpt_table_free(&t);
}
END_TEST

static void rand_grad(float *g, size_t n, uint64_t s)
{
	seed(s);
	for (size_t i = 0; i < n; i++)
		g[i] = (float)(urand() * 0.01);
}

static void run_steps(struct optim *o, float *w, float *g, size_t n, int from, int to)
{
	for (int s = from; s < to; s++) {
		rand_grad(g, n, 1000 + (uint64_t)s);
		double f = s < 3 ? 1.0 : (10.0 - s) / 7.0;
		const double lr[GPT_NGROUPS] = {0.6 * f, 0.008 * f, 0.04 * f, 0.05 * f};
		double frac = s / 4.0 > 1 ? 1 : s / 4.0;
		optim_step(o, w, g, lr, 0.85 * (1 - frac) + 0.95 * frac);
	}
}

/* Save after 3 steps, continue 2; a fresh optimizer restored from the saved
 * buffers and step count continues bit-identically (both precisions). */
START_TEST(save_restore_bit_exact)
{
	int flags = _i ? OPTIM_RECORD_PRECISION : 0;
	struct gpt_config c;
	tiny_config(&c, 32);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&c, &t, flags, &e);
	ck_assert_msg(o, "%s", e.msg);
	size_t n = t.total;
	float *w = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
	seed(77);
	for (size_t i = 0; i < n; i++) w[i] = (float)(0.1 * urand());
	run_steps(o, w, g, n, 0, 3);
	/* save */
	float *ws = malloc(sizeof(float) * n), *st[OPTIM_NSTATE];
	memcpy(ws, w, sizeof(float) * n);
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer b = optim_buffer(o, s);
		st[s] = malloc(sizeof(float) * (b.numel ? b.numel : 1));
		memcpy(st[s], b.data, sizeof(float) * b.numel);
		if (flags) /* bf16 tensors keep bf16 state */
			for (int i = 0; i < t.n; i++) {
				float *ps = optim_param_state(o, i, s);
				if (ps && t.p[i].dtype == GPT_BF16)
					for (size_t k = 0; k < t.p[i].numel; k++)
						ck_assert(is_bf16(ps[k]));
			}
	}
	int64_t steps = optim_steps(o);
	ck_assert_int_eq(steps, 3);
	run_steps(o, w, g, n, 3, 5);
	/* restore into a fresh optimizer */
	struct optim *o2 = optim_create(&c, &t, flags, &e);
	ck_assert_msg(o2, "%s", e.msg);
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer b = optim_buffer(o2, s);
		memcpy(b.data, st[s], sizeof(float) * b.numel);
	}
	ck_assert_int_eq(optim_set_steps(o2, steps, &e), 0);
	float *w2 = malloc(sizeof(float) * n);
	memcpy(w2, ws, sizeof(float) * n);
	run_steps(o2, w2, g, n, 3, 5);
	ck_assert_mem_eq(w2, w, sizeof(float) * n);
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer a = optim_buffer(o, s), b = optim_buffer(o2, s);
		ck_assert_mem_eq(a.data, b.data, sizeof(float) * a.numel);
	}
	/* without the state (or without the step count) it differs */
	optim_reset(o2);
	memcpy(w2, ws, sizeof(float) * n);
	run_steps(o2, w2, g, n, 3, 5);
	ck_assert(memcmp(w2, w, sizeof(float) * n) != 0);
	for (int s = 0; s < OPTIM_NSTATE; s++) {
		struct optim_buffer b = optim_buffer(o2, s);
		memcpy(b.data, st[s], sizeof(float) * b.numel);
	}
	ck_assert_int_eq(optim_set_steps(o2, 0, &e), 0);
	memcpy(w2, ws, sizeof(float) * n);
	run_steps(o2, w2, g, n, 3, 5);
	ck_assert(memcmp(w2, w, sizeof(float) * n) != 0);
	for (int s = 0; s < OPTIM_NSTATE; s++)
		free(st[s]);
	free(w), free(g), free(ws), free(w2);
	optim_free(o);
	optim_free(o2);
	gpt_table_free(&t);
}
END_TEST

/* The same steps with 1 and 3 threads give identical bits. Runs the work
 * in child processes that set their own thread count (the pool cannot be
 * resized once started). */
static void run_threads(int threads, float *out, size_t n)
{
	parallel_set_threads(threads);
	struct gpt_config c;
	tiny_config(&c, 4096); /* embeddings of 65,536 numbers: 4 chunks */
	c.dim = 32, c.head_dim = 16, c.mlp_hidden = 128;
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct gpt_err e;
	struct optim *o = optim_create(&c, &t, OPTIM_RECORD_PRECISION, &e);
	if (!o || t.total != n)
		_exit(3);
	float *g = malloc(sizeof(float) * n);
	seed(5);
	for (size_t i = 0; i < n; i++) out[i] = (float)(0.1 * urand());
	run_steps(o, out, g, n, 0, 2);
	optim_free(o);
	gpt_table_free(&t);
	free(g);
}

START_TEST(thread_count_independent)
{
	if (getenv("CK_FORK") && !strcmp(getenv("CK_FORK"), "no")) {
		fprintf(stderr, "thread_count_independent: skipped (CK_FORK=no)\n");
		return;
	}
	struct gpt_config c;
	tiny_config(&c, 4096);
	c.dim = 32, c.head_dim = 16, c.mlp_hidden = 128;
	struct gpt_table t;
	gpt_table_build(&c, &t);
	size_t n = t.total;
	gpt_table_free(&t);
	float *res = mmap(NULL, 2 * n * sizeof(float), PROT_READ | PROT_WRITE,
	                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(res != MAP_FAILED);
	const int threads[2] = {1, 3};
	for (int k = 0; k < 2; k++) {
		pid_t pid = fork();
		ck_assert(pid >= 0);
		if (pid == 0) {
			run_threads(threads[k], res + k * n, n);
			_exit(0);
		}
		int status;
		ck_assert(waitpid(pid, &status, 0) == pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
	}
	ck_assert_mem_eq(res, res + n, n * sizeof(float));
	munmap(res, 2 * n * sizeof(float));
}
END_TEST

/* ------------------------------------------------------------------------
 * Muon owner assignment
 */
START_TEST(owner_assignment)
{
	struct gpt_config c;
	gpt_config_record(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	const int worlds[] = {1, 2, 3, 8};
	for (size_t wi = 0; wi < sizeof worlds / sizeof *worlds; wi++) {
		int P = worlds[wi];
		int *owner = malloc(sizeof(int) * t.n);
		for (int i = 0; i < t.n; i++) owner[i] = -1;
		for (int r = 0; r < P; r++) {
			struct muon_plan pl;
			struct gpt_err e;
			ck_assert_int_eq(muon_plan_build(&t, P, r, &pl, &e), 0);
			ck_assert_int_eq(pl.ngroups, 2);
			ck_assert(pl.groups[0].numel == 589824 && pl.groups[0].n == 44);
			ck_assert(pl.groups[1].numel == 2359296 && pl.groups[1].n == 24);
			/* model order inside groups */
			for (int gi = 0; gi < 2; gi++)
				for (int j = 1; j < pl.groups[gi].n; j++)
					ck_assert(pl.groups[gi].params[j] > pl.groups[gi].params[j - 1]);
			ck_assert_str_eq(t.p[pl.groups[0].params[0]].name, "blocks.0.attn.c_q.weight");
			ck_assert_str_eq(t.p[pl.groups[0].params[43]].name, "blocks.11.attn.c_proj.weight");
			ck_assert_str_eq(t.p[pl.groups[1].params[1]].name, "blocks.0.mlp.c_proj.weight");
			/* rounds: ceil(44/P) then ceil(24/P); counts */
			int ra = (44 + P - 1) / P, rm = (24 + P - 1) / P;
			ck_assert_int_eq(pl.nrounds, ra + rm);
			int applied[2] = {0, 0}, own[2] = {0, 0}, k = 0;
			for (int q = 0; q < pl.nrounds; q++) {
				const struct muon_round *rd = &pl.rounds[q];
				ck_assert_int_eq(rd->group, q < ra ? 0 : 1);
				ck_assert_int_eq(rd->base, (q < ra ? q : q - ra) * P);
				applied[rd->group] += rd->count;
				int gn = pl.groups[rd->group].n;
				ck_assert_int_eq(rd->count, gn - rd->base < P ? gn - rd->base : P);
				if (rd->owned >= 0) {
					ck_assert_int_eq(rd->owned, pl.groups[rd->group].params[rd->base + r]);
					ck_assert_int_eq(pl.owned[k++], rd->owned);
					ck_assert_msg(owner[rd->owned] == -1, "%s owned twice", t.p[rd->owned].name);
					owner[rd->owned] = r;
					own[rd->group]++;
					ck_assert_int_eq(muon_plan_owner(&pl, rd->owned), r);
				} else {
					ck_assert(rd->base + r >= gn);
				}
			}
			ck_assert_int_eq(k, pl.nowned);
			ck_assert(applied[0] == 44 && applied[1] == 24);
			/* per rank: 44 = q P + rem, ranks below rem own one more */
			ck_assert_int_eq(own[0], 44 / P + (r < 44 % P));
			ck_assert_int_eq(own[1], 24 / P + (r < 24 % P));
			if (P == 8) {
				ck_assert_int_eq(own[0], r < 4 ? 6 : 5);
				ck_assert_int_eq(own[1], 3);
				ck_assert_int_eq(pl.rounds[ra - 1].count, 4); /* 44 = 5x8 + 4 */
				ck_assert_int_eq(pl.rounds[ra + rm - 1].count, 8); /* 24 = 3x8 */
				ck_assert(ra == 6 && rm == 3);
			}
			ck_assert_int_eq(muon_plan_owner(&pl, gpt_table_find(&t, "embed.weight")), -1);
			muon_plan_free(&pl);
		}
		for (int i = 0; i < t.n; i++)
			ck_assert_msg((owner[i] >= 0) == (t.p[i].group == GPT_GROUP_MUON),
			              "P=%d: %s owner %d", P, t.p[i].name, owner[i]);
		free(owner);
	}
	gpt_table_free(&t);
}
END_TEST

START_TEST(owner_assignment_errors_and_shapes)
{
	struct gpt_config c;
	gpt_config_record(&c);
	struct gpt_table t;
	gpt_table_build(&c, &t);
	struct muon_plan pl;
	struct gpt_err e;
	ck_assert_int_eq(muon_plan_build(&t, 0, 0, &pl, &e), -1);
	ck_assert_msg(strstr(e.msg, "world size 0"), "%s", e.msg);
	ck_assert_int_eq(muon_plan_build(&t, 8, 8, &pl, &e), -1);
	ck_assert_msg(strstr(e.msg, "rank 8"), "%s", e.msg);
	ck_assert_int_eq(muon_plan_build(&t, 2, -1, &pl, &e), -1);
	/* more ranks than matrices: the high ranks own nothing */
	ck_assert_int_eq(muon_plan_build(&t, 64, 50, &pl, &e), 0);
	ck_assert(pl.nrounds == 2 && pl.nowned == 0);
	ck_assert(pl.rounds[0].count == 44 && pl.rounds[1].count == 24);
	muon_plan_free(&pl);
	gpt_table_free(&t);
	/* mlp_hidden == dim: attention and MLP matrices share one numel group */
	struct gpt_config tc;
	tiny_config(&tc, 32);
	tc.mlp_hidden = tc.dim;
	gpt_table_build(&tc, &t);
	ck_assert_int_eq(muon_plan_build(&t, 3, 1, &pl, &e), 0);
	ck_assert_int_eq(pl.ngroups, 1);
	ck_assert_int_eq(pl.groups[0].n, 3 * 4 + 4 * 2);
	ck_assert_int_eq(pl.nrounds, 7);
	ck_assert_int_eq(pl.nowned, 7);
	ck_assert_int_eq(pl.rounds[6].count, 20 - 18);
	muon_plan_free(&pl);
	gpt_table_free(&t);
}
END_TEST

static Suite *optim_suite(void)
{
	Suite *s = suite_create("optim");
	TCase *ns = tcase_create("newton_schulz");
	tcase_add_loop_test(ns, ns_matches_svd, 0, 2);
	tcase_add_test(ns, ns_spread_follows_quintic);
	tcase_add_loop_test(ns, ns_transpose_rule, 0, 2);
	tcase_add_loop_test(ns, ns_bitwise_vs_naive, 0, 2);
	tcase_add_test(ns, ns_zero_and_bf16_outputs);
	tcase_set_timeout(ns, 30);
	suite_add_tcase(s, ns);
	TCase *ad = tcase_create("adam");
	tcase_add_test(ad, adam_hand_worked);
	tcase_add_test(ad, adam_zero_gradient_first_step);
	tcase_add_test(ad, adam_bitwise_vs_pytorch_transcription);
	tcase_add_test(ad, adam_random_against_double);
	tcase_add_test(ad, group_learning_rates);
	suite_add_tcase(s, ad);
	TCase *mu = tcase_create("muon");
	tcase_add_test(mu, muon_momentum_direct);
	tcase_add_test(mu, muon_scale_rule);
	tcase_add_test(mu, muon_zero_gradient);
	suite_add_tcase(s, mu);
	TCase *st = tcase_create("state");
	tcase_add_test(st, create_errors);
	tcase_add_test(st, state_layout);
	tcase_add_loop_test(st, save_restore_bit_exact, 0, 2);
	tcase_add_test(st, thread_count_independent);
	tcase_set_timeout(st, 30);
	suite_add_tcase(s, st);
	TCase *ow = tcase_create("owners");
	tcase_add_test(ow, owner_assignment);
	tcase_add_test(ow, owner_assignment_errors_and_shapes);
	suite_add_tcase(s, ow);
	return s;
}

CHECK_MAIN(optim_suite)
