/* fuzz_gguf.c - libFuzzer target for the GGUF reader, built by `make fuzz` with
 * ASan and UBSan; seeds in tests/fuzz/corpus/gguf/ (a tiny model, adapters).
 *
 * The seeds get the fuzzer past the header quickly. Every input must either parse or
 * fail with a message; after a successful parse the accessors are exercised and
 * every tensor's bytes are touched so out-of-bounds data pointers are caught.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"

static volatile uint64_t g_sink;

static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    if (n) g_sink += b[0] + b[n - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exact-size heap copy: ASan then flags any read past the end */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    mn_gguf *g = NULL;
    int rc = mn_gguf_open_memory(copy, size, &g);
    if (rc) {
        if (g || !mn_last_error()[0]) abort(); /* failures leave no handle and say why */
        free(copy);
        return 0;
    }
    for (int64_t i = 0; i < mn_gguf_n_kv(g); i++) {
        mn_gguf_str k = mn_gguf_key_at(g, i);
        touch(k.ptr, k.len);
        char key[256];
        size_t kl = k.len < sizeof key - 1 ? (size_t)k.len : sizeof key - 1;
        memcpy(key, k.ptr, kl);
        key[kl] = 0;
        if (mn_gguf_find_key(g, key) < 0 && kl == k.len) abort(); /* every key is findable */
        uint32_t u;
        int64_t s;
        float f;
        int b;
        mn_gguf_str str;
        mn_gguf_get_u32(g, key, &u);
        mn_gguf_get_i64(g, key, &s);
        mn_gguf_get_f32(g, key, &f);
        mn_gguf_get_bool(g, key, &b);
        if (mn_gguf_get_str(g, key, &str) == 0) touch(str.ptr, str.len);
        mn_gguf_vtype et;
        uint64_t n;
        const void *d;
        if (mn_gguf_get_arr(g, key, &et, &n, &d) == 0 && et == MN_GGUF_STRING) {
            for (uint64_t j = 0; j < n; j++) {
                mn_gguf_str e = mn_gguf_arr_str(g, i, j);
                if (!e.ptr) abort();
                touch(e.ptr, e.len);
            }
        }
    }
    for (int64_t i = 0; i < mn_gguf_n_tensors(g); i++) {
        const mn_gguf_tensor *t = mn_gguf_tensor_at(g, i);
        if (mn_gguf_find_tensor(g, t->name) != t) abort();
        if ((const uint8_t *)t->data < copy ||
            (const uint8_t *)t->data + t->nbytes > copy + size)
            abort();
        touch(t->data, t->nbytes);
    }
    mn_gguf_free(g);
    free(copy);
    return 0;
}
