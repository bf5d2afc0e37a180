/* pathway.c -- pathway IoU against a static channel mask (pathway.h). */
#include "pathway.h"

#include <inttypes.h>
#include <stdlib.h>

#include "../nn/moe/moe_conv.h"

ml_tensor *ml_pathway_expert_channels(const char *fn, const ml_module *layer) {
    int64_t first, count;
    if (ml_moe_conv_expert_channels(fn, layer, 0, &first, &count)) return NULL;
    cJSON *cfg = ml_module_config(layer);
    int E = 0, C = 0;
    int rc = cfg ? ml_cfg_int(cfg, "experts", 0, &E) || ml_cfg_int(cfg, "out", 0, &C) : -1;
    cJSON_Delete(cfg);
    if (rc) return NULL;
    int64_t shape[2] = {E, C};
    ml_tensor *m = ml_zeros(ML_F32, 2, shape);
    for (int e = 0; m && e < E; e++) {
        if (ml_moe_conv_expert_channels(fn, layer, e, &first, &count)) {
            ml_release(m);
            return NULL;
        }
        for (int64_t c = first; c < first + count; c++) ml_f32(m)[e * C + c] = 1.0f;
    }
    return m;
}

static int check_01(const char *fn, const char *what, const ml_tensor *t) {
    const float *v = ml_f32(t);
    for (int64_t i = 0, n = ml_numel(t); i < n; i++)
        if (v[i] != 0.0f && v[i] != 1.0f) return ml_failc("%s: %s must hold 0 or 1, got %g", fn, what, (double)v[i]);
    return 0;
}

ml_tensor *ml_pathway_iou(const char *fn, const ml_trace_layer *l, const ml_tensor *expert_channels, const ml_tensor *mask) {
    const ml_tensor *ec = expert_channels;
    if (ec->dtype != ML_F32 || ec->ndim != 2 || ec->shape[0] != l->E)
        return ml_fail("%s: the experts' channels must be float [%d, C] for layer '%s', got %s %s", fn, l->E, l->name,
                       ml_dtype_name(ec->dtype), ML_SHAPE_STR(ec));
    int64_t C = ec->shape[1], T = l->T, K = l->K;
    if (mask->dtype != ML_F32 || mask->ndim != 1 || mask->shape[0] != C)
        return ml_fail("%s: the mask of layer '%s' must be float [%" PRId64 "] (one entry per output channel), got %s %s",
                       fn, l->name, C, ml_dtype_name(mask->dtype), ML_SHAPE_STR(mask));
    ml_tensor *ecc = ml_contiguous((ml_tensor *)ec), *mc = ml_contiguous((ml_tensor *)mask);
    ml_tensor *iou = NULL;
    unsigned char *sel = ecc && mc ? malloc((size_t)C) : NULL;
    if (sel && !check_01(fn, "the experts' channels", ecc) && !check_01(fn, "the mask", mc) &&
        (iou = ml_empty(ML_F32, 1, &T))) {
        const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
        const float *chan = ml_f32(ecc), *mk = ml_f32(mc);
        for (int64_t t = 0; t < T; t++) {
            for (int64_t c = 0; c < C; c++) sel[c] = 0;
            for (int64_t k = 0; k < K; k++)
                if (kept[t * K + k])
                    for (int64_t c = 0; c < C; c++) sel[c] |= chan[ex[t * K + k] * C + c] != 0.0f;
            int64_t inter = 0, uni = 0;
            for (int64_t c = 0; c < C; c++) {
                bool m = mk[c] != 0.0f;
                inter += sel[c] && m;
                uni += sel[c] || m;
            }
            ml_f32(iou)[t] = uni ? (float)((double)inter / (double)uni) : 1.0f;
        }
    } else if (ecc && mc && !sel) {
        ml_fail("out of memory");
    }
    free(sel);
    ml_release(ecc);
    ml_release(mc);
    return iou;
}
