/* registry.c -- every built-in module type that can be rebuilt from a config
 * (checkpoints) registers its constructor here. */
#include "module.h"

void ml_nn_register_layers(void);
void ml_nn_register_cnn(void);
void ml_nn_register_moe(void);
void ml_nn_register_moe_conv(void);
void ml_nn_register_transformer(void);
void ml_nn_register_zoo(void);
void ml_nn_register_blocks(void);

void ml_nn_register_builtin(void);
void ml_nn_register_builtin(void) {
    ml_nn_register_layers();
    ml_nn_register_cnn();
    ml_nn_register_moe();
    ml_nn_register_moe_conv();
    ml_nn_register_transformer();
    ml_nn_register_zoo();
    ml_nn_register_blocks();
}
