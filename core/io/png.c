/* png.c -- see png.h. */
#include "png.h"

#include <errno.h>
#include <inttypes.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.h"
#include "png_error.h"

/* Refuses (with the error set) a decoded image whose raw size could not come
 * from a file of fsize bytes: deflate expands at most 1032:1, so a larger
 * claim is a truncated or crafted file, refused before allocating for it. */
static int check_size(const char *path, long fsize, uint32_t w, uint32_t h, int channels) {
    if (w > ML_PNG_MAX_SIDE || h > ML_PNG_MAX_SIDE || (uint64_t)w * h > ML_PNG_MAX_PIXELS)
        return ml_failc("png: %s: a %ux%u image is larger than supported (%d pixels a side, %" PRIu64 " pixels)", path,
                        w, h, ML_PNG_MAX_SIDE, (uint64_t)ML_PNG_MAX_PIXELS);
    uint64_t raw = (uint64_t)h * ((uint64_t)w * (uint64_t)channels + 1);
    if (raw > 1032 * (uint64_t)fsize + 65536)
        return ml_failc("png: %s: a %ux%u image cannot come from a %ld-byte file (truncated or corrupt)", path, w, h,
                        fsize);
    return 0;
}

int ml_png_read(const char *path, uint8_t **data, int *h, int *w, int *c) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ml_failc("png: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    unsigned char sig[8];
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ml_failc("png: %s is not a regular file", path);
    }
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
    /* Integrity over leniency: libpng's "benign" errors become errors, so image
     * data whose zlib checksum fails, or too much or too little of it, is refused
     * (by default a bad checksum in a last IDAT chunk of its own is only a
     * warning). Ancillary chunks are skipped unread, and memory per chunk is capped. */
    png_set_benign_errors(png, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    static const png_byte skipped[] = "tEXt\0zTXt\0iTXt\0sPLT\0iCCP\0eXIf\0tIME\0";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skipped, (int)(sizeof skipped / 5));
    png_set_chunk_malloc_max(png, 8 << 20);
    png_set_user_limits(png, ML_PNG_MAX_SIDE, ML_PNG_MAX_SIDE);
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
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    int channels = png_get_channels(png, info);
    if (channels != 1 && channels != 3) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return ml_failc("png: %s: unsupported layout with %d channels", path, channels);
    }
    if (png_get_rowbytes(png, info) != (size_t)width * (size_t)channels || check_size(path, (long)st.st_size, width, height, channels)) {
        if (png_get_rowbytes(png, info) != (size_t)width * (size_t)channels)
            ml_failc("png: %s: unexpected row size %zu for %u pixels of %d channels", path,
                     (size_t)png_get_rowbytes(png, info), width, channels);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return -1;
    }
    buf = malloc((size_t)width * height * (size_t)channels);
    rows = malloc(sizeof(png_bytep) * (size_t)height);
    if (!buf || !rows) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(buf);
        free(rows);
        return ml_failc("png: out of memory reading %s", path);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = buf + (size_t)y * width * (size_t)channels;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(rows);
    *data = buf;
    *h = (int)height;
    *w = (int)width;
    *c = channels;
    return 0;
}
