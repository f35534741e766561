"""The in-memory twin (coldmail.caps.stub) answers as the Redis scripts do: random sequences of every step
(acquire, done, give back, lose and rebuild, plan, unplan, used) on both stores, compared answer by answer
and set by set. The twin's clock is set to Redis's before each step; a script reads it a round trip later,
so times compare within SKEW_MS (exact values are the unit tests' business)."""

from __future__ import annotations

import random

import pytest
import redis

from coldmail.caps.scripts import PLACEHOLDER, Decision, PlanRequest, RedisScripts, SlotRequest
from coldmail.caps.stub import StubScripts
from tests.conftest import clean_state

SKEW_MS = 200
#: long enough that nothing leaves the window while a sequence runs (rebuilt sends are 10 s or more inside it)
WINDOW_MS = 60_000
LIMITS = {"s0": 1, "s1": 2, "s2": 3, "p3": 3, "p4": 5}
#: senders whose slots also count by day and keep a gap (their pace, `pace:{s}`)
PACED = {"p3", "p4"}
MEMBERS = [str(i) for i in range(1, 13)]


@pytest.fixture
def client_(database_url, redis_url):
    clean_state(redis_url)
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def near(a, b) -> bool:
    """The same answer, times within SKEW_MS."""
    if isinstance(a, Decision) and isinstance(b, Decision):
        return a.allowed == b.allowed and a.reason == b.reason and abs(a.wait_ms - b.wait_ms) <= SKEW_MS
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(near(x, y) for x, y in zip(a, b))
    if isinstance(a, Decision) or isinstance(b, Decision):
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return type(a) is type(b) and abs(a - b) <= SKEW_MS
    return a == b


def zsets(client, keys: list[str]) -> dict[str, dict[str, float]]:
    """Every set's members and scores (bytes decoded), with its TTL under the key '~ttl'."""
    out = {}
    for key in keys:
        members = {(m.decode() if isinstance(m, bytes) else m): score
                   for m, score in client.zrange(key, 0, -1, withscores=True)}
        if members:
            out[key] = {**members, "~ttl": client.pttl(key)}
    return out


def same_sets(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(near(a[k][m], b[k][m]) or a[k][m] == b[k][m] for m in a[k]) for k in a)


def step(rng: random.Random, store, log: list) -> object:
    """One random step on `store`, chosen by `rng` (the same seed on both stores gives the same steps)."""
    sender = rng.choice(sorted(LIMITS))
    key, plan_key = f"cap:{sender}", f"plan:{sender}"
    op = rng.choice(["acquire", "acquire", "acquire", "done", "give_back", "lose", "plan", "plan", "unplan",
                     "used"])
    if op == "acquire":
        requests = []
        for _ in range(rng.randint(1, 4)):
            s = rng.choice(sorted(LIMITS))
            if s in PACED:  # a paced sender: its day (which may turn), day limit and gap
                requests.append(SlotRequest(f"cap:{s}", f"plan:{s}", LIMITS[s], rng.choice(MEMBERS),
                                            pace_key=f"pace:{s}", day=rng.choice([700, 700, 701]),
                                            day_limit=rng.choice([-1, 2, 4]), after_ms=rng.choice([0, 300, 5000])))
            else:
                requests.append(SlotRequest(f"cap:{s}", f"plan:{s}", LIMITS[s], rng.choice(MEMBERS)))
        answer = store.acquire_many(requests, window_ms=WINDOW_MS)
        for request, decision in zip(requests, answer):
            if decision is None:  # lost: rebuild from a "source of truth" the seed decides, ask again
                truth = [(rng.choice(MEMBERS), -1000 * rng.randint(10, 50)) for _ in range(rng.randint(0, 3))]
                truth.append((PLACEHOLDER + request.member, 0))
                log.append(("rebuild", store.rebuild(request.key, truth, window_ms=WINDOW_MS)))
                if request.pace_key:
                    log.append(("pace", store.rebuild_pace(request.pace_key, day=700, count=rng.randint(0, 3),
                                                          next_ms=rng.choice([-1000, 0, 2000]))))
        return op, answer, store.acquire_many(requests, window_ms=WINDOW_MS)
    if op in ("done", "give_back"):
        slots = [(key, rng.choice(MEMBERS)) for _ in range(rng.randint(1, 3))]
        getattr(store, op)(slots)
        return op, slots
    if op == "lose":
        store.client.delete(key)
        if sender in PACED and rng.random() < 0.5:
            store.client.delete(f"pace:{sender}")
        return op, key
    if op == "plan":
        candidates = [(m, rng.choice([0, 0, 2000, 30_000, 70_000])) for m in rng.sample(MEMBERS, rng.randint(1, 5))]
        pace = {}
        if sender in PACED:
            pace = dict(pace_key=f"pace:{sender}", gap_ms=rng.choice([0, 1500]), day=700,
                        day_limit=rng.choice([-1, 1, 3]), day_left_ms=rng.choice([1000, 40_000, 90_000]))
        planned = store.plan([PlanRequest(key, plan_key, LIMITS[sender], WINDOW_MS, candidates, **pace)],
                             margin_ms=500, tolerance_ms=1000)
        if planned[0] is None:
            return op, planned
        # planned again at the times it gave (within the tolerance): the places kept, or moved on
        again = store.plan([PlanRequest(key, plan_key, LIMITS[sender], WINDOW_MS,
                                        [(m, at) for (m, _), at in zip(candidates, planned[0]) if at is not None],
                                        **pace)],
                           margin_ms=500, tolerance_ms=1000)
        return op, planned, again
    if op == "unplan":
        members = rng.sample(MEMBERS, rng.randint(1, 3))
        store.unplan(plan_key, members)
        return op, members
    return op, store.used([f"cap:{s}" for s in sorted(LIMITS)], window_ms=WINDOW_MS)


class RedisClock:
    """Redis's TIME in ms, read when `sync` is called."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.ms = 0

    def sync(self) -> None:
        seconds, micros = self.client.time()
        self.ms = seconds * 1000 + micros // 1000

    def __call__(self) -> int:
        return self.ms


@pytest.mark.parametrize("seed", range(8))
def test_the_twin_answers_as_the_redis_scripts_do(client_, seed):
    clock = RedisClock(client_)
    on_redis, on_stub = RedisScripts(client_), StubScripts(clock)
    rngs = random.Random(seed), random.Random(seed)
    keys = [f"{kind}:{s}" for s in LIMITS for kind in ("cap", "plan", "pace")]
    for n in range(80):
        logs: tuple[list, list] = ([], [])
        clock.sync()
        redis_answer = step(rngs[0], on_redis, logs[0])
        stub_answer = step(rngs[1], on_stub, logs[1])
        assert near(redis_answer, stub_answer) and near(*logs), f"step {n}: {redis_answer} vs {stub_answer}"
        clock.sync()
        assert same_sets(zsets(client_, keys), zsets(on_stub.client, keys)), f"step {n}: {redis_answer}"
