-- ml.inspect.routing: the text of a hand-built pair of traces (token MoE with
-- a class token, dropped choices, reordered and changed selections; channel
-- MoE pathways), colour only when asked, the PNG, a real model, bad input.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function ids(rows) return ml.tensor(rows, "int64") end

-- 2 examples; the token layer routes 5 tokens each (a class token, then a 2x2 patch grid).
local function traces()
  local clean = ml.trace.new{
    {layer = "blocks.1.mlp", kind = "token", E = 3,
     experts = ids{{2, 1}, {1, 2}, {1, 3}, {3, 2}, {2, 1}, {3, 1}, {1, 2}, {2, 3}, {3, 1}, {1, 3}},
     kept = ids{{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 1}}},
    {layer = "features.3", kind = "channel", E = 2, experts = ids{{1}, {2}}},
    {layer = "features.6", kind = "channel", E = 4, experts = ids{{3}, {4}}},
  }
  local adv = ml.trace.new{
    {layer = "blocks.1.mlp", kind = "token", E = 3,
     experts = ids{{2, 1}, {2, 1}, {1, 2}, {3, 2}, {2, 1}, {1, 3}, {1, 2}, {2, 3}, {3, 1}, {1, 3}}},
    {layer = "features.3", kind = "channel", E = 2, experts = ids{{1}, {1}}},
    {layer = "features.6", kind = "channel", E = 4, experts = ids{{3}, {4}}},
  }
  return clean, adv
end

local GOLDEN = [[
routing of 2 examples, 3 MoE layers (each item's first kept expert; - none kept; * selection changed; ~ same experts, another first)
example 1  label 7
  blocks.1.mlp: token MoE, 3 experts, top-2, class token 2 -> 2, changed 1 of 5
    clean  adversarial
    1 1    2~1*
    3 2    3 2
  pathway       features.3 features.6
    clean       1          3
    adversarial 1          3
example 2  label 4
  blocks.1.mlp: token MoE, 3 experts, top-2, class token 3 -> 1~, changed 2 of 5
    clean  adversarial
    1 2    1 2
    - 3    3*1*
  pathway       features.3 features.6
    clean       2          4
    adversarial 1*         4]]

T.test("clean and adversarial side by side (golden text)", function()
  local clean, adv = traces()
  local v = ml.inspect.routing(clean, adv, {labels = {7, 4}})
  T.check(tostring(v) == GOLDEN, "golden text:\n" .. tostring(v))
  T.check(not tostring(v):find("\27", 1, true), "no colour codes in tostring")
  local coloured = v:render{color = true}
  T.check(coloured:find(ml.plot._color(2) .. "2\27[0m", 1, true), "expert 2 in its series colour")
  T.check(coloured:find(ml.plot._color(1) .. "\27[7m1\27[0m*", 1, true), "a changed cell in reverse video")
  T.check(ml.plot._color(1) ~= ml.plot._color(2) and ml.plot._color(9) == ml.plot._color(1), "colours cycle by 8")
  local stripped = coloured:gsub("\27%[[%d;]*m", "")
  T.check(stripped == GOLDEN, "the coloured text is the same text")
end)

T.test("clean only; n examples; batch", function()
  local clean = traces()
  local text = tostring(ml.inspect.routing(clean, {n = 1}))
  T.check(text == [[
routing of 1 example, 3 MoE layers (each item's first kept expert; - none kept)
example 1
  blocks.1.mlp: token MoE, 3 experts, top-2, class token 2
    1 1
    3 2
  pathway       features.3 features.6
    clean       1          3]], text)
  -- a token layer alone: 1 example unless told
  local tok = ml.trace.new{{layer = "moe", kind = "token", E = 2, experts = ids{{1}, {2}, {2}, {1}, {2}, {2}}}}
  T.check(tostring(ml.inspect.routing(tok)):find("\n    1 2 2\n    1 2 2$"), "6 tokens: rows of 3")
  T.check(tostring(ml.inspect.routing(tok, {batch = 2})):find("example 2\n  moe: token MoE, 2 experts, top%-1\n    1 2\n    2$"),
    "2 examples of 3 tokens: rows of 2")
end)

T.test("png: the maps as heatmaps", function()
  local clean, adv = traces()
  local v = ml.inspect.routing(clean, adv)
  local g = v:plot()
  T.check(g:kind() == "grid", "a grid of heatmaps")
  local path = os.tmpname() .. ".png"
  T.check(v:png(path) == v, "png returns the view")
  local img = ml.image.load(path)
  os.remove(path)
  T.check(img:size(1) == 3 and img:size(2) > 100 and img:size(3) > 100, "a picture")
end)

T.test("a model: token maps of a V-MoE, predictions, mode kept", function()
  ml.seed(1)
  local m = ml.nn.vmoe{input = {1, 28, 28}, patch = 7, dim = 8, depth = 1, heads = 2, mlp = 16, experts = 4, k = 1,
                       moe_every = 1, capacity_factor = 0}
  local x = ml.rand(3, 1, 28, 28)
  m:train()
  local v = ml.inspect.routing(m, x, (x + 0.2):clamp(0, 1), {n = 2})
  T.check(m:is_training(), "training mode restored")
  local text = tostring(v)
  T.check(text:find("routing of 2 examples, 1 MoE layer"), text)
  local _, rows = text:gsub("\n    %d[%d ~*]*", "")
  T.check(rows == 8, "a 4x4 token map per example (28 / 7), clean and adversarial: " .. rows)
  T.check(text:find("example 1  pred %d+ %-> %d+"), "predictions")
  m:eval()
  local _, t = m:forward(x, {trace = true})
  T.check(tostring(ml.inspect.routing(t, {batch = 3, n = 2})):gsub("  pred %d+", "") ==
    tostring(ml.inspect.routing(m, x, {n = 2})):gsub("  pred %d+", ""), "the model's trace gives the same view")
end)

T.test("bad input", function()
  local clean = traces()
  T.raises(function() ml.inspect.routing(42) end, "inspect.routing: expects (model, x, [x_adv], [opts]) or (trace, [trace_adv], [opts]), got a number")
  T.raises(function() ml.inspect.routing(clean, {n = 0}) end, "inspect.routing: n must be a positive integer, got 0")
  T.raises(function() ml.inspect.routing(clean, {bogus = 1}) end, "unknown option \"bogus\"")
  T.raises(function() ml.inspect.routing(clean, {batch = 3}) end, "inspect.routing: layer blocks.1.mlp routes 10 items, not a multiple of the batch size 3")
  T.raises(function() ml.inspect.routing(ml.nn.Linear(2, 2), ml.zeros(1, 2)) end, "inspect.routing: the model has no MoE layer")
  T.raises(function() ml.inspect.routing(ml.nn.Linear(2, 2), "x") end, "inspect.routing: x must be a batch tensor")
  local other = ml.trace.new{{layer = "other", kind = "token", E = 3, experts = ids{{1}}}}
  T.raises(function() ml.inspect.routing(clean, other) end, "inspect.routing: trace:compatible: the traces have 3 and 1 MoE layers")
  T.raises(function() ml.inspect.routing(clean, {labels = {1}}) end, "labels must be a list or tensor of at least 2 labels")
end)

T.done()
