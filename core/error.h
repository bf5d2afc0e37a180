/* error.h -- how the core reports user mistakes and interrupts.
 *
 * Core functions never abort on bad input. They set a thread-local message that
 * names the function and the offending values, and return NULL (or -1):
 *
 *     if (x->shape[1] != w->shape[1])
 *         return ml_fail("conv2d: input has %lld channels, weight expects %lld", ...);
 *
 * The Lua bindings turn the message into a Lua error. `assert` is reserved for
 * internal invariants.
 *
 * Every error also has a kind, so that code deciding what to do with an error
 * (add where it happened, retry, stop) never reads the message text: a user
 * mistake (ml_fail), an interrupt (ml_interrupted), memory running out
 * (ml_fail_oom) or a broken internal invariant (ml_fail_internal).
 *
 * Interrupts: the REPL's SIGINT handler calls ml_interrupt_request(); long
 * kernels poll ml_interrupted() in their outer loops and give up with the
 * error "interrupted". */
#ifndef ML_ERROR_H
#define ML_ERROR_H

#include <stdarg.h>
#include <stddef.h>

/* Sets the current error message (printf-style). Always returns NULL so that a
 * function returning a pointer can write `return ml_fail(...)`. */
void *ml_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, returning -1, for functions that return a status. */
int ml_failc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Memory ran out in fn: "fn: out of memory", kind ML_ERR_MEMORY. Returns NULL. */
void *ml_fail_oom(const char *fn);
int ml_failc_oom(const char *fn); /* the same, returning -1 */
/* A broken internal invariant (a bug, not the user's input), kind ML_ERR_INTERNAL. */
void *ml_fail_internal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefixes the current message: "in module 3 of Sequential: " + message. */
void ml_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefixes where the error happened ("in blocks.1.mlp (TokenMoE): "), once: an
 * error already located, or an interrupt, is left as it is. */
void ml_error_locate(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *ml_last_error(void);
void ml_error_clear(void);

typedef enum { ML_ERR_NONE, ML_ERR_USER, ML_ERR_INTERRUPTED, ML_ERR_MEMORY, ML_ERR_INTERNAL } ml_error_kind;
/* The kind of the current error (ML_ERR_NONE after ml_error_clear). */
ml_error_kind ml_last_error_kind(void);

/* Interrupts (async-signal-safe request; polled by kernels). */
void ml_interrupt_request(void);
void ml_interrupt_clear(void);
/* Returns 1 (and sets the error "interrupted") when an interrupt is pending.
 * The flag stays set until ml_interrupt_clear(), so every enclosing loop sees it. */
int ml_interrupted(void);
/* Cheap check without touching the error message (for OpenMP loop bodies). */
int ml_interrupt_pending(void);

#endif
