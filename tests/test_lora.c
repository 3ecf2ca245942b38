/* test_lora.c - decoder LoRA files: round trip, effect on the forward pass,
 * and every bad file refused with a clear error. */
#include <unistd.h>

#include "model/lora.h"
#include "test.h"
#include "tiny_llama.h"

static char g_dir[] = "/tmp/mnemo-lora-XXXXXX";

static void logits_of(mn_model *m, const mn_lora_set *set, float *out) {
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 32, cp.n_threads = 1;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context: %s", mn_last_error());
    if (!c) return;
    mn_context_set_lora(c, set);
    int32_t ids[5] = {72, 101, 108, 108, 111};
    CHECK(mn_decode(c, ids, 5, out, 0) == 0, "decode: %s", mn_last_error());
    mn_context_free(c);
}

static double max_abs_diff(const float *a, const float *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    char mp[600], mp2[600], lp[600], bad[600];
    snprintf(mp, sizeof mp, "%s/tiny.gguf", g_dir);
    snprintf(mp2, sizeof mp2, "%s/other.gguf", g_dir);
    snprintf(lp, sizeof lp, "%s/dec.gguf", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.gguf", g_dir);
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 64, .n_layer = 2, .n_ctx = 64, .seed = 9};
    mn_model *m = NULL, *m2 = NULL;
    CHECK(tiny_llama_write(&cfg, mp) == 0 && mn_model_load(mp, &m) == 0, "model: %s", mn_last_error());
    cfg.seed = 10;
    CHECK(tiny_llama_write(&cfg, mp2) == 0 && mn_model_load(mp2, &m2) == 0, "model 2: %s", mn_last_error());
    if (!m || !m2) TEST_MAIN_END();

    mn_lora_file *f = NULL, *g = NULL;
    CHECK(mn_lora_file_init(m, "qv", 4, 8, 1, &f) == 0, "init: %s", mn_last_error());
    CHECK(mn_lora_file_n_tensors(f) == 2 * 2 * 2, "tensors %d", mn_lora_file_n_tensors(f));
    float base[TINY_VOCAB], fresh[TINY_VOCAB], tuned[TINY_VOCAB], again[TINY_VOCAB];
    logits_of(m, NULL, base);
    logits_of(m, mn_lora_file_set(f), fresh);
    CHECK(max_abs_diff(base, fresh, TINY_VOCAB) == 0, "a fresh LoRA (B = 0) changed the logits");
    /* make B non-zero, as training would */
    for (int i = 0; i < mn_lora_file_n_tensors(f); i++) {
        const char *name;
        int64_t n;
        float *d;
        mn_lora_file_tensor(f, i, &name, &n, &d);
        if (strstr(name, "lora_b"))
            for (int64_t e = 0; e < n; e++) d[e] = 0.05f * (float)((e * 37 % 11) - 5);
    }
    logits_of(m, mn_lora_file_set(f), tuned);
    CHECK(max_abs_diff(base, tuned, TINY_VOCAB) > 1e-3, "a trained LoRA did not change the logits");
    CHECK(mn_lora_file_save(f, lp) == 0, "save: %s", mn_last_error());
    CHECK(mn_lora_file_load(m, lp, &g) == 0, "load: %s", mn_last_error());
    if (g) {
        CHECK(mn_lora_file_hash(g) == mn_lora_file_hash(f), "hash changed in the round trip");
        CHECK(mn_lora_file_rank(g) == 4 && mn_lora_file_alpha(g) == 8, "rank/alpha");
        logits_of(m, mn_lora_file_set(g), again);
        CHECK(max_abs_diff(tuned, again, TINY_VOCAB) == 0, "loaded LoRA gives other logits");
        mn_lora_file_free(g), g = NULL;
    }
    /* errors */
    CHECK(mn_lora_file_load(m2, lp, &g) == MN_EINVAL && strstr(mn_last_error(), "another model"), "other model: %s",
          mn_last_error());
    CHECK(mn_lora_file_init(m, "qx", 4, 8, 1, &g) == MN_EINVAL, "bad target accepted");
    CHECK(mn_lora_file_init(m, "q", 0, 8, 1, &g) == MN_EINVAL, "rank 0 accepted");
    CHECK(mn_lora_file_load(m, mp, &g) != 0, "a model file loaded as a LoRA");
    FILE *in = fopen(lp, "rb");
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    CHECK(fread(buf, 1, (size_t)size, in) == (size_t)size, "read");
    fclose(in);
    int refused = 0, tried = 0;
    for (long cut = 0; cut < size; cut += size / 97 + 1) {
        FILE *o = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)cut, o);
        fclose(o);
        tried++;
        if (mn_lora_file_load(m, bad, &g) != 0) refused++;
        else mn_lora_file_free(g), g = NULL;
    }
    CHECK(refused == tried, "%d of %d truncations refused", refused, tried);
    free(buf);
    mn_lora_file_free(f);
    mn_model_free(m);
    mn_model_free(m2);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
