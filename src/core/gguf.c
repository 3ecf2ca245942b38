/* gguf.c - bounds-checked GGUF v2/v3 reader and a small v3 writer (see gguf.h).
 *
 * Layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv x { string key, u32 value_type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment (default 32), then the tensor data section.
 * A string is { u64 len, len bytes } (no NUL). An array value is
 * { u32 elem_type, u64 count, count elements }; elements may themselves be arrays.
 *
 * Reader rule: every count and length is checked against the bytes that remain
 * before it is used to allocate or to advance, so a hostile file fails with
 * MN_EFORMAT and a message naming the entry and byte offset.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DEPTH 8          /* array-of-array nesting levels accepted */
#define GGUF_MAX_NAME 65535u      /* longest key / tensor name accepted by the reader */
#define GGUF_WRITER_MAX_TNAME 63u /* ggml's limit (GGML_MAX_NAME - 1) for files we write */
#define GGUF_MIN_KV_BYTES 13u     /* u64 key len + u32 type + 1-byte value */
#define GGUF_MIN_TINFO_BYTES 32u  /* u64 name len + u32 n_dims + u64 ne + u32 type + u64 off */
#define GGUF_MIN_ARR_BYTES 12u    /* nested array element: u32 type + u64 count */
#define GGUF_MAX_ENTRIES 0x7fffffffu

static const char *const k_vtype_names[MN_GGUF_NTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Fixed byte size of a scalar value type; 0 for string/array/unknown. */
static size_t vtype_size(uint32_t t) {
    switch (t) {
    case MN_GGUF_UINT8: case MN_GGUF_INT8: case MN_GGUF_BOOL: return 1;
    case MN_GGUF_UINT16: case MN_GGUF_INT16: return 2;
    case MN_GGUF_UINT32: case MN_GGUF_INT32: case MN_GGUF_FLOAT32: return 4;
    case MN_GGUF_UINT64: case MN_GGUF_INT64: case MN_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *vtype_name(uint32_t t) {
    return t < MN_GGUF_NTYPES ? k_vtype_names[t] : "unknown";
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* FNV-1a over a byte string. */
static uint64_t hash_bytes(const void *s, size_t n) {
    const uint8_t *p = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Capacity (power of two, >= 2n, >= 8) for an open-addressing table of n entries. */
static size_t table_cap(size_t n) {
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    mn_gguf_str key;
    mn_gguf_vtype type;
    const uint8_t *val;      /* scalar: the value; string: the length prefix; array: first element */
    mn_gguf_vtype arr_type;  /* arrays only */
    uint64_t arr_n;          /* arrays only */
    uint64_t *str_offs;      /* string arrays: file offset of each element's length prefix */
} gguf_kv;

struct mn_gguf {
    const uint8_t *base;
    size_t size;
    int mapped; /* base came from mmap and is unmapped by mn_gguf_free */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;

    int64_t n_kv;
    gguf_kv *kvs;
    size_t kv_alloc;    /* entries allocated in kvs (may exceed n_kv after a parse error) */
    uint32_t *kv_table; /* index+1, 0 = empty */
    size_t kv_cap;

    int64_t n_tensors;
    mn_gguf_tensor *tensors;
    char *names; /* all tensor names, NUL-separated */
    uint32_t *t_table;
    size_t t_cap;
};

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
} cursor;

static size_t cur_left(const cursor *c) { return c->size - c->pos; }

/* Checks that n bytes remain; `what` names the item for the message. */
static int cur_need(const cursor *c, uint64_t n, const char *what) {
    if (n > cur_left(c))
        return mn_error(MN_EFORMAT,
                        "file truncated: %s at byte %zu needs %llu bytes but only %zu remain "
                        "(file size %zu)",
                        what, c->pos, (unsigned long long)n, cur_left(c), c->size);
    return 0;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = cur_need(c, 4, what);
    if (rc) return rc;
    *v = rd32(c->p + c->pos);
    c->pos += 4;
    return 0;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = cur_need(c, 8, what);
    if (rc) return rc;
    *v = rd64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

/* Reads a length-prefixed string; s->ptr points into the buffer. */
static int cur_str(cursor *c, mn_gguf_str *s, const char *what) {
    uint64_t len;
    size_t at = c->pos;
    int rc = cur_u64(c, &len, what);
    if (rc) return rc;
    if (len > cur_left(c))
        return mn_error(MN_EFORMAT,
                        "%s at byte %zu: string length %llu exceeds the %zu bytes left in the file "
                        "(file size %zu)",
                        what, at, (unsigned long long)len, cur_left(c), c->size);
    s->ptr = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return 0;
}

/* Keys and tensor names: non-empty, bounded, no NUL (they are looked up as C strings). */
static int check_name(mn_gguf_str s, const char *what, long long idx) {
    if (s.len == 0) return mn_error(MN_EFORMAT, "%s %lld has an empty name", what, idx);
    if (s.len > GGUF_MAX_NAME)
        return mn_error(MN_EFORMAT, "%s %lld: name is %llu bytes long (limit %u)", what, idx,
                        (unsigned long long)s.len, GGUF_MAX_NAME);
    if (memchr(s.ptr, 0, (size_t)s.len))
        return mn_error(MN_EFORMAT, "%s %lld ('%.*s...'): name contains a NUL byte", what, idx,
                        (int)strnlen(s.ptr, (size_t)s.len), s.ptr);
    return 0;
}

/* Validates (and skips) the body of one array: element type and count already read.
 * `offs`, when non-NULL, receives the offset of each string element. */
static int skip_array(cursor *c, const char *key, uint32_t et, uint64_t n, int depth,
                      uint64_t *offs);

/* Validates and skips one value of type t (its type field already consumed).
 * Messages are only formatted on failure: this runs once per array element. */
static int skip_value(cursor *c, const char *key, uint32_t t, int depth) {
    size_t sz = vtype_size(t);
    char what[160];
    if (sz) {
        if (sz > cur_left(c)) {
            snprintf(what, sizeof what, "value of key '%s' (%s)", key, vtype_name(t));
            return cur_need(c, sz, what);
        }
        c->pos += sz;
        return 0;
    }
    if (t == MN_GGUF_STRING) {
        if (cur_left(c) < 8 || rd64(c->p + c->pos) > cur_left(c) - 8) {
            mn_gguf_str s;
            snprintf(what, sizeof what, "string in key '%s'", key);
            return cur_str(c, &s, what);
        }
        c->pos += 8 + (size_t)rd64(c->p + c->pos);
        return 0;
    }
    if (t == MN_GGUF_ARRAY) {
        if (depth >= GGUF_MAX_DEPTH)
            return mn_error(MN_EFORMAT,
                            "key '%s': arrays nested more than %d levels deep at byte %zu", key,
                            GGUF_MAX_DEPTH, c->pos);
        if (cur_left(c) < 12) {
            snprintf(what, sizeof what, "array header in key '%s'", key);
            return cur_need(c, 12, what);
        }
        uint32_t et = rd32(c->p + c->pos);
        uint64_t n = rd64(c->p + c->pos + 4);
        c->pos += 12;
        return skip_array(c, key, et, n, depth + 1, NULL);
    }
    return mn_error(MN_EFORMAT, "key '%s': unknown value type %u at byte %zu (valid: 0..%d)", key,
                    t, c->pos - 4, MN_GGUF_NTYPES - 1);
}

static int skip_array(cursor *c, const char *key, uint32_t et, uint64_t n, int depth,
                      uint64_t *offs) {
    size_t at = c->pos;
    if (et >= MN_GGUF_NTYPES)
        return mn_error(MN_EFORMAT, "key '%s': array at byte %zu has unknown element type %u", key,
                        at - 12, et);
    size_t esz = vtype_size(et);
    size_t min = esz ? esz : et == MN_GGUF_STRING ? 8 : GGUF_MIN_ARR_BYTES;
    if (n > cur_left(c) / min)
        return mn_error(MN_EFORMAT,
                        "key '%s': array at byte %zu declares %llu %s elements, more than the %zu "
                        "remaining bytes can hold (file size %zu)",
                        key, at, (unsigned long long)n, vtype_name(et), cur_left(c), c->size);
    if (esz) {
        c->pos += (size_t)(n * esz);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (offs) offs[i] = c->pos;
        /* a nested element is itself an array: its own type + count, then body */
        int rc = skip_value(c, key, et, depth);
        if (rc) return rc;
    }
    return 0;
}

/* Lookup in an index table keyed by strings; get_name returns entry i's name. */
typedef mn_gguf_str (*name_fn)(const mn_gguf *g, size_t i);

static mn_gguf_str kv_name(const mn_gguf *g, size_t i) { return g->kvs[i].key; }
static mn_gguf_str t_name(const mn_gguf *g, size_t i) {
    mn_gguf_str s = {g->tensors[i].name, strlen(g->tensors[i].name)};
    return s;
}

/* Returns the index of name in table, or -1. */
static int64_t table_find(const mn_gguf *g, const uint32_t *table, size_t cap, name_fn fn,
                          const char *name, size_t len) {
    if (!table) return -1;
    size_t mask = cap - 1;
    for (size_t h = (size_t)hash_bytes(name, len) & mask;; h = (h + 1) & mask) {
        uint32_t v = table[h];
        if (!v) return -1;
        mn_gguf_str s = fn(g, v - 1);
        if (s.len == len && memcmp(s.ptr, name, len) == 0) return (int64_t)(v - 1);
    }
}

/* Inserts entry idx; returns the index of an existing entry with the same name, or -1. */
static int64_t table_insert(const mn_gguf *g, uint32_t *table, size_t cap, name_fn fn, size_t idx) {
    mn_gguf_str s = fn(g, idx);
    size_t mask = cap - 1;
    for (size_t h = (size_t)hash_bytes(s.ptr, (size_t)s.len) & mask;; h = (h + 1) & mask) {
        uint32_t v = table[h];
        if (!v) {
            table[h] = (uint32_t)idx + 1;
            return -1;
        }
        mn_gguf_str o = fn(g, v - 1);
        if (o.len == s.len && memcmp(o.ptr, s.ptr, (size_t)s.len) == 0) return (int64_t)(v - 1);
    }
}

static int parse_header(mn_gguf *g, cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    const uint8_t *p = c->p;
    if (c->size < 4)
        return mn_error(MN_EFORMAT, "file is only %zu bytes; too small to hold the GGUF magic",
                        c->size);
    if (memcmp(p, "GGUF", 4) != 0) {
        char shown[20];
        size_t k = 0;
        for (int i = 0; i < 4; i++) {
            if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '\'') {
                shown[k++] = (char)p[i];
            } else {
                snprintf(shown + k, sizeof shown - k, "\\x%02x", p[i]);
                k += 4;
            }
        }
        shown[k] = 0;
        if (memcmp(p, "FUGG", 4) == 0)
            return mn_error(MN_EFORMAT,
                            "magic is 'FUGG' (byte-swapped 'GGUF'): big-endian GGUF files are not "
                            "supported; convert the model with little-endian byte order");
        return mn_error(MN_EFORMAT,
                        "not a GGUF file: magic is '%s' (%02x %02x %02x %02x), expected 'GGUF'",
                        shown, p[0], p[1], p[2], p[3]);
    }
    c->pos = 4;
    uint32_t v;
    int rc = cur_u32(c, &v, "version");
    if (rc) return rc;
    uint32_t sw = __builtin_bswap32(v);
    if (v == 1)
        return mn_error(MN_EUNSUPPORTED,
                        "GGUF version 1 is not supported (it used 32-bit counts); supported "
                        "versions are 2 and 3 - re-convert the model with a current converter");
    if (v != 2 && v != 3) {
        if (sw >= 1 && sw <= 3)
            return mn_error(MN_EUNSUPPORTED,
                            "version field is 0x%08x, i.e. a big-endian GGUF v%u file; only "
                            "little-endian files are supported",
                            v, sw);
        return mn_error(MN_EUNSUPPORTED, "unsupported GGUF version %u; supported versions are 2 and 3",
                        v);
    }
    g->version = v;
    if ((rc = cur_u64(c, n_tensors, "tensor count")) || (rc = cur_u64(c, n_kv, "metadata count")))
        return rc;
    size_t left = cur_left(c);
    if (*n_kv > left / GGUF_MIN_KV_BYTES || *n_kv > GGUF_MAX_ENTRIES)
        return mn_error(MN_EFORMAT,
                        "header claims %llu metadata entries, but the %zu bytes after the header "
                        "can hold at most %zu (file size %zu)",
                        (unsigned long long)*n_kv, left, left / GGUF_MIN_KV_BYTES, c->size);
    if (*n_tensors > left / GGUF_MIN_TINFO_BYTES || *n_tensors > GGUF_MAX_ENTRIES ||
        *n_kv * GGUF_MIN_KV_BYTES + *n_tensors * GGUF_MIN_TINFO_BYTES > left)
        return mn_error(MN_EFORMAT,
                        "header claims %llu tensors and %llu metadata entries, but only %zu bytes "
                        "follow the header (file size %zu)",
                        (unsigned long long)*n_tensors, (unsigned long long)*n_kv, left, c->size);
    return 0;
}

static int parse_kvs(mn_gguf *g, cursor *c, uint64_t n_kv) {
    g->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kvs);
    g->kv_alloc = g->kvs ? (size_t)n_kv : 0;
    g->kv_cap = table_cap((size_t)n_kv);
    g->kv_table = calloc(g->kv_cap, sizeof *g->kv_table);
    if (!g->kvs || !g->kv_table)
        return mn_error(MN_ENOMEM, "out of memory indexing %llu metadata entries",
                        (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        char what[160], key[96];
        int rc;
        snprintf(what, sizeof what, "key of metadata entry %llu", (unsigned long long)i);
        if ((rc = cur_str(c, &kv->key, what))) return rc;
        if ((rc = check_name(kv->key, "metadata entry", (long long)i))) return rc;
        snprintf(key, sizeof key, "%.*s%s", kv->key.len > 80 ? 80 : (int)kv->key.len, kv->key.ptr,
                 kv->key.len > 80 ? "..." : "");
        snprintf(what, sizeof what, "type of key '%s'", key);
        uint32_t t;
        if ((rc = cur_u32(c, &t, what))) return rc;
        if (t >= MN_GGUF_NTYPES)
            return mn_error(MN_EFORMAT, "key '%s': unknown value type %u at byte %zu (valid: 0..%d)",
                            key, t, c->pos - 4, MN_GGUF_NTYPES - 1);
        kv->type = (mn_gguf_vtype)t;
        if (t == MN_GGUF_ARRAY) {
            uint32_t et;
            uint64_t n;
            snprintf(what, sizeof what, "array header of key '%s'", key);
            if ((rc = cur_u32(c, &et, what)) || (rc = cur_u64(c, &n, what))) return rc;
            kv->arr_type = (mn_gguf_vtype)et;
            kv->arr_n = n;
            kv->val = c->p + c->pos;
            uint64_t *offs = NULL;
            if (et == MN_GGUF_STRING && n > 0 && n <= cur_left(c) / 8) {
                offs = malloc((size_t)n * sizeof *offs);
                if (!offs)
                    return mn_error(MN_ENOMEM, "key '%s': out of memory indexing %llu strings", key,
                                    (unsigned long long)n);
                kv->str_offs = offs;
            }
            if ((rc = skip_array(c, key, et, n, 1, offs))) return rc;
        } else {
            kv->val = c->p + c->pos;
            if ((rc = skip_value(c, key, t, 0))) return rc;
        }
        int64_t dup = table_insert(g, g->kv_table, g->kv_cap, kv_name, (size_t)i);
        if (dup >= 0)
            return mn_error(MN_EFORMAT, "duplicate metadata key '%s' (entries %lld and %llu)", key,
                            (long long)dup, (unsigned long long)i);
        g->n_kv = (int64_t)i + 1;
    }
    return 0;
}

static int parse_alignment(mn_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = mn_gguf_find_key(g, "general.alignment");
    if (i < 0) return 0;
    const gguf_kv *kv = &g->kvs[i];
    if (kv->type != MN_GGUF_UINT32)
        return mn_error(MN_EFORMAT, "general.alignment has type %s; expected u32",
                        vtype_name(kv->type));
    uint32_t a = rd32(kv->val);
    if (a == 0 || (a & (a - 1)))
        return mn_error(MN_EFORMAT, "general.alignment is %u; it must be a non-zero power of two", a);
    g->alignment = a;
    return 0;
}

typedef struct {
    const char *name;
    uint64_t len;
} tname;

typedef struct {
    uint64_t offset;
    uint64_t nbytes;
    uint32_t idx;
} tspan;

static int cmp_span(const void *a, const void *b) {
    const tspan *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int parse_tensors(mn_gguf *g, cursor *c, uint64_t n_t) {
    int rc = 0;
    if (n_t > cur_left(c) / GGUF_MIN_TINFO_BYTES)
        return mn_error(MN_EFORMAT,
                        "header claims %llu tensors, but only %zu bytes remain for tensor infos at "
                        "byte %zu (each needs at least %u)",
                        (unsigned long long)n_t, cur_left(c), c->pos, GGUF_MIN_TINFO_BYTES);
    size_t n = (size_t)n_t;
    g->tensors = calloc(n ? n : 1, sizeof *g->tensors);
    tname *names = calloc(n ? n : 1, sizeof *names);
    if (!g->tensors || !names) {
        free(names);
        return mn_error(MN_ENOMEM, "out of memory for %zu tensor infos", n);
    }
    size_t name_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        mn_gguf_tensor *t = &g->tensors[i];
        mn_gguf_str s;
        char what[160], tn[96];
        snprintf(what, sizeof what, "name of tensor %zu", i);
        if ((rc = cur_str(c, &s, what)) || (rc = check_name(s, "tensor", (long long)i))) goto out;
        names[i].name = s.ptr;
        names[i].len = s.len;
        name_bytes += (size_t)s.len + 1;
        snprintf(tn, sizeof tn, "%.*s%s", s.len > 80 ? 80 : (int)s.len, s.ptr,
                 s.len > 80 ? "..." : "");
        uint32_t nd, type;
        uint64_t off;
        snprintf(what, sizeof what, "n_dims of tensor '%s'", tn);
        if ((rc = cur_u32(c, &nd, what))) goto out;
        if (nd < 1 || nd > MN_GGUF_MAX_DIMS) {
            rc = mn_error(MN_EFORMAT, "tensor '%s': n_dims is %u; must be 1..%d", tn, nd,
                          MN_GGUF_MAX_DIMS);
            goto out;
        }
        t->n_dims = (int)nd;
        int64_t nelem = 1;
        for (int d = 0; d < MN_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            snprintf(what, sizeof what, "ne[%u] of tensor '%s'", d, tn);
            if ((rc = cur_u64(c, &v, what))) goto out;
            if (v > (uint64_t)INT64_MAX) {
                rc = mn_error(MN_EFORMAT, "tensor '%s': ne[%u] = %lld is negative", tn, d,
                              (long long)v);
                goto out;
            }
            t->ne[d] = (int64_t)v;
            if (nelem != 0 && t->ne[d] > INT64_MAX / nelem) {
                rc = mn_error(MN_EFORMAT,
                              "tensor '%s': element count overflows 64 bits (ne[%u] = %lld)", tn,
                              d, (long long)t->ne[d]);
                goto out;
            }
            nelem *= t->ne[d];
        }
        snprintf(what, sizeof what, "type of tensor '%s'", tn);
        if ((rc = cur_u32(c, &type, what))) goto out;
        const mn_type_layout *lay = mn_type_layout_get((int)type);
        if (!lay) {
            rc = mn_error(type < MN_TYPE_COUNT ? MN_EUNSUPPORTED : MN_EFORMAT,
                          "tensor '%s': tensor type %u is %s", tn, type,
                          type < MN_TYPE_COUNT ? "not supported by mnemo" : "unknown");
            goto out;
        }
        t->type = (int)type;
        if (t->ne[0] % lay->blck) {
            rc = mn_error(MN_EFORMAT,
                          "tensor '%s' (%s): ne[0] = %lld is not a multiple of the block size %d",
                          tn, lay->name, (long long)t->ne[0], lay->blck);
            goto out;
        }
        /* row bytes * rows, overflow-checked */
        uint64_t row = (uint64_t)(t->ne[0] / lay->blck) * (uint64_t)lay->bytes;
        uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
        if (t->ne[0] == 0 || rows == 0) {
            t->nbytes = 0;
        } else if (row > SIZE_MAX / rows) {
            rc = mn_error(MN_EFORMAT, "tensor '%s': data size overflows (%llu rows of %llu bytes)",
                          tn, (unsigned long long)rows, (unsigned long long)row);
            goto out;
        } else {
            t->nbytes = (size_t)(row * rows);
        }
        snprintf(what, sizeof what, "offset of tensor '%s'", tn);
        if ((rc = cur_u64(c, &off, what))) goto out;
        if (off % g->alignment) {
            rc = mn_error(MN_EFORMAT,
                          "tensor '%s': data offset %llu is not a multiple of the alignment %u",
                          tn, (unsigned long long)off, g->alignment);
            goto out;
        }
        t->offset = off;
    }

    /* Names: one blob of NUL-terminated copies, then the lookup table. */
    g->names = malloc(name_bytes ? name_bytes : 1);
    g->t_cap = table_cap(n);
    g->t_table = calloc(g->t_cap, sizeof *g->t_table);
    if (!g->names || !g->t_table) {
        rc = mn_error(MN_ENOMEM, "out of memory for %zu tensor names", n);
        goto out;
    }
    {
        char *dst = g->names;
        for (size_t i = 0; i < n; i++) {
            memcpy(dst, names[i].name, (size_t)names[i].len);
            dst[names[i].len] = 0;
            g->tensors[i].name = dst;
            dst += names[i].len + 1;
        }
    }
    g->n_tensors = (int64_t)n;
    for (size_t i = 0; i < n; i++) {
        int64_t dup = table_insert(g, g->t_table, g->t_cap, t_name, i);
        if (dup >= 0) {
            rc = mn_error(MN_EFORMAT, "duplicate tensor name '%s' (tensors %lld and %zu)",
                          g->tensors[i].name, (long long)dup, i);
            goto out;
        }
    }

    /* Data section and per-tensor bounds. */
    uint64_t pos = c->pos;
    g->data_start = (pos + g->alignment - 1) / g->alignment * g->alignment;
    uint64_t data_size = g->data_start <= c->size ? c->size - g->data_start : 0;
    const uint8_t *data = c->p + (g->data_start <= c->size ? g->data_start : c->size);
    for (size_t i = 0; i < n; i++) {
        mn_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            if (t->offset > UINT64_MAX / 2 || t->nbytes > UINT64_MAX / 4) /* range would wrap */
                rc = mn_error(MN_EFORMAT,
                              "tensor '%s': data offset %llu (+%zu bytes) lies past the end of the "
                              "file (data section starts at byte %llu, file size %zu)",
                              t->name, (unsigned long long)t->offset, t->nbytes,
                              (unsigned long long)g->data_start, c->size);
            else
                rc = mn_error(MN_EFORMAT,
                          "tensor '%s': data [%llu, %llu) extends past the end of the file "
                          "(data section starts at byte %llu, file size %zu)",
                          t->name, (unsigned long long)(g->data_start + t->offset),
                          (unsigned long long)(g->data_start + t->offset) + t->nbytes,
                          (unsigned long long)g->data_start, c->size);
            goto out;
        }
        t->data = data + t->offset;
    }

    /* Overlaps: sort by offset; each non-empty tensor must end before the next begins. */
    if (n > 1) {
        tspan *sp = malloc(n * sizeof *sp);
        if (!sp) {
            rc = mn_error(MN_ENOMEM, "out of memory checking tensor overlap");
            goto out;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (g->tensors[i].nbytes)
                sp[m++] = (tspan){g->tensors[i].offset, g->tensors[i].nbytes, (uint32_t)i};
        qsort(sp, m, sizeof *sp, cmp_span);
        for (size_t k = 1; k < m; k++) {
            if (sp[k - 1].offset + sp[k - 1].nbytes > sp[k].offset) {
                const mn_gguf_tensor *a = &g->tensors[sp[k - 1].idx], *b = &g->tensors[sp[k].idx];
                rc = mn_error(MN_EFORMAT,
                              "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap in the "
                              "data section",
                              a->name, (unsigned long long)a->offset,
                              (unsigned long long)(a->offset + a->nbytes), b->name,
                              (unsigned long long)b->offset,
                              (unsigned long long)(b->offset + b->nbytes));
                break;
            }
        }
        free(sp);
    }
out:
    free(names);
    return rc;
}

static int parse(mn_gguf *g) {
    cursor c = {g->base, g->size, 0};
    uint64_t n_t, n_kv;
    int rc;
    if ((rc = parse_header(g, &c, &n_t, &n_kv))) return rc;
    if ((rc = parse_kvs(g, &c, n_kv))) return rc;
    if ((rc = parse_alignment(g))) return rc;
    return parse_tensors(g, &c, n_t);
}

void mn_gguf_free(mn_gguf *g) {
    if (!g) return;
    if (g->kvs)
        for (size_t i = 0; i < g->kv_alloc; i++) free(g->kvs[i].str_offs);
    free(g->kvs);
    free(g->kv_table);
    free(g->t_table);
    free(g->tensors);
    free(g->names);
    if (g->mapped && g->base) munmap((void *)g->base, g->size);
    free(g);
}

/* Common tail of both open paths; takes ownership of g. */
static int finish_open(mn_gguf *g, mn_gguf **out) {
    int rc = parse(g);
    if (rc) {
        mn_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int mn_gguf_open_memory(const void *data, size_t size, mn_gguf **out) {
    if (!out) return mn_error(MN_EINVAL, "mn_gguf_open_memory: out is NULL");
    *out = NULL;
    if (!data && size) return mn_error(MN_EINVAL, "mn_gguf_open_memory: data is NULL");
    if (size == 0) return mn_error(MN_EFORMAT, "buffer is empty (0 bytes); expected a GGUF file");
    mn_gguf *g = calloc(1, sizeof *g);
    if (!g) return mn_error(MN_ENOMEM, "out of memory");
    g->base = data;
    g->size = size;
    return finish_open(g, out);
}

int mn_gguf_open(const char *path, mn_gguf **out) {
    if (!out) return mn_error(MN_EINVAL, "mn_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return mn_error(MN_EINVAL, "mn_gguf_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mn_error(e == ENOENT ? MN_ENOTFOUND : MN_EIO, "%s: cannot open: %s", path,
                        strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mn_error(MN_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return mn_error(MN_EINVAL, "%s: is a directory, not a GGUF file", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mn_error(MN_EINVAL, "%s: not a regular file (GGUF files are memory-mapped)", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return mn_error(MN_EFORMAT, "%s: file is empty (0 bytes); expected a GGUF file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return mn_error(MN_EUNSUPPORTED, "%s: file too large to map (%lld bytes)", path,
                        (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return mn_error(MN_EIO, "%s: mmap of %zu bytes failed: %s", path, size,
                                         strerror(e));
    mn_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, size);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    g->base = m;
    g->size = size;
    g->mapped = 1;
    int rc = finish_open(g, out);
    if (rc) return mn_error_prefix(rc, path);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reader accessors                                                         */
/* ------------------------------------------------------------------------ */

uint32_t mn_gguf_version(const mn_gguf *g) { return g ? g->version : 0; }
size_t mn_gguf_file_size(const mn_gguf *g) { return g ? g->size : 0; }
const void *mn_gguf_base(const mn_gguf *g) { return g ? g->base : NULL; }
int64_t mn_gguf_n_kv(const mn_gguf *g) { return g ? g->n_kv : 0; }
int64_t mn_gguf_n_tensors(const mn_gguf *g) { return g ? g->n_tensors : 0; }

int64_t mn_gguf_find_key(const mn_gguf *g, const char *key) {
    if (!g || !key) return -1;
    return table_find(g, g->kv_table, g->kv_cap, kv_name, key, strlen(key));
}

mn_gguf_str mn_gguf_key_at(const mn_gguf *g, int64_t i) {
    mn_gguf_str none = {NULL, 0};
    if (!g || i < 0 || i >= g->n_kv) return none;
    return g->kvs[i].key;
}

mn_gguf_vtype mn_gguf_kv_type(const mn_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_kv) return MN_GGUF_NTYPES;
    return g->kvs[i].type;
}

const void *mn_gguf_kv_raw(const mn_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_kv) return NULL;
    return g->kvs[i].val;
}

static const gguf_kv *lookup(const mn_gguf *g, const char *key, int *rc) {
    int64_t i = mn_gguf_find_key(g, key);
    if (i < 0) {
        *rc = mn_error(MN_ENOTFOUND, "metadata key '%s' not found", key ? key : "(null)");
        return NULL;
    }
    *rc = 0;
    return &g->kvs[i];
}

static int wrong_type(const char *key, const gguf_kv *kv, const char *want) {
    if (kv->type == MN_GGUF_ARRAY)
        return mn_error(MN_EFORMAT, "metadata key '%s' is an array of %s; expected %s", key,
                        vtype_name(kv->arr_type), want);
    return mn_error(MN_EFORMAT, "metadata key '%s' has type %s; expected %s", key,
                    vtype_name(kv->type), want);
}

/* Integer value of kv: *neg set when negative; magnitude-preserving split into
 * signed (sv) and unsigned (uv) views. Returns 0 if kv is not an integer type. */
static int kv_integer(const gguf_kv *kv, int *neg, int64_t *sv, uint64_t *uv) {
    const uint8_t *p = kv->val;
    int64_t s = 0;
    uint64_t u = 0;
    int is_signed = 0;
    switch (kv->type) {
    case MN_GGUF_UINT8: u = p[0]; break;
    case MN_GGUF_UINT16: u = rd16(p); break;
    case MN_GGUF_UINT32: u = rd32(p); break;
    case MN_GGUF_UINT64: u = rd64(p); break;
    case MN_GGUF_INT8: s = (int8_t)p[0]; is_signed = 1; break;
    case MN_GGUF_INT16: s = (int16_t)rd16(p); is_signed = 1; break;
    case MN_GGUF_INT32: s = (int32_t)rd32(p); is_signed = 1; break;
    case MN_GGUF_INT64: s = (int64_t)rd64(p); is_signed = 1; break;
    default: return 0;
    }
    if (is_signed) {
        *neg = s < 0;
        *sv = s;
        *uv = s < 0 ? 0 : (uint64_t)s;
    } else {
        *neg = 0;
        *uv = u;
        *sv = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    }
    return 1;
}

int mn_gguf_get_u32(const mn_gguf *g, const char *key, uint32_t *out) {
    int rc, neg;
    int64_t sv;
    uint64_t uv;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (!kv_integer(kv, &neg, &sv, &uv)) return wrong_type(key, kv, "an integer (u32)");
    if (neg || uv > UINT32_MAX)
        return mn_error(MN_EFORMAT, "metadata key '%s' = %s%llu (%s) does not fit in u32", key,
                        neg ? "-" : "", neg ? 0ull - (unsigned long long)sv : (unsigned long long)uv,
                        vtype_name(kv->type));
    if (out) *out = (uint32_t)uv;
    return 0;
}

int mn_gguf_get_i64(const mn_gguf *g, const char *key, int64_t *out) {
    int rc, neg;
    int64_t sv;
    uint64_t uv;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (!kv_integer(kv, &neg, &sv, &uv)) return wrong_type(key, kv, "an integer (i64)");
    if (!neg && uv > (uint64_t)INT64_MAX)
        return mn_error(MN_EFORMAT, "metadata key '%s' = %llu (u64) does not fit in i64", key,
                        (unsigned long long)uv);
    if (out) *out = sv;
    return 0;
}

int mn_gguf_get_f32(const mn_gguf *g, const char *key, float *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type == MN_GGUF_FLOAT32) {
        uint32_t b = rd32(kv->val);
        float f;
        memcpy(&f, &b, 4);
        if (out) *out = f;
        return 0;
    }
    if (kv->type == MN_GGUF_FLOAT64) {
        uint64_t b = rd64(kv->val);
        double d;
        memcpy(&d, &b, 8);
        if (out) *out = (float)d;
        return 0;
    }
    return wrong_type(key, kv, "f32 or f64");
}

int mn_gguf_get_bool(const mn_gguf *g, const char *key, int *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != MN_GGUF_BOOL) return wrong_type(key, kv, "bool");
    if (out) *out = kv->val[0] != 0;
    return 0;
}

int mn_gguf_get_str(const mn_gguf *g, const char *key, mn_gguf_str *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != MN_GGUF_STRING) return wrong_type(key, kv, "string");
    if (out) {
        out->len = rd64(kv->val);
        out->ptr = (const char *)kv->val + 8;
    }
    return 0;
}

int mn_gguf_get_arr(const mn_gguf *g, const char *key, mn_gguf_vtype *elem_type, uint64_t *n,
                    const void **data) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != MN_GGUF_ARRAY) return wrong_type(key, kv, "an array");
    if (elem_type) *elem_type = kv->arr_type;
    if (n) *n = kv->arr_n;
    if (data) *data = kv->val;
    return 0;
}

mn_gguf_str mn_gguf_arr_str(const mn_gguf *g, int64_t kv, uint64_t i) {
    mn_gguf_str none = {NULL, 0};
    if (!g || kv < 0 || kv >= g->n_kv) return none;
    const gguf_kv *e = &g->kvs[kv];
    if (e->type != MN_GGUF_ARRAY || e->arr_type != MN_GGUF_STRING || i >= e->arr_n || !e->str_offs)
        return none;
    const uint8_t *p = g->base + e->str_offs[i];
    mn_gguf_str s = {(const char *)p + 8, rd64(p)};
    return s;
}

const mn_gguf_tensor *mn_gguf_tensor_at(const mn_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_tensors) return NULL;
    return &g->tensors[i];
}

const mn_gguf_tensor *mn_gguf_find_tensor(const mn_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    int64_t i = table_find(g, g->t_table, g->t_cap, t_name, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val; /* encoded value bytes (as they follow the type field in the file) */
    size_t len;
} wkv;

typedef struct {
    char *name;
    int type;
    int n_dims;
    int64_t ne[MN_GGUF_MAX_DIMS];
    uint8_t *data;
    size_t nbytes;
    uint64_t offset; /* assigned at write time */
} wtensor;

struct mn_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *ts;
    size_t n_t, cap_t;
};

static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Stores one host-order scalar of size sz at src as little-endian bytes at dst. */
static void put_le(uint8_t *dst, const void *src, size_t sz) {
    uint16_t a;
    uint32_t b;
    uint64_t c;
    switch (sz) {
    case 1: memcpy(dst, src, 1); break;
    case 2: memcpy(&a, src, 2); wr16(dst, a); break;
    case 4: memcpy(&b, src, 4); wr32(dst, b); break;
    default: memcpy(&c, src, 8); wr64(dst, c); break;
    }
}

mn_gguf_writer *mn_gguf_writer_create(void) { return calloc(1, sizeof(mn_gguf_writer)); }

void mn_gguf_writer_free(mn_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->ts[i].name);
        free(w->ts[i].data);
    }
    free(w->kvs);
    free(w->ts);
    free(w);
}

/* Takes ownership of val (len bytes) and stores it under key, replacing any earlier value. */
static int writer_put(mn_gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len) {
    if (!w || !key) {
        free(val);
        return mn_error(MN_EINVAL, "gguf writer: %s is NULL", w ? "key" : "writer");
    }
    size_t kl = strlen(key);
    if (kl == 0 || kl > GGUF_MAX_NAME) {
        free(val);
        return mn_error(MN_EINVAL, "gguf writer: key length %zu is out of range 1..%u", kl,
                        GGUF_MAX_NAME);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].val);
            w->kvs[i].type = type;
            w->kvs[i].val = val;
            w->kvs[i].len = len;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *k = realloc(w->kvs, cap * sizeof *k);
        if (!k) {
            free(val);
            return mn_error(MN_ENOMEM, "gguf writer: out of memory adding key '%s'", key);
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    char *kc = malloc(kl + 1);
    if (!kc) {
        free(val);
        return mn_error(MN_ENOMEM, "gguf writer: out of memory adding key '%s'", key);
    }
    memcpy(kc, key, kl + 1);
    w->kvs[w->n_kv++] = (wkv){kc, type, val, len};
    return 0;
}

static int writer_put_scalar(mn_gguf_writer *w, const char *key, uint32_t type, const void *v) {
    size_t sz = vtype_size(type);
    uint8_t *b = malloc(sz);
    if (!b) return mn_error(MN_ENOMEM, "gguf writer: out of memory");
    put_le(b, v, sz);
    return writer_put(w, key, type, b, sz);
}

int mn_gguf_writer_set_scalar(mn_gguf_writer *w, const char *key, mn_gguf_vtype type,
                              const void *v) {
    if (!vtype_size((uint32_t)type) || !v)
        return mn_error(MN_EINVAL, "gguf writer: key '%s': %s is not a scalar numeric/bool type",
                        key ? key : "(null)", v ? vtype_name((uint32_t)type) : "value pointer");
    if (type == MN_GGUF_BOOL) {
        uint8_t b = *(const uint8_t *)v ? 1 : 0;
        return writer_put_scalar(w, key, type, &b);
    }
    return writer_put_scalar(w, key, (uint32_t)type, v);
}

int mn_gguf_writer_set_u32(mn_gguf_writer *w, const char *key, uint32_t v) {
    return writer_put_scalar(w, key, MN_GGUF_UINT32, &v);
}
int mn_gguf_writer_set_i32(mn_gguf_writer *w, const char *key, int32_t v) {
    return writer_put_scalar(w, key, MN_GGUF_INT32, &v);
}
int mn_gguf_writer_set_u64(mn_gguf_writer *w, const char *key, uint64_t v) {
    return writer_put_scalar(w, key, MN_GGUF_UINT64, &v);
}
int mn_gguf_writer_set_f32(mn_gguf_writer *w, const char *key, float v) {
    return writer_put_scalar(w, key, MN_GGUF_FLOAT32, &v);
}
int mn_gguf_writer_set_bool(mn_gguf_writer *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    return writer_put_scalar(w, key, MN_GGUF_BOOL, &b);
}

int mn_gguf_writer_set_str(mn_gguf_writer *w, const char *key, const char *v) {
    if (!v) return mn_error(MN_EINVAL, "gguf writer: key '%s': string is NULL", key ? key : "");
    size_t n = strlen(v);
    uint8_t *b = malloc(8 + n);
    if (!b) return mn_error(MN_ENOMEM, "gguf writer: out of memory");
    wr64(b, n);
    memcpy(b + 8, v, n);
    return writer_put(w, key, MN_GGUF_STRING, b, 8 + n);
}

int mn_gguf_writer_set_arr(mn_gguf_writer *w, const char *key, mn_gguf_vtype elem_type, uint64_t n,
                           const void *data) {
    size_t esz = vtype_size((uint32_t)elem_type);
    if (!esz)
        return mn_error(MN_EINVAL,
                        "gguf writer: key '%s': element type %s is not numeric/bool (use "
                        "mn_gguf_writer_set_arr_str for strings)",
                        key ? key : "(null)", vtype_name((uint32_t)elem_type));
    if (n && !data) return mn_error(MN_EINVAL, "gguf writer: key '%s': data is NULL", key ? key : "");
    if (n > (SIZE_MAX - 12) / esz)
        return mn_error(MN_EINVAL, "gguf writer: key '%s': %llu elements is too many", key ? key : "",
                        (unsigned long long)n);
    size_t len = 12 + (size_t)n * esz;
    uint8_t *b = malloc(len);
    if (!b) return mn_error(MN_ENOMEM, "gguf writer: out of memory for array '%s'", key ? key : "");
    wr32(b, (uint32_t)elem_type);
    wr64(b + 4, n);
    const uint8_t *src = data;
    for (size_t i = 0; i < (size_t)n; i++) {
        if (elem_type == MN_GGUF_BOOL)
            b[12 + i] = src[i] ? 1 : 0;
        else
            put_le(b + 12 + i * esz, src + i * esz, esz);
    }
    return writer_put(w, key, MN_GGUF_ARRAY, b, len);
}

int mn_gguf_writer_set_arr_str(mn_gguf_writer *w, const char *key, uint64_t n,
                               const char *const *strs, const uint64_t *lens) {
    if (n && !strs) return mn_error(MN_EINVAL, "gguf writer: key '%s': strs is NULL", key ? key : "");
    size_t len = 12;
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) return mn_error(MN_EINVAL, "gguf writer: key '%s': string %llu is NULL",
                                      key ? key : "", (unsigned long long)i);
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        if (l > SIZE_MAX - 8 - len)
            return mn_error(MN_EINVAL, "gguf writer: key '%s': strings too large", key ? key : "");
        len += 8 + (size_t)l;
    }
    uint8_t *b = malloc(len);
    if (!b) return mn_error(MN_ENOMEM, "gguf writer: out of memory for array '%s'", key ? key : "");
    wr32(b, MN_GGUF_STRING);
    wr64(b + 4, n);
    size_t at = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        wr64(b + at, l);
        memcpy(b + at + 8, strs[i], (size_t)l);
        at += 8 + (size_t)l;
    }
    return writer_put(w, key, MN_GGUF_ARRAY, b, len);
}

int mn_gguf_writer_add_tensor(mn_gguf_writer *w, const char *name, int type, int n_dims,
                              const int64_t *ne, const void *data) {
    if (!w || !name || !ne)
        return mn_error(MN_EINVAL, "gguf writer: add_tensor: %s is NULL",
                        !w ? "writer" : !name ? "name" : "ne");
    size_t nl = strlen(name);
    if (nl == 0 || nl > GGUF_WRITER_MAX_TNAME)
        return mn_error(MN_EINVAL, "gguf writer: tensor name '%s' is %zu bytes; must be 1..%u", name,
                        nl, GGUF_WRITER_MAX_TNAME);
    const mn_type_layout *lay = mn_type_layout_get(type);
    if (!lay) return mn_error(MN_EINVAL, "gguf writer: tensor '%s': unknown type %d", name, type);
    if (n_dims < 1 || n_dims > MN_GGUF_MAX_DIMS)
        return mn_error(MN_EINVAL, "gguf writer: tensor '%s': n_dims %d must be 1..%d", name, n_dims,
                        MN_GGUF_MAX_DIMS);
    int64_t dims[MN_GGUF_MAX_DIMS] = {1, 1, 1, 1};
    int64_t nelem = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0)
            return mn_error(MN_EINVAL, "gguf writer: tensor '%s': ne[%d] = %lld is negative", name,
                            d, (long long)ne[d]);
        if (nelem && ne[d] > INT64_MAX / nelem)
            return mn_error(MN_EINVAL, "gguf writer: tensor '%s': element count overflows", name);
        nelem *= ne[d];
        dims[d] = ne[d];
    }
    if (dims[0] % lay->blck)
        return mn_error(MN_EINVAL,
                        "gguf writer: tensor '%s' (%s): ne[0] = %lld is not a multiple of the "
                        "block size %d",
                        name, lay->name, (long long)dims[0], lay->blck);
    uint64_t row = mn_type_row_bytes(type, dims[0]);
    uint64_t rows = (uint64_t)dims[1] * (uint64_t)dims[2] * (uint64_t)dims[3];
    if (rows && row > SIZE_MAX / rows)
        return mn_error(MN_EINVAL, "gguf writer: tensor '%s': data size overflows", name);
    size_t nbytes = (size_t)(row * rows);
    if (nbytes && !data)
        return mn_error(MN_EINVAL, "gguf writer: tensor '%s': data is NULL", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->ts[i].name, name) == 0)
            return mn_error(MN_EINVAL, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *t = realloc(w->ts, cap * sizeof *t);
        if (!t) return mn_error(MN_ENOMEM, "gguf writer: out of memory adding tensor '%s'", name);
        w->ts = t;
        w->cap_t = cap;
    }
    char *nc = malloc(nl + 1);
    uint8_t *dc = malloc(nbytes ? nbytes : 1);
    if (!nc || !dc) {
        free(nc);
        free(dc);
        return mn_error(MN_ENOMEM, "gguf writer: out of memory copying tensor '%s' (%zu bytes)",
                        name, nbytes);
    }
    memcpy(nc, name, nl + 1);
    if (nbytes) memcpy(dc, data, nbytes);
    wtensor *t = &w->ts[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = nc;
    t->type = type;
    t->n_dims = n_dims;
    memcpy(t->ne, dims, sizeof dims);
    t->data = dc;
    t->nbytes = nbytes;
    return 0;
}

static int wfile(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

static int wpad(FILE *f, uint64_t pos, uint32_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t k = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        if (!wfile(f, zeros, k)) return 0;
        pad -= k;
    }
    return 1;
}

/* Serialises everything to f; returns 1 on success (errno describes a failure). */
static int writer_emit(const mn_gguf_writer *w, FILE *f, uint32_t align) {
    uint8_t b[8 + 4 + 8 * MN_GGUF_MAX_DIMS + 4 + 8];
    uint64_t pos = 0;
    memcpy(b, "GGUF", 4);
    wr32(b + 4, 3);
    wr64(b + 8, w->n_t);
    wr64(b + 16, w->n_kv);
    if (!wfile(f, b, 24)) return 0;
    pos += 24;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        size_t kl = strlen(kv->key);
        wr64(b, kl);
        if (!wfile(f, b, 8) || !wfile(f, kv->key, kl)) return 0;
        wr32(b, kv->type);
        if (!wfile(f, b, 4) || !wfile(f, kv->val, kv->len)) return 0;
        pos += 12 + kl + kv->len;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        size_t nl = strlen(t->name), k = 0;
        wr64(b, nl);
        if (!wfile(f, b, 8) || !wfile(f, t->name, nl)) return 0;
        wr32(b + k, (uint32_t)t->n_dims);
        k += 4;
        for (int d = 0; d < t->n_dims; d++, k += 8) wr64(b + k, (uint64_t)t->ne[d]);
        wr32(b + k, (uint32_t)t->type);
        k += 4;
        wr64(b + k, t->offset);
        k += 8;
        if (!wfile(f, b, k)) return 0;
        pos += 8 + nl + k;
    }
    if (!wpad(f, pos, align)) return 0;
    for (size_t i = 0; i < w->n_t; i++) {
        /* offsets are multiples of align and each tensor is padded to one */
        if (!wfile(f, w->ts[i].data, w->ts[i].nbytes) || !wpad(f, w->ts[i].nbytes, align))
            return 0;
    }
    return 1;
}

int mn_gguf_writer_write(mn_gguf_writer *w, const char *path) {
    if (!w || !path) return mn_error(MN_EINVAL, "gguf writer: %s is NULL", w ? "path" : "writer");
    uint32_t align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        uint32_t a = w->kvs[i].type == MN_GGUF_UINT32 ? rd32(w->kvs[i].val) : 0;
        if (w->kvs[i].type != MN_GGUF_UINT32 || a == 0 || (a & (a - 1)))
            return mn_error(MN_EINVAL,
                            "gguf writer: general.alignment must be a u32 power of two");
        align = a;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->ts[i].offset = off;
        off += (w->ts[i].nbytes + align - 1) / align * align;
    }

    FILE *f;
    int fd;
    char *tmp;
    int frc = mn_file_create_temp(path, &f, &fd, &tmp);
    if (frc) return frc;
    errno = 0;
    int ok = writer_emit(w, f, align);
    return mn_file_commit(f, fd, tmp, path, ok, ok ? 0 : errno, "writing GGUF");
}
