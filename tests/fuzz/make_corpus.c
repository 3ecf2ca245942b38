/* make_corpus.c - writes the fuzzers' seed inputs (`make fuzz-corpus`; the
 * output is committed under tests/fuzz/corpus/): small valid memory files of
 * each kind and version, and adapters of each compressor for the tiny model
 * fuzz_adapter.c loads. Usage: make_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory/adapter.h"
#include "memory/memfile.h"
#include "tiny_llama.h"

static int memfile(const char *dir, const char *name, int kind, int n_layer, int dim, int slots, int n_raw,
                   int n_head, int etype, int n_exact, int cells) {
    mn_memfile_info in;
    memset(&in, 0, sizeof in);
    if (cells) in.flags = MN_MEMFILE_EXACT_KV; /* version 4: dim a multiple of 32 */
    in.n_exact = n_exact, in.exact_seg = n_exact ? 4 : 0, in.exact_rep = n_exact ? 2 : 0;
    in.kind = kind, in.n_layer = n_layer, in.dim = dim, in.n_slots = slots, in.n_tokens = 8 * slots + n_raw;
    in.n_raw = n_raw, in.n_head = n_head, in.model_hash = 0x1234, in.adapter_hash = 0x5678, in.ratio = 8;
    in.created = 1764720000;
    snprintf(in.model_name, sizeof in.model_name, "tiny");
    snprintf(in.compressor, sizeof in.compressor, kind == MN_MEMFILE_KV ? "uio" : "summary");
    snprintf(in.title, sizeof in.title, "seed");
    const size_t e = mn_memfile_block_elems(&in);
    float *k = malloc(sizeof(float) * (e + 1)), *v = malloc(sizeof(float) * (e + 1));
    int32_t raw[64];
    for (size_t i = 0; i < e; i++) k[i] = (float)i * 0.25f - 3, v[i] = 1.0f / (float)(i + 1);
    for (int i = 0; i < n_raw; i++) raw[i] = 7 * i + 1;
    char path[512];
    snprintf(path, sizeof path, "%s/memfile/%s", dir, name);
    /* version 3: exact ids and two blocks of representative keys */
    const size_t ke = mn_memfile_exact_key_elems(&in);
    int32_t exact[64];
    float *rep = malloc(sizeof(float) * (ke + 1));
    for (int i = 0; i < n_exact; i++) exact[i] = 3 * i + 2;
    for (size_t i = 0; i < ke; i++) rep[i] = (float)i * 0.5f - 1;
    /* version 4: q8_0 cells of every exact token, K then V rows per segment (bytes as they are) */
    const size_t cb = cells ? 2 * (size_t)n_exact * (size_t)n_layer * (size_t)(dim / 32) * 34 : 0;
    uint8_t *cl = malloc(cb + 1);
    for (size_t i = 0; i < cb; i++) cl[i] = (uint8_t)(i % 34 == 1 ? 0x2c : i * 37 + 5); /* scales: small halves */
    int rc = mn_memfile_write_exact(path, &in, k, kind == MN_MEMFILE_KV ? v : NULL, raw, exact, rep, rep,
                                    cells ? cl : NULL, etype);
    free(k), free(v), free(rep), free(cl);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char d[512];
    snprintf(d, sizeof d, "%s/memfile", argv[1]);
    mkdir(argv[1], 0755), mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/adapter", argv[1]);
    mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/gguf", argv[1]);
    mkdir(d, 0755);
    int rc = memfile(argv[1], "kv-f16-v1", MN_MEMFILE_KV, 2, 4, 3, 0, 0, MN_MEMFILE_F16, 0, 0) ||
             memfile(argv[1], "kv-f32-v1", MN_MEMFILE_KV, 1, 2, 2, 0, 0, MN_MEMFILE_F32, 0, 0) ||
             memfile(argv[1], "embd-f16-v1", MN_MEMFILE_EMBD, 0, 4, 2, 0, 0, MN_MEMFILE_F16, 0, 0) ||
             memfile(argv[1], "kv-raw-v2", MN_MEMFILE_KV, 2, 4, 2, 9, 4, MN_MEMFILE_F16, 0, 0) ||
             memfile(argv[1], "kv-allraw-v2", MN_MEMFILE_KV, 2, 4, 0, 5, 0, MN_MEMFILE_F16, 0, 0) ||
             memfile(argv[1], "kv-exact-v3", MN_MEMFILE_KV, 2, 4, 4, 9, 4, MN_MEMFILE_F16, 8, 0) ||
             memfile(argv[1], "kv-cells-v4", MN_MEMFILE_KV, 2, 32, 2, 5, 4, MN_MEMFILE_F16, 8, 1);
    if (rc) {
        fprintf(stderr, "memfile seeds: %s\n", mn_last_error());
        return 1;
    }
    char mp[600];
    snprintf(mp, sizeof mp, "%s/gguf/tiny-model.gguf", argv[1]); /* a model is a GGUF seed too */
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 48, .n_layer = 2, .n_ctx = 256, .seed = 11};
    mn_model *m = NULL;
    if (tiny_llama_write(&cfg, mp) || mn_model_load(mp, &m)) return 1;
    const mn_compressor kinds[3] = {MN_COMP_UIO, MN_COMP_BEACON, MN_COMP_SUMMARY};
    for (int i = 0; i < 3 && !rc; i++) {
        mn_adapter_params p = mn_adapter_default_params(kinds[i]);
        p.segment = 16, p.ratio = 4, p.seed = 1;
        if (kinds[i] != MN_COMP_BEACON) p.rank = 2, p.alpha = 4;
        if (kinds[i] == MN_COMP_UIO) p.recent = 1;
        if (kinds[i] == MN_COMP_BEACON) p.n_ratios = 2, p.ratios[0] = 2, p.ratios[1] = 4, p.sinks = 2;
        mn_adapter *a = NULL;
        if ((rc = mn_adapter_init(m, &p, &a))) break;
        for (int f16 = 0; f16 < 2 && !rc; f16++) {
            char path[700];
            snprintf(path, sizeof path, "%s/adapter/%s-%s.gguf", argv[1], mn_compressor_name(kinds[i]), f16 ? "f16" : "f32");
            rc = mn_adapter_save_as(a, path, f16);
            snprintf(path, sizeof path, "%s/gguf/%s-%s.gguf", argv[1], mn_compressor_name(kinds[i]), f16 ? "f16" : "f32");
            if (!rc && i == 0) rc = mn_adapter_save_as(a, path, f16);
        }
        mn_adapter_free(a);
    }
    mn_model_free(m);
    if (rc) fprintf(stderr, "adapter seeds: %s\n", mn_last_error());
    return rc ? 1 : 0;
}
