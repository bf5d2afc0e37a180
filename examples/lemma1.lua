-- lemma1.lua -- Lemma 1 of Puigcerver et al. (2022): for a smooth MoE
-- f(x) = sum_i p_i(x) f_i(x) with a linear softmax router, the gradient norm is
-- at most sum_i p_i L_i + ||sum_i p_i f_i (s_i - sbar)||. Along a path that
-- crosses the router's boundary, the router term peaks at the boundary, where
-- for two experts it equals 1/4 |f_1 - f_2| ||s_1 - s_2||: similar experts keep
-- the MoE smooth, very different experts make it steep.
--
--   ./build/moelab examples/lemma1.lua [--quick]
local ml = require "moelab"
local th = ml.theory

local quick = false
for _, a in ipairs(arg or {}) do if a == "--quick" then quick = true end end

ml.seed(1)
local D = 8
local S = ml.zeros(2, D)
S[1][1], S[2][1] = 4, -4            -- the router's boundary is x_1 = 0
local w1 = ml.randn(D)
local cases = {
  {name = "similar experts", w2 = w1 + ml.randn(D) * 0.1},
  {name = "very different experts", w2 = -w1 * 3},
}
local steps = quick and 9 or 25
local offset = ml.randn(D) * 0.5
offset[1] = 0

for _, c in ipairs(cases) do
  local moe = th.smooth_moe{router = S, experts = {w1, c.w2}}
  local pts = {}
  for k = 0, steps - 1 do
    local t = -1.5 + 3 * k / (steps - 1)
    local x = offset:clone()
    x[1] = t
    pts[#pts + 1] = x
  end
  local X = ml.stack(pts)
  local r = moe:lemma1(X)
  -- at the boundary itself (p = 1/2) the router term has the closed form 1/4 |f1 - f2| ||s1 - s2||
  local xb = offset:clone():reshape(1, D)
  local at = moe:lemma1(xb)
  print(("\n%s (L_1 = %.2f, L_2 = %.2f)"):format(c.name, moe.L[1], moe.L[2]))
  print(("%7s %6s %10s %10s %12s   %s"):format("x_1", "p_1", "||grad||", "bound", "router term", "gradient norm (#) and bound (|)"))
  local top = r.bound:max():item()
  for k = 1, steps do
    local g, b = r.exact[k], r.bound[k]
    local gi, bi = math.floor(g / top * 40 + 0.5), math.floor(b / top * 40 + 0.5)
    local bar = ("#"):rep(gi) .. (" "):rep(math.max(0, bi - gi - 1)) .. (bi > gi and "|" or "")
    print(("%7.3f %6.3f %10.3f %10.3f %12.3f   %s"):format(X[k][1], r.probs[k][1], g, b, r.router_term[k], bar))
  end
  local sup = moe:sup(X)
  print(("at the boundary: router term %.4f = 1/4 |f1 - f2| ||s1 - s2|| = %.4f"):format(at.router_term[1],
    moe:boundary_term(xb)[1]))
  print(("sup over the path: ||grad|| %.3f <= bound %.3f"):format(sup.exact, sup.bound))
end
