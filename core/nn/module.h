/* module.h -- neural-network modules: C objects with a small vtable.
 *
 * A module owns named parameters (leaf tensors that require grad, each in a
 * group: "backbone" or "router"), buffers (running statistics: saved with the
 * model, never trained) and named children. Names compose into paths such as
 * "blocks.3.mlp.router.weight". A forward takes one tensor and an optional
 * context that carries the collected routing traces and auxiliary losses of
 * the MoE layers it passes through:
 *
 *     ml_ctx ctx = {.trace = true};
 *     ml_tensor *logits = ml_module_forward(model, x, &ctx);
 *     ... ctx.traces (one per MoE layer), ctx.aux (summed auxiliary loss) ...
 *     ml_ctx_clear(&ctx);
 *
 * Every module type can describe itself and give its constructor config as
 * JSON, so a model rebuilt from a checkpoint's metadata is the same model. */
#ifndef ML_NN_MODULE_H
#define ML_NN_MODULE_H

#include <cjson/cJSON.h>

#include "../tensor.h"

typedef struct ml_module ml_module;
typedef struct ml_ctx ml_ctx;
typedef struct ml_trace ml_trace;

typedef struct {
    const char *name; /* "Linear" */
    ml_tensor *(*forward)(ml_module *m, ml_tensor *x, ml_ctx *ctx);
    void (*destroy)(ml_module *m);                               /* frees m->state (optional) */
    void (*describe)(const ml_module *m, char *buf, size_t n);   /* "Linear(64 -> 10)" (optional) */
    cJSON *(*config)(const ml_module *m);                        /* constructor config (optional) */
    /* Parameters used per input (MoE layers count only the selected experts).
     * Optional: default = all parameters of the module and its children. */
    int64_t (*active_params)(const ml_module *m);
    void (*set_training)(ml_module *m, bool training); /* optional hook */
} ml_module_type;

typedef struct {
    char *name;        /* local name: "weight" */
    ml_tensor *t;      /* owned */
    bool buffer;       /* running statistics etc.: saved, not trained */
    const char *group; /* "backbone" or "router" (static string) */
} ml_param;

typedef struct {
    char *name; /* "3", "conv1", "router" */
    ml_module *m; /* owned */
} ml_child;

struct ml_module {
    int refcount;
    const ml_module_type *type;
    bool training;
    int n_params, cap_params;
    ml_param *params;
    int n_children, cap_children;
    ml_child *children;
    void *state; /* type-specific */
};

/* ------------------------------------------------------------ routing traces */
/* What an MoE layer reports about one forward (0-based ids in C). T = tokens
 * (token MoE) or samples (channel MoE); K = experts per token. */
struct ml_trace {
    char *layer;          /* full path, e.g. "blocks.1.mlp" */
    int num_experts;
    ml_tensor *experts;   /* int64 [T, K] selected expert ids */
    ml_tensor *gates;     /* float [T, K] combine weights */
    ml_tensor *probs;     /* float [T, E] router probabilities (clean, before noise) */
    ml_tensor *kept;      /* int64 [T, K] 1 when the assignment got a capacity slot */
    ml_tensor *load;      /* float [E] kept assignments per expert */
    double aux[4];        /* importance, load, switch, z-loss values (NAN if not computed) */
    ml_trace *next;
};

/* ------------------------------------------------------------ forward context */
#define ML_PATH_MAX 256
struct ml_ctx {
    bool trace;        /* collect routing traces */
    bool want_aux;     /* compute auxiliary losses even in eval mode */
    ml_trace *traces;  /* in forward order (owned) */
    ml_trace *last_trace;
    ml_tensor *aux;    /* summed, weighted auxiliary loss (0-d, differentiable) or NULL */
    /* Global routing (MoE-CNN with one router for every MoE layer): expert per
     * sample and layer (int64 [N, L]), its gate (float [N, L], differentiable)
     * and the router probabilities (float [N, L, E]); layers read column
     * route_layer and advance it. */
    ml_tensor *route, *route_gates, *route_probs;
    int route_layer;
    /* Optional hook, called after every child forward with its input, output,
     * the FLOPs it counted and its wall time (summaries, per-layer timing,
     * capturing activations or router inputs). */
    void (*on_module)(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                      double seconds);
    void *on_module_ud;
    char path[ML_PATH_MAX];
};
void ml_ctx_clear(ml_ctx *ctx);
/* Adds a (0-d) auxiliary loss term to ctx->aux. */
int ml_ctx_add_aux(ml_ctx *ctx, ml_tensor *term);
/* Appends a trace (takes ownership). */
void ml_ctx_add_trace(ml_ctx *ctx, ml_trace *tr);
void ml_trace_free(ml_trace *tr);

/* ------------------------------------------------------------ lifetime */
ml_module *ml_module_new(const ml_module_type *type, void *state);
ml_module *ml_module_retain(ml_module *m);
void ml_module_release(ml_module *m);

/* ------------------------------------------------------------ building */
/* Adds a parameter (takes ownership of t; marks it requires_grad). Returns t. */
ml_tensor *ml_module_add_param(ml_module *m, const char *name, ml_tensor *t, const char *group);
ml_tensor *ml_module_add_buffer(ml_module *m, const char *name, ml_tensor *t);
/* Adds a child (takes ownership). Returns child. */
ml_module *ml_module_add_child(ml_module *m, const char *name, ml_module *child);
ml_tensor *ml_module_param(const ml_module *m, const char *name); /* local lookup, borrowed */
ml_module *ml_module_child(const ml_module *m, const char *name);

/* ------------------------------------------------------------ running */
/* Runs m's forward. ctx may be NULL. Errors get the module path prefixed. */
ml_tensor *ml_module_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx);
/* Runs a child inside a parent's forward: extends ctx->path with the child's
 * name and prefixes errors with "in <path> (<Type>): ". */
ml_tensor *ml_module_forward_child(ml_module *parent, int i, ml_tensor *x, ml_ctx *ctx);
void ml_module_set_training(ml_module *m, bool training); /* recursive */

/* ------------------------------------------------------------ inspection */
/* Visits every parameter (and buffer when with_buffers) in a stable order
 * with its full dotted name. Return non-zero from fn to stop. */
typedef int (*ml_param_visit)(void *ud, const char *path, ml_param *p, ml_module *owner);
int ml_module_visit_params(ml_module *m, bool with_buffers, ml_param_visit fn, void *ud);
typedef int (*ml_module_visit_fn)(void *ud, const char *path, ml_module *m, int depth);
int ml_module_visit(ml_module *m, ml_module_visit_fn fn, void *ud);
int64_t ml_module_num_params(const ml_module *m);    /* trainable parameter elements, recursive */
int64_t ml_module_active_params(const ml_module *m); /* per input */
void ml_module_describe(const ml_module *m, char *buf, size_t n);
/* The constructor config (new cJSON object) or NULL + error when a module in
 * the tree cannot be rebuilt from data (e.g. a Lua function module). */
cJSON *ml_module_config(const ml_module *m);

/* ------------------------------------------------------------ registry
 * Module types that can be rebuilt from a config register a constructor. */
typedef ml_module *(*ml_module_ctor)(const cJSON *config);
void ml_module_register(const char *name, ml_module_ctor ctor);
/* Builds a module from {"type": "...", ...}. */
ml_module *ml_module_from_config(const cJSON *config);

/* ------------------------------------------------------------ init helpers */
/* PyTorch's default for Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
ml_tensor *ml_init_uniform_fan_in(int ndim, const int64_t *shape, int64_t fan_in);

/* Config helpers: read numbers/strings with defaults and type checks. */
int ml_cfg_int(const cJSON *c, const char *key, int def, int *out);
int ml_cfg_double(const cJSON *c, const char *key, double def, double *out);
int ml_cfg_bool(const cJSON *c, const char *key, bool def, bool *out);
const char *ml_cfg_string(const cJSON *c, const char *key, const char *def);

/* ------------------------------------------------------------ loading a state dict
 * (m:load_state_dict, checkpoints). The named tensors come from a source -- a
 * Lua table, a safetensors file, arrays -- that can say an entry's shape
 * without loading it, so everything is checked before anything is copied. */
typedef struct {
    int n;                                /* entries */
    const char *(*name)(void *ud, int i); /* entry i's full name ("blocks.1.mlp.router.weight") */
    /* Entry i's rank (returned), shape and the dtype it loads as; *label names
     * its dtype in messages when that differs from the loaded one ("I32"), else NULL. */
    int (*shape)(void *ud, int i, ml_dtype *dtype, int64_t *shape, const char **label);
    ml_tensor *(*get)(void *ud, int i); /* entry i as a new reference (NULL + error) */
    void *ud;
    const char *where; /* "the table", a file name: for messages */
} ml_state_source;

/* Copies the source's tensors into m's parameters and buffers, by full name.
 * Refused before anything is copied: a name given twice, a shape or a kind
 * (float / integer) other than the model's tensor, and, when strict, a
 * parameter or buffer of m that the source lacks or an entry of the source
 * that m does not have (the messages name the first few). Returns the number
 * of tensors copied, or -1. */
int ml_module_load_state(ml_module *m, const ml_state_source *src, bool strict);
/* The same from arrays: names[i] -> tensors[i] (borrowed). */
int ml_module_load_state_dict(ml_module *m, int n, const char *const *names, ml_tensor *const *tensors, bool strict,
                              const char *where);

#endif
