/* sampler.h - picks the next token from a row of logits.
 *
 * The chain follows llama.cpp's default sampler order (common/common.h,
 * common_params_sampling::samplers: penalties, dry, top_n_sigma, top_k, typ_p,
 * top_p, min_p, xtc, temperature, then the final "dist" draw). mnemo implements
 * the subset
 *
 *     penalties -> top_k -> top_p -> min_p -> temperature -> softmax -> draw
 *
 * so top_p and min_p judge the untempered (temperature 1) distribution of the
 * candidates still left at that point, and temperature only reshapes the
 * survivors. temperature <= 0 is greedy: the argmax of the penalized logits
 * (which every truncation step keeps anyway), with no random draw.
 *
 * Determinism: candidates are ordered by (logit descending, token id
 * ascending), so ties always resolve to the lowest id (greedy, top_k, top_p).
 * The same seed, the same accepted history and the same logits give the same
 * tokens on every platform (xoshiro256** seeded through splitmix64; one 64-bit
 * draw per non-greedy sample).
 *
 * Special logit values:
 *   - NaN is treated as -INFINITY: such a token is never chosen.
 *   - -INFINITY tokens have probability 0 and are never chosen.
 *   - If any logit is +INFINITY, only the +INFINITY tokens remain, with equal
 *     weight (greedy / top_k=1 pick the lowest such id).
 *   - If every logit is NaN or -INFINITY there is nothing to sample:
 *     mn_sampler_sample returns MN_EINVAL with a message.
 *
 * A sampler is not thread-safe; use one per sequence.
 */
#ifndef MN_SAMPLER_H
#define MN_SAMPLER_H

#include <stdint.h>

#include "mnemo.h"

typedef struct {
    float temperature;     /* <= 0: greedy (argmax); must not be NaN/inf */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off; must be >= 0 (0 keeps only the top token) */
    float min_p;           /* <= 0: off; keep tokens with p >= min_p * p_max; must be <= 1 */
    float repeat_penalty;  /* 1: off; must be finite and > 0. llama.cpp semantics:
                              logit > 0 ? logit / pen : logit * pen, applied once to
                              each distinct token among the last repeat_last_n
                              accepted tokens */
    int32_t repeat_last_n; /* window for the penalty (default 64); 0: off; must be >= 0 */
    uint64_t seed;         /* same seed + same logits -> same tokens */
} mn_sampler_params;

typedef struct mn_sampler mn_sampler;

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat 1.0, last_n 64, seed 0
 * (llama.cpp's common defaults). */
mn_sampler_params mn_sampler_default_params(void);

/* Validates `p` (NULL means the defaults) and allocates every buffer the
 * sampler needs for a vocabulary of n_vocab tokens. Returns 0, MN_EINVAL (bad
 * parameter, with a message naming it) or MN_ENOMEM. */
int mn_sampler_create(const mn_sampler_params *p, int32_t n_vocab, mn_sampler **out);

/* NULL is a no-op. */
void mn_sampler_free(mn_sampler *s);

/* Picks the next token from logits[n_vocab]. The logits are not modified (they
 * are copied into the sampler's own buffer); nothing is allocated per call.
 * Returns a token id in [0, n_vocab), or a negative MN_E* code: MN_EINVAL when
 * s/logits is NULL or no logit is samplable (all NaN or -INFINITY). The pick is
 * NOT recorded in the history: call mn_sampler_accept for that. */
int32_t mn_sampler_sample(mn_sampler *s, const float *logits);

/* Records an accepted token (prompt tokens too) for the repetition-penalty
 * history. Ids outside [0, n_vocab) are ignored. */
void mn_sampler_accept(mn_sampler *s, int32_t token);

/* Forgets the history and re-seeds the generator, so the sampler behaves as
 * if freshly created with the same parameters. */
void mn_sampler_reset(mn_sampler *s);

#endif
