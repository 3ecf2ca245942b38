/* keys.h - scoped API keys (`mnemo serve --api-keys FILE`): each key names
 * the owner its documents belong to, so one key never reads, answers from or
 * deletes another owner's documents (store.h, "Owners").
 *
 * The file has one key per line, "OWNER KEY": the owner a name of 1..64
 * characters of [A-Za-z0-9._-], the key 1..256 printable ASCII characters
 * without spaces; blank lines and lines starting with '#' are skipped. One
 * owner may have several keys (rotation); a key may appear once. */
#ifndef MN_SERVER_KEYS_H
#define MN_SERVER_KEYS_H

#include <stddef.h>

typedef struct mn_api_keys mn_api_keys;

/* Parses a key file's text (len bytes, any content); MN_EFORMAT with the line
 * in the message for a malformed file, MN_EINVAL for one without keys. */
int mn_api_keys_parse(const char *text, size_t len, mn_api_keys **out);
/* Reads and parses the file at path (at most 1 MiB). */
int mn_api_keys_load(const char *path, mn_api_keys **out);
void mn_api_keys_free(mn_api_keys *k);
int mn_api_keys_count(const mn_api_keys *k);
/* The owner of the key `given` (len bytes), or NULL when no key matches.
 * Every key is compared, in time independent of which one matches. */
const char *mn_api_keys_owner(const mn_api_keys *k, const char *given, size_t len);

#endif
