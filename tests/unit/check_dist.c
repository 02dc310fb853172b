/*
 * check_dist.c - lib/dist.h: launcher environments, rendezvous, the
 * collectives' exact bits, failures and aborts, the watchdog, the CPU
 * engine over ranks, argv surgery for --gpus; and the rank/micro-batch
 * arithmetic of the training loop against the loader.
 *
 * Ranks are forked processes of the test (run_ranks): each runs a
 * function, writes what went wrong to a message file and exits with a
 * status; its standard error goes to a file the test reads.
 *
 *   env          every launcher's variables, precedence, partial and
 *                inconsistent environments, job ids
 *   init         --dist-init specs and the MASTER_ADDR/MASTER_PORT default
 *   collectives  file and tcp rendezvous with 3 and 4 ranks: bcast, f64 sum
 *                and f32 mean with the bits of the rank-order formula, 0-byte
 *                and multi-segment buffers, barrier; world 1 without sockets
 *   out_of_step  ranks calling different collectives are told so
 *   refusals     another job's rank, a duplicate rank, another world size;
 *                stale and garbled rendezvous files
 *   failures     a rank that vanishes mid-collective, one that hangs (the
 *                timeout), dist_abort and die() messages reaching everyone
 *   watchdog     an abort or a vanished rank ends busy ranks with the
 *                message; a clean close is not a failure
 *   engine       the CPU engine over 3 ranks: averaged gradients have the
 *                exact bits, weights stay identical, allreduce op
 *   argv         dist_argv_drop as getopt_long parses
 *   slices       P ranks x 8/P micro-batches = the 1-rank micro-batches
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check_common.h"
#include "config.h"
#include "dist.h"
#include "engine.h"
#include "loader.h"
#include "shard.h"
#include "train.h"

/* ------------------------------------------------------------------------
 * Helpers
 */
static const char *const all_vars[] = {
	"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
	"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK",
	"PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
	"SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID", "SLURM_JOB_ID", "SLURM_STEP_ID",
	"SLURM_STEPID", "PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "TORCHELASTIC_RUN_ID", "GPT_DIST_JOB",
	"MASTER_ADDR", "MASTER_PORT", NULL,
};

static void clear_env(void)
{
	for (int i = 0; all_vars[i]; i++)
		unsetenv(all_vars[i]);
}

/* set "K=V" pairs */
static void set_env(const char *kv, ...)
{
	va_list ap;
	va_start(ap, kv);
	for (const char *s = kv; s; s = va_arg(ap, const char *)) {
		char k[64];
		const char *eq = strchr(s, '=');
		snprintf(k, sizeof k, "%.*s", (int)(eq - s), s);
		setenv(k, eq + 1, 1);
	}
	va_end(ap);
}

static struct dist_info info_of(int rank, int world)
{
	struct dist_info in;
	memset(&in, 0, sizeof in);
	in.rank = rank;
	in.world = world;
	in.local_rank = rank;
	in.local_world = world;
	in.local_known = 1;
	snprintf(in.launcher, sizeof in.launcher, "test");
	return in;
}

#define MAXR 8
struct ranks {
	int status[MAXR]; /* exit status, 128+N for signal N */
	char msg[MAXR][1024];
	char err[MAXR][2048]; /* standard error */
	double secs;          /* until the last rank ended */
};

typedef int (*rank_fn)(int i, int n, void *ctx);

static char msg_path[MAXR][512], err_path[MAXR][512];
static int cur_rank = -1;

/* In a rank: record a message for the test (the last one wins). */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	FILE *f = fopen(msg_path[cur_rank], "w");
	if (!f)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

static void slurp(const char *path, char *buf, size_t n)
{
	buf[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t k = fread(buf, 1, n - 1, f);
	buf[k] = 0;
	fclose(f);
}

/* Fork n processes running fn(i, n, ctx); delay[i] seconds before each
 * start (NULL: none). Waits for all. */
static void run_ranks(int n, rank_fn fn, void *ctx, const double *delay, struct ranks *out)
{
	static int serial;
	serial++;
	pid_t pids[MAXR];
	double t0 = now_seconds();
	for (int i = 0; i < n; i++) {
		snprintf(msg_path[i], sizeof msg_path[i], "%s/%d-%d-r%d.msg", test_tmpdir(), (int)getpid(), serial, i);
		snprintf(err_path[i], sizeof err_path[i], "%s/%d-%d-r%d.err", test_tmpdir(), (int)getpid(), serial, i);
		unlink(msg_path[i]);
	}
	fflush(NULL);
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			cur_rank = i;
			if (!freopen(err_path[i], "w", stderr))
				_exit(99);
			setvbuf(stderr, NULL, _IONBF, 0);
			if (delay && delay[i] > 0)
				usleep((useconds_t)(delay[i] * 1e6));
			int rc = fn(i, n, ctx);
			fflush(NULL);
			_exit(rc);
		}
		pids[i] = pid;
	}
	for (int i = 0; i < n; i++) {
		int st;
		while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
			;
		out->status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		slurp(msg_path[i], out->msg[i], sizeof out->msg[i]);
		slurp(err_path[i], out->err[i], sizeof out->err[i]);
	}
	out->secs = now_seconds() - t0;
}

#define ASSERT_HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "'%s' lacks '%s'", (s), (sub))

/* A TCP port nobody listens on right now. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t sl = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &sl);
	close(fd);
	return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------------
 * env
 */
static struct dist_info env_ok(void)
{
	struct dist_info in;
	struct gpt_err e = {{0}};
	ck_assert_msg(dist_env(&in, &e) == 0, "%s", e.msg);
	return in;
}

static void env_bad(const char *sub1, const char *sub2)
{
	struct dist_info in;
	struct gpt_err e = {{0}};
	ck_assert_int_eq(dist_env(&in, &e), -1);
	ASSERT_HAS(e.msg, sub1);
	if (sub2)
		ASSERT_HAS(e.msg, sub2);
}

START_TEST(env_launchers)
{
	clear_env();
	struct dist_info in = env_ok();
	ck_assert_int_eq(in.world, 1);
	ck_assert_int_eq(in.rank, 0);
	ck_assert_str_eq(in.launcher, "none");
	ck_assert_str_eq(in.job, "");

	set_env("RANK=2", "WORLD_SIZE=4", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=2", NULL);
	in = env_ok();
	ck_assert_str_eq(in.launcher, "torchrun");
	ck_assert_int_eq(in.rank, 2);
	ck_assert_int_eq(in.world, 4);
	ck_assert_int_eq(in.local_rank, 0);
	ck_assert_int_eq(in.local_world, 2);
	ck_assert_int_eq(in.local_known, 1);
	ck_assert_str_eq(in.vars, "RANK=2 WORLD_SIZE=4 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2");
	char desc[512];
	dist_info_describe(&in, desc, sizeof desc);
	ASSERT_HAS(desc, "rank 2 of 4 (local 0 of 2), launcher torchrun: RANK=2");

	/* without the local pair: one host is assumed, and said */
	clear_env();
	set_env("RANK=3", "WORLD_SIZE=4", NULL);
	in = env_ok();
	ck_assert_int_eq(in.local_known, 0);
	ck_assert_int_eq(in.local_rank, 3);
	ck_assert_int_eq(in.local_world, 4);
	dist_info_describe(&in, desc, sizeof desc);
	ASSERT_HAS(desc, "guessed");

	clear_env();
	set_env("OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=1",
	        "OMPI_COMM_WORLD_LOCAL_SIZE=4", "PMIX_NAMESPACE=prterun-x-1@1", NULL);
	in = env_ok();
	ck_assert_str_eq(in.launcher, "openmpi");
	ck_assert_int_eq(in.rank, 5);
	ck_assert_int_eq(in.world, 8);
	ck_assert_int_eq(in.local_rank, 1);
	ck_assert_int_eq(in.local_world, 4);
	ck_assert_str_eq(in.job, "pmix:prterun-x-1@1");

	clear_env();
	set_env("PMI_RANK=1", "PMI_SIZE=2", "MPI_LOCALRANKID=1", "MPI_LOCALNRANKS=2", NULL);
	in = env_ok();
	ck_assert_str_eq(in.launcher, "mpich");
	ck_assert_int_eq(in.rank, 1);
	ck_assert_int_eq(in.local_world, 2);

	clear_env();
	set_env("SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1", "SLURM_STEP_TASKS_PER_NODE=4(x2)",
	        "SLURM_JOB_ID=77", "SLURM_STEP_ID=3", NULL);
	in = env_ok();
	ck_assert_str_eq(in.launcher, "slurm");
	ck_assert_int_eq(in.rank, 5);
	ck_assert_int_eq(in.world, 8);
	ck_assert_int_eq(in.local_rank, 1);
	ck_assert_int_eq(in.local_world, 4);
	ck_assert_str_eq(in.job, "slurm:77.3");

	/* uneven nodes: SLURM_NODEID picks this node's entry */
	clear_env();
	set_env("SLURM_PROCID=6", "SLURM_NTASKS=7", "SLURM_LOCALID=0", "SLURM_STEP_TASKS_PER_NODE=2(x3),1",
	        "SLURM_NODEID=3", NULL);
	in = env_ok();
	ck_assert_int_eq(in.local_world, 1);
	setenv("SLURM_NODEID", "1", 1);
	setenv("SLURM_LOCALID", "1", 1);
	in = env_ok();
	ck_assert_int_eq(in.local_world, 2);
	/* SLURM_NTASKS_PER_NODE when the step's list is absent */
	clear_env();
	set_env("SLURM_PROCID=1", "SLURM_NTASKS=4", "SLURM_LOCALID=1", "SLURM_NTASKS_PER_NODE=2", NULL);
	in = env_ok();
	ck_assert_int_eq(in.local_world, 2);
	/* SLURM_NTASKS alone is a job (salloc, sbatch), not one of a step's tasks */
	clear_env();
	set_env("SLURM_NTASKS=8", "SLURM_JOB_ID=9", NULL);
	in = env_ok();
	ck_assert_int_eq(in.world, 1);
	ck_assert_str_eq(in.launcher, "none");

	/* precedence: the torchrun-style variables (what --gpus sets) first */
	clear_env();
	set_env("RANK=1", "WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=4",
	        "SLURM_PROCID=3", "SLURM_NTASKS=4", "GPT_DIST_JOB=abc", "SLURM_JOB_ID=5", NULL);
	in = env_ok();
	ck_assert_str_eq(in.launcher, "torchrun");
	ck_assert_int_eq(in.world, 2);
	ck_assert_str_eq(in.job, "gpt:abc");
	unsetenv("RANK"), unsetenv("WORLD_SIZE");
	in = env_ok();
	ck_assert_str_eq(in.launcher, "openmpi");
	ck_assert_int_eq(in.local_known, 0);
}
END_TEST

START_TEST(env_errors)
{
	clear_env();
	set_env("RANK=0", NULL);
	env_bad("RANK is set but WORLD_SIZE is not", NULL);
	clear_env();
	set_env("WORLD_SIZE=2", NULL);
	env_bad("WORLD_SIZE is set but RANK is not", NULL);
	clear_env();
	set_env("RANK=4", "WORLD_SIZE=4", NULL);
	env_bad("RANK=4 is outside WORLD_SIZE=4", NULL);
	clear_env();
	set_env("RANK=x", "WORLD_SIZE=4", NULL);
	env_bad("RANK='x' is not a number", NULL);
	clear_env();
	set_env("RANK=0", "WORLD_SIZE=0", NULL);
	env_bad("WORLD_SIZE='0'", NULL);
	clear_env();
	set_env("RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", NULL);
	env_bad("LOCAL_RANK is set but LOCAL_WORLD_SIZE is not", NULL);
	clear_env();
	set_env("RANK=0", "WORLD_SIZE=2", "LOCAL_WORLD_SIZE=2", NULL);
	env_bad("LOCAL_WORLD_SIZE is set but LOCAL_RANK is not", NULL);
	clear_env();
	set_env("RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=4", NULL);
	env_bad("LOCAL_WORLD_SIZE=4 exceeds WORLD_SIZE=2", NULL);
	clear_env();
	set_env("RANK=0", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2", NULL);
	env_bad("LOCAL_RANK=2 is outside LOCAL_WORLD_SIZE=2", NULL);
	clear_env();
	set_env("OMPI_COMM_WORLD_RANK=1", NULL);
	env_bad("OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not", NULL);
	clear_env();
	set_env("PMI_SIZE=2", NULL);
	env_bad("PMI_SIZE is set but PMI_RANK is not", NULL);
	clear_env();
	set_env("PMI_RANK=0", "PMI_SIZE=2", "MPI_LOCALNRANKS=2", NULL);
	env_bad("MPI_LOCALNRANKS is set but MPI_LOCALRANKID is not", NULL);
	clear_env();
	set_env("SLURM_PROCID=1", NULL);
	env_bad("SLURM_PROCID is set but SLURM_NTASKS is not", NULL);
	clear_env();
	set_env("SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_LOCALID=1", NULL);
	env_bad("SLURM_LOCALID is set but neither SLURM_STEP_TASKS_PER_NODE nor SLURM_NTASKS_PER_NODE", NULL);
	clear_env();
	set_env("SLURM_PROCID=1", "SLURM_NTASKS=7", "SLURM_LOCALID=1", "SLURM_STEP_TASKS_PER_NODE=2(x3),1", NULL);
	env_bad("differs between nodes and SLURM_NODEID is not set", NULL);
	setenv("SLURM_NODEID", "4", 1);
	env_bad("SLURM_NODEID=4", "lists 4 nodes");
	setenv("SLURM_STEP_TASKS_PER_NODE", "2(y3)", 1);
	env_bad("SLURM_STEP_TASKS_PER_NODE='2(y3)' is not a task count list", NULL);
	setenv("SLURM_STEP_TASKS_PER_NODE", "", 1); /* empty is unset: the NTASKS_PER_NODE fallback */
	env_bad("SLURM_LOCALID is set but neither", NULL);
}
END_TEST

/* ------------------------------------------------------------------------
 * init
 */
START_TEST(init_specs)
{
	clear_env();
	char out[256];
	struct gpt_err e = {{0}};
	ck_assert_int_eq(dist_resolve_init(NULL, out, sizeof out, &e), -1);
	ASSERT_HAS(e.msg, "--dist-init file:PATH");
	ASSERT_HAS(e.msg, "MASTER_ADDR and MASTER_PORT");
	setenv("MASTER_ADDR", "node7", 1);
	ck_assert_int_eq(dist_resolve_init(NULL, out, sizeof out, &e), -1);
	ASSERT_HAS(e.msg, "MASTER_ADDR is set but MASTER_PORT is not");
	setenv("MASTER_PORT", "29500", 1);
	ck_assert_int_eq(dist_resolve_init(NULL, out, sizeof out, &e), 0);
	ck_assert_str_eq(out, "tcp:node7:29500");
	setenv("MASTER_ADDR", "::1", 1);
	ck_assert_int_eq(dist_resolve_init(NULL, out, sizeof out, &e), 0);
	ck_assert_str_eq(out, "tcp:[::1]:29500");
	setenv("MASTER_PORT", "70000", 1);
	ck_assert_int_eq(dist_resolve_init(NULL, out, sizeof out, &e), -1);
	ASSERT_HAS(e.msg, "MASTER_PORT='70000'");
	/* an explicit spec wins over the environment */
	ck_assert_int_eq(dist_resolve_init("file:/shared/rdv", out, sizeof out, &e), 0);
	ck_assert_str_eq(out, "file:/shared/rdv");
	ck_assert_int_eq(dist_resolve_init("tcp:10.0.0.1:1234", out, sizeof out, &e), 0);
	ck_assert_int_eq(dist_resolve_init("tcp:[fe80::1]:1234", out, sizeof out, &e), 0);
	const char *bad[] = {"file:", "tcp:host", "tcp:host:0", "tcp::5", "tcp:host:12x", "tcp:[::1]5",
	                     "tcp:[::1", "host:5", "", "udp:h:1"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		e.msg[0] = 0;
		ck_assert_msg(dist_resolve_init(bad[i], out, sizeof out, &e) == -1, "accepted '%s'", bad[i]);
		ASSERT_HAS(e.msg, "--dist-init");
	}
	ck_assert_int_eq(dist_resolve_init("file:/a/long/path", out, 8, &e), -1);
	ASSERT_HAS(e.msg, "too long");
}
END_TEST

/* ------------------------------------------------------------------------
 * collectives
 */
struct coll_ctx {
	const char *init;
	int big;           /* floats in the large mean (several segments) */
	double timeout;
	const char *key[MAXR]; /* job key per rank (NULL: "k") */
	int rank[MAXR];        /* rank per process, -1: the process index */
	int world;             /* 0: the process count */
};

static int ctx_rank(const struct coll_ctx *c, int i) { return c->rank[i] >= 0 ? c->rank[i] : i; }

static struct dist *open_rank(const struct coll_ctx *c, int i, int n, struct gpt_err *e)
{
	struct dist_info in = info_of(ctx_rank(c, i), c->world ? c->world : n);
	return dist_open(&in, c->init, c->timeout > 0 ? c->timeout : 20, c->key[i] ? c->key[i] : "k", e);
}

static uint64_t rng_of(uint64_t *s)
{
	*s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
	return *s;
}

/* rank r's f64 values: large and small terms whose sum depends on order */
static double f64_val(int r, size_t i)
{
	static const double t[4] = {1e16, 1.0, -1e16, 3.0};
	return t[(r + i) % 4] * (1.0 + (double)i * 1e-3) + (double)r * 0.1;
}

static float f32_val(int r, size_t i)
{
	uint64_t s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)r << 32) ^ (i * 0x2545F4914F6CDD1Dull);
	for (int k = 0; k < 3; k++)
		rng_of(&s);
	double u = (double)(rng_of(&s) >> 11) / 9007199254740992.0;
	return (float)((u - 0.5) * pow(2.0, (double)(rng_of(&s) % 40) - 20.0));
}

static int coll_rank(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(c, i, n, &e);
	if (!d)
		return note("open: %s", e.msg), 1;
	const int r = dist_rank(d), P = dist_world(d);
	if (P != n || r != i)
		return note("rank %d of %d", r, P), 1;
	/* bcast: rank 0's 128 bytes everywhere (the NCCL unique id's size) */
	uint8_t id[128];
	for (int k = 0; k < 128; k++)
		id[k] = r == 0 ? (uint8_t)(k * 7 + 1) : 0xEE;
	if (dist_bcast(d, id, sizeof id, &e))
		return note("bcast: %s", e.msg), 1;
	for (int k = 0; k < 128; k++)
		if (id[k] != (uint8_t)(k * 7 + 1))
			return note("bcast byte %d: %u", k, id[k]), 1;
	/* f64 sum in rank order */
	double v[64], want[64];
	for (size_t k = 0; k < 64; k++) {
		v[k] = f64_val(r, k);
		want[k] = f64_val(0, k);
		for (int q = 1; q < P; q++)
			want[k] += f64_val(q, k);
	}
	if (dist_allreduce_f64(d, v, 64, &e))
		return note("f64: %s", e.msg), 1;
	if (memcmp(v, want, sizeof v))
		return note("f64 bits differ"), 1;
	/* f32 mean: (float)(sum in double, in rank order, / P), over several segments */
	size_t nb = (size_t)c->big;
	float *f = xmalloc(sizeof *f * nb);
	for (size_t k = 0; k < nb; k++)
		f[k] = f32_val(r, k);
	if (dist_allreduce_f32_mean(d, f, nb, &e))
		return note("f32: %s", e.msg), 1;
	for (size_t k = 0; k < nb; k++) {
		double s = (double)f32_val(0, k);
		for (int q = 1; q < P; q++)
			s += (double)f32_val(q, k);
		float w = (float)(s / P);
		if (memcmp(&w, &f[k], sizeof w))
			return note("f32 mean element %zu: %.9g, want %.9g", k, f[k], w), 1;
	}
	free(f);
	/* empty buffers and a barrier */
	if (dist_bcast(d, NULL, 0, &e) || dist_allreduce_f64(d, NULL, 0, &e) || dist_barrier(d, &e))
		return note("empty: %s", e.msg), 1;
	if (dist_close(d, &e))
		return note("close: %s", e.msg), 1;
	return 0;
}

static void expect_all_ok(const struct ranks *R, int n)
{
	for (int i = 0; i < n; i++)
		ck_assert_msg(R->status[i] == 0, "rank %d: status %d: %s %s", i, R->status[i], R->msg[i], R->err[i]);
}

START_TEST(collectives_file)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-file", test_tmpdir());
	struct coll_ctx c = {.init = init, .big = 700001};
	memset(c.rank, -1, sizeof c.rank);
	/* rank 0 starts last: the others wait for the file */
	double delay[3] = {0.3, 0, 0.1};
	struct ranks R;
	run_ranks(3, coll_rank, &c, delay, &R);
	expect_all_ok(&R, 3);
	/* rank 0 removed the file once everyone had connected */
	ck_assert_int_ne(access(init + 5, F_OK), 0);
}
END_TEST

START_TEST(collectives_tcp)
{
	char init[64];
	snprintf(init, sizeof init, "tcp:127.0.0.1:%d", free_port());
	struct coll_ctx c = {.init = init, .big = 300000};
	memset(c.rank, -1, sizeof c.rank);
	double delay[4] = {0.2, 0, 0, 0.1}; /* rank 0 late: the others retry */
	struct ranks R;
	run_ranks(4, coll_rank, &c, delay, &R);
	expect_all_ok(&R, 4);
}
END_TEST

START_TEST(collectives_master_env)
{
	clear_env();
	char port[16];
	snprintf(port, sizeof port, "%d", free_port());
	setenv("MASTER_ADDR", "localhost", 1);
	setenv("MASTER_PORT", port, 1);
	struct coll_ctx c = {.init = NULL, .big = 10};
	memset(c.rank, -1, sizeof c.rank);
	struct ranks R;
	run_ranks(2, coll_rank, &c, NULL, &R);
	expect_all_ok(&R, 2);
}
END_TEST

START_TEST(world_one)
{
	/* no sockets, no rendezvous: init is not even looked at */
	struct dist_info in = info_of(0, 1);
	struct gpt_err e = {{0}};
	struct dist *d = dist_open(&in, "garbage", 1, NULL, &e);
	ck_assert_msg(d != NULL, "%s", e.msg);
	ck_assert_int_eq(dist_world(d), 1);
	double v[2] = {1.5, -2.25};
	float f[2] = {0.1f, 3.0f};
	uint8_t b[3] = {1, 2, 3};
	ck_assert_int_eq(dist_allreduce_f64(d, v, 2, &e), 0);
	ck_assert_int_eq(dist_allreduce_f32_mean(d, f, 2, &e), 0);
	ck_assert_int_eq(dist_bcast(d, b, 3, &e), 0);
	ck_assert_int_eq(dist_barrier(d, &e), 0);
	ck_assert(v[0] == 1.5 && v[1] == -2.25 && f[0] == 0.1f && f[1] == 3.0f && b[2] == 3);
	ck_assert_int_eq(dist_watch_start(d, &e), 0);
	dist_abort(d, "nothing happens");
	ck_assert_int_eq(dist_close(d, &e), 0);
	/* NULL: one process */
	ck_assert_int_eq(dist_rank(NULL), 0);
	ck_assert_int_eq(dist_world(NULL), 1);
	ck_assert_int_eq(dist_local_rank(NULL), 0);
	ck_assert_int_eq(dist_local_world(NULL), 1);
	ck_assert_ptr_null(dist_get_info(NULL));
	ck_assert_int_eq(dist_allreduce_f64(NULL, v, 2, &e), 0);
	ck_assert_int_eq(dist_close(NULL, &e), 0);
	/* a bad rank */
	in = info_of(2, 2);
	ck_assert_ptr_null(dist_open(&in, "file:/x", 1, NULL, &e));
	ASSERT_HAS(e.msg, "rank 2 is outside a world of 2");
}
END_TEST

/* ------------------------------------------------------------------------
 * out of step
 */
static int step_rank(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(c, i, n, &e);
	if (!d)
		return note("open: %s", e.msg), 1;
	int rc;
	if (i == 0) {
		uint8_t b[16] = {0};
		rc = dist_bcast(d, b, sizeof b, &e);
	} else {
		double v[2] = {1, 2};
		rc = dist_allreduce_f64(d, v, 2, &e);
	}
	if (!rc)
		return note("no error"), 0;
	note("%s", e.msg);
	dist_abort(d, e.msg); /* what die() does */
	return 1;
}

START_TEST(out_of_step)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-step", test_tmpdir());
	struct coll_ctx c = {.init = init, .timeout = 10};
	memset(c.rank, -1, sizeof c.rank);
	struct ranks R;
	run_ranks(2, step_rank, &c, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ck_assert_int_eq(R.status[1], 1);
	ASSERT_HAS(R.msg[0], "rank 0: rank 1 is out of step: it is in allreduce_f64 of 16 bytes "
	                     "(collective #1), this rank in bcast of 16 bytes (#1)");
	ASSERT_HAS(R.msg[1], "rank 0 failed: rank 1 is out of step");
	ck_assert(R.secs < 5);
}
END_TEST

/* ------------------------------------------------------------------------
 * refusals
 */
static int open_only(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(c, i, n, &e);
	if (!d)
		return note("%s", e.msg), 1;
	/* hold the star a moment, so the refused ones see it in place */
	usleep(300000);
	note("opened");
	int rc = dist_close(d, &e);
	if (rc)
		note("close: %s", e.msg);
	return rc ? 1 : 0;
}

START_TEST(refusals)
{
	char init[64];
	struct ranks R;
	/* another job: different options */
	snprintf(init, sizeof init, "tcp:127.0.0.1:%d", free_port());
	struct coll_ctx c = {.init = init, .timeout = 1, .key = {"opts A", "opts B"}};
	memset(c.rank, -1, sizeof c.rank);
	run_ranks(2, open_only, &c, NULL, &R);
	ck_assert_int_eq(R.status[1], 1);
	ASSERT_HAS(R.msg[1], "rank 1: rank 0 at 127.0.0.1:");
	ASSERT_HAS(R.msg[1], "refused this rank: rank 1 belongs to another job");
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "rank 0: timed out after 1 s waiting for rank 1 to connect");
	ASSERT_HAS(R.msg[0], "refused: rank 1 belongs to another job");

	/* two processes claim rank 1 of 3; nobody is rank 2 */
	snprintf(init, sizeof init, "tcp:127.0.0.1:%d", free_port());
	struct coll_ctx c2 = {.init = init, .timeout = 1, .rank = {0, 1, 1}, .world = 3};
	for (int i = 3; i < MAXR; i++)
		c2.rank[i] = -1;
	double delay[3] = {0, 0, 0.3};
	run_ranks(3, open_only, &c2, delay, &R);
	ck_assert_int_eq(R.status[2], 1);
	ASSERT_HAS(R.msg[2], "rank 1 is already connected (two processes are rank 1)");
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "waiting for rank 2 to connect");

}
END_TEST

static int world_mismatch(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct dist_info in = info_of(i, i == 0 ? 2 : 3);
	struct gpt_err e = {{0}};
	struct dist *d = dist_open(&in, c->init, c->timeout, "k", &e);
	if (!d)
		return note("%s", e.msg), 1;
	dist_close(d, &e);
	(void)n;
	return 0;
}

START_TEST(refusal_world)
{
	char init[64];
	snprintf(init, sizeof init, "tcp:127.0.0.1:%d", free_port());
	struct coll_ctx c = {.init = init, .timeout = 0.6};
	struct ranks R;
	run_ranks(2, world_mismatch, &c, NULL, &R);
	ck_assert_int_eq(R.status[1], 1);
	ASSERT_HAS(R.msg[1], "rank 1 says the world has 3 ranks, rank 0 says 2");
}
END_TEST

START_TEST(stale_files)
{
	struct ranks R;
	char path[600], init[620];
	/* a stale file naming a dead port is replaced by rank 0, which starts late */
	snprintf(path, sizeof path, "%s/rdv-stale", test_tmpdir());
	FILE *f = fopen(path, "w");
	fprintf(f, "gpt-dist 1 127.0.0.1 %d 00000000000000aa\n", free_port());
	fclose(f);
	snprintf(init, sizeof init, "file:%s", path);
	struct coll_ctx c = {.init = init, .big = 5, .timeout = 10};
	memset(c.rank, -1, sizeof c.rank);
	double delay[2] = {0.5, 0};
	run_ranks(2, coll_rank, &c, delay, &R);
	expect_all_ok(&R, 2);

	/* a stale file and no rank 0: a timeout naming the file */
	f = fopen(path, "w");
	fprintf(f, "gpt-dist 1 127.0.0.1 %d 00000000000000aa\n", free_port());
	fclose(f);
	struct coll_ctx c1 = {.init = init, .timeout = 0.5, .rank = {1}, .world = 2};
	for (int i = 1; i < MAXR; i++)
		c1.rank[i] = -1;
	run_ranks(1, open_only, &c1, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "rank 1: no rendezvous with rank 0 within 0.5 s");
	ASSERT_HAS(R.msg[0], path);
	ASSERT_HAS(R.msg[0], "Connection refused");

	/* no file at all */
	unlink(path);
	run_ranks(1, open_only, &c1, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "No such file or directory");

	/* a garbled file */
	f = fopen(path, "w");
	fprintf(f, "hello\n");
	fclose(f);
	run_ranks(1, open_only, &c1, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "not a gpt-train rendezvous file");
	ck_assert(R.secs < 0.4);
	unlink(path);
}
END_TEST

/* A live rank 0 and a file naming it with another nonce: refused as
 * stale, retried until the timeout. */
static int stale_nonce(int i, int n, void *vctx)
{
	const char *dir = vctx;
	char good[600], bad[600], init[700];
	snprintf(good, sizeof good, "%s/rdv-live", dir);
	snprintf(bad, sizeof bad, "%s/rdv-copy", dir);
	struct gpt_err e = {{0}};
	if (i == 0) {
		struct dist_info in = info_of(0, 2);
		snprintf(init, sizeof init, "file:%s", good);
		struct dist *d = dist_open(&in, init, 1.0, "k", &e);
		return note("%s", d ? "opened" : e.msg), d ? 0 : 1;
	}
	/* copy rank 0's file with another nonce */
	char line[512] = "";
	for (int k = 0; k < 100 && !line[0]; k++) {
		FILE *f = fopen(good, "r");
		if (f) {
			if (!fgets(line, sizeof line, f))
				line[0] = 0;
			fclose(f);
		}
		if (!line[0])
			usleep(10000);
	}
	char host[256];
	int port;
	unsigned long long nonce;
	if (sscanf(line, "gpt-dist 1 %255s %d %llx", host, &port, &nonce) != 3)
		return note("no file from rank 0: '%s'", line), 2;
	FILE *f = fopen(bad, "w");
	fprintf(f, "gpt-dist 1 %s %d %016llx\n", host, port, nonce ^ 1);
	fclose(f);
	struct dist_info in = info_of(1, 2);
	snprintf(init, sizeof init, "file:%s", bad);
	struct dist *d = dist_open(&in, init, 0.7, "k", &e);
	(void)n;
	return note("%s", d ? "opened" : e.msg), d ? 0 : 1;
}

START_TEST(stale_nonce_refused)
{
	struct ranks R;
	run_ranks(2, stale_nonce, (void *)test_tmpdir(), NULL, &R);
	ck_assert_msg(R.status[1] == 1, "%s", R.msg[1]);
	ASSERT_HAS(R.msg[1], "no rendezvous with rank 0 within 0.7 s");
	ASSERT_HAS(R.msg[1], "read a stale rendezvous file");
	ck_assert_int_eq(R.status[0], 1);
	ASSERT_HAS(R.msg[0], "read a stale rendezvous file");
}
END_TEST

/* ------------------------------------------------------------------------
 * failures
 */
struct fail_ctx {
	struct coll_ctx c;
	int victim;     /* the rank that goes away */
	int how;        /* 0: _exit; 1: hang; 2: dist_abort; 3: die() with the hook; 4: SIGKILL */
	int watch;      /* the others start the watchdog and sleep */
};

static int fail_rank(int i, int n, void *vctx)
{
	const struct fail_ctx *f = vctx;
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(&f->c, i, n, &e);
	if (!d)
		return note("open: %s", e.msg), 3;
	if (dist_barrier(d, &e)) /* everyone is in */
		return note("barrier: %s", e.msg), 3;
	if (i == f->victim) {
		switch (f->how) {
		case 0: _exit(0);
		case 1: usleep(1200000); _exit(0);
		case 2:
			dist_abort(d, "rank 2: disk full: /ckpt");
			_exit(1);
		case 3:
			dist_abort_on_die(d);
			die(EXIT_RUNTIME, "cannot read weights.safetensors");
		case 4: kill(getpid(), SIGKILL);
		}
	}
	if (f->watch) {
		if (dist_watch_start(d, &e))
			return note("watch: %s", e.msg), 3;
		if (f->watch == 2) { /* a collective while watched: one message */
			double v = 1;
			if (dist_allreduce_f64(d, &v, 1, &e))
				note("%s", e.msg);
			return 4;
		}
		sleep(8); /* busy: only the watchdog can notice */
		return note("the watchdog did not fire"), 5;
	}
	double v[3] = {1, 2, 3};
	if (dist_allreduce_f64(d, v, 3, &e) == 0)
		return note("no error"), 0;
	note("%s", e.msg);
	dist_abort(d, e.msg);
	return 1;
}

START_TEST(failure_vanished)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-fail0", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 20}, .victim = 2, .how = 0};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(3, fail_rank, &f, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ck_assert_str_eq(R.msg[0], "rank 0: lost the connection to rank 2 (peer closed)");
	ck_assert_int_eq(R.status[1], 1);
	ck_assert_str_eq(R.msg[1], "rank 0 failed: lost the connection to rank 2 (peer closed)");
	ck_assert_msg(R.secs < 5, "took %.1f s", R.secs); /* far below the 20 s timeout */

	/* rank 0 goes */
	snprintf(init, sizeof init, "file:%s/rdv-fail0b", test_tmpdir());
	f.victim = 0;
	run_ranks(3, fail_rank, &f, NULL, &R);
	ck_assert_str_eq(R.msg[1], "rank 1: lost the connection to rank 0 (peer closed)");
	ck_assert_str_eq(R.msg[2], "rank 2: lost the connection to rank 0 (peer closed)");
	ck_assert_msg(R.secs < 5, "took %.1f s", R.secs);
}
END_TEST

START_TEST(failure_timeout)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-fail1", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 0.5}, .victim = 1, .how = 1};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(2, fail_rank, &f, NULL, &R);
	ck_assert_int_eq(R.status[0], 1);
	ck_assert_str_eq(R.msg[0], "rank 0: timed out after 0.5 s waiting for rank 1 (allreduce_f64 #2)");
}
END_TEST

START_TEST(failure_abort)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-fail2", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 20}, .victim = 2, .how = 2};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(4, fail_rank, &f, NULL, &R);
	/* "rank 2: " is dropped from the message: the receivers name it */
	for (int i = 0; i < 4; i++)
		if (i != 2) {
			ck_assert_int_eq(R.status[i], 1);
			ck_assert_str_eq(R.msg[i], "rank 2 failed: disk full: /ckpt");
		}
	ck_assert_msg(R.secs < 5, "took %.1f s", R.secs);

	/* die() with the hook: the same, and the dying rank's own message */
	snprintf(init, sizeof init, "file:%s/rdv-fail3", test_tmpdir());
	f.victim = 1;
	f.how = 3;
	run_ranks(3, fail_rank, &f, NULL, &R);
	ck_assert_int_eq(R.status[1], 1);
	ASSERT_HAS(R.err[1], "cannot read weights.safetensors");
	ck_assert_str_eq(R.msg[0], "rank 1 failed: cannot read weights.safetensors");
	ck_assert_str_eq(R.msg[2], "rank 1 failed: cannot read weights.safetensors");
}
END_TEST

/* ------------------------------------------------------------------------
 * watchdog
 */
START_TEST(watchdog_abort)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-watch", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 20}, .victim = 2, .how = 2, .watch = 1};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(3, fail_rank, &f, NULL, &R);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(R.status[i] == 1, "rank %d: %d %s", i, R.status[i], R.msg[i]);
		ck_assert_str_eq(R.err[i], "check_dist: rank 2 failed: disk full: /ckpt\n");
	}
	ck_assert_msg(R.secs < 4, "took %.1f s", R.secs); /* not the 8 s sleep */
}
END_TEST

START_TEST(watchdog_killed)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-watch2", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 20}, .victim = 1, .how = 4, .watch = 1};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(3, fail_rank, &f, NULL, &R);
	ck_assert_int_eq(R.status[1], 128 + SIGKILL);
	ck_assert_int_eq(R.status[0], 1);
	ck_assert_str_eq(R.err[0], "check_dist: rank 0: lost the connection to rank 1 (peer closed)\n");
	ck_assert_msg(R.status[2] == 1, "%d %s %s", R.status[2], R.msg[2], R.err[2]);
	ck_assert_str_eq(R.err[2], "check_dist: rank 0 failed: lost the connection to rank 1 (peer closed)\n");
	ck_assert_msg(R.secs < 4, "took %.1f s", R.secs);
}
END_TEST

START_TEST(watchdog_in_collective)
{
	/* the watchdog and a failing collective: one message per rank */
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-watch3", test_tmpdir());
	struct fail_ctx f = {.c = {.init = init, .timeout = 20}, .victim = 2, .how = 2, .watch = 2};
	memset(f.c.rank, -1, sizeof f.c.rank);
	struct ranks R;
	run_ranks(3, fail_rank, &f, NULL, &R);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(R.status[i] == 1, "rank %d: %d %s", i, R.status[i], R.msg[i]);
		ck_assert_str_eq(R.err[i], "check_dist: rank 2 failed: disk full: /ckpt\n");
	}
}
END_TEST

static int clean_close(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(c, i, n, &e);
	if (!d)
		return note("open: %s", e.msg), 1;
	if (dist_watch_start(d, &e))
		return note("watch: %s", e.msg), 1;
	double v = i;
	if (dist_allreduce_f64(d, &v, 1, &e) || v != n * (n - 1) / 2.0)
		return note("sum: %s %g", e.msg, v), 1;
	usleep((useconds_t)(i * 150000)); /* ranks finish at different times */
	if (dist_close(d, &e))
		return note("close: %s", e.msg), 1;
	usleep(300000); /* a watchdog left running would fire now */
	return 0;
}

START_TEST(watchdog_clean_close)
{
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-watch4", test_tmpdir());
	struct coll_ctx c = {.init = init, .timeout = 20};
	memset(c.rank, -1, sizeof c.rank);
	struct ranks R;
	run_ranks(4, clean_close, &c, NULL, &R);
	expect_all_ok(&R, 4);
	for (int i = 0; i < 4; i++)
		ck_assert_str_eq(R.err[i], "");
}
END_TEST

/* ------------------------------------------------------------------------
 * engine
 */
static void tiny_config(struct gpt_config *c)
{
	gpt_config_record(c);
	c->vocab = 61;
	c->eot = 59;
	c->layers = 2;
	c->dim = 16;
	c->heads = 2;
	c->head_dim = 8;
	c->mlp_hidden = 32;
	c->value_embeds = 1;
	c->no_attn = 0;
	c->softcap = 3.0f;
	c->rope_freqs = 2;
	c->rope_min_freq = 1.0f / 64;
	c->attn_block = 8;
	c->max_seq = 256;
}

static float *tiny_weights(const struct gpt_table *t)
{
	float *w = xmalloc(sizeof *w * t->total);
	uint64_t s = 12345;
	for (size_t i = 0; i < t->total; i++)
		w[i] = (float)((double)(rng_of(&s) >> 11) / 9007199254740992.0 - 0.5) * 0.5f;
	return w;
}

#define ET 48 /* tokens per micro-batch */
static void tiny_tokens(int rank, int k, uint32_t *in, uint32_t *tg)
{
	uint64_t s = 777 + (uint64_t)rank * 1000 + (uint64_t)k;
	for (int t = 0; t < ET; t++) {
		in[t] = (uint32_t)(rng_of(&s) % 59);
		tg[t] = (uint32_t)(rng_of(&s) % 61);
	}
}

static const double tiny_lr[GPT_NGROUPS] = {0.1, 0.01, 0.02, 0.05};

static void write_floats(const char *path, const float *v, size_t n)
{
	FILE *f = fopen(path, "wb");
	fwrite(v, sizeof *v, n, f);
	fclose(f);
}

static int engine_rank(int i, int n, void *vctx)
{
	const struct coll_ctx *c = vctx;
	struct gpt_config cfg;
	struct gpt_table t;
	tiny_config(&cfg);
	gpt_table_build(&cfg, &t);
	float *w = tiny_weights(&t);
	struct gpt_err e = {{0}};
	struct dist *d = open_rank(c, i, n, &e);
	if (!d)
		return note("open: %s", e.msg), 1;
	struct engine *en = engine_create_dist(ENGINE_CPU, &cfg, w, ET, 1, d, &e);
	if (!en)
		return note("engine: %s", e.msg), 1;
	uint32_t in[ET], tg[ET];
	double l;
	for (int k = 0; k < 2; k++) { /* two micro-batches of this rank's own data */
		tiny_tokens(i, k, in, tg);
		if (en->ops->micro(en, in, tg, ET, 2, k == 1 ? MICRO_GRAD_LAST : MICRO_GRAD, &l, &e))
			return note("micro: %s", e.msg), 1;
	}
	float *g = xmalloc(sizeof *g * t.total);
	if (en->ops->grad_get(en, g, &e))
		return note("grad: %s", e.msg), 1;
	char path[600];
	snprintf(path, sizeof path, "%s/engine-grad-%d", test_tmpdir(), i);
	write_floats(path, g, t.total);
	for (int s = 0; s < 2; s++) {
		if (s == 1) { /* a second step, so momentum and Adam state matter */
			en->ops->zero_grad(en);
			tiny_tokens(i, 5, in, tg);
			if (en->ops->micro(en, in, tg, ET, 2, MICRO_GRAD_LAST, &l, &e))
				return note("micro: %s", e.msg), 1;
		}
		if (en->ops->update(en, tiny_lr, 0.9, &e))
			return note("update: %s", e.msg), 1;
	}
	if (en->ops->state_get(en, 0, g, &e))
		return note("state: %s", e.msg), 1;
	snprintf(path, sizeof path, "%s/engine-w-%d", test_tmpdir(), i);
	write_floats(path, g, t.total);
	double v[2] = {i + 0.5, -1.0};
	if (en->ops->allreduce(en, v, 2, &e))
		return note("allreduce: %s", e.msg), 1;
	if (v[0] != n * n / 2.0 || v[1] != -n)
		return note("allreduce: %g %g", v[0], v[1]), 1;
	engine_free(en);
	if (dist_close(d, &e))
		return note("close: %s", e.msg), 1;
	free(g);
	free(w);
	gpt_table_free(&t);
	return 0;
}

static float *read_floats(const char *path, size_t n)
{
	float *v = xmalloc(sizeof *v * n);
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(v, sizeof *v, n, f), n);
	fclose(f);
	return v;
}

START_TEST(engine_over_ranks)
{
	enum { P = 3 };
	char init[600];
	snprintf(init, sizeof init, "file:%s/rdv-engine", test_tmpdir());
	struct coll_ctx c = {.init = init, .timeout = 20};
	memset(c.rank, -1, sizeof c.rank);
	struct ranks R;
	run_ranks(P, engine_rank, &c, NULL, &R);
	expect_all_ok(&R, P);

	/* the reference: each rank's summed gradient from one process */
	struct gpt_config cfg;
	struct gpt_table t;
	tiny_config(&cfg);
	gpt_table_build(&cfg, &t);
	float *w = tiny_weights(&t);
	struct gpt_err e = {{0}};
	struct engine *en = engine_create(ENGINE_CPU, &cfg, w, ET, 1, &e);
	ck_assert_msg(en != NULL, "%s", e.msg);
	float *g[P];
	uint32_t in[ET], tg[ET];
	double l;
	for (int r = 0; r < P; r++) {
		en->ops->zero_grad(en);
		for (int k = 0; k < 2; k++) {
			tiny_tokens(r, k, in, tg);
			ck_assert_int_eq(en->ops->micro(en, in, tg, ET, 2, MICRO_GRAD, &l, &e), 0);
		}
		g[r] = xmalloc(sizeof(float) * t.total);
		ck_assert_int_eq(en->ops->grad_get(en, g[r], &e), 0);
	}
	char path[600];
	float *w0 = NULL;
	size_t nonzero = 0;
	for (int r = 0; r < P; r++) {
		snprintf(path, sizeof path, "%s/engine-grad-%d", test_tmpdir(), r);
		float *got = read_floats(path, t.total);
		for (size_t i = 0; i < t.total; i++) {
			float want = (float)((((double)g[0][i] + g[1][i]) + g[2][i]) / P);
			ck_assert_msg(!memcmp(&want, &got[i], sizeof want), "rank %d grad[%zu] %.9g, want %.9g", r, i,
			              got[i], want);
			nonzero += got[i] != 0;
		}
		free(got);
		snprintf(path, sizeof path, "%s/engine-w-%d", test_tmpdir(), r);
		float *wr = read_floats(path, t.total);
		if (!w0)
			w0 = wr;
		else {
			ck_assert_msg(!memcmp(w0, wr, sizeof(float) * t.total), "rank %d's weights differ from rank 0's", r);
			free(wr);
		}
	}
	ck_assert_uint_gt(nonzero, t.total / 2);
	ck_assert_msg(memcmp(w0, w, sizeof(float) * t.total), "the update changed nothing");
	for (int r = 0; r < P; r++)
		free(g[r]);
	free(w0);
	free(w);
	engine_free(en);
	gpt_table_free(&t);
}
END_TEST

START_TEST(engine_world_one)
{
	/* engine_create_dist with a world-1 dist is the plain engine */
	struct gpt_config cfg;
	struct gpt_table t;
	tiny_config(&cfg);
	gpt_table_build(&cfg, &t);
	float *w = tiny_weights(&t);
	struct dist_info in = info_of(0, 1);
	struct gpt_err e = {{0}};
	struct dist *d = dist_open(&in, NULL, 0, NULL, &e);
	struct engine *a = engine_create_dist(ENGINE_CPU, &cfg, w, ET, 1, d, &e);
	struct engine *b = engine_create(ENGINE_CPU, &cfg, w, ET, 1, &e);
	ck_assert(a && b);
	ck_assert_ptr_null(a->dist);
	uint32_t x[ET], y[ET];
	double la, lb;
	tiny_tokens(0, 0, x, y);
	ck_assert_int_eq(a->ops->micro(a, x, y, ET, 2, MICRO_GRAD_LAST, &la, &e), 0);
	ck_assert_int_eq(b->ops->micro(b, x, y, ET, 2, MICRO_GRAD, &lb, &e), 0);
	float *ga = xmalloc(sizeof(float) * t.total), *gb = xmalloc(sizeof(float) * t.total);
	a->ops->grad_get(a, ga, &e);
	b->ops->grad_get(b, gb, &e);
	ck_assert(la == lb && !memcmp(ga, gb, sizeof(float) * t.total));
	double v = 2.5;
	ck_assert_int_eq(a->ops->allreduce(a, &v, 1, &e), 0);
	ck_assert(v == 2.5);
	engine_free(a);
	engine_free(b);
	dist_close(d, &e);
	free(ga);
	free(gb);
	free(w);
	gpt_table_free(&t);
}
END_TEST

/* ------------------------------------------------------------------------
 * argv
 */
static const struct option lopts[] = {
	{"weights", required_argument, 0, 'w'}, {"train", required_argument, 0, 't'},
	{"gpus", required_argument, 0, 1},      {"group", required_argument, 0, 2},
	{"quiet", no_argument, 0, 'q'},         {"dist-init", required_argument, 0, 3},
	{"color", optional_argument, 0, 4},     {0, 0, 0, 0},
};

static void expect_argv(const char *in, const char *want)
{
	char *copy = xstrdup(in), *argv[32];
	int argc = 0;
	for (char *tok = strtok(copy, " "); tok; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	argv[argc] = NULL;
	char **out = dist_argv_drop(argc, argv, "w:t:qv", lopts, "gpus");
	char got[512] = "";
	for (char **p = out; *p; p++)
		snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", p == out ? "" : " ", *p);
	ck_assert_str_eq(got, want);
	free(out);
	free(copy);
}

START_TEST(argv_drop)
{
	expect_argv("prog --gpus 4 -w x", "prog -w x");
	expect_argv("prog -w x --gpus=4 -q", "prog -w x -q");
	expect_argv("prog --gpu 2 --gp=3 -q", "prog -q"); /* unambiguous abbreviations */
	expect_argv("prog --g 2 -q", "prog --g 2 -q");     /* ambiguous (gpus, group): not ours */
	expect_argv("prog --train --gpus -q", "prog --train --gpus -q"); /* --train's argument */
	expect_argv("prog -w --gpus --gpus 1", "prog -w --gpus");
	expect_argv("prog -qw --gpus -v", "prog -qw --gpus -v");        /* a cluster ending in w */
	expect_argv("prog -wfile --gpus 8", "prog -wfile");             /* argument attached */
	expect_argv("prog --color --gpus 2", "prog --color");           /* optional: only with = */
	expect_argv("prog --dist-init=x --gpus 2 -- --gpus 3", "prog --dist-init=x -- --gpus 3");
	expect_argv("prog - --gpus 2 file", "prog - file");
	expect_argv("prog", "prog");
	expect_argv("prog --gpus", "prog"); /* missing argument: getopt's error, nothing to keep */
}
END_TEST

/* ------------------------------------------------------------------------
 * slices: the micro-batches of P ranks are the 1-rank micro-batches
 */
static void make_shard(const char *path, size_t len)
{
	uint32_t *t = xmalloc(len * sizeof *t);
	for (size_t i = 0; i < len; i++)
		t[i] = (uint32_t)((i * 2654435761u) % 50000);
	struct gpt_err e;
	struct shard_writer_opts o = {.raw = 1, .threads = 1};
	struct shard_writer *w = shard_writer_open(path, &o, &e);
	ck_assert_msg(w != NULL, "%s", e.msg);
	ck_assert_int_eq(shard_writer_put(w, t, len, &e), 0);
	ck_assert_msg(shard_writer_close(w, -1, -1, &e) == 0, "%s", e.msg);
	free(t);
}

START_TEST(slices)
{
	const char *pat = test_path("slices_*.bin");
	make_shard(test_path("slices_0.bin"), 3000);
	make_shard(test_path("slices_1.bin"), 2100);
	const int T = 32;
	const int64_t B = 8 * T; /* the record's 8 micro-batches per step */
	struct gpt_err e = {{0}};
	int n1 = train_micro_batches(B, T, 1, &e);
	ck_assert_int_eq(n1, 8);
	struct loader_opts o1 = {.batch = (size_t)B, .world = 1};
	struct loader *one = loader_open(&pat, 1, &o1, &e);
	ck_assert_msg(one != NULL, "%s", e.msg);
	const int worlds[3] = {2, 4, 8};
	for (int wi = 0; wi < 3; wi++) {
		const int P = worlds[wi];
		int nm = train_micro_batches(B, T, P, &e);
		ck_assert_int_eq(nm, 8 / P);
		struct loader *l[8];
		for (int r = 0; r < P; r++) {
			struct loader_opts o = {.batch = (size_t)B, .world = P, .rank = r};
			l[r] = loader_open(&pat, 1, &o, &e);
			ck_assert_msg(l[r] != NULL, "%s", e.msg);
		}
		ck_assert_int_eq(loader_reset(one, &e), 0);
		for (int step = 0; step < 25; step++) { /* crosses both files and wraps */
			const uint32_t *g = loader_next(one, &e);
			ck_assert_ptr_nonnull(g);
			for (int r = 0; r < P; r++) {
				const uint32_t *p = loader_next(l[r], &e);
				ck_assert_ptr_nonnull(p);
				/* train.c: rank r's micro-batch k = inputs p + k*T, targets p + k*T + 1 */
				for (int k = 0; k < nm; k++) {
					int gk = r * nm + k; /* its place among the 1-rank micro-batches */
					ck_assert_msg(!memcmp(p + (size_t)k * T, g + (size_t)gk * T, sizeof *p * (size_t)(T + 1)),
					              "P %d step %d rank %d micro %d differs from micro %d", P, step, r, k, gk);
				}
			}
		}
		for (int r = 0; r < P; r++)
			loader_close(l[r]);
	}
	loader_close(one);
	/* validation: one sequence per rank and step, val_tokens / (P * T) steps */
	struct loader_opts vo = {.batch = (size_t)(4 * T), .world = 4, .rank = 3};
	struct loader *v = loader_open(&pat, 1, &vo, &e);
	ck_assert_int_eq(loader_val_steps(v, (uint64_t)(8 * T), &e), 2);
	ck_assert_uint_eq(loader_local_batch(v), (size_t)T);
	loader_close(v);
	/* the arithmetic's errors name the numbers */
	ck_assert_int_eq(train_micro_batches(B, T, 3, &e), -1);
	ASSERT_HAS(e.msg, "--batch-tokens 256 is not a multiple of 3 ranks x --seq-len 32 = 96");
	ck_assert_int_eq(train_micro_batches(B, T, 16, &e), -1);
	ASSERT_HAS(e.msg, "--batch-tokens 256 is less than 16 ranks x --seq-len 32 = 512");
	ck_assert_int_eq(train_micro_batches(B, 48, 1, &e), -1);
	ASSERT_HAS(e.msg, "--batch-tokens 256 is not a multiple of --seq-len 48");
}
END_TEST

Suite *dist_suite(void)
{
	Suite *s = suite_create("dist");
	TCase *c = tcase_create("dist");
	tcase_set_timeout(c, 60);
	tcase_add_test(c, env_launchers);
	tcase_add_test(c, env_errors);
	tcase_add_test(c, init_specs);
	tcase_add_test(c, collectives_file);
	tcase_add_test(c, collectives_tcp);
	tcase_add_test(c, collectives_master_env);
	tcase_add_test(c, world_one);
	tcase_add_test(c, out_of_step);
	tcase_add_test(c, refusals);
	tcase_add_test(c, refusal_world);
	tcase_add_test(c, stale_files);
	tcase_add_test(c, stale_nonce_refused);
	tcase_add_test(c, failure_vanished);
	tcase_add_test(c, failure_timeout);
	tcase_add_test(c, failure_abort);
	tcase_add_test(c, watchdog_abort);
	tcase_add_test(c, watchdog_killed);
	tcase_add_test(c, watchdog_in_collective);
	tcase_add_test(c, watchdog_clean_close);
	tcase_add_test(c, engine_over_ranks);
	tcase_add_test(c, engine_world_one);
	tcase_add_test(c, argv_drop);
	tcase_add_test(c, slices);
	suite_add_tcase(s, c);
	return s;
}

CHECK_MAIN(dist_suite)
