/* peak.c - single-precision FMA peak of this machine, and the bf16 dot-product
 * peak where the CPU has AVX512_BF16: what the kernels could reach at best,
 * the yardsticks for GEMM and training throughput numbers (the bf16 one for
 * the products training runs in bf16: a vdpbf16ps does 2 multiply-adds per
 * f32 lane, 4 flops), and the AMX bf16 tile peak where the machine grants AMX.
 *
 * Each thread runs K independent FMA chains (acc_k = acc_k * a + b) on full
 * vectors: K exceeds FMA latency x ports (4 cycles x 2 ports = 8 on current
 * x86), so the chains hide latency and the loop is throughput bound. The
 * inner loop must be unrolled so the accumulators live in registers: left
 * rolled (gcc -O2) they go through the stack and the probe reports a
 * store-forwarding bound about 4x below the real peak. A
 * vector FMA counts 2 flops per lane. Runs 1 thread, then N threads
 * (pthreads, default: all online cores), for AVX-512 (16 lanes) and AVX2 (8
 * lanes) where the CPU has them; each figure is the best of 3 timed runs of
 * about 0.3 s after a calibration run. Prints GFLOP/s per core and in total
 * (wall clock), and per core by each thread's CPU time: when other processes
 * share the cores the wall-clock figures drop, the CPU-time one does not.
 *
 * Then the memory read bandwidth, the bound of decode (each token reads the
 * weights and the whole KV cache once): threads sum disjoint slices of a
 * 1 GiB buffer (far beyond the caches) with full-width loads, best of 3
 * passes, for 1 thread and N threads, in GB/s (1e9 bytes).
 *
 * Build and run: bash bench/peak.sh [threads]
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { K = 16 }; /* independent accumulators per thread */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

__attribute__((target("avx512f"))) static float run_avx512(int64_t iters) {
    __m512 acc[K];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
    for (int k = 0; k < K; k++) acc[k] = _mm512_set1_ps((float)k);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int k = 0; k < K; k++) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
    __m512 s = acc[0];
    for (int k = 1; k < K; k++) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) static float run_bf16(int64_t iters) {
    __m512 acc[K];
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F7F3F7F), b = (__m512bh)_mm512_set1_epi32(0x33D633D6);
    for (int k = 0; k < K; k++) acc[k] = _mm512_set1_ps((float)k);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int k = 0; k < K; k++) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
    __m512 s = acc[0];
    for (int k = 1; k < K; k++) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

/* AMX: four independent 16 x 16 f32 tiles accumulating TDPBF16PS products of
 * two A and two B tiles loaded once (16 x 32 x 16 multiply-adds each). Linux
 * grants the tile state only after arch_prctl(ARCH_REQ_XCOMP_PERM). */
#include <string.h>
#include <sys/syscall.h>
static int amx_granted(void) { return syscall(SYS_arch_prctl, 0x1023, 18) == 0; }
__attribute__((target("amx-tile,amx-bf16"))) static float run_amx(int64_t iters) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    static uint16_t ab[16 * 32];
    for (int i = 0; i < 16 * 32; i++) ab[i] = 0x3C00; /* 2^-7: sums stay finite */
    float out[16 * 16];
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_loadd(6, ab, 64);
    _tile_loadd(7, ab, 64);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}

__attribute__((target("avx2,fma"))) static float run_avx2(int64_t iters) {
    __m256 acc[K];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
    for (int k = 0; k < K; k++) acc[k] = _mm256_set1_ps((float)k);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16
        for (int k = 0; k < K; k++) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
    __m256 s = acc[0];
    for (int k = 1; k < K; k++) s = _mm256_add_ps(s, acc[k]);
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

typedef struct {
    int isa; /* 512, 256, or 1512 (avx512bf16) */
    int64_t iters;
    pthread_barrier_t *bar;
    float sink;
    double cpu_s; /* this thread's CPU time for the run */
} job;

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *worker(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->bar);
    double c0 = cpu_now();
    j->sink = j->isa == 2512   ? run_amx(j->iters)
              : j->isa == 1512 ? run_bf16(j->iters)
              : j->isa == 512  ? run_avx512(j->iters)
                               : run_avx2(j->iters);
    j->cpu_s = cpu_now() - c0;
    return NULL;
}

/* Seconds for n threads to each run iters iterations (start at a barrier, end at the last join). */
static double timed(int isa, int n, int64_t iters, float *sink, double *cpu_max) {
    pthread_t th[256];
    job jobs[256];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
    for (int t = 0; t < n; t++) {
        jobs[t] = (job){isa, iters, &bar, 0, 0};
        pthread_create(&th[t], NULL, worker, &jobs[t]);
    }
    pthread_barrier_wait(&bar);
    double t0 = now();
    for (int t = 0; t < n; t++) pthread_join(th[t], NULL);
    double dt = now() - t0;
    pthread_barrier_destroy(&bar);
    *cpu_max = 0;
    for (int t = 0; t < n; t++) {
        *sink += jobs[t].sink;
        if (jobs[t].cpu_s > *cpu_max) *cpu_max = jobs[t].cpu_s;
    }
    return dt;
}

/* Best total GFLOP/s (wall clock) of 3 runs of ~0.3 s with n threads, and
 * the best per-core rate by CPU time (flops of one thread / its CPU seconds),
 * which stays meaningful when other processes share the cores. */
static double measure(int isa, int n, float *sink, double *per_core_cpu) {
    int lanes = isa == 1512 ? 32 : isa / 32; /* bf16: 16 f32 lanes x 2 multiply-adds */
    int64_t iters = 1 << 20;
    if (isa == 2512) lanes = 16 * 16 * 32 / K, iters = 1 << 14; /* per loop: 4 tiles of 16x16x32 (K = 16 below) */
    double cpu;
    double dt = timed(isa, n, iters, sink, &cpu);
    iters = (int64_t)((double)iters * 0.3 / (dt > 1e-4 ? dt : 1e-4));
    if (iters < 1) iters = 1;
    double best = 0, flops = (double)iters * K * lanes * 2;
    if (isa == 2512) flops = (double)iters * 4 * 16 * 16 * 32 * 2;
    *per_core_cpu = 0;
    for (int r = 0; r < 3; r++) {
        dt = timed(isa, n, iters, sink, &cpu);
        double gf = (double)n * flops / dt * 1e-9, gc = flops / cpu * 1e-9;
        if (gf > best) best = gf;
        if (gc > *per_core_cpu) *per_core_cpu = gc;
    }
    return best;
}

/* ------------------------------------------------------------ read bandwidth */
typedef struct {
    const float *p;
    size_t n;
    pthread_barrier_t *bar;
    float sink;
} rd_job;

__attribute__((target("avx512f"))) static float read_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) static float read_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

static void *rd_worker(void *arg) {
    rd_job *j = arg;
    pthread_barrier_wait(j->bar);
    j->sink = __builtin_cpu_supports("avx512f") ? read_avx512(j->p, j->n) : read_avx2(j->p, j->n);
    return NULL;
}

/* Best GB/s of 3 passes over buf (n floats) split among t threads. */
static double read_bw(const float *buf, size_t n, int t, float *sink) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        pthread_t th[256];
        rd_job jobs[256];
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)t + 1);
        const size_t per = n / (size_t)t / 64 * 64;
        for (int i = 0; i < t; i++) {
            jobs[i] = (rd_job){buf + (size_t)i * per, per, &bar, 0};
            pthread_create(&th[i], NULL, rd_worker, &jobs[i]);
        }
        pthread_barrier_wait(&bar);
        const double t0 = now();
        for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
        const double dt = now() - t0;
        pthread_barrier_destroy(&bar);
        for (int i = 0; i < t; i++) *sink += jobs[i].sink;
        const double gbs = (double)per * (double)t * sizeof(float) / dt * 1e-9;
        if (gbs > best) best = gbs;
    }
    return best;
}

int main(int argc, char **argv) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int n = argc > 1 ? atoi(argv[1]) : (int)(ncpu > 0 ? ncpu : 1);
    if (n < 1 || n > 256) {
        fprintf(stderr, "usage: peak [threads 1..256]\n");
        return 2;
    }
    __builtin_cpu_init();
    float sink = 0;
    printf("fp32 FMA and bf16 dot-product peaks, %d independent accumulators per thread, %ld online cores\n", K,
           ncpu);
    printf("%-8s %8s %14s %14s %18s\n", "isa", "threads", "GFLOP/s/core", "GFLOP/s total", "per core (CPU t)");
    /* __builtin_cpu_supports takes literals only */
    const int has[4] = {__builtin_cpu_supports("avx512f"), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
                        __builtin_cpu_supports("avx512bf16"),
                        __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") && amx_granted()};
    static const struct {
        int isa;
        const char *name;
    } isas[] = {{512, "avx512"}, {256, "avx2"}, {1512, "bf16"}, {2512, "amx"}};
    for (int i = 0; i < 4; i++) {
        if (!has[i]) {
            printf("%-8s  not supported by this CPU\n", isas[i].name);
            continue;
        }
        int counts[2] = {1, n};
        for (int c = 0; c < (n > 1 ? 2 : 1); c++) {
            double pc;
            double gf = measure(isas[i].isa, counts[c], &sink, &pc);
            printf("%-8s %8d %14.1f %14.1f %18.1f\n", isas[i].name, counts[c], gf / counts[c], gf, pc);
        }
    }
    if (__builtin_cpu_supports("avx2")) {
        const size_t nf = (size_t)1 << 28; /* 1 GiB of floats */
        float *buf = aligned_alloc(64, nf * sizeof(float));
        if (buf) {
            for (size_t i = 0; i < nf; i++) buf[i] = (float)(i & 7); /* touched: every page is real memory */
            printf("\nmemory read bandwidth (1 GiB, %s loads)\n%-8s %8s %14s\n",
                   __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", "", "threads", "GB/s");
            printf("%-8s %8d %14.1f\n", "read", 1, read_bw(buf, nf, 1, &sink));
            if (n > 1) printf("%-8s %8d %14.1f\n", "read", n, read_bw(buf, nf, n, &sink));
            free(buf);
        }
    }
    /* keep the results observable so the loops cannot be removed */
    if (sink == 12345.678f) printf("%g\n", (double)sink);
    return 0;
}
