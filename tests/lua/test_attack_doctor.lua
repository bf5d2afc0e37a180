-- The attack doctor: each flag on a model built to raise it, none on a plain
-- trained CNN.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function flags(d)
  local set = {}
  for _, f in ipairs(d.flags) do
    set[f.name] = true
    T.check(#f.message > 0 and #f.remedy > 0, f.name .. " has a message and a remedy")
  end
  return set
end

local function linear_model(D, C, seed)
  ml.seed(seed or 1)
  return ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(D, C)):eval()
end

-- inputs near 0.5 and labels = the model's own predictions (clean accuracy 100%)
local function batch(m, n, D)
  local x = ml.rand(n, D) * 0.02 + 0.49
  return x, ml.no_grad(function() return m(x):argmax(2) end)
end

local quick = {steps = 10, queries = 200, seed = 2}
local function opts(eps)
  local o = {eps = eps}
  for k, v in pairs(quick) do o[k] = v end
  return o
end

T.test("a plain trained CNN: no flag", function()
  ml.seed(0)
  local data = ml.data.mnist("data/mnist-10k")
  local m = ml.nn.cnn{width = 0.5}
  ml.train.fit(m, data.train:subset(1, 2000), {epochs = 1, batch = 64, lr = 0.05, quiet = true, seed = 1})
  m:eval()
  local x, y = data.test:batch(1, 20)
  local d = ml.attack.check(m, x, y, {eps = 0.1, steps = 20, queries = 100})
  T.check(d.ok, "flags on a plain CNN:\n" .. tostring(d))
  T.near(d.eps_zero_accuracy, d.clean_accuracy, 1e-12, "eps = 0")
  T.check(d.eps_one_accuracy == 0, "eps = 1")
  T.check(#d.eps_curve == 5, "robust accuracy at 0, eps/4, eps/2, eps, 2 eps")
  T.check(tostring(d) == "attack doctor: no problem found", "prints its verdict")
  -- the cheap checks alone
  local c = ml.attack.check(m, x, y, {cheap = true})
  T.check(c.ok and c.eps_one_accuracy == nil, "cheap checks run no attack")
end)

T.test("a noisy model: randomness, eps = 0", function()
  local base = linear_model(10, 3)
  local noisy = ml.nn.Sequential(base, ml.nn.Lambda(function(z) return z + ml.randn(z:shape()) * 2 end, "noise")):eval()
  local x, y = batch(base, 40, 10)
  local d = ml.attack.check(noisy, x, y, opts(0.05))
  local f = flags(d)
  T.check(f.randomness, "randomness")
  T.check(f.eps_zero, "eps = 0 does not give the clean accuracy")
  T.check(d.output_spread > 1e-4, "spread measured")
end)

T.test("a softmax output: probabilities", function()
  local base = linear_model(10, 3)
  local probs = ml.nn.Sequential(base, ml.nn.Lambda(function(z) return z:softmax(2) end, "softmax")):eval()
  local x, y = batch(base, 20, 10)
  local f = flags(ml.attack.check(probs, x, y, {cheap = true}))
  T.check(f.probabilities, "probabilities")
end)

T.test("a flat region: zero gradients, eps = 1 not 0%, Square beats the gradient", function()
  -- the input is quantised (zero gradient almost everywhere) before a linear classifier
  local base = linear_model(16, 3, 4)
  local flat = ml.nn.Sequential(ml.nn.Lambda(function(x) return (x * 4):floor() / 4 end, "quantise"), base):eval()
  ml.seed(5)
  local x = ml.rand(40, 16) * 0.5 + 0.25
  local y = ml.no_grad(function() return flat(x):argmax(2) end)
  local d = ml.attack.check(flat, x, y, {eps = 0.3, steps = 10, queries = 400, seed = 1})
  local f = flags(d)
  T.check(f.zero_gradients and d.zero_gradients == 40, "every gradient is zero")
  T.check(f.eps_one, "eps = 1 leaves examples robust")
  T.check(f.gradient_masking, ("Square %.2f vs APGD %.2f"):format(d.square_accuracy or -1, d.white_box_accuracy or -1))
end)

T.test("a detector that hides far perturbations: robust accuracy grows with eps", function()
  -- inside the box |x - 0.5| < 0.08 a linear classifier whose bias picks class k at x = 0.5; outside it
  -- constant logits for class k (no gradient): small balls break the classifier, larger ones only reach
  -- the constant
  ml.seed(6)
  local lin = ml.nn.Linear(20, 3)
  local k = lin:parameters().bias:argmax():item()
  local outside = ml.one_hot(ml.tensor({k}, "int64"), 3) * 10
  local detector = ml.nn.Lambda(function(x)
    local z = lin((x - 0.5) * 20)
    local inside = (x - 0.5):abs():max(2, true):lt(0.08)
    return ml.where(inside, z, outside)
  end, "detector"):eval()
  local x = ml.rand(30, 20) * 0.002 + 0.499
  local y = ml.no_grad(function() return detector(x):argmax(2) end)
  local d = ml.attack.check(detector, x, y, opts(0.05))
  local f = flags(d)
  T.check(f.not_monotone, "robust accuracy grows with eps:\n" .. tostring(d))
end)

T.test("a model left in training mode", function()
  local m = linear_model(10, 3)
  local x, y = batch(m, 10, 10)
  m:train()
  local f = flags(ml.attack.check(m, x, y, {cheap = true}))
  T.check(f.training_mode, "training mode")
  T.check(m:is_training(), "the mode is left as it was")
end)

T.done()
