/* memcache.h - loaded document memories shared by the server's slots.
 *
 * Loading a memory maps its file, checks it against the store's record and
 * converts it to f32, which costs about as much as reading it; a question
 * over the same document should not pay that again. Entries are pinned while
 * a request uses them (get .. put) and the least recently used unpinned ones
 * are dropped when the cache holds more than its byte budget. Thread-safe;
 * memories are read-only once loaded, so slots share them.
 */
#ifndef MN_MEMCACHE_H
#define MN_MEMCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "memory/docmem.h"
#include "mnemo.h"

typedef struct mn_memcache mn_memcache;

/* The model and adapter must outlive the cache. */
int mn_memcache_create(const mn_model *m, const mn_adapter *a, size_t budget_bytes, mn_memcache **out);
void mn_memcache_free(mn_memcache *mc);

/* The memory of document doc_id from file path, whose payload checksum must
 * be `checksum` (the store's record: a file replaced behind the store's back
 * is MN_EFORMAT). Pinned until mn_memcache_put. */
int mn_memcache_get(mn_memcache *mc, int64_t doc_id, const char *path, uint64_t checksum, const mn_docmem **out);
void mn_memcache_put(mn_memcache *mc, const mn_docmem *d);
/* Drops a document's entry (when it is removed from the store); an entry in
 * use is dropped when its last user puts it back. */
void mn_memcache_forget(mn_memcache *mc, int64_t doc_id);
/* Bytes of memory held (f32 K/V or embeddings). */
size_t mn_memcache_bytes(mn_memcache *mc);

#endif
