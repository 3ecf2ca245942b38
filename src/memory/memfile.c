/* memfile.c - memory files (see memfile.h for the byte layout). */
#include "memory/memfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "kernels/quant.h"

static const char k_magic[8] = {'M', 'N', 'E', 'M', 'O', 'M', 'E', 'M'};

/* header field offsets */
enum {
    O_MAGIC = 0,
    O_VERSION = 8,
    O_HSIZE = 12,
    O_KIND = 16,
    O_ETYPE = 20,
    O_NLAYER = 24,
    O_DIM = 28,
    O_SLOTS = 32,
    O_FLAGS = 36,
    O_NTOK = 40,
    O_MHASH = 48,
    O_AHASH = 56,
    O_RATIO = 64,
    O_NRAW = 68, /* version 2; reserved (0) in version 1 */
    O_CREATED = 72,
    O_PBYTES = 80,
    O_PSUM = 88,
    O_MNAME = 96,
    O_COMP = 160,
    O_TITLE = 224,
    O_NHEAD = 480, /* version 2; reserved (0) in version 1 */
    O_NEXACT = 484, /* version 3; reserved (0) before */
    O_EXSEG = 488,
    O_EXREP = 492,
    O_RES1 = 496,
    O_HSUM = 504,
};

struct mn_memfile {
    mn_memfile_info info;
    const uint8_t *base; /* start of the file bytes */
    size_t size;
    int mapped;          /* base is our mmap */
    const uint8_t *payload;
    size_t payload_bytes;
    size_t blocks_bytes; /* the K/V or embedding blocks: the payload before the raw tokens */
    size_t exact_off;    /* the exact section: after the raw tokens */
    size_t cells_off, cells_bytes; /* its q8_0 cells (version 4), at its end */
};

uint64_t mn_memfile_fnv1a64(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t elem_size(int t) { return t == MN_MEMFILE_F16 ? 2 : 4; }

/* Elements per block and bytes of the payload, with overflow checks (the
 * dimensions are already within their limits, so this cannot overflow on
 * 64-bit hosts, but stays correct on 32-bit ones). Returns 0 on overflow. */
/* Bytes of the cells of the exact part (version 4): 2 n_layer n_exact q8_0 rows of dim values. */
static int cells_size(uint64_t n_layer, uint64_t dim, uint64_t n_exact, uint64_t *bytes) {
    uint64_t b;
    if (dim % MN_MEMFILE_Q8_BLOCK) return 0;
    if (__builtin_mul_overflow(n_exact, n_layer, &b) || __builtin_mul_overflow(b, (uint64_t)2, &b) ||
        __builtin_mul_overflow(b, dim / MN_MEMFILE_Q8_BLOCK * MN_MEMFILE_Q8_BYTES, &b))
        return 0;
    *bytes = b;
    return 1;
}

/* Bytes of the exact section: the ids, then two blocks of f16 keys (n_seg, L, R, dim), then with
 * cells (flag MN_MEMFILE_EXACT_KV) the segments' q8_0 cells. */
static int exact_size(uint64_t n_layer, uint64_t dim, uint64_t n_exact, uint64_t seg, uint64_t rep, int cells,
                      uint64_t *bytes) {
    uint64_t b = 0, c = 0;
    if (n_exact) {
        if (!seg || n_exact % seg) return 0;
        if (__builtin_mul_overflow(n_exact / seg, n_layer, &b) || __builtin_mul_overflow(b, rep, &b) ||
            __builtin_mul_overflow(b, dim, &b) || __builtin_mul_overflow(b, (uint64_t)4, &b) ||
            __builtin_add_overflow(b, 4 * n_exact, &b)) /* n_exact <= MN_MEMFILE_MAX_EXACT */
            return 0;
        if (cells && (!cells_size(n_layer, dim, n_exact, &c) || __builtin_add_overflow(b, c, &b))) return 0;
    }
    *bytes = b;
    return 1;
}

static int payload_size(int kind, uint64_t n_layer, uint64_t m, uint64_t dim, int etype, uint64_t n_raw,
                        uint64_t *block_elems, uint64_t *bytes) {
    uint64_t e, b;
    if (kind == MN_MEMFILE_EMBD) n_layer = 1;
    if (__builtin_mul_overflow(n_layer, m, &e) || __builtin_mul_overflow(e, dim, &e)) return 0;
    if (__builtin_mul_overflow(e, (uint64_t)(kind == MN_MEMFILE_KV ? 2 : 1), &b)) return 0;
    if (__builtin_mul_overflow(b, (uint64_t)elem_size(etype), &b)) return 0;
    if (__builtin_add_overflow(b, 4 * n_raw, &b)) return 0; /* n_raw <= MN_MEMFILE_MAX_RAW */
    if (b > (uint64_t)SIZE_MAX) return 0;
    *block_elems = e;
    *bytes = b;
    return 1;
}

size_t mn_memfile_block_elems(const mn_memfile_info *info) {
    if (!info || (info->kind != MN_MEMFILE_KV && info->kind != MN_MEMFILE_EMBD)) return 0;
    if (info->n_layer < 0 || info->dim < 0 || info->n_slots < 0) return 0;
    uint64_t e, b;
    if (!payload_size(info->kind, (uint64_t)info->n_layer, (uint64_t)info->n_slots, (uint64_t)info->dim,
                      MN_MEMFILE_F32, 0, &e, &b))
        return 0;
    return (size_t)e;
}

/* ------------------------------------------------------------------ write */

/* Copies s into a zeroed field of `cap` bytes; 0 if it does not fit. */
static int put_name(uint8_t *field, size_t cap, const char *s) {
    size_t n = strnlen(s, cap);
    if (n >= cap) return 0;
    memcpy(field, s, n);
    return 1;
}

/* Title: truncated to cap-1 bytes at a UTF-8 character boundary. */
static void put_title(uint8_t *field, size_t cap, const char *s) {
    size_t n = strnlen(s, cap);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80) n--; /* s[n] would start the cut-off part */
    }
    memcpy(field, s, n);
}

static int validate_info(const mn_memfile_info *in, int etype) {
    if (in->kind != MN_MEMFILE_KV && in->kind != MN_MEMFILE_EMBD)
        return mn_error(MN_EINVAL, "memory file: kind %d is neither KV (1) nor embedding (2)", (int)in->kind);
    if (etype != MN_MEMFILE_F32 && etype != MN_MEMFILE_F16)
        return mn_error(MN_EINVAL, "memory file: element type %d is neither f32 (0) nor f16 (1)", etype);
    if (in->kind == MN_MEMFILE_KV && (in->n_layer < 1 || in->n_layer > MN_MEMFILE_MAX_LAYER))
        return mn_error(MN_EINVAL, "memory file: n_layer %d outside 1..%d", (int)in->n_layer, MN_MEMFILE_MAX_LAYER);
    if (in->kind == MN_MEMFILE_EMBD && in->n_layer != 0)
        return mn_error(MN_EINVAL, "memory file: an embedding memory has n_layer 0, not %d", (int)in->n_layer);
    if (in->dim < 1 || in->dim > MN_MEMFILE_MAX_DIM)
        return mn_error(MN_EINVAL, "memory file: dim %d outside 1..%d", (int)in->dim, MN_MEMFILE_MAX_DIM);
    if (in->n_slots < 0 || in->n_slots > MN_MEMFILE_MAX_SLOTS)
        return mn_error(MN_EINVAL, "memory file: %d slots outside 0..%d", (int)in->n_slots, MN_MEMFILE_MAX_SLOTS);
    if (in->flags & ~(uint32_t)(MN_MEMFILE_K_ROPE | MN_MEMFILE_EXACT_KV))
        return mn_error(MN_EINVAL, "memory file: unknown flags 0x%x", (unsigned)in->flags);
    if ((in->flags & MN_MEMFILE_EXACT_KV) && (in->n_exact <= 0 || in->dim % MN_MEMFILE_Q8_BLOCK))
        return mn_error(MN_EINVAL, "memory file: exact cells need an exact part and a dim divisible by %d",
                        MN_MEMFILE_Q8_BLOCK);
    if (in->kind == MN_MEMFILE_EMBD && in->flags)
        return mn_error(MN_EINVAL, "memory file: flags are for KV memories only");
    if (in->n_tokens < 0) return mn_error(MN_EINVAL, "memory file: negative token count");
    if (in->n_raw < 0 || in->n_raw > MN_MEMFILE_MAX_RAW)
        return mn_error(MN_EINVAL, "memory file: %d raw tokens outside 0..%d", (int)in->n_raw, MN_MEMFILE_MAX_RAW);
    if (in->n_head < 0 || in->n_head > in->n_raw)
        return mn_error(MN_EINVAL, "memory file: %d leading raw tokens of %d", (int)in->n_head, (int)in->n_raw);
    if (!isfinite(in->ratio) || in->ratio < 0)
        return mn_error(MN_EINVAL, "memory file: ratio %g must be finite and >= 0", (double)in->ratio);
    if (in->n_exact < 0 || in->n_exact > MN_MEMFILE_MAX_EXACT || in->exact_seg < 0 || in->exact_rep < 0 ||
        (in->n_exact > 0 && (in->kind != MN_MEMFILE_KV || in->exact_seg < 1 || in->exact_seg > MN_MEMFILE_MAX_EXSEG ||
                             in->n_exact % in->exact_seg || in->exact_rep < 1 || in->exact_rep > MN_MEMFILE_MAX_EXREP)) ||
        (in->n_exact == 0 && (in->exact_seg || in->exact_rep)))
        return mn_error(MN_EINVAL, "memory file: exact part of %d tokens in segments of %d, %d keys each: not a valid "
                                   "shape (KV memories only, whole segments)",
                        (int)in->n_exact, (int)in->exact_seg, (int)in->exact_rep);
    if (strnlen(in->model_name, MN_MEMFILE_NAME_CAP) >= MN_MEMFILE_NAME_CAP ||
        strnlen(in->compressor, MN_MEMFILE_NAME_CAP) >= MN_MEMFILE_NAME_CAP)
        return mn_error(MN_EINVAL, "memory file: model and compressor names are limited to %d bytes",
                        MN_MEMFILE_NAME_CAP - 1);
    return 0;
}

/* Checks the data before anything is written: finite, and within f16 range for f16. */
static int check_data(const float *x, size_t n, int etype, const char *what) {
    for (size_t i = 0; i < n; i++) {
        float f = x[i];
        if (!isfinite(f))
            return mn_error(MN_ERANGE, "memory file: %s element %zu is not finite (%g)", what, i, (double)f);
        if (etype == MN_MEMFILE_F16 && !isfinite(mn_fp16_to_fp32(mn_fp32_to_fp16(f))))
            return mn_error(MN_ERANGE, "memory file: %s element %zu (%g) does not fit in f16; write f32 instead",
                            what, i, (double)f);
    }
    return 0;
}

/* Converts and writes n elements of x, hashing what is written. */
static int emit_block(FILE *f, const float *x, size_t n, int etype, uint64_t *h) {
    enum { CH = 16384 };
    uint8_t buf[CH * 4];
    for (size_t i = 0; i < n; i += CH) {
        size_t c = n - i < CH ? n - i : CH, nb;
        if (etype == MN_MEMFILE_F16) {
            for (size_t j = 0; j < c; j++) {
                uint16_t v = mn_fp32_to_fp16(x[i + j]);
                buf[2 * j] = (uint8_t)v;
                buf[2 * j + 1] = (uint8_t)(v >> 8);
            }
            nb = 2 * c;
        } else {
            memcpy(buf, x + i, 4 * c); /* little-endian host */
            nb = 4 * c;
        }
        *h = mn_memfile_fnv1a64(*h, buf, nb);
        if (fwrite(buf, 1, nb, f) != nb) return 0;
    }
    return 1;
}

int mn_memfile_write(const char *path, const mn_memfile_info *info, const float *k, const float *v, int elem_type) {
    if (info && info->n_raw) return mn_error(MN_EINVAL, "memory file: raw tokens need mn_memfile_write_raw");
    return mn_memfile_write_raw(path, info, k, v, NULL, elem_type);
}

int mn_memfile_write_raw(const char *path, const mn_memfile_info *info, const float *k, const float *v,
                         const int32_t *raw, int elem_type) {
    if (info && info->n_exact) return mn_error(MN_EINVAL, "memory file: an exact part needs mn_memfile_write_exact");
    return mn_memfile_write_exact(path, info, k, v, raw, NULL, NULL, NULL, NULL, elem_type);
}

/* Writes n f32 values as f16, hashing what is written. */
static int emit_f16(FILE *f, const float *x, size_t n, uint64_t *h) { return emit_block(f, x, n, MN_MEMFILE_F16, h); }

int mn_memfile_write_exact(const char *path, const mn_memfile_info *info, const float *k, const float *v,
                           const int32_t *raw, const int32_t *exact, const float *rep, const float *rep_sh,
                           const void *cells, int elem_type) {
    if (!path || !info) return mn_error(MN_EINVAL, "memory file: NULL path or info");
    int rc = validate_info(info, elem_type);
    if (rc) return rc;
    if (info->n_raw && !raw) return mn_error(MN_EINVAL, "memory file: NULL raw tokens");
    for (int32_t i = 0; i < info->n_raw; i++)
        if (raw[i] < 0) return mn_error(MN_EINVAL, "memory file: raw token %d is negative (%d)", (int)i, (int)raw[i]);
    uint64_t be, pbytes;
    if (!payload_size(info->kind, (uint64_t)info->n_layer, (uint64_t)info->n_slots, (uint64_t)info->dim, elem_type,
                      (uint64_t)info->n_raw, &be, &pbytes))
        return mn_error(MN_ERANGE, "memory file: payload size overflows");
    if (be && !k) return mn_error(MN_EINVAL, "memory file: NULL %s data", info->kind == MN_MEMFILE_KV ? "K" : "embedding");
    if (info->kind == MN_MEMFILE_KV && be && !v) return mn_error(MN_EINVAL, "memory file: NULL V data");
    if (info->kind == MN_MEMFILE_EMBD && v) return mn_error(MN_EINVAL, "memory file: an embedding memory takes no V");
    if ((rc = check_data(k, (size_t)be, elem_type, info->kind == MN_MEMFILE_KV ? "K" : "embedding"))) return rc;
    if (info->kind == MN_MEMFILE_KV && (rc = check_data(v, (size_t)be, elem_type, "V"))) return rc;
    uint64_t xbytes = 0, xkeys = 0;
    const int with_cells = (info->flags & MN_MEMFILE_EXACT_KV) != 0;
    uint64_t cbytes = 0;
    if (with_cells && !cells) return mn_error(MN_EINVAL, "memory file: NULL exact cells");
    if (with_cells && !cells_size((uint64_t)info->n_layer, (uint64_t)info->dim, (uint64_t)info->n_exact, &cbytes))
        return mn_error(MN_ERANGE, "memory file: payload size overflows");
    if (!exact_size((uint64_t)info->n_layer, (uint64_t)info->dim, (uint64_t)info->n_exact, (uint64_t)info->exact_seg,
                    (uint64_t)info->exact_rep, with_cells, &xbytes) ||
        __builtin_add_overflow(pbytes, xbytes, &pbytes) || pbytes > (uint64_t)SIZE_MAX)
        return mn_error(MN_ERANGE, "memory file: payload size overflows");
    if (info->n_exact) {
        if (!exact || !rep || !rep_sh) return mn_error(MN_EINVAL, "memory file: NULL exact ids or keys");
        for (int32_t i = 0; i < info->n_exact; i++)
            if (exact[i] < 0) return mn_error(MN_EINVAL, "memory file: exact token %d is negative (%d)", (int)i, (int)exact[i]);
        xkeys = (xbytes - cbytes - 4 * (uint64_t)info->n_exact) / 4; /* elements per key block */
        if ((rc = check_data(rep, (size_t)xkeys, MN_MEMFILE_F16, "representative key")) ||
            (rc = check_data(rep_sh, (size_t)xkeys, MN_MEMFILE_F16, "representative key")))
            return rc;
    }

    uint8_t h[MN_MEMFILE_HEADER_SIZE];
    memset(h, 0, sizeof h);
    memcpy(h + O_MAGIC, k_magic, 8);
    /* files without raw tokens stay version 1 and without an exact part version 2, readable by older builds */
    put_u32(h + O_VERSION, with_cells ? 4 : info->n_exact ? 3 : info->n_raw ? 2 : 1);
    put_u32(h + O_HSIZE, MN_MEMFILE_HEADER_SIZE);
    put_u32(h + O_KIND, (uint32_t)info->kind);
    put_u32(h + O_ETYPE, (uint32_t)elem_type);
    put_u32(h + O_NLAYER, (uint32_t)info->n_layer);
    put_u32(h + O_DIM, (uint32_t)info->dim);
    put_u32(h + O_SLOTS, (uint32_t)info->n_slots);
    put_u32(h + O_FLAGS, info->flags);
    put_u64(h + O_NTOK, (uint64_t)info->n_tokens);
    put_u64(h + O_MHASH, info->model_hash);
    put_u64(h + O_AHASH, info->adapter_hash);
    uint32_t rbits;
    memcpy(&rbits, &info->ratio, 4);
    put_u32(h + O_RATIO, rbits);
    put_u32(h + O_NRAW, (uint32_t)info->n_raw);
    put_u32(h + O_NHEAD, (uint32_t)info->n_head);
    put_u32(h + O_NEXACT, (uint32_t)info->n_exact);
    put_u32(h + O_EXSEG, (uint32_t)info->exact_seg);
    put_u32(h + O_EXREP, (uint32_t)info->exact_rep);
    put_u64(h + O_CREATED, (uint64_t)(info->created ? info->created : (int64_t)time(NULL)));
    put_u64(h + O_PBYTES, pbytes);
    put_name(h + O_MNAME, MN_MEMFILE_NAME_CAP, info->model_name);
    put_name(h + O_COMP, MN_MEMFILE_NAME_CAP, info->compressor);
    put_title(h + O_TITLE, MN_MEMFILE_TITLE_CAP, info->title);

    FILE *f;
    int fd;
    char *tmp;
    int frc = mn_file_create_temp(path, &f, &fd, &tmp);
    if (frc) return frc;
    errno = 0;
    uint64_t sum = MN_FNV64_INIT;
    int ok = fwrite(h, 1, sizeof h, f) == sizeof h;
    if (ok) ok = emit_block(f, k, (size_t)be, elem_type, &sum);
    if (ok && info->kind == MN_MEMFILE_KV) ok = emit_block(f, v, (size_t)be, elem_type, &sum);
    for (int32_t i = 0; ok && i < info->n_raw; i += 1024) { /* little-endian, a chunk per write */
        uint8_t buf[4 * 1024];
        const int32_t c = info->n_raw - i < 1024 ? info->n_raw - i : 1024;
        for (int32_t j = 0; j < c; j++) put_u32(buf + 4 * j, (uint32_t)raw[i + j]);
        sum = mn_memfile_fnv1a64(sum, buf, 4 * (size_t)c);
        ok = fwrite(buf, 1, 4 * (size_t)c, f) == 4 * (size_t)c;
    }
    for (int32_t i = 0; ok && i < info->n_exact; i += 1024) {
        uint8_t buf[4 * 1024];
        const int32_t c = info->n_exact - i < 1024 ? info->n_exact - i : 1024;
        for (int32_t j = 0; j < c; j++) put_u32(buf + 4 * j, (uint32_t)exact[i + j]);
        sum = mn_memfile_fnv1a64(sum, buf, 4 * (size_t)c);
        ok = fwrite(buf, 1, 4 * (size_t)c, f) == 4 * (size_t)c;
    }
    if (ok && info->n_exact) ok = emit_f16(f, rep, (size_t)xkeys, &sum) && emit_f16(f, rep_sh, (size_t)xkeys, &sum);
    if (ok && with_cells) { /* bytes as they are: q8_0 blocks (an f16 scale, little-endian, and 32 int8) */
        sum = mn_memfile_fnv1a64(sum, cells, (size_t)cbytes);
        ok = fwrite(cells, 1, (size_t)cbytes, f) == (size_t)cbytes;
    }
    if (ok) {
        put_u64(h + O_PSUM, sum);
        put_u64(h + O_HSUM, mn_memfile_fnv1a64(MN_FNV64_INIT, h, O_HSUM));
        ok = fseek(f, 0, SEEK_SET) == 0 && fwrite(h, 1, sizeof h, f) == sizeof h;
    }
    return mn_file_commit(f, fd, tmp, path, ok, ok ? 0 : errno, "writing memory file");
}

/* ------------------------------------------------------------------- open */

/* A NUL-terminated string within a fixed field; copies it into dst (same cap). */
static int get_name(const uint8_t *field, size_t cap, char *dst, const char *what) {
    const uint8_t *z = memchr(field, 0, cap);
    if (!z) return mn_error(MN_EFORMAT, "memory file: %s field is not NUL-terminated", what);
    size_t n = (size_t)(z - field);
    for (size_t i = n; i < cap; i++)
        if (field[i]) return mn_error(MN_EFORMAT, "memory file: %s field has bytes after its NUL", what);
    memcpy(dst, field, n);
    dst[n] = 0;
    return 0;
}

/* b holds the whole file of `size` bytes, or with header_only its header
 * alone (size is still the file's): everything is checked but the payload's
 * checksum. */
static int parse(const uint8_t *b, size_t size, mn_memfile *mf, int header_only) {
    if (size == 0) return mn_error(MN_EFORMAT, "memory file: empty file");
    size_t nm = size < 8 ? size : 8;
    if (memcmp(b, k_magic, nm) != 0)
        return mn_error(MN_EFORMAT, "not a mnemo memory file (magic is not 'MNEMOMEM')");
    if (size < MN_MEMFILE_HEADER_SIZE)
        return mn_error(MN_EFORMAT, "memory file: truncated: %zu bytes, the header alone is %d", size,
                        MN_MEMFILE_HEADER_SIZE);
    uint32_t ver = get_u32(b + O_VERSION);
    if (ver < 1 || ver > MN_MEMFILE_VERSION)
        return mn_error(MN_EUNSUPPORTED, "memory file: format version %u is not supported (this build reads 1..%d)",
                        (unsigned)ver, MN_MEMFILE_VERSION);
    uint32_t hs = get_u32(b + O_HSIZE);
    if (hs != MN_MEMFILE_HEADER_SIZE)
        return mn_error(MN_EFORMAT, "memory file: header size %u, version %u has %d", (unsigned)hs, (unsigned)ver,
                        MN_MEMFILE_HEADER_SIZE);
    mn_memfile_info *in = &mf->info;
    uint32_t kind = get_u32(b + O_KIND), et = get_u32(b + O_ETYPE), nl = get_u32(b + O_NLAYER);
    uint32_t dim = get_u32(b + O_DIM), m = get_u32(b + O_SLOTS), flags = get_u32(b + O_FLAGS);
    if (kind != MN_MEMFILE_KV && kind != MN_MEMFILE_EMBD)
        return mn_error(MN_EFORMAT, "memory file: kind %u is neither KV (1) nor embedding (2)", (unsigned)kind);
    if (et != MN_MEMFILE_F32 && et != MN_MEMFILE_F16)
        return mn_error(MN_EFORMAT, "memory file: element type %u is neither f32 (0) nor f16 (1)", (unsigned)et);
    if (kind == MN_MEMFILE_KV && (nl < 1 || nl > MN_MEMFILE_MAX_LAYER))
        return mn_error(MN_EFORMAT, "memory file: n_layer %u outside 1..%d", (unsigned)nl, MN_MEMFILE_MAX_LAYER);
    if (kind == MN_MEMFILE_EMBD && nl != 0)
        return mn_error(MN_EFORMAT, "memory file: embedding memory with n_layer %u (must be 0)", (unsigned)nl);
    if (dim < 1 || dim > MN_MEMFILE_MAX_DIM)
        return mn_error(MN_EFORMAT, "memory file: dim %u outside 1..%d", (unsigned)dim, MN_MEMFILE_MAX_DIM);
    if (m > MN_MEMFILE_MAX_SLOTS)
        return mn_error(MN_EFORMAT, "memory file: %u slots, more than the limit %d", (unsigned)m,
                        MN_MEMFILE_MAX_SLOTS);
    if (flags & ~(uint32_t)(MN_MEMFILE_K_ROPE | (ver >= 4 ? MN_MEMFILE_EXACT_KV : 0)))
        return mn_error(MN_EFORMAT, "memory file: unknown flags 0x%x for version %u", (unsigned)flags, (unsigned)ver);
    if (ver == 4 && !(flags & MN_MEMFILE_EXACT_KV))
        return mn_error(MN_EFORMAT, "memory file: version 4 without exact cells (flag 0x%x)", MN_MEMFILE_EXACT_KV);
    if (kind == MN_MEMFILE_EMBD && flags)
        return mn_error(MN_EFORMAT, "memory file: flags 0x%x on an embedding memory", (unsigned)flags);
    uint64_t ntok = get_u64(b + O_NTOK);
    if (ntok > (uint64_t)INT64_MAX)
        return mn_error(MN_EFORMAT, "memory file: token count %llu out of range", (unsigned long long)ntok);
    uint32_t rbits = get_u32(b + O_RATIO);
    float ratio;
    memcpy(&ratio, &rbits, 4);
    if (!isfinite(ratio) || ratio < 0)
        return mn_error(MN_EFORMAT, "memory file: ratio %g must be finite and >= 0", (double)ratio);
    const uint32_t n_raw = get_u32(b + O_NRAW), n_head = get_u32(b + O_NHEAD);
    if (ver == 1 && (n_raw != 0 || n_head != 0))
        return mn_error(MN_EFORMAT, "memory file: reserved header bytes are not zero");
    const uint32_t n_exact = get_u32(b + O_NEXACT), exseg = get_u32(b + O_EXSEG), exrep = get_u32(b + O_EXREP);
    if (ver < 3 && (n_exact || exseg || exrep))
        return mn_error(MN_EFORMAT, "memory file: reserved header bytes are not zero");
    if (ver >= 3 && (kind != MN_MEMFILE_KV || n_exact < 1 || n_exact > MN_MEMFILE_MAX_EXACT || exseg < 1 ||
                     exseg > MN_MEMFILE_MAX_EXSEG || n_exact % exseg || exrep < 1 || exrep > MN_MEMFILE_MAX_EXREP))
        return mn_error(MN_EFORMAT, "memory file: exact part of %u tokens in segments of %u with %u keys: not a valid shape",
                        (unsigned)n_exact, (unsigned)exseg, (unsigned)exrep);
    if (n_raw > MN_MEMFILE_MAX_RAW)
        return mn_error(MN_EFORMAT, "memory file: %u raw tokens, more than the limit %d", (unsigned)n_raw,
                        MN_MEMFILE_MAX_RAW);
    if (n_head > n_raw)
        return mn_error(MN_EFORMAT, "memory file: %u leading raw tokens of %u", (unsigned)n_head, (unsigned)n_raw);
    for (int i = O_RES1; i < O_HSUM; i++)
        if (b[i]) return mn_error(MN_EFORMAT, "memory file: reserved header bytes are not zero");

    uint64_t be, want, xbytes;
    const int with_cells = (flags & MN_MEMFILE_EXACT_KV) != 0;
    uint64_t cbytes = 0;
    if (with_cells && !cells_size(nl, dim, n_exact, &cbytes))
        return mn_error(MN_EFORMAT, "memory file: exact cells need a dim divisible by %d (dim %u)", MN_MEMFILE_Q8_BLOCK,
                        (unsigned)dim);
    if (!payload_size((int)kind, nl, m, dim, (int)et, n_raw, &be, &want) ||
        !exact_size(nl, dim, n_exact, exseg, exrep, with_cells, &xbytes) || __builtin_add_overflow(want, xbytes, &want) ||
        want > (uint64_t)SIZE_MAX)
        return mn_error(MN_EFORMAT, "memory file: payload size overflows");
    uint64_t pbytes = get_u64(b + O_PBYTES);
    if (pbytes != want)
        return mn_error(MN_EFORMAT,
                        "memory file: header says %llu payload bytes, the shape (%u x %u x %u, %u raw tokens, %u exact) "
                        "needs %llu",
                        (unsigned long long)pbytes, (unsigned)nl, (unsigned)m, (unsigned)dim, (unsigned)n_raw,
                        (unsigned)n_exact, (unsigned long long)want);
    uint64_t avail = (uint64_t)size - MN_MEMFILE_HEADER_SIZE;
    if (avail < want)
        return mn_error(MN_EFORMAT, "memory file: truncated: %zu bytes, the header promises %llu", size,
                        (unsigned long long)(want + MN_MEMFILE_HEADER_SIZE));
    if (avail > want)
        return mn_error(MN_EFORMAT, "memory file: %llu unexpected bytes after the payload",
                        (unsigned long long)(avail - want));

    int rc;
    if ((rc = get_name(b + O_MNAME, MN_MEMFILE_NAME_CAP, in->model_name, "model name"))) return rc;
    if ((rc = get_name(b + O_COMP, MN_MEMFILE_NAME_CAP, in->compressor, "compressor name"))) return rc;
    if ((rc = get_name(b + O_TITLE, MN_MEMFILE_TITLE_CAP, in->title, "title"))) return rc;

    uint64_t hsum = mn_memfile_fnv1a64(MN_FNV64_INIT, b, O_HSUM);
    if (hsum != get_u64(b + O_HSUM))
        return mn_error(MN_EFORMAT, "memory file: header checksum mismatch (stored %016llx, computed %016llx): "
                                    "the file is corrupt",
                        (unsigned long long)get_u64(b + O_HSUM), (unsigned long long)hsum);
    uint64_t psum = header_only ? get_u64(b + O_PSUM) : mn_memfile_fnv1a64(MN_FNV64_INIT, b + MN_MEMFILE_HEADER_SIZE, (size_t)want);
    if (psum != get_u64(b + O_PSUM))
        return mn_error(MN_EFORMAT, "memory file: payload checksum mismatch (stored %016llx, computed %016llx): "
                                    "the file is corrupt",
                        (unsigned long long)get_u64(b + O_PSUM), (unsigned long long)psum);

    in->kind = (mn_memfile_kind)kind;
    in->elem_type = (int)et;
    in->n_layer = (int32_t)nl;
    in->dim = (int32_t)dim;
    in->n_slots = (int32_t)m;
    in->flags = flags;
    in->n_tokens = (int64_t)ntok;
    in->n_raw = (int32_t)n_raw;
    in->n_head = (int32_t)n_head;
    in->n_exact = (int32_t)n_exact;
    in->exact_seg = (int32_t)exseg;
    in->exact_rep = (int32_t)exrep;
    in->model_hash = get_u64(b + O_MHASH);
    in->adapter_hash = get_u64(b + O_AHASH);
    in->ratio = ratio;
    in->created = (int64_t)get_u64(b + O_CREATED);
    in->checksum = psum;
    mf->payload = b + MN_MEMFILE_HEADER_SIZE;
    mf->blocks_bytes = (size_t)(want - xbytes) - 4 * (size_t)n_raw;
    mf->exact_off = (size_t)(want - xbytes);
    mf->cells_off = (size_t)(want - cbytes);
    mf->cells_bytes = (size_t)cbytes;
    mf->payload_bytes = (size_t)want;
    return 0;
}

int mn_memfile_open_memory(const void *data, size_t size, mn_memfile **out) {
    if (!out) return mn_error(MN_EINVAL, "memory file: NULL out");
    *out = NULL;
    if (!data && size) return mn_error(MN_EINVAL, "memory file: NULL data");
    mn_memfile *mf = calloc(1, sizeof *mf);
    if (!mf) return mn_error(MN_ENOMEM, "memory file: out of memory");
    mf->base = data;
    mf->size = size;
    int rc = parse(data, size, mf, 0);
    if (rc) {
        free(mf);
        return rc;
    }
    *out = mf;
    return 0;
}

int mn_memfile_open(const char *path, mn_memfile **out) {
    if (!out) return mn_error(MN_EINVAL, "memory file: NULL out");
    *out = NULL;
    if (!path) return mn_error(MN_EINVAL, "memory file: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mn_error(e == ENOENT ? MN_ENOTFOUND : MN_EIO, "%s: cannot open memory file: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mn_error(MN_EIO, "%s: stat failed: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mn_error(MN_EIO, "%s: not a regular file%s", path, S_ISDIR(st.st_mode) ? " (a directory)" : "");
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return mn_error(MN_EFORMAT, "%s: file too large", path);
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return mn_error(MN_EFORMAT, "%s: memory file: empty file", path);
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return mn_error(MN_EIO, "%s: mmap failed: %s", path, strerror(e));
    mn_memfile *mf = calloc(1, sizeof *mf);
    if (!mf) {
        munmap(p, size);
        return mn_error(MN_ENOMEM, "memory file: out of memory");
    }
    mf->base = p;
    mf->size = size;
    mf->mapped = 1;
    int rc = parse(p, size, mf, 0);
    if (rc) {
        munmap(p, size);
        free(mf);
        return mn_error_prefix(rc, path);
    }
    *out = mf;
    return 0;
}

int mn_memfile_read_info(const char *path, mn_memfile_info *info) {
    if (!path || !info) return mn_error(MN_EINVAL, "memory file: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mn_error(e == ENOENT ? MN_ENOTFOUND : MN_EIO, "%s: cannot open memory file: %s", path, strerror(e));
    }
    struct stat st;
    uint8_t h[MN_MEMFILE_HEADER_SIZE];
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        rc = mn_error(MN_EIO, "%s: not a readable regular file", path);
    ssize_t got = rc ? 0 : pread(fd, h, sizeof h, 0);
    close(fd);
    if (rc) return rc;
    if (got < 0) return mn_error(MN_EIO, "%s: read failed", path);
    if ((size_t)got < sizeof h && (size_t)got < (size_t)st.st_size) return mn_error(MN_EIO, "%s: short read", path);
    mn_memfile mf;
    memset(&mf, 0, sizeof mf);
    /* a file shorter than the header is parsed as what it is, and refused */
    rc = parse(h, (size_t)got < sizeof h ? (size_t)got : (size_t)st.st_size, &mf, 1);
    if (rc) return mn_error_prefix(rc, path);
    *info = mf.info;
    return 0;
}

void mn_memfile_free(mn_memfile *mf) {
    if (!mf) return;
    if (mf->mapped) munmap((void *)mf->base, mf->size);
    free(mf);
}

const mn_memfile_info *mn_memfile_get_info(const mn_memfile *mf) { return mf ? &mf->info : NULL; }

const void *mn_memfile_payload(const mn_memfile *mf, size_t *nbytes) {
    if (nbytes) *nbytes = mf ? mf->payload_bytes : 0;
    return mf ? mf->payload : NULL;
}

static void convert(const uint8_t *src, size_t n, int etype, float *dst) {
    if (etype == MN_MEMFILE_F16) {
        for (size_t i = 0; i < n; i++) dst[i] = mn_fp16_to_fp32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
    } else if (n) {
        memcpy(dst, src, 4 * n); /* little-endian host */
    }
}

int mn_memfile_read_kv(const mn_memfile *mf, float *k, float *v) {
    if (!mf) return mn_error(MN_EINVAL, "memory file: NULL handle");
    if (mf->info.kind != MN_MEMFILE_KV)
        return mn_error(MN_EINVAL, "memory file holds embeddings, not KV memory (use mn_memfile_read_embd)");
    size_t n = mf->blocks_bytes / 2 / elem_size(mf->info.elem_type);
    size_t half = mf->blocks_bytes / 2;
    if (k) convert(mf->payload, n, mf->info.elem_type, k);
    if (v) convert(mf->payload + half, n, mf->info.elem_type, v);
    return 0;
}

int mn_memfile_read_embd(const mn_memfile *mf, float *embd) {
    if (!mf || !embd) return mn_error(MN_EINVAL, "memory file: NULL argument");
    if (mf->info.kind != MN_MEMFILE_EMBD)
        return mn_error(MN_EINVAL, "memory file holds KV memory, not embeddings (use mn_memfile_read_kv)");
    convert(mf->payload, mf->blocks_bytes / elem_size(mf->info.elem_type), mf->info.elem_type, embd);
    return 0;
}

int mn_memfile_read_raw(const mn_memfile *mf, int32_t *ids) {
    if (!mf || (!ids && mf->info.n_raw)) return mn_error(MN_EINVAL, "memory file: NULL argument");
    const uint8_t *p = mf->payload + mf->blocks_bytes;
    for (int32_t i = 0; i < mf->info.n_raw; i++) {
        const uint32_t v = get_u32(p + 4 * (size_t)i);
        if (v > INT32_MAX) return mn_error(MN_EFORMAT, "memory file: raw token %d is out of range (%u)", (int)i, (unsigned)v);
        ids[i] = (int32_t)v;
    }
    return 0;
}

int mn_memfile_read_exact(const mn_memfile *mf, int32_t *ids, float *rep, float *rep_sh) {
    if (!mf) return mn_error(MN_EINVAL, "memory file: NULL argument");
    const mn_memfile_info *in = &mf->info;
    const uint8_t *p = mf->payload + mf->exact_off;
    for (int32_t i = 0; ids && i < in->n_exact; i++) {
        const uint32_t v = get_u32(p + 4 * (size_t)i);
        if (v > INT32_MAX) return mn_error(MN_EFORMAT, "memory file: exact token %d is out of range (%u)", (int)i, (unsigned)v);
        ids[i] = (int32_t)v;
    }
    const size_t n = mn_memfile_exact_key_elems(in);
    const uint8_t *k0 = p + 4 * (size_t)in->n_exact, *k1 = k0 + 2 * n;
    for (size_t i = 0; i < n; i++) {
        if (rep) rep[i] = mn_fp16_to_fp32((uint16_t)(k0[2 * i] | k0[2 * i + 1] << 8));
        if (rep_sh) rep_sh[i] = mn_fp16_to_fp32((uint16_t)(k1[2 * i] | k1[2 * i + 1] << 8));
    }
    return 0;
}

const void *mn_memfile_exact_cells(const mn_memfile *mf, size_t *nbytes) {
    if (nbytes) *nbytes = mf ? mf->cells_bytes : 0;
    return mf && mf->cells_bytes ? mf->payload + mf->cells_off : NULL;
}

size_t mn_memfile_exact_key_elems(const mn_memfile_info *in) {
    if (!in || in->n_exact <= 0 || in->exact_seg <= 0) return 0;
    return (size_t)(in->n_exact / in->exact_seg) * (size_t)in->n_layer * (size_t)in->exact_rep * (size_t)in->dim;
}

int mn_memfile_check_model(const mn_memfile *mf, uint64_t model_hash, uint64_t adapter_hash) {
    if (!mf) return mn_error(MN_EINVAL, "memory file: NULL handle");
    const mn_memfile_info *in = &mf->info;
    if (in->model_hash != model_hash)
        return mn_error(MN_EINVAL,
                        "memory file was made with model '%s' (hash %016llx), not this one (hash %016llx)",
                        in->model_name, (unsigned long long)in->model_hash, (unsigned long long)model_hash);
    if (in->adapter_hash != adapter_hash)
        return mn_error(MN_EINVAL,
                        "memory file was made with the '%s' adapter (hash %016llx), not the one loaded (hash %016llx%s)",
                        in->compressor, (unsigned long long)in->adapter_hash, (unsigned long long)adapter_hash,
                        adapter_hash ? "" : ": none");
    return 0;
}
