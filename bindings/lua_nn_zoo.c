/* lua_nn_zoo.c -- the model zoo in ml.nn: ml.nn.resnet18{...} ... ml.nn.vmoe{...}
 * and the AdvMoE family, ml.nn.moe_cnn{backbone = ...} ... The options,
 * their checks and the backbones are the core's (core/nn/zoo.c). */
#include <stdio.h>

#include "areas.h"
#include "lua_nn.h"
#include "lua_util.h"

/* The options table at 1 (or none) as a JSON config. */
static cJSON *zoo_config(lua_State *L, const char *fn) {
    if (lua_isnoneornil(L, 1)) return cJSON_CreateObject();
    luaL_checktype(L, 1, LUA_TTABLE);
    char name[64];
    snprintf(name, sizeof name, "ml.nn.%s", fn);
    return mlua_check_json(L, 1, name);
}

static int zoo(lua_State *L, const char *name) { return mlua_push_module(L, ml_zoo_build(name, zoo_config(L, name))); }
static int l_zoo_mlp(lua_State *L) { return zoo(L, "mlp"); }
static int l_zoo_cnn(lua_State *L) { return zoo(L, "cnn"); }
static int l_zoo_resnet18(lua_State *L) { return zoo(L, "resnet18"); }
static int l_zoo_vgg16(lua_State *L) { return zoo(L, "vgg16"); }
static int l_zoo_wrn(lua_State *L) { return zoo(L, "wrn"); }
static int l_zoo_vit(lua_State *L) { return zoo(L, "vit"); }
static int l_zoo_vmoe(lua_State *L) { return zoo(L, "vmoe"); }

/* ml.nn.moe_cnn{backbone = "resnet18", experts = 2, ratio = 0.5, router = "layer", ...} and the
 * other members of the AdvMoE family: dense, s_dense, sparse_cnn. */
static int family(lua_State *L, const char *fam) {
    return mlua_push_module(L, ml_zoo_build_family(fam, zoo_config(L, fam)));
}
static int l_fam_dense(lua_State *L) { return family(L, "dense"); }
static int l_fam_s_dense(lua_State *L) { return family(L, "s_dense"); }
static int l_fam_sparse(lua_State *L) { return family(L, "sparse_cnn"); }
static int l_fam_moe(lua_State *L) { return family(L, "moe_cnn"); }

static const luaL_Reg functions[] = {
    {"mlp", l_zoo_mlp},     {"cnn", l_zoo_cnn},       {"resnet18", l_zoo_resnet18}, {"vgg16", l_zoo_vgg16},
    {"wrn", l_zoo_wrn},     {"vit", l_zoo_vit},       {"vmoe", l_zoo_vmoe},         {"dense", l_fam_dense},
    {"s_dense", l_fam_s_dense}, {"sparse_cnn", l_fam_sparse}, {"moe_cnn", l_fam_moe}, {NULL, NULL}};

void mlua_open_nn_zoo(lua_State *L) {
    mlua_subtable(L, "nn");
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
