/* tokenizer.h - text <-> token ids for Llama-family GGUF vocabularies.
 *
 * Two vocabulary kinds, chosen by `tokenizer.ggml.model`:
 *   "gpt2"  byte-level BPE: merges ranked by their order in tokenizer.ggml.merges,
 *           GPT-2 byte<->unicode mapping, a pre-tokenizer picked by
 *           tokenizer.ggml.pre ("smollm", "llama-bpe"/"llama3", "gpt-2", "default", ...)
 *   "llama" SentencePiece BPE: score-driven merging, ' ' -> U+2581, optional space
 *           prefix, <0xNN> byte fallback.
 * Token ids are identical to llama.cpp's llama_tokenize for the same file, text
 * and flags (tests/test_tokenizer.c checks this against fixtures written by
 * llama.cpp itself).
 *
 * A tokenizer is immutable after creation: every call below is thread-safe on a
 * shared mn_tokenizer. Per-call scratch memory is proportional to the input.
 *
 * Token "text" is the string stored in the GGUF vocabulary (e.g. "Ġthe",
 * "▁the", "<|im_start|>"); a token "piece" is the bytes it stands for in
 * decoded text (" the"); for control tokens the piece is their text.
 */
#ifndef MN_TOKENIZER_H
#define MN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "mnemo.h"

typedef struct mn_tokenizer mn_tokenizer;

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

/* Builds a tokenizer from the GGUF metadata (tokenizer.ggml.*). The GGUF may be
 * freed afterwards: everything needed is copied. Errors: MN_EFORMAT for missing
 * or malformed vocabulary metadata, MN_EUNSUPPORTED for an unknown tokenizer
 * model or pre-tokenizer name, MN_ENOMEM. */
int mn_tokenizer_from_gguf(const mn_gguf *g, mn_tokenizer **out);
void mn_tokenizer_free(mn_tokenizer *t);

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

enum {
    /* render CONTROL/UNKNOWN tokens (BOS, <|im_start|>, ...) as their text */
    MN_DETOK_SPECIAL = 1,
    /* SPM: keep the space mn_tokenize prefixed (at the start and after special tokens) */
    MN_DETOK_KEEP_PREFIX_SPACE = 2,
};
/* Concatenates the pieces of ids[0..n) into out (NUL-terminated). The result is
 * the exact inverse of mn_tokenize: for valid UTF-8 `s`,
 * detokenize(tokenize(s, add_special=0, parse_special=p), p ? MN_DETOK_SPECIAL : 0) == s,
 * except that SPM reads a literal U+2581 in `s` as a space (as SentencePiece does).
 * Unlike llama_detokenize, no "clean up" of spaces is done.
 * *n_out gets the length without the NUL. Returns 0, MN_ERANGE when cap < length+1
 * (*n_out = length needed, without the NUL), or MN_EINVAL for an id out of range. */
int mn_detokenize(const mn_tokenizer *t, const int32_t *ids, int64_t n, int flags, char *out, size_t cap,
                  size_t *n_out);

#endif
