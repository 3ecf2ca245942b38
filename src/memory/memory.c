/* memory.c - binding a compressor adapter to the runtime (see memory.h). */
#include "memory/memory.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/memfile.h"
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
        return mn_error(MN_EUNSUPPORTED, "memory mode runs UIO adapters; this one is '%s' (not yet supported)",
                        mn_compressor_name(cfg->compressor));
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
                                .transfer = &b->transfer};
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
    int32_t M;
    int rc;
    char err[256];
} doc_job;

static void *doc_worker(void *arg) {
    doc_job *j = arg;
    mn_uio *u;
    if ((j->rc = mn_uio_create(j->m, j->p, 1, &u))) {
        snprintf(j->err, sizeof j->err, "%s", mn_last_error());
        return NULL;
    }
    const int64_t l = j->p->l, n_seg = (j->n + l - 1) / l;
    const int32_t L = mn_model_n_layer(j->m);
    const size_t per = (size_t)j->p->m * (size_t)j->KD;
    float *k = malloc(sizeof(float) * per * (size_t)L), *v = malloc(sizeof(float) * per * (size_t)L);
    if (!k || !v) j->rc = mn_error(MN_ENOMEM, "out of memory");
    for (int64_t s = j->id; s < n_seg && !j->rc; s += j->n_workers) {
        int32_t r = (int32_t)(j->n - s * l < l ? j->n - s * l : l), ms;
        if ((j->rc = mn_uio_compress_n(u, j->ids + s * l, r, k, v, &ms))) break;
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
    return NULL;
}

int mn_uio_compress_doc(const mn_model *m, const mn_uio_params *p, const int32_t *ids, int64_t n, int n_threads,
                        float **k_out, float **v_out, int32_t *M_out) {
    *k_out = *v_out = NULL;
    *M_out = 0;
    if (n <= 0) return mn_error(MN_EINVAL, "nothing to compress");
    const int64_t l = p->l, stride = p->l / p->m, full = n / l, rem = n - full * l;
    const int64_t M = full * p->m + (rem + stride - 1) / stride;
    if (M > (1 << 24)) return mn_error(MN_ERANGE, "document too long: %lld memory slots", (long long)M);
    const int32_t L = mn_model_n_layer(m);
    const int32_t kd = mn_model_kv_dim(m);
    const size_t total = (size_t)L * (size_t)M * (size_t)kd;
    float *k = malloc(sizeof(float) * total), *v = malloc(sizeof(float) * total);
    if (!k || !v) {
        free(k);
        free(v);
        return mn_error(MN_ENOMEM, "out of memory for %lld memory slots", (long long)M);
    }
    if (n_threads <= 0) n_threads = mn_cpu_count();
    int64_t n_seg = full + (rem > 0);
    if (n_threads > n_seg) n_threads = (int)n_seg;
    doc_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    if (!jobs || !tids) {
        free(k), free(v), free(jobs), free(tids);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (doc_job){m, p, ids, n, n_threads, i, kd, k, v, (int32_t)M, 0, {0}};
        if (i > 0 && pthread_create(&tids[i], NULL, doc_worker, &jobs[i])) {
            jobs[i].rc = mn_error(MN_ENOMEM, "cannot start a compression thread");
            snprintf(jobs[i].err, sizeof jobs[i].err, "%s", mn_last_error());
            tids[i] = 0;
        }
    }
    doc_worker(&jobs[0]);
    int rc = MN_OK;
    for (int i = 0; i < n_threads; i++) {
        if (i > 0 && tids[i]) pthread_join(tids[i], NULL);
        if (jobs[i].rc && !rc) rc = mn_error(jobs[i].rc, "%s", jobs[i].err);
    }
    free(jobs);
    free(tids);
    if (rc) {
        free(k);
        free(v);
        return rc;
    }
    *k_out = k;
    *v_out = v;
    *M_out = (int32_t)M;
    return MN_OK;
}
