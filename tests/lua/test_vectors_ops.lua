-- Core ops against PyTorch's reference values (tests/vectors/ops.safetensors):
-- outputs and gradients of sum(out * r) for every input. Other op families
-- (conv, pooling, norms, losses, ...) have their own vector tests.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local V = ml.io.load_safetensors("tests/vectors/ops.safetensors")

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
  softmax = function(x) return x:softmax(-1) end,
  log_softmax = function(x) return x:log_softmax(-1) end,
  layer_norm = function(x, w, b) return ml.layer_norm(x, 1, w, b, {eps = 1e-6}) end,
  batch_norm_eval = function(x, w, b)
    return ml.batch_norm(x, V["batch_norm_eval.running_mean"], V["batch_norm_eval.running_var"], w, b,
      {training = false, eps = 1e-5})
  end,
  batch_norm_train = function(x, w, b)
    local rm, rv = V["batch_norm_train.running_mean_before"]:clone(), V["batch_norm_train.running_var_before"]:clone()
    local y = ml.batch_norm(x, rm, rv, w, b, {training = true, momentum = 0.1, eps = 1e-5})
    T.close(rm, V["batch_norm_train.running_mean_after"], 1e-5, 1e-6, "running mean after one step")
    T.close(rv, V["batch_norm_train.running_var_after"], 1e-5, 1e-6, "running var after one step (unbiased)")
    return y
  end,
  cross_entropy = function(x) return ml.cross_entropy(x, V["cross_entropy.labels"] + 1) end,
  trades_kl = function(clean, adv) return ml.kl_div(clean, adv) end,
  mse = function(a, b) return ml.mse(a, b) end,
  topk3 = function(x)
    local v, i = x:topk(3, -1)
    T.check(i:equal(V["topk3.indices"] + 1), "topk indices")
    return v
  end,
  index_select_dup = function(x) return x:index_select(2, ml.tensor({4, 1, 4}, "int64")) end,
  conv2d_bias_s1p1 = function(x, w, b) return ml.conv2d(x, w, b, {stride = 1, padding = 1}) end,
  conv2d_s2p1 = function(x, w) return ml.conv2d(x, w, nil, {stride = 2, padding = 1}) end,
  conv2d_groups2 = function(x, w) return ml.conv2d(x, w, nil, {groups = 2}) end,
  conv2d_1x1_s2 = function(x, w) return ml.conv2d(x, w, nil, {stride = 2}) end,
  conv2d_patch4 = function(x, w, b) return ml.conv2d(x, w, b, {stride = 4}) end,
  max_pool2d_k2s2 = function(x) return x:max_pool2d(2) end,
  max_pool2d_k3s2p1 = function(x) return x:max_pool2d(3, {stride = 2, padding = 1}) end,
  avg_pool2d_k2s2 = function(x) return x:avg_pool2d(2) end,
  global_avg_pool = function(x) return x:global_avg_pool() end,
  attention = function(q, k, v)
    return ml.matmul(ml.softmax(ml.matmul(q, k:transpose(3, 4)) / 4, -1), v)
  end,
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
