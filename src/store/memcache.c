/* memcache.c - shared LRU cache of loaded memories (see memcache.h). */
#include "store/memcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory/memfile.h"

typedef struct entry {
    int64_t doc_id;
    uint64_t checksum;
    mn_docmem mem;
    size_t bytes;
    int pins;
    int dead; /* forgotten while pinned */
    uint64_t used; /* LRU clock */
    struct entry *next;
} entry;

struct mn_memcache {
    const mn_model *m;
    const mn_adapter *a;
    size_t budget, bytes;
    uint64_t clock;
    entry *head;
    pthread_mutex_t mu;
};

int mn_memcache_create(const mn_model *m, const mn_adapter *a, size_t budget_bytes, mn_memcache **out) {
    mn_memcache *mc = calloc(1, sizeof *mc);
    if (!mc) return mn_error(MN_ENOMEM, "out of memory");
    mc->m = m;
    mc->a = a;
    mc->budget = budget_bytes;
    pthread_mutex_init(&mc->mu, NULL);
    *out = mc;
    return 0;
}

static void drop(mn_memcache *mc, entry **link) {
    entry *e = *link;
    *link = e->next;
    mc->bytes -= e->bytes;
    mn_docmem_release(&e->mem);
    free(e);
}

void mn_memcache_free(mn_memcache *mc) {
    if (!mc) return;
    while (mc->head) drop(mc, &mc->head);
    pthread_mutex_destroy(&mc->mu);
    free(mc);
}

/* Evicts unpinned entries, least recently used first, until within budget. */
static void trim(mn_memcache *mc) {
    while (mc->bytes > mc->budget) {
        entry **victim = NULL;
        for (entry **l = &mc->head; *l; l = &(*l)->next)
            if ((*l)->pins == 0 && (!victim || (*l)->used < (*victim)->used)) victim = l;
        if (!victim) return;
        drop(mc, victim);
    }
}

int mn_memcache_get(mn_memcache *mc, int64_t doc_id, const char *path, uint64_t checksum, const mn_docmem **out) {
    *out = NULL;
    pthread_mutex_lock(&mc->mu);
    for (entry *e = mc->head; e; e = e->next)
        if (e->doc_id == doc_id && e->checksum == checksum && !e->dead) {
            e->pins++;
            e->used = ++mc->clock;
            *out = &e->mem;
            pthread_mutex_unlock(&mc->mu);
            return 0;
        }
    pthread_mutex_unlock(&mc->mu);
    /* Load outside the lock: other slots keep answering meanwhile. Two slots
     * loading the same document both succeed; the second copy is kept too
     * and ages out. */
    mn_memfile *mf = NULL;
    int rc = mn_memfile_open(path, &mf);
    if (rc) return mn_error_prefix(rc, "memory of a stored document");
    uint64_t have = mn_memfile_get_info(mf)->checksum;
    mn_memfile_free(mf);
    if (have != checksum)
        return mn_error(MN_EFORMAT, "%s: checksum %016llx, the store recorded %016llx (file replaced or damaged)",
                        path, (unsigned long long)have, (unsigned long long)checksum);
    entry *e = calloc(1, sizeof *e);
    if (!e) return mn_error(MN_ENOMEM, "out of memory");
    if ((rc = mn_docmem_load(path, mc->m, mc->a, &e->mem))) {
        free(e);
        return rc;
    }
    e->doc_id = doc_id;
    e->checksum = checksum;
    e->bytes = sizeof(float) * (size_t)e->mem.n_layer * (size_t)e->mem.n_slots * (size_t)e->mem.dim *
               (e->mem.kind == MN_DOCMEM_KV ? 2 : 1);
    e->pins = 1;
    pthread_mutex_lock(&mc->mu);
    e->used = ++mc->clock;
    e->next = mc->head;
    mc->head = e;
    mc->bytes += e->bytes;
    trim(mc);
    pthread_mutex_unlock(&mc->mu);
    *out = &e->mem;
    return 0;
}

void mn_memcache_put(mn_memcache *mc, const mn_docmem *d) {
    if (!d) return;
    pthread_mutex_lock(&mc->mu);
    for (entry **l = &mc->head; *l; l = &(*l)->next)
        if (&(*l)->mem == d) {
            entry *e = *l;
            if (e->pins > 0) e->pins--;
            if (e->pins == 0 && e->dead) drop(mc, l);
            break;
        }
    trim(mc);
    pthread_mutex_unlock(&mc->mu);
}

void mn_memcache_forget(mn_memcache *mc, int64_t doc_id) {
    pthread_mutex_lock(&mc->mu);
    for (entry **l = &mc->head; *l;) {
        if ((*l)->doc_id == doc_id) {
            if ((*l)->pins == 0) {
                drop(mc, l);
                continue;
            }
            (*l)->dead = 1;
        }
        l = &(*l)->next;
    }
    pthread_mutex_unlock(&mc->mu);
}

size_t mn_memcache_bytes(mn_memcache *mc) {
    pthread_mutex_lock(&mc->mu);
    size_t b = mc->bytes;
    pthread_mutex_unlock(&mc->mu);
    return b;
}
