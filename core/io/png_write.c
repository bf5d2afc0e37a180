/* png_write.c -- see png_write.h. */
#include "png_write.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../error.h"
#include "png_error.h"

#define MAX_SIDE 1000000 /* libpng's default limit on rows and columns */

/* libpng's part: the image into an open file. 0, or -1 with the error set. */
static int encode(FILE *f, const char *path, const uint8_t *data, int h, int w, int c) {
    png_err err = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return ml_failc("png: out of memory writing %s", path);
    }
    if (setjmp(err.jb)) {
        png_destroy_write_struct(&png, &info);
        return ml_failc("png: writing %s failed (%s)", path, err.msg);
    }
    png_init_io(png, f);
    int color = c == 1 ? PNG_COLOR_TYPE_GRAY : c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA;
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(data + (size_t)y * (size_t)w * (size_t)c));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int ml_png_write(const char *path, const uint8_t *data, int h, int w, int c) {
    if (!path || !*path) return ml_failc("png: no file name to write");
    if (h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE || (c != 1 && c != 3 && c != 4))
        return ml_failc("png: cannot write %s: a %dx%d image with %d channels (need 1..%d pixels each way, 1, 3 or 4 channels)",
                        path, h, w, c, MAX_SIDE);
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return ml_failc("png: out of memory writing %s", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = ml_failc("png: cannot write %s: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    int rc = encode(f, path, data, h, w, c);
    if (rc == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0)) rc = ml_failc("png: writing %s failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = ml_failc("png: writing %s failed: %s", path, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0) rc = ml_failc("png: cannot rename onto %s: %s", path, strerror(errno));
    if (rc) remove(tmp);
    free(tmp);
    return rc;
}
