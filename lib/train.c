/*
 * train.c - the training loop. See train.h.
 */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist.h"
#include "json.h"
#include "loader.h"
#include "parallel.h"
#include "safetensors.h"
#include "schedule.h"
#include "weights.h"

#define CKPT_FORMAT "gpt-checkpoint/1"
#define RECORD_VAL_TOKENS 10485760

static volatile sig_atomic_t stop_signal;

/* ------------------------------------------------------------------------
 * Checkpoints
 */
int ckpt_write(const char *path, struct engine *en, int64_t step, int pending_eval, size_t file,
               uint64_t pos, int64_t batch_tokens, int seq_len, struct gpt_err *e)
{
	const struct gpt_table *t = &en->table;
	int ns = en->ops->nstate(en);
	int n = t->n + ns - 1;
	struct st_entry *ent = xcalloc((size_t)n, sizeof *ent);
	int64_t *shapes = xcalloc((size_t)n * 2, sizeof *shapes);
	float **bufs = xcalloc((size_t)ns, sizeof *bufs);
	char *tuning = NULL;
	int rc = -1;
	for (int i = 0; i < ns; i++) {
		bufs[i] = xmalloc_aligned(64, sizeof(float) * en->ops->state_numel(en, i));
		if (en->ops->state_get(en, i, bufs[i], e))
			goto out;
	}
	for (int i = 0; i < t->n; i++) {
		const struct gpt_param *p = &t->p[i];
		ent[i].name = p->name;
		ent[i].dtype = ST_F32;
		ent[i].ndim = p->ndim;
		shapes[2 * i] = p->shape[0];
		shapes[2 * i + 1] = p->shape[1];
		ent[i].shape = &shapes[2 * i];
		ent[i].data = bufs[0] + p->offset;
	}
	for (int i = 1; i < ns; i++) {
		int k = t->n + i - 1;
		ent[k].name = en->ops->state_name(en, i);
		ent[k].dtype = ST_F32;
		ent[k].ndim = 1;
		shapes[2 * k] = (int64_t)en->ops->state_numel(en, i);
		ent[k].shape = &shapes[2 * k];
		ent[k].data = bufs[i];
	}
	struct gpt_meta m;
	gpt_config_to_meta(&en->cfg, &m);
	char extra[8][2][40];
	snprintf(extra[7][0], 40, "pending"), snprintf(extra[7][1], 40, pending_eval ? "eval" : "train");
	snprintf(extra[0][0], 40, "checkpoint"), snprintf(extra[0][1], 40, CKPT_FORMAT);
	snprintf(extra[1][0], 40, "step"), snprintf(extra[1][1], 40, "%" PRId64, step);
	snprintf(extra[2][0], 40, "adam_steps"), snprintf(extra[2][1], 40, "%" PRId64, en->ops->steps(en));
	snprintf(extra[3][0], 40, "loader_file"), snprintf(extra[3][1], 40, "%zu", file);
	snprintf(extra[4][0], 40, "loader_pos"), snprintf(extra[4][1], 40, "%" PRIu64, pos);
	snprintf(extra[5][0], 40, "batch_tokens"), snprintf(extra[5][1], 40, "%" PRId64, batch_tokens);
	snprintf(extra[6][0], 40, "seq_len"), snprintf(extra[6][1], 40, "%d", seq_len);
	const char *meta[2 * (GPT_META_MAX + 9)];
	int nm = 0;
	for (int i = 0; i < m.n; i++)
		meta[nm++] = m.key[i], meta[nm++] = m.val[i];
	for (int i = 0; i < 8; i++)
		meta[nm++] = extra[i][0], meta[nm++] = extra[i][1];
	tuning = en->ops->tuning_get ? en->ops->tuning_get(en) : NULL;
	if (tuning)
		meta[nm++] = "engine_tuning", meta[nm++] = tuning;
	rc = st_write(path, 0, ent, n, meta, nm / 2, e);
out:
	free(tuning);
	for (int i = 0; i < ns; i++)
		free(bufs[i]);
	free(bufs);
	free(ent);
	free(shapes);
	return rc;
}

struct resume_state {
	int64_t step, adam_steps, batch_tokens;
	int pending_eval; /* the row at step has not been evaluated yet */
	int seq_len;
	size_t file;
	uint64_t pos;
};

static int meta_i64(const struct st_file *f, const char *path, const char *key, int64_t lo,
                    int64_t hi, int64_t *out, struct gpt_err *e)
{
	const char *v = st_meta(f, key);
	long x;
	if (!v)
		return gpt_errf(e, "%s: not a gpt-train checkpoint (metadata '%s' missing)", path, key);
	if (parse_long(v, (long)lo, (long)hi, &x))
		return gpt_errf(e, "%s: checkpoint metadata '%s' is invalid: '%s'", path, key, v);
	*out = x;
	return 0;
}

/* Load a checkpoint: configuration and weights into *c, *w; the rest into
 * *rs; the optimizer tensors stay in *f for ckpt_restore_optim. */
static int ckpt_read(const char *path, struct st_file *f, struct gpt_config *c, float **w,
                     struct resume_state *rs, struct gpt_err *e)
{
	if (st_load(path, f, e))
		return -1;
	const char *fmt = st_meta(f, "checkpoint");
	if (!fmt || strcmp(fmt, CKPT_FORMAT)) {
		gpt_errf(e, "%s: not a gpt-train checkpoint (no '%s' in its metadata)", path, CKPT_FORMAT);
		goto fail;
	}
	int64_t file, pos, seq;
	if (meta_i64(f, path, "step", 0, INT32_MAX, &rs->step, e) ||
	    meta_i64(f, path, "adam_steps", 0, INT32_MAX, &rs->adam_steps, e) ||
	    meta_i64(f, path, "loader_file", 0, INT32_MAX, &file, e) ||
	    meta_i64(f, path, "loader_pos", 0, INT64_MAX, &pos, e) ||
	    meta_i64(f, path, "batch_tokens", 1, INT64_MAX, &rs->batch_tokens, e) ||
	    meta_i64(f, path, "seq_len", 1, INT32_MAX, &seq, e))
		goto fail;
	const char *pend = st_meta(f, "pending");
	rs->pending_eval = pend && !strcmp(pend, "eval");
	rs->file = (size_t)file;
	rs->pos = (uint64_t)pos;
	rs->seq_len = (int)seq;
	if (weights_from_st(f, NULL, c, w, e)) {
		char msg[sizeof e->msg];
		snprintf(msg, sizeof msg, "%s", e->msg);
		gpt_errf(e, "%s: %s", path, msg);
		goto fail;
	}
	return 0;
fail:
	st_free(f);
	return -1;
}

static int ckpt_restore_optim(const char *path, const struct st_file *f, struct engine *en,
                              int64_t adam_steps, struct gpt_err *e)
{
	int ns = en->ops->nstate(en);
	for (int i = 1; i < ns; i++) {
		const char *name = en->ops->state_name(en, i);
		size_t numel = en->ops->state_numel(en, i);
		const struct st_tensor *t = st_find(f, name);
		if (!t)
			return gpt_errf(e, "%s: checkpoint lacks the optimizer state '%s'", path, name);
		float *buf = xmalloc_aligned(64, sizeof(float) * numel);
		int64_t shape[1] = {(int64_t)numel};
		int rc = st_read_f32(f, t, 1, shape, buf, e);
		if (!rc)
			rc = en->ops->state_set(en, i, buf, e);
		free(buf);
		if (rc)
			return -1;
	}
	const char *tuning = st_meta(f, "engine_tuning");
	if (tuning && en->ops->tuning_set && en->ops->tuning_set(en, tuning, e)) {
		char msg[sizeof e->msg];
		snprintf(msg, sizeof msg, "%s", e->msg);
		return gpt_errf(e, "%s: %s", path, msg);
	}
	return en->ops->set_steps(en, adam_steps, e);
}

/* Keep the newest `keep` files named ckpt_*.safetensors in dir. */
static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void ckpt_prune(const char *dir, int keep)
{
	if (keep <= 0)
		return;
	DIR *d = opendir(dir);
	if (!d)
		return;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (strncmp(de->d_name, "ckpt_", 5) || len < 17 || strcmp(de->d_name + len - 12, ".safetensors"))
			continue;
		if (n == cap)
			names = xrealloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	/* zero-padded step numbers: lexical order is step order */
	qsort(names, n, sizeof *names, cmp_name);
	for (size_t i = 0; i + (size_t)keep < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (unlink(path) && errno != ENOENT)
			warnx("%s: cannot remove old checkpoint:", path);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* ------------------------------------------------------------------------
 * The loop
 */
struct run {
	const struct train_opts *o;
	struct dist *dist;
	int P, rank0;
	struct engine *en;
	struct loader *train, *val;
	int64_t val_steps;
	double t0, train_ms;
	char last_ckpt[4096];
	int64_t steps_done;
};

int train_micro_batches(int64_t batch_tokens, int seq_len, int world, struct gpt_err *e)
{
	int64_t per = (int64_t)world * seq_len;
	if (world <= 1) {
		if (batch_tokens < 1 || seq_len < 1 || batch_tokens % seq_len)
			return gpt_errf(e, "--batch-tokens %" PRId64 " is not a multiple of --seq-len %d", batch_tokens,
			                seq_len);
		return (int)(batch_tokens / seq_len);
	}
	if (batch_tokens < per)
		return gpt_errf(e, "--batch-tokens %" PRId64 " is less than %d ranks x --seq-len %d = %" PRId64
		                   ": every rank needs at least one micro-batch",
		                batch_tokens, world, seq_len, per);
	if (batch_tokens % per)
		return gpt_errf(e, "--batch-tokens %" PRId64 " is not a multiple of %d ranks x --seq-len %d = %" PRId64
		                   " (each rank takes a whole number of micro-batches)",
		                batch_tokens, world, seq_len, per);
	if (batch_tokens / per > INT32_MAX)
		return gpt_errf(e, "--batch-tokens %" PRId64 ": too many micro-batches", batch_tokens);
	return (int)(batch_tokens / per);
}

/* Sum n numbers over the ranks (the engine's op when it has one). */
static int reduce(struct run *r, double *v, int n, struct gpt_err *e)
{
	if (r->en->ops->allreduce)
		return r->en->ops->allreduce(r->en, v, n, e);
	return dist_allreduce_f64(r->dist, v, (size_t)n, e);
}

static int evaluate(struct run *r, int window, double *loss, struct gpt_err *e)
{
	const int T = r->o->seq_len;
	if (loader_reset(r->val, e))
		return -1;
	double sum = 0;
	for (int64_t k = 0; k < r->val_steps; k++) {
		const uint32_t *p = loader_next(r->val, e);
		if (!p)
			return -1;
		double l;
		if (r->en->ops->micro(r->en, p, p + 1, T, window, 0, &l, e))
			return -1;
		sum += l;
	}
	/* spec 10: every rank's sum, summed, over all P x val_steps sequences */
	if (reduce(r, &sum, 1, e))
		return -1;
	*loss = sum / ((double)r->val_steps * r->P);
	return 0;
}

static void json_lrs(const struct sched_row *row)
{
	printf("\"lr\":{\"embed\":%.9g,\"head\":%.9g,\"scalar\":%.9g,\"muon\":%.9g},\"momentum\":%.9g,"
	       "\"window\":%d",
	       row->lr[SCHED_EMBED], row->lr[SCHED_HEAD], row->lr[SCHED_SCALAR], row->lr[SCHED_MUON],
	       row->momentum, row->window);
}

static int write_ckpt(struct run *r, int64_t step, int pending_eval, struct gpt_err *e)
{
	const struct train_opts *o = r->o;
	char path[4096];
	snprintf(path, sizeof path, "%s/ckpt_%08" PRId64 ".safetensors", o->ckpt_dir, step);
	size_t file;
	uint64_t pos;
	loader_state(r->train, &file, &pos);
	double t = now_seconds();
	if (ckpt_write(path, r->en, step, pending_eval, file, pos, o->batch_tokens, o->seq_len, e))
		return -1;
	snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
	ckpt_prune(o->ckpt_dir, o->keep_ckpts);
	printf("{\"type\":\"ckpt\",\"step\":%" PRId64 ",\"path\":", step);
	json_put_string(stdout, path, strlen(path));
	printf(",\"ms\":%.1f}\n", 1e3 * (now_seconds() - t));
	fflush(stdout);
	return 0;
}

static int auto_val_steps(struct run *r, int64_t want, struct gpt_err *e)
{
	uint64_t B = (uint64_t)r->o->seq_len * (uint64_t)r->P; /* one sequence per rank and step */
	uint64_t len0 = loader_file_tokens(r->val, 0);
	int64_t avail = len0 >= 2 ? (int64_t)((len0 - 2) / B) : 0;
	if (avail < 1) {
		if (r->P > 1)
			return gpt_errf(e, "%s: %" PRIu64 " tokens: too few for one validation step of %d ranks x %d tokens",
			                loader_path(r->val, 0), len0, r->P, r->o->seq_len);
		return gpt_errf(e, "%s: %" PRIu64 " tokens: too few for one validation sequence of %d tokens",
		                loader_path(r->val, 0), len0, r->o->seq_len);
	}
	if (want < 0) {
		int64_t cap = RECORD_VAL_TOKENS / (int64_t)B;
		r->val_steps = avail < cap ? avail : (cap > 0 ? cap : 1);
		return 0;
	}
	r->val_steps = loader_val_steps(r->val, (uint64_t)want, e);
	return r->val_steps < 0 ? -1 : 0;
}

/* What the ranks must agree on; a rank started with other options is
 * refused at the rendezvous (lib/dist.h: job token). */
static void job_key(const struct train_opts *o, char *buf, size_t n)
{
	size_t k = 0;
#define PUT(...) (void)(k < n ? k += (size_t)snprintf(buf + k, n - k, __VA_ARGS__) : 0)
	PUT("gpt-train %s row %zu|w=%s|r=%s|s=%s|b=%" PRId64 "|T=%d|v=%" PRId64 "|d=%d|", GPT_VERSION,
	    sizeof(struct sched_row), o->weights ? o->weights : "", o->resume ? o->resume : "", o->schedule,
	    o->batch_tokens, o->seq_len, o->val_tokens, (int)o->device);
	for (int i = 0; i < GPT_NGROUPS; i++)
		PUT("%.17g,", o->base_lr[i]);
	for (int i = 0; i < o->ntrain; i++)
		PUT("|t=%s", o->train[i]);
	for (int i = 0; i < o->nval; i++)
		PUT("|v=%s", o->val[i]);
#undef PUT
}

/* The next schedule row: rank 0 reads it and sends it to the others.
 * 1: a row; 0: the end; -1: an error (e). */
static int next_row(struct run *r, struct sched_reader *sr, struct sched_row *row, struct gpt_err *e)
{
	struct {
		int32_t rc, pad;
		struct sched_row row;
	} m;
	memset(&m, 0, sizeof m);
	if (r->rank0 && (m.rc = sched_next(sr, &m.row, e)) < 0)
		return -1;
	if (dist_bcast(r->dist, &m, sizeof m, e))
		return -1;
	*row = m.row;
	return m.rc;
}

int train_run(const struct train_opts *o)
{
	struct gpt_err e = {{0}};
	struct run r = {0};
	struct train_opts opts = *o;
	r.o = &opts;
	struct gpt_config cfg;
	float *w = NULL;
	struct st_file ck;
	struct resume_state rs = {0};
	int resumed = 0;

	/* ---- the ranks: first, so that any later failure reaches the others */
	struct dist_info di;
	char init[1100] = "";
	if (dist_env(&di, &e))
		die(EXIT_USAGE, "%s", e.msg);
	r.P = di.world;
	r.rank0 = di.rank == 0;
	if (r.P > 1 && dist_resolve_init(opts.dist_init, init, sizeof init, &e))
		die(EXIT_USAGE, "%s", e.msg);
	if (!opts.resume && train_micro_batches(opts.batch_tokens ? opts.batch_tokens : TRAIN_DEFAULT_BATCH,
	                                        opts.seq_len ? opts.seq_len : TRAIN_DEFAULT_SEQ, r.P, &e) < 0)
		die(EXIT_USAGE, "%s", e.msg);
	if (r.P > 1 && !opts.threads_given && !getenv("GPT_THREADS")) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN) / di.local_world;
		parallel_set_threads(cpus > 0 ? (int)cpus : 1);
	}
	char desc[512];
	dist_info_describe(&di, desc, sizeof desc);
	info(2, "%s%s%s", desc, r.P > 1 ? "; rendezvous " : "", init);
	if (r.P > 1) {
		char key[4096];
		job_key(&opts, key, sizeof key);
		r.dist = dist_open(&di, init, opts.dist_timeout, key, &e);
		if (!r.dist)
			die(EXIT_RUNTIME, "%s", e.msg);
		dist_abort_on_die(r.dist);
		if (dist_watch_start(r.dist, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
	}

	if (opts.resume) { /* every rank reads it (a shared file system) */
		if (ckpt_read(opts.resume, &ck, &cfg, &w, &rs, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		resumed = 1;
		if (!opts.batch_tokens)
			opts.batch_tokens = rs.batch_tokens;
		if (!opts.seq_len)
			opts.seq_len = rs.seq_len;
		if (opts.batch_tokens != rs.batch_tokens || opts.seq_len != rs.seq_len)
			die(EXIT_RUNTIME,
			    "%s: the checkpoint was made with --batch-tokens %" PRId64 " --seq-len %d; "
			    "resume with the same (got %" PRId64 " and %d)",
			    opts.resume, rs.batch_tokens, rs.seq_len, opts.batch_tokens, opts.seq_len);
	} else if (weights_load(opts.weights, NULL, &cfg, &w, &e)) {
		die(EXIT_RUNTIME, "%s", e.msg);
	}
	if (!opts.batch_tokens)
		opts.batch_tokens = TRAIN_DEFAULT_BATCH;
	if (!opts.seq_len)
		opts.seq_len = TRAIN_DEFAULT_SEQ;
	if (opts.seq_len > cfg.max_seq)
		die(EXIT_USAGE, "--seq-len %d exceeds the model's max_seq %d", opts.seq_len, cfg.max_seq);
	const int nmicro = train_micro_batches(opts.batch_tokens, opts.seq_len, r.P, &e);
	if (nmicro < 0)
		die(EXIT_USAGE, "%s", e.msg);

	r.en = engine_create_dist(opts.device, &cfg, w, opts.seq_len, 1, r.P > 1 ? r.dist : NULL, &e);
	if (!r.en)
		die(EXIT_RUNTIME, "%s", e.msg);
	free(w);
	if (resumed) {
		if (ckpt_restore_optim(opts.resume, &ck, r.en, rs.adam_steps, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		st_free(&ck);
	}
	if (r.rank0)
		info(2, "engine %s, %zu parameters, %d rank%s x %d micro-batch%s per step", r.en->ops->name,
		     r.en->table.total, r.P, r.P > 1 ? "s" : "", nmicro, nmicro > 1 ? "es" : "");

	struct loader_opts lo = {.batch = (size_t)opts.batch_tokens, .world = r.P, .rank = di.rank,
	                         .vocab = (uint32_t)cfg.vocab};
	r.train = loader_open(opts.train, (size_t)opts.ntrain, &lo, &e);
	if (!r.train)
		die(EXIT_RUNTIME, "%s", e.msg);
	if (resumed && loader_seek(r.train, rs.file, rs.pos, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	if (opts.nval) {
		struct loader_opts vo = lo;
		vo.batch = (size_t)opts.seq_len * (size_t)r.P; /* spec 10: one sequence per rank */
		r.val = loader_open(opts.val, (size_t)opts.nval, &vo, &e);
		if (!r.val || auto_val_steps(&r, opts.val_tokens, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
	}
	if (r.rank0 && opts.ckpt_dir && mkdir(opts.ckpt_dir, 0777) && errno != EEXIST)
		die(EXIT_RUNTIME, "%s: cannot create the checkpoint directory:", opts.ckpt_dir);

	/* rank 0 reads the schedule and sends the rows (next_row) */
	FILE *sf = NULL;
	struct sched_reader *sr = NULL;
	if (r.rank0) {
		sf = xfopen_in(opts.schedule);
		const char *sname = strcmp(opts.schedule, "-") ? opts.schedule : "standard input";
		sr = sched_open(sf, sname, opts.base_lr, &e);
		if (!sr)
			die(EXIT_RUNTIME, "%s", e.msg);
	}

	util_soft_signals(&stop_signal);
	const int T = opts.seq_len;
	const int progress = r.rank0 && progress_enabled();
	r.t0 = now_seconds();
	int64_t start = resumed ? rs.step : -1;
	int64_t last_step = -1;
	double last_val = NAN;
	int status = 0, rc, warned_val = 0, warned_ckpt = 0;
	struct sched_row row;
	while ((rc = next_row(&r, sr, &row, &e)) == 1) {
		if (row.step < start)
			continue;
		/* the row a checkpoint was written at has had its evaluation and
		 * checkpoint already, unless a signal wrote it before them */
		int at_resume = resumed && row.step == start && !rs.pending_eval;
		last_step = row.step;
		if (r.rank0 && row.eval && !at_resume && !r.val && !warned_val) {
			warnx("the schedule asks for evaluations (step %ld) but no --val shards were given: "
			      "skipping them", row.step);
			warned_val = 1;
		}
		if (r.rank0 && row.ckpt && !at_resume && !opts.ckpt_dir && !warned_ckpt) {
			warnx("the schedule asks for checkpoints (step %ld) but no --ckpt-dir was given: "
			      "skipping them", row.step);
			warned_ckpt = 1;
		}
		if (row.eval && !at_resume && r.val) {
			double t = now_seconds(), vl;
			if (evaluate(&r, row.window, &vl, &e))
				die(EXIT_RUNTIME, "%s", e.msg);
			last_val = vl;
			if (r.rank0) {
				printf("{\"type\":\"val\",\"step\":%ld,\"val_loss\":%.6f,\"val_tokens\":%" PRId64
				       ",\"window\":%d,\"ms\":%.1f,\"train_time_ms\":%.0f,\"elapsed_s\":%.3f}\n",
				       row.step, vl, r.val_steps * T * r.P, row.window, 1e3 * (now_seconds() - t),
				       r.train_ms, now_seconds() - r.t0);
				fflush(stdout);
			}
			if (progress)
				fprintf(stderr, "\r\033[Kstep %ld  val_loss %.4f\n", row.step, vl);
			/* the same value on every rank: each stops */
			if (!isfinite(vl))
				die(EXIT_RUNTIME, "non-finite validation loss at step %ld%s%s", row.step,
				    r.last_ckpt[0] ? "; the last good checkpoint is " : "", r.last_ckpt);
		}
		if (r.rank0 && row.ckpt && !at_resume && opts.ckpt_dir) {
			if (write_ckpt(&r, row.step, 0, &e))
				die(EXIT_RUNTIME, "%s", e.msg);
		}
		if (!row.train)
			continue;
		/* one training step: this rank's slice of the batch */
		double ts = now_seconds(), tdata = 0, tfb = 0, topt;
		double t = now_seconds();
		const uint32_t *p = loader_next(r.train, &e);
		if (!p)
			die(EXIT_RUNTIME, "%s", e.msg);
		tdata += now_seconds() - t;
		t = now_seconds();
		r.en->ops->zero_grad(r.en);
		double loss = 0;
		for (int k = 0; k < nmicro; k++) {
			double l;
			int grad = k == nmicro - 1 ? MICRO_GRAD_LAST : MICRO_GRAD;
			if (r.en->ops->micro(r.en, p + (size_t)k * T, p + (size_t)k * T + 1, T, row.window, grad, &l, &e))
				die(EXIT_RUNTIME, "step %ld: %s", row.step, e.msg);
			loss += l;
		}
		loss /= nmicro;
		/* the mean loss over ranks, and whether any rank was asked to stop */
		int sig = (int)stop_signal;
		double red[3] = {loss, sig == SIGINT, sig == SIGTERM};
		if (reduce(&r, red, 3, &e))
			die(EXIT_RUNTIME, "step %ld: %s", row.step, e.msg);
		loss = red[0] / r.P;
		sig = red[1] > 0 ? SIGINT : red[2] > 0 ? SIGTERM : 0;
		tfb = now_seconds() - t;
		if (!isfinite(loss))
			die(EXIT_RUNTIME, "non-finite training loss at step %ld; stopping%s%s", row.step,
			    r.last_ckpt[0] ? " (the last good checkpoint is " : " (no checkpoint was written)",
			    r.last_ckpt[0] ? r.last_ckpt : "");
		t = now_seconds();
		if (r.en->ops->update(r.en, row.lr, row.momentum, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		topt = now_seconds() - t;
		double step_s = now_seconds() - ts;
		r.train_ms += 1e3 * step_s;
		r.steps_done++;
		if (r.rank0) {
			printf("{\"type\":\"train\",\"step\":%ld,\"loss\":%.6f,", row.step, loss);
			json_lrs(&row);
			/* spec 12: model FLOP/s per device, and MFU against the dense bf16 peak */
			double tfl = gpt_flops_per_token(&cfg, row.window) * (double)opts.batch_tokens /
			             step_s / r.P / 1e12;
			printf(",\"tokens\":%" PRId64 ",\"step_ms\":%.2f,\"tokens_per_s\":%.0f,\"tflops\":%.1f,"
			       "\"mfu\":%.4f,\"train_time_ms\":%.0f,"
			       "\"elapsed_s\":%.3f,\"ms\":{\"data\":%.2f,\"fwd_bwd\":%.2f,\"optim\":%.2f}}\n",
			       opts.batch_tokens, 1e3 * step_s, (double)opts.batch_tokens / step_s, tfl,
			       tfl / gpt_peak_tflops(), r.train_ms, now_seconds() - r.t0, 1e3 * tdata,
			       1e3 * tfb, 1e3 * topt);
			fflush(stdout);
		}
		if (progress)
			fprintf(stderr, "\r\033[Kstep %ld  loss %.4f  %.0f tok/s", row.step, loss,
			        (double)opts.batch_tokens / step_s);
		if (sig) {
			if (progress)
				fputc('\n', stderr);
			if (r.rank0 && opts.ckpt_dir) {
				/* state after step row.step: the next row starts with its evaluation */
				if (write_ckpt(&r, row.step + 1, 1, &e))
					die(EXIT_RUNTIME, "%s", e.msg);
			}
			if (r.rank0)
				warnx("stopped by signal %d after step %ld%s", sig, row.step,
				      opts.ckpt_dir ? " (checkpoint written)" : "");
			status = 128 + sig;
			break;
		}
	}
	if (rc < 0)
		die(EXIT_RUNTIME, "%s", e.msg);
	if (progress && status == 0)
		fputc('\n', stderr);
	if (sr) {
		sched_close(sr);
		xfclose_in(sf, opts.schedule);
	}
	if (r.rank0 && status == 0 && opts.output) {
		float *fw = xmalloc_aligned(64, sizeof(float) * r.en->table.total);
		if (r.en->ops->state_get(r.en, 0, fw, &e) ||
		    weights_save(opts.output, &cfg, fw,
		                 /* the CPU engine trains fp32 embeddings: keep them exact */
		                 opts.f32_output || !strcmp(r.en->ops->name, "cpu") ? WEIGHTS_F32 : 0,
		                 NULL, 0, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		free(fw);
	}
	if (r.rank0) {
		printf("{\"type\":\"end\",\"steps\":%" PRId64 ",\"last_step\":%" PRId64 ",\"train_time_ms\":%.0f,"
		       "\"elapsed_s\":%.3f,\"val_loss\":",
		       r.steps_done, last_step, r.train_ms, now_seconds() - r.t0);
		if (isfinite(last_val))
			printf("%.6f", last_val);
		else
			printf("null");
		printf(",\"peak_bytes\":%" PRIu64 ",\"device\":\"%s\",\"world\":%d}\n",
		       r.en->ops->peak_bytes(r.en), r.en->ops->name, r.P);
		fflush(stdout);
	}
	loader_close(r.train);
	if (r.val)
		loader_close(r.val);
	engine_free(r.en);
	/* the last barrier: no rank leaves while another may still fail */
	if (dist_close(r.dist, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	return status;
}
