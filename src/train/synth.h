/* synth.h - synthetic training windows that teach a memory what it must keep.
 *
 * Plain text rarely makes the next segment depend on an exact detail far
 * back, so a compressor trained on it alone learns to keep the gist. These
 * rewrite a sampled window of n segments of l tokens in place so that the
 * last segment can only be predicted from a memory: the source is put in a
 * segment the decoder of the last segment reads as memory only (index
 * 0 .. n - 2 - recent), never as raw tokens.
 *   PASSKEY  a needle ("The pass key is 48213. Remember it. ...") overwrites
 *            a stretch of the source segment; the last segment ends with the
 *            question and its answer ("What is the pass key? The pass key is
 *            48213."), whose digits are scored like every other token.
 *   COPY     the last segment becomes a copy of the source segment (the
 *            in-context auto-encoding of ICAE / UIO, inside the LM loss).
 */
#ifndef MN_SYNTH_H
#define MN_SYNTH_H

#include <stdint.h>

#include "mnemo.h"
#include "train/rng.h"

typedef enum { MN_SYNTH_PASSKEY = 0, MN_SYNTH_COPY = 1, MN_SYNTH_RECALL = 2, MN_SYNTH_N_KINDS = 3 } mn_synth_kind;
const char *mn_synth_name(mn_synth_kind k);
int mn_synth_parse(const char *s); /* -1 when unknown */
/* The passkey windows' texts (needles, then questions; printf formats with
 * %05d), for the test that keeps the evaluation's phrasings apart from them. */
int mn_synth_n_phrasings(void);
const char *mn_synth_phrasing(int i);

typedef struct {
    int32_t source;   /* the segment holding the needle / the (first) copied text */
    int32_t n_copies; /* COPY: 1; RECALL: k, the last k segments */
    int32_t key;      /* PASSKEY: the 5-digit key */
    int32_t needle_at, needle_len; /* PASSKEY: where the needle tokens went */
    int32_t answer_at;             /* PASSKEY: first token of the question in the window */
} mn_synth_info;

/* Rewrites ids (n_seg * l tokens) into a window of the given kind; needs
 * n_seg >= recent + 2 and a segment long enough for the texts (else
 * MN_EINVAL, ids unchanged). info may be NULL. */
int mn_synth_window(const mn_tokenizer *tk, mn_rng *rng, mn_synth_kind kind, int32_t *ids, int32_t n_seg, int32_t l,
                    int32_t recent, mn_synth_info *info);

#endif
