-- ml.watch: the attack it runs is the attack (same x_adv as without watch),
-- the summary lines off a terminal carry the steps and the losses the attack
-- reported, the dashboard on a terminal redraws in place with prints above it,
-- and bad options are clear errors. (Ctrl-C at the real prompt:
-- tests/c/test_watch_pty.c.)
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function setup()
  ml.seed(4)
  local m = ml.nn.vmoe{input = {1, 28, 28}, patch = 7, dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4, k = 2,
                       moe_every = 1, capacity_factor = 2}
  m:eval()
  local x = ml.rand(6, 1, 28, 28)
  local y = ml.no_grad(function() return m(x):argmax(2) end) -- clean accuracy 100%
  return m, x, y
end

-- A stand-in for io.stdout that keeps what is written.
local function sink()
  local s = {parts = {}}
  function s:write(...) for _, v in ipairs({...}) do self.parts[#self.parts + 1] = tostring(v) end return self end
  function s:flush() return self end
  function s:text() return table.concat(self.parts) end
  return s
end

local function mean(t)
  local v, s = t:totable(), 0
  for i = 1, #v do s = s + v[i] end
  return s / #v
end

local OPTS = {eps = 0.05, steps = 6, seed = 2}

T.test("off a terminal: a line per step, the attack's own numbers", function()
  local m, x, y = setup()
  -- the plain attack, its per-step mean loss and success rate
  local plain_loss, plain_success = {}, {}
  local xb, rb = ml.attack.pgd(m, x, y, {eps = OPTS.eps, steps = OPTS.steps, seed = OPTS.seed, quiet = true,
    on_step = function(step, info)
      plain_loss[step], plain_success[step] = mean(info.loss), mean(info.success)
    end})
  local out = sink()
  local xa, r = ml.watch(m, x, y, {attack = "pgd", eps = OPTS.eps, steps = OPTS.steps, seed = OPTS.seed, tty = false, out = out})
  T.check((xa - xb):abs():max():item() == 0, "the same x_adv as the attack without watch")
  T.check(r.robust_accuracy == rb.robust_accuracy and not r.interrupted, "the same report")
  local text = out:text()
  T.check(not text:find("\27", 1, true), "no terminal codes")
  local steps = {}
  for step, total, loss, success, rest in text:gmatch("pgd step (%d+)/(%d+)  loss (%S+)  success (%S+)([^\n]*)\n") do
    step = tonumber(step)
    steps[#steps + 1] = step
    T.check(tonumber(total) == OPTS.steps, "total steps")
    T.check(math.abs(tonumber(loss) - plain_loss[step]) <= 1e-5 * math.abs(plain_loss[step]), ("loss of step %d: %s vs %.9g"):format(step, loss, plain_loss[step]))
    T.check(math.abs(tonumber(success) - plain_success[step]) <= 1e-4, "success rate of step " .. step)
    T.check(tonumber(loss) == tonumber(("%.6g"):format(r.history.loss[step])), "the history holds the printed loss")
    local layers = 0
    for _, rate in rest:gmatch("rc (%S+) (%S+)") do
      layers = layers + 1
      T.check(tonumber(rate) >= 0 and tonumber(rate) <= 1, "a rate")
    end
    T.check(layers == 2, "a routing change per MoE layer")
  end
  T.check(#steps == OPTS.steps, "one line per step: " .. #steps)
  for i, s in ipairs(steps) do T.check(s == i, "steps in order") end
  T.check(plain_loss[OPTS.steps] > plain_loss[1], "the attack raised the loss")
  -- the rate at step 1 (the clean batch, no random start) is 0
  T.check(text:find("pgd step 1/6[^\n]*rc blocks.0.mlp 0.0000  rc blocks.1.mlp 0.0000\n"), "no routing change at the start")
  -- the report at the end: the items of x_adv routed differently, as ml.metrics counts them
  local rc = ml.metrics.routing_change(m, x, xa)
  for _, row in ipairs(rc) do
    T.check(text:find(("\n    %s +%.2f%%%% of the items routed differently"):format(row.layer:gsub("%.", "%%."),
      100 * row.changed / row.items)), "final routing change of " .. row.layer)
  end
  T.check(text:find("pgd (linf, eps 0.05", 1, true), "the report")
end)

T.test("every k steps; the caller's on_step still runs and can stop", function()
  local m, x, y = setup()
  local out, seen = sink(), {}
  local xa, r = ml.watch(m, x, y, {eps = 0.05, steps = 6, seed = 2, tty = false, out = out, every = 2,
    on_step = function(step, info)
      seen[#seen + 1] = step
      T.check(info.trace ~= nil, "the caller sees the trace too")
      if step == 5 then return false end
    end})
  local steps = {}
  for s in out:text():gmatch("pgd step (%d+)/6") do steps[#steps + 1] = tonumber(s) end
  T.check(table.concat(steps, ",") == "1,3,5", "steps 1, 3, 5: " .. table.concat(steps, ","))
  T.check(#seen == 5 and r.stopped, "stopped at step 5")
  T.check(xa:size(1) == 6, "a batch")
end)

T.test("on a terminal: redrawn in place, prints above, the last frame stays", function()
  local m, x, y = setup()
  local out = sink()
  local t = 0
  local xa, r = ml.watch(m, x, y, {eps = 0.05, steps = 4, seed = 2, tty = true, out = out, width = 80,
    clock = function() t = t + 1; return t end, -- every step is time to redraw
    on_step = function(step) if step == 2 then print("a print at step 2") end end})
  local text = out:text()
  local frames = select(2, text:gsub("pgd  step %d/4", ""))
  T.check(frames >= 5, "a frame per step and after the print: " .. frames)
  T.check(text:find("\27%[%d+A\r\27%[J"), "cursor up and clear: redrawn in place")
  local print_at = text:find("a print at step 2", 1, true)
  T.check(print_at and text:sub(1, print_at - 1):match("\27%[%d+A\r\27%[J$"), "the print replaces the frame ...")
  T.check(text:find("pgd  step 2/4", print_at, true), "... which is drawn again under it")
  local last = text:match(".*\27%[J(.*)$")
  T.check(last and last:find("pgd  step 4/4", 1, true) and last:find("routing change vs clean", 1, true)
    and last:find("expert share", 1, true) and last:find("loss", 1, true), "the last frame stays")
  T.check(last and last:find("pgd (linf", 1, true), "then the report")
  T.check(print == _G.print and not tostring(print):find("watch"), "print is restored")
  T.check(r.history and #r.history.loss == 4 and xa, "history")
end)

T.test("a terminal too narrow for the plots gets the summary line", function()
  local m, x, y = setup()
  local out = sink()
  local t = 0
  local xa, r = ml.watch(m, x, y, {eps = 0.05, steps = 3, seed = 2, tty = true, out = out, width = 12,
    clock = function() t = t + 1; return t end})
  T.check(xa and #r.history.loss == 3 and not r.interrupted, "the attack ran to the end")
  T.check(out:text():find("\27%[1A\r\27%[Jpgd step 3/3\n"), "one line as wide as the terminal, redrawn in place")
end)

T.test("print is restored after an error", function()
  local m, x, y = setup()
  local real = print
  T.raises(function() ml.watch(m, x, y, {eps = 0.05, steps = 3, tty = true, out = sink(), on_step = function() error("boom") end}) end, "boom")
  T.check(print == real, "print restored")
end)

T.test("bad options", function()
  local m, x, y = setup()
  T.raises(function() ml.watch(m, x, y, {attack = "nope", tty = false, out = sink()}) end, "unknown attack 'nope'")
  T.raises(function() ml.watch(m, x, y, {attack = 3}) end, "watch: attack must be an attack's name (\"pgd\", ...), got a number")
  T.raises(function() ml.watch(m, x, y, {every = 0}) end, "watch: every must be a positive integer, got 0")
  T.raises(function() ml.watch(m, x, y, {rate = -1}) end, "watch: rate must be a number of redraws per second > 0, got -1")
  T.raises(function() ml.watch(m, x, y, {trace = true}) end, "watch: trace is set by watch")
  T.raises(function() ml.watch(m, x, y, {on_step = 3}) end, "watch: on_step must be a function")
  T.raises(function() ml.watch(42, x, y) end, "watch: model must be a Module, got a number")
  T.raises(function() ml.watch(m, x, y, {eps = -1, tty = false, out = sink()}) end, "pgd: eps must be a finite number >= 0, got -1")
end)

T.done()
