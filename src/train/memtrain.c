/* memtrain.c - the UIO memory chain's forward, losses and gradient modes.
 *
 * Per window: the sinks' K/V (frozen model on the first n_sinks tokens), the
 * encoder forward of segments 1..n-1 (memory n is never read) with the transfer
 * head, then for t = 2..n the decoder forward and backward of J_t, which yields
 * dJ_t/dm_i for every memory it read. Those land, weighted by the mode, in the
 * accumulators g_i; "back-propagating memory i" then means: transfer head
 * backward from g_i, the encoder of segment i recomputed and back-propagated
 * from the resulting activation gradients, g_i cleared. What differs per mode:
 *
 * full         w(t,i) = 1 for all i < t; each memory back-propagated once at
 *              the end. The exact gradient.
 * tbptt        w(t,i) = 1 for the last tau memories (i >= t - tau); the
 *              straightforward schedule: after each J_t, every memory in its
 *              window is back-propagated at once from J_t's contribution alone,
 *              i.e. up to tau encoder backwards per segment.
 * incremental  the same weights, reordered as in UIO-LLMs: g_i accumulates
 *              J_t's contributions while i is in the window, and the encoder of
 *              i is back-propagated once, when i leaves it (or at the end). The
 *              gradient is identical to tbptt's (a sum does not care about
 *              order); the encoder work drops from ~tau to 1 per segment.
 * reservoir    UIO's unbiased-incremental idea as published: a reservoir R of
 *              tau memories (Vitter's algorithm R: memory s enters with
 *              probability tau/s, evicting a uniformly chosen member, which is
 *              back-propagated on eviction); w(t,i) = 1 for i in R_t. Old
 *              memories are sampled, not dropped, but a memory in R_t stands
 *              for all s_t = t-1 memories while counting once, so old segments
 *              are down-weighted by their inclusion probability tau/s_t.
 * unbiased     the reservoir with w(t,i) = 1 / P(i in R_t). After s offers,
 *              algorithm R holds each of the s memories with probability
 *              min(1, tau/s) (induction: the newcomer enters with tau/s; an
 *              old member survives with 1 - (tau/s)(1/tau) = (s-1)/s, and
 *              (tau/(s-1)) (s-1)/s = tau/s). The memories' values do not
 *              depend on the sampling, so dJ_t/dm_i is a fixed vector and
 *              E[1{i in R_t} / P(i in R_t)] dJ_t/dm_i = dJ_t/dm_i for every
 *              (t, i): the expected gradient is exactly full's, at the
 *              reservoir's cost, with variance growing with s/tau.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "train/memtrain.h"

/* bytes the encoder passes of one window may keep between forward and backward */
#define MN_ENC_KEEP_BUDGET ((int64_t)3 << 30)

#ifndef MN_REAL_F64
static const char *const k_bptt_names[] = {"full", "tbptt", "incremental", "reservoir", "unbiased"};
const char *mn_bptt_name(mn_bptt_mode m) { return (unsigned)m < 5 ? k_bptt_names[m] : "?"; }
int mn_bptt_parse(const char *s) {
    for (int i = 0; s && i < 5; i++)
        if (!strcmp(s, k_bptt_names[i])) return i;
    return -1;
}
#endif

struct TN(mn_uio_trainer) {
    const TN(mn_tmodel) * tm;
    TN(mn_uio_tparams) p;
    mn_tdims d;
    int32_t max_seg, S, Nmax, r, max_m;
    TN(mn_tws) * ws;   /* decoder passes (and encoders without wse) */
    TN(mn_tws) * *wse; /* (max_seg - 1) encoder passes kept until their backward, or NULL */
    TN(mn_tws) * tws;  /* teacher passes over whole windows (kl_w > 0) */
    real *teacher;     /* (max_seg * l, V) */
    real *tx;          /* (max_seg * l, C) teacher input */
    real *x, *dx;      /* (l + m, C) */
    int32_t *pos;      /* (max(l + m, max_seg * l)) */
    uint8_t *mask;     /* (l + m)^2 encoder visibility */
    int32_t *cap, *tgt;
    real *caps;        /* (max_seg, L, m, C) memory tokens' normalised inputs */
    real *pk, *pv;     /* (L, Nmax, KD): sinks, then memories 1..n-1 */
    real *dpk, *dpv, *gk, *gv;
    real *dcap;        /* (L, m, C) */
    real *ge;          /* (max_seg, m, C) summary: accumulated gradients of the embeddings */
    int32_t max_T;     /* longest pass */
    int no_memory;     /* ablation: decoders see the sinks only */
    real *tk, *tu;     /* (m, KD), (m, r) transfer scratch */
    uint8_t *pending;  /* (max_seg) memory i has gradient waiting in g */
    int32_t *res;      /* (tau) reservoir */
    real *blob;
};

void TN(mn_uio_trainer_free)(TN(mn_uio_trainer) * tr) {
    if (!tr) return;
    TN(mn_tws_free)(tr->ws);
    for (int32_t i = 0; tr->wse && i < tr->max_seg - 1; i++) TN(mn_tws_free)(tr->wse[i]);
    free(tr->wse);
    TN(mn_tws_free)(tr->tws);
    free(tr->blob);
    free(tr->pos);
    free(tr->mask);
    free(tr->cap);
    free(tr->tgt);
    free(tr->pending);
    free(tr->res);
    free(tr);
}

static int32_t max_rank(const TN(mn_tlora) * lo, int L) {
    int32_t r = 0;
    const TN(mn_tlora_w) *sets[4] = {lo->q, lo->k, lo->v, lo->o};
    for (int s = 0; s < 4; s++)
        for (int l = 0; sets[s] && l < L; l++) r = sets[s][l].rank > r ? sets[s][l].rank : r;
    return r;
}

int TN(mn_uio_trainer_create)(const TN(mn_tmodel) * tm, const TN(mn_uio_tparams) * p, int32_t max_seg,
                              TN(mn_uio_trainer) * *out) {
    *out = NULL;
    if (p->l <= 0 || p->m <= 0 || p->m > p->l || p->l % p->m)
        return mn_error(MN_EINVAL, "memory training needs m dividing l (l %d, m %d)", p->l, p->m);
    if (max_seg < 2) return mn_error(MN_EINVAL, "a training window needs at least 2 segments, not %d", max_seg);
    if (p->n_sinks < 0 || p->n_sinks > p->l) return mn_error(MN_EINVAL, "%d sinks out of 0..%d", p->n_sinks, p->l);
    if (!p->mem_embd) return mn_error(MN_EINVAL, "no memory-token embedding");
    if (p->recent < 0 || (p->recent > 0 && p->summary))
        return mn_error(MN_EINVAL, "a raw recent window (%d segments) is for UIO memories", p->recent);
    if (max_seg < p->recent + 2)
        return mn_error(MN_EINVAL, "a window of %d segments leaves no memory to read behind %d raw segments",
                        max_seg, p->recent);
    TN(mn_uio_trainer) *tr = calloc(1, sizeof *tr);
    if (!tr) return mn_error(MN_ENOMEM, "out of memory");
    tr->tm = tm;
    tr->p = *p;
    tr->d = *TN(mn_tmodel_dims)(tm);
    const mn_tdims *d = &tr->d;
    const int64_t C = d->n_embd, L = d->n_layer, KD = d->kv_dim, l = p->l, m = p->m, T = l + m;
    tr->max_seg = max_seg;
    tr->S = p->n_sinks;
    tr->Nmax = p->n_sinks + (max_seg - 1) * p->m;
    const int32_t re0 = max_rank(&p->enc, d->n_layer), rx = max_rank(&p->xfer, d->n_layer),
                  rd = max_rank(&p->dec, d->n_layer), re = re0 > rd ? re0 : rd;
    tr->r = re > rx ? re : rx;
    /* a summary decoder reads sinks, every earlier memory's rows and a segment */
    const int64_t Tdec = p->summary ? (int64_t)p->n_sinks + (int64_t)(max_seg - 1) * m + l : (int64_t)(p->recent + 1) * l;
    int64_t maxT = T > Tdec ? T : Tdec;
    if (maxT < p->n_sinks) maxT = p->n_sinks;
    tr->max_T = (int32_t)maxT;
    int rc = TN(mn_tws_create)(tm, tr->max_T, p->summary ? 0 : tr->Nmax, re, 1, &tr->ws);
    /* each encoder pass keeps its activations until its backward, which then
     * recomputes nothing, where that fits a budget (5 segments of 256 on
     * SmolLM2-135M: 4 x 0.35 GB); beyond it encoders share ws and are run again */
    const int64_t enc_bytes = TN(mn_tws_bytes)(tm, (int32_t)T, 0, re, 1) * (max_seg - 1);
    if (!rc && enc_bytes <= MN_ENC_KEEP_BUDGET) {
        tr->wse = calloc((size_t)max_seg - 1, sizeof *tr->wse);
        if (!tr->wse) rc = mn_error(MN_ENOMEM, "out of memory");
        for (int32_t i = 0; !rc && i < max_seg - 1; i++) rc = TN(mn_tws_create)(tm, (int32_t)T, 0, re, 1, &tr->wse[i]);
    }
    if (!rc && p->kl_w != 0) rc = TN(mn_tws_create)(tm, max_seg * p->l, 0, 0, 0, &tr->tws);
    if (rc) {
        TN(mn_uio_trainer_free)(tr);
        return rc;
    }
    const int64_t cells = L * tr->Nmax * KD, Tt = (int64_t)max_seg * l, R = tr->r > 0 ? tr->r : 1;
    const int64_t sizes[] = {p->kl_w != 0 ? Tt * d->n_vocab : 0, p->kl_w != 0 ? Tt * C : 0, maxT * C, maxT * C,
                             (int64_t)max_seg * L * m * C, cells, cells, cells, cells, cells, cells, L * m * C,
                             m * KD, m * R, (int64_t)max_seg * m * C};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    tr->blob = calloc((size_t)total, sizeof(real));
    tr->pos = malloc(sizeof(int32_t) * (size_t)(Tt > maxT ? Tt : maxT));
    tr->mask = calloc((size_t)(T * T), 1);
    tr->cap = malloc(sizeof(int32_t) * (size_t)m);
    tr->tgt = malloc(sizeof(int32_t) * (size_t)maxT);
    tr->pending = calloc((size_t)max_seg, 1);
    tr->res = malloc(sizeof(int32_t) * (size_t)max_seg);
    if (!tr->blob || !tr->pos || !tr->mask || !tr->cap || !tr->tgt || !tr->pending || !tr->res) {
        TN(mn_uio_trainer_free)(tr);
        return mn_error(MN_ENOMEM, "out of memory for the memory trainer");
    }
    real **dst[] = {&tr->teacher, &tr->tx, &tr->x, &tr->dx, &tr->caps, &tr->pk, &tr->pv, &tr->dpk,
                    &tr->dpv, &tr->gk, &tr->gv, &tr->dcap, &tr->tk, &tr->tu, &tr->ge};
    real *q = tr->blob;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *dst[i] = q, q += sizes[i];
    tr->max_m = p->m;
    TN(mn_uio_trainer_set_m)(tr, p->m);
    *out = tr;
    return MN_OK;
}

/* The encoder's layout, the same for every segment: segment tokens at 0..l-1
 * (causal), memory token j at (j+1) l/m seeing the segment tokens before that
 * position and itself, as the inference encoder (uio.c). */
int TN(mn_uio_trainer_set_m)(TN(mn_uio_trainer) * tr, int32_t m) {
    const int64_t l = tr->p.l, T = l + m;
    if (m <= 0 || m > tr->max_m || l % m)
        return mn_error(MN_EINVAL, "%d memory slots: need a divisor of %lld up to %d", m, (long long)l, tr->max_m);
    tr->p.m = m;
    tr->Nmax = tr->p.n_sinks + (tr->max_seg - 1) * m;
    const int32_t stride = (int32_t)(l / m);
    for (int32_t j = 0; j < m; j++) tr->cap[j] = (int32_t)l + j;
    memset(tr->mask, 0, (size_t)(T * T));
    for (int64_t i = 0; i < T; i++) {
        uint8_t *row = tr->mask + i * T;
        if (i < l) memset(row, 1, (size_t)i + 1);
        else {
            const int64_t vis = (i - l + 1) * stride;
            memset(row, 1, (size_t)(vis < l ? vis : l));
            row[i] = 1;
        }
    }
    return MN_OK;
}

static const real *lora_a(const TN(mn_tlora) * lo, char w, int l, const TN(mn_tlora_w) * *lw) {
    const TN(mn_tlora_w) *set = w == 'k' ? lo->k : lo->v;
    *lw = set && set[l].rank > 0 ? &set[l] : NULL;
    return *lw ? (*lw)->a : NULL;
}

/* The encoder pass of memory i: UIO captures each layer's normalised input
 * of the memory tokens, summary their final hidden states. */
static TN(mn_tpass) enc_pass(TN(mn_uio_trainer) * tr, int32_t i) {
    const TN(mn_uio_tparams) *p = &tr->p;
    const int32_t C = tr->d.n_embd, m = p->m;
    TN(mn_tpass) ps = {.T = p->l + m, .x = tr->x, .pos = tr->pos, .mask = tr->mask, .lora = &p->enc, .n_cap = m,
                       .cap = tr->cap, .dx = tr->dx};
    if (p->summary) ps.cap_out = tr->caps + (int64_t)i * m * C, ps.dcap_out = tr->dcap;
    else ps.cap_xn = tr->caps + (int64_t)i * tr->d.n_layer * m * C, ps.dcap_xn = tr->dcap;
    return ps;
}

static TN(mn_tws) * enc_ws(TN(mn_uio_trainer) * tr, int32_t i) { return tr->wse ? tr->wse[i] : tr->ws; }

/* The encoder's positions: segment tokens 0..l-1, memory token j at (j+1) l/m. */
static void enc_positions(TN(mn_uio_trainer) * tr) {
    const int32_t l = tr->p.l, m = tr->p.m, stride = l / m;
    for (int32_t j = 0; j < l; j++) tr->pos[j] = j;
    for (int32_t j = 0; j < m; j++) tr->pos[l + j] = (j + 1) * stride;
}

/* Encoder forward of segment seg (l ids) into caps[i]. */
static int encode(TN(mn_uio_trainer) * tr, const int32_t *seg, int32_t i, mn_tstep_stats *st) {
    const TN(mn_uio_tparams) *p = &tr->p;
    const int32_t C = tr->d.n_embd, l = p->l, m = p->m;
    TN(mn_tmodel_embed)(tr->tm, seg, l, tr->x);
    for (int32_t j = 0; j < m; j++) memcpy(tr->x + (int64_t)(l + j) * C, p->mem_embd, sizeof(real) * (size_t)C);
    enc_positions(tr);
    TN(mn_tpass) ps = enc_pass(tr, i);
    st->enc_forwards++;
    return TN(mn_tmodel_forward)(tr->tm, enc_ws(tr, i), &ps, NULL);
}

/* Memory i (0-based) occupies cells S + i*m .. S + (i+1)*m - 1 of every layer,
 * at those positions: [sinks | m_1 | m_2 | ...] is one position sequence. */
static void transfer_fwd(TN(mn_uio_trainer) * tr, int32_t i) {
    const TN(mn_uio_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t C = d->n_embd, KD = d->kv_dim, m = p->m, c0 = tr->S + i * m;
    for (int32_t j = 0; j < m; j++) tr->pos[j] = c0 + j;
    for (int l = 0; l < d->n_layer; l++) {
        const real *cap = tr->caps + ((int64_t)i * d->n_layer + l) * m * C;
        const int64_t off = ((int64_t)l * tr->Nmax + c0) * KD;
        for (int w = 0; w < 2; w++) {
            const char which = w ? 'v' : 'k';
            real *y = (w ? tr->pv : tr->pk) + off;
            const TN(mn_tlora_w) *lw;
            TN(mn_op_matmul_fwd)(y, cap, TN(mn_tmodel_weight)(tr->tm, l, which), m, C, KD, 0);
            if (lora_a(&p->xfer, which, l, &lw))
                TN(mn_op_lora_fwd)(y, tr->tu, cap, lw->a, lw->b, m, C, KD, lw->rank, p->xfer.scale);
        }
        TN(mn_tmodel_rope)(tr->tm, tr->pk + off, tr->pos, m, d->n_head_kv, 0);
    }
}

/* Back-propagates memory i from its accumulated g_i: transfer head (its LoRA
 * gets gradient; the memory tokens' normalised inputs get dcap), then the
 * encoder of segment i, recomputed, down to the memory-token embedding. */
static int backprop_memory(TN(mn_uio_trainer) * tr, const int32_t *ids, int32_t i, mn_tstep_stats *st) {
    const TN(mn_uio_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t C = d->n_embd, KD = d->kv_dim, m = p->m, l = p->l, c0 = tr->S + i * m;
    memset(tr->dcap, 0, sizeof(real) * (size_t)d->n_layer * m * C);
    for (int32_t j = 0; j < m; j++) tr->pos[j] = c0 + j;
    if (p->summary) { /* the embeddings' gradient is the final states' */
        memcpy(tr->dcap, tr->ge + (int64_t)i * m * C, sizeof(real) * (size_t)m * C);
        memset(tr->ge + (int64_t)i * m * C, 0, sizeof(real) * (size_t)m * C);
    }
    for (int ly = 0; !p->summary && ly < d->n_layer; ly++) {
        const real *cap = tr->caps + ((int64_t)i * d->n_layer + ly) * m * C;
        real *dcap = tr->dcap + (int64_t)ly * m * C;
        const int64_t off = ((int64_t)ly * tr->Nmax + c0) * KD;
        for (int w = 0; w < 2; w++) {
            const char which = w ? 'v' : 'k';
            memcpy(tr->tk, (w ? tr->gv : tr->gk) + off, sizeof(real) * (size_t)m * KD);
            if (!w) TN(mn_tmodel_rope)(tr->tm, tr->tk, tr->pos, m, d->n_head_kv, 1);
            TN(mn_op_matmul_bwd)(dcap, tr->tk, TN(mn_tmodel_weight)(tr->tm, ly, which), m, C, KD);
            const TN(mn_tlora_w) *lw;
            if (lora_a(&p->xfer, which, ly, &lw)) {
                real *du = tr->dx; /* (m, r) scratch; dx is free until the encoder backward */
                /* u = cap A^T, the forward's intermediate, recomputed */
                TN(mn_op_matmul_fwd)(tr->tu, cap, lw->a, m, C, lw->rank, 0);
                TN(mn_op_lora_bwd)(dcap, lw->da, lw->db, du, tr->tk, cap, tr->tu, lw->a, lw->b, m, C, KD, lw->rank,
                                   p->xfer.scale);
            }
        }
    }
    for (int ly = 0; !p->summary && ly < d->n_layer; ly++) {
        const int64_t off = ((int64_t)ly * tr->Nmax + c0) * KD;
        memset(tr->gk + off, 0, sizeof(real) * (size_t)m * KD);
        memset(tr->gv + off, 0, sizeof(real) * (size_t)m * KD);
    }
    tr->pending[i] = 0;
    /* the encoder: its kept forward, or forward again (the shared workspace
     * has served other passes since), then backward from dcap */
    int rc = MN_OK;
    if (tr->wse) enc_positions(tr);
    else if ((rc = encode(tr, ids + (int64_t)i * l, i, st))) return rc;
    TN(mn_tpass) ps = enc_pass(tr, i);
    if ((rc = TN(mn_tmodel_backward)(tr->tm, enc_ws(tr, i), &ps, 1))) return rc;
    st->enc_backwards++;
    if (p->d_mem_embd)
        for (int32_t j = 0; j < m; j++)
            for (int32_t c = 0; c < C; c++) p->d_mem_embd[c] += tr->dx[(int64_t)(l + j) * C + c];
    return MN_OK;
}

/* The frozen model's K/V of the window's first S tokens: cells 0..S-1. */
static int sinks(TN(mn_uio_trainer) * tr, const int32_t *ids) {
    const mn_tdims *d = &tr->d;
    const int32_t S = tr->S, C = d->n_embd, KD = d->kv_dim;
    if (!S) return MN_OK;
    TN(mn_tmodel_embed)(tr->tm, ids, S, tr->x);
    for (int32_t j = 0; j < S; j++) tr->pos[j] = j;
    TN(mn_tpass) ps = {.T = S, .x = tr->x, .pos = tr->pos, .out_k = tr->dpk, .out_v = tr->dpv};
    int rc = TN(mn_tmodel_forward)(tr->tm, tr->ws, &ps, NULL);
    if (rc) return rc;
    for (int l = 0; l < d->n_layer; l++) {
        memcpy(tr->pk + (int64_t)l * tr->Nmax * KD, tr->dpk + (int64_t)l * S * KD, sizeof(real) * (size_t)S * KD);
        memcpy(tr->pv + (int64_t)l * tr->Nmax * KD, tr->dpv + (int64_t)l * S * KD, sizeof(real) * (size_t)S * KD);
    }
    (void)C;
    return MN_OK;
}

/* Decoder over segment ti (0-based, > recent) after [sinks | memories
 * 0..ti-recent-1 | segments ti-recent..ti-1 raw]: adds its loss (segment ti's
 * tokens only) to st; with grad, leaves dJ/d(prefix cells) in dpk, dpv. */
static int decode(TN(mn_uio_trainer) * tr, const int32_t *ids, int32_t ti, int grad, real dscale,
                  mn_tstep_stats *st) {
    const TN(mn_uio_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t R = p->recent, te = ti - R; /* memories read */
    const int32_t l = p->l, KD = d->kv_dim, C = d->n_embd, N = tr->S + (tr->no_memory ? 0 : te * p->m);
    const int32_t *seg = ids + (int64_t)te * l;
    /* UIO: the recent raw segments and the scored one, rows after N prefix
     * cells. Summary: N rows of sinks and memory embeddings, then the
     * segment, in one causal pass. */
    const int32_t r0 = p->summary ? N : R * l, T = (p->summary ? N : 0) + (R + 1) * l;
    if (p->summary) {
        TN(mn_tmodel_embed)(tr->tm, ids, tr->S, tr->x);
        memcpy(tr->x + (int64_t)tr->S * C, tr->caps, sizeof(real) * (size_t)ti * p->m * C);
        for (int32_t j = 0; j < r0; j++) tr->pos[j] = j, tr->tgt[j] = -1;
    }
    const int32_t e0 = p->summary ? N : 0; /* first row of token embeddings */
    TN(mn_tmodel_embed)(tr->tm, seg, (R + 1) * l, tr->x + (int64_t)e0 * C);
    for (int32_t j = 0; j < (R + 1) * l; j++) {
        tr->pos[e0 + j] = N + j;
        tr->tgt[e0 + j] = e0 + j >= r0 && j + 1 < (R + 1) * l ? seg[j + 1] : -1;
    }
    const int kl = grad && p->kl_w != 0;
    const int has_dec = p->dec.q || p->dec.k || p->dec.v || p->dec.o;
    TN(mn_tpass) ps = {.T = T, .x = tr->x, .pos = tr->pos, .targets = tr->tgt, .lora = has_dec ? &p->dec : NULL,
                       .teacher = kl ? tr->teacher + (int64_t)ti * l * d->n_vocab : NULL, .teacher_row0 = r0,
                       .head_row0 = r0,
                       .ce_w = grad ? p->ce_w : 1, .kl_w = kl ? p->kl_w : 0};
    if (p->summary) ps.dx = tr->dx;
    else ps.N = N, ps.N_stride = tr->Nmax, ps.pk = tr->pk, ps.pv = tr->pv, ps.dpk = tr->dpk, ps.dpv = tr->dpv;
    double loss = 0;
    int rc = TN(mn_tmodel_forward)(tr->tm, tr->ws, &ps, &loss);
    if (rc) return rc;
    st->loss += loss;
    st->n_scored += l - 1;
    if (!grad) return MN_OK;
    for (int ly = 0; !p->summary && ly < d->n_layer; ly++) {
        memset(tr->dpk + (int64_t)ly * tr->Nmax * KD, 0, sizeof(real) * (size_t)N * KD);
        memset(tr->dpv + (int64_t)ly * tr->Nmax * KD, 0, sizeof(real) * (size_t)N * KD);
    }
    return TN(mn_tmodel_backward)(tr->tm, tr->ws, &ps, dscale);
}

void TN(mn_uio_trainer_no_memory)(TN(mn_uio_trainer) * tr, int on) { tr->no_memory = on; }

/* g_i += w dJ_t/dm_i */
static void accumulate(TN(mn_uio_trainer) * tr, int32_t i, real w) {
    const mn_tdims *d = &tr->d;
    const int32_t KD = d->kv_dim, m = tr->p.m, c0 = tr->S + i * m, C = d->n_embd;
    if (tr->p.summary) { /* the memory's rows of the decoder's input gradient */
        real *g = tr->ge + (int64_t)i * m * C;
        const real *dx = tr->dx + (int64_t)c0 * C;
        for (int64_t e = 0; e < (int64_t)m * C; e++) g[e] += w * dx[e];
    }
    for (int ly = 0; !tr->p.summary && ly < d->n_layer; ly++) {
        const int64_t off = ((int64_t)ly * tr->Nmax + c0) * KD;
        for (int64_t e = 0; e < (int64_t)m * KD; e++) {
            tr->gk[off + e] += w * tr->dpk[off + e];
            tr->gv[off + e] += w * tr->dpv[off + e];
        }
    }
    tr->pending[i] = 1;
}

int TN(mn_uio_trainer_step)(TN(mn_uio_trainer) * tr, const int32_t *ids, int32_t n_seg, mn_bptt_mode mode,
                            int32_t tau, mn_rng *rng, int grad, mn_tstep_stats *st) {
    memset(st, 0, sizeof *st);
    const TN(mn_uio_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t l = p->l;
    const int32_t R = p->recent;
    if (n_seg < R + 2 || n_seg > tr->max_seg)
        return mn_error(MN_EINVAL, "a window of %d segments (%d..%d)", n_seg, R + 2, tr->max_seg);
    if ((unsigned)mode > MN_BPTT_UNBIASED) return mn_error(MN_EINVAL, "unknown gradient mode %d", (int)mode);
    if (mode != MN_BPTT_FULL && tau < 1) return mn_error(MN_EINVAL, "%s needs tau >= 1", mn_bptt_name(mode));
    if (tr->no_memory && grad) return mn_error(MN_EINVAL, "the no-memory ablation is for evaluation only");
    if ((mode == MN_BPTT_RESERVOIR || mode == MN_BPTT_UNBIASED) && grad && !rng)
        return mn_error(MN_EINVAL, "%s needs a random generator", mn_bptt_name(mode));
    for (int64_t i = 0; i < (int64_t)n_seg * l; i++)
        if (ids[i] < 0 || ids[i] >= d->n_vocab) return mn_error(MN_EINVAL, "token id %d out of range", ids[i]);
    const int64_t f0 = TN(mn_op_flops)();
    int rc = MN_OK;
    if (grad && p->kl_w != 0) {
        const int32_t Tt = n_seg * l;
        TN(mn_tmodel_embed)(tr->tm, ids, Tt, tr->tx);
        for (int32_t j = 0; j < Tt; j++) tr->pos[j] = j;
        if ((rc = TN(mn_tmodel_logprobs)(tr->tm, tr->tws, tr->tx, tr->pos, Tt, tr->teacher))) return rc;
    }
    if (!p->summary && (rc = sinks(tr, ids))) return rc;
    for (int32_t i = 0; i + 1 + R < n_seg; i++) {
        if ((rc = encode(tr, ids + (int64_t)i * l, i, st))) return rc;
        if (!p->summary) transfer_fwd(tr, i);
    }
    const int64_t cells = (int64_t)d->n_layer * tr->Nmax * d->kv_dim;
    memset(tr->gk, 0, sizeof(real) * (size_t)cells);
    memset(tr->gv, 0, sizeof(real) * (size_t)cells);
    memset(tr->pending, 0, (size_t)tr->max_seg);
    memset(tr->ge, 0, sizeof(real) * (size_t)tr->max_seg * tr->max_m * d->n_embd);
    const real dscale = (real)(1.0 / ((double)(n_seg - 1 - R) * (l - 1)));
    const int res_mode = mode == MN_BPTT_RESERVOIR || mode == MN_BPTT_UNBIASED;
    int32_t n_res = 0;
    /* te: memories decoder ti reads (0..te-1); with R raw segments in
     * between, the chain below is the plain one in te */
    for (int32_t ti = 1 + R, te = 1; ti < n_seg && !rc; ti++, te++) {
        if (grad && res_mode) {
            /* memory te-1 is offered as the te-th item (algorithm R) */
            const int32_t newest = te - 1;
            if (n_res < tau) tr->res[n_res++] = newest;
            else {
                const uint64_t j = mn_rng_below(rng, (uint64_t)te);
                if (j < (uint64_t)tau) {
                    if (tr->pending[tr->res[j]] && (rc = backprop_memory(tr, ids, tr->res[j], st))) break;
                    tr->res[j] = newest;
                }
            }
        }
        if ((rc = decode(tr, ids, ti, grad, dscale, st))) break;
        if (!grad || p->freeze_memory) continue;
        if (mode == MN_BPTT_FULL) {
            for (int32_t i = 0; i < te; i++) accumulate(tr, i, 1);
        } else if (mode == MN_BPTT_TBPTT || mode == MN_BPTT_INCREMENTAL) {
            for (int32_t i = te - tau < 0 ? 0 : te - tau; i < te; i++) accumulate(tr, i, 1);
        } else {
            const real w = mode == MN_BPTT_UNBIASED && te > tau ? (real)te / (real)tau : 1;
            for (int32_t r = 0; r < n_res; r++) accumulate(tr, tr->res[r], w);
        }
        if (mode == MN_BPTT_TBPTT) {
            for (int32_t i = 0; i < te && !rc; i++)
                if (tr->pending[i]) rc = backprop_memory(tr, ids, i, st);
        } else if (mode == MN_BPTT_INCREMENTAL) {
            const int32_t leaving = te - tau; /* the next decoder reads memories >= te+1-tau */
            if (leaving >= 0 && tr->pending[leaving]) rc = backprop_memory(tr, ids, leaving, st);
        }
    }
    for (int32_t i = 0; grad && i + 1 + R < n_seg && !rc; i++)
        if (tr->pending[i]) rc = backprop_memory(tr, ids, i, st);
    st->flops = TN(mn_op_flops)() - f0;
    return rc;
}
