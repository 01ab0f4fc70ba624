"""``ticket``: the subset an earlier grid's report recommends (a dataset lottery ticket, reused).

::

    [subsets.lucky]
    strategy = "ticket"
    from = "fashion-study"   # a grid recorded in the same database, on the same dataset
    audit = 3                # optional: that many configurations also run on the reference (best, middle, worst)

A ticket is not a rule for choosing classes: it names a decision. The launch takes it
(``orchestrator/grid/ticket.py``): it asks the earlier grid's report which subset it recommends and puts
that subset's recorded table in place of this one (:meth:`TicketSource.table`), so the ticket resolves to
exactly the earlier grid's classes and images and its jobs have the identities of a grid that spells the
subset out. :class:`TicketSource` is what the new grid records about where its ticket came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from subsets.base import Manifest, Strategy, SubsetError
from subsets.meta import DatasetMeta

TICKET = "ticket"
MAX_AUDIT = 1000
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class Ticket(Strategy):
    """The table of a ticket: ``from`` (a grid name) and ``audit`` (configurations also run on the reference)."""

    name = TICKET
    params: dict[str, Any] = {"from": None, "audit": 0}

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate(params)
        source = out["from"]
        if not isinstance(source, str) or not source or len(source) > 100 or not set(source) <= _NAME_CHARS:
            raise SubsetError("from", "the name of an earlier grid recorded in the same database")
        audit = out["audit"]
        if isinstance(audit, bool) or not isinstance(audit, int) or not 0 <= audit <= MAX_AUDIT:
            raise SubsetError("audit", f"a number of configurations from 0 to {MAX_AUDIT} to run on the reference too")
        return out

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        raise SubsetError("strategy", f"a ticket taken from grid '{params['from']}' through the database first "
                          "(launch, launch --dry-run, advance and subsets show take it; this command cannot)")


@dataclass(frozen=True)
class TicketSource:
    """Where a grid's ticket came from, recorded with the grid (its ``spec_json``'s ``tickets``), so a later
    report can say it even if the earlier grid changes since."""

    grid: str  # the earlier grid
    subset: str  # the subset its report recommended
    subset_table: dict[str, Any]  # that subset's canonical table, as its jobs recorded it
    manifest_hash: str  # the content hash of its manifest (classes, images, dataset fingerprint)
    decision: str  # the earlier report's headline
    criterion: str  # the criterion it decided with, in words
    jobs_completed: int
    jobs_total: int
    dataset_root: str
    taken_at: str  # when the ticket was taken (UTC, ISO)
    audit: int = 0  # configurations also run on the reference
    provisional: bool = False  # the earlier grid was still running when the ticket was taken
    details: tuple[str, ...] = field(default=())  # the decision's detail lines

    def table(self) -> dict[str, Any]:
        """The subset table the ticket stands for (the earlier grid's own)."""
        return dict(self.subset_table)

    def check(self, name: str, manifest: Manifest) -> None:
        """:class:`SubsetError` unless ``manifest`` holds exactly the earlier grid's classes and images."""
        if manifest.content_hash != self.manifest_hash:
            raise SubsetError("from", f"the classes and images of {self.grid}'s subset '{self.subset}' (manifest "
                              f"{self.manifest_hash}); '{name}' resolves to {manifest.content_hash} here: the "
                              "dataset changed since that grid ran")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_dict` reads it back)."""
        return {**asdict(self), "details": list(self.details)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TicketSource:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "details": tuple(d.get("details", ()))})
