/* fuzz_adapter.c - libFuzzer target for adapter loading (memory/adapter.h) on
 * top of the GGUF reader, against a tiny model written once at start-up; built
 * by `make fuzz` with ASan and UBSan; seeds in tests/fuzz/corpus/adapter/
 * (UIO, beacon and summary adapters of that model, f32 and f16).
 *
 * Every input must either load or fail with a message and no adapter. A loaded
 * adapter must be consistent: its configuration passes the parameter check,
 * every LoRA it reports has the configured rank and readable A and B, every
 * tensor's values are finite, and it saves and loads again with the same hash.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "memory/adapter.h"
#include "memory/memory.h"
#include "tiny_llama.h"

static mn_model *g_model;
static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char mp[64];
    snprintf(mp, sizeof mp, "/tmp/mnemo-fuzz-adapter-%d.gguf", (int)getpid());
    snprintf(g_path, sizeof g_path, "/tmp/mnemo-fuzz-adapter-%d.out.gguf", (int)getpid());
    /* the model tests/fuzz/make_corpus.c made the seeds for */
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 48, .n_layer = 2, .n_ctx = 256, .seed = 11};
    if (tiny_llama_write(&cfg, mp) || mn_model_load(mp, &g_model)) abort();
    unlink(mp);
    return 0;
}

static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    mn_gguf *g = NULL;
    if (mn_gguf_open_memory(copy, size, &g)) {
        free(copy);
        return 0;
    }
    mn_adapter *a = NULL;
    if (mn_adapter_load_gguf(g_model, g, &a)) {
        if (a || !mn_last_error()[0]) abort();
    } else {
        const mn_adapter_params *p = mn_adapter_config(a);
        if (mn_adapter_check_params(p, mn_model_n_embd(g_model))) abort();
        for (int l = 0; l < mn_model_n_layer(g_model); l++)
            for (int w = 0; w <= (int)MN_LORA_MEM_V; w++) {
                const float *A, *B;
                int rank;
                if (mn_adapter_lora(a, l, (mn_lora_target)w, &A, &B, &rank) == 0) {
                    if (rank != p->rank || !A || !B) abort();
                    g_sink += A[0] + B[0];
                }
            }
        for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
            const char *nm;
            int nd;
            int64_t ne[2];
            const float *d;
            mn_adapter_tensor_at(a, i, &nm, &nd, ne, &d);
            for (int64_t k = 0; k < ne[0] * ne[1]; k++)
                if (!isfinite(d[k])) abort();
        }
        mn_adapter *b = NULL;
        if (mn_adapter_save(a, g_path) || mn_adapter_load(g_model, g_path, &b) ||
            mn_adapter_hash(a) != mn_adapter_hash(b))
            abort();
        mn_adapter_free(b);
        unlink(g_path);
        mn_adapter_free(a);
    }
    mn_gguf_free(g);
    free(copy);
    return 0;
}
