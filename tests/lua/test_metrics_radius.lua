-- The certified routing radius is never beaten: on random models of every
-- supported kind (a lone router, token MoEs under LayerNorm and MoEs, soft
-- routing below sparse, a small V-MoE with and without capacity limits,
-- MoE-CNNs with per-layer and global routers, a ResNet) and on a briefly
-- trained MoE-CNN, a PGD attack on the routing itself (several restarts,
-- every step checked) never changes an item's top-K selection while every
-- input stays within its certified radius; the same attack does change the
-- routing with a larger budget (it is not a weak attack), and a lone linear
-- router is beaten just past its radius (the radius is exact there).
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

-- The routing margin of every item of `layer` at xin: the smallest logit of
-- its clean selection minus the largest other logit (< 0: the selection changed).
local function margins(model, layer, xin, sel, mask)
  local _, t = model:forward(xin, {trace_grad = true})
  local logits = t[layer].logits
  local lowest = logits:gather(2, sel):min(2)
  local other = (logits - mask * 1e6):max(2)
  return lowest - other
end

-- PGD on the routing of one layer, per-sample budgets eps [B] (norm "linf"
-- or "l2"); returns the samples whose routing changed at some step.
local function router_pgd(model, layer, x, eps, norm, opts)
  local _, t0 = model:forward(x, {trace = true})
  local l = t0[layer]
  local sel = l.experts
  local mask = ml.one_hot(sel:reshape(-1), l.E):reshape(l.T, l.K, l.E):sum(2)
  local B = x:size(1)
  local per = l.T // B
  local shape = {B}
  for d = 2, x:dim() do shape[d] = 1 end
  local e = eps:reshape(shape)
  local changed = {}
  local function note(m)
    local worst = m:reshape(B, per):min(2)
    for b = 1, B do if worst[b] < 0 then changed[b] = true end end
  end
  local function project(d)
    if norm == "linf" then return d:maximum(-e):minimum(e) end
    local n = d:reshape(B, -1):norm(2, 2):reshape(shape)
    return d * (e / (n + 1e-30)):clamp(0, 1)
  end
  for r = 1, opts.restarts do
    local d
    if r == 1 then d = ml.zeros_like(x)
    else d = project((ml.rand_like(x) * 2 - 1) * (norm == "linf" and e or e * 3)) end
    for _ = 1, opts.steps do
      local dv = d:detach():requires_grad()
      local m = margins(model, layer, x + dv, sel, mask)
      note(m:detach())
      local g = ml.grad(-m:reshape(B, per):min(2):sum(), dv)
      local step
      if norm == "linf" then step = g:sign() * e * opts.frac
      else step = g * (e * opts.frac / (g:reshape(B, -1):norm(2, 2):reshape(shape) + 1e-30)) end
      d = project(dv:detach() + step)
    end
    note(ml.no_grad(function() return margins(model, layer, x + d, sel, mask) end))
  end
  return changed
end

local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

-- Attacks every layer (or the listed ones) within the certified radius; then
-- with `big` (a number, or a function of the radius) the attack must succeed.
local function check_sound(name, model, x, opts)
  model:eval()
  local norm = opts.norm or "linf"
  local r = ml.metrics.routing_radius(model, x, {norm = norm})
  local layers = opts.layers or r.trace:layers()
  local attack = {restarts = opts.restarts or 3, steps = opts.steps or 15, frac = 0.3}
  local beaten = 0
  for _, layer in ipairs(layers) do
    local rad = r.sample_radius[layer]:clone()
    T.check(rad:ge(0):float():min():item() == 1, name .. ": radii are >= 0")
    -- an infinite radius (k = E) cannot be attacked with an infinite budget: cap it
    rad = rad:minimum(ml.full({rad:size(1)}, 10))
    local changed = router_pgd(model, layer, x, rad, norm, attack)
    beaten = beaten + count(changed)
    T.check(count(changed) == 0, ("%s, layer %s: routing changed within the certified radius in %d samples"):format(
      name, layer, count(changed)))
  end
  if opts.big then
    local layer = layers[#layers]
    local rad = r.sample_radius[layer]
    local eps = type(opts.big) == "function" and opts.big(rad) or ml.full({x:size(1)}, opts.big)
    local changed = router_pgd(model, layer, x, eps, norm, attack)
    T.check(count(changed) >= (opts.min_changed or 1),
      ("%s: a larger budget changes the routing (%d samples)"):format(name, count(changed)))
  end
  return r, beaten
end

T.test("a lone linear router: sound and beaten just past the radius", function()
  ml.seed(21)
  local moe = ml.nn.TokenMoE(8, {experts = 6, k = 2, capacity_factor = 0})
  local x = ml.randn(16, 8)
  for _, norm in ipairs({"linf", "l2"}) do
    local r = check_sound("router " .. norm, moe, x, {norm = norm, big = function(rad) return rad * 1.02 end,
                                                     min_changed = 14})
    T.check(r[1].exact, "exact")
  end
end)

T.test("bounds that are tight: an orthogonal map before a router, a MoE convolution's pooled router", function()
  ml.seed(27)
  -- W = 2 x a signed permutation: ||W^T v|| = 2 ||v|| for every v, so the l2 radius is the router's / 2
  local lin = ml.nn.Linear(6, 6)
  local perm = ml.randperm(6)
  ml.no_grad(function()
    local W = lin:parameters()["weight"]
    W:zero()
    for i = 1, 6 do W[i][perm[i]] = (i % 2 == 0) and 2 or -2 end
  end)
  local m = ml.nn.Sequential(lin, ml.nn.TokenMoE(6, {experts = 5, k = 2, capacity_factor = 0}))
  local x = ml.randn(12, 6)
  local r = check_sound("orthogonal + router", m, x, {norm = "l2", big = function(rad) return rad * 1.02 end,
                                                      min_changed = 10})
  T.check(not r[1].exact, "not the input itself")
  T.close(r.radius[r[1].layer], r.router_radius[r[1].layer] / 2, 1e-5, 0, "radius = router radius / ||W||")
  -- a MoE convolution on the input: its router reads the average pool, 1/sqrt(HW)-Lipschitz and tight
  -- for perturbations constant over each plane
  local conv = ml.nn.MoEConv2d(2, 4, 3, {experts = 3, ratio = 0.5})
  local xc = ml.randn(10, 2, 5, 5)
  local rc = check_sound("MoEConv2d", conv, xc, {norm = "l2", big = function(rad) return rad * 1.02 end,
                                                 min_changed = 8})
  T.close(rc.radius[""], rc.router_radius[""] * 5, 1e-5, 0, "radius = router radius x sqrt(HW)")
end)

T.test("token MoEs under LayerNorm and a MoE (tokens of 3 per sample)", function()
  ml.seed(22)
  local m = ml.nn.Sequential(ml.nn.Linear(10, 12), ml.nn.ReLU(),
    ml.nn.TokenMoE(12, {experts = 4, k = 1, capacity_factor = 0, expert = ml.nn.Linear(12, 12)}),
    ml.nn.LayerNorm(12), ml.nn.GELU(), ml.nn.TokenMoE(12, {experts = 4, k = 2, capacity_factor = 0}))
  local x = ml.randn(12, 3, 10)
  check_sound("token stack", m, x, {big = 2})
  check_sound("token stack (l2)", m, x, {norm = "l2", big = 6})
end)

T.test("soft routing below sparse routing", function()
  ml.seed(23)
  local m = ml.nn.Sequential(ml.nn.SmoothMoE(8, {experts = 3}),
    ml.nn.TokenMoE(8, {experts = 4, k = 1, capacity_factor = 0}))
  check_sound("smooth + token", m, ml.randn(10, 8), {big = 2})
end)

T.test("a small V-MoE, with and without capacity limits", function()
  ml.seed(24)
  local x = ml.rand(6, 1, 28, 28)
  local free = ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, moe_every = 1, capacity_factor = 0}
  check_sound("vmoe", free, x, {big = 0.3})
  local capped = ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, moe_every = 1}
  check_sound("vmoe with capacity", capped, x, {big = 0.3})
end)

-- Random routers of a MoE-CNN send every input to one expert (pooled ReLU
-- features are all positive): calibrated, they split the batch.
local function calibrated(cfg, x)
  return ml.nn.calibrate_routers(ml.nn.moe_cnn(cfg), x)
end

T.test("MoE-CNNs: per-layer and global routers, a ResNet", function()
  ml.seed(25)
  local x = ml.rand(8, 1, 28, 28)
  check_sound("moe_cnn", calibrated({backbone = "cnn", experts = 2}, x), x, {big = 0.5})
  check_sound("moe_cnn (l2)", calibrated({backbone = "cnn", experts = 3}, x), x, {norm = "l2", big = 10})
  check_sound("moe_cnn global", calibrated({backbone = "cnn", experts = 2, router = "global"}, x), x, {big = 0.5})
  local xr = ml.rand(4, 3, 32, 32)
  local res = calibrated({backbone = "resnet18", experts = 2, width = 0.25}, xr)
  check_sound("resnet18", res, xr, {layers = {"layer1.0.conv1", "layer2.1.conv2", "layer4.1.conv2"}, restarts = 2,
                                    steps = 10, big = 0.5})
end)

T.test("a briefly trained MoE-CNN", function()
  ml.seed(26)
  local data = ml.data.mnist()
  local m = ml.nn.moe_cnn{backbone = "cnn", experts = 2, importance_weight = 0.01}
  ml.train.fit(m, data.train, {epochs = 1, batch = 64, batches = 12, lr = 0.05, quiet = true, seed = 1})
  local x = data.test:batch(1, 16)
  local r = check_sound("trained moe_cnn", m, x, {big = 0.3, restarts = 4, steps = 20})
  T.check(r[1].p50 > 0, "a trained model certifies a radius > 0 for most inputs")
end)

T.done()
