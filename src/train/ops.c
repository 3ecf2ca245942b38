/* ops.c - training ops: each forward directly above its backward.
 *
 * Compiled twice (see real.h): float for training, double for the gradient
 * tests. Every matrix product goes through BLAS (OpenBLAS: its own threads and
 * its own AVX-512/AVX2 kernels chosen at run time), including attention, which
 * is done head by head as two GEMMs with the (T, NC) score block in between;
 * the elementwise parts are plain loops. Shapes are in ops.h.
 */
#include <stdatomic.h>
#include <string.h>

#include "train/ops.h"

static _Atomic int64_t g_flops;

int64_t TN(mn_op_flops)(void) { return atomic_load(&g_flops); }
void TN(mn_op_flops_reset)(void) { atomic_store(&g_flops, 0); }

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
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
         ldb, beta, C, ldc);
    atomic_fetch_add(&g_flops, 2 * (int64_t)M * N * K);
}

/* ---- matmul with a frozen weight ---------------------------------------- */

void TN(mn_op_matmul_fwd)(real *y, const real *x, const real *w, int T, int K, int N, int accumulate) {
    gemm(0, 1, T, N, K, 1, x, K, w, K, accumulate ? 1 : 0, y, N);
}

void TN(mn_op_matmul_bwd)(real *dx, const real *dy, const real *w, int T, int K, int N) {
    gemm(0, 0, T, K, N, 1, dy, N, w, K, 1, dx, K);
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

void TN(mn_op_rmsnorm_fwd)(real *y, real *inv, const real *x, const real *w, int T, int C, real eps) {
    for (int t = 0; t < T; t++) {
        const real *xt = x + (int64_t)t * C;
        real *yt = y + (int64_t)t * C;
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)xt[i] * xt[i];
        real r = (real)(1.0 / sqrt(ss / C + (double)eps));
        inv[t] = r;
        for (int i = 0; i < C; i++) yt[i] = xt[i] * r * w[i];
    }
}

/* y_i = w_i x_i r with r = (mean x^2 + eps)^-1/2, dr/dx_j = -r^3 x_j / C, so
 * dx_j = r w_j dy_j - (r^3 / C) x_j sum_i dy_i w_i x_i. */
void TN(mn_op_rmsnorm_bwd)(real *dx, const real *dy, const real *x, const real *w, const real *inv, int T, int C) {
    for (int t = 0; t < T; t++) {
        const real *xt = x + (int64_t)t * C, *dyt = dy + (int64_t)t * C;
        real *dxt = dx + (int64_t)t * C;
        const real r = inv[t];
        double dot = 0;
        for (int i = 0; i < C; i++) dot += (double)dyt[i] * w[i] * xt[i];
        const real c = (real)(dot * r * r * r / C);
        for (int i = 0; i < C; i++) dxt[i] += r * w[i] * dyt[i] - c * xt[i];
    }
}

/* ---- RoPE ------------------------------------------------------------------ */

/* The angle recurrence matches the inference engine (forward.c) in float. */
static void rope(real *x, const int32_t *pos, int T, int nh, int D, float base, float freq_scale, real sign) {
    const real theta_scale = (real)pow((double)base, -2.0 / D);
    for (int t = 0; t < T; t++) {
        real theta = (real)pos[t];
        for (int i = 0; i < D / 2; i++) {
            const real ang = (real)freq_scale * theta;
            const real c = (real)cos((double)ang), s = sign * (real)sin((double)ang);
            for (int h = 0; h < nh; h++) {
                real *v = x + ((int64_t)t * nh + h) * D;
                const real a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = a * s + b * c;
            }
            theta *= theta_scale;
        }
    }
}

void TN(mn_op_rope_fwd)(real *x, const int32_t *pos, int T, int nh, int D, float base, float freq_scale) {
    rope(x, pos, T, nh, D, base, freq_scale, 1);
}

/* A rotation's transpose is the rotation by minus the angle. */
void TN(mn_op_rope_bwd)(real *dx, const int32_t *pos, int T, int nh, int D, float base, float freq_scale) {
    rope(dx, pos, T, nh, D, base, freq_scale, -1);
}

/* ---- SwiGLU ---------------------------------------------------------------- */

static inline real sigm(real x) { return (real)(1.0 / (1.0 + exp(-(double)x))); }

void TN(mn_op_swiglu_fwd)(real *h, const real *g, const real *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = g[i] * sigm(g[i]) * u[i];
}

/* silu'(g) = sigma(g) (1 + g (1 - sigma(g))). */
void TN(mn_op_swiglu_bwd)(real *dg, real *du, const real *dh, const real *g, const real *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const real sg = sigm(g[i]);
        du[i] = dh[i] * g[i] * sg;
        dg[i] = dh[i] * u[i] * sg * (1 + g[i] * (1 - sg));
    }
}

/* ---- attention ---------------------------------------------------------------- */

static inline int visible(const mn_attn_shape *s, int i, int j) {
    if (s->mask) return s->mask[(int64_t)i * (s->N + s->T) + j] != 0;
    return j < s->N || j - s->N <= i;
}

/* S (T, NC) = scale q_h k_g^T, then masked entries become -inf. */
static void scores(real *S, const real *q, const real *k, const mn_attn_shape *s, int h) {
    const int NC = s->N + s->T, HD = s->H * s->D, GD = s->G * s->D, g = h / (s->H / s->G);
    const real scale = (real)(1.0 / sqrt((double)s->D));
    gemm(0, 1, s->T, NC, s->D, scale, q + (int64_t)h * s->D, HD, k + (int64_t)g * s->D, GD, 0, S, NC);
    for (int i = 0; i < s->T; i++)
        for (int j = 0; j < NC; j++)
            if (!visible(s, i, j)) S[(int64_t)i * NC + j] = -INFINITY;
}

void TN(mn_op_attn_fwd)(real *o, real *lse, const real *q, const real *k, const real *v, const mn_attn_shape *s,
                        real *scratch) {
    const int NC = s->N + s->T, HD = s->H * s->D, GD = s->G * s->D;
    for (int h = 0; h < s->H; h++) {
        const int g = h / (s->H / s->G);
        scores(scratch, q, k, s, h);
        for (int i = 0; i < s->T; i++) {
            real *row = scratch + (int64_t)i * NC;
            real mx = -INFINITY;
            for (int j = 0; j < NC; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0;
            for (int j = 0; j < NC; j++) {
                row[j] = row[j] == -INFINITY ? 0 : (real)exp((double)(row[j] - mx));
                sum += row[j];
            }
            const real is = (real)(1.0 / sum);
            for (int j = 0; j < NC; j++) row[j] *= is;
            lse[(int64_t)i * s->H + h] = mx + (real)log(sum);
        }
        gemm(0, 0, s->T, s->D, NC, 1, scratch, NC, v + (int64_t)g * s->D, GD, 0, o + (int64_t)h * s->D, HD);
    }
}

/* With P = softmax(S): dP = dO V^T, dS = P o (dP - rowsum(P o dP)), and
 * rowsum(P o dP) = dO . O per row; dQ = scale dS K, dK += scale dS^T Q,
 * dV += P^T dO. */
void TN(mn_op_attn_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                        const real *v, const real *o, const real *lse, const mn_attn_shape *s, real *scratch) {
    const int NC = s->N + s->T, HD = s->H * s->D, GD = s->G * s->D;
    const real scale = (real)(1.0 / sqrt((double)s->D));
    real *P = scratch, *dS = scratch + (int64_t)s->T * NC;
    for (int h = 0; h < s->H; h++) {
        const int g = h / (s->H / s->G);
        scores(P, q, k, s, h);
        for (int i = 0; i < s->T; i++) {
            real *row = P + (int64_t)i * NC;
            const real l = lse[(int64_t)i * s->H + h];
            for (int j = 0; j < NC; j++) row[j] = row[j] == -INFINITY ? 0 : (real)exp((double)(row[j] - l));
        }
        const real *dO = dout + (int64_t)h * s->D;
        gemm(0, 1, s->T, NC, s->D, 1, dO, HD, v + (int64_t)g * s->D, GD, 0, dS, NC);
        for (int i = 0; i < s->T; i++) {
            const real *oi = o + (int64_t)i * HD + (int64_t)h * s->D, *doi = dO + (int64_t)i * HD;
            double dd = 0;
            for (int d = 0; d < s->D; d++) dd += (double)oi[d] * doi[d];
            real *ds = dS + (int64_t)i * NC;
            const real *p = P + (int64_t)i * NC;
            for (int j = 0; j < NC; j++) ds[j] = p[j] * (ds[j] - (real)dd);
        }
        gemm(0, 0, s->T, s->D, NC, scale, dS, NC, k + (int64_t)g * s->D, GD, 0, dq + (int64_t)h * s->D, HD);
        gemm(1, 0, NC, s->D, s->T, scale, dS, NC, q + (int64_t)h * s->D, HD, 1, dk + (int64_t)g * s->D, GD);
        gemm(1, 0, NC, s->D, s->T, 1, P, NC, dO, HD, 1, dv + (int64_t)g * s->D, GD);
    }
}

/* ---- head: logits, cross-entropy, distillation ------------------------------- */

/* row (V) logits -> log-softmax in place; returns nothing. */
static void log_softmax(real *row, int V) {
    real mx = row[0];
    for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    double sum = 0;
    for (int j = 0; j < V; j++) sum += exp((double)(row[j] - mx));
    const real l = mx + (real)log(sum);
    for (int j = 0; j < V; j++) row[j] -= l;
}

/* CE: d(-lp[y])/dz = p - onehot(y). KL(p_T || q) = sum p_T (lp_T - lq):
 * d/dz = q - p_T. */
double TN(mn_op_head)(real *dx, const real *x, const real *w, int T, int C, int V, const int32_t *targets,
                      const real *teacher, real ce_w, real kl_w, real dscale, real *scratch, int chunk) {
    double loss = 0;
    for (int t0 = 0; t0 < T; t0 += chunk) {
        const int n = T - t0 < chunk ? T - t0 : chunk;
        gemm(0, 1, n, V, C, 1, x + (int64_t)t0 * C, C, w, C, 0, scratch, V);
        for (int i = 0; i < n; i++) {
            const int t = t0 + i;
            real *row = scratch + (int64_t)i * V;
            const int y = targets ? targets[t] : -1;
            const int use_kl = teacher && kl_w != 0 && (!targets || y >= 0);
            if (y < 0 && !use_kl) {
                memset(row, 0, sizeof(real) * (size_t)V);
                continue;
            }
            log_softmax(row, V);
            if (y >= 0 && ce_w != 0) loss -= (double)ce_w * row[y];
            const real *tp = use_kl ? teacher + (int64_t)t * V : NULL;
            if (tp) {
                double kl = 0;
                for (int j = 0; j < V; j++) {
                    const double pt = exp((double)tp[j]);
                    if (pt > 0) kl += pt * ((double)tp[j] - row[j]);
                }
                loss += (double)kl_w * kl;
            }
            if (!dx) continue;
            const real cw = y >= 0 ? ce_w : 0, kw = tp ? kl_w : 0;
            for (int j = 0; j < V; j++) {
                const real q = (real)exp((double)row[j]);
                real g = (cw + kw) * q;
                if (tp) g -= kw * (real)exp((double)tp[j]);
                row[j] = dscale * g;
            }
            if (y >= 0) row[y] -= dscale * cw;
        }
        if (dx) gemm(0, 0, n, C, V, 1, scratch, V, w, C, 0, dx + (int64_t)t0 * C, C);
    }
    return loss;
}

void TN(mn_op_logprobs)(real *lp, const real *x, const real *w, int T, int C, int V) {
    gemm(0, 1, T, V, C, 1, x, C, w, C, 0, lp, V);
    for (int t = 0; t < T; t++) log_softmax(lp + (int64_t)t * V, V);
}
