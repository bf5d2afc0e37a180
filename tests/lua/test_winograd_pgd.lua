-- PGD on a small trained ResNet gives the same robust accuracy with Winograd
-- convolutions (the default for 3x3 stride-1 layers where the CPU has AVX2)
-- and without (MOELAB_CONV=direct), up to float32 noise: the attack takes
-- the sign of the input gradient, so a component within rounding of zero may
-- flip and move a pixel by alpha, which changes the outcome only for a sample
-- that ends up on the decision boundary (docs/PERFORMANCE.md, Winograd).
--
--   moelab tests/lua/test_winograd_pgd.lua                   the test
--   moelab tests/lua/test_winograd_pgd.lua --child W OUT     PGD on weights W, results to OUT
local ml = require "moelab"

ml.threads(2)

local function build() return ml.nn.resnet18{base_width = 8} end
local TEST_N, EPS, ALPHA, STEPS = 200, 8 / 255, 2 / 255, 10 -- the W1 attack (bench/WORKLOADS.md)

if arg[1] == "--child" then
  local model = build()
  model:load_state_dict((ml.io.load_safetensors(arg[2])))
  model:eval()
  -- the first TEST_N of the images it was trained on: a model that small and
  -- that briefly trained classifies too few test images for the comparison
  local x, y = ml.data.cifar10("data/cifar10").train:batch(1, TEST_N)
  local clean = ml.no_grad(function() return model(x) end)
  -- PGD-10 from x itself (no random start: both children attack the same point)
  local xa = x:detach()
  for _ = 1, STEPS do
    local xr = xa:requires_grad()
    local g = ml.grad(ml.cross_entropy(model(xr), y), xr)
    xa = (xa:detach() + g:sign() * ALPHA):clamp(x - EPS, x + EPS):clamp(0, 1)
  end
  local adv = ml.no_grad(function() return model(xa) end)
  ml.io.save_safetensors(arg[3], {clean = clean, adv = adv, y = y:float(), xa = xa}, {case = "pgd"})
  os.exit(0)
end

local T = dofile("tests/lua/testing.lua")

local function child(env, weights)
  local path = os.tmpname()
  local ok = os.execute(("%s %s tests/lua/test_winograd_pgd.lua --child %s %s"):format(env, arg[-1] or "moelab",
    weights, path))
  local t = ok and ml.io.load_safetensors(path) or nil
  os.remove(path)
  return t
end

-- correct predictions (argmax of logits [n, 10] against labels 1..10 stored as floats)
local function correct(logits, y)
  return logits:argmax(2):float():eq(y):sum():item()
end

T.test("PGD-10 on a trained ResNet: the same robust accuracy with and without Winograd", function()
  ml.seed(11)
  local model = build()
  local train = ml.data.cifar10("data/cifar10").train:subset(1, 400)
  ml.train.fit(model, train, {epochs = 4, batch = 20, lr = 0.02, momentum = 0.9, seed = 5, quiet = true})
  local weights = os.tmpname()
  ml.io.save_safetensors(weights, (model:state_dict()), {case = "resnet18"})
  local w = child("OMP_NUM_THREADS=2", weights)
  local d = child("OMP_NUM_THREADS=2 MOELAB_CONV=direct", weights)
  os.remove(weights)
  T.check(w and d, "both children ran")
  if not (w and d) then return end
  local scale = d.clean:abs():max():item()
  local dclean = (w.clean - d.clean):abs():max():item() / scale
  local dadv = (w.adv - d.adv):abs():max():item() / scale
  local cw, cd = correct(w.clean, w.y), correct(d.clean, d.y)
  local rw, rd = correct(w.adv, w.y), correct(d.adv, d.y)
  local flipped = w.adv:argmax(2):ne(d.adv:argmax(2)):sum():item()
  local moved = (w.xa - d.xa):abs():gt(ALPHA / 2):float():mean():item()
  print(("     clean %d / %d (direct %d), robust %d / %d (direct %d); logits differ by %.2g (clean) and %.2g " ..
    "(attacked) of their scale; %d attacked prediction(s) differ, %.2g of the pixels moved apart")
    :format(cw, TEST_N, cd, rw, TEST_N, rd, dclean, dadv, flipped, moved))
  -- the model learnt something, and the attack does something
  T.check(cd > 0.25 * TEST_N and rd < cd and rd > 0, ("clean %d, robust %d of %d"):format(cd, rd, TEST_N))
  -- float32 noise on the clean logits (the bound of test_conv_winograd.c, compounded over the layers)
  T.check(dclean < 1e-3, ("clean logits differ by %.3g of their scale"):format(dclean))
  T.check(math.abs(cw - cd) <= 1, ("clean accuracy %d vs %d"):format(cw, cd))
  -- two samples in 200 may end on the other side of the boundary
  T.check(math.abs(rw - rd) <= 2, ("robust accuracy %d vs %d"):format(rw, rd))
end)

T.done()
