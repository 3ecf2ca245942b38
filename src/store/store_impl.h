/* store_impl.h - what the store's backends share (store_sqlite.c,
 * store_pg.c): argument checks, hex hashes, text copies, hit ranking. Not
 * part of the store's interface. */
#ifndef MN_STORE_IMPL_H
#define MN_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Copies t, truncating at a UTF-8 character boundary to fit cap. */
void mn_store_copy_text(const char *t, char *dst, size_t cap);
/* 64-bit unsigned hashes as 16 hex digits, so they compare as text and never
 * pass through a database's signed integers. */
void mn_store_hex64(uint64_t v, char out[17]);
uint64_t mn_store_parse_hex64(const char *s);
/* 1..63 letters, digits, '.', '_' or '-'. */
int mn_store_valid_group(const char *g);
/* MN_EINVAL with a message for a document no backend may store. */
int mn_store_check_new_doc(const mn_store_new_doc *d);
/* Keeps hits sorted by score, best first, at most k, one per document. */
void mn_store_hit_insert(mn_store_hit *hits, int *n, int k, int64_t doc, double score);
/* Bytes that make up a search word: ASCII letters and digits, and every
 * byte of a multi-byte UTF-8 character. */
static inline int mn_store_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* A full-text query from free text: its first 64 words (runs of word bytes)
 * each between two `quote` characters, so no other character can form query
 * syntax, joined by sep (" OR " for FTS5, " | " for tsquery): a question
 * matches text sharing any word. malloc'd; "" when q has no word. */
char *mn_store_query_terms(const char *q, const char *sep, char quote);

#endif
