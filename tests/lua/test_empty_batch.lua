-- A batch of 0 gives an empty result, forward and backward, in every model of
-- the zoo, in training and evaluation mode (and BatchNorm leaves its running
-- statistics alone). The convolution paths and pooling are covered one by one
-- in tests/c/test_conv.c (empty_batch).
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local cifar, mnist = {3, 32, 32}, {1, 28, 28}
local models = {
  {"resnet18", function() return ml.nn.resnet18{base_width = 8} end, cifar},
  {"vgg16", function() return ml.nn.vgg16{width = 0.125} end, cifar},
  {"wrn", function() return ml.nn.wrn{depth = 10, widen = 1} end, cifar},
  {"moe_cnn sparse", function() return ml.nn.moe_cnn{base_width = 8, experts = 2} end, cifar},
  {"moe_cnn mask", function() return ml.nn.moe_cnn{base_width = 8, experts = 2}:set_moe_form("mask") end, cifar},
  {"moe_cnn global router", function() return ml.nn.moe_cnn{base_width = 8, experts = 2, router = "global"} end, cifar},
  {"s_dense", function() return ml.nn.s_dense{backbone = "resnet18", base_width = 8} end, cifar},
  {"sparse_cnn", function() return ml.nn.sparse_cnn{backbone = "resnet18", base_width = 8} end, cifar},
  {"cnn", function() return ml.nn.cnn{} end, mnist},
  {"mlp", function() return ml.nn.mlp{} end, mnist},
  {"vit", function() return ml.nn.vit{dim = 32, depth = 1, heads = 2, mlp = 64, patch = 7} end, mnist},
  {"vmoe", function() return ml.nn.vmoe{dim = 32, depth = 2, heads = 2, mlp = 64, experts = 4, patch = 7} end, mnist},
}

for _, c in ipairs(models) do
  T.test(c[1] .. " on a batch of 0", function()
    ml.seed(1)
    local model = c[2]()
    local shape = {0, table.unpack(c[3])}
    local before = {}
    for k, v in pairs(model:state_dict()) do before[k] = v:clone() end
    for _, mode in ipairs{"train", "eval"} do
      if mode == "train" then model:train() else model:eval() end
      local x = ml.rand(shape):requires_grad()
      local logits, _, aux = model:forward(x)
      T.check(logits:shape()[1] == 0 and logits:shape()[2] == 10, ("%s, %s: logits [0, 10]"):format(c[1], mode))
      local loss = logits:sum()
      if aux then loss = loss + aux end
      loss:backward()
      local gx = x.grad
      T.check(gx and gx:shape()[1] == 0 and gx:shape()[2] == shape[2], ("%s, %s: an empty input gradient"):format(c[1], mode))
      model:zero_grad()
    end
    for k, v in pairs(model:state_dict()) do
      T.check(v:equal(before[k]), ("%s: %s unchanged by an empty batch"):format(c[1], k))
    end
  end)
end

T.done()
