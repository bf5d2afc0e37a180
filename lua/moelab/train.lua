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

------------------------------------------------------------------ arguments
local options = require "moelab.options"
local kind, check_options = options.kind, options.check

local function check_model(fn, model, level)
  if kind(model) ~= "Module" then
    error(("%s: the first argument must be a model (a Module, e.g. ml.nn.mlp{}), got a %s"):format(fn, kind(model)),
      level + 1)
  end
end

local function check_dataset(fn, ds, what, level)
  local k = kind(ds)
  if k == "Tensor" then
    error(("%s: %s must be a dataset, got a tensor; make one from tensors with ml.data.from_tensors(x, y)")
      :format(fn, what), level + 1)
  end
  local ok = (type(ds) == "table" or type(ds) == "userdata") and
    pcall(function() assert(type(ds.size) == "function" and type(ds.batches) == "function") end)
  if not ok then
    error(("%s: %s must be a dataset (ml.data.mnist(), ml.data.from_tensors(x, y), ...), got a %s")
      :format(fn, what, k), level + 1)
  end
end

local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

------------------------------------------------------------------ evaluation
local evaluate_options = {batch = true, batches = true, quiet = true}

-- ml.train.evaluate(model, ds, {batch = 256, batches = nil, quiet}) -> accuracy, mean loss, info
-- Runs in eval mode without autograd; the model's mode is restored afterwards.
-- Ctrl-C stops it: the figures so far come back with info.interrupted = true.
function train.evaluate(model, ds, opts)
  check_model("evaluate", model, 2)
  check_dataset("evaluate", ds, "the second argument", 2)
  opts = check_options("evaluate", opts, evaluate_options, 2)
  local bs = opts.batch or 256
  local per_pass = math.ceil(ds:size() / bs)
  if opts.batches then per_pass = math.min(per_pass, opts.batches) end
  local was = model:is_training()
  model:eval()
  local correct, total, loss_sum, nb = 0, 0, 0, 0
  local bar = ml.progress{total = per_pass, label = "eval", unit = "batch", quiet = opts.quiet, transient = true}
  local ok, stopped = pcall(ml.interruptible, ml.no_grad, function()
    for x, y in ds:batches(bs) do
      local logits = model(x)
      loss_sum = loss_sum + ml.cross_entropy(logits, y, {reduction = "sum"}):item()
      correct = correct + logits:argmax(2):eq(y):sum():item()
      total = total + y:size(1)
      nb = nb + 1
      bar:update(nb)
      if nb >= per_pass then break end
    end
  end)
  model:train(was)
  if not ok then error(stopped, 0) end
  bar:finish()
  local info = {examples = total, batches = nb, interrupted = stopped}
  if stopped and not opts.quiet then
    print(("evaluation interrupted after %d of %d batches (%d examples)"):format(nb, per_pass, total))
  end
  if total == 0 then return 0, 0, info end
  return correct / total, loss_sum / total, info
end

------------------------------------------------------------------ fit
local fit_options = {
  epochs = true, batch = true, lr = true, optimizer = true, momentum = true, nesterov = true,
  weight_decay = true, schedule = true, warmup = true, min_lr = true, aux_weight = true, eval = true,
  checkpoint = true, batches = true, quiet = true, seed = true, augment = true, clip = true,
  callbacks = true, loss = true, params = true, eval_batches = true, shuffle = true, nan = true,
}
local nan_policies = {stop = true, skip = true, continue = true}

-- The optimizer fit uses: the one given, or one built from the options.
local function make_optimizer(model, opts)
  local opt = opts.optimizer
  if type(opt) == "userdata" then return opt end
  local kind_name = opt or "sgd"
  if type(kind_name) ~= "string" or not ml.optim[kind_name] then
    error(("fit: unknown optimizer %q (use sgd, adam or adamw)"):format(tostring(kind_name)), 3)
  end
  local o = {lr = opts.lr or (kind_name == "sgd" and 0.05 or 1e-3), weight_decay = opts.weight_decay}
  if kind_name == "sgd" then o.momentum, o.nesterov = opts.momentum or 0.9, opts.nesterov end
  return ml.optim[kind_name](opts.params or model, o)
end

local function epoch_text(r)
  local t = ("loss %.4f  acc %5.1f%%  lr %.3g"):format(r.loss, 100 * r.acc, r.lr)
  if r.rate then t = t .. ("  %.0f ex/s"):format(r.rate) end
  if r.test_acc then t = t .. ("  test acc %5.1f%%"):format(100 * r.test_acc) end
  return t
end

-- ml.train.fit(model, train_ds, opts) -> history (see the help text below)
function train.fit(model, ds, opts, extra)
  check_model("fit", model, 2)
  check_dataset("fit", ds, "the second argument", 2)
  if extra ~= nil then
    error("fit: takes (model, dataset, options); for tensors x, y use ml.train.fit(model, ml.data.from_tensors(x, y), {...})", 2)
  end
  opts = check_options("fit", opts, fit_options, 2)
  if opts.eval ~= nil then check_dataset("fit", opts.eval, "the eval option", 2) end
  local nan_policy = opts.nan or "stop"
  if not nan_policies[nan_policy] then
    error(("fit: nan must be \"stop\", \"skip\" or \"continue\", got %s"):format(tostring(nan_policy)), 2)
  end
  local epochs, bs = opts.epochs or 1, opts.batch or 128
  local per_epoch = math.ceil(ds:size() / bs)
  if opts.batches then per_epoch = math.min(per_epoch, opts.batches) end
  local total_steps = epochs * per_epoch
  local opt = make_optimizer(model, opts)
  local base_lr = opt:lr()
  local sched = type(opts.schedule) == "function" and opts.schedule or
    train.schedule{kind = opts.schedule or "constant", warmup = opts.warmup or 0, total = total_steps,
                   min = opts.min_lr or 0}
  local loss_fn = opts.loss or function(logits, y) return ml.cross_entropy(logits, y) end
  local aux_weight = opts.aux_weight or 1
  local cb = opts.callbacks or {}
  local history = {}
  local step = opt:steps()
  local stop -- why training ended early: "interrupted" or "nan"
  model:train()
  for epoch = 1, epochs do
    local t0 = ml.clock()
    local seen, correct, loss_sum, nb, skipped = 0, 0, 0, 0, 0
    local bar = ml.progress{total = per_epoch, label = ("epoch %d/%d"):format(epoch, epochs), unit = "batch",
                            quiet = opts.quiet}
    local function running()
      return {loss = seen > 0 and loss_sum / seen or 0 / 0, acc = seen > 0 and correct / seen or 0, lr = opt:lr(),
              rate = seen / math.max(1e-9, ml.clock() - t0)}
    end
    local iter = ds:batches(bs, {shuffle = opts.shuffle ~= false, seed = opts.seed and (opts.seed + epoch),
                                 augment = opts.augment})
    local interrupted = ml.interruptible(function()
      for x, y in iter do
        step = step + 1
        opt:lr(base_lr * sched(step))
        opt:zero_grad()
        local logits, _, aux = model:forward(x)
        local loss = loss_fn(logits, y)
        local l = loss:item()
        local bad = not finite(l)
        if not bad and aux then bad = not finite(aux:item()) end
        if bad and nan_policy ~= "continue" then
          if nan_policy == "stop" then
            stop = "nan"
            history.nan = {epoch = epoch, step = step, batch = nb + 1, loss = l}
            return
          end
          skipped = skipped + 1
        else
          local total = aux and (loss + aux * aux_weight) or loss
          total:backward()
          if opts.clip then
            local norm = ml.clip_grad_norm(opt:params(), opts.clip)
            if not finite(norm) and nan_policy == "stop" then
              stop = "nan"
              history.nan = {epoch = epoch, step = step, batch = nb + 1, loss = l, grad_norm = norm}
              return
            end
          end
          opt:step()
          local n = y:size(1)
          seen = seen + n
          loss_sum = loss_sum + l * n
          correct = correct + logits:detach():argmax(2):eq(y):sum():item()
        end
        nb = nb + 1
        if cb.on_step then
          local info = running()
          info.epoch, info.epochs, info.step, info.batch, info.done, info.total = epoch, epochs, step, nb, nb, per_epoch
          info.aux = aux and aux:item() or nil
          cb.on_step(info)
        end
        bar:update(nb, function() return epoch_text(running()) end)
        if nb >= per_epoch then break end
      end
    end)
    if interrupted then stop = "interrupted" end
    local secs = ml.clock() - t0
    local rec = {epoch = epoch, loss = seen > 0 and loss_sum / seen or 0 / 0, acc = seen > 0 and correct / seen or 0,
                 lr = opt:lr(), seconds = secs, examples_per_s = seen / math.max(secs, 1e-9), batches = nb}
    if skipped > 0 then rec.skipped = skipped end
    if opts.eval and not stop then
      local acc, loss, info = train.evaluate(model, opts.eval, {batches = opts.eval_batches, quiet = opts.quiet})
      if info.interrupted then stop = "interrupted" else rec.test_acc, rec.test_loss = acc, loss end
    end
    history[#history + 1] = rec
    bar.done = nb
    bar:finish(epoch_text{loss = rec.loss, acc = rec.acc, lr = rec.lr, rate = rec.examples_per_s,
                          test_acc = rec.test_acc})
    if not opts.quiet then
      if stop == "interrupted" then
        print(("training interrupted in epoch %d after %d batches"):format(epoch, nb))
      elseif stop == "nan" then
        local n = history.nan
        local what = n.grad_norm and "the gradient norm is not finite" or
          ("the loss is %s"):format(n.loss ~= n.loss and "NaN" or n.loss > 0 and "inf" or "-inf")
        print(("training stopped: %s at epoch %d, step %d (batch %d); the weights are those of the step before "
               .. "(nan = \"skip\" or \"continue\" to go on)"):format(what, n.epoch, n.step, n.batch))
      end
    end
    if opts.checkpoint and not stop then
      if ml.interruptible(ml.save, opts.checkpoint, model, {optimizer = opt, epoch = epoch}) then stop = "interrupted" end
    end
    if cb.on_epoch then cb.on_epoch(rec) end
    if stop then break end
  end
  model:train()
  history.interrupted = stop == "interrupted"
  history.stopped = stop
  history.optimizer = opt
  return history
end

ml.doc(train.schedule, [[
ml.train.schedule{kind = "constant" | "linear" | "cosine" | "step" | "multistep", warmup = 0, total = steps,
                  min = 0, step_size = n, gamma = 0.1, milestones = {...}} -> f(step) -> lr multiplier]])
ml.doc(train.evaluate, [[
ml.train.evaluate(model, ds, [{batch = 256, batches, quiet}]) -> accuracy, mean loss, info
  In eval mode without autograd (the model's mode is restored). A progress bar shows on a terminal.
  Ctrl-C stops it and returns the figures so far: info = {examples, batches, interrupted}.]])
ml.doc(train.fit, [[
ml.train.fit(model, ds, opts) -> history (one record per epoch: loss, acc, test_acc, lr, seconds, examples_per_s)
  opts: epochs = 1, batch = 128, optimizer = "sgd" | "adam" | "adamw" | an optimizer object, lr, momentum = 0.9,
  nesterov, weight_decay, schedule = "constant" | "cosine" | "linear" | "step", warmup (steps), min_lr,
  aux_weight = 1 (routers' auxiliary losses), eval = test dataset, eval_batches, checkpoint = path (saved each
  epoch), batches = max per epoch, quiet, seed, augment = {crop = 4, flip = true}, clip = max grad norm,
  params = tensors to train (e.g. model:parameters("router")), loss = fn(logits, y),
  callbacks = {on_step = fn(info), on_epoch = fn(record)}, nan = "stop" | "skip" | "continue".
  A progress bar redraws in place on a terminal (plain periodic lines otherwise; none with quiet).
  Ctrl-C (or ml.interrupt() in a callback) stops at once, also during evaluation or the checkpoint:
  the step under way is dropped, the model stays usable, and the history so far is returned with
  history.interrupted = true. A NaN or infinite loss (or gradient norm, with clip) stops training before
  the update (nan = "stop", the default) with a message naming epoch and step and history.nan =
  {epoch, step, batch, loss}; nan = "skip" skips such batches (counted in record.skipped); "continue"
  applies them anyway. history.stopped is "interrupted", "nan" or nil.
  e.g. ml.train.fit(model, data.train, {epochs = 3, lr = 0.05, eval = data.test})]])

return true
