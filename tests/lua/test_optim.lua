-- Optimizers against hand-computed updates (PyTorch's rules), clipping, state round trip.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

-- Runs `steps` updates of an optimizer on w with fixed gradients g_t = w * c_t.
local function run(kind, opts, w0, steps)
  local w = ml.tensor(w0):requires_grad()
  local opt = ml.optim[kind]({w}, opts)
  for t = 1, steps do
    opt:zero_grad()
    local loss = (w * w):sum() * (0.5 * t) -- grad = t * w
    loss:backward()
    opt:step()
  end
  return w, opt
end

-- The same updates written out in plain Lua numbers.
local function reference(kind, o, w0, steps)
  local w, buf, m, v = {}, {}, {}, {}
  for i, x in ipairs(w0) do w[i], m[i], v[i] = x, 0, 0 end
  for t = 1, steps do
    for i = 1, #w do
      local g = t * w[i]
      if kind == "sgd" then
        local d = g + (o.weight_decay or 0) * w[i]
        if (o.momentum or 0) > 0 then
          buf[i] = (t == 1) and d or (o.momentum * buf[i] + (1 - (o.dampening or 0)) * d)
          local upd = o.nesterov and (d + o.momentum * buf[i]) or buf[i]
          w[i] = w[i] - o.lr * upd
        else
          w[i] = w[i] - o.lr * d
        end
      else
        local b1, b2, eps, wd = 0.9, 0.999, 1e-8, o.weight_decay or (kind == "adamw" and 0.01 or 0)
        local d = g
        if kind == "adamw" then w[i] = w[i] * (1 - o.lr * wd) else d = d + wd * w[i] end
        m[i] = b1 * m[i] + (1 - b1) * d
        v[i] = b2 * v[i] + (1 - b2) * d * d
        local mh, vh = m[i] / (1 - b1 ^ t), v[i] / (1 - b2 ^ t)
        w[i] = w[i] - o.lr * mh / (math.sqrt(vh) + eps)
      end
    end
  end
  return w
end

local w0 = {0.5, -1.25, 2.0, 0.1}
for _, case in ipairs{
  {"sgd", {lr = 0.1}},
  {"sgd", {lr = 0.1, weight_decay = 0.01}},
  {"sgd", {lr = 0.05, momentum = 0.9}},
  {"sgd", {lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-3}},
  {"sgd", {lr = 0.05, momentum = 0.5, dampening = 0.1}},
  {"adam", {lr = 0.01}},
  {"adam", {lr = 0.01, weight_decay = 0.1}},
  {"adamw", {lr = 0.01}},
  {"adamw", {lr = 0.02, weight_decay = 0.05}},
} do
  local kind, o = case[1], case[2]
  T.test(kind .. " " .. (o.momentum and "momentum " or "") .. (o.nesterov and "nesterov " or "") ..
         (o.weight_decay and ("wd " .. o.weight_decay) or ""), function()
    local w = run(kind, o, w0, 3)
    local ref = reference(kind, o, w0, 3)
    for i = 1, #w0 do T.near(w[i], ref[i], 1e-5, kind .. " element " .. i) end
  end)
end

T.test("clip_grad_norm", function()
  local a, b = ml.tensor({3, 0}):requires_grad(), ml.tensor({0, 4}):requires_grad()
  local loss = (a * a):sum() * 0.5 + (b * b):sum() * 0.5 -- grads (3,0) and (0,4): norm 5
  loss:backward()
  local norm = ml.clip_grad_norm({a, b}, 1.0)
  T.near(norm, 5, 1e-6, "norm before clipping")
  local after = math.sqrt(a.grad:pow(2):sum():item() + b.grad:pow(2):sum():item())
  T.near(after, 1.0, 1e-4, "norm after clipping")
  T.near(ml.clip_grad_norm({a, b}, 10), after, 1e-6, "no clipping below the bound")
end)

T.test("state round trip resumes identically", function()
  local w1, o1 = run("adam", {lr = 0.01}, w0, 2)
  local state, steps = o1:state_dict()
  local w2 = ml.tensor(w1:totable()):requires_grad()
  local o2 = ml.optim.adam({w2}, {lr = 0.01})
  o2:load_state_dict(state, steps)
  for _, pair in ipairs{{w1, o1}, {w2, o2}} do
    local w, o = pair[1], pair[2]
    o:zero_grad()
    local loss = (w * w):sum() * 1.5
    loss:backward()
    o:step()
  end
  T.close(w1, w2, 0, 0, "resumed optimizer gives the same update")
  T.check(o2:steps() == 3, "step count restored")
end)

T.test("bad input", function()
  local w = ml.randn(3):requires_grad()
  T.raises(function() ml.optim.sgd({w}, {lr = -1}) end, "learning rate must be >= 0")
  T.raises(function() ml.optim.sgd({w}, {lr = 0.1, momentum = 1.5}) end, "momentum must be in [0, 1)")
  T.raises(function() ml.optim.sgd({w}, {lr = 0.1, nesterov = true}) end, "Nesterov")
  T.raises(function() ml.optim.adam({w}, {lrr = 0.1}) end, "unknown option 'lrr'")
  T.raises(function() ml.optim.sgd({ml.randn(3)}, {}) end, "not a leaf tensor that requires grad")
  T.raises(function() ml.optim.sgd({}, {}) end, "no parameters")
  T.raises(function() ml.clip_grad_norm({w}, 0) end, "max_norm must be positive")
end)

T.done()
