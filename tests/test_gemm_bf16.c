/* test_gemm_bf16.c - the bf16 GEMM (kernels/gemm_bf16.h): rounding to bf16
 * against its definition, packing in both orientations, and the product on
 * ragged shapes (every micro-kernel height, column tails, odd K, several
 * k-blocks, overwrite and accumulate, a panel-block range) against a double
 * sum of the same bf16-rounded inputs. Skipped (loudly) without AVX512_BF16. */
#include <stdint.h>

#include "kernels/gemm_bf16.h"
#include "test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float bf(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_rounding(void) {
    CHECK(mn_f32_to_bf16(1.0f) == 0x3F80, "1.0");
    CHECK(mn_f32_to_bf16(-2.0f) == 0xC000, "-2.0");
    /* 1 + 2^-8 lies half-way between 1 and 1 + 2^-7: ties go to the even 1 */
    CHECK(mn_f32_to_bf16(1.00390625f) == 0x3F80, "tie to even down");
    CHECK(mn_f32_to_bf16(1.01171875f) == 0x3F82, "tie to even up"); /* 1 + 3 * 2^-8 */
    CHECK(mn_f32_to_bf16(1.0048828125f) == 0x3F81, "above half rounds up");
    CHECK(isnan(bf(mn_f32_to_bf16(NAN))), "NaN stays NaN");
    CHECK(isinf(bf(mn_f32_to_bf16(INFINITY))), "inf stays inf");
    int worst = 0;
    for (int i = 0; i < 10000; i++) {
        const float f = (float)((urand() - 0.5) * pow(2, (int)(urand() * 40) - 20));
        const double rel = fabs((double)bf(mn_f32_to_bf16(f)) - f) / fabs((double)f);
        if (!(rel <= 1.0 / 256)) worst++;
    }
    CHECK(worst == 0, "%d values off by more than half a bf16 ulp", worst);
}

static void test_products(void) {
    const int shapes[][3] = {{1, 1, 1},    {12, 32, 64},  {13, 33, 2},  {7, 5, 3},      {25, 70, 577},
                             {120, 64, 96}, {121, 40, 511}, {30, 31, 1536}, {3, 600, 1030}, {200, 96, 64},
                             /* whole 32-row blocks and K a multiple of 32: AMX tiles where usable */
                             {64, 50, 576}, {97, 64, 1536}, {32, 33, 32}, {70, 17, 192},
                             /* K past the AMX kernel's 512-pair chunk: chunks adding to C, the last with acc */
                             {64, 40, 2112}, {32, 64, 1088}, {96, 35, 2048}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        const int lda = K + 3, ldc = N + 5, tr = (int)(s % 2); /* tr: B given as (N, K), as a weight for x W^T */
        float *A = malloc(sizeof(float) * (size_t)M * lda), *W = malloc(sizeof(float) * (size_t)K * N);
        float *C = malloc(sizeof(float) * (size_t)M * ldc), *C0 = malloc(sizeof(float) * (size_t)M * ldc);
        uint16_t *Ab = malloc(sizeof(uint16_t) * (size_t)M * (K + 1));
        for (int i = 0; i < M * lda; i++) A[i] = (float)(urand() * 4 - 2);
        for (int i = 0; i < K * N; i++) W[i] = (float)(urand() * 2 - 1);
        for (int i = 0; i < M * ldc; i++) C0[i] = C[i] = (float)(urand() - 0.5);
        /* B(k, n) = W[k * N + n], or W[n * K + k] */
        mn_bf16_panel *P = tr ? mn_bf16_pack(W, K, N, 1, K) : mn_bf16_pack(W, K, N, N, 1);
        CHECK(P && P->K2 == (K + 1) / 2 && P->NB == (N + 31) / 32, "panel shape");
        mn_bf16_round_rows(Ab, A, M, K, lda);
        int bad_round = 0;
        for (int i = 0; i < M; i++) {
            for (int k = 0; k < K; k++) bad_round += Ab[(int64_t)i * 2 * P->K2 + k] != mn_f32_to_bf16(A[i * lda + k]);
            if (K % 2) bad_round += Ab[(int64_t)i * 2 * P->K2 + K] != 0;
        }
        CHECK(bad_round == 0, "%dx%d rows rounded like the scalar rounding (%d wrong)", M, K, bad_round);
        const int acc = (int)(s % 3 == 1);
        /* two calls over halves of the panel range: what a thread split does */
        const int half = P->NB / 2;
        mn_bf16_gemm(M, 0, half, Ab, P, C, ldc, acc);
        mn_bf16_gemm(M, half, P->NB, Ab, P, C, ldc, acc);
        double worst = 0;
        int outside = 0;
        for (int i = 0; i < M; i++) {
            for (int n = 0; n < N; n++) {
                double ref = acc ? C0[i * ldc + n] : 0, mag = fabs(ref);
                for (int k = 0; k < K; k++) {
                    const double p = (double)bf(mn_f32_to_bf16(A[i * lda + k])) *
                                     bf(mn_f32_to_bf16(tr ? W[n * K + k] : W[k * N + n]));
                    ref += p, mag += fabs(p);
                }
                const double e = fabs(C[i * ldc + n] - ref) / (mag + 1e-30);
                worst = e > worst ? e : worst;
            }
            for (int n = N; n < ldc; n++) outside += C[i * ldc + n] != C0[i * ldc + n];
        }
        /* f32 sums of exact bf16 products: error within K f32 ulps of the magnitude */
        CHECK(worst < 1e-6 * (1 + K / 64.0), "M %d N %d K %d%s: relative error %.3g", M, N, K, acc ? " acc" : "",
              worst);
        CHECK(outside == 0, "M %d N %d K %d: %d values written past column N", M, N, K, outside);
        mn_bf16_panel_free(P);
        free(A), free(W), free(C), free(C0), free(Ab);
    }
}

int main(void) {
    test_rounding();
    if (!mn_bf16_supported()) {
        TEST_SKIP("the bf16 products: this CPU has no AVX512_BF16");
        TEST_MAIN_END();
    }
    if (mn_bf16_amx_ready()) printf("  AMX tiles: in use for whole 32-row blocks\n");
    else TEST_SKIP("the AMX tile path: not usable on this CPU or kernel (the AVX512_BF16 path is checked)");
    test_products();
    TEST_MAIN_END();
}
