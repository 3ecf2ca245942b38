/* retrieve.c - hybrid BM25 + dense retrieval with rank fusion (retrieve.h). */
#include "store/retrieve.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "store/embed.h"

/* Candidates taken from each list before fusion. */
#define POOL 32
#define RRF_K 60.0

static mn_retrieval_hit *find_or_add(mn_retrieval_hit *all, int *n, int64_t doc) {
    for (int i = 0; i < *n; i++)
        if (all[i].doc_id == doc) return &all[i];
    mn_retrieval_hit *h = &all[(*n)++];
    memset(h, 0, sizeof *h);
    h->doc_id = doc;
    return h;
}

typedef struct {
    mn_retrieval_hit h;
    double tie; /* the lists' own scores, each over its best: decides between equal fused scores */
} fused;

static int cmp_fused(const void *a, const void *b) {
    const fused *x = a, *y = b;
    if (x->h.score != y->h.score) return x->h.score < y->h.score ? 1 : -1;
    if (x->tie != y->tie) return x->tie < y->tie ? 1 : -1;
    return x->h.doc_id < y->h.doc_id ? -1 : x->h.doc_id > y->h.doc_id;
}

int mn_retrieve_fuse(const mn_store_hit *bm, int nb, const mn_store_hit *dn, int nd, int k, mn_retrieval_hit *hits,
                     int *n) {
    *n = 0;
    if (k <= 0) return MN_OK;
    mn_retrieval_hit all[2 * POOL];
    int na = 0;
    if (nb > POOL) nb = POOL;
    if (nd > POOL) nd = POOL;
    for (int i = 0; i < nb; i++) {
        mn_retrieval_hit *h = find_or_add(all, &na, bm[i].doc_id);
        h->rank_bm25 = i + 1;
        h->bm25 = bm[i].score;
        h->score += 1.0 / (RRF_K + i + 1);
    }
    for (int i = 0; i < nd; i++) {
        mn_retrieval_hit *h = find_or_add(all, &na, dn[i].doc_id);
        h->rank_dense = i + 1;
        h->dense = dn[i].score;
        h->score += 1.0 / (RRF_K + i + 1);
    }
    /* Two documents the lists rank in swapped order fuse to the same score; the one each list
     * rates closer to its best wins (BM25 21.8 against 3.6 beats cosines 0.76 against 0.79),
     * rather than whichever was stored first. */
    double bmax = 0, dmax = 0;
    for (int i = 0; i < na; i++) {
        if (all[i].rank_bm25 && all[i].bm25 > bmax) bmax = all[i].bm25;
        if (all[i].rank_dense && all[i].dense > dmax) dmax = all[i].dense;
    }
    fused f[2 * POOL];
    for (int i = 0; i < na; i++) {
        f[i].h = all[i];
        f[i].tie = (all[i].rank_bm25 && bmax > 0 ? all[i].bm25 / bmax : 0) +
                   (all[i].rank_dense && dmax > 0 ? all[i].dense / dmax : 0);
    }
    qsort(f, (size_t)na, sizeof *f, cmp_fused);
    *n = na < k ? na : k;
    for (int i = 0; i < *n; i++) hits[i] = f[i].h;
    return MN_OK;
}

int mn_retrieve(mn_store *s, mn_context *embed_ctx, const char *question, const char *owner, int k,
                mn_retrieval_hit *hits, int *n) {
    *n = 0;
    if (k <= 0) return 0;
    mn_store_hit bm[POOL], dn[POOL];
    int nb = 0, nd = 0;
    int rc = mn_store_search_bm25(s, question, owner, POOL, bm, &nb);
    if (rc) return rc;
    if (embed_ctx) {
        const mn_model *m = mn_context_model(embed_ctx);
        const mn_tokenizer *tok = mn_model_tokenizer(m);
        int32_t C = mn_model_n_embd(m);
        size_t len = strlen(question);
        int64_t cap = (int64_t)len + 8, got = 0;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
        float *q = malloc(sizeof(float) * (size_t)C);
        if (!ids || !q) rc = mn_error(MN_ENOMEM, "out of memory");
        if (!rc) rc = mn_tokenize(tok, question, len, 0, 0, ids, cap, &got);
        if (!rc && got > 0) {
            /* a long question is embedded by its last chunk's worth of tokens */
            int32_t use = got > MN_EMBED_CHUNK ? MN_EMBED_CHUNK : (int32_t)got;
            if (use > mn_context_n_ctx(embed_ctx)) use = mn_context_n_ctx(embed_ctx);
            rc = mn_embed_tokens(embed_ctx, ids + got - use, use, q);
            if (!rc) rc = mn_store_search_dense(s, q, C, owner, POOL, dn, &nd);
        }
        free(ids);
        free(q);
        if (rc) return rc;
    }
    return mn_retrieve_fuse(bm, nb, dn, nd, k, hits, n);
}

int mn_retrieve_select(mn_store *s, const int64_t *ids, int n, int retrieved, uint64_t adapter_hash,
                       int64_t slot_budget, mn_store_doc *out, int *n_out) {
    *n_out = 0;
    int64_t used = 0;
    for (int i = 0; i < n; i++) {
        mn_store_doc d;
        int rc = mn_store_get(s, ids[i], adapter_hash, &d);
        if (rc == MN_ENOTFOUND && retrieved) continue;
        if (rc) return rc;
        if (d.n_slots < 0) {
            if (retrieved) continue;
            return mn_error(MN_ENOTFOUND, "document %lld has no memory made with this adapter (add it again with it)",
                            (long long)d.id);
        }
        if (retrieved && *n_out > 0 && strcmp(d.group, out[0].group)) continue;
        if (used + d.n_slots > slot_budget) {
            if (retrieved) continue;
            return mn_error(MN_ERANGE, "the documents' memories (%lld slots so far) do not fit the %lld the context "
                            "leaves", (long long)(used + d.n_slots), (long long)slot_budget);
        }
        int dup = 0;
        for (int j = 0; j < *n_out; j++) dup |= out[j].id == d.id;
        if (dup) continue;
        used += d.n_slots;
        out[(*n_out)++] = d;
    }
    return 0;
}
