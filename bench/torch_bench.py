"""The PyTorch side of the W1-W4 benchmarks (WORKLOADS.md), in its fastest
configuration: 2 threads, eager mode, channels_last for the CNNs (run under
bench/run.sh, which preloads tcmalloc and keeps OpenBLAS at one thread).

  python3 bench/torch_bench.py DIR [--quick] [--runs n] [--out results.jsonl]

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
from torch_models import build, load_safetensors, load_weights  # noqa: E402

torch.set_num_threads(2)


def timeit(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[(len(ts) - 1) // 2], ts[0], ts[-1]


def main():
    d = sys.argv[1]
    quick = "--quick" in sys.argv
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    runs, pgd_runs = (2, 1) if quick else (10, 5)
    if "--runs" in sys.argv:  # as bench/models.lua --runs
        runs = int(sys.argv[sys.argv.index("--runs") + 1])
        pgd_runs = max(1, runs // 2)
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
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def train_step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xin), y).backward()
                opt.step()
            med, mn, mx = timeit(train_step, 3, runs)
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


if __name__ == "__main__":
    main()
