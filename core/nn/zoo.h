/* zoo.h -- the model zoo. ml_zoo_build(name, config) builds a model from its
 * name and a JSON config (every knob has a default); the model's config()
 * returns the completed config, so checkpoints rebuild the same model.
 * Names: mlp, cnn, resnet18, vgg16, wrn (each in the families dense, s_dense,
 * sparse_cnn, moe_cnn), vit, vmoe. docs/MODELS.md describes each precisely. */
#ifndef ML_NN_ZOO_H
#define ML_NN_ZOO_H

#include "module.h"

/* Takes ownership of config (may be NULL for all defaults). */
ml_module *ml_zoo_build(const char *name, cJSON *config);

#endif
