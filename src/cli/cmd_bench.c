/* cmd_bench.c - `mnemo bench`: prefill and decode speed, as llama-bench measures them.
 *
 * pp: P prompt tokens in one mn_decode from an empty cache; tg: N tokens decoded
 * one at a time from an empty cache, or after D tokens of context (-d, as
 * llama-bench's depth; the D tokens' prefill is not timed). Each is repeated -r times after one
 * warm-up run; the mean and standard deviation of tokens/s are reported. The
 * tokens are a fixed pseudo-random sequence (speed does not depend on them).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void stats(const double *x, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    long n_prompt = 512, n_gen = 128, threads = 0, reps = 3, depth = 0, n_batch = 0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo bench [-m FILE] [-p 512] [-n 128] [-d 0] [-b B] [-t N] [-r 3] [--json]\n\n"
                   "Measures prefill (-p tokens in one batch) and decode (-n tokens one by one) speed, each\n"
                   "from an empty cache, repeated -r times after a warm-up; also reports peak RSS.\n"
                   "  -d D   decode after D tokens of context (their prefill is not timed)\n"
                   "  -b B   forward batch (default: the prompt in one); a model with sliding-window\n"
                   "         layers keeps window + B cells in them, so -b 512 shows its cache saving\n");
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) return cli_usage_error("bench", "-m needs a value");
            model = v;
            i++;
        } else if (!strcmp(a, "-p")) {
            if (cli_parse_int("bench", a, v, 0, 1 << 20, &n_prompt)) return 2;
            i++;
        } else if (!strcmp(a, "-n")) {
            if (cli_parse_int("bench", a, v, 0, 1 << 20, &n_gen)) return 2;
            i++;
        } else if (!strcmp(a, "-d")) {
            if (cli_parse_int("bench", a, v, 0, 1 << 20, &depth)) return 2;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_int("bench", a, v, 0, 512, &threads)) return 2;
            i++;
        } else if (!strcmp(a, "-b")) {
            if (cli_parse_int("bench", a, v, 1, 1 << 20, &n_batch)) return 2;
            i++;
        } else if (!strcmp(a, "-r")) {
            if (cli_parse_int("bench", a, v, 1, 1000, &reps)) return 2;
            i++;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else {
            return cli_usage_error("bench", "unknown option '%s'", a);
        }
    }
    mn_model *m;
    if (cli_load_model(model, &m)) return 1;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)(n_prompt > n_gen + depth ? n_prompt : n_gen + depth) + 1;
    cp.n_batch = (int32_t)(n_batch > 0 ? n_batch : n_prompt > 0 ? n_prompt : 512);
    cp.n_threads = (int)threads;
    mn_context *ctx;
    if (mn_context_create(m, &cp, &ctx)) {
        mn_model_free(m);
        return cli_fail("context");
    }
    const int32_t V = mn_model_n_vocab(m);
    const long n_toks = (n_prompt > depth ? n_prompt : depth) + n_gen + 1;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_toks);
    float *logits = malloc(sizeof(float) * (size_t)V);
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    double kv_read = 0; /* the KV bytes a decode step reads, averaged over the steps */
    if (!toks || !logits || !pp || !tg) return cli_fail("out of memory");
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (long i = 0; i < n_toks; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        toks[i] = (int32_t)(s % (uint64_t)V);
    }
    int rc = 0;
    for (long r = -1; r < reps && !rc; r++) { /* r = -1: warm-up */
        if (n_prompt > 0) {
            mn_kv_clear(ctx);
            double t0 = cli_now();
            if (mn_decode(ctx, toks, (int32_t)n_prompt, logits, 0)) rc = cli_fail("decode");
            if (r >= 0) pp[r] = n_prompt / (cli_now() - t0);
        }
        if (n_gen > 0 && !rc) {
            mn_kv_clear(ctx);
            if (depth > 0 && mn_decode(ctx, toks, (int32_t)depth, logits, 0)) rc = cli_fail("decode");
            const double kv0 = (double)mn_context_kv_bytes(ctx);
            double t0 = cli_now();
            for (long i = 0; i < n_gen && !rc; i++)
                if (mn_decode(ctx, toks + depth + i, 1, logits, 0)) rc = cli_fail("decode");
            if (r >= 0) tg[r] = n_gen / (cli_now() - t0);
            kv_read = (kv0 + (double)mn_context_kv_bytes(ctx)) / 2;
        }
    }
    if (!rc) {
        double ppm = 0, pps = 0, tgm = 0, tgs = 0;
        if (n_prompt > 0) stats(pp, (int)reps, &ppm, &pps);
        if (n_gen > 0) stats(tg, (int)reps, &tgm, &tgs);
        long rss = cli_peak_rss_kib();
        char desc[512];
        mn_model_describe(m, desc, sizeof desc);
        /* decode's bandwidth: each step reads the weights and the cache once */
        const double wb = (double)mn_model_decode_bytes(m), step = wb + kv_read;
        if (json) {
            printf("{\"engine\": \"mnemo\", \"isa\": \"%s\", \"model\": \"%s\", \"threads\": %d, \"n_prompt\": %ld, \"n_gen\": %ld, \"reps\": %ld, "
                   "\"depth\": %ld, \"n_batch\": %d, \"cache_type\": \"%s\", \"prefill_tok_s\": %.2f, \"prefill_sd\": %.2f, \"decode_tok_s\": %.2f, \"decode_sd\": %.2f, "
                   "\"decode_weight_mib\": %.1f, \"decode_kv_mib\": %.1f, \"decode_read_gbs\": %.2f, \"peak_rss_mib\": %.1f}\n",
                   mn_cpu_isa_name(), mn_model_name(m), mn_context_n_threads(ctx), n_prompt, n_gen, reps, depth,
                   cp.n_batch, mn_cache_type_name(mn_context_default_params().cache_type), ppm, pps, tgm, tgs, wb / 1048576.0,
                   kv_read / 1048576.0, n_gen > 0 ? step * tgm * 1e-9 : 0.0, rss / 1024.0);
        } else {
            printf("%s\nthreads %d, kernels %s\n", desc, mn_context_n_threads(ctx), mn_cpu_isa_name());
            if (n_prompt > 0) printf("pp%-5ld %9.2f +/- %.2f tok/s\n", n_prompt, ppm, pps);
            if (n_gen > 0 && depth > 0) printf("tg%ld @ d%ld %9.2f +/- %.2f tok/s\n", n_gen, depth, tgm, tgs);
            else if (n_gen > 0) printf("tg%-5ld %9.2f +/- %.2f tok/s\n", n_gen, tgm, tgs);
            if (n_gen > 0)
                printf("decode reads %.1f MiB of weights + %.1f MiB of %s cache a token: %.1f GB/s\n", wb / 1048576.0,
                       kv_read / 1048576.0, mn_cache_type_name(mn_context_default_params().cache_type),
                       step * tgm * 1e-9);
            printf("peak RSS %.1f MiB\n", rss / 1024.0);
        }
    }
    free(toks);
    free(logits);
    free(pp);
    free(tg);
    mn_context_free(ctx);
    mn_model_free(m);
    return rc;
}
