/* memory.h - attaching a compressor to a stream (MN_MODE_MEMORY).
 *
 * In memory mode the stream keeps [memory slots | local tokens] in its context:
 * local tokens are decoded normally; when l of them have accumulated they are
 * compressed into m memory slots appended after the existing ones (positions
 * continue), and their raw cells are dropped. The cache therefore never holds
 * more than memory + l cells, and memory grows by l/ratio per segment.
 */
#ifndef MN_MEMORY_H
#define MN_MEMORY_H

#include "memory/adapter.h"
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

/* Identity of an adapter's parameters (FNV-1a 64 over names, shapes, values);
 * memory files record it. */
uint64_t mn_adapter_hash(const mn_adapter *a);

/* Compresses a whole document: segments of l tokens (the last may be shorter)
 * in parallel on n_threads threads (<= 0: all cores), one encoder each. The
 * result is M memory slots, *k_out and *v_out (L, M, KD) floats without RoPE,
 * malloc'd for the caller. Same result for any thread count. */
int mn_uio_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                        float **k_out, float **v_out, int32_t *M_out);

/* Attaches a UIO encoder (its own context and n_threads threads) to a stream
 * created with mode MN_MODE_MEMORY. The parameters' arrays must outlive it. */
int mn_stream_attach_uio(mn_stream *s, const mn_uio_params *p, int n_threads);

/* Memory slots currently held. */
int32_t mn_stream_n_memory(const mn_stream *s);

#endif
