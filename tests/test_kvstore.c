/* test_kvstore.c - the exact store's 8-bit cells (memory/kvstore.h).
 *
 * Entries read back as the q8_0 round trip of what was put, bit for bit,
 * whether they sit in RAM or in the spill file; the RAM budget decides which;
 * the spill file is never visible in its folder (unlinked at once); an entry
 * too large for the reader's room, a missing entry and an unusable spill
 * folder are clear errors; clear forgets everything and the store is usable
 * after it. The model is only read for its shapes (layers, kv width).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "memory/kvstore.h"
#include "model/forward.h"
#include "test.h"

/* (L, n, KD) floats through q8_0 and back: what the store must return */
static void round_trip(const float *x, float *y, size_t rows, int32_t KD) {
    const mn_quant_traits *q8 = mn_quant_get(MN_TYPE_Q8_0);
    uint8_t blk[4096];
    for (size_t r = 0; r < rows; r++) {
        q8->from_float(x + r * (size_t)KD, blk, KD);
        q8->to_float(blk, y + r * (size_t)KD, KD);
    }
}

int main(void) {
    const char *path = test_model_path();
    CHECK(path != NULL, "the default model is missing (make model fetches it)");
    mn_model *m = NULL;
    if (path) CHECK(mn_model_load(path, &m) == 0, "load: %s", mn_last_error());
    if (!m) TEST_MAIN_END();
    const int32_t L = mn_model_n_layer(m), KD = mn_model_kv_dim(m);
    const size_t cb = mn_kvstore_cell_bytes(m);
    CHECK(cb == (size_t)L * 2 * (size_t)(KD / 32) * 34, "a cell is L x 2 q8_0 rows (%zu bytes)", cb);
    const int32_t n0 = 37, n1 = 64, cap = 64;
    const size_t sz = (size_t)L * (size_t)cap * (size_t)KD;
    float *k = malloc(sizeof(float) * sz), *v = malloc(sizeof(float) * sz), *k1 = malloc(sizeof(float) * sz),
          *v1 = malloc(sizeof(float) * sz), *kr = malloc(sizeof(float) * sz), *vr = malloc(sizeof(float) * sz),
          *got_k = malloc(sizeof(float) * sz), *got_v = malloc(sizeof(float) * sz);
    uint64_t r = 12345;
    for (size_t i = 0; i < sz; i++) { /* values of several magnitudes, signs, and some exact zeros */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        const float u = (float)((r >> 40) & 0xffffff) / 16777216.0f - 0.5f;
        k[i] = u * (float)(1 + (i % 7)), v[i] = i % 97 == 0 ? 0.0f : -u * 0.01f;
        k1[i] = 3.0f * u, v1[i] = u * u;
    }
    /* a spill folder of our own: the store's file must never show in it */
    char dir[] = "/tmp/mnemo-kvtest-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    setenv("TMPDIR", dir, 1);

    mn_kvstore *s = NULL;
    /* room for the first entry in RAM, not the second */
    CHECK(mn_kvstore_create(m, (size_t)n0 * cb + 100, &s) == 0, "create: %s", mn_last_error());
    CHECK(s && mn_kvstore_n(s) == 0, "empty");
    if (!s) TEST_MAIN_END();
    CHECK(mn_kvstore_put(s, n0, k, v) == 0 && mn_kvstore_put(s, n1, k1, v1) == 0 && mn_kvstore_put(s, 0, NULL, NULL) == 0,
          "put: %s", mn_last_error());
    CHECK(mn_kvstore_n(s) == 3, "three entries");
    size_t ram = 0, spill = 0;
    mn_kvstore_bytes(s, &ram, &spill);
    CHECK(ram == (size_t)n0 * cb && spill == (size_t)n1 * cb, "the first in RAM (%zu), the second spilled (%zu)", ram,
          spill);
    CHECK(test_dir_entries(dir) == 0, "the spill file is not in %s (%d entries)", dir, test_dir_entries(dir));
    int32_t n = -1;
    /* each entry is the round trip of what was put, bit for bit */
    round_trip(k, kr, (size_t)L * n0, KD), round_trip(v, vr, (size_t)L * n0, KD);
    CHECK(mn_kvstore_get(s, 0, cap, got_k, got_v, &n) == 0 && n == n0, "get 0: %d cells", n);
    CHECK(!memcmp(got_k, kr, sizeof(float) * (size_t)L * n0) && !memcmp(got_v, vr, sizeof(float) * (size_t)L * n0),
          "entry 0 (RAM) = its q8_0 round trip");
    float err = 0, mx = 0;
    for (size_t i = 0; i < (size_t)L * n0 * KD; i++) err = fmaxf(err, fabsf(got_k[i] - k[i])), mx = fmaxf(mx, fabsf(k[i]));
    CHECK(err > 0 && err <= mx / 127.0f, "8 bits: an error of at most a step (%g of %g)", (double)err, (double)mx);
    round_trip(k1, kr, (size_t)L * n1, KD), round_trip(v1, vr, (size_t)L * n1, KD);
    CHECK(mn_kvstore_get(s, 1, cap, got_k, got_v, &n) == 0 && n == n1, "get 1: %d cells", n);
    CHECK(!memcmp(got_k, kr, sizeof(float) * (size_t)L * n1) && !memcmp(got_v, vr, sizeof(float) * (size_t)L * n1),
          "entry 1 (spilled) = its q8_0 round trip");
    CHECK(mn_kvstore_get(s, 2, cap, got_k, got_v, &n) == 0 && n == 0, "an empty entry: 0 cells");
    /* errors */
    CHECK(mn_kvstore_get(s, 1, n1 - 1, got_k, got_v, &n) == MN_ERANGE && strstr(mn_last_error(), "room"),
          "an entry larger than the room: %s", mn_last_error());
    CHECK(mn_kvstore_get(s, 3, cap, got_k, got_v, &n) == MN_EINVAL && mn_kvstore_get(s, -1, cap, got_k, got_v, &n) == MN_EINVAL,
          "no such entry: an error");
    CHECK(mn_kvstore_put(s, -1, k, v) == MN_EINVAL && mn_kvstore_put(s, 4, NULL, v) == MN_EINVAL, "bad put: an error");
    /* clear: nothing held, and usable again (a spilled entry written anew reads back) */
    CHECK(mn_kvstore_clear(s) == 0 && mn_kvstore_n(s) == 0, "clear");
    mn_kvstore_bytes(s, &ram, &spill);
    CHECK(ram == 0 && spill == 0, "cleared: no bytes (%zu, %zu)", ram, spill);
    CHECK(mn_kvstore_put(s, n1, k1, v1) == 0 && mn_kvstore_put(s, n1, k, v) == 0, "put after clear");
    mn_kvstore_bytes(s, &ram, &spill);
    CHECK(ram == 0 && spill == 2 * (size_t)n1 * cb, "both spill now (%zu, %zu)", ram, spill);
    round_trip(k, kr, (size_t)L * n1, KD);
    CHECK(mn_kvstore_get(s, 1, cap, got_k, got_v, &n) == 0 && n == n1 && !memcmp(got_k, kr, sizeof(float) * (size_t)L * n1),
          "the second spilled entry after clear reads back");
    mn_kvstore_free(s);
    CHECK(test_dir_entries(dir) == 0, "nothing left in %s", dir);
    /* a spill folder that cannot hold a file: a clear error at the put that needs it, not before */
    setenv("TMPDIR", "/nonexistent/mnemo", 1);
    CHECK(mn_kvstore_create(m, 0, &s) == 0, "create with a bad TMPDIR");
    CHECK(mn_kvstore_put(s, n0, k, v) == MN_EIO && strstr(mn_last_error(), "spill"), "unusable spill folder: %s",
          mn_last_error());
    CHECK(mn_kvstore_n(s) == 0, "nothing added by the failed put");
    mn_kvstore_free(s);
    rmdir(dir);
    free(k), free(v), free(k1), free(v1), free(kr), free(vr), free(got_k), free(got_v);
    mn_model_free(m);
    TEST_MAIN_END();
}
