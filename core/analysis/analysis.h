/* analysis.h -- metrics over routing traces and models (docs/ANALYSIS.md):
 * routing changes and their continuous version, the four-way dissection,
 * pathway IoU, expert load and the expert x class matrix, accuracy counts,
 * measured FLOPs, and the certified routing radius. Every metric reads
 * traces (nn/trace.h); only the radius reads router weights, through
 * router.h, and bounds the layers below them (bound.h). */
#ifndef ML_ANALYSIS_H
#define ML_ANALYSIS_H

#include "accuracy.h"
#include "dissection.h"
#include "flops.h"
#include "load.h"
#include "pathway.h"
#include "radius.h"
#include "router.h"
#include "routing.h"

#endif
