/* completion.c -- Tab completion of Lua names: globals, fields of tables
 * (ml.nn.Li -> ml.nn.Linear) and methods of objects through their metatables
 * (x:sh -> x:shape). */
#include <ctype.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"

typedef struct {
    char **items;
    int n, cap;
} list;

static void add(list *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return;
    if (l->n + 2 > l->cap) {
        l->cap = l->cap ? l->cap * 2 : 32;
        l->items = realloc(l->items, sizeof *l->items * (size_t)l->cap);
    }
    l->items[l->n++] = strdup(s);
    l->items[l->n] = NULL;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Adds the string keys of the table at idx that start with partial. */
static void keys_of(lua_State *L, int idx, const char *prefix, char sep, const char *partial, bool functions_only, list *out) {
    idx = lua_absindex(L, idx);
    size_t plen = strlen(partial);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            bool ident = isalpha((unsigned char)k[0]) || k[0] == '_';
            if (ident && k[0] != '_' && !strncmp(k, partial, plen) && (!functions_only || lua_isfunction(L, -1))) {
                char buf[512];
                if (prefix[0]) snprintf(buf, sizeof buf, "%s%c%s", prefix, sep, k);
                else snprintf(buf, sizeof buf, "%s", k);
                add(out, buf);
            }
        }
        lua_pop(L, 1);
    }
}

/* Adds the fields reachable from the value on the stack top (its table, its
 * metatable's __index table, or the __methods table of moelab objects). */
static void fields_of(lua_State *L, const char *prefix, char sep, const char *partial, list *out) {
    int v = lua_gettop(L);
    if (lua_istable(L, v)) keys_of(L, v, prefix, sep, partial, sep == ':', out);
    if (lua_getmetatable(L, v)) {
        int mt = lua_gettop(L);
        if (lua_getfield(L, mt, "__methods") == LUA_TTABLE) keys_of(L, -1, prefix, sep, partial, false, out);
        lua_pop(L, 1);
        if (lua_getfield(L, mt, "__index") == LUA_TTABLE) keys_of(L, -1, prefix, sep, partial, sep == ':', out);
        lua_pop(L, 1);
    }
    lua_settop(L, v);
}

char **repl_complete(const char *word, void *ud) {
    lua_State *L = ud;
    int top = lua_gettop(L);
    list out = {0};
    /* split at the last '.' or ':' */
    const char *cut = NULL;
    for (const char *p = word; *p; p++)
        if (*p == '.' || *p == ':') cut = p;
    if (!cut) {
        lua_pushglobaltable(L);
        keys_of(L, -1, "", 0, word, false, &out);
        static const char *const keywords[] = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function",
                                               "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
                                               "true", "until", "while", NULL};
        for (int i = 0; keywords[i]; i++)
            if (!strncmp(keywords[i], word, strlen(word))) add(&out, keywords[i]);
    } else {
        char prefix[512];
        size_t plen = (size_t)(cut - word);
        if (plen >= sizeof prefix) plen = sizeof prefix - 1;
        memcpy(prefix, word, plen);
        prefix[plen] = 0;
        /* walk the dotted prefix from the globals, reading fields without metamethods that run code */
        lua_pushglobaltable(L);
        char path[512];
        snprintf(path, sizeof path, "%s", prefix);
        bool ok = true;
        for (char *tok = strtok(path, ".:"); tok && ok; tok = strtok(NULL, ".:")) {
            if (lua_istable(L, -1)) {
                lua_pushstring(L, tok);
                lua_rawget(L, -2);
            } else {
                ok = false;
                break;
            }
            lua_remove(L, -2);
            ok = !lua_isnil(L, -1);
        }
        if (ok) fields_of(L, prefix, *cut, cut + 1, &out);
    }
    lua_settop(L, top);
    if (out.n) qsort(out.items, (size_t)out.n, sizeof *out.items, cmp);
    return out.items;
}
