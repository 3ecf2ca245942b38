/* cmd_tokenize.c - `mnemo tokenize`: token ids of a text, one per line or as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *text = NULL;
    int json = 0, no_special = 0, bos = -1, pieces = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: mnemo tokenize [-m FILE] (TEXT | -f TEXTFILE) [--json] [--pieces]\n\n"
                   "Prints the token ids of TEXT, one per line (or a JSON array with --json).\n\n"
                   "  -f FILE         tokenize the contents of FILE\n"
                   "  --json          print {\"tokens\": [...], \"count\": N}\n"
                   "  --pieces        print 'id<TAB>piece' per line (piece JSON-escaped)\n"
                   "  --bos / --no-bos  add the BOS token or not (default: the model's setting)\n"
                   "  --no-special    treat special-token text as plain text\n"
                   "  -m FILE         model GGUF (default: " MN_DEFAULT_MODEL ")\n");
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return cli_usage_error("tokenize", "-m needs a value");
            model = argv[i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (++i >= argc) return cli_usage_error("tokenize", "-f needs a value");
            file = argv[i];
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--pieces")) {
            pieces = 1;
        } else if (!strcmp(a, "--bos")) {
            bos = 1;
        } else if (!strcmp(a, "--no-bos")) {
            bos = 0;
        } else if (!strcmp(a, "--no-special")) {
            no_special = 1;
        } else if (a[0] == '-' && a[1] && !text) {
            return cli_usage_error("tokenize", "unknown option '%s'", a);
        } else if (!text) {
            text = a;
        } else {
            return cli_usage_error("tokenize", "give one TEXT (quote it) or -f FILE");
        }
    }
    if (!text == !file) return cli_usage_error("tokenize", "give either TEXT or -f FILE");
    char *buf;
    size_t len;
    if (file) {
        if (cli_read_file(file, &buf, &len)) return 1;
    } else {
        buf = strdup(text);
        len = strlen(buf);
    }
    mn_model *m;
    if (cli_load_model(model, &m)) {
        free(buf);
        return 1;
    }
    const mn_tokenizer *tok = mn_model_tokenizer(m);
    int32_t *ids;
    int64_t n;
    int rc = cli_tokenize(m, buf, len, bos < 0 ? mn_tokenizer_adds_bos(tok) : bos, !no_special, &ids, &n);
    if (!rc) {
        if (json) {
            printf("{\"count\": %lld, \"tokens\": [", (long long)n);
            for (int64_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
            printf("]}\n");
        } else {
            char piece[512];
            for (int64_t i = 0; i < n; i++) {
                if (!pieces) {
                    printf("%d\n", ids[i]);
                    continue;
                }
                int l = cli_piece(tok, ids[i], piece, sizeof piece);
                printf("%d\t\"", ids[i]);
                for (int k = 0; k < l; k++) {
                    unsigned char ch = (unsigned char)piece[k];
                    if (ch == '"' || ch == '\\') printf("\\%c", ch);
                    else if (ch < 0x20) printf("\\u%04x", ch);
                    else putchar(ch);
                }
                printf("\"\n");
            }
        }
        free(ids);
    }
    free(buf);
    mn_model_free(m);
    return rc;
}
