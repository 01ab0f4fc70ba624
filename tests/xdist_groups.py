"""xdist groups that work with pytest 9: pytest-xdist 3.8 marks a group by rewriting ``item._nodeid``,
which pytest 9 no longer reads, so ``--dist loadgroup`` silently ran grouped tests on several workers.

Here the workers write ``{nodeid: group}`` to a file the controller named (:data:`ENV`), and the controller's
scheduler (:class:`GroupScheduling`, xdist's scope scheduler) makes each group one unit of work; a test
without a group is a unit of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ENV = "DLTH_XDIST_GROUPS"


def wanted(config: pytest.Config) -> bool:
    """Whether this is the controller of a ``--dist loadgroup`` run."""
    return os.environ.get("PYTEST_XDIST_WORKER") is None and config.getoption("dist", "no") == "loadgroup" \
        and bool(config.getoption("numprocesses", None))


def start(config: pytest.Config) -> None:
    """Controller: name the file the workers write their groups to (inherited by the workers it starts)."""
    if wanted(config):
        os.environ[ENV] = str(Path(tempfile.mkdtemp(prefix="dlth-xdist-")) / "groups.json")


def finish() -> None:
    """Controller: remove the groups file's folder."""
    where = os.environ.pop(ENV, None)
    if where and os.environ.get("PYTEST_XDIST_WORKER") is None:
        shutil.rmtree(Path(where).parent, ignore_errors=True)


def record(items: list[pytest.Item]) -> None:
    """Worker: write each grouped test's group (every worker collects the same tests: the last write wins)."""
    where = os.environ.get(ENV)
    if not where or os.environ.get("PYTEST_XDIST_WORKER") is None:
        return
    groups = {item.nodeid: mark.args[0] for item in items if (mark := item.get_closest_marker("xdist_group"))}
    tmp = Path(f"{where}.{os.environ['PYTEST_XDIST_WORKER']}")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, where)


def make_scheduler(config: pytest.Config, log: object) -> object | None:
    """The controller's scheduler for ``--dist loadgroup`` (None: xdist's own)."""
    if not wanted(config) or ENV not in os.environ:
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with the workers' groups as scopes (read once all workers collected)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads(Path(os.environ[ENV]).read_text())
            return self.groups.get(nodeid, nodeid)

    config.option.loadscopereorder = False  # hand out the groups in the collection's order (conftest sorts it)
    return GroupScheduling(config, log)  # type: ignore[arg-type]
