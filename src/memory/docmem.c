/* docmem.c - a document's compressed memory, whatever the compressor (see docmem.h).
 *
 * Dispatch by the adapter's kind: UIO and beacon give KV memories (keys
 * without RoPE, placed at consecutive positions when primed; a beacon adapter
 * with raw sinks stores the document's first tokens' K/V as its leading
 * slots, so its layout [sinks | beacons] travels with the memory), summary
 * gives embeddings that priming decodes as input embeddings. Memories are
 * always f32 in memory: a file is mapped, checked and converted once.
 */
#include "memory/docmem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/memfile.h"
#include "memory/memory.h"
#include "memory/summary.h"
#include "model/forward.h"

static mn_docmem_kind kind_of(const mn_adapter *a) {
    return mn_adapter_config(a)->compressor == MN_COMP_SUMMARY ? MN_DOCMEM_EMBD : MN_DOCMEM_KV;
}

void mn_docmem_release(mn_docmem *d) {
    if (!d) return;
    if (d->owner_) {
        free(d->k);
        free(d->v);
    }
    free(d->raw);
    memset(d, 0, sizeof *d);
}

int mn_docmem_compress(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int n_threads,
                       mn_docmem *out) {
    memset(out, 0, sizeof *out);
    if (!m || !a || !ids) return mn_error(MN_EINVAL, "docmem compress: no model, adapter or tokens");
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to compress");
    mn_memory_binding b;
    int rc = mn_memory_bind(m, a, &b);
    if (rc) return rc;
    float *k = NULL, *v = NULL;
    int32_t M = 0;
    /* UIO with a recent window: sinks and the last segments stay raw */
    int64_t n_mem = n, n_head = 0;
    int32_t *raw = NULL;
    if (b.kind == MN_COMP_UIO && b.uio.params.recent > 0) {
        const int64_t l = b.uio.params.l, full = n / l, R = b.uio.params.recent;
        n_mem = full > R ? (full - R) * l : 0;
        n_head = n_mem > 0 ? (n_mem < MN_DOCMEM_SINKS ? n_mem : MN_DOCMEM_SINKS) : 0;
        const int64_t n_raw = n_head + (n - n_mem);
        if (n_raw > MN_MEMFILE_MAX_RAW) {
            mn_memory_unbind(&b);
            return mn_error(MN_ERANGE, "%lld raw tokens exceed %d", (long long)n_raw, MN_MEMFILE_MAX_RAW);
        }
        raw = malloc(sizeof(int32_t) * (size_t)n_raw);
        if (!raw) {
            mn_memory_unbind(&b);
            return mn_error(MN_ENOMEM, "out of memory");
        }
        memcpy(raw, ids, sizeof(int32_t) * (size_t)n_head);
        memcpy(raw + n_head, ids + n_mem, sizeof(int32_t) * (size_t)(n - n_mem));
        out->n_raw = (int32_t)n_raw;
        out->n_head = (int32_t)n_head;
        out->raw = raw;
    }
    switch (b.kind) {
    case MN_COMP_UIO:
        rc = n_mem > 0 ? mn_uio_compress_doc(m, &b.uio.params, ids, n_mem, n_threads, &k, &v, &M) : MN_OK;
        break;
    case MN_COMP_BEACON: rc = mn_beacon_compress_doc(m, &b.beacon.params, ids, n, n_threads, &k, &v, &M); break;
    case MN_COMP_SUMMARY: rc = mn_summary_compress_doc(m, &b.summary.params, ids, n, n_threads, &k, &M); break;
    }
    mn_memory_unbind(&b);
    if (rc) {
        free(raw);
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->kind = kind_of(a);
    out->n_slots = M;
    out->n_tokens = n;
    out->n_layer = out->kind == MN_DOCMEM_KV ? mn_model_n_layer(m) : 1;
    out->dim = out->kind == MN_DOCMEM_KV ? mn_model_kv_dim(m) : mn_model_n_embd(m);
    out->k = k;
    out->v = v;
    out->owner_ = k;
    return MN_OK;
}

/* Checks that d has the shape adapter a and model m imply. */
static int check_shape(const mn_docmem *d, const mn_model *m, const mn_adapter *a, int need_data) {
    const mn_docmem_kind want = kind_of(a);
    if (d->kind != want)
        return mn_error(MN_EINVAL, "a %s memory cannot be used with a %s adapter",
                        d->kind == MN_DOCMEM_KV ? "KV" : "embedding", mn_compressor_name(mn_adapter_config(a)->compressor));
    const int32_t L = want == MN_DOCMEM_KV ? mn_model_n_layer(m) : 1;
    const int32_t dim = want == MN_DOCMEM_KV ? mn_model_kv_dim(m) : mn_model_n_embd(m);
    if (d->n_layer != L || d->dim != dim)
        return mn_error(MN_EINVAL, "memory of %d layers x %d does not fit the model (%d x %d)", d->n_layer, d->dim, L,
                        dim);
    if (d->n_slots < 0 || (need_data && d->n_slots > 0 && (!d->k || (want == MN_DOCMEM_KV && !d->v))))
        return mn_error(MN_EINVAL, "memory without data");
    if (d->n_raw < 0 || d->n_head < 0 || d->n_head > d->n_raw || (need_data && d->n_raw > 0 && !d->raw))
        return mn_error(MN_EINVAL, "memory with bad raw tokens (%d, %d leading)", d->n_raw, d->n_head);
    for (int32_t i = 0; need_data && i < d->n_raw; i++)
        if (d->raw[i] < 0 || d->raw[i] >= mn_model_n_vocab(m))
            return mn_error(MN_EINVAL, "memory's raw token %d (id %d) is not in the model's vocabulary", i, d->raw[i]);
    return MN_OK;
}

int64_t mn_docmem_cells(const mn_docmem *d) { return d ? (int64_t)d->n_slots + d->n_raw : 0; }

int mn_docmem_save_titled(const mn_docmem *d, const mn_model *m, const mn_adapter *a, const char *path, int f32,
                          const char *title) {
    if (!d || !m || !a || !path) return mn_error(MN_EINVAL, "docmem save: missing argument");
    int rc = check_shape(d, m, a, 1);
    if (rc) return rc;
    mn_memfile_info info;
    memset(&info, 0, sizeof info);
    info.kind = d->kind == MN_DOCMEM_KV ? MN_MEMFILE_KV : MN_MEMFILE_EMBD;
    info.n_layer = d->kind == MN_DOCMEM_KV ? d->n_layer : 0;
    info.dim = d->dim;
    info.n_slots = d->n_slots;
    info.n_tokens = d->n_tokens;
    info.n_raw = d->n_raw;
    info.n_head = d->n_head;
    info.model_hash = mn_model_hash(m);
    info.adapter_hash = mn_adapter_hash(a);
    info.ratio = (float)mn_adapter_config(a)->ratio;
    snprintf(info.model_name, sizeof info.model_name, "%.63s", mn_model_name(m));
    snprintf(info.compressor, sizeof info.compressor, "%s", mn_compressor_name(mn_adapter_config(a)->compressor));
    if (title) {
        /* cut at a UTF-8 character boundary */
        size_t len = strlen(title);
        if (len > MN_MEMFILE_TITLE_CAP - 1) {
            len = MN_MEMFILE_TITLE_CAP - 1;
            while (len > 0 && ((unsigned char)title[len] & 0xC0) == 0x80) len--;
        }
        memcpy(info.title, title, len);
        info.title[len] = 0;
    }
    return mn_memfile_write_raw(path, &info, d->k, d->kind == MN_DOCMEM_KV ? d->v : NULL, d->raw,
                                f32 ? MN_MEMFILE_F32 : MN_MEMFILE_F16);
}

int mn_docmem_save(const mn_docmem *d, const mn_model *m, const mn_adapter *a, const char *path, int f32) {
    return mn_docmem_save_titled(d, m, a, path, f32, NULL);
}

int mn_docmem_load(const char *path, const mn_model *m, const mn_adapter *a, mn_docmem *out) {
    memset(out, 0, sizeof *out);
    if (!path || !m || !a) return mn_error(MN_EINVAL, "docmem load: missing argument");
    mn_memfile *mf;
    int rc = mn_memfile_open(path, &mf);
    if (rc) return rc;
    const mn_memfile_info *in = mn_memfile_get_info(mf);
    const char *comp = mn_compressor_name(mn_adapter_config(a)->compressor);
    float *k = NULL, *v = NULL;
    int32_t *raw = NULL;
    if ((rc = mn_memfile_check_model(mf, mn_model_hash(m), mn_adapter_hash(a)))) goto fail;
    if (strcmp(in->compressor, comp)) {
        rc = mn_error(MN_EINVAL, "memory file was made by the '%s' compressor, the adapter is '%s'", in->compressor,
                      comp);
        goto fail;
    }
    if (in->flags & MN_MEMFILE_K_ROPE) {
        rc = mn_error(MN_EUNSUPPORTED, "memory file holds keys already rotated (raw cache cells), not a document memory");
        goto fail;
    }
    mn_docmem d = {.kind = in->kind == MN_MEMFILE_KV ? MN_DOCMEM_KV : MN_DOCMEM_EMBD,
                   .n_slots = in->n_slots,
                   .n_tokens = in->n_tokens,
                   .n_raw = in->n_raw,
                   .n_head = in->n_head,
                   .n_layer = in->kind == MN_MEMFILE_KV ? in->n_layer : 1,
                   .dim = in->dim};
    if ((rc = check_shape(&d, m, a, 0))) goto fail;
    const size_t e = mn_memfile_block_elems(in);
    k = malloc(sizeof(float) * (e ? e : 1));
    if (d.kind == MN_DOCMEM_KV) v = malloc(sizeof(float) * (e ? e : 1));
    if (!k || (d.kind == MN_DOCMEM_KV && !v)) {
        rc = mn_error(MN_ENOMEM, "out of memory for a memory of %d slots", in->n_slots);
        goto fail;
    }
    rc = d.kind == MN_DOCMEM_KV ? mn_memfile_read_kv(mf, k, v) : mn_memfile_read_embd(mf, k);
    if (rc) goto fail;
    if (d.n_raw > 0) {
        if (!(raw = malloc(sizeof(int32_t) * (size_t)d.n_raw))) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            goto fail;
        }
        if ((rc = mn_memfile_read_raw(mf, raw))) goto fail;
    }
    d.k = k;
    d.v = v;
    d.raw = raw;
    d.owner_ = k;
    if ((rc = check_shape(&d, m, a, 1))) goto fail; /* the raw ids against the vocabulary */
    mn_memfile_free(mf);
    *out = d;
    return MN_OK;
fail:
    free(k);
    free(v);
    free(raw);
    mn_memfile_free(mf);
    return mn_error_prefix(rc, path);
}

int mn_docmem_prime(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n, int32_t *n_pos_out) {
    if (!c || !a || (n > 0 && !mems)) return mn_error(MN_EINVAL, "docmem prime: missing argument");
    if (mn_kv_n_cells(c) != 0) return mn_error(MN_EINVAL, "docmem prime needs an empty context");
    const mn_model *m = mn_context_model(c);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!mems[i]) return mn_error(MN_EINVAL, "docmem prime: memory %d is missing", i);
        int rc = check_shape(mems[i], m, a, 1);
        if (rc) return rc;
        total += mn_docmem_cells(mems[i]);
    }
    if (total > mn_context_n_ctx(c))
        return mn_error(MN_ERANGE, "%lld memory cells do not fit the context of %d", (long long)total,
                        mn_context_n_ctx(c));
    int32_t *pos = NULL;
    int rc = MN_OK;
    for (int i = 0; i < n && !rc; i++) {
        const mn_docmem *d = mems[i];
        if (d->n_head > 0 && (rc = mn_decode(c, d->raw, d->n_head, NULL, 0))) break;
        if (d->n_slots > 0 && d->kind == MN_DOCMEM_EMBD) {
            rc = mn_summary_prime(c, d->k, d->n_slots);
        } else if (d->n_slots > 0) {
            int32_t *np = realloc(pos, sizeof(int32_t) * (size_t)d->n_slots);
            if (!np) {
                rc = mn_error(MN_ENOMEM, "out of memory");
                break;
            }
            pos = np;
            const int32_t p0 = mn_kv_next_pos(c);
            for (int32_t j = 0; j < d->n_slots; j++) pos[j] = p0 + j;
            rc = mn_kv_append(c, d->n_slots, pos, d->k, d->v, 0);
        }
        if (!rc && d->n_raw > d->n_head) rc = mn_decode(c, d->raw + d->n_head, d->n_raw - d->n_head, NULL, 0);
    }
    free(pos);
    if (rc) {
        mn_kv_clear(c);
        return rc;
    }
    if (n_pos_out) *n_pos_out = mn_kv_next_pos(c);
    return MN_OK;
}
