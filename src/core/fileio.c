/* fileio.c - durable file replacement (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

/* A file system that cannot take the file now (full, over quota, past the size limit, read-only, failing)
 * is a backend outage the caller may retry, not a bug: MN_EUNAVAILABLE (a server answers 503). */
static int io_code(int e) {
    return e == ENOSPC || e == EDQUOT || e == EFBIG || e == EROFS || e == EIO ? MN_EUNAVAILABLE : MN_EIO;
}

int mn_file_create_temp(const char *path, FILE **f, int *fd, char **tmp) {
    size_t pl = strlen(path);
    char *t = malloc(pl + 16);
    if (!t) return mn_error(MN_ENOMEM, "%s: out of memory", path);
    snprintf(t, pl + 16, "%s.tmp.XXXXXX", path);
    int d = mkstemp(t);
    if (d < 0) {
        const int e = errno;
        int rc = mn_error(io_code(e), "%s: cannot create temporary file %s: %s", path, t, strerror(e));
        free(t);
        return rc;
    }
    (void)fchmod(d, 0644);
    FILE *h = fdopen(d, "wb");
    if (!h) {
        int e = errno;
        close(d);
        unlink(t);
        free(t);
        return mn_error(MN_EIO, "%s: fdopen failed: %s", path, strerror(e));
    }
    *f = h;
    *fd = d;
    *tmp = t;
    return MN_OK;
}

int mn_file_commit(FILE *f, int fd, char *tmp, const char *path, int ok, int err, const char *what) {
    int e = err;
    errno = 0;
    if (ok && fflush(f) != 0) ok = 0, e = errno;
    if (ok && fsync(fd) != 0) ok = 0, e = errno;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return mn_error(io_code(e), "%s: %s failed: %s", path, what, e ? strerror(e) : "short write");
    }
    free(tmp);
    /* make the rename durable: fsync the containing directory (best effort) */
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else {
        size_t dl = (size_t)(slash - path);
        if (dl == 0) dl = 1;
        if (dl >= sizeof dir) return 0;
        memcpy(dir, path, dl);
        dir[dl] = 0;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}
