/* trace_file.c -- routing traces in safetensors files (trace_file.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "trace_file.h"

static const char *const fields[] = {"experts", "kept", "gates", "probs", "logits"};
#define N_FIELDS 5

static ml_tensor *field(const ml_trace_layer *l, int f) {
    ml_tensor *v[N_FIELDS] = {l->experts, l->kept, l->gates, l->probs, l->logits};
    return v[f];
}

void ml_trace_parts_free(ml_trace_parts *p) {
    for (int i = 0; i < p->n; i++) free(p->names[i]);
    free(p->names);
    free(p->tensors);
    free(p->meta_key);
    free(p->meta_value);
    memset(p, 0, sizeof *p);
}

int ml_trace_pack(const ml_trace *t, const char *prefix, ml_trace_parts *out) {
    memset(out, 0, sizeof *out);
    size_t cap = (size_t)t->n * N_FIELDS + 1;
    out->names = calloc(cap, sizeof *out->names);
    out->tensors = calloc(cap, sizeof *out->tensors);
    cJSON *meta = cJSON_CreateObject(), *layers = meta ? cJSON_AddArrayToObject(meta, "layers") : NULL;
    size_t klen = strlen(prefix) + sizeof "trace";
    out->meta_key = malloc(klen);
    if (!out->names || !out->tensors || !layers || !out->meta_key) {
        cJSON_Delete(meta);
        ml_trace_parts_free(out);
        return ml_failc_oom(__func__);
    }
    snprintf(out->meta_key, klen, "%strace", prefix);
    cJSON_AddStringToObject(meta, "format", "moelab.trace/1");
    for (int i = 0; i < t->n; i++) {
        const ml_trace_layer *l = &t->layers[i];
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "name", l->name);
        cJSON_AddStringToObject(d, "kind", ml_trace_kind_name(l->kind));
        cJSON_AddNumberToObject(d, "E", l->E);
        cJSON *aux = cJSON_AddObjectToObject(d, "aux");
        for (int k = 0; k < ML_AUX_COUNT; k++)
            if (!isnan(l->aux[k])) cJSON_AddNumberToObject(aux, ml_aux_names[k], l->aux[k]);
        cJSON_AddItemToArray(layers, d);
        for (int f = 0; f < N_FIELDS; f++) {
            ml_tensor *x = field(l, f);
            if (!x) continue;
            char name[64 + 32];
            snprintf(name, sizeof name, "%s%d.%s", prefix, i, fields[f]);
            out->names[out->n] = strdup(name);
            out->tensors[out->n++] = x;
        }
    }
    out->meta_value = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!out->meta_value) {
        ml_trace_parts_free(out);
        return ml_failc_oom(__func__);
    }
    return 0;
}

ml_trace *ml_trace_unpack(const ml_st_file *f, const char *prefix) {
    char key[128];
    snprintf(key, sizeof key, "%strace", prefix);
    const char *text = ml_st_meta_get(f, key);
    if (!text) return ml_fail("trace file: no routing trace in it (metadata '%s' is missing)", key);
    cJSON *meta = cJSON_Parse(text);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(meta, "layers");
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(meta, "format");
    if (!cJSON_IsArray(layers) || !cJSON_IsString(format) || strcmp(format->valuestring, "moelab.trace/1")) {
        cJSON_Delete(meta);
        return ml_fail("trace file: metadata '%s' is not a moelab routing trace", key);
    }
    ml_trace *t = ml_trace_new();
    if (!t) {
        cJSON_Delete(meta);
        return NULL;
    }
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, layers) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name"), *kind = cJSON_GetObjectItemCaseSensitive(d, "kind");
        const cJSON *E = cJSON_GetObjectItemCaseSensitive(d, "E"), *aux = cJSON_GetObjectItemCaseSensitive(d, "aux");
        ml_trace_entry e = {0};
        double av[ML_AUX_COUNT];
        for (int k = 0; k < ML_AUX_COUNT; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(aux, ml_aux_names[k]);
            av[k] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        }
        ml_tensor *v[N_FIELDS] = {0};
        int rc = !cJSON_IsString(name) || !cJSON_IsNumber(E)
                     ? ml_failc("trace file: layer %d has no name or number of experts", i + 1)
                     : ml_trace_kind_parse("trace file", cJSON_GetStringValue(kind), &e.kind);
        for (int fi = 0; fi < N_FIELDS && !rc; fi++) {
            char tname[128];
            snprintf(tname, sizeof tname, "%s%d.%s", prefix, i, fields[fi]);
            if (ml_st_find(f, tname) < 0) {
                if (fi == 0) rc = ml_failc("trace file: tensor '%s' is missing", tname);
                continue;
            }
            v[fi] = ml_st_get(f, tname);
            if (!v[fi]) rc = -1;
        }
        if (!rc) {
            e.name = name->valuestring;
            e.E = (int)E->valuedouble;
            e.experts = v[0];
            e.kept = v[1];
            e.gates = v[2];
            e.probs = v[3];
            e.logits = v[4];
            e.aux = av;
            rc = ml_trace_add(t, &e, false);
        }
        for (int fi = 0; fi < N_FIELDS; fi++) ml_release(v[fi]);
        if (rc) {
            ml_trace_free(t);
            cJSON_Delete(meta);
            return NULL;
        }
        i++;
    }
    cJSON_Delete(meta);
    return t;
}

int ml_trace_save(const char *path, const ml_trace *t) {
    ml_trace_parts p;
    if (ml_trace_pack(t, "", &p)) return -1;
    const char *k = p.meta_key, *v = p.meta_value;
    int rc = ml_st_save(path, p.n, (const char *const *)p.names, p.tensors, 1, &k, &v);
    ml_trace_parts_free(&p);
    return rc;
}

ml_trace *ml_trace_load(const char *path) {
    ml_st_file *f = ml_st_open(path);
    if (!f) return NULL;
    ml_trace *t = ml_trace_unpack(f, "");
    ml_st_close(f);
    if (!t) ml_error_prefix("%s: ", path);
    return t;
}
