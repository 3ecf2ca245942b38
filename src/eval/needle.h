/* needle.h - the texts of `mnemo eval passkey`: the needles hidden in the
 * haystack, the instruction before it, the question after it, and how an
 * answer is checked.
 *
 * Four kinds of trial:
 *   key    one 5-digit secret number, asked for;
 *   multi  three labelled secret numbers, one asked for by its label (the
 *          other two are distractors at random depths);
 *   fact   a stated fact with a number in it ("... 37 passengers ..."),
 *          asked as a question about that detail; the number may come back
 *          in digits or in words;
 *   counts one statement with two or three counts of different things
 *          ("... 41 fishing boats, 12 barges and 7 rowing skiffs."), one asked
 *          for: the others are distractors in the same sentence, so the count
 *          must be read from its own noun; checked as a fact.
 *
 * They are disjoint from what the trainer's synthetic windows say
 * (train/synth.h: "pass key" needles and questions): a model trained on those
 * must not meet its training phrasing in the evaluation. tests/test_synth.c
 * fails if any run of four words of mn_eval_text() appears in the training
 * phrasings.
 */
#ifndef MN_EVAL_NEEDLE_H
#define MN_EVAL_NEEDLE_H

#include <stdint.h>

typedef enum { MN_NEEDLE_KEY, MN_NEEDLE_MULTI, MN_NEEDLE_FACT, MN_NEEDLE_COUNTS, MN_NEEDLE_N_KINDS } mn_needle_kind;

#define MN_NEEDLE_MAX 3

/* One trial: the needles to hide (needle[0] is the one asked for, at the
 * trial's depth), the instruction, the question (beginning with the "\n\n"
 * that separates it from the haystack) and the start of the answer. */
typedef struct {
    mn_needle_kind kind;
    int n_needles;
    char needle[MN_NEEDLE_MAX][256];
    char intro[256], question[256], answer_prefix[96];
    long answer; /* the number a correct answer states */
} mn_needle_trial;

/* "key", "multi", "fact", "counts" -> kind; -1 if unknown. */
int mn_needle_parse(const char *name);
const char *mn_needle_name(mn_needle_kind k);

/* Draws a trial from the generator state *rng (any nonzero seed; advanced). */
void mn_needle_make(mn_needle_kind kind, uint64_t *rng, mn_needle_trial *t);

/* 1 if the answer states the trial's number first: for key and multi the
 * first run of exactly five digits, for fact and counts the first number in digits or
 * in English words ("six", "twenty-one"). */
int mn_needle_check(const mn_needle_trial *t, const char *answer);

/* The first number in s, in digits or words, or -1. Exposed for the tests. */
long mn_needle_first_number(const char *s);

/* Every template the evaluation can say (needles, facts, labels, questions,
 * instructions), for the disjointness test. */
int mn_eval_n_texts(void);
const char *mn_eval_text(int i);

#endif
