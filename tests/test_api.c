/* test_api.c - the public calls a binding is built on (mnemo.h): documents in
 * memory (read with progress and a stop, info, save and load, the digest
 * equal to what `mnemo compress` wrote for the same text, asked with and
 * without a text callback, bad input refused) and the server's requests
 * answered in process (a chat and a completion, streamed chunks that add up
 * to the whole answer, bad requests refused with the 400's message). */
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory/kvstore.h"
#include "test.h"
#include "mnemo.h"

#define MN_TEST_LOCAL 128 /* the documented default of mn_ask_params.local */

static const char *bin(void) {
    const char *b = getenv("MNEMO_BIN");
    return b ? b : "./build/mnemo";
}

typedef struct {
    int calls, stop_at;
    int64_t last_done, last_total;
    int monotonic;
} prog;

static int on_progress(void *user, int64_t done, int64_t total) {
    prog *p = user;
    if (done < p->last_done) p->monotonic = 0;
    p->last_done = done, p->last_total = total;
    return ++p->calls >= p->stop_at && p->stop_at > 0;
}

typedef struct {
    char text[8192];
    size_t n;
    int pieces, stop_after;
} texts;

static int on_text(void *user, const char *t, size_t len) {
    texts *x = user;
    if (x->n + len < sizeof x->text) memcpy(x->text + x->n, t, len), x->n += len, x->text[x->n] = 0;
    return ++x->pieces >= x->stop_after && x->stop_after > 0;
}

/* streamed chunks: the "content" / "text" strings joined (no escapes in these answers' checks) */
typedef struct {
    char joined[8192];
    size_t n;
    int chunks, finish_seen, stop_after;
} chunks;

static int on_chunk(void *user, const char *json) {
    chunks *c = user;
    c->chunks++;
    if (strstr(json, "\"finish_reason\":\"stop\"") || strstr(json, "\"finish_reason\":\"length\"")) c->finish_seen++;
    const char *k = strstr(json, "\"content\":\"");
    if (!k) k = strstr(json, "\"text\":\"");
    if (k) {
        k = strchr(k, ':') + 2;
        for (; *k && *k != '"' && c->n + 1 < sizeof c->joined; k++) {
            if (*k == '\\' && k[1]) k++;
            c->joined[c->n++] = *k;
        }
        c->joined[c->n] = 0;
    }
    return c->stop_after > 0 && c->chunks >= c->stop_after;
}

/* the unescaped value of "content" or "text" in a whole response */
static void answer_of(const char *json, char *out, size_t cap) {
    chunks c = {0};
    on_chunk(&c, json);
    snprintf(out, cap, "%s", c.joined);
}

int main(int argc, char **argv) {
    /* as the CLI does (mnemo.h: mn_blas_core_advice): OpenBLAS on the kernels the CPU allows, so the memory
     * read here and the one `mnemo compress` writes are computed alike */
    const char *want = getenv("OPENBLAS_CORETYPE") ? NULL : mn_blas_core_advice();
    if (want && argc > 0) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        execv("/proc/self/exe", argv);
    }
    const char *mp = test_model_path();
    if (!mp) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    const char *adp = "adapters/SmolLM2-135M-Instruct.uio.gguf";
    if (access(adp, R_OK)) {
        CHECK(0, "the shipped adapter %s is missing", adp);
        TEST_MAIN_END();
    }
    const int san = getenv("MN_SANITIZED") != NULL;
    char dir[] = "/tmp/mnemo-api-XXXXXX", path[256], mem_cli[256], mem_api[256], cmd[1024], adp_san[256];
    if (!mkdtemp(dir)) return 1;
    /* a text of a few thousand tokens: sinks, compressed segments, the raw recent window. The sanitized build
     * reads a shorter one with the shipped adapter set to 1 raw segment (a copy that the CLI reads too): the same
     * parts, the same checks, in fewer tokens */
    if (san) {
        snprintf(adp_san, sizeof adp_san, "%s/recent1.gguf", dir);
        snprintf(cmd, sizeof cmd, "%s adapter set -m %s %s --recent 1 -o %s >/dev/null 2>&1", bin(), mp, adp, adp_san);
        CHECK(system(cmd) == 0, "adapter set --recent 1");
        adp = adp_san;
    }
    const size_t text_bytes = san ? 5000 : 20000, short_bytes = san ? 2000 : 4000;
    const int64_t min_tokens = san ? 1200 : 2600;
    mn_model *m = NULL;
    mn_adapter *a = NULL;
    CHECK(mn_model_load(mp, &m) == 0, "model: %s", mn_last_error());
    CHECK(mn_adapter_load(m, adp, &a) == 0, "adapter: %s", mn_last_error());
    if (!m || !a) TEST_MAIN_END();

    snprintf(path, sizeof path, "%s/doc.txt", dir);
    snprintf(mem_cli, sizeof mem_cli, "%s/cli.mem", dir);
    snprintf(mem_api, sizeof mem_api, "%s/api.mem", dir);
    FILE *f = fopen("data/train/books/pg1082.txt", "rb");
    static char text[1 << 16];
    size_t len = f ? fread(text, 1, text_bytes, f) : 0;
    if (f) fclose(f);
    text[len] = 0;
    CHECK(len == text_bytes, "training text read: %zu bytes", len);
    f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);

    /* 1. read with progress */
    prog p = {0, 0, 0, 0, 1};
    mn_doc *d = NULL;
    int rc = mn_doc_read(m, a, text, len, 1, 2, on_progress, &p, &d);
    CHECK(rc == 0 && d, "doc read: %s", mn_last_error());
    mn_doc_info info;
    mn_doc_get_info(d, &info);
    CHECK(info.tokens > min_tokens && info.memory_slots > 0 && info.raw_cells > 0 && info.exact_tokens > 0 &&
              info.kv_cells == info.memory_slots + info.raw_cells && info.exact_segments > 0,
          "info: %lld tokens, %d slots, %d raw, %lld cells, %d exact in %d segments", (long long)info.tokens,
          info.memory_slots, info.raw_cells, (long long)info.kv_cells, info.exact_tokens, info.exact_segments);
    CHECK(p.calls >= 1 && p.monotonic && p.last_done == p.last_total && p.last_total == info.tokens,
          "progress: %d calls, last %lld of %lld (tokens %lld)", p.calls, (long long)p.last_done,
          (long long)p.last_total, (long long)info.tokens);
    /* a stop asked by the progress callback: MN_ECANCELLED and no document */
    prog stop = {0, 1, 0, 0, 1};
    mn_doc *d2 = (mn_doc *)1;
    CHECK(mn_doc_read(m, a, text, len, 1, 2, on_progress, &stop, &d2) == MN_ECANCELLED && d2 == NULL,
          "stopped read: %s", mn_last_error());
    /* no text */
    CHECK(mn_doc_read(m, a, "", 0, 1, 2, NULL, NULL, &d2) == MN_EINVAL && strstr(mn_last_error(), "no text"),
          "empty text: %s", mn_last_error());
    /* without the exact part */
    CHECK(mn_doc_read(m, a, text, short_bytes, 0, 2, NULL, NULL, &d2) == 0, "read without exact: %s", mn_last_error());
    mn_doc_info i2;
    mn_doc_get_info(d2, &i2);
    CHECK(i2.exact_tokens == 0 && i2.exact_segments == 0, "exact 0 keeps no exact part (%d)", i2.exact_tokens);
    mn_doc_free(d2);
    CHECK(mn_doc_read(m, a, text, short_bytes, 3, 2, NULL, NULL, &d2) == MN_EINVAL && d2 == NULL &&
              strstr(mn_last_error(), "exact"),
          "an unknown exact form: %s", mn_last_error());
    /* with the cells (--exact kv): their bytes in the info, a version-4 file that loads with them, an answer */
    CHECK(mn_doc_read(m, a, text, len, MN_DOC_EXACT_KV, 2, NULL, NULL, &d2) == 0, "read kv: %s", mn_last_error());
    mn_doc_get_info(d2, &i2);
    CHECK(i2.exact_tokens > 0 && i2.exact_cell_bytes == (int64_t)i2.exact_tokens * (int64_t)mn_kvstore_cell_bytes(m),
          "kv keeps %d exact tokens' cells (%lld bytes)", i2.exact_tokens, (long long)i2.exact_cell_bytes);
    {
        char kvpath[300];
        snprintf(kvpath, sizeof kvpath, "%s/kv.mem", dir);
        mn_doc *lk = NULL;
        CHECK(mn_doc_save(d2, kvpath, NULL, 0) == 0 && mn_doc_load(m, a, kvpath, &lk) == 0, "kv save/load: %s",
              mn_last_error());
        mn_doc_info ik;
        mn_doc_get_info(lk, &ik);
        CHECK(ik.exact_cell_bytes == i2.exact_cell_bytes, "loaded with its cells (%lld)", (long long)ik.exact_cell_bytes);
        mn_ask_params kp = mn_ask_default_params();
        kp.max_tokens = 4, kp.n_threads = 2;
        mn_ask_stats ks;
        char *kans = NULL;
        CHECK(lk && mn_doc_ask(lk, "What is this about?", &kp, NULL, NULL, &kans, &ks) == 0 && kans && ks.recalled > 0,
              "asked with the cells paged: %s (%d paged)", mn_last_error(), ks.recalled);
        free(kans);
        mn_doc_free(lk);
    }
    mn_doc_free(d2);

    /* 2. save and load; the memory equals the one `mnemo compress` writes for the file */
    CHECK(mn_doc_save(d, mem_api, "doc", 0) == 0, "save: %s", mn_last_error());
    snprintf(cmd, sizeof cmd, "%s compress -m %s -a %s -f %s -o %s -t 2 2>/dev/null", bin(), mp, adp, path, mem_cli);
    CHECK(system(cmd) == 0, "mnemo compress");
    mn_doc *la = NULL, *lc = NULL;
    CHECK(mn_doc_load(m, a, mem_api, &la) == 0 && mn_doc_load(m, a, mem_cli, &lc) == 0, "load: %s", mn_last_error());
    char ga[65] = "", gc[65] = "", gd[65] = "";
    if (la && lc) {
        mn_doc_digest(la, ga), mn_doc_digest(lc, gc), mn_doc_digest(d, gd);
        CHECK(strlen(ga) == 64 && !strcmp(ga, gc), "the API's memory file equals the CLI's: %s vs %s", ga, gc);
        CHECK(strcmp(ga, gd) != 0, "f16 on disk differs from the f32 read (digest of the values)");
        mn_doc_info il;
        mn_doc_get_info(la, &il);
        CHECK(il.tokens == info.tokens && il.memory_slots == info.memory_slots && il.exact_tokens == info.exact_tokens,
              "loaded info");
    }
    /* a truncated file and another adapter are refused with a message */
    snprintf(cmd, sizeof cmd, "head -c 4000 %s > %s/trunc.mem", mem_api, dir);
    CHECK(system(cmd) == 0, "truncate");
    snprintf(cmd, sizeof cmd, "%s/trunc.mem", dir);
    CHECK(mn_doc_load(m, a, cmd, &d2) != 0 && d2 == NULL && *mn_last_error(), "truncated file: %s", mn_last_error());
    snprintf(cmd, sizeof cmd,
             "%s adapter init -m %s --compressor uio --segment 128 --ratio 8 --rank 4 --recent 1 -o %s/other.gguf "
             ">/dev/null 2>&1",
             bin(), mp, dir);
    CHECK(system(cmd) == 0, "adapter init");
    snprintf(cmd, sizeof cmd, "%s/other.gguf", dir);
    mn_adapter *other = NULL;
    CHECK(mn_adapter_load(m, cmd, &other) == 0, "other adapter: %s", mn_last_error());
    if (other) {
        CHECK(mn_doc_load(m, other, mem_api, &d2) != 0 && d2 == NULL && strstr(mn_last_error(), "adapter"),
              "a memory file of another adapter: %s", mn_last_error());
        mn_adapter_free(other);
    }

    /* 3. ask: the answer whole and in pieces agree; a stop from the text callback */
    mn_ask_params ap = mn_ask_default_params();
    ap.max_tokens = 24, ap.n_threads = 2;
    char *ans = NULL;
    mn_ask_stats st;
    texts tx = {{0}, 0, 0, 0};
    if (la) {
        rc = mn_doc_ask(la, "Who is the author of this book?", &ap, on_text, &tx, &ans, &st);
        CHECK(rc == 0 && ans && *ans && !strcmp(ans, tx.text), "ask: rc %d %s / '%s' vs pieces '%s'", rc,
              rc ? mn_last_error() : "", ans ? ans : "", tx.text);
        /* the cells: the memory, the paged segments, then the raw window's newest tokens (the default local), the
         * question and the answer, fewer than the whole raw window */
        CHECK(st.completion_tokens > 0 && st.completion_tokens <= 24 &&
                  st.kv_cells > info.memory_slots + st.recalled_cells + st.completion_tokens &&
                  st.kv_cells < info.kv_cells + st.recalled_cells && st.recalled > 0 && st.recalled_cells > 0,
              "ask stats: %lld tokens, %lld cells, %d recalled (%d cells)", (long long)st.completion_tokens,
              (long long)st.kv_cells, st.recalled, st.recalled_cells);
        /* the same answer as `mnemo ask --mem` (greedy) */
        char *ans0 = ans;
        snprintf(cmd, sizeof cmd, "%s ask -m %s -a %s --mem %s -n 24 -t 2 -q \"Who is the author of this book?\" 2>/dev/null",
                 bin(), mp, adp, mem_api);
        FILE *pp = popen(cmd, "r");
        char cli_ans[4096] = "";
        size_t got = pp ? fread(cli_ans, 1, sizeof cli_ans - 1, pp) : 0;
        if (pp) pclose(pp);
        cli_ans[got] = 0;
        if (got && cli_ans[got - 1] == '\n') cli_ans[got - 1] = 0;
        CHECK(!strcmp(cli_ans, ans0), "the API answers as `ask --mem`: '%s' vs '%s'", ans0, cli_ans);
        free(ans0);
        /* local 0: the whole raw window beside the same paged segments, as many more cells as the window
         * holds beyond the default's newest tokens (the raw cells also count the sinks, which both keep) */
        mn_ask_stats st0;
        ap.local = 0;
        CHECK(mn_doc_ask(la, "Who is the author of this book?", &ap, NULL, NULL, &ans, &st0) == 0 &&
                  st0.recalled == st.recalled && st0.recalled_cells == st.recalled_cells &&
                  (st0.kv_cells - st0.completion_tokens) - (st.kv_cells - st.completion_tokens) <=
                      info.raw_cells - MN_TEST_LOCAL &&
                  (st0.kv_cells - st0.completion_tokens) - (st.kv_cells - st.completion_tokens) >
                      info.raw_cells - MN_TEST_LOCAL - 16,
              "local 0 keeps the whole window: %lld cells (%d recalled, %lld answer) vs %lld (%d, %lld); raw %d",
              (long long)st0.kv_cells, st0.recalled_cells, (long long)st0.completion_tokens, (long long)st.kv_cells,
              st.recalled_cells, (long long)st.completion_tokens, info.raw_cells);
        free(ans);
        ap.local = -1;
        CHECK(mn_doc_ask(la, "x", &ap, NULL, NULL, &ans, NULL) == MN_EINVAL && strstr(mn_last_error(), "local"),
              "local -1 refused: %s", mn_last_error());
        ap.local = mn_ask_default_params().local;
        CHECK(ap.local == MN_TEST_LOCAL, "the default local is %d", ap.local);
        ap.recall = 0;
        CHECK(mn_doc_ask(la, "Who is the author of this book?", &ap, NULL, NULL, &ans, &st) == 0 && st.recalled == 0,
              "recall 0 pages nothing: %s", mn_last_error());
        free(ans);
        texts halt = {{0}, 0, 0, 2};
        CHECK(mn_doc_ask(la, "Tell me about the book.", &ap, on_text, &halt, &ans, NULL) == MN_ECANCELLED && !ans &&
                  halt.pieces == 2,
              "a stop from the text callback: %s", mn_last_error());
        ap.recall = 99;
        CHECK(mn_doc_ask(la, "x", &ap, NULL, NULL, &ans, NULL) == MN_EINVAL, "recall 99 refused");
    }
    mn_doc_free(la), mn_doc_free(lc), mn_doc_free(d);

    /* 4. requests answered in process: chat and completion as the server answers them */
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 1024, cp.n_threads = 2;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context: %s", mn_last_error());
    if (c) {
        const char *req = "{\"messages\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}], \"max_tokens\": 12}";
        char *resp = NULL, whole[8192];
        rc = mn_request_chat(c, "test-model", req, strlen(req), NULL, NULL, &resp);
        CHECK(rc == 0 && resp && strstr(resp, "\"object\":\"chat.completion\"") && strstr(resp, "\"model\":\"test-model\"") &&
                  strstr(resp, "\"usage\"") && strstr(resp, "\"id\":\"chatcmpl-"),
              "chat response: %s", resp ? resp : mn_last_error());
        answer_of(resp ? resp : "", whole, sizeof whole);
        free(resp);
        const char *sreq = "{\"messages\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}], \"max_tokens\": 12, "
                           "\"stream\": true, \"stream_options\": {\"include_usage\": true}}";
        chunks ch = {{0}, 0, 0, 0, 0};
        resp = (char *)1;
        rc = mn_request_chat(c, "test-model", sreq, strlen(sreq), on_chunk, &ch, &resp);
        CHECK(rc == 0 && resp == NULL && ch.chunks >= 3 && ch.finish_seen == 1, "stream: rc %d, %d chunks, finish %d",
              rc, ch.chunks, ch.finish_seen);
        CHECK(*whole && !strcmp(ch.joined, whole), "streamed chunks add up to the answer: '%s' vs '%s'", ch.joined,
              whole);
        chunks early = {{0}, 0, 0, 0, 2};
        CHECK(mn_request_chat(c, NULL, sreq, strlen(sreq), on_chunk, &early, NULL) == MN_ECANCELLED && early.chunks == 2,
              "a stop from the chunk callback: %s", mn_last_error());
        const char *creq = "{\"prompt\": \"The capital of France is\", \"max_tokens\": 6}";
        rc = mn_request_completion(c, "test-model", creq, strlen(creq), NULL, NULL, &resp);
        CHECK(rc == 0 && resp && strstr(resp, "\"object\":\"text_completion\"") && strstr(resp, "\"text\":"),
              "completion: %s", resp ? resp : mn_last_error());
        free(resp);
        /* bad requests: the 400's message */
        CHECK(mn_request_chat(c, NULL, "{\"messages\": 3}", 15, NULL, NULL, &resp) == MN_EINVAL && !resp &&
                  strstr(mn_last_error(), "messages"),
              "bad messages: %s", mn_last_error());
        CHECK(mn_request_chat(c, NULL, "{nope", 5, NULL, NULL, &resp) == MN_EINVAL && *mn_last_error(), "bad JSON: %s",
              mn_last_error());
        const char *dreq = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"mnemo\": {\"documents\": [1]}}";
        CHECK(mn_request_chat(c, NULL, dreq, strlen(dreq), NULL, NULL, &resp) == MN_EINVAL &&
                  strstr(mn_last_error(), "store"),
              "documents without a store: %s", mn_last_error());
        CHECK(mn_request_chat(c, NULL, sreq, strlen(sreq), NULL, NULL, &resp) == MN_EINVAL, "stream without callback");
        mn_context_free(c);
    }
    mn_adapter_free(a);
    mn_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
