-- ml.watch: an attack, watched. It runs an ml.attack through on_step (with
-- the routing trace of every step) and, on a terminal, redraws a dashboard in
-- place at most `rate` times a second: loss and success-rate sparklines, the
-- layers x experts load and the per-layer routing change against the clean
-- trace so far. Prints made meanwhile appear above the dashboard; the last
-- frame and the report stay. Elsewhere (a pipe, a log) it prints one line
-- per step (every `every` steps). Ctrl-C stops the attack, which returns its
-- best batch so far (report.interrupted), and the dashboard is closed.
local ml = require "moelab"
local options = require "moelab.options"

local kind = options.kind

local own = {attack = true, every = true, rate = true, tty = true, out = true, width = true, clock = true}

-- Mean of a 1-d tensor, summed in order (the summary lines and the history agree).
local function mean(t)
  local v, s = t:totable(), 0
  for i = 1, #v do s = s + v[i] end
  return #v > 0 and s / #v or 0 / 0
end

-- The dashboard's state and drawing.
local Dash = {}
Dash.__index = Dash

function Dash:frame(width, color)
  local h = self.history
  local last = #h.loss
  local title = ("%s  step %d/%d  eps %.4g  %.1f s"):format(self.name, last > 0 and h.step[last] or 0, self.total,
    self.eps, self.clock() - self.start)
  local panels = {
    ml.plot.spark(#h.loss > 0 and h.loss or {0 / 0}, {title = "loss   "}),
    ml.plot.spark(#h.success > 0 and h.success or {0 / 0}, {title = "success", ylim = {0, 1}}),
  }
  if #self.layers > 0 then
    local rows, experts = {}, 0
    for _, l in ipairs(self.layers) do experts = math.max(experts, l.E) end
    for i, l in ipairs(self.layers) do
      local share = self.share[i] or {}
      rows[i] = {}
      for e = 1, experts do rows[i][e] = share[e] or 0 / 0 end
    end
    panels[#panels + 1] = ml.plot.heatmap(rows, {rows = self.names, title = "expert share (current batch)", zlim = {0, 1}})
    local rc = {}
    for i, l in ipairs(self.layers) do rc[i] = h.rc[l.name][last] or 0 end
    panels[#panels + 1] = ml.plot.bars(rc, {labels = self.names, xlim = {0, 1}, title = "routing change vs clean"})
  end
  panels.cols = 2
  local text = ml.plot.grid(panels):render{width = width, color = color}
  return title:sub(1, width) .. "\n" .. text
end

-- Clears the lines drawn last (the cursor stands on the line below them).
function Dash:clear()
  if self.drawn > 0 then self.out:write(("\27[%dA\r\27[J"):format(self.drawn)) end
  self.drawn = 0
end

function Dash:draw()
  local cols, lines, color = ml.plot._term()
  local width = math.min(self.width or cols, cols, 120)
  -- a terminal too small for the plots gets the summary line: drawing must never stop the attack
  local ok, text = pcall(self.frame, self, width, color)
  if not ok then text = (#self.history.loss > 0 and self:line(#self.history.loss) or self.name):sub(1, width) end
  -- at most the terminal's height less one line: lines scrolled off could not be redrawn
  local kept, n = {}, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if n >= lines - 1 then break end
    n = n + 1
    kept[n] = line
  end
  self:clear()
  self.out:write(table.concat(kept, "\n"), "\n")
  self.out:flush()
  self.drawn = n
  self.last_draw = self.clock()
end

-- One summary line (the form printed when the output is not a terminal).
function Dash:line(i)
  local h = self.history
  local parts = {("%s step %d/%d  loss %.6g  success %.4f"):format(self.name, h.step[i], self.total, h.loss[i],
    h.success[i])}
  for _, l in ipairs(self.layers) do
    local v = h.rc[l.name][i]
    parts[#parts + 1] = ("rc %s %s"):format(l.name, v and ("%.4f"):format(v) or "-")
  end
  return table.concat(parts, "  ")
end

function Dash:step(step, info)
  local h = self.history
  local i = #h.loss + 1
  h.step[i], h.loss[i], h.success[i] = step, mean(info.loss), mean(info.success)
  local tr = info.trace
  local whole = tr ~= nil and #tr == #self.layers
  for li, l in ipairs(self.layers) do
    if whole then
      local load = tr[li].load:totable()
      local total = 0
      for e = 1, #load do total = total + load[e] end
      for e = 1, #load do load[e] = total > 0 and load[e] / total or 0 / 0 end
      self.share[li] = load
    end
  end
  if whole then
    local rows = ml.metrics.routing_change(self:clean_of(info.index), tr)
    for _, r in ipairs(rows) do h.rc[r.layer][i] = r.rate end
  end
  if self.tty then
    if self.clock() - self.last_draw >= self.interval then self:draw() end
  elseif (i - 1) % self.every == 0 then
    self.out:write(self:line(i), "\n")
    self.out:flush()
  end
end

-- The clean trace of the rows the attack works on (all, or a subset: early
-- stop, restarts, AutoAttack); a subset's is computed once and kept while it lasts.
function Dash:clean_of(index)
  if index == nil or index:size(1) == self.batch then return self.clean end
  local key = table.concat(index:totable(), ",")
  if self.subset_key ~= key then
    local x = self.x:index_select(1, index)
    self.subset = select(2, ml.inspect._forward_trace(self.model, x))
    self.subset_key = key
  end
  return self.subset
end

-- ml.watch(model, x, y, {attack = "pgd", every = 1, rate = 10, tty, out, width, <attack options>}) -> x_adv, report
function ml.watch(model, x, y, opts)
  local fn = "watch"
  if kind(model) ~= "Module" then error(("%s: model must be a Module, got a %s"):format(fn, kind(model)), 2) end
  if kind(x) ~= "Tensor" then error(("%s: x must be a batch tensor, got a %s"):format(fn, kind(x)), 2) end
  if opts ~= nil and (type(opts) ~= "table" or getmetatable(opts) ~= nil) then
    error(("%s: options must be a table, got a %s"):format(fn, kind(opts)), 2)
  end
  local o, rest = {}, {}
  for k, v in pairs(opts or {}) do
    if own[k] then o[k] = v else rest[k] = v end
  end
  local name = o.attack or "pgd"
  if type(name) ~= "string" then error(("%s: attack must be an attack's name (\"pgd\", ...), got a %s"):format(fn, kind(name)), 2) end
  local every, rate = o.every or 1, o.rate or 10
  if type(every) ~= "number" or every < 1 or every % 1 ~= 0 then
    error(("%s: every must be a positive integer, got %s"):format(fn, tostring(every)), 2)
  end
  if type(rate) ~= "number" or not (rate > 0) then
    error(("%s: rate must be a number of redraws per second > 0, got %s"):format(fn, tostring(rate)), 2)
  end
  if rest.trace ~= nil then error(fn .. ": trace is set by watch (it reads the trace of every step)", 2) end
  local user_step = rest.on_step
  if user_step ~= nil and type(user_step) ~= "function" then
    error(("%s: on_step must be a function (step, info), got a %s"):format(fn, kind(user_step)), 2)
  end

  -- the clean routing, the reference of the routing change
  local _, clean = ml.inspect._forward_trace(model, x)

  local clock = o.clock or ml.clock
  local tty = o.tty
  if tty == nil then tty = ml.isatty(1) end
  local d = setmetatable({name = name, total = rest.steps or 0, eps = rest.eps or 0, clock = clock, start = clock(),
                          out = o.out or io.stdout, tty = tty, every = every, interval = 1 / rate, width = o.width,
                          clean = clean, batch = x:size(1), x = x, model = model, layers = {}, names = {}, share = {}, drawn = 0,
                          last_draw = -math.huge,
                          history = {step = {}, loss = {}, success = {}, rc = {}}}, Dash)
  for i = 1, #clean do
    local l = clean[i]
    d.layers[i] = {name = l.layer, E = l.E}
    d.names[i] = l.layer
    d.history.rc[l.layer] = {}
  end

  rest.trace = true
  rest.quiet = true
  rest.on_step = function(step, info)
    if d.total == 0 then d.total = info.total end
    d:step(step, info)
    if user_step then return user_step(step, info) end
  end

  -- prints meanwhile go above the dashboard
  local real_print = print
  if tty then
    print = function(...)
      local parts = table.pack(...)
      for i = 1, parts.n do parts[i] = tostring(parts[i]) end
      d:clear()
      d.out:write(table.concat(parts, "\t", 1, parts.n), "\n")
      d:draw()
    end
  end
  local res = table.pack(pcall(ml.attack.run, name, model, x, y, rest))
  print = real_print
  if not res[1] then
    if tty then d:clear() end
    error(res[2], 0)
  end
  local xa, report = res[2], res[3]
  report.history = d.history
  if tty then
    d:draw()
  end
  -- the report says how the routing of x_adv differs from the clean batch's, layer by layer
  d.out:write(tostring(report), "\n")
  d.out:flush()
  return xa, report
end

ml.doc(ml.watch, [[
ml.watch(model, x, y, {attack = "pgd", eps, steps, seed, ..., every = 1, rate = 10, width, tty, out}) -> x_adv, report
  Runs ml.attack.run(attack, model, x, y, opts) (the other options go to the attack) and watches it through
  on_step with the routing trace of every step. On a terminal a dashboard redraws in place, at most `rate`
  times a second: loss and success-rate sparklines (means over the batch), the layers x experts share of
  the items routed in the current batch, and each MoE layer's routing change against the clean batch's
  routing (ml.metrics.routing_change); prints made meanwhile (say by your own on_step) appear above it,
  and at the end the last frame stays with the report (its routing lines: each layer's change for x_adv). When the
  output is not a terminal (tty = false), a line per step instead (every k-th with every = k):
    pgd step 3/40  loss 2.31  success 0.1250  rc blocks.2.mlp 0.0310
  Ctrl-C stops the attack: it returns its best batch so far with report.interrupted = true, and the
  prompt stays. report.history = {step, loss, success, rc = {[layer] = rates}} holds every step's numbers.
  Same seed, same x_adv as the attack without watch. e.g. xa, r = ml.watch(model, x, y, {eps = 8/255, steps = 40})]])

return ml.watch
