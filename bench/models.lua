-- bench/models.lua -- the W1-W4 workloads of WORKLOADS.md: infer, train and
-- pgd modes at batch 128, median/min/max over repeated runs.
--
--   ./build/moelab bench/models.lua [--quick] [--only vit-dense,vmoe] [--runs n] [--out results.jsonl] [--export dir]
--
-- --only runs the listed workloads (cnn-dense, moe-cnn, vit-dense, vmoe); --runs sets
-- the timed runs (pgd: half of them, at least one).
--
-- --export writes each workload's weights (PyTorch names), input batch and
-- eval logits as safetensors, so bench/torch_bench.py runs identical models on
-- identical inputs (and checks the logits agree). bench/run.sh does both and
-- prints the side-by-side table.
local ml = require "moelab"
local train_step = dofile("bench/train_step.lua")

local quick, out_path, export_dir, only, runs = false, nil, nil, nil, nil
local i = 1
while arg and arg[i] do
  if arg[i] == "--quick" then quick = true
  elseif arg[i] == "--runs" then runs = assert(math.tointeger(tonumber(arg[i + 1])), "--runs: an integer"); i = i + 1
  elseif arg[i] == "--out" then out_path = arg[i + 1]; i = i + 1
  elseif arg[i] == "--export" then export_dir = arg[i + 1]; i = i + 1
  elseif arg[i] == "--only" then only = {}; for w in arg[i + 1]:gmatch("[^,]+") do only[w] = true end; i = i + 1 end
  i = i + 1
end

local B = quick and 16 or 128
local RUNS, PGD_RUNS = quick and 2 or 10, quick and 1 or 5
if runs then RUNS, PGD_RUNS = runs, math.max(1, runs // 2) end

local function median_min_max(times)
  table.sort(times)
  return times[math.floor((#times + 1) / 2)], times[1], times[#times]
end

-- BENCH_CLOCK=cpu: the process's CPU time instead of wall-clock (as torch_bench.py)
local clock = os.getenv("BENCH_CLOCK") == "cpu" and os.clock or ml.clock
local function time_it(fn, warmup, runs)
  for _ = 1, warmup do fn() end
  local t = {}
  for r = 1, runs do
    local t0 = clock()
    fn()
    t[r] = clock() - t0
  end
  return median_min_max(t)
end

local torch_names = dofile("bench/export.lua")
local function export(model, name, x, y)
  local t = torch_names(model)
  model:eval()
  t["input.x"], t["input.y"] = x, y - 1
  t["eval.logits"] = ml.no_grad(function() return model(x) end)
  ml.io.save_safetensors(export_dir .. "/" .. name .. ".safetensors", t, {workload = name, batch = tostring(B)})
end

local workloads = {
  {name = "cnn-dense", build = function() return ml.nn.resnet18{classes = 10} end, shape = {3, 32, 32}},
  {name = "moe-cnn", build = function() return ml.nn.moe_cnn{experts = 2, ratio = 0.5} end, shape = {3, 32, 32},
   calibrate = true, forms = {"sparse", "mask"}},
  {name = "vit-dense", build = function() return ml.nn.vit{classes = 10} end, shape = {1, 28, 28}},
  {name = "vmoe", build = function() return ml.nn.vmoe{classes = 10} end, shape = {1, 28, 28}, calibrate = true},
}

local results = {}
local function record(r)
  results[#results + 1] = r
  print(("%-14s %-6s %-7s %9.2f ms  (min %8.2f, max %8.2f)%s"):format(r.workload, r.form or "", r.mode,
    1e3 * r.median, 1e3 * r.min, 1e3 * r.max, r.note and ("  " .. r.note) or ""))
end

print(("moelab %s, %d threads, batch %d, %d runs (pgd %d)%s"):format(ml.version, ml.threads(), B, RUNS, PGD_RUNS,
  quick and ", quick" or ""))
for _, w in ipairs(workloads) do
  if only and not only[w.name] then goto next_workload end
  ml.seed(0)
  local model = w.build()
  local shape = {B}
  for _, d in ipairs(w.shape) do shape[#shape + 1] = d end
  local x = ml.rand(shape)
  local y = ml.randint(1, 10, {B})
  local note
  if w.calibrate then
    local _, tr = model:eval():forward(x, {trace = true})
    local degenerate = 0
    for _, l in ipairs(ml.nn.trace_layers(tr)) do
      if tr[l].load:gt(0):sum():item() <= 1 then degenerate = degenerate + 1 end
    end
    ml.nn.calibrate_routers(model, x)
    note = ("calibrated routers (default routing: %d layer(s) sent everything to one expert)"):format(degenerate)
  end
  if export_dir then export(model, w.name, x, y) end
  for _, form in ipairs(w.forms or {false}) do
    if form then model:set_moe_form(form) end
    -- infer
    model:eval()
    local med, mn, mx = time_it(function() ml.no_grad(function() return model(x) end) end, 3, RUNS)
    record{workload = w.name, form = form or nil, mode = "infer", median = med, min = mn, max = mx, note = note}
    note = nil
    -- train: zero grads, forward, CE (+ aux), backward, SGD(0.01, momentum 0.9)
    model:train()
    local opt = ml.optim.sgd(model, {lr = 0.01, momentum = 0.9})
    med, mn, mx = time_it(function() train_step(model, opt, x, y) end, 3, RUNS)
    record{workload = w.name, form = form or nil, mode = "train", median = med, min = mn, max = mx}
    -- pgd: eval, input gradient only, eps 8/255, alpha 2/255, 10 steps, random start
    model:eval()
    local eps, alpha = 8 / 255, 2 / 255
    med, mn, mx = time_it(function()
      local xa = (x + (ml.rand_like(x) * 2 - 1) * eps):clamp(0, 1)
      for _ = 1, 10 do
        local xr = xa:requires_grad()
        local g = ml.grad(ml.cross_entropy(model(xr), y), xr)
        xa = (xa:detach() + g:sign() * alpha):clamp(x - eps, x + eps):clamp(0, 1)
      end
    end, 1, PGD_RUNS)
    record{workload = w.name, form = form or nil, mode = "pgd", median = med, min = mn, max = mx}
  end
  if w.forms then model:set_moe_form("sparse") end
  ::next_workload::
end

if out_path then
  local f = assert(io.open(out_path, "w"))
  for _, r in ipairs(results) do f:write(ml.json.encode(r), "\n") end
  f:close()
end
