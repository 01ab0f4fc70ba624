"""The lottery report's statistics and renderings on hand-made rows (the real chain: test_lottery_chain.py)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from orchestrator.report.lottery import (
    LotteryRow,
    build_lottery_report,
    level_rows,
    lottery_html,
    lottery_json,
    lottery_markdown,
    lottery_plot,
    print_lottery,
)

# setting "full": the ticket holds level 0's 0.90 +- 0.02 down to level 2, then drops; "tenth" costs 1/5
VALUES = {0: (0.88, 0.92), 1: (0.90, 0.91), 2: (0.87, 0.89), 3: (0.70, 0.72)}


def rows() -> list[LotteryRow]:
    out = []
    for setting, cost in (("full", 50.0), ("tenth", 10.0)):
        for level, vals in VALUES.items():
            for seed, v in enumerate(vals):
                done = {"weights_remaining": 0.8 ** level}
                out.append(LotteryRow(setting, level, None, seed, "COMPLETED", "s", "supervised",
                                      {**done, "train_time_s": cost}))
                out.append(LotteryRow(setting, level, "lottery", seed, "COMPLETED", "full", "supervised",
                                      {**done, "val_top1": v}))
                if level:
                    out.append(LotteryRow(setting, level, "random_prune", seed, "COMPLETED", "full", "supervised",
                                          {**done, "val_top1": v - 0.1}))
    out.append(LotteryRow("tenth", 4, None, 0, "PENDING", "s", "supervised", {}))
    return out


def test_statistics_matching_level_and_generation_cost() -> None:
    rep = build_lottery_report("g", rows(), {}, "val_top1")
    full, tenth = rep.settings
    assert (full.setting, tenth.setting) == ("full", "tenth")
    dense = full.points[0]
    assert dense.mean == pytest.approx(0.90) and dense.std == pytest.approx(0.0282843, abs=1e-6)
    assert full.matching_level == 2 and full.matching_remaining == pytest.approx(0.64)  # 0.88 >= 0.90 - 0.028
    assert full.generation_cost_s == pytest.approx(4 * 50.0) and full.cost_ratio == pytest.approx(1.0)
    assert tenth.generation_cost_s == pytest.approx(4 * 10.0) and tenth.cost_ratio == pytest.approx(0.2)
    assert (tenth.levels_done, tenth.levels_total) == (8, 9)
    prune1 = next(p for p in full.points if p.level == 1 and p.ticket == "random_prune")
    assert prune1.values == pytest.approx((0.80, 0.81))
    assert level_rows(full)[3][:2] == ["3", "51.2%"]
    assert build_lottery_report("g", [], {}, "val_top1") is None


def test_every_rendering_carries_the_section() -> None:
    rep = build_lottery_report("g", rows(), {"full": "val_top1"}, "val_top1")
    data = json.loads(lottery_json(rep))
    assert data["settings"][0]["matching_level"] == 2
    md = lottery_markdown(rep, "lottery.png")
    assert "## Lottery tickets" in md and "![" in md and "level 2 (64.0%)" in md
    png = lottery_plot(rep)
    assert png is not None and png.startswith(b"\x89PNG")
    assert "<h2>Lottery tickets</h2>" in lottery_html(rep, png) and "base64," in lottery_html(rep, png)
    console = Console(record=True, width=160)
    print_lottery(rep, console)
    text = console.export_text()
    assert "0.9000 ± 0.0283 (2/2)" in text and "0.20x" in text
