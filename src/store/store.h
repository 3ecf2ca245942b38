/* store.h - the document store of the LLoCO path: documents, their compressed
 * memories, document groups with an optional decoder adapter each, chunk text
 * for BM25 retrieval and chunk embeddings for dense retrieval.
 *
 * The store is an interface: a table of operations (mn_store_ops) behind an
 * opaque handle, with two backends: a SQLite file (store_sqlite.c), the
 * embedded default, and a PostgreSQL database (store_pg.c) that several
 * servers share. mn_store_open() picks one from the spec's form.
 *
 * Memories themselves are memory files (memory/docmem.h) in a directory the
 * backend names (mn_store_mem_dir); the store records each file's name, size
 * and payload checksum, and refers to it only once the file is complete, so a
 * process killed mid-ingest leaves at worst an unreferenced file that
 * mn_store_gc() removes.
 *
 * Every write is one transaction. Documents are identified by the SHA-256 of
 * their text: adding a text that is already stored is a no-op that returns the
 * existing id. Errors follow mnemo.h. A handle is not thread-safe; callers
 * sharing one serialise access.
 *
 * Owners: a document may be owned by named owners (the server's scoped API
 * keys, `mnemo serve --api-keys`). The same text uploaded under two keys is
 * one document with two owners; an owner's delete takes away its own access,
 * and the document goes with its last owner. Listing and searching take an
 * owner filter (NULL: every document, the unscoped model).
 */
#ifndef MN_STORE_H
#define MN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#define MN_STORE_TITLE_CAP 256
#define MN_STORE_SOURCE_CAP 1024
#define MN_STORE_GROUP_CAP 64
#define MN_STORE_NAME_CAP 128 /* memory file names, relative to the memory directory */
#define MN_STORE_PATH_CAP 4096
#define MN_STORE_DEFAULT_GROUP "default"
#define MN_STORE_OWNER_CAP 65 /* owner names: 1..64 of [A-Za-z0-9._-] */

typedef struct mn_store mn_store;

/* One document as listed; the memory fields describe its memory for the
 * adapter asked about (n_slots -1 and an empty mem_file when it has none). */
typedef struct {
    int64_t id;
    char title[MN_STORE_TITLE_CAP];
    char source[MN_STORE_SOURCE_CAP];
    char sha256[65];
    char group[MN_STORE_GROUP_CAP];
    int64_t n_tokens;
    int64_t n_chunks;
    int64_t created; /* unix seconds */
    int32_t n_slots;
    int64_t mem_bytes;
    uint64_t mem_checksum;
    char mem_file[MN_STORE_NAME_CAP];
} mn_store_doc;

/* A document to add: its chunks (text, and optionally one embedding each of
 * `dim` floats, rows of chunk_vec) and its memory file for adapter_hash. */
typedef struct {
    const char *title, *source, *sha256, *group; /* group NULL: "default" */
    int64_t n_tokens;
    int32_t n_chunks;
    const char *const *chunk_text;
    const float *chunk_vec; /* (n_chunks, dim) or NULL */
    int32_t dim;
    uint64_t adapter_hash;
    const char *mem_file; /* name inside mn_store_mem_dir */
    int32_t n_slots;
    int64_t mem_bytes;
    uint64_t mem_checksum;
} mn_store_new_doc;

typedef struct {
    int64_t doc_id;
    double score; /* larger is better; BM25: -bm25(), dense: cosine */
} mn_store_hit;

typedef struct {
    char name[MN_STORE_GROUP_CAP];
    char adapter_path[MN_STORE_PATH_CAP]; /* "" when the group has no decoder adapter */
    char adapter_sha256[65];
    int64_t n_docs;
} mn_store_group;

/* The backend's operations; every one returns 0 or a negative MN_E* code. */
typedef struct {
    const char *name;
    void (*close)(mn_store *s);
    const char *(*mem_dir)(mn_store *s);
    int (*find_sha)(mn_store *s, const char *sha256, int64_t *id);
    int (*add)(mn_store *s, const mn_store_new_doc *d, int64_t *id, int *existed);
    int (*get)(mn_store *s, int64_t id, uint64_t adapter_hash, mn_store_doc *out);
    int (*list)(mn_store *s, uint64_t adapter_hash, const char *owner, mn_store_doc **out, int64_t *n);
    int (*remove)(mn_store *s, int64_t id, char *mem_files, size_t cap);
    int (*search_bm25)(mn_store *s, const char *query, const char *owner, int k, mn_store_hit *hits, int *n);
    int (*search_dense)(mn_store *s, const float *q, int32_t dim, const char *owner, int k, mn_store_hit *hits,
                        int *n);
    int (*chunk_text)(mn_store *s, int64_t doc_id, char **text, size_t *len);
    int (*group_set_adapter)(mn_store *s, const char *group, const char *path, const char *sha256);
    int (*group_get)(mn_store *s, const char *group, mn_store_group *out);
    int (*groups)(mn_store *s, mn_store_group **out, int64_t *n);
    int (*meta_get)(mn_store *s, const char *key, char *val, size_t cap);
    int (*meta_set)(mn_store *s, const char *key, const char *val);
    int (*mem_files)(mn_store *s, char ***names, uint64_t **checksums, int64_t *n);
    int (*check)(mn_store *s, char *report, size_t cap);
    int (*grant)(mn_store *s, int64_t id, const char *owner, int *added);
    int (*owns)(mn_store *s, int64_t id, const char *owner, int *yes);
    int (*disown)(mn_store *s, int64_t id, const char *owner, int *removed, char *mem_files, size_t cap);
    int64_t (*reconnects)(mn_store *s); /* NULL: a backend without connections */
    int (*schema_version)(mn_store *s, int *version);
} mn_store_ops;

/* Backends start their handle struct with this. */
struct mn_store {
    const mn_store_ops *ops;
};

enum { MN_STORE_READONLY = 1, MN_STORE_CREATE = 2 };

/* Opens the store named by spec: a PostgreSQL URI (postgresql://...) or
 * conninfo string (key=value ...) opens mn_store_open_pg, anything else is a
 * SQLite file (mn_store_open_sqlite). */
int mn_store_open(const char *spec, int flags, mn_store **out);
/* 1 when spec names a PostgreSQL database. */
int mn_store_is_pg(const char *spec);
/* Opens the store in the PostgreSQL database conninfo names (the database
 * must exist; MN_STORE_CREATE creates the schema, and any open migrates an
 * older one). Memory files live in the directory recorded in the store,
 * given by the environment's MNEMO_MEM_DIR when the store is created (an
 * absolute path every server sees; MNEMO_MEM_DIR at open overrides it). A
 * database with other tables and no mnemo schema is MN_EFORMAT; without
 * MN_STORE_CREATE a database without the schema is MN_ENOTFOUND. */
int mn_store_open_pg(const char *conninfo, int flags, mn_store **out);
/* Opens (MN_STORE_CREATE: creating if missing) the SQLite store at path; its
 * memory files live in "<path>.mem/". A file that is not a SQLite database,
 * or a database that is not a mnemo store, is MN_EFORMAT with a message. */
int mn_store_open_sqlite(const char *path, int flags, mn_store **out);
/* NULL is a no-op. */
void mn_store_close(mn_store *s);

/* Directory of the memory files (absolute or relative to the working dir). */
const char *mn_store_mem_dir(mn_store *s);
/* "sqlite" or "postgresql". */
const char *mn_store_backend(mn_store *s);
/* Connections to the backend re-established after it was lost (any thread may ask). */
int64_t mn_store_reconnects(mn_store *s);
/* The schema version the store's tables are at (a query: it also says the store answers). */
int mn_store_schema_version(mn_store *s, int *version);

/* What a document's memory holds, named part by part: memory slots, raw
 * tokens kept beside them, and the exact tokens kept for recall; cells is
 * what the decoder holds for it before recall (slots + raw). */
typedef struct {
    int32_t slots, raw, exact;
    int64_t cells;
    int exact_kv; /* the exact segments' 8-bit cells are in the file (paged without decoding) */
} mn_store_mem_parts;
/* Reads the parts from the memory file's header (mn_memfile_read_info).
 * On failure (no memory for the adapter, an unreadable file) the parts are
 * -1, cells the count the store recorded, and the error is returned. */
int mn_store_doc_parts(mn_store *s, const mn_store_doc *d, mn_store_mem_parts *p);
/* MN_ENOTFOUND when no document has this text hash. */
int mn_store_find_sha(mn_store *s, const char *sha256, int64_t *id);
/* Adds a document with its chunks and memory in one transaction. A text
 * already stored (same sha256) changes nothing (*existed = 1, *id = its id);
 * if that document lacks a memory for d->adapter_hash the memory is added.
 * The group row is created when new. */
int mn_store_add(mn_store *s, const mn_store_new_doc *d, int64_t *id, int *existed);
/* MN_ENOTFOUND for an unknown id. */
int mn_store_get(mn_store *s, int64_t id, uint64_t adapter_hash, mn_store_doc *out);
/* All documents by id (malloc'd array, caller frees). */
int mn_store_list(mn_store *s, uint64_t adapter_hash, mn_store_doc **out, int64_t *n);
/* The documents `owner` owns (NULL: all, as mn_store_list). */
int mn_store_list_owned(mn_store *s, uint64_t adapter_hash, const char *owner, mn_store_doc **out, int64_t *n);
/* Removes a document, its chunks and its memory records in one transaction.
 * mem_files (optional) gets the memory file names it referenced, separated
 * by '\n', for the caller to delete after the commit. MN_ENOTFOUND if unknown. */
int mn_store_remove(mn_store *s, int64_t id, char *mem_files, size_t cap);
/* Top k documents for a free-text query by full-text rank over chunk text
 * (SQLite: FTS5 BM25; PostgreSQL: ts_rank_cd; a document scores as its best
 * chunk). Words are matched as OR-ed terms, so
 * any text is a valid query. *n gets the hit count (<= k). owner: only the
 * documents it owns are searched (NULL: all). */
int mn_store_search_bm25(mn_store *s, const char *query, const char *owner, int k, mn_store_hit *hits, int *n);
/* Top k documents by cosine similarity between q (dim floats) and their chunk
 * embeddings (a document scores as its best chunk). MN_EINVAL for a dim that
 * differs from the stored embeddings'. owner as for the BM25 search. */
int mn_store_search_dense(mn_store *s, const float *q, int32_t dim, const char *owner, int k, mn_store_hit *hits,
                          int *n);
/* Makes `owner` an owner of document id (*added, optional: 1 when it was
 * not one already). MN_ENOTFOUND when the document is gone (removed by its
 * last owner meanwhile), MN_EINVAL for a malformed owner name. */
int mn_store_grant(mn_store *s, int64_t id, const char *owner, int *added);
/* *yes = 1 when owner owns document id (0 also for an unknown id). */
int mn_store_owns(mn_store *s, int64_t id, const char *owner, int *yes);
/* Takes owner's ownership of document id away, in one transaction with
 * removing the document when no owner is left (*removed = 1; mem_files as
 * for mn_store_remove). MN_ENOTFOUND when owner does not own it. */
int mn_store_disown(mn_store *s, int64_t id, const char *owner, int *removed, char *mem_files, size_t cap);
/* 1 when name is a valid owner name. */
int mn_store_valid_owner(const char *name);
/* The document's text (its chunks concatenated), malloc'd, NUL-terminated. */
int mn_store_chunk_text(mn_store *s, int64_t doc_id, char **text, size_t *len);
/* Records the decoder adapter file of a group (path "" clears it); creates
 * the group if needed. */
int mn_store_group_set_adapter(mn_store *s, const char *group, const char *path, const char *sha256);
/* MN_ENOTFOUND for an unknown group. */
int mn_store_group_get(mn_store *s, const char *group, mn_store_group *out);
int mn_store_groups(mn_store *s, mn_store_group **out, int64_t *n);
/* Store-wide facts (model hash, embedding dim, ...). get: MN_ENOTFOUND when unset. */
int mn_store_meta_get(mn_store *s, const char *key, char *val, size_t cap);
int mn_store_meta_set(mn_store *s, const char *key, const char *val);
/* The store's compressor adapter, as the first add records it (meta
 * "adapter_path", made absolute, and "adapter_hash", 16 hex digits). */
int mn_store_record_adapter(mn_store *s, const char *path, uint64_t hash);
/* The recorded adapter's hash; 0 when none is recorded. */
uint64_t mn_store_recorded_adapter_hash(mn_store *s);
/* Every memory file name referenced (malloc'd array of malloc'd strings),
 * and (checksums optional) the payload checksum recorded for each. */
int mn_store_mem_files(mn_store *s, char ***names, uint64_t **checksums, int64_t *n);
/* Database consistency check (SQLite: PRAGMA integrity_check); a short
 * report goes to `report`; MN_EFORMAT when it finds damage. */
int mn_store_check(mn_store *s, char *report, size_t cap);

/* Deletes files in the memory directory that no document refers to (left by
 * an ingest that was killed before its commit) and older than min_age_s
 * seconds (so a concurrent writer's file that is about to be committed
 * survives). *n_removed (optional) gets the count. The first gc writes the
 * store's id into the directory (MN_STORE_DIR_MARKER); a directory marked by
 * another store is refused (MN_EINVAL), its files left alone. */
#define MN_STORE_DIR_MARKER ".mnemo-store"
int mn_store_gc(mn_store *s, double min_age_s, int *n_removed);
/* Verifies that every referenced memory file exists with the recorded size
 * and checksum; report lists the problems. MN_EFORMAT if any. */
int mn_store_verify_files(mn_store *s, char *report, size_t cap);

#endif
