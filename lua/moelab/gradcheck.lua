-- ml.gradcheck(fn, inputs, [opts]) -> ok, max_rel_err, report
--
-- Compares the gradients that autograd computes for fn at `inputs` with central
-- finite differences. fn takes the inputs (as separate arguments) and returns a
-- tensor of any shape; it is reduced to a scalar with a fixed pseudo-random
-- weighting, so every output element is checked. Float inputs are perturbed one
-- element at a time (int64 inputs, e.g. labels, are passed through).
--
-- Error of one element: |analytic - numeric| / max(|analytic|, |numeric|, floor).
-- opts: eps (step, default 1e-2: float32 needs a large step), tol (default 1e-2),
--       floor (default 0.1), max_elements (per input, default 2000).
local ml = require "moelab"

local function weights_like(y)
  -- deterministic weights in [-1, 1] that do not touch the engine's RNG
  local n = y:numel()
  local w = {}
  for i = 1, n do w[i] = math.sin(i * 12.9898 + 78.233) end
  return ml.tensor(w):reshape(y:shape())
end

local function scalar_of(fn, args, w)
  local y = fn(table.unpack(args, 1, args.n))
  if type(y) ~= "userdata" then error("gradcheck: fn must return a tensor, got " .. type(y), 3) end
  if y:dtype() ~= "float32" then error("gradcheck: fn must return a float32 tensor", 3) end
  w = w or weights_like(y)
  return (y * w):sum(), w
end

function ml.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, tol, floor = opts.eps or 1e-2, opts.tol or 1e-2, opts.floor or 0.1
  local max_elements = opts.max_elements or 2000
  if type(fn) ~= "function" then error("gradcheck: first argument must be a function", 2) end
  if type(inputs) == "userdata" then inputs = {inputs} end
  if type(inputs) ~= "table" then error("gradcheck: inputs must be a tensor or a list of tensors", 2) end
  local args = {n = #inputs}
  local leaves = {}
  for i, x in ipairs(inputs) do
    if x:dtype() == "float32" then
      local leaf = x:detach():clone():requires_grad(true)
      args[i] = leaf
      leaves[#leaves + 1] = {index = i, leaf = leaf}
    else
      args[i] = x
    end
  end
  if #leaves == 0 then error("gradcheck: no float32 input to check", 2) end

  -- analytic gradients
  local L, w = scalar_of(fn, args)
  local list = {}
  for k, e in ipairs(leaves) do list[k] = e.leaf end
  local grads = ml.grad(L, list)

  local worst, report = 0, {}
  ml.no_grad(function()
    for k, e in ipairs(leaves) do
      local flat = e.leaf:reshape(-1)
      local g = grads[k]:reshape(-1)
      local n = flat:numel()
      if n > max_elements then
        error(("gradcheck: input %d has %d elements; at most %d are checked (opts.max_elements)")
          :format(e.index, n, max_elements), 3)
      end
      for j = 1, n do
        local v = flat[j]
        flat[j] = v + eps
        local fp = scalar_of(fn, args, w):item()
        flat[j] = v - eps
        local fm = scalar_of(fn, args, w):item()
        flat[j] = v
        local num = (fp - fm) / (2 * eps)
        local ana = g[j]
        local err = math.abs(ana - num) / math.max(math.abs(ana), math.abs(num), floor)
        if err > worst then
          worst = err
          report = {input = e.index, element = j, analytic = ana, numeric = num}
        end
      end
    end
  end)
  return worst <= tol, worst, report
end


-- ml.gradcheck_module(m, x, [opts]) -> ok, max_rel_err, report
-- Checks a module's gradients w.r.t. its input x and every parameter (the
-- analytic ones from backward, numeric ones by perturbing the parameter in
-- place). report names the worst parameter and element.
function ml.gradcheck_module(m, x, opts)
  opts = opts or {}
  local eps, floor = opts.eps or 1e-2, opts.floor or 0.1
  local max_elements = opts.max_elements or 600
  local ok, worst, report = ml.gradcheck(function(a) return m(a) end, {x}, opts)
  report.name = "input"
  local y = ml.no_grad(function() return m(x) end)
  local w = weights_like(y)
  local function loss() return (m(x) * w):sum() end
  for _, e in ipairs(m:named_parameters()) do
    local p = e.tensor
    if p:numel() <= max_elements then
      m:zero_grad()
      loss():backward()
      local ana = p.grad and p.grad:reshape(-1):clone() or ml.zeros(p:numel())
      ml.no_grad(function()
        local flat = p:reshape(-1)
        for j = 1, flat:numel() do
          local v = flat[j]
          flat[j] = v + eps
          local fp = loss():item()
          flat[j] = v - eps
          local fm = loss():item()
          flat[j] = v
          local num = (fp - fm) / (2 * eps)
          local err = math.abs(ana[j] - num) / math.max(math.abs(ana[j]), math.abs(num), floor)
          if err > worst then
            worst = err
            report = {name = e.name, element = j, analytic = ana[j], numeric = num}
          end
        end
      end)
    end
  end
  m:zero_grad()
  return worst <= (opts.tol or 1e-2), worst, report
end

ml.doc(ml.gradcheck_module, [[
ml.gradcheck_module(module, x, [opts]) -> ok, max_rel_err, report
  Finite-difference check of a module's gradients w.r.t. its input and each of its parameters
  (parameters with more than opts.max_elements = 600 elements are skipped). report.name names
  the worst offender. Use it on your own modules.]])

ml.doc(ml.gradcheck, [[
ml.gradcheck(fn, inputs, [{eps = 1e-2, tol = 1e-2, floor = 0.1, max_elements = 2000}]) -> ok, max_rel_err, report
  Compares autograd's gradients of fn at inputs (a tensor or a list) with central finite
  differences; use it to check your own modules. Error per element:
  |analytic - numeric| / max(|analytic|, |numeric|, floor).
  e.g. ok, err = ml.gradcheck(function(x) return x:tanh() * x end, ml.randn(3, 4))]])

return true
