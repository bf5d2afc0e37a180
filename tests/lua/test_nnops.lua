-- softmax, normalisation, dropout, losses, topk and indexing: gradients
-- against finite differences, semantics, and bad input.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

ml.seed(4)

T.test("softmax family", function()
  local x = ml.randn(3, 5)
  T.gradcheck("softmax dim 2", function(a) return a:softmax(2) end, {x})
  T.gradcheck("softmax dim 1", function(a) return a:softmax(1) end, {x})
  T.gradcheck("log_softmax", function(a) return a:log_softmax(-1) end, {ml.randn(2, 3, 4)})
  T.close(x:softmax():sum(2), ml.ones(3), 1e-6, 1e-6, "rows sum to one")
  local big = ml.tensor({{1000, 0}, {-1000, 1000}})
  T.check(big:softmax():sum():item() == 2, "stable for large logits")
  T.check(big:log_softmax()[1][2] == -1000, "log_softmax keeps precision")
end)

T.test("batch norm", function()
  local x = ml.randn(4, 3, 2, 2)
  local w, b = ml.rand(3) + 0.5, ml.randn(3)
  local rm, rv = ml.zeros(3), ml.ones(3)
  T.gradcheck("train x, w, b", function(a, ww, bb)
    return ml.batch_norm(a, rm:clone(), rv:clone(), ww, bb, {training = true})
  end, {x, w, b})
  T.gradcheck("eval x, w, b", function(a, ww, bb)
    return ml.batch_norm(a, ml.randn(3) * 0 + 0.1, ml.ones(3) * 2, ww, bb)
  end, {x, w, b})
  T.gradcheck("2-d input, no affine", function(a) return ml.batch_norm(a, nil, nil, nil, nil, {training = true}) end,
    {ml.randn(6, 3)})
  local y = ml.batch_norm(x, rm, rv, nil, nil, {training = true})
  T.close(y:mean(1):mean(2):mean(2), ml.zeros(3), 0, 1e-5, "normalised per channel")
  T.check(rm:abs():sum():item() > 0, "running mean updated in place")
  T.raises(function() ml.batch_norm(x, ml.zeros(4), ml.ones(4)) end, "running_mean has shape [4], expected [3]")
  T.raises(function() ml.batch_norm(x) end, "evaluation mode needs running_mean and running_var")
  T.raises(function() ml.batch_norm(ml.randn(1, 3), nil, nil, nil, nil, {training = true}) end,
    "more than one value per channel")
end)

T.test("batch norm + residual + ReLU in one op", function()
  -- gradients against finite differences (the ReLU's kinks are unlikely on randn data)
  local x, r0 = ml.randn(4, 3, 2, 3), ml.randn(4, 3, 2, 3)
  local w, b = ml.rand(3) + 0.5, ml.randn(3)
  -- a residual that keeps every pre-activation at least 0.3 away from the kink
  local function away(z) return r0 + ((z + r0):sign() * 0.3) end
  local r = away(ml.batch_norm(x, nil, nil, w, b, {training = true}))
  T.gradcheck("train x, w, b, residual, relu", function(a, ww, bb, rr)
    return ml.batch_norm(a, ml.zeros(3), ml.ones(3), ww, bb, {training = true, residual = rr, relu = true})
  end, {x, w, b, r})
  r = away(ml.batch_norm(x, ml.ones(3) * 0.1, ml.ones(3) * 2, w, b))
  T.gradcheck("eval x, w, b, residual, relu", function(a, ww, bb, rr)
    return ml.batch_norm(a, ml.ones(3) * 0.1, ml.ones(3) * 2, ww, bb, {residual = rr, relu = true})
  end, {x, w, b, r})
  T.gradcheck("train relu only, no affine", function(a)
    return ml.batch_norm(a, nil, nil, nil, nil, {training = true, relu = true})
  end, {ml.randn(5, 2, 3)})
  -- against batch_norm, add and relu as separate ops: values, running statistics and every
  -- gradient; shapes with rows shorter than, not a multiple of and longer than 16 floats,
  -- and big enough for the threaded paths
  local shapes = {{3, 5, 4, 4}, {2, 4, 5, 5}, {2, 3, 7}, {16, 32, 16, 16}, {9, 17, 33}, {128, 8, 4, 4}}
  for _, sh in ipairs(shapes) do
    local C = sh[2]
    for _, training in ipairs{true, false} do
      for _, variant in ipairs{{true, true}, {false, true}, {true, false}} do
        local with_res, relu = variant[1], variant[2]
        local xx = (ml.randn(table.unpack(sh)) * 3 + 1.5):requires_grad()
        local rr = with_res and ml.randn(table.unpack(sh)):requires_grad() or nil
        local ww, bb = (ml.rand(C) + 0.5):requires_grad(), ml.randn(C):requires_grad()
        local rm0, rv0 = ml.randn(C) * 0.1, ml.rand(C) + 0.5
        local rm1, rv1, rm2, rv2 = rm0:clone(), rv0:clone(), rm0:clone(), rv0:clone()
        local y = ml.batch_norm(xx, rm1, rv1, ww, bb, {training = training, residual = rr, relu = relu})
        local ref = ml.batch_norm(xx, rm2, rv2, ww, bb, {training = training})
        if rr then ref = ref + rr end
        if relu then ref = ref:relu() end
        local what = ("%s %s res=%s relu=%s"):format(table.concat(sh, "x"), training and "train" or "eval",
          tostring(with_res), tostring(relu))
        T.close(y, ref, 1e-5, 1e-5, what .. ": values")
        T.close(rm1, rm2, 1e-6, 1e-6, what .. ": running mean")
        T.close(rv1, rv2, 1e-6, 1e-6, what .. ": running var")
        local gy = ml.randn(table.unpack(sh))
        local ins = rr and {xx, ww, bb, rr} or {xx, ww, bb}
        local g1 = ml.grad((y * gy):sum(), ins, {retain_graph = true})
        local g2 = ml.grad((ref * gy):sum(), ins)
        for i = 1, #ins do T.close(g1[i], g2[i], 1e-4, 1e-4, what .. ": gradient " .. i) end
        -- only the input gradient (an attack in eval mode: the parameters frozen)
        if not training then
          local gx1 = ml.grad((y * gy):sum(), xx, {retain_graph = true})
          T.close(gx1, g2[1], 1e-4, 1e-4, what .. ": input gradient alone")
          if rr then T.close(ml.grad((y * gy):sum(), rr), g2[4], 1e-5, 1e-5, what .. ": residual gradient alone") end
        end
      end
    end
  end
  T.raises(function() ml.batch_norm(x, nil, nil, nil, nil, {training = true, residual = ml.randn(4, 3, 2)}) end,
    "the residual has shape [4, 3, 2], expected the input's [4, 3, 2, 3]")
end)

T.test("moe.mask_channels: the mask form of a channel-MoE layer in one op", function()
  local N, C, H, W = 5, 6, 3, 2
  local full, gates = ml.randn(N, C, H, W), ml.rand(N) + 0.5
  local first = {1, 4, 3, 1, 4} -- 1-based first channel of each sample's block of 3
  T.gradcheck("full and gates", function(f, g) return ml.moe.mask_channels(f, first, 3, g) end, {full, gates})
  -- against a zero/one mask times the gates, in parallel-sized shapes too
  for _, sh in ipairs{{N, C, H, W}, {64, 16, 16, 16}, {7, 8, 5}} do
    local n, c = sh[1], sh[2]
    local f = ml.randn(table.unpack(sh)):requires_grad()
    local g = (ml.rand(n) + 0.5):requires_grad()
    local fs, mask = {}, ml.zeros(n, c)
    for i = 1, n do
      fs[i] = 1 + (i * 7) % (c - c // 2 + 1)
      for j = fs[i], fs[i] + c // 2 - 1 do mask[i][j] = 1 end
    end
    local shape4 = {n, c}
    for _ = 3, #sh do shape4[#shape4 + 1] = 1 end
    local y = ml.moe.mask_channels(f, fs, c // 2, g)
    local ref = f * (mask * g:reshape(n, 1)):reshape(table.unpack(shape4))
    T.close(y, ref, 1e-6, 1e-6, "mask_channels values " .. table.concat(sh, "x"))
    local gy = ml.randn(table.unpack(sh))
    local g1, g2 = ml.grad((y * gy):sum(), {f, g}), ml.grad((ref * gy):sum(), {f, g})
    T.close(g1[1], g2[1], 1e-6, 1e-6, "gradient of full")
    T.close(g1[2], g2[2], 1e-4, 1e-4, "gradient of the gates")
    T.close(ml.moe.mask_channels(f, fs, c // 2), f * mask:reshape(table.unpack(shape4)), 0, 0, "no gates: weight 1")
  end
  T.raises(function() ml.moe.mask_channels(full, {1, 5, 1, 1, 1}, 3) end, "falls outside 6")
end)

T.test("layer norm", function()
  local x = ml.randn(2, 3, 4)
  T.gradcheck("layer_norm with affine", function(a, w, b) return ml.layer_norm(a, 1, w, b) end,
    {x, ml.rand(4) + 0.5, ml.randn(4)})
  T.gradcheck("layer_norm over 2 dims", function(a) return ml.layer_norm(a, {3, 4}) end, {x})
  T.raises(function() ml.layer_norm(x, 1, ml.ones(3)) end, "weight and bias must have 4 elements")
  T.raises(function() ml.layer_norm(x, {5}) end, "normalized shape does not match")
  -- large enough for the threaded backward and rows longer than the 16 vector lanes
  -- (and a tail): against the same normalisation composed of primitive ops
  for _, D in ipairs{64, 37} do
    local big, w, b = ml.randn(1200, D) * 3 + 1, ml.rand(D) + 0.5, ml.randn(D)
    local g = ml.randn(1200, D)
    local function composed(a, ww, bb)
      local m = a:mean(2, true)
      local v = ((a - m) * (a - m)):mean(2, true)
      return (a - m) / (v + 1e-5):sqrt() * ww + bb
    end
    local grads = {}
    for i, f in ipairs{function(a, ww, bb) return ml.layer_norm(a, 1, ww, bb) end, composed} do
      local a, ww, bb = big:clone():requires_grad(), w:clone():requires_grad(), b:clone():requires_grad()
      local y = f(a, ww, bb)
      ;(y * g):sum():backward()
      grads[i] = {y:detach(), a.grad, ww.grad, bb.grad}
    end
    for k, name in ipairs{"output", "input grad", "weight grad", "bias grad"} do
      T.close(grads[1][k], grads[2][k], 1e-4, 1e-4, ("layer_norm D = %d: %s"):format(D, name))
    end
  end
end)

T.test("fused attention against the composed ops", function()
  ml.seed(4)
  local function composed(qkv, H)
    local B, L, D3 = qkv:size(1), qkv:size(2), qkv:size(3)
    local D = D3 // 3
    local p = qkv:reshape(B, L, 3, H, D // H):permute(3, 1, 4, 2, 5) -- [3, B, H, T, hd]
    local q, k, v = p:select(1, 1), p:select(1, 2), p:select(1, 3)
    local a = (ml.matmul(q, k:transpose(3, 4)) * (1 / math.sqrt(D // H))):softmax(-1)
    return ml.matmul(a, v):permute(1, 3, 2, 4):reshape(B, L, D)
  end
  T.gradcheck("attention", function(x) return ml.attention(x, 2) end, {ml.randn(2, 3, 12)})
  -- a batch large enough for the threaded path, rows longer than the vector lanes
  for _, c in ipairs{{4, 37, 48, 4}, {16, 50, 64, 4}, {3, 5, 24, 1}} do
    local B, L, D, H = table.unpack(c)
    local x, g = ml.randn(B, L, 3 * D), ml.randn(B, L, D)
    local grads, outs = {}, {}
    for i, f in ipairs{function(a) return ml.attention(a, H) end, function(a) return composed(a, H) end} do
      local xr = x:clone():requires_grad()
      local y = f(xr)
      outs[i] = y:detach()
      grads[i] = ml.grad((y * g):sum(), xr)
    end
    T.close(outs[1], outs[2], 1e-4, 1e-5, ("attention B=%d T=%d D=%d H=%d: output"):format(B, L, D, H))
    T.close(grads[1], grads[2], 1e-4, 1e-5, ("attention B=%d T=%d D=%d H=%d: gradient"):format(B, L, D, H))
  end
  T.raises(function() ml.attention(ml.randn(2, 3, 10), 2) end, "expects qkv [B, T, 3 D]")
  T.raises(function() ml.attention(ml.randn(2, 3, 12), 3) end, "3 heads do not divide the model width 4")
  T.raises(function() ml.attention(ml.randn(2, 12), 2) end, "expects qkv [B, T, 3 D]")
end)

T.test("dropout", function()
  ml.seed(9)
  local x = ml.ones(200, 50)
  local y = ml.dropout(x, 0.3)
  local kept = y:gt(0):mean():item()
  T.check(math.abs(kept - 0.7) < 0.02, ("kept fraction %.3f"):format(kept))
  T.near(y:max():item(), 1 / 0.7, 1e-5, "kept values scaled by 1/(1-p)")
  T.check(ml.dropout(x, 0.3, false):equal(x), "identity in evaluation")
  local z = ml.randn(4, 4):requires_grad()
  local out = ml.dropout(z, 0.5)
  out:sum():backward()
  T.close(z.grad, out:detach():ne(0):float() * 2, 0, 0, "gradient uses the same mask")
  T.raises(function() ml.dropout(x, 1.0) end, "dropout: p must be in [0, 1)")
end)

T.test("losses", function()
  local logits = ml.randn(5, 4)
  local y = ml.tensor({1, 4, 2, 2, 3}, "int64")
  T.gradcheck("cross_entropy", function(a) return ml.cross_entropy(a, y) end, {logits})
  T.gradcheck("cross_entropy sum, smoothing", function(a)
    return ml.cross_entropy(a, y, {reduction = "sum", label_smoothing = 0.1}) end, {logits})
  T.gradcheck("cross_entropy none", function(a) return ml.cross_entropy(a, y, {reduction = "none"}) end, {logits})
  T.gradcheck("nll", function(a) return ml.nll_loss(a:log_softmax(), y) end, {logits})
  T.gradcheck("kl_div", function(a, b) return ml.kl_div(a, b) end, {logits, ml.randn(5, 4)})
  T.gradcheck("mse", function(a, b) return ml.mse(a, b) end, {ml.randn(3, 2), ml.randn(3, 2)})
  local targets = ml.rand(3, 4)
  T.gradcheck("bce_with_logits", function(a) return ml.bce_with_logits(a, targets) end, {ml.randn(3, 4) * 3})
  -- hand-computed: uniform logits give log K
  T.near(ml.cross_entropy(ml.zeros(2, 4), {1, 3}):item(), math.log(4), 1e-6, "CE of uniform logits")
  T.near(ml.cross_entropy(logits, y):item(), ml.nll_loss(logits:log_softmax(), y):item(), 1e-6, "CE = NLL(log_softmax)")
  T.near(ml.kl_div(logits, logits):item(), 0, 1e-6, "KL(p || p) = 0")
  T.near(ml.bce_with_logits(ml.zeros(1), ml.ones(1)):item(), math.log(2), 1e-6, "BCE at 0")
  T.raises(function() ml.cross_entropy(logits, {1, 2, 3, 4, 5}) end, "label 5 of example 5 is out of range for 4 classes")
  T.raises(function() ml.cross_entropy(logits, {1, 2}) end, "5 examples but labels of shape [2]")
  T.raises(function() ml.cross_entropy(logits, y:float()) end, "the labels (argument 2) must be int64")
  T.raises(function() ml.cross_entropy(y, logits) end, "the arguments look swapped")
  T.raises(function() ml.cross_entropy(logits, y, {reduction = "avg"}) end, "unknown reduction 'avg'")
  T.raises(function() ml.kl_div(logits, ml.randn(5, 3)) end, "same shape")
  T.raises(function() ml.mse(ml.randn(2), ml.randn(3)) end, "mse: shapes [2] and [3] differ")
end)

T.test("topk", function()
  local x = ml.tensor({{3, 1, 4, 1, 5}, {9, 2, 6, 5, 3}})
  local v, i = x:topk(2)
  T.check(v:equal(ml.tensor({{5, 4}, {9, 6}})), "values")
  T.check(i:equal(ml.tensor({{5, 3}, {1, 3}}, "int64")), "1-based indices")
  local vs, is = x:topk(2, 2, {largest = false})
  T.check(is:equal(ml.tensor({{2, 4}, {2, 5}}, "int64")), "smallest, lowest index on ties")
  local _, iu = x:topk(3, 2, {sorted = false})
  T.check(iu:equal(ml.tensor({{1, 3, 5}, {1, 3, 4}}, "int64")), "unsorted keeps index order")
  T.gradcheck("topk values", function(a) return (a:topk(3, 1)) end,
    {ml.tensor({{0.1, 2.0, -1.0}, {1.5, -0.7, 0.4}, {-0.3, 0.9, 1.1}, {0.8, -1.6, 0.2}, {-2.0, 0.5, -0.4}})})
  -- uniform tie-breaking
  ml.seed(1)
  local ties = ml.zeros(3000, 4)
  local _, ti = ties:topk(1, 2, {random_ties = true})
  for e = 1, 4 do
    local f = ti:eq(e):float():mean():item()
    T.check(math.abs(f - 0.25) < 0.04, ("tied expert %d chosen %.3f"):format(e, f))
  end
  local _, det = ties:topk(1, 2)
  T.check(det:eq(1):sum():item() == 3000, "deterministic lowest index")
  T.raises(function() x:topk(6) end, "topk: k = 6 is out of range for a dimension of size 5")
  T.raises(function() x:topk(1, 2, {biggest = true}) end, "unknown option 'biggest'")
end)

T.test("indexing", function()
  local x = ml.randn(4, 3)
  T.close(x:index_select(1, {3, 1}), ml.stack({x[3], x[1]}), 0, 0, "index_select rows")
  T.gradcheck("index_select repeated", function(a) return a:index_select(1, {2, 2, 4}) end, {x})
  local idx = ml.tensor({{1, 2, 1}, {4, 3, 2}}, "int64")
  local g = x:gather(1, idx)
  T.near(g[2][1], x[4][1], 0, "gather semantics")
  T.gradcheck("gather", function(a) return a:gather(1, idx) end, {x})
  T.gradcheck("scatter_add", function(a, s) return a:scatter_add(1, idx, s) end, {x, ml.randn(2, 3)})
  local s = ml.zeros(3):scatter_add(1, ml.tensor({1, 1, 3}, "int64"), ml.tensor({1, 2, 3}))
  T.check(s:equal(ml.tensor({3, 0, 3})), "scatter_add accumulates duplicates")
  T.check(ml.one_hot({2, 1}, 3):equal(ml.tensor({{0, 1, 0}, {1, 0, 0}})), "one_hot")
  T.raises(function() x:index_select(1, {5}) end, "index_select: index 5 is out of range for dimension 1 of size 4")
  T.raises(function() x:index_select(1, {0}) end, "index 0 is out of range")
  T.raises(function() x:gather(2, ml.tensor({1, 2}, "int64")) end, "index has 1 dimensions, the tensor 2")
  T.raises(function() x:index_select(1, ml.tensor({1.0})) end, "index tensor must be int64")
  T.raises(function() ml.one_hot({4}, 3) end, "one_hot: index 4 is out of range")
end)

T.done()
