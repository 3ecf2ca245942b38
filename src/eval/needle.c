/* needle.c - the texts of `mnemo eval passkey` and the check of an answer (needle.h). */
#include "eval/needle.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* key: the 5-digit key twice (%05d %05d) */
static const char *const k_keys[] = {
    "Keep this in mind: the secret number is %05d. I repeat, the secret number is %05d.",
    "Among all of this, one thing matters, a secret number: %05d. Once more, %05d.",
    "Please memorize the secret number %05d; you will be asked for it later. Secret number: %05d.",
    "The secret number you are looking for is %05d, and nothing else. Again: %05d.",
};
/* multi: the label, then the key */
static const char *const k_multi[] = {
    "The secret number of the %s is %05d.",
    "Write this down: the %s has the secret number %05d.",
    "Remember that the secret number belonging to the %s is %05d.",
};
static const char *const k_labels[] = {"blue door", "green lamp", "red boat", "white tower", "copper bell", "silver fox"};
/* fact: the statement (place, number), then the question about it (place) */
static const char *const k_facts[][2] = {
    {"When the council gathered at %s, %s people were in the hall.",
     "How many people were in the hall when the council gathered at %s?"},
    {"The old bridge at %s rests on %s stone arches.", "How many stone arches does the old bridge at %s rest on?"},
    {"That morning the ferry from %s carried %s passengers across the bay.",
     "How many passengers did the ferry from %s carry across the bay that morning?"},
    {"In the orchard behind %s there grew %s pear trees.", "How many pear trees grew in the orchard behind %s?"},
};
/* counts: one statement with two or three counts of different things, one asked for: the count must
 * be read from its own noun (the others are distractors in the same sentence). The statement takes the
 * place, then the counts in order; `part` marks a second count that is a part of the first ("N of
 * them"), drawn smaller. */
static const struct {
    const char *statement;
    int n_counts, part;
    const char *question[3];
} k_counts[] = {
    {"The harbour of %s sheltered %s fishing boats, %s barges and %s rowing skiffs.", 3, 0,
     {"How many fishing boats did the harbour of %s shelter?", "How many barges did the harbour of %s shelter?",
      "How many rowing skiffs did the harbour of %s shelter?"}},
    {"Last spring the weavers of %s sold %s rugs and %s blankets to the traders.", 2, 0,
     {"How many rugs did the weavers of %s sell last spring?", "How many blankets did the weavers of %s sell last spring?"}},
    {"The lecture at %s drew %s listeners, and %s of them stayed to argue afterwards.", 2, 1,
     {"How many listeners did the lecture at %s draw?", "How many listeners stayed to argue after the lecture at %s?"}},
    {"The stables at %s held %s horses and %s mules.", 2, 0,
     {"How many horses were held in the stables at %s?", "How many mules were held in the stables at %s?"}},
};
static const char *const k_places[] = {"Harrowmere", "Elsby Cross", "Quillon", "Marrowdale", "Vennford", "Thistlecombe",
                                       "Brackwater", "Orrin Hollow"};

static const char *const k_intro[MN_NEEDLE_N_KINDS] = {
    "A secret number is hidden inside a lot of irrelevant text. Find it and memorize it; I will quiz you about it.\n\n",
    "Several secret numbers, each with a label, are hidden inside a lot of irrelevant text. Find them and memorize "
    "them; I will quiz you about one of them.\n\n",
    "Read the following text carefully; I will ask you about a detail in it.\n\n",
    "Read the following text carefully; I will ask you about a detail in it.\n\n",
};
static const char *const k_key_question = "\n\nWhat is the secret number? Answer with the 5-digit number.";
static const char *const k_key_prefix = "The secret number is";
static const char *const k_multi_question = "\n\nWhat is the secret number of the %s? Answer with the 5-digit number.";
static const char *const k_multi_prefix = "The secret number of the %s is";
static const char *const k_fact_question = "\n\n%s Answer with a number.";

#define N_OF(a) ((int)(sizeof(a) / sizeof *(a)))

static const char *const k_units[] = {"zero",    "one",     "two",       "three",    "four",    "five",    "six",
                                      "seven",   "eight",   "nine",      "ten",      "eleven",  "twelve",  "thirteen",
                                      "fourteen", "fifteen", "sixteen",  "seventeen", "eighteen", "nineteen"};
static const char *const k_tens[] = {"", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};

static const char *const k_names[MN_NEEDLE_N_KINDS] = {"key", "multi", "fact", "counts"};

int mn_needle_parse(const char *name) {
    for (int i = 0; i < MN_NEEDLE_N_KINDS; i++)
        if (name && !strcmp(name, k_names[i])) return i;
    return -1;
}

const char *mn_needle_name(mn_needle_kind k) { return (unsigned)k < MN_NEEDLE_N_KINDS ? k_names[k] : "unknown"; }

static uint32_t draw(uint64_t *s, uint32_t n) {
    if (!*s) *s = 88172645463325252ull;
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (uint32_t)(*s >> 32) % n;
}

/* 0..99 in words */
static void words_of(long v, char *out, size_t cap) {
    if (v < 20) snprintf(out, cap, "%s", k_units[v]);
    else if (v % 10 == 0) snprintf(out, cap, "%s", k_tens[v / 10]);
    else snprintf(out, cap, "%s-%s", k_tens[v / 10], k_units[v % 10]);
}

void mn_needle_make(mn_needle_kind kind, uint64_t *rng, mn_needle_trial *t) {
    memset(t, 0, sizeof *t);
    t->kind = kind;
    snprintf(t->intro, sizeof t->intro, "%s", k_intro[kind]);
    if (kind == MN_NEEDLE_KEY) {
        const int key = 10000 + (int)draw(rng, 90000u);
        snprintf(t->needle[0], sizeof t->needle[0], k_keys[draw(rng, N_OF(k_keys))], key, key);
        snprintf(t->question, sizeof t->question, "%s", k_key_question);
        snprintf(t->answer_prefix, sizeof t->answer_prefix, "%s", k_key_prefix);
        t->n_needles = 1;
        t->answer = key;
    } else if (kind == MN_NEEDLE_MULTI) {
        int lab[MN_NEEDLE_MAX];
        for (int i = 0; i < MN_NEEDLE_MAX; i++) { /* three different labels and keys */
            int again;
            do {
                lab[i] = (int)draw(rng, N_OF(k_labels));
                again = 0;
                for (int j = 0; j < i; j++) again |= lab[j] == lab[i];
            } while (again);
            const int key = 10000 + (int)draw(rng, 90000u);
            snprintf(t->needle[i], sizeof t->needle[i], k_multi[draw(rng, N_OF(k_multi))], k_labels[lab[i]], key);
            if (i == 0) t->answer = key;
        }
        snprintf(t->question, sizeof t->question, k_multi_question, k_labels[lab[0]]);
        snprintf(t->answer_prefix, sizeof t->answer_prefix, k_multi_prefix, k_labels[lab[0]]);
        t->n_needles = MN_NEEDLE_MAX;
    } else if (kind == MN_NEEDLE_COUNTS) {
        const int f = (int)draw(rng, N_OF(k_counts)), nc = k_counts[f].n_counts;
        const char *place = k_places[draw(rng, N_OF(k_places))];
        long v[3] = {0};
        for (int i = 0; i < nc; i++) { /* distinct: an answer names one count only */
            int again;
            do {
                v[i] = 3 + (long)draw(rng, 95u);
                again = 0;
                for (int j = 0; j < i; j++) again |= v[j] == v[i];
            } while (again);
        }
        if (k_counts[f].part && v[1] > v[0]) {
            const long x = v[0];
            v[0] = v[1], v[1] = x;
        }
        char num[3][32], q[200];
        for (int i = 0; i < nc; i++)
            if (draw(rng, 2u)) words_of(v[i], num[i], sizeof num[i]);
            else snprintf(num[i], sizeof num[i], "%ld", v[i]);
        if (nc == 3) snprintf(t->needle[0], sizeof t->needle[0], k_counts[f].statement, place, num[0], num[1], num[2]);
        else snprintf(t->needle[0], sizeof t->needle[0], k_counts[f].statement, place, num[0], num[1]);
        const int ask = (int)draw(rng, (uint32_t)nc);
        snprintf(q, sizeof q, k_counts[f].question[ask], place);
        snprintf(t->question, sizeof t->question, k_fact_question, q);
        t->n_needles = 1;
        t->answer = v[ask];
    } else {
        const int f = (int)draw(rng, N_OF(k_facts));
        const char *place = k_places[draw(rng, N_OF(k_places))];
        const long v = 3 + (long)draw(rng, 95u);
        char num[32], q[200];
        if (draw(rng, 2u)) words_of(v, num, sizeof num);
        else snprintf(num, sizeof num, "%ld", v);
        snprintf(t->needle[0], sizeof t->needle[0], k_facts[f][0], place, num);
        snprintf(q, sizeof q, k_facts[f][1], place);
        snprintf(t->question, sizeof t->question, k_fact_question, q);
        t->n_needles = 1;
        t->answer = v;
    }
}

/* the first run of exactly 5 digits in s, or -1 */
static long first_key(const char *s) {
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') continue;
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        if (q - p == 5) return strtol(p, NULL, 10);
        p = q - 1;
    }
    return -1;
}

/* the number word at s (whole word, case-insensitive): its value and length, or -1 */
static long word_at(const char *s, size_t *len) {
    long best = -1;
    size_t bl = 0;
    for (int i = 0; i < 20; i++) {
        const size_t n = strlen(k_units[i]);
        if (n > bl && !strncasecmp(s, k_units[i], n) && !isalpha((unsigned char)s[n])) best = i, bl = n;
    }
    for (int i = 2; i < 10; i++) {
        const size_t n = strlen(k_tens[i]);
        if (strncasecmp(s, k_tens[i], n) || isalpha((unsigned char)s[n])) continue;
        best = 10L * i, bl = n;
        if (s[n] == '-' || s[n] == ' ') { /* twenty-one, twenty one */
            for (int u = 1; u < 10; u++) {
                const size_t m = strlen(k_units[u]);
                if (!strncasecmp(s + n + 1, k_units[u], m) && !isalpha((unsigned char)s[n + 1 + m])) {
                    best = 10L * i + u, bl = n + 1 + m;
                    break;
                }
            }
        }
        break;
    }
    *len = bl;
    return best;
}

long mn_needle_first_number(const char *s) {
    for (const char *p = s; *p; p++) {
        if (isdigit((unsigned char)*p)) {
            long v = 0;
            while (isdigit((unsigned char)*p) && v < 100000000L) v = v * 10 + (*p++ - '0');
            return v;
        }
        if (isalpha((unsigned char)*p) && (p == s || !isalpha((unsigned char)p[-1]))) {
            size_t n;
            const long v = word_at(p, &n);
            if (v >= 0) return v;
        }
    }
    return -1;
}

int mn_needle_check(const mn_needle_trial *t, const char *answer) {
    if (!answer) return 0;
    const int number = t->kind == MN_NEEDLE_FACT || t->kind == MN_NEEDLE_COUNTS;
    return (number ? mn_needle_first_number(answer) : first_key(answer)) == t->answer;
}

static const char *text_of(int i) {
    const int nk = N_OF(k_keys), nm = N_OF(k_multi), nl = N_OF(k_labels), nf = N_OF(k_facts), nc = N_OF(k_counts),
              np = N_OF(k_places);
    if (i < nk) return k_keys[i];
    if ((i -= nk) < nm) return k_multi[i];
    if ((i -= nm) < nl) return k_labels[i];
    if ((i -= nl) < 2 * nf) return k_facts[i / 2][i % 2];
    i -= 2 * nf;
    for (int f = 0; f < nc; i -= 1 + k_counts[f].n_counts, f++)
        if (i <= k_counts[f].n_counts) return i == 0 ? k_counts[f].statement : k_counts[f].question[i - 1];
    if (i < np) return k_places[i];
    if ((i -= np) < MN_NEEDLE_N_KINDS) return k_intro[i];
    i -= MN_NEEDLE_N_KINDS;
    const char *const rest[] = {k_key_question, k_key_prefix, k_multi_question, k_multi_prefix, k_fact_question};
    return i < N_OF(rest) ? rest[i] : NULL;
}

int mn_eval_n_texts(void) {
    int n = 0;
    while (text_of(n)) n++;
    return n;
}

const char *mn_eval_text(int i) { return i >= 0 && i < mn_eval_n_texts() ? text_of(i) : NULL; }
