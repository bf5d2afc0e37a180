/* memory.h -- tensor storage allocation and its counters.
 *
 * Storage comes from a size-bucketed cache (alloc.c), so a training or attack
 * loop reuses its activation buffers instead of faulting fresh pages every
 * step. The live tensor and storage counters live here too: ml.memory() and
 * the tests that check a long loop stays flat read them. */
#ifndef ML_MEMORY_H
#define ML_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t live_tensors;
    int64_t live_storages;
    int64_t live_bytes;   /* bytes held by live storages */
    int64_t cached_bytes; /* freed buffers kept for reuse */
    int64_t peak_bytes;
    int64_t fresh_allocs; /* buffers the cache could not serve (taken from the system) */
} ml_memory_stats;
void ml_memory_get(ml_memory_stats *st);
void ml_memory_trim(void); /* returns cached buffers to the system */
void *ml_alloc(size_t nbytes); /* 64-byte aligned, from the cache; NULL+error on failure */
void ml_free(void *p, size_t nbytes);

/* A cap on the storage this thread allocates while it builds something whose
 * sizes come from untrusted data (a checkpoint's model config): ml_alloc fails
 * once the bytes allocated minus freed by this thread since ml_alloc_limit_begin
 * would pass `bytes`. ml_alloc_limit_end ends it and returns true when the cap
 * was hit. Not nested. */
void ml_alloc_limit_begin(int64_t bytes);
bool ml_alloc_limit_end(void);

/* Counters kept by tensor.c as headers and storages come and go. */
void ml_memory_count_tensors(int delta);
void ml_memory_count_storages(int delta);

#endif
