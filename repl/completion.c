/* completion.c -- Tab completion for the line editor. What to propose is
 * decided in Lua (ml.repl.complete in lua/moelab/complete.lua, which the tests
 * call directly); this file runs it under a protected call and turns its
 * answer (full expressions that start at a position of the line) into
 * replacements of the word the line editor cut out. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"

typedef struct {
    const char *line;
    int end;
} request;

/* Calls ml.repl.complete(line before the cursor) -> candidates, start. */
static int call_complete(lua_State *L) {
    const request *r = lua_touserdata(L, 1);
    if (repl_library_field(L, "complete") != LUA_TFUNCTION) return 0;
    lua_pushlstring(L, r->line, (size_t)r->end);
    lua_call(L, 1, 2);
    return 2;
}

char **repl_complete(const char *line, int start, int end, void *ud) {
    lua_State *L = ud;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8) || end < start || start < 0) return NULL;
    request r = {line, end};
    lua_pushcfunction(L, call_complete);
    lua_pushlightuserdata(L, &r);
    char **out = NULL;
    if (lua_pcall(L, 1, 2, 0) == LUA_OK && lua_istable(L, -2) && lua_isinteger(L, -1)) {
        /* the candidates replace line[s, end); the editor replaces line[start, end) */
        lua_Integer s = lua_tointeger(L, -1) - 1;
        lua_Integer n = (lua_Integer)lua_rawlen(L, -2);
        if (s >= 0 && s <= end && n > 0 && n < 100000) out = calloc((size_t)n + 1, sizeof *out);
        int k = 0;
        for (lua_Integer i = 1; out && i <= n; i++) {
            lua_rawgeti(L, -2, i);
            size_t len;
            const char *c = lua_tolstring(L, -1, &len);
            char *w = NULL;
            if (c && s >= start) { /* prepend what lies between the word's start and s */
                size_t pre = (size_t)(s - start);
                w = malloc(pre + len + 1);
                if (w) {
                    memcpy(w, line + start, pre);
                    memcpy(w + pre, c, len + 1);
                }
            } else if (c && (size_t)(start - s) <= len && !strncmp(c, line + s, (size_t)(start - s))) {
                w = strdup(c + (start - s)); /* the word starts inside the candidate */
            }
            if (w) out[k++] = w;
            lua_pop(L, 1);
        }
        if (out && k == 0) {
            free(out);
            out = NULL;
        }
    }
    lua_settop(L, top);
    return out;
}
