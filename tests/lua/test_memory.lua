-- A 1,000-step attack loop written in Lua and a long training loop stay flat
-- in memory (the live tensors of ml.memory() and the resident size of the
-- process): the bindings tell Lua's collector about tensor bytes, and freed
-- buffers are reused.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

-- resident bytes of this process (/proc/self/statm counts pages); nil under
-- AddressSanitizer, which keeps freed memory in quarantine on purpose
local sanitized = ml.build_info().sanitized
if sanitized then print("  (AddressSanitizer build: resident size not checked)") end
local function resident()
  if sanitized then return nil end
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local pages = tonumber(text:match("^%d+%s+(%d+)"))
  local p = io.popen("getconf PAGESIZE")
  local size = p and tonumber(p:read("a")) or 4096
  if p then p:close() end
  return pages * size
end
local MB = 1024 * 1024

T.test("a 1000-step PGD loop in Lua keeps memory flat", function()
  ml.seed(0)
  local model = ml.nn.mlp{hidden = {64}}:eval()
  -- a batch large enough that the garbage of the first 300 steps reaches the
  -- bindings' collection threshold: from then on the process size is flat
  local x, y = ml.rand(64, 1, 28, 28), ml.randint(1, 10, {64})
  local eps, alpha = 8 / 255, 2 / 255
  local xa = x:clone()
  local function step()
    local xr = xa:clone():requires_grad()
    local g = ml.grad(ml.cross_entropy(model(xr), y), xr)
    xa = (xa + g:sign() * alpha):clamp(x - eps, x + eps):clamp(0, 1)
  end
  for _ = 1, 100 do step() end
  local m100 = ml.memory()
  for _ = 101, 300 do step() end
  local r300 = resident()
  for _ = 301, 1000 do step() end
  local m1000, r1000 = ml.memory(), resident()
  if r300 then
    T.check(r1000 - r300 < 8 * MB, ("resident size %.1f MB after 300 steps, %.1f MB after 1000"):format(r300 / MB,
      r1000 / MB))
  end
  T.check(m1000.tensors <= m100.tensors + 5, ("live tensors %d after 100 steps, %d after 1000"):format(m100.tensors, m1000.tensors))
  T.check(m1000.bytes <= m100.bytes + 65536, ("live bytes %d after 100 steps, %d after 1000"):format(m100.bytes, m1000.bytes))
  T.check((xa - x):abs():max():item() <= eps + 1e-6, "the attack stays in the eps-ball")
end)

T.test("a long training loop keeps memory flat", function()
  ml.seed(1)
  local data = ml.data.gaussian_clusters{n = 2000, classes = 3, dim = 16, spread = 0.3, seed = 5}
  local model = ml.nn.Sequential(ml.nn.Linear(16, 64), ml.nn.ReLU(), ml.nn.Linear(64, 3))
  local at = {}
  local h = ml.train.fit(model, data, {epochs = 40, batch = 32, quiet = true, eval = data,
    callbacks = {on_epoch = function(r)
      if r.epoch == 5 or r.epoch == 40 then at[r.epoch] = {mem = ml.memory(), rss = resident()} end
    end}})
  T.check(#h == 40 and h[40].test_acc > 0.9, "trained 40 epochs (2,520 steps)")
  local a, b = at[5], at[40]
  T.check(b.mem.tensors <= a.mem.tensors + 5, ("live tensors %d after epoch 5, %d after 40"):format(a.mem.tensors,
    b.mem.tensors))
  T.check(b.mem.bytes <= a.mem.bytes + 65536, ("live bytes %d after epoch 5, %d after 40"):format(a.mem.bytes,
    b.mem.bytes))
  if a.rss then
    T.check(b.rss - a.rss < 4 * MB, ("resident size %.1f MB after epoch 5, %.1f MB after 40"):format(a.rss / MB,
      b.rss / MB))
  end
end)

T.test("freed storage is reused, not returned to the system each step", function()
  local before = ml.memory()
  for _ = 1, 50 do local t = ml.randn(256, 256) * 2 end
  collectgarbage()
  local after = ml.memory()
  T.check(after.cached_bytes > 0, "buffers kept for reuse")
  T.check(after.peak_bytes - before.peak_bytes < 16 * 256 * 256 * 4, "peak does not grow with the number of steps")
  ml.memory_trim()
  T.check(ml.memory().cached_bytes == 0, "memory_trim empties the cache")
end)

T.test("fresh_allocs counts the buffers the cache could not serve", function()
  ml.memory_trim()
  local m0 = ml.memory()
  local t = ml.zeros(12345)
  t = nil
  local m1 = ml.memory() -- collects t: its buffer goes to the cache
  T.check(m1.fresh_allocs >= m0.fresh_allocs + 1, ("an empty cache serves nothing: %d -> %d"):format(m0.fresh_allocs, m1.fresh_allocs))
  for _ = 1, 20 do
    local u = ml.zeros(12345)
    u = nil
    collectgarbage()
  end
  local m2 = ml.memory()
  T.check(m2.fresh_allocs == m1.fresh_allocs, ("the same size again comes from the cache: %d -> %d"):format(m1.fresh_allocs, m2.fresh_allocs))
end)

T.test("backward lets go of the graph's intermediate tensors at once", function()
  collectgarbage()
  local x = ml.randn(500, 500):requires_grad()           -- 1 MB per tensor
  local loss = ((x * 2):exp() * 3):tanh():sum()
  local during = ml.memory().bytes
  loss:backward()
  collectgarbage()                                       -- frees only what Lua no longer holds
  local after = ml.memory().bytes
  -- x * 2, exp, * 3 and tanh: four 1 MB intermediates, freed while `loss` lives on;
  -- what stays is x and its gradient
  T.check(during >= 5e6 and after <= 2.2e6, ("intermediates freed by backward: %d -> %d bytes"):format(during, after))
  T.check(x.grad ~= nil and x.grad:size(1) == 500, "the leaf keeps its gradient")
  T.raises(function() loss:backward() end, "a second time")
  local y = ml.randn(3):requires_grad()
  local l2 = (y * y):sum()
  l2:backward({retain_graph = true})
  l2:backward()
  T.close(y.grad, y:detach() * 4, 1e-6, 1e-6, "retain_graph keeps it for a second backward")
end)

T.done()
