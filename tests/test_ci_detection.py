"""One CI detection for every test that must fail instead of skipping under CI (db.testing.in_ci)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.testing import in_ci

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("True", True), ("YES", True), (" true ", True),
    ("", False), ("0", False), ("false", False), ("no", False),
])
def test_ci_is_1_true_or_yes(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_no_test_reads_ci_on_its_own() -> None:
    own = re.compile(r"""environ(\.get\(|\[)\s*["']CI["']""")
    offenders = [p.name for p in TESTS.glob("*.py") if own.search(p.read_text())]
    assert offenders == []
