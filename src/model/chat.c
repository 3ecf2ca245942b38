/* chat.c - ChatML, Llama-2 and Gemma chat prompt rendering (see chat.h). */
#include "model/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static const char *find_mem(const char *s, size_t n, const char *lit) {
    size_t m = strlen(lit);
    return m <= n ? memmem(s, n, lit, m) : NULL;
}

/* Reads the text of a ChatML default system prompt from a template literal like
 * '<|im_start|>system\nYou are ...<|im_end|>\n'. Returns a malloc'd string, NULL
 * when there is none (or on allocation failure, *oom = 1). */
static char *default_system(const char *s, size_t n, int *oom) {
    static const char head[] = "<|im_start|>system";
    const size_t hl = sizeof head - 1;
    for (size_t pos = 0; pos + hl <= n;) {
        const char *h = find_mem(s + pos, n - pos, head);
        if (!h) break;
        size_t at = (size_t)(h - s);
        pos = at + 1;
        if (at == 0 || (s[at - 1] != '\'' && s[at - 1] != '"')) continue; /* must open a string literal */
        char q = s[at - 1];
        size_t i = at + hl;
        if (i < n && s[i] == '\n')
            i += 1;
        else if (i + 1 < n && s[i] == '\\' && s[i + 1] == 'n')
            i += 2;
        else
            continue;
        const char *e = find_mem(s + i, n - i, "<|im_end|>");
        if (!e) continue;
        size_t end = (size_t)(e - s);
        if (end == i) continue;
        /* the prompt must lie inside the same literal: no unescaped closing quote */
        int ok = 1;
        for (size_t j = i; j < end; j++) {
            if (s[j] == '\\') {
                j++;
                continue;
            }
            if (s[j] == q) {
                ok = 0;
                break;
            }
        }
        if (!ok) continue;
        char *out = malloc(end - i + 1);
        if (!out) {
            *oom = 1;
            return NULL;
        }
        size_t o = 0;
        for (size_t j = i; j < end; j++) {
            char c = s[j];
            if (c == '\\' && j + 1 < end) {
                char d = s[++j];
                c = d == 'n' ? '\n' : d == 't' ? '\t' : d == 'r' ? '\r' : d;
            }
            out[o++] = c;
        }
        out[o] = 0;
        return out;
    }
    return NULL;
}

static void copy_tok_text(const mn_tokenizer *tok, int32_t id, char *dst, size_t cap, const char *dflt) {
    size_t len = 0;
    const char *p = tok && id >= 0 ? mn_token_text(tok, id, &len) : NULL;
    if (!p || len == 0 || len >= cap) {
        snprintf(dst, cap, "%s", dflt);
        return;
    }
    memcpy(dst, p, len);
    dst[len] = 0;
}

int mn_chat_template_parse(const char *tmpl, size_t len, const mn_tokenizer *tok, mn_chat_template *out) {
    if (!out) return mn_error(MN_EINVAL, "mn_chat_template_parse: NULL output");
    memset(out, 0, sizeof *out);
    out->style = MN_CHAT_CHATML;
    copy_tok_text(tok, tok ? mn_token_bos(tok) : -1, out->bos, sizeof out->bos, "<s>");
    copy_tok_text(tok, tok ? mn_token_eos(tok) : -1, out->eos, sizeof out->eos, "</s>");
    if (!tmpl || len == 0) {
        out->fallback = 1;
        if (tok && mn_token_find(tok, "<|im_start|>", 12) < 0) {
            out->style = MN_CHAT_PLAIN;
            snprintf(out->note, sizeof out->note,
                     "the model has no chat template (a base model?); using a plain Question/Answer prompt");
        } else {
            snprintf(out->note, sizeof out->note, "the model has no chat template; using ChatML");
        }
        return 0;
    }
    if (find_mem(tmpl, len, "<|im_start|>")) {
        int oom = 0;
        out->default_system = default_system(tmpl, len, &oom);
        if (oom) return mn_error(MN_ENOMEM, "chat template: out of memory");
        return 0;
    }
    if (find_mem(tmpl, len, "[INST]")) {
        out->style = MN_CHAT_LLAMA2;
        return 0;
    }
    if (find_mem(tmpl, len, "<start_of_turn>")) {
        out->style = MN_CHAT_GEMMA;
        return 0;
    }
    out->fallback = 1;
    snprintf(out->note, sizeof out->note,
             "chat template not recognised (not ChatML <|im_start|>, Llama-2 [INST] or Gemma <start_of_turn>); "
             "using ChatML");
    return 0;
}

int mn_chat_template_from_tokenizer(const mn_tokenizer *tok, mn_chat_template *out) {
    const char *t = tok ? mn_tokenizer_chat_template(tok) : NULL;
    return mn_chat_template_parse(t, t ? strlen(t) : 0, tok, out);
}

void mn_chat_template_clear(mn_chat_template *ct) {
    if (!ct) return;
    free(ct->default_system);
    ct->default_system = NULL;
}

/* Python's str.isspace() for one code point. */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Length of the UTF-8 character starting at s[i] and its code point (bad bytes: 1, 0xFFFD). */
static size_t cp_at(const char *s, size_t n, size_t i, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s + i;
    size_t rem = n - i;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    size_t l = (u[0] & 0xE0) == 0xC0 ? 2 : (u[0] & 0xF0) == 0xE0 ? 3 : (u[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (l == 0 || l > rem) {
        *cp = 0xFFFD;
        return 1;
    }
    uint32_t c = u[0] & (0x7F >> l);
    for (size_t k = 1; k < l; k++) {
        if ((u[k] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        c = (c << 6) | (u[k] & 0x3F);
    }
    *cp = c;
    return l;
}

/* Python str.strip(): appends s without leading/trailing whitespace. */
static void sb_stripped(sbuf *b, const char *s, size_t n) {
    size_t a = 0, e = n;
    while (a < n) {
        uint32_t c;
        size_t l = cp_at(s, n, a, &c);
        if (!py_space(c)) break;
        a += l;
    }
    /* trailing: walk forward, remembering where the last non-space character ends */
    size_t last = a;
    for (size_t i = a; i < n;) {
        uint32_t c;
        size_t l = cp_at(s, n, i, &c);
        i += l;
        if (!py_space(c)) last = i;
    }
    e = last;
    sb_add(b, s + a, e - a);
}

static int render_chatml(const mn_chat_template *ct, const mn_chat_msg *m, int n, int agp, sbuf *b) {
    for (int i = 0; i < n; i++) {
        if (i == 0 && ct->default_system && strcmp(m[0].role, "system") != 0) {
            sb_str(b, "<|im_start|>system\n");
            sb_str(b, ct->default_system);
            sb_str(b, "<|im_end|>\n");
        }
        sb_str(b, "<|im_start|>");
        sb_str(b, m[i].role);
        sb_str(b, "\n");
        sb_str(b, m[i].content);
        sb_str(b, "<|im_end|>\n");
    }
    if (agp) sb_str(b, "<|im_start|>assistant\n");
    return 0;
}

static int render_plain(const mn_chat_msg *m, int n, int agp, sbuf *b) {
    for (int i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "system")) {
            sb_str(b, m[i].content);
            sb_str(b, "\n\n");
        } else if (!strcmp(m[i].role, "assistant")) {
            sb_str(b, "Answer: ");
            sb_str(b, m[i].content);
            sb_str(b, "\n\n");
        } else {
            sb_str(b, "Question: ");
            sb_str(b, m[i].content);
            sb_str(b, "\n");
        }
    }
    if (agp) sb_str(b, "Answer:");
    return 0;
}

static int render_llama2(const mn_chat_template *ct, const mn_chat_msg *m, int n, sbuf *b) {
    const char *sys = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) {
        sys = m[0].content;
        m++, n--;
    }
    sbuf content = {0};
    for (int i = 0; i < n; i++) {
        int user = strcmp(m[i].role, "user") == 0;
        if (user != (i % 2 == 0)) {
            free(content.p);
            return mn_error(MN_EINVAL, "chat: Llama-2 conversation roles must alternate user/assistant/user/...");
        }
        content.n = 0;
        if (i == 0 && sys) {
            sb_str(&content, "<<SYS>>\n");
            sb_str(&content, sys);
            sb_str(&content, "\n<</SYS>>\n\n");
        }
        sb_str(&content, m[i].content);
        const char *c = content.p ? content.p : "";
        if (user) {
            sb_str(b, ct->bos);
            sb_str(b, "[INST] ");
            sb_stripped(b, c, content.n);
            sb_str(b, " [/INST]");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            sb_str(b, " ");
            sb_stripped(b, c, content.n);
            sb_str(b, " ");
            sb_str(b, ct->eos);
        }
    }
    int oom = content.oom;
    free(content.p);
    if (oom) b->oom = 1;
    return 0;
}

/* Gemma: a system message is written at the start of the first user turn,
 * the assistant's role is "model", contents are stripped, roles alternate
 * from user. The template's leading BOS is left to the tokenizer. */
static int render_gemma(const mn_chat_msg *m, int n, int agp, sbuf *b) {
    const char *sys = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) {
        sys = m[0].content;
        m++, n--;
    }
    for (int i = 0; i < n; i++) {
        if ((strcmp(m[i].role, "user") == 0) != (i % 2 == 0))
            return mn_error(MN_EINVAL, "chat: Gemma conversation roles must alternate user/assistant/user/...");
        sb_str(b, "<start_of_turn>");
        sb_str(b, strcmp(m[i].role, "assistant") == 0 ? "model" : m[i].role);
        sb_str(b, "\n");
        if (i == 0 && sys) {
            sb_str(b, sys);
            sb_str(b, "\n\n");
        }
        sb_stripped(b, m[i].content, strlen(m[i].content));
        sb_str(b, "<end_of_turn>\n");
    }
    if (agp) sb_str(b, "<start_of_turn>model\n");
    return 0;
}

int mn_chat_apply(const mn_chat_template *ct, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out,
                  size_t *out_len) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!ct || !out || n < 0 || (n > 0 && !msgs)) return mn_error(MN_EINVAL, "mn_chat_apply: bad argument");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) return mn_error(MN_EINVAL, "mn_chat_apply: message %d has no role/content", i);
    sbuf b = {0};
    sb_add(&b, "", 0);
    int rc = ct->style == MN_CHAT_LLAMA2  ? render_llama2(ct, msgs, n, &b)
             : ct->style == MN_CHAT_PLAIN ? render_plain(msgs, n, add_generation_prompt, &b)
             : ct->style == MN_CHAT_GEMMA ? render_gemma(msgs, n, add_generation_prompt, &b)
                                          : render_chatml(ct, msgs, n, add_generation_prompt, &b);
    if (!rc && b.oom) rc = mn_error(MN_ENOMEM, "chat: out of memory");
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return 0;
}

void mn_turn_init(mn_turn *t, const mn_tokenizer *tok) {
    mn_chat_template ct;
    t->plain = t->shown = 0;
    if (mn_chat_template_from_tokenizer(tok, &ct) == 0) {
        t->plain = ct.style == MN_CHAT_PLAIN;
        mn_chat_template_clear(&ct);
    }
}

int mn_turn_end(mn_turn *t, const mn_tokenizer *tok, int32_t id) {
    if (mn_token_is_eog(tok, id)) return 1;
    if (!t->plain) return 0;
    size_t len = 0;
    const char *p = mn_token_piece(tok, id, 0, &len);
    for (size_t i = 0; p && i < len; i++) {
        if (p[i] == '\n' && t->shown) return 1;
        if (!(p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) t->shown = 1;
    }
    return 0;
}

int mn_chat_format(const mn_tokenizer *tok, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out) {
    mn_chat_template ct;
    int rc = mn_chat_template_from_tokenizer(tok, &ct);
    if (rc) return rc;
    rc = mn_chat_apply(&ct, msgs, n, add_generation_prompt, out, NULL);
    mn_chat_template_clear(&ct);
    return rc;
}
