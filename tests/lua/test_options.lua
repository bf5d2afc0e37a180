-- One option table per configurable module (core/nn/options.h): the Lua
-- constructors, from_config, config(), the zoo and the help texts all take
-- their keys and defaults from it; docs/MODELS.md's option lists are
-- generated from it (checked here); bad values are clear errors.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function decode(json) return ml.json.decode(json) end

-- The markdown block of docs/MODELS.md for a module type (or "zoo").
local function options_block(name)
  local out = {("<!-- options %s: generated from ml.nn.options; tests/lua/test_options.lua checks it -->"):format(name)}
  local function cell(s) return (s:gsub("|", "\\|")) end
  if name ~= "zoo" then
    out[#out + 1] = "| option | default | meaning |"
    out[#out + 1] = "| --- | --- | --- |"
    for _, o in ipairs(ml.nn.options(name)) do
      out[#out + 1] = ("| `%s` | %s | %s |"):format(o.key, cell(o.default), cell(o.help))
    end
  else
    local models = {"mlp", "cnn", "resnet18", "vgg16", "wrn", "vit", "vmoe"}
    local order, rows = {}, {}
    for _, m in ipairs(models) do
      for _, o in ipairs(ml.nn.options(m)) do
        if not rows[o.key] then order[#order + 1] = o.key rows[o.key] = {help = o.help, models = {}} end
        local r = rows[o.key]
        r.models[#r.models + 1] = m .. (o.family and (" (" .. o.family .. ")") or "")
      end
    end
    out[#out + 1] = "| option | models (family it needs) | meaning |"
    out[#out + 1] = "| --- | --- | --- |"
    for _, k in ipairs(order) do
      out[#out + 1] = ("| `%s` | %s | %s |"):format(k, cell(table.concat(rows[k].models, ", ")), cell(rows[k].help))
    end
  end
  out[#out + 1] = "<!-- end options -->"
  return table.concat(out, "\n")
end

T.test("docs/MODELS.md lists the options as the code has them", function()
  local f = assert(io.open("docs/MODELS.md"))
  local doc = f:read("a")
  f:close()
  for _, name in ipairs{"TokenMoE", "SmoothMoE", "Router", "MoEConv2d", "MaskedConv2d", "zoo"} do
    local want = options_block(name)
    if not T.check(doc:find(want, 1, true), "docs/MODELS.md has the current options of " .. name) then
      io.stderr:write("expected block:\n" .. want .. "\n")
    end
  end
end)

T.test("one table: Lua constructors, configs and the zoo agree on the defaults", function()
  local rows = {}
  for _, o in ipairs(ml.nn.options("TokenMoE")) do rows[o.key] = o end
  T.check(rows.k.default == "2" and rows.random_ties.default == "true" and rows.experts.default == "8", "TokenMoE defaults")
  local c = decode(ml.nn.TokenMoE(8):config())
  for key, o in pairs(rows) do
    if o.default == "required" then -- given: dim
    elseif o.type == "integer" or o.type == "number" then
      T.check(c[key] == tonumber(o.default), "TokenMoE config " .. key .. " = the table's default")
    elseif o.type == "boolean" then
      T.check(c[key] == (o.default == "true"), "TokenMoE config " .. key .. " = the table's default")
    end
  end
  T.check(c.dim == 8 and c.expert.type == "MLP" and c.expert.hidden == 32, "dim and the default expert")
  -- a vmoe's MoE knobs take TokenMoE's defaults
  local v = decode(ml.nn.vmoe{}:config())
  for _, key in ipairs{"experts", "k", "capacity_factor", "noise_std", "importance_weight", "load_weight"} do
    T.check(v[key] == c[key], "vmoe " .. key .. " = TokenMoE's default")
  end
  local moe_layer = decode(ml.nn.vmoe{}:get("blocks.1.mlp"):config())
  T.check(moe_layer.random_ties == true and moe_layer.k == 2, "the vmoe's layers")
  -- a moe_cnn's knobs take MoEConv2d's
  local conv = decode(ml.nn.MoEConv2d(4, 8, 3):config())
  local m = decode(ml.nn.moe_cnn{backbone = "cnn"}:config())
  for _, key in ipairs{"experts", "ratio", "router", "mask", "importance_weight", "switch_weight"} do
    T.check(m[key] == conv[key], "moe_cnn " .. key .. " = MoEConv2d's default")
  end
  -- padding: (kernel - 1) / 2 from Lua and from a config alike
  T.check(decode(ml.nn.MoEConv2d(2, 4, 5):config()).padding == 2, "Lua: padding (5 - 1) / 2")
  local rebuilt = ml.nn.from_config('{"type": "MoEConv2d", "in": 2, "out": 4, "kernel": 5}')
  T.check(decode(rebuilt:config()).padding == 2, "config: the same default")
  T.check(decode(ml.nn.MaskedConv2d(2, 4, 1):config()).padding == 0, "MaskedConv2d too")
  -- config round trips of every layer with an option table
  local layers = {ml.nn.TokenMoE(4, {experts = 3, k = 1, renormalize = true, z_weight = 0.1}),
                  ml.nn.SmoothMoE(4, {experts = 2, expert = ml.nn.Linear(4, 4)}), ml.nn.Router(4, 3),
                  ml.nn.MoEConv2d(2, 4, 3, {experts = 4, ratio = 0.25, router = "global", mask = true}),
                  ml.nn.MaskedConv2d(2, 4, 3, {ratio = 0.75, stride = 2})}
  for _, l in ipairs(layers) do
    local cfg = l:config()
    T.check(ml.nn.from_config(cfg):config() == cfg, l:type() .. ": config -> from_config -> the same config")
  end
  T.check(decode(layers[2]:config()).expert.type == "Linear", "an expert given as a module is stored as its config")
  T.check(decode(layers[2]:config()).k == nil, "SmoothMoE stores only its own options")
end)

T.test("bad options are clear errors naming the option", function()
  T.raises(function() ml.nn.TokenMoE(4, {kk = 1}) end,
    "TokenMoE: unknown option 'kk' (known: experts, k, capacity_factor, round_capacity, batch_priority, random_ties, "
    .. "renormalize, noise_std, importance_weight, load_weight, switch_weight, z_weight, expert)")
  T.raises(function() ml.nn.TokenMoE(4, {dim = 4}) end, "TokenMoE: unknown option 'dim'")
  T.raises(function() ml.nn.TokenMoE(4, {k = 1.5}) end, "TokenMoE: option 'k' must be an integer")
  T.raises(function() ml.nn.TokenMoE(4, {renormalize = 1}) end, "TokenMoE: option 'renormalize' must be true or false")
  T.raises(function() ml.nn.TokenMoE(4, {noise_std = -1}) end, "TokenMoE: noise_std = -1 must be >= 0")
  T.raises(function() ml.nn.TokenMoE(4, {experts = 5000}) end, "TokenMoE: experts = 5000 must be between 1 and 4096")
  T.raises(function() ml.nn.TokenMoE(4, {expert = print}) end, "TokenMoE")
  T.raises(function() ml.nn.SmoothMoE(4, {k = 2}) end, "SmoothMoE: unknown option 'k' (known: experts, expert)")
  T.raises(function() ml.nn.MoEConv2d(2, 4, 3, {router = "random"}) end,
    "MoEConv2d: router must be \"layer\" or \"global\", got \"random\"")
  T.raises(function() ml.nn.MoEConv2d(2, 4, 3, {router = "global", switch_weight = 1}) end,
    "balancing losses apply to per-layer routers")
  T.raises(function() ml.nn.MoEConv2d(2, 4, 3, {ratio = 2}) end, "MoEConv2d: ratio = 2 must be between 0 and 1")
  T.raises(function() ml.nn.from_config('{"type": "TokenMoE", "experts": 4}') end, "TokenMoE: option 'dim' is required")
  T.raises(function() ml.nn.from_config('{"type": "Gadget"}') end, "model config: unknown module type 'Gadget'")
  T.raises(function() ml.nn.vmoe{k = 0} end, "vmoe: k = 0 must be between 1 and 4096")
  T.raises(function() ml.nn.moe_cnn{experts = 100} end, "moe_cnn: experts = 100 must be between 1 and 64")
  T.raises(function() ml.nn.moe_cnn{family = "dense"} end, "moe_cnn: unknown option 'family'")
  T.raises(function() ml.nn.moe_cnn{backbone = 3} end, "moe_cnn: backbone must be a name")
  T.raises(function() ml.nn.resnet18{hidden = {3}} end, "resnet18: option 'hidden' does not apply to this model")
  T.raises(function() ml.nn.options("Linear") end, "options: 'Linear' is neither a module type with options")
  -- every option of every table has a help text
  for _, name in ipairs{"TokenMoE", "SmoothMoE", "Router", "MoEConv2d", "MaskedConv2d", "vmoe", "resnet18"} do
    for _, o in ipairs(ml.nn.options(name)) do T.check(#o.help > 5, name .. "." .. o.key .. " has a help text") end
  end
end)

T.test("help texts come from the tables", function()
  local out = {}
  local real_print = print
  print = function(s) out[#out + 1] = s end
  ml.help(ml.nn.TokenMoE)
  ml.help(ml.nn.moe_cnn)
  print = real_print
  local text = table.concat(out, "\n")
  for _, o in ipairs(ml.nn.options("TokenMoE")) do
    if o.key ~= "dim" then T.check(text:find(o.key, 1, true) and text:find(o.help, 1, true), "help lists " .. o.key) end
  end
end)

T.done()
