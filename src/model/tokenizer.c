/* tokenizer.c - BPE (byte-level, GPT-2 style) and SentencePiece-BPE tokenizers
 * reproducing llama.cpp's llama_tokenize token for token.
 *
 * Pipeline of mn_tokenize:
 *   1. special-token partition: the text is cut around whole occurrences of
 *      special token texts, tried in order of decreasing length (each token
 *      finds all its leftmost non-overlapping matches in the text fragments
 *      left by longer ones) - the same order llama.cpp uses.
 *   2. per raw-text fragment:
 *      BPE: decode UTF-8 to code points (bad bytes -> U+FFFD), split into
 *           words with the pre-tokenizer (hand-written matchers for the regexes
 *           llama.cpp uses, with code point classes from unicode_tables.h),
 *           then merge each word's bytes by merge rank (lowest rank first, ties
 *           leftmost first) with a binary heap of candidate pairs.
 *      SPM: optionally prefix ' ', replace ' ' with U+2581, split into UTF-8
 *           characters, merge the adjacent pair whose concatenation is the
 *           highest-scoring vocabulary token (ties leftmost first), and emit
 *           <0xNN> byte tokens for characters that did not form a token.
 *
 * BPE runs on raw bytes rather than on the GPT-2 "byte-to-unicode" strings:
 * that mapping is a bijection between bytes and characters, so merging raw
 * bytes with the vocabulary and merges translated back to raw bytes gives the
 * same tokens while pieces for decoding come out directly. Every string that
 * takes part in merging (vocabulary entries and both halves and the result of
 * every merge) is interned as a "symbol" id; a merge is then a lookup of the
 * pair (left symbol, right symbol) -> (rank, merged symbol) in a hash table.
 */
#include "model/tokenizer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model/unicode_tables.h"

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */
/* ------------------------------------------------------------------------ */

enum { PRE_NONE = 0, PRE_GPT2, PRE_LLAMA3, PRE_DIGITS_GPT2, PRE_DEFAULT };

/* token attribute bits (llama.cpp's llama_token_attr subset) */
enum {
    A_UNDEFINED = 0,
    A_UNKNOWN = 1 << 0,
    A_UNUSED = 1 << 1,
    A_NORMAL = 1 << 2,
    A_CONTROL = 1 << 3,
    A_USER_DEFINED = 1 << 4,
    A_BYTE = 1 << 5,
};

typedef struct {
    uint32_t off, len;
} span32;

struct mn_tokenizer {
    mn_vocab_kind kind;
    int pre;
    int ignore_merges;
    int add_bos, add_eos, add_space_prefix;
    char pre_name[64];
    int32_t n_vocab;
    int32_t bos, eos, eot, eom, unk, pad;

    /* per token */
    span32 *text;   /* into pool: vocabulary text (NUL-terminated) */
    span32 *piece;  /* into pool: decoded bytes */
    float *score;
    uint8_t *attr;
    uint8_t *eog;
    char *pool;
    size_t pool_len, pool_cap;

    /* symbols: ids [0, n_vocab) are tokens, [n_vocab, n_sym) extra BPE strings.
     * key = bytes a symbol stands for while tokenizing (SPM: vocabulary text;
     * BPE: raw bytes), len UINT32_MAX = no key (token unreachable by lookup). */
    span32 *key;
    int32_t n_sym, sym_cap;
    int32_t *htab; /* open addressing over symbol ids, -1 = empty */
    uint32_t hmask;

    /* BPE merges: key (left<<32 | right) -> rank, result symbol */
    uint64_t *mkey;
    int32_t *mrank, *mres;
    uint32_t mmask;
    int32_t byte_sym[256];

    /* SPM byte fallback token per byte value */
    int32_t byte_tok[256];
    int spm_split; /* no token has U+2581 after another character (see spm_text) */

    char *chat_template; /* tokenizer.chat_template (NUL-terminated copy) or NULL */

    /* partition order: CONTROL/USER_DEFINED/UNKNOWN ids by decreasing text length */
    int32_t *special;
    int32_t n_special;
};

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)s[i] << (8 * i);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n && c < (1u << 30)) c <<= 1;
    return c;
}

/* growable byte pool; returns offset or UINT32_MAX on failure */
static uint32_t pool_add(mn_tokenizer *t, const void *s, size_t n) {
    if (t->pool_len + n + 1 > UINT32_MAX) return UINT32_MAX;
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + n + 1) cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p) return UINT32_MAX;
        t->pool = p;
        t->pool_cap = cap;
    }
    uint32_t off = (uint32_t)t->pool_len;
    if (n) memcpy(t->pool + off, s, n);
    t->pool[off + n] = 0;
    t->pool_len += n + 1;
    return off;
}

/* ------------------------------------------------------------------------ */
/* UTF-8 and code point classes                                             */
/* ------------------------------------------------------------------------ */

/* Decodes one code point the way llama.cpp does: overlong forms and surrogates
 * are accepted, a bad or truncated sequence consumes one byte and reads as
 * U+FFFD. Code points above U+10FFFF (which llama.cpp cannot re-encode) also
 * read as U+FFFD. Never reads past s[n-1]. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *adv) {
    unsigned c = s[0];
    if (c < 0x80) {
        *adv = 1;
        return c;
    }
    *adv = 1;
    if (!(c & 0x40)) return 0xFFFD;
    if (!(c & 0x20)) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0xFFFD;
        *adv = 2;
        return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    }
    if (!(c & 0x10)) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0xFFFD;
        *adv = 3;
        return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
    }
    if (!(c & 0x08)) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0xFFFD;
        uint32_t cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        if (cp > 0x10FFFF) return 0xFFFD; /* *adv stays 1, like any other bad sequence */
        *adv = 4;
        return cp;
    }
    return 0xFFFD;
}

static size_t utf8_put(uint32_t cp, unsigned char *o) {
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* class bits; F_IN marks "a code point inside the current segment" (llama.cpp's
 * non-zero flags), so an out-of-range lookahead reads as 0. */
enum { F_L = MN_UCD_LETTER, F_N = MN_UCD_NUMBER, F_P = MN_UCD_PUNCT, F_S = MN_UCD_SPACE, F_IN = 0x80 };

static uint8_t ucd_class(uint32_t cp) {
    if (cp < 256) return mn_ucd_latin1[cp];
    size_t lo = 0, hi = MN_UCD_NRANGES; /* last entry with start <= cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((mn_ucd_ranges[mid] >> 8) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return (uint8_t)(mn_ucd_ranges[lo] & 0xFF);
}

/* GPT-2 bytes_to_unicode: byte -> code point, and the inverse for cp < 324 */
static uint16_t g_byte_cp[256];
static int16_t g_cp_byte[324];

static void byte_map_build(void) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        g_byte_cp[b] = (uint16_t)(printable ? b : 256 + n++);
    }
    for (int i = 0; i < 324; i++) g_cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) g_cp_byte[g_byte_cp[b]] = (int16_t)b;
}

static pthread_once_t g_byte_map_once = PTHREAD_ONCE_INIT;
static void byte_map_init(void) { pthread_once(&g_byte_map_once, byte_map_build); }

/* Maps a GPT-2 byte-level string back to raw bytes. Returns the length, or -1
 * when a character is not one of the 256 byte characters (or bad UTF-8). */
static long bytelevel_decode(const char *s, size_t n, unsigned char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned c = (unsigned char)s[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
            i++;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < n && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
            cp = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
            i += 2;
        } else {
            return -1;
        }
        if (cp >= 324 || g_cp_byte[cp] < 0) return -1;
        out[o++] = (unsigned char)g_cp_byte[cp];
    }
    return (long)o;
}

/* ------------------------------------------------------------------------ */
/* symbol table (string -> id)                                              */
/* ------------------------------------------------------------------------ */

static int32_t sym_lookup(const mn_tokenizer *t, const void *s, size_t n) {
    uint32_t h = (uint32_t)hash_bytes(s, n) & t->hmask;
    for (;;) {
        int32_t id = t->htab[h];
        if (id < 0) return -1;
        const span32 k = t->key[id];
        if (k.len == n && memcmp(t->pool + k.off, s, n) == 0) return id;
        h = (h + 1) & t->hmask;
    }
}

static int htab_grow(mn_tokenizer *t, uint32_t cap) {
    int32_t *nt = malloc((size_t)cap * sizeof *nt);
    if (!nt) return MN_ENOMEM;
    for (uint32_t i = 0; i < cap; i++) nt[i] = -1;
    uint32_t mask = cap - 1;
    if (t->htab) {
        for (uint32_t i = 0; i <= t->hmask; i++) {
            int32_t id = t->htab[i];
            if (id < 0) continue;
            uint32_t h = (uint32_t)hash_bytes(t->pool + t->key[id].off, t->key[id].len) & mask;
            while (nt[h] >= 0) h = (h + 1) & mask;
            nt[h] = id;
        }
        free(t->htab);
    }
    t->htab = nt;
    t->hmask = mask;
    return 0;
}

/* Gives symbol `id` the key s[0..n) (stored in the pool). If another symbol
 * already has that key, the table entry is replaced when `replace` (llama.cpp's
 * token_to_id keeps the last duplicate), else left. */
static int sym_set_key(mn_tokenizer *t, int32_t id, const void *s, size_t n, int replace) {
    uint32_t off = pool_add(t, s, n);
    if (off == UINT32_MAX) return MN_ENOMEM;
    t->key[id].off = off;
    t->key[id].len = (uint32_t)n;
    uint32_t h = (uint32_t)hash_bytes(t->pool + off, n) & t->hmask;
    for (;;) {
        int32_t cur = t->htab[h];
        if (cur < 0) {
            t->htab[h] = id;
            return 0;
        }
        const span32 k = t->key[cur];
        if (k.len == n && memcmp(t->pool + k.off, t->pool + off, n) == 0) {
            if (replace) t->htab[h] = id;
            return 0;
        }
        h = (h + 1) & t->hmask;
    }
}

/* Returns the symbol for raw bytes s[0..n), creating an extra one if needed. */
static int32_t sym_intern(mn_tokenizer *t, const void *s, size_t n) {
    int32_t id = sym_lookup(t, s, n);
    if (id >= 0) return id;
    if (t->n_sym == t->sym_cap) {
        int32_t cap = t->sym_cap * 2;
        span32 *k = realloc(t->key, (size_t)cap * sizeof *k);
        if (!k) return MN_ENOMEM;
        t->key = k;
        t->sym_cap = cap;
    }
    /* keep the load factor under 1/2 */
    if ((uint64_t)(t->n_sym + 1) * 2 > (uint64_t)t->hmask + 1) {
        int rc = htab_grow(t, (t->hmask + 1) * 2);
        if (rc) return rc;
    }
    id = t->n_sym++;
    int rc = sym_set_key(t, id, s, n, 0);
    return rc ? rc : id;
}

/* merges */
static int merge_find(const mn_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    if (a < 0 || b < 0 || !t->mkey) return -1;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h = (uint32_t)hash_u64(k) & t->mmask;
    for (;;) {
        if (t->mrank[h] < 0) return -1;
        if (t->mkey[h] == k) {
            *res = t->mres[h];
            return t->mrank[h];
        }
        h = (h + 1) & t->mmask;
    }
}

static void merge_insert(mn_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t res) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h = (uint32_t)hash_u64(k) & t->mmask;
    for (;;) {
        if (t->mrank[h] < 0) {
            t->mkey[h] = k;
            t->mrank[h] = rank;
            t->mres[h] = res;
            return;
        }
        if (t->mkey[h] == k) return; /* first occurrence wins, like llama.cpp's emplace */
        h = (h + 1) & t->mmask;
    }
}

/* ------------------------------------------------------------------------ */
/* loading                                                                  */
/* ------------------------------------------------------------------------ */

void mn_tokenizer_free(mn_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->piece);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->pool);
    free(t->key);
    free(t->htab);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    free(t->special);
    free(t->chat_template);
    free(t);
}

static int str_eq(mn_gguf_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static int tok_text_is(const mn_tokenizer *t, int32_t id, const char *lit) {
    size_t n = strlen(lit);
    return t->text[id].len == n && memcmp(t->pool + t->text[id].off, lit, n) == 0;
}

static int text_in(const mn_tokenizer *t, int32_t id, const char *const *list) {
    for (; *list; list++)
        if (tok_text_is(t, id, *list)) return 1;
    return 0;
}

/* Reads an optional token id key: absent -> keep *id; out of range -> keep *id (llama.cpp
 * warns and keeps its default); wrong type -> error. */
static int read_id(const mn_gguf *g, const char *key, int32_t n_vocab, int32_t *id) {
    uint32_t v;
    int rc = mn_gguf_get_u32(g, key, &v);
    if (rc == MN_ENOTFOUND) return 0;
    if (rc) {
        int64_t w; /* an integer outside u32 (e.g. -1 for "none"): keep the default */
        if (mn_gguf_get_i64(g, key, &w) == 0) return 0;
        return mn_error(MN_EFORMAT, "tokenizer: %s is not an integer", key);
    }
    if (v < (uint32_t)n_vocab) *id = (int32_t)v;
    return 0;
}

static int read_flag(const mn_gguf *g, const char *key, int *flag) {
    int v;
    int rc = mn_gguf_get_bool(g, key, &v);
    if (rc == MN_ENOTFOUND) return 0;
    if (rc) return mn_error(MN_EFORMAT, "tokenizer: %s is not a boolean", key);
    *flag = v != 0;
    return 0;
}

/* Finds an array key and checks its element type and length. */
static int get_array(const mn_gguf *g, const char *key, mn_gguf_vtype want, int64_t want_n, int required,
                     int64_t *kv, uint64_t *n, const void **data) {
    *kv = mn_gguf_find_key(g, key);
    if (*kv < 0) {
        if (required) return mn_error(MN_EFORMAT, "tokenizer: missing %s", key);
        return MN_ENOTFOUND;
    }
    mn_gguf_vtype et;
    int rc = mn_gguf_get_arr(g, key, &et, n, data);
    if (rc) return mn_error(MN_EFORMAT, "tokenizer: %s is not an array", key);
    if (et != want) return mn_error(MN_EFORMAT, "tokenizer: %s has element type %d, expected %d", key, (int)et, (int)want);
    if (want_n >= 0 && *n != (uint64_t)want_n)
        return mn_error(MN_EFORMAT, "tokenizer: %s has %llu entries but the vocabulary %lld", key,
                        (unsigned long long)*n, (long long)want_n);
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const mn_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->text[x].len, ly = t->text[y].len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static const char *const k_eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                          "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<end_of_utterance>",
                                          NULL};
static const char *const k_eom_texts[] = {"<|eom_id|>", NULL};
static const char *const k_fim_pre[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>",
                                        "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const k_fim_suf[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",
                                        "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const k_fim_mid[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
                                        "<|code_middle|>", "<|middle|>", NULL};
static const char *const k_fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const k_fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const k_fim_sep[] = {"<|file_sep|>", NULL};
static const char *const k_eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                          "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
                                          "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
                                          "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", NULL};
static const char *const k_force_user[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

/* llama.cpp's text-based special token detection: fills *id (if still unset) with
 * the first token (lowest id here) whose text is in `list`, forcing it CONTROL. */
static void detect_special(mn_tokenizer *t, int32_t *id, const char *const *list) {
    if (*id >= 0) return;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (text_in(t, i, list)) {
            *id = i;
            t->attr[i] |= A_CONTROL;
            return;
        }
    }
}

static int map_pre(mn_tokenizer *t, mn_gguf_str pre) {
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                         "midm-2.0", "lfm2", "dbrx", "smaug-bpe", NULL};
    static const char *const gpt2[] = {"gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en",
                                       "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo",
                                       "jais", "trillion", "granite-docling", NULL};
    static const char *const digits[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                                         "minerva-7b", NULL};
    if (pre.len == 0 || str_eq(pre, "default")) {
        t->pre = PRE_DEFAULT;
        return 0;
    }
    for (const char *const *p = llama3; *p; p++)
        if (str_eq(pre, *p)) {
            t->pre = PRE_LLAMA3;
            t->ignore_merges = 1;
            t->add_bos = 1;
            return 0;
        }
    for (const char *const *p = gpt2; *p; p++)
        if (str_eq(pre, *p)) {
            t->pre = PRE_GPT2;
            return 0;
        }
    for (const char *const *p = digits; *p; p++)
        if (str_eq(pre, *p)) {
            t->pre = PRE_DIGITS_GPT2;
            return 0;
        }
    return mn_error(MN_EUNSUPPORTED, "tokenizer: unsupported pre-tokenizer '%.*s'", (int)(pre.len > 64 ? 64 : pre.len),
                    pre.ptr);
}

int mn_tokenizer_from_gguf(const mn_gguf *g, mn_tokenizer **out) {
    if (!g || !out) return mn_error(MN_EINVAL, "mn_tokenizer_from_gguf: NULL argument");
    *out = NULL;
    byte_map_init();

    mn_gguf_str model;
    int rc = mn_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == MN_ENOTFOUND) return mn_error(MN_EFORMAT, "tokenizer: missing tokenizer.ggml.model");
    if (rc) return mn_error(MN_EFORMAT, "tokenizer: tokenizer.ggml.model is not a string");
    mn_vocab_kind kind;
    if (str_eq(model, "gpt2"))
        kind = MN_VOCAB_BPE;
    else if (str_eq(model, "llama"))
        kind = MN_VOCAB_SPM;
    else
        return mn_error(MN_EUNSUPPORTED, "tokenizer: unsupported tokenizer model '%.*s' (supported: gpt2, llama)",
                        (int)(model.len > 64 ? 64 : model.len), model.ptr);

    int64_t kv_tok, kv_sc, kv_tt, kv_merges = -1;
    uint64_t n_tok, n;
    const void *d_scores = NULL, *d_types = NULL, *dummy;
    if ((rc = get_array(g, "tokenizer.ggml.tokens", MN_GGUF_STRING, -1, 1, &kv_tok, &n_tok, &dummy))) return rc;
    if (n_tok == 0) return mn_error(MN_EFORMAT, "tokenizer: tokenizer.ggml.tokens is empty");
    if (n_tok > (1u << 24)) return mn_error(MN_EFORMAT, "tokenizer: %llu tokens is too many", (unsigned long long)n_tok);
    rc = get_array(g, "tokenizer.ggml.scores", MN_GGUF_FLOAT32, (int64_t)n_tok, 0, &kv_sc, &n, &d_scores);
    if (rc && rc != MN_ENOTFOUND) return rc;
    rc = get_array(g, "tokenizer.ggml.token_type", MN_GGUF_INT32, (int64_t)n_tok, 0, &kv_tt, &n, &d_types);
    if (rc && rc != MN_ENOTFOUND) return rc;
    uint64_t n_merges = 0;
    if (kind == MN_VOCAB_BPE &&
        (rc = get_array(g, "tokenizer.ggml.merges", MN_GGUF_STRING, -1, 1, &kv_merges, &n_merges, &dummy)))
        return rc;
    if (n_merges > (1u << 26)) return mn_error(MN_EFORMAT, "tokenizer: %llu merges is too many", (unsigned long long)n_merges);

    mn_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mn_error(MN_ENOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = (int32_t)n_tok;
    rc = MN_ENOMEM;
    t->text = calloc(n_tok, sizeof *t->text);
    t->piece = calloc(n_tok, sizeof *t->piece);
    t->score = calloc(n_tok, sizeof *t->score);
    t->attr = calloc(n_tok, 1);
    t->eog = calloc(n_tok, 1);
    t->sym_cap = (int32_t)n_tok + 16;
    t->key = malloc((size_t)t->sym_cap * sizeof *t->key);
    if (!t->text || !t->piece || !t->score || !t->attr || !t->eog || !t->key) goto oom;
    if (htab_grow(t, pow2_at_least(2 * n_tok + 2 * n_merges + 64))) goto oom;
    t->n_sym = t->n_vocab;
    for (int32_t i = 0; i < t->n_vocab; i++) t->key[i].len = UINT32_MAX;

    /* kind defaults (llama.cpp) */
    if (kind == MN_VOCAB_SPM) {
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = 1, t->add_space_prefix = 1;
    } else {
        t->bos = 11, t->eos = 11, t->unk = -1;
    }
    t->eot = t->eom = t->pad = -1;
    if (kind == MN_VOCAB_BPE) {
        mn_gguf_str pre = {"", 0};
        rc = mn_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        if (rc && rc != MN_ENOTFOUND) {
            rc = mn_error(MN_EFORMAT, "tokenizer: tokenizer.ggml.pre is not a string");
            goto fail;
        }
        if ((rc = map_pre(t, pre))) goto fail;
        size_t pl = pre.len < sizeof t->pre_name - 1 ? (size_t)pre.len : sizeof t->pre_name - 1;
        memcpy(t->pre_name, pre.ptr, pl);
    }
    if ((rc = read_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix))) goto fail;
    {
        mn_gguf_str ct;
        if (mn_gguf_get_str(g, "tokenizer.chat_template", &ct) == 0 && ct.ptr) {
            t->chat_template = malloc((size_t)ct.len + 1);
            if (!t->chat_template) goto oom;
            memcpy(t->chat_template, ct.ptr, (size_t)ct.len);
            t->chat_template[ct.len] = 0;
        }
    }

    /* tokens: text, score, type */
    for (int32_t i = 0; i < t->n_vocab; i++) {
        mn_gguf_str s = mn_gguf_arr_str(g, kv_tok, (uint64_t)i);
        char tmp[32];
        const char *p = s.ptr;
        size_t len = (size_t)s.len;
        if (len == 0 || !p) { /* llama.cpp renames empty tokens */
            len = (size_t)snprintf(tmp, sizeof tmp, "[EMPTY_%d]", (int)i);
            p = tmp;
        }
        if (len > UINT32_MAX / 2) {
            rc = mn_error(MN_EFORMAT, "tokenizer: token %d is too long", (int)i);
            goto fail;
        }
        uint32_t off = pool_add(t, p, len);
        if (off == UINT32_MAX) goto oom;
        t->text[i].off = off;
        t->text[i].len = (uint32_t)len;
        if (d_scores) memcpy(&t->score[i], (const char *)d_scores + 4 * (size_t)i, 4);
        int32_t ty = MN_TOKTYPE_NORMAL;
        if (d_types) memcpy(&ty, (const char *)d_types + 4 * (size_t)i, 4);
        switch (ty) {
        case MN_TOKTYPE_NORMAL: t->attr[i] = A_NORMAL; break;
        case MN_TOKTYPE_UNKNOWN: t->attr[i] = A_UNKNOWN; break;
        case MN_TOKTYPE_CONTROL: t->attr[i] = A_CONTROL; break;
        case MN_TOKTYPE_USER_DEFINED: t->attr[i] = A_USER_DEFINED; break;
        case MN_TOKTYPE_UNUSED: t->attr[i] = A_UNUSED; break;
        case MN_TOKTYPE_BYTE: t->attr[i] = A_BYTE; break;
        default: t->attr[i] = A_UNDEFINED; break;
        }
    }

    /* special ids and flags from metadata */
    {
        int32_t sep = -1, mask = -1, fim[6] = {-1, -1, -1, -1, -1, -1};
        static const char *const fim_keys[6] = {"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
                                                "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
                                                "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"};
        if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos)) ||
            (rc = read_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos)) ||
            (rc = read_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot)) ||
            (rc = read_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom)) ||
            (rc = read_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk)) ||
            (rc = read_id(g, "tokenizer.ggml.seperator_token_id", t->n_vocab, &sep)) ||
            (rc = read_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad)) ||
            (rc = read_id(g, "tokenizer.ggml.mask_token_id", t->n_vocab, &mask)) ||
            (rc = read_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) ||
            (rc = read_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos)))
            goto fail;
        for (int k = 0; k < 6; k++)
            if ((rc = read_id(g, fim_keys[k], t->n_vocab, &fim[k]))) goto fail;
        (void)sep, (void)mask;
        /* defaults that do not exist in a small vocabulary */
        if (t->bos >= t->n_vocab) t->bos = -1;
        if (t->eos >= t->n_vocab) t->eos = -1;
        if (t->unk >= t->n_vocab) t->unk = -1;

        /* llama.cpp's detection of end-of-turn / FIM tokens by text */
        detect_special(t, &t->eot, k_eot_texts);
        detect_special(t, &t->eom, k_eom_texts);
        static const char *const *const fim_lists[6] = {k_fim_pre, k_fim_suf, k_fim_mid,
                                                         k_fim_pad, k_fim_rep, k_fim_sep};
        for (int k = 0; k < 6; k++) detect_special(t, &fim[k], fim_lists[k]);

        /* end-of-generation set */
        for (int k = 3; k < 6; k++)
            if (fim[k] >= 0) t->eog[fim[k]] = 1;
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (text_in(t, i, k_eog_texts)) {
                t->eog[i] = 1;
                t->attr[i] |= A_CONTROL;
            }
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (text_in(t, i, k_force_user)) t->attr[i] = A_USER_DEFINED;
        if (t->eos >= 0) t->eog[t->eos] = 1;
        if (t->eot >= 0) t->eog[t->eot] = 1;
        if (t->eom >= 0) t->eog[t->eom] = 1;
        /* <|end|> is not end-of-generation next to <|return|>+<|call|> or <|calls|>+<|flush|> */
        int has_return = 0, has_call = 0, has_flush = 0;
        int32_t end_id = -1;
        for (int32_t i = 0; i < t->n_vocab; i++) {
            if (!t->eog[i]) continue;
            if (tok_text_is(t, i, "<|return|>")) has_return = 1;
            else if (tok_text_is(t, i, "<|call|>") || tok_text_is(t, i, "<|calls|>")) has_call = 1;
            else if (tok_text_is(t, i, "<|flush|>")) has_flush = 1;
            else if (tok_text_is(t, i, "<|end|>")) end_id = i;
        }
        if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
            t->eog[end_id] = 0;
            t->attr[end_id] = A_USER_DEFINED;
        }
    }

    /* pieces (decoded bytes) */
    uint32_t max_len = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->text[i].len > max_len) max_len = t->text[i].len;
    unsigned char *buf = malloc((size_t)max_len + 16);
    if (!buf) goto oom;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->pool + t->text[i].off;
        size_t len = t->text[i].len;
        uint8_t a = t->attr[i];
        const void *pc = NULL;
        size_t pn = 0;
        if (a & (A_CONTROL | A_UNKNOWN | A_USER_DEFINED)) {
            memcpy(buf, s, len); /* copy: pool_add may move the pool */
            pc = buf, pn = len;
        } else if (kind == MN_VOCAB_SPM && (a & A_NORMAL)) {
            size_t o = 0;
            for (size_t j = 0; j < len;) {
                if (j + 3 <= len && memcmp(s + j, "\xE2\x96\x81", 3) == 0) {
                    buf[o++] = ' ';
                    j += 3;
                } else {
                    buf[o++] = (unsigned char)s[j++];
                }
            }
            pc = buf, pn = o;
        } else if (kind == MN_VOCAB_SPM && (a & A_BYTE)) {
            unsigned v = 0;
            if (len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
                for (int j = 3; j < 5; j++) {
                    char c = s[j];
                    v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
                                            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                   : 0);
                }
            }
            buf[0] = (unsigned char)v;
            pc = buf, pn = 1;
        } else if (kind == MN_VOCAB_BPE && (a & A_NORMAL)) {
            long m = bytelevel_decode(s, len, buf);
            if (m < 0) { /* not byte-level text: show it as it is */
                memcpy(buf, s, len);
                m = (long)len;
            }
            pc = buf, pn = (size_t)m;
        }
        if (pn == 0) {
            t->piece[i].off = t->text[i].off; /* empty */
            t->piece[i].len = 0;
            continue;
        }
        uint32_t off = pool_add(t, pc, pn);
        if (off == UINT32_MAX) goto oom_buf;
        t->piece[i].off = off;
        t->piece[i].len = (uint32_t)pn;
    }

    /* lookup keys */
    if (kind == MN_VOCAB_SPM) {
        for (int32_t i = 0; i < t->n_vocab; i++) {
            uint32_t off = t->text[i].off, len = t->text[i].len;
            t->key[i].off = off;
            t->key[i].len = len;
            uint32_t h = (uint32_t)hash_bytes(t->pool + off, len) & t->hmask;
            for (;;) {
                int32_t cur = t->htab[h];
                if (cur < 0) {
                    t->htab[h] = i;
                    break;
                }
                if (t->key[cur].len == len && memcmp(t->pool + t->key[cur].off, t->pool + off, len) == 0) {
                    t->htab[h] = i; /* last duplicate wins */
                    break;
                }
                h = (h + 1) & t->hmask;
            }
        }
        static const char hex[] = "0123456789ABCDEF";
        for (int b = 0; b < 256; b++) {
            char nm[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
            int32_t id = sym_lookup(t, nm, 6);
            if (id < 0) {
                char one = (char)b;
                id = sym_lookup(t, &one, 1);
            }
            t->byte_tok[b] = id;
        }
        t->spm_split = 1;
        for (int32_t i = 0; i < t->n_vocab && t->spm_split; i++) {
            const char *x = t->pool + t->text[i].off;
            size_t len = t->text[i].len;
            for (size_t j = 1; j + 3 <= len; j++)
                if (memcmp(x + j, "\xE2\x96\x81", 3) == 0 && (j < 3 || memcmp(x + j - 3, "\xE2\x96\x81", 3) != 0)) {
                    t->spm_split = 0;
                    break;
                }
        }
    } else {
        for (int32_t i = 0; i < t->n_vocab; i++) {
            long m = bytelevel_decode(t->pool + t->text[i].off, t->text[i].len, buf);
            if (m < 0) continue; /* never equal to a byte-level word */
            if ((rc = sym_set_key(t, i, buf, (size_t)m, 1))) goto fail_buf;
        }
        /* merges */
        t->mmask = pow2_at_least(n_merges * 2 + 16) - 1;
        t->mkey = malloc(((size_t)t->mmask + 1) * sizeof *t->mkey);
        t->mrank = malloc(((size_t)t->mmask + 1) * sizeof *t->mrank);
        t->mres = malloc(((size_t)t->mmask + 1) * sizeof *t->mres);
        if (!t->mkey || !t->mrank || !t->mres) goto oom_buf;
        for (uint32_t i = 0; i <= t->mmask; i++) t->mrank[i] = -1;
        for (uint64_t i = 0; i < n_merges; i++) {
            mn_gguf_str s = mn_gguf_arr_str(g, kv_merges, i);
            if (!s.ptr || s.len < 3) continue;
            /* split at the first space after position 0 (llama.cpp: find(' ', 1)) */
            const char *sp = memchr(s.ptr + 1, ' ', (size_t)s.len - 1);
            if (!sp) continue;
            size_t la = (size_t)(sp - s.ptr), lb = (size_t)s.len - la - 1;
            if (la + lb > max_len) continue; /* the result would be longer than any token */
            unsigned char ab[2 * 512];
            unsigned char *m2 = la + lb <= 512 ? ab : malloc(2 * (la + lb));
            if (!m2) goto oom_buf;
            long ma = bytelevel_decode(s.ptr, la, m2);
            long mb = ma > 0 ? bytelevel_decode(sp + 1, lb, m2 + ma) : -1;
            int32_t a = -1, b = -1, r = -1;
            if (ma > 0 && mb > 0) { /* else it can never match a byte-level symbol pair */
                a = sym_intern(t, m2, (size_t)ma);
                if (a >= 0) b = sym_intern(t, m2 + ma, (size_t)mb);
                if (b >= 0) r = sym_intern(t, m2, (size_t)(ma + mb));
                if (r < 0) {
                    if (m2 != ab) free(m2);
                    goto oom_buf;
                }
                merge_insert(t, a, b, (int32_t)i, r);
            }
            if (m2 != ab) free(m2);
        }
        for (int b = 0; b < 256; b++) {
            unsigned char c = (unsigned char)b;
            t->byte_sym[b] = sym_lookup(t, &c, 1);
        }
    }
    free(buf);
    buf = NULL;

    /* special tokens in partition order */
    {
        int32_t cnt = 0;
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (t->attr[i] & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN)) cnt++;
        t->special = malloc((size_t)(cnt ? cnt : 1) * sizeof *t->special);
        if (!t->special) goto oom;
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (t->attr[i] & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN)) t->special[t->n_special++] = i;
        qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    }

    if ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)) {
        rc = mn_error(MN_EFORMAT, "tokenizer: the vocabulary asks for a %s token it does not have",
                      t->add_bos && t->bos < 0 ? "BOS" : "EOS");
        goto fail;
    }
    *out = t;
    return 0;
oom_buf:
    free(buf);
oom:
    rc = mn_error(MN_ENOMEM, "tokenizer: out of memory");
fail:
    mn_tokenizer_free(t);
    return rc;
fail_buf:
    free(buf);
    mn_tokenizer_free(t);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* accessors                                                                */
/* ------------------------------------------------------------------------ */

int32_t mn_tokenizer_n_vocab(const mn_tokenizer *t) { return t ? t->n_vocab : 0; }
mn_vocab_kind mn_tokenizer_kind(const mn_tokenizer *t) { return t->kind; }
const char *mn_tokenizer_pre(const mn_tokenizer *t) { return t->pre_name; }
int32_t mn_token_bos(const mn_tokenizer *t) { return t->bos; }
int32_t mn_token_eos(const mn_tokenizer *t) { return t->eos; }
int32_t mn_token_eot(const mn_tokenizer *t) { return t->eot; }
int32_t mn_token_unk(const mn_tokenizer *t) { return t->unk; }
int32_t mn_token_pad(const mn_tokenizer *t) { return t->pad; }
int mn_tokenizer_adds_bos(const mn_tokenizer *t) { return t->add_bos; }
int mn_tokenizer_adds_eos(const mn_tokenizer *t) { return t->add_eos; }
int mn_tokenizer_adds_space_prefix(const mn_tokenizer *t) { return t->kind == MN_VOCAB_SPM && t->add_space_prefix; }
const char *mn_tokenizer_chat_template(const mn_tokenizer *t) { return t ? t->chat_template : NULL; }

static int valid_id(const mn_tokenizer *t, int32_t id) { return t && id >= 0 && id < t->n_vocab; }

int mn_token_is_eog(const mn_tokenizer *t, int32_t id) { return valid_id(t, id) && t->eog[id]; }

mn_token_type_t mn_token_type(const mn_tokenizer *t, int32_t id) {
    if (!valid_id(t, id)) return MN_TOKTYPE_UNDEFINED;
    uint8_t a = t->attr[id];
    if (a & A_UNKNOWN) return MN_TOKTYPE_UNKNOWN;
    if (a & A_CONTROL) return MN_TOKTYPE_CONTROL;
    if (a & A_USER_DEFINED) return MN_TOKTYPE_USER_DEFINED;
    if (a & A_BYTE) return MN_TOKTYPE_BYTE;
    if (a & A_UNUSED) return MN_TOKTYPE_UNUSED;
    if (a & A_NORMAL) return MN_TOKTYPE_NORMAL;
    return MN_TOKTYPE_UNDEFINED;
}

int mn_token_is_special(const mn_tokenizer *t, int32_t id) {
    return valid_id(t, id) && (t->attr[id] & (A_CONTROL | A_UNKNOWN));
}

const char *mn_token_text(const mn_tokenizer *t, int32_t id, size_t *len) {
    if (!valid_id(t, id)) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->text[id].len;
    return t->pool + t->text[id].off;
}

const char *mn_token_piece(const mn_tokenizer *t, int32_t id, int special, size_t *len) {
    if (!valid_id(t, id) || (!special && (t->attr[id] & (A_CONTROL | A_UNKNOWN)))) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->piece[id].len;
    return t->pool + t->piece[id].off;
}

int32_t mn_token_find(const mn_tokenizer *t, const char *text, size_t len) {
    if (!t || (!text && len)) return MN_TOKEN_NONE;
    int32_t found = MN_TOKEN_NONE;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->text[i].len == len && memcmp(t->pool + t->text[i].off, text, len) == 0) found = i; /* last wins */
    return found;
}

/* ------------------------------------------------------------------------ */
/* per-call scratch                                                         */
/* ------------------------------------------------------------------------ */

typedef struct {
    int32_t *v;
    int64_t n, cap;
} ivec;

static int ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *p = realloc(a->v, (size_t)cap * sizeof *p);
        if (!p) return MN_ENOMEM;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

typedef struct {
    int32_t tok; /* >= 0: special token; -1: raw text */
    size_t off, len;
} frag;

typedef struct {
    frag *v;
    size_t n, cap;
} fvec;

static int fvec_push(fvec *a, int32_t tok, size_t off, size_t len) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        frag *p = realloc(a->v, cap * sizeof *p);
        if (!p) return MN_ENOMEM;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n].tok = tok;
    a->v[a->n].off = off;
    a->v[a->n].len = len;
    a->n++;
    return 0;
}

/* merge candidate for both BPE (rank, smaller first) and SPM (score, larger first) */
typedef struct {
    float score; /* SPM */
    int32_t rank; /* BPE */
    int32_t left, right;
    uint32_t llen, rlen;
} cand;

typedef struct {
    int32_t prev, next;
    uint32_t off, len; /* len 0: merged away */
    int32_t sym;       /* BPE symbol id */
} symb;

typedef struct {
    /* words / symbols */
    symb *sy;
    size_t sy_cap;
    cand *hp;
    size_t hp_n, hp_cap;
    int spm; /* heap order */
    /* code points of the current fragment */
    uint32_t *cp;
    uint8_t *cl;
    uint32_t *offs_a, *offs_b; /* segment lengths in code points */
    size_t cp_cap;
    unsigned char *bytes; /* scratch for a word / an SPM fragment */
    size_t bytes_cap;
} scratch;

static void scratch_free(scratch *s) {
    free(s->sy);
    free(s->hp);
    free(s->cp);
    free(s->cl);
    free(s->offs_a);
    free(s->offs_b);
    free(s->bytes);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return MN_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* heap: a before b? */
static int cand_less(const scratch *s, const cand *a, const cand *b) {
    if (s->spm) {
        if (a->score != b->score) return a->score > b->score;
    } else {
        if (a->rank != b->rank) return a->rank < b->rank;
    }
    return a->left < b->left;
}

static int heap_push(scratch *s, cand c) {
    if (grow((void **)&s->hp, &s->hp_cap, s->hp_n + 1, sizeof *s->hp)) return MN_ENOMEM;
    size_t i = s->hp_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(s, &c, &s->hp[p])) break;
        s->hp[i] = s->hp[p];
        i = p;
    }
    s->hp[i] = c;
    return 0;
}

static cand heap_pop(scratch *s) {
    cand top = s->hp[0];
    cand last = s->hp[--s->hp_n];
    size_t i = 0, n = s->hp_n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = l;
        if (l + 1 < n && cand_less(s, &s->hp[l + 1], &s->hp[l])) m = l + 1;
        if (!cand_less(s, &s->hp[m], &last)) break;
        s->hp[i] = s->hp[m];
        i = m;
    }
    if (n) s->hp[i] = last;
    return top;
}

/* ------------------------------------------------------------------------ */
/* BPE                                                                      */
/* ------------------------------------------------------------------------ */

static int bpe_try_pair(const mn_tokenizer *t, scratch *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t res;
    int32_t rank = merge_find(t, s->sy[l].sym, s->sy[r].sym, &res);
    if (rank < 0) return 0;
    cand c = {0.0f, rank, l, r, s->sy[l].len, s->sy[r].len};
    return heap_push(s, c);
}

/* Tokenizes one pre-tokenized word w[0..n) (raw bytes). */
static int bpe_word(const mn_tokenizer *t, scratch *s, const unsigned char *w, size_t n, ivec *out) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int32_t id = sym_lookup(t, w, n);
        if (id >= 0 && id < t->n_vocab) return ivec_push(out, id);
    }
    if (grow((void **)&s->sy, &s->sy_cap, n, sizeof *s->sy)) return MN_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        s->sy[i].prev = (int32_t)i - 1;
        s->sy[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s->sy[i].off = (uint32_t)i;
        s->sy[i].len = 1;
        s->sy[i].sym = t->byte_sym[w[i]];
    }
    s->hp_n = 0;
    s->spm = 0;
    for (size_t i = 1; i < n; i++)
        if (bpe_try_pair(t, s, (int32_t)i - 1, (int32_t)i)) return MN_ENOMEM;
    while (s->hp_n) {
        cand c = heap_pop(s);
        symb *L = &s->sy[c.left], *R = &s->sy[c.right];
        if (L->len == 0 || R->len == 0 || L->len != c.llen || R->len != c.rlen) continue; /* stale */
        int32_t res;
        merge_find(t, L->sym, R->sym, &res);
        L->len += R->len;
        L->sym = res;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) s->sy[R->next].prev = c.left;
        if (bpe_try_pair(t, s, L->prev, c.left) || bpe_try_pair(t, s, c.left, L->next)) return MN_ENOMEM;
    }
    for (int32_t i = 0; i >= 0; i = s->sy[i].next) {
        const symb *y = &s->sy[i];
        if (y->sym >= 0 && y->sym < t->n_vocab) {
            if (ivec_push(out, y->sym)) return MN_ENOMEM;
            continue;
        }
        /* not a token: llama.cpp looks up each byte of the byte-level text on its
         * own, which only finds the printable ASCII characters */
        for (uint32_t j = 0; j < y->len; j++) {
            unsigned char c = w[y->off + j];
            if (c < 0x21 || c > 0x7E) continue;
            int32_t id = t->byte_sym[c];
            if (id >= 0 && id < t->n_vocab && ivec_push(out, id)) return MN_ENOMEM;
        }
    }
    return 0;
}

/* --- pre-tokenizers: each maps segment lengths (in code points) to finer ones --- */

typedef struct {
    const uint32_t *cp;
    const uint8_t *cl;
    uint32_t *out;
    size_t n_out;
} splitter;

static inline void emit_len(splitter *sp, size_t len) {
    if (len) sp->out[sp->n_out++] = (uint32_t)len;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(splitter *sp, size_t a, size_t b) {
    const uint32_t *cp = sp->cp;
    const uint8_t *cl = sp->cl;
#define CL(i) ((i) < b ? cl[i] : 0)
#define CP(i) ((i) < b ? cp[i] : 0xFFFFFFFFu)
    size_t pos = a;
    while (pos < b) {
        size_t start = pos;
        uint32_t c = cp[pos];
        uint8_t f = cl[pos];
        if (c == '\'' && pos + 1 < b) {
            uint32_t n1 = cp[pos + 1];
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                emit_len(sp, 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < b) {
                uint32_t n2 = cp[pos + 2];
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    emit_len(sp, 3);
                    pos += 3;
                    continue;
                }
            }
        }
        uint8_t f2 = c == ' ' ? CL(pos + 1) : f;
        if (f2 & F_L) {
            pos += c == ' ';
            while (CL(pos) & F_L) pos++;
        } else if (f2 & F_N) {
            pos += c == ' ';
            while (CL(pos) & F_N) pos++;
        } else if (!(f2 & (F_S | F_L | F_N)) && (f2 & F_IN)) {
            pos += c == ' ';
            for (;;) {
                uint8_t g = CL(pos);
                if ((g & (F_S | F_L | F_N)) || !(g & F_IN)) break;
                pos++;
            }
        } else {
            size_t nws = 0;
            while (CL(pos + nws) & F_S) nws++;
            if (nws > 1 && pos + nws < b)
                pos += nws - 1; /* \s+(?!\S) */
            else if (nws > 0)
                pos += nws; /* \s+ */
            else
                pos++;
        }
        emit_len(sp, pos - start);
    }
}

static uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(splitter *sp, size_t a, size_t b) {
    const uint32_t *cp = sp->cp;
    const uint8_t *cl = sp->cl;
    size_t pos = a;
    while (pos < b) {
        size_t start = pos;
        uint32_t c = cp[pos];
        uint8_t f = cl[pos];
        if (c == '\'' && pos + 1 < b) {
            uint32_t n1 = ascii_lower(cp[pos + 1]);
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                emit_len(sp, 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < b) {
                uint32_t n2 = ascii_lower(cp[pos + 2]);
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    emit_len(sp, 3);
                    pos += 3;
                    continue;
                }
            }
        }
        if (!(c == '\r' || c == '\n' || (f & F_N)) && ((f & F_L) || (CL(pos + 1) & F_L))) {
            pos++;
            while (CL(pos) & F_L) pos++;
            emit_len(sp, pos - start);
            continue;
        }
        if (f & F_N) {
            size_t ini = pos;
            while (CL(pos) & F_N) {
                if (++pos - ini >= 3) {
                    emit_len(sp, pos - ini);
                    ini = pos;
                }
            }
            emit_len(sp, pos - ini);
            continue;
        }
        uint8_t f2 = c == ' ' ? CL(pos + 1) : f;
        if (!(f2 & (F_S | F_L | F_N)) && (f & F_IN)) {
            pos += c == ' ';
            for (;;) {
                uint8_t g = CL(pos);
                if ((g & (F_S | F_L | F_N)) || !(g & F_IN)) break;
                pos++;
            }
            while (CP(pos) == '\r' || CP(pos) == '\n') pos++;
            emit_len(sp, pos - start);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (CL(pos + nws) & F_S) {
            uint32_t c2 = cp[pos + nws];
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0)
            pos = last_rn; /* \s*[\r\n]+ */
        else if (nws > 1 && pos + nws < b)
            pos += nws - 1; /* \s+(?!\S) */
        else if (nws > 0)
            pos += nws; /* \s+ */
        else
            pos++;
        emit_len(sp, pos - start);
    }
#undef CL
#undef CP
}

/* Splits around maximal runs (or single members when !runs) of code points
 * accepted by `member`, keeping the text between as segments too. */
static void split_members(splitter *sp, size_t a, size_t b, int (*member)(uint32_t, uint8_t), int runs) {
    size_t pos = a, last = a;
    while (pos < b) {
        if (!member(sp->cp[pos], sp->cl[pos])) {
            pos++;
            continue;
        }
        emit_len(sp, pos - last);
        size_t s = pos++;
        if (runs)
            while (pos < b && member(sp->cp[pos], sp->cl[pos])) pos++;
        emit_len(sp, pos - s);
        last = pos;
    }
    emit_len(sp, b - last);
}

static int is_number(uint32_t c, uint8_t f) {
    (void)c;
    return (f & F_N) != 0;
}

/* [\p{P}\$\+<=>\^~\|] */
static int is_punct_sym(uint32_t c, uint8_t f) {
    return (f & F_P) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' ||
           c == '|';
}

/* [0-9][0-9][0-9]: leftmost non-overlapping groups of three ASCII digits */
static void split_digit3(splitter *sp, size_t a, size_t b) {
    size_t pos = a, last = a;
    while (pos + 3 <= b) {
        const uint32_t *c = sp->cp + pos;
        if (c[0] - '0' < 10 && c[1] - '0' < 10 && c[2] - '0' < 10) {
            emit_len(sp, pos - last);
            emit_len(sp, 3);
            pos += 3;
            last = pos;
        } else {
            pos++;
        }
    }
    emit_len(sp, b - last);
}

enum { ST_GPT2, ST_LLAMA3, ST_NUM1, ST_NUMRUN, ST_PUNCT, ST_DIGIT3 };

/* Runs one pre-tokenizer stage over all segments in `in` (n_in lengths). */
static size_t run_stage(int stage, const uint32_t *cp, const uint8_t *cl, const uint32_t *in, size_t n_in,
                        uint32_t *out) {
    splitter sp = {cp, cl, out, 0};
    size_t a = 0;
    for (size_t i = 0; i < n_in; i++) {
        size_t b = a + in[i];
        switch (stage) {
        case ST_GPT2: split_gpt2(&sp, a, b); break;
        case ST_LLAMA3: split_llama3(&sp, a, b); break;
        case ST_NUM1: split_members(&sp, a, b, is_number, 0); break;
        case ST_NUMRUN: split_members(&sp, a, b, is_number, 1); break;
        case ST_PUNCT: split_members(&sp, a, b, is_punct_sym, 1); break;
        case ST_DIGIT3: split_digit3(&sp, a, b); break;
        }
        a = b;
    }
    return sp.n_out;
}

static int bpe_fragment(const mn_tokenizer *t, scratch *s, const unsigned char *text, size_t len, ivec *out) {
    /* decode */
    if (grow((void **)&s->cp, &s->cp_cap, len + 1, sizeof *s->cp)) return MN_ENOMEM;
    size_t cap = s->cp_cap;
    uint8_t *cl = realloc(s->cl, cap);
    if (!cl) return MN_ENOMEM;
    s->cl = cl;
    uint32_t *oa = realloc(s->offs_a, cap * sizeof *oa);
    if (!oa) return MN_ENOMEM;
    s->offs_a = oa;
    uint32_t *ob = realloc(s->offs_b, cap * sizeof *ob);
    if (!ob) return MN_ENOMEM;
    s->offs_b = ob;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t c = utf8_next(text + i, len - i, &adv);
        i += adv;
        s->cp[n] = c;
        s->cl[n] = ucd_class(c) | F_IN;
        n++;
    }
    if (n == 0) return 0;
    /* pre-tokenize */
    static const int stages_gpt2[] = {ST_GPT2};
    static const int stages_llama3[] = {ST_LLAMA3};
    static const int stages_digits[] = {ST_NUM1, ST_GPT2};
    static const int stages_default[] = {ST_PUNCT, ST_GPT2, ST_NUMRUN, ST_DIGIT3};
    const int *st;
    size_t nst;
    switch (t->pre) {
    case PRE_LLAMA3: st = stages_llama3, nst = 1; break;
    case PRE_DIGITS_GPT2: st = stages_digits, nst = 2; break;
    case PRE_DEFAULT: st = stages_default, nst = 4; break;
    default: st = stages_gpt2, nst = 1; break;
    }
    uint32_t *cur = s->offs_a, *nxt = s->offs_b;
    size_t ncur = 1;
    cur[0] = (uint32_t)n;
    for (size_t k = 0; k < nst; k++) {
        ncur = run_stage(st[k], s->cp, s->cl, cur, ncur, nxt);
        uint32_t *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    /* BPE per word: re-encode the word's code points (bad bytes became U+FFFD) */
    size_t a = 0;
    for (size_t i = 0; i < ncur; i++) {
        size_t b = a + cur[i];
        if (grow((void **)&s->bytes, &s->bytes_cap, 4 * (b - a), 1)) return MN_ENOMEM;
        size_t m = 0;
        for (size_t j = a; j < b; j++) m += utf8_put(s->cp[j], s->bytes + m);
        int rc = bpe_word(t, s, s->bytes, m, out);
        if (rc) return rc;
        a = b;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* SPM                                                                      */
/* ------------------------------------------------------------------------ */

static int spm_try_pair(const mn_tokenizer *t, scratch *s, const unsigned char *buf, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t id = sym_lookup(t, buf + s->sy[l].off, (size_t)s->sy[l].len + s->sy[r].len);
    if (id < 0) return 0;
    cand c = {t->score[id], 0, l, r, s->sy[l].len, s->sy[r].len};
    return heap_push(s, c);
}

static int spm_merge_emit(const mn_tokenizer *t, scratch *s, const unsigned char *buf, int32_t a, int32_t b,
                          ivec *out) {
    s->hp_n = 0;
    s->spm = 1;
    for (int32_t i = a + 1; i < b; i++)
        if (spm_try_pair(t, s, buf, i - 1, i)) return MN_ENOMEM;
    while (s->hp_n) {
        cand c = heap_pop(s);
        symb *L = &s->sy[c.left], *R = &s->sy[c.right];
        if (L->len == 0 || R->len == 0 || L->len != c.llen || R->len != c.rlen) continue;
        L->len += R->len;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) s->sy[R->next].prev = c.left;
        if (spm_try_pair(t, s, buf, L->prev, c.left) || spm_try_pair(t, s, buf, c.left, L->next)) return MN_ENOMEM;
    }
    for (int32_t i = a; i >= 0; i = s->sy[i].next) {
        const symb *y = &s->sy[i];
        int32_t id = sym_lookup(t, buf + y->off, y->len);
        if (id >= 0) {
            if (ivec_push(out, id)) return MN_ENOMEM;
            continue;
        }
        for (uint32_t j = 0; j < y->len; j++) {
            int32_t bt = t->byte_tok[buf[y->off + j]];
            if (bt < 0) bt = t->unk;
            if (bt >= 0 && ivec_push(out, bt)) return MN_ENOMEM;
        }
    }
    return 0;
}

/* SentencePiece merging over buf[0..n) (spaces already escaped as U+2581).
 * Symbols are UTF-8 characters by lead byte, exactly as llama.cpp splits them.
 * When no vocabulary entry has a U+2581 right after another character
 * (t->spm_split), nothing can merge across a "▁" symbol that follows a non-"▁",
 * so the text is merged in those independent pieces: same result, small heaps. */
static int spm_text(const mn_tokenizer *t, scratch *s, const unsigned char *buf, size_t n, ivec *out) {
    static const unsigned char lenof[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    if (n == 0) return 0;
    if (grow((void **)&s->sy, &s->sy_cap, n, sizeof *s->sy)) return MN_ENOMEM;
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = lenof[buf[i] >> 4];
        if (l > n - i) l = n - i;
        s->sy[ns].prev = ns - 1;
        s->sy[ns].next = i + l < n ? ns + 1 : -1;
        s->sy[ns].off = (uint32_t)i;
        s->sy[ns].len = (uint32_t)l;
        s->sy[ns].sym = -1;
        ns++;
        i += l;
    }
    int32_t a = 0;
    for (int32_t k = 1; k <= ns; k++) {
        int cut = k == ns;
        if (!cut && t->spm_split) {
            const symb *y = &s->sy[k];
            cut = y->len == 3 && memcmp(buf + y->off, "\xE2\x96\x81", 3) == 0 &&
                  (y->off < 3 || memcmp(buf + y->off - 3, "\xE2\x96\x81", 3) != 0);
        }
        if (!cut) continue;
        s->sy[k - 1].next = -1;
        if (k < ns) s->sy[k].prev = -1;
        int rc = spm_merge_emit(t, s, buf, a, k, out);
        if (rc) return rc;
        a = k;
    }
    return 0;
}

static int spm_fragment(const mn_tokenizer *t, scratch *s, const unsigned char *text, size_t len, int prefix,
                        ivec *out) {
    if (grow((void **)&s->bytes, &s->bytes_cap, 3 * len + 3, 1)) return MN_ENOMEM;
    unsigned char *b = s->bytes;
    size_t m = 0;
    if (prefix) {
        memcpy(b, "\xE2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(b + m, "\xE2\x96\x81", 3);
            m += 3;
        } else {
            b[m++] = text[i];
        }
    }
    return spm_text(t, s, b, m, out);
}

/* ------------------------------------------------------------------------ */
/* tokenize / detokenize                                                    */
/* ------------------------------------------------------------------------ */

static int partition(const mn_tokenizer *t, const char *text, size_t len, int parse_special, fvec *fr) {
    fvec tmp = {0};
    if (fvec_push(fr, -1, 0, len)) return MN_ENOMEM;
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (A_CONTROL | A_UNKNOWN))) continue;
        const char *st = t->pool + t->text[id].off;
        size_t sl = t->text[id].len;
        if (sl == 0 || sl > len || !memmem(text, len, st, sl)) continue;
        tmp.n = 0;
        for (size_t i = 0; i < fr->n; i++) {
            frag f = fr->v[i];
            if (f.tok >= 0) {
                if (fvec_push(&tmp, f.tok, 0, 0)) goto oom;
                continue;
            }
            size_t off = f.off, end = f.off + f.len;
            for (;;) {
                const char *p = end - off >= sl ? memmem(text + off, end - off, st, sl) : NULL;
                if (!p) {
                    if (end > off && fvec_push(&tmp, -1, off, end - off)) goto oom;
                    break;
                }
                size_t at = (size_t)(p - text);
                if (at > off && fvec_push(&tmp, -1, off, at - off)) goto oom;
                if (fvec_push(&tmp, id, 0, 0)) goto oom;
                off = at + sl;
            }
        }
        fvec sw = *fr;
        *fr = tmp;
        tmp = sw;
    }
    free(tmp.v);
    return 0;
oom:
    free(tmp.v);
    return MN_ENOMEM;
}

int mn_tokenize(const mn_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                int32_t *out, int64_t cap, int64_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || !n_out || (!text && len) || cap < 0 || (!out && cap > 0))
        return mn_error(MN_EINVAL, "mn_tokenize: bad argument");
    if (len > ((size_t)1 << 29)) return mn_error(MN_EINVAL, "mn_tokenize: text of %zu bytes is too long (max 512 MiB)", len);
    ivec ids = {0};
    fvec fr = {0};
    scratch s = {0};
    int rc = 0;
    if (add_special && t->add_bos && (rc = ivec_push(&ids, t->bos))) goto done;
    if (len > 0 && (rc = partition(t, text, len, parse_special, &fr))) goto done;
    int prev_special = 1;
    for (size_t i = 0; i < fr.n; i++) {
        const frag *f = &fr.v[i];
        if (f->tok >= 0) {
            rc = ivec_push(&ids, f->tok);
            prev_special = 1;
        } else if (t->kind == MN_VOCAB_SPM) {
            rc = spm_fragment(t, &s, (const unsigned char *)text + f->off, f->len, t->add_space_prefix && prev_special,
                              &ids);
            prev_special = 0;
        } else {
            rc = bpe_fragment(t, &s, (const unsigned char *)text + f->off, f->len, &ids);
        }
        if (rc) goto done;
    }
    if (add_special && t->add_eos && (rc = ivec_push(&ids, t->eos))) goto done;
    *n_out = ids.n;
    if (ids.n > cap) {
        rc = mn_error(MN_ERANGE, "mn_tokenize: %lld tokens do not fit in a buffer of %lld", (long long)ids.n,
                      (long long)cap);
    } else if (ids.n) {
        memcpy(out, ids.v, (size_t)ids.n * sizeof *out);
    }
done:
    if (rc == MN_ENOMEM) rc = mn_error(MN_ENOMEM, "mn_tokenize: out of memory");
    free(ids.v);
    free(fr.v);
    scratch_free(&s);
    return rc;
}

int mn_detokenize(const mn_tokenizer *t, const int32_t *ids, int64_t n, int flags, char *out, size_t cap,
                  size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || !n_out || n < 0 || (!ids && n) || (!out && cap)) return mn_error(MN_EINVAL, "mn_detokenize: bad argument");
    int strip = t->kind == MN_VOCAB_SPM && t->add_space_prefix && !(flags & MN_DETOK_KEEP_PREFIX_SPACE);
    int at_start = 1;
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (!valid_id(t, id)) return mn_error(MN_EINVAL, "mn_detokenize: token id %d out of range", (int)id);
        size_t pl;
        const char *p = mn_token_piece(t, id, flags & MN_DETOK_SPECIAL, &pl);
        int special = (t->attr[id] & (A_CONTROL | A_UNKNOWN | A_USER_DEFINED)) != 0;
        if (strip && at_start && !special && pl > 0 && p[0] == ' ') p++, pl--;
        if (total + pl < cap) memcpy(out + total, p, pl);
        total += pl;
        at_start = special;
    }
    *n_out = total;
    if (total + 1 > cap) {
        if (cap) out[cap - 1] = 0;
        return mn_error(MN_ERANGE, "mn_detokenize: %zu bytes do not fit in a buffer of %zu", total + 1, cap);
    }
    out[total] = 0;
    return 0;
}

int mn_tokenize_new(const mn_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                    int32_t **ids, int64_t *n) {
    *ids = NULL, *n = 0;
    int64_t cap = (int64_t)len + 16, got = 0;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory tokenizing %zu bytes", len);
    int rc = mn_tokenize(t, text, len, add_special, parse_special, buf, cap, &got);
    if (rc == MN_ERANGE && got > cap) { /* the count it needs */
        int32_t *nb = realloc(buf, sizeof(int32_t) * (size_t)got);
        if (!nb) {
            free(buf);
            return mn_error(MN_ENOMEM, "out of memory tokenizing %zu bytes", len);
        }
        buf = nb, cap = got;
        rc = mn_tokenize(t, text, len, add_special, parse_special, buf, cap, &got);
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *ids = buf, *n = got;
    return MN_OK;
}

