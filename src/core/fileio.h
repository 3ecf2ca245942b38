/* fileio.h - durable file replacement shared by every writer (GGUF, adapters,
 * memory files): content goes to a temporary file in the target's directory,
 * which is flushed, fsync'ed and renamed over the target, then the directory is
 * fsync'ed, so a crash leaves either the old file or the complete new one. */
#ifndef MN_FILEIO_H
#define MN_FILEIO_H

#include <stdio.h>

/* Creates the temporary file "<path>.tmp.XXXXXX" (mode 0644) and opens it for
 * writing: *f, its descriptor *fd and its malloc'd name *tmp, all handed to
 * mn_file_commit afterwards. MN_EIO/MN_ENOMEM with a message on failure. */
int mn_file_create_temp(const char *path, FILE **f, int *fd, char **tmp);

/* Finishes a temporary file f (descriptor fd, name tmp, which is freed):
 * when ok, flushes, fsyncs and renames it to path; otherwise, or if any of
 * that fails, removes it and returns MN_EIO with "<path>: <what> failed: ...".
 * f is closed in every case. err: errno to report if !ok (0: "short write"). */
int mn_file_commit(FILE *f, int fd, char *tmp, const char *path, int ok, int err, const char *what);

#endif
