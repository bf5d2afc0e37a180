/* lua_system.c -- memory statistics, threads, timers, version. */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "areas.h"
#include "build_info.h"
#include "lua_util.h"
#include "memory.h"

/* ml.memory() -> {tensors, storages, bytes, cached_bytes, peak_bytes, fresh_allocs} */
static int l_memory(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT);
    ml_memory_stats st;
    ml_memory_get(&st);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, st.live_tensors);
    lua_setfield(L, -2, "tensors");
    lua_pushinteger(L, st.live_storages);
    lua_setfield(L, -2, "storages");
    lua_pushinteger(L, st.live_bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, st.cached_bytes);
    lua_setfield(L, -2, "cached_bytes");
    lua_pushinteger(L, st.peak_bytes);
    lua_setfield(L, -2, "peak_bytes");
    lua_pushinteger(L, st.fresh_allocs);
    lua_setfield(L, -2, "fresh_allocs");
    return 1;
}

static int l_memory_trim(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT);
    ml_memory_trim();
    return 0;
}

static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        if (n < 1 || n > 1024) luaL_error(L, "threads: %d is not a sensible thread count", (int)n);
        ml_set_num_threads((int)n);
    }
    lua_pushinteger(L, ml_num_threads());
    return 1;
}

/* ml.clock() -> seconds (monotonic, for timing) */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    return 1;
}

/* ml.isatty([fd = 1]) -> true when fd is a terminal (progress bars redraw in place) */
static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* ml.interrupted() -> true if Ctrl-C was pressed (and clears nothing) */
static int l_interrupted(lua_State *L) {
    lua_pushboolean(L, ml_interrupt_pending());
    return 1;
}

/* ml.interrupt(): acts as Ctrl-C. It sets the core's flag, which the kernels
 * and ml.interruptible see, and, under a host that handles SIGINT (the moelab
 * prompt arms its Lua hook there), raises the signal; without a handler (a
 * stock lua5.4 outside a call) SIGINT would end the process. */
static int l_interrupt(lua_State *L) {
    (void)L;
    ml_interrupt_request();
    struct sigaction old;
    if (sigaction(SIGINT, NULL, &old) == 0 &&
        ((old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)))
        raise(SIGINT);
    return 0;
}

/* ml.interruptible(fn, ...) -> interrupted, fn's results. Runs fn; Ctrl-C (or
 * ml.interrupt) stops it and is consumed here: the flag is cleared before any
 * Lua code runs again, so the caller carries on (a training loop returns its
 * history). When fn returns normally with the flag set (a C loop that stopped
 * early and returned its partial result), the results come back after true.
 * Other errors pass through. */
static int l_interruptible(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L);
    if (lua_pcall(L, n - 1, LUA_MULTRET, 0) != LUA_OK) {
        if (!ml_interrupt_pending()) return lua_error(L);
        ml_interrupt_clear();
        lua_pushboolean(L, 1);
        return 1;
    }
    /* fn may have seen the flag and returned what it had (a C attack does):
     * its results stand, and the interrupt is consumed all the same */
    int pending = ml_interrupt_pending();
    if (pending) ml_interrupt_clear();
    lua_pushboolean(L, pending);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* ml.build_info() -> {version, compiler, blas, blas_openmp, openmp, threads, cpus, cpu,
 * features, conv_avx512, sanitized}: what a results table needs beside it */
static int l_build_info(lua_State *L) {
    ml_build_config b;
    ml_build_info(&b);
    lua_createtable(L, 0, 11);
    lua_pushstring(L, b.version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, b.compiler);
    lua_setfield(L, -2, "compiler");
    lua_pushstring(L, b.blas);
    lua_setfield(L, -2, "blas");
    lua_pushboolean(L, b.blas_openmp);
    lua_setfield(L, -2, "blas_openmp");
    lua_pushinteger(L, b.openmp);
    lua_setfield(L, -2, "openmp");
    lua_pushinteger(L, b.threads);
    lua_setfield(L, -2, "threads");
    lua_pushinteger(L, b.cpus);
    lua_setfield(L, -2, "cpus");
    lua_pushstring(L, b.cpu);
    lua_setfield(L, -2, "cpu");
    lua_pushstring(L, b.features);
    lua_setfield(L, -2, "features");
    lua_pushboolean(L, b.conv_avx512);
    lua_setfield(L, -2, "conv_avx512");
    lua_pushboolean(L, b.sanitized);
    lua_setfield(L, -2, "sanitized");
    return 1;
}

static const luaL_Reg functions[] = {{"isatty", l_isatty},   {"interrupted", l_interrupted},
                                     {"memory", l_memory},   {"memory_trim", l_memory_trim},
                                     {"threads", l_threads}, {"clock", l_clock},
                                     {"build_info", l_build_info}, {"interrupt", l_interrupt},
                                     {"interruptible", l_interruptible}, {NULL, NULL}};

void mlua_open_system(lua_State *L) {
    mlua_register(L, functions, false);
    lua_pushstring(L, ML_VERSION);
    lua_setfield(L, -2, "version");
}
