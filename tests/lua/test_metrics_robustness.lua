-- Robustness curves and robust accuracy with the attacks: the rows agree with
-- ml.attack's own report and with ml.metrics.routing_change on the same
-- adversarial batch; the certified fraction bounds the measured routing
-- change (no capacity limit here); several models in one call; attack
-- options pass through (and a typo in one is the attack's error).
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

ml.seed(1)
local data = ml.data.mnist()
local x, y = data.test:batch(1, 32)
local vmoe = ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, moe_every = 1, capacity_factor = 0}
local vit = ml.nn.vit{dim = 16, depth = 2, heads = 2, mlp = 32}
vmoe:eval()
vit:eval()

T.test("robustness rows agree with the attack and the routing change", function()
  local rows = ml.metrics.robustness(nil, {x = x, y = y}, {models = {moe = vmoe, dense = vit}, eps = {0, 0.05},
                                                          steps = 5, noise = true, seed = 3})
  T.check(#rows == 4, "two models x two eps")
  local by = {}
  for _, r in ipairs(rows) do by[r.model .. r.eps] = r end
  local m0, m1, d1 = by.moe0, by["moe0.05"], by["dense0.05"]
  T.check(m0.robust_accuracy == m0.accuracy and m0["rc:blocks.0.mlp"] == 0 and m0.prediction_change == 0, "eps 0")
  T.check(m0["cert:blocks.0.mlp"] == 1 and m0["cert:blocks.1.mlp"] == 1, "everything is certified at eps 0")
  T.check(d1["rc:blocks.0.mlp"] == nil and d1.robust_accuracy ~= nil, "a dense model has no routing columns")
  local xa, rep = ml.attack.pgd(vmoe, x, y, {eps = 0.05, steps = 5, seed = 3})
  T.near(m1.robust_accuracy, rep.robust_accuracy, 1e-12, "robust accuracy = the attack's report")
  local rc = ml.metrics.routing_change(vmoe, x, xa)
  T.near(m1["rc:blocks.1.mlp"], rc[2].rate, 1e-9, "routing change of the same adversarial batch")
  T.near(m1["tv:blocks.0.mlp"], rc[1].mean_tv, 1e-6, "total variation")
  T.near(m1.rc_mean, (rc[1].rate + rc[2].rate) / 2, 1e-9, "mean over layers")
  for _, layer in ipairs({"blocks.0.mlp", "blocks.1.mlp"}) do
    T.check(m1["rc:" .. layer] <= 1 - m1["cert:" .. layer] + 1e-12, "certified items do not change")
  end
  T.check(m1["rc_noise:blocks.0.mlp"] >= 0 and m1.settings == "steps=5" and m1.attack == "pgd" and m1.seed == 3,
    "noise column and provenance")
  local path = os.tmpname() .. ".jsonl"
  ml.results.write(rows, path)
  local back = ml.results.read(path)
  os.remove(path)
  T.check(back[3]["rc:blocks.0.mlp"] == rows[3]["rc:blocks.0.mlp"] and back[1].settings == "steps=5", "written")
end)

T.test("accuracy with an attack", function()
  local r = ml.metrics.accuracy(vmoe, x, y, {attack = "pgd", eps = 0.05, steps = 5, seed = 3})[1]
  local _, rep = ml.attack.pgd(vmoe, x, y, {eps = 0.05, steps = 5, seed = 3})
  T.near(r.robust_accuracy, rep.robust_accuracy, 1e-12, "the attack's robust accuracy")
  T.near(r.robust_error_rate, 1 - rep.robust_accuracy, 1e-12, "robust error rate")
  T.check(r.attack == "pgd" and r.eps == 0.05 and r.norm == "linf", "attack fields")
end)

T.test("forced experts with an attack", function()
  local r = ml.metrics.forced_experts(vmoe, {x = x, y = y}, {layer = "blocks.1.mlp", experts = {2}, mode = "force",
                                                             eps = 0.05, steps = 3})
  T.check(#r == 2 and r[2].mode == "force" and r[2].robust_accuracy ~= nil and r[2].robust_accuracy <= 1, "rows")
  local _, rep = ml.attack.pgd(vmoe, x, y, {eps = 0.05, steps = 3})
  T.near(r[1].robust_accuracy, rep.robust_accuracy, 1e-12, "the baseline row attacks the model as it is")
end)

T.test("attack options pass through", function()
  T.raises(function() ml.metrics.robustness(vmoe, {x = x, y = y}, {eps = {0.1}, stpes = 3}) end, "stpes")
  T.raises(function() ml.metrics.robustness(vmoe, {x = x, y = y}, {eps = {0.1}, attack = "nope"}) end, "nope")
end)

T.done()
