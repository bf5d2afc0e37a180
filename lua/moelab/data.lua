-- ml.data in Lua: the batch iterator of datasets.
local ml = require "moelab"

local methods = {} -- added to every dataset by ml.extend below

-- ds:batches(n, {shuffle = false, seed = s, augment = {crop = 4, flip = true}, drop_last = false})
-- iterates x, y over the dataset in batches of n. With a seed, the shuffling and
-- the augmentation are reproducible and independent of the global RNG.
function methods.batches(ds, n, opts)
  opts = opts or {}
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then error("batches: batch size must be a positive integer", 2) end
  local known = {shuffle = true, seed = true, augment = true, drop_last = true}
  for k in pairs(opts) do
    if not known[k] then error(("batches: unknown option %q (known: augment, drop_last, seed, shuffle)"):format(k), 2) end
  end
  local N = ds:size()
  local order = opts.shuffle and ml.randperm(N, opts.seed and {seed = opts.seed}) or nil
  local i, b = 1, 0
  return function()
    if i > N then return nil end
    local m = math.min(n, N - i + 1)
    if opts.drop_last and m < n then return nil end
    local bo = {augment = opts.augment, seed = opts.seed and (opts.seed * 1000003 + b) or nil}
    local x, y
    if order then x, y = ds:batch_of(order:narrow(1, i, m), bo) else x, y = ds:batch(i, m, bo) end
    i, b = i + m, b + 1
    return x, y
  end
end

ml.extend("Dataset", methods)

return true
