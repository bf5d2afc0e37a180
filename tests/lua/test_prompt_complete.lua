-- What Tab proposes at the prompt (ml.repl.complete): candidates for a set of
-- prefixes, every one valid Lua, and no user code run while completing.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function complete(line)
  local list, start = ml.repl.complete(line)
  return list, start, table.concat(list, " ")
end

local function has(list, item)
  for _, v in ipairs(list) do if v == item then return true end end
  return false
end

T.test("globals, keywords, fields, methods", function()
  completion_probe_alpha, completion_probe_beta = 1, 2
  local list, start = complete("completion_probe_")
  T.check(#list == 2 and list[1] == "completion_probe_alpha" and list[2] == "completion_probe_beta" and start == 1,
    "globals by prefix, sorted")
  list = complete("whi")
  T.check(has(list, "while"), "keywords")
  list, start = complete("x = ml.nn.Lin")
  T.check(#list == 1 and list[1] == "ml.nn.Linear" and start == 5, "fields of nested tables; the expression's start")
  list = complete("ml.att")
  T.check(has(list, "ml.attention"), "ml.att -> ml.attention")
  list = complete("ml.")
  T.check(has(list, "ml.nn") and has(list, "ml.zeros") and not has(list, "ml._trace"), "hidden names stay hidden")
  list = complete("print(ml.zer")
  T.check(has(list, "ml.zeros") and has(list, "ml.zeros_like"), "inside a call")
  completion_x = ml.zeros(2, 3)
  list = complete("completion_x:res")
  T.check(#list == 1 and list[1] == "completion_x:reshape", "tensor methods")
  list = complete("completion_x.")
  T.check(#list == 1 and list[1] == "completion_x.grad", "a tensor's one field")
  list = complete("completion_x[1]:su")
  T.check(has(list, "completion_x[1]:sum"), "a slice is still a tensor")
  local d = ml.data.from_tensors(ml.zeros(4, 2), ml.tensor({1, 2, 1, 2}, "int64"))
  completion_ds = d
  list = complete("completion_ds:bat")
  T.check(has(list, "completion_ds:batch") and has(list, "completion_ds:batches") and has(list, "completion_ds:batch_of"),
    "dataset methods (C and Lua)")
  completion_opt = ml.optim.sgd({ml.zeros(1):requires_grad()}, {lr = 0.1})
  T.check(has(complete("completion_opt:st"), "completion_opt:step"), "optimizer methods")
  completion_bar = ml.progress{quiet = true}
  T.check(has(complete("completion_bar:fin"), "completion_bar:finish"), "methods from a Lua metatable")
  completion_t = {["with space"] = 1, plain = 2, [3] = 4}
  list = complete("completion_t.")
  T.check(has(list, "completion_t.plain") and has(list, 'completion_t["with space"]') and #list == 2,
    "keys that are not names complete to t[\"...\"]")
end)

T.test("module children complete to expressions that work", function()
  completion_m = ml.nn.Sequential(ml.nn.Linear(2, 3), ml.nn.ReLU(), ml.nn.Linear(3, 1))
  local list = complete("completion_m.")
  T.check(#list == 3 and list[1] == "completion_m[1]" and list[3] == "completion_m[3]",
    "numbered children (names 0, 1, 2) complete to 1-based positions: " .. table.concat(list, " "))
  for _, expr in ipairs(list) do
    local v = load("return " .. expr)()
    T.check(getmetatable(v).__name == "Module", expr .. " is a module")
  end
  T.check(load("return " .. list[2])():type() == "Activation", "m[2] is the second child (named 1)")
  completion_r = ml.nn.resnet18{}
  list = complete("completion_r.la")
  T.check(#list == 4 and list[1] == 'completion_r:get("layer1")', "named children: m:get(\"name\")")
  T.check(load("return " .. list[1])():type() == "Sequential", "and that works")
  list = complete('completion_r:get("layer1")[1].')
  T.check(has(list, 'completion_r:get("layer1")[1]:get("conv1")'), "children of children: " .. table.concat(list, " "))
  list = complete('completion_r:get("layer1"):fo')
  T.check(#list == 1 and list[1] == 'completion_r:get("layer1"):forward', "methods of a child")
  local start
  list, start = complete('y = completion_r:get("layer2.0.c')
  T.check(has(list, "layer2.0.conv1") and has(list, "layer2.0.conv2") and start == #'y = completion_r:get("' + 1,
    "paths inside m:get(\"...\")")
  for _, p in ipairs(list) do T.check(completion_r:get(p) ~= nil, p .. " is a path m:get accepts") end
end)

T.test("file names inside a string", function()
  local list, start = complete('ml.data.mnist("data/mn')
  T.check(has(list, "data/mnist-10k/") and start == #'ml.data.mnist("' + 1, "directories end in /")
  list = complete("dofile('tests/lua/test_prompt_comp")
  T.check(#list == 1 and list[1] == "tests/lua/test_prompt_complete.lua", "files, single quotes")
  list = complete('x = "no/such/dir/')
  T.check(#list == 0, "nothing for a missing folder")
end)

T.test("completion runs no user code", function()
  local ran = false
  completion_trap = setmetatable({}, {__index = function() ran = true return {} end,
                                      __pairs = function() ran = true return next, {} end})
  complete("completion_trap.x.")
  complete("completion_trap.")
  completion_trap2 = setmetatable({}, {__index = setmetatable({}, {__index = function() ran = true end})})
  complete("completion_trap2.abc.")
  T.check(not ran, "no __index or __pairs function was called")
  local list = complete("nosuchglobal.")
  T.check(#list == 0, "nothing after an unknown name")
  list = complete("f(1).")
  T.check(#list == 0, "no call is made to complete its result")
  list = complete("-- a comment ml.")
  T.check(#list == 0, "nothing inside a comment")
  list = complete("3.1")
  T.check(#list == 0, "numbers are not names")
  T.raises(function() ml.repl.complete(42) end, "repl.complete: expects the line before the cursor")
end)

T.done()
