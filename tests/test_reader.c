/* test_reader.c - the adapter's reader: a decoder LoRA beside the adapter
 * file (ADAPTER with .reader.gguf for .gguf) that answers whenever recall is
 * on. With a tiny random model: the file is found and attached on load, a
 * damaged one fails the load (never a silent answer without it), one for
 * another model is refused, asks with recall on answer with it (the stats say
 * so, and the answer is the one the same LoRA gives through mn_answer) and
 * asks with recall off do not, and detaching it restores the plain answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "model/lora.h"
#include "test.h"
#include "tiny_llama.h"

static char g_dir[] = "/tmp/mnemo-reader-XXXXXX";

static int write_lora(const mn_model *m, uint64_t seed, const char *path) {
    mn_lora_file *lf = NULL;
    int rc = mn_lora_file_init(m, "qkvo", 2, 4, seed, &lf);
    uint64_t s = seed * 2654435761u + 1;
    for (int i = 0; !rc && i < mn_lora_file_n_tensors(lf); i++) { /* B nonzero: a LoRA that changes answers */
        const char *name;
        int64_t n;
        float *d;
        mn_lora_file_tensor(lf, i, &name, &n, &d);
        for (int64_t j = 0; j < n; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            d[j] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        }
    }
    if (!rc) rc = mn_lora_file_save(lf, path);
    mn_lora_file_free(lf);
    return rc;
}

static char *ask(const mn_doc *d, int32_t recall, mn_ask_stats *st) {
    mn_ask_params p = mn_ask_default_params();
    p.recall = recall, p.max_tokens = 12, p.n_threads = 1;
    char *ans = NULL;
    CHECK(mn_doc_ask(d, "How many lamps were lit?", &p, NULL, NULL, &ans, st) == 0, "ask: %s", mn_last_error());
    return ans;
}

int main(void) {
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char model[600], other[600], adapter[600], reader[600], name[600];
    snprintf(model, sizeof model, "%s/tiny.gguf", g_dir);
    snprintf(other, sizeof other, "%s/other.gguf", g_dir);
    snprintf(adapter, sizeof adapter, "%s/tiny.uio.gguf", g_dir);
    snprintf(reader, sizeof reader, "%s/tiny.uio.reader.gguf", g_dir);
    CHECK(mn_adapter_reader_name(adapter, name, sizeof name) == 0 && !strcmp(name, reader), "reader name '%s'", name);
    CHECK(mn_adapter_reader_name("a.bin", name, sizeof name) == 0 && !strcmp(name, "a.bin.reader.gguf"),
          "reader name of a file without .gguf: '%s'", name);
    CHECK(mn_adapter_reader_name(adapter, name, 8) == MN_ERANGE, "a name that does not fit");

    tiny_llama cfg = {.n_embd = 16, .n_head = 2, .n_head_kv = 1, .n_ff = 32, .n_layer = 2, .n_ctx = 1024, .seed = 7};
    tiny_llama cfg2 = cfg;
    cfg2.seed = 8;
    mn_model *m = NULL, *m2 = NULL;
    CHECK(tiny_llama_write(&cfg, model) == 0 && mn_model_load(model, &m) == 0, "model: %s", mn_last_error());
    CHECK(tiny_llama_write(&cfg2, other) == 0 && mn_model_load(other, &m2) == 0, "model: %s", mn_last_error());
    if (!m || !m2) TEST_MAIN_END();
    mn_adapter_params ap = mn_adapter_default_params(MN_COMP_UIO);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8, ap.recent = 1;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &ap, &a) == 0 && mn_adapter_save(a, adapter) == 0, "adapter: %s", mn_last_error());
    mn_adapter_free(a), a = NULL;

    /* no reader beside it: none attached */
    CHECK(mn_adapter_load(m, adapter, &a) == 0 && !mn_adapter_reader(a) && !mn_adapter_reader_path(a),
          "an adapter alone: %s", mn_last_error());
    mn_adapter_free(a), a = NULL;

    /* the reader beside it is attached on load */
    CHECK(write_lora(m, 3, reader) == 0, "reader: %s", mn_last_error());
    CHECK(mn_adapter_load(m, adapter, &a) == 0 && mn_adapter_reader(a) && mn_adapter_reader_path(a) &&
              !strcmp(mn_adapter_reader_path(a), reader),
          "the reader beside the adapter: %s", mn_last_error());

    const char *text =
        "The keeper climbed the tower at dusk. Nine lamps were lit along the harbour wall that night, and the "
        "boats came home one by one through the fog. In the morning the fishermen mended their nets, the "
        "children ran along the shore, and the keeper slept until noon. ";
    char doc_text[4096] = "";
    for (int i = 0; i < 6; i++) strcat(doc_text, text);
    mn_doc *d = NULL;
    CHECK(a && mn_doc_read(m, a, doc_text, strlen(doc_text), 1, 1, NULL, NULL, &d) == 0, "read: %s", mn_last_error());
    mn_doc_info info;
    if (d) mn_doc_get_info(d, &info);
    CHECK(d && info.exact_segments > 2, "the document keeps %d exact segments for recall", d ? info.exact_segments : 0);
    if (d) {
        mn_ask_stats s_on, s_off, s_plain;
        char *on = ask(d, 2, &s_on), *off = ask(d, 0, &s_off);
        CHECK(s_on.reader == 1 && s_on.recalled > 0, "recall on answers with the reader (%d, %d paged)", s_on.reader,
              s_on.recalled);
        CHECK(s_off.reader == 0, "recall off answers without it");
        /* detached: recall on answers as the plain model does, and differently from the reader */
        CHECK(mn_adapter_set_reader(a, m, NULL) == 0 && !mn_adapter_reader(a), "detach");
        char *plain = ask(d, 2, &s_plain);
        CHECK(s_plain.reader == 0 && s_plain.recalled == s_on.recalled, "detached: %d, %d paged", s_plain.reader,
              s_plain.recalled);
        CHECK(on && plain && strcmp(on, plain), "the reader changes the answer ('%s' both)", on ? on : "");
        /* attached again by hand: the same answer as from the file found beside the adapter */
        CHECK(mn_adapter_set_reader(a, m, reader) == 0, "attach: %s", mn_last_error());
        char *again = ask(d, 2, NULL);
        CHECK(on && again && !strcmp(on, again), "'%s' then '%s'", on ? on : "", again ? again : "");
        free(on), free(off), free(plain), free(again);
    }
    mn_doc_free(d);

    /* a reader for another model is refused, and the one attached stays */
    char wrong[600];
    snprintf(wrong, sizeof wrong, "%s/wrong.gguf", g_dir);
    CHECK(write_lora(m2, 4, wrong) == 0, "other reader: %s", mn_last_error());
    CHECK(a && mn_adapter_set_reader(a, m, wrong) != 0 && strstr(mn_last_error(), "reader") &&
              mn_adapter_reader(a) && !strcmp(mn_adapter_reader_path(a), reader),
          "a reader for another model: '%s'", mn_last_error());
    mn_adapter_free(a), a = NULL;

    /* a damaged reader beside the adapter fails the load, naming it */
    FILE *f = fopen(reader, "r+b");
    long size = 0;
    if (f) fseek(f, 0, SEEK_END), size = ftell(f), fclose(f);
    CHECK(size > 64 && truncate(reader, size / 2) == 0, "truncate the reader");
    CHECK(mn_adapter_load(m, adapter, &a) != 0 && !a && strstr(mn_last_error(), "reader"),
          "a truncated reader: '%s'", mn_last_error());

    mn_model_free(m2);
    mn_model_free(m);
    char rm[700];
    snprintf(rm, sizeof rm, "rm -rf %s", g_dir);
    if (!t_fail && system(rm)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
