-- Option tables of Lua library functions: one check for all of them (the C
-- bindings have mlua_check_options). require "moelab.options".check(fn, opts,
-- known, level) returns opts (or {} for nil) and raises, at the caller's
-- caller `level` levels up, on a value that is not a plain table or on a key
-- the function does not know, listing the ones it does.
local M = {}

local function kind(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name or type(v)
end

function M.check(fn, opts, known, level)
  level = (level or 1) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" or getmetatable(opts) ~= nil then
    error(("%s: options must be a table, got a %s"):format(fn, kind(opts)), level)
  end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(("%s: unknown option %q (known: %s)"):format(fn, tostring(k), table.concat(names, ", ")), level)
    end
  end
  return opts
end

M.kind = kind

return M
