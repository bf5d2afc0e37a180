/* atomic.h -- files that appear whole or not at all.
 *
 * A save writes a temporary file <path>.tmp.<pid>.<n> next to the target,
 * flushes and fsyncs it, renames it over <path> and fsyncs the directory. A
 * reader, a crash or a SIGKILL in the middle therefore never leaves a partial
 * file under the final name: the previous file stays until the new one is
 * complete. Temporaries of the same target left by a killed save (their
 * process no longer exists) are removed when the next save of it begins.
 *
 *     ml_atomic_file a;
 *     FILE *f = ml_atomic_begin(&a, path, "safetensors");  // NULL + error
 *     ... fwrite(..., f) ...
 *     if (ml_atomic_commit(&a)) return -1;                 // error names path
 *     // a failure of one's own in between: ml_atomic_abort(&a)
 */
#ifndef ML_IO_ATOMIC_H
#define ML_IO_ATOMIC_H

#include <stdio.h>

typedef struct {
    FILE *fp;
    char *path, *tmp;
    const char *who; /* prefix of error messages: "safetensors", "png" */
} ml_atomic_file;

/* Removes stale temporaries of path, then opens a fresh temporary for writing. */
FILE *ml_atomic_begin(ml_atomic_file *a, const char *path, const char *who);
/* Flushes, fsyncs, closes and renames the temporary onto the target. On any
 * failure the temporary is removed, the old target is untouched, -1 + error. */
int ml_atomic_commit(ml_atomic_file *a);
/* Closes and removes the temporary (after a failure while writing). */
void ml_atomic_abort(ml_atomic_file *a);
/* Removes <path>.tmp.<pid>[.<n>] files whose process is gone; returns how many. */
int ml_atomic_clean_stale(const char *path);

#endif
