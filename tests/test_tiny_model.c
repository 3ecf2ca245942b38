/* test_tiny_model.c - the forward pass against a double-precision reference on a
 * tiny random Llama written by the test itself, with every supported tensor type.
 *
 * The model: 2 layers, n_embd 256 (K-quants need rows of 256), 4 heads of 64, 2 kv
 * heads (GQA), ffn 512, vocab 260, separate output matrix. Each matrix gets a
 * different type so all of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K
 * and Q6_K are used. The reference dequantises the stored weights with the
 * scalar reference kernels and computes everything in double, so the only
 * expected difference is the engine's int8 quantisation of activations and f16
 * K/V: about 0.6% per matrix product, 5.5% of the logits' rms at the worst of
 * 2340 logits. The bound is 15%; the same comparison against a reference
 * without RoPE or with NeoX (half-split) rotation pairs gives 88% and 110%.
 *
 * The Gemma 3 configuration writes the same shapes as architecture "gemma3":
 * norms of each query and key head, norms after attention and after the
 * feed-forward block, GeGLU (tanh GELU), embeddings times sqrt(n_embd), NeoX
 * RoPE with base 1e6 in the global layer and 1e4 in the window layer, and a
 * sliding window of SWA_W = 4 cells in layer 0 (pattern 2), so that the 9
 * tokens overrun it. Checked through prefill in one piece, in pieces of 4,
 * token by token (the decode kernels) and with an explicit causal mask.
 */
#include <stdint.h>
#include <unistd.h>

#include "core/gguf.h"
#include "kernels/quant.h"
#include "mnemo.h"
#include "model/forward.h"
#include "test.h"
#include "tiny_llama.h"

enum { C = 256, H = 4, D = 64, F = 512, V = 260, NL = 2, T = 9 };
static const float EPS = 1e-5f, THETA = 10000.0f;
/* configuration under test: kv heads (GQA when < H) and linear RoPE scaling */
static int KH = 2;
static double ROPE_SCALE = 1.0;
static int GEMMA;          /* write and check the gemma3 configuration */
enum { SWA_W = 4 };        /* its window (cells), layer 0 only */
#define TM_KD_G (1 * D)    /* one cell's key width in the gemma3 configuration (one kv head) */
static const double GEMMA_THETA = 1e6;

static uint64_t rng = 0x12345678abcdefull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

typedef struct {
    double *w; /* dequantised (rows, cols) */
    int64_t rows, cols;
} dmat;

/* Stores a random matrix of the given type and keeps its dequantised copy. */
static void add_matrix(mn_gguf_writer *w, const char *name, int type, int64_t cols, int64_t rows, double scale,
                       dmat *out) {
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(nrand() * scale);
    const mn_quant_traits *qt = mn_quant_get_isa(type, MN_ISA_SCALAR);
    size_t rb = mn_type_row_bytes(type, cols);
    char *q = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) qt->from_float(f + r * cols, q + (size_t)r * rb, cols);
    int64_t ne[2] = {cols, rows};
    CHECK(mn_gguf_writer_add_tensor(w, name, type, 2, ne, q) == 0, "add %s: %s", name, mn_last_error());
    out->rows = rows;
    out->cols = cols;
    out->w = malloc(sizeof(double) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++) {
        qt->to_float(q + (size_t)r * rb, f + r * cols, cols);
        for (int64_t i = 0; i < cols; i++) out->w[r * cols + i] = f[r * cols + i];
    }
    free(f);
    free(q);
}

static void add_norm_n(mn_gguf_writer *w, const char *name, double *out, int n) {
    float f[C];
    for (int i = 0; i < n; i++) out[i] = f[i] = (float)(1.0 + 0.1 * nrand());
    int64_t ne[1] = {n};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, 1, ne, f);
}
static void add_norm(mn_gguf_writer *w, const char *name, double *out) { add_norm_n(w, name, out, C); }

typedef struct {
    double attn_norm[C], ffn_norm[C], post_attn[C], post_ffn[C], q_norm[D], k_norm[D];
    dmat wq, wk, wv, wo, wg, wu, wd;
} dlayer;
static dlayer L[NL];
static dmat E, OUT;
static double onorm[C];

static const int k_types[] = {MN_TYPE_Q4_1, MN_TYPE_Q8_0, MN_TYPE_Q4_K, MN_TYPE_Q6_K, MN_TYPE_Q4_0,
                              MN_TYPE_Q5_0, MN_TYPE_Q5_1, MN_TYPE_F16,  MN_TYPE_BF16, MN_TYPE_F32};
#define NTYPES ((int)(sizeof k_types / sizeof k_types[0]))

static int write_model(const char *path) {
    mn_gguf_writer *w = mn_gguf_writer_create();
    const char *A = GEMMA ? "gemma3" : "llama";
    char key[96];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, A), key)
    mn_gguf_writer_set_str(w, "general.architecture", A);
    mn_gguf_writer_set_str(w, "general.name", "tiny-test");
    mn_gguf_writer_set_u32(w, KEY("block_count"), NL);
    mn_gguf_writer_set_u32(w, KEY("context_length"), 64);
    mn_gguf_writer_set_u32(w, KEY("embedding_length"), C);
    mn_gguf_writer_set_u32(w, KEY("feed_forward_length"), F);
    mn_gguf_writer_set_u32(w, KEY("attention.head_count"), H);
    mn_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), KH);
    mn_gguf_writer_set_f32(w, KEY("rope.freq_base"), GEMMA ? (float)GEMMA_THETA : THETA);
    mn_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), EPS);
    if (GEMMA) {
        mn_gguf_writer_set_u32(w, KEY("attention.key_length"), D);
        mn_gguf_writer_set_u32(w, KEY("attention.value_length"), D);
        mn_gguf_writer_set_u32(w, KEY("attention.sliding_window"), SWA_W);
        mn_gguf_writer_set_u32(w, KEY("attention.sliding_window_pattern"), 2);
    }
    if (ROPE_SCALE != 1.0) {
        mn_gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear");
        mn_gguf_writer_set_f32(w, KEY("rope.scaling.factor"), (float)ROPE_SCALE);
    }
#undef KEY
    tiny_vocab_write(w);
    int ti = 0;
    /* Gemma multiplies embeddings by sqrt(C): stored smaller, the residual stream stays at the scale of
     * the normed block outputs, so that attention moves the logits enough to be checked */
    add_matrix(w, "token_embd.weight", k_types[ti++ % NTYPES], C, V, GEMMA ? 1.0 / sqrt(C) : 1.0, &E);
    add_matrix(w, "output.weight", k_types[ti++ % NTYPES], C, V, 0.1, &OUT);
    add_norm(w, "output_norm.weight", onorm);
    char nm[64];
    for (int l = 0; l < NL; l++) {
#define M(field, suffix, cols, rows)                                                  \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l);                         \
    add_matrix(w, nm, k_types[ti++ % NTYPES], cols, rows, 1.0 / sqrt(cols), &L[l].field);
        M(wq, "attn_q", C, H * D);
        M(wk, "attn_k", C, KH * D);
        M(wv, "attn_v", C, KH * D);
        M(wo, "attn_output", H * D, C);
        M(wg, "ffn_gate", C, F);
        M(wu, "ffn_up", C, F);
        M(wd, "ffn_down", F, C);
#undef M
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        add_norm(w, nm, L[l].attn_norm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        add_norm(w, nm, L[l].ffn_norm);
        if (GEMMA) {
            snprintf(nm, sizeof nm, "blk.%d.attn_q_norm.weight", l);
            add_norm_n(w, nm, L[l].q_norm, D);
            snprintf(nm, sizeof nm, "blk.%d.attn_k_norm.weight", l);
            add_norm_n(w, nm, L[l].k_norm, D);
            snprintf(nm, sizeof nm, "blk.%d.post_attention_norm.weight", l);
            add_norm(w, nm, L[l].post_attn);
            snprintf(nm, sizeof nm, "blk.%d.post_ffw_norm.weight", l);
            add_norm(w, nm, L[l].post_ffn);
        }
    }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

/* optional LoRA deltas on Q and V of every layer (rank R, scale LS) */
enum { R = 4 };
static const double LS = 0.5;
static int lora_on;
static float la_q[NL][R * C], lb_q[NL][H * D * R], la_v[NL][R * C], lb_v[NL][H * D * R];

static void lora_d(const float *a, const float *b, int n_out, const double *x, double *y) {
    double u[R];
    for (int k = 0; k < R; k++) {
        u[k] = 0;
        for (int i = 0; i < C; i++) u[k] += (double)a[k * C + i] * x[i];
    }
    for (int o = 0; o < n_out; o++)
        for (int k = 0; k < R; k++) y[o] += LS * b[o * R + k] * u[k];
}

static void matvec(const dmat *m, const double *x, double *y) {
    for (int64_t r = 0; r < m->rows; r++) {
        double s = 0;
        for (int64_t i = 0; i < m->cols; i++) s += m->w[r * m->cols + i] * x[i];
        y[r] = s;
    }
}
static void rmsnorm_n(const double *x, const double *w, double *y, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + EPS);
    for (int i = 0; i < n; i++) y[i] = x[i] * sc * w[i];
}
static void rmsnorm_d(const double *x, const double *w, double *y) { rmsnorm_n(x, w, y, C); }

/* rope_mode: 0 = correct (adjacent pairs; NeoX for Gemma), 1 = none, 2 = the other pairing.
 * Gemma: base 1e6 (scaled like Llama's) in the global layer, 1e4 unscaled in the window layer. */
static void rope_d(double *v, int pos, int rope_mode, int layer) {
    if (rope_mode == 1) return;
    const int neox = (rope_mode == 2) != GEMMA;
    const double theta = GEMMA ? (layer == 0 ? 1e4 : GEMMA_THETA) : THETA;
    const double scale = GEMMA && layer == 0 ? 1.0 : ROPE_SCALE;
    for (int i = 0; i < D / 2; i++) {
        double th = pos / scale * pow(theta, -2.0 * i / D), c = cos(th), s = sin(th);
        int a = neox ? i : 2 * i, b = neox ? i + D / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

/* window: the window layer's cells (Gemma; 0 = none, to show the window matters) */
static void reference_w(const int32_t *ids, double *logits /* (T, V) */, int rope_mode, int window) {
    static double x[T][C], xn[C], q[T][H * D], k[T][H * D], v[T][H * D], att[H * D], tmp[C], g[F], u[F];
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++) x[t][i] = E.w[(int64_t)ids[t] * C + i] * (GEMMA ? sqrt((double)C) : 1.0);
    for (int l = 0; l < NL; l++) {
        for (int t = 0; t < T; t++) {
            rmsnorm_d(x[t], L[l].attn_norm, xn);
            matvec(&L[l].wq, xn, q[t]);
            matvec(&L[l].wk, xn, k[t]);
            matvec(&L[l].wv, xn, v[t]);
            if (lora_on) {
                lora_d(la_q[l], lb_q[l], H * D, xn, q[t]);
                lora_d(la_v[l], lb_v[l], KH * D, xn, v[t]);
            }
            if (GEMMA) {
                for (int h = 0; h < H; h++) rmsnorm_n(q[t] + h * D, L[l].q_norm, q[t] + h * D, D);
                for (int h = 0; h < KH; h++) rmsnorm_n(k[t] + h * D, L[l].k_norm, k[t] + h * D, D);
            }
            for (int h = 0; h < H; h++) rope_d(q[t] + h * D, t, rope_mode, l);
            for (int h = 0; h < KH; h++) rope_d(k[t] + h * D, t, rope_mode, l);
        }
        for (int t = 0; t < T; t++) {
            const int j0 = GEMMA && l == 0 && window && t + 1 > window ? t + 1 - window : 0;
            for (int h = 0; h < H; h++) {
                int kh = h / (H / KH);
                double s[T], mx = -1e300, sum = 0;
                for (int j = j0; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < D; i++) d += q[t][h * D + i] * k[j][kh * D + i];
                    s[j] = d / sqrt((double)D);
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = j0; j <= t; j++) sum += (s[j] = exp(s[j] - mx));
                for (int i = 0; i < D; i++) {
                    double o = 0;
                    for (int j = j0; j <= t; j++) o += s[j] * v[j][kh * D + i];
                    att[h * D + i] = o / sum;
                }
            }
            matvec(&L[l].wo, att, tmp);
            if (GEMMA) rmsnorm_d(tmp, L[l].post_attn, tmp);
            for (int i = 0; i < C; i++) x[t][i] += tmp[i];
            rmsnorm_d(x[t], L[l].ffn_norm, xn);
            matvec(&L[l].wg, xn, g);
            matvec(&L[l].wu, xn, u);
            for (int i = 0; i < F; i++)
                g[i] = (GEMMA ? 0.5 * g[i] * (1 + tanh(sqrt(2 / M_PI) * (g[i] + 0.044715 * g[i] * g[i] * g[i])))
                              : g[i] / (1 + exp(-g[i]))) * u[i];
            matvec(&L[l].wd, g, tmp);
            if (GEMMA) rmsnorm_d(tmp, L[l].post_ffn, tmp);
            for (int i = 0; i < C; i++) x[t][i] += tmp[i];
        }
    }
    for (int t = 0; t < T; t++) {
        rmsnorm_d(x[t], onorm, xn);
        matvec(&OUT, xn, logits + (int64_t)t * V);
    }
}

static void reference(const int32_t *ids, double *logits, int rope_mode) {
    reference_w(ids, logits, rope_mode, SWA_W);
}

/* max |a - b| / rms(b) */
static double rel_err(const float *a, const double *b, int64_t n) {
    double m = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        ss += b[i] * b[i];
        double d = fabs(a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m / sqrt(ss / n);
}

static void free_weights(void) {
    free(E.w), free(OUT.w);
    for (int l = 0; l < NL; l++) {
        dmat *ms[] = {&L[l].wq, &L[l].wk, &L[l].wv, &L[l].wo, &L[l].wg, &L[l].wu, &L[l].wd};
        for (int i = 0; i < 7; i++) free(ms[i]->w);
    }
}

static void run_config(int kh, double rope_scale, int gemma) {
    KH = kh;
    ROPE_SCALE = rope_scale;
    GEMMA = gemma;
    printf("  config: %s, %d kv heads of %d, rope scale %g\n", GEMMA ? "gemma3" : "llama", KH, H, ROPE_SCALE);
    char path[] = "/tmp/mnemo-tiny-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    CHECK(write_model(path) == 0, "write tiny model: %s", mn_last_error());
    mn_model *m;
    int rc = mn_model_load(path, &m);
    CHECK(rc == 0, "load tiny model: %s", mn_last_error());
    if (rc) {
        unlink(path);
        return;
    }
    int32_t ids[T] = {72, 101, 108, 108, 111, 32, 259, 3, 200};
    static double ref[T * V], bad[T * V];
    static float lg[T * V];
    reference(ids, ref, 0);
    for (int nt = 1; nt <= 2; nt++) {
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = 32;
        cp.n_threads = nt;
        cp.n_batch = nt == 1 ? 4 : 32;
        mn_context *c;
        CHECK(mn_context_create(m, &cp, &c) == 0, "context");
        CHECK(mn_decode(c, ids, T, lg, 1) == 0, "decode: %s", mn_last_error());
        double e = rel_err(lg, ref, (int64_t)T * V);
        printf("  tiny model, %d thread(s): max |logit - reference| / rms = %.4f\n", nt, e);
        CHECK(e < 0.15, "engine vs double reference: %.4f", e);
        mn_context_free(c);
    }
    /* LoRA on Q and V of every layer: engine (f32 deltas) vs the reference */
    for (int l = 0; l < NL; l++)
        for (int i = 0; i < R * C; i++) {
            la_q[l][i] = (float)(nrand() / sqrt(C));
            la_v[l][i] = (float)(nrand() / sqrt(C));
        }
    for (int l = 0; l < NL; l++)
        for (int i = 0; i < H * D * R; i++) {
            lb_q[l][i] = (float)(nrand() * 0.5);
            lb_v[l][i] = (float)(nrand() * 0.5);
        }
    mn_lora lq[NL], lv[NL];
    for (int l = 0; l < NL; l++) {
        lq[l] = (mn_lora){la_q[l], lb_q[l], R};
        lv[l] = (mn_lora){la_v[l], lb_v[l], R};
    }
    mn_lora_set set = {.scale = (float)LS, .q = lq, .v = lv};
    {
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = 32;
        cp.n_threads = 2;
        mn_context *c;
        CHECK(mn_context_create(m, &cp, &c) == 0, "context");
        CHECK(mn_context_set_lora(c, &set) == 0, "set lora: %s", mn_last_error());
        CHECK(mn_decode(c, ids, T, lg, 1) == 0, "decode with LoRA");
        lora_on = 1;
        reference(ids, bad, 0);
        lora_on = 0;
        double e_lora = rel_err(lg, bad, (int64_t)T * V), e_plain = rel_err(lg, ref, (int64_t)T * V);
        printf("  with LoRA on Q,V: vs LoRA reference %.4f, vs plain reference %.3f\n", e_lora, e_plain);
        CHECK(e_lora < 0.15, "LoRA forward vs reference: %.4f", e_lora);
        CHECK(e_plain > 0.3, "LoRA had too little effect to be tested (%.3f)", e_plain);
        mn_context_set_lora(c, NULL);
        mn_kv_clear(c);
        mn_decode(c, ids, T, lg, 1);
        CHECK(rel_err(lg, ref, (int64_t)T * V) < 0.15, "removing the LoRA restores the model");
        mn_context_free(c);
    }
    reference(ids, ref, 0);
    {
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = 32;
        mn_context *c;
        mn_context_create(m, &cp, &c);
        mn_decode(c, ids, T, lg, 1);
        mn_context_free(c);
    }

    if (GEMMA) {
        /* the window through every kernel path: token by token (decode), an explicit causal mask
         * (the window combined with a caller's mask), pieces of 3 (blocks that start inside it) */
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = 32;
        cp.n_threads = 2;
        cp.n_batch = 3;
        mn_context *c;
        CHECK(mn_context_create(m, &cp, &c) == 0, "context");
        static float one[V];
        for (int t = 0; t < T; t++) {
            CHECK(mn_decode(c, ids + t, 1, one, 0) == 0, "decode token %d", t);
            memcpy(lg + (size_t)t * V, one, sizeof one);
        }
        double e_tok = rel_err(lg, ref, (int64_t)T * V);
        mn_kv_clear(c);
        CHECK(mn_decode(c, ids, T, lg, 1) == 0, "decode in pieces");
        double e_pieces = rel_err(lg, ref, (int64_t)T * V);
        mn_kv_clear(c);
        uint8_t mask[T * T];
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) mask[i * T + j] = j <= i;
        mn_batch b = {.n = T, .tokens = ids, .mask = mask};
        CHECK(mn_decode_batch(c, &b, lg, 1) == 0, "decode with a mask: %s", mn_last_error());
        double e_mask = rel_err(lg, ref, (int64_t)T * V);
        mn_context_free(c);
        reference_w(ids, bad, 0, 0);
        double e_nowin = rel_err(lg, bad, (int64_t)T * V);
        reference_w(ids, bad, 0, SWA_W - 1);
        double e_short = rel_err(lg, bad, (int64_t)T * V);
        reference_w(ids, bad, 0, SWA_W + 1);
        double e_long = rel_err(lg, bad, (int64_t)T * V);
        printf("  window: token by token %.4f, pieces of 3 %.4f, with a mask %.4f; against references without the "
               "window %.3f, one cell shorter %.3f, one longer %.3f\n", e_tok, e_pieces, e_mask, e_nowin, e_short,
               e_long);
        CHECK(e_tok < 0.15 && e_pieces < 0.15 && e_mask < 0.15, "window paths vs reference: %.4f %.4f %.4f", e_tok,
              e_pieces, e_mask);
        CHECK(e_nowin > 0.3 && e_short > 0.3 && e_long > 0.3, "the exact window must matter here (%.3f %.3f %.3f)",
              e_nowin, e_short, e_long);

        /* The window layers' buffer (n_window + n_batch = 7 rows here) through the cell operations:
         * cells read back and appended, dropped and decoded again, give the logits of the plain run;
         * a cell the window layers no longer hold is refused, not read stale. */
        cp.n_batch = 3;
        CHECK(mn_context_create(m, &cp, &c) == 0, "context");
        static float last[V];
        CHECK(mn_decode(c, ids, T, NULL, 0) == 0, "decode");
        float k[NL * 3 * TM_KD_G], v[NL * 3 * TM_KD_G];
        CHECK(mn_kv_read(c, 0, 3, k, v) == MN_ERANGE && strstr(mn_last_error(), "sliding-window"),
              "an old cell of a window layer is refused: %s", mn_last_error());
        CHECK(mn_kv_read(c, T - 3, 3, k, v) == 0, "held cells read: %s", mn_last_error());
        CHECK(mn_kv_drop(c, T - 3, T) == 0 && mn_kv_n_cells(c) == T - 3, "drop the last three");
        int32_t pos3[3] = {T - 3, T - 2, T - 1};
        CHECK(mn_kv_append(c, 3, pos3, k, v, 1) == 0, "append them back: %s", mn_last_error());
        const int32_t nxt = 77;
        CHECK(mn_decode(c, &nxt, 1, last, 0) == 0, "decode after the append");
        mn_kv_clear(c);
        CHECK(mn_decode(c, ids, T, NULL, 0) == 0 && mn_decode(c, &nxt, 1, one, 0) == 0, "plain run");
        double e_app = 0;
        for (int i = 0; i < V; i++) e_app = fmax(e_app, fabs(last[i] - one[i]));
        /* dropped and decoded again (cells whose windows the buffer still holds) */
        CHECK(mn_kv_drop(c, T - 2, T + 1) == 0, "drop");
        CHECK(mn_decode(c, ids + T - 2, 2, NULL, 0) == 0 && mn_decode(c, &nxt, 1, last, 0) == 0, "decode again");
        double e_drop = 0;
        for (int i = 0; i < V; i++) e_drop = fmax(e_drop, fabs(last[i] - one[i]));
        printf("  window buffer: cells read and appended back %.2g, dropped and decoded again %.2g\n", e_app, e_drop);
        CHECK(e_app < 1e-4 && e_drop < 1e-4, "window buffer operations: %.3g %.3g", e_app, e_drop);
        mn_context_free(c);
    }

    /* the comparison has teeth: plausible bugs land far outside the tolerance */
    reference(ids, bad, 1);
    double e_norope = rel_err(lg, bad, (int64_t)T * V);
    reference(ids, bad, 2);
    double e_neox = rel_err(lg, bad, (int64_t)T * V);
    printf("  same check against a reference without RoPE: %.3f, with NeoX pairs: %.3f\n", e_norope, e_neox);
    CHECK(e_norope > 0.2 && e_neox > 0.2, "wrong references must fail (%.3f, %.3f)", e_norope, e_neox);
    mn_model_free(m);
    unlink(path);
    free_weights();
}

int main(void) {
    run_config(2, 1.0, 0);
    run_config(H, 2.0, 0); /* Llama-2 style: no GQA; and linear RoPE scaling */
    run_config(1, 1.0, 1); /* Gemma 3: one kv head, a window, norms, GeGLU */
    char path[] = "/tmp/mnemo-tiny-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mn_model *m;
    /* a model file without tensors, or of another architecture, is refused clearly */
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_u32(w, "llama.block_count", NL);
    mn_gguf_writer_set_u32(w, "llama.context_length", 64);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", EPS);
    mn_gguf_writer_write(w, path);
    m = NULL;
    CHECK(mn_model_load(path, &m) == MN_EFORMAT && !m, "no tensors");
    CHECK(strstr(mn_last_error(), "missing tensor 'token_embd.weight'") != NULL, "message: %s", mn_last_error());
    mn_gguf_writer_set_str(w, "general.architecture", "gpt-neox");
    mn_gguf_writer_write(w, path);
    CHECK(mn_model_load(path, &m) == MN_EUNSUPPORTED && !m, "architecture");
    CHECK(strstr(mn_last_error(), "gpt-neox") != NULL, "message: %s", mn_last_error());
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", 5);
    mn_gguf_writer_write(w, path);
    CHECK(mn_model_load(path, &m) == MN_EFORMAT && !m, "head count");
    CHECK(strstr(mn_last_error(), "head_count 5") != NULL, "message: %s", mn_last_error());
    mn_gguf_writer_free(w);
    /* a gemma3 file with a missing or inconsistent window or head size is refused, saying which key */
    struct {
        const char *key;
        uint32_t val; /* 0: the key is left out */
        int rc;
        const char *msg;
    } bad[] = {
        {"gemma3.attention.sliding_window", 0, MN_EFORMAT, "missing metadata key 'gemma3.attention.sliding_window'"},
        {"gemma3.attention.sliding_window", 1u << 20, MN_EFORMAT, "sliding_window"},
        {"gemma3.attention.sliding_window_pattern", 99, MN_EFORMAT, "sliding_window_pattern 99"},
        {"gemma3.attention.value_length", 32, MN_EUNSUPPORTED, "value head size 32"},
        {"gemma3.attention.key_length", 3, MN_EFORMAT, "head dimension 3"},
    };
    for (size_t bi = 0; bi < sizeof bad / sizeof bad[0]; bi++) {
        w = mn_gguf_writer_create();
        mn_gguf_writer_set_str(w, "general.architecture", "gemma3");
        mn_gguf_writer_set_u32(w, "gemma3.block_count", NL);
        mn_gguf_writer_set_u32(w, "gemma3.context_length", 64);
        mn_gguf_writer_set_u32(w, "gemma3.embedding_length", C);
        mn_gguf_writer_set_u32(w, "gemma3.feed_forward_length", F);
        mn_gguf_writer_set_u32(w, "gemma3.attention.head_count", H);
        mn_gguf_writer_set_f32(w, "gemma3.attention.layer_norm_rms_epsilon", EPS);
        const char *keys[] = {"gemma3.attention.key_length", "gemma3.attention.value_length",
                              "gemma3.attention.sliding_window", "gemma3.attention.sliding_window_pattern"};
        const uint32_t vals[] = {D, D, 4, 2};
        for (int k = 0; k < 4; k++) {
            /* an odd head size in both key and value lengths */
            const int both = !strcmp(bad[bi].key, "gemma3.attention.key_length") && k == 1;
            if (!strcmp(keys[k], bad[bi].key) || both) {
                if (bad[bi].val) mn_gguf_writer_set_u32(w, keys[k], bad[bi].val);
            } else {
                mn_gguf_writer_set_u32(w, keys[k], vals[k]);
            }
        }
        mn_gguf_writer_write(w, path);
        mn_gguf_writer_free(w);
        m = NULL;
        CHECK(mn_model_load(path, &m) == bad[bi].rc && !m && strstr(mn_last_error(), bad[bi].msg),
              "gemma3 with a bad %s: %s", bad[bi].key, mn_last_error());
    }
    unlink(path);
    TEST_MAIN_END();
}
