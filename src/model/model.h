/* model.h - a loaded model (Llama family, or Gemma 3): hyperparameters and weight views.
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

/* The architectures differ only in the switches of mn_hparams and the
 * optional tensors of mn_layer; one forward pass reads both. */
typedef enum { MN_ARCH_LLAMA = 0, MN_ARCH_GEMMA3 = 1 } mn_arch;
typedef enum { MN_ACT_SILU = 0, MN_ACT_GELU_TANH = 1 } mn_act;

typedef struct {
    const float *attn_norm;                  /* (C) */
    const float *ffn_norm;                   /* (C) */
    const float *q_norm, *k_norm;            /* (D) RMS norm of each query / key head before RoPE, or NULL */
    const float *post_attn_norm;             /* (C) RMS norm of the attention output before the residual, or NULL */
    const float *post_ffn_norm;              /* (C) the same for the feed-forward output, or NULL */
    mn_weight wq, wk, wv, wo;                /* (C -> H*D), (C -> K*D) x2, (H*D -> C) */
    mn_weight w_gate, w_up, w_down;          /* (C -> F) x2, (F -> C) */
    int32_t swa;                             /* sliding-window layer: sees only the last hp.n_swa cells */
    float rope_base, rope_freq_scale;        /* this layer's RoPE (Gemma 3: local and global differ) */
} mn_layer;

typedef struct {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot;
    int32_t arch;          /* mn_arch */
    float rope_base;       /* theta of the global (non-window) layers */
    float rope_freq_scale; /* 1 / linear scaling factor */
    float norm_eps;
    int32_t rope_neox;     /* RoPE pairs (i, i + D/2) instead of (2i, 2i + 1) */
    int32_t act;           /* mn_act of the gated feed-forward */
    float embd_scale;      /* input embeddings are multiplied by this (Gemma: sqrt(C)) */
    float attn_scale;      /* query-key scale (1/sqrt(D) unless the model says otherwise) */
    int32_t n_swa;         /* sliding window in cells of the window layers, 0 if none */
    int32_t swa_pattern;   /* Gemma 3: layer l has the window unless l % pattern == pattern - 1 */
    float rope_base_swa;   /* RoPE base of the window layers */
    int32_t n_swa_layers;  /* how many layers have the window */
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
