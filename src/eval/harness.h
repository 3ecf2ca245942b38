/* harness.h - what the evaluation tasks share (inside src/eval only): the
 * streams a mode reads through, the texts, the sink's rows, progress and the
 * summary table. */
#ifndef MN_EVAL_HARNESS_H
#define MN_EVAL_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "eval/eval.h"

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} ev_buf;

/* A task's run: its options, where results go, progress and the summary. */
typedef struct {
    const mn_eval_opts *o;
    const mn_eval_sink *sink;
    const char *what;
    double total, done;
    ev_buf summary;
} ev_ctx;

/* printf into a growing buffer (a failed allocation is remembered, not fatal) */
void ev_bprintf(ev_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* one result row to the sink (a JSON object on one line) */
void ev_row(ev_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* a note to the sink (a skipped text) */
void ev_note(ev_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ev_prog_start(ev_ctx *c, const char *what, double total);
void ev_prog_add(ev_ctx *c, double units, const char *label);

/* A mode's stream over its own context. */
typedef struct {
    mn_context *ctx;
    mn_stream *s;
    int32_t window; /* truncate/sinks window; memory: cells allocated */
    int32_t max_cells;
} ev_run;

/* A stream for n_tokens of text plus `extra` cells of decoding outside it. */
/* The decoder LoRA mode em reads and answers with: --lora, else the adapter's reader where a memory
 * mode pages segments for a question (passkey, qa); NULL: none. Its file's name for rows, or NULL. */
const mn_lora_set *ev_lora(const mn_eval_opts *o, const mn_eval_mode *em);
const char *ev_reader_name(const mn_eval_opts *o, const mn_eval_mode *em);
int ev_run_open(const mn_eval_opts *o, const mn_eval_mode *em, int64_t n_tokens, int32_t window, int32_t extra,
                ev_run *r);
void ev_run_close(ev_run *r);
void ev_note_cells(ev_run *r);
/* Feeds n tokens without logits, in pieces that report progress. */
int ev_run_read(ev_ctx *c, ev_run *r, const int32_t *ids, int64_t n, const char *label);

const char *ev_mode_name(int mode);
double ev_now(void); /* monotonic seconds */
double ev_log_softmax_at(const float *lg, int32_t V, int32_t target);
int32_t ev_argmax(const float *lg, int32_t V);
int64_t ev_kv_bytes(const mn_model *m, int64_t cells); /* f16 K and V */
const char *ev_base_name(const char *path);
/* Is full attention at length L allowed: within the trained context, or the
 * first requested length past it (*past: beyond the trained positions). */
int ev_full_allowed(const mn_eval_opts *o, long L, int *past);

/* The .txt files of a directory (sorted), or the path itself if a file. */
int ev_list_texts(const char *src, char ***out, int *n);
void ev_free_list(char **l, int n);
/* A text file, Gutenberg header/footer and CRs removed, tokenised without BOS. */
int ev_load_tokens(const mn_model *m, const char *path, int32_t **ids, int64_t *n);
int ev_tokenize(const mn_model *m, const char *s, int special, int32_t **ids, int64_t *n);
/* The chat template around a user message `before` + [document] + `after`,
 * the reply started with reply_prefix: *pre and *post (malloc'd). */
int ev_chat_wrap(const mn_model *m, const char *before, const char *after, const char *reply_prefix, char **pre,
                 char **post);

int ev_task_ppl(ev_ctx *c);
int ev_task_passkey(ev_ctx *c);
int ev_task_qa(ev_ctx *c);
int ev_task_readback(ev_ctx *c);

#endif
