/* error.h - status codes and the thread-local error message.
 *
 * Every fallible library call returns an int: 0 on success, a negative MN_E*
 * code on failure. The failing call also records a human-readable message that
 * mn_last_error() returns until the next failure on the same thread. Only the
 * CLI's main() turns these into an exit status.
 */
#ifndef MN_ERROR_H
#define MN_ERROR_H

#include "mnemo.h"

/* Records a printf-style message for this thread and returns `code`, so a
 * failure path can be written `return mn_error(MN_EFORMAT, "...", ...);`. */
int mn_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "<prefix>: " (for context such as a path). */
int mn_error_prefix(int code, const char *prefix);

#endif
