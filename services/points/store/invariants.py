"""The ledger's invariants as queries: each returns the rows that break it (none when healthy).

Used by the tests after every step of the state-machine test, and by the invariant checker
(`make check-invariants`). Read-only; run it on a quiet database or accept that a movement in
flight may show up (every check is per committed transaction, so it will not).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CHECKS: dict[str, str] = {
    # Every leg belongs to a transaction and an account of its own app (what foreign keys
    # would enforce; see tables.entries for why there are none).
    "legs reference their app": """
        SELECT e.id FROM entries e
        LEFT JOIN accounts a ON a.id = e.account_id
        LEFT JOIN transactions t ON t.id = e.txn_id
        WHERE e.app = :app
          AND (a.id IS NULL OR t.id IS NULL OR a.app <> e.app OR t.app <> e.app)
    """,
    # Every transaction's legs sum to zero.
    "transactions balance": """
        SELECT t.id, t.kind, sum(e.amount) AS total
        FROM transactions t JOIN entries e ON e.txn_id = t.id
        WHERE t.app = :app GROUP BY t.id, t.kind HAVING sum(e.amount) <> 0
    """,
    # Every user's stored balance equals the sum of its legs.
    "balance equals legs": """
        SELECT a.user_id, a.balance, coalesce(sum(e.amount), 0) AS legs
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
        WHERE a.app = :app AND a.kind = 'user'
        GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)
    """,
    # Unspent lots add up to the balance whenever it is not negative (a debt has no lots).
    "lots match balance": """
        SELECT a.user_id, a.balance, coalesce(sum(l.remaining), 0) AS lots
        FROM accounts a LEFT JOIN lots l ON l.account_id = a.id
        WHERE a.app = :app AND a.kind = 'user'
        GROUP BY a.id
        HAVING (a.balance >= 0 AND a.balance <> coalesce(sum(l.remaining), 0))
            OR (a.balance < 0 AND coalesce(sum(l.remaining), 0) <> 0)
    """,
    # No lot below zero or above what it was given.
    "lots in range": """
        SELECT id, amount, remaining FROM lots
        WHERE app = :app AND (remaining < 0 OR remaining > amount)
    """,
    # A balance is negative only after a reversal took points the user had spent.
    "negative only by reversal": """
        SELECT a.user_id, a.balance FROM accounts a
        WHERE a.app = :app AND a.kind = 'user' AND a.balance < 0
          AND NOT EXISTS (SELECT 1 FROM entries e JOIN transactions t ON t.id = e.txn_id
                          WHERE e.account_id = a.id AND t.kind = 'reverse')
    """,
    # Each user's held points equal their live holds.
    "held equals live holds": """
        SELECT a.user_id, a.held, coalesce(sum(h.amount), 0) AS live
        FROM accounts a
        LEFT JOIN holds h ON h.app = a.app AND h.user_id = a.user_id AND h.state = 'HELD'
        WHERE a.app = :app AND a.kind = 'user'
        GROUP BY a.id HAVING a.held <> coalesce(sum(h.amount), 0)
    """,
    # The held system account carries exactly the live holds.
    "held account equals live holds": """
        SELECT held.total, live.total FROM
          (SELECT coalesce(sum(e.amount), 0) AS total FROM entries e
           JOIN accounts a ON a.id = e.account_id WHERE a.app = :app AND a.kind = 'held') held,
          (SELECT coalesce(sum(amount), 0) AS total FROM holds
           WHERE app = :app AND state = 'HELD') live
        WHERE held.total <> live.total
    """,
    # A hold's lots add up to the hold; a refund never exceeds the capture.
    "allocations match holds": """
        SELECT h.saga_id, h.amount, coalesce(sum(x.amount), 0) AS allocated
        FROM holds h LEFT JOIN hold_allocations x ON x.app = h.app AND x.saga_id = h.saga_id
        WHERE h.app = :app AND h.payload_hash <> ''
        GROUP BY h.app, h.saga_id
        HAVING h.amount <> coalesce(sum(x.amount), 0) OR h.refunded > h.amount
    """,
    # A pending credit is positive, in a known state, and settled only once its window passed
    # (a cancellation may come any time).
    "pending credits in range": """
        SELECT event_id, reason, state, points FROM pending_credits
        WHERE app = :app AND (points <= 0
           OR state NOT IN ('PENDING', 'RELEASED', 'CANCELLED')
           OR (state = 'PENDING') <> (settled_at IS NULL)
           OR (state = 'RELEASED' AND settled_at < available_at))
    """,
    # A released credit is one earn transaction of its amount; a pending or cancelled one has
    # none (no ledger entry until the points are the member's).
    "pending credits reach the ledger once": """
        SELECT p.event_id, p.reason, p.state, count(t.id) AS txns
        FROM pending_credits p
        LEFT JOIN transactions t
          ON t.app = p.app AND t.kind = 'earn' AND t.ref = p.event_id AND t.reason = p.reason
        WHERE p.app = :app
        GROUP BY p.event_id, p.reason, p.state
        HAVING count(t.id) <> CASE WHEN p.state = 'RELEASED' THEN 1 ELSE 0 END
    """,
    # What a campaign awarded never exceeds its budget (as the current program sets it).
    "campaign budgets never exceeded": """
        SELECT t.code, t.points_awarded, (c->>'budget_points')::bigint AS budget
        FROM campaign_totals t
        JOIN apps a ON a.app = t.app,
        LATERAL jsonb_array_elements(coalesce(a.program->'campaigns', '[]'::jsonb)) c
        WHERE t.app = :app AND c->>'code' = t.code AND c ? 'budget_points'
          AND t.points_awarded > (c->>'budget_points')::bigint
    """,
    # A campaign's total (its budget's use) is the sum of what it paid each member.
    "campaign totals equal their members": """
        SELECT t.code, t.points_awarded, coalesce(sum(m.points), 0)
        FROM campaign_totals t
        LEFT JOIN campaign_members m ON m.app = t.app AND m.code = t.code
        WHERE t.app = :app
        GROUP BY t.code, t.points_awarded
        HAVING t.points_awarded <> coalesce(sum(m.points), 0)
    """,
    # ... and of its ledger entries (reason = its code) and its credits not yet (or never) in
    # the ledger: what each campaign cost is in the books.
    "campaign totals equal their entries": """
        SELECT t.code, t.points_awarded, coalesce(l.points, 0) + coalesce(p.points, 0)
        FROM campaign_totals t
        LEFT JOIN (SELECT tx.reason, sum(e.amount) AS points
                   FROM transactions tx
                   JOIN entries e ON e.txn_id = tx.id
                   JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
                   WHERE tx.app = :app AND tx.kind = 'earn' GROUP BY tx.reason) l
          ON l.reason = t.code
        LEFT JOIN (SELECT reason, sum(points) AS points FROM pending_credits
                   WHERE app = :app AND state <> 'RELEASED' GROUP BY reason) p
          ON p.reason = t.code
        WHERE t.app = :app
          AND NOT EXISTS (SELECT 1 FROM apps a,
                          LATERAL jsonb_array_elements(coalesce(a.program->'earning', '[]'))
                            r WHERE a.app = :app AND r->>'action' = t.code)
          AND t.points_awarded <> coalesce(l.points, 0) + coalesce(p.points, 0)
    """,
}


@dataclass(frozen=True)
class Violation:
    check: str
    row: tuple[object, ...]


async def check_ledger(conn: AsyncConnection, app: str) -> list[Violation]:
    found = []
    for name, query in CHECKS.items():
        for row in await conn.execute(text(query), {"app": app}):
            found.append(Violation(name, tuple(row)))
    return found
