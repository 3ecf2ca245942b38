/* model.h - a loaded Llama-family model: hyperparameters and weight views.
 *
 * Weights are never copied: each mn_weight points into the memory-mapped GGUF
 * file. Every tensor's presence, shape and type is checked at load time so the
 * forward pass can trust them.
 *
 * Dimension letters used across the model code:
 *   T tokens in a batch, C = n_embd, H = n_head, K = n_head_kv, D = head_dim,
 *   F = n_ff, V = n_vocab, N = KV cache cells.
 */
#ifndef MN_MODEL_H
#define MN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kernels/quant.h"
#include "mnemo.h"

typedef struct {
    const void *data;          /* row-major, rows of ne0 elements */
    int type;
    int64_t ne0, ne1;          /* ne0 = input dim (contiguous), ne1 = output dim (rows) */
    size_t row_bytes;
    const mn_quant_traits *qt; /* kernels for `type` */
} mn_weight;

typedef struct {
    const float *attn_norm;                  /* (C) */
    const float *ffn_norm;                   /* (C) */
    mn_weight wq, wk, wv, wo;                /* (C -> H*D), (C -> K*D) x2, (H*D -> C) */
    mn_weight w_gate, w_up, w_down;          /* (C -> F) x2, (F -> C) */
} mn_layer;

typedef struct {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot;
    float rope_base;       /* theta */
    float rope_freq_scale; /* 1 / linear scaling factor */
    float norm_eps;
} mn_hparams;

struct mn_model {
    mn_gguf *gguf;
    struct mn_tokenizer *tok;
    mn_hparams hp;
    mn_weight tok_embd;      /* (C) x V, also the output matrix when tied */
    mn_weight output;        /* (C -> V) */
    const float *output_norm;
    mn_layer *layers;
    char name[128];
    char path[1024];
    uint64_t weights_hash;   /* FNV-1a over tensor names, shapes, types and a data sample */
};

#endif
