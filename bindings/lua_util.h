/* lua_util.h -- glue shared by every binding file: tensors as userdata,
 * 1-based <-> 0-based conversion (the one place it happens), option tables,
 * errors, and telling Lua's collector about tensor memory.
 *
 * Each binding file defines `void mlua_open_<area>(lua_State *L)`, called by
 * module.c with the module table `ml` on top of the stack, and registers its
 * functions with mlua_register(). No algorithms live in bindings/. */
#ifndef MLUA_UTIL_H
#define MLUA_UTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

#include "moelab.h"

#define MLUA_TENSOR "moelab.Tensor"

/* ------------------------------------------------------------ tensors */
/* The tensor at idx, or a Lua error "bad argument #idx to 'fn' (tensor expected, got X)". */
ml_tensor *mlua_check_tensor(lua_State *L, int idx);
ml_tensor *mlua_to_tensor(lua_State *L, int idx); /* NULL when not a tensor */
/* A tensor, or a number/nested table converted to a new float tensor (*owned
 * is set when the caller must release it). */
ml_tensor *mlua_check_tensorish(lua_State *L, int idx, bool *owned);
/* A nested Lua table of numbers at idx as a new tensor of dtype dt (raises on a ragged or non-numeric table). */
ml_tensor *mlua_table_to_tensor(lua_State *L, int idx, ml_dtype dt);
/* Pushes t as a Lua value, taking over its reference. NULL raises the core's
 * error message as a Lua error (so `return mlua_push_result(L, ml_relu(x))`). */
int mlua_push_tensor(lua_State *L, ml_tensor *t);
/* Raises the core's current error message as a Lua error. */
int mlua_error(lua_State *L);

/* ------------------------------------------------------------ 1-based conversions */
/* Lua dimension (1..n, or -1..-n from the end) to core (0-based, negatives
 * kept). 0 is refused with a clear message. */
int mlua_check_dim(lua_State *L, int idx, const char *fn);
int mlua_opt_dim(lua_State *L, int idx, const char *fn, int def);
/* Index tensors: a Lua int64 tensor of 1-based indices -> a new core tensor
 * of 0-based indices, and back. Accepts a Lua table of integers too. */
ml_tensor *mlua_index_to_core(lua_State *L, int idx, const char *fn);
ml_tensor *mlua_index_from_core(ml_tensor *t); /* new ref, +1 (in a copy) */
/* Shape from varargs (2, 3) or a table ({2, 3}) starting at idx; returns ndim. */
int mlua_check_shape(lua_State *L, int idx, int64_t *shape, const char *fn);

/* ------------------------------------------------------------ option tables */
lua_Number mlua_opt_number(lua_State *L, int idx, const char *key, lua_Number def);
lua_Integer mlua_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def);
bool mlua_opt_bool(lua_State *L, int idx, const char *key, bool def);
const char *mlua_opt_string(lua_State *L, int idx, const char *key, const char *def);
/* Fails when the table at idx has a key not in `allowed` (NULL-terminated),
 * naming the function and the known options: catches typos like {strde = 2}. */
void mlua_check_options(lua_State *L, int idx, const char *fn, const char *const *allowed);

/* ------------------------------------------------------------ Lua values <-> JSON
 * The one converter for model configs, checkpoint metadata and ml.json.
 * mlua_to_json never raises: on failure it frees what it built and returns
 * NULL with the reason in err ("fn: ..."), so the caller can release its own
 * resources before raising. Tables with entries 1..n become arrays, others
 * objects (number keys become strings); a table mixing both, a cycle, nesting
 * deeper than 64, or a value JSON cannot hold (function, userdata other than
 * a one-element tensor) is refused. */
#include <cjson/cJSON.h>
cJSON *mlua_to_json(lua_State *L, int idx, const char *fn, char *err, size_t errn);
/* Same, raising the error (for callers that hold nothing to release). */
cJSON *mlua_check_json(lua_State *L, int idx, const char *fn);
/* JSON -> Lua value on the stack (null -> nil, integral numbers -> integers). */
void mlua_push_json(lua_State *L, const cJSON *j);

/* ------------------------------------------------------------ registration */
/* Registers funcs into the module table (on top of the stack) and, when
 * as_methods, into the tensor method table too (so ml.relu(t) == t:relu()). */
void mlua_register(lua_State *L, const luaL_Reg *funcs, bool as_methods);
/* Pushes ml.<name> (creating an empty table if missing). The module table must
 * be on top of the stack. */
void mlua_subtable(lua_State *L, const char *name);

/* ------------------------------------------------------------ memory */
/* Runs a full collection when live tensor bytes pass a threshold that adapts
 * to what survives, so Lua loops over tensors stay bounded. */
void mlua_memory_pressure(lua_State *L);

#endif
