-- Routing traces (core/nn/trace.h, bindings/lua_trace.c): what the layers
-- record, forced routing (a trace given back, forced and silenced experts),
-- deterministic tie-breaking, round trips through C and safetensors, the
-- autograd history on request, printing, and every bad input.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local TMP = os.tmpname()

-- A TokenMoE on D = 2 with 3 linear experts, expert e multiplying by e, and a
-- fixed router: every number below can be written down by hand.
local function hand_moe(k)
  local moe = ml.nn.TokenMoE(2, {experts = 3, k = k or 1, capacity_factor = 0, noise_std = 0,
                                 expert = {type = "Linear", ["in"] = 2, out = 2, bias = false}})
  moe:eval()
  ml.no_grad(function()
    for e = 1, 3 do moe:get("experts"):get(e):parameters().weight:copy(ml.eye(2) * e) end
    moe:parameters()["router.weight"]:copy(ml.tensor({{1, 0}, {0, 1}, {-1, -1}}))
  end)
  return moe
end

T.test("the trace records what the layer computed", function()
  local moe = hand_moe(2)
  local x = ml.tensor({{2, 0}, {0, 3}, {-1, -2}, {1, 1}})
  local y, tr = moe:forward(x, {trace = true})
  T.check(#tr == 1, "one MoE layer")
  local l = tr[1]
  T.check(l.layer == "" and l.kind == "token" and l.T == 4 and l.E == 3 and l.K == 2, "name, kind and sizes")
  T.check(tr[""] == l and tr:get(1) == l, "by name and by position, the same (cached) table")
  local logits = ml.matmul(x, ml.tensor({{1, 0}, {0, 1}, {-1, -1}}):t())
  T.close(l.logits, logits, 0, 1e-6, "logits = x S^T")
  T.close(l.probs, logits:softmax(2), 0, 1e-6, "probs = softmax(logits)")
  local want = {{1, 2}, {2, 1}, {3, 1}, {1, 2}}
  T.check(l.experts:equal(ml.tensor(want, "int64")), "top-2 experts, 1-based, ties to the lowest index (token 4)")
  T.close(l.gates, l.probs:gather(2, l.experts), 0, 0, "gates = probs at the selected experts")
  T.check(l.kept:sum():item() == 8 and l.dropped == 0, "no capacity limit: everything kept")
  T.check(l.load:equal(ml.tensor({4, 3, 1})), "load per expert")
  -- the output is the gate-weighted sum of the selected experts, expert e = e * x
  local manual = ml.zeros(4, 2)
  for t = 1, 4 do
    for k = 1, 2 do manual[t] = manual[t] + x[t] * (l.experts[t][k] * l.gates[t][k]) end
  end
  T.close(y, manual, 1e-6, 1e-6, "output = trace-weighted experts")
  T.check(l.aux.importance ~= nil and l.aux.load ~= nil, "auxiliary values")
  local text = tostring(tr)
  T.check(text:find("kind") and text:find("dropped") and text:find("(model)", 1, true) and text:find("4 3 1"),
    "prints as a table: " .. text)
end)

T.test("a forced routing equal to the model's own changes nothing", function()
  ml.seed(21)
  local cases = {
    vmoe = {ml.nn.vmoe{classes = 10, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, capacity_factor = 1},
            ml.rand(3, 1, 28, 28)},
    moe_cnn = {ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, experts = 2}, ml.rand(4, 1, 28, 28)},
    global = {ml.nn.moe_cnn{backbone = "resnet18", width = 0.25, experts = 2, router = "global"}, ml.rand(2, 3, 32, 32)},
    smooth = {ml.nn.SmoothMoE(5, {experts = 3}), ml.randn(6, 5)},
  }
  for name, c in pairs(cases) do
    local model, x = c[1]:eval(), c[2]
    local y, tr = model:forward(x, {trace = true})
    T.check(#tr >= 1, name .. " traced")
    local y2, tr2 = model:forward(x, {trace = true, routing = tr})
    T.close(y2, y, 0, 0, name .. ": same output, bit for bit")
    T.check(tr2 == tr, name .. ": same routing recorded")
  end
  -- training mode (router noise): the same noise and the forced selection give the same output
  local m = cases.vmoe[1]:train()
  ml.seed(8)
  local y, tr = m:forward(cases.vmoe[2], {trace = true})
  ml.seed(8)
  local y2 = m:forward(cases.vmoe[2], {routing = tr})
  T.close(y2, y, 0, 0, "training mode with router noise")
  m:eval()
end)

T.test("forcing and silencing change the output as computed by hand", function()
  local moe = hand_moe(1)
  local x = ml.tensor({{2, 0}, {0, 3}, {-1, -2}})
  local p = ml.matmul(x, ml.tensor({{1, 0}, {0, 1}, {-1, -1}}):t()):softmax(2)
  -- own routing: top-1 = {1, 2, 3}
  local _, tr = moe:forward(x, {trace = true})
  T.check(tr[1].experts:reshape(-1):equal(ml.tensor({1, 2, 3}, "int64")), "own top-1 choices")
  -- every token to expert 3: y = p[t, 3] * 3 x
  local y3, t3 = moe:forward(x, {trace = true, force = {[""] = 3}})
  T.close(y3, x * p:narrow(2, 3, 1) * 3, 1e-6, 1e-7, "forced to expert 3: y = p3 * 3x")
  T.check(t3[1].experts:eq(3):sum():item() == 3, "the trace shows the forced expert")
  -- silence expert 1: token 1 goes to its second choice (expert 2: logits 2, 0, -2)
  local ys, ts = moe:forward(x, {trace = true, silence = {[""] = 1}})
  T.check(ts[1].experts:reshape(-1):equal(ml.tensor({2, 2, 3}, "int64")), "the routing avoids expert 1")
  T.close(ys[1], x[1] * p[1][2] * 2, 1e-6, 1e-7, "token 1 through expert 2, gated by p[1, 2]")
  -- a hand-made selection: tokens to experts 2, 3, 1
  local hand = ml.trace.new({{layer = "", kind = "token", E = 3, experts = {{2}, {3}, {1}}}})
  local yh = moe:forward(x, {routing = hand})
  for t, e in ipairs({2, 3, 1}) do
    T.close(yh[t], x[t] * p[t][e] * e, 1e-6, 1e-7, ("token %d forced to expert %d"):format(t, e))
  end
  -- a dropped choice in the forced trace contributes nothing
  local dropped = ml.trace.new({{layer = "", E = 3, experts = {{2}, {3}, {1}}, kept = ml.tensor({{1}, {0}, {1}}, "int64")}})
  T.close(moe:forward(x, {routing = dropped})[2], ml.zeros(2), 0, 0, "a dropped token gets no expert output")
  -- gradients flow through the gates at the forced experts
  local xr = x:clone():requires_grad()
  local g = ml.grad(moe:forward(xr, {routing = hand}):sum(), xr)
  T.check(g:abs():sum():item() > 0, "input gradient through a forced routing")
end)

T.test("MoEConv2d: forced experts, per-layer and global routers", function()
  ml.seed(5)
  local conv = ml.nn.MoEConv2d(2, 4, 3, {experts = 2, ratio = 0.5}):eval()
  local x = ml.randn(3, 2, 5, 5)
  local _, tr = conv:forward(x, {trace = true})
  local p = tr[1].probs
  T.check(tr[1].kind == "channel" and tr[1].K == 1, "a channel layer")
  local y = conv:forward(x, {force = {[""] = 2}})
  local full = ml.conv2d(x, conv:parameters().weight, nil, {padding = 1})
  for n = 1, 3 do
    T.close(y[n]:narrow(1, 3, 2), full[n]:narrow(1, 3, 2) * p[n][2], 1e-5, 1e-6, "sample in expert 2's block, gated")
    T.close(y[n]:narrow(1, 1, 2), ml.zeros(2, 5, 5), 0, 0, "zeros in expert 1's block")
  end
  conv:set_moe_form("mask")
  T.close(conv:forward(x, {force = {[""] = 2}}), y, 1e-5, 1e-6, "the mask form agrees")
  conv:set_moe_form("sparse")
  -- global router: the forced expert is used in that layer only
  local g = ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, experts = 2, router = "global"}:eval()
  local xg = ml.rand(4, 1, 28, 28)
  local _, tg = g:forward(xg, {trace = true})
  T.check(tg[1].kind == "global", "global kind")
  local name = tg:layers()[1]
  local _, tf = g:forward(xg, {trace = true, force = {[name] = 1}})
  T.check(tf[name].experts:eq(1):sum():item() == 4, "all samples forced to expert 1")
  T.close(tf[name].probs, tg[name].probs, 0, 0, "the router's probabilities are unchanged")
  T.close(tf[name].gates:reshape(-1), tg[name].probs:select(2, 1), 0, 0, "gates read the probabilities at expert 1")
end)

T.test("TokenMoE breaks exact ties by the lowest index in evaluation", function()
  ml.seed(17)
  local moe = ml.nn.TokenMoE(4, {experts = 4, k = 2, capacity_factor = 0, noise_std = 0})
  ml.no_grad(function() moe:parameters()["router.weight"]:zero() end) -- every probability 1/4
  local x = ml.randn(500, 4)
  moe:eval()
  local y1, t1 = moe:forward(x, {trace = true})
  local y2, t2 = moe:forward(x, {trace = true})
  T.check(t1[1].experts:select(2, 1):eq(1):sum():item() == 500 and t1[1].experts:select(2, 2):eq(2):sum():item() == 500,
    "experts 1 and 2 for every token")
  T.close(y1, y2, 0, 0, "a deterministic model is deterministic")
  moe:train() -- random ties stay a training option (the default)
  local _, t3 = moe:forward(x, {trace = true})
  local first = t3[1].experts:select(2, 1)
  for e = 1, 4 do
    local f = first:eq(e):sum():item() / 500
    T.check(math.abs(f - 0.25) < 0.07, ("training: tied first choice %d taken %.3f of the time"):format(e, f))
  end
  local det = ml.nn.TokenMoE(4, {experts = 4, k = 2, capacity_factor = 0, noise_std = 0, random_ties = false})
  ml.no_grad(function() det:parameters()["router.weight"]:zero() end)
  local _, t4 = det:forward(x, {trace = true})
  T.check(t4[1].experts:select(2, 1):eq(1):sum():item() == 500, "random_ties = false: lowest index in training too")
end)

T.test("round trip: Lua <-> C <-> safetensors <-> forced routing", function()
  ml.seed(33)
  local model = ml.nn.vmoe{classes = 10, dim = 16, depth = 4, heads = 2, mlp = 32, experts = 4}:eval()
  local x = ml.rand(2, 1, 28, 28)
  local y, tr = model:forward(x, {trace = true})
  -- Lua tables -> C trace
  local list = {}
  for i = 1, #tr do list[i] = tr[i] end
  local rebuilt = ml.trace.new(list)
  T.check(rebuilt == tr and rebuilt:equal(tr), "rebuilt from its layer tables")
  for i = 1, #tr do
    T.close(rebuilt[i].probs, tr[i].probs, 0, 0, "probs kept")
    T.close(rebuilt[i].gates, tr[i].gates, 0, 0, "gates kept")
    T.near(rebuilt[i].aux.load, tr[i].aux.load, 1e-12, "aux kept")
  end
  -- C trace -> safetensors -> C trace
  rebuilt:save(TMP)
  local loaded = ml.trace.load(TMP)
  T.check(loaded == tr and #loaded == 2 and loaded:layers()[2] == "blocks.3.mlp", "loaded from the file")
  T.close(loaded[2].logits, tr[2].logits, 0, 0, "logits in the file")
  local st, meta = ml.io.load_safetensors(TMP)
  T.check(st["0.experts"]:equal(tr[1].experts - 1), "the file holds 0-based ids")
  T.check(meta.trace and meta.trace:find('"kind":"token"', 1, true), "layers described in the metadata")
  -- the loaded trace as a forced routing
  T.close(model:forward(x, {routing = loaded}), y, 0, 0, "the loaded trace forces the same output")
  -- an edited selection changes the routing of that layer only
  local edited = {}
  for i = 1, #tr do edited[i] = tr[i] end
  local l1 = tr[1]
  local shifted = l1.experts:totable()
  for _, row in ipairs(shifted) do
    for k = 1, #row do row[k] = row[k] % 4 + 1 end
  end
  shifted = ml.tensor(shifted, "int64")
  edited[1] = {layer = l1.layer, kind = l1.kind, E = l1.E, experts = shifted}
  local _, t2 = model:forward(x, {trace = true, routing = ml.trace.new(edited)})
  T.check(t2[1].experts:equal(shifted) and t2[2].experts:equal(tr[2].experts), "edited layer forced")
  T.check(t2 ~= tr, "and the traces differ")
  os.remove(TMP)
end)

T.test("trace_grad: logits, probabilities and gates keep their autograd history", function()
  ml.seed(2)
  local model = ml.nn.vmoe{classes = 10, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4}:eval()
  local x = ml.rand(2, 1, 28, 28):requires_grad()
  local _, plain = model:forward(x, {trace = true})
  T.check(not plain[1].probs:needs_grad(), "detached by default")
  local _, tr = model:forward(x, {trace_grad = true})
  T.check(tr ~= nil and tr[1].probs:needs_grad() and tr[1].gates:needs_grad(), "kept on request")
  -- d/dx of the router's top-1 probability mass, through the trace
  local g = ml.grad(tr[1].probs:max(2):sum(), x)
  T.check(g:abs():sum():item() > 0, "an objective on the routing differentiates to the input")
  local conv = ml.nn.moe_cnn{backbone = "cnn", input = {1, 28, 28}, experts = 2}:eval()
  local xc = ml.rand(2, 1, 28, 28):requires_grad()
  local _, tc = conv:forward(xc, {trace_grad = true})
  T.check(ml.grad(tc[1].logits:sum(), xc):abs():sum():item() > 0, "channel MoE logits too")
end)

T.test("ml.extend: the seam for methods and printers", function()
  ml.extend("Trace", {n_layers = function(t) return #t end})
  local _, tr = hand_moe():forward(ml.randn(2, 2), {trace = true})
  T.check(tr:n_layers() == 1, "a new trace method")
  T.raises(function() ml.extend("Gadget", {}) end, "extend: no object kind 'Gadget'")
  T.raises(function() ml.extend("Trace", {__gc = print}) end, "__gc of a Trace belongs to the bindings")
  T.raises(function() ml.extend("Trace", {n = 3}) end, "entries must be name = function")
end)

T.test("bad input", function()
  local moe = hand_moe()
  local x = ml.randn(3, 2)
  local _, tr = moe:forward(x, {trace = true})
  local vm = ml.nn.vmoe{classes = 10, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4}:eval()
  local xv = ml.rand(2, 1, 28, 28)
  local _, tv = vm:forward(xv, {trace = true})
  T.raises(function() vm:forward(xv, {routing = tr}) end,
    "in blocks.1.mlp (TokenMoE): TokenMoE: the forced routing has no layer 'blocks.1.mlp' (a trace of another model?)")
  T.raises(function() moe:forward(x, {routing = tv}) end, "the forced routing has no layer '(the model itself)'")
  T.raises(function() vm:forward(ml.rand(3, 1, 28, 28), {routing = tv}) end,
    "the forced routing of layer 'blocks.1.mlp' has 100 items, this forward routes 150 (another batch size?)")
  local wrong_e = ml.trace.new({{layer = "", E = 4, experts = {{1}, {1}, {1}}}})
  T.raises(function() moe:forward(x, {routing = wrong_e}) end,
    "layer '(the model itself)' is token with 4 experts, k = 1; this layer is token with 3 experts, k = 1")
  local extra = ml.trace.new({{layer = "", E = 3, experts = {{1}, {1}, {1}}}, {layer = "other", E = 3, experts = {{1}}}})
  T.raises(function() moe:forward(x, {routing = extra}) end,
    "forward: the forced routing has a layer 'other' that this model did not run")
  T.raises(function() moe:forward(x, {routing = 3}) end, "forward: routing must be a routing trace")
  T.raises(function() moe:forward(x, {force = {[""] = 4}}) end, "cannot force expert 4 of layer '(the model itself)': it has 3 experts")
  T.raises(function() moe:forward(x, {force = {nope = 1}}) end, "forward: no MoE layer 'nope' to force expert 1 in")
  T.raises(function() moe:forward(x, {silence = {[""] = {1, 2, 3}}}) end, "needs 1 experts per item, but 3 of its 3 experts are silenced")
  T.raises(function() moe:forward(x, {force = {[""] = 2}, silence = {[""] = 2}}) end, "expert 2 of layer '(the model itself)' is both forced and silenced")
  T.raises(function() moe:forward(x, {routing = tr, force = {[""] = 2}}) end, "has a forced routing; it cannot also force an expert")
  T.raises(function() moe:forward(x, {force = {[""] = "two"}}) end, "force[\"\"] must be an expert number (1-based), got string")
  T.raises(function() ml.nn.SmoothMoE(2, {experts = 3})(ml.randn(2, 2), {force = {[""] = 1}}) end,
    "forcing or silencing an expert applies to sparse layers")
  -- hand-made traces
  T.raises(function() ml.trace.new({{layer = "a", E = 3, experts = {{4}}}}) end, "item 1 selects expert 3 of 3")
  T.raises(function() ml.trace.new({{layer = "a", E = 3, experts = {{1, 1}}}}) end, "item 1 selects expert 0 twice")
  T.raises(function() ml.trace.new({{layer = "a", E = 3, experts = {{1}}, kept = {{2}}}}) end, "kept flags must be 0 or 1, got 2")
  T.raises(function() ml.trace.new({{layer = "a", experts = {{1}}}}) end, "the number of experts is unknown")
  T.raises(function() ml.trace.new({{layer = "a", E = 3, experts = {{1}}, probs = ml.rand(2, 3)}}) end,
    "probs must be float32 [1, 3], got float32 [2, 3]")
  T.raises(function() ml.trace.new({{layer = "a", kind = "dense", E = 3, experts = {{1}}}}) end, "unknown layer kind 'dense'")
  T.raises(function() ml.trace.new({{E = 3, experts = {{1}}}}) end, "layer 1 needs its name")
  T.raises(function() ml.trace.new({{layer = "a", E = 3}}) end, "layer 1 needs experts [T, K]")
  T.raises(function() ml.trace.new({{layer = "a", E = 3, experts = {{1}}, colour = 1}}) end, "unknown option 'colour'")
  T.raises(function() tr:get("nope") end, "trace: no layer 'nope' in this trace (its layers: '')")
  T.raises(function() tr:compatible(tv) end, "trace:compatible: layer 1 is '' in one trace and 'blocks.1.mlp' in the other")
  local _, tr4 = moe:forward(ml.randn(4, 2), {trace = true})
  T.raises(function() tr:compatible(tr4) end, "layer '' routed 3 items in one trace and 4 in the other (different batch sizes?)")
  T.check(tr ~= tr4 and not tr:equal(tr4), "traces of different batch sizes differ")
  -- files
  ml.io.save_safetensors(TMP, {a = ml.zeros(2)}, {})
  T.raises(function() ml.trace.load(TMP) end, "no routing trace in it")
  os.remove(TMP)
  T.raises(function() ml.trace.load("/nonexistent/trace.safetensors") end, "/nonexistent/trace.safetensors")
end)

T.done()
