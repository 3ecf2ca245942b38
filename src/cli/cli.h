/* cli.h - shared helpers of the `mnemo` command-line tool (a thin layer over mnemo.h). */
#ifndef MN_CLI_H
#define MN_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#define MN_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
/* the trained compressor shipped for the default model (UIO, see adapters/README.md) */
#define MN_DEFAULT_ADAPTER "adapters/SmolLM2-135M-Instruct.uio.gguf"

/* Prints "mnemo: <what>: <last error>" to stderr and returns 1 (the exit status). */
int cli_fail(const char *what);
/* Prints a usage error and returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resolves -m: the given path, else $MNEMO_MODEL, else the default model next
 * to the working directory or the executable. */
const char *cli_model_path(const char *given);
/* Resolves -a: the given path, else $MNEMO_ADAPTER, else the shipped adapter
 * (MN_DEFAULT_ADAPTER next to the working directory or the executable), else
 * NULL ($MNEMO_ADAPTER=none: NULL). The adapter's own check refuses it for
 * another model. */
const char *cli_adapter_path(const char *given);
/* --mem-dir DIR of the store commands: the PostgreSQL store's directory for memory files, as
 * MNEMO_MEM_DIR gives it (store_pg.c reads it from there); an absolute path. 0, or 2 with a usage
 * error. */
int cli_set_mem_dir(const char *cmd, const char *dir);
/* --recall K|auto: a count of segments 0..max or MN_RECALL_AUTO into *k; 0, or 2 with a usage error. */
/* --db-timeout S / --db-connect-timeout S of a PostgreSQL store (the statement and lock timeout, the
 * connect timeout; 0: none), passed to the store through MNEMO_DB_TIMEOUT / MNEMO_DB_CONNECT_TIMEOUT. */
int cli_set_db_seconds(const char *cmd, const char *opt, const char *v);
int cli_parse_recall(const char *cmd, const char *v, int32_t max, long *k);
/* Loads the model at cli_model_path(given), printing a clear error on failure. */
int cli_load_model(const char *given, mn_model **out);
/* Says on stderr how chat prompts are made when the model's own template is missing or unknown. */
void cli_chat_note(const mn_model *m);

/* Reads a whole file (NUL-terminated copy in *out, caller frees). */
int cli_read_file(const char *path, char **out, size_t *len);

/* Integer/float option parsing with range checks; return 0 or print and return 2. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);

double cli_now(void);            /* monotonic seconds */
long cli_peak_rss_kib(void);     /* peak resident set size of this process */

/* One user turn of the model's chat template around a long text that goes
 * between: *pre = template head + before, *post = after + template tail (the
 * assistant turn opened) + reply_prefix; both malloc'd. 0 or an error printed (1). */
int cli_chat_wrap(const mn_model *m, const char *before, const char *after, const char *reply_prefix, char **pre,
                  char **post);

/* Tokenizes text into a malloc'd array. */
int cli_tokenize(const mn_model *m, const char *text, size_t len, int add_bos, int parse_special,
                 int32_t **ids, int64_t *n);

/* Copies the bytes token `id` decodes to into buf (special tokens give nothing); returns the length. */
int cli_piece(const mn_tokenizer *tok, int32_t id, char *buf, size_t cap);

int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_adapter(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints one training progress line (ud: NULL or cmd_train's summary state);
 * returns non-zero once SIGINT/SIGTERM asked to stop. */
struct mn_train_progress;
int cli_train_progress(const struct mn_train_progress *p, void *ud);

#endif
