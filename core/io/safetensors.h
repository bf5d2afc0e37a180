/* safetensors.h -- read and write the safetensors format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the raw little-endian tensor bytes (offsets relative to the end of the
 * header). Files written here open in other safetensors readers.
 *
 * Reading refuses, with the file name and the reason, anything that is not
 * exactly such a file: a header length past the end or over 100 MB, a header
 * that is not one JSON object (or has text after it), duplicate tensor names,
 * a second __metadata__, unknown dtypes, more than ML_MAX_DIMS dimensions, a
 * shape whose size overflows, offsets that do not match the shape, and tensors
 * that do not tile the data exactly (an overlap, a gap, or bytes after the last
 * one: what a header length pointing into the padding produces). It never reads
 * out of bounds on any bytes (fuzzed: tests/fuzz/fuzz_safetensors.c), its memory
 * is the file plus a small record per tensor, and finding a tensor by name is a
 * binary search. Writing is atomic (atomic.h). */
#ifndef ML_IO_SAFETENSORS_H
#define ML_IO_SAFETENSORS_H

#include "../tensor.h"

typedef struct ml_st_file ml_st_file;

#define ML_ST_MAX_HEADER ((uint64_t)100 << 20) /* as the reference implementation: 100 MB */

/* Reads and validates the whole file. NULL + error on failure. */
ml_st_file *ml_st_open(const char *path);
void ml_st_close(ml_st_file *f);
const char *ml_st_path(const ml_st_file *f);
int ml_st_count(const ml_st_file *f);
const char *ml_st_name(const ml_st_file *f, int i); /* in file order */
/* Index of a tensor by name, or -1 (a binary search). */
int ml_st_find(const ml_st_file *f, const char *name);
/* Entry i's dtype as written ("F32", "I32", ...), and its rank (returned, -1
 * for a bad i), shape and the dtype ml_st_get gives it (loaded_as may be NULL). */
const char *ml_st_dtype(const ml_st_file *f, int i);
int ml_st_shape(const ml_st_file *f, int i, ml_dtype *loaded_as, int64_t *shape);
/* The tensor as a new float32 or int64 tensor (F32/F64/F16/BF16 -> float32;
 * I64/I32/I16/I8/U8/BOOL -> int64). NULL + error if missing. */
ml_tensor *ml_st_get(const ml_st_file *f, const char *name);
ml_tensor *ml_st_get_at(const ml_st_file *f, int i);
/* Metadata: number of entries, and key/value by position or by key (NULL if absent). */
int ml_st_meta_count(const ml_st_file *f);
const char *ml_st_meta_key(const ml_st_file *f, int i);
const char *ml_st_meta_get(const ml_st_file *f, const char *key);

/* The raw JSON header of a file (malloc'd, NUL-terminated, for inspection);
 * *len gets its length. Only the length is checked. NULL + error. */
char *ml_st_read_header(const char *path, uint64_t *len);

/* Writes n tensors (float32 as F32, int64 as I64) and optional string metadata,
 * atomically. Names (and metadata keys) must be unique and non-empty. */
int ml_st_save(const char *path, int n, const char *const *names, ml_tensor *const *tensors, int n_meta,
               const char *const *meta_keys, const char *const *meta_values);

#endif
