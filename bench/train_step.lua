-- bench/train_step.lua -- the training step every benchmark times (bench/WORKLOADS.md):
-- zero grads, forward, cross-entropy plus the routers' auxiliary loss, backward, step.
--   local train_step = dofile("bench/train_step.lua"); train_step(model, opt, x, y)
local ml = require "moelab"
return function(model, opt, x, y)
  opt:zero_grad()
  local logits, _, aux = model:forward(x)
  local loss = ml.cross_entropy(logits, y)
  if aux then loss = loss + aux end
  loss:backward()
  opt:step()
end
