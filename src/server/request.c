/* request.c - routes and request bodies (request.h). */
#include "server/request.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mn_route mn_request_route(const char *method, const char *url, const char **tail) {
    const int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST"),
              del = !strcmp(method, "DELETE");
    if (tail) *tail = NULL;
    if (get && !strcmp(url, "/")) return MN_RT_PAGE;
    if (get && !strcmp(url, "/health")) return MN_RT_HEALTH;
    if (get && !strcmp(url, "/metrics")) return MN_RT_METRICS;
    if (strncmp(url, "/v1/", 4)) return MN_RT_NOT_FOUND;
    if (get && !strcmp(url, "/v1/models")) return MN_RT_MODELS;
    if (get && !strcmp(url, "/v1/documents")) return MN_RT_DOCS;
    if ((get || del) && !strncmp(url, "/v1/documents/", 14)) {
        if (tail) *tail = url + 14;
        return del ? MN_RT_DOC_DELETE : MN_RT_DOC_GET;
    }
    const int chat = !strcmp(url, "/v1/chat/completions"), comp = !strcmp(url, "/v1/completions"),
              doc = !strcmp(url, "/v1/documents");
    if (post && (chat || comp || doc)) return chat ? MN_RT_CHAT : comp ? MN_RT_COMPLETION : MN_RT_DOC_ADD;
    const int known = chat || comp || doc || !strcmp(url, "/v1/models") || !strncmp(url, "/v1/documents/", 14);
    return known ? MN_RT_BAD_METHOD : MN_RT_NOT_FOUND;
}

int mn_request_doc_id(const char *s, int64_t *id) {
    if (*s < '0' || *s > '9') return -1; /* strtoll would take spaces and signs */
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1) return -1;
    *id = v;
    return 0;
}

static const char *json_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Fills the generation options shared by chat and completions; returns an
 * error message or NULL. */
/* Whether v is a JSON number holding an integer in [lo, hi] (NaN and fractions are not). */
static int json_int_in(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi && v->valuedouble == floor(v->valuedouble);
}

static const char *parse_common(const mn_request_limits *s, job *j, const cJSON *req, char *msg, size_t cap) {
    const cJSON *v;
    j->max_tokens = s->max_tokens < 256 ? s->max_tokens : 256;
    j->recall = MN_RECALL_DEFAULT_K;
    j->recall_local = MN_RECALL_DEFAULT_LOCAL;
    j->recall_every = MN_RECALL_DEFAULT_EVERY;
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "max_tokens")) ||
        (v = cJSON_GetObjectItemCaseSensitive(req, "max_completion_tokens"))) {
        if (!json_int_in(v, 1, s->max_tokens)) {
            snprintf(msg, cap, "max_tokens must be an integer in [1, %d]", s->max_tokens);
            return msg;
        }
        j->max_tokens = (int32_t)v->valuedouble;
    }
    j->sampling = mn_sampler_default_params();
    j->sampling.temperature = 0; /* deterministic unless asked */
    j->sampling.top_k = 0;
    j->sampling.min_p = 0;
    j->sampling.top_p = 1;
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "temperature")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 2)) {
            snprintf(msg, cap, "temperature must be a number in [0, 2]");
            return msg;
        }
        j->sampling.temperature = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "top_p")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1)) {
            snprintf(msg, cap, "top_p must be a number in (0, 1]");
            return msg;
        }
        j->sampling.top_p = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "seed")) && !cJSON_IsNull(v)) {
        if (!json_int_in(v, 0, 9007199254740992.0)) {
            snprintf(msg, cap, "seed must be an integer in [0, 2^53]");
            return msg;
        }
        j->sampling.seed = (uint64_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "n")) && !cJSON_IsNull(v) &&
        !(cJSON_IsNumber(v) && v->valuedouble == 1)) {
        snprintf(msg, cap, "only n = 1 is supported");
        return msg;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(req, "stream")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            snprintf(msg, cap, "stream must be true or false");
            return msg;
        }
        j->stream = cJSON_IsTrue(v);
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
    if (cJSON_IsObject(so) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"))) j->include_usage = 1;
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(req, "mnemo");
    if (mn && !cJSON_IsNull(mn)) {
        if (!cJSON_IsObject(mn)) {
            snprintf(msg, cap, "mnemo must be an object");
            return msg;
        }
        const cJSON *docs = cJSON_GetObjectItemCaseSensitive(mn, "documents");
        if (docs) {
            if (!cJSON_IsArray(docs) || cJSON_GetArraySize(docs) > JOB_MAX_DOCS) {
                snprintf(msg, cap, "mnemo.documents must be an array of at most %d document ids", JOB_MAX_DOCS);
                return msg;
            }
            const cJSON *d;
            cJSON_ArrayForEach(d, docs) {
                /* ids past 2^53 are not exact in a double, and past 2^63 not an integer at all */
                if (!json_int_in(d, 1, 9007199254740992.0)) {
                    snprintf(msg, cap, "mnemo.documents must hold document ids (positive integers)");
                    return msg;
                }
                j->doc_ids[j->n_docs++] = (int64_t)d->valuedouble;
            }
        }
        if ((v = cJSON_GetObjectItemCaseSensitive(mn, "retrieve"))) {
            if (!json_int_in(v, 1, s->max_retrieve)) {
                snprintf(msg, cap, "mnemo.retrieve must be an integer in [1, %d]", s->max_retrieve);
                return msg;
            }
            j->retrieve_k = (int)v->valuedouble;
        }
        if ((v = cJSON_GetObjectItemCaseSensitive(mn, "recall"))) {
            if (!json_int_in(v, 0, MN_DOCMEM_RECALL_MAXK)) {
                snprintf(msg, cap, "mnemo.recall must be an integer in [0, %d] (segments paged back in; 0: memory alone)",
                         MN_DOCMEM_RECALL_MAXK);
                return msg;
            }
            j->recall = (int)v->valuedouble;
        }
        if ((v = cJSON_GetObjectItemCaseSensitive(mn, "local"))) {
            if (!json_int_in(v, 0, 1 << 20)) {
                snprintf(msg, cap, "mnemo.local must be an integer in [0, %d] (raw tokens of a memory's recent "
                         "window kept beside paged segments; 0: all)", 1 << 20);
                return msg;
            }
            j->recall_local = (int)v->valuedouble;
        }
        if ((v = cJSON_GetObjectItemCaseSensitive(mn, "recall_every"))) {
            if (!json_int_in(v, 0, 1 << 20)) {
                snprintf(msg, cap, "mnemo.recall_every must be an integer in [0, %d] (answer tokens between "
                         "re-selections of the paged segments; 0: once, at the question)", 1 << 20);
                return msg;
            }
            j->recall_every = (int)v->valuedouble;
        }
        if (j->retrieve_k && j->n_docs) {
            snprintf(msg, cap, "give mnemo.documents or mnemo.retrieve, not both");
            return msg;
        }
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mn, "ignore_eos"))) j->ignore_eos = 1;
    }
    return NULL;
}

/* Chat message content: a string, or an array of {"type":"text","text":...}
 * parts, which are joined into a new string kept in the request tree. */
static const char *message_content(cJSON *m, char *msg, size_t cap, int i) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(c)) return c->valuestring;
    if (cJSON_IsArray(c)) {
        size_t total = 1;
        cJSON *p;
        cJSON_ArrayForEach(p, c) {
            const char *t = json_str(p, "text");
            if (!t) {
                snprintf(msg, cap, "messages[%d].content parts must be {\"type\": \"text\", \"text\": ...}", i);
                return NULL;
            }
            total += strlen(t);
        }
        char *joined = malloc(total);
        if (!joined) return NULL;
        joined[0] = 0;
        cJSON_ArrayForEach(p, c) strcat(joined, json_str(p, "text"));
        cJSON *s = cJSON_CreateString(joined);
        free(joined);
        if (!s) return NULL;
        cJSON_ReplaceItemInObjectCaseSensitive(m, "content", s);
        return s->valuestring;
    }
    snprintf(msg, cap, "messages[%d].content must be a string", i);
    return NULL;
}

static const char *parse_chat(const mn_request_limits *s, job *j, char *msg, size_t cap) {
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j->req, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        snprintf(msg, cap, "messages must be a non-empty array of {\"role\", \"content\"}");
        return msg;
    }
    if (cJSON_GetArraySize(msgs) > JOB_MAX_MSGS) {
        snprintf(msg, cap, "at most %d messages", JOB_MAX_MSGS);
        return msg;
    }
    int i = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const char *role = json_str(m, "role");
        if (!cJSON_IsObject(m) || !role || (strcmp(role, "system") && strcmp(role, "user") &&
                                            strcmp(role, "assistant") && strcmp(role, "developer"))) {
            snprintf(msg, cap, "messages[%d].role must be system, user or assistant", i);
            return msg;
        }
        msg[0] = 0;
        const char *content = message_content(m, msg, cap, i);
        if (!content) {
            if (!msg[0]) snprintf(msg, cap, "out of memory");
            return msg;
        }
        j->msgs[i].role = strcmp(role, "developer") ? role : "system";
        j->msgs[i].content = content;
        i++;
    }
    j->n_msgs = i;
    return parse_common(s, j, j->req, msg, cap);
}

static const char *parse_completion(const mn_request_limits *s, job *j, char *msg, size_t cap) {
    cJSON *p = cJSON_GetObjectItemCaseSensitive(j->req, "prompt");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1) p = cJSON_GetArrayItem(p, 0);
    if (!cJSON_IsString(p)) {
        snprintf(msg, cap, "prompt must be a string");
        return msg;
    }
    j->prompt = p->valuestring;
    return parse_common(s, j, j->req, msg, cap);
}

static const char *parse_document(job *j) {
    const cJSON *req = j->req, *t = cJSON_GetObjectItemCaseSensitive(req, "text");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(req, "group");
    j->title = json_str(req, "title");
    j->group = json_str(req, "group");
    if (!cJSON_IsString(t) || !t->valuestring[0]) return "text must be a non-empty string";
    if (g && !cJSON_IsNull(g) && !cJSON_IsString(g)) return "group must be a string";
    if (cJSON_GetObjectItemCaseSensitive(req, "title") && !j->title) return "title must be a string";
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(req, "exact");
    if (x && !cJSON_IsNull(x)) {
        if (!cJSON_IsString(x) || (strcmp(x->valuestring, "tokens") && strcmp(x->valuestring, "kv")))
            return "exact must be \"tokens\" or \"kv\"";
        j->exact_kv = !strcmp(x->valuestring, "kv");
    }
    j->text = t->valuestring;
    j->text_len = strlen(t->valuestring);
    if (!j->title || !j->title[0]) j->title = "untitled";
    return NULL;
}

const char *mn_request_parse(job *j, const char *body, size_t len, const mn_request_limits *lim, char *msg,
                             size_t cap) {
    if (!body || !len) return "the request needs a JSON body";
    const char *end = NULL;
    cJSON *req = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!req || !cJSON_IsObject(req)) {
        const size_t at = req || !end ? 0 : (size_t)(end - body);
        snprintf(msg, cap, "the request body is not a JSON object (%s at byte %zu)",
                 req ? "not an object" : "parse error", at);
        cJSON_Delete(req);
        return msg;
    }
    j->req = req;
    if (j->type == JOB_DOC_ADD) return parse_document(j);
    return j->type == JOB_CHAT ? parse_chat(lim, j, msg, cap) : parse_completion(lim, j, msg, cap);
}
