-- What the prompt prints for a value (ml.repr): tables show their contents.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("plain tables show their contents", function()
  T.check(ml.repr({1, 2, "x", a = 3}) == '{1, 2, "x", a = 3}', ml.repr({1, 2, "x", a = 3}))
  T.check(ml.repr({}) == "{}", "empty table")
  T.check(ml.repr({b = 1.5, a = true, [10] = 0.1}) == "{[10] = 0.1, a = true, b = 1.5}", ml.repr({b = 1.5, a = true, [10] = 0.1}))
  T.check(ml.repr({x = ml.zeros(2, 3), s = ml.scalar and ml.scalar(1) or ml.tensor(1)}):find("x = tensor<float32 2x3>", 1, true),
    "tensors inside as dtype and shape")
  T.check(ml.repr({m = ml.nn.Linear(2, 3)}):find("m = <Linear(2 -> 3)>", 1, true), "modules as their description")
  local t = {}
  t.self = t
  T.check(ml.repr(t) == "{self = {...}}", "cycles are cut: " .. ml.repr(t))
  local deep = {a = {b = {c = {d = 1}}}}
  T.check(ml.repr(deep) == "{a = {b = {c = {...}}}}", "two levels deep: " .. ml.repr(deep))
  local big = {}
  for i = 1, 100 do big[i] = i end
  local r = ml.repr(big)
  T.check(r:find("... (60 more)", 1, true) and #r < 400, "long tables are cut short")
  T.check(ml.repr({0 / 0, math.huge}):find("nan") and ml.repr({math.huge}):find("inf"), "non-finite numbers")
  T.check(ml.repr("text") == "text" and ml.repr(42) == "42", "non-tables print as tostring")
  local params = ml.repr(ml.nn.mlp{}:parameters())
  T.check(params:find('["layers.1.weight"] = tensor<float32 256x784>', 1, true), "a model's parameters, one per line")
  T.check(select(2, params:gsub("\n", "")) >= 6, "multi-line when wide")
end)

T.test("values with their own __tostring keep it", function()
  local tr = setmetatable({}, {__tostring = function() return "custom" end})
  T.check(ml.repr(tr) == "custom", "__tostring wins")
  T.check(ml.repr(ml.zeros(2)):find("tensor%(%[0%., 0%.%]%)"), "a tensor prints in full")
end)

T.done()
