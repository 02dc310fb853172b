/*
 * optim.h - the record's optimizers on the CPU: Adam and Muon (spec 8.2, 8.3).
 *
 * Implements:
 *   - adam_update(): PyTorch's fused CUDA Adam (torch.optim.Adam, fused=True)
 *     on one array, in the kernel's order of operations and precisions;
 *   - Muon on one matrix: muon_momentum() (momentum lerp + Nesterov lerp),
 *     newton_schulz5() (the quintic orthogonalisation, fp32 or with every
 *     intermediate rounded to bf16 as the record's GPU does), muon_apply()
 *     (p += -lr * sqrt(max(1, rows/cols)) * u) and muon_update() (all three);
 *   - struct optim: both optimizers over one flat parameter buffer laid out
 *     by a gpt_table (Adam for GPT_GROUP_EMBED/HEAD/SCALAR, Muon for
 *     GPT_GROUP_MUON), with its state as named flat buffers plus a step
 *     count, so that a trainer can checkpoint and restore it bit-exactly;
 *   - struct muon_plan: the record's assignment of Muon matrices to P ranks
 *     and the order of its all_gather rounds (pure arithmetic).
 *
 * Adam, exactly as PyTorch's fused kernel (aten/src/ATen/native/cuda/
 * fused_adam_utils.cuh, the version with FusedAdamMathFunctor computing the
 * bias corrections in double, 2024-2025) evaluates it; opmath is fp32 and the
 * hyper-parameters are doubles, so mixed expressions are evaluated in double
 * and rounded to fp32 on assignment:
 *     bc1   = f32(1 - beta1^n)                       (double pow, n >= 1)
 *     bc2s  = f32(sqrt(1 - beta2^n))                 (double sqrt)
 *     m     = f32(beta1*m + (1-beta1)*g)             (double)
 *     v     = f32(beta2*v + ((1-beta2)*g)*g)         (double)
 *     step  = f32(lr / bc1)                          (double)
 *     denom = f32(f32(sqrtf(v) / bc2s) + eps)        (sqrt, / in fp32; + in double)
 *     p     = p - (step * m) / denom                 (fp32)
 * With bf16 tensors (the record's four embedding tables) p, g, m and v are
 * loaded from bf16 and p, m, v stored back rounded to bf16 (nearest even).
 *
 * Muon, per matrix of shape rows x cols (PyTorch ops on fp32 tensors):
 *     buf = lerp(buf, g, f32(1 - mu))                (torch.lerp_)
 *     g'  = lerp(g, buf, f32(mu))                    (Nesterov via lerp_)
 *     u   = NS5(g')
 *     p   = p + f32(-lr * sqrt(max(1, rows/cols))) * u
 * where lerp(s, e, w) = |w| < 0.5 ? s + w*(e - s) : e - (e - s)*(1 - w) in
 * fp32 (PyTorch's Lerp.h; both forms are used: 1-mu < 0.5 <= mu).
 *
 * NS5 (spec 8.3), (a, b, c) = (3.4445, -4.7750, 2.0315) as fp32 constants:
 *     X = G, transposed if rows > cols (work on the wide orientation, m <= n)
 *     X = X / (||X||_F + 1e-7)
 *     repeat steps times:  A = X X^T;  B = b*A + (c*A) A;  X = a*X + B X
 *     transpose back.
 * fp32 mode: every op in fp32 (products by lib/matmul.h, fp32 accumulation
 * in a fixed order); ||X||_F is summed in double in fixed blocks.
 * bf16 mode, our model of the record's torch.compile'd NS5 (every tensor a
 * kernel writes is bf16; bit-exact agreement with the record is not
 * claimed, spec 9): X0 = bf16(G); nrm = bf16(||X0||_F); X = bf16(X0 / (nrm + 1e-7));
 * per step A = bf16(X X^T), cA = bf16(c*A), AA = bf16(cA A),
 * B = bf16(b*A + AA), BX = bf16(B X), X = bf16(a*X + BX), where the
 * elementwise expressions are evaluated in fp32 and rounded once (fused by
 * torch.compile) and each product has fp32 accumulation and one rounding
 * (cuBLAS). The result is bf16-representable.
 *
 * The CPU builds use no fused multiply-add (gcc -std=c11 turns contraction
 * off; baseline x86-64 has none); a GPU port that lets nvcc contract
 * a + w*b into fma() differs from these references by an fp32 ulp.
 *
 * Every elementwise loop is split with parallel_for; reductions use fixed
 * blocks summed in order and the products are those of lib/matmul.h, so all
 * results are bitwise independent of the thread count.
 */
#ifndef GPT_OPTIM_H
#define GPT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

/* The record's hyper-parameters (spec 8.2, 8.3). Learning rates come from
 * the schedule stream: base x f(s). */
#define ADAM_BETA1 0.8
#define ADAM_BETA2 0.95
#define ADAM_EPS 1e-8
#define ADAM_LR_EMBED 0.6
#define ADAM_LR_HEAD 0.008
#define ADAM_LR_SCALAR 0.04
#define MUON_LR 0.05
#define MUON_NS_STEPS 5
#define MUON_NS_A 3.4445f
#define MUON_NS_B (-4.7750f)
#define MUON_NS_C 2.0315f
#define MUON_NS_EPS 1e-7f

/* ------------------------------------------------------------------------
 * Adam on one array
 */
struct adam_hyper {
	double lr;             /* absolute learning rate of this step */
	double beta1, beta2;   /* record: 0.8, 0.95 */
	double eps;            /* record: 1e-8 */
	int64_t step;          /* n >= 1: this update's bias-correction step */
	int bf16;              /* 1: the tensors are bf16 (round p, g, m, v) */
};
/* p[n] -= Adam step for gradient g[n]; m[n], v[n] are the moment buffers
 * (zero before the first step). Updates p, m, v in place. */
void adam_update(float *p, const float *g, float *m, float *v, size_t n, const struct adam_hyper *h);

/* ------------------------------------------------------------------------
 * Muon on one matrix (row-major rows x cols)
 */
/* Momentum: buf[n] = lerp(buf, g, 1-mu); out[n] = lerp(g, buf, mu), the
 * Nesterov gradient that NS5 orthogonalises. out may equal g. */
void muon_momentum(float *buf, float *out, const float *g, size_t n, double mu);
/* sqrt(max(1, rows/cols)): 2.0 for the record's c_fc (3072 x 768), else 1. */
double muon_scale(int rows, int cols);
/* out[rows x cols] = NS5(G) with `steps` iterations; bf16 = 1 rounds every
 * intermediate to bf16 (see above). out may equal G. NS5(0) = 0. */
void newton_schulz5(float *out, const float *G, int rows, int cols, int steps, int bf16);
/* p += f32(-lr * muon_scale(rows, cols)) * u, in fp32. */
void muon_apply(float *p, const float *u, int rows, int cols, double lr);
/* One whole Muon step of one matrix (owner side and apply side together):
 * momentum, NS5 (MUON_NS_STEPS), apply. Updates p and buf. */
void muon_update(float *p, const float *g, float *buf, int rows, int cols, double lr, double mu,
                 int bf16);

/* ------------------------------------------------------------------------
 * Both optimizers over a flat parameter buffer
 */
enum {
	OPTIM_NS_BF16 = 1,   /* NS5 with bf16 intermediates (the record's GPU) */
	OPTIM_ADAM_BF16 = 2, /* Adam on tensors whose table dtype is bf16 keeps
	                        them and their m, v in bf16 (spec 8.2, 9) */
	OPTIM_RECORD_PRECISION = OPTIM_NS_BF16 | OPTIM_ADAM_BF16,
};

/* State buffers, each one flat fp32 array: the slices of the parameters
 * that have that state, in table order, without gaps. With OPTIM_ADAM_BF16
 * the slices of bf16 tensors hold bf16-representable values. */
enum optim_state {
	OPTIM_ADAM_M,        /* "optim.adam_m": Adam first moments */
	OPTIM_ADAM_V,        /* "optim.adam_v": Adam second moments */
	OPTIM_MUON_MOMENTUM, /* "optim.muon_momentum": Muon momentum buffers */
	OPTIM_NSTATE
};
struct optim_buffer {
	const char *name;
	float *data;  /* writable: a restore writes here */
	size_t numel;
};

struct optim;

/* Adam for every parameter of the Adam groups, Muon for GPT_GROUP_MUON;
 * all state zero, step count 0. t must be the table gpt_table_build(c)
 * gives (checked, tensor by tensor); it is copied. flags: OPTIM_* (0: all
 * fp32). Errors: invalid config, mismatched table, unknown flags. */
struct optim *optim_create(const struct gpt_config *c, const struct gpt_table *t, int flags,
                           struct gpt_err *e);
void optim_free(struct optim *o);
int optim_flags(const struct optim *o);

/* One step: lr[GPT_NGROUPS] absolute learning rates (indexed by enum
 * gpt_group), mu = Muon momentum. Adam's step count goes up by one first
 * (n = 1 on the first step, whatever the gradient). w (t->total floats)
 * is updated in place; g (t->total floats) is only read. Every Muon matrix
 * is orthogonalised here (world size 1). */
void optim_step(struct optim *o, float *w, const float *g, const double lr[GPT_NGROUPS], double mu);

/* Checkpoint state: three named buffers and the step count. Restoring the
 * buffers' contents and the step count into a fresh optim (same config,
 * table and flags) continues bit-identically. */
struct optim_buffer optim_buffer(struct optim *o, enum optim_state which);
/* Parameter i's slice of a state buffer, or NULL if it has no such state. */
float *optim_param_state(struct optim *o, int i, enum optim_state which);
int64_t optim_steps(const struct optim *o);
int optim_set_steps(struct optim *o, int64_t steps, struct gpt_err *e);
/* All state to zero, step count 0. */
void optim_reset(struct optim *o);

/* ------------------------------------------------------------------------
 * Muon owner assignment (spec 8.3): the Muon matrices grouped by numel
 * (groups in order of first appearance in the table: for the record,
 * 589,824 = the 44 attention matrices, then 2,359,296 = the 24 MLP
 * matrices), each group in model order. For base = 0, P, 2P, ... a round
 * gathers one update per rank; rank r orthogonalises params[base + r] when
 * base + r < n, and everyone applies the first min(P, n - base) buffers.
 */
struct muon_group {
	size_t numel;
	int n;         /* matrices in the group */
	int *params;   /* [n] table indices, model order */
};
struct muon_round {
	int group;     /* index into plan->groups */
	int base;      /* index in the group of this round's first matrix */
	int count;     /* matrices gathered and applied: min(P, n - base) */
	int owned;     /* table index this rank orthogonalises, or -1 */
};
struct muon_plan {
	int world, rank;
	int ngroups;
	struct muon_group *groups;
	int nrounds;
	struct muon_round *rounds;  /* [nrounds] in execution order */
	int nowned;
	int *owned;                 /* [nowned] table indices, execution order */
};
int muon_plan_build(const struct gpt_table *t, int world, int rank, struct muon_plan *plan,
                    struct gpt_err *e);
void muon_plan_free(struct muon_plan *plan);
/* Rank that orthogonalises table index i, or -1 if i is not a Muon matrix. */
int muon_plan_owner(const struct muon_plan *plan, int i);

#endif
