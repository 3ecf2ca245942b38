/* doc.c - documents in memory, the public face of the LLoCO path (mnemo.h):
 * a document read into its compressed memory (docmem.c), saved and loaded as
 * a memory file (memfile.c), asked through the one generation loop the store
 * and the server share (answer.c). `mnemo compress` reads with mn_doc_read,
 * so a binding's memory file equals the CLI's. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/docmem.h"
#include "memory/kvstore.h"
#include "store/answer.h"
#include "store/sha256.h"

struct mn_doc {
    mn_docmem d;
    const mn_model *m;
    const mn_adapter *a;
};

static int tokenize(const mn_model *m, const char *text, size_t len, int bos, int32_t **ids, int64_t *n) {
    return mn_tokenize_new(mn_model_tokenizer(m), text, len, bos, 0, ids, n);
}

int mn_doc_read(const mn_model *m, const mn_adapter *a, const char *text, size_t len, int exact, int n_threads,
                mn_progress_fn progress, void *user, mn_doc **out) {
    *out = NULL;
    if (!m || !a || (!text && len)) return mn_error(MN_EINVAL, "doc read: missing model, adapter or text");
    if (exact != MN_DOC_EXACT_NONE && exact != MN_DOC_EXACT_TOKENS && exact != MN_DOC_EXACT_KV)
        return mn_error(MN_EINVAL, "doc read: exact is MN_DOC_EXACT_NONE, _TOKENS or _KV (got %d)", exact);
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = tokenize(m, text ? text : "", len, 1, &ids, &n);
    if (rc) return rc;
    /* BOS alone is no text */
    if (n == 0 || (n == 1 && ids[0] == mn_token_bos(mn_model_tokenizer(m)))) {
        free(ids);
        return mn_error(MN_EINVAL, "the document has no text to read");
    }
    mn_doc *d = calloc(1, sizeof *d);
    if (!d) {
        free(ids);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    const mn_compress_progress pr = {progress, user};
    rc = mn_docmem_compress_progress(m, a, ids, n, n_threads, progress ? &pr : NULL, &d->d);
    free(ids);
    if (rc) {
        free(d);
        return rc;
    }
    if (exact == MN_DOC_EXACT_NONE) mn_docmem_drop_exact(&d->d);
    else if (exact == MN_DOC_EXACT_KV && d->d.n_exact > 0 && (rc = mn_docmem_add_cells(m, a, &d->d, n_threads))) {
        mn_docmem_release(&d->d);
        free(d);
        return rc;
    }
    d->m = m, d->a = a;
    *out = d;
    return MN_OK;
}

int mn_doc_load(const mn_model *m, const mn_adapter *a, const char *path, mn_doc **out) {
    *out = NULL;
    if (!m || !a || !path) return mn_error(MN_EINVAL, "doc load: missing model, adapter or path");
    mn_doc *d = calloc(1, sizeof *d);
    if (!d) return mn_error(MN_ENOMEM, "out of memory");
    const int rc = mn_docmem_load(path, m, a, &d->d);
    if (rc) {
        free(d);
        return rc;
    }
    d->m = m, d->a = a;
    *out = d;
    return MN_OK;
}

int mn_doc_save(const mn_doc *d, const char *path, const char *title, int f32) {
    if (!d || !path) return mn_error(MN_EINVAL, "doc save: missing document or path");
    return mn_docmem_save_titled(&d->d, d->m, d->a, path, f32, title);
}

void mn_doc_free(mn_doc *d) {
    if (!d) return;
    mn_docmem_release(&d->d);
    free(d);
}

void mn_doc_get_info(const mn_doc *d, mn_doc_info *out) {
    memset(out, 0, sizeof *out);
    if (!d) return;
    out->tokens = d->d.n_tokens;
    out->memory_slots = d->d.n_slots;
    out->raw_cells = d->d.n_raw;
    out->kv_cells = mn_docmem_cells(&d->d);
    out->exact_tokens = d->d.n_exact;
    out->exact_segments = d->d.n_exact && d->d.exact_seg ? d->d.n_exact / d->d.exact_seg : 0;
    out->exact_cell_bytes = d->d.cells ? (int64_t)d->d.n_exact * (int64_t)mn_kvstore_cell_bytes(d->m) : 0;
}

int mn_doc_digest(const mn_doc *d, char out[65]) {
    out[0] = 0;
    if (!d) return mn_error(MN_EINVAL, "doc digest: no document");
    const mn_docmem *x = &d->d;
    mn_sha256_ctx c;
    mn_sha256_init(&c);
    const int64_t head[8] = {x->kind, x->n_slots, x->n_tokens, x->n_raw, x->n_head, x->n_layer, x->dim, x->n_exact};
    mn_sha256_update(&c, head, sizeof head);
    if (x->n_raw) mn_sha256_update(&c, x->raw, sizeof(int32_t) * (size_t)x->n_raw);
    const size_t cells = (size_t)x->n_layer * (size_t)x->n_slots * (size_t)x->dim;
    if (x->k && cells) mn_sha256_update(&c, x->k, sizeof(float) * cells);
    if (x->v && cells) mn_sha256_update(&c, x->v, sizeof(float) * cells);
    if (x->n_exact) {
        mn_sha256_update(&c, x->exact, sizeof(int32_t) * (size_t)x->n_exact);
        const size_t re = (size_t)(x->n_exact / x->exact_seg) * (size_t)x->n_layer * MN_RECALL_REP * (size_t)x->dim;
        if (x->rep) mn_sha256_update(&c, x->rep, sizeof(float) * re);
        if (x->rep_sh) mn_sha256_update(&c, x->rep_sh, sizeof(float) * re);
    }
    uint8_t h[32];
    mn_sha256_final(&c, h);
    for (int i = 0; i < 32; i++) {
        static const char hex[] = "0123456789abcdef";
        out[2 * i] = hex[h[i] >> 4], out[2 * i + 1] = hex[h[i] & 15];
    }
    out[64] = 0;
    return MN_OK;
}

mn_ask_params mn_ask_default_params(void) {
    mn_ask_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 256;
    p.recall = MN_RECALL_DEFAULT_K;
    p.local = MN_RECALL_DEFAULT_LOCAL;
    p.recall_every = MN_RECALL_DEFAULT_EVERY;
    return p;
}

int mn_doc_ask(const mn_doc *d, const char *question, const mn_ask_params *p, mn_text_fn on_text, void *user,
               char **answer, mn_ask_stats *st) {
    if (answer) *answer = NULL;
    if (st) memset(st, 0, sizeof *st);
    if (!d || !question) return mn_error(MN_EINVAL, "doc ask: missing document or question");
    const mn_ask_params dp = mn_ask_default_params();
    if (!p) p = &dp;
    int rc = mn_ask_params_check(p);
    if (rc) return rc;
    /* the cells the answer needs: the memory, what recall may page, the prompt and the answer, within the
     * model's trained positions (mn_answer pages fewer segments where they do not fit) */
    const mn_docmem *mems[1] = {&d->d};
    const mn_chat_msg msg = {"user", question};
    char *prompt = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    rc = mn_chat_format(mn_model_tokenizer(d->m), &msg, 1, 1, &prompt);
    if (!rc) rc = tokenize(d->m, prompt, strlen(prompt), 1, &ids, &n);
    free(prompt), free(ids);
    if (rc) return rc;
    const int32_t k = p->recall ? mn_docmem_recall_k(mems, 1, p->recall) : 0;
    int64_t need = mn_docmem_cells(&d->d) + (k > 0 ? mn_docmem_recall_cells(mems, 1, k) : 0) + n + p->max_tokens + 1;
    const int64_t limit = mn_model_n_ctx_train(d->m);
    if (need > limit) need = limit; /* a longer memory keeps its newest slots (mn_answer) */
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)need;
    cp.n_threads = p->n_threads;
    mn_context *c = NULL;
    if ((rc = mn_context_create(d->m, &cp, &c))) return rc;
    mn_answer_acc acc = {on_text, user, NULL, 0, 0, 0};
    mn_answer_request r;
    memset(&r, 0, sizeof r);
    r.msgs = &msg, r.n_msgs = 1;
    r.mems = mems, r.n_mems = 1;
    r.max_tokens = p->max_tokens;
    r.sampling = mn_sampler_default_params();
    r.sampling.temperature = p->temperature;
    r.sampling.seed = p->seed;
    r.on_piece = mn_answer_acc_piece, r.user = &acc;
    r.recall = mn_recall_default_opts(p->recall);
    r.recall.local = p->local;
    r.recall.every = p->recall_every;
    mn_answer_stats as;
    rc = mn_answer(c, d->a, &r, &as);
    rc = mn_answer_acc_finish(&acc, rc, &as, mn_kv_n_cells(c), answer, st);
    mn_context_free(c);
    return rc;
}
