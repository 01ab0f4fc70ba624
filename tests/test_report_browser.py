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


def _chromium_dom(html_file: Path, profile: Path) -> str:
    """The page's DOM after load and its scripts, as headless chromium leaves it."""
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--virtual-time-budget=5000",
                           f"--user-data-dir={profile}", "--dump-dom", html_file.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_every_plot_of_a_measured_grid_loads_in_the_browser(tmp_path: Path) -> None:
    """A grid with measured costs and 3 seeds: every <img> of report.html decodes (naturalWidth > 0).
    ``DLTH_REPORT_SHOT=PATH`` also keeps a screenshot of the page's first screen there (for a note)."""
    import os
    from datetime import timedelta

    from db import Store
    from orchestrator.report_files import produce
    from orchestrator.results import ReportRequest
    from tests.report_store import T0, make_grid, set_span

    six = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65]
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        make_grid(store, tmp_path, "quickstart", {"full": six, "full_30pct": six, "even5": six[:4] + six[:3:-1],
                                                  "hard5": six[::-1]}, seeds=3, noise=0.01)
        hours = {"full_30pct": 0.3, "even5": 0.5, "hard5": 0.4}  # the subsets' attempts are shorter than full's
        for a in store.grid_attempts("quickstart"):
            if (h := hours.get(a.job_hash.split("-")[1])) is not None:
                set_span(store, a.id, T0, T0 + timedelta(hours=h))
        produce(store, ReportRequest(grids=["quickstart"]), tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    probe = tmp_path / "r" / "probe.html"
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "document.body.setAttribute('data-widths', Array.from(document.images)"
                                  ".map(i => i.complete ? i.naturalWidth : 0).join(','));});</script></body>"))
    dom = _chromium_dom(probe, tmp_path / "profile")
    widths = [int(w) for w in dom.split('data-widths="')[1].split('"')[0].split(",")]
    assert len(widths) == 4 and all(w > 100 for w in widths), widths  # regret, tau, scatter, cost
    assert "Recommended: full_30pct" in page
    shot = Path(os.environ.get("DLTH_REPORT_SHOT") or tmp_path / "shot.png")
    subprocess.run([str(ROOT / "scripts" / "render_report.sh"), str(tmp_path / "r" / "report.html"), str(shot),
                    "1280x1000"], check=True, capture_output=True, timeout=180)
    assert imread(shot).shape[:2] == (1000, 1280)
