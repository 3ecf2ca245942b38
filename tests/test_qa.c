/* test_qa.c - the question formats `mnemo eval qa` reads (eval/qa.h): every
 * closed-ended L-Eval format parses to its kind, options and gold; a
 * half-recognised format is an error that says what was expected; free-form
 * stays free-form. */
#include "eval/qa.h"
#include "test.h"

static void ok(const char *ins, const char *out, mn_qa_kind kind, int n_opt, unsigned gold, const char *stem,
               const char *opt0) {
    mn_qa_item q;
    char why[256];
    const int rc = mn_qa_parse(ins, out, &q, why, sizeof why);
    CHECK(rc == 0, "'%.40s' / '%s' parses: %s", ins, out, why);
    if (rc) return;
    CHECK(q.kind == kind && q.n_opt == n_opt && q.gold == gold, "'%.40s': kind %s (want %s), %d options (%d), gold %u (%u)",
          ins, mn_qa_kind_name(q.kind), mn_qa_kind_name(kind), q.n_opt, n_opt, q.gold, gold);
    if (stem) CHECK(q.stem && !strcmp(q.stem, stem), "stem '%s' (want '%s')", q.stem, stem);
    if (opt0) CHECK(q.n_opt > 0 && !strcmp(q.opt[0], opt0), "first option '%s' (want '%s')", q.n_opt ? q.opt[0] : "", opt0);
    mn_qa_item_free(&q);
}

static void refused(const char *ins, const char *out, const char *says) {
    mn_qa_item q;
    char why[256];
    CHECK(mn_qa_parse(ins, out, &q, why, sizeof why) == -1 && strstr(why, says), "'%.40s' / '%s' refused, saying '%s': %s",
          ins, out, says, why);
}

int main(void) {
    /* QuALITY: inline (A)...(D), gold "(B) text" */
    ok("Why did he go?\n\n (A) to eat \n (B) to sleep \n (C) to run \n (D) to hide ", "(B) to sleep", MN_QA_CHOICE, 4, 1,
       "Why did he go?", "to eat");
    /* TOEFL: "A. ..." lines, gold a bare letter */
    ok("What is the talk about?\nA. bees\nB. the weather\nC. a trip\nD. a song", "C", MN_QA_CHOICE, 4, 2,
       "What is the talk about?", "bees");
    ok("Pick one.\nA) red\nB) blue", "B. blue", MN_QA_CHOICE, 2, 1, "Pick one.", "red");
    /* an option over two lines; a blank line ends the options */
    ok("Q?\nA. one\n   continued\nB. two\n\nAnswer with a letter.", "A", MN_QA_CHOICE, 2, 0, "Q?", "one continued");
    /* Coursera: several right letters */
    ok("Which apply?\nA. x\nB. y\nC. z\nD. w", "ACD", MN_QA_MULTI, 4, 0xD, "Which apply?", "x");
    ok("Which apply?\nA. x\nB. y\nC. z", "A, C", MN_QA_MULTI, 3, 0x5, NULL, NULL);
    ok("Which apply?\nA. x\nB. y\nC. z", "B and C", MN_QA_MULTI, 3, 0x6, NULL, NULL);
    /* SFiction: True/False */
    ok("The robot was built on Mars. Answer this question with True or False.", "False", MN_QA_TF, 2, 1, NULL, "True");
    ok("Is it so?", "true.", MN_QA_TF, 2, 0, NULL, NULL);
    /* free-form stays free-form: an answer that starts with a capital letter is no option letter */
    ok("When did season 2 start?", "April 25 , 2018", MN_QA_FREE, 0, 0, "When did season 2 start?", NULL);
    ok("What is the first topic?", "A role of art in society", MN_QA_FREE, 0, 0, NULL, NULL);
    ok("Who wrote it?", "I. Asimov", MN_QA_FREE, 0, 0, NULL, NULL);
    /* half-recognised: errors that name what was expected */
    refused("Which one?", "A", "no options");
    refused("Which one?", "(B) the second", "no options");
    refused("Q?\nA. x\nB. y", "E", "names none of them");
    refused("Q?\nA. x\nB. y", "it is the first", "expected a letter");
    refused("Q?\nA. a\nB. b\nC. c\nD. d\nE. e\nF. f\nG. g", "AB", "at most 6");
    refused(NULL, "A", "strings");
    /* a choice question joins a multi set as a set of one */
    mn_qa_item q;
    char why[64];
    CHECK(mn_qa_parse("Q?\nA. x\nB. y", "B", &q, why, sizeof why) == 0 && mn_qa_to_multi(&q) == 0 && q.kind == MN_QA_MULTI &&
              q.gold == 2,
          "choice -> multi");
    mn_qa_item_free(&q);
    char letters[MN_QA_MAX_OPT + 1];
    mn_qa_letters(0xD, letters);
    CHECK(!strcmp(letters, "ACD"), "letters %s", letters);
    TEST_MAIN_END();
}
