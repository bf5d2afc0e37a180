-- ml.results: rows print as an aligned table; CSV and JSON Lines round-trip
-- every value and type (integers, floats, NaN, infinities, booleans, strings
-- with quotes, commas and newlines, missing fields); bad input is refused.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if a ~= a then return b ~= b end
    return a == b and math.type(a) == math.type(b)
  end
  return a == b
end

local rows = ml.results.rows({
  {model = "vmoe", eps = 0.0, n = 256, accuracy = 0.9140625, ["rc:blocks.1.mlp"] = 1 / 3, seed = 7,
   config_hash = "00ff00ff00ff00ff", settings = "steps=10 alpha=0.01"},
  {model = "dense, \"quoted\"\nname", eps = 2 / 255, n = 256, accuracy = 0 / 0, robust_accuracy = 0.1, seed = 7,
   config_hash = "none", exact = true, big = 1e300, tiny = -5e-324, inf = math.huge, ninf = -math.huge},
  {model = "", eps = 1.0, n = -3, exact = false, text = "12", other = "nan", flt = 3.0},
}, {note = "extra fields stay beside the rows"})

T.test("rows print as a table", function()
  local s = tostring(rows)
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  T.check(lines[1]:find("^model%s+eps%s+n%s+accuracy%s+robust_accuracy"), "leading columns in order: " .. lines[1])
  T.check(lines[1]:find("seed%s+config_hash%s+settings$"), "provenance last: " .. lines[1])
  T.check(lines[2]:find("^%-%-%-%-%-"), "rule")
  T.check(#lines == 2 + 3, "one line per row")
  T.check(s:find("0.9141"), "numbers shortened")
  T.check(rows.note == "extra fields stay beside the rows", "extra")
  T.check(#rows:select("seed", 7) == 2 and rows:column("n")[3] == -3, "select and column")
end)

for _, ext in ipairs({"csv", "jsonl"}) do
  T.test("round trip through " .. ext, function()
    local path = os.tmpname() .. "." .. ext
    ml.results.write(rows, path)
    local back = ml.results.read(path)
    os.remove(path)
    T.check(#back == #rows, "row count")
    for i, row in ipairs(rows) do
      for k, v in pairs(row) do
        T.check(same(back[i][k], v), ("row %d field %s: %s (%s) vs %s (%s)"):format(i, k, tostring(back[i][k]),
          math.type(back[i][k]) or type(back[i][k]), tostring(v), math.type(v) or type(v)))
      end
      for k in pairs(back[i]) do T.check(row[k] ~= nil, ("row %d gained field %s"):format(i, k)) end
    end
    T.check(getmetatable(back) == getmetatable(rows), "read gives rows")
  end)
end

T.test("CSV text is what other tools read", function()
  local path = os.tmpname() .. ".csv"
  ml.results.write(ml.results.rows({{model = "a,b", eps = 0.5, n = 2}}), path)
  local f = io.open(path)
  local text = f:read("a")
  f:close()
  os.remove(path)
  T.check(text == 'model,eps,n\n"a,b",0.5,2\n', text)
end)

T.test("bad input", function()
  T.raises(function() ml.results.write(rows, "/tmp/x.txt") end, "results.write: /tmp/x.txt: use a .csv or .jsonl file")
  T.raises(function() ml.results.write({{a = {1}}}, "/tmp/x.csv") end,
    "results.write: row 1 field \"a\" is a table (rows hold strings, numbers and booleans)")
  T.raises(function() ml.results.read("/nonexistent/r.csv") end, "results.read: cannot read /nonexistent/r.csv")
  local path = os.tmpname() .. ".csv"
  local f = io.open(path, "w")
  f:write('a,b\n1,2,3\n')
  f:close()
  T.raises(function() ml.results.read(path) end, "record 2 has 3 fields, the header 2")
  f = io.open(path, "w")
  f:write('a\n"open\n')
  f:close()
  T.raises(function() ml.results.read(path) end, "a quoted field is not closed")
  os.remove(path)
  path = os.tmpname() .. ".jsonl"
  f = io.open(path, "w")
  f:write('{"a": 1}\n{"a": }\n')
  f:close()
  T.raises(function() ml.results.read(path) end, "line 2: a value expected")
  os.remove(path)
end)

T.done()
