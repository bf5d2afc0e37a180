/* pty_session.h -- the moelab prompt driven through a pseudo-terminal, for
 * the tests that need a real terminal (test_repl.c, test_watch_pty.c):
 * start, send keys, wait for text or for the prompt, finish. Header-only:
 * each test is one executable. */
#ifndef MOELAB_TEST_PTY_SESSION_H
#define MOELAB_TEST_PTY_SESSION_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    pid_t pid;
    char buf[1 << 20]; /* a live dashboard writes a lot */
    size_t len;
} session;

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts moelab on a pseudo-terminal of `rows` x 100: the prompt, or the
 * script when given; `env` (NULL-terminated, may be NULL) is added to the
 * child's environment (e.g. "MOELAB_HISTORY=...", "NO_COLOR=1"). */
static inline bool pty_start(session *s, const char *script, unsigned short rows, const char *const *env) {
    memset(s, 0, sizeof *s);
    struct winsize ws = {rows, 100, 0, 0};
    s->pid = forkpty(&s->fd, NULL, NULL, &ws);
    if (s->pid < 0) return false;
    if (s->pid == 0) {
        putenv("TERM=xterm");
        putenv("OMP_NUM_THREADS=2");
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        execl(MOELAB_BINARY, "moelab", script, (char *)NULL);
        _exit(127);
    }
    fcntl(s->fd, F_SETFL, O_NONBLOCK);
    return true;
}

/* Reads until `needle` appears after position `from` (or timeout). */
static inline bool expect(session *s, size_t from, const char *needle, double timeout) {
    double end = now() + timeout;
    for (;;) {
        s->buf[s->len] = 0;
        if (from <= s->len && strstr(s->buf + from, needle)) return true;
        double left = end - now();
        if (left <= 0) break;
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, (int)(left * 1000) + 1) > 0) {
            ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len);
            if (r > 0) s->len += (size_t)r;
            else if (r < 0 && errno != EAGAIN) break;
            else if (r == 0) break;
        }
    }
    fprintf(stderr, "  expected \"%s\"; output so far:\n----\n%s\n----\n", needle, s->buf + (from < s->len ? from : s->len));
    return false;
}

/* Waits until the output ends with a fresh prompt and stays quiet: the
 * command has finished and the line editor is waiting for input. */
static inline bool expect_prompt(session *s, double timeout) {
    double end = now() + timeout, quiet_since = now();
    size_t last = s->len;
    while (now() < end) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 20) > 0) {
            ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len);
            if (r > 0) s->len += (size_t)r;
        }
        s->buf[s->len] = 0;
        if (s->len != last) {
            last = s->len;
            quiet_since = now();
        }
        if (s->len >= 8 && !strcmp(s->buf + s->len - 8, "moelab> ") && now() - quiet_since > 0.15) return true;
    }
    fprintf(stderr, "  no prompt; output so far:\n----\n%s\n----\n", s->buf + (s->len > 600 ? s->len - 600 : 0));
    return false;
}

static inline void send(session *s, const char *text) {
    ssize_t n = write(s->fd, text, strlen(text));
    (void)n;
}

/* Drops all but the last `keep` bytes of output (a long corpus prints far
 * more than the buffer holds); positions taken before are void. */
static inline void trim(session *s, size_t keep) {
    if (s->len <= keep) return;
    memmove(s->buf, s->buf + s->len - keep, keep);
    s->len = keep;
    s->buf[s->len] = 0;
}

/* Reads what is there. Returns false at end of output. */
static inline bool pump(session *s, int wait_ms) {
    if (s->len > sizeof s->buf - 4096) trim(s, sizeof s->buf / 2); /* a runaway output */
    struct pollfd p = {s->fd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) > 0) {
        ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len);
        if (r > 0) s->len += (size_t)r;
        else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return false;
    }
    s->buf[s->len] = 0;
    return true;
}

/* Waits until the output ends with the prompt or the continuation prompt:
 * the line before has been handled and the editor waits for the next one. */
static inline bool await_input(session *s, double timeout) {
    double end = now() + timeout;
    while (now() < end) {
        if (!pump(s, 20)) break;
        if ((s->len >= 8 && !strcmp(s->buf + s->len - 8, "moelab> ")) ||
            (s->len >= 3 && !strcmp(s->buf + s->len - 3, ".. ")))
            return true;
    }
    return false;
}

static inline int finish(session *s, double timeout) {
    double end = now() + timeout;
    int status = -1;
    while (now() < end) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) break;
        char tmp[4096];
        ssize_t n = read(s->fd, tmp, sizeof tmp); /* keep the pty drained */
        (void)n;
        usleep(20000);
    }
    if (waitpid(s->pid, &status, WNOHANG) == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        status = -1;
    }
    close(s->fd);
    return status;
}

#endif
