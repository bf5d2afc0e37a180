-- Helpers for the Lua test scripts: `local T = dofile("tests/lua/testing.lua")`.
--   T.test("name", function() ... end)   runs a case, records failures
--   T.check(cond, msg), T.near(a, b, tol, msg), T.close(ta, tb, rtol, atol, msg)
--   T.raises(fn, "substring")            fn must fail with a message containing it
--   T.done()                             exits non-zero if anything failed
local ml = require "moelab"
local T = {failures = 0, checks = 0}

local function fail(msg, level)
  T.failures = T.failures + 1
  local info = debug.getinfo(level or 3, "Sl")
  io.stderr:write(("FAIL %s:%d: %s\n"):format(info.short_src, info.currentline, msg))
end

function T.check(cond, msg)
  T.checks = T.checks + 1
  if not cond then fail(msg or "check failed") end
  return cond
end

function T.near(a, b, tol, msg)
  T.checks = T.checks + 1
  tol = tol or 1e-6
  if not (math.abs(a - b) <= tol * (1 + math.abs(b))) then
    fail(("%s: %.9g vs expected %.9g (tol %g)"):format(msg or "near", a, b, tol))
    return false
  end
  return true
end

-- max |a - b| / (atol + rtol |b|) <= 1
-- Max |a - b| / (atol + rtol |b|) over elements (<= 1: close) and max |a - b|;
-- a and b of the same shape.
function T.close_ratio(a, b, rtol, atol)
  local af, bf = a:float(), b:float()
  local diff = (af - bf):abs()
  local ratio
  if rtol == 0 and atol == 0 then ratio = diff:max():item() == 0 and 0 or math.huge
  else ratio = (diff / ((bf:abs() * rtol) + atol)):max():item() end
  return ratio, diff
end

function T.close(a, b, rtol, atol, msg)
  T.checks = T.checks + 1
  rtol, atol = rtol or 1e-5, atol or 1e-6
  local sa, sb = table.concat(a:shape(), "x"), table.concat(b:shape(), "x")
  if sa ~= sb then
    fail(("%s: shape %s vs expected %s"):format(msg or "close", sa, sb))
    return false
  end
  local ratio, diff = T.close_ratio(a, b, rtol, atol)
  if not (ratio <= 1) then
    fail(("%s: max abs diff %.3g exceeds tolerance (rtol %g, atol %g; ratio %.3g)"):format(msg or "close",
      diff:max():item(), rtol, atol, ratio))
    return false
  end
  return true
end

function T.raises(fn, needle, msg)
  T.checks = T.checks + 1
  local ok, err = pcall(fn)
  if ok then
    fail((msg or "expected an error") .. (needle and (" containing '" .. needle .. "'") or ""))
    return false
  end
  err = tostring(err)
  if needle and not err:find(needle, 1, true) then
    fail(("error message %q lacks %q"):format(err, needle))
    return false
  end
  return true, err
end

function T.test(name, fn)
  local before = T.failures
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    T.failures = T.failures + 1
    io.stderr:write(("FAIL %s: %s\n"):format(name, err))
  end
  print(((T.failures == before) and "ok   " or "FAIL ") .. name)
end

function T.done()
  print(("%d checks, %d failures"):format(T.checks, T.failures))
  if T.failures > 0 then os.exit(1) end
end

-- gradcheck wrapper: asserts ok, prints the error on failure
function T.gradcheck(name, fn, inputs, opts)
  T.checks = T.checks + 1
  local ok, err, rep = ml.gradcheck(fn, inputs, opts)
  if not ok then
    fail(("gradcheck %s: max rel err %.3g (input %s element %s: analytic %.6g numeric %.6g)")
      :format(name, err, rep.input, rep.element, rep.analytic, rep.numeric))
  end
  return ok, err
end

return T
