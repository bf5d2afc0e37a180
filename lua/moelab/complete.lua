-- ml.repl.complete: what Tab proposes at the prompt. It reads the line up to
-- the cursor, finds the expression being typed and walks it without running
-- user code (raw table reads; of our own objects only pure lookups such as a
-- module's children), so completion never has side effects. Every candidate
-- is valid Lua: a module's children complete to m:get("name") or, for the
-- numbered children of a Sequential, m[i] (1-based position).
local ml = require "moelab"
ml.repl = ml.repl or {}

local G = _ENV -- the global table, whatever the user later does to _G

local keywords = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                  "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}

local function kind(v)
  local mt = getmetatable(v)
  if type(v) == "userdata" and type(mt) == "table" then return rawget(mt, "__name") or "userdata" end
  return type(v)
end

local function starts(s, prefix) return s:sub(1, #prefix) == prefix end

local function is_ident(s) return s:match("^[%a_][%w_]*$") ~= nil end

-- The tables a value's fields come from: the table itself, then its
-- metatable's __index (when a table), a few levels up; for userdata the
-- method table of the metatable (__methods, or __index when a table).
local function field_tables(v)
  local out = {}
  local cur, guard = v, 0
  if type(v) == "userdata" then
    local mt = getmetatable(v)
    if type(mt) == "table" then
      if type(rawget(mt, "__methods")) == "table" then out[#out + 1] = rawget(mt, "__methods") end
      if type(rawget(mt, "__index")) == "table" then out[#out + 1] = rawget(mt, "__index") end
    end
    return out
  end
  while type(cur) == "table" and guard < 8 do
    out[#out + 1] = cur
    local mt = getmetatable(cur)
    cur = type(mt) == "table" and rawget(mt, "__index") or nil
    guard = guard + 1
  end
  return out
end

local function field(v, k)
  if type(v) == "table" then
    for _, t in ipairs(field_tables(v)) do
      local x = rawget(t, k)
      if x ~= nil then return x end
    end
    return nil
  end
  if kind(v) == "Tensor" and k == "grad" then return v.grad end
  return nil
end

local function child(v, key)
  local ok, c = pcall(v.get, v, key)
  return ok and c or nil
end

local function index(v, key)
  if type(v) == "table" then return rawget(v, key) end
  local k = kind(v)
  if k == "Module" then return child(v, key) end
  if k == "Tensor" and math.type(key) == "integer" then return v end -- a slice: still a tensor
  return nil
end

local function literal(text)
  local n = text:match("^%s*(%-?%d+)%s*$")
  if n then return math.tointeger(tonumber(n)) end
  local _, s = text:match("^%s*([\"'])(.-)%1%s*$")
  return s
end

-- Evaluates a prefix expression (Name, then .name, [literal], :get(literal))
-- without side effects; returns the value, or nil when it cannot.
local function walk(expr)
  local name, rest = expr:match("^([%a_][%w_]*)(.*)$")
  if not name then return nil end
  local v = rawget(G, name)
  while v ~= nil and rest ~= "" do
    local k, r = rest:match("^%.([%a_][%w_]*)(.*)$")
    if k then
      v, rest = field(v, k), r
    else
      local inner, r2 = rest:match("^(%b[])(.*)$")
      if inner then
        local key = literal(inner:sub(2, -2))
        if key == nil then return nil end
        v, rest = index(v, key), r2
      else
        local m, args, r3 = rest:match("^:%s*([%a_][%w_]*)%s*(%b())(.*)$")
        if m == "get" and kind(v) == "Module" then
          local key = literal(args:sub(2, -2))
          if key == nil then return nil end
          v, rest = child(v, key), r3
        else
          return nil
        end
      end
    end
  end
  return v
end

local function add(set, list, text)
  if not set[text] then
    set[text] = true
    list[#list + 1] = text
  end
end

-- Candidates after `prefix.` or `prefix:`.
local function members(v, prefix, sep, partial, out, set)
  local hidden = not starts(partial, "_")
  if sep == "." and kind(v) == "Module" then
    local ok, kids = pcall(v.children, v)
    if ok then
      for i, c in ipairs(kids) do
        if starts(c.name, partial) then
          if c.name:match("^%d+$") then add(set, out, ("%s[%d]"):format(prefix, i))
          else add(set, out, ("%s:get(%q)"):format(prefix, c.name)) end
        end
      end
    end
    return
  end
  if sep == "." and kind(v) == "Tensor" then
    if starts("grad", partial) then add(set, out, prefix .. ".grad") end
    return
  end
  if sep == "." and type(v) ~= "table" then return end
  for _, t in ipairs(field_tables(v)) do
    for k, x in next, t do
      if type(k) == "string" and starts(k, partial) and not (hidden and starts(k, "_")) then
        if sep == ":" then
          if type(x) == "function" and is_ident(k) then add(set, out, prefix .. ":" .. k) end
        elseif is_ident(k) then
          add(set, out, prefix .. "." .. k)
        elseif t == v then
          add(set, out, ("%s[%q]"):format(prefix, k))
        end
      end
    end
  end
end

-- File names for a string being typed: paths relative to the working folder.
local function files(partial, out, set)
  local list = rawget(ml.repl, "_listdir")
  if type(list) ~= "function" then return end
  local dir, base = partial:match("^(.*/)([^/]*)$")
  if not dir then dir, base = "", partial end
  local ok, entries = pcall(list, dir == "" and "." or dir)
  if not ok then return end
  for _, e in ipairs(entries) do
    local name, is_dir = e[1], e[2]
    if starts(name, base) and (starts(base, ".") or not starts(name, ".")) then
      add(set, out, dir .. name .. (is_dir and "/" or ""))
    end
  end
end

-- Where the string the cursor is in starts (the position after its quote), or nil.
local function open_string(line)
  local i, n, quote, start = 1, #line, nil, nil
  while i <= n do
    local c = line:sub(i, i)
    if quote then
      if c == "\\" then i = i + 1
      elseif c == quote then quote = nil end
    elseif c == '"' or c == "'" then
      quote, start = c, i + 1
    elseif c == "-" and line:sub(i + 1, i + 1) == "-" then
      return nil, true -- a comment: nothing to complete
    end
    i = i + 1
  end
  if quote then return start end
  return nil
end

-- Where the expression before the cursor starts: names, dots, colons and
-- balanced brackets, read backwards.
local function expression_start(line)
  local pos = #line
  while pos >= 1 do
    local c = line:sub(pos, pos)
    if c:match("[%w_.:]") then
      pos = pos - 1
    elseif c == "]" or c == ")" then
      local open, depth = c == "]" and "[" or "(", 0
      local j = pos
      while j >= 1 do
        local d = line:sub(j, j)
        if d == c then depth = depth + 1 elseif d == open then depth = depth - 1 end
        if depth == 0 then break end
        j = j - 1
      end
      if j < 1 then return nil end
      pos = j - 1
    else
      break
    end
  end
  return pos + 1
end

function ml.repl.complete(line)
  if type(line) ~= "string" then error("repl.complete: expects the line before the cursor (a string)", 2) end
  local out, set = {}, {}
  local sstart, comment = open_string(line)
  if comment then return out, #line + 1 end
  if sstart then
    local partial = line:sub(sstart)
    local before = line:sub(1, sstart - 2)
    local recv = before:match("^(.-):%s*get%s*%(%s*$")
    local m = recv and walk(recv:sub(expression_start(recv)))
    if kind(m) == "Module" then -- m:get("bl -> the paths of its submodules
      local ok, mods = pcall(m.modules, m)
      if ok then
        for _, e in ipairs(mods) do
          if e.path ~= "" and starts(e.path, partial) then add(set, out, e.path) end
        end
      end
    else
      files(partial, out, set)
    end
    table.sort(out)
    return out, sstart
  end
  local s = expression_start(line)
  local expr = line:sub(s)
  if expr:match("^%d") then return out, s end
  if is_ident(expr) or expr == "" then
    if expr ~= "" or s > 1 then
      for k in next, G do
        if type(k) == "string" and is_ident(k) and starts(k, expr) and not (starts(k, "_") and not starts(expr, "_")) then
          add(set, out, k)
        end
      end
      for _, k in ipairs(keywords) do
        if expr ~= "" and starts(k, expr) then add(set, out, k) end
      end
    end
  else
    local prefix, sep, partial = expr:match("^(.-)([.:])([%a_]?[%w_]*)$")
    if prefix and prefix ~= "" then
      local v = walk(prefix)
      if v ~= nil then members(v, prefix, sep, partial, out, set) end
    end
  end
  table.sort(out)
  return out, s
end

ml.doc(ml.repl.complete, [[
ml.repl.complete(line) -> candidates, start: what Tab proposes for the line typed so far (up to the
  cursor). Candidates are whole expressions replacing line[start..]: globals and keywords, fields of
  tables, methods (x:res -> x:reshape), children of modules (m.<Tab> -> m:get("layer1"), m[1]),
  submodule paths inside m:get("..."), and file names inside any other string. No user code runs.]])

return true
