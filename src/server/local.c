/* local.c - the server's chat and completion requests answered in process,
 * without HTTP (mnemo.h: mn_request_chat, mn_request_completion): the same
 * parser (request.c), the same generation (store/answer.c), the same
 * response and chunk JSON (job.c), so a binding's create_chat_completion
 * returns what POST /v1/chat/completions would. Streamed chunks are the SSE
 * events' payloads, handed over as they are produced. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/recall.h"
#include "server/job.h"
#include "server/request.h"

typedef struct {
    job *j;
    mn_chunk_fn on_chunk;
    void *user;
    int stop; /* the caller asked to stop */
} local_run;

/* Hands every complete SSE event appended since the last call to the caller
 * ("data: <json>\n\n"; the closing [DONE] is not a chunk). */
static void deliver(local_run *lr) {
    job *j = lr->j;
    while (j->out_sent < j->out_len) {
        char *ev = j->out + j->out_sent, *end = memmem(ev, j->out_len - j->out_sent, "\n\n", 2);
        if (!end) break;
        *end = 0;
        const char *payload = !strncmp(ev, "data: ", 6) ? ev + 6 : ev;
        if (!lr->stop && strcmp(payload, "[DONE]") && lr->on_chunk && lr->on_chunk(lr->user, payload)) lr->stop = 1;
        j->out_sent = (size_t)(end + 2 - j->out);
    }
    if (j->out_sent == j->out_len) j->out_len = j->out_sent = 0; /* nothing pending: reuse the buffer */
}

static int on_piece(void *user, const char *text, size_t len) {
    local_run *lr = user;
    const int rc = job_emit_text(lr->j, text, len, 0);
    if (lr->j->stream) deliver(lr);
    else if (lr->on_chunk && lr->on_chunk(lr->user, NULL)) lr->stop = 1; /* a chance to stop, each token */
    return rc || lr->stop;
}

static int run(mn_context *c, job_type type, const char *model_id, const char *body, size_t len, mn_chunk_fn on_chunk,
               void *user, char **response) {
    if (response) *response = NULL;
    if (!c || !body) return mn_error(MN_EINVAL, "request: no context or body");
    job *j = job_new(type);
    if (!j) return mn_error(MN_ENOMEM, "out of memory");
    char msg[512];
    const mn_request_limits lim = {mn_context_n_ctx(c), 0};
    const char *bad = mn_request_parse(j, body, len, &lim, msg, sizeof msg);
    int rc = MN_OK;
    if (bad) rc = mn_error(MN_EINVAL, "%s", bad);
    else if (j->n_docs > 0 || j->retrieve_k > 0)
        rc = mn_error(MN_EINVAL, "the request names stored documents: they live in a store (the server, or a Store)");
    else if (j->stream && !on_chunk)
        rc = mn_error(MN_EINVAL, "a streamed request needs a chunk callback");
    if (rc) {
        job_unref(j);
        return rc;
    }
    job_new_id(j, type == JOB_CHAT ? "chatcmpl" : "cmpl");
    j->model = model_id ? model_id : mn_model_name(mn_context_model(c));
    local_run lr = {j, on_chunk, user, 0};
    mn_answer_request r;
    memset(&r, 0, sizeof r);
    if (type == JOB_CHAT) r.msgs = j->msgs, r.n_msgs = j->n_msgs;
    else r.prompt = j->prompt;
    r.max_tokens = j->max_tokens;
    r.sampling = j->sampling;
    r.ignore_eos = j->ignore_eos;
    r.on_piece = on_piece;
    r.user = &lr;
    r.recall = mn_recall_default_opts(0);
    rc = mn_answer(c, NULL, &r, &j->st);
    mn_kv_clear(c);
    if (!rc && lr.stop) rc = mn_error(MN_ECANCELLED, "stopped by the caller");
    if (!rc && (rc = job_emit_text(j, "", 0, 1))) rc = mn_error(MN_ENOMEM, "out of memory");
    if (!rc && j->stream) {
        char *ch = job_chunk_json(j, NULL, 0, job_finish_reason(j));
        if (ch) job_emit_event(j, ch);
        free(ch);
        if (j->include_usage && (ch = job_usage_json(j))) {
            job_emit_event(j, ch);
            free(ch);
        }
        job_emit_event(j, "[DONE]");
        deliver(&lr);
        if (lr.stop) rc = mn_error(MN_ECANCELLED, "stopped by the caller");
    } else if (!rc && response && !(*response = job_response_json(j))) {
        rc = mn_error(MN_ENOMEM, "out of memory");
    }
    job_unref(j);
    return rc;
}

int mn_request_chat(mn_context *c, const char *model_id, const char *body, size_t len, mn_chunk_fn on_chunk,
                    void *user, char **response) {
    return run(c, JOB_CHAT, model_id, body, len, on_chunk, user, response);
}

int mn_request_completion(mn_context *c, const char *model_id, const char *body, size_t len, mn_chunk_fn on_chunk,
                          void *user, char **response) {
    return run(c, JOB_COMPLETION, model_id, body, len, on_chunk, user, response);
}
