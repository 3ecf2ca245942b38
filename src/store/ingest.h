/* ingest.h - adding a document to the store: hash, tokenize, cut into chunks
 * (BM25 text + dense embeddings, embed.h), compress with the compressor
 * adapter (docmem.h), write the memory file, then record everything in one
 * store transaction.
 *
 * Order matters for crash safety: the memory file is complete on disk
 * (written atomically) before the transaction that refers to it, so a kill at
 * any point leaves either no trace in the store or the whole document; a
 * memory file without its row is garbage that mn_store_gc() removes. Text that
 * is already stored with a memory for this adapter costs only its hash.
 */
#ifndef MN_INGEST_H
#define MN_INGEST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "store/store.h"

typedef struct {
    const char *title, *source, *group; /* group NULL: "default" */
    const char *text;
    size_t len;
    int exact_kv; /* also keep the exact segments' decoder cells in 8 bits (a version-4 memory file) */
} mn_ingest_doc;

typedef struct {
    int64_t id;
    int existed;       /* the text was already stored with a memory for this adapter */
    int64_t n_tokens;
    int32_t n_slots;   /* memory slots (KV cells or embeddings); -1 when unknown (an unreadable file) */
    int32_t n_raw;     /* raw tokens kept beside them; -1 when unknown */
    int32_t n_exact;   /* exact tokens kept for recall (paged in on demand); -1 when unknown */
    int exact_kv;      /* their 8-bit cells are kept too (recall copies them instead of decoding) */
    int64_t n_cells;   /* context cells the memory takes before recall: slots + raw */
    int32_t n_chunks;
    int64_t mem_bytes; /* memory file size */
    double seconds;
} mn_ingest_result;

/* Ingests one document. store_lock (optional) is held around every store
 * call, so several threads may ingest into one handle; the heavy work runs
 * outside it on n_threads threads (<= 0: all cores). A text that is not
 * UTF-8 or holds a NUL byte is refused (MN_EINVAL naming the offset): the
 * store must give back exactly the text it was given, on every backend. */
int mn_ingest(mn_store *s, pthread_mutex_t *store_lock, const mn_model *m, const mn_adapter *a,
              const mn_ingest_doc *doc, int n_threads, mn_ingest_result *out);

/* Ties the store to the model its embeddings and memories come from: records
 * the model's hash on first use, refuses another model later (MN_EINVAL
 * naming both). */
int mn_ingest_bind_model(mn_store *s, const mn_model *m);

/* Name of a new memory file of a document for an adapter:
 * "<sha256>-<adapter hash>-<8 hex digits unique to this call>.mem". Unique,
 * so that ingests of the same text racing in two processes (two servers on
 * one store) never write one file: the loser's file is deleted (or left to
 * mn_store_gc), the winner's stays as recorded. */
void mn_ingest_mem_name(const char *sha256, uint64_t adapter_hash, char *out, size_t cap);

#endif
