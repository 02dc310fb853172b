/*
 * model_impl.h - body of the CPU model, written once over a real type.
 *
 * Included twice by model.c (and nowhere else), with:
 *   REAL            float or double
 *   MODEL           struct tag of the model (cpu_model, cpu_model64)
 *   API(x)          public names (cpu_model_x, cpu_model64_x)
 *   S(x)            file-local names (f32_x, f64_x)
 *   MM_NN/NT/TN     matrix products with lib/matmul.h's signature over REAL
 *   R_SQRT, R_EXP, R_LOG, R_TANH   math functions of REAL
 *
 * Sections: activations and layout; small row helpers (norm, rope, dot);
 * attention core; forward stages; head (softcap + cross entropy in row
 * chunks); backward stages; the public step.
 *
 * Work is spread over tokens with parallel_for: a "stage" is a function of
 * one token (S(each) runs it for t = 0..T-1). Stages write only their own
 * token's rows, so no two threads touch the same memory. Gradients of
 * matrices come from MM_TN with beta = 1 (deterministic); embedding rows
 * are scattered by column ranges; scalar gradients are summed per token
 * into part[] and then over tokens in order.
 */

#define HEAD_ROWS 128 /* logits rows per head chunk */
#define NPART 5       /* per-token partial sums: dl0, dl1, da0, da1, dskip */

struct S(wp) { /* REAL pointers into a flat buffer laid out by gpt_table */
	REAL *skip, *embed, *head, *ve[8];
	struct {
		REAL *lambdas, *attn_lambdas, *q, *k, *v, *o, *fc, *proj;
	} l[GPT_MAX_LAYERS];
};

struct S(act) { /* what one layer keeps for its backward */
	REAL *res_in;       /* [T,D] input after the U-net skip add, before the lambda mix */
	REAL *rmid;         /* [T,D] residual entering the MLP (after attention) */
	REAL *rstd1, *rstd2;/* [T] norm scales of the attention and MLP inputs */
	REAL *q, *k;        /* [T,D] after QK-norm, before rotary */
	REAL *qs, *ks;      /* [T,H] QK-norm scales */
	REAL *vraw, *v;     /* [T,D] h Wv^T, and after the value mix */
	REAL *y;            /* [T,D] attention output, heads side by side */
	REAL *lse;          /* [T,H] log-sum-exp of each query's scores */
	REAL *u;            /* [T,F] MLP pre-activation */
};

struct MODEL {
	struct gpt_config c;
	struct gpt_table tab;
	int max_T;
	REAL *arena;                 /* every REAL buffer below */
	size_t arena_n;
	REAL *cos_t, *sin_t;         /* [max_T, rope_freqs] */
	struct S(act) act[GPT_MAX_LAYERS];
	REAL *skip[GPT_MAX_LAYERS / 2]; /* [T,D] encoder outputs; in the backward the
	                                   gradient flowing back through that skip */
	REAL *x0, *rstd0;            /* [T,D], [T] */
	REAL *hf, *rstdf;            /* [T,D], [T] final norm */
	REAL *x, *h, *tmp, *big;     /* residual stream, norm output, [T,D], [T,F] */
	REAL *qr, *kr;               /* [T,D] q, k after rotary */
	REAL *dx, *dx0, *dh, *dy;    /* [T,D] */
	REAL *dq, *dk, *dv;          /* [T,D] */
	REAL *du;                    /* [T,F] */
	REAL *delta;                 /* [T,H] */
	REAL *headT;                 /* [D,V] lm_head transposed */
	REAL *logits;                /* [HEAD_ROWS, V] */
	REAL *scratch;               /* [nscratch, max_T] per-thread attention scores */
	int nscratch;
	double *loss_t;              /* [max_T] */
	double *part;                /* [max_T, NPART] */
	int32_t *docs, *kfirst, *qlast; /* [max_T] */
	/* the current step */
	int T, W, grad;
	const uint32_t *in, *tg;
	struct S(wp) w, g;
};

static void S(bind)(const struct gpt_table *t, REAL *base, struct S(wp) *o)
{
	memset(o, 0, sizeof *o);
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		REAL *x = base + p->offset;
		int l = p->layer;
		switch (p->kind) {
		case GPT_P_SKIP: o->skip = x; break;
		case GPT_P_EMBED: o->embed = x; break;
		case GPT_P_HEAD: o->head = x; break;
		case GPT_P_VALUE_EMBED: o->ve[l] = x; break;
		case GPT_P_LAMBDAS: o->l[l].lambdas = x; break;
		case GPT_P_ATTN_LAMBDAS: o->l[l].attn_lambdas = x; break;
		case GPT_P_Q: o->l[l].q = x; break;
		case GPT_P_K: o->l[l].k = x; break;
		case GPT_P_V: o->l[l].v = x; break;
		case GPT_P_ATTN_PROJ: o->l[l].o = x; break;
		case GPT_P_FC: o->l[l].fc = x; break;
		case GPT_P_MLP_PROJ: o->l[l].proj = x; break;
		}
	}
}

/* Assign the arena's buffers (base == NULL: only count). Returns the count. */
static size_t S(layout)(struct MODEL *m, REAL *base)
{
	const struct gpt_config *c = &m->c;
	size_t T = (size_t)m->max_T, D = (size_t)c->dim, H = (size_t)c->heads;
	size_t F = (size_t)c->mlp_hidden, V = (size_t)c->vocab, n = 0;
#define TAKE(p, count)                                                         \
	do {                                                                   \
		(p) = base ? base + n : NULL;                                  \
		n += ((size_t)(count) + 15) & ~(size_t)15; /* keeps 64-byte alignment */ \
	} while (0)
	TAKE(m->cos_t, T * (size_t)c->rope_freqs);
	TAKE(m->sin_t, T * (size_t)c->rope_freqs);
	for (int l = 0; l < c->layers; l++) {
		struct S(act) *a = &m->act[l];
		memset(a, 0, sizeof *a);
		TAKE(a->res_in, T * D);
		TAKE(a->rmid, T * D);
		TAKE(a->rstd2, T);
		TAKE(a->u, T * F);
		if (gpt_layer_attn(c, l)) {
			TAKE(a->rstd1, T);
			TAKE(a->q, T * D);
			TAKE(a->k, T * D);
			TAKE(a->qs, T * H);
			TAKE(a->ks, T * H);
			TAKE(a->vraw, T * D);
			TAKE(a->v, T * D);
			TAKE(a->y, T * D);
			TAKE(a->lse, T * H);
		}
	}
	for (int l = 0; l < c->layers / 2; l++)
		TAKE(m->skip[l], T * D);
	TAKE(m->x0, T * D);
	TAKE(m->rstd0, T);
	TAKE(m->hf, T * D);
	TAKE(m->rstdf, T);
	TAKE(m->x, T * D);
	TAKE(m->h, T * D);
	TAKE(m->tmp, T * D);
	TAKE(m->big, T * F);
	TAKE(m->qr, T * D);
	TAKE(m->kr, T * D);
	TAKE(m->dx, T * D);
	TAKE(m->dx0, T * D);
	TAKE(m->dh, T * D);
	TAKE(m->dy, T * D);
	TAKE(m->dq, T * D);
	TAKE(m->dk, T * D);
	TAKE(m->dv, T * D);
	TAKE(m->du, T * F);
	TAKE(m->delta, T * H);
	TAKE(m->headT, D * V);
	TAKE(m->logits, (size_t)HEAD_ROWS * V);
#undef TAKE
	return n;
}

/* ------------------------------------------------------------------------
 * Row helpers
 */

/* Dot product with 8 interleaved partial sums (fixed order, vectorisable). */
static REAL S(dot)(const REAL *a, const REAL *b, int n)
{
	REAL s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			s[j] += a[i + j] * b[i + j];
	for (; i < n; i++)
		s[0] += a[i] * b[i];
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* y = x / sqrt(mean(x^2) + eps) (y may be x); returns the scale. */
static REAL S(norm_row)(REAL *y, const REAL *x, int n, REAL eps)
{
	REAL r = (REAL)1 / R_SQRT(S(dot)(x, x, n) / (REAL)n + eps);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * r;
	return r;
}

/* Backward of norm_row given its output y and scale r:
 * dx (+)= r * (dy - y * mean(dy * y)). acc: add into dx instead of setting. */
static void S(norm_bwd_row)(REAL *dx, const REAL *dy, const REAL *y, REAL r, int n, int acc)
{
	REAL m = S(dot)(dy, y, n) / (REAL)n;
	for (int i = 0; i < n; i++) {
		REAL g = r * (dy[i] - y[i] * m);
		dx[i] = acc ? dx[i] + g : g;
	}
}

/* Half-truncated rotary on one head (spec 4.6), pairs (j, j + hd/2) for the
 * nf nonzero frequencies: y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos.
 * transpose: apply the transposed rotation (the backward). */
static void S(rope)(REAL *x, const REAL *cs, const REAL *sn, int hd, int nf, int transpose)
{
	int half = hd / 2;
	for (int j = 0; j < nf; j++) {
		REAL x1 = x[j], x2 = x[j + half], c = cs[j], s = sn[j];
		if (!transpose) {
			x[j] = x1 * c + x2 * s;
			x[j + half] = -x1 * s + x2 * c;
		} else {
			x[j] = x1 * c - x2 * s;
			x[j + half] = x1 * s + x2 * c;
		}
	}
}

/* Stage runner: fn(m, arg, i, tid) for i in [0, n). */
typedef void (*S(stage_fn))(struct MODEL *m, int arg, int i, int tid);
struct S(stage_job) {
	struct MODEL *m;
	int arg;
	S(stage_fn) fn;
};
static void S(stage_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(stage_job) *j = ctx;
	for (size_t i = b; i < e; i++)
		j->fn(j->m, j->arg, (int)i, tid);
}
static void S(each)(struct MODEL *m, int n, int arg, S(stage_fn) fn)
{
	struct S(stage_job) j = {m, arg, fn};
	parallel_for((size_t)n, S(stage_cb), &j);
}

/* table[idx[t]] += scale * src[t] for t in order, rows of n; split over
 * column ranges so that every element sums in the same order. */
struct S(scatter_job) {
	REAL *table;
	const REAL *src;
	REAL scale;
	const uint32_t *idx;
	int T, n;
};
static void S(scatter_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(scatter_job) *j = ctx;
	for (int t = 0; t < j->T; t++) {
		REAL *dst = j->table + (size_t)j->idx[t] * j->n;
		const REAL *s = j->src + (size_t)t * j->n;
		for (size_t d = b; d < e; d++)
			dst[d] += j->scale * s[d];
	}
}
static void S(scatter)(REAL *table, const REAL *src, REAL scale, const uint32_t *idx, int T, int n)
{
	struct S(scatter_job) j = {table, src, scale, idx, T, n};
	parallel_for((size_t)n, S(scatter_cb), &j);
}

/* Out-of-place transpose: out[c, r] = x[r, c]; parallel over out rows. */
struct S(tr_job) {
	REAL *out;
	const REAL *x;
	int rows, cols;
};
static void S(tr_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(tr_job) *j = ctx;
	for (size_t c = b; c < e; c++)
		for (int r = 0; r < j->rows; r++)
			j->out[c * (size_t)j->rows + (size_t)r] = j->x[(size_t)r * j->cols + c];
}
static void S(transpose)(REAL *out, const REAL *x, int rows, int cols)
{
	struct S(tr_job) j = {out, x, rows, cols};
	parallel_for((size_t)cols, S(tr_cb), &j);
}

/* ------------------------------------------------------------------------
 * Attention core. Query t of head h attends keys kfirst[t]..t; key j is
 * seen by queries j..qlast[j]. Forward: two passes over the keys (scores
 * and max into a per-thread scratch row, then exp and sum). Backward:
 * delta_t = dy_t . y_t, then dq by query and dk, dv by key, each
 * recomputing p = exp(s - lse), so every output row has a single writer.
 */
struct S(attn_job) {
	REAL *y, *lse;                       /* forward outputs */
	REAL *dq, *dk, *dv, *delta;          /* backward outputs */
	const REAL *q, *k, *v, *dy, *yin, *lsein;
	const int32_t *kfirst, *qlast;
	int T, H, hd;
	REAL scale;
	REAL *scratch;                       /* forward: [threads, T] */
	size_t stride;
};

static void S(attn_fwd_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(attn_job) *j = ctx;
	const int H = j->H, hd = j->hd;
	const size_t D = (size_t)H * hd;
	REAL *sc = j->scratch + (size_t)tid * j->stride;
	for (size_t t = b; t < e; t++) {
		int k0 = j->kfirst[t], nk = (int)t - k0 + 1;
		for (int h = 0; h < H; h++) {
			const REAL *qv = j->q + t * D + (size_t)h * hd;
			REAL mx = -INFINITY;
			for (int i = 0; i < nk; i++) {
				const REAL *kv = j->k + (size_t)(k0 + i) * D + (size_t)h * hd;
				sc[i] = S(dot)(qv, kv, hd) * j->scale;
				mx = sc[i] > mx ? sc[i] : mx;
			}
			REAL *yo = j->y + t * D + (size_t)h * hd, sum = 0;
			for (int d = 0; d < hd; d++)
				yo[d] = 0;
			for (int i = 0; i < nk; i++) {
				REAL p = R_EXP(sc[i] - mx);
				const REAL *vv = j->v + (size_t)(k0 + i) * D + (size_t)h * hd;
				sum += p;
				for (int d = 0; d < hd; d++)
					yo[d] += p * vv[d];
			}
			REAL inv = (REAL)1 / sum;
			for (int d = 0; d < hd; d++)
				yo[d] *= inv;
			j->lse[t * (size_t)H + (size_t)h] = mx + R_LOG(sum);
		}
	}
}

static void S(attn_delta_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(attn_job) *j = ctx;
	const size_t D = (size_t)j->H * j->hd;
	for (size_t t = b; t < e; t++)
		for (int h = 0; h < j->H; h++) {
			size_t o = t * D + (size_t)h * j->hd;
			j->delta[t * (size_t)j->H + (size_t)h] = S(dot)(j->dy + o, j->yin + o, j->hd);
		}
}

static void S(attn_dq_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(attn_job) *j = ctx;
	const int H = j->H, hd = j->hd;
	const size_t D = (size_t)H * hd;
	for (size_t t = b; t < e; t++)
		for (int h = 0; h < H; h++) {
			size_t o = t * D + (size_t)h * hd;
			const REAL *qv = j->q + o, *dyv = j->dy + o;
			REAL lse = j->lsein[t * H + h], dl = j->delta[t * H + h], *dqv = j->dq + o;
			for (int d = 0; d < hd; d++)
				dqv[d] = 0;
			for (int kk = j->kfirst[t]; kk <= (int)t; kk++) {
				size_t ko = (size_t)kk * D + (size_t)h * hd;
				REAL p = R_EXP(S(dot)(qv, j->k + ko, hd) * j->scale - lse);
				REAL ds = p * (S(dot)(dyv, j->v + ko, hd) - dl);
				for (int d = 0; d < hd; d++)
					dqv[d] += ds * j->k[ko + d];
			}
			for (int d = 0; d < hd; d++)
				dqv[d] *= j->scale;
		}
}

static void S(attn_dkv_cb)(void *ctx, size_t b, size_t e, int tid)
{
	const struct S(attn_job) *j = ctx;
	const int H = j->H, hd = j->hd;
	const size_t D = (size_t)H * hd;
	for (size_t kk = b; kk < e; kk++)
		for (int h = 0; h < H; h++) {
			size_t ko = kk * D + (size_t)h * hd;
			const REAL *kv = j->k + ko, *vv = j->v + ko;
			REAL *dkv = j->dk + ko, *dvv = j->dv + ko;
			for (int d = 0; d < hd; d++)
				dkv[d] = dvv[d] = 0;
			for (int t = (int)kk; t <= j->qlast[kk]; t++) {
				size_t o = (size_t)t * D + (size_t)h * hd;
				REAL p = R_EXP(S(dot)(j->q + o, kv, hd) * j->scale - j->lsein[t * H + h]);
				REAL ds = p * (S(dot)(j->dy + o, vv, hd) - j->delta[t * H + h]);
				for (int d = 0; d < hd; d++) {
					dvv[d] += p * j->dy[o + d];
					dkv[d] += ds * j->q[o + d];
				}
			}
			for (int d = 0; d < hd; d++)
				dkv[d] *= j->scale;
		}
}

static void S(attn_forward)(REAL *y, REAL *lse, const REAL *q, const REAL *k, const REAL *v, int T,
                            int H, int hd, const int32_t *kfirst, REAL *scratch, size_t stride)
{
	struct S(attn_job) j = {0};
	j.y = y, j.lse = lse, j.q = q, j.k = k, j.v = v, j.kfirst = kfirst;
	j.T = T, j.H = H, j.hd = hd, j.scale = (REAL)1 / R_SQRT((REAL)hd);
	j.scratch = scratch, j.stride = stride;
	parallel_for((size_t)T, S(attn_fwd_cb), &j);
}

static void S(attn_backward)(REAL *dq, REAL *dk, REAL *dv, REAL *delta, const REAL *dy,
                             const REAL *q, const REAL *k, const REAL *v, const REAL *y,
                             const REAL *lse, int T, int H, int hd, const int32_t *kfirst,
                             const int32_t *qlast)
{
	struct S(attn_job) j = {0};
	j.dq = dq, j.dk = dk, j.dv = dv, j.delta = delta, j.dy = dy, j.q = q, j.k = k, j.v = v;
	j.yin = y, j.lsein = lse, j.kfirst = kfirst, j.qlast = qlast;
	j.T = T, j.H = H, j.hd = hd, j.scale = (REAL)1 / R_SQRT((REAL)hd);
	parallel_for((size_t)T, S(attn_delta_cb), &j);
	parallel_for((size_t)T, S(attn_dq_cb), &j);
	parallel_for((size_t)T, S(attn_dkv_cb), &j);
}

/* ------------------------------------------------------------------------
 * Forward stages (one token each)
 */
#define ROW(p, t) ((p) + (size_t)(t) * (size_t)D)

static void S(fw_embed)(struct MODEL *m, int unused, int t, int tid)
{
	const int D = m->c.dim;
	m->rstd0[t] = S(norm_row)(ROW(m->x0, t), m->w.embed + (size_t)m->in[t] * D, D,
	                          (REAL)m->c.norm_eps);
	memcpy(ROW(m->x, t), ROW(m->x0, t), sizeof(REAL) * (size_t)D);
}

/* U-net skip add, lambda mix, norm of the attention (or MLP) input. */
static void S(fw_mix)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim, L = m->c.layers;
	struct S(act) *a = &m->act[l];
	REAL *x = ROW(m->x, t), *ri = ROW(a->res_in, t), *x0 = ROW(m->x0, t);
	if (l >= L / 2) {
		int j = l - L / 2;
		REAL sw = m->w.skip[j], *s = ROW(m->skip[L / 2 - 1 - j], t);
		for (int d = 0; d < D; d++)
			x[d] = x[d] + sw * s[d];
	}
	memcpy(ri, x, sizeof(REAL) * (size_t)D);
	REAL l0 = m->w.l[l].lambdas[0], l1 = m->w.l[l].lambdas[1];
	for (int d = 0; d < D; d++)
		x[d] = l0 * ri[d] + l1 * x0[d];
	if (gpt_layer_attn(&m->c, l)) {
		a->rstd1[t] = S(norm_row)(ROW(m->h, t), x, D, (REAL)m->c.norm_eps);
	} else {
		memcpy(ROW(a->rmid, t), x, sizeof(REAL) * (size_t)D);
		a->rstd2[t] = S(norm_row)(ROW(m->h, t), x, D, (REAL)m->c.norm_eps);
	}
}

/* Value mix; QK-norm per head (kept in a->q, a->k); rotary into qr, kr. */
static void S(fw_qkv)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim, H = m->c.heads, hd = m->c.head_dim, nf = m->c.rope_freqs;
	const REAL eps = (REAL)m->c.norm_eps;
	struct S(act) *a = &m->act[l];
	int tbl = gpt_layer_ve(&m->c, l);
	REAL a0 = m->w.l[l].attn_lambdas[0], a1 = m->w.l[l].attn_lambdas[1];
	REAL *vr = ROW(a->vraw, t), *v = ROW(a->v, t);
	if (tbl >= 0) {
		const REAL *ve = m->w.ve[tbl] + (size_t)m->in[t] * D;
		for (int d = 0; d < D; d++)
			v[d] = a0 * vr[d] + a1 * ve[d];
	} else {
		for (int d = 0; d < D; d++)
			v[d] = a0 * vr[d];
	}
	const REAL *cs = m->cos_t + (size_t)t * nf, *sn = m->sin_t + (size_t)t * nf;
	for (int h = 0; h < H; h++) {
		size_t o = (size_t)t * D + (size_t)h * hd;
		a->qs[t * H + h] = S(norm_row)(a->q + o, a->q + o, hd, eps);
		a->ks[t * H + h] = S(norm_row)(a->k + o, a->k + o, hd, eps);
		memcpy(m->qr + o, a->q + o, sizeof(REAL) * (size_t)hd);
		memcpy(m->kr + o, a->k + o, sizeof(REAL) * (size_t)hd);
		S(rope)(m->qr + o, cs, sn, hd, nf, 0);
		S(rope)(m->kr + o, cs, sn, hd, nf, 0);
	}
}

/* x += attention output (in tmp); norm of the MLP input. */
static void S(fw_attn_res)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	struct S(act) *a = &m->act[l];
	REAL *x = ROW(m->x, t), *o = ROW(m->tmp, t);
	for (int d = 0; d < D; d++)
		x[d] += o[d];
	memcpy(ROW(a->rmid, t), x, sizeof(REAL) * (size_t)D);
	a->rstd2[t] = S(norm_row)(ROW(m->h, t), x, D, (REAL)m->c.norm_eps);
}

static void S(fw_relu2)(struct MODEL *m, int l, int t, int tid)
{
	const size_t F = (size_t)m->c.mlp_hidden;
	const REAL *u = m->act[l].u + (size_t)t * F;
	REAL *o = m->big + (size_t)t * F;
	for (size_t i = 0; i < F; i++) {
		REAL r = u[i] > 0 ? u[i] : 0;
		o[i] = r * r;
	}
}

/* x += MLP output (in tmp); encoder layers push x. */
static void S(fw_mlp_res)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	REAL *x = ROW(m->x, t), *o = ROW(m->tmp, t);
	for (int d = 0; d < D; d++)
		x[d] += o[d];
	if (l < m->c.layers / 2)
		memcpy(ROW(m->skip[l], t), x, sizeof(REAL) * (size_t)D);
}

static void S(fw_final)(struct MODEL *m, int unused, int t, int tid)
{
	const int D = m->c.dim;
	m->rstdf[t] = S(norm_row)(ROW(m->hf, t), ROW(m->x, t), D, (REAL)m->c.norm_eps);
}

static void S(forward)(struct MODEL *m)
{
	const struct gpt_config *c = &m->c;
	const int T = m->T, D = c->dim, F = c->mlp_hidden;
	S(each)(m, T, 0, S(fw_embed));
	for (int l = 0; l < c->layers; l++) {
		struct S(act) *a = &m->act[l];
		S(each)(m, T, l, S(fw_mix));
		if (gpt_layer_attn(c, l)) {
			MM_NT(a->q, m->h, m->w.l[l].q, T, D, D, 0);
			MM_NT(a->k, m->h, m->w.l[l].k, T, D, D, 0);
			MM_NT(a->vraw, m->h, m->w.l[l].v, T, D, D, 0);
			S(each)(m, T, l, S(fw_qkv));
			S(attn_forward)(a->y, a->lse, m->qr, m->kr, a->v, T, c->heads, c->head_dim,
			                m->kfirst, m->scratch, (size_t)m->max_T);
			MM_NT(m->tmp, a->y, m->w.l[l].o, T, D, D, 0);
			S(each)(m, T, l, S(fw_attn_res));
		}
		MM_NT(a->u, m->h, m->w.l[l].fc, T, F, D, 0);
		S(each)(m, T, l, S(fw_relu2));
		MM_NT(m->tmp, m->big, m->w.l[l].proj, T, D, F, 0);
		S(each)(m, T, l, S(fw_mlp_res));
	}
	S(each)(m, T, 0, S(fw_final));
}

/* ------------------------------------------------------------------------
 * Head: logits = hf Whead^T, softcap, cross entropy, HEAD_ROWS rows at a
 * time. With grad, each row's logits are replaced by d(loss)/d(logits)
 * right away; then dhf (into dh) and dHead (+=) for the chunk.
 */
static void S(ce_row)(struct MODEL *m, int r0, int i, int tid)
{
	const int V = m->c.vocab, t = r0 + i;
	const REAL cap = (REAL)m->c.softcap;
	REAL *z = m->logits + (size_t)i * V, mx = -INFINITY;
	for (int v = 0; v < V; v++) {
		if (cap > 0)
			z[v] = cap * R_TANH(z[v] / cap);
		mx = z[v] > mx ? z[v] : mx;
	}
	double s = 0;
	for (int v = 0; v < V; v++)
		s += (double)R_EXP(z[v] - mx);
	double lse = (double)mx + log(s);
	uint32_t y = m->tg[t];
	m->loss_t[t] = lse - (double)z[y];
	if (!m->grad)
		return;
	const REAL rl = (REAL)lse, invT = (REAL)1 / (REAL)m->T;
	for (int v = 0; v < V; v++) {
		REAL g = R_EXP(z[v] - rl) - (v == (int)y ? (REAL)1 : (REAL)0);
		g *= invT;
		if (cap > 0) {
			REAL th = z[v] / cap;
			g *= (REAL)1 - th * th;
		}
		z[v] = g;
	}
}

static void S(bw_final)(struct MODEL *m, int unused, int t, int tid)
{
	const int D = m->c.dim;
	S(norm_bwd_row)(ROW(m->dx, t), ROW(m->dh, t), ROW(m->hf, t), m->rstdf[t], D, 0);
}

static double S(head)(struct MODEL *m)
{
	const int grad = m->grad;
	const int T = m->T, D = m->c.dim, V = m->c.vocab;
	S(transpose)(m->headT, m->w.head, V, D);
	for (int r0 = 0; r0 < T; r0 += HEAD_ROWS) {
		int n = T - r0 < HEAD_ROWS ? T - r0 : HEAD_ROWS;
		MM_NN(m->logits, ROW(m->hf, r0), m->headT, n, V, D, 0);
		S(each)(m, n, r0, S(ce_row));
		if (grad) {
			MM_NN(ROW(m->dh, r0), m->logits, m->w.head, n, D, V, 0);
			MM_TN(m->g.head, m->logits, ROW(m->hf, r0), V, D, n, 1);
		}
	}
	double sum = 0;
	for (int t = 0; t < T; t++)
		sum += m->loss_t[t];
	if (grad)
		S(each)(m, T, 0, S(bw_final));
	return sum / T;
}

/* ------------------------------------------------------------------------
 * Backward stages (one token each). On entry to a layer, dx holds
 * d(loss)/d(layer output).
 */
static void S(bw_skip_in)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	REAL *dx = ROW(m->dx, t), *s = ROW(m->skip[l], t);
	for (int d = 0; d < D; d++)
		dx[d] += s[d];
}

/* Recompute the MLP input h = norm(rmid) and relu(u)^2. */
static void S(bw_mlp_prep)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	struct S(act) *a = &m->act[l];
	REAL *h = ROW(m->h, t), *r = ROW(a->rmid, t), s = a->rstd2[t];
	for (int d = 0; d < D; d++)
		h[d] = r[d] * s;
	S(fw_relu2)(m, l, t, tid);
}

static void S(bw_relu2)(struct MODEL *m, int l, int t, int tid)
{
	const size_t F = (size_t)m->c.mlp_hidden;
	const REAL *u = m->act[l].u + (size_t)t * F;
	REAL *du = m->du + (size_t)t * F;
	for (size_t i = 0; i < F; i++)
		du[i] = u[i] > 0 ? du[i] * (REAL)2 * u[i] : 0;
}

/* dx += norm backward of dh (h holds the norm's output), for the attention
 * input norm (1) or the MLP input norm (2). */
static void S(bw_norm1)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	S(norm_bwd_row)(ROW(m->dx, t), ROW(m->dh, t), ROW(m->h, t), m->act[l].rstd1[t], D, 1);
}
static void S(bw_norm2)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim;
	S(norm_bwd_row)(ROW(m->dx, t), ROW(m->dh, t), ROW(m->h, t), m->act[l].rstd2[t], D, 1);
}

/* Rotary q, k again (into qr, kr) for the attention backward. */
static void S(bw_attn_prep)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim, nf = m->c.rope_freqs, hd = m->c.head_dim;
	struct S(act) *a = &m->act[l];
	const REAL *cs = m->cos_t + (size_t)t * nf, *sn = m->sin_t + (size_t)t * nf;
	memcpy(ROW(m->qr, t), ROW(a->q, t), sizeof(REAL) * (size_t)D);
	memcpy(ROW(m->kr, t), ROW(a->k, t), sizeof(REAL) * (size_t)D);
	for (int h = 0; h < m->c.heads; h++) {
		S(rope)(ROW(m->qr, t) + (size_t)h * hd, cs, sn, hd, nf, 0);
		S(rope)(ROW(m->kr, t) + (size_t)h * hd, cs, sn, hd, nf, 0);
	}
}

/* Value-mix, rotary and QK-norm backward; recompute the attention input h. */
static void S(bw_qkv)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim, H = m->c.heads, hd = m->c.head_dim, nf = m->c.rope_freqs;
	struct S(act) *a = &m->act[l];
	double *part = m->part + (size_t)t * NPART;
	REAL *dv = ROW(m->dv, t), *dq = ROW(m->dq, t), *dk = ROW(m->dk, t);
	int tbl = gpt_layer_ve(&m->c, l);
	part[2] = S(dot)(dv, ROW(a->vraw, t), D);
	if (tbl >= 0)
		part[3] = S(dot)(dv, m->w.ve[tbl] + (size_t)m->in[t] * D, D);
	REAL a0 = m->w.l[l].attn_lambdas[0];
	for (int d = 0; d < D; d++)
		dv[d] *= a0;
	const REAL *cs = m->cos_t + (size_t)t * nf, *sn = m->sin_t + (size_t)t * nf;
	for (int h = 0; h < H; h++) {
		size_t o = (size_t)h * hd;
		S(rope)(dq + o, cs, sn, hd, nf, 1);
		S(rope)(dk + o, cs, sn, hd, nf, 1);
		S(norm_bwd_row)(dq + o, dq + o, ROW(a->q, t) + o, a->qs[t * H + h], hd, 0);
		S(norm_bwd_row)(dk + o, dk + o, ROW(a->k, t) + o, a->ks[t * H + h], hd, 0);
	}
	REAL l0 = m->w.l[l].lambdas[0], l1 = m->w.l[l].lambdas[1], r = a->rstd1[t];
	REAL *h = ROW(m->h, t), *ri = ROW(a->res_in, t), *x0 = ROW(m->x0, t);
	for (int d = 0; d < D; d++)
		h[d] = (l0 * ri[d] + l1 * x0[d]) * r;
}

/* Lambda mix and U-net skip backward. dx: d/d(mixed x) -> d/d(layer input). */
static void S(bw_mix)(struct MODEL *m, int l, int t, int tid)
{
	const int D = m->c.dim, L = m->c.layers;
	struct S(act) *a = &m->act[l];
	double *part = m->part + (size_t)t * NPART;
	REAL *dx = ROW(m->dx, t), *dx0 = ROW(m->dx0, t);
	part[0] = S(dot)(dx, ROW(a->res_in, t), D);
	part[1] = S(dot)(dx, ROW(m->x0, t), D);
	REAL l0 = m->w.l[l].lambdas[0], l1 = m->w.l[l].lambdas[1];
	for (int d = 0; d < D; d++) {
		dx0[d] += l1 * dx[d];
		dx[d] *= l0;
	}
	if (l >= L / 2) { /* x_in = x_prev + sw * s: ds = sw * dx, kept in skip[] */
		int j = l - L / 2;
		REAL sw = m->w.skip[j], *s = ROW(m->skip[L / 2 - 1 - j], t);
		part[4] = S(dot)(dx, s, D);
		for (int d = 0; d < D; d++)
			s[d] = sw * dx[d];
	}
}

static void S(bw_embed)(struct MODEL *m, int unused, int t, int tid)
{
	const int D = m->c.dim;
	REAL *dx0 = ROW(m->dx0, t), *dx = ROW(m->dx, t);
	for (int d = 0; d < D; d++)
		dx0[d] += dx[d];
	S(norm_bwd_row)(ROW(m->dh, t), dx0, ROW(m->x0, t), m->rstd0[t], D, 0);
}

/* Sum part[.][k] over tokens in order. */
static REAL S(part_sum)(const struct MODEL *m, int k)
{
	double s = 0;
	for (int t = 0; t < m->T; t++)
		s += m->part[(size_t)t * NPART + k];
	return (REAL)s;
}

static void S(backward)(struct MODEL *m)
{
	const struct gpt_config *c = &m->c;
	const int T = m->T, D = c->dim, F = c->mlp_hidden, L = c->layers;
	memset(m->dx0, 0, sizeof(REAL) * (size_t)T * D);
	for (int l = L - 1; l >= 0; l--) {
		struct S(act) *a = &m->act[l];
		memset(m->part, 0, sizeof(double) * (size_t)T * NPART);
		if (l < L / 2)
			S(each)(m, T, l, S(bw_skip_in));
		/* MLP */
		S(each)(m, T, l, S(bw_mlp_prep));
		MM_TN(m->g.l[l].proj, m->dx, m->big, D, F, T, 1);
		MM_NN(m->du, m->dx, m->w.l[l].proj, T, F, D, 0);
		S(each)(m, T, l, S(bw_relu2));
		MM_TN(m->g.l[l].fc, m->du, m->h, F, D, T, 1);
		MM_NN(m->dh, m->du, m->w.l[l].fc, T, D, F, 0);
		S(each)(m, T, l, S(bw_norm2));
		/* attention */
		if (gpt_layer_attn(c, l)) {
			int tbl = gpt_layer_ve(c, l);
			MM_TN(m->g.l[l].o, m->dx, a->y, D, D, T, 1);
			MM_NN(m->dy, m->dx, m->w.l[l].o, T, D, D, 0);
			S(each)(m, T, l, S(bw_attn_prep));
			S(attn_backward)(m->dq, m->dk, m->dv, m->delta, m->dy, m->qr, m->kr, a->v, a->y,
			                 a->lse, T, c->heads, c->head_dim, m->kfirst, m->qlast);
			if (tbl >= 0)
				S(scatter)(m->g.ve[tbl], m->dv, m->w.l[l].attn_lambdas[1], m->in, T, D);
			S(each)(m, T, l, S(bw_qkv));
			MM_TN(m->g.l[l].q, m->dq, m->h, D, D, T, 1);
			MM_TN(m->g.l[l].k, m->dk, m->h, D, D, T, 1);
			MM_TN(m->g.l[l].v, m->dv, m->h, D, D, T, 1);
			MM_NN(m->dh, m->dq, m->w.l[l].q, T, D, D, 0);
			MM_NN(m->dh, m->dk, m->w.l[l].k, T, D, D, 1);
			MM_NN(m->dh, m->dv, m->w.l[l].v, T, D, D, 1);
			S(each)(m, T, l, S(bw_norm1));
			m->g.l[l].attn_lambdas[0] += S(part_sum)(m, 2);
			if (tbl >= 0)
				m->g.l[l].attn_lambdas[1] += S(part_sum)(m, 3);
		}
		/* lambda mix, U-net skip */
		S(each)(m, T, l, S(bw_mix));
		m->g.l[l].lambdas[0] += S(part_sum)(m, 0);
		m->g.l[l].lambdas[1] += S(part_sum)(m, 1);
		if (l >= L / 2)
			m->g.skip[l - L / 2] += S(part_sum)(m, 4);
	}
	S(each)(m, T, 0, S(bw_embed));
	S(scatter)(m->g.embed, m->dh, 1, m->in, T, D);
}
#undef ROW

/* ------------------------------------------------------------------------
 * Public functions
 */
struct MODEL *API(create)(const struct gpt_config *c, int max_T, struct gpt_err *e)
{
	if (gpt_config_check(c, e))
		return NULL;
	if (max_T < 1 || max_T > c->max_seq) {
		gpt_errf(e, "micro-batch length %d out of range [1, max_seq = %d]", max_T, c->max_seq);
		return NULL;
	}
	struct MODEL *m = calloc(1, sizeof *m);
	if (!m) {
		gpt_errf(e, "out of memory for the CPU model");
		return NULL;
	}
	m->c = *c;
	m->max_T = max_T;
	gpt_table_build(c, &m->tab);
	m->arena_n = S(layout)(m, NULL);
	m->arena = aligned_alloc(64, sizeof(REAL) * m->arena_n);
	m->loss_t = malloc(sizeof(double) * (size_t)max_T);
	m->part = malloc(sizeof(double) * (size_t)max_T * NPART);
	m->docs = malloc(sizeof(int32_t) * (size_t)max_T);
	m->kfirst = malloc(sizeof(int32_t) * (size_t)max_T);
	m->qlast = malloc(sizeof(int32_t) * (size_t)max_T);
	if (!m->arena || !m->loss_t || !m->part || !m->docs || !m->kfirst || !m->qlast) {
		gpt_errf(e, "cannot allocate %.1f MiB of activations for %d tokens",
		         (double)(sizeof(REAL) * m->arena_n) / 1048576.0, max_T);
		API(free)(m);
		return NULL;
	}
	S(layout)(m, m->arena);
	float *cs = xmalloc(sizeof(float) * (size_t)max_T * (size_t)(c->rope_freqs + 1));
	float *sn = xmalloc(sizeof(float) * (size_t)max_T * (size_t)(c->rope_freqs + 1));
	gpt_rope_table(c, max_T, cs, sn);
	for (size_t i = 0; i < (size_t)max_T * (size_t)c->rope_freqs; i++) {
		m->cos_t[i] = cs[i];
		m->sin_t[i] = sn[i];
	}
	free(cs);
	free(sn);
	return m;
}

void API(free)(struct MODEL *m)
{
	if (!m)
		return;
	gpt_table_free(&m->tab);
	free(m->arena);
	free(m->scratch);
	free(m->loss_t);
	free(m->part);
	free(m->docs);
	free(m->kfirst);
	free(m->qlast);
	free(m);
}

/* Checks and per-call state shared by step and logits: token ids, scratch
 * rows for every thread, the weights bound, the mask for this batch. */
static int S(setup)(struct MODEL *m, const REAL *w, const uint32_t *inputs,
                    const uint32_t *targets, int T, int window, struct gpt_err *e)
{
	if (T < 1 || T > m->max_T)
		return gpt_errf(e, "micro-batch of %d tokens: the model was created for 1..%d", T,
		                m->max_T);
	if (window < 1)
		return gpt_errf(e, "attention window %d must be at least 1 block", window);
	for (int t = 0; t < T; t++) {
		if (inputs[t] >= (uint32_t)m->c.vocab)
			return gpt_errf(e, "input token %u at position %d is outside the vocabulary (%d)",
			                inputs[t], t, m->c.vocab);
		if (targets && targets[t] >= (uint32_t)m->c.vocab)
			return gpt_errf(e, "target token %u at position %d is outside the vocabulary (%d)",
			                targets[t], t, m->c.vocab);
	}
	int nth = parallel_threads();
	if (m->nscratch < nth) {
		REAL *s = realloc(m->scratch, sizeof(REAL) * (size_t)nth * (size_t)m->max_T);
		if (!s)
			return gpt_errf(e, "out of memory for attention scratch rows");
		m->scratch = s;
		m->nscratch = nth;
	}
	m->T = T;
	m->W = window;
	m->in = inputs;
	m->tg = targets ? targets : inputs;
	S(bind)(&m->tab, (REAL *)w, &m->w);
	gpt_mask_docs(inputs, T, m->c.eot, m->docs);
	gpt_mask_ranges(m->docs, T, window, m->c.attn_block, m->kfirst, m->qlast);
	return 0;
}

int API(step)(struct MODEL *m, const REAL *w, const uint32_t *inputs, const uint32_t *targets,
              int T, int window, REAL *grad, double *loss, struct gpt_err *e)
{
	if (S(setup)(m, w, inputs, targets, T, window, e))
		return -1;
	m->grad = grad != NULL;
	if (grad)
		S(bind)(&m->tab, grad, &m->g);
	S(forward)(m);
	*loss = S(head)(m);
	if (grad)
		S(backward)(m);
	return 0;
}

int API(logits)(struct MODEL *m, const REAL *w, const uint32_t *inputs, int T, int window,
                REAL *out, struct gpt_err *e)
{
	if (S(setup)(m, w, inputs, NULL, T, window, e))
		return -1;
	m->grad = 0;
	S(forward)(m);
	/* the last position's logits: one row of hf against every head row */
	const int D = m->c.dim, V = m->c.vocab;
	const REAL cap = (REAL)m->c.softcap;
	MM_NT(out, m->hf + (size_t)(T - 1) * (size_t)D, m->w.head, 1, V, D, 0);
	if (cap > 0)
		for (int v = 0; v < V; v++)
			out[v] = cap * R_TANH(out[v] / cap);
	return 0;
}
