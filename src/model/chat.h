/* chat.h - turns a conversation into the prompt text a chat model expects.
 *
 * mnemo does not run Jinja. It recognises the template families it supports
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
 *   Gemma    (template contains "<start_of_turn>"): Gemma 3's template:
 *              <start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n
 *              <start_of_turn>model\n{assistant}<end_of_turn>\n ... [<start_of_turn>model\n]
 *            contents stripped (the system text as given), roles alternating
 *            from user. The template's leading {{ bos_token }} is not rendered:
 *            the tokenizer adds BOS (add_bos), as llama.cpp's renderer leaves it.
 *
 * Any other template, or none, falls back to ChatML without a default system
 * prompt; mn_chat_template.fallback is then set and .note says why.
 * The output contains special-token texts (<|im_start|>, <s>): tokenize it with
 * parse_special = 1.
 */
#ifndef MN_CHAT_H
#define MN_CHAT_H

#include <stddef.h>

#include "mnemo.h"

/* The chat API is public: see the "chat templates" section of mnemo.h. */

#endif
