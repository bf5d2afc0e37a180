-- moelab --sandbox: an untrusted script runs with no processes, no native
-- code, no binary chunks, and files only inside its working folder. Each case
-- runs in a real sandboxed process (the binary running this test) inside a
-- fresh folder, beside a symbolic link that leads out of it.
local ml = require "moelab"
local T = dofile("tests/lua/testing.lua")

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
-- the binary running this test, as a path that works from another folder
local moelab = arg[-1]
if moelab:find("/") and not moelab:match("^/") then
  local p = assert(io.popen("pwd"))
  moelab = p:read("l") .. "/" .. moelab
  p:close()
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. sh_quote(dir .. "/sub") .. " && ln -s /etc " .. sh_quote(dir .. "/link_out")))
local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs code under --sandbox in `dir`; returns its output lines as {name = result}.
local function sandboxed(code)
  write(dir .. "/case.lua", [[
local function try(name, f, ...)
  local ok, e = pcall(f, ...)
  print(name .. "\t" .. (ok and ("ok " .. tostring(e)) or ("error " .. tostring(e))))
end
]] .. code)
  local p = assert(io.popen("cd " .. sh_quote(dir) .. " && " .. sh_quote(moelab) .. " --sandbox case.lua 2>&1"))
  local out = p:read("a")
  p:close()
  local results = {}
  for line in out:gmatch("[^\n]+") do
    local name, rest = line:match("^([^\t]+)\t(.*)$")
    if name then results[name] = rest end
  end
  return results, out
end

local function blocked(r, name, needle)
  local v = r[name]
  T.check(v and v:find("^error") and v:find(needle, 1, true), ("%s should fail with %q, got %s"):format(name, needle,
    tostring(v)))
end
local function allowed(r, name, value)
  local v = r[name]
  T.check(v and v:find("^ok") and (not value or v == "ok " .. value), ("%s should work%s, got %s"):format(name,
    value and (" and give " .. value) or "", tostring(v)))
end

T.test("processes, native code, binary chunks and the debug library are gone", function()
  local r, out = sandboxed([[
try("execute", function() return os.execute("true") end)
try("popen", function() return io.popen("ls") end)
try("loadlib", function() return package.loadlib("libc.so.6", "puts") end)
try("searchpath", function() return package.searchpath("x", "./?.lua") end)
try("require C", function() return require "socket.core" end)
try("require file", function() return require "case" end)
try("require library", function() return type(require "moelab.train") end)
try("binary load", function() return assert(load(string.dump(function() return 1 end))) end)
try("text load", function() return load("return 6 * 7")() end)
try("getinfo", function() return debug.getinfo end)
try("sethook", function() return package.loaded.debug.sethook end)
try("getupvalue", function() return debug.getupvalue end)
try("traceback", function() return type(debug.traceback("x")) end)
try("tmpname", function() return os.tmpname() end)
try("getenv", function() return type(os.getenv("HOME")) end)
]])
  blocked(r, "execute", "os.execute is not allowed in the sandbox")
  blocked(r, "popen", "io.popen is not allowed in the sandbox")
  blocked(r, "loadlib", "package.loadlib is not allowed in the sandbox")
  blocked(r, "searchpath", "package.searchpath is not allowed")
  blocked(r, "require C", "module 'socket.core' not found")
  blocked(r, "require file", "module 'case' not found")
  allowed(r, "require library", "boolean")
  blocked(r, "binary load", "attempt to load a binary chunk")
  allowed(r, "text load", "42")
  allowed(r, "getinfo", "nil")
  allowed(r, "sethook", "nil")
  allowed(r, "getupvalue", "nil")
  allowed(r, "traceback", "string")
  blocked(r, "tmpname", "os.tmpname")
  allowed(r, "getenv", "string")
  if T.failures > 0 then print(out) end
end)

T.test("files only inside the working folder", function()
  write(dir .. "/data.txt", "inside\n")
  local r, out = sandboxed([[
try("open absolute", function() return io.open("/etc/passwd") end)
try("open dotdot", function() return io.open("sub/../../x") end)
try("open link", function() return io.open("link_out/passwd") end)
try("open inside", function() return io.open("data.txt"):read("l") end)
try("open inside abs", function() return io.open(]] .. ("%q"):format(dir .. "/data.txt") .. [[):read("l") end)
try("write inside", function() local f = io.open("sub/new.txt", "w") f:write("x") f:close() return "written" end)
try("lines", function() for l in io.lines("/etc/hostname") do end end)
try("input", function() return io.input("/etc/hostname") end)
try("output", function() return io.output("../out.txt") end)
try("remove", function() return os.remove("/tmp/nothing-here") end)
try("rename out", function() return os.rename("sub/new.txt", "/tmp/stolen.txt") end)
try("rename in", function() return os.rename("sub/new.txt", "sub/moved.txt") end)
try("dofile", function() return dofile("/etc/passwd") end)
try("loadfile", function() return loadfile("link_out/passwd") end)
try("ml.load", function() return ml.load("/etc/passwd") end)
try("ml.save", function() return ml.save(ml.nn.Linear(2, 2), "../model.safetensors") end)
try("ml.save inside", function() ml.save("sub/m.safetensors", ml.nn.Linear(2, 2)) return "saved" end)
try("ml.load inside", function() return ml.load("sub/m.safetensors"):type() end)
try("safetensors", function() return ml.io.load_safetensors("link_out/x") end)
try("mnist", function() return ml.data.mnist("/work") end)
try("complete lists no folders", function() return ml.repl._listdir end)
]])
  blocked(r, "open absolute", "io.open: the sandbox allows files only inside the working folder")
  blocked(r, "open dotdot", "'..' is not allowed in the sandbox")
  blocked(r, "open link", "not 'link_out/passwd'")
  allowed(r, "open inside", "inside")
  allowed(r, "open inside abs", "inside")
  allowed(r, "write inside", "written")
  blocked(r, "lines", "io.lines: the sandbox allows")
  blocked(r, "input", "io.input: the sandbox allows")
  blocked(r, "output", "io.output: '..' is not allowed")
  blocked(r, "remove", "os.remove: the sandbox allows")
  blocked(r, "rename out", "os.rename: the sandbox allows")
  allowed(r, "rename in", "true")
  blocked(r, "dofile", "dofile: the sandbox allows")
  blocked(r, "loadfile", "loadfile: the sandbox allows")
  blocked(r, "ml.load", "ml.load: the sandbox allows")
  blocked(r, "ml.save", "ml.save: '..' is not allowed")
  allowed(r, "ml.save inside", "saved")
  allowed(r, "ml.load inside", "Linear")
  blocked(r, "safetensors", "ml.io.load_safetensors: the sandbox allows")
  blocked(r, "mnist", "ml.data.mnist: the sandbox allows")
  allowed(r, "complete lists no folders", "nil")
  local f = io.open("/tmp/stolen.txt")
  T.check(f == nil, "nothing was moved out")
  if f then f:close() end
  if T.failures > 0 then print(out) end
end)

T.test("every library function that takes a path is guarded", function()
  -- the documented functions whose signature names a path, a dir or a file
  local names = {}
  for _, e in ipairs(ml.api()) do
    local sig = e.text and e.text:match("^[%w_.:]+%s*(%b())")
    if e.name:match("^ml%.") and sig and (sig:find("%f[%w]path%f[%W]") or sig:find("%f[%w]dir%f[%W]")
        or sig:find("%f[%w]file%f[%W]")) then
      names[#names + 1] = e.name
    end
  end
  T.check(#names >= 8, "found the file functions: " .. table.concat(names, ", "))
  local code = {}
  for _, name in ipairs(names) do
    -- the path first, or after a tensor or a model: a guarded function refuses before it looks at the rest
    code[#code + 1] = ([[
try(%q, function()
  local f = %s
  for _, args in ipairs({{"../probe"}, {ml.zeros(2, 2), "../probe"}, {ml.nn.Linear(1, 1), "../probe"}}) do
    local ok, e = pcall(f, table.unpack(args))
    if not ok and tostring(e):find("is not allowed in the sandbox", 1, true) then error(e) end
  end
  return "not guarded"
end)]]):format(name, name)
  end
  local r, out = sandboxed(table.concat(code, "\n"))
  for _, name in ipairs(names) do blocked(r, name, "'..' is not allowed in the sandbox") end
  if T.failures > 0 then print(out) end
end)

T.test("methods that write files and paths given as options are guarded", function()
  local r, out = sandboxed([[
local _, trace = ml.nn.TokenMoE(2, {experts = 2, k = 1}):forward(ml.zeros(1, 1, 2), {trace = true})
try("trace:save", function() return trace:save("../probe.safetensors") end)
try("plot:png", function() return ml.plot.spark({1, 2, 3}):png("../probe.png") end)
try("autoattack state", function()
  return ml.attack.autoattack(ml.nn.Linear(4, 2), ml.zeros(1, 4), ml.tensor({1}, "int64"), {eps = 0.1, state = "../s.json"})
end)
try("view:png", function()
  local t = ml.trace.new{{layer = "moe", kind = "token", E = 2, experts = ml.tensor({{1}}, "int64")}}
  return ml.inspect.routing(t):png("../probe.png")
end)
try("plot:png here", function() ml.plot.spark({1, 2, 3}):png("here.png"); return io.open("here.png") ~= nil end)
]])
  blocked(r, "trace:save", "'..' is not allowed in the sandbox")
  blocked(r, "plot:png", "'..' is not allowed in the sandbox")
  blocked(r, "view:png", "'..' is not allowed in the sandbox") -- RoutingView:png writes through Plot:png
  blocked(r, "autoattack state", "'..' is not allowed in the sandbox")
  allowed(r, "plot:png here", "true")
  if T.failures > 0 then print(out) end
end)

T.test("a binary script is refused", function()
  write(dir .. "/bin.luac", string.dump(function() print("ran") end))
  local p = assert(io.popen("cd " .. sh_quote(dir) .. " && " .. sh_quote(moelab) .. " --sandbox bin.luac 2>&1; echo status $?"))
  local out = p:read("a")
  p:close()
  T.check(out:find("attempt to load a binary chunk", 1, true) and out:find("status 1") and not out:find("ran"),
    "refused: " .. out)
  p = assert(io.popen(sh_quote(moelab) .. " -e 'print(1)' --sandbox 2>&1; echo status $?"))
  out = p:read("a")
  p:close()
  T.check(out:find("--sandbox must come before -e and the script", 1, true) and out:find("status 1"), out)
end)

T.test("a checkpoint never runs code", function()
  -- configs that name a Lua-function module or carry Lua source in their
  -- strings are refused; nothing in them runs (the sentinel stays false)
  checkpoint_ran = false
  local path = dir .. "/crafted.safetensors"
  local configs = {
    [[{"type":"Lambda","fn":"checkpoint_ran = true"}]],
    [[{"type":"Sequential","modules":[{"type":"Lambda","fn":"checkpoint_ran = true"}]}]],
    [[{"type":"Linear","in":"checkpoint_ran = true","out":2}]],
  }
  for _, cfg in ipairs(configs) do
    ml.io.save_safetensors(path, {weight = ml.zeros(2, 2)}, {["moelab.config"] = cfg})
    T.raises(function() ml.load(path) end)
  end
  T.check(checkpoint_ran == false, "no code from the file ran")
end)

os.execute("rm -rf " .. sh_quote(dir))
T.done()
