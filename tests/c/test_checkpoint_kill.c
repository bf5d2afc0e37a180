/* Checkpoints under fire: a child process saves a checkpoint again and again
 * and is killed with SIGKILL at a random moment, 40 times. After every kill
 * the file under the final name must be a complete checkpoint of one of the
 * saves (loaded strictly, its weights all equal to its epoch), a reader running
 * during the saves must never see anything else, and temporaries must not
 * accumulate: at most the killed save's own, and none after a normal save.
 *
 * The child is this program run again (--saver), not a fork of a process that
 * already runs OpenMP threads. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define KILLS 40
#define SIDE 512 /* Linear(512, 512): a 1 MB checkpoint, a few milliseconds to write */

static int save_epoch(const char *path, ml_module *m, int64_t epoch) {
    bool gm = ml_grad_set(false);
    ml_tensor *w = ml_module_param(m, "weight"), *b = ml_module_param(m, "bias");
    int64_t n = ml_numel(w);
    for (int64_t i = 0; i < n; i++) ml_f32(w)[i] = (float)epoch;
    for (int64_t i = 0; i < SIDE; i++) ml_f32(b)[i] = (float)epoch;
    ml_grad_set(gm);
    ml_checkpoint_meta meta = {.has_epoch = true, .epoch = epoch};
    return ml_checkpoint_save(path, m, NULL, &meta);
}

/* The child: saves epochs start, start + 1, ... until killed; tells the parent
 * on fd when the first save begins. */
static int saver(const char *path, int64_t start, int fd) {
    ml_module *m = ml_nn_linear(SIDE, SIDE, true);
    if (write(fd, "r", 1) != 1) return 1;
    close(fd);
    for (int64_t e = start;; e++)
        if (save_epoch(path, m, e)) {
            fprintf(stderr, "saver: %s\n", ml_last_error());
            return 1;
        }
}

/* The checkpoint at path is whole: loads strictly, weights and bias all equal
 * its epoch, which is at least min_epoch. Returns the epoch or -1. */
static int64_t check_whole(const char *path, int64_t min_epoch) {
    ml_checkpoint *c = ml_checkpoint_load(path, true);
    if (!c) {
        fprintf(stderr, "not loadable: %s\n", ml_last_error());
        return -1;
    }
    int64_t e = c->epoch;
    ml_tensor *w = ml_module_param(c->model, "weight"), *b = ml_module_param(c->model, "bias");
    bool ok = e >= min_epoch;
    for (int64_t i = 0; ok && i < ml_numel(w); i++) ok = ml_f32(w)[i] == (float)e;
    for (int64_t i = 0; ok && i < SIDE; i++) ok = ml_f32(b)[i] == (float)e;
    ml_checkpoint_free(c);
    if (!ok) fprintf(stderr, "checkpoint of epoch %lld is not whole\n", (long long)e);
    return ok ? e : -1;
}

/* Files in dir other than the checkpoint itself: temporaries (or -1 when
 * anything else appears). */
static int count_temporaries(const char *dir, const char *base) {
    DIR *dp = opendir(dir);
    int n = 0;
    struct dirent *e;
    size_t bl = strlen(base);
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, base)) continue;
        if (strncmp(e->d_name, base, bl) || strncmp(e->d_name + bl, ".tmp.", 5)) n = -1000;
        n++;
    }
    closedir(dp);
    return n;
}

TEST(sigkill_during_saves) {
    char dir[] = "/tmp/moelab-test-kill-XXXXXX", path[128];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    ml_module *m = ml_nn_linear(SIDE, SIDE, true);
    CHECK(save_epoch(path, m, 0) == 0);
    int64_t last = 0, epoch_base = 0;
    int whole = 0, mid_save = 0, reads = 0, max_tmp = 0;
    srand(12345);
    for (int k = 0; k < KILLS; k++) {
        epoch_base += 1000000; /* each child's epochs are above everything before */
        int ready[2];
        if (pipe(ready)) break;
        char self[64], start[32], fd[16];
        snprintf(self, sizeof self, "/proc/%d/exe", (int)getpid());
        snprintf(start, sizeof start, "%lld", (long long)epoch_base);
        snprintf(fd, sizeof fd, "%d", ready[1]);
        pid_t pid = fork();
        if (pid == 0) {
            close(ready[0]);
            execl(self, "test_checkpoint_kill", "--saver", path, start, fd, (char *)NULL);
            _exit(127);
        }
        close(ready[1]);
        char r;
        CHECK(read(ready[0], &r, 1) == 1);
        close(ready[0]);
        /* a reader during the saves sees a whole checkpoint, old or new */
        usleep((useconds_t)(rand() % 20000));
        int64_t seen = check_whole(path, last);
        CHECK(seen >= 0);
        reads += seen >= 0;
        usleep((useconds_t)(rand() % 20000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        int64_t e = check_whole(path, last);
        CHECK(e >= 0);
        if (e >= 0) {
            whole++;
            last = e;
        }
        int tmp = count_temporaries(dir, "ck.safetensors");
        CHECK(tmp >= 0 && tmp <= 1);
        mid_save += tmp == 1;
        if (tmp > max_tmp) max_tmp = tmp;
    }
    printf("%d kills: the checkpoint was whole after each of %d, %d kills landed inside a save, %d reads during "
           "saves were whole, at most %d temporary file at a time\n", KILLS, whole, mid_save, reads, max_tmp);
    CHECK(whole == KILLS);
    /* a normal save removes what the last killed save left */
    CHECK(save_epoch(path, m, last + 1) == 0);
    CHECK(count_temporaries(dir, "ck.safetensors") == 0);
    CHECK(check_whole(path, last + 1) == last + 1);
    ml_module_release(m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "--saver")) return saver(argv[2], atoll(argv[3]), atoi(argv[4]));
    RUN(sigkill_during_saves);
    return test_summary();
}
