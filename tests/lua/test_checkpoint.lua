-- Checkpoints: save/load round trips bit-exact for every kind of model, files
-- that other safetensors readers accept, optimizer state, refusal of truncated
-- or corrupt files, atomic writes.
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

os.execute("rm -rf " .. dir)
T.done()
