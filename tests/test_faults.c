/* test_faults.c - every durable writer fails cleanly when the system fails it.
 *
 * The test defines fwrite, fflush, fsync, fclose, rename, mkstemp, pwrite64
 * and fdatasync itself, so
 * the library linked into it calls these wrappers, which forward to the C
 * library's (dlsym RTLD_NEXT) unless armed: armed with (F, k), the k-th call of
 * F from then on fails with ENOSPC (EIO for fsync and fclose; fclose still
 * closes). For each writer - a memory file (v1 and v2), an adapter (f32, f16),
 * a training checkpoint, a document memory through docmem - and each F, k
 * runs from 1 until the write no longer reaches a k-th call. For every k that
 * hits: the call returns an error whose message names the file, the file holds
 * exactly its previous contents, and no temporary file is left beside it. The
 * one tolerated success is a failing fsync of the directory after the rename
 * (best effort by design): then the file must hold the complete new contents.
 * A store ingest (memory file, then one SQLite transaction) is run the same
 * way: every failure leaves the store with the documents it had, passing its
 * integrity check, every recorded memory file verifying, and the error says
 * what failed; a memory file written before the failed commit is garbage
 * that mn_store_gc removes.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory/adapter.h"
#include "memory/memfile.h"
#include "store/ingest.h"
#include "store/store.h"
#include "test.h"
#include "tiny_llama.h"
#include "train/checkpoint.h"
#include "train/optim.h"

/* pwrite64 and fdatasync are SQLite's writes and syncs (stdio never calls them) */
enum { F_FWRITE, F_FFLUSH, F_FSYNC, F_FCLOSE, F_RENAME, F_MKSTEMP, F_PWRITE, F_FDATASYNC, F_N };
static const char *const k_fn[F_N] = {"fwrite", "fflush", "fsync", "fclose", "rename", "mkstemp", "pwrite64", "fdatasync"};
static int g_armed = -1;
static long g_countdown, g_hit;

/* 1 when this call of fn is the one to fail */
static int fault(int fn) {
    if (g_armed != fn || g_hit) return 0;
    if (--g_countdown > 0) return 0;
    g_hit = 1;
    return 1;
}
static void arm(int fn, long k) { g_armed = fn, g_countdown = k, g_hit = 0; }
static void disarm(void) { g_armed = -1; }

typedef size_t (*fwrite_fn)(const void *, size_t, size_t, FILE *);
typedef int (*file_fn)(FILE *);
typedef int (*fd_fn)(int);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*mkstemp_fn)(char *);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
#define REAL(name, type)                                     \
    static type real_##name;                                 \
    if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

size_t fwrite(const void *p, size_t s, size_t n, FILE *f) {
    REAL(fwrite, fwrite_fn);
    if (fault(F_FWRITE)) {
        errno = ENOSPC;
        return 0;
    }
    return real_fwrite(p, s, n, f);
}
int fflush(FILE *f) {
    REAL(fflush, file_fn);
    if (f && fault(F_FFLUSH)) {
        errno = ENOSPC;
        return EOF;
    }
    return real_fflush(f);
}
int fsync(int fd) {
    REAL(fsync, fd_fn);
    if (fault(F_FSYNC)) {
        errno = EIO;
        return -1;
    }
    return real_fsync(fd);
}
int fclose(FILE *f) {
    REAL(fclose, file_fn);
    int rc = real_fclose(f);
    if (fault(F_FCLOSE)) {
        errno = EIO;
        return EOF;
    }
    return rc;
}
int rename(const char *a, const char *b) {
    REAL(rename, rename_fn);
    if (fault(F_RENAME)) {
        errno = ENOSPC;
        return -1;
    }
    return real_rename(a, b);
}
int mkstemp(char *t) {
    REAL(mkstemp, mkstemp_fn);
    if (fault(F_MKSTEMP)) {
        errno = ENOSPC;
        return -1;
    }
    return real_mkstemp(t);
}

ssize_t pwrite64(int fd, const void *p, size_t n, off_t off) {
    REAL(pwrite64, pwrite_fn);
    if (fault(F_PWRITE)) {
        errno = ENOSPC;
        return -1;
    }
    return real_pwrite64(fd, p, n, off);
}
int fdatasync(int fd) {
    REAL(fdatasync, fd_fn);
    if (fault(F_FDATASYNC)) {
        errno = EIO;
        return -1;
    }
    return real_fdatasync(fd);
}

static char g_dir[64];

static int leftovers(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* A writer: writes version v (0 or 1, different contents) to path. */
typedef int (*writer_fn)(const char *path, int v);

static void run_writer(const char *name, writer_fn w) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int cases = 0, bad = 0;
    for (int fn = 0; fn < F_N; fn++) {
        for (long k = 1; k < 100000; k++) {
            disarm();
            if (w(path, 0)) {
                CHECK(0, "%s: the good write failed: %s", name, mn_last_error());
                return;
            }
            size_t n0 = 0, n1 = 0;
            unsigned char *before = (unsigned char *)test_slurp(path, &n0);
            arm(fn, k);
            int rc = w(path, 1);
            const int hit = (int)g_hit;
            disarm();
            unsigned char *after = (unsigned char *)test_slurp(path, &n1);
            if (!hit) { /* past the last call of fn: a clean write */
                if (rc) bad++, fprintf(stderr, "  %s: %s never failed, yet: %s\n", name, k_fn[fn], mn_last_error());
                free(before), free(after);
                break;
            }
            cases++;
            const int same = after && n0 == n1 && !memcmp(before, after, n0);
            if (rc) {
                if (!same || !strstr(mn_last_error(), name) || leftovers()) {
                    bad++;
                    fprintf(stderr, "  %s: %s call %ld: intact %d, message '%s', %d temporary files\n", name,
                            k_fn[fn], k, same, mn_last_error(), leftovers());
                }
            } else if (!(fn == F_FSYNC && !same && !leftovers())) { /* only the directory's fsync may fail quietly */
                bad++;
                fprintf(stderr, "  %s: %s call %ld failed but the write reported success\n", name, k_fn[fn], k);
            }
            free(before), free(after);
        }
    }
    printf("  %s: %d failure points, each leaving the previous file\n", name, cases);
    CHECK(cases > 0 && bad == 0, "%s: %d of %d failure points mishandled", name, bad, cases);
}

/* ---- the writers ---- */
static mn_model *g_model;
static mn_adapter *g_adapter;

static int w_memfile(const char *path, int v, int n_raw) {
    mn_memfile_info in;
    memset(&in, 0, sizeof in);
    in.kind = MN_MEMFILE_KV, in.n_layer = 2, in.dim = 8, in.n_slots = 40 + v, in.n_tokens = 320;
    in.n_raw = n_raw, in.n_head = n_raw ? 2 : 0, in.ratio = 8, in.created = 1;
    snprintf(in.model_name, sizeof in.model_name, "m");
    snprintf(in.compressor, sizeof in.compressor, "uio");
    static float k[2 * 41 * 8], vv[2 * 41 * 8];
    static int32_t raw[300];
    for (int i = 0; i < 2 * 41 * 8; i++) k[i] = (float)(i % 17) + v, vv[i] = -(float)(i % 5);
    for (int i = 0; i < 300; i++) raw[i] = i + v;
    return mn_memfile_write_raw(path, &in, k, vv, raw, MN_MEMFILE_F16);
}
static int w_memfile_v1(const char *path, int v) { return w_memfile(path, v, 0); }
static int w_memfile_v2(const char *path, int v) { return w_memfile(path, v, 300); }

static int w_adapter(const char *path, int v, int f16) {
    float *t = mn_adapter_tensor_data_mut(g_adapter, 0);
    t[0] = v ? 0.5f : 0.25f;
    return mn_adapter_save_as(g_adapter, path, f16);
}
static int w_adapter_f32(const char *path, int v) { return w_adapter(path, v, 0); }
static int w_adapter_f16(const char *path, int v) { return w_adapter(path, v, 1); }

static int w_checkpoint(const char *path, int v) {
    static mn_adamw *o;
    static float p[64], g[64];
    if (!o) {
        mn_adamw_params hp = mn_adamw_default_params();
        if (mn_adamw_create(&hp, &o) || mn_adamw_add(o, "x", p, g, 64, 1)) return -1;
    }
    mn_train_state st;
    memset(&st, 0, sizeof st);
    st.step = 10 + v;
    snprintf(st.config, sizeof st.config, "fault test %d", v);
    return mn_checkpoint_save(path, g_adapter, o, &st);
}

static int64_t n_docs(mn_store *s) {
    mn_store_doc *d = NULL;
    int64_t n = -1;
    if (mn_store_list(s, 0, &d, &n)) return -1;
    free(d);
    return n;
}

static void run_ingest(void) {
    char db[128], rep[512];
    snprintf(db, sizeof db, "%s/store.db", g_dir);
    mn_store *s = NULL;
    if (mn_store_open(db, MN_STORE_CREATE, &s)) {
        CHECK(0, "store: %s", mn_last_error());
        return;
    }
    int cases = 0, bad = 0, doc = 0;
    for (int fn = 0; fn < F_N; fn++) {
        for (long k = 1; k < 100000; k++) {
            char text[128];
            snprintf(text, sizeof text, "Document %d tells of the sea, the wind and the long road home.", doc++);
            mn_ingest_doc d = {"doc", "test", NULL, text, strlen(text), 0};
            mn_ingest_result r;
            const int64_t before = n_docs(s);
            arm(fn, k);
            int rc = mn_ingest(s, NULL, g_model, g_adapter, &d, 1, &r);
            const int hit = (int)g_hit;
            disarm();
            const int64_t after = n_docs(s);
            const int healthy = mn_store_check(s, rep, sizeof rep) == 0 && mn_store_verify_files(s, rep, sizeof rep) == 0;
            if (!hit) {
                if (rc || after != before + 1) bad++, fprintf(stderr, "  ingest: %s never failed, yet: %s\n", k_fn[fn],
                                                             mn_last_error());
                break;
            }
            cases++;
            if (rc ? (after != before || !healthy || !mn_last_error()[0]) : (after != before + 1 || !healthy)) {
                bad++;
                fprintf(stderr, "  ingest: %s call %ld: rc %d, documents %lld -> %lld, healthy %d: %s\n", k_fn[fn], k,
                        rc, (long long)before, (long long)after, healthy, rc ? mn_last_error() : rep);
            }
        }
    }
    int removed = 0;
    CHECK(mn_store_gc(s, 0, &removed) == 0 && mn_store_verify_files(s, rep, sizeof rep) == 0, "gc after faults: %s",
          rep);
    printf("  store ingest: %d failure points, each leaving the store as it was (%d spare memory files collected)\n",
           cases, removed);
    CHECK(cases > 0 && bad == 0, "store ingest: %d of %d failure points mishandled", bad, cases);
    mn_store_close(s);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/mnemo-faults-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    char mp[128];
    snprintf(mp, sizeof mp, "%s/tiny-model.gguf", g_dir);
    tiny_llama cfg = {.n_embd = 16, .n_head = 2, .n_head_kv = 1, .n_ff = 24, .n_layer = 1, .n_ctx = 64, .seed = 3};
    CHECK(tiny_llama_write(&cfg, mp) == 0 && mn_model_load(mp, &g_model) == 0, "tiny model: %s", mn_last_error());
    unlink(mp);
    mn_adapter_params ap = mn_adapter_default_params(MN_COMP_UIO);
    ap.segment = 8, ap.ratio = 4, ap.rank = 2, ap.alpha = 4, ap.recent = 1;
    CHECK(g_model && mn_adapter_init(g_model, &ap, &g_adapter) == 0, "adapter: %s", mn_last_error());
    if (g_adapter) {
        run_writer("v1.mem", w_memfile_v1);
        run_writer("v2.mem", w_memfile_v2);
        run_writer("adapter.gguf", w_adapter_f32);
        run_writer("adapter16.gguf", w_adapter_f16);
        run_writer("run.ckpt", w_checkpoint);
        run_ingest();
    }
    mn_adapter_free(g_adapter);
    mn_model_free(g_model);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) return 1;
    TEST_MAIN_END();
}
