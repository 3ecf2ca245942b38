/* docstore.h - a document store as one handle (mnemo.h's mn_docstore): the
 * store, the model it is bound to, its compressor adapter, the memories and
 * group adapters loaded so far and the contexts retrieval and answers run
 * on. `mnemo store ls|rm|query|ask` and the bindings go through it, so the
 * CLI prints what a binding returns; the JSON shapes of documents are the
 * server's (its listing and upload answers use the helpers below).
 */
#ifndef MN_DOCSTORE_H
#define MN_DOCSTORE_H

#include <cjson/cJSON.h>

#include "mnemo.h"
#include "store/answer.h"
#include "store/ingest.h"
#include "store/retrieve.h"
#include "store/store.h"

#define MN_DOCSTORE_MAX_K 64 /* documents one question retrieves or names */

/* A document's memory in a response, part by part: memory_slots, raw_cells, kv_cells (slots + raw:
 * what the decoder holds before recall), exact_tokens (kept for recall) and ratio (tokens per KV
 * cell); -1 for a part the memory file could not tell. */
void mn_store_add_memory_parts(cJSON *o, int64_t tokens, int32_t slots, int32_t raw, int32_t exact, int exact_kv,
                               int64_t cells);
/* A stored document as the server lists it. */
cJSON *mn_store_doc_json(mn_store *s, const mn_store_doc *d);
/* An ingested document as the server's upload answers it. */
cJSON *mn_ingest_json(const mn_ingest_result *r, const char *title, const char *group);

/* Deletes the memory files named in files ('\n'-separated, as mn_store_remove
 * gives them) from the store's memory directory. */
void mn_store_unlink_files(mn_store *s, char *files);

/* mn_docstore_open with the store's open flags (MN_STORE_READONLY: a
 * missing store is an error, as for `store query`). */
int mn_docstore_open_flags(const char *db, int flags, const mn_model *m, const char *adapter, const char *fallback,
                           int n_threads, mn_docstore **out);

/* The store inside (for the CLI's printing; the handle's lock is not taken). */
mn_store *mn_docstore_store(mn_docstore *ds);

/* Ranks documents for question; k <= MN_DOCSTORE_MAX_K. */
int mn_docstore_retrieve(mn_docstore *ds, const char *question, int k, mn_retrieval_hit *hits, int *n);

/* Answers question from the memories of the documents ids names (n_ids > 0)
 * or of the k best retrieved; the documents used go to docs (room for
 * MN_DOCSTORE_MAX_K), whether a group's decoder adapter answered to *lora
 * (optional), the cache's cells at the end to *kv_cells. */
int mn_docstore_answer(mn_docstore *ds, const char *question, const int64_t *ids, int n_ids, int k,
                       const mn_ask_params *p, mn_answer_piece_fn on_piece, void *user, mn_store_doc *docs,
                       int *n_docs, int *lora, mn_answer_stats *st, int64_t *kv_cells);

#endif
