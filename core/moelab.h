/* moelab.h -- the core library in one include.
 *
 * libmoelab knows nothing of Lua or terminals: tensors (tensor.h), the
 * autograd tape (autograd.h), math kernels (ops/), and, as they land, modules,
 * datasets, training, checkpoints and the theory toolkit. Errors are reported
 * through error.h; every returned tensor is a new reference. */
#ifndef MOELAB_H
#define MOELAB_H

#include "autograd.h"
#include "error.h"
#include "parallel.h"
#include "tensor.h"
#include "rng.h"
#include "memory.h"
#include "print.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "ops/attention.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/index.h"
#include "ops/conv.h"
#include "ops/pool.h"
#include "ops/mlp.h"
#include "io/safetensors.h"
#include "io/checkpoint.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/trace.h"
#include "io/trace_file.h"
#include "nn/cnn.h"
#include "nn/transformer.h"
#include "nn/zoo.h"
#include "nn/moe/moe.h"
#include "nn/moe/moe_conv.h"
#include "nn/moe/route.h"
#include "nn/moe/dispatch.h"
#include "train/optim.h"
#include "data/dataset.h"
#include "io/png.h"
#include "io/png_write.h"
#include "plot/plot.h"
#include "plot/image.h"
#include "theory/theory.h"
#include "analysis/analysis.h"
#include "attack/attack.h"

#endif
