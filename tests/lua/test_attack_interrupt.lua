-- Ctrl-C stops an attack cleanly: the attack returns the best batch so far
-- with report.interrupted = true, and the script (or the prompt) goes on.
-- Each case runs in a child moelab that sends SIGINT to itself, since the
-- interrupt stays pending until the command (here: the script) ends.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local prelude = [[
local ml = require "moelab"
local pid = io.open("/proc/self/stat"):read("n")
ml.seed(1)
local m = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(64, 32), ml.nn.ReLU(), ml.nn.Linear(32, 10)):eval()
local x = ml.rand(16, 64) * 0.5 + 0.25
local y = ml.no_grad(function() return m(x):argmax(2) end)
]]

local function run_child(body)
  local path = os.tmpname()
  local f = io.open(path, "w")
  f:write(prelude .. body)
  f:close()
  local p = io.popen((arg[-1] or "moelab") .. " " .. path .. " 2>&1")
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

T.test("SIGINT during the C loop: the attack returns its best batch", function()
  -- the signal lands while the attack runs in C (no Lua callback): the interrupt fires as the attack
  -- returns and the Lua side hands back the kept result
  local out = run_child([[
os.execute(("(sleep 0.3; kill -INT %d) &"):format(pid))
local xa, rep = ml.attack.pgd(m, x, y, {eps = 0.05, steps = 100000000})
local within = (xa - x):abs():max():item() <= 0.05 + 1e-6
print("result", rep.interrupted, within, rep.cost.backwards > 0, rep.cost.backwards < 100000000, xa:size(1))
print("the script goes on")
]])
  T.check(out:find("result\ttrue\ttrue\ttrue\ttrue\t16", 1, true) ~= nil, "child output:\n" .. out)
  T.check(out:find("the script goes on", 1, true) ~= nil, "the script stopped:\n" .. out)
end)

T.test("SIGINT with an on_step callback: the attack stops at the next step", function()
  -- (os.execute ignores SIGINT while it waits, so the kill runs later in the background; the interrupt
  -- then fires inside a call of on_step)
  local out = run_child([[
local last = 0
local xa, rep = ml.attack.apgd(m, x, y, {eps = 0.05, steps = 100000000, on_step = function(step)
  last = step
  if step == 5 then os.execute(("(sleep 0.05; kill -INT %d) &"):format(pid)) end
end})
-- (the interrupt can fire as on_step is called, before its body runs)
local s = rep.steps:max():item()
print("result", rep.interrupted, last >= 5 and last < 100000000, s == last or s == last + 1)
print("the script goes on")
]])
  T.check(out:find("result\ttrue\ttrue\ttrue", 1, true) ~= nil, "child output:\n" .. out)
  T.check(out:find("the script goes on", 1, true) ~= nil, "the script stopped:\n" .. out)
end)

T.test("SIGINT during AutoAttack keeps the examples broken so far", function()
  -- chunks of 4 examples, 20 APGD-CE steps each: the signal is sent in the third chunk
  local out = run_child([[
local n = 0
local xa, rep = ml.attack.autoattack(m, x, y, {eps = 0.1, quiet = true, steps = 20, batch = 4, on_step = function(_, info)
  n = n + 1
  local t = os.clock() while os.clock() - t < 0.002 do end -- slow enough for the signal to land mid-run
  if n == 45 then os.execute(("(sleep 0.05; kill -INT %d) &"):format(pid)) end
end})
local broken = 0
for i, b in ipairs(rep.broken_by) do
  if b ~= "robust" and b ~= "clean" then broken = broken + 1 end
end
print("result", rep.interrupted, broken > 0, rep.robust_accuracy < 1, n < 200)
]])
  T.check(out:find("result\ttrue\ttrue\ttrue\ttrue", 1, true) ~= nil, "child output:\n" .. out)
end)

T.done()
