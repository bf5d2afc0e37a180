/* lua_kind.h -- the kinds of objects the bindings hand to Lua (Module,
 * Trace, Dataset, Optimizer, ...) and the public seam through which the Lua
 * library adds to them.
 *
 * Each kind is a metatable in the registry under its type name
 * ("moelab.Module"), with __name set to the kind ("Module") and its methods in
 * the table __methods (or, for kinds whose __index is a plain table, in that
 * table). The Lua library never reaches into the registry: it calls
 * ml.extend("Module", {summary = fn, __tostring = fn}), which adds methods and
 * sets metamethods (a printer, for instance). */
#ifndef MLUA_KIND_H
#define MLUA_KIND_H

#include <lauxlib.h>
#include <lua.h>

/* Creates the metatable tname for the kind `kind` with methods (into
 * __methods) and metamethods (meta, which should include __index). Leaves
 * nothing on the stack. */
void mlua_new_kind(lua_State *L, const char *tname, const char *kind, const luaL_Reg *methods, const luaL_Reg *meta);
/* Pushes the method table of the kind tname. */
void mlua_kind_methods(lua_State *L, const char *tname);
/* Adds methods to an existing kind (from another binding area). */
void mlua_kind_add_methods(lua_State *L, const char *tname, const luaL_Reg *methods);

#endif
