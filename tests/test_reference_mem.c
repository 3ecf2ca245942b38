/* test_reference_mem.c - the compressors against a plain double-precision
 * reference on a tiny random F32 model (tests/tiny_model.h).
 *
 * - ONE UIO segment: encoder with LoRA on Q, V; memory tokens at positions
 *   (i+1)*l/m with stepwise coverage; their normalised attention inputs through
 *   the transfer head (base K, V + LoRA) -> memory K (before RoPE) and V.
 * - ONE Activation Beacon window for every placement (interleave, append) x
 *   attention scheme (segmentation, step-expansion, full-coverage) x
 *   attend_prev, with raw sinks, the beacons' own Q/K/V/O matrices and
 *   embedding -> the sinks' and beacons' K (before RoPE) and V.
 * The reference rounds cached K/V to f16 like the engine, so the bound is
 * 1e-4 of the largest value; references of another scheme must miss it.
 * - Exactness: a beacon stream that has not condensed anything gives the
 *   plain runtime's logits; priming no memory changes nothing; summary
 *   embeddings equal the reference's final hidden states.
 * - A ratio that does not divide the window: a clear error at adapter init,
 *   at adapter load and when a window's ratio is chosen.
 */
#include <stdint.h>
#include <stdio.h>

#include "memory/adapter.h"
#include "memory/beacon.h"
#include "memory/docmem.h"
#include "memory/memory.h"
#include "memory/uio.h"
#include "tiny_model.h"

static tm_weights W1;
static const double TOL = 1e-4;

/* ------------------------------------------------------------------ UIO */
enum { UL = 16, UM = 4, UR = 4 };

static void test_uio(const mn_model *m) {
    const double ls = 1.5;
    static float *aq[TM_L], *bq[TM_L], *av[TM_L], *bv[TM_L], *ak2[TM_L], *bk2[TM_L], *av2[TM_L], *bv2[TM_L];
    mn_lora eq[TM_L], ev[TM_L], tk[TM_L], tv[TM_L];
    for (int l = 0; l < TM_L; l++) {
        aq[l] = tm_rand_f(UR * TM_C, 0.2, NULL), bq[l] = tm_rand_f(TM_HD * UR, 0.3, NULL);
        av[l] = tm_rand_f(UR * TM_C, 0.2, NULL), bv[l] = tm_rand_f(TM_KD * UR, 0.3, NULL);
        ak2[l] = tm_rand_f(UR * TM_C, 0.2, NULL), bk2[l] = tm_rand_f(TM_KD * UR, 0.3, NULL);
        av2[l] = tm_rand_f(UR * TM_C, 0.2, NULL), bv2[l] = tm_rand_f(TM_KD * UR, 0.3, NULL);
        eq[l] = (mn_lora){aq[l], bq[l], UR}, ev[l] = (mn_lora){av[l], bv[l], UR};
        tk[l] = (mn_lora){ak2[l], bk2[l], UR}, tv[l] = (mn_lora){av2[l], bv2[l], UR};
    }
    mn_lora_set enc = {.scale = (float)ls, .q = eq, .v = ev}, tr = {.scale = (float)ls, .k = tk, .v = tv};
    double *memd;
    float *memf = tm_rand_f(TM_C, 1.0, &memd);
    mn_uio_params p = {.l = UL, .m = UM, .mem_embd = memf, .encoder = &enc, .transfer = &tr};
    mn_uio *u;
    CHECK(mn_uio_create(m, &p, 2, &u) == 0, "uio create: %s", mn_last_error());
    int32_t seg[UL];
    for (int i = 0; i < UL; i++) seg[i] = 40 + (i * 29) % 200;
    float k[TM_L * UM * TM_KD], v[TM_L * UM * TM_KD];
    CHECK(mn_uio_compress(u, seg, k, v) == 0, "uio compress: %s", mn_last_error());

    /* reference: segment then memory tokens, stepwise coverage */
    const int n = UL + UM;
    double *embd = malloc(sizeof(double) * n * TM_C), *xn = malloc(sizeof(double) * TM_L * n * TM_C);
    int pos[UL + UM];
    unsigned char mask[(UL + UM) * (UL + UM)];
    memset(mask, 0, sizeof mask);
    for (int t = 0; t < n; t++) {
        if (t < UL) {
            memcpy(embd + t * TM_C, W1.embd + (size_t)seg[t] * TM_C, sizeof(double) * TM_C);
            pos[t] = t;
            for (int j = 0; j <= t; j++) mask[t * n + j] = 1;
        } else {
            memcpy(embd + t * TM_C, memd, sizeof(double) * TM_C);
            pos[t] = (t - UL + 1) * (UL / UM);
            for (int j = 0; j < pos[t]; j++) mask[t * n + j] = 1; /* segment tokens before it */
            mask[t * n + t] = 1;
        }
    }
    const float *laq[TM_L], *lbq[TM_L], *lav[TM_L], *lbv[TM_L];
    for (int l = 0; l < TM_L; l++) laq[l] = aq[l], lbq[l] = bq[l], lav[l] = av[l], lbv[l] = bv[l];
    tm_batch b = {.n = n, .embd = embd, .pos = pos, .mask = mask, .la_q = laq, .lb_q = lbq, .la_v = lav, .lb_v = lbv,
                  .lrank = UR, .lscale = ls, .xn = xn};
    tm_forward(&W1, &b);
    double kr[TM_L * UM * TM_KD], vr[TM_L * UM * TM_KD];
    for (int l = 0; l < TM_L; l++)
        for (int i = 0; i < UM; i++) {
            const double *x = xn + ((size_t)l * n + UL + i) * TM_C;
            double *ko = kr + ((size_t)l * UM + i) * TM_KD, *vo = vr + ((size_t)l * UM + i) * TM_KD;
            tm_matvec(W1.l[l].wk, TM_KD, TM_C, x, ko);
            tm_matvec(W1.l[l].wv, TM_KD, TM_C, x, vo);
            tm_lora(ak2[l], bk2[l], UR, TM_KD, ls, x, ko);
            tm_lora(av2[l], bv2[l], UR, TM_KD, ls, x, vo);
        }
    double ek = tm_rel(k, kr, sizeof kr / sizeof kr[0]), evv = tm_rel(v, vr, sizeof vr / sizeof vr[0]);
    printf("  UIO segment (l %d, m %d, LoRA rank %d): memory K %.2g, V %.2g (max error / max value)\n", UL, UM, UR, ek,
           evv);
    CHECK(ek < TOL && evv < TOL, "UIO memory vs reference: %.3g %.3g", ek, evv);
    /* teeth: memory tokens that see the whole segment give other memory */
    for (int t = UL; t < n; t++)
        for (int j = 0; j < UL; j++) mask[t * n + j] = 1;
    tm_forward(&W1, &b);
    for (int l = 0; l < TM_L; l++)
        for (int i = 0; i < UM; i++) {
            const double *x = xn + ((size_t)l * n + UL + i) * TM_C;
            double *ko = kr + ((size_t)l * UM + i) * TM_KD;
            tm_matvec(W1.l[l].wk, TM_KD, TM_C, x, ko);
            tm_lora(ak2[l], bk2[l], UR, TM_KD, ls, x, ko);
        }
    double bad = tm_rel(k, kr, sizeof kr / sizeof kr[0]);
    CHECK(bad > 100 * TOL, "a full-coverage UIO reference must not match (%.3g)", bad);

    /* summary embeddings: the same encoder's final hidden states */
    double *hid = malloc(sizeof(double) * n * TM_C);
    for (int t = UL; t < n; t++) {
        memset(mask + t * n, 0, n);
        for (int j = 0; j < pos[t]; j++) mask[t * n + j] = 1;
        mask[t * n + t] = 1;
    }
    b.xn = NULL;
    b.hid = hid;
    tm_forward(&W1, &b);
    float e[UM * TM_C];
    int32_t mm = 0;
    CHECK(mn_uio_encode_out(u, seg, UL, e, &mm) == 0 && mm == UM, "encode out");
    double es = tm_rel(e, hid + UL * TM_C, UM * TM_C);
    printf("  summary embeddings vs reference final hidden states: %.2g\n", es);
    CHECK(es < TOL, "summary embeddings: %.3g", es);

    mn_uio_free(u);
    free(embd), free(xn), free(hid), free(memf), free(memd);
    for (int l = 0; l < TM_L; l++)
        free(aq[l]), free(bq[l]), free(av[l]), free(bv[l]), free(ak2[l]), free(bk2[l]), free(av2[l]), free(bv2[l]);
}

/* ------------------------------------------------------------------ beacon */
enum { BW = 16, BS = 2 };

typedef struct {
    mn_beacon_placement place;
    mn_beacon_attention attn;
    int ap, ratio;
} bcfg;

/* The window as the paper's code lays it out, written from the rules alone:
 * the order of raw tokens and beacons, positions and visibility. */
static int ref_layout(bcfg c, int *is_b, int *idx, int *pos, unsigned char *mask) {
    const int a = c.ratio, nb = BW / a;
    int n = 0;
    if (c.place == MN_PLACE_INTERLEAVE) {
        for (int i = 0; i < BW; i++) {
            is_b[n] = 0, idx[n++] = i;
            if ((i + 1) % a == 0) is_b[n] = 1, idx[n++] = (i + 1) / a - 1;
        }
    } else {
        for (int i = 0; i < BW; i++) is_b[n] = 0, idx[n++] = i;
        for (int j = 0; j < nb; j++) is_b[n] = 1, idx[n++] = j;
    }
    for (int t = 0; t < n; t++) {
        int j = idx[t];
        if (!is_b[t]) pos[t] = (c.place == MN_PLACE_INTERLEAVE && c.attn == MN_BATTN_FULL_COVERAGE) ? t : j;
        else if (c.place == MN_PLACE_INTERLEAVE) pos[t] = c.attn == MN_BATTN_FULL_COVERAGE ? t : (j + 1) * a;
        else if (c.attn == MN_BATTN_FULL_COVERAGE) pos[t] = BW + j;
        else if (c.attn == MN_BATTN_STEP_EXPANSION) pos[t] = (j + 1) * a + (c.ap ? j : 0);
        else pos[t] = a + (c.ap ? j : 0);
    }
    memset(mask, 0, (size_t)n * n);
    for (int t = 0; t < n; t++)
        for (int u = 0; u <= t; u++) {
            int see;
            if (!is_b[t]) {
                see = is_b[u] ? (c.place == MN_PLACE_INTERLEAVE && c.attn == MN_BATTN_FULL_COVERAGE) : idx[u] <= idx[t];
            } else if (is_b[u]) {
                see = c.ap ? idx[u] <= idx[t] : idx[u] == idx[t];
            } else {
                int i = idx[u], j = idx[t];
                if (c.attn == MN_BATTN_SEGMENTATION) see = i >= j * a && i < (j + 1) * a;
                else if (c.attn == MN_BATTN_STEP_EXPANSION) see = i < (j + 1) * a;
                else see = c.place == MN_PLACE_APPEND ? 1 : i < (j + 1) * a;
            }
            mask[t * n + u] = (unsigned char)see;
        }
    return n;
}

/* Reference sink and beacon K (before RoPE) and V, (L, BS + nb, KD). */
static void ref_window(bcfg c, const int32_t *ids, const double *bemb, const mn_beacon_params *p, double *k,
                       double *v) {
    int is_b[2 * BW], idx[2 * BW], pos[2 * BW];
    unsigned char mask[4 * BW * BW];
    int n = ref_layout(c, is_b, idx, pos, mask);
    double *embd = malloc(sizeof(double) * n * TM_C), *kp = malloc(sizeof(double) * TM_L * n * TM_KD),
           *vp = malloc(sizeof(double) * TM_L * n * TM_KD);
    unsigned char alt[2 * BW];
    for (int t = 0; t < n; t++) {
        alt[t] = (unsigned char)is_b[t];
        memcpy(embd + t * TM_C, is_b[t] ? bemb : W1.embd + (size_t)ids[idx[t]] * TM_C, sizeof(double) * TM_C);
    }
    tm_batch b = {.n = n, .embd = embd, .pos = pos, .mask = mask, .alt = alt, .aq = p->proj.q, .ak = p->proj.k,
                  .av = p->proj.v, .ao = p->proj.o, .kpre = kp, .v = vp};
    tm_forward(&W1, &b);
    const int M = BS + BW / c.ratio;
    for (int t = 0; t < n; t++) {
        int slot = is_b[t] ? BS + idx[t] : idx[t] < BS ? idx[t] : -1;
        if (slot < 0) continue;
        for (int l = 0; l < TM_L; l++) {
            memcpy(k + ((size_t)l * M + slot) * TM_KD, kp + ((size_t)l * n + t) * TM_KD, sizeof(double) * TM_KD);
            memcpy(v + ((size_t)l * M + slot) * TM_KD, vp + ((size_t)l * n + t) * TM_KD, sizeof(double) * TM_KD);
        }
    }
    free(embd), free(kp), free(vp);
}

static void test_beacon(const mn_model *m) {
    float *pq[TM_L], *pk[TM_L], *pv[TM_L], *po[TM_L];
    for (int l = 0; l < TM_L; l++) {
        pq[l] = tm_rand_f(TM_HD * TM_C, 1.0 / sqrt(TM_C), NULL), pk[l] = tm_rand_f(TM_KD * TM_C, 1.0 / sqrt(TM_C), NULL);
        pv[l] = tm_rand_f(TM_KD * TM_C, 1.0 / sqrt(TM_C), NULL), po[l] = tm_rand_f(TM_C * TM_HD, 1.0 / sqrt(TM_HD), NULL);
    }
    double *bemb;
    float *bembf = tm_rand_f(TM_C, 1.0, &bemb);
    int32_t ids[BW];
    for (int i = 0; i < BW; i++) ids[i] = 50 + (i * 47) % 190;
    double worst = 0, weakest_teeth = 1e9;
    for (int place = 0; place < 2; place++)
        for (int attn = 0; attn < 3; attn++)
            for (int ap = 0; ap < 2; ap++)
                for (int ratio = 2; ratio <= 4; ratio += 2) {
                    bcfg c = {(mn_beacon_placement)place, (mn_beacon_attention)attn, ap, ratio};
                    mn_beacon_params p = {.window = BW, .ratio = ratio, .placement = c.place, .attention = c.attn,
                                          .attend_prev = ap, .sinks = BS, .embd = bembf,
                                          .proj = {.q = (const float *const *)pq, .k = (const float *const *)pk,
                                                   .v = (const float *const *)pv, .o = (const float *const *)po}};
                    float *k, *v;
                    int32_t M = 0;
                    int rc = mn_beacon_compress_doc(m, &p, ids, BW, 1 + (ratio == 4), &k, &v, &M);
                    const int want = BS + BW / ratio;
                    CHECK(rc == 0 && M == want, "%s/%s/ap%d/x%d: compress %d slots: %s", mn_beacon_placement_name(c.place),
                          mn_beacon_attention_name(c.attn), ap, ratio, M, mn_last_error());
                    if (rc) continue;
                    size_t e = (size_t)TM_L * want * TM_KD;
                    double *kr = malloc(sizeof(double) * e), *vr = malloc(sizeof(double) * e);
                    ref_window(c, ids, bemb, &p, kr, vr);
                    double err = fmax(tm_rel(k, kr, e), tm_rel(v, vr, e));
                    CHECK(err < TOL, "%s/%s/ap%d/x%d vs reference: %.3g", mn_beacon_placement_name(c.place),
                          mn_beacon_attention_name(c.attn), ap, ratio, err);
                    worst = fmax(worst, err);
                    /* teeth: the reference of each other scheme must not match */
                    for (int other = 0; other < 3; other++) {
                        if (other == attn) continue;
                        bcfg o = c;
                        o.attn = (mn_beacon_attention)other;
                        /* interleave: step-expansion and full-coverage beacons see the same raw tokens;
                         * they differ in positions and in what raw tokens see */
                        ref_window(o, ids, bemb, &p, kr, vr);
                        double d = fmax(tm_rel(k, kr, e), tm_rel(v, vr, e));
                        weakest_teeth = fmin(weakest_teeth, d);
                        CHECK(d > 100 * TOL, "%s/%s/ap%d/x%d matches the %s reference (%.3g)",
                              mn_beacon_placement_name(c.place), mn_beacon_attention_name(c.attn), ap, ratio,
                              mn_beacon_attention_name(o.attn), d);
                    }
                    if (ratio == 4 && place == 0 && attn == 2 && ap == 1) {
                        /* teeth: beacons through the base projections instead of their own */
                        mn_beacon_params pb = p;
                        pb.proj = (mn_proj_set){0};
                        ref_window(c, ids, bemb, &pb, kr, vr);
                        double d = fmax(tm_rel(k, kr, e), tm_rel(v, vr, e));
                        CHECK(d > 100 * TOL, "beacon projections unused? base-projection reference matches (%.3g)", d);
                    }
                    if (ratio == 4) {
                        bcfg o = c;
                        o.ap = !ap;
                        ref_window(o, ids, bemb, &p, kr, vr);
                        double d = fmax(tm_rel(k, kr, e), tm_rel(v, vr, e));
                        CHECK(d > 100 * TOL, "%s/%s: attend_prev %d matches the other reference (%.3g)",
                              mn_beacon_placement_name(c.place), mn_beacon_attention_name(c.attn), ap, d);
                    }
                    free(kr), free(vr), free(k), free(v);
                }
    printf("  beacon window (W %d, ratios 2 and 4, %d sinks, own Q/K/V/O) x 2 placements x 3 schemes x attend_prev:\n"
           "    worst error %.2g; nearest wrong-scheme reference %.2g\n",
           BW, BS, worst, weakest_teeth);

    /* exactness: a stream that has condensed nothing equals the plain runtime
     * (append places beacons after the window; interleave + step-expansion
     * hides them from raw tokens) */
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    mn_context *c1, *c2;
    mn_context_create(m, &cp, &c1);
    mn_context_create(m, &cp, &c2);
    float *l1 = malloc(sizeof(float) * TM_V * BW), *l2 = malloc(sizeof(float) * TM_V * BW);
    CHECK(mn_decode(c1, ids, BW - 1, l1, 1) == 0, "plain decode");
    for (int place = 0; place < 2; place++) {
        mn_beacon_params p = {.window = BW, .ratio = 4, .placement = (mn_beacon_placement)place,
                              .attention = place ? MN_BATTN_FULL_COVERAGE : MN_BATTN_STEP_EXPANSION, .attend_prev = 1,
                              .sinks = 0, .embd = bembf,
                              .proj = {.q = (const float *const *)pq, .k = (const float *const *)pk,
                                       .v = (const float *const *)pv}};
        mn_stream_params sp = mn_stream_default_params();
        sp.mode = MN_MODE_MEMORY;
        mn_stream *s;
        CHECK(mn_stream_create(c2, &sp, &s) == 0 && mn_stream_attach_beacon(s, &p) == 0, "beacon stream: %s",
              mn_last_error());
        int ok = 1;
        for (int i = 0; i < BW - 1 && ok; i += 5) ok = mn_stream_feed(s, ids + i, 5, l2 + (size_t)i * TM_V, 1) == 0;
        CHECK(ok, "feed: %s", mn_last_error());
        double d = 0;
        for (size_t i = 0; i < (size_t)(BW - 1) * TM_V; i++) d = fmax(d, fabs(l1[i] - l2[i]));
        printf("  %s beacon stream before its first window closes vs plain decode: max |logit diff| %.2g\n",
               place ? "append" : "interleave/step-expansion", d);
        CHECK(d < 1e-5, "no memory must equal the plain runtime (%.3g)", d);
        CHECK(place == 1 || mn_kv_n_cells(c2) == BW - 1 + (BW - 1) / 4, "interleaved beacons in the cache");
        mn_stream_free(s);
    }
    /* priming no memory changes nothing */
    mn_adapter_params ap = mn_adapter_default_params(MN_COMP_UIO);
    ap.segment = 16, ap.ratio = 4, ap.rank = 4, ap.alpha = 8;
    mn_adapter *ad;
    CHECK(mn_adapter_init(m, &ap, &ad) == 0, "uio adapter");
    mn_kv_clear(c2);
    int32_t p0 = -1;
    CHECK(mn_docmem_prime(c2, ad, NULL, 0, &p0) == 0 && p0 == 0 && mn_decode(c2, ids, BW - 1, l2, 1) == 0,
          "prime nothing");
    CHECK(!memcmp(l1, l2, sizeof(float) * TM_V * (BW - 1)), "priming no memory changed the logits");
    mn_adapter_free(ad);
    free(l1), free(l2);
    mn_context_free(c1), mn_context_free(c2);

    /* ratios: not dividing the window is refused */
    mn_adapter_params bp = mn_adapter_default_params(MN_COMP_BEACON);
    bp.segment = 16;
    bp.ratio = 3;
    mn_adapter *a = NULL;
    CHECK(mn_adapter_init(m, &bp, &a) == MN_EINVAL && strstr(mn_last_error(), "ratio 3 does not divide"), "init: %s",
          mn_last_error());
    bp.ratio = 4;
    bp.n_ratios = 2, bp.ratios[0] = 4, bp.ratios[1] = 6;
    CHECK(mn_adapter_init(m, &bp, &a) == MN_EINVAL && strstr(mn_last_error(), "ratio 6 does not divide"),
          "init ratio set: %s", mn_last_error());
    bp.ratios[1] = 2;
    CHECK(mn_adapter_init(m, &bp, &a) == 0, "valid beacon adapter: %s", mn_last_error());
    char path[] = "/tmp/mnemo-refmem-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(mn_adapter_save(a, path) == 0, "save");
    /* patch mnemo.ratio to 3 in the file */
    FILE *f = fopen(path, "r+b");
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    const char *key = "mnemo.ratio";
    char *hit = NULL;
    for (size_t i = 0; i + strlen(key) < len && !hit; i++)
        if (!memcmp(buf + i, key, strlen(key))) hit = buf + i;
    CHECK(hit != NULL, "ratio key in the file");
    if (hit) {
        long off = (long)(hit - buf) + (long)strlen(key) + 4; /* then the u32 type */
        uint32_t three = 3;
        fseek(f, off, SEEK_SET);
        fwrite(&three, 4, 1, f);
    }
    fclose(f);
    mn_adapter *b2 = NULL;
    CHECK(mn_adapter_load(m, path, &b2) != 0 && !b2 && strstr(mn_last_error(), "ratio 3 does not divide"), "load: %s",
          mn_last_error());
    unlink(path);
    mn_beacon_binding bb;
    CHECK(mn_beacon_bind(m, a, &bb) == 0, "bind");
    mn_context *c3;
    mn_context_create(m, &cp, &c3);
    mn_beacon *bc;
    CHECK(mn_beacon_create(c3, &bb.params, 0, &bc) == 0, "beacon create");
    CHECK(mn_beacon_set_ratio(bc, 3) == MN_EINVAL && strstr(mn_last_error(), "ratio 3"), "set ratio 3: %s",
          mn_last_error());
    CHECK(mn_beacon_set_ratio(bc, 8) == MN_EINVAL, "ratio outside the set");
    CHECK(mn_beacon_set_ratio(bc, 2) == 0, "ratio from the set");
    mn_beacon_params bad = bb.params;
    bad.ratio = 5;
    mn_beacon *bc2 = NULL;
    CHECK(mn_beacon_create(c3, &bad, 0, &bc2) == MN_EINVAL && !bc2, "create with ratio 5");
    mn_beacon_free(bc);
    mn_beacon_unbind(&bb);
    mn_context_free(c3);
    mn_adapter_free(a);
    for (int l = 0; l < TM_L; l++) free(pq[l]), free(pk[l]), free(pv[l]), free(po[l]);
    free(bembf), free(bemb);
}

int main(void) {
    char path[64];
    CHECK(tm_write(7, path, &W1) == 0, "write tiny model");
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load: %s", mn_last_error());
    test_uio(m);
    test_beacon(m);
    mn_model_free(m);
    tm_free(&W1);
    unlink(path);
    TEST_MAIN_END();
}
