/* repl.c -- the interactive loop and protected execution.
 *
 * As in Lua's own lua.c: a line is first tried as `return <line>` so that an
 * expression prints its value; a syntax error that ends at <eof> asks for
 * more input; every chunk runs under lua_pcall with a message handler that
 * adds a (short) traceback; SIGINT sets a hook that raises "interrupted".
 * Additions: a trailing `;` silences the result, `?name` shows help, C kernels
 * see the same interrupt through the core's flag, and Ctrl-C at the prompt
 * clears the line. */
#include "repl.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "lineedit.h"

static lua_State *main_L;
static volatile sig_atomic_t computing;

/* ------------------------------------------------------------ interrupts */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
    (void)sig;
    ml_interrupt_request(); /* C kernels poll this */
    le_signal_interrupt();  /* the prompt clears its line */
    if (computing && main_L)
        lua_sethook(main_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void repl_install_signals(lua_State *L) {
    main_L = L;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking read or select returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

/* ------------------------------------------------------------ errors */
/* Message handler: the message plus a short traceback (the frames of the
 * user's code; the REPL's own frames and long C chains are cut). */
static int msghandler(lua_State *L) {
    lua_sethook(L, NULL, 0, 0); /* a pending interrupt must not fire inside the handler */
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    const char *tb = lua_tostring(L, -1);
    /* keep at most 8 frame lines, drop the C boundary frames at the bottom */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int frames = 0;
    const char *p = tb;
    bool in_tb = false;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        bool keep = true;
        if (in_tb) {
            if (len > 1 && (strstr(p, "[C]: in ?") == p + 1 || strstr(p, "in function <repl") == p + 1)) keep = false;
            if (keep && ++frames > 8) keep = false;
        }
        if (!strncmp(p, "stack traceback:", 16)) in_tb = true;
        if (keep) {
            luaL_addlstring(&b, p, len);
            if (nl) luaL_addchar(&b, '\n');
        }
        if (!nl) break;
        p = nl + 1;
    }
    luaL_pushresult(&b);
    return 1;
}

void repl_report(lua_State *L, int status) {
    if (status == LUA_OK) return;
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
}

int repl_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    ml_interrupt_clear();
    computing = 1;
    int status = lua_pcall(L, narg, nres, base);
    computing = 0;
    lua_sethook(L, NULL, 0, 0);
    ml_interrupt_clear();
    lua_remove(L, base);
    return status;
}

int repl_dostring(lua_State *L, const char *code, const char *name) {
    int status = luaL_loadbuffer(L, code, strlen(code), name);
    if (status == LUA_OK) status = repl_docall(L, 0, 0);
    repl_report(L, status);
    return status;
}

int repl_dofile(lua_State *L, const char *path, int argc, char **argv, int script_index) {
    /* arg: arg[0] = script, arg[1..] = its arguments, negative = interpreter and options */
    lua_createtable(L, argc - script_index - 1, script_index + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script_index);
    }
    lua_setglobal(L, "arg");
    int status = luaL_loadfile(L, path);
    if (status == LUA_OK) {
        int n = 0;
        for (int i = script_index + 1; i < argc; i++, n++) lua_pushstring(L, argv[i]);
        status = repl_docall(L, n, 0);
    }
    repl_report(L, status);
    return status;
}

/* ------------------------------------------------------------ the prompt */
static bool incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return false;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && !strcmp(msg + len - 5, "<eof>");
}

/* Prints every value on the stack (tab-separated) through ml.repr (tables show
 * their contents) or tostring, protected. */
static int print_values(lua_State *L) {
    int n = lua_gettop(L);
    bool repr = lua_getglobal(L, "ml") == LUA_TTABLE && lua_getfield(L, -1, "repr") == LUA_TFUNCTION;
    int fn = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (repr) {
            lua_pushvalue(L, fn);
            lua_pushvalue(L, i);
            lua_call(L, 1, 1);
            if (!lua_isstring(L, -1)) {
                lua_pop(L, 1);
                luaL_tolstring(L, i, NULL);
            }
        } else {
            luaL_tolstring(L, i, NULL);
        }
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    puts(lua_tostring(L, -1));
    fflush(stdout);
    return 0;
}

static bool timing_enabled(lua_State *L) {
    bool on = false;
    if (lua_getglobal(L, "ml") == LUA_TTABLE && lua_getfield(L, -1, "repl") == LUA_TTABLE) {
        lua_getfield(L, -1, "_timing");
        on = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return on;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *trim_right(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

/* Reads one complete chunk (possibly several lines) and compiles it. Leaves
 * the function on the stack and returns LUA_OK, or an error status with the
 * message on the stack, or -1 at end of input, or -2 when Ctrl-C abandoned it. */
static int read_chunk(lua_State *L, char **text, bool *silent) {
    bool interrupted;
    char *line = le_readline("moelab> ", &interrupted);
    if (!line) return -1;
    if (interrupted) {
        free(line);
        return -2;
    }
    trim_right(line);
    *silent = false;
    char *buf;
    if (line[0] == '?' ) { /* ?name -> help(name) */
        const char *name = line + 1;
        while (*name == ' ') name++;
        size_t n = strlen(name) + 16;
        buf = malloc(n);
        snprintf(buf, n, "help(%s)", *name ? name : "");
        *silent = true;
    } else if (line[0] == '=') { /* Lua 5.1 habit */
        size_t n = strlen(line) + 8;
        buf = malloc(n);
        snprintf(buf, n, "return %s", line + 1);
    } else {
        buf = strdup(line);
    }
    free(line);
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] == ';') *silent = true;
    for (;;) {
        /* expressions first: `return <buf>` */
        size_t n = strlen(buf) + 8;
        char *ret = malloc(n);
        snprintf(ret, n, "return %s", buf);
        int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
        free(ret);
        if (status == LUA_OK) {
            *text = buf;
            return LUA_OK;
        }
        lua_pop(L, 1);
        status = luaL_loadbuffer(L, buf, strlen(buf), "=stdin");
        if (!incomplete(L, status)) {
            *text = buf;
            return status;
        }
        lua_pop(L, 1);
        char *more = le_readline(".. ", &interrupted);
        if (!more || interrupted) {
            free(more);
            free(buf);
            return more ? -2 : -1;
        }
        size_t m = strlen(buf) + strlen(more) + 2;
        char *joined = malloc(m);
        snprintf(joined, m, "%s\n%s", buf, more);
        free(buf);
        free(more);
        buf = joined;
        size_t jl = strlen(trim_right(buf));
        *silent = jl > 0 && buf[jl - 1] == ';';
    }
}

int repl_loop(lua_State *L) {
    for (;;) {
        lua_settop(L, 0);
        char *text = NULL;
        bool silent = false;
        int status = read_chunk(L, &text, &silent);
        if (status == -1) {
            fputs("\n", stdout);
            break;
        }
        if (status == -2) continue;
        le_add_history(text);
        free(text);
        double t0 = now();
        if (status == LUA_OK) status = repl_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK && !silent && lua_gettop(L) > 0) {
            lua_pushcfunction(L, print_values);
            lua_insert(L, 1);
            int n = lua_gettop(L) - 1;
            if (lua_pcall(L, n, 0, 0) != LUA_OK) {
                fprintf(stderr, "error printing the result: %s\n", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        repl_report(L, status);
        if (timing_enabled(L)) printf("(%.3f s)\n", now() - t0);
        fflush(stdout);
    }
    return 0;
}
