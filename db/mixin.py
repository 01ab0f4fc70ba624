"""The base of the store's mixins (launches, usage, adaptive looks): :class:`db.store.Store` provides
``session``; declared here once, for type checkers only."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class StoreMixin:
    """Methods of :class:`db.store.Store` kept in a module of their own; ``self.session`` is the store's."""

    if TYPE_CHECKING:
        def session(self, *, write: bool = True) -> AbstractContextManager[Session]: ...
