/* test.h - the minimal harness every tests/test_*.c uses.
 *
 * CHECK(cond, fmt, ...) records one assertion; a failing one prints file:line
 * and the message. TEST_SKIP(fmt, ...) records a part not run on this machine
 * or build, for a reason that is legitimate there (a CPU feature it lacks, a
 * check too slow under the sanitizers); a missing prerequisite that the
 * project installs (the model, a fixture) is a failing CHECK, never a skip.
 * TEST_MAIN_END prints "N passed, N failed, N skipped" for this program and
 * returns non-zero on any failure. scripts/run_tests.sh adds them up and
 * names every skip.
 */
#ifndef MN_TEST_H
#define MN_TEST_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_pass, t_fail, t_skip;

#define TEST_SKIP(...)                                  \
    do {                                                \
        t_skip++;                                       \
        printf("SKIP %s:%d: ", __FILE__, __LINE__);     \
        printf(__VA_ARGS__);                            \
        putchar('\n');                                  \
    } while (0)

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            t_pass++;                                                     \
        } else {                                                          \
            t_fail++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

#define CHECK_NEAR(a, b, tol, what)                                                        \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%s: %.9g vs %.9g (tol %.3g)", what, \
          (double)(a), (double)(b), (double)(tol))

/* A whole file, NUL-terminated (*n, if given, its length), or NULL. */
static inline char *test_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = l >= 0 ? malloc((size_t)l + 1) : NULL;
    size_t got = b ? fread(b, 1, (size_t)l, f) : 0;
    fclose(f);
    if (!b) return NULL;
    b[got] = 0;
    if (n) *n = got;
    return b;
}

/* Path of the default model, or NULL (tests needing it are then skipped loudly). */
/* Entries of a folder, . and .. aside; -1 if it cannot be read (a spill file must never show). */
static inline int test_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return d ? n : -1;
}

static inline const char *test_model_path(void) {
    const char *p = getenv("MNEMO_MODEL");
    if (!p) p = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fclose(f);
    return p;
}

#define TEST_MAIN_END()                                                  \
    do {                                                                 \
        printf("%s: %d passed, %d failed, %d skipped\n", __FILE__, t_pass, t_fail, t_skip); \
        return t_fail ? 1 : 0;                                           \
    } while (0)

#endif
