/* test_finetune_qa.c - fine-tuning the decoder LoRA on question-answer pairs
 * (`mnemo finetune --qa`), on a tiny random model. (The gradient against
 * finite differences is test_qatrain.c.)
 *
 * 2. Parity with answering: for pairs loaded from a store (UIO and summary
 *    memories), the prompt is the one mn_answer builds, and the trainer's
 *    answer loss equals the inference engine's (LoRA installed, memory
 *    primed, prompt + answer decoded) on the same LoRA.
 * 3. A real run: mn_train_run on QA pairs only makes the QA loss fall; mixed
 *    with text, QA and text steps alternate.
 * 4. Malformed JSONL: each bad line is one error naming FILE:LINE; the CLI
 *    exits non-zero with it before any training step.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "memory/adapter.h"
#include "memory/docmem.h"
#include "model/forward.h"
#include "model/lora.h"
#include "store/ingest.h"
#include "store/qaset.h"
#include "store/store.h"
#include "test.h"
#include "threadpool.h"
#include "tiny_llama.h"
#include "train/train.h"

static char g_dir[] = "/tmp/mnemo-qa-XXXXXX";
static char g_model[600], g_uio[600], g_sum[600], g_db[600];

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

static void write_text(const char *name, const char *text, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (f) fputs(text, f), fclose(f);
}

/* ---- store set-up ---- */
static const char *k_docs[3][3] = {
    {"harbor", "g", "The harbor master counts seven red boats at dawn and logs every ship that leaves the bay."},
    {"orchard", "g", "In the orchard the old gardener grows pears, plums and quinces along the southern wall."},
    {"mines", "other", "Deep in the mines the workers carry lamps of brass through tunnels cut in grey stone."},
};

static int make_store(const mn_model *m) {
    mn_store *s = NULL;
    int rc = mn_store_open_sqlite(g_db, MN_STORE_CREATE, &s);
    if (!rc) rc = mn_ingest_bind_model(s, m);
    const char *ads[2] = {g_uio, g_sum};
    for (int a = 0; a < 2 && !rc; a++) {
        mn_adapter *ad = NULL;
        if ((rc = mn_adapter_load(m, ads[a], &ad))) break;
        for (int i = 0; i < 3 && !rc; i++) {
            mn_ingest_doc d = {k_docs[i][0], "test", k_docs[i][1], k_docs[i][2], strlen(k_docs[i][2]), 0};
            mn_ingest_result r;
            rc = mn_ingest(s, NULL, m, ad, &d, 1, &r);
        }
        mn_adapter_free(ad);
    }
    if (!rc) rc = mn_store_meta_set(s, "adapter_path", g_uio);
    mn_store_close(s);
    return rc;
}

static const char *k_good =
    "{\"doc\": \"harbor\", \"question\": \"How many boats?\", \"answer\": \"seven\"}\n"
    "\n"
    "{\"doc\": \"orchard\", \"question\": \"What grows by the wall?\", \"answer\": \"pears\", \"id\": 7}\n"
    "{\"doc\": 1, \"question\": \"What colour are the boats?\", \"answer\": \"red\"}\n"
    "{\"doc\": \"2\", \"question\": \"Who grows them?\", \"answer\": \"the gardener\"}\n"
    "{\"context\": \"The lighthouse keeper lit nine lamps before the storm.\", \"question\": \"How many lamps?\", "
    "\"answer\": \"nine\"}\n"
    "{\"context\": \"The lighthouse keeper lit nine lamps before the storm.\", \"question\": \"How many lamps?\", "
    "\"answer\": \"nine\", \"inline\": true}\n";
static const char *k_passage = "The lighthouse keeper lit nine lamps before the storm.";

/* ---- 2. parity with the answering path ---- */
static void test_parity(const mn_model *m, mn_store *s, const char *adapter) {
    char qa[700];
    write_text("good.jsonl", k_good, qa, sizeof qa);
    mn_adapter *a = NULL;
    mn_qaset *q = NULL;
    CHECK(mn_adapter_load(m, adapter, &a) == 0, "adapter: %s", mn_last_error());
    CHECK(a && mn_qaset_load(s, m, a, "g", qa, &q) == 0, "load %s: %s", qa, mn_last_error());
    if (!q) {
        mn_adapter_free(a);
        return;
    }
    int32_t n = 0;
    const mn_qa_example *ex = mn_qaset_examples(q, &n);
    CHECK(n == 6 && mn_qaset_n_docs(q) == 2, "%d pairs over %d documents", n, mn_qaset_n_docs(q));
    CHECK(n == 6 && !mn_qaset_context(q, 0) && mn_qaset_context(q, 4) && !strcmp(mn_qaset_context(q, 4), k_passage),
          "the passage is kept with its pair only");
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    /* the prompt is mn_answer's: the question as the user message, the assistant's turn opened */
    const mn_chat_msg msg = {"user", "How many boats?"};
    char *prompt = NULL;
    int32_t pids[256];
    int64_t npi = 0;
    CHECK(mn_chat_format(tok, &msg, 1, 1, &prompt) == 0 &&
              mn_tokenize(tok, prompt, strlen(prompt), 1, 1, pids, 256, &npi) == 0,
          "prompt: %s", mn_last_error());
    CHECK(npi == ex[0].n_prompt && !memcmp(pids, ex[0].ids, sizeof(int32_t) * (size_t)npi),
          "the pair's prompt (%d tokens) is not the answering path's (%lld)", ex[0].n_prompt, (long long)npi);
    free(prompt);
    char ans[64];
    size_t al = 0;
    CHECK(mn_detokenize(tok, ex[0].ids + ex[0].n_prompt, ex[0].n_ids - ex[0].n_prompt - 1, 0, ans, sizeof ans, &al) ==
                  0 &&
              !strcmp(ans, "seven") && mn_token_is_eog(tok, ex[0].ids[ex[0].n_ids - 1]),
          "the answer tokens are '%s' then the end of turn", ans);
    /* a passage pair: no memory; the passage as a document is read (BOS, its text), then the same prompt */
    if (n == 6) {
        int32_t ctx[64];
        int64_t nc = 0;
        const mn_chat_msg pm = {"user", "How many lamps?"};
        CHECK(mn_tokenize(tok, k_passage, strlen(k_passage), 1, 0, ctx, 64, &nc) == 0 &&
                  mn_chat_format(tok, &pm, 1, 1, &prompt) == 0 &&
                  mn_tokenize(tok, prompt, strlen(prompt), 1, 1, pids, 256, &npi) == 0,
              "passage: %s", mn_last_error());
        free(prompt);
        const mn_qa_example *e = &ex[4];
        CHECK(e->n_mem == 0 && e->n_prompt == nc + npi && !memcmp(e->ids, ctx, sizeof(int32_t) * (size_t)nc) &&
                  !memcmp(e->ids + nc, pids, sizeof(int32_t) * (size_t)npi),
              "the passage pair reads %d memory cells and a prompt of %d tokens (want 0 and %lld + %lld)", e->n_mem,
              e->n_prompt, (long long)nc, (long long)npi);
        /* inline: the passage opens the user's message, a blank line before the question */
        char msg_text[256];
        snprintf(msg_text, sizeof msg_text, "%s\n\n%s", k_passage, "How many lamps?");
        const mn_chat_msg im = {"user", msg_text};
        CHECK(mn_chat_format(tok, &im, 1, 1, &prompt) == 0 &&
                  mn_tokenize(tok, prompt, strlen(prompt), 1, 1, pids, 256, &npi) == 0,
              "inline prompt: %s", mn_last_error());
        free(prompt);
        e = &ex[5];
        CHECK(e->n_mem == 0 && e->n_prompt == npi && !memcmp(e->ids, pids, sizeof(int32_t) * (size_t)npi),
              "the inline pair's prompt is %d tokens (want the message's %lld)", e->n_prompt, (long long)npi);
    }
    /* a LoRA with nonzero B, as trainer views and as the engine's set */
    mn_lora_file *lf = NULL;
    CHECK(mn_lora_file_init(m, "qkvo", 2, 4, 5, &lf) == 0, "lora: %s", mn_last_error());
    for (int i = 0; lf && i < mn_lora_file_n_tensors(lf); i++) {
        const char *name;
        int64_t ne;
        float *dd;
        mn_lora_file_tensor(lf, i, &name, &ne, &dd);
        for (int64_t j = 0; j < ne; j++) dd[j] = (float)(0.3 * nrand());
    }
    const mn_lora_set *set = lf ? mn_lora_file_set(lf) : NULL;
    const int L = mn_model_n_layer(m);
    mn_tlora_w w[4][8];
    const mn_lora *views[4] = {set ? set->q : NULL, set ? set->k : NULL, set ? set->v : NULL, set ? set->o : NULL};
    for (int t = 0; set && t < 4; t++)
        for (int l = 0; l < L; l++) w[t][l] = (mn_tlora_w){views[t][l].a, views[t][l].b, NULL, NULL, views[t][l].rank};
    const mn_tlora dec = {set ? set->scale : 0, w[0], w[1], w[2], w[3]};
    mn_tmodel *tm = NULL;
    mn_qa_trainer *tr = NULL;
    CHECK(mn_tmodel_create(m, &tm) == 0 && mn_qa_trainer_create(tm, ex, n, 2, &tr) == 0, "trainer: %s",
          mn_last_error());
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 256, cp.n_threads = 1;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context: %s", mn_last_error());
    const int32_t V = mn_model_n_vocab(m);
    for (int32_t i = 0; tr && c && set && i < n; i++) {
        const mn_qa_example *e = &ex[i];
        double tl = 0;
        CHECK(mn_qa_trainer_step(tr, e, &dec, 0, 0, &tl, NULL) == 0, "trainer step: %s", mn_last_error());
        /* the engine: the LoRA, then the memory primed, then prompt + answer */
        mn_docmem mem = {.kind = e->kv ? MN_DOCMEM_KV : MN_DOCMEM_EMBD, .n_slots = e->n_mem, .n_layer = e->kv ? L : 1,
                         .dim = e->kv ? mn_model_kv_dim(m) : mn_model_n_embd(m), .k = (float *)e->k,
                         .v = (float *)e->v};
        const mn_docmem *mp = &mem;
        mn_kv_clear(c);
        float *lg = malloc(sizeof(float) * (size_t)e->n_ids * V);
        int rc = mn_context_set_lora(c, set);
        if (!rc && e->n_mem) rc = mn_docmem_prime(c, a, &mp, 1, NULL);
        if (!rc) rc = mn_decode(c, e->ids, e->n_ids, lg, 1);
        CHECK(rc == 0, "engine: %s", mn_last_error());
        double el = 0;
        for (int32_t j = e->n_prompt - 1; !rc && j + 1 < e->n_ids; j++) {
            const float *r = lg + (int64_t)j * V;
            double mx = r[0], z = 0;
            for (int32_t t = 1; t < V; t++) mx = fmax(mx, r[t]);
            for (int32_t t = 0; t < V; t++) z += exp(r[t] - mx);
            el += mx + log(z) - r[e->ids[j + 1]];
        }
        CHECK(fabs(tl - el) < 2e-3 * fabs(el), "pair %d (%s memory): trainer loss %.6f, answering path %.6f", i,
              e->n_mem ? e->kv ? "KV" : "embedding" : "no", tl, el);
        free(lg);
    }
    mn_context_free(c);
    mn_qa_trainer_free(tr);
    mn_tmodel_free(tm);
    mn_lora_file_free(lf);
    mn_qaset_free(q);
    mn_adapter_free(a);
}

/* ---- 3. the training loop ---- */
typedef struct {
    double first_qa, last_qa;
    int kinds[16], n;
} rec;

static int record(const mn_train_progress *p, void *ud) {
    rec *r = ud;
    if (p->step == 1) r->first_qa = p->val_qa;
    r->last_qa = p->val_qa;
    if (r->n < 16) r->kinds[r->n++] = p->qa_step;
    return 0;
}

static void test_run(const mn_model *m, mn_store *s) {
    char qa[700], data[700], dec[700], cache[700];
    write_text("good.jsonl", k_good, qa, sizeof qa);
    write_text("text-harbor.txt", k_docs[0][2], data, sizeof data);
    write_text("text-orchard.txt", k_docs[1][2], data, sizeof data);
    snprintf(data, sizeof data, "%s/text-*.txt", g_dir);
    snprintf(dec, sizeof dec, "%s/dec.gguf", g_dir);
    snprintf(cache, sizeof cache, "%s/cache", g_dir);
    mn_adapter *a = NULL;
    mn_qaset *q = NULL;
    CHECK(mn_adapter_load(m, g_uio, &a) == 0 && mn_qaset_load(s, m, a, "g", qa, &q) == 0, "QA set: %s",
          mn_last_error());
    if (!q) {
        mn_adapter_free(a);
        return;
    }
    mn_train_config c = mn_train_default_config();
    c.adapter_in = g_uio, c.data_glob = data, c.cache_dir = cache, c.dec_out = dec;
    c.n_seg = 2, c.steps = 80, c.lr = 3e-2f, c.warmup = 2, c.eval_every = 80, c.n_threads = 1, c.ckpt_every = 0;
    c.dec_targets = "qkvo", c.dec_rank = 4;
    c.qa = mn_qaset_examples(q, &c.n_qa);
    c.qa_mix = 1, c.batch = 2;
    rec r = {NAN, NAN, {0}, 0};
    CHECK(mn_train_run(m, &c, record, &r) == 0, "QA fine-tuning: %s", mn_last_error());
    CHECK(isfinite(r.first_qa) && r.last_qa < 0.65 * r.first_qa, "QA loss %.4f -> %.4f", r.first_qa, r.last_qa);
    printf("QA fine-tuning, 80 steps on 4 pairs: answer loss %.4f -> %.4f nats/token\n", r.first_qa, r.last_qa);
    mn_lora_file *lf = NULL;
    CHECK(mn_lora_file_load(m, dec, &lf) == 0, "the LoRA loads: %s", mn_last_error());
    mn_lora_file_free(lf);
    /* mixed with text: QA and text steps alternate */
    c.steps = 4, c.qa_mix = 0.5f, c.batch = 1, c.eval_every = 2;
    rec r2 = {NAN, NAN, {0}, 0};
    CHECK(mn_train_run(m, &c, record, &r2) == 0, "mixed fine-tuning: %s", mn_last_error());
    CHECK(r2.n == 4 && !r2.kinds[0] && r2.kinds[1] && !r2.kinds[2] && r2.kinds[3], "step kinds %d %d %d %d",
          r2.kinds[0], r2.kinds[1], r2.kinds[2], r2.kinds[3]);
    /* pairs are for fine-tuning only, and the share must be in (0, 1] */
    c.qa_mix = 0;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EINVAL, "qa_mix 0 accepted");
    c.qa_mix = 0.5f, c.dec_out = NULL, c.out = dec;
    CHECK(mn_train_run(m, &c, NULL, NULL) == MN_EINVAL, "QA pairs accepted for compressor training");
    mn_qaset_free(q);
    mn_adapter_free(a);
}

/* ---- 4. malformed files ---- */
static void test_malformed(const mn_model *m, mn_store *s) {
    static const struct {
        const char *text, *where, *what;
        int code;
    } cases[] = {
        {"{\"doc\": \"harbor\", \"question\": \"q\", \"answer\": \"a\"}\n{\"doc\": \"harbor\", \"question\": \"q\"",
         ":2:", "not valid JSON", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"question\": \"q\", \"answer\": \"a\"}\n\n{\"doc\": \"harbor\", \"question\": \"q\"}\n",
         ":3:", "\"answer\"", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"answer\": \"a\"}\n", ":1:", "\"question\"", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"question\": \"\", \"answer\": \"a\"}\n", ":1:", "\"question\"", MN_EFORMAT},
        {"{\"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "\"doc\"", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"question\": \"q\", \"answer\": \"a\"}\n{\"doc\": \"lighthouse\", \"question\": "
         "\"q\", \"answer\": \"a\"}\n",
         ":2:", "lighthouse", MN_ENOTFOUND},
        {"{\"doc\": 999, \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "999", MN_ENOTFOUND},
        {"{\"doc\": 1.5, \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "positive integer", MN_EFORMAT},
        {"{\"doc\": \"mines\", \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "group 'other'", MN_EINVAL},
        {"[1, 2]\n", ":1:", "JSON object", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"question\": \"q\", \"answer\": \"a\"} trailing\n", ":1:", "not valid JSON",
         MN_EFORMAT},
        {"{\"context\": \"\", \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "\"context\"", MN_EFORMAT},
        {"{\"context\": 5, \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "\"context\"", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"question\": \"q\", \"answer\": \"a\", \"inline\": true}\n", ":1:", "\"inline\"", MN_EFORMAT},
        {"{\"context\": \"text\", \"question\": \"q\", \"answer\": \"a\", \"inline\": 1}\n", ":1:", "\"inline\"", MN_EFORMAT},
        {"{\"doc\": \"harbor\", \"context\": \"text\", \"question\": \"q\", \"answer\": \"a\"}\n", ":1:", "not both",
         MN_EFORMAT},
        {"\n  \n", "empty.jsonl", "no question-answer pairs", MN_EFORMAT},
    };
    mn_adapter *a = NULL;
    CHECK(mn_adapter_load(m, g_uio, &a) == 0, "adapter: %s", mn_last_error());
    for (size_t i = 0; a && i < sizeof cases / sizeof cases[0]; i++) {
        char path[700];
        write_text(i + 1 == sizeof cases / sizeof cases[0] ? "empty.jsonl" : "bad.jsonl", cases[i].text, path,
                   sizeof path);
        mn_qaset *q = NULL;
        const int rc = mn_qaset_load(s, m, a, "g", path, &q);
        CHECK(rc == cases[i].code && !q && strstr(mn_last_error(), cases[i].where) &&
                  strstr(mn_last_error(), cases[i].what),
              "case %zu: rc %d, '%s' (want %s ... %s)", i, rc, mn_last_error(), cases[i].where, cases[i].what);
    }
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none.jsonl", g_dir);
    mn_qaset *q = NULL;
    CHECK(a && mn_qaset_load(s, m, a, "g", missing, &q) == MN_ENOTFOUND, "a missing file");
    mn_adapter_free(a);

    /* the CLI: one error naming the line, a non-zero exit, no training step */
    const char *bin = getenv("MNEMO_BIN");
    if (!bin) bin = "build/mnemo";
    char bad[700], cmd[3000], out[4096] = "";
    write_text("bad.jsonl", cases[5].text, bad, sizeof bad);
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --group g -m %s --qa %s --steps 2 --segments 2 -t 1 2>&1", bin,
             g_db, g_model, bad);
    FILE *pp = popen(cmd, "r");
    size_t got = pp ? fread(out, 1, sizeof out - 1, pp) : 0;
    out[got] = 0;
    const int st = pp ? pclose(pp) : -1;
    CHECK(st != 0 && strstr(out, "bad.jsonl:2:") && strstr(out, "lighthouse") && !strstr(out, "step "),
          "CLI with a bad line: status %d, output:\n%s", st, out);

    /* passages alone: a new group with no documents trains on them and records its LoRA */
    char good[700], lora[700];
    write_text("passages.jsonl",
               "{\"context\": \"The lighthouse keeper lit nine lamps before the storm.\", \"question\": \"How many "
               "lamps?\", \"answer\": \"nine\"}\n{\"context\": \"Three carts waited by the mill.\", \"question\": "
               "\"How many carts?\", \"answer\": \"three\"}\n",
               good, sizeof good);
    snprintf(lora, sizeof lora, "%s/passages.gguf", g_dir);
    snprintf(cmd, sizeof cmd,
             "%s finetune --db %s --group readers -m %s --qa %s --qa-mix 1 --steps 2 --segments 2 -t 1 -o %s 2>&1", bin,
             g_db, g_model, good, lora);
    pp = popen(cmd, "r");
    got = pp ? fread(out, 1, sizeof out - 1, pp) : 0;
    out[got] = 0;
    const int st2 = pp ? pclose(pp) : -1;
    CHECK(st2 == 0 && strstr(out, "2 question-answer pairs over 0 documents") && strstr(out, "on 2 documents") &&
              strstr(out, "group 'readers': decoder LoRA"),
          "CLI on passages: status %d, output:\n%s", st2, out);
    mn_store_group gr;
    CHECK(mn_store_group_get(s, "readers", &gr) == 0 && !strcmp(gr.adapter_path, lora), "the group records %s",
          lora);
}

int main(void) {
    openblas_set_num_threads(1);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_model, sizeof g_model, "%s/tiny.gguf", g_dir);
    snprintf(g_uio, sizeof g_uio, "%s/uio.gguf", g_dir);
    snprintf(g_sum, sizeof g_sum, "%s/summary.gguf", g_dir);
    snprintf(g_db, sizeof g_db, "%s/docs.db", g_dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 2, .n_head_kv = 1, .n_ff = 32, .n_layer = 2, .n_ctx = 256, .seed = 11};
    mn_model *m = NULL;
    CHECK(tiny_llama_write(&cfg, g_model) == 0 && mn_model_load(g_model, &m) == 0, "model: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    mn_adapter_params ap = mn_adapter_default_params(MN_COMP_UIO);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &ap, &a) == 0 && mn_adapter_save(a, g_uio) == 0, "uio adapter: %s", mn_last_error());
    mn_adapter_free(a);
    ap = mn_adapter_default_params(MN_COMP_SUMMARY);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8;
    a = NULL;
    CHECK(mn_adapter_init(m, &ap, &a) == 0 && mn_adapter_save(a, g_sum) == 0, "summary adapter: %s", mn_last_error());
    mn_adapter_free(a);
    CHECK(make_store(m) == 0, "store: %s", mn_last_error());
    mn_store *s = NULL;
    CHECK(mn_store_open_sqlite(g_db, 0, &s) == 0, "open: %s", mn_last_error());
    if (s) {
        test_parity(m, s, g_uio);
        test_parity(m, s, g_sum);
        test_run(m, s);
        test_malformed(m, s);
    }
    mn_store_close(s);
    mn_model_free(m);
    char rm[700];
    snprintf(rm, sizeof rm, "rm -rf %s", g_dir);
    if (!t_fail && system(rm)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
