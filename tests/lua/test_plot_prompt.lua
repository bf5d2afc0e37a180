-- A plot typed at the real prompt, on a pseudo-terminal (util-linux `script`
-- provides it): it draws itself, in colour unless NO_COLOR is set, in braille
-- or ASCII by the locale, and the prompt answers afterwards.
local T = dofile("tests/lua/testing.lua")

local MOELAB = arg and arg[-1] or "./build/moelab"
local have_script = os.execute("command -v script > /dev/null 2>&1")

local function at_prompt(env, lines)
  local input = os.tmpname()
  local f = assert(io.open(input, "w"))
  f:write(table.concat(lines, "\n"), "\nos.exit(0)\n")
  f:close()
  local p = io.popen(("env -u NO_COLOR -u LC_ALL -u LC_CTYPE %s TERM=xterm COLUMNS=60 LINES=20 script -qec %q /dev/null < %s 2>&1")
    :format(env, MOELAB, input))
  local out = p:read("a")
  p:close()
  os.remove(input)
  return out
end

if not have_script then
  print("skip: no `script` command for a pseudo-terminal")
  T.done()
  return
end

T.test("the prompt draws a plot in colour on a UTF-8 terminal", function()
  local out = at_prompt("LANG=C.UTF-8", {"p = ml.plot.spark({1, 2, 3}, {title = \"loss\"})", "p", "1 + 1"})
  T.check(out:find("loss \27[34m▁▅█ \27[0m3", 1, true), "a coloured sparkline: " .. out)
  T.check(out:find("\n2\r?\n"), "the prompt answers after the plot")
end)

T.test("NO_COLOR and the C locale", function()
  local out = at_prompt("LANG=C.UTF-8 NO_COLOR=1", {"ml.plot.spark({1, 2, 3}, {title = \"loss\"})"})
  T.check(out:find("loss ▁▅█ 3", 1, true) and not out:find("\27[34m", 1, true), "no colour with NO_COLOR: " .. out)
  out = at_prompt("LANG=C", {"ml.plot.spark({1, 2, 3}, {title = \"loss\"})"})
  T.check(out:find("loss \27[34m_+@ \27[0m3", 1, true), "ASCII in the C locale: " .. out)
  out = at_prompt("LANG=C.UTF-8", {"ml.plot.lines{y = {1, 3, 2}, height = 8}"})
  local width = 0
  for line in out:gmatch("[^\n]+") do
    if line:find("┤", 1, true) or line:find("└", 1, true) then
      local plain = line:gsub("\27%[[%d;]*m", ""):gsub("\r", "")
      width = math.max(width, utf8.len(plain))
    end
  end
  T.check(width > 40 and width <= 60, "as wide as the terminal (COLUMNS=60): " .. width)
end)

T.done()
