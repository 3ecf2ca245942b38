/* qaset.c - question-answer pairs for decoder fine-tuning (see qaset.h).
 *
 * Two passes so a bad file fails before anything heavy runs: first every
 * line is parsed and its document resolved against one listing of the store,
 * then memories are loaded (once per document, through a memory cache that
 * checks each file against the store's checksum) and the pairs tokenized.
 */
#include "store/qaset.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/memory.h"
#include "store/memcache.h"

struct mn_qaset {
    mn_qa_example *ex;
    char **ctx;      /* per pair: its passage, or NULL */
    int32_t n, n_docs, n_alloc;
    mn_memcache *mc; /* owns the memories the examples point into */
};

/* A parsed line before its tokens and memory exist. */
typedef struct {
    int line;
    char *q, *a;
    int doc;   /* index into the store listing; -1 for a passage */
    char *ctx; /* a passage read as exact text instead of a document's memory */
    int inl;   /* the passage inside the user's message, before the question */
} pending;

void mn_qaset_free(mn_qaset *q) {
    if (!q) return;
    for (int32_t i = 0; i < q->n; i++) free((void *)q->ex[i].ids);
    for (int32_t i = 0; q->ctx && i < q->n_alloc; i++) free(q->ctx[i]);
    free(q->ex), free(q->ctx);
    mn_memcache_free(q->mc);
    free(q);
}

const mn_qa_example *mn_qaset_examples(const mn_qaset *q, int32_t *n) {
    *n = q->n;
    return q->ex;
}

int32_t mn_qaset_n_docs(const mn_qaset *q) { return q->n_docs; }

const char *mn_qaset_context(const mn_qaset *q, int32_t i) { return i >= 0 && i < q->n ? q->ctx[i] : NULL; }

static int read_all(const char *path, char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return mn_error(errno == ENOENT ? MN_ENOTFOUND : MN_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (!nb) free(b);
            b = nb, cap *= 2;
        }
    }
    const int err = ferror(f);
    fclose(f);
    if (!b) return mn_error(MN_ENOMEM, "%s: out of memory", path);
    if (err) {
        free(b);
        return mn_error(MN_EIO, "%s: read failed", path);
    }
    b[n] = 0;
    *buf = b, *len = n;
    return MN_OK;
}

static const char *field_str(cJSON *o, const char *name) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

/* *idx gets the listing index of the document `doc` names. */
static int resolve(const char *path, int line, cJSON *doc, const mn_store_doc *docs, int64_t n, const char *group,
                   int *idx) {
    int64_t id = -1;
    int found = -1;
    if (cJSON_IsNumber(doc)) {
        const double v = doc->valuedouble;
        if (!(v >= 1 && v <= 9e15) || v != (double)(int64_t)v)
            return mn_error(MN_EFORMAT, "%s:%d: \"doc\" must be a document id (a positive integer) or a title", path,
                            line);
        id = (int64_t)v;
    } else if (cJSON_IsString(doc) && doc->valuestring && doc->valuestring[0]) {
        for (int64_t i = 0; i < n; i++) {
            if (strcmp(docs[i].title, doc->valuestring)) continue;
            if (found >= 0)
                return mn_error(MN_EINVAL, "%s:%d: title '%s' is ambiguous (documents %lld and %lld): give the id",
                                path, line, doc->valuestring, (long long)docs[found].id, (long long)docs[i].id);
            found = (int)i;
        }
        if (found < 0 && !all_digits(doc->valuestring))
            return mn_error(MN_ENOTFOUND, "%s:%d: no document titled '%s' in the store", path, line, doc->valuestring);
        if (found < 0) id = strtoll(doc->valuestring, NULL, 10);
    } else {
        return mn_error(MN_EFORMAT, "%s:%d: \"doc\" (a document id or title) is missing", path, line);
    }
    for (int64_t i = 0; i < n && found < 0; i++)
        if (docs[i].id == id) found = (int)i;
    if (found < 0) return mn_error(MN_ENOTFOUND, "%s:%d: no document with id %lld in the store", path, line, (long long)id);
    const mn_store_doc *d = &docs[found];
    if (strcmp(d->group, group))
        return mn_error(MN_EINVAL, "%s:%d: document %lld ('%s') is in group '%s', not '%s'", path, line,
                        (long long)d->id, d->title, d->group, group);
    if (d->n_slots < 0 || !d->mem_file[0])
        return mn_error(MN_EINVAL, "%s:%d: document %lld ('%s') has no memory for this compressor adapter", path,
                        line, (long long)d->id, d->title);
    *idx = found;
    return MN_OK;
}

/* Parses every line; *out gets n_out pairs (strings malloc'd). */
static int parse_lines(const char *path, char *text, size_t len, const mn_store_doc *docs, int64_t nd,
                       const char *group, pending **out, int32_t *n_out) {
    pending *p = NULL;
    int32_t n = 0, cap = 0;
    int rc = MN_OK, line = 0;
    for (size_t at = 0; at < len && !rc;) {
        char *s = text + at, *nl = memchr(s, '\n', len - at);
        const size_t ll = nl ? (size_t)(nl - s) : len - at;
        at += ll + 1;
        line++;
        if (blank(s, ll)) continue;
        s[ll] = 0; /* the newline (or the buffer's own NUL) ends the line */
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithOpts(s, &end, 1);
        if (!o || !cJSON_IsObject(o)) {
            if (o)
                rc = mn_error(MN_EFORMAT, "%s:%d: expected a JSON object {\"doc\" or \"context\", \"question\", \"answer\"}",
                              path, line);
            else rc = mn_error(MN_EFORMAT, "%s:%d: not valid JSON (column %d)", path, line,
                               end && end >= s ? (int)(end - s) + 1 : 1);
            cJSON_Delete(o);
            break;
        }
        const char *q = field_str(o, "question"), *a = field_str(o, "answer"), *ctx = field_str(o, "context");
        const int has_ctx = cJSON_GetObjectItemCaseSensitive(o, "context") != NULL;
        const cJSON *inl = cJSON_GetObjectItemCaseSensitive(o, "inline");
        int doc = -1;
        if (!q || !q[0]) rc = mn_error(MN_EFORMAT, "%s:%d: \"question\" (a non-empty string) is missing", path, line);
        else if (!a || !a[0]) rc = mn_error(MN_EFORMAT, "%s:%d: \"answer\" (a non-empty string) is missing", path, line);
        else if (has_ctx && (!ctx || !ctx[0]))
            rc = mn_error(MN_EFORMAT, "%s:%d: \"context\" must be a non-empty string", path, line);
        else if (inl && (!cJSON_IsBool(inl) || !has_ctx))
            rc = mn_error(MN_EFORMAT, "%s:%d: \"inline\" is true or false, and goes with a \"context\"", path, line);
        else if (has_ctx && cJSON_GetObjectItemCaseSensitive(o, "doc"))
            rc = mn_error(MN_EFORMAT, "%s:%d: a pair reads either a \"doc\" or a \"context\", not both", path, line);
        else if (!has_ctx) rc = resolve(path, line, cJSON_GetObjectItemCaseSensitive(o, "doc"), docs, nd, group, &doc);
        if (!rc && n == cap) {
            pending *np = realloc(p, sizeof *p * (size_t)(cap = cap ? 2 * cap : 64));
            if (!np) rc = mn_error(MN_ENOMEM, "out of memory");
            else p = np;
        }
        if (!rc) {
            p[n] = (pending){line, strdup(q), strdup(a), doc, has_ctx ? strdup(ctx) : NULL, cJSON_IsTrue(inl)};
            if (!p[n].q || !p[n].a || (has_ctx && !p[n].ctx)) {
                free(p[n].q), free(p[n].a), free(p[n].ctx);
                rc = mn_error(MN_ENOMEM, "out of memory");
            } else n++;
        }
        cJSON_Delete(o);
    }
    if (!rc && n == 0) rc = mn_error(MN_EFORMAT, "%s: no question-answer pairs", path);
    if (rc) {
        for (int32_t i = 0; i < n; i++) free(p[i].q), free(p[i].a), free(p[i].ctx);
        free(p);
        return rc;
    }
    *out = p, *n_out = n;
    return MN_OK;
}

int mn_qaset_check_text(const char *name, const char *text, size_t len, const mn_store_doc *docs, int64_t n_docs,
                        const char *group, int32_t *n_pairs) {
    *n_pairs = 0;
    char *copy = malloc(len + 1); /* parse_lines ends each line in place */
    if (!copy) return mn_error(MN_ENOMEM, "out of memory");
    memcpy(copy, text, len);
    copy[len] = 0;
    pending *p = NULL;
    int32_t n = 0;
    int rc = parse_lines(name, copy, len, docs, n_docs, group, &p, &n);
    free(copy);
    for (int32_t i = 0; i < n; i++) free(p[i].q), free(p[i].a), free(p[i].ctx);
    free(p);
    if (!rc) *n_pairs = n;
    return rc;
}

static int tokenize_all(const mn_tokenizer *tok, const char *text, int bos, int special, int32_t **ids, int64_t *n) {
    const size_t len = strlen(text);
    int64_t cap = (int64_t)len + 16, got = 0;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory");
    int rc = mn_tokenize(tok, text, len, bos, special, buf, cap, &got);
    if (rc == MN_ERANGE && got > cap) {
        int32_t *nb = realloc(buf, sizeof(int32_t) * (size_t)got);
        if (!nb) rc = MN_ENOMEM;
        else buf = nb, cap = got, rc = mn_tokenize(tok, text, len, bos, special, buf, cap, &got);
    }
    if (rc) {
        free(buf);
        return rc == MN_ENOMEM ? mn_error(MN_ENOMEM, "out of memory") : rc;
    }
    *ids = buf, *n = got;
    return MN_OK;
}

/* The pair's tokens: the prompt as mn_answer builds it (chat template, the
 * assistant's turn opened, BOS and special tokens), then the reply as the
 * template renders the whole exchange, through its first end-of-generation
 * token. When the exchange's tokens do not start with the prompt's (a merge
 * across the boundary), the reply is the answer's own tokens plus the
 * end-of-turn token. */
static int pair_tokens(const mn_tokenizer *tok, const char *q, const char *a, int32_t **out, int32_t *n_ids,
                       int32_t *n_prompt) {
    const mn_chat_msg msgs[2] = {{"user", q}, {"assistant", a}};
    char *pt = NULL, *ft = NULL;
    int32_t *P = NULL, *F = NULL, *R = NULL;
    int64_t np = 0, nf = 0, nr = 0;
    int rc = mn_chat_format(tok, msgs, 1, 1, &pt);
    if (!rc) rc = tokenize_all(tok, pt, 1, 1, &P, &np);
    if (!rc) rc = mn_chat_format(tok, msgs, 2, 0, &ft);
    if (!rc) rc = tokenize_all(tok, ft, 1, 1, &F, &nf);
    const int32_t *reply = NULL;
    int64_t n_reply = 0;
    if (!rc && nf > np && !memcmp(F, P, sizeof(int32_t) * (size_t)np)) {
        reply = F + np, n_reply = nf - np;
    } else if (!rc && !(rc = tokenize_all(tok, a, 0, 0, &R, &nr))) {
        reply = R, n_reply = nr;
    }
    int64_t keep = n_reply;
    for (int64_t i = 0; i < n_reply; i++)
        if (mn_token_is_eog(tok, reply[i])) {
            keep = i + 1;
            break;
        }
    int32_t end = MN_TOKEN_NONE;
    if (keep == n_reply && (n_reply == 0 || !mn_token_is_eog(tok, reply[n_reply - 1])))
        end = mn_token_eot(tok) != MN_TOKEN_NONE ? mn_token_eot(tok) : mn_token_eos(tok);
    const int64_t total = np + keep + (end != MN_TOKEN_NONE);
    int32_t *ids = NULL;
    if (!rc && (keep == 0 || total > INT32_MAX)) rc = mn_error(MN_EINVAL, "the answer has no tokens");
    if (!rc && !(ids = malloc(sizeof(int32_t) * (size_t)total))) rc = mn_error(MN_ENOMEM, "out of memory");
    if (!rc) {
        memcpy(ids, P, sizeof(int32_t) * (size_t)np);
        memcpy(ids + np, reply, sizeof(int32_t) * (size_t)keep);
        if (end != MN_TOKEN_NONE) ids[total - 1] = end;
        *out = ids, *n_ids = (int32_t)total, *n_prompt = (int32_t)np;
    }
    free(pt), free(ft), free(P), free(F), free(R);
    return rc;
}

int mn_qaset_load(mn_store *s, const mn_model *m, const mn_adapter *a, const char *group, const char *path,
                  mn_qaset **out) {
    *out = NULL;
    if (!s || !m || !a || !group || !path) return mn_error(MN_EINVAL, "QA set: missing argument");
    char *text = NULL;
    size_t len = 0;
    mn_store_doc *docs = NULL;
    int64_t nd = 0;
    pending *p = NULL;
    int32_t n = 0;
    int rc = read_all(path, &text, &len);
    if (!rc) rc = mn_store_list(s, mn_adapter_hash(a), &docs, &nd);
    if (!rc) rc = parse_lines(path, text, len, docs, nd, group, &p, &n);
    free(text);
    mn_qaset *q = NULL;
    if (!rc && (!(q = calloc(1, sizeof *q)) || !(q->ex = calloc((size_t)n, sizeof *q->ex)) ||
                !(q->ctx = calloc((size_t)n, sizeof *q->ctx))))
        rc = mn_error(MN_ENOMEM, "out of memory");
    if (q) q->n_alloc = q->ctx ? n : 0;
    if (!rc) rc = mn_memcache_create(m, a, 0, &q->mc); /* entries stay pinned: budget 0 evicts none */
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    const int64_t n_ctx = mn_model_n_ctx_train(m);
    uint8_t *seen = rc ? NULL : calloc((size_t)(nd ? nd : 1), 1);
    if (!rc && !seen) rc = mn_error(MN_ENOMEM, "out of memory");
    for (int32_t i = 0; i < n && !rc; i++, q->n++) {
        mn_qa_example *e = &q->ex[i];
        int32_t *ids = NULL, *lead = NULL;
        int64_t n_lead = 0;
        const mn_docmem *mem = NULL;
        const mn_store_doc *d = p[i].doc >= 0 ? &docs[p[i].doc] : NULL;
        char where[MN_STORE_PATH_CAP + 64];
        if (d) snprintf(where, sizeof where, "%s:%d: document %lld", path, p[i].line, (long long)d->id);
        else snprintf(where, sizeof where, "%s:%d: context", path, p[i].line);
        if (d) {
            char mp[MN_STORE_PATH_CAP + MN_STORE_NAME_CAP + 2];
            snprintf(mp, sizeof mp, "%s/%s", mn_store_mem_dir(s), d->mem_file);
            rc = mn_memcache_get(q->mc, d->id, mp, d->mem_checksum, &mem);
        } else if (!p[i].inl) { /* a passage, tokenized as a document is read (BOS, no special tokens) */
            rc = tokenize_all(tok, p[i].ctx, 1, 0, &lead, &n_lead);
        }
        if (!rc && p[i].inl) { /* the message `ask --doc` sends: the passage, a blank line, the question */
            char *msg = malloc(strlen(p[i].ctx) + strlen(p[i].q) + 3);
            if (!msg) rc = mn_error(MN_ENOMEM, "out of memory");
            else {
                sprintf(msg, "%s\n\n%s", p[i].ctx, p[i].q);
                rc = pair_tokens(tok, msg, p[i].a, &ids, &e->n_ids, &e->n_prompt);
                free(msg);
            }
        } else if (!rc) rc = pair_tokens(tok, p[i].q, p[i].a, &ids, &e->n_ids, &e->n_prompt);
        if (rc) {
            free(lead);
            mn_error_prefix(rc, where);
            break;
        }
        if (d) {
            q->n_docs += !seen[p[i].doc], seen[p[i].doc] = 1;
            e->kv = mem->kind == MN_DOCMEM_KV;
            if (mem->n_head > 0 && mem->n_slots > 0) {
                free(ids);
                rc = mn_error(MN_EUNSUPPORTED, "%s: its memory keeps %d raw tokens ahead of its slots (an adapter "
                              "with sinks); fine-tuning over such memories is not supported yet", where, mem->n_head);
                break;
            }
            e->n_mem = mem->n_slots;
            e->k = mem->k, e->v = mem->v;
        }
        /* a memory's raw tokens follow its slots, as answering primes them; a passage is all raw: either
         * leads the prompt (read, not scored) */
        const int32_t *raw = d ? mem->raw : lead;
        const int64_t n_raw = d ? mem->n_raw : n_lead;
        if (n_raw > 0) {
            int32_t *all = n_raw + e->n_ids > INT32_MAX ? NULL
                                                        : malloc(sizeof(int32_t) * ((size_t)n_raw + (size_t)e->n_ids));
            if (all) {
                memcpy(all, raw, sizeof(int32_t) * (size_t)n_raw);
                memcpy(all + n_raw, ids, sizeof(int32_t) * (size_t)e->n_ids);
                e->n_ids += (int32_t)n_raw, e->n_prompt += (int32_t)n_raw;
            }
            free(ids), free(lead);
            ids = all;
            if (!all) {
                rc = mn_error(MN_ENOMEM, "out of memory");
                break;
            }
        }
        e->ids = ids;
        q->ctx[i] = p[i].ctx, p[i].ctx = NULL; /* kept: the passages are also the group's texts */
        if ((int64_t)e->n_mem + e->n_ids > n_ctx)
            rc = mn_error(MN_EINVAL, "%s:%d: the memory (%d slots) and the question and answer (%d tokens) exceed the "
                          "model's context of %lld", path, p[i].line, e->n_mem, e->n_ids, (long long)n_ctx);
    }
    for (int32_t i = 0; i < n; i++) free(p[i].q), free(p[i].a), free(p[i].ctx);
    free(p);
    free(docs);
    free(seen);
    if (rc) {
        mn_qaset_free(q);
        return rc;
    }
    *out = q;
    return MN_OK;
}
