/* task_passkey.c - needles hidden at a depth of filler text, asked for
 * through the chat template (the texts and the check: needle.c). Each mode
 * reads the same prompt; rag reads the chunks BM25 picks for the question in
 * full attention at the memory's cells; with recall, the question chooses the
 * segments paged in, and the row says whether one of them held the needle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/harness.h"
#include "eval/needle.h"
#include "eval/rag.h"
#include "memory/recall.h"

/* uniform in [0, n) from the xorshift state *s */
static uint64_t rnd_below(uint64_t *s, uint64_t n) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (*s >> 11) % n;
}

/* Greedy answer of up to max_new tokens after the prompt, read through a mode. */
/* With recall, the query q[0..nq) (the question) chooses the segments paged in once the document,
 * ids[0..n_doc), is read, before the question that follows it; *hit (optional) tells whether one of
 * them holds token index `probe` of ids. rag: the document's text is ids[doc0..n_doc); the chunks the
 * question chooses, as many as the window leaves room for beside the rest, are read in full attention
 * in its place, and *hit tells whether one of them holds the probe. */
static int generate(ev_ctx *c, const mn_eval_mode *em, const int32_t *ids, int64_t n, int64_t doc0, int64_t n_doc,
                    const int32_t *q, int64_t nq, int64_t probe, int *hit, int32_t window, int max_new,
                    const char *label, char *out, size_t cap, int64_t *cells) {
    const mn_eval_opts *o = c->o;
    if (em->mode == MN_EVAL_MODE_RAG) {
        const int64_t npost = n - n_doc, budget = (int64_t)window - doc0 - npost - max_new;
        if (budget < MN_EVAL_RAG_CHUNK)
            return mn_error(MN_ERANGE, "rag: a window of %d cells leaves no room for a chunk of %d", window, MN_EVAL_RAG_CHUNK);
        int32_t *buf = malloc(sizeof(int32_t) * (size_t)(doc0 + budget + npost));
        int32_t *ch = malloc(sizeof(int32_t) * (size_t)(budget / MN_EVAL_RAG_CHUNK + 1)), nch = 0;
        int64_t got = 0;
        int rc = !buf || !ch ? mn_error(MN_ENOMEM, "out of memory")
                             : mn_rag_select(o->m, ids + doc0, n_doc - doc0, q, (int32_t)nq, MN_EVAL_RAG_CHUNK, budget,
                                             buf + doc0, &got, ch, &nch);
        if (!rc) {
            memcpy(buf, ids, sizeof(int32_t) * (size_t)doc0);
            memcpy(buf + doc0 + got, ids + n_doc, sizeof(int32_t) * (size_t)npost);
            if (hit) {
                *hit = 0;
                for (int32_t i = 0; i < nch; i++) *hit |= probe - doc0 >= (int64_t)ch[i] * MN_EVAL_RAG_CHUNK &&
                                                         probe - doc0 < (int64_t)(ch[i] + 1) * MN_EVAL_RAG_CHUNK;
            }
            mn_eval_mode full = *em;
            full.mode = MN_MODE_FULL, full.recall = 0;
            ev_prog_add(c, (double)(n_doc - doc0 - got), label); /* the text left unread */
            rc = generate(c, &full, buf, doc0 + got + npost, 0, doc0 + got, NULL, 0, -1, NULL, window, max_new, label,
                          out, cap, cells);
        }
        free(buf), free(ch);
        return rc;
    }
    ev_run r;
    int rc = ev_run_open(o, em, n + max_new, window, 0, &r);
    if (rc) return rc;
    const mn_tokenizer *tk = mn_model_tokenizer(o->m);
    const int32_t V = mn_model_n_vocab(o->m);
    float *lg = malloc(sizeof(float) * (size_t)V);
    int32_t *gen = malloc(sizeof(int32_t) * (size_t)max_new);
    int ng = 0;
    if (!lg || !gen) rc = mn_error(MN_ENOMEM, "out of memory");
    if (n_doc > n - 1 || !em->recall) n_doc = n - 1;
    if (!rc) rc = ev_run_read(c, &r, ids, n_doc, label);
    if (!rc && em->recall && nq > 0) rc = mn_stream_recall(r.s, q, (int32_t)nq);
    if (!rc && n - 1 > n_doc) rc = ev_run_read(c, &r, ids + n_doc, n - 1 - n_doc, label);
    if (!rc && hit) {
        int64_t st[MN_STREAM_RECALL_MAXK];
        int32_t ln[MN_STREAM_RECALL_MAXK];
        const int32_t k = em->recall ? mn_stream_recalled(r.s, st, ln, MN_STREAM_RECALL_MAXK) : 0;
        *hit = 0;
        for (int32_t i = 0; i < k; i++) *hit |= probe >= st[i] && probe < st[i] + ln[i];
    }
    if (!rc) rc = mn_stream_feed(r.s, ids + n - 1, 1, lg, 0);
    while (!rc && ng < max_new) {
        ev_note_cells(&r);
        const int32_t t = ev_argmax(lg, V);
        if (mn_token_is_eog(tk, t)) break;
        gen[ng++] = t;
        if (ng < max_new) rc = mn_stream_feed(r.s, &t, 1, lg, 0);
    }
    size_t got = 0;
    out[0] = 0;
    if (!rc && ng && mn_detokenize(tk, gen, ng, 0, out, cap, &got)) out[0] = 0;
    *cells = r.max_cells;
    free(lg), free(gen);
    ev_run_close(&r);
    return rc;
}

int ev_task_passkey(ev_ctx *c) {
    const mn_eval_opts *o = c->o;
    char **files;
    int n_all, rc = ev_list_texts(o->src, &files, &n_all);
    if (rc) return rc;
    const int n_files = o->max_docs && n_all > o->max_docs ? (int)o->max_docs : n_all;
    long maxL = 0;
    for (int i = 0; i < o->n_lengths; i++) maxL = o->lengths[i] > maxL ? o->lengths[i] : maxL;
    /* the filler: the essays one after the other, as many as the longest length needs */
    int32_t *hay = NULL;
    int64_t nhay = 0;
    for (int f = 0; f < n_files && nhay < maxL; f++) {
        int32_t *t;
        int64_t n;
        if ((rc = ev_load_tokens(o->m, files[f], &t, &n))) {
            free(hay), ev_free_list(files, n_all);
            return rc;
        }
        int32_t *nh = realloc(hay, sizeof(int32_t) * (size_t)(nhay + n));
        if (!nh) {
            free(t), free(hay), ev_free_list(files, n_all);
            return mn_error(MN_ENOMEM, "out of memory");
        }
        hay = nh;
        memcpy(hay + nhay, t, sizeof(int32_t) * (size_t)n);
        nhay += n;
        free(t);
    }
    ev_free_list(files, n_all);
    if (nhay < maxL) {
        free(hay);
        return mn_error(MN_EINVAL, "the haystack has %lld tokens, fewer than the longest length %ld",
                        (long long)nhay, maxL);
    }
    uint64_t rng = 88172645463325252ull ^ ((uint64_t)o->seed * 0x9E3779B97F4A7C15ull);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)(maxL + 1024));
    int (*acc)[MN_EVAL_MAX_ITEMS] = calloc(MN_EVAL_MAX_ITEMS, sizeof *acc), (*cnt)[MN_EVAL_MAX_ITEMS] = calloc(MN_EVAL_MAX_ITEMS, sizeof *cnt);
    double total = 0;
    for (int li = 0; li < o->n_lengths; li++) total += (double)o->lengths[li] * o->n_depths * o->trials * o->n_modes;
    ev_prog_start(c, "passkey", total);
    rc = !prompt || !acc || !cnt ? mn_error(MN_ENOMEM, "out of memory") : 0;
    const int max_new = o->needle == MN_NEEDLE_FACT || o->needle == MN_NEEDLE_COUNTS ? 16 : 8;
    for (int li = 0; li < o->n_lengths && !rc; li++) {
        const long L = o->lengths[li];
        for (int di = 0; di < o->n_depths && !rc; di++) {
            int correct[MN_EVAL_MAX_ITEMS] = {0}, runs[MN_EVAL_MAX_ITEMS] = {0}, paged_hit[MN_EVAL_MAX_ITEMS] = {0};
            char first_answer[MN_EVAL_MAX_ITEMS][64];
            int64_t cells_of[MN_EVAL_MAX_ITEMS] = {0};
            memset(first_answer, 0, sizeof first_answer);
            for (int tr = 0; tr < o->trials && !rc; tr++) {
                /* the trial's texts (eval/needle.h: phrasings no training window uses), the prompt
                 * around the filler rendered by the model's chat template */
                mn_needle_trial t;
                mn_needle_make((mn_needle_kind)o->needle, &rng, &t);
                char *pre = NULL, *post = NULL;
                int32_t *pre_ids = NULL, *post_ids = NULL, *q_ids = NULL, *nid[MN_NEEDLE_MAX] = {0};
                int64_t npre = 0, npost = 0, nq = 0, nn[MN_NEEDLE_MAX] = {0}, nn_all = 0;
                /* recall's query: the question alone, as a user's question reaches `ask` */
                rc = ev_chat_wrap(o->m, t.intro, t.question, t.answer_prefix, &pre, &post);
                if (!rc) rc = ev_tokenize(o->m, pre, 1, &pre_ids, &npre) || ev_tokenize(o->m, post, 1, &post_ids, &npost) ||
                              ev_tokenize(o->m, t.question + 2, 0, &q_ids, &nq);
                for (int j = 0; j < t.n_needles && !rc; j++) {
                    char nd[300];
                    snprintf(nd, sizeof nd, " %s ", t.needle[j]);
                    rc = ev_tokenize(o->m, nd, 0, &nid[j], &nn[j]);
                    nn_all += nn[j];
                }
                free(pre), free(post);
                const int64_t fill = L - npre - npost - nn_all;
                if (!rc && fill < 16) rc = mn_error(MN_EINVAL, "length %ld leaves no room for filler", L);
                int64_t n = 0, probe = 0;
                if (!rc) {
                    /* a different stretch of the haystack per trial; the asked needle at the depth,
                     * the others (multi) at random depths */
                    const int64_t off = nhay > fill ? (int64_t)(rnd_below(&rng, (uint64_t)(nhay - fill + 1))) : 0;
                    int64_t at[MN_NEEDLE_MAX];
                    int order[MN_NEEDLE_MAX];
                    at[0] = fill * o->depths[di] / 100;
                    for (int j = 1; j < t.n_needles; j++) at[j] = (int64_t)rnd_below(&rng, (uint64_t)fill + 1);
                    for (int j = 0; j < t.n_needles; j++) order[j] = j;
                    for (int j = 1; j < t.n_needles; j++) /* by position; the asked one first among equals */
                        for (int i = j; i > 0 && at[order[i]] < at[order[i - 1]]; i--) {
                            const int x = order[i];
                            order[i] = order[i - 1], order[i - 1] = x;
                        }
                    memcpy(prompt + n, pre_ids, sizeof(int32_t) * (size_t)npre), n += npre;
                    int64_t done = 0;
                    for (int j = 0; j < t.n_needles; j++) {
                        const int w = order[j];
                        memcpy(prompt + n, hay + off + done, sizeof(int32_t) * (size_t)(at[w] - done)), n += at[w] - done;
                        done = at[w];
                        if (w == 0) probe = n + nn[0] / 2;
                        memcpy(prompt + n, nid[w], sizeof(int32_t) * (size_t)nn[w]), n += nn[w];
                    }
                    memcpy(prompt + n, hay + off + done, sizeof(int32_t) * (size_t)(fill - done)), n += fill - done;
                    memcpy(prompt + n, post_ids, sizeof(int32_t) * (size_t)npost), n += npost;
                }
                for (int j = 0; j < MN_NEEDLE_MAX; j++) free(nid[j]);
                free(pre_ids), free(post_ids);
                if (rc) {
                    free(q_ids);
                    break;
                }
                for (int k = 0; k < o->n_modes && !rc; k++) {
                    const mn_eval_mode *em = &o->modes[k];
                    int past = 0;
                    if (em->mode == MN_MODE_FULL && !ev_full_allowed(o, L, &past)) {
                        ev_prog_add(c, (double)L, NULL);
                        continue;
                    }
                    int32_t window = (int32_t)o->window;
                    if (!o->window_given && o->modes[0].mode == MN_MODE_MEMORY && cells_of[0])
                        window = (int32_t)cells_of[0];
                    /* rag: the cells of the largest memory mode (memory + recall at its largest K) */
                    for (int j = 0; j < o->n_modes && em->mode == MN_EVAL_MODE_RAG && !o->window_given; j++)
                        if (o->modes[j].mode == MN_MODE_MEMORY && cells_of[j] > window) window = (int32_t)cells_of[j];
                    char label[160], ans[256];
                    snprintf(label, sizeof label, "L=%ld depth %ld%% %s", L, o->depths[di], em->label);
                    int64_t cells = 0;
                    int hit = 0;
                    if ((rc = generate(c, em, prompt, n, npre, n - npost, q_ids, nq, probe, &hit, window, max_new,
                                       label, ans, sizeof ans, &cells))) {
                        rc = mn_error_prefix(rc, label);
                        break;
                    }
                    if (cells > cells_of[k]) cells_of[k] = cells;
                    const int ok = mn_needle_check(&t, ans);
                    correct[k] += ok, runs[k]++, paged_hit[k] += hit;
                    if (!first_answer[k][0]) {
                        snprintf(first_answer[k], sizeof first_answer[k], "%.*s", (int)sizeof first_answer[k] - 1, ans);
                        for (char *ch = first_answer[k]; *ch; ch++)
                            if (*ch == '"' || *ch == '\\' || (unsigned char)*ch < 0x20) *ch = ' ';
                    }
                }
                free(q_ids);
            }
            for (int k = 0; k < o->n_modes && !rc; k++) {
                if (!runs[k]) continue;
                const mn_eval_mode *em = &o->modes[k];
                ev_row(c, "{\"task\": \"passkey\", \"needle\": \"%s\", \"length\": %ld, \"depth\": %ld, \"mode\": \"%s\", \"adapter\": %s%s%s, "
                       "\"recall\": %d, \"scorer\": \"%s\", \"recall_at\": \"%s\", \"local\": %ld, \"needle_paged\": %d, \"trials\": %d, \"correct\": %d, \"accuracy\": %.4f, \"kv_cells\": %lld, "
                       "\"reader\": %s%s%s, \"exact\": \"%s\", \"example_answer\": \"%s\"}",
                       mn_needle_name((mn_needle_kind)o->needle), L, o->depths[di], ev_mode_name(em->mode),
                       em->ad >= 0 ? "\"" : "", em->ad >= 0 ? ev_base_name(o->ad_name[em->ad]) : "null",
                       em->ad >= 0 ? "\"" : "", em->recall, em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : "none",
                       em->recall ? (o->recall_late ? "after-recent" : "before-recent") : "none", em->recall ? o->recall_local : 0L,
                       paged_hit[k], runs[k],
                       correct[k], (double)correct[k] / runs[k], (long long)cells_of[k],
                       ev_reader_name(o, em) ? "\"" : "", ev_reader_name(o, em) ? ev_reader_name(o, em) : "null",
                       ev_reader_name(o, em) ? "\"" : "", em->recall ? (o->exact_kv ? "kv" : "tokens") : "none",
                       first_answer[k]);
                acc[k][li] += correct[k], cnt[k][li] += runs[k];
            }
        }
    }
    if (!rc) {
        ev_buf *b = &c->summary;
        ev_bprintf(b, "| mode |");
        for (int li = 0; li < o->n_lengths; li++) ev_bprintf(b, " %ld |", o->lengths[li]);
        ev_bprintf(b, "\n|---|");
        for (int li = 0; li < o->n_lengths; li++) ev_bprintf(b, "---|");
        ev_bprintf(b, "\n");
        for (int k = 0; k < o->n_modes; k++) {
            ev_bprintf(b, "| %s |", o->modes[k].label);
            for (int li = 0; li < o->n_lengths; li++)
                if (cnt[k][li]) ev_bprintf(b, " %.0f%% (%d/%d) |", 100.0 * acc[k][li] / cnt[k][li], acc[k][li], cnt[k][li]);
                else ev_bprintf(b, " - |");
            ev_bprintf(b, "\n");
        }
        ev_bprintf(b, "\n%s over all depths and trials\n",
               o->needle == MN_NEEDLE_FACT    ? "fact accuracy (the stated number, in digits or words)"
               : o->needle == MN_NEEDLE_COUNTS ? "counts accuracy (the count asked for among the statement's others)"
               : o->needle == MN_NEEDLE_MULTI ? "multi-key passkey exact-digit accuracy (the key asked for by its label)"
                                              : "passkey exact-digit accuracy");
    }
    free(acc), free(cnt), free(prompt), free(hay);
    return rc;
}

