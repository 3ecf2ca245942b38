/* attention_avx2.c - grouped attention kernel with AVX2/F16C/FMA (see attention.h). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/attention.h"

#define GMAX 16

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The row kernel over n key rows. part NULL: normalised output in out (the
 * group kernel). part non-NULL: the unnormalised sums in part, then the
 * maxima and sums of exponentials of this key range (attention.h). */
/* Lanes i .. i+7 of a cached row (bytes): f16 values, or (q8) q8_0 blocks, d * q in f32. */
static inline __attribute__((always_inline)) __m256 row8(const uint8_t *row, int i, const int q8) {
    if (q8) {
        const uint8_t *b = row + (size_t)(i / MN_Q8_BLOCK) * MN_Q8_BYTES;
        uint16_t h;
        memcpy(&h, b, 2);
        const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + i % MN_Q8_BLOCK))));
        return _mm256_mul_ps(x, _mm256_set1_ps(_cvtsh_ss(h)));
    }
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + (size_t)i * 2)));
}

/* K, V: bytes, ld: the row stride in bytes; q8 (a constant after inlining): q8_0 rows, else f16. */
static inline __attribute__((always_inline)) void group_impl(int G, int D, int64_t n, const float *q, float scale,
                                                             const uint8_t *K, const uint8_t *V, size_t ld,
                                                             const int q8, const uint8_t *mask, float *out,
                                                             float *part, float *scratch) {
    if (part) out = part;
    float mx[GMAX];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    /* scores: each K row converted once, dotted with all G queries */
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) {
            for (int g = 0; g < G; g++) scratch[(int64_t)g * n + j] = -INFINITY;
            continue;
        }
        const uint8_t *k = K + (size_t)j * ld;
        __m256 acc[GMAX];
        for (int g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (int i = 0; i < D; i += 8) {
            __m256 kv = row8(k, i, q8);
            for (int g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (int64_t)g * D + i), kv, acc[g]);
        }
        for (int g = 0; g < G; g++) {
            float s = hsum256(acc[g]) * scale;
            scratch[(int64_t)g * n + j] = s;
            if (s > mx[g]) mx[g] = s;
        }
    }
    float inv[GMAX];
    const mn_vec_ops *vo = mn_vec_get_isa(MN_ISA_AVX2); /* this kernel runs only where it exists */
    mn_attn_row_sums(G, D, n, vo, mx, scratch, inv, part);
    /* values: each V row converted once, accumulated into all G outputs */
    for (int g = 0; g < G; g++) memset(out + (int64_t)g * D, 0, sizeof(float) * (size_t)D);
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) continue;
        const uint8_t *v = V + (size_t)j * ld;
        for (int i = 0; i < D; i += 8) {
            __m256 vv = row8(v, i, q8);
            for (int g = 0; g < G; g++) {
                float *o = out + (int64_t)g * D + i;
                _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(scratch[(int64_t)g * n + j]), vv, _mm256_loadu_ps(o)));
            }
        }
    }
    if (part) return;
    for (int g = 0; g < G; g++)
        for (int i = 0; i < D; i++) out[(int64_t)g * D + i] *= inv[g];
}

void mn_attn_group_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                        const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % 8 || D > 256) {
        mn_attn_group_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    group_impl(G, D, n, q, scale, (const uint8_t *)K, (const uint8_t *)V, 2 * ld, 0, mask, out, NULL, scratch);
}

void mn_attn_part_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                       const uint16_t *V, size_t ld, const uint8_t *mask, float *part, float *scratch) {
    if (G > GMAX || D % 8 || D > 256) {
        mn_attn_part_scalar(G, D, n, q, scale, K, V, ld, mask, part, scratch);
        return;
    }
    group_impl(G, D, n, q, scale, (const uint8_t *)K, (const uint8_t *)V, 2 * ld, 0, mask, NULL, part, scratch);
}

void mn_attn_group_q8_avx2(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                           size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % MN_Q8_BLOCK || D > 256) {
        mn_attn_group_q8_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    group_impl(G, D, n, q, scale, K, V, ld, 1, mask, out, NULL, scratch);
}

void mn_attn_part_q8_avx2(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                          size_t ld, const uint8_t *mask, float *part, float *scratch) {
    if (G > GMAX || D % MN_Q8_BLOCK || D > 256) {
        mn_attn_part_q8_scalar(G, D, n, q, scale, K, V, ld, mask, part, scratch);
        return;
    }
    group_impl(G, D, n, q, scale, K, V, ld, 1, mask, NULL, part, scratch);
}

/* ---------------------------------------------------------------- tiled */

#include "kernels/vexp_simd.h"

static inline float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* lanes whose bit is clear become -inf */
static inline __m256 keep256(__m256 v, unsigned bits) {
    const __m256i sel = _mm256_and_si256(_mm256_set1_epi32((int)bits), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128));
    const __m256 on = _mm256_castsi256_ps(_mm256_cmpeq_epi32(sel, _mm256_setzero_si256()));
    return _mm256_blendv_ps(v, _mm256_set1_ps(-INFINITY), on);
}

typedef __m256 vec;
#define VW 8
#define BK MN_ATTN_BK
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_VMAX(a, b) _mm256_max_ps(a, b)
#define V_SUB_S(v, x) _mm256_sub_ps(v, _mm256_set1_ps(x))
#define V_EXP(v) mn_exp256(v)
#define V_MAX(v) hmax256(v)
#define V_SUM(v) hsum256(v)
#define V_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define V_KEEP(v, bits) keep256(v, (unsigned)(bits))
#define TILE_FN mn_attn_tile_avx2
#define GROUP_FN mn_attn_group_avx2
#define TILE_PAIR 0 /* 16 registers: two row-heads' accumulators would spill */
#include "kernels/attention_tile_impl.h"

/* the same tiled kernel over a q8_0 cache (attention.h) */
#undef TILE_FN
#undef GROUP_FN
#define V_Q8ROW(p, c) row8((p), (c) * VW, 1)
#define TILE_Q8 1
#define TILE_FN mn_attn_tile_q8_avx2
#define GROUP_FN mn_attn_group_q8_avx2
#define TILE_PAIR 0
#include "kernels/attention_tile_impl.h"
