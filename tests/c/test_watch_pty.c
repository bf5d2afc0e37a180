/* ml.watch at the real prompt, through a pseudo-terminal: the dashboard
 * redraws in place, Ctrl-C (a SIGINT from the terminal's line discipline)
 * stops the attack, ml.watch returns the best batch so far with
 * report.interrupted, and the prompt answers the next command. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "pty_session.h"
#include "testlib.h"

TEST(watch_stops_on_ctrl_c_and_the_prompt_answers) {
    static session t;
    /* 40 rows for the dashboard, no history file, colours off */
    static const char *const env[] = {"MOELAB_HISTORY=", "NO_COLOR=1", NULL};
    CHECK(pty_start(&t, NULL, 40, env));
    CHECK(expect(&t, 0, "moelab> ", 20));
    size_t m = t.len;
    send(&t, "ml.seed(1); m = ml.nn.vmoe{input = {1, 28, 28}, patch = 7, dim = 16, depth = 2, heads = 2, mlp = 32, "
             "experts = 4, k = 2, moe_every = 1}; x = ml.rand(8, 1, 28, 28); y = ml.tensor({1, 2, 3, 4, 5, 6, 7, 8}, "
             "\"int64\"); print('ready' .. '!')\r");
    CHECK(expect(&t, m, "ready!", 30));
    CHECK(expect(&t, m, "moelab> ", 10));
    /* an attack far too long to finish: the dashboard must be drawing before Ctrl-C */
    m = t.len;
    send(&t, "xa, r = ml.watch(m, x, y, {eps = 0.001, steps = 1000000, seed = 1})\r");
    CHECK(expect(&t, m, "pgd  step ", 30));
    CHECK(expect(&t, m, "routing change vs clean", 10));
    usleep(300000);
    size_t before = t.len;
    send(&t, "\x03");
    CHECK(expect(&t, before, "interrupted", 20)); /* the report line: "..., interrupted" */
    CHECK(expect(&t, before, "moelab> ", 10));
    m = t.len;
    send(&t, "print(r.interrupted, xa:size(1), #r.history.loss > 0)\r");
    CHECK(expect(&t, m, "true\t8\ttrue", 10));
    m = t.len;
    send(&t, "6*7\r");
    CHECK(expect(&t, m, "42", 10));
    CHECK(expect(&t, m, "moelab> ", 10));
    if (getenv("MOELAB_TEST_VERBOSE")) fwrite(t.buf, 1, t.len, stderr);
    send(&t, "os.exit(0)\r");
    finish(&t, 10);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(watch_stops_on_ctrl_c_and_the_prompt_answers);
    return test_summary();
}
