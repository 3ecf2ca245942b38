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

void mn_attn_group_avx512(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % 16 || D > 256) {
        mn_attn_group_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    const int nv = D / 16;
    __m512 qv[GMAX][16];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < nv; c++) qv[g][c] = _mm512_loadu_ps(q + (int64_t)g * D + c * 16);
    float mx[GMAX];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) {
            for (int g = 0; g < G; g++) scratch[(int64_t)g * n + j] = -INFINITY;
            continue;
        }
        const uint16_t *k = K + (size_t)j * ld;
        __m512 kc[16];
        for (int c = 0; c < nv; c++) kc[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k + c * 16)));
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
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n;
        /* masked (-inf) scores give 0; the sum in double keeps masks and batch
         * splits from changing the result, as the scalar kernel's sequential sum */
        inv[g] = (float)(1.0 / vo->exp_sum(n, s, mx[g]));
    }
    __m512 acc[GMAX][16];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < nv; c++) acc[g][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) continue;
        const uint16_t *v = V + (size_t)j * ld;
        __m512 vc[16];
        for (int c = 0; c < nv; c++) vc[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + c * 16)));
        for (int g = 0; g < G; g++) {
            __m512 p = _mm512_set1_ps(scratch[(int64_t)g * n + j]);
            for (int c = 0; c < nv; c++) acc[g][c] = _mm512_fmadd_ps(p, vc[c], acc[g][c]);
        }
    }
    for (int g = 0; g < G; g++) {
        __m512 iv = _mm512_set1_ps(inv[g]);
        for (int c = 0; c < nv; c++) _mm512_storeu_ps(out + (int64_t)g * D + c * 16, _mm512_mul_ps(acc[g][c], iv));
    }
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
#define V_SUB_S(v, x) _mm512_sub_ps(v, _mm512_set1_ps(x))
#define V_EXP(v) mn_exp512(v)
#define V_MAX(v) _mm512_reduce_max_ps(v)
#define V_SUM(v) _mm512_reduce_add_ps(v)
#define V_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define V_KEEP(v, bits) _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), (__mmask16)(bits), v)
#define TILE_FN mn_attn_tile_avx512
#define GROUP_FN mn_attn_group_avx512
#include "kernels/attention_tile_impl.h"
