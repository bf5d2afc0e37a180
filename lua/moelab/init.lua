-- moelab's Lua standard library: loaded by `require "moelab"` after the C
-- functions are in place. Each file adds to the same `ml` table; help comes
-- first so the others can register their help texts with ml.doc.
local ml = require "moelab"

require "moelab.help"
require "moelab.gradcheck"
require "moelab.progress"
require "moelab.nn"
require "moelab.trace"
require "moelab.train"
require "moelab.data"
require "moelab.theory"
require "moelab.repr"
require "moelab.plot"
require "moelab.image"
require "moelab.results"
require "moelab.metrics"
require "moelab.attack"
require "moelab.inspect"
require "moelab.watch"
require "moelab.complete"

return true
