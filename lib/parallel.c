/*
 * parallel.c - persistent thread pool for parallel_for. See parallel.h.
 *
 * Workers sleep on a condition variable; a job is published with a
 * generation counter, each worker takes its own static range, and the
 * caller waits until every worker has finished.
 */
#include "parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "util.h"

#define MAX_THREADS 256

static int nthreads; /* 0 = not decided yet */
static int started;  /* workers running */
static pthread_t workers[MAX_THREADS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_job = PTHREAD_COND_INITIALIZER;
static pthread_cond_t cv_done = PTHREAD_COND_INITIALIZER;
static unsigned long generation;
static int pending;
static struct {
	size_t n;
	parallel_fn fn;
	void *ctx;
	int parts;
} job;
static __thread int in_parallel;

static int auto_threads(void)
{
	const char *env = getenv("GPT_THREADS");
	long v;
	if (env && !parse_long(env, 1, MAX_THREADS, &v))
		return (int)v;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > MAX_THREADS)
		n = MAX_THREADS;
	return (int)n;
}

void parallel_set_threads(int n)
{
	pthread_mutex_lock(&mu);
	if (started)
		die(EXIT_RUNTIME, "internal error: thread count set after the pool started");
	nthreads = n > 0 ? (n > MAX_THREADS ? MAX_THREADS : n) : auto_threads();
	pthread_mutex_unlock(&mu);
}

int parallel_threads(void)
{
	if (!nthreads)
		parallel_set_threads(0);
	return nthreads;
}

static void run_part(int part)
{
	size_t n = job.n, parts = (size_t)job.parts;
	size_t begin = n * (size_t)part / parts, end = n * (size_t)(part + 1) / parts;
	if (begin < end)
		job.fn(job.ctx, begin, end, part);
}

static void *worker(void *arg)
{
	int id = (int)(size_t)arg;
	unsigned long seen = 0;
	in_parallel = 1;
	for (;;) {
		pthread_mutex_lock(&mu);
		while (generation == seen)
			pthread_cond_wait(&cv_job, &mu);
		seen = generation;
		pthread_mutex_unlock(&mu);
		if (id < job.parts)
			run_part(id);
		pthread_mutex_lock(&mu);
		if (--pending == 0)
			pthread_cond_signal(&cv_done);
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

static void start_pool(void)
{
	int n = parallel_threads();
	for (int i = 1; i < n; i++)
		if (pthread_create(&workers[i], NULL, worker, (void *)(size_t)i))
			die(EXIT_RUNTIME, "cannot start thread %d:", i);
	started = 1;
}

void parallel_for(size_t n, parallel_fn fn, void *ctx)
{
	if (!n)
		return;
	int t = parallel_threads();
	if (t == 1 || n == 1 || in_parallel) {
		fn(ctx, 0, n, 0);
		return;
	}
	if (!started)
		start_pool();
	pthread_mutex_lock(&mu);
	job.n = n;
	job.fn = fn;
	job.ctx = ctx;
	job.parts = (size_t)t < n ? t : (int)n;
	pending = t - 1;
	generation++;
	pthread_cond_broadcast(&cv_job);
	pthread_mutex_unlock(&mu);
	in_parallel = 1;
	run_part(0);
	in_parallel = 0;
	pthread_mutex_lock(&mu);
	while (pending)
		pthread_cond_wait(&cv_done, &mu);
	pthread_mutex_unlock(&mu);
}
