/* test_docmem.c - one document-memory API for every compressor (memory/docmem.h).
 *
 * On a tiny random model (tests/tiny_model.h), for UIO, Activation Beacon
 * (interleave and append) and summary adapters:
 * - compress -> save (f32) -> load -> prime gives bit-identical logits to
 *   compress -> prime; f16 files stay close;
 * - compression on 1 and 3 threads gives identical memories;
 * - a truncated or corrupted file, another adapter, another model, a memory
 *   of another kind: each a clear error;
 * - two memories primed in order occupy consecutive positions, the second's
 *   cells exactly where it would be placed alone after the first;
 * - a UIO adapter with a recent window keeps the sinks and the last segments
 *   raw: the question reads [sinks | memory | recent raw | question] exactly
 *   as a memory stream reading the document does (the trained layout), through
 *   a file too (version 2); a short document stays raw entirely.
 */
#include <stdint.h>
#include <stdio.h>

#include "memory/adapter.h"
#include "memory/docmem.h"
#include "memory/memfile.h"
#include "memory/memory.h"
#include "model/forward.h"
#include "tiny_model.h"

static int32_t doc[150];

static mn_adapter *make_adapter(const mn_model *m, mn_compressor kind, mn_beacon_placement place, uint64_t seed) {
    mn_adapter_params p = mn_adapter_default_params(kind);
    p.segment = 16;
    p.ratio = 4;
    p.seed = seed;
    if (kind != MN_COMP_BEACON) {
        p.rank = 4;
        p.alpha = 8;
    } else {
        p.placement = place;
        p.attend_prev = seed == 1; /* beacon adapters differ by configuration, not by a seed */
        p.sinks = 2;
        p.n_ratios = 2;
        p.ratios[0] = 2;
        p.ratios[1] = 4;
    }
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "adapter init: %s", mn_last_error());
    return a;
}

/* Places memory d's newest keep slots by hand at the context's next positions. */
static void place_newest(mn_context *c, const mn_docmem *d, int32_t keep) {
    const int32_t first = d->n_slots - keep;
    if (d->kind != MN_DOCMEM_KV) {
        mn_decode_embd(c, d->k + (size_t)first * d->dim, keep, NULL, 0);
        return;
    }
    const size_t D = (size_t)d->dim, e = (size_t)d->n_layer * (size_t)keep * D;
    float *k = malloc(sizeof(float) * e), *v = malloc(sizeof(float) * e);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)keep);
    for (int32_t l = 0; l < d->n_layer; l++)
        for (int32_t j = 0; j < keep; j++) {
            const size_t to = ((size_t)l * keep + j) * D, from = ((size_t)l * d->n_slots + first + j) * D;
            memcpy(k + to, d->k + from, sizeof(float) * D);
            memcpy(v + to, d->v + from, sizeof(float) * D);
        }
    for (int32_t j = 0; j < keep; j++) pos[j] = mn_kv_next_pos(c) + j;
    mn_kv_append(c, keep, pos, k, v, 0);
    free(k), free(v), free(pos);
}

/* Two memories that do not fit the (empty, small) context c, primed with fit:
 * the one that holds the most gives up its oldest slots first, the newest are
 * kept exactly where placing them by hand puts them, reserve cells stay free,
 * and the count left out is reported. */
static void fit_newest(const mn_model *m, const mn_adapter *a, mn_context *c, const mn_docmem *d1, const mn_docmem *d2,
                       const char *name) {
    CHECK(d1->n_raw == 0 && d2->n_raw == 0, "%s: the fit check expects memories without raw tokens", name);
    const mn_docmem *two[2] = {d1, d2};
    mn_recall_opts fit = mn_recall_default_opts(0);
    fit.fit = 1, fit.reserve = 2;
    const int32_t budget = mn_context_n_ctx(c) - fit.reserve;
    int32_t cap = d1->n_slots > d2->n_slots ? d1->n_slots : d2->n_slots;
    while (cap > 0 && (d1->n_slots < cap ? d1->n_slots : cap) + (d2->n_slots < cap ? d2->n_slots : cap) > budget) cap--;
    const int32_t k1 = d1->n_slots < cap ? d1->n_slots : cap, k2 = d2->n_slots < cap ? d2->n_slots : cap;
    mn_docmem_paged pg;
    CHECK(mn_docmem_prime_recall(c, a, two, 2, &fit, NULL, 0, NULL, &pg) == 0, "%s: fit: %s", name, mn_last_error());
    CHECK(k1 < d1->n_slots && mn_kv_n_cells(c) == k1 + k2 && pg.slots_out == d1->n_slots + d2->n_slots - k1 - k2 &&
              mn_kv_n_cells(c) <= budget,
          "%s: fit keeps %d + %d of %d + %d slots: %d cells, %lld left out", name, k1, k2, d1->n_slots, d2->n_slots,
          mn_kv_n_cells(c), (long long)pg.slots_out);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = mn_context_n_ctx(c);
    mn_context *h = NULL;
    CHECK(mn_context_create(m, &cp, &h) == 0, "context");
    place_newest(h, d1, k1);
    place_newest(h, d2, k2);
    const int32_t n = mn_kv_n_cells(c);
    CHECK(mn_kv_n_cells(h) == n, "%s: cells placed by hand", name);
    float *ka = malloc(sizeof(float) * (size_t)TM_L * n * TM_KD), *kb = malloc(sizeof(float) * (size_t)TM_L * n * TM_KD);
    mn_kv_read(c, 0, n, ka, NULL);
    mn_kv_read(h, 0, n, kb, NULL);
    int same = !memcmp(ka, kb, sizeof(float) * (size_t)TM_L * n * TM_KD);
    for (int32_t j = 0; j < n && same; j++) same = mn_kv_pos(c, j) == j;
    CHECK(same, "%s: fit keeps the newest slots at consecutive positions", name);
    free(ka), free(kb);
    mn_context_free(h);
    /* room for the reserve alone: nothing but an error, and an empty context */
    fit.reserve = mn_context_n_ctx(c) + 1;
    mn_kv_clear(c);
    CHECK(mn_docmem_prime_recall(c, a, two, 2, &fit, NULL, 0, NULL, &pg) == MN_ERANGE && mn_kv_n_cells(c) == 0,
          "%s: fit with no room: %s", name, mn_last_error());
}

/* Primes mems into a fresh context, decodes a few question tokens, returns logits (V). */
static int answer(const mn_model *m, const mn_adapter *a, const mn_docmem *const *mems, int n, float *logits) {
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 400;
    cp.n_threads = 2;
    mn_context *c;
    if (mn_context_create(m, &cp, &c)) return -1;
    int32_t q[5] = {81, 117, 101, 63, 10}, p0 = -1;
    int rc = mn_docmem_prime(c, a, mems, n, &p0);
    if (!rc && p0 != mn_kv_next_pos(c)) rc = -99;
    if (!rc) rc = mn_decode(c, q, 5, logits, 0);
    mn_context_free(c);
    return rc;
}

static void run_kind(const mn_model *m, const mn_model *m2, mn_compressor kind, mn_beacon_placement place) {
    const char *name = kind == MN_COMP_BEACON ? (place == MN_PLACE_APPEND ? "beacon/append" : "beacon/interleave")
                                               : mn_compressor_name(kind);
    printf("  %s\n", name);
    mn_adapter *a = make_adapter(m, kind, place, 1), *a_other = make_adapter(m, kind, place, 2);
    mn_docmem d1, d3;
    CHECK(mn_docmem_compress(m, a, doc, 150, 1, &d1) == 0, "%s: compress: %s", name, mn_last_error());
    CHECK(mn_docmem_compress(m, a, doc, 150, 3, &d3) == 0, "%s: compress 3 threads", name);
    /* slots: uio/summary 9 full segments x 4 + ceil(6/4); beacon: 2 sinks + the same */
    int32_t want = 9 * 4 + 2 + (kind == MN_COMP_BEACON ? 2 : 0);
    CHECK(d1.n_slots == want && d1.n_tokens == 150, "%s: %d slots, expected %d", name, d1.n_slots, want);
    CHECK(d1.kind == (kind == MN_COMP_SUMMARY ? MN_DOCMEM_EMBD : MN_DOCMEM_KV), "%s: kind", name);
    size_t e = (size_t)d1.n_layer * (size_t)d1.n_slots * (size_t)d1.dim;
    CHECK(d3.n_slots == d1.n_slots && !memcmp(d1.k, d3.k, sizeof(float) * e) &&
              (!d1.v || !memcmp(d1.v, d3.v, sizeof(float) * e)),
          "%s: 3-thread compression differs from 1 thread", name);

    const int32_t V = mn_model_n_vocab(m);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    const mn_docmem *one[1] = {&d1};
    CHECK(answer(m, a, one, 1, l1) == 0, "%s: prime + decode: %s", name, mn_last_error());
    char path[] = "/tmp/mnemo-docmem-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(mn_docmem_save(&d1, m, a, path, 1) == 0, "%s: save: %s", name, mn_last_error());
    mn_docmem dl;
    CHECK(mn_docmem_load(path, m, a, &dl) == 0, "%s: load: %s", name, mn_last_error());
    const mn_docmem *loaded[1] = {&dl};
    CHECK(dl.n_slots == d1.n_slots && dl.n_tokens == 150 && answer(m, a, loaded, 1, l2) == 0, "%s: loaded prime", name);
    CHECK(!memcmp(l1, l2, sizeof(float) * V), "%s: f32 file gives other logits than the memory it saved", name);
    mn_docmem_release(&dl);
    /* f16 (the default) stays close */
    CHECK(mn_docmem_save(&d1, m, a, path, 0) == 0 && mn_docmem_load(path, m, a, &dl) == 0, "%s: f16 round trip", name);
    answer(m, a, loaded, 1, l2);
    double mx = 0, d = 0;
    for (int32_t i = 0; i < V; i++) mx = fmax(mx, fabs(l1[i])), d = fmax(d, fabs(l1[i] - l2[i]));
    CHECK(d / mx < 2e-2, "%s: f16 file logits differ by %.3g", name, d / mx);
    mn_docmem_release(&dl);

    /* wrong adapter, wrong model, damaged files */
    mn_docmem_save(&d1, m, a, path, 0);
    CHECK(mn_docmem_load(path, m, a_other, &dl) == MN_EINVAL && strstr(mn_last_error(), "adapter"),
          "%s: other adapter: %s", name, mn_last_error());
    mn_adapter *a2 = make_adapter(m2, kind, place, 1);
    CHECK(mn_docmem_load(path, m2, a2, &dl) == MN_EINVAL && strstr(mn_last_error(), "model"), "%s: other model: %s",
          name, mn_last_error());
    mn_adapter_free(a2);
    FILE *f = fopen(path, "r+b");
    fseek(f, 600, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 600, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    CHECK(mn_docmem_load(path, m, a, &dl) != 0 && strstr(mn_last_error(), "checksum") && strstr(mn_last_error(), path),
          "%s: corrupted: %s", name, mn_last_error());
    mn_docmem_save(&d1, m, a, path, 0);
    CHECK(truncate(path, 700) == 0, "truncate");
    CHECK(mn_docmem_load(path, m, a, &dl) != 0 && strstr(mn_last_error(), path), "%s: truncated: %s", name,
          mn_last_error());
    CHECK(dl.k == NULL && dl.n_slots == 0, "%s: failed load leaves an empty memory", name);
    unlink(path);

    /* two memories in order: consecutive positions; the second lands where it would alone */
    mn_docmem d2;
    CHECK(mn_docmem_compress(m, a, doc + 50, 40, 2, &d2) == 0, "%s: second doc", name);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 400;
    mn_context *c, *c2;
    mn_context_create(m, &cp, &c);
    mn_context_create(m, &cp, &c2);
    const mn_docmem *two[2] = {&d1, &d2};
    int32_t p0 = -1;
    CHECK(mn_docmem_prime(c, a, two, 2, &p0) == 0 && p0 == d1.n_slots + d2.n_slots, "%s: prime two: %d", name, p0);
    int contiguous = mn_kv_n_cells(c) == d1.n_slots + d2.n_slots;
    for (int32_t j = 0; j < mn_kv_n_cells(c) && contiguous; j++) contiguous = mn_kv_pos(c, j) == j;
    CHECK(contiguous, "%s: two memories at consecutive positions", name);
    /* the same second memory after the first, placed by hand */
    mn_docmem_prime(c2, a, one, 1, NULL);
    if (d2.kind == MN_DOCMEM_KV) {
        int32_t *pos = malloc(sizeof(int32_t) * d2.n_slots);
        for (int32_t j = 0; j < d2.n_slots; j++) pos[j] = d1.n_slots + j;
        mn_kv_append(c2, d2.n_slots, pos, d2.k, d2.v, 0);
        free(pos);
    } else {
        mn_decode_embd(c2, d2.k, d2.n_slots, NULL, 0);
    }
    size_t ce = (size_t)TM_L * (size_t)mn_kv_n_cells(c) * TM_KD;
    float *ka = malloc(sizeof(float) * ce), *kb = malloc(sizeof(float) * ce);
    CHECK(mn_kv_n_cells(c2) == mn_kv_n_cells(c), "%s: cells", name);
    mn_kv_read(c, 0, mn_kv_n_cells(c), ka, NULL);
    mn_kv_read(c2, 0, mn_kv_n_cells(c), kb, NULL);
    CHECK(!memcmp(ka, kb, sizeof(float) * ce), "%s: second memory not where it belongs", name);
    free(ka), free(kb);
    /* too small a context */
    mn_context_free(c);
    cp.n_ctx = d1.n_slots + 1;
    mn_context_create(m, &cp, &c);
    CHECK(mn_docmem_prime(c, a, two, 2, NULL) == MN_ERANGE && mn_kv_n_cells(c) == 0, "%s: does not fit", name);
    fit_newest(m, a, c, &d1, &d2, name);
    mn_context_free(c);
    mn_context_free(c2);
    mn_docmem_release(&d2);

    free(l1), free(l2);
    mn_docmem_release(&d1);
    mn_docmem_release(&d3);
    mn_adapter_free(a);
    mn_adapter_free(a_other);
}

/* Logits after question q read by a memory stream over doc[0..n) + q, with
 * the adapter's own binding, as `ask --doc` reads. */
static int stream_answer(const mn_model *m, const mn_adapter *a, int32_t n, const int32_t *q, int nq, float *logits) {
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 400, cp.n_threads = 1;
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY, sp.n_sinks = MN_DOCMEM_SINKS;
    mn_memory_binding b;
    mn_context *c = NULL;
    mn_stream *s = NULL;
    int rc = mn_memory_bind(m, a, &b);
    if (rc) return rc;
    if (!(rc = mn_context_create(m, &cp, &c)) && !(rc = mn_stream_create(c, &sp, &s)) &&
        !(rc = mn_stream_attach(s, &b, 1)) && !(rc = mn_stream_feed(s, doc, n, NULL, 0)))
        rc = mn_stream_feed(s, q, nq, logits, 0);
    mn_stream_free(s);
    mn_context_free(c);
    mn_memory_unbind(&b);
    return rc;
}

static void run_recent(const mn_model *m) {
    printf("  uio, recent window of 1 segment\n");
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    p.segment = 16, p.ratio = 4, p.seed = 3, p.rank = 4, p.alpha = 8, p.recent = 1;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &p, &a) == 0, "adapter init: %s", mn_last_error());
    if (!a) return;
    const int32_t V = mn_model_n_vocab(m), q[5] = {81, 117, 101, 63, 10};
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    /* 150 tokens = 9 segments + 6: segments 0..7 compressed, 4 sinks, segment 8 and the 6 raw */
    mn_docmem d, dl;
    CHECK(mn_docmem_compress(m, a, doc, 150, 2, &d) == 0, "compress: %s", mn_last_error());
    CHECK(d.n_slots == 8 * 4 && d.n_head == 4 && d.n_raw == 4 + 22 && d.n_tokens == 150 &&
              mn_docmem_cells(&d) == 32 + 26,
          "layout: %d slots, %d raw (%d leading)", d.n_slots, d.n_raw, d.n_head);
    CHECK(d.raw && !memcmp(d.raw, doc, 4 * sizeof(int32_t)) && !memcmp(d.raw + 4, doc + 128, 22 * sizeof(int32_t)),
          "raw tokens are the sinks and the tail");
    const mn_docmem *one[1] = {&d};
    CHECK(answer(m, a, one, 1, l1) == 0 && stream_answer(m, a, 150, q, 5, l2) == 0, "answers: %s", mn_last_error());
    double mx = 0, df = 0;
    for (int32_t i = 0; i < V; i++) mx = fmax(mx, fabs(l1[i])), df = fmax(df, fabs(l1[i] - l2[i]));
    CHECK(df <= 1e-4 * mx, "memory vs stream reading the document: logits differ by %.3g (max %.3g)", df, mx);
    /* through a file: version 2 (3 with recall's exact part), the same logits */
    char path[] = "/tmp/mnemo-docmem-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(mn_docmem_save(&d, m, a, path, 1) == 0 && mn_docmem_load(path, m, a, &dl) == 0, "round trip: %s",
          mn_last_error());
    mn_memfile *mf = NULL;
    CHECK(mn_memfile_open(path, &mf) == 0 && mn_memfile_get_info(mf)->n_raw == 26, "file keeps the raw tokens");
    mn_memfile_free(mf);
    FILE *f = fopen(path, "rb");
    unsigned char hdr[12] = {0};
    CHECK(f && fread(hdr, 1, 12, f) == 12 && hdr[8] == (d.n_exact ? 3 : 2),
          "a file with raw tokens is version 2, 3 with an exact part (%d, %d exact)", hdr[8], d.n_exact);
    if (f) fclose(f);
    const mn_docmem *loaded[1] = {&dl};
    CHECK(dl.n_raw == d.n_raw && dl.n_head == 4 && !memcmp(dl.raw, d.raw, sizeof(int32_t) * 26) &&
              answer(m, a, loaded, 1, l2) == 0 && !memcmp(l1, l2, sizeof(float) * V),
          "loaded memory answers as the one saved");
    mn_docmem_release(&dl);
    /* a memory without raw tokens is still written as version 1 */
    mn_adapter *a0 = make_adapter(m, MN_COMP_UIO, 0, 1);
    mn_docmem d0;
    CHECK(mn_docmem_compress(m, a0, doc, 40, 1, &d0) == 0 && d0.n_raw == 0 && mn_docmem_save(&d0, m, a0, path, 0) == 0,
          "plain memory: %s", mn_last_error());
    f = fopen(path, "rb");
    CHECK(f && fread(hdr, 1, 12, f) == 12 && hdr[8] == 1, "a file without raw tokens stays version 1 (%d)", hdr[8]);
    if (f) fclose(f);
    mn_docmem_release(&d0);
    mn_adapter_free(a0);
    unlink(path);
    mn_docmem_release(&d);
    /* at most R + 1 segments: nothing to compress, the document is read raw */
    CHECK(mn_docmem_compress(m, a, doc, 30, 1, &d) == 0 && d.n_slots == 0 && d.n_raw == 30 && d.n_head == 0,
          "short document: %d slots, %d raw", d.n_slots, d.n_raw);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 64, cp.n_threads = 1;
    mn_context *c = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    int32_t all[35];
    memcpy(all, doc, 30 * sizeof(int32_t));
    memcpy(all + 30, q, 5 * sizeof(int32_t));
    CHECK(mn_decode(c, all, 35, l2, 0) == 0 && answer(m, a, one, 1, l1) == 0, "plain read: %s", mn_last_error());
    CHECK(!memcmp(l1, l2, sizeof(float) * V), "a short document's memory is the plain model reading it");
    mn_context_free(c);
    mn_docmem_release(&d);
    free(l1), free(l2);
    mn_adapter_free(a);
}

/* Re-selection while answering (recall.every): the same choice leaves the
 * context as it is; an answer that moves the choice primes the context again,
 * which then equals a fresh prime for the new query followed by the prompt and
 * the answer so far, logits bit for bit. Every id of doc occurs once, so BM25
 * over the query's ids picks the segment holding most of them. */
static void run_reselect(const mn_model *m) {
    printf("  uio, re-selection while answering\n");
    mn_adapter_params p = mn_adapter_default_params(MN_COMP_UIO);
    p.segment = 16, p.ratio = 4, p.seed = 3, p.rank = 4, p.alpha = 8, p.recent = 1;
    mn_adapter *a = NULL;
    mn_docmem d;
    CHECK(mn_adapter_init(m, &p, &a) == 0 && mn_docmem_compress(m, a, doc, 150, 2, &d) == 0 && d.n_exact == 128,
          "memory with an exact part: %s", mn_last_error());
    if (!a) return;
    const mn_docmem *one[1] = {&d};
    mn_recall_opts ro = mn_recall_default_opts(1);
    ro.scorer = MN_RECALL_BM25, ro.local = 0, ro.every = 4;
    /* the question holds 4 ids of segment 1; the answer so far 12 ids of segment 5 */
    int32_t qa[16], all[17] = {81, 117, 101, 63, 10};
    memcpy(qa, doc + 20, sizeof(int32_t) * 4);
    memcpy(qa + 4, doc + 84, sizeof(int32_t) * 12);
    memcpy(all + 5, doc + 84, sizeof(int32_t) * 12);
    const int32_t V = mn_model_n_vocab(m);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 128, cp.n_threads = 1;
    mn_context *c = NULL, *f = NULL;
    CHECK(mn_context_create(m, &cp, &c) == 0 && mn_context_create(m, &cp, &f) == 0, "contexts");
    mn_docmem_paged pg, fresh;
    CHECK(mn_docmem_prime_recall(c, a, one, 1, &ro, qa, 4, NULL, &pg) == 0 && pg.n == 1 && pg.start[0] == 16,
          "the question pages segment 1 (%d paged, from %lld)", pg.n, pg.n ? (long long)pg.start[0] : -1LL);
    CHECK(mn_decode(c, all, 5, l1, 0) == 0, "prompt");
    int changed = -1;
    const int32_t cells = mn_kv_n_cells(c);
    CHECK(mn_docmem_reselect(c, a, one, 1, &ro, qa, 4, all, 5, l1, &pg, &changed) == 0 && changed == 0 &&
              mn_kv_n_cells(c) == cells && pg.start[0] == 16,
          "the same query changes nothing (%d, %d cells)", changed, mn_kv_n_cells(c));
    mn_docmem_paged ch;
    CHECK(mn_docmem_recall_choice(m, one, 1, &ro, qa, 16, &ch) == 0 && ch.n == 1 && ch.start[0] == 80,
          "the answer moves the choice to segment 5 (%lld)", ch.n ? (long long)ch.start[0] : -1LL);
    /* the answer's tokens read but the last, which re-selection reads with the rest */
    CHECK(mn_decode(c, all + 5, 11, NULL, 0) == 0, "answer so far");
    CHECK(mn_docmem_reselect(c, a, one, 1, &ro, qa, 16, all, 17, l1, &pg, &changed) == 0 && changed == 1 &&
              pg.n == 1 && pg.start[0] == 80,
          "re-selection pages segment 5 (%d, from %lld): %s", changed, pg.n ? (long long)pg.start[0] : -1LL,
          mn_last_error());
    CHECK(mn_docmem_prime_recall(f, a, one, 1, &ro, qa, 16, NULL, &fresh) == 0 && mn_decode(f, all, 17, l2, 0) == 0,
          "fresh prime: %s", mn_last_error());
    CHECK(mn_kv_n_cells(c) == mn_kv_n_cells(f) && !memcmp(l1, l2, sizeof(float) * V),
          "after re-selection the context reads as a fresh prime for the new query (%d, %d cells)", mn_kv_n_cells(c),
          mn_kv_n_cells(f));
    /* a paged segment's ids: from the exact part, or from the raw tail (tokens 128..150 here) */
    const int32_t *e = mn_docmem_ids_at(&d, 80, 16), *t = mn_docmem_ids_at(&d, 130, 16);
    CHECK(e && !memcmp(e, doc + 80, sizeof(int32_t) * 16) && t && !memcmp(t, doc + 130, sizeof(int32_t) * 16) &&
              !mn_docmem_ids_at(&d, 140, 16) && !mn_docmem_ids_at(&d, -1, 4),
          "ids of paged segments, and none outside the document");
    /* the key scorers choose with the context: no choice without one, and re-selection leaves them be */
    ro.scorer = MN_RECALL_KEYS;
    CHECK(mn_docmem_recall_choice(m, one, 1, &ro, qa, 16, &ch) == MN_EUNSUPPORTED, "keys need a context");
    CHECK(mn_docmem_reselect(c, a, one, 1, &ro, qa, 4, all, 17, l1, &pg, &changed) == 0 && changed == 0 &&
              pg.start[0] == 80,
          "re-selection with a key scorer keeps the choice");
    mn_context_free(c), mn_context_free(f);
    free(l1), free(l2);
    mn_docmem_release(&d);
    mn_adapter_free(a);
}

int main(void) {
    char p1[64], p2[64];
    tm_weights w1, w2;
    CHECK(tm_write(1, p1, &w1) == 0 && tm_write(2, p2, &w2) == 0, "write tiny models");
    mn_model *m, *m2;
    CHECK(mn_model_load(p1, &m) == 0 && mn_model_load(p2, &m2) == 0, "load: %s", mn_last_error());
    for (int i = 0; i < 150; i++) doc[i] = 32 + (i * 37) % 200;
    run_kind(m, m2, MN_COMP_UIO, 0);
    run_kind(m, m2, MN_COMP_BEACON, MN_PLACE_INTERLEAVE);
    run_kind(m, m2, MN_COMP_BEACON, MN_PLACE_APPEND);
    run_kind(m, m2, MN_COMP_SUMMARY, 0);
    run_recent(m);
    run_reselect(m);

    /* a memory of another kind than the adapter's */
    mn_adapter *au = make_adapter(m, MN_COMP_UIO, 0, 1), *as = make_adapter(m, MN_COMP_SUMMARY, 0, 1);
    mn_docmem d;
    CHECK(mn_docmem_compress(m, as, doc, 40, 1, &d) == 0, "summary doc");
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 64;
    mn_context *c;
    mn_context_create(m, &cp, &c);
    const mn_docmem *one[1] = {&d};
    CHECK(mn_docmem_prime(c, au, one, 1, NULL) == MN_EINVAL && strstr(mn_last_error(), "embedding"),
          "embedding memory with a UIO adapter: %s", mn_last_error());
    char path[] = "/tmp/mnemo-docmem-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mn_docmem_save(&d, m, as, path, 0);
    mn_docmem dl;
    CHECK(mn_docmem_load(path, m, au, &dl) == MN_EINVAL, "summary file with a UIO adapter: %s", mn_last_error());
    CHECK(mn_docmem_compress(m, au, doc, 0, 1, &dl) == MN_EINVAL, "empty document");
    unlink(path);
    mn_docmem_release(&d);
    mn_docmem_release(&d); /* twice is safe */
    mn_context_free(c);
    mn_adapter_free(au), mn_adapter_free(as);
    mn_model_free(m), mn_model_free(m2);
    tm_free(&w1), tm_free(&w2);
    unlink(p1), unlink(p2);
    TEST_MAIN_END();
}
