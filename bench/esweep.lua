-- bench/esweep.lua -- the cost of W4 (vmoe) against its number of experts, and
-- the memory of a steady training loop.
--
--   ./build/moelab bench/esweep.lua sweep  [--quick] [--out f.jsonl] [--export dir]
--   ./build/moelab bench/esweep.lua memory WORKLOAD [--experts E] [--quick] [--out f.jsonl]
--
-- sweep: W4 with E = 2, 4, 8, 16, 32, 64 experts (--quick: 2, 8, 64) at K = 2, same width (every
-- expert an MLP 64 -> 256 -> 64), calibrated routers; the median time of a
-- training step as WORKLOADS.md defines it (zero grads, forward, CE + the
-- routers' auxiliary losses, backward, SGD with momentum over every parameter
-- that got a gradient -- at batch 128 every expert receives tokens, so the
-- optimizer updates all E experts), in wall-clock and in CPU time (the
-- process's, all threads: with OMP_NUM_THREADS=1 the steadier figure on a
-- busy machine). --export writes each model's weights and batch for
-- bench/torch_bench.py --sweep.
--
-- memory: one workload's training loop in this process alone: the resident
-- set before the model is built (idle) and the peak (VmHWM) of the training
-- loop (counted from the end of the set-up), the minor page
-- faults and the buffers the allocator's cache could not serve (ml.memory's
-- fresh_allocs) per steady-state step, and the
-- live tensors / bytes after each step (flat when nothing leaks).
local ml = require "moelab"
local torch_names = dofile("bench/export.lua")

local mode = arg[1]
local quick, out_path, export_dir, workload, experts = false, nil, nil, arg[2], 8
local i = 2
while arg[i] do
  if arg[i] == "--quick" then quick = true
  elseif arg[i] == "--out" then out_path = arg[i + 1]; i = i + 1
  elseif arg[i] == "--export" then export_dir = arg[i + 1]; i = i + 1
  elseif arg[i] == "--experts" then experts = tonumber(arg[i + 1]); i = i + 1 end
  i = i + 1
end
local B = quick and 16 or 128

-- /proc/self: resident set now and at its peak (kB), minor page faults
local function proc()
  local st = {}
  for line in io.lines("/proc/self/status") do
    local k, v = line:match("^(%w+):%s+(%d+) kB")
    if k then st[k] = tonumber(v) end
  end
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  -- fields after the command name (in parentheses): state is field 3, minflt field 10
  local rest = s:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return {rss = st.VmRSS, hwm = st.VmHWM, minflt = tonumber(fields[8])}
end

-- VmHWM starts again from the current resident set (Linux: clear_refs 5), so
-- the peak is the training loop's, not the set-up's (calibrating the routers)
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then f:write("5"); f:close() end
end

local function build(name, E)
  if name == "cnn-dense" then return ml.nn.resnet18{classes = 10}, {3, 32, 32} end
  if name == "vit-dense" then return ml.nn.vit{classes = 10}, {1, 28, 28} end
  return ml.nn.vmoe{classes = 10, experts = E}, {1, 28, 28}
end

local function batch(shape)
  local s = {B}
  for _, d in ipairs(shape) do s[#s + 1] = d end
  return ml.rand(s), ml.randint(1, 10, {B})
end

local train_step = dofile("bench/train_step.lua")

local results = {}
local function emit(r)
  results[#results + 1] = r
end

if mode == "sweep" then
  local runs = quick and 3 or 10
  print(("W4 training step against the number of experts (K = 2, batch %d, %d runs, median ms)"):format(B, runs))
  -- --quick: the ends and the default only (bench/run.sh --quick stays under a minute)
  for _, E in ipairs(quick and {2, 8, 64} or {2, 4, 8, 16, 32, 64}) do
    ml.seed(0)
    local model = ml.nn.vmoe{classes = 10, experts = E}
    local x, y = batch{1, 28, 28}
    ml.nn.calibrate_routers(model, x)
    if export_dir then
      local t = torch_names(model)
      t["input.x"], t["input.y"] = x, y - 1
      ml.io.save_safetensors(("%s/vmoe-E%d.safetensors"):format(export_dir, E), t, {experts = tostring(E)})
    end
    model:train()
    local opt = ml.optim.sgd(model, {lr = 0.01, momentum = 0.9})
    for _ = 1, 3 do train_step(model, opt, x, y) end
    local t, c = {}, {}
    for r = 1, runs do
      local t0, c0 = ml.clock(), os.clock()
      train_step(model, opt, x, y)
      t[r], c[r] = ml.clock() - t0, os.clock() - c0
    end
    table.sort(t)
    table.sort(c)
    local med, cpu = t[(runs + 1) // 2], c[(runs + 1) // 2]
    print(("  E = %2d  %8.2f ms  (min %8.2f, max %8.2f)  CPU %8.2f ms  %d parameters"):format(E, 1e3 * med, 1e3 * t[1],
      1e3 * t[runs], 1e3 * cpu, model:num_params()))
    emit{workload = "vmoe", experts = E, mode = "train", batch = B, median = med, min = t[1], max = t[runs],
          cpu_median = cpu}
  end
elseif mode == "memory" then
  assert(workload, "memory: which workload? (cnn-dense, vit-dense, vmoe)")
  local idle = proc()
  ml.seed(0)
  local model, shape = build(workload, experts)
  local x, y = batch(shape)
  if workload == "vmoe" then ml.nn.calibrate_routers(model, x) end
  ml.memory_trim()
  reset_peak()
  model:train()
  local opt = ml.optim.sgd(model, {lr = 0.01, momentum = 0.9})
  -- warm-up: the V-MoE's dispatched blocks change size from step to step (the
  -- noisy routing drops a varying number of assignments), so the allocator's
  -- cache needs a few steps to hold a buffer of every size class they visit
  local warm, steps = quick and 5 or 15, quick and 5 or 20
  for _ = 1, warm do train_step(model, opt, x, y) end
  collectgarbage()
  local m0, p0 = ml.memory(), proc()
  local worst = 0
  for _ = 1, steps do
    local f0 = proc().minflt
    train_step(model, opt, x, y)
    worst = math.max(worst, proc().minflt - f0)
  end
  collectgarbage()
  local m1, p1 = ml.memory(), proc()
  local r = {workload = workload, experts = workload == "vmoe" and experts or nil, mode = "memory",
             idle_kb = idle.rss, peak_kb = p1.hwm, minflt_per_step = (p1.minflt - p0.minflt) / steps, minflt_max = worst,
             tensors_before = m0.tensors, tensors_after = m1.tensors, bytes_before = m0.bytes, bytes_after = m1.bytes,
             allocator_peak_growth = m1.peak_bytes - m0.peak_bytes,
             fresh_allocs_per_step = (m1.fresh_allocs - m0.fresh_allocs) / steps}
  print(("%-10s peak RSS %7.1f MB (idle %5.1f MB, +%6.1f MB); %d steady steps after %d: %.1f minor page faults a "
    .. "step (at most %d), %.2f buffers a step not served by the allocator's cache, allocator peak +%d bytes, "
    .. "live tensors %d -> %d, bytes %d -> %d"):format(workload,
    p1.hwm / 1024, idle.rss / 1024, (p1.hwm - idle.rss) / 1024, steps, warm, r.minflt_per_step, worst,
    r.fresh_allocs_per_step, r.allocator_peak_growth, m0.tensors, m1.tensors, m0.bytes, m1.bytes))
  emit(r)
else
  error("esweep: mode must be sweep or memory")
end

if out_path then
  local f = assert(io.open(out_path, "a"))
  for _, r in ipairs(results) do f:write(ml.json.encode(r), "\n") end
  f:close()
end
