-- ml.image: pictures. save/load/text/show are C (bindings/lua_image.c); here
-- the comparison grid's captions (class names, right and wrong predictions) and
-- the help texts.
local ml = require "moelab"

local I = ml.image

local function is_tensor(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name == "Tensor"
end

-- Labels as a Lua list of integers: a list, an int64 tensor, or logits [N, K] (their argmax).
local function label_list(what, v, n)
  if v == nil then return nil end
  if is_tensor(v) then
    if v:dtype() == "float32" and v:dim() == 2 then v = v:argmax(2) end
    v = v:reshape(-1):totable()
  end
  if type(v) ~= "table" then error(("image.grid: %s must be a list or tensor of labels, got %s"):format(what, type(v)), 3) end
  if #v ~= n then error(("image.grid: %d %s for %d images"):format(#v, what, n), 3) end
  for i, l in ipairs(v) do
    if math.type(l) ~= "integer" and not (type(l) == "number" and l == math.floor(l)) then
      error(("image.grid: %s item %d is %s, not an integer label"):format(what, i, tostring(l)), 3)
    end
    v[i] = math.tointeger(l)
  end
  return v
end

local function class_name(classes, label)
  if not classes then return tostring(label) end
  local name = classes[label]
  if name == nil then error(("image.grid: label %d has no class name (%d classes)"):format(label, #classes), 3) end
  return tostring(name)
end

local GRID_OPTIONS = {clean = true, adversarial = true, labels = true, predictions = true, classes = true,
                      scale = true, path = true, clamp = true, headers = true}

I.grid = ml.doc(function(o)
  if type(o) ~= "table" then error("image.grid: expects {clean = X, ...}", 2) end
  for k in pairs(o) do
    if not GRID_OPTIONS[k] then
      error(("image.grid: unknown option %s (known: adversarial, clamp, classes, clean, headers, labels, path, predictions, scale)")
        :format(tostring(k)), 2)
    end
  end
  if not is_tensor(o.clean) then error("image.grid: clean must be a tensor of images [N, C, H, W]", 2) end
  local n = o.clean:dim() >= 3 and o.clean:size(1) or 0
  local labels, preds = label_list("labels", o.labels, n), label_list("predictions", o.predictions, n)
  local panels = o.adversarial and 3 or 1
  local captions, colors = {}, {}
  local amp
  if o.adversarial and is_tensor(o.adversarial) and ml.equal(ml.tensor(o.adversarial:shape()), ml.tensor(o.clean:shape())) then
    amp = (o.adversarial - o.clean):abs():reshape(n, -1):max(2):totable()
  end
  for i = 1, n do
    local base = (i - 1) * panels
    local truth = labels and class_name(o.classes, labels[i])
    local pred = preds and class_name(o.classes, preds[i])
    local verdict = labels and preds and (labels[i] == preds[i] and "good" or "bad") or nil
    if panels == 1 then
      captions[base + 1] = truth and pred and ("%s -> %s"):format(truth, pred) or truth or pred
      colors[base + 1] = verdict
    else
      captions[base + 1] = truth and ("true: " .. truth)
      captions[base + 2] = pred and ("pred: " .. pred)
      colors[base + 2] = verdict
      captions[base + 3] = amp and ("max|δ| %.3g"):format(amp[i])
    end
  end
  local headers
  if o.headers ~= false then
    headers = type(o.headers) == "table" and o.headers or (panels == 3 and {"clean", "adversarial", "perturbation"} or nil)
  end
  local image, boxes = ml.plot._call(I._grid, {clean = o.clean, adversarial = o.adversarial, captions = (labels or preds or amp) and captions,
                               colors = colors, headers = headers, scale = o.scale, clamp = o.clamp})
  if o.path then ml.plot._call(I.save, image, o.path) end
  local names = {"clean", "adversarial", "perturbation"}
  local rows = {}
  for i = 1, n do
    rows[i] = {}
    for k = 1, panels do rows[i][names[k]] = boxes[(i - 1) * panels + k] end
  end
  return image, rows
end, [[
ml.image.grid{clean = X, [adversarial = Xa, labels = y, predictions = p, classes = names, scale = k,
  path = "grid.png", headers = true | false | {...}, clamp = false]} -> image [3, H, W], boxes
  One row per example: clean | adversarial | the perturbation Xa - X scaled so its largest |value|
  spans the range (grey is zero), small images scaled up k times (default: to about 96 pixels).
  Under each: "true: <class>", "pred: <class>" (green when right, red when wrong), "max|δ| <value>".
  X, Xa: [N, C, H, W] or [N, H, W] in [0, 1]; y, p: 1-based labels (lists or tensors; p may be
  logits [N, K]); names: class names by label (ds:classes()). path writes the PNG too. boxes[i] =
  {clean = {x, y, w, h}, adversarial = ..., perturbation = ...}: where each image is (1-based pixels).]])

ml.doc(I.show, [[
ml.image.show(t, [{width, height, color, ascii, clamp}]) draws an image [C, H, W] or [H, W] (values in
  [0, 1]) in the terminal: half blocks ▀ in 24-bit colour (two pixels a cell) on a colour UTF-8
  terminal, else a grey-level ASCII ramp; shrunk to the terminal (or width x height cells) if larger.
  e.g. ml.image.show(ml.data.mnist().test:get(1))]])

ml.doc(I.save, [[
ml.image.save(t, path, [{clamp = false}]) writes [C, H, W] (C = 1 or 3) or [H, W] float values in [0, 1]
  as an 8-bit PNG (round(255 v)); values outside [0, 1] are an error unless clamp = true clips them.]])
ml.doc(I.load, "ml.image.load(path) -> [C, H, W] float tensor in [0, 1] (C = 1 for gray, 3 for colour; alpha dropped)")
ml.doc(I.text, [[
ml.image.text(t, [{width, height, color = false, ascii = false, clamp = false}]) -> the string ml.image.show
  prints: color = true (and not ascii) gives half blocks with 24-bit ANSI colours, else a grey ramp " .:-=+*#%@".]])

return true
