"""Counting events in every window, and remembering their decisions, in one Redis call.

One Lua script (atomic; one round trip) per batch of evaluations, each in order:
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

# The whole batch in one call: KEYS are every key the batch touches (each once); ARGV[1] is
# the decision TTL and ARGV[2] a JSON list of evaluations, run in order, each as the script
# for one evaluation always ran: {key index of the request, now ms, static outcome,
# thresholds, windows [[key index, window ms, max, member, verdict, code], ...]}.
_EVALUATE = """
local ttl = tonumber(ARGV[1])
local items = cjson.decode(ARGV[2])
local answers = {}
for j, item in ipairs(items) do
  local request_key = KEYS[item[1]]
  local stored = redis.call('GET', request_key)
  if stored then
    answers[j] = {1, stored}
  else
    local now = item[2]
    local static, thresholds = item[3], item[4]
    local verdict, score, rules, alerts = static.verdict, static.score, {}, {}
    for _, code in ipairs(static.rules) do table.insert(rules, code) end
    local minute = math.floor(now / 60000)
    for _, w in ipairs(item[5]) do
      local key = KEYS[w[1]]
      local window, max, member, v, code = w[2], w[3], w[4], w[5], w[6]
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
        local base = string.match(request_key, '^(.*:)req:')
        local fires_key = base .. 'fires:' .. code .. ':' .. minute
        local fires = redis.call('INCR', fires_key)
        redis.call('EXPIRE', fires_key, 120)
        if fires == limit + 1 then table.insert(alerts, 'rule:' .. code) end
      end
    end
    if #rules == 0 then rules = cjson.decode('[]') end
    if #alerts == 0 then alerts = cjson.decode('[]') end
    local value = cjson.encode({verdict = verdict, score = score, rules = rules, alerts = alerts})
    redis.call('SET', request_key, value, 'EX', ttl)
    answers[j] = {0, value}
  end
end
return answers
"""


class CountersUnavailable(Exception):
    """Redis did not answer: the decision is made without counters."""


@dataclass(frozen=True)
class Evaluation:
    request_id: str
    now: datetime
    static: Outcome
    counts: Sequence[Count]


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

    async def evaluate_many(
        self, app: str, evaluations: Sequence[Evaluation], thresholds: Mapping[str, int]
    ) -> list[Counted]:
        """Counts one app's evaluations in order, in one Redis round trip: each sees the
        windows as the ones before it left them, exactly as one call each would."""
        keys: dict[str, int] = {}

        def key(name: str) -> int:
            return keys.setdefault(name, len(keys) + 1)  # Lua indexes from 1

        limits = dict(thresholds)
        items = []
        for evaluation in evaluations:
            static = evaluation.static
            windows = []
            for count in evaluation.counts:
                if count.verdict is None:  # alert-only: the alert names its subject
                    verdict, code = -1, f"run:{count.subject}"
                else:
                    verdict, code = int(count.verdict), count.rule
                windows.append(
                    [
                        key(f"{_base(app)}w:{count.rule}:{count.subject}"),
                        count.window_ms,
                        count.max,
                        count.member,
                        verdict,
                        code,
                    ]
                )
            items.append(
                [
                    key(f"{_base(app)}req:{evaluation.request_id}"),
                    int(evaluation.now.timestamp() * 1000),
                    {
                        "verdict": int(static.verdict),
                        "score": static.score,
                        "rules": list(static.rules),
                    },
                    limits,
                    windows,
                ]
            )
        try:
            answers = await self._script(
                keys=list(keys), args=[DECISION_TTL_SECONDS, json.dumps(items)]
            )
        except (RedisError, OSError) as error:
            raise CountersUnavailable(str(error)) from error
        counted = []
        for replayed, value in answers:
            decided = json.loads(value)
            counted.append(
                Counted(
                    verdict=Verdict(int(decided["verdict"])),
                    rules=tuple(decided["rules"] or ()),
                    score=int(decided["score"]),
                    alerts=tuple(decided["alerts"] or ()),
                    replayed=bool(replayed),
                )
            )
        return counted
