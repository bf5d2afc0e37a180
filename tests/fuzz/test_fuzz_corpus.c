/* The fuzz targets in the ordinary suite: every seed of tests/fuzz/corpus/<target>/
 * loads, and every input that once crashed a loader (tests/fuzz/regressions/<target>/,
 * named after what it broke) is now refused cleanly, with a message that names
 * the file. Under MOELAB_SANITIZE the same runs are checked for memory errors. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_targets.h"
#include "testlib.h"

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(buf, 1, (size_t)(len > 0 ? len : 0), f);
    fclose(f);
    return buf;
}

/* Runs every file of dir/<target>/ through the target; expect_load: seeds. */
static int run_dir(const char *dir, const ml_fuzz_target *t, bool expect_load) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, t->name);
    DIR *dp = opendir(path);
    if (!dp) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        char file[1024];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        size_t n;
        uint8_t *data = read_all(file, &n);
        if (!data) continue;
        ml_error_clear();
        int rc = t->fn(data, n);
        free(data);
        count++;
        test_checks++;
        if (expect_load ? rc != 0 : rc == 0 || !strstr(ml_last_error(), "moelab-fuzz-")) {
            test_failures++;
            fprintf(stderr, "%s: %s: %s\n", t->name, file,
                    rc ? ml_last_error() : "loaded, but it is a regression input that must be refused");
        }
    }
    closedir(dp);
    return count;
}

TEST(seeds_load_and_regressions_are_refused) {
    for (const ml_fuzz_target *t = ml_fuzz_targets; t->name; t++) {
        int seeds = run_dir("tests/fuzz/corpus", t, true);
        int regressions = run_dir("tests/fuzz/regressions", t, false);
        CHECK(seeds > 0);
        printf("%-12s %2d seeds loaded, %2d regression inputs refused\n", t->name, seeds, regressions);
    }
}

int main(void) {
    RUN(seeds_load_and_regressions_are_refused);
    return test_summary();
}
