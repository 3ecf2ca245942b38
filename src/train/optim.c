/* optim.c - AdamW (see optim.h for the update and schedule formulas).
 *
 * Work is cut into blocks of at most MN_ADAMW_BLOCK floats of one tensor,
 * listed once at registration. Both passes of a step (norm, update) hand
 * contiguous ranges of blocks to the threads; the norm pass writes one double
 * per block and the caller adds them in block order, which is what keeps the
 * norm independent of the thread count.
 */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct {
    char name[128];
    float *p, *g; /* caller's [n] */
    float *m, *v; /* ours [n] */
    int64_t n;
    int decay;
} ad_tensor;

typedef struct {
    int t;         /* tensor index */
    int64_t lo, hi;
} ad_block;

struct mn_adamw {
    mn_adamw_params hp;
    int64_t steps;
    ad_tensor *t;
    int n_t, cap_t;
    ad_block *blk;
    double *part; /* [n_blk] per-block sums of squares */
    int64_t n_blk, cap_blk;
    mn_threadpool *pool;
    /* the step in flight (read by the workers) */
    float lr, clip_scale, bc1, bc2;
};

mn_adamw_params mn_adamw_default_params(void) {
    mn_adamw_params p;
    memset(&p, 0, sizeof p);
    p.lr = 1e-4f;
    p.beta1 = 0.9f;
    p.beta2 = 0.999f;
    p.eps = 1e-8f;
    p.weight_decay = 0.01f;
    p.clip_norm = 1.0f;
    p.warmup = 0;
    p.total = 1;
    p.min_lr_ratio = 0.1f;
    return p;
}

static int check_params(const mn_adamw_params *p) {
    if (!(p->lr >= 0.0f) || !isfinite(p->lr)) return mn_error(MN_EINVAL, "adamw: lr %g must be >= 0", (double)p->lr);
    if (!(p->beta1 >= 0.0f && p->beta1 < 1.0f))
        return mn_error(MN_EINVAL, "adamw: beta1 %g must be in [0, 1)", (double)p->beta1);
    if (!(p->beta2 >= 0.0f && p->beta2 < 1.0f))
        return mn_error(MN_EINVAL, "adamw: beta2 %g must be in [0, 1)", (double)p->beta2);
    if (!(p->eps > 0.0f) || !isfinite(p->eps)) return mn_error(MN_EINVAL, "adamw: eps %g must be > 0", (double)p->eps);
    if (!(p->weight_decay >= 0.0f) || !isfinite(p->weight_decay))
        return mn_error(MN_EINVAL, "adamw: weight decay %g must be >= 0", (double)p->weight_decay);
    if (isnan(p->clip_norm) || isinf(p->clip_norm))
        return mn_error(MN_EINVAL, "adamw: clip norm %g must be finite", (double)p->clip_norm);
    if (p->warmup < 0) return mn_error(MN_EINVAL, "adamw: warmup %lld must be >= 0", (long long)p->warmup);
    if (!(p->min_lr_ratio >= 0.0f && p->min_lr_ratio <= 1.0f))
        return mn_error(MN_EINVAL, "adamw: min lr ratio %g must be in [0, 1]", (double)p->min_lr_ratio);
    return MN_OK;
}

int mn_adamw_create(const mn_adamw_params *p, mn_adamw **out) {
    if (!out) return mn_error(MN_EINVAL, "adamw: no output");
    *out = NULL;
    if (!p) return mn_error(MN_EINVAL, "adamw: no parameters");
    int rc = check_params(p);
    if (rc) return rc;
    mn_adamw *o = calloc(1, sizeof *o);
    if (!o) return mn_error(MN_ENOMEM, "out of memory");
    o->hp = *p;
    *out = o;
    return MN_OK;
}

void mn_adamw_free(mn_adamw *o) {
    if (!o) return;
    for (int i = 0; i < o->n_t; i++) {
        free(o->t[i].m);
        free(o->t[i].v);
    }
    free(o->t);
    free(o->blk);
    free(o->part);
    free(o);
}

void mn_adamw_set_pool(mn_adamw *o, mn_threadpool *pool) { o->pool = pool; }
const mn_adamw_params *mn_adamw_get_params(const mn_adamw *o) { return &o->hp; }

int mn_adamw_find(const mn_adamw *o, const char *name) {
    for (int i = 0; i < o->n_t; i++)
        if (!strcmp(o->t[i].name, name)) return i;
    return -1;
}

int mn_adamw_add(mn_adamw *o, const char *name, float *param, float *grad, int64_t n, int decay) {
    if (!o || !name || !param || !grad) return mn_error(MN_EINVAL, "adamw add: NULL argument");
    size_t nl = strlen(name);
    if (nl == 0 || nl >= sizeof o->t[0].name)
        return mn_error(MN_EINVAL, "adamw add: tensor name '%.40s' must be 1..%zu bytes", name,
                        sizeof o->t[0].name - 1);
    if (n < 1 || (uint64_t)n > SIZE_MAX / sizeof(float))
        return mn_error(MN_EINVAL, "adamw add: tensor '%s' has %lld elements", name, (long long)n);
    if (param == grad) return mn_error(MN_EINVAL, "adamw add: tensor '%s' uses one buffer for param and grad", name);
    if (mn_adamw_find(o, name) >= 0) return mn_error(MN_EINVAL, "adamw add: duplicate tensor name '%s'", name);
    int64_t nb = (n + MN_ADAMW_BLOCK - 1) / MN_ADAMW_BLOCK;
    if (o->n_t == o->cap_t) {
        int cap = o->cap_t ? 2 * o->cap_t : 16;
        ad_tensor *t = realloc(o->t, sizeof *t * (size_t)cap);
        if (!t) return mn_error(MN_ENOMEM, "out of memory");
        o->t = t, o->cap_t = cap;
    }
    if (o->n_blk + nb > o->cap_blk) {
        int64_t cap = o->cap_blk ? 2 * o->cap_blk : 256;
        while (cap < o->n_blk + nb) cap *= 2;
        ad_block *b = realloc(o->blk, sizeof *b * (size_t)cap);
        if (!b) return mn_error(MN_ENOMEM, "out of memory");
        o->blk = b;
        double *pt = realloc(o->part, sizeof *pt * (size_t)cap);
        if (!pt) return mn_error(MN_ENOMEM, "out of memory");
        o->part = pt, o->cap_blk = cap;
    }
    ad_tensor *t = &o->t[o->n_t];
    memset(t, 0, sizeof *t);
    t->m = calloc((size_t)n, sizeof(float));
    t->v = calloc((size_t)n, sizeof(float));
    if (!t->m || !t->v) {
        free(t->m);
        free(t->v);
        return mn_error(MN_ENOMEM, "out of memory (moments of %lld floats for '%s')", (long long)n, name);
    }
    memcpy(t->name, name, nl + 1);
    t->p = param, t->g = grad, t->n = n, t->decay = !!decay;
    for (int64_t b = 0; b < nb; b++) {
        ad_block *k = &o->blk[o->n_blk++];
        k->t = o->n_t;
        k->lo = b * MN_ADAMW_BLOCK;
        k->hi = k->lo + MN_ADAMW_BLOCK < n ? k->lo + MN_ADAMW_BLOCK : n;
    }
    o->n_t++;
    return MN_OK;
}

float mn_adamw_lr_at(const mn_adamw *o, int64_t step) {
    const mn_adamw_params *p = &o->hp;
    double lr = p->lr, lo = (double)p->min_lr_ratio * lr;
    if (step < 0) step = 0;
    if (step < p->warmup) return (float)(lr * (double)(step + 1) / (double)p->warmup);
    if (step >= p->total) return (float)lo;
    double r = (double)(step - p->warmup) / (double)(p->total - p->warmup);
    return (float)(lo + (lr - lo) * 0.5 * (1.0 + cos(M_PI * r)));
}

/* ---------------------------------------------------------- the two passes */
static void norm_task(void *arg, int ith, int nth) {
    mn_adamw *o = arg;
    long lo, hi;
    mn_split((long)o->n_blk, ith, nth, 1, &lo, &hi);
    for (long b = lo; b < hi; b++) {
        const ad_block *k = &o->blk[b];
        const float *g = o->t[k->t].g;
        double s = 0.0;
        for (int64_t i = k->lo; i < k->hi; i++) s += (double)g[i] * (double)g[i];
        o->part[b] = s;
    }
}

static void update_task(void *arg, int ith, int nth) {
    mn_adamw *o = arg;
    const float b1 = o->hp.beta1, b2 = o->hp.beta2, eps = o->hp.eps;
    const float c = o->clip_scale, lr = o->lr, bc1 = o->bc1, bc2 = o->bc2;
    long lo, hi;
    mn_split((long)o->n_blk, ith, nth, 1, &lo, &hi);
    for (long b = lo; b < hi; b++) {
        const ad_block *k = &o->blk[b];
        const ad_tensor *t = &o->t[k->t];
        const float keep = t->decay ? 1.0f - lr * o->hp.weight_decay : 1.0f;
        float *p = t->p, *m = t->m, *v = t->v;
        const float *gr = t->g;
        for (int64_t i = k->lo; i < k->hi; i++) {
            float g = gr[i] * c;
            float mi = b1 * m[i] + (1.0f - b1) * g;
            float vi = b2 * v[i] + (1.0f - b2) * g * g;
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * keep - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
        }
    }
}

static void run(mn_adamw *o, mn_task_fn fn) {
    if (o->pool && o->n_blk > 1)
        mn_threadpool_run(o->pool, fn, o);
    else
        fn(o, 0, 1);
}

int mn_adamw_step(mn_adamw *o, float *gnorm) {
    if (!o) return mn_error(MN_EINVAL, "adamw step: no optimizer");
    if (o->n_t == 0) return mn_error(MN_EINVAL, "adamw step: no tensors registered");
    run(o, norm_task);
    double ss = 0.0;
    for (int64_t b = 0; b < o->n_blk; b++) ss += o->part[b];
    double norm = sqrt(ss);
    if (gnorm) *gnorm = (float)norm;
    if (!isfinite(norm)) {
        /* name the first offender so a training log says where it came from */
        for (int64_t b = 0; b < o->n_blk; b++)
            if (!isfinite(o->part[b])) {
                const ad_block *k = &o->blk[b];
                const ad_tensor *t = &o->t[k->t];
                for (int64_t i = k->lo; i < k->hi; i++)
                    if (!isfinite(t->g[i]))
                        return mn_error(MN_ERANGE, "adamw step %lld: non-finite gradient %g in '%s' at %lld",
                                        (long long)o->steps, (double)t->g[i], t->name, (long long)i);
            }
        return mn_error(MN_ERANGE, "adamw step %lld: non-finite gradient norm", (long long)o->steps);
    }
    double clip = o->hp.clip_norm;
    o->clip_scale = clip > 0.0 && norm > clip ? (float)(clip / norm) : 1.0f;
    o->lr = mn_adamw_lr_at(o, o->steps);
    double t = (double)(o->steps + 1);
    o->bc1 = (float)(1.0 - pow((double)o->hp.beta1, t));
    o->bc2 = (float)(1.0 - pow((double)o->hp.beta2, t));
    run(o, update_task);
    o->steps++;
    return MN_OK;
}

void mn_adamw_zero_grad(mn_adamw *o) {
    for (int i = 0; i < o->n_t; i++) memset(o->t[i].g, 0, sizeof(float) * (size_t)o->t[i].n);
}

int64_t mn_adamw_steps(const mn_adamw *o) { return o->steps; }
void mn_adamw_set_steps(mn_adamw *o, int64_t steps) { o->steps = steps < 0 ? 0 : steps; }
int mn_adamw_n_tensors(const mn_adamw *o) { return o->n_t; }

int mn_adamw_tensor(mn_adamw *o, int i, const char **name, int64_t *n, float **param, float **m, float **v) {
    if (!o || i < 0 || i >= o->n_t) return mn_error(MN_EINVAL, "adamw: no tensor %d", i);
    ad_tensor *t = &o->t[i];
    if (name) *name = t->name;
    if (n) *n = t->n;
    if (param) *param = t->p;
    if (m) *m = t->m;
    if (v) *v = t->v;
    return MN_OK;
}
