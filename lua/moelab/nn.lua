-- ml.nn in Lua: printing of modules, model summaries, router calibration.
local ml = require "moelab"
local nn = ml.nn

local function fmt_count(n)
  if n >= 1e6 then return ("%.2fM"):format(n / 1e6) end
  if n >= 1e4 then return ("%.1fK"):format(n / 1e3) end
  return tostring(n)
end

-- A module prints as an indented tree, as PyTorch's repr does.
local function module_tree(m)
  local lines = {}
  for _, e in ipairs(m:modules()) do
    if e.depth <= 6 then
      local name = e.path == "" and "" or ("(" .. e.path:match("[^.]+$") .. "): ")
      lines[#lines + 1] = ("  "):rep(e.depth) .. name .. e.describe
    end
  end
  local total, active = m:num_params()
  lines[#lines + 1] = ("[%s parameters%s]"):format(fmt_count(total),
    active ~= total and (", " .. fmt_count(active) .. " active per input") or "")
  return table.concat(lines, "\n")
end

-- The layer names of a trace, in forward order (kept for scripts written
-- before traces had methods: trace:layers() is the same).
function nn.trace_layers(t) return t:layers() end

local summary_mt = {__tostring = function(r)
  return ("<summary: %d parameters, %d active per input, %.4g GFLOPs per image; fields rows, params, active, "
          .. "flops, text>"):format(r.params, r.active, r.flops / 1e9)
end}

-- model:summary([input_shape]) -> printed table of layers: parameters (total and
-- active per input) and FLOPs per image, measured by one forward of a single image.
function nn.summary(m, input_shape, opts)
  opts = opts or {}
  if not input_shape then
    local cfg = m:config()
    local ok, decoded = pcall(function() return cfg and cfg:match('"input":%[([%d,]+)%]') end)
    if ok and decoded then
      input_shape = {}
      for d in decoded:gmatch("%d+") do input_shape[#input_shape + 1] = tonumber(d) end
    end
  end
  if not input_shape then error("summary: give the input shape, e.g. model:summary({1, 28, 28})", 2) end
  local shape = {1}
  for _, d in ipairs(input_shape) do shape[#shape + 1] = d end
  local was_training = m:is_training()
  m:eval()
  local _, prof = ml.no_grad(function() return m:profile(ml.zeros(shape)) end)
  m:train(was_training)
  local depth = opts.depth or 2
  local rows = {}
  local out = {("%-36s %-34s %10s %10s %12s"):format("layer", "type", "params", "active", "MFLOPs/img")}
  out[#out + 1] = ("-"):rep(106)
  for _, e in ipairs(m:modules()) do
    if e.depth >= 1 and e.depth <= depth then
      local p = prof[e.path]
      local name = ("  "):rep(e.depth - 1) .. e.path
      local desc = #e.describe > 34 and (e.describe:sub(1, 31) .. "...") or e.describe
      out[#out + 1] = ("%-36s %-34s %10s %10s %12.3f"):format(name:sub(1, 36), desc,
        fmt_count(e.params), fmt_count(e.active), p and p.flops / 1e6 or 0)
      rows[#rows + 1] = {layer = e.path, type = e.type, params = e.params, active = e.active,
                         flops = p and p.flops or 0}
    end
  end
  local total, active = m:num_params()
  out[#out + 1] = ("-"):rep(106)
  out[#out + 1] = ("%-36s %-34s %10s %10s %12.3f"):format("total", "", fmt_count(total), fmt_count(active),
    prof.total_flops / 1e6)
  out[#out + 1] = ("%d parameters, %d active per input, %.4f GFLOPs per image"):format(total, active,
    prof.total_flops / 1e9)
  local text = table.concat(out, "\n")
  if not opts.quiet then print(text) end
  -- the table was printed above: at the prompt the result shows as one line
  return setmetatable({rows = rows, params = total, active = active, flops = prof.total_flops, text = text},
                      summary_mt)
end


-- ml.nn.calibrate_routers(model, x) -> model
-- Makes routing on random weights non-degenerate (WORKLOADS.md): router by
-- router in forward order, centre the router on the mean of its inputs f
-- (R <- R - (R mu) mu^T / (mu . mu)) and scale each row so that f R[e]^T has
-- unit standard deviation over the batch; BatchNorm statistics are refreshed
-- on the batch before each router and once at the end.
function nn.calibrate_routers(model, x)
  local was = model:is_training()
  local function refresh_bn()
    model:set_bn_momentum(1)
    model:train()
    ml.no_grad(function() model:forward(x) end)
    model:set_bn_momentum(0.1)
  end
  model:eval()
  -- router paths in forward order
  local order = {}
  ml.no_grad(function() model:forward(x, {hook = function(path, m)
    if m:type() == "Router" then order[#order + 1] = path end
  end}) end)
  for _, path in ipairs(order) do
    refresh_bn()
    model:eval()
    local f
    ml.no_grad(function() model:forward(x, {hook = function(p, m, input)
      if p == path then f = input:reshape(-1, input:size(input:dim())) end
    end}) end)
    local R = model:get(path):parameters()["weight"]
    ml.no_grad(function()
      local mu = f:mean(1)                                   -- [D]
      local Rc = R
      -- the projection applied twice: once more removes the float32 rounding
      -- left by the first, which matters when the features barely vary
      for _ = 1, 2 do
        Rc = Rc - ml.matmul(ml.matmul(Rc, mu):unsqueeze(2), mu:unsqueeze(1)) / (mu * mu):sum()
      end
      local proj = ml.matmul(f, Rc:t())                      -- [rows, E]
      local sd = proj:std(1)                                 -- [E], unbiased
      R:copy(Rc / (sd:unsqueeze(2) + 1e-12))
    end)
  end
  refresh_bn()
  model:train(was)
  return model
end
ml.doc(nn.calibrate_routers, [[
ml.nn.calibrate_routers(model, x) -> model
  Prepares the routers of a freshly initialised MoE model on the batch x so that routing is not
  degenerate (as WORKLOADS.md describes for the W2/W4 benchmarks): each router is centred on the
  mean of its inputs and its rows scaled to unit spread; BatchNorm statistics are refreshed.]])

-- Help texts of the constructors whose options live in the core's option
-- tables (ml.nn.options): the list of options, their defaults and help come
-- from there, so the help says what the code does.
local function option_lines(rows, skip)
  local lines = {}
  for _, o in ipairs(rows) do
    if not skip[o.key] then
      if o.default then
        lines[#lines + 1] = ("    %-18s = %-28s %s"):format(o.key, o.default, o.help)
      else
        lines[#lines + 1] = ("    %-18s %s%s"):format(o.key, o.help, o.family and (" (family = " .. o.family .. ")") or "")
      end
    end
  end
  return table.concat(lines, "\n")
end

local layer_help = {
  {"Router", "dim, experts", {dim = true, experts = true},
   "linear router without bias, logits = x S^T (parameters in the \"router\" group)"},
  {"TokenMoE", "dim, [{options}]", {dim = true},
   "sparse V-MoE layer over tokens: noisy top-k routing with capacity; only the selected experts are computed;\n" ..
   "  auxiliary losses and a routing trace in model:forward(x, {trace = true}). Exact ties go to the lowest\n" ..
   "  expert index in evaluation (random_ties applies in training only)."},
  {"SmoothMoE", "dim, [{options}]", {dim = true},
   "f(x) = sum_i p_i(x) f_i(x), p = softmax(S x): soft routing, every expert computed"},
  {"MoEConv2d", "in, out, kernel, [{options}]", {["in"] = true, out = true, kernel = true},
   "channel-MoE convolution (MoE-CNN): each sample's router picks one expert, a block of ratio * out channels;\n" ..
   "  only those channels are computed (mask = true: full convolution then mask, the reference form)."},
  {"MaskedConv2d", "in, out, kernel, [{options}]", {["in"] = true, out = true, kernel = true},
   "convolution keeping the ratio of output channels with the largest learned scores (Sparse-CNN baseline;\n" ..
   "  scores in the \"router\" group)"},
}
for _, h in ipairs(layer_help) do
  local name, args, positional, what = h[1], h[2], h[3], h[4]
  local text = ("ml.nn.%s(%s) -> %s"):format(name, args, what)
  local opts = option_lines(nn.options(name), positional)
  if opts ~= "" then text = text .. "\n  options (ml.nn.options(\"" .. name .. "\")):\n" .. opts end
  ml.doc(nn[name], text)
end

local zoo_help = {
  mlp = "MLP classifier: flatten, (Linear, ReLU) per hidden size, Linear",
  cnn = "small CNN: conv32-pool-conv64-pool-fc128-fc (MNIST)",
  resnet18 = "CIFAR ResNet-18",
  vgg16 = "VGG-16 with batch norm",
  wrn = "Wide ResNet (pre-activation)",
  vit = "vision transformer",
  vmoe = "V-MoE: the MLP of every moe_every-th block is a TokenMoE (its defaults are TokenMoE's)",
}
for name, what in pairs(zoo_help) do
  ml.doc(nn[name], ("ml.nn.%s{options} -> %s\n  Every option has a default; model:config() shows the values used (docs/MODELS.md).\n" ..
    "  options (ml.nn.options(\"%s\")):\n%s"):format(name, what, name, option_lines(nn.options(name), {})))
end

ml.doc(nn.options, [[
ml.nn.options(type | model) -> list of {key, type, default, help, choices} for a module type with an option table
  (Router, TokenMoE, SmoothMoE, MoEConv2d, MaskedConv2d), or of {key, help, family} for a model of the zoo.
  e.g. for _, o in ipairs(ml.nn.options("TokenMoE")) do print(o.key, o.default) end]])

-- model:summary(...) as a method of every module, and the tree view as its printer
ml.extend("Module", {summary = nn.summary, __tostring = module_tree})

ml.doc(nn.summary, [[
model:summary([input shape], [{depth = 2, quiet = false}]) -> {rows, params, active, flops, text}
  Prints a table of layers with parameters (total and active per input) and FLOPs per image,
  measured by one forward of a single zero image (quiet = true: only returns it; the result prints
  as one line at the prompt, its .text is the table). e.g. model:summary({3, 32, 32})]])
ml.doc(nn.trace_layers, "ml.nn.trace_layers(trace) -> the MoE layer names of a routing trace, in forward order")

return true
