-- ml.theory in Lua: Theorem 2, Lemma 1 for smooth MoEs, the Bubeck-Sellke
-- scale, gradient-norm statistics. The linear algebra (linear experts,
-- Theorem 1, spectral norms) is in C (core/theory). Derivations: docs/THEORY.md.
local ml = require "moelab"
local theory = ml.theory

local function norm(t) return t:norm():item() end

------------------------------------------------------------------ Theorem 2
-- ml.theory.theorem2(X, y, assign, {gamma = 1, betas = [E, D] tensor, experts, rcond})
-- Per-subset linear models y_i = X_i beta_i + eta_i (beta_i given, or fitted: beta_i = w_i*).
function theory.theorem2(X, y, assign, opts)
  opts = opts or {}
  local t = theory.theorem1(X, y, assign, {experts = opts.experts, rcond = opts.rcond})
  local E = t.experts
  local gamma = opts.gamma or 1
  if not (gamma > 0) then error("theorem2: gamma must be positive", 2) end
  local betas = opts.betas or t.w_experts
  if betas:size(1) ~= E or betas:size(2) ~= X:size(2) then
    error(("theorem2: betas must be [%d, %d], got [%s]"):format(E, X:size(2), table.concat(betas:shape(), ", ")), 2)
  end
  local res = {experts = E, gamma = gamma, eps1 = t.eps1, eps2 = t.eps2, eta = {}, Delta = t.diff,
               dense_lipschitz = t.dense_lipschitz, expert_lipschitz = t.expert_lipschitz}
  -- residuals eta_i = ||y_i - X_i beta_i||, eta = ||y - X w*||
  local a = assign:long()
  for e = 1, E do
    local rows = {}
    for n = 1, a:size(1) do if a[n] == e then rows[#rows + 1] = n end end
    if #rows > 0 then
      local idx = ml.tensor(rows, "int64")
      local Xi, yi = X:index_select(1, idx), y:index_select(1, idx)
      res.eta[e] = norm(yi - ml.matmul(Xi, betas[e]))
    else
      res.eta[e] = 0
    end
  end
  res.eta_dense = norm(y - ml.matmul(X, t.w_dense))
  -- ||w*||^2 = sum_i ||P_i w*||^2 >= sum_i (||w_i*|| - Delta_i)_+^2 = lower (exact Delta_i)
  local lower, maxw = 0, 0
  for e = 1, E do
    local m = t.expert_lipschitz[e] - t.diff[e]
    if m > 0 then lower = lower + m * m end
    maxw = math.max(maxw, t.expert_lipschitz[e] ^ 2)
  end
  res.lower_bound = lower
  res.max_expert_sq = maxw
  res.dense_sq = t.lhs
  res.ratio = t.lhs > 0 and maxw / t.lhs or math.huge
  res.sufficient = maxw <= gamma * lower          -- implies the claim
  res.holds = maxw <= gamma * t.lhs               -- the claim itself
  return res
end

------------------------------------------------------------------ Lemma 1
-- A smooth MoE f(x) = sum_i p_i(x) f_i(x), p = softmax(S x), scalar experts.
-- experts: list of tensors w_i (linear experts f_i(x) = w_i . x, L_i = ||w_i||)
-- or functions f_i(x [N, D]) -> [N] with lipschitz = {L_1, ...}.
local SmoothMoE = {}
SmoothMoE.__index = SmoothMoE

function theory.smooth_moe(opts)
  if type(opts) ~= "table" or not opts.router or not opts.experts then
    error("smooth_moe: expects {router = S [E, D], experts = {...}, [lipschitz = {...}]}", 2)
  end
  local S = opts.router
  local E = S:size(1)
  if #opts.experts ~= E then error(("smooth_moe: %d experts for a router with %d rows"):format(#opts.experts, E), 2) end
  local self = setmetatable({S = S, E = E, D = S:size(2), fs = {}, L = {}}, SmoothMoE)
  for i, ex in ipairs(opts.experts) do
    if type(ex) == "function" then
      self.fs[i] = ex
      self.L[i] = opts.lipschitz and opts.lipschitz[i]
      if not self.L[i] then error(("smooth_moe: expert %d is a function; give its Lipschitz constant"):format(i), 2) end
    else
      local w = ex:reshape(-1)
      self.fs[i] = function(x) return ml.matmul(x, w) end
      self.L[i] = opts.lipschitz and opts.lipschitz[i] or norm(w)
    end
  end
  return self
end

-- probabilities [N, E] and expert values [N, E]
function SmoothMoE:parts(x)
  local p = ml.matmul(x, self.S:t()):softmax(2)
  local vals = {}
  for i = 1, self.E do vals[i] = self.fs[i](x):reshape(-1, 1) end
  return p, ml.cat(vals, 2)
end

function SmoothMoE:forward(x)
  local p, f = self:parts(x)
  return (p * f):sum(2)
end

-- At each row of x: the exact gradient norm (autograd), the bound
-- sum_i p_i L_i + ||sum_i p_i f_i (s_i - sbar)||, and its two terms.
function SmoothMoE:lemma1(x)
  local xr = x:detach():clone():requires_grad()
  local g = ml.grad(self:forward(xr):sum(), xr) -- rows are independent
  local exact = g:norm(2, 2)
  local p, f = ml.no_grad(function() return self:parts(x) end)
  local L = ml.tensor(self.L)
  local term1 = (p * L):sum(2)
  local sbar = ml.matmul(p, self.S)                          -- [N, D]
  -- sum_i p_i f_i (s_i - sbar) = (p*f) S - (sum_i p_i f_i) sbar
  local pf = p * f
  local v = ml.matmul(pf, self.S) - sbar * pf:sum(2, true)
  local term2 = v:norm(2, 2)
  return {exact = exact, bound = term1 + term2, expert_term = term1, router_term = term2, probs = p, values = f}
end

-- E = 2 at the router's boundary (p = 1/2): 1/4 |f_1 - f_2| ||s_1 - s_2||
function SmoothMoE:boundary_term(x)
  if self.E ~= 2 then error("boundary_term: defined for 2 experts", 2) end
  local _, f = ml.no_grad(function() return self:parts(x) end)
  local ds = norm(self.S[1] - self.S[2])
  return (f:select(2, 1) - f:select(2, 2)):abs() * (ds / 4)
end

-- The largest exact gradient norm and the largest bound over a sample.
function SmoothMoE:sup(x)
  local r = self:lemma1(x)
  return {exact = r.exact:max():item(), bound = r.bound:max():item()}
end

theory.SmoothMoE = SmoothMoE

------------------------------------------------------------------ Bubeck-Sellke
-- ml.theory.bubeck_sellke{n, dim, params, noise = 1} -> noise * sqrt(n * dim / params):
-- the scale of the lower bound on the Lipschitz constant of any model with `params`
-- parameters that fits n noisy points in dimension dim (up to constants).
function theory.bubeck_sellke(o)
  if type(o) ~= "table" or not o.n or not o.dim or not o.params then
    error("bubeck_sellke: expects {n = , dim = , params = , [noise = 1]}", 2)
  end
  if o.params <= 0 or o.n <= 0 or o.dim <= 0 then error("bubeck_sellke: n, dim and params must be positive", 2) end
  return (o.noise or 1) * math.sqrt(o.n * o.dim / o.params)
end

------------------------------------------------------------------ empirical Lipschitz
-- ml.theory.grad_norm_stats(fn, X, [{batch = 256, reduce = "loss" | "logit", labels = y}])
-- Statistics of ||grad_x f|| over the rows of X: mean, max, quantiles (p50, p90, p99).
-- fn(x) returns a tensor; its sum (per example rows are independent) is differentiated,
-- or with reduce = "loss", the cross-entropy against opts.labels per example.
function theory.grad_norm_stats(fn, X, opts)
  opts = opts or {}
  local bs = opts.batch or 256
  local norms = {}
  -- Ctrl-C keeps the rows done so far (interrupted = true in the result)
  local interrupted = ml.interruptible(function() for i = 1, X:size(1), bs do
    local n = math.min(bs, X:size(1) - i + 1)
    local x = X:narrow(1, i, n):detach():clone():requires_grad()
    local out = fn(x)
    local scalar
    if opts.reduce == "loss" then
      scalar = ml.cross_entropy(out, opts.labels:narrow(1, i, n), {reduction = "sum"})
    else
      scalar = out:sum()
    end
    local g = ml.grad(scalar, x):reshape(n, -1):norm(2, 2)
    for k = 1, n do norms[#norms + 1] = g[k] end
  end end)
  table.sort(norms)
  local sum = 0
  for _, v in ipairs(norms) do sum = sum + v end
  local function q(p) return norms[math.max(1, math.ceil(p * #norms))] end
  return {mean = sum / #norms, max = norms[#norms], min = norms[1], p50 = q(0.5), p90 = q(0.9), p99 = q(0.99),
          n = #norms, values = norms, interrupted = interrupted or nil}
end

-- ml.theory.local_lipschitz(fn, X, [{eps = 0.1, steps = 20, step = eps / 4, batch = 256, seed}])
-- Attack-found local ratios ||f(x + d) - f(x)|| / ||d|| (l2) for each row of X: projected
-- gradient ascent on the ratio over 0 < ||d|| <= eps from a random start, keeping the best
-- ratio seen. A lower estimate of the local Lipschitz constant on the eps-ball around x;
-- statistics as grad_norm_stats. fn maps [n, ...] to [n, k]; rows must be independent.
function theory.local_lipschitz(fn, X, opts)
  opts = opts or {}
  local eps = opts.eps or 0.1
  if not (eps > 0) then error("local_lipschitz: eps must be positive", 2) end
  local steps, bs = opts.steps or 20, opts.batch or 256
  if steps < 0 then error("local_lipschitz: steps must be >= 0", 2) end
  local alpha = opts.step or eps / 4
  if opts.seed then ml.seed(opts.seed) end
  local ratios = {}
  local function rownorm(t, n) return t:reshape(n, -1):norm(2, 2) end
  -- Ctrl-C keeps the rows done so far (interrupted = true in the result)
  local interrupted = ml.interruptible(function() for i = 1, X:size(1), bs do
    local n = math.min(bs, X:size(1) - i + 1)
    local x = X:narrow(1, i, n):detach():contiguous()
    local fx = ml.no_grad(function() return fn(x) end):reshape(n, -1)
    local shape = x:shape()
    local bshape = {n}
    for _ = 2, #shape do bshape[#bshape + 1] = 1 end
    -- random start on the sphere of radius eps / 2
    local d = ml.randn(shape)
    d = d * (rownorm(d, n):clamp(1e-12, math.huge):reciprocal() * (eps / 2)):reshape(bshape)
    local best = ml.zeros(n)
    for _ = 0, steps do
      local dv = d:detach():clone():requires_grad()
      local diff = (fn(x + dv):reshape(n, -1) - fx)
      local dn = rownorm(dv, n):clamp(1e-12, math.huge)
      local ratio = diff:norm(2, 2) / dn
      best = ml.maximum(best, ratio:detach())
      local g = ml.grad(ratio:sum(), dv)
      -- ascend along the normalised gradient, then project back into the eps-ball
      local gn = rownorm(g, n):clamp(1e-12, math.huge):reciprocal():reshape(bshape)
      local nd = dv:detach() + g * gn * alpha
      local scale = (eps / rownorm(nd, n):clamp(1e-12, math.huge)):clamp(0, 1):reshape(bshape)
      d = nd * scale
    end
    for k = 1, n do ratios[#ratios + 1] = best[k] end
  end end)
  table.sort(ratios)
  local sum = 0
  for _, v in ipairs(ratios) do sum = sum + v end
  local function q(p) return ratios[math.max(1, math.ceil(p * #ratios))] end
  return {mean = sum / #ratios, max = ratios[#ratios], min = ratios[1], p50 = q(0.5), p90 = q(0.9), p99 = q(0.99),
          n = #ratios, values = ratios, interrupted = interrupted or nil}
end

------------------------------------------------------------------ help
ml.doc(theory.linear_experts, [[
ml.theory.linear_experts(X [N, D], y [N], assign [N] (1-based experts), [{experts = E, rcond}])
  -> {w_dense, w_experts [E, D], dense_lipschitz = ||w*||, expert_lipschitz = {||w_i*||}, counts, rank}
  Dense least squares w* = (X^T X)^+ X^T y and per-expert w_i* = (X_i^T X_i)^+ X_i^T y_i, in double
  precision (SVD); singular values below rcond * sigma_max are dropped (default max(rows, cols) times
  the float32 epsilon). An expert with no rows gets w_i* = 0.]])
ml.doc(theory.theorem1, [[
ml.theory.theorem1(X, y, assign, [{experts, rcond}]) -> {eps1, eps2, lhs = ||w*||^2, rhs, holds, delta,
  proj_norm, diff, dims, ...linear_experts fields}
  eps1: in-subspace distance max_i ||U_i U_i^T (X^T X)^+ - (X_i^T X_i)^+||_2; eps2: cross-subspace distance
  max_{i != j} ||(X_i^T X_i)^+ Q_j||_2 (Q_j an orthonormal basis of span X_j^T). The bound:
  ||w*||^2 >= sum_i max(0, ||w_i*|| - eps1 ||X^T y|| - eps2 sum_{j != i} ||X_j^T y_j||)^2 (docs/THEORY.md).]])
ml.doc(theory.theorem2, [[
ml.theory.theorem2(X, y, assign, [{gamma = 1, betas = [E, D], experts, rcond}]) -> {eta, eta_dense, Delta,
  lower_bound, max_expert_sq, dense_sq, ratio, sufficient, holds, ...}
  With per-subset models y_i = X_i beta_i + eta_i: residuals eta_i, the exact differences
  Delta_i = ||w_i* - P_i w*||, the sufficient condition max_i ||w_i*||^2 <= gamma sum_j (||w_j*|| - Delta_j)_+^2
  and whether max_i ||w_i*||^2 <= gamma ||w*||^2 holds.]])
ml.doc(theory.smooth_moe, [[
ml.theory.smooth_moe{router = S [E, D], experts = {w_1, ... | fn_1, ...}, [lipschitz = {L_1, ...}]} -> moe
  A smooth MoE f(x) = sum_i p_i(x) f_i(x), p = softmax(S x), scalar experts (vectors w_i: linear
  experts with L_i = ||w_i||). moe:forward(x), moe:lemma1(x) -> {exact, bound, expert_term, router_term}
  (Lemma 1: ||grad f|| <= sum_i p_i L_i + ||sum_i p_i f_i (s_i - sbar)||), moe:boundary_term(x) (E = 2:
  1/4 |f_1 - f_2| ||s_1 - s_2||), moe:sup(x) -> largest exact norm and bound over the rows.]])
ml.doc(theory.bubeck_sellke, "ml.theory.bubeck_sellke{n, dim, params, [noise = 1]} -> noise * sqrt(n dim / params), the scale of the\n  Bubeck-Sellke lower bound on the Lipschitz constant of a model fitting n noisy points")
ml.doc(theory.grad_norm_stats, [[
ml.theory.grad_norm_stats(fn, X, [{batch = 256, reduce = "sum" | "loss", labels}]) -> {mean, max, min, p50,
  p90, p99, n, values}: statistics of the input-gradient norm of fn over the rows of X (an empirical
  Lipschitz estimate; e.g. fn = model for logits, reduce = "loss" with labels for the loss).
  Ctrl-C stops it and returns the statistics of the rows done, with interrupted = true.]])
ml.doc(theory.local_lipschitz, [[
ml.theory.local_lipschitz(fn, X, [{eps = 0.1, steps = 20, step = eps/4, batch = 256, seed}]) -> {mean, max, min,
  p50, p90, p99, n, values}: attack-found local ratios ||f(x + d) - f(x)|| / ||d|| over the l2 ball of radius
  eps around each row of X (projected gradient ascent on the ratio from a random start; a lower estimate of
  the local Lipschitz constant). Compare dense and MoE models with the same X.
  Ctrl-C stops it and returns the statistics of the rows done, with interrupted = true.]])
ml.doc(theory.spectral_norm, "ml.theory.spectral_norm(A) -> the largest singular value of a matrix (double precision)")
ml.doc(theory.pinv, "ml.theory.pinv(A, [rcond]) -> the Moore-Penrose pseudo-inverse (SVD, double precision)")
ml.doc(theory.subspace_data, [[
ml.theory.subspace_data{n = 100, dim = 32, sub_dim = 4, experts = 4, alignment = 0, mode = "rotate", noise = 0,
  mirror = false, shared = false, balanced = false, seed = 0} -> X [n*E, dim], y, assign (1-based), betas [E, dim]
  n rows in each of E subspaces of dimension sub_dim; alignment 0 = orthogonal ... 1 = identical.
  mode "rotate": subspace i spanned by cos(t) C + sin(t) Q_i, t = (1 - alignment) pi/2 (all principal
  angles shrink together); mode "overlap": the subspaces share round(alignment * sub_dim) directions and
  are orthogonal in the others. y = x . beta_i + noise, beta_i random in subspace i (unit norm when
  balanced), or one beta for all (shared; with balanced, coefficients +-1 on the union's basis).
  mirror = true (E = 2): X_2 = -X_1, y_2 = y_1, where the dense solution is w* = 0.]])

return true
