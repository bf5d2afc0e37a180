-- ml.plot: every kind drawn from fixed data at a fixed size must give exactly
-- the text stored in tests/golden/ (braille and ASCII); colour only when asked;
-- sizes and glyphs from the environment; PNGs read back; clear errors.
-- MOELAB_GOLDEN_UPDATE=1 rewrites the stored texts (then read them before committing).
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local UPDATE = os.getenv("MOELAB_GOLDEN_UPDATE") == "1"
local MOELAB = arg and arg[-1] or "./build/moelab"

local function golden(name, text)
  local path = "tests/golden/plot_" .. name .. ".txt"
  if UPDATE then
    local f = assert(io.open(path, "w"))
    f:write(text, "\n")
    f:close()
    return
  end
  local f = io.open(path)
  if not T.check(f ~= nil, "missing golden file " .. path .. " (run with MOELAB_GOLDEN_UPDATE=1)") then return end
  local want = f:read("a"):gsub("\n$", "")
  f:close()
  if text ~= want then
    local line = 1
    local got_lines, want_lines = {}, {}
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do got_lines[#got_lines + 1] = l end
    for l in (want .. "\n"):gmatch("([^\n]*)\n") do want_lines[#want_lines + 1] = l end
    while got_lines[line] == want_lines[line] do line = line + 1 end
    T.check(false, ("%s differs at line %d:\n  got:  %s\n  want: %s"):format(path, line, tostring(got_lines[line]),
      tostring(want_lines[line])))
  else
    T.check(true)
  end
end

-- both glyph sets of one plot
local function golden2(name, p, opts)
  opts = opts or {}
  golden(name .. "_braille", p:render{width = opts.width, height = opts.height, ascii = false})
  golden(name .. "_ascii", p:render{width = opts.width, height = opts.height, ascii = true})
end

-- fixed data, no random numbers
local eps, dense, moe = {}, {}, {}
for i = 0, 10 do
  eps[#eps + 1] = i / 255
  dense[#dense + 1] = 0.98 * math.exp(-i * 0.45)
  moe[#moe + 1] = 0.97 * math.exp(-i * 0.2)
end
moe[5] = 0 / 0

T.test("lines: legend, labels, NaN note (golden)", function()
  local p = ml.plot.lines{x = eps, y = {dense = dense, moe = moe}, title = "robust accuracy under PGD",
                          xlabel = "eps", ylabel = "accuracy", width = 64, height = 18}
  T.check(p:kind() == "lines")
  golden2("lines", p)
  local text = tostring(p)
  T.check(text:find("(1 non-finite point skipped)", 1, true), "the NaN is noted")
  T.check(text:find("── dense", 1, true) and text:find("── moe", 1, true), "legend")
end)

T.test("lines: log scales, tensors, fixed limits (golden)", function()
  local x = ml.tensor({1e-4, 1e-3, 1e-2, 1e-1, 1, 10})
  local p = ml.plot.lines{x = x, y = x * x + 1e-6, xlog = true, ylog = true, width = 50, height = 14, title = "y = x^2"}
  golden2("lines_log", p)
  local q = ml.plot.lines{y = {1, 4, 2, 8, 5, 7}, ylim = {0, 10}, xlim = {1, 6}, width = 40, height = 10}
  golden2("lines_limits", q)
end)

T.test("lines from a results table (golden)", function()
  local rows = {}
  for _, model in ipairs{"dense", "moe-e8"} do
    for _, e in ipairs{8, 0, 4, 2, 1} do -- out of order on purpose: the line goes left to right
      rows[#rows + 1] = {model = model, eps = e / 255, robust_acc = model == "dense" and 0.92 * math.exp(-e / 2) or 0.95 * math.exp(-e / 6)}
    end
  end
  local p = ml.plot.lines(rows, {x = "eps", y = "robust_acc", by = "model", width = 60, height = 14})
  golden2("results", p)
  T.check(tostring(p):find("robust_acc", 1, true) and tostring(p):find("eps", 1, true), "axis labels from the field names")
  local two = ml.plot.scatter(rows, {x = "eps", y = {"robust_acc", "eps"}, width = 50, height = 12})
  T.check(tostring(two):find("eps", 1, true) and tostring(two):find("robust_acc", 1, true), "one series per y field")
end)

T.test("values alone, a list of series, tensors of either dtype", function()
  local a = ml.plot.lines({1, 3, 2}, {title = "t", width = 30, height = 8, ascii = true})
  local b = ml.plot.lines{y = {1, 3, 2}, title = "t", width = 30, height = 8, ascii = true}
  local c = ml.plot.lines{y = ml.tensor({1, 3, 2}, "int64"), x = ml.tensor({1, 2, 3}), title = "t", width = 30, height = 8, ascii = true}
  T.check(tostring(a) == tostring(b) and tostring(b) == tostring(c), "the same plot three ways")
  local two = ml.plot.lines({{1, 2, 3}, {3, 2, 1}}, {width = 30, height = 8, ascii = true})
  local coloured = two:render{color = true}
  T.check(coloured:find("\27[34m*", 1, true) and coloured:find("\27[31m+", 1, true), "two unnamed series, two colours and markers")
end)

T.test("scatter (golden)", function()
  local x, y = {}, {}
  for i = 1, 60 do x[i], y[i] = math.sin(i * 0.7) * 3 + 5, math.cos(i * 1.3) * 2 + i * 0.1 end
  y[10] = math.huge
  golden2("scatter", ml.plot.scatter{x = x, y = {points = y}, width = 44, height = 14})
end)

T.test("hist (golden)", function()
  local v = {}
  for i = 1, 400 do -- a deterministic bell: sums of a low-discrepancy sequence
    local s = 0
    for k = 1, 4 do s = s + ((i * (0.6180339887 + k * 0.1414213562)) % 1) end
    v[i] = s - 2
  end
  v[7] = 0 / 0
  golden2("hist", ml.plot.hist(v, {bins = 16, width = 50, height = 14, title = "weights"}))
  golden2("hist_density", ml.plot.hist(ml.tensor(v), {bins = 8, density = true, width = 40, height = 10}))
end)

T.test("bars (golden)", function()
  local p = ml.plot.bars({0.93, 0.41, 0.0714, -0.2, 0 / 0}, {labels = {"clean", "fgsm", "pgd-10", "loss delta", "broken"},
                         title = "accuracy", width = 50})
  golden2("bars", p)
  golden2("bars_map", ml.plot.bars({b = 2, a = 1, c = 3}, {width = 30}))
end)

T.test("heatmap (golden)", function()
  local m = {}
  for r = 1, 4 do
    m[r] = {}
    for c = 1, 8 do m[r][c] = ((r * 7 + c * 5) % 11) / 10 end
  end
  m[2][3] = 0 / 0
  golden2("heatmap", ml.plot.heatmap(m, {rows = {"layer 2", "layer 4", "layer 6", "layer 8"}, title = "expert load", width = 50}))
  local big = ml.arange(0, 600):reshape(20, 30):float()
  golden2("heatmap_blocks", ml.plot.heatmap(big, {width = 20, height = 8, zlim = {0, 600}}))
end)

T.test("spark (golden)", function()
  local v = {}
  for i = 1, 40 do v[i] = 2.3 * math.exp(-i / 8) + 0.1 * math.sin(i) end
  v[20] = 0 / 0
  golden2("spark", ml.plot.spark(v, {title = "loss", width = 40}))
  golden2("spark_squeezed", ml.plot.spark(v, {width = 16}))
end)

T.test("grid: side by side and a dashboard (golden)", function()
  local a = ml.plot.lines{x = eps, y = {dense = dense}, title = "accuracy"}
  local b = ml.plot.bars({3, 1, 2}, {labels = {"x", "y", "z"}})
  golden2("grid", ml.plot.grid{a, b, width = 80, height = 14})
  local load = {}
  for r = 1, 3 do load[r] = {} for c = 1, 6 do load[r][c] = (r * c) % 5 end end
  local dash = ml.plot.grid{ml.plot.spark(dense, {title = "loss"}), ml.plot.spark(moe, {title = "rate", ylim = {0, 1}}),
                            ml.plot.heatmap(load, {title = "load"}), cols = 1, width = 40}
  golden2("dashboard", dash)
end)

T.test("tostring has no colour; render{color = true} and the prompt's form do", function()
  local p = ml.plot.lines{x = eps, y = {dense = dense, moe = moe}, width = 50, height = 12}
  T.check(not tostring(p):find("\27", 1, true), "no escape codes in tostring")
  local c = p:render{color = true}
  T.check(c:find("\27[34m", 1, true) and c:find("\27[31m", 1, true) and c:find("\27[0m", 1, true), "series colours")
  T.check(c:gsub("\27%[[%d;]*m", "") == p:render(), "the same text under the colours")
  local h = ml.plot.heatmap({{0, 1}}, {width = 20}):render{color = true}
  T.check(h:find("\27[38;2;", 1, true), "heat levels in 24-bit colour")
  -- ctest's stdout is not a terminal: the prompt shows the plain text
  T.check(ml.repr(p) == tostring(p), "ml.repr draws the plot")
end)

-- runs code in a fresh moelab with environment settings, returns its output
local function run(env, code)
  local f = io.popen(("env -u COLUMNS -u LINES -u LC_ALL -u LC_CTYPE -u LANG %s %s -e %q 2>&1"):format(env, MOELAB, code))
  local out = f:read("a")
  f:close()
  return out
end

T.test("size and glyphs come from the environment", function()
  local code = "local s = tostring(ml.plot.lines{y = {1, 2, 3}}); local w = 0; local n = 0 "
    .. "for l in (s .. '\\n'):gmatch('([^\\n]*)\\n') do n = n + 1; w = math.max(w, utf8.len(l)) end "
    .. "print(w, n, s:find('\\226\\160') and 'braille' or 'ascii')"
  T.check(run("COLUMNS=50 LINES=20 LANG=C", code):match("^50\t16\tascii"), "COLUMNS/LINES, ASCII in the C locale: "
    .. run("COLUMNS=50 LINES=20 LANG=C", code))
  T.check(run("COLUMNS=70 LINES=40 LANG=en_US.UTF-8", code):match("^70\t30\tbraille"), "UTF-8 locale: braille, height capped at 30")
  T.check(run("LC_ALL=C LANG=en_US.UTF-8", code):match("^80\t20\tascii"), "LC_ALL wins; 80x24 without a terminal")
  T.check(run("COLUMNS=50 LANG=en_US.UTF-8", code:gsub("y = {1, 2, 3}", "y = {1, 2, 3}, ascii = true")):match("ascii"),
    "ascii = true forces ASCII")
end)

T.test("p:png: the same plot in pixels, read back", function()
  local path = os.tmpname() .. ".png"
  -- the 20x10 corner plot of tests/c/test_plot.c at scale 2: cells 12x24, a 12-pixel margin
  local p = ml.plot.scatter{x = {0, 1}, y = {0, 1}, xlim = {0, 1}, ylim = {0, 1}, width = 20, height = 10}
  p:png(path, {scale = 2})
  local img = ml.image.load(path)
  T.check(img:size(1) == 3 and img:size(2) == 10 * 24 + 24 and img:size(3) == 20 * 12 + 24, "size")
  local function px(x, y) -- 0-based pixel -> {r, g, b} in 0..255
    return {math.floor(img[1][y + 1][x + 1] * 255 + 0.5), math.floor(img[2][y + 1][x + 1] * 255 + 0.5),
            math.floor(img[3][y + 1][x + 1] * 255 + 0.5)}
  end
  local function is(c, r, g, b) return c[1] == r and c[2] == g and c[3] == b end
  T.check(is(px(12 + 4 * 12 + 6 + 15 * 12, 12 + 12), 31, 119, 180), "the point (1, 1) in the first series colour")
  T.check(is(px(12 + 3 * 12 + 6, 12 + 2 * 24 + 3), 120, 120, 120), "the y axis line")
  T.check(is(px(12 + 2 * 2, 12 + 2 * 1), 30, 30, 30), "the top of the '1' of the label 1.0")
  T.check(is(px(12 + 10 * 12, 12 + 3 * 24), 255, 255, 255), "blank canvas")
  os.remove(path)
  -- default size: 80 x 24 cells at scale 2
  local q = ml.plot.lines{y = {1, 3, 2}}
  q:png(path)
  img = ml.image.load(path)
  T.check(img:size(2) == 24 * 24 + 24 and img:size(3) == 80 * 12 + 24, "default PNG size")
  os.remove(path)
  T.raises(function() q:png("/nonexistent-dir/p.png") end, "png: cannot write /nonexistent-dir/p.png: No such file or directory")
  T.raises(function() q:png(path, {scale = 0}) end, "png: scale must be between 1 and 16, got 0")
  T.raises(function() q:png(path, {scael = 2}) end, "png: unknown option 'scael'")
end)

T.test("bad input is a clear error", function()
  local _, where = pcall(function() ml.plot.lines{y = {}} end)
  T.check(where:find("test_plot%.lua:%d+: lines: series"), "reported on the caller's line: " .. where)
  T.raises(function() ml.plot.lines{y = {}} end, "lines: series '' is empty")
  T.raises(function() ml.plot.lines{x = {1, 2, 3}, y = {acc = {1, 2}}} end, "lines: series 'acc' has 3 x values and 2 y values")
  T.raises(function() ml.plot.lines{y = {1, 2}, width = -3} end, "lines: width must be between 1 and 10000 cells, got -3")
  T.raises(function() ml.plot.lines{y = {1, 2}, height = 0} end, "lines: height must be between 1 and 10000 cells, got 0")
  T.raises(function() ml.plot.lines{y = {1, 2}, xlim = {2, 1}} end, "plot: bad xlim {2, 1}")
  T.raises(function() ml.plot.lines{y = {1, 2}, ylim = {0}} end, "lines: ylim must be {lo, hi}")
  T.raises(function() ml.plot.lines{y = {1, -2}, ylog = true} end, "lines: log scale on y, but series '' has y = -2 at point 2")
  T.raises(function() ml.plot.lines{y = {1, "a"}} end, "lines: series '' item 2 is a string, not a number")
  T.raises(function() ml.plot.lines{y = ml.zeros(2, 2)} end, "lines: series '' must be a 1-d tensor or a list of numbers, got shape [2, 2]")
  T.raises(function() ml.plot.lines{y = {1, 2}, tilte = "x"} end, "lines: unknown option tilte")
  T.raises(function() ml.plot.lines({{eps = 1}}, {x = "eps", y = "acc"}) end, "lines: row 1 has no field \"acc\"")
  T.raises(function() ml.plot.lines({{eps = 1, acc = "high"}}, {x = "eps", y = "acc"}) end, "lines: row 1 field \"acc\" is a string")
  T.raises(function() ml.plot.lines({{eps = 1}}, {x = "eps"}) end, "lines: with a results table, y names the field")
  T.raises(function() ml.plot.lines(42) end, "lines: expects {x = ..., y = ...}, values, or a results table, got number")
  T.raises(function() tostring(ml.plot.lines{y = {1, 2}, width = 5, height = 10}) end, "lines: 5x10 cells is too small for this plot")
  T.raises(function() ml.plot.hist({}) end, "hist: no values")
  T.raises(function() ml.plot.hist({1, 2}, {bins = 0}) end, "hist: bins must be between 1 and 100000, got 0")
  T.raises(function() ml.plot.bars({1, 2}, {labels = {"a"}}) end, "bars: 1 labels for 2 values")
  T.raises(function() ml.plot.bars({}) end, "bars: no bars")
  T.raises(function() ml.plot.heatmap(ml.zeros(2, 2, 2)) end, "heatmap: the matrix must be 2-d, got shape [2, 2, 2]")
  T.raises(function() ml.plot.heatmap({{1, 2}}, {cols = {"a"}}) end, "heatmap: 1 column labels for a matrix with 2 columns")
  T.raises(function() ml.plot.spark({}) end, "spark: series '' is empty")
  T.raises(function() ml.plot.grid{} end, "grid: no plots")
  T.raises(function() ml.plot.grid{ml.plot.spark({1}), 3} end, "grid: item 2 is a number, not a plot")
  T.raises(function() ml.plot.grid{ml.plot.spark({1}), colz = 2} end, "grid: unknown option colz")
  T.raises(function() ml.plot.spark({1}):render{widht = 3} end, "render: unknown option 'widht'")
end)

T.test("every function and method has help", function()
  local real_print, out = print, {}
  print = function(s) out[#out + 1] = s end
  local p = ml.plot.spark({1})
  for _, m in ipairs{"render", "show", "png", "kind"} do ml.help(p[m]) end
  for _, f in ipairs{"lines", "scatter", "hist", "bars", "heatmap", "spark", "grid"} do ml.help(ml.plot[f]) end
  print = real_print
  for i = 1, 4 do T.check(out[i]:match("^p:"), "method help: " .. tostring(out[i])) end
  for i = 5, 11 do T.check(out[i]:match("^ml%.plot%."), "function help: " .. tostring(out[i])) end
end)

T.done()
