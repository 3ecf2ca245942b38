/* test_tokenizer.c - tokenizer parity with llama.cpp, round trips, special tokens,
 * invalid input, malformed vocabularies, chat templates and speed.
 *
 * Reference data (written by llama.cpp through scripts/make_fixtures.py):
 *   tests/fixtures/tokens_<vocab>.txt  ids for a varied text set, per vocabulary
 *   tests/fixtures/chat.txt            chat prompts rendered by jinja2
 * Vocabularies: the default model (models/) and llama.cpp's ggml-vocab-*.gguf in
 * .cache/vocab/ (make setup). Missing files are skipped with a note.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "model/chat.h"
#include "model/tokenizer.h"
#include "test.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* decodes hex s[0..n) into a malloc'd buffer (NUL-terminated); *len gets the byte count */
static char *unhex(const char *s, size_t n, size_t *len) {
    char *o = malloc(n / 2 + 1);
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) o[k++] = (char)(hexval(s[i]) * 16 + hexval(s[i + 1]));
    o[k] = 0;
    *len = k;
    return o;
}

/* splits line at tabs into up to max fields (in place); returns the count */
static int split_tabs(char *line, char **f, int max) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == '\t') {
            *p = 0;
            f[n++] = p + 1;
        }
    return n;
}

static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t l = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!l || i + l > n) return 0;
        uint32_t cp = l == 1 ? c : c & (0x7F >> l);
        for (size_t k = 1; k < l; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += l;
    }
    return 1;
}

static uint64_t fnv_ids(const int32_t *ids, int64_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xFF;
            h *= 0x100000001B3ull;
        }
    }
    return h;
}

/* tokenizes into a malloc'd array, growing on MN_ERANGE */
static int tokenize_all(const mn_tokenizer *t, const char *s, size_t n, int add, int parse, int32_t **ids,
                        int64_t *cnt) {
    int64_t cap = 8;
    *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int rc = mn_tokenize(t, s, n, add, parse, *ids, cap, cnt);
    if (rc == MN_ERANGE) {
        cap = *cnt;
        *ids = realloc(*ids, sizeof(int32_t) * (size_t)(cap ? cap : 1));
        rc = mn_tokenize(t, s, n, add, parse, *ids, cap, cnt);
    }
    return rc;
}

static int detok(const mn_tokenizer *t, const int32_t *ids, int64_t n, int flags, char **out, size_t *len) {
    size_t cap = 16;
    *out = malloc(cap);
    int rc = mn_detokenize(t, ids, n, flags, *out, cap, len);
    if (rc == MN_ERANGE) {
        cap = *len + 1;
        *out = realloc(*out, cap);
        rc = mn_detokenize(t, ids, n, flags, *out, cap, len);
    }
    return rc;
}

/* GGUF bytes with the tokenizer.ggml.pre string value replaced by `pre` (malloc'd);
 * the same patch as patch_pre() in scripts/make_fixtures.py. */
static char *patch_pre(const char *data, size_t n, const char *pre, size_t *out_n) {
    static const char key[] = "tokenizer.ggml.pre";
    const size_t kl = sizeof key - 1;
    for (size_t i = 8; i + kl + 4 + 8 <= n; i++) {
        uint64_t len;
        uint32_t type;
        memcpy(&len, data + i - 8, 8);
        if (len != kl || memcmp(data + i, key, kl)) continue;
        memcpy(&type, data + i + kl, 4);
        if (type != 8) continue;
        size_t at = i + kl + 4;
        uint64_t old;
        memcpy(&old, data + at, 8);
        if (old > n - at - 8) return NULL;
        uint64_t pl = strlen(pre);
        *out_n = n - (size_t)old + (size_t)pl;
        char *o = malloc(*out_n);
        memcpy(o, data, at);
        memcpy(o + at, &pl, 8);
        memcpy(o + at + 8, pre, (size_t)pl);
        memcpy(o + at + 8 + pl, data + at + 8 + old, n - at - 8 - (size_t)old);
        return o;
    }
    return NULL;
}

/* loads path (optionally with its pre-tokenizer name replaced; *mem then owns the bytes) */
static mn_tokenizer *load_vocab_patched(const char *path, const char *pre, mn_gguf **g, char **mem) {
    *g = NULL;
    *mem = NULL;
    if (!path) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    mn_tokenizer *t = NULL;
    int rc;
    if (pre) {
        size_t n = 0, pn = 0;
        char *raw = test_slurp(path, &n);
        *mem = raw ? patch_pre(raw, n, pre, &pn) : NULL;
        free(raw);
        CHECK(*mem != NULL, "patching tokenizer.ggml.pre of %s", path);
        if (!*mem) return NULL;
        rc = mn_gguf_open_memory(*mem, pn, g);
    } else {
        rc = mn_gguf_open(path, g);
    }
    CHECK(rc == 0, "open %s: %s", path, mn_last_error());
    if (rc) return NULL;
    rc = mn_tokenizer_from_gguf(*g, &t);
    CHECK(rc == 0, "tokenizer from %s: %s", path, mn_last_error());
    return rc ? NULL : t;
}

static mn_tokenizer *load_vocab(const char *path, mn_gguf **g) {
    char *mem;
    return load_vocab_patched(path, NULL, g, &mem);
}

/* ---------------------------------------------------------------------- */

static void test_fixture_file(const char *fixture) {
    char *data = test_slurp(fixture, NULL);
    if (!data) {
        CHECK(0, "%s missing (it is part of the repository; make fixtures rebuilds it)", fixture);
        return;
    }
    mn_gguf *g = NULL;
    mn_tokenizer *t = NULL;
    char *mem = NULL;
    const char *vocab = NULL, *pre = NULL;
    int n_cases = 0, n_bad = 0, n_rt = 0;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] == '#' || !line[0]) continue;
        char *f[5];
        int nf = split_tabs(line, f, 5);
        if (!strcmp(f[0], "vocab") && nf >= 2) {
            vocab = f[1];
            continue;
        }
        if (!strcmp(f[0], "patch_pre") && nf >= 2) {
            pre = f[1];
            continue;
        }
        if (!t && vocab) {
            const char *path = strstr(vocab, "SmolLM2") ? test_model_path() : vocab;
            t = load_vocab_patched(path, pre, &g, &mem);
            if (!t) {
                CHECK(0, "%s: vocabulary %s not present (make setup fetches it)", fixture, vocab);
                break;
            }
            if (pre) CHECK(!strcmp(mn_tokenizer_pre(t), pre), "patched pre '%s'", mn_tokenizer_pre(t));
        }
        if (!t) {
            continue;
        } else if (!strcmp(f[0], "meta") && nf >= 2) {
            int nv = -1, bos = -2, eos = -2, add_bos = -1;
            sscanf(f[1], "n_vocab=%d bos=%d eos=%d add_bos=%d", &nv, &bos, &eos, &add_bos);
            CHECK(nv == mn_tokenizer_n_vocab(t), "%s: n_vocab %d vs %d", fixture, nv, mn_tokenizer_n_vocab(t));
            CHECK(bos == mn_token_bos(t), "%s: bos %d vs %d", fixture, bos, mn_token_bos(t));
            CHECK(eos == mn_token_eos(t), "%s: eos %d vs %d", fixture, eos, mn_token_eos(t));
            CHECK(add_bos == mn_tokenizer_adds_bos(t), "%s: add_bos", fixture);
        } else if (!strcmp(f[0], "eog") && nf >= 2) {
            int n_ref = 0, ok = 1;
            for (char *p = f[1]; *p;) {
                char *e;
                long id = strtol(p, &e, 10);
                if (e == p) break;
                n_ref++;
                if (!mn_token_is_eog(t, (int32_t)id)) ok = 0;
                p = e;
            }
            int n_mine = 0;
            for (int32_t i = 0; i < mn_tokenizer_n_vocab(t); i++) n_mine += mn_token_is_eog(t, i);
            CHECK(ok && n_ref == n_mine, "%s: end-of-generation set differs (%d ids in llama.cpp, %d here)", fixture,
                  n_ref, n_mine);
        } else if (!strcmp(f[0], "book") && nf >= 4) {
            size_t blen;
            char *book = test_slurp(f[1], &blen);
            if (!book) {
                CHECK(0, "%s: book %s not present (it is part of the repository)", fixture, f[1]);
                continue;
            }
            int32_t *ids;
            int64_t n;
            double t0 = now_s();
            int rc = tokenize_all(t, book, blen, 0, 0, &ids, &n);
            double dt = now_s() - t0;
            CHECK(rc == 0, "%s: book: %s", fixture, mn_last_error());
            char hex[32];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fnv_ids(ids, n));
            CHECK(n == atoll(f[2]) && !strcmp(hex, f[3]), "%s: whole book: %lld tokens hash %s, llama.cpp %s tokens hash %s",
                  fixture, (long long)n, hex, f[2], f[3]);
            printf("  %s: book %zu bytes -> %lld tokens in %.1f ms (%.2f MB/s)\n", fixture, blen, (long long)n, dt * 1e3,
                   blen / dt / 1e6);
            /* the rate is reported, not asserted: speed belongs to bench/, and a
             * loaded CI machine must not fail a correctness test */
            /* round trip of the whole book */
            char *back;
            size_t bl;
            rc = detok(t, ids, n, 0, &back, &bl);
            CHECK(rc == 0 && bl == blen && !memcmp(back, book, blen), "%s: book round trip", fixture);
            free(back);
            free(ids);
            free(book);
        } else if (!strcmp(f[0], "case") && nf >= 3) {
            int add = f[1][0] == '1', parse = f[1][1] == '1';
            size_t len;
            char *text = unhex(f[2], strlen(f[2]), &len);
            int32_t ref[8192];
            int64_t n_ref = 0;
            if (nf >= 4)
                for (char *p = f[3]; *p && n_ref < 8192;) {
                    char *e;
                    long id = strtol(p, &e, 10);
                    if (e == p) break;
                    ref[n_ref++] = (int32_t)id;
                    p = e;
                }
            int32_t *ids;
            int64_t n;
            int rc = tokenize_all(t, text, len, add, parse, &ids, &n);
            int same = rc == 0 && n == n_ref && (n == 0 || !memcmp(ids, ref, sizeof(int32_t) * (size_t)n));
            n_cases++;
            if (!same) {
                n_bad++;
                if (n_bad <= 5) {
                    fprintf(stderr, "  %s: flags %s text \"%.60s\"%s\n    llama.cpp:", fixture, f[1], text,
                            len > 60 ? "..." : "");
                    for (int64_t i = 0; i < n_ref && i < 40; i++) fprintf(stderr, " %d", ref[i]);
                    fprintf(stderr, "\n    mnemo:    ");
                    for (int64_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
                    fprintf(stderr, "\n");
                }
            }
            /* decode(encode(x)) == x for valid UTF-8 (SPM: without U+2581, which it reads as a space) */
            if (!add && utf8_valid((const unsigned char *)text, len) &&
                !(mn_tokenizer_kind(t) == MN_VOCAB_SPM && strstr(text, "\xE2\x96\x81"))) {
                char *back;
                size_t bl;
                rc = detok(t, ids, n, parse ? MN_DETOK_SPECIAL : 0, &back, &bl);
                int ok = rc == 0 && bl == len && !memcmp(back, text, len);
                CHECK(ok, "%s: round trip (parse_special=%d) of \"%.60s\" gave \"%.60s\"", fixture, parse, text,
                      back);
                n_rt += ok;
                free(back);
            }
            free(ids);
            free(text);
        }
    }
    CHECK(n_bad == 0, "%s: %d of %d cases differ from llama.cpp", fixture, n_bad, n_cases);
    if (t) printf("  %s: %d cases match llama.cpp, %d round trips\n", fixture, n_cases - n_bad, n_rt);
    mn_tokenizer_free(t);
    mn_gguf_free(g);
    free(mem);
    free(data);
}

/* llama.cpp's own tokenizer test files (ggml-vocab-*.gguf.inp/.out) */
static void test_llamacpp_inp(const char *vocab) {
    char path[256], pin[300], pout[300];
    snprintf(path, sizeof path, ".cache/vocab/ggml-vocab-%s.gguf", vocab);
    snprintf(pin, sizeof pin, "%s.inp", path);
    snprintf(pout, sizeof pout, "%s.out", path);
    char *inp = test_slurp(pin, NULL), *outp = test_slurp(pout, NULL);
    mn_gguf *g = NULL;
    mn_tokenizer *t = inp && outp ? load_vocab(path, &g) : NULL;
    if (!t) {
        CHECK(0, "%s(.inp/.out) not present (make setup fetches them)", path);
        free(inp);
        free(outp);
        return;
    }
    const char *sep = "\n__ggml_vocab_test__\n";
    int ok = 0, bad = 0;
    char *s = inp, *o = outp;
    while (s && *s) {
        char *e = strstr(s, sep);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char *ol = o, *oe = strchr(o, '\n');
        if (oe) *oe = 0;
        o = oe ? oe + 1 : o + strlen(o);
        int32_t *ids;
        int64_t n;
        int rc = tokenize_all(t, s, len, 0, 0, &ids, &n);
        char got[8192];
        size_t gp = 0;
        got[0] = 0;
        for (int64_t i = 0; i < n && gp < sizeof got - 16; i++) gp += (size_t)snprintf(got + gp, sizeof got - gp, " %d", ids[i]);
        if (rc || strcmp(got, ol)) {
            bad++;
            fprintf(stderr, "  %s: \"%.*s\"\n    want:%s\n    got: %s\n", vocab, (int)(len > 60 ? 60 : len), s, ol, got);
        } else {
            ok++;
        }
        free(ids);
        s = e ? e + strlen(sep) : NULL;
    }
    CHECK(bad == 0 && ok > 0, "llama.cpp test file %s: %d ok, %d differ", pin, ok, bad);
    mn_tokenizer_free(t);
    mn_gguf_free(g);
    free(inp);
    free(outp);
}

static void test_default_model(void) {
    const char *path = test_model_path();
    mn_gguf *g;
    mn_tokenizer *t = load_vocab(path, &g);
    if (!t) {
        CHECK(0, "the default model is missing (make model fetches it)");
        return;
    }
    CHECK(mn_tokenizer_kind(t) == MN_VOCAB_BPE, "kind");
    CHECK(!strcmp(mn_tokenizer_pre(t), "smollm"), "pre '%s'", mn_tokenizer_pre(t));
    int32_t im_start = mn_token_find(t, "<|im_start|>", 12), im_end = mn_token_find(t, "<|im_end|>", 10);
    CHECK(im_start == 1 && im_end == 2, "im_start %d im_end %d", im_start, im_end);
    CHECK(mn_token_is_eog(t, im_end) && mn_token_is_eog(t, 0) && !mn_token_is_eog(t, im_start), "eog flags");
    CHECK(mn_token_is_special(t, im_start) && mn_token_type(t, im_start) == MN_TOKTYPE_CONTROL, "control");
    CHECK(!mn_token_is_eog(t, -1) && !mn_token_is_eog(t, 1 << 30), "eog out of range");

    /* special tokens are matched whole only when asked, and never appear otherwise */
    const char *s = "<|im_start|>user\nhi<|im_end|>\n";
    int32_t ids[64];
    int64_t n;
    CHECK(mn_tokenize(t, s, strlen(s), 0, 1, ids, 64, &n) == 0, "tokenize");
    CHECK(n == 6 && ids[0] == im_start && ids[4] == im_end, "specials parsed: n=%lld", (long long)n);
    CHECK(mn_tokenize(t, s, strlen(s), 0, 0, ids, 64, &n) == 0, "tokenize");
    int any_special = 0;
    for (int64_t i = 0; i < n; i++) any_special |= mn_token_is_special(t, ids[i]);
    CHECK(!any_special && n > 5, "specials not parsed: n=%lld", (long long)n);
    /* longest match first: a text holding a special token's text inside a longer one */
    const char *s2 = "<|im_start|><|im_start|>x<|im_end|>";
    CHECK(mn_tokenize(t, s2, strlen(s2), 0, 1, ids, 64, &n) == 0 && n == 4 && ids[0] == im_start &&
              ids[1] == im_start && ids[3] == im_end,
          "adjacent specials");

    /* buffer too small */
    int64_t need = -1;
    CHECK(mn_tokenize(t, "Hello world", 11, 0, 0, ids, 1, &need) == MN_ERANGE && need == 2, "ERANGE need %lld",
          (long long)need);
    CHECK(mn_tokenize(t, "Hello world", 11, 0, 0, NULL, 0, &need) == MN_ERANGE && need == 2, "size query");
    CHECK(mn_tokenize(t, NULL, 0, 0, 0, NULL, 0, &need) == 0 && need == 0, "empty");
    CHECK(mn_tokenize(t, NULL, 5, 0, 0, ids, 64, &need) == MN_EINVAL, "NULL text");

    /* pieces for streaming and detokenize flags */
    size_t pl;
    const char *p = mn_token_piece(t, im_start, 0, &pl);
    CHECK(pl == 0, "control piece hidden");
    p = mn_token_piece(t, im_start, 1, &pl);
    CHECK(pl == 12 && !memcmp(p, "<|im_start|>", 12), "control piece shown");
    int32_t hello[2];
    CHECK(mn_tokenize(t, " Hello", 6, 0, 0, hello, 2, &n) == 0 && n == 1, "one token");
    p = mn_token_piece(t, hello[0], 0, &pl);
    CHECK(pl == 6 && !memcmp(p, " Hello", 6), "piece ' Hello'");
    const char *tx = mn_token_text(t, hello[0], &pl);
    CHECK(pl == 7 && !memcmp(tx, "\xC4\xA0Hello", 7), "text 'ĠHello'");
    char small[4];
    size_t got;
    CHECK(mn_detokenize(t, hello, 1, 0, small, sizeof small, &got) == MN_ERANGE && got == 6, "detok ERANGE");
    int32_t bad_id = 1 << 30;
    CHECK(mn_detokenize(t, &bad_id, 1, 0, small, sizeof small, &got) == MN_EINVAL, "detok bad id");

    /* invalid UTF-8 never crashes; ids stay in range (random bytes, fixed seed) */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int in_range = 1, rc_ok = 1;
    for (int it = 0; it < 300; it++) {
        char buf[200];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = (size_t)(x % sizeof buf);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (char)(x >> 24);
            if ((x & 7) == 0) buf[i] = ' ';
            if ((x & 15) == 1) buf[i] = "<|im_start|>"[x % 12];
        }
        int32_t *v;
        int64_t nv;
        if (tokenize_all(t, buf, len, 1, (int)(x & 1), &v, &nv)) rc_ok = 0;
        for (int64_t i = 0; i < nv; i++) in_range &= v[i] >= 0 && v[i] < mn_tokenizer_n_vocab(t);
        free(v);
    }
    CHECK(rc_ok && in_range, "random bytes");

    /* valid random UTF-8 round-trips exactly */
    int rt_ok = 1;
    for (int it = 0; it < 200; it++) {
        unsigned char buf[400];
        size_t len = 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int nch = (int)(x % 60);
        for (int c = 0; c < nch; c++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t cp;
            switch (x % 6) {
            case 0: cp = 0x20 + (uint32_t)(x >> 8) % 0x5F; break;
            case 1: cp = " \t\n\r'"[(x >> 8) % 5]; break;
            case 2: cp = 0x80 + (uint32_t)(x >> 8) % 0x780; break;
            case 3: cp = 0x800 + (uint32_t)(x >> 8) % 0xF000; break;
            case 4: cp = 0x10000 + (uint32_t)(x >> 8) % 0x10000; break;
            default: cp = '0' + (uint32_t)(x >> 8) % 10; break;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'a';
            if (cp < 0x80) buf[len++] = (unsigned char)cp;
            else if (cp < 0x800) buf[len++] = (unsigned char)(0xC0 | (cp >> 6)), buf[len++] = (unsigned char)(0x80 | (cp & 63));
            else if (cp < 0x10000)
                buf[len++] = (unsigned char)(0xE0 | (cp >> 12)), buf[len++] = (unsigned char)(0x80 | ((cp >> 6) & 63)),
                buf[len++] = (unsigned char)(0x80 | (cp & 63));
            else
                buf[len++] = (unsigned char)(0xF0 | (cp >> 18)), buf[len++] = (unsigned char)(0x80 | ((cp >> 12) & 63)),
                buf[len++] = (unsigned char)(0x80 | ((cp >> 6) & 63)), buf[len++] = (unsigned char)(0x80 | (cp & 63));
        }
        int32_t *v;
        int64_t nv;
        char *back;
        size_t bl;
        if (tokenize_all(t, (char *)buf, len, 0, 0, &v, &nv) || detok(t, v, nv, 0, &back, &bl) || bl != len ||
            memcmp(back, buf, len))
            rt_ok = 0;
        free(v);
        free(back);
    }
    CHECK(rt_ok, "random UTF-8 round trip");

    /* chat template of the model: default system prompt read from the template */
    mn_chat_template ct;
    CHECK(mn_chat_template_from_tokenizer(t, &ct) == 0, "chat template");
    CHECK(ct.style == MN_CHAT_CHATML && !ct.fallback && ct.default_system &&
              !strcmp(ct.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
          "SmolLM2 default system prompt: %s", ct.default_system ? ct.default_system : "(none)");
    mn_chat_template_clear(&ct);
    mn_chat_msg m[1] = {{"user", "hi"}};
    char *prompt = NULL;
    CHECK(mn_chat_format(t, m, 1, 1, &prompt) == 0 && prompt, "chat format");
    if (prompt) {
        CHECK(mn_tokenize(t, prompt, strlen(prompt), 0, 1, ids, 64, &n) == 0 && ids[0] == im_start, "chat prompt tokens");
        free(prompt);
    }
    mn_tokenizer_free(t);
    mn_gguf_free(g);
}

static void test_chat_fixture(void) {
    char *data = test_slurp("tests/fixtures/chat.txt", NULL);
    if (!data) {
        CHECK(0, "tests/fixtures/chat.txt missing (it is part of the repository)");
        return;
    }
    mn_gguf *g = NULL;
    mn_tokenizer *model = load_vocab(test_model_path(), &g);
    char *names[8] = {0}, *tmpls[8] = {0};
    size_t tlens[8] = {0};
    int n_t = 0, n_ok = 0, n_cases = 0;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] == '#' || !line[0]) continue;
        char *f[6];
        int nf = split_tabs(line, f, 6);
        if (!strcmp(f[0], "template") && nf >= 3 && n_t < 8) {
            names[n_t] = f[1];
            tmpls[n_t] = unhex(f[2], strlen(f[2]), &tlens[n_t]);
            n_t++;
            continue;
        }
        if (strcmp(f[0], "case") || nf < 5) continue;
        mn_chat_template ct;
        if (!strcmp(f[1], "model")) {
            if (!model) continue;
            mn_chat_template_from_tokenizer(model, &ct);
        } else {
            int k = 0;
            while (k < n_t && strcmp(names[k], f[1])) k++;
            if (k == n_t) continue;
            mn_chat_template_parse(tmpls[k], tlens[k], NULL, &ct);
        }
        mn_chat_msg msgs[8];
        char *owned[8];
        int nm = 0;
        for (char *p = f[3]; *p && nm < 8;) {
            char *comma = strchr(p, ',');
            size_t seg = comma ? (size_t)(comma - p) : strlen(p);
            char *eq = memchr(p, '=', seg);
            size_t cl;
            if (!eq) break;
            *eq = 0;
            owned[nm] = unhex(eq + 1, seg - (size_t)(eq + 1 - p), &cl);
            msgs[nm].role = p;
            msgs[nm].content = owned[nm];
            nm++;
            p = comma ? comma + 1 : p + seg;
        }
        size_t el;
        char *expect = unhex(f[4], strlen(f[4]), &el);
        char *out = NULL;
        size_t ol = 0;
        int rc = mn_chat_apply(&ct, msgs, nm, f[2][0] == '1', &out, &ol);
        int ok = rc == 0 && ol == el && !memcmp(out, expect, el);
        CHECK(ok, "chat %s (%d messages, add_generation_prompt=%c):\n--- jinja\n%s\n--- mnemo\n%s", f[1], nm, f[2][0],
              expect, out ? out : mn_last_error());
        n_ok += ok;
        n_cases++;
        free(out);
        free(expect);
        for (int i = 0; i < nm; i++) free(owned[i]);
        mn_chat_template_clear(&ct);
    }
    printf("  chat: %d of %d prompts identical to jinja2\n", n_ok, n_cases);
    for (int i = 0; i < n_t; i++) free(tmpls[i]);
    mn_tokenizer_free(model);
    mn_gguf_free(g);
    free(data);
}

static void test_chat_misc(void) {
    mn_chat_template ct;
    CHECK(mn_chat_template_parse(NULL, 0, NULL, &ct) == 0 && ct.fallback && ct.style == MN_CHAT_CHATML &&
              strstr(ct.note, "no chat template"),
          "no template -> ChatML with note");
    const char *odd = "{% for m in messages %}{{ m.content }}{% endfor %}";
    CHECK(mn_chat_template_parse(odd, strlen(odd), NULL, &ct) == 0 && ct.fallback && ct.style == MN_CHAT_CHATML &&
              strstr(ct.note, "not recognised"),
          "unknown template -> ChatML with note");
    mn_chat_msg m[2] = {{"user", "a"}, {"user", "b"}};
    char *out;
    CHECK(mn_chat_apply(&ct, m, 2, 0, &out, NULL) == 0 && !strcmp(out, "<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"),
          "fallback rendering");
    free(out);
    mn_chat_template_clear(&ct);
    const char *l2 = "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}";
    CHECK(mn_chat_template_parse(l2, strlen(l2), NULL, &ct) == 0 && ct.style == MN_CHAT_LLAMA2 && !ct.fallback,
          "llama2 detected");
    CHECK(mn_chat_apply(&ct, m, 2, 1, &out, NULL) == MN_EINVAL && !out, "llama2 roles must alternate");
    mn_chat_msg bad = {"user", NULL};
    CHECK(mn_chat_apply(&ct, &bad, 1, 1, &out, NULL) == MN_EINVAL, "NULL content");
    const char *g = "{{ '<start_of_turn>' + role + '\\n' }}";
    CHECK(mn_chat_template_parse(g, strlen(g), NULL, &ct) == 0 && ct.style == MN_CHAT_GEMMA && !ct.fallback,
          "gemma detected");
    CHECK(mn_chat_apply(&ct, m, 2, 1, &out, NULL) == MN_EINVAL && !out && strstr(mn_last_error(), "alternate"),
          "gemma roles must alternate");
    mn_chat_msg sys_only = {"system", "Be brief."};
    CHECK(mn_chat_apply(&ct, &sys_only, 1, 1, &out, NULL) == 0 && !strcmp(out, "<start_of_turn>model\n"),
          "a system message alone writes no turn: %s", out ? out : "(null)");
    free(out);
}

/* ---------------------------------------------------------------------- */
/* malformed vocabularies                                                 */

typedef void (*build_fn)(mn_gguf_writer *w);

static int try_vocab(build_fn fn, mn_tokenizer **out) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/mn_test_tok_%d.gguf", (int)getpid());
    mn_gguf_writer *w = mn_gguf_writer_create();
    fn(w);
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    if (rc) return 1000 + rc;
    mn_gguf *g;
    rc = mn_gguf_open(path, &g);
    if (rc) {
        unlink(path);
        return 2000 + rc;
    }
    mn_tokenizer *t = NULL;
    rc = mn_tokenizer_from_gguf(g, &t);
    mn_gguf_free(g); /* the tokenizer must not depend on the file */
    unlink(path);
    if (out)
        *out = t;
    else
        mn_tokenizer_free(t);
    return rc;
}

static const char *const k_toks[] = {"a", "b", "c", "ab", "abc", "\xC4\xA0", "\xC4\xA0" "a", "<|end|>", "<x>"};
static const int32_t k_types[] = {1, 1, 1, 1, 1, 1, 1, 3, 4};
static const char *const k_merges[] = {"a b", "ab c", "\xC4\xA0 a"};

static void v_good(mn_gguf_writer *w) {
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    mn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", 9, k_toks, NULL);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, 9, k_types);
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", 3, k_merges, NULL);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 7);
}
static void v_no_model(mn_gguf_writer *w) {
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", 9, k_toks, NULL);
}
static void v_bad_model(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "wordpiece-ish");
}
static void v_model_not_str(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.model", 3);
}
static void v_no_tokens(mn_gguf_writer *w) {
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", 3, k_merges, NULL);
}
static void v_tokens_not_str(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", MN_GGUF_INT32, 9, k_types);
}
static void v_no_merges(mn_gguf_writer *w) {
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", 9, k_toks, NULL);
}
static void v_types_short(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, 3, k_types);
}
static void v_scores_type(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MN_GGUF_INT32, 9, k_types);
}
static void v_bad_pre(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre");
}
static void v_bos_missing(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
}
static void v_id_type(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_str(w, "tokenizer.ggml.eos_token_id", "seven");
}
static void v_neg_pad(mn_gguf_writer *w) {
    v_good(w);
    mn_gguf_writer_set_i32(w, "tokenizer.ggml.padding_token_id", -1);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 1000); /* out of range: ignored */
}
static void v_spm(mn_gguf_writer *w) {
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "<0x0A>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a", "b", "ab"};
    static const int32_t types[] = {2, 3, 3, 6, 1, 1, 1, 1, 1};
    static const float scores[] = {0, 0, 0, 0, -5, -3, -1, -3, -2};
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", 9, toks, NULL);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, 9, types);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MN_GGUF_FLOAT32, 9, scores);
}

static void test_malformed(void) {
    struct {
        build_fn fn;
        int want;
        const char *msg;
    } cases[] = {
        {v_no_model, MN_EFORMAT, "tokenizer.ggml.model"},
        {v_bad_model, MN_EUNSUPPORTED, "wordpiece-ish"},
        {v_model_not_str, MN_EFORMAT, "not a string"},
        {v_no_tokens, MN_EFORMAT, "tokenizer.ggml.tokens"},
        {v_tokens_not_str, MN_EFORMAT, "tokenizer.ggml.tokens"},
        {v_no_merges, MN_EFORMAT, "tokenizer.ggml.merges"},
        {v_types_short, MN_EFORMAT, "token_type"},
        {v_scores_type, MN_EFORMAT, "scores"},
        {v_bad_pre, MN_EUNSUPPORTED, "no-such-pre"},
        {v_bos_missing, MN_EFORMAT, "BOS"},
        {v_id_type, MN_EFORMAT, "eos_token_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = try_vocab(cases[i].fn, NULL);
        CHECK(rc == cases[i].want && strstr(mn_last_error(), cases[i].msg), "malformed case %zu: rc %d (%s)", i, rc,
              mn_last_error());
    }
    CHECK(mn_tokenizer_from_gguf(NULL, NULL) == MN_EINVAL, "NULL args");

    /* a tiny hand-made BPE vocabulary */
    mn_tokenizer *t = NULL;
    int rc = try_vocab(v_good, &t);
    CHECK(rc == 0 && t, "tiny vocab: %s", mn_last_error());
    if (t) {
        int32_t ids[16];
        int64_t n;
        CHECK(mn_tokenize(t, "abc a<|end|>", 12, 1, 1, ids, 16, &n) == 0 && n == 3 && ids[0] == 4 && ids[1] == 6 &&
                  ids[2] == 7,
              "tiny: n=%lld", (long long)n);
        CHECK(mn_tokenize(t, "ab<x>c", 6, 0, 0, ids, 16, &n) == 0 && n == 3 && ids[0] == 3 && ids[1] == 8 && ids[2] == 2,
              "user-defined tokens are matched even without parse_special");
        /* bytes with no token are dropped as llama.cpp does (only printable ASCII can fall back) */
        CHECK(mn_tokenize(t, "zzz", 3, 0, 0, ids, 16, &n) == 0 && n == 0, "unknown bytes");
        CHECK(mn_token_is_eog(t, 7) && mn_token_eos(t) == 7 && mn_token_bos(t) == -1, "tiny ids");
        mn_tokenizer_free(t);
    }
    t = NULL;
    rc = try_vocab(v_neg_pad, &t);
    CHECK(rc == 0 && t && mn_token_pad(t) == -1 && mn_token_unk(t) == -1, "negative/out-of-range ids are ignored: %s",
          mn_last_error());
    mn_tokenizer_free(t);
    t = NULL;
    rc = try_vocab(v_spm, &t);
    CHECK(rc == 0 && t, "tiny spm: %s", mn_last_error());
    if (t) {
        int32_t ids[16];
        int64_t n;
        CHECK(mn_tokenize(t, "ab a\n", 5, 1, 0, ids, 16, &n) == 0, "spm tokenize");
        /* <s> ▁a b ▁a <0x0A>: "▁a" (-1) beats "ab" (-2) */
        CHECK(n == 5 && ids[0] == 1 && ids[1] == 6 && ids[2] == 7 && ids[3] == 6 && ids[4] == 3, "spm ids n=%lld",
              (long long)n);
        CHECK(mn_tokenize(t, "\xC3\xA9", 2, 0, 0, ids, 16, &n) == 0 && n == 3 && ids[0] == 4 && ids[1] == 0 && ids[2] == 0,
              "spm byte fallback without byte tokens uses <unk>");
        mn_tokenizer_free(t);
    }
}

int main(void) {
    test_fixture_file("tests/fixtures/tokens_smollm2.txt");
    test_fixture_file("tests/fixtures/tokens_gemma3.txt");
    test_fixture_file("tests/fixtures/tokens_llama-spm.txt");
    test_fixture_file("tests/fixtures/tokens_llama-bpe.txt");
    test_fixture_file("tests/fixtures/tokens_gpt-2.txt");
    test_fixture_file("tests/fixtures/tokens_gpt-2-default.txt");
    test_llamacpp_inp("llama-spm");
    test_llamacpp_inp("llama-bpe");
    test_llamacpp_inp("gpt-2");
    test_default_model();
    test_chat_fixture();
    test_chat_misc();
    test_malformed();
    TEST_MAIN_END();
}
