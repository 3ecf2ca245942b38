/* qatrain.c - the decoder's pass over [memory | prompt | answer] with the loss
 * on the answer only (see qatrain.h).
 *
 * The memory is always the pass's prefix of M cells at positions 0..M-1 and
 * the T = n_ids tokens sit at M..M+T-1, as answering lays them out. KV
 * memory: the cells are the memory's K/V, keys rotated at their positions.
 * Embedding memory: the M embeddings are the pass's first M input rows (no
 * target), so the decoder reads them with its LoRA as answering does (the
 * group's LoRA is installed before the memory is primed) and the LoRA's
 * gradient includes its effect on the memory's cells. Row j is scored on ids[j+1]
 * when that token belongs to the answer; rows whose target is -1 contribute
 * neither loss nor gradient (the head skips them): that is the answer mask.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "train/qatrain.h"

struct TN(mn_qa_trainer) {
    const TN(mn_tmodel) * tm;
    mn_tdims d;
    TN(mn_tws) * ws;
    int32_t max_T, max_N;
    real *x;      /* (max_T, C) */
    real *pk, *pv; /* (L, max_N, KD) */
    int32_t *pos, *tgt; /* (max_T) */
};

void TN(mn_qa_trainer_free)(TN(mn_qa_trainer) * tr) {
    if (!tr) return;
    TN(mn_tws_free)(tr->ws);
    free(tr->x), free(tr->pk), free(tr->pv), free(tr->pos), free(tr->tgt);
    free(tr);
}

static int check_example(const mn_tdims *d, const mn_qa_example *e, int32_t i) {
    if (!e->ids || e->n_prompt < 1 || e->n_prompt >= e->n_ids)
        return mn_error(MN_EINVAL, "QA example %d: %d tokens with a prompt of %d (the answer needs at least one)", i,
                        e->n_ids, e->n_prompt);
    if (e->n_mem < 0 || (e->n_mem > 0 && (!e->k || (e->kv && !e->v))))
        return mn_error(MN_EINVAL, "QA example %d: memory of %d slots without data", i, e->n_mem);
    for (int32_t j = 0; j < e->n_ids; j++)
        if (e->ids[j] < 0 || e->ids[j] >= d->n_vocab)
            return mn_error(MN_EINVAL, "QA example %d: token id %d out of range", i, e->ids[j]);
    return MN_OK;
}

int TN(mn_qa_trainer_create)(const TN(mn_tmodel) * tm, const mn_qa_example *ex, int32_t n, int32_t max_rank,
                             TN(mn_qa_trainer) * *out) {
    *out = NULL;
    if (n < 1 || !ex) return mn_error(MN_EINVAL, "no QA examples");
    const mn_tdims *d = TN(mn_tmodel_dims)(tm);
    int32_t max_T = 1, max_N = 0;
    for (int32_t i = 0; i < n; i++) {
        int rc = check_example(d, &ex[i], i);
        if (rc) return rc;
        const int32_t T = ex[i].n_ids + (ex[i].kv ? 0 : ex[i].n_mem);
        max_T = T > max_T ? T : max_T;
        max_N = ex[i].n_mem > max_N ? ex[i].n_mem : max_N;
    }
    TN(mn_qa_trainer) *tr = calloc(1, sizeof *tr);
    if (!tr) return mn_error(MN_ENOMEM, "out of memory");
    tr->tm = tm, tr->d = *d, tr->max_T = max_T, tr->max_N = max_N;
    const size_t cells = (size_t)d->n_layer * (max_N ? max_N : 1) * d->kv_dim;
    tr->x = malloc(sizeof(real) * (size_t)max_T * d->n_embd);
    tr->pk = malloc(sizeof(real) * cells), tr->pv = malloc(sizeof(real) * cells);
    tr->pos = malloc(sizeof(int32_t) * (size_t)max_T), tr->tgt = malloc(sizeof(int32_t) * (size_t)max_T);
    int rc = !tr->x || !tr->pk || !tr->pv || !tr->pos || !tr->tgt ? mn_error(MN_ENOMEM, "out of memory for QA training")
                                                                 : TN(mn_tws_create)(tm, max_T, max_N, max_rank, 1, &tr->ws);
    if (rc) {
        TN(mn_qa_trainer_free)(tr);
        return rc;
    }
    *out = tr;
    return MN_OK;
}

int TN(mn_qa_trainer_step)(TN(mn_qa_trainer) * tr, const mn_qa_example *e, const TN(mn_tlora) * dec, int grad,
                           real dscale, double *loss, int64_t *n_scored) {
    const mn_tdims *d = &tr->d;
    int rc = check_example(d, e, -1);
    if (rc) return rc;
    const int32_t C = d->n_embd, KD = d->kv_dim, M = e->n_mem, T = e->n_ids;
    if (T + (e->kv ? 0 : M) > tr->max_T || M > tr->max_N)
        return mn_error(MN_EINVAL, "QA example of %d tokens over %d cells exceeds the trainer's (%d, %d)", T, M,
                        tr->max_T, tr->max_N);
    /* KV memory: a prefix of N = M cells; embedding memory: E = M leading input rows */
    const int32_t N = e->kv ? M : 0, E = e->kv ? 0 : M;
    for (int32_t j = 0; j < M; j++) tr->pos[j] = j;
    if (e->kv) { /* keys rotated at their positions, as mn_docmem_prime appends them */
        const int64_t n = (int64_t)d->n_layer * M * KD;
        for (int64_t i = 0; i < n; i++) tr->pk[i] = (real)e->k[i], tr->pv[i] = (real)e->v[i];
        for (int l = 0; l < d->n_layer; l++)
            TN(mn_tmodel_rope)(tr->tm, tr->pk + (int64_t)l * M * KD, tr->pos, M, d->n_head_kv, 0);
    } else {
        for (int64_t i = 0; i < (int64_t)E * C; i++) tr->x[i] = (real)e->k[i];
    }
    TN(mn_tmodel_embed)(tr->tm, e->ids, T, tr->x + (int64_t)E * C);
    for (int32_t j = 0; j < E; j++) tr->tgt[j] = -1;
    for (int32_t j = 0; j < T; j++) {
        tr->pos[E + j] = M + j;
        tr->tgt[E + j] = j + 1 >= e->n_prompt && j + 1 < T ? e->ids[j + 1] : -1;
    }
    const int has_dec = dec && (dec->q || dec->k || dec->v || dec->o);
    TN(mn_tpass) ps = {.T = E + T, .x = tr->x, .pos = tr->pos, .N = N, .pk = tr->pk, .pv = tr->pv,
                       .targets = tr->tgt, .lora = has_dec ? dec : NULL, .ce_w = 1};
    double ls = 0;
    if ((rc = TN(mn_tmodel_forward)(tr->tm, tr->ws, &ps, &ls))) return rc;
    if (loss) *loss = ls;
    if (n_scored) *n_scored = e->n_ids - e->n_prompt;
    if (!grad || !has_dec) return MN_OK;
    return TN(mn_tmodel_backward)(tr->tm, tr->ws, &ps, dscale);
}
