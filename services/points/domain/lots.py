"""Which lots a debit draws from and where returned points go. Pure functions over lot slices.

Rules: debits consume lots soonest-expiring first (never-expiring last, ties by age), so users
lose as little as possible to expiry. Points coming back (a released hold, a refund) return to
the lots they were taken from, keeping their original expiry; the part of a lot that has expired
meanwhile expires at once. Any credit first pays a negative balance (a reversal's debt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.points.domain.expiry import is_expired


@dataclass(frozen=True)
class LotSlice:
    """Some points of one lot: a lot's remaining amount, or the part a hold took from it."""

    lot_id: int
    expires_at: datetime | None
    amount: int


def spend_order(lot: LotSlice) -> tuple[bool, datetime, int]:
    return (lot.expires_at is None, lot.expires_at or datetime.max, lot.lot_id)


def allocate(lots: Sequence[LotSlice], amount: int) -> list[LotSlice]:
    """Takes ``amount`` from ``lots`` soonest-expiring first. The caller has checked the total."""
    taken: list[LotSlice] = []
    left = amount
    for lot in sorted(lots, key=spend_order):
        if left == 0:
            break
        take = min(lot.amount, left)
        if take > 0:
            taken.append(replace(lot, amount=take))
            left -= take
    if left:
        raise ValueError(f"lots hold {amount - left} points, {amount} were asked for")
    return taken


def pay_debt_first(balance: int, parts: Sequence[LotSlice]) -> tuple[list[LotSlice], int]:
    """Credits ``parts`` to an account whose balance is ``balance``; a negative balance is paid
    first (from the soonest-expiring parts). Returns what goes into lots and the debt paid."""
    debt = max(0, -balance)
    paid = 0
    kept: list[LotSlice] = []
    for part in sorted(parts, key=spend_order):
        use = min(debt - paid, part.amount)
        paid += use
        if part.amount - use > 0:
            kept.append(replace(part, amount=part.amount - use))
    return kept, paid


def split_expired(
    parts: Sequence[LotSlice], now: datetime
) -> tuple[list[LotSlice], list[LotSlice]]:
    """Returned points split into those whose lot still lives and those whose lot has expired."""
    live = [part for part in parts if not is_expired(part.expires_at, now)]
    dead = [part for part in parts if is_expired(part.expires_at, now)]
    return live, dead
