/* qa.c - question formats of the evaluation (qa.h). */
#include "eval/qa.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static char *dup_trim(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n), r[n] = 0;
    return r;
}

/* "(A) ... (B) ..." anywhere: the options and where the first begins */
static int inline_options(const char *ins, mn_qa_item *q, const char **first) {
    *first = strstr(ins, "(A)");
    if (!*first) return 0;
    for (int k = 0; k < MN_QA_MAX_OPT; k++) {
        char tag[4] = {'(', (char)('A' + k), ')', 0}, next[4] = {'(', (char)('A' + k + 1), ')', 0};
        const char *s = strstr(*first, tag);
        if (!s) break;
        s += 3;
        const char *e = strstr(s, next);
        if (!e) e = s + strlen(s);
        q->opt[q->n_opt++] = dup_trim(s, (size_t)(e - s));
    }
    return q->n_opt;
}

/* the letter of a line that opens an option, "A. text" or "A) text", or 0 */
static char line_letter(const char *line) {
    while (*line == ' ' || *line == '\t') line++;
    if (line[0] >= 'A' && line[0] < 'A' + MN_QA_MAX_OPT && (line[1] == '.' || line[1] == ')') &&
        (line[2] == ' ' || line[2] == '\t'))
        return line[0];
    return 0;
}

/* "A. ..." lines, A, B, C... in order: the options and where the first begins */
static int line_options(const char *ins, mn_qa_item *q, const char **first) {
    *first = NULL;
    const char *p = ins;
    char want = 'A';
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char c = line_letter(p);
        if (c == want && q->n_opt < MN_QA_MAX_OPT) {
            if (!*first) *first = p;
            const char *t = strchr(p, c) + 2;
            q->opt[q->n_opt++] = dup_trim(t, (size_t)(end - t));
            want++;
        } else if (*first && (c || end == p)) {
            break; /* letters out of order, or a blank line: the options end */
        } else if (*first && end > p) {
            /* a continuation line of the last option */
            const char *t = p;
            while (t < end && isspace((unsigned char)*t)) t++;
            char *prev = q->opt[q->n_opt - 1];
            const size_t a = strlen(prev), b = (size_t)(end - t);
            char *j = realloc(prev, a + b + 2);
            if (j) {
                j[a] = ' ', memcpy(j + a + 1, t, b), j[a + 1 + b] = 0;
                q->opt[q->n_opt - 1] = j;
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    return q->n_opt >= 2 ? q->n_opt : 0;
}

/* The gold as a set of letters: "(B) text", "B", "B.", "B. text", "B) text", "ACD", "A, C and D".
 * Returns the bit set, or 0 when it names none. */
static unsigned gold_letters(const char *out) {
    while (isspace((unsigned char)*out)) out++;
    if (out[0] == '(' && out[1] >= 'A' && out[1] < 'A' + MN_QA_MAX_OPT && out[2] == ')') return 1u << (out[1] - 'A');
    /* a letter followed by its option's text */
    if (out[0] >= 'A' && out[0] < 'A' + MN_QA_MAX_OPT && (out[1] == '.' || out[1] == ')') && out[2] == ' ' &&
        isalnum((unsigned char)out[3]))
        return 1u << (out[0] - 'A');
    /* letters and separators only */
    unsigned set = 0;
    for (const char *p = out; *p; p++) {
        if (*p >= 'A' && *p < 'A' + MN_QA_MAX_OPT && !isalpha((unsigned char)p[1]) && (p == out || !isalpha((unsigned char)p[-1])))
            set |= 1u << (*p - 'A');
        else if (*p >= 'A' && *p < 'A' + MN_QA_MAX_OPT && isupper((unsigned char)p[1])) { /* "ACD" */
            const char *r = p;
            unsigned s2 = 0;
            while (*r >= 'A' && *r < 'A' + MN_QA_MAX_OPT) s2 |= 1u << (*r++ - 'A');
            if (isalpha((unsigned char)*r)) return 0;
            set |= s2;
            p = r - 1;
        } else if (!strncmp(p, "and", 3) && !isalpha((unsigned char)p[3]) && (p == out || !isalpha((unsigned char)p[-1])))
            p += 2;
        else if (!(isspace((unsigned char)*p) || *p == ',' || *p == '.' || *p == '&' || *p == ';'))
            return 0;
    }
    return set;
}

/* 1 true, 0 false, -1 neither: "True", "false.", "False [...]" */
static int gold_tf(const char *out) {
    while (isspace((unsigned char)*out)) out++;
    if (!strncasecmp(out, "true", 4) && !isalpha((unsigned char)out[4])) return 1;
    if (!strncasecmp(out, "false", 5) && !isalpha((unsigned char)out[5])) return 0;
    return -1;
}

static int popcount(unsigned v) {
    int n = 0;
    for (; v; v &= v - 1) n++;
    return n;
}

int mn_qa_parse(const char *ins, const char *out, mn_qa_item *q, char *why, size_t cap) {
    memset(q, 0, sizeof *q);
    if (why && cap) why[0] = 0;
    if (!ins || !out) {
        snprintf(why, cap, "a question and its gold answer are strings");
        return -1;
    }
    const char *first = NULL;
    if (!inline_options(ins, q, &first)) {
        mn_qa_item_free(q);
        memset(q, 0, sizeof *q);
        line_options(ins, q, &first);
    }
    const unsigned set = gold_letters(out);
    const int tf = gold_tf(out);
    if (q->n_opt >= 2) {
        if (!set || set >> q->n_opt) {
            snprintf(why, cap,
                     "options (A)-(%c) but the gold \"%.40s\" names none of them (expected a letter: \"B\", \"(B) ...\", "
                     "\"B. ...\", or several: \"ACD\")",
                     'A' + q->n_opt - 1, out);
            mn_qa_item_free(q);
            return -1;
        }
        q->stem = dup_trim(ins, (size_t)(first - ins));
        q->kind = popcount(set) > 1 ? MN_QA_MULTI : MN_QA_CHOICE;
        if (q->kind == MN_QA_MULTI && q->n_opt > MN_QA_MAX_MULTI) {
            snprintf(why, cap, "several right answers among %d options (at most %d)", q->n_opt, MN_QA_MAX_MULTI);
            mn_qa_item_free(q);
            return -1;
        }
        q->gold = q->kind == MN_QA_MULTI ? set : (unsigned)__builtin_ctz(set);
        return q->stem ? 0 : -1;
    }
    mn_qa_item_free(q);
    memset(q, 0, sizeof *q);
    if (tf >= 0) {
        q->kind = MN_QA_TF;
        q->stem = dup_trim(ins, strlen(ins));
        q->opt[0] = dup_trim("True", 4), q->opt[1] = dup_trim("False", 5);
        q->n_opt = 2;
        q->gold = tf ? 0 : 1;
        return q->stem && q->opt[0] && q->opt[1] ? 0 : -1;
    }
    if (set) {
        snprintf(why, cap,
                 "the gold \"%.40s\" is a letter but the question has no options (expected \"(A) ...\" inline or "
                 "\"A. ...\" lines)",
                 out);
        return -1;
    }
    q->kind = MN_QA_FREE;
    q->stem = dup_trim(ins, strlen(ins));
    q->answer = dup_trim(out, strlen(out));
    return q->stem && q->answer ? 0 : -1;
}

int mn_qa_to_multi(mn_qa_item *q) {
    if (q->kind != MN_QA_CHOICE || q->n_opt > MN_QA_MAX_MULTI) return q->kind == MN_QA_MULTI ? 0 : -1;
    q->kind = MN_QA_MULTI;
    q->gold = 1u << q->gold;
    return 0;
}

void mn_qa_item_free(mn_qa_item *q) {
    if (!q) return;
    free(q->stem), free(q->answer);
    for (int k = 0; k < q->n_opt; k++) free(q->opt[k]);
    q->stem = q->answer = NULL;
    q->n_opt = 0;
}

void mn_qa_letters(unsigned mask, char *out) {
    int n = 0;
    for (int k = 0; k < MN_QA_MAX_OPT; k++)
        if (mask >> k & 1) out[n++] = (char)('A' + k);
    out[n] = 0;
}

const char *mn_qa_kind_name(mn_qa_kind k) {
    static const char *const names[] = {"free", "choice", "multi", "tf"};
    return (unsigned)k < 4 ? names[k] : "unknown";
}
