/* model.c - loads a Llama-family or Gemma 3 GGUF into an mn_model (see model.h).
 *
 * Loading validates, in order: the architecture, every hyperparameter (ranges
 * and consistency, e.g. n_head divisible by n_head_kv), then every tensor's
 * presence, type (must have kernels) and exact shape. Nothing is dequantized;
 * weights stay in the mapping.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model/tokenizer.h"

static int get_u32_key(const mn_gguf *g, const char *arch, const char *suffix, uint32_t *out,
                       int required, uint32_t dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = mn_gguf_get_u32(g, key, out);
    if (rc == MN_ENOTFOUND && !required) {
        *out = dflt;
        return MN_OK;
    }
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "missing metadata key '%s'", key);
    if (rc) return mn_error(MN_EFORMAT, "metadata key '%s' is not an unsigned integer", key);
    return MN_OK;
}

static int get_f32_key(const mn_gguf *g, const char *arch, const char *suffix, float *out,
                       int required, float dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = mn_gguf_get_f32(g, key, out);
    if (rc == MN_ENOTFOUND && !required) {
        *out = dflt;
        return MN_OK;
    }
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "missing metadata key '%s'", key);
    if (rc) return mn_error(MN_EFORMAT, "metadata key '%s' is not a float", key);
    if (!isfinite(*out)) return mn_error(MN_EFORMAT, "metadata key '%s' is not finite", key);
    return MN_OK;
}

/* Which architectures load, and the metadata prefix of each. */
static int arch_of(const mn_gguf_str *a) {
    if (a->len == 5 && memcmp(a->ptr, "llama", 5) == 0) return MN_ARCH_LLAMA;
    if (a->len == 6 && memcmp(a->ptr, "gemma3", 6) == 0) return MN_ARCH_GEMMA3;
    return -1;
}

static int load_hparams(mn_model *m) {
    const mn_gguf *g = m->gguf;
    mn_gguf_str astr;
    if (mn_gguf_get_str(g, "general.architecture", &astr))
        return mn_error(MN_EFORMAT, "missing metadata key 'general.architecture'");
    const int arch = arch_of(&astr);
    if (arch < 0)
        return mn_error(MN_EUNSUPPORTED, "architecture '%.*s' is not supported (llama, gemma3)",
                        (int)(astr.len > 64 ? 64 : astr.len), astr.ptr);
    const char *A = arch == MN_ARCH_GEMMA3 ? "gemma3" : "llama";
    mn_gguf_str name;
    if (mn_gguf_get_str(g, "general.name", &name) == MN_OK) {
        size_t n = name.len < sizeof m->name - 1 ? name.len : sizeof m->name - 1;
        memcpy(m->name, name.ptr, n);
        m->name[n] = 0;
    } else {
        snprintf(m->name, sizeof m->name, "%s", A);
    }

    uint32_t n_layer, n_ctx, n_embd, n_ff, n_head, n_head_kv, n_rot, key_len, val_len;
    float scale_factor;
    int rc;
    if ((rc = get_u32_key(g, A, "block_count", &n_layer, 1, 0)) ||
        (rc = get_u32_key(g, A, "context_length", &n_ctx, 1, 0)) ||
        (rc = get_u32_key(g, A, "embedding_length", &n_embd, 1, 0)) ||
        (rc = get_u32_key(g, A, "feed_forward_length", &n_ff, 1, 0)) ||
        (rc = get_u32_key(g, A, "attention.head_count", &n_head, 1, 0)))
        return rc;
    if ((rc = get_u32_key(g, A, "attention.head_count_kv", &n_head_kv, 0, n_head))) return rc;
    mn_hparams *hp = &m->hp;
    hp->arch = arch;
    if (n_layer < 1 || n_layer > 1024) return mn_error(MN_EFORMAT, "block_count %u out of range", n_layer);
    if (n_embd < 1 || n_embd > 65536) return mn_error(MN_EFORMAT, "embedding_length %u out of range", n_embd);
    if (n_ff < 1 || n_ff > 1 << 20) return mn_error(MN_EFORMAT, "feed_forward_length %u out of range", n_ff);
    if (n_head < 1 || n_head > 1024) return mn_error(MN_EFORMAT, "head_count %u out of range", n_head);
    if (n_head_kv < 1 || n_head % n_head_kv)
        return mn_error(MN_EFORMAT, "head_count_kv %u does not divide head_count %u", n_head_kv, n_head);
    if (n_ctx < 1 || n_ctx > (1u << 24)) return mn_error(MN_EFORMAT, "context_length %u out of range", n_ctx);
    /* the head size is n_embd / n_head unless the file states it (Gemma 3: 256 with n_embd 640, 4 heads) */
    if ((rc = get_u32_key(g, A, "attention.key_length", &key_len, 0, 0)) ||
        (rc = get_u32_key(g, A, "attention.value_length", &val_len, 0, key_len)))
        return rc;
    if (!key_len && n_embd % n_head)
        return mn_error(MN_EFORMAT, "head_count %u does not divide embedding_length %u", n_head, n_embd);
    uint32_t head_dim = key_len ? key_len : n_embd / n_head;
    if (!val_len) val_len = head_dim;
    if (val_len != head_dim)
        return mn_error(MN_EUNSUPPORTED, "value head size %u differs from the key head size %u", val_len, head_dim);
    if (head_dim < 2 || head_dim > 1024 || head_dim % 2)
        return mn_error(MN_EFORMAT, "head dimension %u is odd or out of range", head_dim);
    if ((rc = get_u32_key(g, A, "rope.dimension_count", &n_rot, 0, head_dim))) return rc;
    if (n_rot != head_dim)
        return mn_error(MN_EUNSUPPORTED, "partial RoPE (rope.dimension_count %u != head dim %u)", n_rot, head_dim);
    if ((rc = get_f32_key(g, A, "rope.freq_base", &hp->rope_base, 0, 10000.0f))) return rc;
    if ((rc = get_f32_key(g, A, "attention.layer_norm_rms_epsilon", &hp->norm_eps, 1, 0))) return rc;
    if (hp->rope_base <= 0) return mn_error(MN_EFORMAT, "rope.freq_base must be positive");
    if (hp->norm_eps <= 0 || hp->norm_eps > 1) return mn_error(MN_EFORMAT, "rms epsilon out of range");
    hp->rope_freq_scale = 1.0f;
    char key[96];
    snprintf(key, sizeof key, "%s.rope.scaling.type", A);
    mn_gguf_str stype;
    if (mn_gguf_get_str(g, key, &stype) == MN_OK && !(stype.len == 4 && memcmp(stype.ptr, "none", 4) == 0)) {
        if (!(stype.len == 6 && memcmp(stype.ptr, "linear", 6) == 0))
            return mn_error(MN_EUNSUPPORTED, "rope scaling type '%.*s' is not supported (none, linear)",
                            (int)(stype.len > 32 ? 32 : stype.len), stype.ptr);
        if ((rc = get_f32_key(g, A, "rope.scaling.factor", &scale_factor, 1, 1))) return rc;
        if (scale_factor <= 0) return mn_error(MN_EFORMAT, "rope.scaling.factor must be positive");
        hp->rope_freq_scale = 1.0f / scale_factor;
    } else if (get_f32_key(g, A, "rope.scale_linear", &scale_factor, 0, 1.0f) == MN_OK && scale_factor > 0) {
        hp->rope_freq_scale = 1.0f / scale_factor; /* older key */
    }
    hp->n_layer = (int32_t)n_layer;
    hp->n_ctx_train = (int32_t)n_ctx;
    hp->n_embd = (int32_t)n_embd;
    hp->n_ff = (int32_t)n_ff;
    hp->n_head = (int32_t)n_head;
    hp->n_head_kv = (int32_t)n_head_kv;
    hp->head_dim = (int32_t)head_dim;
    hp->n_rot = (int32_t)n_rot;
    hp->attn_scale = 1.0f / sqrtf((float)head_dim);
    hp->embd_scale = 1.0f;
    hp->act = MN_ACT_SILU;
    if (arch == MN_ARCH_GEMMA3) {
        /* Gemma 3 (as llama.cpp reads it): NeoX RoPE, GeGLU with the tanh GELU, embeddings
         * times sqrt(n_embd), and local layers with a sliding window and RoPE base 10000
         * (unscaled) in every `pattern` - 1 of `pattern` layers; the file gives the window. */
        uint32_t swa, pattern;
        if ((rc = get_u32_key(g, A, "attention.sliding_window", &swa, 1, 0))) return rc;
        if ((rc = get_u32_key(g, A, "attention.sliding_window_pattern", &pattern, 0, 6))) return rc;
        if (swa < 1 || swa > n_ctx) return mn_error(MN_EFORMAT, "sliding_window %u out of range", swa);
        if (pattern < 1 || pattern > n_layer) return mn_error(MN_EFORMAT, "sliding_window_pattern %u out of range", pattern);
        float base_swa;
        if ((rc = get_f32_key(g, A, "rope.freq_base_swa", &base_swa, 0, 10000.0f))) return rc;
        if (base_swa <= 0) return mn_error(MN_EFORMAT, "rope.freq_base_swa must be positive");
        hp->rope_neox = 1;
        hp->act = MN_ACT_GELU_TANH;
        hp->embd_scale = sqrtf((float)n_embd);
        hp->n_swa = (int32_t)swa;
        hp->swa_pattern = (int32_t)pattern;
        hp->rope_base_swa = base_swa;
    }
    return MN_OK;
}

/* Finds `name` and checks it is a 2-D matrix (ne0 x ne1) of a type with kernels. */
static int get_weight(const mn_gguf *g, const char *name, int64_t ne0, int64_t ne1, mn_weight *w, int optional) {
    const mn_gguf_tensor *t = mn_gguf_find_tensor(g, name);
    if (!t) {
        if (optional) return MN_ENOTFOUND;
        return mn_error(MN_EFORMAT, "missing tensor '%s'", name);
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return mn_error(MN_EFORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                        (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                        (long long)ne0, (long long)ne1);
    const mn_quant_traits *qt = mn_quant_get(t->type);
    if (!qt) {
        const mn_type_layout *l = mn_type_layout_get(t->type);
        return mn_error(MN_EUNSUPPORTED, "tensor '%s' has type %s (%d), which mnemo has no kernels for", name,
                        l ? l->name : "unknown", t->type);
    }
    w->data = t->data;
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = mn_type_row_bytes(t->type, ne0);
    w->qt = qt;
    return MN_OK;
}

static int get_norm(const mn_gguf *g, const char *name, int64_t n, const float **out) {
    const mn_gguf_tensor *t = mn_gguf_find_tensor(g, name);
    if (!t) return mn_error(MN_EFORMAT, "missing tensor '%s'", name);
    if (t->type != MN_TYPE_F32) return mn_error(MN_EUNSUPPORTED, "norm tensor '%s' must be f32", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return mn_error(MN_EFORMAT, "tensor '%s' has %lld elements, expected %lld", name, (long long)t->ne[0],
                        (long long)n);
    if ((uintptr_t)t->data % 4) return mn_error(MN_EFORMAT, "tensor '%s' is not 4-byte aligned", name);
    *out = t->data;
    return MN_OK;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Identifies the weights cheaply: every tensor's name, type and shape plus up
 * to 4 KiB from each end of its data (catches re-quantised or fine-tuned files
 * without reading the whole model). */
static uint64_t hash_weights(const mn_gguf *g) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < mn_gguf_n_tensors(g); i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        h = fnv1a(h, t->name, strlen(t->name));
        h = fnv1a(h, &t->type, sizeof t->type);
        h = fnv1a(h, t->ne, sizeof t->ne);
        size_t k = t->nbytes < 4096 ? t->nbytes : 4096;
        h = fnv1a(h, t->data, k);
        h = fnv1a(h, (const char *)t->data + t->nbytes - k, k);
    }
    return h;
}

static int load_weights(mn_model *m) {
    const mn_gguf *g = m->gguf;
    const mn_hparams *hp = &m->hp;
    const int64_t C = hp->n_embd, HD = (int64_t)hp->n_head * hp->head_dim,
                  KD = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    int rc;
    const mn_gguf_tensor *te = mn_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return mn_error(MN_EFORMAT, "missing tensor 'token_embd.weight'");
    int64_t V = te->ne[1];
    if (V < 1 || V > (1 << 24)) return mn_error(MN_EFORMAT, "token_embd.weight has %lld rows", (long long)V);
    if ((rc = get_weight(g, "token_embd.weight", C, V, &m->tok_embd, 0))) return rc;
    m->hp.n_vocab = (int32_t)V;
    rc = get_weight(g, "output.weight", C, V, &m->output, 1);
    if (rc == MN_ENOTFOUND) m->output = m->tok_embd; /* tied embeddings */
    else if (rc) return rc;
    if ((rc = get_norm(g, "output_norm.weight", C, &m->output_norm))) return rc;

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return mn_error(MN_ENOMEM, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        mn_layer *L = &m->layers[l];
        char nm[96];
#define W(field, suffix, a, b)                                   \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l);     \
    if ((rc = get_weight(g, nm, a, b, &L->field, 0))) return rc;
        W(wq, "attn_q", C, HD);
        W(wk, "attn_k", C, KD);
        W(wv, "attn_v", C, KD);
        W(wo, "attn_output", HD, C);
        W(w_gate, "ffn_gate", C, F);
        W(w_up, "ffn_up", C, F);
        W(w_down, "ffn_down", F, C);
#undef W
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        if ((rc = get_norm(g, nm, C, &L->attn_norm))) return rc;
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        if ((rc = get_norm(g, nm, C, &L->ffn_norm))) return rc;
        L->rope_base = hp->rope_base;
        L->rope_freq_scale = hp->rope_freq_scale;
        if (hp->arch == MN_ARCH_GEMMA3) {
            snprintf(nm, sizeof nm, "blk.%d.attn_q_norm.weight", l);
            if ((rc = get_norm(g, nm, hp->head_dim, &L->q_norm))) return rc;
            snprintf(nm, sizeof nm, "blk.%d.attn_k_norm.weight", l);
            if ((rc = get_norm(g, nm, hp->head_dim, &L->k_norm))) return rc;
            snprintf(nm, sizeof nm, "blk.%d.post_attention_norm.weight", l);
            if ((rc = get_norm(g, nm, C, &L->post_attn_norm))) return rc;
            snprintf(nm, sizeof nm, "blk.%d.post_ffw_norm.weight", l);
            if ((rc = get_norm(g, nm, C, &L->post_ffn_norm))) return rc;
            if (l % hp->swa_pattern < hp->swa_pattern - 1) {
                L->swa = 1;
                L->rope_base = hp->rope_base_swa;
                L->rope_freq_scale = 1.0f;
                m->hp.n_swa_layers++;
            }
        }
    }
    return MN_OK;
}

int mn_model_load(const char *path, mn_model **out) {
    *out = NULL;
    if (!path) return mn_error(MN_EINVAL, "no model path given");
    mn_model *m = calloc(1, sizeof *m);
    if (!m) return mn_error(MN_ENOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    int rc = mn_gguf_open(path, &m->gguf);
    if (!rc) rc = load_hparams(m);
    if (!rc) rc = load_weights(m);
    if (!rc) {
        rc = mn_tokenizer_from_gguf(m->gguf, &m->tok);
        if (!rc && mn_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
            rc = mn_error(MN_EFORMAT, "tokenizer has %d tokens but the embedding only %d rows",
                          (int)mn_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    }
    if (rc) {
        mn_error_prefix(rc, path);
        mn_model_free(m);
        return rc;
    }
    m->weights_hash = hash_weights(m->gguf);
    *out = m;
    return MN_OK;
}

void mn_model_free(mn_model *m) {
    if (!m) return;
    if (m->tok) mn_tokenizer_free(m->tok);
    free(m->layers);
    mn_gguf_free(m->gguf);
    free(m);
}

const mn_tokenizer *mn_model_tokenizer(const mn_model *m) { return m->tok; }
int32_t mn_model_n_vocab(const mn_model *m) { return m->hp.n_vocab; }
int32_t mn_model_n_ctx_train(const mn_model *m) { return m->hp.n_ctx_train; }
int32_t mn_model_n_embd(const mn_model *m) { return m->hp.n_embd; }
int32_t mn_model_n_layer(const mn_model *m) { return m->hp.n_layer; }
const char *mn_model_name(const mn_model *m) { return m->name; }
uint64_t mn_model_hash(const mn_model *m) { return m->weights_hash; }

int mn_model_describe(const mn_model *m, char *buf, size_t cap) {
    const mn_hparams *hp = &m->hp;
    char swa[96] = "";
    if (hp->n_swa)
        snprintf(swa, sizeof swa, ", sliding window %d cells in %d of %d layers (theta %g)", hp->n_swa,
                 hp->n_swa_layers, hp->n_layer, hp->rope_base_swa);
    return snprintf(buf, cap,
                    "%s (%s): %d layers, n_embd %d, %d heads (%d kv), head dim %d, ffn %d, vocab %d, ctx %d, "
                    "rope theta %g (freq scale %g)%s, eps %g, matrices %s, embedding %s%s",
                    m->name, hp->arch == MN_ARCH_GEMMA3 ? "gemma3" : "llama", hp->n_layer, hp->n_embd, hp->n_head,
                    hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab, hp->n_ctx_train, hp->rope_base,
                    hp->rope_freq_scale, swa, hp->norm_eps, mn_type_layout_get(m->layers[0].wq.type)->name,
                    mn_type_layout_get(m->tok_embd.type)->name,
                    m->output.data == m->tok_embd.data ? " (tied output)" : "");
}

const char *mn_cpu_isa_name(void) { return mn_isa_name(mn_cpu_isa()); }

size_t mn_model_decode_bytes(const mn_model *m) {
    const mn_hparams *hp = &m->hp;
    size_t b = 0;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const mn_layer *L = &m->layers[l];
        const mn_weight *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) b += w[i]->row_bytes * (size_t)w[i]->ne1;
        b += (L->post_attn_norm ? 4 : 2) * sizeof(float) * (size_t)hp->n_embd; /* the norms */
    }
    const mn_weight *out = m->output.data ? &m->output : &m->tok_embd;
    b += out->row_bytes * (size_t)out->ne1 + m->tok_embd.row_bytes + sizeof(float) * (size_t)hp->n_embd;
    return b;
}

