/* fuzz_targets.c -- see fuzz_targets.h. */
#include "fuzz_targets.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moelab.h"

static char root[96];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_root(void) {
    if (root[0]) nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A private directory for this process's files (in memory when /dev/shm is there). */
static const char *dir_for(const char *target) {
    if (!root[0]) {
        snprintf(root, sizeof root, "%s/moelab-fuzz-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(root)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_root);
    }
    static char dir[160];
    snprintf(dir, sizeof dir, "%s/%s", root, target);
    mkdir(dir, 0700);
    return dir;
}

static void write_file(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        abort();
    }
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

static uint32_t le(const uint8_t *p, int bytes) {
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------ MNIST */
int ml_fuzz_idx(const uint8_t *data, size_t size) {
    if (size < 5) return -1;
    const char *dir = dir_for("idx");
    bool gz = data[0] & 1;
    size_t ilen = le(data + 1, 4);
    data += 5, size -= 5;
    if (ilen > size) ilen = size;
    static const char *const kinds[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                         "t10k-labels-idx1-ubyte"};
    char path[256];
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s%s", dir, kinds[k], gz ? "" : ".gz");
        unlink(path); /* the loader prefers the plain name: only one of the two may exist */
        snprintf(path, sizeof path, "%s/%s%s", dir, kinds[k], gz ? ".gz" : "");
        bool images = k % 2 == 0;
        write_file(path, images ? data : data + ilen, images ? ilen : size - ilen);
    }
    ml_dataset *train, *test;
    if (ml_data_mnist(dir, &train, &test)) return -1;
    ml_dataset_release(train);
    ml_dataset_release(test);
    return 0;
}

/* ------------------------------------------------------------ CIFAR-10 */
int ml_fuzz_cifar(const uint8_t *data, size_t size) {
    if (size < 2) return -1;
    const char *dir = dir_for("cifar");
    size_t mlen = le(data, 2);
    data += 2, size -= 2;
    if (mlen > size) mlen = size;
    char path[256];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    write_file(path, data, mlen);
    snprintf(path, sizeof path, "%s/data_batch_1.bin", dir);
    write_file(path, data + mlen, size - mlen);
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_file(path, data + mlen, size - mlen);
    ml_dataset *train, *test;
    if (ml_data_cifar10(dir, &train, &test)) return -1;
    ml_dataset_release(train);
    ml_dataset_release(test);
    return 0;
}

/* ------------------------------------------------------------ PNG */
int ml_fuzz_png(const uint8_t *data, size_t size) {
    char path[256];
    snprintf(path, sizeof path, "%s/x.png", dir_for("png"));
    write_file(path, data, size);
    uint8_t *img;
    int h, w, c;
    if (ml_png_read(path, &img, &h, &w, &c)) return -1;
    free(img);
    return 0;
}

int ml_fuzz_png_folder(const uint8_t *data, size_t size) {
    if (size < 1) return -1;
    const char *dir = dir_for("png_folder");
    int files = 1 + data[0] % 4;
    data++, size--;
    char path[256];
    for (int c = 0; c < 2; c++) {
        snprintf(path, sizeof path, "%s/%c", dir, 'a' + c);
        mkdir(path, 0700);
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/%c/%d.png", dir, 'a' + c, k);
            unlink(path);
        }
    }
    size_t part = size / (size_t)files;
    for (int k = 0; k < files; k++) {
        snprintf(path, sizeof path, "%s/%c/%d.png", dir, 'a' + k % 2, k);
        write_file(path, data + part * (size_t)k, k == files - 1 ? size - part * (size_t)k : part);
    }
    ml_dataset *d = ml_data_png_folder(dir);
    if (!d) return -1;
    ml_dataset_release(d);
    return 0;
}

/* ------------------------------------------------------------ safetensors */
int ml_fuzz_safetensors(const uint8_t *data, size_t size) {
    char path[256];
    snprintf(path, sizeof path, "%s/x.safetensors", dir_for("safetensors"));
    write_file(path, data, size);
    ml_st_file *f = ml_st_open(path);
    if (!f) return -1;
    int rc = 0;
    for (int i = 0; i < ml_st_count(f); i++) {
        const char *name = ml_st_name(f, i);
        int64_t shape[ML_MAX_DIMS];
        ml_dtype dt;
        if (ml_st_find(f, name) != i || ml_st_shape(f, i, &dt, shape) < 0 || !ml_st_dtype(f, i)) abort();
        ml_tensor *t = ml_st_get_at(f, i);
        if (!t) rc = -1;
        ml_release(t);
    }
    for (int i = 0; i < ml_st_meta_count(f); i++)
        if (!ml_st_meta_get(f, ml_st_meta_key(f, i))) abort();
    ml_st_close(f);
    return rc;
}

/* ------------------------------------------------------------ checkpoints */
typedef struct {
    ml_tensor **ps;
    int n, cap;
} param_list;

static int collect(void *ud, const char *path, ml_param *p, ml_module *owner) {
    (void)path, (void)owner;
    param_list *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->ps = realloc(l->ps, sizeof *l->ps * (size_t)l->cap);
        if (!l->ps) abort();
    }
    l->ps[l->n++] = p->t;
    return 0;
}

int ml_fuzz_checkpoint(const uint8_t *data, size_t size) {
    char path[256];
    snprintf(path, sizeof path, "%s/x.safetensors", dir_for("checkpoint"));
    write_file(path, data, size);
    ml_checkpoint *c = ml_checkpoint_load(path, true);
    if (!c) c = ml_checkpoint_load(path, false);
    if (!c) return -1;
    param_list l = {0};
    ml_module_visit_params(c->model, false, collect, &l);
    ml_optim_opts o = {.kind = ML_OPT_ADAM, .lr = 1e-3};
    ml_optim *opt = l.n ? ml_optim_new(&o, l.n, l.ps) : NULL;
    if (opt && c->optim_steps >= 0) (void)ml_checkpoint_restore_optim(c, opt, NULL);
    ml_optim_free(opt);
    free(l.ps);
    ml_checkpoint_free(c);
    return 0;
}

/* The model config alone: the bytes become moelab.config of a checkpoint with
 * no tensors, loaded non-strictly, so every module constructor meets them
 * (under the loader's allocation cap: small models build, large ones stop). */
int ml_fuzz_config(const uint8_t *data, size_t size) {
    char path[256], *config = malloc(size + 1);
    if (!config) abort();
    memcpy(config, data, size);
    config[size] = 0;
    snprintf(path, sizeof path, "%s/x.safetensors", dir_for("config"));
    const char *keys[2] = {"moelab.format", "moelab.config"}, *values[2] = {"1", config};
    int rc = ml_st_save(path, 0, NULL, NULL, 2, keys, values);
    free(config);
    if (rc) return -1;
    ml_checkpoint *c = ml_checkpoint_load(path, false);
    if (!c) return -1;
    ml_checkpoint_free(c);
    return 0;
}

const ml_fuzz_target ml_fuzz_targets[] = {
    {"idx", ml_fuzz_idx},         {"cifar", ml_fuzz_cifar},
    {"png", ml_fuzz_png},         {"png_folder", ml_fuzz_png_folder},
    {"safetensors", ml_fuzz_safetensors}, {"checkpoint", ml_fuzz_checkpoint},
    {"config", ml_fuzz_config},   {NULL, NULL},
};
