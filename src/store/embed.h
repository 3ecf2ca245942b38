/* embed.h - dense retrieval vectors for the store: the mean of the base
 * model's final hidden states (after the output norm) over a text's tokens,
 * L2-normalised.
 *
 * Why this choice: it needs no second model (the decoder that answers also
 * embeds, so the store stays tied to one GGUF file), it is deterministic, and
 * mean pooling over all tokens (rather than the last token's state) keeps the
 * vector about the whole chunk instead of what the model expects next. It is
 * a weak embedder compared with a trained retrieval model, which is why
 * retrieval fuses it with BM25 (retrieve.h) instead of using it alone.
 */
#ifndef MN_EMBED_H
#define MN_EMBED_H

#include <stdint.h>

#include "mnemo.h"

/* Chunk size (tokens) the store embeds and indexes documents by. */
#define MN_EMBED_CHUNK 256

/* out (n_embd floats) = normalised mean of the final hidden states of
 * ids[0..n) read from an empty cache. Uses (and clears) c's cache, so c must
 * have at least n cells. */
int mn_embed_tokens(mn_context *c, const int32_t *ids, int32_t n, float *out);

#endif
