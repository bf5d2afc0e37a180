-- Bad input at the Lua level: each call must raise an error whose message names
-- the function and the offending values -- never a crash, never a silent answer.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local x23 = ml.randn(2, 3)
local cases = {
  -- creation
  {function() ml.zeros(2, -3) end, "zeros: size 2 is negative"},
  {function() ml.ones({2, "a"}) end, "ones: size 2 must be an integer"},
  {function() ml.tensor({{1, 2}, {3}}) end, "ragged table"},
  {function() ml.tensor({1, "x"}) end, "expected numbers"},
  {function() ml.tensor("abc") end, "table or number expected"},
  {function() ml.tensor({1, 2}, "float16") end, "unknown dtype 'float16'"},
  {function() ml.arange(0, 10, 0) end, "arange: step must be a finite non-zero number"},
  {function() ml.eye(-1) end, "eye: sizes must be non-negative"},
  {function() ml.randint(5, 1, {3}) end, "randint: high (1) is less than low (5)"},
  {function() ml.randint(5) end, "randint: expected a shape table"},
  {function() ml.zeros(1, 1, 1, 1, 1, 1, 1) end, "at most 6 dimensions"},
  -- queries and conversion
  {function() x23:item() end, "item: tensor has 6 elements"},
  {function() x23:size(3) end, "size: dimension 3 is out of range"},
  {function() x23:size(0) end, "dimension 0 is invalid (dimensions are 1-based"},
  {function() local _ = x23[3] end, "index: 3 is out of range for dimension 1 of size 2"},
  {function() local _ = x23[0] end, "index: 0 is out of range"},
  {function() x23[5] = 1 end, "index: 5 is out of range"},
  {function() x23.foo = 1 end, "cannot set field 'foo'"},
  {function() ml.tensor({0/0}):long() end, "long: cannot convert"},
  -- shapes and views
  {function() x23:reshape(4, 2) end, "reshape: shape [4, 2] is invalid for a tensor of 6 elements"},
  {function() x23:reshape(-1, -1) end, "reshape: only one dimension can be -1"},
  {function() x23:reshape(4, -1) end, "reshape: cannot infer dimension 2"},
  {function() x23:permute(1, 1) end, "permute: the order must list each of the 2 dimensions exactly once"},
  {function() x23:permute(1) end, "permute: got 1 dimensions for a tensor with 2"},
  {function() x23:transpose(1, 3) end, "transpose: dimension 3 is out of range"},
  {function() ml.randn(3):t() end, "t: expects a 2-d tensor, got shape [3]"},
  {function() x23:narrow(2, 3, 2) end, "narrow: range [3, 4] (1-based, length 2) is outside dimension 2 of size 3"},
  {function() x23:narrow(2, 0, 1) end, "narrow: start 0 is invalid (positions are 1-based)"},
  {function() x23:select(1, 3) end, "select: index 3 is out of range for dimension 1 of size 2"},
  {function() x23:expand(4, 3) end, "expand: size 2 of dimension 1 cannot become 4"},
  {function() x23:expand(3) end, "expand: the new shape has 1 dimensions, fewer than the tensor's 2"},
  {function() ml.cat({x23, ml.randn(2, 4)}, 1) end, "cat: tensor 2 has shape [2, 4], tensor 1 has [2, 3] (only dimension 1 may differ)"},
  {function() ml.cat({x23, ml.randn(2, 3):long()}) end, "cat: tensor 2 is int64, tensor 1 is float32"},
  {function() ml.cat({}) end, "cat: the table of tensors is empty"},
  {function() ml.cat({x23, 3}) end, "cat: element 2 of the table is a number, not a tensor"},
  {function() ml.stack({x23, ml.randn(3, 2)}) end, "stack: tensor 2 has shape [3, 2], tensor 1 has [2, 3]"},
  {function() x23:copy(ml.randn(3, 3)) end, "copy: source of shape [3, 3] does not fit destination of shape [2, 3]"},
  -- math
  {function() return x23 + ml.randn(3, 2) end, "add: shapes [2, 3] and [3, 2] cannot be broadcast together"},
  {function() return x23 * ml.randn(4) end, "mul: shapes [2, 3] and [4] cannot be broadcast together (dimension 2: 3 vs 4)"},
  {function() return x23 + "a" end, "arithmetic on a tensor and a string"},
  {function() return x23 + {} end, "arithmetic on a tensor and a table"},
  {function() x23:clamp(1, 0) end, "clamp: min 1 is greater than max 0"},
  {function() ml.relu(5) end, "tensor expected, got number"},
  {function() ml.relu() end, "tensor expected, got no value"},
  {function() x23:sum(3) end, "sum: dimension 3 is out of range for a tensor with 2 dimensions"},
  {function() x23:var(2, {unbiased = true, keep = true}) end, "var: unknown option 'keep'"},
  {function() ml.randn(1):var() end, "var: 1 element(s) along the dimension is too few"},
  {function() x23:norm(-1) end, "norm: p must be positive"},
  {function() x23:norm("l7") end, "norm: unknown p 'l7'"},
  {function() ml.matmul(x23, ml.randn(2, 3)) end, "matmul: shapes [2, 3] and [2, 3] do not match (3 columns vs 2 rows)"},
  {function() ml.matmul(x23:long(), x23) end, "matmul: expects float32 tensors, got int64 and float32"},
  {function() ml.bmm(x23, x23) end, "bmm: expects two 3-d tensors, got [2, 3] and [2, 3]"},
  {function() ml.linear(x23, ml.randn(4, 2)) end, "linear: input has 3 features (shape [2, 3]), weight expects 2"},
  {function() ml.linear(x23, ml.randn(4, 3), ml.randn(3)) end, "linear: bias has shape [3], expected [4]"},
  {function() ml.dot(x23, x23) end, "dot: expects two 1-d tensors"},
  -- autograd
  {function() x23:backward() end, "backward: the tensor does not require grad"},
  {function() ml.randn(2):requires_grad():mul(2):backward() end, "backward: the output has 2 elements"},
  {function() ml.randn(2):long():requires_grad() end, "requires_grad: only float32 tensors can require gradients"},
  {function() ml.grad(ml.randn(2):requires_grad():sum(), ml.randn(2)) end, "grad: input 1 does not require grad"},
  {function() ml.no_grad(5) end, "bad argument #1 to 'no_grad' (function expected, got number)"},
  {function() ml.randn(2):requires_grad():sum():backward(ml.randn(3)) end, "backward: gradient of shape [3] given for an output of shape []"},
  -- nn and optimizers
  {function() ml.nn.Linear(0, 3) end, "Linear: sizes must be positive (got in = 0, out = 3)"},
  {function() ml.nn.Linear(3, 2, {bias = 1}) end, "option 'bias' must be true or false"},
  {function() ml.nn.Linear(3, 2)(ml.randn(2, 4)) end, "Linear: input has 4 features (shape [2, 4]), expected 3"},
  {function() ml.nn.Sequential(ml.nn.Linear(3, 2), ml.nn.Linear(3, 2))(ml.randn(1, 3)) end, "in 1 (Linear): Linear: input has 2 features"},
  {function() ml.nn.Sequential(ml.nn.Linear(3, 2), 5) end, "Sequential: argument 2 is a number, not a module"},
  {function() ml.nn.Normalize({0.5}, {0}) end, "Normalize: std of channel 1 is 0"},
  {function() ml.nn.Normalize({0.5}, {0.2})(ml.rand(2, 3, 4, 4)) end, "Normalize: input has shape [2, 3, 4, 4], expected 1 channels"},
  {function() ml.nn.Linear(3, 2):get(1) end, "get: index 1 is out of range (the module has 0 children)"},
  {function() ml.nn.Linear(3, 2):parameters("experts") end, "parameters: unknown group 'experts'"},
  {function() ml.nn.Linear(3, 2):load_state_dict({}) end, "load_state_dict: 2 entries of the model are missing"},
  {function() ml.nn.Linear(3, 2):load_state_dict({weight = ml.randn(3, 3), bias = ml.randn(2)}) end,
   "load_state_dict: 'weight' has shape [2, 3] in the model but [3, 3] in the table"},
  {function() ml.nn.from_config('{"type": "Bogus"}') end, "model config: unknown module type 'Bogus'"},
  {function() ml.save("/tmp/x.safetensors", ml.nn.Lambda(function(t) return t end)) end, "Lambda module cannot be rebuilt from data"},
  {function() ml.optim.sgd(ml.nn.Linear(2, 2), {lr = -0.1}) end, "learning rate must be >= 0, got -0.1"},
  {function() ml.train.schedule{kind = "exp"} end, "schedule: unknown kind \"exp\""},
  {function() ml.train.schedule{kind = "cosine"} end, "schedule: kind \"cosine\" needs total"},
  -- files
  {function() ml.io.load_safetensors("/nonexistent.safetensors") end, "safetensors: cannot open /nonexistent.safetensors"},
  {function() ml.io.save_safetensors("/tmp/y.safetensors", {a = 1}) end, "save_safetensors: value 'a' is a number, not a tensor"},
  {function() ml.load("tests/vectors/ops.safetensors") end, "has no moelab model config in its metadata"},
  -- JSON (one converter for configs, metadata and ml.json)
  {function() local t, c = {}, nil; c = t; for _ = 1, 300 do c[1] = {}; c = c[1] end; ml.json.encode(t) end,
   "json.encode: tables nested too deeply (or a cycle)"},
  {function() local a = {}; a.self = a; ml.json.encode(a) end, "json.encode: tables nested too deeply (or a cycle)"},
  {function() ml.json.encode({1, 2, a = 3}) end, "json.encode: a table mixes list entries and named entries"},
  {function() ml.json.encode({f = print}) end, "json.encode: cannot encode a function"},
  {function() ml.json.encode({0 / 0}) end, "json.encode: NaN and infinity have no JSON form"},
  {function() ml.nn.vit({dim = {print}}) end, "cannot encode a function"},
}

T.test("every bad call raises a clear error", function()
  for i, c in ipairs(cases) do
    local ok, err = T.raises(c[1], c[2], "case " .. i)
    if not ok and err then io.stderr:write("  case " .. i .. ": " .. err .. "\n") end
  end
end)

T.test("errors leave the session usable", function()
  -- after all those errors the engine still computes and frees memory
  local before = ml.memory()
  for _ = 1, 10 do pcall(function() return ml.randn(100, 100) + ml.randn(3) end) end
  collectgarbage()
  local after = ml.memory()
  T.check(after.tensors <= before.tensors + 2, "no tensors leaked by failed calls")
  T.close(ml.tensor({1, 2}) + 1, ml.tensor({2, 3}))
end)

print(("%d bad-input cases checked"):format(#cases))
T.done()
