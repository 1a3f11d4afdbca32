"""Counting an event in every window, and remembering its decision, in one Redis call.

One Lua script (atomic; one round trip) per evaluation:
1. a request_id seen before returns its first decision and counts nothing;
2. each window (a sorted set: member -> time in ms) drops what is older than the window, adds
   the event (its request_id for velocity, its user for distinct users, so a user counts once),
   keeps at most max+1 members (memory stays bounded; over stays over), and fires when it holds
   more than max;
3. rules that fired and carry an alert threshold count their fires per minute; crossing the
   threshold is an alert;
4. the decision is stored under the request_id for a day, so replays find it.

All of an app's keys share one hash slot (``{app}``), so the script runs on Redis Cluster too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from plumbing.redis import key_prefix
from services.risk.domain.decide import Count, Outcome
from services.risk.domain.program import Verdict

DECISION_TTL_SECONDS = 86_400

_EVALUATE = """
local stored = redis.call('GET', KEYS[1])
if stored then return {1, stored} end
local now = tonumber(ARGV[1])
local static = cjson.decode(ARGV[3])
local thresholds = cjson.decode(ARGV[4])
local verdict, score, rules, alerts = static.verdict, static.score, static.rules, {}
local minute = math.floor(now / 60000)
local n = (#ARGV - 4) / 5
for i = 1, n do
  local b = 4 + (i - 1) * 5
  local key = KEYS[i + 1]
  local window, max = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local member, v, code = ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, member)
  local count = redis.call('ZCARD', key)
  if count > max + 1 then
    redis.call('ZREMRANGEBYRANK', key, 0, count - max - 2)
  end
  redis.call('PEXPIRE', key, window)
  if count > max then
    if v < 0 then
      -- An alert-only counter (run rate): one alert per subject per minute.
      if redis.call('SET', key .. ':alerted:' .. minute, 1, 'NX', 'EX', 120) then
        table.insert(alerts, code)
      end
    else
      table.insert(rules, code)
      if v > verdict then verdict = v end
      score = score + (v == 2 and 60 or 30)
    end
  end
end
if score > 100 then score = 100 end
for _, code in ipairs(rules) do
  local limit = thresholds[code]
  if limit then
    local fires_key = string.match(KEYS[1], '^(.*:)req:') .. 'fires:' .. code .. ':' .. minute
    local fires = redis.call('INCR', fires_key)
    redis.call('EXPIRE', fires_key, 120)
    if fires == limit + 1 then table.insert(alerts, 'rule:' .. code) end
  end
end
if #rules == 0 then rules = cjson.decode('[]') end
if #alerts == 0 then alerts = cjson.decode('[]') end
local value = cjson.encode({verdict = verdict, score = score, rules = rules, alerts = alerts})
redis.call('SET', KEYS[1], value, 'EX', tonumber(ARGV[2]))
return {0, value}
"""


class CountersUnavailable(Exception):
    """Redis did not answer: the decision is made without counters."""


@dataclass(frozen=True)
class Counted:
    verdict: Verdict
    rules: tuple[str, ...]
    score: int
    # "rule:<code>" (a rule above its alert rate) or "run:<kind>" (an item taken too fast).
    alerts: tuple[str, ...]
    replayed: bool


def _base(app: str) -> str:
    return f"{key_prefix('risk')}{{{app}}}:"


class Counters:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(_EVALUATE)

    async def evaluate(
        self,
        app: str,
        request_id: str,
        now: datetime,
        static: Outcome,
        counts: Sequence[Count],
        thresholds: Mapping[str, int],
    ) -> Counted:
        keys = [f"{_base(app)}req:{request_id}"]
        args: list[str | int] = [
            int(now.timestamp() * 1000),
            DECISION_TTL_SECONDS,
            json.dumps(
                {"verdict": int(static.verdict), "score": static.score, "rules": static.rules}
            ),
            json.dumps(dict(thresholds)),
        ]
        for count in counts:
            keys.append(f"{_base(app)}w:{count.rule}:{count.subject}")
            if count.verdict is None:  # alert-only: the alert names its subject
                verdict, code = -1, f"run:{count.subject}"
            else:
                verdict, code = int(count.verdict), count.rule
            args += [count.window_ms, count.max, count.member, verdict, code]
        try:
            replayed, value = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            raise CountersUnavailable(str(error)) from error
        decided = json.loads(value)
        return Counted(
            verdict=Verdict(int(decided["verdict"])),
            rules=tuple(decided["rules"] or ()),
            score=int(decided["score"]),
            alerts=tuple(decided["alerts"] or ()),
            replayed=bool(replayed),
        )
