/* accuracy.h -- counts behind accuracy, robust accuracy and error rates.
 *
 * Single-label: a sample is correct when the argmax of its logits (the lowest
 * class on ties) is its label. Multi-label (targets float [B, C] of 0/1):
 * precision@1 counts the samples whose top-1 class is one of their labels;
 * its false discovery rate is 1 - precision@1. */
#ifndef ML_ANALYSIS_ACCURACY_H
#define ML_ANALYSIS_ACCURACY_H

#include "../tensor.h"

/* logits float [B, C], y int64 [B] 0-based; *correct = samples right. pred
 * (optional, may be NULL) receives the int64 [B] 0-based predictions. */
int ml_accuracy_count(const char *fn, const ml_tensor *logits, const ml_tensor *y, int64_t *correct, ml_tensor **pred);
/* logits float [B, C], targets float [B, C] of 0/1: *hits = samples whose
 * top-1 class is a target. */
int ml_precision_at_1(const char *fn, const ml_tensor *logits, const ml_tensor *targets, int64_t *hits);

#endif
