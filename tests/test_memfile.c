/* test_memfile.c - memory files: round trips (KV / embedding, f16 / f32),
 * hostile inputs (every truncation, every single-byte corruption, forged
 * header fields), model/adapter mismatch, and an engine round trip: KV cells
 * saved to a memory file and appended back reproduce direct decoding.
 */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "kernels/quant.h"
#include "memory/memfile.h"
#include "model/model.h"
#include "test.h"

static char g_dir[64];

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    if (p && sz > 0 && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return k == n ? 0 : -1;
}

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(uint32_t)(*s >> 40) / (float)(1u << 24)) * 8.0f - 4.0f;
}

static mn_memfile_info make_info(mn_memfile_kind kind, int32_t nl, int32_t m, int32_t dim) {
    mn_memfile_info in;
    memset(&in, 0, sizeof in);
    in.kind = kind;
    in.n_layer = nl;
    in.n_slots = m;
    in.dim = dim;
    in.n_tokens = (int64_t)m * 8 + 3;
    in.model_hash = 0x1122334455667788ull;
    in.adapter_hash = 0x99aabbccddeeff00ull;
    in.ratio = 8.0f;
    in.created = 1700000000;
    snprintf(in.model_name, sizeof in.model_name, "SmolLM2-135M-Instruct");
    snprintf(in.compressor, sizeof in.compressor, "uio");
    snprintf(in.title, sizeof in.title, "Pride and Prejudice, ch. 1");
    return in;
}

/* Opens an exact-size heap copy (ASan sees over-reads) expecting failure. */
static int expect_bad_mem(const void *p, size_t n, int want_rc, const char *want_msg, const char *label) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    mn_memfile *mf = (mn_memfile *)1;
    int rc = mn_memfile_open_memory(copy, n, &mf);
    const char *msg = mn_last_error();
    int ok = (want_rc ? rc == want_rc : rc < 0) && mf == NULL && (!want_msg || strstr(msg, want_msg)) && msg[0];
    CHECK(ok, "%s: rc %d, want %d, message '%s' (want '%s')", label, rc, want_rc, msg, want_msg ? want_msg : "");
    if (getenv("MNEMO_TEST_VERBOSE")) printf("  %-24s %s\n", label, msg);
    if (rc == 0) mn_memfile_free(mf);
    free(copy);
    return ok;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void fix_hsum(uint8_t *b) { put64(b + 504, mn_memfile_fnv1a64(MN_FNV64_INIT, b, 504)); }

static void test_round_trips(void) {
    const int32_t NL = 3, M = 5, D = 8;
    size_t ne = (size_t)NL * M * D;
    float *k = malloc(ne * 4), *v = malloc(ne * 4), *k2 = malloc(ne * 4), *v2 = malloc(ne * 4);
    uint64_t s = 42;
    for (size_t i = 0; i < ne; i++) k[i] = frand(&s), v[i] = frand(&s);
    k[0] = 65504.0f; /* largest f16 */
    k[1] = -1e-7f;   /* f16 subnormal */
    k[2] = 0.0f;
    char path[128];
    tmp_path(path, sizeof path, "kv.mem");
    for (int et = 0; et <= 1; et++) {
        mn_memfile_info in = make_info(MN_MEMFILE_KV, NL, M, D);
        in.flags = et ? MN_MEMFILE_K_ROPE : 0;
        CHECK(mn_memfile_block_elems(&in) == ne, "block elems");
        int rc = mn_memfile_write(path, &in, k, v, et);
        CHECK(rc == 0, "write kv et %d: %s", et, mn_last_error());
        struct stat st;
        CHECK(stat(path, &st) == 0 && (size_t)st.st_size == 512 + 2 * ne * (et ? 2 : 4), "file size %lld",
              (long long)st.st_size);
        mn_memfile *mf = NULL;
        rc = mn_memfile_open(path, &mf);
        CHECK(rc == 0 && mf, "open kv et %d: %s", et, mn_last_error());
        if (!mf) continue;
        const mn_memfile_info *o = mn_memfile_get_info(mf);
        CHECK(o->kind == MN_MEMFILE_KV && o->elem_type == et && o->n_layer == NL && o->n_slots == M && o->dim == D,
              "shape");
        CHECK(o->flags == in.flags && o->n_tokens == in.n_tokens && o->model_hash == in.model_hash &&
                  o->adapter_hash == in.adapter_hash && o->ratio == 8.0f && o->created == 1700000000,
              "facts");
        CHECK(!strcmp(o->model_name, in.model_name) && !strcmp(o->compressor, "uio") && !strcmp(o->title, in.title),
              "strings");
        size_t pb;
        const void *pl = mn_memfile_payload(mf, &pb);
        CHECK(pb == 2 * ne * (et ? 2 : 4) && ((uintptr_t)pl % 64) == 0, "payload %zu bytes, aligned", pb);
        CHECK(o->checksum == mn_memfile_fnv1a64(MN_FNV64_INIT, pl, pb), "checksum field");
        memset(k2, 0xff, ne * 4);
        memset(v2, 0xff, ne * 4);
        CHECK(mn_memfile_read_kv(mf, k2, v2) == 0, "read kv");
        size_t bad = 0;
        for (size_t i = 0; i < ne; i++) {
            float wk = et ? mn_fp16_to_fp32(mn_fp32_to_fp16(k[i])) : k[i];
            float wv = et ? mn_fp16_to_fp32(mn_fp32_to_fp16(v[i])) : v[i];
            if (memcmp(&wk, &k2[i], 4) || memcmp(&wv, &v2[i], 4)) bad++;
        }
        CHECK(bad == 0, "et %d: %zu elements differ from the expected rounding", et, bad);
        CHECK(mn_memfile_read_embd(mf, k2) == MN_EINVAL && strstr(mn_last_error(), "KV"), "read_embd on KV");
        CHECK(mn_memfile_check_model(mf, in.model_hash, in.adapter_hash) == 0, "matching model");
        rc = mn_memfile_check_model(mf, 0x1234, in.adapter_hash);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "model 'SmolLM2-135M-Instruct'") &&
                  strstr(mn_last_error(), "1122334455667788") && strstr(mn_last_error(), "not this one"),
              "model mismatch: %s", mn_last_error());
        rc = mn_memfile_check_model(mf, in.model_hash, 0);
        CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "adapter") && strstr(mn_last_error(), "uio"),
              "adapter mismatch: %s", mn_last_error());
        if (getenv("MNEMO_TEST_VERBOSE")) printf("  %s\n", mn_last_error());
        mn_memfile_free(mf);
    }

    /* embedding kind */
    tmp_path(path, sizeof path, "embd.mem");
    const int32_t EM = 4, ED = 24;
    size_t ee = (size_t)EM * ED;
    for (int et = 0; et <= 1; et++) {
        mn_memfile_info in = make_info(MN_MEMFILE_EMBD, 0, EM, ED);
        CHECK(mn_memfile_write(path, &in, k, v, et) == MN_EINVAL, "embedding with V refused");
        CHECK(mn_memfile_write(path, &in, k, NULL, et) == 0, "write embd: %s", mn_last_error());
        mn_memfile *mf = NULL;
        CHECK(mn_memfile_open(path, &mf) == 0, "open embd: %s", mn_last_error());
        if (!mf) continue;
        const mn_memfile_info *o = mn_memfile_get_info(mf);
        CHECK(o->kind == MN_MEMFILE_EMBD && o->n_layer == 0 && o->n_slots == EM && o->dim == ED, "embd shape");
        memset(k2, 0xff, ee * 4);
        CHECK(mn_memfile_read_embd(mf, k2) == 0, "read embd");
        size_t bad = 0;
        for (size_t i = 0; i < ee; i++) {
            float w = et ? mn_fp16_to_fp32(mn_fp32_to_fp16(k[i])) : k[i];
            if (memcmp(&w, &k2[i], 4)) bad++;
        }
        CHECK(bad == 0, "embd et %d: %zu differ", et, bad);
        CHECK(mn_memfile_read_kv(mf, k2, v2) == MN_EINVAL, "read_kv on embedding");
        mn_memfile_free(mf);
    }

    /* zero slots: a valid, empty memory */
    {
        mn_memfile_info in = make_info(MN_MEMFILE_KV, 2, 0, 8);
        CHECK(mn_memfile_write(path, &in, NULL, NULL, MN_MEMFILE_F16) == 0, "empty memory: %s", mn_last_error());
        mn_memfile *mf = NULL;
        CHECK(mn_memfile_open(path, &mf) == 0 && mn_memfile_get_info(mf)->n_slots == 0, "open empty memory");
        CHECK(mf && mn_memfile_read_kv(mf, NULL, NULL) == 0, "read empty");
        mn_memfile_free(mf);
    }

    /* write-side validation */
    {
        mn_memfile_info in = make_info(MN_MEMFILE_KV, NL, M, D);
        CHECK(mn_memfile_write(path, &in, k, v, 7) == MN_EINVAL && strstr(mn_last_error(), "element type 7"),
              "write elem type 7: %s", mn_last_error());
        float save = v[5];
        v[5] = NAN;
        CHECK(mn_memfile_write(path, &in, k, v, 0) == MN_ERANGE && strstr(mn_last_error(), "V element 5"),
              "NaN refused: %s", mn_last_error());
        v[5] = 70000.0f;
        CHECK(mn_memfile_write(path, &in, k, v, 1) == MN_ERANGE && strstr(mn_last_error(), "f16"),
              "f16 overflow refused: %s", mn_last_error());
        CHECK(mn_memfile_write(path, &in, k, v, 0) == 0, "70000 fits f32");
        v[5] = save;
        CHECK(mn_memfile_write(path, &in, k, NULL, 0) == MN_EINVAL, "KV without V");
        in.n_layer = 0;
        CHECK(mn_memfile_write(path, &in, k, v, 0) == MN_EINVAL, "KV with 0 layers");
        in = make_info(MN_MEMFILE_KV, NL, M, D);
        memset(in.compressor, 'x', sizeof in.compressor); /* not NUL-terminated within 64 */
        CHECK(mn_memfile_write(path, &in, k, v, 0) == MN_EINVAL, "overlong compressor name");
        /* title truncated at a UTF-8 boundary: 127 x "é" (2 bytes) + "é" straddling byte 255 */
        in = make_info(MN_MEMFILE_KV, NL, M, D);
        char title[600];
        size_t tl = 0;
        title[tl++] = 'a';
        while (tl + 2 < sizeof title) title[tl++] = (char)0xC3, title[tl++] = (char)0xA9;
        title[tl] = 0;
        memcpy(in.title, title, sizeof in.title - 1);
        in.title[sizeof in.title - 1] = 0; /* info.title itself is bounded; truncation happens on the field */
        CHECK(mn_memfile_write(path, &in, k, v, 0) == 0, "long title");
        mn_memfile *mf = NULL;
        CHECK(mn_memfile_open(path, &mf) == 0, "open long title: %s", mn_last_error());
        if (mf) {
            size_t L = strlen(mn_memfile_get_info(mf)->title);
            CHECK(L == 255 && ((uint8_t)mn_memfile_get_info(mf)->title[L - 1] == 0xA9), "title length %zu", L);
            mn_memfile_free(mf);
        }
        /* overwrite is atomic: no temporary files left in the directory */
        DIR *d = opendir(g_dir);
        int tmp_left = 0;
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (strstr(de->d_name, ".tmp.")) tmp_left++;
        if (d) closedir(d);
        CHECK(tmp_left == 0, "%d temporary files left", tmp_left);
        char bad[160];
        snprintf(bad, sizeof bad, "%s/no/such/dir/x.mem", g_dir);
        CHECK(mn_memfile_write(bad, &in, k, v, 0) == MN_EIO, "write into a missing directory");
    }

    /* version 4: the exact part's q8_0 cells, copied as bytes, at the payload's end; refused without an
     * exact part, with a dim not divisible by 32, or one byte short */
    {
        const int32_t nl = 2, dim = 64, nx = 8, seg = 4, rep = 2;
        mn_memfile_info in = make_info(MN_MEMFILE_KV, nl, 4, dim);
        in.n_exact = nx, in.exact_seg = seg, in.exact_rep = rep;
        in.flags = MN_MEMFILE_EXACT_KV;
        const size_t e = mn_memfile_block_elems(&in), ke = mn_memfile_exact_key_elems(&in);
        const size_t cb = 2 * (size_t)nx * nl * (dim / 32) * 34;
        float *kk = calloc(e, sizeof(float)), *vv = calloc(e, sizeof(float)), *kr = calloc(ke, sizeof(float));
        uint8_t *cells = malloc(cb);
        int32_t ids[8], raw[1] = {0};
        for (int i = 0; i < nx; i++) ids[i] = 10 + i;
        for (size_t i = 0; i < cb; i++) cells[i] = (uint8_t)(i * 131 + 7);
        in.n_raw = 0;
        CHECK(mn_memfile_write_exact(path, &in, kk, vv, raw, ids, kr, kr, cells, MN_MEMFILE_F16) == 0, "write v4: %s",
              mn_last_error());
        size_t n4 = 0;
        uint8_t *b4 = read_all(path, &n4);
        CHECK(b4 && b4[8] == 4, "format version 4");
        mn_memfile *mf = NULL;
        CHECK(mn_memfile_open(path, &mf) == 0, "open v4: %s", mn_last_error());
        size_t got = 0;
        const void *pc = mf ? mn_memfile_exact_cells(mf, &got) : NULL;
        CHECK(pc && got == cb && !memcmp(pc, cells, cb), "the cells read back as written (%zu of %zu bytes)", got, cb);
        CHECK(mf && (mn_memfile_get_info(mf)->flags & MN_MEMFILE_EXACT_KV), "flag kept");
        int32_t back[8];
        CHECK(mf && mn_memfile_read_exact(mf, back, NULL, NULL) == 0 && !memcmp(back, ids, sizeof ids),
              "the ids still read (the cells come after the keys)");
        mn_memfile_free(mf);
        if (b4) {
            CHECK(expect_bad_mem(b4, n4 - 1, MN_EFORMAT, "truncated", "v4 one byte short"), "v4 truncated");
            b4[n4 - 1] ^= 1;
            CHECK(expect_bad_mem(b4, n4, MN_EFORMAT, "checksum", "v4 cell byte flipped"), "v4 corrupt cell");
        }
        free(b4);
        /* without cells the same memory is version 3 */
        in.flags = 0;
        CHECK(mn_memfile_write_exact(path, &in, kk, vv, raw, ids, kr, kr, NULL, MN_MEMFILE_F16) == 0, "write v3");
        b4 = read_all(path, &n4);
        CHECK(b4 && b4[8] == 3, "format version 3 without cells");
        free(b4);
        in.flags = MN_MEMFILE_EXACT_KV;
        CHECK(mn_memfile_write_exact(path, &in, kk, vv, raw, ids, kr, kr, NULL, MN_MEMFILE_F16) == MN_EINVAL,
              "the flag without cells: refused");
        mn_memfile_info in2 = make_info(MN_MEMFILE_KV, nl, 4, dim);
        in2.flags = MN_MEMFILE_EXACT_KV;
        CHECK(mn_memfile_write_exact(path, &in2, kk, vv, raw, NULL, NULL, NULL, cells, MN_MEMFILE_F16) == MN_EINVAL &&
                  strstr(mn_last_error(), "exact part"),
              "cells without an exact part: %s", mn_last_error());
        free(kk), free(vv), free(kr), free(cells);
    }
    free(k);
    free(v);
    free(k2);
    free(v2);
}

static void test_hostile(void) {
    const int32_t NL = 2, M = 3, D = 8;
    size_t ne = (size_t)NL * M * D;
    float *k = malloc(ne * 4), *v = malloc(ne * 4);
    uint64_t s = 7;
    for (size_t i = 0; i < ne; i++) k[i] = frand(&s), v[i] = frand(&s);
    char path[128];
    tmp_path(path, sizeof path, "small.mem");
    mn_memfile_info in = make_info(MN_MEMFILE_KV, NL, M, D);
    CHECK(mn_memfile_write(path, &in, k, v, MN_MEMFILE_F16) == 0, "write small");
    size_t n = 0;
    uint8_t *b = read_all(path, &n);
    CHECK(b && n == 512 + 2 * ne * 2, "small file %zu bytes", n);
    if (!b) return;
    mn_memfile *mf = NULL;
    CHECK(mn_memfile_open_memory(b, n, &mf) == 0, "intact copy opens: %s", mn_last_error());
    mn_memfile_free(mf);

    /* every truncation length */
    int all = 1;
    for (size_t len = 0; len < n && all; len++) {
        char label[48];
        snprintf(label, sizeof label, "truncated to %zu", len);
        all = expect_bad_mem(b, len, MN_EFORMAT, len ? "truncated" : "empty", label);
    }
    CHECK(all, "every truncation fails cleanly");
    /* a few through real files too, and trailing garbage */
    char tp[128];
    tmp_path(tp, sizeof tp, "trunc.mem");
    const size_t lens[] = {1, 8, 100, 511, 512, 513, n - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        write_bytes(tp, b, lens[i]);
        mf = (mn_memfile *)1;
        int rc = mn_memfile_open(tp, &mf);
        CHECK(rc == MN_EFORMAT && !mf && strstr(mn_last_error(), tp), "file truncated to %zu: %d %s", lens[i], rc,
              mn_last_error());
    }
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 0;
    expect_bad_mem(longer, n + 1, MN_EFORMAT, "after the payload", "trailing byte");
    free(longer);

    /* the header alone (listings): the same facts as a full open; a truncated file, a corrupt header byte and
     * trailing bytes refused; the payload's bytes are not read (its checksum is checked when it is opened) */
    mn_memfile_info hi;
    CHECK(mn_memfile_read_info(path, &hi) == 0 && hi.n_slots == M && hi.n_layer == NL && hi.dim == D &&
              hi.n_tokens == in.n_tokens && !strcmp(hi.title, in.title),
          "header-only read: %s", mn_last_error());
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        write_bytes(tp, b, lens[i]);
        CHECK(mn_memfile_read_info(tp, &hi) == MN_EFORMAT && strstr(mn_last_error(), tp),
              "header-only read of a file truncated to %zu: %s", lens[i], mn_last_error());
    }
    b[40] ^= 0x10;
    write_bytes(tp, b, n);
    b[40] ^= 0x10;
    CHECK(mn_memfile_read_info(tp, &hi) == MN_EFORMAT, "header-only read of a corrupt header: %s", mn_last_error());
    b[n - 1] ^= 0x10;
    write_bytes(tp, b, n);
    b[n - 1] ^= 0x10;
    CHECK(mn_memfile_read_info(tp, &hi) == 0 && mn_memfile_open(tp, &mf) == MN_EFORMAT,
          "a corrupt payload: the header reads, the open refuses it");
    CHECK(mn_memfile_read_info("/nonexistent/x.mem", &hi) == MN_ENOTFOUND, "a missing file");

    /* every single-byte corruption: payload -> payload checksum; header -> some clean error */
    int payload_ok = 1, header_ok = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t save = b[i];
        b[i] ^= (uint8_t)(0x01 + (i % 255));
        char label[48];
        snprintf(label, sizeof label, "byte %zu corrupted", i);
        if (i >= 512) {
            if (payload_ok) payload_ok = expect_bad_mem(b, n, MN_EFORMAT, "payload checksum", label);
        } else if (header_ok) {
            header_ok = expect_bad_mem(b, n, 0, NULL, label);
        }
        b[i] = save;
    }
    CHECK(payload_ok, "every payload byte corruption caught by the checksum");
    CHECK(header_ok, "every header byte corruption caught");

    /* forged header fields (checksum recomputed, so the field check itself must catch them) */
    uint8_t *c = malloc(n);
#define FORGE(stmt, want_rc, want_msg, label) \
    do {                                      \
        memcpy(c, b, n);                      \
        stmt;                                 \
        fix_hsum(c);                          \
        expect_bad_mem(c, n, want_rc, want_msg, label); \
    } while (0)
    FORGE(memcpy(c, "GGUF", 4), MN_EFORMAT, "magic", "bad magic");
    FORGE(put32(c + 8, 5), MN_EUNSUPPORTED, "version 5", "version 5");
    FORGE(put32(c + 8, 4), MN_EFORMAT, "without exact cells", "version 4 without cells");
    FORGE((put32(c + 8, 3), put32(c + 36, 2)), MN_EFORMAT, "flags", "exact cells in a version 3 file");
    FORGE(put32(c + 8, 3), MN_EFORMAT, "exact part", "version 3 without an exact part");
    FORGE(put32(c + 484, 8), MN_EFORMAT, "reserved", "exact tokens in a version 1 file");
    FORGE((put32(c + 8, 3), put32(c + 484, 8), put32(c + 488, 3), put32(c + 492, 2)), MN_EFORMAT, "not a valid shape",
          "exact tokens that are not whole segments");
    FORGE(put32(c + 8, 0), MN_EUNSUPPORTED, "version 0", "version 0");
    /* version 2's raw tokens: counted in the payload size, leading ones within them */
    FORGE(put32(c + 68, 1), MN_EFORMAT, "reserved", "raw tokens in a version 1 file");
    FORGE((put32(c + 8, 2), put32(c + 68, 3)), MN_EFORMAT, "3 raw tokens", "raw tokens beyond the payload");
    FORGE((put32(c + 8, 2), put32(c + 68, 1u << 21)), MN_EFORMAT, "limit", "too many raw tokens");
    FORGE((put32(c + 8, 2), put32(c + 480, 1)), MN_EFORMAT, "leading raw tokens", "leading beyond raw");
    FORGE(put32(c + 8, 0xffffffffu), MN_EUNSUPPORTED, "version", "version max");
    FORGE(put32(c + 12, 4096), MN_EFORMAT, "header size", "header size");
    FORGE(put32(c + 16, 3), MN_EFORMAT, "kind 3", "kind 3");
    FORGE(put32(c + 20, 7), MN_EFORMAT, "element type 7", "elem type 7");
    FORGE(put32(c + 24, 0xffffffffu), MN_EFORMAT, "n_layer", "huge n_layer");
    FORGE(put32(c + 24, 4096), MN_EFORMAT, "payload bytes", "n_layer 4096");
    FORGE(put32(c + 28, 0), MN_EFORMAT, "dim 0", "dim 0");
    FORGE(put32(c + 32, 0xffffffffu), MN_EFORMAT, "slots", "huge M");
    /* M at the limit, payload size forged to match: the file size gives it away */
    FORGE((put32(c + 32, 1u << 24), put64(c + 80, (uint64_t)2 * 2 * 8 * 2 << 24)), MN_EFORMAT, "truncated",
          "M 2^24 with matching size");
    FORGE(put64(c + 80, 1), MN_EFORMAT, "payload bytes", "payload size");
    FORGE(put32(c + 36, 2), MN_EFORMAT, "flags", "unknown flag");
    FORGE(put64(c + 40, UINT64_MAX), MN_EFORMAT, "token count", "token count");
    FORGE(put32(c + 64, 0x7fc00000u), MN_EFORMAT, "ratio", "NaN ratio");
    FORGE(c[480] = 1, MN_EFORMAT, "reserved", "reserved");
    FORGE((put32(c + 8, 2), c[490] = 1), MN_EFORMAT, "reserved", "reserved in version 2");
    FORGE(memset(c + 96, 'A', 64), MN_EFORMAT, "model name", "unterminated name");
    FORGE((c[224] = 0, c[230] = 'x'), MN_EFORMAT, "title", "bytes after NUL");
    /* unforged field change: header checksum */
    memcpy(c, b, n);
    c[60] ^= 1; /* adapter hash */
    expect_bad_mem(c, n, MN_EFORMAT, "header checksum", "adapter hash edited");
#undef FORGE
    free(c);
    free(b);

    /* empty file, directory, missing file */
    tmp_path(tp, sizeof tp, "empty.mem");
    write_bytes(tp, "", 0);
    mf = (mn_memfile *)1;
    CHECK(mn_memfile_open(tp, &mf) == MN_EFORMAT && !mf && strstr(mn_last_error(), "empty"), "empty file: %s",
          mn_last_error());
    CHECK(mn_memfile_open(g_dir, &mf) == MN_EIO && !mf && strstr(mn_last_error(), "directory"), "directory: %s",
          mn_last_error());
    tmp_path(tp, sizeof tp, "missing.mem");
    CHECK(mn_memfile_open(tp, &mf) == MN_ENOTFOUND && !mf && strstr(mn_last_error(), "missing.mem"), "missing: %s",
          mn_last_error());
    CHECK(mn_memfile_open(NULL, &mf) == MN_EINVAL, "NULL path");
    free(k);
    free(v);
}

/* Engine: KV cells of 20 decoded tokens -> memory file -> appended into a
 * cleared cache at the same positions; 5 more tokens must give the logits of
 * decoding all 25 directly (f32: as exact as a split decode; f16: close). */
static void test_engine(void) {
    const char *mp = test_model_path();
    if (!mp) {
        CHECK(0, "the default model is missing (make model fetches it)");
        return;
    }
    mn_model *m = NULL;
    CHECK(mn_model_load(mp, &m) == 0, "load: %s", mn_last_error());
    if (!m) return;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    if (!c) {
        mn_model_free(m);
        return;
    }
    const char *text = "The librarian walked slowly between the tall shelves, counting the old books that nobody had "
                       "borrowed for years, and wondering whether anyone would ever come back to read the stories of "
                       "the sea, the mountains and the distant cities that were written inside them.";
    int32_t ids[64];
    int64_t nt = 0;
    mn_tokenize(mn_model_tokenizer(m), text, strlen(text), 0, 0, ids, 64, &nt);
    CHECK(nt >= 25, "%lld tokens", (long long)nt);
    if (nt < 25) {
        mn_context_free(c);
        mn_model_free(m);
        return;
    }
    const int32_t N0 = 20, N1 = 5, V = mn_model_n_vocab(m), NL = mn_model_n_layer(m);
    const int32_t KVD = m->hp.n_head_kv * m->hp.head_dim;
    float *ref = malloc(sizeof(float) * (size_t)V * 25), *split = malloc(sizeof(float) * (size_t)V * N1);
    float *got = malloc(sizeof(float) * (size_t)V * N1);
    size_t ne = (size_t)NL * N0 * KVD;
    float *k = malloc(ne * 4), *v = malloc(ne * 4), *k2 = malloc(ne * 4), *v2 = malloc(ne * 4);
    int32_t pos[20];
    for (int i = 0; i < N0; i++) pos[i] = i;

    mn_kv_clear(c);
    CHECK(mn_decode(c, ids, 25, ref, 1) == 0, "direct decode");
    mn_kv_clear(c);
    CHECK(mn_decode(c, ids, N0, NULL, 0) == 0, "decode 20");
    CHECK(mn_kv_read(c, 0, N0, k, v) == 0, "kv read: %s", mn_last_error());
    CHECK(mn_decode(c, ids + N0, N1, split, 1) == 0, "decode 5 after 20");

    char path[128];
    tmp_path(path, sizeof path, "engine.mem");
    for (int et = 0; et <= 1; et++) {
        mn_memfile_info in = make_info(MN_MEMFILE_KV, NL, N0, KVD);
        in.flags = MN_MEMFILE_K_ROPE; /* raw cache cells: keys already rotated */
        in.n_tokens = N0;
        in.ratio = 1.0f;
        in.model_hash = mn_model_hash(m);
        in.adapter_hash = 0;
        snprintf(in.model_name, sizeof in.model_name, "%s", mn_model_name(m));
        snprintf(in.compressor, sizeof in.compressor, "identity");
        CHECK(mn_memfile_write(path, &in, k, v, et) == 0, "write: %s", mn_last_error());
        mn_memfile *mf = NULL;
        CHECK(mn_memfile_open(path, &mf) == 0, "open: %s", mn_last_error());
        if (!mf) continue;
        CHECK(mn_memfile_check_model(mf, mn_model_hash(m), 0) == 0, "same model: %s", mn_last_error());
        CHECK(mn_memfile_check_model(mf, mn_model_hash(m) ^ 1, 0) == MN_EINVAL &&
                  strstr(mn_last_error(), mn_model_name(m)),
              "other model: %s", mn_last_error());
        const mn_memfile_info *o = mn_memfile_get_info(mf);
        CHECK(mn_memfile_read_kv(mf, k2, v2) == 0, "read kv");
        mn_kv_clear(c);
        CHECK(mn_kv_append(c, o->n_slots, pos, k2, v2, (o->flags & MN_MEMFILE_K_ROPE) != 0) == 0, "append: %s",
              mn_last_error());
        CHECK(mn_kv_n_cells(c) == N0 && mn_kv_next_pos(c) == N0, "cells after append");
        CHECK(mn_decode(c, ids + N0, N1, got, 1) == 0, "decode 5 after memory");
        double dsplit = 0, dref = 0, scale = 0;
        for (size_t i = 0; i < (size_t)V * N1; i++) {
            double a = fabs((double)got[i] - split[i]), r = fabs((double)got[i] - ref[(size_t)V * N0 + i]);
            dsplit = a > dsplit ? a : dsplit;
            dref = r > dref ? r : dref;
            scale = fabs(ref[(size_t)V * N0 + i]) > scale ? fabs(ref[(size_t)V * N0 + i]) : scale;
        }
        printf("  engine %s: max |logit diff| vs split decode %.3g, vs direct 25-token decode %.3g (max |logit| %.3g)\n",
               et ? "f16" : "f32", dsplit, dref, scale);
        CHECK(scale > 0, "logits are not all zero");
        if (et == 0) {
            CHECK(dsplit == 0, "f32 memory reproduces the split decode exactly (diff %g)", dsplit);
            CHECK(dref <= 1e-3 * (scale > 1 ? scale : 1), "f32 memory vs direct decode: %g", dref);
        } else {
            CHECK(dref <= 2e-2 * (scale > 1 ? scale : 1), "f16 memory vs direct decode: %g", dref);
        }
        /* argmax agrees with the direct decode on every row */
        int agree = 1;
        for (int r = 0; r < N1; r++) {
            const float *a = got + (size_t)V * r, *bb = ref + (size_t)V * (N0 + r);
            int32_t ia = 0, ib = 0;
            for (int32_t t = 1; t < V; t++) {
                if (a[t] > a[ia]) ia = t;
                if (bb[t] > bb[ib]) ib = t;
            }
            agree &= ia == ib;
        }
        CHECK(agree, "%s: argmax differs from direct decode", et ? "f16" : "f32");
        mn_memfile_free(mf);
    }
    free(ref);
    free(split);
    free(got);
    free(k);
    free(v);
    free(k2);
    free(v2);
    mn_context_free(c);
    mn_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mnemo_memfile_XXXXXX");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    test_round_trips();
    test_hostile();
    test_engine();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
