/* sampler.c - token sampling chain (see sampler.h for the semantics).
 *
 * Per call: copy the logits into the sampler's buffer, find the max (and
 * whether any NaN is present, in which case NaN -> -inf), apply the
 * repetition penalty to the copy (and re-take the max), then work on a
 * compact candidate array holding only the tokens with a finite (or, if
 * present, +inf) logit:
 *
 *   top_k   bounded heap of the k best while scanning the logits, then a
 *           heapsort of those k: O(V log k), never a sort of the vocabulary.
 *           top_p and min_p then just cut the sorted prefix.
 *   top_p / min_p without top_k: weights w = exp(logit - max) and their sum
 *           over all candidates (the normalization top_p sees). Both filters
 *           keep a prefix of the (logit desc, id asc) order, so the result is
 *           the shorter prefix: first drop every token with w < min_p, and
 *           every token with p < (1 - top_p) / n, which can never be inside
 *           the nucleus (if such a token were, every token after it would be
 *           no more likely and all of them together would hold < 1 - top_p,
 *           so the mass before it would already exceed top_p). On the few
 *           survivors a quickselect finds the nucleus in O(n) expected time
 *           without sorting it (select_nucleus).
 *   temp    weights exp((logit - max) / T), then one uniform draw.
 *
 * Every buffer is allocated in mn_sampler_create; sampling never allocates
 * (in particular no qsort, which may allocate in glibc).
 */
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    float logit; /* penalized logit */
    float w;     /* weight exp(logit - max) at the stage that needs it */
    int32_t id;
} mn_cand;

struct mn_sampler {
    mn_sampler_params p;
    int32_t n_vocab;
    float *logits;   /* [n_vocab] working copy of the caller's logits */
    mn_cand *cand;   /* [n_vocab] candidate tokens */
    uint32_t *stamp; /* [n_vocab] de-duplication marks for the penalty (or NULL) */
    uint32_t gen;    /* current stamp generation */
    int32_t *hist;   /* [hist_cap] ring buffer of accepted tokens (or NULL) */
    int32_t hist_cap, hist_len, hist_pos;
    uint64_t rng[4]; /* xoshiro256** state */
};

/* ---- PRNG: xoshiro256** (Blackman & Vigna), seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }

static uint64_t rng_next(uint64_t st[4]) {
    const uint64_t result = rotl64(st[1] * 5, 7) * 9;
    const uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return result;
}

static void rng_seed(uint64_t st[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) st[i] = splitmix64(&x);
    /* splitmix64 is a bijection of distinct counters, so the four words cannot
     * all be zero; the state is therefore always valid for xoshiro. */
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t st[4]) { return (double)(rng_next(st) >> 11) * 0x1p-53; }

/* ---- candidate ordering and heap helpers ---- */

/* Strict total order: higher logit first, then lower id. */
static inline int cand_better(const mn_cand *a, const mn_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Heap whose root is the WORST element (every parent is worse than its children). */
static void heap_sift_down(mn_cand *h, size_t n, size_t i) {
    mn_cand x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_better(&h[c], &h[c + 1])) c++; /* the worse child */
        if (!cand_better(&x, &h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void heap_build(mn_cand *h, size_t n) {
    for (size_t i = n / 2; i-- > 0;) heap_sift_down(h, n, i);
}

/* Turns a worst-root heap into an array sorted best-first. */
static void heap_sort_best_first(mn_cand *h, size_t n) {
    for (size_t end = n; end > 1; end--) {
        mn_cand t = h[0];
        h[0] = h[end - 1];
        h[end - 1] = t;
        heap_sift_down(h, end - 1, 0);
    }
}

/* Keeps the k best tokens of L[0..nv) that are not -inf in c[0..k), sorted
 * best-first; returns how many (fewer than k when fewer are finite). Scanning
 * in id order means a later token that ties the heap's worst logit is worse
 * (higher id), so a strict `>` against the worst logit is the whole test. */
static size_t select_top_k(mn_cand *c, const float *L, int32_t nv, size_t k) {
    size_t h = 0;
    int32_t i = 0;
    for (; i < nv && h < k; i++)
        if (L[i] != -INFINITY) c[h++] = (mn_cand){L[i], 0.0f, i};
    heap_build(c, h);
    if (h == k) {
        float worst = c[0].logit;
        for (; i < nv; i++) {
            if (L[i] > worst) {
                c[0] = (mn_cand){L[i], 0.0f, i};
                heap_sift_down(c, k, 0);
                worst = c[0].logit;
            }
        }
    }
    heap_sort_best_first(c, h);
    return h;
}

static inline void cand_swap(mn_cand *a, mn_cand *b) {
    mn_cand t = *a;
    *a = *b;
    *b = t;
}

/* Nucleus of the unsorted c[0..n): rearranges c so that c[0..m) holds the m
 * best candidates, m the smallest count whose weights (c[].w) sum to at least
 * `target` (n if none does), and returns m. Quickselect on the (logit, id)
 * order, descending only into the side that holds the cut: O(n) expected; a
 * depth limit switches to heapsort of the remaining range, so O(n log n) worst. */
static size_t select_nucleus(mn_cand *c, size_t n, double target) {
    size_t lo = 0, hi = n; /* c[0..lo) is in, c[hi..n) is out */
    double need = target;
    int depth = 0;
    for (size_t m = n; m > 1; m >>= 1) depth += 2;
    while (lo < hi) {
        if (hi - lo <= 16 || depth-- <= 0) {
            heap_build(c + lo, hi - lo);
            heap_sort_best_first(c + lo, hi - lo);
            double cum = 0.0;
            for (size_t i = lo; i < hi; i++) {
                cum += c[i].w;
                if (cum >= need) return i + 1;
            }
            return hi;
        }
        /* median of three as the pivot, parked at hi - 1 */
        size_t mid = lo + (hi - lo) / 2;
        mn_cand *a = &c[lo], *b = &c[mid], *z = &c[hi - 1];
        if (cand_better(a, b)) cand_swap(a, b); /* now b >= a */
        if (cand_better(b, z)) cand_swap(b, z); /* now z is the best of three */
        if (cand_better(a, b)) cand_swap(a, b); /* b is the median */
        cand_swap(b, z);
        const mn_cand pv = c[hi - 1];
        size_t st = lo;
        double mass = 0.0;
        for (size_t i = lo; i + 1 < hi; i++) {
            if (cand_better(&c[i], &pv)) {
                mass += c[i].w;
                cand_swap(&c[i], &c[st++]);
            }
        }
        cand_swap(&c[st], &c[hi - 1]); /* pivot at st; c[lo..st) beat it */
        if (st > lo && mass >= need) {
            hi = st;
        } else {
            need -= mass;
            if (pv.w >= need) return st + 1;
            need -= pv.w;
            lo = st + 1;
        }
    }
    return lo;
}

/* ---- public API ---- */

mn_sampler_params mn_sampler_default_params(void) {
    mn_sampler_params p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

static int validate(const mn_sampler_params *p) {
    if (!isfinite(p->temperature))
        return mn_error(MN_EINVAL, "sampler: temperature must be finite (got %g)",
                        (double)p->temperature);
    if (isnan(p->top_p) || p->top_p < 0.0f)
        return mn_error(MN_EINVAL, "sampler: top_p must be >= 0 (>= 1 disables it), got %g",
                        (double)p->top_p);
    if (isnan(p->min_p) || p->min_p > 1.0f)
        return mn_error(MN_EINVAL, "sampler: min_p must be <= 1 (<= 0 disables it), got %g",
                        (double)p->min_p);
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
        return mn_error(MN_EINVAL,
                        "sampler: repeat_penalty must be finite and > 0 (1 disables it), got %g",
                        (double)p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return mn_error(MN_EINVAL, "sampler: repeat_last_n must be >= 0 (0 disables it), got %d",
                        (int)p->repeat_last_n);
    return 0;
}

int mn_sampler_create(const mn_sampler_params *p, int32_t n_vocab, mn_sampler **out) {
    if (!out) return mn_error(MN_EINVAL, "sampler: out is NULL");
    *out = NULL;
    mn_sampler_params prm = p ? *p : mn_sampler_default_params();
    if (n_vocab <= 0) return mn_error(MN_EINVAL, "sampler: n_vocab must be > 0 (got %d)", (int)n_vocab);
    int rc = validate(&prm);
    if (rc) return rc;

    mn_sampler *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "sampler: out of memory");
    s->p = prm;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->logits = malloc(n * sizeof *s->logits);
    s->cand = malloc(n * sizeof *s->cand);
    int penalize = prm.repeat_penalty != 1.0f && prm.repeat_last_n > 0;
    if (penalize) {
        s->stamp = calloc(n, sizeof *s->stamp);
        s->hist_cap = prm.repeat_last_n;
        s->hist = malloc((size_t)s->hist_cap * sizeof *s->hist);
    }
    if (!s->logits || !s->cand || (penalize && (!s->stamp || !s->hist))) {
        mn_sampler_free(s);
        return mn_error(MN_ENOMEM, "sampler: out of memory (n_vocab %d, repeat_last_n %d)",
                        (int)n_vocab, (int)prm.repeat_last_n);
    }
    mn_sampler_reset(s);
    *out = s;
    return 0;
}

void mn_sampler_free(mn_sampler *s) {
    if (!s) return;
    free(s->logits);
    free(s->cand);
    free(s->stamp);
    free(s->hist);
    free(s);
}

void mn_sampler_reset(mn_sampler *s) {
    if (!s) return;
    s->hist_len = 0;
    s->hist_pos = 0;
    rng_seed(s->rng, s->p.seed);
}

void mn_sampler_accept(mn_sampler *s, int32_t token) {
    if (!s || !s->hist || token < 0 || token >= s->n_vocab) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = s->hist_pos + 1 == s->hist_cap ? 0 : s->hist_pos + 1;
    if (s->hist_len < s->hist_cap) s->hist_len++;
}

/* Penalizes once each distinct token of the history window (llama.cpp's
 * penalty_repeat: the count of occurrences does not matter). Returns whether
 * anything was penalized. */
static int apply_penalty(mn_sampler *s) {
    if (!s->hist || s->hist_len == 0) return 0;
    if (++s->gen == 0) {
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->gen = 1;
    }
    const float pen = s->p.repeat_penalty;
    for (int32_t i = 0; i < s->hist_len; i++) {
        int32_t t = s->hist[i];
        if (s->stamp[t] == s->gen) continue;
        s->stamp[t] = s->gen;
        float l = s->logits[t];
        s->logits[t] = l > 0.0f ? l / pen : l * pen;
    }
    return 1;
}

/* Max of L[0..n), NaN ignored; *nan tells whether any NaN was seen.
 * Independent accumulators so that the loop is not one long dependency
 * chain of compares (and the compiler can vectorize it). */
static float max_of(const float *L, size_t n, int *nan) {
    float m[8];
    int bad[8];
    for (int j = 0; j < 8; j++) m[j] = -INFINITY, bad[j] = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            float v = L[i + j];
            m[j] = v > m[j] ? v : m[j];
            bad[j] |= v != v;
        }
    }
    for (; i < n; i++) {
        m[0] = L[i] > m[0] ? L[i] : m[0];
        bad[0] |= L[i] != L[i];
    }
    float r = m[0];
    int b = bad[0];
    for (int j = 1; j < 8; j++) r = m[j] > r ? m[j] : r, b |= bad[j];
    *nan = b;
    return r;
}

/* exp(d) for d <= 0, skipping the call where the float result is 0 anyway. */
static inline float weight(float d) { return d < -104.0f ? 0.0f : expf(d); }

int32_t mn_sampler_sample(mn_sampler *s, const float *logits) {
    if (!s || !logits) return mn_error(MN_EINVAL, "sampler: NULL sampler or logits");
    const int32_t nv = s->n_vocab;
    const mn_sampler_params *p = &s->p;
    float *L = s->logits;

    memcpy(L, logits, (size_t)nv * sizeof *L);
    int has_nan;
    float mx = max_of(L, (size_t)nv, &has_nan);
    if (has_nan)
        for (int32_t i = 0; i < nv; i++) L[i] = L[i] == L[i] ? L[i] : -INFINITY; /* NaN -> -inf */
    if (apply_penalty(s)) mx = max_of(L, (size_t)nv, &has_nan);
    if (mx == -INFINITY)
        return mn_error(MN_EINVAL, "sampler: no samplable token (all %d logits are NaN or -inf)",
                        (int)nv);
    if (p->temperature <= 0.0f) { /* greedy: lowest id holding the max */
        int32_t i = 0;
        while (L[i] != mx) i++;
        return i;
    }
    if (mx == INFINITY) { /* only the +inf tokens remain, with equal weight */
        for (int32_t i = 0; i < nv; i++) L[i] = L[i] == INFINITY ? 0.0f : -INFINITY;
        mx = 0.0f;
    }

    mn_cand *c = s->cand;
    size_t n = 0;
    const int truncate = p->top_p < 1.0f || p->min_p > 0.0f;
    int have_w = 0; /* c[0..n).w hold the temperature-1 weights */

    if (p->top_k > 0 && p->top_k < nv) {
        /* top_k: sorted best-first, so top_p and min_p are prefix cuts */
        n = select_top_k(c, L, nv, (size_t)p->top_k);
        if (truncate) {
            double sum = 0.0;
            for (size_t i = 0; i < n; i++) sum += c[i].w = weight(c[i].logit - mx);
            if (p->top_p < 1.0f) {
                double cum = 0.0, target = (double)p->top_p * sum;
                for (size_t i = 0; i < n; i++) {
                    cum += c[i].w;
                    if (cum >= target) {
                        n = i + 1;
                        break;
                    }
                }
            }
            if (p->min_p > 0.0f) { /* p >= min_p * p_max  <=>  w >= min_p (w_max = 1) */
                size_t m = 1;
                while (m < n && c[m].w >= p->min_p) m++;
                n = m;
            }
            have_w = 1;
        }
    } else {
        for (int32_t i = 0; i < nv; i++)
            if (L[i] != -INFINITY) c[n++] = (mn_cand){L[i], 0.0f, i};
        if (truncate) {
            double sum = 0.0;
            for (size_t i = 0; i < n; i++) sum += c[i].w = weight(c[i].logit - mx);
            /* Both cuts keep a prefix of the (logit desc, id asc) order, so the
             * final set is the shorter prefix: drop the min_p losers first (the
             * top_p target stays relative to the full sum), plus tokens below
             * (1 - top_p) / n of the mass, which cannot be in the nucleus (see
             * the file comment; the 0.999 slack only keeps more). */
            float thr = p->min_p > 0.0f ? p->min_p : 0.0f;
            if (p->top_p < 1.0f) {
                float tp = (float)((1.0 - (double)p->top_p) / (double)n * sum * 0.999);
                if (tp > thr) thr = tp;
            }
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (c[i].w >= thr) c[m++] = c[i];
            n = m; /* the max token (w = 1) always survives */
            if (p->top_p < 1.0f && n > 1) n = select_nucleus(c, n, (double)p->top_p * sum);
            have_w = 1;
        }
    }

    /* temperature, softmax, draw */
    double sum = 0.0;
    if (have_w && p->temperature == 1.0f) {
        for (size_t i = 0; i < n; i++) sum += c[i].w;
    } else {
        const float inv_t = 1.0f / p->temperature;
        for (size_t i = 0; i < n; i++) {
            float d = c[i].logit - mx; /* <= 0; 0 keeps weight 1 even if inv_t is inf */
            sum += c[i].w = d == 0.0f ? 1.0f : weight(d * inv_t);
        }
    }
    double target = rng_uniform(s->rng) * sum, cum = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].w <= 0.0f) continue;
        cum += c[i].w;
        last = i;
        if (cum > target) return c[i].id;
    }
    return c[last].id; /* rounding left the target at the very end */
}
