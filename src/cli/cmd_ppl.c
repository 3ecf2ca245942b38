/* cmd_ppl.c - `mnemo ppl`: perplexity with llama-perplexity's protocol (mn_perplexity). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "memory/memory.h"

static void progress(void *user, int64_t windows, int64_t tokens, double ppl) {
    fprintf(stderr, "\r[%lld] ppl %.4f after %lld tokens", (long long)windows, ppl, (long long)tokens);
    fflush(stderr);
}

/* Long-context perplexity: the whole text as one stream under a mode. */
static int stream_ppl(mn_model *m, const int32_t *ids, int64_t n, int mode, const char *adapter_path, long n_ctx,
                      long window, long sinks, int sinks_given, long chunk, long score_from, long threads,
                      long max_memory, int json) {
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = (mn_mode)mode;
    sp.n_sinks = (int32_t)sinks;
    mn_adapter *ad = NULL;
    mn_memory_binding bind;
    memset(&bind, 0, sizeof bind);
    if (mode == MN_MODE_MEMORY) {
        if (mn_adapter_load(m, adapter_path, &ad)) return cli_fail("adapter");
        if (mn_memory_bind(m, ad, &bind)) {
            mn_adapter_free(ad);
            return cli_fail("adapter");
        }
        /* a beacon adapter keeps the raw sinks it was made with, unless --sinks says otherwise */
        if (bind.kind == MN_COMP_BEACON) {
            if (sinks_given) bind.beacon.params.sinks = (int32_t)sinks;
            sinks = bind.beacon.params.sinks;
        }
        /* memory for the whole text plus one segment/window of local tokens;
         * --ctx may go past the trained positions (for timing) */
        long need = mn_memory_n_ctx(&bind, n, (int32_t)sinks);
        if (!n_ctx) n_ctx = need < mn_model_n_ctx_train(m) ? need : mn_model_n_ctx_train(m);
        sp.window = (int32_t)n_ctx;
        sp.n_sinks = (int32_t)sinks;
        int32_t seg = bind.kind == MN_COMP_BEACON ? bind.beacon.params.window
                      : bind.kind == MN_COMP_UIO  ? bind.uio.params.l
                                                  : bind.summary.params.l;
        if (!chunk) chunk = seg / 4 > 0 ? seg / 4 : 1;
    } else if (mode == MN_MODE_FULL) {
        if (!n_ctx) n_ctx = n < mn_model_n_ctx_train(m) ? (long)n : mn_model_n_ctx_train(m);
        if (n > n_ctx) {
            fprintf(stderr,
                    "mnemo: full attention holds %ld tokens but the text has %lld; use --max-tokens %ld, a larger "
                    "--ctx, or --mode truncate|sinks\n",
                    n_ctx, (long long)n, n_ctx);
            return 1;
        }
        sp.window = (int32_t)n_ctx;
    } else {
        n_ctx = window;
        sp.window = (int32_t)window;
    }
    if (!chunk) chunk = sp.window / 8 > 0 ? sp.window / 8 : 1;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_batch = (int32_t)(chunk < 512 ? chunk : 512);
    cp.n_threads = (int)threads;
    mn_context *ctx;
    if (mn_context_create(m, &cp, &ctx)) return cli_fail("context");
    mn_stream *s = NULL;
    if (mn_stream_create(ctx, &sp, &s) || (ad && mn_stream_attach(s, &bind, (int)threads)) ||
        mn_stream_set_memory_cap(s, (int32_t)max_memory)) {
        int rc = cli_fail("stream");
        mn_stream_free(s);
        mn_context_free(ctx);
        mn_memory_unbind(&bind);
        mn_adapter_free(ad);
        return rc;
    }
    mn_ppl_result res;
    double t0 = cli_now();
    int rc = 0;
    if (mn_stream_perplexity(s, ids, n, (int32_t)chunk, score_from, json ? NULL : progress, NULL, &res)) {
        rc = cli_fail("perplexity");
    } else {
        double secs = cli_now() - t0;
        size_t kv = mn_context_kv_bytes(ctx);
        if (json)
            printf("{\"mode\": \"%s\", \"window\": %d, \"sinks\": %d, \"chunk\": %ld, \"ppl\": %.6f, "
                   "\"ppl_err\": %.6f, \"nll\": %.6f, \"tokens\": %lld, \"text_tokens\": %lld, \"seconds\": %.3f, "
                   "\"kv_bytes\": %zu, \"compressor\": \"%s\", \"memory_slots\": %d, \"peak_rss_kib\": %ld}\n",
                   mn_mode_name(sp.mode), sp.window, mode == MN_MODE_SINKS || mode == MN_MODE_MEMORY ? sp.n_sinks : 0,
                   chunk, res.ppl,
                   res.ppl_err, res.nll, (long long)res.tokens, (long long)n, secs, kv,
                   ad ? mn_compressor_name(bind.kind) : "none", mn_stream_n_memory(s), cli_peak_rss_kib());
        else
            fprintf(stderr, "\n%s (window %d): ppl = %.4f +/- %.4f over %lld tokens in %.1f s, KV %.1f MiB\n",
                    mn_mode_name(sp.mode), sp.window, res.ppl, res.ppl_err, (long long)res.tokens, secs,
                    kv / 1048576.0);
    }
    mn_stream_free(s);
    mn_context_free(ctx);
    mn_memory_unbind(&bind);
    mn_adapter_free(ad);
    return rc;
}

int cmd_ppl(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    long n_ctx = 512, stride = 0, threads = 0, max_tokens = 0, batch = 512;
    long window = 1024, chunk = 0, sinks = 4, score_from = 1, max_memory = 0;
    int json = 0, mode = -1, ctx_given = 0, sinks_given = 0;
    const char *adapter = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo ppl [-m FILE] -f TEXTFILE [--ctx N] [--stride S] [--mode M --window N] [--json]\n\n"
                   "Perplexity of the model on TEXTFILE, computed as llama-perplexity does: windows of N\n"
                   "tokens, each scored on its second half.\n\n"
                   "  --ctx N         window length (default 512)\n"
                   "  --stride S      window start spacing (default N); S < N/2 scores the last S tokens\n"
                   "\nLong-context modes (the text is read as one stream; every token after --score-from\n"
                   "is scored once):\n"
                   "  --mode M        full | truncate | sinks (attention sinks + recent window) | memory\n"
                   "  -a ADAPTER      compressor adapter for --mode memory (UIO, beacon or summary; see\n"
                   "                  'mnemo adapter init'); --ctx then sets the cells (default: what the\n"
                   "                  text needs, at most the model's trained context)\n"
                   "  --window N      cells kept by truncate/sinks (default 1024)\n"
                   "  --sinks K       leading tokens kept raw in sinks and memory modes (default 4; a beacon\n"
                   "                  adapter's own sink count unless given)\n"
                   "  --chunk C       tokens fed per step (default window/8; 1 = token by token)\n"
                   "  --max-memory N  memory mode: keep only the newest N memory slots (default: all)\n"
                   "  --score-from I  first token index scored (default 1)\n\n"
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
            ctx_given = 1;
            i++;
        } else if (!strcmp(a, "--mode")) {
            if (!v || (mode = mn_mode_parse(v)) < 0)
                return cli_usage_error("ppl", "--mode must be full, truncate, sinks or memory");
            i++;
        } else if (!strcmp(a, "-a") || !strcmp(a, "--adapter")) {
            if (!v) return cli_usage_error("ppl", "-a needs a value");
            adapter = v;
            i++;
        } else if (!strcmp(a, "--window")) {
            if (cli_parse_int("ppl", a, v, 8, 1 << 22, &window)) return 2;
            i++;
        } else if (!strcmp(a, "--sinks")) {
            if (cli_parse_int("ppl", a, v, 0, 1 << 20, &sinks)) return 2;
            sinks_given = 1;
            i++;
        } else if (!strcmp(a, "--max-memory")) {
            if (cli_parse_int("ppl", a, v, 0, 1 << 22, &max_memory)) return 2;
            i++;
        } else if (!strcmp(a, "--chunk")) {
            if (cli_parse_int("ppl", a, v, 1, 1 << 22, &chunk)) return 2;
            i++;
        } else if (!strcmp(a, "--score-from")) {
            if (cli_parse_int("ppl", a, v, 1, 1L << 40, &score_from)) return 2;
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
    if (mode == MN_MODE_MEMORY && !(adapter = cli_adapter_path(adapter)))
        return cli_usage_error("ppl", "--mode memory needs -a ADAPTER (no shipped adapter found; make one with "
                                      "'mnemo adapter init')");
    if (adapter && mode != MN_MODE_MEMORY) return cli_usage_error("ppl", "-a ADAPTER is used with --mode memory");
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
    if (mode >= 0) {
        rc = stream_ppl(m, ids, n, mode, adapter, ctx_given ? n_ctx : 0, window, sinks, sinks_given, chunk,
                        score_from, threads, max_memory, json);
        free(ids);
        mn_model_free(m);
        return rc;
    }
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
