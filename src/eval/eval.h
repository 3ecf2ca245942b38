/* eval.h - the long-context evaluation, as a library: the tasks `mnemo eval`
 * runs, callable from the CLI, the server or a binding alike.
 *
 * Every task reads its text through the same bounded-cache streams the other
 * commands use (full attention, truncation, attention sinks, compressed
 * memory, memory + recall), so a row measures exactly what `mnemo ppl/chat
 * --mode M` would do; `rag` (retrieval of raw text into a full-attention
 * window) is the baseline a user would build by hand.
 *
 *   ppl       same scored tokens, growing context (task_ppl.c)
 *   passkey   needles hidden at a depth of filler text (task_passkey.c)
 *   qa        questions over long documents, L-Eval format (task_qa.c)
 *   recall    a span read back from its segments' memories (task_readback.c)
 *
 * Results leave through a sink: one JSON object per result (the rows the CLI
 * prints and docs/results keeps), progress, notes (a book skipped), and at the
 * end a markdown summary table. Errors are return codes with mn_last_error().
 */
#ifndef MN_EVAL_H
#define MN_EVAL_H

#include <stdint.h>

#include "mnemo.h"
#include "memory/memory.h"

#define MN_EVAL_MAX_ITEMS 64
#define MN_EVAL_MAX_ADAPTERS 8
/* beside the stream modes (mn_mode): retrieval of raw chunks into a full-attention window */
#define MN_EVAL_MODE_RAG 4
#define MN_EVAL_N_MODES 5
#define MN_EVAL_RAG_CHUNK 256

typedef enum { MN_EVAL_PPL, MN_EVAL_PASSKEY, MN_EVAL_QA, MN_EVAL_RECALL } mn_eval_task;

/* "ppl", "passkey", "qa", "recall" -> task; -1 if unknown */
int mn_eval_task_parse(const char *name);
const char *mn_eval_task_name(mn_eval_task t);
/* the repository's texts for a task (relative to the repository root) */
const char *mn_eval_default_source(mn_eval_task t);

/* One compared configuration: a stream mode (or MN_EVAL_MODE_RAG), its adapter
 * for memory, and the segments recall pages in (0: none; MN_RECALL_AUTO). */
typedef struct {
    int mode;
    int ad;
    int32_t recall;
    char label[96];
} mn_eval_mode;

typedef struct {
    mn_eval_task task;
    const mn_model *m;
    /* adapters for the memory mode, bound by the caller; names go into rows */
    int n_ad;
    const char *ad_name[MN_EVAL_MAX_ADAPTERS];
    const mn_memory_binding *bind[MN_EVAL_MAX_ADAPTERS];
    /* set by mn_eval_set_modes; memory first (the others' windows match its cells) */
    mn_eval_mode modes[MN_EVAL_MAX_ITEMS];
    int n_modes;
    long lengths[MN_EVAL_MAX_ITEMS];
    int n_lengths;
    long depths[MN_EVAL_MAX_ITEMS];
    int n_depths;
    long ratios[MN_EVAL_MAX_ITEMS]; /* recall task: memory ratios */
    int n_ratios;
    long recall[MN_EVAL_MAX_ITEMS]; /* memory modes: one per K (0: memory alone) */
    int n_recall;
    const char *src; /* ppl/recall: books DIR|FILE; passkey: haystack DIR|FILE; qa: set FILE */
    long threads, sinks, window, chunk, score, trials, max_docs, max_questions, seed;
    int window_given;   /* window fixed by the user; else matched to the memory mode's cells */
    long max_memory;    /* memory mode: newest slots kept (0: all) */
    long span_end;      /* ppl: the scored span ends at this token (0: at the longest length) */
    long samples, n_generate, span; /* recall task: spans, greedy reproductions, tokens (0: a segment) */
    int scorer, recall_late;
    long recall_local;  /* with segments paged, the newest raw tokens kept (0: all) */
    int exact_kv;       /* recall keeps each segment's 8-bit cells and copies them back (memory.h, mn_exact_form) */
    long exact_ram;     /* exact_kv: MiB of cells kept in RAM, the rest in a spill file */
    int needle;         /* passkey: mn_needle_kind */
    const mn_lora_set *lora; /* a decoder LoRA every mode's reader runs with (NULL: none) */
    const char *lora_name;   /* its file, for the rows */
    /* each adapter's reader (mn_adapter_reader; NULL: none): passkey and qa answer with it where a
     * memory mode pages segments (recall on), as `ask` does; --lora overrides it */
    const mn_lora_set *reader[MN_EVAL_MAX_ADAPTERS];
    const char *reader_name[MN_EVAL_MAX_ADAPTERS];
} mn_eval_opts;

/* The defaults of `mnemo eval` (lengths by task, depths 0..100 by 25, two trials ...). */
void mn_eval_default_opts(mn_eval_opts *o, mn_eval_task task);

/* Builds o->modes from a list "full,truncate,sinks,memory,rag": memory once
 * per adapter and recall K, memory first. Adapters and recall are set before. */
int mn_eval_set_modes(mn_eval_opts *o, const char *list);

/* Where results go. Any callback may be NULL. */
typedef struct {
    void (*row)(void *user, const char *json);         /* one result: a JSON object, one line */
    void (*progress)(void *user, const char *task, double done, double total, const char *label);
    void (*note)(void *user, const char *message);     /* a text skipped, a shortfall */
    void *user;
} mn_eval_sink;

/* Checks the options against each other (and the adapters they name): 0, or
 * MN_EINVAL with a message saying what to change. */
int mn_eval_check(const mn_eval_opts *o);

/* Checks the options (mn_eval_check), then runs the task; *summary
 * (optional) gets a malloc'd markdown table of the results. */
int mn_eval_run(const mn_eval_opts *o, const mn_eval_sink *sink, char **summary);

#endif
