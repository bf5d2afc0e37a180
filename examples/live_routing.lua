-- live_routing.lua -- an attack on a V-MoE's routing, watched live:
--   1. train a small vmoe on the bundled MNIST subset (a few quick epochs);
--   2. attack test images with PGD under ml.watch: on a terminal a dashboard
--      redraws in place (loss, success rate, expert load, routing change per
--      MoE layer), otherwise a line per step; then ml.inspect.routing shows
--      which expert each token of one image went to, clean and adversarial;
--   3. robust accuracy and routing change per layer against eps, as terminal plots;
--   4. both plots, the routing maps and an adversarial-example grid written as PNG.
--
--   ./build/moelab examples/live_routing.lua               (about a minute on 2 cores)
--   ./build/moelab examples/live_routing.lua --quick       (a few seconds, for tests)
--   --out DIR   the folder for the PNGs (default ./out; --quick: a temporary folder)
local ml = require "moelab"

local quick, dir = false, nil
for i, a in ipairs(arg or {}) do
  if a == "--quick" then quick = true end
  if a == "--out" then dir = arg[i + 1] end
end
if not dir then
  if quick then
    dir = os.tmpname()
    os.remove(dir)
  else
    dir = "out"
  end
end
assert(os.execute(("mkdir -p '%s'"):format(dir:gsub("'", "'\\''"))), "cannot make the folder " .. dir)

ml.seed(0)
local data = ml.data.mnist("data/mnist-10k")
local train = quick and data.train:subset(1, 1000) or data.train
local test = data.test

------------------------------------------------------------------ 1. a small V-MoE
-- patch 7: a 4x4 token map per image (plus the class token); a MoE in both blocks
local model = ml.nn.vmoe{input = {1, 28, 28}, patch = 7, dim = 32, depth = 2, heads = 2, mlp = 64, experts = 4, k = 2,
                         moe_every = 1, capacity_factor = 2}
ml.seed(1)
local h = ml.train.fit(model, train, {epochs = quick and 1 or 3, batch = 32, optimizer = "adam", lr = 3e-3,
                                      schedule = "cosine", seed = 2, quiet = true})
local acc = ml.metrics.accuracy(model, test, {n = quick and 200 or 1000, quiet = true})[1]
print(("vmoe: train acc %.1f%%, test acc %.1f%%"):format(100 * h[#h].acc, 100 * acc.accuracy))

------------------------------------------------------------------ 2. PGD, watched
local x, y = test:batch(1, quick and 16 or 64)
print(("\nPGD on %d test images under ml.watch:"):format(x:size(1)))
local xa = ml.watch(model, x, y, {attack = "pgd", eps = 0.1, steps = quick and 5 or 20, seed = 3,
                                          every = quick and 1 or 5})

local view = ml.inspect.routing(model, x, xa, {n = 1, labels = y})
print("\n" .. tostring(view))

------------------------------------------------------------------ 3. curves against eps
local eps = quick and {0, 0.05, 0.1} or {0, 0.025, 0.05, 0.075, 0.1, 0.15}
local rows = ml.metrics.robustness(model, test, {eps = eps, attack = "pgd", steps = quick and 5 or 10,
                                                 n = quick and 32 or 256, seed = 3, radius = false, quiet = true})
local rc = {} -- the fields rc:<layer>, one per MoE layer
for k in pairs(rows[#rows]) do if k:match("^rc:") then rc[#rc + 1] = k end end
table.sort(rc)
print("\nrobustness (PGD, l_inf):")
for _, r in ipairs(rows) do
  local line = ("eps %.3f  accuracy %5.1f%%  robust %5.1f%%"):format(r.eps, 100 * r.accuracy, 100 * r.robust_accuracy)
  for _, f in ipairs(rc) do line = line .. ("  %s %.3f"):format(f, r[f]) end
  print(line)
end
local size = {width = 64, height = 14}
local p_acc = ml.plot.lines(rows, {x = "eps", y = "robust_accuracy", title = "robust accuracy (PGD)", ylim = {0, 1},
                                   width = size.width, height = size.height})
local p_rc = ml.plot.lines(rows, {x = "eps", y = rc, title = "routing change per MoE layer", ylim = {0, 1},
                                  width = size.width, height = size.height})
print()
p_acc:show()
print()
p_rc:show()

------------------------------------------------------------------ 4. pictures
local n = math.min(8, x:size(1))
local xs, xas = x:narrow(1, 1, n), xa:narrow(1, 1, n)
local pred = ml.no_grad(function() return model(xas) end)
local files = {
  robust = dir .. "/robust_accuracy.png",
  rc = dir .. "/routing_change.png",
  routing = dir .. "/routing_maps.png",
  grid = dir .. "/adversarial_examples.png",
}
p_acc:png(files.robust)
p_rc:png(files.rc)
view:png(files.routing)
ml.image.grid{clean = xs, adversarial = xas, labels = y:narrow(1, 1, n), predictions = pred,
              classes = test:classes(), path = files.grid}
print(("\nwrote %s, %s, %s and %s"):format(files.robust, files.rc, files.routing, files.grid))
