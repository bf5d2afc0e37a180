/* atomic.c -- see atomic.h. */
#include "atomic.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.h"

/* The directory part of path ("." when there is none), malloc'd. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *base_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Parses "<pid>" or "<pid>.<n>" (the suffix after "<base>.tmp."); 0 when it is not one. */
static pid_t temp_owner(const char *s) {
    char *end;
    errno = 0;
    long pid = strtol(s, &end, 10);
    if (errno || end == s || pid <= 0 || s[0] < '0' || s[0] > '9') return 0;
    if (*end == '.') {
        const char *n = end + 1;
        if (*n < '0' || *n > '9') return 0;
        strtoul(n, &end, 10);
    }
    return *end ? 0 : (pid_t)pid;
}

int ml_atomic_clean_stale(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return 0;
    DIR *dp = opendir(dir);
    if (!dp) {
        free(dir);
        return 0;
    }
    const char *base = base_of(path);
    size_t blen = strlen(base);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (strncmp(e->d_name, base, blen) || strncmp(e->d_name + blen, ".tmp.", 5)) continue;
        pid_t pid = temp_owner(e->d_name + blen + 5);
        /* only files of processes that are gone: a live one may be saving right now */
        if (pid <= 0 || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *victim = malloc(n);
        if (!victim) break;
        snprintf(victim, n, "%s/%s", dir, e->d_name);
        if (unlink(victim) == 0) removed++;
        free(victim);
    }
    closedir(dp);
    free(dir);
    return removed;
}

FILE *ml_atomic_begin(ml_atomic_file *a, const char *path, const char *who) {
    static atomic_uint counter;
    memset(a, 0, sizeof *a);
    a->who = who;
    if (!path || !path[0]) return ml_fail("%s: the file path is empty", who);
    ml_atomic_clean_stale(path);
    size_t n = strlen(path) + 48;
    a->path = strdup(path);
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        ml_atomic_abort(a);
        return ml_fail("%s: out of memory saving %s", who, path);
    }
    snprintf(a->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        ml_fail("%s: cannot write %s: %s", who, path, strerror(errno));
        free(a->tmp);
        a->tmp = NULL; /* nothing to remove */
        ml_atomic_abort(a);
        return NULL;
    }
    a->fp = fdopen(fd, "wb");
    if (!a->fp) {
        close(fd);
        ml_atomic_abort(a);
        return ml_fail("%s: cannot write %s: %s", who, path, strerror(errno));
    }
    return a->fp;
}

void ml_atomic_abort(ml_atomic_file *a) {
    if (a->fp) fclose(a->fp);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->fp = NULL;
    a->tmp = a->path = NULL;
}

/* Makes the rename itself durable; filesystems that cannot sync a directory are fine. */
static void sync_dir(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int ml_atomic_commit(ml_atomic_file *a) {
    int err = 0;
    if (fflush(a->fp) != 0 || ferror(a->fp)) err = errno ? errno : EIO;
    if (!err && fsync(fileno(a->fp)) != 0) err = errno;
    if (fclose(a->fp) != 0 && !err) err = errno ? errno : EIO;
    a->fp = NULL;
    if (err) {
        ml_failc("%s: writing %s failed: %s", a->who, a->path, strerror(err));
        ml_atomic_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        ml_failc("%s: cannot rename the finished file onto %s: %s", a->who, a->path, strerror(errno));
        ml_atomic_abort(a);
        return -1;
    }
    sync_dir(a->path);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    return 0;
}
