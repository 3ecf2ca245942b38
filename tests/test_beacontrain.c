/* test_beacontrain.c - Activation Beacon training, in double precision on a
 * tiny random model.
 *
 * 1. The trainer's loss equals the inference engine's: mn_beacon_feed's logits
 *    on the same tokens, scored the same way (windows 1.., within-window
 *    targets), for every placement x scheme x attend_prev, with sinks and the
 *    beacons' own (perturbed) Q/K/V/O: training optimises what inference runs.
 * 2. full: gradients of the beacon projections and embedding against central
 *    finite differences over 3 windows (CE, then CE + KL), for two layouts.
 * 3. tbptt with tau >= windows - 1 equals full; tau 1 differs; window
 *    backwards counted.
 * 4. unbiased (randomized truncation with inverse weights) and reservoir (the
 *    same draws, unweighted): with a truncation that always covers the chain
 *    both equal full; with tau 1, the mean of many draws of unbiased matches
 *    full within a bound computed from their spread (every coordinate, and
 *    along full - tbptt(1)), while tbptt(1) and reservoir are off by many
 *    standard errors; their window backwards match the expected count.
 * 5. A short real run: mn_train_run (float) on a beacon adapter lowers the
 *    validation loss, and the adapter it writes runs in the inference engine;
 *    reservoir and unbiased run through it too.
 */
#define MN_REAL_F64
#include <string.h>
#include <unistd.h>

#include "memory/adapter.h"
#include "memory/beacon.h"
#include "test.h"
#include "tiny_llama.h"
#include "train/beacontrain.h"
#include "train/train.h"

enum { BW = 4, MAXWIN = 6 };

static mn_tmodel_f64 *TM;
static int C, L, KD, HD;
static double *THETA, *GRAD;
static int64_t NPARAM;
static mn_talt_w_f64 PJ[8];
static mn_beacon_tparams_f64 PRM;
static int32_t IDS[MAXWIN * 16];

static uint64_t g_rng = 0x853c49e6748fea9bull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* THETA = embedding, then per layer q, k, v, o: the base matrices plus noise */
static void setup_params(int with_o) {
    NPARAM = C + (int64_t)L * (HD * C + 2 * KD * C + C * HD);
    THETA = calloc((size_t)NPARAM, sizeof(double));
    GRAD = calloc((size_t)NPARAM, sizeof(double));
    double *p = THETA, *g = GRAD;
    for (int c = 0; c < C; c++) p[c] = nrand();
    PRM.embd = p, PRM.d_embd = g;
    p += C, g += C;
    const char wh[4] = {'q', 'k', 'v', 'o'};
    for (int l = 0; l < L; l++) {
        double *mp[4], *mg[4];
        for (int w = 0; w < 4; w++) {
            const int64_t n = w == 0 || w == 3 ? (int64_t)HD * C : (int64_t)KD * C;
            const double *base = mn_tmodel_weight_f64(TM, l, wh[w]);
            for (int64_t i = 0; i < n; i++) p[i] = base[i] + 0.3 * nrand() / sqrt((double)C);
            mp[w] = p, mg[w] = g;
            p += n, g += n;
        }
        PJ[l] = (mn_talt_w_f64){mp[0], mp[1], mp[2], with_o ? mp[3] : NULL, mg[0], mg[1], mg[2], with_o ? mg[3] : NULL};
    }
    PRM.proj = PJ;
}

static double rel_diff(const double *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num = fmax(num, fabs(a[i] - b[i])), den = fmax(den, fabs(b[i]));
    return num / fmax(den, 1e-300);
}

static double grad_of(mn_beacon_trainer_f64 *tr, mn_bptt_mode mode, int n, int tau, mn_rng *rng, double *out,
                      mn_tstep_stats *st) {
    memset(GRAD, 0, sizeof(double) * (size_t)NPARAM);
    mn_tstep_stats s;
    int rc = mn_beacon_trainer_step_f64(tr, IDS, n, mode, tau, rng, 1, &s);
    CHECK(rc == 0, "step: %s", mn_last_error());
    if (out) memcpy(out, GRAD, sizeof(double) * (size_t)NPARAM);
    if (st) *st = s;
    return s.loss / (double)s.n_scored;
}

/* ---- 2. full vs finite differences ---- */
static void test_fd(mn_beacon_placement place, mn_beacon_attention attn, int ap, double kl) {
    mn_beacon_tparams_f64 q = PRM;
    q.window = BW, q.ratio = 2, q.placement = place, q.attention = attn, q.attend_prev = ap, q.sinks = 1;
    q.ce_w = 1, q.kl_w = kl;
    mn_beacon_trainer_f64 *tr;
    CHECK(mn_beacon_trainer_create_f64(TM, &q, MAXWIN, &tr) == 0, "trainer: %s", mn_last_error());
    const int n = 3;
    double *an = malloc(sizeof(double) * (size_t)NPARAM);
    grad_of(tr, MN_BPTT_FULL, n, 0, NULL, an, NULL);
    const double h = 1e-5;
    double maxd = 0, maxan = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < NPARAM; i++) {
        const double x0 = THETA[i];
        THETA[i] = x0 + h;
        const double lp = grad_of(tr, MN_BPTT_FULL, n, 0, NULL, NULL, NULL);
        THETA[i] = x0 - h;
        const double lm = grad_of(tr, MN_BPTT_FULL, n, 0, NULL, NULL, NULL);
        THETA[i] = x0;
        maxd = fmax(maxd, fabs((lp - lm) / (2 * h) - an[i]));
        maxan = fmax(maxan, fabs(an[i]));
        nonzero += an[i] != 0;
    }
    printf("  %s/%s/ap%d kl %g: full vs finite differences, max rel error %.3g, %lld of %lld nonzero\n",
           mn_beacon_placement_name(place), mn_beacon_attention_name(attn), ap, kl, maxd / maxan,
           (long long)nonzero, (long long)NPARAM);
    CHECK(maxd / maxan < 1e-6, "full gradient vs finite differences (%s/%s, kl %g): %.3g",
          mn_beacon_placement_name(place), mn_beacon_attention_name(attn), kl, maxd / maxan);
    /* the last layer's beacon Q and O feed nothing stored (only K/V are memory)
     * unless raw tokens see the window's beacons; everything else must move */
    CHECK(nonzero > NPARAM / 2, "only %lld of %lld parameters got gradient", (long long)nonzero, (long long)NPARAM);
    free(an);
    mn_beacon_trainer_free_f64(tr);
}

/* ---- 3. tbptt ---- */
/* The layout the gradient-mode tests run on: interleaved, full coverage, a
 * sink, cross-entropy only. */
static mn_beacon_tparams_f64 chain_params(void) {
    mn_beacon_tparams_f64 q = PRM;
    q.window = BW, q.ratio = 2, q.placement = MN_PLACE_INTERLEAVE, q.attention = MN_BATTN_FULL_COVERAGE;
    q.attend_prev = 1, q.sinks = 1, q.ce_w = 1, q.kl_w = 0;
    return q;
}

static void test_tbptt(void) {
    mn_beacon_tparams_f64 q = chain_params();
    mn_beacon_trainer_f64 *tr;
    CHECK(mn_beacon_trainer_create_f64(TM, &q, MAXWIN, &tr) == 0, "trainer: %s", mn_last_error());
    const int n = MAXWIN;
    double *gf = malloc(sizeof(double) * (size_t)NPARAM), *g1 = malloc(sizeof(double) * (size_t)NPARAM);
    mn_tstep_stats sf, s1;
    grad_of(tr, MN_BPTT_FULL, n, 0, NULL, gf, &sf);
    CHECK(sf.enc_backwards == n, "full runs each of %d windows backward once, not %lld", n, (long long)sf.enc_backwards);
    for (int tau = n - 1; tau <= n + 1; tau++) {
        grad_of(tr, MN_BPTT_TBPTT, n, tau, NULL, g1, &s1);
        CHECK(rel_diff(g1, gf, NPARAM) < 1e-10, "tbptt(tau=%d) vs full: %.3g", tau, rel_diff(g1, gf, NPARAM));
    }
    for (int tau = 1; tau <= 2; tau++) {
        grad_of(tr, MN_BPTT_TBPTT, n, tau, NULL, g1, &s1);
        int64_t expect = 0;
        for (int t = 1; t < n; t++) expect += 1 + (t < tau ? t : tau);
        CHECK(s1.enc_backwards == expect, "tbptt tau %d: %lld window backwards, expected %lld", tau,
              (long long)s1.enc_backwards, (long long)expect);
        const double dl = rel_diff(g1, gf, NPARAM);
        printf("  tbptt tau %d vs full: rel diff %.3g, %lld window backwards (full %lld)\n", tau, dl,
               (long long)s1.enc_backwards, (long long)sf.enc_backwards);
        CHECK(dl > 1e-4, "tbptt(%d) should differ from full, differs by %.3g", tau, dl);
    }
    mn_tstep_stats st;
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, n, MN_BPTT_INCREMENTAL, 2, NULL, 1, &st) == MN_EUNSUPPORTED,
          "incremental should be refused for beacons");
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, 1, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL, "1 window accepted");
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, MAXWIN + 1, MN_BPTT_FULL, 0, NULL, 1, &st) == MN_EINVAL,
          "too many windows accepted");
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, 3, MN_BPTT_TBPTT, 0, NULL, 1, &st) == MN_EINVAL, "tau 0 accepted");
    free(gf), free(g1);
    mn_beacon_trainer_free_f64(tr);
}

/* ---- 4. unbiased (randomized truncation) and reservoir (the same, unweighted) ---- */

typedef struct {
    double *mean, *se; /* (NPARAM) per coordinate */
    double pmean, pse; /* the projection on a direction r */
    double bw;         /* window backwards per draw */
} sampled;

/* S sampled gradients of `mode` with tau: per-coordinate mean and standard
 * error, those of the projection on r, the mean number of window backwards */
static void sample_mode(mn_beacon_trainer_f64 *tr, mn_bptt_mode mode, int n, int tau, int S, mn_rng *rng,
                        const double *r, sampled *out) {
    double *g = malloc(sizeof(double) * (size_t)NPARAM), *s2 = calloc((size_t)NPARAM, sizeof(double));
    double *mean = out->mean, *se = out->se, nb = 0, ps = 0, ps2 = 0;
    memset(mean, 0, sizeof(double) * (size_t)NPARAM);
    for (int k = 0; k < S; k++) {
        mn_tstep_stats st;
        grad_of(tr, mode, n, tau, rng, g, &st);
        nb += (double)st.enc_backwards;
        double z = 0;
        for (int64_t i = 0; i < NPARAM; i++) mean[i] += g[i], s2[i] += g[i] * g[i], z += r[i] * g[i];
        ps += z, ps2 += z * z;
    }
    for (int64_t i = 0; i < NPARAM; i++) {
        mean[i] /= S;
        se[i] = sqrt(fmax(s2[i] / S - mean[i] * mean[i], 0) / (S - 1));
    }
    out->pmean = ps / S;
    out->pse = sqrt(fmax(ps2 / S - out->pmean * out->pmean, 0) / (S - 1));
    out->bw = nb / S;
    free(g), free(s2);
}

static double proj(const double *g, const double *r) {
    double s = 0;
    for (int64_t i = 0; i < NPARAM; i++) s += g[i] * r[i];
    return s;
}

/* max over coordinates of |a - b| / (se + eps): how many standard errors the
 * worst coordinate is off; eps keeps coordinates the sampling cannot move
 * (se 0, equal up to rounding) out of it */
static double max_z(const double *a, const double *b, const double *se, double eps) {
    double z = 0;
    for (int64_t i = 0; i < NPARAM; i++) z = fmax(z, fabs(a[i] - b[i]) / (se[i] + eps));
    return z;
}

static void test_unbiased(void) {
    mn_beacon_tparams_f64 q = chain_params();
    mn_beacon_trainer_f64 *tr;
    CHECK(mn_beacon_trainer_create_f64(TM, &q, MAXWIN, &tr) == 0, "trainer: %s", mn_last_error());
    const int n = MAXWIN;
    const size_t nbytes = sizeof(double) * (size_t)NPARAM;
    double *gf = malloc(nbytes), *g1 = malloc(nbytes), *mean = malloc(nbytes), *se = malloc(nbytes),
           *mres = malloc(nbytes), *seres = malloc(nbytes), *r = malloc(nbytes);
    mn_tstep_stats sf, s1, s2;
    mn_rng rng;
    mn_rng_seed(&rng, 4242);
    grad_of(tr, MN_BPTT_FULL, n, 0, NULL, gf, &sf);
    /* a truncation that always covers the chain is full, draw for draw */
    for (int mode = MN_BPTT_RESERVOIR; mode <= MN_BPTT_UNBIASED; mode++)
        for (int k = 0; k < 3; k++) {
            grad_of(tr, MN_BPTT_TBPTT, n, n - 1, NULL, NULL, &s1);
            grad_of(tr, (mn_bptt_mode)mode, n, n - 1 + k, &rng, g1, &s2);
            CHECK(rel_diff(g1, gf, NPARAM) < 1e-10 && s2.enc_backwards == s1.enc_backwards,
                  "%s(tau %d) vs full: %.3g, %lld window backwards (tbptt %lld)", mn_bptt_name((mn_bptt_mode)mode),
                  n - 1 + k, rel_diff(g1, gf, NPARAM), (long long)s2.enc_backwards, (long long)s1.enc_backwards);
        }
    /* tau 1: tbptt drops every term older than one window; r: the unit
     * direction of what it drops (full - tbptt(1)), where bias shows */
    const int tau = 1, S = 600;
    double gmax = 0, rn = 0;
    grad_of(tr, MN_BPTT_TBPTT, n, tau, NULL, g1, &s1);
    for (int64_t i = 0; i < NPARAM; i++) gmax = fmax(gmax, fabs(gf[i])), rn += (gf[i] - g1[i]) * (gf[i] - g1[i]);
    rn = sqrt(rn);
    for (int64_t i = 0; i < NPARAM; i++) r[i] = (gf[i] - g1[i]) / rn;
    const double eps = 1e-9 * gmax;
    sampled su = {mean, se, 0, 0, 0}, sr = {mres, seres, 0, 0, 0};
    sample_mode(tr, MN_BPTT_UNBIASED, n, tau, S, &rng, r, &su);
    sample_mode(tr, MN_BPTT_RESERVOIR, n, tau, S, &rng, r, &sr);
    const double z_unb = max_z(mean, gf, se, eps), z_tbptt = max_z(g1, gf, se, eps),
                 z_res = max_z(mres, gf, seres, eps);
    const double pf = proj(gf, r), pt = proj(g1, r);
    printf("  tau %d, %d draws each: worst coordinate's |mean - full| / se: unbiased %.2f, reservoir %.1f; "
           "tbptt(1) in unbiased's se: %.1f\n",
           tau, S, z_unb, z_res, z_tbptt);
    printf("  along full - tbptt(1) (norm %.3g): full %.5f, unbiased %.5f +- %.5f (%.2f se), reservoir %.5f +- "
           "%.5f (%.1f se), tbptt %.5f\n",
           rn, pf, su.pmean, su.pse, fabs(su.pmean - pf) / su.pse, sr.pmean, sr.pse, fabs(sr.pmean - pf) / sr.pse, pt);
    /* E[backwards] = sum_t (1 + E[min(K_t, t)]), P(K_t >= k) = 1 (k <= tau), 2^-(k - tau) */
    double expect = 0;
    for (int t = 1; t < n; t++) {
        double e = 1;
        for (int k = 1; k <= t; k++) e += k <= tau ? 1 : ldexp(1, -(k - tau));
        expect += e;
    }
    printf("  window backwards per step: unbiased %.2f, reservoir %.2f (expected %.4g), tbptt(1) %lld, "
           "tbptt(2) 14, full %lld\n",
           su.bw, sr.bw, expect, (long long)s1.enc_backwards, (long long)sf.enc_backwards);
    CHECK(z_unb < 5, "unbiased mean is %.2f standard errors from full on its worst coordinate", z_unb);
    CHECK(fabs(su.pmean - pf) < 4 * su.pse, "unbiased mean projection %.5f is %.2f se from full's %.5f", su.pmean,
          fabs(su.pmean - pf) / su.pse, pf);
    CHECK(z_tbptt > 20, "tbptt(1) should be measurably biased: %.2f standard errors", z_tbptt);
    CHECK(z_res > 8 && fabs(sr.pmean - pf) > 8 * sr.pse, "reservoir should be measurably biased: %.2f / %.2f se",
          z_res, fabs(sr.pmean - pf) / sr.pse);
    CHECK(fabs(su.bw - expect) < 0.25 && fabs(sr.bw - expect) < 0.25, "window backwards %.3f / %.3f, expected %.4g",
          su.bw, sr.bw, expect);
    mn_tstep_stats st;
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, n, MN_BPTT_UNBIASED, 1, NULL, 1, &st) == MN_EINVAL, "no rng accepted");
    CHECK(mn_beacon_trainer_step_f64(tr, IDS, n, MN_BPTT_UNBIASED, 0, &rng, 1, &st) == MN_EINVAL, "tau 0 accepted");
    free(gf), free(g1), free(mean), free(se), free(mres), free(seres), free(r);
    mn_beacon_trainer_free_f64(tr);
}

/* ---- 1. trainer loss == inference loss ---- */
static void test_parity(const mn_model *m) {
    enum { PW = 8, PN = 4 };
    int32_t ids[PW * PN];
    for (int i = 0; i < PW * PN; i++) ids[i] = (int32_t)(urand() * 256);
    const int V = mn_model_n_vocab(m);
    float *logits = malloc(sizeof(float) * (size_t)V * PW * PN);
    double worst = 0;
    int n_cfg = 0;
    for (int place = 0; place < 2; place++)
        for (int attn = 0; attn < 3; attn++)
            for (int ap = 0; ap < 2; ap++)
                for (int ratio = 2; ratio <= 4; ratio += 2) {
                    mn_adapter_params pa = mn_adapter_default_params(MN_COMP_BEACON);
                    pa.segment = PW, pa.ratio = ratio, pa.n_ratios = 1, pa.ratios[0] = ratio;
                    pa.placement = (mn_beacon_placement)place, pa.attention = (mn_beacon_attention)attn;
                    pa.attend_prev = ap, pa.sinks = 2, pa.proj_o = ratio == 2;
                    mn_adapter *a = NULL;
                    CHECK(mn_adapter_init(m, &pa, &a) == 0, "adapter: %s", mn_last_error());
                    if (!a) continue;
                    /* perturb every tensor so the beacons' own matrices differ from the base */
                    for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
                        const char *nm;
                        int nd;
                        int64_t ne[2];
                        const float *dd;
                        mn_adapter_tensor_at(a, i, &nm, &nd, ne, &dd);
                        float *w = mn_adapter_tensor_data_mut(a, i);
                        for (int64_t e = 0; e < ne[0] * (nd > 1 ? ne[1] : 1); e++)
                            w[e] += (float)(0.3 * nrand() / sqrt((double)ne[0]));
                    }
                    /* inference */
                    mn_beacon_binding bb;
                    CHECK(mn_beacon_bind(m, a, &bb) == 0, "bind: %s", mn_last_error());
                    mn_context_params cp = mn_context_default_params();
                    cp.n_ctx = 128, cp.n_threads = 1;
                    mn_context *c = NULL;
                    mn_beacon *b = NULL;
                    CHECK(mn_context_create(m, &cp, &c) == 0 && mn_beacon_create(c, &bb.params, 0, &b) == 0,
                          "beacon: %s", mn_last_error());
                    CHECK(mn_beacon_feed(b, ids, PW * PN, logits, 1) == 0, "feed: %s", mn_last_error());
                    double ce = 0;
                    int64_t ns = 0;
                    for (int t = 1; t < PN; t++)
                        for (int i = 0; i + 1 < PW; i++) {
                            const float *lg = logits + (size_t)(t * PW + i) * V;
                            double mx = lg[0], s = 0;
                            for (int v = 1; v < V; v++) mx = fmax(mx, lg[v]);
                            for (int v = 0; v < V; v++) s += exp(lg[v] - mx);
                            ce += mx + log(s) - lg[ids[t * PW + i + 1]];
                            ns++;
                        }
                    ce /= (double)ns;
                    mn_beacon_free(b);
                    mn_context_free(c);
                    /* the trainer on the same adapter, in double */
                    double *buf = calloc((size_t)(C + (int64_t)L * 2 * (HD * C + KD * C)), sizeof(double)), *q = buf;
                    mn_talt_w_f64 pj[8];
                    mn_beacon_tparams_f64 tp = {.window = PW, .ratio = ratio, .placement = pa.placement,
                                                .attention = pa.attention, .attend_prev = ap, .sinks = pa.sinks,
                                                .proj = pj, .ce_w = 1};
                    const float *e = mn_adapter_mem_embd(a);
                    for (int i = 0; i < C; i++) q[i] = e[i];
                    tp.embd = q, q += C;
                    const char wh[4] = {'q', 'k', 'v', 'o'};
                    for (int l = 0; l < L; l++) {
                        const double *mats[4] = {0};
                        for (int w = 0; w < 4; w++) {
                            const float *f = mn_adapter_beacon_proj(a, l, wh[w]);
                            if (!f) continue;
                            const int64_t n = w == 0 || w == 3 ? (int64_t)HD * C : (int64_t)KD * C;
                            for (int64_t i = 0; i < n; i++) q[i] = f[i];
                            mats[w] = q, q += n;
                        }
                        pj[l] = (mn_talt_w_f64){mats[0], mats[1], mats[2], mats[3], NULL, NULL, NULL, NULL};
                    }
                    mn_beacon_trainer_f64 *tr = NULL;
                    mn_tstep_stats st = {0};
                    CHECK(mn_beacon_trainer_create_f64(TM, &tp, PN, &tr) == 0 &&
                              mn_beacon_trainer_step_f64(tr, ids, PN, MN_BPTT_FULL, 0, NULL, 0, &st) == 0,
                          "trainer: %s", mn_last_error());
                    const double tl = st.n_scored ? st.loss / (double)st.n_scored : NAN;
                    /* teeth: the same windows with no memory score differently */
                    mn_tstep_stats s0 = {0};
                    mn_beacon_trainer_no_memory_f64(tr, 1);
                    mn_beacon_trainer_step_f64(tr, ids, PN, MN_BPTT_FULL, 0, NULL, 0, &s0);
                    const double nl = s0.loss / (double)s0.n_scored;
                    const double err = fabs(tl - ce);
                    worst = fmax(worst, err);
                    n_cfg++;
                    CHECK(st.n_scored == ns && err < 2e-3 * fmax(1, fabs(ce)),
                          "%s/%s/ap%d/x%d: trainer loss %.6f vs inference %.6f",
                          mn_beacon_placement_name(pa.placement), mn_beacon_attention_name(pa.attention), ap, ratio,
                          tl, ce);
                    CHECK(fabs(nl - tl) > 10 * err, "%s/%s/ap%d/x%d: memory changes nothing (%.6f vs %.6f)",
                          mn_beacon_placement_name(pa.placement), mn_beacon_attention_name(pa.attention), ap, ratio,
                          nl, tl);
                    mn_beacon_trainer_free_f64(tr);
                    free(buf);
                    mn_beacon_unbind(&bb);
                    mn_adapter_free(a);
                }
    printf("  trainer loss vs mn_beacon_feed over %d layouts (W %d, %d windows, 2 sinks): max |diff| %.3g\n", n_cfg,
           PW, PN, worst);
    free(logits);
}

/* ---- 5. real run ---- */
typedef struct {
    double first_val, last_val, last_loss;
    int steps;
} run_log;

static int on_step(const mn_train_progress *p, void *ud) {
    run_log *r = ud;
    if (r->steps++ == 0) r->first_val = p->val_loss;
    r->last_val = p->val_loss, r->last_loss = p->loss;
    return 0;
}

static void test_real_run(const mn_model *m, const char *dir) {
    char data[700], a0[700], a1[700], cache[700];
    snprintf(data, sizeof data, "%s/text.txt", dir);
    snprintf(a0, sizeof a0, "%s/b0.gguf", dir);
    snprintf(a1, sizeof a1, "%s/b1.gguf", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    static const char *words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran ", "far. "};
    FILE *f = fopen(data, "w");
    for (int i = 0; f && i < 3000; i++) fputs(words[(int)(urand() * 10)], f);
    if (f) fclose(f);
    mn_adapter_params pa = mn_adapter_default_params(MN_COMP_BEACON);
    pa.segment = 16, pa.ratio = 4, pa.n_ratios = 2, pa.ratios[0] = 4, pa.ratios[1] = 8, pa.sinks = 1;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &pa, &a) == 0 && mn_adapter_save(a, a0) == 0, "adapter: %s", mn_last_error());
    mn_adapter_free(a);
    mn_train_config c = mn_train_default_config();
    c.adapter_in = a0, c.data_glob = data, c.cache_dir = cache, c.out = a1;
    c.n_seg = 3, c.bptt = MN_BPTT_TBPTT, c.tau = 1, c.steps = 40, c.batch = 2, c.lr = 1e-2f, c.warmup = 5;
    c.n_ratios = 2, c.ratios[0] = 4, c.ratios[1] = 8;
    c.eval_every = 40, c.eval_windows = 8, c.ckpt_every = 0, c.val_frac = 0.1, c.n_threads = 2;
    run_log r = {0};
    CHECK(mn_train_run(m, &c, on_step, &r) == 0, "train: %s", mn_last_error());
    printf("  mn_train_run, 40 steps (tbptt 1, ratios 4,8): validation loss %.4f -> %.4f\n", r.first_val, r.last_val);
    CHECK(r.steps == 40 && r.last_val < r.first_val - 0.05, "validation loss did not fall: %.4f -> %.4f", r.first_val,
          r.last_val);
    c.bptt = MN_BPTT_INCREMENTAL;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EUNSUPPORTED, "incremental beacon training accepted");
    /* the written adapter runs in the inference engine */
    CHECK(mn_adapter_load(m, a1, &a) == 0, "trained adapter: %s", mn_last_error());
    mn_beacon_binding bb;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 128, cp.n_threads = 1;
    mn_context *ctx = NULL;
    mn_beacon *b = NULL;
    CHECK(a && mn_beacon_bind(m, a, &bb) == 0 && mn_context_create(m, &cp, &ctx) == 0 &&
              mn_beacon_create(ctx, &bb.params, 0, &b) == 0 && mn_beacon_feed(b, IDS, 48, NULL, 0) == 0 &&
              mn_beacon_n_memory(b) == 12,
          "inference with the trained adapter: %s (memory %d)", mn_last_error(), b ? mn_beacon_n_memory(b) : -1);
    mn_beacon_free(b);
    mn_context_free(ctx);
    if (a) mn_beacon_unbind(&bb);
    mn_adapter_free(a);
    /* the sampled modes run through mn_train_run (their draws from the run's generator) */
    for (int mode = MN_BPTT_RESERVOIR; mode <= MN_BPTT_UNBIASED; mode++) {
        snprintf(a1, sizeof a1, "%s/b2.gguf", dir);
        c.out = a1, c.bptt = (mn_bptt_mode)mode, c.steps = 3, c.eval_every = 0;
        run_log r2 = {0};
        CHECK(mn_train_run(m, &c, on_step, &r2) == 0 && r2.steps == 3 && isfinite(r2.last_loss),
              "beacon training with --bptt %s: %s", mn_bptt_name((mn_bptt_mode)mode), mn_last_error());
    }
}

int main(void) {
    char dir[] = "/tmp/mnemo-beacontrain-XXXXXX", path[600];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 4, .n_head_kv = 2, .n_ff = 24, .n_layer = 2, .n_ctx = 256, .seed = 11};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, path) == 0 && mn_model_load(path, &m) == 0, "tiny model: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    CHECK(mn_tmodel_create_f64(m, &TM) == 0, "tmodel: %s", mn_last_error());
    const mn_tdims *d = mn_tmodel_dims_f64(TM);
    C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = d->n_head * d->head_dim;
    for (int i = 0; i < MAXWIN * 16; i++) IDS[i] = (int32_t)(urand() * 256);
    printf("--- trainer vs inference ---\n");
    test_parity(m);
    setup_params(1);
    printf("--- full vs finite differences ---\n");
    test_fd(MN_PLACE_INTERLEAVE, MN_BATTN_FULL_COVERAGE, 1, 0);
    test_fd(MN_PLACE_INTERLEAVE, MN_BATTN_FULL_COVERAGE, 1, 0.5);
    test_fd(MN_PLACE_APPEND, MN_BATTN_SEGMENTATION, 0, 0);
    test_fd(MN_PLACE_INTERLEAVE, MN_BATTN_STEP_EXPANSION, 0, 0.5);
    printf("--- tbptt ---\n");
    test_tbptt();
    printf("--- unbiased and reservoir ---\n");
    test_unbiased();
    printf("--- a real run ---\n");
    test_real_run(m, dir);
    mn_model_free(m);
    mn_tmodel_free_f64(TM);
    free(THETA), free(GRAD);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
