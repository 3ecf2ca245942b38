/* rng.h - the trainer's random numbers: xoshiro256** seeded by splitmix64.
 *
 * The state is four plain words, so a checkpoint saves and restores it exactly
 * and a resumed run draws the same numbers as an uninterrupted one. The
 * generator is the same on every machine (no libc rand), which makes runs
 * reproducible from their seed.
 */
#ifndef MN_TRAIN_RNG_H
#define MN_TRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} mn_rng;

/* Fills the state from splitmix64(seed); any seed (0 included) gives a valid,
 * non-zero state. */
void mn_rng_seed(mn_rng *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t mn_rng_next(mn_rng *r);
/* Uniform in [0, 1) from the top 53 bits (every value a multiple of 2^-53). */
double mn_rng_uniform(mn_rng *r);
/* Uniform in [0, n) without modulo bias (rejection of the short last range);
 * n must be > 0 (returns 0 for n == 0). */
uint64_t mn_rng_below(mn_rng *r, uint64_t n);
/* Standard normal (polar Box-Muller; the spare value is not cached, so the
 * state alone determines the sequence). */
double mn_rng_normal(mn_rng *r);

/* A 64-bit non-cryptographic hash of n bytes (4 multiply-rotate lanes, a few
 * GB/s): integrity checks of token caches and checkpoints, where it only has
 * to catch truncation and corruption, not an adversary. Chain pieces by
 * passing one result as the next seed. Reads the bytes little-endian, so the
 * value is the same on every machine. */
uint64_t mn_hash64(const void *data, size_t n, uint64_t seed);

#endif
