/* main.c -- the `moelab` executable: command line, then a script, code from
 * -e, or the interactive prompt. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lineedit.h"
#include "moelab_lua.h"
#include "repl.h"


#ifndef MOELAB_GOMP_SPINCOUNT
#define MOELAB_GOMP_SPINCOUNT "10000"
#endif
char *openblas_get_config(void);

static void usage(FILE *out) {
    fputs("usage: moelab [options] [script.lua [args...]]\n"
          "  -e code   run code (repeatable)\n"
          "  -i        enter the prompt after running the script or -e code\n"
          "  -v        show version information\n"
          "  -h        show this help\n"
          "  -         run a script read from standard input\n"
          "  --        stop handling options\n"
          "With no script and no -e, moelab opens its prompt (Ctrl-C interrupts, Ctrl-D quits).\n",
          out);
}

static void version(lua_State *L) {
    lua_getglobal(L, "ml");
    lua_getfield(L, -1, "version");
    printf("moelab %s -- %s, OpenBLAS %s\n", lua_tostring(L, -1), LUA_RELEASE, openblas_get_config());
    lua_pop(L, 2);
}

static void banner(lua_State *L) {
    lua_getglobal(L, "ml");
    lua_getfield(L, -1, "version");
    printf("moelab %s (%s) -- Mixture-of-Experts robustness lab\n"
           "`ml` is loaded. help() for an overview, ?name for help on a name; Tab completes,\n"
           "Ctrl-C interrupts a computation, Ctrl-D quits.\n",
           lua_tostring(L, -1), LUA_RELEASE);
    lua_pop(L, 2);
}

static char *history_path(void) {
    const char *env = getenv("MOELAB_HISTORY");
    if (env) return env[0] ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (!home || !home[0]) return NULL;
    size_t n = strlen(home) + 32;
    char *p = malloc(n);
    snprintf(p, n, "%s/.moelab_history", home);
    return p;
}

/* OpenMP threads that wait at a barrier spin before they sleep; libgomp's
 * default spin is long (300,000 rounds), and when another process holds a core
 * the spinning thread keeps its partner from running: a ViT forward measured
 * 4-5 times slower beside one busy process, no faster on an idle machine.
 * libgomp reads GOMP_SPINCOUNT once, when it is loaded, before main(); so when
 * the user has set neither it nor OMP_WAIT_POLICY, set a short spin and run
 * the binary again (once: the variable is then set). */
static void shorten_openmp_spin(char **argv) {
#ifdef __linux__
    if (getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY")) return;
    if (setenv("GOMP_SPINCOUNT", MOELAB_GOMP_SPINCOUNT, 0) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with libgomp's defaults */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    shorten_openmp_spin(argv);
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("moelab: cannot create the Lua state (out of memory)\n", stderr);
        return 1;
    }
    luaL_openlibs(L);
    repl_install_signals(L);
    luaL_requiref(L, "moelab", luaopen_moelab, 0);
    lua_setglobal(L, "ml");
    /* the prompt's conveniences: help as a global, ml.repl settings */
    repl_dostring(L,
                  "ml.repl = ml.repl or {}\n"
                  "function ml.repl.timing(on) ml.repl._timing = on ~= false end\n"
                  "if ml.doc then ml.doc(ml.repl.timing, \"ml.repl.timing([on = true]) -- print the time each command takes\") end\n"
                  "if ml.help then help = ml.help end\n",
                  "=(moelab)");
    int status = LUA_OK;
    bool interactive = false, ran = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (!strcmp(a, "-e")) {
            if (i + 1 >= argc) {
                fputs("moelab: -e needs an argument\n", stderr);
                usage(stderr);
                lua_close(L);
                return 1;
            }
            status = repl_dostring(L, argv[++i], "=(command line)");
            ran = true;
            if (status != LUA_OK) break;
        } else if (!strcmp(a, "-i")) {
            interactive = true;
        } else if (!strcmp(a, "-v")) {
            version(L);
            ran = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            lua_close(L);
            return 0;
        } else if (!strcmp(a, "-")) {
            status = repl_dofile(L, NULL, argc, argv, i);
            ran = true;
            i = argc;
            break;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "moelab: unknown option '%s'\n", a);
            usage(stderr);
            lua_close(L);
            return 1;
        } else {
            break;
        }
    }
    if (status == LUA_OK && i < argc) {
        status = repl_dofile(L, argv[i], argc, argv, i);
        ran = true;
    }
    if (status == LUA_OK && (interactive || !ran)) {
        bool tty = isatty(STDIN_FILENO);
        char *hist = tty ? history_path() : NULL;
        le_init(tty, hist, tty ? repl_complete : NULL, L);
        free(hist);
        if (tty) banner(L);
        status = repl_loop(L);
        le_close();
    }
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
