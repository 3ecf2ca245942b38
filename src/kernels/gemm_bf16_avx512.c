/* gemm_bf16_avx512.c - the AVX512_BF16 half of gemm_bf16.h (built with
 * -mavx512bf16 on top of the AVX-512 flags; called only when
 * mn_bf16_supported()).
 *
 * Micro-kernel: MR (<= 12) rows x 32 columns of C in 24 zmm accumulators; per
 * k-pair, two panel loads and one 32-bit broadcast per row (the row's two
 * bf16 at 2q, 2q+1) feed 2 MR vdpbf16ps. Blocking: KC k-pairs (the panel
 * block, 16 KiB per 32 columns, stays in L1/L2) x MC rows of A (MC * KC * 4 =
 * 120 KiB in L2) x the caller's panel range.
 */
#include <immintrin.h>

#include "gemm_bf16.h"

#define MR 12
#define MC 120

void mn_bf16_round_rows(uint16_t *dst, const float *a, int32_t M, int32_t K, int64_t lda) {
    const int32_t W = 2 * ((K + 1) / 2);
    for (int32_t i = 0; i < M; i++) {
        const float *x = a + (int64_t)i * lda;
        uint16_t *y = dst + (int64_t)i * W;
        int32_t k = 0;
        for (; k + 32 <= K; k += 32) {
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
            _mm512_storeu_si512(y + k, (__m512i)h);
        }
        if (k < W) { /* the last < 32 values and the pad */
            const int32_t rem = K - k;
            const __mmask16 m0 = rem >= 16 ? 0xFFFF : (__mmask16)((1u << rem) - 1);
            const __mmask16 m1 = rem > 16 ? (__mmask16)((1u << (rem - 16)) - 1) : 0;
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + k + 16),
                                                   _mm512_maskz_loadu_ps(m0, x + k));
            _mm512_mask_storeu_epi16(y + k, (__mmask32)((1ull << (W - k)) - 1), (__m512i)h);
        }
    }
}

static inline __attribute__((always_inline)) void ukern(const int mr, const uint32_t *a, int64_t lda, const uint16_t *b,
                                                        int32_t np, float *c, int64_t ldc, __mmask16 m0,
                                                        __mmask16 m1, int load) {
    __m512 c0[MR], c1[MR];
    _Pragma("GCC unroll 12") for (int r = 0; r < mr; r++) {
        if (load) {
            c0[r] = _mm512_maskz_loadu_ps(m0, c + r * ldc);
            c1[r] = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
        } else {
            c0[r] = _mm512_setzero_ps();
            c1[r] = _mm512_setzero_ps();
        }
    }
    for (int32_t q = 0; q < np; q++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (int64_t)q * 64);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + (int64_t)q * 64 + 32);
        _Pragma("GCC unroll 12") for (int r = 0; r < mr; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * lda + q]);
            c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
        }
    }
    _Pragma("GCC unroll 12") for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
    }
}

typedef void (*ukern_fn)(const uint32_t *, int64_t, const uint16_t *, int32_t, float *, int64_t, __mmask16,
                         __mmask16, int);
#define UK(n)                                                                                                      \
    static void ukern_##n(const uint32_t *a, int64_t lda, const uint16_t *b, int32_t np, float *c, int64_t ldc,   \
                          __mmask16 m0, __mmask16 m1, int load) {                                                 \
        ukern(n, a, lda, b, np, c, ldc, m0, m1, load);                                                             \
    }
UK(1) UK(2) UK(3) UK(4) UK(5) UK(6) UK(7) UK(8) UK(9) UK(10) UK(11) UK(12)
static const ukern_fn k_ukern[MR + 1] = {NULL,     ukern_1, ukern_2, ukern_3,  ukern_4,  ukern_5, ukern_6,
                                         ukern_7, ukern_8, ukern_9, ukern_10, ukern_11, ukern_12};

static void gemm_avx512(int32_t M, int32_t nb0, int32_t nb1, const uint16_t *a, const mn_bf16_panel *b, float *c,
                        int64_t ldc, int accumulate) {
    const int32_t K2 = b->K2;
    const uint32_t *a32 = (const uint32_t *)(const void *)a; /* a row: K2 pairs */
    for (int32_t q0 = 0; q0 < K2; q0 += MN_BF16_KC) {
        const int32_t np = K2 - q0 < MN_BF16_KC ? K2 - q0 : MN_BF16_KC;
        const int load = accumulate || q0 > 0;
        for (int32_t i0 = 0; i0 < M; i0 += MC) {
            const int32_t i1 = M - i0 < MC ? M : i0 + MC;
            for (int32_t nb = nb0; nb < nb1; nb++) {
                const uint16_t *bp = b->data + ((int64_t)nb * K2 + q0) * 2 * MN_BF16_NR;
                const int32_t col = nb * MN_BF16_NR, nc = b->N - col < MN_BF16_NR ? b->N - col : MN_BF16_NR;
                const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
                const __mmask16 m1 = nc >= 32 ? 0xFFFF : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
                for (int32_t r = i0; r < i1; r += MR) {
                    const int32_t mr = i1 - r < MR ? i1 - r : MR;
                    k_ukern[mr](a32 + (int64_t)r * K2 + q0, K2, bp, np, c + (int64_t)r * ldc + col, ldc, m0, m1, load);
                }
            }
        }
    }
}

/* AMX tiles where the machine grants them, for the rows in whole blocks of 32
 * and K2 in whole tiles of 16 k-pairs; vdpbf16ps for the rest. */
void mn_bf16_gemm(int32_t M, int32_t nb0, int32_t nb1, const uint16_t *a, const mn_bf16_panel *b, float *c,
                  int64_t ldc, int accumulate) {
    int32_t M32 = 0;
    if (b->K2 % 16 == 0 && M >= 32 && mn_bf16_amx_ready()) {
        M32 = M / 32 * 32;
        mn_bf16_gemm_amx(M32, nb0, nb1, a, b, c, ldc, accumulate);
    }
    if (M32 < M)
        gemm_avx512(M - M32, nb0, nb1, a + (int64_t)M32 * 2 * b->K2, b, c + (int64_t)M32 * ldc, ldc, accumulate);
}
