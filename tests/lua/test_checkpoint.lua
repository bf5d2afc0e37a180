-- Checkpoints: save/load round trips bit-exact for every kind of model, files
-- that other safetensors readers accept, optimizer state, refusal of truncated
-- or corrupt files, atomic writes, both argument orders, strict loads, files of
-- moelab 0.1, and no code from a file ever running.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function roundtrip(name, model, x)
  ml.seed(1)
  model:eval()
  local path = dir .. "/" .. name .. ".safetensors"
  ml.save(path, model)
  local loaded, info = ml.load(path)
  T.check(loaded:config() == model:config(), name .. ": same config")
  local a = ml.no_grad(function() return model(x) end)
  local b = ml.no_grad(function() return loaded(x) end)
  T.close(b, a, 0, 0, name .. ": bit-exact outputs after reload")
  for k, v in pairs(model:state_dict()) do T.check(loaded:state_dict()[k]:equal(v), name .. " " .. k) end
  return path, info
end

T.test("round trips", function()
  roundtrip("mlp", ml.nn.mlp{}, ml.rand(2, 1, 28, 28))
  roundtrip("resnet18", ml.nn.resnet18{width = 0.5}, ml.rand(2, 3, 32, 32))
  roundtrip("moe_cnn_global", ml.nn.moe_cnn{experts = 2, router = "global", width = 0.5}, ml.rand(2, 3, 32, 32))
  roundtrip("vmoe", ml.nn.vmoe{dim = 16, depth = 2, heads = 2, mlp = 32, experts = 4}, ml.rand(2, 1, 28, 28))
  roundtrip("sparse_cnn", ml.nn.sparse_cnn{backbone = "cnn"}, ml.rand(2, 1, 28, 28))
  local custom = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(4, 3), ml.nn.GELU(),
    ml.nn.TokenMoE(3, {experts = 2, k = 1, expert = {type = "Linear", ["in"] = 3, out = 3}}))
  roundtrip("composed", custom, ml.rand(5, 2, 2))
end)

T.test("the file is standard safetensors", function()
  local path = roundtrip("std", ml.nn.cnn{}, ml.rand(1, 1, 28, 28))
  local text, n = ml.io.safetensors_header(path)
  T.check(n % 8 == 0, "header padded to 8 bytes")
  local h = ml.json.decode(text)
  T.check(h.__metadata__ and h.__metadata__["moelab.config"], "config in __metadata__")
  local entries, total = {}, 0
  for k, e in pairs(h) do
    if k ~= "__metadata__" then
      entries[#entries + 1] = e
      local numel = 1
      for _, s in ipairs(e.shape) do numel = numel * s end
      T.check(e.data_offsets[2] - e.data_offsets[1] == numel * 4, k .. ": offsets match the shape")
      total = total + numel * 4
    end
  end
  table.sort(entries, function(a, b) return a.data_offsets[1] < b.data_offsets[1] end)
  for i = 2, #entries do T.check(entries[i].data_offsets[1] == entries[i - 1].data_offsets[2], "contiguous data") end
  local f = io.open(path, "rb")
  local size = f:seek("end")
  f:close()
  T.check(size == 8 + n + total, "file size = 8 + header + data")
  -- with PyTorch installed, an independent reader must agree
  local py = io.open("/usr/bin/python3", "r")
  if py then
    py:close()
    local cmd = ("/usr/bin/python3 -c \"import sys; sys.path.insert(0, 'bench'); import torch_models as t; "
      .. "d, m = t.load_safetensors('%s'); print(len(d), m['moelab.format'])\" 2>/dev/null"):format(path)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    if out ~= "" then T.check(out:find("^%d+ 1"), "read by a Python reader: " .. out) end
  end
end)

T.test("optimizer state resumes", function()
  ml.seed(2)
  local model = ml.nn.mlp{hidden = {16}}
  local opt = ml.optim.adam(model, {lr = 0.01})
  local x, y = ml.rand(8, 1, 28, 28), ml.randint(1, 10, {8})
  local function step(m, o)
    o:zero_grad()
    local loss = ml.cross_entropy(m(x), y)
    loss:backward()
    o:step()
  end
  step(model, opt)
  local path = dir .. "/resume.safetensors"
  ml.save(path, model, {optimizer = opt, epoch = 3})
  local m2, info = ml.load(path)
  T.check(info.epoch == 3 and info.optimizer_steps == 1, "epoch and steps restored")
  local o2 = ml.optim.adam(m2, {lr = 0.01})
  o2:load_state_dict(info.optimizer_state, info.optimizer_steps)
  m2:train()
  model:train()
  step(model, opt)
  step(m2, o2)
  for k, v in pairs(model:parameters()) do T.close(m2:parameters()[k], v, 0, 0, "resumed step of " .. k) end
end)

T.test("truncated and corrupt files are refused", function()
  local path = roundtrip("victim", ml.nn.cnn{}, ml.rand(1, 1, 28, 28))
  local f = io.open(path, "rb")
  local bytes = f:read("a")
  f:close()
  local bad = dir .. "/bad.safetensors"
  local g = io.open(bad, "wb")
  g:write(bytes:sub(1, #bytes - 100))
  g:close()
  T.raises(function() ml.load(bad) end, "truncated")
  T.raises(function() ml.load(bad) end, bad)
  g = io.open(bad, "wb")
  g:write(bytes:sub(1, 8) .. ("x"):rep(40) .. bytes:sub(49))
  g:close()
  T.raises(function() ml.load(bad) end, "not a JSON object")
  T.raises(function() ml.load(dir .. "/missing.safetensors") end, "cannot open")
  -- an unwritable target leaves no partial file and raises
  T.raises(function() ml.save("/nonexistent/dir/m.safetensors", ml.nn.cnn{}) end, "cannot write")
  -- an existing good file survives a failed save onto it
  T.raises(function() ml.save(path, ml.nn.Lambda(function(x) return x end)) end, "cannot be rebuilt")
  T.check(ml.load(path) ~= nil, "the earlier checkpoint is intact")
end)

T.test("both argument orders, and clear errors for wrong ones", function()
  local model = ml.nn.Linear(4, 3)
  local a, b = dir .. "/torch7.safetensors", dir .. "/pytorch.safetensors"
  ml.save(a, model, {epoch = 1})        -- Torch7: torch.save(path, object)
  ml.save(model, b, {epoch = 1})        -- PyTorch: torch.save(object, path)
  local fa, fb = io.open(a, "rb"), io.open(b, "rb")
  T.check(fa:read("a") == fb:read("a"), "the same file either way")
  fa:close() fb:close()
  local usage = "save: expected ml.save(path, model, [options]) or ml.save(model, path, [options]), got "
  T.raises(function() ml.save(a, nil) end, usage .. "string and nil")
  T.raises(function() ml.save(nil, a) end, usage .. "nil and string")
  T.raises(function() ml.save(a) end, usage .. "string and no value")
  T.raises(function() ml.save(model, model) end, usage .. "userdata and userdata")
  T.raises(function() ml.save(a, {weight = ml.rand(3, 4)}) end, usage .. "string and table")
  T.raises(function() ml.save(a, model, {epochs = 2}) end, "save: unknown option")
  T.raises(function() ml.save(a, model, {epoch = 1.5}) end, "save: epoch must be a non-negative integer, got 1.5")
  T.raises(function() ml.save(a, model, {meta = {x = {}}}) end, "save: meta 'x' must be a string, number or boolean, got a table")
  T.raises(function() ml.save(a, model, {meta = {["moelab.config"] = "{}"}}) end, "metadata key 'moelab.config' is reserved")
  T.raises(function() ml.save(a, model, {optimizer = "adam"}) end, "bad argument")
  T.raises(function() ml.load(nil) end, "load: expected ml.load(path, [{strict = true}]), got a nil")
  T.raises(function() ml.load(a, {strickt = false}) end, "load: unknown option")
  local m, info = ml.load(a)
  T.check(m:config() == model:config() and info.epoch == 1 and info.optimizer_state == nil, "info without an optimizer")
  T.check(info.meta["moelab.format"] == "1" and info.meta["moelab.version"] == ml.version, "format and version recorded")
end)

T.test("files saved by moelab 0.1 still load", function()
  -- written by the Lua ml.save of moelab 0.1 (tests/files/make-checkpoint-v0.1.lua)
  local m, info = ml.load("tests/files/checkpoint-v0.1.safetensors")
  local io_ref = ml.io.load_safetensors("tests/files/checkpoint-v0.1-io.safetensors")
  local out = ml.no_grad(function() return m(io_ref.x) end)
  T.close(out, io_ref.out, 0, 0, "the same outputs, bit for bit")
  T.check(info.epoch == 2 and info.optimizer_steps == 1 and info.meta.note == "written by moelab 0.1", "metadata")
  local opt = ml.optim.adam(m, {lr = 0.01})
  opt:load_state_dict(info.optimizer_state, info.optimizer_steps)
  T.check(opt:steps() == 1 and info.optimizer_lr == 0.01, "optimizer state restores")
end)

T.test("strict and non-strict loads", function()
  local model = ml.nn.Linear(4, 3)
  local cfg = model:config()
  local meta = {["moelab.format"] = "1", ["moelab.config"] = cfg}
  local w, b = ml.full({3, 4}, 2), ml.full({3}, 3)
  local path = dir .. "/strict.safetensors"
  ml.io.save_safetensors(path, {weight = w, bias = b, ["head.weight"] = w, ["head.bias"] = b}, meta)
  T.raises(function() ml.load(path) end, "load_state_dict: 2 entries of " .. path .. " are not in the model ('head.bias', 'head.weight')")
  local m = ml.load(path, {strict = false})
  T.check(m:state_dict().weight:equal(w) and m:state_dict().bias:equal(b), "the common tensors load")
  ml.io.save_safetensors(path, {weight = w}, meta)
  T.raises(function() ml.load(path) end, "1 entries of the model are missing from " .. path .. " (first: 'bias')")
  m = ml.load(path, {strict = false})
  T.check(m:state_dict().weight:equal(w), "a subset loads; the rest keeps its initial values")
  ml.io.save_safetensors(path, {weight = w:long(), bias = b}, meta)
  T.raises(function() ml.load(path) end, "'weight' is float32 in the model but int64 in " .. path)
  -- the same rules for load_state_dict
  T.raises(function() model:load_state_dict({weight = w, bias = b, extra = b}) end,
    "load_state_dict: 1 entries of the table are not in the model ('extra')")
  T.check(model:load_state_dict({weight = w, bias = b, extra = b}, {strict = false}) == 2, "non-strict ignores extras")
  T.raises(function() model:load_state_dict({weight = w, bias = 3}) end, "load_state_dict: 'bias' is a number, not a tensor")
end)

T.test("loading never runs code from the file", function()
  _G.pwned = nil
  local path = dir .. "/code.safetensors"
  local lua = "_G.pwned = true; os.exit(3)"
  ml.io.save_safetensors(path, {}, {["moelab.format"] = "1", ["moelab.config"] = '{"type": "Lambda", "fn": "' .. lua .. '"}'})
  T.raises(function() ml.load(path) end, "unknown module type 'Lambda'")
  ml.io.save_safetensors(path, {}, {["moelab.format"] = "1", ["moelab.config"] = lua})
  T.raises(function() ml.load(path) end, "the model config is not a JSON object")
  local _, meta = ml.io.load_safetensors(path)
  T.check(meta["moelab.config"] == lua and _G.pwned == nil, "code in a file is only ever a string")
end)

T.test("save_safetensors without metadata", function()
  local path = dir .. "/plain.safetensors"
  ml.io.save_safetensors(path, {a = ml.ones(2), b = ml.arange(3):long()})
  local t, meta = ml.io.load_safetensors(path)
  T.check(t.a:equal(ml.ones(2)) and t.b:equal(ml.arange(3):long()) and next(meta) == nil, "round trip, no metadata")
  local text = ml.io.safetensors_header(path)
  T.check(not text:find("__metadata__"), "no empty __metadata__ written")
end)

os.execute("rm -rf " .. dir)
T.done()
