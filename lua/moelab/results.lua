-- ml.results: tables of results. Every metric of ml.metrics returns its
-- numbers as rows (a list of flat tables: strings, numbers, booleans), in a
-- Rows object that prints at the prompt as an aligned table, plots with
-- ml.plot.lines(rows, {x = "eps", y = "robust_accuracy", by = "model"}), and is
-- written as CSV or JSON Lines and read back unchanged (types included).
local ml = require "moelab"
local R = {}
ml.results = R

local Rows = {}
Rows.__index = Rows
Rows.__name = "moelab.Rows"

-- Columns shown first, in this order, when present; then the others sorted
-- by name; the provenance fields come last.
local first = {"model", "layer", "kind", "set", "mode", "expert", "eps", "sigma", "norm", "attack", "n", "items",
               "accuracy", "robust_accuracy", "rate", "mean_iou", "mean_tv"}
local last = {"seed", "config_hash", "settings"}
local rank = {}
for i, k in ipairs(first) do rank[k] = i end
for i, k in ipairs(last) do rank[k] = 1000 + i end

local function is_rows(t) return getmetatable(t) == Rows end

-- The column order of a list of rows.
local function columns(rows)
  local seen, cols = {}, {}
  for _, row in ipairs(rows) do
    for k in pairs(row) do
      if type(k) == "string" and not seen[k] then
        seen[k] = true
        cols[#cols + 1] = k
      end
    end
  end
  table.sort(cols, function(a, b)
    local ra, rb = rank[a] or 500, rank[b] or 500
    if ra ~= rb then return ra < rb end
    return a < b
  end)
  return cols
end

local function check_row(fn, row, i)
  if type(row) ~= "table" then error(("%s: row %d is a %s, not a table"):format(fn, i, type(row)), 3) end
  for k, v in pairs(row) do
    if type(k) ~= "string" then error(("%s: row %d has a key %s that is not a name"):format(fn, i, tostring(k)), 3) end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      error(("%s: row %d field %q is a %s (rows hold strings, numbers and booleans)"):format(fn, i, k, tv), 3)
    end
  end
end

-- ml.results.rows(list, [extra]) -> Rows: the rows of list (each a flat table);
-- extra: fields kept beside the rows (distributions as tensors, notes).
function R.rows(list, extra)
  if type(list) ~= "table" then error("results.rows: expects a list of rows", 2) end
  local out = setmetatable({}, Rows)
  for i, row in ipairs(list) do
    check_row("results.rows", row, i)
    out[i] = row
  end
  for k, v in pairs(extra or {}) do
    if type(k) ~= "string" then error("results.rows: extra fields need names", 2) end
    out[k] = v
  end
  return out
end

function Rows:columns() return columns(self) end

-- rows:select(field, value) -> Rows with the rows whose field equals value
function Rows:select(field, value)
  local out = setmetatable({}, Rows)
  for _, row in ipairs(self) do
    if row[field] == value then out[#out + 1] = row end
  end
  return out
end

-- rows:column(name) -> the list of that field's values (nil where absent)
function Rows:column(name)
  local out = {}
  for i, row in ipairs(self) do out[i] = row[name] end
  return out
end

------------------------------------------------------------------ printing
local function cell(v)
  if v == nil then return "" end
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    local a = math.abs(v)
    if a ~= 0 and (a < 1e-3 or a >= 1e6) then return ("%.3e"):format(v) end
    return ("%.4f"):format(v):gsub("0+$", ""):gsub("%.$", "")
  end
  return (tostring(v):gsub("[\r\n\t]", {["\r"] = "\\r", ["\n"] = "\\n", ["\t"] = " "}))
end

local function render(rows, max_rows)
  if #rows == 0 then return "(no rows)" end
  local cols = columns(rows)
  local width, text = {}, {}
  for j, c in ipairs(cols) do width[j] = #c end
  local shown = math.min(#rows, max_rows or math.huge)
  for i = 1, shown do
    text[i] = {}
    for j, c in ipairs(cols) do
      local s = cell(rows[i][c])
      if #s > 40 then s = s:sub(1, 37) .. "..." end
      text[i][j] = s
      width[j] = math.max(width[j], #s)
    end
  end
  local function line(values, numeric)
    local parts = {}
    for j, s in ipairs(values) do
      local fmt = numeric and numeric[j] and "%" .. width[j] .. "s" or "%-" .. width[j] .. "s"
      parts[j] = fmt:format(s)
    end
    return (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local numeric = {}
  for j, c in ipairs(cols) do numeric[j] = type(rows[1][c]) == "number" end
  local out = {line(cols, numeric)}
  local rule = {}
  for j = 1, #cols do rule[j] = ("-"):rep(width[j]) end
  out[#out + 1] = line(rule)
  for i = 1, shown do out[#out + 1] = line(text[i], numeric) end
  if shown < #rows then out[#out + 1] = ("... %d more rows"):format(#rows - shown) end
  return table.concat(out, "\n")
end

Rows.__tostring = function(self) return render(self, 200) end
function Rows:show() print(render(self)) return self end

------------------------------------------------------------------ values as text
-- The shortest decimal text that reads back as the same double; a float
-- with an integral value keeps a ".0" so that it reads back as a float.
local function number_text(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  if math.type(v) == "integer" then return tostring(v) end
  local s
  for digits = 15, 17 do
    s = ("%." .. digits .. "g"):format(v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local function number_from(s)
  if s == "nan" or s == "NaN" then return 0 / 0 end
  if s == "inf" or s == "Infinity" then return math.huge end
  if s == "-inf" or s == "-Infinity" then return -math.huge end
  if s:find("^[-+]?%d+$") then return math.tointeger(tonumber(s)) or tonumber(s) end
  return tonumber(s)
end

------------------------------------------------------------------ CSV (RFC 4180; strings always quoted)
local function csv_field(v)
  if v == nil then return "" end
  if type(v) == "boolean" then return tostring(v) end
  if type(v) == "number" then return number_text(v) end
  return '"' .. tostring(v):gsub('"', '""') .. '"'
end

local function write_csv(f, rows, cols)
  local head = {}
  for j, c in ipairs(cols) do head[j] = c:find('[,"\r\n]') and csv_field(c) or c end
  f:write(table.concat(head, ","), "\n")
  for _, row in ipairs(rows) do
    local parts = {}
    for j, c in ipairs(cols) do parts[j] = csv_field(row[c]) end
    f:write(table.concat(parts, ","), "\n")
  end
end

-- Splits CSV text into records of {text, quoted} fields.
local function csv_records(text, path)
  local records, fields, i, n = {}, {}, 1, #text
  local line = 1
  while i <= n + 1 do
    local c = text:sub(i, i)
    if c == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = text:find('"', j, true)
        if not q then error(("results.read: %s line %d: a quoted field is not closed"):format(path, line), 3) end
        buf[#buf + 1] = text:sub(j, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          buf[#buf + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      local s = table.concat(buf)
      for _ in s:gmatch("\n") do line = line + 1 end
      fields[#fields + 1] = {s, true}
      c = text:sub(i, i)
    else
      local j = text:find("[,\r\n]", i) or n + 1
      fields[#fields + 1] = {text:sub(i, j - 1), false}
      i = j
      c = text:sub(i, i)
    end
    if c == "," then
      i = i + 1
    elseif c == "\r" or c == "\n" or c == "" then
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      i = i + 1
      line = line + 1
      if not (#fields == 1 and fields[1][1] == "" and not fields[1][2]) then records[#records + 1] = fields end
      fields = {}
      if c == "" then break end
    else
      error(("results.read: %s line %d: unexpected %q after a quoted field"):format(path, line, c), 3)
    end
  end
  return records
end

local function read_csv(text, path)
  local records = csv_records(text, path)
  if #records == 0 then return {} end
  local cols = {}
  for j, f in ipairs(records[1]) do cols[j] = f[1] end
  local rows = {}
  for r = 2, #records do
    local rec, row = records[r], {}
    if #rec ~= #cols then
      error(("results.read: %s record %d has %d fields, the header %d"):format(path, r, #rec, #cols), 3)
    end
    for j, f in ipairs(rec) do
      local s, quoted = f[1], f[2]
      local v
      if quoted then v = s
      elseif s == "" then v = nil
      elseif s == "true" then v = true
      elseif s == "false" then v = false
      else
        v = number_from(s)
        if v == nil then v = s end
      end
      row[cols[j]] = v
    end
    rows[#rows + 1] = row
  end
  return rows
end

------------------------------------------------------------------ JSON Lines (flat objects)
local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
                 ["\t"] = "\\t"}
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
end

local function json_value(v)
  if type(v) == "string" then return json_string(v) end
  if type(v) == "boolean" then return tostring(v) end
  local s = number_text(v)
  if s == "nan" then return "NaN" elseif s == "inf" then return "Infinity" elseif s == "-inf" then return "-Infinity" end
  return s
end

local function write_jsonl(f, rows, cols)
  for _, row in ipairs(rows) do
    local parts = {}
    for _, c in ipairs(cols) do
      if row[c] ~= nil then parts[#parts + 1] = json_string(c) .. ":" .. json_value(row[c]) end
    end
    f:write("{", table.concat(parts, ","), "}\n")
  end
end

-- One flat JSON object; NaN, Infinity and -Infinity are read as numbers
-- (Python's json module writes them so).
local function parse_object(s, where)
  local i = 1
  local function fail(what) error(("results.read: %s: %s at character %d"):format(where, what, i), 4) end
  local function ws() i = s:find("[^ \t\r\n]", i) or #s + 1 end
  local function str()
    if s:sub(i, i) ~= '"' then fail("a string expected") end
    local buf = {}
    i = i + 1
    while true do
      local c = s:sub(i, i)
      if c == "" then fail("an unclosed string") end
      if c == '"' then i = i + 1 break end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        local simple = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}
        if simple[e] then
          buf[#buf + 1] = simple[e]
          i = i + 2
        elseif e == "u" then
          local code = tonumber(s:sub(i + 2, i + 5), 16)
          if not code then fail("a bad \\u escape") end
          buf[#buf + 1] = utf8.char(code)
          i = i + 6
        else
          fail("a bad escape")
        end
      else
        buf[#buf + 1] = c
        i = i + 1
      end
    end
    return table.concat(buf)
  end
  local function value()
    local c = s:sub(i, i)
    if c == '"' then return str() end
    for word, v in pairs({["true"] = true, ["false"] = false, ["null"] = "null", NaN = 0 / 0, Infinity = math.huge,
                          ["-Infinity"] = -math.huge}) do
      if s:sub(i, i + #word - 1) == word then
        i = i + #word
        if v == "null" then return nil end
        return v
      end
    end
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then fail("a value expected") end
    i = i + #num
    return number_from(num)
  end
  ws()
  if s:sub(i, i) ~= "{" then fail("an object expected") end
  i = i + 1
  local row = {}
  ws()
  if s:sub(i, i) == "}" then return row end
  while true do
    ws()
    local k = str()
    ws()
    if s:sub(i, i) ~= ":" then fail("':' expected") end
    i = i + 1
    ws()
    row[k] = value()
    ws()
    local c = s:sub(i, i)
    i = i + 1
    if c == "}" then break end
    if c ~= "," then fail("',' or '}' expected") end
  end
  ws()
  if i <= #s then fail("text after the object") end
  return row
end

local function read_jsonl(text, path)
  local rows, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then rows[#rows + 1] = parse_object(line, ("%s line %d"):format(path, n)) end
  end
  return rows
end

------------------------------------------------------------------ files
local function format_of(fn, path)
  if type(path) ~= "string" then error(("%s: the file must be a path, got %s"):format(fn, type(path)), 3) end
  local ext = path:match("%.(%w+)$")
  ext = ext and ext:lower()
  if ext == "csv" then return "csv" end
  if ext == "jsonl" or ext == "ndjson" then return "jsonl" end
  error(("%s: %s: use a .csv or .jsonl file"):format(fn, path), 3)
end

function R.write(rows, path)
  local fmt = format_of("results.write", path)
  if type(rows) ~= "table" then error("results.write: expects rows (a list of tables), got " .. type(rows), 2) end
  for i, row in ipairs(rows) do check_row("results.write", row, i) end
  local cols = columns(rows)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then error(("results.write: cannot write %s: %s"):format(path, err), 2) end
  if fmt == "csv" then write_csv(f, rows, cols) else write_jsonl(f, rows, cols) end
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then error(("results.write: cannot write %s: %s"):format(path, rerr), 2) end
  return rows
end

function R.read(path)
  local fmt = format_of("results.read", path)
  local f, err = io.open(path, "r")
  if not f then error(("results.read: cannot read %s: %s"):format(path, err), 2) end
  local text = f:read("a")
  f:close()
  return R.rows(fmt == "csv" and read_csv(text, path) or read_jsonl(text, path))
end

ml.doc(R.rows, [[
ml.results.rows(list, [extra]) -> rows
  A table of results: list holds flat rows (tables of strings, numbers, booleans); extra adds named fields
  beside them (tensors of distributions, notes). Rows print as an aligned table, plot with
  ml.plot.lines(rows, {x = "eps", y = "robust_accuracy", by = "model"}), and are written with ml.results.write.
  Methods: rows:columns(), rows:select(field, value), rows:column(name), rows:show() (every row).]])
ml.doc(R.write, [[
ml.results.write(rows, "file.csv" | "file.jsonl") -> rows
  Writes the rows (atomically). CSV: one header line, strings quoted, numbers in the shortest text that reads
  back exactly (nan, inf), empty fields for missing values. JSON Lines: one object per row (NaN, Infinity as
  Python writes them). ml.results.read gives back the same values and types.]])
ml.doc(R.read, "ml.results.read(\"file.csv\" | \"file.jsonl\") -> rows (as ml.results.write wrote them)")
ml.doc(Rows.columns, "rows:columns() -> the column names in display order")
ml.doc(Rows.select, "rows:select(field, value) -> the rows whose field equals value")
ml.doc(Rows.column, "rows:column(name) -> the list of that field's values")
ml.doc(Rows.show, "rows:show() -> rows; prints every row (printing a table shows the first 200)")
ml.doc(R, "ml.results -- tables of results: rows, write (CSV, JSON Lines), read")

return R
