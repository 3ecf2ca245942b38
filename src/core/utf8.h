/* utf8.h - UTF-8 well-formedness, shared by the server's streamed output
 * (which holds back or replaces what is not yet text) and the store's ingest
 * (which refuses what is not text). */
#ifndef MN_UTF8_H
#define MN_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the UTF-8 character that starts with byte c (0: not a lead byte). */
int mn_utf8_len(unsigned char c);
/* Whether s[0..n) (n = mn_utf8_len(s[0])) is a well-formed character: no
 * overlong forms, no surrogates, nothing past U+10FFFF. */
int mn_utf8_ok(const unsigned char *s, int n);
/* Offset of the first byte of s[0..n) that makes it not UTF-8 text (a NUL,
 * or a byte that starts no well-formed character), or -1. */
int64_t mn_utf8_invalid_at(const char *s, size_t n);

#endif
