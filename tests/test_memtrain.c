/* test_memtrain.c - the memory chain's gradient modes, in double precision on a
 * tiny random model.
 *
 * - full: the whole chain (sinks, 3 segments, encoder LoRA, transfer-head LoRA,
 *   memory embedding; CE and CE + KL) against central finite differences;
 * - tbptt with tau >= segments - 1 equals full;
 * - incremental equals tbptt for the same tau, with fewer encoder backwards and
 *   fewer FLOPs (counted by the ops);
 * - unbiased: the mean of many sampled gradients matches full within a bound
 *   the test computes from their spread, while tbptt and the published
 *   reservoir estimator with a small tau are measurably biased (along the
 *   direction of the long-range gradient, which is what they drop or shrink).
 */
#define MN_REAL_F64
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tiny_llama.h"
#include "train/memtrain.h"

enum { LS = 4, MS = 2, SINKS = 1, RK = 2, MAXSEG = 6 };

static mn_tmodel_f64 *TM;
static mn_uio_trainer_f64 *TR;
static mn_uio_tparams_f64 PRM;
static int C, L, KD, HD;
/* parameters and their gradients, one flat vector each: mem_embd, then per
 * layer enc q A/B, enc v A/B, xfer k A/B, xfer v A/B */
static double *THETA, *GRAD;
static int64_t NPARAM;
static mn_tlora_w_f64 EQ[8], EV[8], XK[8], XV[8];
static int32_t IDS[MAXSEG * LS];

static uint64_t g_rng = 0x853c49e6748fea9bull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

static void setup_params(void) {
    int64_t n = C;
    for (int l = 0; l < L; l++) n += (RK * C + HD * RK) + (RK * C + KD * RK) + 2 * (RK * C + KD * RK);
    NPARAM = n;
    THETA = calloc((size_t)n, sizeof(double));
    GRAD = calloc((size_t)n, sizeof(double));
    for (int64_t i = 0; i < n; i++) THETA[i] = 0.4 * nrand();
    double *p = THETA, *g = GRAD;
    PRM.mem_embd = p, PRM.d_mem_embd = g;
    p += C, g += C;
#define LORA(arr, nout)                                                                   \
    arr[l] = (mn_tlora_w_f64){p, p + RK * C, g, g + RK * C, RK};                          \
    p += RK * C + (nout) * RK, g += RK * C + (nout) * RK;
    for (int l = 0; l < L; l++) {
        LORA(EQ, HD);
        LORA(EV, KD);
        LORA(XK, KD);
        LORA(XV, KD);
    }
#undef LORA
    PRM.enc = (mn_tlora_f64){0.5, EQ, NULL, EV, NULL};
    PRM.xfer = (mn_tlora_f64){0.5, NULL, XK, XV, NULL};
}

/* the mode's gradient of the mean loss at THETA, into out; returns the loss */
static double grad_of(mn_bptt_mode mode, int nseg, int tau, mn_rng *rng, double *out, mn_tstep_stats *st) {
    memset(GRAD, 0, sizeof(double) * (size_t)NPARAM);
    mn_tstep_stats s;
    int rc = mn_uio_trainer_step_f64(TR, IDS, nseg, mode, tau, rng, 1, &s);
    CHECK(rc == 0, "step: %s", mn_last_error());
    if (out) memcpy(out, GRAD, sizeof(double) * (size_t)NPARAM);
    if (st) *st = s;
    return s.loss / (double)s.n_scored;
}

static double rel_diff(const double *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num = fmax(num, fabs(a[i] - b[i])), den = fmax(den, fabs(b[i]));
    return num / fmax(den, 1e-300);
}

static void test_full_vs_fd(int nseg) {
    double *an = malloc(sizeof(double) * (size_t)NPARAM);
    grad_of(MN_BPTT_FULL, nseg, 0, NULL, an, NULL);
    const double h = 1e-5;
    double maxd = 0, maxan = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < NPARAM; i++) {
        const double x0 = THETA[i];
        THETA[i] = x0 + h;
        const double lp = grad_of(MN_BPTT_FULL, nseg, 0, NULL, NULL, NULL);
        THETA[i] = x0 - h;
        const double lm = grad_of(MN_BPTT_FULL, nseg, 0, NULL, NULL, NULL);
        THETA[i] = x0;
        maxd = fmax(maxd, fabs((lp - lm) / (2 * h) - an[i]));
        maxan = fmax(maxan, fabs(an[i]));
        nonzero += an[i] != 0;
    }
    CHECK(maxd / maxan < 1e-6, "full gradient vs finite differences (%d segments, kl %g): relative error %.3g",
          nseg, PRM.kl_w, maxd / maxan);
    /* every parameter group receives gradient: the chain is connected end to end
     * (the last layer's encoder q-LoRA is the exception: nothing reads it) */
    CHECK(nonzero > NPARAM / (PRM.summary ? 4 : 2), "only %lld of %lld parameters got gradient", (long long)nonzero, (long long)NPARAM);
    free(an);
}

static double proj(const double *g, const double *r) {
    double s = 0;
    for (int64_t i = 0; i < NPARAM; i++) s += g[i] * r[i];
    return s;
}

/* LLoCO fine-tuning: a decoder LoRA trained with the compressor frozen. */
static void test_decoder_lora(int summary) {
    const int n = 3;
    double *pa = calloc((size_t)L * 2 * (RK * C + HD * RK), sizeof(double));
    double *ga = calloc((size_t)L * 2 * (RK * C + HD * RK), sizeof(double));
    mn_tlora_w_f64 dq[8], dv[8];
    double *p = pa, *g = ga;
    for (int l = 0; l < L; l++) {
        dq[l] = (mn_tlora_w_f64){p, p + RK * C, g, g + RK * C, RK};
        p += RK * C + HD * RK, g += RK * C + HD * RK;
        dv[l] = (mn_tlora_w_f64){p, p + RK * C, g, g + RK * C, RK};
        p += RK * C + KD * RK, g += RK * C + KD * RK;
    }
    const int64_t np = p - pa;
    for (int64_t i = 0; i < np; i++) pa[i] = 0.4 * nrand();
    mn_uio_tparams_f64 q = PRM;
    q.summary = summary, q.kl_w = 0, q.freeze_memory = 1;
    q.dec = (mn_tlora_f64){0.5, dq, NULL, dv, NULL};
    mn_uio_trainer_f64 *tr = NULL;
    CHECK(mn_uio_trainer_create_f64(TM, &q, MAXSEG, &tr) == 0, "trainer: %s", mn_last_error());
    mn_tstep_stats st;
    memset(GRAD, 0, sizeof(double) * (size_t)NPARAM);
    CHECK(mn_uio_trainer_step_f64(tr, IDS, n, MN_BPTT_FULL, 0, NULL, 1, &st) == 0, "step: %s", mn_last_error());
    CHECK(st.enc_backwards == 0, "a frozen compressor ran %lld encoder backwards", (long long)st.enc_backwards);
    double gz = 0;
    for (int64_t i = 0; i < NPARAM; i++) gz += fabs(GRAD[i]);
    CHECK(gz == 0, "a frozen compressor got gradient %g", gz);
    double *an = malloc(sizeof(double) * (size_t)np);
    memcpy(an, ga, sizeof(double) * (size_t)np);
    double maxd = 0, maxan = 0;
    for (int64_t i = 0; i < np; i++) {
        const double x0 = pa[i], h = 1e-5;
        pa[i] = x0 + h;
        mn_uio_trainer_step_f64(tr, IDS, n, MN_BPTT_FULL, 0, NULL, 1, &st);
        const double lp = st.loss / st.n_scored;
        pa[i] = x0 - h;
        mn_uio_trainer_step_f64(tr, IDS, n, MN_BPTT_FULL, 0, NULL, 1, &st);
        const double lm = st.loss / st.n_scored;
        pa[i] = x0;
        maxd = fmax(maxd, fabs((lp - lm) / (2 * h) - an[i])), maxan = fmax(maxan, fabs(an[i]));
    }
    CHECK(maxd / maxan < 1e-6, "decoder LoRA gradient vs finite differences (%s): %.3g",
          summary ? "summary" : "UIO", maxd / maxan);
    mn_uio_trainer_free_f64(tr);
    free(pa), free(ga), free(an);
}

/* Steps 1-4 for the UIO (KV) memory or the summary-embedding memory. */
static void suite(int summary) {
    printf("--- %s memory ---\n", summary ? "summary" : "UIO");
    PRM.summary = summary, PRM.kl_w = 0.5;
    mn_uio_trainer_free_f64(TR);
    CHECK(mn_uio_trainer_create_f64(TM, &PRM, MAXSEG, &TR) == 0, "trainer: %s", mn_last_error());
    /* 1. full against finite differences: CE + KL, then CE alone */
    test_full_vs_fd(3);
    mn_uio_trainer_free_f64(TR);
    PRM.kl_w = 0;
    PRM.summary = summary;
    CHECK(mn_uio_trainer_create_f64(TM, &PRM, MAXSEG, &TR) == 0, "trainer: %s", mn_last_error());
    test_full_vs_fd(3);

    /* 2. tbptt with tau >= n - 1 is full */
    const int n = MAXSEG;
    double *gfull = malloc(sizeof(double) * (size_t)NPARAM), *g1 = malloc(sizeof(double) * (size_t)NPARAM),
           *g2 = malloc(sizeof(double) * (size_t)NPARAM), *acc = calloc((size_t)NPARAM, sizeof(double));
    mn_tstep_stats sf, s1, s2;
    grad_of(MN_BPTT_FULL, n, 0, NULL, gfull, &sf);
    grad_of(MN_BPTT_TBPTT, n, n - 1, NULL, g1, &s1);
    CHECK(rel_diff(g1, gfull, NPARAM) < 1e-10, "tbptt(tau=%d) vs full: %.3g", n - 1, rel_diff(g1, gfull, NPARAM));
    CHECK(sf.enc_backwards == n - 1, "full back-propagates each of %d encoders once, not %lld", n - 1,
          (long long)sf.enc_backwards);

    /* 3. incremental == tbptt, cheaper */
    for (int tau = 1; tau <= 3; tau++) {
        grad_of(MN_BPTT_TBPTT, n, tau, NULL, g1, &s1);
        grad_of(MN_BPTT_INCREMENTAL, n, tau, NULL, g2, &s2);
        CHECK(rel_diff(g2, g1, NPARAM) < 1e-10, "incremental vs tbptt, tau %d: %.3g", tau, rel_diff(g2, g1, NPARAM));
        int64_t expect = 0;
        for (int t = 1; t < n; t++) expect += t < tau ? t : tau;
        CHECK(s1.enc_backwards == expect, "tbptt tau %d: %lld encoder backwards, expected %lld", tau,
              (long long)s1.enc_backwards, (long long)expect);
        CHECK(s2.enc_backwards == n - 1, "incremental tau %d: %lld encoder backwards", tau, (long long)s2.enc_backwards);
        if (tau > 1)
            CHECK(s2.flops < s1.flops, "incremental FLOPs %lld not below tbptt's %lld (tau %d)", (long long)s2.flops,
                  (long long)s1.flops, tau);
        printf("tau %d: tbptt %lld FLOPs (%lld encoder backwards), incremental %lld FLOPs (%lld)\n", tau,
               (long long)s1.flops, (long long)s1.enc_backwards, (long long)s2.flops, (long long)s2.enc_backwards);
        if (tau == 1) {
            const double dl = rel_diff(g1, gfull, NPARAM);
            CHECK(dl > 1e-3, "tbptt(1) should differ from full, differs by %.3g", dl);
        }
    }

    /* 4. unbiased vs reservoir vs tbptt, tau 2, along the long-range direction */
    const int tau = 2, K = 300;
    grad_of(MN_BPTT_TBPTT, n, tau, NULL, g1, NULL);
    double *r = malloc(sizeof(double) * (size_t)NPARAM), rn = 0;
    for (int64_t i = 0; i < NPARAM; i++) r[i] = gfull[i] - g1[i], rn += r[i] * r[i];
    rn = sqrt(rn);
    for (int64_t i = 0; i < NPARAM; i++) r[i] /= rn;
    const double z_full = proj(gfull, r), z_tbptt = proj(g1, r);
    mn_rng rng;
    mn_rng_seed(&rng, 1234);
    for (int mode = MN_BPTT_RESERVOIR; mode <= MN_BPTT_UNBIASED; mode++) {
        double sum = 0, sum2 = 0;
        for (int k = 0; k < K; k++) {
            grad_of((mn_bptt_mode)mode, n, tau, &rng, g2, NULL);
            const double z = proj(g2, r);
            sum += z, sum2 += z * z;
        }
        const double mean = sum / K, sd = sqrt(fmax(sum2 / K - mean * mean, 0)), se = sd / sqrt((double)K);
        printf("%s: mean projection %.6g +- %.2g (full %.6g, tbptt %.6g)\n", mn_bptt_name((mn_bptt_mode)mode), mean,
               se, z_full, z_tbptt);
        if (mode == MN_BPTT_UNBIASED)
            CHECK(fabs(mean - z_full) < 4 * se, "unbiased mean %.6g is %.1f standard errors from full %.6g", mean,
                  fabs(mean - z_full) / se, z_full);
        else
            CHECK(fabs(mean - z_full) > 4 * se, "reservoir should be biased: mean %.6g within %.1f se of full %.6g",
                  mean, fabs(mean - z_full) / se, z_full);
    }
    CHECK(fabs(z_tbptt - z_full) > 0.1 * fabs(z_full), "tbptt(2) bias %.3g vs full %.3g", z_tbptt - z_full, z_full);

    free(gfull), free(g1), free(g2), free(acc), free(r);
}

/* A raw recent window: decoder t reads [sinks | m_1 .. m_{t-2} | x_{t-1} | x_t]
 * and is scored on x_t; the chain's gradient is still exact (full vs finite
 * differences), tbptt covering the chain is full, incremental is tbptt. */
static void suite_recent(void) {
    printf("--- UIO memory, recent window of 1 segment ---\n");
    PRM.summary = 0, PRM.kl_w = 0.5, PRM.recent = 1;
    mn_uio_trainer_free_f64(TR);
    CHECK(mn_uio_trainer_create_f64(TM, &PRM, MAXSEG, &TR) == 0, "trainer: %s", mn_last_error());
    test_full_vs_fd(4);
    mn_tstep_stats st;
    CHECK(mn_uio_trainer_step_f64(TR, IDS, 2, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL,
          "2 segments accepted with a recent window of 1 (no memory to read)");
    const int n = MAXSEG;
    double *gf = malloc(sizeof(double) * (size_t)NPARAM), *g1 = malloc(sizeof(double) * (size_t)NPARAM),
           *g2 = malloc(sizeof(double) * (size_t)NPARAM);
    mn_tstep_stats sf, s1, s2;
    grad_of(MN_BPTT_FULL, n, 0, NULL, gf, &sf);
    CHECK(sf.n_scored == (n - 2) * (LS - 1), "scored %lld tokens, expected %d", (long long)sf.n_scored,
          (n - 2) * (LS - 1));
    CHECK(sf.enc_backwards == n - 2, "full: %lld encoder backwards, expected %d", (long long)sf.enc_backwards, n - 2);
    grad_of(MN_BPTT_TBPTT, n, n - 2, NULL, g1, NULL);
    CHECK(rel_diff(g1, gf, NPARAM) < 1e-10, "recent: tbptt(tau=%d) vs full: %.3g", n - 2, rel_diff(g1, gf, NPARAM));
    grad_of(MN_BPTT_TBPTT, n, 1, NULL, g1, &s1);
    grad_of(MN_BPTT_INCREMENTAL, n, 1, NULL, g2, &s2);
    CHECK(rel_diff(g2, g1, NPARAM) < 1e-10, "recent: incremental vs tbptt: %.3g", rel_diff(g2, g1, NPARAM));
    CHECK(rel_diff(g1, gf, NPARAM) > 1e-3, "recent: tbptt(1) should differ from full");
    /* the window really is read: a recent window of 1 scores other losses than none */
    mn_uio_tparams_f64 q = PRM;
    q.recent = 0, q.kl_w = 0;
    mn_uio_trainer_f64 *t0 = NULL;
    CHECK(mn_uio_trainer_create_f64(TM, &q, MAXSEG, &t0) == 0, "trainer: %s", mn_last_error());
    mn_tstep_stats a, b;
    CHECK(mn_uio_trainer_step_f64(t0, IDS + LS, n - 1, MN_BPTT_FULL, 0, NULL, 0, &a) == 0, "step: %s", mn_last_error());
    mn_uio_trainer_free_f64(t0);
    q.recent = 1;
    CHECK(mn_uio_trainer_create_f64(TM, &q, MAXSEG, &t0) == 0, "trainer: %s", mn_last_error());
    CHECK(mn_uio_trainer_step_f64(t0, IDS, n, MN_BPTT_FULL, 0, NULL, 0, &b) == 0, "step: %s", mn_last_error());
    CHECK(fabs(a.loss - b.loss) > 1e-6, "the recent segment changed nothing (%.9g vs %.9g)", a.loss, b.loss);
    mn_uio_trainer_free_f64(t0);
    q.summary = 1;
    CHECK(mn_uio_trainer_create_f64(TM, &q, MAXSEG, &t0) == MN_EINVAL, "a recent window accepted for summary");
    free(gf), free(g1), free(g2);
    PRM.recent = 0;
    mn_uio_trainer_free_f64(TR);
    CHECK(mn_uio_trainer_create_f64(TM, &PRM, MAXSEG, &TR) == 0, "trainer: %s", mn_last_error());
}

int main(void) {
    char dir[] = "/tmp/mnemo-memtrain-XXXXXX", path[600];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 4, .n_head_kv = 2, .n_ff = 24, .n_layer = 2, .n_ctx = 256, .seed = 11};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, path) == 0 && mn_model_load(path, &m) == 0, "tiny model: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    CHECK(mn_tmodel_create_f64(m, &TM) == 0, "tmodel: %s", mn_last_error());
    mn_model_free(m);
    const mn_tdims *d = mn_tmodel_dims_f64(TM);
    C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = d->n_head * d->head_dim;
    setup_params();
    PRM.l = LS, PRM.m = MS, PRM.n_sinks = SINKS, PRM.ce_w = 1, PRM.kl_w = 0.5;
    for (int i = 0; i < MAXSEG * LS; i++) IDS[i] = (int32_t)(urand() * 256);
    suite(0);
    suite(1);
    test_decoder_lora(0);
    test_decoder_lora(1);
    suite_recent();

    /* 5. bad arguments are errors, not crashes */
    mn_tstep_stats st;
    CHECK(mn_uio_trainer_step_f64(TR, IDS, 1, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL, "1 segment accepted");
    CHECK(mn_uio_trainer_step_f64(TR, IDS, MAXSEG + 1, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL,
          "too many segments accepted");
    CHECK(mn_uio_trainer_step_f64(TR, IDS, 3, MN_BPTT_TBPTT, 0, NULL, 1, &st) == MN_EINVAL, "tau 0 accepted");
    CHECK(mn_uio_trainer_step_f64(TR, IDS, 3, MN_BPTT_UNBIASED, 2, NULL, 1, &st) == MN_EINVAL, "no rng accepted");
    IDS[3] = 100000;
    CHECK(mn_uio_trainer_step_f64(TR, IDS, 3, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL, "bad token accepted");

    mn_uio_trainer_free_f64(TR);
    mn_tmodel_free_f64(TM);
    free(THETA), free(GRAD);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
