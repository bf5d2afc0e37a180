-- ml.attack on the parts of an MoE: routing objectives, target = "router" |
-- "experts" | "steer_then_break", selection_grad = "ste", router_noise, the
-- doctor's router-gradient check, and the errors of bad options.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function tiny_vmoe(opts)
  ml.seed(4)
  local o = {input = {1, 8, 8}, patch = 4, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, k = 2,
             moe_every = 1, classes = 3}
  for k, v in pairs(opts or {}) do o[k] = v end
  return ml.nn.vmoe(o):eval()
end

local function batch(B)
  ml.seed(5)
  return ml.rand(B, 1, 8, 8), ml.randint(1, 3, {B})
end

local function mean_change(rep)
  local s = 0
  for _, l in ipairs(rep.routing) do s = s + l.change end
  return s / #rep.routing
end

-- A small V-MoE trained briefly on the bundled MNIST subset (a few seconds).
local trained
local function trained_vmoe()
  if trained then return table.unpack(trained) end
  ml.seed(0)
  local data = ml.data.mnist("data/mnist-10k")
  local m = ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, patch = 7, experts = 4, k = 2, moe_every = 1}
  ml.seed(1)
  ml.train.fit(m, data.train:subset(1, 1000), {epochs = 1, batch = 50, optimizer = "adam", lr = 3e-3, seed = 2,
                                              quiet = true})
  m:eval()
  local x, y = data.test:batch(1, 32)
  trained = {m, x, y}
  return m, x, y
end

T.test("router-only attacks on a router that ignores the input change no routing", function()
  local m = tiny_vmoe()
  ml.no_grad(function() for _, p in pairs(m:parameters("router")) do p:fill(0) end end) -- every token: experts 1, 2
  local x, y = batch(6)
  for _, obj in ipairs({"routing_kl", "routing_margin"}) do
    local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 5, random_start = true, target = "router",
                                            objective = obj})
    T.check(not ml.equal(xa, x), obj .. ": the input moved (random start)")
    T.check(rep.target == "router" and rep.objective == obj, obj .. ": the report names target and objective")
    T.check(rep.routing_changed == 0, obj .. ": no example changed routing, got " .. rep.routing_changed)
    for _, l in ipairs(rep.routing) do T.check(l.change == 0, obj .. ": layer " .. l.layer .. " unchanged") end
    local _, tc = m:forward(x, {trace = true})
    local _, ta = m:forward(xa, {trace = true})
    T.check(tc:equal(ta), obj .. ": the traces of x and x_adv are equal")
  end
end)

T.test("router-only attacks report routing and prediction changes that match the traces", function()
  local m = tiny_vmoe()
  local x, y = batch(6)
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 10, target = "router"})
  T.check(rep.objective == "routing_kl", "routing_kl by default, got " .. rep.objective)
  local zc, tc = m:forward(x, {trace = true})
  local za, ta = m:forward(xa, {trace = true})
  local rc = ml.metrics.routing_change(tc, ta, {batch = 6}) -- the analysis' own reading of the traces
  T.check(rep.routing_changed == rc.sample_changed:sum():item() and rep.routing_changed > 0,
          "examples that changed routing: " .. rep.routing_changed)
  for i, l in ipairs(rep.routing) do
    T.near(l.change, rc[i].changed / rc[i].items, 1e-12, "layer " .. i .. " as ml.metrics.routing_change counts it")
  end
  -- by hand: an item changed when its set of kept experts differs
  local function kept_set(layer, t)
    local s = {}
    for k = 1, 2 do if layer.kept[t][k] ~= 0 then s[#s + 1] = layer.experts[t][k] end end
    table.sort(s)
    return table.concat(s, ",")
  end
  local differ = 0
  for i, name in ipairs(tc:layers()) do
    local c = 0
    for t = 1, tc[name].T do if kept_set(tc[name], t) ~= kept_set(ta[name], t) then c = c + 1 end end
    T.near(rep.routing[i].change, c / tc[name].T, 1e-12, "change rate of " .. name .. " by hand")
    differ = differ + c
  end
  T.check(differ > 0, "some item changed")
  local pc = zc:argmax(2):ne(za:argmax(2)):sum():item()
  T.check(rep.prediction_changed == pc, ("prediction changed %d, by hand %d"):format(rep.prediction_changed, pc))
  T.check(tostring(rep):find("target router: routing changed for " .. rep.routing_changed .. " of 6 examples", 1, true)
          and tostring(rep):find("blocks.1.mlp", 1, true), "print(report) shows the routing")
  local path = os.tmpname()
  ml.attack.save(path, rep)
  local r = ml.attack.load(path)
  os.remove(path)
  T.check(r.target == "router" and r.routing_changed == rep.routing_changed and r.selection_grad == "model"
          and r.routing[2].layer == "blocks.1.mlp" and r.routing[2].change == rep.routing[2].change,
          "ml.attack.save keeps the routing report")
end)

T.test("the routing objectives are the KL and the margin violation summed over items and layers", function()
  local m = tiny_vmoe()
  local x, y = batch(5)
  local _, tc = m:forward(x, {trace = true})
  for _, obj in ipairs({"routing_kl", "routing_margin"}) do
    local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, target = "router", objective = obj})
    local _, ta = m:forward(xa, {trace = true})
    local want = {0, 0, 0, 0, 0}
    for _, name in ipairs(tc:layers()) do
      local c, a = tc[name], ta[name]
      local n = c.T // 5
      for t = 1, c.T do
        local v
        if obj == "routing_kl" then
          v = ml.kl_div(c.logits:narrow(1, t, 1), a.logits:narrow(1, t, 1)):item()
        else
          local sel, lo, hi = {}, math.huge, -math.huge
          for k = 1, c.K do sel[c.experts[t][k]] = true end
          for e = 1, c.E do
            local z = a.logits[t][e]
            if sel[e] then lo = math.min(lo, z) else hi = math.max(hi, z) end
          end
          v = math.min(hi - lo, 0)
        end
        local ex = (t - 1) // n + 1
        want[ex] = want[ex] + v
      end
    end
    T.close(rep.loss, ml.tensor(want), 1e-4, 1e-5, obj .. " per example, by hand from the traces")
  end
end)

T.test("on_step with trace = true: the trace of the batch it reports", function()
  local m = tiny_vmoe()
  local x, y = batch(5)
  local steps, same = 0, 0
  ml.attack.pgd(m, x, y, {eps = 0.2, steps = 4, target = "router", trace = true, on_step = function(_, info)
    steps = steps + 1
    local _, t = ml.no_grad(function() return m:forward(info.x_adv:clone(), {trace = true}) end)
    if t:equal(info.trace) then same = same + 1 end
  end})
  T.check(steps == 4 and same == 4, ("the routing of info.x_adv at every step (%d of %d)"):format(same, steps))
end)

T.test("experts-only attacks keep the clean routing at every step", function()
  local m = tiny_vmoe()
  local x, y = batch(6)
  local _, tc = m:forward(x, {trace = true})
  local steps, same = 0, 0
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.2, steps = 8, target = "experts", trace = true,
                                          on_step = function(_, info)
    steps = steps + 1
    if tc:equal(info.trace) then same = same + 1 end
  end})
  T.check(steps == 8 and same == 8, ("the trace of every step is the clean one (%d of %d)"):format(same, steps))
  T.check(rep.routing_changed == 0 and rep.target == "experts", "no routing change reported")
  T.check(not ml.equal(xa, x), "the input moved")
  local za = ml.no_grad(function() return m:forward(xa, {routing = tc}) end)
  T.check(ml.equal(za:argmax(2), rep.pred_adv), "evaluated on the clean pathway")
  T.check(rep.robust_accuracy < rep.clean_accuracy, "the pathway alone can be attacked")
  -- restarts attack the robust examples again, a subset: its routing is the clean routing of those rows
  local subsets, moved = 0, 0
  local _, rr = ml.attack.pgd(m, x, y, {eps = 0.05, steps = 3, restarts = 3, random_start = true, target = "experts",
                                        trace = true, on_step = function(_, info)
    local rows = info.index and info.index:totable() or {1, 2, 3, 4, 5, 6}
    if #rows < 6 then subsets = subsets + 1 end
    for _, name in ipairs(tc:layers()) do
      local c, t = tc[name], info.trace[name]
      local n = c.T // 6
      for i, row in ipairs(rows) do
        for j = 1, n do
          for k = 1, c.K do
            if c.experts[(row - 1) * n + j][k] ~= t.experts[(i - 1) * n + j][k] then moved = moved + 1 end
          end
        end
      end
    end
  end})
  T.check(subsets > 0 and moved == 0 and rr.routing_changed == 0,
          ("restarts on subsets (%d steps) keep the clean routing (%d choices differ)"):format(subsets, moved))
  -- free routing of the same x_adv moves: the frozen routing is what kept it
  local _, tf = m:forward(xa, {trace = true})
  T.check(not tc:equal(tf), "x_adv routes differently when the routing is free")
end)

T.test("routing objectives change more routing than CE on a small trained V-MoE", function()
  local m, x, y = trained_vmoe()
  local _, ce = ml.attack.pgd(m, x, y, {eps = 0.03, steps = 10})
  local base = mean_change(ce)
  for _, obj in ipairs({"routing_kl", "routing_margin"}) do
    local _, r = ml.attack.pgd(m, x, y, {eps = 0.03, steps = 10, target = "router", objective = obj})
    T.check(mean_change(r) > base, ("%s changes %.3f of the routing, CE %.3f"):format(obj, mean_change(r), base))
  end
end)

T.test("steer_then_break steers to the chosen expert, then breaks", function()
  local m = tiny_vmoe()
  local x, y = batch(8)
  local _, tc = m:forward(x, {trace = true})
  local function on_3(trace)
    local f = {}
    for i, name in ipairs(trace:layers()) do f[i] = trace[name].experts:select(2, 1):eq(3):float():mean():item() end
    return f
  end
  local clean, steered, parts = on_3(tc), nil, {}
  local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.5, steps = 20, steer_steps = 10, target = "steer_then_break",
                                          expert = 3, trace = true, on_step = function(step, info)
    parts[info.attack] = (parts[info.attack] or 0) + 1
    if info.attack == "steer" and step == info.total then steered = on_3(info.trace) end
  end})
  T.check(parts.steer == 10 and parts.pgd == 10, "10 steps of steering, then 10 of PGD on CE")
  T.check(rep.objective == "ce" and rep.target == "steer_then_break", "the report names the target, breaks with CE")
  for i, l in ipairs(rep.routing) do
    T.check(l.expert == 3, "layer " .. l.layer .. " steered to expert 3")
    T.check(steered[i] > clean[i], ("%s: after steering expert 3 is the first choice of %.2f of the items, clean "
                                    .. "%.2f"):format(l.layer, steered[i], clean[i]))
  end
  T.check(rep.robust_accuracy < rep.clean_accuracy, "then the prediction is attacked")
  -- routing_steer alone (router-only) moves the first choices towards the expert
  local _, rs = ml.attack.pgd(m, x, y, {eps = 0.5, steps = 10, target = "router", objective = "routing_steer",
                                        expert = 3})
  for i, l in ipairs(rs.routing) do
    T.check(l.expert == 3 and l.steered > clean[i], ("router-only steering of %s: %.2f, clean %.2f"):format(l.layer,
      l.steered, clean[i]))
  end
end)

T.test("the weakest expert of a layer gives the highest clean loss when forced", function()
  local m = tiny_vmoe()
  local x, y = batch(8)
  local _, rep = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 4, target = "steer_then_break", expert = "weakest"})
  local _, tc = m:forward(x, {trace = true})
  for i, name in ipairs(tc:layers()) do
    local worst, arg = -math.huge, nil
    for e = 1, 4 do
      local z = ml.no_grad(function() return m:forward(x, {force = {[name] = e}}) end)
      local l = ml.cross_entropy(z, y, {reduction = "sum"}):item()
      if l > worst then worst, arg = l, e end
    end
    T.check(rep.routing[i].expert == arg, ("%s: weakest expert %d, by hand %d"):format(name, rep.routing[i].expert,
                                                                                        arg))
  end
end)

-- FGSM l2 without clamp steps eps along grad / |grad| per example: the input gradient's direction, with the
-- model's own selection gradient and with the straight-through one, against the normalised central
-- differences of surrogate(x, ste) (losses [B]); and the straight-through term must change the direction.
local function check_ste_directions(m, x0, y, surrogate)
  local B, h, eps = x0:size(1), 1e-2, 1e-3
  local D = x0:numel() // B
  local function fd_direction(ste)
    local g = ml.zeros(B, D)
    ml.no_grad(function()
      for j = 1, D do
        local d = ml.zeros(B, D)
        d:narrow(2, j, 1):fill(h)
        d = d:reshape(x0:shape())
        g:narrow(2, j, 1):copy(((surrogate(x0 + d, ste) - surrogate(x0 - d, ste)) / (2 * h)):reshape(B, 1))
      end
    end)
    return g / g:norm(2, 2, true)
  end
  local dirs = {}
  for _, sg in ipairs({"model", "ste"}) do
    local xa, rep = ml.attack.fgsm(m, x0, y, {eps = eps, norm = "l2", clamp = false, selection_grad = sg})
    T.check(rep.selection_grad == sg, "the report says " .. sg)
    dirs[sg] = ((xa - x0) / eps):reshape(B, D)
    T.close(dirs[sg], fd_direction(sg == "ste"), 2e-3, 2e-3, sg .. " gradient vs finite differences")
  end
  T.check((dirs.ste - dirs.model):abs():max():item() > 0.05, "the straight-through term changes the gradient")
end

-- The smooth surrogate of a TokenMoE layer whose hard mask m is replaced by
-- m0 + p - p0 (m0, p0 at x0): its gradient at x0 is the straight-through
-- gradient; with the mask held at m0 it is the model's own gradient.
T.test("STE: the selection gradient matches finite differences of the smooth surrogate", function()
  ml.seed(11)
  local D, E, Tk, C = 4, 4, 2, 3
  local moe = ml.nn.TokenMoE(D, {experts = E, k = 2, capacity_factor = 0, noise_std = 0, expert = ml.nn.Linear(D, D)})
  local head = ml.nn.Linear(Tk * D, C)
  local m = ml.nn.Sequential(moe, ml.nn.Flatten(), head):eval()
  local B = 3
  local x0 = ml.rand(B, Tk, D) * 0.5 + 0.25
  local y = ml.randint(1, C, {B})
  local P = m:parameters()
  local Wr = P["0.router.weight"]
  local function probs(x) return ml.softmax(x:matmul(Wr:t()), 3) end -- [B, T, E]
  local _, tr = m:forward(x0, {trace = true})
  local sel = tr[1].experts -- [B*T, 2], 1-based
  local m0 = ml.zeros(B * Tk, E)
  for t = 1, B * Tk do for k = 1, 2 do m0[t][sel[t][k]] = 1 end end
  m0 = m0:reshape(B, Tk, E)
  local p0 = probs(x0)
  local function surrogate(x, ste)
    local p = probs(x)
    local mask = ste and m0 + p - p0 or m0
    local s = ml.zeros(B, Tk, D)
    for e = 1, E do
      local f = x:matmul(P["0.experts." .. (e - 1) .. ".weight"]:t()) + P["0.experts." .. (e - 1) .. ".bias"]
      local w = (mask:narrow(3, e, 1) * p:narrow(3, e, 1))
      s = s + w * f
    end
    return ml.cross_entropy(head(s:reshape(B, Tk * D)), y, {reduction = "none"})
  end
  check_ste_directions(m, x0, y, surrogate)
end)

-- The same for a channel MoE (MoE-CNN's MoEConv2d): sample n's output is p_e(n) times the channels of its
-- expert e(n); the surrogate weighs expert e's channels of the full convolution by (m0_e + p_e - p0_e) p_e.
T.test("STE on a channel MoE: the gradient matches finite differences of the smooth surrogate", function()
  ml.seed(12)
  local Cin, Cout, H, E, C, B = 2, 4, 4, 2, 3, 4
  local layer = ml.nn.MoEConv2d(Cin, Cout, 3, {experts = E, ratio = 0.5})
  local head = ml.nn.Linear(Cout * H * H, C)
  local m = ml.nn.Sequential(layer, ml.nn.Flatten(), head):eval()
  local conv = ml.nn.Conv2d(Cin, Cout, 3, {padding = 1})
  ml.no_grad(function()
    conv:parameters().weight:copy(m:parameters()["0.weight"])
    -- a router that matters: logits +-20 (mean of channel 1 - mean of channel 2), balanced near x0
    m:parameters()["0.router.weight"]:copy(ml.tensor({{20, -20}, {-20, 20}}))
  end)
  local x0 = ml.rand(B, Cin, H, H) * 0.1 + 0.45
  local y = ml.randint(1, C, {B})
  local function probs(x) return select(2, m:forward(x, {trace = true}))[1].probs end
  local p0 = probs(x0)
  local m0 = ml.one_hot(select(2, m:forward(x0, {trace = true}))[1].experts:reshape(B), E):float()
  local owns = ml.zeros(E, Cout) -- expert e owns channels 2e-1, 2e (ratio 0.5 of 4)
  for e = 1, E do owns[e][2 * e - 1] = 1; owns[e][2 * e] = 1 end
  local function surrogate(x, ste)
    local p = probs(x)
    local w = (ste and m0 + p - p0 or m0) * p -- [B, E]
    local s = w:matmul(owns):reshape(B, Cout, 1, 1) * conv(x)
    return ml.cross_entropy(head(s:reshape(B, Cout * H * H)), y, {reduction = "none"})
  end
  check_ste_directions(m, x0, y, surrogate)
end)

T.test("the doctor flags MoE layers whose router receives no gradient", function()
  local x, y = batch(6)
  local flat = tiny_vmoe{k = 1, renormalize = true} -- top-1, renormalised: every gate is 1
  local d = ml.attack.check(flat, x, y, {eps = 0.1, cheap = true})
  local flagged = {}
  for _, f in ipairs(d.flags) do
    if f.name == "router_no_gradient" then
      flagged[#flagged + 1] = f
      T.check(f.remedy:find("selection_grad", 1, true) and f.remedy:find("target = \"router\"", 1, true),
              "the remedy names the router attacks")
    end
  end
  T.check(#flagged == 2, "both MoE layers flagged, got " .. #flagged)
  T.check(flagged[1] and flagged[1].message:find("blocks.0.mlp", 1, true), "the message names the layer")
  local ok = ml.attack.check(tiny_vmoe(), x, y, {eps = 0.1, cheap = true})
  for _, f in ipairs(ok.flags) do T.check(f.name ~= "router_no_gradient", "top-2 routers get gradient") end
end)

T.test("selection_grad reaches every gradient attack", function()
  local m = tiny_vmoe{k = 1, renormalize = true, classes = 4} -- the routers get gradient only through the STE
  local x = batch(8)
  local y = ml.no_grad(function() return m(x):argmax(2) end) -- every example correct: all are attacked
  for _, a in ipairs({{"apgd-t", {n_targets = 1}}, {"fab-t", {n_targets = 1}}, {"apgd-dlr", {}},
                      {"autoattack", {version = "custom", attacks = {"apgd-ce"}, quiet = true, checks = false}}}) do
    local o = {eps = 0.05, steps = 3}
    for k, v in pairs(a[2]) do o[k] = v end
    local xm = ml.attack.run(a[1], m, x, y, o)
    o.selection_grad = "ste"
    local xs, rs = ml.attack.run(a[1], m, x, y, o)
    T.check(rs.selection_grad == "ste" and not ml.equal(xm, xs), a[1] .. ": the straight-through gradient is used")
  end
end)

T.test("router_noise: the gradient passes draw the training noise, the evaluation stays clean", function()
  local m = tiny_vmoe{noise_std = 4}
  local x, y = batch(6)
  local a1, r1 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, seed = 1})
  local a2 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, seed = 2})
  T.check(ml.equal(a1, a2), "without router noise the seed does not matter")
  local n1, rn = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, seed = 1, router_noise = true, eot = 2})
  local n2 = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, seed = 2, router_noise = true, eot = 2})
  local n1b = ml.attack.pgd(m, x, y, {eps = 0.1, steps = 3, seed = 1, router_noise = true, eot = 2})
  T.check(not ml.equal(n1, n2), "with router noise the draws differ")
  T.check(ml.equal(n1, n1b), "the same seed, the same draws")
  T.check(rn.router_noise and rn.cost.backwards == 2 * r1.cost.backwards, "EOT: two noisy draws per step")
  T.check(rn.clean_accuracy == r1.clean_accuracy, "the clean evaluation has no noise")
  local z = ml.no_grad(function() return m(n1) end)
  T.check(ml.equal(z:argmax(2), rn.pred_adv), "x_adv is evaluated without noise")
  T.check(not m:is_training(), "eval mode kept")
end)

T.test("bad router-attack options give clear errors", function()
  local m = tiny_vmoe()
  local x, y = batch(4)
  local dense = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(64, 3))
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = "routers"}) end,
           "pgd: unknown target 'routers' (use \"model\", \"router\", \"experts\" or \"steer_then_break\")")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = 3}) end,
           "pgd: target must be \"model\", \"router\", \"experts\", \"steer_then_break\" or a tensor of target classes")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, selection_grad = "hard"}) end,
           "pgd: selection_grad must be \"model\"")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = "router", objective = "ce"}) end,
           "pgd: target = \"router\" changes only the routing: use a routing objective")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = "experts", objective = "routing_kl"}) end,
           "pgd: target = \"experts\" freezes the routing")
  T.raises(function() ml.attack.pgd(dense, x, y, {eps = 0.1, target = "experts"}) end,
           "pgd: target = \"experts\" attacks a part of an MoE, but the model has no MoE layer")
  T.raises(function() ml.attack.pgd(dense, x, y, {eps = 0.1, objective = "routing_kl"}) end,
           "routing_kl: the model reports no routing (no MoE layer)")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = "steer_then_break", expert = 5}) end,
           "pgd: expert 5 is out of range: layer 'blocks.0.mlp' has 4 experts")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, target = "steer_then_break", expert = "best"}) end,
           "pgd: expert must be an expert number (1-based) or \"weakest\", got best")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, expert = 2}) end,
           "pgd: expert applies to target = \"steer_then_break\" and objective = \"routing_steer\"")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, steps = 4, target = "steer_then_break", steer_steps = 4}) end,
           "pgd: steer_steps = 4 leaves no step to break the prediction (steps = 4)")
  T.raises(function() ml.attack.pgd(m, x, y, {eps = 0.1, steer_steps = 2}) end,
           "pgd: steer_steps applies to target = \"steer_then_break\"")
  T.raises(function() ml.attack.square(m, x, y, {eps = 0.1, router_noise = true}) end, "square: unknown option")
  T.raises(function() ml.attack.apgd_t(m, x, y, {eps = 0.1, target = "router"}) end, "apgd-t: unknown option")
  T.raises(function() ml.attack.loss("routing_kl", ml.randn(2, 3), ml.tensor({1, 2}):long()) end,
           "routing_kl: reads the routing of a forward; give it to an attack")
end)

T.done()
