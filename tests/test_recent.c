/* test_recent.c - a UIO memory with a raw recent window: the inference stream
 * and the trainer lay the decoder out the same way.
 *
 * The decoder of segment t reads [sinks | memories 0..t-R-1 | segments
 * t-R..t-1 raw | segment t]. The trainer computes that pass directly; the
 * stream keeps the last R complete segments as tokens, compresses a segment
 * only when it leaves the window and decodes the window again after the new
 * memory. Both must give the same loss on every scored token (up to the
 * stream's f16 KV cache), for R = 0, 1, 2, and reading a text without logits
 * must leave the stream in the same state as reading it with logits. A
 * prompt within the first segment gives the plain model's logits, bit for bit.
 */
#include <string.h>
#include <unistd.h>

#include "memory/memory.h"
#include "memory/uio.h"
#include "mnemo.h"
#include "test.h"
#include "tiny_llama.h"
#include "train/memtrain.h"

enum { LS = 16, MS = 4, SINKS = 2, NSEG = 6 };

/* A memory stream (no LoRA) with a recent window of R segments. */
static mn_stream *open_stream(mn_context *ctx, const float *embd, int R) {
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY, sp.n_sinks = SINKS;
    mn_stream *s = NULL;
    mn_uio_params up = {.l = LS, .m = MS, .mem_embd = embd, .recent = R};
    CHECK(mn_stream_create(ctx, &sp, &s) == 0 && mn_stream_attach_uio(s, &up, 1) == 0, "stream: %s",
          mn_last_error());
    return s;
}

/* sum of -log p(seg[j+1]) over rows j < l-1 of the segments t > R */
static double stream_loss(mn_context *ctx, const mn_model *m, const float *embd, int R, const int32_t *ids,
                          int chunked, int32_t *n_mem) {
    mn_stream *s = open_stream(ctx, embd, R);
    if (!s) return NAN;
    const int32_t V = mn_model_n_vocab(m);
    float *lg = malloc(sizeof(float) * (size_t)LS * (size_t)V);
    double nll = 0;
    for (int t = 0; t < NSEG; t++) {
        const int32_t *seg = ids + t * LS;
        const int want = t > R;
        if (!want && chunked) { /* odd pieces, no logits: the lazy path */
            CHECK(mn_stream_feed(s, seg, 5, NULL, 0) == 0 && mn_stream_feed(s, seg + 5, LS - 5, NULL, 0) == 0,
                  "feed: %s", mn_last_error());
            continue;
        }
        CHECK(mn_stream_feed(s, seg, LS, lg, 1) == 0, "feed: %s", mn_last_error());
        for (int j = 0; want && j + 1 < LS; j++) {
            const float *r = lg + (size_t)j * V;
            double mx = r[0], sum = 0;
            for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
            for (int v = 0; v < V; v++) sum += exp(r[v] - mx);
            nll -= r[seg[j + 1]] - mx - log(sum);
        }
    }
    *n_mem = mn_stream_n_memory(s);
    free(lg);
    mn_stream_free(s);
    return nll;
}

int main(void) {
    char dir[] = "/tmp/mnemo-recent-XXXXXX", path[600];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 48, .n_layer = 2, .n_ctx = 256, .seed = 5};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, path) == 0 && mn_model_load(path, &m) == 0, "tiny model: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    mn_tmodel *tm = NULL;
    CHECK(mn_tmodel_create(m, &tm) == 0, "tmodel: %s", mn_last_error());
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 256, cp.n_threads = 1;
    mn_context *ctx = NULL;
    CHECK(mn_context_create(m, &cp, &ctx) == 0, "context: %s", mn_last_error());
    const int C = mn_model_n_embd(m);
    float *embd = malloc(sizeof(float) * (size_t)C);
    uint64_t g = 99;
    for (int i = 0; i < C; i++) {
        g ^= g << 13, g ^= g >> 7, g ^= g << 17;
        embd[i] = (float)((double)(g >> 11) / 9007199254740992.0 - 0.5);
    }
    int32_t ids[NSEG * LS];
    for (int i = 0; i < NSEG * LS; i++) ids[i] = (int32_t)((i * 37 + (i * i) % 11) % 256);
    double prev = 0;
    for (int R = 0; R <= 2; R++) {
        mn_uio_tparams tp = {.l = LS, .m = MS, .n_sinks = SINKS, .recent = R, .mem_embd = embd, .ce_w = 1};
        mn_uio_trainer *tr = NULL;
        CHECK(mn_uio_trainer_create(tm, &tp, NSEG, &tr) == 0, "trainer: %s", mn_last_error());
        mn_tstep_stats st;
        CHECK(mn_uio_trainer_step(tr, ids, NSEG, MN_BPTT_FULL, 0, NULL, 0, &st) == 0, "step: %s", mn_last_error());
        int32_t nm1 = 0, nm2 = 0;
        const double ls = stream_loss(ctx, m, embd, R, ids, 0, &nm1);
        const double lc = stream_loss(ctx, m, embd, R, ids, 1, &nm2);
        const int64_t scored = (int64_t)(NSEG - 1 - R) * (LS - 1);
        CHECK(st.n_scored == scored, "R %d: trainer scored %lld, expected %lld", R, (long long)st.n_scored,
              (long long)scored);
        const double d = fabs(ls - st.loss) / (double)scored;
        printf("recent %d: trainer %.6f, stream %.6f per token (diff %.2g), %d memory slots\n", R,
               st.loss / (double)scored, ls / (double)scored, d, nm1);
        CHECK(d < 2e-3, "R %d: stream and trainer losses differ by %.3g per token", R, d);
        CHECK(fabs(ls - lc) < 1e-9 * fabs(ls) + 1e-9, "R %d: reading without logits changed the loss (%.9g vs %.9g)",
              R, ls, lc);
        CHECK(nm1 == (NSEG - R) * MS && nm2 == nm1, "R %d: %d / %d memory slots, expected %d", R, nm1, nm2,
              (NSEG - R) * MS);
        if (R > 0) CHECK(fabs(st.loss / scored - prev) > 1e-4, "R %d scores like R 0", R);
        prev = st.loss / (double)scored;
        mn_uio_trainer_free(tr);
    }
    /* short prompts unchanged: within the first segment(s) the memory stream is
     * the plain model, to the bit, with or without a recent window */
    {
        const int32_t V = mn_model_n_vocab(m), n = LS - 3;
        float *a = malloc(sizeof(float) * (size_t)V * n), *b = malloc(sizeof(float) * (size_t)V * n);
        mn_kv_clear(ctx);
        CHECK(mn_decode(ctx, ids, n, a, 1) == 0, "plain decode: %s", mn_last_error());
        for (int R = 0; R <= 1; R++) {
            mn_stream *s = open_stream(ctx, embd, R);
            CHECK(s && mn_stream_feed(s, ids, 5, b, 1) == 0 && mn_stream_feed(s, ids + 5, n - 5, b + (size_t)5 * V, 1) == 0,
                  "feed: %s", mn_last_error());
            CHECK(!memcmp(a, b, sizeof(float) * (size_t)V * n), "R %d: a prompt within one segment changed the logits",
                  R);
            mn_stream_free(s);
        }
        free(a), free(b);
    }
    free(embd);
    mn_context_free(ctx);
    mn_tmodel_free(tm);
    mn_model_free(m);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
