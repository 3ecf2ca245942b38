/* grouplora.c - per-group decoder LoRA cache (see grouplora.h). */
#include "store/grouplora.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model/lora.h"
#include "store/sha256.h"

typedef struct {
    char group[MN_STORE_GROUP_CAP];
    char sha256[65];
    mn_lora_file *f;
} entry;

struct mn_group_loras {
    const mn_model *m;
    pthread_mutex_t mu;
    entry *e;
    int n, cap;
};

int mn_group_loras_create(const mn_model *m, mn_group_loras **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return mn_error(MN_ENOMEM, "out of memory");
    (*out)->m = m;
    pthread_mutex_init(&(*out)->mu, NULL);
    return MN_OK;
}

void mn_group_loras_free(mn_group_loras *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) mn_lora_file_free(c->e[i].f);
    free(c->e);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Reads the file once: its hash must be the recorded one, then it loads. */
static int load_checked(const mn_model *m, const mn_store_group *g, mn_lora_file **out) {
    FILE *f = fopen(g->adapter_path, "rb");
    if (!f) return mn_error(MN_EIO, "group '%s': cannot open its decoder adapter %s", g->name, g->adapter_path);
    mn_sha256_ctx h;
    mn_sha256_init(&h);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) mn_sha256_update(&h, buf, n);
    const int err = ferror(f);
    fclose(f);
    if (err) return mn_error(MN_EIO, "group '%s': cannot read %s", g->name, g->adapter_path);
    uint8_t d[32];
    mn_sha256_final(&h, d);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (strcmp(hex, g->adapter_sha256))
        return mn_error(MN_EFORMAT, "group '%s': %s changed since it was recorded (sha256 %.16s..., recorded %.16s...)",
                        g->name, g->adapter_path, hex, g->adapter_sha256);
    int rc = mn_lora_file_load(m, g->adapter_path, out);
    return rc ? mn_error_prefix(rc, g->name) : MN_OK;
}

int mn_group_loras_get(mn_group_loras *c, mn_store *s, const char *group, const mn_lora_set **set) {
    *set = NULL;
    mn_store_group g;
    if (!group || mn_store_group_get(s, group, &g) || !g.adapter_path[0]) return MN_OK;
    pthread_mutex_lock(&c->mu);
    int rc = MN_OK;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].group, group) && !strcmp(c->e[i].sha256, g.adapter_sha256)) {
            *set = mn_lora_file_set(c->e[i].f);
            pthread_mutex_unlock(&c->mu);
            return MN_OK;
        }
    mn_lora_file *f = NULL;
    if (c->n == c->cap) {
        const int cap = c->cap ? 2 * c->cap : 8;
        entry *e = realloc(c->e, sizeof(entry) * (size_t)cap);
        if (!e) rc = mn_error(MN_ENOMEM, "out of memory");
        else c->e = e, c->cap = cap;
    }
    if (!rc) rc = load_checked(c->m, &g, &f);
    if (!rc) {
        entry *e = &c->e[c->n++];
        snprintf(e->group, sizeof e->group, "%s", group);
        snprintf(e->sha256, sizeof e->sha256, "%s", g.adapter_sha256);
        e->f = f;
        *set = mn_lora_file_set(f);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
