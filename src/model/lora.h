/* lora.h - a LoRA adapter for the base model itself (the decoder), in
 * llama.cpp's LoRA GGUF layout, so the same file loads in llama.cpp.
 *
 * LLoCO fine-tunes such an adapter per document group ("in-domain"): the
 * decoder learns to read its group's compressed memories. mnemo installs it
 * per request with mn_context_set_lora, so switching groups does not reload
 * the model.
 *
 * File: general.architecture = the model's (llama.cpp checks it),
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha (f32);
 * mnemo.base.hash (u64) and mnemo.base.name tie it to one model. Tensors, F32,
 * for each targeted projection p in {q, k, v, o} of every layer N:
 *   blk.N.attn_<p>.weight.lora_a  [n_in, r]    (A: r rows of n_in)
 *   blk.N.attn_<p>.weight.lora_b  [r, n_out]   (B: n_out rows of r)
 * with p "output" for o. W' x = W x + (alpha / r) B A x.
 */
#ifndef MN_LORA_H
#define MN_LORA_H

#include <stdint.h>

#include "mnemo.h"
#include "model/forward.h"

typedef struct mn_lora_file mn_lora_file;

/* A fresh adapter on the projections named in targets (a subset of "qkvo"):
 * A ~ uniform(-1/sqrt(n_in), 1/sqrt(n_in)) from seed, B = 0 (no change yet). */
int mn_lora_file_init(const mn_model *m, const char *targets, int32_t rank, float alpha, uint64_t seed,
                      mn_lora_file **out);
/* Loads and checks: adapter keys, the model's architecture and hash, every
 * tensor's name, shape and type (F32), all layers of each target present,
 * no truncation. Tensors are copied. */
int mn_lora_file_load(const mn_model *m, const char *path, mn_lora_file **out);
/* Writes atomically (temp file + rename). */
int mn_lora_file_save(const mn_lora_file *f, const char *path);
void mn_lora_file_free(mn_lora_file *f);

/* The deltas, for mn_context_set_lora; valid while f lives. */
const mn_lora_set *mn_lora_file_set(const mn_lora_file *f);
/* FNV-1a 64 over names, shapes and values (what a store records). */
uint64_t mn_lora_file_hash(const mn_lora_file *f);
int32_t mn_lora_file_rank(const mn_lora_file *f);
float mn_lora_file_alpha(const mn_lora_file *f);

/* Tensors for a trainer: i in [0, n); name, element count and writable data. */
int mn_lora_file_n_tensors(const mn_lora_file *f);
int mn_lora_file_tensor(mn_lora_file *f, int i, const char **name, int64_t *n, float **data);

#endif
