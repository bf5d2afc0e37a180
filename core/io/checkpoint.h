/* checkpoint.h -- a model, its optimizer state and metadata in one file.
 *
 * A checkpoint is a safetensors file (safetensors.h), format 1 (the one
 * ml.save has always written):
 *   tensors   every parameter and buffer of the model under its full name
 *             ("blocks.1.mlp.router.weight"), float32 or int64; optimizer
 *             state as "optim.<parameter name>.s1" and ".s2" (SGD's momentum
 *             buffer; Adam's first and second moments)
 *   metadata  moelab.format = "1", moelab.config = the model's constructor
 *             config (JSON), moelab.version; with an optimizer moelab.optim_steps
 *             and moelab.optim_lr; moelab.epoch when given; the caller's keys.
 *
 *     ml_checkpoint_save("m.safetensors", model, opt, &(ml_checkpoint_meta){.has_epoch = true, .epoch = 3});
 *     ml_checkpoint *c = ml_checkpoint_load("m.safetensors", true);
 *     ... c->model, c->epoch, ml_checkpoint_restore_optim(c, opt2, NULL) ...
 *     ml_checkpoint_free(c);
 *
 * Loading rebuilds the model from moelab.config through the module registry:
 * no code in the file ever runs. A corrupt or crafted file is refused with its
 * name and the reason, never read out of bounds (the safetensors checks, then):
 * a missing or unparsable config, a config that would allocate more than the
 * file's tensors can fill (checked while building, before the memory is used),
 * a model tensor the file lacks or a file tensor the model lacks (strict, the
 * default), a shape or a float/integer kind that differs from the model's (F32
 * bytes relabelled I32 are refused, not loaded as weights of 1e9), malformed
 * optimizer entries or numbers in the metadata. Saving is atomic (atomic.h). */
#ifndef ML_IO_CHECKPOINT_H
#define ML_IO_CHECKPOINT_H

#include "../nn/module.h"
#include "../train/optim.h"
#include "safetensors.h"

#define ML_CHECKPOINT_FORMAT "1"

/* What is saved beside the model. A zeroed struct (or NULL) saves nothing more. */
typedef struct {
    /* Names of the optimizer's parameters (as opt:state_dict() names them);
     * NULL: each parameter's full name in the model (found by identity). */
    const char *const *optim_names;
    bool has_epoch;
    int64_t epoch;
    int n;                         /* the caller's metadata: keys not starting with "moelab." */
    const char *const *keys, *const *values;
} ml_checkpoint_meta;

/* Saves model (and optim's state when optim is not NULL). -1 + error. */
int ml_checkpoint_save(const char *path, ml_module *model, ml_optim *optim, const ml_checkpoint_meta *meta);

typedef struct {
    ml_module *model;    /* rebuilt and loaded, in eval mode (owned) */
    ml_st_file *file;    /* still open: metadata (ml_st_meta_get) and optimizer tensors (owned) */
    int64_t epoch;       /* -1 when the file has none */
    int64_t optim_steps; /* -1 when the file has no optimizer state */
    double optim_lr;     /* NAN when absent */
} ml_checkpoint;

/* Opens and validates path, rebuilds its model and loads the tensors. strict:
 * the file's model tensors and the model's must match one to one (else only
 * the common ones load, and the others keep their initial values). */
ml_checkpoint *ml_checkpoint_load(const char *path, bool strict);
void ml_checkpoint_free(ml_checkpoint *c);
/* Restores the saved optimizer state into o: o's parameter i takes the state
 * saved under names[i] (NULL: its full name in c->model, found by identity).
 * A parameter whose state the file lacks keeps a fresh state; a shape that
 * differs is an error. */
int ml_checkpoint_restore_optim(const ml_checkpoint *c, ml_optim *o, const char *const *names);

#endif
