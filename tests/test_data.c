/* test_data.c - training datasets: Gutenberg stripping, tokenisation into a
 * cache, cache reuse (proved by the file's inode/mtime and the from_cache
 * flag), rebuilding after corruption, truncation or a changed file, windows
 * inside one document's training part, validation windows in the held-out
 * part only, determinism from the seed.
 *
 * The tiny model's vocabulary is the 256 byte tokens (ids = byte values) plus
 * 4 specials, with no space prefix, so a document's tokens are the bytes of
 * its cleaned text (SPM turns each space into U+2581, three byte tokens) and
 * every check can be done on bytes. Document lines are unique across
 * documents, so any 16-token stretch tells where it came from.
 */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/gguf.h"
#include "mnemo.h"
#include "test.h"
#include "train/data.h"
#include "train/rng.h"

enum { C = 32, H = 2, KH = 1, D = 16, F = 64, V = 260, NL = 1 };

static void add_f32(mn_gguf_writer *w, const char *name, int64_t cols, int64_t rows, mn_rng *r) {
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) f[i] = (float)(mn_rng_normal(r) * 0.1);
    int64_t ne[2] = {cols, rows};
    mn_gguf_writer_add_tensor(w, name, MN_TYPE_F32, rows > 1 ? 2 : 1, ne, f);
    free(f);
}

/* A tiny Llama with a byte vocabulary (no space prefix). */
static int write_model(const char *path, uint64_t seed) {
    mn_rng r;
    mn_rng_seed(&r, seed);
    mn_gguf_writer *w = mn_gguf_writer_create();
    mn_gguf_writer_set_str(w, "general.architecture", "llama");
    mn_gguf_writer_set_str(w, "general.name", "tiny-bytes");
    mn_gguf_writer_set_u32(w, "llama.block_count", NL);
    mn_gguf_writer_set_u32(w, "llama.context_length", 64);
    mn_gguf_writer_set_u32(w, "llama.embedding_length", C);
    mn_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    mn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", KH);
    mn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    static char store[256][8];
    const char *toks[V];
    int32_t types[V];
    for (int b = 0; b < 256; b++) {
        snprintf(store[b], sizeof store[b], "<0x%02X>", b);
        toks[b] = store[b], types[b] = 6;
    }
    const char *sp[4] = {"<s>", "<x>", "</s>", "<pad>"};
    for (int i = 0; i < 4; i++) toks[256 + i] = sp[i], types[256 + i] = 3;
    float scores[V] = {0};
    mn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    mn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", V, toks, NULL);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MN_GGUF_FLOAT32, V, scores);
    mn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MN_GGUF_INT32, V, types);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256);
    mn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 258);
    mn_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 0);
    add_f32(w, "token_embd.weight", C, V, &r);
    add_f32(w, "output_norm.weight", C, 1, &r);
    char nm[64];
    static const struct {
        const char *s;
        int cols, rows;
    } mats[] = {{"attn_q", C, H * D},    {"attn_k", C, KH * D}, {"attn_v", C, KH * D}, {"attn_output", H * D, C},
                {"ffn_gate", C, F},      {"ffn_up", C, F},      {"ffn_down", F, C},     {"attn_norm", C, 1},
                {"ffn_norm", C, 1}};
    for (int l = 0; l < NL; l++)
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, mats[k].s);
            add_f32(w, nm, mats[k].cols, mats[k].rows, &r);
        }
    int rc = mn_gguf_writer_write(w, path);
    mn_gguf_writer_free(w);
    return rc;
}

static char dir[64];

static void write_text(const char *name, const char *text) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL, "create %s", p);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Numbered lines, so any 16-byte stretch says where it came from. */
static char *numbered(const char *tag, int lines, const char *eol) {
    size_t cap = (size_t)lines * 48 + 1;
    char *s = malloc(cap), *p = s;
    for (int i = 0; i < lines; i++)
        p += snprintf(p, cap - (size_t)(p - s), "%s%04d.%s%04d.%s%04d%s", tag, i, tag, i, tag, i, eol);
    return s;
}

static void clean_unit(void) {
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"header\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\nbody 1\r\nbody 2\r\n*** END OF THE PROJECT "
         "GUTENBERG EBOOK X ***\r\nlicense\r\n",
         "body 1\nbody 2\n"},
        {"h\n***START OF THIS PROJECT GUTENBERG EBOOK Y***\nkept\n", "kept\n"},           /* no space, no END */
        {"h\n*** start of the project gutenberg ebook ***\nz\n***   End of it\ntail", "z\n"}, /* case, spaces */
        {"no markers\r\nat all\r\n", "no markers\nat all\n"},
        {"*** START: FULL LICENSE ***\nlicense text\n", "*** START: FULL LICENSE ***\nlicense text\n"},
        {"a line with *** START OF inside\nx", "a line with *** START OF inside\nx"}, /* only at line start */
        {"lone \r stays\r\n", "lone \r stays\n"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        size_t n = strlen(cases[i].in);
        memcpy(buf, cases[i].in, n);
        size_t m = mn_text_clean(buf, n);
        CHECK(m == strlen(cases[i].out) && !memcmp(buf, cases[i].out, m), "clean case %zu: got '%.*s'", i, (int)m,
              buf);
    }
}

static int same_file(const char *path, const struct stat *a) {
    struct stat b;
    if (stat(path, &b)) return 0;
    return a->st_ino == b.st_ino && a->st_mtim.tv_sec == b.st_mtim.tv_sec && a->st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

static int same_tokens(const mn_dataset *x, const mn_dataset *y) {
    if (mn_dataset_n_docs(x) != mn_dataset_n_docs(y)) return 0;
    for (int i = 0; i < mn_dataset_n_docs(x); i++) {
        int64_t n1, n2, t1, t2;
        const int32_t *a = mn_dataset_doc(x, i, &n1, &t1), *b = mn_dataset_doc(y, i, &n2, &t2);
        if (n1 != n2 || t1 != t2 || memcmp(a, b, sizeof(int32_t) * (size_t)n1)) return 0;
    }
    return 1;
}

/* Finds w[0..n) inside doc i's tokens; returns its offset or -1. */
static int64_t find_in(const int32_t *doc, int64_t len, const int32_t *w, int n) {
    for (int64_t o = 0; o + n <= len; o++)
        if (doc[o] == w[0] && !memcmp(doc + o, w, sizeof(int32_t) * (size_t)n)) return o;
    return -1;
}

int main(void) {
    clean_unit();
    char mp[64], cache[96], glob_[96];
    snprintf(mp, sizeof mp, "/tmp/mnemo-data-model-XXXXXX");
    int fd = mkstemp(mp);
    if (fd >= 0) close(fd);
    snprintf(dir, sizeof dir, "/tmp/mnemo-data-XXXXXX");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(cache, sizeof cache, "%s/cache/deeper", dir); /* created with parents */
    snprintf(glob_, sizeof glob_, "%s/*.txt", dir);
    CHECK(write_model(mp, 1) == 0, "model: %s", mn_last_error());
    mn_model *m = NULL;
    CHECK(mn_model_load(mp, &m) == 0, "load: %s", mn_last_error());
    if (!m) return 1;

    /* four documents, in path order a, b, c, d; a subdirectory matching the glob is skipped */
    char *ba = numbered("A", 60, "\r\n"), *bb = numbered("B", 30, "\n"), *bc = numbered("C", 90, "\n");
    size_t cap = strlen(ba) + 512;
    char *ta = malloc(cap);
    snprintf(ta, cap,
             "The Project Gutenberg EBook of A\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK A ***\r\n%s*** END OF "
             "THIS PROJECT GUTENBERG EBOOK A ***\r\n\r\n*** START: FULL LICENSE ***\r\nlicense\r\n",
             ba);
    write_text("a.txt", ta);
    char *tb = malloc(strlen(bb) + 256);
    sprintf(tb, "header of b\n***START OF THE PROJECT GUTENBERG EBOOK B***\n%s", bb);
    write_text("b.txt", tb);
    write_text("c.txt", bc);
    write_text("d.txt", "tiny\n");
    char sub[128];
    snprintf(sub, sizeof sub, "%s/sub.txt", dir);
    mkdir(sub, 0755);
    /* what each document must hold after cleaning */
    char *ca = numbered("A", 60, "\n");
    const char *want[4] = {ca, bb, bc, "tiny\n"};

    mn_dataset *d = NULL;
    int rc = mn_dataset_open(m, glob_, cache, 0.1, &d);
    CHECK(rc == 0 && d, "open: %s", mn_last_error());
    if (!d) return 1;
    CHECK(mn_dataset_n_docs(d) == 4, "docs %d (the directory must be skipped)", mn_dataset_n_docs(d));
    CHECK(!mn_dataset_from_cache(d), "first open builds");
    int64_t sum_t = 0, sum_v = 0;
    for (int i = 0; i < 4 && i < mn_dataset_n_docs(d); i++) {
        int64_t n, nt;
        const int32_t *t = mn_dataset_doc(d, i, &n, &nt);
        char exp[8192];
        size_t wl = 0;
        for (const char *c = want[i]; *c && wl + 3 < sizeof exp; c++)
            if (*c == ' ')
                memcpy(exp + wl, "\xe2\x96\x81", 3), wl += 3;
            else
                exp[wl++] = *c;
        int eq = n == (int64_t)wl;
        for (int64_t k = 0; eq && k < n; k++) eq = t[k] == (unsigned char)exp[k];
        CHECK(eq, "doc %d (%s): %lld tokens, want the %zu bytes of its cleaned text", i, mn_dataset_doc_path(d, i),
              (long long)n, wl);
        CHECK(nt == n - (int64_t)floor(0.1 * (double)n), "doc %d split: %lld of %lld", i, (long long)nt, (long long)n);
        sum_t += nt, sum_v += n - nt;
    }
    CHECK(strstr(mn_dataset_doc_path(d, 0), "/a.txt") && strstr(mn_dataset_doc_path(d, 3), "/d.txt"), "path order");
    CHECK(sum_t == mn_dataset_n_train_tokens(d) && sum_v == mn_dataset_n_val_tokens(d), "token counts");

    /* second open reads the cache, which is not rewritten */
    const char *cpath = mn_dataset_cache_path(d);
    struct stat st0;
    CHECK(stat(cpath, &st0) == 0, "cache file %s exists", cpath);
    mn_dataset *d2 = NULL;
    CHECK(mn_dataset_open(m, glob_, cache, 0.1, &d2) == 0, "reopen: %s", mn_last_error());
    CHECK(d2 && mn_dataset_from_cache(d2) && same_tokens(d, d2), "second open reads the same tokens from the cache");
    CHECK(same_file(cpath, &st0), "the cache was not rewritten (same inode and mtime)");
    mn_dataset_free(d2);

    /* a corrupted byte anywhere, or a truncation, makes a rebuild with the same tokens */
    long csize = (long)st0.st_size;
    static const double where[] = {0.0, 0.3, 0.5, 0.999};
    for (int k = 0; k < 4; k++) {
        long at = (long)(where[k] * (double)csize);
        FILE *f = fopen(cpath, "r+b");
        if (f) {
            fseek(f, at, SEEK_SET);
            int c = fgetc(f);
            fseek(f, at, SEEK_SET);
            fputc(c ^ 0x10, f);
            fclose(f);
        }
        d2 = NULL;
        CHECK(mn_dataset_open(m, glob_, cache, 0.1, &d2) == 0, "open after corruption: %s", mn_last_error());
        CHECK(d2 && !mn_dataset_from_cache(d2) && same_tokens(d, d2), "byte %ld of %ld corrupted: rebuilt", at, csize);
        mn_dataset_free(d2);
    }
    static const long cuts[] = {0, 7, 31, 40, 500, -8, -1};
    for (int k = 0; k < 7; k++) {
        long len = cuts[k] >= 0 ? cuts[k] : csize + cuts[k];
        CHECK(truncate(cpath, len) == 0, "truncate");
        d2 = NULL;
        CHECK(mn_dataset_open(m, glob_, cache, 0.1, &d2) == 0, "open after truncation: %s", mn_last_error());
        CHECK(d2 && !mn_dataset_from_cache(d2) && same_tokens(d, d2), "cache cut to %ld of %ld bytes: rebuilt", len,
              csize);
        mn_dataset_free(d2);
    }
    {
        struct stat st;
        CHECK(stat(cpath, &st) == 0 && st.st_size == csize, "the rebuilt cache is whole again");
    }

    /* another val fraction reuses the cache (the split is not cached) */
    d2 = NULL;
    CHECK(mn_dataset_open(m, glob_, cache, 0.5, &d2) == 0 && d2 && mn_dataset_from_cache(d2), "val 0.5 from cache");
    if (d2) CHECK(mn_dataset_n_val_tokens(d2) > 4 * mn_dataset_n_val_tokens(d), "val 0.5 holds out more");
    mn_dataset_free(d2);

    /* training windows: inside one document's training part; documents in proportion to their windows */
    enum { N = 16, S = 3000 };
    int32_t w[N], w2[N];
    mn_rng r1, r2;
    mn_rng_seed(&r1, 123);
    mn_rng_seed(&r2, 123);
    long per_doc[4] = {0}, outside = 0, differ = 0;
    for (int s = 0; s < S; s++) {
        if (mn_dataset_sample(d, &r1, N, w) || mn_dataset_sample(d, &r2, N, w2)) {
            outside = -1;
            break;
        }
        differ += memcmp(w, w2, sizeof w) != 0;
        int found = -1;
        for (int i = 0; i < 4 && found < 0; i++) {
            int64_t n, nt;
            const int32_t *t = mn_dataset_doc(d, i, &n, &nt);
            if (find_in(t, nt, w, N) >= 0) found = i;
        }
        if (found < 0)
            outside++;
        else
            per_doc[found]++;
    }
    CHECK(outside == 0, "%ld of %d windows not inside a training part (%s)", outside, S, mn_last_error());
    CHECK(differ == 0, "same seed, different windows (%ld)", differ);
    CHECK(per_doc[3] == 0, "the 5-token document has no 16-token window");
    {
        double wins[3], tot = 0;
        for (int i = 0; i < 3; i++) {
            int64_t n, nt;
            mn_dataset_doc(d, i, &n, &nt);
            wins[i] = (double)(nt - N + 1), tot += wins[i];
        }
        for (int i = 0; i < 3; i++) {
            double expect = S * wins[i] / tot, sd = sqrt(expect);
            CHECK(fabs((double)per_doc[i] - expect) < 5 * sd, "doc %d sampled %ld times, expected %.0f", i,
                  per_doc[i], expect);
        }
    }
    mn_rng_seed(&r2, 124);
    mn_rng_seed(&r1, 123);
    mn_dataset_sample(d, &r1, N, w);
    mn_dataset_sample(d, &r2, N, w2);
    CHECK(memcmp(w, w2, sizeof w) != 0, "another seed, another window");
    CHECK(mn_dataset_sample(d, &r1, 100000, w) == MN_ERANGE && strstr(mn_last_error(), "100000 training tokens"),
          "window longer than every document: %s", mn_last_error());
    CHECK(mn_dataset_sample(d, &r1, 0, w) == MN_EINVAL, "n 0");

    /* validation windows: consecutive, inside the held-out part, deterministic */
    int64_t nv = mn_dataset_n_val_windows(d, N), expect_nv = 0;
    for (int i = 0; i < 4; i++) {
        int64_t n, nt;
        mn_dataset_doc(d, i, &n, &nt);
        expect_nv += (n - nt) / N;
    }
    CHECK(nv == expect_nv && nv > 10, "val windows %lld, want %lld", (long long)nv, (long long)expect_nv);
    int64_t bad = 0, k = 0;
    for (int i = 0; i < 4; i++) {
        int64_t n, nt;
        const int32_t *t = mn_dataset_doc(d, i, &n, &nt);
        for (int64_t j = 0; j < (n - nt) / N; j++, k++) {
            mn_dataset_val_window(d, k, N, w);
            /* window k is doc i's tokens [nt + j*N, nt + (j+1)*N): past every training token */
            bad += memcmp(w, t + nt + j * N, sizeof w) != 0;
            bad += find_in(t, nt, w, N) >= 0; /* and not a training stretch */
        }
    }
    CHECK(bad == 0 && k == nv, "%lld validation windows misplaced", (long long)bad);
    CHECK(mn_dataset_val_window(d, nv, N, w) == MN_ERANGE && mn_dataset_val_window(d, -1, N, w) == MN_ERANGE,
          "val window out of range");

    /* a changed file gets a new cache; the old one is left alone */
    write_text("d.txt", "tiny, but now a little longer\n");
    d2 = NULL;
    CHECK(mn_dataset_open(m, glob_, cache, 0.1, &d2) == 0, "open after edit: %s", mn_last_error());
    if (d2) {
        CHECK(!mn_dataset_from_cache(d2) && strcmp(mn_dataset_cache_path(d2), cpath), "an edited file: new cache");
        int64_t n;
        mn_dataset_doc(d2, 3, &n, NULL);
        CHECK(n == 30 + 2 * 5, "edited doc has %lld tokens", (long long)n); /* 5 spaces of 3 tokens */
    }
    mn_dataset_free(d2);

    /* errors */
    char g2[128];
    snprintf(g2, sizeof g2, "%s/*.nothing", dir);
    d2 = (mn_dataset *)&d2;
    CHECK(mn_dataset_open(m, g2, cache, 0.1, &d2) == MN_ENOTFOUND && !d2 && strstr(mn_last_error(), "*.nothing"),
          "no match: %s", mn_last_error());
    snprintf(g2, sizeof g2, "%s/sub.*", dir);
    CHECK(mn_dataset_open(m, g2, cache, 0.1, &d2) == MN_ENOTFOUND && strstr(mn_last_error(), "no regular file"),
          "only a directory matches: %s", mn_last_error());
    CHECK(mn_dataset_open(m, glob_, cache, 1.0, &d2) == MN_EINVAL, "val_frac 1");
    CHECK(mn_dataset_open(m, glob_, "/proc/nope", 0.1, &d2) == MN_EIO && strstr(mn_last_error(), "/proc/nope"),
          "uncreatable cache dir: %s", mn_last_error());

    mn_dataset_free(d);
    mn_model_free(m);
    /* clean up the temporary tree */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    unlink(mp);
    free(ba), free(bb), free(bc), free(ta), free(tb), free(ca);
    TEST_MAIN_END();
}
