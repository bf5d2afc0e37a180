/* fuzz_targets.h -- the loaders, driven by one byte buffer each.
 *
 * Each target writes the bytes where its loader expects files (a private
 * temporary directory), calls the loader and returns 0 when it loaded, -1 when
 * it refused (with the core's error message set). A crash, a sanitizer report
 * or a leak is a bug; a refusal is the expected answer to most inputs.
 * tests/fuzz/fuzz_entry.c makes each a libFuzzer binary (MOELAB_FUZZ=ON);
 * tests/fuzz/test_fuzz_corpus.c runs the seed corpora and every input that
 * once crashed (tests/fuzz/regressions/) through them in the ordinary suite. */
#ifndef ML_FUZZ_TARGETS_H
#define ML_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef int (*ml_fuzz_fn)(const uint8_t *data, size_t size);

/* MNIST: byte 0 bit 0 picks the .gz file names; bytes 1-4 (little-endian) the
 * length of the images file; then the images file, then the labels file. Both
 * splits get the same files. */
int ml_fuzz_idx(const uint8_t *data, size_t size);
/* CIFAR-10: bytes 0-1 (little-endian) the length of batches.meta.txt, the
 * text, then the batch (written as data_batch_1.bin and test_batch.bin). */
int ml_fuzz_cifar(const uint8_t *data, size_t size);
/* One PNG file through ml_png_read. */
int ml_fuzz_png(const uint8_t *data, size_t size);
/* A PNG folder: byte 0 gives the number of files (1 + b % 4), the rest is cut
 * into that many equal parts, alternately in classes a/ and b/. */
int ml_fuzz_png_folder(const uint8_t *data, size_t size);
/* One safetensors file: opened, every tensor read, every name looked up. */
int ml_fuzz_safetensors(const uint8_t *data, size_t size);
/* One checkpoint: loaded strictly and not, its optimizer state restored into
 * a fresh optimizer over the model. */
int ml_fuzz_checkpoint(const uint8_t *data, size_t size);
/* A model config (JSON text) as the moelab.config of a checkpoint without
 * tensors, loaded non-strictly: every module constructor meets it. */
int ml_fuzz_config(const uint8_t *data, size_t size);

typedef struct {
    const char *name;
    ml_fuzz_fn fn;
} ml_fuzz_target;
extern const ml_fuzz_target ml_fuzz_targets[]; /* {NULL, NULL}-terminated */

#endif
