/* dissection.h -- the four-way dissection of an attack (Zhang et al. 2023,
 * AdvMoE): for every sample, was its routing attacked (some MoE layer changed
 * the kept selection of one of its items: routing.h) and was its prediction
 * fooled (the adversarial prediction differs from the label)?
 *
 *   case 1: routing kept,    prediction right
 *   case 2: routing changed, prediction right
 *   case 3: routing kept,    prediction fooled
 *   case 4: routing changed, prediction fooled
 *
 * Router robustness = (n1 + n3) / n (the routing withstood the attack); MoE
 * robustness = (n1 + n2) / n (the prediction did: the robust accuracy). The
 * case numbers are 1..4 in C and in Lua alike (they are names, not indices). */
#ifndef ML_ANALYSIS_DISSECTION_H
#define ML_ANALYSIS_DISSECTION_H

#include "routing.h"

typedef struct {
    int64_t n;
    int64_t count[5];  /* count[1..4]; count[0] unused */
    double router_robustness, moe_robustness;
    ml_tensor *cases;  /* int64 [n]: the case (1..4) of every sample */
} ml_dissection;

/* rc: the routing change of the clean and adversarial forwards; y: labels,
 * pred: adversarial predictions, both int64 [batch], 0-based. */
int ml_dissect(const char *fn, const ml_route_change *rc, const ml_tensor *y, const ml_tensor *pred, ml_dissection *out);
void ml_dissection_free(ml_dissection *d);

#endif
