/* lua_nn.h -- modules as Lua userdata, for binding files that take or return
 * models (nn, train, attacks, analysis). */
#ifndef MLUA_NN_H
#define MLUA_NN_H

#include <lauxlib.h>
#include <lua.h>

#include "moelab.h"

#define MLUA_MODULE "moelab.Module"

ml_module *mlua_to_module(lua_State *L, int idx);
ml_module *mlua_check_module(lua_State *L, int idx);
/* Pushes m, taking over its reference; NULL raises the core's error. */
int mlua_push_module(lua_State *L, ml_module *m);
/* The optimizer (ml.optim.*) at idx, or a Lua error (defined in lua_train.c). */
ml_optim *mlua_check_optim(lua_State *L, int idx);
/* Adds methods to every module (m:fit(...), m:summary(...) from other areas). */
void mlua_module_methods(lua_State *L, const luaL_Reg *methods);
/* Pushes the routing traces of a forward context ({layer = {...}}, as m:forward returns them). */

#endif
