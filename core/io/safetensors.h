/* safetensors.h -- read and write the safetensors format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * then the raw little-endian tensor bytes (offsets relative to the end of the
 * header). Files written here open in other safetensors readers.
 *
 * Reading validates everything (header length, JSON, dtypes, shapes, offsets
 * inside the file and consistent with the shapes) and refuses a truncated or
 * corrupt file with its name and the reason. Writing goes to a temporary file
 * in the same directory, is flushed and fsync'ed, then renamed over the target,
 * so a reader never sees a half-written file. */
#ifndef ML_IO_SAFETENSORS_H
#define ML_IO_SAFETENSORS_H

#include "../tensor.h"

typedef struct ml_st_file ml_st_file;

/* Reads and validates the whole file. NULL + error on failure. */
ml_st_file *ml_st_open(const char *path);
void ml_st_close(ml_st_file *f);
int ml_st_count(const ml_st_file *f);
const char *ml_st_name(const ml_st_file *f, int i); /* in file order */
/* Index of a tensor by name, or -1. */
int ml_st_find(const ml_st_file *f, const char *name);
/* The tensor as a new float32 or int64 tensor (F32/F64/F16/BF16 -> float32;
 * I64/I32/I16/I8/U8/BOOL -> int64). NULL + error if missing. */
ml_tensor *ml_st_get(const ml_st_file *f, const char *name);
/* Metadata: number of entries, and key/value by position or by key (NULL if absent). */
int ml_st_meta_count(const ml_st_file *f);
const char *ml_st_meta_key(const ml_st_file *f, int i);
const char *ml_st_meta_get(const ml_st_file *f, const char *key);

/* Writes n tensors (float32 as F32, int64 as I64) and optional string metadata,
 * atomically. Names must be unique and non-empty. */
int ml_st_save(const char *path, int n, const char *const *names, ml_tensor *const *tensors, int n_meta,
               const char *const *meta_keys, const char *const *meta_values);

#endif
