-- Routing (top-K, capacity, priority, dropping, tie-breaking), dispatch ops and
-- the routers' auxiliary losses, against hand-computed examples.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function tbl(t) return t:totable() end
local function same(a, b, msg)
  T.check(table.concat(a, ",") == table.concat(b, ","), ("%s: got {%s}, expected {%s}"):format(msg,
    table.concat(a, ","), table.concat(b, ",")))
end
local function flat(t2) local o = {} for _, r in ipairs(t2) do for _, v in ipairs(r) do o[#o + 1] = v end end return o end

T.test("capacity and token order", function()
  local p = ml.tensor({{.6, .4}, {.8, .2}, {.3, .7}, {.9, .1}})
  local r = ml.moe.route(p, {k = 1, capacity_factor = 1})
  T.check(r.capacity == 2, "capacity ceil(1*4*1/2) = 2")
  same(flat(tbl(r.experts)), {1, 1, 2, 1}, "top-1 experts")
  same(flat(tbl(r.kept)), {1, 1, 1, 0}, "the last token to expert 1 is dropped")
  same(tbl(r.load:long()), {2, 1}, "load")
  same(tbl(r.token), {1, 2, 3}, "tokens grouped by expert in slot order")
  same(r.offsets, {1, 3, 4}, "offsets")
end)

T.test("batch priority routing", function()
  local p = ml.tensor({{.6, .4}, {.8, .2}, {.3, .7}, {.9, .1}})
  local r = ml.moe.route(p, {k = 1, capacity_factor = 1, batch_priority = true})
  same(flat(tbl(r.kept)), {0, 1, 1, 1}, "the least confident token is dropped")
  same(tbl(r.token), {4, 2, 3}, "slots in priority order")
end)

T.test("top-1 choices take slots before any top-2 choice", function()
  local p = ml.tensor({{.7, .3}, {.6, .4}, {.2, .8}})
  local r = ml.moe.route(p, {k = 2, capacity_factor = 2 / 3})
  T.check(r.capacity == 2, "capacity 2")
  same(flat(tbl(r.experts)), {1, 2, 1, 2, 2, 1}, "experts by rank")
  same(flat(tbl(r.kept)), {1, 1, 1, 0, 1, 0}, "second choices dropped once the experts are full")
  T.check(ml.moe.capacity(6400, 8, 2, 1.25) == 2000, "W4 capacity at T = 6400")
  T.check(ml.moe.capacity(10, 8, 2, 1.25, true) == 4, "rounded up to a multiple of 4")
  local none = ml.moe.route(p, {k = 2})
  same(flat(tbl(none.kept)), {1, 1, 1, 1, 1, 1}, "no capacity limit by default")
end)

T.test("ties broken uniformly at random", function()
  ml.seed(11)
  local n = 4000
  local p = ml.full({n, 2}, 0.5)
  local r = ml.moe.route(p, {k = 1, random_ties = true})
  local first = r.experts:eq(1):sum():item() / n
  T.check(math.abs(first - 0.5) < 0.05, ("expert 1 chosen %.3f of the time"):format(first))
  local p3 = ml.tensor({{0.4, 0.3, 0.3}}):expand(3000, 3):contiguous()
  local r3 = ml.moe.route(p3, {k = 2, random_ties = true})
  local second = r3.experts:select(2, 2)
  T.check(r3.experts:select(2, 1):eq(1):sum():item() == 3000, "the clear winner is always first")
  local f2 = second:eq(2):sum():item() / 3000
  T.check(math.abs(f2 - 0.5) < 0.05, ("tied second choice split %.3f"):format(f2))
  local det = ml.moe.route(p, {k = 1})
  T.check(det.experts:eq(1):sum():item() == n, "without random ties the lowest index wins")
  ml.seed(5) local a = ml.moe.route(p, {k = 1, random_ties = true}).experts
  ml.seed(5) local b = ml.moe.route(p, {k = 1, random_ties = true}).experts
  T.check(a:equal(b), "reproducible under ml.seed")
end)

T.test("auxiliary losses, hand-computed", function()
  local p = ml.tensor({{.9, .1}, {.8, .2}})
  T.near(ml.moe.importance_loss(p):item(), 0.49, 1e-5, "importance CV^2")
  T.near(ml.moe.switch_loss(p, ml.tensor({{1}, {1}}, "int64")):item(), 1.7, 1e-5, "switch loss")
  T.near(ml.moe.z_loss(ml.zeros(3, 2)):item(), math.log(2) ^ 2, 1e-5, "z-loss")
  -- load: thr = 1 (largest logit), sigma = 1: load = {1 - Phi(0), 1 - Phi(1)}
  local l1, l2 = 0.5, 0.15865525393145707
  local mean = (l1 + l2) / 2
  local cv2 = (((l1 - mean) ^ 2 + (l2 - mean) ^ 2) / 2) / mean ^ 2
  local logits = ml.tensor({{1, 0}})
  T.near(ml.moe.load_loss(logits, logits, 1, 1.0):item(), cv2, 1e-5, "load CV^2")
  T.near(ml.moe.cv2(ml.tensor({1, 1, 1})):item(), 0, 1e-7, "balanced -> 0")
end)

T.test("auxiliary losses are differentiable", function()
  ml.seed(2)
  local logits = ml.randn(6, 4)
  local noisy = logits + ml.randn(6, 4) * 0.25
  T.gradcheck("importance", function(l) return ml.moe.importance_loss(l:exp() / l:exp():sum(2, true)) end, {logits})
  T.gradcheck("load", function(l) return ml.moe.load_loss(l, noisy, 2, 0.25) end, {logits})
  T.gradcheck("z", function(l) return ml.moe.z_loss(l) end, {logits})
end)

T.test("dispatch ops: values and gradients", function()
  ml.seed(3)
  local x = ml.randn(5, 3)
  local ids = ml.tensor({2, 5, 2, 1}, "int64")
  local g = ml.moe.gather(x, ids)
  T.close(g[1], x[2], 0, 0, "gather row")
  T.gradcheck("gather (repeated ids)", function(a) return ml.moe.gather(a, ids) end, {x})
  -- increasing ids (an expert's samples): the backward writes each row once
  -- and zeroes the rows no sample came from; rows large enough to run threaded
  local xb = ml.randn(6, 3, 64, 64):requires_grad()
  local inc = ml.tensor({2, 3, 6}, "int64")
  local r = ml.randn(3, 3, 64, 64)
  local gb = ml.grad((ml.moe.gather(xb, inc) * r):sum(), xb)
  T.close(gb[2], r[1], 0, 0, "gather backward: row 2 holds the first sample's gradient")
  T.close(gb[6], r[3], 0, 0, "row 6 the third's")
  T.close(gb[1] + gb[4] + gb[5], ml.zeros(3, 64, 64), 0, 0, "rows no sample came from are zero")
  local y, w = ml.randn(4, 3), ml.rand(4)
  local out = ml.moe.combine(y, w, ids, 5)
  T.close(out[2], y[1] * w[1] + y[3] * w[3], 1e-6, 1e-6, "combine accumulates a token's experts")
  T.close(out[3], ml.zeros(3), 0, 0, "untouched rows are zero")
  T.gradcheck("combine", function(a, b) return ml.moe.combine(a, b, ids, 5) end, {y, w})
  -- channel placement: 3 samples, 2 experts of 2 channels each on 2x2 maps
  local p1, p2 = ml.randn(2, 2, 2, 2), ml.randn(1, 2, 2, 2)
  local i1, i2 = ml.tensor({1, 3}, "int64"), ml.tensor({2}, "int64")
  local gates = ml.rand(3) + 0.5
  local placed = ml.moe.place_channels({p1, p2}, {i1, i2}, gates, 3)
  T.check(placed:size(2) == 4, "4 channels out")
  T.close(placed[3]:narrow(1, 1, 2), p1[2] * gates[3], 1e-6, 1e-6, "sample 3 holds expert 1's block")
  T.close(placed[3]:narrow(1, 3, 2), ml.zeros(2, 2, 2), 0, 0, "and zeros in expert 2's block")
  T.gradcheck("place_channels", function(a, b, c) return ml.moe.place_channels({a, b}, {i1, i2}, c, 3) end,
    {p1, p2, gates})
  local idle = ml.moe.place_channels({p1, nil}, {i1, ml.tensor({}, "int64")}, nil, 3)
  T.close(idle[2], ml.zeros(4, 2, 2), 0, 0, "a sample routed nowhere is all zeros")
  T.raises(function() ml.moe.place_channels({p1, p2}, {i1, i1:narrow(1, 1, 1)}, nil, 3) end, "more than one expert")
  T.raises(function() ml.moe.gather(x, ml.tensor({6}, "int64")) end, "out of range")
  T.raises(function() ml.moe.route(ml.rand(3, 2), {k = 3}) end, "k = 3 must be between 1 and the number of experts (2)")
end)

T.done()
