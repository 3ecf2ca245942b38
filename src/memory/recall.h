/* recall.h - exact recall beside the compressed memory.
 *
 * The compressed memory keeps the gist of what was read and loses its facts.
 * The exact store keeps, for every segment that was compressed, its token ids
 * and a small index; before the decoder reads a question, the segments most
 * relevant to it are scored, and the best K are paged back into the window raw
 * (recomputed from their ids behind the memory), in document order:
 *   [sinks | memory | paged segments | recent raw segments | current piece]
 * (InfLLM and Quest page exact context the same way; LLoCO pairs its
 * compressed memories with retrieval.)
 *
 * Scorers:
 *   KEYS         representative keys (InfLLM): per segment and layer, the R
 *                segment tokens that the encoder's memory tokens attended to
 *                most in that layer. The question's queries (before RoPE)
 *                against those keys (RoPE undone): per layer, query row and
 *                head, the best key of each segment, a softmax over the
 *                segments, summed. Position-free, as InfLLM places every
 *                memory unit at one distance.
 *   KEYS_SHARED  the same with one set of R tokens per segment for all layers,
 *                chosen by the attention summed over the layers.
 *   SLOTS        the same against the segment's memory slots' keys (the
 *                trained memory as its own index: nothing extra to store
 *                where the slots are kept anyway, as in memory files).
 *   BM25         lexical: the question's words against each segment's words
 *                (token pieces lower-cased, surrounding spaces stripped, pieces
 *                without a letter or digit ignored), Okapi BM25 (k1 1.2, b 0.75).
 *
 * Shapes: L layers, KD kv dim (n_head_kv * head_dim), HD n_head * head_dim,
 * R representative keys per segment and layer, M memory slots per segment,
 * l segment length, S segments stored, nq query tokens.
 */
#ifndef MN_RECALL_H
#define MN_RECALL_H

#include <stdint.h>

#include "mnemo.h"

typedef enum {
    MN_RECALL_KEYS = 0,
    MN_RECALL_KEYS_SHARED = 1,
    MN_RECALL_SLOTS = 2,
    MN_RECALL_BM25 = 3,
} mn_recall_scorer;
#define MN_RECALL_N_SCORERS 4
#define MN_RECALL_REP 8 /* R: representative keys per segment and layer */
#define MN_RECALL_MAXQ 128 /* query tokens scored (a longer query: its end) */
/* K = MN_RECALL_AUTO pages a number of segments that grows with the store:
 * one per 16 stored segments, at least 2 and at most 8 (mn_recall_auto_k). */
#define MN_RECALL_AUTO (-1)
#define MN_RECALL_AUTO_MIN 2
#define MN_RECALL_AUTO_MAX 8
#define MN_RECALL_AUTO_PER 16
/* The defaults the commands use, chosen on validation text (docs/RESULTS.md,
 * "Choosing K and the raw window"): at 8K (24 stored segments) K 2 found as
 * many keys as K 1 and more than K 4, and covers a fact split across two
 * segments; at 32K (120 segments) bm25's top 2 missed the key's segment in
 * both trials and its top 8 held it in both: so K grows with the store, 2 at
 * 8K, 8 from 32K on. With segments paged, only the newest 128 tokens of the
 * raw window stay beside them (local 128) and the rest of the window is
 * offered to recall like the compressed segments: on validation (8K, key,
 * fact and multi-key needles at depths 10-90 %) that answered 19 of 30 against
 * 16 of 30 with the whole window, in 43 % of the cells (RESULTS.md, "The raw
 * window pageable"). Perplexity streams keep the whole window (eval ppl's
 * default): text that goes on needs its recent past, a question does not */
#define MN_RECALL_DEFAULT_K MN_RECALL_AUTO
#define MN_RECALL_DEFAULT_SCORER MN_RECALL_BM25
#define MN_RECALL_DEFAULT_LATE 0
#define MN_RECALL_DEFAULT_LOCAL 128
/* BM25 reads each segment with the last and first tokens of its document
 * neighbours (up to a quarter of a segment), so a sentence cut by a segment
 * boundary scores whole in both. On validation (8K, key / multi-key / fact
 * needles, 10 trials each) an overlap of 32 tokens answered 22 of 30 against
 * 19 with none and 20 with 64 (RESULTS.md, "BM25 with overlapping edges"). */
#define MN_RECALL_BM25_OVERLAP 32
/* Re-selection while answering: off by default. Where the choice changes the
 * context is primed again, which with segments kept as ids (--exact tokens)
 * decodes every paged segment again: 34-35 s per change for 8 segments behind
 * a 71K-token book's memory on two shared cores (RESULTS.md), against a benefit
 * no validation task measures yet (every passkey and fact answer is shorter
 * than one interval). */
#define MN_RECALL_DEFAULT_EVERY 0

/* "keys", "keys-shared", "slots", "bm25"; -1 if unknown. */
int mn_recall_scorer_parse(const char *name);
const char *mn_recall_scorer_name(mn_recall_scorer sc);
/* Whether the scorer reads the query tokens' queries (all but BM25). */
int mn_recall_scorer_needs_q(mn_recall_scorer sc);

/* What a reader asks of recall: k segments (0: none) by a scorer, paged in
 * before the raw recent window (document order) or after it (late); with
 * segments paged, only the newest `local` raw tokens of that window stay
 * (0: all of them). fit: memories whose slots do not fit the context (less
 * `reserve` cells kept free for the prompt and answer) leave out their oldest
 * slots instead of failing, so that a document longer than the model's
 * positions times the ratio is still read with its newest gist and recall
 * over all of it. every: while an answer is generated, recall chooses again
 * every `every` tokens for the question and the answer so far, and pages the
 * new choice in where it differs (0: once, at the question; BM25 only). */
typedef struct {
    int32_t k;
    mn_recall_scorer scorer;
    int late;
    int32_t local;
    int fit;
    int32_t reserve;
    int32_t every;
} mn_recall_opts;

/* The defaults above. */
mn_recall_opts mn_recall_default_opts(int32_t k);
/* K for a store of n_stored segments: k itself when k >= 0, else (auto) one
 * per MN_RECALL_AUTO_PER stored segments within [AUTO_MIN, AUTO_MAX]. */
int32_t mn_recall_auto_k(int32_t k, int32_t n_stored);
/* The most segments k may page: k, or AUTO_MAX for auto (context sizing). */
int32_t mn_recall_max_k(int32_t k);
/* "auto" or a count in [0, max] -> *k; -1 if neither. */
int mn_recall_parse_k(const char *s, int32_t max, int32_t *k);

typedef struct mn_exact mn_exact;

/* An empty store for segments of up to l tokens with M memory slots each. */
int mn_exact_create(const mn_model *m, int32_t l, int32_t M, mn_exact **out);
/* The same holding the ids alone (BM25 only): mn_exact_add ignores its keys,
 * which may be NULL, and the key scorers are refused. */
int mn_exact_create_lexical(const mn_model *m, int32_t l, mn_exact **out);
void mn_exact_free(mn_exact *x);
void mn_exact_clear(mn_exact *x);
int32_t mn_exact_n(const mn_exact *x);
int32_t mn_exact_seg_len(const mn_exact *x);

/* Appends one segment (copies everything): ids[0..n), n <= l; start: the index
 * of its first token in the text read. rep, rep_sh: (L, R, KD) keys without
 * RoPE (mn_recall_rep_keys). slot_k: the segment's M memory-slot keys without
 * RoPE, slot k of layer i at slot_k[(i * slot_ld + k) * KD] (slot_ld >= M).
 * Keys are held as f16. */
int mn_exact_add(mn_exact *x, const int32_t *ids, int32_t n, int64_t start, const float *rep, const float *rep_sh,
                 const float *slot_k, int64_t slot_ld);
/* Appends a run of text alone (ids[0..n), no keys), cut into segments of l
 * from its start (the last one shorter), the first starting at `start`: raw
 * tokens a reader dropped from its window, offered to recall beside the
 * compressed segments. BM25 scores them like any other; the key scorers score
 * them -1, below every segment with keys. */
int mn_exact_add_text(mn_exact *x, const int32_t *ids, int32_t n, int64_t start);
/* Keeps the first n segments (what was added after them, e.g. text segments
 * offered for one choice, is forgotten). */
void mn_exact_truncate(mn_exact *x, int32_t n);
/* Segment seg's ids (*n of them) and its first token's index in the text. */
const int32_t *mn_exact_ids(const mn_exact *x, int32_t seg, int32_t *n, int64_t *start);
/* Segment seg's keys, f16: which 0 per-layer, 1 shared representative keys
 * (L, R, KD); 2 slot keys (L, M, KD). */
const uint16_t *mn_exact_keys(const mn_exact *x, int32_t seg, int which);

/* Scores every stored segment for a query: q (L, nq, HD) the query tokens'
 * queries before RoPE (key scorers; NULL for BM25), ids (nq) the query's token
 * ids (BM25). scores: S floats, higher is more relevant. */
int mn_exact_score(mn_exact *x, mn_recall_scorer sc, const float *q, const int32_t *ids, int32_t nq, float *scores);
/* The k best segments by score (ties: the earlier one), written to segs in
 * document order; returns how many (min(k, S)). */
int32_t mn_exact_top(const mn_exact *x, const float *scores, int32_t k, int32_t *segs);

/* Reads the query q[0..nq) (nq <= MN_RECALL_MAXQ) after the cells already in
 * c, keeping its tokens' queries before RoPE in qb (L, nq, HD), and drops its
 * cells again: what the key scorers compare with the stored keys. */
int mn_recall_capture_queries(mn_context *c, const int32_t *q, int32_t nq, float *qb);

/* Representative keys of the segment an encoder context has just read: the
 * segment's r tokens are its cells 0..r-1 (keys rotated at their positions),
 * mq (L, mm, HD) the mm memory tokens' queries before RoPE at positions mpos,
 * each seeing the segment tokens before its position. Per layer, the attention
 * each segment token receives from the memory tokens (softmax over the
 * segment tokens it sees, summed over memory tokens and heads); rep gets, per
 * layer, the keys (RoPE undone) of the R tokens that received the most in that
 * layer, rep_sh those of the R tokens that received the most over all layers.
 * The first 4 tokens are passed over when the segment has more than 2 R: the
 * encoder parks attention on them whatever they say. rep, rep_sh (L, R, KD);
 * R > r repeats the last chosen key. */
int mn_recall_rep_keys(const mn_model *m, const mn_context *enc, int32_t r, const float *mq, const int32_t *mpos,
                       int32_t mm, float *rep, float *rep_sh);

#endif
