-- bench/compare.lua moelab.jsonl torch.jsonl -- the side-by-side table of bench/run.sh
local ml = require "moelab"
local function read(p)
  local t = {}
  for line in io.lines(p) do
    local r = ml.json.decode(line)
    t[r.workload .. "/" .. (r.form or "-") .. "/" .. r.mode] = r
  end
  return t
end
local m, p = read(arg[1]), read(arg[2])
local keys = {}
for k in pairs(m) do keys[#keys + 1] = k end
table.sort(keys)
print(("%-28s %10s %10s %8s"):format("workload/form/mode", "moelab", "PyTorch", "ratio"))
for _, k in ipairs(keys) do
  local a, b = m[k], p[k]
  if b then print(("%-28s %10.2f %10.2f %8.2f"):format(k, 1e3 * a.median, 1e3 * b.median, b.median / a.median)) end
end
print("ratio = PyTorch time / moelab time (above 1: moelab is faster)")
