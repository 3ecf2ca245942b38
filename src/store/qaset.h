/* qaset.h - question-answer pairs for `mnemo finetune --qa FILE.jsonl`.
 *
 * One JSON object per line: {"doc": ID or "title", "question": "...",
 * "answer": "..."} or {"context": "passage", "question", "answer"} (other
 * fields are ignored, blank lines skipped). A passage is read as exact text,
 * the way recall pages a document's segments back (and a short document's
 * raw tokens are read): tokenized as a document is, with BOS, leading the
 * prompt; such pairs teach the decoder to read details back. With
 * "inline": true the passage is instead the start of the user's message, a
 * blank line before the question (how `ask --doc` and `eval` lay a document
 * out). "doc" is a
 * store document id (a number, or a string of digits that is no title) or its
 * exact title; the document must belong to the group being fine-tuned and
 * have a memory for the compressor adapter. Every line is checked before
 * anything is loaded: the first problem is one error "FILE:LINE: what" (bad
 * JSON with its column, a missing or empty field, an unknown or ambiguous
 * document, another group's document).
 *
 * Each pair becomes an mn_qa_example (train/qatrain.h): the document's stored
 * memory (loaded once per document, checked against the store's checksum),
 * the prompt exactly as answering builds it (store/answer.c: the question as
 * the one user message through the model's chat template, the assistant's
 * turn opened, tokenized with BOS and special tokens), then the answer's
 * tokens as the template renders the assistant's reply, through its
 * end-of-turn token (so the LoRA also learns where to stop).
 */
#ifndef MN_QASET_H
#define MN_QASET_H

#include <stdint.h>

#include "memory/adapter.h"
#include "mnemo.h"
#include "store/store.h"
#include "train/qatrain.h"

typedef struct mn_qaset mn_qaset;

/* Loads path for the documents of `group` in store s, with model m and the
 * compressor adapter a (both must outlive the set). MN_EFORMAT (bad line),
 * MN_ENOTFOUND (unknown document, missing file), MN_EINVAL (other group, no
 * memory, longer than the model's context), MN_EIO, MN_ENOMEM; the message
 * names the file and line. */
int mn_qaset_load(mn_store *s, const mn_model *m, const mn_adapter *a, const char *group, const char *path,
                  mn_qaset **out);
void mn_qaset_free(mn_qaset *q);

/* The first pass of mn_qaset_load alone: checks the text of a QA file
 * (name for messages) against a listing of the store's documents, without
 * loading anything; *n_pairs gets the pair count. Same errors as the load's
 * parsing. */
int mn_qaset_check_text(const char *name, const char *text, size_t len, const mn_store_doc *docs, int64_t n_docs,
                        const char *group, int32_t *n_pairs);

/* The pairs, in file order; valid until mn_qaset_free. */
const mn_qa_example *mn_qaset_examples(const mn_qaset *q, int32_t *n);
/* Distinct documents the pairs read. */
int32_t mn_qaset_n_docs(const mn_qaset *q);
/* Pair i's passage ("context"), or NULL for a document's pair. */
const char *mn_qaset_context(const mn_qaset *q, int32_t i);

#endif
