/* beacon.c - Activation Beacon: sliding-window condensing into beacon K/V (see beacon.h).
 *
 * Design: raw tokens are decoded in the caller's context like plain text
 * (batched, explicit positions); beacon tokens join the same batches with the
 * beacon embedding, their own projections (mn_batch.alt) and a visibility mask
 * built from the scheme. Their keys (before RoPE) and values are captured in
 * f32 as they are computed, so condensing a window is: drop the window's cells,
 * append the captured beacons at the next memory positions (one rotation from
 * f32, the same numbers a memory file holds).
 */
#include "memory/beacon.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "threadpool.h"

struct mn_beacon {
    mn_context *ctx;
    const mn_model *m;
    mn_beacon_params p;
    int32_t ratios[MN_ADAPTER_MAX_RATIOS + 1], n_ratios;
    int32_t C, L, KD, V;
    int32_t a, next_a;       /* ratio of the current window / of the next ones */
    int32_t n_sink_cells;    /* raw sink cells held (after the first window) */
    int32_t n_mem;           /* beacons held */
    int first_done;          /* a window has been condensed */
    int32_t mem_cap;         /* most beacons kept (oldest dropped); 0: no bound */
    /* current window */
    int32_t pos0;            /* position of its first cell */
    int32_t n_raw, n_bcn;
    int32_t *wkind;          /* (wcap) per window cell: raw index >= 0, beacon j as -(j+1) */
    int32_t n_wcells, wcap;
    float *wk, *wv;          /* (L, wslots, KD): slots [0, sinks) sinks, sinks + j beacon j */
    int32_t wslots;
    /* batch scratch, tcap tokens */
    int32_t tcap;
    int32_t *kind, *ids, *pos, *cap_idx, *cap_slot;
    uint8_t *alt, *lmask;
    float *embd;             /* (tcap, C) */
    float *ck, *cv;          /* (L, wslots, KD) capture / gather buffer */
    uint8_t *mask;
    size_t mask_cap;
    /* collected memory for documents */
    int32_t keep_cap, n_keep;
    float *kk, *kv;          /* (L, keep_cap, KD) */
};

/* ------------------------------------------------------------ binding */

int mn_beacon_bind(const mn_model *m, const mn_adapter *a, mn_beacon_binding *b) {
    memset(b, 0, sizeof *b);
    const mn_adapter_params *cfg = mn_adapter_config(a);
    if (cfg->compressor != MN_COMP_BEACON)
        return mn_error(MN_EINVAL, "expected an Activation Beacon adapter, this one is '%s'",
                        mn_compressor_name(cfg->compressor));
    if (mn_adapter_base_hash(a) != mn_model_hash(m))
        return mn_error(MN_EINVAL, "adapter was made for another model ('%s')", mn_adapter_base_name(a));
    const int L = mn_model_n_layer(m);
    b->q = calloc((size_t)L, sizeof *b->q);
    b->k = calloc((size_t)L, sizeof *b->k);
    b->v = calloc((size_t)L, sizeof *b->v);
    b->o = calloc((size_t)L, sizeof *b->o);
    if (!b->q || !b->k || !b->v || !b->o) {
        mn_beacon_unbind(b);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    for (int l = 0; l < L; l++) {
        b->q[l] = mn_adapter_beacon_proj(a, l, 'q');
        b->k[l] = mn_adapter_beacon_proj(a, l, 'k');
        b->v[l] = mn_adapter_beacon_proj(a, l, 'v');
        b->o[l] = cfg->proj_o ? mn_adapter_beacon_proj(a, l, 'o') : NULL;
    }
    b->params = (mn_beacon_params){.window = cfg->segment,
                                   .ratio = cfg->ratio,
                                   .n_ratios = cfg->n_ratios,
                                   .ratios = cfg->ratios,
                                   .placement = cfg->placement,
                                   .attention = cfg->attention,
                                   .attend_prev = cfg->attend_prev,
                                   .sinks = cfg->sinks,
                                   .embd = mn_adapter_mem_embd(a),
                                   .proj = {.q = b->q, .k = b->k, .v = b->v, .o = cfg->proj_o ? b->o : NULL}};
    return MN_OK;
}

void mn_beacon_unbind(mn_beacon_binding *b) {
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->o);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------ lifecycle */

static int ratio_allowed(const mn_beacon *b, int32_t r) {
    if (r < 1 || b->p.window % r) return 0;
    for (int i = 0; i < b->n_ratios; i++)
        if (b->ratios[i] == r) return 1;
    return 0;
}

int mn_beacon_create(mn_context *ctx, const mn_beacon_params *p, int32_t keep_slots, mn_beacon **out) {
    *out = NULL;
    const mn_model *m = mn_context_model(ctx);
    if (p->window < 1) return mn_error(MN_EINVAL, "beacon window %d must be positive", p->window);
    if (p->ratio < 1 || p->ratio > p->window || p->window % p->ratio)
        return mn_error(MN_EINVAL, "ratio %d does not divide the beacon window %d", p->ratio, p->window);
    if (p->sinks < 0 || p->sinks >= p->window)
        return mn_error(MN_EINVAL, "%d sink tokens do not fit a window of %d", p->sinks, p->window);
    if (!p->embd) return mn_error(MN_EINVAL, "beacons need an embedding");
    if ((unsigned)p->placement > MN_PLACE_APPEND || (unsigned)p->attention > MN_BATTN_FULL_COVERAGE)
        return mn_error(MN_EINVAL, "unknown beacon placement or attention");
    if (p->n_ratios < 0 || p->n_ratios > MN_ADAPTER_MAX_RATIOS || (p->n_ratios && !p->ratios))
        return mn_error(MN_EINVAL, "bad beacon ratio set");
    mn_beacon *b = calloc(1, sizeof *b);
    if (!b) return mn_error(MN_ENOMEM, "out of memory");
    b->ctx = ctx;
    b->m = m;
    b->p = *p;
    b->ratios[b->n_ratios++] = p->ratio;
    for (int i = 0; i < p->n_ratios; i++) b->ratios[b->n_ratios++] = p->ratios[i];
    int32_t amin = p->window;
    for (int i = 0; i < b->n_ratios; i++) {
        if (b->ratios[i] < 1 || p->window % b->ratios[i]) {
            int32_t r = b->ratios[i];
            free(b);
            return mn_error(MN_EINVAL, "ratio %d does not divide the beacon window %d", r, p->window);
        }
        if (b->ratios[i] < amin) amin = b->ratios[i];
    }
    b->C = mn_model_n_embd(m);
    b->L = mn_model_n_layer(m);
    b->KD = mn_model_kv_dim(m);
    b->V = mn_model_n_vocab(m);
    b->a = b->next_a = p->ratio;
    b->wslots = p->sinks + p->window / amin + 1;
    b->wcap = p->window + p->window / amin + 1;
    b->tcap = b->wcap;
    b->keep_cap = keep_slots > 0 ? keep_slots : 0;
    const size_t T = (size_t)b->tcap, ws = (size_t)b->L * (size_t)b->wslots * (size_t)b->KD;
    int ok = 1;
#define ALLOC(ptr, n) ok &= ((ptr) = malloc(sizeof *(ptr) * (n))) != NULL
    ALLOC(b->wkind, (size_t)b->wcap);
    ALLOC(b->wk, ws);
    ALLOC(b->wv, ws);
    ALLOC(b->kind, T);
    ALLOC(b->ids, T);
    ALLOC(b->pos, T);
    ALLOC(b->cap_idx, T);
    ALLOC(b->cap_slot, T);
    ALLOC(b->alt, T);
    ALLOC(b->lmask, T);
    ALLOC(b->embd, T * (size_t)b->C);
    ALLOC(b->ck, ws);
    ALLOC(b->cv, ws);
    if (b->keep_cap) {
        ALLOC(b->kk, (size_t)b->L * (size_t)b->keep_cap * (size_t)b->KD);
        ALLOC(b->kv, (size_t)b->L * (size_t)b->keep_cap * (size_t)b->KD);
    }
#undef ALLOC
    if (!ok) {
        mn_beacon_free(b);
        return mn_error(MN_ENOMEM, "out of memory for a beacon compressor (window %d)", p->window);
    }
    mn_beacon_reset(b);
    *out = b;
    return MN_OK;
}

void mn_beacon_free(mn_beacon *b) {
    if (!b) return;
    free(b->wkind), free(b->wk), free(b->wv);
    free(b->kind), free(b->ids), free(b->pos), free(b->cap_idx), free(b->cap_slot);
    free(b->alt), free(b->lmask), free(b->embd), free(b->ck), free(b->cv), free(b->mask);
    free(b->kk), free(b->kv);
    free(b);
}

void mn_beacon_reset(mn_beacon *b) {
    mn_kv_clear(b->ctx);
    b->n_sink_cells = b->n_mem = b->first_done = 0;
    b->n_raw = b->n_bcn = b->n_wcells = 0;
    b->pos0 = 0;
    b->a = b->next_a;
    b->n_keep = 0;
}

int mn_beacon_set_ratio(mn_beacon *b, int32_t ratio) {
    if (!ratio_allowed(b, ratio))
        return mn_error(MN_EINVAL, "ratio %d is not in the adapter's set or does not divide the window %d", ratio,
                        b->p.window);
    b->next_a = ratio;
    if (b->n_raw == 0 && b->n_wcells == 0) b->a = ratio;
    return MN_OK;
}

int32_t mn_beacon_n_memory(const mn_beacon *b) { return b->n_mem; }
void mn_beacon_set_memory_cap(mn_beacon *b, int32_t max_slots) { b->mem_cap = max_slots > 0 ? max_slots : 0; }
int32_t mn_beacon_n_sinks(const mn_beacon *b) { return b->n_sink_cells; }
int32_t mn_beacon_n_local(const mn_beacon *b) { return b->n_raw; }

/* ------------------------------------------------------------ scheme */

static int32_t min32(int32_t x, int32_t y) { return x < y ? x : y; }

static int full_causal_interleave(const mn_beacon_scheme *s) {
    return s->placement == MN_PLACE_INTERLEAVE && s->attention == MN_BATTN_FULL_COVERAGE;
}

int32_t mn_beacon_offset(const mn_beacon_scheme *s, int32_t kind, int32_t r) {
    const int32_t a = s->ratio;
    if (kind >= 0) return full_causal_interleave(s) ? kind + kind / a : kind;
    const int32_t j = -kind - 1, ap = s->attend_prev ? j : 0;
    if (s->placement == MN_PLACE_INTERLEAVE)
        return min32((j + 1) * a, r) + (s->attention == MN_BATTN_FULL_COVERAGE ? j : 0);
    switch (s->attention) {
    case MN_BATTN_FULL_COVERAGE: return r + j;
    case MN_BATTN_STEP_EXPANSION: return min32((j + 1) * a, r) + ap;
    default: return min32(a, r) + ap;
    }
}

int mn_beacon_sees(const mn_beacon_scheme *s, int32_t tk, int32_t ck, int32_t r) {
    if (tk >= 0) return ck >= 0 ? ck <= tk : full_causal_interleave(s);
    const int32_t j = -tk - 1, a = s->ratio;
    if (ck >= 0) { /* the raw tokens [lo, hi) beacon j covers */
        int32_t lo = 0, hi = min32((j + 1) * a, r);
        if (s->attention == MN_BATTN_SEGMENTATION) lo = j * a;
        else if (s->attention == MN_BATTN_FULL_COVERAGE && s->placement == MN_PLACE_APPEND) hi = r;
        return ck >= lo && ck < hi;
    }
    const int32_t jc = -ck - 1;
    return s->attend_prev ? jc <= j : jc == j;
}

/* The compressor's scheme for the current window's ratio. */
static mn_beacon_scheme scheme_of(const mn_beacon *b) {
    return (mn_beacon_scheme){b->p.placement, b->p.attention, b->p.attend_prev, b->a};
}

/* ------------------------------------------------------------ batches */

static int budget_error(const mn_beacon *b, int32_t need) {
    return mn_error(MN_ERANGE,
                    "%d sink cells, %d beacons of memory and a window of %d cells exceed the context of %d; the "
                    "position budget is spent (use a larger ratio or context)",
                    b->n_sink_cells, b->n_mem, need, mn_context_n_ctx(b->ctx));
}

/* Runs T window tokens of the kinds in b->kind (raw ids in b->ids) after the
 * cells already held; r_after: raw tokens in the window once they are in. */
static int run_batch(mn_beacon *b, int32_t T, int32_t r_after, float *logits, int logits_all) {
    mn_context *c = b->ctx;
    const int32_t N = mn_kv_n_cells(c), w0 = N - b->n_wcells; /* w0: first window cell */
    if (N + T > mn_context_n_ctx(c)) return budget_error(b, b->n_wcells + T);
    int has_bcn = 0, n_cap = 0;
    const int first = !b->first_done;
    const mn_beacon_scheme sc = scheme_of(b);
    for (int32_t t = 0; t < T; t++) {
        int32_t k = b->kind[t];
        int32_t r = k < 0 ? min32((-k) * b->a, r_after) : 0; /* interleave: raw tokens before beacon j */
        if (k < 0 && b->p.placement == MN_PLACE_APPEND) r = r_after;
        b->pos[t] = b->pos0 + mn_beacon_offset(&sc, k, r);
        b->alt[t] = k < 0;
        b->lmask[t] = k >= 0;
        has_bcn |= k < 0;
        if (k < 0 || (first && k < b->p.sinks)) {
            b->cap_idx[n_cap] = t;
            b->cap_slot[n_cap++] = k < 0 ? b->p.sinks + (-k - 1) : k;
        }
        b->wkind[b->n_wcells + t] = k;
    }
    /* the mask is plain causal unless some token must not see an earlier one */
    int need_mask = !(full_causal_interleave(&sc) && b->p.attend_prev) &&
                    (has_bcn || (b->p.placement == MN_PLACE_INTERLEAVE && b->n_bcn > 0));
    if (need_mask) {
        const size_t ld = (size_t)N + (size_t)T, need = ld * (size_t)T;
        if (need > b->mask_cap) {
            uint8_t *nm = realloc(b->mask, need);
            if (!nm) return mn_error(MN_ENOMEM, "out of memory for a %d x %zu mask", T, ld);
            b->mask = nm;
            b->mask_cap = need;
        }
        for (int32_t t = 0; t < T; t++) {
            uint8_t *row = b->mask + (size_t)t * ld;
            int32_t k = b->kind[t];
            int32_t r = b->p.placement == MN_PLACE_APPEND ? r_after : min32((-k) * b->a, r_after);
            memset(row, 1, (size_t)w0);
            for (int32_t j = w0; j < (int32_t)ld; j++)
                row[j] = j <= N + t && mn_beacon_sees(&sc, k, b->wkind[j - w0], r);
        }
    }
    mn_batch bt = {.n = T, .pos = b->pos, .mask = need_mask ? b->mask : NULL, .n_capture = n_cap,
                   .capture_idx = b->cap_idx, .capture_k = n_cap ? b->ck : NULL, .capture_v = n_cap ? b->cv : NULL};
    int rc;
    if (has_bcn) {
        for (int32_t t = 0; t < T; t++) {
            float *e = b->embd + (size_t)t * (size_t)b->C;
            if (b->kind[t] < 0) memcpy(e, b->p.embd, sizeof(float) * (size_t)b->C);
            else if ((rc = mn_model_embed(b->m, &b->ids[t], 1, e))) return rc;
        }
        bt.embd = b->embd;
        bt.alt = b->alt;
        bt.alt_proj = &b->p.proj;
        bt.logits_mask = b->lmask;
    } else {
        bt.tokens = b->ids;
    }
    if ((rc = mn_decode_batch(c, &bt, logits, logits_all))) return rc;
    /* captured (L, n_cap, KD) -> the window's slots */
    for (int32_t l = 0; l < b->L; l++)
        for (int32_t i = 0; i < n_cap; i++) {
            size_t src = ((size_t)l * (size_t)n_cap + (size_t)i) * (size_t)b->KD;
            size_t dst = ((size_t)l * (size_t)b->wslots + (size_t)b->cap_slot[i]) * (size_t)b->KD;
            memmove(b->wk + dst, b->ck + src, sizeof(float) * (size_t)b->KD);
            memmove(b->wv + dst, b->cv + src, sizeof(float) * (size_t)b->KD);
        }
    for (int32_t t = 0; t < T; t++) b->n_bcn += b->kind[t] < 0;
    b->n_wcells += T;
    b->n_raw = r_after;
    return MN_OK;
}

/* Gathers window slots [s0, s0+n) into ck/cv as (L, n, KD) and appends them
 * at positions p0.. (keys rotated here); also into the kept memory. */
static int place_slots(mn_beacon *b, int32_t s0, int32_t n, int32_t p0) {
    if (n <= 0) return MN_OK;
    const size_t KD = (size_t)b->KD;
    for (int32_t l = 0; l < b->L; l++) {
        memcpy(b->ck + (size_t)l * n * KD, b->wk + ((size_t)l * b->wslots + s0) * KD, sizeof(float) * n * KD);
        memcpy(b->cv + (size_t)l * n * KD, b->wv + ((size_t)l * b->wslots + s0) * KD, sizeof(float) * n * KD);
    }
    for (int32_t i = 0; i < n; i++) b->pos[i] = p0 + i;
    int rc = mn_kv_append(b->ctx, n, b->pos, b->ck, b->cv, 0);
    if (rc) return rc;
    if (b->keep_cap) {
        if (b->n_keep + n > b->keep_cap) return mn_error(MN_ERANGE, "beacon memory exceeds %d kept slots", b->keep_cap);
        for (int32_t l = 0; l < b->L; l++) {
            size_t dst = ((size_t)l * b->keep_cap + (size_t)b->n_keep) * KD;
            memcpy(b->kk + dst, b->ck + (size_t)l * n * KD, sizeof(float) * n * KD);
            memcpy(b->kv + dst, b->cv + (size_t)l * n * KD, sizeof(float) * n * KD);
        }
        b->n_keep += n;
    }
    return MN_OK;
}

/* The window's beacons become memory: append placement first runs them (one
 * batch after the raw tokens); then the window's cells are dropped and the
 * beacons (and, after the first window, the sinks) re-placed contiguously. */
static int condense(mn_beacon *b) {
    const int32_t r = b->n_raw;
    int rc;
    if (b->p.placement == MN_PLACE_APPEND) {
        const int32_t nb = (r + b->a - 1) / b->a;
        for (int32_t j = 0; j < nb; j++) b->kind[j] = -(j + 1);
        if ((rc = run_batch(b, nb, r, NULL, 0))) return rc;
    }
    const int first = !b->first_done;
    const int32_t keep = first ? 0 : b->n_sink_cells + b->n_mem;
    if ((rc = mn_kv_drop(b->ctx, keep, mn_kv_n_cells(b->ctx)))) return rc;
    if (first) {
        b->n_sink_cells = min32(b->p.sinks, r);
        if ((rc = place_slots(b, 0, b->n_sink_cells, 0))) return rc;
    }
    if ((rc = place_slots(b, b->p.sinks, b->n_bcn, b->n_sink_cells + b->n_mem))) return rc;
    b->n_mem += b->n_bcn;
    if (b->mem_cap > 0 && b->n_mem > b->mem_cap) {
        /* the oldest beacons go; the rest move down to follow the sinks */
        const int32_t ex = b->n_mem - b->mem_cap, s0 = b->n_sink_cells;
        if ((rc = mn_kv_drop(b->ctx, s0, s0 + ex)) || (rc = mn_kv_shift(b->ctx, s0, mn_kv_n_cells(b->ctx), -ex)))
            return rc;
        b->n_mem -= ex;
    }
    b->first_done = 1;
    b->n_raw = b->n_bcn = b->n_wcells = 0;
    b->pos0 = mn_kv_next_pos(b->ctx);
    b->a = b->next_a;
    return MN_OK;
}

int mn_beacon_feed(mn_beacon *b, const int32_t *ids, int32_t n, float *logits, int logits_all) {
    if (n <= 0 || !ids) return mn_error(MN_EINVAL, "nothing to feed");
    const int32_t W = b->p.window;
    for (int32_t i = 0; i < n;) {
        if (b->n_wcells == 0) b->pos0 = mn_kv_next_pos(b->ctx);
        int32_t p = min32(n - i, W - b->n_raw), T = 0;
        for (int32_t k = 0; k < p; k++) {
            int32_t ri = b->n_raw + k;
            b->ids[T] = ids[i + k];
            b->kind[T++] = ri;
            if (b->p.placement == MN_PLACE_INTERLEAVE && (ri + 1) % b->a == 0) {
                b->ids[T] = 0;
                b->kind[T++] = -((ri + 1) / b->a);
            }
        }
        float *lg = NULL;
        if (logits && logits_all) lg = logits + (size_t)i * (size_t)b->V;
        else if (logits && i + p == n) lg = logits;
        int rc = run_batch(b, T, b->n_raw + p, lg, logits_all);
        if (rc) return rc;
        i += p;
        if (b->n_raw == W && (rc = condense(b))) return rc;
    }
    return MN_OK;
}

int mn_beacon_finish(mn_beacon *b) {
    if (b->n_raw == 0) return MN_OK;
    if (b->p.placement == MN_PLACE_INTERLEAVE && b->n_raw % b->a) {
        b->ids[0] = 0;
        b->kind[0] = -(b->n_bcn + 1);
        int rc = run_batch(b, 1, b->n_raw, NULL, 0);
        if (rc) return rc;
    }
    return condense(b);
}

int mn_beacon_take_memory(mn_beacon *b, float **k, float **v, int32_t *n_slots) {
    *k = *v = NULL;
    *n_slots = 0;
    if (!b->keep_cap) return mn_error(MN_EINVAL, "this beacon compressor does not collect its memory");
    const int32_t M = b->n_keep;
    if (M == b->keep_cap && M > 0) {
        /* full: the buffers already have the (L, M, KD) layout; hand them over */
        *k = b->kk, *v = b->kv, *n_slots = M;
        b->kk = b->kv = NULL;
        b->keep_cap = b->n_keep = 0;
        return MN_OK;
    }
    const size_t KD = (size_t)b->KD, per = (size_t)(M ? M : 1) * KD * (size_t)b->L;
    float *kk = malloc(sizeof(float) * per), *vv = malloc(sizeof(float) * per);
    if (!kk || !vv) {
        free(kk), free(vv);
        return mn_error(MN_ENOMEM, "out of memory for %d memory slots", M);
    }
    for (int32_t l = 0; l < b->L; l++) {
        memcpy(kk + (size_t)l * M * KD, b->kk + (size_t)l * b->keep_cap * KD, sizeof(float) * M * KD);
        memcpy(vv + (size_t)l * M * KD, b->kv + (size_t)l * b->keep_cap * KD, sizeof(float) * M * KD);
    }
    b->n_keep = 0;
    *k = kk;
    *v = vv;
    *n_slots = M;
    return MN_OK;
}

int mn_beacon_compress_doc(const mn_model *m, const mn_beacon_params *p, const int32_t *ids, int64_t n,
                           int n_threads, float **k_out, float **v_out, int32_t *M_out) {
    *k_out = *v_out = NULL;
    *M_out = 0;
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to compress");
    if (p->ratio < 1 || p->window % p->ratio)
        return mn_error(MN_EINVAL, "ratio %d does not divide the beacon window %d", p->ratio, p->window);
    const int64_t W = p->window, per = W / p->ratio, full = n / W, rem = n - full * W;
    const int64_t M = (n < p->sinks ? n : p->sinks) + full * per + (rem + p->ratio - 1) / p->ratio;
    if (M > (1 << 24)) return mn_error(MN_ERANGE, "document too long: %lld memory slots", (long long)M);
    /* the context holds the whole memory plus one window with its beacons */
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)(M + W + per + 1);
    cp.n_batch = (int32_t)(W + per + 1 < 1024 ? W + per + 1 : 1024);
    cp.n_threads = n_threads;
    mn_context *c;
    int rc = mn_context_create(m, &cp, &c);
    if (rc) return rc;
    mn_beacon_params q = *p;
    q.n_ratios = 0; /* a document is condensed at the one ratio asked for */
    mn_beacon *b;
    if ((rc = mn_beacon_create(c, &q, (int32_t)M, &b))) {
        mn_context_free(c);
        return rc;
    }
    for (int64_t i = 0; i < n && !rc; i += W) {
        int32_t piece = (int32_t)(n - i < W ? n - i : W);
        rc = mn_beacon_feed(b, ids + i, piece, NULL, 0);
    }
    if (!rc) rc = mn_beacon_finish(b);
    int32_t got = 0;
    if (!rc) rc = mn_beacon_take_memory(b, k_out, v_out, &got);
    mn_beacon_free(b);
    mn_context_free(c);
    if (!rc && got != M) {
        free(*k_out), free(*v_out);
        *k_out = *v_out = NULL;
        return mn_error(MN_EINVAL, "beacon memory of %d slots, expected %lld", got, (long long)M);
    }
    if (!rc) *M_out = got;
    return rc;
}
