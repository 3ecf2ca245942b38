/* keys.c - scoped API keys: the key file's parser and the key lookup. */
#include "server/keys.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "store/sha256.h"
#include "store/store.h"

#define MAX_KEYS 10000
#define MAX_KEY_LEN 256
#define MAX_FILE (1 << 20)

typedef struct {
    char owner[MN_STORE_OWNER_CAP];
    uint8_t digest[32]; /* keys are kept only as digests */
} key_entry;

struct mn_api_keys {
    key_entry *e;
    int n;
};

void mn_api_keys_free(mn_api_keys *k) {
    if (!k) return;
    free(k->e);
    free(k);
}

int mn_api_keys_count(const mn_api_keys *k) { return k ? k->n : 0; }

static void digest(const char *s, size_t n, uint8_t out[32]) {
    mn_sha256_ctx c;
    mn_sha256_init(&c);
    mn_sha256_update(&c, s, n);
    mn_sha256_final(&c, out);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

int mn_api_keys_parse(const char *text, size_t len, mn_api_keys **out) {
    *out = NULL;
    mn_api_keys *k = calloc(1, sizeof *k);
    if (!k) return mn_error(MN_ENOMEM, "out of memory");
    int cap = 0, rc = 0;
    size_t pos = 0;
    for (int line = 1; pos < len && !rc; line++) {
        const char *p = text + pos;
        const char *nl = memchr(p, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - p) : len - pos;
        pos += n + (nl != NULL);
        size_t i = 0;
        while (i < n && is_space(p[i])) i++;
        if (i == n || p[i] == '#') continue;
        size_t o0 = i;
        while (i < n && !is_space(p[i])) i++;
        size_t o1 = i;
        while (i < n && is_space(p[i])) i++;
        size_t k0 = i;
        while (i < n && !is_space(p[i])) i++;
        size_t k1 = i;
        while (i < n && is_space(p[i])) i++;
        if (k0 == k1 || i != n) {
            rc = mn_error(MN_EFORMAT, "API key file, line %d: expected 'OWNER KEY'", line);
            break;
        }
        char owner[MN_STORE_OWNER_CAP];
        const size_t ol = o1 - o0;
        if (ol >= sizeof owner) {
            rc = mn_error(MN_EFORMAT, "API key file, line %d: the owner name is over %d characters", line,
                          MN_STORE_OWNER_CAP - 1);
            break;
        }
        memcpy(owner, p + o0, ol);
        owner[ol] = 0;
        if (!mn_store_valid_owner(owner)) {
            rc = mn_error(MN_EFORMAT, "API key file, line %d: an owner name is 1-64 of A-Z a-z 0-9 . _ -", line);
            break;
        }
        if (k1 - k0 > MAX_KEY_LEN) {
            rc = mn_error(MN_EFORMAT, "API key file, line %d: the key is over %d characters", line, MAX_KEY_LEN);
            break;
        }
        for (size_t j = k0; j < k1 && !rc; j++)
            if ((unsigned char)p[j] < 0x21 || (unsigned char)p[j] > 0x7e)
                rc = mn_error(MN_EFORMAT, "API key file, line %d: a key is printable ASCII without spaces", line);
        if (rc) break;
        if (k->n == MAX_KEYS) {
            rc = mn_error(MN_EFORMAT, "API key file: over %d keys", MAX_KEYS);
            break;
        }
        uint8_t d[32];
        digest(p + k0, k1 - k0, d);
        for (int j = 0; j < k->n && !rc; j++)
            if (!memcmp(k->e[j].digest, d, 32))
                rc = mn_error(MN_EFORMAT, "API key file, line %d: the same key as an earlier line", line);
        if (rc) break;
        if (k->n == cap) {
            cap = cap ? 2 * cap : 8;
            key_entry *ne = realloc(k->e, sizeof *ne * (size_t)cap);
            if (!ne) {
                rc = mn_error(MN_ENOMEM, "out of memory");
                break;
            }
            k->e = ne;
        }
        memcpy(k->e[k->n].owner, owner, ol + 1);
        memcpy(k->e[k->n].digest, d, 32);
        k->n++;
    }
    if (!rc && !k->n) rc = mn_error(MN_EINVAL, "API key file: no keys in it");
    if (rc) {
        mn_api_keys_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

int mn_api_keys_load(const char *path, mn_api_keys **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mn_error(MN_EIO, "API key file %s: cannot open", path);
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || st.st_size > MAX_FILE) {
        fclose(f);
        return mn_error(MN_EINVAL, "API key file %s: not a regular file of at most 1 MiB", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory");
    if (got != (size_t)st.st_size) {
        free(buf);
        return mn_error(MN_EIO, "API key file %s: read error", path);
    }
    int rc = mn_api_keys_parse(buf, got, out);
    /* the file's secrets do not linger in freed memory */
    memset(buf, 0, got);
    free(buf);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", mn_last_error()); /* mn_error writes the buffer it would read */
        mn_error(rc, "%s (%s)", msg, path);
    }
    return rc;
}

const char *mn_api_keys_owner(const mn_api_keys *k, const char *given, size_t len) {
    if (!k || !given) return NULL;
    uint8_t d[32];
    digest(given, len, d);
    int hit = -1;
    for (int i = 0; i < k->n; i++) {
        volatile uint8_t diff = 0;
        for (int j = 0; j < 32; j++) diff |= k->e[i].digest[j] ^ d[j];
        /* no early exit: every key costs the same */
        hit = diff == 0 ? i : hit;
    }
    return hit >= 0 ? k->e[hit].owner : NULL;
}
