"""Notifications against a real HTTP server on 127.0.0.1: a real local grid whose two jobs fail their first
attempt (the product's test hook ``DLTH_TEST_FAIL_ONCE`` in real worker processes) sends one failure digest
and one "paused" message (the breaker), then, resumed and relaunched, one "finished"; a webhook that
answers 500 or hangs never fails anything. Mocked: nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from db import JobState, Store
from orchestrator.grid import expand, load_grid
from orchestrator.notify import NotifySettings, send, tick
from specs.base import SpecError
from subsets import DatasetMeta
from workers.test_hooks import ENV as FAIL_ONCE

from .grids import tiny_grid

REPO = Path(__file__).resolve().parents[1]


class Hook(BaseHTTPRequestHandler):
    got: list[tuple[str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Hook.got.append((self.path, body))
        if self.path == "/hang":
            time.sleep(5)
        self.send_response(500 if self.path == "/fail" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Hook.got = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _grid(tmp_path: Path, digits: Path, notify: str) -> Path:
    grid = tmp_path / "grid.toml"
    grid.write_text(tiny_grid("ntf", digits, failure_budget=1,
                              tables=f"[breaker]\nthreshold = 2\n[notify]\n{notify}\n",
                              methods="[methods.supervised]\nlr = [0.01, 0.2]\n"))
    return grid


@pytest.mark.parametrize(("notify", "key", "expected"), [
    ('command = ["notify-send", "x"]', "notify.command", "no command in a grid (a command is code)"),
    ('webhook = "ftp://example.org/x"', "notify.webhook", "an http:// or https:// URL"),
    ('webhook = "http://"', "notify.webhook", "an http:// or https:// URL"),
    ('url = "http://x"', "notify.url", "one of webhook, digest_min, timeout_s"),
    ('digest_min = -1', "notify.digest_min", "a number from 0"),
])
def test_bad_notify_tables_are_refused_in_one_line(tmp_path: Path, digits: Path, notify: str, key: str,
                                                   expected: str) -> None:
    with pytest.raises(SpecError) as err:
        load_grid(_grid(tmp_path, digits, notify))
    assert err.value.key == key and expected in str(err.value) and "\n" not in str(err.value)


def test_a_failing_or_hanging_webhook_never_raises(server: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    assert send(NotifySettings(webhook=f"{server}/fail"), "g", "finished", "x") is False
    assert send(NotifySettings(webhook=f"{server}/hang", timeout_s=0.5), "g", "finished", "x") is False
    assert time.monotonic() - t0 < 4  # the hang was cut at its timeout
    assert send(NotifySettings(webhook="http://127.0.0.1:9/"), "g", "finished", "x") is False  # refused
    assert [p for p, _ in Hook.got] == ["/fail", "/hang"]
    out = tmp_path / "cmd.txt"
    cmd = NotifySettings(command=("sh", "-c", f'cat > {out}; echo "$DLTH_NOTIFY_EVENT" >> {out}'))
    assert send(cmd, "g", "paused", "the message") is True
    assert out.read_text() == "the message" + "paused\n"


@pytest.mark.slow
def test_a_grid_notifies_failures_pause_and_finish_once_each(server: str, tmp_path: Path, digits: Path) -> None:
    grid = _grid(tmp_path, digits, f'webhook = "{server}/ok"\ndigest_min = 60\ntimeout_s = 2')
    armed = tmp_path / "armed"
    armed.mkdir()
    for ej in expand(load_grid(grid), DatasetMeta.load(digits)):
        (armed / f"{ej.spec.job_hash}.fail").touch()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {**os.environ, "DLTH_HOME": str(tmp_path / "ws"), FAIL_ONCE: str(armed), "DLTH_HEARTBEAT_S": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                              text=True, env=env, timeout=600, cwd=REPO)

    first = cli("launch", str(grid), "--cluster", "local", "--no-progress")
    assert first.returncode == 3, first.stdout + first.stderr  # paused by the breaker
    events = [body["event"] for _, body in Hook.got]
    assert events.count("failures") == 1 and events.count("paused") == 1 and "finished" not in events, events
    digest = next(body for _, body in Hook.got if body["event"] == "failures")
    assert digest["grid"] == "ntf" and "failed attempts since the start" in digest["text"]
    assert "FAILED" in digest["text"] and "fails on purpose" in digest["text"]

    assert cli("resume", "ntf").returncode == 0
    again = cli("launch", str(grid), "--cluster", "local", "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    store = Store(db)
    assert {j.state for j in store.jobs("ntf")} == {JobState.COMPLETED}
    events = [body["event"] for _, body in Hook.got]
    assert events.count("finished") == 1 and events.count("failures") == 1, events  # digest_min: no second
    finished = next(body for _, body in Hook.got if body["event"] == "finished")
    assert finished["text"] == "grid ntf finished: 2 completed"
    assert tick(store, "ntf") == []  # said once: nothing new to say


def test_the_command_comes_from_the_environment_as_an_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLTH_NOTIFY_COMMAND", '["notify-send", "dlth"]')
    assert NotifySettings.from_table({"webhook": "https://example.org/h"}).command == ("notify-send", "dlth")
    monkeypatch.setenv("DLTH_NOTIFY_COMMAND", "notify-send dlth; rm -rf /")  # a shell string: refused
    with pytest.raises(SpecError, match="environment DLTH_NOTIFY_COMMAND: expected a JSON list of strings"):
        NotifySettings.from_table(None)
