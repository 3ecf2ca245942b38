/* test_alloc.c - the decode loop and the sampler allocate nothing.
 *
 * The test binary defines malloc/calloc/realloc/aligned allocators itself
 * (forwarding to glibc's __libc_* entry points), so every allocation the library
 * makes is counted. After one warm-up step (per-thread scratch may be created on
 * first use) 32 decode + sample steps must make zero allocations. Skipped under
 * AddressSanitizer, which owns malloc.
 */
#include <stdint.h>

#include "mnemo.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
int main(void) {
    TEST_SKIP("allocation counting under AddressSanitizer (its allocator is not the one counted)");
    TEST_MAIN_END();
}
#else
#include <stdatomic.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_long n_alloc;
static atomic_int counting;

void *malloc(size_t n) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_alloc, 1);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_alloc, 1);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_alloc, 1);
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t al, size_t n) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_alloc, 1);
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n) {
    if (atomic_load(&counting)) atomic_fetch_add(&n_alloc, 1);
    *out = __libc_memalign(al, n);
    return *out ? 0 : 12;
}

int main(void) {
    const char *path = test_model_path();
    if (!path) {
        CHECK(0, "the default model is missing (make model fetches it)");
        TEST_MAIN_END();
    }
    mn_model *m;
    CHECK(mn_model_load(path, &m) == 0, "load");
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 2;
    mn_context *c;
    CHECK(mn_context_create(m, &cp, &c) == 0, "context");
    mn_sampler_params sp = mn_sampler_default_params();
    mn_sampler *s;
    CHECK(mn_sampler_create(&sp, mn_model_n_vocab(m), &s) == 0, "sampler");
    float *logits = malloc(sizeof(float) * (size_t)mn_model_n_vocab(m));
    int32_t prompt[16];
    for (int i = 0; i < 16; i++) prompt[i] = 200 + i;
    CHECK(mn_decode(c, prompt, 16, logits, 0) == 0, "prompt");
    int32_t tok = mn_sampler_sample(s, logits);
    mn_sampler_accept(s, tok);
    mn_decode(c, &tok, 1, logits, 0); /* warm-up step */

    /* the counter does see the library's allocations */
    atomic_store(&counting, 1);
    mn_sampler *s2 = NULL;
    mn_sampler_create(&sp, 1000, &s2);
    atomic_store(&counting, 0);
    CHECK(atomic_load(&n_alloc) > 0, "interposed malloc saw no allocation from mn_sampler_create");
    mn_sampler_free(s2);
    atomic_store(&n_alloc, 0);

    atomic_store(&counting, 1);
    int ok = 1;
    for (int i = 0; i < 32 && ok; i++) {
        tok = mn_sampler_sample(s, logits);
        mn_sampler_accept(s, tok);
        ok = mn_decode(c, &tok, 1, logits, 0) == 0;
    }
    atomic_store(&counting, 0);
    CHECK(ok, "decode");
    CHECK(atomic_load(&n_alloc) == 0, "%ld allocations in 32 decode+sample steps", atomic_load(&n_alloc));
    printf("  allocations in 32 decode + sample steps: %ld\n", atomic_load(&n_alloc));
    free(logits);
    mn_sampler_free(s);
    mn_context_free(c);
    mn_model_free(m);
    TEST_MAIN_END();
}
#endif
