/* fuzz_entry.c -- one libFuzzer binary per target: built with
 * -DFUZZ_TARGET=ml_fuzz_<name> (tests/fuzz/CMakeLists.txt, MOELAB_FUZZ=ON). */
#include "fuzz_targets.h"
#include "moelab.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ml_set_num_threads(1); /* loaders are serial; threads only slow the runs */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FUZZ_TARGET(data, size);
    ml_error_clear();
    return 0;
}
