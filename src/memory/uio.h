/* uio.h - the UIO-LLMs compressor: a segment of l tokens becomes m memory slots.
 *
 * Encoder = the base model with LoRA on W_Q, W_V. The segment is followed by m
 * memory tokens that share one learned embedding; memory token i sits at
 * position (i+1)*l/m and attends to the segment tokens before that position
 * and to itself (stepwise coverage); segment tokens are plain causal. At every
 * layer the memory tokens' normalised attention inputs are captured; the
 * transfer head (LoRA on W_K, W_V) maps them to the memory keys and values that
 * the decoder (the unchanged base model) reads as extra KV cells.
 *
 * Shapes: l segment, m memory tokens, L layers, C n_embd, KD kv dim.
 */
#ifndef MN_UIO_H
#define MN_UIO_H

#include <stdint.h>

#include "mnemo.h"
#include "model/forward.h"

typedef struct {
    int32_t l, m;                /* segment length, memory tokens; m divides l */
    const float *mem_embd;       /* (C) memory-token embedding */
    const mn_lora_set *encoder;  /* LoRA on Q, V during encoding; NULL: none */
    const mn_lora_set *transfer; /* LoRA on K, V of the transfer head; NULL: none */
    int32_t recent;              /* streams: complete segments kept raw beside the memory */
} mn_uio_params;

typedef struct mn_uio mn_uio;

/* An encoder with its own context (l + m cells) and n_threads threads. The
 * model and the parameters' arrays must outlive it. */
int mn_uio_create(const mn_model *m, const mn_uio_params *p, int n_threads, mn_uio **out);
void mn_uio_free(mn_uio *u);
/* Encodes seg[0..l) into k, v: (L, m, KD) each, keys WITHOUT RoPE (place them
 * with mn_kv_append(..., k_has_rope = 0) at the memory slots' positions). */
int mn_uio_compress(mn_uio *u, const int32_t *seg, float *k, float *v);
/* A final partial segment of r <= l tokens: its ceil(r / (l/m)) memory tokens
 * keep their usual positions and see the tokens before them (so nothing of a
 * document's tail is dropped). k, v: (L, *m_out, KD). */
int mn_uio_compress_n(mn_uio *u, const int32_t *seg, int32_t r, float *k, float *v, int32_t *m_out);
/* The same encoder (layout, positions, coverage, encoder LoRA) with the
 * memory tokens' FINAL hidden states (after the output norm) as output:
 * out (*m_out, C), *m_out = ceil(r / (l/m)). The summary compressor's step. */
int mn_uio_encode_out(mn_uio *u, const int32_t *seg, int32_t r, float *out, int32_t *m_out);
/* The encoder's context (its cache holds the last encoded segment). */
mn_context *mn_uio_context(mn_uio *u);
/* From now on, keep the memory tokens' queries (before RoPE) of each segment
 * encoded: recall's representative keys are chosen by their attention. */
int mn_uio_capture_queries(mn_uio *u);
/* The last segment's memory-token queries (L, *mm, n_head * head_dim) and their
 * positions (*pos, *mm of them); NULL unless capturing. */
const float *mn_uio_last_queries(const mn_uio *u, const int32_t **pos, int32_t *mm);

/* Progress of a document's compression: fn (mnemo.h's mn_progress_fn) is
 * called on the calling thread about every 50 ms with the tokens begun, and
 * once with all of them at the end; non-zero from it stops the workers at
 * their next segment (MN_ECANCELLED). */
typedef struct {
    mn_progress_fn fn;
    void *user;
} mn_compress_progress;

#endif
