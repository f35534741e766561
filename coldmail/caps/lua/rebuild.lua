-- Put back a lost set and mark it complete. KEYS: the set.
-- ARGV: window ms, sentinel, then (ms relative to now, member) pairs. Returns the members counted.
for i = 3, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[i]), ARGV[i + 1])
end
redis.call('ZADD', KEYS[1], 'inf', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return redis.call('ZCARD', KEYS[1]) - 1
