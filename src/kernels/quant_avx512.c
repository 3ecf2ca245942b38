/* quant_avx512.c - AVX-512 (F/BW/VL/DQ/VNNI) kernels: Q4_0/Q4_1/Q8_0 dot
 * products and gemm, f16/f32 vector ops. Everything else (including the
 * Q8_0/Q8_1 activation quantizers, whose AVX2 versions measured faster than
 * a 512-bit one) uses the AVX2 kernels (see quant.c's merge).
 *
 * gemm design. vpdpbusd multiplies 4 u8 x s8 byte pairs into each int32 lane.
 * Every lane of an integer accumulator must hold products of ONE block (each
 * block has its own float scale), but which 4 bytes of which block a lane
 * gets is free as long as weights and activations agree. Rows are cut into
 * groups:
 *   G16 (Q4_0/Q4_1): 16 blocks -> 8 vectors; lane l holds block pi(l) =
 *       4*(l%4) + l/4, vector s holds its elements 4s..4s+3. 8 vpdpbusd fill
 *       one accumulator with 16 complete block sums: one cvt + one fma per 16
 *       blocks. Weights reach this layout with 4 vpermt2d + a 4x4 dword
 *       transpose (8 unpacks) + nibble split.
 *   G8 (Q8_0): 8 blocks -> 4 vectors; lane l holds dwords of block
 *       2*(l%4) + l/8 (two lanes per block); one 4x4 transpose per 8 blocks.
 *   pair / single: 2 (or 1) blocks in one vector, lanes 0-7 and 8-15.
 * Activations are repacked once per call into the same layout together with
 * their scale per lane (dav) and an aux vector: Q8_1's s (the Q4_1 min term,
 * divided by the lanes per block so the lane sum is right), or, for Q8_0
 * activations, the lane's initial accumulator -k*sum(a) that turns unsigned
 * weights back into signed ones (Q4_0: w = q - 8, k = 8; Q8_0: weights are
 * fed as w ^ 0x80 = w + 128, k = 128). Integer sums stay exact.
 * Scales are gathered (vpgatherdd) or permuted out of the loaded blocks.
 * T <= 3: each weight group is unpacked in registers and used for all tokens
 * (with a software prefetch ~2 KiB ahead: decode streams weights from DRAM).
 * Larger T: a block of rows (~32 KiB unpacked) is unpacked once into an L1
 * buffer and a 4x3 (rows x tokens) micro-kernel with 12 independent vpdpbusd
 * chains runs over it, each 3-token activation slice staying in L1; 16
 * accumulators are reduced together by one shuffle tree (hsum16).
 */
#include <immintrin.h>

#include "kernels/vexp_simd.h"

#include "quant_impl.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }
static ALWAYS_INLINE __m512 ld512f(const void *p) { return _mm512_loadu_ps(p); }
static ALWAYS_INLINE __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static ALWAYS_INLINE __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
static ALWAYS_INLINE void st512(void *p, __m512i v) { _mm512_storeu_si512(p, v); }
static ALWAYS_INLINE void st512f(void *p, __m512 v) { _mm512_storeu_ps(p, v); }
static ALWAYS_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }
static ALWAYS_INLINE __m512i two256(const void *a, const void *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(ld256(a)), ld256(b), 1);
}

/* In every 128-bit lane: out[i] dword k = in[k] dword i. */
static ALWAYS_INLINE void tr4(__m512i *a, __m512i *b, __m512i *c, __m512i *d) {
    const __m512i t0 = _mm512_unpacklo_epi32(*a, *b), t1 = _mm512_unpackhi_epi32(*a, *b);
    const __m512i t2 = _mm512_unpacklo_epi32(*c, *d), t3 = _mm512_unpackhi_epi32(*c, *d);
    *a = _mm512_unpacklo_epi64(t0, t2);
    *b = _mm512_unpackhi_epi64(t0, t2);
    *c = _mm512_unpacklo_epi64(t1, t3);
    *d = _mm512_unpackhi_epi64(t1, t3);
}

/* -------------------------------------------------------- weight groups */

typedef struct {
    __m512i v[8];
    __m512 dw, mw;
} wgroup;

static ALWAYS_INLINE __m512i nib_lo(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
static ALWAYS_INLINE __m512i nib_hi(__m512i v) {
    return _mm512_and_si512(_mm512_srli_epi32(v, 4), _mm512_set1_epi8(0x0F));
}
/* pair: lanes 0-7 <- element a, 8-15 <- element b of a small vector */
static ALWAYS_INLINE __m512i idx_pair(int a, int b) {
    return _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}

/* 16 Q4_1 blocks (320 bytes at p). */
static ALWAYS_INLINE void wg16_q4_1(const uint8_t *p, wgroup *g) {
    const __m512i iz = _mm512_setr_epi32(1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 28, 29, 30, 31);
    __m512i La[4], Z[4];
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        La[k] = ld512(p + 80 * k);
        Z[k] = _mm512_permutex2var_epi32(La[k], iz, ld512(p + 80 * k + 16));
    }
    tr4(&Z[0], &Z[1], &Z[2], &Z[3]);
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        g->v[i] = nib_lo(Z[i]);
        g->v[4 + i] = nib_hi(Z[i]);
    }
    /* (d,m) dword of block 4k+c is dword 5c of La[k]; lane 4c+k */
    const __m512i i01 = _mm512_setr_epi32(0, 16, 0, 0, 5, 21, 0, 0, 10, 26, 0, 0, 15, 31, 0, 0);
    const __m512i i23 = _mm512_setr_epi32(0, 0, 0, 16, 0, 0, 5, 21, 0, 0, 10, 26, 0, 0, 15, 31);
    const __m512i t01 = _mm512_permutex2var_epi32(La[0], i01, La[1]);
    const __m512i t23 = _mm512_permutex2var_epi32(La[2], i23, La[3]);
    const __m512i dm = _mm512_mask_blend_epi32(0xCCCC, t01, t23);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
    g->mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
}
/* 16 Q4_0 blocks (18 bytes each). */
static ALWAYS_INLINE void wg16_q4_0(const uint8_t *p, wgroup *g) {
    __m512i Z[4];
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        const uint8_t *b = p + 72 * k + 2;
        __m512i z = _mm512_castsi128_si512(ld128(b));
        z = _mm512_inserti32x4(z, ld128(b + 18), 1);
        z = _mm512_inserti32x4(z, ld128(b + 36), 2);
        Z[k] = _mm512_inserti32x4(z, ld128(b + 54), 3);
    }
    tr4(&Z[0], &Z[1], &Z[2], &Z[3]);
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        g->v[i] = nib_lo(Z[i]);
        g->v[4 + i] = nib_hi(Z[i]);
    }
    /* d of block pi(l) = 4*(l%4) + l/4, read as the dword at 18*pi(l) */
    const __m512i off = _mm512_setr_epi32(0, 72, 144, 216, 18, 90, 162, 234, 36, 108, 180, 252, 54, 126, 198, 270);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(off, p, 1)));
    g->mw = _mm512_setzero_ps();
}
/* A Q5_0 block's fifth bits (qh, at b + 2) as two vectors in the order of its qs bytes:
 * byte j = 0x10 where bit j (lo: values 0..15) or bit j + 16 (hi: values 16..31) is set. */
static ALWAYS_INLINE void q5_bits(const uint8_t *b, __m128i *lo, __m128i *hi) {
    const uint32_t qh = mn_rd32(b + 2);
    const __m128i t = _mm_set1_epi8(0x10);
    *lo = _mm_and_si128(_mm_movm_epi8((__mmask16)(qh & 0xFFFFu)), t);
    *hi = _mm_and_si128(_mm_movm_epi8((__mmask16)(qh >> 16)), t);
}
/* 16 Q5_0 blocks (22 bytes each): Q4_0's arrangement, each value's fifth bit ORed in
 * (the bits take the same gather and transpose as the nibbles they complete). */
static ALWAYS_INLINE void wg16_q5_0(const uint8_t *p, wgroup *g) {
    __m512i Z[4], L[4], H[4];
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        const uint8_t *b = p + 88 * k;
        __m128i lo[4], hi[4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) q5_bits(b + 22 * j, &lo[j], &hi[j]);
        __m512i z = _mm512_castsi128_si512(ld128(b + 6));
        z = _mm512_inserti32x4(z, ld128(b + 28), 1);
        z = _mm512_inserti32x4(z, ld128(b + 50), 2);
        Z[k] = _mm512_inserti32x4(z, ld128(b + 72), 3);
        __m512i l = _mm512_castsi128_si512(lo[0]), h = _mm512_castsi128_si512(hi[0]);
        l = _mm512_inserti32x4(l, lo[1], 1), h = _mm512_inserti32x4(h, hi[1], 1);
        l = _mm512_inserti32x4(l, lo[2], 2), h = _mm512_inserti32x4(h, hi[2], 2);
        L[k] = _mm512_inserti32x4(l, lo[3], 3), H[k] = _mm512_inserti32x4(h, hi[3], 3);
    }
    tr4(&Z[0], &Z[1], &Z[2], &Z[3]);
    tr4(&L[0], &L[1], &L[2], &L[3]);
    tr4(&H[0], &H[1], &H[2], &H[3]);
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        g->v[i] = _mm512_or_si512(nib_lo(Z[i]), L[i]);
        g->v[4 + i] = _mm512_or_si512(nib_hi(Z[i]), H[i]);
    }
    /* d of block pi(l) = 4*(l%4) + l/4, read as the dword at 22*pi(l) */
    const __m512i off = _mm512_setr_epi32(0, 88, 176, 264, 22, 110, 198, 286, 44, 132, 220, 308, 66, 154, 242, 330);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(off, p, 1)));
    g->mw = _mm512_setzero_ps();
}
/* 8 Q8_0 blocks (34 bytes each), weights fed as w ^ 0x80. */
static ALWAYS_INLINE void wg8_q8_0(const uint8_t *p, wgroup *g) {
    __m512i P[4];
    #pragma GCC unroll 8
    for (int m = 0; m < 4; m++) P[m] = two256(p + 68 * m + 2, p + 68 * m + 36);
    tr4(&P[0], &P[1], &P[2], &P[3]);
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) g->v[i] = _mm512_xor_si512(P[i], x80);
    /* d of block 2*(l%4) + l/8, read as the dword at 34*block */
    const __m512i off = _mm512_setr_epi32(0, 68, 136, 204, 0, 68, 136, 204, 34, 102, 170, 238, 34, 102, 170, 238);
    g->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(off, p, 1)));
    g->mw = _mm512_setzero_ps();
}
/* 2 (or 1, n==1) blocks in one vector. */
static ALWAYS_INLINE void wpair_q4_1(const uint8_t *p, int n, wgroup *g) {
    __m512i v;
    __m128i h;
    if (n == 2) {
        v = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(ld128(p + 4)), 0xFF00, ld128(p + 24));
        h = _mm_setr_epi32((int)mn_rd32(p), (int)mn_rd32(p + 20), 0, 0);
    } else {
        v = _mm512_maskz_broadcast_i32x4(0x00FF, ld128(p + 4));
        h = _mm_setr_epi32((int)mn_rd32(p), 0, 0, 0);
    }
    v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    g->v[0] = _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
    const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(h)); /* d0 m0 d1 m1 */
    g->dw = _mm512_permutexvar_ps(idx_pair(0, 2), f);
    g->mw = _mm512_permutexvar_ps(idx_pair(1, 3), f);
}
static ALWAYS_INLINE void wpair_q4_0(const uint8_t *p, int n, wgroup *g) {
    __m512i v;
    __m128i h;
    if (n == 2) {
        v = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(ld128(p + 2)), 0xFF00, ld128(p + 20));
        h = _mm_setr_epi16((short)mn_rd16(p), (short)mn_rd16(p + 18), 0, 0, 0, 0, 0, 0);
    } else {
        v = _mm512_maskz_broadcast_i32x4(0x00FF, ld128(p + 2));
        h = _mm_setr_epi16((short)mn_rd16(p), 0, 0, 0, 0, 0, 0, 0);
    }
    v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    g->v[0] = _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
    g->dw = _mm512_permutexvar_ps(idx_pair(0, 1), _mm512_castps128_ps512(_mm_cvtph_ps(h)));
    g->mw = _mm512_setzero_ps();
}
static ALWAYS_INLINE void wpair_q5_0(const uint8_t *p, int n, wgroup *g) {
    __m512i v, bits;
    __m128i h, lo0, hi0, lo1 = _mm_setzero_si128(), hi1 = _mm_setzero_si128();
    q5_bits(p, &lo0, &hi0);
    if (n == 2) {
        q5_bits(p + 22, &lo1, &hi1);
        v = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(ld128(p + 6)), 0xFF00, ld128(p + 28));
        h = _mm_setr_epi16((short)mn_rd16(p), (short)mn_rd16(p + 22), 0, 0, 0, 0, 0, 0);
    } else {
        v = _mm512_maskz_broadcast_i32x4(0x00FF, ld128(p + 6));
        h = _mm_setr_epi16((short)mn_rd16(p), 0, 0, 0, 0, 0, 0, 0);
    }
    /* lanes: block 0 values 0..15, 16..31, then block 1's (as wpair_q4_0 splits the nibbles) */
    bits = _mm512_castsi128_si512(lo0);
    bits = _mm512_inserti32x4(bits, hi0, 1);
    bits = _mm512_inserti32x4(bits, lo1, 2);
    bits = _mm512_inserti32x4(bits, hi1, 3);
    v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    g->v[0] = _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi8(0x0F)), bits);
    g->dw = _mm512_permutexvar_ps(idx_pair(0, 1), _mm512_castps128_ps512(_mm_cvtph_ps(h)));
    g->mw = _mm512_setzero_ps();
}
static ALWAYS_INLINE void wpair_q8_0(const uint8_t *p, int n, wgroup *g) {
    __m512i v;
    __m128i h;
    if (n == 2) {
        v = two256(p + 2, p + 36);
        h = _mm_setr_epi16((short)mn_rd16(p), (short)mn_rd16(p + 34), 0, 0, 0, 0, 0, 0);
    } else {
        v = _mm512_castsi256_si512(ld256(p + 2));
        v = _mm512_maskz_mov_epi32(0x00FF, v);
        h = _mm_setr_epi16((short)mn_rd16(p), 0, 0, 0, 0, 0, 0, 0);
    }
    g->v[0] = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    g->dw = _mm512_permutexvar_ps(idx_pair(0, 1), _mm512_castps128_ps512(_mm_cvtph_ps(h)));
    g->mw = _mm512_setzero_ps();
}

/* ------------------------------------------------------------- the plan */

typedef struct {
    int wtype;
    int main_blocks, main_nv; /* 16/8 (G16) or 8/4 (G8) */
    int has_m;                /* Q4_1: min term via aux */
    int init_mul;             /* 0 (aux = s), -8 (Q4_0), -16 (Q5_0), -128 (Q8_0) */
    int wblk, ablk, aqs;      /* weight/activation block bytes, activation qs offset */
    int64_t nmain, npair, nsingle;
    size_t a_bytes; /* one repacked token */
    size_t w_bytes; /* one repacked weight row */
} plan;

static size_t agroup_bytes(int nv) { return (size_t)nv * 64 + 128; }
static size_t wgroup_bytes(int nv, int has_m) { return (size_t)nv * 64 + 64 + (has_m ? 64 : 0); }

static int make_plan(int wtype, int64_t K, plan *P) {
    memset(P, 0, sizeof *P);
    P->wtype = wtype;
    switch (wtype) {
    case MN_TYPE_Q4_1:
        P->main_blocks = 16, P->main_nv = 8, P->has_m = 1, P->init_mul = 0;
        P->wblk = 20, P->ablk = 36, P->aqs = 4;
        break;
    case MN_TYPE_Q4_0:
        P->main_blocks = 16, P->main_nv = 8, P->has_m = 0, P->init_mul = -8;
        P->wblk = 18, P->ablk = 34, P->aqs = 2;
        break;
    case MN_TYPE_Q5_0:
        P->main_blocks = 16, P->main_nv = 8, P->has_m = 0, P->init_mul = -16;
        P->wblk = 22, P->ablk = 34, P->aqs = 2;
        break;
    case MN_TYPE_Q8_0:
        P->main_blocks = 8, P->main_nv = 4, P->has_m = 0, P->init_mul = -128;
        P->wblk = 34, P->ablk = 34, P->aqs = 2;
        break;
    default: return 0;
    }
    const int64_t nb = K / MN_QK;
    P->nmain = nb / P->main_blocks;
    const int64_t rem = nb - P->nmain * P->main_blocks;
    P->npair = rem / 2;
    P->nsingle = rem & 1;
    P->a_bytes = (size_t)P->nmain * agroup_bytes(P->main_nv) + (size_t)(P->npair + P->nsingle) * agroup_bytes(1);
    P->w_bytes = (size_t)P->nmain * wgroup_bytes(P->main_nv, P->has_m) +
                 (size_t)(P->npair + P->nsingle) * wgroup_bytes(1, P->has_m);
    return 1;
}

/* ---------------------------------------------------- activation repack */

/* Scales of the activation blocks whose indices are listed per lane
 * (-1: lane unused): dav = d, aux = s * sdiv (Q8_1 only). Pair/single groups. */
static ALWAYS_INLINE void act_scales(const plan *P, const uint8_t *x, const int *blk, float sdiv,
                                     uint8_t *dav, uint8_t *aux) {
    float d[16], s[16];
    for (int l = 0; l < 16; l++) {
        d[l] = s[l] = 0.0f;
        if (blk[l] < 0) continue;
        const uint8_t *b = x + (size_t)blk[l] * P->ablk;
        d[l] = h2f(mn_rd16(b));
        if (!P->init_mul) s[l] = h2f(mn_rd16(b + 2)) * sdiv;
    }
    memcpy(dav, d, 64);
    if (!P->init_mul) memcpy(aux, s, 64);
}
/* Same for main groups, every lane used: one gather of the leading dword
 * (d, and s for Q8_1) of each lane's block. */
static ALWAYS_INLINE void act_scales_g(const plan *P, const uint8_t *x, const int *blk, float sdiv, uint8_t *dav,
                                       uint8_t *aux) {
    const __m512i off = _mm512_mullo_epi32(_mm512_loadu_si512(blk), _mm512_set1_epi32(P->ablk));
    const __m512i g = _mm512_i32gather_epi32(off, x, 1);
    st512f(dav, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)));
    if (!P->init_mul)
        st512f(aux, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16))),
                                  _mm512_set1_ps(sdiv)));
}
/* aux = init_mul * (per-lane sum of the nv vectors' bytes) */
static ALWAYS_INLINE void act_init(const plan *P, const uint8_t *q, int nv, uint8_t *aux) {
    __m512i s = _mm512_setzero_si512();
    const __m512i ones = _mm512_set1_epi8(1);
    #pragma GCC unroll 8
    for (int v = 0; v < nv; v++) s = _mm512_dpbusd_epi32(s, ones, ld512(q + 64 * v));
    st512(aux, _mm512_mullo_epi32(s, _mm512_set1_epi32(P->init_mul)));
}

static void act_repack(const plan *P, const uint8_t *x, uint8_t *o) {
    static const int blk16[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
    static const int blk8[16] = {0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7};
    static const int blkp2[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const int blkp1[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1};
    const size_t ab = (size_t)P->ablk;
    for (int64_t g = 0; g < P->nmain; g++) {
        const uint8_t *q = x + P->aqs;
        if (P->main_blocks == 16) {
            __m512i lo[4], hi[4];
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {
                const uint8_t *b = q + 4 * k * ab;
                const __m512i r01 = two256(b, b + ab), r23 = two256(b + 2 * ab, b + 3 * ab);
                lo[k] = _mm512_shuffle_i64x2(r01, r23, 0x88);
                hi[k] = _mm512_shuffle_i64x2(r01, r23, 0xDD);
            }
            tr4(&lo[0], &lo[1], &lo[2], &lo[3]);
            tr4(&hi[0], &hi[1], &hi[2], &hi[3]);
            #pragma GCC unroll 8
            for (int i = 0; i < 4; i++) {
                st512(o + 64 * i, lo[i]);
                st512(o + 64 * (4 + i), hi[i]);
            }
            act_scales_g(P, x, blk16, 1.0f, o + 8 * 64, o + 9 * 64);
            if (P->init_mul) act_init(P, o, 8, o + 9 * 64);
            o += agroup_bytes(8);
            x += 16 * ab;
        } else {
            __m512i E[4];
            #pragma GCC unroll 8
            for (int m = 0; m < 4; m++) E[m] = two256(q + 2 * m * ab, q + (2 * m + 1) * ab);
            tr4(&E[0], &E[1], &E[2], &E[3]);
            #pragma GCC unroll 8
            for (int i = 0; i < 4; i++) st512(o + 64 * i, E[i]);
            act_scales_g(P, x, blk8, 0.5f, o + 4 * 64, o + 5 * 64);
            if (P->init_mul) act_init(P, o, 4, o + 5 * 64);
            o += agroup_bytes(4);
            x += 8 * ab;
        }
    }
    for (int64_t i = 0; i < P->npair + P->nsingle; i++) {
        const int two = i < P->npair;
        const uint8_t *q = x + P->aqs;
        const __m512i A = two ? two256(q, q + ab) : _mm512_castsi256_si512(ld256(q));
        st512(o, two ? A : _mm512_maskz_mov_epi32(0x00FF, A));
        act_scales(P, x, two ? blkp2 : blkp1, 0.125f, o + 64, o + 128);
        if (P->init_mul) act_init(P, o, 1, o + 128);
        o += agroup_bytes(1);
        x += 2 * ab;
    }
}

/* ------------------------------------------------------- weight loading */

static ALWAYS_INLINE void load_main(int wtype, const uint8_t *p, wgroup *g) {
    if (wtype == MN_TYPE_Q4_1) wg16_q4_1(p, g);
    else if (wtype == MN_TYPE_Q4_0) wg16_q4_0(p, g);
    else if (wtype == MN_TYPE_Q5_0) wg16_q5_0(p, g);
    else wg8_q8_0(p, g);
}
static ALWAYS_INLINE void load_pair(int wtype, const uint8_t *p, int n, wgroup *g) {
    if (wtype == MN_TYPE_Q4_1) wpair_q4_1(p, n, g);
    else if (wtype == MN_TYPE_Q4_0) wpair_q4_0(p, n, g);
    else if (wtype == MN_TYPE_Q5_0) wpair_q5_0(p, n, g);
    else wpair_q8_0(p, n, g);
}
static ALWAYS_INLINE int main_blocks_of(int wtype) { return wtype == MN_TYPE_Q8_0 ? 8 : 16; }
static ALWAYS_INLINE int main_nv_of(int wtype) { return wtype == MN_TYPE_Q8_0 ? 4 : 8; }
static ALWAYS_INLINE int wblk_of(int wtype) {
    return wtype == MN_TYPE_Q4_1 ? 20 : wtype == MN_TYPE_Q4_0 ? 18 : wtype == MN_TYPE_Q5_0 ? 22 : 34;
}

/* One weight group (in registers) against one token's activation group. */
static ALWAYS_INLINE __m512 group_dot(int wtype, const wgroup *g, int nv, const uint8_t *a, __m512 acc) {
    const int has_m = wtype == MN_TYPE_Q4_1;
    __m512i is = has_m ? _mm512_setzero_si512() : ld512(a + 64 * nv + 64);
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) is = _mm512_dpbusd_epi32(is, g->v[v], ld512(a + 64 * v));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(g->dw, ld512f(a + 64 * nv)), acc);
    if (has_m) acc = _mm512_fmadd_ps(g->mw, ld512f(a + 64 * nv + 64), acc);
    return acc;
}

#ifndef PF_BYTES
#define PF_BYTES 2048
#endif
/* Small T: every row's groups are unpacked in registers and used for the
 * TT (<= 3) tokens at once. */
static ALWAYS_INLINE void gemm_direct(int wtype, const plan *P, const uint8_t *W, size_t w_stride,
                                      int64_t r0, int64_t r1, const uint8_t *A, int TT, float *Y,
                                      int64_t ldy) {
    const int nv = main_nv_of(wtype), mb = main_blocks_of(wtype), wb = wblk_of(wtype);
    const size_t gmain = agroup_bytes(nv), gpair = agroup_bytes(1);
    const size_t row_bytes = (size_t)(P->nmain * mb + 2 * P->npair + P->nsingle) * wb;
    const size_t pf_dist = (PF_BYTES + w_stride - 1) / w_stride * w_stride;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * w_stride;
        /* software prefetch of a row ~PF_BYTES ahead: +5-12% when weights
         * stream from DRAM (prefetches never fault) */
        for (size_t o = 0; o < row_bytes; o += 64) _mm_prefetch((const char *)w + pf_dist + o, _MM_HINT_T0);
        __m512 acc[3] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        const uint8_t *a = A;
        for (int64_t g = 0; g < P->nmain; g++) {
            wgroup wg;
            load_main(wtype, w, &wg);
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) acc[t] = group_dot(wtype, &wg, nv, a + t * P->a_bytes, acc[t]);
            w += (size_t)mb * wb;
            a += gmain;
        }
        for (int64_t i = 0; i < P->npair + P->nsingle; i++) {
            wgroup wg;
            load_pair(wtype, w, i < P->npair ? 2 : 1, &wg);
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) acc[t] = group_dot(wtype, &wg, 1, a + t * P->a_bytes, acc[t]);
            w += 2 * (size_t)wb;
            a += gpair;
        }
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) Y[t * ldy + r] = _mm512_reduce_add_ps(acc[t]);
    }
}

/* Unpacks R rows into buf (P->w_bytes each). */
static ALWAYS_INLINE void w_repack(int wtype, const plan *P, const uint8_t *W, size_t w_stride, int64_t r,
                                   int R, uint8_t *buf) {
    const int nv = main_nv_of(wtype), mb = main_blocks_of(wtype), wb = wblk_of(wtype);
    const int has_m = wtype == MN_TYPE_Q4_1;
    for (int i = 0; i < R; i++) {
        const uint8_t *w = W + (size_t)(r + i) * w_stride;
        uint8_t *o = buf + (size_t)i * P->w_bytes;
        for (int64_t g = 0; g < P->nmain + P->npair + P->nsingle; g++) {
            wgroup wg;
            const int main = g < P->nmain;
            if (main) load_main(wtype, w, &wg);
            else load_pair(wtype, w, g < P->nmain + P->npair ? 2 : 1, &wg);
            const int n = main ? nv : 1;
            #pragma GCC unroll 8
            for (int v = 0; v < n; v++) st512(o + 64 * v, wg.v[v]);
            st512f(o + 64 * n, wg.dw);
            if (has_m) st512f(o + 64 * n + 64, wg.mw);
            o += wgroup_bytes(n, has_m);
            w += (size_t)(main ? mb : 2) * wb;
        }
    }
}

/* R x TT tile over `ng` groups of nv vectors each (weights from the repacked
 * buffer, rows wrow bytes apart; tokens atok bytes apart). The vector loop is
 * outermost so the R*TT integer accumulators form independent vpdpbusd chains
 * and every weight vector is loaded once for all TT tokens. */
static ALWAYS_INLINE void tile_groups(int wtype, int R, int TT, int nv, int64_t ng, const uint8_t **pw,
                                      size_t wrow, const uint8_t **pa, size_t atok, __m512 acc[4][4]) {
    const int has_m = wtype == MN_TYPE_Q4_1;
    const uint8_t *w = *pw, *a = *pa;
    for (int64_t g = 0; g < ng; g++) {
        __m512i is[4][4];
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) {
            const __m512i init = has_m ? _mm512_setzero_si512() : ld512(a + (size_t)t * atok + 64 * nv + 64);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) is[r][t] = init;
        }
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            __m512i wv[4];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) wv[r] = ld512(w + r * wrow + 64 * v);
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) {
                const __m512i av = ld512(a + (size_t)t * atok + 64 * v);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) is[r][t] = _mm512_dpbusd_epi32(is[r][t], wv[r], av);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) {
            const uint8_t *at = a + (size_t)t * atok;
            const __m512 dav = ld512f(at + 64 * nv);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][t]),
                                            _mm512_mul_ps(ld512f(w + r * wrow + 64 * nv), dav), acc[r][t]);
            if (has_m) {
                const __m512 aux = ld512f(at + 64 * nv + 64);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++)
                    acc[r][t] = _mm512_fmadd_ps(ld512f(w + r * wrow + 64 * nv + 64), aux, acc[r][t]);
            }
        }
        w += wgroup_bytes(nv, has_m);
        a += agroup_bytes(nv);
    }
    *pw = w;
    *pa = a;
}

/* Horizontal sums of 16 vectors: lane l of the result is the sum of
 * v[4*(l%4) + l/4] (45 shuffles/adds instead of 16 separate reductions). */
static ALWAYS_INLINE __m512 hsum16(const __m512 v[16]) {
    __m512 s[8], u[4], w[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        s[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0xDD));
    w[0] = _mm512_add_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
    w[1] = _mm512_add_ps(_mm512_unpacklo_ps(u[2], u[3]), _mm512_unpackhi_ps(u[2], u[3]));
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x44), _mm512_shuffle_ps(w[0], w[1], 0xEE));
}

static ALWAYS_INLINE void tile(int wtype, int R, int TT, const plan *P, const uint8_t *wbuf, const uint8_t *A,
                               float *Y, int64_t ldy, int64_t r, int64_t t0) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    const uint8_t *w = wbuf, *a = A;
    tile_groups(wtype, R, TT, main_nv_of(wtype), P->nmain, &w, P->w_bytes, &a, P->a_bytes, acc);
    tile_groups(wtype, R, TT, 1, P->npair + P->nsingle, &w, P->w_bytes, &a, P->a_bytes, acc);
    if (R == 4) {
        /* v[4r + t] = acc[r][t] -> result lane 4t + r: rows 0..3 of token t
         * are the 128-bit lane t */
        __m512 v[16];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) v[4 * i + j] = acc[i][j];
        const __m512 sums = hsum16(v);
        float out[16];
        _mm512_storeu_ps(out, sums);
#pragma GCC unroll 4
        for (int j = 0; j < TT; j++) memcpy(&Y[(t0 + j) * ldy + r], out + 4 * j, 16);
    } else {
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int j = 0; j < TT; j++) Y[(t0 + j) * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
    }
}

#define TILE_FN(name, WT, R, TT)                                                                          \
    static void name(const plan *P, const uint8_t *wbuf, const uint8_t *A, float *Y, int64_t ldy, int64_t r, \
                     int64_t t0) {                                                                        \
        tile(WT, R, TT, P, wbuf, A, Y, ldy, r, t0);                                                      \
    }
/* Tile: 4 rows x TILE_T tokens: 4*3 integer + 4*3 float accumulators + 4
 * weight vectors + 1 activation vector fit the 32 zmm registers. */
#define TILE_T 3
/* Instances for R in {1, 4} and TT in 1..TILE_T (= 3). */
#define TILE_SET(pfx, WT)                 \
    TILE_FN(pfx##_4_1, WT, 4, 1)          \
    TILE_FN(pfx##_4_2, WT, 4, 2)          \
    TILE_FN(pfx##_4_3, WT, 4, 3)          \
    TILE_FN(pfx##_1_1, WT, 1, 1)          \
    TILE_FN(pfx##_1_2, WT, 1, 2)          \
    TILE_FN(pfx##_1_3, WT, 1, 3)          \
    static void (*const pfx##_tab[2][3])(const plan *, const uint8_t *, const uint8_t *, float *, int64_t, \
                                         int64_t, int64_t) = {                                          \
        {pfx##_1_1, pfx##_1_2, pfx##_1_3}, {pfx##_4_1, pfx##_4_2, pfx##_4_3}};

TILE_SET(tq41, MN_TYPE_Q4_1)
TILE_SET(tq40, MN_TYPE_Q4_0)
TILE_SET(tq50, MN_TYPE_Q5_0)
TILE_SET(tq80, MN_TYPE_Q8_0)

#define DIRECT_FN(name, WT)                                                                                \
    static void name(const plan *P, const uint8_t *W, size_t ws, int64_t r0, int64_t r1, const uint8_t *A, \
                     int TT, float *Y, int64_t ldy) {                                                      \
        if (TT == 1) gemm_direct(WT, P, W, ws, r0, r1, A, 1, Y, ldy);                                      \
        else if (TT == 2) gemm_direct(WT, P, W, ws, r0, r1, A, 2, Y, ldy);                                 \
        else gemm_direct(WT, P, W, ws, r0, r1, A, 3, Y, ldy);                                              \
    }
DIRECT_FN(direct_q41, MN_TYPE_Q4_1)
DIRECT_FN(direct_q40, MN_TYPE_Q4_0)
DIRECT_FN(direct_q50, MN_TYPE_Q5_0)
DIRECT_FN(direct_q80, MN_TYPE_Q8_0)

/* Tokens at most this many use the register-only path. */
#define DIRECT_MAX_T 3
/* Repacked activations kept per pass (they are streamed once per 4 rows). */
#define ACT_BUDGET (1u << 20)

/* ------------------------------------------------ K-quants (Q4_K, Q6_K) x Q8_K
 * Several tokens: each weight row is unpacked once per call into a super-block
 * form both types share, then dotted with every token's Q8_K row as it is
 * (its 256 int8 values are already in element order):
 *   w[256]    unsigned values in element order (Q4_K: 0..15; Q6_K: q + 32, 0..63)
 *   sv[4][16] float scale of each int32 lane of vpdpbusd over the 64 bytes of
 *             vector v (lane L sums elements 64v + 4L .. +3): d * sc of its sub-block
 *   cv[16]    float factor of bsums[g] (the activation's sum over elements
 *             16g..16g+15): Q4_K -dmin * m[g/2], Q6_K -32 * d * sc[g]
 * so that a super-block contributes x.d * (sum_v sum_L sv[v][L] * dot[v][L] +
 * sum_g cv[g] * bsums[g]). The integer dots are exact; the float sums differ
 * from the one-block reference by rounding only. */
typedef struct {
    uint8_t w[256];
    float sv[4][16];
    float cv[16];
} ksb;

static void ksb_q4_K(const mn_block_q4_K *b, ksb *o) {
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    float dsc[8], mm[8];
    for (int j = 0; j < 8; j++) {
        int sc, m;
        mn_q4k_scale_min(b->scales, j, &sc, &m);
        dsc[j] = d * (float)sc;
        mm[j] = -dmin * (float)m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            o->w[64 * c + l] = b->qs[32 * c + l] & 0xF;
            o->w[64 * c + 32 + l] = b->qs[32 * c + l] >> 4;
        }
    for (int v = 0; v < 4; v++)
        for (int L = 0; L < 16; L++) o->sv[v][L] = dsc[(64 * v + 4 * L) / 32];
    for (int g = 0; g < 16; g++) o->cv[g] = mm[g / 2];
}

static void ksb_q6_K(const mn_block_q6_K *b, ksb *o) {
    const float d = h2f(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        uint8_t *u = o->w + 128 * h;
        for (int l = 0; l < 32; l++) {
            u[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
            u[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            u[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            u[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
    for (int v = 0; v < 4; v++)
        for (int L = 0; L < 16; L++) o->sv[v][L] = d * (float)b->scales[(64 * v + 4 * L) / 16];
    for (int g = 0; g < 16; g++) o->cv[g] = -32.0f * d * (float)b->scales[g];
}

/* One unpacked row (nsb super-blocks) against one token's Q8_K row. */
static ALWAYS_INLINE float ksb_dot(const ksb *w, const mn_block_q8_K *x, int64_t nsb) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nsb; i++) {
        const ksb *k = w + i;
        __m512 tf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(ld256(x[i].bsums))), ld512f(k->cv));
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            const __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ld512(k->w + 64 * v), ld512(x[i].qs + 64 * v));
            tf = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), ld512f(k->sv[v]), tf);
        }
        acc = _mm512_fmadd_ps(tf, _mm512_set1_ps(x[i].d), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* Rows of KROWS unpacked per block (about 18 KiB of L1 at K = 1024), every token against them. */
#define KROWS 8
static int gemm_kquant(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1, const void *X,
                       size_t x_stride, int64_t T, float *Y, int64_t ldy) {
    if (K % 256 || T < 4) return 0; /* a token or three: the row kernels, without the unpacking */
    const int64_t nsb = K / 256;
    ksb *buf = mn_quant_scratch(sizeof(ksb) * (size_t)(KROWS * nsb));
    if (!buf) return 0;
    const uint8_t *w = W, *x = X;
    for (int64_t rb = r0; rb < r1; rb += KROWS) {
        const int64_t re = rb + KROWS < r1 ? rb + KROWS : r1;
        for (int64_t r = rb; r < re; r++)
            for (int64_t i = 0; i < nsb; i++) {
                ksb *o = buf + (r - rb) * nsb + i;
                if (wtype == MN_TYPE_Q4_K) ksb_q4_K((const mn_block_q4_K *)(w + (size_t)r * w_stride) + i, o);
                else ksb_q6_K((const mn_block_q6_K *)(w + (size_t)r * w_stride) + i, o);
            }
        for (int64_t t = 0; t < T; t++) {
            const mn_block_q8_K *xt = (const mn_block_q8_K *)(x + (size_t)t * x_stride);
            for (int64_t r = rb; r < re; r++) Y[t * ldy + r] = ksb_dot(buf + (r - rb) * nsb, xt, nsb);
        }
    }
    return 1;
}

int mn_gemm_avx512(int wtype, int64_t K, const void *W, size_t w_stride, int64_t r0, int64_t r1,
                   const void *X, size_t x_stride, int64_t T, float *Y, int64_t ldy) {
    if (wtype == MN_TYPE_Q4_K || wtype == MN_TYPE_Q6_K)
        return K > 0 && gemm_kquant(wtype, K, W, w_stride, r0, r1, X, x_stride, T, Y, ldy);
    plan P;
    if (K <= 0 || K % MN_QK || !make_plan(wtype, K, &P)) return 0;
    int64_t tc = (int64_t)(ACT_BUDGET / P.a_bytes) & ~(int64_t)3;
    if (tc < 4) tc = 4;
    if (tc > T) tc = T;
    /* rows unpacked per block: as many as fit ~32 KiB of L1, 4..32 */
    int64_t rblk = ((int64_t)(32768 / P.w_bytes)) & ~(int64_t)3;
    if (rblk < 4) rblk = 4;
    if (rblk > 32) rblk = 32;
    uint8_t *scratch = mn_quant_scratch((size_t)tc * P.a_bytes + (size_t)rblk * P.w_bytes);
    if (!scratch) return 0;
    uint8_t *abuf = scratch, *wbuf = scratch + (size_t)tc * P.a_bytes;
    const uint8_t *w = W, *x = X;
    void (*const(*tab)[3])(const plan *, const uint8_t *, const uint8_t *, float *, int64_t, int64_t, int64_t) =
        wtype == MN_TYPE_Q4_1 ? tq41_tab : wtype == MN_TYPE_Q4_0 ? tq40_tab : wtype == MN_TYPE_Q5_0 ? tq50_tab : tq80_tab;

    for (int64_t c0 = 0; c0 < T; c0 += tc) {
        const int64_t nt = T - c0 < tc ? T - c0 : tc;
        for (int64_t t = 0; t < nt; t++) act_repack(&P, x + (size_t)(c0 + t) * x_stride, abuf + (size_t)t * P.a_bytes);
        float *Yc = Y + c0 * ldy;
        if (nt <= DIRECT_MAX_T) {
            if (wtype == MN_TYPE_Q4_1) direct_q41(&P, w, w_stride, r0, r1, abuf, (int)nt, Yc, ldy);
            else if (wtype == MN_TYPE_Q4_0) direct_q40(&P, w, w_stride, r0, r1, abuf, (int)nt, Yc, ldy);
            else if (wtype == MN_TYPE_Q5_0) direct_q50(&P, w, w_stride, r0, r1, abuf, (int)nt, Yc, ldy);
            else direct_q80(&P, w, w_stride, r0, r1, abuf, (int)nt, Yc, ldy);
            continue;
        }
        for (int64_t rb = r0; rb < r1; rb += rblk) {
            const int64_t re = rb + rblk < r1 ? rb + rblk : r1;
            /* unpack the row block once; 4-row tiles, then single rows */
            for (int64_t r = rb; r < re; r += 4) {
                const int R = re - r >= 4 ? 4 : (int)(re - r);
                uint8_t *dst = wbuf + (size_t)(r - rb) * P.w_bytes;
                if (wtype == MN_TYPE_Q4_1) w_repack(MN_TYPE_Q4_1, &P, w, w_stride, r, R, dst);
                else if (wtype == MN_TYPE_Q4_0) w_repack(MN_TYPE_Q4_0, &P, w, w_stride, r, R, dst);
                else if (wtype == MN_TYPE_Q5_0) w_repack(MN_TYPE_Q5_0, &P, w, w_stride, r, R, dst);
                else w_repack(MN_TYPE_Q8_0, &P, w, w_stride, r, R, dst);
            }
            /* each 4-token slice of activations is reused from L1 by every
             * tile of the row block */
            for (int64_t t = 0; t < nt; t += TILE_T) {
                const int TT = nt - t >= TILE_T ? TILE_T : (int)(nt - t);
                for (int64_t r = rb; r < re;) {
                    const int R = re - r >= 4 ? 4 : 1;
                    tab[R == 4][TT - 1](&P, wbuf + (size_t)(r - rb) * P.w_bytes, abuf + (size_t)t * P.a_bytes, Yc, ldy,
                                        r, t);
                    r += R;
                }
            }
        }
    }
    return 1;
}

/* -------------------------------------------------------------- vec_dot */

/* Raw-block dots (one row, one token), pairs of blocks per vector. */
static void q4_1_q8_1_dot_512(int64_t n, float *s, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    const int64_t nb = n / MN_QK;
    __m512 acc = _mm512_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        wgroup g;
        wpair_q4_1(w + 20 * i, two ? 2 : 1, &g);
        const uint8_t *a = x + 36 * i;
        const __m512i A = two ? two256(a + 4, a + 40) : _mm512_castsi256_si512(ld256(a + 4));
        const __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), g.v[0], A);
        const __m128i wh = _mm_setr_epi32((int)mn_rd32(w + 20 * i), two ? (int)mn_rd32(w + 20 * i + 20) : 0, 0, 0);
        const __m128i ah = _mm_setr_epi32((int)mn_rd32(a), two ? (int)mn_rd32(a + 36) : 0, 0, 0);
        const __m128 prod = _mm_mul_ps(_mm_cvtph_ps(wh), _mm_cvtph_ps(ah)); /* dd0 ms0 dd1 ms1 */
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_permutexvar_ps(idx_pair(0, 2), _mm512_castps128_ps512(prod)), acc);
        accm = _mm_add_ps(accm, prod);
    }
    *s = _mm512_reduce_add_ps(acc) + (_mm_cvtss_f32(_mm_shuffle_ps(accm, accm, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(accm, accm, 3)));
}
static void q8_0_q8_0_dot_512(int64_t n, float *s, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    const int64_t nb = n / MN_QK;
    __m512 acc = _mm512_setzero_ps();
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int64_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        wgroup g;
        wpair_q8_0(w + 34 * i, two ? 2 : 1, &g);
        const uint8_t *a = x + 34 * i;
        const __m512i A = two ? two256(a + 2, a + 36) : _mm512_maskz_mov_epi32(0x00FF, _mm512_castsi256_si512(ld256(a + 2)));
        const __m512i is = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), g.v[0], A),
                                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), x80, A));
        const __m128i ah = _mm_setr_epi16((short)mn_rd16(a), two ? (short)mn_rd16(a + 34) : 0, 0, 0, 0, 0, 0, 0);
        const __m512 da = _mm512_permutexvar_ps(idx_pair(0, 1), _mm512_castps128_ps512(_mm_cvtph_ps(ah)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(g.dw, da), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}
static void q4_0_q8_0_dot_512(int64_t n, float *s, const void *vw, const void *vx) {
    const uint8_t *w = vw, *x = vx;
    const int64_t nb = n / MN_QK;
    __m512 acc = _mm512_setzero_ps();
    const __m512i k8 = _mm512_set1_epi8(8);
    for (int64_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        wgroup g;
        wpair_q4_0(w + 18 * i, two ? 2 : 1, &g);
        const uint8_t *a = x + 34 * i;
        const __m512i A = two ? two256(a + 2, a + 36) : _mm512_maskz_mov_epi32(0x00FF, _mm512_castsi256_si512(ld256(a + 2)));
        const __m512i is = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), g.v[0], A),
                                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), k8, A));
        const __m128i ah = _mm_setr_epi16((short)mn_rd16(a), two ? (short)mn_rd16(a + 34) : 0, 0, 0, 0, 0, 0, 0);
        const __m512 da = _mm512_permutexvar_ps(idx_pair(0, 1), _mm512_castps128_ps512(_mm_cvtph_ps(ah)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(g.dw, da), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}

static void f16_to_float_512(const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(ld256(x + 2 * i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + 2 * i)));
    }
}

/* K-quant rows against one token (decode): the scalar reference's integer sums, by VNNI over
 * 64 values at a time, and its float expression per super-block, so the result is the
 * reference's bit for bit. */
static void q4_K_q8_K_dot_512(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q4_K *w = vw;
    const mn_block_q8_K *x = vx;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sum = 0;
    for (int64_t i = 0; i < n / 256; i++) {
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) mn_q4k_scale_min(w[i].scales, j, &sc[j], &m[j]);
        __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i q = ld256(w[i].qs + 32 * c);
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                   _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                                                   ld512(x[i].qs + 64 * c));
            const __m512i scv = _mm512_mask_set1_epi32(_mm512_set1_epi32(sc[2 * c]), 0xFF00, sc[2 * c + 1]);
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(dp, scv));
        }
        const int sumi = _mm512_reduce_add_epi32(isum);
        int summ = 0;
        for (int j = 0; j < 8; j++) summ += m[j] * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        sum += x[i].d * h2f(w[i].d) * (float)sumi - x[i].d * h2f(w[i].dmin) * (float)summ;
    }
    *s = sum;
}

static void q6_K_q8_K_dot_512(int64_t n, float *s, const void *vw, const void *vx) {
    const mn_block_q6_K *w = vw;
    const mn_block_q8_K *x = vx;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    float sum = 0;
    for (int64_t i = 0; i < n / 256; i++) {
        const __m512i sc16 = _mm512_cvtepi8_epi32(ld128(w[i].scales));
        __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i a = ld256(w[i].ql + 64 * h), b = ld256(w[i].ql + 64 * h + 32), hb = ld256(w[i].qh + 32 * h);
            /* q + 32 in 0..63 for elements 128h + 0..31, 32..63, 64..95, 96..127 (quant.c's layout) */
            const __m256i u0 = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
            const __m256i u1 = _mm256_or_si256(_mm256_and_si256(b, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
            const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
            const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
            const __m512i v0 = _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
            const __m512i v1 = _mm512_inserti64x4(_mm512_castsi256_si512(u2), u3, 1);
            /* lane L of vector 2h + k sums elements 4L..4L+3 of its 64: sub-block 8h + 4k + L/4 */
            const __m512i i0 = _mm512_add_epi32(_mm512_set1_epi32(8 * h), _mm512_srli_epi32(
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2));
            const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(4));
            const __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v0, ld512(x[i].qs + 128 * h));
            const __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v1, ld512(x[i].qs + 128 * h + 64));
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(d0, _mm512_permutexvar_epi32(i0, sc16)));
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(d1, _mm512_permutexvar_epi32(i1, sc16)));
        }
        int corr = 0; /* the values were fed as q + 32 */
        for (int g = 0; g < 16; g++) corr += w[i].scales[g] * x[i].bsums[g];
        const int sumi = _mm512_reduce_add_epi32(isum) - 32 * corr;
        sum += h2f(w[i].d) * x[i].d * (float)sumi;
    }
    *s = sum;
}

/* Q8_K activations (the K-quants' vec_dot_type), exactly as the scalar reference: the value of
 * largest magnitude (the first of equals) sets iscale = -127 / max; q = round-to-nearest-even of
 * iscale * x, at most 127; bsums per 16. */
static void q8_K_from_float_512(const float *x, void *vy, int64_t n) {
    mn_block_q8_K *y = vy;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        __m512 am = _mm512_setzero_ps();
        for (int v = 0; v < 16; v++) am = _mm512_max_ps(am, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * v)));
        const float amax = _mm512_reduce_max_ps(am);
        if (amax == 0) {
            y[i].d = 0;
            memset(y[i].qs, 0, 256);
            memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        float mx = 0;
        for (int v = 0; v < 16; v++) {
            const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * v)),
                                                     _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (hit) {
                mx = x[16 * v + __builtin_ctz(hit)];
                break;
            }
        }
        const float iscale = -127.f / mx;
        const __m512 is = _mm512_set1_ps(iscale);
        int16_t bs[16];
        for (int v = 0; v < 16; v++) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(is, _mm512_loadu_ps(x + 16 * v)));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(y[i].qs + 16 * v), _mm512_cvtepi32_epi8(q));
            bs[v] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        memcpy(y[i].bsums, bs, sizeof bs);
        y[i].d = 1 / iscale;
    }
}

const mn_qfns mn_qfns_avx512[MN_TYPE_COUNT] = {
    [MN_TYPE_Q8_K] = {NULL, q8_K_from_float_512, NULL},
    [MN_TYPE_Q4_K] = {NULL, NULL, q4_K_q8_K_dot_512},
    [MN_TYPE_Q6_K] = {NULL, NULL, q6_K_q8_K_dot_512},
    [MN_TYPE_F16] = {f16_to_float_512, NULL, NULL},
    [MN_TYPE_Q4_0] = {NULL, NULL, q4_0_q8_0_dot_512},
    [MN_TYPE_Q4_1] = {NULL, NULL, q4_1_q8_1_dot_512},
    [MN_TYPE_Q8_0] = {NULL, NULL, q8_0_q8_0_dot_512},
};

/* ---------------------------------------------------------- float kernels */

static ALWAYS_INLINE __mmask16 tail_mask(int64_t r) { return (__mmask16)((1u << r) - 1); }

static float v5_dot_f16_f32(int64_t n, const uint16_t *a, const float *b) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(ld256(a + i)), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(ld256(a + i + 16)), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(ld256(a + i)), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a + i)), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
static void v5_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_cvtph_ps(ld256(x + i)), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}
static void v5_cvt_f32_f16(int64_t n, const float *x, uint16_t *y) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT));
    }
}
static float v5_dot_f32(int64_t n, const float *a, const float *b) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
static void v5_axpy_f32(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

/* exp over arrays: the tail through a masked load, so every element takes
 * the same path (results do not depend on where the array ends) */
/* exp(x - shift) over 16 lanes at a time, summed in double; stored back when st */
static inline double v5_exp_sum_impl(int64_t n, const float *x, float *st, float shift) {
    const __m512 sh = _mm512_set1_ps(shift);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(k, mn_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh)));
        if (st) _mm512_mask_storeu_ps(st + i, k, e);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}
static double v5_exp_sum(int64_t n, float *x, float shift) { return v5_exp_sum_impl(n, x, x, shift); }
static double v5_sum_exp(int64_t n, const float *x, float shift) { return v5_exp_sum_impl(n, x, NULL, shift); }
static void v5_exp_lincomb(int64_t n, float *y, const float *a, float alpha, const float *b, float beta) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 r = _mm512_mul_ps(va, mn_exp512(_mm512_maskz_loadu_ps(k, a + i)));
        if (b) r = _mm512_fmadd_ps(vb, mn_exp512(_mm512_maskz_loadu_ps(k, b + i)), r);
        _mm512_mask_storeu_ps(y + i, k, r);
    }
}

const mn_vec_ops mn_vec_ops_avx512 = {v5_dot_f16_f32, v5_axpy_f16, v5_cvt_f32_f16, v5_dot_f32,    v5_axpy_f32,
                                      v5_exp_sum,     v5_sum_exp,  v5_exp_lincomb};
