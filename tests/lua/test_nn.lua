-- Modules: shapes, hand-computed values, gradients against finite differences,
-- MoE layers (selection held fixed), routing traces that match the computation,
-- parameter groups, summaries, configs, bad input.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")
ml.seed(3)

-- gradcheck of a module w.r.t. its input and every parameter
local function check_module(name, m, x, opts)
  T.checks = T.checks + 1
  local ok, err, rep = ml.gradcheck_module(m, x, opts)
  if not ok then
    T.check(false, ("gradcheck %s: %s element %s: analytic %.6g numeric %.6g (rel err %.3g)"):format(name,
      rep.name, rep.element, rep.analytic, rep.numeric, err))
  end
end

T.test("Linear and activations: values by hand", function()
  local lin = ml.nn.Linear(2, 2)
  lin:load_state_dict({weight = ml.tensor({{1, 2}, {3, 4}}), bias = ml.tensor({0.5, -1})})
  T.close(lin(ml.tensor({{1, 1}})), ml.tensor({{3.5, 6}}), 0, 1e-6, "x W^T + b")
  T.close(ml.nn.ReLU()(ml.tensor({-1, 2})), ml.tensor({0, 2}), 0, 0)
  T.close(ml.nn.Normalize({0.5}, {0.25})(ml.ones(1, 1, 2, 2)), ml.full({1, 1, 2, 2}, 2), 0, 1e-6, "normalise")
  T.check(#ml.nn.Flatten()(ml.zeros(2, 3, 4)):shape() == 2, "flatten keeps the batch")
end)

T.test("gradients of every module", function()
  check_module("Linear", ml.nn.Linear(3, 2), ml.randn(2, 3))
  check_module("Conv2d", ml.nn.Conv2d(2, 3, 3, {padding = 1, bias = true}), ml.randn(2, 2, 4, 4))
  check_module("BatchNorm2d train", ml.nn.BatchNorm2d(2):train(), ml.randn(3, 2, 2, 2))
  check_module("BatchNorm2d eval", ml.nn.BatchNorm2d(2):eval(), ml.randn(3, 2, 2, 2))
  check_module("LayerNorm", ml.nn.LayerNorm(4), ml.randn(2, 3, 4))
  check_module("MLP", ml.nn.MLP(3, 5, 2, "tanh"), ml.randn(2, 3))
  check_module("Attention", ml.nn.MultiHeadSelfAttention(4, 2), ml.randn(2, 3, 4))
  check_module("TransformerBlock", ml.nn.TransformerBlock(4, 2, {mlp = 6}), ml.randn(1, 3, 4))
  check_module("PatchEmbed", ml.nn.PatchEmbed({1, 4, 4}, 2, 3), ml.randn(2, 1, 4, 4))
  check_module("BasicBlock", ml.nn.BasicBlock(2, 3, 2):eval(), ml.randn(2, 2, 4, 4), {eps = 1e-3}) -- ReLU kinks
  local v = {}
  for i = 1, 32 do v[i] = ((i * 7) % 32) / 8 end
  check_module("MaxPool2d", ml.nn.MaxPool2d(2), ml.tensor(v):reshape(1, 2, 4, 4))
  check_module("AvgPool2d", ml.nn.AvgPool2d(2), ml.randn(1, 2, 4, 4))
  check_module("GlobalAvgPool", ml.nn.GlobalAvgPool(), ml.randn(2, 3, 2, 2))
  check_module("SmoothMoE (linear experts)", ml.nn.SmoothMoE(3, {experts = 3,
    expert = {type = "Linear", ["in"] = 3, out = 2, bias = false}}), ml.randn(4, 3))
end)

-- A TokenMoE whose routing margins are large compared with the finite
-- difference step, so that the selection stays fixed while gradchecking.
T.test("TokenMoE gradients with the selection held fixed", function()
  ml.seed(12)
  local moe = ml.nn.TokenMoE(4, {experts = 4, k = 2, capacity_factor = 0, noise_std = 0,
                                 expert = {type = "MLP", ["in"] = 4, hidden = 5, out = 4, activation = "tanh"}})
  moe:eval()
  local R = moe:parameters()["router.weight"]
  ml.no_grad(function() R:copy(ml.randn(4, 4) * 3) end)
  local x = ml.randn(6, 4)
  -- the smallest gap between the k-th and (k+1)-th logits must exceed the step's effect
  local logits = ml.matmul(x, R:t())
  local v = logits:topk(3, 2)
  local gap = (v:narrow(2, 2, 1) - v:narrow(2, 3, 1)):min():item()
  T.check(gap > 0.5, ("routing margin %.3f is large enough"):format(gap))
  check_module("TokenMoE", moe, x)
end)

T.test("MoEConv2d: sparse and mask forms agree, gradients", function()
  ml.seed(4)
  local conv = ml.nn.MoEConv2d(3, 4, 3, {experts = 2, ratio = 0.5})
  local x = ml.randn(5, 3, 4, 4)
  local ys, ts = conv:forward(x, {trace = true})
  conv:set_moe_form("mask")
  local ym = conv(x)
  conv:set_moe_form("sparse")
  T.close(ys, ym, 1e-5, 1e-6, "sparse == mask")
  -- the output of each sample lives only in its expert's block of channels
  local layer = ml.nn.trace_layers(ts)[1]
  local e = ts[layer].experts
  for i = 1, 5 do
    local other = e[i][1] == 1 and 3 or 1
    T.check(ys[i]:narrow(1, other, 2):abs():sum():item() == 0, "zeros outside the expert's block")
  end
  -- gradients (routing is fixed under small steps unless a router is near a tie)
  local p = ts[layer].probs
  local margin = (p:select(2, 1) - p:select(2, 2)):abs():min():item()
  if margin > 0.05 then check_module("MoEConv2d", conv, x) end
end)

T.test("routing trace is what was computed", function()
  ml.seed(7)
  local moe = ml.nn.TokenMoE(6, {experts = 3, k = 2, capacity_factor = 0.75, noise_std = 0})
  moe:eval()
  local x = ml.randn(10, 6)
  local y, trace = moe:forward(x, {trace = true})
  local tr = trace[ml.nn.trace_layers(trace)[1]]
  T.check(tr.experts:size(1) == 10 and tr.experts:size(2) == 2, "experts [T, K]")
  T.check(tr.kept:sum():item() < 20, "capacity 0.75 drops some assignments")
  -- recompute y from the trace: sum over kept (token, expert) of gate * expert(x)
  local manual = ml.zeros(10, 6)
  local experts = moe:get("experts")
  for t = 1, 10 do
    for k = 1, 2 do
      if tr.kept[t][k] == 1 then
        local e = tr.experts[t][k]
        local out = experts:get(e)(x[t]:reshape(1, 6))[1]
        manual[t] = manual[t] + out * tr.gates[t][k]
      end
    end
  end
  T.close(y, manual, 1e-5, 1e-6, "output = trace-weighted experts")
  T.close(tr.load, ml.tensor({0, 0, 0}) + tr.kept:float():sum():item() / 3 * 0 + tr.load, 0, 0)
  local load_sum = tr.load:sum():item()
  T.check(load_sum == tr.kept:sum():item(), "load counts the kept assignments")
  T.check(tr.aux.importance ~= nil and tr.aux.load ~= nil, "auxiliary losses reported")
  T.check(tostring(trace):find("dropped"), "trace prints as a table")
end)

T.test("auxiliary losses in training mode", function()
  local model = ml.nn.vmoe{classes = 10, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4}
  model:train()
  local _, _, aux = model:forward(ml.rand(4, 1, 28, 28))
  T.check(aux ~= nil and aux:item() > 0, "aux loss returned in training")
  model:eval()
  local _, _, aux_eval = model:forward(ml.rand(4, 1, 28, 28))
  T.check(aux_eval == nil, "no aux loss in evaluation unless asked")
  local _, _, aux_asked = model:forward(ml.rand(4, 1, 28, 28), {aux = true})
  T.check(aux_asked ~= nil, "aux = true computes it")
end)

T.test("MoEConv2d balancing losses: values by hand, configs, gradients", function()
  ml.seed(9)
  local conv = ml.nn.MoEConv2d(3, 4, 3, {experts = 2, importance_weight = 0.5, switch_weight = 2})
  conv:train()
  local x = ml.randn(6, 3, 5, 5)
  local _, tr, aux = conv:forward(x, {trace = true})
  local e = tr[ml.nn.trace_layers(tr)[1]]
  local p = e.probs                                          -- [6, 2]
  local imp = p:sum(1)
  local cv2 = imp:var(1, {unbiased = false}):item() / imp:mean():item() ^ 2
  local f = ml.zeros(2)
  for n = 1, 6 do f[e.experts[n][1]] = f[e.experts[n][1]] + 1 / 6 end
  local sw = 2 * (p:mean(1) * f):sum():item()
  T.near(aux:item(), 0.5 * cv2 + 2 * sw, 1e-5, "aux = 0.5 importance + 2 switch")
  T.near(e.aux.importance, cv2, 1e-5, "the trace carries the importance value")
  T.near(e.aux.switch, sw, 1e-5, "and the switch value E sum f_e P_e (unweighted)")
  -- the router learns from the balancing loss alone
  local w = conv:parameters()["router.weight"]
  local g = ml.grad(aux, w)
  T.check(g:abs():sum():item() > 0, "balancing loss reaches the router")
  conv:eval()
  local _, _, aux_eval = conv:forward(x)
  T.check(aux_eval == nil, "no balancing loss in evaluation")
  local m = ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, switch_weight = 1}
  T.check(m:config():find('"switch_weight":1', 1, true), "recorded in the model config")
  local m2 = ml.nn.from_config(m:config())
  m2:train()
  local _, _, a2 = m2:forward(ml.rand(4, 1, 28, 28))
  T.check(a2 ~= nil, "a rebuilt model keeps its balancing loss")
  T.raises(function() ml.nn.moe_cnn{router = "global", switch_weight = 1} end, "apply to per-layer routers")
  T.raises(function() ml.nn.MoEConv2d(3, 4, 3, {switch_weight = -1}) end, "must be >= 0")
  T.raises(function() ml.nn.resnet18{switch_weight = 1} end, "needs family = moe_cnn")
end)

T.test("parameter groups, summary, configs", function()
  local model = ml.nn.moe_cnn{backbone = "resnet18", experts = 2, ratio = 0.5}
  local nr, nb = 0, 0
  for name in pairs(model:parameters("router")) do nr = nr + 1 T.check(name:find("router"), name) end
  for name in pairs(model:parameters("backbone")) do nb = nb + 1 T.check(not name:find("router"), name) end
  T.check(nr == 16, "16 routers")
  T.check(nb > 50, "backbone parameters")
  local s = model:summary(nil, {quiet = true})
  T.check(s.params == 703162 and s.active == 359866, "totals in the summary")
  T.near(s.flops / 1e9, 0.0359, 0.02, "MoE-CNN GFLOPs per image (only the selected expert)")
  local g = ml.nn.moe_cnn{backbone = "resnet18", experts = 2, ratio = 0.5, router = "global"}
  T.check(g:get("router") ~= nil, "a global router")
  local y, tr = g:forward(ml.rand(3, 3, 32, 32), {trace = true})
  T.check(#ml.nn.trace_layers(tr) == 16 and y:size(2) == 10, "global routing reaches every MoE layer")
  for _, fam in ipairs{"dense", "s_dense", "sparse_cnn"} do
    local m = ml.nn[fam]{backbone = "resnet18"}
    T.check(m(ml.rand(2, 3, 32, 32)):size(2) == 10, fam .. " runs")
  end
  local sd = ml.nn.s_dense{backbone = "resnet18", ratio = 0.5}
  T.check(sd:num_params() < 200000, "s_dense halves every width")
  for _, name in ipairs{"mlp", "cnn", "vit", "vmoe"} do
    local m = ml.nn[name]{}
    T.check(m(ml.rand(2, 1, 28, 28)):size(2) == 10, name .. " runs on MNIST shapes")
    local m2 = ml.nn.from_config(m:config())
    m2:load_state_dict(m:state_dict())
    T.close(m2:eval()(ml.ones(1, 1, 28, 28)), m:eval()(ml.ones(1, 1, 28, 28)), 0, 0, name .. " rebuilt from its config")
  end
  local w = ml.nn.wrn{depth = 10, widen = 1}
  T.check(w(ml.rand(1, 3, 32, 32)):size(2) == 10, "wrn runs")
  local vgg = ml.nn.vgg16{width = 0.125}
  T.check(vgg(ml.rand(1, 3, 32, 32)):size(2) == 10, "vgg16 runs")
end)

T.test("stored configs are complete; options that do not apply are refused", function()
  local function keys(json)
    local k = {}
    for key in json:gmatch('"([%w_]+)":') do k[key] = true end
    return k
  end
  local want = {
    mlp = {"classes", "input", "width", "family", "hidden", "normalize"},
    resnet18 = {"classes", "input", "width", "family", "base_width"},
    wrn = {"depth", "widen"},
    vit = {"patch", "dim", "depth", "heads", "mlp", "eps"},
    vmoe = {"moe_every", "experts", "k", "capacity_factor", "noise_std", "importance_weight", "load_weight",
            "renormalize", "batch_priority", "round_capacity"},
  }
  for name, list in pairs(want) do
    local k = keys(ml.nn[name]{}:config())
    for _, key in ipairs(list) do T.check(k[key], name .. " records " .. key) end
  end
  local moe = keys(ml.nn.moe_cnn{}:config())
  for _, key in ipairs{"ratio", "experts", "router", "mask"} do T.check(moe[key], "moe_cnn records " .. key) end
  T.check(not keys(ml.nn.vit{}:config()).experts, "a dense ViT records no MoE knob")
  T.check(ml.nn.vmoe{experts = 4}:describe():find("experts = 4", 1, true), "the description names the knobs")
  T.raises(function() ml.nn.resnet18{patch = 4} end, "resnet18: option 'patch' does not apply to this model")
  T.raises(function() ml.nn.vit{experts = 4} end, "vit: option 'experts' does not apply")
  T.raises(function() ml.nn.vit{width = 2} end, "vit: option 'width' does not apply")
  T.raises(function() ml.nn.resnet18{experts = 4} end, "option 'experts' needs family = moe_cnn (the family is dense)")
  T.raises(function() ml.nn.resnet18{ratio = 0.25} end, "option 'ratio' needs family = s_dense, sparse_cnn or moe_cnn")
end)

T.test("a Lua function as a module", function()
  local calls = 0
  local m = ml.nn.Sequential(ml.nn.Linear(3, 3), ml.nn.Lambda(function(x, training)
    calls = calls + 1
    return x * 2
  end, "Double"))
  local x = ml.randn(2, 3):requires_grad()
  local y = m(x)
  y:sum():backward()
  T.check(calls == 1 and x.grad ~= nil, "runs and differentiates")
  T.check(tostring(m):find("Double"), "named in the tree")
  T.raises(function() ml.nn.Lambda(function() return 1 end)(ml.ones(1)) end, "returned a number, not a tensor")
end)

T.test("bad input", function()
  T.raises(function() ml.nn.resnet18{classes = 10}(ml.rand(2, 1, 32, 32)) end,
    "in normalize (Normalize): Normalize: input has shape [2, 1, 32, 32], expected 3 channels")
  T.raises(function() ml.nn.resnet18{normalize = false}(ml.rand(2, 1, 32, 32)) end,
    "in conv1 (Conv2d): conv2d: input has 1 channels, weight expects 3")
  T.raises(function() ml.nn.resnet18{clases = 10} end, "unknown option 'clases'")
  T.raises(function() ml.nn.moe_cnn{backbone = "alexnet"} end, "unknown backbone 'alexnet'")
  T.raises(function() ml.nn.moe_cnn{router = "random"} end, "router must be \"layer\" or \"global\"")
  T.raises(function() ml.nn.resnet18{family = "huge"} end, "unknown family \"huge\"")
  T.raises(function() ml.nn.wrn{depth = 11} end, "depth must be 6n + 4")
  T.raises(function() ml.nn.vit{dim = 30, heads = 4} end, "heads must divide dim")
  T.raises(function() ml.nn.vit{normalize = false}(ml.rand(2, 1, 32, 32)) end,
    "PatchEmbed: input has shape [2, 1, 32, 32], expected [N, 1, 28, 28]")
  T.raises(function() ml.nn.TokenMoE(4, {k = 5, experts = 4}) end, "k = 5 must be between 1 and experts = 4")
  T.raises(function() ml.nn.TokenMoE(4, {experts = 4})(ml.randn(3, 5)) end, "TokenMoE: input has shape [3, 5], expected [..., 4] tokens")
  T.raises(function() ml.nn.MoEConv2d(3, 4, 3, {ratio = 0}) end, "ratio = 0 must be in (0, 1]")
  T.raises(function() ml.nn.MoEConv2d(3, 4, 3, {router = "global"})(ml.randn(1, 3, 4, 4)) end, "routed by a global router")
  T.raises(function() ml.nn.Conv2d(3, 4, 3, {groups = 2}) end, "groups = 2 must divide in (3)")
  T.raises(function() ml.nn.mlp{family = "moe_cnn"} end, "only the dense family applies")
  T.raises(function() ml.nn.cnn{input = {1, 2, 2}} end, "too small")
  T.raises(function() ml.nn.PatchEmbed({1, 28, 28}, 5, 8) end, "patch size 5 must divide the image size 28x28")
end)

T.done()
