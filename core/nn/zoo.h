/* zoo.h -- the model zoo. ml_zoo_build(name, config) builds a model from its
 * name and a JSON config (every knob has a default); the model's config()
 * returns the completed config, so checkpoints rebuild the same model.
 * Names: mlp, cnn, resnet18, vgg16, wrn (each in the families dense, s_dense,
 * sparse_cnn, moe_cnn), vit, vmoe. docs/MODELS.md describes each precisely. */
#ifndef ML_NN_ZOO_H
#define ML_NN_ZOO_H

#include "module.h"

/* Takes ownership of config (may be NULL for all defaults). Options that are
 * not the model's are refused, naming the model's options. */
ml_module *ml_zoo_build(const char *name, cJSON *config);
/* A member of the AdvMoE family ("dense", "s_dense", "sparse_cnn",
 * "moe_cnn") on the backbone config["backbone"] (resnet18 (default), vgg16,
 * wrn or cnn). Takes ownership of config. */
ml_module *ml_zoo_build_family(const char *family, cJSON *config);

/* The zoo's options: key, the models it applies to, the family it needs. */
typedef struct {
    const char *key;
    unsigned models; /* bit set of the models (internal) */
    const char *family; /* the family (or families) it needs, or NULL */
    const char *help;
} ml_zoo_option;
/* The options of model (NULL: of any model) into out[0..max); returns how many there are. */
int ml_zoo_options(const char *model, const ml_zoo_option **out, int max);

extern const ml_module_kind ml_zoo_kinds[]; /* Model, BasicBlock (for the registry) */

#endif
