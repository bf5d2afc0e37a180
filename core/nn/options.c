/* options.c -- declarative module options (options.h). */
#include "options.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../error.h"

const char *ml_option_type_name(ml_option_type type) {
    static const char *const names[] = {"integer", "number", "boolean", "choice", "config"};
    return type >= 0 && type <= ML_OPT_CONFIG ? names[type] : "unknown";
}

/* The i-th choice of "a|b|c" into buf; false past the end. */
static bool choice_at(const char *choices, int i, char *buf, size_t n) {
    const char *p = choices;
    for (int k = 0; k < i && p; k++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p || !*p) return false;
    size_t len = strcspn(p, "|");
    snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), p);
    return true;
}

static int choice_index(const char *choices, const char *s) {
    char name[64];
    for (int i = 0; choice_at(choices, i, name, sizeof name); i++)
        if (!strcmp(name, s)) return i;
    return -1;
}

const ml_option *ml_options_find(const ml_options *t, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->list[i].key, key)) return &t->list[i];
    return NULL;
}

static void set_default(const ml_option *o, void *field) {
    switch (o->type) {
    case ML_OPT_INT:
    case ML_OPT_CHOICE: *(int *)field = (int)o->def; break;
    case ML_OPT_NUMBER: *(double *)field = o->def; break;
    case ML_OPT_BOOL: *(bool *)field = o->def != 0; break;
    case ML_OPT_CONFIG: *(const cJSON **)field = NULL; break;
    }
}

void ml_options_defaults(const ml_options *t, void *out) {
    for (int i = 0; i < t->n; i++) set_default(&t->list[i], (char *)out + t->list[i].offset);
}

/* Reads the value v (not NULL, not null) of option o into field. */
static int read_value(const char *who, const ml_option *o, const cJSON *v, void *field) {
    double x = v->valuedouble;
    switch (o->type) {
    case ML_OPT_INT:
        if (!cJSON_IsNumber(v) || x != floor(x) || fabs(x) > 1e9)
            return ml_failc("%s: option '%s' must be an integer", who, o->key);
        break;
    case ML_OPT_NUMBER:
        if (!cJSON_IsNumber(v) || !isfinite(x)) return ml_failc("%s: option '%s' must be a number", who, o->key);
        break;
    case ML_OPT_BOOL:
        if (!cJSON_IsBool(v)) return ml_failc("%s: option '%s' must be true or false", who, o->key);
        *(bool *)field = cJSON_IsTrue(v);
        return 0;
    case ML_OPT_CHOICE: {
        int i = cJSON_IsString(v) ? choice_index(o->choices, v->valuestring) : -1;
        if (i < 0) {
            char list[128];
            size_t len = 0;
            char name[64];
            for (int k = 0; choice_at(o->choices, k, name, sizeof name) && len < sizeof list; k++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%s\"", k ? " or " : "", name);
            return ml_failc("%s: %s must be %s, got %s%s%s", who, o->key, list, cJSON_IsString(v) ? "\"" : "a ",
                            cJSON_IsString(v) ? v->valuestring : "non-string value", cJSON_IsString(v) ? "\"" : "");
        }
        *(int *)field = i;
        return 0;
    }
    case ML_OPT_CONFIG: *(const cJSON **)field = v; return 0;
    }
    if (o->min < o->max && !(x >= o->min && x <= o->max)) {
        if (isinf(o->max)) return ml_failc("%s: %s = %g must be >= %g", who, o->key, x, o->min);
        return ml_failc("%s: %s = %g must be between %g and %g", who, o->key, x, o->min, o->max);
    }
    if (o->type == ML_OPT_INT) *(int *)field = (int)x;
    else *(double *)field = x;
    return 0;
}

static int read_one(const char *who, const ml_option *o, cJSON *cfg, void *field, bool record) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, o->key);
    if (v && !cJSON_IsNull(v)) return read_value(who, o, v, field);
    if (o->required) return ml_failc("%s: option '%s' is required", who, o->key);
    set_default(o, field);
    if (!record || !cfg) return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, o->key);
    switch (o->type) {
    case ML_OPT_INT:
    case ML_OPT_NUMBER: cJSON_AddNumberToObject(cfg, o->key, o->def); break;
    case ML_OPT_BOOL: cJSON_AddBoolToObject(cfg, o->key, o->def != 0); break;
    case ML_OPT_CHOICE: {
        char name[64];
        choice_at(o->choices, (int)o->def, name, sizeof name);
        cJSON_AddStringToObject(cfg, o->key, name);
        break;
    }
    case ML_OPT_CONFIG: break;
    }
    return 0;
}

int ml_option_read_one(const ml_options *t, const ml_option *o, cJSON *cfg, void *field, bool record) {
    return read_one(t->type, o, cfg, field, record);
}

int ml_option_read_key(const ml_options *t, const char *key, cJSON *cfg, void *field, bool record, const char *who) {
    const ml_option *o = ml_options_find(t, key);
    if (!o) return ml_failc("%s: no option '%s'", t->type, key); /* a programming error */
    return read_one(who ? who : t->type, o, cfg, field, record);
}

int ml_options_read(const ml_options *t, const cJSON *cfg, void *out, bool allow_other) {
    if (cfg && !cJSON_IsObject(cfg)) return ml_failc("%s: the options must be an object", t->type);
    for (const cJSON *it = cfg ? cfg->child : NULL; it && !allow_other; it = it->next) {
        if (!it->string || !strcmp(it->string, "type") || ml_options_find(t, it->string)) continue;
        char list[512];
        size_t len = 0;
        for (int i = 0; i < t->n && len < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", t->list[i].key);
        return ml_failc("%s: unknown option '%s' (known: %s)", t->type, it->string, list);
    }
    for (int i = 0; i < t->n; i++)
        if (ml_option_read_one(t, &t->list[i], (cJSON *)cfg, (char *)out + t->list[i].offset, false)) return -1;
    return 0;
}

int ml_options_write(const ml_options *t, const void *in, cJSON *obj) {
    for (int i = 0; i < t->n; i++) {
        const ml_option *o = &t->list[i];
        const void *f = (const char *)in + o->offset;
        cJSON *v = NULL;
        char name[64];
        switch (o->type) {
        case ML_OPT_INT: v = cJSON_CreateNumber(*(const int *)f); break;
        case ML_OPT_NUMBER: v = cJSON_CreateNumber(*(const double *)f); break;
        case ML_OPT_BOOL: v = cJSON_CreateBool(*(const bool *)f); break;
        case ML_OPT_CHOICE:
            choice_at(o->choices, *(const int *)f, name, sizeof name);
            v = cJSON_CreateString(name);
            break;
        case ML_OPT_CONFIG:
            if (!*(const cJSON *const *)f) continue;
            v = cJSON_Duplicate(*(const cJSON *const *)f, true);
            break;
        }
        if (!v || !cJSON_AddItemToObject(obj, o->key, v)) {
            cJSON_Delete(v);
            return ml_failc_oom(__func__);
        }
    }
    return 0;
}

cJSON *ml_options_config(const ml_options *t, const void *in) {
    cJSON *c = cJSON_CreateObject();
    if (!c || !cJSON_AddStringToObject(c, "type", t->type) || ml_options_write(t, in, c)) {
        cJSON_Delete(c);
        return ml_fail_oom(t->type);
    }
    return c;
}

void ml_option_default_text(const ml_option *o, char *buf, size_t n) {
    if (o->def_text) {
        snprintf(buf, n, "%s", o->def_text);
        return;
    }
    if (o->required) {
        snprintf(buf, n, "required");
        return;
    }
    char name[64];
    switch (o->type) {
    case ML_OPT_INT:
    case ML_OPT_NUMBER: snprintf(buf, n, "%.10g", o->def); break;
    case ML_OPT_BOOL: snprintf(buf, n, "%s", o->def != 0 ? "true" : "false"); break;
    case ML_OPT_CHOICE:
        choice_at(o->choices, (int)o->def, name, sizeof name);
        snprintf(buf, n, "\"%s\"", name);
        break;
    case ML_OPT_CONFIG: snprintf(buf, n, "nil"); break;
    }
}
