/* gguf.h - bounds-checked reader for GGUF v2/v3 files.
 *
 * The file is memory-mapped read-only; metadata values and tensor data point
 * into the mapping and stay valid until mn_gguf_free(). Every count, length,
 * offset and type is validated while parsing, before anything is allocated
 * from it, so a hostile file yields MN_EFORMAT with a message, never a crash.
 */
#ifndef MN_GGUF_H
#define MN_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "types.h"

typedef enum {
    MN_GGUF_UINT8 = 0,
    MN_GGUF_INT8 = 1,
    MN_GGUF_UINT16 = 2,
    MN_GGUF_INT16 = 3,
    MN_GGUF_UINT32 = 4,
    MN_GGUF_INT32 = 5,
    MN_GGUF_FLOAT32 = 6,
    MN_GGUF_BOOL = 7,
    MN_GGUF_STRING = 8,
    MN_GGUF_ARRAY = 9,
    MN_GGUF_UINT64 = 10,
    MN_GGUF_INT64 = 11,
    MN_GGUF_FLOAT64 = 12,
    MN_GGUF_NTYPES
} mn_gguf_vtype;

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} mn_gguf_str;

#define MN_GGUF_MAX_DIMS 4

typedef struct {
    const char *name;              /* NUL-terminated copy owned by the reader */
    int n_dims;                    /* 1..4 */
    int64_t ne[MN_GGUF_MAX_DIMS];  /* ne[0] is the contiguous dimension; unused dims are 1 */
    int type;                      /* mn_type */
    uint64_t offset;               /* relative to the start of the data section */
    size_t nbytes;                 /* exact size of the tensor data */
    const void *data;              /* points into the mapping */
} mn_gguf_tensor;

typedef struct mn_gguf mn_gguf;

/* Maps and parses `path`. On success *out owns the mapping. */
int mn_gguf_open(const char *path, mn_gguf **out);
/* Parses a caller-owned buffer (kept alive by the caller until free); for tests and fuzzing. */
int mn_gguf_open_memory(const void *data, size_t size, mn_gguf **out);
void mn_gguf_free(mn_gguf *g);

uint32_t mn_gguf_version(const mn_gguf *g);
size_t mn_gguf_file_size(const mn_gguf *g);
const void *mn_gguf_base(const mn_gguf *g); /* start of the mapping */

/* --- metadata --- */
int64_t mn_gguf_n_kv(const mn_gguf *g);
/* Index of `key`, or -1. */
int64_t mn_gguf_find_key(const mn_gguf *g, const char *key);
mn_gguf_str mn_gguf_key_at(const mn_gguf *g, int64_t i);
mn_gguf_vtype mn_gguf_kv_type(const mn_gguf *g, int64_t i);
/* Raw little-endian bytes of scalar value i in the mapping (unaligned; for
 * copying metadata verbatim). NULL if i is out of range. */
const void *mn_gguf_kv_raw(const mn_gguf *g, int64_t i);

/* Typed getters by key. Return 0, MN_ENOTFOUND if absent, MN_EFORMAT if the
 * stored type cannot represent the request (integers convert between widths
 * when the value fits; floats accept f32/f64). */
int mn_gguf_get_u32(const mn_gguf *g, const char *key, uint32_t *out);
int mn_gguf_get_i64(const mn_gguf *g, const char *key, int64_t *out);
int mn_gguf_get_f32(const mn_gguf *g, const char *key, float *out);
int mn_gguf_get_bool(const mn_gguf *g, const char *key, int *out);
int mn_gguf_get_str(const mn_gguf *g, const char *key, mn_gguf_str *out);

/* Arrays: element type and count. For numeric arrays *data points at the
 * packed little-endian elements in the mapping (NOT necessarily aligned for
 * the element type: copy with memcpy rather than casting to float* etc.). String arrays are read with
 * mn_gguf_arr_str (the reader indexes them at open time). */
int mn_gguf_get_arr(const mn_gguf *g, const char *key, mn_gguf_vtype *elem_type, uint64_t *n,
                    const void **data);
/* i-th string of the string array stored under key index `kv`. */
mn_gguf_str mn_gguf_arr_str(const mn_gguf *g, int64_t kv, uint64_t i);

/* --- tensors --- */
int64_t mn_gguf_n_tensors(const mn_gguf *g);
const mn_gguf_tensor *mn_gguf_tensor_at(const mn_gguf *g, int64_t i);
/* NULL if absent. */
const mn_gguf_tensor *mn_gguf_find_tensor(const mn_gguf *g, const char *name);

/* --- writer (tests, adapters, memory files) --- */
typedef struct mn_gguf_writer mn_gguf_writer;
mn_gguf_writer *mn_gguf_writer_create(void);
void mn_gguf_writer_free(mn_gguf_writer *w);
int mn_gguf_writer_set_u32(mn_gguf_writer *w, const char *key, uint32_t v);
int mn_gguf_writer_set_i32(mn_gguf_writer *w, const char *key, int32_t v);
int mn_gguf_writer_set_u64(mn_gguf_writer *w, const char *key, uint64_t v);
int mn_gguf_writer_set_f32(mn_gguf_writer *w, const char *key, float v);
int mn_gguf_writer_set_bool(mn_gguf_writer *w, const char *key, int v);
int mn_gguf_writer_set_str(mn_gguf_writer *w, const char *key, const char *v);
/* Any fixed-size scalar type (u8..f64, bool): *v holds one host-order value of
 * that type (e.g. an int8_t for MN_GGUF_INT8, a double for MN_GGUF_FLOAT64,
 * a uint8_t 0/1 for MN_GGUF_BOOL). */
int mn_gguf_writer_set_scalar(mn_gguf_writer *w, const char *key, mn_gguf_vtype type,
                              const void *v);
/* Numeric array: n elements of elem_type copied from data. */
int mn_gguf_writer_set_arr(mn_gguf_writer *w, const char *key, mn_gguf_vtype elem_type, uint64_t n,
                           const void *data);
/* String array: n NUL-terminated strings (or explicit lengths if lens != NULL). */
int mn_gguf_writer_set_arr_str(mn_gguf_writer *w, const char *key, uint64_t n,
                               const char *const *strs, const uint64_t *lens);
/* Adds a tensor; data (nbytes = row_bytes(type, ne[0]) * ne[1]*ne[2]*ne[3]) is copied. */
int mn_gguf_writer_add_tensor(mn_gguf_writer *w, const char *name, int type, int n_dims,
                              const int64_t *ne, const void *data);
/* Setting an existing key replaces its value. Tensor names are limited to 63
 * bytes (ggml's limit) so written files also load in llama.cpp. */
/* Writes version-3 GGUF with 32-byte alignment (or a u32 general.alignment if
 * set) to path atomically (temp file + fsync + rename). The writer is not
 * consumed; free it with mn_gguf_writer_free. */
int mn_gguf_writer_write(mn_gguf_writer *w, const char *path);

#endif
