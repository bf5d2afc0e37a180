/* png_error.h -- libpng's error callbacks, shared by the reader (png.c) and
 * the writer (png_write.c): an error jumps back to the caller's setjmp with
 * libpng's message; warnings are ignored. Include after <png.h>. */
#ifndef ML_IO_PNG_ERROR_H
#define ML_IO_PNG_ERROR_H

#include <setjmp.h>
#include <stdio.h>

typedef struct {
    jmp_buf jb;
    char msg[256];
} png_err;

static inline void on_error(png_structp png, png_const_charp msg) {
    png_err *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    longjmp(e->jb, 1);
}

static inline void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

#endif
