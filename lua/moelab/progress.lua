-- ml.progress: one progress bar for every long loop (training, evaluation,
-- attacks, sweeps). On a terminal it redraws one line in place (count, rate,
-- ETA and the caller's fields) at most every 0.1 s; otherwise it prints a
-- plain line at most every `interval` seconds, so logs show progress without
-- filling up; with quiet = true it prints nothing. An update that does not
-- draw costs one clock read, so C code with a per-step callback can call
-- bar:update on every step (or pass bar:callback()).
local ml = require "moelab"
local options = require "moelab.options"

local Progress = {}
Progress.__index = Progress
Progress.__name = "moelab.Progress"

local known = {total = true, label = true, unit = true, quiet = true, interval = true, tty = true,
               transient = true, out = true, width = true, clock = true}

local function clock_text(s)
  if s ~= s or s == math.huge or s < 0 then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

local function rate_text(r, unit)
  if r >= 100 then return ("%.0f %s/s"):format(r, unit) end
  if r >= 1 then return ("%.1f %s/s"):format(r, unit) end
  if r > 0 then return ("%.1f s/%s"):format(1 / r, unit) end
  return ("- %s/s"):format(unit)
end

-- ml.progress{total = n, label = "", unit = "it", quiet = false, interval = 30, tty = auto,
--             transient = false, width = 100, out = io.stdout, clock = ml.clock} -> bar
function ml.progress(opts)
  opts = options.check("progress", opts, known, 2)
  local total = opts.total
  if total ~= nil and (type(total) ~= "number" or total < 0 or total ~= total) then
    error(("progress: total must be a number >= 0, got %s"):format(tostring(total)), 2)
  end
  local interval = opts.interval or 30
  if type(interval) ~= "number" or interval < 0 then
    error(("progress: interval must be a number of seconds >= 0, got %s"):format(tostring(interval)), 2)
  end
  local tty = opts.tty
  if tty == nil then tty = ml.isatty(1) end
  local clock = opts.clock or ml.clock
  local now = clock()
  return setmetatable({clock = clock, total = total, label = opts.label or "", unit = opts.unit or "it", quiet = opts.quiet == true,
                       interval = interval, tty = tty, transient = opts.transient == true, out = opts.out or io.stdout,
                       width = opts.width or 100, start = now, last_draw = -math.huge, last_line = now,
                       done = 0, extra = nil, drawn = false}, Progress)
end

-- The text of the bar as it stands (also what bar:finish leaves).
function Progress:line()
  local elapsed = self.clock() - self.start
  local rate = elapsed > 0 and self.done / elapsed or 0
  local parts = {}
  if self.label ~= "" then parts[#parts + 1] = self.label end
  if self.total and self.total > 0 then
    local frac = math.min(1, self.done / self.total)
    local w = 20
    local fill = math.floor(frac * w + 0.5)
    parts[#parts + 1] = ("[%s%s] %d/%d"):format(("="):rep(fill), (" "):rep(w - fill), self.done, self.total)
  else
    parts[#parts + 1] = ("%d %s"):format(self.done, self.unit)
  end
  parts[#parts + 1] = rate_text(rate, self.unit)
  if self.finished then
    parts[#parts + 1] = clock_text(elapsed)
  elseif self.total and self.total > 0 then
    parts[#parts + 1] = "ETA " .. clock_text(rate > 0 and (self.total - self.done) / rate or math.huge)
  end
  local extra = self.extra
  if type(extra) == "function" then
    local ok, s = pcall(extra)
    extra = ok and s or nil
  end
  if type(extra) == "string" and extra ~= "" then parts[#parts + 1] = extra end
  local text = table.concat(parts, "  ")
  if self.tty and #text > self.width then text = text:sub(1, self.width) end
  return text
end

function Progress:draw(final)
  if self.quiet then return end
  local text = self:line()
  if self.tty then
    if final and self.transient then
      self.out:write("\r\27[K")
    else
      self.out:write("\r", text, "\27[K", final and "\n" or "")
    end
  else
    self.out:write(text, "\n")
  end
  self.out:flush()
  self.drawn = not final
end

-- bar:update(done, [extra]) -- done so far (absolute); extra: a string, or a
-- function returning one (called only when the bar draws).
function Progress:update(done, extra)
  if self.quiet then return self end
  self.done = done or self.done
  if extra ~= nil then self.extra = extra end
  local t = self.clock()
  if self.tty then
    if t - self.last_draw >= 0.1 then
      self.last_draw = t
      self:draw(false)
    end
  elseif t - self.last_line >= self.interval then
    self.last_line = t
    self:draw(false)
  end
  return self
end

-- bar:step([n = 1], [extra]) -- n more done
function Progress:step(n, extra) return self:update(self.done + (n or 1), extra) end

-- bar:finish([extra]) -- the final line stays (a transient bar clears itself)
function Progress:finish(extra)
  if extra ~= nil then self.extra = extra end
  self.finished = true
  if self.quiet then return self end
  if self.tty or not self.transient then self:draw(true) end
  return self
end

-- bar:callback() -> function(done, extra): for code that reports each step
function Progress:callback()
  return function(done, extra) self:update(done, extra) end
end

function Progress:__tostring() return self:line() end

ml.doc(ml.progress, [[
ml.progress{total = n, label = "", unit = "it", quiet = false, interval = 30, transient = false, tty = auto} -> bar
  A progress bar: bar:update(done, [extra]) or bar:step([n]); bar:finish([extra]) leaves the last line.
  On a terminal it redraws in place (count, rate, ETA, extra) at most every 0.1 s; otherwise it prints a
  plain line at most every `interval` seconds and at the end; quiet = true prints nothing; transient =
  true clears the bar at the end. extra: a string or a function returning one (called only to draw).
  An update that does not draw costs one clock read: bar:callback() can be a per-step callback.
  out: where to write (io.stdout); clock: the time source in seconds (ml.clock; tests pass their own).
  e.g. local bar = ml.progress{total = 100, label = "pgd"}; for i = 1, 100 do ...; bar:update(i) end; bar:finish()]])
ml.doc(Progress.update, "bar:update(done, [extra]) -> bar: sets the count (absolute) and redraws when it is time")
ml.doc(Progress.step, "bar:step([n = 1], [extra]) -> bar: n more done")
ml.doc(Progress.finish, "bar:finish([extra]) -> bar: draws the final line (with the elapsed time) and ends the bar")
ml.doc(Progress.line, "bar:line() -> the bar's text as it stands (count, rate, ETA or elapsed time, extra)")
ml.doc(Progress.draw, "bar:draw([final]) -- draws the bar now (update and finish call it)")
ml.doc(Progress.callback, "bar:callback() -> function(done, extra) that updates the bar (a per-step callback)")

return Progress
