-- Every public function has a help text; help() and topics print.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("no undocumented public function", function()
  local missing = ml.undocumented()
  T.check(#missing == 0, "undocumented: " .. table.concat(missing, ", "))
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
