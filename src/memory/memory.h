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

/* Attaches a UIO encoder (its own context and n_threads threads) to a stream
 * created with mode MN_MODE_MEMORY. The parameters' arrays must outlive it. */
int mn_stream_attach_uio(mn_stream *s, const mn_uio_params *p, int n_threads);

/* Memory slots currently held. */
int32_t mn_stream_n_memory(const mn_stream *s);

#endif
