/* stream.c - bounded-cache token streams: full, truncation, attention sinks,
 * and compressed memory (UIO, summary embeddings, Activation Beacon; memory.h).
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
#include <time.h>

#include "error.h"
#include "memory/kvstore.h"
#include "memory/memory.h"
#include "memory/recall.h"
#include "memory/summary.h"
#include "model/forward.h"
#include "model/model.h"
#include "mnemo.h"

struct mn_stream {
    mn_context *ctx;
    mn_stream_params p;
    int64_t n_seen, n_evicted;
    /* memory mode: a UIO or summary encoder (uio, with summary set), or beacons */
    mn_uio *uio;
    int summary;         /* the encoder's output is summary embeddings */
    float *se;           /* (m, C) summary embeddings of one segment */
    mn_beacon *beacon;
    int32_t seg_l, seg_m;
    int32_t *local;      /* ((recent + 1) l) ids of the local tokens not yet compressed */
    int32_t n_local;
    int32_t recent;      /* complete segments kept raw beside the memory (uio) */
    int32_t n_dec;       /* recent > 0: local tokens whose raw cells are in the cache (a prefix) */
    int32_t n_memory;    /* memory cells, after the sink cells */
    int32_t mem_cap;     /* most memory cells kept (oldest dropped first); 0: no bound */
    int32_t n_sink_cells;/* memory mode: leading raw tokens kept (set at the first compression) */
    float *mk, *mv;      /* (L, m, KD) scratch for one segment's memory */
    int32_t *mpos;       /* (m) */
    /* exact recall (recall.h), uio with a recent window: NULL when off */
    mn_exact *exact;
    int32_t recall_k;
    mn_recall_scorer scorer;
    int recall_late;     /* paged segments after the local tokens read so far, not before them */
    int32_t recall_local;/* with segments paged, the newest local tokens kept raw (0: all of them) */
    float *rep, *rep_sh; /* (L, R, KD) one segment's representative keys */
    int32_t *query;      /* (nq) the query the paged segments were chosen for */
    int32_t nq;
    float *qbuf;         /* (L, MN_STREAM_RECALL_MAXQ, HD) its queries */
    int32_t *paged;      /* (max k) scratch: the segments chosen, in document order */
    int64_t *pstart;     /* (max k) where each paged segment starts in the text read */
    int32_t *plen;       /* (max k) and its tokens (a segment of the raw window may be shorter) */
    int32_t n_paged_segs, n_paged; /* and their cells, after the memory */
    double t_select, t_page;       /* seconds spent choosing and paging, since the last reset */
    /* --exact kv: entry i of kv holds the cells of stored segment i (its tokens after the sinks) */
    mn_kvstore *kv;
    float *kbuf, *vbuf;  /* (L, l, KD) one segment's cells */
    int32_t *kpos;       /* (l) */
};

mn_stream_params mn_stream_default_params(void) {
    mn_stream_params p = {.mode = MN_MODE_FULL, .window = 0, .n_sinks = 4};
    return p;
}

static const char *const k_mode_names[] = {"full", "truncate", "sinks", "memory"};

int mn_mode_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, k_mode_names[i])) return i;
    return -1;
}

const char *mn_mode_name(mn_mode mode) { return (unsigned)mode < 4 ? k_mode_names[mode] : "unknown"; }

int mn_stream_create(mn_context *ctx, const mn_stream_params *params, mn_stream **out) {
    *out = NULL;
    mn_stream_params p = params ? *params : mn_stream_default_params();
    const int32_t n_ctx = mn_context_n_ctx(ctx);
    if ((unsigned)p.mode > MN_MODE_MEMORY) return mn_error(MN_EINVAL, "unknown stream mode %d", (int)p.mode);
    if (p.window <= 0) p.window = n_ctx;
    if (p.window > n_ctx)
        return mn_error(MN_EINVAL, "window %d exceeds the context size %d", p.window, n_ctx);
    if (p.mode != MN_MODE_SINKS && p.mode != MN_MODE_MEMORY) p.n_sinks = 0;
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

/* Forgets the exact cells (--exact kv). */
static void exact_kv_off(mn_stream *s) {
    mn_kvstore_free(s->kv);
    free(s->kbuf), free(s->vbuf), free(s->kpos);
    s->kv = NULL;
    s->kbuf = s->vbuf = NULL;
    s->kpos = NULL;
}

/* Forgets the exact store and the recall state. */
static void recall_off(mn_stream *s) {
    exact_kv_off(s);
    mn_exact_free(s->exact);
    free(s->rep), free(s->rep_sh), free(s->query), free(s->qbuf), free(s->paged), free(s->pstart), free(s->plen);
    s->exact = NULL;
    s->rep = s->rep_sh = s->qbuf = NULL;
    s->query = s->paged = s->plen = NULL;
    s->pstart = NULL;
    s->recall_k = s->nq = s->n_paged = s->n_paged_segs = 0;
}

/* Frees whatever compressor is attached. */
static void detach(mn_stream *s) {
    recall_off(s);
    mn_uio_free(s->uio);
    mn_beacon_free(s->beacon);
    free(s->local), free(s->mk), free(s->mv), free(s->mpos), free(s->se);
    s->uio = NULL;
    s->beacon = NULL;
    s->local = s->mpos = NULL;
    s->mk = s->mv = s->se = NULL;
    s->summary = 0;
}

void mn_stream_free(mn_stream *s) {
    if (!s) return;
    detach(s);
    free(s);
}

void mn_stream_reset(mn_stream *s) {
    mn_kv_clear(s->ctx);
    if (s->beacon) mn_beacon_reset(s->beacon);
    s->n_seen = s->n_evicted = 0;
    s->n_local = s->n_memory = s->n_sink_cells = s->n_dec = 0;
    mn_exact_clear(s->exact);
    if (s->kv) mn_kvstore_clear(s->kv); /* (an error here surfaces at the next put) */
    s->nq = s->n_paged = s->n_paged_segs = 0;
    s->t_select = s->t_page = 0;
}

mn_beacon *mn_stream_beacon(mn_stream *s) { return s->beacon; }

int mn_stream_attach_beacon(mn_stream *s, const mn_beacon_params *p) {
    if (s->p.mode != MN_MODE_MEMORY) return mn_error(MN_EINVAL, "a compressor needs a stream in memory mode");
    mn_beacon *b;
    int rc = mn_beacon_create(s->ctx, p, 0, &b);
    if (rc) return rc;
    detach(s);
    s->beacon = b;
    mn_beacon_set_memory_cap(b, s->mem_cap);
    mn_stream_reset(s);
    return MN_OK;
}

int mn_stream_attach_summary(mn_stream *s, const mn_uio_params *p, int n_threads) {
    int rc = mn_stream_attach_uio(s, p, n_threads);
    if (rc) return rc;
    s->se = malloc(sizeof(float) * (size_t)p->m * (size_t)mn_model_n_embd(mn_context_model(s->ctx)));
    if (!s->se) {
        detach(s);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    s->summary = 1;
    return MN_OK;
}

int mn_stream_attach_uio(mn_stream *s, const mn_uio_params *p, int n_threads) {
    if (s->p.mode != MN_MODE_MEMORY) return mn_error(MN_EINVAL, "a compressor needs a stream in memory mode");
    const mn_model *m = mn_context_model(s->ctx);
    if (mn_context_n_ctx(s->ctx) < p->l + p->m)
        return mn_error(MN_EINVAL, "the context (%d cells) cannot hold a segment of %d plus its memory",
                        mn_context_n_ctx(s->ctx), p->l);
    if (p->recent < 0 || p->recent > 64) return mn_error(MN_EINVAL, "recent window of %d segments (0..64)", p->recent);
    mn_uio *u;
    int rc = mn_uio_create(m, p, n_threads, &u);
    if (rc) return rc;
    const int32_t kd = mn_model_kv_dim(m);
    size_t n = (size_t)mn_model_n_layer(m) * (size_t)p->m * (size_t)kd;
    int32_t *local = malloc(sizeof(int32_t) * (size_t)p->l * (size_t)(p->recent + 1));
    float *mk = malloc(sizeof(float) * n), *mv = malloc(sizeof(float) * n);
    int32_t *mpos = malloc(sizeof(int32_t) * (size_t)p->m);
    if (!local || !mk || !mv || !mpos) {
        free(local), free(mk), free(mv), free(mpos);
        mn_uio_free(u);
        return mn_error(MN_ENOMEM, "out of memory");
    }
    detach(s);
    s->uio = u;
    s->seg_l = p->l;
    s->seg_m = p->m;
    s->recent = p->recent;
    s->local = local;
    s->mk = mk;
    s->mv = mv;
    s->mpos = mpos;
    mn_stream_reset(s);
    return MN_OK;
}

int32_t mn_stream_n_memory(const mn_stream *s) { return s->beacon ? mn_beacon_n_memory(s->beacon) : s->n_memory; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The oldest local tokens a paged cache leaves out: all but the newest
 * recall_local (the raw window at the answer). */
static int32_t local_dropped(const mn_stream *s) {
    return s->recall_local > 0 && s->n_local > s->recall_local ? s->n_local - s->recall_local : 0;
}

/* The local tokens left out of the cache when it is rebuilt after paging. */
static int32_t local_skip(const mn_stream *s) { return s->n_paged_segs > 0 ? local_dropped(s) : 0; }

/* Scores the stored segments for s->query and decodes the best recall_k after
 * [sinks | memory], dropping whatever followed (the local tokens are decoded
 * again, after them, when logits are next wanted). */
static int page_in(mn_stream *s) {
    const int32_t base = s->n_sink_cells + s->n_memory, S0 = mn_exact_n(s->exact);
    const int32_t drop = local_dropped(s);
    if (S0 == 0 || s->nq == 0 || s->recall_k == 0) return MN_OK; /* nothing compressed: the text is all raw */
    int rc = mn_kv_drop(s->ctx, base, mn_kv_n_cells(s->ctx));
    if (rc) return rc;
    s->n_dec = s->n_paged = s->n_paged_segs = 0;
    const double t0 = now_s();
    /* The raw tokens a short window leaves out are offered beside the stored
     * segments, in segments of the same length, so that what the window drops
     * can be paged back like what the memory compressed (BM25 reads their
     * text; the key scorers have no keys for them and pass them over). */
    if (drop > 0) rc = mn_exact_add_text(s->exact, s->local, drop, s->n_seen - s->n_local);
    const int32_t S = mn_exact_n(s->exact);
    float *scores = rc ? NULL : malloc(sizeof(float) * (size_t)S);
    if (!rc && !scores) rc = mn_error(MN_ENOMEM, "out of memory");
    /* the query's own queries, read right after the memory, then dropped */
    if (!rc && mn_recall_scorer_needs_q(s->scorer)) rc = mn_recall_capture_queries(s->ctx, s->query, s->nq, s->qbuf);
    if (!rc) rc = mn_exact_score(s->exact, s->scorer, s->qbuf, s->query, s->nq, scores);
    /* K follows the stored segments alone (as the context was sized) */
    if (!rc) s->n_paged_segs = mn_exact_top(s->exact, scores, mn_recall_auto_k(s->recall_k, S0), s->paged);
    for (int32_t i = 0; i < s->n_paged_segs; i++) mn_exact_ids(s->exact, s->paged[i], &s->plen[i], &s->pstart[i]);
    free(scores);
    const double t1 = now_s();
    s->t_select += t1 - t0;
    if (!rc && s->recall_late && s->n_local > 0) { /* the local tokens first, the paged segments after them */
        const int32_t skip = local_skip(s);
        rc = mn_decode(s->ctx, s->local + skip, s->n_local - skip, NULL, 0);
        s->n_dec = s->n_local;
    }
    for (int32_t i = 0; i < s->n_paged_segs && !rc; i++) {
        int32_t n;
        int64_t st;
        const int32_t *ids = mn_exact_ids(s->exact, s->paged[i], &n, &st);
        if (st < s->n_sink_cells) { /* the stream's first tokens are in the cache already, as its sinks */
            const int32_t skip = (int32_t)(s->n_sink_cells - st) < n ? (int32_t)(s->n_sink_cells - st) : n;
            ids += skip, n -= skip;
        }
        if (n == 0) continue;
        if (base + s->n_paged + n + s->n_local > mn_context_n_ctx(s->ctx)) {
            rc = mn_error(MN_ERANGE, "paging %d recalled segments needs more than the context's %d cells",
                          s->n_paged_segs, mn_context_n_ctx(s->ctx));
            break;
        }
        if (s->kv && s->paged[i] < mn_kvstore_n(s->kv)) { /* its stored cells, at the next positions */
            int32_t nc = 0;
            if ((rc = mn_kvstore_get(s->kv, s->paged[i], s->seg_l, s->kbuf, s->vbuf, &nc))) break;
            if (nc != n) {
                rc = mn_error(MN_EINVAL, "exact store: segment %d has %d cells stored for %d tokens", s->paged[i], nc, n);
                break;
            }
            const int32_t p0 = mn_kv_next_pos(s->ctx);
            for (int32_t j = 0; j < n; j++) s->kpos[j] = p0 + j;
            if (!(rc = mn_kv_append(s->ctx, n, s->kpos, s->kbuf, s->vbuf, 0))) s->n_paged += n;
            continue;
        }
        if (!(rc = mn_decode(s->ctx, ids, n, NULL, 0))) s->n_paged += n;
    }
    mn_exact_truncate(s->exact, S0); /* the window's segments were offered for this choice only */
    s->t_page += now_s() - t1;
    return rc;
}

int mn_stream_set_recall(mn_stream *s, int32_t k, mn_recall_scorer scorer, int late) {
    if ((k < 0 && k != MN_RECALL_AUTO) || k > MN_STREAM_RECALL_MAXK)
        return mn_error(MN_EINVAL, "recall of %d segments (0..%d, or auto)", k, MN_STREAM_RECALL_MAXK);
    if ((unsigned)scorer >= MN_RECALL_N_SCORERS) return mn_error(MN_EINVAL, "unknown recall scorer %d", (int)scorer);
    if (k == 0) {
        recall_off(s);
        return MN_OK;
    }
    if (s->exact) { /* on already: k, scorer and place change, the store stays */
        const size_t mk = (size_t)mn_recall_max_k(k);
        int32_t *np = realloc(s->paged, sizeof(int32_t) * mk);
        if (np) s->paged = np;
        int32_t *nl = np ? realloc(s->plen, sizeof(int32_t) * mk) : NULL;
        if (nl) s->plen = nl;
        int64_t *ns = nl ? realloc(s->pstart, sizeof(int64_t) * mk) : NULL;
        if (!ns) return mn_error(MN_ENOMEM, "out of memory");
        s->pstart = ns;
        if (s->n_paged_segs > mn_recall_max_k(k)) s->n_paged_segs = mn_recall_max_k(k); /* what is paged stays */
        s->recall_k = k, s->scorer = scorer, s->recall_late = late != 0;
        return MN_OK;
    }
    if (!s->uio || s->summary || s->recent <= 0)
        return mn_error(MN_EUNSUPPORTED, "recall needs a UIO compressor with a recent window (adapter set --recent N); "
                                         "this stream has %s",
                        s->beacon ? "beacons" : s->summary ? "summary embeddings" : s->uio ? "no recent window" : "none");
    if (s->n_seen > 0) return mn_error(MN_EINVAL, "recall is switched on before the stream reads");
    const mn_model *m = mn_context_model(s->ctx);
    const size_t L = (size_t)mn_model_n_layer(m), rep = L * MN_RECALL_REP * (size_t)mn_model_kv_dim(m);
    recall_off(s);
    int rc = mn_exact_create(m, s->seg_l, s->seg_m, &s->exact);
    if (!rc) rc = mn_uio_capture_queries(s->uio);
    if (!rc) {
        s->rep = malloc(sizeof(float) * rep), s->rep_sh = malloc(sizeof(float) * rep);
        s->qbuf = malloc(sizeof(float) * L * MN_STREAM_RECALL_MAXQ * (size_t)mn_model_q_dim(m));
        s->query = malloc(sizeof(int32_t) * MN_STREAM_RECALL_MAXQ);
        s->paged = malloc(sizeof(int32_t) * (size_t)mn_recall_max_k(k));
        s->plen = malloc(sizeof(int32_t) * (size_t)mn_recall_max_k(k));
        s->pstart = malloc(sizeof(int64_t) * (size_t)mn_recall_max_k(k));
        if (!s->rep || !s->rep_sh || !s->qbuf || !s->query || !s->paged || !s->plen || !s->pstart)
            rc = mn_error(MN_ENOMEM, "out of memory");
    }
    if (rc) {
        recall_off(s);
        return rc;
    }
    s->recall_k = k;
    s->scorer = scorer;
    s->recall_late = late != 0;
    return MN_OK;
}

int mn_stream_sync(mn_stream *s) {
    if (!s->uio || s->recent <= 0 || s->p.mode != MN_MODE_MEMORY) return MN_OK;
    if (s->n_dec == 0) s->n_dec = local_skip(s);
    if (s->n_dec < s->n_local) {
        int rc = mn_decode(s->ctx, s->local + s->n_dec, s->n_local - s->n_dec, NULL, 0);
        if (rc) return rc;
        s->n_dec = s->n_local;
    }
    return MN_OK;
}

int mn_stream_set_recall_local(mn_stream *s, int32_t n_tokens) {
    if (n_tokens < 0) return mn_error(MN_EINVAL, "raw window of %d tokens at recall (0: all)", n_tokens);
    s->recall_local = n_tokens;
    return MN_OK;
}

int mn_stream_recall(mn_stream *s, const int32_t *query, int32_t nq) {
    if (!s->exact) return mn_error(MN_EINVAL, "recall is off for this stream (mn_stream_set_recall)");
    if (!query || nq <= 0) return mn_error(MN_EINVAL, "recall needs a query");
    if (nq > MN_STREAM_RECALL_MAXQ) { /* the end of a long query: what the answer follows */
        query += nq - MN_STREAM_RECALL_MAXQ;
        nq = MN_STREAM_RECALL_MAXQ;
    }
    const int32_t V = mn_model_n_vocab(mn_context_model(s->ctx));
    for (int32_t i = 0; i < nq; i++)
        if (query[i] < 0 || query[i] >= V) return mn_error(MN_EINVAL, "recall query: token id %d out of range", query[i]);
    memcpy(s->query, query, sizeof(int32_t) * (size_t)nq);
    s->nq = nq;
    return page_in(s);
}

int32_t mn_stream_recalled(const mn_stream *s, int64_t *starts, int32_t *lens, int32_t cap) {
    int32_t i = 0;
    for (; i < s->n_paged_segs && i < cap; i++) {
        if (starts) starts[i] = s->pstart[i];
        if (lens) lens[i] = s->plen[i];
    }
    return s->n_paged_segs;
}

int32_t mn_stream_n_paged(const mn_stream *s) { return s->n_paged; }
int32_t mn_stream_n_exact(const mn_stream *s) { return mn_exact_n(s->exact); }
void mn_stream_recall_time(const mn_stream *s, double *select_s, double *page_s) {
    if (select_s) *select_s = s->t_select;
    if (page_s) *page_s = s->t_page;
}

int mn_stream_set_exact(mn_stream *s, mn_exact_form form, size_t ram_budget) {
    if (form != MN_EXACT_TOKENS && form != MN_EXACT_KV) return mn_error(MN_EINVAL, "unknown exact form %d", (int)form);
    if (form == MN_EXACT_TOKENS) {
        if (s->kv && s->n_seen > 0) return mn_error(MN_EINVAL, "the exact form is chosen before the stream reads");
        exact_kv_off(s);
        return MN_OK;
    }
    if (!s->exact) return mn_error(MN_EINVAL, "exact cells need recall on (mn_stream_set_recall)");
    if (s->n_seen > 0) return mn_error(MN_EINVAL, "the exact form is chosen before the stream reads");
    const mn_model *m = mn_context_model(s->ctx);
    exact_kv_off(s);
    const size_t cells = (size_t)mn_model_n_layer(m) * (size_t)s->seg_l * (size_t)mn_model_kv_dim(m);
    int rc = mn_kvstore_create(m, ram_budget, &s->kv);
    if (!rc) {
        s->kbuf = malloc(sizeof(float) * cells), s->vbuf = malloc(sizeof(float) * cells);
        s->kpos = malloc(sizeof(int32_t) * (size_t)s->seg_l);
        if (!s->kbuf || !s->vbuf || !s->kpos) rc = mn_error(MN_ENOMEM, "out of memory");
    }
    if (rc) exact_kv_off(s);
    return rc;
}

void mn_stream_exact_bytes(const mn_stream *s, size_t *ram, size_t *spill) { mn_kvstore_bytes(s->kv, ram, spill); }

int mn_stream_exact_cells(mn_stream *s, int32_t seg, int32_t cap, float *k, float *v, int32_t *n) {
    if (!s->kv) return mn_error(MN_EINVAL, "this stream keeps no exact cells (mn_stream_set_exact)");
    return mn_kvstore_get(s->kv, seg, cap, k, v, n);
}

/* --exact kv: the decoder cells of the segment about to be compressed (local[0..l)), as read
 * behind [sinks | memory]: taken from the cache where the stream has them there in that
 * layout, else decoded now (everything after the memory is dropped by the compression
 * anyway); keys stored without RoPE. The stream's first tokens are its sink cells and are
 * not stored (page-in skips them too). */
static int keep_cells(mn_stream *s) {
    const int32_t sinks = s->n_sink_cells ? s->n_sink_cells : (s->p.n_sinks < s->seg_l ? s->p.n_sinks : s->seg_l);
    const int64_t st = s->n_seen - s->n_local;
    const int32_t skip = st < sinks ? (int32_t)(sinks - st) : 0, n = s->seg_l - skip;
    const int32_t base = sinks + s->n_memory; /* where the segment's cells after the sinks belong */
    if (n <= 0) return mn_kvstore_put(s->kv, 0, NULL, NULL); /* all sinks: an empty entry keeps the numbering */
    /* in place: nothing paged before the local cells and the segment's tokens decoded */
    const int in_place =
        s->n_paged_segs == 0 && s->n_paged == 0 && s->n_dec >= s->seg_l && mn_kv_n_cells(s->ctx) >= base + n;
    int rc = MN_OK;
    if (!in_place) {
        if ((rc = mn_kv_drop(s->ctx, base, mn_kv_n_cells(s->ctx)))) return rc;
        s->n_paged = s->n_paged_segs = 0;
        if ((rc = mn_decode(s->ctx, s->local + skip, n, NULL, 0))) return rc;
        s->n_dec = s->seg_l;
    }
    if ((rc = mn_kvstore_read_cells(s->ctx, base, n, s->kbuf, s->vbuf))) return rc;
    return mn_kvstore_put(s->kv, n, s->kbuf, s->vbuf);
}

/* The oldest l local tokens become m memory cells at the next positions; the
 * raw cells (all cells after the sinks and the memory) are dropped. With
 * n_sinks, the stream's first tokens stay as raw cells ahead of the memory:
 * SmolLM2-like models park attention on their first positions, which memory
 * slots would otherwise occupy. With a recent window, the younger local
 * segments stay as tokens and are decoded again after the new memory when
 * logits are next wanted: the layout training uses. */
static int compress_local(mn_stream *s) {
    if (s->recent > 0 && s->n_memory == 0 && s->n_sink_cells == 0 && s->p.n_sinks > 0) {
        /* the sinks' raw cells: decode them if the lazy stream has not */
        const int32_t S = s->p.n_sinks < s->seg_l ? s->p.n_sinks : s->seg_l;
        if (s->n_dec < S) {
            int rc = mn_decode(s->ctx, s->local + s->n_dec, S - s->n_dec, NULL, 0);
            if (rc) return rc;
            s->n_dec = S;
        }
    }
    int rc = s->summary ? mn_uio_encode_out(s->uio, s->local, s->seg_l, s->se, NULL)
                        : mn_uio_compress(s->uio, s->local, s->mk, s->mv);
    if (rc) return rc;
    if (s->exact) { /* the segment's exact form and index, before its ids leave */
        const int32_t *mpos;
        int32_t mm = 0;
        const float *mq = mn_uio_last_queries(s->uio, &mpos, &mm);
        rc = mn_recall_rep_keys(mn_context_model(s->ctx), mn_uio_context(s->uio), s->seg_l, mq, mpos, mm, s->rep,
                                s->rep_sh);
        if (!rc) rc = mn_exact_add(s->exact, s->local, s->seg_l, s->n_seen - s->n_local, s->rep, s->rep_sh, s->mk, s->seg_m);
        if (!rc && s->kv) rc = keep_cells(s);
        if (rc) return rc;
    }
    if (s->n_memory == 0 && s->n_sink_cells == 0)
        s->n_sink_cells = s->p.n_sinks < s->seg_l ? s->p.n_sinks : s->seg_l;
    const int32_t keep = s->n_sink_cells + s->n_memory;
    if ((rc = mn_kv_drop(s->ctx, keep, mn_kv_n_cells(s->ctx)))) return rc;
    s->n_paged = s->n_paged_segs = 0; /* paged again below, after the new memory */
    int32_t p0 = keep ? mn_kv_pos(s->ctx, keep - 1) + 1 : 0;
    if (s->summary) {
        /* the embeddings are decoded like tokens after the memory (positions
         * continue from the last kept cell) */
        if ((rc = mn_summary_prime(s->ctx, s->se, s->seg_m))) return rc;
    } else {
        for (int32_t i = 0; i < s->seg_m; i++) s->mpos[i] = p0 + i;
        if ((rc = mn_kv_append(s->ctx, s->seg_m, s->mpos, s->mk, s->mv, 0))) return rc;
    }
    s->n_memory += s->seg_m;
    s->n_evicted += s->seg_l - (s->n_memory == s->seg_m ? s->n_sink_cells : 0);
    s->n_local -= s->seg_l;
    memmove(s->local, s->local + s->seg_l, sizeof(int32_t) * (size_t)s->n_local);
    s->n_dec = 0;
    if (s->mem_cap > 0 && s->n_memory > s->mem_cap) {
        /* StreamingLLM applied to the memory: the oldest slots go, the rest
         * move down to follow the sinks */
        const int32_t ex = s->n_memory - s->mem_cap, s0 = s->n_sink_cells;
        if ((rc = mn_kv_drop(s->ctx, s0, s0 + ex)) || (rc = mn_kv_shift(s->ctx, s0, mn_kv_n_cells(s->ctx), -ex)))
            return rc;
        s->n_memory -= ex;
    }
    return s->exact && s->nq > 0 ? page_in(s) : MN_OK;
}

int mn_stream_set_memory_cap(mn_stream *s, int32_t max_slots) {
    if (max_slots < 0) return mn_error(MN_EINVAL, "memory cap %d must be >= 0", max_slots);
    s->mem_cap = max_slots;
    if (s->beacon) mn_beacon_set_memory_cap(s->beacon, max_slots);
    return MN_OK;
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

/* Memory mode with a recent window: tokens are decoded lazily, only when
 * logits are wanted, after [sinks | memory] and the local tokens before them
 * (the segments kept raw, then the current one): reading a long text without
 * logits costs the encoder alone. */
static int feed_recent(mn_stream *s, const int32_t *ids, int32_t n, float *logits, int logits_all) {
    const int32_t V = mn_model_n_vocab(mn_context_model(s->ctx)), cap = (s->recent + 1) * s->seg_l;
    for (int32_t i = 0; i < n;) {
        int32_t p = s->seg_l - s->n_local % s->seg_l;
        if (p > n - i) p = n - i;
        const int32_t base = s->n_sink_cells + s->n_memory + s->n_paged;
        if (base + s->n_local + p > mn_context_n_ctx(s->ctx))
            return mn_error(MN_ERANGE,
                            "memory of %d slots plus %d local tokens exceeds the context of %d; the position "
                            "budget is spent (use a larger ratio or context)",
                            s->n_memory, s->n_local + p, mn_context_n_ctx(s->ctx));
        memcpy(s->local + s->n_local, ids + i, sizeof(int32_t) * (size_t)p);
        float *lg = NULL;
        if (logits && logits_all) lg = logits + (size_t)i * (size_t)V;
        else if (logits && i + p == n) lg = logits;
        int rc = MN_OK;
        if (lg) {
            if (s->n_dec == 0) s->n_dec = local_skip(s); /* the cache is rebuilt after the paged segments */
            if (s->n_dec < s->n_local) rc = mn_decode(s->ctx, s->local + s->n_dec, s->n_local - s->n_dec, NULL, 0);
            if (!rc) rc = mn_decode(s->ctx, ids + i, p, lg, logits_all);
            if (rc) return rc;
            s->n_dec = s->n_local + p;
        }
        s->n_local += p;
        s->n_seen += p;
        i += p;
        if (s->n_local == cap && (rc = compress_local(s))) return rc;
    }
    return MN_OK;
}

int mn_stream_feed(mn_stream *s, const int32_t *ids, int32_t n, float *logits, int logits_all) {
    if (n <= 0 || !ids) return mn_error(MN_EINVAL, "nothing to feed");
    const int32_t V = mn_model_n_vocab(mn_context_model(s->ctx));
    if (s->p.mode == MN_MODE_MEMORY && s->beacon) {
        int rc = mn_beacon_feed(s->beacon, ids, n, logits, logits_all);
        if (rc) return rc;
        s->n_seen += n;
        s->n_evicted = s->n_seen - mn_beacon_n_local(s->beacon) - mn_beacon_n_sinks(s->beacon);
        return MN_OK;
    }
    if (s->p.mode == MN_MODE_MEMORY && s->recent > 0) {
        if (!s->uio) return mn_error(MN_EINVAL, "memory mode needs a compressor (an adapter)");
        return feed_recent(s, ids, n, logits, logits_all);
    }
    if (s->p.mode == MN_MODE_MEMORY) {
        if (!s->uio) return mn_error(MN_EINVAL, "memory mode needs a compressor (an adapter)");
        for (int32_t i = 0; i < n;) {
            int32_t p = s->seg_l - s->n_local;
            if (p > n - i) p = n - i;
            if (mn_kv_n_cells(s->ctx) + p > mn_context_n_ctx(s->ctx))
                return mn_error(MN_ERANGE,
                                "memory of %d slots plus %d local tokens exceeds the context of %d; the position "
                                "budget is spent (use a larger ratio or context)",
                                s->n_memory, s->n_local + p, mn_context_n_ctx(s->ctx));
            float *lg = NULL;
            if (logits && logits_all) lg = logits + (size_t)i * (size_t)V;
            else if (logits && i + p == n) lg = logits;
            /* A piece that completes the segment and wants no logits need not
             * be decoded: compress_local drops the segment's raw cells right
             * away (unless they are to become the sinks). Reading a long text
             * then costs the encoder alone, not decoder + encoder. */
            const int skip = !lg && s->n_local + p == s->seg_l && (s->n_memory > 0 || s->p.n_sinks == 0);
            int rc = skip ? MN_OK : mn_decode(s->ctx, ids + i, p, lg, logits_all);
            if (rc) return rc;
            memcpy(s->local + s->n_local, ids + i, sizeof(int32_t) * (size_t)p);
            s->n_local += p;
            s->n_seen += p;
            i += p;
            if (s->n_local == s->seg_l && (rc = compress_local(s))) return rc;
        }
        return MN_OK;
    }
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
    if ((s->p.mode == MN_MODE_TRUNCATE || s->p.mode == MN_MODE_SINKS) && chunk > s->p.window - s->p.n_sinks)
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
