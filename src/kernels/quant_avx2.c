/* quant_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c,
 * only called after mn_cpu_isa() has seen those features).
 *
 * Integer parts of every dot product are exact (maddubs pairs never saturate:
 * the unsigned operand is at most 15/31/63 or |w| <= 128 against |a| <= 127),
 * so results differ from the scalar reference only in float summation order.
 * The activation quantizers produce bit-identical blocks to the scalar ones.
 */
#include <immintrin.h>

#include "quant_impl.h"

/* --------------------------------------------------------------- helpers */

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
static inline __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* 16 packed bytes -> 32 unsigned nibbles: low nibbles first, then high ones. */
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i q = load128(qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}
/* 32 bits -> 32 bytes, 0xFF where the bit is set (bit j -> byte j). */
static inline __m256i bits_to_bytes(uint32_t x) {
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000LL, 0x0101010101010101LL,
                                            0x0202020202020202LL, 0x0303030303030303LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}
/* sum of u8 x s8 products in 8 int32 lanes (u <= 127 so no pair saturates,
 * or u <= 128 when s is a sign-applied value with |s| <= 127). */
static inline __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
/* signed x signed via the sign trick (w may be -128; |a| <= 127). */
static inline __m256i dot_ss(__m256i w, __m256i a) {
    return dot_us(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* ------------------------------------------------- activation quantizers */

/* One Q8 block: returns the float d and writes q; *sum = sum(q). Identical to
 * the scalar q8_block (same amax, same 127/amax multiply, RNE rounding). */
static inline float q8_block_avx2(const float *x, int8_t *q, int *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16),
           v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.f, id = amax != 0.0f ? 127.f / amax : 0.0f;
    const __m256 mul = _mm256_set1_ps(id);
    /* cvtps rounds like nearbyintf: current mode, round-to-nearest-even by default */
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, mul));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, mul));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, mul));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, mul));
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *sum = _mm_cvtsi128_si32(s4);
    /* pack: packs interleave 128-bit lanes, fix the order with a permute */
    __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p);
    return d;
}

static void q8_0_from_float_avx2(const float *x, void *vy, int64_t n) {
    mn_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        int s;
        int8_t q[32];
        const float d = q8_block_avx2(x, q, &s);
        y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(y[i].qs, q, 32);
    }
}
static void q8_1_from_float_avx2(const float *x, void *vy, int64_t n) {
    mn_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        int s;
        int8_t q[32];
        const float d = q8_block_avx2(x, q, &s);
        y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        y[i].s = _cvtss_sh(d * (float)s, _MM_FROUND_TO_NEAREST_INT);
        memcpy(y[i].qs, q, 32);
    }
}

/* ------------------------------------------------------------ to_float */

static void f16_to_float_avx2(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(load128(x + 2 * i)));
    for (; i < n; i++) y[i] = h2f(mn_rd16(x + 2 * i));
}
static void f16_from_float_avx2(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + 2 * i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) {
        uint16_t h = mn_fp32_to_fp16(x[i]);
        memcpy(y + 2 * i, &h, 2);
    }
}
static void q8_0_to_float_avx2(const void *vx, float *y, int64_t n) {
    const mn_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(h2f(x[i].d));
        for (int j = 0; j < 32; j += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x[i].qs + j)));
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}
static void q4_1_to_float_avx2(const void *vx, float *y, int64_t n) {
    const mn_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++, y += 32) {
        const __m256 d = _mm256_set1_ps(h2f(x[i].d)), m = _mm256_set1_ps(h2f(x[i].m));
        uint8_t q[32];
        _mm256_storeu_si256((__m256i *)q, nibbles32(x[i].qs));
        for (int j = 0; j < 32; j += 8) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + j)));
            /* same as scalar: q*d + m with two roundings */
            _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), d), m));
        }
    }
}

/* ------------------------------------------------------------- vec_dot */

static void q4_0_q8_0_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const __m256i q = _mm256_sub_epi8(nibbles32(w[i].qs), _mm256_set1_epi8(8));
        const __m256i si = dot_ss(q, load256(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
    }
    *s = hsum8(acc);
}
static void q4_1_q8_1_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_1 *w = vw;
    const mn_block_q8_1 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const __m256i si = dot_us(nibbles32(w[i].qs), load256(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
        summ += h2f(w[i].m) * h2f(x[i].s);
    }
    *s = hsum8(acc) + summ;
}
static void q5_0_q8_0_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q5_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / MN_QK; i++) {
        /* (nibble | bit<<4) - 16 == nibble - (bit ? 0 : 16) */
        const __m256i hb = _mm256_andnot_si256(bits_to_bytes(mn_rd32(w[i].qh)), _mm256_set1_epi8(16));
        const __m256i q = _mm256_sub_epi8(nibbles32(w[i].qs), hb);
        const __m256i si = dot_ss(q, load256(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
    }
    *s = hsum8(acc);
}
static void q5_1_q8_1_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q5_1 *w = vw;
    const mn_block_q8_1 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const __m256i hb = _mm256_and_si256(bits_to_bytes(mn_rd32(w[i].qh)), _mm256_set1_epi8(16));
        const __m256i q = _mm256_or_si256(nibbles32(w[i].qs), hb);
        const __m256i si = dot_us(q, load256(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
        summ += h2f(w[i].m) * h2f(x[i].s);
    }
    *s = hsum8(acc) + summ;
}
static void q8_0_q8_0_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q8_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const __m256i si = dot_ss(load256(w[i].qs), load256(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
    }
    *s = hsum8(acc);
}

static void q4_K_q8_K_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_K *w = vw;
    const mn_block_q8_K *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        int sc[8], mi[8];
        for (int j = 0; j < 8; j++) mn_q4k_scale_min(w[i].scales, j, &sc[j], &mi[j]);
        int sm = 0;
        for (int j = 0; j < 8; j++) sm += mi[j] * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = load256(w[i].qs + 32 * c);
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i plo = _mm256_maddubs_epi16(lo, load256(x[i].qs + 64 * c));
            const __m256i phi = _mm256_maddubs_epi16(hi, load256(x[i].qs + 64 * c + 32));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16((short)sc[2 * c])));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16((short)sc[2 * c + 1])));
        }
        const float dd = x[i].d * h2f(w[i].d);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dd), acc);
        summ += x[i].d * h2f(w[i].dmin) * (float)sm;
    }
    *s = hsum8(acc) - summ;
}

static void q6_K_q8_K_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q6_K *w = vw;
    const mn_block_q8_K *x = vx;
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qh = load256(w[i].qh + 32 * h);
            const __m256i ql0 = load256(w[i].ql + 64 * h), ql1 = load256(w[i].ql + 64 * h + 32);
            for (int k = 0; k < 4; k++) {
                const __m256i ql = (k & 1) ? ql1 : ql0;
                const __m256i lo = (k >> 1) ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4) : _mm256_and_si256(ql, m4);
                __m256i hb;
                switch (k) { /* shift counts must be immediates */
                case 0: hb = qh; break;
                case 1: hb = _mm256_srli_epi16(qh, 2); break;
                case 2: hb = _mm256_srli_epi16(qh, 4); break;
                default: hb = _mm256_srli_epi16(qh, 6); break;
                }
                hb = _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4);
                const __m256i q = _mm256_or_si256(lo, hb); /* 0..63 */
                const int e = 128 * h + 32 * k;            /* first element */
                const __m256i a = load256(x[i].qs + e);
                const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(k32, a));
                const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(w[i].scales[e / 16 + 1]),
                                                     _mm_set1_epi16(w[i].scales[e / 16]));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scv));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(x[i].d * h2f(w[i].d)), acc);
    }
    *s = hsum8(acc);
}

static void f32_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const float *a = vw, *b = vx;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float r = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += a[i] * b[i];
    *s = r;
}
static void f16_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const uint8_t *a = vw, *b = vx;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(a + 2 * i)), _mm256_cvtph_ps(load128(b + 2 * i)), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(a + 2 * i + 16)), _mm256_cvtph_ps(load128(b + 2 * i + 16)), s1);
    }
    float r = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += h2f(mn_rd16(a + 2 * i)) * h2f(mn_rd16(b + 2 * i));
    *s = r;
}
static inline __m256 bf16x8(const uint8_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(p)), 16));
}
static void bf16_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const uint8_t *a = vw, *b = vx;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(bf16x8(a + 2 * i), bf16x8(b + 2 * i), s0);
        s1 = _mm256_fmadd_ps(bf16x8(a + 2 * i + 16), bf16x8(b + 2 * i + 16), s1);
    }
    float r = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += mn_bf16_to_fp32(mn_rd16(a + 2 * i)) * mn_bf16_to_fp32(mn_rd16(b + 2 * i));
    *s = r;
}

const mn_qfns mn_qfns_avx2[MN_TYPE_COUNT] = {
    [MN_TYPE_F32] = {NULL, NULL, f32_dot_avx2},
    [MN_TYPE_F16] = {f16_to_float_avx2, f16_from_float_avx2, f16_dot_avx2},
    [MN_TYPE_BF16] = {NULL, NULL, bf16_dot_avx2},
    [MN_TYPE_Q4_0] = {NULL, NULL, q4_0_q8_0_dot_avx2},
    [MN_TYPE_Q4_1] = {q4_1_to_float_avx2, NULL, q4_1_q8_1_dot_avx2},
    [MN_TYPE_Q5_0] = {NULL, NULL, q5_0_q8_0_dot_avx2},
    [MN_TYPE_Q5_1] = {NULL, NULL, q5_1_q8_1_dot_avx2},
    [MN_TYPE_Q8_0] = {q8_0_to_float_avx2, q8_0_from_float_avx2, q8_0_q8_0_dot_avx2},
    [MN_TYPE_Q8_1] = {NULL, q8_1_from_float_avx2, NULL},
    [MN_TYPE_Q4_K] = {NULL, NULL, q4_K_q8_K_dot_avx2},
    [MN_TYPE_Q6_K] = {NULL, NULL, q6_K_q8_K_dot_avx2},
};

/* ---------------------------------------------------------- float kernels */

static float v2_dot_f16_f32(int64_t n, const uint16_t *a, const float *b) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(a + i)), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(a + i + 8)), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(a + i)), _mm256_loadu_ps(b + i), s0);
    float r = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += h2f(a[i]) * b[i];
    return r;
}
static void v2_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(load128(x + i)), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * h2f(x[i]);
}
static void v2_cvt_f32_f16(int64_t n, const float *x, uint16_t *y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = mn_fp32_to_fp16(x[i]);
}
static float v2_dot_f32(int64_t n, const float *a, const float *b) {
    float r;
    f32_dot_avx2(n, &r, a, b);
    return r;
}
static void v2_axpy_f32(int64_t n, float a, const float *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

const mn_vec_ops mn_vec_ops_avx2 = {v2_dot_f16_f32, v2_axpy_f16, v2_cvt_f32_f16, v2_dot_f32, v2_axpy_f32};

/* ------------------------------------------------------------------ gemm */

/* One weight row against up to 4 tokens: each weight block is unpacked once
 * and dotted with the same block of every token. */
#define GEMM_TT 4

static void gemm_row_q4_1(int64_t nb, const mn_block_q4_1 *w, const uint8_t *X, size_t xs, int tt,
                          float *out) {
    __m256 acc[GEMM_TT];
    float summ[GEMM_TT];
    for (int t = 0; t < GEMM_TT; t++) acc[t] = _mm256_setzero_ps(), summ[t] = 0;
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = nibbles32(w[i].qs);
        const float dw = h2f(w[i].d), mw = h2f(w[i].m);
        for (int t = 0; t < tt; t++) {
            const mn_block_q8_1 *x = (const mn_block_q8_1 *)(X + t * xs) + i;
            const __m256i si = dot_us(q, load256(x->qs));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(dw * h2f(x->d)), acc[t]);
            summ[t] += mw * h2f(x->s);
        }
    }
    for (int t = 0; t < tt; t++) out[t] = hsum8(acc[t]) + summ[t];
}
static void gemm_row_q4_0(int64_t nb, const mn_block_q4_0 *w, const uint8_t *X, size_t xs, int tt,
                          float *out) {
    __m256 acc[GEMM_TT];
    for (int t = 0; t < GEMM_TT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = _mm256_sub_epi8(nibbles32(w[i].qs), _mm256_set1_epi8(8));
        const __m256i qa = _mm256_sign_epi8(q, q);
        const float dw = h2f(w[i].d);
        for (int t = 0; t < tt; t++) {
            const mn_block_q8_0 *x = (const mn_block_q8_0 *)(X + t * xs) + i;
            const __m256i si = dot_us(qa, _mm256_sign_epi8(load256(x->qs), q));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(dw * h2f(x->d)), acc[t]);
        }
    }
    for (int t = 0; t < tt; t++) out[t] = hsum8(acc[t]);
}
static void gemm_row_q8_0(int64_t nb, const mn_block_q8_0 *w, const uint8_t *X, size_t xs, int tt,
                          float *out) {
    __m256 acc[GEMM_TT];
    for (int t = 0; t < GEMM_TT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = load256(w[i].qs);
        const __m256i qa = _mm256_sign_epi8(q, q);
        const float dw = h2f(w[i].d);
        for (int t = 0; t < tt; t++) {
            const mn_block_q8_0 *x = (const mn_block_q8_0 *)(X + t * xs) + i;
            const __m256i si = dot_us(qa, _mm256_sign_epi8(load256(x->qs), q));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(dw * h2f(x->d)), acc[t]);
        }
    }
    for (int t = 0; t < tt; t++) out[t] = hsum8(acc[t]);
}

int mn_gemm_avx2(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1,
                 const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy) {
    if (wtype != MN_TYPE_Q4_1 && wtype != MN_TYPE_Q4_0 && wtype != MN_TYPE_Q8_0) return 0;
    const int64_t nb = K / MN_QK;
    const uint8_t *w = W, *x = X;
    for (int64_t t0 = 0; t0 < T; t0 += GEMM_TT) {
        const int tt = (int)(T - t0 < GEMM_TT ? T - t0 : GEMM_TT);
        const uint8_t *xt = x + (size_t)t0 * x_stride;
        for (int64_t r = r0; r < r1; r++) {
            float out[GEMM_TT];
            const void *wr = w + (size_t)r * w_stride;
            if (wtype == MN_TYPE_Q4_1) gemm_row_q4_1(nb, wr, xt, x_stride, tt, out);
            else if (wtype == MN_TYPE_Q4_0) gemm_row_q4_0(nb, wr, xt, x_stride, tt, out);
            else gemm_row_q8_0(nb, wr, xt, x_stride, tt, out);
            for (int t = 0; t < tt; t++) Y[(t0 + t) * ldy + r] = out[t];
        }
    }
    return 1;
}
