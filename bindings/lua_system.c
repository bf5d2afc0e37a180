/* lua_system.c -- memory statistics, threads, timers, version. */
#include <time.h>
#include <unistd.h>

#include "lua_util.h"
#include "memory.h"
#include "areas.h"

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

static const luaL_Reg functions[] = {{"isatty", l_isatty}, {"interrupted", l_interrupted},{"memory", l_memory}, {"memory_trim", l_memory_trim},
                                     {"threads", l_threads}, {"clock", l_clock}, {NULL, NULL}};

void mlua_open_system(lua_State *L) {
    mlua_register(L, functions, false);
    lua_pushstring(L, "0.1.0");
    lua_setfield(L, -2, "version");
}
