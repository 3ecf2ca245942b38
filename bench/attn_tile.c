/* attn_tile.c - times the inference tiled attention kernel (mn_attn_tile_get(), the CPU's best ISA)
 * alone over a causal prefill sweep of one KV head: blocks of 32 query tokens x 3 heads of 64
 * (SmolLM2's grouping) against f16 keys and values, each block seeing the keys up to its own last
 * token, as forward.c calls it; one thread, best of 3 sweeps.
 * Usage: attn_tile N_TOKENS (bench/attn_tile.sh) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/attention.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    enum { G = 3, D = 64, NQ = 32 };
    const int64_t n = argc > 1 ? atoll(argv[1]) : 4096;
    const size_t ld = 3 * D; /* three KV heads per cache row, as SmolLM2's cache */
    uint16_t *K = malloc(sizeof(uint16_t) * (size_t)n * ld), *V = malloc(sizeof(uint16_t) * (size_t)n * ld);
    float *q = malloc(sizeof(float) * NQ * G * D), *out = malloc(sizeof(float) * NQ * G * D);
    float *scr = malloc(sizeof(float) * mn_attn_tile_scratch(G, D, NQ, n));
    if (n < NQ || !K || !V || !q || !out || !scr) {
        fprintf(stderr, "attn_tile: N_TOKENS >= %d, and memory for it\n", NQ);
        return 1;
    }
    srand(1);
    for (size_t i = 0; i < (size_t)n * ld; i++) K[i] = 0x3c00 ^ (rand() & 0x3ff), V[i] = 0x3800 ^ (rand() & 0x3ff);
    for (int i = 0; i < NQ * G * D; i++) q[i] = (float)rand() / (float)RAND_MAX;
    const mn_attn_tile_fn f = mn_attn_tile_get();
    int64_t lim[NQ];
    double best = 1e30, flops = 0;
    for (int r = 0; r < 3; r++) {
        const double t0 = now();
        flops = 0;
        for (int64_t b = 0; b + NQ <= n; b += NQ) {
            for (int i = 0; i < NQ; i++) lim[i] = b + i + 1;
            f(G, D, NQ, q, G * D, 0.125f, K, V, ld, lim, NULL, out, G * D, scr);
            flops += 4.0 * NQ * G * D * (double)(b + NQ / 2); /* scores and values, 2 flops each */
        }
        const double t = now() - t0;
        if (t < best) best = t;
    }
    printf("causal sweep of %lld tokens: %.3f ms, %.1f GFLOP/s (1 thread)\n", (long long)n, best * 1e3,
           flops / best / 1e9);
    free(K), free(V), free(q), free(out), free(scr);
    return 0;
}
