/* test_docstore.c - a document store through the public API (mnemo.h's
 * mn_docstore_*): add (a repeat costs only its hash), list and get in the
 * server's JSON shapes with every memory part named, query ranking the right
 * document first, ask answering from retrieved or named documents and citing
 * them, the same answer as `mnemo store ask`, a stop from the text callback,
 * remove deleting the memory file, a store without an adapter refused with a
 * message, the recorded adapter used on reopening, and two threads asking
 * through one handle. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "test.h"
#include "mnemo.h"

static const char *bin(void) {
    const char *b = getenv("MNEMO_BIN");
    return b ? b : "./build/mnemo";
}

static const char *const k_docs[][2] = {
    {"volcano", "Volcanoes form where magma from the mantle rises through the crust. An eruption throws out lava, ash "
                "and volcanic bombs; pyroclastic flows race down the slopes of the volcano. When the magma chamber "
                "empties, the summit can collapse into a caldera."},
    {"chess", "A game of chess starts with sixteen pieces per player: a king, a queen, two rooks, two bishops, two "
              "knights and eight pawns. Checkmate, when the king is attacked and cannot escape, ends the game."},
};
static const char *const k_chess_q = "Which pieces does a chess player start with, and what ends the game?";

static int n_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int64_t json_int(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -999;
}

typedef struct {
    int pieces, stop_after;
} stopper;

static int on_text(void *user, const char *t, size_t len) {
    stopper *s = user;
    (void)t, (void)len;
    return ++s->pieces >= s->stop_after;
}

typedef struct {
    mn_docstore *ds;
    int64_t id;
    int rc;
    char *answer;
} asker;

static void *ask_thread(void *arg) {
    asker *a = arg;
    mn_ask_params p = mn_ask_default_params();
    p.max_tokens = 6;
    p.n_threads = 1;
    a->rc = mn_docstore_ask(a->ds, k_chess_q, &a->id, 1, 1, &p, NULL, NULL, &a->answer, NULL, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    /* as the CLI does: OpenBLAS on the kernels the CPU allows, so the CLI's answer is computed alike */
    const char *want = getenv("OPENBLAS_CORETYPE") ? NULL : mn_blas_core_advice();
    if (want && argc > 0) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        execv("/proc/self/exe", argv);
    }
    const char *mp = test_model_path(), *adp = "adapters/SmolLM2-135M-Instruct.uio.gguf";
    if (!mp || access(adp, R_OK)) {
        CHECK(0, "the default model and the shipped adapter (make model) are missing");
        TEST_MAIN_END();
    }
    char dir[] = "/tmp/mnemo-docstore-XXXXXX", db[256], memdir[300], cmd[2048];
    if (!mkdtemp(dir)) return 1;
    snprintf(db, sizeof db, "%s/s.db", dir);
    snprintf(memdir, sizeof memdir, "%s.mem", db);
    mn_model *m = NULL;
    CHECK(mn_model_load(mp, &m) == 0, "model: %s", mn_last_error());
    if (!m) TEST_MAIN_END();

    /* a new store without any adapter: add says what is missing, nothing is stored */
    char db0[300];
    snprintf(db0, sizeof db0, "%s/none.db", dir);
    mn_docstore *ds = NULL;
    char *json = NULL;
    CHECK(mn_docstore_open(db0, m, NULL, NULL, 2, &ds) == 0, "open without adapter: %s", mn_last_error());
    CHECK(mn_docstore_add(ds, "some text", 9, "t", NULL, NULL, &json) == MN_EINVAL && !json &&
              strstr(mn_last_error(), "adapter"),
          "add without an adapter refused: %s", mn_last_error());
    CHECK(mn_docstore_list(ds, &json) == 0 && json && !strcmp(json, "[]"), "nothing stored: %s", json ? json : "");
    mn_free(json), json = NULL;
    mn_docstore_close(ds), ds = NULL;

    /* the fallback adapter, recorded by the first add */
    CHECK(mn_docstore_open(db, m, NULL, adp, 2, &ds) == 0, "open: %s", mn_last_error());
    if (!ds) TEST_MAIN_END();
    /* every document keeps its exact part: ids (the default) or also the cells; "none" is not a store's form */
    CHECK(mn_docstore_set_exact(ds, MN_DOC_EXACT_NONE) == MN_EINVAL && strstr(mn_last_error(), "MN_DOC_EXACT_KV") &&
              mn_docstore_set_exact(ds, 7) == MN_EINVAL && mn_docstore_set_exact(NULL, MN_DOC_EXACT_KV) == MN_EINVAL &&
              mn_docstore_set_exact(ds, MN_DOC_EXACT_TOKENS) == 0,
          "set exact: %s", mn_last_error());
    int64_t ids[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        const char *t = k_docs[i][1];
        CHECK(mn_docstore_add(ds, t, strlen(t), k_docs[i][0], NULL, i ? "games" : NULL, &json) == 0 && json,
              "add %s: %s", k_docs[i][0], mn_last_error());
        cJSON *o = json ? cJSON_Parse(json) : NULL;
        ids[i] = json_int(o, "id");
        const int64_t slots = json_int(o, "memory_slots"), raw = json_int(o, "raw_cells"), cells = json_int(o, "kv_cells");
        CHECK(ids[i] > 0 && json_int(o, "tokens") > 20 && slots >= 0 && raw > 0 && cells == slots + raw &&
                  cJSON_IsFalse(cJSON_GetObjectItem(o, "existed")) &&
                  cJSON_IsString(cJSON_GetObjectItem(o, "exact")) &&
                  !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "group")), i ? "games" : "default"),
              "the added document named part by part: %s", json ? json : "");
        cJSON_Delete(o);
        mn_free(json), json = NULL;
    }
    const char *t = k_docs[1][1];
    CHECK(mn_docstore_add(ds, t, strlen(t), "again", NULL, NULL, &json) == 0 && json &&
              strstr(json, "\"existed\":true"),
          "a repeated text exists: %s", json ? json : mn_last_error());
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    CHECK(json_int(o, "id") == ids[1], "the same id (%lld vs %lld)", (long long)json_int(o, "id"), (long long)ids[1]);
    cJSON_Delete(o);
    mn_free(json), json = NULL;
    CHECK(mn_docstore_add(ds, "bad\xff", 4, "bad", NULL, NULL, &json) == MN_EINVAL && !json,
          "text that is not UTF-8 refused: %s", mn_last_error());
    CHECK(n_files(memdir) == 2, "one memory file per document (%d)", n_files(memdir));

    /* list and get: the server's document objects */
    CHECK(mn_docstore_list(ds, &json) == 0 && json, "list: %s", mn_last_error());
    cJSON *arr = json ? cJSON_Parse(json) : NULL;
    CHECK(cJSON_GetArraySize(arr) == 2 && json_int(cJSON_GetArrayItem(arr, 0), "id") == ids[0] &&
              json_int(cJSON_GetArrayItem(arr, 1), "id") == ids[1] &&
              json_int(cJSON_GetArrayItem(arr, 1), "kv_cells") > 0 &&
              cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "sha256")) &&
              strlen(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "sha256"))) == 64,
          "two documents listed by id: %s", json ? json : "");
    cJSON_Delete(arr);
    mn_free(json), json = NULL;
    CHECK(mn_docstore_get(ds, ids[1], &json) == 0 && json && strstr(json, "\"title\":\"chess\""), "get: %s",
          json ? json : mn_last_error());
    mn_free(json), json = NULL;
    CHECK(mn_docstore_get(ds, 9999, &json) == MN_ENOTFOUND && !json, "unknown id: %s", mn_last_error());

    /* query: the chess text ranks first for a chess question */
    CHECK(mn_docstore_query(ds, k_chess_q, 2, &json) == 0 && json, "query: %s", mn_last_error());
    arr = json ? cJSON_Parse(json) : NULL;
    const cJSON *top = cJSON_GetArrayItem(arr, 0);
    CHECK(cJSON_GetArraySize(arr) >= 1 && json_int(top, "id") == ids[1] && json_int(top, "bm25_rank") == 1,
          "the chess text first: %s", json ? json : "");
    cJSON_Delete(arr);
    mn_free(json), json = NULL;
    CHECK(mn_docstore_query(ds, k_chess_q, 0, &json) == MN_EINVAL && !json, "k 0 refused: %s", mn_last_error());

    /* ask from the retrieved best document, citing it, as `mnemo store ask -k 1` answers */
    mn_ask_params p = mn_ask_default_params();
    p.max_tokens = 8;
    char *ans = NULL, *src = NULL;
    mn_ask_stats st;
    CHECK(mn_docstore_ask(ds, k_chess_q, NULL, 0, 1, &p, NULL, NULL, &ans, &src, &st) == 0 && ans && *ans && src,
          "ask: %s", mn_last_error());
    arr = src ? cJSON_Parse(src) : NULL;
    CHECK(cJSON_GetArraySize(arr) == 1 && json_int(cJSON_GetArrayItem(arr, 0), "id") == ids[1],
          "the source is the chess text: %s", src ? src : "");
    cJSON_Delete(arr);
    CHECK(st.completion_tokens > 0 && st.completion_tokens <= 8 && st.prompt_tokens > 0 &&
              st.kv_cells >= st.prompt_tokens + st.completion_tokens - 1,
          "stats: %lld prompt, %lld answer tokens, %lld cells", (long long)st.prompt_tokens,
          (long long)st.completion_tokens, (long long)st.kv_cells);
    snprintf(cmd, sizeof cmd, "%s store ask --db %s -m %s -k 1 -n 8 -q '%s' 2>/dev/null", bin(), db, mp, k_chess_q);
    FILE *f = popen(cmd, "r");
    char cli[4096] = "";
    size_t got = f ? fread(cli, 1, sizeof cli - 1, f) : 0;
    cli[got] = 0;
    CHECK(f && pclose(f) == 0, "mnemo store ask ran");
    char *nl = strstr(cli, "\n\nSources:");
    if (nl) *nl = 0;
    CHECK(ans && !strcmp(cli, ans), "the API answers as the CLI: '%s' vs '%s'", ans ? ans : "", cli);
    mn_free(ans), mn_free(src), ans = src = NULL;

    /* named documents, a stop, bad parameters */
    CHECK(mn_docstore_ask(ds, k_chess_q, &ids[0], 1, 1, &p, NULL, NULL, &ans, &src, NULL) == 0 && src &&
              strstr(src, "\"title\":\"volcano\"") && !strstr(src, "chess"),
          "a named document answers: %s", src ? src : mn_last_error());
    mn_free(ans), mn_free(src), ans = src = NULL;
    stopper sp = {0, 2};
    CHECK(mn_docstore_ask(ds, k_chess_q, NULL, 0, 1, &p, on_text, &sp, &ans, &src, NULL) == MN_ECANCELLED && !ans &&
              !src && sp.pieces == 2,
          "a stop from the callback: rc, %d pieces", sp.pieces);
    const int64_t gone = 4242;
    CHECK(mn_docstore_ask(ds, k_chess_q, &gone, 1, 1, &p, NULL, NULL, &ans, NULL, NULL) == MN_ENOTFOUND && !ans,
          "an unknown document named: %s", mn_last_error());
    p.recall = 99;
    CHECK(mn_docstore_ask(ds, k_chess_q, NULL, 0, 1, &p, NULL, NULL, &ans, NULL, NULL) == MN_EINVAL, "recall 99 refused");
    p.recall = -1; /* auto */

    /* two threads through one handle: their calls take turns, both answer alike */
    asker th[2] = {{ds, ids[1], -1, NULL}, {ds, ids[1], -1, NULL}};
    pthread_t pt[2];
    for (int i = 0; i < 2; i++) pthread_create(&pt[i], NULL, ask_thread, &th[i]);
    for (int i = 0; i < 2; i++) pthread_join(pt[i], NULL);
    CHECK(th[0].rc == 0 && th[1].rc == 0 && th[0].answer && th[1].answer && !strcmp(th[0].answer, th[1].answer),
          "two threads: rc %d %d, '%s' vs '%s'", th[0].rc, th[1].rc, th[0].answer ? th[0].answer : "",
          th[1].answer ? th[1].answer : "");
    mn_free(th[0].answer), mn_free(th[1].answer);

    /* remove: the document and its memory file go */
    CHECK(mn_docstore_remove(ds, ids[0]) == 0, "remove: %s", mn_last_error());
    CHECK(mn_docstore_remove(ds, ids[0]) == MN_ENOTFOUND, "removed twice: %s", mn_last_error());
    CHECK(n_files(memdir) == 1, "its memory file deleted (%d left)", n_files(memdir));
    mn_docstore_close(ds), ds = NULL;

    /* reopened with nothing given: the recorded adapter answers */
    CHECK(mn_docstore_open(db, m, NULL, NULL, 2, &ds) == 0, "reopen: %s", mn_last_error());
    CHECK(ds && mn_docstore_list(ds, &json) == 0 && json && strstr(json, "\"title\":\"chess\"") &&
              !strstr(json, "volcano"),
          "one document left: %s", json ? json : "");
    mn_free(json), json = NULL;
    CHECK(ds && mn_docstore_ask(ds, k_chess_q, NULL, 0, 1, &p, NULL, NULL, &ans, NULL, NULL) == 0 && ans && *ans,
          "the recorded adapter answers: %s", mn_last_error());
    mn_free(ans), ans = NULL;
    mn_docstore_close(ds), ds = NULL;
    /* a file that is no store */
    snprintf(cmd, sizeof cmd, "%s/junk.db", dir);
    f = fopen(cmd, "w");
    if (f) fputs("not a database at all, just text that is long enough to be read", f), fclose(f);
    CHECK(mn_docstore_open(cmd, m, NULL, adp, 2, &ds) != 0 && !ds && *mn_last_error(), "junk store refused: %s",
          mn_last_error());
    mn_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
