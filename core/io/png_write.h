/* png_write.h -- writing 8-bit PNG images through libpng (plots, pictures).
 * The reader is in png.h. */
#ifndef ML_IO_PNG_WRITE_H
#define ML_IO_PNG_WRITE_H

#include <stdint.h>

/* Writes h*w*c bytes (HWC, c = 1 gray, 3 RGB or 4 RGBA) as an 8-bit PNG,
 * atomically: a temporary file beside it, flushed to disk, then renamed,
 * so `path` holds the old file or the whole new one, never a part. Returns
 * 0, or -1 with the error set (naming the path and the reason). */
int ml_png_write(const char *path, const uint8_t *data, int h, int w, int c);

#endif
