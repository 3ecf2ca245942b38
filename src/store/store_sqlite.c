/* store_sqlite.c - the SQLite backend of the document store (store.h).
 *
 * Schema (version 2; a version-1 store opened for writing gains doc_owners):
 *   meta(key, value)                       store-wide facts: schema, model hash, embedding dim
 *   groups(name, adapter_path, adapter_sha256, created)
 *   documents(id (never reused), title, source, sha256 UNIQUE, n_tokens, grp -> groups, created)
 *   memories(doc_id -> documents, adapter_hash, n_slots, file, bytes, checksum)
 *   chunks(id, doc_id -> documents, seq, text, embedding BLOB of f32)
 *   chunks_fts: FTS5 over chunks.text (external content, kept in step by triggers)
 *   doc_owners(doc_id -> documents, owner)  who owns what (scoped API keys)
 *
 * The database runs in WAL mode with synchronous=FULL: a commit is durable
 * once it returns, and a process killed at any point leaves the last
 * committed state (SQLite's journal recovers it on the next open).
 * Hashes that are 64-bit unsigned are stored as 16 hex digits, so they
 * compare as text and never go through SQLite's signed integers.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "memory/memfile.h"
#include "store/store.h"
#include "store/store_impl.h"

typedef struct {
    mn_store base;
    sqlite3 *db;
    char *path;
    char *mem_dir;
    int readonly;
    int v1; /* a version-1 store opened read-only: no doc_owners table */
} sq_store;

static const char *k_schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS groups(name TEXT PRIMARY KEY, adapter_path TEXT NOT NULL DEFAULT '',"
    "  adapter_sha256 TEXT NOT NULL DEFAULT '', created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS documents(id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, source TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL UNIQUE, n_tokens INTEGER NOT NULL, grp TEXT NOT NULL REFERENCES groups(name),"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS memories(doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  adapter_hash TEXT NOT NULL, n_slots INTEGER NOT NULL, file TEXT NOT NULL, bytes INTEGER NOT NULL,"
    "  checksum TEXT NOT NULL, PRIMARY KEY(doc_id, adapter_hash));"
    "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id)"
    "  ON DELETE CASCADE, seq INTEGER NOT NULL, text TEXT NOT NULL, embedding BLOB);"
    "CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, seq);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id');"
    "CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN"
    "  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;"
    "CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN"
    "  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END;"
    "CREATE TABLE IF NOT EXISTS doc_owners(doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  owner TEXT NOT NULL, PRIMARY KEY(owner, doc_id));"
    "CREATE INDEX IF NOT EXISTS doc_owners_doc ON doc_owners(doc_id);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '2');"
    "UPDATE meta SET value = '2' WHERE key = 'schema';";

/* Faults of the file rather than of the request (the database locked by another process past the busy
 * timeout, a full disk, a read-only or vanished file, an I/O error) are MN_EUNAVAILABLE: the server
 * answers 503, and the next request tries again. Other results keep the code proposed. */
static int sq_code(int sqlite_rc, int code) {
    switch (sqlite_rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return MN_EUNAVAILABLE;
    default: return code;
    }
}

/* An error naming the store and the cause. */
static int sq_err(sq_store *s, int code, const char *what) {
    return mn_error(sq_code(sqlite3_errcode(s->db), code), "store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(sq_store *s, const char *sql, const char *what) {
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) return 0;
    const int code = sq_code(rc, (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) ? MN_EFORMAT : MN_EIO);
    mn_error(code, "store %s: %s: %s", s->path, what, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return code;
}

static int prep(sq_store *s, const char *sql, sqlite3_stmt **st) {
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        *st = NULL;
        return sq_err(s, (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) ? MN_EFORMAT : MN_EIO, "query");
    }
    return 0;
}

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t cap) {
    const char *t = (const char *)sqlite3_column_text(st, i);
    mn_store_copy_text(t ? t : "", dst, cap);
}

/* ------------------------------------------------------------------ ops */

static void sq_close(mn_store *b) {
    sq_store *s = (sq_store *)b;
    if (!s) return;
    if (s->db) sqlite3_close(s->db);
    free(s->path);
    free(s->mem_dir);
    free(s);
}

static const char *sq_mem_dir(mn_store *b) { return ((sq_store *)b)->mem_dir; }

static int sq_find_sha(mn_store *b, const char *sha, int64_t *id) {
    sq_store *s = (sq_store *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT id FROM documents WHERE sha256 = ?1", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    else if (r == SQLITE_DONE) rc = mn_error(MN_ENOTFOUND, "no document with sha256 %.64s", sha);
    else rc = sq_err(s, MN_EIO, "lookup");
    sqlite3_finalize(st);
    return rc;
}

static int ensure_group(sq_store *s, const char *group) {
    sqlite3_stmt *st;
    int rc = prep(s, "INSERT OR IGNORE INTO groups(name, created) VALUES (?1, ?2)", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
    if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "add group");
    sqlite3_finalize(st);
    return rc;
}

static int insert_memory(sq_store *s, int64_t id, const mn_store_new_doc *d) {
    sqlite3_stmt *st;
    int rc = prep(s,
                  "INSERT OR IGNORE INTO memories(doc_id, adapter_hash, n_slots, file, bytes, checksum) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                  &st);
    if (rc) return rc;
    char ah[17], ck[17];
    mn_store_hex64(d->adapter_hash, ah);
    mn_store_hex64(d->mem_checksum, ck);
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, ah, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, d->n_slots);
    sqlite3_bind_text(st, 4, d->mem_file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, d->mem_bytes);
    sqlite3_bind_text(st, 6, ck, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "add memory");
    sqlite3_finalize(st);
    return rc;
}

static int meta_get(sq_store *s, const char *key, char *val, size_t cap) {
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT value FROM meta WHERE key = ?1", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) col_text(st, 0, val, cap);
    else if (r == SQLITE_DONE) rc = mn_error(MN_ENOTFOUND, "store %s: no '%s' recorded", s->path, key);
    else rc = sq_err(s, MN_EIO, "meta");
    sqlite3_finalize(st);
    return rc;
}

static int meta_set(sq_store *s, const char *key, const char *val) {
    sqlite3_stmt *st;
    int rc = prep(s, "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "meta");
    sqlite3_finalize(st);
    return rc;
}

static int add_body(sq_store *s, const mn_store_new_doc *d, int64_t *id, int *existed) {
    const char *group = d->group ? d->group : MN_STORE_DEFAULT_GROUP;
    int rc = sq_find_sha(&s->base, d->sha256, id);
    if (rc == 0) {
        *existed = 1;
        return d->mem_file ? insert_memory(s, *id, d) : 0;
    }
    if (rc != MN_ENOTFOUND) return rc;
    *existed = 0;
    if ((rc = ensure_group(s, group))) return rc;
    sqlite3_stmt *st;
    rc = prep(s,
              "INSERT INTO documents(title, source, sha256, n_tokens, grp, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
              &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, d->title ? d->title : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->source ? d->source : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, d->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, d->n_tokens);
    sqlite3_bind_text(st, 5, group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL));
    if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "add document");
    sqlite3_finalize(st);
    if (rc) return rc;
    *id = sqlite3_last_insert_rowid(s->db);
    if ((rc = prep(s, "INSERT INTO chunks(doc_id, seq, text, embedding) VALUES (?1, ?2, ?3, ?4)", &st))) return rc;
    for (int32_t i = 0; i < d->n_chunks && !rc; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *id);
        sqlite3_bind_int(st, 2, i);
        sqlite3_bind_text(st, 3, d->chunk_text[i], -1, SQLITE_STATIC);
        if (d->chunk_vec)
            sqlite3_bind_blob(st, 4, d->chunk_vec + (size_t)i * (size_t)d->dim, (int)(sizeof(float) * (size_t)d->dim),
                              SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 4);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "add chunk");
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    if (d->chunk_vec) {
        /* All embeddings of a store share one width (one base model). */
        char want[32], have[32];
        snprintf(want, sizeof want, "%d", d->dim);
        int g = meta_get(s, "embed_dim", have, sizeof have);
        if (g == MN_ENOTFOUND) {
            if ((rc = meta_set(s, "embed_dim", want))) return rc;
        } else if (g) {
            return g;
        } else if (strcmp(have, want)) {
            return mn_error(MN_EINVAL, "store %s: embeddings are %s wide, this document's are %d", s->path, have,
                            d->dim);
        }
    }
    return d->mem_file ? insert_memory(s, *id, d) : 0;
}

/* Runs body inside BEGIN IMMEDIATE .. COMMIT, rolling back on any failure. */
static int in_txn(sq_store *s, int rc_body_fn(sq_store *, void *), void *arg) {
    if (s->readonly) return mn_error(MN_EINVAL, "store %s: opened read-only", s->path);
    int rc = exec(s, "BEGIN IMMEDIATE", "begin");
    if (rc) return rc;
    rc = rc_body_fn(s, arg);
    if (!rc) rc = exec(s, "COMMIT", "commit");
    if (rc) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

typedef struct {
    const mn_store_new_doc *d;
    int64_t *id;
    int *existed;
} add_args;

static int add_fn(sq_store *s, void *arg) {
    add_args *a = arg;
    return add_body(s, a->d, a->id, a->existed);
}

static int sq_add(mn_store *b, const mn_store_new_doc *d, int64_t *id, int *existed) {
    sq_store *s = (sq_store *)b;
    int rc = mn_store_check_new_doc(d);
    if (rc) return rc;
    int ex = 0;
    int64_t got = 0;
    add_args a = {d, &got, &ex};
    if ((rc = in_txn(s, add_fn, &a))) return rc;
    if (id) *id = got;
    if (existed) *existed = ex;
    return 0;
}

#define DOC_COLS                                                                                      \
    "d.id, d.title, d.source, d.sha256, d.grp, d.n_tokens, d.created,"                                \
    " (SELECT count(*) FROM chunks c WHERE c.doc_id = d.id), m.n_slots, m.bytes, m.checksum, m.file " \
    "FROM documents d LEFT JOIN memories m ON m.doc_id = d.id AND m.adapter_hash = ?1 "

static void read_doc(sqlite3_stmt *st, mn_store_doc *o) {
    memset(o, 0, sizeof *o);
    o->id = sqlite3_column_int64(st, 0);
    col_text(st, 1, o->title, sizeof o->title);
    col_text(st, 2, o->source, sizeof o->source);
    col_text(st, 3, o->sha256, sizeof o->sha256);
    col_text(st, 4, o->group, sizeof o->group);
    o->n_tokens = sqlite3_column_int64(st, 5);
    o->created = sqlite3_column_int64(st, 6);
    o->n_chunks = sqlite3_column_int64(st, 7);
    if (sqlite3_column_type(st, 8) == SQLITE_NULL) {
        o->n_slots = -1;
    } else {
        o->n_slots = sqlite3_column_int(st, 8);
        o->mem_bytes = sqlite3_column_int64(st, 9);
        o->mem_checksum = mn_store_parse_hex64((const char *)sqlite3_column_text(st, 10));
        col_text(st, 11, o->mem_file, sizeof o->mem_file);
    }
}

static int sq_get(mn_store *b, int64_t id, uint64_t adapter_hash, mn_store_doc *out) {
    sq_store *s = (sq_store *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT " DOC_COLS "WHERE d.id = ?2", &st);
    if (rc) return rc;
    char ah[17];
    mn_store_hex64(adapter_hash, ah);
    sqlite3_bind_text(st, 1, ah, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) read_doc(st, out);
    else if (r == SQLITE_DONE) rc = mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)id);
    else rc = sq_err(s, MN_EIO, "get");
    sqlite3_finalize(st);
    return rc;
}

/* Owner filters refuse a version-1 store read-only (it has no doc_owners). */
static int owners_ok(sq_store *s, const char *owner) {
    if (owner && s->v1)
        return mn_error(MN_EUNSUPPORTED, "store %s: schema version 1 has no owners (open it for writing once)",
                        s->path);
    return 0;
}

static int sq_list(mn_store *b, uint64_t adapter_hash, const char *owner, mn_store_doc **out, int64_t *n) {
    sq_store *s = (sq_store *)b;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = owners_ok(s, owner);
    if (!rc)
        rc = prep(s,
                  owner ? "SELECT " DOC_COLS "WHERE d.id IN (SELECT doc_id FROM doc_owners WHERE owner = ?2) ORDER BY d.id"
                        : "SELECT " DOC_COLS "ORDER BY d.id",
                  &st);
    if (rc) return rc;
    char ah[17];
    mn_store_hex64(adapter_hash, ah);
    sqlite3_bind_text(st, 1, ah, -1, SQLITE_TRANSIENT);
    if (owner) sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    int64_t cap = 0;
    mn_store_doc *arr = NULL;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            mn_store_doc *na = realloc(arr, sizeof *arr * (size_t)cap);
            if (!na) {
                rc = mn_error(MN_ENOMEM, "store list: out of memory");
                break;
            }
            arr = na;
        }
        read_doc(st, &arr[(*n)++]);
    }
    if (!rc && r != SQLITE_DONE) rc = sq_err(s, MN_EIO, "list");
    sqlite3_finalize(st);
    if (rc) {
        free(arr);
        *n = 0;
        return rc;
    }
    *out = arr;
    return 0;
}

typedef struct {
    int64_t id;
    char *files;
    size_t cap;
} rm_args;

static int rm_fn(sq_store *s, void *arg) {
    rm_args *a = arg;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT file FROM memories WHERE doc_id = ?1", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, a->id);
    size_t used = 0;
    if (a->files && a->cap) a->files[0] = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *f = (const char *)sqlite3_column_text(st, 0);
        size_t fl = f ? strlen(f) : 0;
        if (a->files && used + fl + 2 <= a->cap) {
            memcpy(a->files + used, f, fl);
            used += fl;
            a->files[used++] = '\n';
            a->files[used] = 0;
        }
    }
    sqlite3_finalize(st);
    /* Explicit deletes (not only ON DELETE CASCADE) so the FTS trigger sees each chunk. */
    static const char *del[] = {"DELETE FROM chunks WHERE doc_id = ?1", "DELETE FROM memories WHERE doc_id = ?1",
                                "DELETE FROM documents WHERE id = ?1"};
    for (int i = 0; i < 3 && !rc; i++) {
        if ((rc = prep(s, del[i], &st))) break;
        sqlite3_bind_int64(st, 1, a->id);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "remove");
        else if (i == 2 && sqlite3_changes(s->db) == 0)
            rc = mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
        sqlite3_finalize(st);
    }
    return rc;
}

static int sq_remove(mn_store *b, int64_t id, char *mem_files, size_t cap) {
    rm_args a = {id, mem_files, cap};
    return in_txn((sq_store *)b, rm_fn, &a);
}

typedef struct {
    int64_t id;
    const char *owner;
    int *flag; /* grant: added; disown: removed */
    char *files;
    size_t cap;
} own_args;

/* One integer from a statement binding (id, owner); -1 on error. */
static int64_t own_query(sq_store *s, const char *sql, int64_t id, const char *owner, int *changes) {
    sqlite3_stmt *st;
    if (prep(s, sql, &st)) return -1;
    sqlite3_bind_int64(st, 1, id);
    if (owner) sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    int64_t v = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (r != SQLITE_ROW && r != SQLITE_DONE) v = -1, sq_err(s, MN_EIO, "owners");
    if (changes) *changes = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return v;
}

static int grant_fn(sq_store *s, void *arg) {
    own_args *a = arg;
    int64_t there = own_query(s, "SELECT count(*) FROM documents WHERE id = ?1", a->id, NULL, NULL);
    if (there < 0) return MN_EIO;
    if (!there) return mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
    int changed = 0;
    if (own_query(s, "INSERT OR IGNORE INTO doc_owners(doc_id, owner) VALUES (?1, ?2)", a->id, a->owner, &changed) < 0)
        return MN_EIO;
    *a->flag = changed > 0;
    return 0;
}

static int sq_grant(mn_store *b, int64_t id, const char *owner, int *added) {
    own_args a = {id, owner, added, NULL, 0};
    return in_txn((sq_store *)b, grant_fn, &a);
}

static int sq_owns(mn_store *b, int64_t id, const char *owner, int *yes) {
    sq_store *s = (sq_store *)b;
    int rc = owners_ok(s, owner);
    if (rc) return rc;
    int64_t v = own_query(s, "SELECT count(*) FROM doc_owners WHERE doc_id = ?1 AND owner = ?2", id, owner, NULL);
    if (v < 0) return MN_EIO;
    *yes = v > 0;
    return 0;
}

static int disown_fn(sq_store *s, void *arg) {
    own_args *a = arg;
    int changed = 0;
    if (own_query(s, "DELETE FROM doc_owners WHERE doc_id = ?1 AND owner = ?2", a->id, a->owner, &changed) < 0)
        return MN_EIO;
    if (!changed) return mn_error(MN_ENOTFOUND, "no document with id %lld", (long long)a->id);
    int64_t left = own_query(s, "SELECT count(*) FROM doc_owners WHERE doc_id = ?1", a->id, NULL, NULL);
    if (left < 0) return MN_EIO;
    if (left) return 0;
    *a->flag = 1;
    rm_args r = {a->id, a->files, a->cap};
    return rm_fn(s, &r);
}

static int sq_disown(mn_store *b, int64_t id, const char *owner, int *removed, char *mem_files, size_t cap) {
    own_args a = {id, owner, removed, mem_files, cap};
    return in_txn((sq_store *)b, disown_fn, &a);
}

static int sq_search_bm25(mn_store *b, const char *query, const char *owner, int k, mn_store_hit *hits, int *n) {
    sq_store *s = (sq_store *)b;
    *n = 0;
    if (k <= 0) return 0;
    if (owners_ok(s, owner)) return MN_EUNSUPPORTED;
    char *q = mn_store_query_terms(query, " OR ", '"');
    if (!q) return mn_error(MN_ENOMEM, "out of memory");
    if (!q[0]) {
        free(q);
        return 0;
    }
    sqlite3_stmt *st;
    int rc = prep(s,
                  /* the owner filter is inside the candidate pool, so another
                   * owner's documents never crowd this owner's out of it */
                  "SELECT c.doc_id, min(f.score) FROM (SELECT rowid AS rid, rank AS score FROM chunks_fts "
                  "WHERE chunks_fts MATCH ?1 AND (?3 IS NULL OR rowid IN (SELECT c2.id FROM chunks c2 JOIN "
                  "doc_owners o ON o.doc_id = c2.doc_id WHERE o.owner = ?3)) ORDER BY rank LIMIT 1000) f "
                  "JOIN chunks c ON c.id = f.rid GROUP BY c.doc_id ORDER BY 2, 1 LIMIT ?2",
                  &st);
    if (!rc) {
        sqlite3_bind_text(st, 1, q, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, k);
        if (owner) sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
        else sqlite3_bind_null(st, 3);
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW && *n < k) {
            hits[*n].doc_id = sqlite3_column_int64(st, 0);
            hits[*n].score = -sqlite3_column_double(st, 1); /* FTS5's rank (bm25) is lower-is-better */
            (*n)++;
        }
        if (r != SQLITE_ROW && r != SQLITE_DONE) rc = sq_err(s, MN_EIO, "bm25 search");
        sqlite3_finalize(st);
    }
    free(q);
    return rc;
}

static int sq_search_dense(mn_store *b, const float *q, int32_t dim, const char *owner, int k, mn_store_hit *hits,
                           int *n) {
    sq_store *s = (sq_store *)b;
    *n = 0;
    if (k <= 0) return 0;
    if (owners_ok(s, owner)) return MN_EUNSUPPORTED;
    char have[32];
    int rc = meta_get(s, "embed_dim", have, sizeof have);
    if (rc == MN_ENOTFOUND) return 0; /* nothing embedded yet */
    if (rc) return rc;
    if (atoi(have) != dim)
        return mn_error(MN_EINVAL, "store %s: embeddings are %s wide, the query's is %d", s->path, have, dim);
    double qn = 0;
    for (int32_t i = 0; i < dim; i++) qn += (double)q[i] * q[i];
    qn = sqrt(qn);
    if (!(qn > 0)) return 0;
    sqlite3_stmt *st;
    if ((rc = prep(s,
                   owner ? "SELECT doc_id, embedding FROM chunks WHERE embedding IS NOT NULL AND doc_id IN "
                           "(SELECT doc_id FROM doc_owners WHERE owner = ?1)"
                         : "SELECT doc_id, embedding FROM chunks WHERE embedding IS NOT NULL",
                   &st)))
        return rc;
    if (owner) sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const float *v = sqlite3_column_blob(st, 1);
        int bytes = sqlite3_column_bytes(st, 1);
        if (!v || bytes != (int)(sizeof(float) * (size_t)dim)) continue;
        double dot = 0, vn = 0;
        for (int32_t i = 0; i < dim; i++) {
            float x;
            memcpy(&x, (const char *)v + sizeof x * (size_t)i, sizeof x); /* blobs need not be aligned */
            dot += (double)x * q[i];
            vn += (double)x * x;
        }
        if (vn > 0) mn_store_hit_insert(hits, n, k, sqlite3_column_int64(st, 0), dot / (qn * sqrt(vn)));
    }
    if (r != SQLITE_DONE) rc = sq_err(s, MN_EIO, "dense search");
    sqlite3_finalize(st);
    return rc;
}

static int sq_chunk_text(mn_store *b, int64_t doc_id, char **text, size_t *len) {
    sq_store *s = (sq_store *)b;
    *text = NULL;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT text FROM chunks WHERE doc_id = ?1 ORDER BY seq", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, doc_id);
    size_t n = 0, cap = 256;
    char *buf = malloc(cap);
    int r;
    while (buf && (r = sqlite3_step(st)) == SQLITE_ROW) {
        size_t l = (size_t)sqlite3_column_bytes(st, 0);
        const void *t = sqlite3_column_text(st, 0);
        if (n + l + 1 > cap) {
            while (n + l + 1 > cap) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        memcpy(buf + n, t, l);
        n += l;
    }
    sqlite3_finalize(st);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory reading document %lld", (long long)doc_id);
    buf[n] = 0;
    *text = buf;
    if (len) *len = n;
    return 0;
}

typedef struct {
    const char *group, *path, *sha;
} grp_args;

static int grp_fn(sq_store *s, void *arg) {
    grp_args *a = arg;
    int rc = ensure_group(s, a->group);
    if (rc) return rc;
    sqlite3_stmt *st;
    if ((rc = prep(s, "UPDATE groups SET adapter_path = ?2, adapter_sha256 = ?3 WHERE name = ?1", &st))) return rc;
    sqlite3_bind_text(st, 1, a->group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, a->sha, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sq_err(s, MN_EIO, "set adapter");
    sqlite3_finalize(st);
    return rc;
}

static int sq_group_set_adapter(mn_store *b, const char *group, const char *path, const char *sha) {
    if (!mn_store_valid_group(group)) return mn_error(MN_EINVAL, "group name '%s' is not valid", group);
    grp_args a = {group, path ? path : "", sha ? sha : ""};
    return in_txn((sq_store *)b, grp_fn, &a);
}

#define GROUP_COLS "g.name, g.adapter_path, g.adapter_sha256, (SELECT count(*) FROM documents d WHERE d.grp = g.name) "

static void read_group(sqlite3_stmt *st, mn_store_group *g) {
    memset(g, 0, sizeof *g);
    col_text(st, 0, g->name, sizeof g->name);
    col_text(st, 1, g->adapter_path, sizeof g->adapter_path);
    col_text(st, 2, g->adapter_sha256, sizeof g->adapter_sha256);
    g->n_docs = sqlite3_column_int64(st, 3);
}

static int sq_group_get(mn_store *b, const char *group, mn_store_group *out) {
    sq_store *s = (sq_store *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT " GROUP_COLS "FROM groups g WHERE g.name = ?1", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) read_group(st, out);
    else if (r == SQLITE_DONE) rc = mn_error(MN_ENOTFOUND, "no group '%s'", group);
    else rc = sq_err(s, MN_EIO, "group");
    sqlite3_finalize(st);
    return rc;
}

static int sq_groups(mn_store *b, mn_store_group **out, int64_t *n) {
    sq_store *s = (sq_store *)b;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT " GROUP_COLS "FROM groups g ORDER BY g.name", &st);
    if (rc) return rc;
    int64_t cap = 0;
    mn_store_group *arr = NULL;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            mn_store_group *na = realloc(arr, sizeof *arr * (size_t)cap);
            if (!na) rc = mn_error(MN_ENOMEM, "out of memory");
            else arr = na;
        }
        if (!rc) read_group(st, &arr[(*n)++]);
    }
    sqlite3_finalize(st);
    if (rc) {
        free(arr);
        *n = 0;
        return rc;
    }
    *out = arr;
    return 0;
}

static int sq_meta_get(mn_store *b, const char *key, char *val, size_t cap) {
    return meta_get((sq_store *)b, key, val, cap);
}

typedef struct {
    const char *k, *v;
} meta_args;

static int meta_fn(sq_store *s, void *arg) {
    meta_args *a = arg;
    return meta_set(s, a->k, a->v);
}

static int sq_meta_set(mn_store *b, const char *key, const char *val) {
    meta_args a = {key, val};
    return in_txn((sq_store *)b, meta_fn, &a);
}

static int sq_mem_files(mn_store *b, char ***names, uint64_t **checksums, int64_t *n) {
    sq_store *s = (sq_store *)b;
    *names = NULL;
    if (checksums) *checksums = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT file, checksum FROM memories ORDER BY file", &st);
    if (rc) return rc;
    int64_t cap = 0;
    char **arr = NULL;
    uint64_t *sums = NULL;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **na = realloc(arr, sizeof *arr * (size_t)cap);
            if (na) arr = na;
            uint64_t *ns = na ? realloc(sums, sizeof *sums * (size_t)cap) : NULL;
            if (ns) sums = ns;
            if (!na || !ns) rc = mn_error(MN_ENOMEM, "out of memory");
        }
        if (!rc && !(arr[*n] = strdup((const char *)sqlite3_column_text(st, 0))))
            rc = mn_error(MN_ENOMEM, "out of memory");
        if (!rc) sums[(*n)++] = mn_store_parse_hex64((const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    if (rc) {
        for (int64_t i = 0; i < *n; i++) free(arr[i]);
        free(arr);
        free(sums);
        *n = 0;
        return rc;
    }
    *names = arr;
    if (checksums) *checksums = sums;
    else free(sums);
    return 0;
}

static int sq_check(mn_store *b, char *report, size_t cap) {
    sq_store *s = (sq_store *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "PRAGMA integrity_check", &st);
    if (rc) return rc;
    size_t used = 0;
    int ok = 0, r;
    if (cap) report[0] = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (t && !strcmp(t, "ok")) ok = 1;
        if (t && used + 2 < cap) used += (size_t)snprintf(report + used, cap - used, "%s\n", t);
        if (used >= cap) used = cap - 1;
    }
    if (r != SQLITE_DONE) rc = sq_err(s, MN_EFORMAT, "integrity check");
    sqlite3_finalize(st);
    if (!rc && !ok) rc = mn_error(MN_EFORMAT, "store %s: integrity check failed", s->path);
    return rc;
}

static int sq_schema_version(mn_store *b, int *version) {
    char v[32];
    int rc = meta_get((sq_store *)b, "schema", v, sizeof v);
    if (!rc) *version = atoi(v);
    return rc;
}

static const mn_store_ops k_sqlite_ops = {
    "sqlite",     sq_close,           sq_mem_dir,     sq_find_sha,  sq_add,        sq_get,
    sq_list,      sq_remove,          sq_search_bm25, sq_search_dense, sq_chunk_text, sq_group_set_adapter,
    sq_group_get, sq_groups,          sq_meta_get,    sq_meta_set,  sq_mem_files,  sq_check,
    sq_grant,     sq_owns,            sq_disown,      NULL /* no connection to re-establish */,
    sq_schema_version,
};

int mn_store_open_sqlite(const char *path, int flags, mn_store **out) {
    *out = NULL;
    if (!path || !*path) return mn_error(MN_EINVAL, "store: no database path");
    struct stat stt;
    int exists = stat(path, &stt) == 0;
    if (!exists && !(flags & MN_STORE_CREATE))
        return mn_error(MN_ENOTFOUND, "store %s: no such file (create one with 'mnemo store add')", path);
    if (exists && !S_ISREG(stt.st_mode)) return mn_error(MN_EINVAL, "store %s: not a regular file", path);
    sq_store *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "out of memory");
    s->base.ops = &k_sqlite_ops;
    s->readonly = (flags & MN_STORE_READONLY) != 0;
    s->path = strdup(path);
    size_t pl = strlen(path);
    s->mem_dir = malloc(pl + 5);
    if (!s->path || !s->mem_dir) {
        sq_close(&s->base);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    memcpy(s->mem_dir, path, pl);
    memcpy(s->mem_dir + pl, ".mem", 5);
    int oflags = s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &s->db, oflags | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        mn_error(MN_EIO, "store %s: cannot open: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sq_close(&s->base);
        return MN_EIO;
    }
    /* how long a statement waits for another process's lock: MNEMO_DB_TIMEOUT (--db-timeout), 10 s by default */
    double wait_s = 10;
    const char *tv = getenv("MNEMO_DB_TIMEOUT");
    if (tv && *tv) {
        char *end;
        const double x = strtod(tv, &end);
        if (!*end && x >= 0 && x <= 86400) wait_s = x;
    }
    sqlite3_busy_timeout(s->db, (int)(wait_s * 1000));
    sqlite3_extended_result_codes(s->db, 0);
    /* The first statement reads the header, so this is where a file that is
     * not a database (or a damaged one) is caught. */
    int64_t n_tables = 0;
    sqlite3_stmt *st;
    rc = prep(s, "SELECT count(*) FROM sqlite_master", &st);
    if (!rc) {
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) n_tables = sqlite3_column_int64(st, 0);
        else
            rc = mn_error((r == SQLITE_NOTADB || r == SQLITE_CORRUPT) ? MN_EFORMAT : MN_EIO,
                          "store %s: cannot read the database: %s", path, sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
    }
    if (rc) goto fail;
    if (n_tables > 0) {
        char v[32];
        rc = prep(s, "SELECT value FROM meta WHERE key = 'schema'", &st);
        if (rc) {
            rc = mn_error(MN_EFORMAT, "store %s: a SQLite database, but not a mnemo store", path);
            goto fail;
        }
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) col_text(st, 0, v, sizeof v);
        sqlite3_finalize(st);
        if (r != SQLITE_ROW) {
            rc = mn_error(MN_EFORMAT, "store %s: a SQLite database, but not a mnemo store", path);
            goto fail;
        }
        if (strcmp(v, "1") && strcmp(v, "2")) {
            rc = mn_error(MN_EUNSUPPORTED, "store %s: schema version %s (this mnemo reads 1 and 2)", path, v);
            goto fail;
        }
        s->v1 = !strcmp(v, "1") && s->readonly;
    } else if (s->readonly) {
        rc = mn_error(MN_EFORMAT, "store %s: empty database, not a mnemo store", path);
        goto fail;
    }
    if (!s->readonly) {
        if ((rc = exec(s, "PRAGMA journal_mode=WAL", "journal mode"))) goto fail;
        if ((rc = exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", "pragmas"))) goto fail;
        if ((rc = exec(s, "BEGIN IMMEDIATE", "begin"))) goto fail;
        if ((rc = exec(s, k_schema, "create schema"))) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if ((rc = exec(s, "COMMIT", "commit"))) goto fail;
        if (mkdir(s->mem_dir, 0755) && errno != EEXIST) {
            rc = mn_error(MN_EIO, "store %s: cannot create %s: %s", path, s->mem_dir, strerror(errno));
            goto fail;
        }
    }
    *out = &s->base;
    return 0;
fail:
    sq_close(&s->base);
    return rc;
}
