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
#include <time.h>

#include "error.h"
#include "memory/memfile.h"
#include "memory/memory.h"
#include "memory/kvstore.h"
#include "memory/summary.h"
#include "model/forward.h"
#include "model/model.h"

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
    free(d->exact), free(d->rep), free(d->rep_sh);
    free(d->cells_heap_);
    mn_memfile_free(d->mf_);
    memset(d, 0, sizeof *d);
}

static void drop_cells(mn_docmem *d) {
    free(d->cells_heap_);
    mn_memfile_free(d->mf_);
    d->cells = NULL;
    d->cells_heap_ = d->mf_ = NULL;
}

void mn_docmem_drop_exact(mn_docmem *d) {
    if (!d) return;
    drop_cells(d);
    free(d->exact), free(d->rep), free(d->rep_sh);
    d->exact = NULL;
    d->rep = d->rep_sh = NULL;
    d->n_exact = d->exact_seg = 0;
}

int mn_docmem_compress(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int n_threads,
                       mn_docmem *out) {
    return mn_docmem_compress_progress(m, a, ids, n, n_threads, NULL, out);
}

/* The compressed part's progress as the document's (its first n_mem tokens of n). */
typedef struct {
    const mn_compress_progress *pr;
    int64_t n;
} doc_progress;

static int doc_progress_fn(void *user, int64_t done, int64_t total) {
    const doc_progress *dp = user;
    return dp->pr->fn(dp->pr->user, done < dp->n ? done : dp->n - 1, dp->n);
}

int mn_docmem_compress_progress(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int n_threads,
                                const mn_compress_progress *pr0, mn_docmem *out) {
    doc_progress dp = {pr0, n};
    const mn_compress_progress wrapped = {doc_progress_fn, &dp};
    const mn_compress_progress *pr = pr0 && pr0->fn ? &wrapped : NULL;
    memset(out, 0, sizeof *out);
    if (!m || !a || !ids) return mn_error(MN_EINVAL, "docmem compress: no model, adapter or tokens");
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to compress");
    mn_memory_binding b;
    int rc = mn_memory_bind(m, a, &b);
    if (rc) return rc;
    float *k = NULL, *v = NULL, *rep = NULL, *rep_sh = NULL;
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
        /* with a recent window the compressed segments are whole: they keep their exact form for recall */
        if (n_mem > 0 && b.uio.params.recent > 0)
            rc = mn_uio_compress_doc_indexed(m, &b.uio.params, ids, n_mem, n_threads, pr, &k, &v, &rep, &rep_sh, &M);
        else rc = n_mem > 0 ? mn_uio_compress_doc(m, &b.uio.params, ids, n_mem, n_threads, &k, &v, &M) : MN_OK;
        break;
    case MN_COMP_BEACON: rc = mn_beacon_compress_doc(m, &b.beacon.params, ids, n, n_threads, &k, &v, &M); break;
    case MN_COMP_SUMMARY: rc = mn_summary_compress_doc(m, &b.summary.params, ids, n, n_threads, pr, &k, &M); break;
    }
    const int32_t seg = b.kind == MN_COMP_UIO ? b.uio.params.l : 0;
    /* the paths that report as they go ended with all tokens; the others report once, at the end */
    mn_memory_unbind(&b);
    if (!rc && pr) pr0->fn(pr0->user, n, n); /* the whole document, once, at the end */
    int32_t *exact = NULL;
    if (!rc && rep) {
        if (n_mem > MN_MEMFILE_MAX_EXACT) rc = mn_error(MN_ERANGE, "%lld exact tokens exceed %d", (long long)n_mem, MN_MEMFILE_MAX_EXACT);
        else if (!(exact = malloc(sizeof(int32_t) * (size_t)n_mem))) rc = mn_error(MN_ENOMEM, "out of memory");
        else memcpy(exact, ids, sizeof(int32_t) * (size_t)n_mem);
    }
    if (rc) {
        free(raw), free(k), free(v), free(rep), free(rep_sh), free(exact);
        memset(out, 0, sizeof *out);
        return rc;
    }
    if (rep) {
        out->n_exact = (int32_t)n_mem;
        out->exact_seg = seg;
        out->exact = exact;
        out->rep = rep;
        out->rep_sh = rep_sh;
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

int mn_docmem_add_cells(const mn_model *m, const mn_adapter *a, mn_docmem *d, int n_threads) {
    if (!m || !a || !d) return mn_error(MN_EINVAL, "docmem cells: missing argument");
    if (d->kind != MN_DOCMEM_KV || d->n_exact <= 0 || d->exact_seg <= 0 || !d->exact)
        return mn_error(MN_EINVAL, "exact cells need a UIO memory with an exact part (an adapter with a recent window)");
    const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m), l = d->exact_seg, S = d->n_exact / l;
    if (d->n_layer != L || d->dim != KD || d->n_slots % S)
        return mn_error(MN_EINVAL, "memory of %d layers x %d, %d slots for %d segments, does not fit the model", d->n_layer,
                        d->dim, d->n_slots, S);
    if (KD % 32) return mn_error(MN_EUNSUPPORTED, "exact cells need a kv width divisible by 32 (this model: %d)", KD);
    const int32_t per = d->n_slots / S, head = d->n_head < l ? d->n_head : 0;
    const size_t cb = mn_kvstore_cell_bytes(m), seg_bytes = cb * (size_t)l;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = head + d->n_slots + l;
    cp.n_threads = n_threads;
    mn_context *c = NULL;
    uint8_t *cells = malloc(seg_bytes * (size_t)S);
    float *k = malloc(sizeof(float) * (size_t)L * (size_t)l * (size_t)KD),
          *v = malloc(sizeof(float) * (size_t)L * (size_t)l * (size_t)KD),
          *sk = malloc(sizeof(float) * (size_t)L * (size_t)per * (size_t)KD),
          *sv = malloc(sizeof(float) * (size_t)L * (size_t)per * (size_t)KD);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)per);
    int rc = !cells || !k || !v || !sk || !sv || !pos ? mn_error(MN_ENOMEM, "out of memory for the exact cells")
                                                     : mn_context_create(m, &cp, &c);
    /* the reader decodes the paged segments at question time, so it reads them here too */
    const mn_lora_set *reader = mn_adapter_reader(a);
    if (!rc && reader) rc = mn_context_set_lora(c, reader);
    for (int32_t j = 0; j < S && !rc; j++) {
        /* [head | slots of segments 0..j-1] then segment j; the first segment holds the head */
        const int32_t base = j == 0 ? 0 : head + j * per;
        rc = mn_decode(c, d->exact + (size_t)j * l, l, NULL, 0);
        if (!rc) rc = mn_kvstore_read_cells(c, base, l, k, v);
        if (rc) break;
        mn_kvstore_encode(L, KD, l, k, v, cells + (size_t)j * seg_bytes);
        if ((rc = mn_kv_drop(c, j == 0 ? head : base, mn_kv_n_cells(c)))) break;
        /* segment j's slots after the others (d->k is (L, n_slots, KD)) */
        for (int32_t li = 0; li < L; li++) {
            memcpy(sk + (size_t)li * per * KD, d->k + ((size_t)li * d->n_slots + (size_t)j * per) * KD,
                   sizeof(float) * (size_t)per * (size_t)KD);
            memcpy(sv + (size_t)li * per * KD, d->v + ((size_t)li * d->n_slots + (size_t)j * per) * KD,
                   sizeof(float) * (size_t)per * (size_t)KD);
        }
        const int32_t p0 = mn_kv_next_pos(c);
        for (int32_t i = 0; i < per; i++) pos[i] = p0 + i;
        rc = mn_kv_append(c, per, pos, sk, sv, 0);
    }
    mn_context_free(c);
    free(k), free(v), free(sk), free(sv), free(pos);
    if (rc) {
        free(cells);
        return rc;
    }
    drop_cells(d);
    d->cells = cells;
    d->cells_heap_ = cells;
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
    if (d->n_exact < 0 || (d->n_exact > 0 && (want != MN_DOCMEM_KV || d->exact_seg <= 0 || d->n_exact % d->exact_seg ||
                                              d->n_slots % (d->n_exact / d->exact_seg))))
        return mn_error(MN_EINVAL, "memory's exact part (%d tokens in segments of %d) does not match its %d slots",
                        d->n_exact, d->exact_seg, d->n_slots);
    if (need_data && d->n_exact > 0 && (!d->exact || !d->rep || !d->rep_sh))
        return mn_error(MN_EINVAL, "memory with an exact part but no data");
    if (d->cells && (d->n_exact <= 0 || d->dim % 32))
        return mn_error(MN_EINVAL, "memory with exact cells but no exact part (or a kv width not divisible by 32)");
    for (int32_t i = 0; need_data && i < d->n_exact; i++)
        if (d->exact[i] < 0 || d->exact[i] >= mn_model_n_vocab(m))
            return mn_error(MN_EINVAL, "memory's exact token %d (id %d) is not in the model's vocabulary", i, d->exact[i]);
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
    info.n_exact = d->n_exact;
    info.exact_seg = d->n_exact ? d->exact_seg : 0;
    info.exact_rep = d->n_exact ? MN_RECALL_REP : 0;
    if (d->n_exact && d->cells) info.flags |= MN_MEMFILE_EXACT_KV;
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
    return mn_memfile_write_exact(path, &info, d->k, d->kind == MN_DOCMEM_KV ? d->v : NULL, d->raw, d->exact, d->rep,
                                  d->rep_sh, d->cells, f32 ? MN_MEMFILE_F32 : MN_MEMFILE_F16);
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
    float *k = NULL, *v = NULL, *rep = NULL, *rep_sh = NULL;
    int32_t *raw = NULL, *exact = NULL;
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
                   .dim = in->dim,
                   .n_exact = in->n_exact,
                   .exact_seg = in->exact_seg};
    if (in->n_exact > 0 && in->exact_rep != MN_RECALL_REP) {
        rc = mn_error(MN_EUNSUPPORTED, "memory file indexes its segments with %d keys each, this build with %d",
                      in->exact_rep, MN_RECALL_REP);
        goto fail;
    }
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
    if (d.n_exact > 0) {
        const size_t ke = mn_memfile_exact_key_elems(in);
        exact = malloc(sizeof(int32_t) * (size_t)d.n_exact);
        rep = malloc(sizeof(float) * ke), rep_sh = malloc(sizeof(float) * ke);
        if (!exact || !rep || !rep_sh) {
            rc = mn_error(MN_ENOMEM, "out of memory for the exact part");
            goto fail;
        }
        if ((rc = mn_memfile_read_exact(mf, exact, rep, rep_sh))) goto fail;
    }
    /* the cells stay in the mapping: a page-in reads only its segment's pages */
    size_t cbytes = 0;
    d.cells = mn_memfile_exact_cells(mf, &cbytes);
    if (d.cells && cbytes != (size_t)d.n_exact * mn_kvstore_cell_bytes(m)) {
        rc = mn_error(MN_EINVAL, "memory file's exact cells (%zu bytes) do not fit the model's %zu a token", cbytes,
                      mn_kvstore_cell_bytes(m));
        goto fail;
    }
    d.k = k;
    d.v = v;
    d.raw = raw;
    d.exact = exact;
    d.rep = rep;
    d.rep_sh = rep_sh;
    d.owner_ = k;
    if ((rc = check_shape(&d, m, a, 1))) goto fail; /* the raw ids against the vocabulary */
    if (d.cells) d.mf_ = mf;
    else mn_memfile_free(mf);
    *out = d;
    return MN_OK;
fail:
    free(k), free(v), free(raw), free(exact), free(rep), free(rep_sh);
    mn_memfile_free(mf);
    return mn_error_prefix(rc, path);
}

int mn_docmem_prime(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n, int32_t *n_pos_out) {
    return mn_docmem_prime_recall(c, a, mems, n, NULL, NULL, 0, n_pos_out, NULL);
}

/* Segments a memory of S stored segments pages: its share of a total k, or
 * (auto) its own count for S. */
static int32_t mem_k(int32_t k, int with, int32_t S) { return k >= 0 ? (k + with - 1) / with : mn_recall_auto_k(k, S); }

int32_t mn_docmem_recall_k(const mn_docmem *const *mems, int n, int32_t k) {
    if (k >= 0) return k;
    int32_t total = 0;
    for (int i = 0; i < n; i++)
        if (mems[i] && mems[i]->n_exact > 0) total += mn_recall_auto_k(k, mems[i]->n_exact / mems[i]->exact_seg);
    return total < MN_DOCMEM_RECALL_MAXK ? total : MN_DOCMEM_RECALL_MAXK;
}

int64_t mn_docmem_recall_cells(const mn_docmem *const *mems, int n, int32_t k) {
    int64_t cells = 0;
    int with = 0;
    for (int i = 0; i < n; i++) with += mems[i] && mems[i]->n_exact > 0;
    for (int i = 0; i < n && k != 0; i++) {
        const mn_docmem *d = mems[i];
        if (!d || d->n_exact <= 0) continue;
        const int64_t S = d->n_exact / d->exact_seg, ki = mem_k(k, with, (int32_t)S);
        cells += (ki < S ? ki : S) * d->exact_seg;
    }
    return cells;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The raw tail's tokens a short window (ro->local) leaves out: they are
 * offered to recall beside the compressed segments, in segments of the same
 * length, from the tail's start (BM25 reads their text; the key scorers have
 * no keys for them). */
static int32_t tail_dropped(const mn_docmem *d, const mn_recall_opts *ro) {
    const int32_t tail = d->n_raw - d->n_head;
    return ro->local > 0 && tail > ro->local ? tail - ro->local : 0;
}

/* The raw cells priming d adds: its head and its tail, the tail cut to
 * ro->local where recall will page segments beside it. */
static int64_t raw_cells(const mn_docmem *d, const mn_recall_opts *ro, int recall) {
    const int32_t tail = d->n_raw - d->n_head;
    if (recall && d->n_exact > 0 && ro->k != 0 && ro->local > 0 && tail > ro->local) return d->n_head + ro->local;
    return d->n_raw;
}

/* The largest cap with sum(min(n_slots, cap)) <= budget: memories that hold
 * the most slots give up their oldest first. */
static int32_t slot_cap(const mn_docmem *const *mems, int n, int64_t budget) {
    int32_t lo = 0, hi = 0;
    for (int i = 0; i < n; i++) hi = mems[i]->n_slots > hi ? mems[i]->n_slots : hi;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo + 1) / 2;
        int64_t sum = 0;
        for (int i = 0; i < n; i++) sum += mems[i]->n_slots < mid ? mems[i]->n_slots : mid;
        if (sum <= budget) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Appends d's KV slots [first, n_slots) at the next positions. The slots are
 * stored layer by layer (n_layer, n_slots, dim), so the newest ones are copied
 * out in pieces. pos holds n_slots entries. */
static int append_newest(mn_context *c, const mn_docmem *d, int32_t first, int32_t *pos) {
    enum { PIECE = 256 };
    const size_t L = (size_t)d->n_layer, D = (size_t)d->dim;
    float *bk = malloc(sizeof(float) * PIECE * L * D), *bv = malloc(sizeof(float) * PIECE * L * D);
    int rc = bk && bv ? MN_OK : mn_error(MN_ENOMEM, "out of memory");
    for (int32_t s0 = first; s0 < d->n_slots && !rc; s0 += PIECE) {
        const int32_t np = d->n_slots - s0 < PIECE ? d->n_slots - s0 : PIECE;
        for (size_t l = 0; l < L; l++) {
            memcpy(bk + l * np * D, d->k + (l * (size_t)d->n_slots + (size_t)s0) * D, sizeof(float) * np * D);
            memcpy(bv + l * np * D, d->v + (l * (size_t)d->n_slots + (size_t)s0) * D, sizeof(float) * np * D);
        }
        const int32_t p0 = mn_kv_next_pos(c);
        for (int32_t j = 0; j < np; j++) pos[j] = p0 + j;
        rc = mn_kv_append(c, np, pos, bk, bv, 0);
    }
    free(bk), free(bv);
    return rc;
}

/* The document position of the raw tail's first token. */
static int64_t tail_start(const mn_docmem *d) { return d->n_tokens - (d->n_raw - d->n_head); }

/* Candidate seg's ids: a compressed segment (seg < S) or a segment of the
 * dropped raw tail, cut as mn_exact_add_text cuts it; *start its first token
 * in the document. */
static const int32_t *cand_ids(const mn_docmem *d, const mn_recall_opts *ro, int32_t seg, int32_t *n, int64_t *start) {
    const int32_t S = d->n_exact / d->exact_seg;
    if (seg < S) {
        *n = d->exact_seg, *start = (int64_t)seg * d->exact_seg;
        return d->exact + (size_t)seg * d->exact_seg;
    }
    const int32_t off = (seg - S) * d->exact_seg, drop = tail_dropped(d, ro);
    *n = drop - off < d->exact_seg ? drop - off : d->exact_seg;
    *start = tail_start(d) + off;
    return d->raw + d->n_head + off;
}

/* Chooses up to k of d's segments (and of its dropped tail's) for the query.
 * A key scorer reads it after the cells primed so far in c (to capture its
 * queries) and drops it again; BM25 reads no context (c may be NULL). */
static int choose(const mn_model *m, mn_context *c, const mn_docmem *d, const mn_recall_opts *ro, int32_t k,
                  const int32_t *q, int32_t nq, int32_t *segs, int32_t *n_segs) {
    const int32_t S = d->n_exact / d->exact_seg, per = d->n_slots / S, L = mn_model_n_layer(m);
    const int32_t drop = tail_dropped(d, ro);
    const size_t re = (size_t)L * MN_RECALL_REP * (size_t)d->dim;
    mn_exact *x = NULL;
    float *qb = NULL, *scores = malloc(sizeof(float) * (size_t)(S + drop / d->exact_seg + 1));
    /* the keys are converted into the store only for a scorer that reads them */
    const int keys = mn_recall_scorer_needs_q(ro->scorer);
    int rc = !scores ? mn_error(MN_ENOMEM, "out of memory")
             : keys  ? mn_exact_create(m, d->exact_seg, per, &x)
                     : mn_exact_create_lexical(m, d->exact_seg, &x);
    for (int32_t s = 0; s < S && !rc; s++)
        rc = mn_exact_add(x, d->exact + (size_t)s * d->exact_seg, d->exact_seg, (int64_t)s * d->exact_seg, d->rep + s * re,
                          d->rep_sh + s * re, d->k + (size_t)s * per * d->dim, d->n_slots);
    if (!rc && drop > 0) rc = mn_exact_add_text(x, d->raw + d->n_head, drop, tail_start(d));
    if (!rc && keys) {
        if (!(qb = malloc(sizeof(float) * (size_t)L * (size_t)nq * (size_t)mn_model_q_dim(m))))
            rc = mn_error(MN_ENOMEM, "out of memory");
        else rc = mn_recall_capture_queries(c, q, nq, qb);
    }
    if (!rc) rc = mn_exact_score(x, ro->scorer, qb, q, nq, scores);
    if (!rc) *n_segs = mn_exact_top(x, scores, k, segs);
    mn_exact_free(x);
    free(qb), free(scores);
    return rc;
}

int mn_docmem_prime_recall(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n,
                           const mn_recall_opts *ro, const int32_t *q, int32_t nq, int32_t *n_pos_out,
                           mn_docmem_paged *paged) {
    if (!c || !a || (n > 0 && !mems)) return mn_error(MN_EINVAL, "docmem prime: missing argument");
    if (paged) memset(paged, 0, sizeof *paged);
    if (ro && ro->k != 0 &&
        ((ro->k < 0 && ro->k != MN_RECALL_AUTO) || ro->k > MN_DOCMEM_RECALL_MAXK || (unsigned)ro->scorer >= MN_RECALL_N_SCORERS))
        return mn_error(MN_EINVAL, "recall of %d segments (1..%d, or auto) by scorer %d", ro->k, MN_DOCMEM_RECALL_MAXK,
                        (int)ro->scorer);
    int with = 0; /* memories with an exact part; without any, recall is off */
    for (int i = 0; i < n && ro && ro->k != 0; i++) with += mems[i] && mems[i]->n_exact > 0;
    const int recall = with > 0;
    if (recall && (!q || nq <= 0)) return mn_error(MN_EINVAL, "recall needs a query");
    if (recall && nq > MN_RECALL_MAXQ) { /* the end of a long query: what the answer follows */
        q += nq - MN_RECALL_MAXQ;
        nq = MN_RECALL_MAXQ;
    }
    if (mn_kv_n_cells(c) != 0) return mn_error(MN_EINVAL, "docmem prime needs an empty context");
    const mn_model *m = mn_context_model(c);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!mems[i]) return mn_error(MN_EINVAL, "docmem prime: memory %d is missing", i);
        int rc = check_shape(mems[i], m, a, 1);
        if (rc) return rc;
        total += mn_docmem_cells(mems[i]);
    }
    const int64_t rcells = recall ? mn_docmem_recall_cells(mems, n, ro->k) : 0;
    total += rcells;
    int32_t cap = INT32_MAX; /* the most slots a memory keeps (ro->fit) */
    if (ro && ro->fit) {
        int64_t budget = (int64_t)mn_context_n_ctx(c) - (ro->reserve > 0 ? ro->reserve : 0) - rcells, slots = 0;
        for (int i = 0; i < n; i++) budget -= raw_cells(mems[i], ro, recall), slots += mems[i]->n_slots;
        if (budget < 0)
            return mn_error(MN_ERANGE,
                            "the memories' raw tokens and %lld recalled cells leave no room for %d cells in the "
                            "context of %d",
                            (long long)rcells, ro->reserve, mn_context_n_ctx(c));
        if (slots > budget) cap = slot_cap(mems, n, budget);
    } else if (total > mn_context_n_ctx(c))
        return mn_error(MN_ERANGE, "%lld memory cells do not fit the context of %d", (long long)total,
                        mn_context_n_ctx(c));
    int32_t *pos = NULL;
    float *ck = NULL, *cv = NULL; /* one segment's cells (the longest), for memories that keep them */
    int rc = MN_OK;
    size_t ce = 0, np = 1; /* the longest exact segment with cells; the longest run of positions placed */
    for (int i = 0; i < n; i++) {
        if (recall && mems[i]->cells && (size_t)mems[i]->exact_seg > ce) ce = (size_t)mems[i]->exact_seg;
        if ((size_t)mems[i]->n_slots > np) np = (size_t)mems[i]->n_slots;
    }
    if (ce > np) np = ce;
    ce *= (size_t)mn_model_n_layer(m) * (size_t)mn_model_kv_dim(m);
    if (!(pos = malloc(sizeof(int32_t) * np)) ||
        (ce && (!(ck = malloc(sizeof(float) * ce)) || !(cv = malloc(sizeof(float) * ce)))))
        rc = mn_error(MN_ENOMEM, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        const mn_docmem *d = mems[i];
        int32_t segs[MN_DOCMEM_RECALL_MAXK], ns = 0;
        if (d->n_head > 0 && (rc = mn_decode(c, d->raw, d->n_head, NULL, 0))) break;
        const int32_t keep = d->n_slots < cap ? d->n_slots : cap, first = d->n_slots - keep;
        if (paged) paged->slots_out += first;
        if (keep > 0 && d->kind == MN_DOCMEM_EMBD) {
            rc = mn_summary_prime(c, d->k + (size_t)first * d->dim, keep);
        } else if (keep > 0 && first == 0) {
            const int32_t p0 = mn_kv_next_pos(c);
            for (int32_t j = 0; j < d->n_slots; j++) pos[j] = p0 + j;
            rc = mn_kv_append(c, d->n_slots, pos, d->k, d->v, 0);
        } else if (keep > 0) {
            rc = append_newest(c, d, first, pos);
        }
        if (!rc && recall && d->n_exact > 0) {
            const double t0 = now_s();
            rc = choose(m, c, d, ro, mem_k(ro->k, with, d->n_exact / d->exact_seg), q, nq, segs, &ns);
            if (paged) paged->select_s += now_s() - t0, paged->stored += d->n_exact / d->exact_seg;
        }
        for (int pass = 0; pass < 2 && !rc; pass++) {
            /* the paged segments before the raw tail (document order), or after it (late) */
            if (pass == (recall && ro->late) && ns > 0) {
                const double t0 = now_s();
                for (int32_t j = 0; j < ns && !rc; j++) {
                    int32_t len;
                    int64_t st;
                    const int32_t *ids = cand_ids(d, ro, segs[j], &len, &st);
                    if (d->cells && segs[j] < d->n_exact / d->exact_seg) { /* its stored cells, at the next positions */
                        const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m);
                        mn_kvstore_decode(L, KD, len, d->cells + (size_t)segs[j] * len * mn_kvstore_cell_bytes(m), ck, cv);
                        const int32_t p0 = mn_kv_next_pos(c);
                        for (int32_t t = 0; t < len; t++) pos[t] = p0 + t;
                        rc = mn_kv_append(c, len, pos, ck, cv, 0);
                    } else
                        rc = mn_decode(c, ids, len, NULL, 0);
                    if (!rc && paged && paged->n < MN_DOCMEM_RECALL_MAXK) {
                        paged->mem[paged->n] = i;
                        paged->start[paged->n] = st;
                        paged->len[paged->n++] = len;
                        paged->cells += len;
                    }
                }
                if (paged) paged->page_s += now_s() - t0;
            }
            if (pass == (recall && ro->late ? 0 : 1) && !rc && d->n_raw > d->n_head) {
                /* with segments paged, the raw tail's newest ro->local tokens only */
                int32_t from = d->n_head;
                if (ns > 0 && ro->local > 0 && d->n_raw - from > ro->local) from = d->n_raw - ro->local;
                if (ro && ro->fit) { /* the newest tokens that fit (planned for, unless fewer segments were paged) */
                    int64_t room = (int64_t)mn_context_n_ctx(c) - mn_kv_n_cells(c) - (ro->reserve > 0 ? ro->reserve : 0);
                    if (room < 0) room = 0;
                    if (d->n_raw - from > room) from = d->n_raw - (int32_t)room;
                }
                if (d->n_raw > from) rc = mn_decode(c, d->raw + from, d->n_raw - from, NULL, 0);
            }
        }
    }
    free(pos), free(ck), free(cv);
    if (rc) {
        mn_kv_clear(c);
        return rc;
    }
    if (n_pos_out) *n_pos_out = mn_kv_next_pos(c);
    return MN_OK;
}

int mn_docmem_recall_choice(const mn_model *m, const mn_docmem *const *mems, int n, const mn_recall_opts *ro,
                            const int32_t *q, int32_t nq, mn_docmem_paged *out) {
    memset(out, 0, sizeof *out);
    if (!ro || ro->k == 0) return MN_OK;
    if (mn_recall_scorer_needs_q(ro->scorer))
        return mn_error(MN_EUNSUPPORTED, "recall choice without a context: scorer %s reads the query's queries",
                        mn_recall_scorer_name(ro->scorer));
    int with = 0;
    for (int i = 0; i < n; i++) with += mems[i] && mems[i]->n_exact > 0;
    if (!with) return MN_OK;
    if (!q || nq <= 0) return mn_error(MN_EINVAL, "recall needs a query");
    if (nq > MN_RECALL_MAXQ) { /* as mn_docmem_prime_recall reads it: the end of a long query */
        q += nq - MN_RECALL_MAXQ;
        nq = MN_RECALL_MAXQ;
    }
    int rc = MN_OK;
    for (int i = 0; i < n && !rc; i++) {
        const mn_docmem *d = mems[i];
        if (!d || d->n_exact <= 0) continue;
        int32_t segs[MN_DOCMEM_RECALL_MAXK], ns = 0;
        if ((rc = choose(m, NULL, d, ro, mem_k(ro->k, with, d->n_exact / d->exact_seg), q, nq, segs, &ns))) break;
        out->stored += d->n_exact / d->exact_seg;
        for (int32_t j = 0; j < ns && out->n < MN_DOCMEM_RECALL_MAXK; j++) {
            int32_t len;
            int64_t st;
            cand_ids(d, ro, segs[j], &len, &st);
            out->mem[out->n] = i, out->start[out->n] = st, out->len[out->n++] = len;
            out->cells += len;
        }
    }
    return rc;
}

int mn_docmem_reselect(mn_context *c, const mn_adapter *a, const mn_docmem *const *mems, int n, const mn_recall_opts *ro,
                       const int32_t *q, int32_t nq, const int32_t *ids, int64_t n_ids, float *logits,
                       mn_docmem_paged *paged, int *changed) {
    *changed = 0;
    if (!ro || ro->k == 0 || !paged || paged->n == 0 || mn_recall_scorer_needs_q(ro->scorer)) return MN_OK;
    const double t0 = now_s();
    mn_docmem_paged now;
    int rc = mn_docmem_recall_choice(mn_context_model(c), mems, n, ro, q, nq, &now);
    const double chose = now_s() - t0;
    if (rc) return rc;
    int same = now.n == paged->n;
    for (int32_t i = 0; i < now.n && same; i++)
        same = now.mem[i] == paged->mem[i] && now.start[i] == paged->start[i] && now.len[i] == paged->len[i];
    paged->select_s += chose;
    if (same) return MN_OK;
    /* another choice: the context as a fresh prime with this query makes it, then what was read after it */
    const mn_docmem_paged was = *paged;
    mn_kv_clear(c);
    if ((rc = mn_docmem_prime_recall(c, a, mems, n, ro, q, nq, NULL, paged))) return rc;
    const int32_t piece = 512;
    for (int64_t i = 0; i < n_ids && !rc; i += piece) {
        const int32_t np = (int32_t)(n_ids - i < piece ? n_ids - i : piece);
        rc = mn_decode(c, ids + i, np, i + np == n_ids ? logits : NULL, 0);
    }
    paged->select_s += was.select_s, paged->page_s += was.page_s;
    *changed = 1;
    return rc;
}

const int32_t *mn_docmem_ids_at(const mn_docmem *d, int64_t start, int32_t len) {
    if (!d || start < 0 || len < 0) return NULL;
    if (d->exact && start + len <= d->n_exact) return d->exact + start;
    const int64_t t0 = tail_start(d);
    if (d->raw && start >= t0 && start + len <= d->n_tokens) return d->raw + d->n_head + (start - t0);
    return NULL;
}
