/*
 * config.c - model configuration, metadata and parameter table. See config.h.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void gpt_config_record(struct gpt_config *c)
{
	memset(c, 0, sizeof *c);
	c->vocab = 50304;
	c->layers = 12;
	c->dim = 768;
	c->heads = 6;
	c->head_dim = 128;
	c->mlp_hidden = 3072;
	c->value_embeds = 3;
	c->no_attn = 1u << 7;
	c->softcap = 15.0f;
	c->norm_eps = 0.0078125f; /* 2^-7: bf16 epsilon, spec 4.1 */
	c->rope_freqs = 32;
	c->rope_min_freq = 1.0f / 1024.0f;
	c->attn_block = 128;
	c->eot = 50256;
	c->max_seq = 65536;
}

int gpt_config_check(const struct gpt_config *c, struct gpt_err *e)
{
	if (c->vocab < 1 || c->vocab > (1 << 24))
		return gpt_errf(e, "vocab %d out of range [1, 16777216]", c->vocab);
	if (c->layers < 2 || c->layers > GPT_MAX_LAYERS || c->layers % 2)
		return gpt_errf(e, "layers %d: must be even, 2..%d (U-net halves)", c->layers,
		                GPT_MAX_LAYERS);
	if (c->dim < 1 || c->heads < 1 || c->dim % c->heads)
		return gpt_errf(e, "dim %d is not a multiple of heads %d", c->dim, c->heads);
	if (c->head_dim != c->dim / c->heads)
		return gpt_errf(e, "head_dim %d != dim / heads = %d", c->head_dim, c->dim / c->heads);
	if (c->head_dim % 4)
		return gpt_errf(e, "head_dim %d is not a multiple of 4 (half-truncated rotary)",
		                c->head_dim);
	if (c->mlp_hidden < 1)
		return gpt_errf(e, "mlp_hidden %d must be positive", c->mlp_hidden);
	if (c->value_embeds < 0 || c->value_embeds > 8 || 2 * c->value_embeds > c->layers)
		return gpt_errf(e, "value_embeds %d: need 0..8 and 2 x value_embeds <= layers (%d)",
		                c->value_embeds, c->layers);
	if (c->layers < 64 && (c->no_attn >> c->layers))
		return gpt_errf(e, "no-attention layer index beyond the %d layers", c->layers);
	if (!(c->softcap >= 0) || !isfinite(c->softcap))
		return gpt_errf(e, "softcap %g must be >= 0 (0 disables)", c->softcap);
	if (!(c->norm_eps >= 0) || !isfinite(c->norm_eps))
		return gpt_errf(e, "norm_eps %g must be >= 0", c->norm_eps);
	if (c->rope_freqs < 0 || c->rope_freqs > c->head_dim / 2)
		return gpt_errf(e, "rope_freqs %d out of range [0, head_dim/2 = %d]", c->rope_freqs,
		                c->head_dim / 2);
	if (!(c->rope_min_freq > 0) || c->rope_min_freq > 1)
		return gpt_errf(e, "rope_min_freq %g out of range (0, 1]", c->rope_min_freq);
	if (c->attn_block < 1)
		return gpt_errf(e, "attn_block %d must be positive", c->attn_block);
	if (c->eot < 0 || c->eot >= c->vocab)
		return gpt_errf(e, "eot token %d outside the vocabulary (%d)", c->eot, c->vocab);
	if (c->max_seq < 1)
		return gpt_errf(e, "max_seq %d must be positive", c->max_seq);
	return 0;
}

int gpt_layer_ve(const struct gpt_config *c, int i)
{
	int v = c->value_embeds, L = c->layers;
	if (i < v)
		return i;
	if (i >= L - v)
		return i - (L - v);
	return -1;
}

/* ------------------------------------------------------------------------
 * Metadata
 */
static void put(struct gpt_meta *m, const char *k, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static void put(struct gpt_meta *m, const char *k, const char *fmt, ...)
{
	if (m->n >= GPT_META_MAX)
		return;
	snprintf(m->key[m->n], sizeof m->key[0], "%s", k);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->val[m->n], sizeof m->val[0], fmt, ap);
	va_end(ap);
	m->n++;
}

void gpt_config_to_meta(const struct gpt_config *c, struct gpt_meta *m)
{
	m->n = 0;
	put(m, "format", "gpt-weights/1");
	put(m, "vocab_size", "%d", c->vocab);
	put(m, "num_layers", "%d", c->layers);
	put(m, "model_dim", "%d", c->dim);
	put(m, "num_heads", "%d", c->heads);
	put(m, "mlp_hidden", "%d", c->mlp_hidden);
	put(m, "value_embeds", "%d", c->value_embeds);
	char list[96] = "";
	size_t len = 0;
	for (int i = 0; i < c->layers; i++)
		if (!gpt_layer_attn(c, i))
			len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", len ? "," : "", i);
	put(m, "no_attention", "%s", list);
	put(m, "softcap", "%.9g", c->softcap);
	put(m, "norm_eps", "%.9g", c->norm_eps);
	put(m, "rope_freqs", "%d", c->rope_freqs);
	put(m, "rope_min_freq", "%.9g", c->rope_min_freq);
	put(m, "attn_block", "%d", c->attn_block);
	put(m, "eot_token", "%d", c->eot);
	put(m, "max_seq", "%d", c->max_seq);
}

/* Parse a comma-separated list of layer indices ("" = none) into a mask. */
static int parse_layer_list(const char *s, uint64_t *mask)
{
	*mask = 0;
	if (!*s)
		return 0;
	char *copy = xstrdup(s), *save = NULL;
	int rc = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		long v;
		if (parse_long(tok, 0, GPT_MAX_LAYERS - 1, &v)) {
			rc = -1;
			break;
		}
		*mask |= 1ull << v;
	}
	free(copy);
	return rc;
}

int gpt_config_from_meta(struct gpt_config *c, const char *(*get)(void *, const char *), void *ctx,
                         struct gpt_err *e)
{
	struct gpt_config rec;
	gpt_config_record(&rec);
	memset(c, 0, sizeof *c);
	const char *fmt = get(ctx, "format");
	if (!fmt)
		return gpt_errf(e, "no model configuration in the metadata (key 'format' missing; "
		                   "was this file written by gpt-init?)");
	if (strcmp(fmt, "gpt-weights/1"))
		return gpt_errf(e, "unsupported weights format '%s' (expected gpt-weights/1)", fmt);
	struct {
		const char *key;
		int *dst;
		int required;
		int def;
	} ints[] = {
		{"vocab_size", &c->vocab, 1, 0},        {"num_layers", &c->layers, 1, 0},
		{"model_dim", &c->dim, 1, 0},           {"num_heads", &c->heads, 1, 0},
		{"mlp_hidden", &c->mlp_hidden, 1, 0},   {"value_embeds", &c->value_embeds, 1, 0},
		{"rope_freqs", &c->rope_freqs, 0, -1},  {"attn_block", &c->attn_block, 0, rec.attn_block},
		{"eot_token", &c->eot, 0, rec.eot},     {"max_seq", &c->max_seq, 0, rec.max_seq},
	};
	for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
		const char *v = get(ctx, ints[i].key);
		long x;
		if (!v) {
			if (ints[i].required)
				return gpt_errf(e, "metadata key '%s' missing", ints[i].key);
			*ints[i].dst = ints[i].def;
			continue;
		}
		if (parse_long(v, 0, 1L << 30, &x))
			return gpt_errf(e, "metadata '%s': bad integer '%s'", ints[i].key, v);
		*ints[i].dst = (int)x;
	}
	struct {
		const char *key;
		float *dst;
		float def;
	} flts[] = {
		{"softcap", &c->softcap, rec.softcap},
		{"norm_eps", &c->norm_eps, rec.norm_eps},
		{"rope_min_freq", &c->rope_min_freq, rec.rope_min_freq},
	};
	for (size_t i = 0; i < sizeof flts / sizeof *flts; i++) {
		const char *v = get(ctx, flts[i].key);
		double x;
		if (!v) {
			*flts[i].dst = flts[i].def;
			continue;
		}
		if (parse_double(v, &x))
			return gpt_errf(e, "metadata '%s': bad number '%s'", flts[i].key, v);
		*flts[i].dst = (float)x;
	}
	c->head_dim = c->heads ? c->dim / c->heads : 0;
	if (c->rope_freqs < 0)
		c->rope_freqs = c->head_dim / 4;
	const char *na = get(ctx, "no_attention");
	if (na && parse_layer_list(na, &c->no_attn))
		return gpt_errf(e, "metadata 'no_attention': bad layer list '%s'", na);
	return gpt_config_check(c, e);
}

/* ------------------------------------------------------------------------
 * Parameter table
 */
static void add(struct gpt_table *t, int cap, enum gpt_kind kind, enum gpt_group g, enum gpt_dtype dt,
                int layer, int ndim, int64_t d0, int64_t d1, const char *fmt, int idx)
{
	if (t->n >= cap)
		die(EXIT_RUNTIME, "internal error: parameter table overflow");
	struct gpt_param *p = &t->p[t->n++];
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, fmt, idx);
	p->kind = kind;
	p->group = g;
	p->dtype = dt;
	p->layer = layer;
	p->ndim = ndim;
	p->shape[0] = d0;
	p->shape[1] = ndim == 2 ? d1 : 1;
	p->numel = (size_t)d0 * (size_t)p->shape[1];
	p->offset = t->total;
	t->total += p->numel;
}

void gpt_table_build(const struct gpt_config *c, struct gpt_table *t)
{
	int cap = 4 + c->value_embeds + 8 * c->layers;
	t->p = xcalloc((size_t)cap, sizeof *t->p);
	t->n = 0;
	t->total = 0;
	int64_t V = c->vocab, D = c->dim, H = c->mlp_hidden;
	add(t, cap, GPT_P_SKIP, GPT_GROUP_SCALAR, GPT_F32, -1, 1, c->layers / 2, 0, "skip_weights", 0);
	add(t, cap, GPT_P_EMBED, GPT_GROUP_EMBED, GPT_BF16, -1, 2, V, D, "embed.weight", 0);
	for (int i = 0; i < c->layers; i++) {
		add(t, cap, GPT_P_LAMBDAS, GPT_GROUP_SCALAR, GPT_F32, i, 1, 2, 0, "blocks.%d.lambdas", i);
		if (gpt_layer_attn(c, i)) {
			add(t, cap, GPT_P_ATTN_LAMBDAS, GPT_GROUP_SCALAR, GPT_F32, i, 1, 2, 0,
			    "blocks.%d.attn.lambdas", i);
			add(t, cap, GPT_P_Q, GPT_GROUP_MUON, GPT_F32, i, 2, D, D, "blocks.%d.attn.c_q.weight", i);
			add(t, cap, GPT_P_K, GPT_GROUP_MUON, GPT_F32, i, 2, D, D, "blocks.%d.attn.c_k.weight", i);
			add(t, cap, GPT_P_V, GPT_GROUP_MUON, GPT_F32, i, 2, D, D, "blocks.%d.attn.c_v.weight", i);
			add(t, cap, GPT_P_ATTN_PROJ, GPT_GROUP_MUON, GPT_F32, i, 2, D, D,
			    "blocks.%d.attn.c_proj.weight", i);
		}
		add(t, cap, GPT_P_FC, GPT_GROUP_MUON, GPT_F32, i, 2, H, D, "blocks.%d.mlp.c_fc.weight", i);
		add(t, cap, GPT_P_MLP_PROJ, GPT_GROUP_MUON, GPT_F32, i, 2, D, H,
		    "blocks.%d.mlp.c_proj.weight", i);
	}
	for (int j = 0; j < c->value_embeds; j++)
		add(t, cap, GPT_P_VALUE_EMBED, GPT_GROUP_EMBED, GPT_BF16, j, 2, V, D,
		    "value_embeds.embed.%d.weight", j);
	add(t, cap, GPT_P_HEAD, GPT_GROUP_HEAD, GPT_F32, -1, 2, V, D, "lm_head.weight", 0);
}

void gpt_table_free(struct gpt_table *t)
{
	free(t->p);
	memset(t, 0, sizeof *t);
}

int gpt_table_find(const struct gpt_table *t, const char *name)
{
	for (int i = 0; i < t->n; i++)
		if (!strcmp(t->p[i].name, name))
			return i;
	return -1;
}

void gpt_ptrs_bind(const struct gpt_config *c, const struct gpt_table *t, float *base,
                   struct gpt_ptrs *o)
{
	memset(o, 0, sizeof *o);
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		float *x = base + p->offset;
		struct gpt_layer_ptrs *l = p->layer >= 0 && p->layer < GPT_MAX_LAYERS ? &o->l[p->layer] : NULL;
		switch (p->kind) {
		case GPT_P_SKIP: o->skip = x; break;
		case GPT_P_EMBED: o->embed = x; break;
		case GPT_P_HEAD: o->head = x; break;
		case GPT_P_VALUE_EMBED: o->ve[p->layer] = x; break;
		case GPT_P_LAMBDAS: l->lambdas = x; break;
		case GPT_P_ATTN_LAMBDAS: l->attn_lambdas = x; break;
		case GPT_P_Q: l->q = x; break;
		case GPT_P_K: l->k = x; break;
		case GPT_P_V: l->v = x; break;
		case GPT_P_ATTN_PROJ: l->attn_proj = x; break;
		case GPT_P_FC: l->fc = x; break;
		case GPT_P_MLP_PROJ: l->mlp_proj = x; break;
		}
	}
	(void)c;
}

double gpt_flops_per_token(const struct gpt_config *c, int window)
{
	const double D = c->dim, F = c->mlp_hidden, V = c->vocab;
	int A = 0;
	for (int l = 0; l < c->layers; l++)
		A += gpt_layer_attn(c, l);
	const double N = A * 4.0 * D * D + c->layers * 2.0 * D * F + D * V;
	const double L = 128.0 * (window > 1 ? window - 1 : 0) + 64.5;
	return 6.0 * N + 3.0 * A * 4.0 * D * L;
}

double gpt_peak_tflops(void)
{
	const char *s = getenv("GPT_PEAK_TFLOPS");
	double v = s ? strtod(s, NULL) : 0;
	return v > 0 ? v : 989.4;
}
