/* surface.c -- text on a drawing surface: UTF-8 decoding, clipping to a
 * region, centring, the note line. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

uint32_t ml_utf8_next(const char **s) {
    const unsigned char *p = (const unsigned char *)*s;
    uint32_t c = p[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0) {
        *s += 1;
        return '?';
    }
    if (len == 1) {
        *s += 1;
        return c;
    }
    c &= 0x3fu >> (len - 1);
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) { /* truncated sequence */
            *s += i;
            return '?';
        }
        c = c << 6 | (p[i] & 0x3f);
    }
    *s += len;
    return c;
}

int ml_utf8_len(const char *s) {
    int n = 0;
    while (s && *s) {
        ml_utf8_next(&s);
        n++;
    }
    return n;
}

int ml_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18 & 0x07));
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int ml_put_text(ml_surface *s, ml_region r, int row, int col, const char *text, int maxw, uint8_t color) {
    if (!text || row < 0 || row >= r.h) return 0;
    int n = 0;
    while (*text && n < maxw && col + n < r.w) {
        uint32_t cp = ml_utf8_next(&text);
        if (cp < 32 || cp == 127) cp = ' '; /* a tab or newline in a label takes one cell */
        if (s->ascii && cp > 126) cp = '?';
        if (col + n >= 0) s->put(s, r.row + row, r.col + col + n, cp, color);
        n++;
    }
    return n;
}

void ml_put_centered(ml_surface *s, ml_region r, int row, int col, int w, const char *text, uint8_t color) {
    int len = ml_utf8_len(text);
    int start = col + (len < w ? (w - len) / 2 : 0);
    ml_put_text(s, r, row, start, text, w, color);
}

void ml_put_note(ml_surface *s, ml_region r, int row, int64_t skipped, const char *what) {
    if (skipped <= 0) return;
    char note[96];
    snprintf(note, sizeof note, "(%lld non-finite %s%s skipped)", (long long)skipped, what, skipped == 1 ? "" : "s");
    if ((int)strlen(note) > r.w) snprintf(note, sizeof note, "(%lld NaN/inf skipped)", (long long)skipped); /* a narrow plot */
    ml_put_text(s, r, row, 0, note, r.w, ML_COLOR_NOTE);
}
