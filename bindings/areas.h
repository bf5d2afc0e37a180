/* areas.h -- the binding areas: one file bindings/lua_<area>.c each, whose
 * mlua_open_<area>(L) is called by luaopen_moelab (module.c) with the `ml`
 * table on top of the stack. A new area adds its line here and in the list
 * in module.c. */
#ifndef MLUA_AREAS_H
#define MLUA_AREAS_H

#include <lua.h>

void mlua_open_tensor(lua_State *L);
void mlua_open_math(lua_State *L);
void mlua_open_autograd(lua_State *L);
void mlua_open_system(lua_State *L);
void mlua_open_nn_ops(lua_State *L);
void mlua_open_conv(lua_State *L);
void mlua_open_index(lua_State *L);
void mlua_open_data(lua_State *L);
void mlua_open_io(lua_State *L);
void mlua_open_nn(lua_State *L);
void mlua_open_nn_layers(lua_State *L);
void mlua_open_nn_zoo(lua_State *L);
void mlua_open_train(lua_State *L);
void mlua_open_theory(lua_State *L);
void mlua_open_moe(lua_State *L);
void mlua_open_kind(lua_State *L);
void mlua_open_trace(lua_State *L);
void mlua_open_plot(lua_State *L);
void mlua_open_image(lua_State *L);
void mlua_open_metrics(lua_State *L);
void mlua_open_attack(lua_State *L);

#endif
