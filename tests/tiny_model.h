/* tiny_model.h - a tiny random Llama GGUF written by a test, plus a
 * double-precision reference forward over it (for the memory tests).
 *
 * All matrices are F32 so the engine's only rounding is its f16 KV cache; the
 * reference rounds keys (after RoPE) and values to f16 the same way, which
 * lets comparisons be tight (1e-4 relative) instead of quantisation-loose.
 *
 * Model: TM_L layers, n_embd TM_C, TM_H heads of TM_D, TM_KH kv heads, ffn
 * TM_F, vocab TM_V (bytes + 4 specials, EOS 258), context 512, RoPE theta 1e4.
 * The reference runs one batch of tokens given by their input embeddings,
 * positions, a visibility mask over the batch, optional per-token alternative
 * Q/K/V/O matrices (beacons) and optional LoRA on Q and V (scale s), and
 * returns per-layer normalised inputs, keys before RoPE, values, and the
 * final normalised hidden states.
 */
#ifndef MN_TINY_MODEL_H
#define MN_TINY_MODEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/gguf.h"
#include "kernels/quant.h"
#include "mnemo.h"
#include "test.h"
#include "tiny_llama.h"

enum { TM_C = 64, TM_H = 4, TM_D = 16, TM_KH = 2, TM_F = 96, TM_V = TINY_VOCAB, TM_L = 2 };
#define TM_HD (TM_H * TM_D)
#define TM_KD (TM_KH * TM_D)
static const double TM_EPS = 1e-5, TM_THETA = 10000.0;

typedef struct {
    double *wq, *wk, *wv, *wo, *wg, *wu, *wd; /* (rows, cols) row-major */
    double an[TM_C], fn[TM_C];
} tm_layer;

typedef struct {
    tm_layer l[TM_L];
    double *embd; /* (V, C) */
    double *out;  /* (V, C) */
    double onorm[TM_C];
} tm_weights;

static uint64_t tm_rng = 0x9e3779b97f4a7c15ull;
static inline double tm_urand(void) {
    tm_rng ^= tm_rng << 13, tm_rng ^= tm_rng >> 7, tm_rng ^= tm_rng << 17;
    return (double)(tm_rng >> 11) / 9007199254740992.0;
}
static inline double tm_nrand(void) { return sqrt(-2 * log(tm_urand() + 1e-300)) * cos(6.283185307179586 * tm_urand()); }

/* n floats ~ N(0, scale^2), also kept as doubles (the exact stored values). */
static inline float *tm_rand_f(size_t n, double scale, double **dcopy) {
    float *f = malloc(sizeof(float) * n);
    if (dcopy) *dcopy = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)(tm_nrand() * scale);
        if (dcopy) (*dcopy)[i] = f[i];
    }
    return f;
}

static inline void tm_add(mn_gguf_writer *w, const char *name, int64_t cols, int64_t rows, double scale, double **out) {
    float *f = tm_rand_f((size_t)(cols * rows), scale, out);
    int64_t ne[2] = {cols, rows};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, rows > 1 ? 2 : 1, ne, f);
    free(f);
}

static inline void tm_norm(mn_gguf_writer *w, const char *name, double *out) {
    float f[TM_C];
    for (int i = 0; i < TM_C; i++) out[i] = f[i] = (float)(1.0 + 0.1 * tm_nrand());
    int64_t ne[1] = {TM_C};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, 1, ne, f);
}

/* Writes a tiny model with the given seed to a temp file (path: 64 bytes) and
 * keeps its weights in *tw. */
static inline int tm_write(uint64_t seed, char *path, tm_weights *tw) {
    tm_rng = seed * 0x9e3779b97f4a7c15ull + 1;
    strcpy(path, "/tmp/mnemo-tinymem-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    close(fd);
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_str(w, "general.name", "tiny-mem-test");
    mn_gguf_writer_set_u32(w, "llama.block_count", TM_L);
    mn_gguf_writer_set_u32(w, "llama.context_length", 512);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", TM_C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", TM_F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", TM_H);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", TM_KH);
    mn_gguf_writer_set_f32(w, "llama.rope.freq_base", (float)TM_THETA);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)TM_EPS);
    tiny_vocab_write(w);
    tm_add(w, "token_embd.weight", TM_C, TM_V, 1.0, &tw->embd);
    tm_add(w, "output.weight", TM_C, TM_V, 0.3, &tw->out);
    tm_norm(w, "output_norm.weight", tw->onorm);
    char nm[64];
    for (int l = 0; l < TM_L; l++) {
        tm_layer *L = &tw->l[l];
#define TM_M(field, suffix, cols, rows)                                 \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l);            \
    tm_add(w, nm, cols, rows, 1.0 / sqrt((double)(cols)), &L->field);
        TM_M(wq, "attn_q", TM_C, TM_HD);
        TM_M(wk, "attn_k", TM_C, TM_KD);
        TM_M(wv, "attn_v", TM_C, TM_KD);
        TM_M(wo, "attn_output", TM_HD, TM_C);
        TM_M(wg, "ffn_gate", TM_C, TM_F);
        TM_M(wu, "ffn_up", TM_C, TM_F);
        TM_M(wd, "ffn_down", TM_F, TM_C);
#undef TM_M
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        tm_norm(w, nm, L->an);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        tm_norm(w, nm, L->fn);
    }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

static inline void tm_free(tm_weights *tw) {
    free(tw->embd), free(tw->out);
    for (int l = 0; l < TM_L; l++) {
        tm_layer *L = &tw->l[l];
        free(L->wq), free(L->wk), free(L->wv), free(L->wo), free(L->wg), free(L->wu), free(L->wd);
    }
}

/* ------------------------------------------------------------ reference */

static inline double tm_f16(double x) { return mn_fp16_to_fp32(mn_fp32_to_fp16((float)x)); }

static inline void tm_matvec(const double *w, int rows, int cols, const double *x, double *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int i = 0; i < cols; i++) s += w[(size_t)r * cols + i] * x[i];
        y[r] = s;
    }
}
static inline void tm_matvec_f(const float *w, int rows, int cols, const double *x, double *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int i = 0; i < cols; i++) s += (double)w[(size_t)r * cols + i] * x[i];
        y[r] = s;
    }
}
static inline void tm_rmsnorm(const double *x, const double *w, double *y) {
    double ss = 0;
    for (int i = 0; i < TM_C; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / TM_C + TM_EPS);
    for (int i = 0; i < TM_C; i++) y[i] = x[i] * sc * w[i];
}
static inline void tm_rope(double *v, int pos) {
    for (int i = 0; i < TM_D / 2; i++) {
        double th = pos * pow(TM_THETA, -2.0 * i / TM_D), c = cos(th), s = sin(th);
        double x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * c - x1 * s;
        v[2 * i + 1] = x0 * s + x1 * c;
    }
}

/* y += s * B (A x): A (r, C) floats, B (n_out, r) floats */
static inline void tm_lora(const float *A, const float *B, int r, int n_out, double s, const double *x, double *y) {
    double u[64];
    for (int k = 0; k < r; k++) {
        u[k] = 0;
        for (int i = 0; i < TM_C; i++) u[k] += (double)A[(size_t)k * TM_C + i] * x[i];
    }
    for (int o = 0; o < n_out; o++)
        for (int k = 0; k < r; k++) y[o] += s * (double)B[(size_t)o * r + k] * u[k];
}

typedef struct {
    int n;
    const double *embd;         /* (n, C) */
    const int *pos;             /* (n) */
    const unsigned char *mask;  /* (n, n): token i sees token j (j <= i) */
    const unsigned char *alt;   /* (n) or NULL */
    const float *const *aq, *const *ak, *const *av, *const *ao; /* per layer alt matrices (NULL: base) */
    const float *const *la_q, *const *lb_q, *const *la_v, *const *lb_v; /* per layer LoRA or NULL */
    int lrank;
    double lscale;
    double *xn;                 /* (L, n, C) out, or NULL */
    double *kpre, *v;           /* (L, n, KD) out, or NULL */
    double *hid;                /* (n, C) out, or NULL */
} tm_batch;

static inline void tm_forward(const tm_weights *tw, tm_batch *b) {
    const int n = b->n;
    double *x = malloc(sizeof(double) * n * TM_C), *xn = malloc(sizeof(double) * TM_C);
    double *q = malloc(sizeof(double) * n * TM_HD), *k = malloc(sizeof(double) * n * TM_KD);
    double *v = malloc(sizeof(double) * n * TM_KD), *att = malloc(sizeof(double) * TM_HD);
    double *tmp = malloc(sizeof(double) * TM_C), *g = malloc(sizeof(double) * TM_F), *u = malloc(sizeof(double) * TM_F);
    double *s = malloc(sizeof(double) * n);
    memcpy(x, b->embd, sizeof(double) * n * TM_C);
    for (int l = 0; l < TM_L; l++) {
        const tm_layer *L = &tw->l[l];
        for (int t = 0; t < n; t++) {
            tm_rmsnorm(x + t * TM_C, L->an, xn);
            if (b->xn) memcpy(b->xn + ((size_t)l * n + t) * TM_C, xn, sizeof(double) * TM_C);
            int al = b->alt && b->alt[t];
            if (al && b->aq && b->aq[l]) tm_matvec_f(b->aq[l], TM_HD, TM_C, xn, q + t * TM_HD);
            else tm_matvec(L->wq, TM_HD, TM_C, xn, q + t * TM_HD);
            if (al && b->ak && b->ak[l]) tm_matvec_f(b->ak[l], TM_KD, TM_C, xn, k + t * TM_KD);
            else tm_matvec(L->wk, TM_KD, TM_C, xn, k + t * TM_KD);
            if (al && b->av && b->av[l]) tm_matvec_f(b->av[l], TM_KD, TM_C, xn, v + t * TM_KD);
            else tm_matvec(L->wv, TM_KD, TM_C, xn, v + t * TM_KD);
            if (!al && b->la_q && b->la_q[l]) tm_lora(b->la_q[l], b->lb_q[l], b->lrank, TM_HD, b->lscale, xn, q + t * TM_HD);
            if (!al && b->la_v && b->la_v[l]) tm_lora(b->la_v[l], b->lb_v[l], b->lrank, TM_KD, b->lscale, xn, v + t * TM_KD);
            if (b->kpre) memcpy(b->kpre + ((size_t)l * n + t) * TM_KD, k + t * TM_KD, sizeof(double) * TM_KD);
            if (b->v) memcpy(b->v + ((size_t)l * n + t) * TM_KD, v + t * TM_KD, sizeof(double) * TM_KD);
            for (int h = 0; h < TM_H; h++) tm_rope(q + t * TM_HD + h * TM_D, b->pos[t]);
            for (int h = 0; h < TM_KH; h++) tm_rope(k + t * TM_KD + h * TM_D, b->pos[t]);
            /* the engine caches K (rotated) and V in f16 */
            for (int i = 0; i < TM_KD; i++) k[t * TM_KD + i] = tm_f16(k[t * TM_KD + i]), v[t * TM_KD + i] = tm_f16(v[t * TM_KD + i]);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < TM_H; h++) {
                int kh = h / (TM_H / TM_KH);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    if (!b->mask[(size_t)t * n + j]) continue;
                    double d = 0;
                    for (int i = 0; i < TM_D; i++) d += q[t * TM_HD + h * TM_D + i] * k[j * TM_KD + kh * TM_D + i];
                    s[j] = d / sqrt((double)TM_D);
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j <= t; j++)
                    if (b->mask[(size_t)t * n + j]) sum += (s[j] = exp(s[j] - mx));
                for (int i = 0; i < TM_D; i++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        if (b->mask[(size_t)t * n + j]) o += s[j] * v[j * TM_KD + kh * TM_D + i];
                    att[h * TM_D + i] = o / sum;
                }
            }
            int al = b->alt && b->alt[t];
            if (al && b->ao && b->ao[l]) tm_matvec_f(b->ao[l], TM_C, TM_HD, att, tmp);
            else tm_matvec(L->wo, TM_C, TM_HD, att, tmp);
            for (int i = 0; i < TM_C; i++) x[t * TM_C + i] += tmp[i];
            tm_rmsnorm(x + t * TM_C, L->fn, xn);
            tm_matvec(L->wg, TM_F, TM_C, xn, g);
            tm_matvec(L->wu, TM_F, TM_C, xn, u);
            for (int i = 0; i < TM_F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            tm_matvec(L->wd, TM_C, TM_F, g, tmp);
            for (int i = 0; i < TM_C; i++) x[t * TM_C + i] += tmp[i];
        }
    }
    if (b->hid)
        for (int t = 0; t < n; t++) tm_rmsnorm(x + t * TM_C, tw->onorm, b->hid + t * TM_C);
    free(x), free(xn), free(q), free(k), free(v), free(att), free(tmp), free(g), free(u), free(s);
}

/* max |a - b| / max |b| over n values */
static inline double tm_rel(const float *a, const double *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    return d / (mx > 0 ? mx : 1);
}

#endif
