/* cmd_adapter.c - `mnemo adapter init|info`: write a freshly initialised
 * compressor adapter for a model, or describe an adapter file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "memory/adapter.h"

#define CMD_INIT "adapter init"
#define CMD_INFO "adapter info"

static void usage_main(FILE *f) {
    fprintf(f, "usage: mnemo adapter init -m MODEL --compressor uio|beacon|summary [options] -o FILE\n"
               "       mnemo adapter info [-m MODEL] FILE\n"
               "       mnemo adapter set [-m MODEL] FILE [--ratio R] [--recent N] [--f16|--f32] -o OUT\n\n"
               "An adapter (GGUF) holds a compressor's trainable parameters and configuration for one\n"
               "base model. 'init' writes a fresh one (LoRA B = 0, beacon projections copied from the\n"
               "model), so the memory mechanics can run before any training. 'info' prints an adapter's\n"
               "configuration and whether it belongs to the model. 'set' writes a copy that runs at\n"
               "another ratio (the trained parameters serve every ratio they were trained with) or\n"
               "stores its tensors as f16 (half the size; shipped adapters) or f32.\n"
               "Run 'mnemo adapter init --help' or 'mnemo adapter info --help' for the options.\n");
}

static void usage_init(void) {
    printf("usage: mnemo adapter init [-m MODEL] --compressor uio|beacon|summary -o FILE [options]\n\n"
           "  --compressor C    uio (KV memory through an encoder LoRA and a transfer head),\n"
           "                    beacon (Activation Beacon), summary (summary embeddings)\n"
           "  --segment L       tokens per segment (uio, summary) or window W (beacon); default 1024\n"
           "  --ratio R         compression ratio; must divide L (memory tokens m = L/R); default 8\n"
           "  --rank R          LoRA rank (uio default 128, summary 8; not for beacon)\n"
           "  --alpha A         LoRA alpha (uio default 512, summary 16; not for beacon)\n"
           "  --seed S          seed of the LoRA A initialisation (default 0)\n"
           "uio only:\n"
           "  --recent N        segments the decoder keeps raw between the memory and the current\n"
           "                    segment (default 0: memory, then the current segment)\n"
           "beacon only:\n"
           "  --placement P     interleave (default) or append\n"
           "  --attention A     segmentation, step-expansion or full-coverage (default)\n"
           "  --ratios LIST     comma-separated ratio set for training mixtures (default 2,4,8,16,32)\n"
           "  --sinks N         leading tokens kept raw (default 0)\n"
           "  --no-attend-prev  beacons do not attend to earlier windows' beacons\n"
           "  --proj-o          beacons get their own output projection too\n");
}

static void usage_info(void) {
    printf("usage: mnemo adapter info [-m MODEL] FILE\n\n"
           "Prints the adapter's configuration and parameter count, and checks that it belongs to\n"
           "the model (exit status 1 if it does not).\n");
}

static int parse_ratios(const char *s, mn_adapter_params *p) {
    if (!s) return cli_usage_error(CMD_INIT, "--ratios needs a value");
    int n = 0;
    const char *c = s;
    while (*c) {
        char *end;
        errno = 0;
        long v = strtol(c, &end, 10);
        if (errno || end == c || v < 1 || v > MN_ADAPTER_MAX_SEGMENT || (*end && *end != ','))
            return cli_usage_error(CMD_INIT, "--ratios expects positive integers separated by commas, got '%s'", s);
        if (n >= MN_ADAPTER_MAX_RATIOS)
            return cli_usage_error(CMD_INIT, "--ratios takes at most %d values", MN_ADAPTER_MAX_RATIOS);
        p->ratios[n++] = (int32_t)v;
        c = *end ? end + 1 : end;
        if (*end == ',' && !*c) return cli_usage_error(CMD_INIT, "--ratios: trailing comma in '%s'", s);
    }
    if (!n) return cli_usage_error(CMD_INIT, "--ratios needs at least one value");
    p->n_ratios = n;
    return 0;
}

static int cmd_init(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *comp = NULL, *place = NULL, *attn = NULL, *ratios = NULL;
    long segment = -1, ratio = -1, rank = -1, sinks = -1, recent = -1;
    double alpha = -1;
    unsigned long long seed = 0;
    int no_attend_prev = 0, proj_o = 0, rc;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_init();
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) return cli_usage_error(CMD_INIT, "%s needs a value", a);
            model = argv[++i];
        } else if (!strcmp(a, "-o")) {
            if (!v) return cli_usage_error(CMD_INIT, "-o needs a value");
            out = argv[++i];
        } else if (!strcmp(a, "--compressor")) {
            if (!v) return cli_usage_error(CMD_INIT, "--compressor needs a value");
            comp = argv[++i];
        } else if (!strcmp(a, "--placement")) {
            if (!v) return cli_usage_error(CMD_INIT, "--placement needs a value");
            place = argv[++i];
        } else if (!strcmp(a, "--attention")) {
            if (!v) return cli_usage_error(CMD_INIT, "--attention needs a value");
            attn = argv[++i];
        } else if (!strcmp(a, "--ratios")) {
            if (!v) return cli_usage_error(CMD_INIT, "--ratios needs a value");
            ratios = argv[++i];
        } else if (!strcmp(a, "--segment")) {
            if ((rc = cli_parse_int(CMD_INIT, a, v, 1, MN_ADAPTER_MAX_SEGMENT, &segment))) return rc;
            i++;
        } else if (!strcmp(a, "--ratio")) {
            if ((rc = cli_parse_int(CMD_INIT, a, v, 1, MN_ADAPTER_MAX_SEGMENT, &ratio))) return rc;
            i++;
        } else if (!strcmp(a, "--rank")) {
            if ((rc = cli_parse_int(CMD_INIT, a, v, 1, 1 << 16, &rank))) return rc;
            i++;
        } else if (!strcmp(a, "--sinks")) {
            if ((rc = cli_parse_int(CMD_INIT, a, v, 0, MN_ADAPTER_MAX_SEGMENT, &sinks))) return rc;
            i++;
        } else if (!strcmp(a, "--recent")) {
            if ((rc = cli_parse_int(CMD_INIT, a, v, 0, MN_ADAPTER_MAX_RECENT, &recent))) return rc;
            i++;
        } else if (!strcmp(a, "--alpha")) {
            if ((rc = cli_parse_float(CMD_INIT, a, v, 1e-6, 1e6, &alpha))) return rc;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (!v) return cli_usage_error(CMD_INIT, "--seed needs a value");
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || *v == '-')
                return cli_usage_error(CMD_INIT, "--seed expects a non-negative integer, got '%s'", v);
            i++;
        } else if (!strcmp(a, "--no-attend-prev")) {
            no_attend_prev = 1;
        } else if (!strcmp(a, "--proj-o")) {
            proj_o = 1;
        } else {
            return cli_usage_error(CMD_INIT, "unknown option '%s'", a);
        }
    }
    if (!comp) return cli_usage_error(CMD_INIT, "give the compressor with --compressor uio|beacon|summary");
    int c = mn_compressor_parse(comp);
    if (c < 0) return cli_usage_error(CMD_INIT, "--compressor must be uio, beacon or summary, not '%s'", comp);
    if (!out) return cli_usage_error(CMD_INIT, "give the output file with -o FILE");
    mn_adapter_params p = mn_adapter_default_params((mn_compressor)c);
    if (c == MN_COMP_BEACON) {
        if (rank >= 0 || alpha >= 0) return cli_usage_error(CMD_INIT, "--rank and --alpha do not apply to beacon");
        if (place) {
            int x = mn_beacon_placement_parse(place);
            if (x < 0) return cli_usage_error(CMD_INIT, "--placement must be interleave or append, not '%s'", place);
            p.placement = (mn_beacon_placement)x;
        }
        if (attn) {
            int x = mn_beacon_attention_parse(attn);
            if (x < 0)
                return cli_usage_error(CMD_INIT,
                                       "--attention must be segmentation, step-expansion or full-coverage, not '%s'",
                                       attn);
            p.attention = (mn_beacon_attention)x;
        }
        if (ratios && (rc = parse_ratios(ratios, &p))) return rc;
        if (sinks >= 0) p.sinks = (int32_t)sinks;
        if (no_attend_prev) p.attend_prev = 0;
        if (proj_o) p.proj_o = 1;
    } else {
        if (place || attn || ratios || sinks >= 0 || no_attend_prev || proj_o)
            return cli_usage_error(CMD_INIT,
                                   "--placement, --attention, --ratios, --sinks, --no-attend-prev and --proj-o "
                                   "apply to beacon only");
        if (rank >= 0) p.rank = (int32_t)rank;
        if (alpha >= 0) p.alpha = (float)alpha;
    }
    if (recent >= 0) {
        if (p.compressor != MN_COMP_UIO) return cli_usage_error(CMD_INIT, "--recent applies to uio only");
        p.recent = (int32_t)recent;
    }
    if (segment >= 0) p.segment = (int32_t)segment;
    if (ratio >= 0) p.ratio = (int32_t)ratio;
    p.seed = seed;
    /* configuration errors (e.g. a ratio that does not divide the segment) are usage errors;
     * the rank's bound (n_embd) is checked once the model is loaded */
    if (mn_adapter_check_params(&p, INT32_MAX)) return cli_usage_error(CMD_INIT, "%s", mn_last_error());

    mn_model *m;
    if ((rc = cli_load_model(model, &m))) return rc;
    mn_adapter *a = NULL;
    if (mn_adapter_init(m, &p, &a) || mn_adapter_save(a, out)) {
        rc = cli_fail("adapter init");
    } else {
        fprintf(stderr, "mnemo: wrote %s: %s adapter for '%s', %d memory tokens per %d, %" PRId64 " parameters\n",
                out, mn_compressor_name(p.compressor), mn_model_name(m), (int)mn_adapter_n_mem(a), (int)p.segment,
                mn_adapter_n_params(a));
    }
    mn_adapter_free(a);
    mn_model_free(m);
    return rc;
}

static int cmd_info(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_info();
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return cli_usage_error(CMD_INFO, "%s needs a value", a);
            model = argv[i];
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(CMD_INFO, "unknown option '%s'", a);
        } else if (file) {
            return cli_usage_error(CMD_INFO, "give one adapter file (got '%s' and '%s')", file, a);
        } else {
            file = a;
        }
    }
    if (!file) return cli_usage_error(CMD_INFO, "give the adapter file");
    mn_adapter_info in;
    if (mn_adapter_read_info(file, &in)) return cli_fail("adapter info");
    const mn_adapter_params *p = &in.params;
    printf("adapter:      %s\n", file);
    printf("compressor:   %s\n", mn_compressor_name(p->compressor));
    printf("segment:      %d%s\n", (int)p->segment, p->compressor == MN_COMP_BEACON ? " (window)" : "");
    printf("ratio:        %d (%d memory tokens per segment)\n", (int)p->ratio, (int)in.n_mem);
    if (p->compressor == MN_COMP_BEACON) {
        printf("placement:    %s\n", mn_beacon_placement_name(p->placement));
        printf("attention:    %s\n", mn_beacon_attention_name(p->attention));
        printf("attend_prev:  %s\n", p->attend_prev ? "yes" : "no");
        printf("sinks:        %d\n", (int)p->sinks);
        printf("proj_o:       %s\n", p->proj_o ? "yes" : "no");
        printf("ratio set:   ");
        for (int i = 0; i < p->n_ratios; i++) printf(" %d", (int)p->ratios[i]);
        printf("\n");
    } else {
        printf("lora:         rank %d, alpha %g (scale %g)\n", (int)p->rank, (double)p->alpha,
               (double)(p->alpha / (float)p->rank));
        if (p->compressor == MN_COMP_UIO) printf("recent:       %d raw segments beside the memory\n", (int)p->recent);
    }
    printf("base model:   '%s' (hash %016" PRIx64 ", n_embd %d, n_layer %d)\n", in.base_name, in.base_hash,
           (int)in.base_n_embd, (int)in.base_n_layer);
    printf("parameters:   %" PRId64 " in %" PRId64 " tensors (%.1f MiB f32)\n", in.n_params, in.n_tensors,
           (double)in.n_params * 4.0 / (1024.0 * 1024.0));

    mn_model *m;
    int rc = cli_load_model(model, &m);
    if (rc) return rc;
    mn_adapter *a = NULL;
    if (mn_adapter_load(m, file, &a)) {
        printf("matches model: no: %s\n", mn_last_error());
        rc = 1;
    } else {
        printf("matches model: yes ('%s')\n", mn_model_name(m));
    }
    mn_adapter_free(a);
    mn_model_free(m);
    return rc;
}

static int cmd_set(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    long ratio = -1, recent = -1;
    int f16 = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo adapter set [-m MODEL] FILE [--ratio R] [--recent N] [--f16|--f32] -o OUT\n\n"
                   "Writes a copy of the adapter that compresses at ratio R (uio, summary: R divides the\n"
                   "segment; beacon: R in its ratio set; default: the adapter's), with its tensors\n"
                   "stored as f16 (--f16: half the size, the shipped adapters' form) or f32 (--f32, the\n"
                   "default). Loading converts f16 to f32; a value beyond f16's range is an error.\n"
                   "--recent N (uio): the decoder keeps the last N complete segments as raw tokens\n"
                   "beside the memory (0..%d; default: the adapter's), trading memory cells for raw ones.\n",
                   MN_ADAPTER_MAX_RECENT);
            return 0;
        } else if (!strcmp(a, "--f16") || !strcmp(a, "--f32")) {
            f16 = a[3] == '1';
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) return cli_usage_error("adapter set", "-m needs a value");
            model = argv[++i];
        } else if (!strcmp(a, "-o")) {
            if (!v) return cli_usage_error("adapter set", "-o needs a value");
            out = argv[++i];
        } else if (!strcmp(a, "--ratio")) {
            if (cli_parse_int("adapter set", a, v, 1, MN_ADAPTER_MAX_SEGMENT, &ratio)) return 2;
            i++;
        } else if (!strcmp(a, "--recent")) {
            if (cli_parse_int("adapter set", a, v, 0, MN_ADAPTER_MAX_RECENT, &recent)) return 2;
            i++;
        } else if (a[0] == '-') {
            return cli_usage_error("adapter set", "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage_error("adapter set", "one adapter file, not '%s' too", a);
        }
    }
    if (!in || !out) return cli_usage_error("adapter set", "needs FILE and -o OUT");
    mn_model *m;
    if (cli_load_model(model, &m)) return 1;
    mn_adapter *a = NULL;
    int rc = 0;
    if (mn_adapter_load(m, in, &a)) rc = cli_fail(in);
    else if (ratio >= 0 && mn_adapter_set_ratio(a, (int32_t)ratio)) rc = cli_fail("adapter set");
    else if (recent >= 0 && mn_adapter_set_recent(a, (int32_t)recent)) rc = cli_fail("adapter set");
    else if (mn_adapter_save_as(a, out, f16)) rc = cli_fail("adapter set");
    else
        fprintf(stderr, "mnemo: wrote %s (ratio %d, %d memory tokens per segment, %s)\n", out,
                (int)mn_adapter_config(a)->ratio, mn_adapter_n_mem(a), f16 ? "f16" : "f32");
    mn_adapter_free(a);
    mn_model_free(m);
    return rc;
}

int cmd_adapter(int argc, char **argv) {
    if (argc < 1) {
        usage_main(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "help")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "init")) return cmd_init(argc - 1, argv + 1);
    if (!strcmp(argv[0], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[0], "set")) return cmd_set(argc - 1, argv + 1);
    fprintf(stderr, "mnemo adapter: unknown subcommand '%s' (init, info or set)\n\n", argv[0]);
    usage_main(stderr);
    return 2;
}
