"""Earn and ReverseEvent, idempotent by (app, event_id): a batch of events is one database
transaction and a handful of set-wise statements; a reversal is a transaction of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows
from plumbing.idempotency import claim_order, first_occurrences
from services.points.domain.campaigns import (
    CampaignBook,
    Member,
    award_notes,
    decide_campaigns,
    pending_until,
)
from services.points.domain.earning import (
    NO_RULE,
    DayUsage,
    EarnState,
    Streak,
    decide_earn,
    limit_penalty,
)
from services.points.domain.errors import EventNotFound, IdempotencyConflict
from services.points.domain.expiry import local_day, lot_expires_at
from services.points.domain.lots import LotSlice
from services.points.domain.program import EarningRule
from services.points.store.campaigns import live_campaigns, lock_campaigns
from services.points.store.idempotency import payload_hash
from services.points.store.ledger import (
    Account,
    Leg,
    apply_to_account,
    expire_account_due,
    lock_existing_account,
    lock_user_account,
    lock_user_accounts,
    place_points,
    record_transaction,
    take_points,
)
from services.points.store.programs import AppProgram
from services.points.store.tables import events

# The earn_counters action that sums points toward the per-user daily cap.
CAP_COUNTER = ""


@dataclass(frozen=True)
class EarnInput:
    event_id: str
    user_id: str
    action: str
    quantity: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None
    # As they were before the event: what the campaigns' audiences judge (not in the digest:
    # a retry that finds a member's tags changed is still the same event).
    member: Member = field(default_factory=Member)

    def digest(self) -> str:
        return payload_hash(
            {
                "user_id": self.user_id,
                "action": self.action,
                "quantity": self.quantity,
                "attributes": dict(self.attributes),
                "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            }
        )


@dataclass(frozen=True)
class EarnResult:
    event_id: str
    points_awarded: int
    notes: tuple[str, ...] = ()
    streak_days: int = 0
    # Growth the rule grants for this event, and whether it escapes the daily caps.
    growth: int = 0
    exempt_from_daily_cap: bool = False
    duplicate: bool = False
    # Of points_awarded: what campaigns added, and what waits out a pending window (until).
    campaign_points: int = 0
    points_pending: int = 0
    pending_until: datetime | None = None


# The hot path speaks SQL to the driver (exec_driver_sql: no statement compilation) and is
# set-wise: a batch of any size is six round trips and one commit — claim every event, lock
# the accounts, read the counters, write everything — whatever the rules.
_CLAIM = """
    INSERT INTO events (app, event_id, user_id, payload_hash, points, response, created_at)
    SELECT %(app)s, e.event_id, e.user_id, e.hash, 0, e.response, %(now)s
    FROM json_to_recordset(%(events)s::json) AS e(event_id text, user_id text, hash text,
                                                    response jsonb)
    ON CONFLICT DO NOTHING RETURNING event_id
"""
_REPLAY = """
    SELECT event_id, payload_hash, response FROM events
    WHERE app = %(app)s AND event_id = ANY(%(ids)s::text[])
"""
# The day's usage of each (user, day, action) and the day's cap points (action ''), then each
# (user, action)'s once and streak state: one round trip for the whole batch.
# (The users again as an array in each arm: the planner flattens these LATERAL subqueries into
# joins and, believing the key list small, hashed a whole scan of the table every batch; the
# array makes it probe the index.)
_READ_STATE = """
    SELECT 'c', c.user_id, c.day, c.action, c.quantity, c.units, c.points, NULL::bool,
           NULL::date, NULL::int
    FROM json_to_recordset(%(counters)s::json) AS k(u text, d date, a text),
    LATERAL (SELECT * FROM earn_counters c
             WHERE c.app = %(app)s AND c.user_id = k.u AND c.day = k.d AND c.action = k.a
               AND c.user_id = ANY(%(users)s::text[])) c
    UNION ALL
    SELECT 's', s.user_id, NULL, s.action, NULL, NULL, NULL, s.once_done, s.streak_last_day,
           s.streak_length
    FROM json_to_recordset(%(states)s::json) AS k(u text, a text),
    LATERAL (SELECT * FROM earn_state s
             WHERE s.app = %(app)s AND s.user_id = k.u AND s.action = k.a
               AND s.user_id = ANY(%(users)s::text[])) s
    UNION ALL
    SELECT 'm', m.user_id, NULL, m.code, m.events, NULL, NULL, NULL, NULL, NULL
    FROM json_to_recordset(%(members)s::json) AS k(u text, c text),
    LATERAL (SELECT * FROM campaign_members m
             WHERE m.app = %(app)s AND m.code = k.c AND m.user_id = k.u
               AND m.user_id = ANY(%(users)s::text[])) m
"""
# Everything a batch of plain credits writes, in one statement: a lot per account (topped up),
# a transaction per event with its two legs, the balances, the counters, the answers.
_WRITE = """
    WITH credit AS MATERIALIZED (
      -- Each credit's transaction id drawn here: an event may have several credits (its
      -- action's and each campaign's), all with the event as their ref.
      SELECT c.*, nextval('transactions_id_seq'::regclass) AS txn_id
      FROM json_to_recordset(%(credits)s::json)
           AS c(n int, ref text, reason text, account_id bigint, points bigint)),
    topped AS (
      SELECT * FROM json_to_recordset(%(lots)s::json) AS l(account_id bigint, points bigint)),
    lot AS (
      INSERT INTO lots (app, account_id, expires_at, amount, remaining, created_at)
      SELECT %(app)s, l.account_id, %(expires_at)s, l.points, l.points, %(now)s FROM topped l
      ON CONFLICT ON CONSTRAINT lots_account_expiry_key DO UPDATE
      SET amount = lots.amount + EXCLUDED.amount, remaining = lots.remaining + EXCLUDED.remaining
      RETURNING id, account_id),
    txn AS (
      INSERT INTO transactions (id, app, kind, ref, reason, operator, created_at)
      SELECT c.txn_id, %(app)s, 'earn', c.ref, c.reason, '', %(now)s FROM credit c ORDER BY c.n),
    legs AS (
      INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
      SELECT leg.txn_id, %(app)s, leg.account_id, leg.amount, leg.lot_id, %(now)s
      FROM (SELECT c.txn_id, c.account_id, c.points AS amount, lot.id AS lot_id, c.n, 0
            FROM credit c JOIN lot ON lot.account_id = c.account_id
            UNION ALL
            SELECT c.txn_id, %(issued)s, -c.points, NULL, c.n, 1
            FROM credit c) AS leg(txn_id, account_id, amount, lot_id, n, side)
      ORDER BY leg.n, leg.side),
    pend AS (
      INSERT INTO pending_credits (app, event_id, reason, user_id, points, available_at, state,
                                   created_at)
      SELECT %(app)s, p.ref, p.reason, p.user_id, p.points, p.until, 'PENDING', %(now)s
      FROM json_to_recordset(%(pending)s::json) AS p(ref text, reason text, user_id text,
                                                     points bigint, until timestamptz)),
    campaign_use AS (
      -- Increments: a budgeted campaign's row is locked by this batch already (lock_campaigns);
      -- one without a budget is locked only from here to the commit.
      INSERT INTO campaign_totals AS t (app, code, points_awarded)
      SELECT %(app)s, c.code, c.points
      FROM json_to_recordset(%(campaigns)s::json) AS c(code text, points bigint)
      ORDER BY c.code
      ON CONFLICT (app, code) DO UPDATE
      SET points_awarded = t.points_awarded + EXCLUDED.points_awarded),
    campaign_member AS (
      INSERT INTO campaign_members (app, code, user_id, events, points)
      SELECT %(app)s, m.code, m.user_id, m.events, m.points
      FROM json_to_recordset(%(campaign_members)s::json) AS m(code text, user_id text,
                                                              events bigint, points bigint)
      ON CONFLICT (app, code, user_id) DO UPDATE
      SET events = campaign_members.events + EXCLUDED.events,
          points = campaign_members.points + EXCLUDED.points),
    acct AS (
      UPDATE accounts a SET balance = a.balance + l.points,
                            lifetime_earned = a.lifetime_earned + l.points
      FROM topped l
      -- The ids again as an array: an index probe each, not a hash join over every account.
      WHERE a.id = l.account_id AND a.id = ANY(%(account_ids)s::bigint[])),
    usage AS (
      INSERT INTO earn_counters (app, user_id, day, action, quantity, units, points)
      SELECT %(app)s, u.user_id, u.day, u.action, u.quantity, u.units, u.points
      FROM json_to_recordset(%(usage)s::json) AS u(user_id text, day date, action text,
                                                   quantity bigint, units bigint, points bigint)
      ON CONFLICT (app, user_id, day, action) DO UPDATE
      SET quantity = EXCLUDED.quantity, units = EXCLUDED.units, points = EXCLUDED.points),
    state AS (
      INSERT INTO earn_state (app, user_id, action, once_done, streak_last_day, streak_length)
      SELECT %(app)s, s.user_id, s.action, s.once_done, s.last_day, s.length
      FROM json_to_recordset(%(states)s::json) AS s(user_id text, action text, once_done bool,
                                                    last_day date, length int)
      ON CONFLICT (app, user_id, action) DO UPDATE
      SET once_done = EXCLUDED.once_done, streak_last_day = EXCLUDED.streak_last_day,
          streak_length = EXCLUDED.streak_length)
    UPDATE events e SET points = a.points, response = a.response
    FROM json_to_recordset(%(answers)s::json) AS a(event_id text, points bigint, response jsonb)
    WHERE e.app = %(app)s AND e.event_id = a.event_id
      AND e.event_id = ANY(%(event_ids)s::text[])
"""


def _pays(rule: EarningRule | None) -> bool:
    return rule is not None and (rule.points != 0 or rule.growth != 0)


async def earn_batch(
    conn: AsyncConnection, ap: AppProgram, now: datetime, batch: Sequence[EarnInput]
) -> list[EarnResult]:
    """Applies a batch of one app's events inside the caller's transaction (the caller commits),
    with exactly the results that applying them one by one, in order, would give: the rules
    see each event's effect on the counters before the next event of the same member.

    A repeated event_id answers as its first occurrence (``duplicate``); one already recorded
    answers as it was recorded; the same id with another payload refuses the whole batch, which
    then leaves nothing behind."""
    program = ap.program
    digests = [event.digest() for event in batch]
    first = first_occurrences([event.event_id for event in batch], digests)
    fresh = claim_order(first)
    results: dict[str, EarnResult] = {}
    answers: dict[int, dict[str, Any] | None] = {}
    for index in fresh:
        rule = program.rules.get(batch[index].action)
        if not _pays(rule):
            # Nothing to pay: the answer is known before anything is locked.
            result = EarnResult(batch[index].event_id, 0, () if rule else (NO_RULE,))
            results[result.event_id] = result
            answers[index] = _to_json(result)
        else:
            answers[index] = None
    claimed = {
        row[0]
        for row in await conn.exec_driver_sql(
            _CLAIM,
            {
                "app": ap.app,
                "now": now,
                "events": json_rows(
                    {
                        "event_id": batch[i].event_id,
                        "user_id": batch[i].user_id,
                        "hash": digests[i],
                        "response": answers[i],
                    }
                    for i in fresh
                ),
            },
        )
    }
    replayed = [batch[i].event_id for i in fresh if batch[i].event_id not in claimed]
    if replayed:
        await _replay(conn, ap.app, replayed, digests, batch, first, results)
    # The events to decide, in the caller's order.
    todo = [i for i in sorted(fresh) if batch[i].event_id in claimed and answers[i] is None]
    if todo:
        for result in await _decide_and_write(conn, ap, now, [batch[i] for i in todo]):
            results[result.event_id] = result
    out = []
    for index, event in enumerate(batch):
        result = results[event.event_id]
        if first[event.event_id] != index:
            result = replace(result, duplicate=True)
        out.append(result)
    return out


async def _replay(
    conn: AsyncConnection,
    app: str,
    ids: list[str],
    digests: list[str],
    batch: Sequence[EarnInput],
    first: dict[str, int],
    results: dict[str, EarnResult],
) -> None:
    rows: list[Any] = list(await conn.exec_driver_sql(_REPLAY, {"app": app, "ids": ids}))
    for event_id, digest, response in rows:
        if digest != digests[first[event_id]]:
            raise IdempotencyConflict(
                f"event_id {event_id!r} was already recorded with another payload"
            )
        results[event_id] = EarnResult(**{**_from_json(response), "duplicate": True})


CounterKey = tuple[str, date, str]  # (user, local day, action; CAP_COUNTER for the cap)
StateKey = tuple[str, str]  # (user, action)


@dataclass
class _EarnBook:
    """A batch's day counters and rule states (once, streak): read in one statement, moved
    in memory event by event (so two events of one user in a batch see each other), written
    in one statement with only what changed."""

    counters: dict[CounterKey, tuple[int, int, int]] = field(default_factory=dict)
    states: dict[StateKey, tuple[bool, Streak]] = field(default_factory=dict)
    changed_counters: set[CounterKey] = field(default_factory=set)
    changed_states: set[StateKey] = field(default_factory=set)

    def before(self, event: EarnInput, day: date) -> EarnState:
        quantity, units, _ = self.counters.get((event.user_id, day, event.action), (0, 0, 0))
        cap_points = self.counters.get((event.user_id, day, CAP_COUNTER), (0, 0, 0))[2]
        once_done, streak = self.states.get((event.user_id, event.action), (False, Streak()))
        return EarnState(DayUsage(quantity, units), cap_points, once_done, streak)

    def keep(self, event: EarnInput, day: date, before: EarnState, after: EarnState) -> None:
        usage_key, cap_key = (event.user_id, day, event.action), (event.user_id, day, CAP_COUNTER)
        if after.usage != before.usage:
            self.counters[usage_key] = (after.usage.quantity, after.usage.units, 0)
            self.changed_counters.add(usage_key)
        if after.cap_points_today != before.cap_points_today:
            self.counters[cap_key] = (0, 0, after.cap_points_today)
            self.changed_counters.add(cap_key)
        if after.once_done != before.once_done or after.streak != before.streak:
            self.states[(event.user_id, event.action)] = (after.once_done, after.streak)
            self.changed_states.add((event.user_id, event.action))

    def usage_rows(self) -> str:
        return json_rows(
            {"user_id": u, "day": d, "action": a, "quantity": q, "units": n, "points": p}
            for (u, d, a) in sorted(self.changed_counters)
            for q, n, p in [self.counters[(u, d, a)]]
        )

    def state_rows(self) -> str:
        return json_rows(
            {
                "user_id": u,
                "action": a,
                "once_done": once,
                "last_day": streak.last_day,
                "length": streak.length,
            }
            for (u, a) in sorted(self.changed_states)
            for once, streak in [self.states[(u, a)]]
        )


async def _read_book(
    conn: AsyncConnection,
    app: str,
    events: list[EarnInput],
    days: list[date],
    campaigns: CampaignBook | None,
    campaign_codes: Sequence[str],
) -> _EarnBook:
    usage_keys = {(e.user_id, d, e.action) for e, d in zip(events, days, strict=True)}
    usage_keys |= {(e.user_id, d, CAP_COUNTER) for e, d in zip(events, days, strict=True)}
    state_keys = {(e.user_id, e.action) for e in events}
    member_keys = {(e.user_id, code) for e in events for code in campaign_codes}
    book = _EarnBook()
    found: list[Any] = list(
        await conn.exec_driver_sql(
            _READ_STATE,
            {
                "app": app,
                "counters": json_rows({"u": u, "d": d, "a": a} for u, d, a in usage_keys),
                "states": json_rows({"u": u, "a": a} for u, a in state_keys),
                "members": json_rows({"u": u, "c": c} for u, c in member_keys),
                "users": sorted({e.user_id for e in events}),
            },
        )
    )
    for kind, user, day, action, quantity, units, points, once, last_day, length in found:
        if kind == "c":
            book.counters[(user, day, action)] = (int(quantity), int(units), int(points))
        elif kind == "s":
            book.states[(user, action)] = (bool(once), Streak(last_day, int(length or 0)))
        elif campaigns is not None:  # 'm': a member's use of a campaign (action = its code)
            campaigns.times[(action, user)] = int(quantity)
    return book


@dataclass
class _Credits:
    """What a batch credits: set-wise to the ledger, one by one (accounts in debt), or to
    pending (no ledger entry until the window has passed)."""

    ledger: list[tuple[EarnInput, str, int]] = field(default_factory=list)
    pending: list[tuple[EarnInput, str, int, datetime]] = field(default_factory=list)


async def _decide_and_write(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    events: list[EarnInput],
) -> list[EarnResult]:
    program = ap.program
    accounts = await lock_user_accounts(conn, ap.app, [e.user_id for e in events])
    days = [local_day(e.occurred_at or now, program.zone) for e in events]
    campaigns = live_campaigns(program.campaigns, events, days)
    campaign_book = await lock_campaigns(conn, ap.app, campaigns) if campaigns else None
    book = await _read_book(conn, ap.app, events, days, campaign_book, [c.code for c in campaigns])
    times_before = dict(campaign_book.times) if campaign_book else {}
    # An account in debt, or one a penalty touches, takes the general ledger path event by
    # event (debts are paid first, penalties read the lots); every other credit is written
    # set-wise at the end.
    general = {
        e.user_id
        for e in events
        if accounts[e.user_id].balance < 0 or program.rules[e.action].points < 0
    }
    credits = _Credits()
    answered: list[EarnResult] = []
    for event, day in zip(events, days, strict=True):
        rule = program.rules[event.action]
        before = book.before(event, day)
        decision = decide_earn(program, rule, event.quantity, event.attributes, day, before)
        points, notes = decision.points, decision.notes
        account = accounts[event.user_id]
        if points < 0:
            # Due lots expire before the penalty reads what the user can afford.
            await expire_account_due(conn, ap.app, account, ap.system["expired"], now)
            points, more = limit_penalty(points, account.balance)
            notes += more
        awards = (
            decide_campaigns(
                campaigns, campaign_book, event.user_id, event.action, day, event.member, points
            )
            if campaign_book is not None
            else []
        )
        parts = [(rule.action, points)] + [(a.code, a.points) for a in awards if a.points > 0]
        until = pending_until(program.pending, event.action, event.occurred_at or now, now)
        if points > 0 and until is not None:
            credits.pending.extend((event, reason, p, until) for reason, p in parts)
        elif points != 0 and event.user_id in general:
            for reason, p in parts:
                await move_points(conn, ap, account, p, now, event.event_id, reason)
        elif points > 0:
            credits.ledger.extend((event, reason, p) for reason, p in parts)
        book.keep(event, day, before, decision.state)
        extra = sum(a.points for a in awards)
        is_pending = points > 0 and until is not None
        answered.append(
            EarnResult(
                event.event_id,
                points + extra,
                tuple(notes) + award_notes(awards),
                decision.streak_days,
                growth=decision.growth,
                exempt_from_daily_cap=not rule.counts_toward_daily_cap,
                campaign_points=extra,
                points_pending=points + extra if is_pending else 0,
                pending_until=until if is_pending else None,
            )
        )
    campaign_rows = _campaign_rows(campaign_book, times_before) if campaign_book else ("[]", "[]")
    await _write(conn, ap, now, accounts, book, credits, answered, campaign_rows)
    return answered


def _campaign_rows(
    book: CampaignBook, times_before: Mapping[tuple[str, str], int]
) -> tuple[str, str]:
    """What the batch paid from each campaign, and to each member from it, as the write's two
    JSON parameters."""
    totals: dict[str, int] = {}
    members = []
    for (code, user), points in sorted(book.paid.items()):
        totals[code] = totals.get(code, 0) + points
        members.append(
            {
                "code": code,
                "user_id": user,
                "events": book.times[(code, user)] - times_before.get((code, user), 0),
                "points": points,
            }
        )
    return (
        json_rows({"code": code, "points": points} for code, points in totals.items()),
        json_rows(members),
    )


async def _write(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    accounts: Mapping[str, Account],
    book: _EarnBook,
    credits: _Credits,
    answered: list[EarnResult],
    campaign_rows: tuple[str, str],
) -> None:
    """The batch in one statement: the set-wise credits (a transaction, legs and a lot per
    account), the pending credits, the campaigns' use, the changed counters and states, and
    each event's answer for replays."""
    per_account: dict[int, int] = {}
    for event, _, points in credits.ledger:
        account_id = accounts[event.user_id].id
        per_account[account_id] = per_account.get(account_id, 0) + points
    await conn.exec_driver_sql(
        _WRITE,
        {
            "app": ap.app,
            "now": now,
            "expires_at": lot_expires_at(ap.program.expiry, now, ap.program.zone),
            "issued": ap.system["issued"],
            "credits": json_rows(
                {
                    "n": n,
                    "ref": e.event_id,
                    "reason": reason,
                    "account_id": accounts[e.user_id].id,
                    "points": p,
                }
                for n, (e, reason, p) in enumerate(credits.ledger)
            ),
            "account_ids": list(per_account),
            "lots": json_rows({"account_id": a, "points": p} for a, p in per_account.items()),
            "pending": json_rows(
                {
                    "ref": e.event_id,
                    "reason": reason,
                    "user_id": e.user_id,
                    "points": p,
                    "until": until,
                }
                for e, reason, p, until in credits.pending
            ),
            "campaigns": campaign_rows[0],
            "campaign_members": campaign_rows[1],
            "usage": book.usage_rows(),
            "states": book.state_rows(),
            "answers": json_rows(
                {"event_id": r.event_id, "points": r.points_awarded, "response": _to_json(r)}
                for r in answered
            ),
            "event_ids": [r.event_id for r in answered],
        },
    )


async def move_points(
    conn: AsyncConnection,
    ap: AppProgram,
    account: Account,
    points: int,
    now: datetime,
    ref: str,
    reason: str,
    earned_at: datetime | None = None,
) -> None:
    """One credit or penalty by the general ledger path. ``earned_at``: when the points became
    the member's (a released pending credit: its expiry counts from then), else ``now``."""
    if points > 0:
        expires_at = lot_expires_at(ap.program.expiry, earned_at or now, ap.program.zone)
        legs = await place_points(conn, ap.app, account, [LotSlice(0, expires_at, points)], now)
        legs.append(Leg(ap.system["issued"], -points))
        await record_transaction(conn, ap.app, "earn", ref, now, legs, reason=reason)
        await apply_to_account(conn, account, balance=points, earned=points)
    elif points < 0:
        # A penalty rule: an adjustment the user can afford (limit_penalty capped it).
        _, legs = await take_points(conn, ap.app, account, -points, now, ap.system["expired"])
        legs.append(Leg(ap.system["adjusted"], -points))
        await record_transaction(conn, ap.app, "earn", ref, now, legs, reason=reason)
        await apply_to_account(conn, account, balance=points)


def _to_json(result: EarnResult) -> dict[str, Any]:
    # By hand: dataclasses.asdict deep-copies, a visible cost at 500 answers a batch.
    body: dict[str, Any] = {
        "event_id": result.event_id,
        "points_awarded": result.points_awarded,
        "notes": list(result.notes),
        "streak_days": result.streak_days,
        "growth": result.growth,
        "exempt_from_daily_cap": result.exempt_from_daily_cap,
    }
    if result.campaign_points:
        body["campaign_points"] = result.campaign_points
    if result.points_pending:
        body["points_pending"] = result.points_pending
        body["pending_until"] = result.pending_until.isoformat() if result.pending_until else None
    return body


def _from_json(body: Mapping[str, Any]) -> dict[str, Any]:
    until = body.get("pending_until")
    return {
        **body,
        "notes": tuple(body.get("notes", ())),
        "pending_until": datetime.fromisoformat(until) if until else None,
    }


_CANCEL = """
    UPDATE pending_credits SET state = 'CANCELLED', settled_at = %(now)s
    WHERE app = %(app)s AND event_id = %(event_id)s AND state = 'PENDING'
    RETURNING points
"""


async def cancel_pending(
    conn: AsyncConnection, app: str, event_id: str, now: datetime
) -> int | None:
    """Cancels an event's credits still pending: the points they were; None when none was."""
    rows = list(await conn.exec_driver_sql(_CANCEL, {"app": app, "event_id": event_id, "now": now}))
    return sum(int(row[0]) for row in rows) if rows else None


@dataclass(frozen=True)
class ReverseResult:
    points_reversed: int
    balance: int


async def reverse_event(
    conn: AsyncConnection, ap: AppProgram, now: datetime, event_id: str, reason: str
) -> ReverseResult:
    """Takes back what an event earned. The points come out of the user's lots soonest-expiring
    first; what the user has already spent becomes a negative balance, paid by later credits.
    A reversed penalty gives its points back. A second reversal answers as the first."""
    row = (
        await conn.execute(
            select(events.c.user_id, events.c.points, events.c.reversal)
            .where(events.c.app == ap.app, events.c.event_id == event_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise EventNotFound(f"no event {event_id!r} in app {ap.app!r}")
    if row.reversal is not None:
        return ReverseResult(**row.reversal)
    points = int(row.points)
    cancelled = await cancel_pending(conn, ap.app, event_id, now) if points > 0 else None
    if cancelled is not None:
        # Still pending: the credits are cancelled, no balance is touched.
        account = await lock_existing_account(conn, ap.app, row.user_id)
        result = ReverseResult(cancelled, account.balance if account else 0)
    elif points == 0:
        account = await lock_existing_account(conn, ap.app, row.user_id)
        result = ReverseResult(0, account.balance if account else 0)
    else:
        account = await lock_user_account(conn, ap.app, row.user_id)
        adjusted = ap.system["adjusted"]
        if points > 0:
            _, legs = await take_points(
                conn, ap.app, account, points, now, ap.system["expired"], allow_negative=True
            )
        else:
            expires_at = lot_expires_at(ap.program.expiry, now, ap.program.zone)
            legs = await place_points(
                conn, ap.app, account, [LotSlice(0, expires_at, -points)], now
            )
        legs.append(Leg(adjusted, points))
        await record_transaction(conn, ap.app, "reverse", event_id, now, legs, reason=reason)
        await apply_to_account(conn, account, balance=-points)
        result = ReverseResult(points, account.balance)
    await conn.execute(
        update(events)
        .where(events.c.app == ap.app, events.c.event_id == event_id)
        .values(reversal=asdict(result))
    )
    return result
