/* task_readback.c - `eval recall`, the in-context auto-encoding test (ICAE,
 * UIO): the decoder holds only [sinks | one span's segment memories] and
 * reads the span back; token accuracy under teacher forcing (against the same
 * decoder with no memory) and ROUGE-L of a greedy reproduction. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/harness.h"
#include "memory/uio.h"
#include "model/forward.h"

/* ROUGE-L F1 of two token sequences (longest common subsequence). */
static double rouge_l(const int32_t *a, int na, const int32_t *b, int nb) {
    if (!na || !nb) return 0;
    int *prev = calloc((size_t)nb + 1, sizeof(int)), *cur = calloc((size_t)nb + 1, sizeof(int));
    if (!prev || !cur) {
        free(prev), free(cur);
        return NAN;
    }
    for (int i = 1; i <= na; i++) {
        for (int j = 1; j <= nb; j++)
            cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        int *t = prev;
        prev = cur, cur = t;
    }
    const double lcs = prev[nb], p = lcs / nb, r = lcs / na;
    free(prev), free(cur);
    return p + r > 0 ? 2 * p * r / (p + r) : 0;
}

/* A span of n = k * l tokens read back after [sinks | the memories of its k
 * segments, in order] (m > 0 slots per segment) or [sinks] alone (m = 0):
 * teacher-forced accuracy of rows predicting span[1..n), and with gen,
 * ROUGE-L of a greedy reproduction of span[1..n) from span[0]. */
static int recall_one(const mn_eval_opts *o, mn_uio *u, int32_t m, const int32_t *sinks, int32_t S, const int32_t *span, int32_t l,
                      int32_t n, int gen, float *k, float *v, float *lg, int32_t *out, double *acc, double *rouge) {
    const int32_t segs = n / l;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = S + segs * m + 2 * n + 2;
    cp.n_batch = 512;
    cp.n_threads = (int)o->threads;
    mn_context *ctx;
    int rc = mn_context_create(o->m, &cp, &ctx);
    if (rc) return rc;
    const int32_t V = mn_model_n_vocab(o->m);
    if (S) rc = mn_decode(ctx, sinks, S, NULL, 0);
    int32_t pos[4096];
    for (int32_t g = 0; !rc && m && g < segs; g++) {
        /* segments are encoded alone; their memories follow each other */
        rc = mn_uio_compress(u, span + (size_t)g * l, k, v);
        for (int32_t j = 0; j < m && j < 4096; j++) pos[j] = S + g * m + j;
        if (!rc) rc = mn_kv_append(ctx, m, pos, k, v, 0);
    }
    const int32_t c0 = mn_kv_n_cells(ctx);
    if (!rc) rc = mn_decode(ctx, span, n - 1, lg, 1);
    int hit = 0;
    for (int32_t j = 0; !rc && j + 1 < n; j++) hit += ev_argmax(lg + (size_t)j * V, V) == span[j + 1];
    *acc = (double)hit / (n - 1);
    *rouge = NAN;
    if (!rc && gen) {
        rc = mn_kv_drop(ctx, c0, mn_kv_n_cells(ctx));
        if (!rc) rc = mn_decode(ctx, span, 1, lg, 0);
        int32_t g = 0;
        while (!rc && g < n - 1) {
            const int32_t t = ev_argmax(lg, V);
            out[g++] = t;
            if (g < n - 1) rc = mn_decode(ctx, &t, 1, lg, 0);
        }
        if (!rc) *rouge = rouge_l(span + 1, n - 1, out, g);
    }
    mn_context_free(ctx);
    return rc;
}

int ev_task_readback(ev_ctx *c) {
    const mn_eval_opts *o = c->o;
    char **files;
    int n_files, rc = ev_list_texts(o->src, &files, &n_files);
    if (rc) return rc;
    const mn_uio_params base = o->bind[0]->uio.params;
    const int32_t l = base.l, S = (int32_t)o->sinks, KD = mn_model_kv_dim(o->m), L = mn_model_n_layer(o->m);
    const int32_t N = o->span ? (int32_t)o->span : l; /* mn_eval_check: a multiple of l */
    /* samples: spans spread over the books, after their first 2,000 tokens */
    const int ns = (int)o->samples;
    int32_t *segs = malloc(sizeof(int32_t) * (size_t)ns * (size_t)N), *snk = malloc(sizeof(int32_t) * (size_t)ns * (S + 1));
    int got = 0;
    for (int f = 0; got < ns && f < n_files * ns; f++) {
        int32_t *t;
        int64_t n;
        if ((rc = ev_load_tokens(o->m, files[f % n_files], &t, &n))) break;
        const int64_t span = n - 2000 - N;
        if (span > 0) {
            const int64_t at = 2000 + span * (f / n_files + 1) / (ns / n_files + 2);
            memcpy(segs + (size_t)got * N, t + at, sizeof(int32_t) * (size_t)N);
            memcpy(snk + (size_t)got * (S + 1), t, sizeof(int32_t) * (size_t)S);
            got++;
        }
        free(t);
    }
    ev_free_list(files, n_files);
    const int32_t V = mn_model_n_vocab(o->m), mmax = l; /* m <= l at any ratio */
    float *k = malloc(sizeof(float) * (size_t)L * mmax * KD), *v = malloc(sizeof(float) * (size_t)L * mmax * KD);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)N);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)N);
    if (!rc && (!segs || !snk || !k || !v || !lg || !out)) rc = mn_error(MN_ENOMEM, "out of memory");
    if (!rc && got == 0)
        rc = mn_error(MN_EINVAL, "%s: no text holds a span of %d tokens after its first 2000 (each needs more than %d tokens)",
                      o->src, N, 2000 + N);
    if (!rc && got < ns) ev_note(c, "only %d spans of %d tokens found", got, N);
    double acc[MN_EVAL_MAX_ITEMS], rg[MN_EVAL_MAX_ITEMS], acc0 = 0;
    int nrg[MN_EVAL_MAX_ITEMS];
    if (!rc) ev_prog_start(c, "recall", (double)got * (o->n_ratios + 1) * N);
    for (int s = 0; !rc && s < got; s++) {
        double a, r;
        if ((rc = recall_one(o, NULL, 0, snk + (size_t)s * (S + 1), S, segs + (size_t)s * N, l, N, 0, k, v, lg, out, &a,
                             &r)))
            break;
        acc0 += a;
        ev_row(c, "{\"task\": \"recall\", \"sample\": %d, \"ratio\": null, \"segment\": %d, \"length\": %d, "
               "\"memory_slots\": 0, \"token_accuracy\": %.4f}", s, l, N, a);
        ev_prog_add(c, N, "no memory");
    }
    for (int ri = 0; !rc && ri < o->n_ratios; ri++) {
        mn_uio_params p = base;
        p.m = l / (int32_t)o->ratios[ri];
        mn_uio *u = NULL;
        if ((rc = mn_uio_create(o->m, &p, (int)o->threads, &u))) break;
        acc[ri] = rg[ri] = 0, nrg[ri] = 0;
        for (int s = 0; !rc && s < got; s++) {
            double a, r;
            const int gen = s < o->n_generate;
            char label[64];
            snprintf(label, sizeof label, "ratio %ld sample %d", o->ratios[ri], s + 1);
            if ((rc = recall_one(o, u, p.m, snk + (size_t)s * (S + 1), S, segs + (size_t)s * N, l, N, gen, k, v, lg, out,
                                 &a, &r)))
                break;
            acc[ri] += a;
            if (gen) rg[ri] += r, nrg[ri]++;
            char rg_s[32];
            if (gen) snprintf(rg_s, sizeof rg_s, "%.4f", r);
            else snprintf(rg_s, sizeof rg_s, "null");
            ev_row(c, "{\"task\": \"recall\", \"sample\": %d, \"ratio\": %ld, \"segment\": %d, \"length\": %d, "
                   "\"memory_slots\": %d, \"token_accuracy\": %.4f, \"rouge_l\": %s}",
                   s, o->ratios[ri], l, N, N / l * p.m, a, rg_s);
            ev_prog_add(c, N, label);
        }
        mn_uio_free(u);
    }
    if (!rc && got) {
        ev_buf *b = &c->summary;
        ev_bprintf(b, "| memory | slots | token accuracy | ROUGE-L (greedy) |\n|---|---|---|---|\n");
        ev_bprintf(b, "| none (sinks only) | 0 | %.1f%% | - |\n", 100 * acc0 / got);
        for (int ri = 0; ri < o->n_ratios; ri++) {
            ev_bprintf(b, "| ratio %ld | %ld | %.1f%% |", o->ratios[ri], N / o->ratios[ri], 100 * acc[ri] / got);
            if (nrg[ri]) ev_bprintf(b, " %.3f (%d) |\n", rg[ri] / nrg[ri], nrg[ri]);
            else ev_bprintf(b, " - |\n");
        }
        ev_bprintf(b, "\n%d spans of %d tokens (%d segments each) read back after their memory; accuracy = next-token "
               "argmax under teacher forcing\n", got, N, N / l);
    }
    free(segs), free(snk), free(k), free(v), free(lg), free(out);
    return rc;
}

