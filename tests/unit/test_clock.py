from datetime import UTC, datetime, timedelta, timezone

import pytest

from plumbing.clock import FakeClock, SystemClock


def test_the_fake_clock_moves_only_when_told():
    clock = FakeClock(datetime(2026, 3, 5, 23, 59, tzinfo=timezone(timedelta(hours=8))))
    assert clock.now() == datetime(2026, 3, 5, 15, 59, tzinfo=UTC)
    assert clock.now() == clock.now()
    assert clock.advance(timedelta(minutes=2)) == datetime(2026, 3, 5, 16, 1, tzinfo=UTC)


def test_clocks_are_timezone_aware():
    assert SystemClock().now().tzinfo is not None
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 1, 1))
