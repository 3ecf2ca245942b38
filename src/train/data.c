/* data.c - training text datasets (see data.h for the cache format and split).
 *
 * Building tokenises the documents on all cores (one file per task; the
 * tokenizer is read-only after load), then concatenates them in path order
 * into one token array; windows are (document, offset) pairs into it.
 */
#include "train/data.h"

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/threadpool.h"

#define CACHE_MAGIC "MNTOKC01"
/* bump when mn_text_clean or the tokenisation of documents changes */
#define CLEAN_VERSION 1u
#define HDR_BYTES 32

struct mn_dataset {
    int n_docs;
    char **path;      /* [n_docs] */
    int64_t *off;     /* [n_docs + 1] token offsets into tok */
    int64_t *n_train; /* [n_docs] training tokens of each document */
    int32_t *tok;
    int64_t n_train_tok, n_val_tok;
    char *cache_path;
    int from_cache;
};

/* --------------------------------------------------------------- cleaning */
/* Whether the line at p (len bytes left) is "***" + spaces + word, case-insensitively. */
static int marker_line(const char *p, size_t len, const char *word) {
    if (len < 3 || memcmp(p, "***", 3)) return 0;
    size_t i = 3;
    while (i < len && p[i] == ' ') i++;
    size_t wl = strlen(word);
    if (len - i < wl) return 0;
    for (size_t k = 0; k < wl; k++) {
        char c = p[i + k];
        if (c >= 'a' && c <= 'z') c = (char)(c - 32);
        if (c != word[k]) return 0;
    }
    return 1;
}

size_t mn_text_clean(char *text, size_t len) {
    size_t begin = 0, end = len;
    /* first START line: the body begins after its newline */
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t next = nl ? (size_t)(nl - text) + 1 : len;
        if (marker_line(text + i, len - i, "START OF")) {
            begin = next;
            break;
        }
        i = next;
    }
    for (size_t i = begin; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t next = nl ? (size_t)(nl - text) + 1 : len;
        if (marker_line(text + i, len - i, "END OF")) {
            end = i;
            break;
        }
        i = next;
    }
    size_t o = 0;
    for (size_t i = begin; i < end; i++) {
        if (text[i] == '\r' && i + 1 < end && text[i + 1] == '\n') continue;
        text[o++] = text[i];
    }
    return o;
}

/* ------------------------------------------------------------------ files */
static int read_file(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mn_error(errno == ENOENT ? MN_ENOTFOUND : MN_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0) {
        fclose(f);
        return mn_error(MN_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return mn_error(MN_ENOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(b);
        return mn_error(MN_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    *buf = b;
    *len = n;
    return MN_OK;
}

static int mkdir_p(const char *dir) {
    char *p = strdup(dir);
    if (!p) return mn_error(MN_ENOMEM, "out of memory");
    int rc = MN_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST) {
            rc = mn_error(MN_EIO, "cannot create cache directory %s: %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (!c) break;
    }
    struct stat st;
    if (!rc && (stat(dir, &st) || !S_ISDIR(st.st_mode)))
        rc = mn_error(MN_EIO, "cache directory %s is not a directory", dir);
    free(p);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Regular files matching pattern, sorted by strcmp; also hashes their identity into *key. */
static int list_files(const char *pattern, char ***paths, int *n, uint64_t *key) {
    *paths = NULL;
    *n = 0;
    glob_t g;
    memset(&g, 0, sizeof g);
    int grc = glob(pattern, GLOB_NOSORT, NULL, &g);
    if (grc == GLOB_NOMATCH) {
        globfree(&g);
        return mn_error(MN_ENOTFOUND, "no file matches '%s'", pattern);
    }
    if (grc) {
        globfree(&g);
        return mn_error(grc == GLOB_NOSPACE ? MN_ENOMEM : MN_EIO, "cannot expand '%s'", pattern);
    }
    char **v = calloc(g.gl_pathc ? g.gl_pathc : 1, sizeof *v);
    int k = 0, rc = MN_OK;
    if (!v) rc = mn_error(MN_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < g.gl_pathc; i++) {
        struct stat st;
        if (stat(g.gl_pathv[i], &st) || !S_ISREG(st.st_mode)) continue;
        if (k >= INT32_MAX / 2) {
            rc = mn_error(MN_ERANGE, "'%s' matches too many files", pattern);
            break;
        }
        if (!(v[k++] = strdup(g.gl_pathv[i]))) rc = mn_error(MN_ENOMEM, "out of memory");
    }
    globfree(&g);
    if (!rc && k == 0) rc = mn_error(MN_ENOTFOUND, "no regular file matches '%s'", pattern);
    if (rc) {
        for (int i = 0; i < k; i++) free(v[i]);
        free(v);
        return rc;
    }
    qsort(v, (size_t)k, sizeof *v, cmp_str);
    uint64_t h = *key;
    for (int i = 0; i < k; i++) {
        struct stat st;
        if (stat(v[i], &st)) {
            rc = mn_error(MN_EIO, "%s: cannot stat: %s", v[i], strerror(errno));
            for (int j = 0; j < k; j++) free(v[j]);
            free(v);
            return rc;
        }
        int64_t id[4] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec, i};
        h = mn_hash64(v[i], strlen(v[i]) + 1, h);
        h = mn_hash64(id, sizeof id, h);
    }
    *key = h;
    *paths = v;
    *n = k;
    return MN_OK;
}

/* -------------------------------------------------------------- the split */
static int finish(mn_dataset *d, double val_frac) {
    d->n_train = malloc(sizeof(int64_t) * (size_t)(d->n_docs ? d->n_docs : 1));
    if (!d->n_train) return mn_error(MN_ENOMEM, "out of memory");
    d->n_train_tok = d->n_val_tok = 0;
    for (int i = 0; i < d->n_docs; i++) {
        int64_t n = d->off[i + 1] - d->off[i];
        int64_t nv = (int64_t)floor(val_frac * (double)n);
        if (nv > n) nv = n;
        d->n_train[i] = n - nv;
        d->n_train_tok += n - nv;
        d->n_val_tok += nv;
    }
    return MN_OK;
}

/* ------------------------------------------------------------------ cache */
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads a cache into d (off, tok); 1 when valid, 0 when absent or invalid
 * (the caller rebuilds), <0 only for out of memory. */
static int cache_read(mn_dataset *d, uint64_t key, uint32_t n_vocab) {
    char *buf;
    size_t len;
    if (read_file(d->cache_path, &buf, &len)) return 0; /* absent or unreadable: rebuild */
    const unsigned char *b = (const unsigned char *)buf;
    int ok = len >= HDR_BYTES + 8 && !memcmp(b, CACHE_MAGIC, 8) && get64(b + 8) == key &&
             get32(b + 16) == (uint32_t)d->n_docs && get32(b + 20) == n_vocab;
    uint64_t nt = ok ? get64(b + 24) : 0;
    size_t want = HDR_BYTES + 8 * (size_t)d->n_docs + 8;
    ok = ok && nt <= (len - want) / 4 && len == want + 4 * nt;
    ok = ok && mn_hash64(b, len - 8, 0) == get64(b + len - 8);
    int rc = 0;
    if (ok) {
        d->off = malloc(sizeof(int64_t) * (size_t)(d->n_docs + 1));
        d->tok = malloc(4 * (size_t)(nt ? nt : 1));
        if (!d->off || !d->tok) {
            rc = mn_error(MN_ENOMEM, "out of memory (%" PRIu64 " cached tokens)", nt);
            ok = 0;
        }
    }
    if (ok) {
        uint64_t s = 0;
        d->off[0] = 0;
        for (int i = 0; i < d->n_docs && ok; i++) {
            uint64_t n = get64(b + HDR_BYTES + 8 * (size_t)i);
            ok = n <= nt - s;
            s += ok ? n : 0;
            d->off[i + 1] = (int64_t)s;
        }
        ok = ok && s == nt;
        const unsigned char *t = b + HDR_BYTES + 8 * (size_t)d->n_docs;
        for (uint64_t i = 0; ok && i < nt; i++) {
            uint32_t v = get32(t + 4 * i);
            ok = v < n_vocab;
            d->tok[i] = (int32_t)v;
        }
    }
    if (!ok) {
        free(d->off), free(d->tok);
        d->off = NULL, d->tok = NULL;
    }
    free(buf);
    return rc ? rc : ok;
}

static int cache_write(const mn_dataset *d, uint64_t key, uint32_t n_vocab) {
    int64_t nt = d->off[d->n_docs];
    size_t len = HDR_BYTES + 8 * (size_t)d->n_docs + 4 * (size_t)nt + 8;
    unsigned char *b = malloc(len);
    if (!b) return mn_error(MN_ENOMEM, "out of memory (%zu-byte token cache)", len);
    memcpy(b, CACHE_MAGIC, 8);
    put64(b + 8, key);
    put32(b + 16, (uint32_t)d->n_docs);
    put32(b + 20, n_vocab);
    put64(b + 24, (uint64_t)nt);
    for (int i = 0; i < d->n_docs; i++) put64(b + HDR_BYTES + 8 * (size_t)i, (uint64_t)(d->off[i + 1] - d->off[i]));
    unsigned char *t = b + HDR_BYTES + 8 * (size_t)d->n_docs;
    for (int64_t i = 0; i < nt; i++) put32(t + 4 * i, (uint32_t)d->tok[i]);
    put64(b + len - 8, mn_hash64(b, len - 8, 0));
    FILE *f;
    int fd;
    char *tmp;
    int rc = mn_file_create_temp(d->cache_path, &f, &fd, &tmp);
    if (!rc) {
        errno = 0;
        int ok = fwrite(b, 1, len, f) == len;
        rc = mn_file_commit(f, fd, tmp, d->cache_path, ok, ok ? 0 : errno, "writing the token cache");
    }
    free(b);
    return rc;
}

/* --------------------------------------------------------------- building */
typedef struct {
    const mn_tokenizer *tok;
    char **path;
    int n;
    int32_t **out;  /* [n] tokens of each document */
    int64_t *len;   /* [n] */
    int *rc;        /* [n] */
    char (*err)[256];
    atomic_int next;
} build_job;

static int tokenize_doc(const mn_tokenizer *tk, const char *path, int32_t **out, int64_t *n_out) {
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len);
    if (rc) return rc;
    len = mn_text_clean(text, len);
    int64_t cap = (int64_t)len + 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) rc = mn_error(MN_ENOMEM, "%s: out of memory", path);
    if (!rc) rc = mn_tokenize(tk, text, len, 0, 0, ids, cap, &n);
    if (rc == MN_ERANGE) { /* more tokens than bytes + 16 (possible with some vocabularies): once more */
        int32_t *bigger = realloc(ids, sizeof(int32_t) * (size_t)(n ? n : 1));
        if (!bigger) {
            rc = mn_error(MN_ENOMEM, "%s: out of memory", path);
        } else {
            ids = bigger;
            cap = n;
            rc = mn_tokenize(tk, text, len, 0, 0, ids, cap, &n);
        }
    }
    free(text);
    if (rc) {
        free(ids);
        return mn_error_prefix(rc, path);
    }
    *out = ids;
    *n_out = n;
    return MN_OK;
}

static void *build_worker(void *arg) {
    build_job *j = arg;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) break;
        j->rc[i] = tokenize_doc(j->tok, j->path[i], &j->out[i], &j->len[i]);
        if (j->rc[i]) snprintf(j->err[i], sizeof j->err[i], "%s", mn_last_error());
    }
    return NULL;
}

static int build(mn_dataset *d, const mn_model *m) {
    int n = d->n_docs, rc = MN_OK;
    build_job j;
    memset(&j, 0, sizeof j);
    j.tok = mn_model_tokenizer(m);
    j.path = d->path;
    j.n = n;
    j.out = calloc((size_t)n, sizeof *j.out);
    j.len = calloc((size_t)n, sizeof *j.len);
    j.rc = calloc((size_t)n, sizeof *j.rc);
    j.err = calloc((size_t)n, sizeof *j.err);
    atomic_init(&j.next, 0);
    if (!j.out || !j.len || !j.rc || !j.err) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto done;
    }
    int nth = mn_cpu_count();
    if (nth > n) nth = n;
    if (nth > 64) nth = 64;
    pthread_t th[64];
    int started = 0;
    for (int t = 1; t < nth; t++, started++)
        if (pthread_create(&th[t], NULL, build_worker, &j)) break;
    build_worker(&j);
    for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (j.rc[i]) {
            rc = mn_error(j.rc[i], "%s", j.err[i]);
            goto done;
        }
        total += j.len[i];
    }
    d->off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    d->tok = malloc(sizeof(int32_t) * (size_t)(total ? total : 1));
    if (!d->off || !d->tok) {
        rc = mn_error(MN_ENOMEM, "out of memory (%" PRId64 " tokens)", total);
        goto done;
    }
    d->off[0] = 0;
    for (int i = 0; i < n; i++) {
        memcpy(d->tok + d->off[i], j.out[i], sizeof(int32_t) * (size_t)j.len[i]);
        d->off[i + 1] = d->off[i] + j.len[i];
    }
done:
    for (int i = 0; j.out && i < n; i++) free(j.out[i]);
    free(j.out), free(j.len), free(j.rc), free(j.err);
    return rc;
}

/* ------------------------------------------------------------------- open */
int mn_dataset_open(const mn_model *m, const char *pattern, const char *cache_dir, double val_frac, mn_dataset **out) {
    if (!out) return mn_error(MN_EINVAL, "dataset: no output");
    *out = NULL;
    if (!m || !pattern || !cache_dir || !*cache_dir) return mn_error(MN_EINVAL, "dataset: no model, glob or cache dir");
    if (!(val_frac >= 0.0 && val_frac < 1.0))
        return mn_error(MN_EINVAL, "dataset: validation fraction %g must be in [0, 1)", val_frac);
    mn_dataset *d = calloc(1, sizeof *d);
    if (!d) return mn_error(MN_ENOMEM, "out of memory");
    uint32_t n_vocab = (uint32_t)mn_tokenizer_n_vocab(mn_model_tokenizer(m));
    uint64_t key = mn_hash64(CACHE_MAGIC, 8, mn_model_hash(m) ^ ((uint64_t)CLEAN_VERSION << 56));
    int rc = list_files(pattern, &d->path, &d->n_docs, &key);
    if (rc) goto fail;
    if ((rc = mkdir_p(cache_dir))) goto fail;
    size_t cl = strlen(cache_dir) + 40;
    if (!(d->cache_path = malloc(cl))) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(d->cache_path, cl, "%s/tokens-%016" PRIx64 ".bin", cache_dir, key);
    rc = cache_read(d, key, n_vocab);
    if (rc < 0) goto fail;
    d->from_cache = rc;
    if (!d->from_cache) {
        if ((rc = build(d, m)) || (rc = cache_write(d, key, n_vocab))) goto fail;
    }
    if ((rc = finish(d, val_frac))) goto fail;
    *out = d;
    return MN_OK;
fail:
    mn_dataset_free(d);
    return rc;
}

void mn_dataset_free(mn_dataset *d) {
    if (!d) return;
    for (int i = 0; d->path && i < d->n_docs; i++) free(d->path[i]);
    free(d->path);
    free(d->off);
    free(d->n_train);
    free(d->tok);
    free(d->cache_path);
    free(d);
}

int mn_dataset_n_docs(const mn_dataset *d) { return d->n_docs; }
int64_t mn_dataset_n_train_tokens(const mn_dataset *d) { return d->n_train_tok; }
int64_t mn_dataset_n_val_tokens(const mn_dataset *d) { return d->n_val_tok; }
const char *mn_dataset_cache_path(const mn_dataset *d) { return d->cache_path; }
int mn_dataset_from_cache(const mn_dataset *d) { return d->from_cache; }

const int32_t *mn_dataset_doc(const mn_dataset *d, int i, int64_t *n, int64_t *n_train) {
    if (!d || i < 0 || i >= d->n_docs) return NULL;
    if (n) *n = d->off[i + 1] - d->off[i];
    if (n_train) *n_train = d->n_train[i];
    return d->tok + d->off[i];
}

const char *mn_dataset_doc_path(const mn_dataset *d, int i) {
    return d && i >= 0 && i < d->n_docs ? d->path[i] : NULL;
}

/* ---------------------------------------------------------------- windows */
int mn_dataset_sample(const mn_dataset *d, mn_rng *rng, int32_t n, int32_t *out) {
    if (!d || !rng || !out || n < 1) return mn_error(MN_EINVAL, "dataset sample: bad arguments (n %d)", (int)n);
    /* windows of doc i: n_train[i] - n + 1 starting offsets; one uniform draw over all of them */
    uint64_t total = 0;
    for (int i = 0; i < d->n_docs; i++)
        if (d->n_train[i] >= n) total += (uint64_t)(d->n_train[i] - n + 1);
    if (total == 0)
        return mn_error(MN_ERANGE, "dataset: no document has %d training tokens (%d documents, %" PRId64
                                   " training tokens in all)",
                        (int)n, d->n_docs, d->n_train_tok);
    uint64_t r = mn_rng_below(rng, total);
    for (int i = 0; i < d->n_docs; i++) {
        if (d->n_train[i] < n) continue;
        uint64_t w = (uint64_t)(d->n_train[i] - n + 1);
        if (r < w) {
            memcpy(out, d->tok + d->off[i] + (int64_t)r, sizeof(int32_t) * (size_t)n);
            return MN_OK;
        }
        r -= w;
    }
    return mn_error(MN_EINVAL, "dataset sample: internal window count mismatch"); /* not reached */
}

int64_t mn_dataset_n_val_windows(const mn_dataset *d, int32_t n) {
    if (!d || n < 1) return 0;
    int64_t k = 0;
    for (int i = 0; i < d->n_docs; i++) k += (d->off[i + 1] - d->off[i] - d->n_train[i]) / n;
    return k;
}

int mn_dataset_val_window(const mn_dataset *d, int64_t idx, int32_t n, int32_t *out) {
    if (!d || !out || n < 1) return mn_error(MN_EINVAL, "dataset val window: bad arguments (n %d)", (int)n);
    int64_t k = idx;
    if (k >= 0)
        for (int i = 0; i < d->n_docs; i++) {
            int64_t nw = (d->off[i + 1] - d->off[i] - d->n_train[i]) / n;
            if (k < nw) {
                memcpy(out, d->tok + d->off[i] + d->n_train[i] + k * n, sizeof(int32_t) * (size_t)n);
                return MN_OK;
            }
            k -= nw;
        }
    return mn_error(MN_ERANGE, "dataset: validation window %" PRId64 " out of range (%" PRId64 " windows of %d)", idx,
                    mn_dataset_n_val_windows(d, n), (int)n);
}
