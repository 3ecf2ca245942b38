/* test_store.c - the document store (src/store) on both backends, SQLite and
 * PostgreSQL (a throw-away cluster, tests/test_pg.h): add / list / get /
 * remove, the same-text no-op, groups, full-text and dense ranking, fused
 * retrieval with the model's own embeddings, memory-file verification and
 * garbage collection, owners (scoped keys: grants, filtered listing and
 * search, the last owner's delete), the SQLite schema-1 migration, and clear
 * errors for files and databases that are not stores; for PostgreSQL also the schema version, the memory directory's
 * record, and the same text uploaded through two connections at once. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory/memfile.h"
#include "store/embed.h"
#include "store/retrieve.h"
#include "store/sha256.h"
#include "store/store.h"
#include "test.h"
#include "test_pg.h"

static char g_dir[256];

static int g_pg; /* the backend under test: 0 SQLite, 1 PostgreSQL */

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* The spec of a store `name` that does not exist yet on the backend under
 * test (PostgreSQL: a fresh empty database, memory files in g_dir). */
static int store_spec(const char *name, char *spec, size_t cap) {
    if (!g_pg) {
        snprintf(spec, cap, "%s/%s.db", g_dir, name);
        return 0;
    }
    char mem[512];
    snprintf(mem, sizeof mem, "%s/%s.pgmem", g_dir, name);
    setenv("MNEMO_MEM_DIR", mem, 1);
    return test_pg_fresh_db(name, spec, cap);
}

static const char *k_docs[3][2] = {
    {"volcanoes", "Volcanoes erupt when magma rises through the crust. Lava flows, ash clouds and pyroclastic "
                  "surges follow an eruption; the magma chamber empties and the caldera collapses."},
    {"bread", "Bread is baked from flour, water, salt and yeast. The dough is kneaded, left to rise, shaped "
              "into loaves and baked in a hot oven until the crust is brown."},
    {"chess", "In chess each player moves sixteen pieces: the king, the queen, two rooks, two bishops, two "
              "knights and eight pawns. Checkmate ends the game."},
};

/* One-hot-ish vectors so the dense ranking is known exactly. */
static void vec_for(int doc, float *v, int dim) {
    for (int i = 0; i < dim; i++) v[i] = 0.01f * (float)((i * 7 + doc) % 5);
    v[doc] = 1.0f;
}

static int add_doc(mn_store *s, int i, const char *group, const char *mem_file, int64_t *id, int *existed) {
    char sha[65];
    mn_sha256_hex(k_docs[i][1], strlen(k_docs[i][1]), sha);
    float v[8];
    vec_for(i, v, 8);
    const char *chunks[1] = {k_docs[i][1]};
    mn_store_new_doc d = {0};
    d.title = k_docs[i][0];
    d.source = "test";
    d.sha256 = sha;
    d.group = group;
    d.n_tokens = 30 + i;
    d.n_chunks = 1;
    d.chunk_text = chunks;
    d.chunk_vec = v;
    d.dim = 8;
    d.adapter_hash = 0xabcdef0123456789ull;
    d.mem_file = mem_file;
    d.n_slots = 4;
    d.mem_bytes = 1000;
    d.mem_checksum = 0;
    if (mem_file) {
        /* a real memory file, so verification has something to check */
        char p[512];
        snprintf(p, sizeof p, "%s/%s", mn_store_mem_dir(s), mem_file);
        mn_memfile_info info = {0};
        info.kind = MN_MEMFILE_EMBD;
        info.dim = 4;
        info.n_slots = 2;
        info.n_tokens = 30;
        float e[8] = {1, 2, 3, 4, 5, 6, 7, (float)i};
        if (mn_memfile_write(p, &info, e, NULL, MN_MEMFILE_F32)) return -100;
        mn_memfile *mf;
        if (mn_memfile_open(p, &mf)) return -101;
        d.mem_checksum = mn_memfile_get_info(mf)->checksum;
        mn_memfile_free(mf);
    }
    return mn_store_add(s, &d, id, existed);
}

static void test_basic(void) {
    char db[768];
    mn_store *s = NULL;
    if (store_spec("basic", db, sizeof db)) {
        CHECK(0, "no fresh store for the %s backend", g_pg ? "postgresql" : "sqlite");
        return;
    }
    int rc = mn_store_open(db, 0, &s);
    CHECK(rc == MN_ENOTFOUND && strstr(mn_last_error(), g_pg ? "no mnemo store" : "no such file"),
          "open without create: %d %s", rc, mn_last_error());
    rc = mn_store_open(db, MN_STORE_CREATE, &s);
    CHECK(rc == 0 && s, "create: %s", mn_last_error());
    if (rc) return;
    CHECK(!strcmp(s->ops->name, g_pg ? "postgresql" : "sqlite"), "backend %s", s->ops->name);
    int64_t ids[3];
    int existed = -1;
    for (int i = 0; i < 3; i++) {
        char mf[64];
        snprintf(mf, sizeof mf, "doc%d.mem", i);
        rc = add_doc(s, i, i == 2 ? "games" : NULL, mf, &ids[i], &existed);
        CHECK(rc == 0 && existed == 0, "add %d: %d %s", i, rc, mn_last_error());
    }
    CHECK(ids[0] != ids[1] && ids[1] != ids[2], "distinct ids");
    int64_t again = -1;
    rc = add_doc(s, 1, NULL, "doc1.mem", &again, &existed);
    CHECK(rc == 0 && existed == 1 && again == ids[1], "same text is a no-op: %d existed %d id %lld", rc, existed,
          (long long)again);
    mn_store_doc *docs = NULL;
    int64_t n = 0;
    rc = mn_store_list(s, 0xabcdef0123456789ull, &docs, &n);
    CHECK(rc == 0 && n == 3, "list: %d n=%lld", rc, (long long)n);
    if (n == 3) {
        CHECK(!strcmp(docs[0].title, "volcanoes") && docs[0].n_tokens == 30 && docs[0].n_chunks == 1 &&
                  docs[0].n_slots == 4 && !strcmp(docs[0].mem_file, "doc0.mem"),
              "doc 0 fields: %s %lld %lld %d %s", docs[0].title, (long long)docs[0].n_tokens,
              (long long)docs[0].n_chunks, docs[0].n_slots, docs[0].mem_file);
        CHECK(!strcmp(docs[0].group, "default") && !strcmp(docs[2].group, "games"), "groups: %s %s", docs[0].group,
              docs[2].group);
        CHECK(strlen(docs[1].sha256) == 64, "sha stored");
    }
    free(docs);
    /* another adapter's view: the documents exist, their memories do not */
    mn_store_doc d;
    rc = mn_store_get(s, ids[0], 42, &d);
    CHECK(rc == 0 && d.n_slots == -1 && d.mem_file[0] == 0, "other adapter: %d slots %d", rc, d.n_slots);
    rc = mn_store_get(s, 999999, 0, &d);
    CHECK(rc == MN_ENOTFOUND, "unknown id: %d", rc);

    /* BM25 ranking */
    mn_store_hit hits[4];
    int nh = 0;
    rc = mn_store_search_bm25(s, "How does the magma of an eruption reach the crust?", NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh >= 1 && hits[0].doc_id == ids[0], "bm25 volcano: %d n=%d top=%lld", rc, nh,
          nh ? (long long)hits[0].doc_id : -1LL);
    rc = mn_store_search_bm25(s, "which pieces does a chess player move? (queen AND \"king\" NEAR/2 -)", NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh >= 1 && hits[0].doc_id == ids[2], "bm25 chess with query syntax chars: %d %s", rc,
          mn_last_error());
    rc = mn_store_search_bm25(s, "yeast dough oven", NULL, 1, hits, &nh);
    CHECK(rc == 0 && nh == 1 && hits[0].doc_id == ids[1], "bm25 bread k=1: n=%d", nh);
    rc = mn_store_search_bm25(s, "?!", NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh == 0, "no words, no hits");
    { /* 17 to 64 one-letter words: the FTS5 query outgrows 3 bytes per input byte (a heap overflow once) */
        char many[128];
        for (int i = 0; i < 40; i++) many[2 * i] = (char)('a' + i % 26), many[2 * i + 1] = ' ';
        many[79] = 0;
        rc = mn_store_search_bm25(s, many, NULL, 3, hits, &nh);
        CHECK(rc == 0, "40 one-letter words: %d %s", rc, mn_last_error());
    }
    rc = mn_store_search_bm25(s, "zeppelin", NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh == 0, "unmatched word: %d", nh);

    /* dense ranking */
    float q[8];
    vec_for(1, q, 8);
    rc = mn_store_search_dense(s, q, 8, NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh == 3 && hits[0].doc_id == ids[1] && hits[0].score > hits[1].score &&
              hits[0].score > 0.99,
          "dense: %d n=%d top=%lld %.3f", rc, nh, nh ? (long long)hits[0].doc_id : -1LL, nh ? hits[0].score : 0.0);
    rc = mn_store_search_dense(s, q, 7, NULL, 3, hits, &nh);
    CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "wide"), "dense dim mismatch: %d %s", rc, mn_last_error());

    /* groups and adapters */
    rc = mn_store_group_set_adapter(s, "games", "/x/games.lora.gguf", "ab");
    mn_store_group g;
    CHECK(rc == 0 && mn_store_group_get(s, "games", &g) == 0 && !strcmp(g.adapter_path, "/x/games.lora.gguf") &&
              g.n_docs == 1,
          "group adapter: %d %s", rc, mn_last_error());
    CHECK(mn_store_group_get(s, "nope", &g) == MN_ENOTFOUND, "unknown group");
    rc = mn_store_group_set_adapter(s, "bad group!", "", "");
    CHECK(rc == MN_EINVAL, "bad group name: %d", rc);

    /* text round trip and files */
    char *text = NULL;
    size_t tl = 0;
    rc = mn_store_chunk_text(s, ids[2], &text, &tl);
    CHECK(rc == 0 && text && !strcmp(text, k_docs[2][1]), "chunk text");
    free(text);
    char rep[1024];
    CHECK(mn_store_verify_files(s, rep, sizeof rep) == 0, "verify: %s", rep);
    char p[512];
    snprintf(p, sizeof p, "%s/doc1.mem", mn_store_mem_dir(s));
    FILE *f = fopen(p, "r+b");
    if (f) {
        fseek(f, 520, SEEK_SET);
        fputc(0x55, f);
        fclose(f);
    }
    rc = mn_store_verify_files(s, rep, sizeof rep);
    CHECK(rc == MN_EFORMAT && strstr(rep, "doc1.mem"), "damaged memory file found: %d %s", rc, rep);
    /* orphans: a memory file named as ingest names them and an interrupted write's temporary file; beside them a
     * user's files in the same directory, which gc must never touch */
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char orphan[512], tmpf[600], mine[3][600];
    snprintf(orphan, sizeof orphan, "%s/%s-00000000deadbeef-0badcafe.mem", mn_store_mem_dir(s), hex);
    snprintf(tmpf, sizeof tmpf, "%s.tmp.Ab12Cd", orphan);
    snprintf(mine[0], sizeof mine[0], "%s/notes.txt", mn_store_mem_dir(s));
    snprintf(mine[1], sizeof mine[1], "%s/orphan.mem", mn_store_mem_dir(s));
    snprintf(mine[2], sizeof mine[2], "%s/%s-00000000deadbeef-0badcafe.mem.bak", mn_store_mem_dir(s), hex);
    const char *made[5] = {orphan, tmpf, mine[0], mine[1], mine[2]};
    for (int i = 0; i < 5; i++)
        if ((f = fopen(made[i], "wb"))) fclose(f);
    int removed = -1;
    CHECK(mn_store_gc(s, 3600, &removed) == 0 && removed == 0 && access(orphan, F_OK) == 0, "gc keeps young orphans");
    CHECK(mn_store_gc(s, 0, &removed) == 0 && removed == 2 && access(orphan, F_OK) != 0 && access(tmpf, F_OK) != 0,
          "gc removes orphans: %d", removed);
    for (int i = 0; i < 3; i++) {
        CHECK(access(mine[i], F_OK) == 0, "gc leaves a file the store did not make: %s", mine[i]);
        unlink(mine[i]);
    }
    /* the first gc marked the directory with the store's id; a directory another store marked (two stores
     * given one memory directory) is refused, and that store's files stay */
    char marker[600], sid[64] = "", got[64] = "";
    snprintf(marker, sizeof marker, "%s/" MN_STORE_DIR_MARKER, mn_store_mem_dir(s));
    CHECK(mn_store_meta_get(s, "store_id", sid, sizeof sid) == 0 && strlen(sid) == 32, "the store has an id: %s", sid);
    if ((f = fopen(marker, "r"))) {
        if (!fgets(got, sizeof got, f)) got[0] = 0;
        fclose(f);
    }
    got[strcspn(got, "\n")] = 0;
    CHECK(!strcmp(got, sid), "the marker names it: '%s' vs '%s'", got, sid);
    if ((f = fopen(marker, "w"))) fputs("0123456789abcdef0123456789abcdef\n", f), fclose(f);
    if ((f = fopen(orphan, "wb"))) fclose(f);
    rc = mn_store_gc(s, 0, &removed);
    CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "another store") && access(orphan, F_OK) == 0 && removed == 0,
          "a directory marked by another store: gc refused, its files kept: %d %s", rc, mn_last_error());
    if ((f = fopen(marker, "w"))) fprintf(f, "%s\n", sid), fclose(f);
    CHECK(mn_store_gc(s, 0, &removed) == 0 && removed == 1 && access(orphan, F_OK) != 0, "its own marker: gc runs");

    /* remove */
    char files[256];
    rc = mn_store_remove(s, ids[1], files, sizeof files);
    CHECK(rc == 0 && !strcmp(files, "doc1.mem\n"), "remove: %d '%s'", rc, files);
    rc = mn_store_remove(s, ids[1], files, sizeof files);
    CHECK(rc == MN_ENOTFOUND, "remove twice: %d", rc);
    rc = mn_store_search_bm25(s, "yeast dough oven", NULL, 3, hits, &nh);
    CHECK(rc == 0 && nh == 0, "removed doc leaves the FTS index: n=%d", nh);
    CHECK(mn_store_check(s, rep, sizeof rep) == 0, "integrity: %s", rep);
    mn_store_close(s);

    /* reopen read-only: data persisted */
    if (g_pg) unsetenv("MNEMO_MEM_DIR"); /* the store's own record of it from now on */
    rc = mn_store_open(db, MN_STORE_READONLY, &s);
    CHECK(rc == 0, "reopen ro: %s", mn_last_error());
    if (!rc) {
        CHECK(mn_store_list(s, 0, &docs, &n) == 0 && n == 2, "2 docs after reopen: %lld", (long long)n);
        CHECK(!g_pg || strstr(mn_store_mem_dir(s), "/basic.pgmem"), "memory directory as recorded: %s",
              mn_store_mem_dir(s));
        free(docs);
        CHECK(add_doc(s, 1, NULL, NULL, &again, &existed) == MN_EINVAL, "read-only refuses writes");
        mn_store_close(s);
    }
}

/* Per-owner access (the server's scoped keys): grants, filters, the
 * last owner's delete, and that an owner filter never lets another owner's
 * documents crowd this owner's out of a search. */
static void test_owners(void) {
    char db[768];
    mn_store *s = NULL;
    if (store_spec("owners", db, sizeof db) || mn_store_open(db, MN_STORE_CREATE, &s)) {
        CHECK(0, "owners store: %s", mn_last_error());
        return;
    }
    int64_t ids[3];
    int ex;
    for (int i = 0; i < 3; i++) CHECK(add_doc(s, i, NULL, NULL, &ids[i], &ex) == 0, "add %d: %s", i, mn_last_error());
    int added = -1, yes = -1;
    CHECK(mn_store_grant(s, ids[0], "alice", &added) == 0 && added == 1, "grant alice 0: %d", added);
    CHECK(mn_store_grant(s, ids[0], "alice", &added) == 0 && added == 0, "grant again is a no-op: %d", added);
    CHECK(mn_store_grant(s, ids[0], "bob", &added) == 0 && added == 1, "grant bob 0");
    CHECK(mn_store_grant(s, ids[1], "bob", &added) == 0 && added == 1, "grant bob 1");
    CHECK(mn_store_grant(s, 999999, "bob", &added) == MN_ENOTFOUND, "grant on a missing document");
    CHECK(mn_store_grant(s, ids[1], "bad owner", &added) == MN_EINVAL, "malformed owner refused");
    CHECK(mn_store_grant(s, ids[1], "", &added) == MN_EINVAL, "empty owner refused");
    CHECK(mn_store_owns(s, ids[1], "alice", &yes) == 0 && yes == 0, "alice does not own 1");
    CHECK(mn_store_owns(s, ids[0], "alice", &yes) == 0 && yes == 1, "alice owns 0");
    CHECK(mn_store_owns(s, 999999, "alice", &yes) == 0 && yes == 0, "nobody owns a missing id");
    mn_store_doc *docs = NULL;
    int64_t n = -1;
    CHECK(mn_store_list_owned(s, 0, "alice", &docs, &n) == 0 && n == 1 && docs[0].id == ids[0], "alice lists 1: %lld",
          (long long)n);
    free(docs);
    CHECK(mn_store_list_owned(s, 0, "bob", &docs, &n) == 0 && n == 2 && docs[0].id == ids[0] && docs[1].id == ids[1],
          "bob lists 2: %lld", (long long)n);
    free(docs);
    CHECK(mn_store_list_owned(s, 0, "carol", &docs, &n) == 0 && n == 0, "carol lists none");
    free(docs);
    CHECK(mn_store_list_owned(s, 0, NULL, &docs, &n) == 0 && n == 3, "unfiltered lists 3");
    free(docs);
    /* search: the bread document is alice's best text hit only if it were hers */
    mn_store_hit hits[3];
    int nh = -1;
    CHECK(mn_store_search_bm25(s, "yeast dough oven", "alice", 3, hits, &nh) == 0 && nh == 0,
          "alice's text search does not find bob's bread: %d", nh);
    CHECK(mn_store_search_bm25(s, "yeast dough oven", "bob", 3, hits, &nh) == 0 && nh == 1 && hits[0].doc_id == ids[1],
          "bob's text search finds his bread: %d", nh);
    CHECK(mn_store_search_bm25(s, "chess king queen", "bob", 3, hits, &nh) == 0 && nh == 0,
          "the ownerless chess document is nobody's: %d", nh);
    float q[8];
    vec_for(1, q, 8);
    CHECK(mn_store_search_dense(s, q, 8, "alice", 3, hits, &nh) == 0 && nh == 1 && hits[0].doc_id == ids[0],
          "alice's dense search sees only her document: %d", nh);
    CHECK(mn_store_search_dense(s, q, 8, NULL, 3, hits, &nh) == 0 && nh == 3 && hits[0].doc_id == ids[1],
          "unfiltered dense search sees all: %d", nh);
    /* the first owner's delete keeps the document for the other */
    int removed = -1;
    char files[256] = "x";
    CHECK(mn_store_disown(s, ids[0], "carol", &removed, files, sizeof files) == MN_ENOTFOUND,
          "a non-owner's delete is 'not found'");
    CHECK(mn_store_disown(s, ids[0], "alice", &removed, files, sizeof files) == 0 && removed == 0 && !files[0],
          "alice's delete keeps bob's document: removed %d", removed);
    mn_store_doc d;
    CHECK(mn_store_get(s, ids[0], 0, &d) == 0, "document 0 still stored");
    CHECK(mn_store_owns(s, ids[0], "alice", &yes) == 0 && yes == 0, "alice no longer owns 0");
    CHECK(mn_store_disown(s, ids[0], "alice", &removed, files, sizeof files) == MN_ENOTFOUND, "twice: not found");
    CHECK(mn_store_disown(s, ids[0], "bob", &removed, files, sizeof files) == 0 && removed == 1,
          "the last owner's delete removes it: %d", removed);
    CHECK(mn_store_get(s, ids[0], 0, &d) == MN_ENOTFOUND, "document 0 gone");
    CHECK(mn_store_grant(s, ids[0], "alice", &added) == MN_ENOTFOUND, "no grant on a removed document");
    /* re-adding the text gives a new id, owned by nobody yet */
    int64_t again;
    CHECK(add_doc(s, 0, NULL, NULL, &again, &ex) == 0 && !ex && again != ids[0], "re-added with a new id");
    CHECK(mn_store_list_owned(s, 0, "alice", &docs, &n) == 0 && n == 0, "alice owns nothing now");
    free(docs);
    mn_store_close(s);
    /* owners persist */
    CHECK(mn_store_open(db, 0, &s) == 0, "reopen");
    if (s) {
        CHECK(mn_store_owns(s, ids[1], "bob", &yes) == 0 && yes == 1, "bob still owns 1 after reopen");
        mn_store_close(s);
    }
}

/* A version-1 SQLite store (before owners) is migrated when opened for
 * writing and read as it is when opened read-only. */
static void test_sqlite_v1(void) {
    char db[512];
    path_in(db, sizeof db, "v1.db");
    mn_store *s = NULL;
    int64_t id;
    int ex;
    CHECK(mn_store_open(db, MN_STORE_CREATE, &s) == 0 && add_doc(s, 0, NULL, NULL, &id, &ex) == 0, "v1 store");
    mn_store_close(s);
    sqlite3 *raw = NULL;
    CHECK(sqlite3_open(db, &raw) == SQLITE_OK &&
              sqlite3_exec(raw, "DROP TABLE doc_owners; UPDATE meta SET value = '1' WHERE key = 'schema'", NULL, NULL,
                           NULL) == SQLITE_OK,
          "made a version-1 store");
    sqlite3_close(raw);
    int yes = -1;
    mn_store_doc *docs = NULL;
    int64_t n = 0;
    CHECK(mn_store_open(db, MN_STORE_READONLY, &s) == 0, "v1 opens read-only: %s", mn_last_error());
    if (s) {
        CHECK(mn_store_list(s, 0, &docs, &n) == 0 && n == 1, "v1 lists");
        free(docs);
        CHECK(mn_store_owns(s, id, "alice", &yes) == MN_EUNSUPPORTED && strstr(mn_last_error(), "open it for writing"),
              "v1 read-only has no owners: %s", mn_last_error());
        mn_store_close(s);
    }
    CHECK(mn_store_open(db, 0, &s) == 0, "v1 opens for writing");
    if (s) {
        char v[16] = "";
        CHECK(mn_store_meta_get(s, "schema", v, sizeof v) == 0 && !strcmp(v, "2"), "migrated to 2: %s", v);
        CHECK(mn_store_grant(s, id, "alice", NULL) == 0 && mn_store_owns(s, id, "alice", &yes) == 0 && yes,
              "owners after migration");
        mn_store_close(s);
    }
}

static void test_bad_files(void) {
    char p[512];
    path_in(p, sizeof p, "garbage.db");
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 4096; i++) fputc((i * 131) & 0xff, f);
    fclose(f);
    mn_store *s = NULL;
    int rc = mn_store_open_sqlite(p, MN_STORE_CREATE, &s);
    CHECK(rc == MN_EFORMAT && !s && strstr(mn_last_error(), "not a database"), "garbage file: %d %s", rc,
          mn_last_error());
    /* a real store whose pages get overwritten */
    path_in(p, sizeof p, "damaged.db");
    rc = mn_store_open_sqlite(p, MN_STORE_CREATE, &s);
    CHECK(rc == 0, "create");
    if (!rc) {
        int64_t id;
        int ex;
        for (int i = 0; i < 3; i++) add_doc(s, i, NULL, NULL, &id, &ex);
        mn_store_close(s);
    }
    /* fold the WAL into the main file first so the damage hits real pages */
    rc = mn_store_open_sqlite(p, 0, &s);
    mn_store_close(s);
    f = fopen(p, "r+b");
    if (f) {
        fseek(f, 0, SEEK_SET);
        fputs("this is no longer SQLite", f);
        fclose(f);
    }
    rc = mn_store_open_sqlite(p, 0, &s);
    CHECK(rc == MN_EFORMAT && strstr(mn_last_error(), "damaged.db"), "damaged header: %d %s", rc, mn_last_error());
    if (!rc) mn_store_close(s);
    /* a SQLite database of something else */
    path_in(p, sizeof p, "other.db");
    sqlite3 *db = NULL;
    if (sqlite3_open(p, &db) == SQLITE_OK) sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", 0, 0, 0);
    sqlite3_close(db);
    rc = mn_store_open_sqlite(p, MN_STORE_CREATE, &s);
    CHECK(rc == MN_EFORMAT && strstr(mn_last_error(), "not a mnemo store"), "foreign db: %d %s", rc, mn_last_error());
    if (!rc) mn_store_close(s);
}

/* Fused retrieval with the model's real embeddings: a question that shares
 * words and meaning with one document ranks it first. */
static void test_model_retrieval(void) {
    const char *mp = test_model_path();
    CHECK(mp != NULL, "the default model is missing (make model fetches it)");
    if (!mp || getenv("MN_SANITIZED")) {
        if (mp) TEST_SKIP("model retrieval under the sanitizers (runs in the normal build)");
        return;
    }
    mn_model *m;
    if (mn_model_load(mp, &m)) {
        CHECK(0, "model: %s", mn_last_error());
        return;
    }
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = MN_EMBED_CHUNK;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "ctx");
    char db[768];
    mn_store *s = NULL;
    CHECK(store_spec("model", db, sizeof db) == 0 && mn_store_open(db, MN_STORE_CREATE, &s) == 0, "create: %s",
          mn_last_error());
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    int32_t C = mn_model_n_embd(m);
    int64_t ids[3];
    for (int i = 0; i < 3 && s && c; i++) {
        int32_t t[256];
        int64_t nt = 0;
        mn_tokenize(tok, k_docs[i][1], strlen(k_docs[i][1]), 0, 0, t, 256, &nt);
        float *v = malloc(sizeof(float) * (size_t)C);
        int rc = mn_embed_tokens(c, t, (int32_t)nt, v);
        CHECK(rc == 0, "embed: %s", mn_last_error());
        double nn = 0;
        for (int j = 0; j < C; j++) nn += (double)v[j] * v[j];
        CHECK_NEAR(nn, 1.0, 1e-4, "unit norm");
        char sha[65];
        mn_sha256_hex(k_docs[i][1], strlen(k_docs[i][1]), sha);
        const char *ch[1] = {k_docs[i][1]};
        mn_store_new_doc d = {0};
        d.title = k_docs[i][0];
        d.sha256 = sha;
        d.n_tokens = nt;
        d.n_chunks = 1;
        d.chunk_text = ch;
        d.chunk_vec = v;
        d.dim = C;
        int ex;
        CHECK(mn_store_add(s, &d, &ids[i], &ex) == 0, "add: %s", mn_last_error());
        free(v);
    }
    if (s && c) {
        /* dense alone: a passage of a document finds it */
        const char *passage = "The dough is kneaded, left to rise, shaped into loaves";
        int32_t t[64];
        int64_t nt;
        mn_tokenize(tok, passage, strlen(passage), 0, 0, t, 64, &nt);
        float *q = malloc(sizeof(float) * (size_t)C);
        mn_embed_tokens(c, t, (int32_t)nt, q);
        mn_store_hit h[3];
        int nh = 0;
        CHECK(mn_store_search_dense(s, q, C, NULL, 3, h, &nh) == 0 && nh == 3 && h[0].doc_id == ids[1],
              "dense (model) picks bread: top %lld", nh ? (long long)h[0].doc_id : -1LL);
        free(q);
        mn_retrieval_hit r[3];
        int nr = 0;
        int rc = mn_retrieve(s, c, "Which pieces does each chess player have?", NULL, 3, r, &nr);
        CHECK(rc == 0 && nr >= 1 && r[0].doc_id == ids[2] && r[0].rank_bm25 == 1,
              "fused retrieval picks chess: %d n=%d top=%lld", rc, nr, nr ? (long long)r[0].doc_id : -1LL);
        rc = mn_retrieve(s, c, "zzz qqq", NULL, 2, r, &nr);
        CHECK(rc == 0 && nr == 2 && r[0].rank_bm25 == 0 && r[0].rank_dense == 1, "dense-only fallback: n=%d", nr);
    }
    /* fusion: lists that rank two documents in swapped order tie; the one each list rates closer to its
     * best wins, whatever the ids; a document both lists put first wins outright */
    const mn_store_hit bm[2] = {{7, 21.8}, {3, 3.6}}, dn[2] = {{3, 0.793}, {7, 0.761}}, dn2[2] = {{7, 0.8}, {3, 0.1}};
    mn_retrieval_hit fh[4];
    int nf = 0;
    CHECK(mn_retrieve_fuse(bm, 2, dn, 2, 4, fh, &nf) == 0 && nf == 2 && fh[0].doc_id == 7 && fh[1].doc_id == 3 &&
              fh[0].score == fh[1].score && fh[0].rank_bm25 == 1 && fh[0].rank_dense == 2,
          "a tie goes to the stronger scores: %lld then %lld", nf ? (long long)fh[0].doc_id : -1LL,
          nf > 1 ? (long long)fh[1].doc_id : -1LL);
    const mn_store_hit bm2[2] = {{3, 21.8}, {7, 3.6}};
    CHECK(mn_retrieve_fuse(bm2, 2, dn, 2, 1, fh, &nf) == 0 && nf == 1 && fh[0].doc_id == 3, "both lists first: %lld",
          (long long)fh[0].doc_id);
    CHECK(mn_retrieve_fuse(bm, 2, dn2, 2, 4, fh, &nf) == 0 && nf == 2 && fh[0].doc_id == 7 && fh[0].score > fh[1].score,
          "agreement fuses higher");
    mn_store_close(s);
    mn_context_free(c);
    mn_model_free(m);
}

typedef struct {
    const char *spec;
    int64_t id;
    int existed, rc;
} race_arg;

static void *race_add(void *p) {
    race_arg *a = p;
    mn_store *s = NULL;
    a->rc = mn_store_open(a->spec, 0, &s);
    if (!a->rc) a->rc = add_doc(s, 0, NULL, NULL, &a->id, &a->existed);
    mn_store_close(s);
    return NULL;
}

/* What only the PostgreSQL backend has: a server to reach, a schema version,
 * a memory directory recorded in the database, several writers at once. */
static void test_pg_only(void) {
    char db[768];
    mn_store *s = NULL;
    /* no directory for memory files: a clear refusal, nothing created */
    if (store_spec("nomem", db, sizeof db)) {
        CHECK(0, "fresh database");
        return;
    }
    unsetenv("MNEMO_MEM_DIR");
    int rc = mn_store_open(db, MN_STORE_CREATE, &s);
    CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "MNEMO_MEM_DIR"), "no memory directory: %d %s", rc,
          mn_last_error());
    setenv("MNEMO_MEM_DIR", "relative/dir", 1);
    rc = mn_store_open(db, MN_STORE_CREATE, &s);
    CHECK(rc == MN_EINVAL && strstr(mn_last_error(), "absolute"), "relative memory directory: %d %s", rc,
          mn_last_error());
    /* a database of something else */
    CHECK(store_spec("foreign", db, sizeof db) == 0 && test_pg_exec("foreign", "CREATE TABLE t(x int)") == 0,
          "foreign database");
    rc = mn_store_open(db, MN_STORE_CREATE, &s);
    CHECK(rc == MN_EFORMAT && strstr(mn_last_error(), "not a mnemo store"), "foreign database: %d %s", rc,
          mn_last_error());
    /* a newer schema than this mnemo reads */
    CHECK(store_spec("newer", db, sizeof db) == 0, "fresh database");
    rc = mn_store_open(db, MN_STORE_CREATE, &s);
    CHECK(rc == 0, "create: %s", mn_last_error());
    mn_store_close(s);
    s = NULL;
    CHECK(test_pg_exec("newer", "INSERT INTO mnemo_schema(version) VALUES (99)") == 0, "bump schema");
    rc = mn_store_open(db, 0, &s);
    CHECK(rc == MN_EUNSUPPORTED && strstr(mn_last_error(), "version 99"), "newer schema: %d %s", rc, mn_last_error());
    /* no server there: one message naming the database, no hang */
    char nowhere[512];
    snprintf(nowhere, sizeof nowhere, "host=%s/none port=5432 user=postgres dbname=x connect_timeout=5", g_dir);
    rc = mn_store_open(nowhere, 0, &s);
    CHECK(rc == MN_EUNAVAILABLE && strstr(mn_last_error(), "cannot connect"), "no server: unavailable, not broken: %d %s", rc,
          mn_last_error());
    /* the same text through four connections at once: one document, one id */
    CHECK(store_spec("race", db, sizeof db) == 0 && mn_store_open(db, MN_STORE_CREATE, &s) == 0, "create: %s",
          mn_last_error());
    mn_store_close(s);
    s = NULL;
    race_arg a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (race_arg){db, -1, -1, -1};
        pthread_create(&th[i], NULL, race_add, &a[i]);
    }
    int fresh = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].rc == 0 && a[i].id == a[0].id, "racing add %d: rc %d id %lld vs %lld", i, a[i].rc,
              (long long)a[i].id, (long long)a[0].id);
        fresh += a[i].existed == 0;
    }
    CHECK(fresh == 1, "%d of 4 racing adds created the document", fresh);
    mn_store_doc *docs = NULL;
    int64_t n = 0;
    CHECK(mn_store_open(db, 0, &s) == 0 && mn_store_list(s, 0, &docs, &n) == 0 && n == 1, "one document: %lld",
          (long long)n);
    free(docs);
    char rep[512];
    CHECK(s && mn_store_check(s, rep, sizeof rep) == 0 && strstr(rep, "ok"), "check: %s", rep);
    mn_store_close(s);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mnemo_test_store_%d", (int)getpid());
    mkdir(g_dir, 0755);
    char sha[65];
    mn_sha256_hex("abc", 3, sha);
    CHECK(!strcmp(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256(abc) %s", sha);
    CHECK(mn_secret_equal("key1", 4, "key1", 4) && !mn_secret_equal("key1", 4, "key2", 4) &&
              !mn_secret_equal("key1", 4, "key10", 5),
          "secret compare");
    test_basic();
    test_owners();
    test_sqlite_v1();
    test_bad_files();
    test_model_retrieval();
    /* the same again on PostgreSQL, plus what only it has */
    int pg = test_pg_start();
    CHECK(pg == 0, "no throw-away PostgreSQL cluster (scripts/pg_cluster.sh; make setup installs postgresql)");
    if (pg == 0) {
        g_pg = 1;
        test_basic();
        test_owners();
        test_model_retrieval();
        test_pg_only();
    }
    test_pg_stop();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_MAIN_END();
}
