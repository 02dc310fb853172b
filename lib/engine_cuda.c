/*
 * engine_cuda.c - the CUDA engine: the record's model (spec 4, 5, 9) and its
 * optimizers (spec 8) on one GPU, behind struct engine (engine.h), built
 * from the launchers of kernels/ (see kernels/README.md). Compiled to
 * nothing without GPT_CUDA.
 *
 * Sections: device memory and layout; forward; head and backward; micro
 * and logits; the optimizer step; state, gradients, create and free.
 *
 * Device layout of the parameters. Every per-parameter device buffer (fp32
 * master weights w32, their bf16 copy w16 that the forward reads, the fp32
 * gradient g32) uses the same "padded table layout": the tensors of the
 * gpt_table in table order, each starting at a multiple of 64 elements
 * (the kernels need 16-byte aligned rows; the table's own offsets are not
 * aligned: skip_weights has L/2 numbers). state_get/state_set/grad_get copy
 * tensor by tensor between that layout and the host's gpt_table layout.
 * Embedding tables (dtype bf16, spec 9) keep bf16-representable values in
 * w32: Adam runs on their bf16 copy (adam_update_gpu_bf16_gf32: bf16 p, m,
 * v, fp32 gradient rounded on load = lib/optim.c with OPTIM_ADAM_BF16) and
 * w32 is refreshed from it. Adam state: fp32 m/v for fp32 tensors, bf16 m/v
 * for bf16 tensors (each in its own padded layout); Muon momentum fp32.
 * The checkpoint buffers ("optim.adam_m", "optim.adam_v",
 * "optim.muon_momentum") have lib/optim.c's layout (the slices of the
 * parameters with that state, table order, no gaps), so CPU and GPU
 * checkpoints are interchangeable.
 *
 * Micro-batches: the GPU attention works on multiples of 128 tokens, so T
 * is padded to Tp = roundup(T, 128) with token 0. Padded positions come
 * after every real one, so causal attention never lets a real token see
 * them, the head only reads the T real rows, and their gradients are exact
 * zeros (dL/d(padded rows) = 0): the result is that of T tokens.
 *
 * Activations kept for the backward (bf16 unless noted; T = Tp of max_T,
 * D = dim, F = mlp_hidden, H = heads), per layer:
 *   res_in [T,D]  the layer input after the U-net skip add (layer 0: x0);
 *   rmid   [T,D]  the MLP input (after attention); rstd2 fp32 [T];
 *   u      [T,F]  the MLP pre-activation;
 *   with attention: q, k, v [T,D] (h W^T, before QK-norm / value mix),
 *                   qs, ks fp32 [T,H] (QK-norm scales), y [T,D] (attention
 *                   output), lse fp32 [H,T], rstd1 fp32 [T].
 * Training also keeps, per layer, h2 [T,D] (the MLP's norm output), act
 * [T,F] (relu^2 of u) and with attention xm, h [T,D] (attention's norm
 * input, the lambda mix, and its output) and qr, kr, vm [T,D] (rotated q,
 * k; mixed v): 2 T (L (D + F) + 5 A D) bytes more (11.6 GB for the record
 * at T = 65536; xm and h are 2.2 GB of it), which spares the backward
 * recomputing them (GPT_CUDA_RECOMPUTE=1 recomputes them instead, as
 * evaluation always does: same kernels, same bits): the lambda mix and
 * the norms' outputs, relu^2, the value mix, QK-norm + rotary.
 * Shared: x0, xf (final residual), hf (final norm), the last encoder
 * output, the value-embedding lookups (one [T,D] per table); work buffers
 * xm, h, tmp, qr, kr, vm, dx, dh, dy, dq, dk, dv [T,D], big, du [T,F], dx0
 * fp32 [T,D]. Total 2 T (L (2 D + F) + A (4 D) + (17 + NV) D + 2 F)
 * bytes + 4 T D + small, A = layers with attention; plus the head's logits
 * chunk (head_loss_bytes), the GEMM workspace, the embedding plan, the
 * attention mask, the Muon workspaces (muon_ws_bytes). The U-net skips need
 * no buffers of their own: encoder layer i's output is res_in[i+1] (the
 * last encoder's has one buffer), and the gradient flowing back through
 * decoder layer l's skip is stored over res_in[l], dead by then.
 *
 * Fused passes (kernels/resnorm.cuh, the bits of the unfused launchers):
 * the forward computes a layer's output sum rmid + MLP together with the
 * next layer's U-net skip add, lambda mix and first norm (block_in), and
 * attention's residual add together with the MLP's norm; the backward
 * computes a layer's first norm's backward together with the lambda mix's,
 * the U-net skip's and the add of the skip gradient into the previous
 * (encoder) layer's output gradient (block_in_backward). The MLP's fc
 * product writes u and relu^2(u) in one kernel, and its proj dx product
 * applies relu^2's backward as it stores (kernels/mlp_gemm.cuh: Hopper
 * only, record-like shapes; about 0.8-0.85x the time of cuBLASLt plus
 * relu2.cu's passes, which run where the fused kernels cannot, or with
 * GPT_MLP_GEMM=0: the same bits up to the products' summation order).
 * The head's loss takes the Q path (kernels/head_loss.cuh: one row pass
 * writing the softmax gradient over the logits, about 21 ms a step less
 * than the two-pass row kernel that GPT_HEAD_LEGACY=1 keeps).
 *
 * One stream, one gemm_ctx; micro() synchronises once at its end to read
 * the loss (one float); update() and zero_grad() only queue work. Every
 * kernel sums in a fixed order: two runs give identical bits.
 */
#ifdef GPT_CUDA

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "dist.h"
#include "engine.h"
#include "model.h"
#include "optim.h"

#include "cuda_check.h"

#include "adam.cuh"
#include "attention.cuh"
#include "cast.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "head_loss.cuh"
#include "mix.cuh"
#include "mlp_gemm.cuh"
#include "muon.cuh"
#include "qk_rotary.cuh"
#include "relu2.cuh"
#include "resnorm.cuh"
#include "rmsnorm.cuh"

#define PAD_ELEMS 64 /* padded table layout: tensors start at multiples of 64 elements */
#define MAX_ALLOCS 512
#define MAX_MUON_SHAPES 8

struct gpu_layer {
	/* parameter indices (table), -1 if absent */
	int lam, alam, q, k, v, o, fc, proj, ve;
	/* activations */
	uint16_t *res_in, *rmid, *u, *aq, *ak, *av, *y;
	/* kept when training so the backward need not recompute them: the
	 * MLP's norm output and relu^2; attention's norm input and output,
	 * rotated q, k and mixed v */
	uint16_t *h2, *act, *xm, *h, *qr, *kr, *vm;
	float *rstd1, *rstd2, *qs, *ks, *lse;
};

struct muon_shape {
	int rows, cols, n;
	int *params; /* table indices, model order */
	struct muon_ws *ws; /* shared by rows x cols and cols x rows */
};

struct cuda_engine {
	struct engine en;
	int train;
	int D, F, V, H, hd, L, NV, nf, Tmax; /* Tmax: max_T rounded up to 128 */
	float eps;
	int has_attn;
	int mlp_fused; /* the MLP's products with relu^2 fused (mlp_gemm.cuh) where they apply */
	/* layouts */
	size_t *doff;  /* [n] padded table layout */
	size_t dtotal;
	size_t *aoff;  /* [n] Adam state: offset in m32/v32 (fp32) or m16/v16 (bf16) */
	size_t *soff;  /* [n] offset in lib/optim.c's state buffer (Adam or Muon) */
	size_t *moff;  /* [n] Muon momentum offset */
	size_t a32n, a16n, momn, adam_numel, muon_numel;
	/* parameters */
	float *w32, *g32;
	uint16_t *w16;
	float *m32, *v32, *mom;
	uint16_t *m16, *v16;
	int64_t steps;
	int i_skip, i_embed, i_head, i_ve[8];
	struct gpu_layer lay[GPT_MAX_LAYERS];
	int nshapes;
	struct muon_shape shapes[MAX_MUON_SHAPES];
	/* resources */
	cudaStream_t s;
	struct gemm_ctx *gm;
	struct head_loss *head;
	struct embedding_plan *plan;
	struct attn_mask mask;
	int mask_ok;
	float *cos_t, *sin_t;
	uint32_t *tok, *tgt, *h_tok, *h_tgt; /* device; pinned host staging */
	float *d_loss, *h_loss;
	uint16_t *x0, *xf, *hf, *skiplast, *ve_out[8];
	float *rstd0, *rstdf;
	uint16_t *xm, *h, *tmp, *qr, *kr, *vm, *dx, *dh, *dyb, *dq, *dk, *dv, *big, *du;
	float *dx0;
	void *mixwork;
	uint16_t *logit16;
	/* data parallel (world > 1, or GPT_CUDA_NCCL=1 with one rank): NCCL */
	int world, rank;
	struct dist *dist;
	ncclComm_t comm;
	cudaStream_t cs;          /* NCCL's stream */
	cudaEvent_t ev_s, ev_c;   /* main -> NCCL, NCCL -> main */
	int reducing;             /* the current micro-batch averages gradients */
	size_t blk_lo[GPT_MAX_LAYERS], blk_hi[GPT_MAX_LAYERS]; /* layer buckets (padded layout) */
	struct muon_plan mplan;
	uint16_t *mu_mine[MAX_MUON_SHAPES], *mu_all[MAX_MUON_SHAPES];
	int mu_nmax[MAX_MUON_SHAPES];
	double *d_red, *h_red;
	double timeout_s;
	/* GPT_CUDA_PROFILE: GPU time per kind of work, from events between marks */
	struct prof *prof;
	/* bookkeeping */
	void *allocs[MAX_ALLOCS];
	int nallocs;
	uint64_t bytes;       /* cudaMalloc'd by this file */
	size_t free0;         /* device memory free before create */
	uint64_t peak;        /* largest (free0 - free) seen */
	int measured;         /* peak measured after a micro-batch */
};

#define CU(en) ((struct cuda_engine *)(en))

/* ------------------------------------------------------------------------
 * Profile (GPT_CUDA_PROFILE=1 in the environment): prof_mark(c, K) records
 * an event on the stream; the GPU time until the next mark is counted as
 * work of kind K. Marks are read back at the synchronisation that ends a
 * micro-batch or an update; the table goes to stderr when the engine is
 * freed, per optimizer step. Idle time on the stream (the host late with
 * the next launch) counts towards the kind of the work that follows it;
 * "wall" is the wall time of micro(), update() and zero_grad() (which
 * synchronise when profiling): wall minus the GPU total is the time the
 * host kept the GPU waiting. The first optimizer step is left out when
 * there are others: it times the GEMM algorithms (gemm.cuh) and builds the
 * plans. Off, a mark costs one branch.
 */
enum prof_kind {
	PK_UPLOAD, PK_EMBED, PK_MASK, PK_GEMM_FWD, PK_GEMM_BWD, PK_ATTN_FWD, PK_ATTN_BWD, PK_NORM,
	PK_ELEM, PK_HEAD, PK_ADAM, PK_MUON, PK_CAST, PK_ZERO, PK_N
};
static const char *const prof_names[PK_N] = {
	"upload", "embedding", "attn mask", "gemm fwd", "gemm bwd", "attention fwd",
	"attention bwd", "norm/rotary", "elementwise", "head+loss", "adam", "muon", "cast", "zero grad",
};
#define PROF_MAX 4096
struct prof {
	cudaEvent_t ev[PROF_MAX];
	int kind[PROF_MAX];
	int n;
	double ms[PK_N], gpu_ms, wall_ms, t0;
	long steps, micros;
	int first_done; /* the first step's numbers moved aside (prof_step) */
	double first_ms[PK_N], first_gpu, first_wall;
	long first_micros;
};

static void prof_mark(struct cuda_engine *c, int kind)
{
	struct prof *p = c->prof;
	if (!p || p->n >= PROF_MAX)
		return;
	if (!p->ev[p->n])
		CUDA_CHECK(cudaEventCreate(&p->ev[p->n]));
	CUDA_CHECK(cudaEventRecord(p->ev[p->n], c->s));
	p->kind[p->n++] = kind;
}

static void prof_begin(struct cuda_engine *c)
{
	if (c->prof) {
		c->prof->n = 0;
		c->prof->t0 = now_seconds();
	}
}

/* after a stream synchronisation */
static void prof_collect(struct cuda_engine *c)
{
	struct prof *p = c->prof;
	if (!p)
		return;
	prof_mark(c, PK_N);
	CUDA_CHECK(cudaStreamSynchronize(c->s));
	for (int i = 0; i + 1 < p->n; i++) {
		float ms = 0;
		CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]));
		p->ms[p->kind[i]] += ms;
		p->gpu_ms += ms;
	}
	p->wall_ms += 1e3 * (now_seconds() - p->t0);
	p->n = 0;
}

/* An update ended: count the step; after the first, start over (its
 * numbers kept aside in case no other step comes). */
static void prof_step(struct cuda_engine *c)
{
	struct prof *p = c->prof;
	p->steps++;
	if (p->first_done)
		return;
	p->first_done = 1;
	memcpy(p->first_ms, p->ms, sizeof p->ms);
	p->first_gpu = p->gpu_ms, p->first_wall = p->wall_ms, p->first_micros = p->micros;
	memset(p->ms, 0, sizeof p->ms);
	p->gpu_ms = p->wall_ms = 0;
	p->steps = p->micros = 0;
}

static void prof_report(struct cuda_engine *c)
{
	struct prof *p = c->prof;
	if (!p)
		return;
	const char *which = "the first, which times the GEMM algorithms, left out";
	if (!p->steps && p->first_done) { /* one step only: report it */
		memcpy(p->ms, p->first_ms, sizeof p->ms);
		p->gpu_ms = p->first_gpu, p->wall_ms = p->first_wall;
		p->steps = 1, p->micros = p->first_micros;
		which = "the first only, GEMM algorithm timing included";
	}
	if (!p->steps)
		return;
	double k = 1.0 / (double)p->steps;
	fprintf(stderr, "%s: CUDA engine profile: %ld steps (%s), %ld micro-batches; GPU ms per "
	        "step:\n",
	        progname, p->steps, which, p->micros);
	for (int i = 0; i < PK_N; i++)
		if (p->ms[i] > 0)
			fprintf(stderr, "  %-14s %9.2f  %5.1f%%\n", prof_names[i], p->ms[i] * k,
			        100 * p->ms[i] / p->gpu_ms);
	fprintf(stderr, "  %-14s %9.2f\n  %-14s %9.2f\n", "total GPU", p->gpu_ms * k, "wall",
	        p->wall_ms * k);
}

static const char *const state_names[] = {"params", "optim.adam_m", "optim.adam_v",
                                          "optim.muon_momentum"};

/* ------------------------------------------------------------------------
 * Device memory and layout
 */
static void *dalloc(struct cuda_engine *c, size_t bytes)
{
	void *p = NULL;
	if (c->nallocs >= MAX_ALLOCS)
		return NULL;
	if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
		cudaGetLastError();
		return NULL;
	}
	c->allocs[c->nallocs++] = p;
	c->bytes += bytes;
	return p;
}

static void note_peak(struct cuda_engine *c)
{
	size_t fr = 0, tot = 0;
	if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && c->free0 > fr &&
	    (uint64_t)(c->free0 - fr) > c->peak)
		c->peak = (uint64_t)(c->free0 - fr);
}

/* Copy on the engine's stream and wait: the stream is non-blocking, so a
 * plain cudaMemcpy (legacy stream; from pageable memory it may return
 * before the DMA lands) would not be ordered with its kernels. */
static void copy_sync(struct cuda_engine *c, void *dst, const void *src, size_t bytes,
                      enum cudaMemcpyKind kind)
{
	CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, c->s));
	CUDA_CHECK(cudaStreamSynchronize(c->s));
}

static float *W32(struct cuda_engine *c, int i) { return c->w32 + c->doff[i]; }
static uint16_t *W16(struct cuda_engine *c, int i) { return c->w16 + c->doff[i]; }
static float *G32(struct cuda_engine *c, int i) { return c->g32 + c->doff[i]; }

/* ------------------------------------------------------------------------
 * Data parallel (NCCL; spec 8): on a micro-batch passed MICRO_GRAD_LAST
 * the gradient is averaged over the ranks in buckets queued on the NCCL
 * stream as soon as the backward has finished them (the head's after the
 * head, each layer's after that layer, the embeddings' and the skip
 * weights' at the end), so the reduction overlaps the rest of the
 * backward. Waits poll the stream and NCCL's error state, with a timeout,
 * so that a dead or failed peer ends the run instead of hanging it.
 */
static int dp_abort(struct cuda_engine *c)
{
	if (c->comm)
		ncclCommAbort(c->comm);
	c->comm = NULL;
	return -1;
}

/* Wait for the main stream (cudaStreamSynchronize, watched). */
static int stream_wait(struct cuda_engine *c, struct gpt_err *e)
{
	if (!c->comm) {
		CUDA_CHECK(cudaStreamSynchronize(c->s));
		return 0;
	}
	const double t0 = now_seconds();
	for (long k = 0;; k++) {
		cudaError_t q = cudaStreamQuery(c->s);
		if (q == cudaSuccess)
			return 0;
		if (q != cudaErrorNotReady)
			CUDA_CHECK(q);
		ncclResult_t ar = ncclSuccess;
		if (ncclCommGetAsyncError(c->comm, &ar) == ncclSuccess && ar != ncclSuccess &&
		    ar != ncclInProgress) {
			gpt_errf(e, "rank %d: NCCL failed: %s (%s)", c->rank, ncclGetErrorString(ar),
			         ncclGetLastError(c->comm));
			return dp_abort(c);
		}
		if (now_seconds() - t0 > c->timeout_s) {
			gpt_errf(e, "rank %d: no progress for %.0f s while working with the other ranks "
			         "(a peer died or hangs?)", c->rank, c->timeout_s);
			return dp_abort(c);
		}
		struct timespec ts = {0, k < 1000 ? 20000 : 200000};
		nanosleep(&ts, NULL);
	}
}

/* Average g32[lo, hi) over the ranks, after the work queued so far. */
static void reduce_async(struct cuda_engine *c, size_t lo, size_t hi)
{
	if (!c->reducing || hi <= lo)
		return;
	CUDA_CHECK(cudaEventRecord(c->ev_s, c->s));
	CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_s, 0));
	NCCL_CHECK(ncclAllReduce(c->g32 + lo, c->g32 + lo, hi - lo, ncclFloat, ncclAvg, c->comm,
	                         c->cs));
}

/* The main stream waits for everything queued on the NCCL stream. */
static void comm_join(struct cuda_engine *c)
{
	CUDA_CHECK(cudaEventRecord(c->ev_c, c->cs));
	CUDA_CHECK(cudaStreamWaitEvent(c->s, c->ev_c, 0));
}

/* Output buffer of layer l, and the encoder output that decoder layer
 * L/2 + j adds (encoder L/2 - 1 - j): see the header comment. */
static uint16_t *layer_out(struct cuda_engine *c, int l)
{
	if (l == c->L / 2 - 1)
		return c->skiplast;
	return l == c->L - 1 ? c->xf : c->lay[l + 1].res_in;
}
static uint16_t *skip_of(struct cuda_engine *c, int enc)
{
	return enc == c->L / 2 - 1 ? c->skiplast : c->lay[enc + 1].res_in;
}

/* Layer l's first norm: its input (the lambda mix) and output. With
 * attention: attention's (kept per layer when training, else the shared
 * work buffers); without, the MLP's (input rmid). */
static uint16_t *norm_in(struct cuda_engine *c, int l)
{
	struct gpu_layer *a = &c->lay[l];
	if (!gpt_layer_attn(&c->en.cfg, l))
		return a->rmid;
	return a->xm ? a->xm : c->xm;
}
static uint16_t *mlp_norm_out(struct cuda_engine *c, int l)
{
	return c->lay[l].h2 ? c->lay[l].h2 : c->h;
}
static uint16_t *norm_out(struct cuda_engine *c, int l)
{
	struct gpu_layer *a = &c->lay[l];
	if (!gpt_layer_attn(&c->en.cfg, l))
		return mlp_norm_out(c, l);
	return a->h ? a->h : c->h;
}
static float *norm_rstd(struct cuda_engine *c, int l)
{
	return gpt_layer_attn(&c->en.cfg, l) ? c->lay[l].rstd1 : c->lay[l].rstd2;
}

/* ------------------------------------------------------------------------
 * Forward
 */

/* The input side of layer l in one pass (block_input_forward): layer
 * l-1's output prev + tmp (its MLP) into res_in[l] (or the last encoder's
 * buffer), the U-net skip add of a decoder layer (in place over res_in[l];
 * the sum before it is then not stored: dead), the lambda mix and the
 * layer's first norm. Layer 0 (prev NULL) starts from x0. */
static void block_in(struct cuda_engine *c, int l, const uint16_t *prev, int Tp)
{
	struct gpu_layer *a = &c->lay[l];
	const int L = c->L;
	uint16_t *out = l > 0 ? layer_out(c, l - 1) : NULL, *res = NULL;
	const uint16_t *skip = NULL;
	const float *w = NULL;
	if (l >= L / 2) {
		res = a->res_in;
		skip = skip_of(c, L - 1 - l); /* the first decoder's: out itself */
		w = W32(c, c->i_skip) + (l - L / 2);
		if (out == res)
			out = NULL;
	}
	block_input_forward(out, res, norm_in(c, l), norm_out(c, l), norm_rstd(c, l),
	                    l > 0 ? prev : c->x0, l > 0 ? c->tmp : NULL, skip, w, c->x0,
	                    W32(c, a->lam), Tp, c->D, c->eps, c->s);
}

static int forward(struct cuda_engine *c, int Tp, int window, struct gpt_err *e)
{
	const int D = c->D, F = c->F, V = c->V, H = c->H, hd = c->hd, L = c->L;
	const size_t n = (size_t)Tp * D;
	cudaStream_t s = c->s;
	prof_mark(c, PK_EMBED);
	rmsnorm_forward(c->x0, c->rstd0, W16(c, c->i_embed), c->tok, V, Tp, D, c->eps, s);
	for (int t0 = 0; t0 < c->NV; t0 += EMBEDDING_MAX_TABLES) {
		int nt = c->NV - t0 < EMBEDDING_MAX_TABLES ? c->NV - t0 : EMBEDDING_MAX_TABLES;
		uint16_t *outs[EMBEDDING_MAX_TABLES];
		const uint16_t *tabs[EMBEDDING_MAX_TABLES];
		for (int i = 0; i < nt; i++) {
			outs[i] = c->ve_out[t0 + i];
			tabs[i] = W16(c, c->i_ve[t0 + i]);
		}
		embedding_forward(outs, tabs, nt, c->tok, Tp, V, D, s);
	}
	prof_mark(c, PK_MASK);
	if (c->has_attn && attn_mask_build(&c->mask, c->tok, Tp, window, (uint32_t)c->en.cfg.eot, s, e))
		return -1;
	prof_mark(c, PK_NORM);
	block_in(c, 0, NULL, Tp);
	for (int l = 0; l < L; l++) {
		struct gpu_layer *a = &c->lay[l];
		int attn = gpt_layer_attn(&c->en.cfg, l);
		/* on entry: the layer's input (res_in), its lambda mix and first
		 * norm (block_in; without attention that is the MLP's norm) */
		if (attn) {
			uint16_t *xm = norm_in(c, l), *h = norm_out(c, l);
			prof_mark(c, PK_GEMM_FWD);
			gemm_fwd(c->gm, a->aq, h, W16(c, a->q), Tp, D, D);
			gemm_fwd(c->gm, a->ak, h, W16(c, a->k), Tp, D, D);
			gemm_fwd(c->gm, a->av, h, W16(c, a->v), Tp, D, D);
			uint16_t *qr = a->qr ? a->qr : c->qr, *kr = a->kr ? a->kr : c->kr;
			uint16_t *vm = a->vm ? a->vm : c->vm;
			prof_mark(c, PK_ELEM);
			mix_value_forward(vm, a->av, a->ve >= 0 ? c->ve_out[a->ve] : NULL, W32(c, a->alam),
			                  n, s);
			prof_mark(c, PK_NORM);
			qk_norm_rotary_forward(qr, kr, a->qs, a->ks, a->aq, a->ak, D, D, c->cos_t, c->sin_t,
			                       Tp, H, hd, c->nf, c->eps, s);
			prof_mark(c, PK_ATTN_FWD);
			if (attn_forward(a->y, a->lse, qr, kr, vm, &c->mask, H, hd, s, e))
				return -1;
			prof_mark(c, PK_GEMM_FWD);
			gemm_fwd(c->gm, c->tmp, a->y, W16(c, a->o), Tp, D, D);
			prof_mark(c, PK_NORM); /* rmid = xm + attention; the MLP's norm */
			residual_rmsnorm_forward(a->rmid, mlp_norm_out(c, l), a->rstd2, xm, c->tmp, Tp, D,
			                         c->eps, s);
		}
		uint16_t *act = a->act ? a->act : c->big;
		prof_mark(c, PK_GEMM_FWD);
		if (!c->mlp_fused ||
		    mlp_fc_relu2_forward(a->u, act, mlp_norm_out(c, l), W16(c, a->fc), Tp, F, D, s)) {
			gemm_fwd(c->gm, a->u, mlp_norm_out(c, l), W16(c, a->fc), Tp, F, D);
			prof_mark(c, PK_ELEM);
			relu2_forward(act, a->u, (size_t)Tp * F, s);
		}
		prof_mark(c, PK_GEMM_FWD);
		gemm_fwd(c->gm, c->tmp, act, W16(c, a->proj), Tp, D, F);
		prof_mark(c, PK_NORM); /* the layer's output = rmid + MLP, and the next input side */
		if (l + 1 < L)
			block_in(c, l + 1, a->rmid, Tp);
		else
			residual_rmsnorm_forward(c->xf, c->hf, c->rstdf, a->rmid, c->tmp, Tp, D, c->eps,
			                         s);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Backward: on entry dh holds d loss / d hf (rows >= T zero).
 */

/* The backward of layer l's input side in one pass (block_input_backward),
 * with dh = d loss / d (its first norm's output), xm and rstd that norm's
 * input and scale: the norm's backward added to dx, the lambda mix's (dx
 * becomes d loss / d res_in; x0's share into dx0), a decoder's U-net skip
 * (its gradient stored over res_in[l], dead by then) and, when layer l-1
 * is an encoder, the skip gradient it adds to its output's: decoder layer
 * L-l's, stored over res_in[L-l] (for l = L/2 the one this pass makes). */
static void block_in_backward(struct cuda_engine *c, int l, const uint16_t *xm, const float *rstd,
                              int Tp)
{
	struct gpu_layer *a = &c->lay[l];
	const int L = c->L, dec = l >= L / 2, j = l - L / 2;
	block_input_backward(c->dx, c->dx0, G32(c, a->lam), dec ? a->res_in : NULL,
	                     dec ? G32(c, c->i_skip) + j : NULL, c->dh, xm, rstd, a->res_in, c->x0,
	                     W32(c, a->lam), dec ? skip_of(c, L - 1 - l) : NULL,
	                     dec ? W32(c, c->i_skip) + j : NULL,
	                     l >= 1 && l <= L / 2 ? c->lay[L - l].res_in : NULL, Tp, c->D,
	                     c->mixwork, c->s);
}
static int backward(struct cuda_engine *c, int T, int Tp, struct gpt_err *e)
{
	const int D = c->D, F = c->F, V = c->V, H = c->H, hd = c->hd, L = c->L;
	const size_t n = (size_t)Tp * D;
	cudaStream_t s = c->s;
	struct gemm_ctx *gm = c->gm;
	prof_mark(c, PK_NORM);
	rmsnorm_backward(c->dx, 0, c->dh, NULL, c->xf, NULL, 0, c->rstdf, Tp, D, s);
	CUDA_CHECK(cudaMemsetAsync(c->dx0, 0, sizeof(float) * n, s));
	prof_mark(c, PK_EMBED);
	embedding_plan_build(c->plan, c->tok, T, s);
	for (int l = L - 1; l >= 0; l--) {
		struct gpu_layer *a = &c->lay[l];
		int attn = gpt_layer_attn(&c->en.cfg, l);
		/* dx: d loss / d (layer output), with what an encoder's skip
		 * received (added by layer l+1's block_in_backward). MLP (norm
		 * output and relu^2 kept by the forward, or recomputed) */
		const uint16_t *h2 = a->h2, *act = a->act;
		if (!h2) {
			prof_mark(c, PK_NORM);
			rmsnorm_forward(c->h, NULL, a->rmid, NULL, 0, Tp, D, c->eps, s);
			h2 = c->h;
		}
		if (!act) {
			prof_mark(c, PK_ELEM);
			relu2_forward(c->big, a->u, (size_t)Tp * F, s);
			act = c->big;
		}
		prof_mark(c, PK_GEMM_BWD);
		gemm_bwd_dw(gm, G32(c, a->proj), c->dx, act, Tp, D, F, 1.0f);
		if (!c->mlp_fused || mlp_proj_dx_relu2(c->du, c->dx, W16(c, a->proj), a->u, Tp, F, D, s)) {
			gemm_bwd_dx(gm, c->du, c->dx, W16(c, a->proj), Tp, D, F, 0.0f);
			prof_mark(c, PK_ELEM);
			relu2_backward(c->du, c->du, a->u, (size_t)Tp * F, s);
		}
		prof_mark(c, PK_GEMM_BWD);
		gemm_bwd_dw(gm, G32(c, a->fc), c->du, h2, Tp, F, D, 1.0f);
		gemm_bwd_dx(gm, c->dh, c->du, W16(c, a->fc), Tp, F, D, 0.0f);
		/* the layer's first norm: the MLP's without attention */
		const uint16_t *xm = a->rmid;
		const float *rstd = a->rstd2;
		if (attn) { /* dx becomes d loss / d rmid */
			const uint16_t *ve = a->ve >= 0 ? c->ve_out[a->ve] : NULL;
			prof_mark(c, PK_NORM);
			rmsnorm_backward(c->dx, 1, c->dh, NULL, a->rmid, NULL, 0, a->rstd2, Tp, D, s);
			const uint16_t *h = a->h;
			prof_mark(c, PK_GEMM_BWD);
			gemm_bwd_dw(gm, G32(c, a->o), c->dx, a->y, Tp, D, D, 1.0f);
			gemm_bwd_dx(gm, c->dyb, c->dx, W16(c, a->o), Tp, D, D, 0.0f);
			xm = a->xm;
			if (!xm) { /* norm input and output not kept: recompute */
				prof_mark(c, PK_ELEM);
				mix_lambda_forward(c->xm, a->res_in, c->x0, W32(c, a->lam), n, s);
				prof_mark(c, PK_NORM);
				rmsnorm_forward(c->h, NULL, c->xm, NULL, 0, Tp, D, c->eps, s);
				xm = c->xm, h = c->h;
			}
			const uint16_t *qr = a->qr, *kr = a->kr, *vm = a->vm;
			if (!vm) {
				prof_mark(c, PK_ELEM);
				mix_value_forward(c->vm, a->av, ve, W32(c, a->alam), n, s);
				vm = c->vm;
			}
			if (!qr) {
				prof_mark(c, PK_NORM);
				qk_norm_rotary_forward(c->qr, c->kr, a->qs, a->ks, a->aq, a->ak, D, D,
				                       c->cos_t, c->sin_t, Tp, H, hd, c->nf, c->eps, s);
				qr = c->qr, kr = c->kr;
			}
			prof_mark(c, PK_ATTN_BWD);
			if (attn_backward(c->dq, c->dk, c->dv, c->dyb, qr, kr, vm, a->y, a->lse,
			                  &c->mask, H, hd, s, e))
				return -1;
			/* the table's gradient a1 dv before dv is scaled in place */
			prof_mark(c, PK_EMBED);
			if (a->ve >= 0)
				embedding_backward_f32(G32(c, c->i_ve[a->ve]), c->dv, D, W32(c, a->alam) + 1,
				                       c->plan, D, s);
			prof_mark(c, PK_ELEM);
			mix_value_backward(c->dv, G32(c, a->alam), c->dv, a->av, ve, W32(c, a->alam), n,
			                   c->mixwork, s);
			prof_mark(c, PK_NORM);
			qk_norm_rotary_backward(c->dq, c->dk, c->dq, c->dk, a->aq, a->ak, a->qs, a->ks, D,
			                        D, D, c->cos_t, c->sin_t, Tp, H, hd, c->nf, s);
			prof_mark(c, PK_GEMM_BWD);
			gemm_bwd_dw(gm, G32(c, a->q), c->dq, h, Tp, D, D, 1.0f);
			gemm_bwd_dw(gm, G32(c, a->k), c->dk, h, Tp, D, D, 1.0f);
			gemm_bwd_dw(gm, G32(c, a->v), c->dv, h, Tp, D, D, 1.0f);
			gemm_bwd_dx(gm, c->dh, c->dq, W16(c, a->q), Tp, D, D, 0.0f);
			gemm_bwd_dx(gm, c->dh, c->dk, W16(c, a->k), Tp, D, D, 1.0f);
			gemm_bwd_dx(gm, c->dh, c->dv, W16(c, a->v), Tp, D, D, 1.0f);
			rstd = a->rstd1;
		}
		prof_mark(c, PK_NORM);
		block_in_backward(c, l, xm, rstd, Tp);
		reduce_async(c, c->blk_lo[l], c->blk_hi[l]); /* layer l's gradient is final */
	}
	/* x0 = norm(embed[tokens]): dx (layer 0's input) + dx0 (the lambda mixes) */
	prof_mark(c, PK_NORM);
	rmsnorm_backward(c->dh, 0, c->dx, c->dx0, W16(c, c->i_embed), c->tok, V, c->rstd0, Tp, D, s);
	prof_mark(c, PK_EMBED);
	embedding_backward_f32(G32(c, c->i_embed), c->dh, D, NULL, c->plan, D, s);
	if (c->reducing) { /* skip weights + embed; the value embeddings */
		reduce_async(c, 0, c->blk_lo[0]);
		if (c->NV > 0)
			reduce_async(c, c->doff[c->i_ve[0]], c->doff[c->i_head]);
		comm_join(c);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * micro and logits
 */
static int upload_tokens(struct cuda_engine *c, const uint32_t *in, const uint32_t *tgt, int T,
                         int window, int *Tp, struct gpt_err *e)
{
	if (T < 1 || T > c->en.max_T)
		return gpt_errf(e, "micro-batch of %d tokens: the CUDA engine was created for 1..%d", T,
		                c->en.max_T);
	if (window < 1)
		return gpt_errf(e, "attention window %d must be at least 1 block", window);
	for (int t = 0; t < T; t++) {
		if (in[t] >= (uint32_t)c->V)
			return gpt_errf(e, "input token %u at position %d is outside the vocabulary (%d)",
			                in[t], t, c->V);
		if (tgt && tgt[t] >= (uint32_t)c->V)
			return gpt_errf(e, "target token %u at position %d is outside the vocabulary (%d)",
			                tgt[t], t, c->V);
	}
	int tp = (T + ATTN_BLOCK - 1) / ATTN_BLOCK * ATTN_BLOCK;
	memcpy(c->h_tok, in, sizeof(uint32_t) * (size_t)T);
	memset(c->h_tok + T, 0, sizeof(uint32_t) * (size_t)(tp - T));
	CUDA_CHECK(cudaMemcpyAsync(c->tok, c->h_tok, sizeof(uint32_t) * (size_t)tp,
	                           cudaMemcpyHostToDevice, c->s));
	if (tgt) {
		memcpy(c->h_tgt, tgt, sizeof(uint32_t) * (size_t)T);
		CUDA_CHECK(cudaMemcpyAsync(c->tgt, c->h_tgt, sizeof(uint32_t) * (size_t)T,
		                           cudaMemcpyHostToDevice, c->s));
	}
	*Tp = tp;
	return 0;
}

static int cuda_micro(struct engine *en, const uint32_t *in, const uint32_t *tgt, int T, int window,
                      int grad, double *loss, struct gpt_err *e)
{
	struct cuda_engine *c = CU(en);
	int Tp;
	if (grad && !c->train)
		return gpt_errf(e, "engine created for evaluation only");
	prof_begin(c);
	prof_mark(c, PK_UPLOAD);
	if (upload_tokens(c, in, tgt, T, window, &Tp, e) || forward(c, Tp, window, e))
		goto fail;
	float cap = c->en.cfg.softcap;
	prof_mark(c, PK_HEAD);
	if (grad) {
		if (Tp > T)
			CUDA_CHECK(cudaMemsetAsync(c->dh + (size_t)T * c->D, 0,
			                           sizeof(uint16_t) * (size_t)(Tp - T) * c->D, c->s));
		head_loss_forward_backward(c->head, c->gm, c->hf, W16(c, c->i_head), c->tgt, T, cap,
		                           c->dh, G32(c, c->i_head), 1.0f, c->d_loss);
		c->reducing = c->comm && grad == MICRO_GRAD_LAST;
		reduce_async(c, c->doff[c->i_head], c->dtotal);
		if (backward(c, T, Tp, e))
			goto fail;
	} else {
		head_loss_forward(c->head, c->gm, c->hf, W16(c, c->i_head), c->tgt, T, cap, c->d_loss);
	}
	c->reducing = 0;
	CUDA_CHECK(cudaMemcpyAsync(c->h_loss, c->d_loss, sizeof(float), cudaMemcpyDeviceToHost, c->s));
	if (stream_wait(c, e))
		return -1;
	*loss = (double)*c->h_loss;
	if (c->prof) {
		prof_collect(c);
		c->prof->micros++;
	}
	if (!c->measured) {
		note_peak(c);
		c->measured = 1;
	}
	return 0;
fail:
	c->reducing = 0;
	if (c->comm)
		dp_abort(c); /* the other ranks wait for our collectives: end them */
	CUDA_CHECK(cudaStreamSynchronize(c->s));
	return -1;
}

static int cuda_logits(struct engine *en, const uint32_t *in, int T, int window, float *out,
                       struct gpt_err *e)
{
	struct cuda_engine *c = CU(en);
	int Tp;
	if (upload_tokens(c, in, NULL, T, window, &Tp, e) || forward(c, Tp, window, e)) {
		CUDA_CHECK(cudaStreamSynchronize(c->s));
		return -1;
	}
	gemm_fwd(c->gm, c->logit16, c->hf + (size_t)(T - 1) * c->D, W16(c, c->i_head), 1, c->V, c->D);
	uint16_t *h = xmalloc(sizeof(uint16_t) * (size_t)c->V);
	CUDA_CHECK(cudaMemcpyAsync(h, c->logit16, sizeof(uint16_t) * (size_t)c->V,
	                           cudaMemcpyDeviceToHost, c->s));
	CUDA_CHECK(cudaStreamSynchronize(c->s));
	float cap = c->en.cfg.softcap;
	for (int v = 0; v < c->V; v++) {
		float z = bf16_to_f32(h[v]);
		out[v] = cap > 0 ? cap * tanhf(z / cap) : z;
	}
	free(h);
	return 0;
}

static void cuda_zero_grad(struct engine *en)
{
	struct cuda_engine *c = CU(en);
	prof_begin(c);
	prof_mark(c, PK_ZERO);
	if (c->g32)
		CUDA_CHECK(cudaMemsetAsync(c->g32, 0, sizeof(float) * c->dtotal, c->s));
	prof_collect(c);
}

/* ------------------------------------------------------------------------
 * Optimizer step: Adam (embed, head, scalars), Muon (matrices under blocks)
 */

/* Muon over ranks (spec 8.3; see muon.cuh): momentum for every matrix on
 * every rank, Newton-Schulz of the rank's own matrices (lib/optim.h's
 * muon_plan: the record's assignment) into its slot of the shape's gather
 * buffer, all_gather on the NCCL stream while the next shape's
 * Newton-Schulz runs, then every rank applies every update. */
static void muon_dp(struct cuda_engine *c, double lr, double mu)
{
	for (int k = 0; k < c->nshapes; k++) {
		struct muon_shape *m = &c->shapes[k];
		const size_t numel = (size_t)m->rows * m->cols;
		float *bufs[MUON_GPU_MAX_BATCH], *grads[MUON_GPU_MAX_BATCH];
		for (int b = 0; b < m->n; b += MUON_GPU_MAX_BATCH) {
			int cnt = m->n - b < MUON_GPU_MAX_BATCH ? m->n - b : MUON_GPU_MAX_BATCH;
			for (int q = 0; q < cnt; q++) {
				int i = m->params[b + q];
				bufs[q] = c->mom + c->moff[i];
				grads[q] = G32(c, i);
			}
			muon_momentum_gpu(m->rows, m->cols, cnt, bufs, grads, mu, c->s);
		}
		const float *own[MUON_GPU_MAX_BATCH];
		int nown = 0;
		for (int q = 0; q < m->n; q++)
			if (muon_plan_owner(&c->mplan, m->params[q]) == c->rank)
				own[nown++] = G32(c, m->params[q]);
		if (nown)
			muon_orthogonalize_gpu(c->gm, m->ws, m->rows, m->cols, nown, NULL, own, mu,
			                       MUON_NS_STEPS, c->mu_mine[k], numel);
		CUDA_CHECK(cudaEventRecord(c->ev_s, c->s));
		CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_s, 0));
		NCCL_CHECK(ncclAllGather(c->mu_mine[k], c->mu_all[k], (size_t)c->mu_nmax[k] * numel,
		                         ncclBfloat16, c->comm, c->cs));
	}
	comm_join(c);
	for (int k = 0; k < c->nshapes; k++) {
		struct muon_shape *m = &c->shapes[k];
		const size_t numel = (size_t)m->rows * m->cols;
		for (int r = 0; r < c->world; r++) {
			float *p[MUON_GPU_MAX_BATCH];
			int cnt = 0;
			for (int q = 0; q < m->n; q++)
				if (muon_plan_owner(&c->mplan, m->params[q]) == r)
					p[cnt++] = W32(c, m->params[q]);
			if (cnt)
				muon_apply_gpu(m->rows, m->cols, cnt, p,
				               c->mu_all[k] + (size_t)r * c->mu_nmax[k] * numel, numel, lr,
				               c->s);
		}
	}
}
static int cuda_update(struct engine *en, const double lr[GPT_NGROUPS], double mu,
                       struct gpt_err *e)
{
	struct cuda_engine *c = CU(en);
	const struct gpt_table *t = &en->table;
	if (!c->train)
		return gpt_errf(e, "engine created for evaluation only");
	c->steps++;
	prof_begin(c);
	prof_mark(c, PK_ADAM);
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		if (p->group == GPT_GROUP_MUON)
			continue;
		struct adam_hyper h = {
			.lr = lr[p->group],
			.beta1 = ADAM_BETA1,
			.beta2 = ADAM_BETA2,
			.eps = ADAM_EPS,
			.step = c->steps,
			.bf16 = p->dtype == GPT_BF16,
		};
		if (p->dtype == GPT_BF16) {
			adam_update_gpu_bf16_gf32(W16(c, i), G32(c, i), c->m16 + c->aoff[i],
			                          c->v16 + c->aoff[i], p->numel, &h, c->s);
			cast_bf16_to_f32(W32(c, i), W16(c, i), p->numel, c->s);
		} else {
			adam_update_gpu(W32(c, i), G32(c, i), c->m32 + c->aoff[i], c->v32 + c->aoff[i],
			                p->numel, &h, c->s);
		}
	}
	prof_mark(c, PK_MUON);
	if (c->comm) {
		muon_dp(c, lr[GPT_GROUP_MUON], mu);
		goto cast;
	}
	for (int k = 0; k < c->nshapes; k++) {
		struct muon_shape *m = &c->shapes[k];
		for (int b = 0; b < m->n; b += MUON_GPU_MAX_BATCH) {
			int cnt = m->n - b < MUON_GPU_MAX_BATCH ? m->n - b : MUON_GPU_MAX_BATCH;
			float *pw[MUON_GPU_MAX_BATCH], *buf[MUON_GPU_MAX_BATCH];
			const float *pg[MUON_GPU_MAX_BATCH];
			for (int q = 0; q < cnt; q++) {
				int i = m->params[b + q];
				pw[q] = W32(c, i);
				pg[q] = G32(c, i);
				buf[q] = c->mom + c->moff[i];
			}
			muon_update_gpu(c->gm, m->ws, m->rows, m->cols, cnt, pw, pg, buf,
			                lr[GPT_GROUP_MUON], mu);
		}
	}
cast:
	prof_mark(c, PK_CAST);
	cast_f32_to_bf16(c->w16, c->w32, c->dtotal, c->s);
	if (c->prof) {
		prof_collect(c);
		prof_step(c);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * State, gradients
 */
static int cuda_nstate(struct engine *en) { return CU(en)->train ? 4 : 1; }

static const char *cuda_state_name(struct engine *en, int i)
{
	return i >= 0 && i < cuda_nstate(en) ? state_names[i] : NULL;
}

static size_t cuda_state_numel(struct engine *en, int i)
{
	struct cuda_engine *c = CU(en);
	switch (i) {
	case 0: return en->table.total;
	case 1:
	case 2: return c->train ? c->adam_numel : 0;
	case 3: return c->train ? c->muon_numel : 0;
	}
	return 0;
}

/* Does parameter p have state buffer i (1, 2: Adam; 3: Muon)? */
static int has_state(const struct gpt_param *p, int i)
{
	return i == 0 || (i == 3) == (p->group == GPT_GROUP_MUON);
}

/* Copy state i between the host (lib/optim.c layout; dir 0: out, 1: in)
 * and the device, tensor by tensor. */
static int state_copy(struct cuda_engine *c, int i, float *host, int dir, struct gpt_err *e)
{
	const struct gpt_table *t = &c->en.table;
	if (i < 0 || i >= cuda_nstate(&c->en))
		return gpt_errf(e, "CUDA engine: no state buffer %d", i);
	CUDA_CHECK(cudaStreamSynchronize(c->s));
	uint16_t *tmp = NULL;
	for (int k = 0; k < t->n; k++) {
		const struct gpt_param *p = &t->p[k];
		if (!has_state(p, i))
			continue;
		float *h = host + (i == 0 ? p->offset : c->soff[k]);
		void *d;
		int b16 = 0;
		if (i == 0)
			d = W32(c, k);
		else if (i == 3)
			d = c->mom + c->moff[k];
		else if (p->dtype == GPT_BF16)
			d = (i == 1 ? c->m16 : c->v16) + c->aoff[k], b16 = 1;
		else
			d = (i == 1 ? c->m32 : c->v32) + c->aoff[k];
		if (!b16) {
			copy_sync(c, dir ? d : h, dir ? (void *)h : d, sizeof(float) * p->numel,
			          dir ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
			continue;
		}
		tmp = xrealloc(tmp, sizeof(uint16_t) * p->numel);
		if (dir) {
			for (size_t q = 0; q < p->numel; q++)
				tmp[q] = f32_to_bf16(h[q]);
			copy_sync(c, d, tmp, sizeof(uint16_t) * p->numel, cudaMemcpyHostToDevice);
		} else {
			copy_sync(c, tmp, d, sizeof(uint16_t) * p->numel, cudaMemcpyDeviceToHost);
			for (size_t q = 0; q < p->numel; q++)
				h[q] = bf16_to_f32(tmp[q]);
		}
	}
	free(tmp);
	if (i == 0 && dir) {
		cast_f32_to_bf16(c->w16, c->w32, c->dtotal, c->s);
		CUDA_CHECK(cudaStreamSynchronize(c->s));
	}
	return 0;
}

static int cuda_state_get(struct engine *en, int i, float *dst, struct gpt_err *e)
{
	return state_copy(CU(en), i, dst, 0, e);
}

static int cuda_state_set(struct engine *en, int i, const float *src, struct gpt_err *e)
{
	return state_copy(CU(en), i, (float *)src, 1, e);
}

static int cuda_grad_get(struct engine *en, float *dst, struct gpt_err *e)
{
	struct cuda_engine *c = CU(en);
	if (!c->train)
		return gpt_errf(e, "engine created for evaluation only");
	CUDA_CHECK(cudaStreamSynchronize(c->s));
	for (int k = 0; k < en->table.n; k++) {
		const struct gpt_param *p = &en->table.p[k];
		copy_sync(c, dst + p->offset, G32(c, k), sizeof(float) * p->numel,
		          cudaMemcpyDeviceToHost);
	}
	return 0;
}

/* Sum n doubles over the ranks (NCCL on the main stream, watched wait). */
static int cuda_allreduce(struct engine *en, double *v, int n, struct gpt_err *e)
{
	struct cuda_engine *c = CU(en);
	for (int o = 0; c->comm && o < n; o += 64) {
		int k = n - o < 64 ? n - o : 64;
		memcpy(c->h_red, v + o, sizeof(double) * (size_t)k);
		CUDA_CHECK(cudaMemcpyAsync(c->d_red, c->h_red, sizeof(double) * (size_t)k,
		                           cudaMemcpyHostToDevice, c->s));
		NCCL_CHECK(ncclAllReduce(c->d_red, c->d_red, (size_t)k, ncclDouble, ncclSum, c->comm,
		                         c->s));
		CUDA_CHECK(cudaMemcpyAsync(c->h_red, c->d_red, sizeof(double) * (size_t)k,
		                           cudaMemcpyDeviceToHost, c->s));
		if (stream_wait(c, e))
			return -1;
		memcpy(v + o, c->h_red, sizeof(double) * (size_t)k);
	}
	return 0;
}

static int64_t cuda_steps(struct engine *en) { return CU(en)->steps; }

static int cuda_set_steps(struct engine *en, int64_t steps, struct gpt_err *e)
{
	if (!CU(en)->train)
		return gpt_errf(e, "engine created for evaluation only");
	if (steps < 0 || steps > (1 << 24))
		return gpt_errf(e, "optimizer step count %lld out of range [0, 16777216]",
		                (long long)steps);
	CU(en)->steps = steps;
	return 0;
}

static uint64_t cuda_peak(struct engine *en)
{
	struct cuda_engine *c = CU(en);
	note_peak(c);
	return c->peak > c->bytes ? c->peak : c->bytes;
}

static void cuda_free(struct engine *en)
{
	struct cuda_engine *c = CU(en);
	if (!c)
		return;
	if (c->s)
		cudaStreamSynchronize(c->s);
	if (c->prof) {
		prof_report(c);
		for (int i = 0; i < PROF_MAX && c->prof->ev[i]; i++)
			cudaEventDestroy(c->prof->ev[i]);
		free(c->prof);
	}
	for (int k = 0; k < c->nshapes; k++) {
		free(c->shapes[k].params);
		/* a workspace may serve two shapes: free it once */
		int dup = 0;
		for (int q = 0; q < k; q++)
			dup |= c->shapes[q].ws == c->shapes[k].ws;
		if (c->shapes[k].ws && !dup)
			muon_ws_free(c->shapes[k].ws);
	}
	if (c->head)
		head_loss_free(c->head);
	if (c->plan)
		embedding_plan_free(c->plan);
	if (c->mask_ok)
		attn_mask_free(&c->mask);
	if (c->gm)
		gemm_destroy(c->gm);
	if (c->comm) {
		if (c->cs)
			cudaStreamSynchronize(c->cs);
		ncclCommDestroy(c->comm);
	}
	if (c->cs)
		cudaStreamDestroy(c->cs);
	if (c->ev_s)
		cudaEventDestroy(c->ev_s);
	if (c->ev_c)
		cudaEventDestroy(c->ev_c);
	if (c->h_red)
		cudaFreeHost(c->h_red);
	muon_plan_free(&c->mplan);
	for (int k = 0; k < c->nallocs; k++)
		cudaFree(c->allocs[k]);
	if (c->h_tok)
		cudaFreeHost(c->h_tok);
	if (c->h_tgt)
		cudaFreeHost(c->h_tgt);
	if (c->h_loss)
		cudaFreeHost(c->h_loss);
	if (c->s)
		cudaStreamDestroy(c->s);
	free(c->doff);
	free(c->aoff);
	free(c->soff);
	free(c->moff);
	gpt_table_free(&en->table);
	free(c);
}

/* The GEMM choices are the process's (gemm.cuh): every engine shares them. */
static char *cuda_tuning_get(struct engine *en)
{
	(void)en;
	return gemm_export();
}

static int cuda_tuning_set(struct engine *en, const char *text, struct gpt_err *e)
{
	(void)en;
	int n = gemm_import(text);
	if (n < 0)
		return gpt_errf(e, "the stored GEMM algorithm choices are not a gemm_export text");
	if (n == 0 && strchr(text, '\n') && strchr(text, '\n')[1])
		warnx("warning: the stored GEMM algorithm choices were made on another GPU or "
		      "cuBLASLt; choosing again (results may differ in the last bits from the run "
		      "that stored them)");
	return 0;
}

static const struct engine_ops cuda_ops = {
	.name = "cuda",
	.micro = cuda_micro,
	.logits = cuda_logits,
	.zero_grad = cuda_zero_grad,
	.update = cuda_update,
	.nstate = cuda_nstate,
	.state_name = cuda_state_name,
	.state_numel = cuda_state_numel,
	.state_get = cuda_state_get,
	.state_set = cuda_state_set,
	.grad_get = cuda_grad_get,
	.steps = cuda_steps,
	.set_steps = cuda_set_steps,
	.allreduce = cuda_allreduce,
	.peak_bytes = cuda_peak,
	.tuning_get = cuda_tuning_get,
	.tuning_set = cuda_tuning_set,
	.free = cuda_free,
};

/* ------------------------------------------------------------------------
 * Create
 */
static size_t pad(size_t n) { return (n + PAD_ELEMS - 1) / PAD_ELEMS * PAD_ELEMS; }

/* Parameter indices per layer and the four layouts. */
static void build_layouts(struct cuda_engine *c)
{
	const struct gpt_table *t = &c->en.table;
	c->doff = xcalloc((size_t)t->n, sizeof(size_t));
	c->aoff = xcalloc((size_t)t->n, sizeof(size_t));
	c->soff = xcalloc((size_t)t->n, sizeof(size_t));
	c->moff = xcalloc((size_t)t->n, sizeof(size_t));
	c->i_skip = c->i_embed = c->i_head = -1;
	for (int l = 0; l < c->L; l++) {
		struct gpu_layer *a = &c->lay[l];
		a->lam = a->alam = a->q = a->k = a->v = a->o = a->fc = a->proj = -1;
		a->ve = gpt_layer_attn(&c->en.cfg, l) ? gpt_layer_ve(&c->en.cfg, l) : -1;
	}
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		c->doff[i] = c->dtotal;
		c->dtotal += pad(p->numel);
		if (p->group == GPT_GROUP_MUON) {
			c->soff[i] = c->muon_numel;
			c->muon_numel += p->numel;
			c->moff[i] = c->momn;
			c->momn += pad(p->numel);
		} else {
			c->soff[i] = c->adam_numel;
			c->adam_numel += p->numel;
			size_t *n = p->dtype == GPT_BF16 ? &c->a16n : &c->a32n;
			c->aoff[i] = *n;
			*n += pad(p->numel);
		}
		struct gpu_layer *a = p->layer >= 0 && p->layer < GPT_MAX_LAYERS ? &c->lay[p->layer] : NULL;
		if (a && p->kind != GPT_P_VALUE_EMBED) { /* a block's tensor: its layer's bucket */
			size_t lo = c->doff[i], hi = lo + pad(p->numel);
			if (!c->blk_hi[p->layer] || lo < c->blk_lo[p->layer])
				c->blk_lo[p->layer] = lo;
			if (hi > c->blk_hi[p->layer])
				c->blk_hi[p->layer] = hi;
		}
		switch (p->kind) {
		case GPT_P_SKIP: c->i_skip = i; break;
		case GPT_P_EMBED: c->i_embed = i; break;
		case GPT_P_HEAD: c->i_head = i; break;
		case GPT_P_VALUE_EMBED: c->i_ve[p->layer] = i; break;
		case GPT_P_LAMBDAS: a->lam = i; break;
		case GPT_P_ATTN_LAMBDAS: a->alam = i; break;
		case GPT_P_Q: a->q = i; break;
		case GPT_P_K: a->k = i; break;
		case GPT_P_V: a->v = i; break;
		case GPT_P_ATTN_PROJ: a->o = i; break;
		case GPT_P_FC: a->fc = i; break;
		case GPT_P_MLP_PROJ: a->proj = i; break;
		}
	}
}

/* Muon matrices grouped by shape (model order inside a shape), one
 * workspace per unordered pair {rows, cols}. */
static int build_muon(struct cuda_engine *c, struct gpt_err *e)
{
	const struct gpt_table *t = &c->en.table;
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		if (p->group != GPT_GROUP_MUON)
			continue;
		int r = (int)p->shape[0], cl = (int)p->shape[1], k = 0;
		while (k < c->nshapes && !(c->shapes[k].rows == r && c->shapes[k].cols == cl))
			k++;
		if (k == c->nshapes) {
			if (k == MAX_MUON_SHAPES)
				return gpt_errf(e, "CUDA engine: more than %d Muon matrix shapes", k);
			c->nshapes++;
			c->shapes[k].rows = r;
			c->shapes[k].cols = cl;
			c->shapes[k].params = xcalloc((size_t)t->n, sizeof(int));
		}
		c->shapes[k].params[c->shapes[k].n++] = i;
	}
	for (int k = 0; k < c->nshapes; k++) {
		struct muon_shape *m = &c->shapes[k];
		int mn = m->rows < m->cols ? m->rows : m->cols, mx = m->rows + m->cols - mn, cnt = 0;
		for (int q = 0; q < k; q++) {
			struct muon_shape *o = &c->shapes[q];
			if ((o->rows == mn && o->cols == mx) || (o->rows == mx && o->cols == mn))
				m->ws = o->ws;
		}
		if (m->ws)
			continue;
		for (int q = k; q < c->nshapes; q++) {
			struct muon_shape *o = &c->shapes[q];
			if (((o->rows == mn && o->cols == mx) || (o->rows == mx && o->cols == mn)) && o->n > cnt)
				cnt = o->n;
		}
		m->ws = muon_ws_create(m->rows, m->cols, cnt < MUON_GPU_MAX_BATCH ? cnt : MUON_GPU_MAX_BATCH);
		if (!m->ws)
			return gpt_errf(e, "CUDA engine: cannot allocate the Muon workspace for %dx%d",
			                m->rows, m->cols);
	}
	return 0;
}

struct engine *engine_cuda_create(const struct gpt_config *cfg, const float *w, int max_T,
                                  int train, struct gpt_err *e)
{
	if (gpt_config_check(cfg, e))
		return NULL;
	if (!engine_cuda_available()) {
		gpt_errf(e, "no CUDA device found (use --device cpu)");
		return NULL;
	}
	int lim = cfg->max_seq < ATTN_MAX_T ? cfg->max_seq : ATTN_MAX_T;
	if (max_T < 1 || max_T > lim) {
		gpt_errf(e, "micro-batch length %d out of range [1, %d] for the CUDA engine", max_T, lim);
		return NULL;
	}
	if (cfg->dim % 8 || cfg->mlp_hidden % 8) {
		gpt_errf(e, "the CUDA engine needs dim (%d) and mlp_hidden (%d) multiples of 8", cfg->dim,
		         cfg->mlp_hidden);
		return NULL;
	}
	if (cfg->value_embeds > 8) {
		gpt_errf(e, "the CUDA engine handles at most 8 value-embedding tables (%d)",
		         cfg->value_embeds);
		return NULL;
	}
	int has_attn = 0;
	for (int l = 0; l < cfg->layers; l++)
		has_attn |= gpt_layer_attn(cfg, l);
	if (has_attn && cfg->head_dim != ATTN_HEAD_DIM) {
		gpt_errf(e, "the CUDA attention needs head_dim %d (configuration: %d)", ATTN_HEAD_DIM,
		         cfg->head_dim);
		return NULL;
	}

	CUDA_CHECK(cudaFree(0)); /* the context, before measuring memory */
	struct cuda_engine *c = xcalloc(1, sizeof *c);
	size_t total_mem = 0;
	CUDA_CHECK(cudaMemGetInfo(&c->free0, &total_mem));
	c->en.ops = &cuda_ops;
	c->en.cfg = *cfg;
	c->en.max_T = max_T;
	gpt_table_build(cfg, &c->en.table);
	c->train = !!train;
	c->D = cfg->dim, c->F = cfg->mlp_hidden, c->V = cfg->vocab, c->H = cfg->heads;
	c->hd = cfg->head_dim, c->L = cfg->layers, c->NV = cfg->value_embeds, c->nf = cfg->rope_freqs;
	c->eps = cfg->norm_eps;
	c->has_attn = has_attn;
	c->Tmax = (max_T + ATTN_BLOCK - 1) / ATTN_BLOCK * ATTN_BLOCK;
	build_layouts(c);

	const size_t T = (size_t)c->Tmax, D = (size_t)c->D, F = (size_t)c->F, H = (size_t)c->H;
	const size_t TD = T * D * sizeof(uint16_t), TF = T * F * sizeof(uint16_t);
	int ok = 1;
	/* training keeps more activations (see struct gpu_layer) unless
	 * GPT_CUDA_RECOMPUTE=1 asks to trade that time for memory */
	const char *rc_env = getenv("GPT_CUDA_RECOMPUTE");
	const int keep = train && !(rc_env && *rc_env && strcmp(rc_env, "0"));
	/* the fused MLP products where they apply, unless GPT_MLP_GEMM=0
	 * asks for cuBLASLt and relu2.cu's passes (see mlp_gemm.cu) */
	const char *mg_env = getenv("GPT_MLP_GEMM");
	c->mlp_fused = !(mg_env && !strcmp(mg_env, "0"));
#define ALLOC(p, bytes) ok = ok && ((p) = dalloc(c, (bytes))) != NULL
	CUDA_CHECK(cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking));
	ALLOC(c->w32, sizeof(float) * c->dtotal);
	ALLOC(c->w16, sizeof(uint16_t) * c->dtotal);
	if (train) {
		ALLOC(c->g32, sizeof(float) * c->dtotal);
		ALLOC(c->m32, sizeof(float) * (c->a32n ? c->a32n : 1));
		ALLOC(c->v32, sizeof(float) * (c->a32n ? c->a32n : 1));
		ALLOC(c->m16, sizeof(uint16_t) * (c->a16n ? c->a16n : 1));
		ALLOC(c->v16, sizeof(uint16_t) * (c->a16n ? c->a16n : 1));
		ALLOC(c->mom, sizeof(float) * (c->momn ? c->momn : 1));
	}
	for (int l = 0; ok && l < c->L; l++) {
		struct gpu_layer *a = &c->lay[l];
		if (l == 0)
			a->res_in = NULL; /* x0, set below */
		else
			ALLOC(a->res_in, TD);
		ALLOC(a->rmid, TD);
		ALLOC(a->u, TF);
		ALLOC(a->rstd2, sizeof(float) * T);
		if (keep) {
			ALLOC(a->h2, TD);
			ALLOC(a->act, TF);
		}
		if (gpt_layer_attn(cfg, l)) {
			if (keep) {
				ALLOC(a->xm, TD);
				ALLOC(a->h, TD);
				ALLOC(a->qr, TD);
				ALLOC(a->kr, TD);
				ALLOC(a->vm, TD);
			}
			ALLOC(a->aq, TD);
			ALLOC(a->ak, TD);
			ALLOC(a->av, TD);
			ALLOC(a->y, TD);
			ALLOC(a->rstd1, sizeof(float) * T);
			ALLOC(a->qs, sizeof(float) * T * H);
			ALLOC(a->ks, sizeof(float) * T * H);
			ALLOC(a->lse, sizeof(float) * T * H);
		}
	}
	ALLOC(c->x0, TD);
	ALLOC(c->xf, TD);
	ALLOC(c->hf, TD);
	ALLOC(c->skiplast, TD);
	for (int v = 0; v < c->NV; v++)
		ALLOC(c->ve_out[v], TD);
	ALLOC(c->rstd0, sizeof(float) * T);
	ALLOC(c->rstdf, sizeof(float) * T);
	ALLOC(c->xm, TD);
	ALLOC(c->h, TD);
	ALLOC(c->tmp, TD);
	ALLOC(c->qr, TD);
	ALLOC(c->kr, TD);
	ALLOC(c->vm, TD);
	ALLOC(c->dx, TD);
	ALLOC(c->dh, TD);
	ALLOC(c->big, TF);
	if (train) {
		ALLOC(c->dyb, TD);
		ALLOC(c->dq, TD);
		ALLOC(c->dk, TD);
		ALLOC(c->dv, TD);
		ALLOC(c->du, TF);
		ALLOC(c->dx0, sizeof(float) * T * D);
		ALLOC(c->mixwork, mix_work_bytes(T * D) > block_input_work_bytes((int)T, (int)D)
		                      ? mix_work_bytes(T * D)
		                      : block_input_work_bytes((int)T, (int)D));
	}
	ALLOC(c->tok, sizeof(uint32_t) * T);
	ALLOC(c->tgt, sizeof(uint32_t) * T);
	ALLOC(c->d_loss, sizeof(float));
	ALLOC(c->logit16, sizeof(uint16_t) * (size_t)c->V);
	size_t nfr = (size_t)(c->nf > 0 ? c->nf : 1);
	ALLOC(c->cos_t, sizeof(float) * T * nfr);
	ALLOC(c->sin_t, sizeof(float) * T * nfr);
#undef ALLOC
	if (!ok) {
		gpt_errf(e, "out of GPU memory for the CUDA engine (%.1f MiB allocated so far, %d tokens)",
		         (double)c->bytes / 1048576.0, max_T);
		goto fail;
	}
	c->lay[0].res_in = c->x0;
	{
		const char *pe = getenv("GPT_CUDA_PROFILE");
		if (pe && *pe && strcmp(pe, "0"))
			c->prof = xcalloc(1, sizeof *c->prof);
	}
	CUDA_CHECK(cudaMallocHost((void **)&c->h_tok, sizeof(uint32_t) * T));
	CUDA_CHECK(cudaMallocHost((void **)&c->h_tgt, sizeof(uint32_t) * T));
	CUDA_CHECK(cudaMallocHost((void **)&c->h_loss, sizeof(float)));
	c->gm = gemm_create(c->s);
	/* GPT_HEAD_LEGACY=1: the head's two-pass softmax row kernel instead of
	 * the Q path (head_loss.cuh) */
	const char *hl_env = getenv("GPT_HEAD_LEGACY");
	/* GPT_HEAD_CHUNK: the head's rows per chunk (its logits buffer is
	 * rows x V bf16; head_loss.cuh's default when unset or not positive) */
	const char *hc_env = getenv("GPT_HEAD_CHUNK");
	c->head = head_loss_create(c->Tmax, c->V, c->D, hc_env ? atoi(hc_env) : 0,
	                           hl_env && *hl_env && strcmp(hl_env, "0") ? HEAD_LOSS_LEGACY : 0);
	if (!c->head) {
		gpt_errf(e, "cannot create the GPU head for %d tokens", c->Tmax);
		goto fail;
	}
	if (train)
		c->plan = embedding_plan_create(c->Tmax, c->V, c->D);
	if (has_attn) {
		if (attn_mask_alloc(&c->mask, c->Tmax, c->H, e))
			goto fail;
		c->mask_ok = 1;
	}
	if (train && build_muon(c, e))
		goto fail;

	/* rotary table, weights (padded layout), bf16 copies */
	{
		float *cs = xmalloc(sizeof(float) * T * nfr), *sn = xmalloc(sizeof(float) * T * nfr);
		gpt_rope_table(cfg, c->Tmax, cs, sn);
		/* the helpers' allocations and memsets ran on the legacy stream */
		CUDA_CHECK(cudaDeviceSynchronize());
		copy_sync(c, c->cos_t, cs, sizeof(float) * T * nfr, cudaMemcpyHostToDevice);
		copy_sync(c, c->sin_t, sn, sizeof(float) * T * nfr, cudaMemcpyHostToDevice);
		free(cs);
		free(sn);
	}
	CUDA_CHECK(cudaMemsetAsync(c->w32, 0, sizeof(float) * c->dtotal, c->s));
	if (train) {
		CUDA_CHECK(cudaMemsetAsync(c->g32, 0, sizeof(float) * c->dtotal, c->s));
		CUDA_CHECK(cudaMemsetAsync(c->m32, 0, sizeof(float) * (c->a32n ? c->a32n : 1), c->s));
		CUDA_CHECK(cudaMemsetAsync(c->v32, 0, sizeof(float) * (c->a32n ? c->a32n : 1), c->s));
		CUDA_CHECK(cudaMemsetAsync(c->m16, 0, sizeof(uint16_t) * (c->a16n ? c->a16n : 1), c->s));
		CUDA_CHECK(cudaMemsetAsync(c->v16, 0, sizeof(uint16_t) * (c->a16n ? c->a16n : 1), c->s));
		CUDA_CHECK(cudaMemsetAsync(c->mom, 0, sizeof(float) * (c->momn ? c->momn : 1), c->s));
	}
	if (state_copy(c, 0, (float *)w, 1, e))
		goto fail;
	note_peak(c);
	return &c->en;
fail:
	cuda_free(&c->en);
	return NULL;
}

/* NCCL communicator, streams and the Muon gather buffers of one rank. */
static int dp_init(struct cuda_engine *c, struct dist *d, struct gpt_err *e)
{
	ncclUniqueId id;
	memset(&id, 0, sizeof id);
	if (c->rank == 0)
		NCCL_CHECK(ncclGetUniqueId(&id));
	if (d && dist_bcast(d, &id, sizeof id, e))
		return -1;
	ncclResult_t r = ncclCommInitRank(&c->comm, c->world, id, c->rank);
	if (r != ncclSuccess) {
		c->comm = NULL;
		return gpt_errf(e, "rank %d: NCCL initialisation of %d ranks failed: %s", c->rank,
		                c->world, ncclGetErrorString(r));
	}
	CUDA_CHECK(cudaStreamCreateWithFlags(&c->cs, cudaStreamNonBlocking));
	CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_s, cudaEventDisableTiming));
	CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_c, cudaEventDisableTiming));
	CUDA_CHECK(cudaMallocHost((void **)&c->h_red, 64 * sizeof(double)));
	if (!(c->d_red = dalloc(c, 64 * sizeof(double))))
		return gpt_errf(e, "out of GPU memory for the CUDA engine");
	if (!c->train)
		return 0;
	if (muon_plan_build(&c->en.table, c->world, c->rank, &c->mplan, e))
		return -1;
	for (int k = 0; k < c->nshapes; k++) {
		struct muon_shape *m = &c->shapes[k];
		int cnt[256] = {0}, nmax = 0;
		if (c->world > 256)
			return gpt_errf(e, "the CUDA engine handles at most 256 ranks");
		for (int q = 0; q < m->n; q++) {
			int o = muon_plan_owner(&c->mplan, m->params[q]);
			if (o < 0 || o >= c->world)
				return gpt_errf(e, "Muon plan: no owner for %s", c->en.table.p[m->params[q]].name);
			if (++cnt[o] > nmax)
				nmax = cnt[o];
		}
		if (nmax > MUON_GPU_MAX_BATCH)
			return gpt_errf(e, "rank %d owns %d Muon matrices of one shape (at most %d)", c->rank,
			                nmax, MUON_GPU_MAX_BATCH);
		const size_t numel = (size_t)m->rows * m->cols;
		c->mu_nmax[k] = nmax;
		c->mu_mine[k] = dalloc(c, sizeof(uint16_t) * numel * (size_t)(nmax ? nmax : 1));
		c->mu_all[k] = dalloc(c, sizeof(uint16_t) * numel * (size_t)(nmax ? nmax : 1) * c->world);
		if (!c->mu_mine[k] || !c->mu_all[k])
			return gpt_errf(e, "out of GPU memory for the Muon gather buffers");
	}
	note_peak(c);
	return 0;
}

struct engine *engine_cuda_create_dist(const struct gpt_config *cfg, const float *w, int max_T,
                                       int train, struct dist *d, struct gpt_err *e)
{
	int world = d ? dist_world(d) : 1, rank = d ? dist_rank(d) : 0;
	const char *force = getenv("GPT_CUDA_NCCL"); /* the NCCL path with one rank (tests) */
	int nccl = world > 1 || (force && *force && strcmp(force, "0"));
	if (world > 1) {
		int ndev = 0, lr = dist_local_rank(d);
		if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1)
			return gpt_errf(e, "rank %d: no CUDA device found", rank), NULL;
		if (lr < 0 || lr >= ndev)
			return gpt_errf(e, "rank %d: local rank %d but %d GPU%s visible (one process per "
			                   "GPU)", rank, lr, ndev, ndev == 1 ? "" : "s"), NULL;
		CUDA_CHECK(cudaSetDevice(lr));
	}
	struct engine *en = engine_cuda_create(cfg, w, max_T, train, e);
	if (!en || !nccl)
		return en;
	struct cuda_engine *c = CU(en);
	c->world = world, c->rank = rank, c->dist = d, en->dist = d;
	c->timeout_s = dist_timeout(d);
	if (dp_init(c, d, e)) {
		cuda_free(en);
		return NULL;
	}
	return en;
}

#endif /* GPT_CUDA */
