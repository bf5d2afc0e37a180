"""PyTorch's convolutions on the shapes of bench/bench_ops.c (conv2d part), for
a per-shape comparison with moelab's direct kernels: GFLOP/s from the fastest
of `runs` runs, forward / forward + input grad / forward + both grads, with
the same FLOP count (2 x MACs of the dense convolution, padding included).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 OPENBLAS_NUM_THREADS=1 \
        /usr/bin/python3 bench/torch_conv.py [runs] [nchw|cl] [name-filter]

channels_last by default (PyTorch's fastest here); "nchw" for the plain layout.
Compare with BENCH_MIN=1 ./build/bench/bench_ops.
"""
import sys, time, torch
torch.set_num_threads(2)
shapes = [
 ("3x3 64->64 [128,64,16,16] s1", 128, 64, 16, 16, 64, 3, 1, 1),
 ("W1 stem 3x3 3->16 [128,3,32,32]", 128, 3, 32, 32, 16, 3, 1, 1),
 ("W1 3x3 16->16 [128,16,32,32]", 128, 16, 32, 32, 16, 3, 1, 1),
 ("W1 3x3 16->32 s2 [128,16,32,32]", 128, 16, 32, 32, 32, 3, 2, 1),
 ("W1 3x3 32->32 [128,32,16,16]", 128, 32, 16, 16, 32, 3, 1, 1),
 ("W1 1x1 16->32 s2 [128,16,32,32]", 128, 16, 32, 32, 32, 1, 2, 0),
 ("W1 3x3 32->64 s2 [128,32,16,16]", 128, 32, 16, 16, 64, 3, 2, 1),
 ("W1 3x3 64->64 [128,64,8,8]", 128, 64, 8, 8, 64, 3, 1, 1),
 ("W1 1x1 32->64 s2 [128,32,16,16]", 128, 32, 16, 16, 64, 1, 2, 0),
 ("W1 3x3 64->128 s2 [128,64,8,8]", 128, 64, 8, 8, 128, 3, 2, 1),
 ("W1 3x3 128->128 [128,128,4,4]", 128, 128, 4, 4, 128, 3, 1, 1),
 ("W1 1x1 64->128 s2 [128,64,8,8]", 128, 64, 8, 8, 128, 1, 2, 0),
 ("W2 3x3 16->8 [64,16,32,32]", 64, 16, 32, 32, 8, 3, 1, 1),
 ("W2 3x3 32->16 [64,32,16,16]", 64, 32, 16, 16, 16, 3, 1, 1),
 ("W2 3x3 64->32 [64,64,8,8]", 64, 64, 8, 8, 32, 3, 1, 1),
 ("W2 3x3 128->64 [64,128,4,4]", 64, 128, 4, 4, 64, 3, 1, 1),
]
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
fmt = torch.channels_last if (len(sys.argv) < 3 or sys.argv[2] != "nchw") else torch.contiguous_format
def best(fn, runs):
    for _ in range(2): fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)
print("PyTorch", torch.__version__, "threads", torch.get_num_threads(), "format", "channels_last" if fmt == torch.channels_last else "nchw")
flt = sys.argv[3] if len(sys.argv) > 3 else None
for name, N, C, H, W, O, k, s, p in shapes:
    if flt and flt not in name:
        continue
    x = torch.randn(N, C, H, W).to(memory_format=fmt).requires_grad_()
    conv = torch.nn.Conv2d(C, O, k, s, p, bias=False).to(memory_format=fmt)
    y = conv(x); gy = torch.randn_like(y)
    Ho, Wo = y.shape[2], y.shape[3]
    gf = 2.0 * N * O * Ho * Wo * C * k * k / 1e9
    with torch.no_grad():
        t0 = best(lambda: conv(x), runs)
    conv.weight.requires_grad_(False)
    t1 = best(lambda: torch.autograd.grad(conv(x), x, gy), runs)
    conv.weight.requires_grad_(True)
    t2 = best(lambda: torch.autograd.grad(conv(x), (x, conv.weight), gy), runs)
    print("%-34s fwd %7.1f (%6.2f ms)  fwd+gx %7.1f (%6.2f ms)  fwd+gx+gw %7.1f (%6.2f ms)" % (name, gf / t0, 1e3 * t0, 2 * gf / t1, 1e3 * t1, 3 * gf / t2, 1e3 * t2))
