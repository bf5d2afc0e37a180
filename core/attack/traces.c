/* traces.c -- the attacks' adapter to the routing traces of a forward (see
 * traces.h): the only file of core/attack that reads ml_ctx's trace fields. */
#include <string.h>

#include "traces.h"

void ml_attack_routing_reset(ml_attack_routing *r, bool trace, bool aux) {
    ml_ctx_clear(&r->ctx);
    memset(&r->ctx, 0, sizeof r->ctx);
    r->ctx.trace = trace;
    r->ctx.want_aux = aux;
}

ml_ctx *ml_attack_routing_ctx(ml_attack_routing *r) { return &r->ctx; }

ml_tensor *ml_attack_routing_aux(const ml_attack_routing *r) { return r->ctx.aux; }

int ml_attack_routing_layers(const ml_attack_routing *r) { return r->ctx.traces ? r->ctx.traces->n : 0; }

const ml_trace *ml_attack_routing_trace(const ml_attack_routing *r) { return r->ctx.traces; }

void ml_attack_routing_move(ml_attack_routing *dst, ml_attack_routing *src) {
    ml_attack_routing_free(dst);
    dst->ctx.traces = ml_ctx_take_trace(&src->ctx);
    dst->ctx.trace = true;
}

void ml_attack_routing_free(ml_attack_routing *r) {
    ml_ctx_clear(&r->ctx);
    memset(&r->ctx, 0, sizeof r->ctx);
}
