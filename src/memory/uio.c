/* uio.c - UIO-LLMs segment encoder and transfer head (see uio.h). */
#include "memory/uio.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

struct mn_uio {
    const mn_model *model;
    mn_uio_params p;
    mn_context *ctx;
    int32_t C, L, KD;
    float *embd;      /* (l + m, C) encoder input */
    int32_t *pos;     /* (l + m) */
    uint8_t *mask;    /* (l + m, l + m) */
    int32_t *cap_idx; /* (m) */
    float *cap;       /* (L, m, C) */
    float *capq;      /* (L, m, H*D) memory tokens' queries before RoPE (recall's index), or NULL */
    int32_t last_r, last_mm; /* segment tokens and memory tokens of the last segment encoded */
};

int mn_uio_create(const mn_model *m, const mn_uio_params *p, int n_threads, mn_uio **out) {
    *out = NULL;
    if (p->l <= 0 || p->m <= 0 || p->m > p->l)
        return mn_error(MN_EINVAL, "UIO needs 0 < m <= l (got l %d, m %d)", p->l, p->m);
    if (p->l % p->m) return mn_error(MN_EINVAL, "ratio: %d memory tokens do not divide a segment of %d", p->m, p->l);
    if (!p->mem_embd) return mn_error(MN_EINVAL, "UIO needs a memory-token embedding");
    if (p->l > mn_model_n_ctx_train(m))
        return mn_error(MN_EINVAL, "segment of %d exceeds the model's context %d", p->l, mn_model_n_ctx_train(m));
    mn_uio *u = calloc(1, sizeof *u);
    if (!u) return mn_error(MN_ENOMEM, "out of memory");
    u->model = m;
    u->p = *p;
    u->C = mn_model_n_embd(m);
    u->L = mn_model_n_layer(m);
    const int32_t T = p->l + p->m;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = T;
    cp.n_batch = T; /* one piece: the whole segment plus its memory tokens */
    cp.swa_full = 1; /* recall reads the segment's cells back (mn_recall_rep_keys) */
    cp.n_threads = n_threads;
    int rc = mn_context_create(m, &cp, &u->ctx);
    if (rc) {
        free(u);
        return rc;
    }
    u->embd = malloc(sizeof(float) * (size_t)T * (size_t)u->C);
    u->pos = malloc(sizeof(int32_t) * (size_t)T);
    u->mask = calloc((size_t)T * (size_t)T, 1);
    u->cap_idx = malloc(sizeof(int32_t) * (size_t)p->m);
    u->cap = malloc(sizeof(float) * (size_t)u->L * (size_t)p->m * (size_t)u->C);
    if (!u->embd || !u->pos || !u->mask || !u->cap_idx || !u->cap) {
        mn_uio_free(u);
        return mn_error(MN_ENOMEM, "out of memory for a UIO encoder (segment %d)", p->l);
    }
    u->KD = mn_model_kv_dim(m);
    *out = u;
    return MN_OK;
}

void mn_uio_free(mn_uio *u) {
    if (!u) return;
    mn_context_free(u->ctx);
    free(u->embd);
    free(u->pos);
    free(u->mask);
    free(u->cap_idx);
    free(u->cap);
    free(u->capq);
    free(u);
}

mn_context *mn_uio_context(mn_uio *u) { return u->ctx; }

int mn_uio_capture_queries(mn_uio *u) {
    if (u->capq) return MN_OK;
    u->capq = malloc(sizeof(float) * (size_t)u->L * (size_t)u->p.m * (size_t)mn_model_q_dim(u->model));
    return u->capq ? MN_OK : mn_error(MN_ENOMEM, "out of memory for the encoder's queries");
}

const float *mn_uio_last_queries(const mn_uio *u, const int32_t **pos, int32_t *mm) {
    if (pos) *pos = u->pos + u->last_r; /* the memory tokens follow the segment's tokens */
    if (mm) *mm = u->last_mm;
    return u->capq;
}

/* Lays out r segment tokens followed by mm memory tokens: positions, the
 * stepwise-coverage mask and the memory-token embeddings. */
static void layout(mn_uio *u, int32_t r, int32_t mm) {
    const int32_t T = r + mm, stride = u->p.l / u->p.m;
    for (int32_t i = 0; i < r; i++) u->pos[i] = i;
    for (int32_t i = 0; i < mm; i++) {
        u->pos[r + i] = (i + 1) * stride;
        u->cap_idx[i] = r + i;
        memcpy(u->embd + (size_t)(r + i) * u->C, u->p.mem_embd, sizeof(float) * (size_t)u->C);
    }
    memset(u->mask, 0, (size_t)T * (size_t)T);
    for (int32_t i = 0; i < T; i++) {
        uint8_t *row = u->mask + (size_t)i * (size_t)T;
        if (i < r) {
            memset(row, 1, (size_t)i + 1);
        } else {
            int32_t vis = u->pos[i] < r ? u->pos[i] : r; /* segment tokens before the memory token */
            memset(row, 1, (size_t)vis);
            row[i] = 1;
        }
    }
}

/* Runs the encoder over r segment tokens and their memory tokens, capturing
 * the memory tokens' per-layer normalised attention inputs (into u->cap), or
 * their final hidden states into `out` when out is not NULL. */
static int encode(mn_uio *u, const int32_t *seg, int32_t r, float *out, int32_t *mm_out) {
    const mn_uio_params *p = &u->p;
    if (r <= 0 || r > p->l) return mn_error(MN_EINVAL, "a segment holds 1..%d tokens, not %d", p->l, r);
    const int32_t stride = p->l / p->m, mm = (r + stride - 1) / stride;
    int rc = mn_model_embed(u->model, seg, r, u->embd);
    if (rc) return rc;
    layout(u, r, mm);
    mn_kv_clear(u->ctx);
    if ((rc = mn_context_set_lora(u->ctx, p->encoder))) return rc;
    mn_batch b = {.n = r + mm, .embd = u->embd, .pos = u->pos, .mask = u->mask, .n_capture = mm,
                  .capture_idx = u->cap_idx, .capture_xn = out ? NULL : u->cap, .capture_out = out,
                  .capture_q = u->capq};
    rc = mn_decode_batch(u->ctx, &b, NULL, 0);
    u->last_mm = rc ? 0 : mm;
    u->last_r = r;
    mn_context_set_lora(u->ctx, NULL);
    *mm_out = mm;
    return rc;
}

int mn_uio_encode_out(mn_uio *u, const int32_t *seg, int32_t r, float *out, int32_t *m_out) {
    int32_t mm = 0;
    if (!out) return mn_error(MN_EINVAL, "no output buffer");
    int rc = encode(u, seg, r, out, &mm);
    if (!rc && m_out) *m_out = mm;
    return rc;
}

int mn_uio_compress_n(mn_uio *u, const int32_t *seg, int32_t r, float *k, float *v, int32_t *m_out) {
    const mn_uio_params *p = &u->p;
    int32_t mm = 0;
    int rc = encode(u, seg, r, NULL, &mm);
    if (rc) return rc;
    /* transfer head: memory keys/values from the captured normalised inputs */
    for (int32_t l = 0; l < u->L && !rc; l++) {
        const float *x = u->cap + (size_t)l * mm * u->C;
        rc = mn_context_project(u->ctx, l, 'k', x, mm, k + (size_t)l * mm * u->KD, 1, p->transfer);
        if (!rc) rc = mn_context_project(u->ctx, l, 'v', x, mm, v + (size_t)l * mm * u->KD, 1, p->transfer);
    }
    if (!rc && m_out) *m_out = mm;
    return rc;
}

int mn_uio_compress(mn_uio *u, const int32_t *seg, float *k, float *v) {
    return mn_uio_compress_n(u, seg, u->p.l, k, v, NULL);
}
