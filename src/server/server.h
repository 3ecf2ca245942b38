/* server.h - the HTTP server of the LLoCO path (`mnemo serve`).
 *
 * OpenAI-compatible chat and text completions (streamed as server-sent
 * events on request), document upload / list / delete over the store,
 * retrieval, health, Prometheus metrics and a small web page, on
 * libmicrohttpd with one thread per connection.
 *
 * Inference runs on N slots: worker threads with one mn_context each over the
 * one shared, read-only model. Requests wait in a bounded queue (full: 503),
 * each under a deadline; a streamed request whose client goes away is
 * cancelled. Shutdown stops accepting, lets queued and running requests
 * finish (up to a drain limit) and then stops.
 */
#ifndef MN_SERVER_H
#define MN_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "server/keys.h"
#include "store/store.h"

typedef struct {
    const char *host;        /* "127.0.0.1" by default */
    int port;                /* 0: pick a free one (see mn_server_port) */
    const char *api_key;     /* NULL/"": no authentication (unless keys) */
    const mn_api_keys *keys; /* scoped keys (each names an owner), or NULL; not with api_key */
    const char *model_id;    /* name reported by /v1/models */
    int n_slots;             /* inference slots (>= 1) */
    int queue_cap;           /* requests waiting for a slot beyond the running ones */
    int n_threads;           /* threads per slot (<= 0: cores / slots) */
    int32_t n_ctx;           /* cells per slot (<= 0: the model's trained context) */
    size_t max_body;         /* request bytes (413 beyond) */
    int32_t max_tokens;      /* largest max_tokens a request may ask for */
    int max_retrieve;        /* largest "retrieve": k */
    double timeout_s;        /* per request, queue wait included */
    size_t cache_bytes;      /* loaded-memory cache budget */
} mn_server_params;

typedef struct mn_server mn_server;

mn_server_params mn_server_default_params(void);

/* The model, adapter (compressor) and store must outlive the server; the
 * server serialises its own use of the store. Starts listening. */
int mn_server_start(const mn_model *m, const mn_adapter *a, mn_store *s, const mn_server_params *p,
                    mn_server **out);
/* The port actually bound. */
int mn_server_port(const mn_server *srv);
/* Stops accepting connections, waits up to drain_s seconds for requests in
 * flight to finish, then stops everything and frees the server. */
void mn_server_stop(mn_server *srv, double drain_s);

/* The web page served at "/" (self-contained HTML + JS). */
extern const char mn_server_page[];

#endif
