/* store_pg.c - the PostgreSQL backend of the document store (store.h), for
 * several servers sharing one collection.
 *
 * Schema (mnemo_schema.version 2; mnemo creates and migrates it itself,
 * under an advisory lock so that servers starting together do not race):
 *   meta(key, value)                       store-wide facts: model hash, embedding dim, mem_dir
 *   groups(name, adapter_path, adapter_sha256, created)
 *   documents(id identity (never reused), title, source, sha256 UNIQUE, n_tokens, grp -> groups,
 *             created)
 *   memories(doc_id -> documents ON DELETE CASCADE, adapter_hash, n_slots, file, bytes, checksum)
 *   chunks(id identity, doc_id -> documents ON DELETE CASCADE, seq, text, embedding bytea of f32,
 *          tsv tsvector generated from text ('english'), GIN-indexed)
 *   doc_owners(doc_id -> documents ON DELETE CASCADE, owner)   (version 2) who owns what
 *
 * Full-text ranking is ts_rank_cd over the GIN index (a document scores as
 * its best chunk); dense ranking reads the candidates' embeddings and
 * computes the cosine in mnemo, since pgvector is not a Debian package.
 *
 * Memory files stay files, in one directory every server mounts at the same
 * path (recorded in meta 'mem_dir' when the store is created from
 * MNEMO_MEM_DIR; MNEMO_MEM_DIR at open overrides it for a host that mounts
 * it elsewhere). They are megabytes each and the decoders mmap them, so a
 * shared file system's page cache serves them where a bytea round trip per
 * request would copy them; the database keeps each file's name, size and
 * checksum, refers to it only once the file is complete, and
 * mn_store_verify_files() checks the two agree.
 *
 * Every write is one transaction (READ COMMITTED; the same text uploaded
 * through two servers at once meets the UNIQUE sha256, and the loser takes
 * the winner's id). A connection that broke (server restart) is reset
 * before the next operation, with a backoff while the database stays away.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "error.h"
#include "store/store.h"
#include "store/store_impl.h"

typedef struct {
    mn_store base;
    PGconn *conn;
    char *where; /* "database NAME on HOST" for messages, never the password */
    char *mem_dir;
    int readonly;
    atomic_llong reconnects;  /* connections re-established (metrics read it from other threads) */
    double retry_at, backoff; /* no reconnect attempt before retry_at (monotonic seconds) */
} pg_store;

#define SCHEMA_VERSION 2

/* Migration i takes the schema from version i to i + 1. */
static const char *const k_migrations[SCHEMA_VERSION] = {
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE groups(name TEXT PRIMARY KEY, adapter_path TEXT NOT NULL DEFAULT '',"
    "  adapter_sha256 TEXT NOT NULL DEFAULT '', created BIGINT NOT NULL);"
    "CREATE TABLE documents(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title TEXT NOT NULL,"
    "  source TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, n_tokens BIGINT NOT NULL,"
    "  grp TEXT NOT NULL REFERENCES groups(name), created BIGINT NOT NULL);"
    "CREATE TABLE memories(doc_id BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  adapter_hash TEXT NOT NULL, n_slots INTEGER NOT NULL, file TEXT NOT NULL, bytes BIGINT NOT NULL,"
    "  checksum TEXT NOT NULL, PRIMARY KEY(doc_id, adapter_hash));"
    "CREATE TABLE chunks(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  doc_id BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    "  text TEXT NOT NULL, embedding BYTEA,"
    "  tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);"
    "CREATE INDEX chunks_doc ON chunks(doc_id, seq);"
    "CREATE INDEX chunks_tsv ON chunks USING GIN(tsv);",
    "CREATE TABLE doc_owners(doc_id BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  owner TEXT NOT NULL, PRIMARY KEY(owner, doc_id));"
    "CREATE INDEX doc_owners_doc ON doc_owners(doc_id);",
};

/* libpq's messages end in a newline; ours do not. */
/* SQLSTATEs of a database that cannot serve now but may soon: connection
 * exceptions (08), insufficient resources (53), shutdown or start-up (57P0x),
 * a statement or lock timeout (57014, 55P03), serialization failures (40001,
 * 40P01). */
static int transient_state(const char *st) {
    if (!st || strlen(st) != 5) return 0;
    return !strncmp(st, "08", 2) || !strncmp(st, "53", 2) || !strncmp(st, "57P0", 4) || !strcmp(st, "57014") ||
           !strcmp(st, "55P03") || !strcmp(st, "40001") || !strcmp(st, "40P01");
}

/* An error naming the store and the cause; a lost connection or a transient
 * state is MN_EUNAVAILABLE (the server answers 503 and the next call
 * reconnects), whatever code the caller proposed. */
static int pg_fail(pg_store *s, int code, const char *what, const PGresult *r) {
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!m || !*m) m = PQerrorMessage(s->conn);
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    if (PQstatus(s->conn) != CONNECTION_OK || (r && transient_state(PQresultErrorField(r, PG_DIAG_SQLSTATE))))
        code = MN_EUNAVAILABLE;
    return mn_error(code, "store %s: %s: %.*s", s->where, what, (int)n, m);
}

/* Runs sql with text parameters (lens/fmts for binary ones); *out gets the
 * result when the caller wants rows, else it is cleared here. */
static int run(pg_store *s, const char *what, const char *sql, int n, const char *const *vals, const int *lens,
               const int *fmts, int binary_out, PGresult **out) {
    if (out) *out = NULL;
    PGresult *r = PQexecParams(s->conn, sql, n, NULL, vals, lens, fmts, binary_out);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_fail(s, MN_EIO, what, r);
        PQclear(r);
        return rc;
    }
    if (out) *out = r;
    else PQclear(r);
    return 0;
}

/* sql without parameters, possibly several statements */
static int exec(pg_store *s, const char *what, const char *sql) {
    PGresult *r = PQexec(s->conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : pg_fail(s, MN_EIO, what, r);
    PQclear(r);
    return rc;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A server that restarted leaves the connection bad: reconnect. While the database stays away, attempts
 * back off (0.1 s doubling to 1 s: one connect per interval, however many requests arrive, and still
 * back within about a second of the database's return); requests in between fail at once. */
static int alive(pg_store *s) {
    if (PQstatus(s->conn) == CONNECTION_OK) return 0;
    const double t = mono_s();
    if (t < s->retry_at)
        return mn_error(MN_EUNAVAILABLE, "store %s: connection lost; the next reconnect attempt is in %.1f s",
                        s->where, s->retry_at - t);
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        s->backoff = s->backoff > 0 ? (s->backoff * 2 < 1.0 ? s->backoff * 2 : 1.0) : 0.1;
        s->retry_at = mono_s() + s->backoff;
        return pg_fail(s, MN_EIO, "connection lost", NULL);
    }
    s->backoff = s->retry_at = 0;
    atomic_fetch_add(&s->reconnects, 1);
    return s->readonly ? exec(s, "read-only session", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY") : 0;
}

static void copy_text(const char *t, char *dst, size_t cap) { mn_store_copy_text(t ? t : "", dst, cap); }

static int64_t get_i64(const PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ------------------------------------------------------------------ ops */

static void pg_close(mn_store *b) {
    pg_store *s = (pg_store *)b;
    if (!s) return;
    if (s->conn) PQfinish(s->conn);
    free(s->where);
    free(s->mem_dir);
    free(s);
}

static const char *pg_mem_dir(mn_store *b) { return ((pg_store *)b)->mem_dir; }

static int find_sha(pg_store *s, const char *sha, int64_t *id) {
    PGresult *r;
    const char *v[1] = {sha};
    int rc = run(s, "lookup", "SELECT id FROM documents WHERE sha256 = $1", 1, v, NULL, NULL, 0, &r);
    if (rc) return rc;
    if (PQntuples(r) == 1) *id = get_i64(r, 0, 0);
    else rc = mn_error(MN_ENOTFOUND, "no document with sha256 %.64s", sha);
    PQclear(r);
    return rc;
}

static int pg_find_sha(mn_store *b, const char *sha, int64_t *id) {
    pg_store *s = (pg_store *)b;
    int rc = alive(s);
    return rc ? rc : find_sha(s, sha, id);
}

static int insert_memory(pg_store *s, int64_t id, const mn_store_new_doc *d) {
    char sid[24], ah[17], ck[17], slots[16], bytes[24];
    snprintf(sid, sizeof sid, "%lld", (long long)id);
    mn_store_hex64(d->adapter_hash, ah);
    mn_store_hex64(d->mem_checksum, ck);
    snprintf(slots, sizeof slots, "%d", d->n_slots);
    snprintf(bytes, sizeof bytes, "%lld", (long long)d->mem_bytes);
    const char *v[6] = {sid, ah, slots, d->mem_file, bytes, ck};
    return run(s, "add memory",
               "INSERT INTO memories(doc_id, adapter_hash, n_slots, file, bytes, checksum) "
               "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
               6, v, NULL, NULL, 0, NULL);
}

static int meta_get(pg_store *s, const char *key, char *val, size_t cap) {
    PGresult *r;
    const char *v[1] = {key};
    int rc = run(s, "meta", "SELECT value FROM meta WHERE key = $1", 1, v, NULL, NULL, 0, &r);
    if (rc) return rc;
    if (PQntuples(r) == 1) copy_text(PQgetvalue(r, 0, 0), val, cap);
    else rc = mn_error(MN_ENOTFOUND, "store %s: no '%s' recorded", s->where, key);
    PQclear(r);
    return rc;
}

static int meta_set(pg_store *s, const char *key, const char *val) {
    const char *v[2] = {key, val};
    return run(s, "meta",
               "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
               2, v, NULL, NULL, 0, NULL);
}

static int ensure_group(pg_store *s, const char *group) {
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *v[2] = {group, now};
    return run(s, "add group", "INSERT INTO groups(name, created) VALUES ($1, $2) ON CONFLICT DO NOTHING", 2, v, NULL,
               NULL, 0, NULL);
}

static int add_body(pg_store *s, const mn_store_new_doc *d, int64_t *id, int *existed) {
    const char *group = d->group ? d->group : MN_STORE_DEFAULT_GROUP;
    int rc = find_sha(s, d->sha256, id);
    if (rc == 0) {
        *existed = 1;
        return d->mem_file ? insert_memory(s, *id, d) : 0;
    }
    if (rc != MN_ENOTFOUND) return rc;
    if ((rc = ensure_group(s, group))) return rc;
    char ntok[24], now[24];
    snprintf(ntok, sizeof ntok, "%lld", (long long)d->n_tokens);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *v[6] = {d->title ? d->title : "", d->source ? d->source : "", d->sha256, ntok, group, now};
    PGresult *r;
    /* a concurrent upload of the same text waits here for the other's commit
     * and then inserts nothing: the document is the other's */
    if ((rc = run(s, "add document",
                  "INSERT INTO documents(title, source, sha256, n_tokens, grp, created) VALUES ($1, $2, $3, $4, $5, $6)"
                  " ON CONFLICT (sha256) DO NOTHING RETURNING id",
                  6, v, NULL, NULL, 0, &r)))
        return rc;
    const int inserted = PQntuples(r) == 1;
    if (inserted) *id = get_i64(r, 0, 0);
    PQclear(r);
    if (!inserted) {
        if ((rc = find_sha(s, d->sha256, id))) return rc;
        *existed = 1;
        return d->mem_file ? insert_memory(s, *id, d) : 0;
    }
    *existed = 0;
    char sid[24], seq[16];
    snprintf(sid, sizeof sid, "%lld", (long long)*id);
    for (int32_t i = 0; i < d->n_chunks && !rc; i++) {
        snprintf(seq, sizeof seq, "%d", i);
        const char *cv[4] = {sid, seq, d->chunk_text[i],
                             d->chunk_vec ? (const char *)(d->chunk_vec + (size_t)i * (size_t)d->dim) : NULL};
        const int lens[4] = {0, 0, 0, d->chunk_vec ? (int)(sizeof(float) * (size_t)d->dim) : 0};
        const int fmts[4] = {0, 0, 0, 1};
        rc = run(s, "add chunk", "INSERT INTO chunks(doc_id, seq, text, embedding) VALUES ($1, $2, $3, $4)", 4, cv,
                 lens, fmts, 0, NULL);
    }
    if (rc) return rc;
    if (d->chunk_vec) {
        /* All embeddings of a store share one width (one base model); the
         * first writer records it, a concurrent one reads it back. */
        char want[32], have[32];
        snprintf(want, sizeof want, "%d", d->dim);
        const char *mv[2] = {"embed_dim", want};
        if ((rc = run(s, "meta", "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", 2, mv, NULL,
                      NULL, 0, NULL)))
            return rc;
        if ((rc = meta_get(s, "embed_dim", have, sizeof have))) return rc;
        if (strcmp(have, want))
            return mn_error(MN_EINVAL, "store %s: embeddings are %s wide, this document's are %d", s->where, have,
                            d->dim);
    }
    return d->mem_file ? insert_memory(s, *id, d) : 0;
}

/* Runs body between BEGIN and COMMIT, rolling back on any failure. */
static int in_txn(pg_store *s, int body(pg_store *, void *), void *arg) {
    if (s->readonly) return mn_error(MN_EINVAL, "store %s: opened read-only", s->where);
    int rc = alive(s);
    if (rc || (rc = exec(s, "begin", "BEGIN"))) return rc;
    rc = body(s, arg);
    if (!rc) rc = exec(s, "commit", "COMMIT");
    if (rc) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
    return rc;
}

typedef struct {
    const mn_store_new_doc *d;
    int64_t *id;
    int *existed;
} add_args;

static int add_fn(pg_store *s, void *arg) {
    add_args *a = arg;
    return add_body(s, a->d, a->id, a->existed);
}

static int pg_add(mn_store *b, const mn_store_new_doc *d, int64_t *id, int *existed) {
    int rc = mn_store_check_new_doc(d);
    if (rc) return rc;
    int ex = 0;
    int64_t got = 0;
    add_args a = {d, &got, &ex};
    if ((rc = in_txn((pg_store *)b, add_fn, &a))) return rc;
    if (id) *id = got;
    if (existed) *existed = ex;
    return 0;
}

#define DOC_COLS                                                                                      \
    "d.id, d.title, d.source, d.sha256, d.grp, d.n_tokens, d.created,"                                \
    " (SELECT count(*) FROM chunks c WHERE c.doc_id = d.id), m.n_slots, m.bytes, m.checksum, m.file " \
    "FROM documents d LEFT JOIN memories m ON m.doc_id = d.id AND m.adapter_hash = $1 "

static void read_doc(const PGresult *r, int i, mn_store_doc *o) {
    memset(o, 0, sizeof *o);
    o->id = get_i64(r, i, 0);
    copy_text(PQgetvalue(r, i, 1), o->title, sizeof o->title);
    copy_text(PQgetvalue(r, i, 2), o->source, sizeof o->source);
    copy_text(PQgetvalue(r, i, 3), o->sha256, sizeof o->sha256);
    copy_text(PQgetvalue(r, i, 4), o->group, sizeof o->group);
    o->n_tokens = get_i64(r, i, 5);
    o->created = get_i64(r, i, 6);
    o->n_chunks = get_i64(r, i, 7);
    if (PQgetisnull(r, i, 8)) {
        o->n_slots = -1;
    } else {
        o->n_slots = (int32_t)get_i64(r, i, 8);
        o->mem_bytes = get_i64(r, i, 9);
        o->mem_checksum = mn_store_parse_hex64(PQgetvalue(r, i, 10));
        copy_text(PQgetvalue(r, i, 11), o->mem_file, sizeof o->mem_file);
    }
}

static void read_doc_row(const PGresult *r, int i, void *o) { read_doc(r, i, o); }

/* Every row of r read into a malloc'd array of elem-sized items; clears r. */
static int rows_to_array(PGresult *r, size_t elem, void read(const PGresult *, int, void *), void **out,
                         int64_t *n) {
    const int nr = PQntuples(r);
    char *arr = nr ? malloc(elem * (size_t)nr) : NULL;
    for (int i = 0; arr && i < nr; i++) read(r, i, arr + elem * (size_t)i);
    PQclear(r);
    if (nr && !arr) return mn_error(MN_ENOMEM, "out of memory reading %d rows", nr);
    *out = arr;
    *n = nr;
    return 0;
}

static int pg_get(mn_store *b, int64_t id, uint64_t adapter_hash, mn_store_doc *out) {
    pg_store *s = (pg_store *)b;
    char ah[17], sid[24];
    mn_store_hex64(adapter_hash, ah);
    snprintf(sid, sizeof sid, "%lld", (long long)id);
    const char *v[2] = {ah, sid};
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "get", "SELECT " DOC_COLS "WHERE d.id = $2", 2, v, NULL, NULL, 0, &r))) return rc;
    if (PQntuples(r) == 1) read_doc(r, 0, out);
    else rc = mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)id);
    PQclear(r);
    return rc;
}

static int pg_list(mn_store *b, uint64_t adapter_hash, const char *owner, mn_store_doc **out, int64_t *n) {
    pg_store *s = (pg_store *)b;
    *out = NULL;
    *n = 0;
    char ah[17];
    mn_store_hex64(adapter_hash, ah);
    const char *v[2] = {ah, owner};
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "list",
                        owner ? "SELECT " DOC_COLS
                                "WHERE d.id IN (SELECT doc_id FROM doc_owners WHERE owner = $2) ORDER BY d.id"
                              : "SELECT " DOC_COLS "ORDER BY d.id",
                        owner ? 2 : 1, v, NULL, NULL, 0, &r)))
        return rc;
    return rows_to_array(r, sizeof **out, read_doc_row, (void **)out, n);
}

typedef struct {
    int64_t id;
    char *files;
    size_t cap;
} rm_args;

static int rm_fn(pg_store *s, void *arg) {
    rm_args *a = arg;
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)a->id);
    const char *v[1] = {sid};
    PGresult *r;
    /* FOR UPDATE: a concurrent remove of the same document waits, then finds nothing */
    int rc = run(s, "remove", "SELECT m.file FROM documents d LEFT JOIN memories m ON m.doc_id = d.id "
                              "WHERE d.id = $1 FOR UPDATE OF d",
                 1, v, NULL, NULL, 0, &r);
    if (rc) return rc;
    size_t used = 0;
    if (a->files && a->cap) a->files[0] = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0)) continue;
        const char *f = PQgetvalue(r, i, 0);
        size_t fl = strlen(f);
        if (a->files && used + fl + 2 <= a->cap) {
            memcpy(a->files + used, f, fl);
            used += fl;
            a->files[used++] = '\n';
            a->files[used] = 0;
        }
    }
    PQclear(r);
    if ((rc = run(s, "remove", "DELETE FROM documents WHERE id = $1", 1, v, NULL, NULL, 0, &r))) return rc;
    if (!strcmp(PQcmdTuples(r), "0")) rc = mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
    PQclear(r);
    return rc;
}

static int pg_remove(mn_store *b, int64_t id, char *mem_files, size_t cap) {
    rm_args a = {id, mem_files, cap};
    return in_txn((pg_store *)b, rm_fn, &a);
}

typedef struct {
    int64_t id;
    const char *owner;
    int *flag; /* grant: added; disown: removed */
    char *files;
    size_t cap;
} own_args;

/* Both take the document's row lock first (grant shares it, disown holds it
 * exclusively), so a grant and the last owner's disown of one document are
 * serialised: the grant either lands before the count that decides the
 * removal, or finds the document gone. */
static int grant_fn(pg_store *s, void *arg) {
    own_args *a = arg;
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)a->id);
    const char *v[2] = {sid, a->owner};
    PGresult *r;
    int rc = run(s, "grant", "SELECT 1 FROM documents WHERE id = $1 FOR SHARE", 1, v, NULL, NULL, 0, &r);
    if (rc) return rc;
    const int there = PQntuples(r) == 1;
    PQclear(r);
    if (!there) return mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
    if ((rc = run(s, "grant", "INSERT INTO doc_owners(doc_id, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING", 2, v,
                  NULL, NULL, 0, &r)))
        return rc;
    *a->flag = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}

static int pg_grant(mn_store *b, int64_t id, const char *owner, int *added) {
    own_args a = {id, owner, added, NULL, 0};
    return in_txn((pg_store *)b, grant_fn, &a);
}

static int pg_owns(mn_store *b, int64_t id, const char *owner, int *yes) {
    pg_store *s = (pg_store *)b;
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)id);
    const char *v[2] = {sid, owner};
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "owners", "SELECT 1 FROM doc_owners WHERE doc_id = $1 AND owner = $2", 2, v, NULL, NULL, 0,
                        &r)))
        return rc;
    *yes = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

static int disown_fn(pg_store *s, void *arg) {
    own_args *a = arg;
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)a->id);
    const char *v[2] = {sid, a->owner};
    PGresult *r;
    int rc = run(s, "disown", "SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", 1, v, NULL, NULL, 0, &r);
    if (rc) return rc;
    PQclear(r);
    if ((rc = run(s, "disown", "DELETE FROM doc_owners WHERE doc_id = $1 AND owner = $2", 2, v, NULL, NULL, 0, &r)))
        return rc;
    const int had = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    if (!had) return mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
    if ((rc = run(s, "disown", "SELECT count(*) FROM doc_owners WHERE doc_id = $1", 1, v, NULL, NULL, 0, &r)))
        return rc;
    const int64_t left = get_i64(r, 0, 0);
    PQclear(r);
    if (left) return 0;
    *a->flag = 1;
    rm_args ra = {a->id, a->files, a->cap};
    return rm_fn(s, &ra);
}

static int pg_disown(mn_store *b, int64_t id, const char *owner, int *removed, char *mem_files, size_t cap) {
    own_args a = {id, owner, removed, mem_files, cap};
    return in_txn((pg_store *)b, disown_fn, &a);
}

static int pg_search_text(mn_store *b, const char *query, const char *owner, int k, mn_store_hit *hits, int *n) {
    pg_store *s = (pg_store *)b;
    *n = 0;
    if (k <= 0) return 0;
    char *q = mn_store_query_terms(query, " | ", '\'');
    if (!q) return mn_error(MN_ENOMEM, "out of memory");
    char sk[16];
    snprintf(sk, sizeof sk, "%d", k);
    const char *v[3] = {q, sk, owner};
    PGresult *r = NULL;
    int rc = q[0] ? alive(s) : 0;
    if (q[0] && !rc)
        rc = run(s, "text search",
                 owner ? "SELECT c.doc_id, max(ts_rank_cd(c.tsv, q)) AS score FROM chunks c, to_tsquery('english', $1) q "
                         "WHERE c.tsv @@ q AND c.doc_id IN (SELECT doc_id FROM doc_owners WHERE owner = $3) "
                         "GROUP BY c.doc_id ORDER BY score DESC, c.doc_id LIMIT $2"
                       : "SELECT c.doc_id, max(ts_rank_cd(c.tsv, q)) AS score FROM chunks c, to_tsquery('english', $1) q "
                         "WHERE c.tsv @@ q GROUP BY c.doc_id ORDER BY score DESC, c.doc_id LIMIT $2",
                 owner ? 3 : 2, v, NULL, NULL, 0, &r);
    free(q);
    for (int i = 0; r && i < PQntuples(r) && *n < k; i++) {
        hits[*n].doc_id = get_i64(r, i, 0);
        hits[*n].score = strtod(PQgetvalue(r, i, 1), NULL);
        (*n)++;
    }
    PQclear(r);
    return rc;
}

static int64_t be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | (unsigned char)p[i];
    return (int64_t)v;
}

static int pg_search_dense(mn_store *b, const float *q, int32_t dim, const char *owner, int k, mn_store_hit *hits,
                           int *n) {
    pg_store *s = (pg_store *)b;
    *n = 0;
    if (k <= 0) return 0;
    int rc = alive(s);
    if (rc) return rc;
    char have[32];
    rc = meta_get(s, "embed_dim", have, sizeof have);
    if (rc == MN_ENOTFOUND) return 0; /* nothing embedded yet */
    if (rc) return rc;
    if (atoi(have) != dim)
        return mn_error(MN_EINVAL, "store %s: embeddings are %s wide, the query's is %d", s->where, have, dim);
    double qn = 0;
    for (int32_t i = 0; i < dim; i++) qn += (double)q[i] * q[i];
    qn = sqrt(qn);
    if (!(qn > 0)) return 0;
    PGresult *r;
    /* binary results: the f32 rows as written, ids as big-endian int8 */
    const char *v[1] = {owner};
    if ((rc = run(s, "dense search",
                  owner ? "SELECT doc_id, embedding FROM chunks WHERE embedding IS NOT NULL AND doc_id IN "
                          "(SELECT doc_id FROM doc_owners WHERE owner = $1)"
                        : "SELECT doc_id, embedding FROM chunks WHERE embedding IS NOT NULL",
                  owner ? 1 : 0, owner ? v : NULL, NULL, NULL, 1, &r)))
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 1) != (int)(sizeof(float) * (size_t)dim)) continue;
        const char *v = PQgetvalue(r, i, 1);
        double dot = 0, vn = 0;
        for (int32_t j = 0; j < dim; j++) {
            float x;
            memcpy(&x, v + sizeof x * (size_t)j, sizeof x);
            dot += (double)x * q[j];
            vn += (double)x * x;
        }
        if (vn > 0) mn_store_hit_insert(hits, n, k, be64(PQgetvalue(r, i, 0)), dot / (qn * sqrt(vn)));
    }
    PQclear(r);
    return 0;
}

static int pg_chunk_text(mn_store *b, int64_t doc_id, char **text, size_t *len) {
    pg_store *s = (pg_store *)b;
    *text = NULL;
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)doc_id);
    const char *v[1] = {sid};
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "chunks", "SELECT text FROM chunks WHERE doc_id = $1 ORDER BY seq", 1, v, NULL, NULL, 0, &r)))
        return rc;
    size_t total = 0;
    for (int i = 0; i < PQntuples(r); i++) total += (size_t)PQgetlength(r, i, 0);
    char *buf = malloc(total + 1);
    if (!buf) {
        PQclear(r);
        return mn_error(MN_ENOMEM, "out of memory reading document %lld", (long long)doc_id);
    }
    size_t o = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        memcpy(buf + o, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
        o += (size_t)PQgetlength(r, i, 0);
    }
    buf[o] = 0;
    PQclear(r);
    *text = buf;
    if (len) *len = o;
    return 0;
}

typedef struct {
    const char *group, *path, *sha;
} grp_args;

static int grp_fn(pg_store *s, void *arg) {
    grp_args *a = arg;
    int rc = ensure_group(s, a->group);
    if (rc) return rc;
    const char *v[3] = {a->group, a->path, a->sha};
    return run(s, "set adapter", "UPDATE groups SET adapter_path = $2, adapter_sha256 = $3 WHERE name = $1", 3, v,
               NULL, NULL, 0, NULL);
}

static int pg_group_set_adapter(mn_store *b, const char *group, const char *path, const char *sha) {
    if (!mn_store_valid_group(group)) return mn_error(MN_EINVAL, "group name '%s' is not valid", group);
    grp_args a = {group, path ? path : "", sha ? sha : ""};
    return in_txn((pg_store *)b, grp_fn, &a);
}

#define GROUP_COLS "g.name, g.adapter_path, g.adapter_sha256, (SELECT count(*) FROM documents d WHERE d.grp = g.name) "

static void read_group(const PGresult *r, int i, mn_store_group *g) {
    memset(g, 0, sizeof *g);
    copy_text(PQgetvalue(r, i, 0), g->name, sizeof g->name);
    copy_text(PQgetvalue(r, i, 1), g->adapter_path, sizeof g->adapter_path);
    copy_text(PQgetvalue(r, i, 2), g->adapter_sha256, sizeof g->adapter_sha256);
    g->n_docs = get_i64(r, i, 3);
}

static void read_group_row(const PGresult *r, int i, void *g) { read_group(r, i, g); }

static int pg_group_get(mn_store *b, const char *group, mn_store_group *out) {
    pg_store *s = (pg_store *)b;
    const char *v[1] = {group};
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "group", "SELECT " GROUP_COLS "FROM groups g WHERE g.name = $1", 1, v, NULL, NULL, 0, &r)))
        return rc;
    if (PQntuples(r) == 1) read_group(r, 0, out);
    else rc = mn_error(MN_ENOTFOUND, "no group '%s'", group);
    PQclear(r);
    return rc;
}

static int pg_groups(mn_store *b, mn_store_group **out, int64_t *n) {
    pg_store *s = (pg_store *)b;
    *out = NULL;
    *n = 0;
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "groups", "SELECT " GROUP_COLS "FROM groups g ORDER BY g.name", 0, NULL, NULL, NULL, 0, &r)))
        return rc;
    return rows_to_array(r, sizeof **out, read_group_row, (void **)out, n);
}

static int pg_meta_get(mn_store *b, const char *key, char *val, size_t cap) {
    pg_store *s = (pg_store *)b;
    int rc = alive(s);
    return rc ? rc : meta_get(s, key, val, cap);
}

typedef struct {
    const char *k, *v;
} meta_args;

static int meta_fn(pg_store *s, void *arg) {
    meta_args *a = arg;
    return meta_set(s, a->k, a->v);
}

static int pg_meta_set(mn_store *b, const char *key, const char *val) {
    meta_args a = {key, val};
    return in_txn((pg_store *)b, meta_fn, &a);
}

static int pg_mem_files(mn_store *b, char ***names, uint64_t **checksums, int64_t *n) {
    pg_store *s = (pg_store *)b;
    *names = NULL;
    if (checksums) *checksums = NULL;
    *n = 0;
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "memory files", "SELECT file, checksum FROM memories ORDER BY file", 0, NULL, NULL, NULL, 0,
                        &r)))
        return rc;
    const int nr = PQntuples(r);
    char **arr = calloc((size_t)nr + 1, sizeof *arr);
    uint64_t *sums = malloc(sizeof *sums * ((size_t)nr + 1));
    if (!arr || !sums) rc = mn_error(MN_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < nr; i++) {
        if (!(arr[i] = strdup(PQgetvalue(r, i, 0)))) rc = mn_error(MN_ENOMEM, "out of memory");
        else sums[i] = mn_store_parse_hex64(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    if (rc) {
        for (int i = 0; arr && i < nr; i++) free(arr[i]);
        free(arr);
        free(sums);
        return rc;
    }
    *names = arr;
    *n = nr;
    if (checksums) *checksums = sums;
    else free(sums);
    return 0;
}

/* PostgreSQL checks its own pages (and the constraints keep the rows
 * consistent), so this checks what the constraints cannot: that every
 * memory record names a plain file inside the memory directory. */
static int pg_check(mn_store *b, char *report, size_t cap) {
    pg_store *s = (pg_store *)b;
    if (cap) report[0] = 0;
    PGresult *r;
    int rc = alive(s);
    if (rc || (rc = run(s, "check",
                        "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks),"
                        " (SELECT count(*) FROM memories WHERE file = '' OR file LIKE '.%' OR position('/' in file) > 0),"
                        " current_setting('server_version')",
                        0, NULL, NULL, NULL, 0, &r)))
        return rc;
    const int64_t bad = get_i64(r, 0, 2);
    if (cap)
        snprintf(report, cap, "%s (PostgreSQL %s: %lld documents, %lld chunks, %lld bad memory file names)\n",
                 bad ? "damaged" : "ok", PQgetvalue(r, 0, 3), (long long)get_i64(r, 0, 0), (long long)get_i64(r, 0, 1),
                 (long long)bad);
    PQclear(r);
    return bad ? mn_error(MN_EFORMAT, "store %s: %lld memory records name no plain file", s->where, (long long)bad) : 0;
}

static int64_t pg_reconnects(mn_store *b) { return atomic_load(&((pg_store *)b)->reconnects); }

static int pg_schema_version(mn_store *b, int *version) {
    pg_store *s = (pg_store *)b;
    PGresult *r = NULL;
    int rc = alive(s);
    if (!rc) rc = run(s, "schema version", "SELECT max(version) FROM mnemo_schema", 0, NULL, NULL, NULL, 0, &r);
    if (!rc) *version = (int)get_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static const mn_store_ops k_pg_ops = {
    "postgresql", pg_close,           pg_mem_dir,     pg_find_sha,     pg_add,        pg_get,
    pg_list,      pg_remove,          pg_search_text, pg_search_dense, pg_chunk_text, pg_group_set_adapter,
    pg_group_get, pg_groups,          pg_meta_get,    pg_meta_set,     pg_mem_files,  pg_check,
    pg_grant,     pg_owns,            pg_disown,      pg_reconnects,
    pg_schema_version,
};

static void quiet(void *arg, const char *message) { (void)arg, (void)message; }

/* Creates or migrates the schema, one server at a time. A store is created
 * only with a memory directory to record (have_dir). */
static int migrate(pg_store *s, int create, int have_dir) {
    int rc = exec(s, "begin", "BEGIN");
    if (rc) return rc;
    PGresult *r = NULL;
    /* an arbitrary constant: mnemo's schema lock in this database */
    rc = exec(s, "schema lock", "SELECT pg_advisory_xact_lock(7236001)");
    if (!rc) rc = run(s, "schema", "SELECT to_regclass('mnemo_schema') IS NOT NULL", 0, NULL, NULL, NULL, 0, &r);
    int version = 0;
    if (!rc && !strcmp(PQgetvalue(r, 0, 0), "t")) {
        PQclear(r);
        r = NULL;
        if (!(rc = run(s, "schema", "SELECT max(version) FROM mnemo_schema", 0, NULL, NULL, NULL, 0, &r)))
            version = (int)get_i64(r, 0, 0);
    } else if (!rc) {
        PQclear(r);
        r = NULL;
        /* a database holding other tables is someone else's: a store gets its
         * own database (or schema, through the conninfo's search_path) */
        rc = run(s, "schema", "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", 0, NULL, NULL,
                 NULL, 0, &r);
        const int64_t others = rc ? 0 : get_i64(r, 0, 0);
        if (rc) {
            /* the query's error stands */
        } else if (others) {
            rc = mn_error(MN_EFORMAT, "store %s: a PostgreSQL database, but not a mnemo store (%lld other tables)",
                          s->where, (long long)others);
        } else if (!create) {
            rc = mn_error(MN_ENOTFOUND, "store %s: no mnemo store in this database (create one with 'mnemo store add')",
                          s->where);
        } else if (!have_dir) {
            rc = mn_error(MN_EINVAL,
                          "store %s: no directory for memory files: give an absolute path every server sees "
                          "(mnemo store/serve --mem-dir DIR, or MNEMO_MEM_DIR; it is recorded in the store when "
                          "the store is created)",
                          s->where);
        } else {
            rc = exec(s, "schema", "CREATE TABLE mnemo_schema(version INTEGER NOT NULL)");
        }
    }
    PQclear(r);
    if (!rc && version > SCHEMA_VERSION)
        rc = mn_error(MN_EUNSUPPORTED, "store %s: schema version %d (this mnemo reads up to %d)", s->where, version,
                      SCHEMA_VERSION);
    if (!rc && version < SCHEMA_VERSION && s->readonly)
        rc = mn_error(MN_EUNSUPPORTED, "store %s: schema version %d needs migrating (open it for writing once)",
                      s->where, version);
    for (int v = version; !rc && v < SCHEMA_VERSION; v++) {
        char sql[64];
        snprintf(sql, sizeof sql, "INSERT INTO mnemo_schema(version) VALUES (%d)", v + 1);
        if (!(rc = exec(s, "schema migration", k_migrations[v]))) rc = exec(s, "schema", sql);
    }
    if (!rc) rc = exec(s, "commit", "COMMIT");
    if (rc) {
        PGresult *rb = PQexec(s->conn, "ROLLBACK");
        PQclear(rb);
    }
    return rc;
}

int mn_store_is_pg(const char *spec) {
    if (!spec) return 0;
    if (!strncmp(spec, "postgresql://", 13) || !strncmp(spec, "postgres://", 11)) return 1;
    /* a conninfo string: "key=value ..." (a file name rarely starts so) */
    size_t i = 0;
    while (spec[i] == ' ') i++;
    size_t k = i;
    while ((spec[k] >= 'a' && spec[k] <= 'z') || spec[k] == '_') k++;
    return k > i && spec[k] == '=';
}

/* An environment variable of seconds (>= 0) into *v, which keeps its default when the variable is unset;
 * 0 when it is set to something else. */
static int env_seconds(const char *name, double *v) {
    const char *e = getenv(name);
    if (!e || !*e) return 1;
    char *end;
    const double x = strtod(e, &end);
    if (*end || !(x >= 0) || x > 86400) return 0;
    *v = x;
    return 1;
}

int mn_store_open_pg(const char *conninfo, int flags, mn_store **out) {
    *out = NULL;
    pg_store *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "out of memory");
    s->base.ops = &k_pg_ops;
    atomic_init(&s->reconnects, 0);
    s->readonly = (flags & MN_STORE_READONLY) != 0;
    /* A hung database costs a request its deadline, not a slot forever: a connect timeout and a
     * statement and lock timeout, as connection parameters so that a reconnect (PQreset) keeps them.
     * Placed before the user's conninfo, which overrides them where it sets its own. */
    char ct[32], opts[96];
    double st_s = 10, ct_s = 5;
    if (!env_seconds("MNEMO_DB_TIMEOUT", &st_s) || !env_seconds("MNEMO_DB_CONNECT_TIMEOUT", &ct_s)) {
        free(s);
        return mn_error(MN_EINVAL, "MNEMO_DB_TIMEOUT and MNEMO_DB_CONNECT_TIMEOUT are seconds (0: no limit)");
    }
    snprintf(ct, sizeof ct, "%d", ct_s > 0 && ct_s < 2 ? 2 : (int)ct_s); /* libpq's least effective value is 2 */
    snprintf(opts, sizeof opts, "-c statement_timeout=%lld -c lock_timeout=%lld", (long long)(st_s * 1000),
             (long long)(st_s * 1000));
    const char *const keys[] = {"connect_timeout", "options", "client_encoding", "dbname", NULL};
    const char *const vals[] = {ct, opts, "UTF8", conninfo, NULL};
    s->conn = PQconnectdbParams(keys, vals, 1);
    int rc = 0;
    if (!s->conn) {
        free(s);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    {
        const char *db = PQdb(s->conn), *host = PQhost(s->conn);
        char w[512];
        snprintf(w, sizeof w, "postgresql database '%s' on %s", db ? db : "?", host && *host ? host : "localhost");
        if (!(s->where = strdup(w))) {
            pg_close(&s->base);
            return mn_error(MN_ENOMEM, "out of memory");
        }
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        rc = pg_fail(s, MN_EIO, "cannot connect", NULL);
        goto fail;
    }
    PQsetNoticeProcessor(s->conn, quiet, NULL);
    if ((rc = exec(s, "session", "SET client_encoding = 'UTF8'"))) goto fail;
    const char *env = getenv("MNEMO_MEM_DIR");
    if (env && *env && env[0] != '/') {
        rc = mn_error(MN_EINVAL, "store %s: MNEMO_MEM_DIR '%s' must be an absolute path (servers share it)", s->where,
                      env);
        goto fail;
    }
    if ((rc = migrate(s, !s->readonly && (flags & MN_STORE_CREATE), env && *env))) goto fail;
    if (s->readonly && (rc = exec(s, "read-only session", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")))
        goto fail;
    /* the memory directory: this host's override, else the store's record */
    char recorded[MN_STORE_PATH_CAP] = "";
    rc = meta_get(s, "mem_dir", recorded, sizeof recorded);
    if (rc && rc != MN_ENOTFOUND) goto fail;
    const char *dir = env && *env ? env : recorded[0] ? recorded : NULL;
    if (!dir) { /* a store whose record was deleted by hand */
        rc = mn_error(MN_EINVAL,
                      "store %s: no directory for memory files recorded: give one (mnemo store/serve --mem-dir DIR, "
                      "or MNEMO_MEM_DIR)",
                      s->where);
        goto fail;
    }
    if (!(s->mem_dir = strdup(dir))) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto fail;
    }
    if (!s->readonly) {
        if (!recorded[0] && (rc = in_txn(s, meta_fn, &(meta_args){"mem_dir", dir}))) goto fail;
        if (mkdir(s->mem_dir, 0755) && errno != EEXIST) {
            rc = mn_error(MN_EIO, "store %s: cannot create %s: %s", s->where, s->mem_dir, strerror(errno));
            goto fail;
        }
    }
    *out = &s->base;
    return 0;
fail:
    pg_close(&s->base);
    return rc;
}
