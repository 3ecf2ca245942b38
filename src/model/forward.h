/* forward.h - the forward pass's extension points for the memory layers.
 *
 * mn_decode covers plain causal text. The compressors also need: explicit
 * positions per token (UIO memory token i sits at (i+1)*l/m), arbitrary
 * visibility within a batch (memory tokens see only the segment prefix before
 * them and themselves; beacon attention patterns), the per-layer normalised
 * attention inputs of chosen tokens (UIO's memory), the final hidden states
 * (summary embeddings), and LoRA deltas on the attention projections (UIO's
 * encoder and transfer head). These are library-internal.
 *
 * Shapes: T batch tokens, N cells before the batch, C n_embd, L n_layer.
 */
#ifndef MN_FORWARD_H
#define MN_FORWARD_H

#include <stdint.h>

#include "mnemo.h"

typedef struct {
    int32_t n;             /* T */
    const int32_t *tokens; /* (T) ids, or NULL when embd is set */
    const float *embd;     /* (T, C) input embeddings, or NULL */
    const int32_t *pos;    /* (T) positions; NULL: continue after the last cell */
    /* (T, N + T) visibility: mask[i*(N+T) + j] != 0 if batch token i attends to
     * cell j (cells of earlier batch tokens follow the N old ones). NULL: every
     * old cell plus causal within the batch. A token may not see later batch
     * tokens (the batch is processed in order, in pieces). */
    const uint8_t *mask;
    int32_t n_capture;         /* tokens whose activations are copied out */
    const int32_t *capture_idx;/* (n_capture) batch indices */
    float *capture_xn;         /* (L, n_capture, C): normalised attention input per layer, or NULL */
    float *capture_out;        /* (n_capture, C): final hidden state after the output norm, or NULL */
    /* (L, n_capture, KD): the captured tokens' keys BEFORE RoPE and their
     * values, in f32 as computed (not rounded to the cache's f16), or NULL */
    float *capture_k, *capture_v;
    /* (L, n_capture, H*D): the captured tokens' queries BEFORE RoPE (the recall scorers
     * compare them with keys held without rotation), or NULL */
    float *capture_q;
    /* (T) flags: tokens that use the alternative projections `alt_proj`
     * (Activation Beacon's beacon tokens), or NULL */
    const uint8_t *alt;
    const struct mn_proj_set *alt_proj;
    /* (T) flags, or NULL: logits only for flagged tokens, packed in batch
     * order when logits_all, else for the last flagged token */
    const uint8_t *logits_mask;
} mn_batch;

/* Per-layer f32 matrices replacing the base Q, K, V, O projections for the
 * tokens a batch flags: each an array of n_layer pointers to (n_out rows of
 * n_in) floats, laid out like the base matrix; the array or an entry may be
 * NULL (the base matrix is used). LoRA deltas are not applied to them. */
typedef struct mn_proj_set {
    const float *const *q, *const *k, *const *v, *const *o;
} mn_proj_set;

/* Runs a batch; logits as in mn_decode. The batch's cells are appended. */
int mn_decode_batch(mn_context *c, const mn_batch *b, float *logits, int logits_all);

/* A low-rank delta W' = W + scale * B A on one projection: A is (rank, n_in)
 * row-major (n_in contiguous; GGUF ne = [n_in, rank]), B is (n_out, rank). */
typedef struct {
    const float *a, *b;
    int32_t rank;
} mn_lora;

/* Per-layer deltas for Q, K, V, O (each an array of n_layer, or NULL). */
typedef struct {
    float scale;
    const mn_lora *q, *k, *v, *o;
} mn_lora_set;

/* Installs deltas applied by every following forward pass (NULL removes
 * them). The set and its matrices must outlive their use. */
int mn_context_set_lora(mn_context *c, const mn_lora_set *set);

/* y (T, n_out) = the layer's projection `which` ('q','k','v','o') applied to the
 * rows x (T, n_in), plus the installed LoRA delta for it when `with_lora`.
 * T <= n_batch. No RoPE. Used by the transfer head to map captured
 * activations to memory keys and values. */
int mn_context_project(mn_context *c, int layer, char which, const float *x, int32_t T, float *y, int with_lora,
                       const mn_lora_set *lora);

/* Rotates n_heads head vectors x (n_heads, head_dim) by layer `layer`'s RoPE
 * at position pos (a negative pos undoes a rotation at -pos): keys read from
 * the cache become position-free this way. */
int mn_rope_rotate(const mn_model *m, int layer, float *x, int n_heads, int32_t pos);
/* mn_kv_read with the keys' RoPE undone (each rotated back from its cell's
 * position): cells that can be placed at other positions later. */
int mn_kv_read_unrotated(const mn_context *c, int32_t c0, int32_t n, float *k, float *v);
/* Width of one cell's key or value (n_head_kv * head_dim). */
int32_t mn_model_kv_dim(const mn_model *m);
/* Width of one token's queries (n_head * head_dim). */
int32_t mn_model_q_dim(const mn_model *m);

/* Input embeddings of n tokens into out (n, C): dequantised, times the model's
 * embedding scale (Gemma), as the forward pass feeds a token. */
int mn_model_embed(const mn_model *m, const int32_t *ids, int32_t n, float *out);

#endif
