/* png.c -- see png.h. */
#include "png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../error.h"
#include "png_error.h"

int ml_png_read(const char *path, uint8_t **data, int *h, int *w, int *c) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ml_failc("png: cannot open %s: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(f);
        return ml_failc("png: %s is not a PNG file", path);
    }
    png_err err = {0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* volatile: these change between setjmp and a possible longjmp */
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        fclose(f);
        return ml_failc("png: out of memory reading %s", path);
    }
    if (setjmp(err.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(buf);
        free(rows);
        return ml_failc("png: %s: corrupt or truncated file (%s)", path, err.msg);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    int bit_depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    if (bit_depth == 16) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return ml_failc("png: %s: 16-bit images are not supported (convert to 8 bits per channel)", path);
    }
    if (png_get_interlace_type(png, info) != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_read_update_info(png, info);
    int width = (int)png_get_image_width(png, info), height = (int)png_get_image_height(png, info);
    int channels = png_get_channels(png, info);
    if (channels != 1 && channels != 3) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return ml_failc("png: %s: unsupported layout with %d channels", path, channels);
    }
    buf = malloc((size_t)width * height * channels);
    rows = malloc(sizeof(png_bytep) * (size_t)height);
    if (!buf || !rows) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(buf);
        free(rows);
        return ml_failc("png: out of memory reading %s", path);
    }
    for (int y = 0; y < height; y++) rows[y] = buf + (size_t)y * width * channels;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(rows);
    *data = buf;
    *h = height;
    *w = width;
    *c = channels;
    return 0;
}
