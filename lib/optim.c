/*
 * optim.c - Adam and Muon on the CPU, Muon owner assignment. See optim.h.
 *
 * Sections: elementwise kernels (Adam, lerp, apply), Newton-Schulz,
 * struct optim (flat buffer, state), muon_plan.
 */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#include "parallel.h"

/* Elements per parallel_for work item: small arrays run in the caller. */
#define CHUNK 16384

static size_t nchunks(size_t n) { return (n + CHUNK - 1) / CHUNK; }

/* ------------------------------------------------------------------------
 * Adam
 */
struct adam_job {
	float *p, *m, *v;
	const float *g;
	size_t n;
	double beta1, beta2, eps;
	float bc2s, step_size; /* fp32 as the fused kernel receives them */
	int bf16;
};

static void adam_range(void *vctx, size_t begin, size_t end, int tid)
{
	const struct adam_job *j = vctx;
	size_t i0 = begin * CHUNK, i1 = end * CHUNK < j->n ? end * CHUNK : j->n;
	const double b1 = j->beta1, b2 = j->beta2, eps = j->eps;
	const double ob1 = 1 - b1, ob2 = 1 - b2;
	for (size_t i = i0; i < i1; i++) {
		float p = j->p[i], g = j->g[i], m = j->m[i], v = j->v[i];
		if (j->bf16) {
			p = round_bf16(p);
			g = round_bf16(g);
			m = round_bf16(m);
			v = round_bf16(v);
		}
		m = (float)(b1 * (double)m + ob1 * (double)g);
		v = (float)(b2 * (double)v + ob2 * (double)g * (double)g);
		float denom = (float)((double)(sqrtf(v) / j->bc2s) + eps);
		p -= j->step_size * m / denom;
		if (j->bf16) {
			p = round_bf16(p);
			m = round_bf16(m);
			v = round_bf16(v);
		}
		j->p[i] = p;
		j->m[i] = m;
		j->v[i] = v;
	}
	(void)tid;
}

void adam_update(float *p, const float *g, float *m, float *v, size_t n, const struct adam_hyper *h)
{
	double nn = (double)h->step;
	struct adam_job j = {
		.p = p, .m = m, .v = v, .g = g, .n = n,
		.beta1 = h->beta1, .beta2 = h->beta2, .eps = h->eps,
		.bf16 = h->bf16,
	};
	/* FusedAdamMathFunctor: bias corrections in double, passed as fp32;
	 * adam_math: step_size = lr / bc1 in double, stored as fp32 */
	float bc1 = (float)(1 - pow(h->beta1, nn));
	j.bc2s = (float)sqrt(1 - pow(h->beta2, nn));
	j.step_size = (float)(h->lr / (double)bc1);
	parallel_for(nchunks(n), adam_range, &j);
}

/* ------------------------------------------------------------------------
 * Muon: momentum, apply
 */
/* PyTorch's lerp (ATen/native/Lerp.h) in fp32. */
static inline float lerp_pt(float self, float end, float w)
{
	return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.0f - w);
}

struct mom_job {
	float *buf, *out;
	const float *g;
	size_t n;
	float w1, w2;
};

static void mom_range(void *vctx, size_t begin, size_t end, int tid)
{
	const struct mom_job *j = vctx;
	size_t i0 = begin * CHUNK, i1 = end * CHUNK < j->n ? end * CHUNK : j->n;
	for (size_t i = i0; i < i1; i++) {
		float g = j->g[i];
		float b = lerp_pt(j->buf[i], g, j->w1);
		j->buf[i] = b;
		j->out[i] = lerp_pt(g, b, j->w2);
	}
	(void)tid;
}

void muon_momentum(float *buf, float *out, const float *g, size_t n, double mu)
{
	/* buf.lerp_(g, 1 - momentum); g.lerp_(buf, momentum): the Python scalar
	 * weights are converted to the fp32 opmath type */
	struct mom_job j = {buf, out, g, n, (float)(1 - mu), (float)mu};
	parallel_for(nchunks(n), mom_range, &j);
}

double muon_scale(int rows, int cols)
{
	double r = (double)rows / (double)cols;
	return sqrt(r > 1 ? r : 1);
}

struct axpy_job {
	float *p;
	const float *u;
	size_t n;
	float alpha;
};

static void axpy_range(void *vctx, size_t begin, size_t end, int tid)
{
	const struct axpy_job *j = vctx;
	size_t i0 = begin * CHUNK, i1 = end * CHUNK < j->n ? end * CHUNK : j->n;
	for (size_t i = i0; i < i1; i++)
		j->p[i] = j->p[i] + j->alpha * j->u[i];
	(void)tid;
}

void muon_apply(float *p, const float *u, int rows, int cols, double lr)
{
	/* p.add_(u, alpha=-lr * max(1, rows/cols)**0.5): alpha in double,
	 * then fp32 opmath */
	struct axpy_job j = {p, u, (size_t)rows * (size_t)cols, (float)(-lr * muon_scale(rows, cols))};
	parallel_for(nchunks(j.n), axpy_range, &j);
}

/* ------------------------------------------------------------------------
 * Newton-Schulz
 */
enum ew_op {
	EW_ROUND, /* x = bf16(x) */
	EW_DIV,   /* x = x / s */
	EW_SCALE, /* x = s * y */
	EW_AXPY,  /* x = s * x + y   (also B = b*A + AA with x = A, out = B) */
};

struct ew_job {
	enum ew_op op;
	float *out;
	const float *x, *y;
	size_t n;
	float s;
	int bf16;
};

static void ew_range(void *vctx, size_t begin, size_t end, int tid)
{
	const struct ew_job *j = vctx;
	size_t i0 = begin * CHUNK, i1 = end * CHUNK < j->n ? end * CHUNK : j->n;
	for (size_t i = i0; i < i1; i++) {
		float r;
		switch (j->op) {
		case EW_ROUND: r = j->x[i]; break;
		case EW_DIV: r = j->x[i] / j->s; break;
		case EW_SCALE: r = j->s * j->x[i]; break;
		default: r = j->s * j->x[i] + j->y[i]; break;
		}
		j->out[i] = j->bf16 ? round_bf16(r) : r;
	}
	(void)tid;
}

static void ew(enum ew_op op, float *out, const float *x, const float *y, size_t n, float s, int bf16)
{
	struct ew_job j = {op, out, x, y, n, s, bf16};
	parallel_for(nchunks(n), ew_range, &j);
}

struct ss_job {
	const float *x;
	size_t n;
	double *part; /* one per chunk */
};

static void ss_range(void *vctx, size_t begin, size_t end, int tid)
{
	const struct ss_job *j = vctx;
	for (size_t c = begin; c < end; c++) {
		size_t i0 = c * CHUNK, i1 = i0 + CHUNK < j->n ? i0 + CHUNK : j->n;
		double s = 0;
		for (size_t i = i0; i < i1; i++)
			s += (double)j->x[i] * (double)j->x[i];
		j->part[c] = s;
	}
	(void)tid;
}

/* Frobenius norm: double sums over fixed chunks, added in order. */
static float frobenius(const float *x, size_t n)
{
	size_t nc = nchunks(n);
	struct ss_job j = {x, n, xcalloc(nc ? nc : 1, sizeof(double))};
	parallel_for(nc, ss_range, &j);
	double s = 0;
	for (size_t c = 0; c < nc; c++)
		s += j.part[c];
	free(j.part);
	return (float)sqrt(s);
}

void newton_schulz5(float *out, const float *G, int rows, int cols, int steps, int bf16)
{
	const int tr = rows > cols;
	const int m = tr ? cols : rows, n = tr ? rows : cols; /* X is m x n, m <= n */
	const size_t mn = (size_t)m * (size_t)n, mm = (size_t)m * (size_t)m;
	if (!mn)
		return;
	float *X = xmalloc(sizeof(float) * mn), *BX = xmalloc(sizeof(float) * mn);
	float *A = xmalloc(sizeof(float) * mm), *cA = xmalloc(sizeof(float) * mm);
	float *AA = xmalloc(sizeof(float) * mm), *B = xmalloc(sizeof(float) * mm);

	if (tr)
		transpose(X, G, rows, cols);
	else
		memcpy(X, G, sizeof(float) * mn);
	if (bf16)
		ew(EW_ROUND, X, X, NULL, mn, 0, 1);
	float nrm = frobenius(X, mn);
	if (bf16)
		nrm = round_bf16(nrm);
	ew(EW_DIV, X, X, NULL, mn, nrm + MUON_NS_EPS, bf16);
	for (int s = 0; s < steps; s++) {
		matmul_nt(A, X, X, m, m, n, 0.0f); /* A = X X^T */
		if (bf16)
			ew(EW_ROUND, A, A, NULL, mm, 0, 1);
		ew(EW_SCALE, cA, A, NULL, mm, MUON_NS_C, bf16);  /* c*A */
		matmul_nn(AA, cA, A, m, m, m, 0.0f);              /* (c*A) A */
		if (bf16)
			ew(EW_ROUND, AA, AA, NULL, mm, 0, 1);
		ew(EW_AXPY, B, A, AA, mm, MUON_NS_B, bf16);      /* B = b*A + AA */
		matmul_nn(BX, B, X, m, n, m, 0.0f);               /* B X */
		if (bf16)
			ew(EW_ROUND, BX, BX, NULL, mn, 0, 1);
		ew(EW_AXPY, X, X, BX, mn, MUON_NS_A, bf16);      /* X = a*X + B X */
	}
	if (tr)
		transpose(out, X, m, n);
	else
		memcpy(out, X, sizeof(float) * mn);
	free(X), free(BX), free(A), free(cA), free(AA), free(B);
}

void muon_update(float *p, const float *g, float *buf, int rows, int cols, double lr, double mu,
                 int bf16)
{
	size_t n = (size_t)rows * (size_t)cols;
	float *u = xmalloc(sizeof(float) * (n ? n : 1));
	muon_momentum(buf, u, g, n, mu);
	newton_schulz5(u, u, rows, cols, MUON_NS_STEPS, bf16);
	muon_apply(p, u, rows, cols, lr);
	free(u);
}

/* ------------------------------------------------------------------------
 * struct optim
 */
static const char *const state_names[OPTIM_NSTATE] = {
	"optim.adam_m", "optim.adam_v", "optim.muon_momentum",
};

struct optim {
	int flags;
	int n;                  /* parameters */
	struct gpt_param *p;    /* [n] copy of the table */
	size_t *soff;           /* [n] offset of parameter i in its state buffers */
	float *buf[OPTIM_NSTATE];
	size_t len[OPTIM_NSTATE];
	int64_t steps;
};

static int is_muon(const struct gpt_param *p) { return p->group == GPT_GROUP_MUON; }

static int check_table(const struct gpt_config *c, const struct gpt_table *t, struct gpt_err *e)
{
	if (gpt_config_check(c, e))
		return -1;
	if (!t || t->n < 1 || !t->p)
		return gpt_errf(e, "optimizer: empty parameter table");
	struct gpt_table ref;
	gpt_table_build(c, &ref);
	int rc = 0;
	if (ref.n != t->n || ref.total != t->total)
		rc = gpt_errf(e, "optimizer: parameter table (%d tensors, %zu numbers) does not match "
		                 "the configuration (%d tensors, %zu numbers)",
		              t->n, t->total, ref.n, ref.total);
	for (int i = 0; !rc && i < t->n; i++) {
		const struct gpt_param *p = &t->p[i], *q = &ref.p[i];
		if (strcmp(p->name, q->name) || p->group != q->group || p->ndim != q->ndim ||
		    p->shape[0] != q->shape[0] || p->shape[1] != q->shape[1] ||
		    p->numel != q->numel || p->offset != q->offset || p->dtype != q->dtype)
			rc = gpt_errf(e, "optimizer: parameter %d (%s) does not match the configuration's "
			                 "%s", i, p->name, q->name);
	}
	gpt_table_free(&ref);
	return rc;
}

struct optim *optim_create(const struct gpt_config *c, const struct gpt_table *t, int flags,
                           struct gpt_err *e)
{
	if (flags & ~OPTIM_RECORD_PRECISION) {
		gpt_errf(e, "optimizer: unknown flags 0x%x", (unsigned)flags);
		return NULL;
	}
	if (check_table(c, t, e))
		return NULL;
	size_t adam = 0, muon = 0;
	for (int i = 0; i < t->n; i++)
		*(is_muon(&t->p[i]) ? &muon : &adam) += t->p[i].numel;

	struct optim *o = xcalloc(1, sizeof *o);
	o->flags = flags;
	o->n = t->n;
	o->p = xmalloc(sizeof *o->p * (size_t)t->n);
	memcpy(o->p, t->p, sizeof *o->p * (size_t)t->n);
	o->soff = xmalloc(sizeof *o->soff * (size_t)t->n);
	size_t ao = 0, mo = 0;
	for (int i = 0; i < t->n; i++) {
		if (is_muon(&t->p[i])) {
			o->soff[i] = mo;
			mo += t->p[i].numel;
		} else {
			o->soff[i] = ao;
			ao += t->p[i].numel;
		}
	}
	o->len[OPTIM_ADAM_M] = o->len[OPTIM_ADAM_V] = adam;
	o->len[OPTIM_MUON_MOMENTUM] = muon;
	for (int s = 0; s < OPTIM_NSTATE; s++)
		o->buf[s] = xcalloc(o->len[s] ? o->len[s] : 1, sizeof(float));
	return o;
}

void optim_free(struct optim *o)
{
	if (!o)
		return;
	for (int s = 0; s < OPTIM_NSTATE; s++)
		free(o->buf[s]);
	free(o->p);
	free(o->soff);
	free(o);
}

int optim_flags(const struct optim *o) { return o->flags; }

void optim_step(struct optim *o, float *w, const float *g, const double lr[GPT_NGROUPS], double mu)
{
	o->steps++;
	for (int i = 0; i < o->n; i++) {
		const struct gpt_param *p = &o->p[i];
		float *pw = w + p->offset;
		const float *pg = g + p->offset;
		if (is_muon(p)) {
			muon_update(pw, pg, o->buf[OPTIM_MUON_MOMENTUM] + o->soff[i], (int)p->shape[0],
			            (int)p->shape[1], lr[GPT_GROUP_MUON], mu, !!(o->flags & OPTIM_NS_BF16));
		} else {
			struct adam_hyper h = {
				.lr = lr[p->group],
				.beta1 = ADAM_BETA1,
				.beta2 = ADAM_BETA2,
				.eps = ADAM_EPS,
				.step = o->steps,
				.bf16 = (o->flags & OPTIM_ADAM_BF16) && p->dtype == GPT_BF16,
			};
			adam_update(pw, pg, o->buf[OPTIM_ADAM_M] + o->soff[i],
			            o->buf[OPTIM_ADAM_V] + o->soff[i], p->numel, &h);
		}
	}
}

struct optim_buffer optim_buffer(struct optim *o, enum optim_state which)
{
	struct optim_buffer b = {NULL, NULL, 0};
	if ((unsigned)which < OPTIM_NSTATE) {
		b.name = state_names[which];
		b.data = o->buf[which];
		b.numel = o->len[which];
	}
	return b;
}

float *optim_param_state(struct optim *o, int i, enum optim_state which)
{
	if (i < 0 || i >= o->n || (unsigned)which >= OPTIM_NSTATE)
		return NULL;
	if (is_muon(&o->p[i]) != (which == OPTIM_MUON_MOMENTUM))
		return NULL;
	return o->buf[which] + o->soff[i];
}

int64_t optim_steps(const struct optim *o) { return o->steps; }

int optim_set_steps(struct optim *o, int64_t steps, struct gpt_err *e)
{
	/* PyTorch keeps the step count in an fp32 tensor: exact up to 2^24 */
	if (steps < 0 || steps > (1 << 24))
		return gpt_errf(e, "optimizer step count %lld out of range [0, 16777216]",
		                (long long)steps);
	o->steps = steps;
	return 0;
}

void optim_reset(struct optim *o)
{
	for (int s = 0; s < OPTIM_NSTATE; s++)
		memset(o->buf[s], 0, sizeof(float) * o->len[s]);
	o->steps = 0;
}

/* ------------------------------------------------------------------------
 * Muon owner assignment
 */
int muon_plan_build(const struct gpt_table *t, int world, int rank, struct muon_plan *plan,
                    struct gpt_err *e)
{
	memset(plan, 0, sizeof *plan);
	if (world < 1)
		return gpt_errf(e, "Muon plan: world size %d must be at least 1", world);
	if (rank < 0 || rank >= world)
		return gpt_errf(e, "Muon plan: rank %d out of range [0, %d)", rank, world);
	plan->world = world;
	plan->rank = rank;
	int nm = 0;
	for (int i = 0; i < t->n; i++)
		nm += is_muon(&t->p[i]);
	/* at most nm groups; each group's list has room for nm entries */
	plan->groups = xcalloc(nm ? (size_t)nm : 1, sizeof *plan->groups);
	for (int i = 0; i < t->n; i++) {
		if (!is_muon(&t->p[i]))
			continue;
		int gi = 0;
		while (gi < plan->ngroups && plan->groups[gi].numel != t->p[i].numel)
			gi++;
		struct muon_group *g = &plan->groups[gi];
		if (gi == plan->ngroups) {
			plan->ngroups++;
			g->numel = t->p[i].numel;
			g->params = xmalloc(sizeof(int) * (size_t)nm);
		}
		g->params[g->n++] = i;
	}
	int nr = 0;
	for (int gi = 0; gi < plan->ngroups; gi++)
		nr += (plan->groups[gi].n + world - 1) / world;
	plan->rounds = xcalloc(nr ? (size_t)nr : 1, sizeof *plan->rounds);
	plan->owned = xcalloc(nr ? (size_t)nr : 1, sizeof(int));
	for (int gi = 0; gi < plan->ngroups; gi++) {
		const struct muon_group *g = &plan->groups[gi];
		for (int base = 0; base < g->n; base += world) {
			struct muon_round *r = &plan->rounds[plan->nrounds++];
			r->group = gi;
			r->base = base;
			r->count = g->n - base < world ? g->n - base : world;
			r->owned = base + rank < g->n ? g->params[base + rank] : -1;
			if (r->owned >= 0)
				plan->owned[plan->nowned++] = r->owned;
		}
	}
	return 0;
}

void muon_plan_free(struct muon_plan *plan)
{
	for (int gi = 0; gi < plan->ngroups; gi++)
		free(plan->groups[gi].params);
	free(plan->groups);
	free(plan->rounds);
	free(plan->owned);
	memset(plan, 0, sizeof *plan);
}

int muon_plan_owner(const struct muon_plan *plan, int i)
{
	for (int gi = 0; gi < plan->ngroups; gi++)
		for (int j = 0; j < plan->groups[gi].n; j++)
			if (plan->groups[gi].params[j] == i)
				return j % plan->world;
	return -1;
}
