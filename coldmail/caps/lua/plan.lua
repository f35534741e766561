-- The hand-over's plan for one set's candidates, in due order: when each may go.
-- KEYS: set, plan, pace (see _acquire.lua). ARGV: limit, window ms, margin ms, tolerance ms, sentinel, gap ms
-- (0: none), day ('-': not paced), day limit (-1: none), ms until the local day ends, then (member, due in ms)
-- pairs.
-- Returns -1 if the set (or a paced sender's pace) was lost, else each member's planned time (ms from now),
-- as 'g' .. ms when its sender's gap set it, or 'day' for one its sender's day limit leaves no room for today.
local key, plan, pace = KEYS[1], KEYS[2], KEYS[3]
local limit, window, margin, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gap, day, day_limit, day_end = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), now + tonumber(ARGV[9])
local FIRST = 10
if redis.call('ZSCORE', key, ARGV[5]) == false then return -1 end
-- pacing: when the sender may send next, and its sends today, taken and planned
local free, today = 0, 0
if day ~= '-' then
    local stored_day = redis.call('ZSCORE', pace, 'day')
    if stored_day == false then return -1 end
    free = tonumber(redis.call('ZSCORE', pace, 'next') or 0)
    if tonumber(stored_day) >= tonumber(day) then today = tonumber(redis.call('ZSCORE', pace, 'count') or 0) end
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', plan, '-inf', now - window)
-- the k-th earliest slot in (lo, hi], taken or planned, other than `member`'s own
local function kth(lo, hi, k, member)
    local xs = {}
    for _, set in ipairs({key, plan}) do
        local r = redis.call('ZRANGEBYSCORE', set, '(' .. lo, hi, 'WITHSCORES', 'LIMIT', 0, k + 1)
        for j = 1, #r, 2 do
            if r[j] ~= member then xs[#xs + 1] = tonumber(r[j + 1]) end
        end
    end
    table.sort(xs)
    return xs[k]
end
local out, fresh = {}, {}
for i = FIRST, #ARGV, 2 do
    local member, due = ARGV[i], now + math.max(0, tonumber(ARGV[i + 1]))
    local at = redis.call('ZSCORE', plan, member)
    if at and math.abs(tonumber(at) - due) <= tolerance then
        -- planned before: it keeps its place, unless the sends before it went late and the window it
        -- was planned in is full; then it goes as soon after as that window allows
        at = tonumber(at)
        local lo = at - window
        local others = redis.call('ZCOUNT', key, '(' .. lo, at) + redis.call('ZCOUNT', plan, '(' .. lo, at) - 1
        if others >= limit then
            at = kth(lo, at, others - limit + 1, member) + window + margin
        end
        -- nor before the sender's gap since its last send ends
        local by_gap = free > at
        at = math.max(at, free)
        redis.call('ZADD', plan, at, member)
        out[#out + 1] = by_gap and ('g' .. (at - now)) or (at - now)
    else
        redis.call('ZREM', plan, member)
        out[#out + 1] = false
        fresh[#out] = due
    end
end
local nfresh = 0
for _ in pairs(fresh) do nfresh = nfresh + 1 end
if day_limit >= 0 then today = today + redis.call('ZCOUNT', plan, '-inf', '(' .. day_end) end
-- the latest planned slot: a fresh one goes a gap after it
local prev = -math.huge
if gap > 0 then
    local top = redis.call('ZREVRANGE', plan, 0, 0, 'WITHSCORES')
    if top[2] then prev = tonumber(top[2]) end
end
local times, last = {}, now
if redis.call('ZCARD', key) - 1 + redis.call('ZCARD', plan) + nfresh <= limit then
    -- room in the window for every slot taken or planned and these: each goes at its due time, without
    -- reading the window's times (a sender with a high limit has thousands)
    local top = redis.call('ZREVRANGE', plan, 0, 0, 'WITHSCORES')
    last = math.max(now, tonumber(top[2] or now))
else
    -- the `limit` latest slot times, taken or planned, ascending
    for _, source in ipairs({redis.call('ZREVRANGE', key, 1, limit, 'WITHSCORES'),
                             redis.call('ZREVRANGE', plan, 0, limit - 1, 'WITHSCORES')}) do
        for j = 2, #source, 2 do times[#times + 1] = tonumber(source[j]) end
    end
    table.sort(times)
    if #times > limit then
        local kept = {}
        for j = #times - limit + 1, #times do kept[#kept + 1] = times[j] end
        times = kept
    end
    last = times[#times] or now
end
-- the fresh ones, in due order, each behind the `limit`-th latest slot before it (binary-search insert), a gap
-- after the one before it, and only while the sender's day has room
for i = 1, #out do
    local due = fresh[i]
    if due then
        local at = due
        if #times >= limit then at = math.max(due, times[#times - limit + 1] + window + margin) end
        local by_gap = math.max(free, prev + gap) > at
        at = math.max(at, free, prev + gap)
        if day_limit >= 0 and at < day_end and today >= day_limit then
            out[i] = 'day'
        else
            if at < day_end then today = today + 1 end
            prev = at
            local lo, hi = 1, #times + 1
            while lo < hi do
                local mid = math.floor((lo + hi) / 2)
                if times[mid] <= at then lo = mid + 1 else hi = mid end
            end
            table.insert(times, lo, at)
            redis.call('ZADD', plan, at, ARGV[FIRST - 2 + 2 * i])
            out[i] = by_gap and ('g' .. (at - now)) or (at - now)
            if at > last then last = at end
        end
    end
end
redis.call('PEXPIRE', plan, math.max(1, last - now) + window * 2)
return out
