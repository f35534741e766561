-- Put back a paced sender's lost pace (see _acquire.lua), unless another process already did.
-- KEYS: the pace. ARGV: day, sends that day, ms from now until its next send may start.
-- Returns 1 if written, 0 if it was there.
if redis.call('ZSCORE', KEYS[1], 'day') ~= false then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), 'day', tonumber(ARGV[2]), 'count', now + tonumber(ARGV[3]), 'next')
redis.call('PEXPIRE', KEYS[1], 172800000)
return 1
