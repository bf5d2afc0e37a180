-- bench/attacks.lua -- the attacks of ml.attack on the W1-W4 models (bench/WORKLOADS.md):
-- PGD-10 and APGD-CE (100 iterations) on a batch of 128, AutoAttack standard on 1,000
-- images (CIFAR-10 test images for resnet18 / moe_cnn, MNIST for vit / vmoe), and, when
-- python3-torch is installed, PyTorch's PGD-10 and an APGD-CE written in PyTorch
-- (bench/torch_attacks.py, a reference of speed only) on the same weights and images.
--
--   ./build/moelab bench/attacks.lua [--quick] [--no-torch] [--aa N] [--out results.jsonl]
--
-- --aa N: AutoAttack on N images (default 1000, --quick 16; 0 skips it).
--
-- The models are freshly initialised (the MoE routers calibrated as in bench/models.lua),
-- and the labels are the models' own predictions, so that every image is attacked: the
-- figures are speeds, not robustness. Never asserted in a test.
local ml = require "moelab"

local quick, torch, out_path, n_aa = false, true, nil, nil
local i = 1
while arg and arg[i] do
  if arg[i] == "--quick" then quick = true
  elseif arg[i] == "--no-torch" then torch = false
  elseif arg[i] == "--aa" then n_aa = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--out" then out_path = arg[i + 1]; i = i + 1 end
  i = i + 1
end

local B = quick and 16 or 128             -- PGD / APGD batch
local N_AA = n_aa or (quick and 16 or 1000) -- AutoAttack images
local APGD_ITERS = quick and 10 or 100
local EPS, ALPHA = 8 / 255, 2 / 255       -- WORKLOADS.md's PGD
local PGD_RUNS = quick and 1 or 5

local cifar = ml.data.cifar10("data/cifar10").test
local mnist = ml.data.mnist("data/mnist-10k").test

local workloads = {
  {name = "cnn-dense", build = function() return ml.nn.resnet18{classes = 10} end, data = cifar},
  {name = "moe-cnn", build = function() return ml.nn.moe_cnn{experts = 2, ratio = 0.5} end, data = cifar,
   calibrate = true, forms = {"sparse", "mask"}},
  {name = "vit-dense", build = function() return ml.nn.vit{classes = 10} end, data = mnist},
  {name = "vmoe", build = function() return ml.nn.vmoe{classes = 10} end, data = mnist, calibrate = true},
}

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)], t[1], t[#t]
end

local results = {}
local function record(r)
  results[#results + 1] = r
  print(("%-10s %-6s %-11s %9.1f ms  (min %8.1f, max %8.1f)%s"):format(r.workload, r.form or "", r.attack,
    1e3 * r.median, 1e3 * r.min, 1e3 * r.max, r.note and ("  " .. r.note) or ""))
end

-- our parameter names -> PyTorch's (as bench/models.lua exports them for bench/torch_bench.py)
local torch_names = dofile("bench/export.lua")
local function export(dir, name, model, x, y)
  local t = torch_names(model)
  t["input.x"], t["input.y"] = x, y - 1
  t["eval.logits"] = ml.no_grad(function() return model(x) end)
  ml.io.save_safetensors(dir .. "/" .. name .. ".safetensors", t, {workload = name, batch = tostring(x:size(1))})
end

local have_torch = torch and os.execute("/usr/bin/python3 -c 'import torch' 2>/dev/null") == true
local dir
if have_torch then
  dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
end

print(("moelab %s, %d threads; PGD-10 and APGD-CE-%d on %d images, AutoAttack standard on %d%s"):format(ml.version,
  ml.threads(), APGD_ITERS, B, N_AA, quick and " (quick)" or ""))
for _, w in ipairs(workloads) do
  ml.seed(0)
  local model = w.build():eval()
  local x = w.data:batch(1, math.max(B, N_AA))
  local note
  if w.calibrate then
    ml.nn.calibrate_routers(model, x:narrow(1, 1, B))
    model:eval()
    note = "routers calibrated"
  end
  -- the labels: the model's own predictions (every image is attacked)
  local y = ml.no_grad(function() return model(x):argmax(2) end)
  local xb, yb = x:narrow(1, 1, B), y:narrow(1, 1, B)
  if dir then export(dir, w.name, model, xb, yb) end
  for _, form in ipairs(w.forms or {false}) do
    if form then model:set_moe_form(form) end
    -- PGD-10: the whole attack, and the step alone (between the first and the last step)
    local times, steps = {}, {}
    for r = 0, PGD_RUNS do
      local t_first
      local t0 = ml.clock()
      ml.attack.pgd(model, xb, yb, {eps = EPS, alpha = ALPHA, steps = 10, random_start = true, seed = r,
        on_step = function(step) if step == 1 then t_first = ml.clock() elseif step == 10 then
          steps[#steps + 1] = (ml.clock() - t_first) / 9 end end})
      if r > 0 then times[#times + 1] = ml.clock() - t0 end -- the first run warms up
    end
    local med, mn, mx = median(times)
    record{workload = w.name, form = form or nil, attack = "pgd10", median = med, min = mn, max = mx, note = note}
    note = nil
    med, mn, mx = median(steps)
    record{workload = w.name, form = form or nil, attack = "pgd-step", median = med, min = mn, max = mx}
    -- APGD-CE
    local _, rep = ml.attack.apgd(model, xb, yb, {eps = EPS, steps = APGD_ITERS})
    record{workload = w.name, form = form or nil, attack = "apgd-ce", median = rep.cost.seconds, min = rep.cost.seconds,
           max = rep.cost.seconds, note = ("robust %.1f%%"):format(100 * rep.robust_accuracy)}
    -- AutoAttack standard
    if N_AA > 0 then
      local _, aa = ml.attack.autoattack(model, x:narrow(1, 1, N_AA), y:narrow(1, 1, N_AA),
        {eps = EPS, batch = 250, quiet = true, steps = quick and 10 or nil, queries = quick and 100 or nil})
      local parts = {}
      for _, p in ipairs(aa.attacks) do parts[#parts + 1] = ("%s %.1fs"):format(p.name, p.cost.seconds) end
      record{workload = w.name, form = form or nil, attack = "autoattack", median = aa.cost.seconds,
             min = aa.cost.seconds, max = aa.cost.seconds,
             note = ("robust %.1f%%; %s"):format(100 * aa.robust_accuracy, table.concat(parts, ", "))}
    end
  end
  if w.forms then model:set_moe_form("sparse") end
end

if out_path then
  local f = assert(io.open(out_path, "w"))
  for _, r in ipairs(results) do f:write(ml.json.encode(r), "\n") end
  f:close()
end

if dir then
  local tout = dir .. "/torch.jsonl"
  print(("== PyTorch (bench/torch_attacks.py)"))
  local pre = ""
  for _, lib in ipairs({"/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}) do
    if io.open(lib) then pre = "LD_PRELOAD=" .. lib end
  end
  os.execute(("%s OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_attacks.py %s %s --iters %d --out %s"):format(pre,
    dir, quick and "--quick" or "", APGD_ITERS, tout))
  local theirs = {}
  local f = io.open(tout)
  if f then
    for line in f:lines() do
      local r = ml.json.decode(line)
      theirs[r.workload .. "/" .. (r.form or "-") .. "/" .. r.attack] = r
    end
    f:close()
  end
  print("== side by side (median ms; ratio = PyTorch / moelab: above 1 means moelab is faster)")
  print(("%-30s %10s %10s %7s"):format("workload/form/attack", "moelab", "PyTorch", "ratio"))
  for _, r in ipairs(results) do
    local key = r.workload .. "/" .. (r.form or "-") .. "/" .. r.attack
    local t = theirs[key]
    if t then print(("%-30s %10.1f %10.1f %7.2f"):format(key, 1e3 * r.median, 1e3 * t.median, t.median / r.median)) end
  end
  os.execute("rm -rf " .. dir)
elseif torch then
  print("(python3-torch is not installed: no PyTorch side)")
end
