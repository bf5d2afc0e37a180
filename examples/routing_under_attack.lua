-- routing_under_attack.lua -- what an attack does to the routing of a V-MoE,
-- beside a dense ViT, on the bundled MNIST subset:
--   1. train a dense vit and a vmoe briefly; their accuracy, FLOPs and
--      parameters (total and active per image);
--   2. the robustness curve under PGD: accuracy, robust accuracy, and for the
--      V-MoE the rate of routing changes per MoE layer beside the fraction of
--      tokens whose certified routing radius covers that eps, and the routing
--      change under Gaussian noise of the same size;
--   3. the certified routing radius per layer (docs/ANALYSIS.md);
--   4. the four-way dissection of one attack (router attacked x prediction
--      fooled) and the expert x class matrix, clean and adversarial;
--   5. the rows written as CSV.
--
--   ./build/moelab examples/routing_under_attack.lua            (a few minutes on 2 cores)
--   ./build/moelab examples/routing_under_attack.lua --quick    (well under a minute, for tests)
--   --out file.csv writes the curve there (default routing_under_attack.csv; --quick: a temporary file)
local ml = require "moelab"

local quick, out = false, nil
for i, a in ipairs(arg or {}) do
  if a == "--quick" then quick = true end
  if a == "--out" then out = arg[i + 1] end
end
out = out or (quick and (os.tmpname() .. ".csv") or "routing_under_attack.csv")

ml.seed(0)
local data = ml.data.mnist("data/mnist-10k")
local train = quick and data.train:subset(1, 2000) or data.train
local test = data.test

------------------------------------------------------------------ 1. two models
local size = quick and {dim = 32, depth = 2, heads = 2, mlp = 64, patch = 7} or {dim = 64, depth = 4, heads = 4, mlp = 128}
local function config(extra)
  local c = {}
  for k, v in pairs(size) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end
local models = {
  vit = ml.nn.vit(config()),
  -- a MoE in every block (quick) or every second block; capacity 2: tokens are rarely dropped
  vmoe = ml.nn.vmoe(config{experts = 4, k = 2, moe_every = quick and 1 or 2, capacity_factor = 2}),
}
local names = {"vit", "vmoe"}
local x, y = test:batch(1, quick and 64 or 256)
for _, name in ipairs(names) do
  local m = models[name]
  ml.seed(1)
  local h = ml.train.fit(m, train, {epochs = quick and 1 or 3, batch = quick and 32 or 64, optimizer = "adam",
                                    lr = 3e-3, schedule = "cosine", seed = 2, quiet = true})
  local acc = ml.metrics.accuracy(m, test, {n = quick and 500 or 2000, quiet = true})[1]
  local f = ml.metrics.flops(m, x)[1]
  print(("%-5s train acc %5.1f%%  test acc %5.1f%%  %7.3f MFLOPs per image  %d parameters, %d active (%.0f%%)"):format(
    name, 100 * h[#h].acc, 100 * acc.accuracy, f.flops_per_input / 1e6, f.params, f.active_params,
    100 * f.active_fraction))
end

------------------------------------------------------------------ 2. the robustness curve
-- small eps too: below its certified radius a token's routing provably holds
local eps = quick and {0, 2e-4, 0.01, 0.05} or {0, 1e-4, 5e-4, 2e-3, 0.01, 0.02, 0.05, 0.1}
local rows = ml.metrics.robustness(nil, test, {models = models, eps = eps, attack = "pgd", steps = quick and 5 or 20,
                                               n = quick and 64 or 256, noise = true, seed = 3})
local layers = {}
for k in pairs(rows[#rows]) do
  local layer = k:match("^rc:(.*)")
  if layer then layers[#layers + 1] = layer end
end
table.sort(layers)
print("\nPGD (l_inf) robustness curve: routing change (rc), certified fraction (cert), routing change under noise")
local head = ("%-5s %6s %9s %9s"):format("model", "eps", "accuracy", "robust")
for _, layer in ipairs(layers) do head = head .. ("  %14s %5s %5s"):format("rc:" .. layer, "cert", "noise") end
print(head)
for _, r in ipairs(rows) do
  local line = ("%-5s %6.4f %8.1f%% %8.1f%%"):format(r.model, r.eps, 100 * r.accuracy, 100 * r.robust_accuracy)
  for _, layer in ipairs(layers) do
    if r["rc:" .. layer] then
      line = line .. ("  %14.3f %5.2f %5.3f"):format(r["rc:" .. layer], r["cert:" .. layer], r["rc_noise:" .. layer])
    end
  end
  print(line)
end
if ml.plot then print(ml.plot.lines(rows, {x = "eps", y = "robust_accuracy", by = "model", height = 10})) end

------------------------------------------------------------------ 3. the certified routing radius
local vmoe = models.vmoe
local radius = ml.metrics.routing_radius(vmoe, x, {norm = "linf"})
print("\nCertified l_inf routing radius of the V-MoE's tokens (routing provably unchanged below it):")
for _, r in ipairs(radius) do
  print(("  %s: median %.3g, p10 %.3g, max %.3g (router space, l2: median %.3g)"):format(r.layer, r.p50, r.p10, r.max,
    r.router_p50))
end

------------------------------------------------------------------ 4. dissection and expert x class matrix
local e = 0.05
local xa = ml.attack.pgd(vmoe, x, y, {eps = e, steps = quick and 5 or 20, seed = 3, quiet = true})
local d = ml.metrics.dissection(vmoe, x, y, xa)[1]
print(("\nDissection of PGD at eps %.2f on %d images (AdvMoE): routing kept & right %d, changed & right %d, " ..
       "kept & fooled %d, changed & fooled %d; router robustness %.1f%%, MoE robustness %.1f%%"):format(e, d.n,
  d.kept_right, d.changed_right, d.kept_fooled, d.changed_fooled, 100 * d.router_robustness, 100 * d.moe_robustness))

local load = ml.metrics.expert_load(vmoe, x, {y = y, x_adv = xa})
local layer = layers[#layers]
for _, set in ipairs({"clean", "adversarial"}) do
  local m = load.matrix[set][layer]
  print(("\nExpert x class matrix of %s (%s): kept choices of the tokens of each class"):format(layer, set))
  local line = "  expert"
  for c = 1, m:size(2) do line = line .. ("%6d"):format(c - 1) end
  print(line .. "   (digit)")
  for ex = 1, m:size(1) do
    line = ("  %6d"):format(ex)
    for c = 1, m:size(2) do line = line .. ("%6d"):format(m[ex][c]) end
    print(line)
  end
end

------------------------------------------------------------------ 5. results
ml.results.write(rows, out)
print(("\n%d rows written to %s (model, eps, accuracy, robust_accuracy, rc:<layer>, cert:<layer>, seed, config_hash, ...)")
  :format(#rows, out))
