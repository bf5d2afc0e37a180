/* safetensors.c -- see safetensors.h.
 *
 * The header is read by a parser for exactly this format instead of a general
 * JSON library: it refuses duplicate names and a second __metadata__, keeps
 * 64-bit offsets exact (a double loses them past 2^53), and its memory grows
 * with the number of tensors, not with the number of JSON values (a general
 * tree costs ~40 bytes per value: 3.8 GB for a 94 MB header of small numbers).
 * Writing uses libcjson, which escapes names. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic.h"

typedef enum { D_F32, D_F64, D_F16, D_BF16, D_I64, D_I32, D_I16, D_I8, D_U8, D_BOOL, D_BAD } st_dtype;
static const char *const dtype_names[] = {"F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const int dtype_sizes[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};

#define NAME_SHOWN 80 /* characters of a name quoted in a message */
#define MAX_DEPTH 64  /* nesting of values skipped inside an entry */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

struct ml_st_file {
    char *path;
    unsigned char *data; /* the tensor bytes (after the header) */
    uint64_t data_len;
    int n, cap;
    st_entry *entries; /* in file order */
    int *by_name;      /* entry indices sorted by name, for lookups */
    int n_meta, cap_meta;
    char **meta_keys, **meta_values;
    bool has_meta;
};

static st_dtype parse_dtype(const char *s) {
    for (int i = 0; i < D_BAD; i++)
        if (!strcmp(s, dtype_names[i])) return (st_dtype)i;
    return D_BAD;
}

void ml_st_close(ml_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->entries);
    free(f->by_name);
    free(f->data);
    free(f->path);
    free(f);
}

/* ------------------------------------------------------------ the header parser */
typedef struct {
    const char *s;
    size_t n, i;
    ml_st_file *f;
} parser;

/* Fails with the file, the reason and where in the header. */
static int perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(parser *p, const char *fmt, ...) {
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return ml_failc("safetensors: %s: %s (byte %zu of the header)", p->f->path, why, p->i);
}

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int peek(parser *p) {
    skip_ws(p);
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int expect(parser *p, char c, const char *where) {
    if (peek(p) != c) {
        if (p->i >= p->n) return perr(p, "the header ends inside %s", where);
        return perr(p, "expected '%c' in %s", c, where);
    }
    p->i++;
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *p, unsigned *out) {
    if (p->n - p->i < 4) return perr(p, "a \\u escape is cut short");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p->s[p->i + (size_t)k]);
        if (h < 0) return perr(p, "a \\u escape has a non-hex digit");
        v = v << 4 | (unsigned)h;
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* A JSON string, decoded to UTF-8 in a new buffer (*out == NULL to only skip it). */
static int parse_string(parser *p, char **out) {
    if (peek(p) != '"') return perr(p, "expected a string");
    size_t start = ++p->i, cap = 0, len = 0;
    char *buf = NULL;
    if (out) {
        /* the decoded text is never longer than the raw text up to the closing quote */
        size_t j = start;
        while (j < p->n && p->s[j] != '"') j += p->s[j] == '\\' ? 2 : 1;
        cap = (j < p->n ? j : p->n) - start + 1;
        buf = malloc(cap);
        if (!buf) return perr(p, "out of memory");
    }
    for (;;) {
        if (p->i >= p->n) {
            free(buf);
            return perr(p, "a string is not closed");
        }
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c == '"') break;
        if (c < 0x20) {
            free(buf);
            return perr(p, "a string holds a raw control character");
        }
        unsigned cp = c;
        char enc[4];
        int elen = 1;
        enc[0] = (char)c;
        if (c == '\\') {
            if (p->i >= p->n) {
                free(buf);
                return perr(p, "a string is not closed");
            }
            char e = p->s[p->i++];
            switch (e) {
            case '"': case '\\': case '/': enc[0] = e; break;
            case 'b': enc[0] = '\b'; break;
            case 'f': enc[0] = '\f'; break;
            case 'n': enc[0] = '\n'; break;
            case 'r': enc[0] = '\r'; break;
            case 't': enc[0] = '\t'; break;
            case 'u':
                if (read_hex4(p, &cp)) {
                    free(buf);
                    return -1;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                    unsigned lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        free(buf);
                        return perr(p, "a string has an unpaired surrogate");
                    }
                    p->i += 2;
                    if (read_hex4(p, &lo)) {
                        free(buf);
                        return -1;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        free(buf);
                        return perr(p, "a string has an unpaired surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(buf);
                    return perr(p, "a string has an unpaired surrogate");
                }
                if (cp == 0) {
                    free(buf);
                    return perr(p, "a string holds a NUL character");
                }
                if (cp < 0x80) enc[0] = (char)cp;
                else if (cp < 0x800) {
                    enc[0] = (char)(0xC0 | cp >> 6), enc[1] = (char)(0x80 | (cp & 0x3F)), elen = 2;
                } else if (cp < 0x10000) {
                    enc[0] = (char)(0xE0 | cp >> 12), enc[1] = (char)(0x80 | (cp >> 6 & 0x3F));
                    enc[2] = (char)(0x80 | (cp & 0x3F)), elen = 3;
                } else {
                    enc[0] = (char)(0xF0 | cp >> 18), enc[1] = (char)(0x80 | (cp >> 12 & 0x3F));
                    enc[2] = (char)(0x80 | (cp >> 6 & 0x3F)), enc[3] = (char)(0x80 | (cp & 0x3F)), elen = 4;
                }
                break;
            default:
                free(buf);
                return perr(p, "a string has an invalid escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
            }
        }
        if (buf) {
            if (len + (size_t)elen >= cap) { /* cannot happen (see above), but never write past buf */
                free(buf);
                return perr(p, "internal: string buffer too small");
            }
            memcpy(buf + len, enc, (size_t)elen);
            len += (size_t)elen;
        }
    }
    if (out) {
        buf[len] = 0;
        *out = buf;
    }
    return 0;
}

/* A non-negative JSON integer, exactly (what names the value in messages). */
static int parse_uint(parser *p, uint64_t *out, const char *what) {
    int c = peek(p);
    if (c == '-') return perr(p, "%s is negative", what);
    if (c < '0' || c > '9') return perr(p, "%s is not a number", what);
    uint64_t v = 0;
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i] - '0');
        if (v > (UINT64_MAX - d) / 10) return perr(p, "%s does not fit in 64 bits", what);
        v = v * 10 + d;
        p->i++;
    }
    if (p->i - start > 1 && p->s[start] == '0') return perr(p, "%s has a leading zero", what);
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return perr(p, "%s is not an integer", what);
    *out = v;
    return 0;
}

/* Skips any JSON value (unknown fields of an entry, as other readers ignore them). */
static int skip_value(parser *p, int depth) {
    if (depth > MAX_DEPTH) return perr(p, "values nested more than %d deep", MAX_DEPTH);
    int c = peek(p);
    if (c == '"') return parse_string(p, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p->i++;
        if (peek(p) == close) {
            p->i++;
            return 0;
        }
        for (;;) {
            if (c == '{' && (parse_string(p, NULL) || expect(p, ':', "an object"))) return -1;
            if (skip_value(p, depth + 1)) return -1;
            int d = peek(p);
            p->i++;
            if (d == close) return 0;
            if (d != ',') return perr(p, "expected ',' or '%c'", close);
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(words[k]);
        if (p->n - p->i >= l && !memcmp(p->s + p->i, words[k], l)) {
            p->i += l;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        size_t start = p->i;
        while (p->i < p->n && strchr("+-.eE0123456789", p->s[p->i])) p->i++;
        return p->i > start ? 0 : perr(p, "invalid number");
    }
    return perr(p, "expected a JSON value");
}

/* Parses `{"k": v, ...}`, calling member(p, key, ud) with the parser at each value. */
static int parse_object(parser *p, const char *where, int (*member)(parser *, const char *, void *), void *ud) {
    if (expect(p, '{', where)) return -1;
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        char *key;
        if (parse_string(p, &key)) return -1;
        int rc = expect(p, ':', where);
        if (!rc) rc = member(p, key, ud);
        free(key);
        if (rc) return -1;
        int c = peek(p);
        if (c == '}') {
            p->i++;
            return 0;
        }
        if (c != ',') return c < 0 ? perr(p, "the header ends inside %s", where) : perr(p, "expected ',' or '}' in %s", where);
        p->i++;
    }
}

typedef struct {
    st_entry *e;
    bool dtype, shape, offsets;
} entry_fields;

static int entry_member(parser *p, const char *key, void *ud) {
    entry_fields *w = ud;
    st_entry *e = w->e;
    if (!strcmp(key, "dtype")) {
        if (w->dtype) return perr(p, "entry '%.*s' has two dtypes", NAME_SHOWN, e->name);
        w->dtype = true;
        char *s;
        if (peek(p) != '"') return perr(p, "entry '%.*s': dtype is not a string", NAME_SHOWN, e->name);
        if (parse_string(p, &s)) return -1;
        e->dtype = parse_dtype(s);
        if (e->dtype == D_BAD) {
            perr(p, "entry '%.*s' has unsupported dtype %.20s (known: F32 F64 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                 NAME_SHOWN, e->name, s);
            free(s);
            return -1;
        }
        free(s);
        return 0;
    }
    if (!strcmp(key, "shape") || !strcmp(key, "data_offsets")) {
        bool is_shape = key[0] == 's';
        if (is_shape ? w->shape : w->offsets) return perr(p, "entry '%.*s' has two %ss", NAME_SHOWN, e->name, key);
        if (is_shape) w->shape = true;
        else w->offsets = true;
        if (expect(p, '[', key)) return -1;
        int count = 0, max = is_shape ? ML_MAX_DIMS : 2;
        if (peek(p) == ']') p->i++;
        else
            for (;;) {
                uint64_t v = 0;
                if (count == max) {
                    if (is_shape)
                        return perr(p, "entry '%.*s' has more than %d dimensions", NAME_SHOWN, e->name, ML_MAX_DIMS);
                    return perr(p, "entry '%.*s': data_offsets has more than two numbers", NAME_SHOWN, e->name);
                }
                if (parse_uint(p, &v, is_shape ? "a dimension" : "an offset")) return -1;
                if (is_shape) {
                    if (v > (uint64_t)INT64_MAX) return perr(p, "entry '%.*s' has a dimension too large", NAME_SHOWN, e->name);
                    e->shape[count] = (int64_t)v;
                } else if (count == 0) {
                    e->begin = v;
                } else {
                    e->end = v;
                }
                count++;
                int c = peek(p);
                p->i++;
                if (c == ']') break;
                if (c != ',') return perr(p, "expected ',' or ']' in %s", key);
            }
        if (is_shape) e->ndim = count;
        else if (count != 2) return perr(p, "entry '%.*s': data_offsets needs two numbers", NAME_SHOWN, e->name);
        return 0;
    }
    return skip_value(p, 1);
}

static int meta_member(parser *p, const char *key, void *ud) {
    ml_st_file *f = p->f;
    if (peek(p) != '"') return perr(p, "metadata value '%.*s' is not a string", NAME_SHOWN, key);
    if (f->n_meta == f->cap_meta) {
        int cap = f->cap_meta ? 2 * f->cap_meta : 8;
        char **k = realloc(f->meta_keys, sizeof *k * (size_t)cap);
        if (k) f->meta_keys = k;
        char **v = realloc(f->meta_values, sizeof *v * (size_t)cap);
        if (v) f->meta_values = v;
        if (!k || !v) return perr(p, "out of memory");
        f->cap_meta = cap;
    }
    for (int i = 0; i < f->n_meta; i++) /* few keys: a linear check is fine */
        if (!strcmp(f->meta_keys[i], key)) return perr(p, "metadata key '%.*s' appears twice", NAME_SHOWN, key);
    char *value, *k = strdup(key);
    if (!k) return perr(p, "out of memory");
    if (parse_string(p, &value)) {
        free(k);
        return -1;
    }
    f->meta_keys[f->n_meta] = k;
    f->meta_values[f->n_meta++] = value;
    return 0;
}

static int top_member(parser *p, const char *key, void *ud) {
    ml_st_file *f = p->f;
    if (!strcmp(key, "__metadata__")) {
        if (f->has_meta) return perr(p, "__metadata__ appears twice");
        f->has_meta = true;
        return parse_object(p, "__metadata__", meta_member, NULL);
    }
    if (!key[0]) return perr(p, "a tensor has an empty name");
    if (f->n % 4096 == 0 && ml_interrupted()) return -1;
    if (f->n == f->cap) {
        if (f->cap > INT32_MAX / 2) return perr(p, "too many tensors");
        int cap = f->cap ? 2 * f->cap : 16;
        st_entry *e = realloc(f->entries, sizeof *e * (size_t)cap);
        if (!e) return perr(p, "out of memory");
        f->entries = e;
        f->cap = cap;
    }
    st_entry *e = &f->entries[f->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(key);
    if (!e->name) return perr(p, "out of memory");
    f->n++;
    entry_fields w = {e, false, false, false};
    if (peek(p) != '{') return perr(p, "entry '%.*s' is not an object", NAME_SHOWN, key);
    if (parse_object(p, "a tensor entry", entry_member, &w)) return -1;
    if (!w.dtype || !w.shape || !w.offsets)
        return perr(p, "entry '%.*s' lacks %s", NAME_SHOWN, key, !w.dtype ? "dtype" : !w.shape ? "shape" : "data_offsets");
    return 0;
}

/* ------------------------------------------------------------ checks after parsing */
static int cmp_name(const void *a, const void *b, void *ud) {
    const st_entry *e = ud;
    return strcmp(e[*(const int *)a].name, e[*(const int *)b].name);
}

static int cmp_begin(const void *a, const void *b, void *ud) {
    const st_entry *e = ud, *x = &e[*(const int *)a], *y = &e[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Each entry's size agrees with its shape, and the entries tile the data
 * exactly: no overlap, no gap, nothing after the last one (as the reference
 * implementation requires). A header length that points into the padding or
 * into the data shifts everything and fails here. */
static int check_layout(ml_st_file *f) {
    const char *path = f->path;
    for (int i = 0; i < f->n; i++) {
        st_entry *e = &f->entries[i];
        uint64_t numel = 1, bytes;
        for (int d = 0; d < e->ndim; d++)
            if (__builtin_mul_overflow(numel, (uint64_t)e->shape[d], &numel) || numel > (uint64_t)INT64_MAX)
                return ml_failc("safetensors: %s: entry '%.*s' has a shape whose size overflows", path, NAME_SHOWN,
                                e->name);
        if (__builtin_mul_overflow(numel, (uint64_t)dtype_sizes[e->dtype], &bytes))
            return ml_failc("safetensors: %s: entry '%.*s' has a shape whose size overflows", path, NAME_SHOWN, e->name);
        if (e->end < e->begin)
            return ml_failc("safetensors: %s: entry '%.*s' ends (byte %" PRIu64 ") before it begins (byte %" PRIu64 ")",
                            path, NAME_SHOWN, e->name, e->end, e->begin);
        if (e->end > f->data_len)
            return ml_failc("safetensors: %s: truncated (entry '%.*s' ends at byte %" PRIu64
                            " of the data, the file has %" PRIu64 ")",
                            path, NAME_SHOWN, e->name, e->end, f->data_len);
        if (e->end - e->begin != bytes)
            return ml_failc("safetensors: %s: entry '%.*s' has %" PRIu64 " bytes for %" PRIu64 " elements of %s", path,
                            NAME_SHOWN, e->name, e->end - e->begin, numel, dtype_names[e->dtype]);
    }
    int *order = malloc(sizeof *order * (f->n > 0 ? (size_t)f->n : 1));
    if (!order) return ml_failc("safetensors: %s: out of memory", path);
    for (int i = 0; i < f->n; i++) order[i] = i;
    qsort_r(order, (size_t)f->n, sizeof *order, cmp_begin, f->entries);
    uint64_t at = 0;
    int rc = 0;
    for (int k = 0; k < f->n && !rc; k++) {
        const st_entry *e = &f->entries[order[k]];
        if (e->begin < at)
            rc = ml_failc("safetensors: %s: entries '%.*s' and '%.*s' overlap", path, NAME_SHOWN,
                          f->entries[order[k - 1]].name, NAME_SHOWN, e->name);
        else if (e->begin > at)
            rc = ml_failc("safetensors: %s: bytes %" PRIu64 "..%" PRIu64 " of the data belong to no tensor (before '%.*s')",
                          path, at, e->begin, NAME_SHOWN, e->name);
        else at = e->end;
    }
    if (!rc && at != f->data_len)
        rc = ml_failc("safetensors: %s: %" PRIu64 " bytes after the last tensor belong to no tensor (wrong header length?)",
                      path, f->data_len - at);
    if (!rc) { /* the name index, which also finds duplicates */
        qsort_r(order, (size_t)f->n, sizeof *order, cmp_name, f->entries);
        for (int k = 1; k < f->n && !rc; k++)
            if (!strcmp(f->entries[order[k]].name, f->entries[order[k - 1]].name))
                rc = ml_failc("safetensors: %s: tensor '%.*s' appears twice", path, NAME_SHOWN, f->entries[order[k]].name);
    }
    if (rc) {
        free(order);
        return -1;
    }
    f->by_name = order;
    return 0;
}

/* ------------------------------------------------------------ opening */
/* Opens path and reads the 8-byte length and the header text (malloc'd,
 * NUL-terminated). *fsize gets the file size. fp stays open at the data. */
static char *read_header(const char *path, FILE **fpo, uint64_t *hlen_out, uint64_t *fsize) {
    *fpo = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ml_fail("safetensors: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return ml_fail("safetensors: %s is not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8 || fread(lenbuf, 1, 8, fp) != 8) {
        fclose(fp);
        return ml_fail("safetensors: %s: file is %" PRIu64 " bytes, too short to hold the 8-byte header length", path,
                       size);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbuf[i];
    if (hlen > ML_ST_MAX_HEADER) {
        fclose(fp);
        return ml_fail("safetensors: %s: header length %" PRIu64 " is over the %" PRIu64
                       "-byte limit (corrupt file?)", path, hlen, (uint64_t)ML_ST_MAX_HEADER);
    }
    if (hlen > size - 8) {
        fclose(fp);
        return ml_fail("safetensors: %s: truncated (header says %" PRIu64 " bytes of JSON, file has %" PRIu64
                       " bytes after the length)", path, hlen, size - 8);
    }
    char *header = malloc(hlen + 1);
    if (!header) {
        fclose(fp);
        return ml_fail("safetensors: %s: out of memory for a %" PRIu64 "-byte header", path, hlen);
    }
    if (fread(header, 1, hlen, fp) != hlen) {
        free(header);
        fclose(fp);
        return ml_fail("safetensors: %s: cannot read the header", path);
    }
    header[hlen] = 0;
    *fpo = fp;
    *hlen_out = hlen;
    *fsize = size;
    return header;
}

char *ml_st_read_header(const char *path, uint64_t *len) {
    FILE *fp;
    uint64_t size = 0;
    *len = 0;
    char *h = read_header(path, &fp, len, &size);
    if (fp) fclose(fp);
    return h;
}

ml_st_file *ml_st_open(const char *path) {
    FILE *fp;
    uint64_t hlen = 0, fsize = 0;
    char *header = read_header(path, &fp, &hlen, &fsize);
    if (!header) return NULL;
    ml_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        free(header);
        fclose(fp);
        return ml_fail("safetensors: out of memory opening %s", path);
    }
    f->data_len = fsize - 8 - hlen;
    parser p = {header, hlen, 0, f};
    int rc;
    if (peek(&p) != '{') rc = perr(&p, "the header is not a JSON object (corrupt file?)");
    else rc = parse_object(&p, "the header", top_member, NULL);
    if (!rc && peek(&p) >= 0) rc = perr(&p, "unexpected text after the header's JSON object");
    free(header);
    if (!rc) rc = check_layout(f);
    if (!rc && f->data_len) {
        f->data = malloc(f->data_len);
        if (!f->data)
            rc = ml_failc("safetensors: %s: out of memory for %" PRIu64 " bytes of tensor data", path, f->data_len);
        else if (fread(f->data, 1, f->data_len, fp) != f->data_len)
            rc = ml_failc("safetensors: %s: cannot read the tensor data (file changed while reading?)", path);
    }
    fclose(fp);
    if (rc) {
        ml_st_close(f);
        return NULL;
    }
    return f;
}

/* ------------------------------------------------------------ queries */
const char *ml_st_path(const ml_st_file *f) { return f->path; }
int ml_st_count(const ml_st_file *f) { return f->n; }
const char *ml_st_name(const ml_st_file *f, int i) { return i >= 0 && i < f->n ? f->entries[i].name : NULL; }
int ml_st_meta_count(const ml_st_file *f) { return f->n_meta; }
const char *ml_st_meta_key(const ml_st_file *f, int i) { return i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL; }

const char *ml_st_meta_get(const ml_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

int ml_st_find(const ml_st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->entries[f->by_name[mid]].name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

const char *ml_st_dtype(const ml_st_file *f, int i) { return i >= 0 && i < f->n ? dtype_names[f->entries[i].dtype] : NULL; }

int ml_st_shape(const ml_st_file *f, int i, ml_dtype *loaded_as, int64_t *shape) {
    if (i < 0 || i >= f->n) return -1;
    const st_entry *e = &f->entries[i];
    if (loaded_as) *loaded_as = e->dtype <= D_BF16 ? ML_F32 : ML_I64;
    if (shape) memcpy(shape, e->shape, sizeof *shape * (size_t)e->ndim);
    return e->ndim;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal */
            float v = (float)man / 1024.0f / 16384.0f;
            return sign ? -v : v;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

ml_tensor *ml_st_get_at(const ml_st_file *f, int i) {
    if (i < 0 || i >= f->n) return ml_fail("safetensors: %s has no tensor %d (it has %d)", f->path, i + 1, f->n);
    const st_entry *e = &f->entries[i];
    bool is_float = e->dtype <= D_BF16;
    ml_tensor *t = ml_empty(is_float ? ML_F32 : ML_I64, e->ndim, e->shape);
    if (!t) return NULL;
    const unsigned char *p = f->data + e->begin;
    int64_t n = ml_numel(t);
    /* The format is little-endian, as is every machine this builds on (x86-64, aarch64). */
    if (e->dtype == D_F32 || e->dtype == D_I64) {
        if (n) memcpy(is_float ? (void *)ml_f32(t) : (void *)ml_i64(t), p, (size_t)(e->end - e->begin));
        return t;
    }
    for (int64_t k = 0; k < n; k++) {
        const unsigned char *q = p + k * dtype_sizes[e->dtype];
        switch (e->dtype) {
        case D_F64: { double v; memcpy(&v, q, 8); ml_f32(t)[k] = (float)v; break; }
        case D_F16: { uint16_t h; memcpy(&h, q, 2); ml_f32(t)[k] = half_to_float(h); break; }
        case D_BF16: { uint32_t b = (uint32_t)q[0] << 16 | (uint32_t)q[1] << 24; float v; memcpy(&v, &b, 4); ml_f32(t)[k] = v; break; }
        case D_I32: { int32_t v; memcpy(&v, q, 4); ml_i64(t)[k] = v; break; }
        case D_I16: { int16_t v; memcpy(&v, q, 2); ml_i64(t)[k] = v; break; }
        case D_I8: ml_i64(t)[k] = (int8_t)q[0]; break;
        case D_U8: case D_BOOL: ml_i64(t)[k] = q[0]; break;
        default: break;
        }
    }
    return t;
}

ml_tensor *ml_st_get(const ml_st_file *f, const char *name) {
    int i = ml_st_find(f, name);
    if (i < 0) return ml_fail("safetensors: %s has no tensor named '%.*s'", f->path, NAME_SHOWN, name);
    return ml_st_get_at(f, i);
}

/* ------------------------------------------------------------ writing */
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int check_names(const char *what, int n, const char *const *names) {
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0]) return ml_failc("safetensors: %s %d has an empty name", what, i + 1);
        if (!strcmp(names[i], "__metadata__")) return ml_failc("safetensors: '__metadata__' cannot name a %s", what);
    }
    /* sorted copy: duplicates are neighbours (n log n, for large state dicts) */
    const char **sorted = malloc(sizeof *sorted * (n > 0 ? (size_t)n : 1));
    if (!sorted) return ml_failc("safetensors: out of memory");
    if (n > 0) memcpy(sorted, names, sizeof *sorted * (size_t)n); /* names may be NULL when n = 0 */
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    int rc = 0;
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(sorted[i], sorted[i - 1])) rc = ml_failc("safetensors: duplicate %s name '%.*s'", what, NAME_SHOWN, sorted[i]);
    free(sorted);
    return rc;
}

int ml_st_save(const char *path, int n, const char *const *names, ml_tensor *const *tensors, int n_meta,
               const char *const *meta_keys, const char *const *meta_values) {
    if (n < 0 || n_meta < 0) return ml_failc("safetensors: negative count (%d tensors, %d metadata)", n, n_meta);
    if (check_names("tensor", n, names) || check_names("metadata key", n_meta, meta_keys)) return -1;
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return ml_failc("safetensors: tensor '%.*s' is missing", NAME_SHOWN, names[i]);
    for (int i = 0; i < n_meta; i++)
        if (!meta_values[i]) return ml_failc("safetensors: metadata '%.*s' has no value", NAME_SHOWN, meta_keys[i]);
    cJSON *root = cJSON_CreateObject();
    if (!root) return ml_failc("safetensors: out of memory");
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < n_meta; i++) cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const ml_tensor *t = tensors[i];
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON_AddStringToObject(e, "dtype", t->dtype == ML_F32 ? "F32" : "I64");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        uint64_t bytes = (uint64_t)ml_numel(t) * ml_dtype_size(t->dtype);
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return ml_failc("safetensors: out of memory");
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8; /* pad with spaces to 8-byte alignment */
    ml_atomic_file a;
    FILE *fp = ml_atomic_begin(&a, path, "safetensors");
    if (!fp) {
        free(json);
        return -1;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(json, 1, jlen, fp) == jlen;
    for (size_t i = jlen; i < padded && ok; i++) ok = fputc(' ', fp) != EOF;
    free(json);
    for (int i = 0; i < n && ok; i++) {
        if (i % 64 == 0 && ml_interrupted()) {
            ml_atomic_abort(&a);
            return -1;
        }
        ml_tensor *c = ml_contiguous(tensors[i]);
        if (!c) {
            ml_atomic_abort(&a);
            return -1;
        }
        size_t bytes = (size_t)ml_numel(c) * ml_dtype_size(c->dtype);
        const void *src = c->dtype == ML_F32 ? (const void *)ml_f32(c) : (const void *)ml_i64(c);
        ok = fwrite(src, 1, bytes, fp) == bytes;
        ml_release(c);
    }
    if (!ok) {
        ml_failc("safetensors: writing %s failed: %s", path, strerror(errno ? errno : EIO));
        ml_atomic_abort(&a);
        return -1;
    }
    return ml_atomic_commit(&a);
}
