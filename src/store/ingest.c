/* ingest.c - document ingestion (see ingest.h). */
#include "store/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "utf8.h"
#include "memory/docmem.h"
#include "memory/memfile.h"
#include "memory/memory.h"
#include "store/answer.h"
#include "store/embed.h"
#include "store/sha256.h"

static void lock(pthread_mutex_t *l) {
    if (l) pthread_mutex_lock(l);
}
static void unlock(pthread_mutex_t *l) {
    if (l) pthread_mutex_unlock(l);
}

void mn_ingest_mem_name(const char *sha256, uint64_t adapter_hash, char *out, size_t cap) {
    static _Atomic uint32_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* pid, clock and a counter, mixed (splitmix64's finaliser) */
    uint64_t z = (uint64_t)getpid() << 40 ^ (uint64_t)ts.tv_sec << 20 ^ (uint64_t)ts.tv_nsec ^
                 (uint64_t)atomic_fetch_add(&counter, 1) << 52;
    z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ z >> 27) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    snprintf(out, cap, "%.64s-%016llx-%08x.mem", sha256, (unsigned long long)adapter_hash, (unsigned)(z >> 32));
}

int mn_ingest_bind_model(mn_store *s, const mn_model *m) {
    char want[32], have[64];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)mn_model_hash(m));
    int rc = mn_store_meta_get(s, "model_hash", have, sizeof have);
    if (rc == MN_ENOTFOUND) {
        if ((rc = mn_store_meta_set(s, "model_hash", want))) return rc;
        return mn_store_meta_set(s, "model_name", mn_model_name(m));
    }
    if (rc) return rc;
    if (strcmp(have, want)) {
        char name[128] = "?";
        mn_store_meta_get(s, "model_name", name, sizeof name);
        return mn_error(MN_EINVAL, "the store was built with model '%s' (hash %s); this model '%s' has hash %s", name,
                        have, mn_model_name(m), want);
    }
    return 0;
}

/* Byte length of the text tokens ids[0..n) decode to. */
static size_t text_len(const mn_tokenizer *tok, const int32_t *ids, int64_t n) {
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t l = 0;
        mn_token_piece(tok, ids[i], 0, &l);
        total += l;
    }
    return total;
}

/* Chunks: MN_EMBED_CHUNK tokens each; their texts are cut from the original
 * text at the matching byte offsets, moved to the next UTF-8 character start,
 * so the chunks are valid UTF-8 and concatenate to exactly the document. */
typedef struct {
    int32_t n;
    int64_t *tok0;  /* (n + 1) token boundaries */
    char **text;    /* (n) */
} chunks;

static void chunks_free(chunks *c) {
    for (int32_t i = 0; c->text && i < c->n; i++) free(c->text[i]);
    free(c->text);
    free(c->tok0);
    memset(c, 0, sizeof *c);
}

static int make_chunks(const mn_tokenizer *tok, const char *text, size_t len, const int32_t *ids, int64_t n,
                       chunks *c) {
    memset(c, 0, sizeof *c);
    c->n = (int32_t)((n + MN_EMBED_CHUNK - 1) / MN_EMBED_CHUNK);
    c->tok0 = malloc(sizeof(int64_t) * (size_t)(c->n + 1));
    c->text = calloc((size_t)c->n, sizeof(char *));
    if (!c->tok0 || !c->text) return mn_error(MN_ENOMEM, "out of memory");
    size_t prev = 0;
    for (int32_t i = 0; i < c->n; i++) {
        c->tok0[i] = (int64_t)i * MN_EMBED_CHUNK;
        int64_t t1 = c->tok0[i] + MN_EMBED_CHUNK < n ? c->tok0[i] + MN_EMBED_CHUNK : n;
        size_t cut = i + 1 == c->n ? len : prev + text_len(tok, ids + c->tok0[i], t1 - c->tok0[i]);
        if (cut > len) cut = len;
        while (cut < len && ((unsigned char)text[cut] & 0xC0) == 0x80) cut++;
        if (!(c->text[i] = malloc(cut - prev + 1))) return mn_error(MN_ENOMEM, "out of memory");
        memcpy(c->text[i], text + prev, cut - prev);
        c->text[i][cut - prev] = 0;
        prev = cut;
    }
    c->tok0[c->n] = n;
    return 0;
}

static int tokenize(const mn_tokenizer *tok, const char *text, size_t len, int32_t **ids, int64_t *n) {
    int64_t cap = (int64_t)len + 16, got = 0;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (!buf) return mn_error(MN_ENOMEM, "out of memory tokenizing %zu bytes", len);
    int rc = mn_tokenize(tok, text, len, 0, 0, buf, cap, &got);
    if (rc == MN_ERANGE && got > cap) {
        int32_t *nb = realloc(buf, sizeof(int32_t) * (size_t)got);
        if (!nb) {
            free(buf);
            return mn_error(MN_ENOMEM, "out of memory tokenizing %zu bytes", len);
        }
        buf = nb;
        rc = mn_tokenize(tok, text, len, 0, 0, buf, got, &got);
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *ids = buf;
    *n = got;
    return 0;
}

int mn_ingest(mn_store *s, pthread_mutex_t *store_lock, const mn_model *m, const mn_adapter *a,
              const mn_ingest_doc *doc, int n_threads, mn_ingest_result *out) {
    const double t0 = mn_answer_now();
    memset(out, 0, sizeof *out);
    if (!doc || !doc->text) return mn_error(MN_EINVAL, "ingest: no document");
    /* what the store keeps as chunk text must read back as it was given, on every backend */
    const int64_t bad = mn_utf8_invalid_at(doc->text, doc->len);
    if (bad >= 0)
        return mn_error(MN_EINVAL,
                        "document '%s' is not UTF-8 text (byte 0x%02x at offset %lld); convert it first (e.g. "
                        "iconv -f latin1 -t utf-8)",
                        doc->title ? doc->title : "", (unsigned char)doc->text[bad], (long long)bad);
    const uint64_t ah = mn_adapter_hash(a);
    char sha[65], name[MN_STORE_NAME_CAP];
    mn_sha256_hex(doc->text, doc->len, sha);
    mn_ingest_mem_name(sha, ah, name, sizeof name);

    lock(store_lock);
    int64_t id = 0;
    mn_store_doc have;
    int rc = mn_ingest_bind_model(s, m);
    if (!rc) rc = mn_store_find_sha(s, sha, &id);
    if (rc == 0) rc = mn_store_get(s, id, ah, &have);
    unlock(store_lock);
    if (rc == 0 && have.n_slots >= 0) {
        out->id = id;
        out->existed = 1;
        out->n_tokens = have.n_tokens;
        mn_store_mem_parts parts;
        lock(store_lock);
        mn_store_doc_parts(s, &have, &parts); /* unknown parts stay -1, the recorded cells stand */
        unlock(store_lock);
        out->n_slots = parts.slots, out->n_raw = parts.raw, out->n_exact = parts.exact, out->n_cells = parts.cells;
        out->exact_kv = parts.exact_kv;
        out->n_chunks = (int32_t)have.n_chunks;
        out->mem_bytes = have.mem_bytes;
        out->seconds = mn_answer_now() - t0;
        return 0;
    }
    if (rc && rc != MN_ENOTFOUND) return rc;

    const mn_tokenizer *tok = mn_model_tokenizer(m);
    int32_t *ids = NULL;
    int64_t n = 0;
    chunks ch = {0};
    float *vec = NULL;
    mn_context *ec = NULL;
    mn_docmem mem;
    memset(&mem, 0, sizeof mem);
    char path[MN_STORE_PATH_CAP];
    snprintf(path, sizeof path, "%s/%s", mn_store_mem_dir(s), name);
    if ((rc = tokenize(tok, doc->text, doc->len, &ids, &n))) goto done;
    if (n == 0) {
        rc = mn_error(MN_EINVAL, "document '%s' has no text to compress", doc->title ? doc->title : "");
        goto done;
    }
    if ((rc = make_chunks(tok, doc->text, doc->len, ids, n, &ch))) goto done;
    const int32_t C = mn_model_n_embd(m);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = MN_EMBED_CHUNK;
    cp.n_batch = MN_EMBED_CHUNK;
    cp.n_threads = n_threads;
    if (!(vec = malloc(sizeof(float) * (size_t)ch.n * (size_t)C))) {
        rc = mn_error(MN_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = mn_context_create(m, &cp, &ec))) goto done;
    for (int32_t i = 0; i < ch.n && !rc; i++)
        rc = mn_embed_tokens(ec, ids + ch.tok0[i], (int32_t)(ch.tok0[i + 1] - ch.tok0[i]), vec + (size_t)i * C);
    mn_context_free(ec);
    ec = NULL;
    if (rc) goto done;
    /* the memory reads the document as the compressor was trained on it: BOS first where the vocabulary wants one */
    const int32_t bos = mn_token_bos(tok);
    if (mn_tokenizer_adds_bos(tok) && bos >= 0) {
        int32_t *nb = realloc(ids, sizeof(int32_t) * (size_t)(n + 1));
        if (!nb) {
            rc = mn_error(MN_ENOMEM, "out of memory");
            goto done;
        }
        ids = nb;
        memmove(ids + 1, ids, sizeof(int32_t) * (size_t)n);
        ids[0] = bos;
        n++;
    }
    if ((rc = mn_docmem_compress(m, a, ids, n, n_threads, &mem))) goto done;
    if (doc->exact_kv && mem.n_exact > 0 && (rc = mn_docmem_add_cells(m, a, &mem, n_threads))) goto done;
    if ((rc = mn_docmem_save_titled(&mem, m, a, path, 0, doc->title))) goto done;
    mn_memfile *mf = NULL;
    if ((rc = mn_memfile_open(path, &mf))) goto done;
    uint64_t checksum = mn_memfile_get_info(mf)->checksum;
    mn_memfile_free(mf);
    struct stat stt;
    int64_t bytes = stat(path, &stt) == 0 ? (int64_t)stt.st_size : 0;
    mn_store_new_doc nd = {0};
    nd.title = doc->title ? doc->title : "";
    nd.source = doc->source ? doc->source : "";
    nd.sha256 = sha;
    nd.group = doc->group;
    nd.n_tokens = mem.n_tokens;
    nd.n_chunks = ch.n;
    nd.chunk_text = (const char *const *)ch.text;
    nd.chunk_vec = vec;
    nd.dim = C;
    nd.adapter_hash = ah;
    nd.mem_file = name;
    nd.n_slots = (int32_t)mn_docmem_cells(&mem); /* what it takes in a context: slots and raw tokens */
    nd.mem_bytes = bytes;
    nd.mem_checksum = checksum;
    int existed = 0;
    lock(store_lock);
    rc = mn_store_add(s, &nd, &id, &existed);
    unlock(store_lock);
    if (rc) goto done; /* the file stays for mn_store_gc */
    if (existed) {
        /* another ingest of this text committed first (another server, or a
         * thread of this one): ours is a spare unless it was recorded as the
         * memory the document lacked */
        lock(store_lock);
        int grc = mn_store_get(s, id, ah, &have);
        unlock(store_lock);
        if (grc == 0 && strcmp(have.mem_file, name)) {
            unlink(path);
            bytes = have.mem_bytes;
        }
    }
    out->id = id;
    out->existed = existed;
    out->n_tokens = mem.n_tokens;
    out->n_slots = mem.n_slots;
    out->n_raw = mem.n_raw;
    out->n_exact = mem.n_exact;
    out->exact_kv = mem.cells != NULL;
    out->n_cells = mn_docmem_cells(&mem);
    out->n_chunks = ch.n;
    out->mem_bytes = bytes;
done:
    out->seconds = mn_answer_now() - t0;
    mn_context_free(ec);
    mn_docmem_release(&mem);
    chunks_free(&ch);
    free(vec);
    free(ids);
    return rc;
}
