/* test_attention.c - the grouped attention kernel, every ISA, against a
 * double-precision softmax-attention computed from the same f16 keys/values. */
#include <stdint.h>

#include "kernels/attention.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

int main(void) {
    const int shapes[][3] = {{3, 64, 1}, {3, 64, 37}, {1, 64, 300}, {4, 128, 65}, {8, 64, 16}, {3, 32, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int G = shapes[si][0], D = shapes[si][1], n = shapes[si][2];
        const size_t ld = (size_t)D * 3 + 16; /* rows of a wider cache, as in the engine */
        float *q = malloc(sizeof(float) * (size_t)(G * D)), *out = malloc(sizeof(float) * (size_t)(G * D));
        float *scratch = malloc(sizeof(float) * (size_t)G * (size_t)n);
        uint16_t *K = malloc(sizeof(uint16_t) * ld * (size_t)n), *V = malloc(sizeof(uint16_t) * ld * (size_t)n);
        double *ref = malloc(sizeof(double) * (size_t)(G * D)), *s = malloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < G * D; i++) q[i] = (float)(urand() * 4 - 2);
        for (size_t i = 0; i < ld * (size_t)n; i++) {
            K[i] = mn_fp32_to_fp16((float)(urand() * 4 - 2));
            V[i] = mn_fp32_to_fp16((float)(urand() * 2 - 1));
        }
        const float scale = 1.0f / sqrtf((float)D);
        for (int g = 0; g < G; g++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int i = 0; i < D; i++) d += (double)q[g * D + i] * mn_fp16_to_fp32(K[(size_t)j * ld + i]);
                s[j] = d * scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
            for (int i = 0; i < D; i++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += s[j] * mn_fp16_to_fp32(V[(size_t)j * ld + i]);
                ref[g * D + i] = o / sum;
            }
        }
        for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
            mn_attn_group_fn f = mn_attn_group_get_isa((mn_isa)isa);
            if (!f) continue;
            f(G, D, n, q, scale, K, V, ld, NULL, out, scratch);
            double err = 0;
            for (int i = 0; i < G * D; i++) err = fmax(err, fabs(out[i] - ref[i]));
            /* float accumulation over n <= 1000 rows of values in [-1, 1] */
            CHECK(err < 2e-5, "%s G=%d D=%d n=%d: max error %.3g", mn_isa_name((mn_isa)isa), G, D, n, err);
        }
        /* a mask hiding every other row equals attention over the visible rows alone */
        if (n >= 4) {
            uint8_t *mask = malloc((size_t)n);
            int nv = 0;
            uint16_t *Kc = malloc(sizeof(uint16_t) * ld * (size_t)n), *Vc = malloc(sizeof(uint16_t) * ld * (size_t)n);
            for (int j = 0; j < n; j++) {
                mask[j] = (uint8_t)(j % 2 == 0 || j == n - 1);
                if (mask[j]) {
                    memcpy(Kc + (size_t)nv * ld, K + (size_t)j * ld, sizeof(uint16_t) * ld);
                    memcpy(Vc + (size_t)nv * ld, V + (size_t)j * ld, sizeof(uint16_t) * ld);
                    nv++;
                }
            }
            float *out2 = malloc(sizeof(float) * (size_t)(G * D));
            for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
                mn_attn_group_fn f = mn_attn_group_get_isa((mn_isa)isa);
                if (!f) continue;
                f(G, D, n, q, scale, K, V, ld, mask, out, scratch);
                f(G, D, nv, q, scale, Kc, Vc, ld, NULL, out2, scratch);
                double err = 0;
                for (int i = 0; i < G * D; i++) err = fmax(err, fabs(out[i] - out2[i]));
                CHECK(err < 1e-6, "%s masked G=%d n=%d: %.3g", mn_isa_name((mn_isa)isa), G, n, err);
            }
            free(mask), free(Kc), free(Vc), free(out2);
        }
        free(q), free(out), free(scratch), free(K), free(V), free(ref), free(s);
    }
    TEST_MAIN_END();
}
