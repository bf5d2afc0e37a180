-- attack_tour.lua -- the attacks of ml.attack on a dense ViT and its V-MoE:
--   1. train a small dense `vit` and a `vmoe` (every other MLP a top-2 MoE of
--      4 experts) briefly on the bundled MNIST subset;
--   2. ask the attack doctor whether the evaluation can be trusted;
--   3. attack both with FGSM, PGD, APGD and AutoAttack (l_inf) and print the
--      robust accuracies side by side, with what each attack cost;
--   4. show how much of the V-MoE's routing the PGD perturbation changes;
--   5. attack the parts of the V-MoE with PGD: the whole model (RA), only the
--      routers (RA-R: routing objectives), only the experts (RA-E: routing frozen
--      to the clean selection), steer-then-break, and the straight-through
--      gradient of the top-K selection.
--
--   ./build/moelab examples/attack_tour.lua            (a few minutes on 2 cores)
--   ./build/moelab examples/attack_tour.lua --quick    (about half a minute, for tests)
local ml = require "moelab"

local quick = false
for _, a in ipairs(arg or {}) do if a == "--quick" then quick = true end end

ml.seed(0)
local data = ml.data.mnist("data/mnist-10k")
local train = quick and data.train:subset(1, 2000) or data.train
local n_test = quick and 64 or 500
local x, y = data.test:batch(1, n_test)
local eps = 0.1 -- l_inf, on pixels in [0, 1]

------------------------------------------------------------------ 1. two small transformers
local shape = {dim = 32, depth = 2, heads = 2, mlp = 64, patch = 7}
local models = {
  {name = "ViT", model = ml.nn.vit(shape)},
  {name = "V-MoE", model = ml.nn.vmoe{dim = 32, depth = 2, heads = 2, mlp = 64, patch = 7, experts = 4, k = 2,
                                      moe_every = 2}},
}
for _, m in ipairs(models) do
  ml.seed(1)
  local h = ml.train.fit(m.model, train, {epochs = quick and 2 or 4, batch = 64, optimizer = "adam", lr = 3e-3,
                                          schedule = "cosine", seed = 2, quiet = true})
  m.model:eval()
  local p, active = m.model:num_params()
  print(("%-6s %6d parameters (%d active per image), train accuracy %.1f%%"):format(m.name, p, active,
    100 * h[#h].acc))
end

------------------------------------------------------------------ 2. the doctor
-- It flags what makes robustness numbers lie: a random model, probabilities instead of logits,
-- zero gradients, a model left in training mode, eps = 0 or 1 not behaving, Square beating the
-- gradient attacks, robust accuracy growing with eps.
local check_n = quick and 32 or 100
for _, m in ipairs(models) do
  local d = ml.attack.check(m.model, x:narrow(1, 1, check_n), y:narrow(1, 1, check_n),
    {eps = eps, steps = quick and 5 or 50, queries = quick and 50 or 500})
  print(("%-6s %s"):format(m.name, tostring(d)))
end

------------------------------------------------------------------ 3. the attacks
local attacks = {
  {"FGSM", "fgsm", {eps = eps}},
  {"PGD-20", "pgd", {eps = eps, steps = 20, alpha = 2.5 * eps / 20, random_start = true}},   -- Madry's step
  {"APGD-CE", "apgd", {eps = eps, steps = quick and 10 or 100}},
  {"APGD-DLR", "apgd", {eps = eps, steps = quick and 10 or 100, objective = "dlr"}},
  {"AutoAttack", "autoattack", {eps = eps, quiet = true, steps = quick and 10 or nil, queries = quick and 100 or nil}},
}
print(("\nl_inf eps = %.2f on %d test images%s"):format(eps, n_test, quick and " (quick: fewer steps)" or ""))
print(("%-11s %9s %9s   %s"):format("attack", models[1].name, models[2].name, "cost (ViT): forwards, backwards, seconds"))
local clean = {}
for _, m in ipairs(models) do
  clean[#clean + 1] = ml.no_grad(function() return m.model(x):argmax(2):eq(y):float():mean():item() end)
end
print(("%-11s %8.1f%% %8.1f%%"):format("clean", 100 * clean[1], 100 * clean[2]))
local pgd_rep
for _, a in ipairs(attacks) do
  local acc, cost = {}, nil
  for i, m in ipairs(models) do
    local xa, rep = ml.attack.run(a[2], m.model, x, y, a[3])
    acc[i] = rep.robust_accuracy
    if i == 1 then cost = rep.cost end
    if i == 2 and a[1] == "PGD-20" then pgd_rep = rep end
  end
  print(("%-11s %8.1f%% %8.1f%%   %d, %d, %.1f s"):format(a[1], 100 * acc[1], 100 * acc[2], cost.forwards,
    cost.backwards, cost.seconds))
end

------------------------------------------------------------------ 4. routing under attack
-- The report compares the routing of x_adv with the clean routing (the trace of each forward says which experts
-- each token went to); PGD moves many of them.
local moe = models[2].model
for _, l in ipairs(pgd_rep.routing) do
  print(("V-MoE %s: %.1f%% of the tokens go to another set of experts under PGD-20"):format(l.layer,
    100 * l.change))
end

------------------------------------------------------------------ 5. the parts of the V-MoE
-- target = "router" changes only the routing (its objective reads the router logits); "experts" freezes the
-- routing to the clean selection, so only the pathway is attacked; "steer_then_break" first pushes the tokens
-- towards each layer's weakest expert, then attacks the prediction.
local pgd = attacks[2][3] -- PGD-20, as above
local parts = {
  {"RA    (whole model)", {}},
  {"RA-R  (routing_kl)", {target = "router"}},
  {"RA-R  (routing_margin)", {target = "router", objective = "routing_margin"}},
  {"RA-E  (experts only)", {target = "experts"}},
  {"steer_then_break", {target = "steer_then_break"}},
  {"RA, straight-through", {selection_grad = "ste"}},
}
print(("\nthe parts of the V-MoE, PGD-20 (as above) at eps = %.2f"):format(eps))
print(("%-24s %8s  %16s  %18s"):format("attack", "robust", "routing changed", "prediction changed"))
for _, p in ipairs(parts) do
  local o = {}
  for k, v in pairs(pgd) do o[k] = v end
  for k, v in pairs(p[2]) do o[k] = v end
  local _, rep = ml.attack.pgd(moe, x, y, o)
  local items = 0
  for _, l in ipairs(rep.routing) do items = items + l.change / #rep.routing end
  print(("%-24s %7.1f%%  %5.1f%% of tokens  %10d of %d"):format(p[1], 100 * rep.robust_accuracy, 100 * items,
    rep.prediction_changed, rep.n))
end
