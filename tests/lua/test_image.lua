-- ml.image: PNG save/load round trips (exact for 8-bit values), range and shape
-- errors, the comparison grid (size, a known pixel of every panel, captions in
-- colour), and the terminal drawing.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

T.test("save and load round-trip 8-bit values exactly", function()
  ml.seed(5)
  local bytes = ml.randint(0, 255, {3, 5, 7}):float()
  ml.image.save(bytes / 255, dir .. "/rgb.png")
  local back = ml.image.load(dir .. "/rgb.png")
  T.check(ml.equal((back * 255):round(), bytes), "RGB [3, 5, 7]: the same 8-bit values")
  T.close(back, bytes / 255, 0, 1e-7, "as floats b / 255")
  ml.image.save(back, dir .. "/again.png")
  T.check(ml.equal(ml.image.load(dir .. "/again.png"), back), "a loaded image saves and loads bit for bit")
  local gbytes = ml.randint(0, 255, {4, 6}):float()
  ml.image.save(gbytes / 255, dir .. "/gray.png")
  back = ml.image.load(dir .. "/gray.png")
  T.check(back:dim() == 3 and back:size(1) == 1 and ml.equal((back[1] * 255):round(), gbytes), "[H, W] comes back as [1, H, W]")
  ml.image.save((gbytes / 255):reshape(1, 4, 6), dir .. "/gray1.png")
  T.check(ml.equal(ml.image.load(dir .. "/gray1.png"), back), "[1, H, W] is gray too")
  -- values between the 8-bit levels round to the nearest
  ml.image.save(ml.tensor({{0.5, 0.2}}), dir .. "/round.png")
  T.close(ml.image.load(dir .. "/round.png")[1], ml.tensor({{128 / 255, 51 / 255}}), 0, 1e-7, "round(255 v)")
end)

T.test("out of range, bad shapes, bad paths are clear errors", function()
  local t = ml.tensor({{0.5, 1.5}, {-0.25, 0}})
  T.raises(function() ml.image.save(t, dir .. "/x.png") end,
    "image: 2 values are outside [0, 1] (from -0.25 to 1.5); clamp = true clips them")
  ml.image.save(t, dir .. "/clamped.png", {clamp = true})
  T.check(ml.equal(ml.image.load(dir .. "/clamped.png")[1], ml.tensor({{128 / 255, 1}, {0, 0}})), "clamp clips")
  T.raises(function() ml.image.save(ml.tensor({{0 / 0}}), dir .. "/x.png", {clamp = true}) end, "image: 1 value is NaN")
  T.raises(function() ml.image.save(ml.zeros(2, 4, 4), dir .. "/x.png") end,
    "image: expects [C, H, W] (C = 1 or 3) or [H, W], got shape [2, 4, 4]")
  T.raises(function() ml.image.save(ml.zeros(1, 1, 4, 4), dir .. "/x.png") end, "got shape [1, 1, 4, 4]")
  T.raises(function() ml.image.save(ml.zeros({4, 4}, "int64"), dir .. "/x.png") end,
    "image: expects a float32 tensor with values in [0, 1], got int64")
  T.raises(function() ml.image.save(ml.zeros(4, 4), "/nonexistent-dir/x.png") end,
    "png: cannot write /nonexistent-dir/x.png: No such file or directory")
  T.raises(function() ml.image.save(ml.zeros(4, 4), dir .. "/x.png", {clip = true}) end, "image.save: unknown option 'clip'")
  T.raises(function() ml.image.load(dir .. "/missing.png") end, "png: cannot open " .. dir .. "/missing.png")
end)

-- the colour of pixel (x, y) (1-based) of a [3, H, W] image, in 0..255
local function px(img, x, y)
  local c = {}
  for k = 1, 3 do c[k] = math.floor(img[k][y][x] * 255 + 0.5) end
  return c
end

T.test("grid: one row per example, a known pixel in every panel", function()
  local clean = ml.full({2, 1, 8, 8}, 0.25)
  local adv = clean:clone()
  adv[2][1][3][4] = 0.35 -- example 2, row 3, column 4
  local img, boxes = ml.image.grid{clean = clean, adversarial = adv, scale = 4, headers = false, path = dir .. "/grid.png"}
  -- margins 8, gaps 8, panels 32 px in columns 48 px wide (the perturbation caption "max|δ| 0.1"
  -- is 10 characters of 6 px); a caption line of 2 + 12 px under each row
  T.check(img:size(1) == 3 and img:size(3) == 8 + 3 * 60 + 2 * 8 + 8 and img:size(2) == 8 + 2 * (32 + 14) + 8 + 8,
    "grid size " .. table.concat(img:shape(), "x"))
  T.check(ml.equal(ml.image.load(dir .. "/grid.png"), img), "the file holds the returned image")
  local b = boxes[2].adversarial
  T.check(b[1] == 9 + 60 + 8 + 14 and b[2] == 9 + 46 + 8 and b[3] == 32 and b[4] == 32, "box of example 2's adversarial panel")
  local function at(box, row, col) return px(img, box[1] + (col - 1) * 4 + 1, box[2] + (row - 1) * 4 + 1) end
  T.check(at(boxes[1].clean, 1, 1)[1] == 64, "clean: 0.25 -> 64")
  T.check(at(boxes[2].adversarial, 3, 4)[1] == 89, "adversarial: the changed pixel, 0.35 -> 89")
  T.check(at(boxes[2].adversarial, 1, 1)[1] == 64, "adversarial: unchanged elsewhere")
  T.check(at(boxes[2].perturbation, 3, 4)[1] == 255, "perturbation: the largest change is white")
  T.check(at(boxes[2].perturbation, 5, 5)[1] == 128, "perturbation: no change is grey")
  T.check(at(boxes[1].perturbation, 1, 1)[1] == 128, "an example without perturbation is all grey")
  T.check(px(img, 3, 3)[1] == 255, "white margin")
end)

T.test("grid: captions with class names, right in green and wrong in red", function()
  local clean = ml.full({2, 3, 4, 4}, 0.5)
  local adv = (clean + 0.01):clamp(0, 1)
  local classes = {"cat", "dog", "ship"}
  local img, boxes = ml.image.grid{clean = clean, adversarial = adv, labels = ml.tensor({1, 3}, "int64"),
                                   predictions = ml.tensor({{5, 1, 0}, {0, 0, 9}}), classes = classes}
  -- default scale: 96 / 4 = 24; the captions widen the columns to "max|δ| 0.01" (11 characters)
  T.check(boxes[1].clean[3] == 4 * 24, "small images scaled up to about 96 pixels")
  local function colours_under(box)
    local found = {}
    for y = box[2] + box[4] + 2, box[2] + box[4] + 13 do
      for x = box[1] - 20, box[1] + box[3] + 20 do
        if x >= 1 and x <= img:size(3) then
          local c = px(img, x, y)
          found[c[1] .. "," .. c[2] .. "," .. c[3]] = true
        end
      end
    end
    return found
  end
  T.check(colours_under(boxes[1].adversarial)["30,150,30"], "prediction 1 = label 1: green")
  T.check(colours_under(boxes[2].adversarial)["210,30,30"] == nil, "prediction 3 = label 3 (argmax of the logits): not red")
  T.check(colours_under(boxes[2].adversarial)["30,150,30"], "... but green")
  T.check(colours_under(boxes[1].clean)["30,30,30"], "the true label in ink")
  local _, wrong = ml.image.grid{clean = clean, adversarial = adv, labels = {1, 3}, predictions = {2, 2}, classes = classes}
  T.raises(function() ml.image.grid{clean = clean, labels = {1, 7}, classes = classes} end, "image.grid: label 7 has no class name (3 classes)")
  T.raises(function() ml.image.grid{clean = clean, labels = {1}} end, "image.grid: 1 labels for 2 images")
  T.raises(function() ml.image.grid{clean = clean, adversarial = ml.zeros(2, 3, 4, 5)} end,
    "image.grid: adversarial images [2, 3, 4, 5] and clean images [2, 3, 4, 4] differ in shape")
  T.raises(function() ml.image.grid{clean = ml.zeros(4, 4)} end, "image.grid: clean images must be a batch")
  T.raises(function() ml.image.grid{clean = clean, adversarial = adv + 1} end, "image.grid: adversarial images: 96 values are outside [0, 1] (from 0 to 1.51)")
  T.raises(function() ml.image.grid{clean = clean, sacle = 2} end, "image.grid: unknown option sacle")
  T.raises(function() ml.image.grid{clean = clean, path = "/nonexistent-dir/g.png"} end, "png: cannot write /nonexistent-dir/g.png")
  T.check(wrong[1].perturbation ~= nil, "boxes for every panel")
  local one = ml.image.grid{clean = clean, labels = {1, 2}, predictions = {1, 3}, classes = classes, scale = 1}
  T.check(one:size(3) == 8 + 11 * 6 + 8, "one panel a row, as wide as its caption \"dog -> ship\"")
end)

T.test("text: grey ramp, or half blocks in 24-bit colour", function()
  local g = ml.tensor({{0, 1, 0.5, 0.25}, {0, 1, 0.5, 0.25}})
  T.check(ml.image.text(g) == " @+:", "two rows into one line of the ramp: " .. ml.image.text(g))
  local c = ml.image.text(g, {color = true})
  T.check(c:find("\27[38;2;255;255;255m\27[48;2;255;255;255m▀", 1, true), "white over white")
  T.check(c:find("\27[38;2;0;0;0m\27[48;2;0;0;0m▀", 1, true) and c:sub(-4) == "\27[0m", "black, reset at the end")
  T.check(ml.image.text(g, {color = true, ascii = true}) == " @+:", "ascii = true keeps the ramp")
  local wide = ml.image.text(ml.zeros(20, 200), {width = 50, height = 40})
  T.check(#wide == 50 * 3 + 2, "shrunk to 50 columns, the shape kept (200x20 -> 50x5 pixels, 3 lines)")
  T.raises(function() ml.image.text(g, {width = 0}) end, "image.text: width and height must be between 1 and 10000")
end)

T.test("show prints the text", function()
  local path = dir .. "/show.txt"
  local f = io.popen(("%s -e %q > %s"):format(arg[-1], "ml.image.show(ml.tensor({{0, 1}, {0, 1}}))", path))
  f:close()
  local out = io.open(path):read("a")
  T.check(out == " @\n", "not a terminal: the grey ramp: " .. out)
end)

T.test("help for every function", function()
  for _, f in ipairs{"save", "load", "text", "show", "grid"} do
    local real, got = print, nil
    print = function(s) got = s end
    ml.help(ml.image[f])
    print = real
    T.check(got and got:match("^ml%.image%." .. f), "help of ml.image." .. f)
  end
end)

os.execute("rm -rf " .. dir)
T.done()
