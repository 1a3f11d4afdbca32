"""Who is signed in: the admin key stays on the server; the browser holds only a signed,
HttpOnly, SameSite=Strict cookie with a random session id and the session's CSRF token."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

# A session unused this long is forgotten (the operator signs in again).
IDLE_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass
class Operator:
    key: str
    app: str
    key_id: str
    sandbox: bool
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Session id -> the operator signed in with it, in this process's memory."""

    def __init__(self) -> None:
        self._by_id: dict[str, Operator] = {}

    def open(self, operator: Operator) -> str:
        if len(self._by_id) >= MAX_SESSIONS:
            self._forget_idle()
        session_id = secrets.token_urlsafe(24)
        self._by_id[session_id] = operator
        return session_id

    def get(self, session_id: str | None) -> Operator | None:
        operator = self._by_id.get(session_id or "")
        if operator is None:
            return None
        now = time.monotonic()
        if now - operator.seen > IDLE_SECONDS:
            del self._by_id[session_id or ""]
            return None
        operator.seen = now
        return operator

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for session_id, operator in list(self._by_id.items()):
            if now - operator.seen > IDLE_SECONDS:
                del self._by_id[session_id]
