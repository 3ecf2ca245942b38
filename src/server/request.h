/* request.h - what the server reads from a request apart from the
 * connection: the route a method and path name, and a POST body's JSON
 * checked into a job. Pure functions (no socket, no model), so they are
 * fuzzed in-process (tests/fuzz/fuzz_request.c). Library-internal to
 * src/server/. */
#ifndef MN_SERVER_REQUEST_H
#define MN_SERVER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "server/job.h"

typedef enum {
    MN_RT_NOT_FOUND = 0, /* 404 */
    MN_RT_BAD_METHOD,    /* a known path, another method: 405 */
    MN_RT_PAGE,          /* GET / */
    MN_RT_HEALTH,        /* GET /health */
    MN_RT_METRICS,       /* GET /metrics */
    MN_RT_MODELS,        /* GET /v1/models */
    MN_RT_DOCS,          /* GET /v1/documents */
    MN_RT_DOC_GET,       /* GET /v1/documents/ID */
    MN_RT_DOC_DELETE,    /* DELETE /v1/documents/ID */
    MN_RT_CHAT,          /* POST /v1/chat/completions */
    MN_RT_COMPLETION,    /* POST /v1/completions */
    MN_RT_DOC_ADD,       /* POST /v1/documents */
} mn_route;

/* The route of `method url` (HEAD counts as GET); for the one-document
 * routes *tail gets the path after "/v1/documents/". */
mn_route mn_request_route(const char *method, const char *url, const char **tail);

/* A document id in a path: a positive decimal integer, nothing else. */
int mn_request_doc_id(const char *s, int64_t *id);

typedef struct {
    int32_t max_tokens; /* the largest max_tokens a request may ask */
    int max_retrieve;   /* the largest mnemo.retrieve */
} mn_request_limits;

/* Parses body (len bytes, any content) as the JSON of j->type's request
 * (chat, completion or document upload) into j, which then owns the parsed
 * tree (j->req) that its strings point into. Returns NULL, or the message
 * for a 400 answer (in msg, or a constant). */
const char *mn_request_parse(job *j, const char *body, size_t len, const mn_request_limits *lim, char *msg,
                             size_t cap);

#endif
