/* kvstore.c - the exact store's 8-bit cells, in RAM then in a spill file (see kvstore.h). */
#include "memory/kvstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "kernels/attention.h"
#include "kernels/quant.h"
#include "model/forward.h"
#include "model/model.h"

typedef struct {
    int32_t n;      /* cells */
    int spilled;    /* in the spill file (else in RAM) */
    size_t off;     /* byte offset in the RAM part or in the spill file */
} entry;

struct mn_kvstore {
    int32_t L, KD;
    size_t rb;                 /* bytes of one q8_0 row (KD values) */
    const mn_quant_traits *q8;
    size_t budget;             /* most bytes kept in RAM */
    uint8_t *ram;              /* the RAM part: entries back to back */
    size_t ram_used, ram_cap;
    int fd;                    /* the spill file, unlinked; -1 until first needed */
    size_t spill_used;
    uint8_t *scratch;          /* one entry's bytes on their way to the spill file */
    size_t scratch_cap;
    entry *e;
    int32_t n, cap;
};

size_t mn_kvstore_cell_bytes(const mn_model *m) {
    const int64_t KD = (int64_t)m->hp.n_head_kv * m->hp.head_dim;
    return (size_t)m->hp.n_layer * 2 * (size_t)(KD / MN_Q8_BLOCK) * MN_Q8_BYTES;
}

int mn_kvstore_create(const mn_model *m, size_t ram_budget, mn_kvstore **out) {
    *out = NULL;
    const int32_t KD = m->hp.n_head_kv * m->hp.head_dim;
    if (KD % MN_Q8_BLOCK)
        return mn_error(MN_EUNSUPPORTED, "an 8-bit exact store needs a kv width divisible by %d (this model: %d)",
                        MN_Q8_BLOCK, KD);
    mn_kvstore *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "out of memory");
    s->L = m->hp.n_layer, s->KD = KD;
    s->rb = (size_t)(KD / MN_Q8_BLOCK) * MN_Q8_BYTES;
    s->q8 = mn_quant_get(MN_TYPE_Q8_0);
    s->budget = ram_budget;
    s->fd = -1;
    if (!s->q8 || !s->q8->from_float) {
        free(s);
        return mn_error(MN_EUNSUPPORTED, "no q8_0 kernels");
    }
    *out = s;
    return MN_OK;
}

void mn_kvstore_free(mn_kvstore *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->ram), free(s->scratch), free(s->e);
    free(s);
}

int mn_kvstore_clear(mn_kvstore *s) {
    s->n = 0;
    s->ram_used = s->spill_used = 0;
    if (s->fd >= 0 && ftruncate(s->fd, 0))
        return mn_error(MN_EIO, "exact store: emptying the spill file: %s", strerror(errno));
    return MN_OK;
}

int32_t mn_kvstore_n(const mn_kvstore *s) { return s ? s->n : 0; }

void mn_kvstore_bytes(const mn_kvstore *s, size_t *ram, size_t *spill) {
    if (ram) *ram = s ? s->ram_used : 0;
    if (spill) *spill = s ? s->spill_used : 0;
}

void mn_kvstore_encode(int32_t L, int32_t KD, int32_t n, const float *k, const float *v, uint8_t *dst) {
    const mn_quant_traits *q8 = mn_quant_get(MN_TYPE_Q8_0);
    const size_t rows = (size_t)L * (size_t)n, rb = (size_t)(KD / MN_Q8_BLOCK) * MN_Q8_BYTES;
    for (size_t r = 0; r < rows; r++) q8->from_float(k + r * (size_t)KD, dst + r * rb, KD);
    dst += rows * rb;
    for (size_t r = 0; r < rows; r++) q8->from_float(v + r * (size_t)KD, dst + r * rb, KD);
}

void mn_kvstore_decode(int32_t L, int32_t KD, int32_t n, const uint8_t *src, float *k, float *v) {
    const mn_quant_traits *q8 = mn_quant_get(MN_TYPE_Q8_0);
    const size_t rows = (size_t)L * (size_t)n, rb = (size_t)(KD / MN_Q8_BLOCK) * MN_Q8_BYTES;
    for (size_t r = 0; r < rows; r++) q8->to_float(src + r * rb, k + r * (size_t)KD, KD);
    src += rows * rb;
    for (size_t r = 0; r < rows; r++) q8->to_float(src + r * rb, v + r * (size_t)KD, KD);
}

int mn_kvstore_read_cells(const mn_context *c, int32_t c0, int32_t n, float *k, float *v) {
    return mn_kv_read_unrotated(c, c0, n, k, v);
}

/* The spill file: created in TMPDIR and unlinked at once, so that nothing outlives the process. */
static int spill_open(mn_kvstore *s) {
    if (s->fd >= 0) return MN_OK;
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    char path[4096];
    if (snprintf(path, sizeof path, "%s/mnemo-exact-XXXXXX", dir) >= (int)sizeof path)
        return mn_error(MN_EINVAL, "exact store: TMPDIR is too long a path");
    const int fd = mkstemp(path);
    if (fd < 0) return mn_error(MN_EIO, "exact store: cannot create a spill file in %s: %s", dir, strerror(errno));
    unlink(path);
    s->fd = fd;
    return MN_OK;
}

int mn_kvstore_put(mn_kvstore *s, int32_t n, const float *k, const float *v) {
    if (n < 0 || (n > 0 && (!k || !v))) return mn_error(MN_EINVAL, "exact store: an entry of %d cells", n);
    const size_t bytes = 2 * (size_t)s->L * (size_t)n * s->rb;
    if (s->n == s->cap) {
        const int32_t cap = s->cap ? 2 * s->cap : 64;
        entry *ne = realloc(s->e, sizeof *ne * (size_t)cap);
        if (!ne) return mn_error(MN_ENOMEM, "out of memory for the exact store");
        s->e = ne, s->cap = cap;
    }
    entry *e = &s->e[s->n];
    e->n = n;
    if (n == 0) { /* nothing to hold (a segment that was all sinks) */
        e->spilled = 0, e->off = s->ram_used;
        s->n++;
        return MN_OK;
    }
    if (s->ram_used + bytes <= s->budget) {
        if (s->ram_used + bytes > s->ram_cap) { /* grows by doubling: one realloc per doubling, not per entry */
            size_t cap = s->ram_cap ? s->ram_cap : bytes * 8;
            while (cap < s->ram_used + bytes) cap *= 2;
            if (cap > s->budget) cap = s->budget;
            uint8_t *nr = realloc(s->ram, cap);
            if (!nr) return mn_error(MN_ENOMEM, "out of memory for the exact store's %zu bytes in RAM", cap);
            s->ram = nr, s->ram_cap = cap;
        }
        mn_kvstore_encode(s->L, s->KD, n, k, v, s->ram + s->ram_used);
        e->spilled = 0, e->off = s->ram_used;
        s->ram_used += bytes;
    } else {
        int rc = spill_open(s);
        if (rc) return rc;
        if (bytes > s->scratch_cap) {
            uint8_t *ns = realloc(s->scratch, bytes);
            if (!ns) return mn_error(MN_ENOMEM, "out of memory");
            s->scratch = ns, s->scratch_cap = bytes;
        }
        mn_kvstore_encode(s->L, s->KD, n, k, v, s->scratch);
        for (size_t done = 0; done < bytes;) {
            const ssize_t w = pwrite(s->fd, s->scratch + done, bytes - done, (off_t)(s->spill_used + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0)
                return mn_error(MN_EIO, "exact store: writing the spill file: %s", w < 0 ? strerror(errno) : "no space");
            done += (size_t)w;
        }
        e->spilled = 1, e->off = s->spill_used;
        s->spill_used += bytes;
    }
    s->n++;
    return MN_OK;
}

int mn_kvstore_get(mn_kvstore *s, int32_t i, int32_t cap, float *k, float *v, int32_t *n) {
    if (i < 0 || i >= s->n) return mn_error(MN_EINVAL, "exact store: no entry %d (%d held)", i, s->n);
    const entry *e = &s->e[i];
    if (e->n > cap) return mn_error(MN_ERANGE, "exact store: entry %d has %d cells, room for %d", i, e->n, cap);
    *n = e->n;
    if (e->n == 0) return MN_OK;
    if (!e->spilled) {
        mn_kvstore_decode(s->L, s->KD, e->n, s->ram + e->off, k, v);
        return MN_OK;
    }
    /* the entry's pages, mapped for this read only */
    const size_t bytes = 2 * (size_t)s->L * (size_t)e->n * s->rb, page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t at = e->off / page * page, lead = e->off - at;
    void *map = mmap(NULL, lead + bytes, PROT_READ, MAP_PRIVATE, s->fd, (off_t)at);
    if (map == MAP_FAILED) return mn_error(MN_EIO, "exact store: mapping the spill file: %s", strerror(errno));
    mn_kvstore_decode(s->L, s->KD, e->n, (const uint8_t *)map + lead, k, v);
    munmap(map, lead + bytes);
    return MN_OK;
}
