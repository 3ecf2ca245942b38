/* ops.c - training ops: each forward directly above its backward.
 *
 * Compiled twice (see real.h): float for training, double for the gradient
 * tests. Every matrix product goes through BLAS (OpenBLAS's AVX-512/AVX2
 * kernels, chosen by OpenBLAS at run time), including attention, which is done
 * in (head, block of query rows) items, GEMMs with the block's scores in
 * between. Threads are ours, not OpenBLAS's: with a pool set, each GEMM is
 * split into row (or column) blocks run by single-threaded BLAS calls on the
 * pool's threads (attention deals whole items instead), and the elementwise
 * loops are split by rows the same way, so no second set of
 * threads spins while the other works (on 2 cores OpenBLAS's idle threads
 * yielding cost a third of the time). Splits are static: results depend on
 * the thread count only, never on timing. Shapes are in ops.h.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "kernels/gemm_bf16.h"
#include "kernels/quant.h"
#include "threadpool.h"
#include "train/ops.h"

static _Atomic int64_t g_flops;
static mn_threadpool *g_pool;
static _Thread_local int g_in_pool; /* a worker runs its part serially */

int64_t TN(mn_op_flops)(void) { return atomic_load(&g_flops); }
void TN(mn_op_flops_reset)(void) { atomic_store(&g_flops, 0); }
static void att_arena_free(void);
void TN(mn_op_set_pool)(mn_threadpool *pool) {
    g_pool = pool;
    if (!pool) att_arena_free();
}

/* ---- parallel loops ---- */
typedef void (*rows_fn)(void *ctx, int64_t i0, int64_t i1);
typedef struct {
    rows_fn fn;
    void *ctx;
    int64_t n, align;
} pfor_job;

static void pfor_worker(void *arg, int ith, int nth) {
    const pfor_job *j = arg;
    long lo, hi;
    mn_split((long)j->n, ith, nth, (long)j->align, &lo, &hi);
    g_in_pool = 1;
    if (hi > lo) j->fn(j->ctx, lo, hi);
    g_in_pool = 0;
}

/* fn over [0, n) in static parts, one per pool thread */
static void pfor(int64_t n, int64_t align, rows_fn fn, void *ctx) {
    if (!g_pool || g_in_pool || n < 2 || mn_threadpool_size(g_pool) < 2) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    pfor_job j = {fn, ctx, n, align};
    mn_threadpool_run(g_pool, pfor_worker, &j);
}

typedef struct {
    int ta, tb, M, N, K, split_n;
    real alpha, beta;
    const real *A, *B;
    real *C;
    int lda, ldb, ldc;
} gemm_job;

static void gemm_rows(void *arg, int64_t i0, int64_t i1) {
    const gemm_job *j = arg;
    const int n = (int)(i1 - i0);
    if (!j->split_n) {
        const real *A = j->A + (j->ta ? i0 : i0 * j->lda);
        GEMM(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, n, j->N, j->K,
             j->alpha, A, j->lda, j->B, j->ldb, j->beta, j->C + i0 * j->ldc, j->ldc);
    } else {
        const real *B = j->B + (j->tb ? i0 * j->ldb : i0);
        GEMM(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, j->M, n, j->K,
             j->alpha, j->A, j->lda, B, j->ldb, j->beta, j->C + i0, j->ldc);
    }
}

/* C (M,N) = alpha * op(A) op(B) + beta C, row-major; counts 2MNK. */
static void gemm(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda, const real *B, int ldb,
                 real beta, real *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0) {
            for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, sizeof(real) * (size_t)N);
        }
        return;
    }
    atomic_fetch_add(&g_flops, 2 * (int64_t)M * N * K);
    gemm_job j = {ta, tb, M, N, K, N > M, alpha, beta, A, B, C, lda, ldb, ldc};
    /* small products are not worth a dispatch */
    if ((int64_t)M * N * K < (1 << 17)) gemm_rows(&j, 0, j.split_n ? N : M);
    else pfor(j.split_n ? N : M, 16, gemm_rows, &j);
}

/* ---- products with frozen weights, bf16 when the weight is registered ---- */

#ifndef MN_REAL_F64
/* A registered weight's two packings: fwd for x W^T (B = W^T, K x N), bwd for
 * dy W (B = W, N x K). Registration happens while no op runs (a model's
 * create/free), so lookups need no lock. */
typedef struct {
    const float *w;
    mn_bf16_panel *fwd, *bwd;
} wpack;
#define MAX_PACKS 2048
static wpack g_packs[MAX_PACKS];
static int g_n_packs;
static _Thread_local uint16_t *g_abuf; /* the rounded left operand */
static _Thread_local size_t g_abuf_n;

int mn_op_bf16_register(const float *w, int N, int K) {
    if (!mn_bf16_supported()) return mn_error(MN_EUNSUPPORTED, "this CPU has no AVX512_BF16");
    if (g_n_packs == MAX_PACKS) return mn_error(MN_ENOMEM, "more than %d weights packed for bf16", MAX_PACKS);
    wpack p = {w, mn_bf16_pack(w, K, N, 1, K), mn_bf16_pack(w, N, K, K, 1)};
    if (!p.fwd || !p.bwd) {
        mn_bf16_panel_free(p.fwd), mn_bf16_panel_free(p.bwd);
        return mn_error(MN_ENOMEM, "out of memory packing a %d x %d weight for bf16 (train with --f32 to do without)",
                        N, K);
    }
    g_packs[g_n_packs++] = p;
    return MN_OK;
}

void mn_op_bf16_unregister(const float *w) {
    for (int i = 0; i < g_n_packs; i++)
        if (g_packs[i].w == w) {
            mn_bf16_panel_free(g_packs[i].fwd), mn_bf16_panel_free(g_packs[i].bwd);
            g_packs[i] = g_packs[--g_n_packs];
            break;
        }
    if (!g_n_packs) free(g_abuf), g_abuf = NULL, g_abuf_n = 0;
}

/* Whether bf16 products beat f32 ones here, timed once per process on the
 * calling thread: a gate/up-sized product (128 x 576 x 1,536), the best of 7
 * runs of each. vdpbf16ps does two multiply-adds per lane, but CPUs differ in
 * how many issue per cycle: on the AMD EPYC machines of BENCHMARKS.md bf16
 * runs at twice the f32 FMA rate, on an Intel Xeon with two FMA ports at half
 * of it. */
static int g_bf16_faster = -1;
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static void bf16_calibrate(void) {
    enum { CM = 128, CK = 576, CN = 1536 };
    int faster = 0;
    float *w = malloc(sizeof(float) * CN * CK), *x = malloc(sizeof(float) * CM * CK), *y = malloc(sizeof(float) * CM * CN);
    mn_bf16_panel *p = NULL;
    uint16_t *ab = NULL;
    if (w && x && y) {
        uint32_t r = 12345;
        for (int i = 0; i < CN * CK; i++) r = r * 1664525u + 1013904223u, w[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
        for (int i = 0; i < CM * CK; i++) r = r * 1664525u + 1013904223u, x[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
        p = mn_bf16_pack(w, CK, CN, 1, CK);
    }
    if (p) ab = malloc(sizeof(uint16_t) * CM * 2 * (size_t)p->K2);
    if (ab) {
        const int threads = openblas_get_num_threads();
        openblas_set_num_threads(1);
        double tb = 1e30, tf = 1e30;
        for (int rep = 0; rep < 7; rep++) {
            double t0 = now_s();
            mn_bf16_round_rows(ab, x, CM, CK, CK);
            mn_bf16_gemm(CM, 0, p->NB, ab, p, y, CN, 0);
            double t1 = now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, CM, CN, CK, 1, x, CK, w, CK, 0, y, CN);
            double t2 = now_s();
            tb = fmin(tb, t1 - t0), tf = fmin(tf, t2 - t1);
        }
        openblas_set_num_threads(threads);
        faster = tb < 0.9 * tf; /* a clear win only: the rounding costs precision */
    }
    mn_bf16_panel_free(p);
    free(ab), free(w), free(x), free(y);
    __atomic_store_n(&g_bf16_faster, faster, __ATOMIC_RELEASE);
}

int mn_op_bf16_faster(void) {
    if (!mn_bf16_supported()) return 0;
    if (__atomic_load_n(&g_bf16_faster, __ATOMIC_ACQUIRE) < 0) bf16_calibrate(); /* racing callers measure twice */
    return __atomic_load_n(&g_bf16_faster, __ATOMIC_ACQUIRE);
}

static const wpack *packed(const float *w, int N, int K) {
    for (int i = 0; i < g_n_packs; i++)
        if (g_packs[i].w == w) return g_packs[i].fwd->N == N && g_packs[i].fwd->K == K ? &g_packs[i] : NULL;
    return NULL;
}

typedef struct {
    uint16_t *ab;
    const float *a;
    int64_t lda, lab;
    int K, M;
    const mn_bf16_panel *p;
    float *c;
    int64_t ldc;
    int acc;
} bgemm_job;

static void bround_rows(void *arg, int64_t i0, int64_t i1) {
    const bgemm_job *j = arg;
    mn_bf16_round_rows(j->ab + i0 * j->lab, j->a + i0 * j->lda, (int32_t)(i1 - i0), j->K, j->lda);
}
static void bgemm_cols(void *arg, int64_t b0, int64_t b1) {
    const bgemm_job *j = arg;
    mn_bf16_gemm(j->M, (int32_t)b0, (int32_t)b1, j->ab, j->p, j->c, j->ldc, j->acc);
}

/* C (M, p->N) (+)= A (M, p->K) B; falls back to f32 (returns 0) only when the
 * scratch for the rounded A cannot grow. */
static int bgemm(const mn_bf16_panel *p, int M, const float *a, int64_t lda, float *c, int64_t ldc, int acc) {
    if (M <= 0) return 1;
    const int64_t lab = 2 * (int64_t)p->K2;
    const size_t need = (size_t)M * (size_t)lab;
    if (need > g_abuf_n) {
        uint16_t *nb = realloc(g_abuf, need * sizeof *nb);
        if (!nb) return 0;
        g_abuf = nb, g_abuf_n = need;
    }
    atomic_fetch_add(&g_flops, 2 * (int64_t)M * p->N * p->K);
    bgemm_job j = {g_abuf, a, lda, lab, p->K, M, p, c, ldc, acc};
    if ((int64_t)M * p->N * p->K < (1 << 17)) {
        bround_rows(&j, 0, M);
        bgemm_cols(&j, 0, p->NB);
    } else {
        pfor(M, 16, bround_rows, &j);
        pfor(p->NB, 1, bgemm_cols, &j);
    }
    return 1;
}
#define PACKED(w, N, K) packed(w, N, K)
#define BGEMM(...) bgemm(__VA_ARGS__)
#else
typedef struct {
    const void *fwd, *bwd;
} wpack;
#define PACKED(w, N, K) ((const wpack *)NULL)
#define BGEMM(...) 0
#endif

void TN(mn_op_matmul_fwd)(real *y, const real *x, const real *w, int T, int K, int N, int accumulate) {
    const wpack *pk = PACKED(w, N, K);
    if (pk && BGEMM(pk->fwd, T, x, K, y, N, accumulate)) return;
    gemm(0, 1, T, N, K, 1, x, K, w, K, accumulate ? 1 : 0, y, N);
}

void TN(mn_op_matmul_bwd)(real *dx, const real *dy, const real *w, int T, int K, int N) {
    const wpack *pk = PACKED(w, N, K);
    if (pk && BGEMM(pk->bwd, T, dy, N, dx, K, 1)) return;
    gemm(0, 0, T, K, N, 1, dy, N, w, K, 1, dx, K);
}

void TN(mn_op_matmul_dw)(real *dw, const real *dy, const real *x, int T, int K, int N) {
    gemm(1, 0, N, K, T, 1, dy, N, x, K, 1, dw, K);
}

/* ---- LoRA: W' = W + s B A ----------------------------------------------- */

void TN(mn_op_lora_fwd)(real *y, real *u, const real *x, const real *a, const real *b, int T, int K, int N, int r,
                        real s) {
    gemm(0, 1, T, r, K, 1, x, K, a, K, 0, u, r);
    gemm(0, 1, T, N, r, s, u, r, b, r, 1, y, N);
}

void TN(mn_op_lora_bwd)(real *dx, real *da, real *db, real *du, const real *dy, const real *x, const real *u,
                        const real *a, const real *b, int T, int K, int N, int r, real s) {
    if (db) gemm(1, 0, N, r, T, s, dy, N, u, r, 1, db, r); /* dB = s dy^T u */
    gemm(0, 0, T, r, N, s, dy, N, b, r, 0, du, r);          /* du = s dy B */
    if (da) gemm(1, 0, r, K, T, 1, du, r, x, K, 1, da, K); /* dA = du^T x */
    if (dx) gemm(0, 0, T, K, r, 1, du, r, a, K, 1, dx, K);
}

/* ---- RMSNorm ------------------------------------------------------------- */

typedef struct {
    real *y, *inv, *dx;
    const real *x, *w, *dy, *cinv;
    int C;
    real eps;
} norm_job;

static void rmsnorm_fwd_rows(void *arg, int64_t t0, int64_t t1) {
    const norm_job *j = arg;
    const int C = j->C;
    for (int64_t t = t0; t < t1; t++) {
        const real *xt = j->x + t * C;
        real *yt = j->y + t * C;
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)xt[i] * xt[i];
        const real r = (real)(1.0 / sqrt(ss / C + (double)j->eps));
        j->inv[t] = r;
        for (int i = 0; i < C; i++) yt[i] = xt[i] * r * j->w[i];
    }
}

void TN(mn_op_rmsnorm_fwd)(real *y, real *inv, const real *x, const real *w, int T, int C, real eps) {
    norm_job j = {.y = y, .inv = inv, .x = x, .w = w, .C = C, .eps = eps};
    pfor(T, 1, rmsnorm_fwd_rows, &j);
}

/* y_i = w_i x_i r with r = (mean x^2 + eps)^-1/2, dr/dx_j = -r^3 x_j / C, so
 * dx_j = r w_j dy_j - (r^3 / C) x_j sum_i dy_i w_i x_i. */
static void rmsnorm_bwd_rows(void *arg, int64_t t0, int64_t t1) {
    const norm_job *j = arg;
    const int C = j->C;
    for (int64_t t = t0; t < t1; t++) {
        const real *xt = j->x + t * C, *dyt = j->dy + t * C;
        real *dxt = j->dx + t * C;
        const real r = j->cinv[t];
        double dot = 0;
        for (int i = 0; i < C; i++) dot += (double)dyt[i] * j->w[i] * xt[i];
        const real c = (real)(dot * r * r * r / C);
        for (int i = 0; i < C; i++) dxt[i] += r * j->w[i] * dyt[i] - c * xt[i];
    }
}

void TN(mn_op_rmsnorm_bwd)(real *dx, const real *dy, const real *x, const real *w, const real *inv, int T, int C) {
    norm_job j = {.dx = dx, .dy = dy, .x = x, .w = w, .cinv = inv, .C = C};
    pfor(T, 1, rmsnorm_bwd_rows, &j);
}

/* ---- RoPE ------------------------------------------------------------------ */

typedef struct {
    real *x;
    const int32_t *pos;
    int nh, D;
    real theta_scale, freq_scale, sign;
} rope_job;

/* The angle recurrence matches the inference engine (forward.c) in float. */
static void rope_rows(void *arg, int64_t t0, int64_t t1) {
    const rope_job *j = arg;
    const int D = j->D, nh = j->nh;
    for (int64_t t = t0; t < t1; t++) {
        real theta = (real)j->pos[t];
        for (int i = 0; i < D / 2; i++) {
            const real ang = j->freq_scale * theta;
            const real c = RCOS(ang), s = j->sign * RSIN(ang);
            for (int h = 0; h < nh; h++) {
                real *v = j->x + (t * nh + h) * D;
                const real a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = a * s + b * c;
            }
            theta *= j->theta_scale;
        }
    }
}

static void rope(real *x, const int32_t *pos, int T, int nh, int D, float base, float freq_scale, real sign) {
    rope_job j = {x, pos, nh, D, (real)pow((double)base, -2.0 / D), (real)freq_scale, sign};
    pfor(T, 1, rope_rows, &j);
}

void TN(mn_op_rope_fwd)(real *x, const int32_t *pos, int T, int nh, int D, float base, float freq_scale) {
    rope(x, pos, T, nh, D, base, freq_scale, 1);
}

/* A rotation's transpose is the rotation by minus the angle. */
void TN(mn_op_rope_bwd)(real *dx, const int32_t *pos, int T, int nh, int D, float base, float freq_scale) {
    rope(dx, pos, T, nh, D, base, freq_scale, -1);
}

/* ---- SwiGLU ---------------------------------------------------------------- */

typedef struct {
    real *h, *dg, *du;
    const real *g, *u, *dh;
} glu_job;

/* e[i] = exp(-x[i]) for i < n <= GLU_CHUNK: the vector exp in the float
 * build (a scalar expf per element was 8% of a training step), exp in the
 * double one */
#define GLU_CHUNK 512
static void neg_exp(int64_t n, real *e, const real *x) {
#ifdef MN_REAL_F64
    for (int64_t i = 0; i < n; i++) e[i] = exp(-x[i]);
#else
    for (int64_t i = 0; i < n; i++) e[i] = -x[i];
    mn_vec_get()->exp_lincomb(n, e, e, 1.0f, NULL, 0.0f);
#endif
}

/* h = g sigma(g) u, sigma(g) = 1 / (1 + exp(-g)) */
static void swiglu_fwd_rows(void *arg, int64_t i0, int64_t i1) {
    const glu_job *j = arg;
    real e[GLU_CHUNK];
    for (int64_t c = i0; c < i1; c += GLU_CHUNK) {
        const int64_t n = i1 - c < GLU_CHUNK ? i1 - c : GLU_CHUNK;
        const real *g = j->g + c, *u = j->u + c;
        real *h = j->h + c;
        neg_exp(n, e, g);
        for (int64_t i = 0; i < n; i++) h[i] = g[i] * u[i] / (1 + e[i]);
    }
}

void TN(mn_op_swiglu_fwd)(real *h, const real *g, const real *u, int64_t n) {
    glu_job j = {.h = h, .g = g, .u = u};
    pfor(n, 64, swiglu_fwd_rows, &j);
}

/* silu'(g) = sigma(g) (1 + g (1 - sigma(g))). */
static void swiglu_bwd_rows(void *arg, int64_t i0, int64_t i1) {
    const glu_job *j = arg;
    real e[GLU_CHUNK];
    for (int64_t c = i0; c < i1; c += GLU_CHUNK) {
        const int64_t n = i1 - c < GLU_CHUNK ? i1 - c : GLU_CHUNK;
        const real *g = j->g + c, *u = j->u + c, *dh = j->dh + c;
        real *dg = j->dg + c, *du = j->du + c;
        neg_exp(n, e, g);
        for (int64_t i = 0; i < n; i++) {
            const real sg = 1 / (1 + e[i]);
            du[i] = dh[i] * g[i] * sg;
            dg[i] = dh[i] * u[i] * sg * (1 + g[i] * (1 - sg));
        }
    }
}

void TN(mn_op_swiglu_bwd)(real *dg, real *du, const real *dh, const real *g, const real *u, int64_t n) {
    glu_job j = {.dg = dg, .du = du, .dh = dh, .g = g, .u = u};
    pfor(n, 64, swiglu_bwd_rows, &j);
}

/* ---- exp over rows: the vector kernels (kernels/quant.h) in the float build,
 * plain exp in the double one, which the gradient tests hold as the reference.
 * Arguments below -87.3 (masked -inf) give 0 in both. */
#ifdef MN_REAL_F64
static double row_exp_sum(int64_t n, double *x, double shift) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = x[i] - shift < -87.3 ? 0 : exp(x[i] - shift));
    return s;
}
static double row_sum_exp(int64_t n, const double *x, double shift) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] - shift < -87.3 ? 0 : exp(x[i] - shift);
    return s;
}
static void row_exp_lincomb(int64_t n, double *y, const double *a, double alpha, const double *b, double beta) {
    for (int64_t i = 0; i < n; i++) y[i] = alpha * exp(a[i]) + (b ? beta * exp(b[i]) : 0);
}
/* KL(p_T || q) = sum exp(lp_T) (lp_T - lq) of one row of log-probabilities */
static double row_kl(int64_t n, const double *tp, const double *lq) {
    double kl = 0;
    for (int64_t c = 0; c < n; c++) {
        const double pt = exp(tp[c]);
        if (pt > 0) kl += pt * (tp[c] - lq[c]);
    }
    return kl;
}
#else
static double row_exp_sum(int64_t n, float *x, float shift) { return mn_vec_get()->exp_sum(n, x, shift); }
static double row_sum_exp(int64_t n, const float *x, float shift) { return mn_vec_get()->sum_exp(n, x, shift); }
static void row_exp_lincomb(int64_t n, float *y, const float *a, float alpha, const float *b, float beta) {
    mn_vec_get()->exp_lincomb(n, y, a, alpha, b, beta);
}
/* The same with vector exp and dot products, in blocks summed in double (the
 * vocabulary-long scalar exp in double was 3% of a distillation step). The
 * teacher's log-probabilities come from a log-softmax of finite logits, so
 * they are finite and exp never meets -inf here. */
static double row_kl(int64_t n, const float *tp, const float *lq) {
    const mn_vec_ops *vo = mn_vec_get();
    float pt[1024];
    double kl = 0;
    for (int64_t c = 0; c < n; c += 1024) {
        const int64_t m = n - c < 1024 ? n - c : 1024;
        vo->exp_lincomb(m, pt, tp + c, 1.0f, NULL, 0.0f);
        kl += (double)vo->dot_f32(m, pt, tp + c) - (double)vo->dot_f32(m, pt, lq + c);
    }
    return kl;
}
#endif

/* ---- attention ---------------------------------------------------------------- */

/* Attention in tiles: a work item is one head's block of up to ATT_BR query
 * rows against the cells up to the last one a row of the block sees (about
 * half the score and value products of a long causal pass, or of a beacon
 * window, whose masks are causal at heart, are never computed). The item's score block lives in its thread's slot
 * from the score product through the softmax to the value product, so it
 * stays in L2 (64 x 1,300 floats = 330 KB) instead of a (T, NC) block per
 * head going through memory three times, and the items run on the pool with
 * one dispatch per pass instead of a barrier per product. The backward
 * recomputes each item's probabilities from q, k and the kept log-sum-exp;
 * nothing of size T x NC x H outlives a pass. */
#define ATT_BR 64
#define ATT_MAXBLK 1024 /* blocks per dispatch: longer batches go in spans of rows */
static inline int64_t row_limit(const mn_attn_shape *s, int64_t i) {
    const int64_t NC = (int64_t)s->N + s->T;
    if (!s->mask) return s->N + i + 1;
    const uint8_t *m = s->mask + i * NC;
    int64_t c = NC;
    while (c > 0 && !m[c - 1]) c--;
    return c;
}
/* the cells rows r0 .. r0+nr-1 read: one past the last cell any of them sees */
static int block_limit(const mn_attn_shape *s, int r0, int nr) {
    if (!s->mask) return s->N + r0 + nr;
    int64_t lim = 0;
    for (int i = r0; i < r0 + nr; i++) {
        const int64_t l = row_limit(s, i);
        lim = l > lim ? l : lim;
    }
    return (int)lim;
}

/* Slots of threads 1.. (thread 0 uses the caller's scratch and accumulates dk,
 * dv in place): grown on the calling thread before a dispatch, reachable from
 * here until mn_op_set_pool(NULL). */
static real *g_att_arena;
static size_t g_att_arena_n;
static void att_arena_free(void) {
    free(g_att_arena);
    g_att_arena = NULL, g_att_arena_n = 0;
}

typedef struct {
    const mn_attn_shape *s;
    const real *q, *k, *v, *o, *dout, *lse_in;
    real *out, *lse, *dq, *dk, *dv, *scratch;
    real scale;
    int br, row0, nblk, bwd, nth; /* the span: nblk blocks of br rows from row0 */
    int lim[ATT_MAXBLK];      /* per row block: block_limit */
    int64_t cum[ATT_MAXBLK + 1]; /* cost of blocks before b (rows x cells), one head */
    size_t slot;              /* reals per slot of threads >= 1 */
} attn_job;

/* The largest of x[0..n): eight running maxima, where one chain of compares
 * would wait on each compare's latency (the pass then cost as much as the
 * score product). */
static real row_max(int64_t n, const real *x) {
    real m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int u = 0; u < 8; u++) m[u] = x[c + u] > m[u] ? x[c + u] : m[u];
    for (; c < n; c++) m[0] = x[c] > m[0] ? x[c] : m[0];
    for (int u = 1; u < 8; u++) m[0] = m[u] > m[0] ? m[u] : m[0];
    return m[0];
}

/* cells a row does not see -> -inf, below its limit */
static void row_hide(const mn_attn_shape *s, int64_t i, int64_t lim, real *row) {
    const uint8_t *m = s->mask + i * ((int64_t)s->N + s->T);
    for (int64_t c = 0; c < lim; c++) row[c] = m[c] ? row[c] : -INFINITY;
}

/* fwd: the rows' scores (ld nc) -> unnormalised probabilities exp(s - max),
 * inv[r] = 1 / their sum (the output rows are scaled after the value
 * product: D products per row instead of nc), lse kept */
static void att_softmax(const attn_job *j, int h, int r0, int nr, int nc, real *S, real *inv) {
    const mn_attn_shape *s = j->s;
    for (int r = 0; r < nr; r++) {
        const int64_t i = r0 + r, lim = row_limit(s, i);
        real *row = S + (int64_t)r * nc;
        if (s->mask) row_hide(s, i, lim, row);
        const real mx = row_max(lim, row);
        const double sum = row_exp_sum(lim, row, mx);
        inv[r] = (real)(1.0 / sum);
        if (lim < nc) memset(row + lim, 0, sizeof(real) * (size_t)(nc - lim));
        j->lse[i * s->H + h] = mx + (real)log(sum);
    }
}

/* bwd: scores -> P = exp(S - lse) (masked 0); dS (holding dO V^T) -> P o (dS - dO.O) */
static void att_dscores(const attn_job *j, int h, int r0, int nr, int nc, real *P, real *dS) {
    const mn_attn_shape *s = j->s;
    const int64_t HD = (int64_t)s->H * s->D;
    for (int r = 0; r < nr; r++) {
        const int64_t i = r0 + r, lim = row_limit(s, i);
        real *p = P + (int64_t)r * nc, *ds = dS + (int64_t)r * nc;
        if (s->mask) row_hide(s, i, lim, p);
        row_exp_sum(lim, p, j->lse_in[i * s->H + h]);
        const real *oi = j->o + i * HD + (int64_t)h * s->D, *doi = j->dout + i * HD + (int64_t)h * s->D;
        double dd = 0;
        for (int d = 0; d < s->D; d++) dd += (double)oi[d] * doi[d];
        for (int64_t c = 0; c < lim; c++) ds[c] = p[c] * (ds[c] - (real)dd);
        if (lim < nc) {
            memset(p + lim, 0, sizeof(real) * (size_t)(nc - lim));
            memset(ds + lim, 0, sizeof(real) * (size_t)(nc - lim));
        }
    }
}

static void att_item(const attn_job *j, int64_t it, real *P, real *dS, real *dk, real *dv) {
    const mn_attn_shape *s = j->s;
    const int HD = s->H * s->D, GD = s->G * s->D, D = s->D;
    const int h = (int)(it / j->nblk), b = (int)(it % j->nblk), g = h / (s->H / s->G);
    const int r0 = j->row0 + b * j->br, nr = s->T - r0 < j->br ? s->T - r0 : j->br, nc = j->lim[b];
    const real *qh = j->q + (int64_t)r0 * HD + (int64_t)h * D, *kg = j->k + (int64_t)g * D, *vg = j->v + (int64_t)g * D;
    gemm(0, 1, nr, nc, D, j->scale, qh, HD, kg, GD, 0, P, nc);
    if (!j->bwd) {
        real inv[ATT_BR];
        real *o = j->out + (int64_t)r0 * HD + (int64_t)h * D;
        att_softmax(j, h, r0, nr, nc, P, inv);
        gemm(0, 0, nr, D, nc, 1, P, nc, vg, GD, 0, o, HD);
        for (int r = 0; r < nr; r++)
            for (int d = 0; d < D; d++) o[(int64_t)r * HD + d] *= inv[r];
        return;
    }
    const real *dO = j->dout + (int64_t)r0 * HD + (int64_t)h * D;
    gemm(0, 1, nr, nc, D, 1, dO, HD, vg, GD, 0, dS, nc);
    att_dscores(j, h, r0, nr, nc, P, dS);
    /* dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO */
    gemm(0, 0, nr, D, nc, j->scale, dS, nc, kg, GD, 0, j->dq + (int64_t)r0 * HD + (int64_t)h * D, HD);
    gemm(1, 0, nc, D, nr, j->scale, dS, nc, qh, HD, 1, dk + (int64_t)g * D, GD);
    gemm(1, 0, nc, D, nr, 1, P, nc, dO, HD, 1, dv + (int64_t)g * D, GD);
}

/* Items (head, block) are dealt in contiguous ranges of equal cost (rows x
 * cells), a split that depends on the shape and thread count only. */
static void att_worker(void *arg, int ith, int pool_nth) {
    const attn_job *j = arg;
    const mn_attn_shape *s = j->s;
    const int nth = j->nth;
    if (ith >= nth) return;
    const int64_t per_head = j->cum[j->nblk], total = per_head * s->H, NC = (int64_t)s->N + s->T;
    const int64_t lo = total * ith / nth, hi = total * (ith + 1) / nth;
    real *P = j->scratch, *dS = j->scratch + (int64_t)j->br * NC, *dk = j->dk, *dv = j->dv;
    if (ith > 0) {
        P = g_att_arena + (size_t)(ith - 1) * j->slot, dS = P + (int64_t)j->br * NC;
        if (j->bwd) {
            dk = dS + (int64_t)j->br * NC, dv = dk + NC * s->G * s->D;
            memset(dk, 0, sizeof(real) * (size_t)(2 * NC * s->G * s->D));
        }
    }
    const int in_pool = g_in_pool;
    g_in_pool = 1; /* products inside an item run serially */
    for (int64_t it = 0; it < (int64_t)s->H * j->nblk; it++) {
        /* an item belongs to the thread whose cost range holds its midpoint */
        const int64_t b = it % j->nblk, mid = (it / j->nblk) * per_head + (j->cum[b] + j->cum[b + 1]) / 2;
        if (mid >= lo && mid < hi) att_item(j, it, P, dS, dk, dv);
    }
    g_in_pool = in_pool;
}

/* the partial dk, dv of threads 1.. added to thread 0's, in thread order */
typedef struct {
    real *dk, *dv;
    int nth, GD;
    size_t slot, off;
} att_sum_job;
static void att_sum_rows(void *arg, int64_t i0, int64_t i1) {
    const att_sum_job *j = arg;
    const int64_t n = j->slot - j->off; /* the partials: dk then dv, each n/2 */
    for (int t = 1; t < j->nth; t++) {
        const real *pk = g_att_arena + (size_t)(t - 1) * j->slot + j->off, *pv = pk + n / 2;
        for (int64_t i = i0 * j->GD; i < i1 * j->GD; i++) j->dk[i] += pk[i], j->dv[i] += pv[i];
    }
}

static void att_span(attn_job *j) {
    const mn_attn_shape *s = j->s;
    const int64_t NC = (int64_t)s->N + s->T, GD = (int64_t)s->G * s->D;
    j->cum[0] = 0;
    for (int b = 0; b < j->nblk; b++) {
        const int r0 = j->row0 + b * j->br, nr = s->T - r0 < j->br ? s->T - r0 : j->br;
        j->lim[b] = block_limit(s, r0, nr);
        j->cum[b + 1] = j->cum[b] + (int64_t)nr * j->lim[b];
    }
    int nth = g_pool && !g_in_pool ? mn_threadpool_size(g_pool) : 1;
    if ((int64_t)s->H * j->nblk < nth) nth = (int)((int64_t)s->H * j->nblk);
    j->slot = (size_t)((j->bwd ? 2 : 1) * j->br * NC + (j->bwd ? 2 * NC * GD : 0));
    const size_t need = (size_t)(nth > 1 ? nth - 1 : 0) * j->slot;
    if (need > g_att_arena_n) {
        real *a = realloc(g_att_arena, need * sizeof *a);
        if (a) g_att_arena = a, g_att_arena_n = need;
        else nth = 1; /* no room for more slots: one thread does it all */
    }
    j->nth = nth;
    if (nth < 2) {
        att_worker(j, 0, 1);
        return;
    }
    mn_threadpool_run(g_pool, att_worker, j);
    if (j->bwd) {
        att_sum_job sj = {j->dk, j->dv, nth, (int)GD, j->slot, (size_t)(2 * j->br * NC)};
        pfor(NC, 1, att_sum_rows, &sj);
    }
}

static void att_run(attn_job *j) {
    const int T = j->s->T;
    j->br = T < ATT_BR ? T : ATT_BR;
    j->scale = (real)(1.0 / sqrt((double)j->s->D));
    for (j->row0 = 0; j->row0 < T; j->row0 += ATT_MAXBLK * j->br) {
        const int left = (T - j->row0 + j->br - 1) / j->br;
        j->nblk = left < ATT_MAXBLK ? left : ATT_MAXBLK;
        att_span(j);
    }
}

void TN(mn_op_attn_fwd)(real *o, real *lse, const real *q, const real *k, const real *v, const mn_attn_shape *s,
                        real *scratch) {
    attn_job j = {.s = s, .q = q, .k = k, .v = v, .out = o, .lse = lse, .scratch = scratch};
    att_run(&j);
}

/* With P = softmax(S): dP = dO V^T, dS = P o (dP - rowsum(P o dP)), and
 * rowsum(P o dP) = dO . O per row; dQ = scale dS K, dK += scale dS^T Q,
 * dV += P^T dO. */
void TN(mn_op_attn_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                        const real *v, const real *o, const real *lse, const mn_attn_shape *s, real *scratch) {
    attn_job j = {.s = s, .q = q, .k = k, .v = v, .o = o, .dout = dout, .lse_in = lse, .dq = dq, .dk = dk, .dv = dv,
                  .scratch = scratch, .bwd = 1};
    att_run(&j);
}

/* ---- head: logits, cross-entropy, distillation ------------------------------- */

/* row (V) logits -> log-softmax in place */
static void log_softmax(real *row, int V) {
    const real mx = row_max(V, row);
    const double sum = row_sum_exp(V, row, mx);
    const real l = mx + (real)log(sum);
    for (int j = 0; j < V; j++) row[j] -= l;
}

typedef struct {
    real *scratch;
    double *row_loss;
    const int32_t *targets;
    const real *teacher;
    real ce_w, kl_w, dscale;
    int t0, V, grad;
} head_job;

/* CE: d(-lp[y])/dz = p - onehot(y). KL(p_T || q) = sum p_T (lp_T - lq):
 * d/dz = q - p_T. Rows without a loss get a zero gradient. */
static void head_rows(void *arg, int64_t i0, int64_t i1) {
    const head_job *j = arg;
    const int V = j->V;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t t = j->t0 + i;
        real *row = j->scratch + i * V;
        const int y = j->targets ? j->targets[t] : -1;
        const int use_kl = j->teacher && j->kl_w != 0 && (!j->targets || y >= 0);
        j->row_loss[i] = 0;
        if (y < 0 && !use_kl) {
            memset(row, 0, sizeof(real) * (size_t)V);
            continue;
        }
        log_softmax(row, V);
        double loss = 0;
        if (y >= 0 && j->ce_w != 0) loss -= (double)j->ce_w * row[y];
        const real *tp = use_kl ? j->teacher + t * V : NULL;
        if (tp) loss += (double)j->kl_w * row_kl(V, tp, row);
        j->row_loss[i] = loss;
        if (!j->grad) continue;
        const real cw = y >= 0 ? j->ce_w : 0, kw = tp ? j->kl_w : 0;
        row_exp_lincomb(V, row, row, j->dscale * (cw + kw), tp, -j->dscale * kw);
        if (y >= 0) row[y] -= j->dscale * cw;
    }
}

double TN(mn_op_head)(real *dx, const real *x, const real *w, int T, int C, int V, const int32_t *targets,
                      const real *teacher, real ce_w, real kl_w, real dscale, real *scratch, int chunk) {
    double loss = 0, row_loss[256];
    if (chunk > 256) chunk = 256;
    for (int t0 = 0; t0 < T; t0 += chunk) {
        const int n = T - t0 < chunk ? T - t0 : chunk;
        const wpack *pk = PACKED(w, V, C);
        if (!pk || !BGEMM(pk->fwd, n, x + (int64_t)t0 * C, C, scratch, V, 0))
            gemm(0, 1, n, V, C, 1, x + (int64_t)t0 * C, C, w, C, 0, scratch, V);
        head_job j = {scratch, row_loss, targets, teacher, ce_w, kl_w, dscale, t0, V, dx != NULL};
        pfor(n, 1, head_rows, &j);
        for (int i = 0; i < n; i++) loss += row_loss[i]; /* in row order: thread-count independent */
        if (dx && (!pk || !BGEMM(pk->bwd, n, scratch, V, dx + (int64_t)t0 * C, C, 0)))
            gemm(0, 0, n, C, V, 1, scratch, V, w, C, 0, dx + (int64_t)t0 * C, C);
    }
    return loss;
}

static void log_softmax_rows(void *arg, int64_t i0, int64_t i1) {
    const head_job *j = arg;
    for (int64_t t = i0; t < i1; t++) log_softmax(j->scratch + t * j->V, j->V);
}

void TN(mn_op_logprobs)(real *lp, const real *x, const real *w, int T, int C, int V) {
    const wpack *pk = PACKED(w, V, C);
    if (!pk || !BGEMM(pk->fwd, T, x, C, lp, V, 0)) gemm(0, 1, T, V, C, 1, x, C, w, C, 0, lp, V);
    head_job j = {.scratch = lp, .V = V};
    pfor(T, 1, log_softmax_rows, &j);
}
