/* cmd_memory.c - `mnemo compress` (document -> memory file) and `mnemo ask`
 * (answer from a memory file, or read a document into memory and answer).
 * Memory files go through docmem.h, so any compressor works: UIO and beacon
 * memories are K/V cells, summary memories are embeddings read as soft tokens.
 * `ask --doc` reads the document through a memory stream inside the chat
 * turn, the layout the compressors are trained on (for UIO with a recent
 * window: the last segments stay raw beside the memory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "memory/docmem.h"
#include "memory/kvstore.h"
#include "memory/memory.h"
#include "model/forward.h"
#include "train/data.h"

typedef struct {
    const char *model, *adapter, *doc, *mem, *out, *question, *title, *row, *reader;
    long threads, n_predict, seed, max_tokens, recall, local, max_memory, exact_ram, recall_every; /* exact_ram: MiB */
    double temp;
    int f32, quiet, scorer, late, no_exact, exact_kv;
} mem_opts;

static int parse(const char *cmd, mem_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->recall = MN_RECALL_DEFAULT_K;
    o->scorer = MN_RECALL_DEFAULT_SCORER;
    o->late = MN_RECALL_DEFAULT_LATE;
    o->local = MN_RECALL_DEFAULT_LOCAL;
    o->recall_every = -1; /* unset: the default where it applies */
    o->exact_ram = 512;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define STR(flag, field)                                                   \
    if (!strcmp(a, flag)) {                                               \
        if (!v) return cli_usage_error(cmd, "%s needs a value", a);       \
        o->field = v;                                                     \
        i++;                                                              \
        continue;                                                         \
    }
        STR("-m", model) STR("-a", adapter) STR("-f", doc) STR("--doc", doc) STR("--mem", mem) STR("-o", out)
        STR("--title", title) STR("--row", row) STR("--reader", reader)
#undef STR
        if (!strcmp(a, "-t")) {
            if (cli_parse_int(cmd, a, v, 0, 512, &o->threads)) return 2;
            i++;
        } else if (!strcmp(a, "-n")) {
            if (cli_parse_int(cmd, a, v, 1, 1 << 20, &o->n_predict)) return 2;
            i++;
        } else if (!strcmp(a, "--max-memory")) {
            if (cli_parse_int(cmd, a, v, 0, 1L << 22, &o->max_memory)) return 2;
            i++;
        } else if (!strcmp(a, "--max-tokens")) {
            if (cli_parse_int(cmd, a, v, 1, 1L << 40, &o->max_tokens)) return 2;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (cli_parse_int(cmd, a, v, 0, 0x7fffffffL, &o->seed)) return 2;
            i++;
        } else if (!strcmp(a, "--temp")) {
            if (cli_parse_float(cmd, a, v, 0, 100, &o->temp)) return 2;
            i++;
        } else if (!strcmp(a, "--recall")) {
            if (cli_parse_recall(cmd, v, MN_STREAM_RECALL_MAXK, &o->recall)) return 2;
            i++;
        } else if (!strcmp(a, "--local")) {
            if (cli_parse_int(cmd, a, v, 0, 1L << 30, &o->local)) return 2;
            i++;
        } else if (!strcmp(a, "--recall-every")) {
            if (cli_parse_int(cmd, a, v, 0, 1L << 20, &o->recall_every)) return 2;
            i++;
        } else if (!strcmp(a, "--exact")) {
            if (!v || (strcmp(v, "tokens") && strcmp(v, "none") && strcmp(v, "kv")))
                return cli_usage_error(cmd, "--exact is tokens, kv or none (got '%s')", v ? v : "");
            o->no_exact = !strcmp(v, "none");
            o->exact_kv = !strcmp(v, "kv");
            i++;
        } else if (!strcmp(a, "--exact-ram")) {
            if (cli_parse_int(cmd, a, v, 0, 1L << 30, &o->exact_ram)) return 2;
            i++;
        } else if (!strcmp(a, "--recall-at")) {
            if (!v || (strcmp(v, "before-recent") && strcmp(v, "after-recent")))
                return cli_usage_error(cmd, "--recall-at is before-recent or after-recent (got '%s')", v ? v : "");
            o->late = !strcmp(v, "after-recent");
            i++;
        } else if (!strcmp(a, "--scorer")) {
            if (!v || (o->scorer = mn_recall_scorer_parse(v)) < 0)
                return cli_usage_error(cmd, "--scorer is one of keys, keys-shared, slots, bm25 (got '%s')", v ? v : "");
            i++;
        } else if (!strcmp(a, "--f32")) {
            o->f32 = 1;
        } else if (!strcmp(a, "-q")) {
            o->quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        } else if (!o->question) {
            o->question = a;
        } else {
            return cli_usage_error(cmd, "one question only (quote it)");
        }
    }
    return 0;
}

/* Model and adapter. */
typedef struct {
    mn_model *m;
    mn_adapter *ad;
} loaded;

static int load_all(const mem_opts *o, loaded *L) {
    memset(L, 0, sizeof *L);
    if (cli_load_model(o->model, &L->m)) return 1;
    if (mn_adapter_load(L->m, o->adapter, &L->ad)) {
        cli_fail("adapter");
        if (strstr(mn_last_error(), "was made for model"))
            fprintf(stderr, "mnemo: an adapter belongs to one model: pass -a with one made for this one "
                            "('mnemo adapter init -m MODEL --compressor uio -o A.gguf' writes an untrained one, "
                            "'mnemo train -a A.gguf' trains it, for the Llama family so far)\n");
        return 1;
    }
    /* --reader: another reader than the one beside the adapter, or none */
    if (o->reader && mn_adapter_set_reader(L->ad, L->m, strcmp(o->reader, "none") ? o->reader : NULL))
        return cli_fail("--reader");
    return 0;
}

static void unload(loaded *L) {
    mn_adapter_free(L->ad);
    mn_model_free(L->m);
}

/* Tokenizes and compresses a document file. */
static int compress_file(const mem_opts *o, loaded *L, mn_docmem *d, double *secs) {
    char *text;
    size_t len;
    if (cli_read_file(o->doc, &text, &len)) return 1;
    int32_t *ids;
    int64_t n;
    int rc = cli_tokenize(L->m, text, len, 1, 0, &ids, &n);
    free(text);
    if (rc) return rc;
    if (n == 0) {
        free(ids);
        fprintf(stderr, "mnemo: '%s' has no text to compress\n", o->doc);
        return 1;
    }
    double t0 = cli_now();
    rc = mn_docmem_compress(L->m, L->ad, ids, n, (int)o->threads, d);
    *secs = cli_now() - t0;
    free(ids);
    return rc ? cli_fail("compress") : 0;
}

int cmd_compress(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: mnemo compress [-m MODEL] -a ADAPTER -f DOC -o DOC.mem [--f32] [-t N] [--title T]\n\n"
                   "Compresses a document into a memory file (f16 by default) with any compressor adapter:\n"
                   "UIO (per-layer memory K/V; segments compressed in parallel on -t threads), Activation\n"
                   "Beacon (the beacons' K/V, windows in order) or summary (embeddings read as soft tokens).\n"
                   "'mnemo ask --mem DOC.mem' then answers questions without reading the document again.\n"
                   "  --exact tokens|kv|none  keep the compressed segments' ids and recall index in the file\n"
                   "                        (default tokens: 'ask --recall' decodes the segments it pages),\n"
                   "                        also their decoder cells in 8 bits (kv: a version-4 file, 12 KB a\n"
                   "                        token for SmolLM2; paging copies them), or leave them out (none)\n");
            return 0;
        }
    mem_opts o;
    int rc = parse("compress", &o, argc, argv);
    if (rc) return rc;
    o.adapter = cli_adapter_path(o.adapter);
    if (!o.adapter || !o.doc || !o.out)
        return cli_usage_error("compress", "needs -f DOC, -o OUT and -a ADAPTER (no shipped adapter found)");
    if (o.question) return cli_usage_error("compress", "unexpected argument '%s'", o.question);
    loaded L;
    if (load_all(&o, &L)) {
        unload(&L);
        return 1;
    }
    mn_docmem d;
    memset(&d, 0, sizeof d);
    double secs = 0;
    rc = compress_file(&o, &L, &d, &secs);
    if (!rc && o.no_exact) mn_docmem_drop_exact(&d);
    double t_cells = 0;
    if (!rc && o.exact_kv) { /* the segments' decoder cells: one decoder pass over the compressed part */
        const double t0 = cli_now();
        if (d.n_exact <= 0) {
            fprintf(stderr, "mnemo: --exact kv needs a UIO adapter with a recent window (this memory has no exact part)\n");
            rc = 1;
        } else if (mn_docmem_add_cells(L.m, L.ad, &d, (int)o.threads)) rc = cli_fail("exact cells");
        t_cells = cli_now() - t0;
    }
    if (!rc) {
        if (mn_docmem_save_titled(&d, L.m, L.ad, o.out, o.f32, o.title ? o.title : o.doc)) {
            rc = cli_fail("write memory file");
        } else {
            struct stat st;
            stat(o.out, &st);
            const int64_t n = d.n_tokens;
            const int32_t M = d.n_slots;
            char raw[64] = "";
            if (d.n_raw > 0) /* sinks and the recent window the adapter was trained to read raw */
                snprintf(raw, sizeof raw, " + %d raw tokens", d.n_raw);
            fprintf(stderr, "mnemo: %lld tokens -> %d %s%s (x%.1f) in %.2f s (%.0f tok/s), %s: %.1f MiB\n",
                    (long long)n, M, d.kind == MN_DOCMEM_KV ? "memory slots" : "summary embeddings", raw,
                    (double)n / (M + d.n_raw ? M + d.n_raw : 1), secs, n / (secs > 0 ? secs : 1e-9), o.out,
                    st.st_size / 1048576.0);
            if (d.n_exact > 0) { /* what the exact part costs: ids and the representative keys, f16 */
                const double kb = 2.0 * 2 * (double)(d.n_exact / d.exact_seg) * mn_model_n_layer(L.m) * MN_RECALL_REP *
                                  mn_model_kv_dim(L.m);
                const double cb = d.cells ? (double)mn_kvstore_cell_bytes(L.m) : 0;
                fprintf(stderr, "mnemo: exact part for recall: %d tokens in %d segments, %.1f MiB (%.0f bytes per "
                                "token: 4 for the id, %.0f for the index, %.0f for the cells%s); --exact none leaves "
                                "it out\n",
                        d.n_exact, d.n_exact / d.exact_seg, (4.0 * d.n_exact + kb + cb * d.n_exact) / 1048576.0,
                        4.0 + (kb + cb * d.n_exact) / d.n_exact, kb / d.n_exact, cb,
                        d.cells ? "" : ": --exact kv keeps them");
                if (d.cells) fprintf(stderr, "mnemo: the cells took %.2f s (a decoder pass over the segments)\n", t_cells);
            }
        }
    }
    mn_docmem_release(&d);
    unload(&L);
    return rc;
}

/* One paged segment, tokens [a, b) of a document of n: where it lies and how it starts (ids: its tokens). */
static void print_segment(const mn_tokenizer *tok, const int32_t *ids, int64_t a, int64_t b, int64_t n) {
    char text[160];
    size_t got = 0;
    if (!ids || mn_detokenize(tok, ids, b - a < 24 ? b - a : 24, 0, text, sizeof text, &got)) text[0] = 0;
    for (char *c = text; *c; c++)
        if ((unsigned char)*c < 0x20) *c = ' ';
    fprintf(stderr, "  tokens %lld-%lld of %lld (%.0f%%): \"%s...\"\n", (long long)a, (long long)b, (long long)n,
            n ? 100.0 * (double)a / (double)n : 0.0, text);
}

/* Which segments recall paged in, where they lie in the document. */
static void print_recalled(const mn_model *m, const mn_stream *s, const int32_t *all, int64_t npre, int64_t nd,
                           int scorer) {
    int64_t st[MN_STREAM_RECALL_MAXK];
    int32_t ln[MN_STREAM_RECALL_MAXK];
    const int32_t k = mn_stream_recalled(s, st, ln, MN_STREAM_RECALL_MAXK);
    double sel = 0, pg = 0;
    mn_stream_recall_time(s, &sel, &pg);
    fprintf(stderr, "[recall: %d of %d stored segments paged in by %s (%.3f s choosing, %.2f s paging in)]\n", k,
            mn_stream_n_exact(s), mn_recall_scorer_name((mn_recall_scorer)scorer), sel, pg);
    for (int32_t i = 0; i < k; i++) {
        const int64_t a = st[i] - npre > 0 ? st[i] - npre : 0, b = st[i] + ln[i] - npre;
        print_segment(mn_model_tokenizer(m), all + npre + a, a, b, nd);
    }
}

/* MiB of K/V `cells` cells hold in this model and cache type (window layers keep their window only). */
static double kv_mib(const mn_model *m, int64_t cells) {
    return (double)mn_model_kv_bytes(m, cells, mn_context_default_params().cache_type) / 1048576.0;
}

/* What one `ask` measured, for --row. */
typedef struct {
    const char *doc, *question, *answer, *reader; /* reader: the LoRA it answered with, or NULL */
    int64_t doc_tokens, kv_cells, memory_slots, recalled, raw, full_cells;
    const mn_model *m; /* sizes the cells (mn_model_kv_bytes) */
    long recall, local;
    int scorer, exact_kv;
    int64_t paged_start[MN_STREAM_RECALL_MAXK];
    int32_t paged_len[MN_STREAM_RECALL_MAXK], n_paged;
    double read_s, ttft_s;
    double select_s, page_s; /* recall: choosing the segments, paging them in (rebuilding the window behind them) */
    int64_t answer_tokens;
    double decode_s;         /* the answer's decode steps (one per answer token) and sampling */
} ask_row;

static const char *base_of(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* Appends one JSON line to o->row: the machine, the command's inputs, the answer and every part of
 * the cache it was given (the README's main job, checkable against RESULTS.md). */
static int write_row(const mem_opts *o, const ask_row *r) {
    char cpu[160] = "unknown", date[32];
    FILE *ci = fopen("/proc/cpuinfo", "r");
    for (char line[512]; ci && fgets(line, sizeof line, ci);)
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (ci) fclose(ci);
    const time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON *j = cJSON_CreateObject(), *mach = cJSON_AddObjectToObject(j, "machine"), *pg;
    cJSON_AddStringToObject(j, "task", "ask");
    cJSON_AddStringToObject(j, "date", date);
    cJSON_AddStringToObject(mach, "cpu", cpu);
    cJSON_AddNumberToObject(mach, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddStringToObject(mach, "kernels", mn_cpu_isa_name());
    cJSON_AddStringToObject(j, "model", base_of(cli_model_path(o->model)));
    cJSON_AddStringToObject(j, "adapter", base_of(o->adapter));
    cJSON_AddStringToObject(j, "doc", r->doc);
    cJSON_AddNumberToObject(j, "doc_tokens", (double)r->doc_tokens);
    cJSON_AddStringToObject(j, "question", r->question);
    cJSON_AddStringToObject(j, "answer", r->answer);
    if (r->recall < 0) cJSON_AddStringToObject(j, "recall", "auto"); /* the count paged: "paged" */
    else cJSON_AddNumberToObject(j, "recall", (double)r->recall);
    cJSON_AddStringToObject(j, "scorer", r->recall ? mn_recall_scorer_name((mn_recall_scorer)r->scorer) : "none");
    cJSON_AddNumberToObject(j, "local", (double)r->local);
    cJSON_AddStringToObject(j, "exact", r->recall ? (r->exact_kv ? "kv" : "tokens") : "none");
    if (r->reader) cJSON_AddStringToObject(j, "reader", base_of(r->reader));
    else cJSON_AddNullToObject(j, "reader");
    pg = cJSON_AddArrayToObject(j, "paged");
    for (int32_t i = 0; i < r->n_paged && i < MN_STREAM_RECALL_MAXK; i++) {
        cJSON *seg = cJSON_CreateObject();
        cJSON_AddNumberToObject(seg, "start", (double)(r->paged_start[i] > 0 ? r->paged_start[i] : 0));
        cJSON_AddNumberToObject(seg, "end", (double)(r->paged_start[i] + r->paged_len[i]));
        cJSON_AddItemToArray(pg, seg);
    }
    /* the cache the question was read with: every part named, every cell counted */
    cJSON_AddNumberToObject(j, "kv_cells", (double)r->kv_cells);
    cJSON_AddNumberToObject(j, "memory_slots", (double)r->memory_slots);
    cJSON_AddNumberToObject(j, "recalled_cells", (double)r->recalled);
    cJSON_AddNumberToObject(j, "raw_cells", (double)r->raw);
    cJSON_AddNumberToObject(j, "kv_mib", kv_mib(r->m, r->kv_cells));
    cJSON_AddNumberToObject(j, "full_attention_cells", (double)r->full_cells);
    cJSON_AddNumberToObject(j, "full_attention_kv_mib", kv_mib(r->m, r->full_cells));
    cJSON_AddNumberToObject(j, "read_seconds", r->read_s);
    cJSON_AddNumberToObject(j, "seconds_to_first_token", r->ttft_s);
    cJSON_AddNumberToObject(j, "recall_select_seconds", r->select_s);
    cJSON_AddNumberToObject(j, "recall_page_seconds", r->page_s);
    cJSON_AddNumberToObject(j, "answer_tokens", (double)r->answer_tokens);
    /* decode: each answer token is fed back, one step over the whole cache */
    cJSON_AddNumberToObject(j, "decode_seconds_per_token",
                            r->answer_tokens > 0 ? r->decode_s / (double)r->answer_tokens : 0.0);
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    FILE *f = txt ? fopen(o->row, "a") : NULL;
    const int ok = f && fprintf(f, "%s\n", txt) > 0;
    if (f && fclose(f)) f = NULL;
    free(txt);
    if (!ok || !f) {
        fprintf(stderr, "mnemo: cannot append the row to '%s'\n", o->row);
        return 1;
    }
    return 0;
}

/* ask --doc: the chat turn [template | document | question] read through a
 * memory stream, with progress; then the answer. */
static int ask_stream(const mem_opts *o, loaded *L) {
    const double t_start = cli_now();
    mn_memory_binding bind;
    if (mn_memory_bind(L->m, L->ad, &bind)) return cli_fail("adapter");
    char *text = NULL, *pre = NULL, *post = NULL;
    int32_t *doc = NULL, *pre_ids = NULL, *post_ids = NULL, *all = NULL;
    int64_t nd = 0, npre = 0, npost = 0;
    size_t len;
    mn_context *ctx = NULL;
    mn_stream *s = NULL;
    mn_sampler *smp = NULL;
    float *logits = NULL;
    const mn_tokenizer *tok = mn_model_tokenizer(L->m);
    int rc = cli_read_file(o->doc, &text, &len);
    if (!rc) {
        len = mn_text_clean(text, len);
        rc = cli_tokenize(L->m, text, len, 0, 0, &doc, &nd);
    }
    if (!rc && o->max_tokens && nd > o->max_tokens) nd = o->max_tokens;
    if (!rc && nd == 0) {
        fprintf(stderr, "mnemo: '%s' has no text to read\n", o->doc);
        rc = 1;
    }
    /* the template around one user message: the document, then the question */
    char *after = NULL;
    if (!rc && !(after = malloc(strlen(o->question) + 3))) rc = cli_fail("out of memory");
    if (!rc) {
        sprintf(after, "\n\n%s", o->question);
        rc = cli_chat_wrap(L->m, "", after, "", &pre, &post);
    }
    free(after);
    if (!rc) rc = cli_tokenize(L->m, pre, strlen(pre), 1, 1, &pre_ids, &npre);
    if (!rc) rc = cli_tokenize(L->m, post, strlen(post), 0, 1, &post_ids, &npost);
    const int64_t n = npre + nd + npost;
    if (!rc && !(all = malloc(sizeof(int32_t) * (size_t)n))) rc = cli_fail("out of memory");
    if (!rc) {
        memcpy(all, pre_ids, sizeof(int32_t) * (size_t)npre);
        memcpy(all + npre, doc, sizeof(int32_t) * (size_t)nd);
        memcpy(all + npre + nd, post_ids, sizeof(int32_t) * (size_t)npost);
    }
    mn_stream_params sp = mn_stream_default_params();
    sp.mode = MN_MODE_MEMORY;
    if (bind.kind == MN_COMP_BEACON) sp.n_sinks = bind.beacon.params.sinks;
    /* recall: UIO with a recent window only (other compressors read without it) */
    const int recall = o->recall != 0 && bind.kind == MN_COMP_UIO && bind.uio.params.recent > 0;
    int64_t mem_cells = mn_memory_n_ctx(&bind, n, sp.n_sinks);
    /* --max-memory: the newest slots only (the rest dropped), so a long document stays within the model's positions */
    if (o->max_memory > 0 && mem_cells > o->max_memory + mn_memory_n_ctx(&bind, 0, sp.n_sinks))
        mem_cells = o->max_memory + mn_memory_n_ctx(&bind, 0, sp.n_sinks);
    const int64_t need = mem_cells + o->n_predict + 1 +
                         (recall ? mn_recall_max_k((int32_t)o->recall) * (int64_t)bind.uio.params.l : 0);
    mn_context_params cp = mn_context_default_params();
    cp.n_ctx = (int32_t)(need < (1 << 22) ? need : (1 << 22));
    cp.n_threads = (int)o->threads;
    sp.window = cp.n_ctx;
    if (!rc && (mn_context_create(L->m, &cp, &ctx) || mn_stream_create(ctx, &sp, &s) ||
                mn_stream_attach(s, &bind, (int)o->threads) || mn_stream_set_memory_cap(s, (int32_t)o->max_memory) ||
                (recall && (mn_stream_set_recall(s, (int32_t)o->recall, (mn_recall_scorer)o->scorer, o->late) ||
                            mn_stream_set_recall_local(s, (int32_t)o->local) ||
                            (o->exact_kv &&
                             mn_stream_set_exact(s, MN_EXACT_KV, (size_t)o->exact_ram * 1048576u))))))
        rc = cli_fail("memory stream");
    /* with recall, the decoder reads and answers with the adapter's reader (the paged segments are exact text) */
    const mn_lora_set *reader = recall ? mn_adapter_reader(L->ad) : NULL;
    if (!rc && reader && mn_context_set_lora(ctx, reader)) rc = cli_fail("reader");
    if (!rc && o->recall != 0 && !recall && !o->quiet)
        fprintf(stderr, "[recall off: it needs a UIO adapter with a recent window]\n");
    const int tty = isatty(2);
    const double t0 = cli_now();
    int64_t done = 0;
    while (!rc && done < npre + nd) {
        const int32_t p = (int32_t)(npre + nd - done < 2048 ? npre + nd - done : 2048);
        if ((rc = mn_stream_feed(s, all + done, p, NULL, 0))) {
            rc = cli_fail("read");
            break;
        }
        done += p;
        const double el = cli_now() - t0, rate = done / (el > 0 ? el : 1e-9);
        if (!o->quiet && (tty || done == npre + nd)) {
            /* every cell the decoder will hold: the memory slots and the tokens kept raw (sinks, recent window) */
            const int64_t raw = mn_stream_n_seen(s) - mn_stream_n_evicted(s), cells = mn_stream_n_memory(s) + raw;
            fprintf(stderr,
                    "%s[read] %lld/%lld tokens  %.0f tok/s  KV %lld cells (%d memory slots + %lld raw tokens, %.1f MiB) "
                    "vs full KV %.1f MiB  ETA %.0fs%s",
                    tty ? "\r" : "", (long long)done, (long long)(npre + nd), rate, (long long)cells,
                    mn_stream_n_memory(s), (long long)raw, kv_mib(L->m, cells), kv_mib(L->m, done),
                    (npre + nd - done) / rate, tty ? "   " : "\n");
        }
    }
    const double t_read = cli_now() - t0;
    if (!rc && !o->quiet && tty) fprintf(stderr, "\n");
    mn_sampler_params smpp = mn_sampler_default_params();
    smpp.temperature = (float)o->temp;
    smpp.seed = (uint64_t)o->seed;
    const int32_t V = mn_model_n_vocab(L->m);
    if (!rc && (mn_sampler_create(&smpp, V, &smp) || !(logits = malloc(sizeof(float) * (size_t)V))))
        rc = cli_fail("sampler");
    if (!rc && recall) { /* the question chooses the segments paged back in beside the memory */
        int32_t *q = NULL;
        int64_t nq = 0;
        if (cli_tokenize(L->m, o->question, strlen(o->question), 0, 0, &q, &nq)) rc = 1;
        else if (nq > 0 && mn_stream_recall(s, q, (int32_t)(nq < (1 << 20) ? nq : (1 << 20)))) rc = cli_fail("recall");
        free(q);
        if (!rc && !o->quiet) print_recalled(L->m, s, all, npre, nd, o->scorer);
    }
    if (!rc && mn_stream_feed(s, all + npre + nd, (int32_t)npost, logits, 0)) rc = cli_fail("question");
    double t_ttft = cli_now() - t_start;
    int64_t g = 0;
    const int64_t cells_q = ctx ? mn_kv_n_cells(ctx) : 0; /* at the question's end, before the answer */
    const double t_dec0 = cli_now();
    char *answer = NULL;
    size_t alen = 0;
    mn_turn turn;
    mn_turn_init(&turn, tok);
    for (char piece[256]; !rc && g < o->n_predict; g++) {
        int32_t id = mn_sampler_sample(smp, logits);
        mn_sampler_accept(smp, id);
        if (mn_turn_end(&turn, tok, id)) break;
        int pl = cli_piece(tok, id, piece, sizeof piece);
        fwrite(piece, 1, (size_t)pl, stdout);
        fflush(stdout);
        char *na = realloc(answer, alen + (size_t)pl + 1);
        if (na) memcpy(na + alen, piece, (size_t)pl), alen += (size_t)pl, na[alen] = 0, answer = na;
        if (mn_stream_feed(s, &id, 1, logits, 0)) rc = cli_fail("decode");
    }
    const double t_dec = cli_now() - t_dec0;
    if (!rc) {
        printf("\n");
        fflush(stdout);
    }
    if (!rc && !o->quiet) {
        const int64_t cells = mn_kv_n_cells(ctx);
        fprintf(stderr,
                "[document %lld tokens read in %.1f s (%.0f tok/s) -> %d memory slots; KV at the answer %lld cells "
                "(%d memory slots, %d recalled, %lld raw; %.1f MiB) vs %.1f MiB for full attention; %.2f s to first "
                "token; %lld answer tokens]\n",
                (long long)nd, t_read, (npre + nd) / (t_read > 0 ? t_read : 1e-9), mn_stream_n_memory(s),
                (long long)cells, mn_stream_n_memory(s), mn_stream_n_paged(s),
                (long long)(cells - mn_stream_n_memory(s) - mn_stream_n_paged(s)), kv_mib(L->m, cells),
                kv_mib(L->m, n + g), t_ttft, (long long)g);
        if (reader) fprintf(stderr, "[answered with the reader %s]\n", mn_adapter_reader_path(L->ad));
    }
    if (!rc && o->row) {
        ask_row r = {.doc = o->doc, .doc_tokens = nd, .question = o->question, .answer = answer ? answer : "",
                     .reader = reader ? mn_adapter_reader_path(L->ad) : NULL,
                     .recall = recall ? o->recall : 0, .scorer = o->scorer, .local = recall ? o->local : 0,
                     .exact_kv = o->exact_kv,
                     .kv_cells = cells_q, .memory_slots = mn_stream_n_memory(s), .recalled = mn_stream_n_paged(s),
                     .m = L->m, .full_cells = n, .read_s = t_read, .ttft_s = t_ttft,
                     .answer_tokens = g, .decode_s = t_dec};
        if (recall) mn_stream_recall_time(s, &r.select_s, &r.page_s);
        r.raw = r.kv_cells - r.memory_slots - r.recalled;
        if (recall) r.n_paged = mn_stream_recalled(s, r.paged_start, r.paged_len, MN_STREAM_RECALL_MAXK);
        for (int32_t i = 0; i < r.n_paged && i < MN_STREAM_RECALL_MAXK; i++) r.paged_start[i] -= npre; /* in the document */
        rc = write_row(o, &r);
    }
    free(answer);
    free(text), free(pre), free(post), free(doc), free(pre_ids), free(post_ids), free(all), free(logits);
    mn_sampler_free(smp);
    mn_stream_free(s);
    mn_context_free(ctx);
    mn_memory_unbind(&bind);
    return rc;
}

int cmd_ask(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: mnemo ask [-m MODEL] [-a ADAPTER] (--mem DOC.mem | --doc FILE) \"question\" [-n N] [--temp T]\n\n"
                   "Answers a question from a document's compressed memory.\n"
                   "  --mem FILE        a memory file made by 'mnemo compress' (memory-mapped; the document is\n"
                   "                    not read): the memory occupies the first KV positions, the question\n"
                   "                    follows in the chat template; a memory longer than the model's\n"
                   "                    positions leave room for keeps its newest slots (and says so)\n"
                   "  --doc FILE        reads FILE into memory inside the chat turn, with progress (ingest\n"
                   "                    speed, memory size against full attention's KV), then answers\n"
                   "  --max-tokens N    --doc: only the first N tokens of FILE\n"
                   "  --max-memory N    --doc: keep only the newest N memory slots (older ones dropped, the\n"
                   "                    rest re-positioned), so a long document stays within the model's\n"
                   "                    trained positions (default: all slots)\n"
                   "  -a ADAPTER        compressor (default: the adapter shipped for the default model)\n"
                   "  -n N              most answer tokens (default 256)\n"
                   "  --temp T          sampling temperature (default 0: greedy)\n"
                   "  --recall K|auto   page the K stored segments that best match the question back in raw\n"
                   "                    beside the memory (default auto: one per 16 stored, 2 to 8; 0: the\n"
                   "                    memory alone); the segments paged are listed with where they lie\n"
                   "  --scorer S        how segments are chosen: bm25 (default), keys, keys-shared, slots\n"
                   "  --recall-at P     before-recent (default: document order) or after-recent\n"
                   "  --local N         with segments paged, keep only the newest N raw tokens of the\n"
                   "                    document's recent window beside them; the rest of the window is\n"
                   "                    offered to recall like the compressed segments (default %d; 0: all)\n"
                   "  --recall-every N  --mem: while answering, choose again every N answer tokens for the\n"
                   "                    question and the answer so far, paging the new choice in where it\n"
                   "                    differs (default %d: once, at the question; bm25 only)\n"
                   "  --exact tokens|kv --doc: how each compressed segment is kept for recall: its ids, its\n"
                   "                    cells decoded again at page-in (tokens, the default), or also its\n"
                   "                    decoder cells in 8 bits, copied back at page-in (kv: a decoder pass\n"
                   "                    per segment at reading, 12 KB a token for SmolLM2)\n"
                   "  --exact-ram MB    kv: cells beyond MB (default 512) go to a spill file in TMPDIR,\n"
                   "                    unlinked at once (gone when mnemo exits)\n"
                   "  --reader FILE|none  the decoder LoRA that answers when recall is on (default: the\n"
                   "                    adapter's, ADAPTER with .reader.gguf for .gguf, where it exists)\n"
                   "  --row FILE        --doc: append one JSON line to FILE: the machine, the inputs,\n"
                   "                    the answer, the segments paged and every part of the cache\n"
                   "  -q                no statistics on stderr\n",
                   MN_RECALL_DEFAULT_LOCAL, MN_RECALL_DEFAULT_EVERY);
            return 0;
        }
    mem_opts o;
    int rc = parse("ask", &o, argc, argv);
    if (rc) return rc;
    o.adapter = cli_adapter_path(o.adapter);
    if (!o.adapter || (!o.mem == !o.doc) || !o.question)
        return cli_usage_error("ask", "needs one of --mem FILE / --doc FILE, a question and -a ADAPTER (no shipped "
                                      "adapter found)");
    if (o.max_tokens && !o.doc) return cli_usage_error("ask", "--max-tokens goes with --doc");
    if (o.row && !o.doc) return cli_usage_error("ask", "--row goes with --doc");
    if (o.recall_every >= 0 && !o.mem)
        return cli_usage_error("ask", "--recall-every goes with --mem (a stream chooses again as it compresses)");
    if (o.recall_every < 0) o.recall_every = MN_RECALL_DEFAULT_EVERY;
    if ((o.exact_kv || o.no_exact) && !o.doc)
        return cli_usage_error("ask", "--exact goes with --doc (a memory file's exact part is chosen by compress: "
                                      "'ask --mem' pages a file's cells where it has them)");
    if (o.no_exact) return cli_usage_error("ask", "--exact none: use --recall 0 to read with the memory alone");
    loaded L;
    if (load_all(&o, &L)) {
        unload(&L);
        return 1;
    }
    cli_chat_note(L.m);
    if (o.doc) {
        rc = ask_stream(&o, &L);
        unload(&L);
        return rc;
    }
    mn_docmem d;
    memset(&d, 0, sizeof d);
    double t_start = cli_now();
    if (mn_docmem_load(o.mem, L.m, L.ad, &d)) rc = cli_fail("memory file");
    const int32_t M = d.n_slots;
    const int64_t n_doc = d.n_tokens;
    mn_context *ctx = NULL;
    mn_sampler *smp = NULL;
    int32_t *ids = NULL;
    char *prompt = NULL;
    float *logits = NULL;
    if (!rc) {
        const mn_tokenizer *tok = mn_model_tokenizer(L.m);
        mn_chat_msg msg = {"user", o.question};
        int64_t n = 0;
        if (mn_chat_format(tok, &msg, 1, 1, &prompt)) rc = cli_fail("chat template");
        else rc = cli_tokenize(L.m, prompt, strlen(prompt), 1, 1, &ids, &n);
        const mn_docmem *mems[1] = {&d};
        const int asked = o.recall != 0;
        o.recall = mn_docmem_recall_k(mems, 1, (int32_t)o.recall); /* auto: the count for this memory */
        /* a memory longer than the model's positions leave room for keeps its newest slots; recall still
         * chooses among every segment of the document */
        mn_recall_opts ro = {(int32_t)o.recall, (mn_recall_scorer)o.scorer, o.late, (int32_t)o.local, 1,
                             (int32_t)(n + o.n_predict + 1), (int32_t)o.recall_every};
        int32_t *q = NULL;
        int64_t nq = 0;
        if (!rc && o.recall > 0 && d.n_exact > 0 && cli_tokenize(L.m, o.question, strlen(o.question), 0, 0, &q, &nq))
            rc = 1;
        if (!rc && asked && d.n_exact == 0 && !o.quiet)
            fprintf(stderr, "[recall off: the memory file has no exact part (written by an older build, "
                            "with --exact none, or by a compressor without a recent window)]\n");
        const int64_t rcells = o.recall > 0 ? mn_docmem_recall_cells(mems, 1, (int32_t)o.recall) : 0;
        int64_t need = mn_docmem_cells(&d) + rcells + n + o.n_predict + 1;
        if (need > mn_model_n_ctx_train(L.m)) need = mn_model_n_ctx_train(L.m);
        mn_context_params cp = mn_context_default_params();
        cp.n_ctx = (int32_t)need;
        cp.n_threads = (int)o.threads;
        mn_sampler_params sp = mn_sampler_default_params();
        sp.temperature = (float)o.temp;
        sp.seed = (uint64_t)o.seed;
        if (!rc && mn_context_create(L.m, &cp, &ctx)) rc = cli_fail("context");
        /* recall on: the adapter's reader answers, as mn_doc_ask does (installed before the memory is primed) */
        if (!rc && asked && mn_adapter_reader(L.ad) && mn_context_set_lora(ctx, mn_adapter_reader(L.ad)))
            rc = cli_fail("reader");
        if (!rc && mn_sampler_create(&sp, mn_model_n_vocab(L.m), &smp)) rc = cli_fail("sampler");
        mn_docmem_paged pg;
        memset(&pg, 0, sizeof pg);
        if (!rc && mn_docmem_prime_recall(ctx, L.ad, mems, 1, &ro, q, (int32_t)nq, NULL, &pg)) rc = cli_fail("memory");
        /* re-selection while answering: the query grows by the answer, and all that was read after the memory
         * (the prompt and the answer) is read again where the choice changes */
        const int reselect = !rc && pg.n > 0 && ro.every > 0 && !mn_recall_scorer_needs_q(ro.scorer);
        int32_t *qa = NULL, *all = NULL;
        int32_t reselections = 0, repaged = 0;
        if (reselect && (!(qa = malloc(sizeof(int32_t) * (size_t)(nq + o.n_predict))) ||
                         !(all = malloc(sizeof(int32_t) * (size_t)(n + o.n_predict))))) {
            fprintf(stderr, "mnemo: out of memory\n");
            rc = 1;
        }
        if (qa) memcpy(qa, q, sizeof(int32_t) * (size_t)nq);
        if (all) memcpy(all, ids, sizeof(int32_t) * (size_t)n);
        free(q);
        /* the parts as the decoder holds them: kept slots, the raw tokens primed (a tail cut to --local
         * where segments are paged), the recalled cells */
        const int64_t slots_in = M - pg.slots_out, raw_in = rc ? 0 : mn_kv_n_cells(ctx) - slots_in - pg.cells;
        if (!rc && !o.quiet && pg.slots_out > 0)
            fprintf(stderr, "[memory: the oldest %lld of %d slots left out to fit the model's %d positions beside "
                    "the raw tokens, recall, question and answer (-n)]\n", (long long)pg.slots_out, M,
                    mn_model_n_ctx_train(L.m));
        if (!rc && !o.quiet && pg.n > 0) {
            fprintf(stderr, "[recall: %d of %d stored segments paged in by %s (%.3f s choosing, %.2f s paging in)]\n",
                    pg.n, pg.stored, mn_recall_scorer_name(ro.scorer), pg.select_s, pg.page_s);
            for (int32_t i = 0; i < pg.n; i++) {
                print_segment(tok, mn_docmem_ids_at(&d, pg.start[i], pg.len[i]), pg.start[i], pg.start[i] + pg.len[i],
                              n_doc);
            }
        }
        logits = malloc(sizeof(float) * (size_t)mn_model_n_vocab(L.m));
        double t_ttft = 0;
        int64_t g = 0;
        if (!rc && (!logits || mn_decode(ctx, ids, (int32_t)n, logits, 0))) rc = cli_fail("decode");
        if (!rc) {
            t_ttft = cli_now() - t_start;
            char piece[256];
            mn_turn turn;
            mn_turn_init(&turn, tok);
            for (; g < o.n_predict; g++) {
                int32_t id = mn_sampler_sample(smp, logits);
                mn_sampler_accept(smp, id);
                if (mn_turn_end(&turn, tok, id)) break;
                int len = cli_piece(tok, id, piece, sizeof piece);
                fwrite(piece, 1, (size_t)len, stdout);
                fflush(stdout);
                int changed = 0;
                if (reselect) {
                    qa[nq + g] = id, all[n + g] = id;
                    if ((g + 1) % ro.every == 0 && g + 1 < o.n_predict) {
                        reselections++;
                        if (mn_docmem_reselect(ctx, L.ad, mems, 1, &ro, qa, (int32_t)(nq + g + 1), all, n + g + 1,
                                               logits, &pg, &changed)) {
                            rc = cli_fail("recall");
                            break;
                        }
                        repaged += changed;
                        if (changed && !o.quiet) {
                            fprintf(stderr, "\n[recall: chosen again after %lld answer tokens, %d segments paged:]\n",
                                    (long long)g + 1, pg.n);
                            for (int32_t i = 0; i < pg.n; i++)
                                print_segment(tok, mn_docmem_ids_at(&d, pg.start[i], pg.len[i]), pg.start[i],
                                              pg.start[i] + pg.len[i], n_doc);
                        }
                    }
                }
                if (!changed && mn_decode(ctx, &id, 1, logits, 0)) {
                    rc = cli_fail("decode");
                    break;
                }
            }
            printf("\n");
            fflush(stdout);
        }
        free(qa), free(all);
        if (!rc && !o.quiet && reselections > 0)
            fprintf(stderr, "[recall chose again %d times while answering (every %d tokens); the choice changed %d "
                    "times]\n", reselections, ro.every, repaged);
        if (!rc && !o.quiet)
            fprintf(stderr,
                    "[document %lld tokens -> %lld memory slots + %lld raw tokens + %d recalled (KV %.1f MiB); %.2f s "
                    "to first token; %lld answer tokens in %.2f s total]\n",
                    (long long)n_doc, (long long)slots_in, (long long)raw_in, pg.cells, mn_context_kv_bytes(ctx) / 1048576.0,
                    t_ttft, (long long)g, cli_now() - t_start);
    }
    free(logits);
    free(prompt);
    free(ids);
    mn_sampler_free(smp);
    mn_context_free(ctx);
    mn_docmem_release(&d);
    unload(&L);
    return rc;
}
