/* autoattack.c -- AutoAttack (Croce & Hein, ICML 2020): an ensemble run in
 * sequence, each attack only on the examples still classified correctly,
 * keeping the worst case per example.
 *
 *   "standard": APGD-CE -> APGD-T (9 targets) -> FAB-T (9 targets) -> Square (5000 queries)
 *   "rand":     APGD-CE -> APGD-DLR, gradients averaged over 20 draws (EOT)
 *   "custom":   the list in opts.attacks (apgd-ce, apgd-dlr, apgd-t, fab-t, square, pgd, fgsm)
 *
 * The robust examples at the start of an attack are split in chunks of
 * opts.batch. Each example's random draws come from its own generator
 * (seed, attack, row), so a run that resumes from its state file
 * (opts.state_path, rewritten atomically after every chunk, with the
 * adversarial rows found so far in <state>.adv.safetensors) computes what the
 * uninterrupted run does, and an attack breaks the same examples inside the
 * ensemble as alone (for a model that treats the examples of a batch
 * independently). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/safetensors.h"
#include "../ops/index.h"
#include "../ops/shape.h"
#include "driver.h"

#define STATE_FORMAT "moelab.autoattack.state/1"

typedef struct {
    int n;
    const char *names[ML_ATTACK_MAX_PARTS];
    int eot;
} plan;

static const char *const known_parts[] = {"apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd", "fgsm", NULL};

static int make_plan(const char *fn, const ml_attack_opts *o, plan *p) {
    memset(p, 0, sizeof *p);
    p->eot = o->eot;
    const char *v = o->version ? o->version : "standard";
    if (!strcmp(v, "standard")) {
        static const char *const std[] = {"apgd-ce", "apgd-t", "fab-t", "square"};
        p->n = 4;
        for (int i = 0; i < 4; i++) p->names[i] = std[i];
    } else if (!strcmp(v, "rand")) {
        p->n = 2;
        p->names[0] = "apgd-ce";
        p->names[1] = "apgd-dlr";
        if (p->eot == 1) p->eot = 20;
    } else if (!strcmp(v, "custom")) {
        if (o->n_attacks < 1)
            return ml_failc("%s: version = \"custom\" needs a list of attacks (option attacks)", fn);
        p->n = o->n_attacks;
        for (int i = 0; i < p->n; i++) {
            bool ok = false;
            for (int k = 0; known_parts[k]; k++) ok |= !strcmp(known_parts[k], o->attacks[i]);
            if (!ok)
                return ml_failc("%s: unknown attack '%s' in attacks (use apgd-ce, apgd-dlr, apgd-t, fab-t, square, "
                                "pgd or fgsm)", fn, o->attacks[i]);
            p->names[i] = o->attacks[i];
        }
    } else {
        return ml_failc("%s: unknown version '%s' (use \"standard\", \"rand\" or \"custom\")", fn, v);
    }
    if (o->n_attacks > 0 && strcmp(v, "custom"))
        return ml_failc("%s: attacks is only read with version = \"custom\" (version is \"%s\")", fn, v);
    return 0;
}

/* ---------------------------------------------------------------- state */
typedef struct {
    int parts_done, chunks_done; /* finished attacks; finished chunks of the next one */
} progress;

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* A fingerprint of the data, so that a state file is not applied to another batch. */
static uint64_t data_hash(const ml_attack_batch *bt) {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, ml_f32(bt->x), sizeof(float) * (size_t)(bt->b * bt->D));
    return fnv(h, ml_i64(bt->y), sizeof(int64_t) * (size_t)ml_numel(bt->y));
}

static int write_atomic(const char *path, const char *text) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ml_failc("autoattack: state path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ml_failc("autoattack: cannot write the state file %s: %s", tmp, strerror(errno));
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return ml_failc("autoattack: cannot write the state file %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return ml_failc("autoattack: cannot save the state file %s: %s", path, strerror(e));
    }
    return 0;
}

static void adv_path(const char *state, char *buf, size_t n) { snprintf(buf, n, "%s.adv.safetensors", state); }

static cJSON *cost_json(const ml_attack_cost *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "forwards", (double)c->forwards);
    cJSON_AddNumberToObject(j, "backwards", (double)c->backwards);
    cJSON_AddNumberToObject(j, "forward_examples", (double)c->forward_examples);
    cJSON_AddNumberToObject(j, "backward_examples", (double)c->backward_examples);
    cJSON_AddNumberToObject(j, "seconds", c->seconds);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void cost_from_json(const cJSON *j, ml_attack_cost *c) {
    c->forwards = (int64_t)num(j, "forwards");
    c->backwards = (int64_t)num(j, "backwards");
    c->forward_examples = (int64_t)num(j, "forward_examples");
    c->backward_examples = (int64_t)num(j, "backward_examples");
    c->seconds = num(j, "seconds");
}

static char *hash_hex(uint64_t h, char buf[20]) {
    snprintf(buf, 20, "%016llx", (unsigned long long)h);
    return buf;
}

static int save_state(const ml_attack_ctx *a, const ml_attack_batch *bt, const plan *p, const progress *pr,
                      const ml_attack_out *out, const ml_attack_report *rep, uint64_t hash) {
    const char *path = a->o->state_path;
    /* the adversarial batch first: the state file refers to it */
    char ap[4096];
    adv_path(path, ap, sizeof ap);
    const char *names[2] = {"x_adv", "broken_by"};
    ml_tensor *ts[2] = {out->x_adv, rep->broken_by};
    if (ml_st_save(ap, 2, names, ts, 0, NULL, NULL)) return -1;
    cJSON *j = cJSON_CreateObject();
    char hx[20];
    cJSON_AddStringToObject(j, "format", STATE_FORMAT);
    cJSON_AddStringToObject(j, "version", a->o->version ? a->o->version : "standard");
    cJSON *list = cJSON_AddArrayToObject(j, "attacks");
    for (int i = 0; i < p->n; i++) cJSON_AddItemToArray(list, cJSON_CreateString(p->names[i]));
    cJSON_AddNumberToObject(j, "n", (double)bt->b);
    cJSON_AddNumberToObject(j, "eps", a->o->eps);
    cJSON_AddStringToObject(j, "norm", ml_attack_norm_name(a->o->norm));
    cJSON_AddStringToObject(j, "seed", hash_hex(a->o->seed, hx));
    cJSON_AddStringToObject(j, "data", hash_hex(hash, hx));
    cJSON_AddNumberToObject(j, "batch", (double)a->o->batch);
    cJSON_AddNumberToObject(j, "attacks_done", pr->parts_done);
    cJSON_AddNumberToObject(j, "chunks_done", pr->chunks_done);
    cJSON_AddNumberToObject(j, "clean_accuracy", rep->clean_accuracy);
    cJSON *flags = cJSON_AddArrayToObject(j, "robust");
    for (int64_t i = 0; i < bt->b; i++) cJSON_AddItemToArray(flags, cJSON_CreateBool(ml_i64(rep->broken_by)[i] == -1));
    cJSON *parts = cJSON_AddArrayToObject(j, "parts");
    for (int i = 0; i < p->n; i++) {
        cJSON *pj = cJSON_CreateObject();
        cJSON_AddStringToObject(pj, "name", p->names[i]);
        cJSON_AddNumberToObject(pj, "robust_accuracy", rep->parts[i].robust_accuracy);
        cJSON_AddNumberToObject(pj, "broken", (double)rep->parts[i].broken);
        cJSON_AddItemToObject(pj, "cost", cost_json(&rep->parts[i].cost));
        cJSON_AddItemToArray(parts, pj);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return ml_failc("autoattack: out of memory");
    int rc = write_atomic(path, text);
    free(text);
    return rc;
}

/* Loads the state when the file exists: 1 = resumed, 0 = no file, -1 = error. */
static int load_state(const ml_attack_ctx *a, const ml_attack_batch *bt, const plan *p, progress *pr,
                      ml_attack_out *out, ml_attack_report *rep, uint64_t hash) {
    const char *path = a->o->state_path, *fn = a->name;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : ml_failc("%s: cannot read the state file %s: %s", fn, path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = size >= 0 && size < (64L << 20) ? malloc((size_t)size + 1) : NULL;
    size_t got = text ? fread(text, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!text || got != (size_t)size) {
        free(text);
        return ml_failc("%s: cannot read the state file %s", fn, path);
    }
    text[size] = 0;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int rc = -1;
    char hx[20], why[256] = "";
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "attacks");
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(j, "parts");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed"), *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "norm");
    if (!j || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, STATE_FORMAT)) {
        snprintf(why, sizeof why, "not an AutoAttack state file");
    } else if (num(j, "n") != (double)bt->b) {
        snprintf(why, sizeof why, "it has %g examples, this batch %lld", num(j, "n"), (long long)bt->b);
    } else if (!cJSON_IsString(data) || strcmp(data->valuestring, hash_hex(hash, hx))) {
        snprintf(why, sizeof why, "it was written for other images or labels");
    } else if (num(j, "eps") != a->o->eps || !cJSON_IsString(norm) || strcmp(norm->valuestring, ml_attack_norm_name(a->o->norm))) {
        snprintf(why, sizeof why, "it was written for eps %g (%s)", num(j, "eps"),
                 cJSON_IsString(norm) ? norm->valuestring : "?");
    } else if (!cJSON_IsString(seed) || strcmp(seed->valuestring, hash_hex(a->o->seed, hx))) {
        snprintf(why, sizeof why, "it was written with another seed");
    } else if (num(j, "batch") != (double)a->o->batch) {
        snprintf(why, sizeof why, "it was written with batch = %g", num(j, "batch"));
    } else if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != p->n || !cJSON_IsArray(parts) ||
               cJSON_GetArraySize(parts) != p->n) {
        snprintf(why, sizeof why, "it was written for another list of attacks");
    } else {
        for (int i = 0; i < p->n && !why[0]; i++) {
            const cJSON *s = cJSON_GetArrayItem(list, i);
            if (!cJSON_IsString(s) || strcmp(s->valuestring, p->names[i]))
                snprintf(why, sizeof why, "it was written for another list of attacks");
        }
    }
    double done = num(j, "attacks_done"), chunks = num(j, "chunks_done");
    if (!why[0] && !(done >= 0 && done <= p->n && chunks >= 0))
        snprintf(why, sizeof why, "its progress fields are invalid");
    if (why[0]) {
        ml_failc("%s: the state file %s does not belong to this run: %s (delete it to start afresh)", fn, path, why);
        goto out;
    }
    pr->parts_done = (int)done;
    pr->chunks_done = (int)chunks;
    for (int i = 0; i < p->n; i++) {
        const cJSON *pj = cJSON_GetArrayItem(parts, i);
        rep->parts[i].robust_accuracy = num(pj, "robust_accuracy");
        rep->parts[i].broken = (int64_t)num(pj, "broken");
        cost_from_json(cJSON_GetObjectItemCaseSensitive(pj, "cost"), &rep->parts[i].cost);
    }
    /* the adversarial rows and who broke them */
    char ap[4096];
    adv_path(path, ap, sizeof ap);
    ml_st_file *st = ml_st_open(ap);
    ml_tensor *xa = st ? ml_st_get(st, "x_adv") : NULL, *by = xa ? ml_st_get(st, "broken_by") : NULL;
    ml_st_close(st);
    if (!xa || !by || !ml_same_shape(xa, out->x_adv) || by->dtype != ML_I64 || !ml_same_shape(by, rep->broken_by)) {
        if (xa && by) ml_failc("%s: the adversarial batch %s does not match the state file", fn, ap);
        ml_release(xa);
        ml_release(by);
        goto out;
    }
    memcpy(ml_f32(out->x_adv), ml_f32(xa), sizeof(float) * (size_t)ml_numel(xa));
    ml_bump_version(out->x_adv);
    memcpy(ml_i64(rep->broken_by), ml_i64(by), sizeof(int64_t) * (size_t)bt->b);
    for (int64_t i = 0; i < bt->b; i++) ml_f32(out->success)[i] = ml_i64(by)[i] >= 0;
    ml_release(xa);
    ml_release(by);
    rc = 1;
out:
    cJSON_Delete(j);
    return rc;
}

/* ---------------------------------------------------------------- one attack on one chunk */
static int run_part(ml_attack_ctx *a, const char *name, const ml_attack_batch *sub, ml_attack_out *r) {
    const char *objname = !strcmp(name, "apgd-dlr") ? "dlr" : "ce";
    bool gradient = strcmp(name, "apgd-t") && strcmp(name, "fab-t") && strcmp(name, "square");
    ml_objective *obj = gradient ? ml_objective_new(objname) : NULL, *saved = a->obj;
    if (gradient && !obj) return -1;
    a->obj = obj;
    int rc;
    if (!strcmp(name, "apgd-ce") || !strcmp(name, "apgd-dlr")) rc = atk_apgd(a, sub, r);
    else if (!strcmp(name, "apgd-t")) rc = atk_apgd_targeted(a, sub, r);
    else if (!strcmp(name, "fab-t")) rc = atk_fab_targeted(a, sub, r);
    else if (!strcmp(name, "square")) rc = atk_square(a, sub, r);
    else if (!strcmp(name, "pgd")) rc = atk_pgd(a, sub, r);
    else rc = atk_fgsm(a, sub, r);
    a->obj = saved;
    ml_objective_free(obj);
    return rc;
}

static void add_cost(ml_attack_cost *to, const ml_attack_cost *c) {
    to->forwards += c->forwards;
    to->backwards += c->backwards;
    to->forward_examples += c->forward_examples;
    to->backward_examples += c->backward_examples;
    to->seconds += c->seconds;
}

static void upper(const char *s, char *buf, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) buf[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    buf[i] = 0;
}

int atk_autoattack(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, ml_attack_report *rep) {
    const ml_attack_opts *o = a->o;
    plan p;
    if (make_plan(a->name, o, &p)) return -1;
    if (o->checks && atk_doctor(a, bt, rep, true)) return -1;

    int64_t B = bt->b;
    rep->broken_by = ml_empty(ML_I64, 1, &B);
    if (!rep->broken_by) return -1;
    int64_t *by = ml_i64(rep->broken_by);
    const int64_t *pc = ml_i64(rep->pred_clean), *y = ml_i64(bt->y);
    for (int64_t i = 0; i < B; i++) {
        by[i] = pc[i] == y[i] ? -1 : -2;
        ml_f32(out->success)[i] = by[i] == -2;
    }
    rep->n_parts = p.n;
    for (int i = 0; i < p.n; i++) {
        snprintf(rep->parts[i].name, sizeof rep->parts[i].name, "%s", p.names[i]);
        rep->parts[i].robust_accuracy = NAN; /* until the attack has run */
    }

    progress pr = {0, 0};
    uint64_t hash = o->state_path ? data_hash(bt) : 0;
    if (o->state_path) {
        int st = load_state(a, bt, &p, &pr, out, rep, hash);
        if (st < 0) return -1;
        rep->resumed = st == 1;
        if (st == 1)
            atk_log(a, "resuming from %s: %d of %d attacks done", o->state_path, pr.parts_done, p.n);
        else if (save_state(a, bt, &p, &pr, out, rep, hash))
            return -1;
    }
    atk_log(a, "clean accuracy: %.2f%% (%lld examples), AutoAttack %s: %s%s%s%s%s%s%s", 100 * rep->clean_accuracy,
            (long long)B, o->version ? o->version : "standard", p.names[0], p.n > 1 ? ", " : "",
            p.n > 1 ? p.names[1] : "", p.n > 2 ? ", " : "", p.n > 2 ? p.names[2] : "", p.n > 3 ? ", " : "",
            p.n > 3 ? p.names[3] : "");

    ml_attack_opts co = *o; /* the components' options */
    co.eot = p.eot;
    int rc = 0;
    for (int k = pr.parts_done; k < p.n && rc == 0 && !a->stop; k++) {
        ml_attack_part *part = &rep->parts[k];
        /* the examples robust when this attack started (resumed: also those it broke before the stop) */
        ml_tensor *mask = ml_empty(ML_F32, 1, &B);
        if (!mask) return -1;
        for (int64_t i = 0; i < B; i++) ml_f32(mask)[i] = by[i] == -1 || by[i] == k;
        ml_tensor *rows = atk_rows_where(mask, 1);
        ml_release(mask);
        if (!rows) return -1;
        int64_t nr = rows->shape[0], chunk = o->batch > 0 ? o->batch : (nr > 0 ? nr : 1);
        int n_chunks = (int)((nr + chunk - 1) / chunk);
        a->part = p.names[k];
        a->o = &co;
        for (int c = k == pr.parts_done ? pr.chunks_done : 0; c < n_chunks && rc == 0 && !a->stop; c++) {
            double t0 = atk_now();
            ml_attack_cost cost = {0}, *saved_cost = a->cost;
            a->cost = &cost;
            int64_t from = c * chunk, len = nr - from < chunk ? nr - from : chunk;
            ml_tensor *crow = ml_narrow(rows, 0, from, len), *cr = crow ? ml_contiguous(crow) : NULL;
            ml_attack_batch sub = {0};
            ml_attack_out r = {0};
            float *broke = NULL;
            rc = cr && !atk_batch_rows(bt, cr, &sub) && !atk_out_new(&r, &sub) ? 0 : -1;
            if (rc == 0) {
                atk_reseed(a, p.names[k]); /* per example: the chunking does not change the result */
                ml_seed(a->o->seed ^ ((uint64_t)(k + 1) << 40) ^ ((uint64_t)(c + 1) << 20));
                rc = run_part(a, p.names[k], &sub, &r);
            }
            if (rc == 0 && !a->interrupted) { /* which examples the result breaks (misclassified, within eps) */
                ml_attack_batch plain = sub;
                plain.target = NULL;
                broke = malloc(sizeof(float) * (size_t)len);
                rc = broke ? atk_eval(a, &plain, r.x_adv, NULL, NULL, broke) : -1;
            }
            if (rc == 0 && !a->interrupted) {
                float *norms = malloc(sizeof(float) * (size_t)len);
                if (!norms) rc = -1;
                else {
                    atk_norms(o->norm, &sub, r.x_adv, norms);
                    for (int64_t j = 0; j < len; j++) {
                        int64_t i = ml_i64(cr)[j];
                        ml_i64(out->steps)[i] += ml_i64(r.steps)[j];
                        if (broke[j] == 0 || norms[j] > o->eps * (1 + 1e-6) + 1e-7) continue;
                        by[i] = k;
                        ml_f32(out->success)[i] = 1;
                        memcpy(ml_f32(out->x_adv) + i * bt->D, ml_f32(r.x_adv) + j * bt->D,
                               sizeof(float) * (size_t)bt->D);
                    }
                    ml_bump_version(out->x_adv);
                    free(norms);
                }
            }
            free(broke);
            atk_out_free(&r);
            atk_batch_free(&sub);
            ml_release(cr);
            ml_release(crow);
            cost.seconds = atk_now() - t0;
            a->cost = saved_cost;
            add_cost(&part->cost, &cost);
            if (rc == 0 && !a->stop && o->state_path) {
                progress now = {k, c + 1};
                part->broken = 0;
                for (int64_t i = 0; i < B; i++) part->broken += by[i] == k;
                if (save_state(a, bt, &p, &now, out, rep, hash)) rc = -1;
            }
        }
        a->o = o;
        a->part = a->name;
        ml_release(rows);
        if (rc || a->stop) break;
        int64_t robust = 0;
        part->broken = 0;
        for (int64_t i = 0; i < B; i++) {
            robust += by[i] == -1;
            part->broken += by[i] == k;
        }
        part->robust_accuracy = (double)robust / (double)B;
        double total = 0;
        for (int i = 0; i <= k; i++) total += rep->parts[i].cost.seconds;
        char up[32];
        upper(p.names[k], up, sizeof up);
        atk_log(a, "robust accuracy after %s: %.2f%% (%.1f s)", up, 100 * part->robust_accuracy, total);
        if (o->state_path) {
            progress now = {k + 1, 0};
            if (save_state(a, bt, &p, &now, out, rep, hash)) rc = -1;
        }
    }
    for (int i = 0; i < p.n; i++) add_cost(a->cost, &rep->parts[i].cost);

    /* Square against the white-box attacks before it (gradient masking) */
    if (rc == 0 && !a->stop) {
        double white = 1;
        for (int i = 0; i < p.n; i++) {
            if (!strcmp(p.names[i], "square")) {
                if (i > 0 && rep->parts[i].robust_accuracy < white - 0.002)
                    atk_flag(a, &rep->doctor, "gradient_masking",
                             "a black-box attack should not beat the white-box ones: the gradients mislead "
                             "(masking); look for non-differentiable parts and report the worst case",
                             "Square lowered the robust accuracy by %.2f points after the white-box attacks",
                             100 * (white - rep->parts[i].robust_accuracy));
            } else {
                white = rep->parts[i].robust_accuracy;
            }
        }
    }
    return rc;
}
