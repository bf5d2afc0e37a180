"""The PyTorch side of the W1-W4 benchmarks (WORKLOADS.md), in its fastest
configuration: 2 threads, eager mode, channels_last for the CNNs (run under
bench/run.sh, which preloads tcmalloc and keeps OpenBLAS at one thread).

  python3 bench/torch_bench.py DIR [--quick] [--out results.jsonl]

DIR holds the files written by `moelab bench/models.lua --export DIR`: the same
weights, inputs and (for the MoE models) calibrated routers; the logits are
checked against moelab's before timing."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import aux_loss, build, load_safetensors, load_weights  # noqa: E402

# BENCH_THREADS: the thread count (default 2; 1 for CPU-time comparisons on a busy machine)
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


# BENCH_CLOCK=cpu: time the process's CPU time instead of wall-clock (with one
# thread, the steadier figure when other jobs share the cores)
CLOCK = time.process_time if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter


def timeit(fn, warmup, runs, clock=None):
    clock = clock or CLOCK
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    ts.sort()
    return ts[(len(ts) - 1) // 2], ts[0], ts[-1]


def main():
    d = sys.argv[1]
    quick = "--quick" in sys.argv
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    runs, pgd_runs = (2, 1) if quick else (10, 5)
    results = []
    for name, forms in [("cnn-dense", [None]), ("moe-cnn", ["sparse", "mask"]), ("vit-dense", [None]), ("vmoe", [None])]:
        path = os.path.join(d, name + ".safetensors")
        if not os.path.exists(path):
            continue
        V, _ = load_safetensors(path)
        x, y = V["input.x"], V["input.y"]
        for form in forms:
            model = build("moe-cnn-mask" if form == "mask" else name)
            load_weights(model, V)
            model.eval()
            cnn = name in ("cnn-dense", "moe-cnn")
            if cnn:
                model = model.to(memory_format=torch.channels_last)
                xin = x.contiguous(memory_format=torch.channels_last)
            else:
                xin = x
            with torch.no_grad():
                diff = (model(xin) - V["eval.logits"]).abs().max().item()
            note = "logits agree with moelab: max |diff| %.2e" % diff
            with torch.no_grad():
                med, mn, mx = timeit(lambda: model(xin), 3, runs)
            results.append(dict(workload=name, form=form, mode="infer", median=med, min=mn, max=mx, note=note))
            model.train()
            med, mn, mx = timeit(train_step_fn(model, xin, y), 3, runs)
            results.append(dict(workload=name, form=form, mode="train", median=med, min=mn, max=mx))
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            eps, alpha = 8 / 255, 2 / 255

            def pgd():
                xa = (xin + (torch.rand_like(xin) * 2 - 1) * eps).clamp(0, 1)
                for _ in range(10):
                    xa.requires_grad_(True)
                    g, = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
                    xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), xin - eps), xin + eps).clamp(0, 1)
            med, mn, mx = timeit(pgd, 1, pgd_runs)
            results.append(dict(workload=name, form=form, mode="pgd", median=med, min=mn, max=mx))
            for r in results[-3:]:
                print("%-14s %-6s %-7s %9.2f ms  (min %8.2f, max %8.2f)%s" % (r["workload"], r["form"] or "", r["mode"],
                      1e3 * r["median"], 1e3 * r["min"], 1e3 * r["max"], ("  " + r["note"]) if r.get("note") else ""))
    if out:
        with open(out, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


def train_step_fn(model, xin, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(model(xin), y) + aux_loss(model)).backward()
        opt.step()
    return step


def sweep(d, quick, out):
    """W4 against the number of experts: the files vmoe-E<E>.safetensors of
    `moelab bench/esweep.lua sweep --export DIR`, median training step."""
    runs = 3 if quick else 10
    results = []
    for E in (2, 4, 8, 16, 32, 64):
        path = os.path.join(d, "vmoe-E%d.safetensors" % E)
        if not os.path.exists(path):
            continue
        V, _ = load_safetensors(path)
        model = build("vmoe", experts=E)
        load_weights(model, V)
        model.train()
        step = train_step_fn(model, V["input.x"], V["input.y"])
        med, mn, mx = timeit(step, 3, runs)
        cpu, _, _ = timeit(step, 0, runs, time.process_time)
        print("  E = %2d  %8.2f ms  (min %8.2f, max %8.2f)  CPU %8.2f ms" % (E, 1e3 * med, 1e3 * mn, 1e3 * mx, 1e3 * cpu))
        results.append(dict(workload="vmoe", experts=E, mode="train", median=med, min=mn, max=mx, cpu_median=cpu))
    write(out, results)


def proc():
    st = {}
    with open("/proc/self/status") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                st[parts[0].rstrip(":")] = int(parts[1])
    with open("/proc/self/stat") as f:
        minflt = int(f.read().rsplit(")", 1)[1].split()[7])
    return st["VmRSS"], st["VmHWM"], minflt


def memory(name, d, quick, out):
    """One workload's training loop alone in this process: resident set before
    the model (after the imports) and at its peak, minor faults per step."""
    idle, _, _ = proc()
    path = os.path.join(d, name + ".safetensors") if d else ""
    model = build(name)
    if os.path.exists(path):
        V, _ = load_safetensors(path)
        load_weights(model, V)
        x, y = V["input.x"], V["input.y"]
    else:
        B = 16 if quick else 128
        x = torch.rand(B, *((3, 32, 32) if name == "cnn-dense" else (1, 28, 28)))
        y = torch.randint(0, 10, (B,))
    if name == "cnn-dense":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here: the loop's peak, not the set-up's
        f.write("5")
    step = train_step_fn(model, x, y)
    for _ in range(5 if quick else 15):
        step()
    _, _, f0 = proc()
    steps = 5 if quick else 20
    for _ in range(steps):
        step()
    _, hwm, f1 = proc()
    r = dict(workload=name, mode="memory", idle_kb=idle, peak_kb=hwm, minflt_per_step=(f1 - f0) / steps)
    print("%-10s peak RSS %7.1f MB (idle %5.1f MB, +%6.1f MB); steady state per step: %.1f minor page faults"
          % (name, hwm / 1024, idle / 1024, (hwm - idle) / 1024, r["minflt_per_step"]))
    write(out, [r])


def write(out, results):
    if out:
        with open(out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    out_arg = args[args.index("--out") + 1] if "--out" in args else None
    if "--sweep" in args:
        sweep(args[0], "--quick" in args, out_arg)
    elif "--memory" in args:
        memory(args[args.index("--memory") + 1], args[0], "--quick" in args, out_arg)
    else:
        main()
