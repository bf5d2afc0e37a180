/* trace_file.h -- routing traces (core/nn/trace.h) in safetensors files.
 * It lives in core/io, above core/nn: files know models, models know no files. */
#ifndef ML_IO_TRACE_FILE_H
#define ML_IO_TRACE_FILE_H

#include "../nn/trace.h"

/* A trace in a safetensors file: tensors "<prefix><i>.experts" (0-based ids),
 * ".kept", ".gates", ".probs", ".logits" for layer i, and the layers' names,
 * kinds, sizes and auxiliary values as JSON in the metadata entry
 * "<prefix>trace". ml_trace_pack gives the pieces, for files that hold a
 * trace beside other tensors (adversarial sets). */
typedef struct {
    int n;
    char **names;
    ml_tensor **tensors; /* borrowed from the trace */
    char *meta_key, *meta_value;
} ml_trace_parts;
int ml_trace_pack(const ml_trace *t, const char *prefix, ml_trace_parts *out);
void ml_trace_parts_free(ml_trace_parts *p);
struct ml_st_file;
ml_trace *ml_trace_unpack(const struct ml_st_file *f, const char *prefix);
int ml_trace_save(const char *path, const ml_trace *t);
ml_trace *ml_trace_load(const char *path);

#endif
