/* test_ppl.c - `mnemo ppl`'s computation against llama.cpp on 8192 tokens of an eval book.
 *
 * The fixture (scripts/make_logit_fixtures.py) ran llama-cpp-python on the same
 * text with the llama-perplexity protocol (ctx 512, second half of each window
 * scored). mnemo tokenizes with its own tokenizer, so this checks tokenizer and
 * forward pass together. Required: within 1% (the bound); the observed
 * gap is printed.
 */
#include <stdint.h>

#include "mnemo.h"
#include "model/tokenizer.h"
#include "test.h"

int main(void) {
    const char *path = test_model_path();
    CHECK(path != NULL, "the default model is missing (make model fetches it)");
    if (!path || getenv("MN_SANITIZED")) {
        if (path) TEST_SKIP("perplexity parity under the sanitizers (runs in the normal build)");
        TEST_MAIN_END();
    }
    size_t flen = 0, blen = 0;
    char *fix = test_slurp("tests/fixtures/ppl_smollm2.json", &flen);
    CHECK(fix != NULL, "fixture tests/fixtures/ppl_smollm2.json missing");
    const char *book_path = "data/eval/books/pg3261-news-from-nowhere.txt";
    char *book = test_slurp(book_path, &blen);
    if (!book) {
        CHECK(0, "%s not found (it is part of the repository)", book_path);
        free(fix);
        TEST_MAIN_END();
    }
    double ref = 0;
    const char *p = fix ? strstr(fix, "\"ppl\":") : NULL;
    CHECK(p && sscanf(p + 6, "%lf", &ref) == 1 && ref > 1, "fixture ppl");
    /* the book without its Gutenberg header and footer, as the fixture script cut it */
    char *text = book;
    char *s = strstr(book, "*** START OF");
    if (s && strchr(s, '\n')) text = strchr(s, '\n') + 1;
    char *e = strstr(text, "*** END OF");
    if (e) *e = 0;

    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load: %s", mn_last_error());
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    size_t tl = strlen(text);
    int32_t *ids = malloc(sizeof(int32_t) * (tl + 16));
    int64_t n = 0;
    CHECK(mn_tokenize(tok, text, tl, 0, 0, ids, (int64_t)tl + 16, &n) == 0, "tokenize: %s", mn_last_error());
    if (n > 8192) n = 8192;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 512;
    cp.n_threads = 2;
    mn_context *c;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    mn_ppl_result r;
    CHECK(mn_perplexity(c, ids, n, 512, 512, -1, NULL, NULL, &r) == 0, "ppl: %s", mn_last_error());
    double rel = fabs(r.ppl - ref) / ref;
    printf("  ppl %.4f vs llama.cpp %.4f (%.3f%% apart) over %lld tokens\n", r.ppl, ref, 100 * rel,
           (long long)r.tokens);
    CHECK(r.tokens == 4080, "scored %lld tokens, llama.cpp scored 4080", (long long)r.tokens);
    CHECK(rel < 0.01, "perplexity %.4f vs %.4f", r.ppl, ref);

    /* bad protocol arguments are clear errors */
    CHECK(mn_perplexity(c, ids, 600, 512, 512, -1, NULL, NULL, &r) == MN_ERANGE, "too few tokens");
    CHECK(mn_perplexity(c, ids, n, 1024, 1024, -1, NULL, NULL, &r) == MN_EINVAL, "window larger than context");
    mn_context_free(c);
    mn_model_free(m);
    free(ids);
    free(book);
    free(fix);
    TEST_MAIN_END();
}
