/* attn_train.c - times the training attention op (src/train/ops.c) forward and backward on
 * random inputs: bench/attn_train.sh. Usage: attn_train T N THREADS REPS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>

#include "threadpool.h"
#include "train/ops.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 1280, N = argc > 2 ? atoi(argv[2]) : 0, nth = argc > 3 ? atoi(argv[3]) : 2, reps = argc > 4 ? atoi(argv[4]) : 20;
    int H = 9, G = 3, D = 64, NC = N + T;
    float *q = malloc(sizeof(float) * T * H * D), *k = malloc(sizeof(float) * NC * G * D), *v = malloc(sizeof(float) * NC * G * D);
    float *o = malloc(sizeof(float) * T * H * D), *lse = malloc(sizeof(float) * T * H), *scr = malloc(sizeof(float) * 2 * (size_t)T * NC);
    float *dq = malloc(sizeof(float) * T * H * D), *dk = calloc(NC * G * D, 4), *dv = calloc(NC * G * D, 4), *dout = malloc(sizeof(float) * T * H * D);
    srand(1);
    for (int i = 0; i < T * H * D; i++) q[i] = rand() / (float)RAND_MAX - 0.5f, dout[i] = rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < NC * G * D; i++) k[i] = rand() / (float)RAND_MAX - 0.5f, v[i] = rand() / (float)RAND_MAX - 0.5f;
    openblas_set_num_threads(1); /* as mnemo train: our pool splits the work */
    mn_threadpool *pool = NULL;
    if (nth > 1) mn_threadpool_create(nth, &pool), mn_op_set_pool(pool);
    mn_attn_shape s = {T, N, H, G, D, NULL};
    double tf = 1e9, tb = 1e9, cs = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        mn_op_attn_fwd(o, lse, q, k, v, &s, scr);
        double t1 = now();
        mn_op_attn_bwd(dq, dk, dv, dout, q, k, v, o, lse, &s, scr);
        double t2 = now();
        if (t1 - t0 < tf) tf = t1 - t0;
        if (t2 - t1 < tb) tb = t2 - t1;
    }
    for (int i = 0; i < T * H * D; i++) cs += o[i] + dq[i];
    for (int i = 0; i < NC * G * D; i++) cs += dk[i] + dv[i];
    printf("T %d N %d threads %d: fwd %.2f ms  bwd %.2f ms  (checksum %.6g)\n", T, N, nth, tf * 1e3, tb * 1e3, cs);
    mn_op_set_pool(NULL);
    if (pool) mn_threadpool_free(pool);
    return 0;
}
