/* adapter.c - adapter files (see adapter.h for the format). */
#include "memory/adapter.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"
#include "kernels/quant.h"
#include "model/lora.h"
#include "model/model.h"

#define ARCH "mnemo-adapter"

typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[2];
    size_t off; /* in floats, into buf */
} ad_tensor;

struct mn_adapter {
    mn_adapter_params p;
    int32_t n_mem;
    char base_name[128];
    uint64_t base_hash;
    int32_t n_embd, n_layer;
    int n_t;
    ad_tensor *t;
    float *buf;
    size_t n_floats;
    int mem_embd;   /* tensor index */
    int *lora;      /* [n_layer][4][2] tensor indices (A, B) or -1 */
    int *beacon;    /* [n_layer][4] tensor indices (q, k, v, o) or -1 */
    mn_lora_file *reader; /* the decoder LoRA answers use with recall, or NULL */
    char *reader_path;
};

/* ------------------------------------------------------------ names */
static const char *const k_comp[] = {"uio", "beacon", "summary"};
static const char *const k_place[] = {"interleave", "append"};
static const char *const k_attn[] = {"segmentation", "step-expansion", "full-coverage"};

static int parse_in(const char *const *names, int n, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}
const char *mn_compressor_name(mn_compressor c) { return (unsigned)c < 3 ? k_comp[c] : "?"; }
int mn_compressor_parse(const char *s) { return parse_in(k_comp, 3, s); }
const char *mn_beacon_placement_name(mn_beacon_placement p) { return (unsigned)p < 2 ? k_place[p] : "?"; }
int mn_beacon_placement_parse(const char *s) { return parse_in(k_place, 2, s); }
const char *mn_beacon_attention_name(mn_beacon_attention a) { return (unsigned)a < 3 ? k_attn[a] : "?"; }
int mn_beacon_attention_parse(const char *s) { return parse_in(k_attn, 3, s); }

static int has_lora(mn_compressor c) { return c == MN_COMP_UIO || c == MN_COMP_SUMMARY; }

mn_adapter_params mn_adapter_default_params(mn_compressor c) {
    mn_adapter_params p;
    memset(&p, 0, sizeof p);
    p.compressor = c;
    p.segment = 1024;
    p.ratio = 8;
    p.placement = MN_PLACE_INTERLEAVE;
    p.attention = MN_BATTN_FULL_COVERAGE;
    p.attend_prev = 1;
    if (c == MN_COMP_UIO) {
        p.rank = 128;
        p.alpha = 512.0f;
    } else if (c == MN_COMP_SUMMARY) {
        p.rank = 8;
        p.alpha = 16.0f;
    } else if (c == MN_COMP_BEACON) {
        static const int32_t r[] = {2, 4, 8, 16, 32};
        p.n_ratios = 5;
        memcpy(p.ratios, r, sizeof r);
    }
    return p;
}

int mn_adapter_check_params(const mn_adapter_params *p, int32_t n_embd) {
    if (!p) return mn_error(MN_EINVAL, "adapter: no parameters");
    if ((unsigned)p->compressor > MN_COMP_SUMMARY)
        return mn_error(MN_EINVAL, "adapter: unknown compressor %d", (int)p->compressor);
    if (p->segment < 1 || p->segment > MN_ADAPTER_MAX_SEGMENT)
        return mn_error(MN_EINVAL, "adapter: segment %d out of range [1, %d]", (int)p->segment,
                        MN_ADAPTER_MAX_SEGMENT);
    if (p->ratio < 1 || p->ratio > p->segment)
        return mn_error(MN_EINVAL, "adapter: ratio %d out of range [1, segment %d]", (int)p->ratio, (int)p->segment);
    if (p->segment % p->ratio)
        return mn_error(MN_EINVAL, "ratio %d does not divide segment %d", (int)p->ratio, (int)p->segment);
    if (p->recent < 0 || p->recent > MN_ADAPTER_MAX_RECENT || (p->recent && p->compressor != MN_COMP_UIO))
        return mn_error(MN_EINVAL, "adapter: recent window of %d segments (0..%d, uio only)", (int)p->recent,
                        MN_ADAPTER_MAX_RECENT);
    if (has_lora(p->compressor)) {
        if (p->rank < 1 || p->rank > n_embd)
            return mn_error(MN_EINVAL, "adapter: LoRA rank %d out of range [1, n_embd %d]", (int)p->rank,
                            (int)n_embd);
        if (!(p->alpha > 0.0f) || !isfinite(p->alpha))
            return mn_error(MN_EINVAL, "adapter: LoRA alpha %g must be a positive number", (double)p->alpha);
    } else {
        if (p->rank != 0) return mn_error(MN_EINVAL, "adapter: beacon has no LoRA, but rank is %d", (int)p->rank);
        if ((unsigned)p->placement > MN_PLACE_APPEND)
            return mn_error(MN_EINVAL, "adapter: unknown beacon placement %d", (int)p->placement);
        if ((unsigned)p->attention > MN_BATTN_FULL_COVERAGE)
            return mn_error(MN_EINVAL, "adapter: unknown beacon attention %d", (int)p->attention);
        if (p->attend_prev != 0 && p->attend_prev != 1)
            return mn_error(MN_EINVAL, "adapter: attend_prev must be 0 or 1");
        if (p->proj_o != 0 && p->proj_o != 1) return mn_error(MN_EINVAL, "adapter: proj_o must be 0 or 1");
        if (p->sinks < 0 || p->sinks >= p->segment)
            return mn_error(MN_EINVAL, "adapter: sinks %d out of range [0, segment %d)", (int)p->sinks,
                            (int)p->segment);
        if (p->n_ratios < 1 || p->n_ratios > MN_ADAPTER_MAX_RATIOS)
            return mn_error(MN_EINVAL, "adapter: beacon ratio set has %d entries, expected 1..%d", (int)p->n_ratios,
                            MN_ADAPTER_MAX_RATIOS);
        for (int i = 0; i < p->n_ratios; i++) {
            int32_t r = p->ratios[i];
            if (r < 1 || r > p->segment)
                return mn_error(MN_EINVAL, "adapter: beacon ratio %d out of range [1, segment %d]", (int)r,
                                (int)p->segment);
            if (p->segment % r)
                return mn_error(MN_EINVAL, "ratio %d does not divide segment %d (beacon ratio set)", (int)r,
                                (int)p->segment);
        }
    }
    return MN_OK;
}

/* ------------------------------------------------------------ layout */
static const char *const k_lora_fmt[4] = {"blk.%d.attn_q.weight.lora_%c", "blk.%d.attn_v.weight.lora_%c",
                                          "mem.blk.%d.attn_k.weight.lora_%c", "mem.blk.%d.attn_v.weight.lora_%c"};
static const char *const k_beacon_fmt[4] = {"beacon.blk.%d.attn_q.weight", "beacon.blk.%d.attn_k.weight",
                                            "beacon.blk.%d.attn_v.weight", "beacon.blk.%d.attn_output.weight"};

static const mn_weight *base_weight(const mn_model *m, int l, int which /* 0 q, 1 k, 2 v, 3 o */) {
    const mn_layer *L = &m->layers[l];
    return which == 0 ? &L->wq : which == 1 ? &L->wk : which == 2 ? &L->wv : &L->wo;
}

static int add_t(mn_adapter *a, int cap, const char *name, int n_dims, int64_t ne0, int64_t ne1) {
    if (a->n_t >= cap) return -1;
    ad_tensor *t = &a->t[a->n_t];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->off = a->n_floats;
    a->n_floats += (size_t)(t->ne[0] * t->ne[1]);
    return a->n_t++;
}

/* Allocates an adapter with the tensor list that config p implies for model m
 * (data zeroed). */
static int layout(const mn_model *m, const mn_adapter_params *p, mn_adapter **out) {
    *out = NULL;
    int NL = m->hp.n_layer;
    mn_adapter *a = calloc(1, sizeof *a);
    if (!a) return mn_error(MN_ENOMEM, "out of memory");
    a->p = *p;
    a->n_mem = p->segment / p->ratio;
    snprintf(a->base_name, sizeof a->base_name, "%s", m->name);
    a->base_hash = m->weights_hash;
    a->n_embd = m->hp.n_embd;
    a->n_layer = NL;
    int cap = 1 + NL * 8;
    a->t = calloc((size_t)cap, sizeof *a->t);
    a->lora = malloc(sizeof(int) * (size_t)NL * 8);
    a->beacon = malloc(sizeof(int) * (size_t)NL * 4);
    if (!a->t || !a->lora || !a->beacon) {
        mn_adapter_free(a);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    for (int i = 0; i < NL * 8; i++) a->lora[i] = -1;
    for (int i = 0; i < NL * 4; i++) a->beacon[i] = -1;
    a->mem_embd = add_t(a, cap, "mem.embd", 1, m->hp.n_embd, 1);
    char nm[64];
    int r = p->rank;
    for (int l = 0; l < NL; l++) {
        if (has_lora(p->compressor)) {
            int nt = p->compressor == MN_COMP_UIO ? 4 : 2;
            for (int w = 0; w < nt; w++) {
                /* targets: enc q, enc v, mem k, mem v */
                const mn_weight *bw = base_weight(m, l, w == 0 ? 0 : w == 2 ? 1 : 2);
                snprintf(nm, sizeof nm, k_lora_fmt[w], l, 'a');
                a->lora[(l * 4 + w) * 2] = add_t(a, cap, nm, 2, bw->ne0, r);
                snprintf(nm, sizeof nm, k_lora_fmt[w], l, 'b');
                a->lora[(l * 4 + w) * 2 + 1] = add_t(a, cap, nm, 2, r, bw->ne1);
            }
        } else {
            for (int w = 0; w < (p->proj_o ? 4 : 3); w++) {
                const mn_weight *bw = base_weight(m, l, w);
                snprintf(nm, sizeof nm, k_beacon_fmt[w], l);
                a->beacon[l * 4 + w] = add_t(a, cap, nm, 2, bw->ne0, bw->ne1);
            }
        }
    }
    a->buf = calloc(a->n_floats ? a->n_floats : 1, sizeof(float));
    if (!a->buf) {
        size_t n = a->n_floats;
        mn_adapter_free(a);
        return mn_error(MN_ENOMEM, "out of memory (%zu adapter parameters)", n);
    }
    *out = a;
    return MN_OK;
}

void mn_adapter_free(mn_adapter *a) {
    if (!a) return;
    free(a->t);
    free(a->lora);
    free(a->beacon);
    free(a->buf);
    mn_lora_file_free(a->reader);
    free(a->reader_path);
    free(a);
}

/* --------------------------------------------------------------- init */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Dequantises rows [0, ne1) of a base weight with the scalar reference kernels
 * (bit-identical on every machine). */
static int dequant_rows(const mn_weight *w, int64_t r0, int64_t n_rows, float *out) {
    const mn_quant_traits *qt = mn_quant_get_isa(w->type, MN_ISA_SCALAR);
    if (!qt || !qt->to_float) return mn_error(MN_EUNSUPPORTED, "adapter: cannot dequantise type %d", w->type);
    for (int64_t r = 0; r < n_rows; r++)
        qt->to_float((const char *)w->data + (size_t)(r0 + r) * w->row_bytes, out + r * w->ne0, w->ne0);
    return MN_OK;
}

int mn_adapter_init(const mn_model *m, const mn_adapter_params *p, mn_adapter **out) {
    if (!out) return mn_error(MN_EINVAL, "adapter init: no output");
    *out = NULL;
    if (!m) return mn_error(MN_EINVAL, "adapter init: no model");
    int rc = mn_adapter_check_params(p, m->hp.n_embd);
    if (rc) return rc;
    int32_t eos = mn_token_eos(m->tok);
    if (eos < 0 || eos >= m->tok_embd.ne1)
        return mn_error(MN_EINVAL, "adapter init: model '%s' has no EOS token to initialise mem.embd", m->name);
    mn_adapter *a;
    if ((rc = layout(m, p, &a))) return rc;
    if ((rc = dequant_rows(&m->tok_embd, eos, 1, a->buf + a->t[a->mem_embd].off))) goto fail;
    uint64_t s = p->seed;
    for (int i = 0; i < a->n_t; i++) {
        ad_tensor *t = &a->t[i];
        float *d = a->buf + t->off;
        size_t len = strlen(t->name);
        if (len > 7 && !strcmp(t->name + len - 7, ".lora_a")) {
            /* A: uniform(-1/sqrt(n_in), 1/sqrt(n_in)); B stays 0 */
            double bound = 1.0 / sqrt((double)t->ne[0]);
            for (int64_t j = 0; j < t->ne[0] * t->ne[1]; j++) {
                double u = (double)(splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
                d[j] = (float)((2.0 * u - 1.0) * bound);
            }
        }
    }
    for (int l = 0; l < a->n_layer; l++)
        for (int w = 0; w < 4; w++) {
            int ti = a->beacon[l * 4 + w];
            if (ti < 0) continue;
            const mn_weight *bw = base_weight(m, l, w);
            if ((rc = dequant_rows(bw, 0, bw->ne1, a->buf + a->t[ti].off))) goto fail;
        }
    *out = a;
    return MN_OK;
fail:
    mn_adapter_free(a);
    return rc;
}

/* --------------------------------------------------------------- save */
static int write_into(const mn_adapter *a, mn_gguf_writer *w, int f16);

int mn_adapter_save(const mn_adapter *a, const char *path) { return mn_adapter_save_as(a, path, 0); }

int mn_adapter_save_as(const mn_adapter *a, const char *path, int f16) {
    if (!a || !path) return mn_error(MN_EINVAL, "adapter save: no adapter or path");
    mn_gguf_writer *w = mn_gguf_writer_create();
    if (!w) return mn_error(MN_ENOMEM, "out of memory");
    int rc = write_into(a, w, f16);
    if (!rc) rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    if (rc) mn_error_prefix(rc, path);
    return rc;
}

/* --------------------------------------------------------------- load */
static int get_str(const mn_gguf *g, const char *key, char *buf, size_t cap) {
    mn_gguf_str s;
    int rc = mn_gguf_get_str(g, key, &s);
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "adapter: missing key '%s'", key);
    if (rc) return mn_error(MN_EFORMAT, "adapter: key '%s' must be a string", key);
    if (s.len >= cap || memchr(s.ptr, 0, s.len))
        return mn_error(MN_EFORMAT, "adapter: key '%s' is not a valid string of at most %zu bytes", key, cap - 1);
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = 0;
    return MN_OK;
}

static int get_u32(const mn_gguf *g, const char *key, int32_t *out) {
    uint32_t v;
    int rc = mn_gguf_get_u32(g, key, &v);
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "adapter: missing key '%s'", key);
    if (rc || v > INT32_MAX) return mn_error(MN_EFORMAT, "adapter: key '%s' must be an integer in [0, 2^31)", key);
    *out = (int32_t)v;
    return MN_OK;
}

static int get_bool(const mn_gguf *g, const char *key, int *out) {
    int rc = mn_gguf_get_bool(g, key, out);
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "adapter: missing key '%s'", key);
    if (rc) return mn_error(MN_EFORMAT, "adapter: key '%s' must be a bool", key);
    *out = !!*out;
    return MN_OK;
}

/* Reads and validates the metadata into info. */
static int read_meta(const mn_gguf *g, mn_adapter_info *info) {
    memset(info, 0, sizeof *info);
    char s[128];
    int rc;
    mn_gguf_str arch;
    if (mn_gguf_get_str(g, "general.architecture", &arch) || arch.len != strlen(ARCH) ||
        memcmp(arch.ptr, ARCH, arch.len)) {
        char got[64] = "none";
        if (!mn_gguf_get_str(g, "general.architecture", &arch))
            snprintf(got, sizeof got, "'%.*s'", (int)(arch.len < 40 ? arch.len : 40), arch.ptr);
        return mn_error(MN_EFORMAT, "not a mnemo adapter (general.architecture is %s, expected '" ARCH "')", got);
    }
    if ((rc = get_str(g, "adapter.type", s, sizeof s))) return rc;
    if (strcmp(s, "lora")) return mn_error(MN_EFORMAT, "adapter: adapter.type '%s' is not 'lora'", s);
    mn_adapter_params *p = &info->params;
    if ((rc = get_str(g, "mnemo.compressor", s, sizeof s))) return rc;
    int c = mn_compressor_parse(s);
    if (c < 0) return mn_error(MN_EFORMAT, "adapter: unknown compressor '%s' (expected uio, beacon or summary)", s);
    p->compressor = (mn_compressor)c;
    if ((rc = get_u32(g, "mnemo.segment", &p->segment)) || (rc = get_u32(g, "mnemo.ratio", &p->ratio)) ||
        (rc = get_u32(g, "mnemo.n_mem", &info->n_mem)) || (rc = get_u32(g, "mnemo.lora.rank", &p->rank)) ||
        (rc = get_u32(g, "mnemo.base.n_embd", &info->base_n_embd)) ||
        (rc = get_u32(g, "mnemo.base.n_layer", &info->base_n_layer)))
        return rc;
    if (mn_gguf_get_f32(g, "adapter.lora.alpha", &p->alpha))
        return mn_error(MN_EFORMAT, "adapter: missing or non-float key 'adapter.lora.alpha'");
    if (p->compressor == MN_COMP_UIO && mn_gguf_find_key(g, "mnemo.uio.recent") >= 0 &&
        (rc = get_u32(g, "mnemo.uio.recent", &p->recent)))
        return rc;
    if (p->compressor == MN_COMP_BEACON) {
        if ((rc = get_str(g, "mnemo.beacon.placement", s, sizeof s))) return rc;
        if ((c = mn_beacon_placement_parse(s)) < 0)
            return mn_error(MN_EFORMAT, "adapter: unknown beacon placement '%s' (expected interleave or append)", s);
        p->placement = (mn_beacon_placement)c;
        if ((rc = get_str(g, "mnemo.beacon.attention", s, sizeof s))) return rc;
        if ((c = mn_beacon_attention_parse(s)) < 0)
            return mn_error(MN_EFORMAT,
                            "adapter: unknown beacon attention '%s' (expected segmentation, step-expansion or "
                            "full-coverage)",
                            s);
        p->attention = (mn_beacon_attention)c;
        if ((rc = get_bool(g, "mnemo.beacon.attend_prev", &p->attend_prev)) ||
            (rc = get_bool(g, "mnemo.beacon.proj_o", &p->proj_o)) || (rc = get_u32(g, "mnemo.beacon.sinks", &p->sinks)))
            return rc;
        mn_gguf_vtype et;
        uint64_t n;
        const void *d;
        if (mn_gguf_get_arr(g, "mnemo.beacon.ratios", &et, &n, &d))
            return mn_error(MN_EFORMAT, "adapter: missing array 'mnemo.beacon.ratios'");
        if ((et != MN_GGUF_UINT32 && et != MN_GGUF_INT32) || n < 1 || n > MN_ADAPTER_MAX_RATIOS)
            return mn_error(MN_EFORMAT, "adapter: 'mnemo.beacon.ratios' must be 1..%d 32-bit integers",
                            MN_ADAPTER_MAX_RATIOS);
        p->n_ratios = (int32_t)n;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, (const char *)d + 4 * i, 4);
            if (v > INT32_MAX) return mn_error(MN_EFORMAT, "adapter: beacon ratio %u out of range", v);
            p->ratios[i] = (int32_t)v;
        }
    }
    if (info->base_n_embd < 1 || info->base_n_layer < 1)
        return mn_error(MN_EFORMAT, "adapter: base n_embd %d / n_layer %d out of range", (int)info->base_n_embd,
                        (int)info->base_n_layer);
    if ((rc = mn_adapter_check_params(p, info->base_n_embd))) return mn_error_prefix(MN_EFORMAT, "adapter");
    if (info->n_mem != p->segment / p->ratio)
        return mn_error(MN_EFORMAT, "adapter: n_mem %d is not segment %d / ratio %d", (int)info->n_mem,
                        (int)p->segment, (int)p->ratio);
    if ((rc = get_str(g, "mnemo.base.name", info->base_name, sizeof info->base_name))) return rc;
    int64_t h;
    if (mn_gguf_get_i64(g, "mnemo.base.hash", &h)) {
        /* u64 values above INT64_MAX do not fit the i64 getter: read the raw bytes */
        int64_t k = mn_gguf_find_key(g, "mnemo.base.hash");
        if (k < 0 || mn_gguf_kv_type(g, k) != MN_GGUF_UINT64)
            return mn_error(MN_EFORMAT, "adapter: missing or non-u64 key 'mnemo.base.hash'");
        memcpy(&info->base_hash, mn_gguf_kv_raw(g, k), 8);
    } else {
        info->base_hash = (uint64_t)h;
    }
    info->n_tensors = mn_gguf_n_tensors(g);
    for (int64_t i = 0; i < info->n_tensors; i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        info->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }
    return MN_OK;
}

int mn_adapter_read_info(const char *path, mn_adapter_info *info) {
    mn_gguf *g;
    if (!info) return mn_error(MN_EINVAL, "adapter info: no output");
    int rc = mn_gguf_open(path, &g); /* its messages name the path */
    if (rc) return rc;
    if ((rc = read_meta(g, info))) mn_error_prefix(rc, path);
    mn_gguf_free(g);
    return rc;
}

static const char *type_name(int type) {
    const mn_type_layout *l = mn_type_layout_get(type);
    return l && l->name ? l->name : "unknown";
}

/* Every expected tensor present, F32 or F16, exact shape; nothing else; no truncated padding. */
static int read_tensors(const mn_gguf *g, mn_adapter *a) {
    int64_t nt = mn_gguf_n_tensors(g), n_opt = 0;
    size_t end = 0;
    for (int64_t i = 0; i < nt; i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        int known = 0;
        for (int j = 0; j < a->n_t && !known; j++) known = !strcmp(a->t[j].name, t->name);
        if (!known && !strncmp(t->name, "opt.", 4)) {
            /* optimizer state of a training checkpoint (train/checkpoint.h): not part of the adapter, but its
             * bytes count for the end-of-data check below */
            size_t te = (size_t)((const char *)t->data - (const char *)mn_gguf_base(g)) + t->nbytes;
            if (te > end) end = te;
            n_opt++;
            continue;
        }
        if (!known)
            return mn_error(MN_EFORMAT, "adapter: unexpected tensor '%s' for a %s adapter", t->name,
                            mn_compressor_name(a->p.compressor));
    }
    for (int j = 0; j < a->n_t; j++) {
        const ad_tensor *e = &a->t[j];
        const mn_gguf_tensor *t = mn_gguf_find_tensor(g, e->name);
        if (!t) return mn_error(MN_EFORMAT, "adapter: missing tensor '%s'", e->name);
        if (t->type != MN_TYPE_F32 && t->type != MN_TYPE_F16)
            return mn_error(MN_EFORMAT, "adapter: tensor '%s' has type %s, expected f32 or f16", e->name,
                            type_name(t->type));
        int ok = t->n_dims == e->n_dims && t->ne[0] == e->ne[0] && t->ne[1] == e->ne[1] && t->ne[2] == 1 &&
                 t->ne[3] == 1;
        if (!ok)
            return mn_error(MN_EFORMAT,
                            "adapter: tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                            "] (%d dims), expected [%" PRId64 ", %" PRId64 "] (%d dims)",
                            e->name, t->ne[0], t->ne[1], t->ne[2], t->ne[3], t->n_dims, e->ne[0], e->ne[1], e->n_dims);
        const size_t ne = (size_t)(e->ne[0] * e->ne[1]);
        if (t->nbytes != ne * (t->type == MN_TYPE_F16 ? 2 : 4))
            return mn_error(MN_EFORMAT, "adapter: tensor '%s' holds %zu bytes, its shape needs %zu", e->name,
                            (size_t)t->nbytes, ne * (t->type == MN_TYPE_F16 ? 2 : 4));
        if (t->type == MN_TYPE_F16) { /* shipped adapters: half the size; computed in f32 */
            const uint8_t *src = t->data;
            for (size_t k = 0; k < ne; k++)
                a->buf[e->off + k] = mn_fp16_to_fp32((uint16_t)(src[2 * k] | (src[2 * k + 1] << 8)));
        } else {
            memcpy(a->buf + e->off, t->data, t->nbytes);
        }
        for (size_t k = 0; k < (size_t)(e->ne[0] * e->ne[1]); k++)
            if (!isfinite(a->buf[e->off + k]))
                return mn_error(MN_EFORMAT, "adapter: tensor '%s' holds a non-finite value at %zu", e->name, k);
        size_t te = (size_t)((const char *)t->data - (const char *)mn_gguf_base(g)) + t->nbytes;
        if (te > end) end = te;
    }
    if (nt - n_opt != a->n_t)
        return mn_error(MN_EFORMAT, "adapter: %" PRId64 " tensors, expected %d", nt - n_opt, a->n_t);
    /* the writer pads the last tensor to the alignment: a shorter file lost its tail */
    uint32_t align = 32;
    if (mn_gguf_find_key(g, "general.alignment") >= 0) mn_gguf_get_u32(g, "general.alignment", &align);
    size_t size = mn_gguf_file_size(g), padded = align ? (end + align - 1) / align * align : end;
    if (size != end && size != padded)
        return mn_error(MN_EFORMAT, "adapter: file is %zu bytes but its tensor data ends at %zu (truncated or "
                                    "trailing bytes)",
                        size, padded);
    return MN_OK;
}

int mn_adapter_load(const mn_model *m, const char *path, mn_adapter **out) {
    if (!out) return mn_error(MN_EINVAL, "adapter load: no output");
    *out = NULL;
    if (!m || !path) return mn_error(MN_EINVAL, "adapter load: no model or path");
    mn_gguf *g;
    int rc = mn_gguf_open(path, &g); /* its messages name the path */
    if (rc) return rc;
    if ((rc = mn_adapter_load_gguf(m, g, out))) mn_error_prefix(rc, path);
    mn_gguf_free(g);
    char rp[4096];
    if (!rc && !mn_adapter_reader_name(path, rp, sizeof rp) && access(rp, F_OK) == 0 &&
        (rc = mn_adapter_set_reader(*out, m, rp))) {
        mn_adapter_free(*out);
        *out = NULL;
    }
    return rc;
}

int mn_adapter_reader_name(const char *adapter_path, char *out, size_t cap) {
    size_t n = strlen(adapter_path);
    if (n >= 5 && !strcmp(adapter_path + n - 5, ".gguf")) n -= 5;
    if (n + sizeof ".reader.gguf" > cap) return mn_error(MN_ERANGE, "adapter path too long");
    memcpy(out, adapter_path, n);
    memcpy(out + n, ".reader.gguf", sizeof ".reader.gguf");
    return MN_OK;
}

int mn_adapter_set_reader(mn_adapter *a, const mn_model *m, const char *path) {
    if (!a) return mn_error(MN_EINVAL, "no adapter");
    mn_lora_file *f = NULL;
    char *p = NULL;
    if (path) {
        int rc = mn_lora_file_load(m, path, &f);
        if (rc) return mn_error_prefix(rc, "reader");
        if (!(p = strdup(path))) {
            mn_lora_file_free(f);
            return mn_error(MN_ENOMEM, "out of memory");
        }
    }
    mn_lora_file_free(a->reader);
    free(a->reader_path);
    a->reader = f, a->reader_path = p;
    return MN_OK;
}

const mn_lora_set *mn_adapter_reader(const mn_adapter *a) { return a && a->reader ? mn_lora_file_set(a->reader) : NULL; }
const char *mn_adapter_reader_path(const mn_adapter *a) { return a ? a->reader_path : NULL; }

/* ---------------------------------------------------------- accessors */
const mn_adapter_params *mn_adapter_config(const mn_adapter *a) { return &a->p; }
int32_t mn_adapter_n_mem(const mn_adapter *a) { return a->n_mem; }
int mn_adapter_set_ratio(mn_adapter *a, int32_t ratio) {
    if (!a) return mn_error(MN_EINVAL, "no adapter");
    mn_adapter_params p = a->p;
    p.ratio = ratio;
    int rc = mn_adapter_check_params(&p, a->n_embd);
    if (rc) return rc;
    if (p.compressor == MN_COMP_BEACON) {
        int in_set = 0;
        for (int i = 0; i < p.n_ratios; i++) in_set |= p.ratios[i] == ratio;
        if (!in_set) return mn_error(MN_EINVAL, "ratio %d is not in the beacon adapter's ratio set", (int)ratio);
    }
    a->p = p;
    a->n_mem = p.segment / ratio;
    return MN_OK;
}

int mn_adapter_set_recent(mn_adapter *a, int32_t n) {
    if (!a) return mn_error(MN_EINVAL, "no adapter");
    if (a->p.compressor != MN_COMP_UIO) return mn_error(MN_EINVAL, "a recent window of raw segments is uio's only");
    mn_adapter_params p = a->p;
    p.recent = n;
    int rc = mn_adapter_check_params(&p, a->n_embd);
    if (rc) return rc;
    a->p = p;
    return MN_OK;
}
const char *mn_adapter_base_name(const mn_adapter *a) { return a->base_name; }
uint64_t mn_adapter_base_hash(const mn_adapter *a) { return a->base_hash; }
int64_t mn_adapter_n_params(const mn_adapter *a) { return (int64_t)a->n_floats; }
float mn_adapter_lora_scale(const mn_adapter *a) {
    return has_lora(a->p.compressor) && a->p.rank > 0 ? a->p.alpha / (float)a->p.rank : 0.0f;
}
const float *mn_adapter_mem_embd(const mn_adapter *a) { return a->buf + a->t[a->mem_embd].off; }

int mn_adapter_lora(const mn_adapter *a, int layer, mn_lora_target which, const float **A, const float **B,
                    int *rank) {
    if (!a || layer < 0 || layer >= a->n_layer || (unsigned)which > MN_LORA_MEM_V)
        return mn_error(MN_EINVAL, "adapter: no layer %d / LoRA target %d", layer, (int)which);
    int ia = a->lora[(layer * 4 + (int)which) * 2], ib = a->lora[(layer * 4 + (int)which) * 2 + 1];
    if (ia < 0 || ib < 0)
        return mn_error(MN_ENOTFOUND, "adapter: a %s adapter has no LoRA target %d", mn_compressor_name(a->p.compressor),
                        (int)which);
    if (A) *A = a->buf + a->t[ia].off;
    if (B) *B = a->buf + a->t[ib].off;
    if (rank) *rank = a->p.rank;
    return MN_OK;
}

const float *mn_adapter_beacon_proj(const mn_adapter *a, int layer, char which) {
    if (!a || layer < 0 || layer >= a->n_layer) return NULL;
    int w = which == 'q' ? 0 : which == 'k' ? 1 : which == 'v' ? 2 : which == 'o' ? 3 : -1;
    if (w < 0) return NULL;
    int ti = a->beacon[layer * 4 + w];
    return ti < 0 ? NULL : a->buf + a->t[ti].off;
}

int mn_adapter_n_tensors(const mn_adapter *a) { return a->n_t; }

int mn_adapter_tensor_at(const mn_adapter *a, int i, const char **name, int *n_dims, int64_t ne[2],
                         const float **data) {
    if (!a || i < 0 || i >= a->n_t) return mn_error(MN_EINVAL, "adapter: no tensor %d", i);
    const ad_tensor *t = &a->t[i];
    if (name) *name = t->name;
    if (n_dims) *n_dims = t->n_dims;
    if (ne) ne[0] = t->ne[0], ne[1] = t->ne[1];
    if (data) *data = a->buf + t->off;
    return MN_OK;
}

/* ------------------------------------------------- training checkpoints */
float *mn_adapter_tensor_data_mut(mn_adapter *a, int i) {
    return a && i >= 0 && i < a->n_t ? a->buf + a->t[i].off : NULL;
}

int mn_adapter_write_into(const mn_adapter *a, mn_gguf_writer *w) { return write_into(a, w, 0); }

static int write_into(const mn_adapter *a, mn_gguf_writer *w, int f16) {
    if (!a || !w) return mn_error(MN_EINVAL, "adapter save: no adapter or writer");
    const mn_adapter_params *p = &a->p;
    int rc = 0;
    rc |= mn_gguf_writer_set_str(w, "general.architecture", ARCH);
    char nm[192];
    snprintf(nm, sizeof nm, "mnemo %s adapter for %s", mn_compressor_name(p->compressor), a->base_name);
    rc |= mn_gguf_writer_set_str(w, "general.name", nm);
    rc |= mn_gguf_writer_set_str(w, "adapter.type", "lora");
    rc |= mn_gguf_writer_set_f32(w, "adapter.lora.alpha", has_lora(p->compressor) ? p->alpha : 0.0f);
    rc |= mn_gguf_writer_set_str(w, "mnemo.compressor", mn_compressor_name(p->compressor));
    rc |= mn_gguf_writer_set_u32(w, "mnemo.segment", (uint32_t)p->segment);
    rc |= mn_gguf_writer_set_u32(w, "mnemo.n_mem", (uint32_t)a->n_mem);
    rc |= mn_gguf_writer_set_u32(w, "mnemo.ratio", (uint32_t)p->ratio);
    rc |= mn_gguf_writer_set_u32(w, "mnemo.lora.rank", (uint32_t)(has_lora(p->compressor) ? p->rank : 0));
    if (p->compressor == MN_COMP_UIO) rc |= mn_gguf_writer_set_u32(w, "mnemo.uio.recent", (uint32_t)p->recent);
    if (p->compressor == MN_COMP_BEACON) {
        rc |= mn_gguf_writer_set_str(w, "mnemo.beacon.placement", mn_beacon_placement_name(p->placement));
        rc |= mn_gguf_writer_set_str(w, "mnemo.beacon.attention", mn_beacon_attention_name(p->attention));
        rc |= mn_gguf_writer_set_bool(w, "mnemo.beacon.attend_prev", p->attend_prev);
        rc |= mn_gguf_writer_set_u32(w, "mnemo.beacon.sinks", (uint32_t)p->sinks);
        rc |= mn_gguf_writer_set_bool(w, "mnemo.beacon.proj_o", p->proj_o);
        uint32_t r[MN_ADAPTER_MAX_RATIOS];
        for (int i = 0; i < p->n_ratios; i++) r[i] = (uint32_t)p->ratios[i];
        rc |= mn_gguf_writer_set_arr(w, "mnemo.beacon.ratios", MN_GGUF_UINT32, (uint64_t)p->n_ratios, r);
    }
    rc |= mn_gguf_writer_set_str(w, "mnemo.base.name", a->base_name);
    rc |= mn_gguf_writer_set_u64(w, "mnemo.base.hash", a->base_hash);
    rc |= mn_gguf_writer_set_u32(w, "mnemo.base.n_embd", (uint32_t)a->n_embd);
    rc |= mn_gguf_writer_set_u32(w, "mnemo.base.n_layer", (uint32_t)a->n_layer);
    if (rc) return mn_error(MN_ENOMEM, "adapter save: cannot set metadata");
    uint16_t *h = NULL;
    for (int i = 0; i < a->n_t && !rc; i++) {
        const ad_tensor *t = &a->t[i];
        if (!f16) {
            rc = mn_gguf_writer_add_tensor(w, t->name, MN_TYPE_F32, t->n_dims, t->ne, a->buf + t->off);
            continue;
        }
        const size_t ne = (size_t)(t->ne[0] * t->ne[1]);
        uint16_t *nh = realloc(h, sizeof(uint16_t) * (ne ? ne : 1));
        if (!nh) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            break;
        }
        h = nh;
        for (size_t k = 0; k < ne && !rc; k++) {
            const float x = a->buf[t->off + k];
            h[k] = mn_fp32_to_fp16(x);
            if (!isfinite(mn_fp16_to_fp32(h[k])))
                rc = mn_error(MN_ERANGE, "adapter save: tensor '%s' value %g at %zu does not fit in f16; save as f32",
                              t->name, (double)x, k);
        }
        if (!rc) rc = mn_gguf_writer_add_tensor(w, t->name, MN_TYPE_F16, t->n_dims, t->ne, h);
    }
    free(h);
    return rc;
}

int mn_adapter_load_gguf(const mn_model *m, const mn_gguf *g, mn_adapter **out) {
    if (!out) return mn_error(MN_EINVAL, "adapter load: no output");
    *out = NULL;
    if (!m || !g) return mn_error(MN_EINVAL, "adapter load: no model or file");
    mn_adapter_info info;
    mn_adapter *a = NULL;
    int rc;
    if ((rc = read_meta(g, &info))) goto done;
    if (info.base_hash != m->weights_hash) {
        rc = mn_error(MN_EINVAL, "adapter was made for model '%s' (hash %016" PRIx64 "), not '%s' (hash %016" PRIx64
                                 ")",
                      info.base_name, info.base_hash, m->name, m->weights_hash);
        goto done;
    }
    if (info.base_n_embd != m->hp.n_embd || info.base_n_layer != m->hp.n_layer) {
        rc = mn_error(MN_EINVAL, "adapter is for n_embd %d, n_layer %d; the model has %d, %d", (int)info.base_n_embd,
                      (int)info.base_n_layer, (int)m->hp.n_embd, (int)m->hp.n_layer);
        goto done;
    }
    if ((rc = layout(m, &info.params, &a))) goto done;
    snprintf(a->base_name, sizeof a->base_name, "%s", info.base_name);
    rc = read_tensors(g, a);
done:
    if (rc)
        mn_adapter_free(a);
    else
        *out = a;
    return rc;
}
