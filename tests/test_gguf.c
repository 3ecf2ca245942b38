/* test_gguf.c - GGUF reader/writer: round trips, hostile inputs, the real model. */
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "test.h"

static char g_dir[64];

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return k == n ? 0 : -1;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static int str_eq(mn_gguf_str s, const char *c) {
    return s.ptr && s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* ---- raw byte builder for hand-made (usually broken) files ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_bytes(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_bytes(b, &v, 1); }
static void b_u32(buf *b, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    b_bytes(b, t, 4);
}
static void b_u64(buf *b, uint64_t v) {
    uint8_t t[8];
    for (int i = 0; i < 8; i++) t[i] = (uint8_t)(v >> (8 * i));
    b_bytes(b, t, 8);
}
static void b_str(buf *b, const char *s) {
    b_u64(b, strlen(s));
    b_bytes(b, s, strlen(s));
}
static void b_hdr(buf *b, uint32_t ver, uint64_t nt, uint64_t nkv) {
    b_bytes(b, "GGUF", 4);
    b_u32(b, ver);
    b_u64(b, nt);
    b_u64(b, nkv);
}
static void b_kv_u32(buf *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, MN_GGUF_UINT32);
    b_u32(b, v);
}
static void b_tinfo(buf *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type,
                    uint64_t off) {
    b_str(b, name);
    b_u32(b, nd);
    for (uint32_t i = 0; i < nd && i < 5; i++) b_u64(b, ne[i]); /* callers pass <= 5 dims */
    b_u32(b, type);
    b_u64(b, off);
}
static void b_pad(buf *b, size_t align) {
    while (b->n % align) b_u8(b, 0);
}
static void b_zeros(buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) b_u8(b, 0);
}

/* Parses an exact-size heap copy (so ASan sees any over-read) and expects failure. */
static void expect_bad_mem(const void *p, size_t n, int want_rc, const char *want_msg,
                           const char *label) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    mn_gguf *g = (mn_gguf *)1;
    int rc = mn_gguf_open_memory(copy, n, &g);
    const char *msg = mn_last_error();
    CHECK(rc == want_rc, "%s: rc %d (%s), want %d; message: %s", label, rc, mn_strerror(rc),
          want_rc, msg);
    CHECK(g == NULL, "%s: out not NULL on failure", label);
    CHECK(!want_msg || strstr(msg, want_msg), "%s: message '%s' lacks '%s'", label, msg, want_msg);
    if (getenv("MNEMO_TEST_VERBOSE")) printf("  %-28s %s\n", label, msg);
    if (rc == 0) mn_gguf_free(g);
    free(copy);
}

static void expect_bad(buf *b, int want_rc, const char *want_msg, const char *label) {
    expect_bad_mem(b->p, b->n, want_rc, want_msg, label);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- round trip ---- */

typedef struct {
    const char *name;
    int type;
    int n_dims;
    int64_t ne[4];
} tspec;

static const tspec k_tensors[] = {
    {"t.f32", MN_TYPE_F32, 2, {4, 3, 1, 1}},
    {"t.f16", MN_TYPE_F16, 1, {7, 1, 1, 1}},
    {"blk.0.attn_q.weight", MN_TYPE_Q8_0, 2, {64, 3, 1, 1}},
    {"t.q4_1", MN_TYPE_Q4_1, 3, {32, 1, 2, 1}},
    {"t.q4_k", MN_TYPE_Q4_K, 1, {256, 1, 1, 1}},
    {"t.bf16", MN_TYPE_BF16, 4, {2, 3, 2, 2}},
    {"t.empty", MN_TYPE_F32, 2, {0, 5, 1, 1}},
    {"t.q6_k", MN_TYPE_Q6_K, 2, {512, 2, 1, 1}},
};
#define N_TENSORS (int)(sizeof k_tensors / sizeof k_tensors[0])

static size_t spec_bytes(const tspec *t) {
    return mn_type_row_bytes(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

static const uint8_t arr_u8[] = {0, 1, 255};
static const int8_t arr_i8[] = {-128, 0, 127};
static const uint16_t arr_u16[] = {0, 65535, 1234};
static const int16_t arr_i16[] = {-32768, 32767};
static const uint32_t arr_u32[] = {0xdeadbeefu, 7};
static const int32_t arr_i32[] = {-2147483647 - 1, 42};
static const float arr_f32[] = {1.5f, -0.25f, 3.0e38f};
static const uint8_t arr_bool[] = {1, 0, 1, 1};
static const uint64_t arr_u64[] = {UINT64_MAX, 0};
static const int64_t arr_i64[] = {INT64_MIN, INT64_MAX, -1};
static const double arr_f64[] = {3.141592653589793, -1e300};

static mn_gguf_writer *build_writer(void) {
    mn_gguf_writer *w = mn_gguf_writer_create();
    int rc = 0;
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = -5000000000ll;
    double f64 = 2.718281828459045;
    rc |= mn_gguf_writer_set_str(w, "general.architecture", "llama");
    rc |= mn_gguf_writer_set_u32(w, "llama.block_count", 30);
    rc |= mn_gguf_writer_set_i32(w, "test.i32", -7);
    rc |= mn_gguf_writer_set_u64(w, "test.u64", 0x123456789abcdefull);
    rc |= mn_gguf_writer_set_u64(w, "test.u64_big", UINT64_MAX);
    rc |= mn_gguf_writer_set_f32(w, "test.f32", 1e-5f);
    rc |= mn_gguf_writer_set_bool(w, "test.bool", 1);
    rc |= mn_gguf_writer_set_bool(w, "test.bool0", 0);
    rc |= mn_gguf_writer_set_scalar(w, "test.u8", MN_GGUF_UINT8, &u8);
    rc |= mn_gguf_writer_set_scalar(w, "test.i8", MN_GGUF_INT8, &i8);
    rc |= mn_gguf_writer_set_scalar(w, "test.u16", MN_GGUF_UINT16, &u16);
    rc |= mn_gguf_writer_set_scalar(w, "test.i16", MN_GGUF_INT16, &i16);
    rc |= mn_gguf_writer_set_scalar(w, "test.i64", MN_GGUF_INT64, &i64);
    rc |= mn_gguf_writer_set_scalar(w, "test.f64", MN_GGUF_FLOAT64, &f64);
    rc |= mn_gguf_writer_set_str(w, "test.empty_str", "");
    rc |= mn_gguf_writer_set_arr(w, "arr.u8", MN_GGUF_UINT8, 3, arr_u8);
    rc |= mn_gguf_writer_set_arr(w, "arr.i8", MN_GGUF_INT8, 3, arr_i8);
    rc |= mn_gguf_writer_set_arr(w, "arr.u16", MN_GGUF_UINT16, 3, arr_u16);
    rc |= mn_gguf_writer_set_arr(w, "arr.i16", MN_GGUF_INT16, 2, arr_i16);
    rc |= mn_gguf_writer_set_arr(w, "arr.u32", MN_GGUF_UINT32, 2, arr_u32);
    rc |= mn_gguf_writer_set_arr(w, "arr.i32", MN_GGUF_INT32, 2, arr_i32);
    rc |= mn_gguf_writer_set_arr(w, "arr.f32", MN_GGUF_FLOAT32, 3, arr_f32);
    rc |= mn_gguf_writer_set_arr(w, "arr.bool", MN_GGUF_BOOL, 4, arr_bool);
    rc |= mn_gguf_writer_set_arr(w, "arr.u64", MN_GGUF_UINT64, 2, arr_u64);
    rc |= mn_gguf_writer_set_arr(w, "arr.i64", MN_GGUF_INT64, 3, arr_i64);
    rc |= mn_gguf_writer_set_arr(w, "arr.f64", MN_GGUF_FLOAT64, 2, arr_f64);
    rc |= mn_gguf_writer_set_arr(w, "arr.empty", MN_GGUF_FLOAT32, 0, NULL);
    const char *strs[] = {"hello", "", "\xc4\xa0world", "a\0b"};
    const uint64_t lens[] = {5, 0, 7, 3};
    rc |= mn_gguf_writer_set_arr_str(w, "arr.str", 4, strs, lens);
    rc |= mn_gguf_writer_set_arr_str(w, "arr.str0", 0, NULL, NULL);
    /* replacing a key keeps one entry with the new value */
    rc |= mn_gguf_writer_set_u32(w, "test.replaced", 1);
    rc |= mn_gguf_writer_set_str(w, "test.replaced", "second");
    CHECK(rc == 0, "writer setters failed: %s", mn_last_error());
    for (int i = 0; i < N_TENSORS; i++) {
        size_t nb = spec_bytes(&k_tensors[i]);
        uint8_t *d = malloc(nb ? nb : 1);
        fill(d, nb, (unsigned)i);
        rc = mn_gguf_writer_add_tensor(w, k_tensors[i].name, k_tensors[i].type, k_tensors[i].n_dims,
                                       k_tensors[i].ne, d);
        CHECK(rc == 0, "add_tensor %s: %s", k_tensors[i].name, mn_last_error());
        free(d);
    }
    return w;
}

static void check_arr(const mn_gguf *g, const char *key, mn_gguf_vtype et, const void *want,
                      uint64_t n, size_t esz) {
    mn_gguf_vtype t = MN_GGUF_NTYPES;
    uint64_t got_n = 0;
    const void *d = NULL;
    int rc = mn_gguf_get_arr(g, key, &t, &got_n, &d);
    CHECK(rc == 0 && t == et && got_n == n, "%s: rc %d type %d n %llu", key, rc, t,
          (unsigned long long)got_n);
    if (rc == 0 && got_n == n && n) CHECK(memcmp(d, want, n * esz) == 0, "%s: contents differ", key);
}

static void check_contents(const mn_gguf *g, int want_align) {
    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f = 0;
    int b = -1;
    mn_gguf_str s = {0};

    CHECK(mn_gguf_version(g) == 3, "version %u", mn_gguf_version(g));
    CHECK(mn_gguf_n_kv(g) == 30 + (want_align != 32), "n_kv %lld", (long long)mn_gguf_n_kv(g));
    CHECK(mn_gguf_n_tensors(g) == N_TENSORS, "n_tensors %lld", (long long)mn_gguf_n_tensors(g));
    CHECK(str_eq(mn_gguf_key_at(g, 0), "general.architecture"), "first key");
    CHECK(mn_gguf_kv_type(g, 0) == MN_GGUF_STRING, "first key type");
    CHECK(mn_gguf_key_at(g, -1).ptr == NULL && mn_gguf_key_at(g, 1000).ptr == NULL, "key_at range");
    CHECK(mn_gguf_kv_type(g, 1000) == MN_GGUF_NTYPES, "kv_type range");

    CHECK(mn_gguf_get_str(g, "general.architecture", &s) == 0 && str_eq(s, "llama"), "arch");
    CHECK(mn_gguf_get_u32(g, "llama.block_count", &u32) == 0 && u32 == 30, "block_count %u", u32);
    CHECK(mn_gguf_get_i64(g, "llama.block_count", &i64) == 0 && i64 == 30, "u32 as i64");
    CHECK(mn_gguf_get_i64(g, "test.i32", &i64) == 0 && i64 == -7, "i32 %lld", (long long)i64);
    CHECK(mn_gguf_get_u32(g, "test.i32", &u32) == MN_EFORMAT, "negative i32 as u32 must fail");
    CHECK(strstr(mn_last_error(), "test.i32") && strstr(mn_last_error(), "-7"), "msg: %s",
          mn_last_error());
    CHECK(mn_gguf_get_i64(g, "test.u64", &i64) == 0 && i64 == 0x123456789abcdefll, "u64");
    CHECK(mn_gguf_get_u32(g, "test.u64", &u32) == MN_EFORMAT, "big u64 as u32 must fail");
    CHECK(mn_gguf_get_i64(g, "test.u64_big", &i64) == MN_EFORMAT, "UINT64_MAX as i64 must fail");
    CHECK(mn_gguf_get_f32(g, "test.f32", &f) == 0 && f == 1e-5f, "f32 %g", f);
    CHECK(mn_gguf_get_bool(g, "test.bool", &b) == 0 && b == 1, "bool");
    CHECK(mn_gguf_get_bool(g, "test.bool0", &b) == 0 && b == 0, "bool0");
    CHECK(mn_gguf_get_u32(g, "test.u8", &u32) == 0 && u32 == 200, "u8");
    CHECK(mn_gguf_get_i64(g, "test.i8", &i64) == 0 && i64 == -100, "i8");
    CHECK(mn_gguf_get_u32(g, "test.u16", &u32) == 0 && u32 == 60000, "u16");
    CHECK(mn_gguf_get_i64(g, "test.i16", &i64) == 0 && i64 == -30000, "i16");
    CHECK(mn_gguf_get_i64(g, "test.i64", &i64) == 0 && i64 == -5000000000ll, "i64");
    CHECK(mn_gguf_get_f32(g, "test.f64", &f) == 0 && f == (float)2.718281828459045, "f64");
    CHECK(mn_gguf_get_str(g, "test.empty_str", &s) == 0 && s.len == 0, "empty str");
    CHECK(mn_gguf_get_str(g, "test.replaced", &s) == 0 && str_eq(s, "second"), "replaced key");
    for (const char *k = "test.u8"; k; k = NULL) {
        int64_t i = mn_gguf_find_key(g, k);
        CHECK(i >= 0 && mn_gguf_kv_type(g, i) == MN_GGUF_UINT8, "u8 type");
    }
    CHECK(mn_gguf_kv_type(g, mn_gguf_find_key(g, "test.i8")) == MN_GGUF_INT8, "i8 type");
    CHECK(mn_gguf_kv_type(g, mn_gguf_find_key(g, "test.u16")) == MN_GGUF_UINT16, "u16 type");
    CHECK(mn_gguf_kv_type(g, mn_gguf_find_key(g, "test.i16")) == MN_GGUF_INT16, "i16 type");
    CHECK(mn_gguf_kv_type(g, mn_gguf_find_key(g, "test.i64")) == MN_GGUF_INT64, "i64 type");
    CHECK(mn_gguf_kv_type(g, mn_gguf_find_key(g, "test.f64")) == MN_GGUF_FLOAT64, "f64 type");

    /* type mismatches and absent keys */
    CHECK(mn_gguf_get_str(g, "llama.block_count", &s) == MN_EFORMAT, "u32 as str");
    CHECK(strstr(mn_last_error(), "llama.block_count") && strstr(mn_last_error(), "u32"), "msg: %s",
          mn_last_error());
    CHECK(mn_gguf_get_f32(g, "test.bool", &f) == MN_EFORMAT, "bool as f32");
    CHECK(mn_gguf_get_bool(g, "test.u8", &b) == MN_EFORMAT, "u8 as bool");
    CHECK(mn_gguf_get_u32(g, "arr.u32", &u32) == MN_EFORMAT, "array as u32");
    CHECK(mn_gguf_get_arr(g, "test.u8", NULL, NULL, NULL) == MN_EFORMAT, "scalar as array");
    CHECK(mn_gguf_get_u32(g, "no.such.key", &u32) == MN_ENOTFOUND, "absent key");
    CHECK(strstr(mn_last_error(), "no.such.key") != NULL, "msg: %s", mn_last_error());
    CHECK(mn_gguf_find_key(g, "no.such.key") == -1, "find absent");
    CHECK(mn_gguf_find_key(g, "test") == -1 && mn_gguf_find_key(g, "") == -1, "prefix/empty key");

    check_arr(g, "arr.u8", MN_GGUF_UINT8, arr_u8, 3, 1);
    check_arr(g, "arr.i8", MN_GGUF_INT8, arr_i8, 3, 1);
    check_arr(g, "arr.u16", MN_GGUF_UINT16, arr_u16, 3, 2);
    check_arr(g, "arr.i16", MN_GGUF_INT16, arr_i16, 2, 2);
    check_arr(g, "arr.u32", MN_GGUF_UINT32, arr_u32, 2, 4);
    check_arr(g, "arr.i32", MN_GGUF_INT32, arr_i32, 2, 4);
    check_arr(g, "arr.f32", MN_GGUF_FLOAT32, arr_f32, 3, 4);
    check_arr(g, "arr.bool", MN_GGUF_BOOL, arr_bool, 4, 1);
    check_arr(g, "arr.u64", MN_GGUF_UINT64, arr_u64, 2, 8);
    check_arr(g, "arr.i64", MN_GGUF_INT64, arr_i64, 3, 8);
    check_arr(g, "arr.f64", MN_GGUF_FLOAT64, arr_f64, 2, 8);
    check_arr(g, "arr.empty", MN_GGUF_FLOAT32, NULL, 0, 4);

    int64_t ks = mn_gguf_find_key(g, "arr.str");
    mn_gguf_vtype et = MN_GGUF_NTYPES;
    uint64_t n = 0;
    CHECK(ks >= 0 && mn_gguf_get_arr(g, "arr.str", &et, &n, NULL) == 0 && et == MN_GGUF_STRING &&
              n == 4,
          "string array header");
    CHECK(str_eq(mn_gguf_arr_str(g, ks, 0), "hello"), "str 0");
    CHECK(mn_gguf_arr_str(g, ks, 1).len == 0 && mn_gguf_arr_str(g, ks, 1).ptr, "str 1 empty");
    CHECK(str_eq(mn_gguf_arr_str(g, ks, 2), "\xc4\xa0world"), "str 2");
    s = mn_gguf_arr_str(g, ks, 3);
    CHECK(s.len == 3 && memcmp(s.ptr, "a\0b", 3) == 0, "str 3 with NUL");
    CHECK(mn_gguf_arr_str(g, ks, 4).ptr == NULL, "str out of range");
    CHECK(mn_gguf_arr_str(g, mn_gguf_find_key(g, "arr.u8"), 0).ptr == NULL, "arr_str on u8 array");
    CHECK(mn_gguf_arr_str(g, -1, 0).ptr == NULL, "arr_str bad kv");
    int64_t ks0 = mn_gguf_find_key(g, "arr.str0");
    CHECK(ks0 >= 0 && mn_gguf_arr_str(g, ks0, 0).ptr == NULL, "empty string array");

    /* tensors */
    const uint8_t *base = mn_gguf_base(g);
    uint64_t prev_end = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        const tspec *ts = &k_tensors[i];
        const mn_gguf_tensor *t = mn_gguf_find_tensor(g, ts->name);
        CHECK(t != NULL, "tensor %s not found", ts->name);
        if (!t) continue;
        CHECK(t == mn_gguf_tensor_at(g, i), "%s: index order", ts->name);
        CHECK(strcmp(t->name, ts->name) == 0, "%s: name", ts->name);
        CHECK(t->type == ts->type && t->n_dims == ts->n_dims, "%s: type/n_dims", ts->name);
        CHECK(memcmp(t->ne, ts->ne, sizeof t->ne) == 0, "%s: ne", ts->name);
        size_t nb = spec_bytes(ts);
        CHECK(t->nbytes == nb, "%s: nbytes %zu vs %zu", ts->name, t->nbytes, nb);
        CHECK(t->offset % (uint64_t)want_align == 0, "%s: offset %llu", ts->name,
              (unsigned long long)t->offset);
        CHECK(t->offset >= prev_end, "%s: offsets increase", ts->name);
        prev_end = t->offset + nb;
        CHECK((size_t)((const uint8_t *)t->data - base) + nb <= mn_gguf_file_size(g),
              "%s: data inside file", ts->name);
        CHECK(((uintptr_t)t->data - (uintptr_t)base) % (uintptr_t)want_align == 0,
              "%s: data aligned", ts->name);
        uint8_t *want = malloc(nb ? nb : 1);
        fill(want, nb, (unsigned)i);
        CHECK(nb == 0 || memcmp(t->data, want, nb) == 0, "%s: data differs", ts->name);
        free(want);
    }
    CHECK(mn_gguf_find_tensor(g, "missing") == NULL, "absent tensor");
    CHECK(mn_gguf_find_tensor(g, "t.f3") == NULL, "prefix tensor");
    CHECK(mn_gguf_tensor_at(g, -1) == NULL && mn_gguf_tensor_at(g, N_TENSORS) == NULL,
          "tensor_at range");
}

static void test_roundtrip(void) {
    char path[128];
    tmp_path(path, sizeof path, "rt.gguf");
    mn_gguf_writer *w = build_writer();
    int rc = mn_gguf_writer_write(w, path);
    CHECK(rc == 0, "write: %s", mn_last_error());
    mn_gguf_writer_free(w);

    mn_gguf *g = NULL;
    rc = mn_gguf_open(path, &g);
    CHECK(rc == 0, "open: %s", mn_last_error());
    if (g) {
        CHECK(((uintptr_t)mn_gguf_base(g) & 4095) == 0, "mapping page-aligned");
        CHECK(mn_gguf_file_size(g) % 32 == 0, "file padded to alignment");
        check_contents(g, 32);
        mn_gguf_free(g);
    }

    /* the same bytes through open_memory */
    size_t n;
    uint8_t *bytes = read_all(path, &n);
    CHECK(bytes != NULL, "read back");
    /* 32-byte-aligned heap copy so the alignment checks hold */
    void *al = NULL;
    if (bytes && posix_memalign(&al, 64, n) == 0) {
        memcpy(al, bytes, n);
        rc = mn_gguf_open_memory(al, n, &g);
        CHECK(rc == 0, "open_memory: %s", mn_last_error());
        if (rc == 0) {
            check_contents(g, 32);
            mn_gguf_free(g);
        }
        free(al);
    }

    /* Truncation at every length: must fail cleanly, except when only trailing
     * padding after the last tensor's data was cut. */
    if (bytes) {
        size_t need = 0;
        rc = mn_gguf_open_memory(bytes, n, &g);
        if (rc == 0) {
            for (int64_t i = 0; i < mn_gguf_n_tensors(g); i++) {
                const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
                size_t end = (size_t)((const uint8_t *)t->data - bytes) + t->nbytes;
                if (end > need) need = end;
            }
            mn_gguf_free(g);
        }
        CHECK(need > 0 && need < n, "test file has trailing padding (need %zu, size %zu)", need, n);
        int bad = 0;
        for (size_t len = 0; len < n; len++) {
            uint8_t *cut = malloc(len ? len : 1);
            memcpy(cut, bytes, len);
            g = NULL;
            rc = mn_gguf_open_memory(cut, len, &g);
            int ok_expected = len >= need;
            if ((rc == 0) != ok_expected || (rc != 0 && g != NULL) ||
                (rc != 0 && rc != MN_EFORMAT)) {
                if (bad++ < 5)
                    fprintf(stderr, "truncated at %zu/%zu: rc %d (%s)\n", len, n, rc,
                            mn_last_error());
            }
            if (rc == 0) mn_gguf_free(g);
            free(cut);
        }
        CHECK(bad == 0, "%d truncation lengths misbehaved", bad);

        /* and a few truncations through real files (mmap path) */
        const size_t cuts[] = {1, 3, 4, 7, 23, 24, 100, need - 1};
        char tp[128];
        tmp_path(tp, sizeof tp, "trunc.gguf");
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            write_bytes(tp, bytes, cuts[k]);
            rc = mn_gguf_open(tp, &g);
            CHECK(rc == MN_EFORMAT && g == NULL, "file truncated at %zu: rc %d", cuts[k], rc);
            CHECK(strstr(mn_last_error(), tp) != NULL, "message names the path: %s",
                  mn_last_error());
        }
        unlink(tp);
    }
    free(bytes);
    unlink(path);
}

static void test_writer_alignment_and_errors(void) {
    char path[128];
    tmp_path(path, sizeof path, "al.gguf");
    mn_gguf_writer *w = build_writer();
    CHECK(mn_gguf_writer_set_u32(w, "general.alignment", 64) == 0, "set alignment");
    CHECK(mn_gguf_writer_write(w, path) == 0, "write aligned 64: %s", mn_last_error());
    mn_gguf *g = NULL;
    CHECK(mn_gguf_open(path, &g) == 0, "open aligned 64: %s", mn_last_error());
    if (g) {
        check_contents(g, 64);
        mn_gguf_free(g);
    }
    CHECK(mn_gguf_writer_set_u32(w, "general.alignment", 3) == 0, "set alignment 3");
    CHECK(mn_gguf_writer_write(w, path) == MN_EINVAL, "alignment 3 must be rejected by the writer");
    mn_gguf_writer_free(w);
    unlink(path);

    /* write into a missing directory: clean MN_EIO */
    w = mn_gguf_writer_create();
    mn_gguf_writer_set_u32(w, "a", 1);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.gguf", g_dir);
    CHECK(mn_gguf_writer_write(w, bad) == MN_EIO, "write into missing dir");
    CHECK(strstr(mn_last_error(), "x.gguf") != NULL, "msg: %s", mn_last_error());

    /* argument validation */
    float d[64] = {0};
    int64_t ne1[1] = {33}, ne2[2] = {32, 1}, neg[2] = {4, -1}, ne5[5] = {1, 1, 1, 1, 1};
    CHECK(mn_gguf_writer_add_tensor(w, "q", MN_TYPE_Q8_0, 1, ne1, d) == MN_EINVAL, "ne0 not multiple of block");
    CHECK(strstr(mn_last_error(), "block size 32"), "msg: %s", mn_last_error());
    CHECK(mn_gguf_writer_add_tensor(w, "x", MN_TYPE_F32, 2, ne2, d) == 0, "add x");
    CHECK(mn_gguf_writer_add_tensor(w, "x", MN_TYPE_F32, 2, ne2, d) == MN_EINVAL, "dup tensor");
    CHECK(mn_gguf_writer_add_tensor(w, "y", MN_TYPE_F32, 2, neg, d) == MN_EINVAL, "negative ne");
    CHECK(mn_gguf_writer_add_tensor(w, "y", MN_TYPE_F32, 5, ne5, d) == MN_EINVAL, "n_dims 5");
    CHECK(mn_gguf_writer_add_tensor(w, "y", MN_TYPE_F32, 0, ne5, d) == MN_EINVAL, "n_dims 0");
    CHECK(mn_gguf_writer_add_tensor(w, "y", 4, 1, ne1, d) == MN_EINVAL, "unknown type 4");
    CHECK(mn_gguf_writer_add_tensor(w, "", MN_TYPE_F32, 1, ne1, d) == MN_EINVAL, "empty name");
    CHECK(mn_gguf_writer_add_tensor(w, "0123456789012345678901234567890123456789012345678901234567890123",
                                    MN_TYPE_F32, 1, ne1, d) == MN_EINVAL,
          "64-byte name");
    CHECK(mn_gguf_writer_add_tensor(w, "y", MN_TYPE_F32, 1, ne1, NULL) == MN_EINVAL, "NULL data");
    CHECK(mn_gguf_writer_set_arr(w, "s", MN_GGUF_STRING, 1, d) == MN_EINVAL, "set_arr string");
    CHECK(mn_gguf_writer_set_scalar(w, "s", MN_GGUF_ARRAY, d) == MN_EINVAL, "set_scalar array");
    CHECK(mn_gguf_writer_set_str(w, "", "x") == MN_EINVAL, "empty key");
    CHECK(mn_gguf_writer_set_str(w, "k", NULL) == MN_EINVAL, "NULL string");
    mn_gguf_writer_free(w);
    mn_gguf_writer_free(NULL);

    /* no stray temporary files left behind in the test dir */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", g_dir);
    CHECK(system(cmd) != 0, "temporary file left in %s", g_dir);
}

/* Writer with no tensors and no KVs: still a valid file. */
static void test_minimal(void) {
    char path[128];
    tmp_path(path, sizeof path, "min.gguf");
    mn_gguf_writer *w = mn_gguf_writer_create();
    CHECK(mn_gguf_writer_write(w, path) == 0, "write empty: %s", mn_last_error());
    mn_gguf_writer_free(w);
    mn_gguf *g = NULL;
    CHECK(mn_gguf_open(path, &g) == 0, "open empty: %s", mn_last_error());
    CHECK(g && mn_gguf_n_kv(g) == 0 && mn_gguf_n_tensors(g) == 0, "empty counts");
    CHECK(mn_gguf_find_key(g, "x") == -1 && mn_gguf_find_tensor(g, "x") == NULL, "empty lookups");
    mn_gguf_free(g);
    mn_gguf_free(NULL);
    unlink(path);

    /* v2 header is accepted */
    buf b = {0};
    b_hdr(&b, 2, 0, 1);
    b_kv_u32(&b, "k", 5);
    CHECK(mn_gguf_open_memory(b.p, b.n, &g) == 0, "v2: %s", mn_last_error());
    CHECK(g && mn_gguf_version(g) == 2, "v2 version");
    mn_gguf_free(g);
    free(b.p);
}

/* A large string array (tokenizer-sized) is indexed: random access is O(1). */
static void test_big_string_array(void) {
    enum { N = 49152 };
    char path[128];
    tmp_path(path, sizeof path, "tok.gguf");
    char **strs = malloc(N * sizeof *strs);
    for (int i = 0; i < N; i++) {
        strs[i] = malloc(16);
        snprintf(strs[i], 16, "tok%d", i);
    }
    mn_gguf_writer *w = mn_gguf_writer_create();
    CHECK(mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", N, (const char *const *)strs,
                                     NULL) == 0,
          "set tokens");
    CHECK(mn_gguf_writer_write(w, path) == 0, "write tokens: %s", mn_last_error());
    mn_gguf_writer_free(w);
    mn_gguf *g = NULL;
    CHECK(mn_gguf_open(path, &g) == 0, "open tokens: %s", mn_last_error());
    if (g) {
        int64_t kv = mn_gguf_find_key(g, "tokenizer.ggml.tokens");
        int bad = 0;
        clock_t t0 = clock();
        for (int r = 0; r < 20; r++)
            for (int i = N - 1; i >= 0; i -= 7) bad += !str_eq(mn_gguf_arr_str(g, kv, (uint64_t)i), strs[i]);
        double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
        CHECK(bad == 0, "%d token strings differ", bad);
        CHECK(sec < 2.0, "140k indexed lookups took %.3f s", sec);
        mn_gguf_free(g);
    }
    for (int i = 0; i < N; i++) free(strs[i]);
    free(strs);
    unlink(path);
}

/* ---- hostile files ---- */

static void test_bad_files(void) {
    mn_gguf *g = (mn_gguf *)1;
    char path[128];
    int rc;

    tmp_path(path, sizeof path, "does-not-exist.gguf");
    rc = mn_gguf_open(path, &g);
    CHECK(rc == MN_ENOTFOUND && g == NULL, "missing file rc %d", rc);
    CHECK(strstr(mn_last_error(), "does-not-exist.gguf") != NULL, "msg: %s", mn_last_error());

    tmp_path(path, sizeof path, "empty.gguf");
    write_bytes(path, "", 0);
    rc = mn_gguf_open(path, &g);
    CHECK(rc == MN_EFORMAT && g == NULL, "empty file rc %d", rc);
    CHECK(strstr(mn_last_error(), "empty") != NULL, "msg: %s", mn_last_error());
    unlink(path);

    rc = mn_gguf_open(g_dir, &g);
    CHECK(rc < 0 && g == NULL, "directory rc %d", rc);
    CHECK(strstr(mn_last_error(), "directory") != NULL, "msg: %s", mn_last_error());

    CHECK(mn_gguf_open(NULL, &g) == MN_EINVAL, "NULL path");
    CHECK(mn_gguf_open_memory(NULL, 10, &g) == MN_EINVAL, "NULL buffer");
    CHECK(mn_gguf_open_memory("", 0, &g) == MN_EFORMAT, "empty buffer");

    /* magic / version */
    buf b = {0};
    b_bytes(&b, "GGML", 4);
    b_u32(&b, 3);
    b_u64(&b, 0);
    b_u64(&b, 0);
    expect_bad(&b, MN_EFORMAT, "'GGML'", "wrong magic");
    b_bytes(&b, "\x7f" "ELF", 4);
    b_zeros(&b, 20);
    expect_bad(&b, MN_EFORMAT, "\\x7fELF", "ELF magic");
    b_bytes(&b, "FUGG", 4);
    b_zeros(&b, 20);
    expect_bad(&b, MN_EFORMAT, "big-endian", "byte-swapped magic");
    b_hdr(&b, 1, 0, 0);
    expect_bad(&b, MN_EUNSUPPORTED, "version 1", "version 1");
    b_hdr(&b, 99, 0, 0);
    expect_bad(&b, MN_EUNSUPPORTED, "version 99", "version 99");
    b_hdr(&b, 0x03000000u, 0, 0);
    expect_bad(&b, MN_EUNSUPPORTED, "big-endian", "big-endian version");
    b_bytes(&b, "GGUF\x03\x00", 6);
    expect_bad(&b, MN_EFORMAT, "version", "truncated version");

    /* huge counts fail fast, before any allocation sized from them */
    b_hdr(&b, 3, 1ull << 60, 0);
    b_zeros(&b, 64);
    expect_bad(&b, MN_EFORMAT, "1152921504606846976 tensors", "2^60 tensors");
    b_hdr(&b, 3, 0, 1ull << 60);
    b_zeros(&b, 64);
    expect_bad(&b, MN_EFORMAT, "1152921504606846976 metadata entries", "2^60 kvs");
    b_hdr(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_bad(&b, MN_EFORMAT, "metadata entries", "max counts");
    b_hdr(&b, 3, 2, 0); /* 2 tensors claimed, bytes for 1 */
    b_zeros(&b, 40);
    expect_bad(&b, MN_EFORMAT, "2 tensors", "count slightly too large");

    /* huge string length in a key, in a value */
    b_hdr(&b, 3, 0, 1);
    b_u64(&b, 1ull << 62);
    b_zeros(&b, 16);
    expect_bad(&b, MN_EFORMAT, "string length 4611686018427387904", "huge key length");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.name");
    b_u32(&b, MN_GGUF_STRING);
    b_u64(&b, UINT64_MAX);
    b_zeros(&b, 4);
    expect_bad(&b, MN_EFORMAT, "general.name", "huge value string");

    /* huge arrays of every element kind */
    const uint32_t kinds[] = {MN_GGUF_UINT8, MN_GGUF_FLOAT64, MN_GGUF_STRING, MN_GGUF_ARRAY};
    for (int k = 0; k < 4; k++) {
        char label[64];
        snprintf(label, sizeof label, "huge array of %u", kinds[k]);
        b_hdr(&b, 3, 0, 1);
        b_str(&b, "tokenizer.ggml.tokens");
        b_u32(&b, MN_GGUF_ARRAY);
        b_u32(&b, kinds[k]);
        b_u64(&b, 1ull << 61);
        b_zeros(&b, 32);
        expect_bad(&b, MN_EFORMAT, "declares 2305843009213693952", label);
    }
    /* string array whose count fits but whose strings run off the end */
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, MN_GGUF_ARRAY);
    b_u32(&b, MN_GGUF_STRING);
    b_u64(&b, 3);
    b_str(&b, "ab");
    b_u64(&b, 1000);
    b_zeros(&b, 8);
    expect_bad(&b, MN_EFORMAT, "arr", "string in array past end");

    /* nested arrays: a few levels are fine, a depth bomb is not */
    {
        /* [[1,2],[3]] of u16, then a string array nested in an array */
        b_hdr(&b, 3, 0, 2);
        b_str(&b, "nested");
        b_u32(&b, MN_GGUF_ARRAY);
        b_u32(&b, MN_GGUF_ARRAY);
        b_u64(&b, 2);
        b_u32(&b, MN_GGUF_UINT16);
        b_u64(&b, 2);
        b_u32(&b, 0x00020001u);
        b_u32(&b, MN_GGUF_UINT16);
        b_u64(&b, 1);
        b_bytes(&b, "\x03\x00", 2);
        b_str(&b, "nested.str");
        b_u32(&b, MN_GGUF_ARRAY);
        b_u32(&b, MN_GGUF_ARRAY);
        b_u64(&b, 1);
        b_u32(&b, MN_GGUF_STRING);
        b_u64(&b, 2);
        b_str(&b, "x");
        b_str(&b, "yz");
        g = NULL;
        rc = mn_gguf_open_memory(b.p, b.n, &g);
        CHECK(rc == 0, "nested arrays: %s", mn_last_error());
        if (g) {
            mn_gguf_vtype et = MN_GGUF_NTYPES;
            uint64_t n;
            CHECK(mn_gguf_get_arr(g, "nested", &et, &n, NULL) == 0 && et == MN_GGUF_ARRAY && n == 2,
                  "nested header");
            CHECK(mn_gguf_arr_str(g, mn_gguf_find_key(g, "nested.str"), 0).ptr == NULL,
                  "arr_str on array of arrays");
            mn_gguf_free(g);
        }
        free(b.p);
        memset(&b, 0, sizeof b);
    }
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "bomb");
    b_u32(&b, MN_GGUF_ARRAY);
    for (int d = 0; d < 100000; d++) {
        b_u32(&b, MN_GGUF_ARRAY);
        b_u64(&b, 1);
    }
    b_u32(&b, MN_GGUF_UINT8);
    b_u64(&b, 0);
    expect_bad(&b, MN_EFORMAT, "nested", "depth bomb");

    /* unknown value types */
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_zeros(&b, 16);
    expect_bad(&b, MN_EFORMAT, "unknown value type 13", "value type 13");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 0xffffffffu);
    b_zeros(&b, 16);
    expect_bad(&b, MN_EFORMAT, "unknown value type", "value type ~0");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, MN_GGUF_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 1);
    b_zeros(&b, 16);
    expect_bad(&b, MN_EFORMAT, "element type 77", "array element type 77");

    /* keys: duplicate, empty, embedded NUL */
    b_hdr(&b, 3, 0, 3);
    b_kv_u32(&b, "a.b", 1);
    b_kv_u32(&b, "c", 2);
    b_kv_u32(&b, "a.b", 3);
    expect_bad(&b, MN_EFORMAT, "duplicate metadata key 'a.b'", "duplicate key");
    b_hdr(&b, 3, 0, 1);
    b_kv_u32(&b, "", 1);
    expect_bad(&b, MN_EFORMAT, "empty", "empty key");
    b_hdr(&b, 3, 0, 1);
    b_u64(&b, 3);
    b_bytes(&b, "a\0b", 3);
    b_u32(&b, MN_GGUF_UINT8);
    b_u8(&b, 1);
    expect_bad(&b, MN_EFORMAT, "NUL", "NUL in key");

    /* alignment values */
    const uint32_t bad_align[] = {0, 3, 48, 0x80000001u};
    for (int k = 0; k < 4; k++) {
        char label[64];
        snprintf(label, sizeof label, "alignment %u", bad_align[k]);
        b_hdr(&b, 3, 0, 1);
        b_kv_u32(&b, "general.alignment", bad_align[k]);
        expect_bad(&b, MN_EFORMAT, "power of two", label);
    }
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, MN_GGUF_UINT64);
    b_u64(&b, 32);
    expect_bad(&b, MN_EFORMAT, "general.alignment has type u64", "alignment as u64");

    /* tensor infos */
    const uint64_t ne_ok[4] = {32, 2, 1, 1};
    struct {
        uint32_t nd;
        uint64_t ne[5];
        uint32_t type;
        uint64_t off;
        int rc;
        const char *msg;
        const char *label;
    } bad_t[] = {
        {0, {0}, MN_TYPE_F32, 0, MN_EFORMAT, "n_dims is 0", "n_dims 0"},
        {5, {1, 1, 1, 1, 1}, MN_TYPE_F32, 0, MN_EFORMAT, "n_dims is 5", "n_dims 5"},
        {0xffffffffu, {1}, MN_TYPE_F32, 0, MN_EFORMAT, "n_dims is 4294967295", "n_dims ~0"},
        {2, {4, (uint64_t)-1}, MN_TYPE_F32, 0, MN_EFORMAT, "ne[1] = -1 is negative", "ne -1"},
        {2, {1ull << 40, 1ull << 40}, MN_TYPE_F32, 0, MN_EFORMAT, "overflows", "ne product"},
        {4, {1ull << 20, 1ull << 20, 1ull << 20, 1ull << 20}, MN_TYPE_F32, 0, MN_EFORMAT,
         "overflows", "ne product 4d"},
        {2, {1ull << 32, 1ull << 30}, MN_TYPE_F32, 0, MN_EFORMAT, "overflow", "nbytes overflow"},
        {1, {1ull << 40}, MN_TYPE_F32, 0, MN_EFORMAT, "past the end", "huge tensor"},
        {1, {32}, 99, 0, MN_EFORMAT, "type 99 is unknown", "type 99"},
        {1, {32}, 0xffffffffu, 0, MN_EFORMAT, "unknown", "type ~0"},
        {1, {32}, 16, 0, MN_EUNSUPPORTED, "type 16 is not supported", "type 16 (iq2_xxs)"},
        {1, {32}, 4, 0, MN_EUNSUPPORTED, "not supported", "type 4 (removed q4_2)"},
        {2, {33, 1}, MN_TYPE_Q8_0, 0, MN_EFORMAT, "not a multiple of the block size 32", "ne0 q8_0"},
        {1, {128}, MN_TYPE_Q4_K, 0, MN_EFORMAT, "block size 256", "ne0 q4_k"},
        {2, {32, 2}, MN_TYPE_F32, 4, MN_EFORMAT, "not a multiple of the alignment 32", "misaligned"},
        {2, {32, 2}, MN_TYPE_F32, 1ull << 40, MN_EFORMAT, "past the end", "offset past EOF"},
        {2, {32, 2}, MN_TYPE_F32, UINT64_MAX - 31, MN_EFORMAT, "lies past the end", "offset ~0"},
        {2, {32, 3}, MN_TYPE_F32, 0, MN_EFORMAT, "past the end", "data 1 row too long"},
    };
    for (size_t k = 0; k < sizeof bad_t / sizeof bad_t[0]; k++) {
        b_hdr(&b, 3, 1, 1);
        b_kv_u32(&b, "general.alignment", 32);
        b_tinfo(&b, "blk.3.attn_q.weight", bad_t[k].nd, bad_t[k].ne, bad_t[k].type, bad_t[k].off);
        b_pad(&b, 32);
        b_zeros(&b, 256); /* room for exactly a 32x2 f32 tensor */
        expect_bad(&b, bad_t[k].rc, bad_t[k].msg, bad_t[k].label);
    }
    /* the good variant of that file parses, proving the loop tests one fault each */
    b_hdr(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 32);
    b_tinfo(&b, "blk.3.attn_q.weight", 2, ne_ok, MN_TYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    g = NULL;
    CHECK(mn_gguf_open_memory(b.p, b.n, &g) == 0, "baseline tensor file: %s", mn_last_error());
    mn_gguf_free(g);
    free(b.p);
    memset(&b, 0, sizeof b);
    /* error message names the tensor and the byte range */
    b_hdr(&b, 3, 1, 0);
    b_tinfo(&b, "blk.3.attn_q.weight", 2, ne_ok, MN_TYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 200);
    expect_bad(&b, MN_EFORMAT, "tensor 'blk.3.attn_q.weight': data [", "message format");

    /* overlapping tensors, duplicate names, empty name */
    const uint64_t ne_a[1] = {32}; /* 128 bytes */
    b_hdr(&b, 3, 2, 0);
    b_tinfo(&b, "a", 1, ne_a, MN_TYPE_F32, 0);
    b_tinfo(&b, "b", 1, ne_a, MN_TYPE_F32, 96);
    b_pad(&b, 32);
    b_zeros(&b, 512);
    expect_bad(&b, MN_EFORMAT, "overlap", "overlapping tensors");
    b_hdr(&b, 3, 3, 0); /* overlap detected regardless of info order */
    b_tinfo(&b, "c", 1, ne_a, MN_TYPE_F32, 256);
    b_tinfo(&b, "b", 1, ne_a, MN_TYPE_F32, 128);
    b_tinfo(&b, "a", 1, ne_a, MN_TYPE_F32, 160);
    b_pad(&b, 32);
    b_zeros(&b, 512);
    expect_bad(&b, MN_EFORMAT, "overlap", "overlapping tensors out of order");
    b_hdr(&b, 3, 2, 0);
    b_tinfo(&b, "a", 1, ne_a, MN_TYPE_F32, 0);
    b_tinfo(&b, "a", 1, ne_a, MN_TYPE_F32, 128);
    b_pad(&b, 32);
    b_zeros(&b, 512);
    expect_bad(&b, MN_EFORMAT, "duplicate tensor name 'a'", "duplicate tensor");
    b_hdr(&b, 3, 1, 0);
    b_tinfo(&b, "", 1, ne_a, MN_TYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 512);
    expect_bad(&b, MN_EFORMAT, "empty name", "empty tensor name");
    /* adjacent tensors (touching, not overlapping) are fine, zero-size ones may share offsets */
    const uint64_t ne0[2] = {0, 4};
    b_hdr(&b, 3, 4, 0);
    b_tinfo(&b, "b", 1, ne_a, MN_TYPE_F32, 128);
    b_tinfo(&b, "a", 1, ne_a, MN_TYPE_F32, 0);
    b_tinfo(&b, "z1", 2, ne0, MN_TYPE_F32, 0);
    b_tinfo(&b, "z2", 2, ne0, MN_TYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    g = NULL;
    CHECK(mn_gguf_open_memory(b.p, b.n, &g) == 0, "adjacent tensors: %s", mn_last_error());
    if (g) {
        const mn_gguf_tensor *z = mn_gguf_find_tensor(g, "z1");
        CHECK(z && z->nbytes == 0 && z->ne[0] == 0 && z->ne[1] == 4, "zero-size tensor");
        mn_gguf_free(g);
    }
    free(b.p);
}

/* ---- the real model ---- */

static void test_real_model(void) {
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        return;
    }
    mn_gguf *g = NULL;
    clock_t t0 = clock();
    int rc = mn_gguf_open(path, &g);
    double ms = 1000.0 * (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(rc == 0, "open %s: %s", path, mn_last_error());
    if (!g) return;
    CHECK(mn_gguf_version(g) == 3, "version %u", mn_gguf_version(g));
    CHECK(mn_gguf_n_tensors(g) == 272, "tensors %lld", (long long)mn_gguf_n_tensors(g));
    mn_gguf_str s = {0};
    CHECK(mn_gguf_get_str(g, "general.architecture", &s) == 0 && str_eq(s, "llama"), "arch");
    uint32_t nl = 0;
    CHECK(mn_gguf_get_u32(g, "llama.block_count", &nl) == 0 && nl == 30, "block_count %u", nl);
    int64_t kv = mn_gguf_find_key(g, "tokenizer.ggml.tokens");
    mn_gguf_vtype et = MN_GGUF_NTYPES;
    uint64_t n = 0;
    CHECK(kv >= 0 && mn_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL) == 0 &&
              et == MN_GGUF_STRING && n == 49152,
          "tokens: type %d n %llu", et, (unsigned long long)n);
    if (kv >= 0 && n == 49152) {
        uint64_t total = 0;
        for (uint64_t i = 0; i < n; i++) total += mn_gguf_arr_str(g, kv, i).len;
        CHECK(total > n, "token bytes %llu", (unsigned long long)total);
        CHECK(mn_gguf_arr_str(g, kv, n).ptr == NULL, "token out of range");
    }
    uint64_t nm = 0;
    if (mn_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, NULL) == 0)
        CHECK(et == MN_GGUF_STRING && nm > 0, "merges type %d n %llu", et, (unsigned long long)nm);
    const mn_gguf_tensor *t = mn_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL, "token_embd.weight missing");
    if (t) {
        CHECK(t->type == MN_TYPE_Q8_0, "token_embd type %d", t->type);
        CHECK(t->n_dims == 2 && t->ne[0] == 576 && t->ne[1] == 49152, "token_embd ne %lld x %lld",
              (long long)t->ne[0], (long long)t->ne[1]);
        CHECK(t->nbytes == mn_type_row_bytes(t->type, 576) * 49152, "token_embd nbytes");
    }
    int found = 0;
    for (int64_t i = 0; i < mn_gguf_n_tensors(g); i++) {
        const mn_gguf_tensor *ti = mn_gguf_tensor_at(g, i);
        found += mn_gguf_find_tensor(g, ti->name) == ti;
    }
    CHECK(found == 272, "find_tensor round trip %d", found);
    CHECK(mn_gguf_find_tensor(g, "blk.29.attn_q.weight") != NULL, "last block present");
    CHECK(mn_gguf_find_tensor(g, "blk.30.attn_q.weight") == NULL, "no block 30");
    printf("real model: %lld kv, %lld tensors, opened in %.1f ms\n", (long long)mn_gguf_n_kv(g),
           (long long)mn_gguf_n_tensors(g), ms);
    mn_gguf_free(g);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mnemo_gguf_XXXXXX");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp failed: %s\n", strerror(errno));
        return 1;
    }
    test_roundtrip();
    test_writer_alignment_and_errors();
    test_minimal();
    test_big_string_array();
    test_bad_files();
    test_real_model();
    rmdir(g_dir);
    TEST_MAIN_END();
}
