/* test_sampler.c - the sampling chain (src/model/sampler.c).
 *
 * Exactness checks (greedy, top_k, top_p, min_p, penalties, special values)
 * plus distribution checks: empirical frequencies are compared with the exact
 * distribution of the chain, computed independently here in double precision
 * with a full sort, through a chi-square statistic. Seeds are fixed, so the
 * results are deterministic; the bound is the chi-square quantile for a tail of
 * about 3e-5 (Wilson-Hilferty), and each such test also shows that a slightly
 * wrong distribution lands far outside it.
 */
#include "test.h"

#include <stdint.h>
#include <time.h>

#include "error.h"
#include "model/sampler.h"

/* ---- helpers ---- */

static uint64_t t_rng = 0x1234567887654321ULL;
static double t_uniform(void) { /* test-side PRNG (xorshift64*), independent of the sampler's */
    t_rng ^= t_rng >> 12;
    t_rng ^= t_rng << 25;
    t_rng ^= t_rng >> 27;
    return (double)((t_rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1p-53;
}
static double t_normal(void) {
    double u1 = t_uniform(), u2 = t_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static mn_sampler_params plain(float temp) { /* no truncation, no penalty */
    mn_sampler_params p = mn_sampler_default_params();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static mn_sampler *make(const mn_sampler_params *p, int32_t nv) {
    mn_sampler *s = NULL;
    int rc = mn_sampler_create(p, nv, &s);
    CHECK(rc == 0 && s, "create failed: %d %s", rc, mn_last_error());
    return s;
}

/* Upper chi-square quantile (Wilson-Hilferty), z = 4 -> tail ~3.2e-5. */
static double chi2_bound(int df) {
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + 4.0 * sqrt(a);
    return df * c * c * c;
}

/* Chi-square statistic of counts[n] (total draws) against probs[n]; cells with
 * expected count < 5 are pooled. Returns the statistic and sets *df. */
static double chi2_stat(const long *counts, const double *probs, int n, long draws, int *df) {
    double stat = 0.0, pool_e = 0.0, pool_o = 0.0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        double e = probs[i] * (double)draws;
        if (probs[i] <= 0.0) continue;
        if (e < 5.0) {
            pool_e += e;
            pool_o += (double)counts[i];
            continue;
        }
        double d = (double)counts[i] - e;
        stat += d * d / e;
        cells++;
    }
    if (pool_e > 0.0) {
        double d = pool_o - pool_e;
        stat += d * d / pool_e;
        cells++;
    }
    *df = cells - 1;
    return stat;
}

/* Exact distribution of the chain (no penalties), computed the slow obvious way. */
static const float *g_sort_logits;
static int cmp_desc(const void *a, const void *b) {
    int ia = *(const int *)a, ib = *(const int *)b;
    float la = g_sort_logits[ia], lb = g_sort_logits[ib];
    if (la > lb) return -1;
    if (la < lb) return 1;
    return ia < ib ? -1 : ia > ib;
}
static void ref_chain(const float *logits_in, int n, const mn_sampler_params *p, double *prob) {
    float *l = malloc((size_t)n * sizeof *l);
    int *idx = malloc((size_t)n * sizeof *idx);
    int nvalid = 0;
    for (int i = 0; i < n; i++) {
        l[i] = isnan(logits_in[i]) ? -INFINITY : logits_in[i];
        prob[i] = 0.0;
        if (l[i] != -INFINITY) idx[nvalid++] = i;
    }
    g_sort_logits = l;
    qsort(idx, (size_t)nvalid, sizeof *idx, cmp_desc);
    int k = nvalid;
    if (p->top_k > 0 && p->top_k < k) k = p->top_k;
    double mx = l[idx[0]];
    if (p->top_p < 1.0f) {
        double sum = 0.0;
        for (int i = 0; i < k; i++) sum += exp(l[idx[i]] - mx);
        double cum = 0.0;
        for (int i = 0; i < k; i++) {
            cum += exp(l[idx[i]] - mx) / sum;
            if (cum >= p->top_p) {
                k = i + 1;
                break;
            }
        }
    }
    int m = 0;
    for (int i = 0; i < k; i++)
        if (p->min_p <= 0.0f || exp(l[idx[i]] - mx) >= p->min_p) idx[m++] = idx[i];
    double sum = 0.0;
    for (int i = 0; i < m; i++) sum += exp((l[idx[i]] - mx) / p->temperature);
    for (int i = 0; i < m; i++) prob[idx[i]] = exp((l[idx[i]] - mx) / p->temperature) / sum;
    free(l);
    free(idx);
}

/* Draws `draws` tokens; returns the number of draws outside [0, n) or negative. */
static long draw_counts(mn_sampler *s, const float *logits, int n, long draws, long *counts) {
    long bad = 0;
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (long d = 0; d < draws; d++) {
        int32_t t = mn_sampler_sample(s, logits);
        if (t < 0 || t >= n)
            bad++;
        else
            counts[t]++;
    }
    return bad;
}

static int32_t argmax_lowest(const float *l, int n) {
    int32_t a = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[a]) a = i;
    return a;
}

/* ---- tests ---- */

static void test_defaults(void) {
    mn_sampler_params p = mn_sampler_default_params();
    CHECK(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f &&
              p.repeat_penalty == 1.0f && p.repeat_last_n == 64 && p.seed == 0,
          "default params");
    mn_sampler *s = NULL;
    CHECK(mn_sampler_create(NULL, 100, &s) == 0 && s, "NULL params mean defaults");
    mn_sampler_free(s);
    mn_sampler_free(NULL);
}

static void test_greedy(void) {
    enum { N = 257 };
    float l[N];
    mn_sampler_params p = mn_sampler_default_params(); /* truncation on: must not matter */
    p.temperature = 0.0f;
    mn_sampler *s = make(&p, N);
    int ok = 1;
    for (int rep = 0; rep < 200; rep++) {
        for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * 4.0);
        if (mn_sampler_sample(s, l) != argmax_lowest(l, N)) ok = 0;
    }
    CHECK(ok, "greedy == argmax on random logits");
    /* ties -> lowest id */
    for (int i = 0; i < N; i++) l[i] = (float)(i % 7);
    CHECK(mn_sampler_sample(s, l) == 6, "tie: lowest id of the max (got %d)", (int)mn_sampler_sample(s, l));
    for (int i = 0; i < N; i++) l[i] = 1.0f;
    CHECK(mn_sampler_sample(s, l) == 0, "all equal -> token 0");
    l[200] = 3.0f;
    l[100] = 3.0f;
    CHECK(mn_sampler_sample(s, l) == 100, "two maxima -> lower id");
    mn_sampler_free(s);

    p.temperature = -1.0f; /* negative is greedy too */
    s = make(&p, N);
    CHECK(mn_sampler_sample(s, l) == 100, "negative temperature is greedy");
    mn_sampler_free(s);
}

static void test_top_k1_is_greedy(void) {
    enum { N = 300 };
    float l[N];
    const float temps[] = {0.3f, 1.0f, 5.0f, 1000.0f};
    int ok = 1;
    for (int ti = 0; ti < 4; ti++) {
        mn_sampler_params p = plain(temps[ti]);
        p.top_k = 1;
        p.seed = 77 + (uint64_t)ti;
        mn_sampler *s = make(&p, N);
        for (int rep = 0; rep < 300; rep++) {
            for (int i = 0; i < N; i++) /* small integer range: many ties */
                l[i] = rep % 2 ? (float)(int)(t_uniform() * 20.0) : (float)t_normal();
            if (mn_sampler_sample(s, l) != argmax_lowest(l, N)) ok = 0;
        }
        mn_sampler_free(s);
    }
    CHECK(ok, "top_k=1 equals greedy (ties -> lowest id) at every temperature");
}

/* Plain softmax at temperatures 1 and 0.5, chi-square over 200k draws. */
static void test_softmax_frequencies(void) {
    enum { N = 10 };
    const float l[N] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, -1.0f, 1.5f, 0.2f, -2.0f, 0.8f};
    const long draws = 200000;
    long counts[N];
    double prob[N], wrong[N];
    const float temps[] = {1.0f, 0.5f};
    for (int ti = 0; ti < 2; ti++) {
        mn_sampler_params p = plain(temps[ti]);
        p.seed = 2024;
        mn_sampler *s = make(&p, N);
        CHECK(draw_counts(s, l, N, draws, counts) == 0, "draws in range");
        /* expected: softmax(l / T), computed directly */
        double sum = 0.0, sumw = 0.0;
        for (int i = 0; i < N; i++) sum += exp(l[i] / temps[ti]);
        for (int i = 0; i < N; i++) prob[i] = exp(l[i] / temps[ti]) / sum;
        for (int i = 0; i < N; i++) sumw += exp(l[i] / (temps[ti] * 1.1));
        for (int i = 0; i < N; i++) wrong[i] = exp(l[i] / (temps[ti] * 1.1)) / sumw;
        int df, dfw;
        double st = chi2_stat(counts, prob, N, draws, &df);
        double stw = chi2_stat(counts, wrong, N, draws, &dfw);
        double bound = chi2_bound(df);
        CHECK(df == N - 1, "all cells used (df %d)", df);
        CHECK(st < bound, "T=%g: chi2 %.2f >= bound %.2f (df %d)", (double)temps[ti], st, bound, df);
        CHECK(stw > bound, "T=%g: test has power: chi2 vs T*1.1 only %.2f (bound %.2f)",
              (double)temps[ti], stw, bound);
        mn_sampler_free(s);
    }
}

static void test_top_k3(void) {
    enum { N = 1000 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = (float)t_normal();
    /* plant the top 3 far apart from the rest but close to each other */
    l[417] = 5.0f;
    l[3] = 4.6f;
    l[998] = 4.2f;
    mn_sampler_params p = plain(1.0f);
    p.top_k = 3;
    p.seed = 5;
    mn_sampler *s = make(&p, N);
    long *counts = calloc(N, sizeof *counts);
    const long draws = 100000;
    CHECK(draw_counts(s, l, N, draws, counts) == 0, "draws in range");
    CHECK(counts[417] + counts[3] + counts[998] == draws, "top_k=3 only yields the 3 largest");
    CHECK(counts[417] > 0 && counts[3] > 0 && counts[998] > 0, "each of the 3 appears");
    /* renormalized softmax over the three */
    double prob[N] = {0}, wrong[N] = {0};
    double z = exp(5.0) + exp(4.6) + exp(4.2);
    prob[417] = exp(5.0) / z, prob[3] = exp(4.6) / z, prob[998] = exp(4.2) / z;
    wrong[417] = 1.0 / 3, wrong[3] = 1.0 / 3, wrong[998] = 1.0 / 3;
    int df;
    double st = chi2_stat(counts, prob, N, draws, &df);
    CHECK(df == 2 && st < chi2_bound(2), "top_k=3 frequencies: chi2 %.2f, bound %.2f", st, chi2_bound(2));
    st = chi2_stat(counts, wrong, N, draws, &df);
    CHECK(st > chi2_bound(2), "power: uniform over 3 rejected (%.2f)", st);
    free(counts);
    mn_sampler_free(s);

    /* random logits, varying k: never outside the k largest */
    int ok = 1;
    for (int k = 2; k <= 64; k *= 2) {
        p.top_k = k;
        p.temperature = 3.0f; /* flat: would often leave the top k if unfiltered */
        s = make(&p, N);
        for (int rep = 0; rep < 50; rep++) {
            for (int i = 0; i < N; i++) l[i] = (float)(int)(t_normal() * 3.0); /* with ties */
            int32_t t = mn_sampler_sample(s, l);
            /* rank of t under (logit desc, id asc) must be < k */
            int rank = 0;
            for (int i = 0; i < N; i++)
                if (l[i] > l[t] || (l[i] == l[t] && i < t)) rank++;
            if (rank >= k) ok = 0;
        }
        mn_sampler_free(s);
    }
    CHECK(ok, "top_k=k: the pick always ranks among the k best (ties by id)");
}

static void test_top_p(void) {
    /* probabilities 0.4 0.3 0.2 0.1 on shuffled ids */
    enum { N = 4 };
    float l[N];
    l[2] = logf(0.4f), l[0] = logf(0.3f), l[3] = logf(0.2f), l[1] = logf(0.1f);
    long counts[N];
    mn_sampler_params p = plain(1.0f);
    p.top_p = 0.5f;
    p.seed = 11;
    mn_sampler *s = make(&p, N);
    const long draws = 50000;
    CHECK(draw_counts(s, l, N, draws, counts) == 0, "in range");
    CHECK(counts[3] == 0 && counts[1] == 0, "top_p=0.5 -> only the nucleus {0.4, 0.3} (got %ld %ld)",
          counts[3], counts[1]);
    double prob[N] = {4.0 / 7, 0, 3.0 / 7, 0};
    prob[2] = 4.0 / 7, prob[0] = 3.0 / 7;
    int df;
    double st = chi2_stat(counts, prob, N, draws, &df);
    CHECK(df == 1 && st < chi2_bound(1), "nucleus renormalized 4:3: chi2 %.2f", st);
    mn_sampler_free(s);

    /* top_p judges the untempered distribution: at T=100 the survivors are
     * near-uniform, but 0.6 of the original mass is still 2 tokens (0.4+0.3) */
    p.top_p = 0.6f;
    p.temperature = 100.0f;
    s = make(&p, N);
    draw_counts(s, l, N, draws, counts);
    CHECK(counts[3] == 0 && counts[1] == 0, "top_p before temperature (%ld %ld)", counts[3], counts[1]);
    CHECK(labs(counts[2] - counts[0]) < draws / 20, "T=100 flattens the nucleus (%ld vs %ld)", counts[2],
          counts[0]);
    mn_sampler_free(s);

    /* Unsorted path with the nucleus edge landing exactly on the first
     * quickselect pivot (median of ids 0, 16, 32): 33 candidates, nucleus
     * {0, 1, 2, 3, 16} (cumulative 0.601 before id 16, 0.684 with it). */
    {
        enum { M = 33 };
        float e[M];
        long ce[M];
        for (int i = 0; i < M; i++) e[i] = 0.0f;
        e[0] = 3.0f, e[1] = 2.5f, e[2] = 2.4f, e[3] = 2.3f, e[16] = 2.0f;
        mn_sampler_params q = plain(1000.0f);
        q.top_p = 0.65f;
        q.seed = 12;
        mn_sampler *se = make(&q, M);
        draw_counts(se, e, M, 3000, ce);
        long in = ce[0] + ce[1] + ce[2] + ce[3] + ce[16];
        CHECK(in == 3000, "nucleus edge on the pivot: %ld of 3000 outside", 3000 - in);
        CHECK(ce[0] && ce[1] && ce[2] && ce[3] && ce[16], "nucleus edge on the pivot: all 5 reachable");
        mn_sampler_free(se);
    }

    /* top_p = 0 keeps exactly the top token */
    p.top_p = 0.0f;
    p.temperature = 1.0f;
    s = make(&p, N);
    draw_counts(s, l, N, 2000, counts);
    CHECK(counts[2] == 2000, "top_p=0 -> argmax only");
    mn_sampler_free(s);
}

/* Large vocabulary, top_k off, top_p on (the threshold + partial sort path):
 * every pick must be inside the exact nucleus, and frequencies must match. */
static void test_top_p_large_vocab(void) {
    enum { N = 49152 };
    float *l = malloc(N * sizeof *l);
    double *prob = malloc(N * sizeof *prob);
    long *counts = malloc(N * sizeof *counts);
    for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * 1.0);
    /* a head of 12 tokens holding most of the mass, plus a long tail */
    for (int i = 0; i < 12; i++) l[(i * 4099) % N] = 14.0f - 0.35f * (float)i;
    mn_sampler_params p = plain(1.0f);
    p.top_p = 0.9f;
    p.seed = 99;
    ref_chain(l, N, &p, prob);
    int nucleus = 0;
    for (int i = 0; i < N; i++) nucleus += prob[i] > 0.0;
    CHECK(nucleus > 2 && nucleus < 12, "test setup: nucleus of %d tokens", nucleus);
    mn_sampler *s = make(&p, N);
    const long draws = 6000;
    CHECK(draw_counts(s, l, N, draws, counts) == 0, "in range");
    long outside = 0;
    for (int i = 0; i < N; i++)
        if (prob[i] == 0.0) outside += counts[i];
    CHECK(outside == 0, "top_p=0.9 on 49152 tokens: %ld picks outside the nucleus", outside);
    int df;
    double st = chi2_stat(counts, prob, N, draws, &df);
    CHECK(st < chi2_bound(df), "nucleus frequencies: chi2 %.2f bound %.2f df %d", st, chi2_bound(df), df);
    mn_sampler_free(s);

    /* flat-ish logits: the nucleus is thousands of tokens */
    for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * 2.0);
    p.top_p = 0.5f;
    ref_chain(l, N, &p, prob);
    nucleus = 0;
    for (int i = 0; i < N; i++) nucleus += prob[i] > 0.0;
    s = make(&p, N);
    draw_counts(s, l, N, 1000, counts);
    outside = 0;
    for (int i = 0; i < N; i++)
        if (prob[i] == 0.0) outside += counts[i];
    CHECK(nucleus > 1000 && outside == 0, "wide nucleus (%d tokens): %ld picks outside", nucleus, outside);
    mn_sampler_free(s);
    free(l);
    free(prob);
    free(counts);
}

/* Exact nucleus membership through the quickselect path: near-uniform draws
 * (T = 1000; top_p and min_p judge the untempered distribution) over nuclei of
 * 3..200 tokens cut out of a few hundred to thousands of prefiltered
 * candidates. Every token of the reference set must show up (20 expected hits
 * each) and nothing else, so a cut that is one token off is caught. */
static void test_nucleus_exact(void) {
    enum { N = 4096 };
    float *l = malloc(N * sizeof *l);
    double *prob = malloc(N * sizeof *prob);
    long *counts = malloc(N * sizeof *counts);
    int checked = 0, ok_out = 1, ok_seen = 1;
    for (int cfg = 0; cfg < 12 && checked < 8; cfg++) {
        double sig = 1.5 + 1.5 * t_uniform();
        for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * sig);
        mn_sampler_params p = plain(1000.0f);
        p.top_p = (float)(0.2 + 0.6 * t_uniform());
        p.min_p = cfg % 3 == 2 ? 0.01f : 0.0f;
        p.seed = 500 + (uint64_t)cfg;
        ref_chain(l, N, &p, prob);
        int m = 0;
        for (int i = 0; i < N; i++) m += prob[i] > 0.0;
        if (m < 3 || m > 200) continue;
        checked++;
        mn_sampler *s = make(&p, N);
        draw_counts(s, l, N, 20L * m, counts);
        long outside = 0;
        int seen = 0;
        for (int i = 0; i < N; i++) {
            if (prob[i] == 0.0) outside += counts[i];
            else seen += counts[i] > 0;
        }
        if (outside) ok_out = 0;
        if (seen != m) ok_seen = 0;
        if (outside || seen != m)
            fprintf(stderr, "  nucleus cfg %d: sigma %.2f top_p %.3f min_p %.2f: %d in set, %d seen, %ld outside\n",
                    cfg, sig, (double)p.top_p, (double)p.min_p, m, seen, outside);
        mn_sampler_free(s);
    }
    CHECK(checked >= 5, "setup: %d configurations checked", checked);
    CHECK(ok_out, "quickselect nucleus: never a token outside the exact set");
    CHECK(ok_seen, "quickselect nucleus: every token of the exact set reachable");
    free(l);
    free(prob);
    free(counts);
}

static void test_min_p(void) {
    enum { N = 5 };
    const float l[N] = {logf(0.06f), logf(0.3f), logf(0.04f), logf(0.5f), logf(0.1f)};
    long counts[N];
    mn_sampler_params p = plain(1.0f);
    p.min_p = 0.15f; /* threshold 0.075: keeps 0.5 0.3 0.1 */
    p.seed = 3;
    mn_sampler *s = make(&p, N);
    const long draws = 50000;
    draw_counts(s, l, N, draws, counts);
    CHECK(counts[0] == 0 && counts[2] == 0, "min_p=0.15 drops p<0.075 (%ld %ld)", counts[0], counts[2]);
    double prob[N] = {0, 0.3 / 0.9, 0, 0.5 / 0.9, 0.1 / 0.9};
    int df;
    double st = chi2_stat(counts, prob, N, draws, &df);
    CHECK(df == 2 && st < chi2_bound(2), "min_p survivors renormalized: chi2 %.2f", st);
    mn_sampler_free(s);

    p.min_p = 0.7f; /* only the max survives */
    s = make(&p, N);
    draw_counts(s, l, N, 2000, counts);
    CHECK(counts[3] == 2000, "min_p=0.7 -> only the max");
    mn_sampler_free(s);

    p.min_p = 1.0f; /* still keeps the max (p_max >= 1 * p_max) */
    s = make(&p, N);
    CHECK(mn_sampler_sample(s, l) == 3, "min_p=1 keeps the max");
    mn_sampler_free(s);

    /* min_p judges the untempered distribution: at T=100 all would pass */
    p.min_p = 0.15f;
    p.temperature = 100.0f;
    s = make(&p, N);
    draw_counts(s, l, N, draws, counts);
    CHECK(counts[0] == 0 && counts[2] == 0 && counts[4] > draws / 5, "min_p before temperature");
    mn_sampler_free(s);
}

/* The whole default chain against the reference on a realistic vocabulary. */
static void test_default_chain(void) {
    enum { N = 2048 };
    float *l = malloc(N * sizeof *l);
    double *prob = malloc(N * sizeof *prob);
    long *counts = malloc(N * sizeof *counts);
    const float temps[] = {0.8f, 1.5f};
    for (int ti = 0; ti < 2; ti++) {
        for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * 2.5);
        mn_sampler_params p = mn_sampler_default_params();
        p.temperature = temps[ti];
        p.seed = 1000 + (uint64_t)ti;
        ref_chain(l, N, &p, prob);
        int allowed = 0;
        for (int i = 0; i < N; i++) allowed += prob[i] > 0.0;
        mn_sampler *s = make(&p, N);
        const long draws = 60000;
        CHECK(draw_counts(s, l, N, draws, counts) == 0, "in range");
        long outside = 0;
        int seen = 0;
        for (int i = 0; i < N; i++) {
            if (prob[i] == 0.0) outside += counts[i];
            seen += counts[i] > 0;
        }
        CHECK(outside == 0, "default chain T=%g: %ld picks outside the allowed %d", (double)temps[ti],
              outside, allowed);
        CHECK(allowed > 3 && allowed <= 40, "setup: %d allowed", allowed);
        int df;
        double st = chi2_stat(counts, prob, N, draws, &df);
        CHECK(st < chi2_bound(df), "default chain T=%g: chi2 %.2f bound %.2f df %d (%d seen)",
              (double)temps[ti], st, chi2_bound(df), df, seen);
        mn_sampler_free(s);
    }
    free(l);
    free(prob);
    free(counts);
}

static void test_repeat_penalty(void) {
    mn_sampler_params p = plain(0.0f);
    p.repeat_penalty = 1.3f;
    p.repeat_last_n = 2;
    mn_sampler *s = make(&p, 4);
    const float l[4] = {2.0f, 1.8f, 0.5f, -1.0f};
    float copy[4];
    memcpy(copy, l, sizeof l);
    CHECK(mn_sampler_sample(s, l) == 0, "no history -> argmax 0");
    mn_sampler_accept(s, 0);
    CHECK(mn_sampler_sample(s, l) == 1, "2.0/1.3 < 1.8 -> argmax moves to 1");
    CHECK(memcmp(copy, l, sizeof l) == 0, "caller's logits untouched");
    mn_sampler_accept(s, 2);
    CHECK(mn_sampler_sample(s, l) == 1, "0 still in the window of 2");
    mn_sampler_accept(s, 3);
    CHECK(mn_sampler_sample(s, l) == 0, "0 left the window -> argmax back to 0");
    mn_sampler_accept(s, 0);
    mn_sampler_reset(s);
    CHECK(mn_sampler_sample(s, l) == 0, "reset clears the history");
    mn_sampler_accept(s, -1);
    mn_sampler_accept(s, 4);
    mn_sampler_accept(s, INT32_MAX);
    CHECK(mn_sampler_sample(s, l) == 0, "out-of-range accepts ignored");
    mn_sampler_free(s);

    /* negative logits are multiplied */
    p.repeat_last_n = 64;
    s = make(&p, 3);
    const float neg[3] = {-5.0f, -1.0f, -1.2f};
    mn_sampler_accept(s, 1);
    CHECK(mn_sampler_sample(s, neg) == 2, "-1*1.3 = -1.3 < -1.2 -> token 2");
    mn_sampler_free(s);

    /* once per distinct token, not per occurrence (llama.cpp penalty_repeat) */
    p.repeat_penalty = 1.2f;
    s = make(&p, 2);
    const float two[2] = {2.0f, 1.5f};
    for (int i = 0; i < 5; i++) mn_sampler_accept(s, 0);
    CHECK(mn_sampler_sample(s, two) == 0, "2/1.2 = 1.67 > 1.5: penalty applied once");
    mn_sampler_free(s);

    /* penalties run before top_k */
    p = plain(1.0f);
    p.top_k = 1;
    p.repeat_penalty = 2.0f;
    s = make(&p, 3);
    const float ord[3] = {2.0f, 1.9f, 0.0f};
    mn_sampler_accept(s, 0);
    long counts[3];
    draw_counts(s, ord, 3, 500, counts);
    CHECK(counts[1] == 500, "penalty before top_k: always token 1");
    mn_sampler_free(s);

    /* repeat_last_n = 0 disables */
    p = plain(0.0f);
    p.repeat_penalty = 5.0f;
    p.repeat_last_n = 0;
    s = make(&p, 4);
    mn_sampler_accept(s, 0);
    CHECK(mn_sampler_sample(s, l) == 0, "repeat_last_n=0 -> no penalty");
    mn_sampler_free(s);

    /* penalty < 1 boosts */
    p.repeat_penalty = 0.5f;
    p.repeat_last_n = 8;
    s = make(&p, 4);
    mn_sampler_accept(s, 2);
    CHECK(mn_sampler_sample(s, l) == 0, "0.5/0.5 = 1.0 < 2");
    mn_sampler_accept(s, 1);
    CHECK(mn_sampler_sample(s, l) == 1, "1.8/0.5 = 3.6 > 2");
    mn_sampler_free(s);

    /* many samples with a stamp generation rollover-free history: stays correct */
    p.repeat_penalty = 1.3f;
    s = make(&p, 4);
    int ok = 1;
    for (int i = 0; i < 10000; i++) {
        mn_sampler_accept(s, 0);
        if (mn_sampler_sample(s, l) != 1) ok = 0;
    }
    CHECK(ok, "repeated penalized sampling is stable");
    mn_sampler_free(s);
}

static void test_seeds(void) {
    enum { N = 50, D = 1000 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = (float)t_normal();
    int32_t a[D], b[D], c[D], r[D];
    mn_sampler_params p = mn_sampler_default_params();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 42;
    mn_sampler *s1 = make(&p, N), *s2 = make(&p, N);
    p.seed = 43;
    mn_sampler *s3 = make(&p, N);
    for (int i = 0; i < D; i++) {
        a[i] = mn_sampler_sample(s1, l);
        b[i] = mn_sampler_sample(s2, l);
        c[i] = mn_sampler_sample(s3, l);
    }
    mn_sampler_reset(s1);
    for (int i = 0; i < D; i++) r[i] = mn_sampler_sample(s1, l);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed -> same sequence");
    CHECK(memcmp(a, r, sizeof a) == 0, "reset -> same sequence again");
    int diff = 0;
    for (int i = 0; i < D; i++) diff += a[i] != c[i];
    CHECK(diff > D / 2, "different seed -> different sequence (%d of %d differ)", diff, D);
    mn_sampler_free(s1);
    mn_sampler_free(s2);
    mn_sampler_free(s3);

    /* seed 0 is a valid, deterministic seed */
    p.seed = 0;
    s1 = make(&p, N);
    s2 = make(&p, N);
    int same = 1;
    for (int i = 0; i < D; i++) same &= mn_sampler_sample(s1, l) == mn_sampler_sample(s2, l);
    CHECK(same, "seed 0 deterministic");
    mn_sampler_free(s1);
    mn_sampler_free(s2);
}

static void expect_invalid(mn_sampler_params p, int32_t nv, const char *word) {
    mn_sampler *s = (mn_sampler *)&p; /* non-NULL garbage: must be reset to NULL */
    int rc = mn_sampler_create(&p, nv, &s);
    CHECK(rc == MN_EINVAL, "%s: rc %d", word, rc);
    CHECK(s == NULL, "%s: *out NULL on failure", word);
    CHECK(strstr(mn_last_error(), word) != NULL, "message names %s: '%s'", word, mn_last_error());
    if (rc == 0) mn_sampler_free(s);
}

static void test_invalid(void) {
    mn_sampler_params d = mn_sampler_default_params(), p;
    p = d, p.temperature = NAN, expect_invalid(p, 10, "temperature");
    p = d, p.temperature = INFINITY, expect_invalid(p, 10, "temperature");
    p = d, p.top_p = NAN, expect_invalid(p, 10, "top_p");
    p = d, p.top_p = -0.1f, expect_invalid(p, 10, "top_p");
    p = d, p.min_p = NAN, expect_invalid(p, 10, "min_p");
    p = d, p.min_p = 1.5f, expect_invalid(p, 10, "min_p");
    p = d, p.repeat_penalty = 0.0f, expect_invalid(p, 10, "repeat_penalty");
    p = d, p.repeat_penalty = -1.1f, expect_invalid(p, 10, "repeat_penalty");
    p = d, p.repeat_penalty = NAN, expect_invalid(p, 10, "repeat_penalty");
    p = d, p.repeat_penalty = INFINITY, expect_invalid(p, 10, "repeat_penalty");
    p = d, p.repeat_last_n = -1, expect_invalid(p, 10, "repeat_last_n");
    expect_invalid(d, 0, "n_vocab");
    expect_invalid(d, -5, "n_vocab");
    CHECK(mn_sampler_create(&d, 10, NULL) == MN_EINVAL, "NULL out rejected");

    /* accepted edge values */
    mn_sampler *s = NULL;
    p = d, p.top_p = 1.5f, p.min_p = -1.0f, p.top_k = -3, p.temperature = -2.0f;
    CHECK(mn_sampler_create(&p, 10, &s) == 0, "off-range 'off' values accepted: %s", mn_last_error());
    mn_sampler_free(s);

    s = make(&d, 10);
    CHECK(mn_sampler_sample(s, NULL) == MN_EINVAL, "NULL logits");
    CHECK(mn_sampler_sample(NULL, (const float[1]){0}) == MN_EINVAL, "NULL sampler");
    mn_sampler_accept(NULL, 0);
    mn_sampler_reset(NULL);
    mn_sampler_free(s);
}

static void test_vocab_one(void) {
    const float one[1] = {-3.0f};
    mn_sampler_params p = mn_sampler_default_params();
    p.repeat_penalty = 1.5f;
    mn_sampler *s = make(&p, 1);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        if (mn_sampler_sample(s, one) != 0) ok = 0;
        mn_sampler_accept(s, 0);
    }
    CHECK(ok, "n_vocab 1 with defaults + penalty -> 0");
    mn_sampler_free(s);
    p = plain(0.0f);
    s = make(&p, 1);
    CHECK(mn_sampler_sample(s, one) == 0, "n_vocab 1 greedy");
    const float ninf[1] = {-INFINITY};
    CHECK(mn_sampler_sample(s, ninf) == MN_EINVAL, "n_vocab 1, -inf -> error");
    mn_sampler_free(s);
}

static void test_infinities(void) {
    enum { N = 6 };
    const float l[N] = {-INFINITY, 1.0f, -INFINITY, 0.5f, -INFINITY, -INFINITY};
    long counts[N];
    mn_sampler_params p = plain(1.0f);
    p.seed = 8;
    mn_sampler *s = make(&p, N);
    const long draws = 40000;
    draw_counts(s, l, N, draws, counts);
    CHECK(counts[1] + counts[3] == draws, "-inf tokens never chosen");
    double prob[N] = {0};
    prob[1] = 1.0 / (1.0 + exp(-0.5)), prob[3] = 1.0 - prob[1];
    int df;
    double st = chi2_stat(counts, prob, N, draws, &df);
    CHECK(df == 1 && st < chi2_bound(1), "finite tokens keep softmax weights: chi2 %.2f", st);
    mn_sampler_free(s);

    /* all truncation stages with -inf present, and one finite token */
    mn_sampler_params q = mn_sampler_default_params();
    q.top_k = 3;
    s = make(&q, N);
    const float single[N] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, 7.0f, -INFINITY};
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= mn_sampler_sample(s, single) == 4;
    CHECK(ok, "only finite token always chosen");
    const float allinf[N] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(mn_sampler_sample(s, allinf) == MN_EINVAL, "all -inf -> MN_EINVAL");
    CHECK(strstr(mn_last_error(), "-inf") != NULL, "message: %s", mn_last_error());
    mn_sampler_free(s);

    /* greedy with -inf first */
    p = plain(0.0f);
    s = make(&p, N);
    CHECK(mn_sampler_sample(s, l) == 1, "greedy skips -inf");
    /* +inf: only the +inf tokens, equally likely, greedy -> lowest */
    const float pinf[N] = {1.0f, INFINITY, 2.0f, INFINITY, -INFINITY, NAN};
    CHECK(mn_sampler_sample(s, pinf) == 1, "greedy with +inf -> first +inf");
    mn_sampler_free(s);
    p = plain(1.0f);
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    s = make(&p, N);
    draw_counts(s, pinf, N, 4000, counts);
    CHECK(counts[1] + counts[3] == 4000 && counts[1] > 1500 && counts[3] > 1500,
          "+inf tokens share the draws (%ld / %ld)", counts[1], counts[3]);
    mn_sampler_free(s);
}

static void test_nan(void) {
    enum { N = 8 };
    const float l[N] = {NAN, 0.3f, NAN, 1.0f, -0.5f, NAN, 0.9f, NAN};
    long counts[N];
    mn_sampler_params p = plain(0.0f);
    mn_sampler *s = make(&p, N);
    CHECK(mn_sampler_sample(s, l) == 3, "greedy ignores NaN (even at index 0)");
    mn_sampler_free(s);

    const float temps[] = {1.0f, 50.0f};
    for (int ti = 0; ti < 2; ti++) {
        mn_sampler_params q = mn_sampler_default_params();
        q.temperature = temps[ti];
        q.min_p = 0.0f;
        q.top_p = ti ? 0.99f : 1.0f;
        q.top_k = ti ? 0 : 6;
        s = make(&q, N);
        draw_counts(s, l, N, 20000, counts);
        CHECK(counts[0] + counts[2] + counts[5] + counts[7] == 0, "NaN never chosen (T=%g)",
              (double)temps[ti]);
        CHECK(counts[1] && counts[3] && counts[4] && counts[6], "all finite tokens reachable");
        mn_sampler_free(s);
    }
    const float allnan[3] = {NAN, NAN, NAN};
    s = make(NULL, 3);
    CHECK(mn_sampler_sample(s, allnan) == MN_EINVAL, "all NaN -> MN_EINVAL");
    CHECK(strstr(mn_last_error(), "NaN") != NULL, "message: %s", mn_last_error());
    mn_sampler_free(s);
}

static void test_logits_unmodified_and_speed(void) {
    enum { N = 49152 };
    float *l = malloc(N * sizeof *l), *copy = malloc(N * sizeof *l);
    for (int i = 0; i < N; i++) l[i] = (float)(t_normal() * 3.0);
    l[5] = NAN;
    l[6] = -INFINITY;
    memcpy(copy, l, N * sizeof *l);
    mn_sampler_params p = mn_sampler_default_params();
    p.repeat_penalty = 1.1f;
    mn_sampler *s = make(&p, N);
    for (int i = 0; i < 100; i++) mn_sampler_accept(s, (int32_t)(i * 97 % N));
    const int reps = 200;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ok = 1;
    for (int i = 0; i < reps; i++) {
        int32_t t = mn_sampler_sample(s, l);
        ok &= t >= 0 && t < N && t != 5 && t != 6;
        mn_sampler_accept(s, t);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(ok, "valid picks on 49152 tokens");
    CHECK(memcmp(l, copy, N * sizeof *l) == 0, "logits not modified");
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / reps;
    printf("sampler: %.1f us/token at n_vocab %d (default chain + penalty)\n", us, N);

    /* top_k off, top_p on: the threshold path */
    mn_sampler_free(s);
    p.top_k = 0;
    s = make(&p, N);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < reps; i++) ok &= mn_sampler_sample(s, l) >= 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / reps;
    printf("sampler: %.1f us/token at n_vocab %d (top_k off, top_p 0.95)\n", us, N);
    CHECK(ok, "top_p-only path valid");
    mn_sampler_free(s);
    free(l);
    free(copy);
}

int main(void) {
    test_defaults();
    test_greedy();
    test_top_k1_is_greedy();
    test_softmax_frequencies();
    test_top_k3();
    test_top_p();
    test_top_p_large_vocab();
    test_nucleus_exact();
    test_min_p();
    test_default_chain();
    test_repeat_penalty();
    test_seeds();
    test_invalid();
    test_vocab_one();
    test_infinities();
    test_nan();
    test_logits_unmodified_and_speed();
    TEST_MAIN_END();
}
