/* summary.h - the summary-embedding compressor (LLoCO / AutoCompressor style):
 * a segment of l tokens becomes m vectors that the decoder reads as input
 * embeddings ("soft tokens") in front of its own input.
 *
 * Encoder = the base model with the adapter's LoRA on W_Q and W_V, run exactly
 * as UIO's encoder (m memory tokens sharing the learned embedding appended to
 * the segment; memory token i at position (i+1)*l/m sees the segment tokens
 * before it and itself). The memory tokens' final hidden states (after the
 * output norm) are the summary embeddings. The decoder is the unchanged base
 * model: it decodes the embeddings like tokens (their K/V are computed by the
 * base projections, attending to the embeddings before them) and then the text.
 *
 * Shapes: l segment, m memory tokens per segment, C n_embd.
 */
#ifndef MN_SUMMARY_H
#define MN_SUMMARY_H

#include <stdint.h>

#include "memory/adapter.h"
#include "memory/uio.h"
#include "mnemo.h"

/* Encoder parameters viewing a loaded summary adapter (no copies): params
 * has l, m, mem_embd and the encoder LoRA; no transfer head. */
typedef struct {
    mn_lora *enc_q, *enc_v;
    mn_lora_set encoder;
    mn_uio_params params;
} mn_summary_binding;

int mn_summary_bind(const mn_model *m, const mn_adapter *a, mn_summary_binding *b);
void mn_summary_unbind(mn_summary_binding *b);

/* Compresses a document: segments of l (the last may be shorter, giving
 * ceil(r / (l/m)) embeddings) in parallel on n_threads threads (<= 0: all
 * cores). *embd_out (M, C) malloc'd. Same result for any thread count. */
int mn_summary_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                            const mn_compress_progress *pr, float **embd_out, int32_t *M_out);

/* Decodes n summary embeddings (n, C) into c after its cells (positions
 * continue), in pieces of the context's batch size; no logits. */
int mn_summary_prime(mn_context *c, const float *embd, int32_t n);

#endif
