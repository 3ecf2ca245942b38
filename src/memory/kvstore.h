/* kvstore.h - the exact store's cells (`--exact kv`): each stored segment's
 * decoder KV kept in 8 bits, so that recall pages a segment back by copying its
 * cells instead of decoding its tokens again.
 *
 * An entry is n cells of every layer: keys without RoPE (a paged segment takes
 * new positions, so its keys are rotated when they go back into a cache) and
 * values, as q8_0 rows (blocks of 32 values with one f16 scale: 34 bytes per 32
 * values, the cache's own 8-bit format). Layout of an entry: the keys of layer
 * 0..L-1, each (n, RB), then the values the same way; RB = KD / 32 * 34.
 *
 * Entries stay in RAM while the RAM part holds at most `ram_budget` bytes; the
 * ones after go to a spill file, written once and read through a memory map of
 * their pages at page-in. The spill file is created in TMPDIR (or /tmp) and
 * unlinked as soon as it is open: it disappears when the process exits or
 * crashes, and no other process can find it, let alone take it for a valid
 * store. Shapes: L layers, KD kv dim (n_head_kv * head_dim), n cells.
 */
#ifndef MN_KVSTORE_H
#define MN_KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

typedef struct mn_kvstore mn_kvstore;

/* An empty store for the model's cells (KD must be a multiple of 32); at most
 * ram_budget bytes held in RAM (0: every entry spills). */
int mn_kvstore_create(const mn_model *m, size_t ram_budget, mn_kvstore **out);
void mn_kvstore_free(mn_kvstore *s);
/* Forgets every entry (the spill file is emptied, RAM kept for reuse). */
int mn_kvstore_clear(mn_kvstore *s);
int32_t mn_kvstore_n(const mn_kvstore *s);

/* Appends entry mn_kvstore_n(s): n >= 0 cells, k and v (L, n, KD) floats, k
 * without RoPE (NULL for n 0). Copies them (quantised). */
int mn_kvstore_put(mn_kvstore *s, int32_t n, const float *k, const float *v);
/* Entry i's cells into k and v (L, n, KD), dequantised; *n its cells, which
 * must be at most cap (the room of k and v, in cells). */
int mn_kvstore_get(mn_kvstore *s, int32_t i, int32_t cap, float *k, float *v, int32_t *n);

/* The entry layout for n cells (L layers, KD values a row): k, v (L, n, KD)
 * floats into dst (mn_kvstore_cell_bytes * n bytes), and back. */
void mn_kvstore_encode(int32_t L, int32_t KD, int32_t n, const float *k, const float *v, uint8_t *dst);
void mn_kvstore_decode(int32_t L, int32_t KD, int32_t n, const uint8_t *src, float *k, float *v);
/* Cells c0..c0+n of a context into k, v (L, n, KD), the keys' RoPE undone
 * (rotated back from each cell's position): what an entry holds. */
int mn_kvstore_read_cells(const mn_context *c, int32_t c0, int32_t n, float *k, float *v);

/* Bytes held in RAM and in the spill file. */
void mn_kvstore_bytes(const mn_kvstore *s, size_t *ram, size_t *spill);
/* Bytes one cell (one token, every layer, key and value) takes. */
size_t mn_kvstore_cell_bytes(const mn_model *m);

#endif
