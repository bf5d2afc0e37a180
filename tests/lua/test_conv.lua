-- conv2d and pooling: finite-difference gradients and Lua-level errors.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")
ml.seed(8)

T.test("conv2d gradients", function()
  T.gradcheck("conv2d x, w, b", function(x, w, b) return ml.conv2d(x, w, b, {padding = 1}) end,
    {ml.randn(2, 2, 5, 5), ml.randn(3, 2, 3, 3), ml.randn(3)})
  T.gradcheck("conv2d stride 2, groups 2", function(x, w) return ml.conv2d(x, w, nil, {stride = 2, groups = 2}) end,
    {ml.randn(1, 4, 6, 6), ml.randn(4, 2, 3, 3)})
  T.gradcheck("conv2d dilation, rectangular", function(x, w)
    return ml.conv2d(x, w, nil, {dilation = 2, padding = {1, 2}}) end, {ml.randn(1, 2, 6, 7), ml.randn(2, 2, 2, 3)})
end)


T.test("pooling gradients (distinct values)", function()
  local v = {}
  for i = 1, 72 do v[i] = ((i * 37) % 72) / 10 end
  local x = ml.tensor(v):reshape(1, 2, 6, 6)
  T.gradcheck("max_pool2d", function(a) return a:max_pool2d(2) end, {x})
  T.gradcheck("max_pool2d 3/2 pad 1", function(a) return a:max_pool2d(3, {stride = 2, padding = 1}) end, {x})
  T.gradcheck("avg_pool2d pad 1", function(a) return a:avg_pool2d(3, {stride = 2, padding = 1}) end, {x})
  T.gradcheck("global_avg_pool", function(a) return a:global_avg_pool() end, {x})
end)

T.test("bad input", function()
  local x = ml.randn(2, 3, 8, 8)
  T.raises(function() ml.conv2d(x, ml.randn(4, 1, 3, 3)) end, "conv2d: input has 3 channels, weight expects 1")
  T.raises(function() ml.conv2d(x, ml.randn(4, 3, 3, 3), nil, {strides = 2}) end, "conv2d: unknown option 'strides'")
  T.raises(function() ml.conv2d(x, ml.randn(4, 3, 3, 3), nil, {stride = 0}) end, "stride must be positive")
  T.raises(function() ml.conv2d(x, ml.randn(4, 3, 3, 3), "b") end, "bias tensor, nil or an options table expected")
  T.raises(function() ml.conv2d(x, ml.randn(4, 3, 3, 3), nil, {padding = "same"}) end, "must be a number or {h, w}")
  T.raises(function() x:max_pool2d(2, {stride = {1}}) end, "must be a number or {h, w}")
  T.raises(function() ml.randn(3, 8, 8):max_pool2d(2) end, "max_pool2d: expected a float32 input [N, C, H, W], got [3, 8, 8]")
end)

T.done()
