/* test_optim.c - the trainer's RNG and AdamW: one step against a double
 * reference written here from the formulas (with and without decay, clipping
 * engaged or not), schedule values, non-finite gradients refused with nothing
 * changed, thread-count independence, and convergence on a small quadratic. */
#include <stdint.h>

#include "core/threadpool.h"
#include "mnemo.h"
#include "test.h"
#include "train/optim.h"
#include "train/rng.h"

static void test_rng(void) {
    mn_rng a, b;
    mn_rng_seed(&a, 42);
    mn_rng_seed(&b, 42);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= mn_rng_next(&a) == mn_rng_next(&b);
    CHECK(same, "same seed, same stream");
    mn_rng_seed(&b, 43);
    CHECK(mn_rng_next(&a) != mn_rng_next(&b), "another seed, another stream");
    /* saving the state mid-stream and continuing from the copy gives the same numbers */
    mn_rng c = a;
    CHECK(mn_rng_next(&a) == mn_rng_next(&c) && mn_rng_uniform(&a) == mn_rng_uniform(&c), "state is plain data");

    /* uniform in [0,1), mean 1/2; below(n) in range with flat counts; normal mean 0 var 1 */
    mn_rng_seed(&a, 7);
    double s = 0, mn = 1, mx = 0;
    enum { N = 200000 };
    for (int i = 0; i < N; i++) {
        double u = mn_rng_uniform(&a);
        s += u;
        if (u < mn) mn = u;
        if (u > mx) mx = u;
    }
    CHECK(mn >= 0 && mx < 1 && fabs(s / N - 0.5) < 0.005, "uniform: min %g max %g mean %g", mn, mx, s / N);
    long cnt[7] = {0};
    int bad = 0;
    for (int i = 0; i < 70000; i++) {
        uint64_t k = mn_rng_below(&a, 7);
        if (k >= 7) bad++;
        else cnt[k]++;
    }
    int flat = 1;
    for (int k = 0; k < 7; k++) flat &= labs(cnt[k] - 10000) < 500;
    CHECK(!bad && flat, "below(7): %d out of range, counts %ld %ld %ld %ld %ld %ld %ld", bad, cnt[0], cnt[1], cnt[2],
          cnt[3], cnt[4], cnt[5], cnt[6]);
    /* a huge n where naive modulo would be visibly biased: 2^63 + 2^62 -> the top third */
    uint64_t big = (1ull << 63) + (1ull << 62);
    long top = 0;
    for (int i = 0; i < 30000; i++) top += mn_rng_below(&a, big) >= (big / 3) * 2;
    CHECK(labs(top - 10000) < 400, "below(3*2^62): %ld of 30000 in the top third (modulo would give ~5000)", top);
    CHECK(mn_rng_below(&a, 1) == 0, "below(1)");
    double s1 = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        double x = mn_rng_normal(&a);
        s1 += x, s2 += x * x;
    }
    CHECK(fabs(s1 / N) < 0.01 && fabs(s2 / N - 1) < 0.015, "normal: mean %g var %g", s1 / N, s2 / N);
}

/* ------------------------------------------------------------ reference */
typedef struct {
    double *p, *m, *v;
    const float *g;
    int n, decay;
} ref_t;

static void ref_step(ref_t *t, int nt, const mn_adamw_params *hp, int64_t step, double lr, double *norm_out) {
    double ss = 0;
    for (int k = 0; k < nt; k++)
        for (int i = 0; i < t[k].n; i++) ss += (double)t[k].g[i] * t[k].g[i];
    double norm = sqrt(ss), c = 1;
    if (hp->clip_norm > 0 && norm > hp->clip_norm) c = hp->clip_norm / norm;
    *norm_out = norm;
    double b1 = hp->beta1, b2 = hp->beta2, T = (double)(step + 1);
    for (int k = 0; k < nt; k++)
        for (int i = 0; i < t[k].n; i++) {
            double g = t[k].g[i] * c;
            t[k].m[i] = b1 * t[k].m[i] + (1 - b1) * g;
            t[k].v[i] = b2 * t[k].v[i] + (1 - b2) * g * g;
            double mh = t[k].m[i] / (1 - pow(b1, T)), vh = t[k].v[i] / (1 - pow(b2, T));
            if (t[k].decay) t[k].p[i] -= lr * hp->weight_decay * t[k].p[i];
            t[k].p[i] -= lr * mh / (sqrt(vh) + hp->eps);
        }
}

/* Three tensors (one without decay), two steps, against the reference. */
static void test_step_vs_reference(float clip, float gscale, const char *what) {
    enum { NT = 3 };
    static const int sizes[NT] = {5, 40000, 17}; /* the middle one spans 3 blocks */
    float *p[NT], *g[NT];
    ref_t r[NT];
    mn_rng rng;
    mn_rng_seed(&rng, 99);
    mn_adamw_params hp = mn_adamw_default_params();
    hp.lr = 1e-2f, hp.weight_decay = 0.1f, hp.clip_norm = clip, hp.warmup = 0, hp.total = 100;
    mn_adamw *o = NULL;
    CHECK(mn_adamw_create(&hp, &o) == 0, "create: %s", mn_last_error());
    if (!o) return;
    for (int k = 0; k < NT; k++) {
        p[k] = malloc(sizeof(float) * sizes[k]);
        g[k] = malloc(sizeof(float) * sizes[k]);
        r[k].p = malloc(sizeof(double) * sizes[k]);
        r[k].m = calloc(sizes[k], sizeof(double));
        r[k].v = calloc(sizes[k], sizeof(double));
        r[k].g = g[k], r[k].n = sizes[k], r[k].decay = k != 1;
        for (int i = 0; i < sizes[k]; i++) r[k].p[i] = p[k][i] = (float)mn_rng_normal(&rng);
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", k);
        CHECK(mn_adamw_add(o, nm, p[k], g[k], sizes[k], k != 1) == 0, "add: %s", mn_last_error());
    }
    double max_err = 0, dm = 0, dv = 0, am = 0, av = 0;
    for (int step = 0; step < 2; step++) {
        for (int k = 0; k < NT; k++)
            for (int i = 0; i < sizes[k]; i++) g[k][i] = (float)(mn_rng_normal(&rng) * gscale);
        double rn;
        ref_step(r, NT, &hp, step, mn_adamw_lr_at(o, step), &rn);
        float gn = -1;
        CHECK(mn_adamw_step(o, &gn) == 0, "%s step: %s", what, mn_last_error());
        CHECK_NEAR(gn, rn, 1e-5 * rn, "grad norm");
        if (clip > 0) CHECK(gscale > 0.01 ? rn > clip : rn < clip, "%s: clipping %s engaged (norm %g)", what,
                            gscale > 0.01 ? "is" : "is not", rn);
        for (int k = 0; k < NT; k++) {
            float *m, *v;
            mn_adamw_tensor(o, k, NULL, NULL, NULL, &m, &v);
            for (int i = 0; i < sizes[k]; i++) {
                double e = fabs(p[k][i] - r[k].p[i]);
                if (e > max_err) max_err = e;
                /* moments relative to their largest value (single ones can cancel to ~0) */
                dm = fmax(dm, fabs(m[i] - r[k].m[i])), am = fmax(am, fabs(r[k].m[i]));
                dv = fmax(dv, fabs(v[i] - r[k].v[i])), av = fmax(av, fabs(r[k].v[i]));
            }
        }
    }
    /* an update moves p by ~lr = 1e-2; float rounding of p (~1e-7 relative) dominates */
    CHECK(max_err < 2e-6, "%s: params differ from the double reference by %g", what, max_err);
    CHECK(dm < 1e-6 * am && dv < 1e-6 * av, "%s: moments differ from the reference by %g / %g (of %g / %g)", what,
          dm, dv, am, av);
    CHECK(mn_adamw_steps(o) == 2, "steps");
    mn_adamw_free(o);
    for (int k = 0; k < NT; k++) free(p[k]), free(g[k]), free(r[k].p), free(r[k].m), free(r[k].v);
}

static void test_schedule(void) {
    mn_adamw_params hp = mn_adamw_default_params();
    CHECK(hp.lr == 1e-4f && hp.beta1 == 0.9f && hp.beta2 == 0.999f && hp.eps == 1e-8f && hp.weight_decay == 0.01f &&
              hp.clip_norm == 1.0f && hp.warmup == 0 && hp.total == 1 && hp.min_lr_ratio == 0.1f,
          "defaults");
    hp.lr = 1.0f, hp.warmup = 10, hp.total = 110, hp.min_lr_ratio = 0.1f;
    mn_adamw *o = NULL;
    mn_adamw_create(&hp, &o);
    if (!o) return;
    CHECK_NEAR(mn_adamw_lr_at(o, 0), 0.1, 1e-7, "warmup step 0");
    CHECK_NEAR(mn_adamw_lr_at(o, 4), 0.5, 1e-7, "warmup step 4");
    CHECK_NEAR(mn_adamw_lr_at(o, 9), 1.0, 1e-7, "warmup step 9");
    CHECK_NEAR(mn_adamw_lr_at(o, 10), 1.0, 1e-7, "cosine start");
    CHECK_NEAR(mn_adamw_lr_at(o, 60), 0.55, 1e-6, "cosine midpoint = (1 + 0.1) / 2");
    CHECK_NEAR(mn_adamw_lr_at(o, 35), 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.25)), 1e-6, "cosine quarter");
    CHECK_NEAR(mn_adamw_lr_at(o, 110), 0.1, 1e-7, "end");
    CHECK_NEAR(mn_adamw_lr_at(o, 5000), 0.1, 1e-7, "after the end");
    int mono = 1;
    for (int s = 10; s < 120; s++) mono &= mn_adamw_lr_at(o, s + 1) <= mn_adamw_lr_at(o, s);
    CHECK(mono, "decay is monotone");
    mn_adamw_free(o);

    /* bad parameters are refused by name */
    mn_adamw_params bad = mn_adamw_default_params();
    bad.beta2 = 1.0f;
    o = (mn_adamw *)&o;
    CHECK(mn_adamw_create(&bad, &o) == MN_EINVAL && !o && strstr(mn_last_error(), "beta2"), "beta2 1: %s",
          mn_last_error());
    bad = mn_adamw_default_params(), bad.eps = 0;
    CHECK(mn_adamw_create(&bad, &o) == MN_EINVAL && strstr(mn_last_error(), "eps"), "eps 0");
    bad = mn_adamw_default_params(), bad.lr = NAN;
    CHECK(mn_adamw_create(&bad, &o) == MN_EINVAL && strstr(mn_last_error(), "lr"), "lr nan");
}

static void test_nonfinite_and_registration(void) {
    mn_adamw_params hp = mn_adamw_default_params();
    hp.lr = 0.1f, hp.total = 10;
    mn_adamw *o = NULL;
    mn_adamw_create(&hp, &o);
    if (!o) return;
    float p1[4] = {1, 2, 3, 4}, g1[4] = {0.1f, 0.2f, 0.3f, 0.4f}, p2[3] = {5, 6, 7}, g2[3] = {1, 1, 1};
    CHECK(mn_adamw_step(o, NULL) == MN_EINVAL, "step with no tensors");
    CHECK(mn_adamw_add(o, "a", p1, g1, 4, 1) == 0 && mn_adamw_add(o, "b", p2, g2, 3, 0) == 0, "add");
    CHECK(mn_adamw_add(o, "a", p2, g2, 3, 0) == MN_EINVAL && strstr(mn_last_error(), "duplicate"), "dup name");
    CHECK(mn_adamw_add(o, "c", p2, p2, 3, 0) == MN_EINVAL, "param == grad");
    CHECK(mn_adamw_add(o, "d", p2, g2, 0, 0) == MN_EINVAL, "n = 0");
    CHECK(mn_adamw_n_tensors(o) == 2 && mn_adamw_find(o, "b") == 1 && mn_adamw_find(o, "z") == -1, "lookup");
    CHECK(mn_adamw_step(o, NULL) == 0, "first step");
    float q1[4], q2[3], m1[4], v1[4];
    float *m, *v;
    mn_adamw_tensor(o, 0, NULL, NULL, NULL, &m, &v);
    memcpy(q1, p1, sizeof p1), memcpy(q2, p2, sizeof p2), memcpy(m1, m, sizeof m1), memcpy(v1, v, sizeof v1);
    static const float poison[3] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        g2[2] = poison[k];
        float gn = 0;
        int rc = mn_adamw_step(o, &gn);
        CHECK(rc == MN_ERANGE, "poison %d: rc %d", k, rc);
        CHECK(strstr(mn_last_error(), "'b' at 2") != NULL, "message names the tensor: %s", mn_last_error());
        CHECK(!isfinite(gn), "gnorm reports the non-finite norm");
        CHECK(!memcmp(q1, p1, sizeof p1) && !memcmp(q2, p2, sizeof p2) && !memcmp(m1, m, sizeof m1) &&
                  !memcmp(v1, v, sizeof v1) && mn_adamw_steps(o) == 1,
              "poison %d changed the state", k);
    }
    g2[2] = 1;
    mn_adamw_zero_grad(o);
    CHECK(g1[0] == 0 && g2[2] == 0, "zero_grad");
    mn_adamw_set_steps(o, 7);
    CHECK(mn_adamw_steps(o) == 7, "set_steps");
    mn_adamw_free(o);
}

/* f(x) = sum_i a_i (x_i - c_i)^2 with condition number 100: AdamW with
 * warmup + cosine gets within 1e-3 of the optimum. */
static void test_quadratic(void) {
    enum { N = 50 };
    float x[N], g[N], a[N], c[N];
    mn_rng r;
    mn_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) a[i] = (float)pow(100.0, (double)i / (N - 1)), c[i] = (float)mn_rng_normal(&r), x[i] = 0;
    mn_adamw_params hp = mn_adamw_default_params();
    hp.lr = 0.05f, hp.weight_decay = 0, hp.clip_norm = 10, hp.warmup = 20, hp.total = 1500, hp.min_lr_ratio = 0.01f;
    mn_adamw *o = NULL;
    mn_adamw_create(&hp, &o);
    if (!o) return;
    mn_adamw_add(o, "x", x, g, N, 1);
    double f0 = 0;
    for (int i = 0; i < N; i++) f0 += a[i] * (double)c[i] * c[i];
    int ok = 1;
    for (int s = 0; s < 1500 && ok; s++) {
        for (int i = 0; i < N; i++) g[i] = 2 * a[i] * (x[i] - c[i]);
        ok = mn_adamw_step(o, NULL) == 0;
    }
    double f = 0, maxd = 0;
    for (int i = 0; i < N; i++) {
        f += a[i] * (double)(x[i] - c[i]) * (x[i] - c[i]);
        if (fabs(x[i] - c[i]) > maxd) maxd = fabs(x[i] - c[i]);
    }
    CHECK(ok && maxd < 1e-3 && f < 1e-6 * f0, "quadratic: f %g (from %g), max |x - c| %g", f, f0, maxd);
    mn_adamw_free(o);
}

/* The same step on 1 thread and on a pool: bitwise equal params and norm. */
static void test_threads(void) {
    enum { N = 100003 };
    float *p1 = malloc(sizeof(float) * N), *p2 = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N);
    mn_rng r;
    mn_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) p1[i] = p2[i] = (float)mn_rng_normal(&r), g[i] = (float)mn_rng_normal(&r);
    mn_adamw_params hp = mn_adamw_default_params();
    hp.total = 10;
    mn_adamw *o1 = NULL, *o2 = NULL;
    mn_threadpool *pool = NULL;
    mn_adamw_create(&hp, &o1);
    mn_adamw_create(&hp, &o2);
    CHECK(mn_threadpool_create(3, &pool) == 0, "pool");
    if (o1 && o2 && pool) {
        mn_adamw_set_pool(o2, pool);
        mn_adamw_add(o1, "w", p1, g, N, 1);
        mn_adamw_add(o2, "w", p2, g, N, 1);
        float n1, n2;
        for (int s = 0; s < 3; s++) {
            mn_adamw_step(o1, &n1);
            mn_adamw_step(o2, &n2);
        }
        CHECK(n1 == n2 && !memcmp(p1, p2, sizeof(float) * N), "thread count changed the result");
    }
    mn_threadpool_free(pool);
    mn_adamw_free(o1);
    mn_adamw_free(o2);
    free(p1), free(p2), free(g);
}

int main(void) {
    test_rng();
    test_step_vs_reference(0.0f, 1.0f, "no clip");
    test_step_vs_reference(1.0f, 1.0f, "clipped");
    test_step_vs_reference(1.0f, 0.001f, "clip not engaged");
    test_schedule();
    test_nonfinite_and_registration();
    test_quadratic();
    test_threads();
    TEST_MAIN_END();
}
