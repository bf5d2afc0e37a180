/* main.c -- the `moelab` executable: command line, then a script, code from
 * -e, or the interactive prompt.
 *
 * As Lua's own lua.c does, everything that can raise a Lua error (opening the
 * libraries, loading moelab, the prompt's bootstrap, the command line) runs
 * inside `pmain` under lua_pcall: an error while starting is reported as a
 * message and a non-zero status, never a panic. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build_info.h"
#include "lineedit.h"
#include "moelab_lua.h"
#include "repl.h"

#ifndef MOELAB_GOMP_SPINCOUNT
#define MOELAB_GOMP_SPINCOUNT "10000"
#endif

static void usage(FILE *out) {
    fputs("usage: moelab [options] [script.lua [args...]]\n"
          "  -e code     run code (repeatable)\n"
          "  -i          enter the prompt after running the script or -e code\n"
          "  -v          show version and build information (BLAS, OpenMP, CPU)\n"
          "  -h          show this help\n"
          "  --sandbox   run untrusted code: no processes, no native modules, no binary\n"
          "              chunks, files only inside the working folder (before the script)\n"
          "  -           run a script read from standard input\n"
          "  --          stop handling options\n"
          "With no script and no -e, moelab opens its prompt (Ctrl-C interrupts, Ctrl-D quits).\n",
          out);
}

static void version(void) {
    ml_build_config b;
    ml_build_info(&b);
    printf("moelab %s -- %s\n", b.version, LUA_RELEASE);
    printf("  compiler  %s%s\n", b.compiler, b.sanitized ? " (AddressSanitizer)" : "");
    printf("  BLAS      %s (%s build)\n", b.blas, b.blas_openmp ? "OpenMP" : "pthread");
    printf("  OpenMP    %d, %d threads\n", b.openmp, b.threads);
    printf("  CPU       %s, %d logical CPUs, %s\n", b.cpu, b.cpus, b.features);
    printf("  kernels   convolution %s\n", b.conv_avx512 ? "AVX-512 direct" : "im2col + sgemm");
}

static void banner(void) {
    printf("moelab %s (%s) -- Mixture-of-Experts robustness lab\n"
           "`ml` is loaded. help() for an overview, ?name for help on a name; Tab completes,\n"
           "Ctrl-C interrupts a computation, Ctrl-D quits.\n",
           ML_VERSION, LUA_RELEASE);
}

static char *history_path(void) {
    const char *env = getenv("MOELAB_HISTORY");
    if (env) return env[0] ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (!home || !home[0]) return NULL;
    size_t n = strlen(home) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/.moelab_history", home);
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

typedef struct {
    int argc;
    char **argv;
    int exit_status; /* what main returns */
} run_args;

/* The prompt's conveniences, run once `ml` is loaded. */
static const char bootstrap[] = "if ml.help then help = ml.help end\n";

/* Everything after the Lua state exists: libraries, moelab, the command line. */
static int pmain(lua_State *L) {
    run_args *a = lua_touserdata(L, 1);
    int argc = a->argc;
    char **argv = a->argv;
    a->exit_status = 1;
    luaL_checkversion(L);
    luaL_openlibs(L);
    luaL_requiref(L, "moelab", luaopen_moelab, 0);
    lua_setglobal(L, "ml");
    repl_open(L);
    if (luaL_dostring(L, bootstrap) != LUA_OK) return lua_error(L);
    int status = LUA_OK;
    bool interactive = false, ran = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            break;
        } else if (!strcmp(arg, "-e")) {
            if (i + 1 >= argc) {
                fputs("moelab: -e needs an argument\n", stderr);
                usage(stderr);
                return 0;
            }
            status = repl_dostring(L, argv[++i], "=(command line)");
            ran = true;
            if (status != LUA_OK) break;
        } else if (!strcmp(arg, "-i")) {
            interactive = true;
        } else if (!strcmp(arg, "--sandbox")) {
            if (ran) {
                fputs("moelab: --sandbox must come before -e and the script\n", stderr);
                return 0;
            }
            repl_sandbox(L);
        } else if (!strcmp(arg, "-v")) {
            version();
            ran = true;
        } else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            a->exit_status = 0;
            return 0;
        } else if (!strcmp(arg, "-")) {
            status = repl_dofile(L, NULL, argc, argv, i);
            ran = true;
            i = argc;
            break;
        } else if (arg[0] == '-' && arg[1]) {
            fprintf(stderr, "moelab: unknown option '%s'\n", arg);
            usage(stderr);
            return 0;
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
        if (tty) banner();
        status = repl_loop(L);
        le_close();
    }
    a->exit_status = status == LUA_OK ? 0 : 1;
    return 0;
}

int main(int argc, char **argv) {
    shorten_openmp_spin(argv);
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("moelab: cannot create the Lua state (out of memory)\n", stderr);
        return 1;
    }
    repl_install_signals(L);
    run_args a = {argc, argv, 1};
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "moelab: %s\n", msg ? msg : "(error object is not a string)");
        a.exit_status = 1;
    }
    lua_close(L);
    return a.exit_status;
}
