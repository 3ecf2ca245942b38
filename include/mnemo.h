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
    MN_EUNAVAILABLE = -8,/* a backend outside the process (database, memory directory) cannot serve now: retry */
    MN_ECANCELLED = -9,  /* stopped by the caller (a progress or text callback returned non-zero) */
};

/* Progress of a long call: done of total units (tokens). Return non-zero to
 * stop the call, which then fails with MN_ECANCELLED and keeps nothing. */
typedef int (*mn_progress_fn)(void *user, int64_t done, int64_t total);
/* A piece of generated text (raw bytes: a UTF-8 character may arrive split
 * over two calls). Return non-zero to stop generating. */
typedef int (*mn_text_fn)(void *user, const char *text, size_t len);

/* Message of the last failure on this thread (never NULL). */
const char *mn_last_error(void);
/* Frees what a call returned as malloc'd (a response, an answer): for
 * bindings, whose own free may not be this library's. */
void mn_free(void *p);

/* The OPENBLAS_CORETYPE this CPU should run with, when the OpenBLAS loaded
 * in this process chose older kernels than the CPU allows (a CPU newer than
 * its build knows); NULL when its choice is right. OpenBLAS reads the variable
 * only when it is loaded, so a program sets it and starts again (the CLI
 * re-executes itself; a binding asks a probe process first): training and
 * compression then run on the fast kernels and give the same bits as the CLI. */
const char *mn_blas_core_advice(void);
/* Short description of a status code. */
const char *mn_strerror(int code);
/* The instruction set the kernels were dispatched to: "avx512", "avx2" or "scalar". */
const char *mn_cpu_isa_name(void);

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
/* Bytes of weights one decoded token reads: every layer's matrices and norms, the output
 * projection and one embedding row (the bandwidth bound of decode, with the KV cache). */
size_t mn_model_decode_bytes(const mn_model *m);
/* One-line summary of the architecture into buf; returns snprintf's count. */
int mn_model_describe(const mn_model *m, char *buf, size_t cap);

/* Writes a copy of the GGUF at in_path with every quantised matrix converted to
 * `type` (0 = f32, 1 = f16, the GGUF type ids); metadata is kept. */
int mn_model_convert(const char *in_path, const char *out_path, int type);

/* -------------------------------------------------------------- contexts */
/* The KV cache's cell format: f16, or q8_0 (blocks of 32 values with an f16
 * scale, 34 bytes per 32 values: 53 % of f16's bytes; the head size must be a
 * multiple of 32). */
typedef enum { MN_CACHE_F16 = 0, MN_CACHE_Q8_0 = 1 } mn_cache_type;
/* "f16", "q8_0" -> the type; -1 if unknown. */
int mn_cache_type_parse(const char *name);
const char *mn_cache_type_name(int type);

typedef struct {
    int32_t n_ctx;     /* KV cache cells; <= 0: the model's trained context */
    int32_t n_batch;   /* tokens per forward batch (scratch size); <= 0: 512 */
    int n_threads;     /* including the caller; <= 0: all online cores */
    int cache_type;    /* mn_cache_type */
    /* Models with sliding-window layers (Gemma 3): 0 keeps in those layers only the cells
     * their window still sees (n_window + n_batch rows, the memory saving); 1 keeps every
     * cell, for a caller that reads old cells back (mn_kv_read) */
    int swa_full;
} mn_context_params;

/* The defaults; cache_type is $MNEMO_CACHE_TYPE when it is set (f16 or q8_0:
 * how `mnemo --cache-type` reaches every command), else f16. */
mn_context_params mn_context_default_params(void);
/* A KV cache plus scratch buffers and a thread pool; the model must outlive it. */
int mn_context_create(const mn_model *m, const mn_context_params *p, mn_context **out);
void mn_context_free(mn_context *c);
int32_t mn_context_n_ctx(const mn_context *c);
int mn_context_n_threads(const mn_context *c);
const mn_model *mn_context_model(const mn_context *c);
/* Bytes of K/V held by the occupied cells. */
size_t mn_context_kv_bytes(const mn_context *c);
/* Bytes of K/V a context with the default batch holds for `cells` cells of the given cache
 * type: every layer's cells, but at most window + 512 in sliding-window layers (Gemma 3). */
size_t mn_model_kv_bytes(const mn_model *m, int64_t cells, int cache_type);

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

/* ------------------------------------------------- long-context streams
 * A stream feeds an unbounded token sequence through a context, evicting KV
 * cells as its mode requires so that the cache stays bounded:
 *   FULL      keep everything (an error once the context is full);
 *   TRUNCATE  keep the last `window` tokens;
 *   SINKS     keep the first n_sinks tokens and the most recent ones, `window`
 *             cells in all (StreamingLLM).
 * Kept cells are re-positioned to stay contiguous from 0 (RoPE is relative,
 * so the recent tokens keep their distances to each other), which keeps every
 * position inside the model's trained range however long the stream runs. */
typedef enum {
    MN_MODE_FULL = 0,
    MN_MODE_TRUNCATE = 1,
    MN_MODE_SINKS = 2,
    MN_MODE_MEMORY = 3, /* compressed memory (needs a compressor attached) */
} mn_mode;

typedef struct {
    mn_mode mode;
    int32_t window;  /* cells kept by TRUNCATE/SINKS; <= 0: the context size */
    int32_t n_sinks; /* SINKS and MEMORY: leading tokens kept raw (default 4; 0 in
                        MEMORY gives UIO's published [memory | local] layout) */
} mn_stream_params;

typedef struct mn_stream mn_stream;
mn_stream_params mn_stream_default_params(void);
/* Parses "full", "truncate", "sinks", "memory"; -1 if unknown. */
int mn_mode_parse(const char *name);
const char *mn_mode_name(mn_mode mode);
/* The stream uses (and clears) ctx's KV cache; ctx must outlive it. */
int mn_stream_create(mn_context *ctx, const mn_stream_params *p, mn_stream **out);
void mn_stream_free(mn_stream *s);
void mn_stream_reset(mn_stream *s);
/* Feeds n tokens (any n: they are split so each piece fits the window after
 * eviction). logits as in mn_decode; with logits_all every row is returned. */
int mn_stream_feed(mn_stream *s, const int32_t *ids, int32_t n, float *logits, int logits_all);
/* Tokens fed since creation/reset, and tokens evicted from the cache. */
int64_t mn_stream_n_seen(const mn_stream *s);
int64_t mn_stream_n_evicted(const mn_stream *s);

/* Perplexity of ids[0..n) read as one stream: fed in pieces of `chunk` tokens,
 * every token from index score_from (>= 1) on is scored with the logits of the
 * token before it. Resets the stream first. */
int mn_stream_perplexity(mn_stream *s, const int32_t *ids, int64_t n, int32_t chunk, int64_t score_from,
                         mn_ppl_progress_fn progress, void *user, mn_ppl_result *res);

/* ------------------------------------------------------------- tokenizer
 * The tokenizer of a model: mn_model_tokenizer(model). */
enum { MN_TOKEN_NONE = -1 };

/* Vocabulary kinds. */
typedef enum { MN_VOCAB_SPM = 1, MN_VOCAB_BPE = 2 } mn_vocab_kind;

/* Token types as stored in tokenizer.ggml.token_type (llama.cpp's numbering). */
typedef enum {
    MN_TOKTYPE_UNDEFINED = 0,
    MN_TOKTYPE_NORMAL = 1,
    MN_TOKTYPE_UNKNOWN = 2,
    MN_TOKTYPE_CONTROL = 3,
    MN_TOKTYPE_USER_DEFINED = 4,
    MN_TOKTYPE_UNUSED = 5,
    MN_TOKTYPE_BYTE = 6,
} mn_token_type_t;


/* --- vocabulary facts --- */
int32_t mn_tokenizer_n_vocab(const mn_tokenizer *t);
mn_vocab_kind mn_tokenizer_kind(const mn_tokenizer *t);
/* Pre-tokenizer name as stored in the file ("smollm", "llama-bpe", ...); "" for SPM. */
const char *mn_tokenizer_pre(const mn_tokenizer *t);
/* Special ids, MN_TOKEN_NONE when the vocabulary has none. */
int32_t mn_token_bos(const mn_tokenizer *t);
int32_t mn_token_eos(const mn_tokenizer *t);
int32_t mn_token_eot(const mn_tokenizer *t); /* end of turn, e.g. <|im_end|> / <|eot_id|> */
int32_t mn_token_unk(const mn_tokenizer *t);
int32_t mn_token_pad(const mn_tokenizer *t);
/* Whether mn_tokenize(add_special=1) prepends BOS / appends EOS (tokenizer.ggml.add_bos_token
 * / add_eos_token, with llama.cpp's per-kind defaults when absent). */
int mn_tokenizer_adds_bos(const mn_tokenizer *t);
int mn_tokenizer_adds_eos(const mn_tokenizer *t);
/* SPM only: a space is prepended to text at the start and after special tokens. */
int mn_tokenizer_adds_space_prefix(const mn_tokenizer *t);
/* The file's tokenizer.chat_template (Jinja source, NUL-terminated), or NULL. See chat.h. */
const char *mn_tokenizer_chat_template(const mn_tokenizer *t);

/* --- per token (ids outside [0, n_vocab) give safe defaults: 0, "", NONE) --- */
/* End of generation: EOS, EOT, EOM and the end-of-turn tokens llama.cpp recognises
 * by text (<|im_end|>, <|endoftext|>, <|eot_id|>, <end_of_turn>, ...). */
int mn_token_is_eog(const mn_tokenizer *t, int32_t id);
/* Token type after llama.cpp's overrides (end-of-turn/FIM-looking tokens become CONTROL). */
mn_token_type_t mn_token_type(const mn_tokenizer *t, int32_t id);
/* CONTROL or UNKNOWN: rendered as text only on request (see mn_token_piece). */
int mn_token_is_special(const mn_tokenizer *t, int32_t id);
/* Text as stored in the vocabulary, NUL-terminated; *len (optional) gets its length. */
const char *mn_token_text(const mn_tokenizer *t, int32_t id, size_t *len);
/* Raw bytes the token decodes to, for streaming output: *len gets the length
 * (not NUL-terminated; may be a fragment of a multi-byte UTF-8 character).
 * CONTROL/UNKNOWN tokens give their text when `special` is non-zero, else 0 bytes.
 * No leading-space stripping is done here (see mn_detokenize). */
const char *mn_token_piece(const mn_tokenizer *t, int32_t id, int special, size_t *len);
/* Id of the token whose vocabulary text is exactly text[0..len), or MN_TOKEN_NONE.
 * O(n_vocab); meant for setup code (chat templates), not inner loops. */
int32_t mn_token_find(const mn_tokenizer *t, const char *text, size_t len);

/* --- encode / decode --- */
/* Tokenizes text[0..len) (any bytes; invalid UTF-8 is handled as llama.cpp does:
 * each bad byte reads as U+FFFD for BPE, as a byte token for SPM).
 *   add_special:   prepend BOS / append EOS where the vocabulary asks for it
 *                  (llama_tokenize's add_special)
 *   parse_special: match CONTROL/UNKNOWN token texts in `text` as whole tokens
 *                  (longest first); USER_DEFINED tokens are always matched whole.
 * Writes up to `cap` ids to out and the total count to *n_out. Returns 0, or
 * MN_ERANGE when cap is too small (*n_out then holds the count needed; call again
 * with a bigger buffer), MN_EINVAL, MN_ENOMEM. out may be NULL when cap is 0. */
int mn_tokenize(const mn_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                int32_t *out, int64_t cap, int64_t *n_out);
/* mn_tokenize into a malloc'd array (*ids, *n; caller frees), sized for the text. */
int mn_tokenize_new(const mn_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                    int32_t **ids, int64_t *n);

enum {
    /* render CONTROL/UNKNOWN tokens (BOS, <|im_start|>, ...) as their text */
    MN_DETOK_SPECIAL = 1,
    /* SPM: keep the space mn_tokenize prefixed (at the start and after special tokens) */
    MN_DETOK_KEEP_PREFIX_SPACE = 2,
};
/* Concatenates the pieces of ids[0..n) into out (NUL-terminated). The result is
 * the exact inverse of mn_tokenize: for valid UTF-8 `s`,
 * detokenize(tokenize(s, add_special=0, parse_special=p), p ? MN_DETOK_SPECIAL : 0) == s,
 * except that SPM reads a literal U+2581 in `s` as a space (as SentencePiece does), and
 * that a byte-level BPE vocabulary may lack some bytes' tokens, whose bytes tokenize to
 * nothing, as in llama.cpp (SmolLM2's lacks 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xf1,
 * 0xf2 among the bytes valid UTF-8 can hold; found by tests/fuzz/fuzz_tokenizer.c).
 * Unlike llama_detokenize, no "clean up" of spaces is done.
 * *n_out gets the length without the NUL. Returns 0, MN_ERANGE when cap < length+1
 * (*n_out = length needed, without the NUL), or MN_EINVAL for an id out of range. */
int mn_detokenize(const mn_tokenizer *t, const int32_t *ids, int64_t n, int flags, char *out, size_t cap,
                  size_t *n_out);

/* -------------------------------------------------------------- samplers */
typedef struct {
    float temperature;     /* <= 0: greedy (argmax); must not be NaN/inf */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off; must be >= 0 (0 keeps only the top token) */
    float min_p;           /* <= 0: off; keep tokens with p >= min_p * p_max; must be <= 1 */
    float repeat_penalty;  /* 1: off; must be finite and > 0. llama.cpp semantics:
                              logit > 0 ? logit / pen : logit * pen, applied once to
                              each distinct token among the last repeat_last_n
                              accepted tokens */
    int32_t repeat_last_n; /* window for the penalty (default 64); 0: off; must be >= 0 */
    uint64_t seed;         /* same seed + same logits -> same tokens */
} mn_sampler_params;

typedef struct mn_sampler mn_sampler;

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat 1.0, last_n 64, seed 0
 * (llama.cpp's common defaults). */
mn_sampler_params mn_sampler_default_params(void);

/* Validates `p` (NULL means the defaults) and allocates every buffer the
 * sampler needs for a vocabulary of n_vocab tokens. Returns 0, MN_EINVAL (bad
 * parameter, with a message naming it) or MN_ENOMEM. */
int mn_sampler_create(const mn_sampler_params *p, int32_t n_vocab, mn_sampler **out);

/* NULL is a no-op. */
void mn_sampler_free(mn_sampler *s);

/* Picks the next token from logits[n_vocab]. The logits are not modified (they
 * are copied into the sampler's own buffer); nothing is allocated per call.
 * Returns a token id in [0, n_vocab), or a negative MN_E* code: MN_EINVAL when
 * s/logits is NULL or no logit is samplable (all NaN or -INFINITY). The pick is
 * NOT recorded in the history: call mn_sampler_accept for that. */
int32_t mn_sampler_sample(mn_sampler *s, const float *logits);

/* Records an accepted token (prompt tokens too) for the repetition-penalty
 * history. Ids outside [0, n_vocab) are ignored. */
void mn_sampler_accept(mn_sampler *s, int32_t token);

/* Forgets the history and re-seeds the generator, so the sampler behaves as
 * if freshly created with the same parameters. */
void mn_sampler_reset(mn_sampler *s);

/* -------------------------------------------------------- chat templates */
typedef struct {
    const char *role; /* "system", "user", "assistant" (other roles are passed through) */
    const char *content;
} mn_chat_msg;

/* PLAIN: a base model without a chat template (no <|im_start|> token either):
 * a completion prompt, "{system}\n\n" then "Question: {user}\n" and
 * "Answer: {assistant}\n\n" per turn, and "Answer:" to generate. */
/* GEMMA: Gemma's <start_of_turn>{user|model}\n...<end_of_turn>\n turns (see chat.h). */
typedef enum { MN_CHAT_CHATML = 1, MN_CHAT_LLAMA2 = 2, MN_CHAT_PLAIN = 3, MN_CHAT_GEMMA = 4 } mn_chat_style;

typedef struct {
    mn_chat_style style;
    int fallback;         /* 1 when the template was missing or not recognised */
    char note[192];       /* why the fallback was taken ("" otherwise) */
    char *default_system; /* ChatML: system prompt the template adds when the first message is
                             not "system"; NULL for none. Owned; see mn_chat_template_clear. */
    char bos[64], eos[64]; /* Llama-2: texts of the BOS / EOS tokens */
} mn_chat_template;

/* Recognises a Jinja chat template source (tmpl may be NULL: no template). tok
 * (optional) supplies the BOS/EOS texts for Llama-2 (default "<s>", "</s>").
 * Returns 0 (also for a fallback) or MN_ENOMEM. */
int mn_chat_template_parse(const char *tmpl, size_t len, const mn_tokenizer *tok, mn_chat_template *out);
/* The template of the model file the tokenizer came from. */
int mn_chat_template_from_tokenizer(const mn_tokenizer *tok, mn_chat_template *out);
void mn_chat_template_clear(mn_chat_template *ct);

/* Renders n messages into a malloc'd NUL-terminated string (*out; caller frees;
 * *out_len optional). Returns 0, MN_EINVAL (NULL role/content, or Llama-2 roles
 * that do not alternate), MN_ENOMEM. */
int mn_chat_apply(const mn_chat_template *ct, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out,
                  size_t *out_len);

/* Where a reply ends. A chat model ends its turn with an end-of-generation
 * token; a base model on the plain prompt goes on to ask itself the next
 * question, so there the first line break after the reply's first visible
 * character ends it too. mn_turn_init reads the model's template once;
 * mn_turn_end says, for each sampled token, whether the reply stops before it. */
typedef struct {
    int plain; /* the template is MN_CHAT_PLAIN */
    int shown; /* the reply has shown a visible character */
} mn_turn;
void mn_turn_init(mn_turn *t, const mn_tokenizer *tok);
int mn_turn_end(mn_turn *t, const mn_tokenizer *tok, int32_t id);

/* Convenience: mn_chat_template_from_tokenizer + mn_chat_apply. */
int mn_chat_format(const mn_tokenizer *tok, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out);

/* ------------------------------------------ documents in memory (LLoCO)
 * A document read once into compressed memory (the adapter's compressor),
 * kept with its exact part for recall, saved to and loaded from memory files
 * (`mnemo compress` and `mnemo ask --mem` are these calls), and asked
 * questions. A document borrows its model and adapter: they must outlive it.
 * Calls on one document may run on several threads at once (each ask makes
 * its own context). */
typedef struct mn_doc mn_doc;

/* A compressor adapter (UIO, Activation Beacon or summary) for model m,
 * from its GGUF file (`mnemo adapter init` / `mnemo train` write them). */
typedef struct mn_adapter mn_adapter;
int mn_adapter_load(const mn_model *m, const char *path, mn_adapter **out);
void mn_adapter_free(mn_adapter *a);
/* The adapter's reader: a decoder LoRA that answers from the exact text recall
 * pages back (scripts/train_reader.sh). mn_adapter_load attaches the file
 * named like the adapter with ".reader.gguf" for ".gguf" where one exists;
 * asks with recall on then answer with it. Another file, or NULL for none. */
int mn_adapter_set_reader(mn_adapter *a, const mn_model *m, const char *path);
const char *mn_adapter_reader_path(const mn_adapter *a); /* NULL: none */

/* Reads text[0..len) (tokenised with the model's BOS, as `mnemo compress`
 * reads a file) into memory on n_threads threads (<= 0: all cores). exact:
 * keep the compressed segments' ids and recall index (MN_DOC_EXACT_TOKENS,
 * `--exact tokens`, the default), also their decoder cells in 8 bits, which
 * recall copies back instead of decoding the segments (MN_DOC_EXACT_KV,
 * `--exact kv`: one decoder pass more at reading, about 12 KB a token for
 * SmolLM2; saved as a version-4 memory file), or neither (MN_DOC_EXACT_NONE).
 * progress (optional) is called on this thread. */
enum { MN_DOC_EXACT_NONE = 0, MN_DOC_EXACT_TOKENS = 1, MN_DOC_EXACT_KV = 2 };
int mn_doc_read(const mn_model *m, const mn_adapter *a, const char *text, size_t len, int exact, int n_threads,
                mn_progress_fn progress, void *user, mn_doc **out);
/* A memory file written by mn_doc_save or `mnemo compress` with this model
 * and adapter (anything else: a clear error). */
int mn_doc_load(const mn_model *m, const mn_adapter *a, const char *path, mn_doc **out);
/* Writes the memory file atomically (f16; f32 if asked); title optional. */
int mn_doc_save(const mn_doc *d, const char *path, const char *title, int f32);
void mn_doc_free(mn_doc *d);

typedef struct {
    int64_t tokens;         /* document tokens */
    int32_t memory_slots;   /* compressed cells */
    int32_t raw_cells;      /* tokens kept raw beside them (sinks, recent window) */
    int64_t kv_cells;       /* what a reader holds before recall: slots + raw */
    int32_t exact_tokens;   /* tokens kept exact for recall (0: no recall) */
    int32_t exact_segments; /* the segments recall chooses among */
    int64_t exact_cell_bytes; /* MN_DOC_EXACT_KV: bytes of their 8-bit cells (0: paged from their ids) */
} mn_doc_info;
void mn_doc_get_info(const mn_doc *d, mn_doc_info *out);
/* SHA-256 of what a reader of the document gets (its tokens, raw ids, slots
 * and exact part, as floats), hex in out[65]: two documents with the same
 * digest answer alike. */
int mn_doc_digest(const mn_doc *d, char out[65]);

typedef struct {
    int32_t max_tokens;    /* most answer tokens (default 256) */
    float temperature;     /* 0: greedy (default) */
    uint64_t seed;
    int32_t recall;        /* segments paged back in beside the memory: -1 auto (default), 0 none, or a count */
    int32_t n_threads;     /* <= 0: all cores */
    int32_t local;         /* with segments paged, the newest raw tokens of the document's recent window kept
                            * beside them; the rest of the window is offered to recall (default 128; 0: all) */
    int32_t recall_every;  /* answer tokens between re-selections of the paged segments for the question
                            * and the answer so far (default 0: chosen once, at the question) */
} mn_ask_params;
mn_ask_params mn_ask_default_params(void);

typedef struct {
    int64_t prompt_tokens, completion_tokens;
    int64_t kv_cells;       /* cells at the end: memory, raw, recalled, question and answer */
    int32_t recalled;       /* segments recall paged in, and their cells */
    int32_t recalled_cells;
    int32_t finish;         /* 0 stop (end of turn), 1 length (max_tokens or the context's end) */
    int32_t reader;         /* 1: answered with the adapter's reader (recall on) */
    double seconds_to_first_token, seconds;
    int64_t slots_out;      /* memory slots left out, the oldest, where the memory is longer than the
                             * model's positions leave room for (recall still reads the whole document) */
    int32_t reselections;   /* times recall chose again while answering (recall_every), */
    int32_t repaged;        /* and times the choice changed and was paged in */
} mn_ask_stats;

/* Answers a question from the document's memory through the chat template;
 * pieces go to on_text as they are sampled (optional; non-zero from it stops
 * with MN_ECANCELLED), the whole answer to *answer (optional, malloc'd),
 * numbers to st (optional). A memory longer than the model's positions leave
 * room for keeps its newest slots (st->slots_out says how many it left out);
 * recall still chooses among all of the document's segments. */
int mn_doc_ask(const mn_doc *d, const char *question, const mn_ask_params *p, mn_text_fn on_text, void *user,
               char **answer, mn_ask_stats *st);

/* ------------------------------------------------------- document stores
 * The LLoCO store (`mnemo store`, the server's documents): texts compressed
 * into memories on add, ranked by BM25 and dense retrieval, answered from the
 * best documents' memories with exact recall. Results come back as JSON
 * (malloc'd; mn_free), the shapes the server's API answers with. One handle
 * may be used from several threads: its calls take turns. */
typedef struct mn_docstore mn_docstore;

/* Opens (creating if missing) the store db names: a SQLite file (memory
 * files in "<db>.mem/") or a PostgreSQL URL or conninfo. m stays the
 * caller's and must outlive the store; the store is bound to it (another
 * model later is refused). adapter: the compressor, recorded by the first
 * add; NULL: the one the store records, else fallback (may be NULL: then add
 * and ask fail naming what is missing). */
int mn_docstore_open(const char *db, const mn_model *m, const char *adapter, const char *fallback, int n_threads,
                     mn_docstore **out);
void mn_docstore_close(mn_docstore *ds);
/* Compresses text[0..len) into the store (a text already stored costs its
 * hash: "existed": true). title, source optional; group NULL: "default".
 * *json: the document as the server's upload answers it. */
int mn_docstore_add(mn_docstore *ds, const char *text, size_t len, const char *title, const char *source,
                    const char *group, char **json);
/* How later adds keep each document's exact part: MN_DOC_EXACT_TOKENS (the
 * default: recall decodes a segment's ids again) or MN_DOC_EXACT_KV (also its
 * 8-bit decoder cells, copied back: `store add --exact kv`). A text stored
 * before keeps the memory it has. */
int mn_docstore_set_exact(mn_docstore *ds, int exact);
/* Every document, by id: a JSON array of the server's document objects. */
int mn_docstore_list(mn_docstore *ds, char **json);
/* One document (MN_ENOTFOUND for an unknown id). */
int mn_docstore_get(mn_docstore *ds, int64_t id, char **json);
/* Removes a document and its memory files (MN_ENOTFOUND for an unknown id). */
int mn_docstore_remove(mn_docstore *ds, int64_t id);
/* The k (1..64) documents that best match question, best first: a JSON array
 * of {"id", "title", "group", "score", "bm25_rank", "bm25", "dense_rank", "dense"}
 * (ranks 1-based, 0 where a list did not rank the document). */
int mn_docstore_query(mn_docstore *ds, const char *question, int k, char **json);
/* Answers question from the memories of the documents ids names (n_ids > 0),
 * else of the k best retrieved (one group's, as LLoCO answers); the group's
 * decoder adapter (mnemo finetune) answers where it has one. p->recall
 * pages each memory's best segments back in. on_text, answer and st as for
 * mn_doc_ask; *sources (optional): a JSON array of the documents used. */
int mn_docstore_ask(mn_docstore *ds, const char *question, const int64_t *ids, int n_ids, int k,
                    const mn_ask_params *p, mn_text_fn on_text, void *user, char **answer, char **sources,
                    mn_ask_stats *st);

/* ---------------------------------------- requests as the server takes them
 * A chat (`/v1/chat/completions`) or completion (`/v1/completions`) request
 * body answered in process on context c: the server's parser, generation and
 * response JSON, without HTTP. model_id names the model in the response.
 * Without "stream": *response gets the response body (malloc'd; mn_free),
 * and on_chunk (optional) is called with NULL after each generated token, a
 * chance to stop. With "stream": true, each chunk's JSON goes to on_chunk and
 * *response gets NULL. Non-zero from on_chunk stops: MN_ECANCELLED. A request naming stored documents is MN_EINVAL here
 * (they live in a store: use the server). A bad request is MN_EINVAL with the
 * message a 400 carries. */
typedef int (*mn_chunk_fn)(void *user, const char *json);
int mn_request_chat(mn_context *c, const char *model_id, const char *body, size_t len, mn_chunk_fn on_chunk,
                    void *user, char **response);
int mn_request_completion(mn_context *c, const char *model_id, const char *body, size_t len, mn_chunk_fn on_chunk,
                          void *user, char **response);

#ifdef __cplusplus
}
#endif
#endif
