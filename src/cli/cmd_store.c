/* cmd_store.c - `mnemo store`: the compressed-document store (LLoCO's offline
 * half). add compresses documents in parallel into a SQLite store, ls / rm /
 * query / groups / verify inspect it, ask answers from retrieved memories
 * through the same library loop as the server (store/answer.h). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/threadpool.h"
#include "memory/adapter.h"
#include "memory/docmem.h"
#include "memory/memory.h"
#include "store/answer.h"
#include "store/docstore.h"
#include "store/ingest.h"
#include "store/retrieve.h"
#include "store/store.h"

#define MAX_K 64

typedef struct {
    const char *db, *model, *adapter, *group, *docs_csv, *owner;
    const char *args[4096];
    int n_args;
    long k, threads, jobs, n_predict, seed, recall, local, recall_every;
    double temp;
    int gc, quiet, exact_kv;
} st_opts;

static int usage(FILE *f) {
    fprintf(f,
            "usage: mnemo store <add|ls|rm|query|ask|groups|verify> --db FILE [options]\n\n"
            "  add   [--group G] [-a ADAPTER] [-j JOBS] [-t N] [--owner O] [--exact tokens|kv] DOC...\n"
            "        compress documents into the store (in parallel; progress on stderr). Text already stored\n"
            "        is skipped. -a is needed the first time and is remembered as the store's compressor.\n"
            "        --owner makes O an owner (the server's scoped keys, 'serve --api-keys': only O's keys\n"
            "        then see the document). --exact kv also keeps the segments' decoder cells in 8 bits\n"
            "        (about 12 KB a token for SmolLM2): recall copies them back instead of decoding the\n"
            "        segments (default tokens)\n"
            "  ls    [--owner O]                   list documents (id, group, tokens, memory slots, ratio,\n"
            "                                      exact tokens and how recall pages them, bytes); --owner:\n"
            "                                      only O's\n"
            "  rm    ID...                         remove documents and their memory files\n"
            "  query \"question\" [-k K]             rank documents (BM25 + dense, fused by rank)\n"
            "  ask   \"question\" [-k K] [--docs ID,..] [-n N] [--temp T] [--seed S] [--recall R] [--local N]\n"
            "        [--recall-every E]\n"
            "        answer from the top-k documents' memories (one group's), citing them; R segments of\n"
            "        their exact text are paged back in beside the memories (default auto: one per 16\n"
            "        stored segments of each, 2 to 8; 0: memory alone); with segments paged, N raw tokens of\n"
            "        each memory's recent window stay beside them (default 128; 0: all); every E answer\n"
            "        tokens recall chooses again for the question and the answer so far (default 0: once)\n"
            "  groups                              list groups and their decoder adapters\n"
            "  verify [--gc]                       integrity check of the database and every memory file;\n"
            "                                      --gc also deletes memory files no document refers to\n"
            "                                      (only files named as the store names them; a shared\n"
            "                                      --mem-dir's other files are left alone; the directory is\n"
            "                                      marked with the store's id, and one that another store\n"
            "                                      marked is refused)\n"
            "common: --db FILE (required), -m MODEL, -a ADAPTER (default: the store's), -t threads\n"
            "  --db takes a SQLite file (created if missing, memory files in FILE.mem/) or a PostgreSQL\n"
            "  database shared by several servers: postgresql://USER@HOST/DB or 'host=H dbname=DB ...';\n"
            "  its memory files go to --mem-dir DIR or MNEMO_MEM_DIR (an absolute path every server\n"
            "  sees, recorded in the store when it is created; given again, it overrides the record\n"
            "  for a host that mounts the directory elsewhere); --db-timeout S its statement and lock\n"
            "  timeout (default 10 s, 0: none), --db-connect-timeout S its connect timeout (default 5 s)\n");
    return f == stdout ? 0 : 2;
}

static int parse(const char *cmd, st_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->k = 3;
    o->n_predict = 256;
    o->recall = MN_RECALL_DEFAULT_K;
    o->local = MN_RECALL_DEFAULT_LOCAL;
    o->recall_every = MN_RECALL_DEFAULT_EVERY;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define STR(flag, field)                                             \
    if (!strcmp(a, flag)) {                                         \
        if (!v) return cli_usage_error(cmd, "%s needs a value", a); \
        o->field = v;                                               \
        i++;                                                        \
        continue;                                                   \
    }
        STR("--db", db) STR("-m", model) STR("-a", adapter) STR("--group", group) STR("--docs", docs_csv) STR("--owner", owner)
#undef STR
#define INT(flag, field, lo, hi)                                        \
    if (!strcmp(a, flag)) {                                            \
        if (cli_parse_int(cmd, a, v, lo, hi, &o->field)) return 2;     \
        i++;                                                           \
        continue;                                                      \
    }
        INT("-k", k, 1, MAX_K) INT("-t", threads, 0, 512) INT("-j", jobs, 0, 512) INT("-n", n_predict, 1, 1 << 16)
        INT("--seed", seed, 0, 0x7fffffffL) INT("--local", local, 0, 1 << 20) INT("--recall-every", recall_every, 0, 1 << 20)
#undef INT
        if (!strcmp(a, "--recall")) {
            if (cli_parse_recall(cmd, v, MN_DOCMEM_RECALL_MAXK, &o->recall)) return 2;
            i++;
        } else if (!strcmp(a, "--temp")) {
            if (cli_parse_float(cmd, a, v, 0, 100, &o->temp)) return 2;
            i++;
        } else if (!strcmp(a, "--mem-dir")) {
            if (cli_set_mem_dir(cmd, v)) return 2;
            i++;
        } else if (!strcmp(a, "--db-timeout") || !strcmp(a, "--db-connect-timeout")) {
            if (cli_set_db_seconds(cmd, a, v)) return 2;
            i++;
        } else if (!strcmp(a, "--exact")) {
            if (!v || (strcmp(v, "tokens") && strcmp(v, "kv")))
                return cli_usage_error(cmd, "--exact is tokens or kv (got '%s')", v ? v : "");
            o->exact_kv = !strcmp(v, "kv");
            i++;
        } else if (!strcmp(a, "--gc")) {
            o->gc = 1;
        } else if (!strcmp(a, "-q")) {
            o->quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        } else {
            if (o->n_args == (int)(sizeof o->args / sizeof o->args[0])) return cli_usage_error(cmd, "too many arguments");
            o->args[o->n_args++] = a;
        }
    }
    if (!o->db) return cli_usage_error(cmd, "needs --db FILE or --db postgresql://...");
    if (o->owner && !mn_store_valid_owner(o->owner))
        return cli_usage_error(cmd, "--owner: a name of 1-64 of A-Z a-z 0-9 . _ -");
    return 0;
}

static int open_store(const st_opts *o, int flags, mn_store **s) {
    if (mn_store_open(o->db, flags, s)) return cli_fail("store");
    return 0;
}

/* The store's compressor adapter: -a, else the one recorded by the first add. */
static const char *adapter_path(const st_opts *o, mn_store *s, char *buf, size_t cap) {
    if (o->adapter) return o->adapter;
    if (mn_store_meta_get(s, "adapter_path", buf, cap) == 0) return buf;
    return NULL;
}

/* ------------------------------------------------------------------- add */

typedef struct {
    const st_opts *o;
    mn_store *s;
    const mn_model *m;
    const mn_adapter *a;
    pthread_mutex_t store_mu, mu;
    int next, done, failed, n_docs, threads_each;
    int64_t tokens_done, bytes_done, bytes_total;
    double t0, last_draw;
    int tty;
} add_job;

static void draw(add_job *J, int final) {
    double now = cli_now(), el = now - J->t0;
    if (!final && now - J->last_draw < 0.25) return;
    J->last_draw = now;
    double frac = J->bytes_total ? (double)J->bytes_done / (double)J->bytes_total : 1.0;
    char eta[32] = "--:--";
    if (J->bytes_done > 0 && frac < 1) {
        long s = (long)(el / frac - el);
        snprintf(eta, sizeof eta, "%ld:%02ld", s / 60, s % 60);
    } else if (frac >= 1) {
        snprintf(eta, sizeof eta, "0:00");
    }
    char bar[31];
    int fill = (int)(frac * 30 + 0.5);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "%s[%s] %d/%d docs  %.0f tok/s  ETA %s%s", J->tty ? "\r" : "", bar, J->done, J->n_docs,
            el > 0 ? J->tokens_done / el : 0.0, eta, J->tty && !final ? "  " : "\n");
    fflush(stderr);
}

static int64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : 0;
}

static void *add_worker(void *arg) {
    add_job *J = arg;
    for (;;) {
        pthread_mutex_lock(&J->mu);
        int i = J->next < J->n_docs ? J->next++ : -1;
        pthread_mutex_unlock(&J->mu);
        if (i < 0) break;
        const char *path = J->o->args[i];
        char *text = NULL;
        size_t len = 0;
        int rc = cli_read_file(path, &text, &len);
        mn_ingest_result res;
        memset(&res, 0, sizeof res);
        char err[1100] = "";
        if (!rc) {
            const char *base = strrchr(path, '/');
            mn_ingest_doc d = {base ? base + 1 : path, path, J->o->group, text, len, J->o->exact_kv};
            char abs[PATH_MAX];
            if (realpath(path, abs)) d.source = abs;
            rc = mn_ingest(J->s, &J->store_mu, J->m, J->a, &d, J->threads_each, &res);
            if (!rc && J->o->owner) {
                pthread_mutex_lock(&J->store_mu);
                rc = mn_store_grant(J->s, res.id, J->o->owner, NULL);
                pthread_mutex_unlock(&J->store_mu);
            }
            if (rc) snprintf(err, sizeof err, "mnemo: %s: %s", path, mn_last_error());
        }
        free(text);
        pthread_mutex_lock(&J->mu);
        J->done++;
        J->bytes_done += file_size(path);
        if (rc) {
            J->failed++;
            if (J->tty) fputc('\n', stderr);
            if (err[0]) fprintf(stderr, "%s\n", err);
        } else {
            J->tokens_done += res.existed ? 0 : res.n_tokens;
            /* stdout gets one line per committed document, flushed, so a
             * caller always knows what the store holds */
            printf("%s\t%lld\t%s\t%lld tokens -> %d memory slots + %d raw = %lld KV cells (+ %d exact tokens for "
                   "recall%s)\n",
                   res.existed ? "exists" : "added", (long long)res.id, path, (long long)res.n_tokens, res.n_slots,
                   res.n_raw, (long long)res.n_cells, res.n_exact, res.exact_kv ? ", with their cells" : "");
            fflush(stdout);
            /* a text stored before keeps the memory it has: say so where it lacks the cells asked for */
            if (res.existed && J->o->exact_kv && !res.exact_kv)
                fprintf(stderr, "mnemo: %s was stored before without its cells (recall decodes its segments); "
                        "'store rm %lld' and add it again to keep them\n", path, (long long)res.id);
        }
        draw(J, 0);
        pthread_mutex_unlock(&J->mu);
    }
    return NULL;
}

static int store_add(const st_opts *o) {
    if (o->n_args == 0) return cli_usage_error("store add", "give one or more document files");
    mn_store *s;
    if (open_store(o, MN_STORE_CREATE, &s)) return 1;
    char abuf[MN_STORE_PATH_CAP];
    const char *ap = adapter_path(o, s, abuf, sizeof abuf);
    const int record = o->adapter || !ap; /* a new store remembers its adapter, given or shipped */
    if (!ap) ap = cli_adapter_path(NULL);
    if (!ap) {
        mn_store_close(s);
        return cli_usage_error("store add", "a new store needs -a ADAPTER (no shipped adapter found)");
    }
    mn_model *m = NULL;
    mn_adapter *a = NULL;
    int rc = cli_load_model(o->model, &m);
    if (!rc && mn_adapter_load(m, ap, &a)) rc = cli_fail("adapter");
    if (!rc && mn_ingest_bind_model(s, m)) rc = cli_fail("store");
    if (!rc && record && mn_store_record_adapter(s, ap, mn_adapter_hash(a))) rc = cli_fail("store");
    if (rc) {
        mn_adapter_free(a);
        mn_model_free(m);
        mn_store_close(s);
        return rc;
    }
    add_job J;
    memset(&J, 0, sizeof J);
    J.o = o;
    J.s = s;
    J.m = m;
    J.a = a;
    J.n_docs = o->n_args;
    J.tty = isatty(2);
    pthread_mutex_init(&J.store_mu, NULL);
    pthread_mutex_init(&J.mu, NULL);
    int cores = o->threads > 0 ? (int)o->threads : mn_cpu_count();
    int jobs = o->jobs > 0 ? (int)o->jobs : cores;
    if (jobs > J.n_docs) jobs = J.n_docs;
    J.threads_each = cores / jobs > 0 ? cores / jobs : 1;
    for (int i = 0; i < J.n_docs; i++) J.bytes_total += file_size(o->args[i]);
    J.t0 = cli_now();
    pthread_t th[512];
    int started = 0;
    for (int i = 1; i < jobs; i++)
        if (pthread_create(&th[started], NULL, add_worker, &J) == 0) started++;
    add_worker(&J);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (J.tty) draw(&J, 1);
    pthread_mutex_destroy(&J.store_mu);
    pthread_mutex_destroy(&J.mu);
    mn_adapter_free(a);
    mn_model_free(m);
    mn_store_close(s);
    return J.failed ? 1 : 0;
}

/* -------------------------------------------------------------- ls / rm */

static int store_ls(const st_opts *o) {
    mn_store *s;
    if (open_store(o, MN_STORE_READONLY, &s)) return 1;
    mn_store_doc *d;
    int64_t n;
    int rc = mn_store_list_owned(s, mn_store_recorded_adapter_hash(s), o->owner, &d, &n) ? cli_fail("store") : 0;
    if (!rc) {
        /* every part of a memory named: slots, raw tokens, the KV cells they make, the exact tokens for recall */
        printf("%-6s %-12s %9s %7s %6s %8s %6s %8s %6s %10s  %s\n", "id", "group", "tokens", "slots", "raw",
               "kv_cells", "ratio", "exact", "paged", "bytes", "title");
        for (int64_t i = 0; i < n; i++) {
            mn_store_mem_parts p;
            if (d[i].n_slots >= 0) {
                mn_store_doc_parts(s, &d[i], &p); /* an unreadable file shows its parts as -1 */
                /* paged: how recall pages a segment back (kv: its stored cells; tokens: decoding its ids) */
                printf("%-6lld %-12s %9lld %7d %6d %8lld %6.1f %8d %6s %10lld  %s\n", (long long)d[i].id, d[i].group,
                       (long long)d[i].n_tokens, p.slots, p.raw, (long long)p.cells,
                       p.cells ? (double)d[i].n_tokens / (double)p.cells : 0.0, p.exact,
                       p.exact <= 0 ? "-" : p.exact_kv ? "kv" : "tokens", (long long)d[i].mem_bytes, d[i].title);
            } else
                printf("%-6lld %-12s %9lld %7s %6s %8s %6s %8s %6s %10s  %s\n", (long long)d[i].id, d[i].group,
                       (long long)d[i].n_tokens, "-", "-", "-", "-", "-", "-", "-", d[i].title);
        }
        free(d);
    }
    mn_store_close(s);
    return rc;
}

static int parse_id(const char *cmd, const char *s, int64_t *id) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0) return cli_usage_error(cmd, "'%s' is not a document id", s);
    *id = v;
    return 0;
}

static int store_rm(const st_opts *o) {
    if (o->n_args == 0) return cli_usage_error("store rm", "give the ids of the documents to remove");
    int64_t ids[4096];
    for (int i = 0; i < o->n_args; i++)
        if (parse_id("store rm", o->args[i], &ids[i])) return 2;
    mn_store *s;
    if (open_store(o, 0, &s)) return 1;
    int rc = 0;
    for (int i = 0; i < o->n_args; i++) {
        char files[4096];
        if (mn_store_remove(s, ids[i], files, sizeof files)) {
            rc = cli_fail("store rm");
            continue;
        }
        /* after the commit: a kill here leaves only unreferenced files (verify --gc) */
        mn_store_unlink_files(s, files);
        printf("removed\t%lld\n", (long long)ids[i]);
    }
    mn_store_close(s);
    return rc;
}

static int store_groups(const st_opts *o) {
    mn_store *s;
    if (open_store(o, MN_STORE_READONLY, &s)) return 1;
    mn_store_group *g;
    int64_t n;
    int rc = mn_store_groups(s, &g, &n) ? cli_fail("store") : 0;
    for (int64_t i = 0; !rc && i < n; i++)
        printf("%-16s %6lld docs  adapter: %s\n", g[i].name, (long long)g[i].n_docs,
               g[i].adapter_path[0] ? g[i].adapter_path : "(none)");
    if (!rc) free(g);
    mn_store_close(s);
    return rc;
}

static int store_verify(const st_opts *o) {
    mn_store *s;
    if (open_store(o, 0, &s)) return 1;
    char rep[8192];
    int rc = 0;
    if (mn_store_check(s, rep, sizeof rep)) {
        fprintf(stderr, "%s", rep);
        rc = cli_fail("database");
    } else {
        printf("database: ok\n");
    }
    if (mn_store_verify_files(s, rep, sizeof rep)) {
        fprintf(stderr, "%s", rep);
        rc = cli_fail("memory files");
    } else {
        printf("memory files: ok\n");
    }
    if (o->gc) {
        int removed = 0;
        if (mn_store_gc(s, 0, &removed)) rc = cli_fail("gc");
        else printf("removed %d unreferenced file(s)\n", removed);
    }
    mn_store_close(s);
    return rc;
}

/* -------------------------------------------------------- query / ask */

static int print_piece(void *user, const char *text, size_t len) {
    fwrite(text, 1, len, (FILE *)user);
    fflush((FILE *)user);
    return 0;
}

static int store_query(const st_opts *o, int ask) {
    const char *cmd = ask ? "store ask" : "store query";
    if (o->n_args != 1) return cli_usage_error(cmd, "give one question (quote it)");
    const char *q = o->args[0];
    int64_t ids[MAX_K];
    int n_ids = 0;
    if (o->docs_csv) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", o->docs_csv);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            if (n_ids == MAX_K) return cli_usage_error(cmd, "too many --docs");
            if (parse_id(cmd, t, &ids[n_ids])) return 2;
            n_ids++;
        }
    }
    mn_model *m = NULL;
    mn_docstore *ds = NULL;
    int rc = cli_load_model(o->model, &m);
    if (!rc && mn_docstore_open_flags(o->db, MN_STORE_READONLY, m, o->adapter, NULL, (int)o->threads, &ds))
        rc = cli_fail("store");
    if (!rc && !ask) {
        mn_retrieval_hit hits[MAX_K];
        int nh = 0;
        if (mn_docstore_retrieve(ds, q, (int)o->k, hits, &nh)) rc = cli_fail("retrieve");
        for (int i = 0; i < nh && !rc; i++) {
            mn_store_doc d;
            if (mn_store_get(mn_docstore_store(ds), hits[i].doc_id, 0, &d)) continue;
            char b[32] = "-", dn[32] = "-";
            if (hits[i].rank_bm25) snprintf(b, sizeof b, "#%d %.2f", hits[i].rank_bm25, hits[i].bm25);
            if (hits[i].rank_dense) snprintf(dn, sizeof dn, "#%d %.3f", hits[i].rank_dense, hits[i].dense);
            printf("%d\t%lld\t%.4f\tbm25 %s\tdense %s\t%s\t%s\n", i + 1, (long long)d.id, hits[i].score, b, dn,
                   d.group, d.title);
        }
    }
    if (!rc && ask) {
        mn_ask_params p = mn_ask_default_params();
        p.max_tokens = (int32_t)o->n_predict;
        p.temperature = (float)o->temp;
        p.seed = (uint64_t)o->seed;
        p.recall = (int32_t)o->recall;
        p.local = (int32_t)o->local;
        p.recall_every = (int32_t)o->recall_every;
        mn_store_doc docs[MAX_K];
        int nd = 0, lora = 0;
        mn_answer_stats st;
        int64_t cells = 0;
        /* the answer streams to stdout as it is generated */
        if (mn_docstore_answer(ds, q, ids, n_ids, (int)o->k, &p, print_piece, stdout, docs, &nd, &lora, &st, &cells))
            rc = cli_fail(nd ? "answer" : "documents");
        printf("\n");
        if (!rc) {
            if (lora && !o->quiet) fprintf(stderr, "[decoder LoRA of group '%s']\n", docs[0].group);
            printf("\nSources:\n");
            for (int i = 0; i < nd; i++)
                printf("  [%d] %s (document %lld, group %s, %lld tokens -> %d KV cells)\n", i + 1, docs[i].title,
                       (long long)docs[i].id, docs[i].group, (long long)docs[i].n_tokens, docs[i].n_slots);
            if (!o->quiet)
                fprintf(stderr, "[%d memory cells (%d of them %d recalled segments); %lld prompt tokens; %.2f s to "
                                "first token; %lld tokens in %.2f s; %s]\n",
                        st.memory_slots, st.recalled_cells, st.recalled, (long long)st.prompt_tokens, st.t_first_token,
                        (long long)st.completion_tokens, st.t_total, mn_finish_name(st.finish));
        }
    }
    mn_docstore_close(ds);
    mn_model_free(m);
    return rc;
}

int cmd_store(int argc, char **argv) {
    if (argc < 1) return usage(stderr);
    const char *sub = argv[0];
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(stdout);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "store %s", sub);
    static st_opts o;
    if (!strcmp(sub, "add") || !strcmp(sub, "ls") || !strcmp(sub, "rm") || !strcmp(sub, "query") ||
        !strcmp(sub, "ask") || !strcmp(sub, "groups") || !strcmp(sub, "verify")) {
        int rc = parse(cmd, &o, argc - 1, argv + 1);
        if (rc) return rc;
    } else {
        fprintf(stderr, "mnemo store: unknown subcommand '%s'\n\n", sub);
        return usage(stderr);
    }
    if (!strcmp(sub, "add")) return store_add(&o);
    if (!strcmp(sub, "ls")) return store_ls(&o);
    if (!strcmp(sub, "rm")) return store_rm(&o);
    if (!strcmp(sub, "query")) return store_query(&o, 0);
    if (!strcmp(sub, "ask")) return store_query(&o, 1);
    if (!strcmp(sub, "groups")) return store_groups(&o);
    return store_verify(&o);
}
