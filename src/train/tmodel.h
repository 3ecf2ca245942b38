/* tmodel.h - the base model as training sees it: frozen weights, a forward
 * pass that keeps only each layer's input, and a backward pass that recomputes
 * one layer at a time (activation checkpointing) and returns gradients for the
 * LoRA deltas, the prefix (memory) K/V cells, captured activations and the
 * input embeddings. The base weights never get gradients.
 *
 * Compiled as float and as double (real.h). Shapes: T tokens, N prefix cells,
 * C n_embd, L layers, KD = n_head_kv * head_dim, HD = n_head * head_dim,
 * F n_ff, V vocab, r LoRA rank.
 */
#include <stdint.h>

#include "mnemo.h"
#include "train/ops.h"

#ifndef MN_TDIMS_ONCE
#define MN_TDIMS_ONCE
typedef struct {
    int32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, kv_dim;
} mn_tdims;
#endif

#if (defined(MN_REAL_F64) && !defined(MN_TMODEL_H_F64)) || (!defined(MN_REAL_F64) && !defined(MN_TMODEL_H_F32))
#ifdef MN_REAL_F64
#define MN_TMODEL_H_F64
#else
#define MN_TMODEL_H_F32
#endif

/* One LoRA delta with its gradient: A (r, n_in), B (n_out, r). */
typedef struct {
    const real *a, *b;
    real *da, *db; /* accumulated; NULL: this delta is not trained */
    int32_t rank;
} TN(mn_tlora_w);

/* Per-layer deltas on the attention projections; q, k, v, o are arrays of L or NULL. */
typedef struct {
    real scale;
    const TN(mn_tlora_w) * q, *k, *v, *o;
} TN(mn_tlora);

/* A layer's own attention projections for some rows (Activation Beacon's
 * beacon tokens): full matrices laid out like the base's, q (HD, C), k and v
 * (KD, C), o (C, HD); a NULL matrix means the base's. Gradients accumulate
 * into d*, NULL: not trained. */
typedef struct {
    const real *q, *k, *v, *o;
    real *dq, *dk, *dv, *d_o;
} TN(mn_talt_w);

typedef struct TN(mn_tmodel) TN(mn_tmodel);

/* Dequantises every weight of m into `real` (SmolLM2-135M: 0.54 GB as float).
 * The model may be freed afterwards. */
int TN(mn_tmodel_create)(const mn_model *m, TN(mn_tmodel) * *out);
void TN(mn_tmodel_free)(TN(mn_tmodel) * tm);
#ifndef MN_REAL_F64
/* From now until mn_tmodel_free, products with the model's frozen weights
 * run in bf16 with f32 sums (ops.h, kernels/gemm_bf16.h): about twice the
 * GEMM speed, inputs rounded to 8 significant bits. Packs a bf16 copy of
 * every weight in both orientations (4 bytes per weight). MN_EUNSUPPORTED
 * without AVX512_BF16; on any error nothing stays registered. */
int mn_tmodel_use_bf16(mn_tmodel *tm);
#endif

const mn_tdims *TN(mn_tmodel_dims)(const TN(mn_tmodel) * tm);
/* Input embeddings of n tokens: out (n, C). */
void TN(mn_tmodel_embed)(const TN(mn_tmodel) * tm, const int32_t *ids, int32_t n, real *out);
/* Frozen K or V projection of layer l ('k' or 'v'): y (T, KD) = x (T, C) W^T. */
const real *TN(mn_tmodel_weight)(const TN(mn_tmodel) * tm, int layer, char which);

/* RoPE of the model on x (T, nh * head_dim) in place at positions pos; the
 * backward (inverse rotation) when `inverse`. */
void TN(mn_tmodel_rope)(const TN(mn_tmodel) * tm, real *x, const int32_t *pos, int T, int nh, int inverse);

/* One pass over T tokens that may read N prefix cells (memory, sinks). */
typedef struct {
    int32_t T;
    const real *x;        /* (T, C) input embeddings */
    const int32_t *pos;   /* (T) positions */
    int32_t N;            /* prefix cells */
    int32_t N_stride;     /* cells per layer in pk, pv, dpk, dpv (>= N; 0: N) */
    const real *pk, *pv;  /* (L, N_stride, KD): keys after RoPE, values; the first N cells are read */
    real *dpk, *dpv;      /* same layout, gradients accumulated; NULL: not needed */
    const uint8_t *mask;  /* (T, N + T) visibility; NULL: prefix + causal */
    const TN(mn_tlora) * lora; /* NULL: none */
    /* capture of the normalised attention inputs of some tokens (UIO memory) */
    int32_t n_cap;
    const int32_t *cap;   /* (n_cap) token indices */
    real *cap_xn;         /* (L, n_cap, C) written by the forward */
    const real *dcap_xn;  /* (L, n_cap, C) their gradient, read by the backward; NULL: zero */
    real *out_k, *out_v;  /* (L, T, KD) keys after RoPE and values of the batch, or NULL */
    /* capture of final hidden states after the output norm (summary embeddings) */
    real *cap_out;        /* (n_cap, C) written by the forward, or NULL */
    const real *dcap_out; /* (n_cap, C) their gradient, read by the backward */
    /* the head: without targets, teacher and cap_out the last layer stops after what is captured */
    const int32_t *targets; /* (T) next-token ids, -1 = no loss at this row; NULL: no CE */
    const real *teacher;    /* (T - teacher_row0, V) teacher log-probs for a KL term, or NULL */
    int32_t teacher_row0;   /* the pass row that teacher row 0 belongs to (rows before: no KL) */
    int32_t head_row0;      /* rows before it are context only: no head, no loss (<= teacher_row0) */
    real ce_w, kl_w;
    real *dx;             /* (T, C) gradient of x written by the backward, or NULL */
    /* rows with their own Q/K/V(/O) projections (beacons; not with lora) */
    int32_t n_alt;
    const int32_t *alt_rows;    /* (n_alt) row indices */
    const TN(mn_talt_w) * alt;  /* (L) */
    real *alt_buf;              /* scratch: 3 * n_alt * max(C, HD) reals */
    /* gradients of out_k (keys after RoPE) and out_v from later uses of the
     * batch's K/V (a beacon chain), read by the backward; NULL: zero */
    const real *dout_k, *dout_v; /* (L, T, KD) */
} TN(mn_tpass);

/* Workspace for passes of up to max_T tokens over up to max_N prefix cells and
 * LoRA rank up to max_r. Nothing is allocated per pass. With `keep` it holds
 * every layer's activations, so a backward right after its forward recomputes
 * nothing (same gradients bit for bit, L times the activation memory). */
typedef struct TN(mn_tws) TN(mn_tws);
int TN(mn_tws_create)(const TN(mn_tmodel) * tm, int32_t max_T, int32_t max_N, int32_t max_r, int keep,
                     TN(mn_tws) * *out);
void TN(mn_tws_free)(TN(mn_tws) * ws);
/* What such a workspace takes, in bytes (-1: bad sizes). */
int64_t TN(mn_tws_bytes)(const TN(mn_tmodel) * tm, int32_t max_T, int32_t max_N, int32_t max_r, int keep);

/* Forward: returns the summed loss (0 without a head) and keeps each layer's
 * input (with `keep`, all its activations) in ws for the backward. */
int TN(mn_tmodel_forward)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, double *loss);
/* Backward of the last forward on ws (same p): dscale multiplies the loss's
 * gradient. Accumulates LoRA, prefix and capture-driven gradients. */
int TN(mn_tmodel_backward)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const TN(mn_tpass) * p, real dscale);

/* Teacher log-probabilities (T, V) of the plain model reading x at pos. */
int TN(mn_tmodel_logprobs)(const TN(mn_tmodel) * tm, TN(mn_tws) * ws, const real *x, const int32_t *pos, int32_t T,
                           real *lp);

#endif
