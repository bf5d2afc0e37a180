/* alloc.c -- 64-byte aligned buffers from a size-bucketed cache.
 *
 * A training step or an attack step allocates the same activation sizes again
 * and again. Returning them to glibc (and glibc to the kernel) costs page faults
 * that can exceed the arithmetic, so freed buffers are kept per size class and
 * handed out again. The cache is bounded; ml_memory_trim() empties it. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "memory.h"

#define ML_ALIGN 64
#define CLASS_COUNT 160
#define CACHE_LIMIT ((int64_t)2 << 30) /* keep at most 2 GiB of freed buffers */

typedef struct block {
    struct block *next;
} block;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_lists[CLASS_COUNT];
static int64_t cached_bytes, live_bytes, peak_bytes, fresh_allocs;

/* Size classes: 4 per power of two above 256 bytes; smaller sizes round to 256. */
static int size_class(size_t n, size_t *rounded) {
    if (n <= 256) {
        *rounded = 256;
        return 0;
    }
    int e = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^e < n <= 2^(e+1) */
    size_t base = (size_t)1 << e, quarter = base / 4;
    size_t q = (n - base + quarter - 1) / quarter; /* 1..4 */
    *rounded = base + q * quarter;
    int cls = (e - 8) * 4 + (int)q;
    return cls < CLASS_COUNT ? cls : -1;
}

/* The per-thread cap (ml_alloc_limit_begin). */
static _Thread_local bool limit_on, limit_hit;
static _Thread_local int64_t limit_bytes, limit_used;

void ml_alloc_limit_begin(int64_t bytes) {
    limit_on = true;
    limit_hit = false;
    limit_bytes = bytes;
    limit_used = 0;
}

bool ml_alloc_limit_end(void) {
    limit_on = false;
    return limit_hit;
}

void *ml_alloc(size_t nbytes) {
    size_t rounded;
    int cls = size_class(nbytes ? nbytes : 1, &rounded);
    void *p = NULL;
    if (limit_on) {
        int64_t want = cls < 0 ? (int64_t)(nbytes > INT64_MAX / 2 ? INT64_MAX / 2 : nbytes) : (int64_t)rounded;
        if (want > limit_bytes - limit_used) {
            limit_hit = true;
            return ml_fail("out of memory: allocating %zu bytes would pass the limit of %" PRId64 " bytes", nbytes,
                           limit_bytes);
        }
        limit_used += want;
    }
    pthread_mutex_lock(&cache_lock);
    if (cls >= 0 && free_lists[cls]) {
        block *b = free_lists[cls];
        free_lists[cls] = b->next;
        cached_bytes -= (int64_t)rounded;
        p = b;
    }
    if (p) {
        live_bytes += (int64_t)rounded;
        if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    }
    pthread_mutex_unlock(&cache_lock);
    if (p) return p;
    if (cls < 0) rounded = (nbytes + ML_ALIGN - 1) / ML_ALIGN * ML_ALIGN;
    p = aligned_alloc(ML_ALIGN, rounded);
    if (!p) {
        /* Give the cache back and try once more before failing. */
        ml_memory_trim();
        p = aligned_alloc(ML_ALIGN, rounded);
        if (!p) {
            if (limit_on) limit_used -= cls < 0 ? (int64_t)nbytes : (int64_t)rounded;
            return ml_fail("out of memory allocating %zu bytes", nbytes);
        }
    }
    pthread_mutex_lock(&cache_lock);
    live_bytes += (int64_t)rounded;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    fresh_allocs++;
    pthread_mutex_unlock(&cache_lock);
    return p;
}

void ml_free(void *p, size_t nbytes) {
    if (!p) return;
    size_t rounded;
    int cls = size_class(nbytes ? nbytes : 1, &rounded);
    if (limit_on) limit_used -= cls < 0 ? (int64_t)nbytes : (int64_t)rounded;
    if (cls < 0) rounded = (nbytes + ML_ALIGN - 1) / ML_ALIGN * ML_ALIGN;
    pthread_mutex_lock(&cache_lock);
    live_bytes -= (int64_t)rounded;
    if (cls >= 0 && cached_bytes + (int64_t)rounded <= CACHE_LIMIT) {
        block *b = p;
        b->next = free_lists[cls];
        free_lists[cls] = b;
        cached_bytes += (int64_t)rounded;
        p = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    free(p);
}

void ml_memory_trim(void) {
    pthread_mutex_lock(&cache_lock);
    for (int c = 0; c < CLASS_COUNT; c++) {
        block *b = free_lists[c];
        while (b) {
            block *next = b->next;
            free(b);
            b = next;
        }
        free_lists[c] = NULL;
    }
    cached_bytes = 0;
    pthread_mutex_unlock(&cache_lock);
}

/* Live tensor headers and storages (tensor.c counts them as they come and go). */
static atomic_llong live_tensors, live_storages;

void ml_memory_count_tensors(int delta) { atomic_fetch_add(&live_tensors, delta); }
void ml_memory_count_storages(int delta) { atomic_fetch_add(&live_storages, delta); }

void ml_memory_get(ml_memory_stats *st) {
    memset(st, 0, sizeof *st);
    st->live_tensors = atomic_load(&live_tensors);
    st->live_storages = atomic_load(&live_storages);
    pthread_mutex_lock(&cache_lock);
    st->live_bytes = live_bytes;
    st->cached_bytes = cached_bytes;
    st->peak_bytes = peak_bytes;
    st->fresh_allocs = fresh_allocs;
    pthread_mutex_unlock(&cache_lock);
}
