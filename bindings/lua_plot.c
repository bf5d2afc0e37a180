/* lua_plot.c -- plots as Lua values (userdata "moelab.Plot").
 *
 * lua/moelab/plot.lua turns the user's calls (ml.plot.lines{...},
 * ml.plot.hist(values, {...}), a results table, ...) into one normalised
 * spec table and calls ml.plot._make(spec) here, which builds the core
 * description. A plot prints itself: __tostring gives the text without
 * colour, __repr (what the prompt shows, see ml.repr) adds colour on a
 * terminal; p:render{...} draws it at any size (a live view redraws it),
 * p:png(path) writes the same plot as a picture. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "areas.h"
#include "lua_term.h"
#include "lua_util.h"

#define MLUA_PLOT "moelab.Plot"
#define PNG_WIDTH 80  /* default PNG size in cells: the same for everyone, */
#define PNG_HEIGHT 24 /* whatever their terminal */

typedef struct {
    ml_plot *p;
    int width, height; /* requested at creation; 0 = from the terminal */
    int ascii;         /* 1 ASCII, 0 Unicode, -1 from the locale */
} lplot;

static lplot *check_plot(lua_State *L, int idx) { return luaL_checkudata(L, idx, MLUA_PLOT); }

/* ------------------------------------------------------------ reading the spec */
/* Values of a Lua list of numbers or a tensor (1-d unless `flatten`) into a
 * buffer owned by Lua (a userdata left on the stack). */
static double *read_values(lua_State *L, int idx, const char *fn, const char *what, bool flatten, int64_t *n) {
    idx = lua_absindex(L, idx);
    ml_tensor *t = mlua_to_tensor(L, idx);
    if (t) {
        if (!flatten && t->ndim != 1)
            luaL_error(L, "%s: %s must be a 1-d tensor or a list of numbers, got shape %s", fn, what, ML_SHAPE_STR(t));
        *n = ml_numel(t);
        double *v = lua_newuserdatauv(L, sizeof *v * (size_t)(*n ? *n : 1), 0);
        ml_tensor *c = ml_contiguous(t);
        if (!c) mlua_error(L);
        for (int64_t i = 0; i < *n; i++) v[i] = c->dtype == ML_F32 ? (double)ml_f32(c)[i] : (double)ml_i64(c)[i];
        ml_release(c);
        return v;
    }
    if (!lua_istable(L, idx)) luaL_error(L, "%s: %s must be a list of numbers or a tensor, got %s", fn, what, luaL_typename(L, idx));
    *n = (int64_t)lua_rawlen(L, idx);
    double *v = lua_newuserdatauv(L, sizeof *v * (size_t)(*n ? *n : 1), 0);
    for (int64_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int ok;
        v[i] = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_error(L, "%s: %s item %d is a %s, not a number", fn, what, (int)i + 1, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return v;
}

/* Strings of a Lua list, pointers valid while the list lives; the array is
 * a userdata left on the stack. */
static const char **read_strings(lua_State *L, int idx, const char *fn, const char *what, int64_t *n) {
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) luaL_error(L, "%s: %s must be a list of strings, got %s", fn, what, luaL_typename(L, idx));
    *n = (int64_t)lua_rawlen(L, idx);
    const char **s = lua_newuserdatauv(L, sizeof *s * (size_t)(*n ? *n : 1), 0);
    for (int64_t i = 0; i < *n; i++) {
        if (lua_rawgeti(L, idx, i + 1) != LUA_TSTRING)
            luaL_error(L, "%s: %s item %d is a %s, not a string", fn, what, (int)i + 1, luaL_typename(L, -1));
        s[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return s;
}

static const char *field_string(lua_State *L, int spec, const char *key) {
    int ty = lua_getfield(L, spec, key);
    const char *s = ty == LUA_TNIL ? NULL : lua_tostring(L, -1);
    if (ty != LUA_TNIL && ty != LUA_TSTRING && ty != LUA_TNUMBER)
        luaL_error(L, "plot: option '%s' must be a string, got %s", key, luaL_typename(L, -1));
    lua_pop(L, 1); /* the spec keeps the string */
    return s;
}

static void set_limits(lua_State *L, lplot *lp, int spec, const char *key, ml_plot_axis axis, const char *fn) {
    if (lua_getfield(L, spec, key) != LUA_TNIL) {
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 2)
            luaL_error(L, "%s: %s must be {lo, hi}, got %s", fn, key, luaL_typename(L, -1));
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        int ok1, ok2;
        double lo = lua_tonumberx(L, -2, &ok1), hi = lua_tonumberx(L, -1, &ok2);
        if (!ok1 || !ok2) luaL_error(L, "%s: %s must be two numbers {lo, hi}", fn, key);
        if (ml_plot_set_limits(lp->p, axis, lo, hi)) mlua_error(L);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

static void add_series(lua_State *L, lplot *lp, int spec, const char *fn) {
    if (lua_getfield(L, spec, "series") != LUA_TTABLE) luaL_error(L, "%s: no series", fn);
    int list = lua_gettop(L);
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, list); i++) {
        int top = lua_gettop(L);
        lua_rawgeti(L, list, i);
        int s = lua_gettop(L);
        const char *name = field_string(L, s, "name");
        char what[96];
        snprintf(what, sizeof what, "series '%s'", name ? name : "");
        int64_t nx = 0, ny;
        double *x = NULL;
        if (lua_getfield(L, s, "x") != LUA_TNIL) x = read_values(L, -1, fn, "x", false, &nx);
        lua_getfield(L, s, "y");
        double *y = read_values(L, -1, fn, what, false, &ny);
        if (ml_plot_add_series(lp->p, name, x, nx, y, ny)) mlua_error(L);
        lua_settop(L, top);
    }
    lua_pop(L, 1);
}

static void add_bars(lua_State *L, lplot *lp, int spec) {
    lua_getfield(L, spec, "values");
    int64_t n, nl;
    double *v = read_values(L, -1, "bars", "values", false, &n);
    lua_getfield(L, spec, "labels");
    const char **labels = read_strings(L, -1, "bars", "labels", &nl);
    if (nl != n) luaL_error(L, "bars: %d labels for %d values", (int)nl, (int)n);
    if (n == 0) luaL_error(L, "bars: no bars");
    for (int64_t i = 0; i < n; i++)
        if (ml_plot_add_bar(lp->p, labels[i], v[i])) mlua_error(L);
    lua_pop(L, 4);
}

static void set_matrix(lua_State *L, lplot *lp, int spec) {
    lua_getfield(L, spec, "matrix");
    bool owned;
    ml_tensor *m = mlua_check_tensorish(L, lua_gettop(L), &owned);
    if (owned) mlua_push_tensor(L, m); /* Lua frees it whatever happens */
    if (m->ndim != 2) luaL_error(L, "heatmap: the matrix must be 2-d, got shape %s", ML_SHAPE_STR(m));
    int64_t n;
    double *v = read_values(L, -1, "heatmap", "matrix", true, &n);
    if (ml_plot_set_matrix(lp->p, m->shape[0], m->shape[1], v)) mlua_error(L);
    static const char *const keys[2] = {"cols", "rows"};
    for (int axis = ML_AXIS_X; axis <= ML_AXIS_Y; axis++) {
        if (lua_getfield(L, spec, keys[axis]) != LUA_TNIL) {
            int64_t nl;
            const char **labels = read_strings(L, -1, "heatmap", keys[axis], &nl);
            if (ml_plot_set_tick_labels(lp->p, (ml_plot_axis)axis, nl, labels)) mlua_error(L);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

static void add_children(lua_State *L, lplot *lp, int spec) {
    if (lua_getfield(L, spec, "plots") != LUA_TTABLE) luaL_error(L, "grid: no plots");
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        lplot *child = luaL_testudata(L, -1, MLUA_PLOT);
        if (!child) luaL_error(L, "grid: item %d is a %s, not a plot", (int)i, luaL_typename(L, -1));
        if (ml_plot_add_child(lp->p, child->p)) mlua_error(L);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_Integer cols = mlua_opt_integer(L, spec, "cols", 0);
    if (cols != 0 && (cols < 1 || cols > 1024)) luaL_error(L, "grid: cols must be between 1 and 1024, got %I", cols);
    if (cols && ml_plot_set_columns(lp->p, (int)cols)) mlua_error(L);
}

static int check_size(lua_State *L, int spec, const char *key, const char *fn) {
    lua_Integer v = mlua_opt_integer(L, spec, key, 0);
    if (lua_getfield(L, spec, key) != LUA_TNIL && (v < 1 || v > ML_PLOT_MAX_CELLS))
        luaL_error(L, "%s: %s must be between 1 and %d cells, got %I", fn, key, ML_PLOT_MAX_CELLS, v);
    lua_pop(L, 1);
    return (int)v;
}

/* ml.plot._make(spec) -> plot (the public constructors are in plot.lua) */
static int l_make(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const kinds[] = {"lines", "scatter", "hist", "bars", "heatmap", "spark", "grid", NULL};
    lua_getfield(L, 1, "kind");
    int kind = luaL_checkoption(L, -1, NULL, kinds);
    lua_pop(L, 1);
    const char *fn = kinds[kind];
    lplot *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    lp->p = NULL;
    luaL_setmetatable(L, MLUA_PLOT);
    if (!(lp->p = ml_plot_new((ml_plot_kind)kind))) return mlua_error(L);
    lp->width = check_size(L, 1, "width", fn);
    lp->height = check_size(L, 1, "height", fn);
    lp->ascii = lua_getfield(L, 1, "ascii") == LUA_TNIL ? -1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    static const char *const texts[3] = {"title", "xlabel", "ylabel"};
    for (int i = 0; i < 3; i++)
        if (ml_plot_set_label(lp->p, (ml_plot_text)i, field_string(L, 1, texts[i]))) return mlua_error(L);
    if ((mlua_opt_bool(L, 1, "xlog", false) && ml_plot_set_log(lp->p, ML_AXIS_X, true)) ||
        (mlua_opt_bool(L, 1, "ylog", false) && ml_plot_set_log(lp->p, ML_AXIS_Y, true)))
        return mlua_error(L);
    set_limits(L, lp, 1, "xlim", ML_AXIS_X, fn);
    set_limits(L, lp, 1, "ylim", ML_AXIS_Y, fn);
    set_limits(L, lp, 1, "zlim", ML_AXIS_Z, fn);
    switch ((ml_plot_kind)kind) {
    case ML_PLOT_LINES:
    case ML_PLOT_SCATTER:
    case ML_PLOT_SPARK:
        add_series(L, lp, 1, fn);
        break;
    case ML_PLOT_HIST: {
        lua_getfield(L, 1, "values");
        int64_t n;
        double *v = read_values(L, -1, "hist", "values", true, &n);
        lua_Integer bins = mlua_opt_integer(L, 1, "bins", 10);
        if (bins < 1 || bins > 100000) luaL_error(L, "hist: bins must be between 1 and 100000, got %I", bins);
        if (ml_plot_set_hist(lp->p, v, n, (int)bins, mlua_opt_bool(L, 1, "density", false))) return mlua_error(L);
        lua_pop(L, 2);
        break;
    }
    case ML_PLOT_BARS:
        add_bars(L, lp, 1);
        break;
    case ML_PLOT_HEATMAP:
        set_matrix(L, lp, 1);
        break;
    case ML_PLOT_GRID:
        add_children(L, lp, 1);
        break;
    }
    lua_settop(L, 2);
    if (ml_plot_check(lp->p)) return mlua_error(L);
    return 1;
}

/* ------------------------------------------------------------ drawing */
typedef struct {
    int width, height;
    bool ascii, color;
} draw_options;

/* Size, glyphs and colour for drawing plot 1 with the options table at idx
 * (0: none): the options, else the plot's own, else the terminal's. */
static draw_options resolve(lua_State *L, lplot *lp, int idx, bool png) {
    static const char *const known_render[] = {"width", "height", "ascii", "color", NULL};
    static const char *const known_png[] = {"width", "height", "scale", NULL};
    draw_options d;
    if (idx) mlua_check_options(L, idx, png ? "png" : "render", png ? known_png : known_render);
    int cols, lines;
    mlua_term_size(&cols, &lines);
    if (png) cols = PNG_WIDTH, lines = PNG_HEIGHT + 4;
    const char *fn = ml_plot_kind_name(ml_plot_get_kind(lp->p));
    d.width = idx ? check_size(L, idx, "width", fn) : 0;
    d.height = idx ? check_size(L, idx, "height", fn) : 0;
    if (!d.width) d.width = lp->width ? lp->width : cols < 120 ? cols : 120;
    if (!d.height) d.height = lp->height;
    if (!d.height) d.height = ml_plot_natural_height(lp->p, d.width);
    if (!d.height) d.height = lines - 4 < 8 ? 8 : lines - 4 > 30 ? 30 : lines - 4;
    d.ascii = idx && lua_getfield(L, idx, "ascii") != LUA_TNIL ? lua_toboolean(L, -1)
              : lp->ascii >= 0                                   ? lp->ascii
                                                                 : !mlua_term_utf8();
    if (idx) lua_pop(L, 1);
    if (png) d.ascii = false; /* pictures draw lines, blocks and dots, not characters */
    d.color = idx ? mlua_opt_bool(L, idx, "color", false) : false;
    return d;
}

static int push_rendered(lua_State *L, lplot *lp, draw_options d) {
    ml_cells *c = ml_plot_render(lp->p, d.width, d.height, d.ascii);
    if (!c) return mlua_error(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    mlua_add_cells(&b, c, d.color);
    ml_cells_free(c);
    luaL_pushresult(&b);
    return 1;
}

/* p:render([{width, height, ascii, color = false}]) -> string */
static int p_render(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    return push_rendered(L, lp, resolve(L, lp, lua_istable(L, 2) ? 2 : 0, false));
}

/* tostring(p): the text at the default size, no colour */
static int p_tostring(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    return push_rendered(L, lp, resolve(L, lp, 0, false));
}

/* what the prompt prints: coloured on a terminal unless NO_COLOR */
static int p_repr(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    draw_options d = resolve(L, lp, 0, false);
    d.color = mlua_term_color();
    return push_rendered(L, lp, d);
}

/* p:show([opts]): prints it (coloured on a terminal) */
static int p_show(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    int idx = lua_istable(L, 2) ? 2 : 0;
    draw_options d = resolve(L, lp, idx, false);
    if (!idx || lua_getfield(L, idx, "color") == LUA_TNIL) d.color = mlua_term_color();
    push_rendered(L, lp, d);
    fwrite(lua_tostring(L, -1), 1, lua_rawlen(L, -1), stdout);
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

/* p:png(path, [{scale = 2, width, height}]) */
static int p_png(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int idx = lua_istable(L, 3) ? 3 : 0;
    if (!idx && !lua_isnoneornil(L, 3)) luaL_argerror(L, 3, "options table expected");
    draw_options d = resolve(L, lp, idx, true);
    lua_Integer scale = idx ? mlua_opt_integer(L, idx, "scale", 2) : 2;
    if (scale < 1 || scale > 16) luaL_error(L, "png: scale must be between 1 and 16, got %I", scale);
    if (ml_plot_write_png(lp->p, path, d.width, d.height, (int)scale)) return mlua_error(L);
    return 0;
}

static int p_kind(lua_State *L) {
    lua_pushstring(L, ml_plot_kind_name(ml_plot_get_kind(check_plot(L, 1)->p)));
    return 1;
}

/* ml.plot._color(i) -> the ANSI code of series colour i (1-based, cycling), as
 * plots colour their series: for views that colour their own text (ml.inspect). */
static int l_color(lua_State *L) {
    int k = (int)((luaL_checkinteger(L, 1) - 1) % ML_PLOT_SERIES_COLORS);
    if (k < 0) k += ML_PLOT_SERIES_COLORS;
    char code[32];
    mlua_term_sgr((uint8_t)(ML_COLOR_SERIES + k), code, sizeof code);
    lua_pushstring(L, code);
    return 1;
}

/* ml.plot._term() -> columns, lines, colour (as plots size and colour
 * themselves at the prompt): for views that draw their own text. */
static int l_term(lua_State *L) {
    int cols, lines;
    mlua_term_size(&cols, &lines);
    lua_pushinteger(L, cols);
    lua_pushinteger(L, lines);
    lua_pushboolean(L, mlua_term_color());
    return 3;
}

static int p_gc(lua_State *L) {
    lplot *lp = check_plot(L, 1);
    ml_plot_release(lp->p);
    lp->p = NULL;
    return 0;
}

void mlua_open_plot(lua_State *L) {
    static const luaL_Reg methods[] = {{"render", p_render}, {"show", p_show}, {"png", p_png}, {"kind", p_kind}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", p_gc}, {"__tostring", p_tostring}, {"__repr", p_repr}, {NULL, NULL}};
    mlua_subtable(L, "plot"); /* ml, ml.plot */
    lua_pushcfunction(L, l_make);
    lua_setfield(L, -2, "_make");
    lua_pushcfunction(L, l_color);
    lua_setfield(L, -2, "_color");
    lua_pushcfunction(L, l_term);
    lua_setfield(L, -2, "_term");
    luaL_newmetatable(L, MLUA_PLOT); /* ml, ml.plot, mt */
    lua_pushstring(L, "Plot");       /* as the prompt and help name it (ml.repr, ml.help) */
    lua_setfield(L, -2, "__name");
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_setfield(L, -3, "_methods"); /* ml.plot._methods: for plot.lua's help texts */
    lua_pop(L, 2);
}
