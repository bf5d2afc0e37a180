/* conv_env.c -- the environment variables of conv_env.h. */
#include "conv_env.h"

#include <pthread.h>
#include <stdlib.h>

static const struct {
    const char *name, *help;
} table[ML_ENV_COUNT] = {
    [ML_ENV_CONV] = {"MOELAB_CONV", "direct: no Winograd; winograd: Winograd wherever it applies (not only where it "
                                    "pays); im2col: im2col + sgemm for every pass; noavx512: as on a CPU without AVX-512"},
    [ML_ENV_CONV_TILE] = {"MOELAB_CONV_TILE", "c:RTxPWxRB | p:RRxVWxRC [:noedge]: force a forward tile (tuning)"},
    [ML_ENV_CONV_WG] = {"MOELAB_CONV_WG", "RxRB: force the weight-gradient tile (tuning)"},
    [ML_ENV_CONV_VERBOSE] = {"MOELAB_CONV_VERBOSE", "set: print every tile plan on stderr"},
    [ML_ENV_FUSE] = {"MOELAB_FUSE", "0: do not fold eval-mode BatchNorm into the convolutions"},
};

static const char *values[ML_ENV_COUNT];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void read_all(void) {
    for (int i = 0; i < ML_ENV_COUNT; i++) values[i] = getenv(table[i].name);
}

const char *ml_conv_env(ml_conv_env_var v) {
    pthread_once(&once, read_all);
    return v >= 0 && v < ML_ENV_COUNT ? values[v] : NULL;
}

const char *ml_conv_env_name(ml_conv_env_var v) { return v >= 0 && v < ML_ENV_COUNT ? table[v].name : "?"; }
const char *ml_conv_env_help(ml_conv_env_var v) { return v >= 0 && v < ML_ENV_COUNT ? table[v].help : "?"; }
