/* store.c - the backend-independent half of the document store (store.h):
 * dispatch through the operations table, plus the memory-file housekeeping
 * that works the same for every backend (garbage collection, verification). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
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

int mn_store_open(const char *spec, int flags, mn_store **out) {
    if (mn_store_is_pg(spec)) return mn_store_open_pg(spec, flags, out);
    return mn_store_open_sqlite(spec, flags, out);
}

void mn_store_close(mn_store *s) {
    if (s) s->ops->close(s);
}

const char *mn_store_mem_dir(mn_store *s) { return s->ops->mem_dir(s); }
const char *mn_store_backend(mn_store *s) { return s->ops->name; }
int64_t mn_store_reconnects(mn_store *s) { return s->ops->reconnects ? s->ops->reconnects(s) : 0; }
int mn_store_schema_version(mn_store *s, int *version) { return s->ops->schema_version(s, version); }
int mn_store_find_sha(mn_store *s, const char *sha256, int64_t *id) { return s->ops->find_sha(s, sha256, id); }

int mn_store_doc_parts(mn_store *s, const mn_store_doc *d, mn_store_mem_parts *p) {
    p->slots = p->raw = p->exact = -1;
    p->exact_kv = 0;
    p->cells = d->n_slots;
    if (d->n_slots < 0 || !d->mem_file[0]) return mn_error(MN_ENOTFOUND, "document %lld has no memory", (long long)d->id);
    char path[MN_STORE_PATH_CAP + MN_STORE_NAME_CAP + 2];
    snprintf(path, sizeof path, "%s/%s", mn_store_mem_dir(s), d->mem_file);
    mn_memfile_info in;
    int rc = mn_memfile_read_info(path, &in);
    if (rc) return rc;
    p->slots = in.n_slots, p->raw = in.n_raw, p->exact = in.n_exact;
    p->cells = (int64_t)in.n_slots + in.n_raw;
    p->exact_kv = (in.flags & MN_MEMFILE_EXACT_KV) != 0;
    return MN_OK;
}
int mn_store_add(mn_store *s, const mn_store_new_doc *d, int64_t *id, int *existed) {
    return s->ops->add(s, d, id, existed);
}
int mn_store_get(mn_store *s, int64_t id, uint64_t adapter_hash, mn_store_doc *out) {
    return s->ops->get(s, id, adapter_hash, out);
}
int mn_store_list(mn_store *s, uint64_t adapter_hash, mn_store_doc **out, int64_t *n) {
    return s->ops->list(s, adapter_hash, NULL, out, n);
}
int mn_store_list_owned(mn_store *s, uint64_t adapter_hash, const char *owner, mn_store_doc **out, int64_t *n) {
    *out = NULL;
    *n = 0;
    if (owner && !mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    return s->ops->list(s, adapter_hash, owner, out, n);
}
int mn_store_remove(mn_store *s, int64_t id, char *mem_files, size_t cap) {
    return s->ops->remove(s, id, mem_files, cap);
}
int mn_store_search_bm25(mn_store *s, const char *query, const char *owner, int k, mn_store_hit *hits, int *n) {
    *n = 0;
    if (owner && !mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    return s->ops->search_bm25(s, query, owner, k, hits, n);
}
int mn_store_search_dense(mn_store *s, const float *q, int32_t dim, const char *owner, int k, mn_store_hit *hits,
                          int *n) {
    *n = 0;
    if (owner && !mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    return s->ops->search_dense(s, q, dim, owner, k, hits, n);
}
int mn_store_grant(mn_store *s, int64_t id, const char *owner, int *added) {
    int a = 0;
    if (added) *added = 0;
    if (!mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    int rc = s->ops->grant(s, id, owner, &a);
    if (!rc && added) *added = a;
    return rc;
}
int mn_store_owns(mn_store *s, int64_t id, const char *owner, int *yes) {
    *yes = 0;
    if (!mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    return s->ops->owns(s, id, owner, yes);
}
int mn_store_disown(mn_store *s, int64_t id, const char *owner, int *removed, char *mem_files, size_t cap) {
    int r = 0;
    if (removed) *removed = 0;
    if (mem_files && cap) mem_files[0] = 0;
    if (!mn_store_valid_owner(owner)) return mn_error(MN_EINVAL, "store: malformed owner name");
    int rc = s->ops->disown(s, id, owner, &r, mem_files, cap);
    if (!rc && removed) *removed = r;
    return rc;
}
int mn_store_valid_owner(const char *name) {
    if (!name) return 0;
    size_t n = 0;
    for (; name[n]; n++) {
        const char c = name[n];
        if (n >= MN_STORE_OWNER_CAP - 1) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return n > 0;
}
int mn_store_chunk_text(mn_store *s, int64_t doc_id, char **text, size_t *len) {
    return s->ops->chunk_text(s, doc_id, text, len);
}
int mn_store_group_set_adapter(mn_store *s, const char *group, const char *path, const char *sha256) {
    return s->ops->group_set_adapter(s, group, path, sha256);
}
int mn_store_group_get(mn_store *s, const char *group, mn_store_group *out) { return s->ops->group_get(s, group, out); }
int mn_store_groups(mn_store *s, mn_store_group **out, int64_t *n) { return s->ops->groups(s, out, n); }
int mn_store_meta_get(mn_store *s, const char *key, char *val, size_t cap) { return s->ops->meta_get(s, key, val, cap); }
int mn_store_meta_set(mn_store *s, const char *key, const char *val) { return s->ops->meta_set(s, key, val); }
int mn_store_mem_files(mn_store *s, char ***names, uint64_t **checksums, int64_t *n) {
    return s->ops->mem_files(s, names, checksums, n);
}
int mn_store_check(mn_store *s, char *report, size_t cap) { return s->ops->check(s, report, cap); }

static void free_names(char **names, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Whether a file name is one the store makes: "<sha256>-<adapter hash>-<8 hex>.mem"
 * (ingest.c), or the temporary file an interrupted write of one leaves
 * ("<that>.tmp.XXXXXX", fileio.c). A memory directory may hold other files (a
 * user's, or another store's by another naming): gc leaves them alone. */
static int store_made(const char *name) {
    static const int runs[3] = {64, 16, 8};
    const char *p = name;
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < runs[r]; i++, p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
        if (r < 2 && *p++ != '-') return 0;
    }
    if (strncmp(p, ".mem", 4)) return 0;
    p += 4;
    if (!*p) return 1;
    return !strncmp(p, ".tmp.", 5) && strlen(p + 5) == 6;
}

int mn_store_record_adapter(mn_store *s, const char *path, uint64_t hash) {
    char abs[PATH_MAX], h[32];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)hash);
    int rc = mn_store_meta_set(s, "adapter_path", realpath(path, abs) ? abs : path);
    return rc ? rc : mn_store_meta_set(s, "adapter_hash", h);
}

uint64_t mn_store_recorded_adapter_hash(mn_store *s) {
    char h[64];
    return mn_store_meta_get(s, "adapter_hash", h, sizeof h) == MN_OK ? strtoull(h, NULL, 16) : 0;
}

/* The store's identity (meta "store_id", 32 hex digits, made on first need)
 * written in its memory directory (MN_STORE_DIR_MARKER) the first time gc
 * runs there: a directory two stores share (two PostgreSQL databases given
 * the same MNEMO_MEM_DIR) holds files each store sees as orphans, and gc
 * must not delete the other store's memories. A marker naming another store
 * stops gc with an error that says so. */
static int claim_mem_dir(mn_store *s) {
    char id[64] = "";
    int rc = mn_store_meta_get(s, "store_id", id, sizeof id);
    if (rc == MN_ENOTFOUND) {
        uint8_t r[16];
        FILE *u = fopen("/dev/urandom", "rb");
        const int ok = u && fread(r, 1, sizeof r, u) == sizeof r;
        if (u) fclose(u);
        if (!ok) return mn_error(MN_EIO, "store: cannot read /dev/urandom for the store's id");
        for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", r[i]);
        if ((rc = mn_store_meta_set(s, "store_id", id))) return rc;
        rc = mn_store_meta_get(s, "store_id", id, sizeof id); /* another writer may have set it first */
    }
    if (rc) return rc;
    char path[MN_STORE_PATH_CAP + 32], got[64] = "";
    snprintf(path, sizeof path, "%s/%s", mn_store_mem_dir(s), MN_STORE_DIR_MARKER);
    FILE *f = fopen(path, "r");
    if (f) {
        const size_t n = fread(got, 1, sizeof got - 1, f);
        fclose(f);
        got[n] = 0;
        got[strcspn(got, "\r\n")] = 0;
        if (strcmp(got, id))
            return mn_error(MN_EINVAL,
                            "memory directory %s belongs to another store (%s names store %s, this is %s): gc would "
                            "delete that store's memories; give each store its own directory (--mem-dir)",
                            mn_store_mem_dir(s), MN_STORE_DIR_MARKER, got, id);
        return MN_OK;
    }
    if (errno != ENOENT) return mn_error(MN_EIO, "cannot read %s: %s", path, strerror(errno));
    f = fopen(path, "w");
    if (!f) return mn_error(MN_EIO, "cannot write %s: %s", path, strerror(errno));
    const int bad = fprintf(f, "%s\n", id) < 0;
    if (fclose(f) || bad) return mn_error(MN_EIO, "cannot write %s: %s", path, strerror(errno));
    return MN_OK;
}

int mn_store_gc(mn_store *s, double min_age_s, int *n_removed) {
    if (n_removed) *n_removed = 0;
    int rc = claim_mem_dir(s);
    if (rc) return rc;
    char **names;
    int64_t n;
    rc = mn_store_mem_files(s, &names, NULL, &n);
    if (rc) return rc;
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    const char *dir = mn_store_mem_dir(s);
    DIR *d = opendir(dir);
    if (!d) {
        free_names(names, n);
        return errno == ENOENT ? 0 : mn_error(MN_EIO, "cannot list %s: %s", dir, strerror(errno));
    }
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !store_made(e->d_name)) continue;
        const char *key = e->d_name;
        if (bsearch(&key, names, (size_t)n, sizeof *names, cmp_str)) continue;
        char p[MN_STORE_PATH_CAP];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) || !S_ISREG(st.st_mode)) continue;
        if (difftime(now, st.st_mtime) < min_age_s) continue;
        if (unlink(p) == 0 && n_removed) (*n_removed)++;
    }
    closedir(d);
    free_names(names, n);
    return 0;
}

int mn_store_verify_files(mn_store *s, char *report, size_t cap) {
    if (cap) report[0] = 0;
    size_t used = 0;
    int bad = 0;
    char **names;
    uint64_t *sums;
    int64_t n;
    int rc = mn_store_mem_files(s, &names, &sums, &n);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) {
        char p[MN_STORE_PATH_CAP], why[512] = "";
        snprintf(p, sizeof p, "%s/%s", mn_store_mem_dir(s), names[i]);
        mn_memfile *mf = NULL;
        /* open validates the header and the payload against its checksum;
         * the store's record then ties the file to the commit that made it */
        if (mn_memfile_open(p, &mf)) snprintf(why, sizeof why, "%s", mn_last_error());
        else if (mn_memfile_get_info(mf)->checksum != sums[i])
            snprintf(why, sizeof why, "checksum %016llx, the store recorded %016llx",
                     (unsigned long long)mn_memfile_get_info(mf)->checksum, (unsigned long long)sums[i]);
        mn_memfile_free(mf);
        if (why[0]) {
            bad++;
            if (used + 1 < cap) used += (size_t)snprintf(report + used, cap - used, "%s: %s\n", names[i], why);
            if (used >= cap) used = cap ? cap - 1 : 0;
        }
    }
    free_names(names, n);
    free(sums);
    return bad ? mn_error(MN_EFORMAT, "%d memory file(s) missing or damaged", bad) : 0;
}

/* ------------------------------------------------ shared by the backends */

void mn_store_copy_text(const char *t, char *dst, size_t cap) {
    size_t n = strlen(t);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)t[n] & 0xC0) == 0x80) n--;
    }
    if (n) memcpy(dst, t, n);
    dst[n] = 0;
}

void mn_store_hex64(uint64_t v, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

uint64_t mn_store_parse_hex64(const char *s) { return s ? strtoull(s, NULL, 16) : 0; }

int mn_store_valid_group(const char *g) {
    size_t n = strlen(g);
    if (n == 0 || n >= MN_STORE_GROUP_CAP) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = g[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return 0;
    }
    return 1;
}

static int valid_file_name(const char *f) {
    size_t n = strlen(f);
    if (n == 0 || n >= MN_STORE_NAME_CAP || f[0] == '.') return 0;
    return strchr(f, '/') == NULL;
}

int mn_store_check_new_doc(const mn_store_new_doc *d) {
    const char *group = d->group ? d->group : MN_STORE_DEFAULT_GROUP;
    if (!d->sha256 || strlen(d->sha256) != 64) return mn_error(MN_EINVAL, "store add: a 64-hex-digit sha256 is needed");
    if (!mn_store_valid_group(group))
        return mn_error(MN_EINVAL, "group name '%s': use 1..%d letters, digits, '.', '_' or '-'", group,
                        MN_STORE_GROUP_CAP - 1);
    if (d->mem_file && !valid_file_name(d->mem_file))
        return mn_error(MN_EINVAL, "memory file name '%s' must be a plain name inside the store", d->mem_file);
    if (d->n_chunks < 0 || (d->n_chunks > 0 && !d->chunk_text) || (d->chunk_vec && d->dim <= 0))
        return mn_error(MN_EINVAL, "store add: bad chunk arguments");
    return 0;
}

void mn_store_hit_insert(mn_store_hit *hits, int *n, int k, int64_t doc, double score) {
    for (int i = 0; i < *n; i++)
        if (hits[i].doc_id == doc) {
            if (score <= hits[i].score) return;
            memmove(hits + i, hits + i + 1, sizeof *hits * (size_t)(*n - i - 1));
            (*n)--;
            break;
        }
    int pos = *n;
    while (pos > 0 && hits[pos - 1].score < score) pos--;
    if (pos >= k) return;
    int last = *n < k ? *n : k - 1;
    memmove(hits + pos + 1, hits + pos, sizeof *hits * (size_t)(last - pos));
    hits[pos].doc_id = doc;
    hits[pos].score = score;
    if (*n < k) (*n)++;
}

char *mn_store_query_terms(const char *q, const char *sep, char quote) {
    const size_t n = strlen(q), sl = strlen(sep);
    char *out = malloc(n * (sl + 3) + 16);
    if (!out) return NULL;
    size_t o = 0;
    int terms = 0;
    for (size_t i = 0; i < n && terms < 64;) {
        if (!mn_store_word_byte((unsigned char)q[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && mn_store_word_byte((unsigned char)q[j])) j++;
        if (terms) memcpy(out + o, sep, sl), o += sl;
        out[o++] = quote;
        memcpy(out + o, q + i, j - i);
        o += j - i;
        out[o++] = quote;
        terms++;
        i = j;
    }
    out[o] = 0;
    return out;
}
