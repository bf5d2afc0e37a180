/* The plot renderer: ticks and number formats, the braille and ASCII
 * canvases cell by cell (positions worked out by hand from the layout
 * rules), every kind's exact text on small data, NaN skipping, errors, the
 * pixel renderer and the bitmap font, PNG writing and the picture grid. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/png.h"
#include "plot/font.h"
#include "plot/scale.h"
#include "testlib.h"

static char *text_of(const ml_plot *p, int w, int h, bool ascii) {
    ml_cells *c = ml_plot_render(p, w, h, ascii);
    if (!c) {
        fprintf(stderr, "render failed: %s\n", ml_last_error());
        return strdup("");
    }
    char *t = ml_cells_text(c);
    ml_cells_free(c);
    return t;
}

#define CHECK_TEXT(got, want)                                                  \
    do {                                                                       \
        char *g_ = (got);                                                      \
        CHECK(strcmp(g_, want) == 0);                                          \
        if (strcmp(g_, want)) fprintf(stderr, "got:\n%s\nwant:\n%s\n", g_, want); \
        free(g_);                                                              \
    } while (0)

TEST(ticks_and_labels) {
    CHECK_NEAR(ml_nice_step(1, 5), 0.2, 1e-12);
    CHECK_NEAR(ml_nice_step(7, 2), 5, 1e-12);
    CHECK_NEAR(ml_nice_step(0.03, 4), 0.01, 1e-12);
    double t[ML_MAX_TICKS], step;
    ml_axis a = {0, 1, false, 0};
    CHECK(ml_axis_ticks(&a, 5, t, &step) == 6);
    CHECK_NEAR(step, 0.2, 1e-12);
    CHECK_NEAR(t[3], 0.6, 1e-12);
    char buf[32];
    ml_tick_label(t[0], step, buf, sizeof buf);
    CHECK(strcmp(buf, "0.0") == 0);
    ml_tick_label(t[5], step, buf, sizeof buf);
    CHECK(strcmp(buf, "1.0") == 0);
    /* auto limits widen to the tick step and keep it */
    ml_axis w = ml_axis_auto(0.03, 0.97, false, true, 5);
    CHECK(w.lo == 0 && fabs(w.hi - 1) < 1e-12 && fabs(w.step - 0.2) < 1e-12);
    w = ml_axis_auto(-1.9, 6.9, false, true, 2); /* step 5 over -5..10, not 10 over the wider span */
    CHECK(w.lo == -5 && w.hi == 10 && ml_axis_ticks(&w, 2, t, &step) == 4 && t[1] == 0);
    w = ml_axis_auto(5, 5, false, true, 5);
    CHECK_NEAR(w.lo, 4.5, 1e-12);
    CHECK_NEAR(w.hi, 5.5, 1e-12);
    w = ml_axis_auto(0, 0, false, true, 5);
    CHECK(w.lo == -1 && w.hi == 1);
    /* log axes: decades, thinned to the target; 1-2-5 inside one decade; linear when narrower */
    ml_axis l = {1e-3, 10, true, 0};
    CHECK(ml_axis_ticks(&l, 5, t, &step) == 5 && step == 0);
    CHECK_NEAR(t[0], 1e-3, 1e-15);
    CHECK_NEAR(t[4], 10, 1e-12);
    ml_tick_label(t[0], 0, buf, sizeof buf);
    CHECK(strcmp(buf, "0.001") == 0);
    CHECK(ml_axis_ticks(&l, 2, t, &step) == 2 && fabs(t[1] - 1) < 1e-12);
    ml_axis l2 = {2, 30, true, 0};
    CHECK(ml_axis_ticks(&l2, 5, t, &step) == 4);
    CHECK(t[0] == 2 && t[1] == 5 && fabs(t[2] - 10) < 1e-12 && fabs(t[3] - 20) < 1e-12);
    ml_axis l3 = {3, 4, true, 0};
    CHECK(ml_axis_ticks(&l3, 5, t, &step) == 6 && fabs(step - 0.2) < 1e-12);
    ml_tick_label(1e-5, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "1e-5") == 0);
    ml_tick_label(1e6, 1e5, buf, sizeof buf);
    CHECK(strcmp(buf, "1e6") == 0);
    ml_tick_label(2e-5, 1e-5, buf, sizeof buf);
    CHECK(strcmp(buf, "2e-5") == 0);
    ml_tick_label(-0.0, 0.1, buf, sizeof buf);
    CHECK(strcmp(buf, "0.0") == 0);
    ml_format_number(NAN, 3, buf, sizeof buf);
    CHECK(strcmp(buf, "nan") == 0);
    ml_format_number(1.5e-7, 3, buf, sizeof buf);
    CHECK(strcmp(buf, "1.5e-7") == 0);
}

/* Two points at opposite corners of a 20x10 plot with limits {0, 1}:
 * y labels take 3 columns, the axis 1, the canvas 16x8 cells. The limits map
 * to the middle dots of the outer cells: braille dot column 1, row 2. */
static ml_plot *corners(ml_plot_kind kind) {
    ml_plot *p = ml_plot_new(kind);
    double x[2] = {0, 1}, y[2] = {0, 1};
    CHECK(ml_plot_add_series(p, NULL, x, 2, y, 2) == 0);
    CHECK(ml_plot_set_limits(p, ML_AXIS_X, 0, 1) == 0);
    CHECK(ml_plot_set_limits(p, ML_AXIS_Y, 0, 1) == 0);
    return p;
}

TEST(braille_canvas_by_hand) {
    ml_plot *p = corners(ML_PLOT_SCATTER);
    CHECK_TEXT(text_of(p, 20, 10, false), "1.0┤               ⠠\n"
                                           "   │\n"
                                           "   │\n"
                                           "   │\n"
                                           "0.5┤\n"
                                           "   │\n"
                                           "   │\n"
                                           "0.0┤⠠\n"
                                           "   └┬───────┬──────┬\n"
                                           "   0.0     0.5   1.0");
    ml_cells *c = ml_plot_render(p, 20, 10, false);
    CHECK(c && c->cp[0 * 20 + 19] == 0x2820 && c->color[0 * 20 + 19] == ML_COLOR_SERIES);
    CHECK(c && c->cp[7 * 20 + 3] == 0x2524 && c->color[7 * 20 + 3] == ML_COLOR_AXIS);
    ml_cells_free(c);
    CHECK_TEXT(text_of(p, 20, 10, true), "1.0+               *\n"
                                          "   |\n"
                                          "   |\n"
                                          "   |\n"
                                          "0.5+\n"
                                          "   |\n"
                                          "   |\n"
                                          "0.0+*\n"
                                          "   ++-------+------+\n"
                                          "   0.0     0.5   1.0");
    ml_plot_release(p);
}

TEST(line_has_one_dot_per_column) {
    /* y = x across a 16x8 ASCII canvas: Bresenham puts one dot in each of the 16 columns */
    ml_plot *p = corners(ML_PLOT_LINES);
    ml_cells *c = ml_plot_render(p, 20, 10, true);
    CHECK(c != NULL);
    for (int col = 4; c && col < 20; col++) {
        int n = 0;
        for (int row = 0; row < 8; row++) n += c->cp[row * 20 + col] == '*';
        CHECK(n == 1);
    }
    /* braille: a rising line fills dots from the bottom-left to the top-right cell */
    ml_cells *b = ml_plot_render(p, 20, 10, false);
    CHECK(b && b->cp[7 * 20 + 4] >= 0x2800 && b->cp[0 * 20 + 19] >= 0x2800 && b->cp[0 * 20 + 4] == ' ');
    ml_cells_free(c);
    ml_cells_free(b);
    ml_plot_release(p);
}

TEST(nan_points_are_skipped_and_noted) {
    ml_plot *p = ml_plot_new(ML_PLOT_LINES);
    double x[3] = {0, 0.5, 1}, y[3] = {0, NAN, 1};
    CHECK(ml_plot_add_series(p, NULL, x, 3, y, 3) == 0);
    ml_plot_set_limits(p, ML_AXIS_X, 0, 1);
    ml_plot_set_limits(p, ML_AXIS_Y, 0, 1);
    ml_cells *c = ml_plot_render(p, 20, 11, true);
    int marks = 0;
    for (int i = 0; c && i < 20 * 11; i++) marks += c->cp[i] == '*';
    CHECK(marks == 2); /* two isolated points, no line through the gap */
    char *t = c ? ml_cells_text(c) : NULL;
    CHECK(t && strstr(t, "\n(1 NaN/inf skipped)") != NULL); /* the short form in 20 columns */
    free(t);
    ml_cells_free(c);
    double inf[2] = {INFINITY, -INFINITY}, ok[2] = {1, 2};
    CHECK(ml_plot_add_series(p, "b", ok, 2, inf, 2) == 0);
    t = text_of(p, 30, 12, true);
    CHECK(strstr(t, "(3 non-finite points skipped)") != NULL);
    free(t);
    ml_plot_release(p);
}

TEST(legend_in_the_right_margin) {
    ml_plot *p = ml_plot_new(ML_PLOT_LINES);
    double y1[3] = {1, 2, 3}, y2[3] = {3, 2, 1};
    ml_plot_add_series(p, "up", NULL, 0, y1, 3);
    ml_plot_add_series(p, "down", NULL, 0, y2, 3);
    ml_cells *c = ml_plot_render(p, 40, 12, true);
    char *t = c ? ml_cells_text(c) : NULL;
    CHECK(t && strstr(t, "** up\n") && strstr(t, "++ down\n"));
    /* the legend starts at column 40 - (1 + 3 + 4) + 1 */
    CHECK(c && c->cp[33] == '*' && c->color[33] == ML_COLOR_SERIES && c->cp[40 + 33] == '+' &&
          c->color[40 + 33] == ML_COLOR_SERIES + 1);
    free(t);
    ml_cells_free(c);
    ml_plot_release(p);
}

TEST(bars_spark_heatmap_exact) {
    ml_plot *b = ml_plot_new(ML_PLOT_BARS);
    ml_plot_add_bar(b, "a", 2);
    ml_plot_add_bar(b, "bb", 1);
    CHECK(ml_plot_natural_height(b, 12) == 2);
    CHECK_TEXT(text_of(b, 12, 2, false), "a  ███████ 2\nbb ███▌    1");
    CHECK_TEXT(text_of(b, 12, 2, true), "a  ####### 2\nbb ####    1");
    ml_plot_release(b);

    ml_plot *s = ml_plot_new(ML_PLOT_SPARK);
    double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ml_plot_add_series(s, NULL, NULL, 0, v, 8);
    CHECK_TEXT(text_of(s, 20, 1, true), "_.-=+*#@ 8");
    CHECK_TEXT(text_of(s, 20, 1, false), "▁▂▃▄▅▆▇█ 8");
    CHECK_TEXT(text_of(s, 6, 1, true), "_-*@ 8"); /* 4 columns: the means 1.5, 3.5, 5.5, 7.5 */
    ml_plot_release(s);

    ml_plot *h = ml_plot_new(ML_PLOT_HEATMAP);
    double m[6] = {0, 0.5, 1, 1, NAN, 0};
    CHECK(ml_plot_set_matrix(h, 2, 3, m) == 0);
    CHECK(ml_plot_natural_height(h, 20) == 5);
    CHECK_TEXT(text_of(h, 20, 5, true), "  1 2 3\n"
                                         "1 ..++@@\n"
                                         "2 @@  ..\n"
                                         "  0 .:-=+*#%@ 1\n"
                                         "(1 NaN/inf skipped)");
    const char *rows[2] = {"x", "yy"};
    CHECK(ml_plot_set_tick_labels(h, ML_AXIS_Y, 2, rows) == 0);
    CHECK_TEXT(text_of(h, 30, 5, false), "   1 2 3\n"
                                          "x  ··▒▒██\n"
                                          "yy ██  ··\n"
                                          "   0 ·░▒▓█ 1\n"
                                          "(1 non-finite cell skipped)");
    ml_plot_release(h);
}

TEST(errors_are_clear) {
    ml_plot *p = ml_plot_new(ML_PLOT_LINES);
    double x[3] = {1, 2, 3}, y[2] = {1, 2}, neg[2] = {-1, 2};
    CHECK_FAILS(ml_plot_add_series(p, "acc", x, 3, y, 2) == 0, "lines: series 'acc' has 3 x values and 2 y values");
    CHECK_FAILS(ml_plot_add_series(p, "acc", NULL, 0, y, 0) == 0, "lines: series 'acc' is empty");
    CHECK_FAILS(ml_plot_render(p, 40, 10, false) != NULL, "lines: no series to plot");
    CHECK_FAILS(ml_plot_set_limits(p, ML_AXIS_X, 1, 1) == 0, "plot: bad xlim {1, 1}");
    CHECK_FAILS(ml_plot_set_limits(p, ML_AXIS_Y, NAN, 1) == 0, "plot: bad ylim");
    CHECK(ml_plot_add_series(p, "acc", NULL, 0, neg, 2) == 0);
    CHECK(ml_plot_set_log(p, ML_AXIS_Y, true) == 0);
    CHECK_FAILS(ml_plot_check(p) == 0, "lines: log scale on y, but series 'acc' has y = -1 at point 1");
    CHECK(ml_plot_set_log(p, ML_AXIS_Y, false) == 0);
    CHECK_FAILS(ml_plot_render(p, 0, 10, false) != NULL, "lines: size 0x10 must be between 1 and 10000");
    CHECK_FAILS(ml_plot_render(p, -5, 10, false) != NULL, "lines: size -5x10");
    CHECK_FAILS(ml_plot_render(p, 6, 10, false) != NULL, "lines: 6x10 cells is too small for this plot");
    uint8_t *rgb;
    int h, w;
    CHECK_FAILS(ml_plot_raster(p, 40, 10, 0, &rgb, &h, &w) == 0, "lines: png scale must be between 1 and 16, got 0");
    CHECK_FAILS(ml_plot_raster(p, 10000, 10000, 16, &rgb, &h, &w) == 0, "pixel image is too large");
    CHECK_FAILS(ml_plot_set_hist(p, y, 2, 10, false) == 0, "hist: not available for a lines plot");
    ml_plot_release(p);

    ml_plot *s = ml_plot_new(ML_PLOT_SPARK);
    ml_plot_add_series(s, NULL, NULL, 0, y, 2);
    CHECK_FAILS(ml_plot_add_series(s, NULL, NULL, 0, y, 2) == 0, "spark: a sparkline shows one series");
    CHECK_FAILS(ml_plot_set_log(s, ML_AXIS_X, true) == 0, "plot log scale: not available for a spark plot");
    ml_plot_release(s);
    ml_plot *hist = ml_plot_new(ML_PLOT_HIST);
    CHECK_FAILS(ml_plot_set_hist(hist, y, 2, 0, false) == 0, "hist: bins must be between 1 and 100000, got 0");
    CHECK_FAILS(ml_plot_set_hist(hist, y, 0, 10, false) == 0, "hist: no values");
    ml_plot_release(hist);
    ml_plot *hm = ml_plot_new(ML_PLOT_HEATMAP);
    CHECK_FAILS(ml_plot_set_matrix(hm, 0, 3, y) == 0, "heatmap: the matrix is empty (0 x 3)");
    double m[4] = {1, 2, 3, 4};
    ml_plot_set_matrix(hm, 2, 2, m);
    const char *labels[3] = {"a", "b", "c"};
    CHECK_FAILS(ml_plot_set_tick_labels(hm, ML_AXIS_X, 3, labels) == 0, "heatmap: 3 column labels for a matrix with 2 columns");
    ml_plot *g = ml_plot_new(ML_PLOT_GRID);
    CHECK_FAILS(ml_plot_render(g, 40, 10, false) != NULL, "grid: no plots");
    CHECK_FAILS(ml_plot_add_child(g, g) == 0, "grid: a grid holds other plots");
    CHECK(ml_plot_add_child(g, hm) == 0);
    CHECK_FAILS(ml_plot_render(g, 40, 2, false) != NULL, "grid: 1 rows of plots do not fit in 2 lines");
    ml_plot_release(g);
    ml_plot_release(hm);
    ml_plot *bars = ml_plot_new(ML_PLOT_BARS);
    CHECK_FAILS(ml_plot_render(bars, 40, 3, false) != NULL, "bars: no bars");
    ml_plot_release(bars);
}

TEST(grid_places_plots_side_by_side_and_in_rows) {
    ml_plot *a = ml_plot_new(ML_PLOT_SPARK), *b = ml_plot_new(ML_PLOT_SPARK);
    double up[3] = {1, 2, 3}, down[3] = {3, 2, 1};
    ml_plot_add_series(a, NULL, NULL, 0, up, 3);
    ml_plot_add_series(b, NULL, NULL, 0, down, 3);
    ml_plot *g = ml_plot_new(ML_PLOT_GRID);
    ml_plot_add_child(g, a);
    ml_plot_add_child(g, b);
    CHECK(ml_plot_natural_height(g, 20) == 1);
    CHECK_TEXT(text_of(g, 20, 1, true), "_+@ 3      @+_ 1");
    ml_plot_set_columns(g, 1);
    CHECK(ml_plot_natural_height(g, 20) == 3);
    CHECK_TEXT(text_of(g, 20, 3, true), "_+@ 3\n\n@+_ 1");
    ml_plot_release(a); /* the grid keeps its plots */
    ml_plot_release(b);
    CHECK_TEXT(text_of(g, 20, 3, true), "_+@ 3\n\n@+_ 1");
    ml_plot_release(g);
}

TEST(extreme_values_render) {
    /* spans that overflow doubles, points 1e308 apart over 1e-300: drawn or left out, never a hang */
    double x[4] = {0, 1e-300, 2e-300, 1}, y[4] = {1e308, -1e308, 0, 1}, big[3] = {1e308, -1e308, 1e308};
    ml_plot *kinds[6];
    kinds[0] = ml_plot_new(ML_PLOT_LINES);
    kinds[1] = ml_plot_new(ML_PLOT_SCATTER);
    for (int i = 0; i < 2; i++) ml_plot_add_series(kinds[i], "s", x, 4, y, 4);
    kinds[2] = ml_plot_new(ML_PLOT_HIST);
    ml_plot_set_hist(kinds[2], big, 3, 5, true);
    kinds[3] = ml_plot_new(ML_PLOT_BARS);
    ml_plot_add_bar(kinds[3], "a", 1e308);
    ml_plot_add_bar(kinds[3], "b", -1e308);
    kinds[4] = ml_plot_new(ML_PLOT_HEATMAP);
    ml_plot_set_matrix(kinds[4], 1, 3, big);
    kinds[5] = ml_plot_new(ML_PLOT_SPARK);
    ml_plot_add_series(kinds[5], NULL, NULL, 0, big, 3);
    for (int i = 0; i < 6; i++) {
        for (int ascii = 0; ascii < 2; ascii++) {
            ml_cells *c = ml_plot_render(kinds[i], 40, 12, ascii);
            CHECK(c != NULL);
            ml_cells_free(c);
        }
        CHECK(ml_plot_set_limits(kinds[i], ML_AXIS_Y, -1e308, 1e308) == 0);
        ml_cells *c = ml_plot_render(kinds[i], 40, 12, false);
        CHECK(c != NULL);
        ml_cells_free(c);
        ml_plot_release(kinds[i]);
    }
}

static void pixel(const uint8_t *rgb, int w, int x, int y, uint8_t out[3]) { memcpy(out, rgb + ((size_t)y * w + x) * 3, 3); }

TEST(raster_pixels_by_hand) {
    /* The 20x10 corner plot at scale 1: cells 6x12, a 6-pixel margin; cell (r, c) starts at
     * (6 + 6c, 6 + 12r). The canvas (columns 4..19) maps x in [0, 1] to pixels 3..93 of it. */
    ml_plot *p = corners(ML_PLOT_SCATTER);
    uint8_t *rgb, px[3], series[3], axis[3], ink[3];
    int h, w;
    CHECK(ml_plot_raster(p, 20, 10, 1, &rgb, &h, &w) == 0);
    CHECK(w == 20 * 6 + 12 && h == 10 * 12 + 12);
    ml_plot_palette(ML_COLOR_SERIES, series);
    ml_plot_palette(ML_COLOR_AXIS, axis);
    ml_plot_palette(ML_COLOR_DEFAULT, ink);
    pixel(rgb, w, 6 + 4 * 6 + 93, 6 + 6, px); /* the point (1, 1) */
    CHECK(memcmp(px, series, 3) == 0);
    pixel(rgb, w, 6 + 4 * 6 + 3, 6 + 90, px); /* the point (0, 0) */
    CHECK(memcmp(px, series, 3) == 0);
    pixel(rgb, w, 6 + 3 * 6 + 3, 6 + 2 * 12 + 5, px); /* the y axis, through the middle of column 3 */
    CHECK(memcmp(px, axis, 3) == 0);
    pixel(rgb, w, 6 + 10 * 6, 6 + 8 * 12 + 6, px); /* the x axis, through the middle of row 8 */
    CHECK(memcmp(px, axis, 3) == 0);
    pixel(rgb, w, 6 + 2, 6 + ML_FONT_TOP, px); /* the top of the '1' of "1.0" */
    CHECK(memcmp(px, ink, 3) == 0);
    pixel(rgb, w, 6 + 1, 6 + ML_FONT_TOP, px); /* beside it */
    CHECK(px[0] == 255 && px[1] == 255 && px[2] == 255);
    pixel(rgb, w, 6 + 10 * 6, 6 + 3 * 12, px); /* empty canvas */
    CHECK(px[0] == 255 && px[1] == 255 && px[2] == 255);
    free(rgb);
    ml_plot_release(p);
}

TEST(font_covers_ascii) {
    uint8_t rows[ML_FONT_H];
    for (uint32_t cp = 32; cp <= 126; cp++) CHECK(ml_font_glyph(cp, rows));
    for (int i = 0; i < ml_font_count(); i++) CHECK(ml_font_glyph(ml_font_code(i), rows));
    CHECK(ml_font_glyph(0x03B5, rows)); /* epsilon */
    CHECK(!ml_font_glyph(0x4E00, rows));
    CHECK(ml_font_glyph('T', rows) && rows[0] == 0x1f && rows[1] == 0x04 && rows[8] == 0);
    CHECK(ml_font_glyph(' ', rows) && rows[3] == 0);
}

TEST(png_round_trip_and_errors) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/moelab_test_plot_%ld.png", (long)getpid());
    uint8_t data[5 * 7 * 3];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37 + 11);
    CHECK(ml_png_write(path, data, 5, 7, 3) == 0);
    uint8_t *back;
    int h, w, c;
    CHECK(ml_png_read(path, &back, &h, &w, &c) == 0);
    CHECK(h == 5 && w == 7 && c == 3 && memcmp(back, data, sizeof data) == 0);
    free(back);
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0); /* no temporary left behind */
    remove(path);
    CHECK_FAILS(ml_png_write("/nonexistent-dir/x.png", data, 5, 7, 3) == 0,
                "png: cannot write /nonexistent-dir/x.png: No such file or directory");
    CHECK_FAILS(ml_png_write(path, data, 5, 7, 2) == 0, "a 5x7 image with 2 channels");
    CHECK_FAILS(ml_png_write(path, data, 0, 7, 3) == 0, "a 0x7 image");
}

TEST(picture_grid_by_hand) {
    /* two 4x4 gray examples, scale 3, no captions: panels 12 px in 12-px columns,
     * x = 8 + 20k, y = 8 + 20i (margin 8, gaps 8) */
    int64_t shape[4] = {2, 1, 4, 4};
    ml_tensor *clean = ml_full(ML_F32, 4, shape, 0.25), *adv = ml_full(ML_F32, 4, shape, 0.25);
    ml_f32(adv)[16 + 5] = 0.35f; /* example 2, pixel (1, 1) */
    ml_image_grid_spec spec = {clean, adv, NULL, NULL, NULL, 3, false};
    uint8_t *rgb;
    int h, w, boxes[2 * 3 * 4];
    CHECK(ml_image_grid(&spec, &rgb, &h, &w, boxes) == 0);
    CHECK(w == 8 + 3 * 12 + 2 * 8 + 8 && h == 8 + 2 * 12 + 8 + 8);
    CHECK(boxes[0] == 8 && boxes[1] == 8 && boxes[2] == 12 && boxes[3] == 12);
    CHECK(boxes[(1 * 3 + 2) * 4] == 48 && boxes[(1 * 3 + 2) * 4 + 1] == 28);
    uint8_t px[3];
    pixel(rgb, w, 8 + 1, 8 + 1, px); /* clean, example 1 */
    CHECK(px[0] == 64 && px[1] == 64 && px[2] == 64);
    pixel(rgb, w, 28 + 3 * 1 + 1, 28 + 3 * 1 + 1, px); /* adversarial, example 2, the changed pixel */
    CHECK(px[0] == 89);
    pixel(rgb, w, 48 + 3 + 1, 28 + 3 + 1, px); /* its perturbation, amplified to white */
    CHECK(px[0] == 255);
    pixel(rgb, w, 48 + 1, 28 + 1, px); /* no change: grey */
    CHECK(px[0] == 128);
    pixel(rgb, w, 48 + 1, 8 + 1, px); /* example 1 has no perturbation at all: grey */
    CHECK(px[0] == 128);
    pixel(rgb, w, 2, 2, px); /* the margin */
    CHECK(px[0] == 255);
    free(rgb);
    ml_f32(adv)[0] = 1.5f;
    CHECK_FAILS(ml_image_grid(&spec, &rgb, &h, &w, NULL) == 0, "image.grid: adversarial images: 1 value is outside [0, 1]");
    int64_t other[4] = {2, 1, 4, 5};
    ml_tensor *bad = ml_zeros(ML_F32, 4, other);
    spec.adversarial = bad;
    CHECK_FAILS(ml_image_grid(&spec, &rgb, &h, &w, NULL) == 0, "image.grid: adversarial images [2, 1, 4, 5] and clean images");
    ml_release(bad);
    ml_release(clean);
    ml_release(adv);
}

TEST(image_bytes_and_range) {
    int64_t shape[3] = {3, 2, 2};
    ml_tensor *t = ml_rand(3, shape);
    uint8_t *data;
    int h, w, c;
    CHECK(ml_image_to_bytes(t, false, &data, &h, &w, &c) == 0 && h == 2 && w == 2 && c == 3);
    ml_tensor *back = ml_image_from_bytes(data, h, w, c);
    CHECK(back && test_close_ratio(back, t, 0, 0.5 / 255 + 1e-6) <= 1);
    free(data);
    ml_release(back);
    ml_f32(t)[4] = -0.5f;
    ml_f32(t)[7] = 2;
    CHECK_FAILS(ml_image_to_bytes(t, false, &data, &h, &w, &c) == 0,
                "image: 2 values are outside [0, 1] (from -0.5 to 2); clamp = true clips them");
    CHECK(ml_image_to_bytes(t, true, &data, &h, &w, &c) == 0 && data[0 * 3 + 1] == 0 && data[3 * 3 + 1] == 255);
    free(data);
    ml_f32(t)[0] = NAN;
    CHECK_FAILS(ml_image_to_bytes(t, true, &data, &h, &w, &c) == 0, "image: 1 value is NaN");
    int64_t bad[3] = {2, 2, 2};
    ml_tensor *two = ml_zeros(ML_F32, 3, bad);
    CHECK_FAILS(ml_image_to_bytes(two, false, &data, &h, &w, &c) == 0,
                "image: expects [C, H, W] (C = 1 or 3) or [H, W], got shape [2, 2, 2]");
    ml_release(two);
    ml_release(t);
}

int main(void) {
    RUN(ticks_and_labels);
    RUN(braille_canvas_by_hand);
    RUN(line_has_one_dot_per_column);
    RUN(nan_points_are_skipped_and_noted);
    RUN(legend_in_the_right_margin);
    RUN(bars_spark_heatmap_exact);
    RUN(errors_are_clear);
    RUN(grid_places_plots_side_by_side_and_in_rows);
    RUN(extreme_values_render);
    RUN(raster_pixels_by_hand);
    RUN(font_covers_ascii);
    RUN(png_round_trip_and_errors);
    RUN(picture_grid_by_hand);
    RUN(image_bytes_and_range);
    return test_summary();
}
