/* forward.c - the forward pass (Llama family and Gemma 3) over a KV cache of
 * explicitly positioned cells.
 *
 * Design:
 * - The KV cache is a sequence of cells; cell i holds, for every layer, one key
 *   and one value vector (f16) and an explicit position pos[i]. A token in a
 *   batch attends to all cells before it in cell order plus itself. Cells need
 *   not come from tokens: the memory layers append compressed K/V as cells
 *   (mn_kv_append), drop ranges (mn_kv_drop) and renumber positions
 *   (mn_kv_shift).
 * - Keys are stored already rotated by RoPE at their cell's position: attention
 *   then costs one dot product per cell, and moving a cell to another position
 *   is a rotation by the difference (RoPE rotations compose: R(a+b) = R(a)R(b)),
 *   applied once by mn_kv_shift rather than at every attention step.
 * - Matrices multiply int8-quantised activations (the weight type's
 *   vec_dot_type) by the quantised weights, split by output rows across the
 *   thread pool. Everything is sized at context creation; decode allocates
 *   nothing.
 *
 * - Gemma 3 is the same pass with switches (model.h): norms of each query and
 *   key head, norms of the attention and feed-forward outputs, GeGLU, scaled
 *   input embeddings, NeoX RoPE with a base per layer, and sliding-window
 *   layers. A window layer's token sees the last n_swa cells up to itself in
 *   cell order; for plain text that is llama.cpp's window of positions, and
 *   cells placed before the window (memory, paged segments) reach only the
 *   global layers. Unless the context asks for every cell (swa_full), a window
 *   layer keeps only the cells it can still see: a buffer of n_swa + n_batch
 *   rows holding cells [swa_base, n_cells), slid forward when a batch needs
 *   room. Cells dropped, appended or read there follow the same rule; reading
 *   a cell a window layer no longer holds is an error, never stale data.
 *
 * Shapes: T tokens in a batch, C n_embd, H heads, K kv heads, D head dim,
 * F n_ff, V vocab, N cache cells (capacity n_ctx).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "forward.h"
#include "kernels/attention.h"
#include "kernels/quant.h"
#include "threadpool.h"

#define N_XQ_SLOTS 3

struct mn_context {
    const mn_model *m;
    mn_threadpool *pool;
    int32_t n_ctx, n_batch;
    int64_t KD;               /* K*D: width of one cell's key (or value) per layer */
    uint8_t *kcache, *vcache;  /* (global layers, n_ctx) rows of rb bytes: KD f16, or KD/32 q8_0 blocks */
    uint8_t *kloc, *vloc;      /* (window layers, swa_cap) rows, or NULL when window layers keep every cell */
    int32_t swa_cap;           /* rows per window layer (0: they live in kcache like the others) */
    int32_t swa_base;          /* first cell the window layers hold */
    int32_t *lidx;             /* (n_layer) the layer's index within its buffer */
    uint8_t *lloc;             /* (n_layer) 1: the layer's rows are in kloc */
    int cache_type;            /* mn_cache_type */
    size_t rb;                 /* bytes of one cell's keys (or values) in one layer */
    const mn_quant_traits *q8; /* q8_0 cache: the row (de)quantiser */
    int32_t *cell_pos;         /* (n_ctx) */
    int32_t n_cells;

    /* scratch, sized for n_batch tokens */
    float *x;    /* (T, C) residual stream */
    float *xn;   /* (T, max(C, F)) normed input / swiglu output */
    float *q;    /* (T, H*D) */
    float *kn;   /* (T, KD) */
    float *vn;   /* (T, KD) */
    float *att;  /* (T, H*D) */
    float *gate; /* (T, F) */
    float *up;   /* (T, F) */
    float *tmp;  /* (T, C) */
    float *rope_cs; /* (2, T, D/2, 2) cos, sin: global layers, then window layers */
    uint8_t *swa_mask; /* per thread: ATT_BQ rows of swa_ld visibility bytes */
    int64_t swa_ld;    /* min(n_swa, n_ctx) + ATT_BQ */
    float *scores;  /* per thread: scores_ld floats of attention scratch */
    size_t scores_ld;
    mn_attn_tile_fn attn;       /* blocks of tokens (prefill) */
    mn_attn_part_fn attn_part;  /* one token (decode), a range of keys */
    mn_attn_tile_q8_fn attn_q8; /* the same over a q8_0 cache */
    mn_attn_part_q8_fn attn_part_q8;
    float *parts;   /* (n_kv_head, max chunks, MN_ATTN_PART) split decode's partial results */
    float *lora_u;  /* (T, max rank) scratch for LoRA */
    int32_t lora_cap;
    const mn_lora_set *lora;
    /* the batch being run (mask geometry) */
    const uint8_t *mask;
    int64_t mask_ld;     /* row length of mask */
    int64_t mask_row0;   /* batch index of this piece's first token */
    /* quantised copies of the current activation, one per vec_dot_type in use */
    struct {
        void *buf;
        const float *src; /* which activation it holds (NULL: none) */
        int type;
        size_t stride;
    } xq[N_XQ_SLOTS];
    size_t xq_cap;       /* bytes per slot */
};

/* ------------------------------------------------------------------------ */
/* Elementwise ops (forward). Backward versions live with training.          */

/* y = x / rms(x) * w over C channels; the sum of squares in double, as llama.cpp. */
static void rmsnorm(float *y, const float *x, const float *w, int64_t C, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < C; i++) ss += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(ss / (double)C) + eps);
    for (int64_t i = 0; i < C; i++) y[i] = x[i] * scale * w[i];
}

/* RoPE angle table for one position: cs[2i] = cos, cs[2i+1] = sin of
 * pos * freq_scale * base^(-2i/D). The angle is advanced by repeated float
 * multiplication, as llama.cpp does, so both agree to the last bit of theta. */
static void rope_table(float *cs, float pos, int D, float base, float freq_scale) {
    const float theta_scale = powf(base, -2.0f / (float)D);
    float theta = pos;
    for (int i = 0; i < D / 2; i++) {
        float t = freq_scale * theta;
        cs[2 * i] = cosf(t);
        cs[2 * i + 1] = sinf(t);
        theta *= theta_scale;
    }
}

/* Rotates the pairs of each of n_heads vectors of D: adjacent (2i, 2i+1), or
 * with neox (i, i + D/2), the layout of models whose Q and K rows the GGUF
 * converter did not permute (Gemma). */
static void rope_apply(float *x, int n_heads, int D, const float *cs, int neox) {
    const int st = neox ? 1 : 2, off = neox ? D / 2 : 1;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * D;
        for (int i = 0; i < D / 2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float a = v[st * i], b = v[st * i + off];
            v[st * i] = a * c - b * s;
            v[st * i + off] = a * s + b * c;
        }
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* ------------------------------------------------------------------------ */
/* Parallel kernels                                                          */

typedef struct {
    const mn_weight *w;
    const void *xq;
    size_t x_stride;
    float *y;
    int64_t ldy;
} gemm_job;

typedef struct {
    gemm_job jobs[3];
    int n_jobs;
    int64_t T;
} gemm_task;

/* Rows of each job are split evenly; 16-row alignment keeps the kernels' tiles whole. */
static void gemm_worker(void *arg, int ith, int nth) {
    gemm_task *t = arg;
    for (int j = 0; j < t->n_jobs; j++) {
        const gemm_job *g = &t->jobs[j];
        long lo, hi;
        mn_split((long)g->w->ne1, ith, nth, 16, &lo, &hi);
        if (lo < hi)
            mn_gemm_q(g->w->qt, g->w->ne0, g->w->data, g->w->row_bytes, lo, hi, g->xq, g->x_stride, t->T, g->y,
                      g->ldy);
    }
}

typedef struct {
    const mn_quant_traits *vt;
    const float *src;
    int64_t K, T;
    void *dst;
    size_t stride;
} quant_task;

static void quant_worker(void *arg, int ith, int nth) {
    quant_task *q = arg;
    long lo, hi;
    mn_split((long)q->T, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) q->vt->from_float(q->src + t * q->K, (char *)q->dst + t * q->stride, q->K);
}

/* Returns the activation `src` (T rows of K floats) converted to the vec_dot
 * type of weight w, reusing a conversion already made for another matrix. */
static const void *activation_for(mn_context *c, const mn_weight *w, const float *src, int64_t T, int64_t K,
                                  size_t *stride) {
    int vdt = w->qt->vec_dot_type;
    if (vdt == MN_TYPE_F32) {
        *stride = (size_t)K * sizeof(float);
        return src;
    }
    int free_slot = -1;
    for (int i = 0; i < N_XQ_SLOTS; i++) {
        if (c->xq[i].src == src && c->xq[i].type == vdt) {
            *stride = c->xq[i].stride;
            return c->xq[i].buf;
        }
        if (free_slot < 0 && c->xq[i].src == NULL) free_slot = i;
    }
    if (free_slot < 0) free_slot = 0;
    const mn_quant_traits *vt = mn_quant_get(vdt);
    size_t st = mn_type_row_bytes(vdt, K);
    quant_task qt = {vt, src, K, T, c->xq[free_slot].buf, st};
    if (T >= 8) mn_threadpool_run(c->pool, quant_worker, &qt);
    else quant_worker(&qt, 0, 1);
    c->xq[free_slot].src = src;
    c->xq[free_slot].type = vdt;
    c->xq[free_slot].stride = st;
    *stride = st;
    return c->xq[free_slot].buf;
}

/* Call whenever the contents of an activation buffer change. */
static void invalidate_xq(mn_context *c) {
    for (int i = 0; i < N_XQ_SLOTS; i++) c->xq[i].src = NULL;
}

typedef struct {
    mn_context *c;
    int layer;
    int64_t T;
    int32_t n_past; /* cells before this batch */
} attn_task;

/* Each (block of ATT_BQ tokens, kv head) pair: the block's G query heads
 * sharing that kv head attend over the cells its tokens can see, tile by tile
 * (attention.h). Pairs are dealt to threads round-robin: later blocks see
 * more cells, so contiguous ranges would load the last thread. A batch of one
 * token (decode) takes the row kernel instead: a tile's f16 conversion and
 * transpose pays off only when several query rows share it (measured:
 * BENCHMARKS.md, "Tiled attention"). */
#define ATT_BQ 32
/* Decode splits each KV head's keys into chunks of DEC_CHUNK rows (flash-decoding):
 * n_kv_head x chunks items keep every thread busy (3 KV heads on 2 threads left one
 * idle a third of the time) and each item streams a short contiguous range. The
 * chunking depends on the context length only, so results do not depend on the
 * thread count; the parts are merged in chunk order. */
#define DEC_CHUNK 512
static int64_t dec_chunks(int64_t n) { return (n + DEC_CHUNK - 1) / DEC_CHUNK; }

/* The cache row of a cell in a layer, and its conversion from and to KD floats. */
static inline size_t row_off(const mn_context *c, int64_t l, int64_t cell) {
    if (c->lloc[l]) return ((size_t)c->lidx[l] * (size_t)c->swa_cap + (size_t)(cell - c->swa_base)) * c->rb;
    return ((size_t)c->lidx[l] * (size_t)c->n_ctx + (size_t)cell) * c->rb;
}
static inline uint8_t *krow(const mn_context *c, int64_t l, int64_t cell) {
    return (c->lloc[l] ? c->kloc : c->kcache) + row_off(c, l, cell);
}
static inline uint8_t *vrow(const mn_context *c, int64_t l, int64_t cell) {
    return (c->lloc[l] ? c->vloc : c->vcache) + row_off(c, l, cell);
}
/* The first cell layer l can attend to from a token in cell q (its window, and what it holds). */
static inline int64_t first_visible(const mn_context *c, int64_t l, int64_t q) {
    if (!c->m->layers[l].swa) return 0;
    int64_t f = q + 1 > c->m->hp.n_swa ? q + 1 - c->m->hp.n_swa : 0;
    return f > c->swa_base ? f : c->swa_base;
}

/* Window layers' buffers: make cells [.., end) fit, keeping cells from `keep` on
 * (and every held cell when they fit): the rows of cells [keep, n_cells) move to
 * the front. end - keep must not exceed swa_cap. */
static void swa_make_room(mn_context *c, int64_t keep, int64_t end) {
    if (!c->swa_cap || end - c->swa_base <= c->swa_cap) return;
    if (keep < c->swa_base) keep = c->swa_base;
    const int64_t n_keep = c->n_cells > keep ? c->n_cells - keep : 0;
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        if (!c->lloc[l] || !n_keep) continue;
        memmove(c->kloc + (size_t)c->lidx[l] * (size_t)c->swa_cap * c->rb, krow(c, l, keep), c->rb * (size_t)n_keep);
        memmove(c->vloc + (size_t)c->lidx[l] * (size_t)c->swa_cap * c->rb, vrow(c, l, keep), c->rb * (size_t)n_keep);
    }
    c->swa_base = (int32_t)keep;
}
static void row_put(const mn_context *c, const float *x, uint8_t *row) {
    if (c->cache_type == MN_CACHE_Q8_0) c->q8->from_float(x, row, c->KD);
    else mn_vec_get()->cvt_f32_f16(c->KD, x, (uint16_t *)row);
}
static void row_get(const mn_context *c, const uint8_t *row, float *x) {
    if (c->cache_type == MN_CACHE_Q8_0) {
        c->q8->to_float(row, x, c->KD);
        return;
    }
    const uint16_t *h = (const uint16_t *)row;
    for (int64_t i = 0; i < c->KD; i++) x[i] = mn_fp16_to_fp32(h[i]);
}

static void attn_worker(void *arg, int ith, int nth) {
    attn_task *a = arg;
    mn_context *c = a->c;
    const mn_hparams *hp = &c->m->hp;
    const int K = hp->n_head_kv, D = hp->head_dim, G = hp->n_head / hp->n_head_kv;
    const int64_t KD = c->KD, HD = (int64_t)hp->n_head * D;
    const int win = c->m->layers[a->layer].swa; /* a sliding-window layer */
    const size_t hb = c->cache_type == MN_CACHE_Q8_0 ? (size_t)D / MN_Q8_BLOCK * MN_Q8_BYTES : (size_t)D * 2;
    const float scale = hp->attn_scale;
    float *sc = c->scores + (size_t)ith * c->scores_ld;
    const int64_t nblk = (a->T + ATT_BQ - 1) / ATT_BQ;
    for (int64_t p = ith; p < nblk * K; p += nth) {
        const int64_t t0 = (p / K) * ATT_BQ;
        const int kh = (int)(p % K);
        const int nq = (int)(a->T - t0 < ATT_BQ ? a->T - t0 : ATT_BQ);
        int64_t lim[ATT_BQ];
        const uint8_t *rows[ATT_BQ];
        /* a window layer's block starts at its first token's window: the kernel reads keys from
         * cell `base` on, and a later token's cells before its own window are masked out */
        const int64_t base = win ? first_visible(c, a->layer, a->n_past + t0) : 0;
        int masked = c->mask != NULL;
        for (int i = 0; i < nq; i++) {
            lim[i] = a->n_past + t0 + i + 1 - base;
            rows[i] = c->mask ? c->mask + (c->mask_row0 + t0 + i) * c->mask_ld + base : NULL;
            if (win && first_visible(c, a->layer, a->n_past + t0 + i) > base) masked = 1;
        }
        if (win && masked) {
            const int64_t ld = c->swa_ld;
            uint8_t *buf = c->swa_mask + (size_t)ith * (size_t)(ATT_BQ * ld);
            for (int i = 0; i < nq; i++) {
                uint8_t *r = buf + (size_t)i * (size_t)ld;
                const int64_t lo = first_visible(c, a->layer, a->n_past + t0 + i) - base;
                memset(r, 0, (size_t)lo);
                if (rows[i]) memcpy(r + lo, rows[i] + lo, (size_t)(lim[i] - lo));
                else memset(r + lo, 1, (size_t)(lim[i] - lo));
                rows[i] = r;
            }
        }
        const uint8_t *kc = krow(c, a->layer, base), *vc = vrow(c, a->layer, base);
        const int64_t off = t0 * HD + (int64_t)kh * G * D;
        if (c->cache_type == MN_CACHE_Q8_0)
            c->attn_q8(G, D, nq, c->q + off, (size_t)HD, scale, kc + kh * hb, vc + kh * hb, c->rb, lim,
                       masked ? rows : NULL, c->att + off, (size_t)HD, sc);
        else
            c->attn(G, D, nq, c->q + off, (size_t)HD, scale, (const uint16_t *)(kc + kh * hb),
                    (const uint16_t *)(vc + kh * hb), (size_t)KD, lim, masked ? rows : NULL, c->att + off,
                    (size_t)HD, sc);
    }
}

/* The first cell a decoded token (the n-th cell) attends to in a layer. */
static int64_t dec_first(const mn_context *c, int layer, int64_t n) { return first_visible(c, layer, n - 1); }

/* One token: (chunk, KV head) items dealt round robin, each writing its part;
 * attn_merge (after the pool returns) combines each head's parts. */
static void decode_worker(void *arg, int ith, int nth) {
    attn_task *a = arg;
    mn_context *c = a->c;
    const mn_hparams *hp = &c->m->hp;
    const int K = hp->n_head_kv, D = hp->head_dim, G = hp->n_head / hp->n_head_kv;
    const int64_t first = dec_first(c, a->layer, (int64_t)a->n_past + 1);
    const int64_t KD = c->KD, n = (int64_t)a->n_past + 1 - first, S = dec_chunks(n), maxS = dec_chunks(c->n_ctx);
    const uint8_t *kc = krow(c, a->layer, first), *vc = vrow(c, a->layer, first);
    const size_t hb = c->cache_type == MN_CACHE_Q8_0 ? (size_t)D / MN_Q8_BLOCK * MN_Q8_BYTES : (size_t)D * 2;
    const float scale = c->m->hp.attn_scale;
    float *sc = c->scores + (size_t)ith * c->scores_ld;
    const uint8_t *mrow = c->mask ? c->mask + c->mask_row0 * c->mask_ld + first : NULL;
    for (int64_t p = ith; p < S * K; p += nth) {
        const int64_t s = p / K, j0 = s * DEC_CHUNK, len = n - j0 < DEC_CHUNK ? n - j0 : DEC_CHUNK;
        const int kh = (int)(p % K);
        float *part = c->parts + ((size_t)kh * (size_t)maxS + (size_t)s) * MN_ATTN_PART(G, D);
        const uint8_t *kr = kc + (size_t)j0 * c->rb + kh * hb, *vr = vc + (size_t)j0 * c->rb + kh * hb;
        if (c->cache_type == MN_CACHE_Q8_0)
            c->attn_part_q8(G, D, len, c->q + (int64_t)kh * G * D, scale, kr, vr, c->rb, mrow ? mrow + j0 : NULL, part,
                            sc);
        else
            c->attn_part(G, D, len, c->q + (int64_t)kh * G * D, scale, (const uint16_t *)kr, (const uint16_t *)vr,
                         (size_t)KD, mrow ? mrow + j0 : NULL, part, sc);
    }
}

static void attn_merge(mn_context *c, int layer, int32_t n_past) {
    const mn_hparams *hp = &c->m->hp;
    const int K = hp->n_head_kv, D = hp->head_dim, G = hp->n_head / hp->n_head_kv;
    const int64_t n = (int64_t)n_past + 1, S = dec_chunks(n - dec_first(c, layer, n)), maxS = dec_chunks(c->n_ctx);
    for (int kh = 0; kh < K; kh++)
        mn_attn_combine(G, D, (int)S, c->parts + (size_t)kh * (size_t)maxS * MN_ATTN_PART(G, D),
                        c->att + (int64_t)kh * G * D);
}

/* y[t] += scale * B (A x[t]) for the tokens of this thread. A batch's rows go
 * through two single-threaded BLAS products (U = scale X A^T, Y += U B^T):
 * done as one dot product per rank and token, the rank-128 LoRA of a UIO
 * encoder re-read A from L2 for every token and took 18% of a UIO ingest. */
typedef struct {
    mn_context *c;
    const mn_lora *lo;
    const float *x;
    int64_t n_in, n_out, T;
    float *y;
    float scale;
} lora_task;

static void lora_worker(void *arg, int ith, int nth) {
    lora_task *a = arg;
    const int32_t r = a->lo->rank, cap = a->c->lora_cap;
    long lo, hi;
    mn_split((long)a->T, ith, nth, 1, &lo, &hi);
    if (hi <= lo) return;
    float *u = a->c->lora_u + (int64_t)lo * cap;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), r, (int)a->n_in, a->scale, a->x + lo * a->n_in,
                (int)a->n_in, a->lo->a, (int)a->n_in, 0.0f, u, cap);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), (int)a->n_out, r, 1.0f, u, cap, a->lo->b, r,
                1.0f, a->y + lo * a->n_out, (int)a->n_out);
}

static void apply_lora(mn_context *c, const mn_lora *lo, const float *x, int64_t n_in, float *y, int64_t n_out,
                       int64_t T) {
    if (!lo || !lo->a || lo->rank <= 0) return;
    lora_task t = {c, lo, x, n_in, n_out, T, y, c->lora->scale};
    if (T >= 4) mn_threadpool_run(c->pool, lora_worker, &t);
    else lora_worker(&t, 0, 1);
}

typedef struct {
    mn_context *c;
    int64_t T;
} swiglu_task;

static void swiglu_worker(void *arg, int ith, int nth) {
    swiglu_task *s = arg;
    const int64_t F = s->c->m->hp.n_ff;
    long lo, hi;
    mn_split((long)(s->T * F), ith, nth, 64, &lo, &hi);
    if (s->c->m->hp.act == MN_ACT_GELU_TANH) {
        /* 0.5 x (1 + tanh u) = x / (1 + exp(-2u)): one vectorised exp per value instead of tanhf
         * (a tenth of a Gemma prefill); xn holds exp(-2u) before the product */
        float *e = s->c->xn, *g = s->c->gate;
        for (long i = lo; i < hi; i++) e[i] = -1.5957691216057308f * g[i] * (1.0f + 0.044715f * g[i] * g[i]);
        if (hi > lo) mn_vec_get()->exp_lincomb(hi - lo, e + lo, e + lo, 1.0f, NULL, 0.0f);
        for (long i = lo; i < hi; i++) e[i] = g[i] / (1.0f + e[i]) * s->c->up[i];
    } else
        for (long i = lo; i < hi; i++) s->c->xn[i] = silu(s->c->gate[i]) * s->c->up[i];
}

/* Alternative f32 projections for flagged tokens (beacons): y[t] = W x[t]
 * for the tokens with flag[t], output rows split across threads so every
 * element is one dot product whatever the thread count. */
typedef struct {
    const float *w;      /* (n_out, n_in) */
    const float *x;      /* (T, n_in) */
    const uint8_t *flag; /* (T) */
    int64_t n_in, n_out, T;
    float *y;            /* (T, ldy) */
    int64_t ldy;
} alt_task;

static void alt_worker(void *arg, int ith, int nth) {
    alt_task *a = arg;
    const mn_vec_ops *vo = mn_vec_get();
    long lo, hi;
    mn_split((long)a->n_out, ith, nth, 8, &lo, &hi);
    for (int64_t t = 0; t < a->T; t++) {
        if (!a->flag[t]) continue;
        const float *x = a->x + t * a->n_in;
        float *y = a->y + t * a->ldy;
        for (long o = lo; o < hi; o++) y[o] = vo->dot_f32(a->n_in, a->w + (int64_t)o * a->n_in, x);
    }
}

static void apply_alt(mn_context *c, const float *w, const uint8_t *flag, const float *x, int64_t n_in, float *y,
                      int64_t n_out, int64_t T) {
    if (!w) return;
    int64_t nf = 0;
    for (int64_t t = 0; t < T; t++) nf += flag[t] != 0;
    if (!nf) return;
    alt_task a = {w, x, flag, n_in, n_out, T, y, n_out};
    if (nf * n_out * n_in >= (1 << 16)) mn_threadpool_run(c->pool, alt_worker, &a);
    else alt_worker(&a, 0, 1);
}

/* ------------------------------------------------------------------------ */

static void *xcalloc(size_t n, size_t sz, int *ok) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) *ok = 0;
    return p;
}

int mn_context_create(const mn_model *m, const mn_context_params *params, mn_context **out) {
    *out = NULL;
    mn_context_params p = params ? *params : mn_context_default_params();
    const mn_hparams *hp = &m->hp;
    if (p.n_ctx <= 0) p.n_ctx = hp->n_ctx_train;
    if (p.n_ctx > (1 << 22)) return mn_error(MN_EINVAL, "context size %d is too large", p.n_ctx);
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    mn_context *c = calloc(1, sizeof *c);
    if (!c) return mn_error(MN_ENOMEM, "out of memory");
    c->m = m;
    c->n_ctx = p.n_ctx;
    c->n_batch = p.n_batch;
    c->KD = (int64_t)hp->n_head_kv * hp->head_dim;
    if (p.cache_type != MN_CACHE_F16 && p.cache_type != MN_CACHE_Q8_0) {
        free(c);
        return mn_error(MN_EINVAL, "cache type %d is not f16 or q8_0 (MNEMO_CACHE_TYPE or --cache-type)", p.cache_type);
    }
    if (p.cache_type == MN_CACHE_Q8_0 && hp->head_dim % MN_Q8_BLOCK) {
        free(c);
        return mn_error(MN_EUNSUPPORTED, "a q8_0 cache needs a head size that is a multiple of %d (this model's: %d)",
                        MN_Q8_BLOCK, hp->head_dim);
    }
    c->cache_type = p.cache_type;
    c->rb = p.cache_type == MN_CACHE_Q8_0 ? (size_t)(c->KD / MN_Q8_BLOCK) * MN_Q8_BYTES : (size_t)c->KD * 2;
    c->q8 = mn_quant_get(MN_TYPE_Q8_0);
    /* our pool splits the LoRA products by rows; BLAS runs single-threaded inside */
    openblas_set_num_threads(1);
    int rc = mn_threadpool_create(p.n_threads, &c->pool);
    if (rc) {
        free(c);
        return rc;
    }
    const int64_t T = p.n_batch, C = hp->n_embd, F = hp->n_ff, HD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t CF = C > F ? C : F;
    /* window layers keep n_swa + n_batch rows unless every cell is asked for (or fits anyway) */
    if (hp->n_swa_layers && !p.swa_full && (int64_t)hp->n_swa + p.n_batch < p.n_ctx)
        c->swa_cap = hp->n_swa + p.n_batch;
    const int n_loc = c->swa_cap ? hp->n_swa_layers : 0;
    const size_t cells = (size_t)(hp->n_layer - n_loc) * (size_t)c->n_ctx, loc = (size_t)n_loc * (size_t)c->swa_cap;
    int ok = 1;
    c->lidx = xcalloc((size_t)hp->n_layer, sizeof(int32_t), &ok);
    c->lloc = xcalloc((size_t)hp->n_layer, 1, &ok);
    for (int l = 0, ng = 0, nl = 0; ok && l < hp->n_layer; l++) {
        c->lloc[l] = c->swa_cap && m->layers[l].swa;
        c->lidx[l] = c->lloc[l] ? nl++ : ng++;
    }
    c->kcache = xcalloc(cells, c->rb, &ok);
    c->vcache = xcalloc(cells, c->rb, &ok);
    if (loc) {
        c->kloc = xcalloc(loc, c->rb, &ok);
        c->vloc = xcalloc(loc, c->rb, &ok);
    }
    c->cell_pos = xcalloc((size_t)c->n_ctx, sizeof(int32_t), &ok);
    c->x = xcalloc((size_t)(T * C), sizeof(float), &ok);
    c->xn = xcalloc((size_t)(T * CF), sizeof(float), &ok);
    c->q = xcalloc((size_t)(T * HD), sizeof(float), &ok);
    c->kn = xcalloc((size_t)(T * c->KD), sizeof(float), &ok);
    c->vn = xcalloc((size_t)(T * c->KD), sizeof(float), &ok);
    c->att = xcalloc((size_t)(T * HD), sizeof(float), &ok);
    c->gate = xcalloc((size_t)(T * F), sizeof(float), &ok);
    c->up = xcalloc((size_t)(T * F), sizeof(float), &ok);
    c->tmp = xcalloc((size_t)(T * C), sizeof(float), &ok);
    c->rope_cs = xcalloc((size_t)(2 * T * hp->head_dim), sizeof(float), &ok);
    if (hp->n_swa) {
        /* a row's visible cells in a window layer span at most the window plus the block's other rows */
        c->swa_ld = (hp->n_swa < p.n_ctx ? hp->n_swa : p.n_ctx) + ATT_BQ;
        c->swa_mask = xcalloc((size_t)mn_threadpool_size(c->pool) * ATT_BQ, (size_t)c->swa_ld, &ok);
    }
    c->scores_ld = mn_attn_tile_scratch(hp->n_head / hp->n_head_kv, hp->head_dim, ATT_BQ, c->n_ctx);
    c->scores = xcalloc((size_t)mn_threadpool_size(c->pool) * c->scores_ld, sizeof(float), &ok);
    c->attn = mn_attn_tile_get();
    c->attn_part = mn_attn_part_get();
    c->attn_q8 = mn_attn_tile_q8_get_isa(mn_cpu_isa());
    c->attn_part_q8 = mn_attn_part_q8_get_isa(mn_cpu_isa());
    c->parts = xcalloc((size_t)hp->n_head_kv * (size_t)dec_chunks(c->n_ctx) *
                           MN_ATTN_PART(hp->n_head / hp->n_head_kv, hp->head_dim),
                       sizeof(float), &ok);
    /* Largest activation row in any vec_dot type: a K-quant or Q8 row of max(C, F, HD). */
    int64_t Kmax = CF > HD ? CF : HD;
    size_t row_max = (size_t)Kmax * 4; /* f32 is the widest per element */
    c->xq_cap = row_max * (size_t)T;
    for (int i = 0; i < N_XQ_SLOTS; i++) c->xq[i].buf = xcalloc(c->xq_cap, 1, &ok);
    if (!ok) {
        mn_context_free(c);
        return mn_error(MN_ENOMEM, "out of memory allocating a context of %d tokens (KV cache %.1f MiB)", p.n_ctx,
                        2.0 * (double)(cells + loc) * (double)c->rb / (1 << 20));
    }
    *out = c;
    return MN_OK;
}

void mn_context_free(mn_context *c) {
    if (!c) return;
    mn_threadpool_free(c->pool);
    free(c->kcache);
    free(c->vcache);
    free(c->kloc);
    free(c->vloc);
    free(c->lidx);
    free(c->lloc);
    free(c->cell_pos);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->kn);
    free(c->vn);
    free(c->att);
    free(c->gate);
    free(c->up);
    free(c->tmp);
    free(c->rope_cs);
    free(c->swa_mask);
    free(c->scores);
    free(c->parts);
    free(c->lora_u);
    for (int i = 0; i < N_XQ_SLOTS; i++) free(c->xq[i].buf);
    free(c);
}

int mn_cache_type_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "f16")) return MN_CACHE_F16;
    if (!strcmp(name, "q8_0") || !strcmp(name, "q8")) return MN_CACHE_Q8_0;
    return -1;
}

const char *mn_cache_type_name(int type) {
    return type == MN_CACHE_F16 ? "f16" : type == MN_CACHE_Q8_0 ? "q8_0" : "?";
}

mn_context_params mn_context_default_params(void) {
    mn_context_params p = {.n_ctx = 0, .n_batch = 512, .n_threads = 0, .cache_type = MN_CACHE_F16, .swa_full = 0};
    const char *env = getenv("MNEMO_CACHE_TYPE");
    if (env && *env) p.cache_type = mn_cache_type_parse(env); /* unknown: -1, refused by mn_context_create */
    return p;
}

int32_t mn_context_n_ctx(const mn_context *c) { return c->n_ctx; }
int mn_context_n_threads(const mn_context *c) { return mn_threadpool_size(c->pool); }
const mn_model *mn_context_model(const mn_context *c) { return c->m; }
size_t mn_model_kv_bytes(const mn_model *m, int64_t cells, int cache_type) {
    const mn_hparams *hp = &m->hp;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    const size_t rb = cache_type == MN_CACHE_Q8_0 ? (size_t)(KD / MN_Q8_BLOCK) * MN_Q8_BYTES : (size_t)KD * 2;
    const int64_t held = hp->n_swa && cells > hp->n_swa + 512 ? hp->n_swa + 512 : cells;
    return rb * 2 *
           ((size_t)(hp->n_layer - hp->n_swa_layers) * (size_t)cells + (size_t)hp->n_swa_layers * (size_t)held);
}

size_t mn_context_kv_bytes(const mn_context *c) {
    size_t rows = 0;
    for (int l = 0; l < c->m->hp.n_layer; l++) rows += (size_t)(c->lloc[l] ? c->n_cells - c->swa_base : c->n_cells);
    return rows * c->rb * 2;
}

/* ------------------------------------------------------------------------ */
/* KV cache cells                                                            */

int32_t mn_kv_n_cells(const mn_context *c) { return c->n_cells; }
int32_t mn_kv_pos(const mn_context *c, int32_t cell) {
    return (cell >= 0 && cell < c->n_cells) ? c->cell_pos[cell] : -1;
}
int32_t mn_kv_next_pos(const mn_context *c) { return c->n_cells ? c->cell_pos[c->n_cells - 1] + 1 : 0; }
void mn_kv_clear(mn_context *c) { c->n_cells = c->swa_base = 0; }

int mn_kv_drop(mn_context *c, int32_t c0, int32_t c1) {
    if (c0 < 0 || c1 < c0 || c1 > c->n_cells)
        return mn_error(MN_EINVAL, "kv drop [%d, %d) outside the %d cells", c0, c1, c->n_cells);
    int32_t tail = c->n_cells - c1, nd = c1 - c0;
    if (nd == 0) return MN_OK;
    /* window layers hold [swa_base, n_cells): the held cells after the range move down */
    const int32_t b = c->swa_base, lo = c0 > b ? c0 : b, hi = c1 > b ? c1 : b;
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        if (c->lloc[l]) {
            memmove(krow(c, l, lo), krow(c, l, hi), c->rb * (size_t)(c->n_cells - hi));
            memmove(vrow(c, l, lo), vrow(c, l, hi), c->rb * (size_t)(c->n_cells - hi));
            continue;
        }
        memmove(krow(c, l, c0), krow(c, l, c1), c->rb * (size_t)tail);
        memmove(vrow(c, l, c0), vrow(c, l, c1), c->rb * (size_t)tail);
    }
    c->swa_base = b >= c1 ? b - nd : b >= c0 ? c0 : b;
    memmove(c->cell_pos + c0, c->cell_pos + c1, sizeof(int32_t) * (size_t)tail);
    c->n_cells -= nd;
    return MN_OK;
}

int mn_kv_shift(mn_context *c, int32_t c0, int32_t c1, int32_t delta) {
    if (c0 < 0 || c1 < c0 || c1 > c->n_cells)
        return mn_error(MN_EINVAL, "kv shift [%d, %d) outside the %d cells", c0, c1, c->n_cells);
    if (delta == 0) return MN_OK;
    const mn_hparams *hp = &c->m->hp;
    const int D = hp->head_dim, K = hp->n_head_kv;
    float cs[1024];
    if (D > 1024) return mn_error(MN_EUNSUPPORTED, "head dim %d too large", D);
    /* each key row back to floats, rotated by delta, stored again (a q8_0 row is quantised anew, as
     * llama.cpp shifts a quantised cache); the context's K scratch holds one row */
    float *row = c->kn;
    for (int l = 0; l < hp->n_layer; l++) {
        const mn_layer *L = &c->m->layers[l];
        if (l == 0 || L->rope_base != L[-1].rope_base || L->rope_freq_scale != L[-1].rope_freq_scale)
            rope_table(cs, (float)delta, D, L->rope_base, L->rope_freq_scale);
        for (int32_t j = c->lloc[l] && c0 < c->swa_base ? c->swa_base : c0; j < c1; j++) {
            uint8_t *k = krow(c, l, j);
            row_get(c, k, row);
            rope_apply(row, K, D, cs, hp->rope_neox);
            row_put(c, row, k);
        }
    }
    for (int32_t j = c0; j < c1; j++) c->cell_pos[j] += delta;
    return MN_OK;
}

int mn_rope_rotate(const mn_model *m, int layer, float *x, int n_heads, int32_t pos) {
    const mn_hparams *hp = &m->hp;
    float cs[1024];
    if (hp->head_dim > 1024) return mn_error(MN_EUNSUPPORTED, "head dim %d too large", hp->head_dim);
    if (layer < 0 || layer >= hp->n_layer) return mn_error(MN_EINVAL, "layer %d out of range", layer);
    rope_table(cs, (float)pos, hp->head_dim, m->layers[layer].rope_base, m->layers[layer].rope_freq_scale);
    rope_apply(x, n_heads, hp->head_dim, cs, hp->rope_neox);
    return MN_OK;
}

int mn_kv_append(mn_context *c, int32_t n, const int32_t *pos, const float *k, const float *v, int k_has_rope) {
    const mn_hparams *hp = &c->m->hp;
    if (n <= 0 || !pos || !k || !v) return mn_error(MN_EINVAL, "kv append: empty or missing input");
    if (c->n_cells + n > c->n_ctx)
        return mn_error(MN_ERANGE, "kv append of %d cells does not fit (%d of %d used)", n, c->n_cells, c->n_ctx);
    const int D = hp->head_dim;
    const int64_t KD = c->KD;
    float cs[1024];
    if (D > 1024) return mn_error(MN_EUNSUPPORTED, "head dim %d too large", D);
    float *row = c->kn; /* one row of scratch */
    /* window layers keep the last n_swa cells of what the cache will hold */
    swa_make_room(c, (int64_t)c->n_cells + n - hp->n_swa, (int64_t)c->n_cells + n);
    for (int32_t j = 0; j < n; j++) {
        for (int l = 0; l < hp->n_layer; l++) {
            const mn_layer *L = &c->m->layers[l];
            if (c->lloc[l] && c->n_cells + j < c->swa_base) continue;
            const float *ks = k + ((int64_t)l * n + j) * KD, *vs = v + ((int64_t)l * n + j) * KD;
            memcpy(row, ks, sizeof(float) * (size_t)KD);
            if (!k_has_rope && (l == 0 || L->rope_base != L[-1].rope_base || L->rope_freq_scale != L[-1].rope_freq_scale))
                rope_table(cs, (float)pos[j], D, L->rope_base, L->rope_freq_scale);
            if (!k_has_rope) rope_apply(row, hp->n_head_kv, D, cs, hp->rope_neox);
            row_put(c, row, krow(c, l, c->n_cells + j));
            row_put(c, vs, vrow(c, l, c->n_cells + j));
        }
        c->cell_pos[c->n_cells + j] = pos[j];
    }
    c->n_cells += n;
    return MN_OK;
}

int mn_kv_read(const mn_context *c, int32_t c0, int32_t n, float *k, float *v) {
    if (c0 < 0 || n < 0 || c0 + n > c->n_cells) return mn_error(MN_EINVAL, "kv read outside the cache");
    if (c->swa_cap && n > 0 && c0 < c->swa_base)
        return mn_error(MN_ERANGE,
                        "kv read of cell %d: the sliding-window layers keep only cells from %d on (a context "
                        "that reads old cells back needs swa_full)", c0, c->swa_base);
    const int64_t KD = c->KD;
    for (int l = 0; l < c->m->hp.n_layer; l++)
        for (int32_t j = 0; j < n; j++) {
            if (k) row_get(c, krow(c, l, c0 + j), k + ((int64_t)l * n + j) * KD);
            if (v) row_get(c, vrow(c, l, c0 + j), v + ((int64_t)l * n + j) * KD);
        }
    return MN_OK;
}

int mn_kv_read_unrotated(const mn_context *c, int32_t c0, int32_t n, float *k, float *v) {
    int rc = mn_kv_read(c, c0, n, k, v);
    if (rc || !k) return rc;
    const mn_hparams *hp = &c->m->hp;
    const int D = hp->head_dim;
    float cs[1024];
    if (D > 1024) return mn_error(MN_EUNSUPPORTED, "head dim %d too large", D);
    /* one table per cell, built again only where a layer's RoPE differs from the one before */
    for (int32_t j = 0; j < n; j++)
        for (int l = 0; l < hp->n_layer; l++) {
            const mn_layer *L = &c->m->layers[l];
            if (l == 0 || L->rope_base != L[-1].rope_base || L->rope_freq_scale != L[-1].rope_freq_scale)
                rope_table(cs, (float)-c->cell_pos[c0 + j], D, L->rope_base, L->rope_freq_scale);
            rope_apply(k + ((int64_t)l * n + j) * c->KD, hp->n_head_kv, D, cs, hp->rope_neox);
        }
    return MN_OK;
}

/* ------------------------------------------------------------------------ */

/* One piece of T <= n_batch tokens of batch b, starting at batch index i0,
 * through every layer. logits: NULL, (V) for the last token (or for row
 * only_row >= 0 of the piece), or (T, V) (or the rows b->logits_mask flags). */
static int forward_batch(mn_context *c, const mn_batch *b, int64_t i0, int64_t T, float *logits, int all,
                         int64_t only_row) {
    const int32_t *tokens = b->tokens ? b->tokens + i0 : NULL;
    const float *embd = b->embd ? b->embd + i0 * c->m->hp.n_embd : NULL;
    const mn_model *m = c->m;
    const mn_hparams *hp = &m->hp;
    const int64_t C = hp->n_embd, F = hp->n_ff, H = hp->n_head, K = hp->n_head_kv, D = hp->head_dim,
                  HD = H * D, KD = c->KD;
    const int32_t n_past = c->n_cells;
    const int32_t pos0 = mn_kv_next_pos(c);

    /* embeddings (given ones are taken as they are: mn_model_embed scales its own) */
    float *cs_swa = c->rope_cs + T * D;
    for (int64_t t = 0; t < T; t++) {
        if (tokens) {
            m->tok_embd.qt->to_float((const char *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                                     c->x + t * C, C);
            if (hp->embd_scale != 1.0f)
                for (int64_t i = 0; i < C; i++) c->x[t * C + i] *= hp->embd_scale;
        } else {
            memcpy(c->x + t * C, embd + t * C, sizeof(float) * (size_t)C);
        }
        int32_t p = b->pos ? b->pos[i0 + t] : pos0 + (int32_t)t;
        rope_table(c->rope_cs + t * D, (float)p, (int)D, hp->rope_base, hp->rope_freq_scale);
        if (hp->n_swa_layers) rope_table(cs_swa + t * D, (float)p, (int)D, hp->rope_base_swa, 1.0f);
        c->cell_pos[n_past + t] = p;
    }
    c->mask_row0 = i0;
    /* the window layers' buffers take this piece, keeping what its first token can see */
    swa_make_room(c, (int64_t)n_past + 1 - hp->n_swa, (int64_t)n_past + T);

    for (int l = 0; l < hp->n_layer; l++) {
        const mn_layer *L = &m->layers[l];
        /* attention block */
        for (int64_t t = 0; t < T; t++) rmsnorm(c->xn + t * C, c->x + t * C, L->attn_norm, C, hp->norm_eps);
        if (b->capture_xn)
            for (int32_t k = 0; k < b->n_capture; k++) {
                int64_t t = b->capture_idx[k] - i0;
                if (t >= 0 && t < T)
                    memcpy(b->capture_xn + ((int64_t)l * b->n_capture + k) * C, c->xn + t * C, sizeof(float) * (size_t)C);
            }
        invalidate_xq(c);
        gemm_task g = {.n_jobs = 3, .T = T};
        size_t st;
        const void *xq;
        xq = activation_for(c, &L->wq, c->xn, T, C, &st);
        g.jobs[0] = (gemm_job){&L->wq, xq, st, c->q, HD};
        xq = activation_for(c, &L->wk, c->xn, T, C, &st);
        g.jobs[1] = (gemm_job){&L->wk, xq, st, c->kn, KD};
        xq = activation_for(c, &L->wv, c->xn, T, C, &st);
        g.jobs[2] = (gemm_job){&L->wv, xq, st, c->vn, KD};
        mn_threadpool_run(c->pool, gemm_worker, &g);
        if (c->lora) {
            if (c->lora->q) apply_lora(c, &c->lora->q[l], c->xn, C, c->q, HD, T);
            if (c->lora->k) apply_lora(c, &c->lora->k[l], c->xn, C, c->kn, KD, T);
            if (c->lora->v) apply_lora(c, &c->lora->v[l], c->xn, C, c->vn, KD, T);
        }
        const uint8_t *alt = b->alt && b->alt_proj ? b->alt + i0 : NULL;
        if (alt) {
            const mn_proj_set *ap = b->alt_proj;
            if (ap->q) apply_alt(c, ap->q[l], alt, c->xn, C, c->q, HD, T);
            if (ap->k) apply_alt(c, ap->k[l], alt, c->xn, C, c->kn, KD, T);
            if (ap->v) apply_alt(c, ap->v[l], alt, c->xn, C, c->vn, KD, T);
        }
        if (L->q_norm)
            for (int64_t i = 0; i < T * H; i++) rmsnorm(c->q + i * D, c->q + i * D, L->q_norm, D, hp->norm_eps);
        if (L->k_norm)
            for (int64_t i = 0; i < T * K; i++) rmsnorm(c->kn + i * D, c->kn + i * D, L->k_norm, D, hp->norm_eps);
        if (b->capture_q)
            for (int32_t k = 0; k < b->n_capture; k++) {
                int64_t t = b->capture_idx[k] - i0;
                if (t >= 0 && t < T)
                    memcpy(b->capture_q + ((size_t)l * (size_t)b->n_capture + (size_t)k) * (size_t)HD, c->q + t * HD,
                           sizeof(float) * (size_t)HD);
            }
        if (b->capture_k || b->capture_v)
            for (int32_t k = 0; k < b->n_capture; k++) {
                int64_t t = b->capture_idx[k] - i0;
                if (t < 0 || t >= T) continue;
                size_t dst = ((size_t)l * (size_t)b->n_capture + (size_t)k) * (size_t)KD;
                if (b->capture_k) memcpy(b->capture_k + dst, c->kn + t * KD, sizeof(float) * (size_t)KD);
                if (b->capture_v) memcpy(b->capture_v + dst, c->vn + t * KD, sizeof(float) * (size_t)KD);
            }

        const float *cs = L->swa ? cs_swa : c->rope_cs;
        for (int64_t t = 0; t < T; t++) {
            rope_apply(c->q + t * HD, (int)H, (int)D, cs + t * D, hp->rope_neox);
            rope_apply(c->kn + t * KD, (int)K, (int)D, cs + t * D, hp->rope_neox);
            row_put(c, c->kn + t * KD, krow(c, l, n_past + t));
            row_put(c, c->vn + t * KD, vrow(c, l, n_past + t));
        }
        attn_task at = {c, l, T, n_past};
        mn_threadpool_run(c->pool, T == 1 ? decode_worker : attn_worker, &at);
        if (T == 1) attn_merge(c, l, n_past);

        invalidate_xq(c);
        g = (gemm_task){.n_jobs = 1, .T = T};
        xq = activation_for(c, &L->wo, c->att, T, HD, &st);
        g.jobs[0] = (gemm_job){&L->wo, xq, st, c->tmp, C};
        mn_threadpool_run(c->pool, gemm_worker, &g);
        if (c->lora && c->lora->o) apply_lora(c, &c->lora->o[l], c->att, HD, c->tmp, C, T);
        if (alt && b->alt_proj->o) apply_alt(c, b->alt_proj->o[l], alt, c->att, HD, c->tmp, C, T);
        if (L->post_attn_norm)
            for (int64_t t = 0; t < T; t++) rmsnorm(c->tmp + t * C, c->tmp + t * C, L->post_attn_norm, C, hp->norm_eps);
        for (int64_t i = 0; i < T * C; i++) c->x[i] += c->tmp[i];

        /* feed-forward block */
        for (int64_t t = 0; t < T; t++) rmsnorm(c->xn + t * C, c->x + t * C, L->ffn_norm, C, hp->norm_eps);
        invalidate_xq(c);
        g = (gemm_task){.n_jobs = 2, .T = T};
        xq = activation_for(c, &L->w_gate, c->xn, T, C, &st);
        g.jobs[0] = (gemm_job){&L->w_gate, xq, st, c->gate, F};
        xq = activation_for(c, &L->w_up, c->xn, T, C, &st);
        g.jobs[1] = (gemm_job){&L->w_up, xq, st, c->up, F};
        mn_threadpool_run(c->pool, gemm_worker, &g);
        swiglu_task sw = {c, T};
        if (T * F >= 4096) mn_threadpool_run(c->pool, swiglu_worker, &sw);
        else swiglu_worker(&sw, 0, 1);
        invalidate_xq(c);
        g = (gemm_task){.n_jobs = 1, .T = T};
        xq = activation_for(c, &L->w_down, c->xn, T, F, &st);
        g.jobs[0] = (gemm_job){&L->w_down, xq, st, c->tmp, C};
        mn_threadpool_run(c->pool, gemm_worker, &g);
        if (L->post_ffn_norm)
            for (int64_t t = 0; t < T; t++) rmsnorm(c->tmp + t * C, c->tmp + t * C, L->post_ffn_norm, C, hp->norm_eps);
        for (int64_t i = 0; i < T * C; i++) c->x[i] += c->tmp[i];
    }
    c->n_cells += (int32_t)T;
    if (b->capture_out)
        for (int32_t k = 0; k < b->n_capture; k++) {
            int64_t t = b->capture_idx[k] - i0;
            if (t >= 0 && t < T) rmsnorm(b->capture_out + (int64_t)k * C, c->x + t * C, m->output_norm, C, hp->norm_eps);
        }

    if (!logits) return MN_OK;
    /* final norm and output projection, only for the rows that need logits */
    int64_t nt = 0;
    if (b->logits_mask && all) {
        for (int64_t t = 0; t < T; t++)
            if (b->logits_mask[i0 + t]) rmsnorm(c->xn + nt++ * C, c->x + t * C, m->output_norm, C, hp->norm_eps);
    } else {
        int64_t t0 = only_row >= 0 ? only_row : all ? 0 : T - 1, t1 = all ? T : t0 + 1;
        for (int64_t t = t0; t < t1; t++) rmsnorm(c->xn + nt++ * C, c->x + t * C, m->output_norm, C, hp->norm_eps);
    }
    if (nt == 0) return MN_OK;
    invalidate_xq(c);
    size_t st;
    const void *xq = activation_for(c, &m->output, c->xn, nt, C, &st);
    gemm_task g = {.n_jobs = 1, .T = nt};
    g.jobs[0] = (gemm_job){&m->output, xq, st, logits, hp->n_vocab};
    mn_threadpool_run(c->pool, gemm_worker, &g);
    return MN_OK;
}

int mn_decode_batch(mn_context *c, const mn_batch *b, float *logits, int all) {
    const mn_hparams *hp = &c->m->hp;
    const int32_t n = b->n;
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to decode (%d tokens)", n);
    if (!b->tokens == !b->embd) return mn_error(MN_EINVAL, "a batch needs exactly one of tokens and embeddings");
    if ((int64_t)c->n_cells + n > c->n_ctx)
        return mn_error(MN_ERANGE, "%d tokens do not fit in the context: %d of %d positions are used", n,
                        c->n_cells, c->n_ctx);
    if (b->tokens)
        for (int32_t i = 0; i < n; i++)
            if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab)
                return mn_error(MN_EINVAL, "token id %d at index %d is outside the vocabulary (%d)", b->tokens[i], i,
                                hp->n_vocab);
    const int64_t ld = (int64_t)c->n_cells + n;
    if (b->mask)
        for (int32_t i = 0; i < n; i++) {
            const uint8_t *row = b->mask + (int64_t)i * ld;
            int any = 0;
            for (int64_t j = 0; j < ld; j++) {
                if (!row[j]) continue;
                if (j > c->n_cells + i)
                    return mn_error(MN_EINVAL, "mask lets batch token %d see the later cell %lld", i, (long long)j);
                any = 1;
            }
            if (!any) return mn_error(MN_EINVAL, "mask leaves batch token %d nothing to attend to", i);
        }
    if (b->n_capture < 0 || (b->n_capture && !b->capture_idx))
        return mn_error(MN_EINVAL, "bad capture list");
    for (int32_t k = 0; k < b->n_capture; k++)
        if (b->capture_idx[k] < 0 || b->capture_idx[k] >= n)
            return mn_error(MN_EINVAL, "capture index %d outside the batch of %d", b->capture_idx[k], n);
    if ((b->capture_k || b->capture_v) && !b->n_capture) return mn_error(MN_EINVAL, "K/V capture without a capture list");
    /* with a logits mask: the last flagged token (single-row logits) */
    int64_t last_flag = -1;
    if (b->logits_mask && !all)
        for (int32_t i = 0; i < n; i++)
            if (b->logits_mask[i]) last_flag = i;
    c->mask = b->mask;
    c->mask_ld = ld;
    int rc = MN_OK;
    int64_t rows_done = 0; /* logits rows already written (masked, all) */
    for (int32_t i0 = 0; i0 < n && !rc; i0 += c->n_batch) {
        int32_t nb = n - i0 < c->n_batch ? n - i0 : c->n_batch;
        float *lg = NULL;
        int64_t only = -1;
        if (logits && all && b->logits_mask) {
            lg = logits + rows_done * hp->n_vocab;
            for (int32_t t = 0; t < nb; t++) rows_done += b->logits_mask[i0 + t] != 0;
        } else if (logits && all) {
            lg = logits + (int64_t)i0 * hp->n_vocab;
        } else if (logits && b->logits_mask) {
            if (last_flag >= i0 && last_flag < i0 + nb) lg = logits, only = last_flag - i0;
        } else if (logits && i0 + nb == n) {
            lg = logits;
        }
        rc = forward_batch(c, b, i0, nb, lg, all, only);
    }
    c->mask = NULL;
    return rc;
}

int mn_decode(mn_context *c, const int32_t *tokens, int32_t n, float *logits, int logits_all) {
    if (!tokens) return mn_error(MN_EINVAL, "no tokens");
    mn_batch b = {.n = n, .tokens = tokens};
    return mn_decode_batch(c, &b, logits, logits_all);
}

int mn_decode_embd(mn_context *c, const float *embd, int32_t n, float *logits, int logits_all) {
    if (!embd) return mn_error(MN_EINVAL, "no embeddings");
    mn_batch b = {.n = n, .embd = embd};
    return mn_decode_batch(c, &b, logits, logits_all);
}

int mn_context_project(mn_context *c, int layer, char which, const float *x, int32_t T, float *y, int with_lora,
                       const mn_lora_set *lora) {
    const mn_hparams *hp = &c->m->hp;
    if (layer < 0 || layer >= hp->n_layer) return mn_error(MN_EINVAL, "layer %d out of range", layer);
    if (T <= 0 || T > c->n_batch) return mn_error(MN_EINVAL, "project: %d rows (batch size %d)", T, c->n_batch);
    const mn_layer *L = &c->m->layers[layer];
    const mn_weight *w;
    const mn_lora *lo = NULL;
    switch (which) {
    case 'q': w = &L->wq; lo = lora && lora->q ? &lora->q[layer] : NULL; break;
    case 'k': w = &L->wk; lo = lora && lora->k ? &lora->k[layer] : NULL; break;
    case 'v': w = &L->wv; lo = lora && lora->v ? &lora->v[layer] : NULL; break;
    case 'o': w = &L->wo; lo = lora && lora->o ? &lora->o[layer] : NULL; break;
    default: return mn_error(MN_EINVAL, "unknown projection '%c'", which);
    }
    invalidate_xq(c);
    size_t st;
    const void *xq = activation_for(c, w, x, T, w->ne0, &st);
    gemm_task g = {.n_jobs = 1, .T = T};
    g.jobs[0] = (gemm_job){w, xq, st, y, w->ne1};
    mn_threadpool_run(c->pool, gemm_worker, &g);
    invalidate_xq(c);
    if (with_lora && lo && lo->rank > 0) {
        if (lo->rank > c->lora_cap) {
            float *u = realloc(c->lora_u, sizeof(float) * (size_t)lo->rank * (size_t)c->n_batch);
            if (!u) return mn_error(MN_ENOMEM, "out of memory for LoRA scratch");
            c->lora_u = u;
            c->lora_cap = lo->rank;
        }
        const mn_lora_set *saved = c->lora;
        c->lora = lora; /* apply_lora reads the scale from the installed set */
        apply_lora(c, lo, x, w->ne0, y, w->ne1, T);
        c->lora = saved;
    }
    /* queries and keys as the layer uses them: with their per-head norms (Gemma 3) */
    const float *hn = which == 'q' ? L->q_norm : which == 'k' ? L->k_norm : NULL;
    if (hn)
        for (int64_t i = 0; i < (int64_t)T * (w->ne1 / hp->head_dim); i++)
            rmsnorm(y + i * hp->head_dim, y + i * hp->head_dim, hn, hp->head_dim, hp->norm_eps);
    return MN_OK;
}

int32_t mn_model_kv_dim(const mn_model *m) { return m->hp.n_head_kv * m->hp.head_dim; }
int32_t mn_model_q_dim(const mn_model *m) { return m->hp.n_head * m->hp.head_dim; }

int mn_model_embed(const mn_model *m, const int32_t *ids, int32_t n, float *out) {
    const int64_t C = m->hp.n_embd;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab)
            return mn_error(MN_EINVAL, "token id %d outside the vocabulary (%d)", ids[i], m->hp.n_vocab);
        m->tok_embd.qt->to_float((const char *)m->tok_embd.data + (size_t)ids[i] * m->tok_embd.row_bytes, out + i * C,
                                 C);
        if (m->hp.embd_scale != 1.0f)
            for (int64_t j = 0; j < C; j++) out[i * C + j] *= m->hp.embd_scale;
    }
    return MN_OK;
}

int mn_context_set_lora(mn_context *c, const mn_lora_set *set) {
    c->lora = NULL;
    if (!set) return MN_OK;
    int32_t rmax = 0;
    const mn_lora *lists[4] = {set->q, set->k, set->v, set->o};
    for (int k = 0; k < 4; k++)
        for (int l = 0; lists[k] && l < c->m->hp.n_layer; l++) {
            if (lists[k][l].rank < 0 || (lists[k][l].rank > 0 && (!lists[k][l].a || !lists[k][l].b)))
                return mn_error(MN_EINVAL, "LoRA for layer %d: missing matrices", l);
            if (lists[k][l].rank > rmax) rmax = lists[k][l].rank;
        }
    if (rmax > c->lora_cap) {
        float *u = realloc(c->lora_u, sizeof(float) * (size_t)rmax * (size_t)c->n_batch);
        if (!u) return mn_error(MN_ENOMEM, "out of memory for LoRA scratch");
        c->lora_u = u;
        c->lora_cap = rmax;
    }
    c->lora = set;
    return MN_OK;
}

