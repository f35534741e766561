-- A slot for each of many members, in order (see _acquire.lua). KEYS: (set, plan) per member.
-- ARGV: window ms, sentinel required ('1'/'0'), sentinel, claim prefix, then (limit, member) pairs.
-- Returns (allowed, wait ms) pairs, flat.
local out = {}
for i = 1, #KEYS / 2 do
    local allowed, wait = acquire(now, KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[1]),
                                  ARGV[4 + 2 * i], ARGV[2], ARGV[3], ARGV[4])
    out[#out + 1] = allowed
    out[#out + 1] = wait
end
return out
