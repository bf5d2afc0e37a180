-- Datasets: the bundled MNIST and CIFAR-10 subsets against the checksums of
-- data/README.md, PNG folders, batches, shuffling, augmentation, bad files.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function pixel_sum(ds)
  -- sum of the uint8 pixels, from batches in [0, 1] (k/255 * 255 rounds back to k);
  -- per-image sums stay far below 2^24, so float32 holds them exactly
  local s = 0
  for x in ds:batches(1000) do
    for _, v in ipairs((x * 255):round():reshape(x:size(1), -1):sum(2):totable()) do s = s + v end
  end
  return math.floor(s + 0.5)
end

T.test("bundled MNIST subset", function()
  local d = ml.data.mnist("data/mnist-10k")
  T.check(d.train:size() == 8000 and #d.test == 2000, "8000 train / 2000 test")
  local _, y = d.test:batch(1, 8)
  T.check(y:equal(ml.tensor({7, 3, 1, 9, 2, 1, 4, 3}, "int64") + 1), "first test labels 7 3 1 9 2 1 4 3 (+1)")
  T.check(pixel_sum(d.train) == 209875897, "train pixel sum from the data README")
  T.check(pixel_sum(d.test) == 52270703, "test pixel sum")
  local x = d.train:batch(1, 4)
  T.check(x:dim() == 4 and x:size(2) == 1 and x:size(3) == 28, "batches are [n, 1, 28, 28]")
  T.check(x:min():item() >= 0 and x:max():item() <= 1, "pixels in [0, 1]")
  T.check(d.train:labels():max():item() == 10, "labels 1..10")
end)

T.test("bundled CIFAR-10 subset and its PNGs", function()
  local d = ml.data.cifar10("data/cifar10")
  T.check(d.train:size() == 1000 and d.test:size() == 1000, "1000 + 1000 records")
  local x, y = d.test:batch(1, 1)
  T.check(y[1] == 4, "first test record is a cat (label 3, +1)")
  T.near(x[1][1][1][1] * 255, 158, 1e-3, "first R byte")
  T.near(x[1][2][1][1] * 255, 112, 1e-3, "first G byte")
  T.near(x[1][3][1][1] * 255, 49, 1e-3, "first B byte")
  T.check(pixel_sum(d.test) == 374560331, "test pixel sum from the data README")
  T.check(pixel_sum(d.train) == 373166180, "data_batch_1 pixel sum")
  T.check(d.test:classes()[4] == "cat", "class names from batches.meta.txt")
  -- every PNG equals its record of test_batch.bin (file name = record number)
  local png = ml.data.png_folder("data/cifar10/png")
  T.check(png:size() == 100 and png:num_classes() == 10, "100 PNGs in 10 classes")
  local p1 = png:get(1)             -- airplane/0003.png = record 3 (0-based)
  local r1 = d.test:get(4)
  T.check(p1:equal(r1), "airplane/0003.png equals test record 3")
end)

T.test("a CIFAR folder with several training batches loads them all", function()
  -- data_batch_1..3 as copies of the bundled batch: 3 x 1000 training images
  local dir = os.tmpname(); os.remove(dir); assert(os.execute("mkdir -p " .. dir))
  for i = 1, 3 do
    assert(os.execute(("cp data/cifar10/data_batch_1.bin %s/data_batch_%d.bin"):format(dir, i)))
  end
  assert(os.execute(("cp data/cifar10/test_batch.bin data/cifar10/batches.meta.txt %s/"):format(dir)))
  local d = ml.data.cifar10(dir)
  local one = ml.data.cifar10("data/cifar10")
  T.check(d.train:size() == 3 * one.train:size(), "three training batches")
  T.check(d.train:get(one.train:size() + 5):equal(one.train:get(5)), "second batch = the first one's records")
  os.execute("rm -rf " .. dir)
end)

T.test("shuffling and augmentation", function()
  local d = ml.data.mnist("data/mnist-10k").test
  local function first_labels(opts)
    local it = d:batches(16, opts)
    local _, y = it()
    return y
  end
  T.check(first_labels({shuffle = true, seed = 3}):equal(first_labels({shuffle = true, seed = 3})), "seeded shuffle repeats")
  T.check(not first_labels({shuffle = true, seed = 3}):equal(first_labels({shuffle = true, seed = 4})), "different seeds differ")
  local n = 0
  for x in d:batches(300, {drop_last = true}) do n = n + x:size(1) end
  T.check(n == 1800, "drop_last drops the short batch")
  -- flip only: flipping the flipped batch gives the original back
  local x0 = d:batch(1, 64)
  local xf = d:batch(1, 64, {augment = {flip = true}, seed = 5})
  local flipped = xf:index_select(4, ml.arange(28, 0, -1):long())
  local same = 0
  for i = 1, 64 do if flipped[i]:equal(x0[i]) or xf[i]:equal(x0[i]) then same = same + 1 end end
  T.check(same == 64, "each image is itself or its mirror")
  -- crop keeps the shape and shifts the content
  local xc = d:batch(1, 8, {augment = {crop = 4}, seed = 1})
  T.check(xc:size(3) == 28 and xc:size(4) == 28, "crop keeps 28x28")
  T.near(xc:sum():item(), xc:sum():item(), 0)
  T.raises(function() d:batches(10, {suffle = true}) end, "unknown option \"suffle\"")
end)

T.test("datasets from tensors and synthetic clusters", function()
  local g = ml.data.gaussian_clusters{n = 300, classes = 3, dim = 5, spread = 0.1, seed = 2}
  T.check(g:size() == 300 and g:shape()[1] == 5, "300 points in 5 dimensions")
  local x, y = g:batch(1, 300)
  T.check(x:dim() == 2 and y:max():item() == 3, "features [n, D], labels 1..3")
  local t = ml.data.from_tensors(ml.randn(10, 4), ml.randint(1, 2, {10}))
  T.check(t:size() == 10 and t:num_classes() == 2, "from tensors")
  local s = g:subset(ml.tensor({3, 1}, "int64"))
  local xs = s:batch(1, 2)
  T.close(xs[1], x[3], 0, 0, "subset by indices")
  T.check(g:subset(1, 10):size() == 10, "subset by range")
end)

-- Bad files, written into a temporary directory.
local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)
local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end
local function be32(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end

T.test("bad files are refused with the file and the reason", function()
  T.raises(function() ml.data.mnist(tmp) end, "mnist: cannot find " .. tmp .. "/train-images-idx3-ubyte")
  -- plain (non-gz) IDX files load too
  local imgs = be32(0x803) .. be32(2) .. be32(2) .. be32(2) .. string.char(0, 255, 128, 1, 2, 3, 4, 5)
  local labs = be32(0x801) .. be32(2) .. string.char(3, 9)
  for _, split in ipairs{"train", "t10k"} do
    write(tmp .. "/" .. split .. "-images-idx3-ubyte", imgs)
    write(tmp .. "/" .. split .. "-labels-idx1-ubyte", labs)
  end
  local d = ml.data.mnist(tmp)
  local x, y = d.train:batch(1, 2)
  T.check(y:equal(ml.tensor({4, 10}, "int64")), "labels from a plain IDX file")
  T.near(x[1][1][1][2], 1.0, 1e-7, "pixel 255 -> 1")
  write(tmp .. "/train-images-idx3-ubyte", imgs:sub(1, 20))
  T.raises(function() ml.data.mnist(tmp) end, "train-images-idx3-ubyte: truncated (expected 8 bytes of pixels, got 4)")
  write(tmp .. "/train-images-idx3-ubyte", be32(0x802) .. imgs:sub(5))
  T.raises(function() ml.data.mnist(tmp) end, "bad magic 0x00000802, expected 0x00000803 (images)")
  write(tmp .. "/train-images-idx3-ubyte", imgs)
  write(tmp .. "/train-labels-idx1-ubyte", be32(0x801) .. be32(3) .. string.char(1, 2, 3))
  T.raises(function() ml.data.mnist(tmp) end, "has 3 labels but")
  write(tmp .. "/train-labels-idx1-ubyte", be32(0x801) .. be32(2) .. string.char(1, 12))
  T.raises(function() ml.data.mnist(tmp) end, "label 12 of example 2 is not a digit")
  -- CIFAR: size not a multiple of the record
  os.execute("mkdir -p " .. tmp .. "/c")
  write(tmp .. "/c/data_batch_1.bin", string.rep("\0", 3073 + 5))
  T.raises(function() ml.data.cifar10(tmp .. "/c") end, "data_batch_1.bin: size 3078 is not a multiple of the 3073-byte record")
  T.raises(function() ml.data.cifar10(tmp .. "/nowhere") end, "cifar10: cannot open directory")
  -- PNG: corrupt and 16-bit files
  os.execute("mkdir -p " .. tmp .. "/p/a")
  write(tmp .. "/p/a/bad.png", "\137PNG\r\n\26\n" .. "garbage")
  T.raises(function() ml.data.png_folder(tmp .. "/p") end, "bad.png: corrupt or truncated file")
  write(tmp .. "/p/a/bad.png", "not a png at all")
  T.raises(function() ml.data.png_folder(tmp .. "/p") end, "bad.png is not a PNG file")
  T.raises(function() ml.data.png_folder(tmp .. "/empty") end, "png_folder: cannot open directory")
end)
os.execute("rm -rf " .. tmp)

T.done()
