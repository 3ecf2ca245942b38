/* vexp_simd.h - exp on SIMD registers, for the files built with AVX2 or AVX-512.
 *
 * exp(x) = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 in
 * [-ln2/2, ln2/2], ln 2 split in two parts (Cody and Waite) so r keeps its
 * low bits; e^r by its Taylor polynomial to degree 6, whose truncation error
 * |r|^7/7! < 1.3e-7 is about one ulp of a float. Inputs below the smallest
 * normal result (about -87.3) give exactly 0, so -inf (a masked score) is 0;
 * inputs are clamped above at 88.3 (exp would overflow a float near 88.72).
 * Softmax and log-sum-exp never get there: they subtract the maximum first.
 */
#ifndef MN_VEXP_SIMD_H
#define MN_VEXP_SIMD_H

#include <immintrin.h>

#define MN_EXP_LO (-87.3f)
#define MN_EXP_HI 88.3f
#define MN_LOG2E 1.44269504088896341f
#define MN_LN2_HI 0.693359375f       /* ln 2 to 10 bits: n * MN_LN2_HI is exact */
#define MN_LN2_LO (-2.12194440e-4f)  /* ln 2 - MN_LN2_HI */

#if defined(__AVX512F__)
static inline __m512 mn_exp512(__m512 x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(MN_EXP_LO), _CMP_GE_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(MN_EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(MN_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(MN_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(MN_LN2_LO), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 mn_exp256(__m256 x) {
    const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(MN_EXP_LO), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(MN_EXP_LO)), _mm256_set1_ps(MN_EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(MN_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(MN_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(MN_LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n built in the exponent field: n is in [-126, 127] after the clamps */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), live);
}
#endif

#endif
