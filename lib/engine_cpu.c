/*
 * engine_cpu.c - the CPU engine: the fp32 reference model (lib/model.h) and
 * the CPU optimizers (lib/optim.h) behind struct engine. See engine.h.
 *
 * Over ranks (engine_create_dist with a world > 1): MICRO_GRAD_LAST ends
 * with the gradient accumulator averaged over the ranks
 * (dist_allreduce_f32_mean: the same bits on every rank), and the
 * allreduce op is dist_allreduce_f64. Every rank then runs the whole
 * optimizer on the same gradients, so the weights stay identical.
 */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "engine.h"
#include "model.h"
#include "optim.h"
#include "parallel.h"

struct cpu_engine {
	struct engine en;
	struct cpu_model *model;
	struct optim *opt; /* NULL for evaluation */
	float *w, *g;
	uint64_t bytes;
};

#define CE(en) ((struct cpu_engine *)(en))

static int cpu_micro(struct engine *en, const uint32_t *in, const uint32_t *tgt, int T, int window,
                     int grad, double *loss, struct gpt_err *e)
{
	struct cpu_engine *c = CE(en);
	if (grad && !c->g)
		return gpt_errf(e, "engine created for evaluation only");
	if (cpu_model_step(c->model, c->w, in, tgt, T, window, grad ? c->g : NULL, loss, e))
		return -1;
	if (grad == MICRO_GRAD_LAST && dist_world(en->dist) > 1)
		return dist_allreduce_f32_mean(en->dist, c->g, en->table.total, e);
	return 0;
}

static int cpu_logits(struct engine *en, const uint32_t *in, int T, int window, float *out,
                      struct gpt_err *e)
{
	return cpu_model_logits(CE(en)->model, CE(en)->w, in, T, window, out, e);
}

static void cpu_zero_grad(struct engine *en)
{
	struct cpu_engine *c = CE(en);
	if (c->g)
		memset(c->g, 0, sizeof(float) * en->table.total);
}

static int cpu_update(struct engine *en, const double lr[GPT_NGROUPS], double mu, struct gpt_err *e)
{
	struct cpu_engine *c = CE(en);
	if (!c->opt)
		return gpt_errf(e, "engine created for evaluation only");
	optim_step(c->opt, c->w, c->g, lr, mu);
	return 0;
}

static int cpu_nstate(struct engine *en) { return CE(en)->opt ? 1 + OPTIM_NSTATE : 1; }

static const char *cpu_state_name(struct engine *en, int i)
{
	return i == 0 ? "params" : optim_buffer(CE(en)->opt, (enum optim_state)(i - 1)).name;
}

static size_t cpu_state_numel(struct engine *en, int i)
{
	return i == 0 ? en->table.total : optim_buffer(CE(en)->opt, (enum optim_state)(i - 1)).numel;
}

static int cpu_state_get(struct engine *en, int i, float *dst, struct gpt_err *e)
{
	size_t n = cpu_state_numel(en, i);
	const float *src = i == 0 ? CE(en)->w : optim_buffer(CE(en)->opt, (enum optim_state)(i - 1)).data;
	memcpy(dst, src, sizeof(float) * n);
	return 0;
}

static int cpu_state_set(struct engine *en, int i, const float *src, struct gpt_err *e)
{
	size_t n = cpu_state_numel(en, i);
	float *dst = i == 0 ? CE(en)->w : optim_buffer(CE(en)->opt, (enum optim_state)(i - 1)).data;
	memcpy(dst, src, sizeof(float) * n);
	return 0;
}

static int cpu_grad_get(struct engine *en, float *dst, struct gpt_err *e)
{
	if (!CE(en)->g)
		return gpt_errf(e, "engine created for evaluation only");
	memcpy(dst, CE(en)->g, sizeof(float) * en->table.total);
	return 0;
}

static int64_t cpu_steps(struct engine *en) { return CE(en)->opt ? optim_steps(CE(en)->opt) : 0; }

static int cpu_set_steps(struct engine *en, int64_t s, struct gpt_err *e)
{
	if (!CE(en)->opt)
		return gpt_errf(e, "engine created for evaluation only");
	return optim_set_steps(CE(en)->opt, s, e);
}

static int cpu_allreduce(struct engine *en, double *v, int n, struct gpt_err *e)
{
	if (n < 0)
		return gpt_errf(e, "allreduce of %d numbers", n);
	return dist_allreduce_f64(en->dist, v, (size_t)n, e);
}

static uint64_t cpu_peak(struct engine *en) { return CE(en)->bytes; }

static void cpu_free(struct engine *en)
{
	struct cpu_engine *c = CE(en);
	cpu_model_free(c->model);
	if (c->opt)
		optim_free(c->opt);
	free(c->w);
	free(c->g);
	gpt_table_free(&en->table);
	free(c);
}

static const struct engine_ops cpu_ops = {
	.name = "cpu",
	.micro = cpu_micro,
	.logits = cpu_logits,
	.zero_grad = cpu_zero_grad,
	.update = cpu_update,
	.nstate = cpu_nstate,
	.state_name = cpu_state_name,
	.state_numel = cpu_state_numel,
	.state_get = cpu_state_get,
	.state_set = cpu_state_set,
	.grad_get = cpu_grad_get,
	.steps = cpu_steps,
	.set_steps = cpu_set_steps,
	.allreduce = cpu_allreduce,
	.peak_bytes = cpu_peak,
	.free = cpu_free,
};

struct engine *engine_cpu_create(const struct gpt_config *cfg, const float *w, int max_T, int train,
                                 struct gpt_err *e)
{
	struct cpu_engine *c = xcalloc(1, sizeof *c);
	c->en.ops = &cpu_ops;
	c->en.cfg = *cfg;
	c->en.max_T = max_T;
	gpt_table_build(cfg, &c->en.table);
	size_t n = c->en.table.total;
	c->model = cpu_model_create(cfg, max_T, e);
	if (!c->model)
		goto fail;
	c->w = xmalloc_aligned(64, sizeof(float) * n);
	memcpy(c->w, w, sizeof(float) * n);
	c->bytes = sizeof(float) * n;
	if (train) {
		c->g = xmalloc_aligned(64, sizeof(float) * n);
		memset(c->g, 0, sizeof(float) * n);
		c->opt = optim_create(cfg, &c->en.table, 0, e);
		if (!c->opt)
			goto fail;
		c->bytes += sizeof(float) * n;
		for (int i = 0; i < OPTIM_NSTATE; i++)
			c->bytes += sizeof(float) * optim_buffer(c->opt, (enum optim_state)i).numel;
	}
	return &c->en;
fail:
	if (c->model)
		cpu_model_free(c->model);
	free(c->w);
	free(c->g);
	gpt_table_free(&c->en.table);
	free(c);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Selection
 */
#ifndef GPT_CUDA
int engine_cuda_available(void) { return 0; }
#endif

int engine_parse_device(const char *s, enum engine_device *out)
{
	if (!strcmp(s, "auto"))
		*out = ENGINE_AUTO;
	else if (!strcmp(s, "cpu"))
		*out = ENGINE_CPU;
	else if (!strcmp(s, "cuda"))
		*out = ENGINE_CUDA;
	else
		return -1;
	return 0;
}

void engine_cli_device(const struct cli_text *t, const char *arg, enum engine_device *out)
{
	if (engine_parse_device(arg, out))
		cli_usage_error(t, "--device: '%s' is not cpu, cuda or auto", arg);
}

void engine_cli_threads(const struct cli_text *t, const char *arg)
{
	long v;
	if (parse_long(arg, 1, 256, &v))
		cli_usage_error(t, "--threads: '%s' is not a count (1..256)", arg);
	parallel_set_threads((int)v);
}

struct engine *engine_create(enum engine_device dev, const struct gpt_config *c, const float *w,
                             int max_T, int train, struct gpt_err *e)
{
	return engine_create_dist(dev, c, w, max_T, train, NULL, e);
}

struct engine *engine_create_dist(enum engine_device dev, const struct gpt_config *c,
                                  const float *w, int max_T, int train, struct dist *d,
                                  struct gpt_err *e)
{
	/* auto: the GPU when this build has CUDA and a device is present
	 * (the CUDA engine matches the CPU engine to bf16 noise: tests/gpu/gpu_engine.c) */
	if (dev == ENGINE_AUTO && engine_cuda_available())
		dev = ENGINE_CUDA;
	if (dev == ENGINE_CUDA) {
#ifdef GPT_CUDA
		return engine_cuda_create_dist(c, w, max_T, train, d, e);
#else
		return gpt_errf(e, "this build has no CUDA backend (rebuild with nvcc, or use --device cpu)"),
		       NULL;
#endif
	}
	struct engine *en = engine_cpu_create(c, w, max_T, train, e);
	if (en)
		en->dist = dist_world(d) > 1 ? d : NULL;
	return en;
}

void engine_free(struct engine *en)
{
	if (en)
		en->ops->free(en);
}
