/* test_quant.c - kernels: fp16/bf16 conversion, quantize/dequantize accuracy
 * per type, every SIMD vec_dot / from_float / to_float / vector op against
 * the scalar reference, and mn_gemm_q against loops of scalar vec_dot, for
 * every ISA this machine has. Every quantized type is also checked against
 * the reference implementation's own numbers (ggml's reference code as the
 * `gguf` package ports it; tests/fixtures/quant_ref.bin): dequantization and
 * quantization bit for bit, dot products within float summation.
 *
 * Tolerance for SIMD-vs-scalar dot products: every kernel computes the same
 * exact integer block sums and the same float scale products; only the order
 * of the float additions (and fma vs mul+add) differs. The error of a sum of
 * m terms in fp32 is bounded by about m * 2^-24 * sum|term|; with at most a
 * few hundred terms that is < 1e-5 * sum|term|, so we check
 *   |simd - ref| <= 1e-5 * mag + 1e-30,
 * mag = sum_i |w_i x_i| + max|w| * sum_i |x_i| over dequantized values (the
 * second part covers the separately added min terms of Q4_1/Q5_1/Q4_K).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>

#include "test.h"
#include "kernels/quant.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float frand(void) { return (float)((rnd32() & 0xFFFFFF) / 16777216.0 * 2.0 - 1.0); }
static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static const int k_types[] = {MN_TYPE_F32,  MN_TYPE_F16,  MN_TYPE_BF16, MN_TYPE_Q4_0, MN_TYPE_Q4_1,
                              MN_TYPE_Q5_0, MN_TYPE_Q5_1, MN_TYPE_Q8_0, MN_TYPE_Q8_1, MN_TYPE_Q4_K,
                              MN_TYPE_Q6_K, MN_TYPE_Q8_K};
#define NTYPES (int)(sizeof k_types / sizeof k_types[0])

static int blck(int type) { return mn_type_layout_get(type)->blck; }
static size_t rowb(int type, int64_t n) { return mn_type_row_bytes(type, n); }

/* ------------------------------------------------------------------ fp16 */

__attribute__((target("f16c"))) static uint16_t hw_f2h(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
__attribute__((target("f16c"))) static float hw_h2f(uint16_t h) { return _cvtsh_ss(h); }

static void test_fp16(void) {
    const int hw = mn_cpu_isa_hw() >= MN_ISA_AVX2;
    int bad_rt = 0, bad_hw = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = mn_fp16_to_fp32((uint16_t)h);
        const uint16_t back = mn_fp32_to_fp16(f);
        const int is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
        if (is_nan ? back != (h | 0x200) : back != h) bad_rt++;
        if (hw && u_of(hw_h2f((uint16_t)h)) != u_of(f)) bad_hw++;
    }
    CHECK(bad_rt == 0, "%d halves do not round-trip", bad_rt);
    CHECK(bad_hw == 0, "%d halves convert differently from F16C", bad_hw);

    /* known RNE cases */
    struct { float f; uint16_t h; } ec[] = {
        {0.0f, 0x0000},        {-0.0f, 0x8000},       {1.0f, 0x3C00},          {65504.0f, 0x7BFF},
        {65519.99f, 0x7BFF},   {65520.0f, 0x7C00},    {1e6f, 0x7C00},          {-1e6f, 0xFC00},
        {1.0f + 0x1p-11f, 0x3C00} /* tie -> even */,  {1.0f + 3 * 0x1p-11f, 0x3C02} /* tie -> even (up) */,
        {1.0f + 0x1p-11f + 0x1p-23f, 0x3C01},         {0x1p-24f, 0x0001},      {0x1p-25f, 0x0000} /* tie -> 0 */,
        {0x1p-25f + 0x1p-40f, 0x0001},                {3 * 0x1p-25f, 0x0002} /* 1.5 ulp tie -> 2 */,
        {0x1p-14f, 0x0400},    {0x1p-14f - 0x1p-25f, 0x0400} /* tie, rounds up to min normal */,
        {1e-30f, 0x0000},      {f_of(0x7F800000u), 0x7C00}, {f_of(0xFF800000u), 0xFC00},
    };
    for (size_t i = 0; i < sizeof ec / sizeof ec[0]; i++) {
        const uint16_t h = mn_fp32_to_fp16(ec[i].f);
        CHECK(h == ec[i].h, "fp32_to_fp16(%a) = 0x%04x, want 0x%04x", (double)ec[i].f, h, ec[i].h);
    }
    const uint16_t hn = mn_fp32_to_fp16(f_of(0x7FC00000u));
    CHECK((hn & 0x7C00) == 0x7C00 && (hn & 0x3FF), "NaN -> 0x%04x", hn);
    if (!hw) {
        printf("  (no F16C: fp32->fp16 checked on fixed cases only)\n");
        return;
    }
    /* against F16C: every half's neighbourhood (ties and +-1 ulp), NaNs, and
     * a stride through all 2^32 bit patterns */
    int bad = 0;
    for (uint32_t h = 0; h < 0x7C00; h++) {
        const uint32_t a = u_of(mn_fp16_to_fp32((uint16_t)h)), b = u_of(mn_fp16_to_fp32((uint16_t)(h + 1)));
        const uint32_t mid = a + (b - a) / 2;
        const uint32_t c[] = {a, a + 1, mid - 1, mid, mid + 1, b - 1};
        for (int k = 0; k < 6; k++)
            for (int s = 0; s < 2; s++) {
                const float f = f_of(c[k] | (s ? 0x80000000u : 0));
                if (mn_fp32_to_fp16(f) != hw_f2h(f)) bad++;
            }
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
        const float f = f_of((uint32_t)u);
        if (mn_fp32_to_fp16(f) != hw_f2h(f)) bad++;
    }
    const uint32_t nans[] = {0x7F800001u, 0x7FBFFFFFu, 0x7FC00000u, 0x7FFFFFFFu, 0xFF800001u, 0xFFC12345u, 0x7F802000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        if (mn_fp32_to_fp16(f_of(nans[i])) != hw_f2h(f_of(nans[i]))) bad++;
    CHECK(bad == 0, "%d floats convert differently from F16C", bad);

    /* bf16 */
    CHECK(mn_fp32_to_bf16(1.0f) == 0x3F80, "bf16(1)");
    CHECK(mn_fp32_to_bf16(f_of(0x3F808000u)) == 0x3F80, "bf16 tie to even (down)");
    CHECK(mn_fp32_to_bf16(f_of(0x3F818000u)) == 0x3F82, "bf16 tie to even (up)");
    CHECK(mn_fp32_to_bf16(f_of(0x3F808001u)) == 0x3F81, "bf16 above tie");
    const uint16_t bn = mn_fp32_to_bf16(f_of(0x7F800001u));
    CHECK((bn & 0x7F80) == 0x7F80 && (bn & 0x7F), "bf16 NaN stays NaN: 0x%04x", bn);
    int bad_bf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) continue;
        if (mn_fp32_to_bf16(mn_bf16_to_fp32((uint16_t)h)) != h) bad_bf++;
    }
    CHECK(bad_bf == 0, "%d bf16 values do not round-trip", bad_bf);
}

/* ------------------------------------------------------- quantize accuracy */

/* max |err| allowed, as a fraction of the block's max |x| (uniform data in [-1,1]) */
static double quant_tol(int type) {
    switch (type) {
    case MN_TYPE_F32: return 0;
    case MN_TYPE_F16: return 1.0 / 2048;
    case MN_TYPE_BF16: return 1.0 / 256;
    case MN_TYPE_Q8_0: case MN_TYPE_Q8_1: case MN_TYPE_Q8_K: return 1.0 / 254 * 1.01 + 1e-3;
    case MN_TYPE_Q5_0: return 1.0 / 16 + 2e-3;  /* d = amax/16; clamp at 31 loses one step */
    case MN_TYPE_Q5_1: return 2.0 / 62 + 2e-3;  /* range/31/2, range <= 2 amax */
    case MN_TYPE_Q4_0: return 1.0 / 8 + 2e-3;   /* clamp at 15: the -max end loses one step */
    case MN_TYPE_Q4_1: return 2.0 / 30 + 2e-3;
    case MN_TYPE_Q4_K: return 0.15;             /* 6-bit scales and mins on top of 4 bits */
    case MN_TYPE_Q6_K: return 0.06;
    }
    return 1;
}

static void test_quantize(void) {
    const int64_t n = 1024;
    float *x = malloc(n * 4), *y = malloc(n * 4), *y2 = malloc(n * 4);
    uint8_t *q = malloc(rowb(MN_TYPE_F32, n)), *q2 = malloc(rowb(MN_TYPE_F32, n));
    for (int ti = 0; ti < NTYPES; ti++) {
        const int type = k_types[ti];
        const mn_quant_traits *s = mn_quant_get_isa(type, MN_ISA_SCALAR);
        CHECK(s && s->to_float && s->from_float, "type %d has kernels", type);
        if (!s) continue;
        double worst = 0, se = 0, sx = 0;
        for (int rep = 0; rep < 20; rep++) {
            for (int64_t i = 0; i < n; i++) x[i] = frand() * (rep % 3 == 0 ? 100.0f : 1.0f);
            if (rep == 1) memset(x, 0, 64 * 4); /* an all-zero block */
            if (rep == 2) for (int i = 0; i < 256; i++) x[i] = 0.25f; /* constant */
            if (rep == 4) x[300] = -7.5f, x[301] = 7.5f, x[700] = 9.0f, x[650] = -9.0f; /* equal magnitudes */
            s->from_float(x, q, n);
            s->to_float(q, y, n);
            const int B = blck(type) > 32 ? blck(type) : 32;
            for (int64_t b = 0; b < n; b += B) {
                float amax = 0;
                for (int i = 0; i < B; i++) amax = fmaxf(amax, fabsf(x[b + i]));
                for (int i = 0; i < B; i++) {
                    const double e = fabs((double)y[b + i] - x[b + i]);
                    if (amax > 0 && e / amax > worst) worst = e / amax;
                    if (amax == 0 && e > 0) worst = 1e9;
                    se += e * e;
                    sx += (double)x[b + i] * x[b + i];
                }
            }
            /* every ISA: from_float and to_float are bit-identical to scalar */
            for (int isa = MN_ISA_AVX2; isa <= MN_ISA_AVX512; isa++) {
                const mn_quant_traits *v = mn_quant_get_isa(type, (mn_isa)isa);
                if (!v) continue;
                v->from_float(x, q2, n);
                CHECK(!memcmp(q, q2, rowb(type, n)), "%s from_float %s differs from scalar (rep %d)",
                      mn_type_layout_get(type)->name, mn_isa_name((mn_isa)isa), rep);
                v->to_float(q, y2, n);
                CHECK(!memcmp(y, y2, n * 4), "%s to_float %s differs from scalar", mn_type_layout_get(type)->name,
                      mn_isa_name((mn_isa)isa));
            }
        }
        CHECK(worst <= quant_tol(type), "%s: max error %.4g of block amax (tol %.4g)", mn_type_layout_get(type)->name,
              worst, quant_tol(type));
        printf("  %-5s max err/amax %.4f  rms err/rms %.5f\n", mn_type_layout_get(type)->name, worst, sqrt(se / sx));
    }
    /* RNE ties in the activation quantizer: amax 127 -> id 1, x = k + 0.5 */
    for (int isa = 0; isa <= MN_ISA_AVX512; isa++) {
        const mn_quant_traits *v = mn_quant_get_isa(MN_TYPE_Q8_0, (mn_isa)isa);
        if (!v) continue;
        float t[32];
        for (int i = 0; i < 32; i++) t[i] = (float)(i - 16) + 0.5f;
        t[0] = 127.0f;
        uint8_t blk[34];
        v->from_float(t, blk, 32);
        int ok = 1;
        for (int i = 1; i < 32; i++) {
            const int want = (int)nearbyint((double)t[i]);
            if ((int8_t)blk[2 + i] != want) ok = 0;
        }
        CHECK(ok, "Q8_0 %s: ties round to even", mn_isa_name((mn_isa)isa));
    }
    free(x), free(y), free(y2), free(q), free(q2);
}

/* ------------------------------------------------------------ dot products */

typedef struct {
    int wtype;
    int64_t n;
    uint8_t *w, *x;
    float *wf, *xf;
} dotcase;

static double magnitude(const float *w, const float *x, int64_t n) {
    double s = 0, sx = 0, mw = 0;
    for (int64_t i = 0; i < n; i++) {
        s += fabs((double)w[i] * x[i]);
        sx += fabs((double)x[i]);
        if (fabs(w[i]) > mw) mw = fabs(w[i]);
    }
    return s + mw * sx;
}

/* quantize random rows: weights with the scalar quantizer of wtype, activations
 * with that of its vec_dot_type; also keep the dequantized values */
static void make_rows(int wtype, int64_t n, int rows, uint8_t *w, float *wf, int tokens, uint8_t *x, float *xf) {
    const mn_quant_traits *s = mn_quant_get_isa(wtype, MN_ISA_SCALAR);
    const mn_quant_traits *a = mn_quant_get_isa(s->vec_dot_type, MN_ISA_SCALAR);
    float *tmp = malloc(n * 4);
    for (int r = 0; r < rows; r++) {
        const float scale = (r % 5 == 0) ? 8.0f : 1.0f;
        for (int64_t i = 0; i < n; i++) tmp[i] = frand() * scale + (r % 7 == 3 ? 0.5f : 0.0f);
        s->from_float(tmp, w + r * rowb(wtype, n), n);
        if (wf) s->to_float(w + r * rowb(wtype, n), wf + r * n, n);
    }
    for (int t = 0; t < tokens; t++) {
        for (int64_t i = 0; i < n; i++) tmp[i] = frand() * (t % 3 == 1 ? 30.0f : 1.0f);
        a->from_float(tmp, x + t * rowb(s->vec_dot_type, n), n);
        if (xf) a->to_float(x + t * rowb(s->vec_dot_type, n), xf + t * n, n);
    }
    free(tmp);
}

static void test_vec_dot(void) {
    const int wtypes[] = {MN_TYPE_F32, MN_TYPE_F16, MN_TYPE_BF16, MN_TYPE_Q4_0, MN_TYPE_Q4_1,
                          MN_TYPE_Q5_0, MN_TYPE_Q5_1, MN_TYPE_Q8_0, MN_TYPE_Q4_K, MN_TYPE_Q6_K};
    const int64_t lens32[] = {32, 64, 96, 160, 512, 544, 576, 1536, 2080};
    const int64_t lensK[] = {256, 512, 768, 2304};
    const int64_t lensF[] = {1, 7, 16, 31, 33, 64, 100, 576, 1000};
    for (size_t wi = 0; wi < sizeof wtypes / sizeof wtypes[0]; wi++) {
        const int wt = wtypes[wi];
        const mn_quant_traits *s = mn_quant_get_isa(wt, MN_ISA_SCALAR);
        const int64_t *lens = blck(wt) == 256 ? lensK : blck(wt) == 32 ? lens32 : lensF;
        const int nl = blck(wt) == 256 ? 4 : 9;
        int fails = 0, checks = 0;
        double worst = 0;
        for (int li = 0; li < nl; li++) {
            const int64_t n = lens[li];
            const int rows = 6;
            uint8_t *w = malloc(rows * rowb(wt, n)), *x = malloc(rows * rowb(s->vec_dot_type, n));
            float *wf = malloc(rows * n * 4), *xf = malloc(rows * n * 4);
            make_rows(wt, n, rows, w, wf, rows, x, xf);
            for (int r = 0; r < rows; r++) {
                float ref;
                s->vec_dot(n, &ref, w + r * rowb(wt, n), x + r * rowb(s->vec_dot_type, n));
                /* the reference itself is the dot of the dequantized rows */
                double exact = 0;
                for (int64_t i = 0; i < n; i++) exact += (double)wf[r * n + i] * xf[r * n + i];
                const double mag = magnitude(wf + r * n, xf + r * n, n);
                /* scalar vs dequantized double: fp16 rounding of Q8_1's s and
                 * float accumulation only */
                const double tol_ref = (wt == MN_TYPE_Q4_1 || wt == MN_TYPE_Q5_1 ? 2e-3 : 1e-5) * mag + 1e-30;
                CHECK(fabs(ref - exact) <= tol_ref, "%s n=%lld ref %.8g vs dequant %.8g", mn_type_layout_get(wt)->name,
                      (long long)n, ref, exact);
                for (int isa = MN_ISA_AVX2; isa <= MN_ISA_AVX512; isa++) {
                    const mn_quant_traits *v = mn_quant_get_isa(wt, (mn_isa)isa);
                    if (!v) continue;
                    float got;
                    v->vec_dot(n, &got, w + r * rowb(wt, n), x + r * rowb(s->vec_dot_type, n));
                    const double err = fabs((double)got - ref);
                    checks++;
                    if (err / mag > worst) worst = err / mag;
                    if (!(err <= 1e-5 * mag + 1e-30)) {
                        fails++;
                        fprintf(stderr, "  %s %s n=%lld row %d: %.9g vs ref %.9g (mag %.3g)\n",
                                mn_type_layout_get(wt)->name, mn_isa_name((mn_isa)isa), (long long)n, r, got, ref, mag);
                    }
                }
            }
            free(w), free(x), free(wf), free(xf);
        }
        CHECK(fails == 0, "%s: %d of %d SIMD dots off", mn_type_layout_get(wt)->name, fails, checks);
        printf("  %-5s vec_dot: %d SIMD checks, worst |diff|/mag %.2g\n", mn_type_layout_get(wt)->name, checks, worst);
    }
}

/* ------------------------------------------------------------------- gemm */

static void test_gemm(void) {
    struct { int wt; int64_t K; int rows, r0, r1, T; } sh[] = {
        {MN_TYPE_Q4_1, 576, 9, 0, 9, 1},     {MN_TYPE_Q4_1, 576, 9, 1, 8, 2},    {MN_TYPE_Q4_1, 576, 10, 0, 10, 3},
        {MN_TYPE_Q4_1, 576, 11, 2, 11, 4},   {MN_TYPE_Q4_1, 1536, 13, 0, 13, 5}, {MN_TYPE_Q4_1, 512, 8, 0, 8, 7},
        {MN_TYPE_Q4_1, 544, 6, 1, 6, 13},    {MN_TYPE_Q4_1, 96, 5, 0, 5, 9},     {MN_TYPE_Q4_1, 32, 4, 0, 4, 6},
        {MN_TYPE_Q4_1, 64, 7, 3, 7, 1},      {MN_TYPE_Q4_1, 576, 17, 0, 17, 64}, {MN_TYPE_Q4_1, 1536, 5, 0, 5, 600},
        {MN_TYPE_Q4_1, 1536, 6, 1, 6, 546} /* chunks of 544 + 2 tokens */, {MN_TYPE_Q4_1, 576, 70, 3, 70, 8},
        {MN_TYPE_Q8_0, 576, 9, 0, 9, 1},     {MN_TYPE_Q8_0, 576, 10, 2, 9, 2},   {MN_TYPE_Q8_0, 288, 12, 0, 12, 3},
        {MN_TYPE_Q8_0, 576, 9, 0, 9, 4},     {MN_TYPE_Q8_0, 544, 7, 0, 7, 6},    {MN_TYPE_Q8_0, 32, 5, 0, 5, 5},
        {MN_TYPE_Q8_0, 96, 8, 1, 8, 11},     {MN_TYPE_Q8_0, 1536, 9, 0, 9, 64},  {MN_TYPE_Q8_0, 256, 3, 0, 3, 1},
        {MN_TYPE_Q4_0, 576, 9, 0, 9, 1},     {MN_TYPE_Q4_0, 544, 9, 0, 9, 6},    {MN_TYPE_Q4_0, 96, 6, 1, 6, 3},
        {MN_TYPE_Q5_1, 576, 5, 0, 5, 3},     {MN_TYPE_Q5_0, 64, 5, 1, 4, 2},
        {MN_TYPE_Q5_0, 576, 9, 0, 9, 1},     {MN_TYPE_Q5_0, 544, 9, 0, 9, 6},    {MN_TYPE_Q5_0, 96, 6, 1, 6, 3},
        {MN_TYPE_Q5_0, 640, 11, 2, 11, 2},   {MN_TYPE_Q5_0, 2048, 13, 0, 13, 64}, {MN_TYPE_Q5_0, 32, 4, 0, 4, 7},
        {MN_TYPE_Q5_0, 640, 6, 1, 6, 546},
        {MN_TYPE_Q4_K, 1024, 11, 1, 11, 4},  {MN_TYPE_Q4_K, 256, 9, 0, 9, 13},   {MN_TYPE_Q4_K, 2048, 17, 2, 17, 64},
        {MN_TYPE_Q6_K, 2048, 9, 0, 9, 4},    {MN_TYPE_Q6_K, 256, 10, 1, 10, 7},  {MN_TYPE_Q6_K, 1024, 19, 0, 19, 33},     {MN_TYPE_Q4_K, 512, 6, 0, 6, 5},
        {MN_TYPE_Q6_K, 256, 5, 0, 5, 1},     {MN_TYPE_F16, 100, 4, 0, 4, 3},     {MN_TYPE_F32, 33, 3, 0, 3, 2},
        {MN_TYPE_BF16, 64, 3, 0, 3, 2},
    };
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++) {
        const int wt = sh[si].wt;
        const int64_t K = sh[si].K;
        const int rows = sh[si].rows, T = sh[si].T;
        const mn_quant_traits *s = mn_quant_get_isa(wt, MN_ISA_SCALAR);
        const size_t wb = rowb(wt, K), xb = rowb(s->vec_dot_type, K);
        uint8_t *w = malloc(rows * wb), *x = malloc((size_t)T * xb);
        float *wf = malloc(rows * K * 4), *xf = malloc((size_t)T * K * 4);
        make_rows(wt, K, rows, w, wf, T, x, xf);
        const int64_t ldy = rows + 3;
        float *ref = malloc((size_t)T * ldy * 4), *y = malloc((size_t)T * ldy * 4);
        double *mag = malloc((size_t)T * ldy * sizeof(double));
        for (int t = 0; t < T; t++)
            for (int r = 0; r < rows; r++) {
                s->vec_dot(K, &ref[t * ldy + r], w + r * wb, x + t * xb);
                mag[t * ldy + r] = magnitude(wf + r * K, xf + (size_t)t * K, K);
            }
        for (int isa = 0; isa <= MN_ISA_AVX512; isa++) {
            const mn_quant_traits *v = mn_quant_get_isa(wt, (mn_isa)isa);
            if (!v) continue;
            for (int variant = 0; variant < 2; variant++) {
                /* variant 1: a copy of the traits (not from the table) -> generic loop */
                mn_quant_traits copy = *v;
                const mn_quant_traits *qt = variant ? &copy : v;
                for (int64_t i = 0; i < (int64_t)T * ldy; i++) y[i] = -12345.0f;
                mn_gemm_q(qt, K, w, wb, sh[si].r0, sh[si].r1, x, xb, T, y, ldy);
                int bad = 0, touched = 0;
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < ldy; r++) {
                        const float g = y[t * ldy + r];
                        if (r < sh[si].r0 || r >= sh[si].r1) {
                            if (g != -12345.0f) touched++;
                            continue;
                        }
                        if (!(fabs((double)g - ref[t * ldy + r]) <= 1e-5 * mag[t * ldy + r] + 1e-30)) {
                            if (bad < 3)
                                fprintf(stderr, "  gemm %s %s K=%lld T=%d r=%d t=%d: %.9g vs %.9g\n",
                                        mn_type_layout_get(wt)->name, mn_isa_name((mn_isa)isa), (long long)K, T, r, t, g,
                                        ref[t * ldy + r]);
                            bad++;
                        }
                    }
                CHECK(bad == 0 && touched == 0, "gemm %s %s%s K=%lld rows [%d,%d) T=%d: %d wrong, %d outside written",
                      mn_type_layout_get(wt)->name, mn_isa_name((mn_isa)isa), variant ? " (generic)" : "", (long long)K,
                      sh[si].r0, sh[si].r1, T, bad, touched);
            }
        }
        free(w), free(x), free(wf), free(xf), free(ref), free(y), free(mag);
    }
}

/* ---------------------------------------------------- gemm from threads */

typedef struct {
    const mn_quant_traits *qt;
    int64_t K, r0, r1, T, ldy;
    const uint8_t *w, *x;
    size_t wb, xb;
    float *y;
} gjob;

static void *gemm_thread(void *p) {
    const gjob *j = p;
    for (int rep = 0; rep < 20; rep++) /* reuse of the per-thread scratch */
        mn_gemm_q(j->qt, j->K, j->w, j->wb, j->r0, j->r1, j->x, j->xb, j->T, j->y, j->ldy);
    return NULL;
}

static void test_gemm_threads(void) {
    const int wts[] = {MN_TYPE_Q4_1, MN_TYPE_Q8_0, MN_TYPE_Q5_0, MN_TYPE_Q4_K, MN_TYPE_Q6_K};
    for (int wi = 0; wi < 5; wi++)
        for (int Ti = 0; Ti < 2; Ti++) {
            const int wt = wts[wi], rows = 37, nth = 4;
            const int64_t K = wt == MN_TYPE_Q4_K || wt == MN_TYPE_Q6_K ? 512 : 576, T = Ti ? 9 : 1;
            const mn_quant_traits *qt = mn_quant_get(wt), *s = mn_quant_get_isa(wt, MN_ISA_SCALAR);
            const size_t wb = rowb(wt, K), xb = rowb(qt->vec_dot_type, K);
            uint8_t *w = malloc(rows * wb), *x = malloc(T * xb);
            float *wf = malloc(rows * K * 4), *xf = malloc(T * K * 4), *y = malloc(T * rows * 4);
            make_rows(wt, K, rows, w, wf, (int)T, x, xf);
            pthread_t th[4];
            gjob jobs[4];
            for (int i = 0; i < nth; i++) {
                jobs[i] = (gjob){qt, K, rows * i / nth, rows * (i + 1) / nth, T, rows, w, x, wb, xb, y};
                pthread_create(&th[i], NULL, gemm_thread, &jobs[i]);
            }
            for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
            int bad = 0;
            for (int t = 0; t < T; t++)
                for (int r = 0; r < rows; r++) {
                    float ref;
                    s->vec_dot(K, &ref, w + r * wb, x + t * xb);
                    if (!(fabs((double)y[t * rows + r] - ref) <= 1e-5 * magnitude(wf + r * K, xf + t * K, K) + 1e-30)) bad++;
                }
            CHECK(bad == 0, "threaded gemm %s T=%lld: %d wrong", mn_type_layout_get(wt)->name, (long long)T, bad);
            free(w), free(x), free(wf), free(xf), free(y);
        }
}

/* --------------------------------------------------------------- vec ops */

static void test_vec_ops(void) {
    const mn_vec_ops *s = mn_vec_get_isa(MN_ISA_SCALAR);
    CHECK(s && mn_vec_get() != NULL, "vec ops exist");
    const int n_max = 300;
    float *a = malloc(n_max * 4), *b = malloc(n_max * 4), *y0 = malloc(n_max * 4), *y1 = malloc(n_max * 4);
    uint16_t *h = malloc(n_max * 2), *h0 = malloc((n_max + 8) * 2), *h1 = malloc((n_max + 8) * 2);
    for (int isa = MN_ISA_AVX2; isa <= MN_ISA_AVX512; isa++) {
        const mn_vec_ops *v = mn_vec_get_isa((mn_isa)isa);
        if (!v) continue;
        int bad = 0, badcvt = 0, badtail = 0;
        for (int n = 0; n <= n_max; n += (n < 70 ? 1 : 37)) {
            double mag = 0, magh = 0;
            for (int i = 0; i < n; i++) {
                a[i] = frand() * 4, b[i] = frand() * 4;
                h[i] = mn_fp32_to_fp16(a[i]);
                mag += fabs((double)a[i] * b[i]);
                magh += fabs((double)mn_fp16_to_fp32(h[i]) * b[i]);
            }
            /* float sums of n terms in different orders: |diff| <= ~n*2^-24*mag */
            const double k = (n + 16) * 1.2e-7;
            if (fabs(v->dot_f32(n, a, b) - s->dot_f32(n, a, b)) > k * mag + 1e-30) bad++;
            if (fabs(v->dot_f16_f32(n, h, b) - s->dot_f16_f32(n, h, b)) > k * magh + 1e-30) bad++;
            /* axpy: fma vs mul+add, one rounding apart */
            for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
            s->axpy_f32(n, 0.37f, a, y0);
            v->axpy_f32(n, 0.37f, a, y1);
            for (int i = 0; i < n; i++)
                if (fabs(y0[i] - y1[i]) > 2.4e-7 * (fabs(0.37 * a[i]) + fabs(b[i]))) bad++;
            for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
            s->axpy_f16(n, -1.5f, h, y0);
            v->axpy_f16(n, -1.5f, h, y1);
            for (int i = 0; i < n; i++)
                if (fabs(y0[i] - y1[i]) > 2.4e-7 * (fabs(1.5 * mn_fp16_to_fp32(h[i])) + fabs(b[i]))) bad++;
            /* conversion: bit-exact, special values included, nothing written past n */
            if (n > 8) {
                a[0] = 65520.0f, a[1] = 0x1p-25f, a[2] = f_of(0x7F800000u), a[3] = -0.0f, a[4] = 3 * 0x1p-25f;
                a[5] = f_of(0x7FC01234u), a[6] = 1.0f + 0x1p-11f, a[7] = 1e-40f, a[8] = -65504.0f;
            }
            for (int i = 0; i < n + 8; i++) h0[i] = h1[i] = 0xABCD;
            s->cvt_f32_f16(n, a, h0);
            v->cvt_f32_f16(n, a, h1);
            if (memcmp(h0, h1, n * 2)) badcvt++;
            for (int i = n; i < n + 8; i++)
                if (h1[i] != 0xABCD) badtail++;
        }
        CHECK(bad == 0, "vec ops %s: %d mismatches", mn_isa_name((mn_isa)isa), bad);
        CHECK(badcvt == 0, "cvt_f32_f16 %s: %d lengths not bit-exact", mn_isa_name((mn_isa)isa), badcvt);
        CHECK(badtail == 0, "cvt_f32_f16 %s wrote past n", mn_isa_name((mn_isa)isa));
    }
    free(a), free(b), free(y0), free(y1), free(h), free(h0), free(h1);
}

static void test_isa(void) {
    const mn_isa hw = mn_cpu_isa_hw(), cur = mn_cpu_isa();
    CHECK(cur <= hw, "dispatched ISA %s above hardware %s", mn_isa_name(cur), mn_isa_name(hw));
    printf("  hardware ISA: %s, dispatched: %s\n", mn_isa_name(hw), mn_isa_name(cur));
    CHECK(mn_quant_get(MN_TYPE_Q4_1) == mn_quant_get_isa(MN_TYPE_Q4_1, cur), "mn_quant_get follows mn_cpu_isa");
    CHECK(mn_quant_get(MN_TYPE_Q2_K) == NULL, "Q2_K has no kernels");
    CHECK(mn_quant_get(-1) == NULL && mn_quant_get(MN_TYPE_COUNT) == NULL, "bad type ids");
    for (int isa = hw + 1; isa <= MN_ISA_AVX512; isa++)
        CHECK(mn_quant_get_isa(MN_TYPE_Q4_1, (mn_isa)isa) == NULL, "ISA %d not on this CPU -> NULL", isa);
    CHECK(mn_quant_get(MN_TYPE_Q4_1)->vec_dot_type == MN_TYPE_Q8_1, "q4_1 -> q8_1");
    CHECK(mn_quant_get(MN_TYPE_Q8_0)->vec_dot_type == MN_TYPE_Q8_0, "q8_0 -> q8_0");
    CHECK(mn_quant_get(MN_TYPE_Q4_K)->vec_dot_type == MN_TYPE_Q8_K, "q4_k -> q8_k");
    CHECK(mn_quant_get(MN_TYPE_Q8_1)->vec_dot == NULL, "q8_1 is activation-only");
}

/* exp over arrays, every ISA against exp in double: within 3e-7 relative (the
 * polynomial and two roundings), arguments below -87.3 (and -inf) exactly 0,
 * nothing written past n, sums within float summation error. */
static void test_vec_exp(void) {
    const int n_max = 300;
    float *x = malloc((n_max + 8) * 4), *y = malloc((n_max + 8) * 4), *b = malloc(n_max * 4);
    for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
        const mn_vec_ops *v = mn_vec_get_isa((mn_isa)isa);
        if (!v) continue;
        int bad = 0, badsum = 0, badtail = 0, badzero = 0;
        double worst = 0;
        for (int n = 0; n <= n_max; n += (n < 40 ? 1 : 29)) {
            for (int i = 0; i < n; i++) x[i] = -95.0f + 100.0f * (frand() * 0.5f + 0.5f), b[i] = frand() * 8;
            if (n > 3) x[0] = -INFINITY, x[1] = -87.31f, x[2] = 0.0f, x[3] = -87.29f;
            for (int i = n; i < n + 8; i++) x[i] = y[i] = 12345.0f;
            const float shift = 1.5f;
            memcpy(y, x, (size_t)n * 4);
            double ref = 0, mag = 0;
            /* the argument is x - shift rounded to float, as the kernels form it */
            for (int i = 0; i < n; i++) {
                const double t = (float)(x[i] - shift);
                ref += t < -87.3 ? 0 : exp(t);
            }
            const float s1 = v->exp_sum(n, y, shift), s2 = v->sum_exp(n, x, shift);
            for (int i = 0; i < n; i++) {
                const double t = (float)(x[i] - shift), e = t < -87.3 ? 0 : exp(t);
                mag += e;
                if (t < -87.3 && y[i] != 0) badzero++;
                const double rel = e > 0 ? fabs(y[i] - e) / e : fabs(y[i]);
                if (rel > worst) worst = rel;
                if (rel > 3e-7 && !(t < -87.2 && fabs(y[i] - e) < 1e-37)) bad++;
            }
            const double k = (n + 16) * 1.2e-7 * mag + 1e-30;
            if (fabs(s1 - ref) > k || fabs(s2 - ref) > k || s1 != s2) badsum++;
            for (int i = n; i < n + 8; i++)
                if (y[i] != 12345.0f) badtail++;
            /* y = alpha e^a + beta e^b, in place over a */
            for (int i = 0; i < n; i++) x[i] = frand() * 8;
            memcpy(y, x, (size_t)n * 4);
            v->exp_lincomb(n, y, y, 0.5f, b, -0.25f);
            for (int i = 0; i < n; i++) {
                const double e = 0.5 * exp((double)x[i]) - 0.25 * exp((double)b[i]);
                if (fabs(y[i] - e) > 6e-7 * (0.5 * exp((double)x[i]) + 0.25 * exp((double)b[i]))) bad++;
            }
            v->exp_lincomb(n, y, x, 2.0f, NULL, 0.0f);
            for (int i = 0; i < n; i++)
                if (fabs(y[i] - 2 * exp((double)x[i])) > 3e-7 * 2 * exp((double)x[i])) bad++;
        }
        CHECK(bad == 0, "exp %s: %d values off (worst relative error %.3g)", mn_isa_name((mn_isa)isa), bad, worst);
        CHECK(badzero == 0, "exp %s: %d arguments below -87.3 not 0", mn_isa_name((mn_isa)isa), badzero);
        CHECK(badsum == 0, "exp %s: %d sums off", mn_isa_name((mn_isa)isa), badsum);
        CHECK(badtail == 0, "exp %s wrote past n", mn_isa_name((mn_isa)isa));
    }
    free(x), free(y), free(b);
}

/* ----------------------------------------------- reference fixtures (gguf) */

/* tests/fixtures/quant_ref.bin (scripts/make_fixtures.py quant): blocks of each
 * type and their values as the reference dequantizes them; for the 32-wide
 * types also the floats the reference quantized into those blocks. Every ISA's
 * to_float must give the reference's values bit for bit; our quantizer the
 * reference's blocks bit for bit; every vec_dot the exact dot of the reference
 * values with the quantized activations, within float summation (and, for
 * Q4_1/Q5_1, Q8_1's f16 sum, as llama.cpp's own kernel). */
static void test_reference_fixture(void) {
    FILE *f = fopen("tests/fixtures/quant_ref.bin", "rb");
    CHECK(f != NULL, "tests/fixtures/quant_ref.bin missing (it is part of the repository; make fixtures)");
    if (!f) return;
    char magic[4];
    uint32_t hdr[2];
    CHECK(fread(magic, 1, 4, f) == 4 && !memcmp(magic, "MNQF", 4) && fread(hdr, 4, 2, f) == 2 && hdr[0] == 1,
          "fixture header");
    int seen = 0;
    for (uint32_t t = 0; t < hdr[1]; t++) {
        uint32_t h[4];
        if (fread(h, 4, 4, f) != 4) {
            CHECK(0, "fixture truncated at type %u", t);
            break;
        }
        const int type = (int)h[0];
        const int64_t n = h[1];
        const size_t nb = h[2];
        float *src = h[3] ? malloc(sizeof(float) * (size_t)n) : NULL, *ref = malloc(sizeof(float) * (size_t)n);
        float *got = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)n);
        uint8_t *q = malloc(nb), *mine = malloc(nb);
        int ok = (!h[3] || fread(src, sizeof(float), (size_t)n, f) == (size_t)n) && fread(q, 1, nb, f) == nb &&
                 fread(ref, sizeof(float), (size_t)n, f) == (size_t)n;
        CHECK(ok && nb == rowb(type, n), "type %d: %lld values in %zu bytes", type, (long long)n, nb);
        const char *name = mn_type_layout_get(type) ? mn_type_layout_get(type)->name : "?";
        for (int isa = MN_ISA_SCALAR; ok && isa <= MN_ISA_AVX512; isa++) {
            const mn_quant_traits *v = mn_quant_get_isa(type, (mn_isa)isa);
            if (!v) continue;
            v->to_float(q, got, n);
            CHECK(!memcmp(got, ref, sizeof(float) * (size_t)n), "%s %s: dequantized as the reference, bit for bit", name,
                  mn_isa_name((mn_isa)isa));
            if (src) {
                v->from_float(src, mine, n);
                size_t diff = 0;
                for (size_t i = 0; i < nb; i++) diff += mine[i] != q[i];
                CHECK(diff == 0, "%s %s: quantized as the reference, bit for bit (%zu of %zu bytes differ)", name,
                      mn_isa_name((mn_isa)isa), diff, nb);
            }
            /* the dot with quantized activations */
            const mn_quant_traits *a = mn_quant_get_isa(v->vec_dot_type, MN_ISA_SCALAR);
            uint8_t *xq = malloc(rowb(v->vec_dot_type, n));
            float *xd = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 97 == 0 ? 20.0f : 1.0f);
            a->from_float(x, xq, n);
            a->to_float(xq, xd, n);
            double exact = 0;
            for (int64_t i = 0; i < n; i++) exact += (double)ref[i] * xd[i];
            const double mag = magnitude(ref, xd, n);
            float dot;
            v->vec_dot(n, &dot, q, xq);
            const double tol = (type == MN_TYPE_Q4_1 || type == MN_TYPE_Q5_1 ? 2e-3 : 1e-5) * mag + 1e-30;
            CHECK(fabs(dot - exact) <= tol, "%s %s: dot %.9g vs the reference values' %.9g (mag %.3g)", name,
                  mn_isa_name((mn_isa)isa), dot, exact, mag);
            free(xq), free(xd);
        }
        seen += ok;
        free(src), free(ref), free(got), free(x), free(q), free(mine);
    }
    CHECK(seen == 7, "the fixture's 7 types read (%d)", seen);
    fclose(f);
}

int main(void) {
    test_isa();
    test_reference_fixture();
    test_fp16();
    test_quantize();
    test_vec_dot();
    test_gemm();
    test_gemm_threads();
    test_vec_ops();
    test_vec_exp();
    TEST_MAIN_END();
}
