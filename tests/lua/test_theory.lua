-- The theory toolkit: least squares with linear experts, Theorem 1's
-- distances and bound, Theorem 2, Lemma 1 for smooth MoEs, utilities.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")
local th = ml.theory

T.test("pseudo-inverse against a hand-computed case", function()
  local P = th.pinv(ml.tensor({{1, 2}, {3, 4}, {5, 6}}))
  T.close(P, ml.tensor({{-4 / 3, -1 / 3, 2 / 3}, {13 / 12, 1 / 3, -5 / 12}}), 1e-5, 1e-6, "pinv of a 3x2 matrix")
  local R = th.pinv(ml.tensor({{1, 1}, {1, 1}}))         -- rank 1: (1/4) ones
  T.close(R, ml.full({2, 2}, 0.25), 1e-6, 1e-7, "rank-deficient pseudo-inverse")
  T.near(th.spectral_norm(ml.tensor({{3, 0}, {0, 4}})), 4, 1e-12, "spectral norm")
end)

T.test("orthogonal subspaces: ||w*||^2 = sum ||w_i*||^2, eps1 = eps2 = 0", function()
  local X, y, a = th.subspace_data{n = 40, dim = 30, sub_dim = 5, experts = 4, alignment = 0, seed = 3}
  local t = th.theorem1(X, y, a)
  local s = 0
  for _, l in ipairs(t.expert_lipschitz) do s = s + l * l end
  T.near(t.lhs, s, 1e-5, "Pythagoras over the experts")
  T.check(t.eps1 < 1e-5 and t.eps2 < 1e-5, ("eps1 %.2g, eps2 %.2g"):format(t.eps1, t.eps2))
  T.near(t.rhs, t.lhs, 1e-4, "the bound is tight")
  T.check(t.holds, "Theorem 1 holds")
  for e = 1, 4 do T.check(t.dims[e] == 5, "each expert owns its 5 directions") end
  -- the sqrt(E) law for balanced experts
  local maxl = math.max(table.unpack(t.expert_lipschitz))
  T.check(t.dense_lipschitz / maxl > 1.2, "the dense model's constant exceeds every expert's")
end)

T.test("X_1 = -X_2, y_1 = y_2: w* = 0", function()
  local X, y, a = th.subspace_data{n = 30, dim = 12, sub_dim = 3, experts = 2, mirror = true, seed = 4}
  local r = th.linear_experts(X, y, a)
  T.check(r.dense_lipschitz < 1e-5, ("dense solution vanishes: %.3g"):format(r.dense_lipschitz))
  T.check(r.expert_lipschitz[1] > 0.1 and math.abs(r.expert_lipschitz[1] - r.expert_lipschitz[2]) < 1e-4,
    "each expert fits its half (the same norm)")
end)

T.test("Theorem 1 holds on 100 random problems of mixed alignment", function()
  local holds, informative = 0, 0
  math.randomseed(11)
  for k = 1, 100 do
    local E = math.random(2, 4)
    local d = math.random(1, 3)
    local X, y, a = th.subspace_data{n = math.random(5, 20), dim = d * (E + 1) + math.random(0, 3), sub_dim = d,
      experts = E, alignment = math.random() ^ 3, noise = math.random() * 0.1, seed = k}
    local t = th.theorem1(X, y, a)
    if t.holds and t.lhs >= t.rhs * (1 - 1e-6) then holds = holds + 1 end
    if t.rhs > 0 then informative = informative + 1 end
  end
  T.check(holds == 100, ("holds on %d of 100"):format(holds))
  T.check(informative > 10, ("the bound is informative (rhs > 0) on %d problems"):format(informative))
end)

T.test("Theorem 2", function()
  local X, y, a, betas = th.subspace_data{n = 40, dim = 20, sub_dim = 4, experts = 4, alignment = 0, noise = 0.01, seed = 8}
  local r = th.theorem2(X, y, a, {gamma = 1, betas = betas})
  T.check(r.holds and r.sufficient, "gamma = 1 holds for orthogonal subspaces")
  for e = 1, 4 do T.check(r.eta[e] < 0.2 and r.Delta[e] < 1e-4, "small residuals and differences") end
  T.check(r.ratio <= 1 and r.ratio > 1 / 4 - 0.2, ("max ||w_i||^2 / ||w||^2 = %.3f near 1/E"):format(r.ratio))
  local strict = th.theorem2(X, y, a, {gamma = 0.01})
  T.check(not strict.holds and not strict.sufficient, "gamma too small fails")
  T.raises(function() th.theorem2(X, y, a, {gamma = 0}) end, "gamma must be positive")
end)

T.test("Lemma 1: the bound is never below the exact gradient norm", function()
  ml.seed(5)
  local D = 6
  -- linear experts, similar and very different
  for _, scale in ipairs{0.1, 5} do
    local base = ml.randn(D)
    local moe = th.smooth_moe{router = ml.randn(3, D) * 2, experts = {base, base + ml.randn(D) * scale, base - ml.randn(D) * scale}}
    local r = moe:lemma1(ml.randn(1000, D) * 2)
    local gap = (r.bound - r.exact):min():item()
    T.check(gap >= -1e-4, ("bound - exact >= 0 on 1000 points (min %.3g, scale %g)"):format(gap, scale))
  end
  -- nonlinear experts: small MLPs with a Lipschitz bound from spectral norms
  local experts, L = {}, {}
  for i = 1, 2 do
    local W1, W2 = ml.randn(8, D), ml.randn(1, 8)
    experts[i] = function(x) return ml.matmul(ml.matmul(x, W1:t()):tanh(), W2:t()):reshape(-1) end
    L[i] = th.spectral_norm(W1) * th.spectral_norm(W2)
  end
  local moe = th.smooth_moe{router = ml.randn(2, D), experts = experts, lipschitz = L}
  local x = ml.randn(1000, D)
  local r = moe:lemma1(x)
  T.check((r.bound - r.exact):min():item() >= -1e-4, "MLP experts: bound >= exact on 1000 points")
  -- exact gradient against finite differences for one point
  local x1 = x:narrow(1, 1, 1)
  local ok = ml.gradcheck(function(a) return moe:forward(a) end, x1)
  T.check(ok, "the smooth MoE's autograd gradient is right")
  -- at the boundary of a 2-expert router the router term is 1/4 |f1 - f2| ||s1 - s2||
  local S = ml.tensor({{1, 0, 0, 0, 0, 0}, {-1, 0, 0, 0, 0, 0}})
  local two = th.smooth_moe{router = S, experts = {ml.randn(D), ml.randn(D)}}
  local xb = ml.randn(5, D)
  xb:select(2, 1):fill(0) -- p = 1/2 exactly
  local rb = two:lemma1(xb)
  T.close(rb.router_term, two:boundary_term(xb), 1e-5, 1e-6, "boundary form at p = 1/2")
  local sup = moe:sup(x)
  T.check(sup.bound >= sup.exact, "sup estimate")
end)

T.test("overlap geometry: the gap closes as sqrt(1 + (E - 1)(1 - alignment))", function()
  for _, al in ipairs{0, 0.25, 0.5, 1} do
    local X, y, a = th.subspace_data{n = 30, dim = 20, sub_dim = 4, experts = 4, alignment = al, mode = "overlap",
      shared = true, balanced = true, seed = 6}
    local r = th.linear_experts(X, y, a)
    local k = math.floor(al * 4 + 0.5)
    for e = 1, 4 do T.near(r.expert_lipschitz[e], 2, 1e-4, "every expert's part of the target has norm sqrt(d)") end
    T.near(r.dense_lipschitz / 2, math.sqrt((k + 4 * (4 - k)) / 4), 1e-4, ("ratio at alignment %g"):format(al))
    T.check(r.rank == k + 4 * (4 - k), "rank = the union's dimension")
  end
  T.raises(function() th.subspace_data{mode = "twist"} end, "unknown mode 'twist' (rotate or overlap)")
end)

T.test("local Lipschitz ratios found by gradient ascent", function()
  ml.seed(2)
  local W = ml.randn(5, 8)
  local L = th.spectral_norm(W)
  local r = th.local_lipschitz(function(x) return ml.matmul(x, W:t()) end, ml.randn(20, 8), {steps = 30})
  T.check(r.n == 20 and r.max <= L * (1 + 1e-4), ("never above the spectral norm: %.5f <= %.5f"):format(r.max, L))
  T.check(r.min >= 0.99 * L, ("a linear map's ratio is found everywhere: %.5f vs %.5f"):format(r.min, L))
  local W1, W2 = ml.randn(16, 8), ml.randn(3, 16)
  local f = function(x) return ml.matmul(ml.matmul(x, W1:t()):relu(), W2:t()) end
  local x = ml.randn(20, 8)
  local rr = th.local_lipschitz(f, x, {steps = 20, eps = 0.5})
  T.check(rr.max <= th.spectral_norm(W1) * th.spectral_norm(W2), "below the product of spectral norms")
  -- at least the local Jacobian's largest singular value at most points (eps small: f is linear there)
  local rs = th.local_lipschitz(f, x, {steps = 30, eps = 1e-3})
  local J = 0
  for i = 1, 20 do
    local xi = x:narrow(1, i, 1)
    local mask = ml.matmul(xi, W1:t()):gt(0):float():reshape(-1)
    J = math.max(J, th.spectral_norm(ml.matmul(W2 * mask, W1)))
  end
  T.near(rs.max, J, 1e-2, "small eps: the largest local Jacobian norm")
  T.raises(function() th.local_lipschitz(f, x, {eps = 0}) end, "eps must be positive")
end)

T.test("utilities and bad input", function()
  T.near(th.bubeck_sellke{n = 100, dim = 4, params = 25, noise = 0.5}, 0.5 * math.sqrt(16), 1e-12, "Bubeck-Sellke scale")
  local w = ml.tensor({3, 4})
  local stats = th.grad_norm_stats(function(x) return ml.matmul(x, w) end, ml.randn(50, 2))
  T.near(stats.max, 5, 1e-5, "gradient norm of a linear map = ||w||")
  T.near(stats.mean, 5, 1e-5)
  local X = ml.randn(10, 3)
  T.raises(function() th.linear_experts(X, ml.randn(9), ml.ones(10):long()) end, "y must be [10]")
  T.raises(function() th.linear_experts(X, ml.randn(10), ml.tensor({1, 2, 3, 1, 2, 3, 1, 2, 3, 4}, "int64"), {experts = 3}) end,
    "row 10 is assigned to expert 4, outside 1..3")
  T.raises(function() th.linear_experts(ml.randn(10), ml.randn(10), ml.ones(10):long()) end, "X must be a 2-d tensor")
  local bad = X:clone()
  bad[2][2] = 0 / 0
  T.raises(function() th.linear_experts(bad, ml.randn(10), ml.ones(10):long()) end, "NaN or infinite value")
  T.raises(function() th.subspace_data{experts = 8, sub_dim = 5, dim = 20} end, "need dim >= 45")
  T.raises(function() th.smooth_moe{router = ml.randn(2, 3), experts = {function(x) return x end, ml.randn(3)}} end,
    "give its Lipschitz constant")
  -- an expert with no rows: documented behaviour, w_i* = 0
  local r = th.linear_experts(X, ml.randn(10), ml.ones(10):long(), {experts = 2})
  T.check(r.counts[2] == 0 and r.expert_lipschitz[2] == 0, "an empty expert has w_i* = 0")
  -- rank-deficient X (a repeated column): a finite, minimum-norm solution
  local Xd = ml.cat({X, X:narrow(2, 1, 1)}, 2)
  local rd = th.linear_experts(Xd, ml.randn(10), ml.ones(10):long())
  T.check(rd.rank == 3 and rd.dense_lipschitz == rd.dense_lipschitz, "rank 3, no NaN")
end)

T.done()
