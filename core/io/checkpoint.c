/* checkpoint.c -- see checkpoint.h. */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../memory.h"
#include "../nn/registry.h"

#ifndef MOELAB_VERSION
#define MOELAB_VERSION "unknown"
#endif

#define OPTIM_PREFIX "optim."
#define MAX_CONFIG ((size_t)4 << 20) /* a config of 4 MB is ~40,000 layers; the JSON tree costs ~40x */

/* ------------------------------------------------------------ saving */
typedef struct {
    int n, cap;
    char **names;       /* owned */
    ml_tensor **tensors; /* borrowed */
} name_list;

static int list_add(name_list *l, const char *name, ml_tensor *t) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **nn = realloc(l->names, sizeof *nn * (size_t)cap);
        if (nn) l->names = nn;
        ml_tensor **tt = realloc(l->tensors, sizeof *tt * (size_t)cap);
        if (tt) l->tensors = tt;
        if (!nn || !tt) return ml_failc("save: out of memory");
        l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(name))) return ml_failc("save: out of memory");
    l->tensors[l->n++] = t;
    return 0;
}

static void list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->tensors);
}

static int collect_cb(void *ud, const char *path, ml_param *p, ml_module *owner) { return list_add(ud, path, p->t); }

static bool is_optim(const char *name) { return !strncmp(name, OPTIM_PREFIX, strlen(OPTIM_PREFIX)); }

/* The model's tensors by full name and by identity (both binary searches,
 * so models with many tensors save and load in n log n). */
typedef struct {
    name_list l; /* the model's tensors first (count of them), then what a save adds */
    int count;
    int *by_name, *by_ptr;
} model_index;

static int cmp_index_name(const void *a, const void *b, void *ud) {
    const name_list *l = ud;
    return strcmp(l->names[*(const int *)a], l->names[*(const int *)b]);
}

static int cmp_index_ptr(const void *a, const void *b, void *ud) {
    const name_list *l = ud;
    uintptr_t x = (uintptr_t)l->tensors[*(const int *)a], y = (uintptr_t)l->tensors[*(const int *)b];
    return x < y ? -1 : x > y;
}

static void index_free(model_index *x) {
    list_free(&x->l);
    free(x->by_name);
    free(x->by_ptr);
}

static int index_build(ml_module *m, bool with_buffers, model_index *x) {
    memset(x, 0, sizeof *x);
    if (ml_module_visit_params(m, with_buffers, collect_cb, &x->l)) return -1;
    x->count = x->l.n;
    size_t n = (size_t)x->count;
    x->by_name = malloc(sizeof *x->by_name * (n + 1));
    x->by_ptr = malloc(sizeof *x->by_ptr * (n + 1));
    if (!x->by_name || !x->by_ptr) return ml_failc("checkpoint: out of memory");
    for (int i = 0; i < x->count; i++) x->by_name[i] = x->by_ptr[i] = i;
    qsort_r(x->by_name, n, sizeof *x->by_name, cmp_index_name, &x->l);
    qsort_r(x->by_ptr, n, sizeof *x->by_ptr, cmp_index_ptr, &x->l);
    return 0;
}

static ml_tensor *index_tensor(const model_index *x, const char *name) {
    int lo = 0, hi = x->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(x->l.names[x->by_name[mid]], name);
        if (c == 0) return x->l.tensors[x->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static const char *index_name(const model_index *x, const ml_tensor *t) {
    int lo = 0, hi = x->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const ml_tensor *u = x->l.tensors[x->by_ptr[mid]];
        if (u == t) return x->l.names[x->by_ptr[mid]];
        if ((uintptr_t)u < (uintptr_t)t) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int ml_checkpoint_save(const char *path, ml_module *model, ml_optim *optim, const ml_checkpoint_meta *meta) {
    static const ml_checkpoint_meta none = {0};
    if (!meta) meta = &none;
    if (!path || !model) return ml_failc("save: %s is missing", !path ? "the file path" : "the model");
    if (meta->n < 0) return ml_failc("save: %d metadata entries", meta->n);
    for (int i = 0; i < meta->n; i++)
        if (!meta->keys[i] || !strncmp(meta->keys[i], "moelab.", 7))
            return ml_failc("save: metadata key '%s' is reserved (keys starting with 'moelab.' belong to the format)",
                            meta->keys[i] ? meta->keys[i] : "(null)");
    cJSON *cfg = ml_module_config(model);
    if (!cfg) return -1;
    char *config = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    if (!config) return ml_failc("save: out of memory");
    model_index x;
    name_list *l = &x.l;
    char steps[32], lr[40], epoch[32], name[ML_PATH_MAX + 16];
    int rc = index_build(model, true, &x);
    for (int i = 0; !rc && i < l->n; i++)
        if (is_optim(l->names[i]))
            rc = ml_failc("save: the model's tensor '%s' would load as optimizer state (its name starts with 'optim.')",
                          l->names[i]);
    for (int i = 0; optim && !rc && i < ml_optim_num_params(optim); i++) {
        const char *pn = meta->optim_names ? meta->optim_names[i] : index_name(&x, ml_optim_param(optim, i));
        if (!pn) {
            rc = ml_failc("save: the optimizer's parameter %d is not a parameter of the model (give the optimizer's "
                          "parameter names)", i + 1);
            break;
        }
        ml_tensor *s[2];
        ml_optim_state(optim, i, &s[0], &s[1]);
        for (int k = 0; k < 2 && !rc; k++) {
            if (!s[k]) continue;
            snprintf(name, sizeof name, OPTIM_PREFIX "%s.s%d", pn, k + 1);
            rc = list_add(l, name, s[k]);
        }
    }
    const char **keys = rc ? NULL : malloc(sizeof *keys * (size_t)(6 + meta->n));
    const char **values = rc ? NULL : malloc(sizeof *values * (size_t)(6 + meta->n));
    if (!rc && (!keys || !values)) rc = ml_failc("save: out of memory");
    if (!rc) {
        int m = 0;
        keys[m] = "moelab.format", values[m++] = ML_CHECKPOINT_FORMAT;
        keys[m] = "moelab.config", values[m++] = config;
        keys[m] = "moelab.version", values[m++] = MOELAB_VERSION;
        if (optim) {
            snprintf(steps, sizeof steps, "%" PRId64, ml_optim_steps(optim));
            snprintf(lr, sizeof lr, "%.17g", ml_optim_get_lr(optim));
            keys[m] = "moelab.optim_steps", values[m++] = steps;
            keys[m] = "moelab.optim_lr", values[m++] = lr;
        }
        if (meta->has_epoch) {
            snprintf(epoch, sizeof epoch, "%" PRId64, meta->epoch);
            keys[m] = "moelab.epoch", values[m++] = epoch;
        }
        for (int i = 0; i < meta->n; i++) keys[m] = meta->keys[i], values[m++] = meta->values[i];
        rc = ml_st_save(path, l->n, (const char *const *)l->names, l->tensors, m, keys, values);
    }
    free(keys);
    free(values);
    index_free(&x);
    free(config);
    return rc;
}

/* ------------------------------------------------------------ loading */
void ml_checkpoint_free(ml_checkpoint *c) {
    if (!c) return;
    if (c->model) ml_module_release(c->model);
    ml_st_close(c->file);
    free(c);
}

/* The file's model tensors (those not named optim.*) as a state-dict source. */
typedef struct {
    const ml_st_file *f;
    int *idx; /* file entries */
} file_source;

static const char *fs_name(void *ud, int i) {
    file_source *s = ud;
    return ml_st_name(s->f, s->idx[i]);
}
static int fs_shape(void *ud, int i, ml_dtype *dtype, int64_t *shape, const char **label) {
    file_source *s = ud;
    const char *dt = ml_st_dtype(s->f, s->idx[i]);
    int nd = ml_st_shape(s->f, s->idx[i], dtype, shape);
    *label = (*dtype == ML_F32 && strcmp(dt, "F32")) || (*dtype == ML_I64 && strcmp(dt, "I64")) ? dt : NULL;
    return nd;
}
static ml_tensor *fs_get(void *ud, int i) {
    file_source *s = ud;
    return ml_st_get_at(s->f, s->idx[i]);
}

/* A metadata number: a non-negative integer, or -1 when absent. */
static int meta_int(const ml_st_file *f, const char *key, int64_t *out) {
    const char *v = ml_st_meta_get(f, key);
    *out = -1;
    if (!v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0 || v[0] < '0' || v[0] > '9') /* digits only: no sign, no blanks */
        return ml_failc("checkpoint: %s: metadata %s is '%.40s', not a non-negative integer", ml_st_path(f), key, v);
    *out = x;
    return 0;
}

/* Bytes the model's tensors would take in memory, as loaded from the file,
 * with the allocator's rounding (up to a quarter), a minimum block per tensor,
 * and twice that for the temporaries of initialisation. Measured on the zoo:
 * a model's build allocates 1.00-1.14x its tensors' bytes. */
static int64_t model_budget(const ml_st_file *f) {
    int64_t total = 1 << 20; /* modules' own small buffers */
    for (int i = 0; i < ml_st_count(f); i++) {
        if (is_optim(ml_st_name(f, i))) continue;
        int64_t shape[ML_MAX_DIMS], numel = 1;
        ml_dtype dt;
        int nd = ml_st_shape(f, i, &dt, shape);
        for (int d = 0; d < nd; d++) numel *= shape[d]; /* fits: the file holds these bytes */
        int64_t bytes = numel * (int64_t)ml_dtype_size(dt);
        total += 2 * (bytes + bytes / 4 + 512);
    }
    return total;
}

/* Optimizer entries: "optim.<name>.s1|s2", float, and when <name> is a model
 * parameter, its shape. */
static int check_optim_entries(const ml_checkpoint *c, const model_index *x, bool *any) {
    const ml_st_file *f = c->file;
    const char *path = ml_st_path(f);
    *any = false;
    for (int i = 0; i < ml_st_count(f); i++) {
        const char *name = ml_st_name(f, i);
        if (!is_optim(name)) continue;
        *any = true;
        size_t len = strlen(name), pl = strlen(OPTIM_PREFIX);
        if (len < pl + 4 || name[len - 3] != '.' || name[len - 2] != 's' || (name[len - 1] != '1' && name[len - 1] != '2'))
            return ml_failc("checkpoint: %s: '%.80s' is not an optimizer entry (optim.<parameter>.s1 or .s2)", path, name);
        ml_dtype dt;
        int64_t shape[ML_MAX_DIMS];
        int nd = ml_st_shape(f, i, &dt, shape);
        if (dt != ML_F32)
            return ml_failc("checkpoint: %s: optimizer entry '%.80s' is %s, not a float tensor", path, name,
                            ml_st_dtype(f, i));
        char pname[ML_PATH_MAX];
        if (len - pl - 3 >= sizeof pname) continue; /* longer than any model name */
        memcpy(pname, name + pl, len - pl - 3);
        pname[len - pl - 3] = 0;
        const ml_tensor *p = index_tensor(x, pname);
        if (!p) continue; /* state of a parameter named otherwise (an optimizer over a list) */
        bool same = nd == p->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == p->shape[d];
        if (!same)
            return ml_failc("checkpoint: %s: optimizer entry '%.80s' has a shape other than its parameter's %s", path,
                            name, ML_SHAPE_STR(p));
    }
    return 0;
}

ml_checkpoint *ml_checkpoint_load(const char *path, bool strict) {
    ml_st_file *f = ml_st_open(path);
    if (!f) return NULL;
    ml_checkpoint *c = calloc(1, sizeof *c);
    file_source fs = {f, NULL};
    cJSON *cfg = NULL;
    if (!c) {
        ml_st_close(f);
        return ml_fail("checkpoint: out of memory loading %s", path);
    }
    c->file = f;
    c->optim_lr = NAN;
    const char *config = ml_st_meta_get(f, "moelab.config"), *format = ml_st_meta_get(f, "moelab.format");
    if (!config) {
        ml_fail("load: %s has no moelab model config in its metadata (use ml.io.load_safetensors for plain tensor "
                "files)", path);
        goto fail;
    }
    if (format && strcmp(format, ML_CHECKPOINT_FORMAT)) {
        ml_fail("checkpoint: %s has format '%.20s'; this moelab reads format " ML_CHECKPOINT_FORMAT
                " (written by a newer version?)", path, format);
        goto fail;
    }
    if (meta_int(f, "moelab.epoch", &c->epoch) || meta_int(f, "moelab.optim_steps", &c->optim_steps)) goto fail;
    const char *lr = ml_st_meta_get(f, "moelab.optim_lr");
    if (lr) {
        char *end;
        c->optim_lr = strtod(lr, &end);
        if (end == lr || *end || !(c->optim_lr >= 0) || isinf(c->optim_lr)) {
            ml_fail("checkpoint: %s: metadata moelab.optim_lr is '%.40s', not a learning rate", path, lr);
            goto fail;
        }
    }
    if (strlen(config) > MAX_CONFIG) {
        ml_fail("checkpoint: %s: the model config is %zu bytes (at most %zu)", path, strlen(config), MAX_CONFIG);
        goto fail;
    }
    cfg = cJSON_Parse(config);
    if (!cfg || !cJSON_IsObject(cfg)) {
        ml_fail("checkpoint: %s: the model config is not a JSON object", path);
        goto fail;
    }
    /* Build under a memory cap derived from the file: a config that asks for a
     * model larger than the file's tensors is stopped at the first allocation
     * past it, not after gigabytes have been allocated and initialised. */
    int64_t budget = model_budget(f);
    ml_alloc_limit_begin(budget);
    c->model = ml_module_from_config(cfg);
    bool over = ml_alloc_limit_end();
    if (!c->model) {
        if (over)
            ml_fail("checkpoint: %s: the model config asks for more memory than the file's tensors (%" PRId64
                    " bytes with slack) can fill: a corrupt or crafted file", path, budget);
        else ml_error_prefix("checkpoint: %s: cannot rebuild the model: ", path);
        goto fail;
    }
    fs.idx = malloc(sizeof *fs.idx * (size_t)(ml_st_count(f) + 1));
    if (!fs.idx) {
        ml_fail("checkpoint: out of memory loading %s", path);
        goto fail;
    }
    int n = 0;
    for (int i = 0; i < ml_st_count(f); i++)
        if (!is_optim(ml_st_name(f, i))) fs.idx[n++] = i;
    ml_state_source src = {n, fs_name, fs_shape, fs_get, &fs, path};
    if (ml_module_load_state(c->model, &src, strict) < 0) goto fail;
    bool any_optim;
    model_index x;
    int bad = index_build(c->model, false, &x) || check_optim_entries(c, &x, &any_optim);
    index_free(&x);
    if (bad) goto fail;
    if (any_optim && c->optim_steps < 0) {
        ml_fail("checkpoint: %s has optimizer entries but no moelab.optim_steps", path);
        goto fail;
    }
    ml_module_set_training(c->model, false);
    free(fs.idx);
    cJSON_Delete(cfg);
    return c;
fail:
    free(fs.idx);
    cJSON_Delete(cfg);
    ml_checkpoint_free(c);
    return NULL;
}

int ml_checkpoint_restore_optim(const ml_checkpoint *c, ml_optim *o, const char *const *names) {
    if (c->optim_steps < 0) return ml_failc("checkpoint: %s holds no optimizer state", ml_st_path(c->file));
    model_index x;
    if (!names && index_build(c->model, false, &x)) {
        index_free(&x);
        return -1;
    }
    char name[ML_PATH_MAX + 16];
    int rc = 0;
    for (int i = 0; i < ml_optim_num_params(o) && !rc; i++) {
        const char *pn = names ? names[i] : index_name(&x, ml_optim_param(o, i));
        if (!pn) {
            rc = ml_failc("checkpoint: the optimizer's parameter %d is not a parameter of the loaded model", i + 1);
            break;
        }
        ml_tensor *s[2] = {NULL, NULL};
        for (int k = 0; k < 2 && !rc; k++) {
            snprintf(name, sizeof name, OPTIM_PREFIX "%s.s%d", pn, k + 1);
            int e = ml_st_find(c->file, name);
            if (e >= 0 && !(s[k] = ml_st_get_at(c->file, e))) rc = -1;
        }
        if (!rc) rc = ml_optim_set_state(o, i, s[0], s[1], c->optim_steps);
        ml_release(s[0]);
        ml_release(s[1]);
    }
    if (!names) index_free(&x);
    return rc;
}
