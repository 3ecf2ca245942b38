/* test_attention.c - the grouped attention kernel, every ISA, against a
 * double-precision softmax-attention computed from the same f16 keys/values;
 * the tiled kernel, every ISA, against the scalar reference on random shapes
 * (odd lengths, causal limits, random and empty-tile masks, memory prefixes,
 * 1..8 heads per group), and a row's independence from its neighbours; the
 * split-decode parts (key ranges merged) against the reference. */
#include <stdint.h>

#include "kernels/attention.h"
#include "kernels/quant.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* Random tiled-attention problems against the reference kernel run per row. */
static void test_tiles(void) {
    for (int trial = 0; trial < 64; trial++) {
        const int Gs[] = {1, 2, 3, 4, 5, 8}, Ds[] = {64, 64, 128, 32, 48, 40, 16, 256};
        const int G = Gs[trial % 6], D = Ds[trial % 8];
        const int nq = 1 + (int)(urand() * 40);
        const int64_t past = trial % 5 == 0 ? 0 : (int64_t)(urand() * 300); /* cells before the block */
        const int64_t n = past + nq;
        const size_t ld = (size_t)D * 2 + 8, ldq = (size_t)G * D + 3, ldo = (size_t)G * D + 5;
        const int kind = trial % 4; /* 0 causal, 1 random mask, 2 memory prefix + causal, 3 sparse (empty tiles) */
        float *q = malloc(sizeof(float) * ldq * (size_t)nq), *out = malloc(sizeof(float) * ldo * (size_t)nq);
        float *ref = malloc(sizeof(float) * (size_t)G * D), *one = malloc(sizeof(float) * ldo);
        uint16_t *K = malloc(sizeof(uint16_t) * ld * (size_t)n), *V = malloc(sizeof(uint16_t) * ld * (size_t)n);
        uint8_t *mk = malloc((size_t)nq * (size_t)n);
        const uint8_t **rows = malloc(sizeof(*rows) * (size_t)nq);
        int64_t *lim = malloc(sizeof(int64_t) * (size_t)nq);
        for (size_t i = 0; i < ldq * (size_t)nq; i++) q[i] = (float)(urand() * 6 - 3);
        for (size_t i = 0; i < ld * (size_t)n; i++) {
            K[i] = mn_fp32_to_fp16((float)(urand() * 4 - 2));
            V[i] = mn_fp32_to_fp16((float)(urand() * 2 - 1));
        }
        const int64_t prefix = past / 2; /* memory cells every row sees */
        for (int i = 0; i < nq; i++) {
            lim[i] = past + i + 1;
            uint8_t *m = mk + (size_t)i * (size_t)n;
            for (int64_t j = 0; j < n; j++) {
                int v = j < lim[i];
                if (kind == 1) v = v && (urand() < 0.6 || j == lim[i] - 1);
                if (kind == 2) v = v && (j < prefix || j >= past);
                if (kind == 3) v = v && ((j / 64) % 3 == 1 || j == lim[i] - 1);
                m[j] = (uint8_t)v;
            }
            rows[i] = kind ? m : NULL;
        }
        const float scale = 1.0f / sqrtf((float)D);
        float *scratch = malloc(sizeof(float) * mn_attn_tile_scratch(G, D, nq, n));
        for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
            mn_attn_tile_fn f = mn_attn_tile_get_isa((mn_isa)isa);
            if (!f) continue;
            f(G, D, nq, q, ldq, scale, K, V, ld, lim, kind ? rows : NULL, out, ldo, scratch);
            double err = 0, alone = 0;
            for (int i = 0; i < nq; i++) {
                mn_attn_group_scalar(G, D, lim[i], q + (size_t)i * ldq, scale, K, V, ld, rows[i], ref, scratch);
                for (int k = 0; k < G * D; k++) err = fmax(err, fabs(out[(size_t)i * ldo + k] - ref[k]));
                /* the same row alone, as a token decoded by itself */
                if (i % 7 == 0) {
                    const uint8_t *r1[1] = {rows[i]};
                    f(G, D, 1, q + (size_t)i * ldq, ldq, scale, K, V, ld, &lim[i], kind ? r1 : NULL, one, ldo, scratch);
                    for (int k = 0; k < G * D; k++) alone = fmax(alone, fabs(out[(size_t)i * ldo + k] - one[k]));
                }
            }
            CHECK(err < 2e-5, "tile %s G=%d D=%d nq=%d n=%lld kind %d: max error %.3g", mn_isa_name((mn_isa)isa), G, D,
                  nq, (long long)n, kind, err);
            CHECK(alone == 0, "tile %s: a row alone differs from the row in its block by %.3g",
                  mn_isa_name((mn_isa)isa), alone);
        }
        free(q), free(out), free(ref), free(one), free(K), free(V), free(mk), free(rows), free(lim), free(scratch);
    }
}

/* Split decode: a row's keys cut into random ranges, each range's part from
 * every ISA, merged, against the reference kernel over all rows; ranges with
 * no visible row; one part over everything equals the row kernel. */
static void test_parts(void) {
    for (int trial = 0; trial < 48; trial++) {
        const int Gs[] = {1, 2, 3, 4, 5, 8}, Ds[] = {64, 64, 128, 32, 48, 40, 16, 256};
        const int G = Gs[trial % 6], D = Ds[trial % 8];
        const int64_t n = 1 + (int64_t)(urand() * (trial % 3 ? 2500 : 300));
        const size_t ld = (size_t)D * 3 + 8;
        const int kind = trial % 4; /* 0 none, 1 random mask, 2 memory prefix + recent, 3 hidden ranges */
        float *q = malloc(sizeof(float) * (size_t)G * D), *ref = malloc(sizeof(float) * (size_t)G * D);
        float *out = malloc(sizeof(float) * (size_t)G * D), *grp = malloc(sizeof(float) * (size_t)G * D);
        uint16_t *K = malloc(sizeof(uint16_t) * ld * (size_t)n), *V = malloc(sizeof(uint16_t) * ld * (size_t)n);
        uint8_t *mk = malloc((size_t)n);
        float *scratch = malloc(sizeof(float) * (size_t)G * (size_t)n);
        int64_t cut[64];
        int np = 0;
        for (int i = 0; i < G * D; i++) q[i] = (float)(urand() * 6 - 3);
        for (size_t i = 0; i < ld * (size_t)n; i++) {
            K[i] = mn_fp32_to_fp16((float)(urand() * 4 - 2));
            V[i] = mn_fp32_to_fp16((float)(urand() * 2 - 1));
        }
        cut[np++] = 0; /* range starts: fixed 512-row chunks (the engine's) or random */
        for (int64_t j = trial % 2 ? 512 : 1 + (int64_t)(urand() * 200); j < n && np < 63;
             j += trial % 2 ? 512 : 1 + (int64_t)(urand() * 400))
            cut[np++] = j;
        cut[np] = n;
        for (int64_t j = 0; j < n; j++) {
            int v = 1;
            if (kind == 1) v = urand() < 0.5;
            if (kind == 2) v = j < n / 4 || j >= n - n / 5;
            if (kind == 3) { /* every other range hidden entirely */
                int r = 0;
                while (r + 1 < np && cut[r + 1] <= j) r++;
                v = r % 2 == 1;
            }
            mk[j] = (uint8_t)(v || j == n - 1);
        }
        const uint8_t *mask = kind ? mk : NULL;
        const float scale = 1.0f / sqrtf((float)D);
        mn_attn_group_scalar(G, D, n, q, scale, K, V, ld, mask, ref, scratch);
        float *parts = malloc(sizeof(float) * MN_ATTN_PART(G, D) * (size_t)np);
        for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
            mn_attn_part_fn f = mn_attn_part_get_isa((mn_isa)isa);
            if (!f) continue;
            int empty = 0;
            for (int p = 0; p < np; p++) {
                float *pp = parts + (size_t)p * MN_ATTN_PART(G, D);
                f(G, D, cut[p + 1] - cut[p], q, scale, K + (size_t)cut[p] * ld, V + (size_t)cut[p] * ld, ld,
                  mask ? mask + cut[p] : NULL, pp, scratch);
                if (pp[(size_t)G * D] == -INFINITY) {
                    empty++;
                    double z = 0;
                    for (int g = 0; g < G; g++) z += fabs(pp[(size_t)G * D + G + g]);
                    for (int i = 0; i < G * D; i++) z += fabs(pp[i]);
                    CHECK(z == 0, "part %s: a hidden range left %g", mn_isa_name((mn_isa)isa), z);
                }
            }
            CHECK(kind != 3 || np < 2 || empty > 0, "kind 3 made no hidden range (%d ranges)", np);
            mn_attn_combine(G, D, np, parts, out);
            double err = 0;
            for (int i = 0; i < G * D; i++) err = fmax(err, fabs(out[i] - ref[i]));
            CHECK(err < 2e-5, "part %s G=%d D=%d n=%lld %d ranges kind %d: max error %.3g", mn_isa_name((mn_isa)isa),
                  G, D, (long long)n, np, kind, err);
            /* one part over all rows: the row kernel of the same ISA */
            f(G, D, n, q, scale, K, V, ld, mask, parts, scratch);
            mn_attn_combine(G, D, 1, parts, out);
            mn_attn_group_get_isa((mn_isa)isa)(G, D, n, q, scale, K, V, ld, mask, grp, scratch);
            double e1 = 0;
            for (int i = 0; i < G * D; i++) e1 = fmax(e1, fabs(out[i] - grp[i]));
            CHECK(e1 < 1e-6, "part %s: one range differs from the row kernel by %.3g", mn_isa_name((mn_isa)isa), e1);
        }
        free(q), free(ref), free(out), free(grp), free(K), free(V), free(mk), free(scratch), free(parts);
    }
}

/* The q8_0 cache's kernels (tile, split-decode parts, row kernel), every ISA, against attention in double
 * precision over the same dequantised rows (d * q in f32, as the quantiser's own dequantiser gives it):
 * rows of blocks at an odd byte stride, head sizes of 1 to 4 blocks, causal limits and masks. */
static double q8_ref(int D, int64_t n, const float *q, float scale, const float *Kf, const float *Vf,
                     const uint8_t *mask, int64_t lim, double *o) {
    double mx = -1e300, sum = 0, *s = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t j = 0; j < lim; j++) {
        s[j] = -1e300;
        if (mask && !mask[j]) continue;
        double d = 0;
        for (int i = 0; i < D; i++) d += (double)q[i] * Kf[(size_t)j * D + i];
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int i = 0; i < D; i++) o[i] = 0;
    for (int64_t j = 0; j < lim; j++) {
        if (mask && !mask[j]) continue;
        const double p = exp(s[j] - mx);
        sum += p;
        for (int i = 0; i < D; i++) o[i] += p * Vf[(size_t)j * D + i];
    }
    for (int i = 0; i < D; i++) o[i] /= sum;
    free(s);
    return sum;
}

static void test_q8(void) {
    const mn_quant_traits *qt = mn_quant_get(MN_TYPE_Q8_0);
    for (int trial = 0; trial < 30; trial++) {
        const int Gs[] = {1, 3, 4, 8}, Ds[] = {64, 32, 128, 96, 256};
        const int G = Gs[trial % 4], D = Ds[(trial / 4) % 5], nb = D / MN_Q8_BLOCK;
        const int nq = 1 + (int)(urand() * 40);
        const int64_t n = (trial % 3 == 0 ? 0 : (int64_t)(urand() * 1200)) + nq;
        const size_t ld = (size_t)nb * MN_Q8_BYTES + 7; /* an odd stride: the blocks' scales unaligned */
        uint8_t *K = calloc(ld * (size_t)n + 64, 1), *V = calloc(ld * (size_t)n + 64, 1), *mk = malloc((size_t)n);
        float *Kf = malloc(sizeof(float) * (size_t)n * D), *Vf = malloc(sizeof(float) * (size_t)n * D);
        float *x = malloc(sizeof(float) * (size_t)D), *y = malloc(sizeof(float) * (size_t)D);
        float *q = malloc(sizeof(float) * (size_t)nq * G * D), *out = malloc(sizeof(float) * (size_t)nq * G * D);
        double *ref = malloc(sizeof(double) * (size_t)D);
        int exact = 1;
        for (int64_t j = 0; j < n; j++) {
            for (int i = 0; i < D; i++) x[i] = (float)(urand() * 4 - 2);
            qt->from_float(x, K + (size_t)j * ld, D);
            mn_q8_row_to_f32(K + (size_t)j * ld, D, Kf + (size_t)j * D);
            qt->to_float(K + (size_t)j * ld, y, D);
            for (int i = 0; i < D; i++) exact &= y[i] == Kf[(size_t)j * D + i];
            for (int i = 0; i < D; i++) x[i] = (float)(urand() * 2 - 1);
            qt->from_float(x, V + (size_t)j * ld, D);
            mn_q8_row_to_f32(V + (size_t)j * ld, D, Vf + (size_t)j * D);
            mk[j] = (uint8_t)(trial % 2 == 0 || urand() < 0.7 || j == n - 1);
        }
        CHECK(exact, "q8 row dequantisation equals the quantiser's own (D=%d)", D);
        for (int i = 0; i < nq * G * D; i++) q[i] = (float)(urand() * 6 - 3);
        const uint8_t *mask = trial % 2 ? mk : NULL;
        const float scale = 1.0f / sqrtf((float)D);
        int64_t lim[64];
        const uint8_t *rows[64];
        for (int i = 0; i < nq; i++) lim[i] = n - nq + i + 1, rows[i] = mask;
        float *scratch = malloc(sizeof(float) * (mn_attn_tile_scratch(G, D, nq, n) + (size_t)G * (size_t)n));
        float *parts = malloc(sizeof(float) * MN_ATTN_PART(G, D) * 8);
        for (int isa = MN_ISA_SCALAR; isa <= MN_ISA_AVX512; isa++) {
            mn_attn_tile_q8_fn tf = mn_attn_tile_q8_get_isa((mn_isa)isa);
            mn_attn_part_q8_fn pf = mn_attn_part_q8_get_isa((mn_isa)isa);
            mn_attn_group_q8_fn gf = mn_attn_group_q8_get_isa((mn_isa)isa);
            if (!tf || !pf || !gf) continue;
            tf(G, D, nq, q, (size_t)G * D, scale, K, V, ld, lim, mask ? rows : NULL, out, (size_t)G * D, scratch);
            double et = 0, ep = 0, eg = 0;
            for (int i = 0; i < nq; i++)
                for (int g = 0; g < G; g++) {
                    q8_ref(D, n, q + ((size_t)i * G + g) * D, scale, Kf, Vf, mask, lim[i], ref);
                    for (int d = 0; d < D; d++) et = fmax(et, fabs(out[((size_t)i * G + g) * D + d] - ref[d]));
                }
            /* the last query row decoded alone: ranges of 512 keys merged, and the row kernel */
            const float *ql = q + (size_t)(nq - 1) * G * D;
            int np = 0;
            for (int64_t j0 = 0; j0 < n; j0 += 512, np++)
                pf(G, D, n - j0 < 512 ? n - j0 : 512, ql, scale, K + (size_t)j0 * ld, V + (size_t)j0 * ld, ld,
                   mask ? mask + j0 : NULL, parts + (size_t)np * MN_ATTN_PART(G, D), scratch);
            mn_attn_combine(G, D, np, parts, out);
            for (int g = 0; g < G; g++) {
                q8_ref(D, n, ql + (size_t)g * D, scale, Kf, Vf, mask, n, ref);
                for (int d = 0; d < D; d++) ep = fmax(ep, fabs(out[(size_t)g * D + d] - ref[d]));
            }
            gf(G, D, n, ql, scale, K, V, ld, mask, out, scratch);
            for (int g = 0; g < G; g++) {
                q8_ref(D, n, ql + (size_t)g * D, scale, Kf, Vf, mask, n, ref);
                for (int d = 0; d < D; d++) eg = fmax(eg, fabs(out[(size_t)g * D + d] - ref[d]));
            }
            CHECK(et < 2e-5 && ep < 2e-5 && eg < 2e-5, "q8 %s G=%d D=%d nq=%d n=%lld: tile %.3g, parts %.3g, row %.3g",
                  mn_isa_name((mn_isa)isa), G, D, nq, (long long)n, et, ep, eg);
        }
        free(K), free(V), free(mk), free(Kf), free(Vf), free(x), free(y), free(q), free(out), free(ref), free(scratch),
            free(parts);
    }
}

int main(void) {
    test_tiles();
    test_parts();
    test_q8();
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
