/* lua_term.h -- what the bindings know about the terminal (the core knows
 * nothing of it): its size, whether it takes UTF-8 and colour, and the ANSI
 * codes of the core's colour indices. Used by ml.plot and ml.image. */
#ifndef MLUA_TERM_H
#define MLUA_TERM_H

#include <lauxlib.h>
#include <stdbool.h>

#include "plot/plot.h"

/* Columns and lines: COLUMNS / LINES when set, else the terminal on stdout
 * (TIOCGWINSZ), else 80 x 24. */
void mlua_term_size(int *cols, int *lines);
/* True when the locale (LC_ALL, else LC_CTYPE, else LANG) is UTF-8. */
bool mlua_term_utf8(void);
/* True when stdout is a terminal and NO_COLOR is unset or empty. */
bool mlua_term_color(void);
/* The ANSI code (SGR) that starts colour index `color` ("" for the default colour). */
void mlua_term_sgr(uint8_t color, char *buf, size_t n);
/* Adds the cells to b as text: with ANSI colour codes when `color`
 * (series in the terminal's own palette, heat levels in 24-bit colour),
 * lines joined by '\n', trailing blanks dropped. */
void mlua_add_cells(luaL_Buffer *b, const ml_cells *c, bool color);

#endif
