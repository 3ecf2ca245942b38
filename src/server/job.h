/* job.h - one inference or ingest request on its way through the server:
 * parsed by the HTTP thread, queued, run by a slot worker, answered by the
 * HTTP thread (all at once, or streamed as server-sent events while the
 * worker produces them). Library-internal to src/server/. */
#ifndef MN_SERVER_JOB_H
#define MN_SERVER_JOB_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "store/answer.h"
#include "store/docstore.h"
#include "store/ingest.h"
#include "store/store.h"

#define JOB_MAX_DOCS 16
#define JOB_MAX_MSGS 256

typedef enum { JOB_CHAT = 0, JOB_COMPLETION = 1, JOB_DOC_ADD = 2 } job_type;
typedef enum { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2 } job_state;

typedef struct job {
    job_type type;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;             /* HTTP side + queue/worker */
    job_state state;
    volatile int cancel;  /* client gone or deadline passed */
    double t_start, deadline;

    /* request (strings point into req, which the job owns) */
    cJSON *req;
    int stream, include_usage, ignore_eos;
    mn_chat_msg msgs[JOB_MAX_MSGS];
    int n_msgs;
    const char *prompt;
    int64_t doc_ids[JOB_MAX_DOCS];
    int n_docs, retrieve_k;
    int recall;           /* segments paged back in from the memories' exact parts (0: none) */
    int recall_local;     /* with segments paged, the raw tokens of each memory's recent window kept (0: all) */
    int recall_every;     /* answer tokens between re-selections of the paged segments (0: once) */
    int32_t max_tokens;
    mn_sampler_params sampling;
    char id[48];
    const char *model;    /* id reported in responses (the server's, outlives the job) */
    int64_t created;
    const char *title, *text, *group;
    size_t text_len;
    int exact_kv;         /* upload: "exact": "kv" keeps the segments' 8-bit cells for recall */
    const char *owner;    /* the scoped key's owner (the server's key table outlives the job), or NULL */

    /* result */
    int http_status;      /* 0 while fine; else the error to answer with */
    char err[512];
    const char *err_type;
    char *out;            /* non-streamed: the answer text; streamed: SSE bytes */
    size_t out_len, out_cap, out_sent;
    int started;          /* first SSE event written */
    unsigned char pend[4];/* trailing bytes of an unfinished UTF-8 character */
    size_t n_pend;
    mn_answer_stats st;
    mn_store_doc used[JOB_MAX_DOCS];
    int n_used;
    mn_ingest_result ing;
} job;

job *job_new(job_type t);
/* The response id ("chatcmpl-...", "cmpl-...") and creation time. */
void job_new_id(job *j, const char *prefix);
void job_ref(job *j);
void job_unref(job *j);
/* Marks the job failed with an HTTP status and an OpenAI-style error type. */
void job_fail(job *j, int status, const char *type, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Appends raw answer bytes: incomplete UTF-8 is held back until its
 * character is complete, invalid bytes become U+FFFD; streamed jobs get an
 * SSE chunk per call. Caller holds j->mu. Returns 0 or MN_ENOMEM. */
int job_emit_text(job *j, const char *text, size_t len, int final);
/* Appends a raw SSE event "data: <payload>\n\n". Caller holds j->mu. */
int job_emit_event(job *j, const char *payload);
/* SSE chunk payload for streamed text (or the closing chunk when text is
 * NULL), malloc'd. */
char *job_chunk_json(const job *j, const char *text, size_t len, const char *finish);
/* The whole non-streamed response body, malloc'd. */
char *job_response_json(const job *j);
/* The closing chunk's finish reason ("stop" or "length"). */
const char *job_finish_reason(const job *j);
/* Usage chunk of a stream (stream_options.include_usage), malloc'd. */
char *job_usage_json(const job *j);

#endif
