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

/* The sampler API is public: see the "samplers" section of mnemo.h. */

#endif
