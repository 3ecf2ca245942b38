/* test_adapter.c - adapter files: init, save/load round trips, and every
 * validation error, on tiny random Llamas written here and on the default
 * model when present.
 *
 * The tiny model: 2 layers, n_embd 64, 2 heads of 32, 1 kv head, ffn 128,
 * vocab 260 (EOS = 258); token_embd in Q8_0 and the attention matrices in
 * Q4_1/Q8_0/F16/Q4_0, so the adapter's dequantised copies are checked against
 * the test's own scalar dequantisation of the bytes it wrote.
 */
#include <stdint.h>
#include <unistd.h>

#include "core/gguf.h"
#include "kernels/quant.h"
#include "memory/adapter.h"
#include "mnemo.h"
#include "test.h"

enum { C = 64, H = 2, D = 32, KH = 1, F = 128, V = 260, NL = 2, EOS = 258 };

static uint64_t rng;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* dequantised copies of what the tiny model stores */
static float E[V * C];
static float WQ[NL][H * D * C], WK[NL][KH * D * C], WV[NL][KH * D * C], WO[NL][C * H * D];

static void add_matrix(mn_gguf_writer *w, const char *name, int type, int64_t cols, int64_t rows, float *deq) {
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)((urand() * 2 - 1) / sqrt((double)cols));
    const mn_quant_traits *qt = mn_quant_get_isa(type, MN_ISA_SCALAR);
    size_t rb = mn_type_row_bytes(type, cols);
    char *q = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) qt->from_float(f + r * cols, q + (size_t)r * rb, cols);
    int64_t ne[2] = {cols, rows};
    CHECK(mn_gguf_writer_add_tensor(w, name, type, 2, ne, q) == 0, "add %s: %s", name, mn_last_error());
    if (deq)
        for (int64_t r = 0; r < rows; r++) qt->to_float(q + (size_t)r * rb, deq + r * cols, cols);
    free(f);
    free(q);
}

static void add_norm(mn_gguf_writer *w, const char *name) {
    float f[C];
    for (int i = 0; i < C; i++) f[i] = 1.0f;
    int64_t ne[1] = {C};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, 1, ne, f);
}

static void add_vocab(mn_gguf_writer *w) {
    static char store[V][8];
    const char *toks[V];
    int32_t types[V];
    for (int b = 0; b < 256; b++) {
        snprintf(store[b], sizeof store[b], "<0x%02X>", b);
        toks[b] = store[b];
        types[b] = 6;
    }
    const char *sp[4] = {"<s>", "<x>", "</s>", "<pad>"};
    for (int i = 0; i < 4; i++) toks[256 + i] = sp[i], types[256 + i] = 3;
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", V, toks, NULL);
    float scores[V] = {0};
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MN_GGUF_FLOAT32, V, scores);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, V, types);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", EOS);
}

static int write_model(const char *path, const char *name, uint64_t seed) {
    rng = seed;
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_str(w, "general.name", name);
    mn_gguf_writer_set_u32(w, "llama.block_count", NL);
    mn_gguf_writer_set_u32(w, "llama.context_length", 64);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", KH);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    add_vocab(w);
    add_matrix(w, "token_embd.weight", MN_TYPE_Q8_0, C, V, E);
    add_matrix(w, "output.weight", MN_TYPE_F16, C, V, NULL);
    add_norm(w, "output_norm.weight");
    char nm[64];
    for (int l = 0; l < NL; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        add_matrix(w, nm, MN_TYPE_Q4_1, C, H * D, WQ[l]);
        snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
        add_matrix(w, nm, MN_TYPE_Q8_0, C, KH * D, WK[l]);
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        add_matrix(w, nm, MN_TYPE_F16, C, KH * D, WV[l]);
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l);
        add_matrix(w, nm, MN_TYPE_Q4_0, H * D, C, WO[l]);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", l);
        add_matrix(w, nm, MN_TYPE_F32, C, F, NULL);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
        add_matrix(w, nm, MN_TYPE_F32, C, F, NULL);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        add_matrix(w, nm, MN_TYPE_F32, F, C, NULL);
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        add_norm(w, nm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        add_norm(w, nm);
    }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

static void tmp_path(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "/tmp/mnemo-adapter-%s-XXXXXX", tag);
    int fd = mkstemp(buf);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) close(fd);
}

/* Checks the LoRA tensors of a fresh adapter: A in bounds and spread, B zero. */
static void check_fresh_lora(const mn_adapter *a, int n_layer, int64_t n_embd, int n_targets) {
    int r = 0;
    double bound = 1.0 / sqrt((double)n_embd);
    for (int l = 0; l < n_layer; l++)
        for (int w = 0; w < n_targets; w++) {
            const float *A, *B;
            int rc = mn_adapter_lora(a, l, (mn_lora_target)w, &A, &B, &r);
            CHECK(rc == 0, "lora %d/%d: %s", l, w, mn_last_error());
            if (rc) continue;
            int64_t na = n_embd * r, bad = 0, nz = 0;
            double mn = 1, mx = -1;
            for (int64_t i = 0; i < na; i++) {
                if (!(fabs(A[i]) <= bound)) bad++;
                if (A[i] != 0) nz++;
                if (A[i] < mn) mn = A[i];
                if (A[i] > mx) mx = A[i];
            }
            CHECK(bad == 0, "layer %d target %d: %lld A values beyond 1/sqrt(n_in)", l, w, (long long)bad);
            CHECK(nz == na && mx > 0.5 * bound && mn < -0.5 * bound, "A spread: %g..%g (bound %g)", mn, mx, bound);
        }
}

/* Every tensor of two adapters: same names, shapes and bytes. */
static int same_tensors(const mn_adapter *x, const mn_adapter *y) {
    if (mn_adapter_n_tensors(x) != mn_adapter_n_tensors(y)) return 0;
    for (int i = 0; i < mn_adapter_n_tensors(x); i++) {
        const char *n1, *n2;
        int d1, d2;
        int64_t e1[2], e2[2];
        const float *p1, *p2;
        mn_adapter_tensor_at(x, i, &n1, &d1, e1, &p1);
        mn_adapter_tensor_at(y, i, &n2, &d2, e2, &p2);
        if (strcmp(n1, n2) || d1 != d2 || e1[0] != e2[0] || e1[1] != e2[1]) return 0;
        if (memcmp(p1, p2, sizeof(float) * (size_t)(e1[0] * e1[1]))) return 0;
    }
    return 1;
}

static int same_config(const mn_adapter_params *p, const mn_adapter_params *q) {
    int ok = p->compressor == q->compressor && p->segment == q->segment && p->ratio == q->ratio &&
             p->rank == q->rank && p->alpha == q->alpha;
    if (p->compressor == MN_COMP_BEACON) {
        ok = ok && p->placement == q->placement && p->attention == q->attention && p->attend_prev == q->attend_prev &&
             p->sinks == q->sinks && p->proj_o == q->proj_o && p->n_ratios == q->n_ratios &&
             !memcmp(p->ratios, q->ratios, sizeof(int32_t) * (size_t)p->n_ratios);
    }
    return ok;
}

/* All B tensors of a fresh adapter are zero: walk the tensors by name. */
static void check_b_zero(const mn_adapter *a) {
    int n_b = 0;
    for (int i = 0; i < mn_adapter_n_tensors(a); i++) {
        const char *nm;
        int64_t ne[2];
        const float *d;
        mn_adapter_tensor_at(a, i, &nm, NULL, ne, &d);
        size_t len = strlen(nm);
        if (len < 7 || strcmp(nm + len - 7, ".lora_b")) continue;
        n_b++;
        int64_t nz = 0;
        for (int64_t k = 0; k < ne[0] * ne[1]; k++) nz += d[k] != 0;
        CHECK(nz == 0, "%s: %lld non-zero entries in a fresh B", nm, (long long)nz);
    }
    CHECK(n_b > 0 || mn_adapter_config(a)->compressor == MN_COMP_BEACON, "no B tensors found");
}

static void round_trip(const mn_adapter *a, const mn_model *m, const char *path, const char *what) {
    CHECK(mn_adapter_save(a, path) == 0, "%s save: %s", what, mn_last_error());
    mn_adapter *b = NULL;
    int rc = mn_adapter_load(m, path, &b);
    CHECK(rc == 0 && b, "%s load: %s", what, mn_last_error());
    if (rc) return;
    CHECK(same_config(mn_adapter_config(a), mn_adapter_config(b)), "%s: config differs after load", what);
    CHECK(mn_adapter_n_mem(a) == mn_adapter_n_mem(b), "%s: n_mem", what);
    CHECK(mn_adapter_base_hash(a) == mn_adapter_base_hash(b) && mn_adapter_base_hash(b) == mn_model_hash(m),
          "%s: base hash", what);
    CHECK(!strcmp(mn_adapter_base_name(b), mn_model_name(m)), "%s: base name '%s'", what, mn_adapter_base_name(b));
    CHECK(mn_adapter_n_params(a) == mn_adapter_n_params(b), "%s: n_params", what);
    CHECK(same_tensors(a, b), "%s: tensors differ after save/load", what);
    CHECK(mn_adapter_lora_scale(a) == mn_adapter_lora_scale(b), "%s: scale", what);
    mn_adapter_info info;
    CHECK(mn_adapter_read_info(path, &info) == 0, "%s info: %s", what, mn_last_error());
    CHECK(info.n_params == mn_adapter_n_params(a) && info.n_tensors == mn_adapter_n_tensors(a) &&
              info.base_hash == mn_model_hash(m) && info.n_mem == mn_adapter_n_mem(a),
          "%s: info %lld params, %lld tensors", what, (long long)info.n_params, (long long)info.n_tensors);
    mn_adapter_free(b);
}

/* ----------------------------------------------------- crafted files
 * Writes an adapter by hand from the documented format (so the format itself
 * is checked), with one defect chosen by `bug`. */
enum {
    BUG_NONE,
    BUG_ARCH,
    BUG_COMPRESSOR,
    BUG_RATIO,
    BUG_NMEM,
    BUG_MISSING,
    BUG_SHAPE,
    BUG_TYPE,
    BUG_EXTRA,
    BUG_NDIMS,
    BUG_NONFINITE,
    BUG_NO_KEY,
};

static int write_crafted(const mn_adapter *a, const char *path, int bug) {
    const mn_adapter_params *p = mn_adapter_config(a);
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", bug == BUG_ARCH ? "llama" : "mnemo-adapter");
    mn_gguf_writer_set_str(w, "adapter.type", "lora");
    mn_gguf_writer_set_f32(w, "adapter.lora.alpha", p->alpha);
    mn_gguf_writer_set_str(w, "mnemo.compressor", bug == BUG_COMPRESSOR ? "gist" : mn_compressor_name(p->compressor));
    mn_gguf_writer_set_u32(w, "mnemo.segment", (uint32_t)p->segment);
    mn_gguf_writer_set_u32(w, "mnemo.n_mem", (uint32_t)(bug == BUG_NMEM ? 7 : mn_adapter_n_mem(a)));
    mn_gguf_writer_set_u32(w, "mnemo.ratio", bug == BUG_RATIO ? 3u : (uint32_t)p->ratio);
    if (bug != BUG_NO_KEY) mn_gguf_writer_set_u32(w, "mnemo.lora.rank", (uint32_t)p->rank);
    mn_gguf_writer_set_str(w, "mnemo.base.name", mn_adapter_base_name(a));
    mn_gguf_writer_set_u64(w, "mnemo.base.hash", mn_adapter_base_hash(a));
    mn_gguf_writer_set_u32(w, "mnemo.base.n_embd", C);
    mn_gguf_writer_set_u32(w, "mnemo.base.n_layer", NL);
    int n = mn_adapter_n_tensors(a);
    for (int i = 0; i < n; i++) {
        const char *nm;
        int nd;
        int64_t ne[2];
        const float *d;
        mn_adapter_tensor_at(a, i, &nm, &nd, ne, &d);
        if (bug == BUG_MISSING && i == n - 1) continue;
        if (i == 3 && bug == BUG_SHAPE) {
            int64_t ne2[2] = {ne[1], ne[0]}; /* transposed: same size, wrong shape */
            mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, 2, ne2, d);
        } else if (i == 3 && bug == BUG_NDIMS) {
            int64_t ne1[1] = {ne[0] * ne[1]};
            mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, 1, ne1, d);
        } else if (i == 3 && bug == BUG_TYPE) { /* bf16: a type adapters do not use */
            uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(ne[0] * ne[1]));
            for (int64_t k = 0; k < ne[0] * ne[1]; k++) {
                uint32_t u;
                memcpy(&u, &d[k], 4);
                h[k] = (uint16_t)(u >> 16);
            }
            mn_gguf_writer_add_tensor(w, nm, MN_TYPE_BF16, nd, ne, h);
            free(h);
        } else if (i == 0 && bug == BUG_NONFINITE) {
            float *c = malloc(sizeof(float) * (size_t)(ne[0] * ne[1]));
            memcpy(c, d, sizeof(float) * (size_t)(ne[0] * ne[1]));
            c[5] = NAN;
            mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, nd, ne, c);
            free(c);
        } else {
            mn_gguf_writer_add_tensor(w, nm, MN_TYPE_F32, nd, ne, d);
        }
    }
    if (bug == BUG_EXTRA) {
        float z[8] = {0};
        int64_t ne[1] = {8};
        mn_gguf_writer_add_tensor(w, "blk.0.attn_k.weight.lora_a", MN_TYPE_F32, 1, ne, z);
    }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

static void expect_fail(const mn_model *m, const char *path, int code, const char *msg, const char *what) {
    mn_adapter *b = (mn_adapter *)&b; /* must be reset to NULL */
    int rc = mn_adapter_load(m, path, &b);
    CHECK(rc == code && b == NULL, "%s: rc %d (want %d), %s", what, rc, code, mn_last_error());
    CHECK(strstr(mn_last_error(), msg) != NULL, "%s: message '%s' lacks '%s'", what, mn_last_error(), msg);
    if (rc == 0) mn_adapter_free(b);
}

static void tiny_tests(void) {
    char ma[64], mb[64], ap[64];
    tmp_path(ma, sizeof ma, "model-a");
    tmp_path(mb, sizeof mb, "model-b");
    tmp_path(ap, sizeof ap, "file");
    CHECK(write_model(mb, "tiny-b", 0x5eed2) == 0, "write model b: %s", mn_last_error());
    CHECK(write_model(ma, "tiny-a", 0x5eed1) == 0, "write model a: %s", mn_last_error()); /* E, W* are a's */
    mn_model *m = NULL, *m2 = NULL;
    CHECK(mn_model_load(ma, &m) == 0, "load a: %s", mn_last_error());
    CHECK(mn_model_load(mb, &m2) == 0, "load b: %s", mn_last_error());
    if (!m || !m2) goto out;
    CHECK(mn_model_hash(m) != mn_model_hash(m2), "the two tiny models must differ");

    /* --- UIO */
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    CHECK(p.segment == 1024 && p.ratio == 8 && p.rank == 128 && p.alpha == 512.0f, "uio defaults");
    p.segment = 64, p.rank = 4, p.alpha = 8, p.seed = 7;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "uio init: %s", mn_last_error());
    if (!a) goto out;
    CHECK(mn_adapter_n_mem(a) == 8, "n_mem %d", (int)mn_adapter_n_mem(a));
    CHECK(mn_adapter_lora_scale(a) == 2.0f, "scale %g", (double)mn_adapter_lora_scale(a));
    CHECK(!memcmp(mn_adapter_mem_embd(a), E + (size_t)EOS * C, sizeof(float) * C), "mem.embd = EOS row");
    /* per layer: 4 A (C x r) + B for q (r x H*D) and v, k, v (r x KH*D) */
    int64_t want = C + NL * (4 * C * 4 + 4 * (H * D + 3 * KH * D));
    CHECK(mn_adapter_n_params(a) == want, "uio params %lld, want %lld", (long long)mn_adapter_n_params(a),
          (long long)want);
    CHECK(mn_adapter_n_tensors(a) == 1 + NL * 8, "uio tensors %d", mn_adapter_n_tensors(a));
    check_fresh_lora(a, NL, C, 4);
    check_b_zero(a);
    {
        const char *nm;
        int64_t ne[2];
        mn_adapter_tensor_at(a, 2, &nm, NULL, ne, NULL);
        CHECK(!strcmp(nm, "blk.0.attn_q.weight.lora_b") && ne[0] == 4 && ne[1] == H * D, "tensor 2: %s [%lld, %lld]",
              nm, (long long)ne[0], (long long)ne[1]);
        mn_adapter_tensor_at(a, 7, &nm, NULL, ne, NULL);
        CHECK(!strcmp(nm, "mem.blk.0.attn_v.weight.lora_a") && ne[0] == C && ne[1] == 4, "tensor 7: %s", nm);
    }
    CHECK(mn_adapter_beacon_proj(a, 0, 'q') == NULL, "uio has no beacon projections");
    /* same seed: same adapter; another seed: other A */
    mn_adapter *a2 = NULL, *a3 = NULL;
    mn_adapter_init(m, &p, &a2);
    p.seed = 8;
    mn_adapter_init(m, &p, &a3);
    p.seed = 7;
    CHECK(a2 && same_tensors(a, a2), "init is deterministic");
    CHECK(a3 && !same_tensors(a, a3), "the seed changes A");
    mn_adapter_free(a2);
    mn_adapter_free(a3);
    round_trip(a, m, ap, "uio");
    /* ratio and recent window changed after training: checked, kept by a save */
    {
        const int32_t r0 = mn_adapter_config(a)->ratio, k0 = mn_adapter_config(a)->recent;
        CHECK(mn_adapter_set_recent(a, MN_ADAPTER_MAX_RECENT + 1) == MN_EINVAL &&
                  mn_adapter_config(a)->recent == k0,
              "recent window past the limit refused, adapter unchanged");
        CHECK(mn_adapter_set_ratio(a, 3) == MN_EINVAL && mn_adapter_config(a)->ratio == r0, "ratio 3 refused");
        CHECK(mn_adapter_set_recent(a, 4) == 0 && mn_adapter_set_ratio(a, 4) == 0, "recent 4, ratio 4: %s",
              mn_last_error());
        mn_adapter *b = NULL;
        CHECK(mn_adapter_save(a, ap) == 0 && mn_adapter_load(m, ap, &b) == 0 && b, "save/load: %s", mn_last_error());
        if (b) {
            CHECK(mn_adapter_config(b)->recent == 4 && mn_adapter_config(b)->ratio == 4 &&
                      mn_adapter_n_mem(b) == p.segment / 4 && same_tensors(a, b),
                  "the copy keeps recent %d, ratio %d and the tensors", (int)mn_adapter_config(b)->recent,
                  (int)mn_adapter_config(b)->ratio);
            mn_adapter_free(b);
        }
        mn_adapter_set_recent(a, k0);
        mn_adapter_set_ratio(a, r0);
    }
    /* f16 tensors: half the file, every value the nearest f16; beyond f16's range refused */
    {
        CHECK(mn_adapter_save_as(a, ap, 1) == 0, "f16 save: %s", mn_last_error());
        mn_adapter *h = NULL;
        CHECK(mn_adapter_load(m, ap, &h) == 0 && h, "f16 load: %s", mn_last_error());
        int same = h != NULL;
        for (int i = 0; same && i < mn_adapter_n_tensors(a); i++) {
            const char *nm;
            int nd;
            int64_t ne[2];
            const float *x, *y;
            mn_adapter_tensor_at(a, i, &nm, &nd, ne, &x);
            mn_adapter_tensor_at(h, i, &nm, &nd, ne, &y);
            for (int64_t k = 0; same && k < ne[0] * ne[1]; k++) same = y[k] == mn_fp16_to_fp32(mn_fp32_to_fp16(x[k]));
        }
        CHECK(same, "f16 adapter holds the f16 rounding of every value");
        mn_adapter_free(h);
        float *t0 = mn_adapter_tensor_data_mut(a, 0), keep = t0[0];
        t0[0] = 1e6f;
        CHECK(mn_adapter_save_as(a, ap, 1) == MN_ERANGE && strstr(mn_last_error(), "does not fit in f16"),
              "f16 save of 1e6: %s", mn_last_error());
        t0[0] = keep;
    }

    /* a hand-written file in the documented format loads; each defect is refused clearly */
    CHECK(write_crafted(a, ap, BUG_NONE) == 0, "crafted: %s", mn_last_error());
    {
        mn_adapter *b = NULL;
        CHECK(mn_adapter_load(m, ap, &b) == 0 && b && same_tensors(a, b), "hand-written adapter: %s",
              mn_last_error());
        mn_adapter_free(b);
    }
    static const struct {
        int bug, code;
        const char *msg;
    } bugs[] = {
        {BUG_ARCH, MN_EFORMAT, "not a mnemo adapter (general.architecture is 'llama'"},
        {BUG_COMPRESSOR, MN_EFORMAT, "unknown compressor 'gist'"},
        {BUG_RATIO, MN_EFORMAT, "ratio 3 does not divide segment 64"},
        {BUG_NMEM, MN_EFORMAT, "n_mem 7 is not segment 64 / ratio 8"},
        {BUG_MISSING, MN_EFORMAT, "missing tensor 'mem.blk.1.attn_v.weight.lora_b'"},
        {BUG_SHAPE, MN_EFORMAT, "tensor 'blk.0.attn_v.weight.lora_a' has shape [4, 64"},
        {BUG_NDIMS, MN_EFORMAT, "tensor 'blk.0.attn_v.weight.lora_a' has shape [256, 1, 1, 1] (1 dims)"},
        {BUG_TYPE, MN_EFORMAT, "tensor 'blk.0.attn_v.weight.lora_a' has type bf16, expected f32 or f16"},
        {BUG_EXTRA, MN_EFORMAT, "unexpected tensor 'blk.0.attn_k.weight.lora_a'"},
        {BUG_NONFINITE, MN_EFORMAT, "tensor 'mem.embd' holds a non-finite value"},
        {BUG_NO_KEY, MN_EFORMAT, "missing key 'mnemo.lora.rank'"},
    };
    for (size_t i = 0; i < sizeof bugs / sizeof bugs[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "crafted bug %d", bugs[i].bug);
        CHECK(write_crafted(a, ap, bugs[i].bug) == 0, "write %s: %s", what, mn_last_error());
        expect_fail(m, ap, bugs[i].code, bugs[i].msg, what);
    }

    /* adapter of another model; a model file is not an adapter */
    CHECK(mn_adapter_save(a, ap) == 0, "save: %s", mn_last_error());
    expect_fail(m2, ap, MN_EINVAL, "adapter was made for model 'tiny-a' (hash ", "other model");
    expect_fail(m2, ap, MN_EINVAL, "not 'tiny-b' (hash ", "other model");
    expect_fail(m, ma, MN_EFORMAT, "not a mnemo adapter", "model file");
    expect_fail(m, "/nonexistent/adapter.gguf", MN_ENOTFOUND, "/nonexistent/adapter.gguf", "missing file");

    /* bytes after the tensor data are refused too (the file is not what was written) */
    {
        FILE *f = fopen(ap, "ab");
        CHECK(f != NULL, "append");
        if (f) {
            char z[32] = {0};
            fwrite(z, 1, sizeof z, f);
            fclose(f);
        }
        expect_fail(m, ap, MN_EFORMAT, "truncated or trailing bytes", "trailing bytes");
        CHECK(mn_adapter_save(a, ap) == 0, "save: %s", mn_last_error());
    }

    /* every truncation of a small adapter fails cleanly */
    {
        FILE *f = fopen(ap, "rb");
        long size = -1;
        if (f && !fseek(f, 0, SEEK_END)) size = ftell(f);
        if (f) fclose(f);
        CHECK(size > 1000, "adapter size %ld", size);
        long n_ok = 0, n_msg = 0;
        for (long len = size - 1; len >= 0; len--) {
            if (truncate(ap, len)) break;
            mn_adapter *b = (mn_adapter *)&b;
            int rc = mn_adapter_load(m, ap, &b);
            if (rc == 0 || b != NULL) {
                n_ok++;
                if (rc == 0) mn_adapter_free(b);
            }
            if (rc < 0 && strlen(mn_last_error()) > 10) n_msg++;
        }
        CHECK(n_ok == 0, "%ld of %ld truncated adapters loaded", n_ok, size);
        CHECK(n_msg == size, "%ld of %ld truncations gave a message", n_msg, size);
        printf("  %ld truncations of a %ld-byte adapter all refused\n", size - n_ok, size);
    }

    /* configuration errors at init */
    {
        mn_adapter *b = (mn_adapter *)&b;
        mn_adapter_params q = p;
        q.ratio = 3;
        CHECK(mn_adapter_init(m, &q, &b) == MN_EINVAL && !b, "ratio 3");
        CHECK(strstr(mn_last_error(), "ratio 3 does not divide segment 64"), "message: %s", mn_last_error());
        q = p, q.rank = C + 1;
        CHECK(mn_adapter_init(m, &q, &b) == MN_EINVAL && !b, "rank too big");
        CHECK(strstr(mn_last_error(), "rank 65"), "message: %s", mn_last_error());
        q = p, q.alpha = 0;
        CHECK(mn_adapter_init(m, &q, &b) == MN_EINVAL && !b, "alpha 0");
        q = p, q.segment = 0;
        CHECK(mn_adapter_init(m, &q, &b) == MN_EINVAL && !b, "segment 0");
        q = mn_adapter_default_params(MN_COMP_BEACON);
        q.segment = 48; /* 48 % 32 != 0: the default ratio set does not fit */
        CHECK(mn_adapter_init(m, &q, &b) == MN_EINVAL && !b, "beacon ratio set");
        CHECK(strstr(mn_last_error(), "ratio 32 does not divide segment 48"), "message: %s", mn_last_error());
        CHECK(mn_compressor_parse("uio") == MN_COMP_UIO && mn_compressor_parse("beacon") == MN_COMP_BEACON &&
                  mn_compressor_parse("summary") == MN_COMP_SUMMARY && mn_compressor_parse("UIO") == -1,
              "compressor names");
        CHECK(mn_beacon_attention_parse("step-expansion") == MN_BATTN_STEP_EXPANSION &&
                  mn_beacon_placement_parse("append") == MN_PLACE_APPEND && mn_beacon_placement_parse("x") == -1,
              "beacon names");
    }
    mn_adapter_free(a);

    /* --- beacon (with O) */
    p = mn_adapter_default_params(MN_COMP_BEACON);
    CHECK(p.segment == 1024 && p.ratio == 8 && p.placement == MN_PLACE_INTERLEAVE &&
              p.attention == MN_BATTN_FULL_COVERAGE && p.attend_prev == 1 && p.sinks == 0 && p.proj_o == 0 &&
              p.n_ratios == 5 && p.ratios[4] == 32,
          "beacon defaults");
    p.segment = 64, p.proj_o = 1, p.placement = MN_PLACE_APPEND, p.attention = MN_BATTN_STEP_EXPANSION;
    p.attend_prev = 0, p.sinks = 4, p.n_ratios = 3, p.ratios[0] = 4, p.ratios[1] = 8, p.ratios[2] = 16;
    a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "beacon init: %s", mn_last_error());
    if (a) {
        CHECK(!memcmp(mn_adapter_mem_embd(a), E + (size_t)EOS * C, sizeof(float) * C), "beacon embd = EOS row");
        int ok = 1;
        for (int l = 0; l < NL; l++) {
            ok &= !memcmp(mn_adapter_beacon_proj(a, l, 'q'), WQ[l], sizeof WQ[l]);
            ok &= !memcmp(mn_adapter_beacon_proj(a, l, 'k'), WK[l], sizeof WK[l]);
            ok &= !memcmp(mn_adapter_beacon_proj(a, l, 'v'), WV[l], sizeof WV[l]);
            ok &= !memcmp(mn_adapter_beacon_proj(a, l, 'o'), WO[l], sizeof WO[l]);
        }
        CHECK(ok, "beacon projections equal the dequantised base matrices");
        CHECK(mn_adapter_beacon_proj(a, NL, 'q') == NULL && mn_adapter_beacon_proj(a, 0, 'x') == NULL, "bad args");
        int64_t want_b = C + NL * (H * D * C * 2 + 2 * KH * D * C);
        CHECK(mn_adapter_n_params(a) == want_b, "beacon params %lld", (long long)mn_adapter_n_params(a));
        CHECK(mn_adapter_lora(a, 0, MN_LORA_ENC_Q, NULL, NULL, NULL) == MN_ENOTFOUND, "beacon has no LoRA");
        CHECK(mn_adapter_lora_scale(a) == 0.0f, "beacon scale");
        round_trip(a, m, ap, "beacon");
        CHECK(mn_adapter_set_recent(a, 2) == MN_EINVAL && strstr(mn_last_error(), "uio"), "beacon has no recent window");
        mn_adapter_free(a);
    }
    p.proj_o = 0;
    a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "beacon init: %s", mn_last_error());
    if (a) {
        CHECK(mn_adapter_beacon_proj(a, 0, 'o') == NULL && mn_adapter_n_tensors(a) == 1 + 3 * NL, "no O");
        round_trip(a, m, ap, "beacon without O");
        mn_adapter_free(a);
    }

    /* --- summary */
    p = mn_adapter_default_params(MN_COMP_SUMMARY);
    CHECK(p.segment == 1024 && p.ratio == 8 && p.rank == 8 && p.alpha == 16.0f, "summary defaults");
    p.segment = 32, p.ratio = 4, p.seed = 3;
    a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "summary init: %s", mn_last_error());
    if (a) {
        CHECK(mn_adapter_n_mem(a) == 8 && mn_adapter_n_tensors(a) == 1 + 4 * NL, "summary shape");
        check_fresh_lora(a, NL, C, 2);
        check_b_zero(a);
        CHECK(mn_adapter_lora(a, 1, MN_LORA_MEM_K, NULL, NULL, NULL) == MN_ENOTFOUND, "summary has no transfer head");
        CHECK(mn_adapter_lora(a, NL, MN_LORA_ENC_Q, NULL, NULL, NULL) == MN_EINVAL, "bad layer");
        round_trip(a, m, ap, "summary");
        /* a summary adapter with uio's tensor set is refused */
        mn_adapter_free(a);
    }
out:
    mn_model_free(m);
    mn_model_free(m2);
    unlink(ma);
    unlink(mb);
    unlink(ap);
}

/* Dequantised row r of a tensor of the model file, by the test's own reading. */
static void model_rows(const mn_gguf *g, const char *name, int64_t r0, int64_t n, float *out, int64_t *ne0,
                       int64_t *ne1) {
    const mn_gguf_tensor *t = mn_gguf_find_tensor(g, name);
    CHECK(t != NULL, "model tensor %s", name);
    if (!t) return;
    *ne0 = t->ne[0], *ne1 = t->ne[1];
    if (!out) return;
    const mn_quant_traits *qt = mn_quant_get_isa(t->type, MN_ISA_SCALAR);
    size_t rb = mn_type_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < n; r++) qt->to_float((const char *)t->data + (size_t)(r0 + r) * rb, out + r * t->ne[0], t->ne[0]);
}

static void real_model_tests(const char *path) {
    mn_model *m = NULL;
    mn_gguf *g = NULL;
    CHECK(mn_model_load(path, &m) == 0, "load %s: %s", path, mn_last_error());
    CHECK(mn_gguf_open(path, &g) == 0, "open %s", path);
    if (!m || !g) goto out;
    int64_t C_ = mn_model_n_embd(m), L_ = mn_model_n_layer(m), nq = 0, nkv = 0, x;
    model_rows(g, "blk.0.attn_q.weight", 0, 0, NULL, &x, &nq);
    model_rows(g, "blk.0.attn_v.weight", 0, 0, NULL, &x, &nkv);
    int32_t eos = mn_token_eos(mn_model_tokenizer(m));
    float *row = malloc(sizeof(float) * (size_t)C_);
    model_rows(g, "token_embd.weight", eos, 1, row, &x, &x);

    char ap[64];
    tmp_path(ap, sizeof ap, "real");
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "uio init: %s", mn_last_error());
    if (a) {
        CHECK(mn_adapter_n_mem(a) == 128, "m = 128");
        CHECK(mn_adapter_lora_scale(a) == 4.0f, "scale 512/128");
        CHECK(!memcmp(mn_adapter_mem_embd(a), row, sizeof(float) * (size_t)C_), "mem.embd = EOS %d row", (int)eos);
        int64_t want = C_ + L_ * (4 * C_ * 128 + 128 * (nq + 3 * nkv));
        CHECK(mn_adapter_n_params(a) == want, "params %lld, want %lld", (long long)mn_adapter_n_params(a),
              (long long)want);
        printf("  %s: UIO adapter (l 1024, m 128, rank 128) has %lld parameters\n", mn_model_name(m),
               (long long)want);
        check_fresh_lora(a, (int)L_, C_, 4);
        check_b_zero(a);
        round_trip(a, m, ap, "real uio");
        mn_adapter_free(a);
    }
    p = mn_adapter_default_params(MN_COMP_BEACON);
    a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "beacon init: %s", mn_last_error());
    if (a) {
        float *w = malloc(sizeof(float) * (size_t)(C_ * nq));
        int ok = 1;
        char nm[64];
        for (int l = 0; l < L_; l++) {
            static const char *const sfx[3] = {"attn_q", "attn_k", "attn_v"};
            for (int k = 0; k < 3; k++) {
                int64_t n0 = 0, n1 = 0;
                snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, sfx[k]);
                model_rows(g, nm, 0, 0, NULL, &n0, &n1);
                model_rows(g, nm, 0, n1, w, &n0, &n1);
                ok &= !memcmp(mn_adapter_beacon_proj(a, l, "qkv"[k]), w, sizeof(float) * (size_t)(n0 * n1));
            }
        }
        free(w);
        CHECK(ok, "real beacon projections equal the dequantised base");
        round_trip(a, m, ap, "real beacon");
        mn_adapter_free(a);
    }
    unlink(ap);
    free(row);
out:
    mn_gguf_free(g);
    mn_model_free(m);
}

int main(void) {
    tiny_tests();
    const char *path = test_model_path();
    CHECK(path != NULL, "the default model is missing (make model fetches it): the real-model adapter tests need it");
    if (path) real_model_tests(path);
    TEST_MAIN_END();
}
