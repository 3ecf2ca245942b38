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

void mn_attn_group_avx2(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                        const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch) {
    if (G > GMAX || D % 8 || D > 256) {
        mn_attn_group_scalar(G, D, n, q, scale, K, V, ld, mask, out, scratch);
        return;
    }
    float mx[GMAX];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    /* scores: each K row converted once, dotted with all G queries */
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) {
            for (int g = 0; g < G; g++) scratch[(int64_t)g * n + j] = -INFINITY;
            continue;
        }
        const uint16_t *k = K + (size_t)j * ld;
        __m256 acc[GMAX];
        for (int g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
        for (int i = 0; i < D; i += 8) {
            __m256 kv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i)));
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
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n;
        /* masked (-inf) scores give 0; the sum in double keeps masks and batch
         * splits from changing the result, as the scalar kernel's sequential sum */
        inv[g] = (float)(1.0 / vo->exp_sum(n, s, mx[g]));
    }
    /* values: each V row converted once, accumulated into all G outputs */
    for (int g = 0; g < G; g++) memset(out + (int64_t)g * D, 0, sizeof(float) * (size_t)D);
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) continue;
        const uint16_t *v = V + (size_t)j * ld;
        for (int i = 0; i < D; i += 8) {
            __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
            for (int g = 0; g < G; g++) {
                float *o = out + (int64_t)g * D + i;
                _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(scratch[(int64_t)g * n + j]), vv, _mm256_loadu_ps(o)));
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int i = 0; i < D; i++) out[(int64_t)g * D + i] *= inv[g];
}
