/* fuzz_qaset.c - libFuzzer target for the QA pairs reader of `mnemo finetune
 * --qa` (store/qaset.h, its checking pass): the input is the JSONL file,
 * checked against a fixed listing of three documents (an id with a memory,
 * one without, a title shared with another group). Seeds in
 * tests/fuzz/corpus/qaset/, keywords in tests/fuzz/qaset.dict.
 *
 * Every input is accepted with at least one pair, or refused with one
 * message that names the file (and, for a line's fault, the line).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "store/qaset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static mn_store_doc docs[3];
    if (!docs[0].id) {
        docs[0] = (mn_store_doc){.id = 1, .n_slots = 4};
        docs[1] = (mn_store_doc){.id = 2, .n_slots = -1};
        docs[2] = (mn_store_doc){.id = 3, .n_slots = 4};
        strcpy(docs[0].title, "Alpha"), strcpy(docs[0].group, "g"), strcpy(docs[0].mem_file, "a.mem");
        strcpy(docs[1].title, "Beta"), strcpy(docs[1].group, "g");
        strcpy(docs[2].title, "Alpha"), strcpy(docs[2].group, "other"), strcpy(docs[2].mem_file, "c.mem");
    }
    char *text = malloc(size ? size : 1); /* exact size: ASan flags reads past the end */
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    int32_t n = -1;
    const int rc = mn_qaset_check_text("qa.jsonl", text, size, docs, 3, "g", &n);
    if (rc == 0 && n < 1) abort();
    if (rc != 0 && (n != 0 || strncmp(mn_last_error(), "qa.jsonl", 8))) abort();
    free(text);
    return 0;
}
