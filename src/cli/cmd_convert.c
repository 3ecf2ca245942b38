/* cmd_convert.c - `mnemo convert`: a copy of a model with its matrices in f32 or f16. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_convert(int argc, char **argv) {
    const char *model = NULL, *out = NULL;
    int type = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo convert [-m FILE] -o OUT.gguf [--type f32|f16]\n\n"
                   "Writes a copy of the model with every quantised matrix dequantised to f32 (default) or\n"
                   "f16; metadata and the tokenizer are kept. Useful for exact comparisons with other\n"
                   "engines, since no activation quantisation happens with float weights.\n");
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return cli_usage_error("convert", "-m needs a value");
            model = argv[i];
        } else if (!strcmp(a, "-o")) {
            if (++i >= argc) return cli_usage_error("convert", "-o needs a value");
            out = argv[i];
        } else if (!strcmp(a, "--type")) {
            if (++i >= argc) return cli_usage_error("convert", "--type needs a value");
            if (!strcmp(argv[i], "f32")) type = 0;
            else if (!strcmp(argv[i], "f16")) type = 1;
            else return cli_usage_error("convert", "--type must be f32 or f16, not '%s'", argv[i]);
        } else {
            return cli_usage_error("convert", "unknown option '%s'", a);
        }
    }
    if (!out) return cli_usage_error("convert", "give the output file with -o OUT.gguf");
    const char *in = cli_model_path(model);
    if (mn_model_convert(in, out, type)) return cli_fail("convert");
    fprintf(stderr, "mnemo: wrote %s\n", out);
    return 0;
}
