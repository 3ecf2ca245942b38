/* attn_decode.c - times the decode attention row kernels alone (mn_attn_part_*_get_isa for the CPU's
 * best ISA): one query token's 3 heads of 64 (SmolLM2's grouping) over N cached rows in ranges of 512
 * (as forward.c deals them to threads), f16 cache and q8_0 cache, one thread, best of 5 passes (PASSES=N); and
 * what it means for a decoded token: x 30 layers x 3 KV heads.
 * Usage: attn_decode N_ROWS (bench/attn_decode.sh) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/attention.h"

static uint32_t rng = 1;
static float frand(void) { /* uniform in [0, 1): an LCG, so setup does not dwarf what is timed */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 16777216.0f;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    enum { G = 3, D = 64, KH = 3, CH = 512, LAYERS = 30 };
    const int64_t n = argc > 1 ? atoll(argv[1]) : 8192;
    const size_t ld16 = (size_t)KH * D, ldq = (size_t)KH * (D / MN_Q8_BLOCK) * MN_Q8_BYTES; /* three heads a row */
    uint16_t *K = malloc(sizeof(uint16_t) * (size_t)n * ld16), *V = malloc(sizeof(uint16_t) * (size_t)n * ld16);
    uint8_t *Kq = malloc((size_t)n * ldq), *Vq = malloc((size_t)n * ldq);
    float *q = malloc(sizeof(float) * G * D), *parts = malloc(sizeof(float) * MN_ATTN_PART(G, D) * (n / CH + 1));
    float *scr = malloc(sizeof(float) * G * CH), *row = malloc(sizeof(float) * D);
    if (n < CH || !K || !V || !Kq || !Vq || !q || !parts || !scr || !row) {
        fprintf(stderr, "attn_decode: N_ROWS >= %d, and memory for it\n", CH);
        return 1;
    }
    const mn_quant_traits *qt = mn_quant_get(MN_TYPE_Q8_0);
    for (int64_t j = 0; j < n; j++)
        for (int h = 0; h < KH; h++) {
            for (int i = 0; i < D; i++) row[i] = frand() * 2 - 1;
            qt->from_float(row, Kq + (size_t)j * ldq + (size_t)h * ldq / KH, D);
            for (int i = 0; i < D; i++) K[(size_t)j * ld16 + h * D + i] = 0x3800 ^ ((uint16_t)(frand() * 1024) & 0x3ff);
            for (int i = 0; i < D; i++) row[i] = frand() * 2 - 1;
            qt->from_float(row, Vq + (size_t)j * ldq + (size_t)h * ldq / KH, D);
            for (int i = 0; i < D; i++) V[(size_t)j * ld16 + h * D + i] = 0x3800 ^ ((uint16_t)(frand() * 1024) & 0x3ff);
        }
    for (int i = 0; i < G * D; i++) q[i] = frand() * 2 - 1;
    const mn_isa isa = mn_cpu_isa();
    const mn_attn_part_fn pf = mn_attn_part_get_isa(isa);
    const mn_attn_part_q8_fn pq = mn_attn_part_q8_get_isa(isa);
    for (int type = 0; type < 2; type++) {
        double best = 1e30;
        const int passes = getenv("PASSES") ? atoi(getenv("PASSES")) : 5;
        for (int r = 0; r < passes; r++) {
            const double t0 = now();
            for (int h = 0; h < KH; h++)
                for (int64_t j0 = 0, p = 0; j0 < n; j0 += CH, p++) {
                    const int64_t len = n - j0 < CH ? n - j0 : CH;
                    float *part = parts + (size_t)p * MN_ATTN_PART(G, D);
                    if (type == 0) pf(G, D, len, q, 0.125f, K + (size_t)j0 * ld16 + h * D, V + (size_t)j0 * ld16 + h * D, ld16, NULL, part, scr);
                    else pq(G, D, len, q, 0.125f, Kq + (size_t)j0 * ldq + (size_t)h * ldq / KH, Vq + (size_t)j0 * ldq + (size_t)h * ldq / KH, ldq, NULL, part, scr);
                }
            const double t = now() - t0;
            if (t < best) best = t;
        }
        const double bytes = (double)n * KH * 2 * (type ? ldq / KH : 2 * D);
        printf("{\"bench\": \"attn_decode\", \"isa\": \"%s\", \"cache\": \"%s\", \"rows\": %lld, \"heads\": %d, "
               "\"seconds\": %.6f, \"ns_per_row_head\": %.2f, \"GB_per_s\": %.2f, \"ms_per_token_30_layers\": %.3f}\n",
               mn_isa_name(isa), type ? "q8_0" : "f16", (long long)n, KH, best, best * 1e9 / ((double)n * KH),
               bytes / best / 1e9, best * LAYERS * 1e3);
    }
    return 0;
}
