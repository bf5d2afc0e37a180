/* module.h -- neural-network modules: C objects with a small vtable.
 *
 * A module owns named parameters (leaf tensors that require grad, each in a
 * group: "backbone" or "router"), buffers (running statistics: saved with the
 * model, never trained) and named children. Names compose into paths such as
 * "blocks.3.mlp.router.weight". A forward takes one tensor and an optional
 * context that carries the routing trace (trace.h) and auxiliary losses of
 * the MoE layers it passes through, and optionally a forced routing:
 *
 *     ml_ctx ctx = {.trace = true};
 *     ml_tensor *logits = ml_module_forward(model, x, &ctx);
 *     ... ctx.traces (one layer per MoE layer), ctx.aux (summed auxiliary loss) ...
 *     ml_ctx_clear(&ctx);
 *
 * Every module type can describe itself and give its constructor config as
 * JSON, so a model rebuilt from a checkpoint's metadata is the same model. */
#ifndef ML_NN_MODULE_H
#define ML_NN_MODULE_H

#include <cjson/cJSON.h>

#include "../tensor.h"
#include "trace.h"

typedef struct ml_module ml_module;
typedef struct ml_ctx ml_ctx;

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

/* ------------------------------------------------------------ forward context */
#define ML_PATH_MAX 256

/* A per-layer request to the routing, for the metrics: every item's first
 * choice is expert `expert` (capacity is not applied in that layer), or the
 * routing picks among the other experts. `layer` is the layer's full path. */
typedef enum { ML_ROUTE_FORCE, ML_ROUTE_SILENCE } ml_route_override_kind;
typedef struct {
    const char *layer;
    ml_route_override_kind what;
    int expert; /* 0-based */
} ml_route_override;

struct ml_ctx {
    bool trace;      /* collect a routing trace (ctx->traces) */
    bool trace_grad; /* ... whose logits, probs and gates keep their autograd history */
    bool want_aux;   /* compute auxiliary losses even in eval mode */
    /* For attacks on the routers (moe/ste.h): a straight-through gradient for
     * the hard expert selection, and the training router noise in eval mode. */
    bool selection_ste;
    bool router_noise;
    ml_trace *traces; /* the trace of this forward (owned; ml_ctx_take_trace) */
    ml_tensor *aux;   /* summed, weighted auxiliary loss (0-d, differentiable) or NULL */
    /* Forced routing (borrowed): every sparse MoE layer takes its selection
     * from the layer of the same name in `routing` (a trace of the same model
     * and batch size; gates still read the current router probabilities at
     * the forced experts), and `overrides` force or silence experts. A trace
     * layer or an override that no layer of the model used is an error. */
    const ml_trace *routing;
    const ml_route_override *overrides;
    int n_overrides;
    /* Optional hook, called after every child forward with its input, output,
     * the FLOPs it counted and its wall time (summaries, per-layer timing,
     * capturing activations or router inputs). */
    void (*on_module)(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                      double seconds);
    void *on_module_ud;
    char path[ML_PATH_MAX];
    /* kept by ml_module_forward: nesting depth; which trace layers and
     * overrides a layer used (checked when the outermost forward returns) */
    int depth;
    bool *routing_used, *overrides_used;
};
void ml_ctx_clear(ml_ctx *ctx);
/* Adds a (0-d) auxiliary loss term to ctx->aux. */
int ml_ctx_add_aux(ml_ctx *ctx, ml_tensor *term);
/* Records the current layer (named ctx->path) in ctx->traces when ctx->trace
 * is set: the MoE layers' one way into the trace (trace.h, ml_trace_add). */
int ml_ctx_record(ml_ctx *ctx, const ml_trace_entry *e);
/* The collected trace (an empty one when no MoE layer ran), now the caller's. */
ml_trace *ml_ctx_take_trace(ml_ctx *ctx);

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

/* ------------------------------------------------------------ types by name
 * A module type that can be rebuilt from its config lists itself in its
 * file's table of kinds (registry.h finds them): its name, its constructor
 * from a config and, when it has one, its option table (options.h). */
struct ml_options;
typedef struct {
    const char *name;
    ml_module *(*from_config)(const cJSON *config);
    const struct ml_options *options; /* NULL: none declared */
} ml_module_kind;

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
