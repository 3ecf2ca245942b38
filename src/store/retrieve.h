/* retrieve.h - which stored documents answer a question: BM25 over chunk text
 * and dense similarity of chunk embeddings (embed.h), fused by reciprocal rank
 * (score = sum over the two lists of 1 / (60 + rank)). Rank fusion needs no
 * calibration between BM25's unbounded scores and cosines, and a document
 * both lists agree on wins; either list alone still ranks a document. */
#ifndef MN_RETRIEVE_H
#define MN_RETRIEVE_H

#include <stdint.h>

#include "mnemo.h"
#include "store/store.h"

typedef struct {
    int64_t doc_id;
    double score;             /* fused (larger is better) */
    int rank_bm25, rank_dense; /* 1-based, 0: not in that list */
    double bm25, dense;       /* the lists' own scores */
} mn_retrieval_hit;

/* Up to k hits, best first, into hits (k entries). The question is embedded
 * with embed_ctx (its cache is used and cleared; NULL: BM25 only). owner:
 * only documents it owns are candidates (NULL: all). */
int mn_retrieve(mn_store *s, mn_context *embed_ctx, const char *question, const char *owner, int k,
                mn_retrieval_hit *hits, int *n);

/* The fusion alone: BM25 hits bm and dense hits dn (best first, at most 32
 * each) into the k best by reciprocal rank; equal fused scores go to the
 * document with the larger sum of its scores over each list's best. */
int mn_retrieve_fuse(const mn_store_hit *bm, int nb, const mn_store_hit *dn, int nd, int k, mn_retrieval_hit *hits,
                     int *n);
/* Turns document ids (explicit, or retrieval hits best first) into the
 * documents to answer from, with their memories for adapter_hash. Explicit
 * ids (retrieved = 0) must all exist, have a memory and fit in slot_budget
 * together (MN_ENOTFOUND / MN_ERANGE otherwise). Retrieved ids keep LLoCO's
 * one-adapter-per-request rule: only documents of the best hit's group are
 * used, and those that no longer fit the budget are skipped. *n_out gets the
 * count (<= n); the first document's group is the request's group. */
int mn_retrieve_select(mn_store *s, const int64_t *ids, int n, int retrieved, uint64_t adapter_hash,
                       int64_t slot_budget, mn_store_doc *out, int *n_out);

#endif
