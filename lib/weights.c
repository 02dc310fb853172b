/*
 * weights.c - model weights <-> safetensors. See weights.h.
 */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

#include "parallel.h"

/* ------------------------------------------------------------------------
 * Saving
 */
struct to_bf16 {
	const float *src;
	uint16_t *dst;
};

static void bf16_range(void *ctx, size_t b, size_t e, int tid)
{
	const struct to_bf16 *c = ctx;
	for (size_t i = b; i < e; i++)
		c->dst[i] = f32_to_bf16(c->src[i]);
}

int weights_save(const char *path, const struct gpt_config *c, const float *w, int flags,
                 const char *const *extra, int nextra, struct gpt_err *e)
{
	struct gpt_err ce;
	if (gpt_config_check(c, &ce))
		return gpt_errf(e, "%s: bad model configuration: %s", path, ce.msg);
	if (nextra < 0)
		return gpt_errf(e, "%s: negative metadata count", path);
	struct gpt_table t;
	gpt_table_build(c, &t);
	struct gpt_meta m;
	gpt_config_to_meta(c, &m);
	int nmeta = m.n + nextra;
	const char **meta = xmalloc((size_t)(2 * nmeta) * sizeof *meta);
	for (int i = 0; i < m.n; i++) {
		meta[2 * i] = m.key[i];
		meta[2 * i + 1] = m.val[i];
	}
	for (int i = 0; i < nextra; i++) {
		meta[2 * (m.n + i)] = extra[2 * i];
		meta[2 * (m.n + i) + 1] = extra[2 * i + 1];
	}
	struct st_entry *ent = xcalloc((size_t)t.n, sizeof *ent);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		ent[i].name = p->name;
		ent[i].dtype = p->dtype == GPT_BF16 && !(flags & WEIGHTS_F32) ? ST_BF16 : ST_F32;
		ent[i].ndim = p->ndim;
		ent[i].shape = p->shape;
	}
	struct st_writer wr;
	int stflags = (flags & WEIGHTS_FORCE ? ST_FORCE : 0) | (flags & WEIGHTS_ZSTD ? ST_ZSTD : 0);
	int rc = st_writer_begin(&wr, path, stflags, ent, t.n, meta, nmeta, e);
	if (rc == 0) {
		size_t cap = (size_t)1 << 22; /* bf16 conversion in 8 MB pieces */
		uint16_t *tmp = NULL;
		for (int i = 0; i < t.n; i++) {
			const struct gpt_param *p = &t.p[i];
			const float *src = w + p->offset;
			if (ent[i].dtype == ST_F32) {
				st_writer_put(&wr, src, p->numel * sizeof *src);
				continue;
			}
			if (!tmp)
				tmp = xmalloc(cap * sizeof *tmp);
			for (size_t b = 0; b < p->numel; b += cap) {
				size_t n = p->numel - b < cap ? p->numel - b : cap;
				struct to_bf16 cv = {src + b, tmp};
				parallel_for(n, bf16_range, &cv);
				st_writer_put(&wr, tmp, n * sizeof *tmp);
			}
		}
		free(tmp);
		rc = st_writer_end(&wr, e);
	}
	free(ent);
	free(meta);
	gpt_table_free(&t);
	return rc;
}

/* ------------------------------------------------------------------------
 * Loading
 */
const char *weights_strip_prefix(const char *name)
{
	for (;;) {
		if (!strncmp(name, "_orig_mod.", 10))
			name += 10;
		else if (!strncmp(name, "module.", 7))
			name += 7;
		else
			return name;
	}
}

static const char *meta_get(void *ctx, const char *key) { return st_meta(ctx, key); }

static const char *fname(const struct st_file *f)
{
	return f->path && strcmp(f->path, "-") ? f->path : "standard input";
}

int weights_from_st(const struct st_file *f, const struct gpt_config *dflt, struct gpt_config *c,
                    float **w, struct gpt_err *e)
{
	struct gpt_err ce;
	*w = NULL;
	if (st_meta(f, "format") || !dflt) {
		if (gpt_config_from_meta(c, meta_get, (void *)f, &ce))
			return gpt_errf(e, "%s: %s", fname(f), ce.msg);
	} else {
		*c = *dflt;
		if (gpt_config_check(c, &ce))
			return gpt_errf(e, "%s: bad model configuration: %s", fname(f), ce.msg);
	}
	struct gpt_table t;
	gpt_table_build(c, &t);
	int *src = xmalloc((size_t)t.n * sizeof *src); /* file tensor of each parameter */
	for (int i = 0; i < t.n; i++)
		src[i] = -1;
	int rc = -1;
	for (int k = 0; k < f->n; k++) {
		const char *name = weights_strip_prefix(f->t[k].name);
		/* a gpt-train checkpoint also holds the optimizer state */
		if (!strncmp(f->t[k].name, "optim.", 6) && st_meta(f, "checkpoint"))
			continue;
		int i = gpt_table_find(&t, name);
		if (i < 0) {
			gpt_errf(e, "%s: unexpected tensor '%.200s' (not a parameter of this "
			         "configuration)", fname(f), f->t[k].name);
			goto out;
		}
		if (src[i] >= 0) {
			gpt_errf(e, "%s: parameter '%s' appears twice (as '%.150s' and '%.150s')",
			         fname(f), name, f->t[src[i]].name, f->t[k].name);
			goto out;
		}
		src[i] = k;
	}
	for (int i = 0; i < t.n; i++)
		if (src[i] < 0) {
			gpt_errf(e, "%s: tensor '%s' missing (%d of the configuration's %d parameters "
			         "present)", fname(f), t.p[i].name, f->n, t.n);
			goto out;
		}
	*w = xmalloc_aligned(64, (t.total ? t.total : 1) * sizeof **w);
	for (int i = 0; i < t.n; i++) {
		const struct gpt_param *p = &t.p[i];
		if (st_read_f32(f, &f->t[src[i]], p->ndim, p->shape, *w + p->offset, e))
			goto out;
	}
	rc = 0;
out:
	if (rc) {
		free(*w);
		*w = NULL;
	}
	free(src);
	gpt_table_free(&t);
	return rc;
}

int weights_load(const char *path, const struct gpt_config *dflt, struct gpt_config *c, float **w,
                 struct gpt_err *e)
{
	struct st_file f;
	*w = NULL;
	if (st_load(path, &f, e))
		return -1;
	int rc = weights_from_st(&f, dflt, c, w, e);
	st_free(&f);
	return rc;
}
