-- Slots taken in the current window. KEYS: the set. ARGV: window ms, sentinel.
-- Returns the count, or -1 if the set was lost.
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false then return -1 end
return redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '(inf')
