/* test_synth.c - synthetic passkey and copy windows (train/synth.h) with the
 * default model's tokenizer: the source lands in a segment the last one reads
 * as memory only, the rest of the window is untouched, the question's answer
 * is the needle's key, the same seed gives the same window, bad shapes are
 * refused without touching the window. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/needle.h"
#include "test.h"
#include "train/synth.h"

enum { L = 64, N = 5 };

static void fill(int32_t *ids) {
    for (int i = 0; i < N * L; i++) ids[i] = 1000 + i;
}

static void text_of(const mn_tokenizer *tk, const int32_t *ids, int n, char *out, size_t cap) {
    size_t got = 0;
    if (mn_detokenize(tk, ids, n, 0, out, cap, &got)) out[0] = 0;
}

/* Lower-cased words of s, the %05d slots dropped; returns how many. */
static int words(const char *s, char w[][32], int cap) {
    int n = 0;
    for (const char *p = s; *p && n < cap;) {
        if (p[0] == '%' && !strncmp(p, "%05d", 4)) {
            p += 4;
            continue;
        }
        if (!isalpha((unsigned char)*p)) {
            p++;
            continue;
        }
        int k = 0;
        while (isalpha((unsigned char)*p) && k < 31) w[n][k++] = (char)tolower((unsigned char)*p++);
        w[n++][k] = 0;
    }
    return n;
}

/* Whether the word lists a and b share a run of 4 words. */
static int shares_four(char a[][32], int na, char b[][32], int nb) {
    for (int x = 0; x + 4 <= na; x++)
        for (int y = 0; y + 4 <= nb; y++)
            if (!strcmp(a[x], b[y]) && !strcmp(a[x + 1], b[y + 1]) && !strcmp(a[x + 2], b[y + 2]) &&
                !strcmp(a[x + 3], b[y + 3]))
                return 1;
    return 0;
}

/* The evaluation's texts (needles, facts, labels, questions) share no run of 4 words with the training
 * windows' texts, and none of them speaks of a "pass key", the training needles' word. */
static void eval_phrasings_disjoint(void) {
    CHECK(mn_synth_n_phrasings() >= 4 && mn_eval_n_texts() >= 20, "both lists are there");
    for (int i = 0; i < mn_eval_n_texts(); i++) {
        const char *ev = mn_eval_text(i);
        char a[64][32];
        const int na = words(ev, a, 64);
        for (int k = 0; k + 1 < na; k++)
            CHECK(strcmp(a[k], "pass") || strcmp(a[k + 1], "key"), "eval text %d speaks of a pass key", i);
        for (int j = 0; j < mn_synth_n_phrasings(); j++) {
            char b[64][32];
            const int nb = words(mn_synth_phrasing(j), b, 64);
            CHECK(!shares_four(a, na, b, nb), "eval text \"%s\" shares 4 words with the training text \"%s\"", ev,
                  mn_synth_phrasing(j));
        }
    }
}

/* The reader's training pairs (scripts/make_reader_data.py, the decoder LoRA recall answers with) share
 * no run of 4 words with the evaluation's texts either. */
static void reader_phrasings_disjoint(void) {
    FILE *p = popen("python3 scripts/make_reader_data.py --phrasings", "r");
    CHECK(p != NULL, "cannot run scripts/make_reader_data.py");
    if (!p) return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, p)) {
        char b[64][32];
        const int nb = words(line, b, 64);
        n++;
        for (int i = 0; i < mn_eval_n_texts(); i++) {
            char a[64][32];
            const int na = words(mn_eval_text(i), a, 64);
            CHECK(!shares_four(a, na, b, nb), "eval text \"%s\" shares 4 words with the reader's phrasing \"%s\"", mn_eval_text(i), line);
        }
    }
    CHECK(pclose(p) == 0 && n >= 20, "%d reader phrasings listed", n);
}

/* The eval's trials: each states the number it asks for, and the check takes that number, in digits or
 * in words for a fact, and nothing else (a distractor's key, a near word). */
static void eval_trials(void) {
    CHECK(mn_needle_first_number("There were six persons present") == 6, "six");
    CHECK(mn_needle_first_number("Twenty-one people.") == 21 && mn_needle_first_number("forty two") == 42,
          "compound number words");
    CHECK(mn_needle_first_number("sixteen arches, not six") == 16, "the longest number word");
    CHECK(mn_needle_first_number("The sixth, then 37 passengers") == 37, "'sixth' is no number; 37 is");
    CHECK(mn_needle_first_number("none at all") == -1 && mn_needle_first_number("") == -1, "no number");
    CHECK(mn_needle_parse("fact") == MN_NEEDLE_FACT && mn_needle_parse("multi") == MN_NEEDLE_MULTI &&
              mn_needle_parse("counts") == MN_NEEDLE_COUNTS &&
              mn_needle_parse("key") == MN_NEEDLE_KEY && mn_needle_parse("passkey") == -1,
          "kinds by name");
    uint64_t rng = 7;
    int not_first = 0; /* counts trials asking for a count other than the statement's first */
    for (int kind = 0; kind < MN_NEEDLE_N_KINDS; kind++)
        for (int trial = 0; trial < 40; trial++) {
            mn_needle_trial t;
            mn_needle_make((mn_needle_kind)kind, &rng, &t);
            char digits[32];
            const int number = kind == MN_NEEDLE_FACT || kind == MN_NEEDLE_COUNTS;
            snprintf(digits, sizeof digits, number ? "%ld" : "%05ld", t.answer);
            CHECK(t.n_needles == (kind == MN_NEEDLE_MULTI ? 3 : 1) && !strncmp(t.question, "\n\n", 2),
                  "kind %d: needles %d, question '%s'", kind, t.n_needles, t.question);
            char ans[64];
            snprintf(ans, sizeof ans, " %s.", digits);
            CHECK(mn_needle_check(&t, ans), "kind %d: the right number '%s' is accepted", kind, ans);
            snprintf(ans, sizeof ans, " %ld.", t.answer + 1);
            CHECK(!mn_needle_check(&t, ans), "kind %d: a wrong number '%s' is refused", kind, ans);
            if (kind == MN_NEEDLE_FACT) {
                CHECK(t.answer >= 3 && t.answer < 100, "fact number %ld", t.answer);
                /* the statement says the number, in digits or words; the question does not */
                CHECK(mn_needle_first_number(t.needle[0]) == t.answer, "fact '%s' states %ld", t.needle[0], t.answer);
                CHECK(mn_needle_first_number(t.question) == -1, "question '%s' gives a number away", t.question);
            } else if (kind == MN_NEEDLE_COUNTS) {
                /* the statement says two or three different counts, the asked one among them; each other
                 * count is a wrong answer, and the question names no number */
                long seen[8];
                int n = 0, has = 0;
                char word[64];
                for (const char *p = t.needle[0]; *p && n < 8;) { /* word by word: "twenty-one" is one */
                    const size_t w = strcspn(p, " ,.;");
                    snprintf(word, sizeof word, "%.*s", (int)(w < sizeof word ? w : sizeof word - 1), p);
                    const long v = mn_needle_first_number(word);
                    if (v >= 0) seen[n++] = v, has |= v == t.answer, not_first += n > 1 && v == t.answer;
                    p += w + (p[w] != 0);
                }
                CHECK(n >= 2 && n <= 3 && has, "counts '%s': %d numbers, the answer %ld among them", t.needle[0], n,
                      t.answer);
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < i; j++) CHECK(seen[i] != seen[j], "counts '%s' repeats %ld", t.needle[0], seen[i]);
                for (int i = 0; i < n; i++) {
                    snprintf(ans, sizeof ans, " %ld.", seen[i]);
                    CHECK((seen[i] == t.answer) == mn_needle_check(&t, ans), "counts: answer %ld for %ld", seen[i],
                          t.answer);
                }
                CHECK(mn_needle_first_number(t.question) == -1, "question '%s' gives a number away", t.question);
            } else {
                CHECK(strstr(t.needle[0], digits) != NULL, "needle '%s' holds key %s", t.needle[0], digits);
                CHECK(!strstr(t.question, digits), "the question gives the key away");
            }
            if (kind == MN_NEEDLE_MULTI) { /* the asked label is in the question; the distractors differ */
                for (int j = 1; j < 3; j++) {
                    long other = -1;
                    for (const char *p = t.needle[j]; *p && other < 0; p++)
                        if (*p >= '0' && *p <= '9') other = strtol(p, NULL, 10);
                    snprintf(ans, sizeof ans, " %05ld.", other);
                    CHECK(other == t.answer || !mn_needle_check(&t, ans), "a distractor's key is refused");
                    CHECK(strcmp(t.needle[j], t.needle[0]), "distractor %d repeats the needle", j);
                }
                char label[64] = "";
                const char *lab = strstr(t.question, "of the ");
                if (lab) sscanf(lab + 7, "%63[^?]", label);
                CHECK(label[0] && strstr(t.needle[0], label), "question '%s' names the needle's label ('%s')",
                      t.question, t.needle[0]);
            }
        }
    CHECK(not_first >= 10, "counts asks for a later count in %d of 40 trials", not_first);
}

int main(void) {
    eval_phrasings_disjoint();
    reader_phrasings_disjoint();
    eval_trials();
    const char *path = test_model_path();
    CHECK(path != NULL, "the default model is missing (make model fetches it)");
    mn_model *m = NULL;
    if (path) CHECK(mn_model_load(path, &m) == 0, "the default model loads: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    const mn_tokenizer *tk = mn_model_tokenizer(m);
    int32_t ids[N * L], orig[N * L], again[N * L];
    mn_rng rng;
    int seen_src[N] = {0};
    for (int recent = 0; recent <= 2; recent++)
        for (int trial = 0; trial < 40; trial++) {
            /* copy */
            fill(ids), memcpy(orig, ids, sizeof ids);
            mn_rng_seed(&rng, (uint64_t)(trial * 7 + recent));
            mn_synth_info in;
            CHECK(mn_synth_window(tk, &rng, MN_SYNTH_COPY, ids, N, L, recent, &in) == 0, "copy: %s", mn_last_error());
            CHECK(in.source >= 0 && in.source <= N - 2 - recent, "copy source %d read raw with recent %d", in.source,
                  recent);
            CHECK(!memcmp(ids + (N - 1) * L, orig + in.source * L, sizeof(int32_t) * L), "last segment is not the copy");
            CHECK(!memcmp(ids, orig, sizeof(int32_t) * (N - 1) * L), "copy touched the earlier segments");
            seen_src[in.source]++;
            /* passkey */
            fill(ids);
            mn_rng_seed(&rng, (uint64_t)(trial * 7 + recent));
            CHECK(mn_synth_window(tk, &rng, MN_SYNTH_PASSKEY, ids, N, L, recent, &in) == 0, "passkey: %s",
                  mn_last_error());
            CHECK(in.source <= N - 2 - recent && in.needle_at >= in.source * L &&
                      in.needle_at + in.needle_len <= (in.source + 1) * L,
                  "needle [%d, +%d) outside memory segment %d", in.needle_at, in.needle_len, in.source);
            CHECK(in.answer_at > (N - 1) * L, "question starts at %d, before the last segment", in.answer_at);
            char needle[512], answer[512], key[8];
            snprintf(key, sizeof key, "%05d", in.key);
            text_of(tk, ids + in.needle_at, in.needle_len, needle, sizeof needle);
            text_of(tk, ids + in.answer_at, N * L - in.answer_at, answer, sizeof answer);
            CHECK(strstr(needle, key) && strstr(needle, "pass key"), "needle '%s' lacks key %s", needle, key);
            CHECK(strstr(answer, key) && strstr(answer, "pass key"), "answer '%s' lacks key %s", answer, key);
            for (int i = 0; i < N * L; i++)
                if ((i < in.needle_at || i >= in.needle_at + in.needle_len) && i < in.answer_at && ids[i] != 1000 + i) {
                    CHECK(0, "token %d changed outside the needle and the question", i);
                    break;
                }
            /* recall: the last k segments repeat segments every copy reads as memory only */
            fill(ids), memcpy(orig, ids, sizeof ids);
            CHECK(mn_synth_window(tk, &rng, MN_SYNTH_RECALL, ids, N, L, recent, &in) == 0, "recall: %s",
                  mn_last_error());
            const int k = (N - recent) / 2, h = N - k;
            CHECK(in.n_copies == k && k >= 1, "recall made %d copies, expected %d", in.n_copies, k);
            CHECK(!memcmp(ids, orig, sizeof(int32_t) * h * L), "recall touched the segments before the copies");
            for (int j = 0; j < k; j++) {
                int src = -1;
                for (int s = 0; s < N && src < 0; s++)
                    if (!memcmp(ids + (h + j) * L, orig + s * L, sizeof(int32_t) * L)) src = s;
                CHECK(src >= 0 && src + recent < h && src + recent < h + j,
                      "copy %d (segment %d) repeats segment %d, read raw or a copy (recent %d)", j, h + j, src, recent);
                if (!j) CHECK(src == in.source, "info.source %d, first copy repeats %d", in.source, src);
            }
            /* the same seed, the same window */
            fill(ids);
            mn_rng_seed(&rng, (uint64_t)(trial * 7 + recent));
            CHECK(mn_synth_window(tk, &rng, MN_SYNTH_PASSKEY, ids, N, L, recent, &in) == 0, "passkey: %s",
                  mn_last_error());
            fill(again);
            mn_rng_seed(&rng, (uint64_t)(trial * 7 + recent));
            mn_synth_window(tk, &rng, MN_SYNTH_PASSKEY, again, N, L, recent, NULL);
            CHECK(!memcmp(ids, again, sizeof ids), "same seed, other window");
        }
    CHECK(seen_src[0] && seen_src[1] && seen_src[2], "sources not spread: %d %d %d", seen_src[0], seen_src[1],
          seen_src[2]);
    /* refused: no memory-only segment; a segment too short for the needle */
    fill(ids), memcpy(orig, ids, sizeof ids);
    CHECK(mn_synth_window(tk, &rng, MN_SYNTH_COPY, ids, N, L, N - 1, NULL) == MN_EINVAL, "recent N-1 accepted");
    CHECK(mn_synth_window(tk, &rng, MN_SYNTH_RECALL, ids, N, L, N - 1, NULL) == MN_EINVAL, "recall: recent N-1 accepted");
    CHECK(mn_synth_parse("recall") == MN_SYNTH_RECALL && mn_synth_parse("copy") == MN_SYNTH_COPY &&
              mn_synth_parse("passkey") == MN_SYNTH_PASSKEY && mn_synth_parse("needle") == -1,
          "kind names do not round-trip");
    CHECK(mn_synth_window(tk, &rng, MN_SYNTH_PASSKEY, ids, N, 8, 0, NULL) == MN_EINVAL, "8-token segment accepted");
    CHECK(!memcmp(ids, orig, sizeof ids), "a refused window was changed");
    mn_model_free(m);
    TEST_MAIN_END();
}
