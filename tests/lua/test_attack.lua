-- ml.attack: analytic worst cases on linear models, bounds, determinism,
-- modes, memory, progress callbacks, objectives, save/load.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

-- A linear classifier with 2 classes on D features; w = W[y] - W[other].
local function linear(D, C)
  ml.seed(7)
  local lin = ml.nn.Linear(D, C or 2)
  return ml.nn.Sequential(ml.nn.Flatten(), lin), lin
end

local function small_mlp(D, C)
  ml.seed(3)
  return ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(D, 32), ml.nn.Tanh(), ml.nn.Linear(32, C))
end

-- x in [0.25, 0.75] so that a step of eps <= 0.25 never meets the box
local function batch(B, shape, C)
  local s = {B}
  for _, d in ipairs(shape) do s[#s + 1] = d end
  local x = ml.rand(s) * 0.5 + 0.25
  local y = ml.randint(1, C or 2, {B})
  return x, y
end

local function max_abs(t) return t:abs():max():item() end

T.test("FGSM and PGD linf reach x - eps sign(w) on a linear model", function()
  local m, lin = linear(6)
  local x, y = batch(5, {6})
  local W = lin:parameters().weight
  for _, attack in ipairs({"fgsm", "pgd"}) do
    local xa = ml.attack[attack](m, x, y, attack == "pgd" and {eps = 0.1, steps = 10} or {eps = 0.1, quiet = true})
    for i = 1, 5 do
      local yi = y[i]
      local w = W[yi] - W[3 - yi]
      T.close(xa[i] - x[i], w:sign() * -0.1, 0, 1e-6, attack .. " example " .. i)
    end
  end
end)

T.test("PGD l2 reaches x - eps w / |w| on a linear model", function()
  local m, lin = linear(6)
  local x, y = batch(5, {6})
  local W = lin:parameters().weight
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.2, steps = 20, norm = "l2"})
  for i = 1, 5 do
    local yi = y[i]
    local w = W[yi] - W[3 - yi]
    T.close(xa[i] - x[i], w / w:norm():item() * -0.2, 0, 1e-5, "example " .. i)
  end
  T.close(rep.perturbation, ml.full({5}, 0.2), 1e-5, 0, "l2 norms")
end)

T.test("FAB on a linear binary model returns the minimal-norm point", function()
  local D = 8
  local m, lin = linear(D)
  local x, y = batch(6, {D})
  local W, b = lin:parameters().weight, lin:parameters().bias
  local correct = 0
  for _, norm in ipairs({"linf", "l2"}) do
    local xa, rep = ml.attack.fab(m, x, y, {eps = 1, norm = norm, steps = 100})
    for i = 1, 6 do
      local yi = y[i]
      local w = W[yi] - W[3 - yi]
      local margin = (w * x[i]):sum():item() + b[yi] - b[3 - yi]
      -- the distance to the boundary w.x + b = 0 in the norm, |w.x + b| / |w|_dual
      local dual = norm == "linf" and w:abs():sum():item() or w:norm():item()
      local dist = math.abs(margin) / dual
      local got = rep.perturbation[i]
      T.check(rep.success[i] == 1, norm .. ": example " .. i .. " broken")
      if margin < 0 then -- misclassified at x: distance 0
        T.check(got == 0, norm .. ": a misclassified example is returned as it is")
      else
        T.check(got >= dist * (1 - 1e-4) and got <= dist * 1.02,
          ("%s example %d: |delta| %.6g, minimal %.6g"):format(norm, i, got, dist))
        -- and in the minimal direction: -sign(w) (linf) or -w/|w| (l2)
        local dir = norm == "linf" and w:sign() * -dist or w / w:norm():item() * -dist
        T.close(xa[i] - x[i], dir, 0.03, 1e-4, norm .. " direction " .. i)
        correct = correct + 1
      end
    end
  end
  T.check(correct >= 4, "enough correctly classified examples to test")
end)

T.test("every result within the norm bound and [0, 1] over many random batches", function()
  local m = small_mlp(12, 4)
  ml.seed(11)
  for trial = 1, 6 do
    local x = ml.rand(8, 12)
    local y = ml.randint(1, 4, {8})
    for _, norm in ipairs({"linf", "l2"}) do
      local eps = norm == "linf" and 0.05 * trial or 0.3 * trial
      local runs = {
        {"fgsm", {}}, {"pgd", {steps = 5, random_start = true, restarts = 2}}, {"apgd", {steps = 10}},
        {"apgd-t", {steps = 5, n_targets = 3}}, {"fab-t", {steps = 10, n_targets = 3}},
      }
      if norm == "linf" then runs[#runs + 1] = {"square", {queries = 30}} end
      for _, r in ipairs(runs) do
        local o = {eps = eps, norm = norm, seed = trial}
        for k, v in pairs(r[2]) do o[k] = v end
        local xa, rep = ml.attack.run(r[1], m, x, y, o)
        local d = xa - x
        local n = norm == "linf" and d:abs():reshape(8, -1):max(2) or d:reshape(8, -1):norm(2, 2)
        T.check(n:max():item() <= eps * (1 + 1e-5) + 1e-6, ("%s %s trial %d: norm %.6g > eps %.6g"):format(r[1],
          norm, trial, n:max():item(), eps))
        T.check(xa:min():item() >= 0 and xa:max():item() <= 1, r[1] .. " leaves [0, 1]")
        T.close(rep.perturbation, n, 1e-5, 1e-6, r[1] .. " reports the norms")
      end
    end
  end
end)

T.test("eps = 0 returns x", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(6, 12)
  local y = ml.randint(1, 4, {6})
  local extra = {fgsm = {}, pgd = {steps = 5, random_start = true}, apgd = {steps = 5}, ["apgd-t"] = {steps = 5,
                 n_targets = 2}, ["fab-t"] = {steps = 5, n_targets = 2}, square = {queries = 20}}
  for _, name in ipairs({"fgsm", "pgd", "apgd", "apgd-t", "fab-t", "square"}) do
    local o = {eps = 0}
    for k, v in pairs(extra[name]) do o[k] = v end
    local xa = ml.attack.run(name, m, x, y, o)
    T.check(ml.equal(xa, x), name .. " moved x with eps = 0")
  end
end)

T.test("the same seed gives the same batch; another seed another one", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(6, 12)
  local y = ml.randint(1, 4, {6})
  for _, name in ipairs({"pgd", "apgd", "square"}) do
    local o = name == "square" and {eps = 0.1, queries = 40, seed = 4} or
      {eps = 0.1, steps = 5, random_start = name == "pgd" or nil, seed = 4}
    local a = ml.attack.run(name, m, x, y, o)
    local b = ml.attack.run(name, m, x, y, o)
    T.check(ml.equal(a, b), name .. ": same seed, different result")
    o.seed = 5
    local c = ml.attack.run(name, m, x, y, o)
    T.check(not ml.equal(a, c), name .. ": another seed, same result")
  end
  -- the engine's generator is left as it was
  ml.seed(9)
  local r1 = ml.rand(3)
  ml.seed(9)
  ml.attack.pgd(m, x, y, {eps = 0.1, steps = 2, random_start = true})
  T.check(ml.equal(ml.rand(3), r1), "the attack consumed the engine's generator")
end)

T.test("model modes restored, no .grad on parameters", function()
  local m = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(12, 16), ml.nn.Dropout(0.5), ml.nn.Linear(16, 3))
  local x = ml.rand(5, 12)
  local y = ml.randint(1, 3, {5})
  m:train()
  m:get(3):eval()
  local xa1 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3})
  local xa2 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3})
  T.check(ml.equal(xa1, xa2), "dropout was active during the attack")
  T.check(m:is_training() and m:get(2):is_training() and not m:get(3):is_training(), "modes not restored")
  for name, p in pairs(m:parameters()) do T.check(p.grad == nil, name .. " got a gradient") end
end)

T.test("report: accuracies, success, steps, cost, predictions", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(10, 12)
  local y = ml.randint(1, 4, {10})
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.3, steps = 7, early_stop = true})
  local pred = ml.no_grad(function() return m(xa):argmax(2) end)
  T.check(ml.equal(rep.pred_adv, pred), "pred_adv")
  T.near(rep.robust_accuracy, pred:eq(y):float():mean():item(), 1e-9, "robust accuracy")
  T.near(rep.clean_accuracy, ml.no_grad(function() return m(x):argmax(2) end):eq(y):float():mean():item(), 1e-9)
  T.close(rep.success, pred:ne(y):float(), 0, 0, "success = misclassified")
  T.check(rep.cost.forwards >= 1 and rep.cost.backwards >= 1 and rep.cost.forwards <= 8, "cost")
  T.check(rep.steps:max():item() <= 7, "steps")
  -- early stop: a broken example stops where it broke, so it used fewer steps than one never broken
  local x8 = (xa * 255):round() / 255
  local acc8 = ml.no_grad(function() return m(x8):argmax(2) end):eq(y):float():mean():item()
  T.near(rep.robust_accuracy_8bit, acc8, 1e-9, "8-bit accuracy")
  T.check(tostring(rep):find("pgd (linf, eps 0.3", 1, true) ~= nil, "report prints")
end)

T.test("targeted attacks reach the target; objectives are pluggable", function()
  local m = small_mlp(12, 5)
  local x = ml.rand(8, 12)
  local y = ml.randint(1, 5, {8})
  local tt = {}
  for i = 1, 8 do tt[i] = y[i] % 5 + 1 end
  local target = ml.tensor(tt, "int64")
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 1, steps = 50, alpha = 0.05, target = target})
  local pred = ml.no_grad(function() return m(xa):argmax(2) end)
  T.close(rep.success, pred:eq(target):float(), 0, 0, "targeted success = target reached")
  T.check(rep.success:sum():item() >= 3, "targeted PGD at eps = 1 reaches some targets")
  for _, obj in ipairs({"ce", "dlr", "cw", "kl", "ce_aux"}) do
    local _, r = ml.attack.apgd(m, x, y, {eps = 0.2, steps = 10, objective = obj})
    T.check(r.objective == obj, obj)
    T.check(r.loss:numel() == 8, obj .. " loss per example")
  end
  -- a Lua objective of (logits, trace, y): the CW margin written by hand equals "cw"
  local calls = 0
  local function margin(logits, trace, yy)
    calls = calls + 1
    T.check(getmetatable(trace) and #trace == 0, "the (empty) trace of a dense model is passed")
    local zy = logits:gather(2, yy:reshape(-1, 1)):reshape(-1)
    local other = (logits - ml.one_hot(yy, 5) * 1e9):max(2)
    return other - zy
  end
  local a1, r1 = ml.attack.pgd(m, x, y, {eps = 0.2, steps = 5, objective = margin})
  local a2, r2 = ml.attack.pgd(m, x, y, {eps = 0.2, steps = 5, objective = "cw"})
  T.check(calls >= 5, "the Lua objective was called")
  T.close(a1, a2, 0, 1e-6, "Lua objective = built-in cw")
  T.close(r1.loss, r2.loss, 1e-4, 1e-5, "same losses")
end)

T.test("objective values: CE, DLR, CW, targeted, BCE, KL", function()
  local z = ml.tensor({{3, 1, 0, -1}, {0, 2, 5, 1}})
  local y = ml.tensor({1, 2}, "int64")
  local t = ml.tensor({4, 1}, "int64")
  T.close(ml.attack.loss("ce", z, y), ml.cross_entropy(z, y, {reduction = "none"}), 1e-6, 1e-6)
  -- DLR: -(z_y - max_{i~=y} z_i) / (z_(1) - z_(3))
  T.close(ml.attack.loss("dlr", z, y), ml.tensor({-(3 - 1) / (3 - 0), -(2 - 5) / (5 - 1)}), 1e-6, 1e-6)
  T.close(ml.attack.loss("cw", z, y), ml.tensor({1 - 3, 5 - 2}), 1e-6, 1e-6)
  -- targeted DLR: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)
  T.close(ml.attack.loss("dlr_targeted", z, y, {target = t}),
    ml.tensor({-(3 - -1) / (3 - (0 + -1) / 2), -(2 - 0) / (5 - (1 + 0) / 2)}), 1e-6, 1e-6)
  T.close(ml.attack.loss("logit_diff", z, y, {target = t}), ml.tensor({-1 - 3, 0 - 2}), 1e-6, 1e-6)
  T.close(ml.attack.loss("ce_targeted", z, y, {target = t}), -ml.cross_entropy(z, t, {reduction = "none"}), 1e-6, 1e-6)
  local targets = ml.tensor({{1, 0, 0, 1}, {0, 0, 1, 0}})
  T.close(ml.attack.loss("bce", z, targets), ml.bce_with_logits(z, targets, {reduction = "none"}):sum(2), 1e-6, 1e-6)
  T.close(ml.attack.loss("kl", z, y, {clean = z}), ml.zeros(2), 0, 1e-6, "KL to itself")
  local c = z * 0.5
  T.close(ml.attack.loss("kl", z, y, {clean = c}), ml.kl_div(c, z, {reduction = "none"}), 1e-6, 1e-6)
  -- the gradients are the ops' (finite differences through the composed ops)
  for _, name in ipairs({"dlr", "cw"}) do
    T.gradcheck(name, function(zz) return ml.attack.loss(name, zz, y):sum() end, {z:clone():requires_grad()})
  end
  T.gradcheck("dlr_targeted", function(zz) return ml.attack.loss("dlr_targeted", zz, y, {target = t}):sum() end,
    {z:clone():requires_grad()})
end)

T.test("multi-label attack with the sigmoid objective", function()
  ml.seed(2)
  local m = ml.nn.Sequential(ml.nn.Linear(6, 4))
  local x = ml.rand(5, 6) * 0.5 + 0.25
  local targets = ml.no_grad(function() return m(x):gt(0):float() end) -- the model is right at x
  local xa, rep = ml.attack.pgd(m, x, targets, {eps = 0.5, steps = 20, objective = "bce"})
  local flipped = ml.no_grad(function() return m(xa):gt(0):float():ne(targets):sum(2):gt(0):float() end)
  T.close(rep.success, flipped, 0, 0, "success = some label flipped")
  T.check(rep.clean_accuracy == 1, "clean: every label right")
end)

T.test("on_step: info, stopping, and a step allocates nothing that stays", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(8, 12)
  local y = ml.randint(1, 4, {8})
  local seen, live = {}, {}
  local _, rep = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 30, on_step = function(step, info)
    seen[#seen + 1] = step
    T.check(info.attack == "pgd" and info.total == 30 and info.loss:numel() == 8, "info")
    T.check(info.x_adv:size(1) == 8 and info.success:numel() == 8, "info tensors")
    local mem = ml.memory()
    live[#live + 1] = {mem.tensors, mem.bytes}
    if step == 20 then return false end
  end})
  T.check(#seen == 20 and rep.stopped, "returning false stops")
  for k = 3, #live do
    T.check(live[k][1] == live[2][1] and live[k][2] == live[2][2],
      ("step %d holds %d tensors / %d bytes, step 2 %d / %d"):format(k, live[k][1], live[k][2], live[2][1], live[2][2]))
  end
  -- APGD too
  live = {}
  ml.attack.apgd(m, x, y, {eps = 0.1, steps = 25, on_step = function(step)
    local mem = ml.memory()
    live[#live + 1] = {mem.tensors, mem.bytes}
  end})
  for k = 3, #live do T.check(live[k][1] == live[2][1] and live[k][2] == live[2][2], "apgd step " .. k) end
end)

T.test("routing traces in on_step with trace = true", function()
  ml.seed(4)
  local m = ml.nn.vmoe{input = {1, 8, 8}, patch = 4, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, k = 1,
                       moe_every = 1, classes = 3}
  local x = ml.rand(4, 1, 8, 8)
  local y = ml.randint(1, 3, {4})
  local layers = 0
  ml.attack.pgd(m, x, y, {eps = 0.05, steps = 2, trace = true, on_step = function(_, info)
    layers = #ml.nn.trace_layers(info.trace)
  end})
  T.check(layers == 2, "two MoE layers traced, got " .. layers)
  local no_trace = true
  ml.attack.pgd(m, x, y, {eps = 0.05, steps = 1, on_step = function(_, info) no_trace = info.trace == nil end})
  T.check(no_trace, "no trace unless asked")
end)

T.test("save and load an adversarial set", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(6, 12)
  local y = ml.randint(1, 4, {6})
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.2, steps = 5, seed = 3})
  local path = os.tmpname()
  ml.attack.save(path, rep)
  local r = ml.attack.load(path)
  os.remove(path)
  T.check(ml.equal(r.x, x) and ml.equal(r.x_adv, xa) and ml.equal(r.y, y), "batches and labels")
  T.check(ml.equal(r.pred_adv, rep.pred_adv) and ml.equal(r.pred_clean, rep.pred_clean), "predictions")
  T.check(r.robust_accuracy == rep.robust_accuracy and r.robust_accuracy_8bit == rep.robust_accuracy_8bit, "report")
  T.check(r.seed == 3 and r.attack == "pgd" and r.cost.forwards == rep.cost.forwards, "seed, attack, cost")
  local m2 = ml.nn.from_config(r.model_config)
  m2:load_state_dict(m:state_dict())
  T.check(ml.equal(m2(xa), m(xa)), "the model rebuilt from the saved config")
  T.raises(function() ml.attack.save(path, {}) end, "attack.save: second argument must be an attack report")
end)

T.test("EOT averages the gradient over eot forwards", function()
  local m = small_mlp(12, 4)
  local x = ml.rand(6, 12)
  local y = ml.randint(1, 4, {6})
  local a1, r1 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3})
  local a4, r4 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, eot = 4})
  T.check(r4.cost.backwards == 4 * r1.cost.backwards and r1.cost.backwards == 3, "4 draws per step")
  T.check(ml.equal(a1, a4), "a deterministic model: the same signs")
end)

T.test("ce_aux adds the routers' auxiliary losses, computed in eval mode", function()
  ml.seed(4)
  local m = ml.nn.vmoe{input = {1, 8, 8}, patch = 4, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, k = 2,
                       moe_every = 1, classes = 3, importance_weight = 0.5, load_weight = 0.5}:eval()
  local x = ml.rand(4, 1, 8, 8)
  local y = ml.randint(1, 3, {4})
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.05, steps = 2, objective = "ce_aux"})
  local logits, _, aux = ml.no_grad(function() return m:forward(xa, {aux = true}) end)
  T.check(aux ~= nil and aux:item() > 0, "the model has auxiliary losses in eval mode")
  T.close(rep.loss, ml.cross_entropy(logits, y, {reduction = "none"}) + aux:item(), 1e-5, 1e-6, "CE + aux per example")
  T.check(not m:is_training(), "eval mode kept")
end)

T.test("evaluate over a dataset, batch by batch", function()
  local m = small_mlp(784, 10)
  local ds = ml.data.mnist("data/mnist-10k").test:subset(1, 50)
  local r = ml.attack.evaluate(m, ds, "fgsm", {eps = 0.05}, {n = 30, batch = 12})
  T.check(r.n == 30, "30 examples")
  local x, y = ds:batch(1, 30)
  local _, rep = ml.attack.fgsm(m, x, y, {eps = 0.05})
  T.near(r.robust_accuracy, rep.robust_accuracy, 1e-9, "same as one batch")
  T.near(r.clean_accuracy, rep.clean_accuracy, 1e-9)
end)

T.done()
