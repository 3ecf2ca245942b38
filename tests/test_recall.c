/* test_recall.c - exact recall beside the compressed memory (memory/recall.h).
 *
 * Scorers on constructed indexes, where the right answer is known: BM25 finds
 * the one segment holding a rare word whatever its case or leading space, the
 * key scorers find the segment whose keys point along the query's queries.
 * Then the real thing, the default model with the shipped UIO adapter: a text
 * with a pass key in a segment that has left the raw window; each scorer is
 * asked to page 2 segments for the question, and the stream's cache must then
 * hold [sinks | memory | paged | recent raw], positions contiguous; a memory
 * file keeps the exact part (format version 3), reads back equal, is refused
 * when truncated or corrupt, and without it (--exact none) stays version 2
 * and primes with recall off. A shorter raw window beside the paged text
 * (local) keeps only the newest tokens, with the logits of a cache built by
 * hand, and what it drops can be paged back (a question quoting it pages its
 * segment; the key scorers, without keys for it, do not); the evaluation's RAG
 * baseline picks the chunk with the pass key,
 * within its budget, in document order. With --exact kv (kvstore.h) every
 * compressed segment keeps its decoder cells, the same whether a lazy stream
 * decoded them at compression or an eager one had them in its cache, and
 * recall copies them back rotated to their new positions, past the RAM budget
 * from a spill file that no folder shows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "memory/docmem.h"
#include "memory/kvstore.h"
#include "memory/memfile.h"
#include "memory/memory.h"
#include "memory/recall.h"
#include "eval/rag.h"
#include "model/forward.h"
#include "model/model.h"
#include "test.h"

static const char *k_adapter = "adapters/SmolLM2-135M-Instruct.uio.gguf";

static int32_t *tokenize(const mn_model *m, const char *s, int64_t *n) {
    const size_t len = strlen(s);
    int32_t *ids = malloc(sizeof(int32_t) * (len + 16));
    if (mn_tokenize(mn_model_tokenizer(m), s, len, 0, 0, ids, (int64_t)len + 16, n)) *n = 0;
    return ids;
}

/* --------------------------------------------------------------- scorers */

static void scorer_names(void) {
    for (int i = 0; i < MN_RECALL_N_SCORERS; i++)
        CHECK(mn_recall_scorer_parse(mn_recall_scorer_name((mn_recall_scorer)i)) == i, "scorer name %d", i);
    CHECK(mn_recall_scorer_parse("nope") == -1 && mn_recall_scorer_parse(NULL) == -1, "unknown scorer");
    CHECK(!mn_recall_scorer_needs_q(MN_RECALL_BM25) && mn_recall_scorer_needs_q(MN_RECALL_KEYS), "which need queries");
    /* auto K: 2 for a short store (8K: 24 segments), one per 16 stored, at most 8 (32K: 120 segments) */
    CHECK(mn_recall_auto_k(MN_RECALL_AUTO, 3) == 2 && mn_recall_auto_k(MN_RECALL_AUTO, 24) == 2 &&
              mn_recall_auto_k(MN_RECALL_AUTO, 48) == 3 && mn_recall_auto_k(MN_RECALL_AUTO, 120) == 8 &&
              mn_recall_auto_k(MN_RECALL_AUTO, 5000) == 8 && mn_recall_auto_k(5, 120) == 5 && mn_recall_auto_k(0, 120) == 0,
          "auto K");
    CHECK(mn_recall_max_k(MN_RECALL_AUTO) == MN_RECALL_AUTO_MAX && mn_recall_max_k(3) == 3, "most segments paged");
    int32_t k = 99;
    CHECK(mn_recall_parse_k("auto", 64, &k) == 0 && k == MN_RECALL_AUTO && mn_recall_parse_k("7", 64, &k) == 0 && k == 7 &&
              mn_recall_parse_k("65", 64, &k) == -1 && mn_recall_parse_k("-1", 64, &k) == -1 &&
              mn_recall_parse_k("2x", 64, &k) == -1 && mn_recall_parse_k(NULL, 64, &k) == -1,
          "K parsed: auto or a count");
}

/* Segments of filler, one of which (the 3rd) holds a rare word; the query
 * writes it capitalised without a leading space. */
static void bm25(const mn_model *m) {
    const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m), l = 32, M = 4;
    mn_exact *x;
    CHECK(mn_exact_create(m, l, M, &x) == 0, "create");
    float *rep = calloc((size_t)L * MN_RECALL_REP * KD, sizeof(float)), *slot = calloc((size_t)L * M * KD, sizeof(float));
    const char *texts[5] = {
        "the cat sat on the mat and looked at the garden for a while, then it slept",
        "a long road ran through the hills and the village below was quiet at night",
        "in the morning the zeppelin rose over the town while people watched",
        "she wrote a letter to her brother about the weather and the harvest",
        "the river was high after the rain and the mill wheel turned all day",
    };
    for (int s = 0; s < 5; s++) {
        int64_t n;
        int32_t *ids = tokenize(m, texts[s], &n);
        CHECK(n > 0 && n <= l, "segment %d tokenizes into %lld", s, (long long)n);
        CHECK(mn_exact_add(x, ids, (int32_t)n, s * l, rep, rep, slot, M) == 0, "add %d: %s", s, mn_last_error());
        free(ids);
    }
    CHECK(mn_exact_n(x) == 5, "5 segments");
    int64_t nq;
    int32_t *q = tokenize(m, "Zeppelin: when did it rise?", &nq);
    float sc[5];
    int32_t top[2];
    CHECK(mn_exact_score(x, MN_RECALL_BM25, NULL, q, (int32_t)nq, sc) == 0, "bm25 scores");
    CHECK(mn_exact_top(x, sc, 1, top) == 1 && top[0] == 2, "the segment with the rare word, whatever its case (%d)",
          top[0]);
    CHECK(sc[2] > 2 * sc[0] && sc[2] > 2 * sc[3], "by a clear margin (%.3f vs %.3f, %.3f)", sc[2], sc[0], sc[3]);
    /* top k: the k best, returned in document order */
    float fake[5] = {0.1f, 5, 0.2f, 4, 0.2f};
    int32_t t3[3];
    CHECK(mn_exact_top(x, fake, 3, t3) == 3, "three");
    CHECK(t3[0] == 1 && t3[1] == 2 && t3[2] == 3, "best three in document order, ties to the earlier (%d %d %d)", t3[0],
          t3[1], t3[2]);
    int32_t all[9];
    CHECK(mn_exact_top(x, fake, 9, all) == 5 && all[0] == 0 && all[4] == 4, "k past S: all of them, in order");
    int32_t bad = 1 << 30;
    CHECK(mn_exact_add(x, &bad, 1, 0, rep, rep, slot, M) == MN_EINVAL, "an id out of the vocabulary is refused");
    CHECK(mn_exact_add(x, q, l + 1, 0, rep, rep, slot, M) == MN_EINVAL, "a segment longer than l is refused");
    CHECK(mn_exact_score(x, MN_RECALL_KEYS, NULL, q, (int32_t)nq, sc) == MN_EINVAL, "keys without queries: an error");
    free(q), free(rep), free(slot);
    mn_exact_free(x);
}

/* BM25 with overlapping edges: in contiguous segments of filler, a sentence
 * cut by the boundary between segments 2 and 3 ("... secret harbour" | "code
 * ..."): both segments score it whole, the top 2 are those two and score
 * alike; the same words split across a gap (segments not adjacent in the
 * document) are not joined. */
static void bm25_overlap(const mn_model *m) {
    const int32_t l = 64, S = 6; /* overlap: a quarter of a segment, 16 tokens */
    const char *filler = " The old mill stood by the river and the wheel turned slowly in the water all day long";
    int64_t nf, nh, nt, nq;
    int32_t *f = tokenize(m, filler, &nf), *head = tokenize(m, " At dusk they spoke of the secret harbour", &nh),
            *tail = tokenize(m, " code, which nobody else knew.", &nt), *q = tokenize(m, "What was the secret harbour code?", &nq);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(S * l));
    for (int32_t i = 0; i < S * l; i++) ids[i] = f[i % nf];
    const int32_t cut = 3 * l; /* the sentence ends segment 2 and begins segment 3 */
    memcpy(ids + cut - nh, head, sizeof(int32_t) * (size_t)nh);
    memcpy(ids + cut, tail, sizeof(int32_t) * (size_t)nt);
    CHECK(nh < 16 && nt < 16, "each half within the overlap (%lld, %lld tokens)", (long long)nh, (long long)nt);
    mn_exact *x;
    CHECK(mn_exact_create_lexical(m, l, &x) == 0, "create");
    for (int32_t s = 0; s < S; s++) CHECK(mn_exact_add_text(x, ids + s * l, l, (int64_t)s * l) == 0, "add %d", s);
    float sc[8];
    int32_t top[2];
    CHECK(mn_exact_score(x, MN_RECALL_BM25, NULL, q, (int32_t)nq, sc) == 0, "scores");
    CHECK(mn_exact_top(x, sc, 2, top) == 2 && top[0] == 2 && top[1] == 3, "the two halves' segments first (%d %d)",
          top[0], top[1]);
    CHECK(sc[3] > 0.8f * sc[2] && sc[2] > 0.8f * sc[3] && sc[2] > 3 * sc[0], "both read the whole sentence: %.3f %.3f (filler %.3f)",
          sc[2], sc[3], sc[0]);
    /* segment 3 moved away from segment 2 in the document: nothing borrowed across the gap */
    mn_exact_clear(x);
    for (int32_t s = 0; s < S; s++)
        CHECK(mn_exact_add_text(x, ids + s * l, l, (int64_t)s * l + (s >= 3 ? 1000 : 0)) == 0, "add %d", s);
    CHECK(mn_exact_score(x, MN_RECALL_BM25, NULL, q, (int32_t)nq, sc) == 0, "scores");
    CHECK(sc[2] > 1.3f * sc[3], "across a gap each keeps its own half: %.3f vs %.3f", sc[2], sc[3]);
    mn_exact_free(x);
    free(f), free(head), free(tail), free(q), free(ids);
}

/* Keys: segment 3's keys point along the query's queries (per kv head, the
 * mean of its heads' queries), the others are noise of the same size. */
static void keys(const mn_model *m) {
    const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m), HD = mn_model_q_dim(m), l = 8, M = 4, nq = 3;
    const int32_t D = 64, KV = KD / D, G = HD / KD;
    CHECK(KD % D == 0 && HD % KD == 0, "head dim 64 (SmolLM2)");
    float *q = malloc(sizeof(float) * (size_t)L * nq * HD);
    uint64_t r = 12345;
#define RND() ((r = r * 6364136223846793005ull + 1442695040888963407ull), (float)((r >> 40) / 8388608.0 - 1.0))
    for (int64_t i = 0; i < (int64_t)L * nq * HD; i++) q[i] = RND();
    mn_exact *x;
    CHECK(mn_exact_create(m, l, M, &x) == 0, "create");
    const size_t re = (size_t)L * MN_RECALL_REP * KD, se = (size_t)L * M * KD;
    float *rep = malloc(sizeof(float) * re), *slot = malloc(sizeof(float) * se);
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int s = 0; s < 6; s++) {
        for (size_t i = 0; i < re; i++) rep[i] = RND();
        for (size_t i = 0; i < se; i++) slot[i] = RND();
        if (s == 3) /* one key per layer and head along the mean query of the head's group */
            for (int32_t li = 0; li < L; li++)
                for (int32_t kh = 0; kh < KV; kh++)
                    for (int32_t d = 0; d < D; d++) {
                        float a = 0;
                        for (int32_t t = 0; t < nq; t++)
                            for (int32_t g = 0; g < G; g++) a += q[((size_t)li * nq + t) * HD + (size_t)(kh * G + g) * D + d];
                        rep[((size_t)li * MN_RECALL_REP + 5) * KD + (size_t)kh * D + d] = a;
                        slot[((size_t)li * M + 2) * KD + (size_t)kh * D + d] = a;
                    }
        CHECK(mn_exact_add(x, ids, l, (int64_t)s * l, rep, rep, slot, M) == 0, "add");
    }
    for (int sc = MN_RECALL_KEYS; sc <= MN_RECALL_SLOTS; sc++) {
        float scores[6];
        int32_t top[1];
        CHECK(mn_exact_score(x, (mn_recall_scorer)sc, q, ids, nq, scores) == 0, "score");
        CHECK(mn_exact_top(x, scores, 1, top) == 1 && top[0] == 3, "%s finds the aligned segment (%d)",
              mn_recall_scorer_name((mn_recall_scorer)sc), top[0]);
        double rest = 0;
        for (int s = 0; s < 6; s++) rest += s == 3 ? 0 : scores[s];
        CHECK(scores[3] > rest, "%s: it takes most of the mass (%.2f vs %.2f)", mn_recall_scorer_name((mn_recall_scorer)sc),
              scores[3], rest);
    }
#undef RND
    free(q), free(rep), free(slot);
    mn_exact_free(x);
}

/* ------------------------------------------------------------ the real path */

/* Filler text of about n tokens from a training book, a pass key after token `at`. */
static int32_t *passkey_text(const mn_model *m, int64_t n, int64_t at, int64_t *nout, int64_t *needle_at) {
    FILE *f = fopen("data/train/books/pg1082.txt", "rb");
    if (!f) return NULL;
    static char buf[1 << 19];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    int64_t nf = 0;
    int32_t *fill = tokenize(m, buf + 30000, &nf);
    int64_t nn;
    int32_t *nd = tokenize(m, " The vault code is 48213. Remember it: 48213 opens the vault. ", &nn);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + nn));
    memcpy(ids, fill, sizeof(int32_t) * (size_t)at);
    memcpy(ids + at, nd, sizeof(int32_t) * (size_t)nn);
    memcpy(ids + at + nn, fill + at, sizeof(int32_t) * (size_t)(n - at));
    *nout = n + nn;
    *needle_at = at + nn / 2;
    free(fill), free(nd);
    return ids;
}

static void stream(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int64_t needle) {
    mn_memory_binding b;
    CHECK(mn_memory_bind(m, a, &b) == 0 && b.kind == MN_COMP_UIO && b.uio.params.recent > 0,
          "the shipped adapter is UIO with a recent window");
    const int32_t l = b.uio.params.l, K = 2;
    int64_t nq;
    int32_t *q = tokenize(m, "What is the vault code?", &nq);
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = mn_memory_n_ctx(&b, n, sp.n_sinks) + K * l + 64;
    cp.n_threads = 2;
    sp.window = cp.n_ctx;
    mn_context *c = NULL;
    mn_stream *s = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0 && mn_stream_create(c, &sp, &s) == 0 && mn_stream_attach(s, &b, 2) == 0,
          "stream");
    /* switched on after reading: an error (the segments read are gone) */
    CHECK(mn_stream_recall(s, q, (int32_t)nq) == MN_EINVAL, "recall before it is switched on: an error");
    CHECK(mn_stream_set_recall(s, MN_STREAM_RECALL_MAXK + 1, MN_RECALL_KEYS, 0) == MN_EINVAL, "k out of range");
    CHECK(mn_stream_feed(s, ids, 8, NULL, 0) == 0, "read a little");
    CHECK(mn_stream_set_recall(s, K, MN_RECALL_KEYS, 0) == MN_EINVAL, "switched on after reading: an error");
    mn_stream_reset(s);
    CHECK(mn_stream_set_recall(s, K, MN_RECALL_BM25, 0) == 0, "recall on: %s", mn_last_error());
    CHECK(mn_stream_feed(s, ids, (int32_t)n, NULL, 0) == 0, "read: %s", mn_last_error());
    const int32_t S = mn_stream_n_exact(s), cells0 = mn_kv_n_cells(c), mem = mn_stream_n_memory(s);
    CHECK(S == mem / b.uio.params.m && S >= 3, "every compressed segment stored (%d, %d slots)", S, mem);
    CHECK(needle < (int64_t)S * l, "the needle (token %lld) has left the raw window", (long long)needle);
    int32_t nl;
    {
        int64_t one;
        int32_t *t = tokenize(m, "\n", &one);
        nl = t[0];
        free(t);
    }
    float *lg = malloc(sizeof(float) * (size_t)mn_model_n_vocab(m));
    int32_t fed = 0; /* tokens fed after the text (one per scorer) */
    for (int sc = 0; sc < MN_RECALL_N_SCORERS; sc++) {
        /* once on, the scorer may change: the store stays */
        CHECK(mn_stream_set_recall(s, K, (mn_recall_scorer)sc, 0) == 0 && mn_stream_n_exact(s) == S, "scorer %d", sc);
        CHECK(mn_stream_recall(s, q, (int32_t)nq) == 0, "%s recall: %s", mn_recall_scorer_name((mn_recall_scorer)sc),
              mn_last_error());
        int64_t st[MN_STREAM_RECALL_MAXK];
        int32_t ln[MN_STREAM_RECALL_MAXK];
        const int32_t k = mn_stream_recalled(s, st, ln, MN_STREAM_RECALL_MAXK);
        int hit = 0;
        for (int32_t i = 0; i < k; i++) hit |= needle >= st[i] && needle < st[i] + ln[i];
        CHECK(k == K && st[0] < st[1], "%d segments paged, in document order", k);
        /* key scorers rank by the model's own attention: asserted where they measure well (RESULTS.md) */
        if (sc == MN_RECALL_BM25 || sc == MN_RECALL_KEYS)
            CHECK(hit, "%s pages the segment with the pass key (%lld, %lld)", mn_recall_scorer_name((mn_recall_scorer)sc),
                  (long long)st[0], (long long)st[1]);
        /* the cache: sinks and memory as before, then the paged cells; the recent window comes back with the
         * next logits, after them, positions contiguous */
        const int32_t paged = mn_stream_n_paged(s);
        CHECK(paged == K * l - (st[0] == 0 ? 4 : 0), "paged cells %d", paged);
        CHECK(mn_kv_n_cells(c) == 4 + mem + paged, "[sinks | memory | paged] (%d cells, read %d)", mn_kv_n_cells(c),
              cells0);
        CHECK(mn_stream_feed(s, &nl, 1, lg, 0) == 0, "a token after the recall");
        fed++;
        int contiguous = 1;
        for (int32_t i = 1; i < mn_kv_n_cells(c); i++) contiguous &= mn_kv_pos(c, i) == mn_kv_pos(c, i - 1) + 1;
        CHECK(contiguous, "positions contiguous through sinks, memory, paged and recent cells");
        CHECK(mn_kv_n_cells(c) == 4 + mem + paged + (int32_t)(n - (int64_t)S * l) + fed, "the recent window after them");
    }
    /* a shorter raw window beside the paged text: only the newest 16 local tokens come back */
    CHECK(mn_stream_set_recall_local(s, -1) == MN_EINVAL, "a negative raw window: an error");
    CHECK(mn_stream_set_recall_local(s, 16) == 0 && mn_stream_recall(s, q, (int32_t)nq) == 0, "recall, local 16: %s",
          mn_last_error());
    const int32_t paged = mn_stream_n_paged(s);
    CHECK(mn_stream_feed(s, &nl, 1, lg, 0) == 0, "a token after it");
    fed++;
    CHECK(mn_kv_n_cells(c) == 4 + mem + paged + 16 + 1, "[sinks | memory | paged | 16 raw | token] (%d cells)",
          mn_kv_n_cells(c));
    {
        int contiguous = 1;
        for (int32_t i = 1; i < mn_kv_n_cells(c); i++) contiguous &= mn_kv_pos(c, i) == mn_kv_pos(c, i - 1) + 1;
        CHECK(contiguous, "positions contiguous with the shorter window");
    }
    /* the same logits as a cache built by hand: [sinks | memory | paged] then the 16 tokens and the token */
    {
        const int32_t V = mn_model_n_vocab(m), nloc = (int32_t)(n - (int64_t)S * l) + fed;
        float *lg2 = malloc(sizeof(float) * (size_t)V);
        int32_t *tail = malloc(sizeof(int32_t) * 17);
        /* the local tokens: the text's raw window, then the newlines fed */
        for (int32_t i = 0; i < 17; i++) {
            const int32_t j = nloc - 17 + i;
            tail[i] = j < (int32_t)(n - (int64_t)S * l) ? ids[(int64_t)S * l + j] : nl;
        }
        CHECK(mn_kv_drop(c, 4 + mem + paged, mn_kv_n_cells(c)) == 0 && mn_decode(c, tail, 16, NULL, 0) == 0 &&
                  mn_decode(c, tail + 16, 1, lg2, 0) == 0,
              "by hand");
        float d = 0;
        for (int32_t v = 0; v < V; v++) d = fmaxf(d, fabsf(lg[v] - lg2[v]));
        CHECK(d == 0, "logits with the short window match the hand-built cache (max diff %g)", (double)d);
        free(lg2), free(tail);
    }
    /* What the short window drops can be paged back: a query that quotes the raw window's text (its tokens 10-40,
     * outside the newest 16) pages the window's segment that holds them, shorter than l where the window ends,
     * and the cache is the one built by hand from the text's ids */
    {
        const int64_t w0 = (int64_t)S * l; /* the raw window's first token in the text */
        const int32_t *wq = ids + w0 + 10;
        CHECK(n - w0 > 16 + 40, "the raw window (%lld tokens) reaches past its newest 16", (long long)(n - w0));
        CHECK(mn_stream_recall(s, wq, 30) == 0, "recall of the window's text: %s", mn_last_error());
        int64_t st[MN_STREAM_RECALL_MAXK];
        int32_t ln[MN_STREAM_RECALL_MAXK];
        const int32_t k = mn_stream_recalled(s, st, ln, MN_STREAM_RECALL_MAXK);
        int hit = 0, cells = 0;
        for (int32_t i = 0; i < k; i++) hit |= st[i] <= w0 + 10 && st[i] + ln[i] >= w0 + 40, cells += ln[i];
        CHECK(k == K && hit, "the window's segment with the quoted text is paged (%lld+%d, %lld+%d)", (long long)st[0],
              ln[0], (long long)st[k > 1], ln[k > 1]);
        CHECK(mn_stream_n_exact(s) == S, "the window's segments were offered, not stored (%d)", mn_stream_n_exact(s));
        const int32_t pg = mn_stream_n_paged(s);
        CHECK(pg == cells - (st[0] < 4 ? 4 - (int32_t)st[0] : 0), "paged cells %d, segments %d tokens", pg, cells);
        CHECK(mn_stream_feed(s, &nl, 1, lg, 0) == 0, "a token after it");
        fed++;
        const int32_t V = mn_model_n_vocab(m);
        const int64_t total = n + fed; /* the text, then the newlines fed */
        CHECK(mn_kv_n_cells(c) == 4 + mem + pg + 16 + 1, "[sinks | memory | paged | 16 raw | token] (%d cells)",
              mn_kv_n_cells(c));
        float *lg2 = malloc(sizeof(float) * (size_t)V);
        int32_t *by = malloc(sizeof(int32_t) * (size_t)(pg + 17));
        int32_t nb = 0;
        for (int32_t i = 0; i < k; i++)
            for (int64_t j = st[i] < 4 ? 4 : st[i]; j < st[i] + ln[i]; j++) by[nb++] = j < n ? ids[j] : nl;
        for (int64_t j = total - 17; j < total; j++) by[nb++] = j < n ? ids[j] : nl;
        CHECK(nb == pg + 17 && mn_kv_drop(c, 4 + mem, mn_kv_n_cells(c)) == 0 && mn_decode(c, by, nb - 1, NULL, 0) == 0 &&
                  mn_decode(c, by + nb - 1, 1, lg2, 0) == 0,
              "by hand");
        float d = 0;
        for (int32_t v = 0; v < V; v++) d = fmaxf(d, fabsf(lg[v] - lg2[v]));
        CHECK(d == 0, "logits with a window segment paged match the hand-built cache (max diff %g)", (double)d);
        /* the key scorers have no keys for the window's text: they page stored segments only */
        CHECK(mn_stream_set_recall(s, K, MN_RECALL_KEYS, 0) == 0 && mn_stream_recall(s, wq, 30) == 0, "keys: %s",
              mn_last_error());
        const int32_t k2 = mn_stream_recalled(s, st, ln, MN_STREAM_RECALL_MAXK);
        int stored = k2 == K;
        for (int32_t i = 0; i < k2; i++) stored &= st[i] + ln[i] <= w0;
        CHECK(stored, "keys page stored segments only (%lld, %lld)", (long long)st[0], (long long)st[k2 > 1]);
        free(lg2), free(by);
    }
    free(lg);
    mn_stream_free(s);
    mn_context_free(c);
    /* recall needs the layout it pages into */
    {
        mn_uio_params up = b.uio.params;
        up.recent = 0;
        mn_stream_params sp = mn_stream_default_params();
        sp.mode = MN_MODE_MEMORY;
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = 1024;
        mn_context *c = NULL;
        mn_stream *s = NULL;
        CHECK(mn_context_create(m, &cp, &c) == 0 && mn_stream_create(c, &sp, &s) == 0 && mn_stream_attach_uio(s, &up, 1) == 0,
              "stream");
        CHECK(mn_stream_set_recall(s, 2, MN_RECALL_KEYS, 0) == MN_EUNSUPPORTED && strstr(mn_last_error(), "recent"),
              "no recent window: a clear error (%s)", mn_last_error());
        mn_stream_free(s);
        mn_context_free(c);
    }
    free(q);
    mn_memory_unbind(&b);
}

/* --exact kv: a stream keeps every compressed segment's decoder cells (8 bits), as read behind the memory
 * before it. A lazy stream decodes them at compression, one that wanted logits all along takes them from
 * its cache; the two keep the same cells (within the rounding of batched against piecewise decoding).
 * Recall copies the cells back at the next positions instead of decoding the segment's ids (the cache
 * holds the stored cells rotated there), pages the pass key's segment as with ids, and cells past the
 * RAM budget go to a spill file no folder shows. */
static mn_stream *kv_stream(const mn_model *m, const mn_memory_binding *b, int64_t n, size_t budget, mn_context **c) {
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = mn_memory_n_ctx(b, n, sp.n_sinks) + 2 * b->uio.params.l + 64;
    cp.n_threads = 2;
    sp.window = cp.n_ctx;
    mn_stream *s = NULL;
    *c = NULL;
    CHECK(mn_context_create(m, &cp, c) == 0 && mn_stream_create(*c, &sp, &s) == 0 && mn_stream_attach(s, b, 2) == 0,
          "stream");
    if (s) CHECK(mn_stream_set_exact(s, MN_EXACT_KV, budget) == MN_EINVAL, "kv before recall is on: an error");
    if (s) CHECK(mn_stream_set_recall(s, 2, MN_RECALL_BM25, 0) == 0 && mn_stream_set_exact(s, MN_EXACT_KV, budget) == 0,
                 "recall on, exact kv: %s", mn_last_error());
    return s;
}

static void stream_kv(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int64_t needle) {
    mn_memory_binding b;
    CHECK(mn_memory_bind(m, a, &b) == 0, "bind");
    const int32_t l = b.uio.params.l, L = mn_model_n_layer(m), KD = mn_model_kv_dim(m), V = mn_model_n_vocab(m);
    const size_t cb = mn_kvstore_cell_bytes(m), sz = (size_t)L * (size_t)l * (size_t)KD;
    char dir[] = "/tmp/mnemo-kvrecall-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    setenv("TMPDIR", dir, 1);
    mn_context *ca = NULL, *cb_ = NULL;
    /* a: lazy, two segments' cells in RAM and the rest spilled; b: logits every 64 tokens, all in RAM */
    mn_stream *sa = kv_stream(m, &b, n, (size_t)(2 * l - 4) * cb, &ca), *sb = kv_stream(m, &b, n, (size_t)1 << 30, &cb_);
    float *lg = malloc(sizeof(float) * (size_t)V);
    float *ka = malloc(sizeof(float) * sz), *va = malloc(sizeof(float) * sz), *kb = malloc(sizeof(float) * sz),
          *vb = malloc(sizeof(float) * sz);
    if (!sa || !sb) goto out;
    CHECK(mn_stream_feed(sa, ids, (int32_t)n, NULL, 0) == 0, "read lazily: %s", mn_last_error());
    /* the eager stream decodes its whole raw window again after each compression: three of them are enough */
    const int64_t nb = n < (int64_t)(b.uio.params.recent + 4) * l ? n : (int64_t)(b.uio.params.recent + 4) * l;
    for (int64_t i = 0; i < nb; i += 64)
        CHECK(mn_stream_feed(sb, ids + i, (int32_t)(nb - i < 64 ? nb - i : 64), lg, 0) == 0, "read with logits: %s",
              mn_last_error());
    const int32_t S = mn_stream_n_exact(sa), Sb = mn_stream_n_exact(sb);
    CHECK(S >= 3 && Sb >= 2 && Sb <= S, "segments stored: %d and %d", S, Sb);
    size_t ram = 0, spill = 0;
    mn_stream_exact_bytes(sa, &ram, &spill);
    CHECK(ram == (size_t)(2 * l - 4) * cb && ram + spill == ((size_t)S * (size_t)l - 4) * cb,
          "every segment's cells after the 4 sinks, two in RAM (%zu + %zu bytes)", ram, spill);
    CHECK(test_dir_entries(dir) == 0, "the spill file is not in %s", dir);
    /* the same cells, whichever way they were decoded */
    float worst = 0;
    for (int32_t j = 0; j < Sb; j++) {
        int32_t na = 0, nc = 0;
        CHECK(mn_stream_exact_cells(sa, j, l, ka, va, &na) == 0 && mn_stream_exact_cells(sb, j, l, kb, vb, &nc) == 0 &&
                  na == nc && na == l - (j == 0 ? 4 : 0),
              "segment %d: %d and %d cells", j, na, nc);
        float d = 0, mx = 0;
        for (size_t i = 0; i < (size_t)L * (size_t)na * (size_t)KD; i++) {
            d = fmaxf(d, fmaxf(fabsf(ka[i] - kb[i]), fabsf(va[i] - vb[i])));
            mx = fmaxf(mx, fabsf(kb[i]));
        }
        worst = fmaxf(worst, d / mx);
    }
    fprintf(stderr, "# exact kv: lazy against eager cells, worst difference %.4f of the largest key\n", (double)worst);
    CHECK(worst < 0.05f, "lazy and eager streams keep the same cells (worst difference %.4f of the largest key)",
          (double)worst);
    /* recall pages the pass key's segment and copies its cells: the cache holds them rotated to where they went */
    int64_t nq;
    int32_t *q = tokenize(m, "What is the vault code?", &nq);
    CHECK(mn_stream_recall(sa, q, (int32_t)nq) == 0, "recall: %s", mn_last_error());
    int64_t st[MN_STREAM_RECALL_MAXK];
    int32_t ln[MN_STREAM_RECALL_MAXK];
    const int32_t k = mn_stream_recalled(sa, st, ln, MN_STREAM_RECALL_MAXK);
    int hit = 0;
    for (int32_t i = 0; i < k; i++) hit |= needle >= st[i] && needle < st[i] + ln[i];
    CHECK(k == 2 && hit, "the pass key's segment is paged (%lld, %lld)", (long long)st[0], (long long)st[k > 1]);
    const int32_t mem = mn_stream_n_memory(sa);
    int32_t cell = 4 + mem;
    float dk = 0, dv = 0, mk = 0, mv = 0;
    for (int32_t i = 0; i < k; i++) {
        int32_t nc = 0;
        CHECK(mn_stream_exact_cells(sa, (int32_t)(st[i] / l), l, ka, va, &nc) == 0, "cells of the paged segment");
        CHECK(mn_kv_read(ca, cell, nc, kb, vb) == 0, "read the paged cells");
        for (int32_t li = 0; li < L; li++)
            for (int32_t j = 0; j < nc; j++) {
                float *row = ka + ((size_t)li * (size_t)nc + (size_t)j) * (size_t)KD;
                mn_rope_rotate(m, li, row, m->hp.n_head_kv, mn_kv_pos(ca, cell + j));
            }
        for (size_t e = 0; e < (size_t)L * (size_t)nc * (size_t)KD; e++)
            dk = fmaxf(dk, fabsf(ka[e] - kb[e])), dv = fmaxf(dv, fabsf(va[e] - vb[e])), mk = fmaxf(mk, fabsf(ka[e])),
            mv = fmaxf(mv, fabsf(va[e]));
        cell += nc;
    }
    CHECK(cell == 4 + mem + mn_stream_n_paged(sa) && mn_kv_n_cells(ca) == cell, "[sinks | memory | paged] (%d cells)",
          mn_kv_n_cells(ca));
    /* the cache holds f16: within its rounding (2^-11 of a value) of the largest */
    dk /= mk, dv /= mv;
    fprintf(stderr, "# exact kv: paged cells against the stored ones rotated: %.2e (keys), %.2e (values) of the largest\n",
            (double)dk, (double)dv);
    CHECK(dk < 1e-3f && dv < 1e-3f, "the paged cells are the stored ones at their new positions (%g, %g)", (double)dk,
          (double)dv);
    int contiguous = 1;
    for (int32_t i = 1; i < mn_kv_n_cells(ca); i++) contiguous &= mn_kv_pos(ca, i) == mn_kv_pos(ca, i - 1) + 1;
    CHECK(contiguous, "positions contiguous through the copied cells");
    CHECK(mn_stream_feed(sa, q, (int32_t)nq, lg, 0) == 0, "the question after them");
    free(q);
    mn_stream_reset(sa);
    mn_stream_exact_bytes(sa, &ram, &spill);
    CHECK(ram == 0 && spill == 0 && mn_stream_n_exact(sa) == 0, "reset forgets the cells");
out:
    free(lg), free(ka), free(va), free(kb), free(vb);
    mn_stream_free(sa), mn_stream_free(sb);
    mn_context_free(ca), mn_context_free(cb_);
    CHECK(test_dir_entries(dir) == 0, "nothing left in %s", dir);
    rmdir(dir);
    unsetenv("TMPDIR");
    mn_memory_unbind(&b);
}

static void docmem(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int64_t needle) {
    mn_docmem d;
    CHECK(mn_docmem_compress(m, a, ids, n, 2, &d) == 0, "compress: %s", mn_last_error());
    const int32_t l = d.exact_seg, S = d.n_exact / (l ? l : 1);
    CHECK(d.n_exact > 0 && l == 256 && d.n_exact % l == 0 && d.n_slots == S * 32, "exact part: %d tokens in %d",
          d.n_exact, l);
    CHECK(memcmp(d.exact, ids, sizeof(int32_t) * (size_t)d.n_exact) == 0, "the exact ids are the document's");
    char path[] = "/tmp/mnemo_recall_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(mn_docmem_save(&d, m, a, path, 0) == 0, "save: %s", mn_last_error());
    mn_memfile *mf = NULL;
    CHECK(mn_memfile_open(path, &mf) == 0 && mn_memfile_get_info(mf)->n_exact == d.n_exact, "version 3 with the part");
    FILE *f = fopen(path, "rb");
    unsigned char hdr[16];
    CHECK(f && fread(hdr, 1, 16, f) == 16 && hdr[8] == 3, "format version 3");
    if (f) fclose(f);
    mn_memfile_free(mf);
    mn_docmem e;
    CHECK(mn_docmem_load(path, m, a, &e) == 0, "load: %s", mn_last_error());
    const size_t re = (size_t)S * mn_model_n_layer(m) * MN_RECALL_REP * mn_model_kv_dim(m);
    int same = e.n_exact == d.n_exact && e.exact_seg == d.exact_seg &&
               !memcmp(e.exact, d.exact, sizeof(int32_t) * (size_t)d.n_exact);
    for (size_t i = 0; same && i < re; i++)
        same = e.rep[i] == mn_fp16_to_fp32(mn_fp32_to_fp16(d.rep[i])) &&
               e.rep_sh[i] == mn_fp16_to_fp32(mn_fp32_to_fp16(d.rep_sh[i]));
    CHECK(same, "the exact part reads back (keys rounded to f16 once)");

    /* priming with recall: [head | slots | paged | tail], the pass key's segment among the paged */
    int64_t nq;
    int32_t *q = tokenize(m, "What is the vault code?", &nq);
    const mn_docmem *mems[1] = {&e};
    const mn_recall_opts ro = {.k = 2, .scorer = MN_RECALL_BM25, .late = 0, .local = 0};
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)(mn_docmem_cells(&e) + mn_docmem_recall_cells(mems, 1, 2) + 64);
    cp.n_threads = 2;
    mn_context *c;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    mn_docmem_paged pg;
    CHECK(mn_docmem_prime_recall(c, a, mems, 1, &ro, q, (int32_t)nq, NULL, &pg) == 0, "prime: %s", mn_last_error());
    int hit = 0;
    for (int32_t i = 0; i < pg.n; i++) hit |= needle >= pg.start[i] && needle < pg.start[i] + pg.len[i];
    CHECK(pg.n == 2 && pg.cells == 2 * l && pg.stored == S && hit, "the pass key's segment paged (%d segments)", pg.n);
    CHECK(mn_kv_n_cells(c) == mn_docmem_cells(&e) + 2 * l, "cells: memory + raw + paged (%d)", mn_kv_n_cells(c));
    mn_kv_clear(c);
    /* a shorter raw tail beside the paged segments */
    mn_kv_clear(c);
    const mn_recall_opts short_tail = {.k = 2, .scorer = MN_RECALL_BM25, .late = 0, .local = 8};
    CHECK(mn_docmem_prime_recall(c, a, mems, 1, &short_tail, q, (int32_t)nq, NULL, &pg) == 0 && pg.n == 2 &&
              mn_kv_n_cells(c) == e.n_head + e.n_slots + 2 * l + 8,
          "local 8: [head | slots | paged | 8 raw] (%d cells)", mn_kv_n_cells(c));
    /* what the short tail drops can be paged back: a query quoting the tail's tokens 10-40 pages them */
    {
        mn_kv_clear(c);
        const int64_t t0 = e.n_tokens - (e.n_raw - e.n_head);
        CHECK(e.n_raw - e.n_head > 8 + 40, "the raw tail (%d tokens) reaches past its newest 8", e.n_raw - e.n_head);
        CHECK(mn_docmem_prime_recall(c, a, mems, 1, &short_tail, ids + t0 + 10, 30, NULL, &pg) == 0 && pg.n == 2,
              "recall of the tail's text: %s", mn_last_error());
        int hit = 0;
        for (int32_t i = 0; i < pg.n; i++) hit |= pg.start[i] <= t0 + 10 && pg.start[i] + pg.len[i] >= t0 + 40;
        CHECK(hit && pg.stored == S, "the tail's segment with the quoted text is paged (%lld+%d, %lld+%d)",
              (long long)pg.start[0], pg.len[0], (long long)pg.start[1], pg.len[1]);
        CHECK(mn_kv_n_cells(c) == e.n_head + e.n_slots + pg.cells + 8 && pg.cells == pg.len[0] + pg.len[1],
              "[head | slots | paged | 8 raw] (%d cells, %d paged)", mn_kv_n_cells(c), (int)pg.cells);
        int pos_ok = 1;
        for (int32_t i = 1; i < mn_kv_n_cells(c); i++) pos_ok &= mn_kv_pos(c, i) == mn_kv_pos(c, i - 1) + 1;
        CHECK(pos_ok, "positions contiguous");
        /* the key scorers pass the tail's text over */
        mn_kv_clear(c);
        const mn_recall_opts keys_short = {.k = 2, .scorer = MN_RECALL_KEYS, .late = 0, .local = 8};
        CHECK(mn_docmem_prime_recall(c, a, mems, 1, &keys_short, ids + t0 + 10, 30, NULL, &pg) == 0 && pg.n == 2 &&
                  pg.start[0] + pg.len[0] <= t0 && pg.start[1] + pg.len[1] <= t0,
              "keys page stored segments only (%lld, %lld)", (long long)pg.start[0], (long long)pg.start[1]);
    }
    /* auto: the count for this memory's stored segments */
    mn_kv_clear(c);
    const mn_recall_opts autok = {.k = MN_RECALL_AUTO, .scorer = MN_RECALL_BM25, .late = 0, .local = 0};
    const int32_t ka = mn_recall_auto_k(MN_RECALL_AUTO, S);
    CHECK(mn_docmem_recall_k(mems, 1, MN_RECALL_AUTO) == ka && mn_docmem_recall_k(mems, 1, 3) == 3, "auto K for %d: %d", S,
          ka);
    CHECK(mn_docmem_prime_recall(c, a, mems, 1, &autok, q, (int32_t)nq, NULL, &pg) == 0 && pg.n == (ka < S ? ka : S),
          "auto pages %d segments (%d)", ka, pg.n);
    mn_kv_clear(c);
    const mn_recall_opts keys = {.k = 2, .scorer = MN_RECALL_KEYS, .late = 1, .local = 0};
    CHECK(mn_docmem_prime_recall(c, a, mems, 1, &keys, q, (int32_t)nq, NULL, &pg) == 0 && pg.n == 2,
          "keys, paged after the raw tail: %s", mn_last_error());
    int32_t tail0 = (int32_t)(e.n_head + e.n_slots);
    CHECK(mn_kv_n_cells(c) == tail0 + (e.n_raw - e.n_head) + 2 * l, "late layout cells");

    /* a corrupt or truncated exact part is refused, never read */
    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    unsigned char *all = malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    CHECK(fread(all, 1, (size_t)size, f) == (size_t)size, "read back");
    fclose(f);
    all[size - 3] ^= 0x40; /* inside the shared keys, the file's last block */
    CHECK(mn_memfile_open_memory(all, (size_t)size, &mf) == MN_EFORMAT && strstr(mn_last_error(), "checksum"),
          "a flipped byte of the exact part: %s", mn_last_error());
    all[size - 3] ^= 0x40;
    CHECK(mn_memfile_open_memory(all, (size_t)size - 1000, &mf) == MN_EFORMAT && strstr(mn_last_error(), "truncated"),
          "a truncated exact part: %s", mn_last_error());
    CHECK(mn_memfile_open_memory(all, (size_t)size, &mf) == 0, "the intact bytes open");
    mn_memfile_free(mf);
    free(all);

    /* --exact none: version 2, read with recall off */
    mn_docmem_drop_exact(&d);
    CHECK(mn_docmem_save(&d, m, a, path, 0) == 0, "save without the part");
    f = fopen(path, "rb");
    CHECK(f && fread(hdr, 1, 16, f) == 16 && hdr[8] == 2, "format version 2 without it");
    if (f) fclose(f);
    mn_docmem g;
    CHECK(mn_docmem_load(path, m, a, &g) == 0 && g.n_exact == 0 && !g.exact, "loads without an exact part");
    const mn_docmem *gm[1] = {&g};
    mn_kv_clear(c);
    CHECK(mn_docmem_prime_recall(c, a, gm, 1, &ro, q, (int32_t)nq, NULL, &pg) == 0 && pg.n == 0 &&
              mn_kv_n_cells(c) == mn_docmem_cells(&g),
          "primes as before, recall off");
    mn_docmem_release(&g);
    mn_context_free(c);
    free(q);
    unlink(path);
    mn_docmem_release(&e);
    mn_docmem_release(&d);
}

/* A prompt shorter than one segment, read through a memory stream with the shipped adapter attached and
 * recall on, gives the plain model's logits bit for bit: nothing of the adapter (encoder LoRA, transfer
 * head, memory embedding) reaches the decoder before a segment is compressed. */
/* --exact kv for memory files: mn_docmem_add_cells reads each compressed segment behind the raw head and
 * the slots of the segments before it (segment 1 checked against a context built by hand), a version-4
 * file keeps the cells byte for byte, and recall pages the pass key's segment by copying them: the cache
 * holds them rotated to the positions they went to, and the rest of the layout is as with the ids. */
static void docmem_kv(const mn_model *m, const mn_adapter *a, const int32_t *ids, int64_t n, int64_t needle) {
    mn_docmem d;
    CHECK(mn_docmem_compress(m, a, ids, n, 2, &d) == 0 && d.n_exact > 0, "compress: %s", mn_last_error());
    CHECK(!d.cells && mn_docmem_add_cells(m, a, &d, 2) == 0 && d.cells, "cells added: %s", mn_last_error());
    const int32_t l = d.exact_seg, S = d.n_exact / (l ? l : 1), per = d.n_slots / (S ? S : 1), head = d.n_head;
    const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m);
    const size_t cb = mn_kvstore_cell_bytes(m), e = (size_t)L * (size_t)l * (size_t)KD;
    float *kr = malloc(sizeof(float) * e), *vr = malloc(sizeof(float) * e), *k1 = malloc(sizeof(float) * e),
          *v1 = malloc(sizeof(float) * e), *sk = malloc(sizeof(float) * (size_t)L * per * KD),
          *sv = malloc(sizeof(float) * (size_t)L * per * KD);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(per + l));
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = head + per + l + 8;
    cp.n_threads = 2;
    mn_context *c = NULL;
    CHECK(S >= 2 && head == 4 && mn_context_create(m, &cp, &c) == 0, "%d segments, head %d", S, head);
    if (c && mn_adapter_reader(a)) CHECK(mn_context_set_lora(c, mn_adapter_reader(a)) == 0, "the reader");
    /* by hand: [head | segment 0's slots] then segment 1 */
    for (int32_t li = 0; li < L; li++) {
        memcpy(sk + (size_t)li * per * KD, d.k + (size_t)li * d.n_slots * KD, sizeof(float) * (size_t)per * KD);
        memcpy(sv + (size_t)li * per * KD, d.v + (size_t)li * d.n_slots * KD, sizeof(float) * (size_t)per * KD);
    }
    for (int32_t i = 0; i < per; i++) pos[i] = head + i;
    CHECK(c && mn_decode(c, ids, head, NULL, 0) == 0 && mn_kv_append(c, per, pos, sk, sv, 0) == 0 &&
              mn_decode(c, ids + l, l, NULL, 0) == 0 && mn_kvstore_read_cells(c, head + per, l, kr, vr) == 0,
          "segment 1 by hand: %s", mn_last_error());
    mn_kvstore_decode(L, KD, l, d.cells + (size_t)l * cb, k1, v1);
    { /* through the same 8 bits */
        uint8_t *b8 = malloc(cb * (size_t)l);
        mn_kvstore_encode(L, KD, l, kr, vr, b8);
        mn_kvstore_decode(L, KD, l, b8, kr, vr);
        free(b8);
    }
    float dd = 0, mx = 0;
    for (size_t i = 0; i < e; i++) dd = fmaxf(dd, fmaxf(fabsf(kr[i] - k1[i]), fabsf(vr[i] - v1[i]))), mx = fmaxf(mx, fabsf(kr[i]));
    fprintf(stderr, "# exact kv, memory file: segment 1 against a context built by hand: %.2e of the largest\n",
            (double)(dd / mx));
    CHECK(dd <= mx / 256, "segment 1's cells are the ones read behind the head and segment 0's slots (%g of %g)",
          (double)dd, (double)mx);
    mn_context_free(c);
    /* a version-4 file, the cells byte for byte */
    char path[] = "/tmp/mnemo_recall_kv_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(mn_docmem_save(&d, m, a, path, 0) == 0, "save: %s", mn_last_error());
    FILE *f = fopen(path, "rb");
    unsigned char hdr[16];
    CHECK(f && fread(hdr, 1, 16, f) == 16 && hdr[8] == 4, "format version 4");
    if (f) fclose(f);
    mn_docmem g;
    CHECK(mn_docmem_load(path, m, a, &g) == 0 && g.cells && !memcmp(g.cells, d.cells, cb * (size_t)d.n_exact),
          "the cells read back: %s", mn_last_error());
    /* recall copies them: the pass key's segment paged, [head | slots | paged | tail] */
    int64_t nq;
    int32_t *q = tokenize(m, "What is the vault code?", &nq);
    const mn_docmem *mems[1] = {&g};
    const mn_recall_opts ro = {.k = 2, .scorer = MN_RECALL_BM25, .late = 0, .local = 0};
    cp.n_ctx = (int32_t)(mn_docmem_cells(&g) + mn_docmem_recall_cells(mems, 1, 2) + 64);
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    mn_docmem_paged pg;
    CHECK(c && mn_docmem_prime_recall(c, a, mems, 1, &ro, q, (int32_t)nq, NULL, &pg) == 0, "prime: %s", mn_last_error());
    int hit = 0;
    for (int32_t i = 0; i < pg.n; i++) hit |= needle >= pg.start[i] && needle < pg.start[i] + pg.len[i];
    CHECK(pg.n == 2 && pg.cells == 2 * l && hit, "the pass key's segment paged (%d segments)", pg.n);
    CHECK(c && mn_kv_n_cells(c) == mn_docmem_cells(&g) + 2 * l, "cells: memory + raw + paged (%d)", mn_kv_n_cells(c));
    float dk = 0, mk = 0;
    for (int32_t i = 0; i < pg.n && c; i++) {
        const int32_t at = head + g.n_slots + i * l, seg = (int32_t)(pg.start[i] / l);
        mn_kvstore_decode(L, KD, l, g.cells + (size_t)seg * l * cb, k1, v1);
        CHECK(mn_kv_read(c, at, l, kr, vr) == 0, "read the paged cells");
        for (int32_t li = 0; li < L; li++)
            for (int32_t j = 0; j < l; j++)
                mn_rope_rotate(m, li, k1 + ((size_t)li * l + j) * KD, m->hp.n_head_kv, mn_kv_pos(c, at + j));
        for (size_t x = 0; x < e; x++) dk = fmaxf(dk, fabsf(k1[x] - kr[x])), mk = fmaxf(mk, fabsf(k1[x]));
    }
    CHECK(dk <= mk * 1e-3f, "the paged cells are the stored ones at their positions (%g of %g)", (double)dk, (double)mk);
    int pos_ok = 1;
    for (int32_t i = 1; c && i < mn_kv_n_cells(c); i++) pos_ok &= mn_kv_pos(c, i) == mn_kv_pos(c, i - 1) + 1;
    CHECK(pos_ok, "positions contiguous");
    mn_docmem_drop_exact(&g);
    CHECK(!g.cells && g.n_exact == 0, "dropping the exact part drops the cells");
    mn_context_free(c);
    free(q), free(kr), free(vr), free(k1), free(v1), free(sk), free(sv), free(pos);
    unlink(path);
    mn_docmem_release(&g);
    mn_docmem_release(&d);
}

static void short_prompt(const mn_model *m, const mn_adapter *a, const int32_t *ids) {
    const int32_t V = mn_model_n_vocab(m), n = 40;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 4096;
    cp.n_threads = 2;
    mn_context *c1 = NULL, *c2 = NULL;
    float *x = malloc(sizeof(float) * (size_t)V * n), *y = malloc(sizeof(float) * (size_t)V * n);
    CHECK(mn_context_create(m, &cp, &c1) == 0 && mn_context_create(m, &cp, &c2) == 0, "contexts");
    CHECK(mn_decode(c1, ids, n, x, 1) == 0, "plain decode");
    mn_memory_binding b;
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY;
    mn_stream *s = NULL;
    CHECK(mn_memory_bind(m, a, &b) == 0 && mn_stream_create(c2, &sp, &s) == 0 && mn_stream_attach(s, &b, 2) == 0 &&
              mn_stream_set_recall(s, 4, MN_RECALL_BM25, 0) == 0,
          "memory stream with the shipped adapter: %s", mn_last_error());
    CHECK(mn_stream_feed(s, ids, 7, y, 1) == 0 && mn_stream_feed(s, ids + 7, n - 7, y + (size_t)7 * V, 1) == 0, "feed");
    CHECK(!memcmp(x, y, sizeof(float) * (size_t)V * n), "a prompt within one segment: the plain model's logits");
    mn_stream_free(s);
    mn_memory_unbind(&b);
    mn_context_free(c1), mn_context_free(c2);
    free(x), free(y);
}

/* The RAG baseline of the evaluation: BM25 chunks of the raw text, in document order, within the budget. */
static void rag(const mn_model *m, const int32_t *ids, int64_t n, int64_t needle) {
    int64_t nq;
    int32_t *q = tokenize(m, "What is the vault code?", &nq);
    const int32_t chunk = 256;
    const int64_t budget = 3 * chunk + 100;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(n > budget ? n : budget)), ch[8], nch = 0;
    int64_t got = 0;
    CHECK(mn_rag_select(m, ids, n, q, (int32_t)nq, chunk, budget, out, &got, ch, &nch) == 0, "rag: %s", mn_last_error());
    int hit = 0, ordered = 1, same = 1;
    int64_t at = 0;
    for (int32_t i = 0; i < nch; i++) {
        hit |= needle / chunk == ch[i];
        if (i) ordered &= ch[i] > ch[i - 1];
        const int64_t len = (int64_t)(ch[i] + 1) * chunk <= n ? chunk : n - (int64_t)ch[i] * chunk;
        same &= memcmp(out + at, ids + (int64_t)ch[i] * chunk, sizeof(int32_t) * (size_t)len) == 0;
        at += len;
    }
    CHECK(nch == 3 && got == at && got <= budget, "3 chunks of 256 within %lld tokens (%d, %lld)", (long long)budget, nch,
          (long long)got);
    CHECK(hit && ordered && same, "the vault code's chunk chosen (%d), in document order (%d), copied (%d)", hit, ordered,
          same);
    /* a text within the budget comes whole */
    CHECK(mn_rag_select(m, ids, 500, q, (int32_t)nq, chunk, budget, out, &got, ch, &nch) == 0 && got == 500 && nch == 2 &&
              !memcmp(out, ids, sizeof(int32_t) * 500),
          "a short text whole");
    CHECK(mn_rag_select(m, ids, n, q, (int32_t)nq, 0, budget, out, &got, NULL, NULL) == MN_EINVAL, "chunk 0: an error");
    free(out), free(q);
}

int main(void) {
    scorer_names();
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    mn_model *m = NULL;
    mn_adapter *a = NULL;
    CHECK(mn_model_load(path, &m) == 0, "load");
    CHECK(mn_adapter_load(m, k_adapter, &a) == 0, "the shipped adapter: %s", mn_last_error());
    if (!m || !a) {
        mn_adapter_free(a);
        mn_model_free(m);
        TEST_MAIN_END();
    }
    bm25(m);
    bm25_overlap(m);
    keys(m);
    /* under the sanitizers a shorter text read with 1 raw segment instead of the shipped 8: the same checks on
     * fewer tokens (the instrumented encoder reads about 20 tokens a second) */
    const int san = getenv("MN_SANITIZED") != NULL;
    if (san) CHECK(mn_adapter_set_recent(a, 1) == 0, "recent window of 1 segment");
    const int64_t len = san ? 1400 : 5200;
    int64_t n = 0, needle = 0;
    int32_t *ids = passkey_text(m, len, 700, &n, &needle);
    CHECK(ids != NULL, "data/train/books/pg1082.txt (part of the repository)");
    if (ids) {
        short_prompt(m, a, ids);
        rag(m, ids, n, needle);
        stream(m, a, ids, n, needle);
        stream_kv(m, a, ids, n, needle);
        docmem(m, a, ids, n, needle);
        docmem_kv(m, a, ids, n, needle);
    }
    free(ids);
    mn_adapter_free(a);
    mn_model_free(m);
    TEST_MAIN_END();
}
