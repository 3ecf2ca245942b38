/* test_stream.c - full / truncate / sinks streams (the long-context baselines).
 *
 * Exactness: a stream that never evicts equals one plain decode; streamed
 * perplexity in full mode equals perplexity computed from one decode of all
 * tokens. Invariants: the cache stays within the window with contiguous
 * positions, sinks stay put. Behaviour (StreamingLLM's finding, which could
 * fail): on a long text, keeping 4 sink tokens gives clearly lower perplexity
 * than plain truncation of the same window.
 */
#include <stdint.h>

#include "mnemo.h"
#include "test.h"

static int32_t *book_tokens(const mn_model *m, int64_t *n) {
    FILE *f = fopen("data/eval/books/pg14851.txt", "rb");
    if (!f) return NULL;
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (len + 16));
    /* skip the Gutenberg header region */
    mn_tokenize(mn_model_tokenizer(m), buf + 20000, len - 20000, 0, 0, ids, (int64_t)len + 16, n);
    return ids;
}

int main(void) {
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load");
    int64_t n_book = 0;
    int32_t *ids = book_tokens(m, &n_book);
    if (!ids) {
        CHECK(0, "data/eval/books/pg14851.txt not found (it is part of the repository)");
        mn_model_free(m);
        TEST_MAIN_END();
    }
    const int32_t V = mn_model_n_vocab(m);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 2;
    mn_context *c;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");

    /* parameters */
    mn_stream *s = NULL;
    mn_stream_params sp = mn_stream_default_params();
    sp.window = 512;
    CHECK(mn_stream_create(c, &sp, &s) == MN_EINVAL && !s, "window larger than the context");
    sp.mode = MN_MODE_SINKS;
    sp.window = 4;
    CHECK(mn_stream_create(c, &sp, &s) == MN_EINVAL, "sinks fill the window");
    CHECK(mn_mode_parse("sinks") == MN_MODE_SINKS && mn_mode_parse("memory") == MN_MODE_MEMORY && mn_mode_parse("x") == -1, "mode names");

    /* exactness: full-mode stream ppl (pieces of 48) == one decode of all tokens */
    const int64_t N = 240;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)N);
    mn_kv_clear(c);
    CHECK(mn_decode(c, ids, (int32_t)N, lg, 1) == 0, "decode");
    double nll = 0;
    for (int64_t j = 0; j + 1 < N; j++) {
        const float *r = lg + (size_t)j * (size_t)V;
        float mx = r[0];
        for (int32_t v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
        double sum = 0;
        for (int32_t v = 0; v < V; v++) sum += exp((double)(r[v] - mx));
        nll -= (double)(r[ids[j + 1]] - mx) - log(sum);
    }
    double ppl_direct = exp(nll / (double)(N - 1));
    sp = mn_stream_default_params();
    CHECK(mn_stream_create(c, &sp, &s) == 0, "full stream");
    mn_ppl_result res;
    CHECK(mn_stream_perplexity(s, ids, N, 48, 1, NULL, NULL, &res) == 0, "stream ppl: %s", mn_last_error());
    CHECK(res.tokens == N - 1, "scored %lld", (long long)res.tokens);
    CHECK(fabs(res.ppl - ppl_direct) / ppl_direct < 1e-4, "full stream %.5f vs direct %.5f", res.ppl, ppl_direct);
    printf("  full-mode stream ppl %.4f, direct %.4f\n", res.ppl, ppl_direct);
    /* full mode refuses to overflow, with advice */
    mn_stream_reset(s);
    CHECK(mn_stream_feed(s, ids, 300, NULL, 0) == MN_ERANGE && strstr(mn_last_error(), "--mode"), "full overflow: %s",
          mn_last_error());
    mn_stream_free(s);

    /* truncate with a window that never fills == full */
    sp.mode = MN_MODE_TRUNCATE;
    sp.window = 256;
    CHECK(mn_stream_create(c, &sp, &s) == 0, "truncate stream");
    CHECK(mn_stream_perplexity(s, ids, N, 48, 1, NULL, NULL, &res) == 0, "truncate ppl");
    CHECK(fabs(res.ppl - ppl_direct) / ppl_direct < 1e-4, "unfilled truncate %.5f vs %.5f", res.ppl, ppl_direct);
    mn_stream_free(s);

    /* invariants while streaming 700 tokens through 96 cells */
    for (int mode = MN_MODE_TRUNCATE; mode <= MN_MODE_SINKS; mode++) {
        sp.mode = (mn_mode)mode;
        sp.window = 96;
        sp.n_sinks = 4;
        CHECK(mn_stream_create(c, &sp, &s) == 0, "stream");
        int ok = 1;
        for (int64_t i = 0; i < 700 && ok; i += 50) {
            ok = mn_stream_feed(s, ids + i, 50, NULL, 0) == 0;
            int32_t cells = mn_kv_n_cells(c);
            ok = ok && cells <= 96;
            for (int32_t j = 0; j < cells && ok; j++) ok = mn_kv_pos(c, j) == j;
        }
        CHECK(ok, "%s: window bound and contiguous positions", mn_mode_name(sp.mode));
        CHECK(mn_stream_n_seen(s) == 700 && mn_stream_n_evicted(s) == 700 - mn_kv_n_cells(c), "%s: counts %lld %lld",
              mn_mode_name(sp.mode), (long long)mn_stream_n_seen(s), (long long)mn_stream_n_evicted(s));
        mn_stream_free(s);
    }

    /* StreamingLLM: sinks beat truncation once the window slides */
    if (getenv("MN_SANITIZED")) {
        TEST_SKIP("sinks vs truncate perplexity under the sanitizers (runs in the normal build)");
    } else if (n_book > 1024) {
        double ppl[3] = {0};
        for (int mode = MN_MODE_TRUNCATE; mode <= MN_MODE_SINKS; mode++) {
            sp.mode = (mn_mode)mode;
            sp.window = 128;
            CHECK(mn_stream_create(c, &sp, &s) == 0, "stream");
            CHECK(mn_stream_perplexity(s, ids, 1024, 32, 128, NULL, NULL, &res) == 0, "ppl");
            ppl[mode] = res.ppl;
            mn_stream_free(s);
        }
        printf("  1024 tokens, window 128: truncate ppl %.2f, sinks ppl %.2f\n", ppl[1], ppl[2]);
        CHECK(ppl[MN_MODE_SINKS] * 1.3 < ppl[MN_MODE_TRUNCATE], "sinks %.2f vs truncate %.2f", ppl[2], ppl[1]);
    }
    free(lg);
    free(ids);
    mn_context_free(c);
    mn_model_free(m);
    TEST_MAIN_END();
}
