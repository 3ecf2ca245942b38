/* common.c - helpers shared by the CLI commands. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "memory/recall.h"

int cli_fail(const char *what) {
    fprintf(stderr, "mnemo: %s: %s\n", what, mn_last_error());
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "mnemo %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'mnemo %s --help')\n", cmd);
    return 2;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A file shipped with the repository (rel, relative to its root): in the
 * working directory, next to the executable (./mnemo) or one level up
 * (build/mnemo); NULL if none. */
static const char *find_shipped(const char *rel, char *buf, size_t cap) {
    if (file_exists(rel)) return rel;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *dir = dirname(exe);
        snprintf(buf, cap, "%s/%s", dir, rel);
        if (file_exists(buf)) return buf;
        snprintf(buf, cap, "%s/../%s", dir, rel);
        if (file_exists(buf)) return buf;
    }
    return NULL;
}

const char *cli_model_path(const char *given) {
    static char buf[PATH_MAX + 64];
    if (given) return given;
    const char *env = getenv("MNEMO_MODEL");
    if (env && *env) return env;
    const char *p = find_shipped(MN_DEFAULT_MODEL, buf, sizeof buf);
    return p ? p : MN_DEFAULT_MODEL;
}

const char *cli_adapter_path(const char *given) {
    static char buf[PATH_MAX + 64];
    if (given) return given;
    const char *env = getenv("MNEMO_ADAPTER");
    if (env && !strcmp(env, "none")) return NULL; /* no default, as on a checkout without adapters/ */
    if (env && *env) return env;
    return find_shipped(MN_DEFAULT_ADAPTER, buf, sizeof buf);
}

int cli_chat_wrap(const mn_model *m, const char *before, const char *after, const char *reply_prefix, char **pre,
                  char **post) {
    *pre = *post = NULL;
    char *tmpl = NULL, *mark = NULL;
    mn_chat_msg msg = {"user", "\x01"}; /* a marker where the text goes */
    if (mn_chat_format(mn_model_tokenizer(m), &msg, 1, 1, &tmpl) || !(mark = strchr(tmpl, '\x01'))) {
        free(tmpl);
        return cli_fail("chat template");
    }
    *mark = 0;
    *pre = malloc(strlen(tmpl) + strlen(before) + 1);
    *post = malloc(strlen(after) + strlen(mark + 1) + strlen(reply_prefix) + 1);
    if (!*pre || !*post) {
        free(tmpl), free(*pre), free(*post);
        *pre = *post = NULL;
        fprintf(stderr, "mnemo: out of memory\n");
        return 1;
    }
    sprintf(*pre, "%s%s", tmpl, before);
    sprintf(*post, "%s%s%s", after, mark + 1, reply_prefix);
    free(tmpl);
    return 0;
}

void cli_chat_note(const mn_model *m) {
    mn_chat_template ct;
    if (mn_chat_template_from_tokenizer(mn_model_tokenizer(m), &ct)) return;
    if (ct.fallback) fprintf(stderr, "mnemo: %s\n", ct.note);
    mn_chat_template_clear(&ct);
}

int cli_load_model(const char *given, mn_model **out) {
    const char *path = cli_model_path(given);
    int rc = mn_model_load(path, out);
    if (rc) {
        fprintf(stderr, "mnemo: cannot load model: %s\n", mn_last_error());
        if (!given && rc == MN_ENOTFOUND)
            fprintf(stderr, "mnemo: the default model is fetched by 'make model'; or pass -m FILE.gguf\n");
        return 1;
    }
    return 0;
}

int cli_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mnemo: cannot open '%s': %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = cap > ((size_t)1 << 31) ? NULL : realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        fprintf(stderr, "mnemo: cannot read '%s'%s\n", path, buf ? "" : " (too large or out of memory)");
        return 1;
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    if (!s) return cli_usage_error(cmd, "%s needs a value", opt);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cli_usage_error(cmd, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out) {
    if (!s) return cli_usage_error(cmd, "%s needs a value", opt);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return cli_usage_error(cmd, "%s expects a number in [%g, %g], got '%s'", opt, lo, hi, s);
    *out = v;
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

long cli_peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

int cli_tokenize(const mn_model *m, const char *text, size_t len, int add_bos, int parse_special, int32_t **ids,
                 int64_t *n) {
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    int64_t cap = (int64_t)len + 16, got = 0;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (!buf) {
        fprintf(stderr, "mnemo: out of memory tokenizing %zu bytes\n", len);
        return 1;
    }
    int rc = mn_tokenize(tok, text, len, add_bos, parse_special, buf, cap, &got);
    if (rc == MN_ERANGE && got > cap) {
        int32_t *nb = realloc(buf, sizeof(int32_t) * (size_t)got);
        if (!nb) {
            free(buf);
            return 1;
        }
        buf = nb;
        cap = got;
        rc = mn_tokenize(tok, text, len, add_bos, parse_special, buf, cap, &got);
    }
    if (rc) {
        free(buf);
        return cli_fail("tokenize");
    }
    *ids = buf;
    *n = got;
    return 0;
}

int cli_piece(const mn_tokenizer *tok, int32_t id, char *buf, size_t cap) {
    size_t len = 0;
    const char *p = mn_token_piece(tok, id, 0, &len);
    if (!p) return 0;
    if (len > cap) len = cap;
    memcpy(buf, p, len);
    return (int)len;
}

int cli_set_mem_dir(const char *cmd, const char *dir) {
    if (!dir || dir[0] != '/')
        return cli_usage_error(cmd, "--mem-dir takes an absolute path every server sees (got '%s')", dir ? dir : "");
    if (setenv("MNEMO_MEM_DIR", dir, 1)) return cli_usage_error(cmd, "--mem-dir: cannot set it");
    return 0;
}

int cli_set_db_seconds(const char *cmd, const char *opt, const char *v) {
    char *end = NULL;
    const double x = v ? strtod(v, &end) : -1;
    if (!v || end == v || *end || !(x >= 0) || x > 86400)
        return cli_usage_error(cmd, "%s takes seconds, 0 for no limit (got '%s')", opt, v ? v : "");
    const char *env = !strcmp(opt, "--db-timeout") ? "MNEMO_DB_TIMEOUT" : "MNEMO_DB_CONNECT_TIMEOUT";
    if (setenv(env, v, 1)) return cli_usage_error(cmd, "%s: cannot set it", opt);
    return 0;
}

int cli_parse_recall(const char *cmd, const char *v, int32_t max, long *k) {
    int32_t got;
    if (mn_recall_parse_k(v, max, &got))
        return cli_usage_error(cmd, "--recall takes auto or a count of segments 0..%d (got '%s')", max, v ? v : "");
    *k = got;
    return 0;
}
