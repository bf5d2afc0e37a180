-- bench/sweep_report.lua moelab.jsonl [torch.jsonl] -- the E-sweep and memory
-- sections of bench/run.sh: the W4 training step against the number of
-- experts (table, each side's cost relative to its own E = 2, and a plot),
-- and each side's resident memory in a training loop.
local ml = require "moelab"

local function read(p)
  local sweep, mem = {}, {}
  local f = p and io.open(p)
  if not f then return sweep, mem end
  for line in f:lines() do
    local r = ml.json.decode(line)
    if r.mode == "memory" then mem[r.workload] = r
    elseif r.experts then sweep[r.experts] = r end
  end
  f:close()
  return sweep, mem
end

local ms, mm = read(arg[1])
local ps, pm = read(arg[2])
local Es = {}
for E in pairs(ms) do Es[#Es + 1] = E end
table.sort(Es)

if #Es > 0 then
  print("== W4 training step against the number of experts (K = 2, same width; median ms, wall and CPU)")
  print(("%4s %10s %7s %10s %7s %10s %7s %10s %7s %7s"):format("E", "moelab", "/ E=2", "CPU", "/ E=2", "PyTorch",
    "/ E=2", "CPU", "/ E=2", "ratio"))
  local function val(r, k) return r and r[k] end
  local function cell(v, base, w)
    return v and ("%" .. w .. ".2f"):format(1e3 * v) or ("%" .. w .. "s"):format("-"),
           v and base and ("%7.2f"):format(v / base) or ("%7s"):format("-")
  end
  local e2 = Es[1]
  local xs, ym, yp = {}, {}, {}
  for _, E in ipairs(Es) do
    local a, b = ms[E], ps[E]
    local mw, mwr = cell(a.median, ms[e2].median, 10)
    local mc, mcr = cell(val(a, "cpu_median"), val(ms[e2], "cpu_median"), 10)
    local pw, pwr = cell(val(b, "median"), val(ps[e2], "median"), 10)
    local pc, pcr = cell(val(b, "cpu_median"), val(ps[e2], "cpu_median"), 10)
    print(("%4d %s %s %s %s %s %s %s %s %7s"):format(E, mw, mwr, mc, mcr, pw, pwr, pc, pcr,
      b and ("%.2f"):format(b.median / a.median) or "-"))
    xs[#xs + 1], ym[#ym + 1], yp[#yp + 1] = E, 1e3 * a.median, b and 1e3 * b.median or 0 / 0
  end
  local last = Es[#Es]
  print(("moelab: E = %d costs %.2fx E = %d in wall-clock%s (target <= 1.25x at batch 128; this run: batch %s);"
    .. " ratio = PyTorch / moelab, wall"):format(last, ms[last].median / ms[e2].median, e2,
    ms[last].cpu_median and ms[e2].cpu_median and (", %.2fx in CPU time"):format(ms[last].cpu_median / ms[e2].cpu_median)
      or "", ms[e2].batch or "?"))
  local series = {moelab = ym}
  if next(ps) then series.PyTorch = yp end
  print(ml.plot.lines{x = xs, y = series, xlog = true, title = "W4 train step (ms) against experts", xlabel = "experts",
                      width = 72, height = 14})
end

local ws = {}
for w in pairs(mm) do ws[#ws + 1] = w end
table.sort(ws)
if #ws > 0 then
  print("== resident memory of a training loop (MB; each side alone in a fresh process)")
  print(("%-10s %10s %10s %10s %10s %12s %12s %12s"):format("workload", "moelab", "PyTorch", "above idle", "above idle",
    "faults/step", "faults/step", "fresh/step"))
  for _, w in ipairs(ws) do
    local a, b = mm[w], pm[w]
    local function mb(kb) return kb and ("%.1f"):format(kb / 1024) or "-" end
    print(("%-10s %10s %10s %10s %10s %12.1f %12s %12s"):format(w, mb(a.peak_kb), mb(b and b.peak_kb),
      mb(a.peak_kb - a.idle_kb), mb(b and b.peak_kb - b.idle_kb), a.minflt_per_step,
      b and ("%.1f"):format(b.minflt_per_step) or "-",
      a.fresh_allocs_per_step and ("%.2f"):format(a.fresh_allocs_per_step) or "-"))
  end
  print("peak = the process's VmHWM; idle = its resident set before the model was built (moelab: the bare")
  print("binary; PyTorch: after importing torch); faults = minor page faults per steady-state step;")
  print("fresh = moelab's buffers per steady-state step that its allocator's cache could not serve")
end
