/* lineedit.h -- the one adapter between the prompt and a line-editing library
 * (libedit by default, GNU readline with -DMOELAB_READLINE=ON), with a plain
 * fgets fallback when stdin is not a terminal. */
#ifndef MOELAB_LINEEDIT_H
#define MOELAB_LINEEDIT_H

#include <stdbool.h>

/* Completion callback: given the line and the word line[start, end) before
 * the cursor, returns a NULL-terminated malloc'd array of malloc'd
 * replacements for the word (or NULL). */
typedef char **(*le_completer)(const char *line, int start, int end, void *ud);

/* history_path may be NULL (no history file). */
void le_init(bool interactive, const char *history_path, le_completer comp, void *ud);
/* Reads a line (malloc'd, without the newline). Returns NULL at end of input.
 * Sets *interrupted (and returns an empty string) when Ctrl-C cleared the line. */
char *le_readline(const char *prompt, bool *interrupted);
void le_add_history(const char *line);
void le_close(void);
/* Called from the SIGINT handler (async-signal-safe). */
void le_signal_interrupt(void);

#endif
