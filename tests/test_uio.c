/* test_uio.c - UIO segment compression plumbing (memory/uio.h).
 *
 * With no LoRA the transfer head is the base W_K, W_V, so the memory keys and
 * values of a segment must equal the K/V the encoder itself cached for its
 * memory tokens (keys rotated to the tokens' positions): this pins the capture
 * point (normalised attention input), the projections and the positions.
 * Also: one-thread and two-thread compression give identical memory; the
 * transfer-head LoRA changes keys only where it is installed; the decoder reads
 * the memory as KV cells; bad shapes are refused.
 */
#include <stdint.h>

#include "mnemo.h"
#include "memory/memory.h"
#include "memory/uio.h"
#include "test.h"

enum { LSEG = 64, MTOK = 8, KDIM = 192 };

static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return d / (mx > 0 ? mx : 1);
}

int main(void) {
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load");
    const int32_t C = mn_model_n_embd(m), L = mn_model_n_layer(m);
    float *mem_embd = malloc(sizeof(float) * (size_t)C);
    int32_t eos = mn_token_eos(mn_model_tokenizer(m));
    CHECK(mn_model_embed(m, &eos, 1, mem_embd) == 0, "EOS embedding");
    int32_t seg[LSEG];
    for (int i = 0; i < LSEG; i++) seg[i] = 300 + 41 * i;

    mn_uio_params p = {.l = LSEG, .m = MTOK, .mem_embd = mem_embd};
    mn_uio *u1, *u2;
    CHECK(mn_uio_create(m, &p, 1, &u1) == 0, "create: %s", mn_last_error());
    CHECK(mn_uio_create(m, &p, 2, &u2) == 0, "create 2 threads");
    const size_t nkv = (size_t)L * MTOK * KDIM;
    float *k1 = malloc(sizeof(float) * nkv), *v1 = malloc(sizeof(float) * nkv);
    float *k2 = malloc(sizeof(float) * nkv), *v2 = malloc(sizeof(float) * nkv);
    CHECK(mn_uio_compress(u1, seg, k1, v1) == 0, "compress: %s", mn_last_error());
    CHECK(mn_uio_compress(u2, seg, k2, v2) == 0, "compress 2 threads");
    CHECK(!memcmp(k1, k2, sizeof(float) * nkv) && !memcmp(v1, v2, sizeof(float) * nkv),
          "one-thread and two-thread compression differ");

    /* the encoder's own cells for the memory tokens (l .. l+m-1) */
    float *kr = malloc(sizeof(float) * nkv), *vr = malloc(sizeof(float) * nkv);
    CHECK(mn_kv_read(mn_uio_context(u1), LSEG, MTOK, kr, vr) == 0, "read encoder cells");
    CHECK(mn_kv_pos(mn_uio_context(u1), LSEG) == LSEG / MTOK, "memory token 0 at position l/m");
    /* rotate the memory keys to the same positions through a decoder context */
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 128;
    cp.n_threads = 2;
    mn_context *dec;
    CHECK(mn_context_create(m, &cp, &dec) == 0, "decoder");
    int32_t mpos[MTOK];
    for (int i = 0; i < MTOK; i++) mpos[i] = (i + 1) * (LSEG / MTOK);
    CHECK(mn_kv_append(dec, MTOK, mpos, k1, v1, 0) == 0, "append");
    float *kd = malloc(sizeof(float) * nkv), *vd = malloc(sizeof(float) * nkv);
    mn_kv_read(dec, 0, MTOK, kd, vd);
    double ek = rel_diff(kd, kr, nkv), ev = rel_diff(vd, vr, nkv);
    printf("  transfer head (no LoRA) vs encoder's own memory-token K/V: keys %.2g, values %.2g (relative)\n", ek,
           ev);
    CHECK(ek < 2e-3 && ev < 2e-3, "memory K/V differ from the encoder's: %.3g %.3g", ek, ev);

    /* a transfer-head LoRA on K (layer 3 only) changes exactly those keys */
    mn_lora *lk = calloc((size_t)L, sizeof *lk);
    int R = 4;
    float *A = malloc(sizeof(float) * (size_t)R * C), *B = malloc(sizeof(float) * (size_t)KDIM * R);
    for (int i = 0; i < R * C; i++) A[i] = (float)((i % 7) - 3) * 0.01f;
    for (int i = 0; i < KDIM * R; i++) B[i] = (float)((i % 5) - 2) * 0.1f;
    lk[3] = (mn_lora){A, B, R};
    mn_lora_set tr = {.scale = 2.0f, .k = lk};
    mn_uio_params p2 = p;
    p2.transfer = &tr;
    mn_uio *u3;
    CHECK(mn_uio_create(m, &p2, 2, &u3) == 0, "create with transfer LoRA");
    CHECK(mn_uio_compress(u3, seg, k2, v2) == 0, "compress with transfer LoRA");
    size_t per = (size_t)MTOK * KDIM;
    int others_same = !memcmp(k2, k1, sizeof(float) * 3 * per) &&
                      !memcmp(k2 + 4 * per, k1 + 4 * per, sizeof(float) * (nkv - 4 * per)) &&
                      !memcmp(v2, v1, sizeof(float) * nkv);
    CHECK(others_same, "transfer LoRA on layer 3 keys changed something else");
    CHECK(rel_diff(k2 + 3 * per, k1 + 3 * per, per) > 1e-3, "transfer LoRA had no effect");
    mn_uio_free(u3);

    /* the decoder reads memory cells, then local tokens after them */
    mn_kv_clear(dec);
    int32_t slots[MTOK];
    for (int i = 0; i < MTOK; i++) slots[i] = i;
    CHECK(mn_kv_append(dec, MTOK, slots, k1, v1, 0) == 0, "memory at slots 0..m-1");
    float *logits = malloc(sizeof(float) * (size_t)mn_model_n_vocab(m));
    CHECK(mn_decode(dec, seg, 8, logits, 0) == 0 && mn_kv_pos(dec, MTOK) == MTOK, "local tokens after memory");
    int finite = 1;
    for (int i = 0; i < mn_model_n_vocab(m); i++) finite &= isfinite(logits[i]);
    CHECK(finite, "logits finite");
    CHECK(mn_context_kv_bytes(dec) == (size_t)(MTOK + 8) * L * KDIM * 4, "kv bytes");

    /* memory-mode stream: 300 tokens through segments of 64 -> 4 segments compressed */
    {
        mn_context_params sc = mn_context_default_params();
        sc.n_ctx = 128;
        sc.n_threads = 2;
        mn_context *c;
        CHECK(mn_context_create(m, &sc, &c) == 0, "stream context");
        mn_stream_params sp = mn_stream_default_params();
        sp.mode = MN_MODE_MEMORY;
        sp.n_sinks = 0; /* the published UIO layout: [memory | local] */
        mn_stream *s;
        CHECK(mn_stream_create(c, &sp, &s) == 0, "memory stream");
        int32_t ids[300];
        for (int i = 0; i < 300; i++) ids[i] = 1000 + (i * 37) % 20000;
        CHECK(mn_stream_feed(s, ids, 10, NULL, 0) == MN_EINVAL, "memory mode without a compressor");
        CHECK(mn_stream_attach_uio(s, &p, 2) == 0, "attach: %s", mn_last_error());
        int ok = 1;
        for (int i = 0; i < 300 && ok; i += 30) ok = mn_stream_feed(s, ids + i, 30, NULL, 0) == 0;
        CHECK(ok, "feed: %s", mn_last_error());
        int32_t cells = mn_kv_n_cells(c);
        CHECK(mn_stream_n_memory(s) == 4 * MTOK && cells == 4 * MTOK + (300 - 4 * LSEG), "memory %d cells %d",
              mn_stream_n_memory(s), cells);
        int contiguous = 1;
        for (int32_t j = 0; j < cells; j++) contiguous &= mn_kv_pos(c, j) == j;
        CHECK(contiguous, "memory slots then local tokens at contiguous positions");
        {
            /* the same text with logits wanted for every piece (so every segment
             * is also decoded, not only encoded) leaves the same cache */
            mn_context *c2;
            mn_stream *s2;
            CHECK(mn_context_create(m, &sc, &c2) == 0 && mn_stream_create(c2, &sp, &s2) == 0 &&
                      mn_stream_attach_uio(s2, &p, 2) == 0,
                  "second stream");
            float *lg = malloc(sizeof(float) * (size_t)mn_model_n_vocab(m));
            int ok2 = 1;
            for (int i = 0; i < 300 && ok2; i += 30) ok2 = mn_stream_feed(s2, ids + i, 30, lg, 0) == 0;
            const size_t ce = (size_t)cells * L * KDIM;
            float *a1 = malloc(sizeof(float) * ce), *a2 = malloc(sizeof(float) * ce);
            float *b1 = malloc(sizeof(float) * ce), *b2 = malloc(sizeof(float) * ce);
            CHECK(ok2 && mn_kv_n_cells(c2) == cells && mn_kv_read(c, 0, cells, a1, b1) == 0 &&
                      mn_kv_read(c2, 0, cells, a2, b2) == 0 && !memcmp(a1, a2, sizeof(float) * ce) &&
                      !memcmp(b1, b2, sizeof(float) * ce),
                  "skipping the decode of compressed segments changed the cache");
            free(lg), free(a1), free(a2), free(b1), free(b2);
            mn_stream_free(s2);
            mn_context_free(c2);
        }
        /* the first segment's memory equals compressing it directly */
        float *kk = malloc(sizeof(float) * nkv);
        mn_kv_read(c, 0, MTOK, kk, NULL);
        mn_uio_compress(u1, ids, k2, v2);
        mn_kv_clear(dec);
        mn_kv_append(dec, MTOK, slots, k2, v2, 0);
        mn_kv_read(dec, 0, MTOK, kd, NULL);
        CHECK(!memcmp(kk, kd, sizeof(float) * nkv), "streamed memory differs from direct compression");
        free(kk);
        mn_ppl_result r;
        CHECK(mn_stream_perplexity(s, ids, 300, 25, 1, NULL, NULL, &r) == 0 && isfinite(r.ppl), "memory-mode ppl");
        /* with 4 sink tokens: [4 raw | memory | local], contiguous; the sinks are
         * exactly the first 4 tokens' cells */
        mn_stream_free(s);
        sp.n_sinks = 4;
        CHECK(mn_stream_create(c, &sp, &s) == 0 && mn_stream_attach_uio(s, &p, 2) == 0, "memory stream + sinks");
        ok = mn_stream_feed(s, ids, 300, NULL, 0) == 0;
        cells = mn_kv_n_cells(c);
        CHECK(ok && cells == 4 + 4 * MTOK + (300 - 4 * LSEG), "cells with sinks %d", cells);
        contiguous = 1;
        for (int32_t j = 0; j < cells; j++) contiguous &= mn_kv_pos(c, j) == j;
        CHECK(contiguous, "sinks, memory, local at contiguous positions");
        float *ks = malloc(sizeof(float) * (size_t)L * 4 * KDIM), *kf = malloc(sizeof(float) * (size_t)L * 4 * KDIM);
        mn_kv_read(c, 0, 4, ks, NULL);
        mn_kv_clear(dec);
        mn_decode(dec, ids, 4, NULL, 0);
        mn_kv_read(dec, 0, 4, kf, NULL);
        CHECK(!memcmp(ks, kf, sizeof(float) * (size_t)L * 4 * KDIM), "sink cells are the first tokens' own");
        free(ks), free(kf);
        /* the position budget: a context of l + m + ... fills up */
        int32_t many[2000];
        for (int i = 0; i < 2000; i++) many[i] = ids[i % 300];
        mn_stream_reset(s);
        CHECK(mn_stream_feed(s, many, 2000, NULL, 0) == MN_ERANGE && strstr(mn_last_error(), "budget"), "budget: %s",
              mn_last_error());
        mn_stream_free(s);
        mn_context_free(c);
    }

    /* a document of 3.5 segments: parallel compression equals one thread, and
     * the partial tail gets ceil(32 / 8) = 4 slots */
    {
        int32_t doc[224];
        for (int i = 0; i < 224; i++) doc[i] = 700 + (i * 53) % 30000;
        float *ka, *va, *kb, *vb;
        int32_t Ma, Mb;
        CHECK(mn_uio_compress_doc(m, &p, doc, 224, 1, &ka, &va, &Ma) == 0, "doc 1 thread: %s", mn_last_error());
        CHECK(mn_uio_compress_doc(m, &p, doc, 224, 2, &kb, &vb, &Mb) == 0, "doc 2 threads");
        CHECK(Ma == 3 * MTOK + 4 && Mb == Ma, "slots %d %d", Ma, Mb);
        size_t e = (size_t)L * (size_t)Ma * KDIM;
        CHECK(!memcmp(ka, kb, sizeof(float) * e) && !memcmp(va, vb, sizeof(float) * e),
              "parallel document compression differs from one thread");
        /* segment 1's slots equal compressing that segment alone */
        mn_uio_compress(u1, doc + LSEG, k2, v2);
        int same = 1;
        for (int li = 0; li < L && same; li++)
            same = !memcmp(ka + ((size_t)li * Ma + MTOK) * KDIM, k2 + (size_t)li * MTOK * KDIM,
                           sizeof(float) * MTOK * KDIM);
        CHECK(same, "document slots of segment 1 differ from its own compression");
        free(ka), free(va), free(kb), free(vb);
    }

    /* shapes */
    mn_uio *bad = NULL;
    mn_uio_params pb = p;
    pb.m = 7;
    CHECK(mn_uio_create(m, &pb, 1, &bad) == MN_EINVAL && !bad && strstr(mn_last_error(), "divide"), "m must divide l");
    pb = p;
    pb.mem_embd = NULL;
    CHECK(mn_uio_create(m, &pb, 1, &bad) == MN_EINVAL, "embedding required");

    free(lk), free(A), free(B), free(logits);
    free(k1), free(v1), free(k2), free(v2), free(kr), free(vr), free(kd), free(vd), free(mem_embd);
    mn_context_free(dec);
    mn_uio_free(u1);
    mn_uio_free(u2);
    mn_model_free(m);
    TEST_MAIN_END();
}
