/* fuzz_ingest.c - libFuzzer target for the store's ingest of arbitrary text
 * (store/ingest.h: tokenize, chunk, embed, compress, write the memory file,
 * one transaction) into a SQLite store, with a tiny model and UIO adapter
 * written at start-up, and for full-text search with the same bytes as the
 * query (the FTS5 query built from free text). Seeds in
 * tests/fuzz/corpus/ingest/.
 *
 * Every input is stored or refused with a message. A stored document reads
 * back as exactly the text given, has its memory file (verified against the
 * store's checksum), is found again as the same id by the same text, and is
 * removed with its file, leaving the store consistent.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "memory/adapter.h"
#include "store/ingest.h"
#include "store/store.h"
#include "tiny_llama.h"

static mn_model *g_model;
static mn_adapter *g_adapter;
static mn_store *g_store;
static char g_db[64]; /* left behind at exit (libFuzzer ends with _Exit): the Makefile removes them */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char mp[64], *db = g_db;
    snprintf(mp, sizeof mp, "/tmp/mnemo-fuzz-ingest-%d.gguf", (int)getpid());
    /* on tmpfs where there is one: each input commits three transactions, and fsync there is free */
    snprintf(db, sizeof g_db, "%s/mnemo-fuzz-ingest-%d.db", access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm",
             (int)getpid());
    tiny_llama cfg = {.n_embd = 32, .n_head = 4, .n_head_kv = 2, .n_ff = 48, .n_layer = 2, .n_ctx = 256, .seed = 5};
    if (tiny_llama_write(&cfg, mp) || mn_model_load(mp, &g_model)) abort();
    unlink(mp);
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    p.segment = 32, p.ratio = 8, p.rank = 4, p.alpha = 8, p.ratios[0] = 8, p.n_ratios = 1, p.seed = 1;
    if (mn_adapter_init(g_model, &p, &g_adapter)) abort();
    if (mn_store_open(db, MN_STORE_CREATE, &g_store)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1); /* exact size: ASan flags reads past the end */
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    mn_ingest_doc d = {"fuzz", "fuzz", NULL, text, size};
    mn_ingest_result r;
    if (mn_ingest(g_store, NULL, g_model, g_adapter, &d, 1, &r)) {
        if (!mn_last_error()[0]) abort(); /* refusals say why */
    } else {
        if (r.id < 1 || r.existed || r.n_tokens < 1 || r.n_chunks < 1) abort();
        char *back = NULL;
        size_t bl = 0;
        if (mn_store_chunk_text(g_store, r.id, &back, &bl) || bl != size || memcmp(back, data, size)) abort();
        free(back);
        char rep[256];
        if (mn_store_verify_files(g_store, rep, sizeof rep)) abort();
        mn_ingest_result again;
        if (mn_ingest(g_store, NULL, g_model, g_adapter, &d, 1, &again) || !again.existed || again.id != r.id) abort();
    }
    /* the same bytes as a search query: any text is a valid query */
    char *q = malloc(size + 1);
    if (!q) abort();
    memcpy(q, data, size);
    q[size] = 0;
    mn_store_hit hits[4];
    int n = -1;
    if (mn_store_search_bm25(g_store, q, NULL, 4, hits, &n) || n < 0 || n > 4) abort();
    free(q);
    mn_store_doc *docs = NULL;
    int64_t nd = 0;
    if (mn_store_list(g_store, 0, &docs, &nd)) abort();
    for (int64_t i = 0; i < nd; i++) { /* leave the store empty for the next input */
        char files[1024];
        if (mn_store_remove(g_store, docs[i].id, files, sizeof files)) abort();
        for (char *f = strtok(files, "\n"); f; f = strtok(NULL, "\n")) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", mn_store_mem_dir(g_store), f);
            if (unlink(p)) abort(); /* every recorded file existed */
        }
    }
    free(docs);
    free(text);
    return 0;
}
