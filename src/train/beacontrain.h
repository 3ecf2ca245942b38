/* beacontrain.h - training the Activation Beacon compressor: the beacon
 * chain's forward, loss and gradient modes (inference: memory/beacon.h).
 *
 * A training window is n windows x_0..x_{n-1} of W raw tokens. Window t runs
 * as one pass over [sinks | m_0 .. m_{t-1} | x_t with its beacons], laid out
 * exactly as mn_beacon_feed lays it out (placement, attention scheme,
 * attend_prev, positions); the beacon rows use the beacon embedding and the
 * beacons' own Q, K, V (and O) matrices. Its beacons' K/V become memory m_t,
 * re-placed at the next positions after the sinks (m_0 also holds the sinks,
 * the first window's first raw tokens). Windows 1..n-1 are scored on
 * next-token prediction within the window (J_t; W - 1 targets each), with
 * optional KL to the plain model reading the whole raw window.
 *
 * Unlike UIO's encoder, window t's pass reads the earlier memories, so the
 * chain is a true RNN: m_t = f(x_t, m_0..m_{t-1}) and J_t = g(x_t, m_0..m_{t-1}).
 *   full   the exact gradient: windows back-propagated newest first, each once,
 *          from its own loss plus the gradient its memory got from later windows.
 *   tbptt  J_t's gradient flows back through at most tau memories: memories
 *          older than t - tau are constants for J_t (classic truncated BPTT;
 *          up to tau + 1 window backwards per scored window). tau >= n - 1 is full.
 *   unbiased  randomized truncation (Tallec & Ollivier): J_t's gradient flows
 *          back K_t = tau + G memories, G geometric (P(G >= j) = 2^-j), and the
 *          gradient reaching memory t - k is scaled by 1 / P(K_t >= k); its
 *          expectation is exactly full's, at about tbptt(tau + 1)'s cost.
 *   reservoir  the same random truncation without the 1/P weights: the biased
 *          "variable-length BPTT" kept for comparison, as UIO's published
 *          reservoir is kept beside mnemo's unbiased one (beacons have no
 *          reservoir: see beacontrain.c for why it does not carry over).
 * incremental is refused: UIO's "one encoder backward per segment" ordering is
 * exact only when the encoder does not read earlier memories, which beacons do.
 *
 * Compiled as float and double (real.h). Shapes: L layers, C n_embd, KD kv dim,
 * HD n_head * head_dim, W window, a ratio, nb = W / a beacons per window.
 */
#include <stdint.h>

#include "memory/adapter.h"
#include "train/memtrain.h"
#include "train/tmodel.h"

#if (defined(MN_REAL_F64) && !defined(MN_BEACONTRAIN_H_F64)) || \
    (!defined(MN_REAL_F64) && !defined(MN_BEACONTRAIN_H_F32))
#ifdef MN_REAL_F64
#define MN_BEACONTRAIN_H_F64
#else
#define MN_BEACONTRAIN_H_F32
#endif

/* The trainable parameters (caller-owned; gradients accumulate into d*). */
typedef struct {
    int32_t window;                  /* W */
    int32_t ratio;                   /* the smallest ratio trained (sizes the buffers); divides W */
    mn_beacon_placement placement;
    mn_beacon_attention attention;
    int attend_prev;
    int32_t sinks;                   /* raw leading tokens kept, 0..W-1 */
    const real *embd;
    real *d_embd;                    /* (C) beacon embedding and its gradient (NULL: frozen) */
    const TN(mn_talt_w) * proj;      /* (L) beacon Q, K, V (O or NULL) and their gradients */
    real ce_w, kl_w;                 /* loss weights: next-token CE, KL to the full-context teacher */
} TN(mn_beacon_tparams);

typedef struct TN(mn_beacon_trainer) TN(mn_beacon_trainer);

/* Buffers for up to max_win windows. With kl_w > 0 the teacher reads whole
 * training windows, so max_win * W must fit the model's trained context. */
int TN(mn_beacon_trainer_create)(const TN(mn_tmodel) * tm, const TN(mn_beacon_tparams) * p, int32_t max_win,
                                 TN(mn_beacon_trainer) * *out);
void TN(mn_beacon_trainer_free)(TN(mn_beacon_trainer) * tr);

/* The ratio of every window from now on: divides W, at least p->ratio. */
int TN(mn_beacon_trainer_set_ratio)(TN(mn_beacon_trainer) * tr, int32_t ratio);

/* Ablation for validation: windows 1.. read the sinks only, no memory. */
void TN(mn_beacon_trainer_no_memory)(TN(mn_beacon_trainer) * tr, int on);

/* One training window ids[0 .. n_win * W): accumulates the `mode` gradient of
 * (loss / n_scored) into the parameters' gradients (full, tbptt, reservoir or
 * unbiased with tau; rng: the truncation lengths of reservoir and unbiased,
 * one draw sequence per scored window, else unused and may be NULL). With
 * grad = 0 only the loss, the plain CE, is computed. st as for UIO
 * (enc_forwards / enc_backwards count window passes). */
int TN(mn_beacon_trainer_step)(TN(mn_beacon_trainer) * tr, const int32_t *ids, int32_t n_win, mn_bptt_mode mode,
                               int32_t tau, mn_rng *rng, int grad, mn_tstep_stats *st);

#endif
