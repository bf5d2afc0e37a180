/* repl.c -- the interactive loop and protected execution.
 *
 * As in Lua's own lua.c: a line is first tried as `return <line>` so that an
 * expression prints its value; a syntax error that ends at <eof> asks for
 * more input; every chunk runs under lua_pcall with a message handler that
 * adds a (short) traceback. Additions: a trailing `;` silences the result,
 * `?name` shows help, `:time on` times each statement, `_` holds the last
 * result, values print through ml.repl.show (repr.lua), and Ctrl-C at the
 * prompt clears the line.
 *
 * Interrupts. Ctrl-C sets the core's flag, which C kernels poll, and arms a
 * count hook on the main thread and on the coroutine running at that moment
 * (the coroutine functions are wrapped to keep track of it). The hook raises
 * "interrupted" at every instruction for as long as the flag is set, so a
 * pcall in user code cannot swallow Ctrl-C: the command stops unless a library
 * function consumes the interrupt on purpose (ml.interruptible clears the
 * flag; ml.train.fit returns its history that way), and then the hook removes
 * itself. No hook is set otherwise: a hook slows every Lua instruction. */
#include "repl.h"

#include <dirent.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "lineedit.h"

static lua_State *main_L;
static lua_State *volatile running_L; /* the coroutine running now (NULL: the main thread) */
static volatile sig_atomic_t computing;
static bool timing;
static const char *chunk_mode; /* "t" in the sandbox: no binary chunks */

void repl_text_chunks_only(void) { chunk_mode = "t"; }

/* ------------------------------------------------------------ interrupts */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    if (ml_interrupt_pending()) luaL_error(L, "interrupted");
    lua_sethook(L, NULL, 0, 0); /* consumed by ml.interruptible */
}

static void on_sigint(int sig) {
    (void)sig;
    ml_interrupt_request(); /* C kernels poll this */
    le_signal_interrupt();  /* the prompt clears its line */
    if (computing && main_L) {
        lua_sethook(main_L, interrupt_hook, LUA_MASKCOUNT, 1);
        lua_State *co = running_L;
        if (co) lua_sethook(co, interrupt_hook, LUA_MASKCOUNT, 1);
    }
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

/* coroutine.resume and the functions made by coroutine.wrap, wrapped: they
 * note which thread runs, so that Ctrl-C reaches a loop inside a coroutine.
 * upvalue 1: the original function. */
static int tracked_call(lua_State *L, lua_State *co) {
    lua_State *prev = running_L;
    if (co && ml_interrupt_pending() && computing) lua_sethook(co, interrupt_hook, LUA_MASKCOUNT, 1);
    running_L = co;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    running_L = prev;
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

static int tracked_resume(lua_State *L) { return tracked_call(L, lua_tothread(L, 1)); }

/* The function coroutine.wrap returns: resumes its thread (upvalue 1) through
 * the tracked resume (upvalue 2) and raises the coroutine's error, with the
 * caller's position as coroutine.wrap does. */
static int tracked_wrap_call(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int narg = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_rotate(L, 1, 2); /* resume, co, args... */
    lua_call(L, narg + 1, LUA_MULTRET);
    if (!lua_toboolean(L, 1)) {
        if (lua_status(co) != LUA_OK && lua_status(co) != LUA_YIELD) lua_resetthread(co);
        if (lua_type(L, 2) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_pushvalue(L, 2);
            lua_concat(L, 2);
            return lua_error(L);
        }
        lua_settop(L, 2);
        return lua_error(L);
    }
    return lua_gettop(L) - 1;
}

/* coroutine.wrap(f) -> a function resuming coroutine.create(f) (upvalue 1: create,
 * upvalue 2: the tracked resume) */
static int tracked_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushcclosure(L, tracked_wrap_call, 2);
    return 1;
}

static void track_coroutines(lua_State *L) {
    if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
        lua_getfield(L, -1, "create");
        lua_getfield(L, -2, "resume");
        lua_pushcclosure(L, tracked_resume, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, "resume");
        lua_pushcclosure(L, tracked_wrap, 2);
        lua_setfield(L, -2, "wrap");
    }
    lua_pop(L, 1);
}

/* ------------------------------------------------------------ errors */
/* Message handler: the message plus a short traceback (the frames of the
 * user's code; the REPL's own frames and long C chains are cut). */
static int msghandler(lua_State *L) {
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
    int status = luaL_loadbufferx(L, code, strlen(code), name, chunk_mode);
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
    int status = luaL_loadfilex(L, path, chunk_mode);
    if (status == LUA_OK) {
        int n = 0;
        for (int i = script_index + 1; i < argc; i++, n++) lua_pushstring(L, argv[i]);
        status = repl_docall(L, n, 0);
    }
    repl_report(L, status);
    return status;
}

/* ------------------------------------------------------------ ml.repl */
/* Pushes package.loaded.moelab.repl[name] (nil when absent): the library's
 * own table, whatever the user did to the global `ml`. */
int repl_library_field(lua_State *L, const char *name) {
    int top = lua_gettop(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "moelab") == LUA_TTABLE && lua_getfield(L, -1, "repl") == LUA_TTABLE)
        lua_getfield(L, -1, name);
    else
        lua_pushnil(L);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return lua_type(L, -1);
}

/* ml.repl.timing([on = true]) -> the previous setting */
static int l_timing(lua_State *L) {
    bool was = timing;
    if (lua_gettop(L) > 0) timing = lua_isnil(L, 1) ? true : lua_toboolean(L, 1);
    else timing = true;
    lua_pushboolean(L, was);
    return 1;
}

/* ml.repl._listdir(dir) -> {{name, is_dir}, ...} for file-name completion */
static int l_listdir(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    DIR *dp = opendir(dir[0] ? dir : ".");
    if (!dp) return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && n < 5000) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        bool is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            char *p = malloc(strlen(dir) + strlen(e->d_name) + 3);
            if (!p) break;
            sprintf(p, "%s/%s", dir[0] ? dir : ".", e->d_name);
            struct stat st;
            is_dir = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
            free(p);
        }
        lua_createtable(L, 2, 0);
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, 1);
        lua_pushboolean(L, is_dir);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, ++n);
    }
    closedir(dp);
    return 1;
}

void repl_open(lua_State *L) {
    track_coroutines(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "moelab") == LUA_TTABLE) {
        luaL_getsubtable(L, -1, "repl");
        lua_pushcfunction(L, l_timing);
        lua_setfield(L, -2, "timing");
        lua_pushcfunction(L, l_listdir);
        lua_setfield(L, -2, "_listdir");
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

/* ------------------------------------------------------------ the prompt */
static bool incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return false;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && !strcmp(msg + len - 5, "<eof>");
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

static char *format_alloc(const char *fmt, const char *a, const char *b) {
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, a, b);
    return s;
}

/* `?expr` -> ml.help(expr); `?expr:name` -> help on that method. */
static char *help_command(const char *text) {
    while (*text == ' ') text++;
    if (!*text) return strdup("ml.help()");
    const char *colon = strrchr(text, ':');
    if (colon && colon > text && colon[1] && strspn(colon + 1, "abcdefghijklmnopqrstuvwxyz"
                                                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") == strlen(colon + 1)) {
        char *obj = strndup(text, (size_t)(colon - text));
        char *s = obj ? format_alloc("ml.help((%s).%s)", obj, colon + 1) : NULL;
        free(obj);
        return s;
    }
    return format_alloc("ml.help(%s)%s", text, "");
}

/* `:time on|off` and friends. Returns true when the line was a command. */
static bool meta_command(const char *line) {
    if (line[0] != ':') return false;
    const char *arg = line + 1;
    if (!strncmp(arg, "time", 4) && (arg[4] == 0 || arg[4] == ' ')) {
        const char *v = arg + 4;
        while (*v == ' ') v++;
        if (!strcmp(v, "on") || !*v) timing = true;
        else if (!strcmp(v, "off")) timing = false;
        else {
            fprintf(stderr, ":time expects on or off, got '%s'\n", v);
            return true;
        }
        printf("timing %s\n", timing ? "on: each statement prints its elapsed time" : "off");
        return true;
    }
    fprintf(stderr, "unknown command '%s' (known: :time on, :time off)\n", line);
    return true;
}

/* Reads one complete chunk (possibly several lines) and compiles it. Leaves
 * the function on the stack and returns LUA_OK, or an error status with the
 * message on the stack, or -1 at end of input, -2 when Ctrl-C abandoned it,
 * -3 when the line was a prompt command. */
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
    if (line[0] == ':') {
        le_add_history(line);
        meta_command(line);
        free(line);
        return -3;
    } else if (line[0] == '?') {
        buf = help_command(line + 1);
        *silent = true;
    } else if (line[0] == '=') { /* Lua 5.1 habit */
        buf = format_alloc("return %s%s", line + 1, "");
    } else {
        buf = strdup(line);
    }
    free(line);
    if (!buf) {
        lua_pushliteral(L, "out of memory reading the line");
        return LUA_ERRMEM;
    }
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] == ';') *silent = true;
    for (;;) {
        /* expressions first: `return <buf>` */
        char *ret = format_alloc("return %s%s", buf, "");
        if (!ret) {
            free(buf);
            lua_pushliteral(L, "out of memory reading the line");
            return LUA_ERRMEM;
        }
        int status = luaL_loadbufferx(L, ret, strlen(ret), "=stdin", chunk_mode);
        free(ret);
        if (status == LUA_OK) {
            *text = buf;
            return LUA_OK;
        }
        lua_pop(L, 1);
        status = luaL_loadbufferx(L, buf, strlen(buf), "=stdin", chunk_mode);
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
        char *joined = format_alloc("%s\n%s", buf, more);
        free(buf);
        free(more);
        if (!joined) {
            lua_pushliteral(L, "out of memory reading the line");
            return LUA_ERRMEM;
        }
        buf = joined;
        size_t jl = strlen(trim_right(buf));
        *silent = jl > 0 && buf[jl - 1] == ';';
    }
}

/* Prints the n values on the stack top through ml.repl.show(source, ...),
 * under the same protection as a command (Ctrl-C works, errors report). */
static void print_results(lua_State *L, int n, const char *source) {
    int base = lua_gettop(L) - n + 1;
    if (repl_library_field(L, "show") != LUA_TFUNCTION) {
        lua_pop(L, 1);
        lua_getglobal(L, "print"); /* a library without the prompt's printer */
        lua_insert(L, base);
        repl_report(L, repl_docall(L, n, 0));
        return;
    }
    lua_insert(L, base);
    lua_pushstring(L, source);
    lua_insert(L, base + 1);
    int status = repl_docall(L, n + 1, 1);
    if (status == LUA_OK) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (s && len > 0) {
            fwrite(s, 1, len, stdout);
            fputc('\n', stdout);
        }
        lua_pop(L, 1);
    } else {
        fputs("error printing the result: ", stderr);
        repl_report(L, status);
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
        if (status == -2 || status == -3) continue;
        le_add_history(text);
        double t0 = now();
        if (status == LUA_OK) status = repl_docall(L, 0, LUA_MULTRET);
        double elapsed = now() - t0;
        if (status == LUA_OK && lua_gettop(L) > 0) {
            lua_pushvalue(L, 1);
            lua_setglobal(L, "_");
            if (!silent) print_results(L, lua_gettop(L), text);
        }
        free(text);
        repl_report(L, status);
        if (timing) printf("(%.3f s)\n", elapsed);
        fflush(stdout);
    }
    return 0;
}
