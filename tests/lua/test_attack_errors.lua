-- ml.attack: every bad option is a clear error naming the attack and the option.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

ml.seed(1)
local m = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(12, 10)):eval()
local x = ml.rand(4, 12)
local y = ml.tensor({1, 2, 3, 10}, "int64")
local pgd = function(o, xx, yy, mm) return function() ml.attack.pgd(mm or m, xx or x, yy or y, o) end end

T.test("eps", function()
  T.raises(pgd({}), "pgd: eps is required (a number >= 0, e.g. 8/255 on CIFAR, 0.3 on MNIST)")
  T.raises(pgd({eps = -0.1}), "pgd: eps must be a finite number >= 0, got -0.1")
  T.raises(pgd({eps = "big"}), "pgd: eps must be a number, got string")
  T.raises(pgd({eps = 0 / 0}), "pgd: eps must be a finite number >= 0, got")
  T.raises(pgd({eps = math.huge}), "pgd: eps must be a finite number >= 0, got inf")
end)

T.test("norm, steps, alpha and the other numbers", function()
  T.raises(pgd({eps = 0.1, norm = "l1"}), [[pgd: unknown norm 'l1' (use "linf" or "l2")]])
  T.raises(pgd({eps = 0.1, steps = 0}), "pgd: steps must be a positive integer, got 0")
  T.raises(pgd({eps = 0.1, steps = 2.5}), "pgd: steps must be a positive integer, got 2.5")
  T.raises(pgd({eps = 0.1, alpha = -1}), "pgd: alpha must be a finite number > 0, got -1")
  T.raises(pgd({eps = 0.1, restarts = 0}), "pgd: restarts must be an integer >= 1, got 0")
  T.raises(pgd({eps = 0.1, eot = 0}), "pgd: eot must be an integer >= 1, got 0")
  T.raises(pgd({eps = 0.1, random_start = 1}), "pgd: random_start must be true or false, got number")
  T.raises(pgd({eps = 0.1, seed = 1.5}), "pgd: seed must be an integer, got 1.5")
  T.raises(function() ml.attack.apgd(m, x, y, {eps = 0.1, rho = 1.5}) end, "apgd: rho must be in (0, 1), got 1.5")
  T.raises(function() ml.attack.square(m, x:reshape(4, 1, 3, 4), y, {eps = 0.1, p_init = 0}) end,
    "square: p_init must be in (0, 1], got 0")
  T.raises(function() ml.attack.square(m, x, y, {eps = 0.1, norm = "l2"}) end,
    [[square: only norm = "linf" is implemented for Square]])
end)

T.test("unknown options and options of another attack", function()
  T.raises(pgd({eps = 0.1, stpes = 3}), "pgd: unknown option 'stpes' (known: eps, norm, seed, clamp, on_step, trace, log, nan, steps")
  T.raises(function() ml.attack.square(m, x, y, {eps = 0.1, steps = 3}) end, "square: unknown option 'steps'")
  T.raises(function() ml.attack.fgsm(m, x, y, {eps = 0.1, restarts = 2}) end, "fgsm: unknown option 'restarts'")
  T.raises(function() ml.attack.pgd(m, x, y, 3) end, "pgd: options must be a table, got number")
  T.raises(function() ml.attack.run("pgdd", m, x, y, {eps = 0.1}) end, "attack: unknown attack 'pgdd'")
end)

T.test("labels", function()
  T.raises(pgd({eps = 0.1}, nil, ml.tensor({1, 2, 3, 11}, "int64")),
    "pgd: the label of example 4 is 11, outside 1..10 (the model has 10 classes)")
  T.raises(pgd({eps = 0.1}, nil, ml.tensor({0, 2, 3, 4}, "int64")),
    "pgd: the label of example 1 is 0, outside 1..10 (the model has 10 classes)")
  T.raises(pgd({eps = 0.1}, nil, ml.tensor({1, 2, 3, 4})),
    "pgd: y must be an int64 tensor [B] of class indices 1..classes (use :long()), got a float32 tensor [4]")
  T.raises(pgd({eps = 0.1}, nil, ml.tensor({1, 2, 3}, "int64")), "pgd: x has 4 examples but the labels have shape [3]")
  T.raises(pgd({eps = 0.1}, nil, {1, 2, 3, 4}), "pgd: y must be a tensor, got table")
  T.raises(pgd({eps = 0.1, target = ml.tensor({1, 2, 3, 12}, "int64")}),
    "pgd: the target of example 4 is 12, outside 1..10")
  T.raises(function() ml.attack.apgd_t(m, x, y, {eps = 0.1, target = y}) end, "apgd-t: unknown option 'target'")
end)

T.test("inputs and models", function()
  T.raises(pgd({eps = 0.1}, x * 2 - 0.5), "pgd: x must hold pixels in [0, 1] (models normalise inside), found values from")
  T.raises(pgd({eps = 0.1}, "x"), "pgd: x must be a tensor (a batch of pixels in [0, 1]), got string")
  T.raises(function() ml.attack.pgd(function() end, x, y, {eps = 0.1}) end,
    "pgd: model must be a module (wrap a function with ml.nn.Lambda), got function")
  local not_logits = ml.nn.Lambda(function(xx) return xx:reshape(4, 3, 4) end)
  T.raises(pgd({eps = 0.1}, nil, nil, not_logits), "pgd: the model must return logits [4, classes], got a float32 tensor [4, 3, 4]")
  local failing = ml.nn.Lambda(function() error("model broke") end)
  T.raises(pgd({eps = 0.1}, nil, nil, failing), "model broke")
end)

T.test("NaN watch: non-finite logits stop the attack, naming the example", function()
  local lin = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(12, 10)):eval()
  local mask = ml.ones(4, 10)
  mask[{3, 2}] = 0 / 0
  local nan_model = ml.nn.Lambda(function(xx) return lin(xx) * mask end)
  T.raises(pgd({eps = 0.1, steps = 3}, nil, nil, nan_model),
    "pgd: the model returned NaN logits for example 3 at step 1 (forward pass 1); the attack stops (nan = \"continue\" to go on)")
  mask[{3, 2}] = 1
  local calls = 0
  local late = ml.nn.Lambda(function(xx)
    calls = calls + 1
    local z = lin(xx)
    return calls >= 3 and z * (1 / 0) or z
  end)
  T.raises(pgd({eps = 0.1, steps = 5, random_start = false}, nil, nil, late), "pgd: the model returned infinite logits for example 1 at step 2")
  mask[{3, 2}] = 0 / 0
  local xa = ml.attack.pgd(nan_model, x, y, {eps = 0.1, steps = 2, nan = "continue"})
  T.check(xa:shape()[1] == 4, "nan = continue runs to the end")
  T.raises(pgd({eps = 0.1, nan = "skip"}), [[pgd: nan must be "stop" or "continue", got "skip"]])
end)

T.test("objectives", function()
  T.raises(pgd({eps = 0.1, objective = "foo"}), "pgd: objective: unknown objective 'foo' (use ce, dlr, cw")
  T.raises(pgd({eps = 0.1, objective = 3}), "pgd: objective must be a name (ce, dlr")
  T.raises(pgd({eps = 0.1, objective = "ce_targeted"}),
    "pgd: the objective 'ce_targeted' is targeted: give target classes (option target)")
  local two = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(12, 2))
  T.raises(function() ml.attack.apgd(two, x, ml.tensor({1, 2, 1, 2}, "int64"), {eps = 0.1, objective = "dlr"}) end,
    "apgd: the objective 'dlr' needs at least 3 classes, the model has 2")
  local three = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(12, 3))
  T.raises(function() ml.attack.apgd_t(three, x, ml.tensor({1, 2, 1, 3}, "int64"), {eps = 0.1}) end,
    "apgd-t: the targeted DLR loss needs at least 4 classes, the model has 3")
  T.raises(pgd({eps = 0.1, objective = function(z) return z:sum() end}),
    "pgd: the objective 'lua' must return one loss per example (a float tensor [4]), got a float32 tensor []")
  T.raises(pgd({eps = 0.1, objective = function() return 1 end}), "objective: the Lua function returned a number")
  T.raises(pgd({eps = 0.1, objective = function() error("my objective failed") end}), "my objective failed")
  T.raises(function() ml.attack.fab(m, x, y, {eps = 0.1, objective = "ce"}) end, "fab-t: unknown option 'objective'")
  T.raises(function() ml.attack.loss("dlr", ml.randn(2, 2), ml.tensor({1, 2}, "int64")) end,
    "objective: the objective 'dlr' needs at least 3 classes")
  T.raises(function() ml.attack.loss("kl", ml.randn(2, 3), ml.tensor({1, 2}, "int64")) end,
    "objective kl: needs the clean logits (option clean)")
  T.raises(function() ml.attack.loss("bce", ml.randn(2, 3), ml.tensor({1, 2}, "int64")) end,
    "loss: y must be a float tensor [B, classes] of 0/1 targets, got int64")
end)

T.test("callbacks", function()
  T.raises(pgd({eps = 0.1, on_step = 3}), "pgd: on_step must be a function (step, info)")
  T.raises(pgd({eps = 0.1, on_step = function() error("stop here") end}), "on_step: ")
  T.raises(pgd({eps = 0.1, on_step = function() error("stop here") end}), "stop here")
end)

T.test("AutoAttack options", function()
  local aa = function(o) return function() ml.attack.autoattack(m, x, y, o) end end
  T.raises(aa({eps = 0.1, version = "plus"}), [[autoattack: unknown version 'plus' (use "standard", "rand" or "custom")]])
  T.raises(aa({eps = 0.1, version = "custom"}), [[autoattack: version = "custom" needs a list of attacks (option attacks)]])
  T.raises(aa({eps = 0.1, version = "custom", attacks = {"apgd-ce", "cw"}}), "autoattack: unknown attack 'cw' in attacks")
  T.raises(aa({eps = 0.1, attacks = {"apgd-ce"}}), [[autoattack: attacks is only read with version = "custom"]])
  T.raises(aa({eps = 0.1, attacks = "apgd-ce", version = "custom"}), "autoattack: attacks must be a list of attack names")
  T.raises(aa({eps = 0.1, batch = -1}), "autoattack: batch must be an integer >= 0, got -1")
  T.raises(aa({eps = 0.1, state = "/nonexistent/dir/state.json", quiet = true}), "cannot")
  local bad = os.tmpname()
  io.open(bad, "w"):write("{}"):close()
  T.raises(aa({eps = 0.1, state = bad, quiet = true}), "does not belong to this run: not an AutoAttack state file")
  os.remove(bad)
end)

T.test("save and load", function()
  T.raises(function() ml.attack.save(3, {}) end, "attack.save: first argument must be a file path")
  T.raises(function() ml.attack.load("/nonexistent.safetensors") end, "/nonexistent.safetensors")
  local p = os.tmpname()
  ml.io.save_safetensors(p, {a = ml.zeros(2)}, {k = "v"})
  T.raises(function() ml.attack.load(p) end, "is not an adversarial set saved by ml.attack.save")
  os.remove(p)
end)

T.done()
