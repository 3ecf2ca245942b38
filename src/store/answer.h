/* answer.h - answering from compressed memories: the one generation loop the
 * LLoCO path shares (`mnemo store ask` and the HTTP server).
 *
 * The context's cache is cleared and primed with the memories (in order, as
 * the reader's prefix: docmem.h), the group's decoder LoRA (if any) is
 * installed for this request only, the prompt (chat messages through the
 * model's template, or a raw prompt) is decoded in pieces so a cancel or a
 * deadline is noticed during a long prefill, and tokens are sampled until an
 * end-of-generation token, max_tokens, a cancel or the deadline. Each piece
 * of text goes to on_piece as soon as it is sampled (raw bytes: a multi-byte
 * character may arrive split over two calls).
 */
#ifndef MN_ANSWER_H
#define MN_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "memory/docmem.h"
#include "mnemo.h"
#include "model/forward.h"

/* Non-zero return stops generation (finish = CANCELLED). */
typedef int (*mn_answer_piece_fn)(void *user, const char *text, size_t len);

typedef struct {
    const mn_chat_msg *msgs; /* chat: rendered with the model's template */
    int n_msgs;
    const char *prompt;      /* raw prompt (completions) when msgs is NULL */
    const mn_docmem *const *mems; /* memories primed ahead of the prompt */
    int n_mems;
    const mn_lora_set *lora; /* decoder LoRA for this request, or NULL */
    int32_t max_tokens;      /* > 0; clamped to what the context leaves */
    mn_sampler_params sampling;
    int ignore_eos;          /* keep generating past end-of-generation tokens (benchmarks) */
    double deadline;         /* mn_answer_now() seconds; 0: none */
    const volatile int *cancel; /* polled between pieces and tokens; NULL: none */
    mn_answer_piece_fn on_piece;
    void *user;
    /* exact recall from the memories' exact parts (docmem.h): the last user
     * message (or the raw prompt's end) chooses up to recall.k segments,
     * fewer where the context has no room for them; k 0: none */
    mn_recall_opts recall;
} mn_answer_request;

typedef enum {
    MN_FINISH_STOP = 0,   /* end-of-generation token */
    MN_FINISH_LENGTH = 1, /* max_tokens or the context's end */
    MN_FINISH_CANCELLED = 2,
    MN_FINISH_TIMEOUT = 3,
} mn_finish;

typedef struct {
    int64_t prompt_tokens, completion_tokens;
    int32_t memory_slots;   /* cells the memories took: slots, raw tokens and recalled segments */
    int32_t recalled;       /* segments recall paged in, and their cells (within memory_slots) */
    int32_t recalled_cells;
    double t_first_token;   /* seconds from the call to the first sampled token */
    double t_total;
    size_t kv_bytes;        /* cache bytes at the end */
    int reader;             /* answered with the adapter's reader (recall paged, no LoRA of the request's own) */
    mn_finish finish;
    int64_t slots_out;      /* the memories' oldest slots left out to fit the context */
    int32_t reselections;   /* times recall chose again while answering (recall.every), */
    int32_t repaged;        /* and times its choice changed (the context primed again) */
} mn_answer_stats;

/* Runs one request on context c (its cache is replaced). a is the compressor
 * adapter the memories were made with (may be NULL when n_mems is 0).
 * MN_ERANGE when the memories and the prompt do not fit the context. */
int mn_answer(mn_context *c, const mn_adapter *a, const mn_answer_request *r, mn_answer_stats *st);

/* Monotonic seconds, the clock of `deadline`. */
double mn_answer_now(void);

const char *mn_finish_name(mn_finish f); /* "stop", "length", "cancelled", "timeout" */

/* The public asks (mn_doc_ask, mn_docstore_ask) over mn_answer: their
 * parameters checked, the pieces kept and passed on, the end turned into
 * the public stats and errors. */
int mn_ask_params_check(const mn_ask_params *p);
typedef struct {
    mn_text_fn fn; /* the caller's, optional */
    void *user;
    char *text;
    size_t len, cap;
    int oom;
} mn_answer_acc;
/* An mn_answer_piece_fn; user is an mn_answer_acc. */
int mn_answer_acc_piece(void *user, const char *text, size_t len);
/* After mn_answer returned rc: a stop is MN_ECANCELLED, the text goes to
 * *answer (optional; else freed), the stats to st (optional; kv_cells the
 * cache's at the end). Returns the final code. */
int mn_answer_acc_finish(mn_answer_acc *acc, int rc, const mn_answer_stats *as, int64_t kv_cells, char **answer,
                         mn_ask_stats *st);

#endif
