"""The gap arithmetic of ``benchmarks/bench_chain.py`` (the benchmark itself is not part of the suite)."""

from __future__ import annotations

from datetime import datetime, timedelta

from benchmarks.bench_chain import gaps, run_times, serial_deps

T0 = datetime(2026, 1, 1)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_a_child_waits_for_its_latest_parent_and_serial_jobs_for_the_one_before() -> None:
    spans = {"a": (at(0), at(10)), "b": (at(11), at(12)), "c": (at(15), at(20))}
    assert gaps(spans, {"c": ["a", "b"]}) == [3.0]  # from the later parent's end
    assert serial_deps(spans) == {"b": ["a"], "c": ["b"]}
    assert gaps(spans, serial_deps(spans)) == [1.0, 3.0]
    assert run_times(spans) == [10.0, 1.0, 5.0]
