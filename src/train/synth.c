/* synth.c - synthetic passkey and copy windows (synth.h). */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "train/synth.h"

static const char *const k_needles[] = {
    " The pass key is %05d. Remember it. %05d is the pass key. ",
    " Here is an important detail: the secret pass key is %05d. Keep the number %05d in mind. ",
    " Note this down, the pass key is %05d. Again, the pass key is %05d. ",
};
static const char *const k_questions[] = {
    " What is the pass key? The pass key is %05d.",
    " Question: what was the pass key? Answer: %05d.",
};

int mn_synth_n_phrasings(void) { return (int)(sizeof k_needles / sizeof *k_needles + sizeof k_questions / sizeof *k_questions); }

const char *mn_synth_phrasing(int i) {
    const int nn = (int)(sizeof k_needles / sizeof *k_needles);
    if (i < 0 || i >= mn_synth_n_phrasings()) return NULL;
    return i < nn ? k_needles[i] : k_questions[i - nn];
}

static int tok(const mn_tokenizer *tk, const char *s, int32_t *out, int32_t cap, int32_t *n) {
    int64_t got = 0;
    int rc = mn_tokenize(tk, s, strlen(s), 0, 0, out, cap, &got);
    if (rc) return rc == MN_ERANGE ? mn_error(MN_EINVAL, "synthetic text longer than %d tokens", cap) : rc;
    *n = (int32_t)got;
    return MN_OK;
}

const char *mn_synth_name(mn_synth_kind k) {
    static const char *const names[] = {"passkey", "copy", "recall"};
    return (unsigned)k < MN_SYNTH_N_KINDS ? names[k] : "?";
}

int mn_synth_parse(const char *s) {
    for (int k = 0; k < MN_SYNTH_N_KINDS; k++)
        if (!strcmp(s, mn_synth_name((mn_synth_kind)k))) return k;
    return -1;
}

int mn_synth_window(const mn_tokenizer *tk, mn_rng *rng, mn_synth_kind kind, int32_t *ids, int32_t n_seg, int32_t l,
                    int32_t recent, mn_synth_info *info) {
    if (n_seg < recent + 2 || l < 1)
        return mn_error(MN_EINVAL, "a synthetic window needs a segment read only as memory (%d segments, recent %d)",
                        n_seg, recent);
    mn_synth_info in = {0};
    /* the source: a segment the last one reads as memory only */
    in.source = (int32_t)mn_rng_below(rng, (uint64_t)(n_seg - 1 - recent));
    int32_t *src = ids + (int64_t)in.source * l, *last = ids + (int64_t)(n_seg - 1) * l;
    if (kind == MN_SYNTH_COPY) {
        memcpy(last, src, sizeof(int32_t) * (size_t)l);
        in.n_copies = 1;
    } else if (kind == MN_SYNTH_RECALL) {
        /* copy j sits at h + j and reads segments < h + j - recent as
         * memory; its source is below h - recent, so never raw and never a
         * copy itself */
        const int32_t k = (n_seg - recent) / 2, h = n_seg - k;
        in.n_copies = k;
        for (int32_t j = 0; j < k; j++) {
            const int32_t s = (int32_t)mn_rng_below(rng, (uint64_t)(h - recent));
            if (!j) in.source = s;
            memcpy(ids + (int64_t)(h + j) * l, ids + (int64_t)s * l, sizeof(int32_t) * (size_t)l);
        }
    } else if (kind == MN_SYNTH_PASSKEY) {
        in.key = 10000 + (int32_t)mn_rng_below(rng, 90000);
        char buf[256];
        int32_t nt[128], qt[128], nn, nq;
        snprintf(buf, sizeof buf, k_needles[mn_rng_below(rng, sizeof k_needles / sizeof *k_needles)], (int)in.key,
                 (int)in.key);
        int rc = tok(tk, buf, nt, 128, &nn);
        if (rc) return rc;
        snprintf(buf, sizeof buf, k_questions[mn_rng_below(rng, sizeof k_questions / sizeof *k_questions)],
                 (int)in.key);
        if ((rc = tok(tk, buf, qt, 128, &nq))) return rc;
        if (nn > l || nq > l) return mn_error(MN_EINVAL, "segment of %d tokens too short for a passkey", l);
        in.needle_len = nn;
        in.needle_at = in.source * l + (int32_t)mn_rng_below(rng, (uint64_t)(l - nn + 1));
        memcpy(ids + in.needle_at, nt, sizeof(int32_t) * (size_t)nn);
        in.answer_at = n_seg * l - nq;
        memcpy(ids + in.answer_at, qt, sizeof(int32_t) * (size_t)nq);
    } else {
        return mn_error(MN_EINVAL, "unknown synthetic window kind %d", (int)kind);
    }
    if (info) *info = in;
    return MN_OK;
}
