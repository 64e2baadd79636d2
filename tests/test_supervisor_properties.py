"""The restart policy's laws, checked with hypothesis on the pure functions (no event loop)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ron_kernel._supervisor_policy import RestartWindow, backoff_ceiling, to_seconds
from ron_kernel.supervisor import backoff_delay

floors = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
spans = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
attempts = st.integers(min_value=0, max_value=200)


@given(floor=floors, span=spans, attempt=attempts, seed=st.integers(0, 2**32))
def test_backoff_never_below_the_floor_nor_above_the_cap(floor, span, attempt, seed):
    cap = floor + span
    delay = backoff_delay(attempt, floor, cap, random.Random(seed))
    assert floor <= delay <= cap
    assert delay <= min(cap, max(floor, floor * 2.0 ** min(attempt, 64)))


@given(floor=floors, span=spans, attempt=attempts)
def test_backoff_envelope_is_non_decreasing_in_the_attempt(floor, span, attempt):
    cap = floor + span
    assert backoff_ceiling(attempt, floor, cap) <= backoff_ceiling(attempt + 1, floor, cap)


@given(seed=st.integers(0, 2**32))
def test_backoff_jitter_is_reproducible_with_a_seeded_rng(seed):
    a = [backoff_delay(n, 0.1, 30.0, random.Random(seed)) for n in range(10)]
    b = [backoff_delay(n, 0.1, 30.0, random.Random(seed)) for n in range(10)]
    assert a == b


def test_backoff_jitter_spreads_over_the_whole_envelope():
    rng = random.Random(7)
    draws = [backoff_delay(5, 0.1, 30.0, rng) for _ in range(2000)]
    # attempt 5: uniform in [0.1, 3.2]; full jitter reaches both ends of the range
    assert min(draws) < 0.3 and max(draws) > 3.0


def test_backoff_rejects_an_inverted_range():
    with pytest.raises(ValueError, match="min_backoff"):
        backoff_delay(0, 2.0, 1.0)


def _model(times: list[float], cap: int, window: float) -> tuple[list[float], int | None]:
    """Reference: the i-th crash is quarantined iff >= cap admitted restarts lie in
    (t_i - window, t_i]. Returns the admitted restart times and the index of the quarantine."""
    admitted: list[float] = []
    for i, t in enumerate(times):
        if sum(1 for r in admitted if t - r < window) >= cap:
            return admitted, i
        admitted.append(t)
    return admitted, None


crash_gaps = st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), max_size=60)


@settings(max_examples=300)
@given(gaps=crash_gaps, cap=st.integers(1, 8), window=st.floats(0.01, 20.0))
def test_restart_window_law_for_arbitrary_crash_sequences(gaps, cap, window):
    times, t = [], 0.0
    for gap in gaps:
        t += gap
        times.append(t)
    expected_admitted, expected_quarantine = _model(times, cap, window)
    w = RestartWindow(cap, window)
    quarantined_at = None
    for i, now in enumerate(times):
        if not w.admit(now):
            quarantined_at = i
            break
    assert quarantined_at == expected_quarantine
    # and never more than `cap` restarts inside any window
    admitted = expected_admitted
    for i, r in enumerate(admitted):
        assert sum(1 for x in admitted[i:] if x - r < window) <= cap


@given(cap=st.integers(1, 10))
def test_an_always_crashing_child_runs_cap_plus_one_times(cap):
    w = RestartWindow(cap, 60.0)
    runs = 1  # the first start
    while w.admit(0.001 * runs):
        runs += 1
    assert runs == cap + 1


def test_durations_accept_timedelta_and_seconds_and_reject_bad_values():
    assert to_seconds(timedelta(milliseconds=250), "x") == 0.25
    assert to_seconds(2, "x") == 2.0
    with pytest.raises(ValueError, match="x must be >= 0"):
        to_seconds(-1, "x")
    with pytest.raises(ValueError, match="x must be >= 0"):
        to_seconds(timedelta(seconds=-1), "x")
    with pytest.raises(TypeError, match=r"x must be a datetime\.timedelta"):
        to_seconds("1s", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_seconds(True, "x")
    with pytest.raises(ValueError, match="finite"):
        to_seconds(float("inf"), "x")
