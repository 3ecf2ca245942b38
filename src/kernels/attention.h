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

void mn_attn_group_scalar(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_group_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                        const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);
void mn_attn_group_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch);

#endif
