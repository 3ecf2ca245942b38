/* ops.h - the training ops, forward and backward (see ops.c).
 *
 * Shapes: T tokens, C channels (n_embd), K in-features, N out-features,
 * H query heads, G kv heads, D head dim, NC attended cells (prefix + T),
 * V vocabulary, r LoRA rank. Matrices are row-major; a weight W of N rows of K
 * maps x (K) to W x (N), as in GGUF.
 *
 * Backward functions ACCUMULATE (+=) into their gradient outputs unless
 * stated otherwise, so a tensor used twice gets both contributions.
 */
#include <stdint.h>

#include "train/real.h"

#if (defined(MN_REAL_F64) && !defined(MN_OPS_H_F64)) || (!defined(MN_REAL_F64) && !defined(MN_OPS_H_F32))
#ifdef MN_REAL_F64
#define MN_OPS_H_F64
#else
#define MN_OPS_H_F32
#endif

/* Floating-point operations done by the ops (multiply-add = 2), summed over
 * threads since the last reset: what `count the FLOPs` tests and MFU use. */
int64_t TN(mn_op_flops)(void);
void TN(mn_op_flops_reset)(void);

/* Threads for the ops (NULL: the calling thread only). BLAS itself should be
 * single-threaded (openblas_set_num_threads(1)): the ops split the work. */
struct mn_threadpool;
void TN(mn_op_set_pool)(struct mn_threadpool *pool);

#ifndef MN_REAL_F64
/* Frozen weights (N rows of K) packed for bf16 (kernels/gemm_bf16.h): while
 * w is registered, matmul_fwd/bwd, head and logprobs with it round their other
 * operand to bf16 and sum in f32. Register and unregister only while no op
 * runs. MN_EUNSUPPORTED without AVX512_BF16. */
int mn_op_bf16_register(const float *w, int N, int K);
void mn_op_bf16_unregister(const float *w);
/* 1 when this CPU has AVX512_BF16 and its bf16 products measure clearly
 * faster than f32 ones (timed once per process, ~20 ms on the calling thread). */
int mn_op_bf16_faster(void);
#endif

/* y (T,N) = x (T,K) W^T, or += when accumulate. */
void TN(mn_op_matmul_fwd)(real *y, const real *x, const real *w, int T, int K, int N, int accumulate);
/* dx (T,K) += dy (T,N) W: the frozen weight gets no gradient. */
void TN(mn_op_matmul_bwd)(real *dx, const real *dy, const real *w, int T, int K, int N);
/* dw (N,K) += dy (T,N)^T x (T,K): the gradient of a trained full matrix. */
void TN(mn_op_matmul_dw)(real *dw, const real *dy, const real *x, int T, int K, int N);

/* LoRA delta: u (T,r) = x A^T, y (T,N) += s u B^T; A (r,K), B (N,r). */
void TN(mn_op_lora_fwd)(real *y, real *u, const real *x, const real *a, const real *b, int T, int K, int N, int r,
                        real s);
/* dA (r,K) += (s dy B)^T x, dB (N,r) += s dy^T u, dx (T,K) += (s dy B) A (dx may
 * be NULL, and so may da, db for a frozen delta); du (T,r) is scratch. */
void TN(mn_op_lora_bwd)(real *dx, real *da, real *db, real *du, const real *dy, const real *x, const real *u,
                        const real *a, const real *b, int T, int K, int N, int r, real s);

/* y (T,C) = x w / rms(x), inv (T) = 1 / rms(x) kept for the backward. */
void TN(mn_op_rmsnorm_fwd)(real *y, real *inv, const real *x, const real *w, int T, int C, real eps);
void TN(mn_op_rmsnorm_bwd)(real *dx, const real *dy, const real *x, const real *w, const real *inv, int T, int C);

/* In place on x (T, nh*D): rotates adjacent pairs by pos[t] * freq_scale *
 * base^(-2i/D), the engine's RoPE. The backward rotates by minus the angle. */
void TN(mn_op_rope_fwd)(real *x, const int32_t *pos, int T, int nh, int D, float base, float freq_scale);
void TN(mn_op_rope_bwd)(real *dx, const int32_t *pos, int T, int nh, int D, float base, float freq_scale);

/* h (n) = silu(g) * u; backward writes (overwrites) dg, du. */
void TN(mn_op_swiglu_fwd)(real *h, const real *g, const real *u, int64_t n);
void TN(mn_op_swiglu_bwd)(real *dg, real *du, const real *dh, const real *g, const real *u, int64_t n);

/* Grouped-query attention of T queries over NC = N + T cells: the N prefix
 * cells (memory, sinks) then the batch's own. mask (T, NC): nonzero = visible;
 * NULL = every prefix cell plus causal within the batch. Every row must see at
 * least one cell. */
typedef struct {
    int T, N, H, G, D;
    const uint8_t *mask;
} mn_attn_shape;
/* o (T, H*D), lse (T, H) log-sum-exp of each row's scaled scores; q (T, H*D)
 * after RoPE; k, v (NC, G*D). scratch: T*NC reals. */
void TN(mn_op_attn_fwd)(real *o, real *lse, const real *q, const real *k, const real *v, const mn_attn_shape *s,
                        real *scratch);
/* dq (T, H*D) overwritten; dk, dv (NC, G*D) accumulated. Probabilities are
 * recomputed from q, k and lse (nothing of size T*NC*H is kept between
 * forward and backward). scratch: 2*T*NC reals. */
void TN(mn_op_attn_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                        const real *v, const real *o, const real *lse, const mn_attn_shape *s, real *scratch);

/* The language-model head and its losses over rows of x (T, C) (already
 * normalised): logits = x W^T (W: V rows of C), computed `chunk` rows at a
 * time so a (T, V) block never exists. Per row t:
 *   ce_w * (-log softmax(logits)[targets[t]])    when targets && targets[t] >= 0
 *   kl_w * KL(teacher_t || softmax(logits))       when teacher (T, V log-probs) and
 *                                                 (targets == NULL || targets[t] >= 0)
 * Returns the summed loss. When dx is not NULL it gets (overwritten) dscale
 * times the gradient of that sum. scratch: chunk*V reals. */
double TN(mn_op_head)(real *dx, const real *x, const real *w, int T, int C, int V, const int32_t *targets,
                      const real *teacher, real ce_w, real kl_w, real dscale, real *scratch, int chunk);

/* Log-probabilities (T, V) of the head, for a teacher. scratch-free. */
void TN(mn_op_logprobs)(real *lp, const real *x, const real *w, int T, int C, int V);

#endif
