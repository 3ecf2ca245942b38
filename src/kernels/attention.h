/* attention.h - softmax attention of a group of query heads over an f16 KV cache.
 *
 * One call handles the G query heads that share a KV head (grouped-query
 * attention), so each cached key and value row is loaded and converted from f16
 * once for all G heads. Scalar reference plus AVX2 and AVX-512 variants, chosen
 * at run time like the quantised kernels.
 *
 * Shapes: q (G, D) f32; K, V: n rows of D f16, row j at K + j*ld; out (G, D);
 * scratch: G*n floats (scores).
 */
#ifndef MN_ATTENTION_H
#define MN_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

typedef void (*mn_attn_group_fn)(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                                 const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);

/* out[g] = sum_j softmax_j(scale * q[g].K_j) V_j for g < G, over the rows j < n
 * with mask[j] != 0 (mask NULL: all n rows). At least one row must be visible. */
mn_attn_group_fn mn_attn_group_get(void);
mn_attn_group_fn mn_attn_group_get_isa(mn_isa isa); /* NULL if the CPU lacks the ISA */

/* Tiled attention (FlashAttention-2 style, attention_tile_impl.h) of nq query
 * tokens' G heads that share one KV head: query row i (G*D floats at
 * q + i*ldq) sees the key rows j < lim[i] with mask[i][j] != 0 (mask NULL,
 * or mask[i] NULL: all of them); its output goes to out + i*ldo. Each row
 * needs at least one visible key. The result of a row does not depend on the
 * other rows of the call. scratch: mn_attn_tile_scratch() floats. The scalar
 * variant runs the reference kernel above per row. */
#define MN_ATTN_BK 64 /* keys per tile */
typedef void (*mn_attn_tile_fn)(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint16_t *K,
                                const uint16_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask,
                                float *out, size_t ldo, float *scratch);
size_t mn_attn_tile_scratch(int G, int D, int nq, int64_t max_lim);
mn_attn_tile_fn mn_attn_tile_get(void);
mn_attn_tile_fn mn_attn_tile_get_isa(mn_isa isa); /* NULL if the CPU lacks the ISA */

void mn_attn_tile_scalar(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint16_t *K,
                         const uint16_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                         size_t ldo, float *scratch);
void mn_attn_tile_avx2(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint16_t *K,
                       const uint16_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                       size_t ldo, float *scratch);
void mn_attn_tile_avx512(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint16_t *K,
                         const uint16_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                         size_t ldo, float *scratch);

/* Split decode (flash-decoding): one query token's G heads over a range of
 * key rows, so that a long context's keys can be dealt to several threads
 * and merged. K, V and mask point at the range's first row; n rows. Writes a
 * part of MN_ATTN_PART(G, D) floats: the G x D unnormalised sums
 * sum_j exp(s_j - m) V_j, then the G maxima m, then the G sums of exp(s_j - m)
 * (a range with no visible row: m = -inf, sum 0, zeros). mn_attn_combine
 * merges np parts (stride MN_ATTN_PART(G, D)) into the normalised (G, D)
 * output; one part over all rows gives the group kernel's result. scratch:
 * G*n floats. */
#define MN_ATTN_PART(G, D) ((size_t)(G) * (size_t)(D) + 2 * (size_t)(G))
typedef void (*mn_attn_part_fn)(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                                const uint16_t *V, size_t ld, const uint8_t *mask, float *part, float *scratch);
mn_attn_part_fn mn_attn_part_get(void);
mn_attn_part_fn mn_attn_part_get_isa(mn_isa isa); /* NULL if the CPU lacks the ISA */
void mn_attn_combine(int G, int D, int np, const float *parts, float *out);
/* The SIMD row kernels' middle step: each head's scores (scratch, G x n) to
 * exp(s - mx[g]) in place, inv[g] = 1 / their sum (in double), and a part's
 * maxima and sums when part is non-NULL; a head with mx = -inf (no visible
 * row) gets zeros. */
void mn_attn_row_sums(int G, int D, int64_t n, const mn_vec_ops *vo, const float *mx, float *scratch, float *inv,
                      float *part);
void mn_attn_part_scalar(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K, const uint16_t *V,
                         size_t ld, const uint8_t *mask, float *part, float *scratch);
void mn_attn_part_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K, const uint16_t *V,
                       size_t ld, const uint8_t *mask, float *part, float *scratch);
void mn_attn_part_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K, const uint16_t *V,
                         size_t ld, const uint8_t *mask, float *part, float *scratch);

void mn_attn_group_scalar(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_group_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                        const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_group_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);

/* ------------------------------------------------------ q8_0 cache
 * The same tiled and split-decode kernels over an 8-bit cache: each cached
 * row is blocks of 32 values (mn_block_q8_0: an f16 scale d, 32 int8 q; the
 * value is d * q, computed in f32 as llama.cpp's q8_0 does). K and V point at
 * the head's first block, ld is the row stride in BYTES, D a multiple of 32.
 * A row is dequantised once where the f16 kernels convert it, so the
 * arithmetic after that is theirs. */
#define MN_Q8_BLOCK 32
#define MN_Q8_BYTES 34 /* sizeof(mn_block_q8_0) */
typedef void (*mn_attn_tile_q8_fn)(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint8_t *K,
                                   const uint8_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask,
                                   float *out, size_t ldo, float *scratch);
typedef void (*mn_attn_part_q8_fn)(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K,
                                   const uint8_t *V, size_t ld, const uint8_t *mask, float *part, float *scratch);
typedef void (*mn_attn_group_q8_fn)(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K,
                                    const uint8_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);
mn_attn_tile_q8_fn mn_attn_tile_q8_get_isa(mn_isa isa); /* NULL if the CPU lacks the ISA */
mn_attn_part_q8_fn mn_attn_part_q8_get_isa(mn_isa isa);
mn_attn_group_q8_fn mn_attn_group_q8_get_isa(mn_isa isa);
/* D values of a q8_0 row (from its first block) to floats */
void mn_q8_row_to_f32(const uint8_t *row, int D, float *out);

void mn_attn_group_q8_scalar(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                             size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_part_q8_scalar(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                            size_t ld, const uint8_t *mask, float *part, float *scratch);
void mn_attn_tile_q8_scalar(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint8_t *K,
                            const uint8_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                            size_t ldo, float *scratch);
void mn_attn_group_q8_avx2(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                           size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_part_q8_avx2(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                          size_t ld, const uint8_t *mask, float *part, float *scratch);
void mn_attn_tile_q8_avx2(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint8_t *K,
                          const uint8_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                          size_t ldo, float *scratch);
void mn_attn_group_q8_avx512(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                             size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_part_q8_avx512(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                            size_t ld, const uint8_t *mask, float *part, float *scratch);
void mn_attn_tile_q8_avx512(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint8_t *K,
                            const uint8_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                            size_t ldo, float *scratch);

#endif
