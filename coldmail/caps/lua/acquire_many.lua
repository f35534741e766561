-- A slot for each of many members, in order (see _acquire.lua). KEYS: (set, plan, pace) per member.
-- ARGV: window ms, sentinel required ('1'/'0'), sentinel, claim prefix, then (limit, member, day, day limit,
-- ms after) per member (day '-': not paced).
-- Returns (allowed, wait ms) pairs, flat.
local out = {}
for i = 1, #KEYS / 3 do
    local a = 5 * (i - 1) + 4
    local allowed, wait = acquire(now, KEYS[3 * i - 2], KEYS[3 * i - 1], tonumber(ARGV[a + 1]), tonumber(ARGV[1]),
                                  ARGV[a + 2], ARGV[2], ARGV[3], ARGV[4], KEYS[3 * i], ARGV[a + 3],
                                  tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
    out[#out + 1] = allowed
    out[#out + 1] = wait
end
return out
