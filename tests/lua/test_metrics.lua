-- ml.metrics on real models: accuracy against a hand count, routing change
-- of identical inputs, the dissection against the robust accuracy, expert
-- load and the expert x class matrix, pathway IoU against the trace,
-- measured FLOPs, forced experts that change nothing, routing under noise,
-- the robustness curve without an attack (eps 0) and its Ctrl-C; bad input.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

ml.seed(3)
local data = ml.data.mnist()
local x, y = data.test:batch(1, 24)
local vmoe = ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, moe_every = 1}
local cnn = ml.nn.moe_cnn{backbone = "cnn", experts = 2}
vmoe:eval()
cnn:eval()

T.test("accuracy: tensors, datasets, error rate, precision@1", function()
  local logits = ml.no_grad(function() return vmoe(x) end)
  local want = logits:argmax(2):eq(y):sum():item()
  local r = ml.metrics.accuracy(vmoe, x, y)
  T.check(#r == 1 and r[1].correct == want and r[1].n == 24, "hand count")
  T.near(r[1].accuracy, want / 24, 1e-12, "accuracy")
  T.near(r[1].error_rate, 1 - want / 24, 1e-12, "error rate")
  local d = ml.metrics.accuracy(vmoe, data.test, {n = 24, batch = 7, quiet = true})
  T.check(d[1].correct == want and d[1].n == 24, "the dataset in batches of 7 gives the same count")
  T.check(d[1].model == "vmoe" and d[1].seed == 0 and #d[1].config_hash == 16, "provenance")
  T.check(d[1].config_hash == ml.metrics.config_hash(vmoe) and d[1].config_hash ~= ml.metrics.config_hash(cnn),
    "the hash follows the config")
  -- multi-label: a model with fixed logits; top-1 classes 2, 1, 3
  local fixed = ml.tensor({{0, 5, 1}, {3, 0, 0}, {0, 1, 2}})
  local m = ml.nn.Lambda(function() return fixed end)
  local targets = ml.tensor({{0, 1, 1}, {0, 0, 1}, {1, 0, 1}})
  local p = ml.metrics.accuracy(m, ml.zeros(3, 2), targets)
  T.near(p[1].precision_at_1, 2 / 3, 1e-12, "precision@1")
  T.near(p[1].fdr, 1 / 3, 1e-12, "false discovery rate")
  T.raises(function() ml.metrics.accuracy(vmoe, x, y, {steps = 3}) end, "accuracy: unknown option \"steps\"")
  T.raises(function() ml.metrics.accuracy(vmoe, x, y, {attack = "pgd"}) end, "accuracy: an attack needs eps")
  T.raises(function() ml.metrics.accuracy(vmoe, x, y:narrow(1, 1, 5)) end, "accuracy: 24 inputs but 5 labels")
end)

T.test("routing change: identical 0, noise > 0, errors", function()
  local r = ml.metrics.routing_change(vmoe, x, x:clone())
  T.check(#r == 2, "one row per MoE layer")
  for _, row in ipairs(r) do
    T.check(row.rate == 0 and row.mean_iou == 1 and row.changed == 0 and row.mean_tv == 0, "identical inputs")
  end
  local noisy = (x + ml.randn_like(x) * 0.3):clamp(0, 1)
  local rn = ml.metrics.routing_change(vmoe, x, noisy, {layer = "blocks.1.mlp"})
  T.check(#rn == 1 and rn[1].layer == "blocks.1.mlp" and rn[1].rate > 0 and rn[1].rate <= 1, "noise changes routing")
  T.near(rn[1].rate, 1 - rn.iou["blocks.1.mlp"]:mean():item(), 1e-5, "rate = 1 - mean IoU of the distribution")
  T.check(rn[1].mean_tv > 0 and rn[1].mean_tv <= 1, "continuous change")
  local _, t1 = vmoe:forward(x, {trace = true})
  local _, t2 = vmoe:forward(noisy, {trace = true})
  local rt = ml.metrics.routing_change(t1, t2, {batch = 24})
  T.near(rt[1].rate, ml.metrics.routing_change(vmoe, x, noisy)[1].rate, 1e-12, "traces or model: the same")
  local _, tc = cnn:forward(x, {trace = true})
  T.raises(function() ml.metrics.routing_change(t1, tc) end, "traces of different models?")
  local _, t3 = vmoe:forward(x:narrow(1, 1, 4), {trace = true})
  T.raises(function() ml.metrics.routing_change(t1, t3) end, "routed 1200 items in one trace and 200 in the other")
  T.raises(function() ml.metrics.routing_change(t1, t2, {layer = "nope"}) end,
    "routing_change: no MoE layer 'nope' (the layers: 'blocks.0.mlp', 'blocks.1.mlp')")
  T.raises(function() ml.metrics.routing_change(t1, t2, {batch = 7}) end, "not a multiple of the batch size 7")
end)

T.test("dissection: counts sum to the batch, MoE robustness = robust accuracy", function()
  local xa = (x + ml.randn_like(x) * 0.4):clamp(0, 1)
  local d = ml.metrics.dissection(vmoe, x, y, xa)
  local r = d[1]
  T.check(r.kept_right + r.changed_right + r.kept_fooled + r.changed_fooled == 24, "four counts sum to the batch")
  local robust = ml.metrics.accuracy(vmoe, xa, y)[1].accuracy
  T.near(r.moe_robustness, robust, 1e-12, "MoE robustness is the robust accuracy")
  local rc = ml.metrics.routing_change(vmoe, x, xa)
  local changed = rc.sample_changed:sum():item()
  T.near(r.router_robustness, 1 - changed / 24, 1e-12, "router robustness: samples whose routing held")
  T.check(d.cases:size(1) == 24 and d.cases:min():item() >= 1 and d.cases:max():item() <= 4, "cases 1..4")
  T.raises(function() ml.metrics.dissection(vmoe, x, y:narrow(1, 1, 3), xa) end, "dissection: 3 labels for 24 inputs")
end)

T.test("expert load, collapse warning, expert x class matrix", function()
  local printed = {}
  local real = print
  print = function(s) printed[#printed + 1] = s end
  local ok, r = pcall(ml.metrics.expert_load, cnn, x, {y = y, threshold = 0.5})
  print = real
  T.check(ok, tostring(r))
  local row = r[1]
  local shares = 0
  for e = 1, row.experts do shares = shares + row["share:" .. e] end
  T.near(shares, 1, 1e-6, "a channel MoE sends each sample to one expert")
  T.check(row.top_share >= 0.5 and row.collapsed and #r.warnings == 1 and printed[1] == r.warnings[1], "warning")
  T.check(printed[1]:find("routing collapse"), printed[1] or "no warning")
  local m = r.matrix.clean["features.3"]
  T.check(m:size(1) == 2 and m:size(2) == 10 and m:sum():item() == 24, "one kept choice per sample")
  for c = 1, 10 do
    T.check(m:select(2, c):sum():item() == y:eq(c):sum():item(), "column sums are the class counts")
  end
  local quiet = ml.metrics.expert_load(vmoe, x, {quiet = true, threshold = 0.01})
  T.check(#quiet == 2 and #quiet.warnings == 2, "every layer flagged at 1%")
  T.raises(function() ml.metrics.expert_load(vmoe, x, {layer = "x"}) end, "expert_load: no MoE layer 'x'")
end)

T.test("pathway IoU against the trace", function()
  local channels = ml.metrics._expert_channels(cnn:get("features.3"))
  local mask = channels[1]
  local r = ml.metrics.pathway(cnn, x, {mask = {["features.3"] = mask}})
  local _, t = cnn:forward(x, {trace = true})
  local iou = r.iou.clean["features.3"]
  local ex = t["features.3"].experts
  for i = 1, 24 do
    T.check(iou[i] == (ex[i][1] == 1 and 1 or 0), "IoU 1 on expert 1's own channels, 0 on the other's")
  end
  local sp = ml.nn.sparse_cnn{backbone = "cnn"}
  local rs = ml.metrics.pathway(cnn, x, {mask = sp, x_adv = x})
  T.check(#rs == 2 and rs[1].set == "clean" and rs[2].set == "adversarial" and rs[1].mean == rs[2].mean, "sets")
  T.raises(function() ml.metrics.pathway(vmoe, x, {mask = {}}) end, "pathway: no channel-MoE layer in this model")
  T.raises(function() ml.metrics.pathway(cnn, x, {mask = {}}) end, "pathway: no mask for layer 'features.3'")
end)

T.test("FLOPs: sparse counts the selected expert only", function()
  local f = ml.metrics.flops(cnn, x)[1]
  cnn:set_moe_form("mask")
  local g = ml.metrics.flops(cnn, x)[1]
  cnn:set_moe_form("sparse")
  T.check(f.flops_per_input < g.flops_per_input, "sparse < mask form")
  -- the MoE convolution 32 -> 64 on 14x14 computes 32 of its 64 channels in the sparse form
  T.near(g.flops_per_input - f.flops_per_input, 2 * 32 * 32 * 9 * 14 * 14, 1e-12, "half the convolution")
  T.check(f.params == g.params and f.active_params < f.params and f.flops == f.flops_per_input * 24, "counts")
end)

T.test("forced experts: forcing what the router picks changes nothing", function()
  ml.seed(5)
  local m = ml.nn.moe_cnn{backbone = "cnn", experts = 2}
  m:eval()
  -- a router that picks expert 1 for every input (the pooled features after ReLU are >= 0)
  local W = m:get("features.3.router"):parameters()["weight"]
  ml.no_grad(function() W:narrow(1, 1, 1):fill(1) W:narrow(1, 2, 1):fill(-1) end)
  local y0 = m(x)
  local yf = m:forward(x, {force = {["features.3"] = 1}})
  T.close(yf, y0, 0, 0, "forced output")
  local r = ml.metrics.forced_experts(m, {x = x, y = y})
  T.check(r[1].mode == "none" and #r == 5, "baseline and 2 x 2 rows")
  local by = {}
  for _, row in ipairs(r) do by[row.mode .. row.expert] = row end
  T.check(by.force1.accuracy == r[1].accuracy and by.silence2.accuracy == r[1].accuracy, "nothing changes")
  T.check(by.force2.accuracy ~= nil and by.silence1.accuracy ~= nil, "the other expert is evaluated")
  T.raises(function() ml.metrics.forced_experts(m, {x = x, y = y}, {layer = "nope"}) end,
    "forced_experts: no sparse MoE layer 'nope'")
  T.raises(function() ml.metrics.forced_experts(m, {x = x, y = y}, {mode = "maybe"}) end, "mode must be")
end)

T.test("routing under noise", function()
  local r = ml.metrics.routing_noise(vmoe, {x = x, y = y}, {sigma = {0, 0.5}, seed = 4})
  T.check(#r == 2 and r[1].sigma == 0 and r[1].rc_mean == 0 and r[1].prediction_change == 0, "sigma 0")
  T.check(r[2]["rc:blocks.0.mlp"] > 0 and r[2]["tv:blocks.0.mlp"] > 0, "sigma 0.5 moves the routing")
  local again = ml.metrics.routing_noise(vmoe, {x = x, y = y}, {sigma = {0, 0.5}, seed = 4})
  T.check(again[2].rc_mean == r[2].rc_mean, "same seed, same numbers")
  T.raises(function() ml.metrics.routing_noise(vmoe, {x = x, y = y}, {sigma = {}}) end,
    "routing_noise: sigma must be a non-empty list of numbers")
end)

T.test("robustness without an attack; errors; Ctrl-C keeps the rows", function()
  local r = ml.metrics.robustness(nil, {x = x, y = y}, {models = {a = vmoe, b = cnn}, eps = {0}, radius = false})
  T.check(#r == 2 and r[1].model == "a" and r[2].model == "b", "one row per model, sorted by name")
  T.check(r[1].robust_accuracy == r[1].accuracy and r[1]["rc:blocks.0.mlp"] == 0 and r[1].attack == "none", "eps 0")
  T.raises(function() ml.metrics.robustness(vmoe, data.test, {eps = {}}) end,
    "robustness: eps must be a non-empty list of numbers")
  T.raises(function() ml.metrics.robustness(vmoe, data.test, {eps = {-1}}) end, "eps[1] = -1 is not a number >= 0")
  T.raises(function() ml.metrics.robustness(nil, data.test, {eps = {0}}) end, "give a model")
  -- a model interrupted at its 2nd forward (the first attacked batch): the first model's rows stay
  local calls = 0
  local stop = ml.nn.Lambda(function(v)
    calls = calls + 1
    if calls == 2 then ml.interrupt() end
    return vmoe(v)
  end)
  local out = {}
  local real = print
  print = function(s) out[#out + 1] = s end
  local ri = ml.metrics.robustness(nil, {x = x, y = y}, {models = {a = vmoe, b = stop}, eps = {0, 0}, radius = false})
  print = real
  T.check(ri.interrupted and #ri == 2 and ri[1].model == "a", "rows done before Ctrl-C")
  T.check(out[1] and out[1]:find("interrupted; 2 rows done"), tostring(out[1]))
end)

T.test("rows plot and write", function()
  local r = ml.metrics.routing_noise(vmoe, {x = x, y = y}, {sigma = {0, 0.1}})
  local path = os.tmpname() .. ".csv"
  ml.results.write(r, path)
  local back = ml.results.read(path)
  os.remove(path)
  T.check(back[2]["rc:blocks.1.mlp"] == r[2]["rc:blocks.1.mlp"] and back[1].config_hash == r[1].config_hash, "CSV")
  if ml.plot then
    local p = ml.plot.lines(r, {x = "sigma", y = "rc_mean", by = "model"})
    T.check(p ~= nil, "plots")
  end
end)

T.done()
