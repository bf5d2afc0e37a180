-- AutoAttack: the worst case over its components, the breakdown, resuming
-- from a state file (after a stop and after SIGTERM), the rand version.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

-- A small model that treats the examples of a batch independently, and its
-- data (the SIGTERM test's child process builds the same from this text).
local shared = [[
local ml = require "moelab"
function model()
  ml.seed(3)
  return ml.nn.Sequential(ml.nn.Flatten(), ml.nn.Linear(16, 24), ml.nn.Tanh(), ml.nn.Linear(24, 5)):eval()
end
function data(n)
  ml.seed(8)
  local m = model()
  local x = ml.rand(n, 1, 4, 4)
  -- labels mostly right, so that there is something to attack
  local y = ml.no_grad(function() return m(x):argmax(2) end)
  for i = 1, n, 7 do y[i] = y[i] % 5 + 1 end
  return x, y
end
]]
assert(load(shared))()

-- quick settings for the components
local quick = {eps = 0.08, steps = 8, queries = 60, n_targets = 3, seed = 5, quiet = true}
local function opts(extra)
  local o = {}
  for k, v in pairs(quick) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

T.test("standard: breakdown adds up, one line per attack", function()
  local m = model()
  local x, y = data(30)
  local lines = {}
  local xa, rep = ml.attack.autoattack(m, x, y, opts{log = function(l) lines[#lines + 1] = l end})
  T.check(#rep.attacks == 4, "four attacks")
  local names = {}
  for i, p in ipairs(rep.attacks) do names[i] = p.name end
  T.check(table.concat(names, ",") == "apgd-ce,apgd-t,fab-t,square", "the standard list")
  -- counts: clean mistakes + broken per attack + robust = n
  local count = {}
  for _, b in ipairs(rep.broken_by) do count[b] = (count[b] or 0) + 1 end
  local total, prev = (count.clean or 0) + (count.robust or 0), rep.clean_accuracy
  for _, p in ipairs(rep.attacks) do
    T.check((count[p.name] or 0) == p.broken, p.name .. " broken count")
    total = total + p.broken
    T.check(p.robust_accuracy <= prev + 1e-12, p.name .. ": robust accuracy went up")
    T.near(prev - p.robust_accuracy, p.broken / 30, 1e-9, p.name .. " accounts for its drop")
    prev = p.robust_accuracy
  end
  T.check(total == 30, "every example accounted for")
  T.near(rep.robust_accuracy, (count.robust or 0) / 30, 1e-9, "final robust accuracy = robust examples")
  T.near(rep.robust_accuracy, rep.attacks[4].robust_accuracy, 1e-9)
  T.near(rep.clean_accuracy, 1 - (count.clean or 0) / 30, 1e-9)
  -- robust examples are returned as they are, broken ones within eps
  for i, b in ipairs(rep.broken_by) do
    if b == "robust" or b == "clean" then T.check(ml.equal(xa[i], x[i]), "example " .. i .. " moved") end
  end
  T.check(rep.perturbation:max():item() <= 0.08 + 1e-6, "within eps")
  local after = 0
  for _, l in ipairs(lines) do if l:match("^robust accuracy after [A-Z%-]+: %d+%.%d+%% %(%d+%.%d s%)$") then after = after + 1 end end
  T.check(after == 4, "one line per attack, got:\n" .. table.concat(lines, "\n"))
  -- cost: the parts add up to the total
  local f = 0
  for _, p in ipairs(rep.attacks) do f = f + p.cost.forwards end
  T.check(rep.cost.forwards >= f and f > 0, "cost accounting")
end)

T.test("the worst case is never better for the model than any component", function()
  local m = model()
  local x, y = data(30)
  local _, all = ml.attack.autoattack(m, x, y, opts())
  for _, c in ipairs({"apgd-ce", "apgd-t", "fab-t", "square"}) do
    local _, one = ml.attack.autoattack(m, x, y, opts{version = "custom", attacks = {c}})
    T.check(all.robust_accuracy <= one.robust_accuracy + 1e-12, c .. ": the ensemble is weaker than " .. c)
    for i, b in ipairs(one.broken_by) do
      if b == c then T.check(all.broken_by[i] ~= "robust", ("%s breaks example %d alone, not in the ensemble"):format(c, i)) end
    end
  end
end)

T.test("chunking does not change the result", function()
  local m = model()
  local x, y = data(30)
  local a, ra = ml.attack.autoattack(m, x, y, opts())
  local b, rb = ml.attack.autoattack(m, x, y, opts{batch = 4})
  T.check(ml.equal(a, b), "x_adv depends on the chunk size")
  T.check(table.concat(ra.broken_by, ",") == table.concat(rb.broken_by, ","), "broken_by depends on the chunk size")
end)

T.test("a stopped run resumes from its state file and equals an uninterrupted one", function()
  local m = model()
  local x, y = data(30)
  local path = os.tmpname()
  os.remove(path)
  local ref, rref = ml.attack.autoattack(m, x, y, opts{batch = 4})
  -- stop inside the second attack
  local steps = 0
  local _, r1 = ml.attack.autoattack(m, x, y, opts{batch = 4, state = path, on_step = function(_, info)
    if info.attack == "apgd-t" then steps = steps + 1 end
    if steps == 20 then return false end
  end})
  T.check(r1.stopped, "stopped")
  local st = ml.json.decode(io.open(path):read("a"))
  T.check(st.attacks_done == 1, ("state: %s attacks done"):format(st.attacks_done))
  local xa, r2 = ml.attack.autoattack(m, x, y, opts{batch = 4, state = path})
  T.check(r2.resumed, "resumed")
  T.check(ml.equal(xa, ref), "resumed x_adv differs from the uninterrupted run")
  T.check(table.concat(r2.broken_by, ",") == table.concat(rref.broken_by, ","), "broken_by differs")
  T.near(r2.robust_accuracy, rref.robust_accuracy, 1e-12)
  for i = 1, 4 do T.near(r2.attacks[i].robust_accuracy, rref.attacks[i].robust_accuracy, 1e-12, "part " .. i) end
  -- a finished state returns at once
  local xb, r3 = ml.attack.autoattack(m, x, y, opts{batch = 4, state = path})
  T.check(ml.equal(xb, ref) and r3.cost.forwards == r2.cost.forwards, "a finished run is read back")
  -- a state of another run is refused
  T.raises(function() ml.attack.autoattack(m, x, y, opts{batch = 4, state = path, eps = 0.1}) end,
    "does not belong to this run: it was written for eps 0.08")
  T.raises(function() ml.attack.autoattack(m, x * 0.5, y, opts{batch = 4, state = path}) end,
    "it was written for other images or labels")
  os.remove(path)
  os.remove(path .. ".adv.safetensors")
end)

T.test("a run killed by SIGTERM resumes where it stopped", function()
  local path = os.tmpname()
  os.remove(path)
  -- the child: the same model, data and options as model(), data(), opts() above,
  -- slowed down so that the kill lands mid-run
  local child = shared .. ([[
local m = model()
local x, y = data(30)
ml.attack.autoattack(m, x, y, {eps = 0.08, steps = 8, queries = 60, n_targets = 3, seed = 5, quiet = true,
  batch = 4, state = %q, on_step = function() local t = os.clock() while os.clock() - t < 0.002 do end end})
]]):format(path)
  local cpath = os.tmpname()
  local f = io.open(cpath, "w")
  f:write(child)
  f:close()
  local pidfile = os.tmpname()
  os.execute(("%s %s > /dev/null 2>&1 & echo $! > %s"):format(arg[-1] or "moelab", cpath, pidfile))
  local pid = io.open(pidfile):read("l")
  -- wait until the state shows progress, then SIGTERM
  local progressed = false
  for _ = 1, 600 do
    local sf = io.open(path)
    if sf then
      local ok, st = pcall(ml.json.decode, sf:read("a"))
      sf:close()
      if ok and st and (st.attacks_done >= 1 or st.chunks_done >= 2) then progressed = true break end
    end
    os.execute("sleep 0.05")
  end
  os.execute("kill -TERM " .. pid .. " 2>/dev/null; sleep 0.2")
  T.check(progressed, "the child made progress")
  local st = ml.json.decode(io.open(path):read("a"))
  print(("  (killed after %d attacks and %d chunks)"):format(st.attacks_done, st.chunks_done))
  local m = model()
  local x, y = data(30)
  local ref, rref = ml.attack.autoattack(m, x, y, opts{batch = 4})
  local xa, r = ml.attack.autoattack(m, x, y, opts{batch = 4, state = path})
  T.check(r.resumed, "resumed after SIGTERM")
  T.check(ml.equal(xa, ref), "x_adv after SIGTERM + resume differs")
  T.check(table.concat(r.broken_by, ",") == table.concat(rref.broken_by, ","), "broken_by differs")
  for _, p in ipairs({path, path .. ".adv.safetensors", cpath, pidfile}) do os.remove(p) end
end)

T.test("rand: APGD-CE and APGD-DLR with EOT over 20 draws; cheap checks flag randomness", function()
  local m0 = model()
  local noisy = ml.nn.Sequential(m0, ml.nn.Lambda(function(z) return z + ml.randn(z:shape()) * 0.05 end, "noise")):eval()
  local x, y = data(10)
  local lines = {}
  local _, rep = ml.attack.autoattack(noisy, x, y, opts{version = "rand", steps = 3, log = function(l)
    lines[#lines + 1] = l end})
  T.check(#rep.attacks == 2 and rep.attacks[1].name == "apgd-ce" and rep.attacks[2].name == "apgd-dlr", "rand list")
  local p = rep.attacks[1].cost
  T.check(p.backwards >= 20 * 4 and p.backwards % 20 == 0, "20 draws per gradient, got " .. p.backwards)
  local flagged = false
  for _, f in ipairs(rep.doctor.flags) do flagged = flagged or f.name == "randomness" end
  T.check(flagged, "the cheap checks flag a random model")
  T.check(table.concat(lines, "\n"):find("warning (randomness)", 1, true) ~= nil, "the warning is printed")
  T.check(tostring(rep.doctor):find("^attack doctor: %d+ problem") and tostring(rep):find("attack doctor:", 1, true),
    "the report and its doctor print as text: " .. tostring(rep.doctor))
  -- with standard on a deterministic model: no flag
  local _, r2 = ml.attack.autoattack(m0, x, y, opts{version = "custom", attacks = {"apgd-ce"}})
  T.check(r2.doctor == nil, "no flag on a plain model: " .. (r2.doctor and tostring(r2.doctor.flags[1].message) or ""))
end)

T.done()
