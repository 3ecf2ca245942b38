/* beacontrain.c - the Activation Beacon chain's forward, losses and gradient
 * modes (see beacontrain.h).
 *
 * One window's pass. Rows 0..nb-1 are its beacons, rows nb..nb+W-1 its raw
 * tokens; the order of rows does not matter to the model, only the positions
 * and the visibility mask, and those are beacon.c's: a window cell u sees a
 * window cell v when v comes no later than u in the order mn_beacon_feed puts
 * them in the cache (interleave: raw 0..a-1, beacon 0, raw a..; append: the
 * raw tokens, then the beacons) and the scheme lets u see v
 * (mn_beacon_sees); every prefix cell (sinks, memory) is visible. Beacons first puts
 * the raw rows last, where the distillation teacher's rows go.
 *
 * Memory. The pass gives each row's key after RoPE at its window position p;
 * memory cell c holds it at position c (the memory follows the sinks
 * contiguously, as condense() re-places it). RoPE is a rotation by position,
 * so the memory key is the window key rotated by c - p, and the gradient goes
 * back through the inverse rotation. Values are copied.
 *
 * Gradients. dJ_t/d(prefix cells) comes out of window t's backward (dpk, dpv);
 * the gradient of memory m_i (its cells' K/V) accumulates in g_i and is
 * injected into window i's backward as the gradient of its beacon rows' K/V
 * (tmodel's dout_k, dout_v), which carries it on to the beacon projections,
 * the embedding and the memories window i read.
 *
 * Why not UIO's incremental schedule: it back-propagates each encoder once
 * from the sum of the gradients its memory received, which is exact because a
 * UIO encoder reads only its own segment. A beacon window reads every earlier
 * memory, so the gradient it passes on to m_{i-1} would have to be truncated
 * differently for each J_t that contributed to g_i; one backward cannot do
 * that, and tbptt's exact truncation costs up to tau window backwards per
 * scored window.
 *
 * unbiased: randomized truncation (Tallec & Ollivier, "Unbiasing truncated
 * backpropagation through time", 2017). Write the exact gradient as
 *     dL/dtheta = sum_t [ d_theta J_t + sum_{i<t} G_{t,i} d_theta m_i ],
 * d_theta: the direct (one-window) derivative with the memories read held
 * fixed, G_{t,i} = dJ_t/dm_i the total derivative through every later memory:
 *     G_{t,i} = d_{m_i} J_t + sum_{i<j<t} G_{t,j} d_{m_i} m_j.
 * Every path from J_t to m_i runs through memories between i and t only, so a
 * backward truncated at memory lo (tbptt's, memories < lo held constant)
 * yields G_{t,i} exactly for every i >= lo; tbptt(tau) is the sum above with
 * the terms i < t - tau dropped: its bias. Instead draw for each J_t a
 * truncation length K_t (independently of the forward, which the sampling does
 * not touch) with q_k = P(K_t >= k) > 0 for every k, go back to lo = t - K_t
 * (capped at 0), and weight the term of memory i = t - k by 1/q_k:
 *     E[ 1{K_t >= k} / q_k ] G_{t,t-k} d_theta m_{t-k} = G_{t,t-k} d_theta m_{t-k}
 * for every (t, k), because G and d_theta m are fixed vectors; summing,
 * E[estimate] = dL/dtheta exactly. The distribution: K_t = tau + G, G the
 * number of heads before the first tail of a fair coin, so q_k = 1 for
 * k <= tau and 2^-(k - tau) beyond: the last tau memories are exact (tbptt's
 * gradient is always in there), older ones are reached with halving
 * probability and doubling weight (exact powers of two), E[K_t] = tau + 1, so
 * the cost is at most one window backward per scored window above tbptt's;
 * the variance grows with how much gradient crosses more than tau windows.
 * With tau >= n - 1 every K_t covers the whole chain and the estimate is
 * full's, draw for draw.
 * The weights within one J_t's backward: g_i holds w_{t-i} G_{t,i}, w_k = 1/q_k
 * (so window i's backward from it adds w_{t-i} G_{t,i} d_theta m_i, its
 * term); the gradient that backward sends to an older memory h is scaled by
 * w_{t-h} / w_{t-i} on the way into g_h, so g_h ends as w_{t-h} G_{t,h}
 * (backward is linear in the injected gradient).
 *
 * reservoir: the same draws without the weights (w_k = 1): random-length
 * truncation as usually practised, biased towards short range by the factor
 * q_k on memory t - k, as UIO's published reservoir down-weights old memories
 * by their inclusion probability. UIO's reservoir itself does not carry over:
 * a memory outside the sample cuts every path through it, and in this chain
 * the path J_t -> m_{t-1} -> ... -> m_i runs through t - i memories, which a
 * reservoir of tau holds together with probability 0 once t - i > tau, so no
 * inverse weight can restore it; nor does sampling old memories save work,
 * since reaching m_i costs the backwards of every window between anyway.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/beacon.h"
#include "train/beacontrain.h"

struct TN(mn_beacon_trainer) {
    const TN(mn_tmodel) * tm;
    TN(mn_beacon_tparams) p;
    mn_tdims d;
    int32_t max_win, nb_max, Tmax, Nmax;
    int32_t a, nb;          /* current ratio, beacons per window */
    int no_memory;
    TN(mn_tws) * ws;        /* window passes */
    TN(mn_tws) * tws;       /* teacher passes (kl_w > 0) */
    real *teacher;          /* (max_win * W, V) */
    real *tx;               /* (max_win * W, C) teacher input */
    real *x, *dx;           /* (Tmax, C) */
    real *ok, *ov, *dok, *dov; /* (L, Tmax, KD) the pass's K/V and their injected gradients */
    real *pk, *pv, *dpk, *dpv, *gk, *gv; /* (L, Nmax, KD) prefix cells, pass gradient, accumulated gradient */
    real *alt_buf;          /* 3 * nb_max * max(C, HD) */
    int32_t *pos, *tgt, *alt_rows, *kind, *ord, *dpos; /* (max(Tmax, max_win * W)) */
    uint8_t *mask;          /* (Tmax, Nmax + Tmax) */
    uint8_t *pending;       /* (max_win) g_i holds gradient */
    real *blob;
};

void TN(mn_beacon_trainer_free)(TN(mn_beacon_trainer) * tr) {
    if (!tr) return;
    TN(mn_tws_free)(tr->ws);
    TN(mn_tws_free)(tr->tws);
    free(tr->blob);
    free(tr->pos), free(tr->tgt), free(tr->alt_rows), free(tr->kind), free(tr->ord), free(tr->dpos);
    free(tr->mask);
    free(tr->pending);
    free(tr);
}

int TN(mn_beacon_trainer_create)(const TN(mn_tmodel) * tm, const TN(mn_beacon_tparams) * p, int32_t max_win,
                                 TN(mn_beacon_trainer) * *out) {
    *out = NULL;
    if (p->window < 1 || p->ratio < 1 || p->ratio > p->window || p->window % p->ratio)
        return mn_error(MN_EINVAL, "beacon training needs a ratio dividing the window (W %d, ratio %d)", p->window,
                        p->ratio);
    if (max_win < 2) return mn_error(MN_EINVAL, "a training window needs at least 2 beacon windows, not %d", max_win);
    if (p->sinks < 0 || p->sinks >= p->window)
        return mn_error(MN_EINVAL, "%d sinks do not fit a window of %d", p->sinks, p->window);
    if ((unsigned)p->placement > MN_PLACE_APPEND || (unsigned)p->attention > MN_BATTN_FULL_COVERAGE)
        return mn_error(MN_EINVAL, "unknown beacon placement or attention");
    if (!p->embd || !p->proj) return mn_error(MN_EINVAL, "beacon training needs the embedding and projections");
    TN(mn_beacon_trainer) *tr = calloc(1, sizeof *tr);
    if (!tr) return mn_error(MN_ENOMEM, "out of memory");
    tr->tm = tm;
    tr->p = *p;
    tr->d = *TN(mn_tmodel_dims)(tm);
    const mn_tdims *d = &tr->d;
    const int64_t C = d->n_embd, L = d->n_layer, KD = d->kv_dim, HD = (int64_t)d->n_head * d->head_dim;
    const int64_t W = p->window, nbm = W / p->ratio, T = W + nbm;
    tr->max_win = max_win;
    tr->nb_max = (int32_t)nbm;
    tr->Tmax = (int32_t)T;
    tr->Nmax = (int32_t)(p->sinks + (int64_t)max_win * nbm);
    int rc = TN(mn_tws_create)(tm, tr->Tmax, tr->Nmax, 0, 1, &tr->ws);
    if (!rc && p->kl_w != 0) rc = TN(mn_tws_create)(tm, max_win * p->window, 0, 0, 0, &tr->tws);
    if (rc) {
        TN(mn_beacon_trainer_free)(tr);
        return rc;
    }
    const int64_t Tt = (int64_t)max_win * W, cells = L * tr->Nmax * KD, wkv = L * T * KD;
    const int64_t sizes[] = {p->kl_w != 0 ? Tt * d->n_vocab : 0, p->kl_w != 0 ? Tt * C : 0, T * C, T * C,
                             wkv, wkv, wkv, wkv, cells, cells, cells, cells, cells, cells,
                             3 * nbm * (C > HD ? C : HD)};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    const size_t ni = (size_t)(Tt > T ? Tt : T);
    tr->blob = calloc((size_t)total, sizeof(real));
    tr->pos = malloc(sizeof(int32_t) * ni), tr->tgt = malloc(sizeof(int32_t) * ni);
    tr->alt_rows = malloc(sizeof(int32_t) * ni), tr->kind = malloc(sizeof(int32_t) * ni);
    tr->ord = malloc(sizeof(int32_t) * ni), tr->dpos = malloc(sizeof(int32_t) * ni);
    tr->mask = malloc((size_t)T * (size_t)(tr->Nmax + T));
    tr->pending = calloc((size_t)max_win, 1);
    if (!tr->blob || !tr->pos || !tr->tgt || !tr->alt_rows || !tr->kind || !tr->ord || !tr->dpos || !tr->mask ||
        !tr->pending) {
        TN(mn_beacon_trainer_free)(tr);
        return mn_error(MN_ENOMEM, "out of memory for the beacon trainer");
    }
    real **dst[] = {&tr->teacher, &tr->tx, &tr->x, &tr->dx, &tr->ok, &tr->ov, &tr->dok, &tr->dov,
                    &tr->pk, &tr->pv, &tr->dpk, &tr->dpv, &tr->gk, &tr->gv, &tr->alt_buf};
    real *q = tr->blob;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *dst[i] = q, q += sizes[i];
    TN(mn_beacon_trainer_set_ratio)(tr, p->ratio);
    *out = tr;
    return MN_OK;
}

int TN(mn_beacon_trainer_set_ratio)(TN(mn_beacon_trainer) * tr, int32_t ratio) {
    if (ratio < tr->p.ratio || tr->p.window % ratio)
        return mn_error(MN_EINVAL, "ratio %d: need a divisor of the window %d, at least %d", ratio, tr->p.window,
                        tr->p.ratio);
    tr->a = ratio;
    tr->nb = tr->p.window / ratio;
    return MN_OK;
}

void TN(mn_beacon_trainer_no_memory)(TN(mn_beacon_trainer) * tr, int on) { tr->no_memory = on; }

/* ------------------------------------------------------------ the scheme (beacon.c) */

static int32_t min32(int32_t x, int32_t y) { return x < y ? x : y; }

/* r: raw tokens in the window when beacon kind runs (beacon.c's run_batch) */
static int32_t raw_before(const TN(mn_beacon_trainer) * tr, int32_t kind) {
    if (kind >= 0) return 0;
    return tr->p.placement == MN_PLACE_APPEND ? tr->p.window : min32((-kind) * tr->a, tr->p.window);
}

/* the layout rules are beacon.c's own (mn_beacon_offset, mn_beacon_sees) */
static mn_beacon_scheme scheme_of(const TN(mn_beacon_trainer) * tr) {
    return (mn_beacon_scheme){tr->p.placement, tr->p.attention, tr->p.attend_prev, tr->a};
}

/* order of a window cell in the cache (interleave: beacon j after raw (j+1)a - 1) */
static int32_t order_of(const TN(mn_beacon_trainer) * tr, int32_t kind) {
    const int32_t a = tr->a;
    if (tr->p.placement == MN_PLACE_APPEND) return kind >= 0 ? kind : tr->p.window + (-kind - 1);
    return kind >= 0 ? kind + kind / a : (-kind) * a + (-kind - 1);
}

/* prefix cells window t reads (= its first position) */
static int32_t prefix_of(const TN(mn_beacon_trainer) * tr, int32_t t) {
    if (t == 0) return 0;
    return tr->p.sinks + (tr->no_memory ? 0 : t * tr->nb);
}

/* memory unit i: cells [c0, c1) (unit 0 also holds the sinks) */
static void unit_cells(const TN(mn_beacon_trainer) * tr, int32_t i, int32_t *c0, int32_t *c1) {
    *c0 = i == 0 ? 0 : tr->p.sinks + i * tr->nb;
    *c1 = tr->p.sinks + (i + 1) * tr->nb;
}

/* ------------------------------------------------------------ one window pass */

/* Lays out window t (rows, positions, targets, mask, input rows) and returns
 * its pass; loss: with targets (and the teacher when kl), inject: with the
 * gradient of its memory's K/V. */
static TN(mn_tpass) build(TN(mn_beacon_trainer) * tr, const int32_t *ids, int32_t t, int loss, int kl, int inject) {
    const TN(mn_beacon_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t W = p->window, nb = tr->nb, T = W + nb, C = d->n_embd, KD = d->kv_dim, L = d->n_layer;
    const int32_t N = prefix_of(tr, t), pos0 = N;
    const mn_beacon_scheme sc = scheme_of(tr);
    const int32_t *seg = ids + (int64_t)t * W;
    for (int32_t r = 0; r < T; r++) {
        const int32_t k = r < nb ? -(r + 1) : r - nb;
        tr->kind[r] = k;
        tr->ord[r] = order_of(tr, k);
        tr->pos[r] = pos0 + mn_beacon_offset(&sc, k, raw_before(tr, k));
        tr->tgt[r] = k >= 0 && k + 1 < W ? seg[k + 1] : -1;
    }
    for (int32_t j = 0; j < nb; j++) {
        tr->alt_rows[j] = j;
        memcpy(tr->x + (int64_t)j * C, p->embd, sizeof(real) * (size_t)C);
    }
    TN(mn_tmodel_embed)(tr->tm, seg, W, tr->x + (int64_t)nb * C);
    const int64_t ld = (int64_t)N + T;
    for (int32_t u = 0; u < T; u++) {
        uint8_t *row = tr->mask + u * ld;
        memset(row, 1, (size_t)N);
        const int32_t ru = raw_before(tr, tr->kind[u]);
        for (int32_t v = 0; v < T; v++)
            row[N + v] = tr->ord[v] <= tr->ord[u] && mn_beacon_sees(&sc, tr->kind[u], tr->kind[v], ru);
    }
    if (inject) {
        /* g of this window's memory cells -> its rows' K/V after RoPE at the window position */
        memset(tr->dok, 0, sizeof(real) * (size_t)L * T * KD);
        memset(tr->dov, 0, sizeof(real) * (size_t)L * T * KD);
        int32_t c0, c1;
        unit_cells(tr, t, &c0, &c1);
        for (int32_t c = c0; c < c1; c++) {
            const int32_t row = c < p->sinks && t == 0 ? nb + c : c - (p->sinks + t * nb);
            tr->dpos[c - c0] = c - tr->pos[row];
            for (int l = 0; l < L; l++) {
                memcpy(tr->dok + ((int64_t)l * T + row) * KD, tr->gk + ((int64_t)l * tr->Nmax + c) * KD,
                       sizeof(real) * (size_t)KD);
                memcpy(tr->dov + ((int64_t)l * T + row) * KD, tr->gv + ((int64_t)l * tr->Nmax + c) * KD,
                       sizeof(real) * (size_t)KD);
                TN(mn_tmodel_rope)(tr->tm, tr->dok + ((int64_t)l * T + row) * KD, &tr->dpos[c - c0], 1,
                                   d->n_head_kv, 1);
            }
        }
    }
    TN(mn_tpass) ps = {.T = T, .x = tr->x, .pos = tr->pos, .N = N, .N_stride = tr->Nmax, .pk = tr->pk,
                       .pv = tr->pv, .dpk = tr->dpk, .dpv = tr->dpv, .mask = tr->mask, .out_k = tr->ok,
                       .out_v = tr->ov, .n_alt = nb, .alt_rows = tr->alt_rows, .alt = p->proj,
                       .alt_buf = tr->alt_buf, .dx = tr->dx, .ce_w = 1};
    if (loss) {
        ps.targets = tr->tgt;
        if (kl) {
            ps.teacher = tr->teacher + (int64_t)t * W * d->n_vocab;
            ps.teacher_row0 = nb;
            ps.kl_w = p->kl_w;
        }
        ps.ce_w = kl ? p->ce_w : (loss == 2 ? p->ce_w : 1);
    }
    if (inject) ps.dout_k = tr->dok, ps.dout_v = tr->dov;
    return ps;
}

/* After window t's forward: its memory cells (beacons; window 0 also the
 * sinks) from the pass's K/V, keys rotated to the cells' positions. */
static void store_memory(TN(mn_beacon_trainer) * tr, int32_t t) {
    const mn_tdims *d = &tr->d;
    const int32_t nb = tr->nb, T = tr->p.window + nb, KD = d->kv_dim, S = tr->p.sinks;
    int32_t c0, c1;
    unit_cells(tr, t, &c0, &c1);
    for (int32_t c = c0; c < c1; c++) {
        const int32_t row = c < S && t == 0 ? nb + c : c - (S + t * nb);
        tr->dpos[c - c0] = c - tr->pos[row];
        for (int l = 0; l < d->n_layer; l++) {
            const int64_t src = ((int64_t)l * T + row) * KD, dst = ((int64_t)l * tr->Nmax + c) * KD;
            memcpy(tr->pk + dst, tr->ok + src, sizeof(real) * (size_t)KD);
            memcpy(tr->pv + dst, tr->ov + src, sizeof(real) * (size_t)KD);
        }
    }
    for (int l = 0; l < d->n_layer; l++)
        TN(mn_tmodel_rope)(tr->tm, tr->pk + ((int64_t)l * tr->Nmax + c0) * KD, tr->dpos, c1 - c0, d->n_head_kv, 0);
}

/* Window t recomputed and back-propagated: from its loss (scaled by dscale)
 * when `loss`, from g of its memory when `inject`. Leaves dJ/d(prefix cells)
 * in dpk, dpv; the beacon rows' input gradient goes to the embedding. */
static int window_backward(TN(mn_beacon_trainer) * tr, const int32_t *ids, int32_t t, int loss, int inject,
                           real dscale, mn_tstep_stats *st) {
    const mn_tdims *d = &tr->d;
    const int32_t C = d->n_embd, KD = d->kv_dim, N = prefix_of(tr, t);
    TN(mn_tpass) ps = build(tr, ids, t, loss ? 2 : 0, loss && tr->p.kl_w != 0, inject);
    int rc = TN(mn_tmodel_forward)(tr->tm, tr->ws, &ps, NULL);
    if (rc) return rc;
    st->enc_forwards++;
    for (int l = 0; l < d->n_layer; l++) {
        memset(tr->dpk + (int64_t)l * tr->Nmax * KD, 0, sizeof(real) * (size_t)N * KD);
        memset(tr->dpv + (int64_t)l * tr->Nmax * KD, 0, sizeof(real) * (size_t)N * KD);
    }
    if ((rc = TN(mn_tmodel_backward)(tr->tm, tr->ws, &ps, loss ? dscale : 0))) return rc;
    st->enc_backwards++;
    if (tr->p.d_embd)
        for (int32_t j = 0; j < tr->nb; j++)
            for (int32_t c = 0; c < C; c++) tr->p.d_embd[c] += tr->dx[(int64_t)j * C + c];
    if (inject) {
        int32_t c0, c1;
        unit_cells(tr, t, &c0, &c1);
        for (int l = 0; l < d->n_layer; l++) {
            const int64_t off = ((int64_t)l * tr->Nmax + c0) * KD;
            memset(tr->gk + off, 0, sizeof(real) * (size_t)(c1 - c0) * KD);
            memset(tr->gv + off, 0, sizeof(real) * (size_t)(c1 - c0) * KD);
        }
        tr->pending[t] = 0;
    }
    return MN_OK;
}

/* g_i += w dJ/dm_i from the last backward (memory i was read by it) */
static void accumulate(TN(mn_beacon_trainer) * tr, int32_t i, real w) {
    const mn_tdims *d = &tr->d;
    const int32_t KD = d->kv_dim;
    int32_t c0, c1;
    unit_cells(tr, i, &c0, &c1);
    for (int l = 0; l < d->n_layer; l++) {
        const int64_t off = ((int64_t)l * tr->Nmax + c0) * KD, n = (int64_t)(c1 - c0) * KD;
        for (int64_t e = 0; e < n; e++)
            tr->gk[off + e] += w * tr->dpk[off + e], tr->gv[off + e] += w * tr->dpv[off + e];
    }
    tr->pending[i] = 1;
}

/* w_k = 1 / P(K >= k): unbiased's weight on memory t - k (1 in other modes) */
static real inv_q(mn_bptt_mode mode, int32_t tau, int32_t k) {
    return mode == MN_BPTT_UNBIASED && k > tau ? (real)ldexp(1.0, k - tau) : 1;
}

/* unbiased / reservoir: K = tau + (heads before the first tail), drawn only
 * as far as the chain goes (K >= t reaches m_0 whatever the rest would be) */
static int32_t draw_truncation(mn_rng *rng, int32_t tau, int32_t t) {
    int32_t k = tau;
    while (k < t && (mn_rng_next(rng) >> 63)) k++;
    return k;
}

int TN(mn_beacon_trainer_step)(TN(mn_beacon_trainer) * tr, const int32_t *ids, int32_t n_win, mn_bptt_mode mode,
                               int32_t tau, mn_rng *rng, int grad, mn_tstep_stats *st) {
    memset(st, 0, sizeof *st);
    const TN(mn_beacon_tparams) *p = &tr->p;
    const mn_tdims *d = &tr->d;
    const int32_t W = p->window;
    if (n_win < 2 || n_win > tr->max_win)
        return mn_error(MN_EINVAL, "a training window of %d beacon windows (2..%d)", n_win, tr->max_win);
    if ((unsigned)mode > MN_BPTT_UNBIASED) return mn_error(MN_EINVAL, "unknown gradient mode %d", (int)mode);
    if (mode == MN_BPTT_INCREMENTAL)
        return mn_error(MN_EUNSUPPORTED,
                        "beacon training supports --bptt full, tbptt, reservoir and unbiased, not incremental (a "
                        "beacon window reads the earlier memories, so one backward per window cannot give each "
                        "loss its own truncation)");
    const int sampled = mode == MN_BPTT_RESERVOIR || mode == MN_BPTT_UNBIASED;
    if (mode != MN_BPTT_FULL && tau < 1) return mn_error(MN_EINVAL, "%s needs tau >= 1", mn_bptt_name(mode));
    if (sampled && grad && !rng) return mn_error(MN_EINVAL, "%s needs a random generator", mn_bptt_name(mode));
    if (tr->no_memory && grad) return mn_error(MN_EINVAL, "the no-memory ablation is for evaluation only");
    for (int64_t i = 0; i < (int64_t)n_win * W; i++)
        if (ids[i] < 0 || ids[i] >= d->n_vocab) return mn_error(MN_EINVAL, "token id %d out of range", ids[i]);
    const int64_t f0 = TN(mn_op_flops)();
    const int kl = grad && p->kl_w != 0;
    int rc = MN_OK;
    if (kl) {
        const int32_t Tt = n_win * W;
        TN(mn_tmodel_embed)(tr->tm, ids, Tt, tr->tx);
        for (int32_t j = 0; j < Tt; j++) tr->tgt[j] = j; /* positions 0.. (tgt as scratch) */
        if ((rc = TN(mn_tmodel_logprobs)(tr->tm, tr->tws, tr->tx, tr->tgt, Tt, tr->teacher))) return rc;
    }
    /* forward along the chain: losses and memories */
    for (int32_t t = 0; t < n_win; t++) {
        const int scored = t >= 1, keep = t + 1 < n_win && !tr->no_memory;
        if (!scored && !keep && !(t == 0 && p->sinks)) continue;
        TN(mn_tpass) ps = build(tr, ids, t, scored ? (grad ? 2 : 1) : 0, scored && kl, 0);
        double loss = 0;
        if ((rc = TN(mn_tmodel_forward)(tr->tm, tr->ws, &ps, &loss))) return rc;
        st->enc_forwards++;
        if (scored) st->loss += loss, st->n_scored += W - 1;
        if (keep || t == 0) store_memory(tr, t);
    }
    if (!grad) {
        st->flops = TN(mn_op_flops)() - f0;
        return MN_OK;
    }
    const int64_t cells = (int64_t)d->n_layer * tr->Nmax * d->kv_dim;
    memset(tr->gk, 0, sizeof(real) * (size_t)cells);
    memset(tr->gv, 0, sizeof(real) * (size_t)cells);
    memset(tr->pending, 0, (size_t)tr->max_win);
    const real dscale = (real)(1.0 / ((double)(n_win - 1) * (W - 1)));
    if (mode == MN_BPTT_FULL) {
        /* newest first: when window t runs backward, every reader of m_t has */
        for (int32_t t = n_win - 1; t >= 0 && !rc; t--) {
            const int scored = t >= 1, inject = tr->pending[t];
            if (!scored && !inject) continue;
            if ((rc = window_backward(tr, ids, t, scored, inject, dscale, st))) break;
            for (int32_t i = 0; i < t; i++) accumulate(tr, i, 1);
        }
    } else {
        /* per J_t: its backward, then the windows of memories lo..t-1 newest
         * first, each from J_t's gradient alone (g_i holds w(t - i) G_{t,i}) */
        for (int32_t t = 1; t < n_win && !rc; t++) {
            const int32_t K = sampled ? draw_truncation(rng, tau, t) : tau;
            const int32_t lo = t - K < 0 ? 0 : t - K; /* memories lo..t-1 carry J_t's gradient */
            if ((rc = window_backward(tr, ids, t, 1, 0, dscale, st))) break;
            for (int32_t i = lo; i < t; i++) accumulate(tr, i, inv_q(mode, tau, t - i));
            for (int32_t i = t - 1; i >= lo && !rc; i--) {
                if (!tr->pending[i]) continue;
                if ((rc = window_backward(tr, ids, i, 0, 1, dscale, st))) break;
                for (int32_t h = lo; h < i; h++) accumulate(tr, h, inv_q(mode, tau, t - h) / inv_q(mode, tau, t - i));
            }
        }
    }
    st->flops = TN(mn_op_flops)() - f0;
    return rc;
}
