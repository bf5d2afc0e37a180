-- Indexing tensors with tables as in Torch7 (x[{i, j}] an element, x[{i}] a
-- row, ranges {a, b}, {} for a whole dimension; reads and writes), and view
-- operations whose sizes would overflow int64: each a clear error, never a
-- crash (narrow with math.maxinteger once passed its bounds check and read
-- out of bounds).
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

T.test("x[{...}] reads", function()
  local x = ml.arange(12):reshape(3, 4)          -- x[i][j] = 4 (i - 1) + (j - 1)
  T.check(x[{1, 1}] == 0 and x[{3, 4}] == 11 and x[{2, 3}] == 6, "an element per full integer index")
  T.check(x[{-1, -1}] == 11 and x[{-3, 2}] == 1, "negative positions count from the end")
  T.check(math.type(ml.tensor({{1, 2}}, "int64")[{1, 2}]) == "integer", "int64 elements come back as integers")
  T.close(x[{2}], ml.tensor({4, 5, 6, 7}), 0, 0, "one integer: a row")
  T.close(x[{{}, 2}], ml.tensor({1, 5, 9}), 0, 0, "{} keeps a whole dimension: a column")
  T.close(x[{{2, 3}, {2, 3}}], ml.tensor({{5, 6}, {9, 10}}), 0, 0, "ranges are inclusive")
  T.close(x[{2, {1, -2}}], ml.tensor({4, 5, 6}), 0, 0, "a range to the second last")
  T.close(x[{{3}}], ml.tensor({{8, 9, 10, 11}}), 0, 0, "{a} keeps the dimension")
  T.check(x[{{2, 1}}]:size(1) == 0, "{a, a - 1} is empty")
  local v = x[{{1, 2}, 3}]
  v:fill(-1)
  T.check(x[{1, 3}] == -1 and x[{2, 3}] == -1 and x[{3, 3}] == 10, "results are views that write through")
end)

T.test("x[{...}] = value writes", function()
  local x = ml.zeros(3, 4)
  x[{1, 1}] = 5
  x[{{}, 4}] = 2
  x[{3}] = ml.tensor({7, 8, 9, 10})
  x[{2, {1, 2}}] = {1, 1}
  T.close(x, ml.tensor({{5, 0, 0, 2}, {1, 1, 0, 2}, {7, 8, 9, 10}}), 0, 0, "element, column, row, part of a row")
  T.raises(function() x[{1, 1}] = "five" end, "tensor or number expected, got string")
end)

T.test("x[{...}] is differentiable", function()
  local w = ml.randn(3, 4):requires_grad()
  local y = w[{{2, 3}, 2}]:sum() + w[{1}]:sum()
  y:backward()
  T.close(w.grad, ml.tensor({{1, 1, 1, 1}, {0, 1, 0, 0}, {0, 1, 0, 0}}), 0, 0, "the gradient lands in the slices")
end)

T.test("bad table indices are clear errors", function()
  local x = ml.arange(12):reshape(3, 4)
  T.raises(function() return x[{1, 1, 1}] end, "index: 3 entries for a tensor with 2 dimensions (shape [3, 4])")
  T.raises(function() return x[{4}] end, "position 4 is out of range for dimension 1 of size 3")
  T.raises(function() return x[{0}] end, "position 0 is out of range")
  T.raises(function() return x[{1.5}] end, "entry 1 (1.5) is not an integer")
  T.raises(function() return x[{{3, 1}}] end, "the range {3, 1} ends before it starts")
  T.raises(function() return x[{{1, 2, 3}}] end, "a range is {first, last}, got 3 numbers")
  T.raises(function() return x[{"a"}] end, "entry 1 must be an integer or a range {first, last}, got string")
  T.raises(function() return x[{{1, 5}}] end, "out of range")
  T.raises(function() return x[{math.mininteger}] end, "position -9223372036854775808 is out of range")
  T.raises(function() return x[{1, math.maxinteger}] end, "position 9223372036854775807 is out of range")
  T.raises(function() return x[true] end, "index: cannot index a tensor with a boolean")
  T.raises(function() return x[math.mininteger] end, "index: -9223372036854775808 is out of range")
  T.check(x.no_such_method == nil, "an unknown name is nil (as for any object)")
end)

T.test("views whose sizes overflow are refused", function()
  local x = ml.randn(5)
  T.raises(function() return x:narrow(1, 2, math.maxinteger):sum() end,
    "narrow: start 2 (1-based) with length 9223372036854775807 is outside dimension 1 of size 5")
  T.raises(function() return x:narrow(1, math.maxinteger, 1) end, "is outside dimension 1 of size 5")
  T.raises(function() return x:narrow(1, 6, -1) end, "is outside dimension 1")
  T.check(x:narrow(1, 6, 0):numel() == 0, "an empty range at the end is fine")
  T.raises(function() return x:select(1, math.mininteger) end, "select: index -9223372036854775808 is out of range")
  T.raises(function() return x:select(1, math.maxinteger) end, "select: index 9223372036854775807 is out of range")
  T.raises(function() return ml.ones(1):expand(-5) end, "expand: invalid size -5 for dimension 1")
  T.raises(function() return ml.ones(1, 1):expand(2 ^ 40, 2 ^ 40) end, "expand: a shape with 2 dimensions whose sizes multiply past 2^59")
  T.raises(function() return ml.ones(3):expand(-7, 3) end, "expand: size -7 is not allowed for a new leading dimension")
  T.raises(function() return ml.zeros(0, 2 ^ 62, 2 ^ 62) end, "tensor: a shape with 3 dimensions whose sizes multiply past 2^59")
  T.raises(function() return ml.zeros(0):reshape(math.maxinteger, 2, 0) end, "reshape: a shape with 3 dimensions")
  T.raises(function() return ml.zeros(0):reshape(-1, math.maxinteger, math.maxinteger) end, "reshape: a shape with 3 dimensions")
  local a = ml.ones(1):expand(2 ^ 58)
  T.check(a:size(1) == 2 ^ 58, "a large broadcast view is fine (stride 0)")
  T.raises(function() return ml.cat({a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}) end,
    "cat: the sizes along dimension 1 add up past 2^59")
  T.raises(function() return a:contiguous() end, "too large")
  T.raises(function() return ml.zeros(2 ^ 31, 2 ^ 31) end, "too large")
end)

T.done()
