/* module.c -- module lifetime, parameters, children, forward with paths,
 * traversal, configs. */
#include "module.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../autograd.h"
#include "../ops/elementwise.h"
#include "../ops/linalg.h"

/* ------------------------------------------------------------ lifetime */
ml_module *ml_module_new(const ml_module_type *type, void *state) {
    ml_module *m = calloc(1, sizeof *m);
    if (!m) return ml_fail_oom(__func__);
    m->refcount = 1;
    m->type = type;
    m->training = true;
    m->state = state;
    return m;
}

ml_module *ml_module_retain(ml_module *m) {
    if (m) m->refcount++;
    return m;
}

void ml_module_release(ml_module *m) {
    if (!m || --m->refcount > 0) return;
    if (m->type->destroy) m->type->destroy(m);
    for (int i = 0; i < m->n_params; i++) {
        free(m->params[i].name);
        ml_release(m->params[i].t);
    }
    for (int i = 0; i < m->n_children; i++) {
        free(m->children[i].name);
        ml_module_release(m->children[i].m);
    }
    free(m->params);
    free(m->children);
    free(m);
}

/* ------------------------------------------------------------ building */
static ml_tensor *add_param(ml_module *m, const char *name, ml_tensor *t, bool buffer, const char *group) {
    if (!t) return NULL;
    if (m->n_params == m->cap_params) {
        int cap = m->cap_params ? m->cap_params * 2 : 4;
        ml_param *p = realloc(m->params, sizeof *p * (size_t)cap);
        if (!p) {
            ml_release(t);
            return ml_fail_oom(__func__);
        }
        m->params = p;
        m->cap_params = cap;
    }
    if (!buffer) ml_requires_grad_(t, true);
    m->params[m->n_params++] = (ml_param){strdup(name), t, buffer, group ? group : "backbone"};
    return t;
}

ml_tensor *ml_module_add_param(ml_module *m, const char *name, ml_tensor *t, const char *group) {
    return add_param(m, name, t, false, group);
}

ml_tensor *ml_module_add_buffer(ml_module *m, const char *name, ml_tensor *t) {
    return add_param(m, name, t, true, "buffer");
}

ml_module *ml_module_add_child(ml_module *m, const char *name, ml_module *child) {
    if (!child) return NULL;
    if (m->n_children == m->cap_children) {
        int cap = m->cap_children ? m->cap_children * 2 : 4;
        ml_child *c = realloc(m->children, sizeof *c * (size_t)cap);
        if (!c) {
            ml_module_release(child);
            return ml_fail_oom(__func__);
        }
        m->children = c;
        m->cap_children = cap;
    }
    child->training = m->training;
    m->children[m->n_children++] = (ml_child){strdup(name), child};
    return child;
}

ml_tensor *ml_module_param(const ml_module *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return m->params[i].t;
    return NULL;
}

ml_module *ml_module_child(const ml_module *m, const char *name) {
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return m->children[i].m;
    return NULL;
}

/* ------------------------------------------------------------ context */
static void forget_routing_use(ml_ctx *ctx) {
    free(ctx->routing_used);
    free(ctx->overrides_used);
    ctx->routing_used = ctx->overrides_used = NULL;
}

void ml_ctx_clear(ml_ctx *ctx) {
    if (!ctx) return;
    ml_trace_free(ctx->traces);
    ctx->traces = NULL;
    ml_release(ctx->aux);
    ctx->aux = NULL;
    forget_routing_use(ctx);
    ctx->depth = 0;
    ctx->path[0] = 0;
}

int ml_ctx_add_aux(ml_ctx *ctx, ml_tensor *term) {
    if (!ctx->aux) {
        ctx->aux = ml_retain(term);
        return 0;
    }
    ml_tensor *s = ml_add(ctx->aux, term);
    if (!s) return -1;
    ml_release(ctx->aux);
    ctx->aux = s;
    return 0;
}

int ml_ctx_record(ml_ctx *ctx, const ml_trace_entry *e) {
    if (!ctx || !ctx->trace) return 0;
    if (!ctx->traces && !(ctx->traces = ml_trace_new())) return -1;
    ml_trace_entry named = *e;
    named.name = ctx->path;
    return ml_trace_add(ctx->traces, &named, ctx->trace_grad);
}

ml_trace *ml_ctx_take_trace(ml_ctx *ctx) {
    ml_trace *t = ctx->traces ? ctx->traces : ml_trace_new();
    ctx->traces = NULL;
    return t;
}

/* Before the outermost forward: nothing of the forced routing used yet. */
static int begin_routing_use(ml_ctx *ctx) {
    forget_routing_use(ctx);
    if (ctx->routing && ctx->routing->n > 0 && !(ctx->routing_used = calloc((size_t)ctx->routing->n, sizeof(bool))))
        return ml_failc_oom(__func__);
    if (ctx->n_overrides > 0 && !(ctx->overrides_used = calloc((size_t)ctx->n_overrides, sizeof(bool))))
        return ml_failc_oom(__func__);
    return 0;
}

/* After it: every layer of the forced routing and every override must have
 * met its layer, else the routing was meant for another model. */
static int end_routing_use(ml_ctx *ctx) {
    int rc = 0;
    for (int i = 0; ctx->routing && i < ctx->routing->n && !rc; i++)
        if (!ctx->routing_used[i])
            rc = ml_failc("forward: the forced routing has a layer '%s' that this model did not run (a trace of "
                          "another model?)", ctx->routing->layers[i].name);
    for (int i = 0; i < ctx->n_overrides && !rc; i++)
        if (!ctx->overrides_used[i])
            rc = ml_failc("forward: no MoE layer '%s' to %s expert %d in", ctx->overrides[i].layer,
                          ctx->overrides[i].what == ML_ROUTE_FORCE ? "force" : "silence", ctx->overrides[i].expert + 1);
    return rc;
}

/* ------------------------------------------------------------ running */
ml_tensor *ml_module_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    if (!m->type->forward) return ml_fail("%s: module has no forward", m->type->name);
    bool outermost = ctx && ctx->depth == 0;
    if (outermost && begin_routing_use(ctx)) return NULL;
    if (ctx) ctx->depth++;
    ml_tensor *y = m->type->forward(m, x, ctx);
    if (ctx) ctx->depth--;
    if (outermost) {
        int rc = y ? end_routing_use(ctx) : 0;
        forget_routing_use(ctx);
        if (rc) {
            ml_release(y);
            return NULL;
        }
    }
    return y;
}

ml_tensor *ml_module_forward_child(ml_module *parent, int i, ml_tensor *x, ml_ctx *ctx) {
    ml_child *c = &parent->children[i];
    size_t len = 0;
    if (ctx) {
        len = strlen(ctx->path);
        snprintf(ctx->path + len, sizeof ctx->path - len, len ? ".%s" : "%s", c->name);
    }
    int64_t flops0 = 0;
    struct timespec t0, t1;
    if (ctx && ctx->on_module) {
        flops0 = ml_flops();
        clock_gettime(CLOCK_MONOTONIC, &t0);
    }
    ml_tensor *y = ml_module_forward(c->m, x, ctx);
    if (y && ctx && ctx->on_module) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        ctx->on_module(ctx->on_module_ud, ctx->path, c->m, x, y, ml_flops() - flops0, secs);
    }
    if (!y) {
        if (ctx) ml_error_locate("in %s (%s): ", ctx->path, c->m->type->name);
        else ml_error_locate("in module '%s' (%s) of %s: ", c->name, c->m->type->name, parent->type->name);
    }
    if (ctx) ctx->path[len] = 0;
    return y;
}

void ml_module_set_training(ml_module *m, bool training) {
    m->training = training;
    if (m->type->set_training) m->type->set_training(m, training);
    for (int i = 0; i < m->n_children; i++) ml_module_set_training(m->children[i].m, training);
}

/* ------------------------------------------------------------ inspection */
static int visit_params(ml_module *m, char *path, size_t len, bool with_buffers, ml_param_visit fn, void *ud) {
    for (int i = 0; i < m->n_params; i++) {
        ml_param *p = &m->params[i];
        if (p->buffer && !with_buffers) continue;
        snprintf(path + len, ML_PATH_MAX - len, len ? ".%s" : "%s", p->name);
        int rc = fn(ud, path, p, m);
        path[len] = 0;
        if (rc) return rc;
    }
    for (int i = 0; i < m->n_children; i++) {
        snprintf(path + len, ML_PATH_MAX - len, len ? ".%s" : "%s", m->children[i].name);
        size_t l2 = strlen(path);
        int rc = visit_params(m->children[i].m, path, l2, with_buffers, fn, ud);
        path[len] = 0;
        if (rc) return rc;
    }
    return 0;
}

int ml_module_visit_params(ml_module *m, bool with_buffers, ml_param_visit fn, void *ud) {
    char path[ML_PATH_MAX] = {0};
    return visit_params(m, path, 0, with_buffers, fn, ud);
}

static int visit_modules(ml_module *m, char *path, size_t len, int depth, ml_module_visit_fn fn, void *ud) {
    int rc = fn(ud, path, m, depth);
    if (rc) return rc;
    for (int i = 0; i < m->n_children; i++) {
        snprintf(path + len, ML_PATH_MAX - len, len ? ".%s" : "%s", m->children[i].name);
        rc = visit_modules(m->children[i].m, path, strlen(path), depth + 1, fn, ud);
        path[len] = 0;
        if (rc) return rc;
    }
    return 0;
}

int ml_module_visit(ml_module *m, ml_module_visit_fn fn, void *ud) {
    char path[ML_PATH_MAX] = {0};
    return visit_modules(m, path, 0, 0, fn, ud);
}

static int count_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    *(int64_t *)ud += ml_numel(p->t);
    return 0;
}

int64_t ml_module_num_params(const ml_module *m) {
    int64_t n = 0;
    ml_module_visit_params((ml_module *)m, false, count_cb, &n);
    return n;
}

int64_t ml_module_active_params(const ml_module *m) {
    if (m->type->active_params) return m->type->active_params(m);
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].buffer) n += ml_numel(m->params[i].t);
    for (int i = 0; i < m->n_children; i++) n += ml_module_active_params(m->children[i].m);
    return n;
}

void ml_module_describe(const ml_module *m, char *buf, size_t n) {
    if (m->type->describe) m->type->describe(m, buf, n);
    else snprintf(buf, n, "%s", m->type->name);
}

cJSON *ml_module_config(const ml_module *m) {
    if (!m->type->config)
        return ml_fail("save: a %s module cannot be rebuilt from data (only built-in module types can be saved "
                       "with their architecture; save its parameters with ml.io.save_safetensors instead)",
                       m->type->name);
    return m->type->config(m);
}

/* ------------------------------------------------------------ helpers */
ml_tensor *ml_init_uniform_fan_in(int ndim, const int64_t *shape, int64_t fan_in) {
    ml_tensor *t = ml_rand(ndim, shape);
    if (!t) return NULL;
    float bound = fan_in > 0 ? (float)(1.0 / sqrt((double)fan_in)) : 0.0f, *p = ml_f32(t);
    for (int64_t i = 0, n = ml_numel(t); i < n; i++) p[i] = (2.0f * p[i] - 1.0f) * bound;
    return t;
}

int ml_cfg_int(const cJSON *c, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e9)
        return ml_failc("option '%s' must be an integer", key);
    *out = (int)v->valuedouble;
    return 0;
}

int ml_cfg_double(const cJSON *c, const char *key, double def, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return ml_failc("option '%s' must be a number", key);
    *out = v->valuedouble;
    return 0;
}

int ml_cfg_bool(const cJSON *c, const char *key, bool def, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) return ml_failc("option '%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

const char *ml_cfg_string(const cJSON *c, const char *key, const char *def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsString(v) ? v->valuestring : def;
}

/* ------------------------------------------------------------ loading a state dict */
#define SHOWN_NAMES 3 /* names quoted in a "missing" or "not in the model" message */

typedef struct {
    const ml_state_source *src;
    int *by_name;   /* source entries sorted by name */
    bool *used;     /* source entry matched a model tensor */
    ml_param **dst; /* model tensor per matched entry, in visit order */
    int *from;      /* its source entry */
    int n_dst, cap_dst;
    int missing;
    char missing_names[SHOWN_NAMES][ML_PATH_MAX];
} load_walk;

static int cmp_source_name(const void *a, const void *b, void *ud) {
    const ml_state_source *s = ud;
    return strcmp(s->name(s->ud, *(const int *)a), s->name(s->ud, *(const int *)b));
}

static int find_source(const load_walk *w, const char *name) {
    int lo = 0, hi = w->src->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(w->src->name(w->src->ud, w->by_name[mid]), name);
        if (c == 0) return w->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Appends "'a', 'b', 'c'" (at most SHOWN_NAMES, each cut to 80 characters). */
static void list_names(char *buf, size_t n, int count, const char *(*at)(const void *, int), const void *ud) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < count && i < SHOWN_NAMES && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s'%.80s'", i ? ", " : "", at(ud, i));
    if (count > SHOWN_NAMES && len < n) snprintf(buf + len, n - len, ", ...");
}

static int load_match_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    load_walk *w = ud;
    const ml_state_source *src = w->src;
    int i = find_source(w, path);
    if (i < 0) {
        if (w->missing < SHOWN_NAMES) snprintf(w->missing_names[w->missing], ML_PATH_MAX, "%s", path);
        w->missing++;
        return 0;
    }
    int64_t shape[ML_MAX_DIMS];
    ml_dtype dt = ML_F32;
    const char *label = NULL;
    int ndim = src->shape(src->ud, i, &dt, shape, &label);
    bool same = ndim == p->t->ndim;
    for (int d = 0; same && d < ndim; d++) same = shape[d] == p->t->shape[d];
    if (!same) {
        char s[96] = "[";
        size_t len = 1;
        for (int d = 0; d < ndim && ndim <= ML_MAX_DIMS && len < sizeof s; d++)
            len += (size_t)snprintf(s + len, sizeof s - len, "%s%" PRId64, d ? ", " : "", shape[d]);
        if (len < sizeof s) snprintf(s + len, sizeof s - len, "]");
        return ml_failc("load_state_dict: '%s' has shape %s in the model but %s in %s", path, ML_SHAPE_STR(p->t), s,
                        src->where);
    }
    if (dt != p->t->dtype)
        return ml_failc("load_state_dict: '%s' is %s in the model but %s in %s", path, ml_dtype_name(p->t->dtype),
                        label ? label : ml_dtype_name(dt), src->where);
    if (w->n_dst == w->cap_dst) {
        int cap = w->cap_dst ? 2 * w->cap_dst : 64;
        ml_param **d = realloc(w->dst, sizeof *d * (size_t)cap);
        if (d) w->dst = d;
        int *f = realloc(w->from, sizeof *f * (size_t)cap);
        if (f) w->from = f;
        if (!d || !f) return ml_failc("load_state_dict: out of memory");
        w->cap_dst = cap;
    }
    w->dst[w->n_dst] = p;
    w->from[w->n_dst++] = i;
    w->used[i] = true;
    return 0;
}

static const char *missing_at(const void *ud, int i) { return ((const load_walk *)ud)->missing_names[i]; }

typedef struct {
    const ml_state_source *src;
    const int *idx;
} unused_list;
static const char *unused_at(const void *ud, int i) {
    const unused_list *u = ud;
    return u->src->name(u->src->ud, u->idx[i]);
}

int ml_module_load_state(ml_module *m, const ml_state_source *src, bool strict) {
    int n = src->n > 0 ? src->n : 0;
    load_walk w = {.src = src};
    w.by_name = malloc(sizeof *w.by_name * (size_t)(n ? n : 1));
    w.used = calloc((size_t)(n ? n : 1), sizeof *w.used);
    int rc = -1, copied = 0;
    if (!w.by_name || !w.used) {
        ml_fail("load_state_dict: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) w.by_name[i] = i;
    qsort_r(w.by_name, (size_t)n, sizeof *w.by_name, cmp_source_name, (void *)src);
    for (int i = 1; i < n; i++) {
        const char *a = src->name(src->ud, w.by_name[i]);
        if (!strcmp(a, src->name(src->ud, w.by_name[i - 1]))) {
            ml_fail("load_state_dict: '%.80s' appears twice in %s", a, src->where);
            goto done;
        }
    }
    if (ml_module_visit_params(m, true, load_match_cb, &w)) goto done;
    char names[4 * ML_PATH_MAX];
    if (strict && w.missing) {
        list_names(names, sizeof names, w.missing, missing_at, &w);
        ml_fail("load_state_dict: %d entries of the model are missing from %s (first: %s); "
                "pass {strict = false} to load a subset", w.missing, src->where, names);
        goto done;
    }
    if (strict && w.n_dst < n) {
        int *unused = malloc(sizeof *unused * (size_t)n), k = 0;
        if (!unused) {
            ml_fail("load_state_dict: out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++) /* in name order, so the message does not depend on the source's order */
            if (!w.used[w.by_name[i]]) unused[k++] = w.by_name[i];
        unused_list u = {src, unused};
        list_names(names, sizeof names, k, unused_at, &u);
        free(unused);
        ml_fail("load_state_dict: %d entries of %s are not in the model (%s); pass {strict = false} to ignore them", k,
                src->where, names);
        goto done;
    }
    bool gm = ml_grad_set(false);
    for (int k = 0; k < w.n_dst; k++) {
        if (ml_interrupted()) break;
        ml_tensor *t = src->get(src->ud, w.from[k]);
        int bad = !t || ml_copy_(w.dst[k]->t, t);
        ml_release(t);
        if (bad) break;
        copied++;
    }
    ml_grad_set(gm);
    if (copied == w.n_dst) rc = copied;
done:
    free(w.by_name);
    free(w.used);
    free(w.dst);
    free(w.from);
    return rc;
}

typedef struct {
    const char *const *names;
    ml_tensor *const *tensors;
} state_arrays;

static const char *arrays_name(void *ud, int i) { return ((state_arrays *)ud)->names[i]; }
static int arrays_shape(void *ud, int i, ml_dtype *dtype, int64_t *shape, const char **label) {
    const ml_tensor *t = ((state_arrays *)ud)->tensors[i];
    *dtype = t->dtype;
    *label = NULL;
    memcpy(shape, t->shape, sizeof *shape * (size_t)t->ndim);
    return t->ndim;
}
static ml_tensor *arrays_get(void *ud, int i) { return ml_retain(((state_arrays *)ud)->tensors[i]); }

int ml_module_load_state_dict(ml_module *m, int n, const char *const *names, ml_tensor *const *tensors, bool strict,
                              const char *where) {
    state_arrays a = {names, tensors};
    ml_state_source src = {n, arrays_name, arrays_shape, arrays_get, &a, where ? where : "the state dict"};
    return ml_module_load_state(m, &src, strict);
}
