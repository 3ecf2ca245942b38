/* memory.h - attaching a compressor to a stream (MN_MODE_MEMORY), and the
 * per-compressor document compression behind docmem.h.
 *
 * In memory mode the stream keeps [raw sinks | memory slots | local tokens] in
 * its context, at contiguous positions:
 *   UIO      local tokens are decoded normally; when l have accumulated an
 *            encoder (own context) turns them into m memory K/V slots appended
 *            after the existing ones, and their raw cells are dropped;
 *   summary  the same, but the m slots are the encoder's summary embeddings,
 *            decoded into the context as input embeddings (their cells);
 *   beacon   the stream's own context runs Activation Beacon's sliding window:
 *            each full window leaves W/ratio beacon cells (beacon.h).
 * The cache therefore never holds more than sinks + memory + one segment /
 * window, and memory grows by l/ratio per segment unless bounded with
 * mn_stream_set_memory_cap.
 */
#ifndef MN_MEMORY_H
#define MN_MEMORY_H

#include "memory/adapter.h"
#include "memory/beacon.h"
#include "memory/recall.h"
#include "memory/summary.h"
#include "memory/uio.h"
#include "mnemo.h"

/* UIO parameters viewing a loaded UIO adapter (its tensors, no copies). */
typedef struct {
    mn_lora *enc_q, *enc_v, *mem_k, *mem_v; /* per layer */
    mn_lora_set encoder, transfer;
    mn_uio_params params;
} mn_uio_binding;

/* Fails clearly for another compressor kind or another model. The adapter
 * must outlive the binding. */
int mn_uio_bind(const mn_model *m, const mn_adapter *a, mn_uio_binding *b);
void mn_uio_unbind(mn_uio_binding *b);

/* Identity of an adapter: FNV-1a 64 over its configuration (compressor,
 * segment, ratio, rank, alpha, beacon scheme) and its tensors' names, shapes
 * and values; memory files record it. */
uint64_t mn_adapter_hash(const mn_adapter *a);

/* Compresses a whole document: segments of l tokens (the last may be shorter)
 * in parallel on n_threads threads (<= 0: all cores), one encoder each. The
 * result is M memory slots, *k_out and *v_out (L, M, KD) floats without RoPE,
 * malloc'd for the caller. Same result for any thread count. */
int mn_uio_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                        float **k_out, float **v_out, int32_t *M_out);

/* The same, with recall's index of every segment (recall.h): *rep_out and
 * *rep_sh_out (n_seg, L, R, KD) floats, malloc'd; pr optional. */
int mn_uio_compress_doc_indexed(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n,
                                int n_threads, const mn_compress_progress *pr, float **k_out, float **v_out,
                                float **rep_out, float **rep_sh_out, int32_t *M_out);

/* Attaches a UIO encoder (its own context and n_threads threads) to a stream
 * created with mode MN_MODE_MEMORY. The parameters' arrays must outlive it. */
int mn_stream_attach_uio(mn_stream *s, const mn_uio_params *p, int n_threads);

/* The same encoder with the memory tokens' final hidden states as output
 * (summary embeddings): *e_out (M, C) malloc'd. */
int mn_uio_encode_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                      const mn_compress_progress *pr, float **e_out, int32_t *M_out);

/* Attaches an Activation Beacon compressor: it runs in the stream's own
 * context (beacons attend to the stream's cells), keeping [raw sinks |
 * beacons | current window]; the adapter's sinks are used, not the stream's.
 * The parameters' arrays must outlive it. */
int mn_stream_attach_beacon(mn_stream *s, const mn_beacon_params *p);
/* Attaches a summary-embedding encoder (UIO's encoder, own context and
 * n_threads threads): each full segment of l local tokens becomes m
 * embeddings decoded into the stream's context after the memory, and the
 * segment's raw cells are dropped. */
int mn_stream_attach_summary(mn_stream *s, const mn_uio_params *p, int n_threads);
/* The stream's beacon compressor (NULL unless one is attached), e.g. to set
 * the ratio of the next windows. */
mn_beacon *mn_stream_beacon(mn_stream *s);

/* Bounds the memory to max_slots slots (0: no bound, the default): after each
 * compression the oldest slots are dropped and the rest re-positioned after
 * the sinks (StreamingLLM's eviction applied to memory), so cache size and cost
 * per token stay flat for any length; the dropped context is lost. */
int mn_stream_set_memory_cap(mn_stream *s, int32_t max_slots);

/* Exact recall (recall.h) for a UIO stream with a recent window: from now on
 * every segment compressed also keeps its ids and index, and
 * mn_stream_recall pages the k segments that best answer a query back in raw,
 * after the memory: [sinks | memory | paged | recent raw | current piece].
 * k 0 switches it off; k MN_RECALL_AUTO pages a number that grows with the
 * segments stored (mn_recall_auto_k). It is switched on before the stream reads; once on, k,
 * scorer and place may change at any time (the next choice uses them). The
 * context needs mn_recall_max_k(k) * l more cells (mn_memory_n_ctx does not
 * count them). */
#define MN_STREAM_RECALL_MAXK 64
#define MN_STREAM_RECALL_MAXQ MN_RECALL_MAXQ
/* late: the paged segments go after the local tokens read so far (the raw
 * recent window), nearest the question, out of document order:
 * [sinks | memory | recent raw | paged | question ...]. */
int mn_stream_set_recall(mn_stream *s, int32_t k, mn_recall_scorer scorer, int late);
/* While segments are paged in, only the newest n_tokens of the local tokens
 * (the raw recent window and the current piece read so far, question
 * included) stay in the cache: [sinks | memory | paged | newest n | ...].
 * 0 (the default) keeps them all. Fewer raw cells beside the paged text can
 * answer better: the model reads a short window more sharply. */
int mn_stream_set_recall_local(mn_stream *s, int32_t n_tokens);
/* Decodes the local tokens a lazy stream (UIO with a recent window) has not
 * put in the cache yet, so that the context holds the stream's whole layout:
 * a caller may then decode after it directly and drop those cells again (the
 * evaluation scores answers so). No-op for the other streams. */
int mn_stream_sync(mn_stream *s);
/* Chooses and pages in the segments for a query (the question, or the recent
 * text); the choice is made again for the same query after each later
 * compression (the cells after the memory are rebuilt then). */
int mn_stream_recall(mn_stream *s, const int32_t *query, int32_t nq);
/* The paged segments (their count), with each one's first token index in the
 * text read and its length, up to cap of them. */
int32_t mn_stream_recalled(const mn_stream *s, int64_t *starts, int32_t *lens, int32_t cap);
/* Cells the paged segments hold; segments held in the exact store. */
int32_t mn_stream_n_paged(const mn_stream *s);
int32_t mn_stream_n_exact(const mn_stream *s);
/* Seconds spent choosing segments and paging them in since the last reset. */
void mn_stream_recall_time(const mn_stream *s, double *select_s, double *page_s);
/* How the exact store keeps a segment (recall on, before the stream reads):
 * TOKENS its ids alone, its cells decoded again behind the current memory at
 * page-in (the default); KV also its decoder cells in 8 bits (kvstore.h), as
 * they were when the segment was read behind the memory before it, copied back
 * at page-in. KV costs a decoder pass over each segment at compression where a
 * lazy stream has not decoded it (about what the encoder costs) and
 * mn_kvstore_cell_bytes a token; ram_budget bytes stay in RAM, the rest in a
 * spill file. */
typedef enum { MN_EXACT_TOKENS = 0, MN_EXACT_KV = 1 } mn_exact_form;
int mn_stream_set_exact(mn_stream *s, mn_exact_form form, size_t ram_budget);
/* Bytes the exact store's cells hold in RAM and in the spill file (0 for TOKENS). */
void mn_stream_exact_bytes(const mn_stream *s, size_t *ram, size_t *spill);
/* KV: stored segment seg's cells (its tokens after the sinks, *n of them, at
 * most cap) into k and v (L, n, KD), keys without RoPE. */
int mn_stream_exact_cells(mn_stream *s, int32_t seg, int32_t cap, float *k, float *v, int32_t *n);

/* Memory slots currently held (UIO slots, beacons, or summary embeddings). */
int32_t mn_stream_n_memory(const mn_stream *s);

/* Any compressor's parameters viewing a loaded adapter: one of the bindings,
 * by adapter kind. The adapter must outlive the binding. */
typedef struct {
    mn_compressor kind;
    mn_uio_binding uio;
    mn_beacon_binding beacon;
    mn_summary_binding summary;
} mn_memory_binding;

int mn_memory_bind(const mn_model *m, const mn_adapter *a, mn_memory_binding *b);
void mn_memory_unbind(mn_memory_binding *b);
/* Attaches the bound compressor to a memory-mode stream. */
int mn_stream_attach(mn_stream *s, const mn_memory_binding *b, int n_threads);
/* Context cells a memory-mode stream needs to read n_tokens tokens (memory
 * for all of them plus one segment/window of local tokens and n_sinks). */
int32_t mn_memory_n_ctx(const mn_memory_binding *b, int64_t n_tokens, int32_t n_sinks);

#endif
