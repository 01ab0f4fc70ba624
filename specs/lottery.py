"""Lottery-ticket vocabulary shared by the control plane and the workers (torch-free).

A lottery job carries a ``lottery`` dict in its :class:`specs.job.JobSpec` (part of its identity):

- a *level* of an IMP chain: ``{"role": "level", "level": L, ...}``. Level 0 trains dense and saves
  the rewind point (``"rewind"``: ``"0it"``, ``"500it"``, ``"3ep"``, or ``"start"`` with a pre-trained
  ``"start"``); level L >= 1 depends on level L-1, prunes ``prune_fraction`` of its remaining prunable
  weights (``strategy``), rewinds to level 0's rewind point (``"rewind_job"``) and retrains masked.
- an *evaluation* of a ticket: ``{"role": "eval", "ticket": "lottery" | "random_reinit" |
  "random_prune", "level": L, "rewind_job": H0, ...}``, depending on the level job whose mask it uses.

The number of levels of a chain is never in a job's identity, so raising it extends a finished chain.
Grid labels of lottery jobs are ``lottery:<setting>/L<level>`` and ``lottery:<setting>/L<level>/<ticket>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from specs.base import SpecError

ROLE_LEVEL = "level"
ROLE_EVAL = "eval"
STRATEGIES = ("global", "layerwise")
TICKET = "lottery"
BASELINES = ("random_reinit", "random_prune")
TICKETS = (TICKET, *BASELINES)
REWIND_START = "start"
# conv and linear weights of the backbone: the method's heads (the last classifier, projectors) are not
DEFAULT_PRUNABLE = ("backbone.*",)
LABEL_PREFIX = "lottery:"
_STEP = re.compile(r"^(\d+)(it|ep)$")
_LABEL = re.compile(r"^lottery:(?P<setting>[^/]+)/L(?P<level>\d+)(?:/(?P<ticket>[a-z_]+))?$")


@dataclass(frozen=True)
class Step:
    """A point in training, as open_lth's ``foundations/step.py``: ``"500it"`` or ``"3ep"``."""

    count: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text: object, key: str = "rewind") -> Step:
        m = _STEP.match(text) if isinstance(text, str) else None
        if m is None:
            raise SpecError(key, f'a training step such as "0it", "500it" or "3ep" (got {text!r})')
        return cls(int(m.group(1)), m.group(2))

    def iteration(self, steps_per_epoch: int) -> int:
        """The global iteration (0-based, before its optimiser step) this point names."""
        return self.count * steps_per_epoch if self.unit == "ep" else self.count


def level_label(setting: str, level: int, ticket: str | None = None) -> str:
    """The grid label of a level job (``ticket`` None) or of a ticket's evaluation job."""
    return f"{LABEL_PREFIX}{setting}/L{level}" + (f"/{ticket}" if ticket else "")


def parse_label(label: str) -> tuple[str, int, str | None] | None:
    """``(setting, level, ticket or None)`` of a lottery label; None for any other label."""
    m = _LABEL.match(label)
    if m is None:
        return None
    return m.group("setting"), int(m.group("level")), m.group("ticket")


def remaining_target(total: int, prune_fraction: float, level: int) -> int:
    """Weights left after ``level`` rounds that each prune ``prune_fraction`` of the remaining ones.

    ``round(total * (1 - f) ** level)``: the closed form, so that rounding never drifts over levels
    (open_lth prunes ``ceil(f * remaining)`` per round, which is the same to one weight per round).
    """
    return int(round(total * (1.0 - prune_fraction) ** level))
