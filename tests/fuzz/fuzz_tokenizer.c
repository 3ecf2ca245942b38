/* fuzz_tokenizer.c - libFuzzer target for the tokenizer and chat templates with
 * the default model's vocabulary (models/SmolLM2-135M-Instruct.Q4_1.gguf, as
 * `make model` fetches it), built by `make fuzz` with ASan and UBSan; seeds in
 * tests/fuzz/corpus/tokenizer/.
 *
 * Any bytes: tokenizing never fails except for size, every id is in the
 * vocabulary, and for valid UTF-8 decode(encode(x)) == x, with special-token
 * parsing off and on - unless x holds a byte whose byte-level token the
 * vocabulary lacks (SmolLM2's lacks 21, among them 0x04, 0x06, 0x13, 0x14,
 * 0x16, 0x1d and the 4-byte leads 0xf1, 0xf2): such bytes are dropped, as
 * llama.cpp drops them (the fuzzer's first finding; see mn_detokenize). The same bytes split at NUL into messages (roles system,
 * user, assistant in turn) render through the model's chat template, and each
 * message's text appears in the rendering.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "mnemo.h"

static mn_model *g_model;
static const mn_tokenizer *g_tok;
static uint8_t g_missing[256]; /* bytes without a byte-level token */

/* GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves,
 * the others for U+0100 onwards in byte order */
static int printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }
static void find_missing(void) {
    int next = 256;
    for (int b = 0; b < 256; b++) {
        const int cp = printable(b) ? b : next++;
        char u[2];
        const int l = cp < 0x80 ? 1 : 2;
        if (l == 1) u[0] = (char)cp;
        else u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F));
        g_missing[b] = mn_token_find(g_tok, u, (size_t)l) < 0;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *path = getenv("MNEMO_MODEL");
    if (!path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (mn_model_load(path, &g_model)) {
        fprintf(stderr, "fuzz_tokenizer: %s (run `make model` first)\n", mn_last_error());
        abort();
    }
    g_tok = mn_model_tokenizer(g_model);
    find_missing();
    return 0;
}

/* RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF */
static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
        else return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void round_trip(const uint8_t *data, size_t size, int special) {
    int64_t n = 0;
    /* at most one token per byte, three for a byte read as U+FFFD: the buffer is enough */
    const int64_t cap_ids = 3 * (int64_t)size + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap_ids);
    if (!ids) return;
    int rc = mn_tokenize(g_tok, (const char *)data, size, 0, special, ids, cap_ids, &n);
    if (rc) abort();
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= mn_model_n_vocab(g_model)) abort();
    size_t cap = 4 * size + 64, got = 0;
    char *out = malloc(cap);
    if (!out) abort();
    rc = mn_detokenize(g_tok, ids, n, special ? MN_DETOK_SPECIAL : 0, out, cap, &got);
    if (rc == MN_ERANGE) {
        free(out);
        cap = got + 1;
        if (!(out = malloc(cap)) || mn_detokenize(g_tok, ids, n, special ? MN_DETOK_SPECIAL : 0, out, cap, &got))
            abort();
    } else if (rc) {
        abort();
    }
    int whole = valid_utf8(data, size);
    for (size_t i = 0; i < size && whole; i++) whole = !g_missing[data[i]];
    if (whole && (got != size || memcmp(out, data, size))) abort();
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* the tokenizer's cost grows with the text; coverage does not */
    round_trip(data, size, 0);
    round_trip(data, size, 1);
    /* chat: messages split at NUL */
    enum { MAX_MSG = 8 };
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    mn_chat_msg msgs[MAX_MSG];
    static const char *const roles[3] = {"system", "user", "assistant"};
    int nm = 0;
    for (size_t i = 0; i <= size && nm < MAX_MSG;) {
        msgs[nm].role = roles[nm % 3];
        msgs[nm].content = text + i;
        nm++;
        i += strlen(text + i) + 1;
    }
    char *out = NULL;
    if (mn_chat_format(g_tok, msgs, nm, 1, &out) == 0) {
        if (!out) abort();
        for (int i = 0; i < nm; i++)
            if (!strstr(out, msgs[i].content)) abort();
        free(out);
    } else if (!mn_last_error()[0]) {
        abort();
    }
    free(text);
    return 0;
}
