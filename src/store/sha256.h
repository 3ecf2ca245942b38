/* sha256.h - SHA-256 (FIPS 180-4), for document identity in the store and
 * for comparing API keys without leaking their contents through timing. */
#ifndef MN_SHA256_H
#define MN_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;   /* total bytes hashed so far */
    uint8_t buf[64];    /* pending partial block */
    uint32_t n_buf;
} mn_sha256_ctx;

void mn_sha256_init(mn_sha256_ctx *c);
void mn_sha256_update(mn_sha256_ctx *c, const void *data, size_t n);
void mn_sha256_final(mn_sha256_ctx *c, uint8_t out[32]);
/* One-shot digest as 64 lowercase hex digits plus NUL. */
void mn_sha256_hex(const void *data, size_t n, char out[65]);
/* 1 when a[0..na) == b[0..nb); the time taken depends only on na and nb
 * through the hashing, never on where the inputs first differ. */
int mn_secret_equal(const void *a, size_t na, const void *b, size_t nb);

#endif
