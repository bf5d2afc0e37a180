-- moelab's Lua standard library: loaded by `require "moelab"` after the C
-- functions are in place. Each file adds to the same `ml` table.
local ml = require "moelab"

require "moelab.gradcheck"
require "moelab.nn"
require "moelab.train"
require "moelab.data"

return ml
