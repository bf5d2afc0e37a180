/* error.c -- thread-local error messages and the interrupt flag. */
#include "error.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ML_ERROR_MAX 1024

static _Thread_local char error_message[ML_ERROR_MAX];
static _Thread_local ml_error_kind error_kind;
static _Thread_local bool error_located;
static volatile sig_atomic_t interrupt_flag;

static void set_message(ml_error_kind kind, const char *fmt, va_list ap) {
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    error_kind = kind;
    error_located = false;
}

void *ml_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(ML_ERR_USER, fmt, ap);
    va_end(ap);
    return NULL;
}

int ml_failc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(ML_ERR_USER, fmt, ap);
    va_end(ap);
    return -1;
}

void *ml_fail_internal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(ML_ERR_INTERNAL, fmt, ap);
    va_end(ap);
    return NULL;
}

void *ml_fail_oom(const char *fn) {
    snprintf(error_message, sizeof error_message, "%s: out of memory", fn);
    error_kind = ML_ERR_MEMORY;
    error_located = false;
    return NULL;
}

int ml_failc_oom(const char *fn) {
    ml_fail_oom(fn);
    return -1;
}

void ml_error_prefix(const char *fmt, ...) {
    char old[ML_ERROR_MAX];
    memcpy(old, error_message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    if (k >= 0 && (size_t)k < sizeof error_message)
        memcpy(error_message + k, old, sizeof error_message - (size_t)k - 1);
    error_message[ML_ERROR_MAX - 1] = 0;
}

void ml_error_locate(const char *fmt, ...) {
    if (error_located || error_kind == ML_ERR_INTERRUPTED) return;
    char where[ML_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(where, sizeof where, fmt, ap);
    va_end(ap);
    ml_error_prefix("%s", where);
    error_located = true;
}

const char *ml_last_error(void) { return error_message[0] ? error_message : "unknown error"; }
ml_error_kind ml_last_error_kind(void) { return error_message[0] ? error_kind : ML_ERR_NONE; }

void ml_error_clear(void) {
    error_message[0] = 0;
    error_kind = ML_ERR_NONE;
    error_located = false;
}

void ml_interrupt_request(void) { interrupt_flag = 1; }
void ml_interrupt_clear(void) { interrupt_flag = 0; }
int ml_interrupt_pending(void) { return interrupt_flag != 0; }

int ml_interrupted(void) {
    if (!interrupt_flag) return 0;
    snprintf(error_message, sizeof error_message, "interrupted");
    error_kind = ML_ERR_INTERRUPTED;
    error_located = false;
    return 1;
}
