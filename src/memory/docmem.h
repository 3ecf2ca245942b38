/* docmem.h - a document's compressed memory, whatever the compressor.
 *
 * The LLoCO path (`mnemo compress`, `mnemo ask`, the document store and the
 * server) works with this one type, so it does not care whether the adapter is
 * UIO (memory K/V from the transfer head), Activation Beacon (the beacons' K/V)
 * or summary embeddings (last-layer states prepended as input embeddings).
 *
 * Shapes: L n_layer, KD kv dim (n_head_kv * head_dim), C n_embd.
 */
#ifndef MN_DOCMEM_H
#define MN_DOCMEM_H

#include <stdint.h>

#include "memory/adapter.h"
#include "memory/recall.h"
#include "memory/uio.h"
#include "mnemo.h"

typedef enum { MN_DOCMEM_KV = 0, MN_DOCMEM_EMBD = 1 } mn_docmem_kind;

/* A UIO adapter with a recent window of R segments was trained reading
 * [sinks | memories | R segments raw | the segment being read], so its
 * document memories keep that layout: the first MN_DOCMEM_SINKS tokens and the
 * last R segments (with a final partial one) stay raw token ids, decoded
 * around the memory slots when primed; only the segments between are
 * compressed. A document of at most R + 1 segments stays raw entirely. */
#define MN_DOCMEM_SINKS 4 /* as the trainer and memory streams default to */
#define MN_DOCMEM_RECALL_MAXK 64

typedef struct {
    mn_docmem_kind kind;
    int32_t n_slots;  /* KV cells, or embeddings */
    int64_t n_tokens; /* document tokens (compressed or kept raw) */
    int32_t n_raw;    /* raw token ids in raw: */
    int32_t n_head;   /* the first n_head primed before the slots, the rest after them */
    int32_t *raw;
    int32_t n_layer;  /* KV: L; EMBD: 1 */
    int32_t dim;      /* KV: KD; EMBD: C */
    /* KV: k, v are (L, n_slots, KD), keys WITHOUT RoPE (placed at their
     * positions when primed). EMBD: k is (n_slots, C), v is NULL. */
    float *k, *v;
    /* exact recall (recall.h), UIO with a recent window: the compressed
     * segments' ids (the document's first n_exact tokens, in segments of
     * exact_seg, one per exact_seg / ratio slots) and their representative
     * keys rep, rep_sh (n_exact / exact_seg, L, MN_RECALL_REP, KD); 0 / NULL
     * without an exact part */
    int32_t n_exact, exact_seg;
    int32_t *exact;
    float *rep, *rep_sh;
    /* --exact kv (mn_docmem_add_cells; version-4 memory files): every exact
     * token's decoder cells as read behind the memory before its segment, 8
     * bits, per segment an entry of kvstore.h's layout (K rows (L, exact_seg)
     * then V rows, keys without RoPE); recall copies a segment's cells back
     * instead of decoding its ids. NULL without. */
    const uint8_t *cells;
    void *owner_; /* internal: what backs k/v (heap or a mapped file) */
    void *cells_heap_, *mf_; /* internal: what backs cells (heap, or the memory file kept mapped) */
} mn_docmem;

/* Compresses ids[0..n) with adapter a (any compressor) on n_threads threads
 * (<= 0: all cores). The same result for any thread count. The document's tail
 * is kept (a final partial segment), nothing is dropped. */
int mn_docmem_compress(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int n_threads,
                       mn_docmem *out);

/* The same with progress over the document's tokens (uio.h: about every
 * 50 ms while UIO and summary compressors work; Activation Beacon's windows
 * run in order and report only the end, which every compressor reports once);
 * a stop asked by it is MN_ECANCELLED. */
int mn_docmem_compress_progress(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int n_threads,
                                const mn_compress_progress *pr, mn_docmem *out);
/* Forgets the exact part (a memory file without it is smaller; recall is off). */
void mn_docmem_drop_exact(mn_docmem *d);
/* Adds the exact part's cells (--exact kv) to a UIO memory with an exact part:
 * one decoder pass over the compressed segments in order, each read behind
 * the raw head and the slots of the segments before it (as priming lays them
 * out), with the adapter's reader attached where it has one (it reads the
 * paged segments). Costs about what reading the document costs the decoder;
 * mn_kvstore_cell_bytes a token. */
int mn_docmem_add_cells(const mn_model *m, const mn_adapter *a, mn_docmem *d, int n_threads);

/* Frees what backs d and zeroes it (safe on a zeroed struct). */
void mn_docmem_release(mn_docmem *d);

/* Memory files (memfile.h): f16 unless f32; written atomically; the model's and
 * the adapter's hashes are recorded. Loading maps the file, checks the header,
 * the checksums and that model and adapter are the ones that wrote it (a clear
 * error otherwise) and converts to f32. */
int mn_docmem_save(const mn_docmem *d, const mn_model *m, const mn_adapter *a, const char *path, int f32);
int mn_docmem_load(const char *path, const mn_model *m, const mn_adapter *a, mn_docmem *out);
/* mn_docmem_save with a title recorded in the file (cut at 255 bytes, on a
 * UTF-8 character boundary; NULL: none). */
int mn_docmem_save_titled(const mn_docmem *d, const mn_model *m, const mn_adapter *a, const char *path, int f32,
                          const char *title);

/* Cells a primed memory takes: its slots and its raw tokens. */
int64_t mn_docmem_cells(const mn_docmem *d);

/* Places n memories, in order, into the empty context c as the reader's prefix:
 * for each, its leading raw tokens decoded, KV slots appended at consecutive
 * positions (embeddings decoded as input embeddings), its raw tail decoded.
 * *n_pos_out gets the position the first question token takes. MN_ERANGE when
 * they do not fit the context, MN_EINVAL for a memory of another kind or shape. */
int mn_docmem_prime(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n, int32_t *n_pos_out);

/* Segments recall paged in while priming. */
typedef struct {
    int32_t n;                              /* paged segments */
    int32_t mem[MN_DOCMEM_RECALL_MAXK];     /* of which memory */
    int64_t start[MN_DOCMEM_RECALL_MAXK];   /* first token's index in that document */
    int32_t len[MN_DOCMEM_RECALL_MAXK];
    int32_t cells;                          /* cells they hold */
    int32_t stored;                         /* segments there were to choose from */
    int64_t slots_out;                      /* memory slots left out to fit (ro->fit), the oldest */
    double select_s, page_s;                /* time choosing and paging */
} mn_docmem_paged;

/* mn_docmem_prime with exact recall: the query q[0..nq) (the question's ids)
 * chooses ro->k segments among the memories' exact parts (split evenly between
 * memories that have one), each paged in raw after its memory's slots and
 * before its raw tail (ro->late: after the tail). Memories without an exact
 * part are primed as before. paged (optional) tells what was paged. The context
 * needs mn_docmem_recall_cells more cells, and room for the query while it is
 * scored; with ro->fit, what does not fit leaves out the oldest slots (the
 * memory that holds the most first) and a raw tail is cut to the room left. */
int mn_docmem_prime_recall(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n,
                           const mn_recall_opts *ro, const int32_t *q, int32_t nq, int32_t *n_pos_out,
                           mn_docmem_paged *paged);
/* The segments mn_docmem_prime_recall would page for the query q, without a
 * context: BM25 only (MN_EUNSUPPORTED for a scorer that reads the query's
 * queries). */
int mn_docmem_recall_choice(const mn_model *m, const mn_docmem *const *mems, int n, const mn_recall_opts *ro,
                            const int32_t *q, int32_t nq, mn_docmem_paged *out);
/* Re-selection during an answer: chooses recall's segments for the query q
 * (the question and the answer so far); where the choice differs from
 * *paged, the context c is primed again with it and ids[0..n_ids) (the prompt
 * and the tokens generated so far) read after it, the last one's logits to
 * logits, *paged updated and *changed set. The same choice changes nothing.
 * The key scorers choose once, at the question (nothing is done here). */
int mn_docmem_reselect(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n, const mn_recall_opts *ro,
                       const int32_t *q, int32_t nq, const int32_t *ids, int64_t n_ids, float *logits,
                       mn_docmem_paged *paged, int *changed);
/* The ids of a paged segment (start, len as in mn_docmem_paged): from the
 * exact part, or from the raw tail where recall offered it; NULL outside. */
const int32_t *mn_docmem_ids_at(const mn_docmem *d, int64_t start, int32_t len);
/* Cells that recall of k segments can add to n memories. */
/* The total K that k means for these memories: k itself, or (MN_RECALL_AUTO)
 * the sum of each memory's own count for its stored segments. */
int32_t mn_docmem_recall_k(const mn_docmem *const *mems, int n, int32_t k);
int64_t mn_docmem_recall_cells(const mn_docmem *const *mems, int n, int32_t k);

#endif
