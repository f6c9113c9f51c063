"""Lua shared by the gateway's Redis scripts."""

from __future__ import annotations

# The time in ms: the caller's when it passes one (tests pin the clock that way),
# else Redis's own, the one clock every API process on every host shares.
NOW_MS = """
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
