-- ml.inspect.routing: which experts each MoE layer selected, for a few
-- examples, clean and (given) adversarial side by side with the changed
-- selections marked. Token MoE layers show the patch grid of each example
-- (the token map: 7x7 for a 28x28 image with patch 4), channel MoE layers the
-- pathway (one expert id per layer). The view is a value: it prints as text
-- (coloured by expert id on a terminal), and :plot() / :png(path) draw the
-- same maps as heatmaps through ml.plot.
local ml = require "moelab"
local options = require "moelab.options"

ml.inspect = ml.inspect or {}
local I = ml.inspect

local View = {}
View.__index = View
View.__name = "RoutingView"

local kind = options.kind

-- ---------------------------------------------------------------- reading a trace
-- y, trace of one forward in evaluation mode without gradients (the model's
-- mode is restored, also on error). ml.watch uses it too.
function I._forward_trace(model, x)
  local was = model:is_training()
  model:eval()
  local ok, y, t = pcall(ml.no_grad, function() return model:forward(x, {trace = true}) end)
  model:train(was)
  if not ok then error(y, 0) end
  return y, t
end

-- The items of one example in one layer: for each, the first kept expert
-- (1-based; 0 when every choice was dropped) and the set of kept experts.
local function items_of(layer, experts, kept, first, count)
  local out = {}
  for t = first, first + count - 1 do
    local ids, set, head = experts[t], {}, 0
    for k = 1, layer.K do
      if kept[t][k] == 1 then
        set[#set + 1] = ids[k]
        if head == 0 then head = ids[k] end
      end
    end
    table.sort(set)
    out[#out + 1] = {expert = head, set = table.concat(set, ",")}
  end
  return out
end

-- The rows and columns of a token map of n tokens: a square grid, after a
-- leading class token when n - 1 is a square (ViT, V-MoE), else rows of
-- ceil(sqrt(n)) tokens.
local function token_grid(n)
  local side = math.floor(math.sqrt(n) + 0.5)
  if side * side == n then return side, side, 0 end
  local s1 = math.floor(math.sqrt(n - 1) + 0.5)
  if n > 1 and s1 * s1 == n - 1 then return s1, s1, 1 end
  local cols = math.ceil(math.sqrt(n))
  return math.ceil(n / cols), cols, 0
end

-- The view's data from the traces (trace_adv may be nil): one entry per layer
-- with, per shown example, its items clean and adversarial.
local function collect(fn, tc, ta, batch, n)
  if ta then
    local ok, err = pcall(tc.compatible, tc, ta)
    if not ok then error(("%s: %s"):format(fn, tostring(err):gsub("^[^:]*:%d+: ", "")), 3) end
  end
  local layers = {}
  for i = 1, #tc do
    local l = tc[i]
    if l.T % batch ~= 0 then
      error(("%s: layer %s routes %d items, not a multiple of the batch size %d"):format(fn, l.layer, l.T, batch), 3)
    end
    local per = l.T // batch
    local entry = {name = l.layer, kind = l.kind, E = l.E, K = l.K, per = per, clean = {}, adv = ta and {} or nil}
    if l.kind == "token" or l.kind == "smooth" then
      entry.rows, entry.cols, entry.lead = token_grid(per)
    end
    local ec, kc = l.experts:totable(), l.kept:totable()
    local ea, ka
    if ta then ea, ka = ta[i].experts:totable(), ta[i].kept:totable() end
    for e = 1, n do
      entry.clean[e] = items_of(l, ec, kc, (e - 1) * per + 1, per)
      if ta then entry.adv[e] = items_of(l, ea, ka, (e - 1) * per + 1, per) end
    end
    layers[#layers + 1] = entry
  end
  return layers
end

-- ---------------------------------------------------------------- text
local RESET, REVERSE = "\27[0m", "\27[7m"

-- How an adversarial item differs from the clean one: "*" another set of kept
-- experts (a routing change), "~" the same experts with another first choice, " " none.
local function mark(clean, adv)
  if clean.set ~= adv.set then return "*" end
  return clean.expert ~= adv.expert and "~" or " "
end

-- One cell: the expert id padded to w, then its mark. Colour: the expert's
-- series colour, in reverse video when the selection changed.
local function cell(item, w, m, color)
  local id = item.expert == 0 and "-" or tostring(item.expert)
  local text = (" "):rep(w - #id) .. id
  if color and item.expert > 0 then text = ml.plot._color(item.expert) .. (m == "*" and REVERSE or "") .. text .. RESET end
  return text .. m
end

local function changed_count(clean, adv)
  local c = 0
  for t = 1, #clean do if clean[t].set ~= adv[t].set then c = c + 1 end end
  return c
end

local function token_lines(out, layer, e, color)
  local clean, adv = layer.clean[e], layer.adv and layer.adv[e]
  local w = #tostring(layer.E)
  local head = ("  %s: token MoE, %d experts, top-%d"):format(layer.name, layer.E, layer.K)
  if layer.lead == 1 then
    local function id(item) return item.expert == 0 and "-" or tostring(item.expert) end
    head = head .. (", class token %s"):format(id(clean[1]))
    if adv then head = head .. (" -> %s%s"):format(id(adv[1]), (mark(clean[1], adv[1]):gsub(" ", ""))) end
  end
  if adv then head = head .. (", changed %d of %d"):format(changed_count(clean, adv), #clean) end
  out[#out + 1] = head
  local width = math.max(layer.cols * (w + 1), #"clean")
  if adv then out[#out + 1] = "    clean" .. (" "):rep(width - #"clean" + 2) .. "adversarial" end
  for r = 1, layer.rows do
    local a, b = {}, {}
    for c = 1, layer.cols do
      local t = layer.lead + (r - 1) * layer.cols + c
      if t <= #clean then
        a[#a + 1] = cell(clean[t], w, " ", color)
        if adv then b[#b + 1] = cell(adv[t], w, mark(clean[t], adv[t]), color) end
      end
    end
    local line = "    " .. table.concat(a)
    if adv then line = line .. (" "):rep(width - #a * (w + 1)) .. "  " .. table.concat(b) end
    out[#out + 1] = (line:gsub("%s+$", ""))
  end
end

-- The pathway: one column per channel-MoE layer, the example's expert in each.
local function pathway_lines(out, layers, e, color)
  local names, widths = {}, {}
  for i, l in ipairs(layers) do
    names[i] = l.name
    widths[i] = math.max(#l.name, #tostring(l.E) + 1)
  end
  local function row(label, pick)
    local parts = {("    %-12s"):format(label)}
    for i, l in ipairs(layers) do
      local item, m = pick(l)
      local text = cell(item, #tostring(l.E), m, color)
      parts[#parts + 1] = text .. (" "):rep(widths[i] - #tostring(l.E) - 1) .. " "
    end
    return (table.concat(parts):gsub("%s+$", ""))
  end
  local header = {("  %-14s"):format("pathway")}
  for i, name in ipairs(names) do header[#header + 1] = name .. (" "):rep(widths[i] - #name) .. " " end
  out[#out + 1] = (table.concat(header):gsub("%s+$", ""))
  out[#out + 1] = row("clean", function(l) return l.clean[e][1], " " end)
  if layers[1].adv then
    out[#out + 1] = row("adversarial", function(l) return l.adv[e][1], mark(l.clean[e][1], l.adv[e][1]) end)
  end
end

function View:render(opts)
  opts = options.check("RoutingView:render", opts, {color = true}, 2)
  local color = opts.color == true
  local out = {("routing of %d example%s, %d MoE layer%s (each item's first kept expert; - none kept%s)"):format(
    self.n, self.n == 1 and "" or "s", #self.layers, #self.layers == 1 and "" or "s",
    self.adversarial and "; * selection changed; ~ same experts, another first" or "")}
  local channel = {}
  for _, l in ipairs(self.layers) do
    if l.kind == "channel" or l.kind == "global" then channel[#channel + 1] = l end
  end
  for e = 1, self.n do
    local head = ("example %d"):format(e)
    if self.labels then head = head .. ("  label %d"):format(self.labels[e]) end
    if self.pred then
      head = head .. ("  pred %d"):format(self.pred[e])
      if self.pred_adv then head = head .. (" -> %d"):format(self.pred_adv[e]) end
    end
    out[#out + 1] = head
    for _, l in ipairs(self.layers) do
      if l.kind == "token" or l.kind == "smooth" then token_lines(out, l, e, color) end
    end
    if #channel > 0 then pathway_lines(out, channel, e, color) end
  end
  return table.concat(out, "\n")
end

function View:__tostring() return self:render() end

function View:__repr() return self:render{color = select(3, ml.plot._term())} end

-- ---------------------------------------------------------------- plots
-- A heatmap per token layer and example (expert ids, zlim {1, E}), and one of
-- examples x layers for the pathway; with an adversarial batch, each beside
-- its adversarial map and a map of the changed items alone (their new expert;
-- unchanged items blank).
function View:plot()
  local NaN = 0 / 0
  local panels = {}
  local cols = self.adversarial and 3 or 1
  local function add(matrix, title, E, extra)
    local o = {title = title, zlim = {1, math.max(E, 2)}}
    for k, v in pairs(extra or {}) do o[k] = v end
    panels[#panels + 1] = ml.plot.heatmap(matrix, o)
  end
  local function value(item) return item.expert == 0 and NaN or item.expert end
  for e = 1, self.n do
    for _, l in ipairs(self.layers) do
      if l.kind == "token" or l.kind == "smooth" then
        local mc, ma, md = {}, {}, {}
        for r = 1, l.rows do
          mc[r], ma[r], md[r] = {}, {}, {}
          for c = 1, l.cols do
            local t = l.lead + (r - 1) * l.cols + c
            local it = l.clean[e][t]
            mc[r][c] = it and value(it) or NaN
            if self.adversarial then
              local a = l.adv[e][t]
              ma[r][c] = a and value(a) or NaN
              md[r][c] = (a and a.set ~= it.set) and value(a) or NaN
            end
          end
        end
        add(mc, ("ex %d %s"):format(e, l.name), l.E)
        if self.adversarial then
          add(ma, "adversarial", l.E)
          add(md, "changed", l.E)
        end
      end
    end
  end
  local channel = {}
  for _, l in ipairs(self.layers) do
    if l.kind == "channel" or l.kind == "global" then channel[#channel + 1] = l end
  end
  if #channel > 0 then
    local E, names = 2, {}
    for i, l in ipairs(channel) do E, names[i] = math.max(E, l.E), l.name end
    local mc, ma, md = {}, {}, {}
    for e = 1, self.n do
      mc[e], ma[e], md[e] = {}, {}, {}
      for i, l in ipairs(channel) do
        local it = l.clean[e][1]
        mc[e][i] = value(it)
        if self.adversarial then
          local a = l.adv[e][1]
          ma[e][i], md[e][i] = value(a), a.set ~= it.set and value(a) or NaN
        end
      end
    end
    local rows = {}
    for e = 1, self.n do rows[e] = ("ex %d"):format(e) end
    add(mc, "pathway clean", E, {rows = rows, cols = names})
    if self.adversarial then
      add(ma, "pathway adversarial", E, {rows = rows, cols = names})
      add(md, "pathway changed", E, {rows = rows, cols = names})
    end
  end
  panels.cols = cols
  return ml.plot.grid(panels)
end

function View:png(path, opts)
  if type(path) ~= "string" then error(("RoutingView:png: path must be a string, got %s"):format(kind(path)), 2) end
  self:plot():png(path, opts)
  return self
end

-- ---------------------------------------------------------------- the function
local known = {n = true, batch = true, labels = true}

local function argmax_list(logits) return logits:argmax(2):totable() end

-- ml.inspect.routing(model, x, [x_adv], [opts]) or (trace, [trace_adv], [opts])
function I.routing(a, b, c, d)
  local fn = "inspect.routing"
  local tc, ta, opts, batch
  local view = {}
  if kind(a) == "Trace" then
    if kind(b) == "Trace" then ta, opts = b, c else opts = b end
    tc = a
    opts = options.check(fn, opts, known, 2)
    batch = opts.batch
    if batch == nil then -- a channel layer routes one item per example; else show one example
      batch = 1
      for i = 1, #tc do if tc[i].kind == "channel" or tc[i].kind == "global" then batch = tc[i].T end end
    end
    if #tc == 0 then error(fn .. ": the trace is empty (no MoE layer)", 2) end
  elseif kind(a) == "Module" then
    local x, xa = b, nil
    if kind(c) == "Tensor" then xa, opts = c, d else opts = c end
    if kind(x) ~= "Tensor" then error(("%s: x must be a batch tensor [B, ...], got a %s"):format(fn, kind(x)), 2) end
    opts = options.check(fn, opts, known, 2)
    if opts.batch ~= nil then error(fn .. ": batch is the batch size of hand-made traces; with a model it is x's", 2) end
    batch = x:size(1)
    if xa and (xa:dim() ~= x:dim() or xa:size(1) ~= batch) then
      error(("%s: x_adv must have x's shape, got [%s] and [%s]"):format(fn, table.concat(xa:shape(), ", "),
        table.concat(x:shape(), ", ")), 2)
    end
    local y
    y, tc = I._forward_trace(a, x)
    view.pred = argmax_list(y)
    if xa then
      y, ta = I._forward_trace(a, xa)
      view.pred_adv = argmax_list(y)
    end
    if tc == nil or #tc == 0 then error(fn .. ": the model has no MoE layer (its trace is empty)", 2) end
  else
    error(("%s: expects (model, x, [x_adv], [opts]) or (trace, [trace_adv], [opts]), got a %s"):format(fn, kind(a)), 2)
  end
  local n = opts.n or 4
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then error(("%s: n must be a positive integer, got %s"):format(fn, tostring(n)), 2) end
  if type(batch) ~= "number" or batch < 1 or batch % 1 ~= 0 then
    error(("%s: batch must be a positive integer, got %s"):format(fn, tostring(batch)), 2)
  end
  view.n = math.min(n, batch)
  local labels = opts.labels
  if labels ~= nil then
    labels = kind(labels) == "Tensor" and labels:totable() or labels
    if type(labels) ~= "table" or #labels < view.n then
      error(("%s: labels must be a list or tensor of at least %d labels"):format(fn, view.n), 2)
    end
    view.labels = labels
  end
  view.layers = collect(fn, tc, ta, batch, view.n)
  view.adversarial = ta ~= nil
  view.trace, view.trace_adv = tc, ta
  return setmetatable(view, View)
end

ml.doc(I.routing, [[
ml.inspect.routing(model, x, [x_adv], [{n = 4, labels}]) -> view
ml.inspect.routing(trace, [trace_adv], [{n = 4, batch, labels}]) -> view
  Which experts each MoE layer selected, for the first n examples (eval mode, no gradient). Token MoE
  layers: the example's token map as a grid (T / batch tokens: a square patch grid, after a class token
  when there is one; 7x7 for MNIST with patch 4), each cell the token's first kept expert (1-based, "-"
  when every choice was dropped). Channel MoE layers: the pathway, one expert id per layer. Given x_adv,
  the adversarial maps stand beside the clean ones; "*" marks each item whose kept selection changed
  (the routing change of ml.metrics.routing_change), "~" one that kept its experts in another order. Prints as text, coloured by expert id at the prompt
  on a terminal (NO_COLOR unset); view:png(path) writes the maps as heatmaps. batch: the batch size of
  hand-made traces (default: the items of a channel layer, else 1 example); labels (y) show beside the
  predictions (model(x) and model(x_adv), argmax).
  e.g. ml.inspect.routing(model, x, ml.attack.pgd(model, x, y, {eps = 0.1}), {n = 2})]])
ml.doc(View.render, "view:render([{color = false}]) -> the routing view as text (color: ANSI colours by expert id)")
ml.doc(View.plot, "view:plot() -> an ml.plot grid of heatmaps: per token layer and example the clean map (and the adversarial\n  one and the changed items alone), and the pathways as examples x layers; expert ids on the colour scale 1..E")
ml.doc(View.png, "view:png(path, [{scale, width, height}]) -> view: writes view:plot() as a PNG")

return I
