/* forced.c -- see forced.h. */
#include "forced.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *shown(const char *path) { return path[0] ? path : "(the model itself)"; }

static int forced_layer(ml_ctx *ctx, const char *type, ml_trace_kind kind, int64_t T, int E, int K, ml_layer_plan *out) {
    int i = ml_trace_index(ctx->routing, ctx->path);
    if (i < 0)
        return ml_failc("%s: the forced routing has no layer '%s' (a trace of another model?)", type, shown(ctx->path));
    const ml_trace_layer *l = &ctx->routing->layers[i];
    if (l->kind != kind || l->E != E || l->K != K)
        return ml_failc("%s: the forced routing's layer '%s' is %s with %d experts, k = %d; this layer is %s with %d "
                        "experts, k = %d (a trace of another model?)", type, shown(ctx->path),
                        ml_trace_kind_name(l->kind), l->E, l->K, ml_trace_kind_name(kind), E, K);
    if (l->T != T)
        return ml_failc("%s: the forced routing of layer '%s' has %" PRId64 " items, this forward routes %" PRId64
                        " (another batch size?)", type, shown(ctx->path), l->T, T);
    ctx->routing_used[i] = true;
    out->forced = l;
    return 0;
}

int ml_layer_plan_get(ml_ctx *ctx, const char *type, ml_trace_kind kind, int64_t T, int E, int K, ml_layer_plan *out) {
    memset(out, 0, sizeof *out);
    if (!ctx) return 0;
    if (ctx->routing && forced_layer(ctx, type, kind, T, E, K, out)) return -1;
    for (int i = 0; i < ctx->n_overrides; i++) {
        const ml_route_override *ov = &ctx->overrides[i];
        if (strcmp(ov->layer, ctx->path)) continue;
        ctx->overrides_used[i] = true;
        const char *verb = ov->what == ML_ROUTE_FORCE ? "force" : "silence";
        if (ov->expert < 0 || ov->expert >= E) {
            ml_layer_plan_free(out);
            return ml_failc("%s: cannot %s expert %d of layer '%s': it has %d experts", type, verb, ov->expert + 1,
                            shown(ctx->path), E);
        }
        if (out->forced) {
            ml_layer_plan_free(out);
            return ml_failc("%s: layer '%s' has a forced routing; it cannot also %s an expert", type, shown(ctx->path), verb);
        }
        if (ov->what == ML_ROUTE_FORCE) {
            if (out->force_first) {
                ml_layer_plan_free(out);
                return ml_failc("%s: two experts forced in layer '%s'", type, shown(ctx->path));
            }
            out->force_first = true;
            out->first_expert = ov->expert;
        } else {
            if (!out->silenced && !(out->silenced = calloc((size_t)E, sizeof(bool)))) return ml_failc_oom(__func__);
            out->silenced[ov->expert] = true;
        }
    }
    if (out->force_first && out->silenced && out->silenced[out->first_expert]) {
        int e = out->first_expert;
        ml_layer_plan_free(out);
        return ml_failc("%s: expert %d of layer '%s' is both forced and silenced", type, e + 1, shown(ctx->path));
    }
    int silenced = 0;
    for (int e = 0; out->silenced && e < E; e++) silenced += out->silenced[e];
    if (E - silenced < K) {
        ml_layer_plan_free(out);
        return ml_failc("%s: layer '%s' needs %d experts per item, but %d of its %d experts are silenced", type,
                        shown(ctx->path), K, silenced, E);
    }
    return 0;
}

void ml_layer_plan_free(ml_layer_plan *p) {
    free(p->silenced);
    memset(p, 0, sizeof *p);
}

bool ml_layer_plan_active(const ml_layer_plan *p) { return p->forced || p->force_first || p->silenced; }

void ml_layer_plan_apply(const ml_layer_plan *p, ml_route_opts *o) {
    o->excluded = p->silenced;
    o->force_first = p->force_first;
    o->first_expert = p->first_expert;
    o->given_experts = p->forced ? p->forced->experts : NULL;
    o->given_kept = p->forced ? p->forced->kept : NULL;
}
