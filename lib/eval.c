/*
 * eval.c - gpt-eval's work. See eval.h.
 */
#include "eval.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "loader.h"
#include "safetensors.h"
#include "shard.h"
#include "weights.h"

#define RECORD_VAL_TOKENS 10485760

static void load_weights(const struct eval_opts *o, struct gpt_config *cfg, float **w)
{
	struct gpt_err e = {{0}};
	if (weights_load(o->weights, NULL, cfg, w, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
}

/* An engine for sequences of at most max_T tokens; frees w. */
static struct engine *make_engine(const struct eval_opts *o, const struct gpt_config *cfg, float *w,
                                  int max_T, int train)
{
	struct gpt_err e = {{0}};
	if (max_T > cfg->max_seq)
		die(EXIT_USAGE, "sequence length %d exceeds the model's max_seq %d", max_T, cfg->max_seq);
	struct engine *en = engine_create(o->device, cfg, w, max_T, train, &e);
	if (!en)
		die(EXIT_RUNTIME, "%s", e.msg);
	free(w);
	return en;
}

/* Write the gradient of one sequence: tensors under their state-dict names,
 * the loss in the metadata (tools/compare_grads.py reads it). */
static void write_grad(const char *path, struct engine *en, const uint32_t *p, int T, int window)
{
	struct gpt_err e = {{0}};
	double loss;
	en->ops->zero_grad(en);
	if (en->ops->micro(en, p, p + 1, T, window, 1, &loss, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	const struct gpt_table *t = &en->table;
	float *g = xmalloc_aligned(64, sizeof(float) * t->total);
	if (en->ops->grad_get(en, g, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	struct st_entry *ent = xcalloc((size_t)t->n, sizeof *ent);
	for (int i = 0; i < t->n; i++) {
		ent[i].name = t->p[i].name;
		ent[i].dtype = ST_F32;
		ent[i].ndim = t->p[i].ndim;
		ent[i].shape = t->p[i].shape;
		ent[i].data = g + t->p[i].offset;
	}
	char ls[40], ts[24], ws[24];
	snprintf(ls, sizeof ls, "%.17g", loss);
	snprintf(ts, sizeof ts, "%d", T);
	snprintf(ws, sizeof ws, "%d", window);
	const char *meta[] = {"loss", ls, "tokens", ts, "window", ws};
	if (st_write(path, 0, ent, t->n, meta, 3, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	free(ent);
	free(g);
}

int eval_loss(const struct eval_opts *o)
{
	struct gpt_err e = {{0}};
	struct gpt_config cfg;
	float *w;
	load_weights(o, &cfg, &w);
	/* the sequence length: 65536 unless the first shard is shorter */
	struct loader_opts lo = {.batch = 1, .world = 1, .rank = 0};
	struct loader *probe = loader_open(o->val, (size_t)o->nval, &lo, &e);
	if (!probe)
		die(EXIT_RUNTIME, "%s", e.msg);
	uint64_t len0 = loader_file_tokens(probe, 0);
	char first[4096];
	snprintf(first, sizeof first, "%s", loader_path(probe, 0));
	loader_close(probe);
	int T = o->seq_len;
	if (!T) {
		T = 65536;
		if (len0 >= 2 && (uint64_t)T > len0 - 2)
			T = (int)((len0 - 2) / 128 * 128);
		if (T < 1)
			die(EXIT_RUNTIME, "%s: %" PRIu64 " tokens are too few to evaluate", first, len0);
	}
	if (len0 < (uint64_t)T + 2)
		die(EXIT_RUNTIME, "%s: %" PRIu64 " tokens: too few for one sequence of %d", first, len0, T);
	struct engine *en = make_engine(o, &cfg, w, T, o->grad_out != NULL);
	lo.batch = (size_t)T;
	lo.vocab = (uint32_t)cfg.vocab;
	struct loader *l = loader_open(o->val, (size_t)o->nval, &lo, &e);
	if (!l)
		die(EXIT_RUNTIME, "%s", e.msg);
	int64_t steps;
	if (o->tokens < 0) {
		int64_t avail = (int64_t)((len0 - 2) / (uint64_t)T), cap = RECORD_VAL_TOKENS / T;
		steps = avail < cap ? avail : (cap ? cap : 1);
	} else if ((steps = loader_val_steps(l, (uint64_t)o->tokens, &e)) < 0) {
		die(EXIT_RUNTIME, "%s", e.msg);
	}
	double t0 = now_seconds(), sum = 0;
	for (int64_t k = 0; k < steps; k++) {
		const uint32_t *p = loader_next(l, &e);
		if (!p)
			die(EXIT_RUNTIME, "%s", e.msg);
		if (k == 0 && o->grad_out)
			write_grad(o->grad_out, en, p, T, o->window);
		double loss;
		if (en->ops->micro(en, p, p + 1, T, o->window, 0, &loss, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		sum += loss;
		if (progress_enabled())
			fprintf(stderr, "\r\033[K%" PRId64 "/%" PRId64 " sequences  loss %.4f", k + 1, steps,
			        sum / (double)(k + 1));
	}
	if (progress_enabled())
		fputc('\n', stderr);
	double loss = sum / (double)steps;
	/* bits per byte from the first shard's text byte count, if it has one */
	struct shard_reader *sr = shard_open(first, &e);
	double bpb = NAN;
	if (sr) {
		const struct shard_info *si = shard_reader_info(sr);
		if (si->bytes > 0 && si->ntok > 0)
			bpb = loss / log(2.0) * (double)si->ntok / (double)si->bytes;
		shard_close(sr);
	}
	printf("{\"loss\":%.6f,\"tokens\":%" PRId64 ",\"sequences\":%" PRId64 ",\"seq_len\":%d,"
	       "\"window\":%d,\"bits_per_byte\":",
	       loss, steps * T, steps, T, o->window);
	if (isfinite(bpb))
		printf("%.6f", bpb);
	else
		printf("null");
	printf(",\"seconds\":%.3f,\"device\":\"%s\"}\n", now_seconds() - t0, en->ops->name);
	loader_close(l);
	engine_free(en);
	return 0;
}

/* ------------------------------------------------------------------------
 * Sampling
 */
static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct cand {
	float logit;
	uint32_t id;
};

static int cand_desc(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit < y->logit ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Pick the next token among the first n ids (the tokenizer's vocabulary). */
static uint32_t pick(const float *logits, uint32_t n, double temperature, int top_k, uint64_t *rng,
                     struct cand *c)
{
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (logits[i] > logits[best])
			best = i;
	if (temperature <= 0)
		return best;
	for (uint32_t i = 0; i < n; i++)
		c[i].logit = logits[i], c[i].id = i;
	uint32_t k = n;
	if (top_k > 0 && (uint32_t)top_k < n) {
		qsort(c, n, sizeof *c, cand_desc);
		k = (uint32_t)top_k;
	}
	double mx = logits[best], sum = 0;
	for (uint32_t i = 0; i < k; i++)
		sum += exp(((double)c[i].logit - mx) / temperature);
	double u = (double)(splitmix64(rng) >> 11) * 0x1p-53 * sum, acc = 0;
	for (uint32_t i = 0; i < k; i++) {
		acc += exp(((double)c[i].logit - mx) / temperature);
		if (u < acc)
			return c[i].id;
	}
	return c[k - 1].id;
}

int eval_sample(const struct eval_opts *o)
{
	struct gpt_err e = {{0}};
	struct bpe *tok = bpe_load(NULL, &e);
	if (!tok)
		die(EXIT_RUNTIME, "%s", e.msg);
	uint32_t *ids = NULL;
	size_t n = 0, cap = 0;
	const char *prompt = o->prompt ? o->prompt : "";
	bpe_encode(tok, prompt, strlen(prompt), &ids, &n, &cap, NULL);
	/* documents start with the end-of-text token, as in training */
	size_t total = n + 1 + (size_t)o->sample;
	uint32_t *ctx = xmalloc(sizeof *ctx * total);
	ctx[0] = bpe_eot(tok);
	memcpy(ctx + 1, ids, sizeof *ids * n);
	size_t len = n + 1;
	free(ids);
	struct gpt_config cfg;
	float *w;
	load_weights(o, &cfg, &w);
	int max_T = total < (size_t)cfg.max_seq ? (int)total : cfg.max_seq;
	if (len >= (size_t)max_T)
		die(EXIT_USAGE, "the prompt (%zu tokens) leaves no room in the model's %d positions", len,
		    cfg.max_seq);
	struct engine *en = make_engine(o, &cfg, w, max_T, 0);
	uint32_t nvocab = bpe_vocab_size(tok) < (uint32_t)cfg.vocab ? bpe_vocab_size(tok) : (uint32_t)cfg.vocab;
	float *logits = xmalloc(sizeof(float) * (size_t)cfg.vocab);
	struct cand *c = xmalloc(sizeof *c * nvocab);
	uint64_t rng = o->seed;
	fwrite(prompt, 1, strlen(prompt), stdout);
	fflush(stdout);
	for (int i = 0; i < o->sample && len < (size_t)max_T; i++) {
		if (en->ops->logits(en, ctx, (int)len, o->window, logits, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		uint32_t next = pick(logits, nvocab, o->temperature, o->top_k, &rng, c);
		ctx[len++] = next;
		size_t blen;
		const unsigned char *bytes = bpe_token(tok, next, &blen);
		fwrite(bytes, 1, blen, stdout);
		fflush(stdout);
	}
	putchar('\n');
	free(c);
	free(logits);
	free(ctx);
	engine_free(en);
	bpe_free(tok);
	return 0;
}
