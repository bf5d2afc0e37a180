-- Same seed + same thread count = bit-identical numbers, whatever the machine's
-- load (docs/ARCHITECTURE.md, Threads): seeded trainings of a small MoE-CNN, a
-- ResNet, a ViT and a V-MoE on 2 threads give identical parameters, buffers and
-- input gradients, run after run, while another process keeps a core busy, in
-- another process, and on the portable (im2col) convolution path.
--
--   moelab tests/lua/test_determinism.lua            the test
--   moelab tests/lua/test_determinism.lua --child F  one MoE-CNN run, saved to F
local ml = require "moelab"

ml.threads(2)

-- A few seeded training steps through ml.train.fit (shuffled batches, SGD with
-- momentum, the aux loss of the MoE layers), then the input gradient of the
-- trained model in eval mode (one PGD step's worth). Returns {name = tensor}:
-- every parameter and buffer, and "gx".
local function run(build, shape, steps)
  ml.seed(7)
  local model = build()
  local x, y = ml.rand(shape), ml.randint(1, 10, {shape[1]})
  ml.train.fit(model, ml.data.from_tensors(x, y, 10), {epochs = 1, batch = shape[1] // steps, lr = 0.05,
    momentum = 0.9, seed = 3, quiet = true})
  model:eval()
  local xr = x:requires_grad()
  local out = model:state_dict()
  out.gx = ml.grad(ml.cross_entropy(model(xr), y), xr)
  return out
end

local moe_cnn = {
  function() return ml.nn.moe_cnn{experts = 2, ratio = 0.5, base_width = 8} end, {32, 3, 32, 32}, 3,
}

if arg[1] == "--child" then
  ml.io.save_safetensors(arg[2], run(table.unpack(moe_cnn)), {case = "moe_cnn"})
  os.exit(0)
end

local T = dofile("tests/lua/testing.lua")

-- the names whose tensors differ (not bit-identical) between two runs
local function differing(a, b)
  local bad = {}
  for k, v in pairs(a) do
    if not (b[k] and v:equal(b[k])) then bad[#bad + 1] = k end
  end
  for k in pairs(b) do if not a[k] then bad[#bad + 1] = k end end
  table.sort(bad)
  return bad
end

local function same(a, b, what)
  local bad = differing(a, b)
  T.check(#bad == 0, ("%s: %d tensor(s) differ: %s"):format(what, #bad, table.concat(bad, ", "):sub(1, 300)))
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local cases = {
  {"moe_cnn", table.unpack(moe_cnn)},
  {"moe_cnn mask form", function()
    return ml.nn.moe_cnn{experts = 2, ratio = 0.5, base_width = 8}:set_moe_form("mask")
  end, {32, 3, 32, 32}, 2},
  {"resnet18", function() return ml.nn.resnet18{base_width = 8} end, {24, 3, 32, 32}, 2},
  {"vit", function() return ml.nn.vit{dim = 32, depth = 2, heads = 2, mlp = 64, patch = 7} end, {32, 1, 28, 28}, 3},
  {"vmoe", function()
    return ml.nn.vmoe{dim = 32, depth = 2, heads = 2, mlp = 64, experts = 4, patch = 7}
  end, {32, 1, 28, 28}, 3},
}

local first = {}
for _, c in ipairs(cases) do
  T.test(c[1] .. ": three seeded trainings on 2 threads are bit-identical", function()
    local a = run(c[2], c[3], c[4])
    T.check(count(a) > 10 and a.gx, "parameters, buffers and the input gradient")
    for r = 2, 3 do same(a, run(c[2], c[3], c[4]), ("%s, run %d against run 1"):format(c[1], r)) end
    first[c[1]] = a
  end)
end

-- A busy loop on one core (stopped by `timeout` should the test die first).
local function busy_start()
  local p = io.popen("timeout 300 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

local function child(env)
  local path = os.tmpname()
  local ok = os.execute(("%s %s tests/lua/test_determinism.lua --child %s"):format(env, arg[-1] or "moelab", path))
  local t = ok and ml.io.load_safetensors(path) or {}
  os.remove(path)
  return ok, t
end

T.test("under load, in another process and on the im2col path: the same numbers", function()
  local pid = busy_start()
  T.check(pid, "a busy loop runs beside the test")
  local ok, err = pcall(function()
    for _, name in ipairs{"moe_cnn", "vmoe"} do
      for _, c in ipairs(cases) do
        if c[1] == name and first[name] then same(first[name], run(c[2], c[3], c[4]), name .. " under load") end
      end
    end
    local ok1, t1 = child("OMP_NUM_THREADS=2")
    T.check(ok1, "child process runs")
    if first.moe_cnn then same(first.moe_cnn, t1, "moe_cnn in another process, under load") end
    local ok2, i1 = child("OMP_NUM_THREADS=2 MOELAB_CONV=im2col")
    local ok3, i2 = child("OMP_NUM_THREADS=2 MOELAB_CONV=im2col")
    T.check(ok2 and ok3 and count(i1) > 10, "children on the im2col path run")
    same(i1, i2, "moe_cnn on the im2col path, two processes under load")
  end)
  if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  if not ok then error(err, 0) end
end)

T.done()
