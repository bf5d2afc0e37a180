-- Wrote checkpoint-v0.1.safetensors (and -io: an input and the model's output) with
-- moelab 0.1 (commit f183c44, when ml.save was Lua): a small MoE model, Adam state,
-- epoch, user metadata. Kept to check that files saved before still load.
-- Run with that version: moelab make-checkpoint-v0.1.lua out.safetensors out-io.safetensors
local ml = require "moelab"
ml.seed(5)
local model = ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(4, 3), ml.nn.GELU(),
  ml.nn.TokenMoE(3, {experts = 2, k = 1, expert = {type = "Linear", ["in"] = 3, out = 3}}))
local opt = ml.optim.adam(model, {lr = 0.01})
local x, y = ml.rand(5, 2, 2), ml.randint(1, 3, {5})
opt:zero_grad()
local loss = ml.cross_entropy(model(x), y)
loss:backward()
opt:step()
ml.save(arg[1], model, {optimizer = opt, epoch = 2, meta = {note = "written by moelab 0.1"}})
model:eval()
local out = ml.no_grad(function() return model(x) end)
ml.io.save_safetensors(arg[2], {x = x, out = out}, {})
