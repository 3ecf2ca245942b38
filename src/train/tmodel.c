/* tmodel.c - training forward and backward of the Llama block (see tmodel.h).
 *
 * Activation checkpointing: the forward keeps only x_l, the input of every
 * layer (L+1 rows of T*C). The backward walks the layers top-down, recomputes
 * layer l's forward from x_l into the one-layer scratch, then runs its backward.
 * Cost: one extra forward; memory: (L+1)*T*C + one layer's activations, so a
 * 4K-token pass of SmolLM2-135M holds ~0.3 GB of checkpoints.
 * A workspace created with `keep` holds every layer's activations instead
 * (~30 MB per layer for 512 tokens of SmolLM2-135M) and its backward skips the
 * recomputation: the trainers' passes are short, so memory is cheaper than the
 * forward that checkpointing spends again (about a fifth of a training step).
 *
 * A layer (pre-norm), with optional LoRA on q, k, v, o:
 *   xn = rmsnorm(x) ; q, k, v = xn Wq^T, xn Wk^T, xn Wv^T ; RoPE(q, k)
 *   a = attention(q, [prefix k | k], [prefix v | v]) ; x1 = x + a Wo^T
 *   xn2 = rmsnorm(x1) ; x2 = x1 + (silu(xn2 Wg^T) * xn2 Wu^T) Wd^T
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model/model.h"
#include "train/ops.h"
#include "train/tmodel.h"

typedef struct {
    real *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *wg, *wu, *wd;
} tlayer;

struct TN(mn_tmodel) {
    mn_tdims d;
    float rope_base, rope_freq_scale, eps;
    real *tok_embd, *out, *out_norm; /* out may alias tok_embd */
    tlayer *layers;
    real *blob;
    int bf16; /* its frozen weights are registered with ops.c's bf16 path */
};

/* A layer's activations as its backward reads them. */
typedef struct {
    real *xn, *inv, *q, *kc, *vc, *att, *lse, *x1, *xn2, *inv2, *g, *u, *h;
    real *uq, *uk, *uv, *uo; /* (T, r) LoRA intermediates */
} tact;

/* Activations (one layer's, recomputed, or every layer's, kept) plus the
 * gradient buffers. */
struct TN(mn_tws) {
    int32_t max_T, max_N, max_r;
    int keep;                              /* act holds L layers, not one */
    int fresh;                             /* keep: act is the last forward's */
    real *xs;                              /* (L+1, T, C) layer inputs */
    tact *act;                             /* (keep ? L : 1) */
    real *dx, *dxn, *dq, *dkc, *dvc, *datt, *dg, *du, *dh, *dlr;
    real *xf, *invf;                       /* final norm */
    real *attn_scratch;                    /* 2 * T * (N + T) */
    real *head_scratch;                    /* HEAD_CHUNK * V */
    real *blob;
};

#define HEAD_CHUNK 64

static int64_t weight_elems(const mn_weight *w) { return w->ne0 * w->ne1; }

static void dequant(real *dst, const mn_weight *w, float *row) {
    for (int64_t r = 0; r < w->ne1; r++) {
        w->qt->to_float((const char *)w->data + (size_t)r * w->row_bytes, row, w->ne0);
        for (int64_t i = 0; i < w->ne0; i++) dst[r * w->ne0 + i] = (real)row[i];
    }
}

int TN(mn_tmodel_create)(const mn_model *m, TN(mn_tmodel) * *out) {
    *out = NULL;
    const mn_hparams *hp = &m->hp;
    if (hp->arch != MN_ARCH_LLAMA)
        return mn_error(MN_EUNSUPPORTED, "training through this architecture is not built yet (Llama family only); "
                                         "inference, memory files and recall work");
    if (hp->n_rot != hp->head_dim)
        return mn_error(MN_EUNSUPPORTED, "training needs rope over the whole head (n_rot %d, head_dim %d)", hp->n_rot,
                        hp->head_dim);
    TN(mn_tmodel) *tm = calloc(1, sizeof *tm);
    if (!tm) return mn_error(MN_ENOMEM, "out of memory");
    mn_tdims *d = &tm->d;
    d->n_embd = hp->n_embd, d->n_layer = hp->n_layer, d->n_head = hp->n_head, d->n_head_kv = hp->n_head_kv;
    d->head_dim = hp->head_dim, d->n_ff = hp->n_ff, d->n_vocab = hp->n_vocab;
    d->kv_dim = hp->n_head_kv * hp->head_dim;
    tm->rope_base = hp->rope_base, tm->rope_freq_scale = hp->rope_freq_scale, tm->eps = hp->norm_eps;
    const int tied = m->output.data == m->tok_embd.data;
    int64_t total = weight_elems(&m->tok_embd) + (tied ? 0 : weight_elems(&m->output)) + d->n_embd;
    for (int l = 0; l < d->n_layer; l++) {
        const mn_layer *L = &m->layers[l];
        total += 2 * (int64_t)d->n_embd + weight_elems(&L->wq) + weight_elems(&L->wk) + weight_elems(&L->wv) +
                 weight_elems(&L->wo) + weight_elems(&L->w_gate) + weight_elems(&L->w_up) + weight_elems(&L->w_down);
    }
    tm->blob = malloc(sizeof(real) * (size_t)total);
    tm->layers = calloc((size_t)d->n_layer, sizeof(tlayer));
    float *row = malloc(sizeof(float) * (size_t)(d->n_ff > d->n_embd ? d->n_ff : d->n_embd) * 4 + 4096);
    if (!tm->blob || !tm->layers || !row) {
        free(row);
        TN(mn_tmodel_free)(tm);
        return mn_error(MN_ENOMEM, "out of memory for the training copy of the weights (%.2f GB)",
                        (double)total * sizeof(real) / 1e9);
    }
    real *p = tm->blob;
#define TAKE(dst, w) (dst = p, dequant(p, (w), row), p += weight_elems(w))
    TAKE(tm->tok_embd, &m->tok_embd);
    if (tied) tm->out = tm->tok_embd;
    else TAKE(tm->out, &m->output);
    tm->out_norm = p;
    for (int i = 0; i < d->n_embd; i++) *p++ = (real)m->output_norm[i];
    for (int l = 0; l < d->n_layer; l++) {
        const mn_layer *L = &m->layers[l];
        tlayer *t = &tm->layers[l];
        t->attn_norm = p;
        for (int i = 0; i < d->n_embd; i++) *p++ = (real)L->attn_norm[i];
        t->ffn_norm = p;
        for (int i = 0; i < d->n_embd; i++) *p++ = (real)L->ffn_norm[i];
        TAKE(t->wq, &L->wq);
        TAKE(t->wk, &L->wk);
        TAKE(t->wv, &L->wv);
        TAKE(t->wo, &L->wo);
        TAKE(t->wg, &L->w_gate);
        TAKE(t->wu, &L->w_up);
        TAKE(t->wd, &L->w_down);
    }
#undef TAKE
    free(row);
    *out = tm;
    return MN_OK;
}

#ifndef MN_REAL_F64
/* every frozen matrix the ops multiply by, with its shape (N rows of K) */
static int for_weights(TN(mn_tmodel) * tm, int (*fn)(const float *w, int N, int K)) {
    const mn_tdims *d = &tm->d;
    const int C = d->n_embd, HD = d->n_head * d->head_dim, KD = d->kv_dim, F = d->n_ff;
    int rc = fn(tm->out, d->n_vocab, C);
    for (int l = 0; !rc && l < d->n_layer; l++) {
        const tlayer *t = &tm->layers[l];
        const struct {
            const float *w;
            int N, K;
        } ws[] = {{t->wq, HD, C}, {t->wk, KD, C}, {t->wv, KD, C}, {t->wo, C, HD},
                  {t->wg, F, C},  {t->wu, F, C},  {t->wd, C, F}};
        for (size_t i = 0; !rc && i < sizeof ws / sizeof *ws; i++) rc = fn(ws[i].w, ws[i].N, ws[i].K);
    }
    return rc;
}
static int unregister(const float *w, int N, int K) {
    (void)N, (void)K;
    mn_op_bf16_unregister(w);
    return 0;
}

int mn_tmodel_use_bf16(mn_tmodel *tm) {
    if (tm->bf16) return MN_OK;
    int rc = for_weights(tm, mn_op_bf16_register);
    if (rc) for_weights(tm, unregister); /* what was registered before the failure */
    else tm->bf16 = 1;
    return rc;
}
#endif

void TN(mn_tmodel_free)(TN(mn_tmodel) * tm) {
    if (!tm) return;
#ifndef MN_REAL_F64
    if (tm->bf16) for_weights(tm, unregister);
#endif
    free(tm->blob);
    free(tm->layers);
    free(tm);
}

const mn_tdims *TN(mn_tmodel_dims)(const TN(mn_tmodel) * tm) { return &tm->d; }

void TN(mn_tmodel_embed)(const TN(mn_tmodel) * tm, const int32_t *ids, int32_t n, real *out) {
    const int C = tm->d.n_embd;
    for (int32_t i = 0; i < n; i++) memcpy(out + (int64_t)i * C, tm->tok_embd + (int64_t)ids[i] * C, sizeof(real) * C);
}

const real *TN(mn_tmodel_weight)(const TN(mn_tmodel) * tm, int layer, char which) {
    if (layer < 0 || layer >= tm->d.n_layer) return NULL;
    const tlayer *t = &tm->layers[layer];
    switch (which) {
    case 'q': return t->wq;
    case 'k': return t->wk;
    case 'v': return t->wv;
    case 'o': return t->wo;
    default: return NULL;
    }
}

void TN(mn_tmodel_rope)(const TN(mn_tmodel) * tm, real *x, const int32_t *pos, int T, int nh, int inverse) {
    if (inverse) TN(mn_op_rope_bwd)(x, pos, T, nh, tm->d.head_dim, tm->rope_base, tm->rope_freq_scale);
    else TN(mn_op_rope_fwd)(x, pos, T, nh, tm->d.head_dim, tm->rope_base, tm->rope_freq_scale);
}

/* The workspace's layout: n_act activation sets of act_sizes, then sizes. */
typedef struct {
    int64_t act_sizes[17], sizes[15], n_act, total;
} ws_layout;

static int ws_plan(const TN(mn_tmodel) * tm, int32_t max_T, int32_t max_N, int32_t max_r, int keep, ws_layout *w) {
    if (max_T <= 0 || max_N < 0 || max_r < 0) return mn_error(MN_EINVAL, "bad workspace size");
    const mn_tdims *d = &tm->d;
    const int64_t T = max_T, C = d->n_embd, HD = (int64_t)d->n_head * d->head_dim, KD = d->kv_dim, F = d->n_ff;
    const int64_t NC = (int64_t)max_N + max_T, R = max_r > 0 ? max_r : 1;
    const int64_t act_sizes[] = {
        T * C, T, T * HD, NC * KD, NC * KD, T * HD, T * d->n_head,  /* xn inv q kc vc att lse */
        T * C, T * C, T, T * F, T * F, T * F,                       /* x1 xn2 inv2 g u h */
        T * R, T * R, T * R, T * R,                                 /* uq uk uv uo */
    };
    const int64_t sizes[] = {
        (d->n_layer + 1) * T * C,                                   /* xs */
        T * C, T * C, T * HD, NC * KD, NC * KD, T * HD, T * F, T * F, T * F, T * R, /* grads */
        T * C, T,                                                   /* xf invf */
        2 * T * NC, (int64_t)HEAD_CHUNK * d->n_vocab,
    };
    _Static_assert(sizeof act_sizes == sizeof w->act_sizes && sizeof sizes == sizeof w->sizes, "layout");
    memcpy(w->act_sizes, act_sizes, sizeof act_sizes);
    memcpy(w->sizes, sizes, sizeof sizes);
    w->n_act = keep ? d->n_layer : 1;
    w->total = 0;
    for (int i = 0; i < 17; i++) w->total += w->n_act * act_sizes[i];
    for (int i = 0; i < 15; i++) w->total += sizes[i];
    return MN_OK;
}

int64_t TN(mn_tws_bytes)(const TN(mn_tmodel) * tm, int32_t max_T, int32_t max_N, int32_t max_r, int keep) {
    ws_layout w;
    return ws_plan(tm, max_T, max_N, max_r, keep, &w) ? -1 : w.total * (int64_t)sizeof(real);
}

int TN(mn_tws_create)(const TN(mn_tmodel) * tm, int32_t max_T, int32_t max_N, int32_t max_r, int keep,
                     TN(mn_tws) * *out) {
    *out = NULL;
    ws_layout w;
    int rc = ws_plan(tm, max_T, max_N, max_r, keep, &w);
    if (rc) return rc;
    const int64_t n_act = w.n_act, total = w.total;
    const int64_t *act_sizes = w.act_sizes, *sizes = w.sizes;
    const int n_as = 17;
    TN(mn_tws) *ws = calloc(1, sizeof *ws);
    if (ws) ws->act = calloc((size_t)n_act, sizeof(tact));
    if (ws) ws->blob = ws->act ? malloc(sizeof(real) * (size_t)total) : NULL;
    if (!ws || !ws->blob) {
        if (ws) free(ws->act);
        free(ws);
        return mn_error(MN_ENOMEM, "out of memory for a training workspace of %.2f GB",
                        (double)total * sizeof(real) / 1e9);
    }
    ws->max_T = max_T, ws->max_N = max_N, ws->max_r = max_r, ws->keep = keep != 0;
    real **dst[] = {&ws->xs, &ws->dx, &ws->dxn, &ws->dq, &ws->dkc, &ws->dvc, &ws->datt, &ws->dg, &ws->du,
                    &ws->dh, &ws->dlr, &ws->xf, &ws->invf, &ws->attn_scratch, &ws->head_scratch};
    real *p = ws->blob;
    for (int i = 0; i < 15; i++) {
        *dst[i] = p;
        p += sizes[i];
    }
    for (int64_t l = 0; l < n_act; l++) {
        tact *a = &ws->act[l];
        real **ad[] = {&a->xn, &a->inv, &a->q, &a->kc, &a->vc, &a->att, &a->lse, &a->x1, &a->xn2,
                       &a->inv2, &a->g, &a->u, &a->h, &a->uq, &a->uk, &a->uv, &a->uo};
        for (int i = 0; i < n_as; i++) {
            *ad[i] = p;
            p += act_sizes[i];
        }
    }
    *out = ws;
    return MN_OK;
}

void TN(mn_tws_free)(TN(mn_tws) * ws) {
    if (!ws) return;
    free(ws->blob);
    free(ws->act);
    free(ws);
}

static int check_pass(const TN(mn_tmodel) * tm, const TN(mn_tws) * ws, const TN(mn_tpass) * p) {
    if (p->T <= 0 || p->T > ws->max_T || p->N < 0 || p->N > ws->max_N)
        return mn_error(MN_EINVAL, "pass of %d tokens over %d cells exceeds the workspace (%d, %d)", p->T, p->N,
                        ws->max_T, ws->max_N);
    const TN(mn_tlora) *lo = p->lora;
    if (lo) {
        const TN(mn_tlora_w) *sets[4] = {lo->q, lo->k, lo->v, lo->o};
        for (int s = 0; s < 4; s++)
            for (int l = 0; sets[s] && l < tm->d.n_layer; l++)
                if (sets[s][l].rank > ws->max_r || sets[s][l].rank < 0)
                    return mn_error(MN_EINVAL, "LoRA rank %d exceeds the workspace's %d", sets[s][l].rank, ws->max_r);
    }
    if (p->N > 0 && (!p->pk || !p->pv)) return mn_error(MN_EINVAL, "prefix cells without keys/values");
    if (p->N_stride && p->N_stride < p->N) return mn_error(MN_EINVAL, "prefix stride %d < %d cells", p->N_stride, p->N);
    if (p->n_alt < 0 || p->n_alt > p->T || (p->n_alt && (!p->alt || !p->alt_rows || !p->alt_buf)))
        return mn_error(MN_EINVAL, "bad alt-projection rows (%d)", p->n_alt);
    if (p->n_alt && p->lora) return mn_error(MN_EUNSUPPORTED, "alt-projection rows together with a LoRA");
    for (int i = 0; i < p->n_alt; i++)
        if (p->alt_rows[i] < 0 || p->alt_rows[i] >= p->T) return mn_error(MN_EINVAL, "alt row %d out of range", p->alt_rows[i]);
    return MN_OK;
}

static const TN(mn_tlora_w) * lora_at(const TN(mn_tlora) * lo, char which, int l) {
    if (!lo) return NULL;
    const TN(mn_tlora_w) *set = which == 'q' ? lo->q : which == 'k' ? lo->k : which == 'v' ? lo->v : lo->o;
    return set && set[l].rank > 0 ? &set[l] : NULL;
}

static void proj_fwd(real *y, real *u, const real *x, const real *w, const TN(mn_tlora_w) * lw, real s, int T, int K,
                     int N) {
    TN(mn_op_matmul_fwd)(y, x, w, T, K, N, 0);
    if (lw) TN(mn_op_lora_fwd)(y, u, x, lw->a, lw->b, T, K, N, lw->rank, s);
}

static void proj_bwd(real *dx, real *du, const real *dy, const real *x, const real *u, const real *w,
                     const TN(mn_tlora_w) * lw, real s, int T, int K, int N) {
    TN(mn_op_matmul_bwd)(dx, dy, w, T, K, N);
    if (lw) TN(mn_op_lora_bwd)(dx, lw->da, lw->db, du, dy, x, u, lw->a, lw->b, T, K, N, lw->rank, s);
}

/* Layer l forward from ws->xs[l]; writes ws->xs[l+1] unless `top` (the last
 * layer of a head-less pass, which only needs its captured xn and K/V). */
/* Alt rows (beacons): y[r] = x[r] W^T (+ add[r]) for each alt row r, over
 * what the base projection wrote. x (T, K), y (T, N), W (N, K). */
static void alt_fwd(const TN(mn_tpass) * p, real *y, const real *x, const real *w, const real *add, int K, int N) {
    const int n = p->n_alt;
    if (!w || n <= 0) return;
    real *xa = p->alt_buf, *ya = xa + (int64_t)n * K;
    for (int i = 0; i < n; i++) memcpy(xa + (int64_t)i * K, x + (int64_t)p->alt_rows[i] * K, sizeof(real) * K);
    TN(mn_op_matmul_fwd)(ya, xa, w, n, K, N, 0);
    for (int i = 0; i < n; i++) {
        real *yr = y + (int64_t)p->alt_rows[i] * N;
        const real *src = ya + (int64_t)i * N, *ar = add ? add + (int64_t)p->alt_rows[i] * N : NULL;
        for (int j = 0; j < N; j++) yr[j] = src[j] + (ar ? ar[j] : 0);
    }
}

/* Its backward: dx[r] += dy[r] W, dW += dy[r]^T x[r] over the alt rows; with
 * `take`, dy's alt rows are zeroed afterwards so the base projection's
 * backward (run next over all rows) leaves them alone. */
static void alt_bwd(const TN(mn_tpass) * p, real *dx, real *dy, const real *x, const real *w, real *dw, int K, int N,
                    int take) {
    const int n = p->n_alt;
    if (!w || n <= 0) return;
    real *xa = p->alt_buf, *dya = xa + (int64_t)n * K, *dxa = dya + (int64_t)n * N;
    for (int i = 0; i < n; i++) {
        const int64_t r = p->alt_rows[i];
        memcpy(xa + (int64_t)i * K, x + r * K, sizeof(real) * K);
        memcpy(dya + (int64_t)i * N, dy + r * N, sizeof(real) * N);
        if (take) memset(dy + r * N, 0, sizeof(real) * N);
    }
    memset(dxa, 0, sizeof(real) * (size_t)n * K);
    TN(mn_op_matmul_bwd)(dxa, dya, w, n, K, N);
    if (dw) TN(mn_op_matmul_dw)(dw, dya, xa, n, K, N);
    for (int i = 0; i < n; i++) {
        real *dr = dx + (int64_t)p->alt_rows[i] * K;
        const real *src = dxa + (int64_t)i * K;
        for (int j = 0; j < K; j++) dr[j] += src[j];
    }
}

static void layer_fwd(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, int l, int top) {
    const mn_tdims *d = &tm->d;
    const tlayer *W = &tm->layers[l];
    const int T = p->T, N = p->N, C = d->n_embd, HD = d->n_head * d->head_dim, KD = d->kv_dim, F = d->n_ff;
    const real s = p->lora ? p->lora->scale : 0;
    const real *x = ws->xs + (int64_t)l * ws->max_T * C;
    tact *a = &ws->act[ws->keep ? l : 0];
    TN(mn_op_rmsnorm_fwd)(a->xn, a->inv, x, W->attn_norm, T, C, tm->eps);
    for (int i = 0; p->cap_xn && i < p->n_cap; i++)
        memcpy(p->cap_xn + ((int64_t)l * p->n_cap + i) * C, a->xn + (int64_t)p->cap[i] * C, sizeof(real) * C);
    if (top && !p->out_k && !p->dout_k && !p->dout_v) return;
    const TN(mn_talt_w) *A = p->n_alt > 0 ? &p->alt[l] : NULL;
    real *k = a->kc + (int64_t)N * KD, *v = a->vc + (int64_t)N * KD;
    proj_fwd(k, a->uk, a->xn, W->wk, lora_at(p->lora, 'k', l), s, T, C, KD);
    proj_fwd(v, a->uv, a->xn, W->wv, lora_at(p->lora, 'v', l), s, T, C, KD);
    if (A) alt_fwd(p, k, a->xn, A->k, NULL, C, KD), alt_fwd(p, v, a->xn, A->v, NULL, C, KD);
    TN(mn_op_rope_fwd)(k, p->pos, T, d->n_head_kv, d->head_dim, tm->rope_base, tm->rope_freq_scale);
    if (p->out_k) {
        memcpy(p->out_k + (int64_t)l * T * KD, k, sizeof(real) * (size_t)T * KD);
        memcpy(p->out_v + (int64_t)l * T * KD, v, sizeof(real) * (size_t)T * KD);
    }
    if (top) return;
    proj_fwd(a->q, a->uq, a->xn, W->wq, lora_at(p->lora, 'q', l), s, T, C, HD);
    if (A) alt_fwd(p, a->q, a->xn, A->q, NULL, C, HD);
    TN(mn_op_rope_fwd)(a->q, p->pos, T, d->n_head, d->head_dim, tm->rope_base, tm->rope_freq_scale);
    if (N) {
        const int64_t off = (int64_t)l * (p->N_stride ? p->N_stride : N) * KD;
        memcpy(a->kc, p->pk + off, sizeof(real) * (size_t)N * KD);
        memcpy(a->vc, p->pv + off, sizeof(real) * (size_t)N * KD);
    }
    const mn_attn_shape sh = {T, N, d->n_head, d->n_head_kv, d->head_dim, p->mask};
    TN(mn_op_attn_fwd)(a->att, a->lse, a->q, a->kc, a->vc, &sh, ws->attn_scratch);
    memcpy(a->x1, x, sizeof(real) * (size_t)T * C);
    TN(mn_op_matmul_fwd)(a->x1, a->att, W->wo, T, HD, C, 1);
    const TN(mn_tlora_w) *lo = lora_at(p->lora, 'o', l);
    if (lo) TN(mn_op_lora_fwd)(a->x1, a->uo, a->att, lo->a, lo->b, T, HD, C, lo->rank, s);
    if (A) alt_fwd(p, a->x1, a->att, A->o, x, HD, C); /* x1[r] = x[r] + att[r] Wo'^T */
    TN(mn_op_rmsnorm_fwd)(a->xn2, a->inv2, a->x1, W->ffn_norm, T, C, tm->eps);
    TN(mn_op_matmul_fwd)(a->g, a->xn2, W->wg, T, C, F, 0);
    TN(mn_op_matmul_fwd)(a->u, a->xn2, W->wu, T, C, F, 0);
    TN(mn_op_swiglu_fwd)(a->h, a->g, a->u, (int64_t)T * F);
    real *xo = ws->xs + (int64_t)(l + 1) * ws->max_T * C;
    memcpy(xo, a->x1, sizeof(real) * (size_t)T * C);
    TN(mn_op_matmul_fwd)(xo, a->h, W->wd, T, F, C, 1);
}

/* ws->dx holds dL/d(output of layer l) (ignored when top); on return it holds
 * dL/d(input of layer l). Needs layer_fwd(l) just before. */
static void layer_bwd(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, int l, int top) {
    const mn_tdims *d = &tm->d;
    const tlayer *W = &tm->layers[l];
    const int T = p->T, N = p->N, C = d->n_embd, HD = d->n_head * d->head_dim, KD = d->kv_dim, F = d->n_ff;
    const real s = p->lora ? p->lora->scale : 0;
    const real *x = ws->xs + (int64_t)l * ws->max_T * C;
    tact *a = &ws->act[ws->keep ? l : 0];
    memset(ws->dxn, 0, sizeof(real) * (size_t)T * C);
    const TN(mn_talt_w) *A = p->n_alt > 0 ? &p->alt[l] : NULL;
    const int kv_grad = !top || p->dout_k || p->dout_v; /* the batch's K/V receive gradient */
    real *dk = ws->dkc + (int64_t)N * KD, *dv = ws->dvc + (int64_t)N * KD;
    if (top) {
        memset(ws->dx, 0, sizeof(real) * (size_t)T * C);
        if (kv_grad) {
            memset(dk, 0, sizeof(real) * (size_t)T * KD);
            memset(dv, 0, sizeof(real) * (size_t)T * KD);
        }
    } else {
        /* FFN branch: x2 = x1 + ffn(x1) */
        memset(ws->dh, 0, sizeof(real) * (size_t)T * F);
        TN(mn_op_matmul_bwd)(ws->dh, ws->dx, W->wd, T, F, C);
        TN(mn_op_swiglu_bwd)(ws->dg, ws->du, ws->dh, a->g, a->u, (int64_t)T * F);
        real *dxn2 = ws->dxn; /* reused: zero now, the attention branch needs it after */
        TN(mn_op_matmul_bwd)(dxn2, ws->dg, W->wg, T, C, F);
        TN(mn_op_matmul_bwd)(dxn2, ws->du, W->wu, T, C, F);
        TN(mn_op_rmsnorm_bwd)(ws->dx, dxn2, a->x1, W->ffn_norm, a->inv2, T, C);
        memset(ws->dxn, 0, sizeof(real) * (size_t)T * C);
        /* attention branch: x1 = x + att Wo^T (alt rows: their own Wo) */
        memset(ws->datt, 0, sizeof(real) * (size_t)T * HD);
        proj_bwd(ws->datt, ws->dlr, ws->dx, a->att, a->uo, W->wo, lora_at(p->lora, 'o', l), s, T, HD, C);
        if (A && A->o) {
            for (int i = 0; i < p->n_alt; i++) memset(ws->datt + (int64_t)p->alt_rows[i] * HD, 0, sizeof(real) * HD);
            alt_bwd(p, ws->datt, ws->dx, a->att, A->o, A->d_o, HD, C, 0);
        }
        memset(ws->dkc, 0, sizeof(real) * (size_t)(N + T) * KD);
        memset(ws->dvc, 0, sizeof(real) * (size_t)(N + T) * KD);
        const mn_attn_shape sh = {T, N, d->n_head, d->n_head_kv, d->head_dim, p->mask};
        TN(mn_op_attn_bwd)(ws->dq, ws->dkc, ws->dvc, ws->datt, a->q, a->kc, a->vc, a->att, a->lse, &sh,
                           ws->attn_scratch);
        if (N && p->dpk) {
            const int64_t off = (int64_t)l * (p->N_stride ? p->N_stride : N) * KD;
            real *gk = p->dpk + off, *gv = p->dpv + off;
            for (int64_t i = 0; i < (int64_t)N * KD; i++) gk[i] += ws->dkc[i], gv[i] += ws->dvc[i];
        }
        TN(mn_op_rope_bwd)(ws->dq, p->pos, T, d->n_head, d->head_dim, tm->rope_base, tm->rope_freq_scale);
        if (A) alt_bwd(p, ws->dxn, ws->dq, a->xn, A->q, A->dq, C, HD, 1);
        proj_bwd(ws->dxn, ws->dlr, ws->dq, a->xn, a->uq, W->wq, lora_at(p->lora, 'q', l), s, T, C, HD);
    }
    if (kv_grad) {
        /* later readers of this batch's K/V (out_k is after RoPE, like dk here) */
        const int64_t o = (int64_t)l * T * KD;
        for (int64_t i = 0; p->dout_k && i < (int64_t)T * KD; i++) dk[i] += p->dout_k[o + i];
        for (int64_t i = 0; p->dout_v && i < (int64_t)T * KD; i++) dv[i] += p->dout_v[o + i];
        TN(mn_op_rope_bwd)(dk, p->pos, T, d->n_head_kv, d->head_dim, tm->rope_base, tm->rope_freq_scale);
        if (A) alt_bwd(p, ws->dxn, dk, a->xn, A->k, A->dk, C, KD, 1), alt_bwd(p, ws->dxn, dv, a->xn, A->v, A->dv, C, KD, 1);
        proj_bwd(ws->dxn, ws->dlr, dk, a->xn, a->uk, W->wk, lora_at(p->lora, 'k', l), s, T, C, KD);
        proj_bwd(ws->dxn, ws->dlr, dv, a->xn, a->uv, W->wv, lora_at(p->lora, 'v', l), s, T, C, KD);
    }
    if (p->dcap_xn && p->cap_xn)
        for (int i = 0; i < p->n_cap; i++) {
            const real *g = p->dcap_xn + ((int64_t)l * p->n_cap + i) * C;
            real *dst = ws->dxn + (int64_t)p->cap[i] * C;
            for (int c = 0; c < C; c++) dst[c] += g[c];
        }
    TN(mn_op_rmsnorm_bwd)(ws->dx, ws->dxn, x, W->attn_norm, a->inv, T, C);
}

static int has_head(const TN(mn_tpass) * p) { return p->targets || p->teacher; }
/* passes that need the last layer's output, not just its captured input */
static int full_stack(const TN(mn_tpass) * p) { return has_head(p) || p->cap_out; }

/* the head over rows [h0, r0) without and [r0, T) with the teacher; rows
 * before h0 are context (no logits computed, zero gradient) */
static double head(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, real *dx, real dscale) {
    const int C = tm->d.n_embd, V = tm->d.n_vocab, T = p->T;
    const int h0 = p->head_row0 > 0 ? (p->head_row0 < T ? p->head_row0 : T) : 0;
    int r0 = p->teacher ? (p->teacher_row0 < T ? p->teacher_row0 : T) : T;
    /* teacher rows before h0 are skipped with their rows */
    const real *teacher = p->teacher && r0 < h0 ? p->teacher + (int64_t)(h0 - r0) * V : p->teacher;
    if (r0 < h0) r0 = h0;
    double loss = 0;
    if (dx && h0 > 0) memset(dx, 0, sizeof(real) * (size_t)h0 * C);
    if (r0 > h0)
        loss += TN(mn_op_head)(dx ? dx + (int64_t)h0 * C : NULL, ws->xf + (int64_t)h0 * C, tm->out, r0 - h0, C, V,
                               p->targets ? p->targets + h0 : NULL, NULL, p->ce_w, 0, dscale, ws->head_scratch,
                               HEAD_CHUNK);
    if (r0 < T)
        loss += TN(mn_op_head)(dx ? dx + (int64_t)r0 * C : NULL, ws->xf + (int64_t)r0 * C, tm->out, T - r0, C, V,
                               p->targets ? p->targets + r0 : NULL, teacher, p->ce_w, p->kl_w, dscale,
                               ws->head_scratch, HEAD_CHUNK);
    return loss;
}

int TN(mn_tmodel_forward)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, double *loss) {
    int rc = check_pass(tm, ws, p);
    if (rc) return rc;
    const mn_tdims *d = &tm->d;
    const int C = d->n_embd, L = d->n_layer, full = full_stack(p);
    memcpy(ws->xs, p->x, sizeof(real) * (size_t)p->T * C);
    for (int l = 0; l < L; l++) layer_fwd(tm, ws, p, l, !full && l == L - 1);
    ws->fresh = ws->keep;
    double ls = 0;
    if (full) {
        const real *xL = ws->xs + (int64_t)L * ws->max_T * C;
        TN(mn_op_rmsnorm_fwd)(ws->xf, ws->invf, xL, tm->out_norm, p->T, C, tm->eps);
        if (has_head(p)) ls = head(tm, ws, p, NULL, 0);
        for (int i = 0; p->cap_out && i < p->n_cap; i++)
            memcpy(p->cap_out + (int64_t)i * C, ws->xf + (int64_t)p->cap[i] * C, sizeof(real) * (size_t)C);
    }
    if (loss) *loss = ls;
    return MN_OK;
}

int TN(mn_tmodel_backward)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, real dscale) {
    int rc = check_pass(tm, ws, p);
    if (rc) return rc;
    const mn_tdims *d = &tm->d;
    const int C = d->n_embd, L = d->n_layer, full = full_stack(p), T = p->T;
    if (full) {
        const real *xL = ws->xs + (int64_t)L * ws->max_T * C;
        TN(mn_op_rmsnorm_fwd)(ws->xf, ws->invf, xL, tm->out_norm, T, C, tm->eps);
        if (has_head(p)) head(tm, ws, p, ws->dxn, dscale);
        else memset(ws->dxn, 0, sizeof(real) * (size_t)T * C);
        for (int i = 0; p->cap_out && p->dcap_out && i < p->n_cap; i++) {
            real *dst = ws->dxn + (int64_t)p->cap[i] * C;
            const real *g = p->dcap_out + (int64_t)i * C;
            for (int c = 0; c < C; c++) dst[c] += g[c];
        }
        memset(ws->dx, 0, sizeof(real) * (size_t)T * C);
        TN(mn_op_rmsnorm_bwd)(ws->dx, ws->dxn, xL, tm->out_norm, ws->invf, T, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        const int top = !full && l == L - 1;
        if (!ws->fresh) layer_fwd(tm, ws, p, l, top);
        layer_bwd(tm, ws, p, l, top);
    }
    if (p->dx) memcpy(p->dx, ws->dx, sizeof(real) * (size_t)T * C);
    return MN_OK;
}

int TN(mn_tmodel_logprobs)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const real *x, const int32_t *pos, int32_t T,
                           real *lp) {
    TN(mn_tpass) p = {.T = T, .x = x, .pos = pos};
    const mn_tdims *d = &tm->d;
    const int C = d->n_embd, L = d->n_layer;
    int rc = check_pass(tm, ws, &p);
    if (rc) return rc;
    memcpy(ws->xs, x, sizeof(real) * (size_t)T * C);
    ws->fresh = 0;
    for (int l = 0; l < L; l++) layer_fwd(tm, ws, &p, l, 0);
    const real *xL = ws->xs + (int64_t)L * ws->max_T * C;
    TN(mn_op_rmsnorm_fwd)(ws->xf, ws->invf, xL, tm->out_norm, T, C, tm->eps);
    TN(mn_op_logprobs)(lp, ws->xf, tm->out, T, C, d->n_vocab);
    return MN_OK;
}
