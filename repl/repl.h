/* repl.h -- running Lua code for the moelab executable: protected calls with
 * short tracebacks, Ctrl-C handling, the interactive loop. */
#ifndef MOELAB_REPL_H
#define MOELAB_REPL_H

#include <lua.h>
#include <stdbool.h>

/* Installs the SIGINT handler: during a computation Ctrl-C raises the error
 * "interrupted" (Lua code via a hook, C kernels by polling the core's flag);
 * at the prompt it clears the line. */
void repl_install_signals(lua_State *L);
/* Runs the function on the stack top with narg arguments under a traceback
 * handler; reports an error on stderr. Returns a Lua status. */
int repl_docall(lua_State *L, int narg, int nres);
int repl_dostring(lua_State *L, const char *code, const char *name);
/* Runs a script file (NULL: stdin) with the given arguments (also set as `arg`). */
int repl_dofile(lua_State *L, const char *path, int argc, char **argv, int script_index);
/* The interactive prompt. Returns the exit status. */
int repl_loop(lua_State *L);
/* Prints the error message on top of the stack to stderr and pops it. */
void repl_report(lua_State *L, int status);

/* Completion of Lua names for the line editor (completion.c). */
char **repl_complete(const char *word, void *L);

#endif
