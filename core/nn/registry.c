/* registry.c -- see registry.h. */
#include "registry.h"

#include <string.h>

#include "cnn.h"
#include "layers.h"
#include "moe/moe.h"
#include "moe/moe_conv.h"
#include "transformer.h"
#include "zoo.h"

static const ml_module_kind *const lists[] = {ml_layers_kinds, ml_cnn_kinds,  ml_transformer_kinds,
                                              ml_moe_kinds,    ml_moe_conv_kinds, ml_zoo_kinds};
#define N_LISTS (int)(sizeof lists / sizeof lists[0])

int ml_module_kind_count(void) {
    int n = 0;
    for (int l = 0; l < N_LISTS; l++)
        for (const ml_module_kind *k = lists[l]; k->name; k++) n++;
    return n;
}

const ml_module_kind *ml_module_kind_at(int i) {
    for (int l = 0; l < N_LISTS; l++)
        for (const ml_module_kind *k = lists[l]; k->name; k++)
            if (i-- == 0) return k;
    return NULL;
}

const ml_module_kind *ml_module_kind_find(const char *name) {
    for (int l = 0; l < N_LISTS; l++)
        for (const ml_module_kind *k = lists[l]; k->name; k++)
            if (!strcmp(k->name, name)) return k;
    return NULL;
}

ml_module *ml_module_from_config(const cJSON *config) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(config, "type");
    if (!cJSON_IsString(type)) return ml_fail("model config: missing \"type\"");
    const ml_module_kind *k = ml_module_kind_find(type->valuestring);
    if (!k) return ml_fail("model config: unknown module type '%s'", type->valuestring);
    return k->from_config(config);
}
