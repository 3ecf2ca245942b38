/* error.c - thread-local error messages (see error.h). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char tl_msg[1024];

int mn_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    return code;
}

int mn_error_prefix(int code, const char *prefix) {
    char tmp[sizeof tl_msg];
    int n = (int)strnlen(prefix, sizeof tmp / 2); /* keep room for the message itself */
    snprintf(tmp, sizeof tmp, "%.*s: %.*s", n, prefix, (int)(sizeof tmp) - n - 3, tl_msg);
    memcpy(tl_msg, tmp, sizeof tl_msg);
    return code;
}

const char *mn_last_error(void) { return tl_msg[0] ? tl_msg : "no error"; }

const char *mn_strerror(int code) {
    switch (code) {
    case MN_OK: return "ok";
    case MN_EINVAL: return "invalid argument";
    case MN_ENOMEM: return "out of memory";
    case MN_EIO: return "i/o error";
    case MN_EFORMAT: return "bad file format";
    case MN_EUNSUPPORTED: return "unsupported";
    case MN_ENOTFOUND: return "not found";
    case MN_ERANGE: return "out of range";
    case MN_EUNAVAILABLE: return "unavailable (retry later)";
    case MN_ECANCELLED: return "cancelled";
    default: return "unknown error";
    }
}

void mn_free(void *p) { free(p); }
