/*
 * gpu_rand.h - the seeded random numbers of the GPU test programs
 * (tests/gpu/gpu_*.c): rnd, urand, nrand, seed_test, splitmix64 in one static
 * state per program, seeded per test from GPT_SEED or the clock (the seed
 * printed, so a failure can be repeated). Header-only (static inline).
 */
#ifndef GPT_GPU_RAND_H
#define GPT_GPU_RAND_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng;

static inline uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* normal (0, 1): Box-Muller, one value a call */
static inline double nrand(void)
{
	double r = sqrt(-2 * log(1 - urand())), a = 6.283185307179586 * urand();
	return r * cos(a);
}

static inline void seed_test(const char *what)
{
	const char *s = getenv("GPT_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	rng = seed;
	printf("%s: seed %llu (GPT_SEED=%llu repeats it)\n", what, (unsigned long long)seed,
	       (unsigned long long)seed);
	fflush(stdout);
}

#endif
