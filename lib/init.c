/*
 * init.c - counter-based generator and the record's initialisation. See init.h.
 *
 * Reproducibility: every floating-point operation here is a plain IEEE
 * double +, -, *, / or sqrt, evaluated in double (FLT_EVAL_METHOD 0) and
 * never contracted into a fused multiply-add (the pragma below; the project
 * also builds with -std=c11, where GCC's default is -ffp-contract=off).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "init.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "init.c needs FLT_EVAL_METHOD == 0 (SSE2 or similar, not x87) for reproducible values"
#endif

/* ------------------------------------------------------------------------
 * Philox4x32-10 and FNV-1a
 *
 * The round is written once (philox_round) and used both one block at a
 * time and over batches of BATCH counters in structure-of-arrays form,
 * which the compiler turns into vector code; both give the same words.
 */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define BATCH 64

static inline void philox_round(uint32_t *c0, uint32_t *c1, uint32_t *c2, uint32_t *c3, uint32_t k0,
                                uint32_t k1)
{
	uint64_t p0 = (uint64_t)PHILOX_M0 * *c0, p1 = (uint64_t)PHILOX_M1 * *c2;
	uint32_t n0 = (uint32_t)(p1 >> 32) ^ *c1 ^ k0;
	uint32_t n2 = (uint32_t)(p0 >> 32) ^ *c3 ^ k1;
	*c1 = (uint32_t)p1;
	*c3 = (uint32_t)p0;
	*c0 = n0;
	*c2 = n2;
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
	uint32_t k0 = key[0], k1 = key[1];
	for (int r = 0; r < 10; r++) {
		if (r) {
			k0 += PHILOX_W0;
			k1 += PHILOX_W1;
		}
		philox_round(&c0, &c1, &c2, &c3, k0, k1);
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* x[w][k] = word w of R(j0 + k), for k < BATCH. */
static void philox_batch(uint64_t seed, uint64_t h, uint64_t j0, uint32_t x[4][BATCH])
{
	uint32_t *c0 = x[0], *c1 = x[1], *c2 = x[2], *c3 = x[3];
	for (int k = 0; k < BATCH; k++) {
		uint64_t j = j0 + (uint64_t)k;
		c0[k] = (uint32_t)j;
		c1[k] = (uint32_t)(j >> 32);
		c2[k] = (uint32_t)h;
		c3[k] = (uint32_t)(h >> 32);
	}
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
	for (int r = 0; r < 10; r++) {
		if (r) {
			k0 += PHILOX_W0;
			k1 += PHILOX_W1;
		}
		for (int k = 0; k < BATCH; k++)
			philox_round(&c0[k], &c1[k], &c2[k], &c3[k], k0, k1);
	}
}

uint64_t init_fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* ------------------------------------------------------------------------
 * ln, sin, cos in plain double arithmetic (branch-free, so that batches
 * vectorise; the scalar entry points call the same code)
 */
#define SQRT2 1.4142135623730951
#define LN2_HI 6.93147180369123816490e-01 /* 0x3fe62e42fee00000: e * LN2_HI is exact */
#define LN2_LO 1.90821492927058770002e-10 /* 0x3dea39ef35793c76 */
#define HALF_PI 1.5707963267948966

static inline double ln_core(double x)
{
	uint64_t b;
	memcpy(&b, &x, 8);
	int64_t e = (int64_t)((b >> 52) & 0x7ff) - 1023;
	b = (b & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
	double m;
	memcpy(&m, &b, 8); /* x = m * 2^e, m in [1, 2) */
	int big = m > SQRT2;
	m = big ? m * 0.5 : m; /* now in (0.707, 1.414] */
	e += big;
	/* ln m = 2 atanh(s) = 2 (s + s^3/3 + ... + s^23/23), |s| <= 0.1716 */
	double s = (m - 1.0) / (m + 1.0), z = s * s;
	double p = 1.0 / 23.0;
	p = p * z + 1.0 / 21.0;
	p = p * z + 1.0 / 19.0;
	p = p * z + 1.0 / 17.0;
	p = p * z + 1.0 / 15.0;
	p = p * z + 1.0 / 13.0;
	p = p * z + 1.0 / 11.0;
	p = p * z + 1.0 / 9.0;
	p = p * z + 1.0 / 7.0;
	p = p * z + 1.0 / 5.0;
	p = p * z + 1.0 / 3.0;
	p = p * z + 1.0;
	double de = (double)e;
	return de * LN2_HI + (de * LN2_LO + 2.0 * s * p);
}

double init_ln(double x) { return ln_core(x); }

/* sin and cos of a in [0, pi/4] by their Taylor series (terms to a^17, a^16). */
static inline void sincos_small(double a, double *s, double *c)
{
	double z = a * a;
	double ps = -1.0 / 355687428096000.0; /* -1/17! */
	ps = ps * z + 1.0 / 1307674368000.0;  /* 1/15! */
	ps = ps * z - 1.0 / 6227020800.0;     /* 1/13! */
	ps = ps * z + 1.0 / 39916800.0;       /* 1/11! */
	ps = ps * z - 1.0 / 362880.0;
	ps = ps * z + 1.0 / 5040.0;
	ps = ps * z - 1.0 / 120.0;
	ps = ps * z + 1.0 / 6.0;
	*s = a - a * z * ps; /* a - a^3/3! + a^5/5! - ... */
	double pc = 1.0 / 20922789888000.0;  /* 1/16! */
	pc = pc * z - 1.0 / 87178291200.0;   /* 1/14! */
	pc = pc * z + 1.0 / 479001600.0;     /* 1/12! */
	pc = pc * z - 1.0 / 3628800.0;
	pc = pc * z + 1.0 / 40320.0;
	pc = pc * z - 1.0 / 720.0;
	pc = pc * z + 1.0 / 24.0;
	pc = pc * z - 1.0 / 2.0;
	*c = 1.0 + z * pc;
}

static inline void sincos_core(double t, double *s, double *c)
{
	double q4 = t * 4.0;           /* exact */
	int64_t q = (int64_t)q4;       /* quadrant 0..3 */
	double f = q4 - (double)q;     /* exact, in [0, 1): phi = f * pi/2 */
	int hi = f > 0.5;              /* then phi = pi/2 - a */
	double sa, ca;
	sincos_small((hi ? 1.0 - f : f) * HALF_PI, &sa, &ca);
	double sp = hi ? ca : sa, cp = hi ? sa : ca; /* sin phi, cos phi */
	/* 2 pi t = q pi/2 + phi */
	double s1 = q & 1 ? cp : sp, c1 = q & 1 ? sp : cp;
	*s = q & 2 ? -s1 : s1;
	*c = (q + 1) & 2 ? -c1 : c1;
}

void init_sincos2pi(double t, double *s, double *c) { sincos_core(t, s, c); }

/* ------------------------------------------------------------------------
 * Distributions
 */
#define TWO_M53 (1.0 / 9007199254740992.0) /* 2^-53 */
#define TWO_M31 (1.0 / 2147483648.0)

/* Box-Muller from one Philox block: z0 (element 2j), z1 (element 2j+1).
 * normal_batch() below does the same operations in stages. */
static inline void box_muller(uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3, float *z0,
                              float *z1)
{
	/* (x0 << 21 | x1 >> 11) + 1, as an exact double sum */
	double k1 = (double)x0 * 2097152.0 + (double)(x1 >> 11) + 1.0;
	double k2 = (double)x2 * 2097152.0 + (double)(x3 >> 11);
	double u1 = k1 * TWO_M53, t = k2 * TWO_M53;
	double r = sqrt(-2.0 * ln_core(u1));
	double s, c;
	sincos_core(t, &s, &c);
	*z0 = (float)(r * c);
	*z1 = (float)(r * s);
}

static void block(uint64_t seed, uint64_t h, uint64_t j, uint32_t x[4])
{
	uint32_t ctr[4] = {(uint32_t)j, (uint32_t)(j >> 32), (uint32_t)h, (uint32_t)(h >> 32)};
	uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
	philox4x32_10(ctr, key, x);
}

float init_normal(uint64_t seed, uint64_t h, uint64_t i)
{
	uint32_t x[4];
	float z[2];
	block(seed, h, i >> 1, x);
	box_muller(x[0], x[1], x[2], x[3], &z[0], &z[1]);
	return z[i & 1];
}

static inline float uniform_word(uint32_t w, double bound)
{
	return (float)((((double)w + 0.5) * TWO_M31 - 1.0) * bound);
}

float init_uniform(uint64_t seed, uint64_t h, uint64_t i, double bound)
{
	uint32_t x[4];
	block(seed, h, i >> 2, x);
	return uniform_word(x[i & 3], bound);
}

/* Elements 2*j0 .. 2*(j0+BATCH)-1 of a normal stream: box_muller() in
 * stages over the batch (simple loops that vectorise). */
static void normal_batch(uint64_t seed, uint64_t h, uint64_t j0, float z[2 * BATCH])
{
	uint32_t x[4][BATCH];
	philox_batch(seed, h, j0, x);
	double u1[BATCH], t[BATCH], r[BATCH], s[BATCH], c[BATCH];
	for (int k = 0; k < BATCH; k++) {
		u1[k] = ((double)x[0][k] * 2097152.0 + (double)(x[1][k] >> 11) + 1.0) * TWO_M53;
		t[k] = ((double)x[2][k] * 2097152.0 + (double)(x[3][k] >> 11)) * TWO_M53;
	}
	for (int k = 0; k < BATCH; k++)
		r[k] = -2.0 * ln_core(u1[k]);
	for (int k = 0; k < BATCH; k++)
		r[k] = sqrt(r[k]);
	for (int k = 0; k < BATCH; k++)
		sincos_core(t[k], &s[k], &c[k]);
	for (int k = 0; k < BATCH; k++) {
		z[2 * k] = (float)(r[k] * c[k]);
		z[2 * k + 1] = (float)(r[k] * s[k]);
	}
}

/* Elements 4*j0 .. 4*(j0+BATCH)-1 of a uniform stream. */
static void uniform_batch(uint64_t seed, uint64_t h, uint64_t j0, double bound,
                          float u[4 * BATCH])
{
	uint32_t x[4][BATCH];
	philox_batch(seed, h, j0, x);
	for (int k = 0; k < BATCH; k++)
		for (int w = 0; w < 4; w++)
			u[4 * k + w] = uniform_word(x[w][k], bound);
}

/* ------------------------------------------------------------------------
 * Parameters
 */
enum init_kind init_kind_of(const struct gpt_param *p, double *bound)
{
	if (bound)
		*bound = 0;
	switch (p->kind) {
	case GPT_P_EMBED:
	case GPT_P_VALUE_EMBED: return INIT_NORMAL;
	case GPT_P_Q:
	case GPT_P_K:
	case GPT_P_V:
	case GPT_P_FC:
		if (bound)
			*bound = 1.0 / sqrt((double)p->shape[1]);
		return INIT_UNIFORM;
	case GPT_P_ATTN_PROJ:
	case GPT_P_MLP_PROJ:
	case GPT_P_HEAD: return INIT_ZEROS;
	case GPT_P_LAMBDAS: return INIT_ONE_ZERO;
	case GPT_P_ATTN_LAMBDAS: return INIT_HALF;
	case GPT_P_SKIP: return INIT_ONES;
	}
	return INIT_ZEROS;
}

const char *init_describe(const struct gpt_param *p, char *buf, size_t cap)
{
	double b;
	switch (init_kind_of(p, &b)) {
	case INIT_NORMAL: snprintf(buf, cap, "N(0,1)"); break;
	case INIT_UNIFORM: snprintf(buf, cap, "U(+-%.6g)", b); break;
	case INIT_ZEROS: snprintf(buf, cap, "zeros"); break;
	case INIT_ONES: snprintf(buf, cap, "ones"); break;
	case INIT_ONE_ZERO: snprintf(buf, cap, "[1,0]"); break;
	case INIT_HALF: snprintf(buf, cap, "0.5"); break;
	}
	return buf;
}

void init_param_range(const struct gpt_param *p, uint64_t seed, float *dst, size_t begin,
                      size_t end)
{
	double bound;
	enum init_kind k = init_kind_of(p, &bound);
	uint64_t h = init_fnv1a64(p->name);
	switch (k) {
	case INIT_NORMAL:
	case INIT_UNIFORM: {
		/* whole batches of the stream, keeping the part inside [begin, end) */
		size_t per = k == INIT_NORMAL ? 2 * BATCH : 4 * BATCH;
		float v[4 * BATCH];
		for (size_t b0 = begin - begin % per; b0 < end; b0 += per) {
			if (k == INIT_NORMAL)
				normal_batch(seed, h, b0 / 2, v);
			else
				uniform_batch(seed, h, b0 / 4, bound, v);
			size_t lo = b0 > begin ? b0 : begin, hi = b0 + per < end ? b0 + per : end;
			memcpy(dst + lo, v + (lo - b0), (hi - lo) * sizeof *dst);
		}
		break;
	}
	case INIT_ZEROS:
		memset(dst + begin, 0, (end - begin) * sizeof *dst);
		break;
	case INIT_ONES:
		for (size_t i = begin; i < end; i++)
			dst[i] = 1.0f;
		break;
	case INIT_ONE_ZERO:
		for (size_t i = begin; i < end; i++)
			dst[i] = i == 0 ? 1.0f : 0.0f;
		break;
	case INIT_HALF:
		for (size_t i = begin; i < end; i++)
			dst[i] = 0.5f;
		break;
	}
	if (p->dtype == GPT_BF16)
		for (size_t i = begin; i < end; i++)
			dst[i] = round_bf16(dst[i]);
}

/* Work items of at most CHUNK elements, filled on the thread pool. */
#define CHUNK ((size_t)1 << 16)
struct item {
	int p;
	size_t begin, end;
};
struct fill {
	const struct gpt_table *t;
	uint64_t seed;
	float *w;
	const struct item *items;
};

static void fill_items(void *ctx, size_t b, size_t e, int tid)
{
	const struct fill *f = ctx;
	for (size_t k = b; k < e; k++) {
		const struct item *it = &f->items[k];
		const struct gpt_param *p = &f->t->p[it->p];
		init_param_range(p, f->seed, f->w + p->offset, it->begin, it->end);
	}
}

void init_weights(const struct gpt_table *t, uint64_t seed, float *w)
{
	size_t n = 0;
	for (int i = 0; i < t->n; i++)
		n += (t->p[i].numel + CHUNK - 1) / CHUNK;
	struct item *items = xmalloc((n ? n : 1) * sizeof *items);
	n = 0;
	for (int i = 0; i < t->n; i++)
		for (size_t b = 0; b < t->p[i].numel; b += CHUNK)
			items[n++] = (struct item){i, b,
			                           b + CHUNK < t->p[i].numel ? b + CHUNK : t->p[i].numel};
	struct fill f = {t, seed, w, items};
	parallel_for(n, fill_items, &f);
	free(items);
}
