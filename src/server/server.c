/* server.c - HTTP front, request queue and inference slots (see server.h).
 *
 * Threads: libmicrohttpd runs one thread per connection; those threads parse
 * and validate a request, put a job on the bounded queue and wait for it (a
 * streamed job's bytes are handed to MHD as they appear). N slot workers take
 * jobs off the queue, each with its own mn_context over the shared model.
 * The store is used under one mutex (SQLite handles are not shared across
 * threads otherwise); loaded memories are shared through the memory cache.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/threadpool.h"
#include "error.h"
#include "memory/memory.h"
#include "server/job.h"
#include "server/request.h"
#include "store/answer.h"
#include "store/grouplora.h"
#include "store/embed.h"
#include "store/ingest.h"
#include "store/memcache.h"
#include "store/retrieve.h"
#include "store/sha256.h"

/* latency histogram bounds, seconds */
static const double k_buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BUCKETS (sizeof k_buckets / sizeof k_buckets[0])

typedef struct {
    atomic_llong requests[6];  /* by status class: 1xx..5xx, index 1..5 */
    atomic_llong by_code[600];
    atomic_llong prompt_tokens, completion_tokens, documents_added;
    atomic_llong backend_errors; /* requests answered 503 because the store or the memory directory failed */
    atomic_llong lat_bucket[N_BUCKETS + 1], lat_count;
    atomic_llong lat_sum_us, ttft_sum_us, ttft_count;
} metrics;

typedef struct slot {
    struct mn_server *srv;
    int idx;
    pthread_t th;
    mn_context *ctx;
    atomic_llong kv_bytes;
} slot;

struct mn_server {
    mn_server_params p;
    const mn_model *m;
    const mn_adapter *a;
    mn_store *store;
    pthread_mutex_t store_mu;
    mn_memcache *cache;
    mn_group_loras *loras; /* decoder LoRA per document group */
    char model_id[128];
    char prompt_format[16]; /* how chat messages become the prompt: chatml, llama2, plain (a base model) */
    struct MHD_Daemon *d;
    int port;
    slot *slots;
    /* queue: a ring of waiting jobs */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    job **q;
    int q_head, q_len;
    int stopping;
    atomic_int busy, inflight, draining;
    metrics mx;
};

typedef struct {
    char *body;
    size_t len, cap;
    int too_large, status;
    double t0;
    job *j;
    int counted;
} conn_state;

static double now_s(void) { return mn_answer_now(); }

/* ---------------------------------------------------------------- queue */

static int enqueue(mn_server *s, job *j) {
    pthread_mutex_lock(&s->q_mu);
    if (s->stopping || s->q_len >= s->p.queue_cap) {
        pthread_mutex_unlock(&s->q_mu);
        return -1;
    }
    job_ref(j);
    s->q[(s->q_head + s->q_len) % s->p.queue_cap] = j;
    s->q_len++;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    return 0;
}

static job *dequeue(mn_server *s) {
    pthread_mutex_lock(&s->q_mu);
    while (!s->stopping && s->q_len == 0) pthread_cond_wait(&s->q_cv, &s->q_mu);
    job *j = NULL;
    if (s->q_len > 0) {
        j = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->p.queue_cap;
        s->q_len--;
    }
    pthread_mutex_unlock(&s->q_mu);
    return j;
}

static int queue_depth(mn_server *s) {
    pthread_mutex_lock(&s->q_mu);
    int n = s->q_len;
    pthread_mutex_unlock(&s->q_mu);
    return n;
}

/* -------------------------------------------------------------- workers */

static int on_piece(void *user, const char *text, size_t len) {
    job *j = user;
    pthread_mutex_lock(&j->mu);
    int rc = job_emit_text(j, text, len, 0);
    int stop = j->cancel;
    pthread_mutex_unlock(&j->mu);
    return rc || stop;
}

static const char *last_user_text(const job *j) {
    if (j->type == JOB_COMPLETION) return j->prompt;
    for (int i = j->n_msgs - 1; i >= 0; i--)
        if (!strcmp(j->msgs[i].role, "user")) return j->msgs[i].content;
    return j->n_msgs ? j->msgs[j->n_msgs - 1].content : "";
}

/* 0 when owner (NULL: keys not scoped) may use document id; another owner's
 * document is MN_ENOTFOUND, as a missing one. Caller holds store_mu. */
static int visible_to(mn_server *s, int64_t id, const char *owner) {
    int yes = 1, rc = owner ? mn_store_owns(s->store, id, owner, &yes) : 0;
    if (!rc && !yes) rc = mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)id);
    return rc;
}

/* The HTTP status of a library error: a backend that cannot serve now is 503 (with Retry-After, so
 * a client or balancer retries), a missing thing 404, a bad request 400; 500 is left for bugs. */
static int status_of(int rc) {
    return rc == MN_EUNAVAILABLE ? 503 : rc == MN_ENOTFOUND ? 404 : rc == MN_ERANGE || rc == MN_EINVAL ? 400 : 500;
}
static const char *type_of(int rc) {
    return rc == MN_EUNAVAILABLE ? "backend_unavailable_error"
           : rc == MN_ENOTFOUND ? "not_found_error"
           : rc == MN_ERANGE || rc == MN_EINVAL ? "invalid_request_error"
                                                : "server_error";
}

/* The memory directory as the server needs it (listed, read, written); else MN_EUNAVAILABLE naming it
 * and the cause: a lost mount or a changed permission is an outage of a backend, not a missing file. */
static int mem_dir_ok(mn_store *st) {
    const char *d = mn_store_mem_dir(st);
    struct stat sb;
    errno = 0;
    if (stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(d, R_OK | W_OK | X_OK) != 0)
        return mn_error(MN_EUNAVAILABLE, "memory directory %s unavailable: %s", d,
                        errno ? strerror(errno) : "not a directory");
    struct statvfs fs;
    if (statvfs(d, &fs) == 0 && fs.f_bavail == 0)
        return mn_error(MN_EUNAVAILABLE, "memory directory %s unavailable: its file system is full", d);
    return MN_OK;
}

static void run_answer(slot *sl, job *j) {
    mn_server *s = sl->srv;
    int64_t ids[64];
    int n_ids = 0, retrieved = 0;
    int rc = 0;
    const int64_t budget = mn_context_n_ctx(sl->ctx) - j->max_tokens - 64;
    pthread_mutex_lock(&s->store_mu);
    if (j->retrieve_k > 0) {
        mn_retrieval_hit hits[64];
        int nh = 0;
        rc = mn_retrieve(s->store, sl->ctx, last_user_text(j), j->owner, j->retrieve_k, hits, &nh);
        for (int i = 0; i < nh; i++) ids[n_ids++] = hits[i].doc_id;
        retrieved = 1;
    } else {
        for (int i = 0; i < j->n_docs; i++) ids[n_ids++] = j->doc_ids[i];
        /* checked again here: the owner may have deleted it while the request queued */
        for (int i = 0; i < n_ids && !rc; i++) rc = visible_to(s, ids[i], j->owner);
    }
    if (!rc) rc = mn_retrieve_select(s->store, ids, n_ids, retrieved, mn_adapter_hash(s->a), budget, j->used, &j->n_used);
    /* the best document's group decides the decoder LoRA (mnemo finetune) */
    const mn_lora_set *lora = NULL;
    if (!rc && j->n_used > 0) rc = mn_group_loras_get(s->loras, s->store, j->used[0].group, &lora);
    pthread_mutex_unlock(&s->store_mu);
    if (rc) {
        if (rc == MN_EUNAVAILABLE) atomic_fetch_add(&s->mx.backend_errors, 1);
        pthread_mutex_lock(&j->mu);
        job_fail(j, rc == MN_EINVAL ? 500 : status_of(rc), rc == MN_EINVAL ? "server_error" : type_of(rc), "%s",
                 mn_last_error());
        pthread_mutex_unlock(&j->mu);
        return;
    }
    const mn_docmem *mems[JOB_MAX_DOCS];
    int nm = 0;
    for (int i = 0; i < j->n_used && !rc; i++) {
        char p[MN_STORE_PATH_CAP];
        snprintf(p, sizeof p, "%s/%s", mn_store_mem_dir(s->store), j->used[i].mem_file);
        rc = mn_memcache_get(s->cache, j->used[i].id, p, j->used[i].mem_checksum, &mems[nm]);
        if (!rc) nm++;
        else if ((rc == MN_ENOTFOUND || rc == MN_EIO) && mem_dir_ok(s->store)) rc = MN_EUNAVAILABLE;
    }
    if (!rc) {
        mn_answer_request r;
        memset(&r, 0, sizeof r);
        if (j->type == JOB_CHAT) {
            r.msgs = j->msgs;
            r.n_msgs = j->n_msgs;
        } else {
            r.prompt = j->prompt;
        }
        r.mems = mems;
        r.n_mems = nm;
        r.lora = lora;
        r.max_tokens = j->max_tokens;
        r.sampling = j->sampling;
        r.ignore_eos = j->ignore_eos;
        r.deadline = j->deadline;
        r.cancel = &j->cancel;
        r.on_piece = on_piece;
        r.user = j;
        r.recall = mn_recall_default_opts(j->recall);
        r.recall.local = j->recall_local;
        r.recall.every = j->recall_every;
        rc = mn_answer(sl->ctx, s->a, &r, &j->st);
    }
    for (int i = 0; i < nm; i++) mn_memcache_put(s->cache, mems[i]);
    atomic_store(&sl->kv_bytes, (long long)mn_context_kv_bytes(sl->ctx));
    mn_kv_clear(sl->ctx);
    pthread_mutex_lock(&j->mu);
    if (rc) {
        if (rc == MN_EUNAVAILABLE) atomic_fetch_add(&s->mx.backend_errors, 1);
        job_fail(j, rc == MN_ENOTFOUND ? 500 : status_of(rc), rc == MN_ENOTFOUND ? "server_error" : type_of(rc), "%s",
                 mn_last_error());
    } else if (j->st.finish == MN_FINISH_TIMEOUT && !j->started) {
        job_fail(j, 504, "timeout_error", "the request did not finish within %.0f s", s->p.timeout_s);
    } else {
        job_emit_text(j, "", 0, 1);
        if (j->stream) {
            char *c = job_chunk_json(j, NULL, 0, job_finish_reason(j));
            if (c) job_emit_event(j, c);
            free(c);
            if (j->include_usage && (c = job_usage_json(j))) {
                job_emit_event(j, c);
                free(c);
            }
            job_emit_event(j, "[DONE]");
        }
        atomic_fetch_add(&s->mx.prompt_tokens, j->st.prompt_tokens);
        atomic_fetch_add(&s->mx.completion_tokens, j->st.completion_tokens);
        if (j->st.completion_tokens > 0) {
            atomic_fetch_add(&s->mx.ttft_sum_us, (long long)(j->st.t_first_token * 1e6));
            atomic_fetch_add(&s->mx.ttft_count, 1);
        }
    }
    pthread_mutex_unlock(&j->mu);
}

static void run_doc_add(slot *sl, job *j) {
    mn_server *s = sl->srv;
    mn_ingest_doc d = {j->title, "http upload", j->group, j->text, j->text_len, j->exact_kv};
    int rc = mn_ingest(s->store, &s->store_mu, s->m, s->a, &d, mn_context_n_threads(sl->ctx), &j->ing);
    if (!rc && j->owner) {
        /* Twice at most: the document found stored may lose its last owner
         * (and go) between the ingest and the grant; the second ingest then
         * stores it anew. */
        int added = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
            pthread_mutex_lock(&s->store_mu);
            rc = mn_store_grant(s->store, j->ing.id, j->owner, &added);
            pthread_mutex_unlock(&s->store_mu);
            if (rc != MN_ENOTFOUND || attempt) break;
            if ((rc = mn_ingest(s->store, &s->store_mu, s->m, s->a, &d, mn_context_n_threads(sl->ctx), &j->ing)))
                break;
        }
        /* "existed" is this owner's view: whether someone else stored the
         * text is not theirs to learn */
        if (!rc && added) j->ing.existed = 0;
    }
    pthread_mutex_lock(&j->mu);
    if (rc == MN_EIO && mem_dir_ok(s->store)) rc = MN_EUNAVAILABLE; /* the memory file could not be written there */
    if (rc == MN_EUNAVAILABLE) atomic_fetch_add(&s->mx.backend_errors, 1);
    if (rc)
        job_fail(j, rc == MN_EINVAL || rc == MN_EUNAVAILABLE ? status_of(rc) : 500,
                 rc == MN_EINVAL || rc == MN_EUNAVAILABLE ? type_of(rc) : "server_error", "%s", mn_last_error());
    else if (!j->ing.existed)
        atomic_fetch_add(&s->mx.documents_added, 1);
    pthread_mutex_unlock(&j->mu);
}

static void *worker(void *arg) {
    slot *sl = arg;
    mn_server *s = sl->srv;
    job *j;
    while ((j = dequeue(s))) {
        pthread_mutex_lock(&j->mu);
        int skip = j->cancel || (j->deadline > 0 && now_s() > j->deadline);
        if (skip && !j->http_status) job_fail(j, 504, "timeout_error", "the request waited past its deadline");
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&j->mu);
        if (!skip) {
            atomic_fetch_add(&s->busy, 1);
            if (j->type == JOB_DOC_ADD) run_doc_add(sl, j);
            else run_answer(sl, j);
            atomic_fetch_sub(&s->busy, 1);
        }
        pthread_mutex_lock(&j->mu);
        j->state = JOB_DONE;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        job_unref(j);
    }
    return NULL;
}

/* ------------------------------------------------------------ responses */

static enum MHD_Result send_text(struct MHD_Connection *c, conn_state *cs, int status, const char *type,
                                 const char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1"); /* queue full or draining: come back soon */
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (cs) cs->status = status;
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, conn_state *cs, int status, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return MHD_NO;
    enum MHD_Result r = send_text(c, cs, status, "application/json", s, strlen(s));
    free(s);
    return r;
}

static enum MHD_Result send_error(struct MHD_Connection *c, conn_state *cs, int status, const char *type,
                                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result send_error(struct MHD_Connection *c, conn_state *cs, int status, const char *type,
                                  const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNullToObject(e, "param");
    cJSON_AddNullToObject(e, "code");
    return send_json(c, cs, status, o);
}

/* ------------------------------------------------------------- handlers */


/* Streams the SSE bytes a worker appends to a job. */
static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->out_sent == j->out_len && j->state != JOB_DONE) pthread_cond_wait(&j->cv, &j->mu);
    ssize_t n;
    if (j->out_sent < j->out_len) {
        size_t avail = j->out_len - j->out_sent;
        n = (ssize_t)(avail < max ? avail : max);
        memcpy(buf, j->out + j->out_sent, (size_t)n);
        j->out_sent += (size_t)n;
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* Called when MHD is done with a streamed response (finished or the client
 * left): a job still running is cancelled. */
static void sse_free(void *cls) {
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    if (j->state != JOB_DONE) j->cancel = 1;
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
}

/* Queues a parsed job and answers the connection from it. */
static enum MHD_Result submit(mn_server *s, struct MHD_Connection *c, conn_state *cs, job *j, int success_status) {
    j->t_start = now_s();
    j->deadline = j->t_start + s->p.timeout_s;
    j->model = s->model_id;
    if (atomic_load(&s->draining))
        return send_error(c, cs, 503, "server_error", "the server is shutting down");
    if (enqueue(s, j))
        return send_error(c, cs, 503, "server_overloaded", "all %d slots are busy and the queue (%d) is full; retry "
                          "later", s->p.n_slots, s->p.queue_cap);
    pthread_mutex_lock(&j->mu);
    /* wait for the end, or (streaming) for the first event, so errors found
     * before any output still get a proper status */
    while (j->state != JOB_DONE && !(j->stream && j->started)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (now_s() > j->deadline + 5 && j->state != JOB_DONE) {
            /* the worker notices cancel between tokens; do not wait on it */
            j->cancel = 1;
            if (!j->http_status) job_fail(j, 504, "timeout_error", "the request did not finish within %.0f s",
                                          s->p.timeout_s);
            break;
        }
    }
    if (j->http_status) {
        int st = j->http_status;
        char err[512];
        const char *type = j->err_type ? j->err_type : "server_error";
        snprintf(err, sizeof err, "%s", j->err);
        j->cancel = 1;
        pthread_mutex_unlock(&j->mu);
        return send_error(c, cs, st, type, "%s", err);
    }
    if (j->stream) {
        pthread_mutex_unlock(&j->mu);
        job_ref(j);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, j, sse_free);
        if (!r) {
            job_unref(j);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        cs->status = 200;
        return ok;
    }
    char *body = job_response_json(j);
    pthread_mutex_unlock(&j->mu);
    if (!body) return send_error(c, cs, 500, "server_error", "out of memory");
    enum MHD_Result r = send_text(c, cs, success_status, "application/json", body, strlen(body));
    free(body);
    return r;
}

static enum MHD_Result list_documents(mn_server *s, struct MHD_Connection *c, conn_state *cs, const char *owner) {
    mn_store_doc *d = NULL;
    int64_t n = 0;
    pthread_mutex_lock(&s->store_mu);
    int rc = mn_store_list_owned(s->store, mn_adapter_hash(s->a), owner, &d, &n);
    pthread_mutex_unlock(&s->store_mu);
    if (rc == MN_EUNAVAILABLE) atomic_fetch_add(&s->mx.backend_errors, 1);
    if (rc) return send_error(c, cs, rc == MN_EUNAVAILABLE ? 503 : 500, type_of(rc == MN_EUNAVAILABLE ? rc : MN_EIO), "%s",
                              mn_last_error());
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, mn_store_doc_json(s->store, &d[i]));
    free(d);
    return send_json(c, cs, 200, o);
}

static enum MHD_Result one_document(mn_server *s, struct MHD_Connection *c, conn_state *cs, const char *ids, int del,
                                    const char *owner) {
    int64_t id;
    if (mn_request_doc_id(ids, &id)) return send_error(c, cs, 400, "invalid_request_error", "'%s' is not a document id", ids);
    pthread_mutex_lock(&s->store_mu);
    mn_store_doc d;
    char files[4096] = "";
    int rc;
    if (del && owner) { /* the document itself goes with its last owner */
        rc = mn_store_disown(s->store, id, owner, NULL, files, sizeof files);
    } else if (!(rc = visible_to(s, id, owner))) {
        rc = del ? mn_store_remove(s->store, id, files, sizeof files) : mn_store_get(s->store, id, mn_adapter_hash(s->a), &d);
    }
    if (!rc && del) mn_store_unlink_files(s->store, files);
    pthread_mutex_unlock(&s->store_mu);
    if (rc == MN_ENOTFOUND) return send_error(c, cs, 404, "not_found_error", "no document with id %lld", (long long)id);
    if (rc == MN_EUNAVAILABLE) atomic_fetch_add(&s->mx.backend_errors, 1);
    if (rc) return send_error(c, cs, rc == MN_EUNAVAILABLE ? 503 : 500, type_of(rc == MN_EUNAVAILABLE ? rc : MN_EIO), "%s",
                              mn_last_error());
    if (!del) return send_json(c, cs, 200, mn_store_doc_json(s->store, &d));
    mn_memcache_forget(s->cache, id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)id);
    cJSON_AddStringToObject(o, "object", "document");
    cJSON_AddBoolToObject(o, "deleted", 1);
    return send_json(c, cs, 200, o);
}

/* 200 only when a document request could succeed now: the store answers a query and the memory
 * directory can be listed, read and written; otherwise 503 naming the part that fails, so a load
 * balancer sends the traffic elsewhere until it recovers (the next probe reconnects the store). */
static enum MHD_Result health(mn_server *s, struct MHD_Connection *c, conn_state *cs) {
    char val[MN_STORE_PATH_CAP];
    pthread_mutex_lock(&s->store_mu);
    int src = mn_store_meta_get(s->store, "mem_dir", val, sizeof val);
    if (src == MN_ENOTFOUND) src = MN_OK; /* a SQLite store records no directory: it answered */
    int schema = 0;
    if (!src) src = mn_store_schema_version(s->store, &schema);
    char store_err[512] = "";
    if (src) snprintf(store_err, sizeof store_err, "%s", mn_last_error());
    pthread_mutex_unlock(&s->store_mu);
    const int drc = mem_dir_ok(s->store);
    char dir_err[512] = "";
    if (drc) snprintf(dir_err, sizeof dir_err, "%s", mn_last_error());
    const int draining = atomic_load(&s->draining), ok = !draining && !src && !drc;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", draining ? "draining" : ok ? "ok" : "unavailable");
    cJSON_AddStringToObject(o, "model", s->model_id);
    cJSON_AddStringToObject(o, "prompt_format", s->prompt_format);
    cJSON_AddNumberToObject(o, "slots", s->p.n_slots);
    cJSON_AddNumberToObject(o, "busy", atomic_load(&s->busy));
    cJSON_AddNumberToObject(o, "queue", queue_depth(s));
    cJSON *st = cJSON_AddObjectToObject(o, "store");
    cJSON_AddStringToObject(st, "backend", mn_store_backend(s->store));
    cJSON_AddBoolToObject(st, "ok", !src);
    if (!src) cJSON_AddNumberToObject(st, "schema_version", schema);
    if (src) cJSON_AddStringToObject(st, "error", store_err);
    cJSON *md = cJSON_AddObjectToObject(o, "memory_dir");
    cJSON_AddStringToObject(md, "path", mn_store_mem_dir(s->store));
    cJSON_AddBoolToObject(md, "ok", !drc);
    if (drc) cJSON_AddStringToObject(md, "error", dir_err);
    return send_json(c, cs, ok ? 200 : 503, o);
}

static enum MHD_Result metrics_page(mn_server *s, struct MHD_Connection *c, conn_state *cs) {
    size_t cap = 16384, n = 0;
    char *b = malloc(cap);
    if (!b) return MHD_NO;
#define P(...) n += (size_t)snprintf(b + n, n < cap ? cap - n : 0, __VA_ARGS__)
    P("# HELP mnemo_requests_total HTTP requests answered, by status code.\n# TYPE mnemo_requests_total counter\n");
    for (int code = 100; code < 600; code++) {
        long long v = atomic_load(&s->mx.by_code[code]);
        if (v) P("mnemo_requests_total{code=\"%d\"} %lld\n", code, v);
    }
    P("# HELP mnemo_prompt_tokens_total Prompt tokens decoded.\n# TYPE mnemo_prompt_tokens_total counter\n"
      "mnemo_prompt_tokens_total %lld\n", (long long)atomic_load(&s->mx.prompt_tokens));
    P("# HELP mnemo_completion_tokens_total Tokens generated.\n# TYPE mnemo_completion_tokens_total counter\n"
      "mnemo_completion_tokens_total %lld\n", (long long)atomic_load(&s->mx.completion_tokens));
    P("# HELP mnemo_backend_errors_total Requests answered 503 because the store or the memory directory could not "
      "serve.\n# TYPE mnemo_backend_errors_total counter\nmnemo_backend_errors_total %lld\n",
      (long long)atomic_load(&s->mx.backend_errors));
    P("# HELP mnemo_backend_reconnects_total Connections to the store re-established after an outage.\n"
      "# TYPE mnemo_backend_reconnects_total counter\nmnemo_backend_reconnects_total %lld\n",
      (long long)mn_store_reconnects(s->store));
    P("# HELP mnemo_documents_added_total Documents compressed into the store.\n"
      "# TYPE mnemo_documents_added_total counter\nmnemo_documents_added_total %lld\n",
      (long long)atomic_load(&s->mx.documents_added));
    P("# HELP mnemo_request_duration_seconds Time from request to response end.\n"
      "# TYPE mnemo_request_duration_seconds histogram\n");
    long long cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += atomic_load(&s->mx.lat_bucket[i]);
        P("mnemo_request_duration_seconds_bucket{le=\"%g\"} %lld\n", k_buckets[i], cum);
    }
    cum += atomic_load(&s->mx.lat_bucket[N_BUCKETS]);
    P("mnemo_request_duration_seconds_bucket{le=\"+Inf\"} %lld\n", cum);
    P("mnemo_request_duration_seconds_sum %.6f\nmnemo_request_duration_seconds_count %lld\n",
      atomic_load(&s->mx.lat_sum_us) / 1e6, (long long)atomic_load(&s->mx.lat_count));
    P("# HELP mnemo_time_to_first_token_seconds Time from the start of a request's run to its first token.\n"
      "# TYPE mnemo_time_to_first_token_seconds summary\nmnemo_time_to_first_token_seconds_sum %.6f\n"
      "mnemo_time_to_first_token_seconds_count %lld\n",
      atomic_load(&s->mx.ttft_sum_us) / 1e6, (long long)atomic_load(&s->mx.ttft_count));
    P("# HELP mnemo_queue_depth Requests waiting for a slot.\n# TYPE mnemo_queue_depth gauge\nmnemo_queue_depth %d\n",
      queue_depth(s));
    P("# HELP mnemo_slots_busy Slots running a request.\n# TYPE mnemo_slots_busy gauge\nmnemo_slots_busy %d\n",
      atomic_load(&s->busy));
    P("# HELP mnemo_slots Inference slots.\n# TYPE mnemo_slots gauge\nmnemo_slots %d\n", s->p.n_slots);
    long long kv = 0;
    for (int i = 0; i < s->p.n_slots; i++) kv += atomic_load(&s->slots[i].kv_bytes);
    P("# HELP mnemo_memory_bytes Bytes held: KV cache cells of the last request per slot, loaded document memories.\n"
      "# TYPE mnemo_memory_bytes gauge\nmnemo_memory_bytes{kind=\"kv_cache\"} %lld\n"
      "mnemo_memory_bytes{kind=\"document_memories\"} %zu\n", kv, mn_memcache_bytes(s->cache));
    P("# HELP mnemo_inflight_requests HTTP requests being handled.\n# TYPE mnemo_inflight_requests gauge\n"
      "mnemo_inflight_requests %d\n", atomic_load(&s->inflight));
#undef P
    if (n >= cap) n = cap - 1;
    enum MHD_Result r = send_text(c, cs, 200, "text/plain; version=0.0.4", b, n);
    free(b);
    return r;
}

static enum MHD_Result models(mn_server *s, struct MHD_Connection *c, conn_state *cs) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "mnemo");
    cJSON_AddItemToArray(arr, m);
    return send_json(c, cs, 200, o);
}

/* 1 when the request may pass; *owner (optional) gets the scoped key's
 * owner, or NULL when keys are not scoped. */
static int authorized(mn_server *s, struct MHD_Connection *c, const char **owner) {
    if (owner) *owner = NULL;
    const int scoped = mn_api_keys_count(s->p.keys) > 0;
    if (!scoped && (!s->p.api_key || !s->p.api_key[0])) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *given = "";
    if (h && !strncasecmp(h, "Bearer ", 7)) given = h + 7;
    if (!scoped) return mn_secret_equal(given, strlen(given), s->p.api_key, strlen(s->p.api_key));
    const char *o = mn_api_keys_owner(s->p.keys, given, strlen(given));
    if (owner) *owner = o;
    return o != NULL;
}

static enum MHD_Result route(mn_server *s, struct MHD_Connection *c, conn_state *cs, const char *url,
                             const char *method) {
    const char *tail = NULL;
    const mn_route rt = mn_request_route(method, url, &tail);
    if (rt == MN_RT_PAGE)
        return send_text(c, cs, 200, "text/html; charset=utf-8", mn_server_page, strlen(mn_server_page));
    if (rt == MN_RT_HEALTH) return health(s, c, cs);
    if (rt == MN_RT_METRICS) return metrics_page(s, c, cs);
    if (strncmp(url, "/v1/", 4)) return send_error(c, cs, 404, "not_found_error", "no route %s %s", method, url);
    const char *owner = NULL;
    if (!authorized(s, c, &owner)) return send_error(c, cs, 401, "authentication_error", "invalid or missing API key");
    if (cs->too_large)
        return send_error(c, cs, 413, "invalid_request_error", "request body over the limit of %zu bytes",
                          s->p.max_body);
    switch (rt) {
    case MN_RT_MODELS: return models(s, c, cs);
    case MN_RT_DOCS: return list_documents(s, c, cs, owner);
    case MN_RT_DOC_GET:
    case MN_RT_DOC_DELETE: return one_document(s, c, cs, tail, rt == MN_RT_DOC_DELETE, owner);
    case MN_RT_CHAT:
    case MN_RT_COMPLETION:
    case MN_RT_DOC_ADD: break;
    default:
        return send_error(c, cs, rt == MN_RT_BAD_METHOD ? 405 : 404,
                          rt == MN_RT_BAD_METHOD ? "invalid_request_error" : "not_found_error", "no route %s %s",
                          method, url);
    }
    job *j = job_new(rt == MN_RT_CHAT ? JOB_CHAT : rt == MN_RT_COMPLETION ? JOB_COMPLETION : JOB_DOC_ADD);
    if (!j) return send_error(c, cs, 500, "server_error", "out of memory");
    char msg[512];
    const mn_request_limits lim = {s->p.max_tokens, s->p.max_retrieve};
    const char *err = mn_request_parse(j, cs->body, cs->len, &lim, msg, sizeof msg);
    j->owner = owner;
    if (!err && rt != MN_RT_DOC_ADD) {
        job_new_id(j, rt == MN_RT_CHAT ? "chatcmpl" : "cmpl");
        /* unknown documents answer 404 at once, not after a wait in the queue */
        for (int i = 0; i < j->n_docs; i++) {
            mn_store_doc d;
            pthread_mutex_lock(&s->store_mu);
            int rc = visible_to(s, j->doc_ids[i], owner);
            if (!rc) rc = mn_store_get(s->store, j->doc_ids[i], mn_adapter_hash(s->a), &d);
            pthread_mutex_unlock(&s->store_mu);
            if (rc == MN_ENOTFOUND || (!rc && d.n_slots < 0)) {
                enum MHD_Result r = send_error(c, cs, 404, "not_found_error", "%s",
                                               rc ? mn_last_error() : "document has no memory for this adapter");
                job_unref(j);
                return r;
            }
        }
    }
    if (err) {
        enum MHD_Result r = send_error(c, cs, 400, "invalid_request_error", "%s", err);
        job_unref(j);
        return r;
    }
    enum MHD_Result r = submit(s, c, cs, j, rt == MN_RT_DOC_ADD ? 201 : 200);
    job_unref(j);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    mn_server *s = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        cs->t0 = now_s();
        *con_cls = cs;
        atomic_fetch_add(&s->inflight, 1);
        cs->counted = 1;
        /* a declared length over the limit is refused before reading the body */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body) {
            cs->too_large = 1;
            if (!authorized(s, c, NULL)) return send_error(c, cs, 401, "authentication_error", "invalid or missing API key");
            return send_error(c, cs, 413, "invalid_request_error", "request body over the limit of %zu bytes",
                              s->p.max_body);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cs->too_large && cs->len + *upload_size > s->p.max_body) {
            cs->too_large = 1;
            free(cs->body);
            cs->body = NULL;
            cs->len = cs->cap = 0;
        }
        if (!cs->too_large) {
            if (cs->len + *upload_size + 1 > cs->cap) {
                size_t cap = cs->cap ? cs->cap : 4096;
                while (cs->len + *upload_size + 1 > cap) cap *= 2;
                char *nb = realloc(cs->body, cap);
                if (!nb) return MHD_NO;
                cs->body = nb;
                cs->cap = cap;
            }
            memcpy(cs->body + cs->len, upload, *upload_size);
            cs->len += *upload_size;
            cs->body[cs->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->status) return MHD_YES; /* already answered (early 413) */
    return route(s, c, cs, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    mn_server *s = cls;
    conn_state *cs = *con_cls;
    if (!cs) return;
    double dt = now_s() - cs->t0;
    int st = cs->status ? cs->status : 500;
    if (st >= 100 && st < 600) atomic_fetch_add(&s->mx.by_code[st], 1);
    size_t b = 0;
    while (b < N_BUCKETS && dt > k_buckets[b]) b++;
    atomic_fetch_add(&s->mx.lat_bucket[b], 1);
    atomic_fetch_add(&s->mx.lat_count, 1);
    atomic_fetch_add(&s->mx.lat_sum_us, (long long)(dt * 1e6));
    if (cs->counted) atomic_fetch_sub(&s->inflight, 1);
    free(cs->body);
    free(cs);
    *con_cls = NULL;
}

/* ------------------------------------------------------------ lifecycle */

mn_server_params mn_server_default_params(void) {
    mn_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8080;
    p.n_slots = 2;
    p.queue_cap = 16;
    p.max_body = 8u << 20;
    p.max_tokens = 1024;
    p.max_retrieve = 8;
    p.timeout_s = 300;
    p.cache_bytes = (size_t)1 << 30;
    return p;
}

static void free_server(mn_server *s) {
    if (!s) return;
    if (s->slots) {
        for (int i = 0; i < s->p.n_slots; i++) mn_context_free(s->slots[i].ctx);
        free(s->slots);
    }
    mn_memcache_free(s->cache);
    mn_group_loras_free(s->loras);
    free(s->q);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    free(s);
}

int mn_server_start(const mn_model *m, const mn_adapter *a, mn_store *st, const mn_server_params *p,
                    mn_server **out) {
    *out = NULL;
    if (p->n_slots < 1 || p->n_slots > 256) return mn_error(MN_EINVAL, "slots must be in [1, 256]");
    if (p->queue_cap < 1) return mn_error(MN_EINVAL, "queue must hold at least one request");
    if (p->port < 0 || p->port > 65535) return mn_error(MN_EINVAL, "port %d out of range", p->port);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)p->port);
    if (inet_pton(AF_INET, p->host ? p->host : "127.0.0.1", &addr.sin_addr) != 1)
        return mn_error(MN_EINVAL, "host '%s' is not an IPv4 address", p->host);
    mn_server *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "out of memory");
    s->p = *p;
    s->m = m;
    s->a = a;
    s->store = st;
    pthread_mutex_init(&s->store_mu, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    snprintf(s->model_id, sizeof s->model_id, "%s", p->model_id && p->model_id[0] ? p->model_id : mn_model_name(m));
    mn_chat_template ct;
    snprintf(s->prompt_format, sizeof s->prompt_format, "chatml");
    if (mn_chat_template_from_tokenizer(mn_model_tokenizer(m), &ct) == 0) {
        snprintf(s->prompt_format, sizeof s->prompt_format, "%s",
                 ct.style == MN_CHAT_PLAIN ? "plain" : ct.style == MN_CHAT_LLAMA2 ? "llama2" : "chatml");
        mn_chat_template_clear(&ct);
    }
    int rc = 0;
    if (!(s->q = calloc((size_t)p->queue_cap, sizeof *s->q)) || !(s->slots = calloc((size_t)p->n_slots, sizeof *s->slots)))
        rc = mn_error(MN_ENOMEM, "out of memory");
    if (!rc) rc = mn_memcache_create(m, a, p->cache_bytes, &s->cache);
    if (!rc) rc = mn_group_loras_create(m, &s->loras);
    int threads = p->n_threads > 0 ? p->n_threads : mn_cpu_count() / p->n_slots;
    if (threads < 1) threads = 1;
    for (int i = 0; i < p->n_slots && !rc; i++) {
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = p->n_ctx > 0 ? p->n_ctx : mn_model_n_ctx_train(m);
        cp.n_threads = threads;
        s->slots[i].srv = s;
        s->slots[i].idx = i;
        rc = mn_context_create(m, &cp, &s->slots[i].ctx);
    }
    if (rc) {
        free_server(s);
        return rc;
    }
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC, 0, NULL,
                            NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, 512u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
    if (!s->d) {
        rc = mn_error(MN_EIO, "cannot listen on %s:%d (%s)", p->host, p->port,
                      errno ? strerror(errno) : "port in use?");
        free_server(s);
        return rc;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    int started = 0;
    for (int i = 0; i < p->n_slots; i++)
        if (pthread_create(&s->slots[i].th, NULL, worker, &s->slots[i]) == 0) started++;
    if (started != p->n_slots) {
        /* cannot run partially: stop what started */
        pthread_mutex_lock(&s->q_mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->q_cv);
        pthread_mutex_unlock(&s->q_mu);
        for (int i = 0; i < started; i++) pthread_join(s->slots[i].th, NULL);
        MHD_stop_daemon(s->d);
        free_server(s);
        return mn_error(MN_ENOMEM, "cannot start the slot threads");
    }
    *out = s;
    return 0;
}

int mn_server_port(const mn_server *s) { return s->port; }

void mn_server_stop(mn_server *s, double drain_s) {
    if (!s) return;
    atomic_store(&s->draining, 1);
    MHD_quiesce_daemon(s->d); /* no new connections; the ones open finish */
    double until = now_s() + drain_s;
    while (now_s() < until && (atomic_load(&s->inflight) > 0 || queue_depth(s) > 0 || atomic_load(&s->busy) > 0))
        usleep(20000);
    pthread_mutex_lock(&s->q_mu);
    s->stopping = 1;
    /* whatever is still queued after the drain limit is answered 503 */
    while (s->q_len > 0) {
        job *j = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->p.queue_cap;
        s->q_len--;
        pthread_mutex_lock(&j->mu);
        job_fail(j, 503, "server_error", "the server is shutting down");
        j->state = JOB_DONE;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        job_unref(j);
    }
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    for (int i = 0; i < s->p.n_slots; i++) pthread_join(s->slots[i].th, NULL);
    MHD_stop_daemon(s->d);
    free_server(s);
}
