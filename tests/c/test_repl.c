/* The moelab executable, driven for real: through a pseudo-terminal for the
 * prompt (printing, continuation lines, errors, Ctrl-C during a Lua loop and
 * during a long C kernel, Ctrl-C at the prompt, Ctrl-D, history), and through
 * pipes for scripts, -e, -v, -h and piped input. */
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

#include "pty_session.h"
#include "testlib.h"

static char tmpdir[256];

/* ------------------------------------------------------------ pty session */
/* Starts moelab on a 24-row terminal with its history in tmpdir. */
static bool start_with(session *s, const char *script) {
    static char hist[600];
    snprintf(hist, sizeof hist, "MOELAB_HISTORY=%s/history", tmpdir);
    const char *env[] = {hist, NULL};
    return pty_start(s, script, 24, env);
}

static bool start(session *s) { return start_with(s, NULL); }

TEST(prompt_prints_and_continues) {
    session s;
    CHECK(start(&s));
    CHECK(expect_prompt(&s, 10));
    size_t m = s.len;
    send(&s, "1+1\r");
    CHECK(expect(&s, m, "2\r\n", 5));
    m = s.len;
    send(&s, "t = ml.ones(2, 2)\r");
    CHECK(expect(&s, m, "moelab> ", 5));
    m = s.len;
    send(&s, "t * 3\r");
    CHECK(expect(&s, m, "[float32 tensor of shape 2x2]", 5));
    m = s.len;
    send(&s, "{b = 2, a = t:shape()}\r"); /* a table shows its contents */
    CHECK(expect(&s, m, "{a = {2, 2}, b = 2}", 5));
    m = s.len;
    send(&s, "t * 4;\r");             /* a trailing ; silences */
    CHECK(expect(&s, m, "moelab> ", 5));
    CHECK(strstr(s.buf + m, "4.") == NULL);
    m = s.len;
    send(&s, "function f(a)\r");      /* continuation */
    CHECK(expect(&s, m, ".. ", 5));
    send(&s, "return a * 10\r");
    send(&s, "end\r");
    CHECK(expect(&s, m, "moelab> ", 5));
    m = s.len;
    send(&s, "f(7)\r");
    CHECK(expect(&s, m, "70", 5));
    m = s.len;
    send(&s, "ml.zeros(2, 3) + ml.zeros(3, 2)\r"); /* an error, and the prompt goes on */
    CHECK(expect(&s, m, "cannot be broadcast", 5));
    CHECK(expect(&s, m, "stack traceback", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "error(setmetatable({}, {__tostring = function() error('bad') end}))\r");
    CHECK(expect(&s, m, "bad", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "?ml.conv2d\r");
    CHECK(expect(&s, m, "2-d convolution", 5));
    CHECK(expect_prompt(&s, 5));
    send(&s, "\x04");                 /* Ctrl-D on an empty line exits */
    int st = finish(&s, 5);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fprintf(stderr, "  exit status %d; output:\n%s\n", st, s.buf + (s.len > 600 ? s.len - 600 : 0));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Values that once ended the session (exit 139) print, and the prompt goes on. */
TEST(prompt_prints_several_values_and_odd_ones) {
    session s;
    CHECK(start(&s));
    CHECK(expect_prompt(&s, 10));
    size_t m = s.len;
    send(&s, "ml.rand(300), 1\r");
    CHECK(expect(&s, m, "[float32 tensor of shape 300]\t1", 10));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "setmetatable({}, {__tostring = function() error('boom') end}), 'next'\r");
    CHECK(expect(&s, m, "<table: cannot be printed: ", 5));
    CHECK(expect(&s, m, "boom>\tnext", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "m = ml.nn.mlp{}\r");
    CHECK(expect_prompt(&s, 10));
    m = s.len;
    send(&s, "m:eval()\r"); /* a chaining method: one line, not the tree */
    CHECK(expect(&s, m, "235.1K parameters, eval mode>", 5));
    CHECK(expect_prompt(&s, 5));
    CHECK(strstr(s.buf + m, "Linear(") == NULL);
    m = s.len;
    send(&s, "_ == m\r"); /* _ holds the last result */
    CHECK(expect(&s, m, "true", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, ":time on\r");
    CHECK(expect(&s, m, "timing on", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "x = 1\r");
    CHECK(expect(&s, m, " s)", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, ":time off\r");
    CHECK(expect(&s, m, "timing off", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, ":bogus\r");
    CHECK(expect(&s, m, "unknown command ':bogus'", 5));
    CHECK(expect_prompt(&s, 5));
    send(&s, "\x04");
    int st = finish(&s, 5);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* tests/c/prompt_corpus.txt typed line by line: after each the prompt must
 * answer again; @expect lines check the output of the line before;
 * @interrupt lines press Ctrl-C once their code runs. */
TEST(prompt_corpus) {
    char path[700];
    snprintf(path, sizeof path, "%s/tests/c/prompt_corpus.txt", MOELAB_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f) return;
    session s;
    CHECK(start(&s));
    CHECK(expect_prompt(&s, 10));
    char line[4096];
    int lineno = 0, typed = 0;
    size_t mark = s.len;
    bool alive = true;
    while (alive && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        if (!strncmp(line, "@expect ", 8)) {
            if (!strstr(s.buf + (mark < s.len ? mark : s.len), line + 8)) {
                fprintf(stderr, "  corpus line %d: expected \"%s\" in:\n----\n%s\n----\n", lineno, line + 8,
                        s.buf + (mark < s.len ? mark : s.len));
                CHECK(false);
            }
            continue;
        }
        bool interrupt = !strncmp(line, "@interrupt ", 11);
        const char *code = interrupt ? line + 11 : line;
        trim(&s, 64);
        mark = s.len;
        send(&s, code);
        send(&s, "\r");
        typed++;
        if (interrupt) {
            double t0 = now();
            while (now() - t0 < 0.6) pump(&s, 20); /* let it start */
            send(&s, "\x03");
            if (!expect(&s, mark, "interrupted", 20)) {
                fprintf(stderr, "  corpus line %d: Ctrl-C did not interrupt: %s\n", lineno, code);
                CHECK(false);
            }
        }
        if (!await_input(&s, 60)) {
            fprintf(stderr, "  corpus line %d: the prompt did not come back after: %s\n  output:\n%s\n", lineno, code,
                    s.buf + (mark < s.len ? mark : s.len));
            CHECK(false);
            alive = false;
        }
    }
    fclose(f);
    CHECK(typed >= 250);
    if (alive) {
        mark = s.len;
        send(&s, "print('still' .. ' here')\r");
        CHECK(expect(&s, mark, "still here", 10));
        CHECK(expect_prompt(&s, 5));
        send(&s, "\x04");
    }
    int st = finish(&s, 10);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fprintf(stderr, "  exit status %d after %d lines\n", st, typed);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(ctrl_c_interrupts_lua_loops_and_c_kernels) {
    session s;
    CHECK(start(&s));
    CHECK(expect(&s, 0, "moelab> ", 10));
    size_t m = s.len;
    /* wait until the loop runs (a loaded machine may take a while to start it) */
    send(&s, "print('loop' .. 'ing') while true do end\r");
    CHECK(expect(&s, m, "looping", 10));
    usleep(200000);
    send(&s, "\x03");
    CHECK(expect(&s, m, "interrupted", 5));
    CHECK(expect(&s, m, "moelab> ", 5));
    m = s.len;
    send(&s, "1+1\r");
    CHECK(expect(&s, m, "2", 5));
    /* a long C kernel: 400M normal draws poll the interrupt flag */
    m = s.len;
    send(&s, "print('draw' .. 'ing') x = ml.randn(20000, 20000)\r");
    CHECK(expect(&s, m, "drawing", 10));
    usleep(300000);
    send(&s, "\x03");
    CHECK(expect(&s, m, "interrupted", 10));
    CHECK(expect(&s, m, "moelab> ", 5));
    m = s.len;
    send(&s, "print(x == nil and 'no tensor' or 'tensor')\r");
    CHECK(expect(&s, m, "no tensor", 5));
    /* Ctrl-C at the prompt clears the line */
    m = s.len;
    send(&s, "this is not lua");
    usleep(200000);
    send(&s, "\x03");
    usleep(200000);
    send(&s, "2+3\r");
    CHECK(expect(&s, m, "5", 5));
    CHECK(strstr(s.buf + m, "syntax error") == NULL);
    /* and in the middle of a continuation */
    m = s.len;
    send(&s, "for i = 1, 3 do\r");
    CHECK(expect(&s, m, ".. ", 5));
    size_t cont = s.len;
    send(&s, "\x03");
    /* the next line goes out once the fresh prompt is back (a loaded machine
     * can take longer than any fixed pause to handle the Ctrl-C) */
    CHECK(expect(&s, cont, "moelab> ", 5));
    send(&s, "10*10\r");
    CHECK(expect(&s, m, "100", 5));
    CHECK(expect_prompt(&s, 5));
    send(&s, "os.exit(3)\r");
    int st = finish(&s, 5);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
}

/* Tab through the real line editor: a global, ml.attent -> ml.attention, and a
 * module's numbered children (m. -> m[, the common start of m[1], m[2]). */
TEST(tab_completes) {
    session s;
    CHECK(start(&s));
    CHECK(expect_prompt(&s, 10));
    size_t m = s.len;
    send(&s, "probe_value_xyz = 42\r");
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "probe_val\t");
    usleep(300000);
    send(&s, "\r");
    CHECK(expect(&s, m, "42", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "type(ml.attent\t");
    usleep(300000);
    send(&s, ")\r");
    CHECK(expect(&s, m, "function", 5)); /* type(ml.attent) would be nil */
    CHECK(expect_prompt(&s, 5));
    /* ml.att is ambiguous: a second Tab lists ml.attack and ml.attention */
    m = s.len;
    send(&s, "x_att = ml.att\t\t");
    CHECK(expect(&s, m, "attention", 5));
    CHECK(expect(&s, m, "attack", 5));
    send(&s, "ack\r");
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "type(x_att.pgd)\r");
    CHECK(expect(&s, m, "function", 5));
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "m = ml.nn.Sequential(ml.nn.Linear(2, 3), ml.nn.ReLU())\r");
    CHECK(expect_prompt(&s, 5));
    m = s.len;
    send(&s, "m.\t");
    usleep(300000);
    send(&s, "2]:type()\r");
    CHECK(expect(&s, m, "Activation", 5));
    CHECK(expect_prompt(&s, 5));
    send(&s, "\x04");
    int st = finish(&s, 5);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Ctrl-C in a script: fit returns its history, and the rest of the script
 * runs normally (the interrupt once stayed set and every later call failed). */
TEST(ctrl_c_in_a_script_returns_the_history) {
    char script[600];
    snprintf(script, sizeof script, "%s/fit.lua", tmpdir);
    FILE *f = fopen(script, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("local d = ml.data.mnist()\n"
          "local h = ml.train.fit(ml.nn.cnn{}, d.train, {epochs = 100, batch = 32})\n"
          "print('after fit', h.interrupted, #h)\n"
          "print('kernel', ml.randn(1000):numel(), ml.interrupted())\n"
          "ml.save('" , f);
    fputs(tmpdir, f);
    fputs("/after.safetensors', ml.nn.Linear(2, 2))\nprint('saved')\n", f);
    fclose(f);
    session s;
    CHECK(start_with(&s, script));
    CHECK(expect(&s, 0, "epoch 1/100", 60));
    usleep(300000);
    send(&s, "\x03");
    CHECK(expect(&s, 0, "training interrupted in epoch 1", 20));
    CHECK(expect(&s, 0, "after fit\ttrue\t1", 20));
    CHECK(expect(&s, 0, "kernel\t1000\tfalse", 20));
    CHECK(expect(&s, 0, "saved", 20));
    int st = finish(&s, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(history_is_saved) {
    char path[600];
    snprintf(path, sizeof path, "%s/history", tmpdir);
    unlink(path);
    session s;
    CHECK(start(&s));
    CHECK(expect(&s, 0, "moelab> ", 10));
    size_t m = s.len;
    send(&s, "hist_marker = 42\r");
    CHECK(expect(&s, m, "hist_marker", 5));
    CHECK(expect_prompt(&s, 5));
    send(&s, "\x04");
    finish(&s, 5);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f) {
        char buf[4096] = {0};
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        CHECK(strstr(buf, "hist_marker") != NULL);
    }
}

/* ------------------------------------------------------------ non-interactive */
static int run_capture(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(command_line) {
    char out[8192], cmd[2048];
    snprintf(cmd, sizeof cmd, "echo 'print(6*7)\nml.ones(2)' | %s 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0);
    CHECK(strstr(out, "42") && strstr(out, "[float32 tensor of shape 2]"));
    snprintf(cmd, sizeof cmd, "%s -e 'print(1 + 2)' -e 'print(ml.version)' 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "3\n0."));
    snprintf(cmd, sizeof cmd, "%s -v 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "moelab ") && strstr(out, "Lua 5.4"));
    CHECK(strstr(out, "BLAS ") && strstr(out, "OpenMP ") && strstr(out, "CPU ") && strstr(out, "logical CPUs"));
    snprintf(cmd, sizeof cmd, "%s -h 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "usage: moelab"));
    snprintf(cmd, sizeof cmd, "%s --bogus 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 1 && strstr(out, "unknown option '--bogus'"));
    /* a script with arguments */
    char script[600];
    snprintf(script, sizeof script, "%s/s.lua", tmpdir);
    FILE *f = fopen(script, "w");
    fputs("local a, b = ...\nprint(arg[0]:match('s.lua') and 'name ok', arg[1], arg[2], a, b, #arg)\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s alpha beta 2>&1", MOELAB_BINARY, script);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "name ok\talpha\tbeta\talpha\tbeta\t2"));
    /* a failing script: non-zero status, message and traceback on stderr */
    f = fopen(script, "w");
    fputs("local function inner() error('deliberate failure') end\ninner()\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", MOELAB_BINARY, script);
    CHECK(run_capture(cmd, out, sizeof out) == 1);
    CHECK(strstr(out, "deliberate failure") && strstr(out, "stack traceback") && strstr(out, "inner"));
    /* -i after -e drops to the prompt (reading the piped rest) */
    snprintf(cmd, sizeof cmd, "echo 'print(v * 2)' | %s -e 'v = 21' -i 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "42"));
    /* script from stdin */
    snprintf(cmd, sizeof cmd, "echo 'print(...)' | %s - x y 2>&1", MOELAB_BINARY);
    CHECK(run_capture(cmd, out, sizeof out) == 0 && strstr(out, "x\ty"));
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moelab-test-repl-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    signal(SIGPIPE, SIG_IGN);
    RUN(prompt_prints_and_continues);
    RUN(prompt_prints_several_values_and_odd_ones);
    RUN(prompt_corpus);
    RUN(ctrl_c_interrupts_lua_loops_and_c_kernels);
    RUN(tab_completes);
    RUN(ctrl_c_in_a_script_returns_the_history);
    RUN(history_is_saved);
    RUN(command_line);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
