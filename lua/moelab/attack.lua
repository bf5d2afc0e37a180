-- ml.attack: adversarial attacks. The attacks are C (core/attack); this file
-- gives each one its Lua name and help text, prints progress lines, keeps the
-- result of an attack stopped by Ctrl-C, prints reports, and saves and loads
-- adversarial sets. docs/ATTACKS.md describes every attack and its defaults.
local ml = require "moelab"
local A = ml.attack

------------------------------------------------------------------ the call
local report_mt = {}

local doctor_mt = {__tostring = function(d)
  if #d.flags == 0 then return "attack doctor: no problem found" end
  local lines = {("attack doctor: %d problem%s"):format(#d.flags, #d.flags > 1 and "s" or "")}
  for _, f in ipairs(d.flags) do
    lines[#lines + 1] = ("  [%s] %s\n      remedy: %s"):format(f.name, f.message, f.remedy)
  end
  return table.concat(lines, "\n")
end}

-- Runs the C attack `name`; returns x_adv, report. Ctrl-C returns the best
-- batch so far (report.interrupted) instead of raising.
local function call(name, model, x, y, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(name, type(opts)), 3)
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local quiet = o.quiet
  o.quiet = nil
  if o.log == nil and not quiet and name == "autoattack" then o.log = print end
  -- Ctrl-C: the C attack returns its best batch so far; if the interrupt
  -- fired as it returned, its result was kept (A._last)
  local stopped, xa, rep = ml.interruptible(A._run, name, model, x, y, o)
  if stopped then
    if rep == nil then
      local last_x, last_rep = A._last()
      if not last_x then error(name .. ": interrupted before any result", 2) end
      xa, rep = last_x, last_rep
    end
    rep.interrupted = true
  end
  if rep.doctor then setmetatable(rep.doctor, doctor_mt) end
  rep.x, rep.y, rep.x_adv = x, y, xa
  rep.model_config = model:config()
  return xa, setmetatable(rep, report_mt)
end

local function pct(v) return v and ("%.2f%%"):format(100 * v) or "-" end

report_mt.__tostring = function(r)
  local lines = {}
  local c = r.cost or {}
  lines[#lines + 1] = ("%s (%s, eps %.4g, objective %s): clean %s -> robust %s (8-bit %s), success %s"):format(
    r.attack, r.norm, r.eps, r.objective, pct(r.clean_accuracy), pct(r.robust_accuracy),
    pct(r.robust_accuracy_8bit), pct(r.success_rate))
  lines[#lines + 1] = ("  %d examples, %d forwards, %d backwards, %d queries, %.2f s%s%s"):format(r.n, c.forwards or 0,
    c.backwards or 0, c.queries or 0, c.seconds or 0, r.interrupted and ", interrupted" or "",
    r.stopped and ", stopped" or "")
  for _, p in ipairs(r.attacks or {}) do
    lines[#lines + 1] = ("  after %-9s robust %s  (%d broken, %.1f s)"):format(p.name, pct(p.robust_accuracy),
      p.broken, p.cost.seconds)
  end
  if r.routing then
    local sw = {}
    if r.selection_grad ~= "model" then sw[#sw + 1] = "selection gradient " .. r.selection_grad end
    if r.router_noise then sw[#sw + 1] = "router noise" end
    lines[#lines + 1] = ("  target %s%s: routing changed for %d of %d examples, prediction for %d"):format(r.target,
      #sw > 0 and " (" .. table.concat(sw, ", ") .. ")" or "", r.routing_changed, r.n, r.prediction_changed)
    for _, l in ipairs(r.routing) do
      lines[#lines + 1] = ("    %-24s %s of the items routed differently%s"):format(l.layer, pct(l.change),
        l.expert and ("; expert %d first for %s"):format(l.expert, pct(l.steered)) or "")
    end
  end
  if r.doctor and #r.doctor.flags > 0 then lines[#lines + 1] = doctor_mt.__tostring(r.doctor) end
  return table.concat(lines, "\n")
end


------------------------------------------------------------------ the attacks
local common = [[
  Common options: eps (required), norm = "linf" | "l2", seed = 0, clamp = true (clamp to [0, 1]),
  nan = "stop" | "continue" (NaN or inf logits stop the attack with an error naming the example and step),
  on_step = fn(step, info) (info: attack, step, total, run, loss, success, x_adv, index, trace; return false
  to stop), trace = false (routing traces in info), quiet.
  x: pixels in [0, 1] [B, ...]; y: int64 labels 1..classes. The model runs in eval mode and gets no .grad.
  report: success, loss, perturbation, steps (per example), pred_clean, pred_adv, clean_accuracy,
  robust_accuracy, robust_accuracy_8bit, cost = {forwards, backwards, queries, seconds}, interrupted,
  prediction_changed; for a model with MoE layers routing = {{layer, change, [expert, steered]}, ...}
  (fraction of each layer's items whose kept experts changed) and routing_changed (examples).]]

-- the switches of the gradient passes (every gradient attack) and the parts of an MoE (FGSM, PGD, APGD)
local switches = [[
  selection_grad = "model" | "ste" (straight-through gradient of the top-K selection), router_noise = false
  (the training router noise in the gradient passes, with eot): see help(ml.attack.pgd).
]]
local moe_parts = [[
  The parts of an MoE (docs/ATTACKS.md, "Attacks on the routers"): target = "model" (default) | "router" (only the
  routing, with a routing objective: routing_kl by default, routing_margin, routing_steer) | "experts" (the
  routing frozen to the clean input's selection) | "steer_then_break" (steer_steps = steps/2 of routing_steer
  towards expert = n | "weakest" (default), then the objective); selection_grad = "model" | "ste"
  (straight-through gradient of the top-K selection); router_noise = false (the training router noise in the
  gradient passes, with eot).
]]

function A.run(name, model, x, y, opts) return call(name, model, x, y, opts) end
ml.doc(A.run, [[
ml.attack.run(name, model, x, y, opts) -> x_adv, report
  Any attack by name: "fgsm", "pgd", "apgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack".
]] .. common)

function A.fgsm(model, x, y, opts) return call("fgsm", model, x, y, opts) end
ml.doc(A.fgsm, [[
ml.attack.fgsm(model, x, y, {eps, norm, objective = "ce", target, eot = 1}) -> x_adv, report
  Fast gradient sign method: one step of size eps along sign(grad) (linf) or grad/|grad| (l2).
]] .. moe_parts .. common)

function A.pgd(model, x, y, opts) return call("pgd", model, x, y, opts) end
ml.doc(A.pgd, [[
ml.attack.pgd(model, x, y, {eps, norm, steps = 10, alpha = eps/steps, random_start = false, restarts = 1,
                            early_stop = false, objective = "ce", target, eot = 1}) -> x_adv, report
  Projected gradient descent (Madry et al.); restarts keep the worst case per example, early_stop freezes an
  example at its first success. objective: a name (help(ml.attack.loss)) or fn(logits, trace, y) -> [B].
  e.g. x_adv, rep = ml.attack.pgd(model, x, y, {eps = 8/255, steps = 10})
       ml.attack.pgd(vmoe, x, y, {eps = 0.1, target = "router", objective = "routing_margin"})
]] .. moe_parts .. common)

function A.apgd(model, x, y, opts) return call("apgd", model, x, y, opts) end
ml.doc(A.apgd, [[
ml.attack.apgd(model, x, y, {eps, norm, steps = 100, objective = "ce" | "dlr" | ..., restarts = 1,
                             rho = 0.75, momentum = 0.75, target, eot = 1}) -> x_adv, report
  Auto-PGD (Croce & Hein 2020): step 2 eps halved at the checkpoints 0, 0.22, ... where the loss oscillates
  or stalls, momentum 0.75, restart from the best point. Restarts re-attack the examples not yet broken.
]] .. moe_parts .. common)

function A.apgd_t(model, x, y, opts) return call("apgd-t", model, x, y, opts) end
ml.doc(A.apgd_t, [[
ml.attack.apgd_t(model, x, y, {eps, norm, steps = 100, n_targets = 9, restarts = 1}) -> x_adv, report
  APGD on the targeted DLR loss towards the classes ranked 2 .. n_targets + 1 by the clean logits
  (needs >= 4 classes); success = misclassified.
]] .. switches .. common)

function A.fab(model, x, y, opts) return call("fab-t", model, x, y, opts) end
A.fab_t = A.fab
ml.doc(A.fab, [[
ml.attack.fab(model, x, y, {eps, norm, steps = 100, n_targets = 9, alpha_max = 0.1, eta = 1.05, beta = 0.9,
                            restarts = 1}) -> x_adv, report   (also ml.attack.fab_t)
  FAB-T (Croce & Hein 2020), minimum norm: projections onto the linearised boundary towards each target
  class; an example counts as broken when its closest adversarial point is within eps.
]] .. switches .. common)

function A.square(model, x, y, opts) return call("square", model, x, y, opts) end
ml.doc(A.square, [[
ml.attack.square(model, x, y, {eps, queries = 5000, p_init = 0.8}) -> x_adv, report   (linf)
  Square attack (Andriushchenko et al. 2020): score-based, random squares of +-eps per channel on the margin
  loss, the paper's schedule for the square size. report.steps = queries per example.
]] .. common)

function A.autoattack(model, x, y, opts) return call("autoattack", model, x, y, opts) end
ml.doc(A.autoattack, [[
ml.attack.autoattack(model, x, y, {eps, norm, version = "standard" | "rand" | "custom", attacks = {...},
                                   state = "file.json", batch = 250, checks = true, quiet}) -> x_adv, report
  AutoAttack (Croce & Hein 2020): standard = APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000
  queries), each on the examples still robust; rand = APGD-CE, APGD-DLR with EOT over 20 draws; custom = the
  list in attacks (apgd-ce, apgd-dlr, apgd-t, fab-t, square, pgd, fgsm). Prints one line per attack.
  batch: the robust examples are attacked in chunks of batch (0: all at once); the result does not depend on
  it. state: resumable evaluation (flags and adversarial rows written atomically after every chunk; rerun
  the same call after a kill to continue). report.attacks: per attack robust accuracy,
  examples broken, cost; report.broken_by[i]: "clean", the attack's name, or "robust".
  steps, queries, n_targets, eot tune the components (e.g. for a quick look).
]] .. switches .. common)

function A.check(model, x, y, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local name = o.cheap and "check-cheap" or "check"
  o.cheap = nil
  local _, rep = call(name, model, x, y, o)
  local d = setmetatable(rep.doctor, doctor_mt)
  d.interrupted = rep.interrupted
  return d
end
ml.doc(A.check, [[
ml.attack.check(model, x, y, {eps, norm, steps, queries, seed, cheap = false}) -> doctor
  The attack doctor: flags what makes robustness numbers lie, each with its remedy -- randomness (five
  forwards differ), probabilities instead of logits, zero input gradients, a model left in training mode
  (the cheap checks, also run by autoattack), eps = 0 not giving the clean accuracy, linf eps = 1 not giving
  0%, Square beating APGD-CE by more than 0.2 points (gradient masking), robust accuracy growing with eps,
  and per MoE layer a router that receives no gradient (cheap; e.g. top-1 with renormalised gates).
  doctor.flags = {{name, message, remedy}, ...}, doctor.ok; print(doctor) shows the verdict.
  steps / queries shorten the attacks it runs.]])

------------------------------------------------------------------ evaluation over a dataset
function A.evaluate(model, ds, name, opts, eval_opts)
  eval_opts = eval_opts or {}
  local n = math.min(eval_opts.n or ds:size(), ds:size())
  local bs = eval_opts.batch or 250
  local clean, robust, total, seconds = 0, 0, 0, 0
  for start = 1, n, bs do
    local x, y = ds:batch(start, math.min(bs, n - start + 1))
    local _, rep = call(name, model, x, y, opts)
    local b = y:size(1)
    clean = clean + rep.clean_accuracy * b
    robust = robust + rep.robust_accuracy * b
    total = total + b
    seconds = seconds + rep.cost.seconds
    if rep.interrupted or rep.stopped then break end
  end
  return {clean_accuracy = clean / total, robust_accuracy = robust / total, n = total, seconds = seconds}
end
ml.doc(A.evaluate, [[
ml.attack.evaluate(model, ds, name, opts, [{n = all, batch = 250}]) -> {clean_accuracy, robust_accuracy, n, seconds}
  Runs the attack `name` (as ml.attack.run) over the first n examples of a dataset, batch by batch.
  e.g. ml.attack.evaluate(model, data.test, "pgd", {eps = 0.1, steps = 10}, {n = 1000})]])

------------------------------------------------------------------ adversarial sets
local saved_tensors = {"x", "x_adv", "success", "loss", "perturbation", "steps", "pred_clean", "pred_adv"}
local saved_fields = {"attack", "objective", "n", "eps", "norm", "seed", "clean_accuracy", "robust_accuracy",
                      "robust_accuracy_8bit", "success_rate", "cost", "attacks", "broken_by", "doctor",
                      "interrupted", "stopped", "target", "selection_grad", "router_noise", "routing",
                      "routing_changed", "prediction_changed"}

function A.save(path, result)
  if type(path) ~= "string" then error("attack.save: first argument must be a file path", 2) end
  if type(result) ~= "table" or not result.x or not result.x_adv or not result.y then
    error("attack.save: second argument must be an attack report (the second result of an attack)", 2)
  end
  local tensors = {y = result.y}
  for _, k in ipairs(saved_tensors) do tensors[k] = result[k] end
  local rep = {}
  for _, k in ipairs(saved_fields) do rep[k] = result[k] end
  local meta = {["moelab.format"] = "attack/1", ["moelab.attack.report"] = ml.json.encode(rep),
                ["moelab.seed"] = tostring(result.seed)}
  if result.model_config then meta["moelab.config"] = result.model_config end
  ml.io.save_safetensors(path, tensors, meta)
end
ml.doc(A.save, [[
ml.attack.save(path, report)
  Saves an adversarial set as safetensors: the clean and adversarial batches (x, x_adv), labels y (1-based),
  predictions, per-example success / loss / perturbation / steps, and in the metadata the report (accuracies,
  8-bit robust accuracy, cost), the seed and the model's config. ml.attack.load reads it back.]])

function A.load(path)
  if type(path) ~= "string" then error("attack.load: first argument must be a file path", 2) end
  local tensors, meta = ml.io.load_safetensors(path)
  if meta["moelab.format"] ~= "attack/1" then
    error(("attack.load: %s is not an adversarial set saved by ml.attack.save"):format(path), 2)
  end
  local r = ml.json.decode(meta["moelab.attack.report"] or "{}")
  for k, v in pairs(tensors) do r[k] = v end
  r.model_config = meta["moelab.config"]
  return setmetatable(r, report_mt)
end
ml.doc(A.load, [[
ml.attack.load(path) -> report
  Reads an adversarial set written by ml.attack.save: report.x, x_adv, y, pred_clean, pred_adv, ...,
  the accuracies and report.model_config (ml.nn.from_config rebuilds the model; ml.load its weights).]])

ml.doc(A.loss, [[
ml.attack.loss(name, logits, y, [{target = t, clean = logits}]) -> losses [B] (differentiable)
  The attack objectives: "ce", "dlr", "cw" (max_{i~=y} z_i - z_y), "ce_targeted", "dlr_targeted", "logit_diff"
  (z_t - z_y), "bce" (multi-label, y float [B, C]), "ce_aux" (plus the routers' auxiliary losses; needs a
  forward, use it as an attack option), "kl" (KL to the clean prediction: clean = logits). Attacks maximise them.
  The routing objectives read the routing of the attack's forwards (attack option objective only), summed over
  the MoE layers and the items of an example: "routing_kl" (KL from the clean router distribution),
  "routing_margin" (violation of the clean top-K margin, capped at 0 once the selection changed),
  "routing_steer" (log-probability of expert = n, or each layer's weakest).]])
ml.doc(A.objectives, "ml.attack.objectives() -> the names of the built-in objectives (attack option objective)")

return true
