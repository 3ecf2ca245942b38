/* mnemo.h - public API of libmnemo.
 *
 * mnemo runs Llama-family GGUF models on the CPU and (in later layers) compresses
 * long contexts into memory. All fallible calls return 0 or a negative MN_E*
 * code and record a message retrievable with mn_last_error().
 */
#ifndef MNEMO_H
#define MNEMO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    MN_OK = 0,
    MN_EINVAL = -1,      /* bad argument or request */
    MN_ENOMEM = -2,      /* allocation failed */
    MN_EIO = -3,         /* open/read/mmap failed */
    MN_EFORMAT = -4,     /* malformed file */
    MN_EUNSUPPORTED = -5,/* well-formed but not supported */
    MN_ENOTFOUND = -6,   /* missing key/tensor/file */
    MN_ERANGE = -7,      /* value out of range (e.g. prompt longer than context) */
};

/* Message of the last failure on this thread (never NULL). */
const char *mn_last_error(void);
/* Short description of a status code. */
const char *mn_strerror(int code);

/* ---------------------------------------------------------------- models */
typedef struct mn_model mn_model;
typedef struct mn_context mn_context;
typedef struct mn_tokenizer mn_tokenizer;

/* Memory-maps and validates a Llama-family GGUF file (weights stay mapped). */
int mn_model_load(const char *path, mn_model **out);
void mn_model_free(mn_model *m);
const mn_tokenizer *mn_model_tokenizer(const mn_model *m);
int32_t mn_model_n_vocab(const mn_model *m);
int32_t mn_model_n_ctx_train(const mn_model *m);
int32_t mn_model_n_embd(const mn_model *m);
int32_t mn_model_n_layer(const mn_model *m);
const char *mn_model_name(const mn_model *m);
/* Identity of the weights (names, shapes, types, data samples); adapters and
 * memory files record it to refuse being used with another model. */
uint64_t mn_model_hash(const mn_model *m);
/* One-line summary of the architecture into buf; returns snprintf's count. */
int mn_model_describe(const mn_model *m, char *buf, size_t cap);

/* Writes a copy of the GGUF at in_path with every quantised matrix converted to
 * `type` (0 = f32, 1 = f16, the GGUF type ids); metadata is kept. */
int mn_model_convert(const char *in_path, const char *out_path, int type);

/* -------------------------------------------------------------- contexts */
typedef struct {
    int32_t n_ctx;     /* KV cache cells; <= 0: the model's trained context */
    int32_t n_batch;   /* tokens per forward batch (scratch size); <= 0: 512 */
    int n_threads;     /* including the caller; <= 0: all online cores */
} mn_context_params;

mn_context_params mn_context_default_params(void);
/* A KV cache plus scratch buffers and a thread pool; the model must outlive it. */
int mn_context_create(const mn_model *m, const mn_context_params *p, mn_context **out);
void mn_context_free(mn_context *c);
int32_t mn_context_n_ctx(const mn_context *c);
int mn_context_n_threads(const mn_context *c);
const mn_model *mn_context_model(const mn_context *c);
/* Bytes of K/V held by the occupied cells. */
size_t mn_context_kv_bytes(const mn_context *c);

/* Runs n tokens after the cells already in the cache (positions continue from
 * the last cell's). logits: NULL; or n_vocab floats for the last token; or
 * n * n_vocab floats (row per token) when logits_all. MN_ERANGE when the
 * tokens do not fit in the context. */
int mn_decode(mn_context *c, const int32_t *tokens, int32_t n, float *logits, int logits_all);
/* Same with input embeddings (n rows of n_embd floats) instead of token ids. */
int mn_decode_embd(mn_context *c, const float *embd, int32_t n, float *logits, int logits_all);

/* ------------------------------------------------------------- KV cache
 * The cache is a sequence of cells, each with an explicit position. Keys are
 * stored rotated by RoPE at their cell's position. */
int32_t mn_kv_n_cells(const mn_context *c);
int32_t mn_kv_pos(const mn_context *c, int32_t cell);  /* -1 outside */
int32_t mn_kv_next_pos(const mn_context *c);           /* last position + 1, or 0 */
void mn_kv_clear(mn_context *c);
/* Removes cells [c0, c1); later cells move down, keeping their positions. */
int mn_kv_drop(mn_context *c, int32_t c0, int32_t c1);
/* Adds delta to the positions of cells [c0, c1), re-rotating their keys. */
int mn_kv_shift(mn_context *c, int32_t c0, int32_t c1, int32_t delta);
/* Appends n cells that did not come from tokens. k, v: (n_layer, n, n_kv_head*head_dim)
 * floats; pos: n positions. If !k_has_rope the keys are rotated to pos here. */
int mn_kv_append(mn_context *c, int32_t n, const int32_t *pos, const float *k, const float *v, int k_has_rope);
/* Copies cells [c0, c0+n) out as floats in the layout mn_kv_append takes (keys rotated). */
int mn_kv_read(const mn_context *c, int32_t c0, int32_t n, float *k, float *v);

/* ------------------------------------------------------------ perplexity */
typedef struct {
    double ppl, ppl_err, nll; /* nll: mean negative log-likelihood (nats) */
    int64_t tokens;           /* scored tokens */
    int64_t windows;
} mn_ppl_result;
typedef void (*mn_ppl_progress_fn)(void *user, int64_t windows, int64_t tokens, double ppl_so_far);
/* Perplexity of ids[0..n) with llama-perplexity's protocol: windows of n_ctx
 * tokens every `stride` (<= 0: n_ctx) tokens, each from an empty cache with its
 * first token replaced by `bos` (if >= 0), scoring positions from
 * max(n_ctx/2, n_ctx - stride). The context needs n_ctx cells. */
int mn_perplexity(mn_context *c, const int32_t *ids, int64_t n, int32_t n_ctx, int32_t stride, int32_t bos,
                  mn_ppl_progress_fn progress, void *user, mn_ppl_result *res);

#ifdef __cplusplus
}
#endif
#endif
