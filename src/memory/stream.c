/* stream.c - bounded-cache token streams: full, truncation, attention sinks.
 *
 * These are the baselines every compressed-memory mode is compared with, and
 * the eviction machinery the memory modes reuse: before a piece of p tokens is
 * decoded, cells are dropped so that cells + p <= window, and the survivors
 * after the sinks are shifted down so positions stay contiguous (mn_kv_shift
 * re-rotates their keys; RoPE being relative, only distances matter).
 *
 * Eviction happens per piece, not per token, so a token sees between
 * window - piece and window cells; mn_stream_perplexity's `chunk` sets that
 * trade-off between fidelity to token-by-token streaming and prefill speed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "mnemo.h"

struct mn_stream {
    mn_context *ctx;
    mn_stream_params p;
    int64_t n_seen, n_evicted;
};

mn_stream_params mn_stream_default_params(void) {
    mn_stream_params p = {.mode = MN_MODE_FULL, .window = 0, .n_sinks = 4};
    return p;
}

static const char *const k_mode_names[] = {"full", "truncate", "sinks"};

int mn_mode_parse(const char *name) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, k_mode_names[i])) return i;
    return -1;
}

const char *mn_mode_name(mn_mode mode) { return (unsigned)mode < 3 ? k_mode_names[mode] : "unknown"; }

int mn_stream_create(mn_context *ctx, const mn_stream_params *params, mn_stream **out) {
    *out = NULL;
    mn_stream_params p = params ? *params : mn_stream_default_params();
    const int32_t n_ctx = mn_context_n_ctx(ctx);
    if ((unsigned)p.mode > MN_MODE_SINKS) return mn_error(MN_EINVAL, "unknown stream mode %d", (int)p.mode);
    if (p.window <= 0) p.window = n_ctx;
    if (p.window > n_ctx)
        return mn_error(MN_EINVAL, "window %d exceeds the context size %d", p.window, n_ctx);
    if (p.mode != MN_MODE_SINKS) p.n_sinks = 0;
    if (p.n_sinks < 0 || p.n_sinks >= p.window)
        return mn_error(MN_EINVAL, "%d sink tokens do not leave room in a window of %d", p.n_sinks, p.window);
    mn_stream *s = calloc(1, sizeof *s);
    if (!s) return mn_error(MN_ENOMEM, "out of memory");
    s->ctx = ctx;
    s->p = p;
    mn_kv_clear(ctx);
    *out = s;
    return MN_OK;
}

void mn_stream_free(mn_stream *s) { free(s); }

void mn_stream_reset(mn_stream *s) {
    mn_kv_clear(s->ctx);
    s->n_seen = s->n_evicted = 0;
}

int64_t mn_stream_n_seen(const mn_stream *s) { return s->n_seen; }
int64_t mn_stream_n_evicted(const mn_stream *s) { return s->n_evicted; }

/* Makes room for `need` more cells within the window. */
static int evict(mn_stream *s, int32_t need) {
    mn_context *c = s->ctx;
    const int32_t cells = mn_kv_n_cells(c), keep0 = s->p.n_sinks;
    const int32_t excess = cells + need - s->p.window;
    if (excess <= 0) return MN_OK;
    if (s->p.mode == MN_MODE_FULL)
        return mn_error(MN_ERANGE,
                        "the text no longer fits the context of %d tokens in full mode (use a larger context or "
                        "--mode truncate|sinks)",
                        mn_context_n_ctx(c));
    /* sinks: the first keep0 cells stay (if the stream has produced them) */
    int32_t lo = cells < keep0 ? cells : keep0;
    int32_t hi = lo + excess;
    if (hi > cells) hi = cells;
    int rc = mn_kv_drop(c, lo, hi);
    if (rc) return rc;
    s->n_evicted += hi - lo;
    /* close the gap: cells after the sinks move down to follow them */
    const int32_t n = mn_kv_n_cells(c);
    if (lo < n) {
        int32_t want = lo ? mn_kv_pos(c, lo - 1) + 1 : 0;
        rc = mn_kv_shift(c, lo, n, want - mn_kv_pos(c, lo));
    }
    return rc;
}

int mn_stream_feed(mn_stream *s, const int32_t *ids, int32_t n, float *logits, int logits_all) {
    if (n <= 0 || !ids) return mn_error(MN_EINVAL, "nothing to feed");
    const int32_t V = mn_model_n_vocab(mn_context_model(s->ctx));
    /* pieces no longer than the part of the window that eviction can free */
    const int32_t max_piece = s->p.mode == MN_MODE_FULL ? n : s->p.window - s->p.n_sinks;
    for (int32_t i = 0; i < n;) {
        int32_t p = n - i < max_piece ? n - i : max_piece;
        int rc = evict(s, p);
        if (rc) return rc;
        float *lg = NULL;
        if (logits && logits_all) lg = logits + (size_t)i * (size_t)V;
        else if (logits && i + p == n) lg = logits;
        if ((rc = mn_decode(s->ctx, ids + i, p, lg, logits_all))) return rc;
        s->n_seen += p;
        i += p;
    }
    return MN_OK;
}

int mn_stream_perplexity(mn_stream *s, const int32_t *ids, int64_t n, int32_t chunk, int64_t score_from,
                         mn_ppl_progress_fn progress, void *user, mn_ppl_result *res) {
    memset(res, 0, sizeof *res);
    if (chunk <= 0) return mn_error(MN_EINVAL, "chunk must be positive");
    if (score_from < 1) score_from = 1;
    if (n <= score_from) return mn_error(MN_ERANGE, "nothing to score: %lld tokens", (long long)n);
    if (s->p.mode != MN_MODE_FULL && chunk > s->p.window - s->p.n_sinks)
        chunk = s->p.window - s->p.n_sinks;
    const int32_t V = mn_model_n_vocab(mn_context_model(s->ctx));
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)chunk);
    if (!logits) return mn_error(MN_ENOMEM, "out of memory for %d x %d logits", chunk, V);
    mn_stream_reset(s);
    double nll = 0, nll2 = 0;
    int64_t count = 0, pieces = 0;
    int rc = MN_OK;
    for (int64_t i = 0; i < n - 1 && !rc; i += chunk) {
        /* feed [i, i+p); position j's logits predict token j+1 */
        int32_t p = (int32_t)(n - 1 - i < chunk ? n - 1 - i : chunk);
        if ((rc = mn_stream_feed(s, ids + i, p, logits, 1))) break;
        for (int32_t k = 0; k < p; k++) {
            int64_t target = i + k + 1;
            if (target < score_from) continue;
            const float *lg = logits + (size_t)k * (size_t)V;
            float mx = lg[0];
            for (int32_t v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            double sum = 0;
            for (int32_t v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
            double lp = (double)(lg[ids[target]] - mx) - log(sum);
            nll -= lp;
            nll2 += lp * lp;
            count++;
        }
        pieces++;
        if (progress && count) progress(user, pieces, count, exp(nll / (double)count));
    }
    free(logits);
    if (rc) return rc;
    double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
    res->nll = mean;
    res->ppl = exp(mean);
    res->ppl_err = res->ppl * sqrt(var > 0 && count > 1 ? var / (double)(count - 1) : 0);
    res->tokens = count;
    res->windows = pieces;
    return MN_OK;
}
