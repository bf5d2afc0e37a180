-- quickstart.lua -- a first experiment on the bundled MNIST subset:
--   1. train a small MLP with autograd and SGD, attack it with FGSM written in a
--      few lines of Lua on input gradients;
--   2. train a dense CNN and its channel-MoE version (MoE-CNN: each routed layer
--      picks one of two experts, i.e. half of its output channels, per image),
--      attack both, and read the routing traces: which experts each image uses
--      before and after the attack.
--
--   ./build/moelab examples/quickstart.lua            (about half a minute on 2 cores)
--   ./build/moelab examples/quickstart.lua --quick    (a few seconds, for tests)
local ml = require "moelab"

local quick = false
for _, a in ipairs(arg or {}) do if a == "--quick" then quick = true end end

ml.seed(0)
local data = ml.data.mnist("data/mnist-10k")
local train, test = data.train, data.test
if quick then test = test:subset(1, 1000) end
print(("MNIST subset: %d training and %d test images of %s"):format(
  train:size(), test:size(), table.concat(train:shape(), "x")))

------------------------------------------------------------------ 1. an MLP and FGSM
-- The model normalises its input itself, so attacks work in [0, 1] pixel space.
local mlp = ml.nn.Sequential(
  ml.nn.Normalize({0.1307}, {0.3081}),
  ml.nn.Flatten(),
  ml.nn.Linear(784, 256), ml.nn.ReLU(),
  ml.nn.Linear(256, 128), ml.nn.ReLU(),
  ml.nn.Linear(128, 10))
print(mlp)

local history = ml.train.fit(mlp, train, {
  epochs = quick and 1 or 4, batch = 64, optimizer = "sgd", lr = 0.05, momentum = 0.9,
  schedule = "cosine", eval = test, seed = 1,
})
print(("clean test accuracy: %.2f%%"):format(100 * history[#history].test_acc))

-- FGSM: one step of size eps along the sign of the input gradient of the loss.
local function fgsm(model, x, y, eps)
  local xa = x:clone():requires_grad()
  local loss = ml.cross_entropy(model(xa), y)
  local g = ml.grad(loss, xa)
  return (x + g:sign() * eps):clamp(0, 1)
end

local function accuracy_under_fgsm(model, eps)
  model:eval()
  local correct, total = 0, 0
  for x, y in test:batches(250) do
    local xa = eps > 0 and fgsm(model, x, y, eps) or x
    local pred = ml.no_grad(function() return model(xa):argmax(2) end)
    correct = correct + pred:eq(y):sum():item()
    total = total + y:size(1)
  end
  return correct / total
end

local epsilons = {0, 0.02, 0.05, 0.1, 0.2}
print("\nFGSM (l_inf) on the test set:")
print(("%8s  %8s"):format("eps", "accuracy"))
for _, eps in ipairs(epsilons) do print(("%8.3f  %7.2f%%"):format(eps, 100 * accuracy_under_fgsm(mlp, eps))) end

------------------------------------------------------------------ 2. dense CNN vs MoE-CNN
-- The MoE-CNN's router gets a Switch balancing loss: without one, a per-layer router
-- soon sends every image to the same expert (try switch_weight = 0).
print("\nA dense CNN and its MoE-CNN (the second convolution has 2 experts of 32 channels each):")
local cnns = {
  {name = "dense CNN", model = ml.nn.cnn{}},
  {name = "MoE-CNN", model = ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, experts = 2, ratio = 0.5,
                                           switch_weight = 1}},
}
local cnn_train = quick and train:subset(1, 2000) or train
for _, c in ipairs(cnns) do
  ml.seed(2)
  local h = ml.train.fit(c.model, cnn_train, {epochs = quick and 1 or 2, batch = 64, optimizer = "sgd", lr = 0.05,
    momentum = 0.9, schedule = "cosine", seed = 3, quiet = quick})
  local s = c.model:summary(nil, {quiet = true})
  print(("%-10s %s parameters, %s active per image, %.2f MFLOPs per image, train acc %.1f%%"):format(c.name,
    s.params, s.active, s.flops / 1e6, 100 * h[#h].acc))
end
print(("\n%8s  %10s  %10s"):format("eps", "dense CNN", "MoE-CNN"))
for _, eps in ipairs(epsilons) do
  print(("%8.3f  %9.2f%%  %9.2f%%"):format(eps, 100 * accuracy_under_fgsm(cnns[1].model, eps),
    100 * accuracy_under_fgsm(cnns[2].model, eps)))
end

-- Routing before and after the attack: the trace of a forward pass says which expert
-- each image was sent to, layer by layer (1-based expert ids).
local moe = cnns[2].model
local x, y = test:batch(1, 500)
local xa = fgsm(moe, x, y, 0.1)
local _, clean = ml.no_grad(function() return moe:forward(x, {trace = true}) end)
local _, adv = ml.no_grad(function() return moe:forward(xa, {trace = true}) end)
print("\nRouting of 500 test images, clean and under FGSM (eps = 0.1):")
print(clean)
for _, layer in ipairs(ml.nn.trace_layers(clean)) do
  local before, after = clean[layer].experts:reshape(-1), adv[layer].experts:reshape(-1)
  local changed = before:ne(after):sum():item()
  local function load(t) return table.concat(t[layer].load:long():totable(), "/") end
  print(("%s: %d of 500 images (%.1f%%) switch expert under attack; images per expert %s -> %s"):format(layer,
    changed, changed / 5, load(clean), load(adv)))
end
