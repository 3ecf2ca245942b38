/* grouplora.h - the decoder LoRA of each document group (LLoCO's per-group
 * in-domain adapters, written by `mnemo finetune`), loaded on first use and
 * kept, so requests switch adapters without reloading anything.
 *
 * A group's recorded file is checked against the SHA-256 the store holds for
 * it and against the model (lora.h) before use: a replaced or corrupted file
 * is a clear error, never silently a different adapter. Entries live as long
 * as the cache, so a set handed out stays valid while other threads look up
 * other groups. Thread-safe.
 */
#ifndef MN_GROUPLORA_H
#define MN_GROUPLORA_H

#include "mnemo.h"
#include "model/forward.h"
#include "store/store.h"

typedef struct mn_group_loras mn_group_loras;

int mn_group_loras_create(const mn_model *m, mn_group_loras **out);
void mn_group_loras_free(mn_group_loras *c);

/* *set = the group's decoder LoRA, or NULL when the group records none (or
 * does not exist). s must not be used by another thread meanwhile. */
int mn_group_loras_get(mn_group_loras *c, mn_store *s, const char *group, const mn_lora_set **set);

#endif
