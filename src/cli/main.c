/* main.c - the `mnemo` command: dispatches to one file per command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kernels/quant.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} k_cmds[] = {
    {"generate", cmd_generate, "continue a prompt"},
    {"chat", cmd_chat, "talk with the model (chat template, streaming, history)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"ppl", cmd_ppl, "perplexity of the model on a text file (llama-perplexity protocol)"},
    {"bench", cmd_bench, "prefill and decode speed, peak memory"},
    {"convert", cmd_convert, "write a copy of a model with f32 or f16 matrices"},
    {"compress", cmd_compress, "compress a document into a memory file (UIO, beacon or summary adapter)"},
    {"ask", cmd_ask, "answer a question from a memory file or a document's compressed memory"},
    {"store", cmd_store, "compressed-document store: add, ls, rm, query, ask (LLoCO)"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server over a document store"},
    {"train", cmd_train, "train a compressor adapter on text (base model frozen)"},
    {"finetune", cmd_finetune, "train a decoder LoRA for a store's document group (LLoCO)"},
    {"eval", cmd_eval, "long-context evaluation: ppl, passkey, qa (JSON lines + a markdown table)"},
    {"adapter", cmd_adapter, "write (init) or inspect (info) a compressor adapter file"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: mnemo <command> [options]   (mnemo <command> --help for its options)\n\n"
               "mnemo runs Llama-family GGUF models on the CPU.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].help);
    fprintf(f, "\nThe model defaults to %s (fetched by 'make model'), or $MNEMO_MODEL.\n", MN_DEFAULT_MODEL);
    fprintf(f, "Every command takes --cache-type f16|q8_0 (or $MNEMO_CACHE_TYPE): the KV cache's format (default f16;\n"
               "q8_0: 8-bit blocks, 53%% of the bytes).\n");
}

/* OpenBLAS chooses its kernels when loaded: with older ones than the CPU
 * allows (mn_blas_core_advice), the command re-executes itself once with
 * OPENBLAS_CORETYPE set. An explicit OPENBLAS_CORETYPE is left alone. */
static void blas_core_fixup(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("MNEMO_BLAS_REEXEC")) return;
    const char *want = mn_blas_core_advice();
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("MNEMO_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: run on with the slow kernels */
    unsetenv("OPENBLAS_CORETYPE");
}

/* --cache-type T anywhere on the command line (every command creates its contexts with
 * mn_context_default_params, which reads MNEMO_CACHE_TYPE): taken out before the command parses. */
static int cache_type_option(int *argc, char **argv) {
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char *v = !strcmp(a, "--cache-type") ? (i + 1 < *argc ? argv[i + 1] : NULL)
                        : !strncmp(a, "--cache-type=", 13) ? a + 13 : (const char *)1;
        if (v == (const char *)1) continue;
        if (!v || mn_cache_type_parse(v) < 0) {
            fprintf(stderr, "mnemo: --cache-type is f16 or q8_0 (got '%s')\n", v ? v : "");
            return 2;
        }
        setenv("MNEMO_CACHE_TYPE", v, 1);
        const int drop = a[12] == '=' ? 1 : 2;
        for (int j = i; j + drop <= *argc; j++) argv[j] = argv[j + drop];
        *argc -= drop;
        i--;
    }
    return 0;
}

int main(int argc, char **argv) {
    blas_core_fixup(argv);
    if (cache_type_option(&argc, argv)) return 2;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (!strcmp(argv[1], k_cmds[i].name)) return k_cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "mnemo: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
