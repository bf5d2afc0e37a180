-- A 1,000-step attack loop written in Lua stays flat in memory: the bindings
-- tell Lua's collector about tensor bytes, and freed buffers are reused.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("a 1000-step PGD loop in Lua keeps memory flat", function()
  ml.seed(0)
  local model = ml.nn.mlp{hidden = {64}}:eval()
  local x, y = ml.rand(32, 1, 28, 28), ml.randint(1, 10, {32})
  local eps, alpha = 8 / 255, 2 / 255
  local xa = x:clone()
  local function step()
    local xr = xa:clone():requires_grad()
    local g = ml.grad(ml.cross_entropy(model(xr), y), xr)
    xa = (xa + g:sign() * alpha):clamp(x - eps, x + eps):clamp(0, 1)
  end
  for _ = 1, 100 do step() end
  local m100 = ml.memory()
  for _ = 1, 900 do step() end
  local m1000 = ml.memory()
  T.check(m1000.tensors <= m100.tensors + 5, ("live tensors %d after 100 steps, %d after 1000"):format(m100.tensors, m1000.tensors))
  T.check(m1000.bytes <= m100.bytes + 65536, ("live bytes %d after 100 steps, %d after 1000"):format(m100.bytes, m1000.bytes))
  T.check((xa - x):abs():max():item() <= eps + 1e-6, "the attack stays in the eps-ball")
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
