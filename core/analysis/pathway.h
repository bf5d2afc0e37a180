/* pathway.h -- pathway IoU (AdvMoE): how far an input's channel pathway
 * through a channel-MoE layer (the output channels of the experts it was
 * sent to, kept choices only) is from a static channel mask (a Sparse-CNN
 * layer's, or any set of channels):
 *
 *     IoU = |S n M| / |S u M|,   1 when both are empty
 *
 * The experts' channels come from the layer (ml_moe_conv_expert_channels),
 * the selections from a trace; nothing else is read. */
#ifndef ML_ANALYSIS_PATHWAY_H
#define ML_ANALYSIS_PATHWAY_H

#include "../nn/module.h"

/* float [E, C] of 0/1: the channels each expert of a MoEConv2d computes. */
ml_tensor *ml_pathway_expert_channels(const char *fn, const ml_module *layer);
/* The IoU of every item's channels with the mask: float [T]. expert_channels
 * float [E, C] and mask float [C], both 0/1. */
ml_tensor *ml_pathway_iou(const char *fn, const ml_trace_layer *l, const ml_tensor *expert_channels, const ml_tensor *mask);

#endif
