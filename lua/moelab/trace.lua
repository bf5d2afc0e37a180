-- Routing traces at the prompt: a trace prints as one row per MoE layer
-- (name, kind, items T, experts E, choices K, dropped choices, load per expert).
-- The trace itself is a C object (bindings/lua_trace.c); this file gives it
-- its printer through ml.extend.
local ml = require "moelab"

-- "12 30 0 7" for a few experts; "min 0, max 30, mean 12.3" for many
local function load_summary(load)
  local E = load:size(1)
  if E <= 16 then
    local parts = {}
    for i = 1, E do parts[i] = ("%d"):format(load[i]) end
    return table.concat(parts, " ")
  end
  return ("min %d, max %d, mean %.1f"):format(load:min():item(), load:max():item(), load:mean():item())
end

local function trace_table(t)
  if #t == 0 then return "routing trace (no MoE layer)" end
  local width = 5
  for _, name in ipairs(t:layers()) do width = math.max(width, #name) end
  width = math.min(width, 40)
  local row = "%-" .. width .. "s  %-7s %7s %5s %3s %8s  %s"
  local out = {row:format("layer", "kind", "T", "E", "K", "dropped", "load per expert")}
  for i = 1, #t do
    local l = t[i]
    local name = l.layer == "" and "(model)" or l.layer
    out[#out + 1] = row:format(name, l.kind, l.T, l.E, l.K, l.dropped, load_summary(l.load))
  end
  return table.concat(out, "\n")
end

ml.extend("Trace", {__tostring = trace_table})

return true
