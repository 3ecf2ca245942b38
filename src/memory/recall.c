/* recall.c - the exact store and its scorers (see recall.h).
 *
 * Key scoring is a product per layer and kv head: the query rows of the heads
 * sharing that kv head, packed (nq G, D), against every stored key of that
 * layer and head, converted from f16 once per call (S K, D): one sgemm, then a
 * max per segment and a softmax over segments per row. G = H / n_head_kv.
 */
#include "memory/recall.h"

#include <cblas.h>
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/quant.h"
#include "model/forward.h"
#include "model/model.h"

static const char *const k_scorer_names[MN_RECALL_N_SCORERS] = {"keys", "keys-shared", "slots", "bm25"};

mn_recall_opts mn_recall_default_opts(int32_t k) {
    return (mn_recall_opts){.k = k, .scorer = MN_RECALL_DEFAULT_SCORER, .late = MN_RECALL_DEFAULT_LATE,
                            .local = MN_RECALL_DEFAULT_LOCAL, .every = MN_RECALL_DEFAULT_EVERY};
}

int32_t mn_recall_auto_k(int32_t k, int32_t n_stored) {
    if (k >= 0) return k;
    int32_t a = (n_stored + MN_RECALL_AUTO_PER - 1) / MN_RECALL_AUTO_PER;
    return a < MN_RECALL_AUTO_MIN ? MN_RECALL_AUTO_MIN : a > MN_RECALL_AUTO_MAX ? MN_RECALL_AUTO_MAX : a;
}

int32_t mn_recall_max_k(int32_t k) { return k >= 0 ? k : MN_RECALL_AUTO_MAX; }

int mn_recall_parse_k(const char *s, int32_t max, int32_t *k) {
    if (!s) return -1;
    if (!strcmp(s, "auto")) {
        *k = MN_RECALL_AUTO;
        return 0;
    }
    char *end;
    const long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > max) return -1;
    *k = (int32_t)v;
    return 0;
}

int mn_recall_scorer_parse(const char *name) {
    for (int i = 0; i < MN_RECALL_N_SCORERS; i++)
        if (name && !strcmp(name, k_scorer_names[i])) return i;
    return -1;
}

const char *mn_recall_scorer_name(mn_recall_scorer sc) {
    return (unsigned)sc < MN_RECALL_N_SCORERS ? k_scorer_names[sc] : "unknown";
}

int mn_recall_scorer_needs_q(mn_recall_scorer sc) { return sc != MN_RECALL_BM25; }

struct mn_exact {
    const mn_model *m;
    int32_t L, KD, H, KV, D, V;
    int32_t l, M;     /* segment length, memory slots per segment */
    int keys;         /* the keys are held (0: ids alone, BM25 only) */
    int32_t n, cap;   /* segments */
    uint8_t *text;    /* (cap) 1: added by mn_exact_add_text, no keys (the key scorers pass it over) */
    int32_t *ids;     /* (cap, l) */
    int32_t *len;     /* (cap) */
    int64_t *start;   /* (cap) */
    uint16_t *rep;    /* (cap, L, R, KD) */
    uint16_t *rep_sh; /* (cap, L, R, KD) */
    uint16_t *slot;   /* (cap, L, M, KD) */
    int32_t *term;    /* (V) BM25 term of each token id (-1: none); built on first use */
    int32_t *qmark;   /* (V) scratch: 1 + query-term index, per term */
};

int mn_exact_create(const mn_model *m, int32_t l, int32_t M, mn_exact **out) {
    *out = NULL;
    if (!m || l <= 0 || M <= 0) return mn_error(MN_EINVAL, "exact store: segments of %d tokens, %d slots", l, M);
    mn_exact *x = calloc(1, sizeof *x);
    if (!x) return mn_error(MN_ENOMEM, "out of memory");
    const mn_hparams *hp = &m->hp;
    x->m = m;
    x->L = hp->n_layer, x->H = hp->n_head, x->KV = hp->n_head_kv, x->D = hp->head_dim, x->V = hp->n_vocab;
    x->KD = hp->n_head_kv * hp->head_dim;
    x->l = l, x->M = M;
    x->keys = 1;
    *out = x;
    return MN_OK;
}

int mn_exact_create_lexical(const mn_model *m, int32_t l, mn_exact **out) {
    int rc = mn_exact_create(m, l, 1, out);
    if (!rc) (*out)->keys = 0;
    return rc;
}

void mn_exact_free(mn_exact *x) {
    if (!x) return;
    free(x->ids), free(x->len), free(x->start), free(x->text), free(x->rep), free(x->rep_sh), free(x->slot);
    free(x->term), free(x->qmark);
    free(x);
}

void mn_exact_clear(mn_exact *x) {
    if (x) x->n = 0;
}

int32_t mn_exact_n(const mn_exact *x) { return x ? x->n : 0; }
int32_t mn_exact_seg_len(const mn_exact *x) { return x->l; }

static size_t rep_elems(const mn_exact *x) { return (size_t)x->L * MN_RECALL_REP * (size_t)x->KD; }
static size_t slot_elems(const mn_exact *x) { return (size_t)x->L * (size_t)x->M * (size_t)x->KD; }

static int grow(mn_exact *x) {
    if (x->n < x->cap) return MN_OK;
    const int32_t cap = x->cap ? x->cap * 2 : 16;
    if (cap > (1 << 22)) return mn_error(MN_ERANGE, "exact store: more than %d segments", 1 << 22);
#define GROW(f, per)                                                       \
    do {                                                                   \
        void *p = realloc(x->f, sizeof *x->f * (size_t)cap * (size_t)(per)); \
        if (!p) return mn_error(MN_ENOMEM, "out of memory for the exact store (%d segments)", cap); \
        x->f = p;                                                          \
    } while (0)
    GROW(ids, x->l);
    GROW(len, 1);
    GROW(start, 1);
    GROW(text, 1);
    if (x->keys) {
        GROW(rep, rep_elems(x));
        GROW(rep_sh, rep_elems(x));
        GROW(slot, slot_elems(x));
    }
#undef GROW
    x->cap = cap;
    return MN_OK;
}

static void to_f16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = mn_fp32_to_fp16(src[i]);
}

/* Checks and stores a segment's ids as segment x->n (not yet counted); *seg gets its index. */
static int put_ids(mn_exact *x, const int32_t *ids, int32_t n, int64_t start, int text, int32_t *seg) {
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= x->V) return mn_error(MN_EINVAL, "exact store: token id %d out of range", ids[i]);
    int rc = grow(x);
    if (rc) return rc;
    const int32_t s = *seg = x->n;
    memcpy(x->ids + (size_t)s * x->l, ids, sizeof(int32_t) * (size_t)n);
    x->len[s] = n;
    x->start[s] = start;
    x->text[s] = (uint8_t)text;
    return MN_OK;
}

int mn_exact_add(mn_exact *x, const int32_t *ids, int32_t n, int64_t start, const float *rep, const float *rep_sh,
                 const float *slot_k, int64_t slot_ld) {
    if (!x || !ids || n <= 0 || n > x->l || start < 0 || (x->keys && (!rep || !rep_sh || !slot_k || slot_ld < x->M)))
        return mn_error(MN_EINVAL, "exact store: bad segment (%d tokens of at most %d)", n, x ? x->l : 0);
    int32_t s;
    int rc = put_ids(x, ids, n, start, 0, &s);
    if (rc) return rc;
    x->n++;
    if (!x->keys) return MN_OK;
    to_f16(x->rep + (size_t)s * rep_elems(x), rep, rep_elems(x));
    to_f16(x->rep_sh + (size_t)s * rep_elems(x), rep_sh, rep_elems(x));
    uint16_t *sd = x->slot + (size_t)s * slot_elems(x);
    for (int32_t li = 0; li < x->L; li++)
        to_f16(sd + (size_t)li * x->M * x->KD, slot_k + (size_t)li * (size_t)slot_ld * x->KD, (size_t)x->M * x->KD);
    return MN_OK;
}

int mn_exact_add_text(mn_exact *x, const int32_t *ids, int32_t n, int64_t start) {
    if (!x || !ids || n <= 0 || start < 0) return mn_error(MN_EINVAL, "exact store: bad text run (%d tokens)", n);
    for (int32_t off = 0; off < n; off += x->l) {
        int32_t s;
        int rc = put_ids(x, ids + off, n - off < x->l ? n - off : x->l, start + off, 1, &s);
        if (rc) return rc;
        if (x->keys) { /* zeros: the key scorers pass text segments over, but read every row into their product */
            memset(x->rep + (size_t)s * rep_elems(x), 0, sizeof(uint16_t) * rep_elems(x));
            memset(x->rep_sh + (size_t)s * rep_elems(x), 0, sizeof(uint16_t) * rep_elems(x));
            memset(x->slot + (size_t)s * slot_elems(x), 0, sizeof(uint16_t) * slot_elems(x));
        }
        x->n++;
    }
    return MN_OK;
}

void mn_exact_truncate(mn_exact *x, int32_t n) {
    if (x && n >= 0 && n < x->n) x->n = n;
}

const int32_t *mn_exact_ids(const mn_exact *x, int32_t seg, int32_t *n, int64_t *start) {
    if (!x || seg < 0 || seg >= x->n) return NULL;
    if (n) *n = x->len[seg];
    if (start) *start = x->start[seg];
    return x->ids + (size_t)seg * x->l;
}

const uint16_t *mn_exact_keys(const mn_exact *x, int32_t seg, int which) {
    if (!x || seg < 0 || seg >= x->n || !x->keys) return NULL;
    if (which == 0) return x->rep + (size_t)seg * rep_elems(x);
    if (which == 1) return x->rep_sh + (size_t)seg * rep_elems(x);
    return x->slot + (size_t)seg * slot_elems(x);
}

/* ------------------------------------------------------------- key scoring */

/* scores[s] += sum over layers, query rows and heads of softmax_s(max_k q.k / sqrt(D)) */
static int score_keys(mn_exact *x, const uint16_t *keys, int32_t nk, size_t seg_elems, const float *q, int32_t nq,
                      float *scores) {
    const int32_t S = x->n, L = x->L, D = x->D, KV = x->KV, G = x->H / x->KV, KD = x->KD, HD = x->H * x->D;
    const int64_t rows = (int64_t)nq * G, cols = (int64_t)S * nk;
    float *qp = malloc(sizeof(float) * (size_t)(rows * D));
    float *kp = malloc(sizeof(float) * (size_t)(cols * D));
    float *sc = malloc(sizeof(float) * (size_t)(rows * cols));
    float *best = malloc(sizeof(float) * (size_t)S);
    if (!qp || !kp || !sc || !best) {
        free(qp), free(kp), free(sc), free(best);
        return mn_error(MN_ENOMEM, "out of memory scoring %d segments", S);
    }
    memset(scores, 0, sizeof(float) * (size_t)S);
    const float scale = 1.0f / sqrtf((float)D);
    for (int32_t li = 0; li < L; li++)
        for (int32_t kh = 0; kh < KV; kh++) {
            for (int32_t t = 0; t < nq; t++)
                memcpy(qp + (int64_t)t * G * D, q + ((size_t)li * nq + t) * HD + (size_t)kh * G * D,
                       sizeof(float) * (size_t)(G * D));
            for (int32_t s = 0; s < S; s++)
                for (int32_t j = 0; j < nk; j++) {
                    const uint16_t *k = keys + s * seg_elems + ((size_t)li * nk + j) * KD + (size_t)kh * D;
                    float *dst = kp + ((int64_t)s * nk + j) * D;
                    for (int32_t d = 0; d < D; d++) dst[d] = mn_fp16_to_fp32(k[d]);
                }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, D, scale, qp, D, kp, D, 0.0f, sc,
                        (int)cols);
            for (int64_t r = 0; r < rows; r++) {
                const float *row = sc + r * cols;
                float mx = -FLT_MAX;
                for (int32_t s = 0; s < S; s++) {
                    if (x->text[s]) continue;
                    float b = -FLT_MAX;
                    for (int32_t j = 0; j < nk; j++) b = row[(int64_t)s * nk + j] > b ? row[(int64_t)s * nk + j] : b;
                    best[s] = b;
                    mx = b > mx ? b : mx;
                }
                double sum = 0;
                for (int32_t s = 0; s < S; s++)
                    if (!x->text[s]) sum += (best[s] = expf(best[s] - mx));
                for (int32_t s = 0; s < S; s++)
                    if (!x->text[s]) scores[s] += (float)(best[s] / sum);
            }
        }
    for (int32_t s = 0; s < S; s++)
        if (x->text[s]) scores[s] = -1.0f; /* below every keyed segment (their scores are >= 0) */
    free(qp), free(kp), free(sc), free(best);
    return MN_OK;
}

/* ------------------------------------------------------------------- BM25 */

/* The term of every token id: its piece lower-cased with surrounding spaces
 * stripped, identified by the first id with the same text; -1 for pieces
 * without a letter or digit (punctuation, spaces, control tokens). */
static int build_terms(mn_exact *x) {
    if (x->term) return MN_OK;
    const mn_tokenizer *tok = mn_model_tokenizer(x->m);
    const int32_t V = x->V;
    int32_t *term = malloc(sizeof(int32_t) * (size_t)V);
    x->qmark = calloc((size_t)V, sizeof(int32_t));
    /* open addressing on the normalised text's hash: slot -> first id */
    const uint32_t cap = 1u << (32 - __builtin_clz((uint32_t)V * 2u));
    int32_t *tab = malloc(sizeof(int32_t) * cap);
    uint64_t *th = malloc(sizeof(uint64_t) * cap);
    if (!term || !x->qmark || !tab || !th) {
        free(term), free(tab), free(th), free(x->qmark);
        x->qmark = NULL;
        return mn_error(MN_ENOMEM, "out of memory for the lexical index");
    }
    for (uint32_t i = 0; i < cap; i++) tab[i] = -1;
    for (int32_t id = 0; id < V; id++) {
        size_t n = 0;
        const char *p = mn_token_piece(tok, id, 0, &n);
        size_t a = 0, b = n;
        while (a < b && isspace((unsigned char)p[a])) a++;
        while (b > a && isspace((unsigned char)p[b - 1])) b--;
        int word = 0;
        uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 */
        for (size_t i = a; i < b; i++) {
            unsigned char c = (unsigned char)p[i];
            word |= isalnum(c) || c >= 0x80;
            h = (h ^ (uint64_t)tolower(c)) * 0x100000001b3ull;
        }
        if (!word) {
            term[id] = -1;
            continue;
        }
        uint32_t slot = (uint32_t)(h ^ h >> 32) & (cap - 1);
        while (tab[slot] >= 0 && th[slot] != h) slot = (slot + 1) & (cap - 1);
        if (tab[slot] < 0) tab[slot] = id, th[slot] = h;
        term[id] = tab[slot];
    }
    free(tab), free(th);
    x->term = term;
    return MN_OK;
}

/* Counts the query terms among segment s's tokens [from, to) into row (per
 * query term); returns the tokens counted. */
static int32_t count_terms(const mn_exact *x, int32_t s, int32_t from, int32_t to, int32_t *row) {
    const int32_t *sid = x->ids + (size_t)s * x->l;
    for (int32_t i = from; i < to; i++) {
        const int32_t t = x->term[sid[i]];
        if (t >= 0 && x->qmark[t]) row[x->qmark[t] - 1]++;
    }
    return to - from;
}

static int score_bm25(mn_exact *x, const int32_t *ids, int32_t nq, float *scores) {
    int rc = build_terms(x);
    if (rc) return rc;
    const int32_t S = x->n;
    int32_t *qt = malloc(sizeof(int32_t) * (size_t)(nq > 0 ? nq : 1));
    int32_t *tf = calloc((size_t)S * (size_t)(nq > 0 ? nq : 1), sizeof(int32_t));
    int32_t *df = calloc((size_t)(nq > 0 ? nq : 1), sizeof(int32_t));
    if (!qt || !tf || !df) {
        free(qt), free(tf), free(df);
        return mn_error(MN_ENOMEM, "out of memory scoring %d segments", S);
    }
    int32_t nt = 0; /* distinct query terms */
    for (int32_t i = 0; i < nq; i++) {
        if (ids[i] < 0 || ids[i] >= x->V) continue;
        const int32_t t = x->term[ids[i]];
        if (t < 0 || x->qmark[t]) continue;
        qt[nt] = t;
        x->qmark[t] = ++nt;
    }
    /* Each segment is read with the edges of its document neighbours (chunk overlap, as passage
     * retrieval does): a sentence cut by a segment boundary still scores whole in both segments,
     * so both are paged and read together instead of neither ranking. */
    const int32_t W = MN_RECALL_BM25_OVERLAP < x->l / 4 ? MN_RECALL_BM25_OVERLAP : x->l / 4;
    int32_t *dl = malloc(sizeof(int32_t) * (size_t)(S > 0 ? S : 1));
    double avg = 0;
    for (int32_t s = 0; s < S && dl; s++) {
        int32_t *row = tf + (size_t)s * nt;
        dl[s] = count_terms(x, s, 0, x->len[s], row);
        if (W > 0 && s > 0 && x->start[s - 1] + x->len[s - 1] == x->start[s])
            dl[s] += count_terms(x, s - 1, x->len[s - 1] > W ? x->len[s - 1] - W : 0, x->len[s - 1], row);
        if (W > 0 && s + 1 < S && x->start[s] + x->len[s] == x->start[s + 1])
            dl[s] += count_terms(x, s + 1, 0, x->len[s + 1] < W ? x->len[s + 1] : W, row);
        avg += dl[s];
        for (int32_t j = 0; j < nt; j++) df[j] += row[j] > 0;
    }
    if (!dl) {
        free(qt), free(tf), free(df);
        return mn_error(MN_ENOMEM, "out of memory scoring %d segments", S);
    }
    avg /= S > 0 ? S : 1;
    const double k1 = 1.2, b = 0.75;
    for (int32_t s = 0; s < S; s++) {
        double sc = 0;
        for (int32_t j = 0; j < nt; j++) {
            const double f = tf[(size_t)s * nt + j];
            if (f <= 0) continue;
            const double idf = log(((double)S - df[j] + 0.5) / (df[j] + 0.5) + 1.0);
            sc += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * dl[s] / avg));
        }
        scores[s] = (float)sc;
    }
    for (int32_t j = 0; j < nt; j++) x->qmark[qt[j]] = 0;
    free(qt), free(tf), free(df), free(dl);
    return MN_OK;
}

int mn_exact_score(mn_exact *x, mn_recall_scorer sc, const float *q, const int32_t *ids, int32_t nq, float *scores) {
    if (!x || !scores || nq <= 0) return mn_error(MN_EINVAL, "recall: an empty query");
    if ((unsigned)sc >= MN_RECALL_N_SCORERS) return mn_error(MN_EINVAL, "recall: unknown scorer %d", (int)sc);
    if (x->n == 0) return MN_OK;
    if (sc == MN_RECALL_BM25) {
        if (!ids) return mn_error(MN_EINVAL, "recall: BM25 needs the query's token ids");
        return score_bm25(x, ids, nq, scores);
    }
    if (!q) return mn_error(MN_EINVAL, "recall: the %s scorer needs the query's queries", mn_recall_scorer_name(sc));
    if (!x->keys) return mn_error(MN_EINVAL, "recall: this store holds no keys for the %s scorer", mn_recall_scorer_name(sc));
    if (sc == MN_RECALL_SLOTS) return score_keys(x, x->slot, x->M, slot_elems(x), q, nq, scores);
    return score_keys(x, sc == MN_RECALL_KEYS ? x->rep : x->rep_sh, MN_RECALL_REP, rep_elems(x), q, nq, scores);
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int32_t mn_exact_top(const mn_exact *x, const float *scores, int32_t k, int32_t *segs) {
    const int32_t S = x ? x->n : 0;
    if (k > S) k = S;
    if (k <= 0) return 0;
    /* selection by repeated scans: k is small (a few segments) */
    int32_t got = 0;
    for (; got < k; got++) {
        int32_t b = -1;
        for (int32_t s = 0; s < S; s++) {
            int taken = 0;
            for (int32_t j = 0; j < got && !taken; j++) taken = segs[j] == s;
            if (taken) continue;
            if (b < 0 || scores[s] > scores[b]) b = s;
        }
        segs[got] = b;
    }
    qsort(segs, (size_t)got, sizeof *segs, cmp_i32);
    return got;
}

int mn_recall_capture_queries(mn_context *c, const int32_t *q, int32_t nq, float *qb) {
    if (!q || nq <= 0 || nq > MN_RECALL_MAXQ || !qb) return mn_error(MN_EINVAL, "recall: a query of %d tokens", nq);
    const int32_t c0 = mn_kv_n_cells(c);
    if (c0 + nq > mn_context_n_ctx(c)) return mn_error(MN_ERANGE, "no room in the context to score a query of %d tokens", nq);
    int32_t idx[MN_RECALL_MAXQ];
    for (int32_t i = 0; i < nq; i++) idx[i] = i;
    mn_batch b = {.n = nq, .tokens = q, .n_capture = nq, .capture_idx = idx, .capture_q = qb};
    int rc = mn_decode_batch(c, &b, NULL, 0);
    return rc ? rc : mn_kv_drop(c, c0, mn_kv_n_cells(c));
}

/* ------------------------------------------------------ representative keys */

/* indices of the R largest w[0..n) into out (ties: the earlier), skipping the first `skip` */
static void top_r(const float *w, int32_t n, int32_t skip, int32_t *out) {
    int32_t got = 0;
    for (; got < MN_RECALL_REP && got < n - skip; got++) {
        int32_t b = -1;
        for (int32_t j = skip; j < n; j++) {
            int taken = 0;
            for (int32_t i = 0; i < got && !taken; i++) taken = out[i] == j;
            if (!taken && (b < 0 || w[j] > w[b])) b = j;
        }
        out[got] = b;
    }
    for (int32_t i = got; i < MN_RECALL_REP; i++) out[i] = got ? out[got - 1] : 0;
}

int mn_recall_rep_keys(const mn_model *m, const mn_context *enc, int32_t r, const float *mq, const int32_t *mpos,
                       int32_t mm, float *rep, float *rep_sh) {
    const mn_hparams *hp = &m->hp;
    const int32_t L = hp->n_layer, H = hp->n_head, D = hp->head_dim, G = hp->n_head / hp->n_head_kv;
    const int32_t KD = hp->n_head_kv * D, HD = H * D;
    if (r <= 0 || r > mn_kv_n_cells(enc) || mm <= 0) return mn_error(MN_EINVAL, "recall: no segment to index");
    float *k = malloc(sizeof(float) * (size_t)L * (size_t)r * (size_t)KD);
    float *w = calloc((size_t)(L + 1) * (size_t)r, sizeof(float)); /* per layer, then summed */
    float *qr = malloc(sizeof(float) * (size_t)HD), *lg = malloc(sizeof(float) * (size_t)r);
    if (!k || !w || !qr || !lg) {
        free(k), free(w), free(qr), free(lg);
        return mn_error(MN_ENOMEM, "out of memory indexing a segment");
    }
    int rc = mn_kv_read(enc, 0, r, k, NULL);
    const float scale = hp->attn_scale;
    for (int32_t li = 0; li < L && !rc; li++) {
        float *wl = w + (size_t)li * r;
        for (int32_t i = 0; i < mm && !rc; i++) {
            const int32_t vis = mpos[i] < r ? mpos[i] : r; /* segment tokens before the memory token */
            if (vis <= 0) continue;
            memcpy(qr, mq + ((size_t)li * mm + i) * HD, sizeof(float) * (size_t)HD);
            if ((rc = mn_rope_rotate(m, li, qr, H, mpos[i]))) break; /* the query as the encoder used it */
            for (int32_t h = 0; h < H; h++) {
                const float *qh = qr + (size_t)h * D;
                float mx = -FLT_MAX;
                for (int32_t j = 0; j < vis; j++) {
                    const float *kj = k + ((size_t)li * r + j) * KD + (size_t)(h / G) * D;
                    float d = 0;
                    for (int32_t e = 0; e < D; e++) d += qh[e] * kj[e];
                    lg[j] = d * scale;
                    mx = lg[j] > mx ? lg[j] : mx;
                }
                double sum = 0;
                for (int32_t j = 0; j < vis; j++) sum += (lg[j] = expf(lg[j] - mx));
                for (int32_t j = 0; j < vis; j++) wl[j] += (float)(lg[j] / sum);
            }
        }
        for (int32_t j = 0; j < r; j++) w[(size_t)L * r + j] += wl[j];
    }
    const int32_t skip = r > 2 * MN_RECALL_REP ? 4 : 0;
    int32_t pick[MN_RECALL_REP], pick_sh[MN_RECALL_REP];
    top_r(w + (size_t)L * r, r, skip, pick_sh);
    for (int32_t li = 0; li < L && !rc; li++) {
        top_r(w + (size_t)li * r, r, skip, pick);
        for (int32_t i = 0; i < MN_RECALL_REP && !rc; i++) {
            float *d = rep + ((size_t)li * MN_RECALL_REP + i) * KD, *ds = rep_sh + ((size_t)li * MN_RECALL_REP + i) * KD;
            memcpy(d, k + ((size_t)li * r + pick[i]) * KD, sizeof(float) * (size_t)KD);
            memcpy(ds, k + ((size_t)li * r + pick_sh[i]) * KD, sizeof(float) * (size_t)KD);
            /* RoPE undone: the cell of token j was rotated at position j */
            rc = mn_rope_rotate(m, li, d, hp->n_head_kv, -mn_kv_pos(enc, pick[i]));
            if (!rc) rc = mn_rope_rotate(m, li, ds, hp->n_head_kv, -mn_kv_pos(enc, pick_sh[i]));
        }
    }
    free(k), free(w), free(qr), free(lg);
    return rc;
}
