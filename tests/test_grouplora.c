/* test_grouplora.c - per-group decoder LoRAs of a store: found, cached,
 * checked against the recorded hash and the model. */
#include <unistd.h>

#include "model/lora.h"
#include "store/grouplora.h"
#include "store/sha256.h"
#include "test.h"
#include "tiny_llama.h"

static char g_dir[] = "/tmp/mnemo-grouplora-XXXXXX";

static void file_sha(const char *path, char out[65]) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    mn_sha256_hex(b, (size_t)n, out);
    free(b);
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    char mp[600], mp2[600], lp[600], lp2[600], db[600], sha[65], sha2[65];
    snprintf(mp, sizeof mp, "%s/tiny.gguf", g_dir);
    snprintf(mp2, sizeof mp2, "%s/other.gguf", g_dir);
    snprintf(lp, sizeof lp, "%s/a.gguf", g_dir);
    snprintf(lp2, sizeof lp2, "%s/b.gguf", g_dir);
    snprintf(db, sizeof db, "%s/s.db", g_dir);
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 64, .n_layer = 2, .n_ctx = 64, .seed = 3};
    mn_model *m = NULL, *m2 = NULL;
    CHECK(tiny_llama_write(&cfg, mp) == 0 && mn_model_load(mp, &m) == 0, "model: %s", mn_last_error());
    cfg.seed = 4;
    CHECK(tiny_llama_write(&cfg, mp2) == 0 && mn_model_load(mp2, &m2) == 0, "model 2: %s", mn_last_error());
    if (!m || !m2) TEST_MAIN_END();
    mn_lora_file *f = NULL, *f2 = NULL;
    CHECK(mn_lora_file_init(m, "qv", 4, 8, 1, &f) == 0 && mn_lora_file_save(f, lp) == 0, "lora: %s",
          mn_last_error());
    CHECK(mn_lora_file_init(m2, "qv", 4, 8, 1, &f2) == 0 && mn_lora_file_save(f2, lp2) == 0, "lora 2: %s",
          mn_last_error());
    file_sha(lp, sha);
    file_sha(lp2, sha2);
    mn_store *s = NULL;
    CHECK(mn_store_open_sqlite(db, MN_STORE_CREATE, &s) == 0, "store: %s", mn_last_error());
    if (!s) TEST_MAIN_END();
    CHECK(mn_store_group_set_adapter(s, "law", lp, sha) == 0, "set: %s", mn_last_error());
    CHECK(mn_store_group_set_adapter(s, "plain", "", "") == 0, "set plain: %s", mn_last_error());
    CHECK(mn_store_group_set_adapter(s, "alien", lp2, sha2) == 0, "set alien: %s", mn_last_error());
    mn_group_loras *gl = NULL;
    CHECK(mn_group_loras_create(m, &gl) == 0, "cache");
    const mn_lora_set *a = NULL, *b = NULL;
    CHECK(mn_group_loras_get(gl, s, "law", &a) == 0 && a != NULL, "law: %s", mn_last_error());
    CHECK(mn_group_loras_get(gl, s, "law", &b) == 0 && b == a, "the second request reuses the loaded LoRA");
    CHECK(a && a->q && a->v && !a->k && a->scale == 2.0f, "targets and scale of the loaded LoRA");
    CHECK(mn_group_loras_get(gl, s, "plain", &b) == 0 && b == NULL, "a group without adapter gets none");
    CHECK(mn_group_loras_get(gl, s, "missing", &b) == 0 && b == NULL, "an unknown group gets none");
    CHECK(mn_group_loras_get(gl, s, "alien", &b) == MN_EINVAL && strstr(mn_last_error(), "another model"),
          "another model's LoRA: %s", mn_last_error());
    /* the file changes after it was recorded: refused, not silently used */
    FILE *w = fopen(lp, "r+b");
    fseek(w, -4, SEEK_END);
    fputc('!', w);
    fclose(w);
    mn_group_loras *gl2 = NULL;
    CHECK(mn_group_loras_create(m, &gl2) == 0, "cache 2");
    CHECK(mn_group_loras_get(gl2, s, "law", &b) == MN_EFORMAT && strstr(mn_last_error(), "changed"),
          "a modified LoRA file: %s", mn_last_error());
    unlink(lp);
    CHECK(mn_group_loras_get(gl2, s, "law", &b) == MN_EIO, "a missing LoRA file: %s", mn_last_error());
    mn_group_loras_free(gl2);
    mn_group_loras_free(gl);
    mn_store_close(s);
    mn_lora_file_free(f);
    mn_lora_file_free(f2);
    mn_model_free(m);
    mn_model_free(m2);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
