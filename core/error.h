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
/* Prefixes the current message: "in module 3 of Sequential: " + message. */
void ml_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *ml_last_error(void);
void ml_error_clear(void);

/* Interrupts (async-signal-safe request; polled by kernels). */
void ml_interrupt_request(void);
void ml_interrupt_clear(void);
/* Returns 1 (and sets the error "interrupted") when an interrupt is pending.
 * The flag stays set until ml_interrupt_clear(), so every enclosing loop sees it. */
int ml_interrupted(void);
/* Cheap check without touching the error message (for OpenMP loop bodies). */
int ml_interrupt_pending(void);

#endif
