/* lua_image.c -- ml.image: pictures to and from PNG files, drawn in the
 * terminal, and the comparison grid of clean and adversarial examples (its
 * captions are made in lua/moelab/image.lua). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "areas.h"
#include "lua_term.h"
#include "lua_util.h"
#include "plot/image.h"

/* ml.image.save(t, path, [{clamp = false}]) */
static int l_save(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    const char *path = luaL_checkstring(L, 2);
    static const char *const known[] = {"clamp", NULL};
    mlua_check_options(L, 3, "image.save", known);
    if (ml_image_save(t, path, mlua_opt_bool(L, 3, "clamp", false))) return mlua_error(L);
    return 0;
}

/* ml.image.load(path) -> [C, H, W] float tensor in [0, 1] */
static int l_load(lua_State *L) { return mlua_push_tensor(L, ml_image_load(luaL_checkstring(L, 1))); }

/* Pushes the text of image 1 with the options at 2: half blocks in 24-bit
 * colour, or a grey ramp; color and ascii default as given. */
static int push_text(lua_State *L, const char *fn, bool color, bool ascii) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    static const char *const known[] = {"width", "height", "color", "ascii", "clamp", NULL};
    mlua_check_options(L, 2, fn, known);
    int cols, lines;
    mlua_term_size(&cols, &lines);
    lua_Integer maxw = mlua_opt_integer(L, 2, "width", cols < 120 ? cols : 120);
    lua_Integer maxh = mlua_opt_integer(L, 2, "height", lines > 3 ? lines - 2 : 1);
    if (maxw < 1 || maxh < 1 || maxw > ML_PLOT_MAX_CELLS || maxh > ML_PLOT_MAX_CELLS)
        luaL_error(L, "%s: width and height must be between 1 and %d, got %I and %I", fn, ML_PLOT_MAX_CELLS, maxw, maxh);
    bool blocks = mlua_opt_bool(L, 2, "color", color) && !mlua_opt_bool(L, 2, "ascii", ascii);
    uint8_t *px;
    int h, w, c;
    if (ml_image_to_bytes(t, mlua_opt_bool(L, 2, "clamp", false), &px, &h, &w, &c)) return mlua_error(L);
    /* one cell shows one pixel across and two down: shrink to fit, keep the shape */
    double f = 1;
    if (w > maxw) f = (double)maxw / w;
    if (h * f > 2.0 * maxh) f = 2.0 * maxh / h;
    int nw = (int)(w * f + 0.5), nh = (int)(h * f + 0.5);
    nw = nw < 1 ? 1 : nw, nh = nh < 1 ? 1 : nh;
    uint8_t *img = ml_image_resample(px, h, w, c, nh, nw);
    free(px);
    if (!img) return mlua_error(L);
    static const char ramp[] = " .:-=+*#%@";
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int y = 0; y < nh; y += 2) {
        for (int x = 0; x < nw; x++) {
            const uint8_t *top = img + ((size_t)y * (size_t)nw + (size_t)x) * (size_t)c;
            const uint8_t *bottom = y + 1 < nh ? top + (size_t)nw * (size_t)c : NULL;
            if (blocks) { /* upper half block: foreground the top pixel, background the bottom one */
                char code[64];
                snprintf(code, sizeof code, "\x1b[38;2;%d;%d;%dm", top[0], top[c == 3], top[c == 3 ? 2 : 0]);
                luaL_addstring(&b, code);
                if (bottom) snprintf(code, sizeof code, "\x1b[48;2;%d;%d;%dm", bottom[0], bottom[c == 3], bottom[c == 3 ? 2 : 0]);
                else snprintf(code, sizeof code, "\x1b[49m");
                luaL_addstring(&b, code);
                luaL_addstring(&b, "\xe2\x96\x80"); /* U+2580 */
                continue;
            }
            double lum = 0;
            for (int k = 0; k < (bottom ? 2 : 1); k++) {
                const uint8_t *p = k ? bottom : top;
                lum += c == 3 ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] : p[0];
            }
            lum /= bottom ? 2 : 1;
            luaL_addchar(&b, ramp[(int)(lum / 256.0 * 10)]);
        }
        if (blocks) luaL_addstring(&b, "\x1b[0m");
        if (y + 2 < nh) luaL_addchar(&b, '\n');
    }
    free(img);
    luaL_pushresult(&b);
    return 1;
}

/* ml.image.text(t, [{width, height, color = false, ascii = false, clamp = false}]) -> string */
static int l_text(lua_State *L) { return push_text(L, "image.text", false, false); }

/* ml.image.show(t, [opts]): the text printed, in colour on a colour UTF-8 terminal */
static int l_show(lua_State *L) {
    push_text(L, "image.show", mlua_term_color(), !mlua_term_utf8());
    fwrite(lua_tostring(L, -1), 1, lua_rawlen(L, -1), stdout);
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

/* ml.image._grid{clean, adversarial, captions, colors ("good" | "bad" | nil each), headers, scale, clamp}
 * -> [3, H, W] tensor, boxes {x, y, w, h} (1-based) per example and panel */
static int l_grid(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    ml_image_grid_spec spec = {0};
    lua_getfield(L, 1, "clean");
    spec.clean = mlua_check_tensor(L, -1);
    if (lua_getfield(L, 1, "adversarial") != LUA_TNIL) spec.adversarial = mlua_check_tensor(L, -1);
    lua_Integer scale = mlua_opt_integer(L, 1, "scale", 0);
    if (scale < 0 || scale > 64) luaL_error(L, "image.grid: scale must be between 1 and 64, got %I", scale);
    spec.scale = (int)scale;
    spec.clamp = mlua_opt_bool(L, 1, "clamp", false);
    int panels = ml_image_grid_panels(&spec);
    int64_t n = spec.clean->ndim >= 3 ? spec.clean->shape[0] : 0, cells = n * panels;
    if (n > 1000) luaL_error(L, "image.grid: %d examples (1 to 1000 fit in a grid)", (int)n);
    const char **captions = NULL, **headers = NULL;
    uint8_t *colors = NULL;
    if (lua_getfield(L, 1, "captions") == LUA_TTABLE) {
        captions = lua_newuserdatauv(L, sizeof *captions * (size_t)(cells ? cells : 1), 0);
        colors = lua_newuserdatauv(L, (size_t)(cells ? cells : 1), 0);
        bool have_colors = lua_getfield(L, 1, "colors") == LUA_TTABLE;
        for (int64_t i = 0; i < cells; i++) {
            lua_rawgeti(L, -4, i + 1);
            captions[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* the table keeps it alive */
            lua_pop(L, 1);
            colors[i] = ML_COLOR_DEFAULT;
            if (have_colors && lua_rawgeti(L, -1, i + 1) == LUA_TSTRING) /* "good" or "bad" */
                colors[i] = strcmp(lua_tostring(L, -1), "good") == 0 ? ML_COLOR_GOOD : ML_COLOR_BAD;
            if (have_colors) lua_pop(L, 1);
        }
    }
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        headers = lua_newuserdatauv(L, sizeof *headers * 3, 0);
        for (int k = 0; k < panels; k++) {
            lua_rawgeti(L, -2, k + 1);
            headers[k] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            lua_pop(L, 1);
        }
    }
    spec.captions = captions;
    spec.caption_colors = colors;
    spec.headers = headers;
    int *boxes = lua_newuserdatauv(L, sizeof *boxes * 4 * (size_t)(cells ? cells : 1), 0);
    uint8_t *rgb;
    int h, w;
    if (ml_image_grid(&spec, &rgb, &h, &w, boxes)) return mlua_error(L);
    ml_tensor *t = ml_image_from_bytes(rgb, h, w, 3);
    free(rgb);
    mlua_push_tensor(L, t);
    lua_createtable(L, (int)cells, 0);
    for (int64_t i = 0; i < cells; i++) {
        lua_createtable(L, 4, 0);
        for (int k = 0; k < 4; k++) {
            lua_pushinteger(L, boxes[i * 4 + k] + (k < 2)); /* x and y 1-based */
            lua_rawseti(L, -2, k + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 2;
}

void mlua_open_image(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"save", l_save}, {"load", l_load}, {"text", l_text}, {"show", l_show}, {"_grid", l_grid}, {NULL, NULL}};
    mlua_subtable(L, "image");
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
