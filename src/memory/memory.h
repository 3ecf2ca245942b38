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

#include "memory/uio.h"
#include "mnemo.h"

/* Attaches a UIO encoder (its own context and n_threads threads) to a stream
 * created with mode MN_MODE_MEMORY. The parameters' arrays must outlive it. */
int mn_stream_attach_uio(mn_stream *s, const mn_uio_params *p, int n_threads);

/* Memory slots currently held. */
int32_t mn_stream_n_memory(const mn_stream *s);

#endif
