/* quant_impl.h - private to src/kernels/quant*.c: GGUF block layouts and the
 * per-ISA function tables that quant.c merges into the public traits.
 *
 * Block layouts are those of ggml/GGUF (facts of the file format). All structs
 * are packed (alignment 1) because rows inside a mapped file or an activation
 * buffer are only as aligned as their block size allows; fields are read by
 * value, never through member pointers of wider types.
 */
#ifndef MN_QUANT_IMPL_H
#define MN_QUANT_IMPL_H

#include <stdint.h>
#include <string.h>

#include "quant.h"

#define MN_QK 32    /* elements per block of the 32-element types */
#define MN_QK_K 256 /* elements per K-quant super-block */

#define MN_PACKED __attribute__((packed))

/* x = d * (q - 8); byte j: element j in the low nibble, j+16 in the high one. */
typedef struct MN_PACKED {
    uint16_t d;
    uint8_t qs[16];
} mn_block_q4_0;
/* x = d * q + m. */
typedef struct MN_PACKED {
    uint16_t d, m;
    uint8_t qs[16];
} mn_block_q4_1;
/* x = d * (q - 16); the 5th bit of element j is bit j of qh (little endian). */
typedef struct MN_PACKED {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} mn_block_q5_0;
/* x = d * q + m, q 5 bits as above. */
typedef struct MN_PACKED {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} mn_block_q5_1;
/* x = d * q. */
typedef struct MN_PACKED {
    uint16_t d;
    int8_t qs[32];
} mn_block_q8_0;
/* x = d * q; s = d * sum(q) (both fp16), used for the min term of Q4_1/Q5_1. */
typedef struct MN_PACKED {
    uint16_t d, s;
    int8_t qs[32];
} mn_block_q8_1;
/* 8 sub-blocks of 32: x = d*sc[j]*q - dmin*m[j]; scales[12] packs the eight
 * 6-bit sc and eight 6-bit m. qs: for each 64-element chunk c, byte 32c+l holds
 * element 64c+l (low nibble) and 64c+32+l (high nibble). */
typedef struct MN_PACKED {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} mn_block_q4_K;
/* 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q 6 bits split into ql
 * (low 4) and qh (high 2); see quant.c for the interleaving. */
typedef struct MN_PACKED {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} mn_block_q6_K;
/* Activation type for the K-quants: float d, bsums[j] = sum of qs[16j..16j+15]. */
typedef struct MN_PACKED {
    float d;
    int8_t qs[256];
    int16_t bsums[16];
} mn_block_q8_K;

_Static_assert(sizeof(mn_block_q4_0) == 18, "q4_0 size");
_Static_assert(sizeof(mn_block_q4_1) == 20, "q4_1 size");
_Static_assert(sizeof(mn_block_q5_0) == 22, "q5_0 size");
_Static_assert(sizeof(mn_block_q5_1) == 24, "q5_1 size");
_Static_assert(sizeof(mn_block_q8_0) == 34, "q8_0 size");
_Static_assert(sizeof(mn_block_q8_1) == 36, "q8_1 size");
_Static_assert(sizeof(mn_block_q4_K) == 144, "q4_K size");
_Static_assert(sizeof(mn_block_q6_K) == 210, "q6_K size");
_Static_assert(sizeof(mn_block_q8_K) == 292, "q8_K size");

/* 6-bit scale and min j (0..7) of a Q4_K super-block. */
static inline void mn_q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* One ISA's kernels for one type; NULL members fall back to the next lower ISA. */
typedef struct {
    void (*to_float)(const void *x, float *y, int64_t n);
    void (*from_float)(const float *x, void *y, int64_t n);
    void (*vec_dot)(int64_t n, float *s, const void *w, const void *x);
} mn_qfns;

/* Tables defined in quant_avx2.c / quant_avx512.c (indexed by mn_type). */
extern const mn_qfns mn_qfns_avx2[MN_TYPE_COUNT];
extern const mn_qfns mn_qfns_avx512[MN_TYPE_COUNT];
extern const mn_vec_ops mn_vec_ops_avx2;
extern const mn_vec_ops mn_vec_ops_avx512;

/* ISA-specific mn_gemm_q for (wtype -> its vec_dot_type); return 1 when they
 * handled the call, 0 to let the caller fall back to vec_dot loops. */
int mn_gemm_avx2(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1,
                 const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy);
int mn_gemm_avx512(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1,
                   const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy);

/* Per-thread scratch of at least `bytes` bytes, 64-byte aligned, reused across
 * calls (freed at thread exit); NULL when allocation fails. */
void *mn_quant_scratch(size_t bytes);

static inline uint16_t mn_rd16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t mn_rd32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#endif
