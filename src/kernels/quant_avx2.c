/* quant_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c,
 * only called after mn_cpu_isa() has seen those features).
 *
 * Integer parts of every dot product are exact (maddubs pairs never saturate:
 * the unsigned operand is at most 15/31/63 or |w| <= 128 against |a| <= 127),
 * so results differ from the scalar reference only in float summation order.
 * The activation quantizers produce bit-identical blocks to the scalar ones.
 */
#include <immintrin.h>
#include <math.h>

#include "kernels/vexp_simd.h"

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

/* exp over arrays: 8 lanes at a time, the tail through a zero-padded copy so
 * every element takes the same path */
/* exp(x - shift) 8 lanes at a time, summed in double; stored back when st. The
 * tail goes through a padded copy so every element takes the same path. */
static inline double v2_exp_sum_impl(int64_t n, const float *x, float *st, float shift) {
    const __m256 sh = _mm256_set1_ps(shift);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    float buf[8];
    for (int64_t i = 0; i < n; i += 8) {
        const int c = n - i >= 8 ? 8 : (int)(n - i);
        __m256 e;
        if (c == 8) {
            e = mn_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
            if (st) _mm256_storeu_ps(st + i, e);
        } else {
            for (int j = 0; j < 8; j++) buf[j] = j < c ? x[i + j] - shift : -INFINITY;
            e = mn_exp256(_mm256_loadu_ps(buf));
            _mm256_storeu_ps(buf, e);
            for (int j = 0; st && j < c; j++) st[i + j] = buf[j];
        }
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double d4[4];
    _mm256_storeu_pd(d4, _mm256_add_pd(lo, hi));
    return d4[0] + d4[1] + d4[2] + d4[3];
}
static double v2_exp_sum(int64_t n, float *x, float shift) { return v2_exp_sum_impl(n, x, x, shift); }
static double v2_sum_exp(int64_t n, const float *x, float shift) { return v2_exp_sum_impl(n, x, NULL, shift); }
static void v2_exp_lincomb(int64_t n, float *y, const float *a, float alpha, const float *b, float beta) {
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_mul_ps(va, mn_exp256(_mm256_loadu_ps(a + i)));
        if (b) r = _mm256_fmadd_ps(vb, mn_exp256(_mm256_loadu_ps(b + i)), r);
        _mm256_storeu_ps(y + i, r);
    }
    if (i < n) {
        float ba[8] = {0}, bb[8] = {0}, out[8];
        for (int j = 0; i + j < n; j++) ba[j] = a[i + j], bb[j] = b ? b[i + j] : 0;
        __m256 r = _mm256_mul_ps(va, mn_exp256(_mm256_loadu_ps(ba)));
        if (b) r = _mm256_fmadd_ps(vb, mn_exp256(_mm256_loadu_ps(bb)), r);
        _mm256_storeu_ps(out, r);
        for (int j = 0; i + j < n; j++) y[i + j] = out[j];
    }
}

const mn_vec_ops mn_vec_ops_avx2 = {v2_dot_f16_f32, v2_axpy_f16, v2_cvt_f32_f16, v2_dot_f32,    v2_axpy_f32,
                                    v2_exp_sum,     v2_sum_exp,  v2_exp_lincomb};

/* ------------------------------------------------------------------ gemm */

/* Groups of 8 blocks: in a repacked group, ymm vector s (0..7) holds dword s
 * (elements 4s..4s+3) of blocks 0..7 in lanes 0..7, so an accumulator lane
 * only ever sees one block and one cvt + fma per 8 blocks applies the scales.
 * Q4_0/Q4_1: vpmaddubsw of u8 nibbles x s8 activations; the eight products
 * of one lane pair stay below 8*2*15*128 = 30720, so they are summed in int16
 * and widened once per group. Q4_0's -8 offset is an initial -8*sum(a) per
 * lane. Q8_0: sign trick (|w| x sign(a, w)), widened per vector. The last
 * group of a row is zero-padded. Weights are unpacked once per block of rows
 * into an L1 buffer; a 2x2 (rows x tokens) kernel streams the activations. */

#define G2_ABYTES (8 * 32 + 64)    /* 8 vectors, dav, aux */
#define G2_WBYTES (16 * 32 + 64)   /* 8 vectors (+8 signed for Q8_0), dwv, mwv */

typedef struct {
    int wtype, wblk, wqs, ablk, aqs;
    int64_t nb, ng;
} plan2;

static inline void tr8x8(__m256i r[8]) {
    __m256i t[8], u[8];
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* one token: activation groups (Q8_0 or Q8_1 blocks) */
static void act_repack2(const plan2 *P, const uint8_t *x, uint8_t *o) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < P->ng; g++, o += G2_ABYTES) {
        const int n = P->nb - 8 * g < 8 ? (int)(P->nb - 8 * g) : 8;
        const uint8_t *xb = x + (size_t)(8 * g) * P->ablk;
        __m256i r[8];
        #pragma GCC unroll 8
        for (int l = 0; l < 8; l++) r[l] = l < n ? load256(xb + (size_t)l * P->ablk + P->aqs) : _mm256_setzero_si256();
        tr8x8(r);
        __m256i s16 = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            _mm256_storeu_si256((__m256i *)(o + 32 * v), r[v]);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ones8, r[v]));
        }
        float d[8], aux[8];
        #pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            d[l] = l < n ? h2f(mn_rd16(xb + (size_t)l * P->ablk)) : 0.0f;
            aux[l] = l < n && P->wtype == MN_TYPE_Q4_1 ? h2f(mn_rd16(xb + (size_t)l * P->ablk + 2)) : 0.0f;
        }
        memcpy(o + 256, d, 32);
        if (P->wtype == MN_TYPE_Q4_1) memcpy(o + 288, aux, 32);
        else /* Q4_0: -8 * sum(a) per lane (block) */
            _mm256_storeu_si256((__m256i *)(o + 288),
                                _mm256_mullo_epi32(_mm256_madd_epi16(s16, ones16), _mm256_set1_epi32(-8)));
    }
}

/* One weight group (n <= 8 blocks at wb) unpacked in registers: v[s] the
 * unsigned vectors (|w| for Q8_0), sg[s] the signed Q8_0 values (sign source). */
typedef struct {
    __m256i v[8], sg[8];
    __m256 dw, mw;
} wgroup2;

static inline __attribute__((always_inline)) void load_wg2(const plan2 *P, const uint8_t *wb, int n, wgroup2 *g) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    /* scales: the leading dword of each block (d, and m for Q4_1) */
    __m256i dm;
    if (n == 8) {
        dm = _mm256_i32gather_epi32((const int *)wb, _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                                        _mm256_set1_epi32(P->wblk)), 1);
    } else {
        int32_t t[8];
        #pragma GCC unroll 8
        for (int l = 0; l < 8; l++) t[l] = l < n ? (int32_t)mn_rd32(wb + (size_t)l * P->wblk) : 0;
        dm = load256(t);
    }
    /* low halves -> bytes 0-7 of each lane, high halves -> bytes 8-15, then
     * gather the lanes' quarters: [d0..d7 | m0..m7] */
    const __m256i sh = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12,
                                        13, 2, 3, 6, 7, 10, 11, 14, 15);
    dm = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(dm, sh), 0xD8);
    g->dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
    g->mw = P->wtype == MN_TYPE_Q4_1 ? _mm256_cvtph_ps(_mm256_extracti128_si256(dm, 1)) : _mm256_setzero_ps();
    if (P->wtype == MN_TYPE_Q8_0) {
        __m256i r[8];
        #pragma GCC unroll 8
        for (int l = 0; l < 8; l++)
            r[l] = l < n ? load256(wb + (size_t)l * P->wblk + P->wqs) : _mm256_setzero_si256();
        tr8x8(r);
        #pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            g->v[v] = _mm256_sign_epi8(r[v], r[v]);
            g->sg[v] = r[v];
        }
        return;
    }
    /* Z_k: 128-bit lane h = qs of block 4h + k; an in-lane 4x4 dword
     * transpose puts block 4h+k in lane 4h+k */
    __m256i z[4];
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        const __m128i lo = k < n ? load128(wb + (size_t)k * P->wblk + P->wqs) : _mm_setzero_si128();
        const __m128i hi = 4 + k < n ? load128(wb + (size_t)(4 + k) * P->wblk + P->wqs) : _mm_setzero_si128();
        z[k] = _mm256_set_m128i(hi, lo);
    }
    const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    const __m256i D[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3),
                          _mm256_unpackhi_epi64(t1, t3)};
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        g->v[i] = _mm256_and_si256(D[i], m4);
        g->v[4 + i] = _mm256_and_si256(_mm256_srli_epi16(D[i], 4), m4);
        g->sg[i] = g->sg[4 + i] = _mm256_setzero_si256(); /* unused for Q4 */
    }
}

/* one weight row into groups */
static void w_repack2(const plan2 *P, const uint8_t *w, uint8_t *o) {
    for (int64_t g = 0; g < P->ng; g++, o += G2_WBYTES) {
        const int n = P->nb - 8 * g < 8 ? (int)(P->nb - 8 * g) : 8;
        wgroup2 wg;
        load_wg2(P, w + (size_t)(8 * g) * P->wblk, n, &wg);
        #pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            _mm256_storeu_si256((__m256i *)(o + 32 * v), wg.v[v]);
            if (P->wtype == MN_TYPE_Q8_0) _mm256_storeu_si256((__m256i *)(o + 256 + 32 * v), wg.sg[v]);
        }
        _mm256_storeu_ps((float *)(o + 512), wg.dw);
        _mm256_storeu_ps((float *)(o + 544), wg.mw);
    }
}

/* Small T: each row's groups unpacked in registers, used for TT tokens. */
static inline __attribute__((always_inline)) void gemm2_direct(int wtype, const plan2 *P, const uint8_t *W,
                                                               size_t w_stride, int64_t r0, int64_t r1,
                                                               const uint8_t *A, size_t atok, int TT, float *Y,
                                                               int64_t ldy) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * w_stride;
        __m256 acc[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t g = 0; g < P->ng; g++) {
            const int n = P->nb - 8 * g < 8 ? (int)(P->nb - 8 * g) : 8;
            wgroup2 wg;
            load_wg2(P, w + (size_t)(8 * g) * P->wblk, n, &wg);
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const uint8_t *a = A + t * atok + (size_t)g * G2_ABYTES;
                __m256i is = _mm256_setzero_si256();
                #pragma GCC unroll 8
                for (int v = 0; v < 8; v++) {
                    const __m256i av = load256(a + 32 * v);
                    if (wtype == MN_TYPE_Q8_0)
                        is = _mm256_add_epi32(
                            is, _mm256_madd_epi16(_mm256_maddubs_epi16(wg.v[v], _mm256_sign_epi8(av, wg.sg[v])), ones16));
                    else
                        is = _mm256_add_epi16(is, _mm256_maddubs_epi16(wg.v[v], av));
                }
                if (wtype != MN_TYPE_Q8_0) is = _mm256_madd_epi16(is, ones16);
                if (wtype == MN_TYPE_Q4_0) is = _mm256_add_epi32(is, load256(a + 288));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(wg.dw, _mm256_loadu_ps((const float *)(a + 256))),
                                         acc[t]);
                if (wtype == MN_TYPE_Q4_1)
                    acc[t] = _mm256_fmadd_ps(wg.mw, _mm256_loadu_ps((const float *)(a + 288)), acc[t]);
            }
        }
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) Y[t * ldy + r] = hsum8(acc[t]);
    }
}
#define DIRECT2(name, WT)                                                                                   \
    static void name(const plan2 *P, const uint8_t *W, size_t ws, int64_t r0, int64_t r1, const uint8_t *A, \
                     size_t atok, int TT, float *Y, int64_t ldy) {                                           \
        if (TT == 1) gemm2_direct(WT, P, W, ws, r0, r1, A, atok, 1, Y, ldy);                                 \
        else if (TT == 2) gemm2_direct(WT, P, W, ws, r0, r1, A, atok, 2, Y, ldy);                            \
        else gemm2_direct(WT, P, W, ws, r0, r1, A, atok, 3, Y, ldy);                                         \
    }
DIRECT2(d2q41, MN_TYPE_Q4_1)
DIRECT2(d2q40, MN_TYPE_Q4_0)
DIRECT2(d2q80, MN_TYPE_Q8_0)

static inline __m128 hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)); /* a b c d */
}

/* R x TT (each 1 or 2) tile over all groups; out[r*2 + t]. */
static inline __attribute__((always_inline)) void tile2(int wtype, int R, int TT, const plan2 *P,
                                                        const uint8_t *w, size_t wrow, const uint8_t *a,
                                                        size_t atok, float *out) {
    __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < P->ng; g++, w += G2_WBYTES, a += G2_ABYTES) {
        __m256i is[2][2];
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) is[r][t] = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            __m256i wv[2], ws[2];
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                wv[r] = load256(w + r * wrow + 32 * v);
                if (wtype == MN_TYPE_Q8_0) ws[r] = load256(w + r * wrow + 256 + 32 * v);
            }
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const __m256i av = load256(a + t * atok + 32 * v);
                #pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    if (wtype == MN_TYPE_Q8_0)
                        is[r][t] = _mm256_add_epi32(
                            is[r][t], _mm256_madd_epi16(_mm256_maddubs_epi16(wv[r], _mm256_sign_epi8(av, ws[r])), ones16));
                    else
                        is[r][t] = _mm256_add_epi16(is[r][t], _mm256_maddubs_epi16(wv[r], av));
                }
            }
        }
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) {
            const uint8_t *at = a + t * atok;
            const __m256 dav = _mm256_loadu_ps((const float *)(at + 256));
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m256i i32 = is[r][t];
                if (wtype != MN_TYPE_Q8_0) i32 = _mm256_madd_epi16(i32, ones16);
                if (wtype == MN_TYPE_Q4_0) i32 = _mm256_add_epi32(i32, load256(at + 288));
                const __m256 dw = _mm256_loadu_ps((const float *)(w + r * wrow + 512));
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_mul_ps(dw, dav), acc[r][t]);
                if (wtype == MN_TYPE_Q4_1)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(w + r * wrow + 544)),
                                                _mm256_loadu_ps((const float *)(at + 288)), acc[r][t]);
            }
        }
    }
    float o4[4];
    _mm_storeu_ps(o4, hsum4x8(acc[0][0], acc[0][1], acc[1][0], acc[1][1]));
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) out[r * 2 + t] = o4[r * 2 + t];
}

#define TILE2(name, WT, R, TT)                                                                            \
    static void name(const plan2 *P, const uint8_t *w, size_t wrow, const uint8_t *a, size_t atok, float *out) { \
        tile2(WT, R, TT, P, w, wrow, a, atok, out);                                                       \
    }
#define TILE2_SET(pfx, WT)                                                                                \
    TILE2(pfx##_11, WT, 1, 1) TILE2(pfx##_12, WT, 1, 2) TILE2(pfx##_21, WT, 2, 1) TILE2(pfx##_22, WT, 2, 2) \
    static void (*const pfx##_tab[2][2])(const plan2 *, const uint8_t *, size_t, const uint8_t *, size_t, float *) = { \
        {pfx##_11, pfx##_12}, {pfx##_21, pfx##_22}};
TILE2_SET(t2q41, MN_TYPE_Q4_1)
TILE2_SET(t2q40, MN_TYPE_Q4_0)
TILE2_SET(t2q80, MN_TYPE_Q8_0)

int mn_gemm_avx2(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1,
                 const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy) {
    plan2 P = {wtype, 0, 0, 0, 0, K / MN_QK, 0};
    switch (wtype) {
    case MN_TYPE_Q4_1: P.wblk = 20, P.wqs = 4, P.ablk = 36, P.aqs = 4; break;
    case MN_TYPE_Q4_0: P.wblk = 18, P.wqs = 2, P.ablk = 34, P.aqs = 2; break;
    case MN_TYPE_Q8_0: P.wblk = 34, P.wqs = 2, P.ablk = 34, P.aqs = 2; break;
    default: return 0;
    }
    if (K <= 0 || K % MN_QK) return 0;
    P.ng = (P.nb + 7) / 8;
    const size_t a_bytes = (size_t)P.ng * G2_ABYTES, w_bytes = (size_t)P.ng * G2_WBYTES;
    int64_t tc = (int64_t)((512u << 10) / a_bytes) & ~(int64_t)1;
    if (tc < 2) tc = 2;
    if (tc > T) tc = T;
    int64_t rblk = (int64_t)((16u << 10) / w_bytes) & ~(int64_t)1;
    if (rblk < 2) rblk = 2;
    uint8_t *abuf = mn_quant_scratch((size_t)tc * a_bytes + (size_t)rblk * w_bytes);
    if (!abuf) return 0;
    uint8_t *wbuf = abuf + (size_t)tc * a_bytes;
    void (*const(*tab)[2])(const plan2 *, const uint8_t *, size_t, const uint8_t *, size_t, float *) =
        wtype == MN_TYPE_Q4_1 ? t2q41_tab : wtype == MN_TYPE_Q4_0 ? t2q40_tab : t2q80_tab;
    const uint8_t *w = W, *x = X;
    for (int64_t c0 = 0; c0 < T; c0 += tc) {
        const int64_t nt = T - c0 < tc ? T - c0 : tc;
        if (wtype != MN_TYPE_Q8_0)
            for (int64_t t = 0; t < nt; t++) act_repack2(&P, x + (size_t)(c0 + t) * x_stride, abuf + (size_t)t * a_bytes);
        else /* Q8_0 activations: same transposed layout, no aux */
            for (int64_t t = 0; t < nt; t++) {
                plan2 Q = P;
                Q.wtype = MN_TYPE_Q4_0; /* aux is computed but unused */
                act_repack2(&Q, x + (size_t)(c0 + t) * x_stride, abuf + (size_t)t * a_bytes);
            }
        if (nt <= 3) {
            float *Yc = Y + c0 * ldy;
            if (wtype == MN_TYPE_Q4_1) d2q41(&P, w, w_stride, r0, r1, abuf, a_bytes, (int)nt, Yc, ldy);
            else if (wtype == MN_TYPE_Q4_0) d2q40(&P, w, w_stride, r0, r1, abuf, a_bytes, (int)nt, Yc, ldy);
            else d2q80(&P, w, w_stride, r0, r1, abuf, a_bytes, (int)nt, Yc, ldy);
            continue;
        }
        for (int64_t rb = r0; rb < r1; rb += rblk) {
            const int64_t re = rb + rblk < r1 ? rb + rblk : r1;
            for (int64_t r = rb; r < re; r++) w_repack2(&P, w + (size_t)r * w_stride, wbuf + (size_t)(r - rb) * w_bytes);
            for (int64_t t = 0; t < nt; t += 2) {
                const int TT = nt - t >= 2 ? 2 : 1;
                for (int64_t r = rb; r < re; r += 2) {
                    const int R = re - r >= 2 ? 2 : 1;
                    float out[4];
                    tab[R - 1][TT - 1](&P, wbuf + (size_t)(r - rb) * w_bytes, w_bytes, abuf + (size_t)t * a_bytes,
                                       a_bytes, out);
                    #pragma GCC unroll 8
                    for (int i = 0; i < R; i++)
                        for (int j = 0; j < TT; j++) Y[(c0 + t + j) * ldy + r + i] = out[i * 2 + j];
                }
            }
        }
    }
    return 1;
}
