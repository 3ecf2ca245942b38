/* task_ppl.c - perplexity on the same scored tokens with growing context:
 * per book a fixed span of `score` tokens; length L gives the model the
 * L - score tokens before it, read through the mode. With recall, the 128
 * tokens read before each scored piece choose the segments paged in. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "eval/harness.h"
#include "memory/recall.h"

typedef struct {
    double nll_sum[MN_EVAL_MAX_ITEMS][MN_EVAL_MAX_ITEMS]; /* [mode][length] */
    int64_t n[MN_EVAL_MAX_ITEMS][MN_EVAL_MAX_ITEMS];
    int64_t cells[MN_EVAL_MAX_ITEMS][MN_EVAL_MAX_ITEMS];
} ppl_table;

/* Scores ids[L - score .. L) given ids[0 .. L - score) through a mode. */
static int ppl_one(ev_ctx *c, const mn_eval_mode *em, const int32_t *ids, int64_t L, int32_t window,
                   const char *label, double *nll, int64_t *cells, int32_t *mem_slots) {
    const mn_eval_opts *o = c->o;
    ev_run r;
    int rc = ev_run_open(o, em, L, window, 0, &r);
    if (rc) return rc;
    const int32_t V = mn_model_n_vocab(o->m), S = (int32_t)o->score;
    int32_t chunk = (int32_t)o->chunk;
    if ((em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE) && chunk > r.window - (int32_t)o->sinks - 1)
        chunk = r.window - (int32_t)o->sinks - 1;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)chunk);
    if (!lg) {
        ev_run_close(&r);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    /* rows L-S-1 .. L-2 predict the scored tokens L-S .. L-1 */
    const int64_t ctx_n = L - S - 1;
    rc = ev_run_read(c, &r, ids, ctx_n, label);
    r.max_cells = 0;
    double sum = 0;
    for (int64_t i = ctx_n; !rc && i < L - 1;) {
        const int32_t p = (int32_t)(L - 1 - i < chunk ? L - 1 - i : chunk);
        /* recall: the text just read (up to 128 tokens before the piece) chooses what is paged in beside the
         * memory, as a reader's recent words would; causal, the piece itself is not seen */
        if (em->recall && i > 0) {
            const int64_t nq = i < 128 ? i : 128;
            if ((rc = mn_stream_recall(r.s, ids + i - nq, (int32_t)nq))) break;
        }
        if ((rc = mn_stream_feed(r.s, ids + i, p, lg, 1))) break;
        ev_note_cells(&r);
        for (int32_t k = 0; k < p; k++) sum -= ev_log_softmax_at(lg + (size_t)k * V, V, ids[i + k + 1]);
        ev_prog_add(c, p, label);
        i += p;
    }
    *nll = sum / S;
    *cells = r.max_cells;
    *mem_slots = mn_stream_n_memory(r.s);
    free(lg);
    ev_run_close(&r);
    return rc;
}

int ev_task_ppl(ev_ctx *c) {
    const mn_eval_opts *o = c->o;
    char **files;
    int n_all, rc = ev_list_texts(o->src, &files, &n_all);
    if (rc) return rc;
    const int n_files = o->max_docs && n_all > o->max_docs ? (int)o->max_docs : n_all;
    /* tokenise first: the plan (and the ETA) needs every book's length */
    int32_t **tok = calloc((size_t)n_files, sizeof(int32_t *));
    int64_t *ntok = calloc((size_t)n_files, sizeof(int64_t));
    ppl_table *tb = calloc(1, sizeof *tb);
    if (!tok || !ntok || !tb) rc = mn_error(MN_ENOMEM, "out of memory");
    double total = 0;
    for (int f = 0; f < n_files && !rc; f++) {
        rc = ev_load_tokens(o->m, files[f], &tok[f], &ntok[f]);
        for (int li = 0; li < o->n_lengths && !rc; li++)
            if (o->lengths[li] <= ntok[f] && (!o->span_end || o->lengths[li] <= o->span_end))
                total += (double)o->lengths[li] * o->n_modes;
    }
    if (!rc) ev_prog_start(c, "ppl", total);
    for (int f = 0; f < n_files && !rc; f++) {
        /* the scored span: the last `score` tokens of the longest length the book allows */
        long Lb = 0;
        for (int li = 0; li < o->n_lengths; li++)
            if (o->lengths[li] <= ntok[f] && o->lengths[li] > Lb) Lb = o->lengths[li];
        if (o->span_end && Lb) { /* a span fixed across runs: lengths past it are skipped */
            Lb = o->span_end <= ntok[f] ? o->span_end : 0;
            if (!Lb)
                ev_note(c, "%s has %lld tokens, fewer than --span-end %ld; skipped", files[f], (long long)ntok[f],
                        o->span_end);
        }
        if (!Lb) {
            if (!o->span_end)
                ev_note(c, "%s has %lld tokens, shorter than every length; skipped", files[f], (long long)ntok[f]);
            continue;
        }
        for (int li = 0; li < o->n_lengths && !rc; li++) {
            const long L = o->lengths[li];
            if (L > ntok[f] || L > Lb) continue;
            const int32_t *ids = tok[f] + (Lb - L); /* ends where the span ends */
            int64_t matched = 0;
            for (int k = 0; k < o->n_modes && !rc; k++) {
                const mn_eval_mode *em = &o->modes[k];
                int past = 0;
                if (em->mode == MN_MODE_FULL && !ev_full_allowed(o, L, &past)) {
                    ev_prog_add(c, (double)L, NULL);
                    continue;
                }
                int32_t window = (int32_t)o->window;
                if (!o->window_given && matched) window = (int32_t)matched;
                char label[160];
                snprintf(label, sizeof label, "%s L=%ld %s", ev_base_name(files[f]), L, em->label);
                double nll = 0;
                int64_t cells = 0;
                int32_t slots = 0;
                const double t0 = ev_now();
                if ((rc = ppl_one(c, em, ids, L, window, label, &nll, &cells, &slots))) {
                    rc = mn_error_prefix(rc, label);
                    break;
                }
                if (em->mode == MN_MODE_MEMORY && !matched) matched = cells;
                if (em->mode == MN_MODE_MEMORY && cells > mn_model_n_ctx_train(o->m)) past = 1;
                ev_row(c,
                       "{\"task\": \"ppl\", \"book\": \"%s\", \"length\": %ld, \"mode\": \"%s\", \"adapter\": %s%s%s, "
                       "\"window\": %d, \"scored\": %ld, \"nll\": %.6f, \"ppl\": %.4f, \"kv_cells\": %lld, "
                       "\"kv_bytes\": %lld, \"memory_slots\": %d, \"max_memory\": %ld, \"recall\": %d, "
                       "\"scorer\": \"%s\", \"local\": %ld, \"past_trained\": %s, \"seconds\": %.2f}",
                       ev_base_name(files[f]), L, ev_mode_name(em->mode), em->ad >= 0 ? "\"" : "",
                       em->ad >= 0 ? ev_base_name(o->ad_name[em->ad]) : "null", em->ad >= 0 ? "\"" : "",
                       em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE ? window : 0, o->score, nll,
                       exp(nll), (long long)cells, (long long)ev_kv_bytes(o->m, cells), slots,
                       em->mode == MN_MODE_MEMORY ? o->max_memory : 0, em->recall,
                       em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : "none",
                       em->recall ? o->recall_local : 0L, past ? "true" : "false", ev_now() - t0);
                tb->nll_sum[k][li] += nll;
                tb->n[k][li]++;
                if (cells > tb->cells[k][li]) tb->cells[k][li] = cells;
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
            for (int li = 0; li < o->n_lengths; li++) {
                if (!tb->n[k][li]) ev_bprintf(b, " - |");
                else
                    ev_bprintf(b, " %.2f (%lld cells) |", exp(tb->nll_sum[k][li] / (double)tb->n[k][li]),
                               (long long)tb->cells[k][li]);
            }
            ev_bprintf(b, "\n");
        }
        ev_bprintf(b,
                   "\nperplexity on the same %ld scored tokens per book (exp of the mean NLL over %d book(s)); "
                   "cells: most KV cells held while scoring\n",
                   o->score, n_files);
    }
    for (int f = 0; tok && f < n_files; f++) free(tok[f]);
    free(tok), free(ntok), free(tb);
    ev_free_list(files, n_all);
    return rc;
}
