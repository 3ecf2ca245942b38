/* chat.h - turns a conversation into the prompt text a chat model expects.
 *
 * mnemo does not run Jinja. It recognises the two template families it supports
 * in the file's tokenizer.chat_template and renders them in C exactly as
 * Jinja (transformers' apply_chat_template) renders the common templates:
 *
 *   ChatML   (template contains "<|im_start|>"):
 *              <|im_start|>{role}\n{content}<|im_end|>\n ... [<|im_start|>assistant\n]
 *            If the template inserts a default system prompt when the first
 *            message is not a system message (SmolLM2, Qwen2.5), that prompt is
 *            read from the template's string literal and inserted the same way.
 *   Llama-2  (template contains "[INST]"): the Llama-2-chat template:
 *              {bos}[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} {eos}...
 *            with contents stripped of surrounding whitespace, and roles that
 *            must alternate user/assistant after an optional system message.
 *            add_generation_prompt has no effect (the prompt ends with [/INST]).
 *
 * Any other template, or none, falls back to ChatML without a default system
 * prompt; mn_chat_template.fallback is then set and .note says why.
 * The output contains special-token texts (<|im_start|>, <s>): tokenize it with
 * parse_special = 1.
 */
#ifndef MN_CHAT_H
#define MN_CHAT_H

#include <stddef.h>

#include "model/tokenizer.h"

typedef struct {
    const char *role; /* "system", "user", "assistant" (other roles are passed through) */
    const char *content;
} mn_chat_msg;

typedef enum { MN_CHAT_CHATML = 1, MN_CHAT_LLAMA2 = 2 } mn_chat_style;

typedef struct {
    mn_chat_style style;
    int fallback;         /* 1 when the template was missing or not recognised */
    char note[192];       /* why the fallback was taken ("" otherwise) */
    char *default_system; /* ChatML: system prompt the template adds when the first message is
                             not "system"; NULL for none. Owned; see mn_chat_template_clear. */
    char bos[64], eos[64]; /* Llama-2: texts of the BOS / EOS tokens */
} mn_chat_template;

/* Recognises a Jinja chat template source (tmpl may be NULL: no template). tok
 * (optional) supplies the BOS/EOS texts for Llama-2 (default "<s>", "</s>").
 * Returns 0 (also for a fallback) or MN_ENOMEM. */
int mn_chat_template_parse(const char *tmpl, size_t len, const mn_tokenizer *tok, mn_chat_template *out);
/* The template of the model file the tokenizer came from. */
int mn_chat_template_from_tokenizer(const mn_tokenizer *tok, mn_chat_template *out);
void mn_chat_template_clear(mn_chat_template *ct);

/* Renders n messages into a malloc'd NUL-terminated string (*out; caller frees;
 * *out_len optional). Returns 0, MN_EINVAL (NULL role/content, or Llama-2 roles
 * that do not alternate), MN_ENOMEM. */
int mn_chat_apply(const mn_chat_template *ct, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out,
                  size_t *out_len);

/* Convenience: mn_chat_template_from_tokenizer + mn_chat_apply. */
int mn_chat_format(const mn_tokenizer *tok, const mn_chat_msg *msgs, int n, int add_generation_prompt, char **out);

#endif
