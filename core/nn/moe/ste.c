/* ste.c -- the straight-through term of a hard expert selection (ste.h). */
#include "ste.h"

#include "../../autograd.h"
#include "../../ops/elementwise.h"
#include "../../ops/linalg.h"
#include "../../ops/shape.h"
#include "../module.h"

bool ml_moe_ste_wanted(const ml_ctx *ctx) { return ctx && ctx->selection_ste && ml_grad_enabled(); }

/* (p - sg(p)) sg(p): zero in value, gradient p_e to p_e times what multiplies it. */
static ml_tensor *ste_coefficients(ml_tensor *probs) {
    ml_tensor *frozen = ml_detach(probs);
    ml_tensor *diff = frozen ? ml_sub(probs, frozen) : NULL;
    ml_tensor *c = diff ? ml_mul(diff, frozen) : NULL;
    ml_release(frozen);
    ml_release(diff);
    return c;
}

ml_tensor *ml_moe_ste_tokens(ml_tensor *probs, ml_tensor *const *outputs, int E) {
    ml_tensor *c = ste_coefficients(probs), *acc = NULL;
    for (int e = 0; c && e < E; e++) {
        ml_tensor *ce = ml_narrow(c, 1, e, 1); /* [T, 1] */
        ml_tensor *term = ce ? ml_mul(ce, outputs[e]) : NULL;
        ml_release(ce);
        if (!term) {
            ml_release(acc);
            acc = NULL;
            break;
        }
        if (!acc) {
            acc = term;
            continue;
        }
        ml_tensor *sum = ml_add(acc, term);
        ml_release(acc);
        ml_release(term);
        if (!(acc = sum)) break;
    }
    ml_release(c);
    return acc;
}

ml_tensor *ml_moe_ste_channels(ml_tensor *probs, ml_tensor *full, const int64_t *start, int64_t block) {
    int64_t N = probs->shape[0], E = probs->shape[1], C = full->shape[1];
    int64_t ms[2] = {E, C};
    ml_tensor *owns = ml_zeros(ML_F32, 2, ms); /* [E, C]: 1 where expert e owns channel c */
    if (!owns) return NULL;
    for (int64_t e = 0; e < E; e++)
        for (int64_t k = 0; k < block; k++) ml_f32(owns)[e * C + start[e] + k] = 1.0f;
    ml_tensor *c = ste_coefficients(probs);
    ml_tensor *per_channel = c ? ml_matmul(c, owns) : NULL; /* [N, C] */
    int64_t s4[4] = {N, C, 1, 1};
    ml_tensor *r = per_channel ? ml_reshape(per_channel, 4, s4) : NULL;
    ml_tensor *out = r ? ml_mul(r, full) : NULL;
    ml_release(owns);
    ml_release(c);
    ml_release(per_channel);
    ml_release(r);
    return out;
}
