/* safetensors.c -- see safetensors.h. JSON through Debian's libcjson. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEADER ((uint64_t)100 << 20) /* as the reference implementation: 100 MB */

typedef enum { D_F32, D_F64, D_F16, D_BF16, D_I64, D_I32, D_I16, D_I8, D_U8, D_BOOL, D_BAD } st_dtype;
static const char *const dtype_names[] = {"F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const int dtype_sizes[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};

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
    int n;
    st_entry *entries;
    int n_meta;
    char **meta_keys, **meta_values;
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
    free(f->data);
    free(f->path);
    free(f);
}

static int cmp_begin(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

ml_st_file *ml_st_open(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ml_fail("safetensors: cannot open %s: %s", path, strerror(errno));
    ml_st_file *f = calloc(1, sizeof *f);
    cJSON *root = NULL;
    char *header = NULL;
    if (!f) {
        fclose(fp);
        return ml_fail("out of memory");
    }
    f->path = strdup(path);
#define BAD(...)                \
    do {                        \
        ml_fail(__VA_ARGS__);   \
        goto fail;              \
    } while (0)
    if (fseek(fp, 0, SEEK_END) != 0) BAD("safetensors: %s: cannot seek: %s", path, strerror(errno));
    long fsize = ftell(fp);
    rewind(fp);
    if (fsize < 8) BAD("safetensors: %s: file is %ld bytes, too short to hold the 8-byte header length", path, fsize);
    unsigned char lenbuf[8];
    if (fread(lenbuf, 1, 8, fp) != 8) BAD("safetensors: %s: cannot read the header length", path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbuf[i];
    if (hlen > MAX_HEADER) BAD("safetensors: %s: header length %" PRIu64 " is implausible (corrupt file?)", path, hlen);
    if (hlen > (uint64_t)fsize - 8)
        BAD("safetensors: %s: truncated (header says %" PRIu64 " bytes of JSON, file has %ld bytes after the length)",
            path, hlen, fsize - 8);
    header = malloc(hlen + 1);
    if (!header || fread(header, 1, hlen, fp) != hlen) BAD("safetensors: %s: cannot read the header", path);
    header[hlen] = 0;
    f->data_len = (uint64_t)fsize - 8 - hlen;
    f->data = malloc(f->data_len ? f->data_len : 1);
    if (!f->data) BAD("safetensors: %s: out of memory for %" PRIu64 " bytes", path, f->data_len);
    if (f->data_len && fread(f->data, 1, f->data_len, fp) != f->data_len)
        BAD("safetensors: %s: cannot read the tensor data", path);
    fclose(fp);
    fp = NULL;

    root = cJSON_ParseWithLength(header, hlen);
    if (!root || !cJSON_IsObject(root)) BAD("safetensors: %s: the header is not a JSON object (corrupt file?)", path);
    int count = 0;
    for (cJSON *it = root->child; it; it = it->next) count += strcmp(it->string, "__metadata__") != 0;
    f->entries = calloc((size_t)(count ? count : 1), sizeof *f->entries);
    if (!f->entries) BAD("out of memory");
    for (cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) BAD("safetensors: %s: __metadata__ is not an object", path);
            int m = cJSON_GetArraySize(it);
            f->meta_keys = calloc((size_t)(m ? m : 1), sizeof *f->meta_keys);
            f->meta_values = calloc((size_t)(m ? m : 1), sizeof *f->meta_values);
            for (cJSON *kv = it->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) BAD("safetensors: %s: metadata value '%s' is not a string", path, kv->string);
                f->meta_keys[f->n_meta] = strdup(kv->string);
                f->meta_values[f->n_meta++] = strdup(kv->valuestring);
            }
            continue;
        }
        st_entry *e = &f->entries[f->n];
        e->name = strdup(it->string);
        f->n++;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
            BAD("safetensors: %s: entry '%s' lacks dtype, shape or data_offsets", path, e->name);
        e->dtype = parse_dtype(dt->valuestring);
        if (e->dtype == D_BAD) BAD("safetensors: %s: entry '%s' has unsupported dtype %s", path, e->name, dt->valuestring);
        e->ndim = cJSON_GetArraySize(sh);
        if (e->ndim > ML_MAX_DIMS)
            BAD("safetensors: %s: entry '%s' has %d dimensions (at most %d supported)", path, e->name, e->ndim, ML_MAX_DIMS);
        uint64_t numel = 1;
        int d = 0;
        for (cJSON *s = sh->child; s; s = s->next, d++) {
            if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble != floor(s->valuedouble) || s->valuedouble > 1e15)
                BAD("safetensors: %s: entry '%s' has an invalid shape", path, e->name);
            e->shape[d] = (int64_t)s->valuedouble;
            numel *= (uint64_t)e->shape[d];
        }
        double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (!(b >= 0 && en >= b && b == floor(b) && en == floor(en)))
            BAD("safetensors: %s: entry '%s' has invalid data_offsets", path, e->name);
        e->begin = (uint64_t)b;
        e->end = (uint64_t)en;
        if (e->end > f->data_len)
            BAD("safetensors: %s: truncated (entry '%s' ends at byte %" PRIu64 " of the data, the file has %" PRIu64 ")",
                path, e->name, e->end, f->data_len);
        if (e->end - e->begin != numel * (uint64_t)dtype_sizes[e->dtype])
            BAD("safetensors: %s: entry '%s' has %" PRIu64 " bytes for %" PRIu64 " elements of %s", path, e->name,
                e->end - e->begin, numel, dtype_names[e->dtype]);
    }
    /* Entries must not overlap. */
    if (f->n > 1) {
        st_entry **by = malloc(sizeof *by * (size_t)f->n);
        if (!by) BAD("out of memory");
        for (int i = 0; i < f->n; i++) by[i] = &f->entries[i];
        qsort(by, (size_t)f->n, sizeof *by, cmp_begin);
        for (int i = 1; i < f->n; i++)
            if (by[i]->begin < by[i - 1]->end && by[i]->end > by[i]->begin) {
                ml_fail("safetensors: %s: entries '%s' and '%s' overlap", path, by[i - 1]->name, by[i]->name);
                free(by);
                goto fail;
            }
        free(by);
    }
    cJSON_Delete(root);
    free(header);
    return f;
fail:
    if (fp) fclose(fp);
    cJSON_Delete(root);
    free(header);
    ml_st_close(f);
    return NULL;
#undef BAD
}

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
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->entries[i].name, name)) return i;
    return -1;
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

ml_tensor *ml_st_get(const ml_st_file *f, const char *name) {
    int i = ml_st_find(f, name);
    if (i < 0) return ml_fail("safetensors: %s has no tensor named '%s'", f->path, name);
    const st_entry *e = &f->entries[i];
    bool is_float = e->dtype <= D_BF16;
    ml_tensor *t = ml_empty(is_float ? ML_F32 : ML_I64, e->ndim, e->shape);
    if (!t) return NULL;
    const unsigned char *p = f->data + e->begin;
    int64_t n = ml_numel(t);
    /* The format is little-endian, as is every machine this builds on (x86-64, aarch64). */
    for (int64_t k = 0; k < n; k++) {
        const unsigned char *q = p + k * dtype_sizes[e->dtype];
        switch (e->dtype) {
        case D_F32: memcpy(ml_f32(t) + k, q, 4); break;
        case D_F64: { double v; memcpy(&v, q, 8); ml_f32(t)[k] = (float)v; break; }
        case D_F16: { uint16_t h; memcpy(&h, q, 2); ml_f32(t)[k] = half_to_float(h); break; }
        case D_BF16: { uint32_t b = (uint32_t)q[0] << 16 | (uint32_t)q[1] << 24; float v; memcpy(&v, &b, 4); ml_f32(t)[k] = v; break; }
        case D_I64: memcpy(ml_i64(t) + k, q, 8); break;
        case D_I32: { int32_t v; memcpy(&v, q, 4); ml_i64(t)[k] = v; break; }
        case D_I16: { int16_t v; memcpy(&v, q, 2); ml_i64(t)[k] = v; break; }
        case D_I8: ml_i64(t)[k] = (int8_t)q[0]; break;
        case D_U8: case D_BOOL: ml_i64(t)[k] = q[0]; break;
        default: break;
        }
    }
    return t;
}

/* ------------------------------------------------------------ writing */
int ml_st_save(const char *path, int n, const char *const *names, ml_tensor *const *tensors, int n_meta,
               const char *const *meta_keys, const char *const *meta_values) {
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0]) return ml_failc("safetensors: tensor %d has an empty name", i + 1);
        if (!strcmp(names[i], "__metadata__")) return ml_failc("safetensors: '__metadata__' cannot name a tensor");
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) return ml_failc("safetensors: duplicate tensor name '%s'", names[i]);
    }
    cJSON *root = cJSON_CreateObject();
    if (!root) return ml_failc("out of memory");
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
    if (!json) return ml_failc("out of memory");
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8; /* pad with spaces to 8-byte alignment */

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(json);
        return ml_failc("out of memory");
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        ml_failc("safetensors: cannot write %s: %s", tmp, strerror(errno));
        free(json);
        free(tmp);
        return -1;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(json, 1, jlen, fp) == jlen;
    for (size_t i = jlen; i < padded && ok; i++) ok = fputc(' ', fp) != EOF;
    free(json);
    for (int i = 0; i < n && ok; i++) {
        ml_tensor *c = ml_contiguous(tensors[i]);
        if (!c) {
            ok = false;
            break;
        }
        size_t bytes = (size_t)ml_numel(c) * ml_dtype_size(c->dtype);
        const void *src = c->dtype == ML_F32 ? (const void *)ml_f32(c) : (const void *)ml_i64(c);
        ok = fwrite(src, 1, bytes, fp) == bytes;
        ml_release(c);
    }
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int err = errno;
    ok = (fclose(fp) == 0) && ok;
    if (!ok) {
        remove(tmp);
        free(tmp);
        return ml_failc("safetensors: writing %s failed: %s", path, strerror(err ? err : EIO));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        free(tmp);
        return ml_failc("safetensors: cannot rename the finished file onto %s: %s", path, strerror(err));
    }
    free(tmp);
    return 0;
}
