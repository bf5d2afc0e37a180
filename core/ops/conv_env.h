/* conv_env.h -- every environment variable that steers the convolutions, in
 * one table (conv_env.c; docs/PERFORMANCE.md lists the same). Each is read
 * once, on first use.
 *
 *   MOELAB_CONV          direct: the direct kernels, no Winograd;
 *                        im2col: im2col + sgemm for every pass;
 *                        noavx512: behave as on a CPU without AVX-512
 *   MOELAB_CONV_TILE     c:RTxPWxRB | p:RRxVWxRC, optionally :noedge -- force a
 *                        forward / input-gradient register tile (tuning)
 *   MOELAB_CONV_WG       RxRB -- force the weight-gradient tile (tuning)
 *   MOELAB_CONV_VERBOSE  set: print every tile plan on stderr
 *   MOELAB_FUSE          0: do not fold eval-mode BatchNorm into the
 *                        convolutions of the model zoo (nn/cnn.c)
 */
#ifndef ML_OPS_CONV_ENV_H
#define ML_OPS_CONV_ENV_H

typedef enum {
    ML_ENV_CONV,
    ML_ENV_CONV_TILE,
    ML_ENV_CONV_WG,
    ML_ENV_CONV_VERBOSE,
    ML_ENV_FUSE,
    ML_ENV_COUNT
} ml_conv_env_var;

/* The variable's value, or NULL when it is not set. */
const char *ml_conv_env(ml_conv_env_var v);
/* Its name ("MOELAB_CONV", ...) and a line saying what it does. */
const char *ml_conv_env_name(ml_conv_env_var v);
const char *ml_conv_env_help(ml_conv_env_var v);

#endif
