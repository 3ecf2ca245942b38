/* needle.h - the texts of `mnemo eval passkey`: the needles hidden in the
 * haystack, the instruction before it and the question after it.
 *
 * They are disjoint from what the trainer's synthetic windows say
 * (train/synth.h: "pass key" needles and questions): a model trained on those
 * must not meet its training phrasing in the evaluation. The eval asks for a
 * "secret number" in phrasings no training window uses; tests/test_synth.c
 * fails if any fragment of one list appears in the other.
 */
#ifndef MN_EVAL_NEEDLE_H
#define MN_EVAL_NEEDLE_H

/* Needle templates: printf formats with the 5-digit key twice (%05d %05d). */
int mn_eval_n_needles(void);
const char *mn_eval_needle(int i);

/* The instruction before the haystack, the question after it (the first two
 * characters are the "\n\n" that separate it from the haystack) and the start
 * of the answer the model continues. */
const char *mn_eval_passkey_intro(void);
const char *mn_eval_passkey_question(void);
const char *mn_eval_passkey_answer_prefix(void);

#endif
