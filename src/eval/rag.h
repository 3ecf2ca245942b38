/* rag.h - retrieval of raw text, the baseline a user would build by hand:
 * the document cut into chunks, the chunks that best match the question by
 * BM25 placed in the window before it, in document order. The evaluation
 * compares memory + recall with it at equal KV cells. */
#ifndef MN_EVAL_RAG_H
#define MN_EVAL_RAG_H

#include <stdint.h>

#include "mnemo.h"

/* Chooses among doc[0..n) cut into chunks of `chunk` tokens (the last may be
 * shorter) the best by BM25 of the question q[0..nq), as many as fit `budget`
 * tokens, and copies them to out (budget ids) in document order; *n_out gets
 * the tokens copied. chunks (optional, budget / chunk + 1 entries) gets the
 * indices of the chunks chosen (chunk i starts at token i * chunk), *n_chunks
 * their count. A document that fits the budget is copied whole. */
int mn_rag_select(const mn_model *m, const int32_t *doc, int64_t n, const int32_t *q, int32_t nq, int32_t chunk,
                  int64_t budget, int32_t *out, int64_t *n_out, int32_t *chunks, int32_t *n_chunks);

#endif
