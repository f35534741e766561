-- One slot (see _acquire.lua). KEYS: the set, and its plan if it has one.
-- ARGV: limit, window ms, member, sentinel required ('1'/'0'), sentinel, claim prefix.
-- Returns {allowed, wait ms}.
local allowed, wait = acquire(now, KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4],
                              ARGV[5], ARGV[6])
return {allowed, wait}
