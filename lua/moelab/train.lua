-- ml.train: learning-rate schedules, evaluation, the fit loop with a progress
-- bar. (Checkpoints, ml.save / ml.load, are C: core/io/checkpoint.c.)
local ml = require "moelab"
local train = ml.train or {}
ml.train = train

------------------------------------------------------------------ schedules
-- ml.train.schedule{kind = "cosine", warmup = 0, total = steps, min = 0,
--                   step_size = , gamma = 0.1, milestones = {..}}
-- returns f(step) -> multiplier of the base learning rate (step counts from 1).
function train.schedule(opts)
  opts = opts or {}
  local kind = opts.kind or "constant"
  local warmup, total = opts.warmup or 0, opts.total
  local floor = opts.min or 0
  local known = {constant = true, linear = true, cosine = true, step = true, multistep = true}
  if not known[kind] then
    error(("schedule: unknown kind %q (use constant, linear, cosine, step or multistep)"):format(kind), 2)
  end
  if kind ~= "constant" and kind ~= "step" and kind ~= "multistep" and not total then
    error(("schedule: kind %q needs total (the number of steps)"):format(kind), 2)
  end
  return function(step)
    if warmup > 0 and step <= warmup then return step / warmup end
    local t = step - warmup
    if kind == "constant" then return 1 end
    if kind == "linear" then
      local frac = math.min(1, t / math.max(1, total - warmup))
      return floor + (1 - floor) * (1 - frac)
    elseif kind == "cosine" then
      local frac = math.min(1, t / math.max(1, total - warmup))
      return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
    elseif kind == "step" then
      return (opts.gamma or 0.1) ^ math.floor(t / (opts.step_size or error("schedule: step needs step_size", 2)))
    else -- multistep
      local k = 0
      for _, m in ipairs(opts.milestones or {}) do if t >= m then k = k + 1 end end
      return (opts.gamma or 0.1) ^ k
    end
  end
end

------------------------------------------------------------------ evaluation
-- ml.train.evaluate(model, ds, {batch = 256, batches = nil}) -> accuracy, mean loss
-- Runs in eval mode without autograd; the model's mode is restored afterwards.
function train.evaluate(model, ds, opts)
  opts = opts or {}
  local was = model:is_training()
  model:eval()
  local correct, total, loss_sum = 0, 0, 0
  local ok, err = pcall(ml.no_grad, function()
    local nb = 0
    for x, y in ds:batches(opts.batch or 256) do
      local logits = model(x)
      loss_sum = loss_sum + ml.cross_entropy(logits, y, {reduction = "sum"}):item()
      correct = correct + logits:argmax(2):eq(y):sum():item()
      total = total + y:size(1)
      nb = nb + 1
      if opts.batches and nb >= opts.batches then break end
    end
  end)
  model:train(was)
  if not ok then error(err, 0) end
  if total == 0 then return 0, 0 end
  return correct / total, loss_sum / total
end

------------------------------------------------------------------ progress
local function progress_line(p)
  local width = 24
  local frac = p.total > 0 and math.min(1, p.done / p.total) or 0
  local fill = math.floor(frac * width + 0.5)
  return ("epoch %d/%d [%s%s] %d/%d  loss %.4f  acc %5.1f%%  %6.0f ex/s  lr %.3g"):format(
    p.epoch, p.epochs, ("="):rep(fill), (" "):rep(width - fill), p.done, p.total, p.loss, 100 * p.acc,
    p.rate, p.lr)
end

------------------------------------------------------------------ fit
local fit_options = {
  epochs = true, batch = true, lr = true, optimizer = true, momentum = true, nesterov = true,
  weight_decay = true, schedule = true, warmup = true, min_lr = true, aux_weight = true, eval = true,
  checkpoint = true, batches = true, quiet = true, seed = true, augment = true, clip = true,
  callbacks = true, loss = true, params = true, eval_batches = true, shuffle = true,
}

-- ml.train.fit(model, train_ds, opts) -> history
-- opts: epochs = 1, batch = 128, optimizer = "sgd" | "adam" | "adamw" | an optimizer,
--   lr (0.05 for sgd, 1e-3 otherwise), momentum = 0.9 (sgd), nesterov, weight_decay,
--   schedule = "constant" | "cosine" | "linear" | "step", warmup = steps, min_lr (fraction),
--   aux_weight = 1 (scales the routers' auxiliary losses, already weighted inside the layers),
--   eval = test dataset (evaluated after each epoch), eval_batches, checkpoint = path (saved
--   after each epoch, atomically), batches = max batches per epoch, quiet, seed (shuffling),
--   augment = {crop = 4, flip = true}, clip = max gradient norm, params = table of tensors
--   (default: all model parameters), loss = function(logits, y) -> loss (default cross-entropy),
--   callbacks = {on_step = fn(info), on_epoch = fn(info)}.
-- Ctrl-C stops training cleanly after the current step; the model stays usable and the
-- history so far is returned (history.interrupted = true).
function train.fit(model, ds, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not fit_options[k] then
      local names = {}
      for n in pairs(fit_options) do names[#names + 1] = n end
      table.sort(names)
      error(("fit: unknown option %q (known: %s)"):format(k, table.concat(names, ", ")), 2)
    end
  end
  local epochs, bs = opts.epochs or 1, opts.batch or 128
  local per_epoch = math.ceil(ds:size() / bs)
  if opts.batches then per_epoch = math.min(per_epoch, opts.batches) end
  local total_steps = epochs * per_epoch
  local opt = opts.optimizer
  if type(opt) ~= "userdata" then
    local kind = opt or "sgd"
    if not ml.optim[kind] then error(("fit: unknown optimizer %q (use sgd, adam or adamw)"):format(kind), 2) end
    local params = opts.params or model
    local o = {lr = opts.lr or (kind == "sgd" and 0.05 or 1e-3), weight_decay = opts.weight_decay}
    if kind == "sgd" then o.momentum, o.nesterov = opts.momentum or 0.9, opts.nesterov end
    opt = ml.optim[kind](params, o)
  end
  local base_lr = opt:lr()
  local sched = type(opts.schedule) == "function" and opts.schedule or
    train.schedule{kind = opts.schedule or "constant", warmup = opts.warmup or 0, total = total_steps,
                   min = opts.min_lr or 0}
  local loss_fn = opts.loss or function(logits, y) return ml.cross_entropy(logits, y) end
  local aux_weight = opts.aux_weight or 1
  local cb = opts.callbacks or {}
  local tty = ml.isatty(1) and not opts.quiet
  local history = {}
  local step = opt:steps()
  model:train()
  local interrupted = false
  for epoch = 1, epochs do
    local t0 = ml.clock()
    local seen, correct, loss_sum, nb = 0, 0, 0, 0
    local iter = ds:batches(bs, {shuffle = opts.shuffle ~= false, seed = opts.seed and (opts.seed + epoch),
                                 augment = opts.augment})
    local ok, err = pcall(function()
      for x, y in iter do
        step = step + 1
        opt:lr(base_lr * sched(step))
        opt:zero_grad()
        local logits, _, aux = model:forward(x)
        local loss = loss_fn(logits, y)
        local total = aux and (loss + aux * aux_weight) or loss
        total:backward()
        if opts.clip then ml.clip_grad_norm(opt:params(), opts.clip) end
        opt:step()
        local n = y:size(1)
        local l = loss:item()
        seen, nb = seen + n, nb + 1
        loss_sum = loss_sum + l * n
        correct = correct + logits:detach():argmax(2):eq(y):sum():item()
        local info = {epoch = epoch, epochs = epochs, step = step, batch = nb, done = nb, total = per_epoch,
                      loss = loss_sum / seen, acc = correct / seen, lr = opt:lr(),
                      rate = seen / math.max(1e-9, ml.clock() - t0), aux = aux and aux:item() or nil}
        if cb.on_step then cb.on_step(info) end
        if tty then io.write("\r", progress_line(info), "\27[K") io.flush() end
        if nb >= per_epoch then break end
      end
    end)
    if not ok then
      if tostring(err):find("interrupted", 1, true) then
        interrupted = true
        if not opts.quiet then io.write("\n") print(("training interrupted in epoch %d after %d batches"):format(epoch, nb)) end
      else
        if tty then io.write("\n") end
        error(err, 0)
      end
    end
    local secs = ml.clock() - t0
    local rec = {epoch = epoch, loss = seen > 0 and loss_sum / seen or 0/0, acc = seen > 0 and correct / seen or 0,
                 lr = opt:lr(), seconds = secs, examples_per_s = seen / math.max(secs, 1e-9), batches = nb}
    if opts.eval and not interrupted then
      rec.test_acc, rec.test_loss = train.evaluate(model, opts.eval, {batches = opts.eval_batches})
    end
    history[#history + 1] = rec
    if not opts.quiet then
      local line = progress_line{epoch = epoch, epochs = epochs, done = nb, total = per_epoch, loss = rec.loss,
                                 acc = rec.acc, rate = rec.examples_per_s, lr = rec.lr}
      if rec.test_acc then line = line .. ("  test acc %5.1f%%"):format(100 * rec.test_acc) end
      if tty then io.write("\r", line, "\27[K\n") else print(line) end
    end
    if opts.checkpoint and not interrupted then ml.save(opts.checkpoint, model, {optimizer = opt, epoch = epoch}) end
    if cb.on_epoch then cb.on_epoch(rec) end
    if interrupted then break end
  end
  model:train()
  history.interrupted = interrupted
  history.optimizer = opt
  return history
end

ml.doc(train.schedule, [[
ml.train.schedule{kind = "constant" | "linear" | "cosine" | "step" | "multistep", warmup = 0, total = steps,
                  min = 0, step_size = n, gamma = 0.1, milestones = {...}} -> f(step) -> lr multiplier]])
ml.doc(train.evaluate, "ml.train.evaluate(model, ds, [{batch = 256, batches}]) -> accuracy, mean loss (eval mode, no autograd)")
ml.doc(train.fit, [[
ml.train.fit(model, ds, opts) -> history (one record per epoch: loss, acc, test_acc, lr, seconds, examples_per_s)
  opts: epochs = 1, batch = 128, optimizer = "sgd" | "adam" | "adamw" | an optimizer object, lr, momentum = 0.9,
  nesterov, weight_decay, schedule = "constant" | "cosine" | "linear" | "step", warmup (steps), min_lr,
  aux_weight = 1 (routers' auxiliary losses), eval = test dataset, eval_batches, checkpoint = path (saved each
  epoch), batches = max per epoch, quiet, seed, augment = {crop = 4, flip = true}, clip = max grad norm,
  params = tensors to train (e.g. model:parameters("router")), loss = fn(logits, y),
  callbacks = {on_step = fn(info), on_epoch = fn(record)}.
  A progress bar redraws in place on a terminal. Ctrl-C stops cleanly; the model stays usable.
  e.g. ml.train.fit(model, data.train, {epochs = 3, lr = 0.05, eval = data.test})]])

return true
