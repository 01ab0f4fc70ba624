"""report.html in a real headless browser (Debian's chromium, via scripts/render_report.sh): the
recommendation box and the regret-vs-cost plot are what a reader sees first."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from db.testing import in_ci
from orchestrator.report import write_report_files
from tests.test_report_render import _grid

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None and not in_ci(),
                                reason="chromium not installed (scripts/setup.sh --test installs it)")


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: float = 0.04) -> np.ndarray:
    return (np.abs(img[..., :3] - np.array(rgb) / 255.0) < tol).all(axis=-1)


def test_the_recommendation_and_the_regret_plot_are_at_the_top(tmp_path: Path) -> None:
    write_report_files(_grid(), tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run([str(ROOT / "scripts" / "render_report.sh"), str(tmp_path / "report.html"), str(shot),
                    "1200x900"], check=True, capture_output=True, timeout=180)
    img = imread(shot)
    assert img.shape[:2] == (900, 1200)
    top = img[:480]  # the first screenful's upper part
    left, right = top[:, :600], top[:, 600:]
    # the green recommendation box (border #2ca02c, background #eef8ee) on the left ...
    assert _near(left, (0x2C, 0xA0, 0x2C)).sum() > 600  # 6 px wide, >= 100 px high
    assert _near(left, (0xEE, 0xF8, 0xEE), 0.01).sum() > 50_000
    # ... and beside it the regret plot: the criterion band (green, alpha .15 on white) and the green star
    assert _near(right, (0xE0, 0xF1, 0xE0), 0.03).sum() > 3000
    assert _near(right, (0x2C, 0xA0, 0x2C), 0.08).sum() > 50
    # nothing of the page runs off to the right: no horizontal scrollbar along the bottom edge
    assert not _near(img[-12:], (0xC1, 0xC1, 0xC1), 0.03).any(axis=1).all()
