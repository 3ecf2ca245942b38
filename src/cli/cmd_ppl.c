/* cmd_ppl.c - `mnemo ppl`: perplexity with llama-perplexity's protocol (mn_perplexity). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void progress(void *user, int64_t windows, int64_t tokens, double ppl) {
    fprintf(stderr, "\r[%lld] ppl %.4f after %lld tokens", (long long)windows, ppl, (long long)tokens);
    fflush(stderr);
}

int cmd_ppl(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    long n_ctx = 512, stride = 0, threads = 0, max_tokens = 0, batch = 512;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo ppl [-m FILE] -f TEXTFILE [--ctx N] [--stride S] [--json]\n\n"
                   "Perplexity of the model on TEXTFILE, computed as llama-perplexity does: windows of N\n"
                   "tokens, each scored on its second half.\n\n"
                   "  --ctx N         window length (default 512)\n"
                   "  --stride S      window start spacing (default N); S < N/2 scores the last S tokens\n"
                   "  --max-tokens N  only use the first N tokens of the text\n"
                   "  -b N            batch size (default 512)\n"
                   "  --json          print one JSON object {ppl, tokens, seconds, ...}\n"
                   "  -t N            threads (default: all cores)\n"
                   "  -m FILE         model GGUF (default: " MN_DEFAULT_MODEL ")\n");
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) return cli_usage_error("ppl", "-m needs a value");
            model = v;
            i++;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!v) return cli_usage_error("ppl", "-f needs a value");
            file = v;
            i++;
        } else if (!strcmp(a, "--ctx") || !strcmp(a, "-c")) {
            if (cli_parse_int("ppl", a, v, 4, 1 << 22, &n_ctx)) return 2;
            i++;
        } else if (!strcmp(a, "--stride")) {
            if (cli_parse_int("ppl", a, v, 1, 1 << 22, &stride)) return 2;
            i++;
        } else if (!strcmp(a, "--max-tokens")) {
            if (cli_parse_int("ppl", a, v, 1, 1L << 40, &max_tokens)) return 2;
            i++;
        } else if (!strcmp(a, "-b")) {
            if (cli_parse_int("ppl", a, v, 1, 1 << 16, &batch)) return 2;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_int("ppl", a, v, 0, 512, &threads)) return 2;
            i++;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else {
            return cli_usage_error("ppl", "unknown option '%s'", a);
        }
    }
    if (!file) return cli_usage_error("ppl", "give the text with -f TEXTFILE");
    if (stride == 0) stride = n_ctx;
    if (stride > n_ctx) return cli_usage_error("ppl", "--stride must not exceed --ctx");
    char *text;
    size_t len;
    if (cli_read_file(file, &text, &len)) return 1;
    mn_model *m;
    if (cli_load_model(model, &m)) {
        free(text);
        return 1;
    }
    if (n_ctx > mn_model_n_ctx_train(m))
        fprintf(stderr, "mnemo: warning: --ctx %ld exceeds the model's trained context %d\n", n_ctx,
                mn_model_n_ctx_train(m));
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    int add_bos = mn_tokenizer_adds_bos(tok);
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = cli_tokenize(m, text, len, add_bos, 0, &ids, &n);
    free(text);
    if (rc) {
        mn_model_free(m);
        return 1;
    }
    if (max_tokens && n > max_tokens) n = max_tokens;
    if (n < 2 * n_ctx) {
        fprintf(stderr, "mnemo: the text has %lld tokens; ppl needs at least 2 x --ctx = %ld\n", (long long)n,
                2 * n_ctx);
        free(ids);
        mn_model_free(m);
        return 1;
    }
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_batch = (int32_t)(batch < n_ctx ? batch : n_ctx);
    cp.n_threads = (int)threads;
    mn_context *ctx;
    if (mn_context_create(m, &cp, &ctx)) {
        free(ids);
        mn_model_free(m);
        return cli_fail("context");
    }
    mn_ppl_result res;
    double t0 = cli_now();
    if (mn_perplexity(ctx, ids, n, (int32_t)n_ctx, (int32_t)stride, add_bos ? mn_token_bos(tok) : -1,
                      json ? NULL : progress, NULL, &res)) {
        rc = cli_fail("perplexity");
        goto done;
    }
    double secs = cli_now() - t0;
    if (json)
        printf("{\"ppl\": %.6f, \"ppl_err\": %.6f, \"nll\": %.6f, \"tokens\": %lld, \"windows\": %lld, \"ctx\": %ld, "
               "\"stride\": %ld, \"seconds\": %.3f, \"text_tokens\": %lld}\n",
               res.ppl, res.ppl_err, res.nll, (long long)res.tokens, (long long)res.windows, n_ctx, stride, secs,
               (long long)n);
    else
        fprintf(stderr, "\nppl = %.4f +/- %.4f over %lld scored tokens (%lld windows of %ld) in %.1f s\n", res.ppl,
                res.ppl_err, (long long)res.tokens, (long long)res.windows, n_ctx, secs);
done:
    free(ids);
    mn_context_free(ctx);
    mn_model_free(m);
    return rc;
}
