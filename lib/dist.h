/*
 * dist.h - the ranks of a data-parallel run: who we are, how the ranks
 * meet, a few small deterministic collectives between them, how a failing
 * rank stops the others, and `gpt-train --gpus N`'s launcher.
 *
 * Defines:
 *   struct dist_info, dist_env()        rank and world from the launcher's
 *                                       environment (none: world 1)
 *   dist_resolve_init()                 the rendezvous spec (--dist-init)
 *   dist_open(), dist_close()           rendezvous; the star of sockets
 *   dist_rank() & co.                   accessors
 *   dist_bcast(), dist_allreduce_f64(), dist_allreduce_f32_mean(),
 *   dist_barrier()                      collectives over the star
 *   dist_abort(), dist_abort_on_die(),  failure propagation
 *   dist_watch_start()
 *   dist_spawn(), dist_argv_drop()      one process per GPU on one machine
 *
 * The gradients of the CUDA engine travel over NCCL (lib/engine_cuda.c);
 * this module carries what NCCL needs to start (its unique id, dist_bcast),
 * the per-step numbers of the training loop (losses, the stop flag, the
 * schedule rows), and the CPU engine's gradients for small models.
 *
 * ---- Launchers (dist_env) --------------------------------------------
 * Looked for in this order; the first whose rank variable is set wins:
 *   torchrun-style  RANK, WORLD_SIZE [, LOCAL_RANK, LOCAL_WORLD_SIZE]
 *                   (also what `gpt-train --gpus N` gives its children)
 *   OpenMPI         OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE
 *                   [, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE]
 *   MPICH/Hydra     PMI_RANK, PMI_SIZE [, MPI_LOCALRANKID, MPI_LOCALNRANKS]
 *   Slurm srun      SLURM_PROCID, SLURM_NTASKS [, SLURM_LOCALID and
 *                   SLURM_NTASKS_PER_NODE or SLURM_STEP_TASKS_PER_NODE
 *                   ("2(x3),1" with SLURM_NODEID picking this node's entry)]
 * A rank variable without its world variable, a local rank without a local
 * size (or the reverse), a value that is not a number, or a rank outside
 * the world is an error naming the variables. The local pair is optional:
 * without it local_known is 0 and local_rank/local_world are guessed as
 * rank/world (one host). No launcher: world 1, launcher "none".
 *
 * ---- Rendezvous (dist_open) ------------------------------------------
 *   file:PATH   a file on a filesystem every rank sees. Rank 0 listens on
 *               a free TCP port and writes "gpt-dist 1 HOST PORT NONCE"
 *               to PATH atomically (temporary file + rename); the others
 *               poll PATH until it appears and connect. HOST is 127.0.0.1
 *               when the launcher says every rank is on this host, else
 *               rank 0's host name (the others must resolve it). Rank 0
 *               removes PATH once every rank has connected. A stale file
 *               (an earlier run's) is retried until the timeout: it names
 *               a port nobody listens on, or a rank 0 that refuses the
 *               NONCE.
 *   tcp:HOST:PORT  rank 0 listens on PORT (on HOST only when HOST is a
 *               loopback address, else on every interface); the others
 *               connect to HOST:PORT, retrying until it answers.
 * Default (init NULL): tcp:$MASTER_ADDR:$MASTER_PORT.
 *
 * After the rendezvous every rank r > 0 holds two TCP connections to rank
 * 0 (a star): "data" for the collectives and "control" for aborts only.
 * Each connection starts with a hello: magic (also a byte-order check),
 * protocol version, rank, world, channel, a job token and the file's
 * nonce. The job token is a hash of the launcher's job id (GPT_DIST_JOB,
 * SLURM_JOB_ID.SLURM_STEP_ID, PMIX_NAMESPACE, OMPI_MCA_orte_ess_jobid,
 * TORCHELASTIC_RUN_ID), the world size and the caller's job_key (gpt-train
 * passes the options the ranks must agree on), so a rank of another job or
 * with other options is refused with a message on both sides. A rank
 * outside the world, or a second connection claiming a connected rank, is
 * refused too. Rank 0 keeps waiting for the right ranks until the timeout.
 *
 * ---- Collectives -----------------------------------------------------
 * Every rank calls the same collectives in the same order with the same
 * sizes (checked: a rank out of step is an error naming both calls). Rank
 * 0 gathers each rank's buffer, combines in rank order 0, 1, ..., P-1 and
 * sends the result back, so every rank gets the same bits, and the bits do
 * not depend on timing. Buffers travel in 1 MiB segments. Values are sent
 * in the host's byte order (the hello refuses a peer with another).
 *   dist_allreduce_f64       v[i] = ((v0[i] + v1[i]) + v2[i]) + ...
 *   dist_allreduce_f32_mean  v[i] = (float)((((double)v0[i] + v1[i]) + ...) / P)
 * With world 1 (or d NULL) every collective returns at once.
 *
 * ---- Failures --------------------------------------------------------
 * Every blocking wait (connecting, each hello, each collective with no
 * progress) gives up after the timeout. A socket error or EOF fails with
 * "rank 3: lost the connection to rank 0 (peer closed)"; a timeout with
 * "rank 3: timed out after 600 s waiting for rank 0 (allreduce_f64 #12)".
 * Sockets are written with MSG_NOSIGNAL (no SIGPIPE) and use TCP
 * keepalive (a vanished host is noticed within about two minutes).
 *
 * dist_abort(d, msg) sends msg on the control connections (a rank > 0 to
 * rank 0, rank 0 to every rank; rank 0 relays an abort it receives to the
 * others), so a rank waiting in a collective fails with "rank K failed:
 * msg". dist_abort_on_die(d) makes die() call dist_abort with its message
 * (util_at_die). A failure caused by another rank's abort is passed on
 * under the first rank's name, not wrapped again.
 *
 * Watchdog (dist_watch_start): a rank blocked in a GPU or NCCL wait does
 * not read its sockets. The watchdog is a thread that polls only the
 * control connections (so it never takes bytes from a collective on the
 * data connections): on an abort or an EOF there it prints the message
 * ("progname: rank K failed: msg"), relays it (rank 0), removes temporary
 * outputs (aout_cleanup_all) and ends the process with _exit(1). While it
 * runs, the collectives leave the control connections to it; a failing
 * collective waits a moment for it, so the better message (the peer's own)
 * is the one printed, and only one message is printed. dist_close() stops
 * the watchdog before its final barrier: no rank closes its sockets before
 * every rank has stopped watching them, so a clean end is never mistaken
 * for a failure.
 *
 * ---- Threads ---------------------------------------------------------
 * A struct dist is used by one thread (plus its own watchdog).
 */
#ifndef GPT_DIST_H
#define GPT_DIST_H

#include <getopt.h>
#include <stddef.h>

#include "util.h"

#define DIST_DEFAULT_TIMEOUT 600.0 /* seconds */

struct dist_info {
	int rank, world;             /* this process and the number of processes */
	int local_rank, local_world; /* the same on this host */
	int local_known;             /* 0: the launcher gave no local numbers (guessed) */
	char launcher[16];           /* "none", "torchrun", "openmpi", "mpich", "slurm" */
	char vars[96];               /* the variables read, e.g. "RANK=1 WORLD_SIZE=2" */
	char job[128];               /* the launcher's job id, "" if none */
};

/* Fill *info from the environment (above). -1 and e on an inconsistent
 * environment. */
int dist_env(struct dist_info *info, struct gpt_err *e);
/* "rank 1 of 8 (local 1 of 8), from torchrun: RANK=1 WORLD_SIZE=8 ..." */
void dist_info_describe(const struct dist_info *info, char *buf, size_t n);

/* The rendezvous spec: init ("file:PATH", "tcp:HOST:PORT"), or the
 * default from MASTER_ADDR/MASTER_PORT when init is NULL, checked and
 * copied to out. -1 and e (a usage error) if it is malformed or missing. */
int dist_resolve_init(const char *init, char *out, size_t n, struct gpt_err *e);

struct dist;

/* Meet the other ranks. world 1: no sockets, no rendezvous (init is not
 * looked at). timeout_s: every blocking wait (<= 0: the default 600 s).
 * job_key: a string every rank of the job passes the same (may be NULL). */
struct dist *dist_open(const struct dist_info *info, const char *init, double timeout_s,
                       const char *job_key, struct gpt_err *e);
/* A clean end: stop the watchdog, a last barrier (so no rank sees another
 * close early), close the sockets, free d. Returns the barrier's result
 * (d is freed either way). NULL: 0. */
int dist_close(struct dist *d, struct gpt_err *e);

/* Accessors; d NULL means one process (rank 0 of 1). */
int dist_rank(const struct dist *d);
int dist_world(const struct dist *d);
int dist_local_rank(const struct dist *d);
int dist_local_world(const struct dist *d);
/* the timeout of every blocking wait, seconds (NULL: the default) */
double dist_timeout(const struct dist *d);
const struct dist_info *dist_get_info(const struct dist *d); /* NULL for NULL */

/* Collectives (above). Return 0, or -1 and e naming the failed rank. After
 * a failure the star is unusable: later calls fail at once. */
int dist_bcast(struct dist *d, void *buf, size_t n, struct gpt_err *e); /* from rank 0 */
int dist_allreduce_f64(struct dist *d, double *v, size_t n, struct gpt_err *e);
int dist_allreduce_f32_mean(struct dist *d, float *v, size_t n, struct gpt_err *e);
int dist_barrier(struct dist *d, struct gpt_err *e);

/* This rank is failing with msg: tell the others (best effort, at most a
 * couple of seconds; never fails). A leading "rank R: " naming this rank is
 * dropped (the receivers say "rank R failed: "). */
void dist_abort(struct dist *d, const char *msg);
/* die() calls dist_abort(d, its message); NULL undoes it. dist_close()
 * undoes it for its d. */
void dist_abort_on_die(struct dist *d);
/* Start the watchdog thread (above). World 1: nothing to do. */
int dist_watch_start(struct dist *d, struct gpt_err *e);

/* ---- gpt-train --gpus N ---------------------------------------------
 * Run n copies of this program (/proc/self/exe) with argv (argv[0] kept;
 * the caller has removed its --gpus option, dist_argv_drop) plus
 * "--dist-init=file:DIR/rendezvous" inserted after argv[0] (DIR a private
 * temporary directory, removed at the end), and in the environment RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GPT_DIST_JOB (a fresh job id)
 * and, unless set, GPT_THREADS = CPUs / n. CUDA_VISIBLE_DEVICES is left
 * alone: the CUDA engine picks device LOCAL_RANK.
 *
 * Rank 0 inherits standard input and output; the other ranks read and
 * write /dev/null there (all the training output is rank 0's). Every rank
 * writes its messages to the shared standard error.
 *
 * Signals: the children run in their own process group and the parent
 * forwards SIGINT, SIGTERM and SIGHUP to each (so a terminal's ^C reaches
 * each child once). When standard input is a terminal (rank 0 may read
 * the schedule from it) the children stay in the parent's group instead,
 * and the parent forwards only signals sent by a process, not the
 * terminal's (which every child receives itself).
 *
 * Failure: when a child exits with a status other than 0, 128+SIGINT or
 * 128+SIGTERM (the clean stop after a signal), or is killed by a signal,
 * the parent reports it ("rank 1 (pid 123) was killed by signal 9"),
 * sends SIGTERM to the others and SIGKILL 10 s later to those left.
 * Children get SIGTERM if the parent dies (PR_SET_PDEATHSIG).
 *
 * Returns the parent's exit status: 0 if every child exited 0, else the
 * first non-zero status (128+N for a child killed by signal N); -1 and e
 * if the children could not be started. */
int dist_spawn(int n, char *const argv[], struct gpt_err *e);

/* A copy of argv (NULL-terminated, free with free(); the strings are
 * argv's) without the long option `name` and its argument, parsed as
 * getopt_long would with shortopts and longopts: "--name V", "--name=V"
 * and unambiguous abbreviations ("--gpu 2"); an option's argument that
 * happens to look like --name is kept; everything after "--" is kept. */
char **dist_argv_drop(int argc, char *const argv[], const char *shortopts,
                      const struct option *longopts, const char *name);

#endif
