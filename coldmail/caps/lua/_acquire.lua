-- Included by acquire.lua and acquire_many.lua: one slot for `member` under `limit` in `window` ms on the
-- set `key`; `plan` is its hand-over plan (or nil). A rebuilt set holds a send under way as `claim` ..
-- member: its own acquire replaces it, so that the send counts once.
-- Pacing (`day` not '-'): `pace` is a sorted set of three members used as fields: `day` (the local day's
-- number), `count` (sends that day) and `next` (ms: when the sender's next send may start). A send is refused
-- while `count` >= `day_limit` (>= 0) or before `next`; taking the slot sets `next` to now + `after_ms` (the
-- wait before this send starts, its gap and its jitter, chosen by the caller).
-- Returns (1, 0) taken, (0, ms until a slot frees) refused by the window, (2, 0) refused by the day limit,
-- (3, ms until the gap ends) refused by the gap, (-1, 0) the set or its pace was lost (no sentinel).
local function acquire(now, key, plan, limit, window, member, need_sentinel, sentinel, claim, pace, day,
                       day_limit, after_ms)
    local paced = day ~= '-'
    if redis.call('ZSCORE', key, sentinel) == false then
        if need_sentinel == '1' then return -1, 0 end
        redis.call('ZADD', key, 'inf', sentinel)
    end
    local count, free = 0, 0
    if paced then
        local stored_day = redis.call('ZSCORE', pace, 'day')
        if stored_day == false then
            if need_sentinel == '1' then return -1, 0 end
            stored_day = day
        end
        stored_day = tonumber(stored_day)
        day = tonumber(day)
        count = tonumber(redis.call('ZSCORE', pace, 'count') or 0)
        free = tonumber(redis.call('ZSCORE', pace, 'next') or 0)
        if day > stored_day then count = 0 elseif day < stored_day then day = stored_day end
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('ZREM', key, member, claim .. member)
    local used = redis.call('ZCARD', key) - 1
    if used < limit then
        if paced and day_limit >= 0 and count >= day_limit then
            if plan then redis.call('ZREM', plan, member) end
            return 2, 0
        end
        if paced and free > now then
            if plan then redis.call('ZADD', plan, free, member) end
            return 3, free - now
        end
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, window * 2)
        if paced then
            redis.call('ZADD', pace, day, 'day', count + 1, 'count', now + after_ms, 'next')
            redis.call('PEXPIRE', pace, 172800000)
        end
        if plan then redis.call('ZREM', plan, member) end
        return 1, 0
    end
    local kth = redis.call('ZREVRANGE', key, limit, limit, 'WITHSCORES')
    local wait = math.max(1, tonumber(kth[2]) + window - now)
    if plan then
        -- refused: it keeps its turn in the plan, at the time its slot frees
        redis.call('ZADD', plan, now + wait, member)
        if redis.call('PTTL', plan) < wait + window * 2 then redis.call('PEXPIRE', plan, wait + window * 2) end
    end
    return 0, wait
end
