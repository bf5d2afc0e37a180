/* repl.h -- running Lua code for the moelab executable: protected calls with
 * short tracebacks, Ctrl-C handling, the interactive loop, completion. */
#ifndef MOELAB_REPL_H
#define MOELAB_REPL_H

#include <lua.h>
#include <stdbool.h>

/* Installs the SIGINT handler: during a computation Ctrl-C raises the error
 * "interrupted" (Lua code via a hook, C kernels by polling the core's flag);
 * at the prompt it clears the line. */
void repl_install_signals(lua_State *L);
/* Adds the prompt's functions to ml.repl (timing, the directory lister used by
 * file-name completion). Needs the moelab library loaded. */
void repl_open(lua_State *L);
/* Pushes ml.repl[name] of the loaded library (nil when absent) and returns its type. */
int repl_library_field(lua_State *L, const char *name);
/* Runs the function on the stack top with narg arguments under a traceback
 * handler, with Ctrl-C armed. Returns a Lua status. */
int repl_docall(lua_State *L, int narg, int nres);
int repl_dostring(lua_State *L, const char *code, const char *name);
/* Runs a script file (NULL: stdin) with the given arguments (also set as `arg`). */
int repl_dofile(lua_State *L, const char *path, int argc, char **argv, int script_index);
/* The interactive prompt. Returns the exit status. */
int repl_loop(lua_State *L);
/* Prints the error message on top of the stack to stderr and pops it. */
void repl_report(lua_State *L, int status);

/* Restricts the state for untrusted code (sandbox.c): no processes, no native
 * code, no binary chunks, files only inside the working folder. Raises a Lua
 * error when it cannot. */
void repl_sandbox(lua_State *L);
/* From now on scripts, -e code and prompt lines load as text only. */
void repl_text_chunks_only(void);

/* Tab completion (completion.c): candidates for the word line[start, end) of
 * the line being edited, as a NULL-terminated malloc'd array (or NULL). */
char **repl_complete(const char *line, int start, int end, void *L);

#endif
