/* task_qa.c - questions over long documents (L-Eval JSON lines; the formats:
 * qa.c). Closed questions are answered by the options' mean token
 * log-likelihood after the document and the question, free-form ones by the
 * SQuAD token F1 of a short greedy answer. With recall, each question chooses
 * the segments paged in again; rag reads the chunks BM25 picks for each
 * question in full attention at the memory's cells. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "eval/harness.h"
#include "eval/qa.h"
#include "eval/rag.h"
#include "memory/recall.h"

/* SQuAD's answer normalisation: lower case, punctuation removed (not a
 * break: "don't" is "dont"), articles dropped, split at white space. */
static int norm_words(const char *s, char words[][32], int cap) {
    int n = 0, wl = 0;
    char w[32];
    for (const char *p = s;; p++) {
        const unsigned char c = (unsigned char)*p;
        if (c && !isspace(c)) {
            if (!ispunct(c) && wl < 31) w[wl++] = (char)tolower(c);
            continue;
        }
        if (wl) {
            w[wl] = 0;
            if (strcmp(w, "a") && strcmp(w, "an") && strcmp(w, "the") && n < cap) memcpy(words[n++], w, 32);
            wl = 0;
        }
        if (!c) break;
    }
    return n;
}

/* token-level F1 of a predicted answer against the gold one (SQuAD) */
static double answer_f1(const char *pred, const char *gold) {
    static char a[256][32], b[256][32];
    const int na = norm_words(pred, a, 256), nb = norm_words(gold, b, 256);
    if (!na || !nb) return na == nb;
    int used[256] = {0}, common = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (!used[j] && !strcmp(a[i], b[j])) {
                used[j] = 1, common++;
                break;
            }
    if (!common) return 0;
    const double p = (double)common / na, r = (double)common / nb;
    return 2 * p * r / (p + r);
}

/* Greedy answer after the cells in ctx and a prompt, up to max_new tokens or
 * the end of the line; the cells it adds are dropped again. */
static int answer_free(const mn_eval_opts *o, mn_context *ctx, const int32_t *pid, int64_t np, float *lg, int max_new, char *out,
                       size_t cap) {
    const int32_t c0 = mn_kv_n_cells(ctx), V = mn_model_n_vocab(o->m);
    const mn_tokenizer *tk = mn_model_tokenizer(o->m);
    int32_t gen[128];
    int ng = 0;
    int rc = mn_decode(ctx, pid, (int32_t)np, lg, 0);
    out[0] = 0;
    while (!rc && ng < max_new && ng < 128) {
        const int32_t t = ev_argmax(lg, V);
        if (mn_token_is_eog(tk, t)) break;
        char piece[64];
        size_t pl = 0;
        const char *pp = mn_token_piece(tk, t, 0, &pl);
        if (pp && pl > sizeof piece) pl = sizeof piece;
        if (pp) memcpy(piece, pp, pl);
        else pl = 0;
        if (ng && memchr(piece, '\n', pl)) break;
        gen[ng++] = t;
        rc = mn_decode(ctx, &t, 1, lg, 0);
    }
    size_t got = 0;
    if (!rc && ng && mn_detokenize(tk, gen, ng, 0, out, cap, &got)) out[0] = 0;
    const int rc2 = mn_kv_drop(ctx, c0, mn_kv_n_cells(ctx));
    return rc ? rc : rc2;
}

/* mean log-likelihood of `cont` after the cells already in ctx; the cells it
 * adds are dropped again */
static int score_cont(mn_context *ctx, const int32_t *pfx, int64_t npfx, const int32_t *cont, int64_t ncont,
                      float *lg, int32_t V, double *mean) {
    const int32_t c0 = mn_kv_n_cells(ctx);
    int32_t buf[1024];
    const int64_t n = npfx + ncont;
    if (n > 1024 || ncont < 1) return mn_error(MN_ERANGE, "question and option of %lld tokens", (long long)n);
    memcpy(buf, pfx, sizeof(int32_t) * (size_t)npfx);
    memcpy(buf + npfx, cont, sizeof(int32_t) * (size_t)ncont);
    int rc = mn_decode(ctx, buf, (int32_t)(n - 1), lg, 1);
    if (!rc) {
        double s = 0;
        for (int64_t j = 0; j < ncont; j++) s += ev_log_softmax_at(lg + (size_t)(npfx - 1 + j) * V, V, cont[j]);
        *mean = s / (double)ncont;
    }
    int rc2 = mn_kv_drop(ctx, c0, mn_kv_n_cells(ctx));
    return rc ? rc : rc2;
}

int ev_task_qa(ev_ctx *c) {
    const mn_eval_opts *o = c->o;
    FILE *f = fopen(o->src, "r");
    if (!f) return mn_error(MN_EIO, "cannot open '%s': %s", o->src, strerror(errno));
    /* read the documents and their questions first, for the plan */
    typedef struct {
        int32_t *ids;
        int64_t n;
        mn_qa_item *q;
        int nq;
    } doc;
    doc *docs = NULL;
    int nd = 0, line = 0, rc = 0, multi_set = 0;
    double total = 0;
    char *buf = NULL;
    size_t cap = 0;
    while (getline(&buf, &cap, f) > 0 && !rc) {
        line++;
        if (o->max_docs && nd >= o->max_docs) break;
        cJSON *j = cJSON_Parse(buf);
        cJSON *in = cJSON_GetObjectItem(j, "input"), *ins = cJSON_GetObjectItem(j, "instructions"),
              *outs = cJSON_GetObjectItem(j, "outputs");
        if (!cJSON_IsString(in) || !cJSON_IsArray(ins) || !cJSON_IsArray(outs)) {
            rc = mn_error(MN_EFORMAT, "%s:%d: expected {\"input\": text, \"instructions\": [...], \"outputs\": [...]}",
                          o->src, line);
            cJSON_Delete(j);
            break;
        }
        doc d = {0};
        const int nq = cJSON_GetArraySize(ins);
        d.q = calloc((size_t)(nq > 0 ? nq : 1), sizeof(mn_qa_item));
        if (!d.q) rc = mn_error(MN_ENOMEM, "out of memory");
        for (int k = 0; !rc && k < nq && (!o->max_questions || d.nq < o->max_questions); k++) {
            cJSON *a = cJSON_GetArrayItem(ins, k), *b = cJSON_GetArrayItem(outs, k);
            char why[256];
            if (!cJSON_IsString(a) || !cJSON_IsString(b)) {
                rc = mn_error(MN_EFORMAT, "%s:%d: question %d: instructions and outputs are strings", o->src, line,
                              k + 1);
            } else if (mn_qa_parse(a->valuestring, b->valuestring, &d.q[d.nq], why, sizeof why)) {
                rc = mn_error(MN_EFORMAT, "%s:%d: question %d: %s", o->src, line, k + 1, why);
            } else {
                multi_set |= d.q[d.nq].kind == MN_QA_MULTI;
                d.nq++;
            }
        }
        const char *t = in->valuestring;
        if (!rc) rc = ev_tokenize(o->m, t, 0, &d.ids, &d.n);
        cJSON_Delete(j);
        if (rc || !d.nq) {
            for (int k = 0; k < d.nq; k++) mn_qa_item_free(&d.q[k]);
            free(d.ids), free(d.q);
            continue;
        }
        doc *nd2 = realloc(docs, sizeof(doc) * (size_t)(nd + 1));
        if (!nd2) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            break;
        }
        docs = nd2;
        docs[nd++] = d;
        total += (double)d.n * o->n_modes;
    }
    free(buf);
    fclose(f);
    /* a set where some questions have several right answers: every lettered question is answered by a set
     * of letters, so the count of answers gives nothing away */
    for (int di = 0; di < nd && multi_set; di++)
        for (int k = 0; k < docs[di].nq; k++) mn_qa_to_multi(&docs[di].q[k]);
    if (!rc && !nd) rc = mn_error(MN_EINVAL, "no questions in '%s'", o->src);
    const int32_t V = mn_model_n_vocab(o->m);
    float *lg = malloc(sizeof(float) * (size_t)V * 1024);
    if (!rc && !lg) rc = mn_error(MN_ENOMEM, "out of memory");
    int right[MN_EVAL_MAX_ITEMS] = {0}, asked[MN_EVAL_MAX_ITEMS] = {0}, asked_ff[MN_EVAL_MAX_ITEMS] = {0};
    double f1[MN_EVAL_MAX_ITEMS] = {0};
    int64_t cells_max[MN_EVAL_MAX_ITEMS] = {0};
    if (!rc) ev_prog_start(c, "qa", total);
    for (int di = 0; di < nd && !rc; di++) {
        doc *d = &docs[di];
        int64_t matched = 0, matched_max = 0;
        for (int k = 0; k < o->n_modes && !rc; k++) {
            const mn_eval_mode *em = &o->modes[k];
            int past = 0;
            if (em->mode == MN_MODE_FULL && !ev_full_allowed(o, d->n + 1024, &past)) {
                ev_prog_add(c, (double)d->n, NULL);
                continue;
            }
            const int rag = em->mode == MN_EVAL_MODE_RAG;
            int32_t window = (int32_t)o->window;
            if (!o->window_given && matched) window = (int32_t)(rag ? matched_max : matched);
            char label[160];
            snprintf(label, sizeof label, "doc %d/%d %s", di + 1, nd, em->label);
            ev_run r;
            /* rag: a full-attention context of the window, filled per question */
            mn_eval_mode full = *em;
            full.mode = MN_MODE_FULL, full.recall = 0;
            if ((rc = ev_run_open(o, rag ? &full : em, rag ? window : d->n, window, 1024, &r))) {
                rc = mn_error_prefix(rc, label);
                break;
            }
            /* the document through the mode, the last token with logits so a lazy stream has decoded its window */
            if (rag) ev_prog_add(c, (double)d->n, label);
            else {
                rc = ev_run_read(c, &r, d->ids, d->n - 1, label);
                if (!rc) rc = mn_stream_feed(r.s, d->ids + d->n - 1, 1, lg, 0);
                ev_note_cells(&r);
            }
            if (em->mode == MN_MODE_MEMORY && !matched) matched = r.max_cells;
            int32_t *rag_buf = rag ? malloc(sizeof(int32_t) * (size_t)window) : NULL;
            if (rag && !rag_buf) rc = mn_error(MN_ENOMEM, "out of memory");
            int ok_doc = 0, n_mc = 0, n_ff = 0;
            double f1_doc = 0;
            for (int qi = 0; qi < d->nq && !rc; qi++) {
                mn_qa_item *q = &d->q[qi];
                if (em->recall || rag) { /* the question's words choose what is read beside it */
                    int32_t *qid = NULL;
                    int64_t nqt = 0;
                    rc = ev_tokenize(o->m, q->stem, 0, &qid, &nqt);
                    if (!rc && nqt == 0) rc = mn_error(MN_EINVAL, "question %d is empty", qi + 1);
                    if (!rc && em->recall) {
                        rc = mn_stream_recall(r.s, qid, (int32_t)nqt);
                        if (!rc) rc = mn_stream_sync(r.s);
                    } else if (!rc) {
                        int64_t got = 0;
                        mn_kv_clear(r.ctx);
                        rc = mn_rag_select(o->m, d->ids, d->n, qid, (int32_t)nqt, MN_EVAL_RAG_CHUNK, window, rag_buf, &got, NULL,
                                           NULL);
                        for (int64_t i = 0; !rc && i < got; i += 512)
                            rc = mn_decode(r.ctx, rag_buf + i, (int32_t)(got - i < 512 ? got - i : 512), NULL, 0);
                    }
                    free(qid);
                    ev_note_cells(&r);
                    if (rc) {
                        rc = mn_error_prefix(rc, label);
                        break;
                    }
                }
                if (q->kind == MN_QA_FREE) { /* free-form: a short greedy answer, token F1 */
                    char *pq = malloc(strlen(q->stem) + 64), ans[512];
                    sprintf(pq, "\n\nQuestion: %s\nAnswer briefly.\nAnswer:", q->stem);
                    int32_t *pid = NULL;
                    int64_t np = 0;
                    rc = ev_tokenize(o->m, pq, 0, &pid, &np);
                    if (!rc && np > 1024 - 48) rc = mn_error(MN_ERANGE, "question %d: %lld tokens", qi + 1, (long long)np);
                    free(pq);
                    if (!rc && (rc = answer_free(o, r.ctx, pid, np, lg, 48, ans, sizeof ans))) rc = mn_error_prefix(rc, label);
                    free(pid);
                    if (!rc) f1_doc += answer_f1(ans, q->answer), n_ff++;
                    continue;
                }
                n_mc++;
                /* choice and tf: each option's text scored after the question; multi: the options are
                 * shown with their letters and each nonempty set of letters is scored */
                size_t plen = strlen(q->stem) + 96;
                for (int a = 0; q->kind == MN_QA_MULTI && a < q->n_opt; a++) plen += strlen(q->opt[a]) + 8;
                char *pq = malloc(plen);
                int pl = sprintf(pq, "\n\nQuestion: %s", q->stem);
                for (int a = 0; q->kind == MN_QA_MULTI && a < q->n_opt; a++)
                    pl += sprintf(pq + pl, "\n%c. %s", 'A' + a, q->opt[a]);
                sprintf(pq + pl, q->kind == MN_QA_MULTI ? "\nAnswer with every letter that applies.\nAnswer:"
                                                        : "\nAnswer:");
                int32_t *pid = NULL;
                int64_t np = 0;
                if ((rc = ev_tokenize(o->m, pq, 0, &pid, &np))) pid = NULL;
                free(pq);
                double best = -INFINITY;
                int pick = -1;
                const int n_cand = q->kind == MN_QA_MULTI ? (1 << q->n_opt) - 1 : q->n_opt;
                for (int a = 0; !rc && a < n_cand; a++) {
                    char letters[MN_QA_MAX_OPT + 1];
                    if (q->kind == MN_QA_MULTI) mn_qa_letters((unsigned)a + 1, letters);
                    const char *text = q->kind == MN_QA_MULTI ? letters : q->opt[a];
                    char *co = malloc(strlen(text) + 2);
                    sprintf(co, " %s", text);
                    int32_t *cid;
                    int64_t nc;
                    double s = 0;
                    const int tok_rc = ev_tokenize(o->m, co, 0, &cid, &nc);
                    free(co);
                    if (tok_rc) rc = tok_rc;
                    else {
                        if ((rc = score_cont(r.ctx, pid, np, cid, nc, lg, V, &s))) rc = mn_error_prefix(rc, label);
                        free(cid);
                    }
                    if (!rc && s > best) best = s, pick = a;
                }
                if (pid) free(pid);
                pid = NULL;
                ok_doc += q->kind == MN_QA_MULTI ? (unsigned)pick + 1 == q->gold : (unsigned)pick == q->gold;
            }
            if (!rc) {
                ev_row(c, "{\"task\": \"qa\", \"set\": \"%s\", \"doc\": %d, \"doc_tokens\": %lld, \"mode\": \"%s\", "
                       "\"adapter\": %s%s%s, \"recall\": %d, \"scorer\": \"%s\", \"local\": %ld, \"window\": %d, "
                       "\"questions\": %d, \"correct\": %d, \"free_form\": %d, \"f1_sum\": %.4f, \"kv_cells\": %lld, "
                       "\"reader\": %s%s%s}",
                       ev_base_name(o->src), di, (long long)d->n, ev_mode_name(em->mode), em->ad >= 0 ? "\"" : "",
                       em->ad >= 0 ? ev_base_name(o->ad_name[em->ad]) : "null", em->ad >= 0 ? "\"" : "", em->recall,
                       em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : rag ? "bm25" : "none",
                       em->recall ? o->recall_local : 0L,
                       em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE || rag ? window : 0, n_mc, ok_doc,
                       n_ff, f1_doc, (long long)r.max_cells, ev_reader_name(o, em) ? "\"" : "",
                       ev_reader_name(o, em) ? ev_reader_name(o, em) : "null", ev_reader_name(o, em) ? "\"" : "");
                right[k] += ok_doc, asked[k] += n_mc, f1[k] += f1_doc, asked_ff[k] += n_ff;
                if (r.max_cells > cells_max[k]) cells_max[k] = r.max_cells;
            }
            /* after the questions: with recall, the paged cells count */
            if (em->mode == MN_MODE_MEMORY && r.max_cells > matched_max) matched_max = r.max_cells;
            free(rag_buf);
            ev_run_close(&r);
        }
    }
    if (!rc) {
        ev_buf *b = &c->summary;
        ev_bprintf(b, "| mode | accuracy (multiple choice) | F1 (free-form) | questions | most KV cells |\n"
               "|---|---|---|---|---|\n");
        for (int k = 0; k < o->n_modes; k++) {
            if (!asked[k] && !asked_ff[k]) continue;
            ev_bprintf(b, "| %s |", o->modes[k].label);
            if (asked[k]) ev_bprintf(b, " %.1f%% |", 100.0 * right[k] / asked[k]);
            else ev_bprintf(b, " - |");
            if (asked_ff[k]) ev_bprintf(b, " %.3f |", f1[k] / asked_ff[k]);
            else ev_bprintf(b, " - |");
            ev_bprintf(b, " %d | %lld |\n", asked[k] + asked_ff[k], (long long)cells_max[k]);
        }
        ev_bprintf(b, "\nmultiple choice by the options' mean token log-likelihood after the document and question; "
               "free-form: a greedy answer of at most 48 tokens, SQuAD token F1\n");
    }
    for (int di = 0; di < nd; di++) {
        for (int qi = 0; qi < docs[di].nq; qi++) mn_qa_item_free(&docs[di].q[qi]);
        free(docs[di].q), free(docs[di].ids);
    }
    free(docs), free(lg);
    return rc;
}

