/* rng.c - xoshiro256** (Blackman & Vigna) with splitmix64 seeding; see rng.h. */
#include "train/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void mn_rng_seed(mn_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    /* splitmix64 is a bijection of distinct counters, so four zero outputs
     * cannot happen; keep the guard for a hand-edited state anyway */
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1;
}

uint64_t mn_rng_next(mn_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double mn_rng_uniform(mn_rng *r) { return (double)(mn_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t mn_rng_below(mn_rng *r, uint64_t n) {
    if (n == 0) return 0;
    /* values below `lim` are a whole number of copies of [0, n): 2^64 mod n
     * values at the bottom are rejected, so every residue is equally likely */
    uint64_t lim = -n % n; /* (2^64 - n) mod n == 2^64 mod n */
    for (;;) {
        uint64_t x = mn_rng_next(r);
        if (x >= lim) return x % n;
    }
}

double mn_rng_normal(mn_rng *r) {
    for (;;) {
        double u = 2.0 * mn_rng_uniform(r) - 1.0, v = 2.0 * mn_rng_uniform(r) - 1.0;
        double s = u * u + v * v;
        if (s > 0.0 && s < 1.0) return u * sqrt(-2.0 * log(s) / s);
    }
}

/* ------------------------------------------------------------------ hash */
#define H1 0x9E3779B185EBCA87ull
#define H2 0xC2B2AE3D27D4EB4Full

static inline uint64_t rd64(const unsigned char *p) {
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

static inline uint64_t lane(uint64_t acc, uint64_t w) { return rotl(acc + w * H2, 31) * H1; }

uint64_t mn_hash64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data;
    size_t len = n;
    /* four independent lanes so the multiplies overlap */
    uint64_t a = seed + H1 + H2, b = seed + H2, c = seed, d = seed - H1;
    for (; n >= 32; p += 32, n -= 32) {
        a = lane(a, rd64(p));
        b = lane(b, rd64(p + 8));
        c = lane(c, rd64(p + 16));
        d = lane(d, rd64(p + 24));
    }
    uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + (uint64_t)len;
    for (; n >= 8; p += 8, n -= 8) h = rotl(h ^ lane(0, rd64(p)), 27) * H1 + H2;
    for (; n > 0; p++, n--) h = rotl(h ^ (*p * H2), 11) * H1;
    /* final avalanche (splitmix64's mixer) */
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}
