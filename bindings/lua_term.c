/* lua_term.c -- see lua_term.h. */
#include "lua_term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int env_int(const char *name) {
    const char *s = getenv(name);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    return s && *s && !*end && v > 0 && v <= ML_PLOT_MAX_CELLS ? (int)v : 0;
}

void mlua_term_size(int *cols, int *lines) {
    struct winsize ws;
    bool tty = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0;
    *cols = env_int("COLUMNS") ? env_int("COLUMNS") : tty ? ws.ws_col : 80;
    *lines = env_int("LINES") ? env_int("LINES") : tty ? ws.ws_row : 24;
}

bool mlua_term_utf8(void) {
    static const char *const vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strcasestr(v, "utf-8") || strcasestr(v, "utf8");
    }
    return false;
}

bool mlua_term_color(void) {
    const char *no = getenv("NO_COLOR");
    return isatty(STDOUT_FILENO) && !(no && *no);
}

void mlua_term_sgr(uint8_t color, char *buf, size_t n) {
    static const int series[ML_PLOT_SERIES_COLORS] = {34, 31, 32, 33, 35, 36, 91, 95};
    if (color >= ML_COLOR_SERIES && color < ML_COLOR_SERIES + ML_PLOT_SERIES_COLORS)
        snprintf(buf, n, "\x1b[%dm", series[color - ML_COLOR_SERIES]);
    else if (color == ML_COLOR_AXIS || color == ML_COLOR_NOTE) snprintf(buf, n, "\x1b[90m");
    else if (color == ML_COLOR_GOOD) snprintf(buf, n, "\x1b[32m");
    else if (color == ML_COLOR_BAD) snprintf(buf, n, "\x1b[31m");
    else if (color >= ML_COLOR_HEAT && color < ML_COLOR_HEAT + ML_PLOT_HEAT_LEVELS) {
        uint8_t rgb[3];
        ml_plot_palette(color, rgb);
        snprintf(buf, n, "\x1b[38;2;%d;%d;%dm", rgb[0], rgb[1], rgb[2]);
    } else buf[0] = 0;
}

void mlua_add_cells(luaL_Buffer *b, const ml_cells *c, bool color) {
    for (int row = 0; row < c->height; row++) {
        const uint32_t *cp = c->cp + (size_t)row * (size_t)c->width;
        const uint8_t *col = c->color + (size_t)row * (size_t)c->width;
        int end = c->width;
        while (end > 0 && cp[end - 1] == ' ') end--;
        uint8_t current = ML_COLOR_DEFAULT;
        for (int i = 0; i < end; i++) {
            if (color && cp[i] != ' ' && col[i] != current) {
                char code[32];
                mlua_term_sgr(col[i], code, sizeof code);
                if (current != ML_COLOR_DEFAULT) luaL_addstring(b, "\x1b[0m");
                luaL_addstring(b, code);
                current = col[i];
            }
            char utf8[4];
            luaL_addlstring(b, utf8, (size_t)ml_utf8_encode(cp[i], utf8));
        }
        if (current != ML_COLOR_DEFAULT) luaL_addstring(b, "\x1b[0m");
        if (row + 1 < c->height) luaL_addchar(b, '\n');
    }
}
