"""Notifications: a grid's ``[notify]`` table (a webhook) or ``DLTH_NOTIFY_COMMAND`` (a command).

One message when the grid finishes, one when the breaker pauses it, and a digest of its failures at most
every ``digest_min`` minutes. Sent from the launcher's loop (``launch``, ``launch --wait``: through the
backends' progress callback, :func:`with_notifications`) and the report-on-finish path
(:mod:`orchestrator.report_files`); what was sent is remembered in the database (``dlth_meta``), so two
of them never say the same thing twice. A notification that fails (an error, a hang past ``timeout_s``)
is logged and never fails the grid.

A command is code, and a grid comes from other people: ``[notify] command`` is refused in a grid. The
command comes from the environment of whoever runs the orchestrator, as ``setup``/``sbatch`` come from a
cluster profile: ``DLTH_NOTIFY_COMMAND='["notify-send", "dlth-orch"]'`` (a JSON list: an argv, never a
shell string); it gets the message on stdin, ``DLTH_NOTIFY_EVENT`` and ``DLTH_NOTIFY_GRID`` in its
environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from db import AttemptState, Store
from db.models import utcnow
from specs.base import SpecError

log = logging.getLogger(__name__)
COMMAND_ENV = "DLTH_NOTIFY_COMMAND"
KEYS = ("webhook", "digest_min", "timeout_s")
FINISHED, PAUSED, FAILURES = "finished", "paused", "failures"


@dataclass(frozen=True)
class NotifySettings:
    """Where messages go (a webhook URL and/or an argv) and how often failures are summed up."""

    webhook: str = ""
    command: tuple[str, ...] = ()
    digest_min: float = 60.0
    timeout_s: float = 10.0

    @property
    def active(self) -> bool:
        return bool(self.webhook or self.command)

    @classmethod
    def from_table(cls, table: Any, source: str | None = None) -> NotifySettings:
        """From a grid's ``[notify]`` table (plus :data:`COMMAND_ENV`); a one-line :class:`SpecError` naming
        the key otherwise."""
        command = command_from_env()
        if table is None:
            return cls(command=command)
        if not isinstance(table, dict):
            raise SpecError("notify", "a table (webhook, digest_min, timeout_s)", source)
        if "command" in table:
            raise SpecError("notify.command", f"no command in a grid (a command is code): set {COMMAND_ENV}="
                            "'[\"argv\", ...]' where the orchestrator runs, or use notify.webhook", source)
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise SpecError(f"notify.{unknown[0]}", "one of " + ", ".join(KEYS), source)
        webhook = table.get("webhook", "")
        if not isinstance(webhook, str) or (webhook and not _http_url(webhook)):
            raise SpecError("notify.webhook", f"an http:// or https:// URL (got {str(webhook)[:80]!r})", source)
        values = {}
        for key, lo in (("digest_min", 0.0), ("timeout_s", 0.1)):
            v = table.get(key, getattr(cls, key))
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= float(v) <= 7 * 24 * 60:
                raise SpecError(f"notify.{key}", f"a number from {lo:g} to 10080 (got {v!r})", source)
            values[key] = float(v)
        return cls(webhook=webhook, command=command, **values)

    @classmethod
    def of_grid(cls, spec_json: str) -> NotifySettings:
        """The settings of a recorded grid (its spec JSON)."""
        return cls.from_table(json.loads(spec_json).get("notify"))


def _http_url(url: str) -> bool:
    if any(c.isspace() or ord(c) < 32 for c in url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def command_from_env() -> tuple[str, ...]:
    """:data:`COMMAND_ENV` as an argv; a malformed value is a one-line :class:`SpecError` naming it."""
    raw = os.environ.get(COMMAND_ENV, "").strip()
    if not raw:
        return ()
    try:
        argv = json.loads(raw)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise SpecError(f"environment {COMMAND_ENV}", 'a JSON list of strings (an argv), e.g. \'["notify-send", '
                        '"dlth"]\', never a shell string')
    return tuple(argv)


def send(settings: NotifySettings, grid: str, event: str, text: str) -> bool:
    """Deliver one message; True if every destination took it. Never raises."""
    ok = True
    if settings.webhook:
        import urllib.error  # here: http.client and email would cost every launch tens of ms
        import urllib.request

        body = json.dumps({"grid": grid, "event": event, "text": text}).encode()
        req = urllib.request.Request(settings.webhook, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "dlth-orch"})
        try:
            with urllib.request.urlopen(req, timeout=settings.timeout_s) as resp:  # noqa: S310 (http/https only)
                resp.read(1024)
        except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTP errors, refusals, timeouts
            ok = False
            log.warning("notification %s of %s: the webhook failed (%s)", event, grid, exc)
    if settings.command:
        env = {**os.environ, "DLTH_NOTIFY_EVENT": event, "DLTH_NOTIFY_GRID": grid}
        try:
            done = subprocess.run(list(settings.command), input=text, text=True, env=env, capture_output=True,
                                  timeout=settings.timeout_s)
            if done.returncode != 0:
                ok = False
                log.warning("notification %s of %s: %s exited %d", event, grid, settings.command[0], done.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok = False
            log.warning("notification %s of %s: %s failed (%s)", event, grid, settings.command[0], exc)
    return ok


def _key(grid: str, what: str) -> str:
    return f"notify:{hashlib.sha1(grid.encode()).hexdigest()[:16]}:{what}"  # dlth_meta keys: 64 characters


def tick(store: Store, grid: str, *, now: datetime | None = None) -> list[str]:
    """Send what is due for ``grid`` (finished, paused, a failure digest); returns the events sent. Never
    raises: a notification must not fail the grid."""
    try:
        return _tick(store, grid, now or utcnow())
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("notifications of %s: %s", grid, exc)
        return []


def _tick(store: Store, grid: str, now: datetime) -> list[str]:
    from orchestrator.breaker import pause_line, paused

    row = store.get_grid(grid)
    settings = NotifySettings.of_grid(row.spec_json) if row else NotifySettings()
    if not settings.active:
        return []
    sent: list[str] = []
    digest = _digest(store, grid, settings, now)
    if digest and send(settings, grid, FAILURES, digest):
        store.set_meta(_key(grid, "digest_at"), now.isoformat())
        sent.append(FAILURES)
    state = paused(store, grid)
    if state is not None:
        line = pause_line(grid, state)
        if store.get_meta(_key(grid, PAUSED)) != line[:2000]:
            send(settings, grid, PAUSED, line)
            store.set_meta(_key(grid, PAUSED), line[:2000])
            sent.append(PAUSED)
    elif store.grid_finished(grid):
        counts = store.state_counts(grid)
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if n)
        if store.get_meta(_key(grid, FINISHED)) != summary:
            send(settings, grid, FINISHED, f"grid {grid} finished: {summary}")
            store.set_meta(_key(grid, FINISHED), summary)
            sent.append(FINISHED)
    return sent


def _digest(store: Store, grid: str, settings: NotifySettings, now: datetime) -> str | None:
    """The failures since the last digest, if one is due (never within ``digest_min`` of the last)."""
    last_raw = store.get_meta(_key(grid, "digest_at"))
    last = datetime.fromisoformat(str(last_raw)) if last_raw else None
    if last is not None and now - last < timedelta(minutes=settings.digest_min):
        return None
    failed = [a for a in store.grid_attempts(grid) if a.state in AttemptState.FAILURES
              and a.ended_at is not None and (last is None or a.ended_at > last)]
    if not failed:
        return None
    lines = [f"grid {grid}: {len(failed)} failed attempts since "
             + (last.strftime("%Y-%m-%d %H:%M UTC") if last else "the start")]
    for a in failed[:20]:
        reason = a.exit_reason.splitlines()[0][:200] if a.exit_reason else ""
        lines.append(f"- job {a.job_hash} attempt {a.number}: {a.state} {reason}".rstrip())
    if len(failed) > 20:
        lines.append(f"... and {len(failed) - 20} more")
    return "\n".join(lines)


def with_notifications(store: Store, grid: str,
                       inner: Callable[[int], object] | None) -> Callable[[int], object] | None:
    """The launch loop's progress callback ``inner``, followed by :func:`tick` when the grid notifies."""
    row = store.get_grid(grid)
    if row is None or not NotifySettings.of_grid(row.spec_json).active:
        return inner

    def progressed(completed: int) -> object:
        out = inner(completed) if inner is not None else None
        tick(store, grid)
        return out

    return progressed
