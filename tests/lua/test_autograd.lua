-- Autograd: every differentiable op of the core engine against finite differences.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

ml.seed(1)
local function away_from_zero(...)  -- inputs without kinks near 0
  local x = ml.randn(...)
  return x + x:sign() * 0.2
end

-- distinct values at least 0.05 apart, shuffled: no ties for max/min/inf-norm
local function distinct(...)
  local shape = {...}
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = (i - n / 2) * 0.05 end
  math.randomseed(7)
  for i = n, 2, -1 do
    local j = math.random(i)
    v[i], v[j] = v[j], v[i]
  end
  return ml.tensor(v):reshape(shape)
end

T.test("elementwise unary", function()
  local x = away_from_zero(3, 4)
  for _, name in ipairs{"neg", "exp", "abs", "relu", "gelu", "sigmoid", "tanh", "softplus",
                        "sin", "cos", "square", "erf"} do
    T.gradcheck(name, function(a) return ml[name](a) end, {x})
  end
  local p = ml.rand(3, 4) + 0.5
  for _, name in ipairs{"log", "sqrt", "reciprocal", "log1p"} do
    T.gradcheck(name, function(a) return ml[name](a) end, {p})
  end
  T.gradcheck("expm1", function(a) return a:expm1() end, {x * 0.5})
end)

T.test("erf gradient far in the tails (exp underflows to exactly 0)", function()
  local v = {0, 0.5, -2, 4, 9, -9.5, 10.5, -11, 50, -1e30}
  local x = ml.tensor(v):requires_grad()
  ml.erf(x):sum():backward()
  for i, xi in ipairs(v) do
    local want = 2 / math.sqrt(math.pi) * math.exp(-xi * xi)
    local got = x.grad[i]
    if xi * xi > 103.98 then
      T.check(got == 0, "erf'(" .. xi .. ") = " .. got .. ", expected exactly 0")
    else
      T.near(got, want, want * 1e-5, "erf'(" .. xi .. ")")
    end
  end
end)

T.test("binary with broadcasting", function()
  local a, b = ml.randn(3, 4), ml.randn(4)
  local pos = ml.rand(3, 1) + 0.5
  T.gradcheck("add", function(x, y) return x + y end, {a, b})
  T.gradcheck("sub", function(x, y) return x - y end, {a, b})
  T.gradcheck("mul", function(x, y) return x * y end, {a, b})
  T.gradcheck("div", function(x, y) return x / y end, {a, pos})
  T.gradcheck("pow", function(x, y) return x ^ y end, {pos, b})
  T.gradcheck("minimum", function(x, y) return ml.minimum(x, y) end, {a, b + 0.05})
  T.gradcheck("maximum", function(x, y) return ml.maximum(x, y) end, {a, b + 0.05})
  T.gradcheck("scalar ops", function(x) return (2 - x) * 3 + 1 / (x:abs() + 1) - x / 4 end, {a})
  T.gradcheck("pow scalar", function(x) return x ^ 3 + pos ^ 0.5 * x end, {a})
  T.gradcheck("rpow", function(x) return 2 ^ x end, {a})
end)

T.test("clamp and where", function()
  local a = ml.arange(20):reshape(4, 5) * 0.1 - 0.97 -- no value within 0.03 of a bound
  T.gradcheck("clamp", function(x) return x:clamp(-0.5, 0.7) end, {a})
  local cond = a:gt(0)
  T.gradcheck("where", function(x, y) return ml.where(cond, x, y) end, {ml.randn(4, 5), ml.randn(5)})
end)

T.test("reductions", function()
  local a = distinct(3, 4, 5)
  T.gradcheck("sum all", function(x) return x:sum() end, {a})
  T.gradcheck("sum dim", function(x) return x:sum(2) end, {a})
  T.gradcheck("sum keepdim", function(x) return x:sum(-1, true) * x end, {a})
  T.gradcheck("mean", function(x) return x:mean(1) end, {a})
  T.gradcheck("var", function(x) return x:var(3) end, {a})
  T.gradcheck("var biased all", function(x) return x:var({unbiased = false}) end, {a})
  T.gradcheck("std", function(x) return x:std(2) end, {a})
  T.gradcheck("max dim", function(x) return (x:max(2)) end, {a})
  T.gradcheck("min all", function(x) return x:min() end, {a})
  T.gradcheck("norm2", function(x) return x:norm() end, {a})
  T.gradcheck("norm1 dim", function(x) return x:norm(1, 2) end, {away_from_zero(3, 4)})
  T.gradcheck("norm inf", function(x) return x:norm(math.huge, 2) end, {a})
  T.gradcheck("norm3", function(x) return x:norm(3, 1) end, {a})
  T.gradcheck("logsumexp", function(x) return x:logsumexp(3) end, {a})
end)

T.test("shape ops", function()
  local a = ml.randn(2, 3, 4)
  T.gradcheck("reshape", function(x) return x:reshape(4, 6) * ml.arange(6) end, {a})
  T.gradcheck("permute", function(x) return x:permute(3, 1, 2):contiguous() * ml.arange(3) end, {a})
  T.gradcheck("transpose", function(x) return x:transpose(1, 3) * ml.arange(2) end, {a})
  T.gradcheck("narrow", function(x) return x:narrow(3, 2, 2) end, {a})
  T.gradcheck("select", function(x) return x:select(2, 3) end, {a})
  T.gradcheck("index", function(x) return x[2] end, {a})
  T.gradcheck("unsqueeze/squeeze", function(x) return x:unsqueeze(2):squeeze(2) * 2 end, {a})
  T.gradcheck("expand", function(x) return x:expand(5, 3, 4) end, {ml.randn(3, 1)})
  T.gradcheck("cat", function(x, y) return ml.cat({x, y, x}, 2) end, {a, ml.randn(2, 2, 4)})
  T.gradcheck("stack", function(x, y) return ml.stack({x, y}, 1) end, {ml.randn(3), ml.randn(3)})
  T.gradcheck("clone", function(x) return x:clone() * x end, {a})
end)

T.test("matmul family", function()
  T.gradcheck("matmul 2d", function(x, y) return ml.matmul(x, y) end, {ml.randn(3, 4), ml.randn(4, 5)})
  T.gradcheck("matmul batched x 2d", function(x, y) return ml.matmul(x, y) end, {ml.randn(2, 3, 4), ml.randn(4, 2)})
  T.gradcheck("matmul broadcast batch", function(x, y) return ml.matmul(x, y) end,
    {ml.randn(2, 1, 3, 4), ml.randn(3, 4, 2)})
  T.gradcheck("matmul vec", function(x, y) return ml.matmul(x, y) end, {ml.randn(4), ml.randn(4, 3)})
  T.gradcheck("dot", function(x, y) return ml.dot(x, y) end, {ml.randn(5), ml.randn(5)})
  T.gradcheck("bmm", function(x, y) return ml.bmm(x, y) end, {ml.randn(2, 3, 4), ml.randn(2, 4, 5)})
  T.gradcheck("linear", function(x, w, b) return ml.linear(x, w, b) end, {ml.randn(3, 4), ml.randn(5, 4), ml.randn(5)})
  T.gradcheck("linear transposed weight", function(x, w) return ml.linear(x, w:t()) end,
    {ml.randn(3, 4), ml.randn(4, 5)})
end)

T.test("input gradients and ml.grad", function()
  local w = ml.randn(4, 3):requires_grad()
  local x = ml.randn(2, 4):requires_grad()
  local loss = ml.matmul(x, w):relu():sum()
  local gx = ml.grad(loss, x)
  T.check(w.grad == nil, "ml.grad must not touch .grad")
  T.check(gx:numel() == 8, "input gradient has the input's shape")
  local loss2 = ml.matmul(x, w):relu():sum()
  loss2:backward()
  T.close(x.grad, gx, 1e-6, 1e-7, "backward and ml.grad agree")
  T.check(w.grad ~= nil, "backward fills leaf grads")
  -- accumulation over two backward calls
  local g1 = w.grad:clone()
  ml.matmul(x, w):relu():sum():backward()
  T.close(w.grad, g1 * 2, 1e-6, 1e-6, "gradients accumulate")
  w:zero_grad()
  T.check(w.grad == nil, "zero_grad clears")
end)

T.test("graph rules", function()
  local x = ml.randn(3):requires_grad()
  local y = (x * 2):sum()
  y:backward()
  T.raises(function() y:backward() end, "second time")
  local z = (x * x):sum()
  z:backward({retain_graph = true})
  z:backward()
  T.raises(function() ml.randn(3):sum():backward() end, "does not require grad")
  T.raises(function() (x * 1):backward() end, "single value")
  local e = x:exp()
  local s = e:sum()
  ml.no_grad(function() e:fill(1) end)
  T.raises(function() s:backward() end, "modified in place")
  T.raises(function() x:fill(0) end, "requires grad")
  local d = ml.no_grad(function() return x * 2 end)
  T.check(not d:needs_grad(), "no_grad results do not require grad")
  T.check(not x:detach():needs_grad(), "detach")
  T.raises(function() (x * 2):requires_grad(true) end, "leaf")
  T.raises(function() ml.tensor({1, 2}, "int64"):requires_grad() end, "float32")
end)

T.test("deep chain releases without stack overflow", function()
  local x = ml.randn(4):requires_grad()
  local y = x
  for _ = 1, 20000 do y = y * 1.0001 end
  y:sum():backward()
  T.near(x.grad[1], 1.0001 ^ 20000, 1e-3)
  y = nil
  collectgarbage()
end)

T.done()
