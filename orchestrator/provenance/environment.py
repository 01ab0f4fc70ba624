"""The software a launch ran with: Python, the packages that shape a result, CUDA/cuDNN, host, command line.

Versions are read from the installed distributions' metadata (nothing heavy is imported): CUDA is the
toolkit torch was built with (``torch/version.py``), cuDNN the installed ``nvidia-cudnn-*`` wheel's version.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import shlex
import socket
import sys
from pathlib import Path

PACKAGE_NAMES = ("torch", "torchvision", "timm", "ffcv", "submitit", "numpy")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def torch_cuda() -> str | None:
    """The CUDA version torch was built with (``torch.version.cuda``), read without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::\s*\S+)?\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


CUDNN_WHEELS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11")


def cudnn() -> str | None:
    """The version of the installed cuDNN wheel (``nvidia-cudnn-cu13``/``-cu12``/``-cu11``), if any."""
    return next((v for name in CUDNN_WHEELS if (v := _version(name))), None)


def package_versions() -> dict[str, str | None]:
    """``{name: version}`` of :data:`PACKAGE_NAMES` (None: not installed), plus ``cuda`` and ``cudnn``."""
    return {**{name: _version(name) for name in PACKAGE_NAMES}, "cuda": torch_cuda(), "cudnn": cudnn()}


def python_version() -> str:
    return sys.version.split()[0]


def host() -> str:
    return socket.gethostname()


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line, shell-quoted (``dlth-orch launch ...``)."""
    args = sys.argv if argv is None else argv
    if not args:
        return ""
    prog = "dlth-orch" if args[0].endswith(("orchestrator/cli.py", "dlth-orch")) else Path(args[0]).name
    return shlex.join([prog, *args[1:]])
