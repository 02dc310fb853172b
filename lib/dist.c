/*
 * dist.c - ranks, rendezvous, collectives over a star of TCP connections,
 * aborts and the watchdog, and the --gpus launcher. See dist.h.
 *
 * Sections: environment; rendezvous spec; sockets; frames and transfers;
 * aborts; rendezvous; open, close and accessors; collectives; watchdog;
 * spawn; argv.
 */
#include "dist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DIST_MAGIC 0x47505444u /* "GPTD"; read back byte-swapped from another byte order */
#define DIST_VERSION 1u
#define SEG_BYTES (1u << 20) /* collective segment (a multiple of 8) */
#define MAX_WORLD 65536
#define ABORT_MAX 4000 /* bytes of an abort message */

enum { CH_DATA = 0, CH_CTRL = 1 };
enum { FR_DATA = 1, FR_ABORT = 2 };
enum { OP_BCAST = 1, OP_SUM_F64, OP_MEAN_F32, OP_BARRIER };
enum { CLAIM_NONE = 0, CLAIM_MAIN, CLAIM_WATCH };
/* hello replies */
enum { RP_OK = 0, RP_VERSION, RP_WORLD, RP_RANGE, RP_DUP, RP_JOB, RP_STALE, RP_ORDER };

/* ------------------------------------------------------------------------
 * Environment
 */
static const char *env(const char *k)
{
	const char *v = getenv(k);
	return v && *v ? v : NULL;
}

static int env_int(const char *k, long lo, long hi, long *out, struct gpt_err *e)
{
	const char *v = env(k);
	if (parse_long(v, lo, hi, out))
		return gpt_errf(e, "%s='%s' is not a number in %ld..%ld", k, v, lo, hi);
	return 0;
}

/* SLURM_STEP_TASKS_PER_NODE: "2(x3),1" -> entry `node` (the nodes in
 * order); node < 0: the count if every node has the same. */
static int slurm_tasks_per_node(const char *var, const char *s, long node, long *out,
                                struct gpt_err *e)
{
	long idx = 0, first = -1;
	int same = 1;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		long cnt = strtol(p, &end, 10), rep = 1;
		if (end == p || errno || cnt < 1)
			goto bad;
		p = end;
		if (*p == '(') {
			if (p[1] != 'x')
				goto bad;
			rep = strtol(p + 2, &end, 10);
			if (end == p + 2 || *end != ')' || rep < 1)
				goto bad;
			p = end + 1;
		}
		if (first < 0)
			first = cnt;
		same &= cnt == first;
		if (node >= idx && node < idx + rep) {
			*out = cnt;
			return 0;
		}
		idx += rep;
		if (*p == ',')
			p++;
		else if (*p)
			goto bad;
	}
	if (first < 0)
		goto bad;
	if (node >= 0)
		return gpt_errf(e, "SLURM_NODEID=%ld but %s='%s' lists %ld nodes", node, var, s, idx);
	if (!same)
		return gpt_errf(e, "%s='%s' differs between nodes and SLURM_NODEID is not set", var, s);
	*out = first;
	return 0;
bad:
	return gpt_errf(e, "%s='%s' is not a task count list like '2(x3),1'", var, s);
}

static void job_id(struct dist_info *in)
{
	const char *v;
	in->job[0] = 0;
	if ((v = env("GPT_DIST_JOB")))
		snprintf(in->job, sizeof in->job, "gpt:%s", v);
	else if ((v = env("SLURM_JOB_ID"))) {
		const char *s = env("SLURM_STEP_ID") ? env("SLURM_STEP_ID") : env("SLURM_STEPID");
		snprintf(in->job, sizeof in->job, "slurm:%s.%s", v, s ? s : "");
	} else if ((v = env("PMIX_NAMESPACE")))
		snprintf(in->job, sizeof in->job, "pmix:%s", v);
	else if ((v = env("OMPI_MCA_orte_ess_jobid")))
		snprintf(in->job, sizeof in->job, "ompi:%s", v);
	else if ((v = env("TORCHELASTIC_RUN_ID")))
		snprintf(in->job, sizeof in->job, "torchelastic:%s", v);
}

static void add_var(struct dist_info *in, const char *k)
{
	size_t n = strlen(in->vars);
	const char *v = env(k);
	if (v && n < sizeof in->vars - 1)
		snprintf(in->vars + n, sizeof in->vars - n, "%s%s=%s", n ? " " : "", k, v);
}

int dist_env(struct dist_info *in, struct gpt_err *e)
{
	static const struct {
		const char *name, *rank, *world, *lrank, *lworld;
	} L[] = {
		{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
		{"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
		 "OMPI_COMM_WORLD_LOCAL_SIZE"},
		{"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
		{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", NULL},
	};
	memset(in, 0, sizeof *in);
	in->world = in->local_world = 1;
	in->local_known = 1;
	snprintf(in->launcher, sizeof in->launcher, "none");
	for (size_t i = 0; i < sizeof L / sizeof *L; i++) {
		int slurm = L[i].lworld == NULL;
		int has_r = env(L[i].rank) != NULL, has_w = env(L[i].world) != NULL;
		/* Slurm's SLURM_NTASKS outlives the job step (salloc, sbatch): only
		 * SLURM_PROCID says we are one of the step's tasks */
		if (!has_r && (slurm || !has_w))
			continue;
		if (!has_r || !has_w)
			return gpt_errf(e, "%s is set but %s is not (both or neither)",
			                has_r ? L[i].rank : L[i].world, has_r ? L[i].world : L[i].rank);
		long rank, world;
		if (env_int(L[i].world, 1, MAX_WORLD, &world, e) || env_int(L[i].rank, 0, MAX_WORLD, &rank, e))
			return -1;
		if (rank >= world)
			return gpt_errf(e, "%s=%ld is outside %s=%ld", L[i].rank, rank, L[i].world, world);
		snprintf(in->launcher, sizeof in->launcher, "%s", L[i].name);
		in->rank = (int)rank;
		in->world = (int)world;
		add_var(in, L[i].rank);
		add_var(in, L[i].world);
		long lrank = -1, lworld = -1;
		const char *lwvar = L[i].lworld;
		if (slurm) {
			lwvar = env("SLURM_STEP_TASKS_PER_NODE") ? "SLURM_STEP_TASKS_PER_NODE" : "SLURM_NTASKS_PER_NODE";
			if (env(L[i].lrank) && !env(lwvar))
				return gpt_errf(e, "SLURM_LOCALID is set but neither SLURM_STEP_TASKS_PER_NODE "
				                   "nor SLURM_NTASKS_PER_NODE is");
			if (env(L[i].lrank)) {
				long node = -1;
				if (env("SLURM_NODEID") && env_int("SLURM_NODEID", 0, MAX_WORLD, &node, e))
					return -1;
				if (env_int(L[i].lrank, 0, MAX_WORLD, &lrank, e) ||
				    slurm_tasks_per_node(lwvar, env(lwvar), node, &lworld, e))
					return -1;
			}
		} else {
			int hl = env(L[i].lrank) != NULL, hw = env(lwvar) != NULL;
			if (hl != hw)
				return gpt_errf(e, "%s is set but %s is not (both or neither)", hl ? L[i].lrank : lwvar,
				                hl ? lwvar : L[i].lrank);
			if (hl && (env_int(lwvar, 1, MAX_WORLD, &lworld, e) || env_int(L[i].lrank, 0, MAX_WORLD, &lrank, e)))
				return -1;
		}
		if (lrank >= 0) {
			if (lrank >= lworld)
				return gpt_errf(e, "%s=%ld is outside %s=%ld", L[i].lrank, lrank, lwvar, lworld);
			if (lworld > world)
				return gpt_errf(e, "%s=%ld exceeds %s=%ld", lwvar, lworld, L[i].world, world);
			in->local_rank = (int)lrank;
			in->local_world = (int)lworld;
			add_var(in, L[i].lrank);
			add_var(in, lwvar);
		} else {
			in->local_known = 0;
			in->local_rank = in->rank;
			in->local_world = in->world;
		}
		break;
	}
	job_id(in);
	return 0;
}

void dist_info_describe(const struct dist_info *in, char *buf, size_t n)
{
	snprintf(buf, n, "rank %d of %d (local %d of %d%s), launcher %s%s%s%s%s", in->rank, in->world,
	         in->local_rank, in->local_world, in->local_known ? "" : ", guessed", in->launcher,
	         in->vars[0] ? ": " : "", in->vars, in->job[0] ? ", job " : "", in->job);
}

/* ------------------------------------------------------------------------
 * Rendezvous spec
 */
struct spec {
	int file;
	char path[1024];
	char host[256], port[16];
};

/* "HOST:PORT" or "[V6]:PORT" */
static int split_host_port(const char *s, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon;
	size_t hl;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		hl = (size_t)(close - s - 1);
		memcpy(host, s + 1, hl < hn ? hl : 0);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
		if (hl < hn)
			memcpy(host, s, hl);
	}
	if (hl == 0 || hl >= hn)
		return -1;
	host[hl] = 0;
	long p;
	if (parse_long(colon + 1, 1, 65535, &p))
		return -1;
	snprintf(port, pn, "%ld", p);
	return 0;
}

static int parse_spec(const char *s, struct spec *sp, struct gpt_err *e)
{
	memset(sp, 0, sizeof *sp);
	if (!strncmp(s, "file:", 5)) {
		if (!s[5] || strlen(s + 5) >= sizeof sp->path)
			return gpt_errf(e, "--dist-init '%s': file:PATH needs a path", s);
		sp->file = 1;
		snprintf(sp->path, sizeof sp->path, "%s", s + 5);
		return 0;
	}
	if (!strncmp(s, "tcp:", 4)) {
		if (split_host_port(s + 4, sp->host, sizeof sp->host, sp->port, sizeof sp->port))
			return gpt_errf(e, "--dist-init '%s': not tcp:HOST:PORT (PORT 1..65535)", s);
		return 0;
	}
	return gpt_errf(e, "--dist-init '%s' is neither file:PATH nor tcp:HOST:PORT", s);
}

int dist_resolve_init(const char *init, char *out, size_t n, struct gpt_err *e)
{
	char buf[1100];
	if (!init) {
		const char *a = env("MASTER_ADDR"), *p = env("MASTER_PORT");
		if (!a && !p)
			return gpt_errf(e, "the ranks need a rendezvous: give --dist-init file:PATH (a shared "
			                   "file system) or tcp:HOST:PORT, or set MASTER_ADDR and MASTER_PORT");
		if (!a || !p)
			return gpt_errf(e, "%s is set but %s is not (both or neither)", a ? "MASTER_ADDR" : "MASTER_PORT",
			                a ? "MASTER_PORT" : "MASTER_ADDR");
		long port;
		if (parse_long(p, 1, 65535, &port))
			return gpt_errf(e, "MASTER_PORT='%s' is not a port (1..65535)", p);
		snprintf(buf, sizeof buf, strchr(a, ':') && a[0] != '[' ? "tcp:[%s]:%s" : "tcp:%s:%s", a, p);
		init = buf;
	}
	struct spec sp;
	if (parse_spec(init, &sp, e))
		return -1;
	if (strlen(init) >= n)
		return gpt_errf(e, "--dist-init '%s' is too long", init);
	snprintf(out, n, "%s", init);
	return 0;
}

/* ------------------------------------------------------------------------
 * Sockets
 */
struct peer {
	int rank;
	int fd[2]; /* CH_DATA, CH_CTRL */
};

struct dist {
	struct dist_info info;
	double timeout;
	int np;            /* peers: world - 1 on rank 0, else 1 (rank 0) */
	struct peer *peer; /* rank 0: peer[i].rank = i + 1 */
	uint64_t job;
	uint64_t seq;      /* collectives so far */
	int broken;        /* a collective failed: broken_msg */
	char broken_msg[512];
	uint8_t *gather;   /* rank 0: np segments */
	double *acc;       /* rank 0: f32 mean accumulator, one segment of floats */
	pthread_mutex_t ctrl_mu; /* writers of control connections */
	pthread_t watch_thread;
	int watch_pipe[2];
	atomic_int watching;
	atomic_int claimed; /* who reports a failure: CLAIM_MAIN or CLAIM_WATCH */
	int abort_origin;   /* the rank whose abort we received, -1: none */
	char abort_msg[ABORT_MAX + 1];
};

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void tune(int fd)
{
	int one = 1, idle = 60, intvl = 10, cnt = 6;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* milliseconds until deadline for poll(), at least 0 */
static int ms_left(double deadline)
{
	double s = deadline - now_seconds();
	if (s <= 0)
		return 0;
	return s > 1e6 ? 1000000000 : (int)(s * 1e3) + 1;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Move exactly n bytes (send or receive) on a non-blocking fd before the
 * deadline. 0; -1 with errno (0: EOF, ETIMEDOUT: deadline). */
static int io_full(int fd, int send_dir, void *buf, size_t n, double deadline)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t k = send_dir ? send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, n, MSG_DONTWAIT);
		if (k > 0) {
			p += k, n -= (size_t)k;
			continue;
		}
		if (k == 0 && !send_dir) {
			errno = 0;
			return -1;
		}
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		struct pollfd pf = {fd, send_dir ? POLLOUT : POLLIN, 0};
		int ms = ms_left(deadline);
		if (ms == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (poll(&pf, 1, ms) < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Frames and transfers
 */
struct hdr {
	uint32_t kind; /* FR_DATA, FR_ABORT */
	uint32_t op;   /* OP_*; FR_ABORT: the rank that failed */
	uint64_t seq;  /* collective number; FR_ABORT: 0 */
	uint64_t total; /* bytes of the whole collective */
	uint64_t len;  /* payload bytes after this header */
};
_Static_assert(sizeof(struct hdr) == 32, "frame header layout");

static const char *op_name(uint32_t op)
{
	switch (op) {
	case OP_BCAST: return "bcast";
	case OP_SUM_F64: return "allreduce_f64";
	case OP_MEAN_F32: return "allreduce_f32_mean";
	case OP_BARRIER: return "barrier";
	}
	return "unknown";
}

static int me(const struct dist *d) { return d->info.rank; }

/* A failure on the main thread: claim the report (if the watchdog has,
 * it is about to end the process: wait for it), mark the star broken. */
static int fail(struct dist *d, struct gpt_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct dist *d, struct gpt_err *e, const char *fmt, ...)
{
	int c = CLAIM_NONE;
	if (!atomic_compare_exchange_strong(&d->claimed, &c, CLAIM_MAIN) && c == CLAIM_WATCH)
		for (;;)
			pause();
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->broken_msg, sizeof d->broken_msg, fmt, ap);
	va_end(ap);
	d->broken = 1;
	return gpt_errf(e, "%s", d->broken_msg);
}

/* Read one frame from peer p's control connection (something is there to
 * read). 1: an abort (*origin failed with msg); 2: the connection is lost
 * (the text in lost). */
static int read_ctrl(struct dist *d, int p, int *origin, char *msg, size_t mn, char *lost, size_t ln)
{
	int fd = d->peer[p].fd[CH_CTRL];
	double dl = now_seconds() + (d->timeout < 10 ? d->timeout : 10);
	struct hdr h;
	if (io_full(fd, 0, &h, sizeof h, dl))
		goto lost;
	if (h.kind != FR_ABORT || h.len > ABORT_MAX || h.op >= (uint32_t)d->info.world) {
		errno = EPROTO;
		goto lost;
	}
	char buf[ABORT_MAX + 1];
	if (io_full(fd, 0, buf, (size_t)h.len, dl))
		goto lost;
	buf[h.len] = 0;
	*origin = (int)h.op;
	snprintf(msg, mn, "%s", buf);
	return 1;
lost:
	snprintf(lost, ln, "lost the connection to rank %d (%s)", d->peer[p].rank,
	         errno == 0 || errno == ECONNRESET || errno == EPIPE ? "peer closed"
	         : errno == ETIMEDOUT                               ? "timed out"
	                                                            : strerror(errno));
	return 2;
}

/* Main thread: read peer p's control connection and fail for what is
 * there (an abort is kept for dist_abort to pass on). */
static int ctrl_fail(struct dist *d, int p, struct gpt_err *e)
{
	char lost[256];
	int origin;
	if (read_ctrl(d, p, &origin, d->abort_msg, sizeof d->abort_msg, lost, sizeof lost) == 1) {
		d->abort_origin = origin;
		return fail(d, e, "rank %d failed: %s", origin, d->abort_msg);
	}
	return fail(d, e, "rank %d: %s", me(d), lost);
}

/* The data connection to peer p failed (err 0: EOF). The peer may have
 * said why on its control connection just before: give that a moment. */
static int peer_lost(struct dist *d, int p, int err, struct gpt_err *e)
{
	if (atomic_load(&d->watching)) {
		for (int i = 0; i < 40 && atomic_load(&d->claimed) != CLAIM_WATCH; i++)
			sleep_s(0.025);
	} else {
		struct pollfd pf = {d->peer[p].fd[CH_CTRL], POLLIN, 0};
		double dl = now_seconds() + 1.0;
		int r;
		while ((r = poll(&pf, 1, ms_left(dl))) < 0 && errno == EINTR)
			;
		if (r > 0 && ctrl_fail(d, p, e) && d->abort_origin >= 0)
			return -1; /* the peer's own message */
	}
	/* a reset or a broken pipe is the peer's process gone too */
	return fail(d, e, "rank %d: lost the connection to rank %d (%s)", me(d), d->peer[p].rank,
	            !err || err == ECONNRESET || err == EPIPE ? "peer closed" : strerror(err));
}

struct xfer {
	int p;         /* peer index */
	int send;      /* 1: send h + buf; 0: receive a frame like h into buf */
	struct hdr h;
	uint8_t *buf;
	size_t done;   /* bytes moved, header included */
	struct hdr got;
};

static size_t xfer_size(const struct xfer *x) { return sizeof(struct hdr) + (size_t)x->h.len; }

/* Move every x[i] at once (poll), giving up after the timeout without
 * progress. poll_ctrl: also watch the peers' control connections for
 * aborts (unless the watchdog does). */
static int transfer(struct dist *d, struct xfer *x, int n, int poll_ctrl, struct gpt_err *e)
{
	struct pollfd *pf = xmalloc(sizeof *pf * (size_t)(2 * n));
	int *who = xmalloc(sizeof *who * (size_t)(2 * n));
	char *ctrl_seen = xcalloc((size_t)d->np, 1);
	double deadline = now_seconds() + d->timeout;
	int rc = 0;
	for (;;) {
		int k = 0, nd;
		for (int i = 0; i < n; i++)
			if (x[i].done < xfer_size(&x[i])) {
				pf[k] = (struct pollfd){d->peer[x[i].p].fd[CH_DATA], x[i].send ? POLLOUT : POLLIN, 0};
				who[k++] = i;
			}
		if (k == 0)
			break;
		nd = k;
		if (poll_ctrl && !atomic_load(&d->watching)) {
			memset(ctrl_seen, 0, (size_t)d->np);
			for (int j = 0; j < nd; j++) {
				int p = x[who[j]].p;
				if (!ctrl_seen[p]) {
					ctrl_seen[p] = 1;
					pf[k] = (struct pollfd){d->peer[p].fd[CH_CTRL], POLLIN, 0};
					who[k++] = p;
				}
			}
		}
		int ms = ms_left(deadline);
		if (ms == 0) {
			const struct xfer *t = &x[who[0]];
			rc = fail(d, e, "rank %d: timed out after %g s waiting for rank %d (%s #%" PRIu64 ")", me(d),
			          d->timeout, d->peer[t->p].rank, op_name(t->h.op), t->h.seq);
			break;
		}
		int r = poll(pf, (nfds_t)k, ms);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = fail(d, e, "rank %d: poll:", me(d));
			break;
		}
		int progress = 0;
		for (int j = 0; j < nd && !rc; j++) {
			if (!pf[j].revents)
				continue;
			struct xfer *t = &x[who[j]];
			int fd = pf[j].fd;
			ssize_t got;
			if (t->send) {
				const uint8_t *src = t->done < sizeof t->h ? (const uint8_t *)&t->h + t->done
				                                           : t->buf + (t->done - sizeof t->h);
				size_t len = t->done < sizeof t->h ? sizeof t->h - t->done : xfer_size(t) - t->done;
				got = send(fd, src, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			} else {
				uint8_t *dst = t->done < sizeof t->got ? (uint8_t *)&t->got + t->done
				                                       : t->buf + (t->done - sizeof t->got);
				size_t len = t->done < sizeof t->got ? sizeof t->got - t->done : xfer_size(t) - t->done;
				got = recv(fd, dst, len, MSG_DONTWAIT);
				if (got == 0) {
					rc = peer_lost(d, t->p, 0, e);
					break;
				}
			}
			if (got < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					continue;
				rc = peer_lost(d, t->p, errno, e);
				break;
			}
			progress = 1;
			size_t before = t->done;
			t->done += (size_t)got;
			if (!t->send && before < sizeof t->got && t->done >= sizeof t->got) {
				const struct hdr *g = &t->got, *w = &t->h;
				if (g->kind != FR_DATA || g->op != w->op || g->seq != w->seq || g->total != w->total ||
				    g->len != w->len) {
					if (g->kind != FR_DATA || g->op < OP_BCAST || g->op > OP_BARRIER)
						rc = fail(d, e, "rank %d: garbled data from rank %d", me(d), d->peer[t->p].rank);
					else
						rc = fail(d, e,
						          "rank %d: rank %d is out of step: it is in %s of %" PRIu64
						          " bytes (collective #%" PRIu64 "), this rank in %s of %" PRIu64
						          " bytes (#%" PRIu64 ")",
						          me(d), d->peer[t->p].rank, op_name(g->op), g->total, g->seq,
						          op_name(w->op), w->total, w->seq);
					break;
				}
			}
		}
		/* the control connections only when the data did not move: a
		 * collective whose data all arrived has succeeded, and an abort
		 * behind it is the next collective's (or the watchdog's) news */
		for (int j = nd; j < k && !rc && !progress; j++) {
			if (!pf[j].revents)
				continue;
			rc = ctrl_fail(d, who[j], e);
		}
		if (rc)
			break;
		if (progress)
			deadline = now_seconds() + d->timeout;
	}
	free(pf);
	free(who);
	free(ctrl_seen);
	return rc;
}

/* ------------------------------------------------------------------------
 * Aborts
 */
static void send_abort(struct dist *d, int p, int origin, const char *msg)
{
	int fd = d->peer[p].fd[CH_CTRL];
	if (fd < 0)
		return;
	size_t len = strlen(msg);
	if (len > ABORT_MAX)
		len = ABORT_MAX;
	struct hdr h = {FR_ABORT, (uint32_t)origin, 0, 0, len};
	double dl = now_seconds() + 2.0;
	if (io_full(fd, 1, &h, sizeof h, dl) == 0)
		io_full(fd, 1, (void *)msg, len, dl);
}

/* Tell the others that `origin` failed with msg: rank 0 tells every rank
 * but origin and `skip_rank`; another rank tells rank 0 (if origin is it). */
static void broadcast_abort(struct dist *d, int origin, const char *msg, int skip_rank)
{
	double dl = now_seconds() + 2.0;
	while (pthread_mutex_trylock(&d->ctrl_mu)) {
		if (now_seconds() > dl)
			return;
		sleep_s(0.01);
	}
	for (int p = 0; p < d->np; p++) {
		int r = d->peer[p].rank;
		if (r == origin || r == skip_rank)
			continue;
		if (me(d) != 0 && origin != me(d))
			continue; /* rank 0 knows already: it told us */
		send_abort(d, p, origin, msg);
	}
	pthread_mutex_unlock(&d->ctrl_mu);
}

void dist_abort(struct dist *d, const char *msg)
{
	if (!d || d->info.world == 1 || !d->peer)
		return;
	int c = CLAIM_NONE;
	if (!atomic_compare_exchange_strong(&d->claimed, &c, CLAIM_MAIN) && c == CLAIM_WATCH)
		return; /* the watchdog reports and relays */
	if (d->abort_origin >= 0) { /* we fail because another rank did: pass its message on */
		broadcast_abort(d, d->abort_origin, d->abort_msg, -1);
		return;
	}
	char own[32];
	int n = snprintf(own, sizeof own, "rank %d: ", me(d));
	if (!strncmp(msg, own, (size_t)n))
		msg += n;
	broadcast_abort(d, me(d), msg, -1);
}

static struct dist *die_dist;
static void on_die(const char *msg)
{
	if (die_dist)
		dist_abort(die_dist, msg);
}

void dist_abort_on_die(struct dist *d)
{
	die_dist = d;
	util_at_die(d ? on_die : NULL);
}

/* ------------------------------------------------------------------------
 * Rendezvous
 */
struct hello {
	uint32_t magic, version, rank, world, channel, pad;
	uint64_t job, nonce;
};
struct reply {
	uint32_t magic, status, len, pad;
};

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t random64(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
		v = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(now_seconds() * 1e9);
	return v ? v : 1;
}

static int is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return 0;
}

static int listen_on(const struct sockaddr *sa, socklen_t len, int *out)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	if (bind(fd, sa, len) || listen(fd, 128)) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	set_nonblock(fd);
	*out = fd;
	return 0;
}

/* Rank 0's listening socket; host/port: what to advertise in a file. */
static int rdv_listen(struct dist *d, const struct spec *sp, int *lfd, char *host, size_t hn,
                      int *port, struct gpt_err *e)
{
	if (sp->file) {
		int local = d->info.local_known && d->info.local_world == d->info.world;
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
		a.sin_addr.s_addr = htonl(local ? INADDR_LOOPBACK : INADDR_ANY);
		if (listen_on((struct sockaddr *)&a, sizeof a, lfd))
			return gpt_errf(e, "rank 0: cannot listen on a TCP port: %s", strerror(errno));
		socklen_t sl = sizeof a;
		getsockname(*lfd, (struct sockaddr *)&a, &sl);
		*port = ntohs(a.sin_port);
		if (local)
			snprintf(host, hn, "127.0.0.1");
		else if (gethostname(host, hn)) {
			close(*lfd);
			return gpt_errf(e, "rank 0: gethostname: %s", strerror(errno));
		}
		return 0;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	int g = getaddrinfo(sp->host, sp->port, &hints, &res);
	if (g)
		return gpt_errf(e, "rank 0: tcp:%s:%s: %s", sp->host, sp->port, gai_strerror(g));
	struct sockaddr_storage ss;
	socklen_t sl = (socklen_t)res->ai_addrlen;
	memcpy(&ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (!is_loopback((struct sockaddr *)&ss)) { /* every interface of this family */
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_ANY);
		else
			((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_any;
	}
	if (listen_on((struct sockaddr *)&ss, sl, lfd))
		return gpt_errf(e, "rank 0: cannot listen on tcp:%s:%s: %s", sp->host, sp->port, strerror(errno));
	*port = atoi(sp->port);
	snprintf(host, hn, "%s", sp->host);
	return 0;
}

static int write_rdv_file(const char *path, const char *host, int port, uint64_t nonce,
                          struct gpt_err *e)
{
	char tmp[1100];
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		return gpt_errf(e, "%s: cannot write the rendezvous file: %s", path, strerror(errno));
	int bad = fprintf(f, "gpt-dist %u %s %d %016" PRIx64 "\n", DIST_VERSION, host, port, nonce) < 0;
	bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path)) {
		int err = errno;
		unlink(tmp);
		return gpt_errf(e, "%s: cannot write the rendezvous file: %s", path, strerror(err));
	}
	return 0;
}

static void reply(int fd, uint32_t status, const char *msg, double dl)
{
	struct reply r = {DIST_MAGIC, status, (uint32_t)strlen(msg), 0};
	if (io_full(fd, 1, &r, sizeof r, dl) == 0)
		io_full(fd, 1, (void *)msg, r.len, dl);
}

/* Rank 0: accept the 2 (world - 1) connections. */
static int rdv_serve(struct dist *d, const struct spec *sp, struct gpt_err *e)
{
	int lfd, port = 0;
	char host[256];
	uint64_t nonce = sp->file ? random64() : 0;
	if (rdv_listen(d, sp, &lfd, host, sizeof host, &port, e))
		return -1;
	if (sp->file && write_rdv_file(sp->path, host, port, nonce, e)) {
		close(lfd);
		return -1;
	}
	const int P = d->info.world;
	int need = 2 * (P - 1), have = 0, rc = 0;
	char refused[300] = "";
	double deadline = now_seconds() + d->timeout;
	while (have < need) {
		struct pollfd pf = {lfd, POLLIN, 0};
		int ms = ms_left(deadline);
		if (ms == 0) {
			char missing[200] = "";
			size_t m = 0;
			int nm = 0;
			for (int p = 0; p < d->np; p++)
				if (d->peer[p].fd[CH_DATA] < 0 || d->peer[p].fd[CH_CTRL] < 0) {
					if (nm++ < 12 && m < sizeof missing - 16)
						m += (size_t)snprintf(missing + m, sizeof missing - m, "%s%d", m ? ", " : "",
						                      d->peer[p].rank);
				}
			if (nm > 12)
				snprintf(missing + m, sizeof missing - m, " and %d more", nm - 12);
			char where[1100];
			if (sp->file)
				snprintf(where, sizeof where, "rendezvous file %s", sp->path);
			else
				snprintf(where, sizeof where, "listening on port %s", sp->port);
			rc = gpt_errf(e, "rank 0: timed out after %g s waiting for rank%s %s to connect (%s)%s%s",
			              d->timeout, nm > 1 ? "s" : "", missing, where, refused[0] ? "; " : "", refused);
			break;
		}
		if (poll(&pf, 1, ms) <= 0)
			continue;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue;
		double dl = now_seconds() + (d->timeout < 10 ? d->timeout : 10);
		struct hello h;
		if (io_full(fd, 0, &h, sizeof h, dl)) {
			close(fd);
			continue;
		}
		char msg[256] = "";
		uint32_t st = RP_OK;
		if (h.magic != DIST_MAGIC) {
			if (h.magic == __builtin_bswap32(DIST_MAGIC)) {
				st = RP_ORDER;
				snprintf(msg, sizeof msg, "a rank with another byte order");
			} else { /* not one of us */
				close(fd);
				continue;
			}
		} else if (h.version != DIST_VERSION) {
			st = RP_VERSION;
			snprintf(msg, sizeof msg, "protocol version %u, rank 0 speaks %u (another gpt-* build?)",
			         h.version, DIST_VERSION);
		} else if (h.world != (uint32_t)P) {
			st = RP_WORLD;
			snprintf(msg, sizeof msg, "rank %u says the world has %u ranks, rank 0 says %d", h.rank,
			         h.world, P);
		} else if (h.rank == 0 || h.rank >= (uint32_t)P || h.channel > CH_CTRL) {
			st = RP_RANGE;
			snprintf(msg, sizeof msg, "rank %u is not a rank 1..%d of this world%s", h.rank, P - 1,
			         h.rank == 0 ? " (two processes are rank 0)" : "");
		} else if (h.nonce != nonce) {
			st = RP_STALE;
			snprintf(msg, sizeof msg, "rank %u read a stale rendezvous file (another run's)", h.rank);
		} else if (h.job != d->job) {
			st = RP_JOB;
			snprintf(msg, sizeof msg,
			         "rank %u belongs to another job (the job token differs: another launch, world "
			         "or options)", h.rank);
		} else if (d->peer[h.rank - 1].fd[h.channel] >= 0) {
			st = RP_DUP;
			snprintf(msg, sizeof msg, "rank %u is already connected (two processes are rank %u)", h.rank,
			         h.rank);
		}
		reply(fd, st, msg, dl);
		if (st != RP_OK) {
			snprintf(refused, sizeof refused, "refused: %s", msg);
			close(fd);
			continue;
		}
		tune(fd);
		d->peer[h.rank - 1].fd[h.channel] = fd;
		have++;
	}
	close(lfd);
	if (sp->file)
		unlink(sp->path);
	return rc;
}

/* Rank r > 0: read the rendezvous file. 0 ok; 1 not there yet (note set);
 * -1 malformed. */
static int read_rdv_file(const char *path, char *host, size_t hn, char *port, size_t pn,
                         uint64_t *nonce, char *note, size_t nn, struct gpt_err *e)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(note, nn, "%s: %s", path, strerror(errno));
		return 1;
	}
	char line[512];
	int ok = fgets(line, sizeof line, f) != NULL;
	fclose(f);
	unsigned ver;
	char h[256];
	int p;
	unsigned long long nc;
	if (!ok || sscanf(line, "gpt-dist %u %255s %d %llx", &ver, h, &p, &nc) != 4 || p < 1 || p > 65535)
		return gpt_errf(e, "%s: not a gpt-train rendezvous file", path);
	if (ver != DIST_VERSION)
		return gpt_errf(e, "%s: rendezvous protocol version %u, this program speaks %u", path, ver,
		                DIST_VERSION);
	snprintf(host, hn, "%s", h);
	snprintf(port, pn, "%d", p);
	*nonce = nc;
	return 0;
}

/* Connect to host:port before the deadline; -1 with note. */
static int connect_to(const char *host, const char *port, double deadline, char *note, size_t nn)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res, *a;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g) {
		snprintf(note, nn, "cannot resolve '%s': %s", host, gai_strerror(g));
		return -1;
	}
	int fd = -1;
	for (a = res; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		int err = 0;
		if (connect(fd, a->ai_addr, a->ai_addrlen)) {
			err = errno;
			if (err == EINPROGRESS) {
				struct pollfd pf = {fd, POLLOUT, 0};
				double dl = now_seconds() + 5.0;
				if (dl > deadline)
					dl = deadline;
				int r;
				while ((r = poll(&pf, 1, ms_left(dl))) < 0 && errno == EINTR)
					;
				socklen_t sl = sizeof err;
				if (r <= 0)
					err = ETIMEDOUT;
				else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl))
					err = errno;
			}
		}
		if (err) {
			snprintf(note, nn, "%s:%s: %s", host, port, strerror(err));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* Rank r > 0: one connection (channel ch) to rank 0. */
static int rdv_join(struct dist *d, const struct spec *sp, int ch, double deadline, struct gpt_err *e)
{
	char note[1400] = "", host[256], port[16];
	double pause_s = 0.02;
	for (;;) {
		uint64_t nonce = 0;
		int fd = -1;
		if (sp->file) {
			int r = read_rdv_file(sp->path, host, sizeof host, port, sizeof port, &nonce, note,
			                      sizeof note, e);
			if (r < 0)
				return -1;
			if (r == 0)
				fd = connect_to(host, port, deadline, note, sizeof note);
		} else {
			snprintf(host, sizeof host, "%s", sp->host);
			snprintf(port, sizeof port, "%s", sp->port);
			fd = connect_to(host, port, deadline, note, sizeof note);
		}
		if (fd >= 0) {
			struct hello h = {DIST_MAGIC, DIST_VERSION, (uint32_t)me(d), (uint32_t)d->info.world,
			                  (uint32_t)ch, 0, d->job, nonce};
			struct reply rp;
			double dl = now_seconds() + (d->timeout < 10 ? d->timeout : 10);
			char msg[257] = "";
			if (io_full(fd, 1, &h, sizeof h, dl) || io_full(fd, 0, &rp, sizeof rp, dl) ||
			    rp.magic != DIST_MAGIC || rp.len > 256 || io_full(fd, 0, msg, rp.len, dl)) {
				snprintf(note, sizeof note, "%s:%s: no answer to the hello", host, port);
				close(fd);
			} else {
				msg[rp.len] = 0;
				if (rp.status == RP_OK) {
					tune(fd);
					d->peer[0].fd[ch] = fd;
					return 0;
				}
				close(fd);
				/* a stale file may be replaced by this run's rank 0: keep trying */
				if (!(sp->file && rp.status == RP_STALE))
					return gpt_errf(e, "rank %d: rank 0 at %s:%s refused this rank: %s", me(d), host, port,
					                msg);
				snprintf(note, sizeof note, "rank 0 at %s:%s refused: %s", host, port, msg);
			}
		}
		if (now_seconds() + pause_s >= deadline)
			return gpt_errf(e, "rank %d: no rendezvous with rank 0 within %g s (%s; last: %s)", me(d),
			                d->timeout, sp->file ? sp->path : "tcp", note);
		sleep_s(pause_s);
		if (pause_s < 0.25)
			pause_s *= 1.5;
	}
}

/* ------------------------------------------------------------------------
 * Open, close, accessors
 */
static void free_dist(struct dist *d)
{
	if (die_dist == d)
		dist_abort_on_die(NULL);
	for (int p = 0; p < d->np; p++)
		for (int c = 0; c < 2; c++)
			if (d->peer[p].fd[c] >= 0)
				close(d->peer[p].fd[c]);
	free(d->peer);
	free(d->gather);
	free(d->acc);
	pthread_mutex_destroy(&d->ctrl_mu);
	free(d);
}

struct dist *dist_open(const struct dist_info *info, const char *init, double timeout_s,
                       const char *job_key, struct gpt_err *e)
{
	if (info->world < 1 || info->world > MAX_WORLD || info->rank < 0 || info->rank >= info->world)
		return gpt_errf(e, "rank %d is outside a world of %d", info->rank, info->world), NULL;
	struct dist *d = xcalloc(1, sizeof *d);
	d->info = *info;
	d->timeout = timeout_s > 0 ? timeout_s : DIST_DEFAULT_TIMEOUT;
	d->abort_origin = -1;
	d->watch_pipe[0] = d->watch_pipe[1] = -1;
	pthread_mutex_init(&d->ctrl_mu, NULL);
	if (info->world == 1)
		return d;
	char init_buf[1100];
	struct spec sp;
	if (dist_resolve_init(init, init_buf, sizeof init_buf, e) || parse_spec(init_buf, &sp, e))
		goto fail;
	d->np = info->rank == 0 ? info->world - 1 : 1;
	d->peer = xcalloc((size_t)d->np, sizeof *d->peer);
	for (int p = 0; p < d->np; p++) {
		d->peer[p].rank = info->rank == 0 ? p + 1 : 0;
		d->peer[p].fd[0] = d->peer[p].fd[1] = -1;
	}
	char key[1400];
	int kn = snprintf(key, sizeof key, "gpt-dist|%u|world=%d|job=%s|key=%s", DIST_VERSION, info->world,
	                  info->job, job_key ? job_key : "");
	d->job = fnv1a(0xcbf29ce484222325ull, key, (size_t)(kn < (int)sizeof key ? kn : (int)sizeof key - 1));
	if (info->rank == 0) {
		if (rdv_serve(d, &sp, e))
			goto fail;
		d->gather = xmalloc_aligned(64, (size_t)d->np * SEG_BYTES);
		d->acc = xmalloc_aligned(64, sizeof(double) * (SEG_BYTES / sizeof(float)));
	} else {
		double deadline = now_seconds() + d->timeout;
		if (rdv_join(d, &sp, CH_DATA, deadline, e) || rdv_join(d, &sp, CH_CTRL, deadline, e))
			goto fail;
	}
	return d;
fail:
	free_dist(d);
	return NULL;
}

static void watch_stop(struct dist *d);
static int dist_barrier_ctrl(struct dist *d, int poll_ctrl, struct gpt_err *e);

int dist_close(struct dist *d, struct gpt_err *e)
{
	if (!d)
		return 0;
	watch_stop(d);
	int rc = 0;
	if (d->info.world > 1 && !d->broken) {
		/* no rank closes its sockets before every rank got here (and has
		 * stopped watching them); the control connections are not polled:
		 * rank 0 closing them after the last message is no failure */
		rc = dist_barrier_ctrl(d, 0, e);
		if (rc)
			dist_abort(d, e->msg);
	}
	free_dist(d);
	return rc;
}

int dist_rank(const struct dist *d) { return d ? d->info.rank : 0; }
int dist_world(const struct dist *d) { return d ? d->info.world : 1; }
int dist_local_rank(const struct dist *d) { return d ? d->info.local_rank : 0; }
int dist_local_world(const struct dist *d) { return d ? d->info.local_world : 1; }
double dist_timeout(const struct dist *d) { return d && d->timeout > 0 ? d->timeout : DIST_DEFAULT_TIMEOUT; }
const struct dist_info *dist_get_info(const struct dist *d) { return d ? &d->info : NULL; }

/* ------------------------------------------------------------------------
 * Collectives
 */
static void combine(struct dist *d, uint32_t op, uint8_t *p, size_t len)
{
	const int P = d->info.world;
	if (op == OP_SUM_F64) {
		double *v = (double *)p;
		size_t n = len / sizeof(double);
		for (int r = 1; r < P; r++) {
			const double *g = (const double *)(d->gather + (size_t)(r - 1) * SEG_BYTES);
			for (size_t i = 0; i < n; i++)
				v[i] += g[i];
		}
	} else if (op == OP_MEAN_F32) {
		float *v = (float *)p;
		double *acc = d->acc;
		size_t n = len / sizeof(float);
		for (size_t i = 0; i < n; i++)
			acc[i] = (double)v[i];
		for (int r = 1; r < P; r++) {
			const float *g = (const float *)(d->gather + (size_t)(r - 1) * SEG_BYTES);
			for (size_t i = 0; i < n; i++)
				acc[i] += (double)g[i];
		}
		for (size_t i = 0; i < n; i++)
			v[i] = (float)(acc[i] / (double)P);
	}
}

static int collective(struct dist *d, uint32_t op, void *buf, size_t nbytes, int poll_ctrl,
                      struct gpt_err *e)
{
	if (!d || d->info.world == 1)
		return 0;
	if (d->broken)
		return gpt_errf(e, "%s", d->broken_msg);
	const uint64_t seq = ++d->seq;
	const int np = d->np;
	struct xfer *x = xcalloc((size_t)np, sizeof *x);
	size_t off = 0;
	int rc = 0;
	do {
		size_t len = nbytes - off < SEG_BYTES ? nbytes - off : SEG_BYTES;
		uint8_t *p = buf ? (uint8_t *)buf + off : NULL;
		uint64_t up = op == OP_BCAST || op == OP_BARRIER ? 0 : len; /* to rank 0 */
		uint64_t down = op == OP_BARRIER ? 0 : len;                 /* from rank 0 */
		struct hdr hup = {FR_DATA, op, seq, nbytes, up}, hdown = {FR_DATA, op, seq, nbytes, down};
		if (me(d) == 0) {
			for (int i = 0; i < np; i++)
				x[i] = (struct xfer){.p = i, .send = 0, .h = hup, .buf = d->gather + (size_t)i * SEG_BYTES};
			if ((rc = transfer(d, x, np, poll_ctrl, e)))
				break;
			combine(d, op, p, len);
			for (int i = 0; i < np; i++)
				x[i] = (struct xfer){.p = i, .send = 1, .h = hdown, .buf = p};
			if ((rc = transfer(d, x, np, poll_ctrl, e)))
				break;
		} else {
			x[0] = (struct xfer){.p = 0, .send = 1, .h = hup, .buf = p};
			if ((rc = transfer(d, x, 1, poll_ctrl, e)))
				break;
			x[0] = (struct xfer){.p = 0, .send = 0, .h = hdown, .buf = p};
			if ((rc = transfer(d, x, 1, poll_ctrl, e)))
				break;
		}
		off += len;
	} while (off < nbytes);
	free(x);
	return rc;
}

int dist_bcast(struct dist *d, void *buf, size_t n, struct gpt_err *e)
{
	return collective(d, OP_BCAST, buf, n, 1, e);
}

int dist_allreduce_f64(struct dist *d, double *v, size_t n, struct gpt_err *e)
{
	if (n > SIZE_MAX / sizeof *v)
		return gpt_errf(e, "allreduce of %zu doubles: too many", n);
	return collective(d, OP_SUM_F64, v, n * sizeof *v, 1, e);
}

int dist_allreduce_f32_mean(struct dist *d, float *v, size_t n, struct gpt_err *e)
{
	if (n > SIZE_MAX / sizeof *v)
		return gpt_errf(e, "allreduce of %zu floats: too many", n);
	return collective(d, OP_MEAN_F32, v, n * sizeof *v, 1, e);
}

int dist_barrier(struct dist *d, struct gpt_err *e) { return collective(d, OP_BARRIER, NULL, 0, 1, e); }

static int dist_barrier_ctrl(struct dist *d, int poll_ctrl, struct gpt_err *e)
{
	return collective(d, OP_BARRIER, NULL, 0, poll_ctrl, e);
}

/* ------------------------------------------------------------------------
 * Watchdog
 */
static void *watch_main(void *arg)
{
	struct dist *d = arg;
	const int np = d->np;
	struct pollfd *pf = xcalloc((size_t)np + 1, sizeof *pf);
	pf[0] = (struct pollfd){d->watch_pipe[0], POLLIN, 0};
	for (int p = 0; p < np; p++)
		pf[p + 1] = (struct pollfd){d->peer[p].fd[CH_CTRL], POLLIN, 0};
	for (;;) {
		if (poll(pf, (nfds_t)np + 1, -1) < 0)
			continue;
		if (pf[0].revents)
			break;
		for (int p = 0; p < np; p++) {
			if (!pf[p + 1].revents)
				continue;
			char lost[256], got[ABORT_MAX + 1], msg[ABORT_MAX + 300];
			int origin = me(d);
			int what = read_ctrl(d, p, &origin, got, sizeof got, lost, sizeof lost);
			int c = CLAIM_NONE;
			if (!atomic_compare_exchange_strong(&d->claimed, &c, CLAIM_WATCH))
				goto out; /* the main thread is reporting a failure itself */
			const char *text = what == 1 ? got : lost;
			if (what == 1)
				snprintf(msg, sizeof msg, "%s: rank %d failed: %s\n", progname, origin, text);
			else
				snprintf(msg, sizeof msg, "%s: rank %d: %s\n", progname, me(d), text);
			fflush(stdout);
			if (write(2, msg, strlen(msg)) < 0) {
			}
			if (me(d) == 0)
				broadcast_abort(d, origin, text, d->peer[p].rank);
			aout_cleanup_all();
			_exit(EXIT_RUNTIME);
		}
	}
out:
	free(pf);
	return NULL;
}

int dist_watch_start(struct dist *d, struct gpt_err *e)
{
	if (!d || d->info.world == 1 || atomic_load(&d->watching))
		return 0;
	if (pipe2(d->watch_pipe, O_CLOEXEC))
		return gpt_errf(e, "rank %d: watchdog: pipe: %s", me(d), strerror(errno));
	atomic_store(&d->watching, 1);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* signals go to the other threads */
	int err = pthread_create(&d->watch_thread, NULL, watch_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		atomic_store(&d->watching, 0);
		close(d->watch_pipe[0]);
		close(d->watch_pipe[1]);
		d->watch_pipe[0] = d->watch_pipe[1] = -1;
		return gpt_errf(e, "rank %d: watchdog: %s", me(d), strerror(err));
	}
	return 0;
}

static void watch_stop(struct dist *d)
{
	if (!atomic_load(&d->watching))
		return;
	if (write(d->watch_pipe[1], "x", 1) < 0) {
	}
	pthread_join(d->watch_thread, NULL);
	atomic_store(&d->watching, 0);
	close(d->watch_pipe[0]);
	close(d->watch_pipe[1]);
	d->watch_pipe[0] = d->watch_pipe[1] = -1;
}

/* ------------------------------------------------------------------------
 * Spawn
 */
static volatile sig_atomic_t spawn_pending[3]; /* SIGINT, SIGTERM, SIGHUP to forward */
static volatile sig_atomic_t spawn_same_pgrp;

static int sig_slot(int sig) { return sig == SIGINT ? 0 : sig == SIGTERM ? 1 : 2; }

static void spawn_sigchld(int sig) { (void)sig; } /* only to cut the parent's nap short */

/* Order of report among the children reaped together: one killed by a
 * signal first (the others' failures are most likely its consequence),
 * then other failures, then the rest; by rank within each. */
static int reap_class(int st)
{
	if (WIFSIGNALED(st))
		return 0;
	int c = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	return c && c != 128 + SIGINT && c != 128 + SIGTERM ? 1 : 2;
}

static void spawn_handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	/* in the parent's group, the terminal's signals reach every child
	 * itself; forward only what a process sent to us */
	if (spawn_same_pgrp && si && si->si_code > 0)
		return;
	spawn_pending[sig_slot(sig)]++;
}

static void describe_status(int st, char *buf, size_t n, int *code)
{
	if (WIFEXITED(st)) {
		*code = WEXITSTATUS(st);
		snprintf(buf, n, "exited with status %d", *code);
	} else if (WIFSIGNALED(st)) {
		*code = 128 + WTERMSIG(st);
		snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	} else {
		*code = 1;
		snprintf(buf, n, "ended with wait status %d", st);
	}
}

int dist_spawn(int n, char *const argv[], struct gpt_err *e)
{
	if (n < 1 || n > MAX_WORLD)
		return gpt_errf(e, "--gpus %d: not a process count", n);
	const char *tmpbase = env("TMPDIR") ? env("TMPDIR") : "/tmp";
	char dir[1024], path[1100], init[1200], job[64];
	snprintf(dir, sizeof dir, "%s/gpt-dist-XXXXXX", tmpbase);
	if (!mkdtemp(dir))
		return gpt_errf(e, "%s: cannot create a directory for the rendezvous: %s", dir, strerror(errno));
	snprintf(path, sizeof path, "%s/rendezvous", dir);
	snprintf(init, sizeof init, "--dist-init=file:%s", path);
	snprintf(job, sizeof job, "spawn-%d-%016" PRIx64, (int)getpid(), random64());
	int argc = 0;
	while (argv[argc])
		argc++;
	char **cargv = xcalloc((size_t)argc + 2, sizeof *cargv);
	cargv[0] = argv[0];
	cargv[1] = init;
	for (int i = 1; i < argc; i++)
		cargv[i + 1] = argv[i];
	char threads[24] = "";
	if (!env("GPT_THREADS")) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		snprintf(threads, sizeof threads, "%ld", cpus / n > 0 ? cpus / n : 1);
	}
	spawn_same_pgrp = isatty(0);
	for (int i = 0; i < 3; i++)
		spawn_pending[i] = 0;

	struct sigaction sa, old[3];
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = spawn_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	const int fsig[3] = {SIGINT, SIGTERM, SIGHUP};
	sigset_t block, oldmask;
	sigemptyset(&block);
	for (int i = 0; i < 3; i++)
		sigaddset(&block, fsig[i]);
	sigprocmask(SIG_BLOCK, &block, &oldmask);
	for (int i = 0; i < 3; i++)
		sigaction(fsig[i], &sa, &old[i]);
	struct sigaction sc, oldchld;
	memset(&sc, 0, sizeof sc);
	sc.sa_handler = spawn_sigchld;
	sigemptyset(&sc.sa_mask);
	sigaction(SIGCHLD, &sc, &oldchld);

	pid_t parent = getpid(), pgid = 0;
	pid_t *pids = xcalloc((size_t)n, sizeof *pids);
	int started = 0, rc = 0;
	fflush(NULL);
	for (int r = 0; r < n; r++) {
		pid_t pid = fork();
		if (pid < 0) {
			rc = gpt_errf(e, "fork: %s", strerror(errno));
			break;
		}
		if (pid == 0) {
			for (int i = 0; i < 3; i++)
				signal(fsig[i], SIG_DFL);
			signal(SIGCHLD, SIG_DFL);
			sigprocmask(SIG_SETMASK, &oldmask, NULL);
			if (!spawn_same_pgrp)
				setpgid(0, r == 0 ? 0 : pgid);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != parent)
				_exit(EXIT_RUNTIME);
			char v[4][16];
			snprintf(v[0], 16, "%d", r), snprintf(v[1], 16, "%d", n);
			setenv("RANK", v[0], 1), setenv("WORLD_SIZE", v[1], 1);
			setenv("LOCAL_RANK", v[0], 1), setenv("LOCAL_WORLD_SIZE", v[1], 1);
			setenv("GPT_DIST_JOB", job, 1);
			if (threads[0])
				setenv("GPT_THREADS", threads, 1);
			if (r > 0) {
				int nul = open("/dev/null", O_RDWR);
				if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0)
					_exit(EXIT_RUNTIME);
				if (nul > 1)
					close(nul);
			}
			execv("/proc/self/exe", cargv);
			char msg[300];
			snprintf(msg, sizeof msg, "%s: rank %d: cannot run /proc/self/exe: %s\n", progname, r,
			         strerror(errno));
			if (write(2, msg, strlen(msg)) < 0) {
			}
			_exit(127);
		}
		if (!spawn_same_pgrp)
			setpgid(pid, r == 0 ? pid : pgid);
		if (r == 0)
			pgid = pid;
		pids[r] = pid;
		started++;
	}
	sigprocmask(SIG_SETMASK, &oldmask, NULL);

	int alive = started, first = 0, killing = rc != 0, killed_hard = 0;
	double kill_at = now_seconds() + 10.0;
	if (killing)
		for (int r = 0; r < started; r++)
			kill(pids[r], SIGTERM);
	struct reaped {
		int r, st;
		pid_t pid;
	} *got = xcalloc((size_t)n, sizeof *got);
	while (alive > 0) {
		int st, ng = 0;
		pid_t pid;
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			int r = 0;
			while (r < started && pids[r] != pid)
				r++;
			if (r == started)
				continue;
			pids[r] = -1;
			alive--;
			got[ng++] = (struct reaped){r, st, pid};
		}
		for (int cls = 0; cls < 3; cls++)
			for (int k = 0; k < ng; k++) {
				if (reap_class(got[k].st) != cls)
					continue;
				char what[128];
				int code;
				describe_status(got[k].st, what, sizeof what, &code);
				if (code && !first)
					first = code;
				if (cls < 2 && !killing) {
					warnx("rank %d (pid %d) %s%s", got[k].r, (int)got[k].pid, what,
					      alive ? "; stopping the other ranks" : "");
					killing = 1;
					kill_at = now_seconds() + 10.0;
					for (int q = 0; q < started; q++)
						if (pids[q] > 0)
							kill(pids[q], SIGTERM);
				} else {
					info(2, "rank %d (pid %d) %s", got[k].r, (int)got[k].pid, what);
				}
			}
		if (alive == 0)
			break;
		for (int i = 0; i < 3; i++)
			while (spawn_pending[i] > 0) {
				spawn_pending[i]--;
				for (int q = 0; q < started; q++)
					if (pids[q] > 0)
						kill(pids[q], fsig[i]);
			}
		if (killing && !killed_hard && now_seconds() >= kill_at) {
			killed_hard = 1;
			for (int q = 0; q < started; q++)
				if (pids[q] > 0) {
					warnx("rank %d (pid %d) did not stop: killing it", q, (int)pids[q]);
					kill(pids[q], SIGKILL);
				}
		}
		struct timespec nap = {0, 20000000}; /* SIGCHLD or a forwarded signal ends it early */
		nanosleep(&nap, NULL);
	}
	free(got);
	for (int i = 0; i < 3; i++)
		sigaction(fsig[i], &old[i], NULL);
	sigaction(SIGCHLD, &oldchld, NULL);
	unlink(path);
	rmdir(dir);
	free(pids);
	free(cargv);
	return rc ? -1 : first;
}

/* ------------------------------------------------------------------------
 * argv
 */
static const struct option *match_long(const struct option *lo, const char *nm, size_t len)
{
	const struct option *hit = NULL;
	int hits = 0;
	for (const struct option *o = lo; o->name; o++) {
		if (strncmp(o->name, nm, len))
			continue;
		if (strlen(o->name) == len)
			return o;
		hit = o;
		hits++;
	}
	return hits == 1 ? hit : NULL;
}

char **dist_argv_drop(int argc, char *const argv[], const char *shortopts,
                      const struct option *longopts, const char *name)
{
	char **out = xcalloc((size_t)argc + 1, sizeof *out);
	int k = 0;
	if (argc > 0)
		out[k++] = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			while (i < argc)
				out[k++] = argv[i++];
			break;
		}
		if (a[0] == '-' && a[1] == '-') {
			const char *nm = a + 2;
			size_t len = strcspn(nm, "=");
			const struct option *o = match_long(longopts, nm, len);
			int drop = o && !strcmp(o->name, name);
			int takes_next = o && o->has_arg == required_argument && !nm[len];
			if (!drop)
				out[k++] = argv[i];
			if (takes_next && i + 1 < argc) {
				i++;
				if (!drop)
					out[k++] = argv[i];
			}
			continue;
		}
		out[k++] = argv[i];
		if (a[0] != '-' || !a[1])
			continue; /* an operand, or "-" */
		for (const char *c = a + 1; *c; c++) {
			const char *s = *c == ':' ? NULL : strchr(shortopts, *c);
			if (s && s[1] == ':') {
				if (s[2] != ':' && !c[1] && i + 1 < argc) /* required, in the next argument */
					out[k++] = argv[++i];
				break;
			}
		}
	}
	out[k] = NULL;
	return out;
}
