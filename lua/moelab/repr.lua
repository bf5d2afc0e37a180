-- ml.repr: how the prompt shows a value. Tensors, modules and traces print
-- through their own __tostring; a plain table prints its contents (sorted keys,
-- nested tables a few levels deep, tensors inside as dtype and shape), cut
-- short past a screenful, so `m:parameters()` or a training history can be
-- read at the prompt instead of `table: 0x55...`.
local ml = require "moelab"
-- the globals it uses, kept: the prompt still prints after `tostring = nil`
local getmetatable, ipairs, pairs, pcall, select, tostring, type = getmetatable, ipairs, pairs, pcall, select, tostring, type
local math, table = math, table

local MAX_ITEMS, MAX_DEPTH, WIDTH = 40, 2, 100

local function kind(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name or type(v)
end

local function scalar(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if math.type(v) == "float" then
    if v ~= v or v == math.huge or v == -math.huge then return tostring(v) end
    return ("%.6g"):format(v)
  end
  return tostring(v)
end

-- one-line form of a value inside a table
local function inner(v)
  local k = kind(v)
  if k == "Tensor" then
    return ("tensor<%s %s>"):format(v:dtype(), v:dim() == 0 and "scalar" or table.concat(v:shape(), "x"))
  elseif k == "Module" then
    return ("<%s>"):format(v:describe())
  end
  return scalar(v)
end

local function sorted_keys(t)
  local keys, n = {}, #t
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys, n
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. scalar(k) .. "]"
end

local function render(t, depth, seen, indent)
  if seen[t] then return "{...}" end -- a cycle
  local mt = getmetatable(t)
  if mt and mt.__tostring then return tostring(t) end
  seen[t] = true
  local keys, n = sorted_keys(t)
  local parts, count = {}, 0
  local function add(text)
    count = count + 1
    if count <= MAX_ITEMS then parts[#parts + 1] = text end
  end
  for i = 1, n do
    local v = t[i]
    add(type(v) == "table" and (depth < MAX_DEPTH and render(v, depth + 1, seen, indent .. "  ") or "{...}")
        or inner(v))
  end
  for _, k in ipairs(keys) do
    local v = t[k]
    local text = type(v) == "table" and (depth < MAX_DEPTH and render(v, depth + 1, seen, indent .. "  ") or "{...}")
                 or inner(v)
    add(key_text(k) .. " = " .. text)
  end
  seen[t] = nil
  if count > MAX_ITEMS then parts[#parts + 1] = ("... (%d more)"):format(count - MAX_ITEMS) end
  if #parts == 0 then return "{}" end
  local flat = "{" .. table.concat(parts, ", ") .. "}"
  if #flat + #indent <= WIDTH and not flat:find("\n") then return flat end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function ml.repr(v)
  local mt = getmetatable(v) -- a value may say how the prompt shows it (plots: in colour)
  if type(mt) == "table" and type(rawget(mt, "__repr")) == "function" then return mt.__repr(v) end
  if type(v) == "table" then return render(v, 0, {}, "") end
  if type(v) == "string" then return v end
  return tostring(v)
end

------------------------------------------------------------------ the prompt's printer
ml.repl = ml.repl or {}

-- Methods that return their receiver so calls chain (m:eval():forward(x)): at
-- the prompt their result prints as one line, not as the whole model again.
local chaining = {eval = true, train = true, zero_grad = true, add = true, load_state_dict = true,
                  set_bn_momentum = true, set_moe_form = true}

local function fmt_count(n)
  if n >= 1e6 then return ("%.2fM"):format(n / 1e6) end
  if n >= 1e4 then return ("%.1fK"):format(n / 1e3) end
  return tostring(n)
end

-- one line for a module: "<Model mlp(...): 235.1K parameters, training mode>"
local function module_line(m)
  local total = m:num_params()
  local d = m:describe()
  if #d > 60 then d = d:sub(1, 57) .. "..." end
  return ("<%s: %s parameters, %s mode>"):format(d, fmt_count(total), m:is_training() and "training" or "eval")
end

-- A value that cannot be printed still gets a line (its type and why).
local function safe_text(v, brief)
  local ok, s = pcall(function()
    if brief and kind(v) == "Module" then return module_line(v) end
    return ml.repr(v)
  end)
  if ok and type(s) == "string" then return s end
  local why = ok and ("its text is a " .. type(s)) or (type(s) == "string" and s or ("a " .. type(s) .. " error value"))
  local name = kind(v)
  return ("<%s: cannot be printed: %s>"):format(name, why)
end

-- ml.repl.show(source, ...) -> the text the prompt prints for the values the
-- line `source` returned (tab-separated, as print does).
function ml.repl.show(source, ...)
  local method = type(source) == "string" and source:match(":%s*([%a_][%w_]*)%s*%b()%s*;?%s*$")
  local brief = method ~= nil and chaining[method] == true
  local n, out = select("#", ...), {}
  for i = 1, n do out[i] = safe_text((select(i, ...)), brief) end
  return table.concat(out, "\t")
end

ml.doc(ml.repl.show, [[
ml.repl.show(source, ...) -> string: how the prompt prints the values a line returned. Each value goes
  through ml.repr; a model that comes back from a chaining method (m:eval(), m:train()) is one line;
  a value whose printing fails shows its type and the reason instead of ending the session.]])

ml.doc(ml.repr, [[
ml.repr(value) -> string: what the prompt prints for a value. Tensors, modules and traces print
  themselves; plain tables show their contents (sorted keys, two levels deep, tensors as
  tensor<dtype shape>, at most 40 entries), e.g. m:parameters(), ml.memory(), a fit history.]])

return true
