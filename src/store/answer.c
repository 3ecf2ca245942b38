/* answer.c - the shared answer loop (see answer.h). */
#include "store/answer.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

/* Prompt tokens decoded per call: small enough that a cancel or deadline is
 * noticed within a fraction of a second of prefill. */
#define PREFILL_PIECE 256

double mn_answer_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *mn_finish_name(mn_finish f) {
    switch (f) {
    case MN_FINISH_STOP: return "stop";
    case MN_FINISH_LENGTH: return "length";
    case MN_FINISH_CANCELLED: return "cancelled";
    case MN_FINISH_TIMEOUT: return "timeout";
    }
    return "?";
}

static int tokenize_all(const mn_tokenizer *tok, const char *text, int parse_special, int32_t **ids, int64_t *n) {
    size_t len = strlen(text);
    int64_t cap = (int64_t)len + 16, got = 0;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory tokenizing the prompt");
    int rc = mn_tokenize(tok, text, len, 1, parse_special, buf, cap, &got);
    if (rc == MN_ERANGE && got > cap) {
        int32_t *nb = realloc(buf, sizeof(int32_t) * (size_t)got);
        if (!nb) {
            free(buf);
            return mn_error(MN_ENOMEM, "out of memory tokenizing the prompt");
        }
        buf = nb;
        cap = got;
        rc = mn_tokenize(tok, text, len, 1, parse_special, buf, cap, &got);
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *ids = buf;
    *n = got;
    return 0;
}

static int stopped(const mn_answer_request *r, mn_answer_stats *st) {
    if (r->cancel && *r->cancel) {
        st->finish = MN_FINISH_CANCELLED;
        return 1;
    }
    if (r->deadline > 0 && mn_answer_now() > r->deadline) {
        st->finish = MN_FINISH_TIMEOUT;
        return 1;
    }
    return 0;
}

int mn_answer(mn_context *c, const mn_adapter *a, const mn_answer_request *r, mn_answer_stats *st) {
    const double t0 = mn_answer_now();
    memset(st, 0, sizeof *st);
    if (!c || !r || (!r->msgs && !r->prompt) || (r->n_mems > 0 && !a) || r->max_tokens <= 0)
        return mn_error(MN_EINVAL, "answer: bad request");
    const mn_model *m = mn_context_model(c);
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    const int32_t V = mn_model_n_vocab(m);
    char *prompt = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    float *logits = NULL;
    mn_sampler *smp = NULL;
    /* recall: its options, the query (the last user message, then the answer so far) and what it paged */
    mn_recall_opts ro = r->recall;
    int32_t *q = NULL, *all = NULL; /* all: the prompt and the answer so far, read again on re-selection */
    int64_t nq = 0;
    mn_docmem_paged pg;
    memset(&pg, 0, sizeof pg);
    int rc;
    mn_kv_clear(c);
    /* installed before the memory is primed: a summary memory's cells are the
     * decoder's own reading of the embeddings, so the group's LoRA (trained
     * that way, train/qatrain.h and memtrain's decoder LoRA) shapes them too */
    /* without a LoRA of its own, a request over memories with recall on answers with the adapter's reader,
     * trained to read details back from exact text (the paged segments, a short document's raw tokens) */
    const mn_lora_set *lora = r->lora;
    if (!lora && r->n_mems > 0 && r->recall.k != 0 && mn_adapter_reader(a)) lora = mn_adapter_reader(a);
    st->reader = lora && lora == mn_adapter_reader(a);
    if ((rc = mn_context_set_lora(c, lora))) goto done;
    if (r->msgs) {
        if ((rc = mn_chat_format(tok, r->msgs, r->n_msgs, 1, &prompt))) goto done;
        rc = tokenize_all(tok, prompt, 1, &ids, &n);
    } else {
        rc = tokenize_all(tok, r->prompt, 0, &ids, &n);
    }
    if (rc) goto done;
    if (r->n_mems > 0) {
        ro.k = mn_docmem_recall_k(r->mems, r->n_mems, ro.k); /* auto: a count for these memories */
        /* memories longer than the context keep their newest slots, with room left for the prompt and the
         * answer (up to a quarter of the context); recall still chooses among every segment */
        const int64_t n_ctx = mn_context_n_ctx(c), answer_room = r->max_tokens < n_ctx / 4 ? r->max_tokens : n_ctx / 4;
        ro.fit = 1;
        ro.reserve = (int32_t)(n + answer_room < n_ctx ? n + answer_room : n_ctx);
        if (ro.k > 0) {
            /* as many segments as the context leaves room for beside the raw tokens, the prompt and the answer */
            int64_t raw = 0;
            for (int i = 0; i < r->n_mems; i++) raw += r->mems[i]->n_raw;
            while (ro.k > 0 && raw + mn_docmem_recall_cells(r->mems, r->n_mems, ro.k) + ro.reserve > n_ctx) ro.k--;
        }
        if (ro.k > 0) { /* the query: the last user message, or the raw prompt */
            const char *qt = r->prompt;
            for (int i = r->n_msgs - 1; i >= 0 && r->msgs && !qt; i--)
                if (r->msgs[i].role && !strcmp(r->msgs[i].role, "user")) qt = r->msgs[i].content;
            if (qt && (rc = tokenize_all(tok, qt, 0, &q, &nq))) goto done;
            if (nq > 0 && q[0] == mn_token_bos(tok)) memmove(q, q + 1, sizeof(int32_t) * (size_t)--nq);
            if (nq == 0) ro.k = 0;
        }
        rc = mn_docmem_prime_recall(c, a, r->mems, r->n_mems, &ro, q, (int32_t)nq, NULL, &pg);
        if (rc) goto done;
        st->recalled = pg.n, st->recalled_cells = pg.cells, st->slots_out = pg.slots_out;
    }
    /* re-selection needs the query and everything read after the memory, with room for the answer */
    const int reselect = pg.n > 0 && ro.every > 0 && !mn_recall_scorer_needs_q(ro.scorer);
    st->memory_slots = mn_kv_n_cells(c);
    st->prompt_tokens = n;
    const int64_t room = (int64_t)mn_context_n_ctx(c) - mn_kv_n_cells(c) - n;
    if (room < 1) {
        rc = mn_error(MN_ERANGE, "%lld prompt tokens after %d memory cells leave no room in the context of %d",
                      (long long)n, mn_kv_n_cells(c), mn_context_n_ctx(c));
        goto done;
    }
    const int64_t max_new = r->max_tokens < room ? r->max_tokens : room;
    if (reselect) {
        int32_t *nqb = realloc(q, sizeof(int32_t) * (size_t)(nq + max_new));
        if (nqb) q = nqb;
        if (!nqb || !(all = malloc(sizeof(int32_t) * (size_t)(n + max_new)))) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(all, ids, sizeof(int32_t) * (size_t)n);
    }
    if ((rc = mn_sampler_create(&r->sampling, V, &smp))) goto done;
    if (!(logits = malloc(sizeof(float) * (size_t)V))) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i += PREFILL_PIECE) {
        if (stopped(r, st)) goto done;
        int32_t piece = (int32_t)(n - i < PREFILL_PIECE ? n - i : PREFILL_PIECE);
        if ((rc = mn_decode(c, ids + i, piece, i + piece == n ? logits : NULL, 0))) goto done;
    }
    for (int64_t i = 0; i < n; i++) mn_sampler_accept(smp, ids[i]);
    st->finish = MN_FINISH_LENGTH;
    char piece[256];
    mn_turn turn;
    mn_turn_init(&turn, tok);
    for (int64_t g = 0; g < max_new; g++) {
        if (stopped(r, st)) break;
        int32_t id = mn_sampler_sample(smp, logits);
        if (id < 0) {
            rc = id;
            break;
        }
        if (g == 0) st->t_first_token = mn_answer_now() - t0;
        mn_sampler_accept(smp, id);
        if (!r->ignore_eos && mn_turn_end(&turn, tok, id)) {
            st->finish = MN_FINISH_STOP;
            break;
        }
        st->completion_tokens++;
        size_t len = 0;
        const char *p = mn_token_piece(tok, id, 0, &len);
        if (len > sizeof piece) len = sizeof piece;
        if (len && r->on_piece) {
            memcpy(piece, p, len);
            if (r->on_piece(r->user, piece, len)) {
                st->finish = MN_FINISH_CANCELLED;
                break;
            }
        }
        if (g + 1 >= max_new) break;
        int repaged = 0;
        if (reselect) {
            q[nq + g] = id, all[n + g] = id;
            if ((g + 1) % ro.every == 0) {
                st->reselections++;
                if ((rc = mn_docmem_reselect(c, a, r->mems, r->n_mems, &ro, q, (int32_t)(nq + g + 1), all, n + g + 1,
                                             logits, &pg, &repaged)))
                    break;
                st->repaged += repaged;
                st->recalled = pg.n, st->recalled_cells = pg.cells;
            }
        }
        if (!repaged && (rc = mn_decode(c, &id, 1, logits, 0))) break;
    }
done:
    free(q), free(all);
    st->kv_bytes = mn_context_kv_bytes(c);
    mn_context_set_lora(c, NULL);
    st->t_total = mn_answer_now() - t0;
    free(logits);
    free(prompt);
    free(ids);
    mn_sampler_free(smp);
    return rc;
}

int mn_ask_params_check(const mn_ask_params *p) {
    if (p->max_tokens <= 0) return mn_error(MN_EINVAL, "max_tokens must be positive (got %d)", p->max_tokens);
    if (p->recall < MN_RECALL_AUTO || p->recall > MN_DOCMEM_RECALL_MAXK)
        return mn_error(MN_EINVAL, "recall is -1 (auto), 0 (none) or a count up to %d (got %d)", MN_DOCMEM_RECALL_MAXK,
                        p->recall);
    if (p->local < 0) return mn_error(MN_EINVAL, "local is a number of raw tokens, 0 for all (got %d)", p->local);
    if (p->recall_every < 0)
        return mn_error(MN_EINVAL, "recall_every is a number of answer tokens, 0 for once (got %d)", p->recall_every);
    return MN_OK;
}

int mn_answer_acc_piece(void *user, const char *text, size_t len) {
    mn_answer_acc *a = user;
    if (a->len + len + 1 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        while (cap < a->len + len + 1) cap *= 2;
        char *nt = realloc(a->text, cap);
        if (!nt) {
            a->oom = 1;
            return 1;
        }
        a->text = nt, a->cap = cap;
    }
    memcpy(a->text + a->len, text, len);
    a->len += len;
    a->text[a->len] = 0;
    return a->fn ? a->fn(a->user, text, len) : 0;
}

int mn_answer_acc_finish(mn_answer_acc *acc, int rc, const mn_answer_stats *as, int64_t kv_cells, char **answer,
                         mn_ask_stats *st) {
    if (!rc && acc->oom) rc = mn_error(MN_ENOMEM, "out of memory keeping the answer");
    if (!rc && as->finish == MN_FINISH_CANCELLED)
        rc = mn_error(MN_ECANCELLED, "stopped by the caller after %lld tokens", (long long)as->completion_tokens);
    if (!rc && st) {
        st->prompt_tokens = as->prompt_tokens, st->completion_tokens = as->completion_tokens;
        st->kv_cells = kv_cells;
        st->recalled = as->recalled, st->recalled_cells = as->recalled_cells, st->reader = as->reader;
        st->finish = (int32_t)as->finish;
        st->seconds_to_first_token = as->t_first_token, st->seconds = as->t_total;
        st->slots_out = as->slots_out;
        st->reselections = as->reselections, st->repaged = as->repaged;
    }
    if (!rc && answer) {
        *answer = acc->text ? acc->text : strdup("");
        if (!*answer) rc = mn_error(MN_ENOMEM, "out of memory");
    } else {
        free(acc->text);
    }
    acc->text = NULL;
    return rc;
}
