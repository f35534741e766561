-- Sends finished: each slot counts from now (a rebuilt set's claim placeholder becomes the member).
-- KEYS: sets. ARGV: claim prefix, then a member for each set. Returns how many.
for i = 1, #KEYS do
    local member = ARGV[i + 1]
    if redis.call('ZREM', KEYS[i], ARGV[1] .. member) == 1 then
        redis.call('ZADD', KEYS[i], now, member)
    else
        redis.call('ZADD', KEYS[i], 'XX', now, member)
    end
end
return #KEYS
