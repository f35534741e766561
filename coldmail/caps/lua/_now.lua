-- Included first by every script: `now`, Redis's clock in whole milliseconds, the one clock all
-- processes' slots are scored by.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
