/* rag.c - BM25 retrieval of raw chunks (rag.h). */
#include "eval/rag.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/recall.h"

int mn_rag_select(const mn_model *m, const int32_t *doc, int64_t n, const int32_t *q, int32_t nq, int32_t chunk,
                  int64_t budget, int32_t *out, int64_t *n_out, int32_t *chunks, int32_t *n_chunks) {
    *n_out = 0;
    int32_t got = 0;
    if (n_chunks) *n_chunks = 0;
    if (!m || !doc || !out || n < 0 || chunk <= 0 || budget < 0 || (nq > 0 && !q))
        return mn_error(MN_EINVAL, "rag: bad arguments");
    if (n <= budget) { /* everything fits: nothing to choose */
        memcpy(out, doc, sizeof(int32_t) * (size_t)n);
        *n_out = n;
        for (int64_t i = 0; i * chunk < n; i++, got++)
            if (chunks) chunks[got] = (int32_t)i;
        if (n_chunks) *n_chunks = got;
        return MN_OK;
    }
    const int64_t S = (n + chunk - 1) / chunk;
    if (S > (1 << 24)) return mn_error(MN_ERANGE, "rag: %lld chunks", (long long)S);
    if (nq > MN_RECALL_MAXQ) { /* the end of a long question, as recall reads it */
        q += nq - MN_RECALL_MAXQ;
        nq = MN_RECALL_MAXQ;
    }
    mn_exact *x = NULL;
    float *scores = malloc(sizeof(float) * (size_t)S);
    int32_t *top = malloc(sizeof(int32_t) * (size_t)S);
    int rc = !scores || !top ? mn_error(MN_ENOMEM, "out of memory") : mn_exact_create_lexical(m, chunk, &x);
    for (int64_t s = 0; s < S && !rc; s++) {
        const int32_t len = (int32_t)(n - s * chunk < chunk ? n - s * chunk : chunk);
        rc = mn_exact_add(x, doc + s * chunk, len, s * chunk, NULL, NULL, NULL, 0);
    }
    if (!rc && nq > 0) rc = mn_exact_score(x, MN_RECALL_BM25, NULL, q, nq, scores);
    else if (!rc)
        for (int64_t s = 0; s < S; s++) scores[s] = 0; /* no question: the first chunks */
    if (!rc) {
        /* full chunks only fit `budget / chunk` at a time; the short last chunk is counted at its length */
        int32_t k = (int32_t)(budget / chunk);
        if (k > S) k = (int32_t)S;
        got = k > 0 ? mn_exact_top(x, scores, k, top) : 0;
        for (int32_t i = 0; i < got; i++) {
            if (chunks) chunks[i] = top[i];
            int32_t len;
            int64_t st;
            const int32_t *ids = mn_exact_ids(x, top[i], &len, &st);
            memcpy(out + *n_out, ids, sizeof(int32_t) * (size_t)len);
            *n_out += len;
        }
        if (n_chunks) *n_chunks = got;
    }
    mn_exact_free(x);
    free(scores), free(top);
    return rc;
}
