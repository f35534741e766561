-- Included by acquire.lua and acquire_many.lua: one slot for `member` under `limit` in `window` ms on the
-- set `key`; `plan` is its hand-over plan (or nil). A rebuilt set holds a send under way as `claim` ..
-- member: its own acquire replaces it, so that the send counts once.
-- Returns (1, 0) taken, (0, ms until a slot frees) refused, (-1, 0) the set was lost (no sentinel).
local function acquire(now, key, plan, limit, window, member, need_sentinel, sentinel, claim)
    if redis.call('ZSCORE', key, sentinel) == false then
        if need_sentinel == '1' then return -1, 0 end
        redis.call('ZADD', key, 'inf', sentinel)
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('ZREM', key, member, claim .. member)
    local used = redis.call('ZCARD', key) - 1
    if used < limit then
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, window * 2)
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
