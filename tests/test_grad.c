/* test_grad.c - every training op's backward, and a whole pass of the model,
 * against central finite differences, in double precision.
 *
 * Each check builds a scalar loss = sum R o y (R random) of an op's output y,
 * perturbs each input entry by +-h (h = 1e-5) and compares (L+ - L-) / 2h with
 * the analytic gradient. In double the truncation error is ~h^2 and rounding
 * ~1e-16/h, so a correct backward agrees to ~1e-9 relative; the bound is
 * 1e-6. A wrong backward (a missing term, a transposed matrix) is off by O(1).
 */
#define MN_REAL_F64
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tiny_llama.h"
#include "threadpool.h"
#include "train/ops.h"
#include "train/tmodel.h"

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }
static void fill(double *x, int64_t n, double sd) {
    for (int64_t i = 0; i < n; i++) x[i] = nrand() * sd;
}
static double *alloc(int64_t n) { return calloc((size_t)n, sizeof(double)); }

/* the loss under test, evaluated at the current parameter values */
typedef double (*loss_fn)(void);

/* max |fd - an| / max(max |an|, 1e-8) over every step-th of the n entries of
 * param (from step / 3 on) */
static double fd_err_sampled(double *param, const double *an, int64_t n, int64_t step, loss_fn f) {
    const double h = 1e-5;
    double maxan = 0, maxd = 0;
    for (int64_t i = 0; i < n; i++) maxan = fmax(maxan, fabs(an[i]));
    for (int64_t i = step / 3; i < n; i += step) {
        const double x0 = param[i];
        param[i] = x0 + h;
        const double lp = f();
        param[i] = x0 - h;
        const double lm = f();
        param[i] = x0;
        maxd = fmax(maxd, fabs((lp - lm) / (2 * h) - an[i]));
    }
    return maxd / fmax(maxan, 1e-8);
}

/* the same over all n entries */
static double fd_err(double *param, const double *an, int64_t n, loss_fn f) {
    return fd_err_sampled(param, an, n, 1, f);
}

#define FD_CHECK(param, an, n, f, what)                                                   \
    do {                                                                                  \
        double e_ = fd_err(param, an, n, f);                                              \
        CHECK(e_ < 1e-6, "%s: finite differences disagree, relative error %.3g", what, e_); \
    } while (0)

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- ops ---- */
enum { T = 5, K = 7, N = 6, RK = 3, HH = 4, G = 2, DD = 4, NP = 3, VV = 11 };
static double *X, *W, *A, *B, *U, *Y, *R, *WN, *INV, *GG, *UU;
static int32_t POS[T] = {0, 3, 4, 9, 17};
static double S_LORA = 0.7;

static double loss_matmul(void) {
    mn_op_matmul_fwd_f64(Y, X, W, T, K, N, 0);
    return dot(Y, R, T * N);
}
static double loss_lora(void) {
    mn_op_matmul_fwd_f64(Y, X, W, T, K, N, 0);
    mn_op_lora_fwd_f64(Y, U, X, A, B, T, K, N, RK, S_LORA);
    return dot(Y, R, T * N);
}
static double loss_rmsnorm(void) {
    mn_op_rmsnorm_fwd_f64(Y, INV, X, WN, T, K, 1e-5);
    return dot(Y, R, T * K);
}
static double loss_rope(void) {
    memcpy(Y, X, sizeof(double) * T * 2 * 8);
    mn_op_rope_fwd_f64(Y, POS, T, 2, 8, 10000.0f, 0.5f);
    return dot(Y, R, T * 2 * 8);
}
static double loss_swiglu(void) {
    mn_op_swiglu_fwd_f64(Y, GG, UU, T * K);
    return dot(Y, R, T * K);
}

static void test_ops(void) {
    X = alloc(T * 64), W = alloc(N * K), A = alloc(RK * K), B = alloc(N * RK), U = alloc(T * RK);
    Y = alloc(T * 64), R = alloc(T * 64), WN = alloc(K), INV = alloc(T), GG = alloc(T * K), UU = alloc(T * K);
    double *dx = alloc(T * 64), *da = alloc(RK * K), *db = alloc(N * RK), *du = alloc(T * RK), *d2 = alloc(T * K);
    fill(X, T * 64, 1), fill(W, N * K, 0.5), fill(A, RK * K, 0.5), fill(B, N * RK, 0.5), fill(R, T * 64, 1);
    for (int i = 0; i < K; i++) WN[i] = 1 + 0.3 * nrand();

    mn_op_matmul_bwd_f64(dx, R, W, T, K, N);
    FD_CHECK(X, dx, T * K, loss_matmul, "matmul dx");

    loss_lora();
    memset(dx, 0, sizeof(double) * T * K);
    mn_op_matmul_bwd_f64(dx, R, W, T, K, N);
    mn_op_lora_bwd_f64(dx, da, db, du, R, X, U, A, B, T, K, N, RK, S_LORA);
    FD_CHECK(X, dx, T * K, loss_lora, "lora dx");
    FD_CHECK(A, da, RK * K, loss_lora, "lora dA");
    FD_CHECK(B, db, N * RK, loss_lora, "lora dB");

    loss_rmsnorm();
    memset(dx, 0, sizeof(double) * T * K);
    mn_op_rmsnorm_bwd_f64(dx, R, X, WN, INV, T, K);
    FD_CHECK(X, dx, T * K, loss_rmsnorm, "rmsnorm dx");

    memcpy(dx, R, sizeof(double) * T * 16);
    mn_op_rope_bwd_f64(dx, POS, T, 2, 8, 10000.0f, 0.5f);
    FD_CHECK(X, dx, T * 16, loss_rope, "rope dx");

    fill(GG, T * K, 2), fill(UU, T * K, 1);
    mn_op_swiglu_bwd_f64(dx, d2, R, GG, UU, T * K);
    FD_CHECK(GG, dx, T * K, loss_swiglu, "swiglu dg");
    FD_CHECK(UU, d2, T * K, loss_swiglu, "swiglu du");
    free(dx), free(da), free(db), free(du), free(d2);
}

/* attention: T queries, NP prefix cells, GQA 4 heads over 2 kv heads, a mask */
static double *Q, *KC, *VC, *O, *LSE, *SCR;
static uint8_t MASK[T * (NP + T)];
static mn_attn_shape SH;
static double loss_attn(void) {
    mn_op_attn_fwd_f64(O, LSE, Q, KC, VC, &SH, SCR);
    return dot(O, R, T * HH * DD);
}

static void test_attention(void) {
    const int NC = NP + T;
    Q = alloc(T * HH * DD), KC = alloc(NC * G * DD), VC = alloc(NC * G * DD), O = alloc(T * HH * DD);
    LSE = alloc(T * HH), SCR = alloc(2 * T * NC);
    double *dq = alloc(T * HH * DD), *dk = alloc(NC * G * DD), *dv = alloc(NC * G * DD);
    fill(Q, T * HH * DD, 1), fill(KC, NC * G * DD, 1), fill(VC, NC * G * DD, 1), fill(R, T * HH * DD, 1);
    for (int pass = 0; pass < 2; pass++) {
        SH = (mn_attn_shape){T, NP, HH, G, DD, pass ? MASK : NULL};
        /* a mask like UIO's stepwise coverage: each row sees a random subset, itself included */
        for (int i = 0; i < T; i++)
            for (int j = 0; j < NC; j++) MASK[i * NC + j] = (j == NP + i) || (j < NP + i && urand() < 0.6);
        loss_attn();
        memset(dk, 0, sizeof(double) * NC * G * DD), memset(dv, 0, sizeof(double) * NC * G * DD);
        mn_op_attn_bwd_f64(dq, dk, dv, R, Q, KC, VC, O, LSE, &SH, SCR);
        FD_CHECK(Q, dq, T * HH * DD, loss_attn, pass ? "attention dq (mask)" : "attention dq");
        FD_CHECK(KC, dk, NC * G * DD, loss_attn, pass ? "attention dk (mask)" : "attention dk");
        FD_CHECK(VC, dv, NC * G * DD, loss_attn, pass ? "attention dv (mask)" : "attention dv");
    }
    free(Q), free(KC), free(VC), free(O), free(LSE), free(SCR), free(dq), free(dk), free(dv);
}

/* Attention runs in blocks of query rows, each against the cells up to the
 * last one its rows see (ops.c ATT_BR). On passes of several blocks and a
 * ragged tail - causal without a mask, the same causal pattern as a mask, and
 * a random stepwise mask (UIO-like) - the output against a plain double
 * softmax attention, the causal pair against each other, and the gradients
 * of the masked pass against finite differences at sampled entries. */
enum { BT = 300, BN = 20, BH = 4, BG = 2, BD = 8, BNC = BN + BT };
static double *bq, *bk, *bv, *br, *bo, *blse, *bscr;
static mn_attn_shape bsh;
static double loss_block(void) {
    mn_op_attn_fwd_f64(bo, blse, bq, bk, bv, &bsh, bscr);
    return dot(bo, br, BT * BH * BD);
}

static double naive_err(const mn_attn_shape *sh, const double *o) {
    double worst = 0, *p = alloc(BNC);
    for (int i = 0; i < BT; i++)
        for (int h = 0; h < BH; h++) {
            const int g = h / (BH / BG);
            double mx = -INFINITY, sum = 0;
            for (int c = 0; c < BNC; c++) {
                const int vis = sh->mask ? sh->mask[i * BNC + c] != 0 : (c < BN || c - BN <= i);
                double sc = -INFINITY;
                if (vis) {
                    sc = 0;
                    for (int d = 0; d < BD; d++) sc += bq[(i * BH + h) * BD + d] * bk[(c * BG + g) * BD + d];
                    sc /= sqrt((double)BD);
                }
                p[c] = sc, mx = fmax(mx, sc);
            }
            for (int c = 0; c < BNC; c++) sum += (p[c] = p[c] == -INFINITY ? 0 : exp(p[c] - mx));
            for (int d = 0; d < BD; d++) {
                double ref = 0;
                for (int c = 0; c < BNC; c++) ref += p[c] / sum * bv[(c * BG + g) * BD + d];
                const double e = fabs(o[(i * BH + h) * BD + d] - ref) / (1 + fabs(ref));
                worst = isnan(e) ? INFINITY : fmax(worst, e);
            }
        }
    free(p);
    return worst;
}

static void test_attention_blocks(void) {
    bq = alloc(BT * BH * BD), bk = alloc(BNC * BG * BD), bv = alloc(BNC * BG * BD), br = alloc(BT * BH * BD);
    bo = alloc(BT * BH * BD), blse = alloc(BT * BH), bscr = alloc(2 * BT * BNC);
    fill(bq, BT * BH * BD, 1), fill(bk, BNC * BG * BD, 1), fill(bv, BNC * BG * BD, 1), fill(br, BT * BH * BD, 1);
    uint8_t *causal = malloc((size_t)BT * BNC), *stepwise = malloc((size_t)BT * BNC);
    for (int i = 0; i < BT; i++)
        for (int j = 0; j < BNC; j++) {
            causal[i * BNC + j] = j < BN || j - BN <= i;
            stepwise[i * BNC + j] = (j == BN + i) || (j < BN + i && urand() < 0.6);
        }
    const uint8_t *masks[3] = {NULL, causal, stepwise};
    double *o[3], *dq[3], *dk[3], *dv[3];
    for (int pass = 0; pass < 3; pass++) {
        bsh = (mn_attn_shape){BT, BN, BH, BG, BD, masks[pass]};
        o[pass] = alloc(BT * BH * BD), dq[pass] = alloc(BT * BH * BD);
        dk[pass] = alloc(BNC * BG * BD), dv[pass] = alloc(BNC * BG * BD);
        for (int i = 0; i < 2 * BT * BNC; i++) bscr[i] = NAN; /* stale scratch must never be read */
        loss_block();
        memcpy(o[pass], bo, sizeof(double) * BT * BH * BD);
        const double ne = naive_err(&bsh, bo);
        CHECK(ne < 1e-12, "attention blocks, pass %d: output vs plain attention, worst %.3g", pass, ne);
        for (int i = 0; i < 2 * BT * BNC; i++) bscr[i] = NAN;
        mn_op_attn_bwd_f64(dq[pass], dk[pass], dv[pass], br, bq, bk, bv, bo, blse, &bsh, bscr);
    }
    /* no mask and the causal mask: the same numbers */
    const struct {
        const char *what;
        double *a, *b;
        int n;
    } cmp[] = {{"output", o[0], o[1], BT * BH * BD},
               {"dq", dq[0], dq[1], BT * BH * BD},
               {"dk", dk[0], dk[1], BNC * BG * BD},
               {"dv", dv[0], dv[1], BNC * BG * BD}};
    for (size_t c = 0; c < sizeof cmp / sizeof *cmp; c++) {
        double worst = 0;
        for (int i = 0; i < cmp[c].n; i++) {
            const double e = fabs(cmp[c].a[i] - cmp[c].b[i]) / (1 + fabs(cmp[c].b[i]));
            worst = isnan(e) ? INFINITY : fmax(worst, e);
        }
        CHECK(worst < 1e-12, "causal, no mask vs mask, %s: worst relative difference %.3g", cmp[c].what, worst);
    }
    /* the stepwise mask's gradients (bsh still holds it) */
    const double eq = fd_err_sampled(bq, dq[2], BT * BH * BD, 97, loss_block);
    const double ek = fd_err_sampled(bk, dk[2], BNC * BG * BD, 53, loss_block);
    const double ev = fd_err_sampled(bv, dv[2], BNC * BG * BD, 53, loss_block);
    CHECK(eq < 1e-6 && ek < 1e-6 && ev < 1e-6, "attention blocks (mask): finite differences dq %.3g dk %.3g dv %.3g",
          eq, ek, ev);
    /* On a pool the (head, block) items are dealt to threads, threads after the
     * first sum dk and dv in their own slots: the same numbers as one thread,
     * and dk, dv still accumulate onto what they held */
    for (int nth = 2; nth <= 3; nth++) {
        mn_threadpool *pool = NULL;
        CHECK(mn_threadpool_create(nth, &pool) == 0, "pool of %d", nth);
        mn_op_set_pool_f64(pool);
        double *tq = alloc(BT * BH * BD), *tk = alloc(BNC * BG * BD), *tv = alloc(BNC * BG * BD);
        for (int pass = 0; pass < 3; pass++) {
            bsh = (mn_attn_shape){BT, BN, BH, BG, BD, masks[pass]};
            for (int i = 0; i < 2 * BT * BNC; i++) bscr[i] = NAN;
            mn_op_attn_fwd_f64(bo, blse, bq, bk, bv, &bsh, bscr);
            for (int i = 0; i < BNC * BG * BD; i++) tk[i] = 1, tv[i] = -2;
            mn_op_attn_bwd_f64(tq, tk, tv, br, bq, bk, bv, bo, blse, &bsh, bscr);
            double worst = 0;
            for (int i = 0; i < BT * BH * BD; i++)
                worst = fmax(worst, fmax(fabs(bo[i] - o[pass][i]), fabs(tq[i] - dq[pass][i])));
            for (int i = 0; i < BNC * BG * BD; i++)
                worst = fmax(worst, fmax(fabs(tk[i] - 1 - dk[pass][i]), fabs(tv[i] + 2 - dv[pass][i])));
            CHECK(worst < 1e-12, "attention on %d threads, pass %d: worst difference from one thread %.3g", nth, pass,
                  worst);
        }
        mn_op_set_pool_f64(NULL);
        mn_threadpool_free(pool);
        free(tq), free(tk), free(tv);
    }
    for (int pass = 0; pass < 3; pass++) free(o[pass]), free(dq[pass]), free(dk[pass]), free(dv[pass]);
    free(bq), free(bk), free(bv), free(br), free(bo), free(blse), free(bscr), free(causal), free(stepwise);
}

/* head: CE on some rows, KL to a teacher on the same rows */
static double *XH, *WH, *TEACH, *HS;
static int32_t TGT[T] = {3, -1, 7, 0, 10};
static double loss_head(void) { return mn_op_head_f64(NULL, XH, WH, T, K, VV, TGT, TEACH, 0.8, 0.5, 0, HS, 2); }

static void test_head(void) {
    XH = alloc(T * K), WH = alloc(VV * K), TEACH = alloc(T * VV), HS = alloc(2 * VV);
    double *dx = alloc(T * K);
    fill(XH, T * K, 1), fill(WH, VV * K, 1), fill(TEACH, T * VV, 1);
    for (int t = 0; t < T; t++) { /* teacher rows become log-probabilities */
        double m = -1e300, s = 0;
        for (int j = 0; j < VV; j++) m = fmax(m, TEACH[t * VV + j]);
        for (int j = 0; j < VV; j++) s += exp(TEACH[t * VV + j] - m);
        for (int j = 0; j < VV; j++) TEACH[t * VV + j] -= m + log(s);
    }
    const double l = mn_op_head_f64(dx, XH, WH, T, K, VV, TGT, TEACH, 0.8, 0.5, 1, HS, 2);
    CHECK(l > 0 && isfinite(l), "head loss %g", l);
    FD_CHECK(XH, dx, T * K, loss_head, "head (CE + KL) dx");
    /* rows without a target contribute nothing */
    for (int c = 0; c < K; c++) CHECK(dx[1 * K + c] == 0, "masked row has gradient");
    free(XH), free(WH), free(TEACH), free(HS), free(dx);
}

/* The engine's float head (vector exp and dot products, vocabulary in blocks of
 * 1,024) against the double build on a vocabulary of several blocks and a tail:
 * the distillation loss alone (ce 0, kl 1), then CE + KL with gradients. */
double mn_op_head(float *dx, const float *x, const float *w, int T, int C, int V, const int32_t *targets,
                  const float *teacher, float ce_w, float kl_w, float dscale, float *scratch, int chunk);
static void test_head_f32(void) {
    enum { HT = 3, HC = 16, HV = 2500 };
    double *x = alloc(HT * HC), *w = alloc(HV * HC), *tp = alloc(HT * HV), *sc = alloc(2 * HV), *dx = alloc(HT * HC);
    float *xf = malloc(sizeof(float) * HT * HC), *wf = malloc(sizeof(float) * HV * HC);
    float *tf = malloc(sizeof(float) * HT * HV), *sf = malloc(sizeof(float) * 2 * HV), *dxf = malloc(sizeof(float) * HT * HC);
    fill(x, HT * HC, 1), fill(w, HV * HC, 1), fill(tp, HT * HV, 3);
    for (int t = 0; t < HT; t++) {
        double m = -1e300, s = 0;
        for (int j = 0; j < HV; j++) m = fmax(m, tp[t * HV + j]);
        for (int j = 0; j < HV; j++) s += exp(tp[t * HV + j] - m);
        for (int j = 0; j < HV; j++) tp[t * HV + j] -= m + log(s);
    }
    for (int i = 0; i < HT * HC; i++) xf[i] = (float)x[i];
    for (int i = 0; i < HV * HC; i++) wf[i] = (float)w[i];
    for (int i = 0; i < HT * HV; i++) tf[i] = (float)tp[i];
    for (int i = 0; i < HT * HV; i++) tp[i] = tf[i]; /* both builds see the same rounded inputs */
    for (int i = 0; i < HT * HC; i++) x[i] = xf[i];
    for (int i = 0; i < HV * HC; i++) w[i] = wf[i];
    const int32_t tgt[HT] = {5, -1, 2400};
    const double kl = mn_op_head_f64(NULL, x, w, HT, HC, HV, tgt, tp, 0, 1, 0, sc, 2);
    const double klf = mn_op_head(NULL, xf, wf, HT, HC, HV, tgt, tf, 0, 1, 0, sf, 2);
    CHECK(kl > 0.01 && fabs(klf - kl) < 1e-4 * kl, "float head, KL alone: %.9g vs double %.9g", klf, kl);
    const double l = mn_op_head_f64(dx, x, w, HT, HC, HV, tgt, tp, 0.8, 0.5, 1, sc, 2);
    const double lf = mn_op_head(dxf, xf, wf, HT, HC, HV, tgt, tf, 0.8f, 0.5f, 1, sf, 2);
    double e = 0, nrm = 0;
    for (int i = 0; i < HT * HC; i++) e = fmax(e, fabs(dxf[i] - dx[i])), nrm = fmax(nrm, fabs(dx[i]));
    CHECK(fabs(lf - l) < 1e-4 * l && e < 1e-4 * nrm, "float head, CE + KL: loss %.9g vs %.9g, dx error %.3g of %.3g",
          lf, l, e, nrm);
    free(x), free(w), free(tp), free(sc), free(dx), free(xf), free(wf), free(tf), free(sf), free(dxf);
}

/* The float SwiGLU (vector exp, in chunks) against the double one on the same
 * inputs, over a length past one chunk with a ragged end and gates out to
 * +-100 (where exp(-g) under- or overflows a float). */
void mn_op_swiglu_fwd(float *h, const float *g, const float *u, int64_t n);
void mn_op_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
static void test_swiglu_f32(void) {
    enum { SN = 1337 };
    double *g = alloc(SN), *u = alloc(SN), *dh = alloc(SN), *h = alloc(SN), *dg = alloc(SN), *du = alloc(SN);
    float *gf = malloc(sizeof(float) * SN * 6), *uf = gf + SN, *dhf = uf + SN, *hf = dhf + SN, *dgf = hf + SN,
          *duf = dgf + SN;
    fill(g, SN, 8), fill(u, SN, 1), fill(dh, SN, 1);
    g[0] = 100, g[1] = -100, g[2] = 88.5, g[3] = -88.5, g[4] = 0;
    for (int i = 0; i < SN; i++) gf[i] = (float)g[i], uf[i] = (float)u[i], dhf[i] = (float)dh[i];
    for (int i = 0; i < SN; i++) g[i] = gf[i], u[i] = uf[i], dh[i] = dhf[i];
    mn_op_swiglu_fwd_f64(h, g, u, SN), mn_op_swiglu_bwd_f64(dg, du, dh, g, u, SN);
    mn_op_swiglu_fwd(hf, gf, uf, SN), mn_op_swiglu_bwd(dgf, duf, dhf, gf, uf, SN);
    double e = 0;
    for (int i = 0; i < SN; i++) {
        e = fmax(e, fabs(hf[i] - h[i]) / (1e-3 + fabs(h[i])));
        e = fmax(e, fabs(dgf[i] - dg[i]) / (1e-3 + fabs(dg[i])));
        e = fmax(e, fabs(duf[i] - du[i]) / (1e-3 + fabs(du[i])));
    }
    CHECK(e < 1e-5, "float SwiGLU vs double: worst relative error %.3g", e);
    free(g), free(u), free(dh), free(h), free(dg), free(du), free(gf);
}

/* ---- a whole pass of a tiny model ---- */
static mn_tmodel_f64 *TM;
static mn_tws_f64 *WS;
static mn_tpass_f64 P;
static double *PK, *PV, *XIN, *CAP, *RCAP, *COUT, *RCOUT;
enum { PT = 6, PN = 3, PR = 2 };

static double loss_pass(void) {
    double l = 0;
    mn_tmodel_forward_f64(TM, WS, &P, &l);
    const mn_tdims *d = mn_tmodel_dims_f64(TM);
    if (P.cap_xn) l += dot(CAP, RCAP, (int64_t)d->n_layer * P.n_cap * d->n_embd);
    if (P.cap_out) l += dot(COUT, RCOUT, (int64_t)P.n_cap * d->n_embd);
    return l;
}

/* keep: the workspace holds every layer's activations and the backward
 * recomputes none; the gradients must be the same */
static void test_pass(const char *dir, int keep) {
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 4, .n_head_kv = 2, .n_ff = 24, .n_layer = 2, .n_ctx = 128, .seed = 7};
    CHECK(tiny_llama_write(&cfg, path) == 0, "write tiny model: %s", mn_last_error());
    mn_model *m = NULL;
    if (mn_model_load(path, &m)) {
        CHECK(0, "load tiny model: %s", mn_last_error());
        return;
    }
    CHECK(mn_tmodel_create_f64(m, &TM) == 0, "tmodel: %s", mn_last_error());
    mn_model_free(m);
    const mn_tdims *d = mn_tmodel_dims_f64(TM);
    const int C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = d->n_head * d->head_dim;
    CHECK(mn_tws_create_f64(TM, PT, PN, PR, keep, &WS) == 0, "workspace: %s", mn_last_error());

    /* LoRA on all four projections, trained */
    mn_tlora_w_f64 lw[4][2];
    double *la[4][2], *lb[4][2], *lda[4][2], *ldb[4][2];
    const int n_out[4] = {HD, KD, KD, C}, n_in[4] = {C, C, C, HD};
    for (int s = 0; s < 4; s++)
        for (int l = 0; l < L; l++) {
            la[s][l] = alloc(PR * n_in[s]), lb[s][l] = alloc(n_out[s] * PR);
            lda[s][l] = alloc(PR * n_in[s]), ldb[s][l] = alloc(n_out[s] * PR);
            fill(la[s][l], PR * n_in[s], 0.3), fill(lb[s][l], n_out[s] * PR, 0.3);
            lw[s][l] = (mn_tlora_w_f64){la[s][l], lb[s][l], lda[s][l], ldb[s][l], PR};
        }
    mn_tlora_f64 lora = {0.5, lw[0], lw[1], lw[2], lw[3]};
    PK = alloc(L * PN * KD), PV = alloc(L * PN * KD), XIN = alloc(PT * C);
    double *dpk = alloc(L * PN * KD), *dpv = alloc(L * PN * KD), *dxin = alloc(PT * C);
    fill(PK, L * PN * KD, 1), fill(PV, L * PN * KD, 1), fill(XIN, PT * C, 1);
    static int32_t pos[PT] = {3, 4, 5, 6, 7, 8}, tgt[PT] = {5, 9, -1, 100, 7, 259}, cap[2] = {1, 4};
    CAP = alloc(L * 2 * C), RCAP = alloc(L * 2 * C);
    fill(RCAP, L * 2 * C, 1);
    double *teacher = alloc(PT * TINY_VOCAB);
    for (int t = 0; t < PT; t++) { /* random log-probabilities */
        double z = 0;
        for (int j = 0; j < TINY_VOCAB; j++) z += exp(teacher[t * TINY_VOCAB + j] = 0.5 * nrand());
        for (int j = 0; j < TINY_VOCAB; j++) teacher[t * TINY_VOCAB + j] -= log(z);
    }
    P = (mn_tpass_f64){.T = PT, .x = XIN, .pos = pos, .N = PN, .pk = PK, .pv = PV, .dpk = dpk, .dpv = dpv,
                       .lora = &lora, .n_cap = 2, .cap = cap, .cap_xn = CAP, .dcap_xn = RCAP, .targets = tgt,
                       .teacher = teacher, .teacher_row0 = 2, .ce_w = 1, .kl_w = 0.3, .dx = dxin};
    double l0 = loss_pass();
    CHECK(isfinite(l0), "pass loss %g", l0);
    CHECK(mn_tmodel_backward_f64(TM, WS, &P, 1) == 0, "backward: %s", mn_last_error());
    FD_CHECK(XIN, dxin, PT * C, loss_pass, "pass d input");
    FD_CHECK(PK, dpk, L * PN * KD, loss_pass, "pass d prefix keys");
    FD_CHECK(PV, dpv, L * PN * KD, loss_pass, "pass d prefix values");
    const char *nm[4] = {"q", "k", "v", "o"};
    for (int s = 0; s < 4; s++)
        for (int l = 0; l < L; l++) {
            char what[64];
            snprintf(what, sizeof what, "pass LoRA %s layer %d A", nm[s], l);
            FD_CHECK(la[s][l], lda[s][l], PR * n_in[s], loss_pass, what);
            snprintf(what, sizeof what, "pass LoRA %s layer %d B", nm[s], l);
            FD_CHECK(lb[s][l], ldb[s][l], n_out[s] * PR, loss_pass, what);
        }

    /* a head-less pass (an encoder): only captured activations carry loss */
    memset(dxin, 0, sizeof(double) * PT * C);
    P.targets = NULL, P.teacher = NULL, P.N = 0, P.dpk = P.dpv = NULL;
    for (int s = 0; s < 4; s++)
        for (int l = 0; l < L; l++) memset(lda[s][l], 0, sizeof(double) * PR * n_in[s]);
    loss_pass();
    CHECK(mn_tmodel_backward_f64(TM, WS, &P, 1) == 0, "backward: %s", mn_last_error());
    FD_CHECK(XIN, dxin, PT * C, loss_pass, "encoder pass d input");
    FD_CHECK(la[0][0], lda[0][0], PR * C, loss_pass, "encoder pass LoRA q layer 0 A");
    /* layer 1's attention output is unused without a head: its q LoRA gets nothing */
    double nz = 0;
    for (int i = 0; i < PR * C; i++) nz += fabs(lda[0][1][i]);
    CHECK(nz == 0, "top layer's q LoRA got gradient %g in a head-less pass", nz);

    /* a summary encoder: final hidden states captured, only they carry loss */
    COUT = alloc(2 * C), RCOUT = alloc(2 * C);
    fill(RCOUT, 2 * C, 1);
    memset(dxin, 0, sizeof(double) * PT * C);
    P.cap_xn = NULL, P.dcap_xn = NULL, P.cap_out = COUT, P.dcap_out = RCOUT;
    loss_pass();
    CHECK(mn_tmodel_backward_f64(TM, WS, &P, 1) == 0, "backward: %s", mn_last_error());
    FD_CHECK(XIN, dxin, PT * C, loss_pass, "summary pass d input");
    FD_CHECK(la[0][1], lda[0][1], PR * C, loss_pass, "summary pass LoRA q layer 1 A");
    free(COUT), free(RCOUT);

    for (int s = 0; s < 4; s++)
        for (int l = 0; l < L; l++) free(la[s][l]), free(lb[s][l]), free(lda[s][l]), free(ldb[s][l]);
    free(PK), free(PV), free(XIN), free(dpk), free(dpv), free(dxin), free(CAP), free(RCAP), free(teacher);
    mn_tws_free_f64(WS);
    mn_tmodel_free_f64(TM);
}

int main(void) {
    char dir[] = "/tmp/mnemo-grad-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_ops();
    test_attention();
    test_attention_blocks();
    test_head();
    test_head_f32();
    test_swiglu_f32();
    test_pass(dir, 0);
    test_pass(dir, 1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
