/* docstore.c - a document store as one handle (mnemo.h, docstore.h): what
 * `mnemo store` does per command (open, bind the model, resolve the
 * compressor, ingest, retrieve, answer with the group's decoder adapter),
 * kept once here for the CLI and the bindings, with the server's JSON shapes. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "memory/memory.h"
#include "store/docstore.h"
#include "store/embed.h"
#include "store/grouplora.h"
#include "store/memcache.h"

struct mn_docstore {
    mn_store *s;
    const mn_model *m;
    mn_adapter *a;          /* loaded on first need */
    char adapter_path[MN_STORE_PATH_CAP];
    int record;             /* the first add records adapter_path as the store's compressor */
    int n_threads;
    int exact_kv;           /* adds keep the exact segments' cells too (mn_docstore_set_exact) */
    mn_memcache *mc;        /* memories loaded for answers (built with a) */
    mn_group_loras *gl;     /* groups' decoder adapters */
    mn_context *embed;      /* retrieval's question embeddings */
    mn_context *ctx;        /* answers, the model's trained context */
    pthread_mutex_t mu;
};

/* ------------------------------------------------------------ JSON shapes */

void mn_store_add_memory_parts(cJSON *o, int64_t tokens, int32_t slots, int32_t raw, int32_t exact, int exact_kv,
                               int64_t cells) {
    cJSON_AddNumberToObject(o, "memory_slots", slots);
    cJSON_AddNumberToObject(o, "raw_cells", raw);
    cJSON_AddNumberToObject(o, "kv_cells", (double)cells);
    cJSON_AddNumberToObject(o, "exact_tokens", exact);
    /* how recall pages a segment: from its stored 8-bit cells, or by decoding its ids */
    cJSON_AddStringToObject(o, "exact", exact < 0 ? "unknown" : exact == 0 ? "none" : exact_kv ? "kv" : "tokens");
    cJSON_AddNumberToObject(o, "ratio", cells > 0 ? (double)tokens / (double)cells : 0.0);
}

cJSON *mn_store_doc_json(mn_store *s, const mn_store_doc *d) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "id", (double)d->id);
    cJSON_AddStringToObject(o, "object", "document");
    cJSON_AddStringToObject(o, "title", d->title);
    cJSON_AddStringToObject(o, "group", d->group);
    cJSON_AddStringToObject(o, "sha256", d->sha256);
    cJSON_AddNumberToObject(o, "tokens", (double)d->n_tokens);
    mn_store_mem_parts p;
    mn_store_doc_parts(s, d, &p); /* an unreadable file: its parts -1 */
    mn_store_add_memory_parts(o, d->n_tokens, p.slots, p.raw, p.exact, p.exact_kv, p.cells);
    cJSON_AddNumberToObject(o, "bytes", (double)d->mem_bytes);
    cJSON_AddNumberToObject(o, "created", (double)d->created);
    return o;
}

cJSON *mn_ingest_json(const mn_ingest_result *r, const char *title, const char *group) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    cJSON_AddStringToObject(o, "object", "document");
    cJSON_AddStringToObject(o, "title", title ? title : "");
    cJSON_AddStringToObject(o, "group", group ? group : MN_STORE_DEFAULT_GROUP);
    cJSON_AddNumberToObject(o, "tokens", (double)r->n_tokens);
    mn_store_add_memory_parts(o, r->n_tokens, r->n_slots, r->n_raw, r->n_exact, r->exact_kv, r->n_cells);
    cJSON_AddNumberToObject(o, "bytes", (double)r->mem_bytes);
    cJSON_AddNumberToObject(o, "chunks", r->n_chunks);
    cJSON_AddBoolToObject(o, "existed", r->existed);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    return o;
}

void mn_store_unlink_files(mn_store *s, char *files) {
    for (char *sv = NULL, *f = strtok_r(files, "\n", &sv); f; f = strtok_r(NULL, "\n", &sv)) {
        char p[MN_STORE_PATH_CAP];
        snprintf(p, sizeof p, "%s/%s", mn_store_mem_dir(s), f);
        unlink(p);
    }
}

/* Prints o into *json and deletes it. */
static int take_json(cJSON *o, char **json) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!t) return mn_error(MN_ENOMEM, "out of memory");
    *json = t;
    return MN_OK;
}

/* --------------------------------------------------------------- handle */

int mn_docstore_open(const char *db, const mn_model *m, const char *adapter, const char *fallback, int n_threads,
                     mn_docstore **out) {
    return mn_docstore_open_flags(db, MN_STORE_CREATE, m, adapter, fallback, n_threads, out);
}

int mn_docstore_open_flags(const char *db, int flags, const mn_model *m, const char *adapter, const char *fallback,
                           int n_threads, mn_docstore **out) {
    *out = NULL;
    if (!db || !*db || !m) return mn_error(MN_EINVAL, "docstore open: missing database or model");
    mn_docstore *ds = calloc(1, sizeof *ds);
    if (!ds) return mn_error(MN_ENOMEM, "out of memory");
    ds->m = m;
    ds->n_threads = n_threads;
    pthread_mutex_init(&ds->mu, NULL);
    int rc = mn_store_open(db, flags, &ds->s);
    if (!rc) rc = mn_ingest_bind_model(ds->s, m);
    if (!rc) {
        char rec[MN_STORE_PATH_CAP] = "";
        const int have = mn_store_meta_get(ds->s, "adapter_path", rec, sizeof rec) == MN_OK;
        /* given: used and recorded; else the store's; else the fallback, recorded by the first add */
        const char *ap = adapter ? adapter : have ? rec : fallback;
        ds->record = adapter || !have;
        if (ap) {
            char abs[PATH_MAX];
            snprintf(ds->adapter_path, sizeof ds->adapter_path, "%s", realpath(ap, abs) ? abs : ap);
        }
    }
    if (rc) {
        mn_docstore_close(ds);
        return rc;
    }
    *out = ds;
    return MN_OK;
}

void mn_docstore_close(mn_docstore *ds) {
    if (!ds) return;
    mn_context_free(ds->ctx);
    mn_context_free(ds->embed);
    mn_group_loras_free(ds->gl);
    mn_memcache_free(ds->mc);
    mn_adapter_free(ds->a);
    mn_store_close(ds->s);
    pthread_mutex_destroy(&ds->mu);
    free(ds);
}

mn_store *mn_docstore_store(mn_docstore *ds) { return ds->s; }

static int need_adapter(mn_docstore *ds) {
    if (ds->a) return MN_OK;
    if (!ds->adapter_path[0])
        return mn_error(MN_EINVAL, "the store records no compressor adapter and none was given");
    return mn_adapter_load(ds->m, ds->adapter_path, &ds->a);
}

/* The adapter whose memories a listing describes: the loaded one, else the one the store records. */
static uint64_t list_hash(mn_docstore *ds) {
    return ds->a ? mn_adapter_hash(ds->a) : mn_store_recorded_adapter_hash(ds->s);
}

/* ---------------------------------------------------------------- calls */

int mn_docstore_set_exact(mn_docstore *ds, int exact) {
    if (!ds) return mn_error(MN_EINVAL, "docstore set exact: no store");
    if (exact != MN_DOC_EXACT_TOKENS && exact != MN_DOC_EXACT_KV)
        return mn_error(MN_EINVAL, "a store keeps each document's exact part: exact is MN_DOC_EXACT_TOKENS or "
                                   "MN_DOC_EXACT_KV (got %d)", exact);
    pthread_mutex_lock(&ds->mu);
    ds->exact_kv = exact == MN_DOC_EXACT_KV;
    pthread_mutex_unlock(&ds->mu);
    return MN_OK;
}

int mn_docstore_add(mn_docstore *ds, const char *text, size_t len, const char *title, const char *source,
                    const char *group, char **json) {
    if (json) *json = NULL;
    if (!ds || (!text && len)) return mn_error(MN_EINVAL, "docstore add: missing store or text");
    pthread_mutex_lock(&ds->mu);
    int rc = need_adapter(ds);
    if (!rc && ds->record && !(rc = mn_store_record_adapter(ds->s, ds->adapter_path, mn_adapter_hash(ds->a))))
        ds->record = 0;
    mn_ingest_result r;
    memset(&r, 0, sizeof r);
    const mn_ingest_doc d = {title ? title : "", source ? source : "", group, text ? text : "", len, ds->exact_kv};
    if (!rc) rc = mn_ingest(ds->s, NULL, ds->m, ds->a, &d, ds->n_threads, &r);
    if (!rc && json) rc = take_json(mn_ingest_json(&r, d.title, group), json);
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

int mn_docstore_list(mn_docstore *ds, char **json) {
    *json = NULL;
    pthread_mutex_lock(&ds->mu);
    mn_store_doc *d = NULL;
    int64_t n = 0;
    int rc = mn_store_list(ds->s, list_hash(ds), &d, &n);
    if (!rc) {
        cJSON *arr = cJSON_CreateArray();
        for (int64_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, mn_store_doc_json(ds->s, &d[i]));
        rc = take_json(arr, json);
        free(d);
    }
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

int mn_docstore_get(mn_docstore *ds, int64_t id, char **json) {
    *json = NULL;
    pthread_mutex_lock(&ds->mu);
    mn_store_doc d;
    int rc = mn_store_get(ds->s, id, list_hash(ds), &d);
    if (!rc) rc = take_json(mn_store_doc_json(ds->s, &d), json);
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

int mn_docstore_remove(mn_docstore *ds, int64_t id) {
    pthread_mutex_lock(&ds->mu);
    char files[4096] = "";
    int rc = mn_store_remove(ds->s, id, files, sizeof files);
    /* after the commit: a kill here leaves only unreferenced files (store verify --gc) */
    if (!rc) {
        mn_store_unlink_files(ds->s, files);
        if (ds->mc) mn_memcache_forget(ds->mc, id);
    }
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

static int retrieve_locked(mn_docstore *ds, const char *question, int k, mn_retrieval_hit *hits, int *n) {
    *n = 0;
    if (!question) return mn_error(MN_EINVAL, "no question");
    if (k < 1 || k > MN_DOCSTORE_MAX_K) return mn_error(MN_EINVAL, "k must be 1..%d (got %d)", MN_DOCSTORE_MAX_K, k);
    if (!ds->embed) {
        mn_context_params cp = mn_context_default_params();
        cp.n_threads = ds->n_threads;
        cp.n_ctx = MN_EMBED_CHUNK;
        int rc = mn_context_create(ds->m, &cp, &ds->embed);
        if (rc) return rc;
    }
    return mn_retrieve(ds->s, ds->embed, question, NULL, k, hits, n);
}

int mn_docstore_retrieve(mn_docstore *ds, const char *question, int k, mn_retrieval_hit *hits, int *n) {
    pthread_mutex_lock(&ds->mu);
    const int rc = retrieve_locked(ds, question, k, hits, n);
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

int mn_docstore_query(mn_docstore *ds, const char *question, int k, char **json) {
    *json = NULL;
    mn_retrieval_hit hits[MN_DOCSTORE_MAX_K];
    int nh = 0;
    pthread_mutex_lock(&ds->mu);
    int rc = retrieve_locked(ds, question, k, hits, &nh);
    cJSON *arr = rc ? NULL : cJSON_CreateArray();
    for (int i = 0; arr && i < nh && !rc; i++) {
        mn_store_doc d;
        if ((rc = mn_store_get(ds->s, hits[i].doc_id, 0, &d))) break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)d.id);
        cJSON_AddStringToObject(o, "title", d.title);
        cJSON_AddStringToObject(o, "group", d.group);
        cJSON_AddNumberToObject(o, "score", hits[i].score);
        cJSON_AddNumberToObject(o, "bm25_rank", hits[i].rank_bm25);
        cJSON_AddNumberToObject(o, "bm25", hits[i].bm25);
        cJSON_AddNumberToObject(o, "dense_rank", hits[i].rank_dense);
        cJSON_AddNumberToObject(o, "dense", hits[i].dense);
        cJSON_AddItemToArray(arr, o);
    }
    if (!rc) rc = take_json(arr, json);
    else cJSON_Delete(arr);
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

static int answer_locked(mn_docstore *ds, const char *question, const int64_t *ids, int n_ids, int k,
                         const mn_ask_params *p, mn_answer_piece_fn on_piece, void *user, mn_store_doc *docs,
                         int *n_docs, int *lora_used, mn_answer_stats *st, int64_t *kv_cells) {
    *n_docs = 0;
    *kv_cells = 0;
    if (lora_used) *lora_used = 0;
    if (!question) return mn_error(MN_EINVAL, "no question");
    if (n_ids < 0 || n_ids > MN_DOCSTORE_MAX_K || (n_ids > 0 && !ids))
        return mn_error(MN_EINVAL, "0..%d document ids (got %d)", MN_DOCSTORE_MAX_K, n_ids);
    int rc = mn_ask_params_check(p);
    if (!rc) rc = need_adapter(ds);
    const int threads = p->n_threads > 0 ? p->n_threads : ds->n_threads;
    if (!rc && ds->ctx && threads > 0 && mn_context_n_threads(ds->ctx) != threads) { /* asked for other threads */
        mn_context_free(ds->ctx);
        ds->ctx = NULL;
    }
    if (!rc && !ds->ctx) {
        mn_context_params cp = mn_context_default_params();
        cp.n_threads = threads;
        cp.n_ctx = mn_model_n_ctx_train(ds->m);
        rc = mn_context_create(ds->m, &cp, &ds->ctx);
    }
    if (!rc && !ds->mc) rc = mn_memcache_create(ds->m, ds->a, 0, &ds->mc);
    if (!rc && !ds->gl) rc = mn_group_loras_create(ds->m, &ds->gl);
    int64_t chosen[MN_DOCSTORE_MAX_K];
    int nc = 0;
    if (!rc && n_ids > 0) {
        memcpy(chosen, ids, sizeof(int64_t) * (size_t)n_ids);
        nc = n_ids;
    } else if (!rc) {
        mn_retrieval_hit hits[MN_DOCSTORE_MAX_K];
        rc = retrieve_locked(ds, question, k, hits, &nc);
        for (int i = 0; i < nc; i++) chosen[i] = hits[i].doc_id;
    }
    /* room for the question and the answer beside the memories */
    const int64_t budget = mn_context_n_ctx(ds->ctx) - 512 - p->max_tokens;
    if (!rc) rc = mn_retrieve_select(ds->s, chosen, nc, n_ids == 0, mn_adapter_hash(ds->a), budget, docs, n_docs);
    if (!rc && *n_docs == 0) rc = mn_error(MN_ENOTFOUND, "no stored document matches the question");
    const mn_docmem *mems[MN_DOCSTORE_MAX_K];
    int nm = 0;
    for (int i = 0; i < *n_docs && !rc; i++) {
        char path[MN_STORE_PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", mn_store_mem_dir(ds->s), docs[i].mem_file);
        if (!(rc = mn_memcache_get(ds->mc, docs[i].id, path, docs[i].mem_checksum, &mems[nm]))) nm++;
    }
    /* the first document's group decides the decoder adapter (LLoCO's one adapter per request) */
    const mn_lora_set *lora = NULL;
    if (!rc) rc = mn_group_loras_get(ds->gl, ds->s, docs[0].group, &lora);
    if (!rc && lora_used) *lora_used = lora != NULL;
    if (!rc) {
        const mn_chat_msg msg = {"user", question};
        mn_answer_request r;
        memset(&r, 0, sizeof r);
        r.msgs = &msg, r.n_msgs = 1;
        r.mems = mems, r.n_mems = nm;
        r.max_tokens = p->max_tokens;
        r.sampling = mn_sampler_default_params();
        r.sampling.temperature = p->temperature;
        r.sampling.seed = p->seed;
        r.lora = lora;
        r.recall = mn_recall_default_opts(p->recall);
        r.recall.local = p->local;
        r.recall.every = p->recall_every;
        r.on_piece = on_piece, r.user = user;
        rc = mn_answer(ds->ctx, ds->a, &r, st);
        *kv_cells = mn_kv_n_cells(ds->ctx);
    }
    for (int i = 0; i < nm; i++) mn_memcache_put(ds->mc, mems[i]);
    return rc;
}

int mn_docstore_answer(mn_docstore *ds, const char *question, const int64_t *ids, int n_ids, int k,
                       const mn_ask_params *p, mn_answer_piece_fn on_piece, void *user, mn_store_doc *docs,
                       int *n_docs, int *lora, mn_answer_stats *st, int64_t *kv_cells) {
    const mn_ask_params dp = mn_ask_default_params();
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&ds->mu);
    const int rc =
        answer_locked(ds, question, ids, n_ids, k, p ? p : &dp, on_piece, user, docs, n_docs, lora, st, kv_cells);
    pthread_mutex_unlock(&ds->mu);
    return rc;
}

int mn_docstore_ask(mn_docstore *ds, const char *question, const int64_t *ids, int n_ids, int k,
                    const mn_ask_params *p, mn_text_fn on_text, void *user, char **answer, char **sources,
                    mn_ask_stats *st) {
    if (answer) *answer = NULL;
    if (sources) *sources = NULL;
    if (st) memset(st, 0, sizeof *st);
    if (!ds) return mn_error(MN_EINVAL, "docstore ask: no store");
    mn_store_doc *docs = malloc(sizeof *docs * MN_DOCSTORE_MAX_K);
    if (!docs) return mn_error(MN_ENOMEM, "out of memory");
    mn_answer_acc acc = {on_text, user, NULL, 0, 0, 0};
    mn_answer_stats as;
    int64_t cells = 0;
    int nd = 0;
    int rc = mn_docstore_answer(ds, question, ids, n_ids, k, p, mn_answer_acc_piece, &acc, docs, &nd, NULL, &as,
                                &cells);
    char *text = NULL;
    rc = mn_answer_acc_finish(&acc, rc, &as, cells, &text, st);
    if (!rc && sources) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; arr && i < nd; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", (double)docs[i].id);
            cJSON_AddStringToObject(o, "title", docs[i].title);
            cJSON_AddStringToObject(o, "group", docs[i].group);
            cJSON_AddNumberToObject(o, "tokens", (double)docs[i].n_tokens);
            cJSON_AddNumberToObject(o, "kv_cells", docs[i].n_slots);
            cJSON_AddItemToArray(arr, o);
        }
        rc = take_json(arr, sources);
    }
    free(docs);
    if (!rc && answer) *answer = text;
    else free(text);
    return rc;
}
