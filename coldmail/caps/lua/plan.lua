-- The hand-over's plan for one set's candidates, in due order: when each may go.
-- KEYS: set, plan. ARGV: limit, window ms, margin ms, tolerance ms, sentinel, then (member, due in ms) pairs.
-- Returns -1 if the set was lost, else each member's planned time (ms from now).
local key, plan = KEYS[1], KEYS[2]
local limit, window, margin, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZSCORE', key, ARGV[5]) == false then return -1 end
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
for i = 6, #ARGV, 2 do
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
            redis.call('ZADD', plan, at, member)
        end
        out[#out + 1] = at - now
    else
        redis.call('ZREM', plan, member)
        out[#out + 1] = false
        fresh[#out] = due
    end
end
local nfresh = 0
for _ in pairs(fresh) do nfresh = nfresh + 1 end
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
-- the fresh ones, in due order, each behind the `limit`-th latest slot before it (binary-search insert)
for i = 1, #out do
    local due = fresh[i]
    if due then
        local at = due
        if #times >= limit then at = math.max(due, times[#times - limit + 1] + window + margin) end
        local lo, hi = 1, #times + 1
        while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            if times[mid] <= at then lo = mid + 1 else hi = mid end
        end
        table.insert(times, lo, at)
        redis.call('ZADD', plan, at, ARGV[4 + 2 * i])
        out[i] = at - now
        if at > last then last = at end
    end
end
redis.call('PEXPIRE', plan, math.max(1, last - now) + window * 2)
return out
