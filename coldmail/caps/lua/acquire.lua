-- One slot (see _acquire.lua). KEYS: the set, its plan (or none), and its pace when paced.
-- ARGV: limit, window ms, member, sentinel required ('1'/'0'), sentinel, claim prefix, then when paced: day
-- ('-': not paced), day limit (-1: none), ms the next send must wait after this one.
-- Returns {allowed, wait ms}.
local day = ARGV[7] or '-'
local allowed, wait = acquire(now, KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4],
                              ARGV[5], ARGV[6], KEYS[3], day, tonumber(ARGV[8] or -1), tonumber(ARGV[9] or 0))
return {allowed, wait}
