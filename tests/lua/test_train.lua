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

T.test("Ctrl-C stops training cleanly and returns the history", function()
  local model = ml.nn.Sequential(ml.nn.Linear(4, 8), ml.nn.ReLU(), ml.nn.Linear(8, 3))
  local h = ml.train.fit(model, clusters, {epochs = 5, batch = 50, quiet = true,
    callbacks = {on_step = function(info) if info.step == 7 then ml.interrupt() end end}})
  T.check(h.interrupted and h.stopped == "interrupted" and #h == 1, "stopped in the first epoch")
  T.check(h[1].batches == 7, ("7 batches done, got %d"):format(h[1].batches))
  T.check(model:is_training(), "model left in training mode, usable")
  T.check(model(ml.randn(2, 4)):size(2) == 3, "model still runs")
  T.check(not ml.interrupted(), "the interrupt was consumed: later calls work")
  T.check(ml.randn(100):sum():dim() == 0, "a kernel after the interrupt runs")
end)

T.test("Ctrl-C during evaluation: fit and evaluate return what was done", function()
  -- a layer that presses Ctrl-C when it runs in eval mode on the second batch
  local calls = 0
  local probe = ml.nn.Lambda(function(x, training)
    if not training then
      calls = calls + 1
      if calls == 2 then ml.interrupt() end
    end
    return x
  end)
  local model = ml.nn.Sequential(ml.nn.Linear(4, 3), probe)
  local h = ml.train.fit(model, clusters, {epochs = 3, batch = 50, quiet = true, eval = clusters,
                                           eval_batches = 5})
  T.check(h.interrupted and #h == 1, "stopped during the first evaluation")
  T.check(h[1].batches == 12 and h[1].test_acc == nil, "the epoch is kept, the partial evaluation is not")
  T.check(not ml.interrupted(), "consumed")
  calls = 0
  local acc, loss, info = ml.train.evaluate(model, clusters, {batch = 100, quiet = true})
  T.check(info.interrupted and info.batches == 1 and info.examples == 100,
    ("evaluate stops after the batch under way: %d batches"):format(info.batches))
  T.check(acc >= 0 and acc <= 1 and loss == loss, "figures of the batches done")
  T.check(model:is_training(), "evaluate restores the training mode")
  calls = 10
  local acc2, _, info2 = ml.train.evaluate(model, clusters, {quiet = true})
  T.check(not info2.interrupted and info2.examples == 600 and acc2 >= 0, "a full pass")
end)

T.test("NaN watch: a non-finite loss stops before the update", function()
  ml.seed(3)
  local model = ml.nn.Sequential(ml.nn.Linear(4, 8), ml.nn.ReLU(), ml.nn.Linear(8, 3))
  local calls, snapshot = 0, nil
  local function loss(logits, y)
    calls = calls + 1
    local l = ml.cross_entropy(logits, y)
    if calls == 3 then return l * (0 / 0) end
    return l
  end
  local h = ml.train.fit(model, clusters, {epochs = 2, batch = 50, quiet = true, loss = loss,
    callbacks = {on_step = function(info)
      if info.step == 2 then
        snapshot = {}
        for k, v in pairs(model:parameters()) do snapshot[k] = v:clone() end
      end
    end}})
  T.check(h.stopped == "nan" and not h.interrupted and #h == 1, "stopped in epoch 1")
  T.check(h.nan and h.nan.epoch == 1 and h.nan.step == 3 and h.nan.batch == 3 and h.nan.loss ~= h.nan.loss,
    "history.nan names epoch, step and batch")
  for k, v in pairs(model:parameters()) do
    T.check(v:equal(snapshot[k]), k .. ": the weights are those after step 2")
  end
  -- skip: the bad batch is left out and training goes on
  calls = 0
  h = ml.train.fit(model, clusters, {epochs = 2, batch = 50, quiet = true, loss = loss, nan = "skip"})
  T.check(#h == 2 and h.stopped == nil and h[1].skipped == 1 and h[2].skipped == nil, "one batch skipped")
  local all_finite = true
  for _, v in pairs(model:parameters()) do all_finite = all_finite and v:ne(v):sum():item() == 0 end
  T.check(all_finite, "weights stay finite")
  -- continue: the old behaviour, NaN weights
  calls = 0
  h = ml.train.fit(model, clusters, {epochs = 1, batch = 50, quiet = true, loss = loss, nan = "continue"})
  local any_nan = false
  for _, v in pairs(model:parameters()) do any_nan = any_nan or v:ne(v):sum():item() > 0 end
  T.check(#h == 1 and any_nan, "nan = continue applies the NaN update")
  T.raises(function() ml.train.fit(model, clusters, {nan = "ignore"}) end, 'fit: nan must be "stop", "skip" or "continue"')
end)

T.test("fit and evaluate say what they expect", function()
  local model = ml.nn.Sequential(ml.nn.Linear(4, 3))
  local x, y = ml.randn(8, 4), ml.randint(1, 3, {8})
  T.raises(function() ml.train.fit(model, x, y) end,
    "fit: the second argument must be a dataset, got a tensor; make one from tensors with ml.data.from_tensors(x, y)")
  T.raises(function() ml.train.fit(x, clusters) end, "fit: the first argument must be a model (a Module")
  T.raises(function() ml.train.fit(model, clusters, {quiet = true}, 5) end, "fit: takes (model, dataset, options)")
  T.raises(function() ml.train.fit(model, clusters, "fast") end, "fit: options must be a table, got a string")
  T.raises(function() ml.train.fit(model, clusters, {eval = x}) end, "fit: the eval option must be a dataset, got a tensor")
  T.raises(function() ml.train.evaluate(model, clusters, {batchs = 10}) end,
    'evaluate: unknown option "batchs" (known: batch, batches, quiet)')
  T.raises(function() ml.train.evaluate(model, {}) end, "evaluate: the second argument must be a dataset")
  local h = ml.train.fit(model, ml.data.from_tensors(x, y, 3), {epochs = 1, batch = 4, quiet = true})
  T.check(#h == 1 and h[1].batches == 2, "tensors through ml.data.from_tensors")
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
