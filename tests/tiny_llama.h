/* tiny_llama.h - writes a small random Llama GGUF (F32 weights, byte-level
 * vocabulary of 260 tokens) for tests that need a real model file but not a
 * real model: training gradients, the training loop. */
#ifndef MN_TINY_LLAMA_H
#define MN_TINY_LLAMA_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/gguf.h"
#include "mnemo.h"

typedef struct {
    int n_embd, n_head, n_head_kv, n_ff, n_layer, n_ctx;
    double w_scale; /* matrix entries ~ N(0, (w_scale / sqrt(fan_in))^2) */
    uint64_t seed;
} tiny_llama;

#define TINY_VOCAB 260

static uint64_t tiny_rng_ __attribute__((unused));
static inline double tiny_urand_(void) {
    tiny_rng_ ^= tiny_rng_ << 13, tiny_rng_ ^= tiny_rng_ >> 7, tiny_rng_ ^= tiny_rng_ << 17;
    return (double)(tiny_rng_ >> 11) / 9007199254740992.0;
}
static inline double tiny_nrand_(void) {
    return sqrt(-2 * log(tiny_urand_() + 1e-300)) * cos(6.283185307179586 * tiny_urand_());
}

static inline void tiny_add_f32_(mn_gguf_writer *w, const char *name, int64_t cols, int64_t rows, double sd, double mean) {
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(mean + tiny_nrand_() * sd);
    int64_t ne[2] = {cols, rows};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, rows > 1 ? 2 : 1, ne, f);
    free(f);
}

/* GPT-2 byte-level vocabulary: each byte's printable stand-in, then 4 specials
 * (EOS 258). Shared by every test that writes a tiny model. */
static inline void tiny_vocab_write(mn_gguf_writer *w) {
    static char store[256][8];
    const char *toks[TINY_VOCAB];
    int32_t types[TINY_VOCAB];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int cp = b;
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) cp = 256 + n++;
        char *s = store[b];
        if (cp < 0x80) s[0] = (char)cp, s[1] = 0;
        else s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F)), s[2] = 0;
        toks[b] = s;
        types[b] = 1;
    }
    const char *sp[4] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"};
    for (int i = 0; i < 4; i++) toks[256 + i] = sp[i], types[256 + i] = 3;
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    mn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt2");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", TINY_VOCAB, toks, NULL);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, TINY_VOCAB, types);
    const char *merges[1] = {"a b"};
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", 1, merges, NULL);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 258);
    mn_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 0);
}

/* Writes the model to path; 0 or an MN_E* code. Head dim = n_embd / n_head. */
static inline int tiny_llama_write(const tiny_llama *t, const char *path) {
    tiny_rng_ = t->seed ? t->seed : 0x9E3779B97F4A7C15ull;
    const int C = t->n_embd, D = C / t->n_head, HD = t->n_head * D, KD = t->n_head_kv * D, F = t->n_ff;
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_str(w, "general.name", "tiny-train-test");
    mn_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)t->n_layer);
    mn_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)t->n_ctx);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)t->n_head);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)t->n_head_kv);
    mn_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tiny_vocab_write(w);
    const double s = t->w_scale > 0 ? t->w_scale : 1.0;
    tiny_add_f32_(w, "token_embd.weight", C, TINY_VOCAB, 1.0, 0);
    tiny_add_f32_(w, "output.weight", C, TINY_VOCAB, s / sqrt(C), 0);
    tiny_add_f32_(w, "output_norm.weight", C, 1, 0.1, 1.0);
    char nm[64];
    for (int l = 0; l < t->n_layer; l++) {
#define TINY_M(suffix, cols, rows)                            \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l); \
    tiny_add_f32_(w, nm, cols, rows, s / sqrt((double)(cols)), 0);
        TINY_M("attn_q", C, HD);
        TINY_M("attn_k", C, KD);
        TINY_M("attn_v", C, KD);
        TINY_M("attn_output", HD, C);
        TINY_M("ffn_gate", C, F);
        TINY_M("ffn_up", C, F);
        TINY_M("ffn_down", F, C);
#undef TINY_M
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        tiny_add_f32_(w, nm, C, 1, 0.1, 1.0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        tiny_add_f32_(w, nm, C, 1, 0.1, 1.0);
    }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

#endif
