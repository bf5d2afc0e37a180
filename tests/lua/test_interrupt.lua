-- Ctrl-C semantics, raised from Lua with ml.interrupt() (the same path as the
-- key: the prompt's SIGINT handler). An interrupt stops the command, a pcall
-- in user code cannot swallow it, ml.interruptible consumes it (what fit and
-- evaluate use to return what was done), and once consumed later calls work.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("ml.interruptible: results, errors, interrupts", function()
  local stopped, a, b = ml.interruptible(function(x, y) return x + y, "second" end, 2, 3)
  T.check(stopped == false and a == 5 and b == "second", "no interrupt: false and the results")
  T.raises(function() ml.interruptible(function() error("plain failure") end) end, "plain failure")
  local err = {}
  local ok, got = pcall(ml.interruptible, function() error(err) end)
  T.check(not ok and got == err, "a table error passes through unchanged")
  local n = 0
  stopped = ml.interruptible(function() while true do n = n + 1 if n == 50 then ml.interrupt() end end end)
  T.check(stopped == true and n == 50, ("a Lua loop stops at the next instruction (n = %d)"):format(n))
  T.check(not ml.interrupted(), "the interrupt is consumed")
  T.raises(function() ml.interruptible(42) end, "function expected")
end)

T.test("a pcall in user code cannot swallow Ctrl-C", function()
  local tries = 0
  local stopped = ml.interruptible(function()
    for _ = 1, 1000 do
      tries = tries + 1
      pcall(function() ml.interrupt() end)
    end
  end)
  T.check(stopped and tries == 1, ("the loop around the pcall stops too (%d tries)"):format(tries))
  local ran = false
  stopped = ml.interruptible(function()
    pcall(ml.interrupt)
    ran = true
  end)
  T.check(stopped and not ran, "nothing after the swallowing pcall runs")
end)

T.test("coroutines: Ctrl-C reaches a loop inside one", function()
  local stopped = ml.interruptible(function()
    local co = coroutine.wrap(function()
      ml.interrupt()
      local n = 0
      while true do n = n + 1 end
    end)
    co()
  end)
  T.check(stopped, "a loop in a coroutine.wrap stops")
  stopped = ml.interruptible(function()
    local co = coroutine.create(function() coroutine.yield(1) ml.interrupt() while true do end end)
    T.check(select(2, coroutine.resume(co)) == 1, "first resume yields")
    coroutine.resume(co)
    T.check(false, "not reached: the resume re-raises in the caller")
  end)
  T.check(stopped, "a loop in a resumed coroutine stops")
  -- wrapped coroutine functions keep their behaviour
  local gen = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  T.check(gen(1) == 2 and gen(5) == 10, "values in and out")
  T.raises(function() gen() end, "cannot resume dead coroutine")
  T.raises(coroutine.wrap(function() error("inside") end), "inside")
  local co = coroutine.create(function() error({code = 7}) end)
  local ok, e = coroutine.resume(co)
  T.check(not ok and type(e) == "table" and e.code == 7, "resume returns a table error")
  local list = {}
  for i in coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) do list[#list + 1] = i end
  T.check(table.concat(list, ",") == "1,2,3", "a generator in a for loop")
end)

T.test("theory estimates keep the rows done when interrupted", function()
  local m = ml.nn.Sequential(ml.nn.Linear(4, 3))
  local X = ml.randn(40, 4)
  local calls = 0
  local r = ml.theory.grad_norm_stats(function(x)
    calls = calls + 1
    if calls == 3 then ml.interrupt() end
    return m(x)
  end, X, {batch = 10})
  T.check(r.interrupted and r.n == 20, ("two batches of ten kept, got %d"):format(r.n))
  calls = 0
  r = ml.theory.local_lipschitz(function(x)
    calls = calls + 1
    if calls == 10 then ml.interrupt() end
    return m(x)
  end, X, {batch = 10, steps = 5})
  T.check(r.interrupted and r.n == 10, ("one batch kept, got %d"):format(r.n))
  r = ml.theory.grad_norm_stats(m, X, {batch = 10})
  T.check(r.n == 40 and r.interrupted == nil, "a full run")
end)

T.done()
