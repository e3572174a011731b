"""Backoff, the delays of every reconnect and retry loop (no I/O)."""

from __future__ import annotations

import pytest

from axtui.backoff import Backoff


def test_doubles_up_to_the_maximum() -> None:
    """Each delay doubles the one before until it reaches the maximum."""
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_reset_starts_over() -> None:
    """After reset the next delay is the initial one again."""
    backoff = Backoff(0.1, 5.0)
    backoff.next()
    backoff.next()
    backoff.reset()
    assert backoff.next() == 0.1


def test_jitter_spreads_each_delay_both_ways() -> None:
    """With jitter j a delay d lies in [d(1-j), d(1+j)], the doubling unaffected."""
    low, high = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.0), Backoff(
        1.0, 8.0, jitter=0.5, rand=lambda: 1.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert [high.next() for _ in range(3)] == [1.5, 3.0, 6.0]


def test_jitter_out_of_range_is_refused() -> None:
    """A jitter outside [0, 1] is a programming error."""
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter=1.5)
