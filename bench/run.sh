#!/usr/bin/env bash
# Runs the W1-W4 benchmarks of moelab and, when python3-torch is installed,
# of PyTorch on the same weights and inputs, in one run; prints both and the
# ratio (PyTorch time / moelab time: above 1 means moelab is faster).
#   bash bench/run.sh [--quick]
# On a busy machine: OMP_NUM_THREADS=1 BENCH_THREADS=1 BENCH_CLOCK=cpu bash bench/run.sh
# times both sides at one thread in CPU time (the E-sweep always prints both).
set -euo pipefail
cd "$(dirname "$0")/.."
quick="${1:-}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# PyTorch gets the short OpenMP spin that moelab sets for itself (repl/main.c):
# with libgomp's default, a waiting thread spins while another process holds
# the other core, and PyTorch's transformer steps ran 10-30x slower on a busy host
spin="${GOMP_SPINCOUNT:-10000}"
[ -x build/moelab ] || { cmake -S . -B build >/dev/null && cmake --build build -j2 >/dev/null; }
echo "== moelab"
./build/moelab bench/models.lua $quick --export "$tmp" --out "$tmp/moelab.jsonl"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')"
  pre=""
  for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/*/libtcmalloc_minimal.so.4; do
    [ -e "$lib" ] && { pre="$lib"; break; }
  done
  LD_PRELOAD="$pre" OPENBLAS_NUM_THREADS=1 GOMP_SPINCOUNT="$spin" /usr/bin/python3 bench/torch_bench.py "$tmp" $quick --out "$tmp/torch.jsonl"
  echo "== side by side (median ms; ratio = PyTorch / moelab)"
  ./build/moelab bench/compare.lua "$tmp/moelab.jsonl" "$tmp/torch.jsonl"
else
  echo "(python3-torch is not installed: no PyTorch side)"
fi

# ---- W4 against the number of experts, and memory (bench/esweep.lua)
echo "== moelab: W4 against the number of experts; memory of a training loop"
./build/moelab bench/esweep.lua sweep $quick --export "$tmp" --out "$tmp/moelab_extra.jsonl"
# W1's memory in the full run only (--quick stays under a minute)
mem_workloads="vit-dense vmoe"
[ -z "$quick" ] && mem_workloads="cnn-dense $mem_workloads"
for w in $mem_workloads; do
  ./build/moelab bench/esweep.lua memory "$w" $quick --out "$tmp/moelab_extra.jsonl"
done
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "== PyTorch: the same"
  LD_PRELOAD="$pre" OPENBLAS_NUM_THREADS=1 GOMP_SPINCOUNT="$spin" /usr/bin/python3 bench/torch_bench.py "$tmp" --sweep $quick --out "$tmp/torch_extra.jsonl"
  for w in $mem_workloads; do
    LD_PRELOAD="$pre" OPENBLAS_NUM_THREADS=1 GOMP_SPINCOUNT="$spin" /usr/bin/python3 bench/torch_bench.py "$tmp" --memory "$w" $quick --out "$tmp/torch_extra.jsonl"
  done
fi
./build/moelab bench/sweep_report.lua "$tmp/moelab_extra.jsonl" "$tmp/torch_extra.jsonl"
