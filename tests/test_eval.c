/* test_eval.c - `mnemo eval` as a user runs it: JSON rows with the protocol's
 * invariants, the markdown table, and clear usage errors.
 *
 * ppl: every row scores the same tokens; truncation with a window holding
 * the whole text is full attention, to the digit; on a text that repeats
 * itself, more context must lower the perplexity of full attention while a
 * short truncation window cannot; the sinks window is matched to the memory
 * mode's cells. passkey: full attention finds a key a short window cannot
 * see. recall: its rows and table. qa: free-form F1 and multiple choice on a
 * document made here, and a malformed line's clear error. Texts are made here, so nothing outside the repository is read.
 */
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "eval/eval.h"

/* a sink that keeps the rows (one per line), the last progress and the notes */
typedef struct {
    char rows[1 << 15];
    size_t n;
    double done, total;
    int n_progress, n_notes;
} lib_sink;

static void lib_row(void *u, const char *json) {
    lib_sink *s = u;
    s->n += (size_t)snprintf(s->rows + s->n, sizeof s->rows - s->n, "%s\n", json);
}
static void lib_progress(void *u, const char *task, double done, double total, const char *label) {
    lib_sink *s = u;
    s->done = done, s->total = total, s->n_progress++;
}
static void lib_note(void *u, const char *msg) { ((lib_sink *)u)->n_notes++; }

/* the JSON rows of a CLI run's stdout (the lines that open with '{') */
static void rows_of(const char *out, char *rows, size_t cap) {
    size_t n = 0;
    rows[0] = 0;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        const size_t len = e ? (size_t)(e - l) + 1 : strlen(l);
        if (*l == '{' && n + len < cap) memcpy(rows + n, l, len), n += len, rows[n] = 0;
    }
}

static const char *bin(void) {
    const char *b = getenv("MNEMO_BIN");
    return b ? b : "./build/mnemo";
}

/* Runs `mnemo ARGS`: its stdout in out, or with err its stderr; the exit status. */
static int run_as(const char *args, char *out, size_t cap, int err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s", bin(), args, err ? "2>&1 >/dev/null" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
static int run(const char *args, char *out, size_t cap) { return run_as(args, out, cap, 0); }
static int run_err(const char *args, char *out, size_t cap) { return run_as(args, out, cap, 1); }

/* the number after "key": in the first JSON row containing all of `must` */
static double field(const char *out, const char *must1, const char *must2, const char *key) {
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        char line[2048];
        if (n >= sizeof line || *l != '{') continue;
        memcpy(line, l, n), line[n] = 0;
        if ((must1 && !strstr(line, must1)) || (must2 && !strstr(line, must2))) continue;
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\": ", key);
        const char *v = strstr(line, pat);
        return v ? strtod(v + strlen(pat), NULL) : NAN;
    }
    return NAN;
}

int main(void) {
    if (!test_model_path()) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    char dir[] = "/tmp/mnemo-eval-XXXXXX", book[256], rbook[256], hay[256], ad[256], args[2048];
    if (!mkdtemp(dir)) return 1;
    /* The sanitized build runs the model about 20 times slower: it reads texts of half the length, with the same
     * checks (the repetition, the windows and the scored span scaled alike). L1 < L2: the two ppl lengths, the
     * second reaching into the repetition; SC: scored tokens; PK: the passkey haystack's length. */
    const int san = getenv("MN_SANITIZED") != NULL;
    const int NW = san ? 550 : 1100, L1 = san ? 600 : 1200, L2 = san ? 900 : 1800, SC = san ? 128 : 256,
              PK = san ? 400 : 600;
    snprintf(book, sizeof book, "%s/book.txt", dir);
    snprintf(rbook, sizeof rbook, "%s/rbook.txt", dir);
    snprintf(hay, sizeof hay, "%s/hay", dir);
    snprintf(ad, sizeof ad, "%s/uio.gguf", dir);
    /* a text whose second half repeats its first: context pays */
    FILE *f = fopen(book, "w");
    static const char *words[] = {"river", "lantern", "orchard", "copper", "meadow", "signal", "harbor", "velvet",
                                  "thistle", "engine", "marble", "falcon"};
    uint64_t g = 7;
    char para[16384];
    size_t pl = 0, pl_small = 0;
    for (int i = 0; i < 1100; i++) {
        g ^= g << 13, g ^= g >> 7, g ^= g << 17;
        pl += (size_t)snprintf(para + pl, sizeof para - pl, "%s%s", words[g % 12], i % 13 == 12 ? ".\n" : " ");
        if (i + 1 == NW) pl_small = pl;
    }
    fprintf(f, "%.*s%.*s", (int)pl_small, para, (int)pl_small, para);
    fclose(f);
    /* eval recall reads spans after the first 2,000 tokens: the whole text in every build */
    f = fopen(rbook, "w");
    fprintf(f, "%s%s", para, para);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && for i in 1 2 3 4 5 6; do cat %s; done > %s/essay.txt", hay, book, hay);
    CHECK(system(cmd) == 0, "haystack");
    static char out[1 << 17];

    /* 1. usage errors */
    CHECK(run_err("eval", out, sizeof out) == 2, "no task");
    CHECK(run_err("eval frobnicate", out, sizeof out) == 2 && strstr(out, "unknown task"), "unknown task: %s", out);
    setenv("MNEMO_ADAPTER", "none", 1); /* as if no adapter shipped */
    CHECK(run_err("eval ppl --books x --modes memory", out, sizeof out) == 2 && strstr(out, "-a ADAPTER"),
          "memory without adapter: %s", out);
    unsetenv("MNEMO_ADAPTER");
    CHECK(run_err("eval ppl --books x -a /nonexistent.gguf", out, sizeof out) == 1 && strstr(out, "nonexistent.gguf"),
          "missing adapter: %s", out);
    CHECK(run_err("eval ppl --books x --lengths 2048,abc", out, sizeof out) == 2 && strstr(out, "--lengths"),
          "bad lengths: %s", out);
    CHECK(run_err("eval ppl --books x --lengths 1000 --score 1024", out, sizeof out) == 2, "length below score");
    CHECK(run_err("eval ppl --books /nonexistent/dir", out, sizeof out) == 1 && strstr(out, "nonexistent"),
          "missing books: %s", out);
    CHECK(run("eval --help", out, sizeof out) == 0 && strstr(out, "passkey"), "help");

    /* 2. ppl: same scored tokens, full == truncate with a window holding it all */
    snprintf(args, sizeof args, "eval ppl --books %s --lengths %d,%d --score %d --modes full,truncate --window 2048 -t 2",
             book, L1, L2, SC);
    int rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval ppl: %d %s", rc, out);
    char len1[32], len2[32], tab[64];
    snprintf(len1, sizeof len1, "\"length\": %d,", L1);
    snprintf(len2, sizeof len2, "\"length\": %d,", L2);
    snprintf(tab, sizeof tab, "| mode | %d | %d |", L1, L2);
    const double f1 = field(out, len1, "\"full\"", "nll"), f2 = field(out, len2, "\"full\"", "nll"),
                 t2 = field(out, len2, "\"truncate\"", "nll");
    CHECK(isfinite(f1) && isfinite(f2) && fabs(f2 - t2) < 1e-4, "full %.6f vs truncate(2048) %.6f at %d", f2, t2, L2);
    CHECK(f2 < f1 - 0.2, "%d tokens of context should beat %d on a repeated text: %.4f vs %.4f", L2, L1, f2, f1);
    CHECK(field(out, len2, "\"full\"", "scored") == SC, "scored tokens");
    CHECK(field(out, len2, "\"full\"", "kv_cells") >= L2 - 2, "full holds the text's cells");
    CHECK(strstr(out, tab) != NULL, "markdown table: %s", out);
    /* --span-end: one length alone scores the same tokens as in the run that held both */
    snprintf(args, sizeof args, "eval ppl --books %s --lengths %d --span-end %d --score %d --modes full -t 2", book, L1,
             L2, SC);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0 && fabs(field(out, len1, "\"full\"", "nll") - f1) < 1e-6, "--span-end %d: %.6f vs %.6f: %s", L2,
          field(out, len1, "\"full\"", "nll"), f1, out);

    /* 3. memory with a fresh adapter; sinks window matched to its cells */
    snprintf(args, sizeof args,
             "adapter init --compressor uio --segment 128 --ratio 8 --rank 4 --recent 1 -o %s >/dev/null", ad);
    CHECK(run(args, out, sizeof out) == 0, "adapter init: %s", out);
    snprintf(args, sizeof args, "eval ppl --books %s --lengths %d --score %d --modes memory,sinks,truncate -a %s -t 2",
             book, L2, SC, ad);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval ppl memory: %d %s", rc, out);
    const double mc = field(out, "\"memory\"", NULL, "kv_cells"), sw = field(out, "\"sinks\"", NULL, "window"),
                 ms = field(out, "\"memory\"", NULL, "memory_slots");
    CHECK(mc > 0 && sw == mc, "sinks window %.0f not matched to memory cells %.0f", sw, mc);
    CHECK(ms > 0 && ms < L2 / 8 + 16, "memory slots %.0f", ms);
    /* the short window sees none of the repetition's source: worse than full */
    CHECK(field(out, "\"truncate\"", NULL, "nll") > f2 + 0.2, "truncate(%.0f) should be worse than full", sw);
    /* recall in ppl: before each scored piece the text just read pages 2 segments in beside the memory
     * (the sanitized build reads a shorter text: the same checks) */
    snprintf(args, sizeof args, "eval ppl --books %s --lengths %d --score %d --modes memory -a %s --recall 0,2 -t 2",
             book, san ? 800 : L2, SC, ad);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval ppl --recall: %d %s", rc, out);
    const double k0 = field(out, "\"recall\": 0,", NULL, "kv_cells"), k2 = field(out, "\"recall\": 2,", NULL, "kv_cells"),
                 n2 = field(out, "\"recall\": 2,", NULL, "nll");
    CHECK((san || k0 == mc) && k2 > k0 && isfinite(n2) && n2 > 0,
          "recall rows: cells %.0f -> %.0f (memory alone %.0f), nll %.4f", k0, k2, mc, n2);
    /* --max-memory: the newest slots only, fewer cells, and the sinks window follows */
    snprintf(args, sizeof args,
             "eval ppl --books %s --lengths %d --score %d --modes memory,sinks -a %s --max-memory 32 -t 2", book, L2, SC,
             ad);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval ppl --max-memory: %d %s", rc, out);
    const double cc = field(out, "\"memory\"", NULL, "kv_cells");
    CHECK(field(out, "\"memory\"", NULL, "memory_slots") == 32 && field(out, "\"memory\"", NULL, "max_memory") == 32,
          "memory bounded to 32 slots: %s", out);
    CHECK(cc > 0 && cc <= mc - (ms - 32) && field(out, "\"sinks\"", NULL, "window") == cc,
          "bounded memory holds %.0f cells (unbounded %.0f), sinks matched", cc, mc);

    /* 4. passkey: full attention finds it; a 64-cell truncation window cannot see a key at depth 0 */
    snprintf(args, sizeof args,
             "eval passkey --haystack %s --lengths %d --depths 0 --trials 3 --modes full,truncate --window 64 -t 2",
             hay, PK);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval passkey: %d %s", rc, out);
    const double fa = field(out, "\"full\"", NULL, "accuracy"), ta = field(out, "\"truncate\"", NULL, "accuracy");
    CHECK(fa >= 0.66, "full attention found the key in %.2f of trials at %d tokens", fa, PK);
    CHECK(ta == 0, "a 64-token window found a key %d tokens back (%.2f)", PK - 100, ta);
    CHECK(strstr(out, "exact-digit accuracy") != NULL, "passkey table");
    static char cli_rows[1 << 15];
    rows_of(out, cli_rows, sizeof cli_rows);
    /* the fact variant; rag reads the chunks BM25 picks for the question, within the window: the fact's chunk
     * among them in every trial */
    snprintf(args, sizeof args,
             "eval passkey --haystack %s --lengths %d --depths 20 --trials 2 --modes full,rag --window 700 "
             "--needle fact -t 2",
             hay, san ? 1000 : 1500);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"needle\": \"fact\"") && strstr(out, "fact accuracy"), "eval passkey fact: %d %s", rc,
          out);
    CHECK(field(out, "\"rag\"", NULL, "needle_paged") == 2 && field(out, "\"rag\"", NULL, "kv_cells") <= 700,
          "rag chose the fact's chunk within 700 cells: %s", out);
    CHECK(field(out, "\"full\"", NULL, "kv_cells") > (san ? 950 : 1400), "full read it all");
    snprintf(args, sizeof args,
             "eval passkey --haystack %s --lengths %d --depths 50 --trials 2 --modes full --needle multi -t 2", hay,
             san ? 500 : 800);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"needle\": \"multi\"") && field(out, "\"full\"", NULL, "trials") == 2,
          "eval passkey multi: %d %s", rc, out);
    /* counts: one statement with several counts, one asked for */
    snprintf(args, sizeof args,
             "eval passkey --haystack %s --lengths %d --depths 50 --trials 2 --modes full --needle counts -t 2", hay,
             san ? 500 : 800);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"needle\": \"counts\"") && strstr(out, "counts accuracy") &&
              field(out, "\"full\"", NULL, "trials") == 2,
          "eval passkey counts: %d %s", rc, out);
    CHECK(run_err("eval passkey --needle nope", out, sizeof out) == 2 && strstr(out, "key, multi, fact, counts"),
          "bad needle: %s", out);
    CHECK(run_err("eval passkey --exact ids", out, sizeof out) == 2 && strstr(out, "tokens or kv"), "bad --exact: %s",
          out);
    CHECK(run_err("eval ppl --books x --modes rag", out, sizeof out) == 2 && strstr(out, "passkey and qa"),
          "rag outside passkey: %s", out);

    /* 5. recall: rows per sample and ratio, accuracies in [0, 1]; ratios must divide the segment */
    snprintf(args, sizeof args, "eval recall --books %s --ratios 4,8 --samples 2 --generate 1 -a %s -t 2", rbook, ad);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval recall: %d %s", rc, out);
    const double r0 = field(out, "\"ratio\": null", NULL, "token_accuracy"),
                 r8 = field(out, "\"ratio\": 8,", NULL, "token_accuracy"), rl = field(out, "\"ratio\": 4,", NULL, "rouge_l");
    CHECK(r0 >= 0 && r0 <= 1 && r8 >= 0 && r8 <= 1 && rl >= 0 && rl <= 1, "recall values %.3f %.3f %.3f", r0, r8, rl);
    CHECK(field(out, "\"ratio\": 8,", NULL, "memory_slots") == 16, "ratio 8 of a 128-token segment is 16 slots");
    CHECK(strstr(out, "| ratio 8 | 16 |") != NULL, "recall table: %s", out);
    /* a text too short to hold a span: an error that says what it needs, not an empty success */
    snprintf(cmd, sizeof cmd, "%s/short.txt", dir);
    f = fopen(cmd, "w");
    fprintf(f, "Only a few words here.\n");
    fclose(f);
    snprintf(args, sizeof args, "eval recall --books %s --ratios 8 -a %s", cmd, ad);
    CHECK(run_err(args, out, sizeof out) == 1 && strstr(out, "after its first 2000"), "a text too short: %s", out);
    snprintf(args, sizeof args, "eval recall --books %s --ratios 3 -a %s", rbook, ad);
    CHECK(run_err(args, out, sizeof out) == 2 && strstr(out, "does not divide"), "ratio 3: %s", out);
    /* a span of two segments: both memories held, the table and rows name the span */
    snprintf(args, sizeof args, "eval recall --books %s --ratios 8 --length 256 --samples 1 --generate 1 -a %s -t 2",
             rbook, ad);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval recall --length 256: %d %s", rc, out);
    CHECK(field(out, "\"ratio\": 8,", NULL, "memory_slots") == 32 && field(out, "\"ratio\": 8,", NULL, "length") == 256,
          "two segments' memories at ratio 8: %s", out);
    CHECK(strstr(out, "| ratio 8 | 32 |") != NULL && strstr(out, "(2 segments each)"), "recall span table: %s", out);
    snprintf(args, sizeof args, "eval recall --books %s --ratios 8 --length 200 -a %s", rbook, ad);
    CHECK(run_err(args, out, sizeof out) == 2 && strstr(out, "multiple of the adapter's segment"), "length 200: %s", out);

    /* 6. qa: a free-form and a multiple-choice question over a short document; a malformed line */
    char qa[256], bad[256];
    snprintf(qa, sizeof qa, "%s/qa.jsonl", dir);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    f = fopen(qa, "w");
    fprintf(f, "{\"input\": \"Mira keeps bees on the hill above the village. The capital of Zorbia is Quentaville. "
               "Every spring the bees swarm.\", \"instructions\": [\"What is the capital of Zorbia?\", "
               "\"Where does Mira keep bees?\\n\\n (A) in the cellar \\n (B) on the hill above the village \\n (C) "
               "at sea \\n (D) in Quentaville \"], \"outputs\": [\"Quentaville\", \"(B) on the hill above the village\"]}\n");
    fclose(f);
    f = fopen(bad, "w");
    fprintf(f, "{\"input\": 3}\n");
    fclose(f);
    snprintf(args, sizeof args, "eval qa --set %s --modes full -t 2", qa);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0, "eval qa: %d %s", rc, out);
    CHECK(field(out, "\"full\"", NULL, "free_form") == 1 && field(out, "\"full\"", NULL, "questions") == 1,
          "one free-form and one multiple-choice question: %s", out);
    CHECK(field(out, "\"full\"", NULL, "f1_sum") > 0.2, "the answer is in the text: F1 %.3f",
          field(out, "\"full\"", NULL, "f1_sum"));
    CHECK(strstr(out, "F1 (free-form)") != NULL, "qa table");
    snprintf(args, sizeof args, "eval qa --set %s --modes full", bad);
    CHECK(run_err(args, out, sizeof out) == 1 && strstr(out, "bad.jsonl:1"), "malformed line: %s", out);
    /* the other closed-ended L-Eval formats: "A. ..." lines with a gold letter (TOEFL), several right letters
     * (Coursera), True/False (SFiction); all scored as closed questions, none as free-form F1 */
    f = fopen(qa, "w");
    fprintf(f, "{\"input\": \"Mira keeps bees on the hill above the village. The capital of Zorbia is Quentaville. "
               "Every spring the bees swarm.\", \"instructions\": [\"Where does Mira keep bees?\\nA. in the cellar\\nB. on "
               "the hill\\nC. at sea\", \"Which are true?\\nA. Mira keeps bees\\nB. Zorbia has no capital\\nC. the bees "
               "swarm in spring\", \"Mira keeps bees. Answer this question with True or False.\"], \"outputs\": [\"B\", "
               "\"AC\", \"True\"]}\n");
    fclose(f);
    snprintf(args, sizeof args, "eval qa --set %s --modes full,rag --window 512 -t 2", qa);
    rc = run(args, out, sizeof out);
    CHECK(rc == 0 && field(out, "\"full\"", NULL, "questions") == 3 && field(out, "\"full\"", NULL, "free_form") == 0,
          "three closed questions: %d %s", rc, out);
    /* rag: the short document fits its window whole, so it answers as full attention does */
    CHECK(field(out, "\"rag\"", NULL, "questions") == 3 && field(out, "\"rag\"", NULL, "window") == 512 &&
              field(out, "\"rag\"", NULL, "correct") == field(out, "\"full\"", NULL, "correct"),
          "rag rows: %s", out);
    /* a letter for gold and no options: an error naming what was expected, not a free-form F1 */
    f = fopen(bad, "w");
    fprintf(f, "{\"input\": \"text\", \"instructions\": [\"Which one?\"], \"outputs\": [\"A\"]}\n");
    fclose(f);
    snprintf(args, sizeof args, "eval qa --set %s --modes full", bad);
    CHECK(run_err(args, out, sizeof out) == 1 && strstr(out, "bad.jsonl:1") && strstr(out, "no options") &&
              strstr(out, "A. ..."),
          "a gold letter without options: %s", out);

    /* 7. the library (src/eval, what the CLI, the server and bindings call): the same rows as the CLI for the
     * same options, progress to the end, the summary table; bad options and texts are errors with a message */
    mn_model *m = NULL;
    CHECK(mn_model_load(test_model_path(), &m) == 0, "model: %s", mn_last_error());
    if (m) {
        mn_eval_opts o;
        mn_eval_default_opts(&o, MN_EVAL_PASSKEY);
        o.m = m, o.src = hay, o.threads = 2, o.window = 64, o.window_given = 1, o.trials = 3;
        o.n_lengths = 1, o.lengths[0] = PK, o.n_depths = 1, o.depths[0] = 0;
        CHECK(mn_eval_set_modes(&o, "full,truncate") == 0 && o.n_modes == 2, "modes: %s", mn_last_error());
        static lib_sink ls;
        const mn_eval_sink sink = {lib_row, lib_progress, lib_note, &ls};
        char *summary = NULL;
        rc = mn_eval_run(&o, &sink, &summary);
        CHECK(rc == 0, "mn_eval_run passkey: %s", mn_last_error());
        CHECK(!strcmp(ls.rows, cli_rows), "the library's rows are the CLI's:\n%s---\n%s", ls.rows, cli_rows);
        CHECK(ls.n_progress > 1 && ls.total > 0 && fabs(ls.done - ls.total) < 1e-6, "progress %.0f of %.0f", ls.done,
              ls.total);
        CHECK(summary && strstr(summary, "| full |") && strstr(summary, "exact-digit accuracy"), "summary: %s",
              summary ? summary : "(none)");
        free(summary);
        /* errors: a mode the task has no use for, a missing text, memory without an adapter */
        mn_eval_opts bad = o;
        bad.task = MN_EVAL_PPL, bad.lengths[0] = 2048;
        CHECK(mn_eval_set_modes(&bad, "rag") == 0 && mn_eval_run(&bad, &sink, &summary) == MN_EINVAL &&
                  strstr(mn_last_error(), "passkey and qa") && !summary,
              "rag for ppl: %s", mn_last_error());
        bad = o;
        bad.src = "/nonexistent/hay";
        CHECK(mn_eval_run(&bad, &sink, &summary) != 0 && strstr(mn_last_error(), "/nonexistent/hay") && !summary,
              "missing haystack: %s", mn_last_error());
        CHECK(mn_eval_set_modes(&bad, "memory") == MN_EINVAL && strstr(mn_last_error(), "adapter"),
              "memory without adapter: %s", mn_last_error());
        CHECK(mn_eval_set_modes(&bad, "full,nope") == MN_EINVAL && strstr(mn_last_error(), "nope"), "unknown mode: %s",
              mn_last_error());
        mn_model_free(m);
    }

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
