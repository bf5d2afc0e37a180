-- Core ops against PyTorch's reference values (../shared/vectors/ops.safetensors):
-- outputs and gradients of sum(out * r) for every input. Other op families
-- (conv, pooling, norms, losses, ...) have their own vector tests.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local V = ml.io.load_safetensors("../shared/vectors/ops.safetensors")

local cases = {
  matmul = function(a, b) return ml.matmul(a, b) end,
  bmm = function(a, b) return ml.bmm(a, b) end,
  gelu = function(x) return x:gelu() end,
  relu = function(x) return x:relu() end,
  sigmoid = function(x) return x:sigmoid() end,
  tanh = function(x) return x:tanh() end,
  softplus = function(x) return x:softplus() end,
  exp = function(x) return x:exp() end,
  abs = function(x) return x:abs() end,
  pow3 = function(x) return x ^ 3 end,
  log_pos = function(x) return (x:abs() + 0.1):log() end,
  sqrt_pos = function(x) return (x:abs() + 0.1):sqrt() end,
  norm1 = function(x) return x:norm(1) end,
  norm2 = function(x) return x:norm(2) end,
  var_dim = function(x) return x:var(2) end,          -- dim 1 (0-based) in the file
  logsumexp = function(x) return x:logsumexp(-1) end,
}

for name, fn in pairs(cases) do
  T.test(name, function()
    local inputs = {}
    local i = 0
    while V[("%s.in.%d"):format(name, i)] do
      inputs[#inputs + 1] = V[("%s.in.%d"):format(name, i)]:clone():requires_grad()
      i = i + 1
    end
    T.check(#inputs > 0, name .. ": no inputs in the vector file")
    local out = fn(table.unpack(inputs))
    T.close(out, V[name .. ".out"], 1e-5, 1e-6, name .. " output")
    local grads = ml.grad((out * V[name .. ".r"]):sum(), inputs)
    for k = 1, #inputs do
      T.close(grads[k], V[("%s.grad.%d"):format(name, k - 1)], 1e-4, 1e-5, name .. " gradient " .. k)
    end
  end)
end

T.done()
