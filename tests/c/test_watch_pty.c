/* ml.watch at the real prompt, through a pseudo-terminal: the dashboard
 * redraws in place, Ctrl-C (a SIGINT from the terminal's line discipline)
 * stops the attack, ml.watch returns the best batch so far with
 * report.interrupted, and the prompt answers the next command. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

typedef struct {
    int fd;
    pid_t pid;
    char out[1 << 20]; /* everything the prompt wrote */
    size_t n;
} term;

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The prompt on a 100 x 40 terminal, no history file, colours off. */
static bool open_prompt(term *t) {
    memset(t, 0, sizeof *t);
    struct winsize ws = {40, 100, 0, 0};
    t->pid = forkpty(&t->fd, NULL, NULL, &ws);
    if (t->pid < 0) return false;
    if (t->pid == 0) {
        putenv("MOELAB_HISTORY=");
        putenv("TERM=xterm");
        putenv("NO_COLOR=1");
        putenv("OMP_NUM_THREADS=2");
        execl(MOELAB_BINARY, "moelab", (char *)NULL);
        _exit(127);
    }
    fcntl(t->fd, F_SETFL, O_NONBLOCK);
    return true;
}

/* Reads until `text` appears at or after `from`, for at most `timeout` s. */
static bool wait_for(term *t, size_t from, const char *text, double timeout) {
    double end = seconds() + timeout;
    for (;;) {
        t->out[t->n] = 0;
        if (from <= t->n && strstr(t->out + from, text)) return true;
        if (seconds() >= end || t->n + 1 >= sizeof t->out) break;
        struct pollfd p = {t->fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            ssize_t r = read(t->fd, t->out + t->n, sizeof t->out - 1 - t->n);
            if (r > 0) t->n += (size_t)r;
            else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break;
        }
    }
    size_t tail = t->n > 1500 ? t->n - 1500 : 0;
    fprintf(stderr, "  waited for \"%s\"; last output:\n----\n%s\n----\n", text, t->out + tail);
    return false;
}

static void type(term *t, const char *s) {
    ssize_t w = write(t->fd, s, strlen(s));
    (void)w;
}

static void close_prompt(term *t) {
    type(t, "os.exit(0)\r");
    double end = seconds() + 10;
    int status;
    while (seconds() < end && waitpid(t->pid, &status, WNOHANG) == 0) {
        char sink[4096];
        ssize_t r = read(t->fd, sink, sizeof sink);
        (void)r;
        usleep(20000);
    }
    if (waitpid(t->pid, &status, WNOHANG) == 0) {
        kill(t->pid, SIGKILL);
        waitpid(t->pid, &status, 0);
    }
    close(t->fd);
}

TEST(watch_stops_on_ctrl_c_and_the_prompt_answers) {
    static term t;
    CHECK(open_prompt(&t));
    CHECK(wait_for(&t, 0, "moelab> ", 20));
    size_t m = t.n;
    type(&t, "ml.seed(1); m = ml.nn.vmoe{input = {1, 28, 28}, patch = 7, dim = 16, depth = 2, heads = 2, mlp = 32, "
             "experts = 4, k = 2, moe_every = 1}; x = ml.rand(8, 1, 28, 28); y = ml.tensor({1, 2, 3, 4, 5, 6, 7, 8}, "
             "\"int64\"); print('ready' .. '!')\r");
    CHECK(wait_for(&t, m, "ready!", 30));
    CHECK(wait_for(&t, m, "moelab> ", 10));
    /* an attack far too long to finish: the dashboard must be drawing before Ctrl-C */
    m = t.n;
    type(&t, "xa, r = ml.watch(m, x, y, {eps = 0.001, steps = 1000000, seed = 1})\r");
    CHECK(wait_for(&t, m, "pgd  step ", 30));
    CHECK(wait_for(&t, m, "routing change vs clean", 10));
    usleep(300000);
    size_t before = t.n;
    type(&t, "\x03");
    CHECK(wait_for(&t, before, "interrupted", 20)); /* the report line: "..., interrupted" */
    CHECK(wait_for(&t, before, "moelab> ", 10));
    m = t.n;
    type(&t, "print(r.interrupted, xa:size(1), #r.history.loss > 0)\r");
    CHECK(wait_for(&t, m, "true\t8\ttrue", 10));
    m = t.n;
    type(&t, "6*7\r");
    CHECK(wait_for(&t, m, "42", 10));
    CHECK(wait_for(&t, m, "moelab> ", 10));
    if (getenv("MOELAB_TEST_VERBOSE")) fwrite(t.out, 1, t.n, stderr);
    close_prompt(&t);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(watch_stops_on_ctrl_c_and_the_prompt_answers);
    return test_summary();
}
