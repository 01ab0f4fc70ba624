"""Cluster profiles: ``cluster_profiles/<name>.toml`` (or a path), merged with the grid's ``[cluster]``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from specs.base import SpecError

PROFILE_DIR = Path(__file__).resolve().parents[1] / "cluster_profiles"


def profile_dirs() -> list[Path]:
    extra = os.environ.get("DLTH_PROFILES")
    return ([Path(extra)] if extra else []) + [Path.cwd() / "cluster_profiles", PROFILE_DIR]


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a profile by name (searched in ``DLTH_PROFILES``, ./cluster_profiles, the package's) or path."""
    candidates = [Path(name_or_path)] if name_or_path.endswith(".toml") else [
        d / f"{name_or_path}.toml" for d in profile_dirs()]
    for path in candidates:
        if path.is_file():
            try:
                profile = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise SpecError("toml", f"valid TOML ({exc})", str(path)) from exc
            profile.setdefault("name", path.stem)
            return {**profile, **(overrides or {})}
    raise SpecError("cluster.profile", f"a profile in {', '.join(str(d) for d in profile_dirs())} "
                    f"(no {name_or_path}.toml)")
