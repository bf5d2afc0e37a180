-- Training: schedules, the fit loop (history, callbacks, checkpoints, parameter
-- groups, Ctrl-C), and learning on real data: the small CNN reaches >= 95% on
-- the bundled MNIST test split and a small V-MoE beats chance by far.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("schedules", function()
  local cos = ml.train.schedule{kind = "cosine", warmup = 10, total = 110}
  T.near(cos(5), 0.5, 1e-12, "linear warm-up")
  T.near(cos(10), 1, 1e-12, "peak after warm-up")
  T.near(cos(60), 0.5, 1e-12, "cosine half-way")
  T.near(cos(110), 0, 1e-12, "cosine end")
  local lin = ml.train.schedule{kind = "linear", total = 100, min = 0.1}
  T.near(lin(50), 0.55, 1e-12, "linear decay to min")
  local step = ml.train.schedule{kind = "step", step_size = 30, gamma = 0.1}
  T.near(step(29), 1, 1e-12)
  T.near(step(30), 0.1, 1e-12, "step decay")
  local ms = ml.train.schedule{kind = "multistep", milestones = {10, 20}, gamma = 0.5}
  T.near(ms(25), 0.25, 1e-12, "two milestones passed")
end)

local clusters = ml.data.gaussian_clusters{n = 600, classes = 3, dim = 4, spread = 0.1, seed = 5}

T.test("fit: history, callbacks, checkpoint, evaluate", function()
  ml.seed(1)
  local model = ml.nn.Sequential(ml.nn.Linear(4, 16), ml.nn.ReLU(), ml.nn.Linear(16, 3))
  local steps = 0
  local path = os.tmpname()
  local h = ml.train.fit(model, clusters, {epochs = 3, batch = 50, lr = 0.1, eval = clusters, quiet = true,
    checkpoint = path, callbacks = {on_step = function(info) steps = steps + 1 end}})
  T.check(#h == 3 and steps == 36, "3 epochs of 12 batches")
  T.check(h[3].loss < h[1].loss, "loss decreases")
  T.check(h[3].test_acc > 0.95, ("separable clusters learned: %.3f"):format(h[3].test_acc))
  local acc = ml.train.evaluate(model, clusters)
  T.near(acc, h[3].test_acc, 1e-9, "evaluate agrees with the history")
  local m2, info = ml.load(path)
  T.check(info.epoch == 3, "checkpoint written each epoch")
  T.near(ml.train.evaluate(m2, clusters), acc, 1e-9, "checkpoint reproduces the model")
  os.remove(path)
  T.raises(function() ml.train.fit(model, clusters, {epoch = 1}) end, "fit: unknown option \"epoch\"")
  T.raises(function() ml.train.fit(model, clusters, {optimizer = "lbfgs"}) end, "unknown optimizer \"lbfgs\"")
end)

T.test("Ctrl-C stops training cleanly", function()
  local model = ml.nn.Sequential(ml.nn.Linear(4, 8), ml.nn.ReLU(), ml.nn.Linear(8, 3))
  local h = ml.train.fit(model, clusters, {epochs = 5, batch = 50, quiet = true,
    callbacks = {on_step = function(info) if info.step == 7 then error("interrupted") end end}})
  T.check(h.interrupted and #h == 1, "stopped in the first epoch")
  T.check(model:is_training(), "model left in training mode, usable")
  T.check(model(ml.randn(2, 4)):size(2) == 3, "model still runs")
end)

T.test("parameter groups: training only the routers", function()
  ml.seed(2)
  local model = ml.nn.moe_cnn{backbone = "cnn", experts = 2, ratio = 0.5}
  local before = {}
  for k, v in pairs(model:state_dict()) do before[k] = v:clone() end
  local small = ml.data.mnist("data/mnist-10k").train:subset(1, 128)
  ml.train.fit(model, small, {epochs = 1, batch = 64, lr = 0.1, params = model:parameters("router"), quiet = true})
  local router_moved, backbone_moved = false, false
  for k, v in pairs(model:parameters()) do
    local moved = not v:equal(before[k])
    if k:find("router") then router_moved = router_moved or moved else backbone_moved = backbone_moved or moved end
  end
  T.check(router_moved, "router weights trained")
  T.check(not backbone_moved, "backbone weights untouched")
end)

T.test("learning on MNIST: small CNN >= 95%, small V-MoE far above chance", function()
  local quick = os.getenv("MOELAB_QUICK")
  ml.seed(0)
  local d = ml.data.mnist("data/mnist-10k")
  local cnn = ml.nn.cnn{}
  local h = ml.train.fit(cnn, d.train, {epochs = 2, batch = 64, lr = 0.05, momentum = 0.9, eval = d.test, seed = 1, quiet = true})
  T.check(h[2].test_acc >= 0.95, ("cnn test accuracy %.3f >= 0.95"):format(h[2].test_acc))
  ml.seed(0)
  local vmoe = ml.nn.vmoe{dim = 32, depth = 2, heads = 2, mlp = 64, experts = 4, patch = 7}
  h = ml.train.fit(vmoe, d.train, {epochs = 2, batch = 64, optimizer = "adam", lr = 3e-3, eval = d.test, seed = 1,
    quiet = true})
  T.check(h[2].test_acc >= 0.5, ("vmoe test accuracy %.3f >= 0.5 (chance: 0.1)"):format(h[2].test_acc))
  local _, tr = vmoe:forward(d.test:batch(1, 64), {trace = true})
  local load = tr[ml.nn.trace_layers(tr)[1]].load
  T.check(load:gt(0):sum():item() >= 3, "a trained router uses several experts")
  print(("  cnn %.1f%%, vmoe %.1f%%"):format(100 * ml.train.evaluate(cnn, d.test), 100 * h[2].test_acc))
end)

T.done()
