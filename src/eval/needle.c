/* needle.c - the texts of `mnemo eval passkey` (needle.h). */
#include "eval/needle.h"

#include <stddef.h>

static const char *const k_needles[] = {
    "Keep this in mind: the secret number is %05d. I repeat, the secret number is %05d.",
    "Among all of this, one thing matters, a secret number: %05d. Once more, %05d.",
    "Please memorize the secret number %05d; you will be asked for it later. Secret number: %05d.",
    "The secret number you are looking for is %05d, and nothing else. Again: %05d.",
};

int mn_eval_n_needles(void) { return (int)(sizeof k_needles / sizeof *k_needles); }
const char *mn_eval_needle(int i) { return i >= 0 && i < mn_eval_n_needles() ? k_needles[i] : NULL; }

const char *mn_eval_passkey_intro(void) {
    return "A secret number is hidden inside a lot of irrelevant text. Find it and memorize it; I will quiz you "
           "about it.\n\n";
}
const char *mn_eval_passkey_question(void) { return "\n\nWhat is the secret number? Answer with the 5-digit number."; }
const char *mn_eval_passkey_answer_prefix(void) { return "The secret number is"; }
