/* fuzz_request.c - libFuzzer target for the server's request reading
 * (server/request.h), in-process: the input's first line is "METHOD PATH",
 * the rest the body. Seeds in tests/fuzz/corpus/request/, keywords in
 * tests/fuzz/request.dict.
 *
 * Every input gets a route; a one-document route's id parses to a positive
 * integer or is refused; a POST body either parses into a job whose fields
 * keep every limit (messages present with text, max_tokens in [1, limit],
 * at most JOB_MAX_DOCS document ids, all positive, a document's text
 * non-empty) or is refused with a message; the job is freed either way
 * (LeakSanitizer checks the tree goes with it).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    const size_t head = nl ? (size_t)(nl - data) : size;
    char line[512];
    const size_t hl = head < sizeof line - 1 ? head : sizeof line - 1;
    memcpy(line, data, hl);
    line[hl] = 0;
    char *sp = strchr(line, ' ');
    const char *method = line, *url = sp ? sp + 1 : "";
    if (sp) *sp = 0;
    const char *tail = NULL;
    const mn_route rt = mn_request_route(method, url, &tail);
    if ((rt == MN_RT_DOC_GET || rt == MN_RT_DOC_DELETE) != (tail != NULL)) abort();
    if (tail) {
        int64_t id = 0;
        if (mn_request_doc_id(tail, &id) == 0 && id < 1) abort();
    }
    if (rt != MN_RT_CHAT && rt != MN_RT_COMPLETION && rt != MN_RT_DOC_ADD) return 0;
    /* the body exactly as received: ASan flags a read past its end */
    const size_t bl = nl ? size - head - 1 : 0;
    char *body = malloc(bl ? bl : 1);
    if (!body) return 0;
    if (bl) memcpy(body, nl + 1, bl);
    job *j = job_new(rt == MN_RT_CHAT ? JOB_CHAT : rt == MN_RT_COMPLETION ? JOB_COMPLETION : JOB_DOC_ADD);
    if (!j) abort();
    const mn_request_limits lim = {64, 8};
    char msg[512];
    const char *err = mn_request_parse(j, body, bl, &lim, msg, sizeof msg);
    if (err) {
        if (!err[0]) abort(); /* refusals say why */
    } else if (rt == MN_RT_DOC_ADD) {
        if (!j->text || !j->text_len || strlen(j->text) != j->text_len || !j->title) abort();
    } else {
        if (rt == MN_RT_CHAT && (j->n_msgs < 1 || j->n_msgs > JOB_MAX_MSGS)) abort();
        for (int i = 0; i < j->n_msgs; i++)
            if (!j->msgs[i].role || !j->msgs[i].content) abort();
        if (rt == MN_RT_COMPLETION && !j->prompt) abort();
        if (j->max_tokens < 1 || j->max_tokens > lim.max_tokens) abort();
        if (j->n_docs > JOB_MAX_DOCS || (j->n_docs && j->retrieve_k)) abort();
        for (int i = 0; i < j->n_docs; i++)
            if (j->doc_ids[i] < 1) abort();
        if (j->retrieve_k < 0 || j->retrieve_k > lim.max_retrieve) abort();
        if (!(j->sampling.temperature >= 0 && j->sampling.temperature <= 2)) abort();
    }
    job_unref(j);
    free(body);
    return 0;
}
