/* job.c - requests in flight and their OpenAI-shaped output (see job.h). */
#include "server/job.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "utf8.h"

job *job_new(job_type t) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->type = t;
    j->refs = 1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    return j;
}

void job_new_id(job *j, const char *prefix) {
    static atomic_ullong counter;
    unsigned long long n = atomic_fetch_add(&counter, 1);
    snprintf(j->id, sizeof j->id, "%s-%llx%04llx", prefix, (unsigned long long)time(NULL), n & 0xffff);
    j->created = (int64_t)time(NULL);
}

void job_ref(job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void job_unref(job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    cJSON_Delete(j->req);
    free(j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void job_fail(job *j, int status, const char *type, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof j->err, fmt, ap);
    va_end(ap);
    j->http_status = status;
    j->err_type = type;
}

static int append(job *j, const char *p, size_t n) {
    if (j->out_len + n + 1 > j->out_cap) {
        size_t cap = j->out_cap ? j->out_cap : 1024;
        while (j->out_len + n + 1 > cap) cap *= 2;
        char *nb = realloc(j->out, cap);
        if (!nb) return MN_ENOMEM;
        j->out = nb;
        j->out_cap = cap;
    }
    memcpy(j->out + j->out_len, p, n);
    j->out_len += n;
    j->out[j->out_len] = 0;
    return 0;
}

int job_emit_event(job *j, const char *payload) {
    if (append(j, "data: ", 6) || append(j, payload, strlen(payload)) || append(j, "\n\n", 2)) return MN_ENOMEM;
    j->started = 1;
    pthread_cond_broadcast(&j->cv);
    return 0;
}

/* Valid UTF-8 from pend + text into dst (cap >= 3 * (n_pend + len) + 1); keeps
 * an unfinished tail in pend unless final. */
static size_t sanitize(job *j, const char *text, size_t len, int final, char *dst) {
    unsigned char buf[4 + 256];
    size_t n = 0, o = 0;
    memcpy(buf, j->pend, j->n_pend);
    n = j->n_pend;
    j->n_pend = 0;
    size_t take = len < sizeof buf - n ? len : sizeof buf - n;
    memcpy(buf + n, text, take);
    n += take;
    for (size_t i = 0; i < n;) {
        int cl = mn_utf8_len(buf[i]);
        if (cl == 0) {
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        if (i + (size_t)cl > n) {
            /* unfinished: keep for the next piece if what is there so far fits */
            int fine = 1;
            for (size_t t = i + 1; t < n; t++) fine &= (buf[t] & 0xC0) == 0x80;
            if (fine && !final) {
                memcpy(j->pend, buf + i, n - i);
                j->n_pend = n - i;
                break;
            }
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        if (!mn_utf8_ok(buf + i, cl)) {
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(dst + o, buf + i, (size_t)cl);
        o += (size_t)cl;
        i += (size_t)cl;
    }
    dst[o] = 0;
    return o;
}

int job_emit_text(job *j, const char *text, size_t len, int final) {
    if (len > 256) len = 256; /* one token's piece; mn_answer never sends more */
    char clean[3 * (4 + 256) + 1];
    size_t n = sanitize(j, text, len, final, clean);
    if (!j->stream) return append(j, clean, n);
    if (n == 0) return 0;
    char *chunk = job_chunk_json(j, clean, n, NULL);
    if (!chunk) return MN_ENOMEM;
    int rc = job_emit_event(j, chunk);
    free(chunk);
    return rc;
}

static void add_mnemo(cJSON *o, const job *j) {
    cJSON *mn = cJSON_AddObjectToObject(o, "mnemo");
    cJSON *docs = cJSON_AddArrayToObject(mn, "documents");
    for (int i = 0; i < j->n_used; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "id", (double)j->used[i].id);
        cJSON_AddStringToObject(d, "title", j->used[i].title);
        cJSON_AddStringToObject(d, "group", j->used[i].group);
        cJSON_AddNumberToObject(d, "tokens", (double)j->used[i].n_tokens);
        cJSON_AddNumberToObject(d, "memory_slots", j->used[i].n_slots);
        cJSON_AddItemToArray(docs, d);
    }
    cJSON_AddNumberToObject(mn, "memory_cells", j->st.memory_slots);
    cJSON_AddNumberToObject(mn, "recalled_segments", j->st.recalled);
    cJSON_AddNumberToObject(mn, "recalled_cells", j->st.recalled_cells);
    /* a memory longer than the context keeps its newest slots: say how many it left out */
    cJSON_AddNumberToObject(mn, "memory_slots_left_out", (double)j->st.slots_out);
    /* re-selection while answering: how often recall chose again, and how often that changed the pages */
    cJSON_AddNumberToObject(mn, "recall_reselections", j->st.reselections);
    cJSON_AddNumberToObject(mn, "recall_repaged", j->st.repaged);
    cJSON_AddNumberToObject(mn, "time_to_first_token", j->st.t_first_token);
    cJSON_AddNumberToObject(mn, "seconds", j->st.t_total);
    cJSON_AddStringToObject(mn, "finish", mn_finish_name(j->st.finish));
}

static void add_usage(cJSON *o, const job *j) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->st.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)j->st.completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(j->st.prompt_tokens + j->st.completion_tokens));
}

static const char *finish_reason(const job *j) { return j->st.finish == MN_FINISH_STOP ? "stop" : "length"; }

/* The fields every completion object starts with (OpenAI's layout): id,
 * object, created, model, and a choices array; *choice (when asked for) is
 * its one entry, index 0, already in the array. */
static cJSON *completion_head(const job *j, const char *object, cJSON **choice) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model ? j->model : "mnemo");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    if (choice) {
        *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(*choice, "index", 0);
        cJSON_AddItemToArray(ch, *choice);
    }
    return o;
}

char *job_chunk_json(const job *j, const char *text, size_t len, const char *finish) {
    cJSON *c;
    cJSON *o = completion_head(j, j->type == JOB_CHAT ? "chat.completion.chunk" : "text_completion", &c);
    char *tmp = NULL;
    if (text) {
        tmp = malloc(len + 1);
        if (tmp) {
            memcpy(tmp, text, len);
            tmp[len] = 0;
        }
    }
    if (j->type == JOB_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (!j->started) cJSON_AddStringToObject(d, "role", "assistant");
        if (tmp) cJSON_AddStringToObject(d, "content", tmp);
        else if (!finish) cJSON_AddStringToObject(d, "content", "");
    } else {
        cJSON_AddStringToObject(c, "text", tmp ? tmp : "");
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (finish) add_mnemo(o, j);
    free(tmp);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *job_response_json(const job *j) {
    cJSON *o;
    if (j->type == JOB_DOC_ADD) {
        o = mn_ingest_json(&j->ing, j->title, j->group);
    } else {
        cJSON *c;
        o = completion_head(j, j->type == JOB_CHAT ? "chat.completion" : "text_completion", &c);
        if (j->type == JOB_CHAT) {
            cJSON *msg = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            cJSON_AddStringToObject(msg, "content", j->out ? j->out : "");
        } else {
            cJSON_AddStringToObject(c, "text", j->out ? j->out : "");
        }
        cJSON_AddStringToObject(c, "finish_reason", finish_reason(j));
        add_usage(o, j);
        add_mnemo(o, j);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

const char *job_finish_reason(const job *j) { return finish_reason(j); }

char *job_usage_json(const job *j) {
    cJSON *o = completion_head(j, j->type == JOB_CHAT ? "chat.completion.chunk" : "text_completion", NULL);
    add_usage(o, j);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
