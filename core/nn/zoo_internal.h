/* zoo_internal.h -- shared by the zoo's builders (zoo_cnn.c, zoo_vit.c): the
 * "Model" module (a zoo model that keeps its config), common options
 * (classes, input shape, width, family, normalisation) and global routing. */
#ifndef ML_NN_ZOO_INTERNAL_H
#define ML_NN_ZOO_INTERNAL_H

#include "module.h"
#include "moe/moe_conv.h"

/* ------------------------------------------------------------ conv specs */
/* How the 3x3 convolutions of a backbone are built. */
typedef struct {
    enum { CONV_DENSE, CONV_MOE, CONV_MASKED } kind;
    /* MoE: experts, ratio, router, mask, balancing weights (MoEConv2d's
     * options); masked: ratio. Shapes are the builder's. */
    ml_moe_conv_opts moe;
} conv_spec;

typedef ml_tensor *(*ml_zoo_fwd)(ml_module *m, ml_tensor *x, ml_ctx *ctx);

typedef struct {
    cJSON *config; /* the zoo config this model was built from (owned) */
    ml_zoo_fwd fwd;
    ml_global_route *route; /* the global router's decisions for the MoE convolutions (NULL: none) */
} ml_zoo_state;

typedef struct {
    int classes;
    int in_c, in_h, in_w;
    double width;
    conv_spec conv;
    float mean[16], std[16];
    bool normalize;
} ml_zoo_common;

/* Options of a zoo config, read with their defaults; an absent option is
 * written into cfg with the default used, so the stored config is complete and
 * a checkpoint rebuilds the same model even if a default changes later. */
int ml_zoo_int(cJSON *cfg, const char *key, int def, int *out);
int ml_zoo_double(cJSON *cfg, const char *key, double def, double *out);
int ml_zoo_bool(cJSON *cfg, const char *key, bool def, bool *out);
const char *ml_zoo_string(cJSON *cfg, const char *key, const char *def);

/* A Model module owning config; fwd runs it. */
ml_module *ml_zoo_model_new(cJSON *config, ml_zoo_fwd fwd);
/* Reads the common options from cfg (completing it with the defaults used). */
int ml_zoo_read_common(cJSON *cfg, ml_zoo_common *z, int def_c, int def_h, int def_w);
int ml_zoo_add_normalize(ml_module *m, const ml_zoo_common *z);
int64_t ml_zoo_scaled(int base, double width);
int ml_zoo_child_index(const ml_module *m, const char *name);
ml_tensor *ml_zoo_run_children(ml_module *m, int from, ml_tensor *x, ml_ctx *ctx);
/* The zoo's builders (zoo_cnn.c, zoo_vit.c) and BasicBlock from a config. */
ml_module *ml_zoo_build_cnn(const char *name, cJSON *cfg);
ml_module *ml_zoo_build_vit(const char *name, cJSON *cfg);
ml_module *ml_zoo_basic_block_from_config(const cJSON *c);
/* Runs the model's global router (child index `child`) and stores its
 * decisions where the MoE convolutions read them (s->route). */
int ml_zoo_run_global_router(ml_module *m, int child, ml_tensor *x, ml_ctx *ctx);

#endif
