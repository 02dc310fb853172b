/*
 * init.h - deterministic initialisation of the model's weights (spec 3.3).
 *
 * Implements the record's initialisation from a documented, seedable,
 * counter-based generator, so that the same seed and configuration give the
 * same bytes on every machine, whatever the thread count:
 *
 *   embed.weight, value_embeds.embed.j.weight   N(0, 1), then rounded to
 *                                               bf16 (nearest even), as the
 *                                               record stores them in bf16
 *   attn.c_q/c_k/c_v.weight, mlp.c_fc.weight    U(-b, b), b = 1/sqrt(fan_in),
 *                                               fan_in = in_features = shape[1]
 *   attn.c_proj, mlp.c_proj, lm_head            zeros
 *   blocks.i.lambdas                            [1, 0]
 *   blocks.i.attn.lambdas                       [0.5, 0.5]
 *   skip_weights                                ones
 *
 * The generator (gpt-weights(5) has the same text):
 *   h = FNV-1a 64 of the tensor's state-dict name (offset basis
 *       0xcbf29ce484222325, prime 0x100000001b3, over its bytes);
 *   R(j) = Philox4x32-10 (Salmon et al., SC'11; Random123) with
 *       key     = (seed mod 2^32, seed >> 32),
 *       counter = (j mod 2^32, j >> 32, h mod 2^32, h >> 32)
 *       giving four 32-bit words x0..x3;
 *   uniform element i:  j = i / 4, w = x_(i mod 4),
 *       value = (float)(((w + 0.5) * 2^-31 - 1) * b)        (in double)
 *   normal element i:   j = i / 2,
 *       u1 = (((x0 << 21) | (x1 >> 11)) + 1) * 2^-53        in (0, 1]
 *       t  =  ((x2 << 21) | (x3 >> 11)) * 2^-53             in [0, 1)
 *       r  = sqrt(-2 ln u1); value = (float)(r cos 2 pi t) for even i,
 *       (float)(r sin 2 pi t) for odd i (Box-Muller, both outputs used).
 *   ln, sin and cos are this file's own polynomials (init_ln,
 *   init_sincos2pi) in IEEE double arithmetic without fused multiply-add,
 *   so no libm difference can change a bit; sqrt is IEEE (correctly
 *   rounded). Every element depends only on (seed, name, index).
 */
#ifndef GPT_INIT_H
#define GPT_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Philox4x32-10 block: out = R(ctr) under key. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* FNV-1a 64-bit hash of a NUL-terminated string. */
uint64_t init_fnv1a64(const char *s);
/* Natural logarithm of a positive normal double (own polynomial). */
double init_ln(double x);
/* sin and cos of 2*pi*t for t in [0, 1) (own polynomials). */
void init_sincos2pi(double t, double *s, double *c);

/* Element i of the stream of tensor hash h. */
float init_normal(uint64_t seed, uint64_t h, uint64_t i);
float init_uniform(uint64_t seed, uint64_t h, uint64_t i, double bound);

/* How a parameter is initialised. */
enum init_kind { INIT_NORMAL, INIT_UNIFORM, INIT_ZEROS, INIT_ONES, INIT_ONE_ZERO, INIT_HALF };
enum init_kind init_kind_of(const struct gpt_param *p, double *bound);
/* "N(0,1)", "U(+-0.0360844)", "zeros", "ones", "[1,0]", "0.5" into buf. */
const char *init_describe(const struct gpt_param *p, char *buf, size_t cap);

/* Fill elements [begin, end) of parameter p; dst points at its element 0
 * (base + p->offset). Same values whatever the split into ranges. */
void init_param_range(const struct gpt_param *p, uint64_t seed, float *dst, size_t begin,
                      size_t end);
/* Fill the flat buffer w (t->total floats, laid out by t) on the thread pool. */
void init_weights(const struct gpt_table *t, uint64_t seed, float *w);

#endif
