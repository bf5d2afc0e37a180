/* moelab_lua.h -- the seam between the Lua bindings and their hosts (the
 * moelab prompt, or a stock lua5.4 through `require "moelab"`). */
#ifndef MOELAB_LUA_H
#define MOELAB_LUA_H

#include <lua.h>

/* Builds the `ml` table (every binding area, then the embedded Lua library)
 * and leaves it on the stack. */
int luaopen_moelab(lua_State *L);

#endif
