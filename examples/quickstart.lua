-- quickstart.lua -- train a small network on the bundled MNIST subset, then
-- attack it with FGSM written in a few lines of Lua, using input gradients.
--
--   ./build/moelab examples/quickstart.lua            (about a minute on 2 cores)
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

-- A small MLP that normalises its input itself, so attacks work in [0, 1] pixel space.
local model = ml.nn.Sequential(
  ml.nn.Normalize({0.1307}, {0.3081}),
  ml.nn.Flatten(),
  ml.nn.Linear(784, 256), ml.nn.ReLU(),
  ml.nn.Linear(256, 128), ml.nn.ReLU(),
  ml.nn.Linear(128, 10))
print(model)

local history = ml.train.fit(model, train, {
  epochs = quick and 1 or 4, batch = 64, optimizer = "sgd", lr = 0.05, momentum = 0.9,
  schedule = "cosine", eval = test, seed = 1,
})
local clean = history[#history].test_acc
print(("clean test accuracy: %.2f%%"):format(100 * clean))

-- FGSM: one step of size eps along the sign of the input gradient of the loss.
local function fgsm(x, y, eps)
  local xa = x:clone():requires_grad()
  local loss = ml.cross_entropy(model(xa), y)
  local g = ml.grad(loss, xa)
  return (x + g:sign() * eps):clamp(0, 1)
end

model:eval()
print("\nFGSM (l_inf) on the test set:")
print(("%8s  %8s"):format("eps", "accuracy"))
for _, eps in ipairs{0, 0.02, 0.05, 0.1, 0.2} do
  local correct, total = 0, 0
  for x, y in test:batches(250) do
    local xa = eps > 0 and fgsm(x, y, eps) or x
    local pred = ml.no_grad(function() return model(xa):argmax(2) end)
    correct = correct + pred:eq(y):sum():item()
    total = total + y:size(1)
  end
  print(("%8.3f  %7.2f%%"):format(eps, 100 * correct / total))
end
