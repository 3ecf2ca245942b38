/* attention_avx512.c - grouped attention kernel with AVX-512 (see attention.h).
 *
 * For D = 64 a key row is 128 bytes: one 512-bit load, two conversions. Scores
 * for 16 consecutive rows are reduced together (a transpose-free tree of
 * horizontal adds per row is the cost we avoid by keeping G accumulators). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/attention.h"

#define GMAX 16

/* a[r]'s lane sum in lane r: pairs of rows, then of 64-bit halves, then of
 * 128-bit lanes, adding as it transposes (45 shuffles and adds for 16 rows). */
static inline __m512 sum16(const __m512 *a) {
    __m512 v[8], w[4];
    for (int i = 0; i < 8; i++) /* per 128-bit lane: r0+r2, r1... */
        v[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) { /* per 128-bit lane: rows 4i..4i+3, each a partial sum of that lane */
        const __m512d x = _mm512_castps_pd(v[2 * i]), y = _mm512_castps_pd(v[2 * i + 1]);
        w[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 u0 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
    const __m512 u1 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x88), _mm512_shuffle_f32x4(w[2], w[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, 0x88), _mm512_shuffle_f32x4(u0, u1, 0xDD));
}

/* The row kernel over n key rows. part NULL: normalised output in out (the
 * group kernel). part non-NULL: the unnormalised sums, maxima and sums of
 * exponentials of a key range (attention.h, mn_attn_part_*); out unused. */
/* Lanes c*16 .. c*16+15 of a cached row (bytes): f16 values, or (q8) q8_0 blocks, d * q in f32. */
static inline __attribute__((always_inline)) __m512 row16(const uint8_t *row, int c, const int q8) {
    if (q8) {
        const uint8_t *b = row + (size_t)(c >> 1) * MN_Q8_BYTES;
        uint16_t h;
        memcpy(&h, b, 2);
        const __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + (c & 1) * 16))));
        return _mm512_mul_ps(x, _mm512_set1_ps(_cvtsh_ss(h)));
    }
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + (size_t)c * 32)));
}

/* K, V: bytes, ld: the row stride in bytes; q8 (a constant after inlining): q8_0 rows, else f16. */
static inline __attribute__((always_inline)) void group_impl(int G, int D, int64_t n, const float *q, float scale,
                                                             const uint8_t *K, const uint8_t *V, size_t ld,
                                                             const int q8, const uint8_t *mask, float *out,
                                                             float *part, float *scratch) {
    const int row_bytes = q8 ? D / MN_Q8_BLOCK * MN_Q8_BYTES : 2 * D;
    const int nv = D / 16;
    __m512 qv[GMAX][16];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < nv; c++) qv[g][c] = _mm512_loadu_ps(q + (int64_t)g * D + c * 16);
    float mx[GMAX];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    /* Blocks of 16 rows: 16 partial dot products per head, summed across lanes
     * together (sum16), a few shuffles per row instead of a full reduction each. */
    int64_t j = 0;
    if (n >= 16) {
        __m512 mxv[GMAX];
        for (int g = 0; g < G; g++) mxv[g] = _mm512_set1_ps(-INFINITY);
        float kf[16 * 256];
        for (; j + 16 <= n; j += 16) {
            __mmask16 vis = 0xFFFF;
            if (mask) vis = _mm_cmpneq_epi8_mask(_mm_loadu_si128((const __m128i *)(mask + j)), _mm_setzero_si128());
            if (!vis) {
                for (int g = 0; g < G; g++)
                    _mm512_storeu_ps(scratch + (int64_t)g * n + j, _mm512_set1_ps(-INFINITY));
                continue;
            }
            /* Decode streams the cache from memory: keys two blocks ahead, and this
             * block's values into L2 for the value pass over the same rows */
            for (int r = 0; r < 16; r++) {
                const char *kp = (const char *)(K + (size_t)(j + 32 + r) * ld), *vp = (const char *)(V + (size_t)(j + r) * ld);
                for (int b = 0; b < row_bytes; b += 64) {
                    if (j + 32 + r < n) _mm_prefetch(kp + b, _MM_HINT_T0);
                    _mm_prefetch(vp + b, _MM_HINT_T1);
                }
            }
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) {
                const uint8_t *k = K + (size_t)(j + r) * ld;
                for (int c = 0; c < nv; c++) _mm512_storeu_ps(kf + r * D + c * 16, row16(k, c, q8));
            }
            for (int g = 0; g < G; g++) {
                __m512 a[16];
                _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) a[r] = _mm512_mul_ps(qv[g][0], _mm512_loadu_ps(kf + r * D));
                for (int c = 1; c < nv; c++) {
                    const __m512 qc = qv[g][c];
                    _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)
                        a[r] = _mm512_fmadd_ps(qc, _mm512_loadu_ps(kf + r * D + c * 16), a[r]);
                }
                __m512 sv = _mm512_mul_ps(sum16(a), _mm512_set1_ps(scale));
                sv = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), vis, sv);
                _mm512_storeu_ps(scratch + (int64_t)g * n + j, sv);
                mxv[g] = _mm512_max_ps(mxv[g], sv);
            }
        }
        for (int g = 0; g < G; g++) mx[g] = _mm512_reduce_max_ps(mxv[g]);
    }
    for (; j < n; j++) {
        if (mask && !mask[j]) {
            for (int g = 0; g < G; g++) scratch[(int64_t)g * n + j] = -INFINITY;
            continue;
        }
        const uint8_t *k = K + (size_t)j * ld;
        __m512 kc[16];
        for (int c = 0; c < nv; c++) kc[c] = row16(k, c, q8);
        for (int g = 0; g < G; g++) {
            __m512 acc = _mm512_mul_ps(qv[g][0], kc[0]);
            for (int c = 1; c < nv; c++) acc = _mm512_fmadd_ps(qv[g][c], kc[c], acc);
            float s = _mm512_reduce_add_ps(acc) * scale;
            scratch[(int64_t)g * n + j] = s;
            if (s > mx[g]) mx[g] = s;
        }
    }
    float inv[GMAX];
    const mn_vec_ops *vo = mn_vec_get_isa(MN_ISA_AVX512); /* this kernel runs only where it exists */
    mn_attn_row_sums(G, D, n, vo, mx, scratch, inv, part);
    __m512 acc[GMAX][16];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < nv; c++) acc[g][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) continue;
        const uint8_t *v = V + (size_t)j * ld;
        if (j + 8 < n)
            for (int b = 0; b < row_bytes; b += 64) _mm_prefetch((const char *)(v + 8 * ld) + b, _MM_HINT_T0);
        __m512 vc[16];
        for (int c = 0; c < nv; c++) vc[c] = row16(v, c, q8);
        for (int g = 0; g < G; g++) {
            __m512 p = _mm512_set1_ps(scratch[(int64_t)g * n + j]);
            for (int c = 0; c < nv; c++) acc[g][c] = _mm512_fmadd_ps(p, vc[c], acc[g][c]);
        }
    }
    for (int g = 0; g < G; g++) {
        if (part) {
            for (int c = 0; c < nv; c++) _mm512_storeu_ps(part + (int64_t)g * D + c * 16, acc[g][c]);
            continue;
        }
        __m512 iv = _mm512_set1_ps(inv[g]);
        for (int c = 0; c < nv; c++) _mm512_storeu_ps(out + (int64_t)g * D + c * 16, _mm512_mul_ps(acc[g][c], iv));
    }
}

void mn_attn_group_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % 16 || D > 256) {
        mn_attn_group_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    const uint8_t *Kb = (const uint8_t *)K, *Vb = (const uint8_t *)V;
    if (D == 64) group_impl(G, 64, n, q, scale, Kb, Vb, 2 * ld, 0, mask, out, NULL, scratch); /* the common head size */
    else group_impl(G, D, n, q, scale, Kb, Vb, 2 * ld, 0, mask, out, NULL, scratch);
}

void mn_attn_part_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                         const uint16_t *V, size_t ld, const uint8_t *mask, float *part, float *scratch) {
    if (G > GMAX || D % 16 || D > 256) {
        mn_attn_part_scalar(G, D, n, q, scale, K, V, ld, mask, part, scratch);
        return;
    }
    const uint8_t *Kb = (const uint8_t *)K, *Vb = (const uint8_t *)V;
    if (D == 64) group_impl(G, 64, n, q, scale, Kb, Vb, 2 * ld, 0, mask, NULL, part, scratch);
    else group_impl(G, D, n, q, scale, Kb, Vb, 2 * ld, 0, mask, NULL, part, scratch);
}

void mn_attn_group_q8_avx512(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                             size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % MN_Q8_BLOCK || D > 256) {
        mn_attn_group_q8_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    if (D == 64) group_impl(G, 64, n, q, scale, K, V, ld, 1, mask, out, NULL, scratch);
    else group_impl(G, D, n, q, scale, K, V, ld, 1, mask, out, NULL, scratch);
}

void mn_attn_part_q8_avx512(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                            size_t ld, const uint8_t *mask, float *part, float *scratch) {
    if (G > GMAX || D % MN_Q8_BLOCK || D > 256) {
        mn_attn_part_q8_scalar(G, D, n, q, scale, K, V, ld, mask, part, scratch);
        return;
    }
    if (D == 64) group_impl(G, 64, n, q, scale, K, V, ld, 1, mask, NULL, part, scratch);
    else group_impl(G, D, n, q, scale, K, V, ld, 1, mask, NULL, part, scratch);
}

/* ---------------------------------------------------------------- tiled */

#include "kernels/vexp_simd.h"

typedef __m512 vec;
#define VW 16
#define BK MN_ATTN_BK
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_VMAX(a, b) _mm512_max_ps(a, b)
#define V_SUB_S(v, x) _mm512_sub_ps(v, _mm512_set1_ps(x))
#define V_EXP(v) mn_exp512(v)
#define V_MAX(v) _mm512_reduce_max_ps(v)
#define V_SUM(v) _mm512_reduce_add_ps(v)
#define V_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define V_KEEP(v, bits) _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), (__mmask16)(bits), v)
#define TILE_FN mn_attn_tile_avx512
#define GROUP_FN mn_attn_group_avx512
#define TILE_PAIR 1 /* two row-heads per pass: 32 registers hold both sets of accumulators */
#include "kernels/attention_tile_impl.h"

/* the same tiled kernel over a q8_0 cache (attention.h) */
#undef TILE_FN
#undef GROUP_FN
#define V_Q8ROW(p, c) row16((p), (c), 1)
#define TILE_Q8 1
#define TILE_FN mn_attn_tile_q8_avx512
#define GROUP_FN mn_attn_group_q8_avx512
#define TILE_PAIR 1
#include "kernels/attention_tile_impl.h"
