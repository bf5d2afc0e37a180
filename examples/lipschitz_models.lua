-- lipschitz_models.lua -- empirical Lipschitz constants of trained dense and MoE
-- models on the bundled MNIST subset (a CNN and its MoE-CNN; the ViT and V-MoE of
-- WORKLOADS.md, W3 and W4): input-gradient norms of the loss and of the logits, and local ratios
-- ||f(x + d) - f(x)|| / ||d|| found by gradient ascent in small l2 balls
-- (equal compute per input in each pair; Puigcerver et al. 2022, Zhang et al. 2023).
--
--   ./build/moelab examples/lipschitz_models.lua [--quick] [--epochs N]
local ml = require "moelab"
local th = ml.theory

local quick, epochs = false, 2
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

-- two pairs at equal compute per input: the MNIST CNN with its second convolution
-- dense or a channel MoE (AdvMoE's MoE-CNN, 2 experts of half the channels), and
-- the ViT with its MLPs dense or V-MoE layers (8 experts, top-2)
local sgd = {batch = 64, optimizer = "sgd", lr = 0.05, momentum = 0.9, epochs = 2}
local adam = {batch = 32, optimizer = "adamw", lr = 2e-3, weight_decay = 1e-4, warmup = 50, epochs = epochs}
local models = {
  {name = "cnn (dense)", train = sgd, build = function() return ml.nn.cnn{} end},
  {name = "cnn (moe_cnn, N = 2)", train = sgd,
   build = function() return ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, experts = 2, ratio = 0.5} end},
  {name = "vit (dense)", train = adam, build = function() return ml.nn.vit{classes = 10} end},
  {name = "vmoe (E = 8, K = 2)", train = adam, build = function() return ml.nn.vmoe{classes = 10} end},
}

local rows = {}
for _, m in ipairs(models) do
  ml.seed(1)
  local model = m.build()
  local summary = model:summary({1, 28, 28}, {quiet = true})
  print(("== %s: %s parameters (%s active per input)"):format(m.name, summary.params, summary.active))
  local o = {schedule = "cosine", eval = test, seed = 2}
  for k, v in pairs(m.train) do o[k] = v end
  if quick then o.epochs, o.warmup = 1, nil end
  local hist = ml.train.fit(model, train, o)
  model:eval()
  local logits = function(x) return model(x) end
  local gl = th.grad_norm_stats(logits, x_probe, {reduce = "loss", labels = y_probe})
  local gf = th.grad_norm_stats(logits, x_probe)
  local lr = th.local_lipschitz(logits, x_probe, {eps = 0.5, steps = quick and 3 or 10, seed = 3})
  rows[#rows + 1] = {name = m.name, acc = hist[#hist].test_acc, gl = gl, gf = gf, lr = lr, params = summary.params,
                     active = summary.active}
end

print(("\nInput-gradient norms and local ratios on %d test images (l2; pixels in [0, 1])"):format(probe_n))
print(("%-20s %8s %12s %12s %12s %12s %12s"):format("model", "test acc", "|grad loss|", "p90", "|grad sum f|",
  "ratio mean", "ratio max"))
for _, r in ipairs(rows) do
  print(("%-20s %7.2f%% %12.4f %12.4f %12.4f %12.4f %12.4f"):format(r.name, 100 * r.acc, r.gl.mean, r.gl.p90,
    r.gf.mean, r.lr.mean, r.lr.max))
end
-- Bubeck and Sellke: fitting n noisy points in dimension d with P parameters needs a
-- Lipschitz constant of order sqrt(n d / P); an MoE has more parameters for its compute.
print(("\nBubeck-Sellke scale sqrt(n d / P) (n = %d training images, d = 784, noise 1; constants dropped):"):format(
  train:size()))
for _, r in ipairs(rows) do
  print(("%-20s %8d parameters: %8.3f     %8d active: %8.3f"):format(r.name, r.params,
    th.bubeck_sellke{n = train:size(), dim = 784, params = r.params}, r.active,
    th.bubeck_sellke{n = train:size(), dim = 784, params = r.active}))
end
print()
for p = 1, #rows, 2 do
  local d, m = rows[p], rows[p + 1]
  local g, l = m.gl.mean / d.gl.mean, m.lr.mean / d.lr.mean
  print(("MoE / dense, %-4s loss-gradient norm %.2f, local ratio %.2f (%s)"):format(d.name:match("^%a+") .. ":", g, l,
    l < 1 and "the MoE is smoother around these images" or "the MoE is not smoother around these images"))
end
