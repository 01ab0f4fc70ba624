"""Store methods for adaptive studies (a mixin of :class:`db.store.Store`, schema 0007): the looks of a
grid, each recorded once (a second writer of the same look number finds it there and keeps the first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.mixin import StoreMixin
from db.models import AdaptiveLook, Grid


@dataclass(frozen=True)
class LookRow:
    """A recorded look: its number, the look as JSON, its stopping reason and when it was taken."""

    number: int
    look_json: str
    stop: str | None
    created_at: datetime


class AdaptiveLookStore(StoreMixin):
    """Adaptive looks: mixed into :class:`db.store.Store` (which provides ``session``)."""

    def record_look(self, grid_name: str, number: int, look_json: str, stop: str | None) -> bool:
        """Record look ``number`` of ``grid_name``; False when that look was recorded already."""
        try:
            with self.session() as s:
                grid_id = s.scalar(select(Grid.id).where(Grid.name == grid_name))
                if grid_id is None:
                    raise KeyError(f"grid {grid_name} not found")
                s.add(AdaptiveLook(grid_id=grid_id, number=number, look_json=look_json, stop=stop))
        except IntegrityError:
            return False
        return True

    def looks(self, grid_name: str) -> list[LookRow]:
        """The grid's looks, first first (empty for a grid that is not adaptive)."""
        with self.session(write=False) as s:
            rows = s.execute(select(AdaptiveLook).join(Grid, Grid.id == AdaptiveLook.grid_id)
                             .where(Grid.name == grid_name).order_by(AdaptiveLook.number)).scalars().all()
            return [LookRow(r.number, r.look_json, r.stop, r.created_at) for r in rows]
