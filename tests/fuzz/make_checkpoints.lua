-- Seed checkpoints for the checkpoint fuzzer (tests/fuzz/corpus/checkpoint/):
-- small models of each kind, with optimizer state. Run by make_corpus.py.
local ml = require "moelab"
local out = arg[1]
ml.seed(1)
local function step(model, opt, x, y)
  opt:zero_grad()
  local logits, _, aux = model:forward(x)
  local loss = ml.cross_entropy(logits, y)
  if aux then loss = loss + aux end
  loss:backward()
  opt:step()
end
local seeds = {
  {"linear_sgd", ml.nn.Linear(4, 3), "sgd", ml.rand(2, 4), 3},
  {"mlp_adam", ml.nn.mlp{hidden = {4}, input = {1, 4, 4}}, "adam", ml.rand(2, 1, 4, 4), 10},
  {"moe_cnn", ml.nn.cnn{width = 0.125, input = {1, 8, 8}, family = "moe_cnn", experts = 2}, "adam", ml.rand(2, 1, 8, 8), 10},
  {"vmoe", ml.nn.vmoe{dim = 8, depth = 2, heads = 2, mlp = 8, experts = 2, input = {1, 8, 8}, patch = 4}, "adamw",
   ml.rand(2, 1, 8, 8), 10},
}
for _, s in ipairs(seeds) do
  local name, model, kind, x, classes = table.unpack(s)
  local opt = ml.optim[kind](model, kind == "sgd" and {lr = 0.1, momentum = 0.9} or {lr = 0.01})
  step(model, opt, x, ml.randint(1, classes, {x:size(1)}))
  ml.save(out .. "/" .. name .. ".safetensors", model, {optimizer = opt, epoch = 1, meta = {seed = name}})
end
