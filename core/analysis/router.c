/* router.c -- router weights of a traced MoE layer (router.h). */
#include "router.h"

#include <stdio.h>
#include <string.h>

#include "../ops/shape.h"

ml_module *ml_module_at(const char *fn, ml_module *m, const char *path) {
    char buf[ML_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ml_fail("%s: path '%s' is too long", fn, path);
    ml_module *cur = m;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save)) {
        ml_module *next = ml_module_child(cur, tok);
        if (!next) return ml_fail("%s: the model has no module '%s' (no child '%s')", fn, path, tok);
        cur = next;
    }
    return cur;
}

void ml_router_weights_free(ml_router_weights *w) {
    ml_release(w->weight);
    ml_release(w->bias);
    memset(w, 0, sizeof *w);
}

/* The global router's last Linear: the model's child "router" (a Sequential). */
static ml_module *global_linear(const char *fn, ml_module *model) {
    ml_module *r = ml_module_child(model, "router");
    ml_module *last = r && r->n_children ? r->children[r->n_children - 1].m : NULL;
    if (!last || strcmp(last->type->name, "Linear"))
        return ml_fail("%s: a globally routed layer, but the model has no global router ending in a Linear", fn);
    return last;
}

int ml_router_weights_get(const char *fn, ml_module *model, const ml_trace *trace, int i, ml_router_weights *out) {
    memset(out, 0, sizeof *out);
    const ml_trace_layer *l = &trace->layers[i];
    out->layer = ml_module_at(fn, model, l->name);
    if (!out->layer) return -1;
    if (l->kind == ML_TRACE_GLOBAL) {
        ml_module *lin = global_linear(fn, model);
        if (!lin) return -1;
        int g = 0;
        for (int j = 0; j < i; j++) g += trace->layers[j].kind == ML_TRACE_GLOBAL;
        ml_tensor *W = ml_module_param(lin, "weight"), *b = ml_module_param(lin, "bias");
        if (W->shape[0] < (int64_t)(g + 1) * l->E)
            return ml_failc("%s: the global router has %lld outputs, too few for layer '%s' (global layer %d of %d "
                            "experts)", fn, (long long)W->shape[0], l->name, g + 1, l->E);
        out->weight = ml_narrow(W, 0, (int64_t)g * l->E, l->E);
        out->bias = b ? ml_narrow(b, 0, (int64_t)g * l->E, l->E) : NULL;
        return out->weight && (!b || out->bias) ? 0 : -1;
    }
    ml_module *r = ml_module_child(out->layer, "router");
    ml_tensor *W = r ? ml_module_param(r, "weight") : NULL;
    if (!W || W->ndim != 2 || W->shape[0] != l->E)
        return ml_failc("%s: layer '%s' (%s) has no router of %d experts", fn, l->name, out->layer->type->name, l->E);
    out->weight = ml_retain(W);
    return 0;
}
