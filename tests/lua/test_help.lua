-- Every public function has a help text; help() and topics print.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("no undocumented public function", function()
  local missing = ml.undocumented()
  T.check(#missing == 0, "undocumented: " .. table.concat(missing, ", "))
end)

T.test("methods are checked too: every kind of object", function()
  local kinds = {
    Tensor = getmetatable(ml.zeros(1)).__methods,
    Module = getmetatable(ml.nn.Identity()).__methods,
    Dataset = getmetatable(ml.data.from_tensors(ml.zeros(1, 1), ml.tensor({1}, "int64"))).__index,
    Optimizer = getmetatable(ml.optim.sgd({ml.zeros(1):requires_grad()}, {})).__index,
    Progress = getmetatable(ml.progress{quiet = true}).__index,
  }
  for kind, t in pairs(kinds) do
    local name = "tmp_undocumented_" .. kind:lower()
    rawset(t, name, function() end)
    local missing = table.concat(ml.undocumented(), " ")
    rawset(t, name, nil)
    T.check(missing:find(kind .. ":" .. name, 1, true), kind .. ": a method without text is reported")
  end
  T.check(#ml.undocumented() == 0, "and removing it clears the report")
  local f = function() end
  ml.tmp_function = f
  T.check(table.concat(ml.undocumented(), " "):find("ml.tmp_function", 1, true), "functions too")
  ml.tmp_function = nil
end)

T.test("help prints texts, tables and topics", function()
  local out = {}
  local real_print = print
  print = function(s) out[#out + 1] = tostring(s) end
  local ok, err = pcall(function()
    ml.help()
    ml.help(ml.conv2d)
    ml.help(ml.nn)
    ml.help("Module")
    ml.help("ml.cross_entropy")
    ml.help(ml.zeros(2, 2))
    ml.help("no.such.thing")
    ml.help("Module:train")
    ml.help(ml.nn.Identity().get)
    ml.help(nil)
    ml.help("Dataset")
    ml.help(ml.progress{quiet = true})
  end)
  print = real_print
  T.check(ok, tostring(err))
  local all = table.concat(out, "\n")
  T.check(all:find("Mixture%-of%-Experts"), "overview")
  T.check(all:find("2%-d convolution"), "function text")
  T.check(all:find("ml.nn.Linear"), "table listing")
  T.check(all:find(":parameters"), "topic")
  T.check(all:find("softmax cross%-entropy"), "by name")
  T.check(all:find("float32 tensor of shape %[2, 2%]"), "tensor summary")
  T.check(all:find("no help for"), "unknown names are reported")
  T.check(all:find("m:train%(%[on = true%]%) %-> m: training mode"), "Kind:method")
  T.check(all:find("m:get%(i | \"name\""), "a method by its function")
  T.check(all:find("no help: the value is nil"), "nil is not the overview")
  T.check(all:find("  batches            ds:batches%(n"), "a topic lists its methods with their first lines")
  T.check(all:find("bar:update%(done"), "progress bars")
end)

T.test("ml.doc round trip", function()
  local f = function() end
  T.check(ml.doc(f, "my text") == f, "doc returns its value")
  local got
  local real_print = print
  print = function(s) got = s end
  ml.help(f)
  print = real_print
  T.check(got == "my text", "help shows a registered text")
  T.raises(function() ml.doc(f, 3) end, "text must be a string")
end)

T.done()
