/* attention.c - reference grouped attention kernel and its dispatch (see attention.h). */
#include "kernels/attention.h"

#include <math.h>
#include <string.h>

/* s[j] = scale q.K_j for the n rows (masked: -inf); returns the maximum */
static float scores_scalar(int D, int64_t n, const float *q, float scale, const uint16_t *K, size_t ld,
                           const uint8_t *mask, float *s) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) {
            s[j] = -INFINITY;
            continue;
        }
        const uint16_t *k = K + (size_t)j * ld;
        float d = 0;
        for (int i = 0; i < D; i++) d += q[i] * mn_fp16_to_fp32(k[i]);
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    return mx;
}

void mn_attn_group_scalar(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K,
                          const uint16_t *V, size_t ld, const uint8_t *mask, float *out, float *scratch) {
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n;
        const float mx = scores_scalar(D, n, q + (int64_t)g * D, scale, K, ld, mask, s);
        float sum = 0;
        for (int64_t j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
        float inv = 1.0f / sum;
        float *o = out + (int64_t)g * D;
        memset(o, 0, sizeof(float) * (size_t)D);
        for (int64_t j = 0; j < n; j++) {
            if (mask && !mask[j]) continue;
            const uint16_t *v = V + (size_t)j * ld;
            float p = s[j] * inv;
            for (int i = 0; i < D; i++) o[i] += p * mn_fp16_to_fp32(v[i]);
        }
    }
}

void mn_attn_part_scalar(int G, int D, int64_t n, const float *q, float scale, const uint16_t *K, const uint16_t *V,
                         size_t ld, const uint8_t *mask, float *part, float *scratch) {
    float *M = part + (size_t)G * D, *L = M + G;
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n, *o = part + (int64_t)g * D;
        const float mx = scores_scalar(D, n, q + (int64_t)g * D, scale, K, ld, mask, s);
        memset(o, 0, sizeof(float) * (size_t)D);
        M[g] = mx, L[g] = 0;
        if (mx == -INFINITY) continue;
        float sum = 0;
        for (int64_t j = 0; j < n; j++) {
            if (mask && !mask[j]) continue;
            const float p = expf(s[j] - mx);
            sum += p;
            const uint16_t *v = V + (size_t)j * ld;
            for (int i = 0; i < D; i++) o[i] += p * mn_fp16_to_fp32(v[i]);
        }
        L[g] = sum;
    }
}

void mn_attn_combine(int G, int D, int np, const float *parts, float *out) {
    const size_t st = MN_ATTN_PART(G, D);
    for (int g = 0; g < G; g++) {
        float m = -INFINITY;
        for (int p = 0; p < np; p++) {
            const float mp = parts[p * st + (size_t)G * D + g];
            if (mp > m) m = mp;
        }
        float *o = out + (int64_t)g * D;
        memset(o, 0, sizeof(float) * (size_t)D);
        double l = 0;
        for (int p = 0; p < np; p++) {
            const float *pp = parts + p * st;
            const float mp = pp[(size_t)G * D + g];
            if (mp == -INFINITY) continue; /* no visible row in this part */
            const float w = expf(mp - m);
            l += (double)w * pp[(size_t)G * D + G + g];
            for (int i = 0; i < D; i++) o[i] += w * pp[(int64_t)g * D + i];
        }
        const float inv = l > 0 ? (float)(1.0 / l) : 0.0f;
        for (int i = 0; i < D; i++) o[i] *= inv;
    }
}

void mn_attn_row_sums(int G, int D, int64_t n, const mn_vec_ops *vo, const float *mx, float *scratch, float *inv,
                      float *part) {
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n;
        if (mx[g] == -INFINITY) { /* a range with no visible row (split decode only) */
            for (int64_t j = 0; j < n; j++) s[j] = 0;
            inv[g] = 0;
            if (part) part[G * D + g] = -INFINITY, part[G * D + G + g] = 0;
            continue;
        }
        /* masked (-inf) scores give 0; the sum in double keeps masks and batch
         * splits from changing the result, as the scalar kernel's sequential sum */
        const double sum = vo->exp_sum(n, s, mx[g]);
        inv[g] = (float)(1.0 / sum);
        if (part) part[G * D + g] = mx[g], part[G * D + G + g] = (float)sum;
    }
}

mn_attn_part_fn mn_attn_part_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_part_avx512;
    case MN_ISA_AVX2: return mn_attn_part_avx2;
    default: return mn_attn_part_scalar;
    }
}

mn_attn_part_fn mn_attn_part_get(void) { return mn_attn_part_get_isa(mn_cpu_isa()); }

size_t mn_attn_tile_scratch(int G, int D, int nq, int64_t max_lim) {
    const size_t tile = (size_t)2 * MN_ATTN_BK * (size_t)D + (size_t)2 * (size_t)nq * (size_t)G + 2 * MN_ATTN_BK;
    const size_t ref = (size_t)G * (size_t)(max_lim > 0 ? max_lim : 1); /* the scalar variant's scores */
    return tile > ref ? tile : ref;
}

void mn_attn_tile_scalar(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint16_t *K,
                         const uint16_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                         size_t ldo, float *scratch) {
    for (int i = 0; i < nq; i++)
        mn_attn_group_scalar(G, D, lim[i], q + (size_t)i * ldq, scale, K, V, ld, mask ? mask[i] : NULL,
                             out + (size_t)i * ldo, scratch);
}

mn_attn_tile_fn mn_attn_tile_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_tile_avx512;
    case MN_ISA_AVX2: return mn_attn_tile_avx2;
    default: return mn_attn_tile_scalar;
    }
}

mn_attn_tile_fn mn_attn_tile_get(void) { return mn_attn_tile_get_isa(mn_cpu_isa()); }

mn_attn_group_fn mn_attn_group_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_group_avx512;
    case MN_ISA_AVX2: return mn_attn_group_avx2;
    default: return mn_attn_group_scalar;
    }
}

mn_attn_group_fn mn_attn_group_get(void) { return mn_attn_group_get_isa(mn_cpu_isa()); }

/* ------------------------------------------------------------- q8_0 cache */
void mn_q8_row_to_f32(const uint8_t *row, int D, float *out) {
    for (int b = 0; b < D / MN_Q8_BLOCK; b++) {
        const uint8_t *blk = row + (size_t)b * MN_Q8_BYTES;
        uint16_t h;
        memcpy(&h, blk, 2);
        const float d = mn_fp16_to_fp32(h);
        const int8_t *qs = (const int8_t *)(blk + 2);
        for (int i = 0; i < MN_Q8_BLOCK; i++) out[b * MN_Q8_BLOCK + i] = d * (float)qs[i];
    }
}

/* s[j] = scale q.K_j over q8_0 rows; returns the maximum */
static float scores_q8_scalar(int D, int64_t n, const float *q, float scale, const uint8_t *K, size_t ld,
                              const uint8_t *mask, float *s) {
    float mx = -INFINITY, k[256 + MN_Q8_BLOCK];
    for (int64_t j = 0; j < n; j++) {
        if (mask && !mask[j]) {
            s[j] = -INFINITY;
            continue;
        }
        mn_q8_row_to_f32(K + (size_t)j * ld, D, k);
        float d = 0;
        for (int i = 0; i < D; i++) d += q[i] * k[i];
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    return mx;
}

void mn_attn_group_q8_scalar(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                             size_t ld, const uint8_t *mask, float *out, float *scratch) {
    float v[256 + MN_Q8_BLOCK];
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n;
        const float mx = scores_q8_scalar(D, n, q + (int64_t)g * D, scale, K, ld, mask, s);
        float sum = 0;
        for (int64_t j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
        const float inv = 1.0f / sum;
        float *o = out + (int64_t)g * D;
        memset(o, 0, sizeof(float) * (size_t)D);
        for (int64_t j = 0; j < n; j++) {
            if (mask && !mask[j]) continue;
            mn_q8_row_to_f32(V + (size_t)j * ld, D, v);
            const float p = s[j] * inv;
            for (int i = 0; i < D; i++) o[i] += p * v[i];
        }
    }
}

void mn_attn_part_q8_scalar(int G, int D, int64_t n, const float *q, float scale, const uint8_t *K, const uint8_t *V,
                            size_t ld, const uint8_t *mask, float *part, float *scratch) {
    float *M = part + (size_t)G * D, *L = M + G, v[256 + MN_Q8_BLOCK];
    for (int g = 0; g < G; g++) {
        float *s = scratch + (int64_t)g * n, *o = part + (int64_t)g * D;
        const float mx = scores_q8_scalar(D, n, q + (int64_t)g * D, scale, K, ld, mask, s);
        memset(o, 0, sizeof(float) * (size_t)D);
        M[g] = mx, L[g] = 0;
        if (mx == -INFINITY) continue;
        float sum = 0;
        for (int64_t j = 0; j < n; j++) {
            if (mask && !mask[j]) continue;
            const float p = expf(s[j] - mx);
            sum += p;
            mn_q8_row_to_f32(V + (size_t)j * ld, D, v);
            for (int i = 0; i < D; i++) o[i] += p * v[i];
        }
        L[g] = sum;
    }
}

void mn_attn_tile_q8_scalar(int G, int D, int nq, const float *q, size_t ldq, float scale, const uint8_t *K,
                            const uint8_t *V, size_t ld, const int64_t *lim, const uint8_t *const *mask, float *out,
                            size_t ldo, float *scratch) {
    for (int i = 0; i < nq; i++)
        mn_attn_group_q8_scalar(G, D, lim[i], q + (size_t)i * ldq, scale, K, V, ld, mask ? mask[i] : NULL,
                                out + (size_t)i * ldo, scratch);
}

mn_attn_tile_q8_fn mn_attn_tile_q8_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_tile_q8_avx512;
    case MN_ISA_AVX2: return mn_attn_tile_q8_avx2;
    default: return mn_attn_tile_q8_scalar;
    }
}

mn_attn_part_q8_fn mn_attn_part_q8_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_part_q8_avx512;
    case MN_ISA_AVX2: return mn_attn_part_q8_avx2;
    default: return mn_attn_part_q8_scalar;
    }
}

mn_attn_group_q8_fn mn_attn_group_q8_get_isa(mn_isa isa) {
    if (isa > mn_cpu_isa()) return NULL;
    switch (isa) {
    case MN_ISA_AVX512: return mn_attn_group_q8_avx512;
    case MN_ISA_AVX2: return mn_attn_group_q8_avx2;
    default: return mn_attn_group_q8_scalar;
    }
}
