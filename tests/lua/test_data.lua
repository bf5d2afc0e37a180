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
  T.raises(function() ml.data.mnist(tmp) end,
    "train-images-idx3-ubyte: the images take 8 bytes but the file has 4 after its header (truncated)")
  write(tmp .. "/train-images-idx3-ubyte", imgs .. "x")
  T.raises(function() ml.data.mnist(tmp) end, "the images take 8 bytes but the file has 9 after its header")
  write(tmp .. "/train-images-idx3-ubyte", be32(0x802) .. imgs:sub(5))
  T.raises(function() ml.data.mnist(tmp) end, "bad magic 0x00000802, expected 0x00000803 (images)")
  write(tmp .. "/train-images-idx3-ubyte", imgs)
  write(tmp .. "/train-labels-idx1-ubyte", be32(0x801) .. be32(3) .. string.char(1, 2, 3))
  T.raises(function() ml.data.mnist(tmp) end, "has 3 labels but")
  write(tmp .. "/train-labels-idx1-ubyte", be32(0x801) .. be32(2) .. string.char(1, 12))
  T.raises(function() ml.data.mnist(tmp) end, "label 12 of example 2 is not a digit")
  write(tmp .. "/train-labels-idx1-ubyte", labs)
  -- train and test images must have one size
  write(tmp .. "/t10k-images-idx3-ubyte", be32(0x803) .. be32(2) .. be32(3) .. be32(2) .. ("\1"):rep(12))
  T.raises(function() ml.data.mnist(tmp) end, "mnist: the training images (" .. tmp .. "/train-images-idx3-ubyte) are 2x2 "
    .. "but the test images (" .. tmp .. "/t10k-images-idx3-ubyte) are 3x2")
  write(tmp .. "/t10k-images-idx3-ubyte", imgs)
  -- gzip: the CRC and length in the trailer are checked; sizes are bounded by the file
  os.remove(tmp .. "/train-images-idx3-ubyte")
  write(tmp .. "/imgs", imgs)
  assert(os.execute(("gzip -c %s/imgs > %s/train-images-idx3-ubyte.gz"):format(tmp, tmp)))
  T.check(ml.data.mnist(tmp).train:size() == 2, "the gzip file loads")
  local f = assert(io.open(tmp .. "/train-images-idx3-ubyte.gz", "rb"))
  local gz = f:read("a")
  f:close()
  local flip = function(s, i) return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 0x5a) .. s:sub(i + 1) end
  write(tmp .. "/train-images-idx3-ubyte.gz", flip(gz, #gz - 7))   -- the CRC-32
  T.raises(function() ml.data.mnist(tmp) end, "train-images-idx3-ubyte.gz: corrupt file (incorrect data check)")
  write(tmp .. "/train-images-idx3-ubyte.gz", flip(gz, #gz - 3))   -- the length
  T.raises(function() ml.data.mnist(tmp) end, "train-images-idx3-ubyte.gz: corrupt file (incorrect length check)")
  write(tmp .. "/imgs", imgs .. "x")
  assert(os.execute(("gzip -c %s/imgs > %s/train-images-idx3-ubyte.gz"):format(tmp, tmp)))
  T.raises(function() ml.data.mnist(tmp) end, "the file goes on after the data its header describes")
  write(tmp .. "/imgs", be32(0x803) .. be32(1000000) .. be32(28) .. be32(28))
  assert(os.execute(("gzip -c %s/imgs > %s/train-images-idx3-ubyte.gz"):format(tmp, tmp)))
  T.raises(function() ml.data.mnist(tmp) end, "the images take 784000000 bytes, more than a")
  -- CIFAR: size not a multiple of the record
  os.execute("mkdir -p " .. tmp .. "/c")
  write(tmp .. "/c/data_batch_1.bin", string.rep("\0", 3073 + 5))
  T.raises(function() ml.data.cifar10(tmp .. "/c") end,
    "data_batch_1.bin: size 3078 is not a positive multiple of the 3073-byte record")
  write(tmp .. "/c/data_batch_1.bin", "")
  T.raises(function() ml.data.cifar10(tmp .. "/c") end, "data_batch_1.bin: size 0 is not a positive multiple")
  write(tmp .. "/c/data_batch_1.bin", ("\3" .. ("\0"):rep(3072)) .. ("\10" .. ("\0"):rep(3072)))
  T.raises(function() ml.data.cifar10(tmp .. "/c") end, "data_batch_1.bin: record 2 has label 10 (expected 0..9)")
  write(tmp .. "/c/data_batch_1.bin", ("\3" .. ("\0"):rep(3072)))
  T.raises(function() ml.data.cifar10(tmp .. "/c") end, "cifar10: cannot open " .. tmp .. "/c/test_batch.bin")
  write(tmp .. "/c/test_batch.bin", ("\9" .. ("\7"):rep(3072)))
  local c = ml.data.cifar10(tmp .. "/c")
  T.check(c.train:size() == 1 and c.test:size() == 1 and c.test:labels()[1] == 10, "one record each")
  T.raises(function() ml.data.cifar10(tmp .. "/nowhere") end, "cifar10: cannot open directory")
  -- PNG: corrupt and 16-bit files
  os.execute("mkdir -p " .. tmp .. "/p/a")
  write(tmp .. "/p/a/bad.png", "\137PNG\r\n\26\n" .. "garbage")
  T.raises(function() ml.data.png_folder(tmp .. "/p") end, "bad.png: corrupt or truncated file")
  write(tmp .. "/p/a/bad.png", "not a png at all")
  T.raises(function() ml.data.png_folder(tmp .. "/p") end, "bad.png is not a PNG file")
  T.raises(function() ml.data.png_folder(tmp .. "/empty") end, "png_folder: cannot open directory")
  os.execute("mkdir -p " .. tmp .. "/q/a " .. tmp .. "/q/b")
  os.execute(("cp data/cifar10/png/cat/0000.png %s/q/a/ && cp data/mnist-10k/index.csv %s/q/b/notes.csv"):format(tmp, tmp))
  T.check(ml.data.png_folder(tmp .. "/q"):size() == 1, "files that are not PNGs are skipped")
  os.execute("chmod 000 " .. tmp .. "/q/b")
  local ok_unreadable = io.open(tmp .. "/q/b/notes.csv") == nil -- root reads anything
  if ok_unreadable then
    T.raises(function() ml.data.png_folder(tmp .. "/q") end, "png_folder: cannot open directory " .. tmp .. "/q/b")
  end
  os.execute("chmod 755 " .. tmp .. "/q/b")
end)

T.test("sizes from options are checked", function()
  T.raises(function() ml.data.gaussian_clusters{n = 2^62, dim = 4} end,
    "gaussian_clusters: 4611686018427387904 examples of 4 features are too many to hold in memory")
  T.raises(function() ml.data.gaussian_clusters{classes = 2^31 - 1} end,
    "gaussian_clusters: 2147483647 classes for 1000 points (at most one class a point)")
  T.raises(function() ml.data.gaussian_clusters{classes = 2^31} end, "gaussian_clusters: classes must be in 1..2147483647, got 2147483648")
  T.raises(function() ml.data.gaussian_clusters{n = 2^40, dim = 4} end, "gaussian_clusters: out of memory for 1099511627776 examples")
  T.raises(function() ml.data.gaussian_clusters{spread = 1/0} end, "spread must be finite and >= 0, got inf")
  T.raises(function() ml.data.from_tensors(ml.rand(3, 2), ml.tensor({1, 2, 3}, "int64"), 2^32 + 2) end,
    "from_tensors: classes must be in 0..2147483647")
  T.raises(function() ml.data.from_tensors(ml.rand(3, 2), ml.tensor({1, 2, 2^40}, "int64")) end,
    "dataset: label 1099511627776 of example 3 is too large")
end)
os.execute("rm -rf " .. tmp)

T.done()
