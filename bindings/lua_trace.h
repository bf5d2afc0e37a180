/* lua_trace.h -- routing traces as Lua values, and forced routing from Lua
 * options, for binding files that run models (nn, attacks, analysis). */
#ifndef MLUA_TRACE_H
#define MLUA_TRACE_H

#include <lauxlib.h>
#include <lua.h>

#include "moelab.h"

#define MLUA_TRACE "moelab.Trace"

/* Pushes t as a Lua trace, taking it over; NULL raises the core's error. */
int mlua_push_trace(lua_State *L, ml_trace *t);
ml_trace *mlua_to_trace(lua_State *L, int idx); /* borrowed; NULL when not a trace */
ml_trace *mlua_check_trace(lua_State *L, int idx);
/* The position (0-based) of the layer named or numbered (1-based) at idx, or
 * an error "fn: no layer 'x' in this trace (its layers: ...)". */
int mlua_check_trace_layer(lua_State *L, const ml_trace *t, int idx, const char *fn);
/* Reads the routing options of the table at idx into ctx:
 *   routing = trace                 every sparse MoE layer uses the trace's selection
 *   force = {[layer] = e}           every item's first choice in that layer is expert e (1-based)
 *   silence = {[layer] = e | {e1, ...}}   the routing of that layer avoids these experts
 * ctx then borrows what it needs from values this function leaves on the
 * stack (it returns how many): keep them there until the forward returns. */
int mlua_routing_options(lua_State *L, int idx, ml_ctx *ctx, const char *fn);

#endif
