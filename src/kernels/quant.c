/* quant.c - scalar reference kernels for every supported tensor type, the
 * traits tables (scalar, AVX2, AVX-512 merged per function), dispatch, the
 * per-thread scratch and mn_gemm_q.
 *
 * vec_dot_type per weight type (as llama.cpp):
 *   F32 -> F32, F16 -> F16, BF16 -> BF16,
 *   Q4_0, Q5_0, Q8_0 -> Q8_0,  Q4_1, Q5_1 -> Q8_1,  Q4_K, Q6_K -> Q8_K.
 * Q8_1 and Q8_K are activation-only types: to_float and from_float, no vec_dot.
 *
 * Numerics of the activation quantizers follow llama.cpp's x86 code paths:
 * Q8_0/Q8_1: d = amax/127, q = round-to-nearest-even(x * (127/amax)), d stored
 * as fp16, Q8_1's s = fp16(d * sum(q)) with the unrounded float d. Q8_K:
 * iscale = -127/max (max = value of largest magnitude), q = rne(x*iscale)
 * clamped to 127, d = 1/iscale. Weight quantizers Q4_0..Q5_1 follow the
 * reference (truncating) formulas; Q4_K/Q6_K use a simple min/max quantizer,
 * not llama.cpp's iterative search (only used to produce test data).
 * Scalar dot products accumulate each block in exact integers and the float
 * sum in block order; F32/F16/BF16 dots accumulate in double.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_impl.h"

/* ------------------------------------------------------------------ halves */

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t bits_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float mn_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0) { /* zero / subnormal: m * 2^-24, exact in float */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) /* inf, or NaN made quiet (as F16C does) */
        return f32_from_bits(sign | 0x7F800000u | (m ? 0x400000u : 0) | (m << 13));
    return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t mn_fp32_to_fp16(float f) {
    const uint32_t u = bits_from_f32(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN: quiet it, keep the top payload bits (as F16C) */
        return (uint16_t)(sign | 0x7E00 | ((a >> 13) & 0x3FF));
    if (a >= 0x477FF000u) return sign | 0x7C00; /* >= 65520 rounds to inf */
    if (a >= 0x38800000u) {                     /* normal half */
        uint32_t h = (a >> 13) - (112u << 10);
        const uint32_t rem = a & 0x1FFF;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    /* subnormal half (or zero): value = mant * 2^(e-150), in units of 2^-24 */
    const uint32_t e = a >> 23;
    if (e < 101) return sign; /* < 2^-26: rounds to zero */
    const uint32_t mant = (a & 0x7FFFFF) | 0x800000;
    const uint32_t shift = 126 - e; /* 14 .. 25 */
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

float mn_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t mn_fp32_to_bf16(float f) {
    const uint32_t u = bits_from_f32(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

#define H2F(h) mn_fp16_to_fp32(h)
#define F2H(f) mn_fp32_to_fp16(f)

/* ------------------------------------------------------------ float types */

static void f32_to_float(const void *x, float *y, int64_t n) { memcpy(y, x, (size_t)n * 4); }
static void f32_from_float(const float *x, void *y, int64_t n) { memcpy(y, x, (size_t)n * 4); }
static void f32_vec_dot(int64_t n, float *s, const void *w, const void *x) {
    const float *a = w, *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)a[i] * b[i];
    *s = (float)sum;
}

static void f16_to_float(const void *x, float *y, int64_t n) {
    const uint8_t *p = x;
    for (int64_t i = 0; i < n; i++) y[i] = H2F(mn_rd16(p + 2 * i));
}
static void f16_from_float(const float *x, void *y, int64_t n) {
    uint8_t *p = y;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = F2H(x[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}
static void f16_vec_dot(int64_t n, float *s, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)H2F(mn_rd16(a + 2 * i)) * H2F(mn_rd16(b + 2 * i));
    *s = (float)sum;
}

static void bf16_to_float(const void *x, float *y, int64_t n) {
    const uint8_t *p = x;
    for (int64_t i = 0; i < n; i++) y[i] = mn_bf16_to_fp32(mn_rd16(p + 2 * i));
}
static void bf16_from_float(const float *x, void *y, int64_t n) {
    uint8_t *p = y;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = mn_fp32_to_bf16(x[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}
static void bf16_vec_dot(int64_t n, float *s, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)mn_bf16_to_fp32(mn_rd16(a + 2 * i)) * mn_bf16_to_fp32(mn_rd16(b + 2 * i));
    *s = (float)sum;
}

/* ------------------------------------------------------- 32-element blocks */

static void minmax(const float *x, int n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}
/* value of largest magnitude (first one on ties) and that magnitude */
static float absmax_signed(const float *x, int n, float *amax_out) {
    float amax = 0, mx = 0;
    for (int j = 0; j < n; j++) {
        const float v = fabsf(x[j]);
        if (v > amax) {
            amax = v;
            mx = x[j];
        }
    }
    *amax_out = amax;
    return mx;
}

static void q4_0_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = ((x[i].qs[j] & 0xF) - 8) * d;
            y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}
static void q4_0_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        float amax;
        const float mx = absmax_signed(x, MN_QK, &amax);
        const float d = mx / -8, id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)(x[j] * id + 8.5f), b = (int8_t)(x[j + 16] * id + 8.5f);
            if (a > 15) a = 15;
            if (b > 15) b = 15;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void q4_1_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d), m = H2F(x[i].m);
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = (x[i].qs[j] & 0xF) * d + m;
            y[i * 32 + j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}
static void q4_1_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q4_1 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        float lo, hi;
        minmax(x, MN_QK, &lo, &hi);
        const float d = (hi - lo) / 15, id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        y[i].m = F2H(lo);
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)((x[j] - lo) * id + 0.5f), b = (int8_t)((x[j + 16] - lo) * id + 0.5f);
            if (a > 15) a = 15;
            if (b > 15) b = 15;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void q5_0_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d);
        const uint32_t qh = mn_rd32(x[i].qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
            y[i * 32 + j] = (((x[i].qs[j] & 0xF) | h0) - 16) * d;
            y[i * 32 + j + 16] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}
static void q5_0_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q5_0 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        float amax;
        const float mx = absmax_signed(x, MN_QK, &amax);
        const float d = mx / -16, id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)(x[j] * id + 16.5f), b = (int8_t)(x[j + 16] * id + 16.5f);
            if (a > 31) a = 31;
            if (b > 31) b = 31;
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void q5_1_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d), m = H2F(x[i].m);
        const uint32_t qh = mn_rd32(x[i].qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
            y[i * 32 + j] = ((x[i].qs[j] & 0xF) | h0) * d + m;
            y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}
static void q5_1_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q5_1 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        float lo, hi;
        minmax(x, MN_QK, &lo, &hi);
        const float d = (hi - lo) / 31, id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        y[i].m = F2H(lo);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = (uint8_t)((x[j] - lo) * id + 0.5f), b = (uint8_t)((x[j + 16] - lo) * id + 0.5f);
            if (a > 31) a = 31;
            if (b > 31) b = 31;
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void q8_0_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = x[i].qs[j] * d;
    }
}
/* Shared by Q8_0/Q8_1: returns d (unrounded), fills q, returns sum(q). */
static float q8_block(const float *x, int8_t *q, int *sum) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.f, id = amax != 0.0f ? 127.f / amax : 0.0f;
    int s = 0;
    for (int j = 0; j < 32; j++) {
        const int v = (int)nearbyintf(x[j] * id);
        q[j] = (int8_t)v;
        s += v;
    }
    *sum = s;
    return d;
}
static void q8_0_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        int8_t q[32];
        int s;
        y[i].d = F2H(q8_block(x, q, &s));
        memcpy(y[i].qs, q, 32);
    }
}

static void q8_1_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q8_1 *x = vx;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < 32; j++) y[i * 32 + j] = x[i].qs[j] * d;
    }
}
static void q8_1_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / MN_QK; i++, x += MN_QK) {
        int8_t q[32];
        int s;
        const float d = q8_block(x, q, &s);
        y[i].d = F2H(d);
        y[i].s = F2H(d * (float)s);
        memcpy(y[i].qs, q, 32);
    }
}

static void q4_0_q8_0_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        int si = 0;
        for (int j = 0; j < 16; j++)
            si += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
        sum += (H2F(w[i].d) * H2F(x[i].d)) * (float)si;
    }
    *s = sum;
}
static void q4_1_q8_1_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_1 *w = vw;
    const mn_block_q8_1 *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        int si = 0;
        for (int j = 0; j < 16; j++)
            si += (w[i].qs[j] & 0xF) * x[i].qs[j] + (w[i].qs[j] >> 4) * x[i].qs[j + 16];
        sum += (H2F(w[i].d) * H2F(x[i].d)) * (float)si + H2F(w[i].m) * H2F(x[i].s);
    }
    *s = sum;
}
static void q5_0_q8_0_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q5_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const uint32_t qh = mn_rd32(w[i].qh);
        int si = 0;
        for (int j = 0; j < 16; j++) {
            const int a = ((w[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16;
            const int b = ((w[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
            si += a * x[i].qs[j] + b * x[i].qs[j + 16];
        }
        sum += (H2F(w[i].d) * H2F(x[i].d)) * (float)si;
    }
    *s = sum;
}
static void q5_1_q8_1_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q5_1 *w = vw;
    const mn_block_q8_1 *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        const uint32_t qh = mn_rd32(w[i].qh);
        int si = 0;
        for (int j = 0; j < 16; j++) {
            const int a = (w[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4);
            const int b = (w[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
            si += a * x[i].qs[j] + b * x[i].qs[j + 16];
        }
        sum += (H2F(w[i].d) * H2F(x[i].d)) * (float)si + H2F(w[i].m) * H2F(x[i].s);
    }
    *s = sum;
}
static void q8_0_q8_0_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q8_0 *w = vw;
    const mn_block_q8_0 *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK; i++) {
        int si = 0;
        for (int j = 0; j < 32; j++) si += w[i].qs[j] * x[i].qs[j];
        sum += (H2F(w[i].d) * H2F(x[i].d)) * (float)si;
    }
    *s = sum;
}

/* ---------------------------------------------------------------- K-quants */

static void q8_K_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q8_K *x = vx;
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        const float d = x[i].d;
        for (int j = 0; j < 256; j++) y[i * 256 + j] = d * x[i].qs[j];
    }
}
static void q8_K_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / MN_QK_K; i++, x += MN_QK_K) {
        float amax;
        const float mx = absmax_signed(x, MN_QK_K, &amax);
        int8_t q[256];
        int16_t bs[16];
        if (amax == 0) {
            y[i].d = 0;
            memset(q, 0, sizeof q);
        } else {
            const float iscale = -127.f / mx;
            for (int j = 0; j < 256; j++) {
                int v = (int)nearbyintf(iscale * x[j]);
                q[j] = (int8_t)(v > 127 ? 127 : v);
            }
            y[i].d = 1 / iscale;
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * j + l];
            bs[j] = (int16_t)s;
        }
        memcpy(y[i].qs, q, 256);
        memcpy(y[i].bsums, bs, sizeof bs);
    }
}

static void q4_K_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q4_K *x = vx;
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        const float d = H2F(x[i].d), dmin = H2F(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            int sc, m;
            mn_q4k_scale_min(x[i].scales, 2 * c, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            mn_q4k_scale_min(x[i].scales, 2 * c + 1, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) y[l] = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) y[32 + l] = d2 * (q[l] >> 4) - m2;
        }
    }
}
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static void q4_K_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q4_K *y = vy;
    for (int64_t i = 0; i < n / MN_QK_K; i++, x += MN_QK_K) {
        float scale[8], minv[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float lo, hi;
            minmax(x + 32 * j, 32, &lo, &hi);
            if (lo > 0) lo = 0;
            scale[j] = (hi - lo) / 15;
            minv[j] = -lo;
            if (scale[j] > max_scale) max_scale = scale[j];
            if (minv[j] > max_min) max_min = minv[j];
        }
        const uint16_t hd = F2H(max_scale / 63), hm = F2H(max_min / 63);
        const float d = H2F(hd), dmin = H2F(hm);
        int sc[8], mi[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = d > 0 ? clampi((int)nearbyintf(scale[j] / d), 0, 63) : 0;
            mi[j] = dmin > 0 ? clampi((int)nearbyintf(minv[j] / dmin), 0, 63) : 0;
        }
        uint8_t s[12] = {0};
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)sc[j];
            s[j + 4] = (uint8_t)mi[j];
        }
        for (int j = 4; j < 8; j++) {
            s[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mi[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mi[j] >> 4) << 6);
        }
        uint8_t L[256];
        for (int j = 0; j < 8; j++) {
            const float ds = d * sc[j], dm = dmin * mi[j];
            for (int l = 0; l < 32; l++)
                L[32 * j + l] =
                    (uint8_t)(ds > 0 ? clampi((int)nearbyintf((x[32 * j + l] + dm) / ds), 0, 15) : 0);
        }
        y[i].d = hd;
        y[i].dmin = hm;
        memcpy(y[i].scales, s, 12);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}
static void q4_K_q8_K_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_K *w = vw;
    const mn_block_q8_K *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            mn_q4k_scale_min(w[i].scales, j, &sc, &m);
            const uint8_t *q = w[i].qs + 32 * (j / 2);
            const int sh = (j & 1) * 4;
            int si = 0;
            for (int l = 0; l < 32; l++) si += ((q[l] >> sh) & 0xF) * x[i].qs[32 * j + l];
            sumi += sc * si;
            summ += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        }
        sum += x[i].d * H2F(w[i].d) * (float)sumi - x[i].d * H2F(w[i].dmin) * (float)summ;
    }
    *s = sum;
}

/* Q6_K element e of a super-block: half n = e/128, l = e%32, k = (e%128)/32;
 * low 4 bits from ql[64n + l + 32*(k&1)] (nibble k>>1), high 2 bits from
 * qh[32n + l] bits 2k..2k+1; scale index e/16. */
static void q6_K_unpack(const mn_block_q6_K *b, int8_t *q) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}
static void q6_K_to_float(const void *vx, float *y, int64_t n) {
    const mn_block_q6_K *x = vx;
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        int8_t q[256];
        q6_K_unpack(&x[i], q);
        const float d = H2F(x[i].d);
        for (int j = 0; j < 256; j++) y[i * 256 + j] = d * (float)x[i].scales[j / 16] * q[j];
    }
}
static void q6_K_from_float(const float *x, void *vy, int64_t n) {
    mn_block_q6_K *y = vy;
    for (int64_t i = 0; i < n / MN_QK_K; i++, x += MN_QK_K) {
        float scale[16], max_abs = 0;
        for (int j = 0; j < 16; j++) {
            float amax;
            const float mx = absmax_signed(x + 16 * j, 16, &amax);
            scale[j] = mx / -32;
            if (fabsf(scale[j]) > max_abs) max_abs = fabsf(scale[j]);
        }
        const uint16_t hd = F2H(max_abs / 127);
        const float d = H2F(hd);
        int8_t sc[16];
        uint8_t L[256];
        for (int j = 0; j < 16; j++) {
            sc[j] = (int8_t)(d > 0 ? clampi((int)nearbyintf(scale[j] / d), -128, 127) : 0);
            const float ds = d * sc[j];
            for (int l = 0; l < 16; l++) {
                const int q = ds != 0 ? clampi((int)nearbyintf(x[16 * j + l] / ds), -32, 31) : 0;
                L[16 * j + l] = (uint8_t)(q + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                y[i].ql[64 * h + l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                y[i].ql[64 * h + l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                y[i].qh[32 * h + l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
        memcpy(y[i].scales, sc, 16);
        y[i].d = hd;
    }
}
static void q6_K_q8_K_dot(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q6_K *w = vw;
    const mn_block_q8_K *x = vx;
    float sum = 0;
    for (int64_t i = 0; i < n / MN_QK_K; i++) {
        int8_t q[256];
        q6_K_unpack(&w[i], q);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int si = 0;
            for (int l = 0; l < 16; l++) si += q[16 * j + l] * x[i].qs[16 * j + l];
            sumi += w[i].scales[j] * si;
        }
        sum += H2F(w[i].d) * x[i].d * (float)sumi;
    }
    *s = sum;
}

/* ------------------------------------------------------------ float kernels */

static float vs_dot_f16_f32(int64_t n, const uint16_t *a, const float *b) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += H2F(a[i]) * b[i];
    return s;
}
static void vs_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * H2F(x[i]);
}
static void vs_cvt_f32_f16(int64_t n, const float *x, uint16_t *y) {
    for (int64_t i = 0; i < n; i++) y[i] = F2H(x[i]);
}
static float vs_dot_f32(int64_t n, const float *a, const float *b) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void vs_axpy_f32(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static double vs_exp_sum(int64_t n, float *x, float shift) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = x[i] - shift < -87.3f ? 0.0f : expf(x[i] - shift));
    return s;
}
static double vs_sum_exp(int64_t n, const float *x, float shift) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] - shift < -87.3f ? 0.0f : expf(x[i] - shift);
    return s;
}
static void vs_exp_lincomb(int64_t n, float *y, const float *a, float alpha, const float *b, float beta) {
    for (int64_t i = 0; i < n; i++) y[i] = alpha * expf(a[i]) + (b ? beta * expf(b[i]) : 0.0f);
}

static const mn_vec_ops k_vec_scalar = {vs_dot_f16_f32, vs_axpy_f16, vs_cvt_f32_f16, vs_dot_f32,
                                        vs_axpy_f32,    vs_exp_sum,  vs_sum_exp,     vs_exp_lincomb};

/* ------------------------------------------------------------------ tables */

typedef struct {
    int vec_dot_type;
    mn_qfns f;
} scalar_entry;

static const scalar_entry k_scalar[MN_TYPE_COUNT] = {
    [MN_TYPE_F32] = {MN_TYPE_F32, {f32_to_float, f32_from_float, f32_vec_dot}},
    [MN_TYPE_F16] = {MN_TYPE_F16, {f16_to_float, f16_from_float, f16_vec_dot}},
    [MN_TYPE_BF16] = {MN_TYPE_BF16, {bf16_to_float, bf16_from_float, bf16_vec_dot}},
    [MN_TYPE_Q4_0] = {MN_TYPE_Q8_0, {q4_0_to_float, q4_0_from_float, q4_0_q8_0_dot}},
    [MN_TYPE_Q4_1] = {MN_TYPE_Q8_1, {q4_1_to_float, q4_1_from_float, q4_1_q8_1_dot}},
    [MN_TYPE_Q5_0] = {MN_TYPE_Q8_0, {q5_0_to_float, q5_0_from_float, q5_0_q8_0_dot}},
    [MN_TYPE_Q5_1] = {MN_TYPE_Q8_1, {q5_1_to_float, q5_1_from_float, q5_1_q8_1_dot}},
    [MN_TYPE_Q8_0] = {MN_TYPE_Q8_0, {q8_0_to_float, q8_0_from_float, q8_0_q8_0_dot}},
    [MN_TYPE_Q8_1] = {MN_TYPE_Q8_1, {q8_1_to_float, q8_1_from_float, NULL}},
    [MN_TYPE_Q4_K] = {MN_TYPE_Q8_K, {q4_K_to_float, q4_K_from_float, q4_K_q8_K_dot}},
    [MN_TYPE_Q6_K] = {MN_TYPE_Q8_K, {q6_K_to_float, q6_K_from_float, q6_K_q8_K_dot}},
    [MN_TYPE_Q8_K] = {MN_TYPE_Q8_K, {q8_K_to_float, q8_K_from_float, NULL}},
};

#define N_ISA 3
static mn_quant_traits g_tab[N_ISA][MN_TYPE_COUNT];
static mn_vec_ops g_vec[N_ISA];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void merge(mn_quant_traits *t, const mn_qfns *o) {
    if (o->to_float) t->to_float = o->to_float;
    if (o->from_float) t->from_float = o->from_float;
    if (o->vec_dot) t->vec_dot = o->vec_dot;
}
static void merge_vec(mn_vec_ops *v, const mn_vec_ops *o) {
    if (o->dot_f16_f32) v->dot_f16_f32 = o->dot_f16_f32;
    if (o->axpy_f16) v->axpy_f16 = o->axpy_f16;
    if (o->cvt_f32_f16) v->cvt_f32_f16 = o->cvt_f32_f16;
    if (o->dot_f32) v->dot_f32 = o->dot_f32;
    if (o->axpy_f32) v->axpy_f32 = o->axpy_f32;
    if (o->exp_sum) v->exp_sum = o->exp_sum;
    if (o->sum_exp) v->sum_exp = o->sum_exp;
    if (o->exp_lincomb) v->exp_lincomb = o->exp_lincomb;
}

static void init_tables(void) {
    for (int t = 0; t < MN_TYPE_COUNT; t++) {
        mn_quant_traits s = {0};
        s.type = t;
        s.vec_dot_type = k_scalar[t].vec_dot_type;
        s.to_float = k_scalar[t].f.to_float;
        s.from_float = k_scalar[t].f.from_float;
        s.vec_dot = k_scalar[t].f.vec_dot;
        g_tab[MN_ISA_SCALAR][t] = s;
        merge(&s, &mn_qfns_avx2[t]);
        g_tab[MN_ISA_AVX2][t] = s;
        merge(&s, &mn_qfns_avx512[t]);
        g_tab[MN_ISA_AVX512][t] = s;
    }
    g_vec[MN_ISA_SCALAR] = k_vec_scalar;
    g_vec[MN_ISA_AVX2] = k_vec_scalar;
    merge_vec(&g_vec[MN_ISA_AVX2], &mn_vec_ops_avx2);
    g_vec[MN_ISA_AVX512] = g_vec[MN_ISA_AVX2];
    merge_vec(&g_vec[MN_ISA_AVX512], &mn_vec_ops_avx512);
}

const mn_quant_traits *mn_quant_get_isa(int type, mn_isa isa) {
    if (type < 0 || type >= MN_TYPE_COUNT || (int)isa < 0 || (int)isa >= N_ISA) return NULL;
    if (isa > mn_cpu_isa_hw()) return NULL;
    if (!k_scalar[type].f.to_float) return NULL;
    pthread_once(&g_once, init_tables);
    return &g_tab[isa][type];
}

const mn_quant_traits *mn_quant_get(int type) { return mn_quant_get_isa(type, mn_cpu_isa()); }

const mn_vec_ops *mn_vec_get_isa(mn_isa isa) {
    if ((int)isa < 0 || (int)isa >= N_ISA || isa > mn_cpu_isa_hw()) return NULL;
    pthread_once(&g_once, init_tables);
    return &g_vec[isa];
}

const mn_vec_ops *mn_vec_get(void) { return mn_vec_get_isa(mn_cpu_isa()); }

/* ----------------------------------------------------------------- scratch */

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
typedef struct {
    size_t cap;
    void *p;
} scratch_buf;

static void scratch_free(void *v) {
    scratch_buf *b = v;
    if (b) {
        free(b->p);
        free(b);
    }
}
static void scratch_init(void) {
    if (pthread_key_create(&g_scratch_key, scratch_free) != 0) abort();
}

void *mn_quant_scratch(size_t bytes) {
    pthread_once(&g_scratch_once, scratch_init);
    scratch_buf *b = pthread_getspecific(g_scratch_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return NULL;
        if (pthread_setspecific(g_scratch_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    if (b->cap < bytes) {
        size_t cap = bytes + bytes / 4 + 4096;
        cap = (cap + 63) & ~(size_t)63;
        void *p = aligned_alloc(64, cap);
        if (!p) return NULL;
        free(b->p);
        b->p = p;
        b->cap = cap;
    }
    return b->p;
}

/* -------------------------------------------------------------------- gemm */

void mn_gemm_q(const mn_quant_traits *qt, int64_t K, const void *W, size_t w_stride, int64_t r0,
               int64_t r1, const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy) {
    if (r1 <= r0 || T <= 0) return;
    /* Which table (if any) the traits come from decides the fast path. */
    const uintptr_t p = (uintptr_t)qt, base = (uintptr_t)&g_tab[0][0];
    const size_t span = sizeof g_tab;
    if (p >= base && p < base + span) {
        const int isa = (int)((p - base) / sizeof g_tab[0]);
        if (isa == MN_ISA_AVX512 && mn_gemm_avx512(qt->type, K, W, w_stride, r0, r1, X, x_stride, T, Y, ldy))
            return;
        if (isa >= MN_ISA_AVX2 && mn_gemm_avx2(qt->type, K, W, w_stride, r0, r1, X, x_stride, T, Y, ldy))
            return;
    }
    /* Generic: blocks of rows so a few weight rows stay in L1 across tokens. */
    const char *w = W, *x = X;
    for (int64_t rb = r0; rb < r1; rb += 8) {
        const int64_t re = rb + 8 < r1 ? rb + 8 : r1;
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = rb; r < re; r++)
                qt->vec_dot(K, &Y[t * ldy + r], w + (size_t)r * w_stride, x + (size_t)t * x_stride);
    }
}
