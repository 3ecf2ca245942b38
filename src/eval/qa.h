/* qa.h - the closed-ended and free-form question formats `mnemo eval qa`
 * reads (L-Eval's JSON lines: each document's "instructions" and "outputs").
 *
 *   choice  options "(A) ..." inline (QuALITY) or "A. ..." / "A) ..." lines
 *           (TOEFL, Coursera), gold "(B) ...", "B", "B. ..."
 *   multi   the same options, several answers right: gold "ACD", "A, C"
 *   tf      a statement to judge, gold "True" or "False" (SFiction)
 *   free    anything else: a short answer scored by token F1
 *
 * A question whose gold names a letter or options that cannot be read is an
 * error that says what was expected, never silently free-form: a letter
 * scored by F1 against a generated sentence measures nothing.
 */
#ifndef MN_EVAL_QA_H
#define MN_EVAL_QA_H

#include <stddef.h>

#define MN_QA_MAX_OPT 8
#define MN_QA_MAX_MULTI 6 /* options of a multi question: every nonempty subset is a candidate */

typedef enum { MN_QA_FREE, MN_QA_CHOICE, MN_QA_MULTI, MN_QA_TF } mn_qa_kind;

typedef struct {
    mn_qa_kind kind;
    char *stem;                /* the question without its options */
    char *opt[MN_QA_MAX_OPT];  /* choice, multi: the options' texts; tf: "True", "False" */
    int n_opt;
    unsigned gold;             /* choice, tf: the right option's index; multi: a bit per right option */
    char *answer;              /* free: the gold answer */
} mn_qa_item;

/* Reads one question; returns 0, or -1 with the reason in why (a format it
 * half-recognised: options without a readable gold letter, a gold letter
 * without options, a letter past the options). */
int mn_qa_parse(const char *instruction, const char *output, mn_qa_item *q, char *why, size_t cap);
void mn_qa_item_free(mn_qa_item *q);

/* A choice question as a multi one (its gold a set of one), for sets where
 * some questions have several right answers. */
int mn_qa_to_multi(mn_qa_item *q);

/* The letters of a set of options, "ACD" (out: at least MN_QA_MAX_OPT + 1). */
void mn_qa_letters(unsigned mask, char *out);

const char *mn_qa_kind_name(mn_qa_kind k);

#endif
