/* cmd_serve.c - `mnemo serve`: the HTTP server over a document store
 * (src/server). Signals are blocked in every thread and taken here with
 * sigwait, so SIGTERM / SIGINT start an orderly drain instead of killing
 * requests half-way. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "memory/adapter.h"
#include "server/server.h"
#include "store/ingest.h"
#include "store/store.h"

int cmd_serve(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: mnemo serve --db FILE|postgresql://... [-m MODEL] -a ADAPTER [--host 127.0.0.1]\n"
                   "                   [--port 8080] [--api-key K] [--slots N] [options]\n\n"
                   "OpenAI-compatible HTTP server over a document store (LLoCO serving):\n"
                   "  POST /v1/chat/completions, POST /v1/completions (\"stream\": true for server-sent events;\n"
                   "       \"mnemo\": {\"documents\": [ids]} or {\"retrieve\": k} answers from stored memories)\n"
                   "  GET /v1/models, POST|GET /v1/documents, GET|DELETE /v1/documents/ID\n"
                   "  GET /health, GET /metrics (Prometheus), GET / (web page)\n\n"
                   "  -a ADAPTER        compressor adapter (default: the store's, recorded by 'store add')\n"
                   "  --db-timeout S    a PostgreSQL store's statement and lock timeout (default 10 s; 0: none):\n"
                   "                    a hung or locked database answers 503 after S seconds, not never\n"
                   "  --db-connect-timeout S  its connect timeout (default 5 s)\n"
                   "  --mem-dir DIR     a PostgreSQL store's memory files (or $MNEMO_MEM_DIR): an absolute\n"
                   "                    path every server sees, recorded when the store is created\n"
                   "  --slots N         inference slots, each its own context (default 2)\n"
                   "  --queue N         requests waiting beyond the running ones; more get 503 (default 16)\n"
                   "  --ctx N           KV cells per slot (default: the model's trained context)\n"
                   "  -t N              threads per slot (default: cores / slots)\n"
                   "  --max-body BYTES  request size limit, 413 beyond (default 8388608)\n"
                   "  --max-tokens N    largest max_tokens a request may ask (default 1024)\n"
                   "  --timeout S       per-request limit in seconds, queue included (default 300)\n"
                   "  --cache-mb N      loaded-memory cache (default 1024)\n"
                   "  --drain S         on SIGTERM, seconds to let requests in flight finish (default 30)\n"
                   "  --api-key K       require 'Authorization: Bearer K' on /v1/ (or $MNEMO_API_KEY); every\n"
                   "                    client holding K reads and deletes every document\n"
                   "  --api-keys FILE   scoped keys, one 'OWNER KEY' per line ('#' comments): a document\n"
                   "                    belongs to the owners whose keys uploaded it; a key lists, reads,\n"
                   "                    answers from and deletes only its owner's documents (others: 404)\n");
            return 0;
        }
    const char *db = NULL, *model = NULL, *adapter = NULL, *keys_path = NULL;
    mn_server_params p = mn_server_default_params();
    long v;
    double d, drain = 30;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--db") || !strcmp(a, "-m") || !strcmp(a, "-a") || !strcmp(a, "--host") ||
            !strcmp(a, "--api-key") || !strcmp(a, "--api-keys")) {
            if (!val) return cli_usage_error("serve", "%s needs a value", a);
            if (!strcmp(a, "--db")) db = val;
            else if (!strcmp(a, "-m")) model = val;
            else if (!strcmp(a, "-a")) adapter = val;
            else if (!strcmp(a, "--host")) p.host = val;
            else if (!strcmp(a, "--api-keys")) keys_path = val;
            else p.api_key = val;
            i++;
        } else if (!strcmp(a, "--mem-dir")) {
            if (cli_set_mem_dir("serve", val)) return 2;
            i++;
        } else if (!strcmp(a, "--db-timeout") || !strcmp(a, "--db-connect-timeout")) {
            if (cli_set_db_seconds("serve", a, val)) return 2;
            i++;
        } else if (!strcmp(a, "--port")) {
            if (cli_parse_int("serve", a, val, 0, 65535, &v)) return 2;
            p.port = (int)v, i++;
        } else if (!strcmp(a, "--slots")) {
            if (cli_parse_int("serve", a, val, 1, 256, &v)) return 2;
            p.n_slots = (int)v, i++;
        } else if (!strcmp(a, "--queue")) {
            if (cli_parse_int("serve", a, val, 1, 100000, &v)) return 2;
            p.queue_cap = (int)v, i++;
        } else if (!strcmp(a, "--ctx")) {
            if (cli_parse_int("serve", a, val, 64, 1 << 20, &v)) return 2;
            p.n_ctx = (int32_t)v, i++;
        } else if (!strcmp(a, "-t")) {
            if (cli_parse_int("serve", a, val, 0, 512, &v)) return 2;
            p.n_threads = (int)v, i++;
        } else if (!strcmp(a, "--max-body")) {
            if (cli_parse_int("serve", a, val, 1024, 1L << 30, &v)) return 2;
            p.max_body = (size_t)v, i++;
        } else if (!strcmp(a, "--max-tokens")) {
            if (cli_parse_int("serve", a, val, 1, 1 << 20, &v)) return 2;
            p.max_tokens = (int32_t)v, i++;
        } else if (!strcmp(a, "--cache-mb")) {
            if (cli_parse_int("serve", a, val, 0, 1 << 20, &v)) return 2;
            p.cache_bytes = (size_t)v << 20, i++;
        } else if (!strcmp(a, "--timeout")) {
            if (cli_parse_float("serve", a, val, 0.1, 86400, &d)) return 2;
            p.timeout_s = d, i++;
        } else if (!strcmp(a, "--drain")) {
            if (cli_parse_float("serve", a, val, 0, 86400, &d)) return 2;
            drain = d, i++;
        } else {
            return cli_usage_error("serve", "unknown argument '%s'", a);
        }
    }
    if (!db) return cli_usage_error("serve", "needs --db FILE (created if missing) or --db postgresql://USER@HOST/DB");
    if (!p.api_key && !keys_path) p.api_key = getenv("MNEMO_API_KEY");
    if (keys_path && p.api_key) return cli_usage_error("serve", "--api-key and --api-keys exclude each other");
    mn_api_keys *keys = NULL;
    if (keys_path && mn_api_keys_load(keys_path, &keys)) return cli_fail("serve");
    p.keys = keys;
    mn_store *s = NULL;
    if (mn_store_open(db, MN_STORE_CREATE, &s)) {
        mn_api_keys_free(keys);
        return cli_fail("store");
    }
    char abuf[4096];
    if (!adapter && mn_store_meta_get(s, "adapter_path", abuf, sizeof abuf) == 0) adapter = abuf;
    if (!adapter) adapter = cli_adapter_path(NULL);
    if (!adapter) {
        mn_store_close(s);
        mn_api_keys_free(keys);
        return cli_usage_error("serve", "needs -a ADAPTER (the store records none and no shipped adapter was found)");
    }
    mn_model *m = NULL;
    mn_adapter *ad = NULL;
    int rc = cli_load_model(model, &m);
    if (!rc) cli_chat_note(m);
    if (!rc && mn_adapter_load(m, adapter, &ad)) rc = cli_fail("adapter");
    if (!rc && mn_ingest_bind_model(s, m)) rc = cli_fail("store");
    /* the model id clients see: the file name without directory and extension */
    char id[128];
    const char *mp = cli_model_path(model), *base = strrchr(mp, '/');
    snprintf(id, sizeof id, "%s", base ? base + 1 : mp);
    char *dot = strstr(id, ".gguf");
    if (dot) *dot = 0;
    p.model_id = id;
    /* every thread created from here on inherits the blocked signals */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    mn_server *srv = NULL;
    if (!rc && mn_server_start(m, ad, s, &p, &srv)) rc = cli_fail("serve");
    if (!rc) {
        fprintf(stderr, "mnemo: serving %s on http://%s:%d/ (%d slots, queue %d%s)\n", id, p.host,
                mn_server_port(srv), p.n_slots, p.queue_cap,
                keys ? ", scoped API keys" : p.api_key && p.api_key[0] ? ", API key required" : "");
        printf("listening %d\n", mn_server_port(srv));
        fflush(stdout);
        int sig = 0;
        sigwait(&set, &sig);
        fprintf(stderr, "mnemo: %s: draining requests in flight (up to %.0f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                drain);
        mn_server_stop(srv, drain);
        fprintf(stderr, "mnemo: stopped\n");
    }
    mn_adapter_free(ad);
    mn_model_free(m);
    mn_store_close(s);
    mn_api_keys_free(keys);
    return rc;
}
