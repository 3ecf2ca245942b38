/* lora.c - decoder LoRA adapter files (see lora.h). */
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "model/model.h"

static const char k_targets[4] = {'q', 'k', 'v', 'o'};
static const char *const k_names[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};

typedef struct {
    char name[64];
    int64_t n_in, n_out; /* A (r, n_in), B (n_out, r) as ne = [n_in, r], [r, n_out] */
    int ab;              /* 0: A, 1: B */
    float *data;
} ltensor;

struct mn_lora_file {
    int32_t L, rank;
    float alpha;
    int on[4];            /* targeted projections */
    ltensor *t;           /* per target in order, per layer: A then B */
    int n;
    mn_lora *sets[4];     /* (L) views per target */
    mn_lora_set set;
    uint64_t base_hash;
    char base_name[128], arch[64];
};

static void dims(const mn_model *m, int target, int64_t *n_in, int64_t *n_out) {
    const mn_hparams *hp = &m->hp;
    const int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    *n_in = target == 3 ? q : hp->n_embd;
    *n_out = target == 0 ? q : target == 3 ? hp->n_embd : kv;
}

void mn_lora_file_free(mn_lora_file *f) {
    if (!f) return;
    for (int i = 0; f->t && i < f->n; i++) free(f->t[i].data);
    free(f->t);
    for (int k = 0; k < 4; k++) free(f->sets[k]);
    free(f);
}

/* Allocates tensors and views for the targets; data zeroed. */
static int build(const mn_model *m, const int on[4], int32_t rank, float alpha, mn_lora_file **out) {
    *out = NULL;
    const mn_hparams *hp = &m->hp;
    if (rank < 1 || rank > hp->n_embd) return mn_error(MN_EINVAL, "LoRA rank %d out of 1..%d", rank, hp->n_embd);
    if (!(alpha > 0) || !isfinite(alpha)) return mn_error(MN_EINVAL, "LoRA alpha must be positive");
    mn_lora_file *f = calloc(1, sizeof *f);
    if (!f) return mn_error(MN_ENOMEM, "out of memory");
    f->L = hp->n_layer, f->rank = rank, f->alpha = alpha, f->base_hash = m->weights_hash;
    snprintf(f->base_name, sizeof f->base_name, "%s", m->name);
    mn_gguf_str arch;
    if (mn_gguf_get_str(m->gguf, "general.architecture", &arch) == 0)
        snprintf(f->arch, sizeof f->arch, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    int n_on = 0;
    for (int k = 0; k < 4; k++) f->on[k] = on[k], n_on += on[k] != 0;
    if (!n_on) {
        free(f);
        return mn_error(MN_EINVAL, "a LoRA needs at least one of q, k, v, o");
    }
    f->n = n_on * f->L * 2;
    f->t = calloc((size_t)f->n, sizeof(ltensor));
    if (!f->t) {
        mn_lora_file_free(f);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    int i = 0;
    for (int k = 0; k < 4; k++) {
        if (!on[k]) continue;
        f->sets[k] = calloc((size_t)f->L, sizeof(mn_lora));
        if (!f->sets[k]) {
            mn_lora_file_free(f);
            return mn_error(MN_ENOMEM, "out of memory");
        }
        int64_t n_in, n_out;
        dims(m, k, &n_in, &n_out);
        for (int l = 0; l < f->L; l++)
            for (int ab = 0; ab < 2; ab++, i++) {
                ltensor *t = &f->t[i];
                snprintf(t->name, sizeof t->name, "blk.%d.%s.weight.lora_%c", l, k_names[k], ab ? 'b' : 'a');
                t->n_in = n_in, t->n_out = n_out, t->ab = ab;
                t->data = calloc((size_t)(ab ? n_out : n_in) * (size_t)rank, sizeof(float));
                if (!t->data) {
                    mn_lora_file_free(f);
                    return mn_error(MN_ENOMEM, "out of memory for a rank-%d LoRA", rank);
                }
                if (ab) f->sets[k][l] = (mn_lora){f->t[i - 1].data, t->data, rank};
            }
    }
    f->set = (mn_lora_set){alpha / (float)rank, f->sets[0], f->sets[1], f->sets[2], f->sets[3]};
    *out = f;
    return MN_OK;
}

int mn_lora_file_init(const mn_model *m, const char *targets, int32_t rank, float alpha, uint64_t seed,
                      mn_lora_file **out) {
    int on[4] = {0};
    for (const char *c = targets ? targets : ""; *c; c++) {
        const char *p = memchr(k_targets, *c, 4);
        if (!p) return mn_error(MN_EINVAL, "LoRA targets are letters of 'qkvo', not '%s'", targets);
        on[p - k_targets] = 1;
    }
    int rc = build(m, on, rank, alpha, out);
    if (rc) return rc;
    uint64_t s = seed ^ 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < (*out)->n; i++) {
        ltensor *t = &(*out)->t[i];
        if (t->ab) continue;
        const float bound = 1.0f / sqrtf((float)t->n_in);
        for (int64_t e = 0; e < t->n_in * rank; e++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64: the same numbers on every machine */
            t->data[e] = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1) * bound;
        }
    }
    return MN_OK;
}

int mn_lora_file_save(const mn_lora_file *f, const char *path) {
    mn_gguf_writer *w = mn_gguf_writer_create();
    if (!w) return mn_error(MN_ENOMEM, "out of memory");
    int rc = mn_gguf_writer_set_str(w, "general.architecture", f->arch[0] ? f->arch : "llama");
    if (!rc) rc = mn_gguf_writer_set_str(w, "general.type", "adapter");
    if (!rc) rc = mn_gguf_writer_set_str(w, "general.name", "mnemo decoder LoRA");
    if (!rc) rc = mn_gguf_writer_set_str(w, "adapter.type", "lora");
    if (!rc) rc = mn_gguf_writer_set_f32(w, "adapter.lora.alpha", f->alpha);
    if (!rc) rc = mn_gguf_writer_set_str(w, "mnemo.base.name", f->base_name);
    if (!rc) rc = mn_gguf_writer_set_u64(w, "mnemo.base.hash", f->base_hash);
    for (int i = 0; !rc && i < f->n; i++) {
        const ltensor *t = &f->t[i];
        int64_t ne[2] = {t->ab ? f->rank : t->n_in, t->ab ? t->n_out : f->rank};
        rc = mn_gguf_writer_add_tensor(w, t->name, MN_TYPE_F32, 2, ne, t->data);
    }
    if (!rc) rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

static int load_gguf(const mn_model *m, const mn_gguf *g, mn_lora_file **out) {
    mn_gguf_str s;
    if (mn_gguf_get_str(g, "adapter.type", &s) || s.len != 4 || memcmp(s.ptr, "lora", 4))
        return mn_error(MN_EFORMAT, "not a LoRA adapter (adapter.type is not 'lora')");
    mn_gguf_str arch, march;
    if (mn_gguf_get_str(g, "general.architecture", &arch) || mn_gguf_get_str(m->gguf, "general.architecture", &march) ||
        arch.len != march.len || memcmp(arch.ptr, march.ptr, arch.len))
        return mn_error(MN_EFORMAT, "LoRA for another architecture than the model's");
    float alpha;
    if (mn_gguf_get_f32(g, "adapter.lora.alpha", &alpha) || !(alpha > 0) || !isfinite(alpha))
        return mn_error(MN_EFORMAT, "LoRA: missing or bad adapter.lora.alpha");
    int64_t k = mn_gguf_find_key(g, "mnemo.base.hash");
    if (k < 0 || mn_gguf_kv_type(g, k) != MN_GGUF_UINT64) return mn_error(MN_EFORMAT, "LoRA: no mnemo.base.hash");
    uint64_t h;
    memcpy(&h, mn_gguf_kv_raw(g, k), 8);
    if (h != m->weights_hash)
        return mn_error(MN_EINVAL, "this LoRA belongs to another model (base hash %016llx, model %016llx)",
                        (unsigned long long)h, (unsigned long long)m->weights_hash);
    /* which targets, which rank: from the tensors themselves */
    int on[4] = {0};
    int32_t rank = -1;
    const int64_t nt = mn_gguf_n_tensors(g);
    for (int64_t i = 0; i < nt; i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        int layer, found = 0;
        char rest[64];
        if (sscanf(t->name, "blk.%d.%63s", &layer, rest) == 2)
            for (int kk = 0; kk < 4; kk++) {
                char a[64], b[64];
                snprintf(a, sizeof a, "%s.weight.lora_a", k_names[kk]);
                snprintf(b, sizeof b, "%s.weight.lora_b", k_names[kk]);
                if (!strcmp(rest, a) || !strcmp(rest, b)) on[kk] = 1, found = 1;
            }
        if (!found) return mn_error(MN_EFORMAT, "LoRA: unexpected tensor '%s'", t->name);
        if (strstr(t->name, "lora_a")) {
            if (rank < 0) rank = (int32_t)t->ne[1];
            else if (rank != t->ne[1]) return mn_error(MN_EFORMAT, "LoRA: tensors of different ranks");
        }
    }
    if (rank < 1) return mn_error(MN_EFORMAT, "LoRA: no lora_a tensor");
    int rc = build(m, on, rank, alpha, out);
    if (rc) return rc;
    mn_lora_file *f = *out;
    if (nt != f->n) {
        mn_lora_file_free(f);
        *out = NULL;
        return mn_error(MN_EFORMAT, "LoRA: %lld tensors, expected %d (every layer of each target)", (long long)nt,
                        f->n);
    }
    for (int i = 0; i < f->n; i++) {
        ltensor *lt = &f->t[i];
        const mn_gguf_tensor *t = mn_gguf_find_tensor(g, lt->name);
        const int64_t e0 = lt->ab ? rank : lt->n_in, e1 = lt->ab ? lt->n_out : rank;
        if (!t || t->type != MN_TYPE_F32 || t->n_dims != 2 || t->ne[0] != e0 || t->ne[1] != e1) {
            rc = mn_error(MN_EFORMAT, "LoRA: tensor %s missing or not F32 [%lld, %lld]", lt->name, (long long)e0,
                          (long long)e1);
            break;
        }
        memcpy(lt->data, t->data, sizeof(float) * (size_t)(e0 * e1));
        for (int64_t e = 0; e < e0 * e1; e++)
            if (!isfinite(lt->data[e])) {
                rc = mn_error(MN_EFORMAT, "LoRA: tensor %s holds a non-finite value", lt->name);
                break;
            }
        if (rc) break;
    }
    if (rc) {
        mn_lora_file_free(f);
        *out = NULL;
    }
    return rc;
}

int mn_lora_file_load(const mn_model *m, const char *path, mn_lora_file **out) {
    *out = NULL;
    mn_gguf *g;
    int rc = mn_gguf_open(path, &g);
    if (rc) return rc;
    rc = load_gguf(m, g, out);
    mn_gguf_free(g);
    return rc ? mn_error_prefix(rc, path) : MN_OK;
}

const mn_lora_set *mn_lora_file_set(const mn_lora_file *f) { return &f->set; }
int32_t mn_lora_file_rank(const mn_lora_file *f) { return f->rank; }
float mn_lora_file_alpha(const mn_lora_file *f) { return f->alpha; }

uint64_t mn_lora_file_hash(const mn_lora_file *f) {
    uint64_t h = 0xcbf29ce484222325ull;
#define FNV(p, n)                                                      \
    for (size_t b_ = 0; b_ < (n); b_++) h = (h ^ ((const unsigned char *)(p))[b_]) * 0x100000001b3ull;
    for (int i = 0; i < f->n; i++) {
        const ltensor *t = &f->t[i];
        FNV(t->name, strlen(t->name));
        const int64_t n = (t->ab ? t->n_out : t->n_in) * f->rank;
        FNV(&n, sizeof n);
        FNV(t->data, sizeof(float) * (size_t)n);
    }
    FNV(&f->alpha, sizeof f->alpha);
#undef FNV
    return h;
}

int mn_lora_file_n_tensors(const mn_lora_file *f) { return f->n; }

int mn_lora_file_tensor(mn_lora_file *f, int i, const char **name, int64_t *n, float **data) {
    if (i < 0 || i >= f->n) return mn_error(MN_EINVAL, "LoRA tensor %d out of range", i);
    const ltensor *t = &f->t[i];
    *name = t->name;
    *n = (t->ab ? t->n_out : t->n_in) * f->rank;
    *data = t->data;
    return MN_OK;
}
