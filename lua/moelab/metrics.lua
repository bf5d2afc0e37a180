-- ml.metrics: robustness metrics and routing analysis (docs/ANALYSIS.md).
-- The computations over traces are C (core/analysis, the ml.metrics._*
-- primitives of bindings/lua_metrics.c); this file runs the forwards and the
-- attacks, loops over data, and returns every result as rows (ml.results)
-- that carry the model's name, the seed, a hash of the model's config and,
-- where an attack made them, the attack and its settings.
local ml = require "moelab"
local R = require "moelab.results"
local M = ml.metrics

------------------------------------------------------------------ helpers
local function kind(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end
local function is_tensor(v) return kind(v) == "Tensor" end
local function is_module(v) return kind(v) == "Module" end
local function is_trace(v) return kind(v) == "Trace" end
local function is_dataset(v) return kind(v) == "moelab.Dataset" end

local function check_options(fn, opts, known, rest_ok)
  if opts == nil then return {}, {} end
  if type(opts) ~= "table" then error(("%s: options must be a table, got %s"):format(fn, type(opts)), 3) end
  local rest = {}
  for k, v in pairs(opts) do
    if not known[k] then
      if not rest_ok then
        local names = {}
        for n in pairs(known) do names[#names + 1] = n end
        table.sort(names)
        error(("%s: unknown option %q (known: %s)"):format(fn, tostring(k), table.concat(names, ", ")), 3)
      end
      rest[k] = v
    end
  end
  return opts, rest
end

local function set_of(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

-- 64-bit FNV-1a of a string, as 16 hex digits.
local function fnv1a(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do h = (h ~ s:byte(i)) * 0x100000001b3 end
  return ("%016x"):format(h)
end

function M.config_hash(model)
  local cfg = model:config()
  return cfg and fnv1a(cfg) or "none"
end

local function model_name(model)
  local cfg = model:config()
  return cfg and cfg:match('"model":"([^"]+)"') or model:type()
end

-- The fields every row of a model carries.
local function provenance(model, name, seed)
  return {model = name or model_name(model), seed = seed or 0, config_hash = M.config_hash(model)}
end

local function stamp(row, meta)
  for k, v in pairs(meta) do if row[k] == nil then row[k] = v end end
  return row
end

-- "alpha=0.01 restarts=2 steps=10": an attack's settings as one field.
local function settings_text(opts)
  local keys = {}
  for k in pairs(opts) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = opts[k]
    if type(v) == "number" and math.type(v) == "float" then v = ("%.6g"):format(v)
    elseif type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then v = "<" .. type(v) .. ">" end
    parts[#parts + 1] = ("%s=%s"):format(k, tostring(v))
  end
  return table.concat(parts, " ")
end

-- Runs fn with the model in eval mode; the mode is restored afterwards.
local function evaluating(model, fn)
  local was = model:is_training()
  model:eval()
  local res = table.pack(pcall(fn))
  model:train(was)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function forward(model, x, opts)
  return ml.no_grad(function()
    local y, t = model:forward(x, opts or {trace = true})
    return y, t
  end)
end

-- Ctrl-C stops fn; returns true when it did (other errors pass through).
local function interruptible(fn) return (ml.interruptible(fn)) end

-- Statistics of a 1-d tensor of values.
local function summary(t)
  local v = t:totable()
  table.sort(v, function(a, b) return a < b or (a == a and b ~= b) end)
  local n, sum = #v, 0
  for _, x in ipairs(v) do sum = sum + x end
  local function q(p) return n > 0 and v[math.max(1, math.ceil(p * n))] or 0 / 0 end
  return {min = q(0), p10 = q(0.1), p50 = q(0.5), p90 = q(0.9), max = n > 0 and v[n] or 0 / 0,
          mean = n > 0 and sum / n or 0 / 0}
end

-- (x, y) batches of a dataset or of tensors {x = , y = } / {x, y}: a list.
local function batches_of(fn, data, opts)
  local bs = opts.batch or 128
  if type(bs) ~= "number" or bs < 1 or bs % 1 ~= 0 then error(fn .. ": batch must be a positive integer", 3) end
  local list = {}
  if is_dataset(data) then
    local n = math.min(opts.n or data:size(), data:size())
    for i = 1, n, bs do
      local x, y = data:batch(i, math.min(bs, n - i + 1))
      list[#list + 1] = {x = x, y = y}
    end
    return list
  end
  if type(data) ~= "table" then
    error(("%s: data must be a dataset or {x = tensor, y = tensor}, got %s"):format(fn, type(data)), 3)
  end
  local x, y = data.x or data[1], data.y or data[2]
  if not is_tensor(x) or not is_tensor(y) then error(fn .. ": data must be a dataset or {x = tensor, y = tensor}", 3) end
  if x:size(1) ~= y:size(1) then
    error(("%s: %d inputs but %d labels"):format(fn, x:size(1), y:size(1)), 3)
  end
  local n = math.min(opts.n or x:size(1), x:size(1))
  for i = 1, n, bs do
    local m = math.min(bs, n - i + 1)
    list[#list + 1] = {x = x:narrow(1, i, m), y = y:narrow(1, i, m)}
  end
  return list
end

local function progress(label, total, quiet)
  if quiet or total < 2 or not ml.progress then return nil end
  return ml.progress{total = total, label = label, transient = true}
end

local function attack_fn(fn)
  if not (ml.attack and ml.attack.run) then
    error(fn .. ": ml.attack is not available in this build (the attacks are needed for robust accuracy)", 3)
  end
  return ml.attack.run
end

-- Runs the attack on one batch; x itself at eps = 0.
local function attack_batch(fn, model, name, x, y, aopts, eps)
  if eps == 0 then return x, {} end
  local o = {}
  for k, v in pairs(aopts) do o[k] = v end
  o.eps, o.quiet = eps, true
  local xa, rep = attack_fn(fn)(name, model, x, y, o)
  return xa, rep
end

-- The error for a layer name a model does not have, listing its layers.
local function no_layer(fn, what, layer, names, level)
  local quoted = {}
  for i, n in ipairs(names) do quoted[i] = "'" .. n .. "'" end
  error(("%s: no %s '%s' (the layers: %s)"):format(fn, what, layer, #quoted > 0 and table.concat(quoted, ", ") or "none"),
    level + 1)
end

local function multilabel(y) return is_tensor(y) and y:dim() == 2 and y:dtype() == "float32" end

------------------------------------------------------------------ accuracy
local acc_known = set_of{"batch", "n", "attack", "name", "seed", "quiet", "eps", "norm"}

function M.accuracy(model, data, y_or_opts, opts)
  local fn = "accuracy"
  if not is_module(model) then error("accuracy: the first argument must be a model", 2) end
  if is_tensor(data) then data = {x = data, y = y_or_opts} else opts = y_or_opts end
  local rest
  opts, rest = check_options(fn, opts, acc_known, true)
  if next(rest) and not opts.attack then
    local k = next(rest)
    error(("accuracy: unknown option %q (attack options need attack = \"pgd\" ...)"):format(k), 2)
  end
  if opts.attack and not opts.eps then error("accuracy: an attack needs eps", 2) end
  local list = batches_of(fn, data, opts)
  local meta = provenance(model, opts.name, opts.seed)
  local aopts = {}
  for k, v in pairs(rest) do aopts[k] = v end
  aopts.norm, aopts.seed = opts.norm, opts.seed
  local n, correct, robust, hits, rhits = 0, 0, 0, 0, 0
  local ml_labels = multilabel(list[1] and list[1].y)
  local bar = progress("accuracy", #list, opts.quiet)
  local stopped = evaluating(model, function() return interruptible(function()
    for b, batch in ipairs(list) do
      local logits = forward(model, batch.x, {})
      local xa = opts.attack and attack_batch(fn, model, opts.attack, batch.x, batch.y, aopts, opts.eps)
      local la = xa and forward(model, xa, {})
      if ml_labels then
        hits = hits + M._precision_at_1(logits, batch.y)
        if la then rhits = rhits + M._precision_at_1(la, batch.y) end
      else
        correct = correct + M._accuracy(logits, batch.y)
        if la then robust = robust + M._accuracy(la, batch.y) end
      end
      n = n + batch.x:size(1)
      if bar then bar:update(b) end
    end
  end) end)
  if bar then bar:finish() end
  local row = {n = n}
  if ml_labels then
    row.precision_at_1 = n > 0 and hits / n or 0 / 0
    row.fdr = n > 0 and 1 - hits / n or 0 / 0
    if opts.attack then
      row.robust_precision_at_1 = n > 0 and rhits / n or 0 / 0
      row.robust_fdr = n > 0 and 1 - rhits / n or 0 / 0
    end
  else
    row.correct, row.accuracy, row.error_rate = correct, n > 0 and correct / n or 0 / 0, n > 0 and 1 - correct / n or 0 / 0
    if opts.attack then
      row.robust_accuracy, row.robust_error_rate = n > 0 and robust / n or 0 / 0, n > 0 and 1 - robust / n or 0 / 0
    end
  end
  if opts.attack then
    row.attack, row.eps, row.norm, row.settings = opts.attack, opts.eps, opts.norm or "linf", settings_text(rest)
  end
  return R.rows({stamp(row, meta)}, {interrupted = stopped or nil})
end

------------------------------------------------------------------ routing changes
local function rc_rows(rc, opts, meta)
  local rows, iou, tv = {}, {}, {}
  local wanted = opts.layer
  local found = false
  for _, l in ipairs(rc.layers) do
    if not wanted or wanted == l.layer then
      found = true
      local s = summary(l.iou)
      local row = {layer = l.layer, kind = l.kind, items = l.items, rate = l.rate, mean_iou = l.mean_iou,
                   changed = l.changed, samples_changed = l.samples_changed, mean_tv = l.mean_tv,
                   iou_min = s.min, iou_p10 = s.p10, iou_p50 = s.p50}
      rows[#rows + 1] = meta and stamp(row, meta) or row
      iou[l.layer], tv[l.layer] = l.iou, l.tv
    end
  end
  if wanted and not found then
    local names = {}
    for _, l in ipairs(rc.layers) do names[#names + 1] = l.layer end
    no_layer("routing_change", "MoE layer", wanted, names, 3)
  end
  return R.rows(rows, {iou = iou, tv = tv, sample_changed = rc.sample_changed})
end

local function smallest_items(t)
  local b = math.huge
  for i = 1, #t do b = math.min(b, t[i].T) end
  return b == math.huge and 1 or b
end

function M.routing_change(a, b, c, d)
  local fn = "routing_change"
  if is_module(a) then
    -- routing_change(model, x, x_other, [opts])
    local model, x, xo, opts = a, b, c, check_options(fn, d, set_of{"layer", "name", "seed"})
    if not is_tensor(x) or not is_tensor(xo) then error("routing_change: expects (model, x, x_other) or two traces", 2) end
    local tc, to = evaluating(model, function()
      local _, t1 = forward(model, x)
      local _, t2 = forward(model, xo)
      return t1, t2
    end)
    return rc_rows(M._routing_change(tc, to, x:size(1)), opts, provenance(model, opts.name, opts.seed))
  end
  if not is_trace(a) or not is_trace(b) then
    error("routing_change: expects two routing traces (or a model and two inputs)", 2)
  end
  local opts = check_options(fn, c, set_of{"layer", "batch"})
  local batch = opts.batch or smallest_items(a)
  return rc_rows(M._routing_change(a, b, batch), opts)
end

------------------------------------------------------------------ dissection
local function dissection_row(d)
  return {n = d.n, kept_right = d.counts[1], changed_right = d.counts[2], kept_fooled = d.counts[3],
          changed_fooled = d.counts[4], router_robustness = d.router_robustness, moe_robustness = d.moe_robustness}
end

function M.dissection(a, b, c, d, e)
  if is_trace(a) then
    -- dissection(trace_clean, trace_adv, y, pred_adv)
    if not is_trace(b) then error("dissection: expects two traces, labels and adversarial predictions", 2) end
    local r = M._dissect(a, b, c, d)
    return R.rows({dissection_row(r)}, {cases = r.cases})
  end
  if not is_module(a) then error("dissection: expects (model, x, y, x_adv) or (trace_clean, trace_adv, y, pred_adv)", 2) end
  local model, x, y, xa = a, b, c, d
  local opts = check_options("dissection", e, set_of{"name", "seed"})
  if not (is_tensor(x) and is_tensor(xa)) then error("dissection: x and x_adv must be tensors", 2) end
  if not is_tensor(y) or y:size(1) ~= x:size(1) then
    error(("dissection: %s labels for %d inputs"):format(is_tensor(y) and y:size(1) or type(y), x:size(1)), 2)
  end
  local r = evaluating(model, function()
    local _, tc = forward(model, x)
    local la, ta = forward(model, xa)
    return M._dissect(tc, ta, y, la:argmax(2))
  end)
  return R.rows({stamp(dissection_row(r), provenance(model, opts.name, opts.seed))}, {cases = r.cases})
end

------------------------------------------------------------------ expert load and the expert x class matrix
local function load_rows(fn, trace, set, opts, rows, extra)
  local y, classes = opts.y, opts.classes
  local found = false
  for i = 1, #trace do
    local l = trace[i]
    if not opts.layer or opts.layer == l.layer then
      found = true
      local ld = M._load(trace, i, opts.threshold or 0.95)
      local row = {set = set, layer = l.layer, kind = l.kind, items = ld.items, experts = ld.E, top_expert = ld.top,
                   top_share = ld.top_share, collapsed = ld.collapsed}
      for e = 1, ld.E do row["share:" .. e] = ld.share[e] end
      rows[#rows + 1] = row
      extra.load[set][l.layer] = ld.load
      if y then extra.matrix[set][l.layer] = M._class_matrix(trace, i, y, classes) end
      if ld.collapsed then
        local w = ("warning: layer '%s' sends %.1f%% of its inputs to expert %d (%s; routing collapse)"):format(
          l.layer, 100 * ld.top_share, ld.top, set)
        extra.warnings[#extra.warnings + 1] = w
        if not opts.quiet then print(w) end
      end
    end
  end
  if opts.layer and not found then no_layer(fn, "MoE layer", opts.layer, trace:layers(), 3) end
end

function M.expert_load(model, x, opts)
  local fn = "expert_load"
  opts = check_options(fn, opts, set_of{"y", "classes", "threshold", "x_adv", "layer", "quiet", "name", "seed"})
  if not is_module(model) or not is_tensor(x) then error("expert_load: expects (model, x, [options])", 2) end
  if opts.y and not opts.classes then
    local logits = evaluating(model, function() return forward(model, x:narrow(1, 1, 1), {}) end)
    opts.classes = logits:size(2)
  end
  local extra = {load = {clean = {}}, matrix = {clean = {}}, warnings = {}}
  local rows = {}
  evaluating(model, function()
    local _, t = forward(model, x)
    load_rows(fn, t, "clean", opts, rows, extra)
    if opts.x_adv then
      extra.load.adversarial, extra.matrix.adversarial = {}, {}
      local _, ta = forward(model, opts.x_adv)
      load_rows(fn, ta, "adversarial", opts, rows, extra)
    end
  end)
  local meta = provenance(model, opts.name, opts.seed)
  for _, row in ipairs(rows) do stamp(row, meta) end
  return R.rows(rows, extra)
end

------------------------------------------------------------------ pathway IoU
local function static_mask(fn, mask, layer)
  if is_module(mask) then
    local ok, m = pcall(mask.get, mask, layer)
    if not ok then error(("%s: the mask model has no layer '%s'"):format(fn, layer), 4) end
    return M._static_mask(m)
  end
  local t = mask[layer]
  if t == nil then error(("%s: no mask for layer '%s'"):format(fn, layer), 4) end
  return is_tensor(t) and t:float() or ml.tensor(t)
end

function M.pathway(model, x, opts)
  local fn = "pathway"
  opts = check_options(fn, opts, set_of{"mask", "x_adv", "layer", "name", "seed"})
  if not is_module(model) or not is_tensor(x) then error("pathway: expects (model, x, {mask = ...})", 2) end
  if type(opts.mask) ~= "table" and not is_module(opts.mask) then
    error("pathway: mask must be a Sparse-CNN model (its masked layers at the same paths) or {[layer] = mask}", 2)
  end
  local rows, iou = {}, {clean = {}}
  evaluating(model, function()
    local sets = {{"clean", x}}
    if opts.x_adv then sets[2] = {"adversarial", opts.x_adv} iou.adversarial = {} end
    for _, s in ipairs(sets) do
      local _, t = forward(model, s[2])
      local found = false
      for i = 1, #t do
        local l = t[i]
        if (l.kind == "channel" or l.kind == "global") and (not opts.layer or opts.layer == l.layer) then
          found = true
          local channels = M._expert_channels(model:get(l.layer))
          local v = M._pathway(t, i, channels, static_mask(fn, opts.mask, l.layer))
          local st = summary(v)
          rows[#rows + 1] = {set = s[1], layer = l.layer, kind = l.kind, items = l.T, mean = st.mean, min = st.min,
                             p10 = st.p10, p50 = st.p50, p90 = st.p90, max = st.max}
          iou[s[1]][l.layer] = v
        end
      end
      if not found then
        error(("pathway: no channel-MoE layer%s in this model"):format(opts.layer and (" '" .. opts.layer .. "'") or ""), 0)
      end
    end
  end)
  local meta = provenance(model, opts.name, opts.seed)
  for _, row in ipairs(rows) do stamp(row, meta) end
  return R.rows(rows, {iou = iou})
end

------------------------------------------------------------------ FLOPs and parameters
function M.flops(model, x, opts)
  opts = check_options("flops", opts, set_of{"name"})
  if not is_module(model) or not is_tensor(x) then error("flops: expects (model, x)", 2) end
  local f = evaluating(model, function() return M._flops(model, x) end)
  local row = {batch = f.batch, flops = f.flops, flops_per_input = f.per_input, gflops_per_input = f.per_input / 1e9,
               params = f.params, active_params = f.active, active_fraction = f.params > 0 and f.active / f.params or 0}
  return R.rows({stamp(row, provenance(model, opts.name))})
end

------------------------------------------------------------------ certified routing radius
function M.routing_radius(model, x, opts)
  local fn = "routing_radius"
  opts = check_options(fn, opts, set_of{"norm", "layer", "name", "seed"})
  if not is_module(model) or not is_tensor(x) then error("routing_radius: expects (model, x, [{norm = \"linf\"}])", 2) end
  local norm = opts.norm or "linf"
  local r = evaluating(model, function() return M._radius(model, x, norm) end)
  local rows, extra = {}, {radius = {}, router_radius = {}, sample_radius = {}, notes = {}, trace = r.trace}
  local found = false
  for _, l in ipairs(r.layers) do
    if not opts.layer or opts.layer == l.layer then
      found = true
      local s, rs = summary(l.radius), summary(l.router_radius)
      rows[#rows + 1] = {layer = l.layer, kind = l.kind, norm = norm, items = l.items, exact = l.exact, min = s.min,
                         p10 = s.p10, p50 = s.p50, mean = s.mean, max = s.max, router_p50 = rs.p50}
      extra.radius[l.layer], extra.router_radius[l.layer], extra.sample_radius[l.layer] = l.radius, l.router_radius,
        l.sample_radius
      if l.note ~= "" then extra.notes[l.layer] = l.note end
    end
  end
  if opts.layer and not found then no_layer(fn, "MoE layer", opts.layer, r.trace:layers(), 2) end
  local meta = provenance(model, opts.name, opts.seed)
  for _, row in ipairs(rows) do stamp(row, meta) end
  return R.rows(rows, extra)
end

------------------------------------------------------------------ robustness curves
local rob_known = set_of{"models", "attack", "eps", "norm", "n", "batch", "seed", "radius", "noise", "quiet"}

local function check_eps(fn, eps, what)
  if type(eps) ~= "table" or #eps == 0 then
    error(("%s: %s must be a non-empty list of numbers (e.g. %s = {0, 2/255, 8/255})"):format(fn, what, what), 3)
  end
  for i, e in ipairs(eps) do
    if type(e) ~= "number" or not (e >= 0) then
      error(("%s: %s[%d] = %s is not a number >= 0"):format(fn, what, i, tostring(e)), 3)
    end
  end
end

-- Per-layer sums of routing changes over batches.
local function rc_accumulate(acc, rc)
  for _, l in ipairs(rc.layers) do
    local a = acc[l.layer]
    if not a then
      a = {items = 0, iou = 0, tv = 0, tv_items = 0}
      acc[l.layer] = a
      acc[#acc + 1] = l.layer
    end
    a.items = a.items + l.items
    a.iou = a.iou + l.mean_iou * l.items
    if l.mean_tv == l.mean_tv then
      a.tv = a.tv + l.mean_tv * l.items
      a.tv_items = a.tv_items + l.items
    end
  end
end

local function rc_fields(row, acc, prefix, tv_prefix)
  local sum, n = 0, 0
  for _, layer in ipairs(acc) do
    local a = acc[layer]
    local rate = a.items > 0 and 1 - a.iou / a.items or 0 / 0
    row[prefix .. ":" .. layer] = rate
    if tv_prefix then row[tv_prefix .. ":" .. layer] = a.tv_items > 0 and a.tv / a.tv_items or 0 / 0 end
    sum, n = sum + rate, n + 1
  end
  if n > 0 then row[prefix .. "_mean"] = sum / n end
end

local function robustness_of(fn, name, model, list, opts, aopts, rows)
  local meta = provenance(model, name, opts.seed)
  local norm = opts.norm or "linf"
  local settings = settings_text(aopts)
  aopts.norm, aopts.seed = norm, opts.seed or 0
  local clean, radius = {}, nil
  local n, correct = 0, 0
  for b, batch in ipairs(list) do
    local logits, t = forward(model, batch.x)
    local c, pred = M._accuracy(logits, batch.y)
    clean[b] = {pred = pred, trace = t}
    correct, n = correct + c, n + batch.x:size(1)
  end
  local moe = clean[1] and #clean[1].trace > 0
  if moe and opts.radius ~= false then
    radius = {}
    for _, batch in ipairs(list) do
      local r = M._radius(model, batch.x, norm)
      for _, l in ipairs(r.layers) do
        local v = radius[l.layer]
        if not v then
          v = {}
          radius[l.layer] = v
          radius[#radius + 1] = l.layer
        end
        v[#v + 1] = l.radius
      end
    end
    for _, layer in ipairs(radius) do radius[layer] = ml.cat(radius[layer]) end
  end
  for _, eps in ipairs(opts.eps) do
    local t0 = ml.clock()
    local robust, changed_pred, acc, noise_acc = 0, 0, {}, {}
    for b, batch in ipairs(list) do
      local xa, rep = attack_batch(fn, model, opts.attack or "pgd", batch.x, batch.y, aopts, eps)
      if rep.interrupted then ml.interrupt(); error("interrupted", 0) end -- on to the enclosing ml.interruptible
      local la, ta = forward(model, xa)
      local r, pa = M._accuracy(la, batch.y)
      robust = robust + r
      changed_pred = changed_pred + pa:ne(clean[b].pred):sum():item()
      if moe then
        rc_accumulate(acc, M._routing_change(clean[b].trace, ta, batch.x:size(1)))
        if opts.noise then
          local xn = (batch.x + ml.randn_like(batch.x) * eps):clamp(0, 1)
          local _, tn = forward(model, xn)
          rc_accumulate(noise_acc, M._routing_change(clean[b].trace, tn, batch.x:size(1)))
        end
      end
    end
    local row = {eps = eps, attack = eps > 0 and (opts.attack or "pgd") or "none", norm = norm, n = n,
                 accuracy = correct / n, robust_accuracy = robust / n, prediction_change = changed_pred / n,
                 seconds = ml.clock() - t0, settings = settings}
    if moe then
      rc_fields(row, acc, "rc", "tv")
      if opts.noise then rc_fields(row, noise_acc, "rc_noise") end
      for _, layer in ipairs(radius or {}) do
        row["cert:" .. layer] = radius[layer]:ge(eps):float():mean():item()
      end
    end
    rows[#rows + 1] = stamp(row, meta)
  end
end

function M.robustness(model, data, opts)
  local fn = "robustness"
  local rest
  opts, rest = check_options(fn, opts, rob_known, true)
  check_eps(fn, opts.eps, "eps")
  local models = opts.models
  if models == nil then
    if not is_module(model) then error("robustness: give a model, or models = {name = model, ...}", 2) end
    models = {[model_name(model)] = model}
  elseif type(models) ~= "table" then
    error("robustness: models must be a table {name = model, ...}", 2)
  end
  local names = {}
  for k, m in pairs(models) do
    if type(k) ~= "string" or not is_module(m) then error("robustness: models must map names to models", 2) end
    names[#names + 1] = k
  end
  table.sort(names)
  if #names == 0 then error("robustness: models is empty", 2) end
  for _, e in ipairs(opts.eps) do if e > 0 then attack_fn(fn) end end
  ml.seed(opts.seed or 0)
  local list = batches_of(fn, data, opts)
  local rows = {}
  local stopped = interruptible(function()
    for _, name in ipairs(names) do
      local m = models[name]
      local aopts = {}
      for k, v in pairs(rest) do aopts[k] = v end
      evaluating(m, function() robustness_of(fn, name, m, list, opts, aopts, rows) end)
    end
  end)
  if stopped and not opts.quiet then print(("robustness: interrupted; %d rows done"):format(#rows)) end
  return R.rows(rows, {interrupted = stopped or nil})
end

------------------------------------------------------------------ routing under noise
function M.routing_noise(model, data, opts)
  local fn = "routing_noise"
  opts = check_options(fn, opts, set_of{"sigma", "n", "batch", "seed", "clamp", "name", "quiet"})
  if not is_module(model) then error("routing_noise: the first argument must be a model", 2) end
  check_eps(fn, opts.sigma, "sigma")
  ml.seed(opts.seed or 0)
  local list = batches_of(fn, data, opts)
  local meta = provenance(model, opts.name, opts.seed)
  local rows = {}
  local stopped = evaluating(model, function() return interruptible(function()
    local clean = {}
    for b, batch in ipairs(list) do
      local logits, t = forward(model, batch.x)
      local _, pred = M._accuracy(logits, batch.y)
      clean[b] = {trace = t, pred = pred}
    end
    for _, sigma in ipairs(opts.sigma) do
      local acc, n, correct, changed = {}, 0, 0, 0
      for b, batch in ipairs(list) do
        local xn = batch.x + ml.randn_like(batch.x) * sigma
        if opts.clamp ~= false then xn = xn:clamp(0, 1) end
        local ln, tn = forward(model, xn)
        local c, pred = M._accuracy(ln, batch.y)
        correct, n = correct + c, n + batch.x:size(1)
        changed = changed + pred:ne(clean[b].pred):sum():item()
        rc_accumulate(acc, M._routing_change(clean[b].trace, tn, batch.x:size(1)))
      end
      local row = {sigma = sigma, n = n, accuracy = correct / n, prediction_change = changed / n}
      rc_fields(row, acc, "rc", "tv")
      rows[#rows + 1] = stamp(row, meta)
    end
  end) end)
  return R.rows(rows, {interrupted = stopped or nil})
end

------------------------------------------------------------------ forced and silenced experts
function M.forced_experts(model, data, opts)
  local fn = "forced_experts"
  local rest
  opts, rest = check_options(fn, opts, set_of{"layer", "experts", "mode", "attack", "eps", "norm", "n", "batch",
                                                "seed", "name", "quiet"}, true)
  if next(rest) and not opts.eps then error(("forced_experts: unknown option %q"):format(next(rest)), 2) end
  if not is_module(model) then error("forced_experts: the first argument must be a model", 2) end
  local mode = opts.mode or "both"
  if mode ~= "both" and mode ~= "force" and mode ~= "silence" then
    error(("forced_experts: mode must be \"force\", \"silence\" or \"both\", got %q"):format(tostring(mode)), 2)
  end
  local list = batches_of(fn, data, opts)
  if #list == 0 then error("forced_experts: no data", 2) end
  local meta = provenance(model, opts.name, opts.seed)
  local aopts = {}
  for k, v in pairs(rest) do aopts[k] = v end
  aopts.norm, aopts.seed = opts.norm, opts.seed or 0
  local settings = opts.eps and settings_text(rest) or nil
  local _, t0 = evaluating(model, function() return forward(model, list[1].x) end)
  local layers = {}
  for i = 1, #t0 do
    local l = t0[i]
    if l.kind ~= "smooth" and (not opts.layer or opts.layer == l.layer) then layers[#layers + 1] = {name = l.layer, E = l.E} end
  end
  if opts.layer and #layers == 0 then no_layer(fn, "sparse MoE layer", opts.layer, t0:layers(), 2) end
  local function evaluate(fopts)
    local run = fopts and ml.nn.Lambda(function(x) return (model:forward(x, fopts)) end, "Forced") or model
    local n, correct, robust = 0, 0, 0
    for _, batch in ipairs(list) do
      correct = correct + M._accuracy(forward(run, batch.x, {}), batch.y)
      if opts.eps then
        local xa, rep = attack_batch(fn, run, opts.attack or "pgd", batch.x, batch.y, aopts, opts.eps)
        if rep.interrupted then ml.interrupt(); error("interrupted", 0) end -- on to the enclosing ml.interruptible
        robust = robust + M._accuracy(forward(run, xa, {}), batch.y)
      end
      n = n + batch.x:size(1)
    end
    return correct / n, opts.eps and robust / n or nil
  end
  local rows = {}
  local function add(layer, m, e, acc, racc)
    rows[#rows + 1] = stamp({layer = layer, mode = m, expert = e, accuracy = acc, robust_accuracy = racc,
                             eps = opts.eps, attack = opts.eps and (opts.attack or "pgd") or nil,
                             norm = opts.eps and (opts.norm or "linf") or nil, settings = settings}, meta)
  end
  local stopped = evaluating(model, function() return interruptible(function()
    local base, rbase = evaluate(nil)
    add("", "none", 0, base, rbase)
    for _, l in ipairs(layers) do
      local experts = opts.experts or {}
      if not opts.experts then for e = 1, l.E do experts[e] = e end end
      for _, e in ipairs(experts) do
        if mode ~= "silence" then add(l.name, "force", e, evaluate({force = {[l.name] = e}})) end
        if mode ~= "force" then add(l.name, "silence", e, evaluate({silence = {[l.name] = e}})) end
      end
    end
  end) end)
  return R.rows(rows, {interrupted = stopped or nil})
end

------------------------------------------------------------------ help texts
local rows_note = "\n  Rows carry model, seed and config_hash (ml.results); they print as a table and write to CSV / JSON Lines."
ml.doc(M.accuracy, [[
ml.metrics.accuracy(model, x, y, [opts]) or ml.metrics.accuracy(model, dataset, [opts]) -> rows (one row)
  Standard accuracy and error rate in eval mode, batch by batch (opts.batch = 128, opts.n = first n examples);
  with attack = "pgd" (any ml.attack name), eps and that attack's options, also robust_accuracy and
  robust_error_rate. Multi-label targets (float [B, C] of 0/1) give precision_at_1 and its false discovery
  rate fdr instead. A progress bar on long runs; Ctrl-C returns the counts so far.]] .. rows_note)
ml.doc(M.routing_change, [[
ml.metrics.routing_change(trace_clean, trace_other, [{layer, batch}]) or
ml.metrics.routing_change(model, x, x_other, [{layer}]) -> rows, one per MoE layer
  For every routed item (token, or sample for a channel MoE) the IoU of its selected and kept experts before
  and after; rate = 1 - mean IoU; an item dropped by every choice in both traces has IoU 1 (nothing changed).
  mean_tv: mean total variation between the router distributions (the continuous version, 0..1).
  rows.iou[layer], rows.tv[layer]: the whole distributions; rows.sample_changed: 1 where a sample changed.
  Traces of different models or batch sizes, or a layer that does not exist, are errors.]])
ml.doc(M.dissection, [[
ml.metrics.dissection(model, x, y, x_adv) or ml.metrics.dissection(trace_clean, trace_adv, y, pred_adv) -> rows
  The four-way dissection of AdvMoE: per sample, routing attacked (any layer changed a kept selection) x
  prediction fooled (adversarial prediction ~= label): kept_right (1), changed_right (2), kept_fooled (3),
  changed_fooled (4); router_robustness = (1 + 3) / n, moe_robustness = (1 + 2) / n. rows.cases: 1..4 per sample.]])
ml.doc(M.expert_load, [[
ml.metrics.expert_load(model, x, [{y, classes, threshold = 0.95, x_adv, layer, quiet}]) -> rows
  Per MoE layer (and set: clean, adversarial when x_adv is given): items, top_expert, top_share, collapsed,
  share:<e> (fraction of items routed to expert e). A layer sending >= threshold of its inputs to one expert
  prints a collapse warning (rows.warnings). rows.load[set][layer]: kept choices per expert; with labels y,
  rows.matrix[set][layer] is the expert x class matrix [E, classes] of kept choices.]])
ml.doc(M.pathway, [[
ml.metrics.pathway(moe_model, x, {mask = sparse_model | {[layer] = mask}, x_adv, layer}) -> rows
  Pathway IoU (AdvMoE): for every input and channel-MoE layer, the IoU of the output channels of its selected
  experts with a static channel mask (a Sparse-CNN's masked layer at the same path, or a 0/1 list); rows give
  mean, min, p10, p50, p90, max per layer and set (clean, adversarial); rows.iou[set][layer] the distributions.]])
ml.doc(M.flops, [[
ml.metrics.flops(model, x) -> rows (one row)
  FLOPs per input counted by the ops that ran in one forward of x (eval mode; GEMMs and convolutions, so a
  sparse MoE counts only its selected experts), parameters total and active per input, active_fraction.]])
ml.doc(M.routing_radius, [[
ml.metrics.routing_radius(model, x, [{norm = "linf" | "l2", layer}]) -> rows, one per MoE layer
  The certified routing radius: per input and routed item, an eps below which its top-K selection provably
  cannot change (min, p10, p50, mean, max; exact = true when the router reads the input directly, where the
  radius is the exact distance). rows.radius[layer] per item, rows.sample_radius[layer] per input,
  rows.router_radius[layer] in the router's input space, rows.notes[layer] when a module has no bound.
  The model runs in eval mode. Derivation and assumptions (capacity) in docs/ANALYSIS.md.]])
ml.doc(M.robustness, [[
ml.metrics.robustness(model, data, {eps = {...}, attack = "pgd", norm = "linf", n, batch = 128, seed = 0,
                                    models = {name = model, ...}, radius = true, noise = false, <attack options>})
  -> rows, one per model and eps: accuracy, robust_accuracy, prediction_change, seconds, and for MoE models
  rc:<layer> (routing-change rate), rc_mean, tv:<layer> (router total variation), cert:<layer> (fraction of
  items whose certified radius is >= eps); noise = true adds rc_noise:<layer> for Gaussian noise of sigma = eps.
  data: a dataset or {x = , y = }. The engine RNG is seeded with seed (the noise); the attack gets seed too.
  Ctrl-C returns the rows done so far (rows.interrupted).
  e.g. rows = ml.metrics.robustness(nil, data.test, {models = {dense = m1, moe = m2}, eps = {0, 0.05, 0.1}, steps = 10})
       ml.plot.lines(rows, {x = "eps", y = "robust_accuracy", by = "model"})]])
ml.doc(M.routing_noise, [[
ml.metrics.routing_noise(model, data, {sigma = {...}, n, batch, seed = 0, clamp = true}) -> rows, one per sigma
  Routing-change rate per layer (rc:<layer>, rc_mean, tv:<layer>), accuracy and prediction_change under
  Gaussian noise of standard deviation sigma (clamped to [0, 1]); the engine RNG is seeded with seed.]])
ml.doc(M.forced_experts, [[
ml.metrics.forced_experts(model, data, {layer, experts, mode = "both" | "force" | "silence", eps, attack = "pgd",
                                        n, batch, seed, <attack options>}) -> rows
  Accuracy (and with eps, robust accuracy against an attack on the modified model) when every input's first
  choice in a layer is expert e (force), or when expert e is removed (silence); the first row (mode "none")
  is the model as it is. Which experts carry the robustness.]])
ml.doc(M.config_hash, "ml.metrics.config_hash(model) -> 16 hex digits (FNV-1a of model:config()), \"none\" without one")
ml.doc(M, "ml.metrics -- accuracy, robustness curves, routing change, dissection, load, pathway, FLOPs, certified radius")

return M
