-- ml.plot: plots as values. Each function takes the user's data (Lua lists,
-- tensors, tables of named series, or a results table: a list of rows, one
-- per measurement), checks the options, and builds the plot through
-- ml.plot._make (bindings/lua_plot.c). A plot prints itself at the prompt
-- (coloured on a terminal), tostring(p) is its text, p:render{...} draws it
-- at any size, p:png(path) writes it as a picture.
local ml = require "moelab"

local P = ml.plot
local methods = P._methods

-- Calls a C function for a public function of the library: an error reads as
-- raised on the user's line (the first caller outside lua/moelab), not here.
function P._call(f, ...)
  local res = table.pack(pcall(f, ...))
  if res[1] then return table.unpack(res, 2, res.n) end
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.what ~= "C" and not info.source:match("^@lua/moelab/")) then break end
    level = level + 1
  end
  error((tostring(res[2]):gsub("^lua/moelab/[%w_]+%.lua:%d+: ", "")), level)
end

local function make(spec) return P._call(P._make, spec) end

local COMMON = {"title", "xlabel", "ylabel", "width", "height", "ascii"}

local function is_tensor(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name == "Tensor"
end

-- Fails on a key that is not in `known` (a misspelt option never passes silently).
local function check_options(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("%s: options must be a table, got %s"):format(fn, type(opts)), 3) end
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      local names = {}
      for _, n in ipairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(("%s: unknown option %s (known: %s)"):format(fn, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

local function with(list, ...)
  local out = {table.unpack(list)}
  for _, k in ipairs({...}) do out[#out + 1] = k end
  return out
end

-- The common options copied into a spec.
local function spec_of(kind, opts, keys)
  local spec = {kind = kind}
  for _, k in ipairs(keys) do spec[k] = opts[k] end
  return spec
end

-- A list of numbers or a tensor: one series' values.
local function is_values(v)
  return is_tensor(v) or (type(v) == "table" and (type(v[1]) == "number" or next(v) == nil))
end

-- Labels as a new list of strings (numbers allowed; the caller's list is left alone).
local function strings(fn, what, list)
  if list == nil then return nil end
  if type(list) ~= "table" then error(("%s: %s must be a list of labels, got %s"):format(fn, what, type(list)), 3) end
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  return out
end

-- y as one series, a list of series, or a table name -> values (names sorted).
local function series_of(fn, x, y)
  if y == nil then error(fn .. ": y is missing (a list of numbers, a tensor, or {name = values, ...})", 3) end
  if is_values(y) then return {{y = y, x = x}} end
  if type(y) ~= "table" then error(("%s: y must be numbers or a table of series, got %s"):format(fn, type(y)), 3) end
  local out = {}
  if #y > 0 then
    for i, v in ipairs(y) do out[i] = {y = v, x = x} end
    return out
  end
  local names = {}
  for k in pairs(y) do names[#names + 1] = tostring(k) end
  table.sort(names)
  for i, name in ipairs(names) do out[i] = {name = name, y = y[name] ~= nil and y[name] or y[tonumber(name)], x = x} end
  return out
end

-- A results table (list of rows, each a table of fields) -> series.
local function is_rows(t)
  return type(t) == "table" and not is_tensor(t) and type(t[1]) == "table" and not is_values(t[1])
end

local function field(fn, row, i, key)
  local v = row[key]
  if v == nil then error(("%s: row %d has no field %q"):format(fn, i, key), 4) end
  if is_tensor(v) then v = v:item() end
  if type(v) ~= "number" then error(("%s: row %d field %q is a %s, not a number"):format(fn, i, key, type(v)), 4) end
  return v
end

local function series_from_rows(fn, rows, opts, sort)
  local ys = opts.y
  if ys == nil then error(fn .. ": with a results table, y names the field to plot (y = \"robust_acc\")", 3) end
  if type(ys) == "string" then ys = {ys} end
  local groups, order = {}, {}
  for i, row in ipairs(rows) do
    if type(row) ~= "table" then error(("%s: row %d is a %s, not a table"):format(fn, i, type(row)), 3) end
    for _, yk in ipairs(ys) do
      local name = #ys > 1 and yk or nil
      if opts.by ~= nil then
        local g = row[opts.by]
        if g == nil then error(("%s: row %d has no field %q"):format(fn, i, opts.by), 3) end
        name = #ys > 1 and (tostring(g) .. " " .. yk) or tostring(g)
      end
      local key = name or ""
      if not groups[key] then
        groups[key] = {name = name, x = {}, y = {}}
        order[#order + 1] = key
      end
      local s = groups[key]
      s.x[#s.x + 1] = opts.x and field(fn, row, i, opts.x) or i
      s.y[#s.y + 1] = field(fn, row, i, yk)
    end
  end
  local out = {}
  for _, key in ipairs(order) do
    local s = groups[key]
    if sort then -- a sweep's rows may come in any order: a line goes left to right
      local idx = {}
      for i = 1, #s.x do idx[i] = i end
      table.sort(idx, function(a, b) if s.x[a] ~= s.x[b] then return s.x[a] < s.x[b] end return a < b end)
      local sx, sy = {}, {}
      for i, j in ipairs(idx) do sx[i], sy[i] = s.x[j], s.y[j] end
      s.x, s.y = sx, sy
    end
    out[#out + 1] = s
  end
  if #out == 0 then error(fn .. ": the results table has no rows", 3) end
  return out, #ys == 1 and ys[1] or nil
end

local XY = with(COMMON, "x", "y", "xlog", "ylog", "xlim", "ylim")

local function xy(kind)
  return function(data, opts)
    local fn = kind
    if is_values(data) or (type(data) == "table" and is_values(data[1])) then
      -- one series, or a list of series: lines(values, {options})
      opts = check_options(fn, opts, with(COMMON, "xlog", "ylog", "xlim", "ylim"))
      local spec = spec_of(kind, opts, with(COMMON, "xlog", "ylog", "xlim", "ylim"))
      spec.series = series_of(fn, nil, data)
      return make(spec)
    end
    if is_rows(data) then
      opts = check_options(fn, opts, with(XY, "by"))
      local spec = spec_of(kind, opts, with(COMMON, "xlog", "ylog", "xlim", "ylim"))
      local ylabel
      spec.series, ylabel = series_from_rows(fn, data, opts, kind == "lines")
      spec.xlabel = spec.xlabel or (type(opts.x) == "string" and opts.x or nil)
      spec.ylabel = spec.ylabel or ylabel
      return make(spec)
    end
    if type(data) ~= "table" then error(("%s: expects {x = ..., y = ...}, values, or a results table, got %s"):format(fn, type(data)), 2) end
    if opts ~= nil then error(fn .. ": options go inside the table: " .. fn .. "{x = ..., y = ..., title = ...}", 2) end
    check_options(fn, data, XY)
    local spec = spec_of(kind, data, with(COMMON, "xlog", "ylog", "xlim", "ylim"))
    spec.series = series_of(fn, data.x, data.y)
    return make(spec)
  end
end

P.lines = ml.doc(xy("lines"), [[
ml.plot.lines{x = xs, y = ys, title, xlabel, ylabel, xlog, ylog, xlim = {lo, hi}, ylim, width, height, ascii}
ml.plot.lines(ys, {options}); ml.plot.lines(rows, {x = "eps", y = "robust_acc" | {"acc", ...}, by = "model", ...})
  -> a plot of lines (points joined in order; a NaN breaks the line and is noted, never drawn).
  xs: a list or 1-d tensor (default 1, 2, ...); ys: values (one series), a list of series, or
  {name = values, ...} (named series, a legend in the right margin, sorted by name).
  rows: a results table, one row per measurement; `by` makes one line per value of that field
  (in order of appearance, points sorted by x); axis labels default to the field names.
  Braille canvas on UTF-8 terminals, ASCII otherwise (ascii = true forces it); the size defaults
  to the terminal's. Printing the plot draws it; p:png("f.png") writes it as a picture.
  e.g. ml.plot.lines{x = eps, y = {dense = acc_dense, moe = acc_moe}, xlabel = "eps", ylim = {0, 1}}]])

P.scatter = ml.doc(xy("scatter"), [[
ml.plot.scatter{x = xs, y = ys, ...} or ml.plot.scatter(rows, {x = "f1", y = "f2", by = "class"})
  -> a plot of points (same options as ml.plot.lines; non-finite points are skipped and noted).]])

P.hist = ml.doc(function(values, opts)
  opts = check_options("hist", opts, with(COMMON, "bins", "density", "xlim", "ylim"))
  local spec = spec_of("hist", opts, with(COMMON, "bins", "density", "xlim", "ylim"))
  spec.values = values
  return make(spec)
end, [[
ml.plot.hist(values, [{bins = 10, density = false, xlim = {lo, hi}, title, xlabel, ylabel, width, height, ascii}])
  -> a histogram: values (a list or a tensor of any shape) counted into equal bins over their range
  (or xlim); density = true scales the bars to unit area. NaN and inf are skipped and noted.
  e.g. ml.plot.hist(model:parameters()["layers.1.weight"], {bins = 40})]])

P.bars = ml.doc(function(data, opts)
  local fn = "bars"
  opts = check_options(fn, opts, with(COMMON, "labels", "xlim", "x", "y"))
  local spec = spec_of("bars", opts, with(COMMON, "xlim"))
  if is_rows(data) then
    if not (opts.x and opts.y) then error("bars: with a results table, x names the label field and y the value field", 2) end
    spec.labels, spec.values = {}, {}
    for i, row in ipairs(data) do
      spec.labels[i] = tostring(row[opts.x])
      spec.values[i] = field(fn, row, i, opts.y)
    end
  elseif is_values(data) then
    spec.values = data
    local n = is_tensor(data) and data:numel() or #data
    spec.labels = strings(fn, "labels", opts.labels) or {}
    if not opts.labels then for i = 1, n do spec.labels[i] = tostring(i) end end
  elseif type(data) == "table" then -- {label = value, ...}, sorted by label
    spec.labels, spec.values = {}, {}
    for k in pairs(data) do spec.labels[#spec.labels + 1] = tostring(k) end
    table.sort(spec.labels)
    for i, k in ipairs(spec.labels) do
      local v = data[k] ~= nil and data[k] or data[tonumber(k)]
      spec.values[i] = is_tensor(v) and v:item() or v
    end
  else
    error(("bars: expects values, {label = value, ...} or a results table, got %s"):format(type(data)), 2)
  end
  return make(spec)
end, [[
ml.plot.bars(values, [{labels = {...}, xlim = {lo, hi}, title, width, height, ascii}])
ml.plot.bars({label = value, ...}) (sorted by label); ml.plot.bars(rows, {x = "label field", y = "value field"})
  -> labelled horizontal bars with their values, from zero (negative values grow left).
  e.g. ml.plot.bars({0.91, 0.42, 0.07}, {labels = {"clean", "fgsm", "pgd-10"}, title = "accuracy"})]])

P.heatmap = ml.doc(function(matrix, opts)
  opts = check_options("heatmap", opts, {"rows", "cols", "zlim", "title", "width", "height", "ascii"})
  local spec = spec_of("heatmap", opts, {"zlim", "title", "width", "height", "ascii"})
  spec.rows, spec.cols = strings("heatmap", "rows", opts.rows), strings("heatmap", "cols", opts.cols)
  spec.matrix = matrix
  return make(spec)
end, [[
ml.plot.heatmap(matrix, [{rows = {labels}, cols = {labels}, zlim = {lo, hi}, title, width, height, ascii}])
  -> a 2-d tensor (or nested lists) as shaded cells (·░▒▓█, ASCII .:-=+*#%@; colours on a terminal)
  with row labels on the left, column labels above and the scale below (low value, shades, high
  value; zlim fixes it). Rows and columns are numbered from 1 unless labelled; a matrix larger
  than the plot is shown in blocks (their means). Non-finite cells stay blank and are noted.
  e.g. ml.plot.heatmap(load, {rows = {"layer 2", "layer 4"}, title = "expert load"})]])

P.spark = ml.doc(function(values, opts)
  opts = check_options("spark", opts, {"title", "ylim", "width", "ascii"})
  local spec = spec_of("spark", opts, {"title", "ylim", "width", "ascii"})
  spec.series = {{y = values}}
  return make(spec)
end, [[
ml.plot.spark(values, [{title, ylim = {lo, hi}, width, ascii}]) -> a one-line sparkline ▁▂▃▄▅▆▇█
  (ASCII _.-=+*#@) of a list or tensor, preceded by the title and followed by the last value;
  more values than columns are averaged in groups; ylim fixes the scale. e.g. ml.plot.spark(losses, {title = "loss"})]])

P.grid = ml.doc(function(list)
  if type(list) ~= "table" then error(("grid: expects {plot1, plot2, ..., cols = n}, got %s"):format(type(list)), 2) end
  local spec = {kind = "grid", plots = {}}
  for k, v in pairs(list) do
    if math.type(k) == "integer" then spec.plots[k] = v
    elseif k == "cols" or k == "title" or k == "width" or k == "height" or k == "ascii" then spec[k] = v
    else error(("grid: unknown option %s (known: ascii, cols, height, title, width)"):format(tostring(k)), 2) end
  end
  return make(spec)
end, [[
ml.plot.grid{p1, p2, ..., [cols = n, title, width, height, ascii]} -> the plots side by side (cols
  per row, default all in one row); rows of fixed-height plots (spark, bars, heatmap) take what they
  need, the others share the rest. A grid of plots redraws as one: the base of a dashboard.
  e.g. ml.plot.grid{ml.plot.spark(loss, {title = "loss"}), ml.plot.heatmap(load), cols = 1}]])

ml.doc(methods.render, [[
p:render([{width, height, ascii, color = false}]) -> the plot drawn as a string at that size (default:
  the plot's own width/height, else the terminal's); color = true adds ANSI colours. A live view
  redraws a plot with this at a fixed rate.]])
ml.doc(methods.show, [[
p:show([{width, height, ascii, color}]) prints the plot, in colour on a terminal unless NO_COLOR is set
  (print(p) and tostring(p) give the text without colour).]])
ml.doc(methods.png, [[
p:png(path, [{scale = 2, width, height}]) writes the plot as a PNG: the same layout as the terminal's
  (80 x 24 cells unless the plot or the options say otherwise), each cell 6x12 pixels times scale,
  lines at pixel resolution, text in the built-in bitmap font.]])
ml.doc(methods.kind, "p:kind() -> \"lines\", \"scatter\", \"hist\", \"bars\", \"heatmap\", \"spark\" or \"grid\"")

return true
