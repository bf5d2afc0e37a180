/* registry.c -- every built-in module type that can be rebuilt from a config
 * (checkpoints) registers its constructor here. */
#include "module.h"

void ml_nn_register_layers(void);

void ml_nn_register_builtin(void);
void ml_nn_register_builtin(void) {
    ml_nn_register_layers();
}
