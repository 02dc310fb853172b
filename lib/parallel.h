/*
 * parallel.h - a small persistent thread pool with a parallel-for.
 *
 * Implements parallel_for(n, fn, ctx): calls fn(ctx, begin, end, tid) over
 * disjoint ranges covering [0, n), on up to parallel_threads() threads
 * (the calling thread takes part). Ranges are static and depend only on n
 * and the thread count, so results that reduce per range are repeatable for
 * a fixed thread count. Nested calls run serially in the caller.
 *
 * The thread count defaults to the number of online CPUs; GPT_THREADS or
 * parallel_set_threads() override it (programs expose it as --threads).
 */
#ifndef GPT_PARALLEL_H
#define GPT_PARALLEL_H

#include <stddef.h>

typedef void (*parallel_fn)(void *ctx, size_t begin, size_t end, int tid);

void parallel_set_threads(int n); /* n <= 0: automatic */
int parallel_threads(void);
void parallel_for(size_t n, parallel_fn fn, void *ctx);

#endif
