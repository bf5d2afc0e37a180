/* error.c -- thread-local error messages and the interrupt flag. */
#include "error.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define ML_ERROR_MAX 1024

static _Thread_local char error_message[ML_ERROR_MAX];
static volatile sig_atomic_t interrupt_flag;

static void set_message(const char *fmt, va_list ap) {
    vsnprintf(error_message, sizeof error_message, fmt, ap);
}

void *ml_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return NULL;
}

int ml_failc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
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

const char *ml_last_error(void) { return error_message[0] ? error_message : "unknown error"; }
void ml_error_clear(void) { error_message[0] = 0; }

void ml_interrupt_request(void) { interrupt_flag = 1; }
void ml_interrupt_clear(void) { interrupt_flag = 0; }
int ml_interrupt_pending(void) { return interrupt_flag != 0; }

int ml_interrupted(void) {
    if (!interrupt_flag) return 0;
    ml_fail("interrupted");
    return 1;
}
