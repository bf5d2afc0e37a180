/* target.c -- attacks on the parts of an MoE (attack.h: o.moe_target): the
 * checks of a target against the objective and the model, frozen routing for
 * experts-only attacks, the steering targets (each layer's weakest expert),
 * steer-then-break in two phases, and the report's routing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../ops/loss.h"
#include "driver.h"

static const char *const target_names[] = {"model", "router", "experts", "steer_then_break"};

const char *ml_moe_target_name(ml_moe_target t) {
    return t >= ML_TARGET_MODEL && t <= ML_TARGET_STEER_THEN_BREAK ? target_names[t] : "unknown";
}

int ml_moe_target_parse(const char *fn, const char *s, ml_moe_target *out) {
    for (int t = ML_TARGET_MODEL; t <= ML_TARGET_STEER_THEN_BREAK; t++)
        if (s && !strcmp(s, target_names[t])) {
            *out = (ml_moe_target)t;
            return 0;
        }
    return ml_failc("%s: unknown target '%s' (use \"model\", \"router\", \"experts\" or \"steer_then_break\")", fn,
                    s ? s : "(none)");
}

/* ---------------------------------------------------------------- the weakest experts */
/* The clean loss (CE summed over bt) when every item of `layer` goes to expert e. */
static int forced_loss(ml_attack_ctx *a, const ml_attack_batch *bt, const char *layer, int e, double *loss) {
    ml_route_override force = {layer, ML_ROUTE_FORCE, e};
    ml_attack_forward f = {.force = &force, .n_force = 1};
    ml_attack_routing r = {0};
    ml_attack_routing_reset(&r, &f);
    bool gm = ml_grad_set(false);
    ml_tensor *z = ml_module_forward(a->model, bt->x, ml_attack_routing_ctx(&r));
    ml_tensor *ce = z ? ml_cross_entropy(z, bt->y, ML_SUM, 0) : NULL;
    ml_grad_set(gm);
    int rc = ce && ml_item(ce, loss) == 0 ? 0 : -1;
    if (z) {
        a->cost->forwards++;
        a->cost->forward_examples += bt->b;
    }
    ml_release(z);
    ml_release(ce);
    ml_attack_routing_free(&r);
    return rc;
}

/* For each MoE layer, the expert that gives the highest clean loss when every
 * item of that layer (and only that layer) is forced to it. */
static int weakest_experts(ml_attack_ctx *a, const ml_attack_batch *bt, int *out) {
    const ml_trace *t = a->clean_trace;
    if (bt->y->dtype != ML_I64)
        return ml_failc("%s: the weakest experts are measured with class labels; give expert = n", a->name);
    for (int l = 0; l < t->n; l++) {
        const ml_trace_layer *layer = &t->layers[l];
        if (layer->kind == ML_TRACE_SMOOTH)
            return ml_failc("%s: layer '%s' routes softly (SmoothMoE): its weakest expert cannot be measured by "
                            "forcing; give expert = n", a->name, layer->name);
        double worst = -INFINITY;
        out[l] = 0;
        for (int e = 0; e < layer->E; e++) {
            double loss;
            if (forced_loss(a, bt, layer->name, e, &loss)) return atk_pass_failed(a);
            if (loss > worst) {
                worst = loss;
                out[l] = e;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- preparing */
static int no_routing(const ml_attack_ctx *a) {
    return ml_failc("%s: target = \"%s\" attacks a part of an MoE, but the model has no MoE layer (its clean forward "
                    "reported no routing)", a->name, ml_moe_target_name(a->o->moe_target));
}

int atk_target_prepare(ml_attack_ctx *a, const ml_attack_batch *bt, ml_objective *steer) {
    const ml_attack_opts *o = a->o;
    int L = a->clean_trace->n;
    bool routing_obj = a->obj && a->obj->routing;
    switch (o->moe_target) {
    case ML_TARGET_MODEL: break;
    case ML_TARGET_ROUTER:
        if (L == 0) return no_routing(a);
        if (!a->obj || !a->obj->needs_trace)
            return ml_failc("%s: target = \"router\" changes only the routing: use a routing objective (routing_kl, "
                            "routing_margin, routing_steer) or a function of the trace, not '%s'", a->name,
                            a->obj ? a->obj->name : "none");
        break;
    case ML_TARGET_EXPERTS:
        if (L == 0) return no_routing(a);
        if (routing_obj)
            return ml_failc("%s: target = \"experts\" freezes the routing, so the objective '%s' cannot change it: use "
                            "a loss of the prediction (ce, ...)", a->name, a->obj->name);
        a->frozen = a->clean_trace;
        break;
    case ML_TARGET_STEER_THEN_BREAK:
        if (L == 0) return no_routing(a);
        if (routing_obj)
            return ml_failc("%s: target = \"steer_then_break\" steers the routing first, then maximises the objective: "
                            "use a loss of the prediction (ce, ...), not '%s'", a->name, a->obj->name);
        break;
    }
    a->steering = steer ? steer : a->obj && !strcmp(a->obj->name, "routing_steer") ? a->obj : NULL;
    if (!a->steering) return 0;
    int *experts = malloc(sizeof *experts * (size_t)(L > 0 ? L : 1));
    if (!experts) return ml_failc_oom(__func__);
    int rc = 0;
    if (o->steer_expert >= 0) {
        for (int l = 0; l < L && rc == 0; l++) {
            if (o->steer_expert >= a->clean_trace->layers[l].E)
                rc = ml_failc("%s: expert %d is out of range: layer '%s' has %d experts", a->name,
                              o->steer_expert + o->index_base, a->clean_trace->layers[l].name,
                              a->clean_trace->layers[l].E);
            experts[l] = o->steer_expert;
        }
    } else {
        rc = weakest_experts(a, bt, experts);
    }
    if (rc == 0) rc = ml_objective_set_steer(a->steering, experts, L);
    free(experts);
    return rc;
}

/* ---------------------------------------------------------------- steer, then break */
int atk_steer_then_break(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, atk_attack_body body,
                         ml_objective *steer, int default_steps) {
    const ml_attack_opts *user = a->o;
    ml_attack_opts phase = *user;
    ml_objective *brk = a->obj;
    int steps = user->steps > 0 ? user->steps : default_steps;
    int first_steps = user->steer_steps > 0 ? user->steer_steps : (steps + 1) / 2;
    if (default_steps > 1 && first_steps >= steps)
        return ml_failc("%s: steer_steps = %d leaves no step to break the prediction (steps = %d)", a->name,
                        first_steps, steps);
    ml_attack_out first = {0};
    ml_tensor *all = NULL;
    int64_t b = bt->b;
    if (atk_out_new(&first, bt) || !(all = ml_empty(ML_I64, 1, &b))) {
        atk_out_free(&first);
        return -1;
    }
    for (int64_t i = 0; i < b; i++) ml_i64(all)[i] = i;
    a->o = &phase;
    phase.steps = first_steps;
    a->obj = steer;
    a->part = "steer";
    int rc = body(a, bt, &first);
    if (rc == 0 && !a->stop) {
        phase.steps = default_steps > 1 ? steps - first_steps : 1;
        phase.random_start = false; /* from the steered point */
        a->obj = brk;
        a->part = a->name;
        a->start = first.x_adv;
        rc = body(a, bt, out);
        a->start = NULL;
        if (rc == 0) atk_out_merge(out, &first, all, true); /* broken while steering stays broken */
    } else if (rc == 0) {
        atk_out_merge(out, &first, all, false); /* stopped while steering: the steered batch */
    }
    a->o = user;
    a->obj = brk;
    a->part = a->name;
    ml_release(all);
    atk_out_free(&first);
    return rc;
}

/* ---------------------------------------------------------------- the report */
int atk_target_report(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_report *rep) {
    const ml_trace *clean = a->clean_trace, *cur = ml_attack_routing_trace(&a->routing);
    int64_t B = bt->b;
    rep->prediction_changed = 0;
    for (int64_t i = 0; i < B; i++) rep->prediction_changed += ml_i64(rep->pred_adv)[i] != ml_i64(rep->pred_clean)[i];
    int L = clean ? clean->n : 0;
    if (L == 0 || !cur) return 0;
    double *rate = malloc(sizeof *rate * (size_t)L);
    float *changed = malloc(sizeof *changed * (size_t)B);
    rep->layers = calloc((size_t)L, sizeof *rep->layers);
    int rc = rate && changed && rep->layers ? 0 : ml_failc_oom(__func__);
    int64_t n = rc ? -1 : ml_attack_routing_change(a->name, clean, B, cur, rate, changed);
    if (n < 0) rc = -1;
    for (int l = 0; rc == 0 && l < L; l++) {
        ml_attack_layer *r = &rep->layers[l];
        const ml_trace_layer *cl = &cur->layers[l];
        snprintf(r->name, sizeof r->name, "%s", cl->name);
        r->change = rate[l];
        r->steer = a->steering && l < a->steering->n_steer ? a->steering->steer[l] : -1;
        r->steered = NAN;
        if (r->steer >= 0) {
            int64_t hits = 0;
            for (int64_t t = 0; t < cl->T; t++) hits += ml_i64(cl->experts)[t * cl->K] == r->steer;
            r->steered = cl->T ? (double)hits / (double)cl->T : 0;
        }
    }
    if (rc == 0) {
        rep->n_layers = L;
        rep->routing_changed = n;
    } else {
        free(rep->layers);
        rep->layers = NULL;
    }
    free(rate);
    free(changed);
    return rc;
}
