/* lineedit.c -- see lineedit.h. The line is read through the library's
 * callback interface inside a select() loop, so that Ctrl-C at the prompt (a
 * signal interrupting select) can clear the line cleanly instead of killing
 * the process or leaving the editor in a half-read state. */
#include "lineedit.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#ifdef MOELAB_USE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#else
#include <editline/readline.h>
#endif

static bool interactive_mode;
static char *history_file;
static volatile sig_atomic_t line_interrupt;
static le_completer completer;
static void *completer_ud;

static char *line_result;
static bool line_done;

void le_signal_interrupt(void) { line_interrupt = 1; }

/* ------------------------------------------------------------ completion */
static char **candidates;
static int candidate_pos;

static char *generator(const char *text, int state) {
    (void)text;
    if (!candidates) return NULL;
    if (state == 0) candidate_pos = 0;
    char *c = candidates[candidate_pos];
    if (!c) return NULL;
    candidate_pos++;
    return strdup(c);
}

static char **attempt_completion(const char *text, int start, int end) {
    if (candidates) {
        for (int i = 0; candidates[i]; i++) free(candidates[i]);
        free(candidates);
        candidates = NULL;
    }
    if (completer) candidates = completer(rl_line_buffer, start, end, completer_ud);
    rl_attempted_completion_over = 1;   /* no default filename completion */
    rl_completion_append_character = 0; /* ml.nn.Linear, not "ml.nn.Linear " */
    return rl_completion_matches(text, generator);
}

void le_init(bool interactive, const char *history_path, le_completer comp, void *ud) {
    interactive_mode = interactive;
    if (!interactive) return;
    completer = comp;
    completer_ud = ud;
    rl_catch_signals = 0; /* our SIGINT handler decides */
    rl_readline_name = "moelab";
    /* '.' and ':' belong to the word: ml.nn.Li and x:sh complete as a whole */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^#~[]";
    rl_attempted_completion_function = attempt_completion;
    using_history();
    stifle_history(1000);
    if (history_path) {
        history_file = strdup(history_path);
        read_history(history_file);
    }
}

static void on_line(char *line) {
    line_result = line;
    line_done = true;
    rl_callback_handler_remove();
}

static char *plain_readline(const char *prompt, bool *interrupted) {
    (void)prompt;
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        int ch = getchar();
        if (ch == EOF) {
            if (line_interrupt && errno == EINTR) {
                line_interrupt = 0;
                clearerr(stdin);
                *interrupted = true;
                buf[0] = 0;
                return buf;
            }
            if (len == 0) {
                free(buf);
                return NULL;
            }
            break;
        }
        if (ch == '\n') break;
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        buf[len++] = (char)ch;
    }
    buf[len] = 0;
    return buf;
}

char *le_readline(const char *prompt, bool *interrupted) {
    *interrupted = false;
    line_interrupt = 0;
    if (!interactive_mode) return plain_readline(prompt, interrupted);
    line_done = false;
    line_result = NULL;
    rl_callback_handler_install(prompt, on_line);
    while (!line_done) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(STDIN_FILENO, &fds);
        int r = select(STDIN_FILENO + 1, &fds, NULL, NULL, NULL);
        if (r < 0) {
            if (errno == EINTR && line_interrupt) {
                /* Ctrl-C: abandon the line, start afresh on a new one */
                line_interrupt = 0;
                rl_replace_line("", 0);
                rl_callback_handler_remove();
                fputs("\n", stdout);
                fflush(stdout);
                *interrupted = true;
                return strdup("");
            }
            if (errno == EINTR) continue;
            rl_callback_handler_remove();
            return NULL;
        }
        rl_callback_read_char();
    }
    return line_result; /* NULL at end of input (Ctrl-D) */
}

void le_add_history(const char *line) {
    if (!interactive_mode || !line[0]) return;
    add_history(line);
    if (history_file) write_history(history_file); /* every line: a crash loses nothing */
}

void le_close(void) {
    if (candidates) {
        for (int i = 0; candidates[i]; i++) free(candidates[i]);
        free(candidates);
        candidates = NULL;
    }
    free(history_file);
    history_file = NULL;
}
