/* types.h - tensor element types as numbered in GGUF files, and their block
 * geometry. Kernel function tables live in kernels/quant.h; this header is only
 * the static layout facts that the GGUF reader needs to validate tensor sizes.
 */
#ifndef MN_TYPES_H
#define MN_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* Values are fixed by the GGUF format (ggml_type); gaps are types mnemo does not read. */
typedef enum {
    MN_TYPE_F32 = 0,
    MN_TYPE_F16 = 1,
    MN_TYPE_Q4_0 = 2,
    MN_TYPE_Q4_1 = 3,
    MN_TYPE_Q5_0 = 6,
    MN_TYPE_Q5_1 = 7,
    MN_TYPE_Q8_0 = 8,
    MN_TYPE_Q8_1 = 9,
    MN_TYPE_Q2_K = 10,
    MN_TYPE_Q3_K = 11,
    MN_TYPE_Q4_K = 12,
    MN_TYPE_Q5_K = 13,
    MN_TYPE_Q6_K = 14,
    MN_TYPE_Q8_K = 15,
    MN_TYPE_BF16 = 30,
    MN_TYPE_COUNT = 40
} mn_type;

typedef struct {
    const char *name; /* "q4_1"; NULL for an unknown/unsupported id */
    int32_t blck;     /* elements per block */
    int32_t bytes;    /* bytes per block */
} mn_type_layout;

/* Layout of a type id, or NULL when the id is not one mnemo knows. Knowing a
 * layout does not imply kernels exist (e.g. Q2_K is known for size checks). */
const mn_type_layout *mn_type_layout_get(int type);

/* Bytes of a row of n elements; 0 if n is not a multiple of the block size or
 * the type is unknown. */
size_t mn_type_row_bytes(int type, int64_t n);

#endif
