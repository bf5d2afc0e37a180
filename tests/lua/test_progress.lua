-- ml.progress: what it writes on a terminal (one line redrawn in place), to a
-- log (plain lines, at most one per interval, and the last), and nothing when
-- quiet; bad options are clear errors.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function sink()
  local s = {parts = {}}
  function s:write(...) for _, p in ipairs({...}) do self.parts[#self.parts + 1] = tostring(p) end end
  function s:flush() end
  function s:text() return table.concat(self.parts) end
  return s
end

T.test("terminal: redraws in place, final line stays", function()
  local out = sink()
  local t = 0
  local bar = ml.progress{total = 4, label = "pgd", unit = "step", tty = true, out = out, clock = function() return t end}
  t = 2
  bar:update(1, "loss 0.5")
  local first = out:text()
  T.check(first:match("^\r") and first:find("\27%[K$"), "a redraw starts with a carriage return and clears the rest")
  T.check(first:find("pgd  %[=====               %] 1/4"), "label, bar and count: " .. first)
  T.check(first:find("ETA 0:06") and first:find("2.0 s/step") and first:find("loss 0.5", 1, true),
    "ETA, rate, extra: " .. first)
  t = 2.05
  for i = 2, 3 do bar:update(i) end
  T.check(out:text() == first, "no redraw within 0.1 s")
  t = 2.5
  bar:update(3)
  T.check(#out:text() > #first and out:text():find("3/4", #first, true), "a redraw after 0.1 s")
  first = out:text()
  t = 8
  bar.done = 4
  bar:finish(function() return "done" end)
  local all = out:text()
  local last = all:sub(#first + 1)
  T.check(last:find("%[====================%] 4/4") and last:find("done\27%[K\n$"), "final line: " .. last)
  T.check(not last:find("ETA") and last:find("0:08"), "the final line shows the elapsed time, not an ETA")
end)

T.test("log: plain lines at most every interval, and the last", function()
  local out = sink()
  local t = 0
  local bar = ml.progress{total = 3, unit = "batch", tty = false, out = out, interval = 60, clock = function() return t end}
  for i = 1, 3 do t = t + 10 bar:update(i) end
  T.check(out:text() == "", "no line before the interval has passed")
  bar:finish("acc 0.9")
  local text = out:text()
  T.check(not text:find("\r", 1, true) and not text:find("\27", 1, true), "no terminal codes")
  T.check(select(2, text:gsub("\n", "")) == 1 and text:find("3/3") and text:find("acc 0.9"), "one final line: " .. text)
  out = sink()
  bar = ml.progress{total = 3, tty = false, out = out, interval = 0}
  for i = 1, 3 do bar:step() end
  bar:finish()
  T.check(select(2, out:text():gsub("\n", "")) == 4, "interval = 0: a line per update and the last")
end)

T.test("quiet, transient, unknown total, callback", function()
  local out = sink()
  local bar = ml.progress{total = 5, quiet = true, tty = true, out = out}
  for i = 1, 5 do bar:update(i) end
  bar:finish()
  T.check(out:text() == "", "quiet prints nothing")
  out = sink()
  bar = ml.progress{total = 2, tty = true, transient = true, out = out}
  bar:update(1)
  bar:finish()
  T.check(out:text():sub(-4) == "\r\27[K", "a transient bar clears its line at the end")
  out = sink()
  bar = ml.progress{tty = false, transient = true, out = out, interval = 60, clock = function() return 0 end}
  bar:update(7)
  bar:finish()
  T.check(out:text() == "", "a transient bar in a log prints nothing when it was quick")
  bar = ml.progress{label = "sweep", tty = false, out = sink()}
  local cb = bar:callback()
  cb(12, "eps 0.03")
  T.check(bar.done == 12 and bar:line():find("sweep  12 it") and tostring(bar):find("eps 0.03"),
    "no total: a count; the callback updates the bar")
end)

T.test("bad options", function()
  T.raises(function() ml.progress{totl = 3} end, 'progress: unknown option "totl" (known: clock, interval, label, out, quiet')
  T.raises(function() ml.progress{total = -1} end, "progress: total must be a number >= 0, got -1")
  T.raises(function() ml.progress{interval = "often"} end, "progress: interval must be a number of seconds >= 0")
  T.raises(function() ml.progress(5) end, "progress: options must be a table, got a number")
end)

T.done()
