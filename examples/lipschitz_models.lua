-- lipschitz_models.lua -- empirical Lipschitz constants of a trained dense ViT and
-- a trained V-MoE (the W3 and W4 models of WORKLOADS.md) on the bundled MNIST
-- subset: input-gradient norms of the loss and of the logits, and local ratios
-- ||f(x + d) - f(x)|| / ||d|| found by gradient ascent in small l2 balls
-- (Puigcerver et al. 2022 compare the two families at equal compute per token).
--
--   ./build/moelab examples/lipschitz_models.lua [--quick] [--epochs N]
local ml = require "moelab"
local th = ml.theory

local quick, epochs = false, 3
for i, a in ipairs(arg or {}) do
  if a == "--quick" then quick = true end
  if a == "--epochs" then epochs = tonumber(arg[i + 1]) or epochs end
end
if quick then epochs = 1 end

ml.seed(0)
local data = ml.data.mnist("data/mnist-10k")
local train, test = data.train, data.test
if quick then train, test = train:subset(1, 256), test:subset(1, 64) end
local probe_n = quick and 16 or 256
local x_probe, y_probe = test:batch(1, probe_n)

local models = {
  {name = "vit (dense)", build = function() return ml.nn.vit{classes = 10} end},
  {name = "vmoe (E = 8, K = 2)", build = function() return ml.nn.vmoe{classes = 10} end},
}

local rows = {}
for _, m in ipairs(models) do
  ml.seed(1)
  local model = m.build()
  print(("== %s: %s parameters"):format(m.name, model:summary({1, 28, 28}, {quiet = true}).params))
  local hist = ml.train.fit(model, train, {epochs = epochs, batch = 128, optimizer = "adamw", lr = 1e-3,
    weight_decay = 1e-4, schedule = "cosine", warmup = quick and 0 or 20, eval = test, seed = 2})
  model:eval()
  local logits = function(x) return model(x) end
  local gl = th.grad_norm_stats(logits, x_probe, {reduce = "loss", labels = y_probe})
  local gf = th.grad_norm_stats(logits, x_probe)
  local lr = th.local_lipschitz(logits, x_probe, {eps = 0.5, steps = quick and 3 or 10, seed = 3})
  rows[#rows + 1] = {name = m.name, acc = hist[#hist].test_acc, gl = gl, gf = gf, lr = lr}
end

print(("\nInput-gradient norms and local ratios on %d test images (l2; pixels in [0, 1])"):format(probe_n))
print(("%-20s %8s %12s %12s %12s %12s %12s"):format("model", "test acc", "|grad loss|", "p90", "|grad sum f|",
  "ratio mean", "ratio max"))
for _, r in ipairs(rows) do
  print(("%-20s %7.2f%% %12.4f %12.4f %12.4f %12.4f %12.4f"):format(r.name, 100 * r.acc, r.gl.mean, r.gl.p90,
    r.gf.mean, r.lr.mean, r.lr.max))
end
local d, m = rows[1], rows[2]
local g, l = m.gl.mean / d.gl.mean, m.lr.mean / d.lr.mean
print(("\nMoE / dense: loss-gradient norm %.2f, local ratio %.2f (%s)"):format(g, l,
  l < 1 and "the MoE is smoother around these images" or "the MoE is not smoother around these images"))
