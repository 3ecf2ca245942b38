/* test_beacon.c - Activation Beacon and summary memories in streams
 * (memory/beacon.h, memory/summary.h, MN_MODE_MEMORY), on a tiny random model.
 *
 * - A beacon stream holds [sinks | beacons | current window] at contiguous
 *   positions; each full window becomes W/ratio beacons; the counters add up.
 * - What a stream condenses equals what document compression gives for the
 *   same tokens (fed in uneven pieces here, whole windows there).
 * - The ratio can change per window (from the adapter's set).
 * - The position budget ends a stream with a clear error.
 * - A summary stream decodes each segment's embeddings after the memory; its
 *   cells equal priming the document's summary memory.
 */
#include <stdint.h>
#include <stdio.h>

#include "memory/adapter.h"
#include "memory/beacon.h"
#include "memory/docmem.h"
#include "memory/memory.h"
#include "tiny_model.h"

enum { W = 16, N = 100 };

static int contiguous(const mn_context *c) {
    for (int32_t j = 0; j < mn_kv_n_cells(c); j++)
        if (mn_kv_pos(c, j) != j) return 0;
    return 1;
}

static double max_rel(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), mx = fmax(mx, fabs((double)b[i]));
    return d / (mx > 0 ? mx : 1);
}

int main(void) {
    char path[64];
    tm_weights tw;
    CHECK(tm_write(3, path, &tw) == 0, "write tiny model");
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load: %s", mn_last_error());
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 33 + (i * 53) % 220;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 128;
    cp.n_threads = 2;
    mn_context *c, *d;
    mn_context_create(m, &cp, &c);
    mn_context_create(m, &cp, &d);

    for (int place = 0; place < 2; place++) {
        const char *pn = place ? "append" : "interleave";
        mn_adapter_params ap = mn_adapter_default_params(MN_COMP_BEACON);
        ap.segment = W, ap.ratio = 4, ap.sinks = 2, ap.placement = (mn_beacon_placement)place;
        ap.n_ratios = 2, ap.ratios[0] = 2, ap.ratios[1] = 4;
        mn_adapter *a;
        CHECK(mn_adapter_init(m, &ap, &a) == 0, "adapter: %s", mn_last_error());
        mn_memory_binding b;
        CHECK(mn_memory_bind(m, a, &b) == 0 && b.kind == MN_COMP_BEACON, "bind");
        mn_stream_params sp = mn_stream_default_params();
        sp.mode = MN_MODE_MEMORY;
        mn_stream *s;
        CHECK(mn_stream_create(c, &sp, &s) == 0 && mn_stream_attach(s, &b, 2) == 0, "%s: attach: %s", pn,
              mn_last_error());
        int ok = 1, bounded = 1;
        for (int i = 0; i < N && ok; i += 7) {
            int p = N - i < 7 ? N - i : 7;
            ok = mn_stream_feed(s, ids + i, p, NULL, 0) == 0;
            int32_t local = (i + p) % W;
            int32_t inwin = place == 0 ? local + local / 4 : local; /* interleave: beacons already in the window */
            int32_t sinks = i + p >= W ? 2 : 0; /* the first window's first tokens, once it is condensed */
            bounded &= mn_kv_n_cells(c) == sinks + mn_stream_n_memory(s) + inwin && contiguous(c);
        }
        CHECK(ok, "%s: feed: %s", pn, mn_last_error());
        CHECK(bounded, "%s: cache = sinks + beacons + window, contiguous", pn);
        CHECK(mn_stream_n_memory(s) == (N / W) * (W / 4), "%s: %d beacons", pn, mn_stream_n_memory(s));
        CHECK(mn_stream_n_seen(s) == N && mn_stream_n_evicted(s) == N - 2 - N % W, "%s: seen %lld evicted %lld", pn,
              (long long)mn_stream_n_seen(s), (long long)mn_stream_n_evicted(s));

        /* the stream's [sinks | memory] equals the document memory of the same full windows */
        mn_docmem dm;
        CHECK(mn_docmem_compress(m, a, ids, (N / W) * W, 1, &dm) == 0 && dm.n_slots == 2 + mn_stream_n_memory(s),
              "%s: docmem of the full windows", pn);
        const mn_docmem *one[1] = {&dm};
        mn_kv_clear(d);
        mn_docmem_prime(d, a, one, 1, NULL);
        size_t e = (size_t)TM_L * dm.n_slots * TM_KD;
        float *k1 = malloc(sizeof(float) * e), *k2 = malloc(sizeof(float) * e), *v1 = malloc(sizeof(float) * e),
              *v2 = malloc(sizeof(float) * e);
        mn_kv_read(c, 0, dm.n_slots, k1, v1);
        mn_kv_read(d, 0, dm.n_slots, k2, v2);
        double dk = max_rel(k1, k2, e), dv = max_rel(v1, v2, e);
        printf("  %s: streamed memory (pieces of 7) vs document compression: K %.2g, V %.2g\n", pn, dk, dv);
        CHECK(dk < 2e-3 && dv < 2e-3, "%s: stream memory differs from document memory: %.3g %.3g", pn, dk, dv);
        free(k1), free(k2), free(v1), free(v2);
        mn_docmem_release(&dm);

        /* logits through the stream are finite; perplexity works */
        mn_ppl_result r;
        CHECK(mn_stream_perplexity(s, ids, N, 10, 1, NULL, NULL, &r) == 0 && isfinite(r.ppl) && r.tokens == N - 1,
              "%s: ppl: %s", pn, mn_last_error());

        /* per-window ratio: the second window at ratio 2 gives 8 beacons */
        mn_stream_reset(s);
        CHECK(mn_beacon_set_ratio(mn_stream_beacon(s), 4) == 0, "ratio 4");
        mn_stream_feed(s, ids, W, NULL, 0);
        CHECK(mn_beacon_set_ratio(mn_stream_beacon(s), 2) == 0, "ratio 2");
        mn_stream_feed(s, ids + W, W, NULL, 0);
        CHECK(mn_stream_n_memory(s) == 4 + 8 && mn_kv_n_cells(c) == 2 + 12 && contiguous(c), "%s: mixed ratios: %d",
              pn, mn_stream_n_memory(s));
        mn_beacon_set_ratio(mn_stream_beacon(s), 4);

        /* the position budget: 128 cells hold sinks + 4 beacons per 16 tokens + a window */
        int32_t *many = malloc(sizeof(int32_t) * 2000);
        for (int i = 0; i < 2000; i++) many[i] = ids[i % N];
        mn_stream_reset(s);
        CHECK(mn_stream_feed(s, many, 2000, NULL, 0) == MN_ERANGE && strstr(mn_last_error(), "budget"), "%s: budget: %s",
              pn, mn_last_error());
        /* ... unless the memory is bounded: the newest 12 beacons stay, after the sinks */
        mn_stream_reset(s);
        CHECK(mn_stream_set_memory_cap(s, 12) == 0, "cap");
        CHECK(mn_stream_feed(s, many, 2000, NULL, 0) == 0, "%s: capped stream: %s", pn, mn_last_error());
        CHECK(mn_stream_n_memory(s) == 12 && mn_kv_n_cells(c) <= 2 + 12 + W + W / 4 && contiguous(c),
              "%s: capped memory %d cells %d", pn, mn_stream_n_memory(s), mn_kv_n_cells(c));
        mn_stream_set_memory_cap(s, 0);
        free(many);
        mn_stream_free(s);
        mn_memory_unbind(&b);
        mn_adapter_free(a);
    }

    /* summary stream: each segment -> m embeddings decoded after the memory */
    {
        mn_adapter_params ap = mn_adapter_default_params(MN_COMP_SUMMARY);
        ap.segment = W, ap.ratio = 4, ap.rank = 4, ap.alpha = 8, ap.seed = 5;
        mn_adapter *a;
        CHECK(mn_adapter_init(m, &ap, &a) == 0, "summary adapter");
        mn_memory_binding b;
        mn_memory_bind(m, a, &b);
        mn_stream_params sp = mn_stream_default_params();
        sp.mode = MN_MODE_MEMORY;
        sp.n_sinks = 0;
        mn_stream *s;
        CHECK(mn_stream_create(c, &sp, &s) == 0 && mn_stream_attach(s, &b, 2) == 0, "summary attach: %s",
              mn_last_error());
        CHECK(mn_stream_feed(s, ids, N, NULL, 0) == 0, "summary feed: %s", mn_last_error());
        CHECK(mn_stream_n_memory(s) == (N / W) * 4 && mn_kv_n_cells(c) == (N / W) * 4 + N % W && contiguous(c),
              "summary cells %d memory %d", mn_kv_n_cells(c), mn_stream_n_memory(s));
        mn_docmem dm;
        CHECK(mn_docmem_compress(m, a, ids, (N / W) * W, 2, &dm) == 0 && dm.kind == MN_DOCMEM_EMBD, "summary docmem");
        const mn_docmem *one[1] = {&dm};
        mn_kv_clear(d);
        mn_docmem_prime(d, a, one, 1, NULL);
        size_t e = (size_t)TM_L * dm.n_slots * TM_KD;
        float *k1 = malloc(sizeof(float) * e), *k2 = malloc(sizeof(float) * e);
        mn_kv_read(c, 0, dm.n_slots, k1, NULL);
        mn_kv_read(d, 0, dm.n_slots, k2, NULL);
        CHECK(max_rel(k1, k2, e) < 1e-6, "summary stream memory vs primed document memory: %.3g", max_rel(k1, k2, e));
        free(k1), free(k2);
        mn_docmem_release(&dm);
        /* bounded memory for an encoder compressor too */
        int32_t *many = malloc(sizeof(int32_t) * 1000);
        for (int i = 0; i < 1000; i++) many[i] = ids[i % N];
        mn_stream_reset(s);
        mn_stream_set_memory_cap(s, 8);
        CHECK(mn_stream_feed(s, many, 1000, NULL, 0) == 0 && mn_stream_n_memory(s) == 8 &&
                  mn_kv_n_cells(c) == 8 + 1000 % W && contiguous(c),
              "summary capped: %d cells: %s", mn_kv_n_cells(c), mn_last_error());
        free(many);
        mn_stream_free(s);
        mn_memory_unbind(&b);
        mn_adapter_free(a);
    }
    mn_context_free(c);
    mn_context_free(d);
    mn_model_free(m);
    tm_free(&tw);
    unlink(path);
    TEST_MAIN_END();
}
