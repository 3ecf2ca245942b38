/* beacon.h - the Activation Beacon compressor: a sliding window of W raw
 * tokens is condensed into W/ratio beacon tokens whose K/V stay as memory.
 *
 * The compressor runs inside one context (a stream's, or its own for a
 * document). The cache holds [sinks | memory | current window]: the first
 * `sinks` raw tokens of the text kept raw, the beacons of the windows already
 * condensed, then the current window's raw tokens (and, interleaved or
 * appended, its beacons). Positions are contiguous over that sequence, as in
 * the public code (position ids = arange over memory + window). When a window
 * is full its beacons' K/V are re-placed at the next memory positions and its
 * raw cells are dropped.
 *
 * Beacon tokens: one learned embedding (mem.embd) and their own Q, K, V (and
 * O with proj_o) projections; everything else is the base model's.
 *
 * Which cells a token sees (j = beacon index in its window, a = ratio,
 * r = raw tokens in the window, normally W):
 *   raw tokens: sinks, memory, the window's earlier raw tokens; and the
 *     window's earlier beacons only with interleave + full-coverage (the
 *     public code's plain causal mask there).
 *   beacon j: sinks and memory (all earlier windows' beacons, always, as in
 *     the public code); raw tokens of its window by the attention scheme:
 *       segmentation    [j*a, (j+1)*a)  - its own interval only
 *       step-expansion  [0, (j+1)*a)    - one more interval than beacon j-1
 *       full-coverage   append: [0, r) - the whole window;
 *                       interleave: [0, (j+1)*a) - all raw tokens before it
 *                       (it cannot see later ones: causal)
 *     and of its window's beacons: 0..j with attend_prev, else only itself.
 *   The public code's `beacon_attend_prev` is this within-window switch:
 *   earlier windows' beacons (the memory) are visible to every token either
 *   way. It ignores the switch for full-coverage (always causal) and refuses
 *   interleave + segmentation and interleave + step-expansion + attend_prev;
 *   here those combinations follow the rules above.
 * Positions (offsets from the window's first position; beacons keep them
 * until the window is condensed):
 *   interleave, full-coverage: one sequence, raw i at i + i/a, beacon j right
 *     after raw token (j+1)*a - 1;
 *   interleave, other schemes: raw i at i; beacon j at (j+1)*a, sharing the
 *     next raw token's position (raw positions stay those of plain text);
 *   append: raw i at i; beacon j at r + j (full-coverage), (j+1)*a [+ j with
 *     attend_prev] (step-expansion), a [+ j] (segmentation).
 *
 * Shapes: L layers, C n_embd, KD kv dim, W window, a ratio.
 */
#ifndef MN_BEACON_H
#define MN_BEACON_H

#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "model/forward.h"

/* The layout rules above as functions, shared by inference and training
 * (train/beacontrain.c), so the two cannot drift apart. A window cell's kind:
 * raw token i as i >= 0, beacon j as -(j + 1); r: raw tokens in the window
 * when a beacon runs (interleave: those before it; append: the window's). */
typedef struct {
    mn_beacon_placement placement;
    mn_beacon_attention attention;
    int attend_prev;
    int32_t ratio;
} mn_beacon_scheme;
/* Offset of a cell's position from the window's first position. */
int32_t mn_beacon_offset(const mn_beacon_scheme *s, int32_t kind, int32_t r);
/* Whether a token of kind tk sees the window cell of kind ck (an earlier
 * cell or itself). */
int mn_beacon_sees(const mn_beacon_scheme *s, int32_t tk, int32_t ck, int32_t r);

typedef struct {
    int32_t window;                  /* W */
    int32_t ratio;                   /* a of every window until mn_beacon_set_ratio; divides W */
    int32_t n_ratios;                /* the ratios a window may use (adapter's set); 0: only `ratio` */
    const int32_t *ratios;
    mn_beacon_placement placement;
    mn_beacon_attention attention;
    int attend_prev;
    int32_t sinks;                   /* leading raw tokens kept, < W */
    const float *embd;               /* (C) beacon embedding */
    mn_proj_set proj;                /* beacon projections (per layer f32) */
} mn_beacon_params;

/* Parameters viewing a loaded beacon adapter (its tensors, no copies). */
typedef struct {
    const float **q, **k, **v, **o; /* per layer */
    mn_beacon_params params;
} mn_beacon_binding;

/* Fails clearly for another compressor kind or another model. */
int mn_beacon_bind(const mn_model *m, const mn_adapter *a, mn_beacon_binding *b);
void mn_beacon_unbind(mn_beacon_binding *b);

typedef struct mn_beacon mn_beacon;

/* A compressor over ctx (cleared; ctx and p's arrays must outlive it).
 * keep_slots > 0 additionally collects the f32 K/V of sinks and beacons
 * (without RoPE) for up to keep_slots slots (documents: mn_beacon_take_memory). */
int mn_beacon_create(mn_context *ctx, const mn_beacon_params *p, int32_t keep_slots, mn_beacon **out);
void mn_beacon_free(mn_beacon *b);
/* Forgets everything (clears the context). */
void mn_beacon_reset(mn_beacon *b);
/* Ratio for the windows that start from now on: one of the parameters' set,
 * dividing W (MN_EINVAL otherwise). */
int mn_beacon_set_ratio(mn_beacon *b, int32_t ratio);
/* Feeds n raw tokens: beacons are inserted as the placement says and each full
 * window is condensed. logits as in mn_decode, for the raw tokens only (rows
 * per raw token with logits_all). MN_ERANGE when the memory no longer fits the
 * context (the position budget is spent). */
int mn_beacon_feed(mn_beacon *b, const int32_t *ids, int32_t n, float *logits, int logits_all);
/* Condenses a partial last window of r raw tokens into ceil(r/a) beacons (the
 * last covering the remainder), so nothing of a document's tail is dropped. */
int mn_beacon_finish(mn_beacon *b);
int32_t mn_beacon_n_memory(const mn_beacon *b); /* beacons held */
/* Keeps at most max_slots beacons (0: no bound): after each window the oldest
 * are dropped and the rest re-positioned after the sinks, so the cache and the
 * cost per token stay flat however long the text (what is dropped is lost). */
void mn_beacon_set_memory_cap(mn_beacon *b, int32_t max_slots);
int32_t mn_beacon_n_sinks(const mn_beacon *b);  /* raw sink cells held */
int32_t mn_beacon_n_local(const mn_beacon *b);  /* raw tokens of the current window */
/* Hands over the collected (L, S + M, KD) keys (without RoPE) and values of
 * [sinks | memory] (malloc'd). When keep_slots were filled exactly the
 * collection buffers themselves are handed over and collecting stops;
 * otherwise they are copied and the collection restarts empty. */
int mn_beacon_take_memory(mn_beacon *b, float **k, float **v, int32_t *n_slots);

/* A whole document: windows in order (each reads the memory of the earlier
 * ones, so the parallelism is within each forward pass, n_threads threads),
 * the tail condensed by mn_beacon_finish. k, v (L, M, KD) without RoPE,
 * M = sinks + beacons. The same result for any thread count. */
int mn_beacon_compress_doc(const mn_model *m, const mn_beacon_params *p, const int32_t *ids, int64_t n,
                           int n_threads, float **k_out, float **v_out, int32_t *M_out);

#endif
