/* test_batch.c - explicit positions, visibility masks and activation capture
 * (model/forward.h), the hooks the compressors are built on.
 *
 * The main check is UIO's encoder pattern: a segment of l tokens plus m memory
 * tokens, memory token i at position (i+1)*l/m seeing only the segment tokens
 * before that position and itself. Run as one masked batch, each memory
 * token's captured per-layer activations must equal those of a plain decode of
 * exactly its visible prefix followed by it at the same position.
 */
#include <stdint.h>

#include "mnemo.h"
#include "model/forward.h"
#include "test.h"

enum { SEG = 24, MEM = 3 };

int main(void) {
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load");
    const int32_t C = mn_model_n_embd(m), L = mn_model_n_layer(m);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 64;
    cp.n_batch = 16; /* the masked batch runs in two pieces */
    cp.n_threads = 2;
    mn_context *c;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");

    const int32_t T = SEG + MEM, mem_tok = 2, stride = SEG / MEM;
    int32_t ids[SEG + MEM], pos[SEG + MEM], cap_idx[MEM];
    static uint8_t mask[(SEG + MEM) * (SEG + MEM)];
    for (int i = 0; i < SEG; i++) ids[i] = 500 + 13 * i, pos[i] = i;
    for (int i = 0; i < MEM; i++) {
        ids[SEG + i] = mem_tok;
        pos[SEG + i] = (i + 1) * stride;
        cap_idx[i] = SEG + i;
    }
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            int vis;
            if (i < SEG) vis = j <= i;                            /* segment: causal */
            else vis = (j < SEG && pos[j] < pos[i]) || j == i;    /* memory: stepwise coverage + itself */
            mask[i * T + j] = (uint8_t)vis;
        }
    float *cap = malloc(sizeof(float) * (size_t)L * MEM * C), *out = malloc(sizeof(float) * MEM * (size_t)C);
    mn_batch b = {.n = T, .tokens = ids, .pos = pos, .mask = mask, .n_capture = MEM, .capture_idx = cap_idx,
                  .capture_xn = cap, .capture_out = out};
    CHECK(mn_decode_batch(c, &b, NULL, 0) == 0, "masked batch: %s", mn_last_error());
    CHECK(mn_kv_n_cells(c) == T && mn_kv_pos(c, SEG) == stride && mn_kv_pos(c, T - 1) == SEG, "cells/positions");

    float *cap1 = malloc(sizeof(float) * (size_t)L * C), *out1 = malloc(sizeof(float) * (size_t)C);
    double worst = 0, worst_out = 0;
    /* The references run in one piece: a prefix of 16 would otherwise leave its memory
     * token alone in a second piece, decoded by the one-token kernel, whose sums round
     * differently from the batch's tiled kernel on every ISA but AVX-512 */
    mn_context_params cp1 = cp;
    cp1.n_batch = 32;
    mn_context *c1;
    CHECK(mn_context_create(m, &cp1, &c1) == 0, "reference context");
    for (int i = 0; i < MEM; i++) {
        int32_t n_vis = (i + 1) * stride; /* segment tokens before the memory token */
        int32_t seq[SEG + 1], sp[SEG + 1];
        for (int j = 0; j < n_vis; j++) seq[j] = ids[j], sp[j] = j;
        seq[n_vis] = mem_tok;
        sp[n_vis] = pos[SEG + i];
        int32_t ci = n_vis;
        mn_kv_clear(c1);
        mn_batch r = {.n = n_vis + 1, .tokens = seq, .pos = sp, .n_capture = 1, .capture_idx = &ci,
                      .capture_xn = cap1, .capture_out = out1};
        CHECK(mn_decode_batch(c1, &r, NULL, 0) == 0, "reference decode");
        for (int l = 0; l < L; l++)
            for (int k = 0; k < C; k++) {
                double d = fabs(cap[((size_t)l * MEM + i) * C + k] - cap1[(size_t)l * C + k]);
                if (d > worst) worst = d;
            }
        for (int k = 0; k < C; k++) worst_out = fmax(worst_out, fabs(out[(size_t)i * C + k] - out1[k]));
    }
    mn_context_free(c1);
    printf("  stepwise-coverage batch vs per-token prefixes: max |diff| %.3g (activations), %.3g (final)\n", worst,
           worst_out);
    CHECK(worst < 1e-3 && worst_out < 1e-3, "masked batch differs: %.3g %.3g", worst, worst_out);
    /* the mask matters: without it memory token 0 would see the whole segment */
    mn_kv_clear(c);
    mn_batch nomask = b;
    nomask.mask = NULL;
    float *cap2 = malloc(sizeof(float) * (size_t)L * MEM * C);
    nomask.capture_xn = cap2;
    nomask.capture_out = NULL;
    CHECK(mn_decode_batch(c, &nomask, NULL, 0) == 0, "unmasked");
    double diff = 0;
    for (size_t k = 0; k < (size_t)L * C; k++) diff = fmax(diff, fabs(cap2[k] - cap[k]));
    CHECK(diff > 1e-2, "the mask had no effect (%.3g)", diff);

    /* bad batches are refused and change nothing */
    mn_kv_clear(c);
    static uint8_t bad[4 * 4];
    memset(bad, 0, sizeof bad);
    for (int i = 0; i < 4; i++) bad[i * 4 + i] = 1;
    bad[0 * 4 + 2] = 1; /* token 0 sees token 2 */
    mn_batch e = {.n = 4, .tokens = ids, .mask = bad};
    CHECK(mn_decode_batch(c, &e, NULL, 0) == MN_EINVAL && strstr(mn_last_error(), "later"), "future: %s",
          mn_last_error());
    bad[0 * 4 + 2] = 0;
    bad[1 * 4 + 1] = 0; /* token 1 sees nothing */
    CHECK(mn_decode_batch(c, &e, NULL, 0) == MN_EINVAL && strstr(mn_last_error(), "nothing"), "empty row");
    int32_t badcap = 9;
    mn_batch e2 = {.n = 4, .tokens = ids, .n_capture = 1, .capture_idx = &badcap, .capture_out = out};
    CHECK(mn_decode_batch(c, &e2, NULL, 0) == MN_EINVAL, "capture index");
    float emb[4];
    mn_batch e3 = {.n = 1, .tokens = ids, .embd = emb};
    CHECK(mn_decode_batch(c, &e3, NULL, 0) == MN_EINVAL, "tokens and embeddings");
    CHECK(mn_kv_n_cells(c) == 0, "refused batches leave the cache empty");
    free(cap), free(out), free(cap1), free(out1), free(cap2);
    mn_context_free(c);

    /* Decode past several of its 512-key chunks (split decode, merged parts)
     * against the same token at the end of a batch (tiled kernel), and the same
     * decode on one thread, which must not change a bit. One prefill per thread
     * count: the batch of two's cells are dropped and the two tokens decoded one
     * at a time instead (the sanitized build reads about 20 tokens a second). */
    enum { NLONG = 1100 };
    const int32_t nv = mn_model_n_vocab(m);
    int32_t *lids = malloc(sizeof(int32_t) * NLONG);
    for (int i = 0; i < NLONG; i++) lids[i] = 200 + (i * 37) % 3000;
    float *lg_batch = malloc(sizeof(float) * (size_t)nv), *lg_dec = malloc(sizeof(float) * (size_t)nv);
    float *lg_one = malloc(sizeof(float) * (size_t)nv);
    float *lgs[2] = {lg_dec, lg_one};
    for (int th = 2; th >= 1; th--) {
        mn_context_params lp = mn_context_default_params();
        lp.n_ctx = NLONG + 4;
        lp.n_threads = th;
        mn_context *lc;
        CHECK(mn_context_create(m, &lp, &lc) == 0, "long context");
        CHECK(mn_decode(lc, lids, NLONG - 2, NULL, 0) == 0, "long prefix");
        /* the last two tokens as a batch of two: the same matrix products as a
         * decode (batches under 8 tokens keep the one-token path), tiled attention */
        if (th == 2)
            CHECK(mn_decode(lc, lids + NLONG - 2, 2, lg_batch, 0) == 0 && mn_kv_drop(lc, NLONG - 2, NLONG) == 0 &&
                      mn_kv_n_cells(lc) == NLONG - 2,
                  "long batch, then its cells dropped");
        CHECK(mn_decode(lc, lids + NLONG - 2, 1, NULL, 0) == 0 && mn_decode(lc, lids + NLONG - 1, 1, lgs[2 - th], 0) == 0,
              "long prefix + one token + one token");
        mn_context_free(lc);
    }
    double dl = 0, d1 = 0;
    for (int32_t k = 0; k < nv; k++) {
        dl = fmax(dl, fabs(lg_batch[k] - lg_dec[k]));
        d1 = fmax(d1, fabs(lg_dec[k] - lg_one[k]));
    }
    printf("  decode at %d cells vs the batch: max |logit diff| %.3g; 1 vs 2 threads %.3g\n", NLONG, dl, d1);
    /* rounding alone moves these logits (|max| ~28) by ~0.3-0.5: the unsplit row kernel
     * measured 0.318 against the same batch, and 0.477 here (AVX2) with the cell before
     * the last decoded alone rather than in the prefix's batch; merging the parts without their
     * maxima's weights (a broken combine) gives 3.9 */
    CHECK(dl < 1.0, "split decode differs from the batch by %.3g", dl);
    CHECK(d1 == 0, "split decode depends on the thread count (%.3g)", d1);
    free(lids), free(lg_batch), free(lg_dec), free(lg_one);
    mn_model_free(m);
    TEST_MAIN_END();
}
