/* data.h - training text: files tokenised once into a cache, random training
 * windows, and a fixed held-out slice for validation.
 *
 * A dataset is every regular file matching a glob, sorted by path; each file
 * is one document. Its text is cleaned (mn_text_clean: Project Gutenberg
 * header/footer stripped, CRLF -> LF) and tokenised with the model's tokenizer
 * without BOS/EOS; documents are never joined, so no window crosses one.
 *
 * Cache: cache_dir/tokens-<key>.bin, key = hash of the model (mn_model_hash),
 * the cleaning version and every file's path, size and mtime, so editing,
 * adding or removing a file, or switching model, makes a new cache. Layout
 * (little-endian): "MNTOKC01", u64 key, u32 n_docs, u32 n_vocab, u64 n_tokens,
 * u64 length[n_docs], i32 tokens[n_tokens], u64 mn_hash64 of all the bytes
 * before it. A cache whose size, key, checksum or token ids are off is rebuilt,
 * never trusted; it is written atomically (temp file + rename).
 *
 * Split: the last floor(val_frac * n) tokens of each document of n tokens are
 * held out; training windows come only from the first part, validation
 * windows only from the held-out part.
 */
#ifndef MN_TRAIN_DATA_H
#define MN_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "train/rng.h"

typedef struct mn_dataset mn_dataset;

/* Opens (building or reusing the cache) the dataset of files matching glob
 * for model m. val_frac in [0, 1). cache_dir is created (with parents) if
 * missing. Errors: MN_ENOTFOUND (no regular file matches), MN_EIO (a file or
 * the cache cannot be read/written, naming the path), MN_EINVAL, MN_ENOMEM. */
int mn_dataset_open(const mn_model *m, const char *glob, const char *cache_dir, double val_frac, mn_dataset **out);
void mn_dataset_free(mn_dataset *d);

int mn_dataset_n_docs(const mn_dataset *d);
int64_t mn_dataset_n_train_tokens(const mn_dataset *d);
int64_t mn_dataset_n_val_tokens(const mn_dataset *d);

/* A uniformly random window of n tokens (written to out[0..n)) inside one
 * document's training part: every such window of every document is equally
 * likely, so documents are picked in proportion to the windows they hold.
 * MN_ERANGE when no document has n training tokens, MN_EINVAL for n < 1. */
int mn_dataset_sample(const mn_dataset *d, mn_rng *rng, int32_t n, int32_t *out);

/* Validation: each document's held-out part cut into floor(len / n)
 * consecutive, non-overlapping windows of n tokens, documents in order. */
int64_t mn_dataset_n_val_windows(const mn_dataset *d, int32_t n);
/* The i-th validation window (0 <= i < n_val_windows) into out[0..n). */
int mn_dataset_val_window(const mn_dataset *d, int64_t i, int32_t n, int32_t *out);

/* --- introspection (tools, tests, logs) --- */
/* Document i's tokens: *n in all, the first *n_train for training. NULL out of range. */
const int32_t *mn_dataset_doc(const mn_dataset *d, int i, int64_t *n, int64_t *n_train);
/* Path of document i (the glob's match); NULL out of range. */
const char *mn_dataset_doc_path(const mn_dataset *d, int i);
/* Path of the cache file, and whether this open read it (1) or built it (0). */
const char *mn_dataset_cache_path(const mn_dataset *d);
int mn_dataset_from_cache(const mn_dataset *d);

/* The cleaning applied to every document, in place: keeps the text between a
 * line starting "***" + optional spaces + "START OF" (case-insensitive,
 * exclusive) and the next such line with "END OF" (either may be absent: the
 * text from the start / to the end is kept), then turns CRLF into LF.
 * Returns the new length. Evaluation uses the same function so its text
 * matches what training saw. */
size_t mn_text_clean(char *text, size_t len);

#endif
