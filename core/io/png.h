/* png.h -- reading 8-bit PNG images through libpng (writing: png_write.h).
 *
 * Reading accepts 8-bit gray, gray+alpha, RGB, RGBA and palette images (and
 * gray below 8 bits, expanded); alpha is dropped, palettes become RGB. 16-bit
 * images and anything else are refused with the file name and the reason.
 * A corrupt or truncated file is an error naming it, never a crash (libpng's
 * longjmp error path frees everything): image data whose zlib checksum fails,
 * too much or too little of it, and sizes a file of that length cannot hold
 * are refused. Images are at most ML_PNG_MAX_SIDE pixels a side and
 * ML_PNG_MAX_PIXELS pixels (fuzzed: tests/fuzz/fuzz_png.c). */
#ifndef ML_IO_PNG_H
#define ML_IO_PNG_H

#include <stdint.h>

#define ML_PNG_MAX_SIDE 16384
#define ML_PNG_MAX_PIXELS ((uint64_t)1 << 26)

/* Reads path into a malloc'd buffer of h*w*c bytes, channels interleaved
 * (HWC), c = 1 (gray) or 3 (RGB). Returns 0 or -1 with the error set. */
int ml_png_read(const char *path, uint8_t **data, int *h, int *w, int *c);

#endif
