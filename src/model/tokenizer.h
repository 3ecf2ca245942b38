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

/* The query/encode/decode API is public (mnemo.h, "tokenizer" section); this
 * header adds construction from GGUF metadata, used by the model loader. */

/* Builds a tokenizer from the GGUF metadata (tokenizer.ggml.*). The GGUF may be
 * freed afterwards: everything needed is copied. Errors: MN_EFORMAT for missing
 * or malformed vocabulary metadata, MN_EUNSUPPORTED for an unknown tokenizer
 * model or pre-tokenizer name, MN_ENOMEM. */
int mn_tokenizer_from_gguf(const mn_gguf *g, mn_tokenizer **out);
void mn_tokenizer_free(mn_tokenizer *t);

#endif
