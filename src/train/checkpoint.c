/* checkpoint.c - training checkpoints (see checkpoint.h for the format). */
#include "train/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"

#define CKPT_VERSION 1u
#define K_SUM "train.checksum"

/* Tensor index of the adapter tensor called name with n elements: -1 when
 * absent, -2 when its size differs. */
static int adapter_find(const mn_adapter *a, const char *name, int64_t n) {
    for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
        const char *nm;
        int64_t ne[2];
        mn_adapter_tensor_at(a, i, &nm, NULL, ne, NULL);
        if (!strcmp(nm, name)) return ne[0] * ne[1] == n ? i : -2;
    }
    return -1;
}

/* Index of the adapter tensor whose buffer is p, or -1: an optimizer tensor
 * trains an adapter tensor exactly when it was registered on its buffer. */
static int adapter_owner(const mn_adapter *a, const float *p) {
    for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
        const float *d;
        mn_adapter_tensor_at(a, i, NULL, NULL, NULL, &d);
        if (d == p) return i;
    }
    return -1;
}

static int opt_name(char *buf, size_t cap, char which, const char *name) {
    int k = snprintf(buf, cap, "opt.%c.%s", which, name);
    return k > 0 && (size_t)k < cap ? MN_OK : mn_error(MN_EINVAL, "checkpoint: tensor name '%s' too long", name);
}

/* mn_hash64 of the file with the 8 checksum bytes at off read as zero. */
static uint64_t file_hash(const unsigned char *base, size_t size, size_t off) {
    static const unsigned char zero[8] = {0};
    uint64_t h = mn_hash64(base, off, 0);
    h = mn_hash64(zero, 8, h);
    return mn_hash64(base + off + 8, size - off - 8, h);
}

/* Offset of the checksum's value in the file g maps; 0 when absent or not a u64. */
static size_t checksum_offset(const mn_gguf *g) {
    int64_t k = mn_gguf_find_key(g, K_SUM);
    if (k < 0 || mn_gguf_kv_type(g, k) != MN_GGUF_UINT64) return 0;
    return (size_t)((const char *)mn_gguf_kv_raw(g, k) - (const char *)mn_gguf_base(g));
}

static uint64_t rd_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------ save */
static int build(mn_gguf_writer *w, const mn_adapter *a, mn_adamw *o, const mn_train_state *st) {
    int rc = mn_adapter_write_into(a, w);
    if (rc) return rc;
    int64_t opt_steps = mn_adamw_steps(o);
    uint32_t ver = CKPT_VERSION;
    rc |= mn_gguf_writer_set_scalar(w, "train.version", MN_GGUF_UINT32, &ver);
    rc |= mn_gguf_writer_set_scalar(w, "train.step", MN_GGUF_INT64, &st->step);
    rc |= mn_gguf_writer_set_scalar(w, "train.opt_steps", MN_GGUF_INT64, &opt_steps);
    rc |= mn_gguf_writer_set_arr(w, "train.rng", MN_GGUF_UINT64, 4, st->rng.s);
    rc |= mn_gguf_writer_set_scalar(w, "train.loss_ema", MN_GGUF_FLOAT64, &st->loss_ema);
    rc |= mn_gguf_writer_set_str(w, "train.config", st->config);
    rc |= mn_gguf_writer_set_u64(w, K_SUM, 0); /* filled in once the bytes are known */
    if (rc) return mn_error(MN_ENOMEM, "checkpoint: cannot set metadata");
    for (int i = 0; i < mn_adamw_n_tensors(o); i++) {
        const char *name;
        int64_t n;
        float *m, *v;
        mn_adamw_tensor(o, i, &name, &n, NULL, &m, &v);
        char nm[192];
        int64_t ne[1] = {n};
        float *p;
        mn_adamw_tensor(o, i, NULL, NULL, &p, NULL, NULL);
        if (adapter_owner(a, p) < 0 && ((rc = opt_name(nm, sizeof nm, 'p', name)) ||
                                        (rc = mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, 1, ne, p))))
            return rc;
        if ((rc = opt_name(nm, sizeof nm, 'm', name)) || (rc = mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, 1, ne, m)))
            return rc;
        if ((rc = opt_name(nm, sizeof nm, 'v', name)) || (rc = mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, 1, ne, v)))
            return rc;
    }
    return MN_OK;
}

/* Writes the checksum of the (already durable) temporary file tmp into it. */
static int seal(const char *tmp) {
    mn_gguf *g;
    int rc = mn_gguf_open(tmp, &g);
    if (rc) return rc;
    size_t off = checksum_offset(g);
    if (!off) {
        mn_gguf_free(g);
        return mn_error(MN_EIO, "%s: checksum key missing from the written file", tmp);
    }
    uint64_t h = file_hash(mn_gguf_base(g), mn_gguf_file_size(g), off);
    mn_gguf_free(g);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(h >> (8 * i));
    int fd = open(tmp, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return mn_error(MN_EIO, "%s: cannot reopen: %s", tmp, strerror(errno));
    int ok = pwrite(fd, le, 8, (off_t)off) == 8 && fsync(fd) == 0;
    int e = errno;
    if (close(fd)) ok = 0, e = errno;
    return ok ? MN_OK : mn_error(MN_EIO, "%s: cannot write the checksum: %s", tmp, strerror(e));
}

static void fsync_dir(const char *path) {
    char *d = strdup(path);
    if (!d) return;
    char *slash = strrchr(d, '/');
    if (slash == d)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    int fd = open(slash ? d : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort, as core/fileio.c */
        close(fd);
    }
    free(d);
}

/* A save killed while the GGUF writer ran leaves "<path>.ckpt-tmp.tmp.XXXXXX"
 * (its own temporary file, as large as a checkpoint): the next save of the
 * same path removes them, so crashes do not pile up files beside it. */
static void remove_stale(const char *path) {
    size_t n = strlen(path);
    char *pat = malloc(n * 2 + 32), *q = pat;
    if (!pat) return;
    for (size_t i = 0; i < n; i++) { /* the path itself matched literally */
        if (strchr("*?[\\", path[i])) *q++ = '\\';
        *q++ = path[i];
    }
    strcpy(q, ".ckpt-tmp.tmp.??????");
    glob_t g;
    if (glob(pat, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
        globfree(&g);
    }
    free(pat);
}

int mn_checkpoint_save(const char *path, const mn_adapter *a, mn_adamw *o, const mn_train_state *st) {
    if (!path || !a || !o || !st) return mn_error(MN_EINVAL, "checkpoint save: NULL argument");
    if (strnlen(st->config, sizeof st->config) == sizeof st->config)
        return mn_error(MN_EINVAL, "checkpoint save: config text is not NUL-terminated within %zu bytes",
                        sizeof st->config);
    for (int i = 0; i < mn_adamw_n_tensors(o); i++) {
        const char *name, *an;
        int64_t n, ne[2];
        float *p;
        mn_adamw_tensor(o, i, &name, &n, &p, NULL, NULL);
        int k = adapter_owner(a, p);
        if (k < 0) continue; /* not the adapter's: saved as opt.p.<name> */
        mn_adapter_tensor_at(a, k, &an, NULL, ne, NULL);
        if (strcmp(an, name) || ne[0] * ne[1] != n)
            return mn_error(MN_EINVAL,
                            "checkpoint save: optimizer tensor '%s' (%" PRId64 " floats) is registered on adapter "
                            "tensor '%s' (%" PRId64 " floats): names and sizes must match",
                            name, n, an, ne[0] * ne[1]);
    }
    mn_gguf_writer *w = mn_gguf_writer_create();
    if (!w) return mn_error(MN_ENOMEM, "out of memory");
    remove_stale(path);
    size_t tl = strlen(path) + 16;
    char *tmp = malloc(tl);
    int rc = tmp ? build(w, a, o, st) : mn_error(MN_ENOMEM, "out of memory");
    if (!rc) {
        snprintf(tmp, tl, "%s.ckpt-tmp", path);
        rc = mn_gguf_writer_write(w, tmp);
    }
    mn_gguf_writer_free(w);
    if (!rc) rc = seal(tmp);
    if (!rc && rename(tmp, path)) rc = mn_error(MN_EIO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (!rc)
        fsync_dir(path);
    else if (tmp)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------ load */
/* The tensor opt.<which>.<name> (which: m, v moments; p parameters): F32 with n elements, all finite (v >= 0). */
static int find_moment(const mn_gguf *g, char which, const char *name, int64_t n, const mn_gguf_tensor **out) {
    char nm[192];
    int rc = opt_name(nm, sizeof nm, which, name);
    if (rc) return rc;
    const mn_gguf_tensor *t = mn_gguf_find_tensor(g, nm);
    if (!t) return mn_error(MN_EINVAL, "checkpoint has no '%s' for optimizer tensor '%s'", nm, name);
    int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (t->type != MN_TYPE_F32 || ne != n)
        return mn_error(MN_EINVAL, "checkpoint tensor '%s' has %" PRId64 " elements of type %d, expected %" PRId64
                                   " f32 (optimizer tensor '%s')",
                        nm, ne, t->type, n, name);
    for (int64_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, (const char *)t->data + 4 * i, 4);
        if (!isfinite(x) || (which == 'v' && x < 0))
            return mn_error(MN_EFORMAT, "checkpoint tensor '%s' holds an invalid value %g at %" PRId64, nm, (double)x, i);
    }
    *out = t;
    return MN_OK;
}

static int read_state(const mn_gguf *g, mn_train_state *st, int64_t *opt_steps) {
    memset(st, 0, sizeof *st);
    uint32_t ver;
    if (mn_gguf_get_u32(g, "train.version", &ver))
        return mn_error(MN_EFORMAT, "checkpoint: missing or non-integer key 'train.version'");
    if (ver != CKPT_VERSION)
        return mn_error(MN_EUNSUPPORTED, "checkpoint version %u is not supported (expected %u)", ver, CKPT_VERSION);
    if (mn_gguf_get_i64(g, "train.step", &st->step) || st->step < 0)
        return mn_error(MN_EFORMAT, "checkpoint: missing or negative 'train.step'");
    if (mn_gguf_get_i64(g, "train.opt_steps", opt_steps) || *opt_steps < 0)
        return mn_error(MN_EFORMAT, "checkpoint: missing or negative 'train.opt_steps'");
    mn_gguf_vtype et;
    uint64_t n;
    const void *d;
    if (mn_gguf_get_arr(g, "train.rng", &et, &n, &d) || et != MN_GGUF_UINT64 || n != 4)
        return mn_error(MN_EFORMAT, "checkpoint: 'train.rng' must be 4 u64 values");
    for (int i = 0; i < 4; i++) st->rng.s[i] = rd_u64le((const unsigned char *)d + 8 * i);
    if (!(st->rng.s[0] | st->rng.s[1] | st->rng.s[2] | st->rng.s[3]))
        return mn_error(MN_EFORMAT, "checkpoint: 'train.rng' is the all-zero (invalid) state");
    int64_t k = mn_gguf_find_key(g, "train.loss_ema");
    if (k < 0 || mn_gguf_kv_type(g, k) != MN_GGUF_FLOAT64)
        return mn_error(MN_EFORMAT, "checkpoint: missing or non-f64 key 'train.loss_ema'");
    uint64_t bits = rd_u64le(mn_gguf_kv_raw(g, k));
    memcpy(&st->loss_ema, &bits, 8);
    mn_gguf_str s;
    if (mn_gguf_get_str(g, "train.config", &s)) return mn_error(MN_EFORMAT, "checkpoint: missing key 'train.config'");
    if (s.len >= sizeof st->config || memchr(s.ptr, 0, s.len))
        return mn_error(MN_EFORMAT, "checkpoint: 'train.config' is not a string of at most %zu bytes",
                        sizeof st->config - 1);
    memcpy(st->config, s.ptr, s.len);
    st->config[s.len] = 0;
    return MN_OK;
}

int mn_checkpoint_load(const char *path, const mn_model *m, mn_adapter **a, mn_adamw *o, mn_train_state *st) {
    if (!a) return mn_error(MN_EINVAL, "checkpoint load: no output");
    *a = NULL;
    if (!path || !m || !o || !st) return mn_error(MN_EINVAL, "checkpoint load: NULL argument");
    mn_gguf *g;
    int rc = mn_gguf_open(path, &g); /* names the path */
    if (rc) return rc;
    mn_adapter *ad = NULL;
    mn_train_state s;
    int64_t opt_steps = 0;
    const mn_gguf_tensor **mt = NULL;
    int nt = mn_adamw_n_tensors(o);
    size_t off = checksum_offset(g);
    if (!off) {
        rc = mn_error(MN_EFORMAT, "not a training checkpoint (no u64 '" K_SUM "'; an adapter file?)");
        goto done;
    }
    uint64_t want = rd_u64le((const unsigned char *)mn_gguf_base(g) + off);
    if (file_hash(mn_gguf_base(g), mn_gguf_file_size(g), off) != want) {
        rc = mn_error(MN_EFORMAT, "checkpoint is corrupt (checksum mismatch): damaged or truncated file");
        goto done;
    }
    if ((rc = mn_adapter_load_gguf(m, g, &ad)) || (rc = read_state(g, &s, &opt_steps))) goto done;
    /* every optimizer tensor: its parameters (an adapter tensor of that name, or its own opt.p.<name>) and
     * moments; nothing in the file for a tensor the optimizer does not have */
    mt = calloc((size_t)(3 * nt + 1), sizeof *mt);
    if (!mt) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto done;
    }
    int64_t n_ext = 0;
    for (int i = 0; i < nt; i++) {
        const char *name;
        int64_t n;
        mn_adamw_tensor(o, i, &name, &n, NULL, NULL, NULL);
        char pn[192];
        if ((rc = opt_name(pn, sizeof pn, 'p', name))) goto done;
        if (mn_gguf_find_tensor(g, pn)) {
            if ((rc = find_moment(g, 'p', name, n, &mt[3 * i + 2]))) goto done;
            n_ext++;
        } else {
            int k = adapter_find(ad, name, n);
            if (k < 0) {
                rc = mn_error(MN_EINVAL, "optimizer tensor '%s' (%" PRId64 " floats) %s in the checkpoint's adapter",
                              name, n,
                              k == -1 ? "has no tensor of that name" : "differs in size from the tensor of that name");
                goto done;
            }
        }
        if ((rc = find_moment(g, 'm', name, n, &mt[3 * i])) || (rc = find_moment(g, 'v', name, n, &mt[3 * i + 1])))
            goto done;
    }
    int64_t n_opt = 0;
    for (int64_t i = 0; i < mn_gguf_n_tensors(g); i++) {
        const char *nm = mn_gguf_tensor_at(g, i)->name;
        if (strncmp(nm, "opt.", 4)) continue;
        n_opt++;
        if ((strncmp(nm, "opt.m.", 6) && strncmp(nm, "opt.v.", 6) && strncmp(nm, "opt.p.", 6)) ||
            mn_adamw_find(o, nm + 6) < 0) {
            rc = mn_error(MN_EINVAL, "checkpoint has '%s' for a tensor the optimizer does not train", nm);
            goto done;
        }
    }
    if (n_opt != 2 * (int64_t)nt + n_ext) {
        rc = mn_error(MN_EFORMAT, "checkpoint has %" PRId64 " optimizer tensors, expected %" PRId64, n_opt,
                      2 * (int64_t)nt + n_ext);
        goto done;
    }
    /* all valid: now change the caller's state */
    for (int i = 0; i < nt; i++) {
        const char *name;
        int64_t n;
        float *p, *mm, *vv;
        mn_adamw_tensor(o, i, &name, &n, &p, &mm, &vv);
        const float *src = mt[3 * i + 2] ? (const float *)mt[3 * i + 2]->data
                                         : mn_adapter_tensor_data_mut(ad, adapter_find(ad, name, n));
        if (p != src) memmove(p, src, sizeof(float) * (size_t)n);
        memcpy(mm, mt[3 * i]->data, sizeof(float) * (size_t)n);
        memcpy(vv, mt[3 * i + 1]->data, sizeof(float) * (size_t)n);
    }
    mn_adamw_set_steps(o, opt_steps);
    *st = s;
done:
    free(mt);
    if (rc) {
        mn_adapter_free(ad);
        mn_error_prefix(rc, path);
    } else {
        *a = ad;
    }
    mn_gguf_free(g);
    return rc;
}
