/* memory.c - binding a compressor adapter to the runtime (see memory.h). */
#include "memory/memory.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "memory/memfile.h"
#include "memory/summary.h"
#include "threadpool.h"

/* LoRA views of one adapter target for every layer (rank 0 where absent). */
static int lora_list(const mn_adapter *a, int n_layer, mn_lora_target which, mn_lora **out) {
    mn_lora *l = calloc((size_t)n_layer, sizeof *l);
    if (!l) return mn_error(MN_ENOMEM, "out of memory");
    for (int i = 0; i < n_layer; i++) {
        const float *A, *B;
        int r;
        int rc = mn_adapter_lora(a, i, which, &A, &B, &r);
        if (rc == MN_ENOTFOUND) continue;
        if (rc) {
            free(l);
            return rc;
        }
        l[i] = (mn_lora){A, B, r};
    }
    *out = l;
    return MN_OK;
}

int mn_uio_bind(const mn_model *m, const mn_adapter *a, mn_uio_binding *b) {
    memset(b, 0, sizeof *b);
    const mn_adapter_params *cfg = mn_adapter_config(a);
    if (cfg->compressor != MN_COMP_UIO)
        return mn_error(MN_EINVAL, "expected a UIO adapter, this one is '%s'", mn_compressor_name(cfg->compressor));
    if (mn_adapter_base_hash(a) != mn_model_hash(m))
        return mn_error(MN_EINVAL, "adapter was made for another model ('%s')", mn_adapter_base_name(a));
    const int L = mn_model_n_layer(m);
    int rc;
    if ((rc = lora_list(a, L, MN_LORA_ENC_Q, &b->enc_q)) || (rc = lora_list(a, L, MN_LORA_ENC_V, &b->enc_v)) ||
        (rc = lora_list(a, L, MN_LORA_MEM_K, &b->mem_k)) || (rc = lora_list(a, L, MN_LORA_MEM_V, &b->mem_v))) {
        mn_uio_unbind(b);
        return rc;
    }
    const float scale = mn_adapter_lora_scale(a);
    b->encoder = (mn_lora_set){.scale = scale, .q = b->enc_q, .v = b->enc_v};
    b->transfer = (mn_lora_set){.scale = scale, .k = b->mem_k, .v = b->mem_v};
    b->params = (mn_uio_params){.l = cfg->segment,
                                .m = mn_adapter_n_mem(a),
                                .mem_embd = mn_adapter_mem_embd(a),
                                .encoder = &b->encoder,
                                .transfer = &b->transfer,
                                .recent = cfg->recent};
    return MN_OK;
}

void mn_uio_unbind(mn_uio_binding *b) {
    free(b->enc_q);
    free(b->enc_v);
    free(b->mem_k);
    free(b->mem_v);
    memset(b, 0, sizeof *b);
}

uint64_t mn_adapter_hash(const mn_adapter *a) {
    uint64_t h = MN_FNV64_INIT;
    /* the configuration shapes the memory as much as the tensors do (two
     * beacon adapters can hold the same matrices with other ratios/schemes) */
    const mn_adapter_params *p = mn_adapter_config(a);
    int32_t cfg[8 + MN_ADAPTER_MAX_RATIOS] = {(int32_t)p->compressor, p->segment, p->ratio, p->rank};
    if (p->compressor == MN_COMP_BEACON) {
        cfg[4] = (int32_t)p->placement, cfg[5] = (int32_t)p->attention, cfg[6] = p->attend_prev * 2 + p->proj_o;
        cfg[7] = p->sinks;
        for (int i = 0; i < p->n_ratios; i++) cfg[8 + i] = p->ratios[i];
    }
    h = mn_memfile_fnv1a64(h, cfg, sizeof cfg);
    h = mn_memfile_fnv1a64(h, &p->alpha, sizeof p->alpha);
    for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
        const char *name;
        int nd;
        int64_t ne[2];
        const float *data;
        if (mn_adapter_tensor_at(a, i, &name, &nd, ne, &data)) continue;
        h = mn_memfile_fnv1a64(h, name, strlen(name));
        h = mn_memfile_fnv1a64(h, ne, sizeof ne);
        h = mn_memfile_fnv1a64(h, data, sizeof(float) * (size_t)ne[0] * (size_t)(nd > 1 ? ne[1] : 1));
    }
    return h;
}

/* What a document's workers share: tokens done, a stop asked by the
 * progress callback, workers finished. */
typedef struct {
    atomic_llong done;
    atomic_int stop, finished;
} doc_shared;

/* Segments are independent, so workers take them round-robin, each with its
 * own single-threaded encoder; segment s fills slots [s*m, s*m + m_s). */
typedef struct {
    const mn_model *m;
    const mn_uio_params *p;
    const int32_t *ids;
    int64_t n;
    int n_workers, id;
    int32_t KD;
    float *k, *v;
    float *e; /* summary mode: (M, C) final hidden states instead of k, v */
    float *rep, *rep_sh; /* recall's index: (n_seg, L, R, KD) each, or NULL */
    int32_t M;
    int rc;
    char err[256];
    doc_shared *sh; /* progress and stop, shared by the workers */
} doc_job;

static void *doc_worker(void *arg) {
    doc_job *j = arg;
    mn_uio *u;
    if ((j->rc = mn_uio_create(j->m, j->p, 1, &u)) || (j->rep && (j->rc = mn_uio_capture_queries(u)))) {
        snprintf(j->err, sizeof j->err, "%s", mn_last_error());
        mn_uio_free(u);
        return NULL;
    }
    const int64_t l = j->p->l, n_seg = (j->n + l - 1) / l;
    const int32_t L = mn_model_n_layer(j->m);
    const size_t per = (size_t)j->p->m * (size_t)j->KD;
    float *k = malloc(sizeof(float) * per * (size_t)L), *v = malloc(sizeof(float) * per * (size_t)L);
    if (!k || !v) j->rc = mn_error(MN_ENOMEM, "out of memory");
    for (int64_t s = j->id; s < n_seg && !j->rc; s += j->n_workers) {
        if (atomic_load(&j->sh->stop)) {
            j->rc = mn_error(MN_ECANCELLED, "stopped");
            break;
        }
        int32_t r = (int32_t)(j->n - s * l < l ? j->n - s * l : l), ms;
        atomic_fetch_add(&j->sh->done, r); /* counted as begun: the last report comes after the join */
        if (j->e) {
            const size_t C = (size_t)mn_model_n_embd(j->m);
            j->rc = mn_uio_encode_out(u, j->ids + s * l, r, j->e + (size_t)s * (size_t)j->p->m * C, &ms);
            continue;
        }
        if ((j->rc = mn_uio_compress_n(u, j->ids + s * l, r, k, v, &ms))) break;
        if (j->rep) {
            const size_t re = (size_t)L * MN_RECALL_REP * (size_t)j->KD;
            const int32_t *mpos;
            int32_t mm;
            const float *mq = mn_uio_last_queries(u, &mpos, &mm);
            if ((j->rc = mn_recall_rep_keys(j->m, mn_uio_context(u), r, mq, mpos, mm, j->rep + (size_t)s * re,
                                            j->rep_sh + (size_t)s * re)))
                break;
        }
        /* scatter (L, ms, KD) into the document's (L, M, KD) at slot s*m */
        for (int32_t li = 0; li < L; li++) {
            size_t dst = ((size_t)li * (size_t)j->M + (size_t)s * (size_t)j->p->m) * (size_t)j->KD;
            memcpy(j->k + dst, k + (size_t)li * (size_t)ms * (size_t)j->KD, sizeof(float) * (size_t)ms * (size_t)j->KD);
            memcpy(j->v + dst, v + (size_t)li * (size_t)ms * (size_t)j->KD, sizeof(float) * (size_t)ms * (size_t)j->KD);
        }
    }
    if (j->rc) snprintf(j->err, sizeof j->err, "%s", mn_last_error());
    free(k);
    free(v);
    mn_uio_free(u);
    atomic_fetch_add(&j->sh->finished, 1);
    return NULL;
}

/* Both document modes: memory K/V (k_out, v_out) or final hidden states (e_out). */
static int compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                        const mn_compress_progress *pr, float **k_out, float **v_out, float **e_out, float **rep_out,
                        float **rep_sh_out, int32_t *M_out) {
    *M_out = 0;
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to compress");
    if (p->m <= 0 || p->l <= 0 || p->l % p->m)
        return mn_error(MN_EINVAL, "ratio: %d memory tokens do not divide a segment of %d", p->m, p->l);
    const int64_t l = p->l, stride = p->l / p->m, full = n / l, rem = n - full * l;
    const int64_t M = full * p->m + (rem + stride - 1) / stride;
    if (M > (1 << 24)) return mn_error(MN_ERANGE, "document too long: %lld memory slots", (long long)M);
    const int32_t L = mn_model_n_layer(m);
    const int32_t kd = mn_model_kv_dim(m);
    const size_t total = (size_t)L * (size_t)M * (size_t)kd;
    float *k = NULL, *v = NULL, *e = NULL;
    if (e_out) {
        e = malloc(sizeof(float) * (size_t)M * (size_t)mn_model_n_embd(m));
        if (!e) return mn_error(MN_ENOMEM, "out of memory for %lld summary embeddings", (long long)M);
    } else {
        k = malloc(sizeof(float) * total);
        v = malloc(sizeof(float) * total);
    }
    float *rep = NULL, *rep_sh = NULL;
    if (rep_out) {
        const size_t re = (size_t)((n + l - 1) / l) * (size_t)L * MN_RECALL_REP * (size_t)kd;
        rep = malloc(sizeof(float) * re), rep_sh = malloc(sizeof(float) * re);
    }
    if ((!e_out && (!k || !v)) || (rep_out && (!rep || !rep_sh))) {
        free(k), free(v), free(rep), free(rep_sh);
        return mn_error(MN_ENOMEM, "out of memory for %lld memory slots", (long long)M);
    }
    if (n_threads <= 0) n_threads = mn_cpu_count();
    int64_t n_seg = full + (rem > 0);
    if (n_threads > n_seg) n_threads = (int)n_seg;
    doc_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    if (!jobs || !tids) {
        free(k), free(v), free(e), free(jobs), free(tids), free(rep), free(rep_sh);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    doc_shared sh;
    atomic_init(&sh.done, 0), atomic_init(&sh.stop, 0), atomic_init(&sh.finished, 0);
    /* with progress, every worker is a thread and the calling thread reports (a callback into a
     * binding runs where it was called from) */
    const int first = pr && pr->fn ? 0 : 1;
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (doc_job){m, p, ids, n, n_threads, i, kd, k, v, e, rep, rep_sh, (int32_t)M, 0, {0}, &sh};
        if (i >= first && pthread_create(&tids[i], NULL, doc_worker, &jobs[i])) {
            jobs[i].rc = mn_error(MN_ENOMEM, "cannot start a compression thread");
            snprintf(jobs[i].err, sizeof jobs[i].err, "%s", mn_last_error());
            tids[i] = 0;
            atomic_fetch_add(&sh.finished, 1);
        }
    }
    if (first) doc_worker(&jobs[0]);
    else
        while (atomic_load(&sh.finished) < n_threads) {
            if (!atomic_load(&sh.stop) && pr->fn(pr->user, atomic_load(&sh.done), n)) atomic_store(&sh.stop, 1);
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    int rc = MN_OK;
    for (int i = 0; i < n_threads; i++) {
        if (i >= first && tids[i]) pthread_join(tids[i], NULL);
        if (jobs[i].rc && !rc) rc = mn_error(jobs[i].rc, "%s", jobs[i].err);
    }
    if (atomic_load(&sh.stop)) rc = mn_error(MN_ECANCELLED, "stopped by the caller after %lld of %lld tokens",
                                            (long long)atomic_load(&sh.done), (long long)n);
    else if (!rc && first == 0) pr->fn(pr->user, n, n);
    free(jobs);
    free(tids);
    if (rc) {
        free(k), free(v), free(e), free(rep), free(rep_sh);
        return rc;
    }
    if (rep_out) *rep_out = rep, *rep_sh_out = rep_sh;
    if (e_out) *e_out = e;
    else *k_out = k, *v_out = v;
    *M_out = (int32_t)M;
    return MN_OK;
}

int mn_uio_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                        float **k_out, float **v_out, int32_t *M_out) {
    *k_out = *v_out = NULL;
    return compress_doc(m, p, ids, n, n_threads, NULL, k_out, v_out, NULL, NULL, NULL, M_out);
}

int mn_uio_compress_doc_indexed(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n,
                                int n_threads, const mn_compress_progress *pr, float **k_out, float **v_out,
                                float **rep_out, float **rep_sh_out, int32_t *M_out) {
    *k_out = *v_out = *rep_out = *rep_sh_out = NULL;
    return compress_doc(m, p, ids, n, n_threads, pr, k_out, v_out, NULL, rep_out, rep_sh_out, M_out);
}

int mn_uio_encode_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                      const mn_compress_progress *pr, float **e_out, int32_t *M_out) {
    *e_out = NULL;
    return compress_doc(m, p, ids, n, n_threads, pr, NULL, NULL, e_out, NULL, NULL, M_out);
}

/* ------------------------------------------------------------ any compressor */

int mn_memory_bind(const mn_model *m, const mn_adapter *a, mn_memory_binding *b) {
    memset(b, 0, sizeof *b);
    b->kind = mn_adapter_config(a)->compressor;
    switch (b->kind) {
    case MN_COMP_UIO: return mn_uio_bind(m, a, &b->uio);
    case MN_COMP_BEACON: return mn_beacon_bind(m, a, &b->beacon);
    case MN_COMP_SUMMARY: return mn_summary_bind(m, a, &b->summary);
    }
    return mn_error(MN_EINVAL, "unknown compressor %d", (int)b->kind);
}

void mn_memory_unbind(mn_memory_binding *b) {
    if (b->kind == MN_COMP_UIO) mn_uio_unbind(&b->uio);
    else if (b->kind == MN_COMP_BEACON) mn_beacon_unbind(&b->beacon);
    else if (b->kind == MN_COMP_SUMMARY) mn_summary_unbind(&b->summary);
    memset(b, 0, sizeof *b);
}

int mn_stream_attach(mn_stream *s, const mn_memory_binding *b, int n_threads) {
    switch (b->kind) {
    case MN_COMP_UIO: return mn_stream_attach_uio(s, &b->uio.params, n_threads);
    case MN_COMP_BEACON: return mn_stream_attach_beacon(s, &b->beacon.params);
    case MN_COMP_SUMMARY: return mn_stream_attach_summary(s, &b->summary.params, n_threads);
    }
    return mn_error(MN_EINVAL, "unknown compressor %d", (int)b->kind);
}

int32_t mn_memory_n_ctx(const mn_memory_binding *b, int64_t n_tokens, int32_t n_sinks) {
    int64_t need;
    if (b->kind == MN_COMP_BEACON) {
        const mn_beacon_params *p = &b->beacon.params;
        int32_t amin = p->ratio;
        for (int i = 0; i < p->n_ratios; i++) amin = p->ratios[i] < amin ? p->ratios[i] : amin;
        need = (int64_t)p->sinks + (n_tokens / p->window) * (p->window / p->ratio) + p->window + p->window / amin + 1;
    } else {
        const mn_uio_params *p = b->kind == MN_COMP_UIO ? &b->uio.params : &b->summary.params;
        need = (n_tokens / p->l) * p->m + (int64_t)(p->recent + 1) * p->l + p->m + n_sinks;
    }
    return need > (1 << 22) ? (1 << 22) : (int32_t)need;
}
