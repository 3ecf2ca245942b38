/* bench_quant.c - micro-benchmark of the quantized gemm kernels (not a test).
 *
 * Build by hand after `make`:
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -Isrc/core bench/bench_quant.c \
 *       build/libmnemo.a -lm -pthread -o build/bench_quant
 *   ./build/bench_quant [threads] [gemma3]   (gemma3: Gemma 3 270M's shapes and types)
 *
 * Shapes are SmolLM2-135M's: Q4_1 matrices 1536x576 (ffn up/gate) and
 * 576x1536 (ffn down), the Q8_0 tied output 49152x576. "hot" repeats one
 * matrix (it stays in L2/L3); "cold" cycles through copies totalling 256 MiB,
 * so weights come from DRAM, like decode over a whole model. GB/s counts
 * weight bytes; GMAC/s counts multiply-adds. Threads split the rows. Times
 * are process CPU time divided by the thread count (robust against other
 * load on a shared machine).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/quant.h"

/* Process CPU time: other processes on a shared machine do not inflate it.
 * With N threads the time per call is taken as CPU time / N (i.e. assuming
 * the threads ran in parallel; memory contention between them still counts). */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    const mn_quant_traits *qt;
    int64_t K, rows, T;
    const uint8_t *W;
    size_t wb, mat;
    int ncopy, iters;
    const uint8_t *X;
    size_t xb;
    float *Y;
    int nth, ith;
} job;

/* Each thread runs all iterations on its own slice of rows (no per-call
 * synchronisation: this measures the kernel, not a thread pool). */
static void *run_job(void *p) {
    job *j = p;
    const int64_t per = (j->rows + j->nth - 1) / j->nth;
    const int64_t r0 = j->ith * per, r1 = r0 + per < j->rows ? r0 + per : j->rows;
    for (int it = 0; it < j->iters && r0 < r1; it++)
        mn_gemm_q(j->qt, j->K, j->W + (size_t)(it % j->ncopy) * j->mat, j->wb, r0, r1, j->X, j->xb, j->T, j->Y,
                  j->rows);
    return NULL;
}

static void gemm_mt(int nth, int iters, const mn_quant_traits *qt, int64_t K, int64_t rows, const uint8_t *W,
                    size_t wb, size_t mat, int ncopy, const uint8_t *X, size_t xb, int64_t T, float *Y) {
    pthread_t th[16];
    job jobs[16];
    for (int i = 0; i < nth; i++) {
        jobs[i] = (job){qt, K, rows, T, W, wb, mat, ncopy, iters, X, xb, Y, nth, i};
        if (i) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
    run_job(&jobs[0]);
    for (int i = 1; i < nth; i++) pthread_join(th[i], NULL);
}

static void bench(const char *label, mn_isa isa, int wtype, int64_t rows, int64_t K, int64_t T, int cold, int nth) {
    const mn_quant_traits *qt = mn_quant_get_isa(wtype, isa);
    const mn_quant_traits *at = mn_quant_get_isa(qt->vec_dot_type, isa);
    const size_t wb = mn_type_row_bytes(wtype, K), xb = mn_type_row_bytes(qt->vec_dot_type, K);
    const size_t mat = wb * rows;
    const int ncopy = cold ? (int)((256u << 20) / mat + 1) : 1;
    uint8_t *W = malloc(mat * ncopy), *X = malloc(xb * T);
    float *f = malloc(K * 4), *Y = malloc(sizeof(float) * rows * T);
    const mn_quant_traits *ws = mn_quant_get_isa(wtype, MN_ISA_SCALAR);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < K; i++) f[i] = (float)rand() / RAND_MAX - 0.5f;
        ws->from_float(f, W + r * wb, K);
    }
    for (int c = 1; c < ncopy; c++) memcpy(W + c * mat, W, mat);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < K; i++) f[i] = (float)rand() / RAND_MAX - 0.5f;
        at->from_float(f, X + t * xb, K);
    }
    gemm_mt(nth, 1, qt, K, rows, W, wb, mat, 1, X, xb, T, Y); /* warm up */
    int iters = 1;
    double t0, t1;
    for (;;) { /* grow the iteration count until a run takes >= 0.4 s of CPU per thread */
        t0 = now();
        gemm_mt(nth, iters, qt, K, rows, W, wb, mat, ncopy, X, xb, T, Y);
        t1 = now();
        if (t1 - t0 >= 0.4 * nth) break;
        iters *= 2;
    }
    const double sec = (t1 - t0) / iters / nth;
    printf("%-7s %-4s %6lldx%-5lld T=%-3lld %-4s %dth: %8.1f us  %7.2f GB/s  %7.1f GMAC/s  %9.0f rows/s\n",
           mn_isa_name(isa), label, (long long)rows, (long long)K, (long long)T, cold ? "cold" : "hot", nth,
           sec * 1e6, mat / sec / 1e9, (double)rows * K * T / sec / 1e9, rows / sec);
    free(W), free(X), free(f), free(Y);
}

static void bench_quantize(mn_isa isa, int type, int64_t K, int64_t T) {
    const mn_quant_traits *qt = mn_quant_get_isa(type, isa);
    float *x = malloc(K * T * 4);
    uint8_t *q = malloc(mn_type_row_bytes(type, K) * T);
    for (int64_t i = 0; i < K * T; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    int iters = 0;
    const double t0 = now();
    double t1;
    do {
        for (int64_t t = 0; t < T; t++) qt->from_float(x + t * K, q + t * mn_type_row_bytes(type, K), K);
        iters++;
        t1 = now();
    } while (t1 - t0 < 0.3);
    printf("%-7s from_float %s: %.2f GB/s of floats\n", mn_isa_name(isa), mn_type_layout_get(type)->name,
           (double)K * T * 4 * iters / (t1 - t0) / 1e9);
    free(x), free(q);
}

int main(int argc, char **argv) {
    const int nth = argc > 1 ? atoi(argv[1]) : 1;
    if (argc > 2 && !strcmp(argv[2], "gemma3")) {
        /* Gemma 3 270M Q4_K_M: Q5_0 q/gate/up, Q4_K attention output, Q6_K ffn down, Q8_0 tied output */
        const mn_isa I = mn_cpu_isa_hw();
        const int64_t Ts[] = {1, 64};
        for (int k = 0; k < 2; k++) {
            const int64_t T = Ts[k];
            bench("q5_0", I, MN_TYPE_Q5_0, 2048, 640, T, T == 1, nth);
            bench("q4_K", I, MN_TYPE_Q4_K, 640, 1024, T, T == 1, nth);
            bench("q6_K", I, MN_TYPE_Q6_K, 640, 2048, T, T == 1, nth);
            bench("q8_0", I, MN_TYPE_Q8_0, T == 1 ? 262144 : 4096, 640, T, T == 1, nth);
        }
        return 0;
    }
    for (int isa = MN_ISA_SCALAR; isa <= (int)mn_cpu_isa_hw(); isa++) {
        const mn_isa I = (mn_isa)isa;
        const int reps_t[] = {1, 64};
        for (int k = 0; k < 2; k++) {
            const int64_t T = reps_t[k];
            if (I == MN_ISA_SCALAR && T > 1) continue;
            bench("q4_1", I, MN_TYPE_Q4_1, 1536, 576, T, 0, nth);
            bench("q4_1", I, MN_TYPE_Q4_1, 576, 1536, T, 0, nth);
            if (T == 1) bench("q4_1", I, MN_TYPE_Q4_1, 1536, 576, T, 1, nth);
            bench("q8_0", I, MN_TYPE_Q8_0, T == 1 ? 49152 : 4096, 576, T, 0, nth);
            if (T == 1) bench("q8_0", I, MN_TYPE_Q8_0, 49152, 576, T, 1, nth);
        }
        bench_quantize(I, MN_TYPE_Q8_1, 576, 64);
        bench_quantize(I, MN_TYPE_Q8_0, 576, 64);
    }
    return 0;
}
