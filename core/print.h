/* print.h -- tensors as text (PyTorch style, summarised when large). */
#ifndef ML_PRINT_H
#define ML_PRINT_H

#include "tensor.h"

typedef struct {
    int precision;  /* digits after the point (default 4) */
    int64_t threshold; /* summarise above this many elements (default 1000) */
    int edgeitems;  /* items kept at each end when summarising (default 3) */
    int linewidth;  /* default 80 */
} ml_print_opts;
/* PyTorch-like text: values, then dtype and shape. Returns malloc'd string. */
char *ml_format(const ml_tensor *t, const ml_print_opts *opts);

#endif
