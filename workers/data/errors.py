"""The data layer's user-facing error: one line naming the path, the key and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataWriteError(ValueError):
    """Bad input to a dataset writer; ``str()`` is ``"<path>: <key>: expected <expected>"``."""

    def __init__(self, path: str | Path, key: str, expected: str) -> None:
        self.path, self.key, self.expected = str(path), key, expected
        super().__init__(f"{path}: {key}: expected {expected}")
