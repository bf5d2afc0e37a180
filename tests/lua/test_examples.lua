-- The examples run (in their --quick mode) and print what they promise.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function run(script)
  local p = io.popen(("%s %s --quick 2>&1"):format(arg[-1] or "moelab", script))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

T.test("quickstart", function()
  local ok, out = run("examples/quickstart.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  T.check(out:find("clean test accuracy"), "reports clean accuracy")
  T.check(out:find("FGSM"), "reports the attack")
  local acc = tonumber(out:match("clean test accuracy: ([%d.]+)%%"))
  T.check(acc and acc > 80, "learns in quick mode: " .. tostring(acc))
end)

T.test("theory_scaling", function()
  local ok, out = run("examples/theory_scaling.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  T.check(out:find("sqrt%(E%)") and out:find("alignment"), "both tables")
  T.check(not out:find("false"), "Theorem 1 holds in every row")
end)

T.test("lemma1", function()
  local ok, out = run("examples/lemma1.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  local a, b = out:match("router term ([%d.]+) = 1/4 |f1 %- f2| ||s1 %- s2|| = ([%d.]+)")
  T.check(a and a == b, "closed form at the boundary")
  for g, bound in out:gmatch("sup over the path: ||grad|| ([%d.]+) <= bound ([%d.]+)") do
    T.check(tonumber(g) <= tonumber(bound), "bound above the gradient")
  end
end)

T.test("lipschitz_models", function()
  local ok, out = run("examples/lipschitz_models.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  local rows = 0
  for g, mean, mx in out:gmatch("%%%s+([%d.]+)%s+[%d.]+%s+[%d.]+%s+([%d.]+)%s+([%d.]+)") do
    rows = rows + 1
    T.check(tonumber(g) > 0 and tonumber(mean) > 0 and tonumber(mean) <= tonumber(mx), "finite, ordered statistics")
  end
  T.check(rows == 4, "a row for each model (CNN and MoE-CNN, ViT and V-MoE): " .. rows)
  T.check(select(2, out:gsub("MoE / dense, %a+: +loss%-gradient norm", "")) == 2, "the comparison lines")
end)

T.test("attack_tour", function()
  local ok, out = run("examples/attack_tour.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  T.check(select(2, out:gsub("attack doctor: ", "")) == 2, "the doctor's verdict for both models")
  local rows = {}
  for name, a, b in out:gmatch("\n([%w%-]+) +([%d.]+)%% +([%d.]+)%%") do rows[name] = {tonumber(a), tonumber(b)} end
  for _, name in ipairs({"clean", "FGSM", "PGD-20", "APGD-CE", "APGD-DLR", "AutoAttack"}) do
    T.check(rows[name] ~= nil, "a row for " .. name)
  end
  if rows.AutoAttack and rows.clean then
    for i = 1, 2 do
      T.check(rows.AutoAttack[i] <= rows.clean[i], "AutoAttack cannot raise the accuracy")
      T.check(rows.AutoAttack[i] <= rows["APGD-CE"][i] + 1e-9, "AutoAttack starts with APGD-CE")
    end
  end
  T.check(out:find("of the tokens go to another set of experts under PGD%-20"), "routing under attack")
  local parts = {}
  for name, ra, change in out:gmatch("\n(R[A%-RE]+) +%b() +([%d.]+)%% +([%d.]+)%% of tokens") do
    parts[name] = parts[name] or {}
    parts[name][#parts[name] + 1] = {tonumber(ra), tonumber(change)}
  end
  T.check(parts.RA and parts["RA-R"] and parts["RA-E"], "RA, RA-R and RA-E side by side")
  if parts["RA-E"] then T.check(parts["RA-E"][1][2] == 0, "experts-only attacks change no routing") end
  if parts.RA and rows["PGD-20"] then T.check(parts.RA[1][1] == rows["PGD-20"][2], "RA is PGD-20 on the V-MoE") end
  T.check(out:find("\nsteer_then_break +[%d.]+%%"), "steer_then_break")
end)

T.test("routing_under_attack", function()
  local ok, out = run("examples/routing_under_attack.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  local rows = 0
  for model, eps, acc, robust in out:gmatch("\n(v%w+)%s+([%d.]+)%s+([%d.]+)%%%s+([%d.]+)%%") do
    rows = rows + 1
    if tonumber(eps) == 0 then T.check(acc == robust, "eps 0: robust = clean for " .. model) end
  end
  T.check(rows == 8, "a curve row per model and eps: " .. rows)
  -- the V-MoE's rows: measured routing change <= 1 - certified fraction, in every layer
  for line in out:gmatch("\n(vmoe +%d[^\n]*)") do
    local nums = {}
    for v in line:gmatch("[%d.]+") do nums[#nums + 1] = tonumber(v) end
    for i = 4, #nums - 2, 3 do T.check(nums[i] <= 1 - nums[i + 1] + 1e-9, "change within the uncertified share: " .. line) end
  end
  T.check(out:find("Certified l_inf routing radius") and out:find("Dissection of PGD"), "radius and dissection")
  T.check(select(2, out:gsub("Expert x class matrix", "")) == 2, "clean and adversarial matrices")
  local path = out:match("rows written to (%S+%.csv)")
  local back = path and ml.results.read(path)
  T.check(back and #back == 8 and back[1].config_hash and back[1].seed == 3, "the CSV reads back")
  if path then os.remove(path) end
end)

T.test("live_routing", function()
  local ok, out = run("examples/live_routing.lua")
  T.check(ok, "runs: " .. out:sub(-300))
  local acc = tonumber(out:match("test acc ([%d.]+)%%"))
  T.check(acc and acc > 20, "learns something in quick mode: " .. tostring(acc))
  -- ml.watch off a terminal: a line per step, then the report with the final routing change
  local steps = {}
  for s in out:gmatch("\npgd step (%d+)/5  loss [%d.]+") do steps[#steps + 1] = tonumber(s) end
  T.check(table.concat(steps, ",") == "1,2,3,4,5", "a line per step: " .. table.concat(steps, ","))
  T.check(out:find("blocks.1.mlp +[%d.]+%% of the items routed differently"), "the final routing change")
  T.check(out:find("clean +adversarial\n +%d"), "the routing maps of an example")
  local rows = 0
  for eps, a, r in out:gmatch("\neps ([%d.]+)  accuracy +([%d.]+)%%  robust +([%d.]+)%%") do
    rows = rows + 1
    T.check(tonumber(r) <= tonumber(a), "robust <= clean at eps " .. eps)
  end
  T.check(rows == 3, "a row per eps: " .. rows)
  T.check(out:find("robust accuracy (PGD)", 1, true) and out:find("routing change per MoE layer", 1, true), "the two plots")
  local files = out:match("wrote ([^\n]+)")
  local n = 0
  for path in (files or ""):gmatch("(/[^,]-%.png)") do
    local img = ml.image.load(path)
    T.check(img:size(1) == 3 and img:size(2) > 50 and img:size(3) > 50, "a picture: " .. path)
    os.remove(path)
    n = n + 1
  end
  T.check(n == 4, "four PNGs: " .. tostring(files))
  local dir = files and files:match("^(.*)/robust_accuracy%.png")
  if dir then os.remove(dir) end
end)

T.done()
