/* font.h -- the built-in bitmap font of PNG plots and picture captions.
 *
 * Glyphs are 5 pixels wide and 9 high (7 above the baseline, 2 for
 * descenders), drawn in a cell of 6 x 12 pixels (the shape of a terminal
 * cell). It covers ASCII 32..126 and the few other characters lab plots
 * use (Greek letters such as the attack budget's epsilon, the middle dot,
 * x-times, plus-minus, ellipsis, degree, <=, >=, arrow). */
#ifndef ML_PLOT_FONT_H
#define ML_PLOT_FONT_H

#include <stdbool.h>
#include <stdint.h>

#define ML_FONT_W 5
#define ML_FONT_H 9
#define ML_FONT_CELL_W 6
#define ML_FONT_CELL_H 12
#define ML_FONT_TOP 1 /* glyph rows start this far below the cell's top */

/* The bit rows of cp's glyph, top first (bit 4 = leftmost pixel). Returns
 * false (and blank rows) when the font has no such glyph. */
bool ml_font_glyph(uint32_t cp, uint8_t rows[ML_FONT_H]);
/* Number of glyphs and the i-th code point (for tests that check them all). */
int ml_font_count(void);
uint32_t ml_font_code(int i);
/* Draws one glyph with its cell's top-left at (x, y) into an RGB image of
 * w x h pixels, each font pixel a scale x scale block (clipped). A missing
 * glyph draws a hollow box. */
void ml_font_draw_glyph(uint8_t *rgb, int w, int h, int x, int y, uint32_t cp, int scale, const uint8_t color[3]);
/* Draws a UTF-8 line of text; returns its width in pixels. */
int ml_font_draw(uint8_t *rgb, int w, int h, int x, int y, const char *text, int scale, const uint8_t color[3]);

#endif
