"""The PyTorch side of bench/attacks.lua: PGD-10 (as bench/torch_bench.py runs it) and
APGD-CE written here from Croce & Hein (2020) -- a reference of speed, not of results --
on the weights and images that `moelab bench/attacks.lua` exports, in PyTorch's fastest
configuration (2 threads, eager, channels_last for the CNNs; bench/attacks.lua preloads
tcmalloc and keeps OpenBLAS at one thread).

  python3 bench/torch_attacks.py DIR [--quick] [--iters 100] [--out results.jsonl]
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import build, load_safetensors, load_weights  # noqa: E402

torch.set_num_threads(2)
EPS, ALPHA = 8 / 255, 2 / 255


def median(ts):
    ts = sorted(ts)
    return ts[(len(ts) - 1) // 2], ts[0], ts[-1]


def input_grad(model, xa, y, reduction="mean"):
    xa = xa.detach().requires_grad_(True)
    logits = model(xa)
    loss = F.cross_entropy(logits, y, reduction=reduction)
    g, = torch.autograd.grad(loss.sum(), xa)
    return loss.detach(), g, logits.detach()


def pgd10(model, x, y, step_times):
    xa = (x + (torch.rand_like(x) * 2 - 1) * EPS).clamp(0, 1)
    for k in range(10):
        t0 = time.perf_counter()
        _, g, _ = input_grad(model, xa, y)
        xa = torch.min(torch.max(xa + ALPHA * g.sign(), x - EPS), x + EPS).clamp(0, 1)
        if k > 0:
            step_times.append(time.perf_counter() - t0)
    return xa


def apgd_ce(model, x, y, n_iter, rho=0.75):
    """APGD with the CE loss, l_inf: momentum 0.75, step 2 eps halved at the checkpoints."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    interval = max(int(0.22 * n_iter), 1)
    decr, floor = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)

    def project(z):
        return torch.min(torch.max(z, x - EPS), x + EPS).clamp(0, 1)

    t = torch.rand_like(x) * 2 - 1
    xk = (x + EPS * t / t.flatten(1).abs().max(1)[0].view(shape)).clamp(0, 1)
    loss, g, logits = input_grad(model, xk, y, "none")
    best_loss, x_best, g_best = loss.clone(), xk.clone(), g.clone()
    broken = logits.argmax(1) != y
    x_adv = xk.clone()
    step = torch.full((x.shape[0],), 2 * EPS).view(shape)
    x_prev = xk.clone()
    prev_loss, increases = loss.clone(), torch.zeros_like(loss)
    best_at_check, halved_last = best_loss.clone(), torch.ones_like(loss, dtype=torch.bool)
    since = 0
    for it in range(n_iter):
        a = 1.0 if it == 0 else 0.75
        z = project(xk + step * g.sign())
        x_new = project(xk + a * (z - xk) + (1 - a) * (xk - x_prev))
        x_prev, xk = xk, x_new
        loss, g, logits = input_grad(model, xk, y, "none")
        miss = logits.argmax(1) != y
        x_adv[miss] = xk[miss]
        broken |= miss
        better = loss > best_loss
        x_best[better], g_best[better], best_loss[better] = xk[better], g[better], loss[better]
        increases += (loss > prev_loss).float()
        prev_loss = loss
        since += 1
        if since == interval:
            halve = (increases < rho * interval) | (~halved_last & (best_at_check >= best_loss))
            halved_last, best_at_check = halve, best_loss.clone()
            increases.zero_()
            step[halve] /= 2
            xk[halve], g[halve] = x_best[halve], g_best[halve]
            since, interval = 0, max(interval - decr, floor)
    return torch.where(broken.view(shape), x_adv, x_best)


def main():
    d = sys.argv[1]
    quick = "--quick" in sys.argv
    iters = int(sys.argv[sys.argv.index("--iters") + 1]) if "--iters" in sys.argv else 100
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    runs = 1 if quick else 5
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
            for p in model.parameters():
                p.requires_grad_(False)
            xin = x
            if name in ("cnn-dense", "moe-cnn"):
                model = model.to(memory_format=torch.channels_last)
                xin = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                diff = (model(xin) - V["eval.logits"]).abs().max().item()
            note = "logits agree with moelab: max |diff| %.2e" % diff
            steps, times = [], []
            for r in range(runs + 1):
                t0 = time.perf_counter()
                pgd10(model, xin, y, steps)
                if r > 0:
                    times.append(time.perf_counter() - t0)
            med, mn, mx = median(times)
            results.append(dict(workload=name, form=form, attack="pgd10", median=med, min=mn, max=mx, note=note))
            med, mn, mx = median(steps)
            results.append(dict(workload=name, form=form, attack="pgd-step", median=med, min=mn, max=mx))
            t0 = time.perf_counter()
            xa = apgd_ce(model, xin, y, iters)
            sec = time.perf_counter() - t0
            with torch.no_grad():
                robust = (model(xa).argmax(1) == y).float().mean().item()
            results.append(dict(workload=name, form=form, attack="apgd-ce", median=sec, min=sec, max=sec,
                                note="robust %.1f%%" % (100 * robust)))
            for r in results[-3:]:
                print("%-10s %-6s %-11s %9.1f ms  (min %8.1f, max %8.1f)%s" % (
                    r["workload"], r["form"] or "", r["attack"], 1e3 * r["median"], 1e3 * r["min"], 1e3 * r["max"],
                    ("  " + r["note"]) if r.get("note") else ""))
    if out:
        with open(out, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
