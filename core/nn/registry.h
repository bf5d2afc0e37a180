/* registry.h -- the built-in module types by name: rebuilding a module from
 * its config (checkpoints, ml.nn.from_config, the experts of an MoE layer).
 *
 * The registry sits above every builder: it knows each file's list of types
 * (ml_module_kind tables, declared in the builders' headers), and module.c
 * knows nothing of it. Containers and MoE layers build their children from
 * configs through ml_module_from_config: a composite config recurses here. */
#ifndef ML_NN_REGISTRY_H
#define ML_NN_REGISTRY_H

#include "module.h"

/* Builds a module from {"type": "...", ...}. */
ml_module *ml_module_from_config(const cJSON *config);
/* The built-in type called name, or NULL. */
const ml_module_kind *ml_module_kind_find(const char *name);
/* All built-in types, in a fixed order: i = 0 .. ml_module_kind_count() - 1. */
int ml_module_kind_count(void);
const ml_module_kind *ml_module_kind_at(int i);

#endif
