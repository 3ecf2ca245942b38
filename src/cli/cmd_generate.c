/* cmd_generate.c - `mnemo generate` (one completion) and `mnemo chat` (a conversation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "memory/memory.h"

typedef struct {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    const char *once;
    long n_predict, n_ctx, threads, seed, top_k, last_n;
    double temp, top_p, min_p, repeat;
    int raw, no_special, quiet, verbose, ignore_eog;
    int mode;          /* -1: plain context; else an mn_mode */
    long window, sinks, max_prompt, max_memory;
    int sinks_given;
    const char *adapter; /* --mode memory */
} gen_opts;

static void gen_defaults(gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->n_ctx = 0;
    o->threads = 0;
    o->seed = 0;
    mn_sampler_params sp = mn_sampler_default_params();
    o->temp = sp.temperature;
    o->top_k = sp.top_k;
    o->top_p = sp.top_p;
    o->min_p = sp.min_p;
    o->repeat = sp.repeat_penalty;
    o->last_n = sp.repeat_last_n;
    o->mode = -1;
    o->window = 1024;
    o->sinks = 4;
}

static const char *MODE_HELP =
    "  --mode M          full | truncate | sinks | memory: how the cache is bounded when the text\n"
    "                    outgrows it (truncate keeps the last --window tokens; sinks also keeps the\n"
    "                    first --sinks, default 4; both run for any length)\n"
    "  --window N        cells kept by truncate/sinks (default 1024)\n"
    "  --mode memory -a ADAPTER  compress the text into memory as it goes: UIO / summary adapters\n"
    "                    compress every full segment, beacon adapters condense every window (see\n"
    "                    'mnemo adapter init'); -c bounds memory + local cells (default: the model's\n"
    "                    trained context); --max-memory N keeps only the newest N memory slots\n"
    "                    (flat cost for any length; older context is lost)\n";

static const char *SAMPLING_HELP =
    "  -n N              tokens to generate (default 128; generation also stops at end-of-turn)\n"
    "  --temp T          temperature; 0 = greedy (default 0.8)\n"
    "  --top-k K         keep the K most likely tokens; 0 = off (default 40)\n"
    "  --top-p P         nucleus sampling; 1 = off (default 0.95)\n"
    "  --min-p P         drop tokens below P x the top probability; 0 = off (default 0.05)\n"
    "  --repeat-penalty R  penalise the last --repeat-last-n tokens; 1 = off (default 1.0)\n"
    "  --repeat-last-n N (default 64)\n"
    "  --seed S          random seed (default 0; same seed, same output)\n"
    "  -c, --ctx N       context size in tokens (default: the model's)\n"
    "  -t N              threads (default: all cores)\n"
    "  -m FILE           model GGUF (default: " MN_DEFAULT_MODEL ")\n";

/* Parses one option shared by generate and chat; returns 1 if consumed, 0 if not
 * recognised, or -2 on a bad value. */
static int parse_common(const char *cmd, gen_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
#define TAKE_INT(name, field, lo, hi)                                                \
    if (!strcmp(a, name)) {                                                         \
        if (cli_parse_int(cmd, a, v, lo, hi, &o->field)) return -2;                 \
        (*i)++;                                                                     \
        return 1;                                                                   \
    }
#define TAKE_FLT(name, field, lo, hi)                                                \
    if (!strcmp(a, name)) {                                                         \
        if (cli_parse_float(cmd, a, v, lo, hi, &o->field)) return -2;               \
        (*i)++;                                                                     \
        return 1;                                                                   \
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!v) return cli_usage_error(cmd, "%s needs a value", a), -2;
        o->model = v;
        (*i)++;
        return 1;
    }
    TAKE_INT("-n", n_predict, 0, 1 << 24)
    TAKE_INT("--n-predict", n_predict, 0, 1 << 24)
    TAKE_INT("-c", n_ctx, 0, 1 << 22)
    TAKE_INT("--ctx", n_ctx, 0, 1 << 22)
    TAKE_INT("-t", threads, 0, 512)
    TAKE_INT("--threads", threads, 0, 512)
    TAKE_INT("--seed", seed, 0, 0x7fffffffL)
    TAKE_INT("--top-k", top_k, 0, 1 << 24)
    TAKE_INT("--repeat-last-n", last_n, 0, 1 << 20)
    TAKE_FLT("--temp", temp, 0, 100)
    TAKE_FLT("--top-p", top_p, 0, 1)
    TAKE_FLT("--min-p", min_p, 0, 1)
    TAKE_FLT("--repeat-penalty", repeat, 0.01, 100)
    TAKE_INT("--window", window, 8, 1 << 22)
    TAKE_INT("--max-memory", max_memory, 0, 1 << 22)
    if (!strcmp(a, "--sinks")) {
        if (cli_parse_int(cmd, a, v, 0, 1 << 20, &o->sinks)) return -2;
        o->sinks_given = 1;
        (*i)++;
        return 1;
    }
    if (!strcmp(a, "--mode")) {
        if (!v || (o->mode = mn_mode_parse(v)) < 0)
            return cli_usage_error(cmd, "--mode must be full, truncate, sinks or memory"), -2;
        (*i)++;
        return 1;
    }
    if (!strcmp(a, "-a") || !strcmp(a, "--adapter")) {
        if (!v) return cli_usage_error(cmd, "%s needs a value", a), -2;
        o->adapter = v;
        (*i)++;
        return 1;
    }
    return 0;
#undef TAKE_INT
#undef TAKE_FLT
}

typedef struct {
    mn_model *m;
    mn_context *ctx;
    mn_stream *stream; /* NULL: plain context */
    mn_adapter *ad;    /* memory mode */
    mn_memory_binding bind;
    mn_sampler *smp;
    float *logits;
    int ignore_eog; /* benchmarks: always generate n tokens */
    double cpu_prompt, cpu_gen; /* CPU seconds of the last run_generation */
} session;

/* Runs tokens through the stream if there is one (it evicts as its mode says). */
static int session_feed(session *s, const int32_t *ids, int32_t n) {
    return s->stream ? mn_stream_feed(s->stream, ids, n, s->logits, 0) : mn_decode(s->ctx, ids, n, s->logits, 0);
}

static int session_open(const gen_opts *o, session *s) {
    memset(s, 0, sizeof *s);
    if (cli_load_model(o->model, &s->m)) return 1;
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)o->n_ctx;
    cp.n_threads = (int)o->threads;
    if (o->mode == MN_MODE_TRUNCATE || o->mode == MN_MODE_SINKS) cp.n_ctx = (int32_t)o->window;
    /* memory mode: the cache holds [sinks | memory | local]; -c bounds it
     * (default: the trained context, i.e. the position budget) */
    if (o->mode == MN_MODE_MEMORY) {
        if (mn_adapter_load(s->m, o->adapter, &s->ad) || mn_memory_bind(s->m, s->ad, &s->bind))
            return cli_fail("adapter");
        if (s->bind.kind == MN_COMP_BEACON && o->sinks_given) s->bind.beacon.params.sinks = (int32_t)o->sinks;
    }
    if (mn_context_create(s->m, &cp, &s->ctx)) return cli_fail("cannot create context");
    if (o->mode >= 0) {
        mn_stream_params stp = mn_stream_default_params();
        stp.mode = (mn_mode)o->mode;
        stp.window = o->mode == MN_MODE_TRUNCATE || o->mode == MN_MODE_SINKS ? (int32_t)o->window : 0;
        stp.n_sinks = (int32_t)o->sinks;
        if (mn_stream_create(s->ctx, &stp, &s->stream)) return cli_fail("stream");
        if (o->mode == MN_MODE_MEMORY && (mn_stream_attach(s->stream, &s->bind, (int)o->threads) ||
                                          mn_stream_set_memory_cap(s->stream, (int32_t)o->max_memory)))
            return cli_fail("adapter");
    }
    mn_sampler_params sp = mn_sampler_default_params();
    sp.temperature = (float)o->temp;
    sp.top_k = (int32_t)o->top_k;
    sp.top_p = (float)o->top_p;
    sp.min_p = (float)o->min_p;
    sp.repeat_penalty = (float)o->repeat;
    sp.repeat_last_n = (int32_t)o->last_n;
    sp.seed = (uint64_t)o->seed;
    if (mn_sampler_create(&sp, mn_model_n_vocab(s->m), &s->smp)) return cli_fail("bad sampling options");
    s->logits = malloc(sizeof(float) * (size_t)mn_model_n_vocab(s->m));
    if (!s->logits) return cli_fail("out of memory");
    return 0;
}

static void session_close(session *s) {
    free(s->logits);
    mn_stream_free(s->stream);
    mn_memory_unbind(&s->bind);
    mn_adapter_free(s->ad);
    mn_sampler_free(s->smp);
    mn_context_free(s->ctx);
    mn_model_free(s->m);
}

/* CPU seconds (user + system, all threads) this process has used: unlike wall
 * time it does not grow when other programs share the cores. */
static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* Feeds `ids` after what the cache holds, then samples up to n_predict tokens,
 * streaming each piece to stdout. Returns 0, or 1 after printing an error. */
static int run_generation(session *s, const int32_t *ids, int64_t n, long n_predict, int64_t *n_gen,
                          double *t_prompt, double *t_gen) {
    const mn_tokenizer *tok = mn_model_tokenizer(s->m);
    double t0 = cli_now(), c0 = cpu_seconds();
    for (int64_t i = 0; i < n; i++) mn_sampler_accept(s->smp, ids[i]);
    if (n > 0 && session_feed(s, ids, (int32_t)n)) return cli_fail("prompt");
    double t1 = cli_now();
    s->cpu_prompt = cpu_seconds() - c0;
    int64_t g = 0;
    char piece[256];
    for (; g < n_predict; g++) {
        int32_t id = mn_sampler_sample(s->smp, s->logits);
        mn_sampler_accept(s->smp, id);
        if (mn_token_is_eog(tok, id) && !s->ignore_eog) break;
        int len = cli_piece(tok, id, piece, sizeof piece);
        if (len > 0) fwrite(piece, 1, (size_t)len, stdout);
        fflush(stdout);
        if (!s->stream && mn_kv_n_cells(s->ctx) >= mn_context_n_ctx(s->ctx)) {
            fprintf(stderr, "\nmnemo: context full (%d tokens); stopping (--mode sinks keeps going)\n",
                    mn_context_n_ctx(s->ctx));
            g++;
            break;
        }
        if (session_feed(s, &id, 1)) return cli_fail("decode");
    }
    *n_gen = g;
    s->cpu_gen = cpu_seconds() - c0 - s->cpu_prompt;
    *t_prompt = t1 - t0;
    *t_gen = cli_now() - t1;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    gen_defaults(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo generate [-m FILE] (-p TEXT | -f FILE) [options]\n\n"
                   "Continues TEXT with the model (no chat template; see 'mnemo chat').\n\n"
                   "  -p TEXT           the prompt\n"
                   "  -f FILE           read the prompt from FILE\n"
                   "  --no-special      treat special-token text like <|im_start|> as plain text\n"
                   "  --max-prompt-tokens N  keep only the first N tokens of the prompt\n"
                   "  --ignore-eog      generate all -n tokens even past an end-of-turn token (benchmarks)\n"
                   "  -q                no timing summary on stderr (-v adds cache size and peak RSS)\n%s%s",
                   SAMPLING_HELP, MODE_HELP);
            return 0;
        }
        int r = parse_common("generate", &o, argc, argv, &i);
        if (r == -2) return 2;
        if (r == 1) continue;
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (i + 1 >= argc) return cli_usage_error("generate", "-p needs a value");
            o.prompt = argv[++i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (i + 1 >= argc) return cli_usage_error("generate", "-f needs a value");
            o.prompt_file = argv[++i];
        } else if (!strcmp(a, "--max-prompt-tokens")) {
            if (cli_parse_int("generate", a, i + 1 < argc ? argv[i + 1] : NULL, 1, 1L << 40, &o.max_prompt)) return 2;
            i++;
        } else if (!strcmp(a, "--no-special")) {
            o.no_special = 1;
        } else if (!strcmp(a, "-q")) {
            o.quiet = 1;
        } else if (!strcmp(a, "-v")) {
            o.verbose = 1;
        } else if (!strcmp(a, "--ignore-eog")) {
            o.ignore_eog = 1;
        } else {
            return cli_usage_error("generate", "unknown option '%s'", a);
        }
    }
    if (!o.prompt && !o.prompt_file) return cli_usage_error("generate", "give a prompt with -p TEXT or -f FILE");
    if (o.mode == MN_MODE_MEMORY && !(o.adapter = cli_adapter_path(o.adapter)))
        return cli_usage_error("generate", "--mode memory needs -a ADAPTER (no shipped adapter found)");
    if (o.mode != MN_MODE_MEMORY && o.adapter) return cli_usage_error("generate", "-a ADAPTER goes with --mode memory");
    char *text = NULL;
    size_t len;
    if (o.prompt_file) {
        if (cli_read_file(o.prompt_file, &text, &len)) return 1;
    } else {
        text = strdup(o.prompt);
        len = strlen(text);
    }
    session s;
    int rc = session_open(&o, &s);
    s.ignore_eog = o.ignore_eog;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (!rc) rc = cli_tokenize(s.m, text, len, mn_tokenizer_adds_bos(mn_model_tokenizer(s.m)), !o.no_special, &ids, &n);
    if (!rc && n == 0) rc = cli_usage_error("generate", "the prompt is empty");
    if (!rc && o.max_prompt && n > o.max_prompt) {
        /* the echoed text is the kept tokens' */
        n = o.max_prompt;
        size_t need = 0;
        if (mn_detokenize(mn_model_tokenizer(s.m), ids, n, 0, NULL, 0, &need) == MN_ERANGE) {
            char *t = malloc(need + 1);
            if (t && !mn_detokenize(mn_model_tokenizer(s.m), ids, n, 0, t, need + 1, &need)) {
                free(text);
                text = t;
                len = need;
            } else {
                free(t);
            }
        }
    }
    if (!rc && !s.stream && n >= mn_context_n_ctx(s.ctx)) {
        fprintf(stderr, "mnemo: the prompt has %lld tokens but the context holds %d; use a larger -c or a shorter prompt\n",
                (long long)n, mn_context_n_ctx(s.ctx));
        rc = 1;
    }
    if (!rc) {
        fwrite(text, 1, len, stdout);
        int64_t g = 0;
        double tp = 0, tg = 0;
        rc = run_generation(&s, ids, n, o.n_predict, &g, &tp, &tg);
        printf("\n");
        fflush(stdout);
        if (!rc && !o.quiet)
            fprintf(stderr, "mnemo: prompt %lld tokens in %.2f s (%.1f tok/s), generated %lld in %.2f s (%.1f tok/s)\n",
                    (long long)n, tp, n / (tp > 0 ? tp : 1e-9), (long long)g, tg, g / (tg > 0 ? tg : 1e-9));
        if (!rc && o.verbose)
            fprintf(stderr,
                    "mnemo: {\"prompt_tokens\": %lld, \"prompt_s\": %.3f, \"generated\": %lld, \"gen_s\": %.3f, "
                    "\"prompt_cpu_s\": %.3f, \"gen_cpu_s\": %.3f, "
                    "\"kv_cells\": %d, \"kv_bytes\": %zu, \"memory_slots\": %d, \"peak_rss_kib\": %ld}\n",
                    (long long)n, tp, (long long)g, tg, s.cpu_prompt, s.cpu_gen, mn_kv_n_cells(s.ctx),
                    mn_context_kv_bytes(s.ctx),
                    s.stream ? mn_stream_n_memory(s.stream) : 0, cli_peak_rss_kib());
    }
    free(ids);
    free(text);
    session_close(&s);
    return rc;
}

/* One chat turn through a stream (--mode truncate|sinks|memory): the part of
 * the rendered conversation `prompt` after *consumed (the text already fed) is
 * tokenized and fed; the answer is generated, streamed to stdout and returned
 * (*answer, malloc'd); *consumed then ends with the answer and its end-of-turn
 * token, so the next turn continues exactly where the model stopped. The cache
 * stays bounded whatever the conversation's length. */
static int chat_stream_turn(session *s, const gen_opts *o, const char *prompt, const char *before, char **consumed,
                            char **answer) {
    const mn_tokenizer *tok = mn_model_tokenizer(s->m);
    size_t clen = *consumed ? strlen(*consumed) : 0, blen = before ? strlen(before) : 0;
    const char *delta = prompt;
    int first = clen == 0;
    if (clen && !strncmp(prompt, *consumed, clen)) delta = prompt + clen;
    /* the template re-rendered the past differently from what was read (e.g.
     * whitespace around the answer): feed the new message's own rendering */
    else if (clen && blen && !strncmp(prompt, before, blen)) delta = prompt + blen;
    int32_t *ids;
    int64_t n;
    if (cli_tokenize(s->m, delta, strlen(delta), first && mn_tokenizer_adds_bos(tok), 1, &ids, &n)) return 1;
    double t0 = cli_now();
    int rc = 0;
    for (int64_t i = 0; i < n; i++) mn_sampler_accept(s->smp, ids[i]);
    if (n > 0 && mn_stream_feed(s->stream, ids, (int32_t)n, s->logits, 0)) rc = cli_fail("prompt");
    free(ids);
    double tp = cli_now() - t0;
    size_t cap = 256, len = 0;
    char *ans = malloc(cap), piece[256];
    const char *eog_text = "";
    int64_t g = 0;
    for (; !rc && ans && g < o->n_predict; g++) {
        int32_t id = mn_sampler_sample(s->smp, s->logits);
        mn_sampler_accept(s->smp, id);
        if (mn_token_is_eog(tok, id)) {
            /* the model read its own end of turn too */
            eog_text = mn_token_text(tok, id, NULL);
            if (mn_stream_feed(s->stream, &id, 1, s->logits, 0)) rc = cli_fail("decode");
            break;
        }
        int pl = cli_piece(tok, id, piece, sizeof piece);
        if (pl > 0) {
            fwrite(piece, 1, (size_t)pl, stdout);
            fflush(stdout);
            if (len + (size_t)pl + 1 > cap) {
                cap = 2 * (cap + (size_t)pl);
                char *na = realloc(ans, cap);
                if (!na) break;
                ans = na;
            }
            memcpy(ans + len, piece, (size_t)pl);
            len += (size_t)pl;
        }
        if (mn_stream_feed(s->stream, &id, 1, s->logits, 0)) rc = cli_fail("decode");
    }
    double tg = cli_now() - t0 - tp;
    printf("\n");
    fflush(stdout);
    if (!ans) return cli_fail("out of memory");
    ans[len] = 0;
    /* consumed = the prompt as rendered + the answer + its end of turn */
    size_t pl = strlen(prompt), el = strlen(eog_text);
    char *nc = malloc(pl + len + el + 1);
    if (!nc) {
        free(ans);
        return cli_fail("out of memory");
    }
    memcpy(nc, prompt, pl);
    memcpy(nc + pl, ans, len);
    memcpy(nc + pl + len, eog_text, el + 1);
    free(*consumed);
    *consumed = nc;
    *answer = ans;
    if (!rc && !o->quiet)
        fprintf(stderr, "[%lld prompt tokens evaluated in %.2f s, %lld generated at %.1f tok/s; cache %d cells, mode %s",
                (long long)n, tp, (long long)g, g / (tg > 0 ? tg : 1e-9), mn_kv_n_cells(s->ctx),
                mn_mode_name((mn_mode)o->mode));
    if (!rc && !o->quiet && o->mode == MN_MODE_MEMORY)
        fprintf(stderr, ", %d memory slots", mn_stream_n_memory(s->stream));
    if (!rc && !o->quiet) fprintf(stderr, "]\n");
    return rc;
}

/* The chat keeps the KV cache across turns: the whole conversation is
 * re-rendered with the template each turn, and only the tokens after the
 * longest common prefix with what the cache holds are evaluated. */
int cmd_chat(int argc, char **argv) {
    gen_opts o;
    gen_defaults(&o);
    o.n_predict = 512;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo chat [-m FILE] [options]\n\n"
                   "Talks with the model using its chat template (ChatML or Llama-2 [INST]), streaming the\n"
                   "answer and keeping the conversation. Type a message and Enter; an empty line or EOF ends.\n\n"
                   "  --system TEXT     system prompt (default: the template's own, if any)\n"
                   "  --once TEXT       answer one message and exit (non-interactive)\n"
                   "  -n N              most tokens per answer (default 512)\n%s%s"
                   "With --mode the conversation runs as one stream: the cache stays bounded however long it\n"
                   "goes (memory mode compresses local tokens into memory each time they fill a segment).\n",
                   SAMPLING_HELP, MODE_HELP);
            return 0;
        }
        int r = parse_common("chat", &o, argc, argv, &i);
        if (r == -2) return 2;
        if (r == 1) continue;
        if (!strcmp(a, "--system")) {
            if (i + 1 >= argc) return cli_usage_error("chat", "--system needs a value");
            o.system = argv[++i];
        } else if (!strcmp(a, "--once")) {
            if (i + 1 >= argc) return cli_usage_error("chat", "--once needs a value");
            o.once = argv[++i];
        } else if (!strcmp(a, "-q")) {
            o.quiet = 1;
        } else {
            return cli_usage_error("chat", "unknown option '%s'", a);
        }
    }
    if (o.mode == MN_MODE_MEMORY && !(o.adapter = cli_adapter_path(o.adapter)))
        return cli_usage_error("chat", "--mode memory needs -a ADAPTER (no shipped adapter found)");
    if (o.mode != MN_MODE_MEMORY && o.adapter) return cli_usage_error("chat", "-a ADAPTER goes with --mode memory");
    session s;
    if (session_open(&o, &s)) {
        session_close(&s);
        return 1;
    }
    cli_chat_note(s.m);
    const mn_tokenizer *tok = mn_model_tokenizer(s.m);
    int interactive = o.once == NULL;
    mn_chat_msg *msgs = NULL;
    int n_msgs = 0, cap_msgs = 0;
    char *consumed = NULL; /* stream modes: the conversation text the model has read */
    int32_t *cached = NULL; /* tokens whose K/V the cache holds, in order */
    int64_t n_cached = 0;
    int rc = 0;
    char *line = NULL;
    size_t line_cap = 0;
    if (o.system) {
        cap_msgs = 8;
        msgs = calloc((size_t)cap_msgs, sizeof *msgs);
        msgs[n_msgs++] = (mn_chat_msg){"system", strdup(o.system)};
    }
    for (;;) {
        const char *user;
        if (interactive) {
            fprintf(stderr, "\n> ");
            ssize_t r = getline(&line, &line_cap, stdin);
            if (r <= 0) break;
            while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = 0;
            if (r == 0) break;
            user = line;
        } else {
            user = o.once;
        }
        if (n_msgs + 2 > cap_msgs) {
            cap_msgs = cap_msgs ? cap_msgs * 2 : 8;
            mn_chat_msg *nm = realloc(msgs, sizeof *msgs * (size_t)cap_msgs);
            if (!nm) {
                rc = cli_fail("out of memory");
                break;
            }
            msgs = nm;
        }
        msgs[n_msgs++] = (mn_chat_msg){"user", strdup(user)};
        char *prompt = NULL;
        if (mn_chat_format(tok, msgs, n_msgs, 1, &prompt)) {
            rc = cli_fail("chat template");
            break;
        }
        if (s.stream) {
            /* a bounded stream cannot be rewound: feed only what the
             * conversation adds after what the model has already read */
            char *answer = NULL, *before = NULL;
            if (n_msgs > 1 && mn_chat_format(tok, msgs, n_msgs - 1, 0, &before)) before = NULL;
            rc = chat_stream_turn(&s, &o, prompt, before, &consumed, &answer);
            free(before);
            free(prompt);
            if (rc) {
                free(answer);
                break;
            }
            msgs[n_msgs++] = (mn_chat_msg){"assistant", answer};
            if (!interactive) break;
            continue;
        }
        int32_t *ids;
        int64_t n;
        if (cli_tokenize(s.m, prompt, strlen(prompt), mn_tokenizer_adds_bos(tok), 1, &ids, &n)) {
            free(prompt);
            rc = 1;
            break;
        }
        free(prompt);
        int64_t common = 0;
        while (common < n_cached && common < n && cached[common] == ids[common]) common++;
        if (common == n) common--; /* always evaluate at least one token to get logits */
        mn_kv_drop(s.ctx, (int32_t)common, mn_kv_n_cells(s.ctx));
        if (n + 8 >= mn_context_n_ctx(s.ctx)) {
            fprintf(stderr, "mnemo: the conversation (%lld tokens) no longer fits the context (%d); start a new one\n",
                    (long long)n, mn_context_n_ctx(s.ctx));
            free(ids);
            rc = 1;
            break;
        }
        int64_t g;
        double tp, tg;
        int64_t before = mn_kv_n_cells(s.ctx);
        mn_sampler_reset(s.smp);
        /* capture the answer: stdout is streamed, so re-read the generated ids from the cache order */
        int32_t *all = realloc(cached, sizeof(int32_t) * (size_t)(n + o.n_predict + 1));
        if (!all) {
            free(ids);
            rc = cli_fail("out of memory");
            break;
        }
        cached = all;
        memcpy(cached, ids, sizeof(int32_t) * (size_t)n);
        n_cached = n;
        free(ids);
        /* generation loop inline so the answer text is collected */
        double t0 = cli_now();
        for (int64_t i = 0; i < n; i++) mn_sampler_accept(s.smp, cached[i]);
        if (mn_decode(s.ctx, cached + before, (int32_t)(n - before), s.logits, 0)) {
            rc = cli_fail("prompt");
            break;
        }
        tp = cli_now() - t0;
        size_t ans_cap = 256, ans_len = 0;
        char *answer = malloc(ans_cap);
        char piece[256];
        mn_turn turn;
        mn_turn_init(&turn, tok);
        for (g = 0; g < o.n_predict && answer; g++) {
            int32_t id = mn_sampler_sample(s.smp, s.logits);
            mn_sampler_accept(s.smp, id);
            if (mn_turn_end(&turn, tok, id)) break;
            int len = cli_piece(tok, id, piece, sizeof piece);
            if (len > 0) {
                fwrite(piece, 1, (size_t)len, stdout);
                fflush(stdout);
                if (ans_len + (size_t)len + 1 > ans_cap) {
                    ans_cap = 2 * (ans_cap + (size_t)len);
                    char *na = realloc(answer, ans_cap);
                    if (!na) break;
                    answer = na;
                }
                memcpy(answer + ans_len, piece, (size_t)len);
                ans_len += (size_t)len;
            }
            if (mn_kv_n_cells(s.ctx) + 1 >= mn_context_n_ctx(s.ctx)) {
                fprintf(stderr, "\nmnemo: context full\n");
                g++;
                break;
            }
            if (mn_decode(s.ctx, &id, 1, s.logits, 0)) {
                rc = cli_fail("decode");
                break;
            }
            cached[n_cached++] = id;
        }
        tg = cli_now() - t0 - tp;
        printf("\n");
        fflush(stdout);
        if (!answer) {
            rc = cli_fail("out of memory");
            break;
        }
        answer[ans_len] = 0;
        msgs[n_msgs++] = (mn_chat_msg){"assistant", answer};
        if (!o.quiet)
            fprintf(stderr, "[%lld prompt tokens evaluated in %.2f s, %lld generated at %.1f tok/s]\n",
                    (long long)(n - before), tp, (long long)g, g / (tg > 0 ? tg : 1e-9));
        if (rc || !interactive) break;
    }
    for (int i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(cached);
    free(consumed);
    free(line);
    session_close(&s);
    return rc;
}
