/* cmd_finetune.c - `mnemo finetune`: LLoCO's in-domain tuning. A LoRA on the
 * decoder learns, over one document group of a store, to predict each
 * segment of its documents' text from the compressed memory of what precedes
 * it (the compressor adapter stays frozen). The LoRA is written next to the
 * store's memories and recorded as the group's adapter, which answering then
 * installs per request. With --qa, question-answer pairs join the text: the
 * decoder reads a document's stored memory and the question exactly as
 * answering lays them out, and learns the answer (store/qaset.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "memory/adapter.h"
#include "store/qaset.h"
#include "store/sha256.h"
#include "store/store.h"
#include "train/dist.h"
#include "train/train.h"

#define CMD "finetune"

static void usage(void) {
    printf("usage: mnemo finetune --db FILE|postgresql://... --group G [-a ADAPTER] [-m MODEL] [-o LORA.gguf] [options]\n\n"
           "Trains a decoder LoRA for one document group on its documents' text, each segment\n"
           "read after the compressed memory of the earlier ones (the compressor adapter -a is\n"
           "frozen; default: the one the store's memories were made with), and records it as the\n"
           "group's adapter in the store.\n\n"
           "  -o FILE        the LoRA (default: lora-<group>.gguf in the store's memory directory)\n"
           "  --mem-dir DIR  a PostgreSQL store's memory directory (or $MNEMO_MEM_DIR)\n"
           "  --rank R       LoRA rank (default 8), --alpha A (16), --targets qkvo subset (qv)\n"
           "  --steps S      (default 100), --segments N (4), --batch B (1), --lr LR (1e-3),\n"
           "  --bptt MODE, --tau T, --warmup N, --eval-every K, --seed S, -t N: as for 'mnemo train'\n"
           "  --qa FILE      question-answer pairs, one JSON object a line:\n"
           "                   {\"doc\": ID or \"title\", \"question\": \"...\", \"answer\": \"...\"}\n"
           "                 the decoder reads that document's stored memory and the question in the\n"
           "                 chat template answering uses; the loss is on the answer's tokens only.\n"
           "                 {\"context\": \"passage\", ...} instead of \"doc\": the passage is read as\n"
           "                 exact text (as recall pages segments back), or with \"inline\": true as the\n"
           "                 start of the user's message (as ask --doc sends a document); a group\n"
           "                 without documents then trains on its pairs' passages\n"
           "                 Every line is checked before training (errors name FILE:LINE).\n"
           "  --qa-mix F     share of steps on QA pairs, spread evenly (default 0.5: text and QA\n"
           "                 steps alternate; 1: QA only); a QA step draws --batch pairs at random\n");
}

/* One training text into the fine-tuning folder; a message and 1 when it cannot be written. */
static int write_text(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(text, 1, len, f) != len;
    if (f && fclose(f)) bad = 1;
    if (bad) fprintf(stderr, "mnemo finetune: cannot write %s: %s\n", path, strerror(errno));
    return bad;
}

static int write_group_texts(mn_store *s, const char *group, const char *dir, int *n_docs) {
    mn_store_doc *docs = NULL;
    int64_t n = 0;
    int rc = mn_store_list(s, 0, &docs, &n);
    if (rc) return cli_fail("store");
    *n_docs = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        if (strcmp(docs[i].group, group)) continue;
        char *text = NULL;
        size_t len = 0;
        if (mn_store_chunk_text(s, docs[i].id, &text, &len)) {
            rc = cli_fail("store");
            break;
        }
        char path[MN_STORE_PATH_CAP + 64];
        snprintf(path, sizeof path, "%s/doc-%lld.txt", dir, (long long)docs[i].id);
        rc = write_text(path, text, len);
        free(text);
        (*n_docs)++;
    }
    free(docs);
    return rc;
}

/* A group without documents trains on its QA file's passages: they are its texts too. */
static int write_passages(const mn_qaset *qs, const char *dir, int *n_docs) {
    int32_t n = 0;
    mn_qaset_examples(qs, &n);
    for (int32_t i = 0; i < n; i++) {
        const char *t = mn_qaset_context(qs, i);
        if (!t) continue;
        char path[MN_STORE_PATH_CAP + 64];
        snprintf(path, sizeof path, "%s/doc-passage-%d.txt", dir, i);
        if (write_text(path, t, strlen(t))) return 1;
        (*n_docs)++;
    }
    return 0;
}

/* Like `mnemo train`'s progress line, saying which kind of step ran and the
 * QA loss (answer tokens, over the pairs) when there are pairs. */
static int progress(const mn_train_progress *p, void *ud) {
    const int has_qa = *(const int *)ud;
    char val[32] = "-", qa[32] = "";
    if (mn_dist_rank() != 0) return 0; /* rank 0 speaks for the job */
    if (!isnan(p->val_loss)) snprintf(val, sizeof val, "%.4f", p->val_loss);
    if (has_qa) snprintf(qa, sizeof qa, isnan(p->val_qa) ? "  qa -" : "  qa %.4f", p->val_qa);
    fprintf(stderr, "step %5lld/%lld  %-4s  loss %.4f  val %s%s  lr %.2e  |g| %.3f  ETA %.0fs\n", (long long)p->step,
            (long long)p->steps, p->qa_step ? "qa" : "text", p->loss, val, qa, p->lr, p->grad_norm, p->eta_s);
    return 0;
}

int cmd_finetune(int argc, char **argv) {
    mn_train_config c = mn_train_default_config();
    c.ckpt_every = 0;
    const char *db = NULL, *group = NULL, *model = NULL, *out = NULL, *qa_path = NULL;
    long v;
    double f;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!val) return cli_usage_error(CMD, "unknown option or missing value: '%s'", a);
        i++;
        if (!strcmp(a, "--db")) db = val;
        else if (!strcmp(a, "--mem-dir")) {
            if (cli_set_mem_dir(CMD, val)) return 2;
        } else if (!strcmp(a, "--db-timeout") || !strcmp(a, "--db-connect-timeout")) {
            if (cli_set_db_seconds(CMD, a, val)) return 2;
        } else if (!strcmp(a, "--group")) group = val;
        else if (!strcmp(a, "-m")) model = val;
        else if (!strcmp(a, "-a")) c.adapter_in = val;
        else if (!strcmp(a, "-o")) out = val;
        else if (!strcmp(a, "--targets")) c.dec_targets = val;
        else if (!strcmp(a, "--qa")) qa_path = val;
        else if (!strcmp(a, "--bptt")) {
            int mm = mn_bptt_parse(val);
            if (mm < 0) return cli_usage_error(CMD, "--bptt is full, tbptt, incremental, reservoir or unbiased");
            c.bptt = (mn_bptt_mode)mm;
        }
#define INT_OPT(name, lo, hi, dst)                                     \
    else if (!strcmp(a, name)) {                                       \
        if (cli_parse_int(CMD, name, val, lo, hi, &v)) return 2;       \
        dst = v;                                                       \
    }
#define FLT_OPT(name, lo, hi, dst)                                     \
    else if (!strcmp(a, name)) {                                       \
        if (cli_parse_float(CMD, name, val, lo, hi, &f)) return 2;     \
        dst = (float)f;                                                \
    }
        INT_OPT("--rank", 1, 4096, c.dec_rank)
        INT_OPT("--steps", 1, 1000000000L, c.steps)
        INT_OPT("--segments", 2, 4096, c.n_seg)
        INT_OPT("--batch", 1, 4096, c.batch)
        INT_OPT("--tau", 1, 4096, c.tau)
        INT_OPT("--warmup", 0, 1000000000L, c.warmup)
        INT_OPT("--eval-every", 0, 1000000000L, c.eval_every)
        INT_OPT("--seed", 0, 0x7fffffffL, c.seed)
        INT_OPT("-t", 1, 1024, c.n_threads)
        FLT_OPT("--alpha", 1e-6, 1e6, c.dec_alpha)
        FLT_OPT("--lr", 1e-9, 10, c.lr)
        FLT_OPT("--qa-mix", 1e-6, 1, c.qa_mix)
        else return cli_usage_error(CMD, "unknown option '%s'", a);
#undef INT_OPT
#undef FLT_OPT
    }
    if (!db || !group) return cli_usage_error(CMD, "--db and --group are required");
    mn_store *s = NULL;
    /* with QA pairs the store may be new: passages need no documents, and the group is recorded there */
    if (mn_store_open(db, qa_path ? MN_STORE_CREATE : 0, &s)) return cli_fail(db);
    char ad_buf[MN_STORE_PATH_CAP];
    if (!c.adapter_in) { /* the compressor the store's memories were made with */
        if (mn_store_meta_get(s, "adapter_path", ad_buf, sizeof ad_buf)) {
            mn_store_close(s);
            return cli_usage_error(CMD, "-a ADAPTER is required (the store records none)");
        }
        c.adapter_in = ad_buf;
    }
    mn_store_group g; /* a new group is fine where the QA pairs bring passages (checked once they load) */
    const int grc = mn_store_group_get(s, group, &g);
    if (grc && !(grc == MN_ENOTFOUND && qa_path)) {
        mn_store_close(s);
        return cli_fail("group");
    }
    char dir[MN_STORE_PATH_CAP], out_buf[MN_STORE_PATH_CAP + 64], cache[MN_STORE_PATH_CAP + 16],
        glob[MN_STORE_PATH_CAP + 16];
    snprintf(dir, sizeof dir, "%s/finetune-%s", mn_store_mem_dir(s), group);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(glob, sizeof glob, "%s/doc-*.txt", dir);
    if (!out) {
        snprintf(out_buf, sizeof out_buf, "%s/lora-%s.gguf", mn_store_mem_dir(s), group);
        out = out_buf;
    }
    int rc = 0, n_docs = 0;
    if (mkdir(dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "mnemo finetune: cannot create %s: %s\n", dir, strerror(errno));
        rc = 1;
    }
    /* under mpirun every rank trains on the texts rank 0 writes */
    if (!rc && mn_dist_init()) rc = cli_fail("finetune");
    const int lead = mn_dist_rank() == 0;
    if (!rc && lead) rc = write_group_texts(s, group, dir, &n_docs);
    if (!rc && mn_dist_size() > 1) {
        double nd = n_docs;
        if (mn_dist_sum_f64(&nd, 1)) rc = cli_fail("finetune"); /* also waits for rank 0's texts */
        n_docs = (int)nd;
    }
    if (!rc && n_docs == 0 && !qa_path) {
        fprintf(stderr, "mnemo finetune: group '%s' has no documents\n", group);
        rc = 1;
    }
    mn_model *m = NULL;
    if (!rc && cli_load_model(model, &m)) rc = 1;
    mn_adapter *ad = NULL;
    mn_qaset *qs = NULL;
    if (!rc && qa_path) { /* every pair checked, its memory loaded, before training */
        if (mn_adapter_load(m, c.adapter_in, &ad)) rc = cli_fail(c.adapter_in);
        else if (mn_qaset_load(s, m, ad, group, qa_path, &qs)) rc = cli_fail("--qa");
        else {
            c.qa = mn_qaset_examples(qs, &c.n_qa);
            if (lead)
                fprintf(stderr, "%d question-answer pairs over %d documents; %.0f%% of the steps\n", c.n_qa,
                        mn_qaset_n_docs(qs), 100.0 * c.qa_mix);
        }
    }
    if (!rc && qs && n_docs == 0) { /* the passages of the pairs are the texts */
        if (lead && (rc = write_passages(qs, dir, &n_docs))) rc = 1;
        if (!rc && mn_dist_size() > 1) {
            double nd = n_docs;
            if (mn_dist_sum_f64(&nd, 1)) rc = cli_fail("finetune");
            n_docs = (int)nd;
        }
        if (!rc && n_docs == 0) {
            fprintf(stderr, "mnemo finetune: group '%s' has no documents and %s no passages\n", group, qa_path);
            rc = 1;
        }
    }
    int has_qa = qs != NULL;
    if (!rc) {
        c.data_glob = glob, c.cache_dir = cache, c.dec_out = out;
        if (lead) fprintf(stderr, "fine-tuning a decoder LoRA for group '%s' on %d documents\n", group, n_docs);
        if (mn_train_run(m, &c, progress, &has_qa)) rc = cli_fail("finetune");
    }
    if (rc) mn_dist_abort(1); /* no rank may wait on a failed one */
    if (!rc && lead) { /* record it: the group's answers now use this LoRA */
        char *bytes = NULL, sha[65];
        size_t len = 0;
        if (cli_read_file(out, &bytes, &len)) rc = 1;
        else {
            mn_sha256_hex(bytes, len, sha);
            free(bytes);
            if (mn_store_group_set_adapter(s, group, out, sha)) rc = cli_fail("store");
            else printf("group '%s': decoder LoRA %s (sha256 %.16s...)\n", group, out, sha);
        }
    }
    mn_qaset_free(qs);
    mn_adapter_free(ad);
    mn_model_free(m);
    mn_store_close(s);
    mn_dist_finalize();
    return rc;
}
