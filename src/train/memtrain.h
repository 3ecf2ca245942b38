/* memtrain.h - training the UIO memory chain: losses, and the gradient modes
 * of back-propagation through the chain of memories.
 *
 * A training window is n segments x_1..x_n of l tokens. Memory m_i (m slots)
 * is the encoder's compression of x_i (base + LoRA on Q, V; m memory tokens
 * with one learned embedding, stepwise coverage) mapped to K/V by the transfer
 * head (LoRA on K, V). The decoder (the frozen base model) reads segment x_t
 * after [sinks | m_1 .. m_{t-1}] and is scored on predicting x_t's tokens: the
 * loss J_t. Like a fully connected RNN (UIO-LLMs eq. 3), J_t depends on every
 * earlier memory, so the exact gradient is
 *     dL/dtheta = sum_i (dm_i/dtheta)^T g_i,   g_i = sum_{t > i} dJ_t/dm_i.
 * The modes differ in which dJ_t/dm_i enter g_i and in when the encoder of
 * segment i is back-propagated (see memtrain.c for each mode).
 *
 * The summary-embedding compressor trains through the same chain: m_i is then
 * the m final hidden states of segment i's memory tokens, which the decoder
 * reads as input rows [sinks | m_1 .. m_{t-1} | x_t] instead of as K/V cells.
 *
 * Compiled as float and double (real.h). Shapes: L layers, C n_embd, KD kv dim.
 */
#include <stdint.h>

#include "train/rng.h"
#include "train/tmodel.h"

#ifndef MN_BPTT_ONCE
#define MN_BPTT_ONCE
typedef enum {
    MN_BPTT_FULL = 0,        /* every later loss reaches every memory: the exact gradient */
    MN_BPTT_TBPTT = 1,       /* J_t reaches the last tau memories; encoders redone per loss */
    MN_BPTT_INCREMENTAL = 2, /* the same gradient, each encoder back-propagated once */
    MN_BPTT_RESERVOIR = 3,   /* UIO's reservoir of tau memories, as published (biased) */
    MN_BPTT_UNBIASED = 4,    /* the reservoir with inverse-inclusion weights (unbiased) */
} mn_bptt_mode;
const char *mn_bptt_name(mn_bptt_mode m);
int mn_bptt_parse(const char *s); /* -1 when unknown */

/* What one window cost and scored. */
typedef struct {
    double loss;            /* (ce_w CE + kl_w KL) summed over scored tokens; CE alone when grad = 0 */
    int64_t n_scored;       /* decoder tokens with a target */
    int64_t enc_forwards;   /* encoder passes run forward (recomputations included) */
    int64_t enc_backwards;  /* encoder passes back-propagated */
    int64_t flops;          /* counted by the ops */
} mn_tstep_stats;
#endif

#if (defined(MN_REAL_F64) && !defined(MN_MEMTRAIN_H_F64)) || (!defined(MN_REAL_F64) && !defined(MN_MEMTRAIN_H_F32))
#ifdef MN_REAL_F64
#define MN_MEMTRAIN_H_F64
#else
#define MN_MEMTRAIN_H_F32
#endif

/* The trainable parameters (caller-owned; gradients accumulate into d*). */
typedef struct {
    int32_t l, m;       /* segment length, memory slots per segment (the most, see set_m); m divides l */
    int32_t n_sinks;    /* leading raw tokens of the window ahead of the memory (0..l) */
    int32_t recent;     /* UIO: the decoder of x_t also reads x_{t-recent}..x_{t-1} raw (after
                         * [sinks | m_1 .. m_{t-recent-1}]); losses start at t = recent + 1 */
    const real *mem_embd;
    real *d_mem_embd;   /* (C) */
    TN(mn_tlora) enc;   /* encoder LoRA: q and v used */
    TN(mn_tlora) xfer;  /* transfer head LoRA: k and v used */
    real ce_w, kl_w;    /* loss weights: next-token CE, KL to the full-context teacher */
    int summary;        /* 0: UIO KV memory (transfer head); 1: summary embeddings (the
                         * memory tokens' final states are the decoder's input rows) */
    /* LLoCO's in-domain fine-tuning: a LoRA on the decoder (the base model
     * reading memory + text); its gradient comes from every J_t directly */
    TN(mn_tlora) dec;   /* all NULL: the decoder stays frozen */
    int freeze_memory;  /* the compressor's parameters get no gradient (no encoder backward) */
} TN(mn_uio_tparams);

typedef struct TN(mn_uio_trainer) TN(mn_uio_trainer);

/* Buffers for windows of up to max_seg segments. With kl_w > 0 the teacher
 * reads whole windows, so max_seg * l must fit the model's trained context. */
int TN(mn_uio_trainer_create)(const TN(mn_tmodel) * tm, const TN(mn_uio_tparams) * p, int32_t max_seg,
                              TN(mn_uio_trainer) * *out);
void TN(mn_uio_trainer_free)(TN(mn_uio_trainer) * tr);

/* Switches the number of memory slots per segment to m (m divides l and is
 * at most the m given at creation): training on a mixture of ratios. */
int TN(mn_uio_trainer_set_m)(TN(mn_uio_trainer) * tr, int32_t m);

/* Ablation for validation: with `on`, decoders read the sinks only, no
 * memory (positions as if the memory were not there): the loss a memory has
 * to beat. */
void TN(mn_uio_trainer_no_memory)(TN(mn_uio_trainer) * tr, int on);

/* One window ids[0 .. n_seg * l): accumulates into the parameters' gradients
 * the `mode` estimate of the gradient of (loss / n_scored). tau: memories that
 * receive gradient (tbptt, incremental, reservoir, unbiased); rng: the
 * reservoir's randomness. With grad = 0 only the loss is computed, and it is
 * the plain cross-entropy (validation), whatever the weights. */
int TN(mn_uio_trainer_step)(TN(mn_uio_trainer) * tr, const int32_t *ids, int32_t n_seg, mn_bptt_mode mode,
                            int32_t tau, mn_rng *rng, int grad, mn_tstep_stats *st);

#endif
